//! The phases of a rollout and the pure transition function [`step`].

use std::time::Duration;

use tokio::time::Instant;

use super::gate::{Verdict, evaluate, held_by_deployment, our_job_version};
use super::handover;
use super::{Change, Effect, JobRef, Observation, OnFailure, VERIFY_POLL_INTERVAL, after, human};
use crate::spec::ProxyKind;

/// Where a rollout stands.
#[derive(Debug, Clone, PartialEq)]
pub enum Phase {
    /// Nothing rolled out by this process yet.
    Idle,
    /// Effects issued; waiting for the loop to report them done.
    Applying {
        /// The rollout.
        change: Change,
        /// When it started.
        started: Instant,
        /// The write effects not yet reported done.
        pending: Vec<Effect>,
        /// Whether the KV write already went through (so a failure must restore it).
        kv_written: bool,
        /// Whether the job was registered (so a failure must revert it).
        job_registered: bool,
        /// Past a handover's switch: the effects stop the old slot, then the phase waits for
        /// its drain. `None` while the change itself is being applied.
        switch: Option<Switch>,
    },
    /// Everything applied; waiting for the gate.
    Verifying {
        /// The rollout.
        change: Change,
        /// When it started.
        started: Instant,
        /// When the gate gives up.
        deadline: Instant,
        /// Since when every signal has been healthy without a break.
        healthy_since: Option<Instant>,
        /// The job version carrying our digest, once seen.
        job_version: Option<u64>,
        /// Why it is not healthy yet (for status).
        waiting_for: String,
        /// Since when observations have been failing: blind time does not count against the
        /// deadline, so an outage of Consul or Nomad cannot fail a healthy rollout.
        blind_since: Option<Instant>,
    },
    /// The gate passed.
    Ready {
        /// The digest now running.
        digest: String,
        /// The proxy the rollout ran (history names it).
        proxy: ProxyKind,
        /// How long the rollout took.
        duration: Duration,
        /// The job version that passed: where the next failed rollout goes back to.
        job: Option<JobRef>,
    },
    /// The gate failed; undoing.
    RollingBack {
        /// The failed rollout.
        change: Change,
        /// When the rollout started.
        started: Instant,
        /// Why it failed.
        reason: String,
        /// The job version being restored, if the job changed.
        to_version: Option<u64>,
        /// The rollback effects not yet reported done.
        pending: Vec<Effect>,
        /// Resumed before a handover's switch: the unverified new slot is stopped and the
        /// change planned again (`Idle` when done), rather than remembered as failed.
        abandon: bool,
    },
    /// The previous state is back; the failed digest is not retried.
    RolledBack {
        /// The digest that failed.
        digest: String,
        /// The proxy the failed rollout was for (history names it).
        proxy: ProxyKind,
        /// Why it failed.
        reason: String,
        /// How long from start to restored.
        duration: Duration,
        /// The `retryNonce` it was rolled out with.
        retry_nonce: Option<String>,
    },
    /// The failed version was left in place (`onFailure: hold`), or could not be undone.
    Degraded {
        /// The digest that failed.
        digest: String,
        /// The proxy the failed rollout was for (history names it).
        proxy: ProxyKind,
        /// Why.
        reason: String,
        /// How long from start to giving up.
        duration: Duration,
        /// Left in place on purpose (`onFailure: hold`) rather than because undoing failed.
        held: bool,
        /// The `retryNonce` it was rolled out with.
        retry_nonce: Option<String>,
    },
}

impl Phase {
    /// Whether no rollout is in flight, so a new plan may start one.
    #[must_use]
    pub fn is_at_rest(&self) -> bool {
        matches!(
            self,
            Phase::Idle | Phase::Ready { .. } | Phase::RolledBack { .. } | Phase::Degraded { .. }
        )
    }

    /// The rollout in flight, if any.
    #[must_use]
    pub fn change(&self) -> Option<&Change> {
        match self {
            Phase::Applying { change, .. }
            | Phase::Verifying { change, .. }
            | Phase::RollingBack { change, .. } => Some(change),
            Phase::Idle
            | Phase::Ready { .. }
            | Phase::RolledBack { .. }
            | Phase::Degraded { .. } => None,
        }
    }

    /// Short name for logs and spans.
    #[must_use]
    pub fn name(&self) -> &'static str {
        match self {
            Phase::Idle => "Idle",
            Phase::Applying { .. } => "Applying",
            Phase::Verifying { .. } => "Verifying",
            Phase::Ready { .. } => "Ready",
            Phase::RollingBack { .. } => "RollingBack",
            Phase::RolledBack { .. } => "RolledBack",
            Phase::Degraded { .. } => "Degraded",
        }
    }
}

