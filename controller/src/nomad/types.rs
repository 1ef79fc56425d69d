//! Wire types of the Nomad HTTP API (NOMAD.md), named and shaped as the API sends them.

use std::collections::BTreeMap;
use std::ops::Deref;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::Value;

fn null_as_default<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Default + Deserialize<'de>,
{
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

/// A list whose elided entries (the docs write `["..."]`) are skipped; any other non-matching
/// entry is an error.
fn list_skipping_ellipsis<'de, D, T>(d: D) -> Result<Vec<T>, D::Error>
where
    D: Deserializer<'de>,
    T: serde::de::DeserializeOwned,
{
    let raw: Option<Vec<Value>> = Option::deserialize(d)?;
    raw.unwrap_or_default()
        .into_iter()
        .filter(|v| v.as_str() != Some("..."))
        .map(|v| serde_json::from_value(v).map_err(serde::de::Error::custom))
        .collect()
}

/// A job: the fields the operator reasons about, typed, plus the whole document as Nomad sent it.
#[derive(Debug, Clone, PartialEq)]
pub struct Job {
    /// `ID`.
    pub id: String,
    /// `Name`.
    pub name: String,
    /// `Type`: `service`, `batch`, `system`, `sysbatch`.
    pub job_type: String,
    /// `Namespace`.
    pub namespace: String,
    /// `Version`: +1 on every spec change.
    pub version: u64,
    /// `JobModifyIndex`: index of the last spec change, the `EnforceIndex` value.
    pub job_modify_index: u64,
    /// `ModifyIndex`: last change of anything (stability, status).
    pub modify_index: u64,
    /// `CreateIndex`.
    pub create_index: u64,
    /// `Status`: `pending`, `running`, `dead`.
    pub status: String,
    /// `Stop`: stopped by a deregister without purge.
    pub stop: bool,
    /// `Stable`: this version's deployment succeeded.
    pub stable: bool,
    /// `Meta` (the operator's ownership stamp lives here).
    pub meta: BTreeMap<String, String>,
    /// `SubmitTime` (UnixNano).
    pub submit_time: i64,
    /// The job as Nomad returned it.
    pub raw: Value,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct JobFields {
    #[serde(rename = "ID")]
    id: String,
    #[serde(default, deserialize_with = "null_as_default")]
    name: String,
    #[serde(default, rename = "Type", deserialize_with = "null_as_default")]
    job_type: String,
    #[serde(default, deserialize_with = "null_as_default")]
    namespace: String,
    #[serde(default)]
    version: u64,
    #[serde(default)]
    job_modify_index: u64,
    #[serde(default)]
    modify_index: u64,
    #[serde(default)]
    create_index: u64,
    #[serde(default, deserialize_with = "null_as_default")]
    status: String,
    #[serde(default)]
    stop: bool,
    #[serde(default)]
    stable: bool,
    #[serde(default, deserialize_with = "null_as_default")]
    meta: BTreeMap<String, String>,
    #[serde(default)]
    submit_time: i64,
}

impl Job {
    /// Types a raw job document.
    pub fn from_value(raw: Value) -> Result<Job, serde_json::Error> {
        let f = JobFields::deserialize(&raw)?;
        Ok(Job {
            id: f.id,
            name: f.name,
            job_type: f.job_type,
            namespace: f.namespace,
            version: f.version,
            job_modify_index: f.job_modify_index,
            modify_index: f.modify_index,
            create_index: f.create_index,
            status: f.status,
            stop: f.stop,
            stable: f.stable,
            meta: f.meta,
            submit_time: f.submit_time,
            raw,
        })
    }
}

impl<'de> Deserialize<'de> for Job {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Job, D::Error> {
        Job::from_value(Value::deserialize(d)?).map_err(serde::de::Error::custom)
    }
}

impl Serialize for Job {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.raw.serialize(s)
    }
}

/// Body of `POST /v1/jobs`.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct JobRegisterRequest<'a> {
    pub job: &'a Value,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub enforce_index: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub job_modify_index: Option<u64>,
}

/// Body of `POST /v1/job/:id/revert`.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct JobRevertRequest<'a> {
    #[serde(rename = "JobID")]
    pub job_id: &'a str,
    pub job_version: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub enforce_prior_version: Option<u64>,
}

