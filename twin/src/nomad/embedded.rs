//! Nomad's servers in process, without HTTP and without task processes: the state store and
//! scheduler that the twin's HTTP API serves, for callers that need Nomad's semantics in memory
//! (the operator's `FakeNomad`). A job goes through [`submit`] as on the register endpoint; the
//! register with `EnforceIndex`, versions, revert with `EnforcePriorVersion`, stop and purge, the
//! plan, deployments with their progress deadlines and auto-revert, and every error text are the
//! store's. Answers are the JSON bodies of the matching endpoints.
//!
//! It plays the simplest Nomad client too: the tasks of a placed allocation run at once, and the
//! tasks of a stopped one are dead at once. Deployment health is the caller's to decide
//! ([`Embedded::set_health`]), as an operator does through `/v1/deployment/allocation-health`:
//! nothing becomes healthy by itself. One client node, the `default` namespace.
//!
//! Time is the caller's [`Clock`]; deadlines pass only when [`Embedded::tick`] runs.

use serde_json::Value;

use super::store::HostVolume;
pub use super::store::ServiceReg;
pub use super::store::{ApiError, Clock};
use super::store::{Plan, RegisterOpts, Store, TaskEvent};
use super::submit;
use super::util::rfc3339;
use super::view::View;

/// The only namespace (the twin refuses others).
const NS: &str = "default";

/// Nomad in process. See the module documentation.
#[derive(Debug)]
pub struct Embedded {
    store: Store,
}

impl Embedded {
    /// An empty cluster with one client node, reading the time from `clock`.
    pub fn new(clock: Clock) -> Embedded {
        Embedded {
            store: Store::with_clock(uuid::Uuid::new_v4().to_string(), clock),
        }
    }

    /// The last raft index handed out.
    pub fn index(&self) -> u64 {
        self.store.index
    }

    /// `true` behaves like Nomad >= 1.11 (the default: system jobs with an update block get
    /// deployments), `false` like 1.10 (no system-job deployments).
    pub fn set_system_deployments(&mut self, enabled: bool) {
        self.store.system_deployments = enabled;
    }

    /// Runs a change, then what it asks of the client, and drops its events (nobody streams
    /// them here).
    fn write<R>(&mut self, f: impl FnOnce(&mut Store) -> (R, Plan)) -> R {
        let (result, plan) = f(&mut self.store);
        self.run(plan);
        self.store.pending_events.clear();
        self.store.jobs_dirty = false;
        result
    }

    /// The client: stops, then starts, at once.
    fn run(&mut self, plan: Plan) {
        let now = self.store.clock.now();
        for id in plan.stop {
            if self
                .store
                .allocs
                .get(&id)
                .is_none_or(|a| a.client_terminal())
            {
                continue;
            }
            self.store.update_alloc(&id, |a| {
                for t in a.task_states.values_mut().filter(|t| t.state != "dead") {
                    t.state = "dead".into();
                    t.finished_at = rfc3339(now);
                    t.events
                        .push(TaskEvent::at(now, "Killed", "Task successfully killed"));
                }
            });
        }
        for (id, _) in plan.start {
            self.store.update_alloc(&id, |a| {
                for t in a.task_states.values_mut() {
                    t.state = "running".into();
                    t.started_at = rfc3339(now);
                    t.events
                        .push(TaskEvent::at(now, "Started", "Task started by client"));
                }
            });
        }
    }

    /// The deployment watcher: fails deployments whose progress deadline passed (auto-reverting
    /// where asked). Returns when the next deadline passes, if nothing changes before.
    pub fn tick(&mut self) -> Option<i64> {
        self.write(|st| ((), st.check_deadlines()));
        self.store.next_deadline()
    }

    /// `PUT /v1/jobs` with the body `{"Job": …}`, with `EnforceIndex` when `enforce_index` is
    /// set: the endpoint's answer.
    pub fn register(
        &mut self,
        body: &Value,
        enforce_index: Option<u64>,
    ) -> Result<Value, ApiError> {
        let job = submit::job_from_body(body, None, None)?;
        let opts = RegisterOpts {
            enforce_index: enforce_index.is_some(),
            job_modify_index: enforce_index.unwrap_or(0),
            trigger: "job-register",
            ..RegisterOpts::default()
        };
        self.write(|st| match st.register(job, &opts) {
            Ok((out, plan)) => (Ok(out.body()), plan),
            Err(e) => (Err(e), Plan::default()),
        })
    }

