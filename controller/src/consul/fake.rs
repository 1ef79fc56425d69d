//! An in-memory [`ConsulApi`] for unit tests of the loop, built on the twin's Consul store
//! ([`hashistack_twin::consul::store::Store`]): KV with indexes, CAS and tombstones,
//! all-or-nothing transactions with `check-session`, sessions with TTL, lock-delay and
//! release/delete behaviour, the catalog and health checks, with the twin's error texts. This
//! file only translates between the client's types and the store's, and adds what tests need on
//! top: call recording, error injection and blocking reads on tokio time (so `start_paused`
//! tests do not spin).
//!
//! As in Consul (and the twin), a TTL session is reaped only after twice its TTL, an identical
//! write does not advance the index, and sessions belong to a registered node (the store's own,
//! `hashistack-twin`, by default).

use std::collections::BTreeMap;
use std::time::Duration;

use hashistack_twin::consul::store::{
    self, CheckDef, DeregisterRequest, MAX_VALUE_SIZE, PutMode, RegisterRequest, SessionSpec,
    Store, StoreError, TxnKvOp,
};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::time::Instant;

use super::{
    AgentService, CatalogRegistration, CatalogService, ConsulApi, Error, HealthCheck, HealthNode,
    KvPair, Result, ServiceEntry, SessionBehavior, SessionEntry, SessionRequest, TxnOp, TxnOpError,
    TxnResults,
};
pub use crate::transport::fake::Call;
use crate::transport::fake::{Indexed, Model, Recorder};
use crate::transport::{QueryMeta, QueryOptions, go_duration, parse_go_duration};

/// The server's default wait when a blocking read names none.
const DEFAULT_WAIT: Duration = Duration::from_secs(300);
/// Consul caps waits at 10 minutes.
const MAX_WAIT: Duration = Duration::from_secs(600);

#[derive(Debug)]
struct State {
    store: Store,
    faults: Recorder<Error>,
    renew_ttl: Option<Duration>,
    leader: String,
}

impl Indexed for State {
    fn index(&self) -> u64 {
        self.store.index
    }
}

impl State {
    /// Reaps sessions whose TTL ran out, as the twin's reaper does; returns the next deadline.
    fn reap(&mut self, now: Instant) -> Option<Instant> {
        for id in self.store.expired_sessions(now) {
            self.store.session_invalidate(&id, now);
        }
        self.store.next_session_deadline()
    }
}

/// In-memory Consul. Clones share state.
#[derive(Clone)]
pub struct FakeConsul {
    model: std::sync::Arc<Model<State>>,
}

impl std::fmt::Debug for FakeConsul {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FakeConsul").finish_non_exhaustive()
    }
}

impl Default for FakeConsul {
    fn default() -> Self {
        FakeConsul::new()
    }
}

/// Converts between the client's and the store's types through Consul's JSON, the contract
/// both are held to. A failure is a mismatch between the two type sets, reported as a 500.
fn wire<T: Serialize, U: DeserializeOwned>(what: &str, value: &T) -> Result<U> {
    serde_json::to_value(value)
        .and_then(serde_json::from_value)
        .map_err(|e| Error::injected(what, 500, &format!("fake: {what} does not convert: {e}")))
}

/// The status Consul answers a store failure with.
fn store_error(op: &str, e: &StoreError) -> Error {
    let status = match e {
        StoreError::BadRequest(_) => 400,
        StoreError::InvalidSession(_) | StoreError::Internal(_) => 500,
    };
    Error::injected(op, status, &e.to_string())
}

fn health_node(node: &store::Node) -> HealthNode {
    HealthNode {
        id: node.id.clone(),
        node: node.node.clone(),
        address: node.address.clone(),
        datacenter: store::DATACENTER.to_owned(),
        meta: node.meta.clone(),
    }
}

fn agent_service(s: &store::ServiceInstance) -> AgentService {
    AgentService {
        id: s.id.clone(),
        service: s.service.clone(),
        tags: s.tags.clone(),
        address: s.address.clone(),
        port: u16::try_from(s.port).unwrap_or_default(),
        meta: s.meta.clone(),
        namespace: None,
    }
}

