//! Decoding a JSON job the way a real Nomad server does.
//!
//! Nomad decodes a job body with Go's `encoding/json` into `api.Job`: keys match struct fields
//! case-insensitively, unknown keys are dropped silently, and every field of the struct is emitted
//! again on read (unset pointers, slices and maps as `null`). The field list comes from
//! `fixtures/nomad-api-fields.json` (Nomad's own `api` package), so the twin accepts and echoes the
//! same keys as a real server. After decoding, `canonicalize` applies the defaults that
//! `api.Job.Canonicalize` applies before the job reaches the state store.

use super::view::View;
use serde_json::{Map, Value, json};
use std::sync::LazyLock;

/// Nomad's API struct field table (see `fixtures/NOMAD-API-FIELDS.md`).
static API_FIELDS: LazyLock<Value> = LazyLock::new(|| {
    serde_json::from_str(include_str!(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../fixtures/nomad-api-fields.json"
    )))
    .unwrap_or(Value::Null)
});

/// A job body that Go's decoder would reject.
#[derive(Debug, thiserror::Error)]
#[error(
    "failed to decode job: json: cannot unmarshal {found} into Go struct field {path} of type {go_type}"
)]
pub struct DecodeError {
    found: &'static str,
    path: String,
    go_type: String,
}

fn json_kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "bool",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

pub(super) fn struct_fields(name: &str) -> Option<&'static Map<String, Value>> {
    API_FIELDS.get("types")?.get(name)?.as_object()
}

pub(super) fn alias(name: &str) -> Option<&'static str> {
    API_FIELDS
        .get("non_struct_named_types")?
        .get(name)?
        .as_str()
}

/// Decodes `input` as Go would decode it into a value of Go type `go_type`, then re-encodes it:
/// every struct field present, unknown keys gone.
pub fn decode(go_type: &str, input: Option<&Value>, path: &str) -> Result<Value, DecodeError> {
    let mismatch = |found: &Value| DecodeError {
        found: json_kind(found),
        path: path.to_string(),
        go_type: go_type.to_string(),
    };
    if let Some(inner) = go_type.strip_prefix('*') {
        return match input {
            None | Some(Value::Null) => Ok(Value::Null),
            Some(v) => decode(inner, Some(v), path),
        };
    }
    if go_type == "[]byte" {
        return match input {
            None | Some(Value::Null) => Ok(Value::Null),
            Some(Value::String(s)) => Ok(Value::String(s.clone())),
            Some(other) => Err(mismatch(other)),
        };
    }
    if let Some(elem) = go_type.strip_prefix("[]") {
        return match input {
            None | Some(Value::Null) => Ok(Value::Null),
            Some(Value::Array(items)) => items
                .iter()
                .map(|item| decode(elem, Some(item), path))
                .collect::<Result<Vec<_>, _>>()
                .map(Value::Array),
            Some(other) => Err(mismatch(other)),
        };
    }
    if let Some(rest) = go_type.strip_prefix("map[string]") {
        return match input {
            None | Some(Value::Null) => Ok(Value::Null),
            Some(Value::Object(m)) => {
                let mut out = Map::new();
                for (k, v) in m {
                    out.insert(k.clone(), decode(rest, Some(v), &format!("{path}.{k}"))?);
                }
                Ok(Value::Object(out))
            }
            Some(other) => Err(mismatch(other)),
        };
    }
    match go_type {
        "any" | "interface{}" => Ok(input.cloned().unwrap_or(Value::Null)),
        "string" => match input {
            None | Some(Value::Null) => Ok(json!("")),
            Some(Value::String(s)) => Ok(json!(s)),
            Some(other) => Err(mismatch(other)),
        },
        "bool" => match input {
            None | Some(Value::Null) => Ok(json!(false)),
            Some(Value::Bool(b)) => Ok(json!(b)),
            Some(other) => Err(mismatch(other)),
        },
        "float32" | "float64" => match input {
            None | Some(Value::Null) => Ok(json!(0.0)),
            Some(Value::Number(n)) => Ok(Value::Number(n.clone())),
            Some(other) => Err(mismatch(other)),
        },
        t if is_integer_type(t) => match input {
            None | Some(Value::Null) => Ok(json!(0)),
            Some(Value::Number(n)) if n.is_i64() || n.is_u64() => Ok(Value::Number(n.clone())),
            Some(other) => Err(mismatch(other)),
        },
        named => {
            if let Some(fields) = struct_fields(named) {
                let obj = match input {
                    None | Some(Value::Null) => Map::new(),
                    Some(Value::Object(m)) => m.clone(),
                    Some(other) => return Err(mismatch(other)),
                };
                let mut out = Map::new();
                for (field, field_type) in fields {
                    let ty = field_type.as_str().unwrap_or("any");
                    // Go prefers an exact key match, then falls back to a case-insensitive one.
                    let found = obj.get(field).or_else(|| {
                        obj.iter()
                            .find(|(k, _)| k.eq_ignore_ascii_case(field))
                            .map(|(_, v)| v)
                    });
                    out.insert(
                        field.clone(),
                        decode(ty, found, &format!("{path}.{field}"))?,
                    );
                }
                Ok(Value::Object(out))
            } else if let Some(target) = alias(named) {
                decode(target, input, path)
            } else {
                // Named scalar types (e.g. `ReconcileOption`) are strings in the API.
                Ok(input.cloned().unwrap_or(Value::Null))
            }
        }
    }
}

