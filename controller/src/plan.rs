//! Pure planning: the desired state (a validated spec and what it renders to), the observed
//! state (the proxy job and our KV subtree) and the last status become one [`Plan`].
//!
//! Drift is judged on digests only: the `proxy-operator/spec-digest` Meta of the job and a
//! digest of our KV subtree. Raw job JSON is never compared, because Nomad fills it with
//! defaults and every comparison would report drift.
//!
//! # Decisions
//! - `paused` beats everything: a paused spec changes nothing, not even to fix drift.
//! - A job without our owner Meta (or with another owner's) is never touched: `Stalled`.
//! - A digest that failed its gate is not planned again until the document (its digest) or its
//!   `retryNonce` changes, so a broken edit cannot become a retry storm.
//! - KV is written before the job: the job's entry points reference the KV middlewares.
//! - Only the KV entries that differ are written, so a one-header edit is a one-key txn.
//! - Nothing differs but the digest never passed the gate (a restart mid-rollout, a lost
//!   status): a verify-only rollout (no writes) before it counts as Ready.
//! - A rollback goes to the version of the same job ID that last passed the gate; when the
//!   status does not know it, the loop asks Nomad ([`stable_rollback_target`]). Nowhere only
//!   when no version ever passed.

use std::collections::{BTreeMap, BTreeSet};

use crate::proxy::Reach;
use crate::render::nomad_job::{Slot, slot_job};
use crate::render::{META_OWNER, META_PROXY, META_SPEC_DIGEST, Rendered, digest_kv};
use crate::rollout::{Change, Gate, Handover, JobChange, JobRef, KvChange};
use crate::spec::ProxyKind;
use crate::spec::status::ProxyStatus;
use crate::spec::{DriftPolicy, ValidatedSpec};
use crate::status::short;

/// What the operator wants.
#[derive(Debug, Clone, Copy)]
pub struct Desired<'a> {
    /// The validated document.
    pub spec: &'a ValidatedSpec,
    /// What it renders to.
    pub rendered: &'a Rendered,
    /// Our `proxy-operator/owner` Meta value.
    pub owner: &'a str,
    /// Traefik's KV root with a trailing slash (`<prefix>/traefik/`).
    pub kv_root: &'a str,
    /// Where the operator reaches the proxy: the gate's API address and route probes.
    pub reach: &'a Reach,
}

/// The proxy job as Nomad returned it (only what planning needs).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ObservedJob {
    /// Current version.
    pub version: u64,
    /// `JobModifyIndex`, the `EnforceIndex` of the next register.
    pub modify_index: u64,
    /// The job's `Meta`.
    pub meta: BTreeMap<String, String>,
    /// `Stop` is set.
    pub stopped: bool,
    /// `Type` (`service`, `system`, …), when known.
    pub job_type: Option<String>,
}

impl From<&crate::nomad::Job> for ObservedJob {
    fn from(j: &crate::nomad::Job) -> Self {
        ObservedJob {
            version: j.version,
            modify_index: j.job_modify_index,
            meta: j.meta.clone(),
            stopped: j.stop,
            job_type: Some(j.job_type.clone()),
        }
    }
}

impl ObservedJob {
    /// Whether the job carries `owner` in its owner Meta.
    #[must_use]
    pub fn owned_by(&self, owner: &str) -> bool {
        self.meta.get(META_OWNER).map(String::as_str) == Some(owner)
    }

    /// The spec digest stamped in Meta.
    #[must_use]
    pub fn spec_digest(&self) -> Option<&str> {
        self.meta.get(META_SPEC_DIGEST).map(String::as_str)
    }
}

/// What runs. `Debug` shows KV keys and value lengths only: values may be basic-auth hashes.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct Observed {
    /// The proxy job in its serving slot ([`Observed::slot`]), if it exists.
    pub job: Option<ObservedJob>,
    /// Every entry under `<prefix>/traefik/`.
    pub kv: Vec<(String, String)>,
}

