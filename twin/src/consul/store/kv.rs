//! KV entries, tombstones and the PUT/DELETE semantics of `/v1/kv` (DOC kv.mdx; SRC
//! agent/consul/state/kvs.go).

use serde::{Deserialize, Serialize};
use tokio::time::Instant;

use super::{Store, StoreError, Undo, b64};

/// One KV entry, serialised exactly as Consul's `DirEntry`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct KvEntry {
    /// Index of the write that created the key.
    pub create_index: u64,
    /// Index of the last write.
    pub modify_index: u64,
    /// How many times a lock was acquired on the key.
    pub lock_index: u64,
    /// The key.
    pub key: String,
    /// Opaque client flags.
    pub flags: u64,
    /// The value (base64 on the wire, `null` when empty).
    #[serde(with = "b64")]
    pub value: Vec<u8>,
    /// The session holding the lock, omitted when unlocked (`omitempty` in Consul).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session: Option<String>,
}

impl KvEntry {
    fn same_content(&self, other: &KvEntry) -> bool {
        self.value == other.value
            && self.flags == other.flags
            && self.session == other.session
            && self.lock_index == other.lock_index
    }
}

/// How a KV PUT applies.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PutMode {
    /// Plain write.
    Set,
    /// Check-and-set against ModifyIndex (0 = only if absent).
    Cas(u64),
    /// Acquire the lock with the session.
    Acquire(String),
    /// Release the lock held by the session.
    Release(String),
}

impl Store {
    /// A single key.
    pub fn kv_get(&self, key: &str) -> Option<&KvEntry> {
        self.kv.get(key)
    }

    /// The index of a single-key read: the key's ModifyIndex, or the KV table index when missing.
    pub fn kv_key_index(&self, key: &str) -> u64 {
        match self.kv.get(key) {
            Some(e) => e.modify_index,
            None => self.kv_index,
        }
    }

    /// Every entry whose key starts with `prefix` (string prefix, as Consul matches).
    pub fn kv_list(&self, prefix: &str) -> Vec<KvEntry> {
        self.kv
            .range(prefix.to_string()..)
            .take_while(|(k, _)| k.starts_with(prefix))
            .map(|(_, e)| e.clone())
            .collect()
    }

    /// The index of a prefix read: highest ModifyIndex or tombstone under the prefix, else the
    /// KV table index.
    pub fn kv_prefix_index(&self, prefix: &str) -> u64 {
        let live = self
            .kv
            .range(prefix.to_string()..)
            .take_while(|(k, _)| k.starts_with(prefix))
            .map(|(_, e)| e.modify_index)
            .max()
            .unwrap_or(0);
        let dead = self
            .tombstones
            .range(prefix.to_string()..)
            .take_while(|(k, _)| k.starts_with(prefix))
            .map(|(_, i)| *i)
            .max()
            .unwrap_or(0);
        match live.max(dead) {
            0 => self.kv_index,
            i => i,
        }
    }

