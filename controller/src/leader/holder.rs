//! The holder record of the leader key and how `status` reads and prints it.

use serde::{Deserialize, Serialize};

use super::{Error, Result};
use crate::consul::{ConsulApi, KvPair};
use crate::transport::QueryOptions;

/// Who holds the leader lock: the JSON value of `<prefix>/leader`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Holder {
    /// Consul node name of the replica.
    pub node: String,
    /// Nomad allocation id (`NOMAD_ALLOC_ID`), or the pod name on Kubernetes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allocation: Option<String>,
    /// Where the replica's HTTP listener answers (`/healthz`, `/metrics`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,
    /// When it acquired the lock (RFC 3339, UTC).
    #[serde(default)]
    pub since: String,
}

/// The current leader as `status` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CurrentLeader {
    /// The holder record; `None` when the value is not one (an older operator, a hand edit).
    pub holder: Option<Holder>,
    /// The session holding the lock.
    pub session: String,
}

/// `node n1 (allocation 5c63…, 10.0.0.1:9090) since 2026-01-01T00:00:00Z`, as `status` prints
/// it; the session alone when the record is unreadable.
impl std::fmt::Display for CurrentLeader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let Some(h) = &self.holder else {
            return write!(f, "session {}", self.session);
        };
        write!(f, "node {}", h.node)?;
        let details: Vec<String> = [
            h.allocation.as_ref().map(|a| format!("allocation {a}")),
            h.address.clone(),
        ]
        .into_iter()
        .flatten()
        .collect();
        if !details.is_empty() {
            write!(f, " ({})", details.join(", "))?;
        }
        if !h.since.is_empty() {
            write!(f, " since {}", h.since)?;
        }
        Ok(())
    }
}

/// Reads who leads now: `None` when the key is absent or unlocked (a stale record of a past
/// holder is not a leader).
pub async fn read_holder(consul: &impl ConsulApi, key: &str) -> Result<Option<CurrentLeader>> {
    let (pair, _) = consul
        .kv_get(key, QueryOptions::NOW)
        .await
        .map_err(|source| Error::Read {
            key: key.to_owned(),
            source,
        })?;
    Ok(pair.and_then(current_leader))
}

pub(super) fn current_leader(pair: KvPair) -> Option<CurrentLeader> {
    let session = pair.session.filter(|s| !s.is_empty())?;
    Some(CurrentLeader {
        holder: serde_json::from_slice(&pair.value).ok(),
        session,
    })
}
