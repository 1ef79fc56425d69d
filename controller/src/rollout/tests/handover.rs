//! Handover: the new slot `traefik-b` is registered and gated next to the serving `traefik`,
//! which is stopped only once the new slot passed; a failure before that stops only the new
//! slot.

use std::time::{Duration, SystemTime};

use tokio::time::{Instant, advance};

use super::*;

const OLD: &str = "traefik";
const NEW: &str = "traefik-b";

fn handover_job() -> JobChange {
    JobChange {
        job_id: NEW.into(),
        job: serde_json::json!({"ID": NEW, "Meta": {"proxy-operator/spec-digest": "job-new"}}),
        job_digest: "job-new".into(),
        enforce_index: 0,
        rollback_to: None,
        handover: Some(Handover {
            from_job: OLD.into(),
            from_version: 3,
        }),
    }
}

/// A policy + structural change handed over to slot b.
fn handover_change() -> Change {
    Change {
        digest: "spec-new".into(),
        retry_nonce: None,
        job_id: NEW.into(),
        kv: Some(kv_change()),
        job: Some(handover_job()),
        gate: gate(),
    }
}

/// The new slot (version 0, a fresh job) running healthy.
fn new_slot_healthy() -> Observation {
    Observation {
        job: Some(job(0, "job-new")),
        allocations: vec![alloc(0, "running", true)],
        proxy: Some(healthy_proxy()),
        ..Observation::default()
    }
}

fn stop(job_id: &str) -> Effect {
    Effect::StopJob {
        job_id: job_id.into(),
    }
}

fn stops(effects: &[Effect]) -> Vec<&str> {
    effects
        .iter()
        .filter_map(|e| match e {
            Effect::StopJob { job_id } => Some(job_id.as_str()),
            _ => None,
        })
        .collect()
}

/// Verifying the handover with its gate held healthy until the switch.
async fn switched() -> (Vec<Effect>, Phase) {
    let phase = verifying(handover_change());
    let obs = new_slot_healthy();
    let mut phase = phase;
    loop {
        let (effects, next) = step(&phase, &obs, Instant::now());
        if !matches!(next, Phase::Verifying { .. }) {
            return (effects, next);
        }
        phase = next;
        advance(VERIFY_POLL_INTERVAL).await;
    }
}

fn draining(obs_allocs: Vec<AllocObservation>) -> Observation {
    Observation {
        draining: obs_allocs,
        ..new_slot_healthy()
    }
}

fn resumed(phase: &Phase) -> Phase {
    let journal = phase.journal(Instant::now(), SystemTime::now()).unwrap();
    let journal: Journal = serde_json::from_slice(&serde_json::to_vec(&journal).unwrap()).unwrap();
    Phase::resume(journal, Instant::now(), SystemTime::now())
}

// === before the switch ===

#[tokio::test(start_paused = true)]
async fn a_handover_registers_the_new_slot_and_stops_nothing_while_it_warms() {
    let (effects, phase) = step(&Phase::Idle, &planned(handover_change()), Instant::now());
    assert!(
        matches!(&effects[1], Effect::RegisterJob { job_id, enforce_index: 0, .. } if job_id == NEW)
    );
    assert!(stops(&effects).is_empty());
    let (effects, phase) = step(&phase, &applied(2), Instant::now());
    assert_eq!(phase.name(), "Verifying");
    assert!(stops(&effects).is_empty());
    // Healthy, but not for minHealthyTime yet: the old slot still serves alone untouched.
    let (effects, phase) = step(&phase, &new_slot_healthy(), Instant::now());
    assert_eq!(phase.name(), "Verifying");
    assert!(stops(&effects).is_empty());
}

