//! The reconcile loop: watch `<prefix>/config`, observe, plan, roll out, report (DESIGN §3–§5).
//!
//! ```no_run
//! # async fn demo(consul: proxy_operator::consul::ConsulClient, nomad: proxy_operator::nomad::NomadClient)
//! # -> Result<(), Box<dyn std::error::Error>> {
//! use proxy_operator::proxy::probe::HttpProbe;
//! use proxy_operator::reconcile::{Config, Operator};
//!
//! let operator = Operator::new(Config::new("proxy-operator"), consul, nomad, HttpProbe::new()?);
//! operator.run(async { let _ = tokio::signal::ctrl_c().await; }).await;
//! # Ok(()) }
//! ```
//!
//! # Expected flow of one pass ([`Operator::reconcile`])
//! 1. At start: read the status document and the rollout journal (`<prefix>/rollout`); a
//!    rollout an earlier operator left in flight is resumed, never taken for a good one.
//! 2. A rollout in flight is stepped on its own gate (job, deployment, allocations, `/ping`,
//!    `/api/rawdata`, route probes), whatever the document says now.
//! 3. At rest: read the config key. Absent, empty or unreadable: report and change nothing.
//!    Parse and validate (Invalid: status `Invalid` with every error, nothing else written),
//!    render, read the job and our KV subtree, [`plan`](crate::plan::plan), and for an `Apply`
//!    start a rollout — only once its journal is written (write-ahead).
//! 4. Carry out the machine's effects through the client traits; a job write answered with an
//!    error is checked by reading the job back (the answer may have been lost).
//! 5. Build the next status; write it (with the journal, in one CAS txn) when it says
//!    something new. A failed write is retried on later passes; the operator's own view moves
//!    on regardless, so a lost write never makes it forget a failed digest.
//!
//! # Guarantees
//! - Never act on nothing: a missing document or a failed observation writes nothing to Nomad
//!   or the proxy's KV tree; observation errors back off (401/403 to [`TERMINAL_RETRY`]) and
//!   the last good state stays.
//! - A job without our owner Meta is never touched.
//! - An unchanged digest that passed the gate is a pass with zero writes; only the periodic
//!   resync pass ([`Operator::resync`]) writes the status's pass counter.
//!
//! # Where each concern lives
//! `run` (the run loop, the config watch, debounce, resync), `load` (read, validate, resolve
//! references, render), `observe` (what runs, and every gate signal), `pass` (one pass at rest
//! or in flight, driving the machine), `effects` (carrying them out; policy writes go through
//! the proxy's [`ProxyDriver`](crate::proxy::ProxyDriver)), `store` (the status document, the
//! write-ahead journal and their CAS write), `lead` (passes only as leader, each cancelled when
//! the term ends; see [`Operator::with_leader`]).

use std::marker::PhantomData;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::time::Instant;
use tracing::{Instrument, debug, info_span, warn};

use crate::admission::AdminLimits;
use crate::consul::{self, ConsulApi, KvPair};
use crate::nomad::{self, NomadApi};
use crate::proxy::probe::ProxyProbe;
use crate::proxy::{Proxies, Reach};
use crate::rollout::{ApplyOutcome, JobRef, Phase};
use crate::spec::status::ProxyStatus;
use crate::spec::{FieldError, ProxyKind};
use crate::status::{Pass, Report, short};
use crate::transport::QueryOptions;

mod effects;
mod lead;
mod load;
mod observe;
mod pass;
mod run;
mod store;

use load::Loaded;
use store::StatusStore;

/// How soon a change that failed preflight is tried again: what failed is on the node (a port,
/// a file, a host volume), and nothing announces that it was fixed.
pub const PREFLIGHT_RECHECK: Duration = Duration::from_secs(5);

