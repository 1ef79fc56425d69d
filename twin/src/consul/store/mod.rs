//! The Consul state store: KV entries with tombstones, sessions with lock-delay, and the catalog
//! (nodes, services, checks), each with the table indexes Consul's blocking queries report.
//!
//! Pure and synchronous: the HTTP layer holds it behind a lock and publishes `index` after each
//! write. One write operation (one PUT, one transaction, one session invalidation) is one raft
//! index, as in Consul, and a write that changes nothing does not advance any index.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::time::Instant;

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
/// Smallest session TTL Consul accepts by default (`session_ttl_min`).
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

/// go-uuid's `ParseUUID`, whose error texts Consul wraps in "Bad node ID: …".
pub(super) fn go_parse_uuid(id: &str) -> Result<(), String> {
    if id.len() != 36 {
        return Err("uuid string is wrong length".to_string());
    }
    let b = id.as_bytes();
    if b[8] != b'-' || b[13] != b'-' || b[18] != b'-' || b[23] != b'-' {
        return Err("uuid is improperly formatted".to_string());
    }
    match id
        .chars()
        .enumerate()
        .find(|(i, c)| ![8, 13, 18, 23].contains(i) && !c.is_ascii_hexdigit())
    {
        Some((_, c)) => Err(format!(
            "encoding/hex: invalid byte: U+{:04X} {c:?}",
            c as u32
        )),
        None => Ok(()),
    }
}

pub mod acl;
pub mod agent;
mod catalog;
mod kv;
mod register;
mod session;
mod txn;

pub use catalog::{Check, Node, ServiceInstance};
pub use kv::{KvEntry, PutMode};
pub use register::{CheckDef, DeregisterRequest, RegisterRequest, ServiceDef, WeightsDef};
pub use session::{ServiceCheckRef, Session, SessionSpec};
pub use txn::TxnKvOp;
use txn::Undo;

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
    /// The agent's own services and checks.
    #[serde(default)]
    agent: agent::AgentLocal,
    /// ACL policies and tokens (absent from snapshots written before they existed).
    #[serde(default)]
    acl: acl::AclTables,
    /// Consul's `session_ttl_min` agent option; `None` is its default, [`SESSION_TTL_MIN`].
    #[serde(skip)]
    session_ttl_min: Option<Duration>,
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
        self.rearm_checks(now);
    }

    fn next(&self) -> u64 {
        self.index + 1
    }
}

#[cfg(test)]
pub(super) mod test_support {
    use tokio::time::Instant;

    use super::{PutMode, SessionSpec, Store};

    /// A plain PUT, for tests.
    #[allow(clippy::unwrap_used)]
    pub fn put(s: &mut Store, key: &str, v: &str) -> bool {
        put_as(s, key, v, PutMode::Set, Instant::now())
    }

    /// A PUT with `mode` at `now` (a lock acquire or release, a CAS); whether it took.
    #[allow(clippy::unwrap_used)]
    pub fn put_as(s: &mut Store, key: &str, v: &str, mode: PutMode, now: Instant) -> bool {
        s.kv_put(key, v.as_bytes().to_vec(), 0, &mode, now).unwrap()
    }

    /// A seeded store with two default sessions, for lock tests.
    #[allow(clippy::unwrap_used)]
    pub fn two_sessions(now: Instant) -> (Store, String, String) {
        let mut s = Store::seeded();
        let a = s.session_create(SessionSpec::default(), now).unwrap();
        let b = s.session_create(SessionSpec::default(), now).unwrap();
        (s, a, b)
    }
}