/// Where the two handover slots stand (ARCHITECTURE.md, "Handover"): which one `Observed::job`
/// is, and the other one's job.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Slots {
    /// Which slot [`Observed::job`] is (the one not stopped; slot a when neither exists).
    pub serving: Slot,
    /// The job in the other slot, if it exists (stopped after a handover).
    pub other: Option<ObservedJob>,
}

impl Slots {
    /// Picks the serving slot from both slots' jobs: the one not stopped, else the newer stopped
    /// one, else slot a. When both run, the older: a handover was cut short (its journal lost),
    /// and the newer never passed a gate this operator saw, so [`plan_slots`] hands over to it
    /// again and stops the older only once it passes. Slot b counts only when it carries our
    /// `owner` Meta: a foreign job there is never taken for ours (and blocks handovers, so
    /// changes go in place); a foreign job in slot a is what serves, and the plan stalls on it.
    #[must_use]
    pub fn pick(
        a: Option<ObservedJob>,
        b: Option<ObservedJob>,
        owner: &str,
    ) -> (Option<ObservedJob>, Slots) {
        let both_run =
            a.as_ref().is_some_and(|j| !j.stopped) && b.as_ref().is_some_and(|j| !j.stopped);
        let rank = |j: &Option<ObservedJob>| {
            j.as_ref().map(|j| {
                let age = if both_run {
                    u64::MAX - j.modify_index
                } else {
                    j.modify_index
                };
                (!j.stopped, age)
            })
        };
        let b_ours = b.as_ref().is_some_and(|j| j.owned_by(owner));
        if b_ours && rank(&b) > rank(&a) {
            (
                b,
                Slots {
                    serving: Slot::B,
                    other: a,
                },
            )
        } else {
            (
                a,
                Slots {
                    serving: Slot::A,
                    other: b,
                },
            )
        }
    }
}

impl std::fmt::Debug for Observed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Observed")
            .field("job", &self.job)
            .field("kv", &crate::rollout::KvDebug(&self.kv))
            .finish()
    }
}

/// Why nothing is applied although something differs (or might).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HoldReason {
    /// `spec.paused` is true.
    Paused,
    /// This digest failed its gate and neither it nor `retryNonce` changed since.
    FailedDigest {
        /// The digest.
        digest: String,
    },
    /// The running state drifted from an applied spec and `driftPolicy` is `warn`.
    Drift {
        /// What drifted (`job`, `kv`, or both).
        what: String,
    },
    /// The document asks for another job type than the job with this ID has in Nomad. Nomad
    /// refuses to change a job's type in place (`cannot update job from type ...`, also for a
    /// stopped job until it is purged), and stopping + purging the proxy is an outage the
    /// document did not ask for, so a person decides.
    JobTypeChange {
        /// The job ID.
        job_id: String,
        /// The type in Nomad.
        running: String,
        /// The type the document asks for.
        wanted: String,
    },
}

impl std::fmt::Display for HoldReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            HoldReason::Paused => f.write_str("spec.paused is true; nothing is changed"),
            HoldReason::FailedDigest { digest } => write!(
                f,
                "spec {} failed its health gate; not retried until the document or retryNonce changes",
                short(digest)
            ),
            HoldReason::Drift { what } => write!(
                f,
                "the running {what} drifted from the applied spec; driftPolicy is warn, so it is reported, not corrected"
            ),
            HoldReason::JobTypeChange {
                job_id,
                running,
                wanted,
            } => write!(
                f,
                "spec.job.type is {wanted:?} but job {job_id:?} is a {running:?} job in Nomad, and Nomad cannot change a job's type in place; \
                 nothing is changed. Either set spec.job.id to a new ID (the {running} job keeps serving until you stop it), \
                 or stop and purge the old job (`nomad job stop -purge {job_id}`, an outage until the new one is healthy) so the operator registers it anew"
            ),
        }
    }
}

