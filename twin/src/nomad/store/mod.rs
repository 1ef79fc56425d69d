//! The Nomad state store: jobs and their versions, evaluations, deployments, allocations and
//! service registrations, all under one raft-like index that only ever grows.
//!
//! One `Store` with its behaviour split by concern: `jobs` (register, versions, revert),
//! `scheduler` (evaluations and placement), `deployments`, `services`, and `views` (the JSON the
//! API answers with). This file holds the records, the index and the event buffer.

mod acl;
mod deployments;
mod jobs;
mod lifecycle;
mod nodes;
mod placement;
mod plan;
mod scheduler;
mod services;
mod variables;
mod views;

pub use acl::{AclPolicyRecord, AclTokenRecord};
pub use deployments::{deployment_update_body, is_active};
pub use nodes::{HostVolume, Node, NodeUpdate};
pub use scheduler::static_ports;
pub use variables::VariableRecord;

use super::jobspec;
use super::util::{now_nanos, rfc3339};
use super::view::View;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use std::collections::{BTreeMap, VecDeque};

/// How many versions of a job are kept (`job_tracked_versions` default).
pub const TRACKED_VERSIONS: usize = 6;
/// Event batches kept for `?index=` replays on the event stream.
const EVENT_BUFFER: usize = 1000;

/// One job: the current version and the kept versions, newest first.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct JobRecord {
    /// The current job.
    pub job: Value,
    /// Kept versions, newest first.
    pub versions: Vec<Value>,
}

/// A deployment (Nomad's `structs.Deployment`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Deployment {
    #[serde(rename = "ID")]
    pub id: String,
    pub namespace: String,
    #[serde(rename = "JobID")]
    pub job_id: String,
    pub job_version: u64,
    pub job_modify_index: u64,
    pub job_spec_modify_index: u64,
    pub job_create_index: u64,
    pub is_multiregion: bool,
    pub task_groups: BTreeMap<String, DeploymentGroup>,
    pub status: String,
    pub status_description: String,
    pub eval_priority: u64,
    pub create_index: u64,
    pub modify_index: u64,
    pub create_time: i64,
    pub modify_time: i64,
}

/// Per-group deployment state.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct DeploymentGroup {
    pub auto_revert: bool,
    pub auto_promote: bool,
    pub progress_deadline: u64,
    pub require_progress_by: String,
    pub promoted: bool,
    pub placed_canaries: Option<Vec<String>>,
    pub desired_canaries: u64,
    pub desired_total: u64,
    pub placed_allocs: u64,
    pub healthy_allocs: u64,
    pub unhealthy_allocs: u64,
    /// Nanoseconds; the deadline behind `RequireProgressBy` (not on the wire).
    #[serde(skip)]
    pub require_progress_by_nanos: i64,
}

/// One task event (Nomad's `TaskEvent`).
#[derive(Debug, Clone, Serialize, Deserialize, Default)]
#[serde(rename_all = "PascalCase")]
pub struct TaskEvent {
    pub r#type: String,
    pub time: i64,
    pub display_message: String,
    pub details: BTreeMap<String, String>,
    pub message: String,
    pub fails_task: bool,
    pub restart_reason: String,
    pub setup_error: String,
    pub driver_error: String,
    pub exit_code: i64,
    pub signal: i64,
    pub kill_timeout: u64,
    pub kill_error: String,
    pub kill_reason: String,
    pub start_delay: i64,
    pub download_error: String,
    pub validation_error: String,
    pub disk_limit: i64,
    pub disk_size: i64,
    pub failed_sibling: String,
    pub vault_error: String,
    pub task_signal_reason: String,
    pub task_signal: String,
    pub driver_message: String,
    pub generic_source: String,
}

impl TaskEvent {
    /// An event of `kind` with its human message, now (on the wall clock).
    pub fn new(kind: &str, display: impl Into<String>) -> TaskEvent {
        TaskEvent::at(now_nanos(), kind, display)
    }

    /// An event of `kind` with its human message at `time` (nanoseconds since the epoch).
    pub fn at(time: i64, kind: &str, display: impl Into<String>) -> TaskEvent {
        TaskEvent {
            r#type: kind.into(),
            time,
            display_message: display.into(),
            ..Default::default()
        }
    }
}

