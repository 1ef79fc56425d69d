//! Leader election on a Consul session lock at `<prefix>/leader`, and the fence every leader
//! write carries (DESIGN §6, issue 11).
//!
//! # Expected flow
//!
//! [`Elector::spawn`] starts one task per replica and returns a [`LeaderHandle`]. The state is
//! published on a [`watch::Receiver<Leadership>`], as kubert publishes its lease claim:
//!
//! - a **follower** holds no session and waits on the leader key with a blocking query
//!   ([`Watch`]), so an idle follower costs one open request and nothing else;
//! - when the key is unlocked it creates a session (TTL, behavior `release`, a short
//!   lock-delay) and acquires the key, writing a [`Holder`] record (node, allocation, address,
//!   since) that `status` prints through [`read_holder`];
//! - the **leader** renews at TTL/2 (or half of the TTL Consul answers, which may be longer) and
//!   keeps a blocking query on the key, so a session Consul invalidates (TTL ran out, destroyed
//!   by an operator) is noticed at once, not at the next renewal.
//!
//! # Guarantees
//!
//! - Leadership is lost the moment a renewal fails, the key stops naming our session, or the
//!   loop reports a refused fenced write ([`LeaderHandle::step_down`]). [`Leadership`] flips to
//!   [`Leadership::Follower`] *before* anything else happens, so [`Term::lost`] fires first and
//!   the caller cancels its in-flight pass.
//! - Every KV write of a leader goes through [`Fence::txn`]: a `check-session` on the leader key
//!   first, so a deposed leader (a frozen process, a partitioned node) writes nothing. Its
//!   refusal is [`Error::Deposed`], never a conflict to retry.
//! - [`LeaderHandle::shutdown`] (SIGTERM) releases the key and destroys the session: a follower
//!   acquires within its blocking query's round trip, without waiting for the TTL.
//!
//! # Why lock-delay is short
//!
//! Lock-delay only protects writers that don't check the lock. Every write here is fenced, so the
//! default is 1 s (Consul's is 15 s).
//!
//! # What a killed leader costs (`scripts/bench leader`)
//!
//! Consul invalidates a TTL session 2 × TTL after its last renewal (`SessionTTLMultiplier`;
//! the TTL is a lower bound, hashicorp/consul#524), so with a TTL alone a SIGKILLed leader is
//! replaced 1.5 to 2 × TTL after the kill plus lock-delay (24 to 31 s at 15 s). The session is
//! therefore also bound to the operator's own Consul health check ([`SessionCheck`],
//! [`check`]): Consul invalidates it when the check goes critical, about one check interval
//! after the kill. Without a check (Kubernetes) the TTL decides. Renewals are the leader's
//! whole idle cost, 120 / TTL(s) per minute; followers only hold a blocking query. SIGTERM
//! waits for none of it: the lock is released at once.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tracing::{debug, info, warn};

use crate::consul::{self, ConsulApi, KvPair, SessionBehavior, SessionRequest, TxnOpError};
use crate::transport::{QueryOptions, Watch};

pub mod check;
mod fence;
mod flags;
mod holder;
use check::Binding;
pub use check::SessionCheck;
pub use fence::Fence;
pub use flags::LeaderFlags;
use holder::current_leader;
pub use holder::{CurrentLeader, Holder, read_holder};

/// Session TTL (Consul accepts 10 s to 24 h): 8 renewals a minute. A killed leader whose
/// session is bound to no health check is replaced after 1.5 to 2 × this plus lock-delay.
pub const DEFAULT_TTL: Duration = Duration::from_secs(15);
/// Lock-delay after an invalidation; short because every write is fenced.
pub const DEFAULT_LOCK_DELAY: Duration = Duration::from_secs(1);
/// How long one blocking query on the leader key may be held by the server.
pub const DEFAULT_WAIT: Duration = Duration::from_secs(300);
/// Pause after a failed Consul call before the next attempt (the client already retried).
pub const DEFAULT_RETRY: Duration = Duration::from_secs(1);
/// The longest a graceful shutdown may take (cancel the pass, release the lock, destroy the
/// session). The operator's Nomad job and Kubernetes pod give it more before SIGKILL.
pub const GRACEFUL_SHUTDOWN: Duration = Duration::from_secs(10);

