//! `/v1/txn` KV operations: all or nothing, with an undo journal (DOC txn.mdx; SRC
//! agent/consul/state/txn.go).

use serde::Deserialize;
use tokio::time::Instant;

use super::{KvEntry, PutMode, Store};

/// One KV operation of a transaction.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct TxnKvOp {
    /// The verb (`set`, `cas`, `get`...).
    pub verb: String,
    /// The key.
    #[serde(default)]
    pub key: String,
    /// Base64 value.
    #[serde(default)]
    pub value: Option<String>,
    /// Flags.
    #[serde(default)]
    pub flags: u64,
    /// Index for cas / check-index / delete-cas.
    #[serde(default)]
    pub index: u64,
    /// Session for lock / unlock / check-session.
    #[serde(default)]
    pub session: String,
}

/// Undo record of a transaction: the previous entry and tombstone of a key.
#[derive(Debug, Clone)]
pub(super) struct Undo {
    pub(super) key: String,
    pub(super) entry: Option<KvEntry>,
    pub(super) tombstone: Option<u64>,
}

impl Store {
    /// `PUT /v1/txn` with KV operations: all or nothing. `Ok` holds the result entries, `Err`
    /// the `(OpIndex, What)` errors of a rolled-back transaction. `_now` is unused: a txn
    /// `lock` is not subject to lock-delay (see [`Store::kv_put`]); the parameter stays for
    /// the callers written against it.
    pub fn txn(
        &mut self,
        ops: &[TxnKvOp],
        _now: Instant,
    ) -> Result<Vec<KvEntry>, Vec<(usize, String)>> {
        let idx = self.next();
        let saved_kv_index = self.kv_index;
        self.journal = Some(Vec::new());
        let mut results = Vec::new();
        let mut errors = Vec::new();
        let mut changed = false;
        for (i, op) in ops.iter().enumerate() {
            match self.txn_op(idx, op) {
                Ok((mut out, c)) => {
                    changed |= c;
                    results.append(&mut out);
                }
                Err(what) => errors.push((i, what)),
            }
        }
        let journal = self.journal.take().unwrap_or_default();
        if !errors.is_empty() {
            for undo in journal.into_iter().rev() {
                match undo.entry {
                    Some(e) => {
                        self.kv.insert(undo.key.clone(), e);
                    }
                    None => {
                        self.kv.remove(&undo.key);
                    }
                }
                match undo.tombstone {
                    Some(t) => {
                        self.tombstones.insert(undo.key, t);
                    }
                    None => {
                        self.tombstones.remove(&undo.key);
                    }
                }
            }
            self.kv_index = saved_kv_index;
            return Err(errors);
        }
        if changed {
            self.index = idx;
        }
        Ok(results)
    }

    fn txn_op(&mut self, idx: u64, op: &TxnKvOp) -> Result<(Vec<KvEntry>, bool), String> {
        use base64::Engine;
        let key = op.key.as_str();
        let value = || -> Result<Vec<u8>, String> {
            match &op.value {
                None => Ok(Vec::new()),
                Some(v) => base64::engine::general_purpose::STANDARD
                    .decode(v.as_bytes())
                    .map_err(|e| format!("failed to decode value for key {key:?}: {e}")),
            }
        };
        let blank = |e: &KvEntry| KvEntry {
            value: Vec::new(),
            ..e.clone()
        };
        let current = |s: &Store| s.kv.get(key).map(blank).into_iter().collect::<Vec<_>>();
        match op.verb.as_str() {
            "set" | "cas" | "lock" | "unlock" => {
                // Each conditional write refuses with Consul's own text (txn_endpoint.go).
                let (mode, action, reason) = match op.verb.as_str() {
                    "cas" => (PutMode::Cas(op.index), "set", "index is stale"),
                    "lock" => (
                        PutMode::Acquire(op.session.clone()),
                        "lock",
                        "lock is already held",
                    ),
                    "unlock" => (
                        PutMode::Release(op.session.clone()),
                        "unlock",
                        "lock isn't held, or is held by another session",
                    ),
                    _ => (PutMode::Set, "set", ""),
                };
                let (ok, c) = self
                    .kv_put_at(idx, key, value()?, op.flags, &mode)
                    .map_err(|e| e.to_string())?;
                if !ok {
                    return Err(format!("failed to {action} key {key:?}, {reason}"));
                }
                Ok((current(self), c))
            }
            "get" => match self.kv.get(key) {
                Some(e) => Ok((vec![e.clone()], false)),
                None => Err(format!("key {key:?} doesn't exist")),
            },
            "get-or-empty" => Ok((self.kv.get(key).cloned().into_iter().collect(), false)),
            "get-tree" => Ok((self.kv_list(key), false)),
            "check-index" => match self.kv.get(key) {
                None => Err(format!("failed to check index, key {key:?} doesn't exist")),
                Some(e) if e.modify_index != op.index => Err(format!(
                    "failed index check for key {key:?}, current modify index {} != {}",
                    e.modify_index, op.index
                )),
                Some(e) => Ok((vec![blank(e)], false)),
            },
            "check-session" => match self.kv.get(key) {
                None => Err(format!(
                    "failed to check session, key {key:?} doesn't exist"
                )),
                Some(e) if e.session.as_deref() != Some(op.session.as_str()) => Err(format!(
                    "failed session check for key {key:?}, current session {:?} != {:?}",
                    e.session.clone().unwrap_or_default(),
                    op.session
                )),
                Some(e) => Ok((vec![blank(e)], false)),
            },
            "check-not-exists" => match self.kv.get(key) {
                Some(_) => Err(format!("key {key:?} exists")),
                None => Ok((Vec::new(), false)),
            },
            "delete" => {
                let (_, c) = self.kv_delete_at(idx, key, false, None);
                Ok((Vec::new(), c))
            }
            "delete-tree" => {
                let (_, c) = self.kv_delete_at(idx, key, true, None);
                Ok((Vec::new(), c))
            }
            "delete-cas" => {
                let (ok, c) = self.kv_delete_at(idx, key, false, Some(op.index));
                if !ok {
                    return Err(format!("failed to delete key {key:?}, index is stale"));
                }
                Ok((Vec::new(), c))
            }
            other => Err(format!("unknown KV verb {other:?}")),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::super::test_support::put;
    use super::*;

    #[test]
    fn failed_transaction_changes_nothing() {
        let mut s = Store::default();
        put(&mut s, "a", "1");
        let index = s.index;
        let ops = vec![
            TxnKvOp {
                verb: "set".into(),
                key: "a".into(),
                value: Some("Mg==".into()),
                flags: 0,
                index: 0,
                session: String::new(),
            },
            TxnKvOp {
                verb: "delete".into(),
                key: "a".into(),
                value: None,
                flags: 0,
                index: 0,
                session: String::new(),
            },
            TxnKvOp {
                verb: "get".into(),
                key: "nope".into(),
                value: None,
                flags: 0,
                index: 0,
                session: String::new(),
            },
        ];
        let errs = s.txn(&ops, Instant::now()).unwrap_err();
        assert_eq!(errs[0].0, 2);
        assert_eq!(s.kv_get("a").unwrap().value, b"1");
        assert_eq!(s.index, index);
        assert_eq!(s.kv_prefix_index("a"), index);
    }
}