/// Default quiet time after a config change before a pass starts, so a burst of edits is one pass.
pub const DEFAULT_DEBOUNCE: Duration = Duration::from_millis(250);
/// Default interval of the full resync that catches anything a watch missed.
pub const DEFAULT_RESYNC: Duration = Duration::from_secs(300);
/// First retry delay after an observation error.
pub const MIN_BACKOFF: Duration = Duration::from_millis(500);
/// Longest retry delay after repeated observation errors.
pub const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// Consul holds a blocking query at most this long (it caps `wait` at 10 minutes).
const MAX_WATCH_WAIT: Duration = Duration::from_secs(300);
/// Retry interval after a terminal error (401/403): only a new token or policy fixes it, so
/// retrying fast only adds load and log noise.
pub const TERMINAL_RETRY: Duration = Duration::from_secs(300);
/// A burst of edits is debounced for at most this many debounce intervals.
const MAX_DEBOUNCE_FACTOR: u32 = 10;

/// Errors of one observation or write. Each names the step that failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Reading a Consul key or tree failed.
    #[error("failed to read {what}: {source}")]
    Consul {
        /// What was read.
        what: String,
        /// The cause.
        #[source]
        source: consul::Error,
    },
    /// Reading from Nomad failed.
    #[error("failed to read {what}: {source}")]
    Nomad {
        /// What was read.
        what: String,
        /// The cause.
        #[source]
        source: nomad::Error,
    },
    /// Basic-auth users could not be read from their reference.
    #[error("failed to read basic-auth users from {reference}: {reason}")]
    Secret {
        /// The KV key or file (never its content).
        reference: String,
        /// Why.
        reason: String,
    },
    /// Writing the status document failed.
    #[error("failed to write the status document {key}: {source}")]
    WriteStatus {
        /// The status key.
        key: String,
        /// The cause.
        #[source]
        source: consul::Error,
    },
    /// A document the loop writes could not be encoded (nothing was written).
    #[error("failed to encode {key}: {source}")]
    Encode {
        /// The key it was for.
        key: String,
        /// The cause.
        #[source]
        source: serde_json::Error,
    },
    /// The status document kept changing under us.
    #[error("failed to write the status document {key}: another writer kept changing it")]
    StatusConflict {
        /// The status key.
        key: String,
    },
    /// The document references something outside the operator's limits that only shows on
    /// this host (a users file that resolves outside `--users-dir`): the document is invalid.
    #[error("{0}")]
    Refused(FieldError),
    /// A fenced write was refused: this replica no longer holds the leader lock. Never retried;
    /// the replica steps down.
    #[error("failed to write {key}: {source}")]
    Deposed {
        /// The key written.
        key: String,
        /// The refusal.
        #[source]
        source: crate::leader::Error,
    },
}

/// Result alias of this module.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Reads `key` now; `what` names it in the error (`the status document`).
async fn read_key<C: ConsulApi>(consul: &C, key: &str, what: &str) -> Result<Option<KvPair>> {
    consul
        .kv_get(key, QueryOptions::NOW)
        .await
        .map(|(pair, _)| pair)
        .map_err(|source| Error::Consul {
            what: format!("{what} {key}"),
            source,
        })
}

impl Error {
    /// Whether trying again later may succeed. 401/403 are terminal (a token must change).
    #[must_use]
    pub fn is_retryable(&self) -> bool {
        match self {
            Error::Consul { source, .. } | Error::WriteStatus { source, .. } => {
                !source.is_forbidden()
            }
            Error::Nomad { source, .. } => !source.is_forbidden(),
            Error::Secret { .. } | Error::StatusConflict { .. } => true,
            // The same value encodes the same way every time; a deposed leader stays deposed.
            Error::Encode { .. } | Error::Deposed { .. } | Error::Refused(_) => false,
        }
    }

    /// Whether a fenced write was refused because the leader lock is no longer ours.
    #[must_use]
    pub fn is_deposed(&self) -> bool {
        matches!(self, Error::Deposed { .. })
    }

    /// The variant as a short machine word: the `reason` label of the pass-error metric
    /// (never the message, which may name keys).
    #[must_use]
    pub fn label(&self) -> &'static str {
        match self {
            Error::Consul { .. } => "consul",
            Error::Nomad { .. } => "nomad",
            Error::Secret { .. } => "secret",
            Error::WriteStatus { .. } => "status_write",
            Error::Encode { .. } => "encode",
            Error::StatusConflict { .. } => "status_conflict",
            Error::Refused(_) => "refused",
            Error::Deposed { .. } => "deposed",
        }
    }
}