/// Errors of leader election and of fenced writes.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The session could not be created (Consul unreachable, ACL, unknown node).
    #[error("failed to create the leader session on node {node}: {source}")]
    CreateSession {
        /// Node the session was asked for.
        node: String,
        /// The cause.
        #[source]
        source: consul::Error,
    },
    /// The acquire request failed (not a plain "someone else holds it", which is no error).
    #[error("failed to acquire the leader lock {key}: {source}")]
    Acquire {
        /// The leader key.
        key: String,
        /// The cause.
        #[source]
        source: consul::Error,
    },
    /// A renewal failed: leadership is lost, the replica stepped down.
    #[error("failed to renew the leader session: {source}")]
    Renew {
        /// The cause.
        #[source]
        source: consul::Error,
    },
    /// The leader key could not be read.
    #[error("failed to read the leader key {key}: {source}")]
    Read {
        /// The leader key.
        key: String,
        /// The cause.
        #[source]
        source: consul::Error,
    },
    /// A health check the session is to be bound to is critical (not run yet after a start,
    /// or the replica is unhealthy): Consul would refuse the session. Retried.
    #[error("waiting for health check {check:?} to pass before creating the leader session")]
    CheckCritical {
        /// The check.
        check: String,
    },
    /// The holder record could not be encoded.
    #[error("failed to encode the leader holder record: {0}")]
    Encode(#[source] serde_json::Error),
    /// A fenced write was refused because this replica no longer holds the leader lock. It must
    /// step down and must not retry: the next leader owns the state now.
    #[error(
        "write refused: session {session} no longer holds the leader lock {key} (deposed; stepping down, not retrying): {}",
        describe(.errors)
    )]
    Deposed {
        /// The leader key.
        key: String,
        /// The session that used to hold it.
        session: String,
        /// Consul's reasons.
        errors: Vec<TxnOpError>,
    },
    /// A fenced write was refused by Consul's ACLs. Consul reports a denied operation of a
    /// transaction as a rollback (409, "Permission denied: … lacks permission 'key:write' on
    /// …" per operation), not as a 403, so this is told apart from a lost lock or a CAS
    /// conflict by its reasons. Terminal: only a policy change fixes it.
    #[error(
        "write refused by Consul's ACLs (grant the token the policy in nomad-jobs/acl/consul-operator.hcl, not retrying): {}",
        describe(.errors)
    )]
    Forbidden {
        /// Consul's reasons, naming each missing permission and key.
        errors: Vec<TxnOpError>,
    },
    /// A fenced write failed for another reason (a CAS index, the network, a 403).
    #[error("failed to apply a fenced transaction: {0}")]
    Write(#[source] consul::Error),
}

fn describe(errors: &[TxnOpError]) -> String {
    errors
        .iter()
        .map(|e| format!("op {}: {}", e.op_index, e.what))
        .collect::<Vec<_>>()
        .join("; ")
}

/// Result alias of this module.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// True when the same call may succeed later. A deposed leader's write never will.
    pub fn is_retryable(&self) -> bool {
        match self {
            Error::CreateSession { source, .. }
            | Error::Acquire { source, .. }
            | Error::Renew { source }
            | Error::Read { source, .. }
            | Error::Write(source) => source.is_retryable(),
            Error::CheckCritical { .. } => true,
            Error::Encode(_) | Error::Deposed { .. } | Error::Forbidden { .. } => false,
        }
    }

    /// True when Consul's ACLs refused the call (a 403, or a transaction rolled back for a
    /// missing permission): the token or its policy must change.
    pub fn is_forbidden(&self) -> bool {
        match self {
            Error::Forbidden { .. } => true,
            Error::CreateSession { source, .. }
            | Error::Acquire { source, .. }
            | Error::Renew { source }
            | Error::Read { source, .. }
            | Error::Write(source) => source.is_forbidden(),
            Error::Encode(_) | Error::Deposed { .. } | Error::CheckCritical { .. } => false,
        }
    }

    /// True when a fenced write was refused because the lock is no longer ours.
    pub fn is_deposed(&self) -> bool {
        matches!(self, Error::Deposed { .. })
    }

    /// True when a fenced write lost a check other than the fence (a CAS index): re-read and
    /// merge, as for any conflict.
    pub fn is_conflict(&self) -> bool {
        matches!(self, Error::Write(source) if source.is_conflict())
    }
}

/// One period of leadership.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Term {
    /// The session holding the lock.
    pub session: String,
    /// The record written to the key.
    pub holder: Holder,
    key: String,
}

impl Term {
    /// The fence of this term's writes.
    pub fn fence(&self) -> Fence {
        Fence::new(self.key.clone(), self.session.clone())
    }

