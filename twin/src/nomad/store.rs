//! The Nomad state store: jobs and their versions, evaluations, deployments, allocations and
//! service registrations, all under one raft-like index that only ever grows.

use super::jobspec::{self, arr, b, s, u};
use super::util::{now_nanos, rfc3339};
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
    /// An event of `kind` with its human message.
    pub fn new(kind: &str, display: impl Into<String>) -> TaskEvent {
        TaskEvent {
            r#type: kind.into(),
            time: now_nanos(),
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
        arr(&self.job, "TaskGroups")
            .iter()
            .find(|g| s(g, "Name") == self.task_group)
            .cloned()
            .unwrap_or(Value::Null)
    }
}

/// A Nomad-native service registration.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ServiceReg {
    #[serde(rename = "ID")]
    pub id: String,
    pub service_name: String,
    pub namespace: String,
    #[serde(rename = "NodeID")]
    pub node_id: String,
    pub datacenter: String,
    #[serde(rename = "JobID")]
    pub job_id: String,
    #[serde(rename = "AllocID")]
    pub alloc_id: String,
    pub tags: Vec<String>,
    pub address: String,
    pub port: u16,
    pub create_index: u64,
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

/// The whole state.
#[derive(Debug)]
pub struct Store {
    pub index: u64,
    pub node_id: String,
    pub node_name: String,
    pub datacenter: String,
    pub jobs: BTreeMap<(String, String), JobRecord>,
    pub evals: BTreeMap<String, Value>,
    pub deployments: BTreeMap<String, Deployment>,
    pub allocs: BTreeMap<String, Alloc>,
    pub services: BTreeMap<String, ServiceReg>,
    pub tables: Tables,
    pub events: VecDeque<EventBatch>,
    /// Events of the current write, published when the write ends.
    pub pending_events: Vec<Value>,
    /// Whether jobs changed in the current write (so the state file must be rewritten).
    pub jobs_dirty: bool,
    /// Whether system jobs get deployments (Nomad >= 1.11) or none (older servers).
    pub system_deployments: bool,
}

