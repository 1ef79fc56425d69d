//! The write-ahead journal of a rollout in flight: what another operator process needs to
//! resume it, and the checks a journal read back from KV must pass before it is replayed.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use tokio::time::Instant;

use super::step::{Switch, start_verifying};
use super::{Change, Effect, MAX_GATE_DURATION, Phase, human};

/// A rollout in flight as the loop persists it next to the status document, so a restarted (or
/// newly elected) operator resumes it instead of taking its unverified version for a good one.
///
/// It holds KV values, basic-auth hashes included, on purpose: a rollback restores the previous
/// policy tree from `change.kv.previous`, and a resumed rollout must write exactly the entries it
/// started with; re-rendering after a restart could read rotated users and restore the wrong
/// tree. So the ACL policy must protect `<prefix>/rollout` exactly like `<prefix>/traefik/`
/// (readable by the operator only, never by status readers). Its `Debug` (through
/// [`KvChange`](super::KvChange), [`JobChange`](super::JobChange) and [`Effect`]) shows keys
/// and lengths, never values.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Journal {
    /// The rollout.
    pub change: Change,
    /// Where it stood.
    pub stage: Stage,
    /// How long it had run when this was written, in milliseconds.
    pub elapsed_ms: u64,
    /// When this was written, in milliseconds since the Unix epoch.
    pub written_at_ms: u64,
}

impl Journal {
    /// Whether both record the same rollout at the same stage (timestamps aside): the loop
    /// rewrites the journal only when this changes.
    #[must_use]
    pub fn same_stage(&self, other: &Journal) -> bool {
        self.change == other.change && self.stage == other.stage
    }

    /// Checks a journal read back from KV before anything in it is replayed. The journal key is
    /// writable by whoever can write our KV prefix, so it is untrusted input: it must only ever
    /// touch the job it names, carry our owner Meta on every job it would register, keep its KV
    /// writes inside `kv_root`, and hold durations this operator could have written.
    ///
    /// # Errors
    /// [`JournalRejected`] with the first inconsistency found (never a KV value).
    pub fn check(&self, owner: &str, kv_root: &str) -> Result<(), JournalRejected> {
        let change = &self.change;
        let reject = |why: String| Err(JournalRejected(why));
        if change.job_id.is_empty() {
            return reject("it names no job".into());
        }
        for (name, d) in [
            ("healthyDeadline", change.gate.healthy_deadline),
            ("minHealthyTime", change.gate.min_healthy_time),
        ] {
            if d > MAX_GATE_DURATION {
                return reject(format!("its {name} exceeds {}", human(MAX_GATE_DURATION)));
            }
        }
        if let Some(job) = &change.job {
            if job.job_id != change.job_id {
                return reject(format!(
                    "its job change is for {:?}, not the gated job {:?}",
                    job.job_id, change.job_id
                ));
            }
            check_job_json(&job.job, &change.job_id, &job.job_digest, owner)?;
        }
        let kv_ok = |key: &str| key.starts_with(kv_root) && key.len() > kv_root.len();
        if let Some(kv) = &change.kv {
            let keys = kv
                .set
                .iter()
                .chain(&kv.previous)
                .map(|(k, _)| k)
                .chain(&kv.delete);
            if let Some(bad) = keys.into_iter().find(|k| !kv_ok(k)) {
                return reject(format!("it writes key {bad:?} outside {kv_root}"));
            }
        }
        let handover = change.job.as_ref().and_then(|j| j.handover.as_ref());
        if let Some(h) = handover
            && !slot_pair(&h.from_job, &change.job_id)
        {
            return reject(format!(
                "it hands over from job {:?}, which is not the other slot of {:?}",
                h.from_job, change.job_id
            ));
        }
        let pending: &[Effect] = match &self.stage {
            Stage::Applying { pending, .. }
            | Stage::RollingBack { pending, .. }
            | Stage::Switching { pending, .. }
            | Stage::Abandoning { pending } => pending,
            Stage::Verifying { .. } | Stage::Draining { .. } => &[],
        };
        if handover.is_none()
            && matches!(
                self.stage,
                Stage::Switching { .. } | Stage::Draining { .. } | Stage::Abandoning { .. }
            )
        {
            return reject("it is at a handover stage without a handover".into());
        }
        for effect in pending {
            match effect {
                Effect::WriteKv { set, delete } | Effect::RestoreKv { set, delete } => {
                    let keys = set.iter().map(|(k, _)| k).chain(delete);
                    if let Some(bad) = keys.into_iter().find(|k| !kv_ok(k)) {
                        return reject(format!("it writes key {bad:?} outside {kv_root}"));
                    }
                }
                Effect::RegisterJob {
                    job_id,
                    job,
                    job_digest,
                    ..
                } => {
                    if *job_id != change.job_id {
                        return reject(format!(
                            "it registers job {job_id:?}, not the gated job {:?}",
                            change.job_id
                        ));
                    }
                    check_job_json(job, job_id, job_digest, owner)?;
                }
                Effect::RevertJob { job_id, .. } if *job_id != change.job_id => {
                    return reject(format!(
                        "it reverts job {job_id:?}, not the gated job {:?}",
                        change.job_id
                    ));
                }
                Effect::RevertJob { .. } => {}
                Effect::StopJob { job_id } => {
                    // Only the two slots of this handover, and only in a handover.
                    let from = handover.map(|h| h.from_job.as_str());
                    if from.is_none() || (*job_id != change.job_id && Some(job_id.as_str()) != from)
                    {
                        return reject(format!(
                            "it stops job {job_id:?}, which is not a slot of its handover"
                        ));
                    }
                }
                Effect::RequeueAfter(d) if *d > MAX_GATE_DURATION => {
                    return reject("it holds an absurd requeue interval".into());
                }
                Effect::RequeueAfter(_) => {}
            }
        }
        Ok(())
    }
}

