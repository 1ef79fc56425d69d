//! An in-memory [`NomadApi`] for unit tests of the loop: jobs with versions, `EnforceIndex` and
//! `EnforcePriorVersion` checks with Nomad's exact messages, revert, stop/purge, a plan with a
//! coarse diff, allocations and deployments a test drives (`set_allocation_health`), native
//! services, blocking reads on tokio time, call recording and error injection.
//!
//! Each new job version replaces the job's live allocations (one per `Count`, health undecided;
//! terminal ones stay `DesiredStatus: run` until GC, as in Nomad) and,
//! unless deployments are disabled (system jobs before Nomad 1.11), starts a `running`
//! deployment; nothing becomes healthy until the test says so.

use std::collections::BTreeMap;
use std::sync::{Arc, MutexGuard};
use std::time::Duration;

use serde_json::{Value, json};

use super::{
    AllocDeploymentStatus, AllocationStub, Deployment, DeploymentUpdateResponse, Error, Job,
    JobVersions, JobWriteResponse, NomadApi, PlanResponse, Result, ServiceNamespace,
    ServiceRegistration, ServiceStub, unwrap_job,
};
pub use crate::transport::fake::Call;
use crate::transport::fake::{Indexed, Model};
use crate::transport::{QueryMeta, QueryOptions};

mod model;

use model::{State, err500, plan, spec_of};

/// In-memory Nomad. Clones share state.
#[derive(Clone)]
pub struct FakeNomad {
    model: Arc<Model<State>>,
}

impl Indexed for State {
    fn index(&self) -> u64 {
        self.index
    }
}

impl std::fmt::Debug for FakeNomad {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FakeNomad").finish_non_exhaustive()
    }
}

impl Default for FakeNomad {
    fn default() -> Self {
        FakeNomad::new()
    }
}

/// Nomad's servers clamp waits to 5 minutes, and use that when none is given.
const MAX_WAIT: Duration = Duration::from_secs(300);

impl FakeNomad {
    /// An empty Nomad with a leader, where new job versions get deployments.
    pub fn new() -> FakeNomad {
        FakeNomad {
            model: Arc::new(Model::new(State {
                leader: "127.0.0.1:4647".into(),
                ..State::default()
            })),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.model.lock()
    }

    fn enter(&self, op: &'static str, target: &str, index: Option<u64>) -> Result<()> {
        self.lock().faults.enter(op, target, index, |status| {
            Error::injected(op, status, "Permission denied")
        })
    }

    /// Records a call that carries a job; returns the job object and its ID. A job without an
    /// ID is refused as Nomad refuses it.
    fn enter_job<'a>(
        &self,
        op: &'static str,
        step: &str,
        job: &'a Value,
        index: Option<u64>,
    ) -> Result<(&'a Value, String)> {
        let raw = unwrap_job(job);
        let id = raw
            .get("ID")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned();
        self.enter(op, &id, index)?;
        if id.is_empty() {
            return Err(Error::injected(step, 400, "Job ID hasn't been provided"));
        }
        Ok((raw, id))
    }

    fn write<T>(&self, f: impl FnOnce(&mut State) -> T) -> T {
        self.model.write(|st, _| f(st))
    }

    async fn blocking<T>(
        &self,
        opts: QueryOptions,
        mut read: impl FnMut(&State) -> (T, u64),
    ) -> (T, QueryMeta) {
        self.model
            .blocking(opts, MAX_WAIT, MAX_WAIT, |st, _| {
                let (value, index) = read(st);
                (value, index, None)
            })
            .await
    }

    /// Every call so far, oldest first.
    pub fn calls(&self) -> Vec<Call> {
        self.lock().faults.calls()
    }

    /// The calls of one method.
    pub fn calls_of(&self, op: &str) -> Vec<Call> {
        self.lock().faults.calls_of(op)
    }

    /// Forgets recorded calls.
    pub fn clear_calls(&self) {
        self.lock().faults.clear_calls();
    }

    /// Makes the next call of method `op` (e.g. `"job_register"`) fail with `error`.
    pub fn fail_next(&self, op: &'static str, error: Error) {
        self.lock().faults.fail_next(op, error);
    }

    /// Makes the next call of `op` (`job_register`, `job_revert`) take effect and then answer
    /// `error`, as when the answer of a write that landed is lost (a timeout, a reset).
    pub fn lose_answer(&self, op: &'static str, error: Error) {
        self.lock().faults.lose_answer(op, "", error);
    }