/// The effects that carry out `pending`, then look again a poll later.
pub(super) fn issue(pending: &[Effect]) -> Vec<Effect> {
    let mut effects = pending.to_vec();
    effects.push(Effect::RequeueAfter(VERIFY_POLL_INTERVAL));
    effects
}

/// A handover past its switch (the new slot passed its gate).
#[derive(Debug, Clone, PartialEq)]
pub enum Switch {
    /// The old slot is being stopped (the pending effect).
    Stopping {
        /// The new slot's version that passed.
        job_version: u64,
    },
    /// The old slot is stopped; waiting for its allocations to finish draining.
    Draining {
        /// The new slot's version that passed.
        job_version: u64,
        /// When the wait ends whatever the old allocations do (Nomad kills them by then).
        deadline: Instant,
    },
}

/// Advances the machine by one observation.
#[must_use]
pub fn step(phase: &Phase, obs: &Observation, now: Instant) -> (Vec<Effect>, Phase) {
    match phase {
        Phase::Idle | Phase::Ready { .. } | Phase::RolledBack { .. } | Phase::Degraded { .. } => {
            match &obs.planned {
                Some(change) => begin(change.clone(), now),
                None => (Vec::new(), phase.clone()),
            }
        }
        Phase::Applying {
            change,
            started,
            pending,
            switch: Some(switch),
            ..
        } => handover::step_switch(change, *started, switch, pending, obs, now),
        Phase::Applying {
            change,
            started,
            pending,
            kv_written,
            job_registered,
            switch: None,
        } => step_applying(
            change,
            *started,
            pending,
            *kv_written,
            *job_registered,
            obs,
            now,
        ),
        Phase::Verifying {
            change,
            started,
            deadline,
            healthy_since,
            job_version,
            blind_since,
            ..
        } => step_verifying(
            change,
            *started,
            *deadline,
            *healthy_since,
            *job_version,
            *blind_since,
            obs,
            now,
        ),
        Phase::RollingBack {
            change,
            started,
            reason,
            pending,
            abandon: true,
            ..
        } => handover::step_abandoning(change, *started, reason, pending, obs, now),
        Phase::RollingBack {
            change,
            started,
            reason,
            to_version,
            pending,
            abandon: false,
        } => step_rolling_back(change, *started, reason, *to_version, pending, obs, now),
    }
}

pub(super) fn begin(change: Change, now: Instant) -> (Vec<Effect>, Phase) {
    let mut pending = Vec::new();
    if let Some(kv) = &change.kv {
        pending.push(Effect::WriteKv {
            set: kv.set.clone(),
            delete: kv.delete.clone(),
        });
    }
    if let Some(job) = &change.job {
        pending.push(Effect::RegisterJob {
            job_id: job.job_id.clone(),
            job: job.job.clone(),
            job_digest: job.job_digest.clone(),
            enforce_index: job.enforce_index,
        });
    }
    if pending.is_empty() {
        // Nothing to write (a version running without a record that it passed): only the gate.
        return (
            vec![Effect::RequeueAfter(VERIFY_POLL_INTERVAL)],
            start_verifying(&change, now, now, None, "the first health observation"),
        );
    }
    let effects = pending.clone();
    let phase = Phase::Applying {
        change,
        started: now,
        pending,
        kv_written: false,
        job_registered: false,
        switch: None,
    };
    (effects, phase)
}

pub(super) fn start_verifying(
    change: &Change,
    started: Instant,
    now: Instant,
    job_version: Option<u64>,
    waiting_for: &str,
) -> Phase {
    Phase::Verifying {
        change: change.clone(),
        started,
        deadline: after(now, change.gate.healthy_deadline),
        healthy_since: None,
        job_version,
        waiting_for: waiting_for.to_owned(),
        blind_since: None,
    }
}

