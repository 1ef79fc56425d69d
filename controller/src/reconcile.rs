//! The reconcile loop: watch `<prefix>/config`, observe, plan, roll out, report (DESIGN §3–§5).
//!
//! ```no_run
//! # async fn demo(consul: proxy_operator::consul::ConsulClient, nomad: proxy_operator::nomad::NomadClient)
//! # -> Result<(), Box<dyn std::error::Error>> {
//! use proxy_operator::probe::HttpProbe;
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
//! - An unchanged digest that passed the gate is a pass with zero writes.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::time::Instant;
use tracing::{Instrument, debug, info, info_span, warn};

use crate::consul::{self, ConsulApi, TxnOp};
use crate::nomad::{self, NomadApi};
use crate::plan::{self, Desired, HoldReason, Observed, ObservedJob, Plan};
use crate::probe::ProxyProbe;
use crate::render::{self, META_OWNER, META_SPEC_DIGEST, RenderContext, Rendered};
use crate::rollout::{
    self, AllocObservation, ApplyError, ApplyOutcome, Change, DeploymentObservation,
    DeploymentState, Effect, Gate, JobObservation, JobRef, Journal, Observation, Phase,
    ProbeOutcome, ProxyObservation,
};
use crate::spec::status::ProxyStatus;
use crate::spec::{self, FieldError, ProxyKind, UsersFrom, ValidatedSpec};
use crate::status::{self, Pass, Report};
use crate::transport::{QueryOptions, Watch};

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
/// Consul transactions take at most this many operations.
const TXN_MAX_OPS: usize = 64;
/// The most keys a Traefik policy tree may have: one delete-tree plus every key must fit one
/// transaction, so any change (and its restore) can be written atomically.
pub const MAX_POLICY_KEYS: usize = TXN_MAX_OPS - 1;
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
    /// The status document kept changing under us.
    #[error("failed to write the status document {key}: another writer kept changing it")]
    StatusConflict {
        /// The status key.
        key: String,
    },
}

/// Result alias of this module.
pub type Result<T, E = Error> = std::result::Result<T, E>;

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
    probe: P,
    phase: Phase,
    applied: Option<ApplyOutcome>,
    /// What the operator knows: updated every pass, whether or not the write goes through, so a
    /// lost write never makes it forget a failed digest.
    status: ProxyStatus,
    /// The document as last written (or read at start); a pass writes when `status` differs.
    written: ProxyStatus,
    /// The in-flight journal as last written (or read at start).
    journal_written: Option<Journal>,
    /// The journal key holds something unreadable that the next write must remove.
    journal_garbage: bool,
    /// Why the last status write failed, until one succeeds.
    write_error: Option<Error>,
    status_index: Option<u64>,
    /// ModifyIndex of the config key as the last pass at rest read it.
    last_pass_index: u64,
    started: bool,
    backoff: Backoff,
    passes: u64,
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