/// Body of `POST /v1/job/:id/stable` (`structs.JobStabilityRequest`; Nomad API docs, "Update
/// Job Stability": <https://developer.hashicorp.com/nomad/api-docs/jobs#update-job-stability>).
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct JobStableRequest<'a> {
    #[serde(rename = "JobID")]
    pub job_id: &'a str,
    pub job_version: u64,
    pub stable: bool,
}

/// Body of `POST /v1/job/:id/plan`.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct JobPlanRequest<'a> {
    pub job: &'a Value,
    pub diff: bool,
    pub policy_override: bool,
}

/// Answer of register, update, revert, deregister and stable (which sets only
/// `JobModifyIndex`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct JobWriteResponse {
    /// Evaluation created (`""` for periodic/parameterized jobs or an unknown job's stop).
    #[serde(rename = "EvalID")]
    pub eval_id: String,
    /// Index of that evaluation.
    pub eval_create_index: u64,
    /// The job's JobModifyIndex after the write.
    pub job_modify_index: u64,
    /// Warnings (newline-separated).
    #[serde(deserialize_with = "null_as_default")]
    pub warnings: String,
    /// Raft index of the write.
    pub index: u64,
}

/// Answer of `GET /v1/job/:id/versions`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct JobVersions {
    /// Versions, newest first.
    #[serde(deserialize_with = "null_as_default")]
    pub versions: Vec<Job>,
    /// Diffs between consecutive versions (with `diffs=true`).
    #[serde(deserialize_with = "null_as_default")]
    pub diffs: Vec<JobDiff>,
}

/// `Diff` of a plan or a version: `Type` is `None`, `Added`, `Deleted` or `Edited`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct JobDiff {
    /// Diff type.
    #[serde(rename = "Type")]
    pub diff_type: String,
    /// Job id.
    #[serde(rename = "ID")]
    pub id: String,
    /// Changed job fields.
    #[serde(deserialize_with = "list_skipping_ellipsis")]
    pub fields: Vec<FieldDiff>,
    /// Changed job objects.
    #[serde(deserialize_with = "list_skipping_ellipsis")]
    pub objects: Vec<ObjectDiff>,
    /// Task group diffs.
    #[serde(deserialize_with = "list_skipping_ellipsis")]
    pub task_groups: Vec<TaskGroupDiff>,
}

/// One changed field.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct FieldDiff {
    /// Diff type.
    #[serde(rename = "Type")]
    pub diff_type: String,
    /// Field name.
    pub name: String,
    /// Old value.
    pub old: String,
    /// New value.
    pub new: String,
    /// e.g. `forces create/destroy update`.
    #[serde(deserialize_with = "null_as_default")]
    pub annotations: Vec<String>,
}

/// One changed object (a block).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct ObjectDiff {
    /// Diff type.
    #[serde(rename = "Type")]
    pub diff_type: String,
    /// Object name.
    pub name: String,
    /// Changed fields.
    #[serde(deserialize_with = "list_skipping_ellipsis")]
    pub fields: Vec<FieldDiff>,
    /// Nested objects.
    #[serde(deserialize_with = "list_skipping_ellipsis")]
    pub objects: Vec<ObjectDiff>,
}

/// A task group's diff: an object diff (its type, name, fields and objects) with its tasks and
/// the scheduler's updates. Nomad's `TaskGroupDiff` repeats `ObjectDiff`'s fields at the top
/// level; `#[serde(flatten)]` reads them into the one type, and [`Deref`] keeps `tg.name`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct TaskGroupDiff {
    /// Type, name, changed fields and objects.
    #[serde(flatten)]
    pub node: ObjectDiff,
    /// Task diffs.
    #[serde(deserialize_with = "list_skipping_ellipsis")]
    pub tasks: Vec<TaskDiff>,
    /// Scheduler updates (`create`, `destroy`, `in-place update`, …) and their counts.
    #[serde(deserialize_with = "null_as_default")]
    pub updates: BTreeMap<String, u64>,
}

/// A task's diff: an object diff with the task's annotations (e.g. `forces create`), flattened
/// as in [`TaskGroupDiff`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct TaskDiff {
    /// Type, name, changed fields and objects.
    #[serde(flatten)]
    pub node: ObjectDiff,
    /// e.g. `forces create`.
    #[serde(deserialize_with = "null_as_default")]
    pub annotations: Vec<String>,
}

