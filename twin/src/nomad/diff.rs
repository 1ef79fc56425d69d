//! Job diffs in Nomad's shape (`JobDiff` → `TaskGroupDiff` → `TaskDiff`, with `FieldDiff` and
//! `ObjectDiff`), for `/v1/job/:id/plan` and `/v1/job/:id/versions?diffs=true`.
//!
//! Like Nomad: scalar fields become `FieldDiff`s, maps of scalars are flattened into fields named
//! `Key[k]` (e.g. `Env[foo]`), nested structs and lists become `ObjectDiff`s, empty lists are
//! `null`, and task groups and tasks are matched by name.

use super::jobspec::NON_SPEC_FIELDS;
use super::view::View;
use serde_json::{Value, json};
use std::collections::BTreeSet;

fn scalar_text(v: Option<&Value>) -> String {
    match v {
        None | Some(Value::Null) => String::new(),
        Some(Value::String(s)) => s.clone(),
        Some(other) => other.to_string(),
    }
}

fn is_scalar(v: &Value) -> bool {
    !matches!(v, Value::Array(_) | Value::Object(_))
}

fn change_type(old: bool, new: bool) -> &'static str {
    match (old, new) {
        (false, true) => "Added",
        (true, false) => "Deleted",
        _ => "Edited",
    }
}

fn field(kind: &str, name: &str, old: String, new: String) -> Value {
    json!({"Type": kind, "Name": name, "Old": old, "New": new, "Annotations": null})
}

fn null_if_empty(v: Vec<Value>) -> Value {
    if v.is_empty() {
        Value::Null
    } else {
        Value::Array(v)
    }
}

fn present(v: Option<&Value>) -> bool {
    match v {
        None | Some(Value::Null) => false,
        Some(Value::String(s)) => !s.is_empty(),
        Some(Value::Array(a)) => !a.is_empty(),
        Some(Value::Object(m)) => !m.is_empty(),
        _ => true,
    }
}

/// Field and object diffs between two JSON objects, skipping `skip` keys.
fn diff_fields(
    old: Option<&Value>,
    new: Option<&Value>,
    skip: &[&str],
) -> (Vec<Value>, Vec<Value>) {
    let empty = serde_json::Map::new();
    let o = old.and_then(Value::as_object).unwrap_or(&empty);
    let n = new.and_then(Value::as_object).unwrap_or(&empty);
    let keys: BTreeSet<&String> = o.keys().chain(n.keys()).collect();
    let (mut fields, mut objects) = (Vec::new(), Vec::new());
    for key in keys {
        if skip.contains(&key.as_str()) {
            continue;
        }
        let (ov, nv) = (o.get(key), n.get(key));
        if ov == nv {
            continue;
        }
        let sample = nv
            .filter(|v| !v.is_null())
            .or(ov)
            .cloned()
            .unwrap_or(Value::Null);
        match sample {
            ref v if is_scalar(v) => {
                let (ot, nt) = (scalar_text(ov), scalar_text(nv));
                if ot != nt {
                    fields.push(field(
                        change_type(!ot.is_empty(), !nt.is_empty()),
                        key,
                        ot,
                        nt,
                    ));
                }
            }
            Value::Object(ref m)
                if m.values().all(is_scalar) && !m.is_empty() && looks_like_map(key) =>
            {
                let om = ov.and_then(Value::as_object).cloned().unwrap_or_default();
                let nm = nv.and_then(Value::as_object).cloned().unwrap_or_default();
                let sub: BTreeSet<&String> = om.keys().chain(nm.keys()).collect();
                for k in sub {
                    let (ot, nt) = (scalar_text(om.get(k)), scalar_text(nm.get(k)));
                    if ot != nt {
                        fields.push(field(
                            change_type(om.contains_key(k), nm.contains_key(k)),
                            &format!("{key}[{k}]"),
                            ot,
                            nt,
                        ));
                    }
                }
            }
            Value::Object(_) => {
                if let Some(obj) = object_diff(key, ov, nv) {
                    objects.push(obj);
                }
            }
            Value::Array(ref items) if items.iter().all(is_scalar) => {
                let os: BTreeSet<String> = ov
                    .and_then(Value::as_array)
                    .map(|a| a.iter().map(|x| scalar_text(Some(x))).collect())
                    .unwrap_or_default();
                let ns: BTreeSet<String> = nv
                    .and_then(Value::as_array)
                    .map(|a| a.iter().map(|x| scalar_text(Some(x))).collect())
                    .unwrap_or_default();
                let mut sub = Vec::new();
                for x in os.difference(&ns) {
                    sub.push(field("Deleted", key, x.clone(), String::new()));
                }
                for x in ns.difference(&os) {
                    sub.push(field("Added", key, String::new(), x.clone()));
                }
                if !sub.is_empty() {
                    objects.push(json!({
                        "Type": change_type(present(ov), present(nv)),
                        "Name": key,
                        "Fields": sub,
                        "Objects": null,
                    }));
                }
            }
            Value::Array(_) => {
                let oa = ov.and_then(Value::as_array).cloned().unwrap_or_default();
                let na = nv.and_then(Value::as_array).cloned().unwrap_or_default();
                let name = key
                    .strip_suffix("ies")
                    .map(|b| format!("{b}y"))
                    .or_else(|| key.strip_suffix('s').map(String::from))
                    .unwrap_or(key.clone());
                for i in 0..oa.len().max(na.len()) {
                    if let Some(obj) = object_diff(&name, oa.get(i), na.get(i)) {
                        objects.push(obj);
                    }
                }
            }
            _ => {}
        }
    }
    (fields, objects)
}

fn looks_like_map(key: &str) -> bool {
    matches!(
        key,
        "Meta"
            | "Env"
            | "Config"
            | "CanaryMeta"
            | "TaggedAddresses"
            | "GetterOptions"
            | "GetterHeaders"
            | "Target"
    )
}

