//! The Consul state store: KV entries with tombstones, sessions with lock-delay, and the catalog
//! (nodes, services, checks), each with the table indexes Consul's blocking queries report.
//!
//! Pure and synchronous: the HTTP layer holds it behind a lock and publishes `index` after each
//! write. One write operation (one PUT, one transaction, one session invalidation) is one raft
//! index, as in Consul, and a write that changes nothing does not advance any index.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tokio::time::Instant;

use crate::blocking::format_go_duration;

/// Consul's default `kv_max_value_size`.
pub const MAX_VALUE_SIZE: usize = 512 * 1024;
/// The twin's own node (the agent's node in Consul terms).
pub const NODE_NAME: &str = "hashistack-twin";
/// The twin node's ID.
pub const NODE_ID: &str = "7a1c3e4f-0000-4000-8000-000000000001";
/// The twin's datacenter.
pub const DATACENTER: &str = "dc1";
/// Consul reaps a TTL session only after `TTL * SessionTTLMultiplier` (agent/structs: 2).
pub const SESSION_TTL_MULTIPLIER: u32 = 2;
/// Smallest session TTL Consul accepts.
pub const SESSION_TTL_MIN: Duration = Duration::from_secs(10);
/// Largest session TTL Consul accepts.
pub const SESSION_TTL_MAX: Duration = Duration::from_secs(86400);
/// Consul's `MaxLockDelay`.
pub const MAX_LOCK_DELAY: Duration = Duration::from_secs(60);

/// Failures of store operations; the HTTP layer maps them to Consul's status codes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    /// Acquire/lock with a session that does not exist (Consul answers 500).
    #[error("invalid session \"{0}\"")]
    InvalidSession(String),
    /// A request Consul rejects with 400.
    #[error("{0}")]
    BadRequest(String),
    /// A request Consul rejects with 500 (its catch-all).
    #[error("{0}")]
    Internal(String),
}

/// Serde adapter: bytes as base64, empty as `null` (Consul returns `null` for an empty value).
mod b64 {
    use base64::Engine;
    use base64::engine::general_purpose::STANDARD;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &[u8], s: S) -> Result<S::Ok, S::Error> {
        if v.is_empty() {
            s.serialize_none()
        } else {
            s.serialize_str(&STANDARD.encode(v))
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let text: Option<String> = Option::deserialize(d)?;
        match text {
            None => Ok(Vec::new()),
            Some(t) => STANDARD
                .decode(t.as_bytes())
                .map_err(serde::de::Error::custom),
        }
    }
}

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

/// A service check reference on a session.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceCheckRef {
    /// The check ID.
    #[serde(rename = "ID")]
    pub id: String,
    /// Namespace (Enterprise; empty on OSS).
    #[serde(rename = "Namespace", default)]
    pub namespace: String,
}

/// A session, serialised as Consul's `/v1/session/info` elements.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Session {
    /// UUID.
    #[serde(rename = "ID")]
    pub id: String,
    /// Free-form name.
    #[serde(rename = "Name")]
    pub name: String,
    /// Node the session belongs to.
    #[serde(rename = "Node")]
    pub node: String,
    /// Lock-delay in nanoseconds.
    #[serde(rename = "LockDelay")]
    pub lock_delay: u64,
    /// `release` or `delete`.
    #[serde(rename = "Behavior")]
    pub behavior: String,
    /// TTL as the client wrote it (`""` when none).
    #[serde(rename = "TTL")]
    pub ttl: String,
    /// Node checks that invalidate the session when critical.
    #[serde(rename = "NodeChecks")]
    pub node_checks: Vec<String>,
    /// Service checks that invalidate the session when critical.
    #[serde(rename = "ServiceChecks")]
    pub service_checks: Option<Vec<ServiceCheckRef>>,
    /// Checks given in the deprecated `Checks` field, kept next to `NodeChecks` as Consul keeps
    /// them (`json:",omitempty"` in structs.Session).
    #[serde(rename = "Checks", default, skip_serializing_if = "Vec::is_empty")]
    pub checks: Vec<String>,
    /// Index of creation.
    #[serde(rename = "CreateIndex")]
    pub create_index: u64,
    /// Index of last modification.
    #[serde(rename = "ModifyIndex")]
    pub modify_index: u64,
}

/// What a client asks for in `PUT /v1/session/create`.
#[derive(Debug, Clone, Default)]
pub struct SessionSpec {
    /// Name.
    pub name: String,
    /// Node (default: the twin's node).
    pub node: Option<String>,
    /// Lock-delay (default 15 s).
    pub lock_delay: Option<Duration>,
    /// Behavior (default `release`).
    pub behavior: Option<String>,
    /// TTL text as sent (`""`/absent = none).
    pub ttl: Option<String>,
    /// Node checks (default `["serfHealth"]`).
    pub node_checks: Option<Vec<String>>,
    /// Checks from the deprecated `Checks` field that survive Consul's
    /// `fixupEmptySessionChecks` (bound in addition to `node_checks`).
    pub checks: Vec<String>,
    /// Service checks.
    pub service_checks: Option<Vec<ServiceCheckRef>>,
}

