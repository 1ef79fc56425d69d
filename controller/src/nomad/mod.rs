//! Nomad HTTP client behind the [`NomadApi`] trait: register with `EnforceIndex`, read,
//! versions, revert with `EnforcePriorVersion`, stable, stop, plan, allocations, deployments,
//! nodes, services.
//!
//! [`NomadClient`] talks HTTP through [`crate::transport`]. Code that needs only a slice of the
//! API asks for a role trait from [`roles`] (`NomadJobs`, `NomadDeployments`, `NomadServices`,
//! `NomadStatus`); every `NomadApi` is every role. `fake::FakeNomad` (behind `cfg(test)` or
//! the `test-support` feature) is an in-memory implementation for unit tests of the loop.

#[cfg(any(test, feature = "test-support"))]
pub mod fake;
pub mod roles;
mod types;

use std::future::Future;

use serde_json::Value;
pub use types::*;

use crate::transport::{self, ApiClient, ClientError, QueryMeta, QueryOptions, Request, Retry};

/// Prefix of Nomad's answer when an `EnforceIndex` check fails (`RegisterEnforceIndexErrPrefix`
/// in Nomad's source); Nomad sends it with status 500.
pub const ENFORCE_INDEX_PREFIX: &str = "Enforcing job modify index";

/// Prefix of Nomad's answer when an `EnforcePriorVersion` check fails (`Job.Revert` in Nomad's
/// source: "Current job has version %d; enforcing version %d"); also status 500.
const PRIOR_VERSION_PREFIX: &str = "Current job has version";

/// Errors of the Nomad client.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A request failed (network, status, decoding).
    #[error(transparent)]
    Request(#[from] transport::RequestFailed),
    /// The job changed since it was read: `EnforceIndex` refused the register. Re-read and
    /// re-plan; never retry blindly.
    #[error("failed to register job {job}: it changed since it was read ({message})")]
    EnforceIndexConflict {
        /// Job id.
        job: String,
        /// Nomad's message.
        message: String,
    },
    /// The job's version is not the one the revert expected (`EnforcePriorVersion`).
    #[error("failed to revert job {job}: its version changed since it was read ({message})")]
    PriorVersionConflict {
        /// Job id.
        job: String,
        /// Nomad's message.
        message: String,
    },
    /// A request body could not be encoded.
    #[error(transparent)]
    Encode(#[from] transport::EncodeFailed),
    /// The job document has no `ID`.
    #[error("failed to {op}: the job has no ID")]
    MissingJobId {
        /// The step.
        op: &'static str,
    },
}

/// Result alias of this module.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// True for 401/403.
    pub fn is_forbidden(&self) -> bool {
        self.transport_forbidden()
    }

    /// True for `EnforceIndex` and `EnforcePriorVersion` conflicts.
    pub fn is_conflict(&self) -> bool {
        matches!(
            self,
            Error::EnforceIndexConflict { .. } | Error::PriorVersionConflict { .. }
        )
    }

    /// The server's error text, when it answered with an error.
    pub fn message(&self) -> Option<&str> {
        match self {
            Error::Request(failed) => failed.source.message(),
            Error::EnforceIndexConflict { message, .. }
            | Error::PriorVersionConflict { message, .. } => Some(message),
            _ => None,
        }
    }

    /// Nomad's text when it refused a write with a 500 that starts with one of `prefixes`:
    /// how it reports a failed `EnforceIndex` or `EnforcePriorVersion` check.
    fn refused_with(&self, prefixes: &[&str]) -> Option<String> {
        let message = self.message().filter(|_| self.status() == Some(500))?;
        prefixes
            .iter()
            .any(|p| message.starts_with(p))
            .then(|| message.to_owned())
    }

    /// The error of a register of `job`: [`Error::EnforceIndexConflict`] when Nomad refused
    /// the `EnforceIndex` check, `self` otherwise. The client and the fake both classify here.
    pub(crate) fn of_register(self, job: &str) -> Error {
        match self.refused_with(&[ENFORCE_INDEX_PREFIX]) {
            Some(message) => Error::EnforceIndexConflict {
                job: job.to_owned(),
                message,
            },
            None => self,
        }
    }

    /// The error of a revert of `job`: [`Error::PriorVersionConflict`] when Nomad refused the
    /// `EnforcePriorVersion` check (or the index check a revert registers with), `self`
    /// otherwise.
    pub(crate) fn of_revert(self, job: &str) -> Error {
        match self.refused_with(&[PRIOR_VERSION_PREFIX, ENFORCE_INDEX_PREFIX]) {
            Some(message) => Error::PriorVersionConflict {
                job: job.to_owned(),
                message,
            },
            None => self,
        }
    }
}