/// Settings of the loop.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// KV prefix (`<prefix>/config`, `<prefix>/status`, `<prefix>/traefik/`).
    pub prefix: String,
    /// Value of the job's `proxy-operator/owner` Meta.
    pub owner: String,
    /// Quiet time after a change before a pass.
    pub debounce: Duration,
    /// Full resync interval.
    pub resync: Duration,
    /// Host the proxy's entry points and API are reached on for probes.
    pub proxy_host: String,
    /// Base URL of the proxy's API (`/ping`, `/api/rawdata`); derived from the spec's dashboard
    /// address and `proxy_host` when `None`.
    pub proxy_api: Option<String>,
    /// The document's privilege boundary ([`admission`](crate::admission)). `None` admits
    /// every valid document: only for in-process tests; `run` and `dev` always set it from
    /// their flags.
    pub limits: Option<AdminLimits>,
}

impl Config {
    /// Defaults for `prefix`: owner = prefix, 250 ms debounce, 5 min resync, proxy on 127.0.0.1.
    #[must_use]
    pub fn new(prefix: impl Into<String>) -> Self {
        let prefix = prefix.into();
        Self {
            owner: prefix.clone(),
            prefix,
            debounce: DEFAULT_DEBOUNCE,
            resync: DEFAULT_RESYNC,
            proxy_host: "127.0.0.1".to_owned(),
            proxy_api: None,
            limits: None,
        }
    }

    /// Sets the debounce.
    #[must_use]
    pub fn debounce(mut self, debounce: Duration) -> Self {
        self.debounce = debounce;
        self
    }

    /// Sets the resync interval.
    #[must_use]
    pub fn resync(mut self, resync: Duration) -> Self {
        self.resync = resync;
        self
    }

    /// `<prefix>/config`.
    #[must_use]
    pub fn config_key(&self) -> String {
        format!("{}/config", self.prefix)
    }

    /// `<prefix>/status`.
    #[must_use]
    pub fn status_key(&self) -> String {
        format!("{}/status", self.prefix)
    }

    /// `<prefix>/rollout`: the journal of a rollout in flight (it holds the previous KV
    /// entries, basic-auth hashes included, so it is not part of the status document).
    #[must_use]
    pub fn journal_key(&self) -> String {
        format!("{}/rollout", self.prefix)
    }

    /// Where the operator reaches the proxy.
    #[must_use]
    pub fn reach(&self) -> Reach {
        Reach {
            host: self.proxy_host.clone(),
            api: self.proxy_api.clone(),
        }
    }

    /// `<prefix>/traefik/`.
    #[must_use]
    pub fn kv_root(&self) -> String {
        format!("{}/traefik/", self.prefix)
    }
}

/// What a pass asks of the loop (kube-rs style).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Action {
    /// Run again after this long even without a change; `None`: wait for a change or resync.
    pub requeue_after: Option<Duration>,
}

impl Action {
    /// Run again after `duration`: a rollout is being verified, or an error is backing off.
    #[must_use]
    pub const fn requeue(duration: Duration) -> Self {
        Self {
            requeue_after: Some(duration),
        }
    }

    /// Nothing to do until the config changes (or the periodic resync, which catches missed
    /// changes and drift).
    #[must_use]
    pub const fn await_change() -> Self {
        Self {
            requeue_after: None,
        }
    }
}

/// Exponential backoff with equal jitter, as an iterator of delays; `reset` after a success.
#[derive(Debug, Clone)]
pub struct Backoff {
    attempt: u32,
    min: Duration,
    max: Duration,
}

impl Backoff {
    /// From `min`, doubling up to `max`.
    #[must_use]
    pub fn new(min: Duration, max: Duration) -> Self {
        Self {
            attempt: 0,
            min,
            max,
        }
    }

    /// Back to `min`.
    pub fn reset(&mut self) {
        self.attempt = 0;
    }
}

impl Iterator for Backoff {
    type Item = Duration;

    fn next(&mut self) -> Option<Duration> {
        let full = self
            .min
            .saturating_mul(1 << self.attempt.min(16))
            .min(self.max);
        self.attempt = self.attempt.saturating_add(1);
        // Half fixed, half random: replicas that failed together do not retry together.
        let half = full / 2;
        let jitter = half.mul_f64(rand::random::<f64>());
        Some(half + jitter)
    }
}

