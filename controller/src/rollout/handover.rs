//! The stages only a handover has: *Switching* (the new slot passed; stop the old one) and
//! *Draining* (until the old slot's allocations are done), both `Applying` with a [`Switch`];
//! *Abandoning* (an operator that restarted before the switch stops the new slot and plans the
//! change again), a `RollingBack` with `abandon`; and how a handover fails before its switch.

use tokio::time::Instant;

use super::gate::client_terminal;
use super::step::{Switch, issue};
use super::{Change, Effect, Observation, Phase, VERIFY_POLL_INTERVAL, after};

/// The new slot passed its gate: stop the old one. Nothing can fail the rollout from here on.
pub(super) fn switch(change: &Change, started: Instant, job_version: u64) -> (Vec<Effect>, Phase) {
    let pending: Vec<Effect> = change
        .job
        .as_ref()
        .and_then(|j| j.handover.as_ref())
        .map(|h| Effect::StopJob {
            job_id: h.from_job.clone(),
        })
        .into_iter()
        .collect();
    let effects = issue(&pending);
    (
        effects,
        switching(change, started, pending, Switch::Stopping { job_version }),
    )
}

fn switching(change: &Change, started: Instant, pending: Vec<Effect>, switch: Switch) -> Phase {
    Phase::Applying {
        change: change.clone(),
        started,
        pending,
        kv_written: true,
        job_registered: true,
        switch: Some(switch),
    }
}

/// How many of `pending` the loop reported done, and the error that stopped the rest.
fn consumed<'a>(
    pending: &'a [Effect],
    obs: &Observation,
) -> (&'a [Effect], Option<super::ApplyError>) {
    let (done, error) = match &obs.applied {
        Some(outcome) => (outcome.completed.min(pending.len()), outcome.error.clone()),
        None => (0, None),
    };
    (&pending[done..], error)
}

fn degraded(change: &Change, started: Instant, reason: String, now: Instant) -> Phase {
    Phase::Degraded {
        digest: change.digest.clone(),
        proxy: change.gate.proxy,
        reason,
        duration: now - started,
        held: false,
        retry_nonce: change.retry_nonce.clone(),
    }
}

pub(super) fn step_switch(
    change: &Change,
    started: Instant,
    switch: &Switch,
    pending: &[Effect],
    obs: &Observation,
    now: Instant,
) -> (Vec<Effect>, Phase) {
    match *switch {
        Switch::Stopping { job_version } => {
            step_stopping(change, started, job_version, pending, obs, now)
        }
        Switch::Draining {
            job_version,
            deadline,
        } => step_draining(change, started, job_version, deadline, obs, now),
    }
}

fn step_stopping(
    change: &Change,
    started: Instant,
    job_version: u64,
    pending: &[Effect],
    obs: &Observation,
    now: Instant,
) -> (Vec<Effect>, Phase) {
    let (rest, error) = consumed(pending, obs);
    if rest.is_empty() {
        let deadline = after(now, change.gate.healthy_deadline);
        let draining = Switch::Draining {
            job_version,
            deadline,
        };
        let phase = switching(change, started, Vec::new(), draining);
        return (vec![Effect::RequeueAfter(VERIFY_POLL_INTERVAL)], phase);
    }
    match error {
        Some(err) if !err.retryable => {
            // Both slots serve, the new one healthy: nothing is down, but a person must look.
            let reason = format!(
                "the new slot {:?} passed the gate, but the old slot could not be stopped: {}; both serve",
                change.job_id, err.message
            );
            (Vec::new(), degraded(change, started, reason, now))
        }
        _ => {
            let effects = issue(rest);
            let stopping = Switch::Stopping { job_version };
            (effects, switching(change, started, rest.to_vec(), stopping))
        }
    }
}