/// Everything a pass derives from the document.
struct Loaded {
    spec: ValidatedSpec,
    rendered: Rendered,
    index: u64,
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
        Self {
            config,
            consul: Arc::new(consul),
            nomad,
            probe,
            phase: Phase::Idle,
            applied: None,
            status: ProxyStatus::default(),
            written: ProxyStatus::default(),
            journal_written: None,
            journal_garbage: false,
            write_error: None,
            status_index: None,
            last_pass_index: 0,
            started: false,
            backoff: Backoff::new(MIN_BACKOFF, MAX_BACKOFF),
            passes: 0,
        }
    }

    /// The rollout machine's phase.
    pub fn phase(&self) -> &Phase {
        &self.phase
    }

    /// The status as the operator knows it (written, or waiting to be written again).
    pub fn status(&self) -> &ProxyStatus {
        &self.status
    }

    /// Runs passes until `shutdown` resolves: at start, after each (debounced) change of the
    /// config key, when a pass asks to be requeued, and every resync interval.
    pub async fn run(mut self, shutdown: impl Future<Output = ()> + Send) {
        tokio::pin!(shutdown);
        let (tx, mut changes) = tokio::sync::watch::channel(0u64);
        let watcher = tokio::spawn(watch_config(
            Arc::clone(&self.consul),
            self.config.config_key(),
            self.config.resync.min(MAX_WATCH_WAIT),
            tx,
        ));
        let mut watching = true;
        let mut next_pass = Instant::now();
        'run: loop {
            tokio::select! {
                () = &mut shutdown => break,
                () = tokio::time::sleep_until(next_pass) => {}
                changed = changes.changed(), if watching => {
                    if changed.is_err() {
                        // The watcher ended; keep running on requeues and resyncs.
                        watching = false;
                        continue;
                    }
                    // A quiet period: every further edit restarts it (up to a cap), so a burst
                    // of edits is one pass over the last document, not a rollout of one in the
                    // middle. The watch is paced, so it may not report edits inside the burst:
                    // when the quiet period ends, one read of the key tells whether it moved.
                    let cap = Instant::now() + self.config.debounce * MAX_DEBOUNCE_FACTOR;
                    let mut seen = self.config_index().await;
                    loop {
                        let quiet = (Instant::now() + self.config.debounce).min(cap);
                        tokio::select! {
                            () = &mut shutdown => break 'run,
                            () = tokio::time::sleep_until(quiet) => {
                                let now = self.config_index().await;
                                if now == seen || Instant::now() >= cap {
                                    seen = now;
                                    break;
                                }
                                seen = now;
                            }
                            changed = changes.changed(), if watching => {
                                if changed.is_err() {
                                    watching = false;
                                }
                            }
                        }
                    }
                    changes.borrow_and_update();
                    // The pass after the burst already read this version of the document.
                    if seen.is_some_and(|index| index != 0 && index == self.last_pass_index)
                        && self.phase.is_at_rest()
                        && self.write_error.is_none()
                    {
                        continue;
                    }
                }
            }
            let action = self.reconcile().await;
            next_pass = Instant::now() + action.requeue_after.unwrap_or(self.config.resync);
        }
        watcher.abort();
        info!("operator stopped");
    }

    /// One pass: observe → plan → roll out → effects → status. Never panics on what it reads.
    pub async fn reconcile(&mut self) -> Action {
        self.passes += 1;
        let span = info_span!(
            "reconcile",
            pass = self.passes,
            generation = tracing::field::Empty,
            digest = tracing::field::Empty,
            plan = tracing::field::Empty,
            phase = tracing::field::Empty,
        );
        let action = self.pass().instrument(span.clone()).await;
        span.record("phase", self.phase.name());
        debug!(parent: &span, requeue_after = ?action.requeue_after, status = ?self.status.phase, "pass done");
        action
    }

    async fn pass(&mut self) -> Action {
        if !self.started {
            if let Err(e) = self.load_status().await {
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
        match &self.write_error {
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

    /// Reads, parses, validates and renders the document. `Ok(None)`: nothing to act on (the
    /// status says why); `Err`: back off.
    async fn load(&mut self) -> Result<Option<Loaded>, Action> {
        let key = self.config.config_key();
        let pair = match self.consul.kv_get(&key, QueryOptions::NOW).await {
            Ok((pair, _)) => {
                self.last_pass_index = pair.as_ref().map_or(0, |p| p.modify_index);
                pair
            }
            Err(source) => {
                let e = Error::Consul {
                    what: format!("the config key {key}"),
                    source,
                };
                return Err(self.observation_failed(&e, None).await);
            }
        };
        let Some(pair) = pair else {
            let reason = format!("the config key {key} is absent");
            self.report_plain(0, Report::NoConfig { reason: &reason })
                .await;
            return Ok(None);
        };
        if pair.value.iter().all(u8::is_ascii_whitespace) {
            let reason = format!("the config key {key} is empty");
            self.report_plain(pair.modify_index, Report::NoConfig { reason: &reason })
                .await;
            return Ok(None);
        }
        let spec = match spec::load(&pair.value) {
            Ok(spec) => spec,
            Err(e) => {
                let errors = e.field_errors();
                info!(
                    errors = errors.len(),
                    "the config document is invalid; nothing is changed"
                );
                self.report_plain(pair.modify_index, Report::Invalid { errors: &errors })
                    .await;
                return Ok(None);
            }
        };
        let users = match self.basic_auth_users(&spec).await {
            Ok(users) => users,
            Err(e) => {
                let facts = Facts {
                    index: pair.modify_index,
                    digest: Some(spec.digest().to_owned()),
                    proxy: Some(spec.proxy()),
                    job_version: None,
                    good_job: None,
                    warnings: spec.warnings().to_vec(),
                };
                return Err(self.observation_failed(&e, Some(&facts)).await);
            }
        };
        let ctx = RenderContext {
            prefix: self.config.prefix.clone(),
            owner: self.config.owner.clone(),
            basic_auth_users: users,
        };
        match render::render(&spec, &ctx) {
            Ok(rendered) if rendered.traefik_kv.len() > MAX_POLICY_KEYS => {
                let errors = vec![FieldError::new(
                    "spec",
                    format!(
                        "the Traefik policy tree would have {} keys, more than the {MAX_POLICY_KEYS} one Consul transaction can write atomically (Traefik must never load a half-written tree); use fewer certificates, allow-list ranges or headers",
                        rendered.traefik_kv.len()
                    ),
                )];
                self.report_plain(pair.modify_index, Report::Invalid { errors: &errors })
                    .await;
                Ok(None)
            }
            Ok(rendered) => Ok(Some(Loaded {
                spec,
                rendered,
                index: pair.modify_index,
            })),
            Err(e) => {
                // The same document always renders the same way: report it like a validation
                // error and wait for an edit.
                let errors = vec![FieldError::new("", e.to_string())];
                self.report_plain(pair.modify_index, Report::Invalid { errors: &errors })
                    .await;
                Ok(None)
            }
        }
    }

    async fn basic_auth_users(&self, spec: &ValidatedSpec) -> Result<Option<Vec<String>>> {
        let Some(auth) = spec.basic_auth() else {
            return Ok(None);
        };
        let text = match &auth.users_from {
            UsersFrom::ConsulKey(key) => {
                let what = format!("KV key {key}");
                match self.consul.kv_get(key, QueryOptions::NOW).await {
                    Ok((Some(pair), _)) => {
                        String::from_utf8(pair.value).map_err(|_| Error::Secret {
                            reference: what.clone(),
                            reason: "not UTF-8".into(),
                        })?
                    }
                    Ok((None, _)) => {
                        return Err(Error::Secret {
                            reference: what,
                            reason: "absent".into(),
                        });
                    }
                    Err(source) => return Err(Error::Consul { what, source }),
                }
            }
            UsersFrom::File(path) => {
                tokio::fs::read_to_string(path)
                    .await
                    .map_err(|e| Error::Secret {
                        reference: format!("file {path}"),
                        reason: e.kind().to_string(),
                    })?
            }
        };
        let users = text
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
            .map(str::to_owned)
            .collect();
        Ok(Some(users))
    }

    async fn at_rest(&mut self) -> Action {
        let loaded = match self.load().await {
            Ok(Some(loaded)) => loaded,
            Ok(None) => return Action::await_change(),
            Err(action) => return action,
        };
        let span = tracing::Span::current();
        span.record("generation", loaded.index);
        span.record("digest", short(loaded.spec.digest()));
        let kv_root = self.config.kv_root();
        let desired = Desired {
            spec: &loaded.spec,
            rendered: &loaded.rendered,
            owner: &self.config.owner,
            kv_root: &kv_root,
        };
        let job_id = plan::job_id(&desired).to_owned();
        let observed = match self.observe_at_rest(&job_id, &kv_root).await {
            Ok(observed) => observed,
            Err(e) => {
                let facts = Facts::of(&loaded, None);
                return self.observation_failed(&e, Some(&facts)).await;
            }
        };
        self.backoff.reset();
        let job_version = observed.job.as_ref().map(|j| j.version);
        let decided = plan::plan(&desired, &observed, &self.status);
        span.record("plan", decided.kind());
        let mut facts = Facts::of(&loaded, job_version);
        match decided {
            Plan::Noop => {
                // What runs carries a document that passed the gate: a rollback target.
                facts.good_job = observed.job.as_ref().map(|job| JobRef {
                    job_id: job_id.clone(),
                    version: job.version,
                    job_digest: job.spec_digest().map(str::to_owned),
                });
                self.report(&facts.pass(Report::Converged)).await;
                Action::await_change()
            }
            Plan::Hold(reason) => {
                let text = reason.to_string();
                let report = match reason {
                    HoldReason::Paused => Report::Paused,
                    HoldReason::FailedDigest { .. } => Report::Held {
                        reason: &text,
                        drift: false,
                    },
                    HoldReason::Drift { .. } => Report::Held {
                        reason: &text,
                        drift: true,
                    },
                    HoldReason::JobTypeChange { .. } => {
                        warn!(reason = %text, "the document changes the job type; held");
                        Report::Blocked {
                            cause: "JobTypeChange",
                            reason: &text,
                        }
                    }
                };
                self.report(&facts.pass(report)).await;
                Action::await_change()
            }
            Plan::Stalled { reason } => {
                warn!(%reason, "the proxy job is not ours; it is left untouched");
                self.report(&facts.pass(Report::Stalled { reason: &reason }))
                    .await;
                Action::await_change()
            }
            Plan::Apply(mut change) => {
                info!(kind = change.kind(), digest = %short(&change.digest), "rolling out");
                change.gate.proxy_api = (loaded.spec.proxy() == ProxyKind::Traefik)
                    .then(|| self.proxy_api(&loaded.spec));
                change.gate.probes =
                    crate::probe::route_probes(&loaded.spec, &self.config.proxy_host);
                let obs = Observation {
                    planned: Some(*change),
                    ..Observation::default()
                };
                self.drive(obs, &facts).await
            }
        }
    }

    async fn in_flight(&mut self) -> Action {
        let Some(change) = self.phase.change().cloned() else {
            return Action::await_change();
        };
        let span = tracing::Span::current();
        span.record("digest", short(&change.digest));
        span.record("plan", change.kind());
        let mut obs = self.observe_gate(&change).await;
        let blind = obs.error.is_some();
        if !blind {
            self.backoff.reset();
        }
        obs.applied = self.applied.take();
        let facts = Facts::unchanged(&self.status);
        let action = self.drive(obs, &facts).await;
        if blind && !self.phase.is_at_rest() {
            // Nomad does not answer: look again, but not four times a second.
            let retry = self.backoff.next().unwrap_or(MAX_BACKOFF);
            return Action::requeue(action.requeue_after.map_or(retry, |d| d.max(retry)));
        }
        action
    }

    /// Steps the machine, carries out its effects, and reports.
    async fn drive(&mut self, obs: Observation, facts: &Facts) -> Action {
        let before = self.phase.clone();
        let (mut effects, mut phase) = rollout::step(&self.phase, &obs, Instant::now());
        if before.is_at_rest() && !phase.is_at_rest() {
            // Write-ahead: a rollout starts only once its journal is in Consul, so a restart
            // resumes it rather than mistaking its unverified version for a good one. A status
            // that cannot be written (a 403 on the status key) therefore starts nothing.
            let status = self.status.clone();
            self.phase = phase.clone();
            self.report(&facts.pass(Report::Rollout(&phase))).await;
            if let Some(e) = self.write_error.take() {
                warn!(error = %e, "the rollout is not started: its status cannot be written");
                self.phase = before;
                self.status = status;
                let terminal = !e.is_retryable();
                let text = format!("{e}; no rollout starts until the status can be written");
                let report = Report::ObservationFailed {
                    error: &text,
                    retry_in: if terminal {
                        TERMINAL_RETRY
                    } else {
                        MIN_BACKOFF
                    },
                    terminal,
                };
                // Most likely not written either; kept in memory for /api/status and logs.
                self.report(&facts.pass(report)).await;
                if self.write_error.is_none() {
                    self.write_error = Some(e);
                }
                return Action::await_change();
            }
        }
        let mut requeue = None;
        let mut failed = false;
        // Applying and RollingBack consume the outcome of their own effects: step them again at
        // once rather than a poll later, so a rollout or rollback finishes within one pass.
        for _ in 0..4 {
            requeue = effects.iter().find_map(|e| match e {
                Effect::RequeueAfter(d) => Some(*d),
                _ => None,
            });
            let writes: Vec<Effect> = effects.iter().filter(|e| e.is_write()).cloned().collect();
            if writes.is_empty() {
                break;
            }
            if self.journal_changed(&phase) {
                // Best effort: a rollback goes ahead even when its journal cannot be written.
                self.phase = phase.clone();
                self.report(&facts.pass(Report::Rollout(&phase))).await;
            }
            let outcome = self.execute(&writes).await;
            let consumes = matches!(phase, Phase::Applying { .. } | Phase::RollingBack { .. });
            if !consumes {
                break;
            }
            if outcome.error.is_some() {
                failed = true;
                self.applied = Some(outcome);
                break;
            }
            let next_obs = Observation {
                applied: Some(outcome),
                ..Observation::default()
            };
            (effects, phase) = rollout::step(&phase, &next_obs, Instant::now());
        }
        let changed = phase != before;
        self.phase = phase;
        let phase = self.phase.clone();
        if changed || !phase.is_at_rest() {
            self.report(&facts.pass(Report::Rollout(&phase))).await;
        }
        if failed {
            return self.backoff_action();
        }
        if !before.is_at_rest() && phase.is_at_rest() {
            // The rollout ended: look at the document again at once, since an edit made while
            // it ran has not been planned yet.
            return Action::requeue(Duration::ZERO);
        }
        match requeue {
            Some(d) => Action::requeue(d),
            None if !self.phase.is_at_rest() => Action::requeue(rollout::VERIFY_POLL_INTERVAL),
            None => Action::await_change(),
        }
    }

    fn journal_changed(&self, phase: &Phase) -> bool {
        let next = phase.journal(Instant::now(), SystemTime::now());
        match (&next, &self.journal_written) {
            (Some(a), Some(b)) => !a.same_stage(b),
            (None, None) => false,
            _ => true,
        }
    }

    async fn execute(&self, writes: &[Effect]) -> ApplyOutcome {
        for (i, effect) in writes.iter().enumerate() {
            let result = match effect {
                Effect::WriteKv { set, delete } | Effect::RestoreKv { set, delete } => {
                    self.write_kv(set, delete).await
                }
                Effect::RegisterJob {
                    job_id,
                    job,
                    job_digest,
                    enforce_index,
                } => {
                    info!(job = %job_id, enforce_index, "registering the proxy job");
                    match self.nomad.job_register(job, Some(*enforce_index)).await {
                        Ok(_) => Ok(()),
                        Err(e) => self.landed(job_id, Some(job_digest), &e, "register").await,
                    }
                }
                Effect::RevertJob {
                    job_id,
                    version,
                    enforce_prior_version,
                    target_digest,
                } => {
                    info!(job = %job_id, version, ?enforce_prior_version, "reverting the proxy job");
                    match self
                        .nomad
                        .job_revert(job_id, *version, *enforce_prior_version)
                        .await
                    {
                        Ok(_) => Ok(()),
                        Err(e) => {
                            self.landed(job_id, target_digest.as_ref(), &e, "revert")
                                .await
                        }
                    }
                }
                Effect::RequeueAfter(_) => Ok(()),
            };
            if let Err(error) = result {
                warn!(effect = effect_name(effect), error = %error.message, retryable = error.retryable, "effect failed");
                return ApplyOutcome {
                    completed: i,
                    error: Some(error),
                };
            }
        }
        ApplyOutcome::all(writes.len())
    }

    /// A job write answered with an error may still have landed: the answer was lost and the
    /// retry hit our own write (`EnforceIndex` / `EnforcePriorVersion` conflict), or a timeout
    /// hid a success. The job read back decides: when it carries `digest`, the write is done.
    async fn landed(
        &self,
        job_id: &str,
        digest: Option<&String>,
        error: &nomad::Error,
        what: &str,
    ) -> Result<(), ApplyError> {
        let failed = apply_error(&error.to_string(), error.is_retryable());
        let Some(digest) = digest else {
            return Err(failed);
        };
        match self.nomad.job_read(job_id, QueryOptions::NOW).await {
            Ok((Some(job), _)) if job.meta.get(META_SPEC_DIGEST) == Some(digest) => {
                info!(job = %job_id, version = job.version, error = %error, "the {what} landed although its answer was an error");
                Ok(())
            }
            Ok(_) => Err(failed),
            // Nobody knows whether it landed: try again rather than decide on a guess.
            Err(_) => Err(ApplyError {
                retryable: true,
                ..failed
            }),
        }
    }

    /// Writes the policy entries in one transaction (TRAEFIK.md B: Traefik applies a half-written
    /// tree, so one txn is the only safe way). A change with more operations than a transaction
    /// holds rewrites the whole subtree instead (delete-tree, then every entry), which fits as
    /// long as the tree does: [`MAX_POLICY_KEYS`] is enforced when the document is loaded.
    async fn write_kv(
        &self,
        set: &[(String, String)],
        delete: &[String],
    ) -> Result<(), ApplyError> {
        info!(
            set = set.len(),
            delete = delete.len(),
            "writing the policy tree"
        );
        let ops: Vec<TxnOp> = if set.len() + delete.len() <= TXN_MAX_OPS {
            set.iter()
                .map(|(key, value)| TxnOp::Set {
                    key: key.clone(),
                    value: value.clone().into_bytes(),
                })
                .chain(delete.iter().map(|key| TxnOp::Delete { key: key.clone() }))
                .collect()
        } else {
            self.rewrite_ops(set, delete).await?
        };
        self.consul
            .txn(ops)
            .await
            .map(|_| ())
            .map_err(|e| apply_error(&e.to_string(), e.is_retryable()))
    }

    /// The whole subtree after applying `set` and `delete`, as one delete-tree + sets.
    async fn rewrite_ops(
        &self,
        set: &[(String, String)],
        delete: &[String],
    ) -> Result<Vec<TxnOp>, ApplyError> {
        let root = self.config.kv_root();
        let (pairs, _) = self
            .consul
            .kv_list(&root, QueryOptions::NOW)
            .await
            .map_err(|e| apply_error(&e.to_string(), e.is_retryable()))?;
        let mut tree: std::collections::BTreeMap<String, Vec<u8>> = pairs
            .into_iter()
            .filter(|p| p.key.starts_with(&root))
            .map(|p| (p.key, p.value))
            .collect();
        for key in delete {
            tree.remove(key);
        }
        for (key, value) in set {
            tree.insert(key.clone(), value.clone().into_bytes());
        }
        if tree.len() >= TXN_MAX_OPS {
            return Err(apply_error(
                &format!(
                    "failed to write the policy tree: {} keys do not fit one Consul transaction ({TXN_MAX_OPS} operations)",
                    tree.len()
                ),
                false,
            ));
        }
        info!(
            keys = tree.len(),
            "the change exceeds one transaction; rewriting the whole policy tree"
        );
        Ok(std::iter::once(TxnOp::DeleteTree { key: root })
            .chain(
                tree.into_iter()
                    .map(|(key, value)| TxnOp::Set { key, value }),
            )
            .collect())
    }

    async fn observe_at_rest(&self, job_id: &str, kv_root: &str) -> Result<Observed> {
        let (job, _) = self
            .nomad
            .job_read(job_id, QueryOptions::NOW)
            .await
            .map_err(|source| Error::Nomad {
                what: format!("the proxy job {job_id}"),
                source,
            })?;
        let (pairs, _) = self
            .consul
            .kv_list(kv_root, QueryOptions::NOW)
            .await
            .map_err(|source| Error::Consul {
                what: format!("the policy tree {kv_root}"),
                source,
            })?;
        let kv = pairs
            .into_iter()
            .filter(|p| p.key.starts_with(kv_root))
            .map(|p| (p.key, String::from_utf8_lossy(&p.value).into_owned()))
            .collect();
        let job = job.map(|j| ObservedJob {
            version: j.version,
            modify_index: j.job_modify_index,
            meta: j.meta,
            stopped: j.stop,
            job_type: Some(j.job_type),
        });
        Ok(Observed { job, kv })
    }

    /// Reads every gate signal of `change`. Nomad failing is an observation error (decide
    /// nothing); the proxy failing to answer is a gate signal (it is unhealthy).
    async fn observe_gate(&self, change: &Change) -> Observation {
        let job_id = change.job_id.as_str();
        let mut obs = Observation::default();
        // Traefik reads our policy from Consul: while Consul does not answer, the gate cannot be
        // judged fairly, so the machine is blind (the deadline stops counting). Only whether
        // Consul answers matters here, not what the document says now.
        let key = self.config.config_key();
        if let Err(source) = self.consul.kv_get(&key, QueryOptions::NOW).await {
            let e = Error::Consul {
                what: format!("the config key {key}"),
                source,
            };
            obs.error = Some(e.to_string());
            return obs;
        }
        let nomad = async {
            let what = |w: &str| format!("{w} of the proxy job {job_id}");
            let (job, _) = self
                .nomad
                .job_read(job_id, QueryOptions::NOW)
                .await
                .map_err(|source| Error::Nomad {
                    what: what("the job"),
                    source,
                })?;
            let (deployment, _) = self
                .nomad
                .job_latest_deployment(job_id, QueryOptions::NOW)
                .await
                .map_err(|source| Error::Nomad {
                    what: what("the latest deployment"),
                    source,
                })?;
            let (allocs, _) = self
                .nomad
                .job_allocations(job_id, QueryOptions::NOW)
                .await
                .map_err(|source| Error::Nomad {
                    what: what("the allocations"),
                    source,
                })?;
            Ok::<_, Error>((job, deployment, allocs))
        };
        match nomad.await {
            Err(e) => {
                obs.error = Some(e.to_string());
                return obs;
            }
            Ok((job, deployment, allocs)) => {
                obs.job = job.map(|j| JobObservation {
                    version: j.version,
                    modify_index: j.job_modify_index,
                    spec_digest: j.meta.get(META_SPEC_DIGEST).cloned(),
                    stopped: j.stop,
                });
                obs.deployment = deployment.map(|d| DeploymentObservation {
                    state: DeploymentState::from_nomad(&d.status),
                    id: d.id,
                    job_version: d.job_version,
                    description: d.status_description,
                });
                obs.allocations = allocs.into_iter().map(alloc_observation).collect();
            }
        }
        obs.proxy = Some(self.observe_proxy(&change.gate).await);
        obs
    }

    async fn observe_proxy(&self, gate: &Gate) -> ProxyObservation {
        let mut proxy = ProxyObservation::default();
        if let Some(api) = &gate.proxy_api {
            proxy.ping_ok = self.probe.ping(api).await.unwrap_or(false);
            proxy.rawdata = self.probe.rawdata(api).await.ok();
        }
        for route in &gate.probes {
            let outcome = match self.probe.route(route).await {
                Ok(code) => ProbeOutcome {
                    name: route.name(),
                    ok: code == route.expect_status,
                    detail: format!("got {code}, want {}", route.expect_status),
                },
                Err(e) => ProbeOutcome {
                    name: route.name(),
                    ok: false,
                    detail: e.to_string(),
                },
            };
            proxy.probes.push(outcome);
        }
        proxy
    }

    fn proxy_api(&self, spec: &ValidatedSpec) -> String {
        if let Some(api) = &self.config.proxy_api {
            return api.clone();
        }
        let port = spec
            .dashboard_address()
            .map(|a| a.port)
            .or_else(|| {
                spec::ListenAddress::parse(&spec.dashboard().address)
                    .ok()
                    .map(|a| a.port)
            })
            .unwrap_or(8080);
        format!("http://{}:{port}", self.config.proxy_host)
    }

    /// Reports an observation error at rest and backs off; 401/403 back off to a long interval,
    /// since only a new token or policy fixes them.
    async fn observation_failed(&mut self, e: &Error, facts: Option<&Facts>) -> Action {
        let action = self.retry_after(e);
        let retry_in = action.requeue_after.unwrap_or(MIN_BACKOFF);
        let terminal = !e.is_retryable();
        warn!(error = %e, retry_in = ?retry_in, terminal, "observation failed; the proxy is left as it is");
        let text = e.to_string();
        let facts = match facts {
            Some(facts) => facts.clone(),
            None => Facts::unchanged(&self.status),
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

    /// Builds the next status and writes it (with the in-flight journal) when it says something
    /// new. The status the operator knows moves on even when the write fails; the write is
    /// retried on later passes.
    async fn report(&mut self, pass: &Pass<'_>) {
        let next = status::next(&self.status, pass, SystemTime::now());
        self.status = next;
        self.flush().await;
    }

    async fn flush(&mut self) {
        let journal = self.phase.journal(Instant::now(), SystemTime::now());
        let journal_changed = self.journal_garbage
            || match (&journal, &self.journal_written) {
                (Some(a), Some(b)) => !a.same_stage(b),
                (None, None) => false,
                _ => true,
            };
        if !journal_changed && !status::differs(&self.written, &self.status) {
            self.write_error = None;
            return;
        }
        self.status.updated_at = Some(status::rfc3339(SystemTime::now()));
        let status = self.status.clone();
        match self
            .write_status(&status, journal.as_ref(), journal_changed)
            .await
        {
            Ok(()) => {
                self.written = status;
                self.journal_written = journal;
                self.journal_garbage = false;
                self.write_error = None;
            }
            Err(e) => {
                warn!(error = %e, "status not written; retrying on a later pass");
                self.write_error = Some(e);
            }
        }
    }

    /// The config key's ModifyIndex now (`None`: absent or unreadable).
    async fn config_index(&self) -> Option<u64> {
        match self
            .consul
            .kv_get(&self.config.config_key(), QueryOptions::NOW)
            .await
        {
            Ok((pair, _)) => pair.map(|p| p.modify_index),
            Err(_) => None,
        }
    }

    async fn load_status(&mut self) -> Result<()> {
        let key = self.config.status_key();
        let (pair, _) = self
            .consul
            .kv_get(&key, QueryOptions::NOW)
            .await
            .map_err(|source| Error::Consul {
                what: format!("the status document {key}"),
                source,
            })?;
        let journal_key = self.config.journal_key();
        let (journal, _) = self
            .consul
            .kv_get(&journal_key, QueryOptions::NOW)
            .await
            .map_err(|source| Error::Consul {
                what: format!("the rollout journal {journal_key}"),
                source,
            })?;
        match pair {
            Some(pair) => {
                // An unreadable status (hand-edited, older schema) is replaced, not fatal.
                self.status = serde_json::from_slice(&pair.value).unwrap_or_default();
                self.written = self.status.clone();
                self.status_index = Some(pair.modify_index);
            }
            None => self.status_index = Some(0),
        }
        if let Some(pair) = journal {
            let parsed = serde_json::from_slice::<Journal>(&pair.value)
                .map_err(|e| e.to_string())
                .and_then(|j| {
                    j.check(&self.config.owner, &self.config.kv_root())
                        .map(|()| j)
                        .map_err(|e| e.to_string())
                });
            let parsed = match parsed {
                Ok(journal) => self.trust_journal(journal).await?,
                Err(e) => Err(e),
            };
            match parsed {
                Ok(journal) if self.phase.is_at_rest() => {
                    info!(
                        digest = %short(&journal.change.digest),
                        kind = journal.change.kind(),
                        "resuming the rollout an earlier operator left in flight"
                    );
                    self.phase = Phase::resume(journal.clone(), Instant::now(), SystemTime::now());
                    self.journal_written = Some(journal);
                }
                Ok(_) => {}
                Err(e) => {
                    // Without it the plan still re-verifies what runs before calling it Ready.
                    warn!(error = %e, "the rollout journal is unreadable or untrusted; it is dropped and what runs is verified again");
                    self.journal_garbage = true;
                }
            }
        }
        Ok(())
    }

    /// The checks on a journal that need the document and Nomad: it must be about the job the
    /// document names (when the document still loads), and that job, if it exists, must carry
    /// our owner Meta before anything registers or reverts it. `Err`: Nomad or Consul could not
    /// be read (back off); `Ok(Err)`: the journal is not trusted.
    async fn trust_journal(
        &self,
        journal: Journal,
    ) -> Result<std::result::Result<Journal, String>> {
        let job_id = journal.change.job_id.clone();
        let key = self.config.config_key();
        let (doc, _) = self
            .consul
            .kv_get(&key, QueryOptions::NOW)
            .await
            .map_err(|source| Error::Consul {
                what: format!("the config key {key}"),
                source,
            })?;
        // A deleted or broken document does not stop a rollout in flight (it runs on its own
        // terms), so only a document that loads can contradict the journal.
        if let Some(spec) = doc.and_then(|p| spec::load(&p.value).ok())
            && spec.job().id != job_id
        {
            return Ok(Err(format!(
                "it rolls out job {job_id:?}, but the document names job {:?}",
                spec.job().id
            )));
        }
        let (job, _) = self
            .nomad
            .job_read(&job_id, QueryOptions::NOW)
            .await
            .map_err(|source| Error::Nomad {
                what: format!("the proxy job {job_id}"),
                source,
            })?;
        if let Some(job) = job
            && job.meta.get(META_OWNER) != Some(&self.config.owner)
        {
            return Ok(Err(format!(
                "job {job_id:?} does not carry our {META_OWNER} Meta"
            )));
        }
        Ok(Ok(journal))
    }

    /// CAS write of the status, with the journal set or removed in the same transaction; on a
    /// conflict re-reads the index and tries again (our content wins: the operator is the status
    /// document's only writer, a conflict means a stale index).
    async fn write_status(
        &mut self,
        status: &ProxyStatus,
        journal: Option<&Journal>,
        journal_changed: bool,
    ) -> Result<()> {
        let key = self.config.status_key();
        let mut value = serde_json::to_vec_pretty(status).unwrap_or_default();
        value.push(b'\n');
        let journal_op = journal_changed.then(|| {
            let key = self.config.journal_key();
            match journal.map(serde_json::to_vec) {
                Some(Ok(value)) => TxnOp::Set { key, value },
                _ => TxnOp::Delete { key },
            }
        });
        for _ in 0..3 {
            let index = self.status_index.unwrap_or(0);
            let mut ops = vec![TxnOp::Cas {
                key: key.clone(),
                value: value.clone(),
                index,
            }];
            ops.extend(journal_op.clone());
            match self.consul.txn(ops).await {
                Ok(results) => {
                    let written = results
                        .results
                        .iter()
                        .find(|p| p.key == key)
                        .map(|p| p.modify_index);
                    self.status_index = written.or(Some(index));
                    if written.is_none() {
                        // Without the new index the next CAS would conflict: read it.
                        let _ = self.load_status_index().await;
                    }
                    return Ok(());
                }
                Err(e) if e.is_conflict() => {
                    debug!("status CAS conflict; re-reading its index");
                    self.load_status_index().await?;
                }
                Err(source) => return Err(Error::WriteStatus { key, source }),
            }
        }
        Err(Error::StatusConflict { key })
    }

    async fn load_status_index(&mut self) -> Result<()> {
        let key = self.config.status_key();
        let (pair, _) = self
            .consul
            .kv_get(&key, QueryOptions::NOW)
            .await
            .map_err(|source| Error::Consul {
                what: format!("the status document {key}"),
                source,
            })?;
        self.status_index = Some(pair.map_or(0, |p| p.modify_index));
        Ok(())
    }
}

/// Watches the config key with blocking queries and signals each change.
async fn watch_config<C: ConsulApi>(
    consul: Arc<C>,
    key: String,
    wait: Duration,
    tx: tokio::sync::watch::Sender<u64>,
) {
    let mut watch = Watch::new(wait);
    let mut backoff = Backoff::new(MIN_BACKOFF, MAX_BACKOFF);
    loop {
        match watch.next(|q| consul.kv_get(&key, q)).await {
            Ok(update) => {
                backoff.reset();
                if matches!(
                    update.change,
                    crate::transport::Change::Advanced | crate::transport::Change::Reset
                ) {
                    debug!(index = update.meta.index, "config key changed");
                    if tx.send(update.meta.index).is_err() {
                        return;
                    }
                }
            }
            Err(e) => {
                let delay = backoff.next().unwrap_or(MAX_BACKOFF);
                debug!(error = %e, ?delay, "config watch failed; retrying");
                tokio::time::sleep(delay).await;
                // The error may have hidden a change: read at once next time, and let the loop
                // look once Consul answers again.
                watch.reset();
                if tx.send(0).is_err() {
                    return;
                }
            }
        }
    }
}

fn alloc_observation(a: nomad::AllocationStub) -> AllocObservation {
    let tasks_running =
        !a.task_states.is_empty() && a.task_states.values().all(|t| t.state == "running");
    // A failed task first: its events say why the allocation failed.
    let task_detail = a
        .task_states
        .iter()
        .filter(|(_, t)| t.state != "running")
        .max_by_key(|(_, t)| t.failed)
        .map(|(name, t)| task_summary(name, t));
    AllocObservation {
        id: a.id,
        job_version: a.job_version,
        desired_status: a.desired_status,
        client_status: a.client_status,
        tasks_running,
        task_detail,
    }
}

/// `task traefik dead (failed, 2 restarts): Not Restarting: Exceeded allowed attempts ...;
/// Terminated: Exit Code: 1`: the last event, and the last event that says what went wrong
/// (a driver failure, an exit) when the last one only says what Nomad did about it.
fn task_summary(name: &str, t: &nomad::TaskState) -> String {
    let text = |e: &nomad::TaskEvent| {
        let message = if e.display_message.is_empty() {
            e.message.as_str()
        } else {
            e.display_message.as_str()
        };
        if message.is_empty() {
            e.event_type.clone()
        } else {
            format!("{}: {message}", e.event_type)
        }
    };
    let mut out = format!("task {name} {}", t.state);
    if t.failed {
        out.push_str(&format!(" (failed, {} restarts)", t.restarts));
    }
    let Some(last) = t.events.last() else {
        return out;
    };
    out.push_str(": ");
    out.push_str(&text(last));
    let is_cause = |e: &nomad::TaskEvent| {
        matches!(
            e.event_type.as_str(),
            "Driver Failure" | "Terminated" | "Failed Validation" | "Setup Failure" | "Killed"
        )
    };
    if !is_cause(last)
        && let Some(cause) = t.events.iter().rev().find(|e| is_cause(e))
    {
        out.push_str("; ");
        out.push_str(&text(cause));
    }
    out
}

fn apply_error(message: &str, retryable: bool) -> ApplyError {
    ApplyError {
        message: message.to_owned(),
        retryable,
    }
}

fn effect_name(effect: &Effect) -> &'static str {
    match effect {
        Effect::WriteKv { .. } => "write-kv",
        Effect::RegisterJob { .. } => "register-job",
        Effect::RestoreKv { .. } => "restore-kv",
        Effect::RevertJob { .. } => "revert-job",
        Effect::RequeueAfter(_) => "requeue",
    }
}

fn short(digest: &str) -> &str {
    digest.get(..12).unwrap_or(digest)
}