pub(super) fn is_integer_type(t: &str) -> bool {
    matches!(
        t,
        "int"
            | "int8"
            | "int16"
            | "int32"
            | "int64"
            | "uint"
            | "uint8"
            | "uint16"
            | "uint32"
            | "uint64"
            | "time.Duration"
    )
}

fn set_default(obj: &mut Value, key: &str, default: Value) {
    if let Some(m) = obj.as_object_mut() {
        let entry = m.entry(key.to_string()).or_insert(Value::Null);
        if entry.is_null() {
            *entry = default;
        }
    }
}

const SECOND: u64 = 1_000_000_000;

/// The update strategy Nomad gives a service job without an `update` block.
pub fn default_update_strategy() -> Value {
    json!({
        "Stagger": 30 * SECOND,
        "MaxParallel": 1,
        "HealthCheck": "checks",
        "MinHealthyTime": 10 * SECOND,
        "HealthyDeadline": 300 * SECOND,
        "ProgressDeadline": 600 * SECOND,
        "Canary": 0,
        "AutoRevert": false,
        "AutoPromote": false,
    })
}

fn update_is_empty(u: &Value) -> bool {
    u.as_object().is_none_or(|m| m.values().all(Value::is_null))
}

/// Applies `api.Job.Canonicalize` defaults (the subset that changes behaviour or appears on read).
pub fn canonicalize(job: &mut Value, namespace: &str) {
    let id = View::job(job).str("ID").to_string();
    set_default(job, "Region", json!("global"));
    if let Some(m) = job.as_object_mut() {
        m.insert("Namespace".into(), json!(namespace));
    }
    set_default(job, "Name", json!(id));
    set_default(job, "Type", json!("service"));
    set_default(job, "Priority", json!(50));
    set_default(job, "AllAtOnce", json!(false));
    set_default(job, "NodePool", json!("default"));
    set_default(job, "Stop", json!(false));
    set_default(job, "ParentID", json!(""));
    set_default(job, "ConsulNamespace", json!(""));
    set_default(job, "VaultNamespace", json!(""));
    set_default(job, "NomadTokenID", json!(""));
    set_default(job, "Status", json!(""));
    set_default(job, "StatusDescription", json!(""));
    set_default(job, "Stable", json!(false));
    set_default(job, "Version", json!(0));
    set_default(job, "SubmitTime", json!(0));
    set_default(job, "CreateIndex", json!(0));
    set_default(job, "ModifyIndex", json!(0));
    set_default(job, "JobModifyIndex", json!(0));
    if job
        .get("Datacenters")
        .and_then(Value::as_array)
        .is_none_or(Vec::is_empty)
        && let Some(m) = job.as_object_mut()
    {
        m.insert("Datacenters".into(), json!(["*"]));
    }
    let job_type = View::job(job).str("Type").to_string();
    let job_update = job.get("Update").cloned().unwrap_or(Value::Null);
    let job_update = if job_update.is_null() {
        if job_type == "service" {
            default_update_strategy()
        } else {
            Value::Null
        }
    } else {
        let mut u = default_update_strategy();
        merge_non_null(&mut u, &job_update);
        u
    };
    if let Some(m) = job.as_object_mut() {
        // `structs.Job.Update` is a value, not a pointer: a job without one reads back zeroed.
        let stored = if job_update.is_null() {
            json!({"Stagger": 0, "MaxParallel": 0, "HealthCheck": "", "MinHealthyTime": 0,
                "HealthyDeadline": 0, "ProgressDeadline": 0, "AutoRevert": false,
                "AutoPromote": false, "Canary": 0})
        } else {
            job_update.clone()
        };
        m.insert("Update".into(), stored);
    }
    let restart_default = if job_type == "service" || job_type == "system" {
        json!({"Delay": 15 * SECOND, "Attempts": 2, "Interval": 1800 * SECOND, "Mode": "fail", "RenderTemplates": false})
    } else {
        json!({"Delay": 15 * SECOND, "Attempts": 3, "Interval": 86400 * SECOND, "Mode": "fail", "RenderTemplates": false})
    };
    let Some(groups) = job.get_mut("TaskGroups").and_then(Value::as_array_mut) else {
        return;
    };
    for group in groups {
        set_default(group, "Count", json!(1));
        set_default(
            group,
            "EphemeralDisk",
            json!({"Sticky": false, "Migrate": false, "SizeMB": 300}),
        );
        let reschedule = match job_type.as_str() {
            "service" => Some(
                json!({"Attempts": 0, "Interval": 0, "Delay": 30 * SECOND, "DelayFunction": "exponential", "MaxDelay": 3600 * SECOND, "Unlimited": true}),
            ),
            "batch" => Some(
                json!({"Attempts": 1, "Interval": 86400 * SECOND, "Delay": 5 * SECOND, "DelayFunction": "constant", "MaxDelay": 0, "Unlimited": false}),
            ),
            _ => None,
        };
        if let Some(mut r) = reschedule {
            if let Some(given) = group.get("ReschedulePolicy") {
                merge_non_null(&mut r, given);
            }
            if let Some(m) = group.as_object_mut() {
                m.insert("ReschedulePolicy".into(), r);
            }
        }
        if job_type == "service" {
            let mut m = json!({"MaxParallel": 1, "HealthCheck": "checks", "MinHealthyTime": 10 * SECOND, "HealthyDeadline": 300 * SECOND});
            if let Some(given) = group.get("Migrate") {
                merge_non_null(&mut m, given);
            }
            if let Some(o) = group.as_object_mut() {
                o.insert("Migrate".into(), m);
            }
        }
        if let Some(networks) = group.get_mut("Networks").and_then(Value::as_array_mut) {
            for n in networks {
                set_default(n, "MBits", json!(0));
            }
        }
        let group_update = group.get("Update").cloned().unwrap_or(Value::Null);
        let merged = match (job_update.is_null(), group_update.is_null()) {
            (false, false) => {
                let mut u = job_update.clone();
                merge_non_null(&mut u, &group_update);
                u
            }
            (false, true) if !update_is_empty(&job_update) => job_update.clone(),
            (true, false) => {
                let mut u = default_update_strategy();
                merge_non_null(&mut u, &group_update);
                u
            }
            _ => Value::Null,
        };
        if let Some(m) = group.as_object_mut() {
            m.insert("Update".into(), merged);
        }
        let mut restart = restart_default.clone();
        if let Some(r) = group.get("RestartPolicy") {
            merge_non_null(&mut restart, r);
        }
        if let Some(m) = group.as_object_mut() {
            m.insert("RestartPolicy".into(), restart.clone());
        }
        if let Some(services) = group.get_mut("Services").and_then(Value::as_array_mut) {
            for svc in services {
                canonicalize_service(svc);
            }
        }
        let Some(tasks) = group.get_mut("Tasks").and_then(Value::as_array_mut) else {
            continue;
        };
        for task in tasks {
            set_default(task, "KillTimeout", json!(5 * SECOND));
            set_default(
                task,
                "LogConfig",
                json!({"MaxFiles": 10, "MaxFileSizeMB": 10, "Enabled": null, "Disabled": false}),
            );
            if task.get("Resources").is_none_or(Value::is_null)
                && let (Some(m), Ok(empty)) = (
                    task.as_object_mut(),
                    decode("Resources", Some(&json!({})), "Resources"),
                )
            {
                m.insert("Resources".into(), empty);
            }
            if let Some(res) = task.get_mut("Resources") {
                set_default(res, "CPU", json!(100));
                set_default(res, "MemoryMB", json!(300));
                set_default(res, "Cores", json!(0));
                set_default(res, "MemoryMaxMB", json!(0));
                set_default(res, "DiskMB", json!(0));
                set_default(res, "IOPS", json!(0));
            }
            let mut task_restart = restart.clone();
            if let Some(r) = task.get("RestartPolicy") {
                merge_non_null(&mut task_restart, r);
            }
            if let Some(m) = task.as_object_mut() {
                m.insert("RestartPolicy".into(), task_restart);
            }
            if let Some(templates) = task.get_mut("Templates").and_then(Value::as_array_mut) {
                for t in templates {
                    set_default(t, "SourcePath", json!(""));
                    set_default(t, "DestPath", json!(""));
                    set_default(t, "EmbeddedTmpl", json!(""));
                    set_default(t, "ChangeMode", json!("restart"));
                    set_default(t, "ChangeSignal", json!(""));
                    set_default(t, "Once", json!(false));
                    set_default(t, "Splay", json!(5 * SECOND));
                    set_default(t, "Perms", json!("0644"));
                    set_default(t, "LeftDelim", json!("{{"));
                    set_default(t, "RightDelim", json!("}}"));
                    set_default(t, "Envvars", json!(false));
                    set_default(t, "ErrMissingKey", json!(false));
                    set_default(t, "VaultGrace", json!(0));
                }
            }
            if let Some(services) = task.get_mut("Services").and_then(Value::as_array_mut) {
                for svc in services {
                    canonicalize_service(svc);
                }
            }
        }
    }
}