fn object_diff(name: &str, old: Option<&Value>, new: Option<&Value>) -> Option<Value> {
    let (fields, objects) = diff_fields(
        old.filter(|v| !v.is_null()),
        new.filter(|v| !v.is_null()),
        &[],
    );
    if fields.is_empty() && objects.is_empty() {
        return None;
    }
    Some(json!({
        "Type": change_type(present(old), present(new)),
        "Name": name,
        "Fields": null_if_empty(fields),
        "Objects": null_if_empty(objects),
    }))
}

/// The diff from `old` to `new` (`None` = the job does not exist on that side). `plan` adds the
/// scheduler annotations a plan carries.
pub fn job_diff(old: Option<&Value>, new: Option<&Value>, plan: bool) -> Value {
    let mut skip: Vec<&str> = NON_SPEC_FIELDS.to_vec();
    skip.extend(["TaskGroups", "ID"]);
    let (fields, objects) = diff_fields(old, new, &skip);
    let og = old
        .map(|j| View::job(j).list("TaskGroups"))
        .unwrap_or_default();
    let ng = new
        .map(|j| View::job(j).list("TaskGroups"))
        .unwrap_or_default();
    let names: BTreeSet<&str> = og.iter().chain(ng.iter()).map(|g| g.str("Name")).collect();
    let mut groups = Vec::new();
    for name in names {
        let o = og.iter().find(|g| g.str("Name") == name).map(View::value);
        let n = ng.iter().find(|g| g.str("Name") == name).map(View::value);
        let g = group_diff(name, o, n, plan);
        if g["Type"] != "None" || plan {
            groups.push(g);
        }
    }
    let job_changed =
        !fields.is_empty() || !objects.is_empty() || groups.iter().any(|g| g["Type"] != "None");
    let kind = match (old.is_some(), new.is_some()) {
        (false, true) => "Added",
        (true, false) => "Deleted",
        _ if job_changed => "Edited",
        _ => "None",
    };
    let id = new
        .or(old)
        .map(|j| View::job(j).str("ID").to_string())
        .unwrap_or_default();
    json!({
        "Type": kind,
        "ID": id,
        "Fields": null_if_empty(fields),
        "Objects": null_if_empty(objects),
        "TaskGroups": null_if_empty(groups),
    })
}

fn group_diff(name: &str, old: Option<&Value>, new: Option<&Value>, plan: bool) -> Value {
    let (fields, objects) = diff_fields(old, new, &["Tasks", "Name"]);
    let ot = old
        .map(|g| View::group(g).list("Tasks"))
        .unwrap_or_default();
    let nt = new
        .map(|g| View::group(g).list("Tasks"))
        .unwrap_or_default();
    let names: BTreeSet<&str> = ot.iter().chain(nt.iter()).map(|t| t.str("Name")).collect();
    let mut tasks = Vec::new();
    for tname in names {
        let o = ot.iter().find(|t| t.str("Name") == tname).map(View::value);
        let n = nt.iter().find(|t| t.str("Name") == tname).map(View::value);
        let (tf, to) = diff_fields(o, n, &["Name"]);
        let kind = match (o.is_some(), n.is_some()) {
            (false, true) => "Added",
            (true, false) => "Deleted",
            _ if !tf.is_empty() || !to.is_empty() => "Edited",
            _ => "None",
        };
        let annotations = match (plan, kind) {
            (true, "Added") => json!(["forces create"]),
            (true, "Deleted") => json!(["forces destroy"]),
            (true, "Edited") => json!(["forces create/destroy update"]),
            _ => Value::Null,
        };
        if kind != "None" || plan {
            tasks.push(json!({
                "Type": kind,
                "Name": tname,
                "Fields": null_if_empty(tf),
                "Objects": null_if_empty(to),
                "Annotations": annotations,
            }));
        }
    }
    let changed =
        !fields.is_empty() || !objects.is_empty() || tasks.iter().any(|t| t["Type"] != "None");
    let kind = match (old.is_some(), new.is_some()) {
        (false, true) => "Added",
        (true, false) => "Deleted",
        _ if changed => "Edited",
        _ => "None",
    };
    let count = new
        .or(old)
        .and_then(|g| g.get("Count"))
        .and_then(Value::as_u64)
        .unwrap_or(1);
    let updates = if plan {
        match kind {
            "Added" => json!({"create": count}),
            "Deleted" => json!({"destroy": count}),
            "Edited" => json!({"create/destroy update": count}),
            _ => json!({"ignore": count}),
        }
    } else {
        Value::Null
    };
    json!({
        "Type": kind,
        "Name": name,
        "Fields": null_if_empty(fields),
        "Objects": null_if_empty(objects),
        "Tasks": null_if_empty(tasks),
        "Updates": updates,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_changes_flatten_into_named_fields_like_nomad() {
        let old = json!({"ID": "example", "Version": 0, "TaskGroups": [{"Name": "cache", "Tasks": [{"Name": "redis", "Env": null}]}]});
        let new = json!({"ID": "example", "Version": 1, "TaskGroups": [{"Name": "cache", "Tasks": [{"Name": "redis", "Env": {"foo": "bar"}}]}]});
        let d = job_diff(Some(&old), Some(&new), false);
        assert_eq!(d["Type"], "Edited");
        assert_eq!(
            d["TaskGroups"][0]["Tasks"][0]["Fields"][0]["Name"],
            "Env[foo]"
        );
        assert_eq!(d["TaskGroups"][0]["Tasks"][0]["Fields"][0]["Type"], "Added");
        assert_eq!(job_diff(Some(&old), Some(&old), false)["Type"], "None");
    }
}