impl Deref for TaskGroupDiff {
    type Target = ObjectDiff;

    fn deref(&self) -> &ObjectDiff {
        &self.node
    }
}

impl Deref for TaskDiff {
    type Target = ObjectDiff;

    fn deref(&self) -> &ObjectDiff {
        &self.node
    }
}

/// Answer of `POST /v1/job/:id/plan`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct PlanResponse {
    /// What the scheduler would do per task group.
    pub annotations: Option<PlanAnnotations>,
    /// The diff against the running job (with `diff: true`).
    pub diff: Option<JobDiff>,
    /// The job's current JobModifyIndex (0 for a new job): feed it to `EnforceIndex`.
    pub job_modify_index: u64,
    /// Placement failures per task group.
    #[serde(deserialize_with = "null_as_default")]
    pub failed_tg_allocs: BTreeMap<String, Value>,
    /// Evaluations the plan would create.
    #[serde(deserialize_with = "null_as_default")]
    pub created_evals: Vec<Value>,
    /// Warnings.
    #[serde(deserialize_with = "null_as_default")]
    pub warnings: String,
    /// Next launch of a periodic job.
    pub next_periodic_launch: Option<String>,
    /// Raft index.
    pub index: u64,
}

/// `Annotations` of a plan.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct PlanAnnotations {
    /// Per task group.
    #[serde(rename = "DesiredTGUpdates", deserialize_with = "null_as_default")]
    pub desired_tg_updates: BTreeMap<String, DesiredUpdates>,
}

/// What the scheduler would do to one task group's allocations.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct DesiredUpdates {
    /// Left alone.
    pub ignore: u64,
    /// New placements.
    pub place: u64,
    /// Migrations.
    pub migrate: u64,
    /// Stops.
    pub stop: u64,
    /// In-place updates.
    pub in_place_update: u64,
    /// Destructive updates (restart).
    pub destructive_update: u64,
    /// Canaries.
    pub canary: u64,
    /// Preemptions.
    pub preemptions: u64,
}

impl DesiredUpdates {
    /// True when the plan would change nothing that runs.
    pub fn is_noop(&self) -> bool {
        self.place == 0
            && self.migrate == 0
            && self.stop == 0
            && self.in_place_update == 0
            && self.destructive_update == 0
            && self.canary == 0
            && self.preemptions == 0
    }
}

/// An allocation as `/v1/job/:id/allocations` lists it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct AllocationStub {
    /// Allocation id.
    #[serde(rename = "ID")]
    pub id: String,
    /// Evaluation that placed it.
    #[serde(rename = "EvalID")]
    pub eval_id: String,
    /// `job.group[n]`.
    pub name: String,
    /// Namespace.
    pub namespace: String,
    /// Node id.
    #[serde(rename = "NodeID")]
    pub node_id: String,
    /// Node name.
    pub node_name: String,
    /// Job id.
    #[serde(rename = "JobID")]
    pub job_id: String,
    /// Job type.
    pub job_type: String,
    /// Job version this allocation runs.
    pub job_version: u64,
    /// Task group.
    pub task_group: String,
    /// `run`, `stop`, `evict`.
    pub desired_status: String,
    /// Why.
    pub desired_description: String,
    /// `pending`, `running`, `complete`, `failed`, `lost`, `unknown`.
    pub client_status: String,
    /// Why.
    pub client_description: String,
    /// Task states by task name.
    #[serde(deserialize_with = "null_as_default")]
    pub task_states: BTreeMap<String, TaskState>,
    /// Deployment health of this allocation (null until set).
    pub deployment_status: Option<AllocDeploymentStatus>,
    /// Creation index.
    pub create_index: u64,
    /// Last modification index.
    pub modify_index: u64,
    /// Creation time (UnixNano).
    pub create_time: i64,
    /// Modification time (UnixNano).
    pub modify_time: i64,
}

impl AllocationStub {
    /// `Some(true)`/`Some(false)` once the deployment judged this allocation, else `None`.
    pub fn healthy(&self) -> Option<bool> {
        self.deployment_status.as_ref().and_then(|d| d.healthy)
    }
}