    fn lost_answer<T>(&self, op: &'static str, result: Result<T>) -> Result<T> {
        self.lock().faults.lost_answer(op, "", result)
    }

    /// Disables deployments for new versions (system jobs on Nomad before 1.11).
    pub fn set_deployments_enabled(&self, enabled: bool) {
        self.lock().deployments_disabled = !enabled;
    }

    /// The current version of a job (test assertions).
    pub fn job(&self, id: &str) -> Option<Job> {
        self.lock().current(id).cloned()
    }

    /// All versions of a job, oldest first (test assertions).
    pub fn versions(&self, id: &str) -> Vec<Job> {
        self.lock().jobs.get(id).cloned().unwrap_or_default()
    }

    /// Registers a job directly (test setup), as if someone ran `nomad job run`.
    pub fn seed_job(&self, job: &Value) -> Option<Job> {
        let id = unwrap_job(job)
            .get("ID")
            .and_then(Value::as_str)?
            .to_owned();
        Some(self.write(|st| st.new_version(&id, State::normalize(job))))
    }

    /// Sets the deployment health of the current version's running allocations. `true` makes
    /// the deployment `successful` and the version stable; `false` fails the allocations and the
    /// deployment ("Failed due to unhealthy allocations"), auto-reverting when the group says so.
    pub fn set_allocation_health(&self, job_id: &str, healthy: bool) {
        self.write(|st| {
            let Some(version) = st.current(job_id).map(|j| j.version) else {
                return;
            };
            let index = st.bump();
            for a in st.allocs.entry(job_id.to_owned()).or_default().iter_mut() {
                if a.job_version == version && a.desired_status == "run" {
                    a.deployment_status = Some(AllocDeploymentStatus {
                        healthy: Some(healthy),
                        timestamp: Some("2024-01-01T00:00:00Z".into()),
                        canary: false,
                        modify_index: index,
                    });
                    if !healthy {
                        a.client_status = "failed".into();
                        for t in a.task_states.values_mut() {
                            t.state = "dead".into();
                            t.failed = true;
                        }
                    }
                    a.modify_index = index;
                }
            }
            st.allocs_index = index;
            let pos = st.deployments.get(job_id).and_then(|ds| {
                ds.iter()
                    .rposition(|d| d.job_version == version && !d.is_terminal())
            });
            let Some(pos) = pos else {
                if healthy {
                    st.set_stable(job_id, version);
                }
                return;
            };
            if let Some(d) = st.deployments.get_mut(job_id).map(|ds| &mut ds[pos]) {
                for g in d.task_groups.values_mut() {
                    if healthy {
                        g.healthy_allocs = g.desired_total;
                    } else {
                        g.unhealthy_allocs = g.placed_allocs;
                    }
                }
                if healthy {
                    d.status = "successful".into();
                    d.status_description = "Deployment completed successfully".into();
                    d.modify_index = index;
                }
            }
            st.deployments_index = index;
            if healthy {
                st.set_stable(job_id, version);
            } else {
                st.fail_deployment(job_id, pos, "Failed due to unhealthy allocations");
            }
        });
    }

    /// Crashes the live allocations of the current version the way a task that exits at start
    /// does once its restarts are exhausted: every task `dead` and `failed` with `events`
    /// (`(type, display message)`, oldest first), `ClientStatus: failed`. The deployment is left
    /// `running`, as Nomad leaves it until its healthy deadline.
    pub fn crash_allocations(&self, job_id: &str, events: &[(&str, &str)]) {
        self.write(|st| {
            let Some(version) = st.current(job_id).map(|j| j.version) else {
                return;
            };
            let index = st.bump();
            let events: Vec<super::TaskEvent> = events
                .iter()
                .map(|(kind, display)| super::TaskEvent {
                    event_type: (*kind).to_owned(),
                    display_message: (*display).to_owned(),
                    fails_task: *kind == "Not Restarting",
                    ..super::TaskEvent::default()
                })
                .collect();
            for a in st.allocs.entry(job_id.to_owned()).or_default().iter_mut() {
                if a.job_version == version && a.desired_status == "run" {
                    a.client_status = "failed".into();
                    for t in a.task_states.values_mut() {
                        t.state = "dead".into();
                        t.failed = true;
                        t.restarts = 2;
                        t.events = events.clone();
                    }
                    a.modify_index = index;
                }
            }
            st.allocs_index = index;
        });
    }