/// A catalog node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Node {
    /// Node UUID.
    pub id: String,
    /// Node name.
    pub node: String,
    /// Node address.
    pub address: String,
    /// Tagged addresses (`lan`, `wan`...).
    pub tagged_addresses: BTreeMap<String, String>,
    /// Node meta.
    pub meta: BTreeMap<String, String>,
    /// Creation index.
    pub create_index: u64,
    /// Last modification index.
    pub modify_index: u64,
}

/// A service instance on a node.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ServiceInstance {
    /// Service ID (unique per node).
    pub id: String,
    /// Service name.
    pub service: String,
    /// Tags, in registration order.
    pub tags: Vec<String>,
    /// Service address (empty: use the node's).
    pub address: String,
    /// Tagged addresses as Consul stores them (`{"lan": {"address", "port"}}`).
    pub tagged_addresses: Value,
    /// Service meta.
    pub meta: BTreeMap<String, String>,
    /// Port.
    pub port: i64,
    /// Weights `{Passing, Warning}`.
    pub weights: (i64, i64),
    /// EnableTagOverride.
    pub enable_tag_override: bool,
    /// Kind (`""` for typical services).
    pub kind: String,
    /// Creation index.
    pub create_index: u64,
    /// Last modification index.
    pub modify_index: u64,
}

/// A health check.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Check {
    /// Node.
    pub node: String,
    /// Check ID.
    pub check_id: String,
    /// Name.
    pub name: String,
    /// `passing`, `warning`, `critical` or `maintenance`.
    pub status: String,
    /// Notes.
    pub notes: String,
    /// Output.
    pub output: String,
    /// Service ID (`""` for a node check).
    pub service_id: String,
    /// Service name, filled from the service.
    pub service_name: String,
    /// Service tags, filled from the service.
    pub service_tags: Vec<String>,
    /// Check type (`http`, `tcp`, `ttl`...; empty for catalog checks).
    pub kind: String,
    /// Interval text.
    pub interval: String,
    /// Timeout text.
    pub timeout: String,
    /// Definition object as registered.
    pub definition: Value,
    /// Creation index.
    pub create_index: u64,
    /// Last modification index.
    pub modify_index: u64,
}

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
struct Undo {
    key: String,
    entry: Option<KvEntry>,
    tombstone: Option<u64>,
}

/// The whole state, persisted as one JSON snapshot.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct Store {
    /// The last raft index handed out.
    pub index: u64,
    kv: BTreeMap<String, KvEntry>,
    tombstones: BTreeMap<String, u64>,
    kv_index: u64,
    sessions: BTreeMap<String, Session>,
    sessions_index: u64,
    nodes: BTreeMap<String, Node>,
    /// node -> service ID -> instance
    services: BTreeMap<String, BTreeMap<String, ServiceInstance>>,
    /// node -> check ID -> check
    checks: BTreeMap<String, BTreeMap<String, Check>>,
    nodes_index: u64,
    services_index: u64,
    checks_index: u64,
    service_indexes: BTreeMap<String, u64>,
    #[serde(skip)]
    lock_delays: HashMap<String, Instant>,
    #[serde(skip)]
    session_deadlines: HashMap<String, Instant>,
    #[serde(skip)]
    journal: Option<Vec<Undo>>,
}

impl Store {
    /// A fresh store holding the twin's own node with its `serfHealth` check and the `consul`
    /// service, as a new Consul cluster does.
    pub fn seeded() -> Store {
        let mut store = Store::default();
        let seed = RegisterRequest {
            id: NODE_ID.to_string(),
            node: NODE_NAME.to_string(),
            address: "127.0.0.1".to_string(),
            tagged_addresses: Some(BTreeMap::from([
                ("lan".to_string(), "127.0.0.1".to_string()),
                ("wan".to_string(), "127.0.0.1".to_string()),
            ])),
            node_meta: Some(BTreeMap::from([(
                "consul-network-segment".to_string(),
                String::new(),
            )])),
            service: Some(ServiceDef {
                id: "consul".to_string(),
                service: "consul".to_string(),
                port: 8300,
                ..ServiceDef::default()
            }),
            check: Some(CheckDef {
                check_id: "serfHealth".to_string(),
                name: "Serf Health Status".to_string(),
                status: "passing".to_string(),
                output: "Agent alive and reachable".to_string(),
                ..CheckDef::default()
            }),
            ..RegisterRequest::default()
        };
        // The seed is well-formed by construction; a failure would only drop the seed entries.
        let _ = store.register(seed, Instant::now());
        store
    }

    /// Re-arms TTL timers after a restore: Consul resets session timers on a leader change.
    pub fn rearm_after_restore(&mut self, now: Instant) {
        let ids: Vec<String> = self.sessions.keys().cloned().collect();
        for id in ids {
            self.arm_session_timer(&id, now);
        }
    }

    fn next(&self) -> u64 {
        self.index + 1
    }

    // === KV ===

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

