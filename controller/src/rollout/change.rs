//! One rollout: what changes (the policy tree, the job) and the effects the loop carries out.

use std::collections::BTreeSet;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::Gate;
use crate::spec::status::JobRef;

/// A change of the Traefik KV policy tree, with what was there before so it can be restored.
/// `Debug` shows keys and value lengths only: values may be basic-auth hashes.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct KvChange {
    /// Entries to write (full keys).
    pub set: Vec<(String, String)>,
    /// Keys to delete (ours, no longer rendered).
    pub delete: Vec<String>,
    /// The entries of our subtree before the change.
    pub previous: Vec<(String, String)>,
}

impl std::fmt::Debug for KvChange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KvChange")
            .field("set", &KvDebug(&self.set))
            .field("delete", &self.delete)
            .field("previous", &KvDebug(&self.previous))
            .finish()
    }
}

/// KV entries for `Debug`: each key with the length of its value, never the value.
pub(crate) struct KvDebug<'a>(pub(crate) &'a [(String, String)]);

impl std::fmt::Debug for KvDebug<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_map()
            .entries(self.0.iter().map(|(k, v)| (k, Redacted(v.len()))))
            .finish()
    }
}

/// A value shown only by its size.
struct Redacted(usize);

impl std::fmt::Debug for Redacted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "<{} bytes>", self.0)
    }
}

/// A job for `Debug`: its size only (a Caddy job embeds its config, basic-auth hashes included).
struct JobDebug<'a>(&'a serde_json::Value);

impl std::fmt::Debug for JobDebug<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let len = serde_json::to_vec(self.0).map_or(0, |v| v.len());
        write!(f, "<job JSON, {len} bytes>")
    }
}

impl KvChange {
    /// The write that undoes this change: previous entries back, keys we added removed.
    #[must_use]
    pub fn restore(&self) -> Effect {
        let before: BTreeSet<&str> = self.previous.iter().map(|(k, _)| k.as_str()).collect();
        let delete = self
            .set
            .iter()
            .map(|(k, _)| k)
            .filter(|k| !before.contains(k.as_str()))
            .cloned()
            .collect();
        Effect::RestoreKv {
            set: self.previous.clone(),
            delete,
        }
    }
}

/// A new version of the proxy job. `Debug` omits the job JSON (see [`KvChange`]).
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct JobChange {
    /// Nomad job ID.
    pub job_id: String,
    /// The job (Nomad JSON, the value of `Job` in a register request).
    pub job: serde_json::Value,
    /// The digest stamped in the job's `proxy-operator/spec-digest` Meta.
    pub job_digest: String,
    /// The `JobModifyIndex` observed before registering (0: the job must not exist yet).
    pub enforce_index: u64,
    /// The last version of this job that passed the gate, where a rollback goes. `None` when
    /// nothing of this job ID ever passed: a failure then leaves the new version in place.
    pub rollback_to: Option<JobRef>,
    /// Set when the job is the idle slot of a handover: it runs next to `from`, which keeps
    /// serving until this job passes the gate. A failure then stops this job instead of
    /// reverting anything.
    #[serde(default)]
    pub handover: Option<Handover>,
}

/// The serving slot a handover takes over from (ARCHITECTURE.md, "Handover").
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Handover {
    /// The serving slot's job ID: stopped once the new slot passes, and never before.
    pub from_job: String,
    /// Its version when the handover started (status and logs).
    pub from_version: u64,
}

impl std::fmt::Debug for JobChange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JobChange")
            .field("job_id", &self.job_id)
            .field("job", &JobDebug(&self.job))
            .field("job_digest", &self.job_digest)
            .field("enforce_index", &self.enforce_index)
            .field("rollback_to", &self.rollback_to)
            .field("handover", &self.handover)
            .finish()
    }
}

/// One rollout: what changes and the gate it must pass.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Change {
    /// The spec digest being rolled out (what status reports and what is remembered on failure).
    pub digest: String,
    /// The `retryNonce` of the document rolled out: a failure is remembered with it, so a nonce
    /// bumped while this rollout runs still retries.
    #[serde(default)]
    pub retry_nonce: Option<String>,
    /// The Nomad job the gate watches (the job changed, or the one running the policy).
    pub job_id: String,
    /// The KV policy change, if any. Written first: the job's entry points reference it.
    pub kv: Option<KvChange>,
    /// The job change, if any.
    pub job: Option<JobChange>,
    /// The gate.
    pub gate: Gate,
}