pub(super) fn step_applying(
    change: &Change,
    started: Instant,
    pending: &[Effect],
    kv_written: bool,
    job_registered: bool,
    obs: &Observation,
    now: Instant,
) -> (Vec<Effect>, Phase) {
    let deadline = after(started, change.gate.healthy_deadline);
    let (done, error) = match &obs.applied {
        Some(outcome) => (outcome.completed.min(pending.len()), outcome.error.clone()),
        // The loop did not get to the effects: issue them again.
        None => (0, None),
    };
    // A KV write that errored may still have landed (a lost answer): once attempted, a failure
    // restores it. Restoring is idempotent, so an unneeded restore costs one txn.
    let attempted = if error.is_some() {
        (done + 1).min(pending.len())
    } else {
        done
    };
    let kv_written = kv_written
        || pending[..attempted]
            .iter()
            .any(|e| matches!(e, Effect::WriteKv { .. }));
    // The loop reads the job back when a register errors, so an error here means it did not land.
    let job_registered = job_registered
        || pending[..done]
            .iter()
            .any(|e| matches!(e, Effect::RegisterJob { .. }));
    let rest: Vec<Effect> = pending[done..].to_vec();

    if rest.is_empty() {
        let phase = start_verifying(change, started, now, None, "the first health observation");
        return (vec![Effect::RequeueAfter(VERIFY_POLL_INTERVAL)], phase);
    }
    match error {
        Some(err) if !err.retryable || now >= deadline => fail(
            change,
            started,
            format!("failed to apply: {}", err.message),
            kv_written,
            job_registered,
            None,
            obs,
            now,
        ),
        _ => {
            let effects = issue(&rest);
            let phase = Phase::Applying {
                change: change.clone(),
                started,
                pending: rest,
                kv_written,
                job_registered,
                switch: None,
            };
            (effects, phase)
        }
    }
}

#[allow(clippy::too_many_arguments)] // the fields of the Verifying phase
pub(super) fn step_verifying(
    change: &Change,
    started: Instant,
    deadline: Instant,
    healthy_since: Option<Instant>,
    job_version: Option<u64>,
    blind_since: Option<Instant>,
    obs: &Observation,
    now: Instant,
) -> (Vec<Effect>, Phase) {
    if let Some(err) = &obs.error {
        // We could not look: decide nothing and look again; the deadline stops counting.
        let phase = Phase::Verifying {
            change: change.clone(),
            started,
            deadline,
            healthy_since,
            job_version,
            waiting_for: format!("observation failed: {err}"),
            blind_since: blind_since.or(Some(now)),
        };
        return (vec![Effect::RequeueAfter(VERIFY_POLL_INTERVAL)], phase);
    }
    // Back from an outage: the deadline moves by the blind time, and health seen before it no
    // longer counts (nobody watched it hold).
    let (deadline, healthy_since) = match blind_since {
        Some(blind) => (after(deadline, now.saturating_duration_since(blind)), None),
        None => (deadline, healthy_since),
    };
    let verifying = |healthy_since, job_version, waiting_for: String| Phase::Verifying {
        change: change.clone(),
        started,
        deadline,
        healthy_since,
        job_version,
        waiting_for,
        blind_since: None,
    };
    let job_version = job_version.or_else(|| our_job_version(change, obs));
    match evaluate(change, obs, job_version) {
        Verdict::Failed(reason) => fail(change, started, reason, true, true, job_version, obs, now),
        Verdict::Pending(reason) if now >= deadline => fail(
            change,
            started,
            format!(
                "not healthy within healthyDeadline ({}): {reason}",
                human(change.gate.healthy_deadline)
            ),
            true,
            true,
            job_version,
            obs,
            now,
        ),
        Verdict::Pending(reason) => {
            let wait = VERIFY_POLL_INTERVAL.min(deadline - now);
            (
                vec![Effect::RequeueAfter(wait)],
                verifying(None, job_version, reason),
            )
        }
        Verdict::Healthy => {
            let since = healthy_since.unwrap_or(now);
            let held = now - since;
            let nomad_held = job_version.is_some_and(|v| held_by_deployment(change, obs, v));
            if nomad_held || held >= change.gate.min_healthy_time {
                if let (Some(jc), Some(version)) = (&change.job, job_version)
                    && jc.handover.is_some()
                {
                    return handover::switch(change, started, version);
                }
                let job = job_version.map(|version| JobRef {
                    job_id: change.job_id.clone(),
                    version,
                    job_digest: obs.job.as_ref().and_then(|j| j.spec_digest.clone()),
                });
                let phase = Phase::Ready {
                    digest: change.digest.clone(),
                    proxy: change.gate.proxy,
                    duration: now - started,
                    job,
                };
                return (Vec::new(), phase);
            }
            if now >= deadline {
                let reason = format!(
                    "healthy for only {} of minHealthyTime {} when healthyDeadline ({}) passed",
                    human(held),
                    human(change.gate.min_healthy_time),
                    human(change.gate.healthy_deadline)
                );
                return fail(change, started, reason, true, true, job_version, obs, now);
            }
            let remaining = change.gate.min_healthy_time - held;
            let wait = remaining.min(VERIFY_POLL_INTERVAL).min(deadline - now);
            let waiting = format!(
                "healthy for {}, holding for minHealthyTime {}",
                human(held),
                human(change.gate.min_healthy_time)
            );
            (
                vec![Effect::RequeueAfter(wait)],
                verifying(Some(since), job_version, waiting),
            )
        }
    }
}