/// The decision of one pass.
#[derive(Debug, Clone, PartialEq)]
pub enum Plan {
    /// Everything matches: zero writes.
    Noop,
    /// Roll this change out (KV, job, or both; see [`Plan::kind`]).
    Apply(Box<Change>),
    /// Something might differ, but it must not be applied.
    Hold(HoldReason),
    /// The job is not ours; it is never touched.
    Stalled {
        /// Why.
        reason: String,
    },
}

impl Plan {
    /// `noop`, `policy`, `job`, `policy+job`, `hold`, `stalled`: for logs and spans.
    #[must_use]
    pub fn kind(&self) -> &'static str {
        match self {
            Plan::Noop => "noop",
            Plan::Apply(change) => change.kind(),
            Plan::Hold(_) => "hold",
            Plan::Stalled { .. } => "stalled",
        }
    }
}

/// Decides what to do. Pure.
#[must_use]
pub fn plan(desired: &Desired<'_>, observed: &Observed, status: &ProxyStatus) -> Plan {
    plan_slots(desired, observed, &Slots::default(), status)
}

/// [`plan`] knowing both handover slots: a Traefik structural change registers the other slot
/// next to the serving one.
#[must_use]
pub fn plan_slots(
    desired: &Desired<'_>,
    observed: &Observed,
    slots: &Slots,
    status: &ProxyStatus,
) -> Plan {
    let spec = desired.spec;
    let live_id = slots.serving.job_id(job_id(desired));
    if spec.paused() {
        return Plan::Hold(HoldReason::Paused);
    }
    if let Some(job) = &observed.job {
        match job.meta.get(META_OWNER) {
            Some(owner) if owner == desired.owner => {}
            Some(other) => {
                return Plan::Stalled {
                    reason: format!(
                        "job {:?} is owned by {other:?} ({META_OWNER} Meta), not by {:?}; it is left untouched",
                        live_id, desired.owner
                    ),
                };
            }
            None => {
                return Plan::Stalled {
                    reason: format!(
                        "job {:?} exists without the {META_OWNER} Meta; it is never adopted silently. \
                         Stop it, or add Meta {META_OWNER}={:?} to hand it over",
                        live_id, desired.owner
                    ),
                };
            }
        }
    }
    if let (Some(job), Some(wanted)) = (
        &observed.job,
        desired
            .rendered
            .job
            .get("Type")
            .and_then(serde_json::Value::as_str),
    ) && let Some(running) = job.job_type.as_deref()
        && running != wanted
    {
        return Plan::Hold(HoldReason::JobTypeChange {
            job_id: live_id.clone(),
            running: running.to_owned(),
            wanted: wanted.to_owned(),
        });
    }
    let digest = spec.digest();
    if status.failed_digest.as_deref() == Some(digest)
        && status.failed_retry_nonce.as_deref() == spec.retry_nonce()
    {
        return Plan::Hold(HoldReason::FailedDigest {
            digest: digest.to_owned(),
        });
    }

    // Both slots running is never at rest (see [`Slots::pick`]): the newer one is handed over to
    // again, whatever it runs.
    let other_runs = slots
        .other
        .as_ref()
        .is_some_and(|j| !j.stopped && j.owned_by(desired.owner));
    let job_differs = other_runs
        || match &observed.job {
            None => true,
            Some(job) => {
                job.stopped || job.spec_digest() != Some(desired.rendered.job_digest.as_str())
            }
        };
    let ours: Vec<(String, String)> = observed
        .kv
        .iter()
        .filter(|(k, _)| k.starts_with(desired.kv_root))
        .cloned()
        .collect();
    let kv_differs = digest_kv(&ours) != desired.rendered.kv_digest;
    let change = |kv, job: Option<JobChange>| {
        // The gate reads the slot the change is judged on: the new one of a handover.
        let gated = job.as_ref().map_or(live_id.clone(), |j| j.job_id.clone());
        let offset = match spec.proxy() {
            ProxyKind::Traefik => Slot::of(&gated, job_id(desired)).map_or(0, Slot::port_offset),
            ProxyKind::Caddy => 0,
        };
        Plan::Apply(Box::new(Change {
            digest: digest.to_owned(),
            retry_nonce: spec.retry_nonce().map(str::to_owned),
            job_id: gated,
            kv,
            job,
            gate: shifted(gate(desired), offset),
        }))
    };
    if !job_differs && !kv_differs {
        // What runs is this document, but only a version that passed the gate is Ready: after
        // a restart mid-rollout, or a status that was lost, it is verified (no writes) first.
        if status.last_applied_digest.as_deref() == Some(digest) {
            return Plan::Noop;
        }
        return change(None, None);
    }
    // The same spec was applied and passed its gate: whatever differs now was changed by
    // someone else.
    let drifted = status.last_applied_digest.as_deref() == Some(digest);
    if drifted && spec.drift_policy() == DriftPolicy::Warn {
        let what = match (job_differs, kv_differs) {
            (true, true) => "job and KV policy",
            (true, false) => "job",
            _ => "KV policy",
        };
        return Plan::Hold(HoldReason::Drift {
            what: what.to_owned(),
        });
    }

    let kv = kv_differs.then(|| kv_change(&desired.rendered.traefik_kv, &ours));
    let job = job_differs.then(|| {
        handover(desired, observed, slots)
            .unwrap_or_else(|| in_place(desired, observed, slots, status))
    });
    change(kv, job)
}

