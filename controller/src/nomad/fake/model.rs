//! The fake's model of Nomad: jobs and their versions, the rollout each version starts
//! (allocations, deployments, auto-revert), and a coarse plan diff.

use std::collections::BTreeMap;

use serde_json::{Map, Value, json};

use super::super::{
    AllocationStub, Deployment, DeploymentTaskGroup, DesiredUpdates, Error, FieldDiff, Job,
    JobDiff, JobWriteResponse, PlanAnnotations, PlanResponse, Result, ServiceRegistration,
    TaskGroupDiff, TaskState, unwrap_job,
};
use crate::transport::fake::Recorder;

/// Fields Nomad ignores when deciding whether a register changes the spec (`Job.SpecChanged`).
pub(super) const NON_SPEC_FIELDS: &[&str] = &[
    "Status",
    "StatusDescription",
    "Stable",
    "Version",
    "CreateIndex",
    "ModifyIndex",
    "JobModifyIndex",
    "SubmitTime",
];

#[derive(Debug, Default)]
pub(super) struct State {
    pub(super) index: u64,
    pub(super) jobs: BTreeMap<String, Vec<Job>>,
    pub(super) jobs_index: u64,
    pub(super) allocs: BTreeMap<String, Vec<AllocationStub>>,
    pub(super) allocs_index: u64,
    pub(super) deployments: BTreeMap<String, Vec<Deployment>>,
    pub(super) deployments_index: u64,
    pub(super) services: Vec<ServiceRegistration>,
    pub(super) services_index: u64,
    pub(super) deployments_disabled: bool,
    pub(super) faults: Recorder<Error>,
    pub(super) leader: String,
}

pub(super) fn err500(op: &str, message: String) -> Error {
    Error::injected(op, 500, &message)
}

pub(super) fn spec_of(raw: &Value) -> Value {
    let mut spec = raw.clone();
    if let Some(map) = spec.as_object_mut() {
        for f in NON_SPEC_FIELDS {
            map.remove(*f);
        }
    }
    spec
}

pub(super) fn task_groups(raw: &Value) -> Vec<(String, u64, Vec<String>, bool)> {
    let job_auto_revert = raw
        .pointer("/Update/AutoRevert")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    raw.get("TaskGroups")
        .and_then(Value::as_array)
        .map(|groups| {
            groups
                .iter()
                .map(|g| {
                    let name = g
                        .get("Name")
                        .and_then(Value::as_str)
                        .unwrap_or("group")
                        .to_owned();
                    let count = g.get("Count").and_then(Value::as_u64).unwrap_or(1);
                    let tasks = g
                        .get("Tasks")
                        .and_then(Value::as_array)
                        .map(|ts| {
                            ts.iter()
                                .filter_map(|t| {
                                    t.get("Name").and_then(Value::as_str).map(str::to_owned)
                                })
                                .collect()
                        })
                        .unwrap_or_default();
                    let auto_revert = g
                        .pointer("/Update/AutoRevert")
                        .and_then(Value::as_bool)
                        .unwrap_or(job_auto_revert);
                    (name, count, tasks, auto_revert)
                })
                .collect()
        })
        .unwrap_or_default()
}

impl State {
    pub(super) fn bump(&mut self) -> u64 {
        self.index += 1;
        self.index
    }

    pub(super) fn current(&self, id: &str) -> Option<&Job> {
        self.jobs.get(id).and_then(|v| v.last())
    }

    pub(super) fn normalize(job: &Value) -> Value {
        let mut raw = unwrap_job(job).clone();
        if let Some(map) = raw.as_object_mut() {
            let id = map.get("ID").cloned().unwrap_or(Value::Null);
            map.entry("Name").or_insert(id);
            map.entry("Type").or_insert_with(|| json!("service"));
            map.entry("Namespace").or_insert_with(|| json!("default"));
            map.entry("Stop").or_insert(json!(false));
            map.entry("Meta").or_insert(Value::Null);
        }
        raw
    }