/// State of one task.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct TaskState {
    /// `pending`, `running`, `dead`.
    pub state: String,
    /// True when the task failed.
    pub failed: bool,
    /// Restart count.
    pub restarts: u64,
    /// RFC3339.
    pub started_at: Option<String>,
    /// RFC3339 (`0001-01-01T00:00:00Z` while running).
    pub finished_at: Option<String>,
    /// Events, oldest first.
    #[serde(deserialize_with = "null_as_default")]
    pub events: Vec<TaskEvent>,
}

/// One task event.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct TaskEvent {
    /// e.g. `Started`, `Terminated`, `Restarting`.
    #[serde(rename = "Type")]
    pub event_type: String,
    /// UnixNano.
    pub time: i64,
    /// Whether the event fails the task.
    pub fails_task: bool,
    /// Message.
    #[serde(deserialize_with = "null_as_default")]
    pub message: String,
    /// Human message.
    #[serde(deserialize_with = "null_as_default")]
    pub display_message: String,
}

/// `DeploymentStatus` of an allocation.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct AllocDeploymentStatus {
    /// Health verdict; `None` while undecided.
    pub healthy: Option<bool>,
    /// RFC3339 time of the verdict.
    pub timestamp: Option<String>,
    /// Whether it is a canary.
    pub canary: bool,
    /// Index.
    pub modify_index: u64,
}

/// A deployment.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct Deployment {
    /// Deployment id.
    #[serde(rename = "ID")]
    pub id: String,
    /// Namespace.
    pub namespace: String,
    /// Job id.
    #[serde(rename = "JobID")]
    pub job_id: String,
    /// Job version it deploys.
    pub job_version: u64,
    /// JobModifyIndex of that version.
    pub job_modify_index: u64,
    /// Per task group progress.
    #[serde(deserialize_with = "null_as_default")]
    pub task_groups: BTreeMap<String, DeploymentTaskGroup>,
    /// `running`, `paused`, `failed`, `successful`, `cancelled`, … .
    pub status: String,
    /// Exact Nomad description (`Deployment completed successfully`, …).
    pub status_description: String,
    /// Creation index.
    pub create_index: u64,
    /// Last modification index.
    pub modify_index: u64,
}

impl Deployment {
    /// True for `successful`, `failed` and `cancelled`.
    pub fn is_terminal(&self) -> bool {
        matches!(self.status.as_str(), "successful" | "failed" | "cancelled")
    }
}

/// Deployment progress of one task group.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct DeploymentTaskGroup {
    /// Revert to the last stable version on failure.
    pub auto_revert: bool,
    /// Promote canaries automatically.
    pub auto_promote: bool,
    /// Canaries promoted.
    pub promoted: bool,
    /// Canary allocation ids.
    #[serde(deserialize_with = "null_as_default")]
    pub placed_canaries: Vec<String>,
    /// Canaries wanted.
    pub desired_canaries: u64,
    /// Allocations wanted.
    pub desired_total: u64,
    /// Allocations placed.
    pub placed_allocs: u64,
    /// Allocations healthy.
    pub healthy_allocs: u64,
    /// Allocations unhealthy.
    pub unhealthy_allocs: u64,
    /// Progress deadline (ns).
    pub progress_deadline: u64,
    /// RFC3339 time by which progress must be made.
    pub require_progress_by: Option<String>,
}

/// Answer of deployment actions (`fail`, `pause`, `promote`, `allocation-health`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct DeploymentUpdateResponse {
    /// Evaluation created.
    #[serde(rename = "EvalID")]
    pub eval_id: String,
    /// Its index.
    pub eval_create_index: u64,
    /// The deployment's new ModifyIndex.
    pub deployment_modify_index: u64,
    /// The version auto-revert registered, when it did.
    pub reverted_job_version: Option<u64>,
    /// Raft index.
    pub index: u64,
}

