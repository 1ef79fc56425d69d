//! Sessions: create, renew, TTL timers, invalidation with lock-delay (DOC session.mdx; SRC
//! agent/consul/session_endpoint.go, session_ttl.go, state/session.go).

use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::time::Instant;

use super::{
    KvEntry, MAX_LOCK_DELAY, NODE_NAME, SESSION_TTL_MAX, SESSION_TTL_MIN, SESSION_TTL_MULTIPLIER,
    Store, StoreError,
};
use crate::blocking::format_go_duration;

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

impl Store {
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
        // SRC agent/consul/session_endpoint.go `Apply`: the TTL is parsed by the server (the
        // HTTP layer passes the string through), and both refusals are plain RPC errors (500).
        let ttl = spec.ttl.unwrap_or_default();
        if !ttl.is_empty() {
            let parsed = crate::blocking::parse_go_duration(&ttl).ok_or_else(|| {
                StoreError::Internal(format!(
                    "Session TTL '{ttl}' invalid: time: invalid duration {ttl:?}"
                ))
            })?;
            let min = self.session_ttl_min();
            if parsed != Duration::ZERO && !(min..=SESSION_TTL_MAX).contains(&parsed) {
                return Err(StoreError::Internal(format!(
                    "Invalid Session TTL '{}', must be between [{}={}]",
                    parsed.as_nanos(),
                    format_go_duration(min),
                    format_go_duration(SESSION_TTL_MAX)
                )));
            }
        }
        // Any lock-delay is accepted here; invalidation caps it at `MaxLockDelay`
        // (SRC state/session.go `deleteSessionTxn`).
        let lock_delay = spec.lock_delay.unwrap_or(Duration::from_secs(15));
        if !self.nodes.contains_key(&node) {
            return Err(StoreError::Internal(
                "Missing node registration".to_string(),
            ));
        }
        let node_checks = spec
            .node_checks
            .unwrap_or_else(|| vec!["serfHealth".to_string()]);
        // Every bound check must exist on the session's node and not be critical, whichever
        // field named it: `structs.Session.CheckIDs` merges Checks, NodeChecks and
        // ServiceChecks, and `validateSessionChecksTxn` (SRC state/session.go) refuses a
        // missing one with "Missing check '<id>' registration" and a critical one with "Check
        // '<id>' is in critical state" (RPC errors: HTTP 500). A warning check binds.
        let service_checks = spec.service_checks.iter().flatten().map(|c| &c.id);
        for check in spec.checks.iter().chain(&node_checks).chain(service_checks) {
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

    /// The smallest TTL a session may have: Consul's `session_ttl_min` (default 10 s).
    pub fn session_ttl_min(&self) -> Duration {
        self.session_ttl_min.unwrap_or(SESSION_TTL_MIN)
    }

    /// Sets `session_ttl_min`, the agent option Consul reads from its configuration.
    pub fn set_session_ttl_min(&mut self, min: Duration) {
        self.session_ttl_min = Some(min);
    }

    /// Whether an acquire of `key` is still refused by a lock-delay at `now`.
    pub fn lock_delayed(&self, key: &str, now: Instant) -> bool {
        self.lock_delays.get(key).is_some_and(|until| *until > now)
    }

    fn session_ttl(&self, id: &str) -> Option<Duration> {
        let ttl = &self.sessions.get(id)?.ttl;
        crate::blocking::parse_go_duration(ttl).filter(|d| !d.is_zero())
    }

    pub(super) fn arm_session_timer(&mut self, id: &str, now: Instant) {
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
        // Lock-delay starts on every invalidation (destroy, TTL, check, node) and never on a
        // `?release` (SRC state/session.go `deleteSessionTxn`, the only place that sets it).
        let delay = Duration::from_nanos(session.lock_delay).min(MAX_LOCK_DELAY);
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
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::super::test_support::{put_as, two_sessions};
    use super::*;
    use crate::consul::store::PutMode;

    #[test]
    fn invalidated_session_releases_its_locks_and_imposes_lock_delay() {
        let now = Instant::now();
        let (mut s, a, b) = two_sessions(now);
        assert!(put_as(&mut s, "l", "x", PutMode::Acquire(a.clone()), now));
        assert!(s.session_invalidate(&a, now));
        assert_eq!(s.kv_get("l").unwrap().session, None);
        assert!(!put_as(&mut s, "l", "y", PutMode::Acquire(b.clone()), now));
        let later = now + Duration::from_secs(16);
        assert!(put_as(&mut s, "l", "y", PutMode::Acquire(b), later));
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
        assert!(put_as(&mut s, "l", "x", PutMode::Acquire(a.clone()), now));
        s.session_invalidate(&a, now);
        assert!(s.kv_get("l").is_none());
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
}
