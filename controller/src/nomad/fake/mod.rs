//! An in-memory [`NomadApi`] for unit tests of the loop, built on the twin's Nomad servers in
//! process ([`hashistack_twin::nomad::embedded::Embedded`]): jobs are decoded, canonicalized and
//! validated as the register endpoint does; versions, `EnforceIndex` and `EnforcePriorVersion`
//! with Nomad's messages, revert, stop/purge, the plan, allocations, deployments with progress
//! deadlines and auto-revert, and native services are the twin's. This file only translates
//! between the client's types and the twin's JSON (the contract both are held to), and adds what
//! tests need on top: call recording, error injection, blocking reads on tokio time (so
//! `start_paused` tests do not spin) and the health controls a test drives.
//!
//! Placed allocations run at once; nothing becomes healthy until the test says so
//! ([`FakeNomad::set_allocation_health`]). Time is tokio's: a deployment fails by itself only
//! when its progress deadline passes on that clock.

use std::sync::{Arc, MutexGuard};
use std::time::Duration;

use hashistack_twin::nomad::embedded::{ApiError, Clock, Embedded, ServiceReg};
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use tokio::time::Instant;

use super::{
    AllocationStub, Deployment, DeploymentUpdateResponse, Error, Job, JobVersions,
    JobWriteResponse, NodeStub, NomadApi, PlanResponse, Result, ServiceNamespace,
    ServiceRegistration, unwrap_job,
};
pub use crate::transport::fake::Call;
use crate::transport::fake::{Indexed, Model, Recorder};
use crate::transport::{QueryMeta, QueryOptions};

/// Nomad's servers clamp waits to 5 minutes, and use that when none is given.
const MAX_WAIT: Duration = Duration::from_secs(300);

/// What the fake's clock reads when it is created: 2024-01-01T00:00:00Z, so timestamps do not
/// depend on when a test runs.
const EPOCH_NANOS: i64 = 1_704_067_200_000_000_000;

#[derive(Debug)]
struct State {
    nomad: Embedded,
    faults: Recorder<Error>,
    leader: String,
}

impl Indexed for State {
    fn index(&self) -> u64 {
        self.nomad.index()
    }
}

/// In-memory Nomad. Clones share state.
#[derive(Clone)]
pub struct FakeNomad {
    model: Arc<Model<State>>,
    /// Tokio time at creation, [`EPOCH_NANOS`] on the twin's clock.
    start: Instant,
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

/// Converts the twin's answer into the client's type, as the client decodes the HTTP body. A
/// failure is a mismatch between the two, reported as a 500.
fn decode<T: DeserializeOwned>(what: &str, value: Value) -> Result<T> {
    serde_json::from_value(value)
        .map_err(|e| Error::injected(what, 500, &format!("fake: {what} does not convert: {e}")))
}

fn job_of(value: Value) -> Result<Job> {
    Job::from_value(value)
        .map_err(|e| Error::injected("read job", 500, &format!("fake: job does not convert: {e}")))
}

/// The error the client makes of the twin's answer to `op`.
fn api_error(op: &str, e: ApiError) -> Error {
    Error::injected(op, e.status, &e.message)
}

impl FakeNomad {
    /// An empty Nomad with a leader and one client node, where new job versions get
    /// deployments (Nomad 1.11). The node has `host_volume "certs"` in its client config (the
    /// default `spec.job.certVolume`, which a cluster running the docker or exec proxy has), so it
    /// passes preflight; another name is missing until [`FakeNomad::set_host_volume`].
    pub fn new() -> FakeNomad {
        let start = Instant::now();
        let clock = Clock::new(move || {
            EPOCH_NANOS
                .saturating_add(i64::try_from(start.elapsed().as_nanos()).unwrap_or(i64::MAX))
        });
        let fake = FakeNomad {
            model: Arc::new(Model::new(State {
                nomad: Embedded::new(clock),
                faults: Recorder::default(),
                leader: "127.0.0.1:4647".into(),
            })),
            start,
        };
        fake.set_host_volume("certs", "/opt/proxy/certs");
        fake
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.model.lock()
    }

    fn enter(&self, op: &'static str, target: &str, index: Option<u64>) -> Result<()> {
        self.lock().faults.enter(op, target, index, |status| {
            Error::injected(op, status, "Permission denied")
        })
    }

    /// The job's ID, for the call record (`""` when it has none: the twin refuses it).
    fn id_of(job: &Value) -> String {
        unwrap_job(job)
            .get("ID")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned()
    }