/// A client node in `/v1/nodes` (`structs.NodeListStub`; the stub carries `HostVolumes` since
/// `Node.Stub` copies it, so one list answers what the proxy's nodes can mount).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct NodeStub {
    /// Node ID.
    #[serde(rename = "ID")]
    pub id: String,
    /// Node name.
    pub name: String,
    /// Datacenter.
    pub datacenter: String,
    /// Node pool (`default` unless the client config names one).
    pub node_pool: String,
    /// `ready`, `down`, `initializing`, `disconnected`.
    pub status: String,
    /// `eligible` or `ineligible`.
    pub scheduling_eligibility: String,
    /// Whether it is draining.
    pub drain: bool,
    /// The client's `host_volume` blocks by name (`null` without any).
    #[serde(deserialize_with = "null_as_default")]
    pub host_volumes: BTreeMap<String, HostVolumeInfo>,
}

impl NodeStub {
    /// Whether the scheduler may place new allocations here.
    pub fn schedulable(&self) -> bool {
        self.status == "ready" && self.scheduling_eligibility == "eligible" && !self.drain
    }
}

/// One host volume of a node (`structs.ClientHostVolumeConfig`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct HostVolumeInfo {
    /// The host path.
    pub path: String,
    /// Read-only in the client config.
    pub read_only: bool,
}

/// One namespace's services in `/v1/services`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct ServiceNamespace {
    /// Namespace.
    pub namespace: String,
    /// Its services.
    #[serde(deserialize_with = "null_as_default")]
    pub services: Vec<ServiceStub>,
}

/// A service name and its tags.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct ServiceStub {
    /// Service name.
    pub service_name: String,
    /// Tags over all instances.
    #[serde(deserialize_with = "null_as_default")]
    pub tags: Vec<String>,
}

/// A Nomad native service registration.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct ServiceRegistration {
    /// `_nomad-task-<alloc>-<task>-<service>-<port>`.
    #[serde(rename = "ID")]
    pub id: String,
    /// Service name.
    pub service_name: String,
    /// Namespace.
    pub namespace: String,
    /// Node id.
    #[serde(rename = "NodeID")]
    pub node_id: String,
    /// Datacenter.
    pub datacenter: String,
    /// Job id.
    #[serde(rename = "JobID")]
    pub job_id: String,
    /// Allocation id.
    #[serde(rename = "AllocID")]
    pub alloc_id: String,
    /// Tags.
    #[serde(deserialize_with = "null_as_default")]
    pub tags: Vec<String>,
    /// Address.
    pub address: String,
    /// Port.
    pub port: u16,
    /// Creation index.
    pub create_index: u64,
    /// Last modification index.
    pub modify_index: u64,
}

/// An evaluation (`/v1/evaluation/:id`, `/v1/job/:id/evaluations`).
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct Evaluation {
    /// Evaluation id.
    #[serde(rename = "ID")]
    pub id: String,
    /// Job id.
    #[serde(rename = "JobID")]
    pub job_id: String,
    /// `blocked`, `pending`, `complete`, `failed`, `canceled`.
    pub status: String,
    /// Why.
    pub status_description: String,
    /// `job-register`, `deployment-watcher`, … .
    pub triggered_by: String,
    /// Job type.
    #[serde(rename = "Type")]
    pub eval_type: String,
    /// Priority.
    pub priority: u64,
    /// Placement failures.
    #[serde(rename = "FailedTGAllocs", deserialize_with = "null_as_default")]
    pub failed_tg_allocs: BTreeMap<String, Value>,
    /// Creation index.
    pub create_index: u64,
    /// Last modification index.
    pub modify_index: u64,
}

/// A row of `/v1/jobs`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct JobListStub {
    /// Job id.
    #[serde(rename = "ID")]
    pub id: String,
    /// Name.
    pub name: String,
    /// Type.
    #[serde(rename = "Type")]
    pub job_type: String,
    /// Status.
    pub status: String,
    /// JobModifyIndex.
    pub job_modify_index: u64,
    /// ModifyIndex.
    pub modify_index: u64,
}

/// `/v1/job/:id/summary`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct JobSummary {
    /// Job id.
    #[serde(rename = "JobID")]
    pub job_id: String,
    /// Allocation counts per task group (`Running`, `Failed`, …).
    #[serde(deserialize_with = "null_as_default")]
    pub summary: BTreeMap<String, BTreeMap<String, u64>>,
}

/// A namespace.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct Namespace {
    /// Name.
    pub name: String,
    /// Description.
    pub description: String,
}

/// `/v1/job/:id/stable` answer.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct JobStableResponse {
    /// The job's new JobModifyIndex.
    pub job_modify_index: u64,
}