/// Persisted form (`nomad.json` in the data dir).
#[derive(Debug, Serialize, Deserialize)]
pub struct Persisted {
    pub index: u64,
    pub node_id: String,
    pub tables: Tables,
    pub jobs: Vec<PersistedJob>,
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
    /// An empty store for a node with a fresh ID.
    pub fn new(node_id: String) -> Store {
        Store {
            index: 1,
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
            },
            events: VecDeque::new(),
            pending_events: Vec::new(),
            jobs_dirty: false,
            system_deployments: true,
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

    // === jobs ===

    /// The current job.
    pub fn job(&self, ns: &str, id: &str) -> Option<&Value> {
        self.jobs
            .get(&(ns.to_string(), id.to_string()))
            .map(|r| &r.job)
    }

    fn emit_job(&mut self, kind: &str, job: &Value) {
        let ns = s(job, "Namespace").to_string();
        let id = s(job, "ID").to_string();
        self.emit("Job", kind, &id, &ns, vec![], json!({"Job": job}));
    }

    /// Registers `job` (already decoded and canonicalized), Nomad's `Job.Register`.
    pub fn register(
        &mut self,
        mut job: Value,
        opts: &RegisterOpts,
    ) -> Result<(RegisterOutcome, Plan), ApiError> {
        let ns = s(&job, "Namespace").to_string();
        let id = s(&job, "ID").to_string();
        let key = (ns.clone(), id.clone());
        let existing = self.jobs.get(&key).map(|r| r.job.clone());
        if opts.enforce_index {
            let sent = opts.job_modify_index;
            match &existing {
                Some(_) if sent == 0 => {
                    return Err(ApiError::new(
                        500,
                        format!("{ENFORCE_PREFIX} 0: job already exists"),
                    ));
                }
                Some(cur) if u(cur, "JobModifyIndex") != sent => {
                    return Err(ApiError::new(
                        500,
                        format!(
                            "{ENFORCE_PREFIX} {sent}: job exists with conflicting job modify index: {}",
                            u(cur, "JobModifyIndex")
                        ),
                    ));
                }
                None if sent != 0 => {
                    return Err(ApiError::new(
                        500,
                        format!("{ENFORCE_PREFIX} {sent}: job does not exist"),
                    ));
                }
                _ => {}
            }
        }
        if let Some(cur) = &existing {
            validate_job_update(cur, &job)?;
        }
        let changed = opts.force_new_version
            || existing
                .as_ref()
                .is_none_or(|cur| jobspec::spec_changed(cur, &job));
        let mut plan = Plan::default();
        let job_modify_index;
        if changed {
            let index = self.next_index();
            let now = now_nanos();
            let (version, create_index) = match &existing {
                Some(cur) => (u(cur, "Version") + 1, u(cur, "CreateIndex")),
                None => (0, index),
            };
            let stop = b(&job, "Stop");
            let obj = job
                .as_object_mut()
                .ok_or_else(|| ApiError::new(400, "Job must be specified"))?;
            obj.insert("Version".into(), json!(version));
            obj.insert("CreateIndex".into(), json!(create_index));
            obj.insert("ModifyIndex".into(), json!(index));
            obj.insert("JobModifyIndex".into(), json!(index));
            obj.insert("SubmitTime".into(), json!(now));
            obj.insert("Stable".into(), json!(false));
            obj.insert(
                "Status".into(),
                json!(if stop { "dead" } else { "pending" }),
            );
            job_modify_index = index;
            let record = self.jobs.entry(key.clone()).or_insert(JobRecord {
                job: Value::Null,
                versions: vec![],
            });
            record.job = job.clone();
            record.versions.insert(0, job.clone());
            prune_versions(&mut record.versions);
            self.tables.jobs = index;
            self.jobs_dirty = true;
            self.emit_job("JobRegistered", &job);
        } else {
            job_modify_index = existing
                .as_ref()
                .map(|c| u(c, "JobModifyIndex"))
                .unwrap_or(0);
        }
        // Periodic and parameterized jobs are templates for child jobs: no evaluation of their own.
        let template = ["Periodic", "ParameterizedJob"]
            .iter()
            .any(|k| job.get(*k).is_some_and(|v| !v.is_null()));
        if template && !b(&job, "Stop") {
            self.refresh_job_status(&ns, &id);
            let out = RegisterOutcome {
                eval_id: String::new(),
                eval_create_index: 0,
                job_modify_index,
                index: self.index,
            };
            return Ok((out, plan));
        }
        // Since 0.12.1 the evaluation is committed atomically with a job write (same index).
        let (eval_id, eval_index) = self.create_eval(
            &ns,
            &id,
            opts.trigger,
            job_modify_index,
            opts.eval_priority,
            changed.then_some(job_modify_index),
        );
        plan.extend(self.reconcile(&ns, &id, &eval_id, changed));
        self.refresh_job_status(&ns, &id);
        Ok((
            RegisterOutcome {
                eval_id,
                eval_create_index: eval_index,
                job_modify_index,
                // The reply names the raft write of the job and its evaluation; the scheduler's
                // plan is applied later in Nomad.
                index: eval_index,
            },
            plan,
        ))
    }

    /// Stops (or purges) a job, Nomad's `Job.Deregister`.
    pub fn deregister(&mut self, ns: &str, id: &str, purge: bool) -> (RegisterOutcome, Plan) {
        let key = (ns.to_string(), id.to_string());
        let Some(current) = self.jobs.get(&key).map(|r| r.job.clone()) else {
            return (RegisterOutcome::default(), Plan::default());
        };
        let mut plan = Plan::default();
        let job_modify_index;
        if purge {
            let index = self.next_index();
            self.jobs.remove(&key);
            self.tables.jobs = index;
            self.jobs_dirty = true;
            job_modify_index = index;
            self.emit_job("JobDeregistered", &current);
        } else {
            // The FSM upserts a stopped copy on every deregister, even of a stopped job: a new
            // version and JobModifyIndex, with the evaluation at the same index.
            let mut stopped = current.clone();
            if let Some(o) = stopped.as_object_mut() {
                o.insert("Stop".into(), json!(true));
            }
            let opts = RegisterOpts {
                trigger: "job-deregister",
                force_new_version: true,
                ..Default::default()
            };
            match self.register(stopped, &opts) {
                Ok((out, p)) => return (out, p),
                Err(_) => job_modify_index = u(&current, "JobModifyIndex"),
            }
        }
        let (eval_id, eval_index) = self.create_eval(
            ns,
            id,
            "job-deregister",
            job_modify_index,
            0,
            purge.then_some(job_modify_index),
        );
        plan.extend(self.stop_job_allocs(ns, id, "alloc not needed due to job update"));
        self.cancel_active_deployments(ns, id, "Cancelled because job is stopped");
        if purge {
            for svc in self
                .services
                .values()
                .filter(|r| r.namespace == ns && r.job_id == id)
                .map(|r| r.id.clone())
                .collect::<Vec<_>>()
            {
                self.remove_service(&svc);
            }
        }
        (
            RegisterOutcome {
                eval_id,
                eval_create_index: eval_index,
                job_modify_index,
                index: eval_index,
            },
            plan,
        )
    }

    /// Reverts to version `version`, Nomad's `Job.Revert`.
    pub fn revert(
        &mut self,
        ns: &str,
        id: &str,
        version: u64,
        enforce_prior: Option<u64>,
    ) -> Result<(RegisterOutcome, Plan), ApiError> {
        let record = self
            .jobs
            .get(&(ns.to_string(), id.to_string()))
            .ok_or_else(|| ApiError::new(500, format!("job \"{id}\" not found")))?;
        let current = record.job.clone();
        let cur_version = u(&current, "Version");
        if version == cur_version {
            return Err(ApiError::new(500, "can't revert to current version"));
        }
        // Nomad's order: current version, then the version lookup, then EnforcePriorVersion.
        let target = record
            .versions
            .iter()
            .find(|v| u(v, "Version") == version)
            .cloned()
            .ok_or_else(|| {
                ApiError::new(
                    500,
                    format!("job \"{id}\" in namespace \"{ns}\" at version {version} not found"),
                )
            })?;
        if let Some(prior) = enforce_prior
            && prior != cur_version
        {
            return Err(ApiError::new(
                500,
                format!("Current job has version {cur_version}; enforcing version {prior}"),
            ));
        }
        let mut job = target;
        if let Some(o) = job.as_object_mut() {
            o.insert("VersionTag".into(), Value::Null);
            o.insert("Stable".into(), json!(false));
        }
        let opts = RegisterOpts {
            enforce_index: enforce_prior.is_some(),
            job_modify_index: u(&current, "JobModifyIndex"),
            trigger: "job-register",
            ..Default::default()
        };
        // Job.Revert goes through Job.Register: a target equal to the current spec creates no
        // version, only an evaluation.
        self.register(job, &opts)
    }

    /// Sets a version's `Stable` flag, Nomad's `Job.Stable`.
    pub fn set_stable(
        &mut self,
        ns: &str,
        id: &str,
        version: u64,
        stable: bool,
    ) -> Result<u64, ApiError> {
        let key = (ns.to_string(), id.to_string());
        if !self.jobs.contains_key(&key) {
            return Err(ApiError::new(500, format!("job \"{id}\" not found")));
        }
        let index = self.next_index();
        let mut job_after = None;
        if let Some(r) = self.jobs.get_mut(&key) {
            let mut found = false;
            for v in r.versions.iter_mut() {
                if u(v, "Version") == version {
                    if let Some(o) = v.as_object_mut() {
                        o.insert("Stable".into(), json!(stable));
                        o.insert("ModifyIndex".into(), json!(index));
                    }
                    found = true;
                }
            }
            if !found {
                return Err(ApiError::new(
                    500,
                    format!("job \"{id}\" in namespace \"{ns}\" at version {version} not found"),
                ));
            }
            if u(&r.job, "Version") == version
                && let Some(o) = r.job.as_object_mut()
            {
                o.insert("Stable".into(), json!(stable));
                o.insert("ModifyIndex".into(), json!(index));
            }
            job_after = Some(r.job.clone());
        }
        self.tables.jobs = index;
        self.jobs_dirty = true;
        if let Some(j) = job_after {
            self.emit_job("JobRegistered", &j);
        }
        Ok(index)
    }

    fn create_eval(
        &mut self,
        ns: &str,
        id: &str,
        trigger: &str,
        job_modify_index: u64,
        priority: u64,
        at_index: Option<u64>,
    ) -> (String, u64) {
        // An evaluation submitted with the job write shares its raft index.
        let index = at_index.unwrap_or_else(|| self.next_index());
        let eval_id = uuid::Uuid::new_v4().to_string();
        let job = self.job(ns, id).cloned().unwrap_or(Value::Null);
        let priority = if priority > 0 {
            priority
        } else {
            u(&job, "Priority").max(50)
        };
        let now = now_nanos();
        let queued: serde_json::Map<String, Value> = arr(&job, "TaskGroups")
            .iter()
            .map(|g| (s(g, "Name").to_string(), json!(0)))
            .collect();
        let eval = json!({
            "ID": eval_id,
            "Namespace": ns,
            "Priority": priority,
            "Type": if s(&job, "Type").is_empty() { "service" } else { s(&job, "Type") },
            "TriggeredBy": trigger,
            "JobID": id,
            "JobModifyIndex": job_modify_index,
            "NodeID": "",
            "NodeModifyIndex": 0,
            "DeploymentID": "",
            "Status": "complete",
            "StatusDescription": "",
            "Wait": 0,
            "WaitUntil": null,
            "NextEval": "",
            "PreviousEval": "",
            "BlockedEval": "",
            "RelatedEvals": null,
            "FailedTGAllocs": null,
            "ClassEligibility": null,
            "EscapedComputedClass": false,
            "AnnotatePlan": false,
            "QueuedAllocations": queued,
            "SnapshotIndex": index,
            "CreateIndex": index,
            "ModifyIndex": index,
            "CreateTime": now,
            "ModifyTime": now,
        });
        self.evals.insert(eval_id.clone(), eval.clone());
        self.tables.evals = index;
        self.emit(
            "Evaluation",
            "EvaluationUpdated",
            &eval_id,
            ns,
            vec![id.to_string()],
            json!({"Evaluation": eval}),
        );
        (eval_id, index)
    }

    /// Brings the job's allocations in line with its current version (the scheduler's reconcile).
    /// Any spec change replaces the allocations (a destructive update); an unchanged spec keeps them.
    fn reconcile(&mut self, ns: &str, id: &str, eval_id: &str, spec_changed: bool) -> Plan {
        let mut plan = Plan::default();
        let Some(job) = self.job(ns, id).cloned() else {
            return plan;
        };
        if b(&job, "Stop") {
            plan.extend(self.stop_job_allocs(ns, id, "alloc not needed due to job update"));
            self.cancel_active_deployments(ns, id, "Cancelled because job is stopped");
            return plan;
        }
        let version = u(&job, "Version");
        let job_type = s(&job, "Type").to_string();
        let live: Vec<Alloc> = self
            .allocs
            .values()
            .filter(|a| {
                a.namespace == ns && a.job_id == id && a.desired_run() && !a.client_terminal()
            })
            .cloned()
            .collect();
        let mut to_place: Vec<(String, u64)> = Vec::new();
        let mut waits: Vec<String> = Vec::new();
        for group in arr(&job, "TaskGroups") {
            let name = s(group, "Name").to_string();
            let count = if job_type == "system" || job_type == "sysbatch" {
                1
            } else {
                u(group, "Count")
            };
            let (current, old): (Vec<&Alloc>, Vec<&Alloc>) = live
                .iter()
                .filter(|a| a.task_group == name)
                .partition(|a| a.job_version == version || !spec_changed);
            for a in &old {
                plan.stop.push(a.id.clone());
                waits.push(a.id.clone());
            }
            let mut kept = 0u64;
            for a in &current {
                if kept < count {
                    kept += 1;
                } else {
                    plan.stop.push(a.id.clone());
                    waits.push(a.id.clone());
                }
            }
            let used: Vec<u64> = current
                .iter()
                .filter_map(|a| alloc_index(&a.name))
                .collect();
            let mut next = 0u64;
            for _ in kept..count {
                while used.contains(&next) || to_place.iter().any(|(g, i)| *g == name && *i == next)
                {
                    next += 1;
                }
                to_place.push((name.clone(), next));
                next += 1;
            }
        }
        for id_ in &plan.stop {
            self.set_desired_stop(id_, "alloc not needed due to job update");
        }
        let deployment_id = if spec_changed {
            self.create_deployment(&job)
        } else {
            None
        };
        if !spec_changed
            && let Some(d) = self.active_deployment(ns, id)
            && d.job_version == version
        {
            // Reschedules and scale-ups of the same version join its deployment.
            let d_id = d.id.clone();
            let to_place = self.drop_port_collisions(&job, eval_id, &plan.stop, to_place);
            for (group, index) in to_place {
                let alloc_id = self.place_alloc(&job, &group, index, eval_id, Some(&d_id));
                plan.start.push((alloc_id, waits.clone()));
            }
            return plan;
        }
        let to_place = self.drop_port_collisions(&job, eval_id, &plan.stop, to_place);
        for (group, index) in to_place {
            let alloc_id = self.place_alloc(&job, &group, index, eval_id, deployment_id.as_deref());
            plan.start.push((alloc_id, waits.clone()));
        }
        if let Some(d_id) = deployment_id {
            // A deployment with nothing to place (count 0) is complete at once.
            self.check_deployment_progress(&d_id);
        }
        plan
    }

    /// The one node has each static (reserved) port once: a placement whose group asks for a port
    /// a running allocation (or an earlier placement of this plan) holds is not placed. Like the
    /// scheduler, the evaluation then records the failure in `FailedTGAllocs` (dimension
    /// `network: reserved port collision <label>=<port>`) and gets a blocked follow-up.
    fn drop_port_collisions(
        &mut self,
        job: &Value,
        eval_id: &str,
        stopping: &[String],
        to_place: Vec<(String, u64)>,
    ) -> Vec<(String, u64)> {
        let mut held: Vec<u64> = self
            .allocs
            .values()
            .filter(|a| a.desired_run() && !a.client_terminal() && !stopping.contains(&a.id))
            .flat_map(|a| static_ports(&a.group()))
            .map(|(_, p)| p)
            .collect();
        let mut placed = Vec::new();
        let mut failed: BTreeMap<String, (String, u64)> = BTreeMap::new();
        for (group, index) in to_place {
            let g = arr(job, "TaskGroups")
                .iter()
                .find(|g| s(g, "Name") == group)
                .cloned()
                .unwrap_or(Value::Null);
            let ports = static_ports(&g);
            match ports.iter().find(|(_, p)| held.contains(p)) {
                Some((label, port)) => {
                    let entry = failed.entry(group.clone()).or_insert_with(|| {
                        (
                            format!("network: reserved port collision {label}={port}"),
                            0,
                        )
                    });
                    entry.1 += 1;
                }
                None => {
                    held.extend(ports.iter().map(|(_, p)| *p));
                    placed.push((group, index));
                }
            }
        }
        if failed.is_empty() {
            return placed;
        }
        let metrics: serde_json::Map<String, Value> = failed
            .iter()
            .map(|(group, (dimension, n))| {
                (
                    group.clone(),
                    json!({
                        "NodesEvaluated": 1, "NodesFiltered": 0, "NodesInPool": 1,
                        "NodesAvailable": {self.datacenter.clone(): 1},
                        "ClassFiltered": null, "ConstraintFiltered": null, "NodesExhausted": 1,
                        "ClassExhausted": null, "DimensionExhausted": {dimension.clone(): 1},
                        "QuotaExhausted": null, "ResourcesExhausted": null, "Scores": null,
                        "ScoreMetaData": null, "AllocationTime": 0, "CoalescedFailures": n - 1,
                    }),
                )
            })
            .collect();
        let queued: serde_json::Map<String, Value> = failed
            .iter()
            .map(|(g, (_, n))| (g.clone(), json!(n)))
            .collect();
        let blocked_id = uuid::Uuid::new_v4().to_string();
        if let Some(eval) = self.evals.get(eval_id).cloned() {
            let mut blocked = eval.clone();
            if let Some(o) = blocked.as_object_mut() {
                o.insert("ID".into(), json!(blocked_id));
                o.insert("Status".into(), json!("blocked"));
                o.insert("TriggeredBy".into(), json!("queued-allocs"));
                o.insert("PreviousEval".into(), json!(eval_id));
                o.insert(
                    "StatusDescription".into(),
                    json!("created to place remaining allocations"),
                );
                o.insert("ClassEligibility".into(), json!({}));
            }
            self.evals.insert(blocked_id.clone(), blocked);
            if let Some(o) = self.evals.get_mut(eval_id).and_then(Value::as_object_mut) {
                o.insert("FailedTGAllocs".into(), Value::Object(metrics));
                o.insert("BlockedEval".into(), json!(blocked_id));
                o.insert("QueuedAllocations".into(), Value::Object(queued));
            }
        }
        placed
    }

    /// Places a restored job's allocations again (no new version, no new deployment).
    pub fn replace_allocs_after_restore(&mut self, ns: &str, id: &str) -> Plan {
        let jmi = self
            .job(ns, id)
            .map(|j| u(j, "JobModifyIndex"))
            .unwrap_or(0);
        let (eval_id, _) = self.create_eval(ns, id, "node-update", jmi, 0, None);
        let plan = self.reconcile(ns, id, &eval_id, false);
        self.refresh_job_status(ns, id);
        plan
    }

    fn stop_job_allocs(&mut self, ns: &str, id: &str, why: &str) -> Plan {
        let ids: Vec<String> = self
            .allocs
            .values()
            .filter(|a| a.namespace == ns && a.job_id == id && a.desired_run())
            .map(|a| a.id.clone())
            .collect();
        for a in &ids {
            self.set_desired_stop(a, why);
        }
        Plan {
            start: vec![],
            stop: ids,
        }
    }

    fn set_desired_stop(&mut self, alloc_id: &str, why: &str) {
        let index = self.next_index();
        if let Some(a) = self.allocs.get_mut(alloc_id) {
            a.desired_status = "stop".into();
            a.desired_description = why.into();
            a.modify_index = index;
            a.alloc_modify_index = index;
            a.modify_time = now_nanos();
        }
        self.tables.allocs = index;
        self.emit_alloc("AllocationUpdateDesiredStatus", alloc_id);
    }

    fn place_alloc(
        &mut self,
        job: &Value,
        group_name: &str,
        index_in_group: u64,
        eval_id: &str,
        deployment: Option<&str>,
    ) -> String {
        let index = self.next_index();
        let now = now_nanos();
        let id = uuid::Uuid::new_v4().to_string();
        let group = arr(job, "TaskGroups")
            .iter()
            .find(|g| s(g, "Name") == group_name)
            .cloned()
            .unwrap_or(Value::Null);
        let task_states = arr(&group, "Tasks")
            .iter()
            .map(|t| (s(t, "Name").to_string(), TaskState::default()))
            .collect();
        let alloc = Alloc {
            id: id.clone(),
            eval_id: eval_id.to_string(),
            name: format!("{}.{}[{}]", s(job, "ID"), group_name, index_in_group),
            namespace: s(job, "Namespace").to_string(),
            job_id: s(job, "ID").to_string(),
            job_type: s(job, "Type").to_string(),
            job_version: u(job, "Version"),
            job: job.clone(),
            task_group: group_name.to_string(),
            desired_status: "run".into(),
            desired_description: String::new(),
            client_status: "pending".into(),
            client_description: String::new(),
            task_states,
            deployment_id: deployment.unwrap_or("").to_string(),
            deployment_status: None,
            ports: Vec::new(),
            previous_allocation: String::new(),
            next_allocation: String::new(),
            create_index: index,
            modify_index: index,
            alloc_modify_index: index,
            create_time: now,
            modify_time: now,
        };
        self.allocs.insert(id.clone(), alloc);
        self.tables.allocs = index;
        if let Some(d_id) = deployment {
            if let Some(d) = self.deployments.get_mut(d_id) {
                if let Some(g) = d.task_groups.get_mut(group_name) {
                    g.placed_allocs += 1;
                    if g.require_progress_by_nanos == 0 && g.progress_deadline > 0 {
                        g.require_progress_by_nanos = now + g.progress_deadline as i64;
                        g.require_progress_by = rfc3339(g.require_progress_by_nanos);
                    }
                }
                d.modify_index = index;
                d.modify_time = now;
            }
            self.tables.deployments = index;
        }
        self.emit_alloc("AllocationCreated", &id);
        id
    }

    fn emit_alloc(&mut self, kind: &str, alloc_id: &str) {
        if let Some(a) = self.allocs.get(alloc_id) {
            let payload = json!({"Allocation": self.alloc_json(a, false)});
            let (ns, job_id, dep) = (
                a.namespace.clone(),
                a.job_id.clone(),
                a.deployment_id.clone(),
            );
            let mut keys = vec![job_id];
            if !dep.is_empty() {
                keys.push(dep);
            }
            self.emit("Allocation", kind, alloc_id, &ns, keys, payload);
        }
    }

    // === deployments ===

    fn create_deployment(&mut self, job: &Value) -> Option<String> {
        let ns = s(job, "Namespace").to_string();
        let id = s(job, "ID").to_string();
        let job_type = s(job, "Type");
        if !(job_type == "service" || job_type == "system") {
            return None;
        }
        // Before 1.11 the system scheduler never creates deployments: `/v1/job/:id/deployment`
        // stays null and allocations carry no deployment health.
        if job_type == "system" && !self.system_deployments {
            return None;
        }
        let mut groups = BTreeMap::new();
        for g in arr(job, "TaskGroups") {
            let upd = g.get("Update").cloned().unwrap_or(Value::Null);
            if upd.is_null() || u(&upd, "MaxParallel") == 0 {
                continue;
            }
            let desired = if job_type == "system" {
                1
            } else {
                u(g, "Count")
            };
            groups.insert(
                s(g, "Name").to_string(),
                DeploymentGroup {
                    auto_revert: b(&upd, "AutoRevert"),
                    auto_promote: b(&upd, "AutoPromote"),
                    progress_deadline: u(&upd, "ProgressDeadline"),
                    require_progress_by: rfc3339(0),
                    promoted: false,
                    placed_canaries: None,
                    desired_canaries: 0,
                    desired_total: desired,
                    placed_allocs: 0,
                    healthy_allocs: 0,
                    unhealthy_allocs: 0,
                    require_progress_by_nanos: 0,
                },
            );
        }
        if groups.is_empty() {
            return None;
        }
        self.cancel_active_deployments(&ns, &id, "Cancelled due to newer version of job");
        let index = self.next_index();
        let now = now_nanos();
        let d = Deployment {
            id: uuid::Uuid::new_v4().to_string(),
            namespace: ns.clone(),
            job_id: id.clone(),
            job_version: u(job, "Version"),
            job_modify_index: u(job, "JobModifyIndex"),
            job_spec_modify_index: u(job, "JobModifyIndex"),
            job_create_index: u(job, "CreateIndex"),
            is_multiregion: false,
            task_groups: groups,
            status: "running".into(),
            status_description: "Deployment is running".into(),
            eval_priority: u(job, "Priority"),
            create_index: index,
            modify_index: index,
            create_time: now,
            modify_time: now,
        };
        let d_id = d.id.clone();
        self.deployments.insert(d_id.clone(), d);
        self.tables.deployments = index;
        self.emit_deployment("DeploymentStatusUpdate", &d_id);
        Some(d_id)
    }

    fn emit_deployment(&mut self, kind: &str, d_id: &str) {
        if let Some(d) = self.deployments.get(d_id) {
            let payload = json!({"Deployment": d});
            let (ns, job) = (d.namespace.clone(), d.job_id.clone());
            self.emit("Deployment", kind, d_id, &ns, vec![job], payload);
        }
    }

    /// The active (non-terminal) deployment of a job.
    pub fn active_deployment(&self, ns: &str, id: &str) -> Option<&Deployment> {
        self.deployments
            .values()
            .filter(|d| d.namespace == ns && d.job_id == id && is_active(&d.status))
            .max_by_key(|d| d.create_index)
    }

    fn cancel_active_deployments(&mut self, ns: &str, id: &str, why: &str) {
        let ids: Vec<String> = self
            .deployments
            .values()
            .filter(|d| d.namespace == ns && d.job_id == id && is_active(&d.status))
            .map(|d| d.id.clone())
            .collect();
        for d_id in ids {
            self.set_deployment_status(&d_id, "cancelled", why);
        }
    }

    fn set_deployment_status(&mut self, d_id: &str, status: &str, description: &str) {
        let index = self.next_index();
        if let Some(d) = self.deployments.get_mut(d_id) {
            d.status = status.into();
            d.status_description = description.into();
            d.modify_index = index;
            d.modify_time = now_nanos();
        }
        self.tables.deployments = index;
        self.emit_deployment("DeploymentStatusUpdate", d_id);
    }

    /// Records an allocation's health as its client would (`DeploymentStatus.Healthy`), then
    /// advances its deployment. Returns work for the executor (an auto-revert may start allocs).
    pub fn set_alloc_health(&mut self, alloc_id: &str, healthy: bool) -> Plan {
        // Health is tracked only for allocations that belong to a deployment (as a client does).
        if self
            .allocs
            .get(alloc_id)
            .is_none_or(|a| a.deployment_id.is_empty())
        {
            return Plan::default();
        }
        let index = self.next_index();
        let Some(a) = self.allocs.get_mut(alloc_id) else {
            return Plan::default();
        };
        if a.deployment_status
            .as_ref()
            .and_then(|d| d.healthy)
            .is_some()
        {
            return Plan::default();
        }
        a.deployment_status = Some(AllocDeploymentStatus {
            healthy: Some(healthy),
            timestamp: rfc3339(now_nanos()),
            canary: false,
            modify_index: index,
        });
        a.modify_index = index;
        a.modify_time = now_nanos();
        let (d_id, group) = (a.deployment_id.clone(), a.task_group.clone());
        self.tables.allocs = index;
        self.emit_alloc("AllocationUpdated", alloc_id);
        if d_id.is_empty() {
            return Plan::default();
        }
        let mut fail_now = false;
        if let Some(d) = self.deployments.get_mut(&d_id) {
            if !is_active(&d.status) {
                return Plan::default();
            }
            if let Some(g) = d.task_groups.get_mut(&group) {
                if healthy {
                    g.healthy_allocs += 1;
                    if g.progress_deadline > 0 {
                        g.require_progress_by_nanos = now_nanos() + g.progress_deadline as i64;
                        g.require_progress_by = rfc3339(g.require_progress_by_nanos);
                    }
                } else {
                    g.unhealthy_allocs += 1;
                    fail_now = g.progress_deadline == 0;
                }
            }
            d.modify_index = index;
            d.modify_time = now_nanos();
        }
        self.tables.deployments = index;
        self.emit_deployment("DeploymentAllocHealth", &d_id);
        if fail_now {
            return self
                .fail_deployment(&d_id, "Failed due to unhealthy allocations")
                .unwrap_or_default()
                .1;
        }
        self.check_deployment_progress(&d_id);
        Plan::default()
    }

    /// Marks a deployment successful when every group has its healthy allocations; the job
    /// version then becomes stable.
    pub fn check_deployment_progress(&mut self, d_id: &str) {
        let Some(d) = self.deployments.get(d_id) else {
            return;
        };
        if d.status != "running" {
            return;
        }
        if d.task_groups
            .values()
            .all(|g| g.healthy_allocs >= g.desired_total)
        {
            let (ns, job, version) = (d.namespace.clone(), d.job_id.clone(), d.job_version);
            self.set_deployment_status(d_id, "successful", "Deployment completed successfully");
            let _ = self.set_stable(&ns, &job, version, true);
        }
    }

    /// Fails deployments whose progress deadline passed. Returns executor work from auto-reverts.
    pub fn check_deadlines(&mut self) -> Plan {
        let now = now_nanos();
        let expired: Vec<String> = self
            .deployments
            .values()
            .filter(|d| d.status == "running")
            .filter(|d| {
                d.task_groups.values().any(|g| {
                    g.progress_deadline > 0
                        && g.require_progress_by_nanos > 0
                        && now > g.require_progress_by_nanos
                        && g.healthy_allocs < g.desired_total
                })
            })
            .map(|d| d.id.clone())
            .collect();
        let mut plan = Plan::default();
        for d_id in expired {
            if let Ok((_, p)) = self.fail_deployment(&d_id, "Failed due to progress deadline") {
                plan.extend(p);
            }
        }
        plan
    }

    /// Fails a deployment and auto-reverts when a group asks for it. Returns the reverted version.
    pub fn fail_deployment(
        &mut self,
        d_id: &str,
        description: &str,
    ) -> Result<(Option<u64>, Plan), ApiError> {
        let d = self
            .deployments
            .get(d_id)
            .cloned()
            .ok_or_else(|| ApiError::new(500, "deployment not found"))?;
        if !is_active(&d.status) {
            return Err(ApiError::new(500, "can't fail terminal deployment"));
        }
        let auto_revert = d.task_groups.values().any(|g| g.auto_revert);
        let mut description = description.to_string();
        let mut revert_to = None;
        if auto_revert {
            let record = self
                .jobs
                .get(&(d.namespace.clone(), d.job_id.clone()))
                .cloned();
            let current = record
                .as_ref()
                .map(|r| r.job.clone())
                .unwrap_or(Value::Null);
            let stable = record.as_ref().and_then(|r| {
                r.versions
                    .iter()
                    .find(|v| b(v, "Stable") && u(v, "Version") != d.job_version)
                    .cloned()
            });
            match stable {
                Some(v) if jobspec::spec_changed(&v, &current) => {
                    description = format!(
                        "{description} - rolling back to job version {}",
                        u(&v, "Version")
                    );
                    revert_to = Some(v);
                }
                Some(v) => {
                    description = format!(
                        "{description} - not rolling back to stable job version {} as current job has same specification",
                        u(&v, "Version")
                    );
                }
                None => {
                    description = format!("{description} - no stable job version to auto revert to")
                }
            }
        }
        self.set_deployment_status(d_id, "failed", &description);
        let mut plan = Plan::default();
        let mut reverted = None;
        if let Some(v) = revert_to {
            reverted = Some(u(&v, "Version"));
            let mut job = v;
            if let Some(o) = job.as_object_mut() {
                o.insert("VersionTag".into(), Value::Null);
            }
            let opts = RegisterOpts {
                trigger: "deployment-watcher",
                ..Default::default()
            };
            if let Ok((_, p)) = self.register(job, &opts) {
                plan.extend(p);
            }
        }
        Ok((reverted, plan))
    }

    /// Pauses or resumes a deployment.
    pub fn pause_deployment(&mut self, d_id: &str, pause: bool) -> Result<u64, ApiError> {
        let d = self
            .deployments
            .get(d_id)
            .ok_or_else(|| ApiError::new(500, "deployment not found"))?;
        if !is_active(&d.status) {
            return Err(ApiError::new(500, "can't pause terminal deployment"));
        }
        if pause {
            self.set_deployment_status(d_id, "paused", "Deployment is paused");
        } else {
            self.set_deployment_status(d_id, "running", "Deployment is running");
            self.check_deployment_progress(d_id);
        }
        Ok(self
            .deployments
            .get(d_id)
            .map(|d| d.modify_index)
            .unwrap_or(0))
    }

    /// Creates the evaluation a deployment action returns.
    pub fn deployment_eval(&mut self, d_id: &str) -> (String, u64) {
        let (ns, job) = self
            .deployments
            .get(d_id)
            .map(|d| (d.namespace.clone(), d.job_id.clone()))
            .unwrap_or_default();
        let jmi = self
            .job(&ns, &job)
            .map(|j| u(j, "JobModifyIndex"))
            .unwrap_or(0);
        self.create_eval(&ns, &job, "deployment-watcher", jmi, 0, None)
    }

    // === allocation updates from the executor ===

    /// Applies a client-side update to an allocation.
    pub fn update_alloc(&mut self, alloc_id: &str, f: impl FnOnce(&mut Alloc)) {
        let index = self.next_index();
        let Some(a) = self.allocs.get_mut(alloc_id) else {
            return;
        };
        f(a);
        if let Some((status, description)) = client_status_of(a) {
            a.client_status = status.into();
            a.client_description = description.into();
        }
        a.modify_index = index;
        a.modify_time = now_nanos();
        let (ns, job) = (a.namespace.clone(), a.job_id.clone());
        self.tables.allocs = index;
        self.emit_alloc("AllocationUpdated", alloc_id);
        self.refresh_job_status(&ns, &job);
    }

    /// Recomputes the job's `Status` from its allocations (`pending`/`running`/`dead`).
    pub fn refresh_job_status(&mut self, ns: &str, id: &str) {
        let key = (ns.to_string(), id.to_string());
        let Some(job) = self.jobs.get(&key).map(|r| r.job.clone()) else {
            return;
        };
        let status = job_status(&job, &self.allocs, &self.evals);
        if s(&job, "Status") != status {
            let index = self.next_index();
            if let Some(r) = self.jobs.get_mut(&key) {
                if let Some(o) = r.job.as_object_mut() {
                    o.insert("Status".into(), json!(status));
                    o.insert("ModifyIndex".into(), json!(index));
                }
                let version = u(&r.job, "Version");
                if let Some(v) = r.versions.iter_mut().find(|v| u(v, "Version") == version)
                    && let Some(o) = v.as_object_mut()
                {
                    o.insert("Status".into(), json!(status));
                    o.insert("ModifyIndex".into(), json!(index));
                }
            }
            self.tables.jobs = index;
            self.jobs_dirty = true;
            if let Some(j) = self.job(ns, id).cloned() {
                self.emit_job("JobRegistered", &j);
            }
        }
    }

    // === services ===

    /// Adds or replaces a Nomad-native service registration.
    pub fn upsert_service(&mut self, mut reg: ServiceReg) {
        let index = self.next_index();
        reg.create_index = self
            .services
            .get(&reg.id)
            .map(|r| r.create_index)
            .unwrap_or(index);
        reg.modify_index = index;
        let (id, ns, name) = (
            reg.id.clone(),
            reg.namespace.clone(),
            reg.service_name.clone(),
        );
        let payload = json!({"Service": reg});
        self.services.insert(id, reg);
        self.tables.services = index;
        self.emit(
            "Service",
            "ServiceRegistration",
            &name,
            &ns,
            vec![name.clone()],
            payload,
        );
    }

    /// Removes a service registration.
    pub fn remove_service(&mut self, id: &str) -> bool {
        let Some(reg) = self.services.remove(id) else {
            return false;
        };
        let index = self.next_index();
        self.tables.services = index;
        let (ns, name) = (reg.namespace.clone(), reg.service_name.clone());
        self.emit(
            "Service",
            "ServiceDeregistration",
            &name,
            &ns,
            vec![name.clone()],
            json!({"Service": reg}),
        );
        true
    }

    // === rendering ===

    /// An allocation as JSON: the list stub, or the full object with its job.
    pub fn alloc_json(&self, a: &Alloc, full: bool) -> Value {
        let group = a.group();
        let networks: Vec<Value> = if a.ports.is_empty() && arr(&group, "Networks").is_empty() {
            vec![]
        } else {
            vec![json!({
                "Mode": "host",
                "Device": "lo",
                "CIDR": "",
                "IP": "127.0.0.1",
                "MBits": 0,
                "DNS": null,
                "ReservedPorts": ports_json(a, true),
                "DynamicPorts": ports_json(a, false),
            })]
        };
        let shared = json!({
            "Networks": networks,
            "DiskMB": group.get("EphemeralDisk").map(|d| u(d, "SizeMB")).unwrap_or(300),
            "Ports": a.ports.iter().map(|p| json!({"Label": p.label, "Value": p.value, "To": p.to, "HostIP": "127.0.0.1"})).collect::<Vec<_>>(),
        });
        let mut tasks = serde_json::Map::new();
        let mut task_resources = serde_json::Map::new();
        let (mut cpu, mut mem) = (0, 0);
        for t in arr(&group, "Tasks") {
            let r = t.get("Resources").cloned().unwrap_or(Value::Null);
            cpu += u(&r, "CPU");
            mem += u(&r, "MemoryMB");
            tasks.insert(
                s(t, "Name").into(),
                json!({"Cpu": {"CpuShares": u(&r, "CPU"), "ReservedCores": null}, "Memory": {"MemoryMB": u(&r, "MemoryMB"), "MemoryMaxMB": u(&r, "MemoryMaxMB")}, "Networks": null, "Devices": null}),
            );
            task_resources.insert(
                s(t, "Name").into(),
                json!({"CPU": u(&r, "CPU"), "MemoryMB": u(&r, "MemoryMB"), "DiskMB": 0, "Networks": networks}),
            );
        }
        let allocated = json!({"Tasks": tasks, "Shared": shared, "TaskLifecycles": null});
        let mut v = json!({
            "ID": a.id,
            "EvalID": a.eval_id,
            "Name": a.name,
            "Namespace": a.namespace,
            "NodeID": self.node_id,
            "NodeName": self.node_name,
            "JobID": a.job_id,
            "JobType": a.job_type,
            "JobVersion": a.job_version,
            "TaskGroup": a.task_group,
            "AllocatedResources": allocated,
            "DesiredStatus": a.desired_status,
            "DesiredDescription": a.desired_description,
            "ClientStatus": a.client_status,
            "ClientDescription": a.client_description,
            "DesiredTransition": {"Migrate": null, "Reschedule": null, "ForceReschedule": null, "NoShutdownDelay": null},
            "TaskStates": a.task_states,
            "DeploymentStatus": a.deployment_status,
            "FollowupEvalID": "",
            "PreviousAllocation": a.previous_allocation,
            "NextAllocation": a.next_allocation,
            "RescheduleTracker": {"Events": []},
            "PreemptedAllocations": null,
            "PreemptedByAllocation": "",
            "CreateIndex": a.create_index,
            "ModifyIndex": a.modify_index,
            "CreateTime": a.create_time,
            "ModifyTime": a.modify_time,
        });
        if full && let Some(o) = v.as_object_mut() {
            o.insert("Job".into(), a.job.clone());
            o.insert("DeploymentID".into(), json!(a.deployment_id));
            o.insert("AllocModifyIndex".into(), json!(a.alloc_modify_index));
            o.insert(
                    "Resources".into(),
                    json!({"CPU": cpu, "MemoryMB": mem, "DiskMB": u(&shared, "DiskMB"), "Networks": networks}),
                );
            o.insert(
                "SharedResources".into(),
                json!({"CPU": 0, "MemoryMB": 0, "DiskMB": u(&shared, "DiskMB"), "Networks": null}),
            );
            o.insert("TaskResources".into(), Value::Object(task_resources));
            o.insert(
                "Metrics".into(),
                json!({
                    "NodesEvaluated": 1, "NodesFiltered": 0, "NodesInPool": 1,
                    "NodesAvailable": {self.datacenter.clone(): 1},
                    "ClassFiltered": null, "ConstraintFiltered": null, "NodesExhausted": 0,
                    "ClassExhausted": null, "DimensionExhausted": null, "QuotaExhausted": null,
                    "ResourcesExhausted": null, "Scores": null, "ScoreMetaData": null,
                    "AllocationTime": 0, "CoalescedFailures": 0,
                }),
            );
            o.insert(
                "Metrics".into(),
                o.get("Metrics").cloned().unwrap_or(Value::Null),
            );
            o.insert(
                "NetworkStatus".into(),
                json!({"InterfaceName": "", "Address": "127.0.0.1", "DNS": null}),
            );
        }
        v
    }

    /// A job's summary (`/v1/job/:id/summary`).
    pub fn job_summary(&self, ns: &str, id: &str) -> Option<Value> {
        let job = self.job(ns, id)?;
        let mut summary = serde_json::Map::new();
        for g in arr(job, "TaskGroups") {
            let name = s(g, "Name");
            let mut counts = BTreeMap::from([
                ("Queued", 0u64),
                ("Complete", 0),
                ("Failed", 0),
                ("Running", 0),
                ("Starting", 0),
                ("Lost", 0),
                ("Unknown", 0),
            ]);
            for a in self
                .allocs
                .values()
                .filter(|a| a.namespace == ns && a.job_id == id && a.task_group == name)
            {
                let key = match a.client_status.as_str() {
                    "pending" => "Starting",
                    "running" => "Running",
                    "complete" => "Complete",
                    "failed" => "Failed",
                    "lost" => "Lost",
                    _ => "Unknown",
                };
                *counts.entry(key).or_insert(0) += 1;
            }
            summary.insert(name.to_string(), json!(counts));
        }
        Some(json!({
            "JobID": id,
            "Namespace": ns,
            "Summary": summary,
            "Children": {"Pending": 0, "Running": 0, "Dead": 0, "Desired": 0},
            "CreateIndex": u(job, "CreateIndex"),
            "ModifyIndex": self.tables.allocs.max(u(job, "ModifyIndex")),
        }))
    }

    /// A job list stub (`/v1/jobs`).
    pub fn job_stub(&self, job: &Value) -> Value {
        let ns = s(job, "Namespace");
        let id = s(job, "ID");
        json!({
            "ID": id,
            "ParentID": s(job, "ParentID"),
            "Name": s(job, "Name"),
            "Namespace": ns,
            "Datacenters": job.get("Datacenters"),
            "NodePool": s(job, "NodePool"),
            "Multiregion": job.get("Multiregion"),
            "Type": s(job, "Type"),
            "Priority": u(job, "Priority"),
            "Periodic": job.get("Periodic").is_some_and(|p| !p.is_null()),
            "ParameterizedJob": job.get("ParameterizedJob").is_some_and(|p| !p.is_null()),
            "Stop": b(job, "Stop"),
            "Status": s(job, "Status"),
            "StatusDescription": s(job, "StatusDescription"),
            "JobSummary": self.job_summary(ns, id),
            "CreateIndex": u(job, "CreateIndex"),
            "ModifyIndex": u(job, "ModifyIndex"),
            "JobModifyIndex": u(job, "JobModifyIndex"),
            "SubmitTime": u(job, "SubmitTime"),
            "Meta": job.get("Meta"),
        })
    }
}

fn ports_json(a: &Alloc, reserved: bool) -> Value {
    let ports: Vec<Value> = a
        .ports
        .iter()
        .filter(|p| p.reserved == reserved)
        .map(|p| json!({"Label": p.label, "Value": p.value, "To": p.to, "HostNetwork": "default"}))
        .collect();
    if ports.is_empty() {
        Value::Null
    } else {
        Value::Array(ports)
    }
}

fn alloc_index(name: &str) -> Option<u64> {
    let start = name.rfind('[')?;
    name[start + 1..].trim_end_matches(']').parse().ok()
}

/// Whether a deployment status is non-terminal.
pub fn is_active(status: &str) -> bool {
    matches!(
        status,
        "running" | "paused" | "blocked" | "unblocking" | "initializing" | "pending"
    )
}

/// Nomad's `validateJobUpdate`: a job keeps its type, and its periodic / parameterized nature,
/// until it is purged (the server answers these as RPC errors, so HTTP 500).
fn validate_job_update(old: &Value, new: &Value) -> Result<(), ApiError> {
    let (old_type, new_type) = (s(old, "Type"), s(new, "Type"));
    if old_type != new_type {
        return Err(ApiError::new(
            500,
            format!("cannot update job from type \"{old_type}\" to \"{new_type}\""),
        ));
    }
    let set = |j: &Value, k: &str| j.get(k).is_some_and(|v| !v.is_null());
    let msg = match (set(old, "Periodic"), set(new, "Periodic")) {
        (true, false) => Some("cannot update periodic job to being non-periodic"),
        (false, true) => Some("cannot update non-periodic job to being periodic"),
        _ => match (set(old, "ParameterizedJob"), set(new, "ParameterizedJob")) {
            (true, false) => Some("cannot update parameterized job to being non-parameterized"),
            (false, true) => Some("cannot update non-parameterized job to being parameterized"),
            _ => None,
        },
    };
    match msg {
        Some(m) => Err(ApiError::new(500, m)),
        None => Ok(()),
    }
}

/// The static ports (label, value) a task group reserves.
pub fn static_ports(group: &Value) -> Vec<(String, u64)> {
    arr(group, "Networks")
        .iter()
        .flat_map(|n| arr(n, "ReservedPorts"))
        .filter(|p| u(p, "Value") > 0)
        .map(|p| (s(p, "Label").to_string(), u(p, "Value")))
        .collect()
}

fn prune_versions(versions: &mut Vec<Value>) {
    if versions.len() <= TRACKED_VERSIONS {
        return;
    }
    // Keep the newest ones, the most recent stable version and tagged versions.
    let latest_stable = versions.iter().position(|v| b(v, "Stable"));
    let mut kept = Vec::new();
    for (i, v) in versions.iter().enumerate() {
        let tagged = v.get("VersionTag").is_some_and(|t| !t.is_null());
        if kept.len() < TRACKED_VERSIONS || Some(i) == latest_stable || tagged {
            kept.push(v.clone());
        }
    }
    *versions = kept;
}

/// The client status Nomad derives from its tasks.
/// The state store's `getJobStatus`: system, periodic and parameterized jobs run until stopped;
/// otherwise any non-terminal allocation means running, then any non-terminal evaluation pending,
/// and a job with only terminal allocations and evaluations is dead.
fn job_status(
    job: &Value,
    allocs: &BTreeMap<String, Alloc>,
    evals: &BTreeMap<String, Value>,
) -> &'static str {
    let (ns, id) = (s(job, "Namespace"), s(job, "ID"));
    let set = |k: &str| job.get(k).is_some_and(|v| !v.is_null());
    if s(job, "Type") == "system" || set("Periodic") || set("ParameterizedJob") {
        return if b(job, "Stop") { "dead" } else { "running" };
    }
    let mut seen = false;
    for a in allocs
        .values()
        .filter(|a| a.namespace == ns && a.job_id == id)
    {
        seen = true;
        if a.desired_run() && !a.client_terminal() {
            return "running";
        }
    }
    for e in evals
        .values()
        .filter(|e| s(e, "Namespace") == ns && s(e, "JobID") == id)
    {
        seen = true;
        if !matches!(s(e, "Status"), "complete" | "failed" | "canceled") {
            return "pending";
        }
    }
    if seen { "dead" } else { "pending" }
}

/// The Nomad client's `getClientStatus`: any failed (dead) task fails the allocation, then any
/// running task makes it running, then any pending task pending, then all dead is complete.
fn client_status_of(a: &Alloc) -> Option<(&'static str, &'static str)> {
    let (mut pending, mut running, mut dead, mut failed) = (false, false, false, false);
    for t in a.task_states.values() {
        match t.state.as_str() {
            "running" => running = true,
            "pending" => pending = true,
            "dead" if t.failed => failed = true,
            "dead" => dead = true,
            _ => {}
        }
    }
    if failed {
        Some(("failed", "Failed tasks"))
    } else if running {
        Some(("running", "Tasks are running"))
    } else if pending {
        Some(("pending", "No tasks have started"))
    } else if dead {
        Some(("complete", "All tasks have completed"))
    } else {
        None
    }
}