fn canonicalize_service(svc: &mut Value) {
    let service = |v: &Value, key: &str| View::of("Service", v).str(key).is_empty();
    if service(svc, "Provider") {
        set_str(svc, "Provider", "consul");
    }
    if service(svc, "AddressMode") {
        set_str(svc, "AddressMode", "auto");
    }
    if service(svc, "OnUpdate") {
        set_str(svc, "OnUpdate", "require_healthy");
    }
    let on_update = View::of("Service", svc).str("OnUpdate").to_string();
    if let Some(checks) = svc.get_mut("Checks").and_then(Value::as_array_mut) {
        for c in checks {
            if View::of("ServiceCheck", c).str("OnUpdate").is_empty() {
                set_str(c, "OnUpdate", &on_update);
            }
        }
    }
}

fn set_str(v: &mut Value, key: &str, value: &str) {
    if let Some(m) = v.as_object_mut() {
        m.insert(key.to_string(), json!(value));
    }
}

/// Overwrites fields of `base` with the non-null fields of `over` (Go's `Merge` on pointer structs).
pub fn merge_non_null(base: &mut Value, over: &Value) {
    if let (Some(b), Some(o)) = (base.as_object_mut(), over.as_object()) {
        for (k, v) in o {
            if !v.is_null() {
                b.insert(k.clone(), v.clone());
            }
        }
    }
}