    /// Resolves the moment this term ends (or the elector is gone). Race it against the pass
    /// (`tokio::select!`) so losing the lock cancels the pass.
    pub fn lost(
        &self,
        mut leadership: watch::Receiver<Leadership>,
    ) -> impl Future<Output = ()> + Send + 'static {
        let session = self.session.clone();
        async move {
            // An error means the elector stopped: no term outlives it.
            let _ = leadership
                .wait_for(|l| l.term().is_none_or(|t| t.session != session))
                .await;
        }
    }
}

/// What this replica is, as published on the [`watch`] channel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Leadership {
    /// Not known: starting, or the last election call failed. `error` says why (a 403 names
    /// the missing permission; no secret is in it), for status and `/readyz`.
    Unknown {
        /// The last failure, if any.
        error: Option<String>,
    },
    /// Another replica leads, or nobody does yet (`holder: None`).
    Follower {
        /// The current leader, when the key is locked.
        holder: Option<CurrentLeader>,
    },
    /// This replica leads.
    Leader(Term),
    /// The elector stopped (shutdown); the lock was released.
    Stopped,
}

impl Default for Leadership {
    fn default() -> Self {
        Leadership::Unknown { error: None }
    }
}

impl Leadership {
    /// The term when leading.
    pub fn term(&self) -> Option<&Term> {
        match self {
            Leadership::Leader(term) => Some(term),
            _ => None,
        }
    }

    /// True when this replica leads.
    pub fn is_leader(&self) -> bool {
        self.term().is_some()
    }

    /// `leader`, `follower`, `unknown` or `stopped`: the `role` label of metrics and `/readyz`.
    pub fn role(&self) -> &'static str {
        match self {
            Leadership::Unknown { .. } => "unknown",
            Leadership::Follower { .. } => "follower",
            Leadership::Leader(_) => "leader",
            Leadership::Stopped => "stopped",
        }
    }
}

/// Waits until this replica leads and returns the term; `None` once the elector stopped.
pub async fn wait_for_leadership(leadership: &mut watch::Receiver<Leadership>) -> Option<Term> {
    let state = leadership
        .wait_for(|l| l.is_leader() || *l == Leadership::Stopped)
        .await
        .ok()?;
    state.term().cloned()
}

/// How to elect.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ElectorConfig {
    /// The leader key, `<prefix>/leader`.
    pub key: String,
    /// Session TTL (10 s to 24 h).
    pub ttl: Duration,
    /// Lock-delay after an invalidation.
    pub lock_delay: Duration,
    /// Consul node of the session: the agent's own (`/v1/agent/self` `Config.NodeName`), as
    /// Consul would default it; a session on an unregistered node is refused.
    pub node: String,
    /// Allocation id to record in the holder record.
    pub allocation: Option<String>,
    /// HTTP address to record in the holder record.
    pub address: Option<String>,
    /// Blocking-query wait on the leader key.
    pub wait: Duration,
    /// Pause after a failed call.
    pub retry: Duration,
    /// The health checks the session is bound to.
    pub session_check: SessionCheck,
}

impl ElectorConfig {
    /// Defaults for `<prefix>/leader` on `node`.
    pub fn new(prefix: &str, node: impl Into<String>) -> ElectorConfig {
        ElectorConfig {
            key: format!("{prefix}/leader"),
            ttl: DEFAULT_TTL,
            lock_delay: DEFAULT_LOCK_DELAY,
            node: node.into(),
            allocation: None,
            address: None,
            wait: DEFAULT_WAIT,
            retry: DEFAULT_RETRY,
            session_check: SessionCheck::TtlOnly,
        }
    }
}

enum Command {
    StepDown { session: String },
    Shutdown,
}

/// Handle on a running elector.
#[derive(Debug)]
pub struct LeaderHandle {
    commands: mpsc::Sender<Command>,
    leadership: watch::Receiver<Leadership>,
    task: JoinHandle<()>,
}

impl LeaderHandle {
    /// A receiver of the published state.
    pub fn subscribe(&self) -> watch::Receiver<Leadership> {
        self.leadership.clone()
    }

    /// Steps down from the term of `session` (after a fenced write came back
    /// [`Error::Deposed`]): publishes follower at once, releases and destroys the session.
    /// Ignored when that term already ended.
    pub async fn step_down(&self, session: &str) {
        let _ = self
            .commands
            .send(Command::StepDown {
                session: session.to_owned(),
            })
            .await;
    }