/// The Nomad calls the operator makes. Reads take [`QueryOptions`] and return [`QueryMeta`]
/// (`X-Nomad-Index`); drive them with [`crate::transport::Watch`] to watch. The slices of it
/// that callers use are the role traits in [`roles`].
pub trait NomadApi: Send + Sync {
    /// Reads a job; `None` when it does not exist (or was purged).
    fn job_read(
        &self,
        id: &str,
        opts: QueryOptions,
    ) -> impl Future<Output = Result<(Option<Job>, QueryMeta)>> + Send;

    /// Registers a job (the job object itself, or `{"Job": …}`). With `enforce_index`, only if
    /// the job's current `JobModifyIndex` equals it (0: only if the job is new); a mismatch is
    /// [`Error::EnforceIndexConflict`].
    fn job_register(
        &self,
        job: &Value,
        enforce_index: Option<u64>,
    ) -> impl Future<Output = Result<JobWriteResponse>> + Send;

    /// The job's versions, newest first (empty for an unknown job); with diffs when `diffs`.
    fn job_versions(
        &self,
        id: &str,
        diffs: bool,
    ) -> impl Future<Output = Result<JobVersions>> + Send;

    /// Registers a copy of `version` as a new version. With `enforce_prior_version`, only if the
    /// job is still at that version ([`Error::PriorVersionConflict`] otherwise).
    fn job_revert(
        &self,
        id: &str,
        version: u64,
        enforce_prior_version: Option<u64>,
    ) -> impl Future<Output = Result<JobWriteResponse>> + Send;

    /// Marks `version` of a job stable (or not): what Nomad does by itself when the version's
    /// deployment succeeds, for versions that get none (system jobs before Nomad 1.11), so a
    /// version that passed the gate is a rollback target Nomad knows. Not a new version.
    fn job_stable(
        &self,
        id: &str,
        version: u64,
        stable: bool,
    ) -> impl Future<Output = Result<JobWriteResponse>> + Send;

    /// Stops a job (a new version with `Stop: true`), or removes it with `purge`.
    fn job_stop(
        &self,
        id: &str,
        purge: bool,
    ) -> impl Future<Output = Result<JobWriteResponse>> + Send;

    /// Dry-runs a register: scheduler annotations and, with `diff`, the diff against the
    /// running job.
    fn job_plan(
        &self,
        job: &Value,
        diff: bool,
    ) -> impl Future<Output = Result<PlanResponse>> + Send;

    /// The job's allocations (empty for an unknown job).
    fn job_allocations(
        &self,
        id: &str,
        opts: QueryOptions,
    ) -> impl Future<Output = Result<(Vec<AllocationStub>, QueryMeta)>> + Send;

    /// The job's most recent deployment; `None` when it has none (system jobs before 1.11).
    fn job_latest_deployment(
        &self,
        id: &str,
        opts: QueryOptions,
    ) -> impl Future<Output = Result<(Option<Deployment>, QueryMeta)>> + Send;

    /// Marks a deployment failed (auto-revert applies when the group has it).
    fn deployment_fail(
        &self,
        id: &str,
    ) -> impl Future<Output = Result<DeploymentUpdateResponse>> + Send;