fn health_check(c: &store::Check) -> HealthCheck {
    HealthCheck {
        node: c.node.clone(),
        check_id: c.check_id.clone(),
        name: c.name.clone(),
        status: c.status.clone(),
        notes: c.notes.clone(),
        output: c.output.clone(),
        service_id: c.service_id.clone(),
        service_name: c.service_name.clone(),
        service_tags: c.service_tags.clone(),
    }
}

impl FakeConsul {
    /// An empty Consul with a leader: the KV store is empty; the catalog holds the store's own
    /// node (`hashistack-twin`, with `serfHealth`) and the `consul` service, as a new cluster.
    pub fn new() -> FakeConsul {
        FakeConsul {
            model: std::sync::Arc::new(Model::new(State {
                store: Store::seeded(),
                faults: Recorder::default(),
                renew_ttl: None,
                leader: "127.0.0.1:8300".to_owned(),
            })),
        }
    }

    /// Records the call and returns an injected error if one is queued for `op`.
    fn enter(&self, op: &'static str, target: &str, index: Option<u64>) -> Result<()> {
        self.model.lock().faults.enter(op, target, index, |status| {
            Error::injected(op, status, "Permission denied")
        })
    }

    /// Applies a lost answer queued for `op` on `target` to `result`.
    fn answer<T>(&self, op: &str, target: &str, result: Result<T>) -> Result<T> {
        self.model.lock().faults.lost_answer(op, target, result)
    }

    /// Runs a store write after reaping expired sessions.
    fn write<T>(&self, f: impl FnOnce(&mut Store, Instant) -> T) -> T {
        self.model.write(|st, now| {
            st.reap(now);
            f(&mut st.store, now)
        })
    }

    /// A blocking read of the store; see [`Model::blocking`].
    async fn blocking<T>(
        &self,
        opts: QueryOptions,
        mut read: impl FnMut(&Store) -> (T, u64),
    ) -> (T, QueryMeta) {
        self.model
            .blocking(opts, DEFAULT_WAIT, MAX_WAIT, |st, now| {
                let wake = st.reap(now);
                let (value, index) = read(&st.store);
                (value, index, wake)
            })
            .await
    }

    /// Every call so far, oldest first.
    pub fn calls(&self) -> Vec<Call> {
        self.model.lock().faults.calls()
    }

    /// The calls of one method.
    pub fn calls_of(&self, op: &str) -> Vec<Call> {
        self.model.lock().faults.calls_of(op)
    }

    /// Forgets recorded calls.
    pub fn clear_calls(&self) {
        self.model.lock().faults.clear_calls();
    }

    /// Makes the next call of method `op` (e.g. `"kv_put"`) fail with `error`; queued errors are
    /// used one per call, in order.
    pub fn fail_next(&self, op: &'static str, error: Error) {
        self.model.lock().faults.fail_next(op, error);
    }

    /// Makes every call of `op` whose target contains `target` fail with HTTP `status` (403: an
    /// ACL policy without write on that key), until the test ends.
    pub fn deny(&self, op: &'static str, target: &str, status: u16) {
        self.model.lock().faults.deny(op, target, status);
    }

    /// Makes the next call of `op` whose target contains `target` take effect and then answer
    /// `error`, as when the answer of a write that landed is lost (a timeout, a reset).
    pub fn lose_answer(&self, op: &'static str, target: &str, error: Error) {
        self.model.lock().faults.lose_answer(op, target, error);
    }

    /// Writes a key directly (test setup); returns its ModifyIndex.
    pub fn set(&self, key: &str, value: impl AsRef<[u8]>) -> u64 {
        self.write(|s, now| {
            // A plain PUT of a well-formed key cannot fail in the store.
            let _ = s.kv_put(key, value.as_ref().to_vec(), 0, &PutMode::Set, now);
            s.kv_key_index(key)
        })
    }

    /// Deletes a key directly (test setup).
    pub fn remove(&self, key: &str) {
        self.write(|s, _| s.kv_delete(key, false, None));
    }

    /// The current entry of a key (test assertions).
    pub fn entry(&self, key: &str) -> Option<KvPair> {
        let entry = self.model.lock().store.kv_get(key).cloned()?;
        wire("KV entry", &entry).ok()
    }

    /// The current value of a key (test assertions).
    pub fn value(&self, key: &str) -> Option<Vec<u8>> {
        self.model.lock().store.kv_get(key).map(|e| e.value.clone())
    }