    /// Stops electing at once and releases nothing, as SIGKILL would: the session lives until
    /// Consul reaps it (up to twice its TTL) or a bound check fails. For failover tests and
    /// benchmarks.
    pub fn abort(self) {
        self.task.abort();
    }

    /// Releases the lock, destroys the session and stops the elector (SIGTERM). Gives up
    /// after [`GRACEFUL_SHUTDOWN`] (Consul unreachable): the session then ends by its TTL.
    pub async fn shutdown(self) {
        let _ = self.commands.send(Command::Shutdown).await;
        let abort = self.task.abort_handle();
        if tokio::time::timeout(GRACEFUL_SHUTDOWN, self.task)
            .await
            .is_err()
        {
            abort.abort();
        }
    }
}

impl std::fmt::Debug for Command {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Command::StepDown { session } => write!(f, "StepDown({session})"),
            Command::Shutdown => f.write_str("Shutdown"),
        }
    }
}

/// Why a term ended.
enum Ended {
    Lost(String),
    Shutdown,
}

/// The election task of one replica.
pub struct Elector<C> {
    consul: Arc<C>,
    config: ElectorConfig,
    publish: watch::Sender<Leadership>,
    commands: mpsc::Receiver<Command>,
    /// What the last session was bound to, so a change is logged once, not per session.
    binding: Option<Vec<String>>,
}

