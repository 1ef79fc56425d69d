//! The health-gated rollout state machine (DESIGN §4).
//!
//! ```text
//! Idle → Applying → Verifying(deadline) → Ready
//!                          │ fail / deadline passed
//!                          ▼
//!                     RollingBack → RolledBack        (onFailure: rollback)
//!                          └──────→ Degraded           (onFailure: hold, or nothing to go back to)
//! ```
//!
//! [`step`] is pure: it takes the current [`Phase`], what the loop just saw ([`Observation`]) and
//! the time, and returns the [`Effect`]s the loop must carry out plus the next phase. The loop
//! executes the effects in order, stops at the first failure and reports how far it got in the
//! next observation's [`Observation::applied`]. Nothing here does IO, so every transition is
//! tested with tokio's paused clock.
//!
//! # Guarantees
//! - A failed *observation* never rolls anything back: the machine only decides on what it saw.
//! - A rollback goes to the last job version that passed the gate (`EnforcePriorVersion` on the
//!   version we registered) and restores the previous KV entries in one transaction.
//! - A new plan is only taken at rest (`Idle`, `Ready`, `RolledBack`, `Degraded`); a rollout in
//!   flight finishes first, on the gate it carries.
//! - A rollback goes only to a version of the same job that passed the gate; with none, the
//!   failed version stays in place with the policy tree it references (`Degraded`).
//! - A phase in flight has a [`Journal`] the loop persists, so another process resumes it.

use std::collections::BTreeSet;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use tokio::time::Instant;

use crate::probe::{EntryKind, EntryStatus, RawEntry, RouteProbe};
pub use crate::spec::OnFailure;
pub use crate::spec::status::JobRef;

/// How often the loop looks again while a rollout is being verified or retried.
pub const VERIFY_POLL_INTERVAL: Duration = Duration::from_millis(250);

/// The longest gate duration the machine accepts from a journal. A journal read back from KV is
/// untrusted input: anything longer is not something this operator wrote, and unbounded
/// durations would overflow the clock arithmetic.
pub const MAX_GATE_DURATION: Duration = Duration::from_secs(7 * 24 * 3600);

/// `t + d`, capped at [`MAX_GATE_DURATION`] so no value can overflow the clock.
fn after(t: Instant, d: Duration) -> Instant {
    t.checked_add(d.min(MAX_GATE_DURATION)).unwrap_or(t)
}

/// The health gate one rollout must pass. It carries everything the loop needs to observe the
/// gate signals, so a rollout keeps being judged on its own terms when the document changes,
/// disappears or stops validating mid-rollout.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Gate {
    /// Everything must be healthy (and held for `min_healthy_time`) before this much time passes.
    pub healthy_deadline: Duration,
    /// How long every signal must stay healthy before the rollout counts as good.
    pub min_healthy_time: Duration,
    /// What to do on failure.
    pub on_failure: OnFailure,
    /// Whether the proxy's own health endpoint (Traefik `/ping`) must answer.
    pub check_ping: bool,
    /// Names (`<name>@<provider>`) of the routers and middlewares this change puts in the proxy;
    /// each must show up enabled in `/api/rawdata`.
    pub expected_entries: Vec<String>,
    /// Base URL of the proxy's API (`/ping`, `/api/rawdata`), when the gate reads it.
    #[serde(default)]
    pub proxy_api: Option<String>,
    /// User route probes sent through the proxy's entry points.
    #[serde(default)]
    pub probes: Vec<RouteProbe>,
}

/// A change of the Traefik KV policy tree, with what was there before so it can be restored.
/// `Debug` shows keys and value lengths only: values may be basic-auth hashes.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct KvChange {
    /// Entries to write (full keys).
    pub set: Vec<(String, String)>,
    /// Keys to delete (ours, no longer rendered).
    pub delete: Vec<String>,
    /// The entries of our subtree before the change.
    pub previous: Vec<(String, String)>,
}

impl std::fmt::Debug for KvChange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KvChange")
            .field("set", &KvDebug(&self.set))
            .field("delete", &self.delete)
            .field("previous", &KvDebug(&self.previous))
            .finish()
    }
}

/// KV entries for `Debug`: each key with the length of its value, never the value.
pub(crate) struct KvDebug<'a>(pub(crate) &'a [(String, String)]);

impl std::fmt::Debug for KvDebug<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_map()
            .entries(self.0.iter().map(|(k, v)| (k, Redacted(v.len()))))
            .finish()
    }
}

/// A value shown only by its size.
struct Redacted(usize);

impl std::fmt::Debug for Redacted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "<{} bytes>", self.0)
    }
}

/// A job for `Debug`: its size only (a Caddy job embeds its config, basic-auth hashes included).
struct JobDebug<'a>(&'a serde_json::Value);

impl std::fmt::Debug for JobDebug<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let len = serde_json::to_vec(self.0).map_or(0, |v| v.len());
        write!(f, "<job JSON, {len} bytes>")
    }
}

impl KvChange {
    /// The write that undoes this change: previous entries back, keys we added removed.
    #[must_use]
    pub fn restore(&self) -> Effect {
        let before: BTreeSet<&str> = self.previous.iter().map(|(k, _)| k.as_str()).collect();
        let delete = self
            .set
            .iter()
            .map(|(k, _)| k)
            .filter(|k| !before.contains(k.as_str()))
            .cloned()
            .collect();
        Effect::RestoreKv {
            set: self.previous.clone(),
            delete,
        }
    }
}

/// A new version of the proxy job. `Debug` omits the job JSON (see [`KvChange`]).
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct JobChange {
    /// Nomad job ID.
    pub job_id: String,
    /// The job (Nomad JSON, the value of `Job` in a register request).
    pub job: serde_json::Value,
    /// The digest stamped in the job's `proxy-operator/spec-digest` Meta.
    pub job_digest: String,
    /// The `JobModifyIndex` observed before registering (0: the job must not exist yet).
    pub enforce_index: u64,
    /// The last version of this job that passed the gate, where a rollback goes. `None` when
    /// nothing of this job ID ever passed: a failure then leaves the new version in place.
    pub rollback_to: Option<JobRef>,
}