    /// Invalidates a session now, as a TTL expiry or failed health check would.
    pub fn expire_session(&self, id: &str) {
        self.write(|s, now| s.session_invalidate(id, now));
    }

    /// Makes renewals report this TTL (a server asking clients to renew less often). The
    /// store's reaper keeps the TTL the session was created with.
    pub fn set_renew_ttl(&self, ttl: Duration) {
        self.model.lock().renew_ttl = Some(ttl);
    }

    /// Sets the status of every check of a service instance (and registers one if none).
    pub fn set_check_status(&self, service_id: &str, status: &str) {
        self.write(|s, now| {
            let nodes: Vec<String> = s
                .nodes()
                .iter()
                .filter(|n| s.node_services(&n.node).iter().any(|i| i.id == service_id))
                .map(|n| n.node.clone())
                .collect();
            for node in nodes {
                let mut checks: Vec<CheckDef> = s
                    .instance_checks(&node, service_id)
                    .into_iter()
                    .filter(|c| c.service_id == service_id)
                    .map(|c| CheckDef {
                        check_id: c.check_id.clone(),
                        name: c.name.clone(),
                        notes: c.notes.clone(),
                        output: c.output.clone(),
                        service_id: c.service_id.clone(),
                        ..CheckDef::default()
                    })
                    .collect();
                if checks.is_empty() {
                    checks.push(CheckDef {
                        check_id: format!("service:{service_id}"),
                        name: format!("Service '{service_id}' check"),
                        service_id: service_id.to_owned(),
                        ..CheckDef::default()
                    });
                }
                for check in &mut checks {
                    status.clone_into(&mut check.status);
                }
                let request = RegisterRequest {
                    node,
                    skip_node_update: true,
                    checks: Some(checks),
                    ..RegisterRequest::default()
                };
                // The node and instance exist (found above), so the store accepts it.
                let _ = s.register(request, now);
            }
        });
    }

    /// Registers a service with its checks through the agent, as Nomad does for a job's
    /// `provider = "consul"` service: `definition` is the body of `PUT
    /// /v1/agent/service/register`. Its checks are listed by `agent_checks`; the fake never runs
    /// them, so set their status with [`FakeConsul::set_check_status`].
    pub fn register_agent_service(
        &self,
        definition: serde_json::Value,
    ) -> std::result::Result<(), String> {
        let def: store::agent::AgentServiceDef = serde_json::from_value(definition)
            .map_err(|e| format!("not an agent service definition: {e}"))?;
        self.write(|s, now| s.agent_service_register(def, now))
            .map_err(|e| e.to_string())
    }

    /// Deregisters an agent service and its checks (Nomad stopping the allocation).
    pub fn deregister_agent_service(&self, id: &str) -> std::result::Result<(), String> {
        self.write(|s, now| s.agent_service_deregister(id, now))
            .map_err(|e| e.to_string())
    }

    /// Sets the leader address `status_leader` answers (`""`: no leader).
    pub fn set_leader(&self, leader: &str) {
        leader.clone_into(&mut self.model.lock().leader);
    }

    fn put(&self, op: &'static str, key: &str, value: &[u8], mode: &PutMode) -> Result<bool> {
        if value.len() > MAX_VALUE_SIZE {
            return Err(Error::injected(
                op,
                413,
                &format!(
                    "Request body({} bytes) too large, max size: {MAX_VALUE_SIZE} bytes",
                    value.len()
                ),
            ));
        }
        self.write(|s, now| s.kv_put(key, value.to_vec(), 0, mode, now))
            .map_err(|e| store_error(op, &e))
    }
}

impl ConsulApi for FakeConsul {
    async fn kv_get(&self, key: &str, opts: QueryOptions) -> Result<(Option<KvPair>, QueryMeta)> {
        self.enter("kv_get", key, Some(opts.index))?;
        let (entry, meta) = self
            .blocking(opts, |s| (s.kv_get(key).cloned(), s.kv_key_index(key)))
            .await;
        let pair = entry.map(|e| wire("KV entry", &e)).transpose()?;
        Ok((pair, meta))
    }

