//! Prometheus metrics of the operator, in OpenMetrics text (`prometheus-client`).
//!
//! One cheap, cloneable [`Metrics`] handle owns the registry. Its recording methods are named for
//! what the loop and the HTTP clients observe (`pass_completed`, `rollout_finished`, `phase`,
//! `api_request`, ...), so wiring a call site is one line and no caller ever touches a metric
//! type. Every name carries the `proxy_operator_` prefix and its unit (`_seconds`), counters end
//! in `_total`, and every label value comes from a closed set or is sanitised, so a scrape can
//! neither explode in cardinality nor carry a secret.
//!
//! Certificate expiry is read from the PEM files of `certDir` with `x509-parser`:
//! [`certificates_from_pem`] is the pure part, [`scan_cert_dir`] the IO around it. What the
//! proxy actually serves per host (`certificate_fallback`, `served_certificate_expiry_seconds`)
//! comes from the loop's look at its TLS entry point ([`crate::proxy::served_cert`]), at most
//! [`MAX_HOSTS`](crate::proxy::served_cert::MAX_HOSTS) hosts, replaced at each look.

use std::path::PathBuf;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::metrics::info::Info;
use prometheus_client::registry::{Metric, Registry, Unit};

use crate::spec::status::{Outcome, Phase};

mod certs;
pub mod probe;

/// A self-signed certificate and its key (PEM), for the tests of other modules.
#[cfg(test)]
pub(crate) use certs::tests::cert_pem as test_cert_pem;
pub use certs::{
    CertificateFile, CertificateInfo, Urgency, certificate_from_der, certificates_from_pem,
    scan_cert_dir,
};

/// `Content-Type` of [`Metrics::encode`]'s output.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Errors of this module.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The registry could not be written as text (a formatter error; never expected).
    #[error("failed to encode the metrics: {0}")]
    Encode(#[source] std::fmt::Error),
    /// A PEM block labelled `CERTIFICATE` did not parse as X.509.
    #[error("failed to parse certificate {index} of the PEM data: {reason}")]
    Certificate {
        /// Position of the block among the certificates (0 = the first).
        index: usize,
        /// What x509-parser reported.
        reason: String,
    },
    /// The data was not PEM at all.
    #[error("failed to read PEM data: {0}")]
    Pem(String),
    /// Listing `certDir` failed.
    #[error("failed to read the certificate directory {dir}: {source}")]
    CertDir {
        /// The directory.
        dir: PathBuf,
        /// The IO error.
        #[source]
        source: std::io::Error,
    },
}

/// Result alias of this module.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Which API a request went to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Api {
    /// Consul's HTTP API.
    Consul,
    /// Nomad's HTTP API.
    Nomad,
    /// The proxy's own API (Traefik `/api`, Caddy admin).
    Proxy,
}

impl Api {
    fn as_str(self) -> &'static str {
        match self {
            Api::Consul => "consul",
            Api::Nomad => "nomad",
            Api::Proxy => "proxy",
        }
    }
}

/// How one reconcile pass ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PassOutcome<'a> {
    /// The pass ran to its end (whatever it decided).
    Ok,
    /// The pass failed; the reason is a short machine word such as `consul`, `nomad`,
    /// `secret` or `status_write` (the error variant), never an error message.
    Error(&'a str),
}

/// The stages of one rollout whose durations [`Metrics::rollout_finished`] records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RolloutStage {
    /// Observe, render and plan.
    Plan,
    /// Write KV and register the job.
    Apply,
    /// The health gate.
    Verify,
    /// Revert the job and restore KV.
    Rollback,
}

impl RolloutStage {
    fn as_str(self) -> &'static str {
        match self {
            RolloutStage::Plan => "plan",
            RolloutStage::Apply => "apply",
            RolloutStage::Verify => "verify",
            RolloutStage::Rollback => "rollback",
        }
    }
}