impl std::fmt::Debug for JobChange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JobChange")
            .field("job_id", &self.job_id)
            .field("job", &JobDebug(&self.job))
            .field("job_digest", &self.job_digest)
            .field("enforce_index", &self.enforce_index)
            .field("rollback_to", &self.rollback_to)
            .finish()
    }
}

/// One rollout: what changes and the gate it must pass.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Change {
    /// The spec digest being rolled out (what status reports and what is remembered on failure).
    pub digest: String,
    /// The `retryNonce` of the document rolled out: a failure is remembered with it, so a nonce
    /// bumped while this rollout runs still retries.
    #[serde(default)]
    pub retry_nonce: Option<String>,
    /// The Nomad job the gate watches (the job changed, or the one running the policy).
    pub job_id: String,
    /// The KV policy change, if any. Written first: the job's entry points reference it.
    pub kv: Option<KvChange>,
    /// The job change, if any.
    pub job: Option<JobChange>,
    /// The gate.
    pub gate: Gate,
}

impl Change {
    /// `policy`, `job`, `policy+job` or `verify` (nothing to write, only the gate to pass): for
    /// logs and spans.
    #[must_use]
    pub fn kind(&self) -> &'static str {
        match (&self.kv, &self.job) {
            (Some(_), Some(_)) => "policy+job",
            (Some(_), None) => "policy",
            (None, Some(_)) => "job",
            (None, None) => "verify",
        }
    }
}

/// Something the loop must do, in order. `Debug` shows KV keys and value lengths and no job
/// JSON: values may be basic-auth hashes.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", tag = "effect")]
pub enum Effect {
    /// Write the policy tree in one `/v1/txn`.
    WriteKv {
        /// Entries to set.
        set: Vec<(String, String)>,
        /// Keys to delete.
        delete: Vec<String>,
    },
    /// Register the job with `EnforceIndex`.
    RegisterJob {
        /// Nomad job ID.
        job_id: String,
        /// The job.
        job: serde_json::Value,
        /// Its `proxy-operator/spec-digest`: when the answer is lost, the job read back tells
        /// whether the register landed.
        job_digest: String,
        /// The `JobModifyIndex` the job must still have (0: must not exist).
        enforce_index: u64,
    },
    /// Put the previous policy entries back in one `/v1/txn`.
    RestoreKv {
        /// Entries to set.
        set: Vec<(String, String)>,
        /// Keys to delete.
        delete: Vec<String>,
    },
    /// `POST /v1/job/:id/revert`.
    RevertJob {
        /// Nomad job ID.
        job_id: String,
        /// The version to go back to.
        version: u64,
        /// The version the job must currently be at.
        enforce_prior_version: Option<u64>,
        /// The spec digest of `version`: when the answer is lost, the job read back tells
        /// whether the revert landed.
        target_digest: Option<String>,
    },
    /// Run another pass after this long even if nothing changes.
    RequeueAfter(Duration),
}

impl std::fmt::Debug for Effect {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Effect::WriteKv { set, delete } => f
                .debug_struct("WriteKv")
                .field("set", &KvDebug(set))
                .field("delete", delete)
                .finish(),
            Effect::RestoreKv { set, delete } => f
                .debug_struct("RestoreKv")
                .field("set", &KvDebug(set))
                .field("delete", delete)
                .finish(),
            Effect::RegisterJob {
                job_id,
                job,
                job_digest,
                enforce_index,
            } => f
                .debug_struct("RegisterJob")
                .field("job_id", job_id)
                .field("job", &JobDebug(job))
                .field("job_digest", job_digest)
                .field("enforce_index", enforce_index)
                .finish(),
            Effect::RevertJob {
                job_id,
                version,
                enforce_prior_version,
                target_digest,
            } => f
                .debug_struct("RevertJob")
                .field("job_id", job_id)
                .field("version", version)
                .field("enforce_prior_version", enforce_prior_version)
                .field("target_digest", target_digest)
                .finish(),
            Effect::RequeueAfter(d) => f.debug_tuple("RequeueAfter").field(d).finish(),
        }
    }
}

impl Effect {
    /// Whether this effect changes the cluster (everything but a requeue).
    #[must_use]
    pub fn is_write(&self) -> bool {
        !matches!(self, Effect::RequeueAfter(_))
    }
}

/// How far the loop got with the effects of the previous step.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApplyOutcome {
    /// How many write effects succeeded, in order.
    pub completed: usize,
    /// The error that stopped the rest, if any.
    pub error: Option<ApplyError>,
}

impl ApplyOutcome {
    /// Every effect succeeded.
    #[must_use]
    pub fn all(completed: usize) -> Self {
        Self {
            completed,
            error: None,
        }
    }
}

/// Why an effect failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApplyError {
    /// Human-readable cause (never contains secrets).
    pub message: String,
    /// Whether trying again may succeed (network, 5xx) or not (4xx, index conflict).
    pub retryable: bool,
}

/// The proxy job as Nomad reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobObservation {
    /// Current version.
    pub version: u64,
    /// `JobModifyIndex`.
    pub modify_index: u64,
    /// The `proxy-operator/spec-digest` Meta, if present.
    pub spec_digest: Option<String>,
    /// Whether the job is stopped.
    pub stopped: bool,
}

/// Status of a Nomad deployment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeploymentState {
    /// Still placing or waiting for health (`running`, `pending`, `initializing`, …).
    Running,
    /// Paused by someone.
    Paused,
    /// All allocations healthy.
    Successful,
    /// Failed (unhealthy allocations, progress deadline, marked failed).
    Failed,
    /// Cancelled (newer version, job stopped).
    Cancelled,
}