    async fn kv_list(&self, prefix: &str, opts: QueryOptions) -> Result<(Vec<KvPair>, QueryMeta)> {
        self.enter("kv_list", prefix, Some(opts.index))?;
        let (entries, meta) = self
            .blocking(opts, |s| (s.kv_list(prefix), s.kv_prefix_index(prefix)))
            .await;
        Ok((wire("KV entries", &entries)?, meta))
    }

    async fn kv_keys(
        &self,
        prefix: &str,
        separator: Option<&str>,
        opts: QueryOptions,
    ) -> Result<(Vec<String>, QueryMeta)> {
        self.enter("kv_keys", prefix, Some(opts.index))?;
        Ok(self
            .blocking(opts, |s| {
                (s.kv_keys(prefix, separator), s.kv_prefix_index(prefix))
            })
            .await)
    }

    async fn kv_put(&self, key: &str, value: &[u8], cas: Option<u64>) -> Result<bool> {
        self.enter("kv_put", key, cas)?;
        let mode = cas.map_or(PutMode::Set, PutMode::Cas);
        let result = self.put("write KV key", key, value, &mode);
        self.answer("kv_put", key, result)
    }

    async fn kv_delete(&self, key: &str, cas: Option<u64>) -> Result<bool> {
        self.enter("kv_delete", key, cas)?;
        let result = Ok(self.write(|s, _| s.kv_delete(key, false, cas)));
        self.answer("kv_delete", key, result)
    }

    async fn kv_acquire(&self, key: &str, value: &[u8], session: &str) -> Result<bool> {
        self.enter("kv_acquire", key, None)?;
        self.put(
            "acquire lock",
            key,
            value,
            &PutMode::Acquire(session.to_owned()),
        )
    }

    async fn kv_release(&self, key: &str, value: &[u8], session: &str) -> Result<bool> {
        self.enter("kv_release", key, None)?;
        self.put(
            "release lock",
            key,
            value,
            &PutMode::Release(session.to_owned()),
        )
    }

    async fn txn(&self, ops: Vec<TxnOp>) -> Result<TxnResults> {
        let summary = ops
            .iter()
            .map(|o| format!("{} {}", o.verb(), o.key()))
            .collect::<Vec<_>>()
            .join(", ");
        self.enter("txn", &summary, None)?;
        let store_ops = ops
            .iter()
            .map(|op| {
                let body: serde_json::Value = wire("transaction operation", op)?;
                wire::<_, TxnKvOp>("transaction operation", &body["KV"])
            })
            .collect::<Result<Vec<_>>>()?;
        let result = match self.write(|s, now| s.txn(&store_ops, now)) {
            Ok(entries) => Ok(TxnResults {
                results: wire("transaction results", &entries)?,
            }),
            Err(errors) => Err(Error::TxnRolledBack {
                errors: errors
                    .into_iter()
                    .map(|(op_index, what)| TxnOpError { op_index, what })
                    .collect(),
            }),
        };
        self.answer("txn", &summary, result)
    }

    async fn session_create_bound(
        &self,
        request: &SessionRequest,
        service_checks: &[String],
    ) -> Result<String> {
        self.enter("session_create", &request.name, None)?;
        let spec = SessionSpec {
            name: request.name.clone(),
            node: request.node.clone(),
            lock_delay: request.lock_delay,
            behavior: Some(
                match request.behavior {
                    SessionBehavior::Release => "release",
                    SessionBehavior::Delete => "delete",
                }
                .to_owned(),
            ),
            ttl: request.ttl.map(go_duration),
            node_checks: request.checks.clone(),
            checks: Vec::new(),
            service_checks: (!service_checks.is_empty()).then(|| {
                service_checks
                    .iter()
                    .map(|id| store::ServiceCheckRef {
                        id: id.clone(),
                        namespace: String::new(),
                    })
                    .collect()
            }),
        };
        self.write(|s, now| s.session_create(spec, now))
            .map_err(|e| store_error("create session", &e))
    }

    async fn session_renew(&self, id: &str) -> Result<Option<Duration>> {
        self.enter("session_renew", id, None)?;
        let renew_ttl = self.model.lock().renew_ttl;
        let session = self
            .write(|s, now| s.session_renew(id, now))
            .ok_or_else(|| Error::SessionNotFound { id: id.to_owned() })?;
        Ok(renew_ttl.or_else(|| parse_go_duration(&session.ttl).filter(|d| !d.is_zero())))
    }