    /// The client nodes, with their datacenter, node pool, state and host volumes.
    fn nodes(
        &self,
        opts: QueryOptions,
    ) -> impl Future<Output = Result<(Vec<NodeStub>, QueryMeta)>> + Send;

    /// Native service names by namespace.
    fn services(
        &self,
        opts: QueryOptions,
    ) -> impl Future<Output = Result<(Vec<ServiceNamespace>, QueryMeta)>> + Send;

    /// Registrations of one native service (empty when unknown).
    fn service(
        &self,
        name: &str,
        opts: QueryOptions,
    ) -> impl Future<Output = Result<(Vec<ServiceRegistration>, QueryMeta)>> + Send;

    /// The Raft leader's address, `""` when there is none.
    fn status_leader(&self) -> impl Future<Output = Result<String>> + Send;
}

/// Accepts either a job object or a `{"Job": …}` wrapper (what `nomad job run -output` prints).
pub fn unwrap_job(job: &Value) -> &Value {
    match job.as_object() {
        Some(map) if map.len() == 1 && map.contains_key("Job") => &map["Job"],
        _ => job,
    }
}

fn job_id<'a>(job: &'a Value, op: &'static str) -> Result<&'a str> {
    unwrap_job(job)
        .get("ID")
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .ok_or(Error::MissingJobId { op })
}

transport::impl_client_error!(Error, transport::Api::Nomad);

/// The HTTP implementation of [`NomadApi`]: the shared [`ApiClient`] with this module's errors.
/// Build it with `NomadClient::new(&config)` (see [`transport::ClientConfig::nomad_from_env`]).
pub type NomadClient = ApiClient<Error>;

impl NomadClient {
    /// `GET /v1/deployment/:id`; `None` when unknown.
    pub async fn deployment_read(
        &self,
        id: &str,
        opts: QueryOptions,
    ) -> Result<(Option<Deployment>, QueryMeta)> {
        let request = Request::get("/v1/deployment").key(id).blocking(opts);
        self.optional(|| format!("read deployment {id}"), request)
            .await
    }
}

impl NomadApi for NomadClient {
    async fn job_read(&self, id: &str, opts: QueryOptions) -> Result<(Option<Job>, QueryMeta)> {
        let request = Request::get("/v1/job").key(id).blocking(opts);
        self.optional(|| format!("read job {id}"), request).await
    }

    async fn job_register(
        &self,
        job: &Value,
        enforce_index: Option<u64>,
    ) -> Result<JobWriteResponse> {
        let id = job_id(job, "register job")?.to_owned();
        let body = JobRegisterRequest {
            job: unwrap_job(job),
            enforce_index: enforce_index.is_some(),
            job_modify_index: enforce_index,
        };
        // With EnforceIndex a repeated register fails its check instead of writing twice; without,
        // retry only what never reached the server.
        let retry = if enforce_index.is_some() {
            Retry::Idempotent
        } else {
            Retry::UnsentOnly
        };
        let request =
            Self::encode("job register request", Request::post("/v1/jobs"), &body)?.retry(retry);
        self.json(|| format!("register job {id}"), request)
            .await
            .map(|(r, _)| r)
            .map_err(|e| e.of_register(&id))
    }

    async fn job_versions(&self, id: &str, diffs: bool) -> Result<JobVersions> {
        let mut request = Request::get("/v1/job").key(id).key("versions");
        if diffs {
            request = request.query("diffs", "true");
        }
        let (versions, _) = self
            .optional(|| format!("read versions of job {id}"), request)
            .await?;
        Ok(versions.unwrap_or_default())
    }