/// The operator: the loop over the client traits.
pub struct Operator<C, N, P> {
    config: Config,
    consul: Arc<C>,
    nomad: N,
    /// Every proxy's driver; a document or a rollout in flight names the one it uses.
    proxies: Proxies,
    probe: PhantomData<fn() -> P>,
    phase: Phase,
    applied: Option<ApplyOutcome>,
    /// The status document, the journal and their CAS write.
    store: StatusStore,
    /// ModifyIndex of the config key as the last pass at rest read it.
    last_pass_index: u64,
    started: bool,
    backoff: Backoff,
    passes: u64,
    /// Leader election, when this operator runs as one of several replicas.
    lead: Option<lead::Lead>,
    /// The basic-auth users key the document references, watched like the config key.
    users: load::UsersWatch,
    /// The HTTP surface, metrics and rollout trace this loop feeds (`run.rs`); inert without a
    /// surface, except for the trace spans.
    observer: run::Observer,
}

impl<C, N, P> std::fmt::Debug for Operator<C, N, P> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Operator")
            .field("config", &self.config)
            .field("phase", &self.phase.name())
            .field("passes", &self.passes)
            .finish_non_exhaustive()
    }
}

/// The document facts a status report carries.
#[derive(Debug, Clone, Default)]
struct Facts {
    index: u64,
    digest: Option<String>,
    proxy: Option<ProxyKind>,
    job_version: Option<u64>,
    good_job: Option<JobRef>,
    warnings: Vec<FieldError>,
}

impl Facts {
    fn of(loaded: &Loaded, job_version: Option<u64>) -> Self {
        Facts {
            index: loaded.index,
            digest: Some(loaded.spec.digest().to_owned()),
            proxy: Some(loaded.spec.proxy()),
            job_version,
            good_job: None,
            warnings: loaded.spec.warnings().to_vec(),
        }
    }

    /// What the status already says: a rollout in flight is not about the current document.
    fn unchanged(status: &ProxyStatus) -> Self {
        Facts {
            index: status.observed_index,
            digest: status.observed_digest.clone(),
            proxy: status.proxy,
            job_version: None,
            good_job: None,
            warnings: status.warnings.clone(),
        }
    }

    fn pass<'a>(&'a self, report: Report<'a>) -> Pass<'a> {
        Pass {
            observed_index: self.index,
            observed_digest: self.digest.as_deref(),
            proxy: self.proxy,
            job_version: self.job_version,
            good_job: self.good_job.as_ref(),
            warnings: &self.warnings,
            report,
        }
    }
}

