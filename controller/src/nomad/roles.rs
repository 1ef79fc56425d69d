//! Role traits: the slices of [`NomadApi`] that callers actually use (see
//! [`crate::consul::roles`] for the pattern). Every [`NomadApi`] implementation is every
//! role; a test double implements one role directly and must not also implement `NomadApi`.

use serde_json::Value;

use super::{
    AllocationStub, Deployment, DeploymentUpdateResponse, Job, JobVersions, JobWriteResponse,
    NodeStub, NomadApi, PlanResponse, Result, ServiceNamespace, ServiceRegistration,
};
use crate::consul::role_trait;
use crate::transport::{QueryMeta, QueryOptions};

role_trait! {
    /// Jobs: read, register with `EnforceIndex`, versions, revert, stable, stop, plan.
    pub trait NomadJobs: NomadApi {
        fn job_read(&self, id: &str, opts: QueryOptions) -> Result<(Option<Job>, QueryMeta)>;
        fn job_register(&self, job: &Value, enforce_index: Option<u64>) -> Result<JobWriteResponse>;
        fn job_versions(&self, id: &str, diffs: bool) -> Result<JobVersions>;
        fn job_revert(
            &self,
            id: &str,
            version: u64,
            enforce_prior_version: Option<u64>,
        ) -> Result<JobWriteResponse>;
        fn job_stable(&self, id: &str, version: u64, stable: bool) -> Result<JobWriteResponse>;
        fn job_stop(&self, id: &str, purge: bool) -> Result<JobWriteResponse>;
        fn job_plan(&self, job: &Value, diff: bool) -> Result<PlanResponse>;
    }
}

role_trait! {
    /// The rollout gate's view: allocations and deployments of a job.
    pub trait NomadDeployments: NomadApi {
        fn job_allocations(
            &self,
            id: &str,
            opts: QueryOptions,
        ) -> Result<(Vec<AllocationStub>, QueryMeta)>;
        fn job_latest_deployment(
            &self,
            id: &str,
            opts: QueryOptions,
        ) -> Result<(Option<Deployment>, QueryMeta)>;
        fn deployment_fail(&self, id: &str) -> Result<DeploymentUpdateResponse>;
    }
}

role_trait! {
    /// Native service discovery.
    pub trait NomadServices: NomadApi {
        fn services(&self, opts: QueryOptions) -> Result<(Vec<ServiceNamespace>, QueryMeta)>;
        fn service(
            &self,
            name: &str,
            opts: QueryOptions,
        ) -> Result<(Vec<ServiceRegistration>, QueryMeta)>;
    }
}

role_trait! {
    /// The client nodes (preflight: their host volumes).
    pub trait NomadNodes: NomadApi {
        fn nodes(&self, opts: QueryOptions) -> Result<(Vec<NodeStub>, QueryMeta)>;
    }
}

role_trait! {
    /// Cluster status: is there a Raft leader.
    pub trait NomadStatus: NomadApi {
        fn status_leader(&self) -> Result<String>;
    }
}