/// State of one task in an allocation.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct TaskState {
    pub state: String,
    pub failed: bool,
    pub restarts: u64,
    pub last_restart: String,
    pub started_at: String,
    pub finished_at: String,
    pub events: Vec<TaskEvent>,
    /// The driver's handle; a server sends `null` for tasks it has no handle for.
    pub task_handle: Option<Value>,
}

impl Default for TaskState {
    fn default() -> Self {
        TaskState {
            state: "pending".into(),
            failed: false,
            restarts: 0,
            last_restart: rfc3339(0),
            started_at: rfc3339(0),
            finished_at: rfc3339(0),
            events: Vec::new(),
            task_handle: None,
        }
    }
}

/// `DeploymentStatus` of an allocation.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct AllocDeploymentStatus {
    pub healthy: Option<bool>,
    pub timestamp: String,
    pub canary: bool,
    pub modify_index: u64,
}

/// A port the allocation holds.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AllocPort {
    /// The port label.
    pub label: String,
    /// The host port.
    pub value: u16,
    /// The `To` mapping from the job (kept for the wire).
    pub to: i64,
    /// Whether it was a reserved (static) port.
    pub reserved: bool,
}

/// An allocation.
#[derive(Debug, Clone)]
pub struct Alloc {
    pub id: String,
    pub eval_id: String,
    pub name: String,
    pub namespace: String,
    pub job_id: String,
    /// The node it runs on.
    pub node_id: String,
    pub job_type: String,
    pub job_version: u64,
    pub job: Value,
    pub task_group: String,
    pub desired_status: String,
    pub desired_description: String,
    pub client_status: String,
    pub client_description: String,
    pub task_states: BTreeMap<String, TaskState>,
    pub deployment_id: String,
    pub deployment_status: Option<AllocDeploymentStatus>,
    /// `DesiredTransition.Migrate`: set by an allocation stop or a drain; the scheduler then
    /// stops the allocation and places a replacement.
    pub migrate: bool,
    pub ports: Vec<AllocPort>,
    pub previous_allocation: String,
    pub next_allocation: String,
    pub create_index: u64,
    pub modify_index: u64,
    pub alloc_modify_index: u64,
    pub create_time: i64,
    pub modify_time: i64,
}

impl Alloc {
    /// Whether the client has finished with it.
    pub fn client_terminal(&self) -> bool {
        matches!(self.client_status.as_str(), "complete" | "failed" | "lost")
    }

    /// Whether the server wants it running.
    pub fn desired_run(&self) -> bool {
        self.desired_status == "run"
    }

    /// The task group of its job copy.
    pub fn group(&self) -> Value {
        View::job(&self.job)
            .named("TaskGroups", &self.task_group)
            .map(|g| g.value().clone())
            .unwrap_or(Value::Null)
    }
}

/// A Nomad-native service registration.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ServiceReg {
    /// `_nomad-task-<alloc>-<task>-<service>-<port>`.
    #[serde(rename = "ID")]
    pub id: String,
    /// The service's name.
    pub service_name: String,
    /// Its namespace.
    pub namespace: String,
    /// The node the allocation runs on.
    #[serde(rename = "NodeID")]
    pub node_id: String,
    /// The node's datacenter.
    pub datacenter: String,
    /// The job that registered it.
    #[serde(rename = "JobID")]
    pub job_id: String,
    /// The allocation that registered it.
    #[serde(rename = "AllocID")]
    pub alloc_id: String,
    /// Its tags.
    pub tags: Vec<String>,
    /// The address it answers on.
    pub address: String,
    /// The port it answers on.
    pub port: u16,
    /// Set by the store.
    pub create_index: u64,
    /// Set by the store.
    pub modify_index: u64,
}

/// One batch of events at one index.
#[derive(Debug, Clone)]
pub struct EventBatch {
    /// The raft index of the change.
    pub index: u64,
    /// The events, each `{Topic, Type, Key, Namespace, FilterKeys, Index, Payload}`.
    pub events: Vec<Value>,
}

/// Per-table indexes, as the real state store keeps them.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Tables {
    pub jobs: u64,
    pub evals: u64,
    pub allocs: u64,
    pub deployments: u64,
    pub services: u64,
    #[serde(default)]
    pub nodes: u64,
    #[serde(default)]
    pub acl_policies: u64,
    #[serde(default)]
    pub acl_tokens: u64,
    #[serde(default)]
    pub variables: u64,
}

/// What the executor must do after a state change.
#[derive(Debug, Default)]
pub struct Plan {
    /// Allocations to start, with the allocations they must wait for (same job, being stopped).
    pub start: Vec<(String, Vec<String>)>,
    /// Allocations to stop.
    pub stop: Vec<String>,
}