impl DeploymentState {
    /// Maps Nomad's `Status` string.
    #[must_use]
    pub fn from_nomad(status: &str) -> Self {
        match status {
            "successful" => Self::Successful,
            "failed" => Self::Failed,
            "cancelled" => Self::Cancelled,
            "paused" => Self::Paused,
            _ => Self::Running,
        }
    }
}

/// The latest deployment of the proxy job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeploymentObservation {
    /// Deployment ID.
    pub id: String,
    /// The job version it rolls out.
    pub job_version: u64,
    /// Its state.
    pub state: DeploymentState,
    /// Nomad's `StatusDescription`.
    pub description: String,
}

/// One allocation of the proxy job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AllocObservation {
    /// Allocation ID.
    pub id: String,
    /// The job version it runs.
    pub job_version: u64,
    /// `DesiredStatus` (`run`, `stop`, `evict`).
    pub desired_status: String,
    /// `ClientStatus` (`pending`, `running`, `complete`, `failed`, `lost`).
    pub client_status: String,
    /// Every task is in state `running`.
    pub tasks_running: bool,
    /// A short description of the last task event when a task is not running.
    pub task_detail: Option<String>,
}

/// The result of one user route probe.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProbeOutcome {
    /// What was probed (`host` + `path`).
    pub name: String,
    /// Whether the expected status came back.
    pub ok: bool,
    /// What came back instead.
    pub detail: String,
}

/// The proxy's own view of itself.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ProxyObservation {
    /// `/ping` answered 200.
    pub ping_ok: bool,
    /// Routers, middlewares and services from `/api/rawdata`, if it could be read.
    pub rawdata: Option<Vec<RawEntry>>,
    /// User route probes through the entry point.
    pub probes: Vec<ProbeOutcome>,
}

/// Everything the loop saw in one pass.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Observation {
    /// A change the planner wants rolled out; only taken at rest.
    pub planned: Option<Change>,
    /// How far the loop got with the previous step's effects.
    pub applied: Option<ApplyOutcome>,
    /// The observation failed (Nomad or the proxy unreachable): decide nothing.
    pub error: Option<String>,
    /// The proxy job, if it exists.
    pub job: Option<JobObservation>,
    /// The job's latest deployment, if any.
    pub deployment: Option<DeploymentObservation>,
    /// The job's allocations.
    pub allocations: Vec<AllocObservation>,
    /// The proxy's health, if it was probed.
    pub proxy: Option<ProxyObservation>,
}

/// Where a rollout stands.
#[derive(Debug, Clone, PartialEq)]
pub enum Phase {
    /// Nothing rolled out by this process yet.
    Idle,
    /// Effects issued; waiting for the loop to report them done.
    Applying {
        /// The rollout.
        change: Change,
        /// When it started.
        started: Instant,
        /// The write effects not yet reported done.
        pending: Vec<Effect>,
        /// Whether the KV write already went through (so a failure must restore it).
        kv_written: bool,
        /// Whether the job was registered (so a failure must revert it).
        job_registered: bool,
    },
    /// Everything applied; waiting for the gate.
    Verifying {
        /// The rollout.
        change: Change,
        /// When it started.
        started: Instant,
        /// When the gate gives up.
        deadline: Instant,
        /// Since when every signal has been healthy without a break.
        healthy_since: Option<Instant>,
        /// The job version carrying our digest, once seen.
        job_version: Option<u64>,
        /// Why it is not healthy yet (for status).
        waiting_for: String,
        /// Since when observations have been failing: blind time does not count against the
        /// deadline, so an outage of Consul or Nomad cannot fail a healthy rollout.
        blind_since: Option<Instant>,
    },
    /// The gate passed.
    Ready {
        /// The digest now running.
        digest: String,
        /// How long the rollout took.
        duration: Duration,
        /// The job version that passed: where the next failed rollout goes back to.
        job: Option<JobRef>,
    },
    /// The gate failed; undoing.
    RollingBack {
        /// The failed rollout.
        change: Change,
        /// When the rollout started.
        started: Instant,
        /// Why it failed.
        reason: String,
        /// The job version being restored, if the job changed.
        to_version: Option<u64>,
        /// The rollback effects not yet reported done.
        pending: Vec<Effect>,
    },
    /// The previous state is back; the failed digest is not retried.
    RolledBack {
        /// The digest that failed.
        digest: String,
        /// Why it failed.
        reason: String,
        /// How long from start to restored.
        duration: Duration,
        /// The `retryNonce` it was rolled out with.
        retry_nonce: Option<String>,
    },
    /// The failed version was left in place (`onFailure: hold`), or could not be undone.
    Degraded {
        /// The digest that failed.
        digest: String,
        /// Why.
        reason: String,
        /// How long from start to giving up.
        duration: Duration,
        /// Left in place on purpose (`onFailure: hold`) rather than because undoing failed.
        held: bool,
        /// The `retryNonce` it was rolled out with.
        retry_nonce: Option<String>,
    },
}

impl Phase {
    /// Whether no rollout is in flight, so a new plan may start one.
    #[must_use]
    pub fn is_at_rest(&self) -> bool {
        matches!(
            self,
            Phase::Idle | Phase::Ready { .. } | Phase::RolledBack { .. } | Phase::Degraded { .. }
        )
    }

    /// The rollout in flight, if any.
    #[must_use]
    pub fn change(&self) -> Option<&Change> {
        match self {
            Phase::Applying { change, .. }
            | Phase::Verifying { change, .. }
            | Phase::RollingBack { change, .. } => Some(change),
            Phase::Idle
            | Phase::Ready { .. }
            | Phase::RolledBack { .. }
            | Phase::Degraded { .. } => None,
        }
    }