/// The fields `Job.SpecChanged` ignores when deciding whether a register creates a new version.
pub const NON_SPEC_FIELDS: &[&str] = &[
    "Status",
    "StatusDescription",
    "Stable",
    "Version",
    "CreateIndex",
    "ModifyIndex",
    "JobModifyIndex",
    "SubmitTime",
    "VersionTag",
    "NomadTokenID",
];

/// Whether two canonical jobs differ in their specification.
pub fn spec_changed(a: &Value, b: &Value) -> bool {
    spec_of(a) != spec_of(b)
}

/// The job without the bookkeeping fields.
pub fn spec_of(job: &Value) -> Value {
    let mut j = job.clone();
    if let Some(m) = j.as_object_mut() {
        for f in NON_SPEC_FIELDS {
            m.remove(*f);
        }
    }
    j
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn unknown_keys_are_dropped_and_keys_match_case_insensitively() {
        let input = json!({"id": "web", "Datacenter": "dc1", "TaskGroups": [{"name": "g", "Tasks": [{"Name": "t", "Driver": "raw_exec", "Bogus": 1}]}]});
        let job = decode("Job", Some(&input), "Job").unwrap();
        assert_eq!(job["ID"], "web");
        assert!(job.get("Datacenter").is_none());
        assert_eq!(job["TaskGroups"][0]["Name"], "g");
        assert!(job["TaskGroups"][0]["Tasks"][0].get("Bogus").is_none());
        assert!(job["TaskGroups"][0]["Tasks"][0]["Templates"].is_null());
    }

    #[test]
    fn wrong_json_types_are_rejected_like_go() {
        let input = json!({"ID": "web", "Priority": "high"});
        let err = decode("Job", Some(&input), "Job").unwrap_err().to_string();
        assert!(err.contains("cannot unmarshal string"), "{err}");
    }

    #[test]
    fn service_jobs_get_the_default_update_strategy_and_system_jobs_do_not() {
        let mut svc = decode(
            "Job",
            Some(&json!({"ID": "a", "TaskGroups": [{"Name": "g"}]})),
            "Job",
        )
        .unwrap();
        canonicalize(&mut svc, "default");
        assert_eq!(
            svc["TaskGroups"][0]["Update"]["MinHealthyTime"],
            10 * SECOND
        );
        let mut sys = decode(
            "Job",
            Some(&json!({"ID": "a", "Type": "system", "TaskGroups": [{"Name": "g"}]})),
            "Job",
        )
        .unwrap();
        canonicalize(&mut sys, "default");
        assert!(sys["TaskGroups"][0]["Update"].is_null());
        assert_eq!(sys["TaskGroups"][0]["RestartPolicy"]["Attempts"], 2);
    }
}
