//! Typed reads of the Nomad objects the twin keeps as JSON (jobs, their groups and tasks,
//! evaluations), checked against Nomad's own struct definitions.
//!
//! Jobs are stored as the JSON a real server echoes (see `jobspec`), so the twin reads fields out
//! of `serde_json::Value`s. A [`View`] knows the Go struct it reads (`Job`, `TaskGroup`, …, from
//! `fixtures/nomad-api-fields.json`), and every read names the field *and* the kind it expects.
//! A key that the struct does not have, or whose Go type is of another kind, is a bug in the twin:
//! it fails loudly (a debug assertion in tests, an error log otherwise) instead of reading as `""`,
//! `0` or `false` the way the old one-letter accessors did. Absent or `null` values read as Go's
//! zero value, which is what a real server sees after decoding.

use super::jobspec::{alias, is_integer_type, struct_fields};
use serde_json::Value;
use std::time::Duration;

/// The kind of value a read expects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Str,
    Int,
    Bool,
    List,
    Struct,
    /// Maps and free-form values (`map[string]string`, `map[string]any`).
    Raw,
}

/// A read-only view of one Nomad API object of Go type `ty`.
#[derive(Debug, Clone, Copy)]
pub struct View<'a> {
    ty: &'static str,
    v: &'a Value,
}

static NULL: Value = Value::Null;

/// Reports a read the struct definition does not allow: a twin bug, never user input (decoding
/// already rejected wrongly typed input).
fn loud(ty: &str, key: &str, why: &str) {
    tracing::error!(go_type = ty, key, why, "hashistack-twin: bad field read");
    debug_assert!(false, "hashistack-twin: bad read of {ty}.{key}: {why}");
}

/// The kind and the element/struct type name of a Go type.
fn classify(go_type: &'static str) -> (Kind, &'static str) {
    let t = go_type.trim_start_matches('*');
    if t == "string" {
        return (Kind::Str, t);
    }
    if t == "bool" {
        return (Kind::Bool, t);
    }
    if is_integer_type(t) {
        return (Kind::Int, t);
    }
    if let Some(elem) = t.strip_prefix("[]") {
        return (Kind::List, elem.trim_start_matches('*'));
    }
    if t.starts_with("map[") || t == "any" || t == "interface{}" {
        return (Kind::Raw, t);
    }
    if struct_fields(t).is_some() {
        return (Kind::Struct, t);
    }
    match alias(t) {
        Some(target) => classify(target),
        None => (Kind::Raw, t),
    }
}