    /// Short name for logs and spans.
    #[must_use]
    pub fn name(&self) -> &'static str {
        match self {
            Phase::Idle => "Idle",
            Phase::Applying { .. } => "Applying",
            Phase::Verifying { .. } => "Verifying",
            Phase::Ready { .. } => "Ready",
            Phase::RollingBack { .. } => "RollingBack",
            Phase::RolledBack { .. } => "RolledBack",
            Phase::Degraded { .. } => "Degraded",
        }
    }
}

/// A rollout in flight as the loop persists it next to the status document, so a restarted (or
/// newly elected) operator resumes it instead of taking its unverified version for a good one.
///
/// It holds KV values, basic-auth hashes included, on purpose: a rollback restores the previous
/// policy tree from `change.kv.previous`, and a resumed rollout must write exactly the entries it
/// started with; re-rendering after a restart could read rotated users and restore the wrong
/// tree. So the ACL policy must protect `<prefix>/rollout` exactly like `<prefix>/traefik/`
/// (readable by the operator only, never by status readers). Its `Debug` (through
/// [`KvChange`], [`JobChange`] and [`Effect`]) shows keys and lengths, never values.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Journal {
    /// The rollout.
    pub change: Change,
    /// Where it stood.
    pub stage: Stage,
    /// How long it had run when this was written, in milliseconds.
    pub elapsed_ms: u64,
    /// When this was written, in milliseconds since the Unix epoch.
    pub written_at_ms: u64,
}

impl Journal {
    /// Whether both record the same rollout at the same stage (timestamps aside): the loop
    /// rewrites the journal only when this changes.
    #[must_use]
    pub fn same_stage(&self, other: &Journal) -> bool {
        self.change == other.change && self.stage == other.stage
    }

    /// Checks a journal read back from KV before anything in it is replayed. The journal key is
    /// writable by whoever can write our KV prefix, so it is untrusted input: it must only ever
    /// touch the job it names, carry our owner Meta on every job it would register, keep its KV
    /// writes inside `kv_root`, and hold durations this operator could have written.
    ///
    /// # Errors
    /// [`JournalRejected`] with the first inconsistency found (never a KV value).
    pub fn check(&self, owner: &str, kv_root: &str) -> Result<(), JournalRejected> {
        let change = &self.change;
        let reject = |why: String| Err(JournalRejected(why));
        if change.job_id.is_empty() {
            return reject("it names no job".into());
        }
        for (name, d) in [
            ("healthyDeadline", change.gate.healthy_deadline),
            ("minHealthyTime", change.gate.min_healthy_time),
        ] {
            if d > MAX_GATE_DURATION {
                return reject(format!("its {name} exceeds {}", human(MAX_GATE_DURATION)));
            }
        }
        if let Some(job) = &change.job {
            if job.job_id != change.job_id {
                return reject(format!(
                    "its job change is for {:?}, not the gated job {:?}",
                    job.job_id, change.job_id
                ));
            }
            check_job_json(&job.job, &change.job_id, &job.job_digest, owner)?;
        }
        let kv_ok = |key: &str| key.starts_with(kv_root) && key.len() > kv_root.len();
        if let Some(kv) = &change.kv {
            let keys = kv
                .set
                .iter()
                .chain(&kv.previous)
                .map(|(k, _)| k)
                .chain(&kv.delete);
            if let Some(bad) = keys.into_iter().find(|k| !kv_ok(k)) {
                return reject(format!("it writes key {bad:?} outside {kv_root}"));
            }
        }
        let pending: &[Effect] = match &self.stage {
            Stage::Applying { pending, .. } | Stage::RollingBack { pending, .. } => pending,
            Stage::Verifying { .. } => &[],
        };
        for effect in pending {
            match effect {
                Effect::WriteKv { set, delete } | Effect::RestoreKv { set, delete } => {
                    let keys = set.iter().map(|(k, _)| k).chain(delete);
                    if let Some(bad) = keys.into_iter().find(|k| !kv_ok(k)) {
                        return reject(format!("it writes key {bad:?} outside {kv_root}"));
                    }
                }
                Effect::RegisterJob {
                    job_id,
                    job,
                    job_digest,
                    ..
                } => {
                    if *job_id != change.job_id {
                        return reject(format!(
                            "it registers job {job_id:?}, not the gated job {:?}",
                            change.job_id
                        ));
                    }
                    check_job_json(job, job_id, job_digest, owner)?;
                }
                Effect::RevertJob { job_id, .. } if *job_id != change.job_id => {
                    return reject(format!(
                        "it reverts job {job_id:?}, not the gated job {:?}",
                        change.job_id
                    ));
                }
                Effect::RevertJob { .. } => {}
                Effect::RequeueAfter(d) if *d > MAX_GATE_DURATION => {
                    return reject("it holds an absurd requeue interval".into());
                }
                Effect::RequeueAfter(_) => {}
            }
        }
        Ok(())
    }
}

/// A job from a journal must be the gated job, stamped with our owner and its own digest.
fn check_job_json(
    job: &serde_json::Value,
    job_id: &str,
    digest: &str,
    owner: &str,
) -> Result<(), JournalRejected> {
    let job = crate::nomad::unwrap_job(job);
    let id = job.get("ID").and_then(serde_json::Value::as_str);
    if id != Some(job_id) {
        return Err(JournalRejected(format!(
            "the job it would register has ID {id:?}, not {job_id:?}"
        )));
    }
    let meta = |key: &str| {
        job.get("Meta")
            .and_then(|m| m.get(key))
            .and_then(serde_json::Value::as_str)
    };
    if meta(crate::render::META_OWNER) != Some(owner) {
        return Err(JournalRejected(format!(
            "the job it would register lacks our {} Meta",
            crate::render::META_OWNER
        )));
    }
    if meta(crate::render::META_SPEC_DIGEST) != Some(digest) {
        return Err(JournalRejected(format!(
            "the job it would register does not carry its own {} Meta",
            crate::render::META_SPEC_DIGEST
        )));
    }
    Ok(())
}