impl Plan {
    /// Adds another plan's work.
    pub fn extend(&mut self, other: Plan) {
        self.start.extend(other.start);
        self.stop.extend(other.stop);
    }
}

/// Where the store reads the time, in nanoseconds since the Unix epoch (timestamps, `SubmitTime`,
/// deployment progress deadlines). The HTTP twin reads the wall clock; an in-process caller may
/// pass its own, such as tokio's clock, which tests pause and advance.
#[derive(Clone)]
pub struct Clock(std::sync::Arc<dyn Fn() -> i64 + Send + Sync>);

impl Clock {
    /// The system clock.
    pub fn wall() -> Clock {
        Clock(std::sync::Arc::new(now_nanos))
    }

    /// A clock that reads `now`.
    pub fn new(now: impl Fn() -> i64 + Send + Sync + 'static) -> Clock {
        Clock(std::sync::Arc::new(now))
    }

    /// The current time.
    pub fn now(&self) -> i64 {
        (self.0)()
    }
}

impl std::fmt::Debug for Clock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("Clock").field(&self.now()).finish()
    }
}

/// The whole state.
#[derive(Debug)]
pub struct Store {
    /// Where the time comes from.
    pub clock: Clock,
    pub index: u64,
    pub node_id: String,
    pub node_name: String,
    pub datacenter: String,
    pub jobs: BTreeMap<(String, String), JobRecord>,
    pub evals: BTreeMap<String, Value>,
    pub deployments: BTreeMap<String, Deployment>,
    pub allocs: BTreeMap<String, Alloc>,
    pub services: BTreeMap<String, ServiceReg>,
    /// Client nodes by ID; `node_id` is the first (the agent the API runs on).
    pub nodes: BTreeMap<String, Node>,
    /// ACL policies by name.
    pub acl_policies: BTreeMap<String, AclPolicyRecord>,
    /// ACL tokens by accessor ID.
    pub acl_tokens: BTreeMap<String, AclTokenRecord>,
    /// Variables by namespace and path.
    pub variables: BTreeMap<(String, String), VariableRecord>,
    pub tables: Tables,
    pub events: VecDeque<EventBatch>,
    /// Events of the current write, published when the write ends.
    pub pending_events: Vec<Value>,
    /// Whether jobs changed in the current write (so the state file must be rewritten).
    pub jobs_dirty: bool,
    /// Whether system jobs get deployments (Nomad >= 1.11) or none (older servers).
    pub system_deployments: bool,
    /// The Nomad version nodes report.
    pub nomad_version: &'static str,
}

/// Persisted form (`nomad.json` in the data dir).
#[derive(Debug, Serialize, Deserialize)]
pub struct Persisted {
    pub index: u64,
    pub node_id: String,
    pub tables: Tables,
    pub jobs: Vec<PersistedJob>,
    /// ACL policies (their rules are parsed again on restore).
    #[serde(default)]
    pub acl_policies: Vec<AclPolicyRecord>,
    /// ACL tokens, as a Nomad server keeps them in its state.
    #[serde(default)]
    pub acl_tokens: Vec<AclTokenRecord>,
    /// Variables (kept in plain text: the twin has no keyring).
    #[serde(default)]
    pub variables: Vec<VariableRecord>,
}

/// One persisted job.
#[derive(Debug, Serialize, Deserialize)]
pub struct PersistedJob {
    pub namespace: String,
    pub id: String,
    pub record: JobRecord,
}

/// Register options.
#[derive(Debug, Default, Clone)]
pub struct RegisterOpts {
    pub enforce_index: bool,
    pub job_modify_index: u64,
    pub eval_priority: u64,
    pub trigger: &'static str,
    pub force_new_version: bool,
}

/// Result of a register/revert/deregister.
#[derive(Debug, Default, Clone)]
pub struct RegisterOutcome {
    pub eval_id: String,
    pub eval_create_index: u64,
    pub job_modify_index: u64,
    pub index: u64,
}

impl RegisterOutcome {
    /// The outcome of a write committed with its evaluation `eval_id` at `eval_index`: the reply
    /// names that raft write (the scheduler's plan is applied later in Nomad).
    pub fn evaluated(eval_id: String, eval_index: u64, job_modify_index: u64) -> RegisterOutcome {
        RegisterOutcome {
            eval_id,
            eval_create_index: eval_index,
            job_modify_index,
            index: eval_index,
        }
    }

