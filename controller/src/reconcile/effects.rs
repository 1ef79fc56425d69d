//! Carrying out the rollout machine's effects through the client traits.

use tracing::{info, warn};

use super::Operator;
use crate::consul::ConsulApi;
use crate::nomad::{self, NomadApi};
use crate::proxy::PolicyWrite;
use crate::proxy::probe::ProxyProbe;
use crate::render::{META_OWNER, META_SPEC_DIGEST};
use crate::rollout::{ApplyError, ApplyOutcome, Effect, JobRef};
use crate::spec::ProxyKind;
use crate::transport::QueryOptions;

impl<C, N, P> Operator<C, N, P>
where
    C: ConsulApi + 'static,
    N: NomadApi,
    P: ProxyProbe,
{
    /// Carries out `writes` in order, stopping at the first failure. Policy writes go through
    /// the driver of `proxy`, the proxy the rollout runs.
    pub(super) async fn execute(&self, writes: &[Effect], proxy: ProxyKind) -> ApplyOutcome {
        let driver = self.proxies.driver(proxy);
        for (i, effect) in writes.iter().enumerate() {
            let result = match effect {
                Effect::WriteKv { set, delete } | Effect::RestoreKv { set, delete } => {
                    driver
                        .apply_policy(PolicyWrite {
                            set,
                            delete,
                            fence: self.store.fence.as_ref(),
                        })
                        .await
                }
                Effect::RegisterJob {
                    job_id,
                    job,
                    job_digest,
                    enforce_index,
                } => {
                    info!(job = %job_id, enforce_index, "registering the proxy job");
                    match self.nomad.job_register(job, Some(*enforce_index)).await {
                        Ok(_) => Ok(()),
                        Err(e) => self.landed(job_id, Some(job_digest), &e, "register").await,
                    }
                }
                Effect::RevertJob {
                    job_id,
                    version,
                    enforce_prior_version,
                    target_digest,
                } => {
                    info!(job = %job_id, version, ?enforce_prior_version, "reverting the proxy job");
                    match self
                        .nomad
                        .job_revert(job_id, *version, *enforce_prior_version)
                        .await
                    {
                        Ok(_) => Ok(()),
                        Err(e) => {
                            self.landed(job_id, target_digest.as_ref(), &e, "revert")
                                .await
                        }
                    }
                }
                Effect::StopJob { job_id } => self.stop_job(job_id).await,
                Effect::RequeueAfter(_) => Ok(()),
            };
            if let Err(error) = result {
                warn!(effect = effect_name(effect), error = %error.message, retryable = error.retryable, "effect failed");
                return ApplyOutcome {
                    completed: i,
                    error: Some(error),
                };
            }
        }
        ApplyOutcome::all(writes.len())
    }

    /// After a gate passed: marks the job version that passed `Stable` when Nomad has not (a
    /// system job gets no deployment before Nomad 1.11), so a rollback target survives a lost
    /// status document (`plan::stable_rollback_target`). Best effort: the status names it too.
    pub(super) async fn mark_stable(&self, job: &JobRef) {
        let versions = match self.nomad.job_versions(&job.job_id, false).await {
            Ok(versions) => versions.versions,
            Err(e) => {
                warn!(job = %job.job_id, version = job.version, error = %e, "cannot read the job's versions to mark the good one stable");
                return;
            }
        };
        if !versions
            .iter()
            .any(|v| v.version == job.version && !v.stable)
        {
            return;
        }
        match self.nomad.job_stable(&job.job_id, job.version, true).await {
            Ok(_) => {
                info!(job = %job.job_id, version = job.version, "marked the version that passed the gate stable")
            }
            Err(e) => {
                warn!(job = %job.job_id, version = job.version, error = %e, "cannot mark the version that passed the gate stable")
            }
        }
    }

    /// Stops a handover slot without purging it. Only a job carrying our owner Meta is
    /// stopped (the journal naming it is untrusted input); one that is gone or stopped already
    /// is done.
    async fn stop_job(&self, job_id: &str) -> Result<(), ApplyError> {
        let read = |e: nomad::Error| ApplyError::new(e.to_string(), e.is_retryable());
        let (job, _) = self
            .nomad
            .job_read(job_id, QueryOptions::NOW)
            .await
            .map_err(read)?;
        let Some(job) = job.filter(|j| !j.stop) else {
            return Ok(());
        };
        if job.meta.get(META_OWNER) != Some(&self.config.owner) {
            return Err(ApplyError::new(
                format!("job {job_id:?} does not carry our {META_OWNER} Meta; it is not stopped"),
                false,
            ));
        }
        info!(job = %job_id, version = job.version, "stopping a handover slot (no purge)");
        match self.nomad.job_stop(job_id, false).await {
            Ok(_) => Ok(()),
            Err(e) => match self.nomad.job_read(job_id, QueryOptions::NOW).await {
                // The answer was lost but the stop landed.
                Ok((Some(j), _)) if j.stop => Ok(()),
                Ok((None, _)) => Ok(()),
                _ => Err(read(e)),
            },
        }
    }

    /// A job write answered with an error may still have landed: the answer was lost and the
    /// retry hit our own write (`EnforceIndex` / `EnforcePriorVersion` conflict), or a timeout
    /// hid a success. The job read back decides: when it carries `digest`, the write is done.
    pub(super) async fn landed(
        &self,
        job_id: &str,
        digest: Option<&String>,
        error: &nomad::Error,
        what: &str,
    ) -> Result<(), ApplyError> {
        let failed = ApplyError::new(error.to_string(), error.is_retryable());
        let Some(digest) = digest else {
            return Err(failed);
        };
        match self.nomad.job_read(job_id, QueryOptions::NOW).await {
            Ok((Some(job), _)) if job.meta.get(META_SPEC_DIGEST) == Some(digest) => {
                info!(job = %job_id, version = job.version, error = %error, "the {what} landed although its answer was an error");
                Ok(())
            }
            Ok(_) => Err(failed),
            // Nobody knows whether it landed: try again rather than decide on a guess.
            Err(_) => Err(ApplyError {
                retryable: true,
                ..failed
            }),
        }
    }
}

fn effect_name(effect: &Effect) -> &'static str {
    match effect {
        Effect::WriteKv { .. } => "write-kv",
        Effect::RegisterJob { .. } => "register-job",
        Effect::RestoreKv { .. } => "restore-kv",
        Effect::RevertJob { .. } => "revert-job",
        Effect::StopJob { .. } => "stop-job",
        Effect::RequeueAfter(_) => "requeue",
    }
}