/// Waits for the old slot's allocations to finish (Traefik keeps accepting for
/// `requestAcceptGraceTimeout`, then drains for up to `graceTimeOut`), so the next handover
/// never registers a slot whose old allocations still hold its API port. Nomad kills them at
/// `kill_timeout` whatever happens, so the wait is capped at `healthyDeadline`.
fn step_draining(
    change: &Change,
    started: Instant,
    job_version: u64,
    deadline: Instant,
    obs: &Observation,
    now: Instant,
) -> (Vec<Effect>, Phase) {
    let drained = obs.error.is_none() && obs.draining.iter().all(client_terminal);
    if drained || now >= deadline {
        let phase = Phase::Ready {
            digest: change.digest.clone(),
            proxy: change.gate.proxy,
            duration: now - started,
            job: Some(super::JobRef {
                job_id: change.job_id.clone(),
                version: job_version,
                job_digest: change.job.as_ref().map(|j| j.job_digest.clone()),
            }),
        };
        return (Vec::new(), phase);
    }
    let wait = VERIFY_POLL_INTERVAL.min(deadline - now);
    let draining = Switch::Draining {
        job_version,
        deadline,
    };
    (
        vec![Effect::RequeueAfter(wait)],
        switching(change, started, Vec::new(), draining),
    )
}

/// Resumes a journal written past the switch: the stop again (idempotent), or the drain
/// waited for afresh.
pub(super) fn resume_switch(
    change: Change,
    started: Instant,
    now: Instant,
    job_version: u64,
    pending: Vec<Effect>,
    draining: bool,
) -> Phase {
    let switch = if draining {
        Switch::Draining {
            job_version,
            deadline: after(now, change.gate.healthy_deadline),
        }
    } else {
        Switch::Stopping { job_version }
    };
    switching(&change, started, pending, switch)
}

/// A handover that failed before its switch: the new slot is stopped (it shares the traffic,
/// so it goes even with `onFailure: hold`) and the policy tree restored; the old slot never
/// stopped serving. The stop is issued even when the register was not confirmed: stopping a
/// job that does not exist, or is stopped already, changes nothing.
pub(super) fn fail(
    change: &Change,
    started: Instant,
    reason: String,
    kv_written: bool,
) -> (Vec<Effect>, Phase) {
    let mut pending = vec![Effect::StopJob {
        job_id: change.job_id.clone(),
    }];
    let held = change.gate.on_failure == super::OnFailure::Hold;
    if let (Some(kv), true, false) = (&change.kv, kv_written, held) {
        pending.push(kv.restore());
    }
    let reason = format!(
        "{reason}; the new slot {:?} was stopped and the old one never stopped serving",
        change.job_id
    );
    let effects = issue(&pending);
    let phase = Phase::RollingBack {
        change: change.clone(),
        started,
        reason,
        to_version: None,
        pending,
        abandon: false,
    };
    (effects, phase)
}

/// What an operator that restarts before the switch undoes: the new slot (it was never judged
/// by this process) and the policy tree, so the change is planned again from what serves.
pub(super) fn abandon(change: Change, started: Instant, kv_written: bool) -> Phase {
    let mut pending = vec![Effect::StopJob {
        job_id: change.job_id.clone(),
    }];
    if let (Some(kv), true) = (&change.kv, kv_written) {
        pending.push(kv.restore());
    }
    Phase::RollingBack {
        reason: format!(
            "the operator restarted before the handover's switch: the unverified new slot {:?} is stopped and the change planned again",
            change.job_id
        ),
        change,
        started,
        to_version: None,
        pending,
        abandon: true,
    }
}

pub(super) fn step_abandoning(
    change: &Change,
    started: Instant,
    reason: &str,
    pending: &[Effect],
    obs: &Observation,
    now: Instant,
) -> (Vec<Effect>, Phase) {
    let (rest, error) = consumed(pending, obs);
    if rest.is_empty() {
        // At rest with nothing rolled out: the next pass plans the document again.
        return (Vec::new(), Phase::Idle);
    }
    match error {
        Some(err) if !err.retryable => {
            let reason = format!(
                "resuming after an operator restart, the unverified new slot {:?} could not be stopped: {}",
                change.job_id, err.message
            );
            (Vec::new(), degraded(change, started, reason, now))
        }
        _ => {
            let effects = issue(rest);
            let phase = Phase::RollingBack {
                change: change.clone(),
                started,
                reason: reason.to_owned(),
                to_version: None,
                pending: rest.to_vec(),
                abandon: true,
            };
            (effects, phase)
        }
    }
}