/// Why a journal read back from KV is not acted on (the loop drops it and re-verifies what
/// runs instead).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the rollout journal was not written by this operator for this job: {0}")]
pub struct JournalRejected(pub String);

/// The in-flight phases, without their clocks.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", tag = "stage")]
pub enum Stage {
    /// Effects issued, not all confirmed. Resuming issues them again: the KV write is
    /// idempotent and a register that already landed is recognised by its digest.
    Applying {
        /// Effects not confirmed.
        pending: Vec<Effect>,
        /// The KV write was attempted.
        kv_written: bool,
        /// The register was confirmed.
        job_registered: bool,
    },
    /// Waiting for the gate. Resuming starts a fresh `healthyDeadline`: nobody watched the gate
    /// while no operator ran.
    Verifying {
        /// The job version carrying our digest, once seen.
        job_version: Option<u64>,
    },
    /// Undoing.
    RollingBack {
        /// Why the rollout failed.
        reason: String,
        /// The version being restored.
        to_version: Option<u64>,
        /// Rollback effects not confirmed.
        pending: Vec<Effect>,
    },
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

impl Phase {
    /// The journal of a rollout in flight; `None` at rest.
    #[must_use]
    pub fn journal(&self, now: Instant, wall: SystemTime) -> Option<Journal> {
        let (change, started, stage) = match self {
            Phase::Idle
            | Phase::Ready { .. }
            | Phase::RolledBack { .. }
            | Phase::Degraded { .. } => {
                return None;
            }
            Phase::Applying {
                change,
                started,
                pending,
                kv_written,
                job_registered,
            } => (
                change,
                started,
                Stage::Applying {
                    pending: pending.clone(),
                    kv_written: *kv_written,
                    job_registered: *job_registered,
                },
            ),
            Phase::Verifying {
                change,
                started,
                job_version,
                ..
            } => (
                change,
                started,
                Stage::Verifying {
                    job_version: *job_version,
                },
            ),
            Phase::RollingBack {
                change,
                started,
                reason,
                to_version,
                pending,
            } => (
                change,
                started,
                Stage::RollingBack {
                    reason: reason.clone(),
                    to_version: *to_version,
                    pending: pending.clone(),
                },
            ),
        };
        Some(Journal {
            change: change.clone(),
            stage,
            elapsed_ms: millis(now.saturating_duration_since(*started)),
            written_at_ms: millis(wall.duration_since(UNIX_EPOCH).unwrap_or_default()),
        })
    }