    /// Keys under `prefix`, truncated after the first `separator` past the prefix.
    pub fn kv_keys(&self, prefix: &str, separator: Option<&str>) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        for (key, _) in self
            .kv
            .range(prefix.to_string()..)
            .take_while(|(k, _)| k.starts_with(prefix))
        {
            let item = match separator.filter(|s| !s.is_empty()) {
                Some(sep) => match key[prefix.len()..].find(sep) {
                    Some(pos) => key[..prefix.len() + pos + sep.len()].to_string(),
                    None => key.clone(),
                },
                None => key.clone(),
            };
            if out.last() != Some(&item) {
                out.push(item);
            }
        }
        out
    }

    /// Forgets every tombstone, as Consul's tombstone GC does; prefix indexes may go backwards.
    pub fn reap_tombstones(&mut self) {
        self.tombstones.clear();
        self.kv_index = self.kv.values().map(|e| e.modify_index).max().unwrap_or(0);
    }

    pub(super) fn journal_key(&mut self, key: &str) {
        if let Some(journal) = self.journal.as_mut()
            && !journal.iter().any(|u| u.key == key)
        {
            journal.push(Undo {
                key: key.to_string(),
                entry: self.kv.get(key).cloned(),
                tombstone: self.tombstones.get(key).copied(),
            });
        }
    }

    pub(super) fn kv_store(&mut self, entry: KvEntry, idx: u64) {
        self.journal_key(&entry.key);
        self.tombstones.remove(&entry.key);
        self.kv.insert(entry.key.clone(), entry);
        self.kv_index = self.kv_index.max(idx);
    }

    pub(super) fn kv_remove(&mut self, key: &str, idx: u64) -> bool {
        if !self.kv.contains_key(key) {
            return false;
        }
        self.journal_key(key);
        self.kv.remove(key);
        self.tombstones.insert(key.to_string(), idx);
        self.kv_index = self.kv_index.max(idx);
        true
    }

    /// Applies a KV PUT at index `idx`; returns whether it applied and whether anything changed.
    pub(super) fn kv_put_at(
        &mut self,
        idx: u64,
        key: &str,
        value: Vec<u8>,
        flags: u64,
        mode: &PutMode,
    ) -> Result<(bool, bool), StoreError> {
        let existing = self.kv.get(key).cloned();
        let mut entry = KvEntry {
            create_index: existing.as_ref().map_or(idx, |e| e.create_index),
            modify_index: idx,
            lock_index: existing.as_ref().map_or(0, |e| e.lock_index),
            key: key.to_string(),
            flags,
            value,
            session: existing.as_ref().and_then(|e| e.session.clone()),
        };
        match mode {
            PutMode::Set => {}
            PutMode::Cas(0) => {
                if existing.is_some() {
                    return Ok((false, false));
                }
            }
            PutMode::Cas(n) => match &existing {
                Some(e) if e.modify_index == *n => {}
                _ => return Ok((false, false)),
            },
            PutMode::Acquire(session) => {
                if !self.sessions.contains_key(session) {
                    return Err(StoreError::InvalidSession(session.clone()));
                }
                match existing.as_ref().and_then(|e| e.session.as_ref()) {
                    Some(holder) if holder == session => {}
                    Some(_) => return Ok((false, false)),
                    None => {
                        entry.lock_index += 1;
                        entry.session = Some(session.clone());
                    }
                }
            }
            PutMode::Release(session) => match existing.as_ref().and_then(|e| e.session.as_ref()) {
                Some(holder) if holder == session => entry.session = None,
                _ => return Ok((false, false)),
            },
        }
        if let Some(e) = &existing
            && e.same_content(&entry)
        {
            return Ok((true, false));
        }
        self.kv_store(entry, idx);
        Ok((true, true))
    }

    /// `PUT /v1/kv/:key`. Returns the `true`/`false` Consul answers.
    ///
    /// An acquire during the key's lock-delay is `false` before anything else is looked at,
    /// the session's validity included: Consul enforces lock-delay in `kvsPreApply`, ahead of
    /// the raft apply where an unknown session fails (SRC agent/consul/kvs_endpoint.go).
    /// Transactions have no such pre-check, so a txn `lock` ignores lock-delay.
    pub fn kv_put(
        &mut self,
        key: &str,
        value: Vec<u8>,
        flags: u64,
        mode: &PutMode,
        now: Instant,
    ) -> Result<bool, StoreError> {
        if matches!(mode, PutMode::Acquire(_)) && self.lock_delayed(key, now) {
            return Ok(false);
        }
        let idx = self.next();
        let (applied, changed) = self.kv_put_at(idx, key, value, flags, mode)?;
        if changed {
            self.index = idx;
        }
        Ok(applied)
    }

    pub(super) fn kv_delete_at(
        &mut self,
        idx: u64,
        key: &str,
        recurse: bool,
        cas: Option<u64>,
    ) -> (bool, bool) {
        if recurse {
            let keys: Vec<String> = self.kv_list(key).into_iter().map(|e| e.key).collect();
            let mut changed = false;
            for k in keys {
                changed |= self.kv_remove(&k, idx);
            }
            return (true, changed);
        }
        match (cas, self.kv.get(key)) {
            (Some(_), None) => (true, false),
            (Some(n), Some(e)) if n == 0 || e.modify_index != n => (false, false),
            _ => {
                let changed = self.kv_remove(key, idx);
                (true, changed)
            }
        }
    }

    /// `DELETE /v1/kv/:key`.
    pub fn kv_delete(&mut self, key: &str, recurse: bool, cas: Option<u64>) -> bool {
        let idx = self.next();
        let (ok, changed) = self.kv_delete_at(idx, key, recurse, cas);
        if changed {
            self.index = idx;
        }
        ok
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::super::test_support::{put, put_as, two_sessions};
    use super::*;

    #[test]
    fn identical_rewrite_does_not_advance_the_index() {
        let mut s = Store::default();
        put(&mut s, "a", "1");
        let i = s.index;
        assert!(put(&mut s, "a", "1"));
        assert_eq!(s.index, i);
        assert_eq!(s.kv_get("a").unwrap().modify_index, i);
    }

    #[test]
    fn prefix_index_includes_tombstones_until_they_are_reaped() {
        let mut s = Store::default();
        put(&mut s, "p/a", "1");
        put(&mut s, "p/b", "2");
        let before = s.kv_prefix_index("p/");
        assert!(s.kv_delete("p/b", false, None));
        let after = s.kv_prefix_index("p/");
        assert!(after > before);
        s.reap_tombstones();
        assert_eq!(
            s.kv_prefix_index("p/"),
            s.kv_get("p/a").unwrap().modify_index
        );
        assert!(
            s.kv_prefix_index("p/") < before,
            "reaping tombstones makes the index go backwards"
        );
    }

    #[test]
    fn cas_zero_creates_only_absent_keys_and_cas_n_needs_the_modify_index() {
        let mut s = Store::default();
        let now = Instant::now();
        assert!(put_as(&mut s, "k", "1", PutMode::Cas(0), now));
        assert!(!put_as(&mut s, "k", "2", PutMode::Cas(0), now));
        let m = s.kv_get("k").unwrap().modify_index;
        assert!(!put_as(&mut s, "k", "2", PutMode::Cas(m + 7), now));
        assert!(put_as(&mut s, "k", "2", PutMode::Cas(m), now));
        assert!(!put_as(&mut s, "missing", "2", PutMode::Cas(3), now));
    }

    #[test]
    fn lock_index_counts_fresh_acquires_and_release_keeps_it() {
        let now = Instant::now();
        let (mut s, a, b) = two_sessions(now);
        assert!(put_as(&mut s, "l", "x", PutMode::Acquire(a.clone()), now));
        assert!(put_as(&mut s, "l", "y", PutMode::Acquire(a.clone()), now));
        assert_eq!(s.kv_get("l").unwrap().lock_index, 1);
        assert!(!put_as(&mut s, "l", "z", PutMode::Acquire(b.clone()), now));
        assert!(!put_as(&mut s, "l", "z", PutMode::Release(b.clone()), now));
        assert!(put_as(&mut s, "l", "z", PutMode::Release(a), now));
        let e = s.kv_get("l").unwrap();
        assert_eq!((e.lock_index, e.session.clone()), (1, None));
        // release does not start lock-delay: another session may take it at once
        assert!(put_as(&mut s, "l", "w", PutMode::Acquire(b), now));
        assert_eq!(s.kv_get("l").unwrap().lock_index, 2);
    }

    #[test]
    fn keys_with_separator_fold_subdirectories() {
        let mut s = Store::default();
        for k in ["web/bar", "web/foo", "web/subdir/a", "web/subdir/b"] {
            put(&mut s, k, "x");
        }
        assert_eq!(
            s.kv_keys("web/", Some("/")),
            vec!["web/bar", "web/foo", "web/subdir/"]
        );
    }
}