/// Measures how long one rollout spends in each stage, for [`Metrics::rollout_finished`]. The
/// loop calls [`RolloutTimer::enter`] when the rollout's state machine moves to a new stage
/// (with the same clock it steps the machine with) and [`RolloutTimer::finish`] when it ends.
#[derive(Debug, Clone, Default)]
pub struct RolloutTimer {
    current: Option<(RolloutStage, std::time::Instant)>,
    spent: Vec<(RolloutStage, Duration)>,
}

impl RolloutTimer {
    /// Starts timing `stage` at `now`, closing the stage before it. Entering the stage it is
    /// already in changes nothing.
    pub fn enter(&mut self, stage: RolloutStage, now: std::time::Instant) {
        match self.current {
            Some((s, _)) if s == stage => {}
            _ => {
                self.close(now);
                self.current = Some((stage, now));
            }
        }
    }

    fn close(&mut self, now: std::time::Instant) {
        if let Some((stage, since)) = self.current.take() {
            let took = now.saturating_duration_since(since);
            match self.spent.iter_mut().find(|(s, _)| *s == stage) {
                Some((_, total)) => *total += took,
                None => self.spent.push((stage, took)),
            }
        }
    }

    /// Closes the last stage at `now` and records the rollout with its outcome.
    pub fn finish(mut self, outcome: Outcome, now: std::time::Instant, metrics: &Metrics) {
        self.close(now);
        metrics.rollout_finished(outcome, &self.spent);
    }
}

/// Every phase, in the order the state gauge lists them.
pub const PHASES: [Phase; 8] = [
    Phase::Pending,
    Phase::Progressing,
    Phase::Ready,
    Phase::Degraded,
    Phase::RolledBack,
    Phase::Invalid,
    Phase::Paused,
    Phase::Stalled,
];

/// The label value of a phase (its name in the status document).
#[must_use]
pub fn phase_name(phase: Phase) -> &'static str {
    match phase {
        Phase::Pending => "Pending",
        Phase::Progressing => "Progressing",
        Phase::Ready => "Ready",
        Phase::Degraded => "Degraded",
        Phase::RolledBack => "RolledBack",
        Phase::Invalid => "Invalid",
        Phase::Paused => "Paused",
        Phase::Stalled => "Stalled",
    }
}

/// The label value of a rollout outcome.
#[must_use]
pub fn outcome_name(outcome: Outcome) -> &'static str {
    match outcome {
        Outcome::Succeeded => "succeeded",
        Outcome::RolledBack => "rolled_back",
        Outcome::Failed => "failed",
        Outcome::Held => "held",
    }
}

/// The endpoint class of an API path: the first segment after `/v1/` (`/v1/kv/a/b` → `kv`,
/// `/v1/job/x/versions` → `job`), or the first segment for the proxy's API. Keys, job IDs and
/// service names never become labels.
#[must_use]
pub fn endpoint_class(path: &str) -> &str {
    let path = path.split(['?', '#']).next().unwrap_or_default();
    let rest = path.trim_start_matches('/');
    let rest = rest.strip_prefix("v1/").unwrap_or(rest);
    let first = rest.split('/').next().unwrap_or_default();
    if first.is_empty() { "root" } else { first }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabel {
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabel {
    reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StageLabel {
    phase: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    api: &'static str,
    class: String,
    code: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct LatencyLabels {
    api: &'static str,
    class: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct WatchLabel {
    watch: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct FileLabel {
    file: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct HostLabel {
    host: String,
}

/// What the proxy served for one host at the last look ([`crate::proxy::served_cert`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServedCertificate {
    /// The SNI asked for.
    pub host: String,
    /// The proxy served its fallback, another certificate, or none.
    pub fallback: bool,
    /// notAfter of what was served (unix seconds), when something was.
    pub not_after: Option<i64>,
}

type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

/// Rollout stages run from milliseconds (a KV write) to many minutes (a slow gate).
fn rollout_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.05, 2.0, 14))
}

/// API calls run from sub-millisecond (loopback) to the 5-minute blocking query.
fn latency_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.001, 2.0, 19))
}