/// `a` and `b` are the two slots of one job ID (`<id>` and `<id>-b`, either way round).
fn slot_pair(a: &str, b: &str) -> bool {
    let pair = |x: &str, y: &str| y.strip_suffix("-b") == Some(x) && !x.is_empty();
    pair(a, b) || pair(b, a)
}

/// A job from a journal must be the gated job, stamped with our owner and its own digest.
pub(super) fn check_job_json(
    job: &serde_json::Value,
    job_id: &str,
    digest: &str,
    owner: &str,
) -> Result<(), JournalRejected> {
    let job = crate::nomad::unwrap_job(job);
    let id = job.get("ID").and_then(serde_json::Value::as_str);
    if id != Some(job_id) {
        return Err(JournalRejected(format!(
            "the job it would register has ID {id:?}, not {job_id:?}"
        )));
    }
    let meta = |key: &str| {
        job.get("Meta")
            .and_then(|m| m.get(key))
            .and_then(serde_json::Value::as_str)
    };
    if meta(crate::render::META_OWNER) != Some(owner) {
        return Err(JournalRejected(format!(
            "the job it would register lacks our {} Meta",
            crate::render::META_OWNER
        )));
    }
    if meta(crate::render::META_SPEC_DIGEST) != Some(digest) {
        return Err(JournalRejected(format!(
            "the job it would register does not carry its own {} Meta",
            crate::render::META_SPEC_DIGEST
        )));
    }
    Ok(())
}

/// Consul's `kv_max_value_size`, which is also the default `txn_max_req_len`: the whole
/// `/v1/txn` body, values base64-encoded, must fit in it.
pub const CONSUL_MAX_VALUE_BYTES: usize = 512 * 1024;