impl<'a> View<'a> {
    /// A view of `v` as Go struct `ty` (a type of Nomad's `api` package).
    pub fn of(ty: &'static str, v: &'a Value) -> View<'a> {
        if struct_fields(ty).is_none() {
            loud(ty, "", "not a struct of Nomad's api package");
        }
        View { ty, v }
    }

    /// A job (`api.Job`).
    pub fn job(v: &'a Value) -> View<'a> {
        View::of("Job", v)
    }

    /// A task group (`api.TaskGroup`).
    pub fn group(v: &'a Value) -> View<'a> {
        View::of("TaskGroup", v)
    }

    /// A task (`api.Task`).
    pub fn task(v: &'a Value) -> View<'a> {
        View::of("Task", v)
    }

    /// An evaluation (`api.Evaluation`).
    pub fn eval(v: &'a Value) -> View<'a> {
        View::of("Evaluation", v)
    }

    /// The JSON behind the view.
    pub fn value(&self) -> &'a Value {
        self.v
    }

    /// The field `key` after checking that the struct has it with a Go type of kind `want`;
    /// returns the field's type name (element type for lists) too.
    fn field(&self, key: &str, want: Kind) -> (Option<&'a Value>, &'static str) {
        let go_type = struct_fields(self.ty)
            .and_then(|fields| fields.get(key))
            .and_then(Value::as_str);
        let Some(go_type) = go_type else {
            loud(self.ty, key, "no such field");
            return (None, "");
        };
        let (kind, name) = classify(go_type);
        if kind != want {
            loud(
                self.ty,
                key,
                &format!("field is {go_type}, read as {want:?}"),
            );
            return (None, name);
        }
        (self.v.get(key).filter(|x| !x.is_null()), name)
    }

    /// A string field.
    pub fn str(&self, key: &str) -> &'a str {
        match self.field(key, Kind::Str).0 {
            None => "",
            Some(Value::String(s)) => s,
            Some(_) => {
                loud(self.ty, key, "value is not a string");
                ""
            }
        }
    }

    /// An integer field; negative values read as 0.
    pub fn uint(&self, key: &str) -> u64 {
        self.int(key).max(0) as u64
    }

    /// An integer field.
    pub fn int(&self, key: &str) -> i64 {
        match self.field(key, Kind::Int).0 {
            None => 0,
            Some(x) => match x.as_i64().or_else(|| x.as_u64().map(|u| u as i64)) {
                Some(n) => n,
                None => {
                    loud(self.ty, key, "value is not an integer");
                    0
                }
            },
        }
    }

    /// A `time.Duration` field (nanoseconds).
    pub fn dur(&self, key: &str) -> Duration {
        Duration::from_nanos(self.uint(key))
    }

    /// A boolean field.
    pub fn bool(&self, key: &str) -> bool {
        match self.field(key, Kind::Bool).0 {
            None => false,
            Some(Value::Bool(b)) => *b,
            Some(_) => {
                loud(self.ty, key, "value is not a bool");
                false
            }
        }
    }

    /// A list of structs (`[]*TaskGroup`, `[]Port`, …) as views.
    pub fn list(&self, key: &str) -> Vec<View<'a>> {
        let (found, elem) = self.field(key, Kind::List);
        if found.is_some() && struct_fields(elem).is_none() {
            loud(self.ty, key, "list of non-structs, read with strs()");
            return Vec::new();
        }
        match found {
            None => Vec::new(),
            Some(Value::Array(items)) => items.iter().map(|v| View { ty: elem, v }).collect(),
            Some(_) => {
                loud(self.ty, key, "value is not an array");
                Vec::new()
            }
        }
    }

    /// A list of strings (`[]string`).
    pub fn strs(&self, key: &str) -> Vec<&'a str> {
        let (found, elem) = self.field(key, Kind::List);
        if elem != "string" && !elem.is_empty() {
            loud(self.ty, key, "not a list of strings");
        }
        found
            .and_then(Value::as_array)
            .map(|items| items.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default()
    }

    /// A nested struct (`*UpdateStrategy`, …); `None` when unset.
    pub fn obj(&self, key: &str) -> Option<View<'a>> {
        let (found, name) = self.field(key, Kind::Struct);
        found.map(|v| View { ty: name, v })
    }

    /// A nested struct, or an empty one (all zero values) when unset.
    pub fn obj_or_empty(&self, key: &str) -> View<'a> {
        let (found, name) = self.field(key, Kind::Struct);
        View {
            ty: name,
            v: found.unwrap_or(&NULL),
        }
    }

    /// Whether a pointer, list or map field is set (not null).
    pub fn is_set(&self, key: &str) -> bool {
        let known = struct_fields(self.ty).is_some_and(|f| f.contains_key(key));
        if !known {
            loud(self.ty, key, "no such field");
        }
        self.v.get(key).is_some_and(|x| !x.is_null())
    }

    /// A map or free-form field (`Meta`, `Env`, a task's driver `Config`), as JSON.
    pub fn raw(&self, key: &str) -> Option<&'a Value> {
        self.field(key, Kind::Raw).0
    }

    /// The element of a struct list whose `Name` is `name` (task groups, tasks).
    pub fn named(&self, key: &str, name: &str) -> Option<View<'a>> {
        self.list(key).into_iter().find(|x| x.str("Name") == name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn reads_follow_the_go_struct_and_absent_fields_read_as_zero_values() {
        let job = json!({"ID": "web", "Priority": 70, "Stop": true, "TaskGroups": [
            {"Name": "g", "Count": 2, "Tasks": [{"Name": "t"}], "Update": null}
        ]});
        let v = View::job(&job);
        assert_eq!(v.str("ID"), "web");
        assert_eq!(v.uint("Priority"), 70);
        assert!(v.bool("Stop"));
        assert_eq!(v.str("Namespace"), "");
        let groups = v.list("TaskGroups");
        assert_eq!(groups.len(), 1);
        assert_eq!(groups[0].uint("Count"), 2);
        assert!(groups[0].obj("Update").is_none());
        assert_eq!(
            groups[0].named("Tasks", "t").map(|t| t.str("Name")),
            Some("t")
        );
    }

    #[test]
    #[should_panic(expected = "no such field")]
    fn a_mistyped_key_fails_loudly() {
        let job = json!({"ID": "web"});
        let _ = View::job(&job).str("Id");
    }

    #[test]
    #[should_panic(expected = "read as Int")]
    fn a_read_of_the_wrong_kind_fails_loudly() {
        let job = json!({"ID": "web"});
        let _ = View::job(&job).uint("ID");
    }
}