/// The job ID the rendered job registers as.
#[must_use]
pub fn job_id<'a>(desired: &Desired<'a>) -> &'a str {
    desired
        .rendered
        .job
        .get("ID")
        .and_then(serde_json::Value::as_str)
        .unwrap_or(desired.spec.job().id.as_str())
}

/// A structural change of a serving Traefik as a handover: the other slot's job, registered
/// next to the serving one (`EnforceIndex` 0 when it does not exist, its `JobModifyIndex` when
/// a copy from an earlier handover does). `None` (a change in place) for Caddy, for a proxy
/// not serving, while the other slot is not ours, or when the other slot's API port is taken by
/// another port of the job.
fn handover(desired: &Desired<'_>, observed: &Observed, slots: &Slots) -> Option<JobChange> {
    if desired.spec.proxy() != ProxyKind::Traefik {
        return None;
    }
    // Only a Traefik hands over to a Traefik: a Caddy binds without SO_REUSEPORT, so a
    // Traefik next to it could not listen.
    let live = observed
        .job
        .as_ref()
        .filter(|j| !j.stopped && j.meta.get(META_PROXY).map(String::as_str) == Some("traefik"))?;
    let enforce_index = match &slots.other {
        None => 0,
        // Stopped after an earlier handover, or still running after one cut short.
        Some(other) if other.owned_by(desired.owner) => other.modify_index,
        Some(_) => return None,
    };
    let base = job_id(desired);
    let to = slots.serving.other();
    let job = slot_job(&desired.rendered.job, to).ok()?;
    Some(JobChange {
        job_id: to.job_id(base),
        job,
        job_digest: desired.rendered.job_digest.clone(),
        enforce_index,
        rollback_to: None,
        handover: Some(Handover {
            from_job: slots.serving.job_id(base),
            from_version: live.version,
        }),
    })
}