    /// Writes a job the way a state restore does (decoded and canonicalized, not validated), so
    /// test setup can stand a stub in for someone else's job. Returns the stored job.
    pub fn seed(&mut self, body: &Value) -> Result<Value, ApiError> {
        let job = submit::decode_job(body, None, None)?;
        let id = View::job(&job).str("ID").to_owned();
        let opts = RegisterOpts {
            trigger: "job-register",
            ..RegisterOpts::default()
        };
        self.write(|st| match st.register(job, &opts) {
            Ok((_, plan)) => (Ok(()), plan),
            Err(e) => (Err(e), Plan::default()),
        })?;
        self.store
            .job(NS, &id)
            .cloned()
            .ok_or_else(|| ApiError::new(404, "job not found"))
    }

    /// `GET /v1/job/:id`: the job and the index of the answer.
    pub fn job(&self, id: &str) -> (Option<Value>, u64) {
        match self.store.job(NS, id) {
            Some(job) => (Some(job.clone()), View::job(job).uint("ModifyIndex")),
            None => (None, self.store.tables.jobs),
        }
    }

    /// `GET /v1/job/:id/versions`: the kept versions, newest first.
    pub fn versions(&self, id: &str) -> Vec<Value> {
        self.store
            .jobs
            .get(&(NS.to_owned(), id.to_owned()))
            .map(|r| r.versions.clone())
            .unwrap_or_default()
    }

    /// `POST /v1/job/:id/revert`, with `EnforcePriorVersion` when set: the endpoint's answer.
    pub fn revert(
        &mut self,
        id: &str,
        version: u64,
        enforce_prior_version: Option<u64>,
    ) -> Result<Value, ApiError> {
        self.write(
            |st| match st.revert(NS, id, version, enforce_prior_version) {
                Ok((out, plan)) => (Ok(out.body()), plan),
                Err(e) => (Err(e), Plan::default()),
            },
        )
    }

    /// `POST /v1/job/:id/stable`: the endpoint's answer (`{"JobModifyIndex"}`).
    pub fn stable(&mut self, id: &str, version: u64, stable: bool) -> Result<Value, ApiError> {
        let index = self.write(|st| (st.set_stable(NS, id, version, stable), Plan::default()))?;
        Ok(serde_json::json!({"JobModifyIndex": index, "Index": index}))
    }

    /// `GET /v1/nodes`: the node stubs and the index of the answer.
    pub fn nodes(&self) -> (Vec<Value>, u64) {
        let stubs = self
            .store
            .nodes_in_order()
            .into_iter()
            .map(|n| self.store.node_stub(n))
            .collect();
        (stubs, self.store.tables.nodes)
    }

    /// Gives the client node a `host_volume` `name` at `path` (its client config).
    pub fn set_host_volume(&mut self, name: &str, path: &str) {
        let node = self.store.node_id.clone();
        let volume = HostVolume {
            path: path.to_owned(),
            read_only: false,
        };
        self.write(|st| (st.set_host_volume(&node, name, volume), Plan::default()));
    }

    /// `DELETE /v1/job/:id` (with `purge`): the endpoint's answer.
    pub fn deregister(&mut self, id: &str, purge: bool) -> Value {
        self.write(|st| {
            let (out, plan) = st.deregister(NS, id, purge);
            (out.body(), plan)
        })
    }

    /// `POST /v1/job/:id/plan` with the body `{"Job": …}`: the endpoint's answer.
    pub fn plan(&self, body: &Value, diff: bool) -> Result<Value, ApiError> {
        let job = submit::job_from_body(body, None, None)?;
        Ok(self.store.plan(&job, diff))
    }

    /// `GET /v1/job/:id/allocations`: the stubs and the index of the answer.
    pub fn allocations(&self, id: &str) -> (Vec<Value>, u64) {
        (self.store.job_allocs(NS, id), self.store.tables.allocs)
    }

    /// `GET /v1/job/:id/deployment`: the latest deployment and the index of the answer.
    pub fn latest_deployment(&self, id: &str) -> (Option<Value>, u64) {
        let latest = self.store.job_deployments(NS, id).into_iter().next();
        (latest, self.store.tables.deployments)
    }

    /// `POST /v1/deployment/fail/:id`: the endpoint's answer.
    pub fn fail_deployment(&mut self, deployment_id: &str) -> Result<Value, ApiError> {
        self.write(
            |st| match st.fail_deployment(deployment_id, "Deployment marked as failed") {
                Ok((reverted, plan)) => (Ok(st.deployment_update(deployment_id, reverted).1), plan),
                Err(e) => (Err(e), Plan::default()),
            },
        )
    }