    async fn session_destroy(&self, id: &str) -> Result<()> {
        self.enter("session_destroy", id, None)?;
        self.write(|s, now| s.session_invalidate(id, now));
        Ok(())
    }

    async fn session_info(
        &self,
        id: &str,
        opts: QueryOptions,
    ) -> Result<(Option<SessionEntry>, QueryMeta)> {
        self.enter("session_info", id, Some(opts.index))?;
        let (session, meta) = self
            .blocking(opts, |s| (s.session(id).cloned(), s.sessions_index()))
            .await;
        Ok((session.map(|s| wire("session", &s)).transpose()?, meta))
    }

    async fn catalog_services(
        &self,
        opts: QueryOptions,
    ) -> Result<(BTreeMap<String, Vec<String>>, QueryMeta)> {
        self.enter("catalog_services", "", Some(opts.index))?;
        let (services, meta) = self
            .blocking(opts, |s| (s.catalog_services(), s.services_index()))
            .await;
        Ok((wire("catalog services", &services)?, meta))
    }

    async fn catalog_service(
        &self,
        name: &str,
        opts: QueryOptions,
    ) -> Result<(Vec<CatalogService>, QueryMeta)> {
        self.enter("catalog_service", name, Some(opts.index))?;
        Ok(self
            .blocking(opts, |s| {
                let rows = s
                    .instances(name)
                    .into_iter()
                    .map(|(node, svc)| CatalogService {
                        node: node.node.clone(),
                        address: node.address.clone(),
                        node_meta: node.meta.clone(),
                        service_id: svc.id.clone(),
                        service_name: svc.service.clone(),
                        service_address: svc.address.clone(),
                        service_port: u16::try_from(svc.port).unwrap_or_default(),
                        service_tags: svc.tags.clone(),
                        service_meta: svc.meta.clone(),
                        create_index: svc.create_index,
                        modify_index: svc.modify_index,
                        ..CatalogService::default()
                    })
                    .collect();
                (rows, s.service_index(name))
            })
            .await)
    }

    async fn catalog_register(&self, registration: &CatalogRegistration) -> Result<()> {
        self.enter("catalog_register", &registration.node, None)?;
        let request: RegisterRequest = wire("catalog registration", registration)?;
        self.write(|s, now| s.register(request, now))
            .map_err(|e| store_error("register in the catalog", &e))
    }

    async fn catalog_deregister(&self, node: &str, service_id: Option<&str>) -> Result<()> {
        self.enter("catalog_deregister", service_id.unwrap_or(node), None)?;
        let request = DeregisterRequest {
            node: node.to_owned(),
            service_id: service_id.unwrap_or_default().to_owned(),
            ..DeregisterRequest::default()
        };
        self.write(|s, now| s.deregister(request, now))
            .map_err(|e| store_error("deregister from the catalog", &e))
    }

    async fn health_service(
        &self,
        name: &str,
        passing_only: bool,
        opts: QueryOptions,
    ) -> Result<(Vec<ServiceEntry>, QueryMeta)> {
        self.enter("health_service", name, Some(opts.index))?;
        let (mut entries, meta) = self
            .blocking(opts, |s| {
                let entries: Vec<ServiceEntry> = s
                    .instances(name)
                    .into_iter()
                    .map(|(node, svc)| ServiceEntry {
                        node: health_node(node),
                        service: agent_service(svc),
                        checks: s
                            .instance_checks(&node.node, &svc.id)
                            .into_iter()
                            .map(health_check)
                            .collect(),
                    })
                    .collect();
                (entries, s.service_index(name))
            })
            .await;
        if passing_only {
            entries.retain(ServiceEntry::is_passing);
        }
        Ok((entries, meta))
    }

    async fn status_leader(&self) -> Result<String> {
        self.enter("status_leader", "", None)?;
        Ok(self.model.lock().leader.clone())
    }

    async fn agent_checks(&self) -> Result<BTreeMap<String, HealthCheck>> {
        self.enter("agent_checks", "", None)?;
        let model = self.model.lock();
        Ok(model
            .store
            .agent_checks()
            .into_iter()
            .map(|c| (c.check_id.clone(), health_check(c)))
            .collect())
    }
}
