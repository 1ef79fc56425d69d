//! Nomad Variables (`/v1/var/:path`, `/v1/vars`): items at a path in a namespace, written
//! whole, with check-and-set on `ModifyIndex` (SRC nomad/state/state_store_variables.go,
//! nomad/structs/variables.go).

use super::{ApiError, Store};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use std::collections::BTreeMap;

/// One variable, as a server keeps it (the twin does not encrypt at rest).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct VariableRecord {
    /// Its namespace.
    pub namespace: String,
    /// Its path.
    pub path: String,
    /// The items, key → value.
    pub items: BTreeMap<String, String>,
    /// Raft index that created it.
    pub create_index: u64,
    /// Raft index of its last write (the `cas` a writer checks).
    pub modify_index: u64,
    /// Nanoseconds since the epoch.
    pub create_time: i64,
    /// Nanoseconds since the epoch.
    pub modify_time: i64,
}

/// What a check-and-set write found instead of what it expected: the current variable, or
/// only its namespace and path when there is none (Nomad's `Conflict`).
pub type Conflict = Value;

impl VariableRecord {
    /// `VariableMetadata`, what `/v1/vars` lists.
    pub fn metadata(&self) -> Value {
        json!({
            "Namespace": self.namespace,
            "Path": self.path,
            "CreateIndex": self.create_index,
            "ModifyIndex": self.modify_index,
            "CreateTime": self.create_time,
            "ModifyTime": self.modify_time,
        })
    }

    /// `VariableDecrypted`, what `/v1/var/:path` answers.
    pub fn json(&self) -> Value {
        let mut v = self.metadata();
        v["Items"] = json!(self.items);
        v
    }
}

/// The conflict body when nothing exists at the path.
fn absent(ns: &str, path: &str) -> Conflict {
    json!({
        "Namespace": ns,
        "Path": path,
        "CreateIndex": 0,
        "ModifyIndex": 0,
        "CreateTime": 0,
        "ModifyTime": 0,
        "Items": null,
    })
}

/// Checks a path as Nomad's `VariableDecrypted.Validate` does: `[a-zA-Z0-9-_~/]{1,128}`, and
/// under the reserved top-level `nomad` only `nomad/jobs…` and `nomad/job-templates/<name>`.
pub fn validate_path(path: &str) -> Result<(), String> {
    let charset = |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '~' | '/');
    if path.is_empty() || path.len() > 128 || !path.chars().all(charset) {
        return Err(format!("invalid path {path:?}"));
    }
    let parts: Vec<&str> = path.split('/').collect();
    match parts.as_slice() {
        ["nomad"] => Err("\"nomad\" is a reserved top-level directory path, but you may write variables to \"nomad/jobs\", \"nomad/job-templates\", or below".to_string()),
        ["nomad", "jobs", ..] | ["nomad", "job-templates", _] => Ok(()),
        ["nomad", ..] => Err("only paths at \"nomad/jobs\" or \"nomad/job-templates/<name>\" and below are valid paths under the top-level \"nomad\" directory".to_string()),
        _ => Ok(()),
    }
}

impl Store {
    /// The variable at `path` in `ns`.
    pub fn variable(&self, ns: &str, path: &str) -> Option<&VariableRecord> {
        self.variables.get(&(ns.to_string(), path.to_string()))
    }

    /// Writes the items of `path` whole. With `cas`, only when its `ModifyIndex` is `cas`
    /// (`0`: only when it does not exist); otherwise `Ok(Err(conflict))`.
    pub fn put_variable(
        &mut self,
        ns: &str,
        path: &str,
        items: BTreeMap<String, String>,
        cas: Option<u64>,
    ) -> Result<Result<VariableRecord, Conflict>, ApiError> {
        validate_path(path).map_err(|e| ApiError::new(500, e))?;
        let key = (ns.to_string(), path.to_string());
        let existing = self.variables.get(&key);
        if let Some(cas) = cas {
            let current = existing.map_or(0, |v| v.modify_index);
            if current != cas {
                return Ok(Err(existing.map_or_else(|| absent(ns, path), |v| v.json())));
            }
        }
        let now = self.clock.now();
        let (create_index, create_time) =
            existing.map_or((0, now), |v| (v.create_index, v.create_time));
        let index = self.next_index();
        let record = VariableRecord {
            namespace: ns.to_string(),
            path: path.to_string(),
            items,
            create_index: if create_index == 0 {
                index
            } else {
                create_index
            },
            modify_index: index,
            create_time,
            modify_time: now,
        };
        self.variables.insert(key, record.clone());
        self.tables.variables = index;
        Ok(Ok(record))
    }

    /// Deletes `path` (nothing there is no error). With `cas`, only when its `ModifyIndex` is
    /// `cas`; otherwise `Err(conflict)`. The write's index on success.
    pub fn delete_variable(
        &mut self,
        ns: &str,
        path: &str,
        cas: Option<u64>,
    ) -> Result<u64, Conflict> {
        let key = (ns.to_string(), path.to_string());
        let existing = self.variables.get(&key);
        if let Some(cas) = cas {
            let current = existing.map_or(0, |v| v.modify_index);
            if current != cas {
                return Err(existing.map_or_else(|| absent(ns, path), |v| v.json()));
            }
        }
        let index = self.next_index();
        self.variables.remove(&key);
        self.tables.variables = index;
        Ok(index)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn paths_follow_nomads_charset_and_its_reserved_top_level_directory() {
        assert!(validate_path("nomad/jobs/proxy").is_ok());
        assert!(validate_path("nomad/jobs").is_ok());
        assert!(validate_path("team/app~1").is_ok());
        assert!(validate_path("nomad").is_err());
        assert!(validate_path("nomad/other").is_err());
        assert!(validate_path("a b").is_err());
        assert!(validate_path(&"x".repeat(129)).is_err());
    }

    #[test]
    fn a_check_and_set_write_needs_the_current_modify_index() {
        let mut st = Store::new("n".into());
        let items = BTreeMap::from([("k".to_string(), "v".to_string())]);
        let first = st
            .put_variable("default", "app", items.clone(), Some(0))
            .unwrap()
            .unwrap();
        let conflict = st
            .put_variable("default", "app", items.clone(), Some(0))
            .unwrap()
            .unwrap_err();
        assert_eq!(conflict["ModifyIndex"], first.modify_index);
        let second = st
            .put_variable("default", "app", items, Some(first.modify_index))
            .unwrap()
            .unwrap();
        assert_eq!(second.create_index, first.create_index);
        assert!(second.modify_index > first.modify_index);
        assert!(
            st.delete_variable("default", "app", Some(first.modify_index))
                .is_err()
        );
        assert!(
            st.delete_variable("default", "app", Some(second.modify_index))
                .is_ok()
        );
        assert!(st.variable("default", "app").is_none());
    }
}