    /// The phase a journal describes, on this process's clock.
    #[must_use]
    pub fn resume(journal: Journal, now: Instant, wall: SystemTime) -> Phase {
        let since_write = wall
            .duration_since(UNIX_EPOCH)
            .map(|t| millis(t).saturating_sub(journal.written_at_ms))
            .unwrap_or(0);
        let elapsed = Duration::from_millis(journal.elapsed_ms.saturating_add(since_write));
        let started = now.checked_sub(elapsed).unwrap_or(now);
        let change = journal.change;
        match journal.stage {
            Stage::Applying {
                pending,
                kv_written,
                job_registered,
            } => Phase::Applying {
                change,
                started,
                pending,
                kv_written,
                job_registered,
            },
            Stage::Verifying { job_version } => start_verifying(
                &change,
                started,
                now,
                job_version,
                "resumed after an operator restart",
            ),
            Stage::RollingBack {
                reason,
                to_version,
                pending,
            } => Phase::RollingBack {
                change,
                started,
                reason,
                to_version,
                pending,
            },
        }
    }
}

/// Advances the machine by one observation.
#[must_use]
pub fn step(phase: &Phase, obs: &Observation, now: Instant) -> (Vec<Effect>, Phase) {
    match phase {
        Phase::Idle | Phase::Ready { .. } | Phase::RolledBack { .. } | Phase::Degraded { .. } => {
            match &obs.planned {
                Some(change) => begin(change.clone(), now),
                None => (Vec::new(), phase.clone()),
            }
        }
        Phase::Applying {
            change,
            started,
            pending,
            kv_written,
            job_registered,
        } => step_applying(
            change,
            *started,
            pending,
            *kv_written,
            *job_registered,
            obs,
            now,
        ),
        Phase::Verifying {
            change,
            started,
            deadline,
            healthy_since,
            job_version,
            blind_since,
            ..
        } => step_verifying(
            change,
            *started,
            *deadline,
            *healthy_since,
            *job_version,
            *blind_since,
            obs,
            now,
        ),
        Phase::RollingBack {
            change,
            started,
            reason,
            to_version,
            pending,
        } => step_rolling_back(change, *started, reason, *to_version, pending, obs, now),
    }
}

fn begin(change: Change, now: Instant) -> (Vec<Effect>, Phase) {
    let mut pending = Vec::new();
    if let Some(kv) = &change.kv {
        pending.push(Effect::WriteKv {
            set: kv.set.clone(),
            delete: kv.delete.clone(),
        });
    }
    if let Some(job) = &change.job {
        pending.push(Effect::RegisterJob {
            job_id: job.job_id.clone(),
            job: job.job.clone(),
            job_digest: job.job_digest.clone(),
            enforce_index: job.enforce_index,
        });
    }
    if pending.is_empty() {
        // Nothing to write (a version running without a record that it passed): only the gate.
        return (
            vec![Effect::RequeueAfter(VERIFY_POLL_INTERVAL)],
            start_verifying(&change, now, now, None, "the first health observation"),
        );
    }
    let effects = pending.clone();
    let phase = Phase::Applying {
        change,
        started: now,
        pending,
        kv_written: false,
        job_registered: false,
    };
    (effects, phase)
}

fn start_verifying(
    change: &Change,
    started: Instant,
    now: Instant,
    job_version: Option<u64>,
    waiting_for: &str,
) -> Phase {
    Phase::Verifying {
        change: change.clone(),
        started,
        deadline: after(now, change.gate.healthy_deadline),
        healthy_since: None,
        job_version,
        waiting_for: waiting_for.to_owned(),
        blind_since: None,
    }
}

fn step_applying(
    change: &Change,
    started: Instant,
    pending: &[Effect],
    kv_written: bool,
    job_registered: bool,
    obs: &Observation,
    now: Instant,
) -> (Vec<Effect>, Phase) {
    let deadline = after(started, change.gate.healthy_deadline);
    let (done, error) = match &obs.applied {
        Some(outcome) => (outcome.completed.min(pending.len()), outcome.error.clone()),
        // The loop did not get to the effects: issue them again.
        None => (0, None),
    };
    // A KV write that errored may still have landed (a lost answer): once attempted, a failure
    // restores it. Restoring is idempotent, so an unneeded restore costs one txn.
    let attempted = if error.is_some() {
        (done + 1).min(pending.len())
    } else {
        done
    };
    let kv_written = kv_written
        || pending[..attempted]
            .iter()
            .any(|e| matches!(e, Effect::WriteKv { .. }));
    // The loop reads the job back when a register errors, so an error here means it did not land.
    let job_registered = job_registered
        || pending[..done]
            .iter()
            .any(|e| matches!(e, Effect::RegisterJob { .. }));
    let rest: Vec<Effect> = pending[done..].to_vec();

    if rest.is_empty() {
        let phase = start_verifying(change, started, now, None, "the first health observation");
        return (vec![Effect::RequeueAfter(VERIFY_POLL_INTERVAL)], phase);
    }
    match error {
        Some(err) if !err.retryable || now >= deadline => fail(
            change,
            started,
            format!("failed to apply: {}", err.message),
            kv_written,
            job_registered,
            None,
            obs,
            now,
        ),
        _ => {
            let mut effects = rest.clone();
            effects.push(Effect::RequeueAfter(VERIFY_POLL_INTERVAL));
            let phase = Phase::Applying {
                change: change.clone(),
                started,
                pending: rest,
                kv_written,
                job_registered,
            };
            (effects, phase)
        }
    }
}

#[allow(clippy::too_many_arguments)] // the fields of the Verifying phase
fn step_verifying(
    change: &Change,
    started: Instant,
    deadline: Instant,
    healthy_since: Option<Instant>,
    job_version: Option<u64>,
    blind_since: Option<Instant>,
    obs: &Observation,
    now: Instant,
) -> (Vec<Effect>, Phase) {
    if let Some(err) = &obs.error {
        // We could not look: decide nothing and look again; the deadline stops counting.
        let phase = Phase::Verifying {
            change: change.clone(),
            started,
            deadline,
            healthy_since,
            job_version,
            waiting_for: format!("observation failed: {err}"),
            blind_since: blind_since.or(Some(now)),
        };
        return (vec![Effect::RequeueAfter(VERIFY_POLL_INTERVAL)], phase);
    }
    // Back from an outage: the deadline moves by the blind time, and health seen before it no
    // longer counts (nobody watched it hold).
    let (deadline, healthy_since) = match blind_since {
        Some(blind) => (after(deadline, now.saturating_duration_since(blind)), None),
        None => (deadline, healthy_since),
    };
    let verifying = |healthy_since, job_version, waiting_for: String| Phase::Verifying {
        change: change.clone(),
        started,
        deadline,
        healthy_since,
        job_version,
        waiting_for,
        blind_since: None,
    };
    let job_version = job_version.or_else(|| our_job_version(change, obs));
    match evaluate(change, obs, job_version) {
        Verdict::Failed(reason) => fail(change, started, reason, true, true, job_version, obs, now),
        Verdict::Pending(reason) if now >= deadline => fail(
            change,
            started,
            format!(
                "not healthy within healthyDeadline ({}): {reason}",
                human(change.gate.healthy_deadline)
            ),
            true,
            true,
            job_version,
            obs,
            now,
        ),
        Verdict::Pending(reason) => {
            let wait = VERIFY_POLL_INTERVAL.min(deadline - now);
            (
                vec![Effect::RequeueAfter(wait)],
                verifying(None, job_version, reason),
            )
        }
        Verdict::Healthy => {
            let since = healthy_since.unwrap_or(now);
            let held = now - since;
            if held >= change.gate.min_healthy_time {
                let job = job_version.map(|version| JobRef {
                    job_id: change.job_id.clone(),
                    version,
                    job_digest: obs.job.as_ref().and_then(|j| j.spec_digest.clone()),
                });
                let phase = Phase::Ready {
                    digest: change.digest.clone(),
                    duration: now - started,
                    job,
                };
                return (Vec::new(), phase);
            }
            if now >= deadline {
                let reason = format!(
                    "healthy for only {} of minHealthyTime {} when healthyDeadline ({}) passed",
                    human(held),
                    human(change.gate.min_healthy_time),
                    human(change.gate.healthy_deadline)
                );
                return fail(change, started, reason, true, true, job_version, obs, now);
            }
            let remaining = change.gate.min_healthy_time - held;
            let wait = remaining.min(VERIFY_POLL_INTERVAL).min(deadline - now);
            let waiting = format!(
                "healthy for {}, holding for minHealthyTime {}",
                human(held),
                human(change.gate.min_healthy_time)
            );
            (
                vec![Effect::RequeueAfter(wait)],
                verifying(Some(since), job_version, waiting),
            )
        }
    }
}

fn step_rolling_back(
    change: &Change,
    started: Instant,
    reason: &str,
    to_version: Option<u64>,
    pending: &[Effect],
    obs: &Observation,
    now: Instant,
) -> (Vec<Effect>, Phase) {
    let (done, error) = match &obs.applied {
        Some(outcome) => (outcome.completed.min(pending.len()), outcome.error.clone()),
        None => (0, None),
    };
    let rest: Vec<Effect> = pending[done..].to_vec();
    if rest.is_empty() {
        let phase = Phase::RolledBack {
            digest: change.digest.clone(),
            reason: reason.to_owned(),
            duration: now - started,
            retry_nonce: change.retry_nonce.clone(),
        };
        return (Vec::new(), phase);
    }
    match error {
        Some(err) if !err.retryable => {
            let phase = Phase::Degraded {
                digest: change.digest.clone(),
                reason: format!("{reason}; rollback failed: {}", err.message),
                duration: now - started,
                held: false,
                retry_nonce: change.retry_nonce.clone(),
            };
            (Vec::new(), phase)
        }
        // Retryable errors (Nomad or Consul unreachable) retry the rest until they go through:
        // giving up would leave the failed version serving.
        _ => {
            let mut effects = rest.clone();
            effects.push(Effect::RequeueAfter(VERIFY_POLL_INTERVAL));
            let phase = Phase::RollingBack {
                change: change.clone(),
                started,
                reason: reason.to_owned(),
                to_version,
                pending: rest,
            };
            (effects, phase)
        }
    }
}

/// The gate failed: roll back what was applied, or hold.
#[allow(clippy::too_many_arguments)] // every argument is a fact the decision needs
fn fail(
    change: &Change,
    started: Instant,
    reason: String,
    kv_written: bool,
    job_registered: bool,
    job_version: Option<u64>,
    obs: &Observation,
    now: Instant,
) -> (Vec<Effect>, Phase) {
    let degraded = |reason: String, held: bool| Phase::Degraded {
        digest: change.digest.clone(),
        reason,
        duration: now - started,
        held,
        retry_nonce: change.retry_nonce.clone(),
    };
    if change.gate.on_failure == OnFailure::Hold {
        return (
            Vec::new(),
            degraded(format!("{reason} (onFailure: hold, left in place)"), true),
        );
    }
    if change.kv.is_none() && change.job.is_none() {
        // A verify-only rollout wrote nothing, so there is nothing of ours to undo.
        let reason = format!(
            "{reason}; this version was not rolled out by this verification, so it was left in place"
        );
        return (Vec::new(), degraded(reason, false));
    }
    let mut pending = Vec::new();
    let mut to_version = None;
    if let (Some(job), true) = (&change.job, job_registered) {
        let Some(target) = &job.rollback_to else {
            // Nothing of this job ever passed the gate. The new version stays, and so does the
            // KV tree its entry points reference: restoring it alone would break every router.
            let reason = format!(
                "{reason}; no earlier version of job {:?} passed the gate, so the new version and its policy tree were left in place",
                job.job_id
            );
            return (Vec::new(), degraded(reason, false));
        };
        to_version = Some(target.version);
        let already_there = target.job_digest.is_some()
            && obs.job.as_ref().and_then(|j| j.spec_digest.as_ref()) == target.job_digest.as_ref();
        if !already_there {
            // Registering the reverted version cancels the failed deployment ("Cancelled due
            // to newer version of job"), so no separate deployment fail is sent: failing it
            // could trigger Nomad's own auto-revert and race ours.
            let current = job_version.or_else(|| obs.job.as_ref().map(|j| j.version));
            pending.push(Effect::RevertJob {
                job_id: job.job_id.clone(),
                version: target.version,
                enforce_prior_version: current,
                target_digest: target.job_digest.clone(),
            });
        }
    }
    if let (Some(kv), true) = (&change.kv, kv_written) {
        // Policy first: the reverted job's entry points reference the previous entries.
        pending.insert(0, kv.restore());
    }
    if pending.is_empty() {
        let phase = Phase::RolledBack {
            digest: change.digest.clone(),
            reason,
            duration: now - started,
            retry_nonce: change.retry_nonce.clone(),
        };
        return (Vec::new(), phase);
    }
    let mut effects = pending.clone();
    effects.push(Effect::RequeueAfter(VERIFY_POLL_INTERVAL));
    let phase = Phase::RollingBack {
        change: change.clone(),
        started,
        reason,
        to_version,
        pending,
    };
    (effects, phase)
}

/// The gate's reading of one observation.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Verdict {
    Healthy,
    Pending(String),
    Failed(String),
}