impl<C, N, P> Operator<C, N, P>
where
    C: ConsulApi + 'static,
    N: NomadApi,
    P: ProxyProbe,
{
    /// An operator that has not run a pass yet.
    pub fn new(config: Config, consul: C, nomad: N, probe: P) -> Self {
        let consul = Arc::new(consul);
        let proxies = Proxies::new(Arc::clone(&consul), Arc::new(probe), &config.kv_root());
        Self {
            store: StatusStore::new(&config),
            config,
            proxies,
            consul,
            nomad,
            probe: PhantomData,
            phase: Phase::Idle,
            applied: None,
            last_pass_index: 0,
            started: false,
            backoff: Backoff::new(MIN_BACKOFF, MAX_BACKOFF),
            passes: 0,
            lead: None,
            users: load::UsersWatch::default(),
            observer: run::Observer::default(),
        }
    }

    /// Feeds `surface` (status page, readiness, metrics) from this loop: every pass, every
    /// status it writes, every wake-up of the config watch, every finished rollout. Without it
    /// the loop reports through the status document and the trace spans only.
    #[must_use]
    pub fn with_surface(mut self, surface: crate::server::Surface) -> Self {
        self.observer.surface = Some(surface);
        self
    }

    /// Runs passes only while this replica holds the leader lock of `elector` (started with
    /// [`crate::leader::Elector::spawn`]); [`run`](Self::run) shuts the elector down when it
    /// returns.
    #[must_use]
    pub fn with_leader(mut self, elector: crate::leader::LeaderHandle) -> Self {
        self.lead = Some(lead::Lead::new(elector));
        self
    }

    /// The rollout machine's phase.
    pub fn phase(&self) -> &Phase {
        &self.phase
    }

    /// The status as the operator knows it (written, or waiting to be written again).
    pub fn status(&self) -> &ProxyStatus {
        &self.store.status
    }

    /// One pass: observe → plan → roll out → effects → status. Never panics on what it reads.
    /// A pass that finds nothing new writes nothing.
    pub async fn reconcile(&mut self) -> Action {
        self.reconcile_pass(false).await
    }

    /// The periodic resync pass: a [`reconcile`](Self::reconcile) that also writes the status
    /// document's pass counter when nothing else changed, so readers see the loop is alive.
    pub async fn resync(&mut self) -> Action {
        self.reconcile_pass(true).await
    }

    async fn reconcile_pass(&mut self, heartbeat: bool) -> Action {
        self.passes += 1;
        // Only a phase at rest is kept (it is small): a rollout starts from one.
        let before = self.phase.is_at_rest().then(|| self.phase.clone());
        let parent = self.observer.pass_starting(&self.phase, Instant::now());
        let span = info_span!(
            parent: &parent,
            "reconcile",
            pass = self.passes,
            generation = tracing::field::Empty,
            digest = tracing::field::Empty,
            plan = tracing::field::Empty,
            phase = tracing::field::Empty,
        );
        let action = self.pass(heartbeat).instrument(span.clone()).await;
        span.record("phase", self.phase.name());
        debug!(parent: &span, requeue_after = ?action.requeue_after, status = ?self.store.status.phase, "pass done");
        self.pass_finished(before.as_ref());
        action
    }

    async fn pass(&mut self, heartbeat: bool) -> Action {
        if !self.started {
            if let Err(e) = self.load_status().await {
                self.observer.pass_failed(e.label());
                warn!(error = %e, "cannot read the status document; backing off");
                return self.retry_after(&e);
            }
            self.started = true;
        }
        let action = if self.phase.is_at_rest() {
            self.at_rest().await
        } else {
            // A rollout in flight is stepped to its end on its own terms, whatever the
            // document says now: deleting or breaking the document must not freeze it.
            self.in_flight().await
        };
        let journal = self.phase.journal(Instant::now(), SystemTime::now());
        self.store
            .count_pass(&*self.consul, journal, heartbeat)
            .await;
        match &self.store.write_error {
            // The status did not go through: try again soon, even when nothing else would.
            Some(e) => {
                let retry = if e.is_retryable() {
                    self.backoff.next().unwrap_or(MAX_BACKOFF)
                } else {
                    TERMINAL_RETRY
                };
                Action::requeue(action.requeue_after.map_or(retry, |d| d.min(retry)))
            }
            None => action,
        }
    }

    /// Reports an observation error at rest and backs off; 401/403 back off to a long interval,
    /// since only a new token or policy fixes them.
    async fn observation_failed(&mut self, e: &Error, facts: Option<&Facts>) -> Action {
        self.observer.pass_failed(e.label());
        let action = self.retry_after(e);
        let retry_in = action.requeue_after.unwrap_or(MIN_BACKOFF);
        let terminal = !e.is_retryable();
        warn!(error = %e, retry_in = ?retry_in, terminal, "observation failed; the proxy is left as it is");
        let text = e.to_string();
        let facts = match facts {
            Some(facts) => facts.clone(),
            None => Facts::unchanged(&self.store.status),
        };
        let report = Report::ObservationFailed {
            error: &text,
            retry_in,
            terminal,
        };
        self.report(&facts.pass(report)).await;
        action
    }

    fn retry_after(&mut self, e: &Error) -> Action {
        if e.is_retryable() {
            self.backoff_action()
        } else {
            Action::requeue(TERMINAL_RETRY)
        }
    }

    fn backoff_action(&mut self) -> Action {
        Action::requeue(self.backoff.next().unwrap_or(MAX_BACKOFF))
    }

    async fn report_plain(&mut self, index: u64, report: Report<'_>) {
        let facts = Facts {
            index,
            ..Facts::default()
        };
        self.report(&facts.pass(report)).await;
    }
}
