//! What the loop saw in one pass: the job, its deployment and allocations, the proxy's health.

use crate::proxy::traefik::RawEntry;

use super::{ApplyOutcome, Change};

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
    /// `CreateIndex`: an allocation created after the job version's `JobModifyIndex` was
    /// placed for that version, so everything its tasks did happened under it. One updated in
    /// place carries the restarts and exits of the versions before.
    pub create_index: u64,
    /// The first sign a task exited (a restart, a `Terminated` event, a dead task), with the
    /// task event that says why; `None` while every task has run without a break.
    pub exited: Option<String>,
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
    /// During a handover's drain: the allocations of the slot being stopped.
    pub draining: Vec<AllocObservation>,
}