    /// Runs `f` on the twin after its deployment watcher caught up with the clock, and wakes
    /// blocked readers when the index moved.
    fn with<T>(&self, f: impl FnOnce(&mut Embedded) -> T) -> T {
        self.model.write(|st, _| {
            st.nomad.tick();
            f(&mut st.nomad)
        })
    }

    /// A blocking read of the twin; it also wakes when a progress deadline passes.
    async fn blocking<T>(
        &self,
        opts: QueryOptions,
        mut read: impl FnMut(&Embedded) -> (T, u64),
    ) -> (T, QueryMeta) {
        let start = self.start;
        self.model
            .blocking(opts, MAX_WAIT, MAX_WAIT, |st, _| {
                let wake = st.nomad.tick().map(|nanos| {
                    let after = u64::try_from(nanos.saturating_sub(EPOCH_NANOS)).unwrap_or(0);
                    start + Duration::from_nanos(after)
                });
                let (value, index) = read(&st.nomad);
                (value, index, wake)
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

    /// `false` makes new system-job versions get no deployment (Nomad before 1.11); service
    /// jobs keep theirs, as on such a server.
    pub fn set_deployments_enabled(&self, enabled: bool) {
        self.with(|n| n.set_system_deployments(enabled));
    }

    /// The current version of a job (test assertions).
    pub fn job(&self, id: &str) -> Option<Job> {
        let (job, _) = self.with(|n| n.job(id));
        job_of(job?).ok()
    }

    /// All kept versions of a job, oldest first (test assertions).
    pub fn versions(&self, id: &str) -> Vec<Job> {
        let versions = self.with(|n| n.versions(id));
        versions
            .into_iter()
            .rev()
            .filter_map(|v| job_of(v).ok())
            .collect()
    }

    /// Registers a job directly (test setup), as if someone ran `nomad job run`. It is decoded
    /// and canonicalized but not validated, so a stub can stand in for another team's job.
    pub fn seed_job(&self, job: &Value) -> Option<Job> {
        let body = json!({"Job": unwrap_job(job)});
        let stored = self.with(|n| n.seed(&body)).ok()?;
        job_of(stored).ok()
    }

    /// Decides the health of the current version's live allocations. `true` makes the
    /// deployment `successful` and the version stable once all are healthy; `false` fails the
    /// allocations (their tasks dead) and the deployment ("Failed due to unhealthy
    /// allocations"), auto-reverting when the group says so. Without a deployment, `false`
    /// only fails the allocations and `true` changes nothing.
    pub fn set_allocation_health(&self, job_id: &str, healthy: bool) {
        self.with(|n| n.set_health(job_id, healthy));
    }

    /// Crashes the live allocations of the current version the way a task that exits at start
    /// does once its restarts are exhausted: every task `dead` and `failed` with `events`
    /// (`(type, display message)`, oldest first), `ClientStatus: failed`. The deployment is left
    /// `running`, as Nomad leaves it until its deadline.
    pub fn crash_allocations(&self, job_id: &str, events: &[(&str, &str)]) {
        self.with(|n| n.crash(job_id, events));
    }

    /// Overrides the latest deployment's status and description.
    pub fn set_deployment_status(&self, job_id: &str, status: &str, description: &str) {
        self.with(|n| n.set_deployment_status(job_id, status, description));
    }

    /// Adds (or replaces, by id) a native service registration.
    pub fn register_service(&self, registration: ServiceRegistration) {
        let reg = ServiceReg {
            id: registration.id,
            service_name: registration.service_name,
            namespace: registration.namespace,
            node_id: registration.node_id,
            datacenter: registration.datacenter,
            job_id: registration.job_id,
            alloc_id: registration.alloc_id,
            tags: registration.tags,
            address: registration.address,
            port: registration.port,
            create_index: registration.create_index,
            modify_index: registration.modify_index,
        };
        self.with(|n| n.register_service(reg));
    }

    /// Removes a native service registration by id.
    pub fn deregister_service(&self, id: &str) {
        self.with(|n| n.deregister_service(id));
    }

    /// Gives the client node a `host_volume` `name` at `path`, as its client config would.
    pub fn set_host_volume(&self, name: &str, path: &str) {
        self.with(|n| n.set_host_volume(name, path));
    }

    /// Sets the leader address `status_leader` answers (`""`: no leader).
    pub fn set_leader(&self, leader: &str) {
        leader.clone_into(&mut self.lock().leader);
    }
}

impl NomadApi for FakeNomad {
    async fn job_read(&self, id: &str, opts: QueryOptions) -> Result<(Option<Job>, QueryMeta)> {
        self.enter("job_read", id, Some(opts.index))?;
        let (job, meta) = self.blocking(opts, |n| n.job(id)).await;
        Ok((job.map(job_of).transpose()?, meta))
    }

    async fn job_register(
        &self,
        job: &Value,
        enforce_index: Option<u64>,
    ) -> Result<JobWriteResponse> {
        let id = Self::id_of(job);
        self.enter("job_register", &id, enforce_index)?;
        let op = format!("register job {id}");
        let body = json!({"Job": unwrap_job(job)});
        let result = match self.with(|n| n.register(&body, enforce_index)) {
            Ok(answer) => decode(&op, answer),
            Err(e) => Err(api_error(&op, e).of_register(&id)),
        };
        self.lost_answer("job_register", result)
    }

    async fn job_versions(&self, id: &str, _diffs: bool) -> Result<JobVersions> {
        self.enter("job_versions", id, None)?;
        let versions = self
            .with(|n| n.versions(id))
            .into_iter()
            .map(job_of)
            .collect::<Result<_>>()?;
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
        let op = format!("revert job {id} to version {version}");
        let result = match self.with(|n| n.revert(id, version, enforce_prior_version)) {
            Ok(answer) => decode(&op, answer),
            Err(e) => Err(api_error(&op, e).of_revert(id)),
        };
        self.lost_answer("job_revert", result)
    }

    async fn job_stable(&self, id: &str, version: u64, stable: bool) -> Result<JobWriteResponse> {
        self.enter("job_stable", id, Some(version))?;
        let op = format!("mark version {version} of job {id} stable");
        let answer = self
            .with(|n| n.stable(id, version, stable))
            .map_err(|e| api_error(&op, e))?;
        decode(&op, answer)
    }

    async fn job_stop(&self, id: &str, purge: bool) -> Result<JobWriteResponse> {
        self.enter("job_stop", id, None)?;
        decode(
            &format!("stop job {id}"),
            self.with(|n| n.deregister(id, purge)),
        )
    }

    async fn job_plan(&self, job: &Value, diff: bool) -> Result<PlanResponse> {
        let id = Self::id_of(job);
        self.enter("job_plan", &id, None)?;
        let op = format!("plan job {id}");
        let body = json!({"Job": unwrap_job(job)});
        let answer = self
            .with(|n| n.plan(&body, diff))
            .map_err(|e| api_error(&op, e))?;
        decode(&op, answer)
    }

    async fn job_allocations(
        &self,
        id: &str,
        opts: QueryOptions,
    ) -> Result<(Vec<AllocationStub>, QueryMeta)> {
        self.enter("job_allocations", id, Some(opts.index))?;
        let (allocs, meta) = self.blocking(opts, |n| n.allocations(id)).await;
        Ok((decode("allocations", Value::Array(allocs))?, meta))
    }

    async fn job_latest_deployment(
        &self,
        id: &str,
        opts: QueryOptions,
    ) -> Result<(Option<Deployment>, QueryMeta)> {
        self.enter("job_latest_deployment", id, Some(opts.index))?;
        let (latest, meta) = self.blocking(opts, |n| n.latest_deployment(id)).await;
        Ok((latest.map(|d| decode("deployment", d)).transpose()?, meta))
    }

    async fn deployment_fail(&self, id: &str) -> Result<DeploymentUpdateResponse> {
        self.enter("deployment_fail", id, None)?;
        let op = format!("fail deployment {id}");
        let answer = self
            .with(|n| n.fail_deployment(id))
            .map_err(|e| api_error(&op, e))?;
        decode(&op, answer)
    }

    async fn nodes(&self, opts: QueryOptions) -> Result<(Vec<NodeStub>, QueryMeta)> {
        self.enter("nodes", "", Some(opts.index))?;
        let (nodes, meta) = self.blocking(opts, Embedded::nodes).await;
        Ok((decode("nodes", Value::Array(nodes))?, meta))
    }

    async fn services(&self, opts: QueryOptions) -> Result<(Vec<ServiceNamespace>, QueryMeta)> {
        self.enter("services", "", Some(opts.index))?;
        let (list, meta) = self.blocking(opts, Embedded::services).await;
        Ok((decode("services", list)?, meta))
    }

    async fn service(
        &self,
        name: &str,
        opts: QueryOptions,
    ) -> Result<(Vec<ServiceRegistration>, QueryMeta)> {
        self.enter("service", name, Some(opts.index))?;
        let (regs, meta) = self.blocking(opts, |n| n.service(name)).await;
        Ok((decode("service registrations", Value::Array(regs))?, meta))
    }

    async fn status_leader(&self) -> Result<String> {
        self.enter("status_leader", "", None)?;
        Ok(self.lock().leader.clone())
    }
}

#[cfg(test)]
mod tests;
