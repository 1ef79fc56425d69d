//! An in-memory [`ConsulApi`] for unit tests of the loop: KV with indexes, CAS and tombstones,
//! all-or-nothing transactions (with `check-session`), sessions with TTL, lock-delay and
//! release/delete behaviour, a small catalog with health checks, blocking reads that wait for a
//! change (tokio time, so `start_paused` tests do not spin), call recording and error injection.
//!
//! Simplifications, all on the safe side for the loop: a TTL session expires exactly at its TTL
//! (Consul may wait up to 2×TTL), every write bumps one global index.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;

use super::{
    AgentService, CatalogRegistration, CatalogService, ConsulApi, Error, HealthCheck, HealthNode,
    KvPair, Result, ServiceEntry, SessionBehavior, SessionEntry, SessionRequest, TxnOp, TxnOpError,
    TxnResults,
};
use crate::transport::{QueryMeta, QueryOptions, go_duration};

/// One recorded call: the trait method and the key, session, service or summary it targeted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Call {
    /// Trait method name (`kv_put`, `txn`, …).
    pub op: &'static str,
    /// What it targeted.
    pub target: String,
    /// The request's index (`QueryOptions::index`, the CAS index), when it had one.
    pub index: Option<u64>,
}

#[derive(Debug)]
struct Session {
    entry: SessionEntry,
    ttl: Option<Duration>,
    expires_at: Option<Instant>,
}

#[derive(Debug, Clone)]
struct Registration {
    node: HealthNode,
    service: Option<AgentService>,
    checks: Vec<HealthCheck>,
    create_index: u64,
    modify_index: u64,
}