/// A new version of the serving slot's job (stop-then-start), as before handovers: Caddy, a
/// first registration, a stopped proxy.
fn in_place(
    desired: &Desired<'_>,
    observed: &Observed,
    slots: &Slots,
    status: &ProxyStatus,
) -> JobChange {
    let base = job_id(desired);
    let (slot, job, enforce_index) = match slot_job(&desired.rendered.job, slots.serving) {
        Ok(job) => (
            slots.serving,
            job,
            observed.job.as_ref().map_or(0, |j| j.modify_index),
        ),
        // Slot b's port is now taken by another port of the job: slot a takes over.
        Err(_) => {
            let a = if slots.serving == Slot::A {
                &observed.job
            } else {
                &slots.other
            };
            (
                Slot::A,
                desired.rendered.job.clone(),
                a.as_ref().map_or(0, |j| j.modify_index),
            )
        }
    };
    let job_id = slot.job_id(base);
    JobChange {
        rollback_to: (slot == slots.serving)
            .then(|| rollback_target(&job_id, observed, status))
            .flatten(),
        job_id,
        job,
        job_digest: desired.rendered.job_digest.clone(),
        enforce_index,
        handover: None,
    }
}

/// The gate with its proxy API `offset` ports up: slot b's API port.
fn shifted(mut gate: Gate, offset: u16) -> Gate {
    gate.proxy_api = gate
        .proxy_api
        .map(|api| crate::proxy::port_shifted(&api, offset));
    gate
}

/// Where a failed job change goes back to: the version of this job ID that last passed the gate.
/// Nothing when none did (a first version, a job ID that changed, a status that was lost): a
/// version that never passed is no place to go back to.
fn rollback_target(job_id: &str, observed: &Observed, status: &ProxyStatus) -> Option<JobRef> {
    observed.job.as_ref()?;
    status
        .last_good_job
        .as_ref()
        .filter(|good| good.job_id == job_id)
        .cloned()
}

/// Where a failed job change goes back to when the status document does not say (it was lost,
/// unreadable, or written by an operator that never saw a version pass): the newest version
/// of `job_id` that Nomad marks `Stable` (its deployment succeeded, which Nomad and the twin
/// record on the version) and that carries our owner Meta, never a stopped one. `versions` is
/// Nomad's `/v1/job/:id/versions` answer, newest first.
///
/// Nomad sets `Stable` only through a deployment, so a system job on a Nomad without system
/// deployments (before 1.11) has no stable version: there only the status document knows.
#[must_use]
pub fn stable_rollback_target(
    job_id: &str,
    owner: &str,
    versions: &[crate::nomad::Job],
) -> Option<JobRef> {
    versions
        .iter()
        .filter(|v| v.id == job_id && v.stable && !v.stop)
        .filter(|v| v.meta.get(META_OWNER).map(String::as_str) == Some(owner))
        .max_by_key(|v| v.version)
        .map(|v| JobRef {
            job_id: job_id.to_owned(),
            version: v.version,
            job_digest: v.meta.get(META_SPEC_DIGEST).cloned(),
        })
}

/// Only the entries that differ, and what they were.
fn kv_change(desired: &[(String, String)], observed: &[(String, String)]) -> KvChange {
    let before: BTreeMap<&str, &str> = observed
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let wanted: BTreeSet<&str> = desired.iter().map(|(k, _)| k.as_str()).collect();
    let set: Vec<(String, String)> = desired
        .iter()
        .filter(|(k, v)| before.get(k.as_str()) != Some(&v.as_str()))
        .cloned()
        .collect();
    let delete: Vec<String> = before
        .keys()
        .filter(|k| !wanted.contains(*k))
        .map(|k| (*k).to_owned())
        .collect();
    let previous = set
        .iter()
        .map(|(k, _)| k.as_str())
        .chain(delete.iter().map(String::as_str))
        .filter_map(|k| before.get(k).map(|v| (k.to_owned(), (*v).to_owned())))
        .collect();
    KvChange {
        set,
        delete,
        previous,
    }
}

/// The gate the change must pass, as the proxy's own module derives it.
fn gate(desired: &Desired<'_>) -> Gate {
    crate::proxy::gate(
        desired.spec,
        desired.rendered,
        desired.kv_root,
        desired.reach,
    )
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::panic)] // tests fail loudly
mod tests;