/// The largest journal the loop writes. It shares one transaction with the status document, and
/// base64 grows it by 4/3 in the body: 256 KiB becomes 342 KiB, leaving 170 KiB of the 512 KiB
/// body for the status (capped at 50 listed errors of 1 KiB) and the envelope.
pub const MAX_JOURNAL_BYTES: usize = 256 * 1024;

impl Journal {
    /// Checks the journal fits in Consul before it is first written. Consul refuses a larger
    /// transaction with a 413, which retrying never fixes, so such a rollout never starts.
    ///
    /// # Errors
    /// [`JournalTooLarge`] with the size and what takes the room.
    pub fn fits(&self) -> Result<usize, JournalTooLarge> {
        let size = serde_json::to_vec(self).map_or(usize::MAX, |v| v.len());
        if size <= MAX_JOURNAL_BYTES {
            return Ok(size);
        }
        let kv: usize = self.change.kv.as_ref().map_or(0, |kv| {
            kv.set
                .iter()
                .chain(&kv.previous)
                .map(|(k, v)| k.len() + v.len())
                .sum()
        });
        let job = self
            .change
            .job
            .as_ref()
            .map_or(0, |j| serde_json::to_vec(&j.job).map_or(0, |v| v.len()));
        Err(JournalTooLarge {
            size,
            kv_bytes: kv,
            job_bytes: job,
        })
    }
}

/// A rollout whose journal would not fit in Consul (terminal: the same document always makes
/// the same journal).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "the rollout journal would be {size} bytes, more than the {MAX_JOURNAL_BYTES} bytes it may take of Consul's {CONSUL_MAX_VALUE_BYTES}-byte transaction limit      (policy entries, new and previous: {kv_bytes} bytes; job: {job_bytes} bytes); nothing was changed.      Make the policy smaller (fewer or shorter headers, basic-auth users from a file) and edit the document again"
)]
pub struct JournalTooLarge {
    /// The encoded journal's size in bytes.
    pub size: usize,
    /// Bytes of policy entries it carries (new and previous values).
    pub kv_bytes: usize,
    /// Bytes of the job it carries.
    pub job_bytes: usize,
}

/// Why a journal read back from KV is not acted on (the loop drops it and re-verifies what
/// runs instead).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the rollout journal was not written by this operator for this job: {0}")]
pub struct JournalRejected(pub String);

/// The in-flight phases, without their clocks.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", tag = "stage")]
pub enum Stage {
    /// Effects issued, not all confirmed. Resuming issues them again: the KV write is
    /// idempotent and a register that already landed is recognised by its digest.
    Applying {
        /// Effects not confirmed.
        pending: Vec<Effect>,
        /// The KV write was attempted.
        kv_written: bool,
        /// The register was confirmed.
        job_registered: bool,
    },
    /// Waiting for the gate. Resuming starts a fresh `healthyDeadline`: nobody watched the gate
    /// while no operator ran.
    Verifying {
        /// The job version carrying our digest, once seen.
        job_version: Option<u64>,
    },
    /// A handover's new slot passed; the old slot is being stopped. Resuming stops it again
    /// (idempotent).
    Switching {
        /// The new slot's version that passed.
        job_version: u64,
        /// The stop not confirmed.
        pending: Vec<Effect>,
    },
    /// A handover's old slot is stopped and draining. Resuming waits for it afresh.
    Draining {
        /// The new slot's version that passed.
        job_version: u64,
    },
    /// Stopping an unverified new slot after a restart before the switch.
    Abandoning {
        /// Effects not confirmed.
        pending: Vec<Effect>,
    },
    /// Undoing.
    RollingBack {
        /// Why the rollout failed.
        reason: String,
        /// The version being restored.
        to_version: Option<u64>,
        /// Rollback effects not confirmed.
        pending: Vec<Effect>,
    },
}

pub(super) fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