#[tokio::test(start_paused = true)]
async fn a_new_slot_that_passes_its_gate_stops_the_old_slot_then_waits_for_its_drain() {
    let (effects, phase) = switched().await;
    assert_eq!(stops(&effects), vec![OLD], "only the old slot, once");
    assert!(matches!(
        phase,
        Phase::Applying {
            switch: Some(Switch::Stopping { job_version: 0 }),
            ..
        }
    ));
    let (effects, phase) = step(&phase, &applied(1), Instant::now());
    assert!(writes(&effects).is_empty());
    assert!(matches!(
        phase,
        Phase::Applying {
            switch: Some(Switch::Draining { .. }),
            ..
        }
    ));
    // The old allocation still drains: not Ready.
    let (_, phase) = step(
        &phase,
        &draining(vec![alloc(3, "running", true)]),
        Instant::now(),
    );
    assert!(matches!(
        phase,
        Phase::Applying {
            switch: Some(Switch::Draining { .. }),
            ..
        }
    ));
    let (effects, phase) = step(
        &phase,
        &draining(vec![alloc(3, "complete", false)]),
        Instant::now(),
    );
    assert!(effects.is_empty());
    match phase {
        Phase::Ready { job: Some(job), .. } => {
            assert_eq!(job.job_id, NEW);
            assert_eq!(job.version, 0);
            assert_eq!(job.job_digest.as_deref(), Some("job-new"));
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test(start_paused = true)]
async fn a_drain_that_outlasts_the_healthy_deadline_ends_ready_since_nomad_kills_it_anyway() {
    let (_, phase) = switched().await;
    let (_, phase) = step(&phase, &applied(1), Instant::now());
    let lingering = draining(vec![alloc(3, "running", true)]);
    advance(DEADLINE - Duration::from_millis(1)).await;
    let (_, still) = step(&phase, &lingering, Instant::now());
    assert_eq!(still.name(), "Applying");
    advance(Duration::from_millis(1)).await;
    let (_, done) = step(&still, &lingering, Instant::now());
    assert_eq!(done.name(), "Ready");
}

#[tokio::test(start_paused = true)]
async fn a_blind_observation_while_draining_does_not_count_as_drained() {
    let (_, phase) = switched().await;
    let (_, phase) = step(&phase, &applied(1), Instant::now());
    let blind = Observation {
        error: Some("nomad down".into()),
        ..Observation::default()
    };
    let (_, phase) = step(&phase, &blind, Instant::now());
    assert_eq!(phase.name(), "Applying");
}

#[tokio::test(start_paused = true)]
async fn a_new_slot_failing_its_gate_is_stopped_the_policy_restored_and_the_old_slot_never_stopped()
{
    let phase = verifying(handover_change());
    let sick = Observation {
        proxy: Some(ProxyObservation::default()),
        ..new_slot_healthy()
    };
    let (mut effects, mut phase) = (Vec::new(), phase);
    let mut all = Vec::new();
    while matches!(phase, Phase::Verifying { .. }) {
        (effects, phase) = step(&phase, &sick, Instant::now());
        all.extend(effects.clone());
        advance(VERIFY_POLL_INTERVAL).await;
    }
    assert_eq!(phase.name(), "RollingBack");
    assert_eq!(stops(&effects), vec![NEW], "the new slot goes first");
    assert!(writes(&effects).contains(&&handover_change().kv.unwrap().restore()));
    assert!(!stops(&all).contains(&OLD), "the old slot is never stopped");
    assert!(
        !all.iter().any(|e| matches!(e, Effect::RevertJob { .. })),
        "nothing is reverted: the old slot never changed"
    );
    let (_, done) = step(&phase, &applied(2), Instant::now());
    assert_eq!(done.name(), "RolledBack");
    let why = reason(&done);
    assert!(why.contains("/ping"), "{why}");
    assert!(why.contains("the old one never stopped serving"), "{why}");
}

#[tokio::test(start_paused = true)]
async fn the_first_task_exit_of_the_new_slot_fails_the_handover_at_once() {
    let phase = verifying(handover_change());
    let mut crashed = new_slot_healthy();
    crashed.allocations[0].exited = Some("task traefik: Terminated: Exit Code: 1".into());
    let (effects, phase) = step(&phase, &crashed, Instant::now());
    assert_eq!(phase.name(), "RollingBack");
    assert_eq!(stops(&effects), vec![NEW]);
    assert!(reason(&phase).contains("Exit Code: 1"));
}

#[tokio::test(start_paused = true)]
async fn a_terminal_register_error_of_the_new_slot_stops_only_the_new_slot() {
    let (_, phase) = step(&Phase::Idle, &planned(handover_change()), Instant::now());
    let refused = Observation {
        applied: Some(ApplyOutcome {
            completed: 1,
            error: Some(ApplyError::new("port collision", false)),
        }),
        ..Observation::default()
    };
    let (effects, phase) = step(&phase, &refused, Instant::now());
    assert_eq!(phase.name(), "RollingBack");
    assert_eq!(stops(&effects), vec![NEW]);
}

#[tokio::test(start_paused = true)]
async fn on_failure_hold_still_stops_a_failed_new_slot_since_it_shares_the_traffic_but_keeps_the_policy()
 {
    let mut change = handover_change();
    change.gate.on_failure = OnFailure::Hold;
    let phase = verifying(change);
    let mut crashed = new_slot_healthy();
    crashed.allocations[0].client_status = "failed".into();
    let (effects, _) = step(&phase, &crashed, Instant::now());
    assert_eq!(stops(&effects), vec![NEW]);
    assert!(
        !effects
            .iter()
            .any(|e| matches!(e, Effect::RestoreKv { .. }))
    );
}

// === after the switch ===

#[tokio::test(start_paused = true)]
async fn a_retryable_error_stopping_the_old_slot_is_retried_and_a_terminal_one_degrades_with_both_serving()
 {
    let (_, phase) = switched().await;
    let flaky = Observation {
        applied: Some(ApplyOutcome {
            completed: 0,
            error: Some(ApplyError::new("nomad 500", true)),
        }),
        ..Observation::default()
    };
    let (effects, again) = step(&phase, &flaky, Instant::now());
    assert_eq!(stops(&effects), vec![OLD]);
    let refused = Observation {
        applied: Some(ApplyOutcome {
            completed: 0,
            error: Some(ApplyError::new("not ours", false)),
        }),
        ..Observation::default()
    };
    let (effects, degraded) = step(&again, &refused, Instant::now());
    assert!(effects.is_empty());
    assert_eq!(degraded.name(), "Degraded");
    assert!(reason(&degraded).contains("both serve"));
}

// === an operator restarted at each stage ===

#[tokio::test(start_paused = true)]
async fn an_operator_restarted_while_the_new_slot_is_applied_stops_it_and_plans_again() {
    let (_, applying) = step(&Phase::Idle, &planned(handover_change()), Instant::now());
    let phase = resumed(&applying);
    assert_eq!(phase.name(), "RollingBack");
    let (effects, _) = step(&phase, &Observation::default(), Instant::now());
    assert_eq!(stops(&effects), vec![NEW]);
    assert!(
        !effects
            .iter()
            .any(|e| matches!(e, Effect::RestoreKv { .. })),
        "the KV write was not attempted yet"
    );
    let (_, done) = step(&phase, &applied(1), Instant::now());
    assert_eq!(done, Phase::Idle, "at rest, so the change is planned again");
}

#[tokio::test(start_paused = true)]
async fn an_operator_restarted_while_the_new_slot_is_gated_stops_it_restores_the_policy_and_plans_again()
 {
    let phase = resumed(&verifying(handover_change()));
    let (effects, _) = step(&phase, &Observation::default(), Instant::now());
    assert_eq!(stops(&effects), vec![NEW]);
    assert!(writes(&effects).contains(&&handover_change().kv.unwrap().restore()));
    // A second restart mid-abandon carries on with what is left.
    let (_, half) = step(
        &phase,
        &{
            let mut o = applied(1);
            o.applied = Some(ApplyOutcome {
                completed: 1,
                error: Some(ApplyError::new("consul down", true)),
            });
            o
        },
        Instant::now(),
    );
    assert!(
        reason(&half).contains("restarted before the handover's switch"),
        "a retry keeps saying why: {}",
        reason(&half)
    );
    let again = resumed(&half);
    let (effects, _) = step(&again, &Observation::default(), Instant::now());
    assert!(stops(&effects).is_empty());
    assert_eq!(writes(&effects).len(), 1, "only the restore is left");
    let (_, done) = step(&again, &applied(1), Instant::now());
    assert_eq!(done, Phase::Idle);
}

#[tokio::test(start_paused = true)]
async fn an_abandon_whose_stop_is_refused_degrades_instead_of_looping() {
    let phase = resumed(&verifying(handover_change()));
    let refused = Observation {
        applied: Some(ApplyOutcome {
            completed: 0,
            error: Some(ApplyError::new("403", false)),
        }),
        ..Observation::default()
    };
    let (_, next) = step(&phase, &refused, Instant::now());
    assert_eq!(next.name(), "Degraded");
}

#[tokio::test(start_paused = true)]
async fn an_operator_restarted_while_switching_stops_the_old_slot_again_and_drains() {
    let (_, phase) = switched().await;
    let phase = resumed(&phase);
    let (effects, _) = step(&phase, &Observation::default(), Instant::now());
    assert_eq!(stops(&effects), vec![OLD]);
    let (_, next) = step(&phase, &applied(1), Instant::now());
    assert!(matches!(
        next,
        Phase::Applying {
            switch: Some(Switch::Draining { .. }),
            ..
        }
    ));
}

#[tokio::test(start_paused = true)]
async fn an_operator_restarted_while_draining_finishes_the_drain_and_stops_nothing() {
    let (_, phase) = switched().await;
    let (_, phase) = step(&phase, &applied(1), Instant::now());
    let phase = resumed(&phase);
    let (effects, still) = step(
        &phase,
        &draining(vec![alloc(3, "running", true)]),
        Instant::now(),
    );
    assert!(writes(&effects).is_empty());
    assert_eq!(still.name(), "Applying");
    let (_, done) = step(&still, &draining(Vec::new()), Instant::now());
    assert_eq!(done.name(), "Ready");
}

// === forged journals ===

fn handover_journal(stage: Stage) -> Journal {
    let mut change = handover_change();
    if let Some(job) = &mut change.job {
        job.job["Meta"]["proxy-operator/owner"] = serde_json::json!("po");
    }
    Journal {
        change,
        stage,
        elapsed_ms: 0,
        written_at_ms: 0,
    }
}

#[test]
fn a_handover_journal_this_operator_wrote_passes_its_check() {
    for stage in [
        Stage::Switching {
            job_version: 0,
            pending: vec![stop(OLD)],
        },
        Stage::Draining { job_version: 0 },
        Stage::Abandoning {
            pending: vec![stop(NEW)],
        },
    ] {
        handover_journal(stage).check("po", "po/traefik/").unwrap();
    }
}

#[test]
fn a_journal_stopping_a_job_outside_its_handover_is_rejected() {
    let forged = handover_journal(Stage::Switching {
        job_version: 0,
        pending: vec![stop("billing-api")],
    });
    let err = forged.check("po", "po/traefik/").unwrap_err();
    assert!(err.to_string().contains("billing-api"), "{err}");
}

#[test]
fn a_journal_handing_over_from_a_job_that_is_not_the_other_slot_is_rejected() {
    let mut forged = handover_journal(Stage::Draining { job_version: 0 });
    if let Some(job) = &mut forged.change.job {
        job.handover = Some(Handover {
            from_job: "billing-api".into(),
            from_version: 1,
        });
    }
    assert!(forged.check("po", "po/traefik/").is_err());
}

#[test]
fn a_journal_at_a_handover_stage_without_a_handover_or_stopping_in_a_plain_rollout_is_rejected() {
    let mut plain = handover_journal(Stage::Draining { job_version: 0 });
    plain.change.job = None;
    assert!(plain.check("po", "po/traefik/").is_err());
    let mut stopping = handover_journal(Stage::RollingBack {
        reason: "x".into(),
        to_version: None,
        pending: vec![stop(NEW)],
    });
    stopping.change.job = None;
    assert!(stopping.check("po", "po/traefik/").is_err());
}