    /// The body Nomad answers a register, revert or deregister with (`JobRegisterResponse`).
    pub fn body(&self) -> Value {
        json!({
            "EvalID": self.eval_id,
            "EvalCreateIndex": self.eval_create_index,
            "JobModifyIndex": self.job_modify_index,
            "Warnings": "",
            "Index": self.index,
            "LastContact": 0,
            "KnownLeader": false,
            "NextToken": "",
        })
    }
}

/// Errors that real Nomad answers with a status code and plain-text body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    /// HTTP status.
    pub status: u16,
    /// Plain-text body.
    pub message: String,
}

impl ApiError {
    /// An error with `status`.
    pub fn new(status: u16, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            message: message.into(),
        }
    }
}

pub const ENFORCE_PREFIX: &str = "Enforcing job modify index";

impl Store {
    /// An empty store for a node with a fresh ID, on the wall clock.
    pub fn new(node_id: String) -> Store {
        Store::with_clock(node_id, Clock::wall())
    }

    /// An empty store for a node with a fresh ID, reading the time from `clock`.
    pub fn with_clock(node_id: String, clock: Clock) -> Store {
        let first = Node::new(0, node_id.clone(), "dc1");
        Store {
            clock,
            index: 1,
            nodes: BTreeMap::from([(node_id.clone(), first)]),
            acl_policies: BTreeMap::new(),
            acl_tokens: BTreeMap::new(),
            variables: BTreeMap::new(),
            node_id,
            node_name: "hashistack-twin".into(),
            datacenter: "dc1".into(),
            jobs: BTreeMap::new(),
            evals: BTreeMap::new(),
            deployments: BTreeMap::new(),
            allocs: BTreeMap::new(),
            services: BTreeMap::new(),
            tables: Tables {
                jobs: 1,
                evals: 1,
                allocs: 1,
                deployments: 1,
                services: 1,
                nodes: 1,
                acl_policies: 1,
                acl_tokens: 1,
                variables: 1,
            },
            events: VecDeque::new(),
            pending_events: Vec::new(),
            jobs_dirty: false,
            system_deployments: true,
            nomad_version: "1.11.2",
        }
    }

    /// Restores jobs and indexes from the persisted form.
    pub fn restore(p: Persisted) -> Store {
        let mut st = Store::new(p.node_id);
        st.index = p.index.max(1);
        st.tables = p.tables;
        for j in p.jobs {
            st.jobs.insert((j.namespace, j.id), j.record);
        }
        st.restore_acl(p.acl_policies, p.acl_tokens);
        for v in p.variables {
            st.variables
                .insert((v.namespace.clone(), v.path.clone()), v);
        }
        st
    }

    /// The persisted form.
    pub fn persisted(&self) -> Persisted {
        Persisted {
            index: self.index,
            node_id: self.node_id.clone(),
            tables: self.tables.clone(),
            jobs: self
                .jobs
                .iter()
                .map(|((ns, id), r)| PersistedJob {
                    namespace: ns.clone(),
                    id: id.clone(),
                    record: r.clone(),
                })
                .collect(),
            acl_policies: self.acl_policies.values().cloned().collect(),
            acl_tokens: self.acl_tokens.values().cloned().collect(),
            variables: self.variables.values().cloned().collect(),
        }
    }

    /// Takes the next raft index.
    pub fn next_index(&mut self) -> u64 {
        self.index += 1;
        self.index
    }

    /// Records an event for the current write.
    pub fn emit(
        &mut self,
        topic: &str,
        kind: &str,
        key: &str,
        namespace: &str,
        filter_keys: Vec<String>,
        payload: Value,
    ) {
        self.pending_events.push(json!({
            "Topic": topic,
            "Type": kind,
            "Key": key,
            "Namespace": namespace,
            "FilterKeys": filter_keys,
            "Index": self.index,
            "Payload": payload,
        }));
    }

    /// Moves this write's events into the replay buffer; returns the batch to broadcast.
    pub fn take_events(&mut self) -> Option<EventBatch> {
        if self.pending_events.is_empty() {
            return None;
        }
        let batch = EventBatch {
            index: self.index,
            events: std::mem::take(&mut self.pending_events),
        };
        self.events.push_back(batch.clone());
        while self.events.len() > EVENT_BUFFER {
            self.events.pop_front();
        }
        Some(batch)
    }
}