impl Phase {
    /// The journal of a rollout in flight; `None` at rest.
    #[must_use]
    pub fn journal(&self, now: Instant, wall: SystemTime) -> Option<Journal> {
        // At rest there is no change, and nothing to journal.
        let change = self.change()?;
        let (started, stage) = match self {
            Phase::Applying {
                started,
                pending,
                switch: Some(switch),
                ..
            } => (
                started,
                match switch {
                    Switch::Stopping { job_version } => Stage::Switching {
                        job_version: *job_version,
                        pending: pending.clone(),
                    },
                    Switch::Draining { job_version, .. } => Stage::Draining {
                        job_version: *job_version,
                    },
                },
            ),
            Phase::RollingBack {
                started,
                pending,
                abandon: true,
                ..
            } => (
                started,
                Stage::Abandoning {
                    pending: pending.clone(),
                },
            ),
            Phase::Applying {
                started,
                pending,
                kv_written,
                job_registered,
                ..
            } => (
                started,
                Stage::Applying {
                    pending: pending.clone(),
                    kv_written: *kv_written,
                    job_registered: *job_registered,
                },
            ),
            Phase::Verifying {
                started,
                job_version,
                ..
            } => (
                started,
                Stage::Verifying {
                    job_version: *job_version,
                },
            ),
            Phase::RollingBack {
                started,
                reason,
                to_version,
                pending,
                ..
            } => (
                started,
                Stage::RollingBack {
                    reason: reason.clone(),
                    to_version: *to_version,
                    pending: pending.clone(),
                },
            ),
            Phase::Idle
            | Phase::Ready { .. }
            | Phase::RolledBack { .. }
            | Phase::Degraded { .. } => return None,
        };
        Some(Journal {
            change: change.clone(),
            stage,
            elapsed_ms: millis(now.saturating_duration_since(*started)),
            written_at_ms: millis(wall.duration_since(UNIX_EPOCH).unwrap_or_default()),
        })
    }

    /// The phase a journal describes, on this process's clock.
    #[must_use]
    pub fn resume(journal: Journal, now: Instant, wall: SystemTime) -> Phase {
        let since_write = wall
            .duration_since(UNIX_EPOCH)
            .map(|t| millis(t).saturating_sub(journal.written_at_ms))
            .unwrap_or(0);
        let elapsed = Duration::from_millis(journal.elapsed_ms.saturating_add(since_write));
        let started = now.checked_sub(elapsed).unwrap_or(now);
        let change = journal.change;
        let handover = change.job.as_ref().is_some_and(|j| j.handover.is_some());
        match journal.stage {
            // Before the switch, a handover's new slot was judged by nobody since the restart:
            // it is stopped (the old slot never stopped serving) and the change planned again.
            Stage::Applying { kv_written, .. } if handover => {
                super::handover::abandon(change, started, kv_written)
            }
            Stage::Verifying { .. } if handover => {
                let kv_written = change.kv.is_some();
                super::handover::abandon(change, started, kv_written)
            }
            Stage::Switching {
                job_version,
                pending,
            } => super::handover::resume_switch(change, started, now, job_version, pending, false),
            // After the switch the new slot passed: only the drain is left, waited for afresh.
            Stage::Draining { job_version } => {
                super::handover::resume_switch(change, started, now, job_version, Vec::new(), true)
            }
            Stage::Abandoning { pending } => Phase::RollingBack {
                reason: "resuming the stop of an unverified new slot".to_owned(),
                change,
                started,
                to_version: None,
                pending,
                abandon: true,
            },
            Stage::Applying {
                pending,
                kv_written,
                job_registered,
            } => Phase::Applying {
                change,
                started,
                pending,
                kv_written,
                job_registered,
                switch: None,
            },
            Stage::Verifying { job_version } => start_verifying(
                &change,
                started,
                now,
                job_version,
                "resumed after an operator restart",
            ),
            Stage::RollingBack {
                reason,
                to_version,
                pending,
            } => Phase::RollingBack {
                change,
                started,
                reason,
                to_version,
                pending,
                abandon: false,
            },
        }
    }
}