    fn journal_key(&mut self, key: &str) {
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

    fn kv_store(&mut self, entry: KvEntry, idx: u64) {
        self.journal_key(&entry.key);
        self.tombstones.remove(&entry.key);
        self.kv.insert(entry.key.clone(), entry);
        self.kv_index = self.kv_index.max(idx);
    }

    fn kv_remove(&mut self, key: &str, idx: u64) -> bool {
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
    fn kv_put_at(
        &mut self,
        idx: u64,
        key: &str,
        value: Vec<u8>,
        flags: u64,
        mode: &PutMode,
        now: Instant,
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
                if let Some(until) = self.lock_delays.get(key)
                    && *until > now
                {
                    return Ok((false, false));
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
    pub fn kv_put(
        &mut self,
        key: &str,
        value: Vec<u8>,
        flags: u64,
        mode: &PutMode,
        now: Instant,
    ) -> Result<bool, StoreError> {
        let idx = self.next();
        let (applied, changed) = self.kv_put_at(idx, key, value, flags, mode, now)?;
        if changed {
            self.index = idx;
        }
        Ok(applied)
    }

    fn kv_delete_at(
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

    // === transactions ===

    /// `PUT /v1/txn` with KV operations: all or nothing. `Ok` holds the result entries, `Err`
    /// the `(OpIndex, What)` errors of a rolled-back transaction.
    pub fn txn(
        &mut self,
        ops: &[TxnKvOp],
        now: Instant,
    ) -> Result<Vec<KvEntry>, Vec<(usize, String)>> {
        let idx = self.next();
        let saved_kv_index = self.kv_index;
        self.journal = Some(Vec::new());
        let mut results = Vec::new();
        let mut errors = Vec::new();
        let mut changed = false;
        for (i, op) in ops.iter().enumerate() {
            match self.txn_op(idx, op, now) {
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

    fn txn_op(
        &mut self,
        idx: u64,
        op: &TxnKvOp,
        now: Instant,
    ) -> Result<(Vec<KvEntry>, bool), String> {
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
            "set" => {
                let (_, c) = self
                    .kv_put_at(idx, key, value()?, op.flags, &PutMode::Set, now)
                    .map_err(|e| e.to_string())?;
                Ok((current(self), c))
            }
            "cas" => {
                let (ok, c) = self
                    .kv_put_at(idx, key, value()?, op.flags, &PutMode::Cas(op.index), now)
                    .map_err(|e| e.to_string())?;
                if !ok {
                    return Err(format!("failed to set key {key:?}, index is stale"));
                }
                Ok((current(self), c))
            }
            "lock" => {
                let mode = PutMode::Acquire(op.session.clone());
                let (ok, c) = self
                    .kv_put_at(idx, key, value()?, op.flags, &mode, now)
                    .map_err(|e| e.to_string())?;
                if !ok {
                    return Err(format!("failed to lock key {key:?}, lock is already held"));
                }
                Ok((current(self), c))
            }
            "unlock" => {
                let mode = PutMode::Release(op.session.clone());
                let (ok, c) = self
                    .kv_put_at(idx, key, value()?, op.flags, &mode, now)
                    .map_err(|e| e.to_string())?;
                if !ok {
                    return Err(format!(
                        "failed to unlock key {key:?}, lock isn't held, or is held by another session"
                    ));
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

    // === sessions ===

    /// The sessions table index (≥ 1 applied by the caller).
    pub fn sessions_index(&self) -> u64 {
        self.sessions_index
    }

    /// One session.
    pub fn session(&self, id: &str) -> Option<&Session> {
        self.sessions.get(id)
    }

    /// Every session, ordered by ID.
    pub fn sessions(&self) -> Vec<Session> {
        self.sessions.values().cloned().collect()
    }

    /// Sessions of one node.
    pub fn sessions_of_node(&self, node: &str) -> Vec<Session> {
        self.sessions
            .values()
            .filter(|s| s.node == node)
            .cloned()
            .collect()
    }

    /// `PUT /v1/session/create`: validates as Consul does and returns the new ID.
    pub fn session_create(
        &mut self,
        spec: SessionSpec,
        now: Instant,
    ) -> Result<String, StoreError> {
        let node = spec
            .node
            .filter(|n| !n.is_empty())
            .unwrap_or_else(|| NODE_NAME.to_string());
        let behavior = spec
            .behavior
            .filter(|b| !b.is_empty())
            .unwrap_or_else(|| "release".to_string());
        if behavior != "release" && behavior != "delete" {
            return Err(StoreError::Internal(format!(
                "Invalid Behavior setting '{behavior}'"
            )));
        }
        let ttl = spec.ttl.unwrap_or_default();
        if !ttl.is_empty() {
            let parsed = crate::blocking::parse_go_duration(&ttl).ok_or_else(|| {
                StoreError::BadRequest(format!(
                    "Request decode failed: time: invalid duration {ttl:?}"
                ))
            })?;
            if parsed != Duration::ZERO && !(SESSION_TTL_MIN..=SESSION_TTL_MAX).contains(&parsed) {
                return Err(StoreError::Internal(format!(
                    "Invalid Session TTL '{}', must be between [{}={}]",
                    parsed.as_nanos(),
                    format_go_duration(SESSION_TTL_MIN),
                    format_go_duration(SESSION_TTL_MAX)
                )));
            }
        }
        let lock_delay = spec.lock_delay.unwrap_or(Duration::from_secs(15));
        if lock_delay > MAX_LOCK_DELAY {
            return Err(StoreError::Internal(format!(
                "Lock delay must be between 0 and {}",
                format_go_duration(MAX_LOCK_DELAY)
            )));
        }
        if !self.nodes.contains_key(&node) {
            return Err(StoreError::Internal(
                "Missing node registration".to_string(),
            ));
        }
        let node_checks = spec
            .node_checks
            .unwrap_or_else(|| vec!["serfHealth".to_string()]);
        // Every bound check must exist and not be critical, whichever field named it
        // (structs.Session.CheckIDs merges them).
        for check in spec.checks.iter().chain(&node_checks) {
            match self.checks.get(&node).and_then(|c| c.get(check)) {
                None => {
                    return Err(StoreError::Internal(format!(
                        "Missing check '{check}' registration"
                    )));
                }
                Some(c) if c.status == "critical" => {
                    return Err(StoreError::Internal(format!(
                        "Check '{check}' is in critical state"
                    )));
                }
                Some(_) => {}
            }
        }
        let idx = self.next();
        let id = uuid::Uuid::new_v4().to_string();
        let session = Session {
            id: id.clone(),
            name: spec.name,
            node,
            lock_delay: lock_delay.as_nanos() as u64,
            behavior,
            ttl,
            node_checks,
            service_checks: spec.service_checks,
            checks: spec.checks,
            create_index: idx,
            modify_index: idx,
        };
        self.sessions.insert(id.clone(), session);
        self.sessions_index = idx;
        self.index = idx;
        self.arm_session_timer(&id, now);
        Ok(id)
    }

    fn session_ttl(&self, id: &str) -> Option<Duration> {
        let ttl = &self.sessions.get(id)?.ttl;
        crate::blocking::parse_go_duration(ttl).filter(|d| !d.is_zero())
    }

    fn arm_session_timer(&mut self, id: &str, now: Instant) {
        if let Some(ttl) = self.session_ttl(id) {
            self.session_deadlines
                .insert(id.to_string(), now + ttl * SESSION_TTL_MULTIPLIER);
        }
    }

    /// `PUT /v1/session/renew/:id`: resets the TTL timer. `None` when the session is unknown.
    pub fn session_renew(&mut self, id: &str, now: Instant) -> Option<Session> {
        let session = self.sessions.get(id)?.clone();
        self.arm_session_timer(id, now);
        Some(session)
    }

    /// Invalidates a session (destroy, TTL expiry, critical check): releases or deletes its locks
    /// and starts lock-delay on them. Returns whether the session existed.
    pub fn session_invalidate(&mut self, id: &str, now: Instant) -> bool {
        let Some(session) = self.sessions.remove(id) else {
            return false;
        };
        self.session_deadlines.remove(id);
        let idx = self.next();
        let held: Vec<KvEntry> = self
            .kv
            .values()
            .filter(|e| e.session.as_deref() == Some(id))
            .cloned()
            .collect();
        let delay = Duration::from_nanos(session.lock_delay);
        for entry in held {
            if !delay.is_zero() {
                self.lock_delays.insert(entry.key.clone(), now + delay);
            }
            if session.behavior == "delete" {
                self.kv_remove(&entry.key, idx);
            } else {
                let released = KvEntry {
                    session: None,
                    modify_index: idx,
                    ..entry
                };
                self.kv_store(released, idx);
            }
        }
        self.sessions_index = idx;
        self.index = idx;
        true
    }

    /// Sessions whose TTL timer has run out.
    pub fn expired_sessions(&self, now: Instant) -> Vec<String> {
        self.session_deadlines
            .iter()
            .filter(|(_, d)| **d <= now)
            .map(|(id, _)| id.clone())
            .collect()
    }

    /// The earliest TTL deadline, for the reaper's sleep.
    pub fn next_session_deadline(&self) -> Option<Instant> {
        self.session_deadlines.values().min().copied()
    }

    // === catalog ===

    /// The catalog `services` table index.
    pub fn services_index(&self) -> u64 {
        self.services_index
    }

    /// The checks table index.
    pub fn checks_index(&self) -> u64 {
        self.checks_index
    }

    /// The nodes table index.
    pub fn nodes_index(&self) -> u64 {
        self.nodes_index
    }

    /// The index of everything about one service (instances, their checks, their nodes).
    pub fn service_index(&self, name: &str) -> u64 {
        self.service_indexes
            .get(name)
            .copied()
            .unwrap_or(self.services_index)
    }

    fn touch_service(&mut self, name: &str, idx: u64) {
        self.service_indexes.insert(name.to_string(), idx);
    }

    fn touch_node_services(&mut self, node: &str, idx: u64) {
        let names: Vec<String> = self
            .services
            .get(node)
            .map(|m| m.values().map(|s| s.service.clone()).collect())
            .unwrap_or_default();
        for name in names {
            self.touch_service(&name, idx);
        }
    }

    /// `PUT /v1/catalog/register`.
    pub fn register(&mut self, req: RegisterRequest, now: Instant) -> Result<(), StoreError> {
        if req.node.is_empty() {
            return Err(StoreError::BadRequest("Must provide node".to_string()));
        }
        let exists = self.nodes.contains_key(&req.node);
        if req.address.is_empty() && !(req.skip_node_update && exists) {
            return Err(StoreError::BadRequest(
                "Must provide address if SkipNodeUpdate is not set".to_string(),
            ));
        }
        if let Some(svc) = &req.service
            && svc.service.is_empty()
        {
            return Err(StoreError::BadRequest(
                "Must provide service name (Service.Service)".to_string(),
            ));
        }
        let mut checks: Vec<CheckDef> = req.checks.clone().unwrap_or_default();
        if let Some(c) = req.check.clone() {
            checks.push(c);
        }
        for c in &checks {
            if !c.node.is_empty() && c.node != req.node {
                return Err(StoreError::BadRequest(format!(
                    "Node mismatch for check '{}': expected '{}', got '{}'",
                    c.check_id, req.node, c.node
                )));
            }
        }
        let idx = self.next();
        let mut changed = false;

        // Node.
        if !(req.skip_node_update && exists) {
            let old = self.nodes.get(&req.node).cloned();
            let node = Node {
                id: if req.id.is_empty() {
                    old.as_ref().map(|n| n.id.clone()).unwrap_or_default()
                } else {
                    req.id.clone()
                },
                node: req.node.clone(),
                address: req.address.clone(),
                tagged_addresses: req.tagged_addresses.clone().unwrap_or_default(),
                meta: req.node_meta.clone().unwrap_or_default(),
                create_index: old.as_ref().map_or(idx, |n| n.create_index),
                modify_index: idx,
            };
            let same = old.as_ref().is_some_and(|o| {
                Node {
                    modify_index: o.modify_index,
                    ..node.clone()
                } == *o
            });
            if !same {
                self.nodes.insert(req.node.clone(), node);
                self.nodes_index = idx;
                self.touch_node_services(&req.node, idx);
                changed = true;
            }
        }

        // Service.
        if let Some(def) = req.service {
            let id = if def.id.is_empty() {
                def.service.clone()
            } else {
                def.id.clone()
            };
            let old = self
                .services
                .get(&req.node)
                .and_then(|m| m.get(&id))
                .cloned();
            let weights = def.weights.map_or((1, 1), |w| (w.passing, w.warning));
            let inst = ServiceInstance {
                id: id.clone(),
                service: def.service.clone(),
                tags: def.tags.unwrap_or_default(),
                address: def.address,
                tagged_addresses: def.tagged_addresses.unwrap_or_else(|| json!({})),
                meta: def.meta.unwrap_or_default(),
                port: def.port,
                weights,
                enable_tag_override: def.enable_tag_override,
                kind: def.kind,
                create_index: old.as_ref().map_or(idx, |s| s.create_index),
                modify_index: idx,
            };
            let same = old.as_ref().is_some_and(|o| {
                ServiceInstance {
                    modify_index: o.modify_index,
                    ..inst.clone()
                } == *o
            });
            if !same {
                if let Some(o) = &old
                    && o.service != inst.service
                {
                    self.touch_service(&o.service.clone(), idx);
                }
                self.touch_service(&inst.service, idx);
                self.services
                    .entry(req.node.clone())
                    .or_default()
                    .insert(id.clone(), inst);
                self.services_index = idx;
                // Checks of the service carry its name and tags.
                let (name, tags) = {
                    let s = &self.services[&req.node][&id];
                    (s.service.clone(), s.tags.clone())
                };
                if let Some(node_checks) = self.checks.get_mut(&req.node) {
                    for c in node_checks.values_mut().filter(|c| c.service_id == id) {
                        c.service_name = name.clone();
                        c.service_tags = tags.clone();
                    }
                }
                changed = true;
            }
        }

        // Checks.
        let mut went_critical = Vec::new();
        for def in checks {
            let check_id = if def.check_id.is_empty() {
                def.name.clone()
            } else {
                def.check_id.clone()
            };
            if check_id.is_empty() {
                continue;
            }
            let (service_name, service_tags) = if def.service_id.is_empty() {
                (String::new(), Vec::new())
            } else {
                match self
                    .services
                    .get(&req.node)
                    .and_then(|m| m.get(&def.service_id))
                {
                    Some(s) => (s.service.clone(), s.tags.clone()),
                    None => {
                        if changed {
                            self.index = idx;
                        }
                        return Err(StoreError::Internal(
                            "Missing service registration".to_string(),
                        ));
                    }
                }
            };
            let old = self
                .checks
                .get(&req.node)
                .and_then(|m| m.get(&check_id))
                .cloned();
            let definition = def.definition.clone().unwrap_or_else(|| json!({}));
            let lower = |k: &str| {
                definition
                    .get(k)
                    .and_then(Value::as_str)
                    .map(str::to_string)
                    .unwrap_or_default()
            };
            let kind = if !def.kind.is_empty() {
                def.kind.clone()
            } else if definition.get("HTTP").is_some() {
                "http".to_string()
            } else if definition.get("TCP").is_some() {
                "tcp".to_string()
            } else {
                String::new()
            };
            let check = Check {
                node: req.node.clone(),
                check_id: check_id.clone(),
                name: def.name.clone(),
                status: if def.status.is_empty() {
                    "critical".to_string()
                } else {
                    def.status.clone()
                },
                notes: def.notes.clone(),
                output: def.output.clone(),
                service_id: def.service_id.clone(),
                service_name,
                service_tags,
                kind,
                interval: if def.interval.is_empty() {
                    lower("Interval")
                } else {
                    def.interval.clone()
                },
                timeout: if def.timeout.is_empty() {
                    lower("Timeout")
                } else {
                    def.timeout.clone()
                },
                definition,
                create_index: old.as_ref().map_or(idx, |c| c.create_index),
                modify_index: idx,
            };
            let same = old.as_ref().is_some_and(|o| {
                Check {
                    modify_index: o.modify_index,
                    ..check.clone()
                } == *o
            });
            if same {
                continue;
            }
            if check.status == "critical" {
                went_critical.push((
                    check.node.clone(),
                    check.check_id.clone(),
                    check.service_id.clone(),
                ));
            }
            if check.service_id.is_empty() {
                self.touch_node_services(&req.node, idx);
            } else {
                self.touch_service(&check.service_name.clone(), idx);
            }
            self.checks
                .entry(req.node.clone())
                .or_default()
                .insert(check_id, check);
            self.checks_index = idx;
            changed = true;
        }
        if changed {
            self.index = idx;
        }
        for (node, check_id, service_id) in went_critical {
            self.invalidate_sessions_on_check(&node, &check_id, &service_id, now);
        }
        Ok(())
    }

    fn invalidate_sessions_on_check(
        &mut self,
        node: &str,
        check_id: &str,
        service_id: &str,
        now: Instant,
    ) {
        let doomed: Vec<String> = self
            .sessions
            .values()
            .filter(|s| {
                s.node == node
                    && (s.node_checks.iter().chain(&s.checks).any(|c| c == check_id)
                        || s.service_checks.as_ref().is_some_and(|sc| {
                            sc.iter()
                                .any(|c| c.id == check_id && !service_id.is_empty())
                        }))
            })
            .map(|s| s.id.clone())
            .collect();
        for id in doomed {
            self.session_invalidate(&id, now);
        }
    }

    /// `PUT /v1/catalog/deregister`: a service (and its checks), a check, or a whole node.
    pub fn deregister(&mut self, req: DeregisterRequest, now: Instant) -> Result<(), StoreError> {
        if req.node.is_empty() {
            return Err(StoreError::BadRequest("Must provide node".to_string()));
        }
        let idx = self.next();
        let mut changed = false;
        let mut removed_checks: Vec<(String, String)> = Vec::new();
        if !req.service_id.is_empty() {
            let removed = self
                .services
                .get_mut(&req.node)
                .and_then(|m| m.remove(&req.service_id));
            if let Some(svc) = removed {
                self.touch_service(&svc.service, idx);
                self.services_index = idx;
                if let Some(m) = self.checks.get_mut(&req.node) {
                    let ids: Vec<String> = m
                        .values()
                        .filter(|c| c.service_id == req.service_id)
                        .map(|c| c.check_id.clone())
                        .collect();
                    for id in ids {
                        m.remove(&id);
                        removed_checks.push((id, req.service_id.clone()));
                        self.checks_index = idx;
                    }
                }
                changed = true;
            }
        } else if !req.check_id.is_empty() {
            let removed = self
                .checks
                .get_mut(&req.node)
                .and_then(|m| m.remove(&req.check_id));
            if let Some(c) = removed {
                if c.service_id.is_empty() {
                    self.touch_node_services(&req.node, idx);
                } else {
                    self.touch_service(&c.service_name, idx);
                }
                self.checks_index = idx;
                removed_checks.push((c.check_id, c.service_id));
                changed = true;
            }
        } else if self.nodes.contains_key(&req.node) {
            self.touch_node_services(&req.node, idx);
            self.nodes.remove(&req.node);
            if self.services.remove(&req.node).is_some() {
                self.services_index = idx;
            }
            if let Some(m) = self.checks.remove(&req.node) {
                for c in m.into_values() {
                    removed_checks.push((c.check_id, c.service_id));
                }
                self.checks_index = idx;
            }
            self.nodes_index = idx;
            changed = true;
            let doomed: Vec<String> = self
                .sessions
                .values()
                .filter(|s| s.node == req.node)
                .map(|s| s.id.clone())
                .collect();
            for id in doomed {
                self.session_invalidate(&id, now);
            }
        }
        if changed {
            self.index = self.index.max(idx);
        }
        for (check_id, service_id) in removed_checks {
            self.invalidate_sessions_on_check(&req.node, &check_id, &service_id, now);
        }
        Ok(())
    }

    /// `GET /v1/catalog/services`: name → union of tags.
    pub fn catalog_services(&self) -> serde_json::Map<String, Value> {
        let mut by_name: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for svc in self.services.values().flat_map(|m| m.values()) {
            let tags = by_name.entry(svc.service.clone()).or_default();
            for t in &svc.tags {
                if !tags.contains(t) {
                    tags.push(t.clone());
                }
            }
        }
        by_name.into_iter().map(|(k, v)| (k, json!(v))).collect()
    }

    /// Instances of a service as `(node, instance)`, ordered by node then ID.
    pub fn instances(&self, name: &str) -> Vec<(&Node, &ServiceInstance)> {
        let mut out = Vec::new();
        for (node_name, m) in &self.services {
            let Some(node) = self.nodes.get(node_name) else {
                continue;
            };
            for svc in m.values().filter(|s| s.service == name) {
                out.push((node, svc));
            }
        }
        out
    }

    /// Checks that apply to an instance: node checks plus its own service checks.
    pub fn instance_checks(&self, node: &str, service_id: &str) -> Vec<&Check> {
        self.checks
            .get(node)
            .map(|m| {
                m.values()
                    .filter(|c| c.service_id.is_empty() || c.service_id == service_id)
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Every check, ordered by node then ID.
    pub fn all_checks(&self) -> Vec<&Check> {
        self.checks.values().flat_map(|m| m.values()).collect()
    }

    /// Checks of instances of a service.
    pub fn service_checks(&self, name: &str) -> Vec<&Check> {
        self.all_checks()
            .into_iter()
            .filter(|c| c.service_name == name && !c.service_id.is_empty())
            .collect()
    }

    /// Every node.
    pub fn nodes(&self) -> Vec<&Node> {
        self.nodes.values().collect()
    }

    /// One node.
    pub fn node(&self, name: &str) -> Option<&Node> {
        self.nodes.get(name)
    }

    /// Services registered on a node.
    pub fn node_services(&self, name: &str) -> Vec<&ServiceInstance> {
        self.services
            .get(name)
            .map(|m| m.values().collect())
            .unwrap_or_default()
    }
}

/// Weights of a service definition.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct WeightsDef {
    /// Weight while passing.
    #[serde(default = "one")]
    pub passing: i64,
    /// Weight while warning.
    #[serde(default = "one")]
    pub warning: i64,
}

fn one() -> i64 {
    1
}

/// The `Service` block of a register request.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ServiceDef {
    /// Service ID (defaults to the name).
    #[serde(rename = "ID", default)]
    pub id: String,
    /// Service name.
    #[serde(default)]
    pub service: String,
    /// Tags.
    #[serde(default)]
    pub tags: Option<Vec<String>>,
    /// Address.
    #[serde(default)]
    pub address: String,
    /// Tagged addresses.
    #[serde(default)]
    pub tagged_addresses: Option<Value>,
    /// Meta.
    #[serde(default)]
    pub meta: Option<BTreeMap<String, String>>,
    /// Port.
    #[serde(default)]
    pub port: i64,
    /// Weights.
    #[serde(default)]
    pub weights: Option<WeightsDef>,
    /// EnableTagOverride.
    #[serde(default)]
    pub enable_tag_override: bool,
    /// Kind.
    #[serde(default)]
    pub kind: String,
}

/// A check in a register request.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct CheckDef {
    /// Node (must match the request's).
    #[serde(default)]
    pub node: String,
    /// Check ID (defaults to the name).
    #[serde(rename = "CheckID", default)]
    pub check_id: String,
    /// Name.
    #[serde(default)]
    pub name: String,
    /// Status (defaults to `critical`).
    #[serde(default)]
    pub status: String,
    /// Notes.
    #[serde(default)]
    pub notes: String,
    /// Output.
    #[serde(default)]
    pub output: String,
    /// Service ID.
    #[serde(rename = "ServiceID", default)]
    pub service_id: String,
    /// Type.
    #[serde(rename = "Type", default)]
    pub kind: String,
    /// Interval.
    #[serde(default)]
    pub interval: String,
    /// Timeout.
    #[serde(default)]
    pub timeout: String,
    /// Definition.
    #[serde(default)]
    pub definition: Option<Value>,
}

/// `PUT /v1/catalog/register` body.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct RegisterRequest {
    /// Node ID.
    #[serde(rename = "ID", default)]
    pub id: String,
    /// Node name.
    #[serde(default)]
    pub node: String,
    /// Node address.
    #[serde(default)]
    pub address: String,
    /// Datacenter.
    #[serde(default)]
    pub datacenter: String,
    /// Tagged addresses.
    #[serde(default)]
    pub tagged_addresses: Option<BTreeMap<String, String>>,
    /// Node meta.
    #[serde(default)]
    pub node_meta: Option<BTreeMap<String, String>>,
    /// Service.
    #[serde(default)]
    pub service: Option<ServiceDef>,
    /// One check.
    #[serde(default)]
    pub check: Option<CheckDef>,
    /// Several checks.
    #[serde(default)]
    pub checks: Option<Vec<CheckDef>>,
    /// Keep the node as is.
    #[serde(default)]
    pub skip_node_update: bool,
}

/// `PUT /v1/catalog/deregister` body.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct DeregisterRequest {
    /// Node.
    #[serde(default)]
    pub node: String,
    /// Service to remove.
    #[serde(rename = "ServiceID", default)]
    pub service_id: String,
    /// Check to remove.
    #[serde(rename = "CheckID", default)]
    pub check_id: String,
    /// Datacenter.
    #[serde(default)]
    pub datacenter: String,
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn put(s: &mut Store, key: &str, v: &str) -> bool {
        s.kv_put(key, v.as_bytes().to_vec(), 0, &PutMode::Set, Instant::now())
            .unwrap()
    }

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
        assert!(
            s.kv_put("k", b"1".to_vec(), 0, &PutMode::Cas(0), now)
                .unwrap()
        );
        assert!(
            !s.kv_put("k", b"2".to_vec(), 0, &PutMode::Cas(0), now)
                .unwrap()
        );
        let m = s.kv_get("k").unwrap().modify_index;
        assert!(
            !s.kv_put("k", b"2".to_vec(), 0, &PutMode::Cas(m + 7), now)
                .unwrap()
        );
        assert!(
            s.kv_put("k", b"2".to_vec(), 0, &PutMode::Cas(m), now)
                .unwrap()
        );
        assert!(
            !s.kv_put("missing", b"2".to_vec(), 0, &PutMode::Cas(3), now)
                .unwrap()
        );
    }

    #[test]
    fn lock_index_counts_fresh_acquires_and_release_keeps_it() {
        let mut s = Store::seeded();
        let now = Instant::now();
        let a = s.session_create(SessionSpec::default(), now).unwrap();
        let b = s.session_create(SessionSpec::default(), now).unwrap();
        assert!(
            s.kv_put("l", b"x".to_vec(), 0, &PutMode::Acquire(a.clone()), now)
                .unwrap()
        );
        assert!(
            s.kv_put("l", b"y".to_vec(), 0, &PutMode::Acquire(a.clone()), now)
                .unwrap()
        );
        assert_eq!(s.kv_get("l").unwrap().lock_index, 1);
        assert!(
            !s.kv_put("l", b"z".to_vec(), 0, &PutMode::Acquire(b.clone()), now)
                .unwrap()
        );
        assert!(
            !s.kv_put("l", b"z".to_vec(), 0, &PutMode::Release(b.clone()), now)
                .unwrap()
        );
        assert!(
            s.kv_put("l", b"z".to_vec(), 0, &PutMode::Release(a), now)
                .unwrap()
        );
        let e = s.kv_get("l").unwrap();
        assert_eq!((e.lock_index, e.session.clone()), (1, None));
        // release does not start lock-delay: another session may take it at once
        assert!(
            s.kv_put("l", b"w".to_vec(), 0, &PutMode::Acquire(b), now)
                .unwrap()
        );
        assert_eq!(s.kv_get("l").unwrap().lock_index, 2);
    }

    #[test]
    fn invalidated_session_releases_its_locks_and_imposes_lock_delay() {
        let mut s = Store::seeded();
        let now = Instant::now();
        let a = s.session_create(SessionSpec::default(), now).unwrap();
        let b = s.session_create(SessionSpec::default(), now).unwrap();
        assert!(
            s.kv_put("l", b"x".to_vec(), 0, &PutMode::Acquire(a.clone()), now)
                .unwrap()
        );
        assert!(s.session_invalidate(&a, now));
        assert_eq!(s.kv_get("l").unwrap().session, None);
        assert!(
            !s.kv_put("l", b"y".to_vec(), 0, &PutMode::Acquire(b.clone()), now)
                .unwrap()
        );
        let later = now + Duration::from_secs(16);
        assert!(
            s.kv_put("l", b"y".to_vec(), 0, &PutMode::Acquire(b), later)
                .unwrap()
        );
    }

    #[test]
    fn delete_behavior_deletes_held_keys() {
        let mut s = Store::seeded();
        let now = Instant::now();
        let spec = SessionSpec {
            behavior: Some("delete".into()),
            ..SessionSpec::default()
        };
        let a = s.session_create(spec, now).unwrap();
        assert!(
            s.kv_put("l", b"x".to_vec(), 0, &PutMode::Acquire(a.clone()), now)
                .unwrap()
        );
        s.session_invalidate(&a, now);
        assert!(s.kv_get("l").is_none());
    }

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

    #[test]
    fn session_ttl_outside_ten_seconds_to_a_day_is_rejected() {
        let mut s = Store::seeded();
        let now = Instant::now();
        let spec = SessionSpec {
            ttl: Some("5s".into()),
            ..SessionSpec::default()
        };
        let err = s.session_create(spec, now).unwrap_err();
        assert_eq!(
            err.to_string(),
            "Invalid Session TTL '5000000000', must be between [10s=24h0m0s]"
        );
        let spec = SessionSpec {
            ttl: Some("25h".into()),
            ..SessionSpec::default()
        };
        assert!(s.session_create(spec, now).is_err());
        let spec = SessionSpec {
            ttl: Some("10s".into()),
            ..SessionSpec::default()
        };
        assert!(s.session_create(spec, now).is_ok());
    }

    #[test]
    fn ttl_session_expires_only_after_twice_its_ttl_and_renew_resets_the_timer() {
        let mut s = Store::seeded();
        let now = Instant::now();
        let spec = SessionSpec {
            ttl: Some("10s".into()),
            ..SessionSpec::default()
        };
        let id = s.session_create(spec, now).unwrap();
        assert!(
            s.expired_sessions(now + Duration::from_secs(19)).is_empty(),
            "Consul grants up to 2x TTL"
        );
        assert_eq!(
            s.expired_sessions(now + Duration::from_secs(20)),
            vec![id.clone()]
        );
        assert!(
            s.session_renew(&id, now + Duration::from_secs(15))
                .is_some()
        );
        assert!(s.expired_sessions(now + Duration::from_secs(34)).is_empty());
        assert_eq!(s.expired_sessions(now + Duration::from_secs(35)), vec![id]);
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