    /// Overrides the latest deployment's status and description.
    pub fn set_deployment_status(&self, job_id: &str, status: &str, description: &str) {
        self.write(|st| {
            let index = st.bump();
            if let Some(d) = st.deployments.get_mut(job_id).and_then(|ds| ds.last_mut()) {
                d.status = status.into();
                d.status_description = description.into();
                d.modify_index = index;
            }
            st.deployments_index = index;
        });
    }

    /// Adds (or replaces, by id) a native service registration.
    pub fn register_service(&self, registration: ServiceRegistration) {
        self.write(|st| {
            let index = st.bump();
            st.services.retain(|s| s.id != registration.id);
            st.services.push(ServiceRegistration {
                create_index: index,
                modify_index: index,
                ..registration
            });
            st.services_index = index;
        });
    }

    /// Removes a native service registration by id.
    pub fn deregister_service(&self, id: &str) {
        self.write(|st| {
            let index = st.bump();
            st.services.retain(|s| s.id != id);
            st.services_index = index;
        });
    }

    /// Sets the leader address `status_leader` answers (`""`: no leader).
    pub fn set_leader(&self, leader: &str) {
        self.lock().leader = leader.to_owned();
    }
}

impl NomadApi for FakeNomad {
    async fn job_read(&self, id: &str, opts: QueryOptions) -> Result<(Option<Job>, QueryMeta)> {
        self.enter("job_read", id, Some(opts.index))?;
        Ok(self
            .blocking(opts, |st| match st.current(id) {
                Some(j) => (Some(j.clone()), j.modify_index),
                None => (None, st.jobs_index),
            })
            .await)
    }

    async fn job_register(
        &self,
        job: &Value,
        enforce_index: Option<u64>,
    ) -> Result<JobWriteResponse> {
        let (raw, id) = self.enter_job("job_register", "register job", job, enforce_index)?;
        let result = self.write(|st| {
            let current = st.current(&id).cloned();
            // Nomad's `validateJobUpdate`: a job's type never changes in place, not even for a
            // stopped job (only a purge frees the ID).
            let new_type = raw.get("Type").and_then(Value::as_str).unwrap_or("service");
            if let Some(c) = current.as_ref().filter(|c| c.job_type != new_type) {
                return Err(err500(
                    "register job",
                    format!(
                        "cannot update job from type {:?} to {new_type:?}",
                        c.job_type
                    ),
                ));
            }
            if let Some(n) = enforce_index {
                let message = match (&current, n) {
                    (Some(_), 0) => Some(format!(
                        "{} 0: job already exists",
                        super::ENFORCE_INDEX_PREFIX
                    )),
                    (Some(c), n) if c.job_modify_index != n => Some(format!(
                        "{} {n}: job exists with conflicting job modify index: {}",
                        super::ENFORCE_INDEX_PREFIX,
                        c.job_modify_index
                    )),
                    (None, n) if n != 0 => Some(format!(
                        "{} {n}: job does not exist",
                        super::ENFORCE_INDEX_PREFIX
                    )),
                    _ => None,
                };
                if let Some(message) = message {
                    return Err(Error::EnforceIndexConflict {
                        job: id.clone(),
                        message,
                    });
                }
            }
            let normalized = State::normalize(raw);
            if let Some(c) = current.filter(|c| spec_of(&c.raw) == spec_of(&normalized)) {
                // Same spec: no new version, but a new evaluation, as Nomad does.
                return Ok(st.write_response(c.job_modify_index));
            }
            let job = st.new_version(&id, normalized);
            Ok(st.write_response(job.job_modify_index))
        });
        self.lost_answer("job_register", result)
    }

    async fn job_versions(&self, id: &str, _diffs: bool) -> Result<JobVersions> {
        self.enter("job_versions", id, None)?;
        let versions = self
            .lock()
            .jobs
            .get(id)
            .map(|vs| vs.iter().rev().cloned().collect())
            .unwrap_or_default();
        Ok(JobVersions {
            versions,
            diffs: Vec::new(),
        })
    }

    async fn job_revert(
        &self,
        id: &str,
        version: u64,
        enforce_prior_version: Option<u64>,
    ) -> Result<JobWriteResponse> {
        self.enter("job_revert", id, enforce_prior_version)?;
        let result = self.write(|st| st.revert(id, version, enforce_prior_version));
        self.lost_answer("job_revert", result)
    }