/// The job version carrying the digest we registered, if Nomad shows it.
fn our_job_version(change: &Change, obs: &Observation) -> Option<u64> {
    let job = obs.job.as_ref()?;
    match &change.job {
        Some(jc) => {
            (job.spec_digest.as_deref() == Some(jc.job_digest.as_str())).then_some(job.version)
        }
        // A policy-only change runs on whatever version is there.
        None => Some(job.version),
    }
}

fn evaluate(change: &Change, obs: &Observation, job_version: Option<u64>) -> Verdict {
    match evaluate_job(change, obs, job_version) {
        Verdict::Healthy => evaluate_proxy(&change.gate, obs),
        other => other,
    }
}

/// `complete`, `failed` or `lost`: the client is done with it. Nomad leaves such allocations
/// with `DesiredStatus: run` until they are garbage-collected (its schedulers filter terminal
/// allocations before diffing), so they linger for hours after a rollout.
fn client_terminal(a: &AllocObservation) -> bool {
    matches!(a.client_status.as_str(), "complete" | "failed" | "lost")
}

fn evaluate_job(change: &Change, obs: &Observation, job_version: Option<u64>) -> Verdict {
    let Some(job) = &obs.job else {
        return Verdict::Failed("the proxy job no longer exists".to_owned());
    };
    if job.stopped {
        return Verdict::Failed("the proxy job was stopped".to_owned());
    }
    let Some(version) = job_version else {
        return Verdict::Pending("the registered job version is not visible yet".to_owned());
    };
    if change.job.is_some() && job.version != version {
        return Verdict::Failed(format!(
            "the job changed underneath the rollout (now version {}, expected {version})",
            job.version
        ));
    }
    let wanted: Vec<&AllocObservation> = obs
        .allocations
        .iter()
        .filter(|a| a.desired_status == "run")
        .collect();
    // A crashed allocation of the new version (its tasks dead, restarts exhausted) fails the
    // gate at once, deployment or not: Nomad's deployment would only give up at its
    // healthyDeadline, and the reason names the task events so the status says why. Only a
    // job change creates allocations of `version` after this rollout began; for a policy or
    // verify-only change, an allocation of the running version that failed long ago says
    // nothing about this change.
    if change.job.is_some()
        && let Some(a) = wanted.iter().find(|a| {
            a.job_version == version && matches!(a.client_status.as_str(), "failed" | "lost")
        })
    {
        let detail = a.task_detail.as_deref().unwrap_or("no task event");
        let deployment = obs
            .deployment
            .as_ref()
            .filter(|d| d.job_version == version && d.state == DeploymentState::Failed)
            .map(|d| format!("deployment failed: {}; ", d.description))
            .unwrap_or_default();
        return Verdict::Failed(format!(
            "{deployment}allocation {} of job version {version} {}: {detail}",
            short(&a.id),
            a.client_status
        ));
    }
    // Deployment health where the job has deployments for this version (only a job change
    // creates one; a policy change is judged on the running allocations).
    if change.job.is_some()
        && let Some(dep) = obs.deployment.as_ref().filter(|d| d.job_version == version)
    {
        return match dep.state {
            DeploymentState::Successful => Verdict::Healthy,
            DeploymentState::Failed => {
                Verdict::Failed(format!("deployment failed: {}", dep.description))
            }
            DeploymentState::Cancelled => {
                Verdict::Failed(format!("deployment cancelled: {}", dep.description))
            }
            DeploymentState::Running | DeploymentState::Paused => Verdict::Pending(format!(
                "deployment {}: {}",
                short(&dep.id),
                dep.description
            )),
        };
    }
    // No deployment (system jobs before Nomad 1.11): allocations running with running tasks; the
    // minHealthyTime hold happens in the caller.
    let live: Vec<&AllocObservation> = wanted.into_iter().filter(|a| !client_terminal(a)).collect();
    if live.is_empty() {
        return Verdict::Pending(format!(
            "no allocation of job version {version} running yet"
        ));
    }
    if let Some(a) = live.iter().find(|a| a.job_version != version) {
        return Verdict::Pending(format!(
            "allocation {} still runs job version {}",
            short(&a.id),
            a.job_version
        ));
    }
    if let Some(a) = live
        .iter()
        .find(|a| a.client_status != "running" || !a.tasks_running)
    {
        let detail = a.task_detail.as_deref().unwrap_or("tasks not running");
        return Verdict::Pending(format!(
            "allocation {} {}: {detail}",
            short(&a.id),
            a.client_status
        ));
    }
    Verdict::Healthy
}