    /// Stores a new version of `spec` and starts its rollout.
    pub(super) fn new_version(&mut self, id: &str, spec: Value) -> Job {
        let index = self.bump();
        let previous = self.current(id).cloned();
        let mut raw = spec;
        let stop = raw.get("Stop").and_then(Value::as_bool).unwrap_or(false);
        if let Some(map) = raw.as_object_mut() {
            map.insert(
                "Version".into(),
                json!(previous.as_ref().map_or(0, |p| p.version + 1)),
            );
            map.insert("JobModifyIndex".into(), json!(index));
            map.insert("ModifyIndex".into(), json!(index));
            map.insert(
                "CreateIndex".into(),
                json!(previous.as_ref().map_or(index, |p| p.create_index)),
            );
            map.insert(
                "Status".into(),
                json!(if stop { "dead" } else { "running" }),
            );
            map.insert("StatusDescription".into(), json!(""));
            map.insert("Stable".into(), json!(false));
            map.insert("SubmitTime".into(), json!(index));
        }
        let job = match Job::from_value(raw) {
            Ok(job) => job,
            Err(_) => {
                return Job {
                    id: id.to_owned(),
                    ..fallback_job()
                };
            }
        };
        self.jobs
            .entry(id.to_owned())
            .or_default()
            .push(job.clone());
        self.jobs_index = index;
        self.roll_out(&job, index);
        job
    }

    pub(super) fn roll_out(&mut self, job: &Job, index: u64) {
        // A newer version (or a stop) cancels the active deployment.
        let reason = if job.stop {
            "Cancelled because job is stopped"
        } else {
            "Cancelled due to newer version of job"
        };
        for d in self
            .deployments
            .entry(job.id.clone())
            .or_default()
            .iter_mut()
        {
            if !d.is_terminal() {
                d.status = "cancelled".into();
                d.status_description = reason.into();
                d.modify_index = index;
                self.deployments_index = index;
            }
        }
        // Like Nomad's schedulers (which filter terminal allocations before diffing), only live
        // allocations are stopped: a `failed`, `complete` or `lost` one keeps `DesiredStatus:
        // run` until it is garbage-collected.
        for a in self.allocs.entry(job.id.clone()).or_default().iter_mut() {
            let terminal = matches!(a.client_status.as_str(), "complete" | "failed" | "lost");
            if a.desired_status == "run" && !terminal {
                a.desired_status = "stop".into();
                a.client_status = "complete".into();
                a.modify_index = index;
            }
        }
        self.allocs_index = index;
        if job.stop {
            return;
        }
        let groups = task_groups(&job.raw);
        let deployment_id = uuid::Uuid::new_v4().to_string();
        let mut tg_state = BTreeMap::new();
        for (name, count, tasks, auto_revert) in &groups {
            for n in 0..*count {
                let task_states = tasks
                    .iter()
                    .map(|t| {
                        (
                            t.clone(),
                            TaskState {
                                state: "running".into(),
                                ..TaskState::default()
                            },
                        )
                    })
                    .collect();
                self.allocs
                    .entry(job.id.clone())
                    .or_default()
                    .push(AllocationStub {
                        id: uuid::Uuid::new_v4().to_string(),
                        eval_id: uuid::Uuid::new_v4().to_string(),
                        name: format!("{}.{name}[{n}]", job.id),
                        namespace: job.namespace.clone(),
                        node_id: "fake-node".into(),
                        node_name: "fake-node".into(),
                        job_id: job.id.clone(),
                        job_type: job.job_type.clone(),
                        job_version: job.version,
                        task_group: name.clone(),
                        desired_status: "run".into(),
                        client_status: "running".into(),
                        task_states,
                        create_index: index,
                        modify_index: index,
                        ..AllocationStub::default()
                    });
            }
            tg_state.insert(
                name.clone(),
                DeploymentTaskGroup {
                    auto_revert: *auto_revert,
                    desired_total: *count,
                    placed_allocs: *count,
                    ..Default::default()
                },
            );
        }
        if !self.deployments_disabled && job.job_type != "batch" && job.job_type != "sysbatch" {
            self.deployments
                .entry(job.id.clone())
                .or_default()
                .push(Deployment {
                    id: deployment_id,
                    namespace: job.namespace.clone(),
                    job_id: job.id.clone(),
                    job_version: job.version,
                    job_modify_index: job.job_modify_index,
                    job_spec_modify_index: job.job_modify_index,
                    job_create_index: job.create_index,
                    task_groups: tg_state,
                    status: "running".into(),
                    status_description: "Deployment is running".into(),
                    create_index: index,
                    modify_index: index,
                });
            self.deployments_index = index;
        }
    }