    async fn job_stop(&self, id: &str, purge: bool) -> Result<JobWriteResponse> {
        self.enter("job_stop", id, None)?;
        Ok(self.write(|st| {
            let Some(current) = st.current(id).cloned() else {
                return JobWriteResponse::default();
            };
            if purge {
                let index = st.bump();
                st.jobs.remove(id);
                st.allocs.remove(id);
                st.deployments.remove(id);
                st.jobs_index = index;
                st.allocs_index = index;
                st.deployments_index = index;
                return st.write_response(0);
            }
            if current.stop {
                return st.write_response(current.job_modify_index);
            }
            let mut spec = spec_of(&current.raw);
            if let Some(map) = spec.as_object_mut() {
                map.insert("Stop".into(), json!(true));
            }
            let job = st.new_version(id, spec);
            st.write_response(job.job_modify_index)
        }))
    }

    async fn job_plan(&self, job: &Value, _diff: bool) -> Result<PlanResponse> {
        let (raw, id) = self.enter_job("job_plan", "plan job", job, None)?;
        let st = self.lock();
        Ok(plan(st.current(&id), &State::normalize(raw)))
    }

    async fn job_allocations(
        &self,
        id: &str,
        opts: QueryOptions,
    ) -> Result<(Vec<AllocationStub>, QueryMeta)> {
        self.enter("job_allocations", id, Some(opts.index))?;
        Ok(self
            .blocking(opts, |st| {
                (
                    st.allocs.get(id).cloned().unwrap_or_default(),
                    st.allocs_index,
                )
            })
            .await)
    }

    async fn job_latest_deployment(
        &self,
        id: &str,
        opts: QueryOptions,
    ) -> Result<(Option<Deployment>, QueryMeta)> {
        self.enter("job_latest_deployment", id, Some(opts.index))?;
        Ok(self
            .blocking(opts, |st| {
                let latest = st
                    .deployments
                    .get(id)
                    .and_then(|ds| ds.iter().max_by_key(|d| d.create_index))
                    .cloned();
                (latest, st.deployments_index)
            })
            .await)
    }

    async fn deployment_fail(&self, id: &str) -> Result<DeploymentUpdateResponse> {
        self.enter("deployment_fail", id, None)?;
        self.write(|st| {
            let found = st.deployments.iter().find_map(|(job, ds)| {
                ds.iter()
                    .position(|d| d.id == id)
                    .map(|pos| (job.clone(), pos))
            });
            let Some((job, pos)) = found else {
                return Err(err500("fail deployment", "deployment not found".into()));
            };
            if st.deployments[&job][pos].is_terminal() {
                return Err(err500(
                    "fail deployment",
                    "can't fail terminal deployment".into(),
                ));
            }
            let reverted = st.fail_deployment(&job, pos, "Deployment marked as failed");
            let index = st.bump();
            Ok(DeploymentUpdateResponse {
                eval_id: uuid::Uuid::new_v4().to_string(),
                eval_create_index: index,
                deployment_modify_index: index,
                reverted_job_version: reverted,
                index,
            })
        })
    }

    async fn services(&self, opts: QueryOptions) -> Result<(Vec<ServiceNamespace>, QueryMeta)> {
        self.enter("services", "", Some(opts.index))?;
        Ok(self
            .blocking(opts, |st| {
                let mut by_ns: BTreeMap<String, BTreeMap<String, Vec<String>>> = BTreeMap::new();
                for s in &st.services {
                    let ns = if s.namespace.is_empty() {
                        "default".to_owned()
                    } else {
                        s.namespace.clone()
                    };
                    let tags = by_ns
                        .entry(ns)
                        .or_default()
                        .entry(s.service_name.clone())
                        .or_default();
                    for t in &s.tags {
                        if !tags.contains(t) {
                            tags.push(t.clone());
                        }
                    }
                }
                let list = by_ns
                    .into_iter()
                    .map(|(namespace, services)| ServiceNamespace {
                        namespace,
                        services: services
                            .into_iter()
                            .map(|(service_name, tags)| ServiceStub { service_name, tags })
                            .collect(),
                    })
                    .collect();
                (list, st.services_index)
            })
            .await)
    }

    async fn service(
        &self,
        name: &str,
        opts: QueryOptions,
    ) -> Result<(Vec<ServiceRegistration>, QueryMeta)> {
        self.enter("service", name, Some(opts.index))?;
        Ok(self
            .blocking(opts, |st| {
                (
                    st.services
                        .iter()
                        .filter(|s| s.service_name == name)
                        .cloned()
                        .collect(),
                    st.services_index,
                )
            })
            .await)
    }

    async fn status_leader(&self) -> Result<String> {
        self.enter("status_leader", "", None)?;
        Ok(self.lock().leader.clone())
    }
}
