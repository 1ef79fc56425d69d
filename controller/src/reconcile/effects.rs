//! Carrying out the rollout machine's effects through the client traits.

use tracing::{info, warn};

use super::{Operator, TXN_MAX_OPS};
use crate::consul::{ConsulApi, TxnOp};
use crate::nomad::{self, NomadApi};
use crate::probe::ProxyProbe;
use crate::render::META_SPEC_DIGEST;
use crate::rollout::{ApplyError, ApplyOutcome, Effect};
use crate::transport::QueryOptions;

impl<C, N, P> Operator<C, N, P>
where
    C: ConsulApi + 'static,
    N: NomadApi,
    P: ProxyProbe,
{
    pub(super) async fn execute(&self, writes: &[Effect]) -> ApplyOutcome {
        for (i, effect) in writes.iter().enumerate() {
            let result = match effect {
                Effect::WriteKv { set, delete } | Effect::RestoreKv { set, delete } => {
                    self.write_kv(set, delete).await
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
        let failed = apply_error(&error.to_string(), error.is_retryable());
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

    /// Writes the policy entries in one transaction (TRAEFIK.md B: Traefik applies a half-written
    /// tree, so one txn is the only safe way). A change with more operations than a transaction
    /// holds rewrites the whole subtree instead (delete-tree, then every entry), which fits as
    /// long as the tree does: [`MAX_POLICY_KEYS`] is enforced when the document is loaded.
    pub(super) async fn write_kv(
        &self,
        set: &[(String, String)],
        delete: &[String],
    ) -> Result<(), ApplyError> {
        info!(
            set = set.len(),
            delete = delete.len(),
            "writing the policy tree"
        );
        let ops: Vec<TxnOp> = if set.len() + delete.len() <= TXN_MAX_OPS {
            set.iter()
                .map(|(key, value)| TxnOp::Set {
                    key: key.clone(),
                    value: value.clone().into_bytes(),
                })
                .chain(delete.iter().map(|key| TxnOp::Delete { key: key.clone() }))
                .collect()
        } else {
            self.rewrite_ops(set, delete).await?
        };
        self.consul
            .txn(ops)
            .await
            .map(|_| ())
            .map_err(|e| apply_error(&e.to_string(), e.is_retryable()))
    }

    /// The whole subtree after applying `set` and `delete`, as one delete-tree + sets.
    pub(super) async fn rewrite_ops(
        &self,
        set: &[(String, String)],
        delete: &[String],
    ) -> Result<Vec<TxnOp>, ApplyError> {
        let root = self.config.kv_root();
        let (pairs, _) = self
            .consul
            .kv_list(&root, QueryOptions::NOW)
            .await
            .map_err(|e| apply_error(&e.to_string(), e.is_retryable()))?;
        let mut tree: std::collections::BTreeMap<String, Vec<u8>> = pairs
            .into_iter()
            .filter(|p| p.key.starts_with(&root))
            .map(|p| (p.key, p.value))
            .collect();
        for key in delete {
            tree.remove(key);
        }
        for (key, value) in set {
            tree.insert(key.clone(), value.clone().into_bytes());
        }
        if tree.len() >= TXN_MAX_OPS {
            return Err(apply_error(
                &format!(
                    "failed to write the policy tree: {} keys do not fit one Consul transaction ({TXN_MAX_OPS} operations)",
                    tree.len()
                ),
                false,
            ));
        }
        info!(
            keys = tree.len(),
            "the change exceeds one transaction; rewriting the whole policy tree"
        );
        Ok(std::iter::once(TxnOp::DeleteTree { key: root })
            .chain(
                tree.into_iter()
                    .map(|(key, value)| TxnOp::Set { key, value }),
            )
            .collect())
    }
}

fn apply_error(message: &str, retryable: bool) -> ApplyError {
    ApplyError {
        message: message.to_owned(),
        retryable,
    }
}

fn effect_name(effect: &Effect) -> &'static str {
    match effect {
        Effect::WriteKv { .. } => "write-kv",
        Effect::RegisterJob { .. } => "register-job",
        Effect::RestoreKv { .. } => "restore-kv",
        Effect::RevertJob { .. } => "revert-job",
        Effect::RequeueAfter(_) => "requeue",
    }
}