    pub(super) fn write_response(&mut self, job_modify_index: u64) -> JobWriteResponse {
        let index = self.bump();
        JobWriteResponse {
            eval_id: uuid::Uuid::new_v4().to_string(),
            eval_create_index: index,
            job_modify_index,
            warnings: String::new(),
            index,
        }
    }

    pub(super) fn revert(
        &mut self,
        id: &str,
        version: u64,
        enforce_prior: Option<u64>,
    ) -> Result<JobWriteResponse> {
        let op = "revert job";
        let Some(current) = self.current(id).cloned() else {
            return Err(err500(op, format!("job \"{id}\" not found")));
        };
        if let Some(prior) = enforce_prior
            && prior != current.version
        {
            return Err(Error::PriorVersionConflict {
                job: id.to_owned(),
                message: format!(
                    "Current job has version {}; enforcing version {prior}",
                    current.version
                ),
            });
        }
        if version == current.version {
            return Err(err500(op, "can't revert to current version".into()));
        }
        let Some(target) = self
            .jobs
            .get(id)
            .and_then(|vs| vs.iter().find(|j| j.version == version))
            .cloned()
        else {
            return Err(err500(
                op,
                format!(
                    "job \"{id}\" in namespace \"{}\" at version {version} not found",
                    current.namespace
                ),
            ));
        };
        let job = self.new_version(id, spec_of(&target.raw));
        Ok(self.write_response(job.job_modify_index))
    }

    /// Marks a deployment failed and auto-reverts to the latest stable version with another spec.
    pub(super) fn fail_deployment(
        &mut self,
        job_id: &str,
        pos: usize,
        description: &str,
    ) -> Option<u64> {
        let index = self.bump();
        let auto_revert = {
            let d = &mut self.deployments.get_mut(job_id)?[pos];
            d.status = "failed".into();
            d.status_description = description.into();
            d.modify_index = index;
            d.task_groups.values().any(|g| g.auto_revert)
        };
        self.deployments_index = index;
        if !auto_revert {
            return None;
        }
        let current = self.current(job_id)?.clone();
        let stable = self
            .jobs
            .get(job_id)?
            .iter()
            .rev()
            .find(|j| j.stable && j.version != current.version)?
            .clone();
        let d = &mut self.deployments.get_mut(job_id)?[pos];
        if spec_of(&stable.raw) == spec_of(&current.raw) {
            d.status_description = format!(
                "{description} - not rolling back to stable job version {} as current job has same specification",
                stable.version
            );
            return None;
        }
        d.status_description = format!(
            "{description} - rolling back to job version {}",
            stable.version
        );
        self.new_version(job_id, spec_of(&stable.raw));
        Some(stable.version)
    }

    pub(super) fn set_stable(&mut self, job_id: &str, version: u64) {
        let index = self.bump();
        if let Some(j) = self
            .jobs
            .get_mut(job_id)
            .and_then(|vs| vs.iter_mut().find(|j| j.version == version))
        {
            j.stable = true;
            j.modify_index = index;
            if let Some(map) = j.raw.as_object_mut() {
                map.insert("Stable".into(), json!(true));
                map.insert("ModifyIndex".into(), json!(index));
            }
            self.jobs_index = index;
        }
    }
}