impl Change {
    /// `policy`, `job`, `policy+job` or `verify` (nothing to write, only the gate to pass): for
    /// logs and spans.
    #[must_use]
    pub fn kind(&self) -> &'static str {
        match (&self.kv, &self.job) {
            (Some(_), Some(_)) => "policy+job",
            (Some(_), None) => "policy",
            (None, Some(_)) => "job",
            (None, None) => "verify",
        }
    }
}

/// Something the loop must do, in order. `Debug` shows KV keys and value lengths and no job
/// JSON: values may be basic-auth hashes.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", tag = "effect")]
pub enum Effect {
    /// Write the policy tree in one `/v1/txn`.
    WriteKv {
        /// Entries to set.
        set: Vec<(String, String)>,
        /// Keys to delete.
        delete: Vec<String>,
    },
    /// Register the job with `EnforceIndex`.
    RegisterJob {
        /// Nomad job ID.
        job_id: String,
        /// The job.
        job: serde_json::Value,
        /// Its `proxy-operator/spec-digest`: when the answer is lost, the job read back tells
        /// whether the register landed.
        job_digest: String,
        /// The `JobModifyIndex` the job must still have (0: must not exist).
        enforce_index: u64,
    },
    /// Put the previous policy entries back in one `/v1/txn`.
    RestoreKv {
        /// Entries to set.
        set: Vec<(String, String)>,
        /// Keys to delete.
        delete: Vec<String>,
    },
    /// `POST /v1/job/:id/revert`.
    RevertJob {
        /// Nomad job ID.
        job_id: String,
        /// The version to go back to.
        version: u64,
        /// The version the job must currently be at.
        enforce_prior_version: Option<u64>,
        /// The spec digest of `version`: when the answer is lost, the job read back tells
        /// whether the revert landed.
        target_digest: Option<String>,
    },
    /// Stop a job of ours without purging it (its versions stay for a later handover or a
    /// rollback): the failed new slot of a handover, or the old one once the new one passed.
    StopJob {
        /// Nomad job ID.
        job_id: String,
    },
    /// Run another pass after this long even if nothing changes.
    RequeueAfter(Duration),
}

impl std::fmt::Debug for Effect {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Effect::WriteKv { set, delete } => f
                .debug_struct("WriteKv")
                .field("set", &KvDebug(set))
                .field("delete", delete)
                .finish(),
            Effect::RestoreKv { set, delete } => f
                .debug_struct("RestoreKv")
                .field("set", &KvDebug(set))
                .field("delete", delete)
                .finish(),
            Effect::RegisterJob {
                job_id,
                job,
                job_digest,
                enforce_index,
            } => f
                .debug_struct("RegisterJob")
                .field("job_id", job_id)
                .field("job", &JobDebug(job))
                .field("job_digest", job_digest)
                .field("enforce_index", enforce_index)
                .finish(),
            Effect::RevertJob {
                job_id,
                version,
                enforce_prior_version,
                target_digest,
            } => f
                .debug_struct("RevertJob")
                .field("job_id", job_id)
                .field("version", version)
                .field("enforce_prior_version", enforce_prior_version)
                .field("target_digest", target_digest)
                .finish(),
            Effect::StopJob { job_id } => {
                f.debug_struct("StopJob").field("job_id", job_id).finish()
            }
            Effect::RequeueAfter(d) => f.debug_tuple("RequeueAfter").field(d).finish(),
        }
    }
}

impl Effect {
    /// Whether this effect changes the cluster (everything but a requeue).
    #[must_use]
    pub fn is_write(&self) -> bool {
        !matches!(self, Effect::RequeueAfter(_))
    }
}

/// How far the loop got with the effects of the previous step.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApplyOutcome {
    /// How many write effects succeeded, in order.
    pub completed: usize,
    /// The error that stopped the rest, if any.
    pub error: Option<ApplyError>,
}

impl ApplyOutcome {
    /// Every effect succeeded.
    #[must_use]
    pub fn all(completed: usize) -> Self {
        Self {
            completed,
            error: None,
        }
    }
}

/// Why an effect failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApplyError {
    /// Human-readable cause (never contains secrets).
    pub message: String,
    /// Whether trying again may succeed (network, 5xx) or not (4xx, index conflict).
    pub retryable: bool,
}

impl ApplyError {
    /// An effect failed with `message`.
    #[must_use]
    pub fn new(message: impl Into<String>, retryable: bool) -> Self {
        Self {
            message: message.into(),
            retryable,
        }
    }
}