fn evaluate_proxy(gate: &Gate, obs: &Observation) -> Verdict {
    let needs_proxy = gate.check_ping || !gate.expected_entries.is_empty();
    let Some(proxy) = &obs.proxy else {
        return if needs_proxy {
            Verdict::Pending("the proxy was not probed".to_owned())
        } else {
            Verdict::Healthy
        };
    };
    if gate.check_ping && !proxy.ping_ok {
        return Verdict::Pending("the proxy's /ping does not answer 200".to_owned());
    }
    if !gate.expected_entries.is_empty() {
        let Some(entries) = &proxy.rawdata else {
            return Verdict::Pending("/api/rawdata could not be read".to_owned());
        };
        let expected: BTreeSet<&str> = gate.expected_entries.iter().map(String::as_str).collect();
        let missing: Vec<&str> = expected
            .iter()
            .copied()
            .filter(|name| !entries.iter().any(|e| e.name == *name))
            .collect();
        let ours_disabled: Vec<&RawEntry> = entries
            .iter()
            .filter(|e| e.status == EntryStatus::Disabled)
            .filter(|e| {
                expected.contains(e.name.as_str())
                    || (e.kind == EntryKind::Router
                        && e.middlewares.iter().any(|m| expected.contains(m.as_str())))
            })
            .collect();
        if let Some(bad) = ours_disabled.first() {
            let reason = format!(
                "{} {} is disabled in /api/rawdata: {}",
                bad.kind.as_str(),
                bad.name,
                bad.errors.join("; ")
            );
            // Only once everything we wrote is loaded is a disabled entry the new config's fault
            // rather than a stale reading from before the reload.
            return if missing.is_empty() {
                Verdict::Failed(reason)
            } else {
                Verdict::Pending(reason)
            };
        }
        if !missing.is_empty() {
            return Verdict::Pending(format!(
                "not loaded by the proxy yet: {}",
                missing.join(", ")
            ));
        }
    }
    if let Some(p) = proxy.probes.iter().find(|p| !p.ok) {
        return Verdict::Pending(format!("route probe {} failed: {}", p.name, p.detail));
    }
    Verdict::Healthy
}

fn short(id: &str) -> &str {
    id.get(..8).unwrap_or(id)
}

/// `1.5s`, `250ms`, `2m0s`: durations as a user wrote them.
fn human(d: Duration) -> String {
    if d.as_secs() >= 60 {
        format!("{}m{}s", d.as_secs() / 60, d.as_secs() % 60)
    } else if d.subsec_millis() == 0 {
        format!("{}s", d.as_secs())
    } else if d.as_secs() == 0 {
        format!("{}ms", d.as_millis())
    } else {
        format!("{:.1}s", d.as_secs_f64())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::panic)] // tests fail loudly
mod tests;