pub(super) fn fallback_job() -> Job {
    Job {
        id: String::new(),
        name: String::new(),
        job_type: "service".into(),
        namespace: "default".into(),
        version: 0,
        job_modify_index: 0,
        modify_index: 0,
        create_index: 0,
        status: String::new(),
        stop: false,
        stable: false,
        meta: BTreeMap::new(),
        submit_time: 0,
        raw: Value::Null,
    }
}

pub(super) fn plan(current: Option<&Job>, proposed: &Value) -> PlanResponse {
    let groups = task_groups(proposed);
    let mut updates = BTreeMap::new();
    let mut diff = JobDiff {
        id: proposed
            .get("ID")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned(),
        ..JobDiff::default()
    };
    match current {
        None => {
            diff.diff_type = "Added".into();
            for (name, count, _, _) in &groups {
                updates.insert(
                    name.clone(),
                    DesiredUpdates {
                        place: *count,
                        ..DesiredUpdates::default()
                    },
                );
                diff.task_groups.push(TaskGroupDiff {
                    diff_type: "Added".into(),
                    name: name.clone(),
                    updates: BTreeMap::from([("create".to_owned(), *count)]),
                    ..TaskGroupDiff::default()
                });
            }
        }
        Some(job) => {
            let old = spec_of(&job.raw);
            let new = spec_of(proposed);
            let old_groups: BTreeMap<String, Value> = old
                .get("TaskGroups")
                .and_then(Value::as_array)
                .map(|gs| {
                    gs.iter()
                        .map(|g| {
                            (
                                g.get("Name")
                                    .and_then(Value::as_str)
                                    .unwrap_or("")
                                    .to_owned(),
                                g.clone(),
                            )
                        })
                        .collect()
                })
                .unwrap_or_default();
            let empty = Map::new();
            let (om, nm) = (
                old.as_object().unwrap_or(&empty),
                new.as_object().unwrap_or(&empty),
            );
            for (k, v) in nm {
                if k == "TaskGroups" {
                    continue;
                }
                let before = om.get(k).unwrap_or(&Value::Null);
                if before != v {
                    diff.fields.push(FieldDiff {
                        diff_type: "Edited".into(),
                        name: k.clone(),
                        old: before.to_string(),
                        new: v.to_string(),
                        annotations: Vec::new(),
                    });
                }
            }
            for (name, count, _, _) in &groups {
                let new_group = new
                    .get("TaskGroups")
                    .and_then(Value::as_array)
                    .and_then(|gs| {
                        gs.iter()
                            .find(|g| g.get("Name").and_then(Value::as_str) == Some(name))
                    });
                let (kind, u, key) = match old_groups.get(name) {
                    None => (
                        "Added",
                        DesiredUpdates {
                            place: *count,
                            ..Default::default()
                        },
                        "create",
                    ),
                    Some(g) if Some(g) == new_group => (
                        "None",
                        DesiredUpdates {
                            ignore: *count,
                            ..Default::default()
                        },
                        "ignore",
                    ),
                    Some(_) => (
                        "Edited",
                        DesiredUpdates {
                            destructive_update: *count,
                            ..Default::default()
                        },
                        "create/destroy update",
                    ),
                };
                updates.insert(name.clone(), u);
                diff.task_groups.push(TaskGroupDiff {
                    diff_type: kind.into(),
                    name: name.clone(),
                    updates: BTreeMap::from([(key.to_owned(), *count)]),
                    ..TaskGroupDiff::default()
                });
            }
            let edited =
                !diff.fields.is_empty() || diff.task_groups.iter().any(|g| g.diff_type != "None");
            diff.diff_type = if edited { "Edited" } else { "None" }.into();
        }
    }
    PlanResponse {
        annotations: Some(PlanAnnotations {
            desired_tg_updates: updates,
        }),
        diff: Some(diff),
        job_modify_index: current.map_or(0, |j| j.job_modify_index),
        ..PlanResponse::default()
    }
}