impl<C: ConsulApi + 'static> Elector<C> {
    /// Starts electing in a task. Dropping every handle does not stop it; call
    /// [`LeaderHandle::shutdown`].
    pub fn spawn(consul: C, config: ElectorConfig) -> LeaderHandle {
        let (publish, leadership) = watch::channel(Leadership::default());
        let (tx, commands) = mpsc::channel(8);
        let elector = Elector {
            consul: Arc::new(consul),
            config,
            publish,
            commands,
            binding: None,
        };
        LeaderHandle {
            commands: tx,
            leadership,
            task: tokio::spawn(elector.run()),
        }
    }

    async fn run(mut self) {
        let mut watch = Watch::new(self.config.wait);
        // Our session and when we asked for it: Consul's TTL clock starts at creation, not at
        // the acquire that may come a lock-delay later.
        let mut session: Option<(String, Instant)> = None;
        // A session whose term ended but that Consul did not let us destroy (it answered 5xx):
        // it still holds the key until its TTL runs out (up to 2 × TTL), so it is destroyed as
        // soon as Consul answers again.
        let mut orphan: Option<String> = None;
        let mut pending = None;
        loop {
            let read = pending.get_or_insert_with(|| Box::pin(self.read_key(watch.clone())));
            let answer = tokio::select! {
                command = self.commands.recv() => match command {
                    Some(Command::Shutdown) | None => break,
                    Some(Command::StepDown { .. }) => continue,
                },
                answer = read => answer,
            };
            pending = None;
            let (next, result) = answer;
            watch = next;
            let pair = match result {
                Ok(pair) => pair,
                Err(source) => {
                    let key = self.config.key.clone();
                    watch.reset();
                    if self.failed(Error::Read { key, source }).await {
                        break;
                    }
                    continue;
                }
            };
            match pair
                .as_ref()
                .and_then(|p| p.session.clone())
                .filter(|s| !s.is_empty())
            {
                Some(holder) if orphan.as_deref() == Some(holder.as_str()) => {
                    watch.reset();
                    if self.destroy(&holder).await {
                        info!(session = %holder, "leader election: destroyed the session of our last term, which still held the lock");
                        orphan = None;
                    } else if self.pause(self.config.retry).await {
                        break;
                    }
                    continue;
                }
                Some(holder)
                    if session.as_ref().map(|(s, _)| s.as_str()) != Some(holder.as_str()) =>
                {
                    if let Some((ours, _)) = session.take() {
                        self.destroy(&ours).await;
                    }
                    self.publish.send_replace(Leadership::Follower {
                        holder: pair.and_then(current_leader),
                    });
                    continue;
                }
                _ => {}
            }
            // Unlocked (or, after a restart of this task, still ours): contend.
            let (id, created) = match session.take() {
                Some(ours) => ours,
                None => match self.create_session().await {
                    Ok(ours) => ours,
                    Err(e) => {
                        watch.reset();
                        if self.failed(e).await {
                            break;
                        }
                        continue;
                    }
                },
            };
            match self.acquire(&id).await {
                Ok(Some(holder)) => {
                    let term = Term {
                        session: id.clone(),
                        holder,
                        key: self.config.key.clone(),
                    };
                    info!(session = %id, key = %self.config.key, "leader election: acquired the lock");
                    self.publish.send_replace(Leadership::Leader(term));
                    let ended = self.lead(&id, created).await;
                    // Followers first: the in-flight pass is cancelled before anything else.
                    self.publish
                        .send_replace(Leadership::Follower { holder: None });
                    if !self.vacate(&id).await {
                        orphan = Some(id.clone());
                    }
                    watch.reset();
                    match ended {
                        Ended::Shutdown => break,
                        Ended::Lost(reason) => {
                            warn!(session = %id, %reason, "leader election: lost the lock, stepped down");
                            // Give the others the first try: whatever broke our term may
                            // break the next one too.
                            if self.pause(self.config.ttl / 2).await {
                                break;
                            }
                        }
                    }
                }
                Ok(None) => {
                    // Lock-delay, or another replica won the race. The key may not change
                    // while lock-delay runs, so look again after it instead of blocking.
                    debug!(session = %id, "leader election: lock not acquired");
                    session = Some((id, created));
                    watch.reset();
                    if self.pause(self.config.lock_delay).await {
                        break;
                    }
                }
                Err(e) => {
                    // The session may be gone (TTL while contending); start afresh.
                    self.destroy(&id).await;
                    watch.reset();
                    if self.failed(e).await {
                        break;
                    }
                }
            }
        }
        if let Some((id, _)) = session {
            self.destroy(&id).await;
        }
        self.publish.send_replace(Leadership::Stopped);
    }

    /// One read of the leader key, owning everything it needs so it can stay pending across
    /// `select!` rounds.
    fn read_key(
        &self,
        watch: Watch,
    ) -> impl Future<Output = (Watch, consul::Result<Option<KvPair>>)> + Send + 'static {
        read(self.consul.clone(), self.config.key.clone(), watch)
    }

    /// Reports a failed call as [`Leadership::Unknown`] and waits before the next attempt:
    /// briefly when it may pass, a TTL when it needs an administrator (a 403), so a missing
    /// policy costs a log line per TTL, not per second. True when told to shut down.
    async fn failed(&mut self, error: Error) -> bool {
        warn!(%error, retryable = error.is_retryable(), "leader election: retrying");
        let wait = if error.is_retryable() {
            self.config.retry
        } else {
            self.config.ttl
        };
        self.publish.send_replace(Leadership::Unknown {
            error: Some(error.to_string()),
        });
        self.pause(wait).await
    }

    /// Sleeps `d`, answering commands; true when told to shut down.
    async fn pause(&mut self, d: Duration) -> bool {
        let deadline = Instant::now() + d;
        loop {
            tokio::select! {
                () = tokio::time::sleep_until(deadline) => return false,
                command = self.commands.recv() => match command {
                    Some(Command::Shutdown) | None => return true,
                    Some(Command::StepDown { .. }) => {}
                },
            }
        }
    }

    /// Creates a session bound to the configured health checks; returns it with the instant
    /// just before the request, from which its TTL runs at the latest.
    async fn create_session(&mut self) -> Result<(String, Instant)> {
        let node = self.config.node.clone();
        let create = |source| Error::CreateSession {
            node: node.clone(),
            source,
        };
        let service_checks = match check::resolve(&*self.consul, &self.config.session_check)
            .await
            .map_err(create)?
        {
            Binding::Checks(ids) => ids,
            Binding::Critical(check) => return Err(Error::CheckCritical { check }),
            Binding::TtlOnly(reason) => {
                if self.binding.as_ref().is_none_or(|b| !b.is_empty()) {
                    warn!(%reason, ttl = ?self.config.ttl, "leader election: the session is bound to no health check, so a killed leader is replaced only when Consul reaps its TTL (1.5 to 2 x TTL after the kill)");
                }
                Vec::new()
            }
        };
        if !service_checks.is_empty() && self.binding.as_ref() != Some(&service_checks) {
            info!(checks = ?service_checks, "leader election: the session is bound to the operator's health check");
        }
        self.binding = Some(service_checks.clone());
        let asked = Instant::now();
        let request = SessionRequest {
            name: format!("proxy-operator leader ({})", self.config.node),
            ttl: Some(self.config.ttl),
            lock_delay: Some(self.config.lock_delay),
            behavior: SessionBehavior::Release,
            node: Some(self.config.node.clone()),
            // No serfHealth: the TTL already covers a dead agent, and not every Consul node (or
            // twin) has that check.
            checks: Some(Vec::new()),
        };
        match self
            .consul
            .session_create_bound(&request, &service_checks)
            .await
        {
            Ok(id) => Ok((id, asked)),
            // The check went critical between the read and the create.
            Err(e) if check::refused_as_critical(&e) => Err(Error::CheckCritical {
                check: service_checks.join(", "),
            }),
            Err(source) => Err(create(source)),
        }
    }

    async fn acquire(&self, session: &str) -> Result<Option<Holder>> {
        let holder = Holder {
            node: self.config.node.clone(),
            allocation: self.config.allocation.clone(),
            address: self.config.address.clone(),
            since: crate::status::rfc3339(SystemTime::now()),
        };
        let value = serde_json::to_vec(&holder).map_err(Error::Encode)?;
        let acquired = self
            .consul
            .kv_acquire(&self.config.key, &value, session)
            .await
            .map_err(|source| Error::Acquire {
                key: self.config.key.clone(),
                source,
            })?;
        Ok(acquired.then_some(holder))
    }

    /// Holds the term of `session` (created at `created`) until it is lost or the elector
    /// shuts down.
    async fn lead(&mut self, session: &str, created: Instant) -> Ended {
        let mut renew_at = created + self.config.ttl / 2;
        // Past this instant without a renewal, Consul may already have invalidated the session:
        // the TTL is the contract's lower bound, counted from the request that set it.
        let mut valid_until = created + self.config.ttl;
        let mut watch = Watch::new(self.config.wait);
        let mut pending = None;
        loop {
            let read = pending.get_or_insert_with(|| Box::pin(self.read_key(watch.clone())));
            tokio::select! {
                command = self.commands.recv() => match command {
                    Some(Command::Shutdown) | None => return Ended::Shutdown,
                    Some(Command::StepDown { session: s }) if s == session => {
                        return Ended::Lost("a fenced write was refused".to_owned());
                    }
                    Some(Command::StepDown { .. }) => {}
                },
                () = tokio::time::sleep_until(renew_at) => {
                    let sent = Instant::now();
                    let renewal = self.consul.session_renew(session);
                    match tokio::time::timeout_at(valid_until, renewal).await {
                        Ok(Ok(ttl)) => {
                            let ttl = ttl.unwrap_or(self.config.ttl);
                            renew_at = sent + ttl / 2;
                            valid_until = sent + ttl;
                        }
                        Ok(Err(source)) => return Ended::Lost(Error::Renew { source }.to_string()),
                        Err(_) => return Ended::Lost("the renewal got no answer within the session TTL".to_owned()),
                    }
                }
                (next, result) = read => {
                    pending = None;
                    watch = next;
                    match result {
                        Ok(pair) if pair.as_ref().and_then(|p| p.session.as_deref()) == Some(session) => {}
                        Ok(_) => return Ended::Lost("the leader key no longer names our session (invalidated or released)".to_owned()),
                        Err(source) => {
                            // Reading is no evidence either way; the renewal decides.
                            debug!(error = %source, "leader election: watch of the leader key failed");
                            watch.reset();
                            tokio::time::sleep(self.config.retry.min(renew_at.saturating_duration_since(Instant::now()))).await;
                        }
                    }
                }
            }
        }
    }

    /// Releases the key (followers take over at once, no lock-delay) and destroys the session;
    /// whether the session is gone.
    async fn vacate(&self, session: &str) -> bool {
        if let Ok((Some(pair), _)) = self
            .consul
            .kv_get(&self.config.key, QueryOptions::NOW)
            .await
            && pair.session.as_deref() == Some(session)
        {
            let _ = self
                .consul
                .kv_release(&self.config.key, &pair.value, session)
                .await;
        }
        self.destroy(session).await
    }

    /// Destroys `session`; whether Consul confirmed it (an unknown session counts as gone).
    async fn destroy(&self, session: &str) -> bool {
        match self.consul.session_destroy(session).await {
            Ok(_) => true,
            Err(e) => {
                // It expires by its TTL anyway.
                debug!(error = %e, session, "leader election: failed to destroy a session");
                false
            }
        }
    }
}

/// One blocking read of the leader key that owns its [`Watch`], so it can stay pending across
/// `select!` rounds without borrowing the elector.
async fn read<C: ConsulApi>(
    consul: Arc<C>,
    key: String,
    mut watch: Watch,
) -> (Watch, consul::Result<Option<KvPair>>) {
    let result = watch
        .next(|q| consul.kv_get(&key, q))
        .await
        .map(|update| update.value);
    (watch, result)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::panic)] // tests fail loudly
mod tests;