#[derive(Debug, Default)]
struct State {
    index: u64,
    kv: BTreeMap<String, KvPair>,
    tombstones: BTreeMap<String, u64>,
    kv_index: u64,
    sessions: BTreeMap<String, Session>,
    session_index: u64,
    lock_delays: HashMap<String, Instant>,
    /// Keyed by (node, service id or "" for the node itself).
    catalog: BTreeMap<(String, String), Registration>,
    catalog_index: u64,
    calls: Vec<Call>,
    failures: HashMap<&'static str, VecDeque<Error>>,
    lost_answers: Vec<(&'static str, String, Error)>,
    denied: Vec<(&'static str, String, u16)>,
    renew_ttl: Option<Duration>,
    leader: String,
}

impl State {
    fn bump(&mut self) -> u64 {
        self.index += 1;
        self.index
    }

    fn kv_write(
        &mut self,
        key: &str,
        value: &[u8],
        session: Option<Option<String>>,
        lock_bump: bool,
        index: u64,
    ) {
        let entry = self.kv.entry(key.to_owned()).or_insert_with(|| KvPair {
            key: key.to_owned(),
            create_index: index,
            ..KvPair::default()
        });
        entry.value = value.to_vec();
        entry.modify_index = index;
        if lock_bump {
            entry.lock_index += 1;
        }
        if let Some(s) = session {
            entry.session = s;
        }
        self.tombstones.remove(key);
        self.kv_index = index;
    }

    fn kv_remove(&mut self, key: &str, index: u64) -> bool {
        let existed = self.kv.remove(key).is_some();
        if existed {
            self.tombstones.insert(key.to_owned(), index);
            self.kv_index = index;
        }
        existed
    }

    fn prefix_index(&self, prefix: &str) -> u64 {
        let live = self
            .kv
            .range(prefix.to_owned()..)
            .take_while(|(k, _)| k.starts_with(prefix))
            .map(|(_, p)| p.modify_index);
        let dead = self
            .tombstones
            .range(prefix.to_owned()..)
            .take_while(|(k, _)| k.starts_with(prefix))
            .map(|(_, i)| *i);
        match live.chain(dead).max() {
            Some(i) => i,
            None => self.kv_index,
        }
    }

    fn session_valid(&self, id: &str) -> bool {
        self.sessions.contains_key(id)
    }

    /// Invalidates a session: releases or deletes its keys and starts lock-delay on them.
    fn invalidate(&mut self, id: &str, now: Instant) {
        let Some(session) = self.sessions.remove(id) else {
            return;
        };
        let index = self.bump();
        self.session_index = index;
        let held: Vec<String> = self
            .kv
            .iter()
            .filter(|(_, p)| p.session.as_deref() == Some(id))
            .map(|(k, _)| k.clone())
            .collect();
        let delay = Duration::from_nanos(session.entry.lock_delay);
        for key in held {
            match session.entry.behavior {
                SessionBehavior::Release => {
                    if let Some(p) = self.kv.get_mut(&key) {
                        p.session = None;
                        p.modify_index = index;
                        self.kv_index = index;
                    }
                }
                SessionBehavior::Delete => {
                    self.kv_remove(&key, index);
                }
            }
            if !delay.is_zero() {
                self.lock_delays.insert(key, now + delay);
            }
        }
    }

    fn expire_sessions(&mut self, now: Instant) -> bool {
        let expired: Vec<String> = self
            .sessions
            .iter()
            .filter(|(_, s)| s.expires_at.is_some_and(|at| at <= now))
            .map(|(id, _)| id.clone())
            .collect();
        for id in &expired {
            self.invalidate(id, now);
        }
        !expired.is_empty()
    }

    fn next_expiry(&self) -> Option<Instant> {
        self.sessions.values().filter_map(|s| s.expires_at).min()
    }

    fn acquire(
        &mut self,
        key: &str,
        value: &[u8],
        session: &str,
        now: Instant,
    ) -> std::result::Result<bool, String> {
        if !self.session_valid(session) {
            return Err(format!("invalid session \"{session}\""));
        }
        if self.lock_delays.get(key).is_some_and(|until| *until > now) {
            return Ok(false);
        }
        let holder = self.kv.get(key).and_then(|p| p.session.clone());
        match holder {
            Some(h) if h != session => Ok(false),
            Some(_) => {
                let index = self.bump();
                self.kv_write(key, value, None, false, index);
                Ok(true)
            }
            None => {
                let index = self.bump();
                self.kv_write(key, value, Some(Some(session.to_owned())), true, index);
                Ok(true)
            }
        }
    }

    fn release(&mut self, key: &str, value: &[u8], session: &str) -> bool {
        if self.kv.get(key).and_then(|p| p.session.as_deref()) != Some(session) {
            return false;
        }
        let index = self.bump();
        self.kv_write(key, value, Some(None), false, index);
        true
    }

    fn health_entries(&self, name: &str) -> (Vec<ServiceEntry>, u64) {
        let mut out = Vec::new();
        for ((node, _), reg) in &self.catalog {
            let Some(service) = reg.service.as_ref().filter(|s| s.service == name) else {
                continue;
            };
            let node_checks = self
                .catalog
                .get(&(node.clone(), String::new()))
                .map(|r| r.checks.clone())
                .unwrap_or_default();
            let mut checks = reg.checks.clone();
            checks.extend(node_checks);
            out.push(ServiceEntry {
                node: reg.node.clone(),
                service: service.clone(),
                checks,
            });
        }
        (out, self.catalog_index)
    }
}

struct Shared {
    state: Mutex<State>,
    changed: watch::Sender<u64>,
}

/// In-memory Consul. Clones share state.
#[derive(Clone)]
pub struct FakeConsul {
    shared: Arc<Shared>,
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

/// The server's default wait when a blocking read names none.
const DEFAULT_WAIT: Duration = Duration::from_secs(300);

impl FakeConsul {
    /// An empty Consul with a leader.
    pub fn new() -> FakeConsul {
        let (changed, _) = watch::channel(0);
        let state = State {
            leader: "127.0.0.1:8300".to_owned(),
            ..State::default()
        };
        FakeConsul {
            shared: Arc::new(Shared {
                state: Mutex::new(state),
                changed,
            }),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock is a test failure already; keep going with the state.
        self.shared.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn notify(&self, index: u64) {
        self.shared.changed.send_replace(index);
    }

    /// Records the call and returns an injected error if one is queued for `op`.
    fn enter(&self, op: &'static str, target: &str, index: Option<u64>) -> Result<()> {
        let mut st = self.lock();
        st.calls.push(Call {
            op,
            target: target.to_owned(),
            index,
        });
        if let Some((_, _, status)) = st
            .denied
            .iter()
            .find(|(o, t, _)| *o == op && target.contains(t.as_str()))
        {
            return Err(Error::injected(op, *status, "Permission denied"));
        }
        match st.failures.get_mut(op).and_then(VecDeque::pop_front) {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// Every call so far, oldest first.
    pub fn calls(&self) -> Vec<Call> {
        self.lock().calls.clone()
    }

    /// The calls of one method.
    pub fn calls_of(&self, op: &str) -> Vec<Call> {
        self.lock()
            .calls
            .iter()
            .filter(|c| c.op == op)
            .cloned()
            .collect()
    }

    /// Forgets recorded calls.
    pub fn clear_calls(&self) {
        self.lock().calls.clear();
    }

    /// Makes the next call of method `op` (e.g. `"kv_put"`) fail with `error`; queued errors are
    /// used one per call, in order.
    pub fn fail_next(&self, op: &'static str, error: Error) {
        self.lock().failures.entry(op).or_default().push_back(error);
    }

    /// Makes every call of `op` whose target contains `target` fail with HTTP `status` (403: an
    /// ACL policy without write on that key), until the test ends.
    pub fn deny(&self, op: &'static str, target: &str, status: u16) {
        self.lock().denied.push((op, target.to_owned(), status));
    }

    /// Makes the next call of `op` whose target contains `target` take effect and then answer
    /// `error`, as when the answer of a write that landed is lost (a timeout, a reset).
    pub fn lose_answer(&self, op: &'static str, target: &str, error: Error) {
        self.lock()
            .lost_answers
            .push((op, target.to_owned(), error));
    }

    fn lost_answer(&self, op: &str, target: &str) -> Option<Error> {
        let mut st = self.lock();
        let pos = st
            .lost_answers
            .iter()
            .position(|(o, t, _)| *o == op && target.contains(t.as_str()))?;
        Some(st.lost_answers.remove(pos).2)
    }

    /// Writes a key directly (test setup); returns its new ModifyIndex.
    pub fn set(&self, key: &str, value: impl AsRef<[u8]>) -> u64 {
        let index = {
            let mut st = self.lock();
            let index = st.bump();
            st.kv_write(key, value.as_ref(), None, false, index);
            index
        };
        self.notify(index);
        index
    }

    /// Deletes a key directly (test setup).
    pub fn remove(&self, key: &str) {
        let index = {
            let mut st = self.lock();
            let index = st.bump();
            st.kv_remove(key, index);
            index
        };
        self.notify(index);
    }

    /// The current entry of a key (test assertions).
    pub fn entry(&self, key: &str) -> Option<KvPair> {
        self.lock().kv.get(key).cloned()
    }

    /// The current value of a key (test assertions).
    pub fn value(&self, key: &str) -> Option<Vec<u8>> {
        self.entry(key).map(|p| p.value)
    }

    /// Invalidates a session now, as a TTL expiry or failed health check would.
    pub fn expire_session(&self, id: &str) {
        let index = {
            let mut st = self.lock();
            st.invalidate(id, Instant::now());
            st.index
        };
        self.notify(index);
    }

    /// Makes renewals answer this TTL (a server asking clients to renew less often).
    pub fn set_renew_ttl(&self, ttl: Duration) {
        self.lock().renew_ttl = Some(ttl);
    }

    /// Sets the status of every check of a service instance (and registers one if none).
    pub fn set_check_status(&self, service_id: &str, status: &str) {
        let index = {
            let mut st = self.lock();
            let index = st.bump();
            st.catalog_index = index;
            for ((node, id), reg) in st.catalog.iter_mut() {
                if id != service_id {
                    continue;
                }
                if reg.checks.is_empty() {
                    reg.checks.push(HealthCheck {
                        node: node.clone(),
                        check_id: format!("service:{service_id}"),
                        name: format!("Service '{service_id}' check"),
                        service_id: service_id.to_owned(),
                        service_name: reg
                            .service
                            .as_ref()
                            .map(|s| s.service.clone())
                            .unwrap_or_default(),
                        ..HealthCheck::default()
                    });
                }
                for check in &mut reg.checks {
                    check.status = status.to_owned();
                }
                reg.modify_index = index;
            }
            index
        };
        self.notify(index);
    }

    /// Sets the leader address `status_leader` answers (`""`: no leader).
    pub fn set_leader(&self, leader: &str) {
        self.lock().leader = leader.to_owned();
    }

    /// A blocking read: answers at once when `opts.index` is 0 or the state's index passed it,
    /// otherwise waits for a change, a session expiry or the end of the wait.
    async fn blocking<T>(
        &self,
        opts: QueryOptions,
        mut read: impl FnMut(&State) -> (T, u64),
    ) -> (T, QueryMeta) {
        let wait = opts
            .wait
            .unwrap_or(DEFAULT_WAIT)
            .min(Duration::from_secs(600));
        let deadline = Instant::now() + wait;
        let mut rx = self.shared.changed.subscribe();
        loop {
            rx.borrow_and_update();
            let now = Instant::now();
            let (value, index, next_expiry, expired) = {
                let mut st = self.lock();
                let expired = st.expire_sessions(now);
                let (value, index) = read(&st);
                (value, index, st.next_expiry(), expired.then_some(st.index))
            };
            if let Some(i) = expired {
                self.notify(i);
            }
            let index = index.max(1);
            if opts.index == 0 || index > opts.index || now >= deadline {
                return (
                    value,
                    QueryMeta {
                        index,
                        known_leader: true,
                        last_contact: Duration::ZERO,
                    },
                );
            }
            let wake = next_expiry.map_or(deadline, |e| e.min(deadline));
            tokio::select! {
                _ = rx.changed() => {}
                () = tokio::time::sleep_until(wake) => {}
            }
        }
    }

    fn write<T>(&self, f: impl FnOnce(&mut State, Instant) -> T) -> T {
        let (out, index) = {
            let mut st = self.lock();
            let now = Instant::now();
            st.expire_sessions(now);
            let before = st.index;
            let out = f(&mut st, now);
            (out, (st.index != before).then_some(st.index))
        };
        if let Some(i) = index {
            self.notify(i);
        }
        out
    }
}

fn injected_500(op: &str, message: String) -> Error {
    Error::injected(op, 500, &message)
}

impl ConsulApi for FakeConsul {
    async fn kv_get(&self, key: &str, opts: QueryOptions) -> Result<(Option<KvPair>, QueryMeta)> {
        self.enter("kv_get", key, Some(opts.index))?;
        Ok(self
            .blocking(opts, |st| match st.kv.get(key) {
                Some(p) => (Some(p.clone()), p.modify_index),
                None => (None, st.kv_index),
            })
            .await)
    }

    async fn kv_list(&self, prefix: &str, opts: QueryOptions) -> Result<(Vec<KvPair>, QueryMeta)> {
        self.enter("kv_list", prefix, Some(opts.index))?;
        Ok(self
            .blocking(opts, |st| {
                let pairs: Vec<KvPair> = st
                    .kv
                    .range(prefix.to_owned()..)
                    .take_while(|(k, _)| k.starts_with(prefix))
                    .map(|(_, p)| p.clone())
                    .collect();
                (pairs, st.prefix_index(prefix))
            })
            .await)
    }

    async fn kv_keys(
        &self,
        prefix: &str,
        separator: Option<&str>,
        opts: QueryOptions,
    ) -> Result<(Vec<String>, QueryMeta)> {
        self.enter("kv_keys", prefix, Some(opts.index))?;
        Ok(self
            .blocking(opts, |st| {
                let mut keys: Vec<String> = Vec::new();
                for key in st
                    .kv
                    .range(prefix.to_owned()..)
                    .map(|(k, _)| k)
                    .take_while(|k| k.starts_with(prefix))
                {
                    let cut = match separator.filter(|s| !s.is_empty()) {
                        Some(sep) => match key[prefix.len()..].find(sep) {
                            Some(pos) => key[..prefix.len() + pos + sep.len()].to_owned(),
                            None => key.clone(),
                        },
                        None => key.clone(),
                    };
                    if keys.last() != Some(&cut) {
                        keys.push(cut);
                    }
                }
                (keys, st.prefix_index(prefix))
            })
            .await)
    }

    async fn kv_put(&self, key: &str, value: &[u8], cas: Option<u64>) -> Result<bool> {
        self.enter("kv_put", key, cas)?;
        Ok(self.write(|st, _| {
            let current = st.kv.get(key);
            let allowed = match cas {
                None => true,
                Some(0) => current.is_none(),
                Some(n) => current.is_some_and(|p| p.modify_index == n),
            };
            if !allowed {
                return false;
            }
            if current.is_some_and(|p| p.value == value) {
                // Consul does not bump ModifyIndex for an identical write.
                return true;
            }
            let index = st.bump();
            st.kv_write(key, value, None, false, index);
            true
        }))
    }

    async fn kv_delete(&self, key: &str, cas: Option<u64>) -> Result<bool> {
        self.enter("kv_delete", key, cas)?;
        Ok(self.write(|st, _| {
            let current = st.kv.get(key).map(|p| p.modify_index);
            match (cas, current) {
                (_, None) => true,
                (Some(n), Some(m)) if n == 0 || n != m => false,
                _ => {
                    let index = st.bump();
                    st.kv_remove(key, index);
                    true
                }
            }
        }))
    }

    async fn kv_acquire(&self, key: &str, value: &[u8], session: &str) -> Result<bool> {
        self.enter("kv_acquire", key, None)?;
        self.write(|st, now| st.acquire(key, value, session, now))
            .map_err(|m| injected_500("acquire lock", m))
    }

    async fn kv_release(&self, key: &str, value: &[u8], session: &str) -> Result<bool> {
        self.enter("kv_release", key, None)?;
        Ok(self.write(|st, _| st.release(key, value, session)))
    }

    async fn txn(&self, ops: Vec<TxnOp>) -> Result<TxnResults> {
        let summary = ops
            .iter()
            .map(|o| format!("{} {}", o.verb(), o.key()))
            .collect::<Vec<_>>()
            .join(", ");
        self.enter("txn", &summary, None)?;
        self.write(|st, now| {
            // Evaluate against a copy; commit only if every operation succeeds.
            let mut kv = st.kv.clone();
            let mut tombstones = st.tombstones.clone();
            let mut results = Vec::new();
            let mut errors = Vec::new();
            let index = st.index + 1;
            let mut wrote = false;
            for (op_index, op) in ops.iter().enumerate() {
                let fail = |what: String| TxnOpError { op_index, what };
                let key = op.key().to_owned();
                let current = kv.get(&key).cloned();
                let mut put = |kv: &mut BTreeMap<String, KvPair>,
                               value: &[u8],
                               session: Option<Option<String>>,
                               lock: bool| {
                    let e = kv.entry(key.clone()).or_insert_with(|| KvPair {
                        key: key.clone(),
                        create_index: index,
                        ..KvPair::default()
                    });
                    e.value = value.to_vec();
                    e.modify_index = index;
                    if lock {
                        e.lock_index += 1;
                    }
                    if let Some(s) = session {
                        e.session = s;
                    }
                    tombstones.remove(&key);
                    let mut r = e.clone();
                    r.value = Vec::new();
                    r
                };
                match op {
                    TxnOp::Set { value, .. } => {
                        results.push(put(&mut kv, value, None, false));
                        wrote = true;
                    }
                    TxnOp::Cas {
                        value, index: want, ..
                    } => {
                        let ok = match (*want, &current) {
                            (0, None) => true,
                            (n, Some(p)) => n != 0 && p.modify_index == n,
                            _ => false,
                        };
                        if ok {
                            results.push(put(&mut kv, value, None, false));
                            wrote = true;
                        } else {
                            errors.push(fail(format!("failed to set key {key:?}, index is stale")));
                        }
                    }
                    TxnOp::Get { .. } => match current {
                        Some(p) => results.push(p),
                        None => errors.push(fail(format!("key {key:?} doesn't exist"))),
                    },
                    TxnOp::GetTree { .. } => {
                        results.extend(
                            kv.range(key.clone()..)
                                .take_while(|(k, _)| k.starts_with(&key))
                                .map(|(_, p)| p.clone()),
                        );
                    }
                    TxnOp::Delete { .. } => {
                        if kv.remove(&key).is_some() {
                            tombstones.insert(key.clone(), index);
                            wrote = true;
                        }
                    }
                    TxnOp::DeleteCas { index: want, .. } => match &current {
                        Some(p) if p.modify_index == *want => {
                            kv.remove(&key);
                            tombstones.insert(key.clone(), index);
                            wrote = true;
                        }
                        Some(_) => errors.push(fail(format!(
                            "failed to delete key {key:?}, index is stale"
                        ))),
                        None => {}
                    },
                    TxnOp::DeleteTree { .. } => {
                        let doomed: Vec<String> = kv
                            .range(key.clone()..)
                            .map(|(k, _)| k.clone())
                            .take_while(|k| k.starts_with(&key))
                            .collect();
                        for k in doomed {
                            kv.remove(&k);
                            tombstones.insert(k, index);
                            wrote = true;
                        }
                    }
                    TxnOp::CheckIndex { index: want, .. } => {
                        if current.as_ref().map(|p| p.modify_index) != Some(*want) {
                            errors.push(fail(format!(
                                "current modify index {} != {want}",
                                current.map_or(0, |p| p.modify_index)
                            )));
                        }
                    }
                    TxnOp::CheckSession { session, .. } => {
                        if current.as_ref().and_then(|p| p.session.as_deref())
                            != Some(session.as_str())
                        {
                            errors.push(fail(format!(
                                "key {key:?} is not locked by session {session:?}"
                            )));
                        }
                    }
                    TxnOp::CheckNotExists { .. } => {
                        if current.is_some() {
                            errors.push(fail(format!("key {key:?} exists")));
                        }
                    }
                    TxnOp::Lock { value, session, .. } => {
                        let delayed = st.lock_delays.get(&key).is_some_and(|u| *u > now);
                        let holder = current.as_ref().and_then(|p| p.session.clone());
                        if !st.session_valid(session) {
                            errors.push(fail(format!("invalid session {session:?}")));
                        } else if delayed || holder.as_ref().is_some_and(|h| h != session) {
                            errors.push(fail(format!("failed to lock key {key:?}")));
                        } else {
                            results.push(put(
                                &mut kv,
                                value,
                                Some(Some(session.clone())),
                                holder.is_none(),
                            ));
                            wrote = true;
                        }
                    }
                    TxnOp::Unlock { value, session, .. } => {
                        if current.as_ref().and_then(|p| p.session.as_deref())
                            == Some(session.as_str())
                        {
                            results.push(put(&mut kv, value, Some(None), false));
                            wrote = true;
                        } else {
                            errors.push(fail(format!("failed to unlock key {key:?}")));
                        }
                    }
                }
            }
            if !errors.is_empty() {
                return Err(Error::TxnRolledBack { errors });
            }
            if wrote {
                st.index = index;
                st.kv_index = index;
                st.kv = kv;
                st.tombstones = tombstones;
            }
            Ok(TxnResults { results })
        })
        .and_then(|results| match self.lost_answer("txn", &summary) {
            Some(e) => Err(e),
            None => Ok(results),
        })
    }

    async fn session_create(&self, request: &SessionRequest) -> Result<String> {
        self.enter("session_create", &request.name, None)?;
        if let Some(ttl) = request.ttl
            && !(Duration::from_secs(10)..=Duration::from_secs(86400)).contains(&ttl)
        {
            return Err(injected_500(
                "create session",
                format!(
                    "Invalid Session TTL '{}', must be between [10s=24h0m0s]",
                    ttl.as_nanos()
                ),
            ));
        }
        let lock_delay = request
            .lock_delay
            .unwrap_or(Duration::from_secs(15))
            .min(Duration::from_secs(60));
        Ok(self.write(|st, now| {
            let index = st.bump();
            st.session_index = index;
            let id = uuid::Uuid::new_v4().to_string();
            let entry = SessionEntry {
                id: id.clone(),
                name: request.name.clone(),
                node: request
                    .node
                    .clone()
                    .unwrap_or_else(|| "fake-node".to_owned()),
                lock_delay: u64::try_from(lock_delay.as_nanos()).unwrap_or(u64::MAX),
                behavior: request.behavior,
                ttl: request.ttl.map(go_duration).unwrap_or_default(),
                node_checks: request
                    .checks
                    .clone()
                    .unwrap_or_else(|| vec!["serfHealth".to_owned()]),
                service_checks: None,
                create_index: index,
                modify_index: index,
            };
            st.sessions.insert(
                id.clone(),
                Session {
                    entry,
                    ttl: request.ttl,
                    expires_at: request.ttl.map(|t| now + t),
                },
            );
            id
        }))
    }

    async fn session_renew(&self, id: &str) -> Result<Option<Duration>> {
        self.enter("session_renew", id, None)?;
        self.write(|st, now| {
            let renew_ttl = st.renew_ttl;
            let Some(session) = st.sessions.get_mut(id) else {
                return Err(Error::SessionNotFound { id: id.to_owned() });
            };
            if let Some(longer) = renew_ttl {
                session.ttl = Some(longer);
                session.entry.ttl = go_duration(longer);
            }
            session.expires_at = session.ttl.map(|t| now + t);
            Ok(session.ttl)
        })
    }

    async fn session_destroy(&self, id: &str) -> Result<()> {
        self.enter("session_destroy", id, None)?;
        self.write(|st, now| st.invalidate(id, now));
        Ok(())
    }

    async fn session_info(
        &self,
        id: &str,
        opts: QueryOptions,
    ) -> Result<(Option<SessionEntry>, QueryMeta)> {
        self.enter("session_info", id, Some(opts.index))?;
        Ok(self
            .blocking(opts, |st| {
                (
                    st.sessions.get(id).map(|s| s.entry.clone()),
                    st.session_index,
                )
            })
            .await)
    }

    async fn catalog_services(
        &self,
        opts: QueryOptions,
    ) -> Result<(BTreeMap<String, Vec<String>>, QueryMeta)> {
        self.enter("catalog_services", "", Some(opts.index))?;
        Ok(self
            .blocking(opts, |st| {
                let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
                for reg in st.catalog.values() {
                    if let Some(s) = &reg.service {
                        let tags = out.entry(s.service.clone()).or_default();
                        for t in &s.tags {
                            if !tags.contains(t) {
                                tags.push(t.clone());
                            }
                        }
                    }
                }
                (out, st.catalog_index)
            })
            .await)
    }

    async fn catalog_service(
        &self,
        name: &str,
        opts: QueryOptions,
    ) -> Result<(Vec<CatalogService>, QueryMeta)> {
        self.enter("catalog_service", name, Some(opts.index))?;
        Ok(self
            .blocking(opts, |st| {
                let rows = st
                    .catalog
                    .values()
                    .filter_map(|reg| {
                        let s = reg.service.as_ref().filter(|s| s.service == name)?;
                        Some(CatalogService {
                            id: reg.node.id.clone(),
                            node: reg.node.node.clone(),
                            address: reg.node.address.clone(),
                            datacenter: reg.node.datacenter.clone(),
                            node_meta: reg.node.meta.clone(),
                            service_id: s.id.clone(),
                            service_name: s.service.clone(),
                            service_address: s.address.clone(),
                            service_port: s.port,
                            service_tags: s.tags.clone(),
                            service_meta: s.meta.clone(),
                            create_index: reg.create_index,
                            modify_index: reg.modify_index,
                            ..CatalogService::default()
                        })
                    })
                    .collect();
                (rows, st.catalog_index)
            })
            .await)
    }

    async fn catalog_register(&self, registration: &CatalogRegistration) -> Result<()> {
        self.enter("catalog_register", &registration.node, None)?;
        self.write(|st, _| {
            let index = st.bump();
            st.catalog_index = index;
            let node = HealthNode {
                id: registration.id.clone().unwrap_or_default(),
                node: registration.node.clone(),
                address: registration.address.clone(),
                datacenter: registration
                    .datacenter
                    .clone()
                    .unwrap_or_else(|| "dc1".to_owned()),
                meta: registration.node_meta.clone(),
            };
            let service = registration.service.as_ref().map(|s| AgentService {
                id: if s.id.is_empty() {
                    s.service.clone()
                } else {
                    s.id.clone()
                },
                service: s.service.clone(),
                tags: s.tags.clone(),
                address: s.address.clone(),
                port: s.port,
                meta: s.meta.clone(),
                namespace: s.namespace.clone(),
            });
            let service_id = service.as_ref().map(|s| s.id.clone()).unwrap_or_default();
            let slot = (registration.node.clone(), service_id.clone());
            let create_index = st.catalog.get(&slot).map_or(index, |r| r.create_index);
            let mut checks = st
                .catalog
                .get(&slot)
                .map(|r| r.checks.clone())
                .unwrap_or_default();
            if let Some(c) = &registration.check {
                checks.retain(|x| x.check_id != c.check_id);
                checks.push(HealthCheck {
                    node: registration.node.clone(),
                    check_id: c.check_id.clone(),
                    name: c.name.clone(),
                    status: c.status.clone(),
                    notes: c.notes.clone(),
                    service_id: c.service_id.clone(),
                    service_name: service
                        .as_ref()
                        .map(|s| s.service.clone())
                        .unwrap_or_default(),
                    ..HealthCheck::default()
                });
            }
            st.catalog.insert(
                slot,
                Registration {
                    node,
                    service,
                    checks,
                    create_index,
                    modify_index: index,
                },
            );
        });
        Ok(())
    }

    async fn catalog_deregister(&self, node: &str, service_id: Option<&str>) -> Result<()> {
        self.enter("catalog_deregister", service_id.unwrap_or(node), None)?;
        self.write(|st, _| {
            let index = st.bump();
            st.catalog_index = index;
            st.catalog
                .retain(|(n, id), _| n != node || service_id.is_some_and(|s| s != id));
        });
        Ok(())
    }

    async fn health_service(
        &self,
        name: &str,
        passing_only: bool,
        opts: QueryOptions,
    ) -> Result<(Vec<ServiceEntry>, QueryMeta)> {
        self.enter("health_service", name, Some(opts.index))?;
        let (mut entries, meta) = self.blocking(opts, |st| st.health_entries(name)).await;
        if passing_only {
            entries.retain(ServiceEntry::is_passing);
        }
        Ok((entries, meta))
    }

    async fn status_leader(&self) -> Result<String> {
        self.enter("status_leader", "", None)?;
        Ok(self.lock().leader.clone())
    }
}