pub(super) fn step_rolling_back(
    change: &Change,
    started: Instant,
    reason: &str,
    to_version: Option<u64>,
    pending: &[Effect],
    obs: &Observation,
    now: Instant,
) -> (Vec<Effect>, Phase) {
    let (done, error) = match &obs.applied {
        Some(outcome) => (outcome.completed.min(pending.len()), outcome.error.clone()),
        None => (0, None),
    };
    let rest: Vec<Effect> = pending[done..].to_vec();
    if rest.is_empty() {
        let phase = Phase::RolledBack {
            digest: change.digest.clone(),
            proxy: change.gate.proxy,
            reason: reason.to_owned(),
            duration: now - started,
            retry_nonce: change.retry_nonce.clone(),
        };
        return (Vec::new(), phase);
    }
    match error {
        Some(err) if !err.retryable => {
            let phase = Phase::Degraded {
                digest: change.digest.clone(),
                proxy: change.gate.proxy,
                reason: format!("{reason}; rollback failed: {}", err.message),
                duration: now - started,
                held: false,
                retry_nonce: change.retry_nonce.clone(),
            };
            (Vec::new(), phase)
        }
        // Retryable errors (Nomad or Consul unreachable) retry the rest until they go through:
        // giving up would leave the failed version serving.
        _ => {
            let effects = issue(&rest);
            let phase = Phase::RollingBack {
                change: change.clone(),
                started,
                reason: reason.to_owned(),
                to_version,
                pending: rest,
                abandon: false,
            };
            (effects, phase)
        }
    }
}

/// The gate failed: roll back what was applied, or hold.
#[allow(clippy::too_many_arguments)] // every argument is a fact the decision needs
pub(super) fn fail(
    change: &Change,
    started: Instant,
    reason: String,
    kv_written: bool,
    job_registered: bool,
    job_version: Option<u64>,
    obs: &Observation,
    now: Instant,
) -> (Vec<Effect>, Phase) {
    let degraded = |reason: String, held: bool| Phase::Degraded {
        digest: change.digest.clone(),
        proxy: change.gate.proxy,
        reason,
        duration: now - started,
        held,
        retry_nonce: change.retry_nonce.clone(),
    };
    if change.job.as_ref().is_some_and(|j| j.handover.is_some()) {
        return handover::fail(change, started, reason, kv_written);
    }
    if change.gate.on_failure == OnFailure::Hold {
        return (
            Vec::new(),
            degraded(format!("{reason} (onFailure: hold, left in place)"), true),
        );
    }
    if change.kv.is_none() && change.job.is_none() {
        // A verify-only rollout wrote nothing, so there is nothing of ours to undo.
        let reason = format!(
            "{reason}; this version was not rolled out by this verification, so it was left in place"
        );
        return (Vec::new(), degraded(reason, false));
    }
    let mut pending = Vec::new();
    let mut to_version = None;
    if let (Some(job), true) = (&change.job, job_registered) {
        let Some(target) = &job.rollback_to else {
            // Nothing of this job ever passed the gate. The new version stays, and so does the
            // KV tree its entry points reference: restoring it alone would break every router.
            let reason = format!(
                "{reason}; no earlier version of job {:?} passed the gate, so the new version and its policy tree were left in place",
                job.job_id
            );
            return (Vec::new(), degraded(reason, false));
        };
        to_version = Some(target.version);
        let already_there = target.job_digest.is_some()
            && obs.job.as_ref().and_then(|j| j.spec_digest.as_ref()) == target.job_digest.as_ref();
        if !already_there {
            // Registering the reverted version cancels the failed deployment ("Cancelled due
            // to newer version of job"), so no separate deployment fail is sent: failing it
            // could trigger Nomad's own auto-revert and race ours.
            let current = job_version.or_else(|| obs.job.as_ref().map(|j| j.version));
            pending.push(Effect::RevertJob {
                job_id: job.job_id.clone(),
                version: target.version,
                enforce_prior_version: current,
                target_digest: target.job_digest.clone(),
            });
        }
    }
    if let (Some(kv), true) = (&change.kv, kv_written) {
        // Policy first: the reverted job's entry points reference the previous entries.
        pending.insert(0, kv.restore());
    }
    if pending.is_empty() {
        let phase = Phase::RolledBack {
            digest: change.digest.clone(),
            proxy: change.gate.proxy,
            reason,
            duration: now - started,
            retry_nonce: change.retry_nonce.clone(),
        };
        return (Vec::new(), phase);
    }
    let effects = issue(&pending);
    let phase = Phase::RollingBack {
        change: change.clone(),
        started,
        reason,
        to_version,
        pending,
        abandon: false,
    };
    (effects, phase)
}