    async fn job_revert(
        &self,
        id: &str,
        version: u64,
        enforce_prior_version: Option<u64>,
    ) -> Result<JobWriteResponse> {
        let body = JobRevertRequest {
            job_id: id,
            job_version: version,
            enforce_prior_version,
        };
        let retry = if enforce_prior_version.is_some() {
            Retry::Idempotent
        } else {
            Retry::UnsentOnly
        };
        let request = Self::encode(
            "job revert request",
            Request::post("/v1/job").key(id).key("revert"),
            &body,
        )?
        .retry(retry);
        self.json(|| format!("revert job {id} to version {version}"), request)
            .await
            .map(|(r, _)| r)
            .map_err(|e| e.of_revert(id))
    }

    async fn job_stable(&self, id: &str, version: u64, stable: bool) -> Result<JobWriteResponse> {
        let body = JobStableRequest {
            job_id: id,
            job_version: version,
            stable,
        };
        // Setting a flag to a value: repeating it changes nothing.
        let request = Self::encode(
            "job stable request",
            Request::post("/v1/job").key(id).key("stable"),
            &body,
        )?
        .retry(Retry::Idempotent);
        self.json(
            || format!("mark version {version} of job {id} stable"),
            request,
        )
        .await
        .map(|(r, _)| r)
    }

    async fn job_stop(&self, id: &str, purge: bool) -> Result<JobWriteResponse> {
        let mut request = Request::delete("/v1/job").key(id);
        if purge {
            request = request.query("purge", "true");
        }
        self.json(|| format!("stop job {id}"), request)
            .await
            .map(|(r, _)| r)
    }

    async fn job_plan(&self, job: &Value, diff: bool) -> Result<PlanResponse> {
        let id = job_id(job, "plan job")?.to_owned();
        let body = JobPlanRequest {
            job: unwrap_job(job),
            diff,
            policy_override: false,
        };
        let request = Self::encode(
            "job plan request",
            Request::post("/v1/job").key(&id).key("plan"),
            &body,
        )?;
        self.json(|| format!("plan job {id}"), request)
            .await
            .map(|(r, _)| r)
    }

    async fn job_allocations(
        &self,
        id: &str,
        opts: QueryOptions,
    ) -> Result<(Vec<AllocationStub>, QueryMeta)> {
        let request = Request::get("/v1/job")
            .key(id)
            .key("allocations")
            .blocking(opts);
        self.read(|| format!("list allocations of job {id}"), request)
            .await
    }

    async fn job_latest_deployment(
        &self,
        id: &str,
        opts: QueryOptions,
    ) -> Result<(Option<Deployment>, QueryMeta)> {
        let request = Request::get("/v1/job")
            .key(id)
            .key("deployment")
            .blocking(opts);
        self.read(|| format!("read latest deployment of job {id}"), request)
            .await
    }

    async fn deployment_fail(&self, id: &str) -> Result<DeploymentUpdateResponse> {
        // A repeated fail answers "can't fail terminal deployment"; send it once.
        let request = Request::post("/v1/deployment/fail")
            .key(id)
            .retry(Retry::UnsentOnly);
        self.json(|| format!("fail deployment {id}"), request)
            .await
            .map(|(r, _)| r)
    }

    async fn nodes(&self, opts: QueryOptions) -> Result<(Vec<NodeStub>, QueryMeta)> {
        let request = Request::get("/v1/nodes").blocking(opts);
        self.read(|| "list nodes".to_owned(), request).await
    }

    async fn services(&self, opts: QueryOptions) -> Result<(Vec<ServiceNamespace>, QueryMeta)> {
        let request = Request::get("/v1/services").blocking(opts);
        self.read(|| "list services".to_owned(), request).await
    }

    async fn service(
        &self,
        name: &str,
        opts: QueryOptions,
    ) -> Result<(Vec<ServiceRegistration>, QueryMeta)> {
        let request = Request::get("/v1/service").key(name).blocking(opts);
        self.read(|| format!("read service {name}"), request).await
    }

    async fn status_leader(&self) -> Result<String> {
        self.raft_leader().await
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::panic)] // tests fail loudly
mod tests;