    /// The live allocations of the job's current version.
    fn live_allocs(&self, job_id: &str) -> Vec<(String, String)> {
        let Some(version) = self
            .store
            .job(NS, job_id)
            .map(|j| View::job(j).uint("Version"))
        else {
            return Vec::new();
        };
        self.store
            .allocs
            .values()
            .filter(|a| {
                a.namespace == NS
                    && a.job_id == job_id
                    && a.job_version == version
                    && a.desired_run()
                    && !a.client_terminal()
            })
            .map(|a| (a.id.clone(), a.deployment_id.clone()))
            .collect()
    }

    /// Decides the health of the live allocations of the job's current version, as their health
    /// checks would. Unhealthy ones fail (their tasks dead). Where they belong to an active
    /// deployment, the health is recorded through `Deployment.SetAllocHealth`: the deployment
    /// succeeds (the version becomes stable) once all are healthy, and fails at the first
    /// unhealthy one, auto-reverting when the group asks for it.
    pub fn set_health(&mut self, job_id: &str, healthy: bool) {
        let live = self.live_allocs(job_id);
        let now = self.store.clock.now();
        self.write(|st| {
            let mut plan = Plan::default();
            if !healthy {
                for (id, _) in &live {
                    st.update_alloc(id, |a| {
                        for t in a.task_states.values_mut() {
                            t.state = "dead".into();
                            t.failed = true;
                            t.finished_at = rfc3339(now);
                        }
                    });
                }
            }
            let mut deployments: Vec<&str> = live
                .iter()
                .map(|(_, d)| d.as_str())
                .filter(|d| !d.is_empty())
                .collect();
            deployments.sort_unstable();
            deployments.dedup();
            for d in deployments {
                let ids: Vec<String> = live
                    .iter()
                    .filter(|(_, dep)| dep == d)
                    .map(|(id, _)| id.clone())
                    .collect();
                let (good, bad) = if healthy {
                    (ids, Vec::new())
                } else {
                    (Vec::new(), ids)
                };
                // A deployment that ended meanwhile takes no health: nothing to record.
                if let Ok((_, p)) = st.set_deployment_alloc_health(d, &good, &bad) {
                    plan.extend(p);
                }
            }
            ((), plan)
        });
    }

    /// Crashes the live allocations of the job's current version the way a task that exits at
    /// start does once its restarts are exhausted: every task `dead` and `failed`, with
    /// `events` (`(type, display message)`, oldest first). The deployment is left alone, as
    /// Nomad leaves it until its deadline.
    pub fn crash(&mut self, job_id: &str, events: &[(&str, &str)]) {
        let live = self.live_allocs(job_id);
        let now = self.store.clock.now();
        let events: Vec<TaskEvent> = events
            .iter()
            .map(|(kind, display)| TaskEvent {
                fails_task: *kind == "Not Restarting",
                ..TaskEvent::at(now, kind, *display)
            })
            .collect();
        let restarts = events.iter().filter(|e| e.r#type == "Restarting").count() as u64;
        self.write(|st| {
            for (id, _) in &live {
                st.update_alloc(id, |a| {
                    for t in a.task_states.values_mut() {
                        t.state = "dead".into();
                        t.failed = true;
                        t.restarts = restarts;
                        t.finished_at = rfc3339(now);
                        t.events = events.clone();
                    }
                });
            }
            ((), Plan::default())
        });
    }

    /// Sets the status and description of the job's latest deployment, as the deployment
    /// watcher would.
    pub fn set_deployment_status(&mut self, job_id: &str, status: &str, description: &str) {
        let latest = self
            .latest_deployment(job_id)
            .0
            .and_then(|d| d.get("ID").and_then(Value::as_str).map(str::to_owned));
        if let Some(id) = latest {
            self.write(|st| {
                st.set_deployment_status(&id, status, description);
                ((), Plan::default())
            });
        }
    }

    /// Adds or replaces a Nomad-native service registration, as a client registers a task's
    /// service (the store sets its indexes).
    pub fn register_service(&mut self, registration: ServiceReg) {
        self.write(|st| {
            st.upsert_service(registration);
            ((), Plan::default())
        });
    }

    /// Removes a service registration by ID.
    pub fn deregister_service(&mut self, id: &str) {
        self.write(|st| {
            st.remove_service(id);
            ((), Plan::default())
        });
    }

    /// `GET /v1/services`: service names and tags per namespace, and the index of the answer.
    pub fn services(&self) -> (Value, u64) {
        (
            self.store.service_namespaces(|ns| ns == NS),
            self.store.tables.services,
        )
    }

    /// `GET /v1/service/:name`: its registrations and the index of the answer.
    pub fn service(&self, name: &str) -> (Vec<Value>, u64) {
        (
            self.store.service_registrations(name, |ns| ns == NS),
            self.store.tables.services,
        )
    }
}