struct Inner {
    registry: Registry,
    passes: Family<OutcomeLabel, Counter>,
    pass_errors: Family<ReasonLabel, Counter>,
    rollouts: Family<OutcomeLabel, Counter>,
    rollout_duration: HistogramFamily<StageLabel>,
    phase: Family<StageLabel, Gauge>,
    leader: Gauge,
    leader_changes: Counter,
    requests: Family<RequestLabels, Counter>,
    request_duration: HistogramFamily<LatencyLabels>,
    watch_wakeups: Family<WatchLabel, Counter>,
    generation: Gauge,
    modify_index: Gauge,
    last_digest: Mutex<Option<String>>,
    cert_expiry: Family<FileLabel, Gauge<f64, AtomicU64>>,
    cert_not_after: Mutex<Vec<(String, i64)>>,
    served_fallback: Family<HostLabel, Gauge>,
    served_expiry: Family<HostLabel, Gauge<f64, AtomicU64>>,
    served: Mutex<Vec<ServedCertificate>>,
}

/// The operator's metrics: a cheap handle to one registry, shared by the loop, the clients and
/// the HTTP server (clone it freely).
#[derive(Clone)]
pub struct Metrics {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// A registry with every metric registered (all at zero, phase `Pending`, not leader).
    #[must_use]
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("proxy_operator");
        let r = &mut registry;
        let passes = registered(
            r,
            "reconcile_passes",
            "Reconcile passes, by outcome (ok or error)",
            None,
            Family::<OutcomeLabel, Counter>::default(),
        );
        let pass_errors = registered(
            r,
            "reconcile_errors",
            "Failed reconcile passes, by reason",
            None,
            Family::<ReasonLabel, Counter>::default(),
        );
        let rollouts = registered(
            r,
            "rollouts",
            "Finished rollouts, by outcome (succeeded, rolled_back, failed, held)",
            None,
            Family::<OutcomeLabel, Counter>::default(),
        );
        let rollout_duration: HistogramFamily<StageLabel> = registered(
            r,
            "rollout_phase_duration",
            "Time a rollout spent in each phase (plan, apply, verify, rollback)",
            Some(Unit::Seconds),
            Family::new_with_constructor(rollout_histogram),
        );
        let phase = registered(
            r,
            "phase",
            "The status phase: 1 for the current phase, 0 for every other",
            None,
            Family::<StageLabel, Gauge>::default(),
        );
        let leader = registered(
            r,
            "leader",
            "1 while this replica holds the leader lock",
            None,
            Gauge::default(),
        );
        let leader_changes = registered(
            r,
            "leader_changes",
            "Times this replica gained or lost the leader lock",
            None,
            Counter::default(),
        );
        let requests = registered(
            r,
            "api_requests",
            "Requests to Consul, Nomad and the proxy, by endpoint class and status code (error: no response)",
            None,
            Family::<RequestLabels, Counter>::default(),
        );
        let request_duration: HistogramFamily<LatencyLabels> = registered(
            r,
            "api_request_duration",
            "Latency of requests to Consul, Nomad and the proxy, by endpoint class",
            Some(Unit::Seconds),
            Family::new_with_constructor(latency_histogram),
        );
        let watch_wakeups = registered(
            r,
            "watch_wakeups",
            "Blocking queries that returned, by watch",
            None,
            Family::<WatchLabel, Counter>::default(),
        );
        let generation = registered(
            r,
            "config_generation",
            "Distinct config documents (by digest) this replica has observed since it started",
            None,
            Gauge::default(),
        );
        let modify_index = registered(
            r,
            "config_modify_index",
            "Consul ModifyIndex of the config document last observed",
            None,
            Gauge::default(),
        );
        let cert_expiry = registered(
            r,
            "certificate_expiry",
            "Seconds until the first certificate of each PEM file in certDir expires (negative: expired)",
            Some(Unit::Seconds),
            Family::<FileLabel, Gauge<f64, AtomicU64>>::default(),
        );
        let served_fallback = registered(
            r,
            "certificate_fallback",
            "1 when the proxy served its fallback certificate (or none, or one not naming the host) for a host the document expects a certificate for, 0 when it served the expected one",
            None,
            Family::<HostLabel, Gauge>::default(),
        );
        let served_expiry = registered(
            r,
            "served_certificate_expiry",
            "Seconds until the certificate the proxy served for each checked host expires (negative: expired)",
            Some(Unit::Seconds),
            Family::<HostLabel, Gauge<f64, AtomicU64>>::default(),
        );
        registry.register(
            "build",
            "Version of the operator binary",
            Info::new(vec![("version", env!("CARGO_PKG_VERSION"))]),
        );
        for p in PHASES {
            phase
                .get_or_create(&StageLabel {
                    phase: phase_name(p),
                })
                .set(i64::from(p == Phase::Pending));
        }
        Metrics {
            inner: Arc::new(Inner {
                registry,
                passes,
                pass_errors,
                rollouts,
                rollout_duration,
                phase,
                leader,
                leader_changes,
                requests,
                request_duration,
                watch_wakeups,
                generation,
                modify_index,
                last_digest: Mutex::new(None),
                cert_expiry,
                cert_not_after: Mutex::new(Vec::new()),
                served_fallback,
                served_expiry,
                served: Mutex::new(Vec::new()),
            }),
        }
    }

    /// A reconcile pass ended. Call once per pass, at its end, with `PassOutcome::Error(label)`
    /// when it returned an error (the label is the error variant, e.g. `reconcile::Error`'s).
    pub fn pass_completed(&self, outcome: PassOutcome<'_>) {
        let label = match outcome {
            PassOutcome::Ok => "ok",
            PassOutcome::Error(reason) => {
                self.inner
                    .pass_errors
                    .get_or_create(&ReasonLabel {
                        reason: sanitize(reason),
                    })
                    .inc();
                "error"
            }
        };
        self.inner
            .passes
            .get_or_create(&OutcomeLabel { outcome: label })
            .inc();
    }

    /// A rollout ended with `outcome` (the `HistoryEntry` the loop appends), having spent the
    /// given time in each stage (stages it never entered are left out).
    pub fn rollout_finished(&self, outcome: Outcome, per_stage: &[(RolloutStage, Duration)]) {
        self.inner
            .rollouts
            .get_or_create(&OutcomeLabel {
                outcome: outcome_name(outcome),
            })
            .inc();
        for (stage, took) in per_stage {
            self.inner
                .rollout_duration
                .get_or_create(&StageLabel {
                    phase: stage.as_str(),
                })
                .observe(took.as_secs_f64());
        }
    }

    /// The status phase is now `phase` (call whenever a status is written or computed).
    pub fn phase(&self, phase: Phase) {
        for p in PHASES {
            self.inner
                .phase
                .get_or_create(&StageLabel {
                    phase: phase_name(p),
                })
                .set(i64::from(p == phase));
        }
    }

    /// This replica is (or is not) the leader. A change from the last call counts as a leader
    /// change; repeating the same value does not.
    pub fn leader(&self, is_leader: bool) {
        let was = self.inner.leader.set(i64::from(is_leader));
        if was != i64::from(is_leader) {
            self.inner.leader_changes.inc();
        }
    }

    /// One request to an API finished: `class` from [`endpoint_class`], `status` the HTTP code
    /// or `None` when no response came (connect error, timeout), `latency` until the response
    /// head (or the failure).
    pub fn api_request(&self, api: Api, class: &str, status: Option<u16>, latency: Duration) {
        let code = status.map_or_else(|| "error".to_owned(), |s| s.to_string());
        self.request_answered(api, class, code, latency);
    }

    /// One request with its `code` label: a status code, `error` (no answer), or what a call
    /// that reports no code tells ([`probe::MeteredProbe`]: `non_200`).
    fn request_answered(&self, api: Api, class: &str, code: String, latency: Duration) {
        let class = sanitize(class);
        self.inner
            .requests
            .get_or_create(&RequestLabels {
                api: api.as_str(),
                class: class.clone(),
                code,
            })
            .inc();
        self.inner
            .request_duration
            .get_or_create(&LatencyLabels {
                api: api.as_str(),
                class,
            })
            .observe(latency.as_secs_f64());
    }

    /// A blocking query of the named watch (`config`, `services`, ...) returned.
    pub fn watch_woke(&self, watch: &str) {
        self.inner
            .watch_wakeups
            .get_or_create(&WatchLabel {
                watch: sanitize(watch),
            })
            .inc();
    }

    /// The config document was read at `modify_index` with content digest `digest`; a digest
    /// unlike the last one counts as a new generation.
    pub fn document_observed(&self, modify_index: u64, digest: &str) {
        self.inner
            .modify_index
            .set(i64::try_from(modify_index).unwrap_or(i64::MAX));
        let mut last = self
            .inner
            .last_digest
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if last.as_deref() != Some(digest) {
            *last = Some(digest.to_owned());
            self.inner.generation.inc();
        }
    }

    /// The certificates found in `certDir` (what [`scan_cert_dir`] returns); replaces the last
    /// set, so removed files disappear from the scrape.
    pub fn certificates(&self, files: &[CertificateFile]) {
        let mut not_after = self
            .inner
            .cert_not_after
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        *not_after = files
            .iter()
            .filter_map(|f| Some((f.path.display().to_string(), f.leaf()?.not_after)))
            .collect();
    }

    /// What the proxy served at the last look at its certificates; replaces the last set, so a
    /// host the document no longer names disappears from the scrape. Host labels are
    /// sanitised like every label.
    pub fn served_certificates(&self, served: Vec<ServedCertificate>) {
        *self
            .inner
            .served
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = served;
    }

    /// The registry as OpenMetrics text (ends with `# EOF`). Certificate expiry is computed
    /// against the clock now, so it never goes stale between scans of `certDir`.
    ///
    /// # Errors
    /// [`Error::Encode`] only when formatting fails.
    pub fn encode(&self) -> Result<String> {
        let now = unix_now();
        // Held through the encoding, so a concurrent scrape never sees the family cleared.
        let not_after = self
            .inner
            .cert_not_after
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        self.inner.cert_expiry.clear();
        for (file, at) in not_after.iter() {
            #[allow(clippy::cast_precision_loss)] // seconds of a century fit f64 exactly
            self.inner
                .cert_expiry
                .get_or_create(&FileLabel { file: file.clone() })
                .set((at - now) as f64);
        }
        let served = self
            .inner
            .served
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        self.inner.served_fallback.clear();
        self.inner.served_expiry.clear();
        for s in served.iter() {
            let label = HostLabel {
                host: sanitize(&s.host),
            };
            self.inner
                .served_fallback
                .get_or_create(&label)
                .set(i64::from(s.fallback));
            if let Some(at) = s.not_after {
                #[allow(clippy::cast_precision_loss)] // seconds of a century fit f64 exactly
                self.inner
                    .served_expiry
                    .get_or_create(&label)
                    .set((at - now) as f64);
            }
        }
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.inner.registry)
            .map_err(Error::Encode)?;
        drop(served);
        drop(not_after);
        Ok(out)
    }
}

/// Label values the caller passes as text keep only their first word (`[A-Za-z0-9_.-]`, at
/// most 64 characters, lowercased), so a careless caller passing an error message cannot turn
/// it, or anything in it, into a label.
fn sanitize(value: &str) -> String {
    let cleaned: String = value
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
        .take(64)
        .map(|c| c.to_ascii_lowercase())
        .collect();
    if cleaned.is_empty() {
        "unknown".to_owned()
    } else {
        cleaned
    }
}

/// Registers `metric` (with its `unit`, if any) and returns the handle the registry shares.
fn registered<M: Metric + Clone>(
    registry: &mut Registry,
    name: &str,
    help: &str,
    unit: Option<Unit>,
    metric: M,
) -> M {
    match unit {
        Some(unit) => registry.register_with_unit(name, help, unit, metric.clone()),
        None => registry.register(name, help, metric.clone()),
    }
    metric
}

/// Now, in unix seconds (0 before the epoch): what certificate expiry is measured against.
#[must_use]
pub fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::panic)] // tests fail loudly
mod tests;
