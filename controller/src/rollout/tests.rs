//! The rollout machine driven with tokio's paused clock. Rollback paths get the most tests:
//! they are what stands between a bad edit and an outage.

use std::time::{Duration, SystemTime};

use tokio::time::{Instant, advance};

use super::step::begin;
use super::*;
use crate::proxy::traefik::{EntryKind, EntryStatus, RawEntry};
use crate::spec::ProxyKind;

const DEADLINE: Duration = Duration::from_secs(30);
const MIN_HEALTHY: Duration = Duration::from_secs(5);

// === fixtures ===

fn gate() -> Gate {
    Gate {
        proxy: crate::spec::ProxyKind::Traefik,
        healthy_deadline: DEADLINE,
        min_healthy_time: MIN_HEALTHY,
        on_failure: OnFailure::Rollback,
        check_ping: true,
        expected_entries: vec!["security-headers@consul".into()],
        proxy_api: Some("http://127.0.0.1:8080".into()),
        probes: Vec::new(),
    }
}

fn kv_change() -> KvChange {
    KvChange {
        set: vec![
            (
                "po/traefik/http/middlewares/security-headers/headers/frameDeny".into(),
                "true".into(),
            ),
            (
                "po/traefik/http/middlewares/rl/rateLimit/average".into(),
                "10".into(),
            ),
        ],
        delete: vec!["po/traefik/http/middlewares/old/headers/frameDeny".into()],
        previous: vec![
            (
                "po/traefik/http/middlewares/security-headers/headers/frameDeny".into(),
                "false".into(),
            ),
            (
                "po/traefik/http/middlewares/old/headers/frameDeny".into(),
                "true".into(),
            ),
        ],
    }
}

fn job_change() -> JobChange {
    JobChange {
        job_id: "traefik".into(),
        job: serde_json::json!({"ID": "traefik", "Meta": {"proxy-operator/spec-digest": "job-new"}}),
        job_digest: "job-new".into(),
        enforce_index: 40,
        rollback_to: Some(JobRef {
            job_id: "traefik".into(),
            version: 3,
            job_digest: Some("job-old".into()),
        }),
        handover: None,
    }
}

/// A structural + policy change: KV and a new job version.
fn both() -> Change {
    Change {
        digest: "spec-new".into(),
        retry_nonce: None,
        job_id: "traefik".into(),
        kv: Some(kv_change()),
        job: Some(job_change()),
        gate: gate(),
    }
}

fn policy_only() -> Change {
    Change {
        digest: "spec-policy".into(),
        retry_nonce: None,
        job_id: "traefik".into(),
        kv: Some(kv_change()),
        job: None,
        gate: gate(),
    }
}

fn job_only() -> Change {
    Change {
        digest: "spec-job".into(),
        retry_nonce: None,
        job_id: "traefik".into(),
        kv: None,
        job: Some(job_change()),
        gate: gate(),
    }
}

fn job(version: u64, digest: &str) -> JobObservation {
    JobObservation {
        version,
        modify_index: 50,
        spec_digest: Some(digest.into()),
        stopped: false,
    }
}

fn alloc(version: u64, client_status: &str, tasks_running: bool) -> AllocObservation {
    AllocObservation {
        id: format!("a1b2c3d4-0000-0000-0000-00000000000{version}"),
        job_version: version,
        desired_status: "run".into(),
        client_status: client_status.into(),
        tasks_running,
        task_detail: (!tasks_running).then(|| "Restarting: exit code 1".to_owned()),
        create_index: 60,
        exited: None,
    }
}

fn enabled(name: &str, kind: EntryKind) -> RawEntry {
    RawEntry {
        name: name.into(),
        kind,
        status: EntryStatus::Enabled,
        errors: Vec::new(),
        middlewares: Vec::new(),
    }
}

fn healthy_proxy() -> ProxyObservation {
    ProxyObservation {
        ping_ok: true,
        rawdata: Some(vec![enabled(
            "security-headers@consul",
            EntryKind::Middleware,
        )]),
        probes: vec![ProbeOutcome {
            name: "demo.localhost/".into(),
            ok: true,
            detail: "200".into(),
        }],
    }
}

/// The new job version (4) running healthy on a system job without deployments.
fn healthy() -> Observation {
    Observation {
        job: Some(job(4, "job-new")),
        allocations: vec![alloc(4, "running", true)],
        proxy: Some(healthy_proxy()),
        ..Observation::default()
    }
}

fn with_deployment(mut obs: Observation, state: DeploymentState, description: &str) -> Observation {
    obs.deployment = Some(DeploymentObservation {
        id: "5456bd7a-9fc0-c0dd-6131-cbee77f57577".into(),
        job_version: 4,
        state,
        description: description.into(),
    });
    obs
}

fn applied(n: usize) -> Observation {
    Observation {
        applied: Some(ApplyOutcome::all(n)),
        ..Observation::default()
    }
}

fn planned(change: Change) -> Observation {
    Observation {
        planned: Some(change),
        ..Observation::default()
    }
}

/// Starts `change` and reports every effect done: the machine is Verifying.
fn verifying(change: Change) -> Phase {
    let (effects, phase) = step(&Phase::Idle, &planned(change), Instant::now());
    let writes = effects.iter().filter(|e| e.is_write()).count();
    let (_, phase) = step(&phase, &applied(writes), Instant::now());
    assert_eq!(phase.name(), "Verifying");
    phase
}

/// Steps `obs` every 250 ms of paused time for `total`, returning the last result.
async fn observe_for(mut phase: Phase, obs: &Observation, total: Duration) -> (Vec<Effect>, Phase) {
    let start = Instant::now();
    loop {
        let (effects, next) = step(&phase, obs, Instant::now());
        if !matches!(next, Phase::Verifying { .. }) || Instant::now() - start >= total {
            return (effects, next);
        }
        phase = next;
        advance(VERIFY_POLL_INTERVAL).await;
    }
}

fn writes(effects: &[Effect]) -> Vec<&Effect> {
    effects.iter().filter(|e| e.is_write()).collect()
}

fn reason(phase: &Phase) -> &str {
    match phase {
        Phase::RollingBack { reason, .. }
        | Phase::RolledBack { reason, .. }
        | Phase::Degraded { reason, .. } => reason,
        other => panic!("no reason in {other:?}"),
    }
}

// === starting ===

#[tokio::test(start_paused = true)]
async fn a_machine_at_rest_without_a_plan_emits_nothing() {
    for phase in [
        Phase::Idle,
        Phase::Ready {
            digest: "d".into(),
            proxy: ProxyKind::Traefik,
            duration: Duration::ZERO,
            job: None,
        },
        Phase::RolledBack {
            digest: "d".into(),
            proxy: ProxyKind::Traefik,
            reason: "r".into(),
            duration: Duration::ZERO,
            retry_nonce: None,
        },
        Phase::Degraded {
            digest: "d".into(),
            proxy: ProxyKind::Traefik,
            reason: "r".into(),
            duration: Duration::ZERO,
            held: false,
            retry_nonce: None,
        },
    ] {
        let (effects, next) = step(&phase, &healthy(), Instant::now());
        assert!(effects.is_empty(), "{phase:?} emitted {effects:?}");
        assert_eq!(next, phase);
    }
}

#[tokio::test(start_paused = true)]
async fn a_planned_change_writes_the_kv_tree_before_registering_the_job() {
    let (effects, phase) = step(&Phase::Idle, &planned(both()), Instant::now());
    assert!(
        matches!(&effects[0], Effect::WriteKv { set, delete } if set.len() == 2 && delete.len() == 1)
    );
    assert!(
        matches!(&effects[1], Effect::RegisterJob { job_id, enforce_index: 40, .. } if job_id == "traefik")
    );
    assert_eq!(effects.len(), 2);
    assert_eq!(phase.name(), "Applying");
}

#[tokio::test(start_paused = true)]
async fn a_new_plan_is_taken_from_ready_rolled_back_and_degraded() {
    for rest in [
        Phase::Ready {
            digest: "old".into(),
            proxy: ProxyKind::Traefik,
            duration: Duration::ZERO,
            job: None,
        },
        Phase::RolledBack {
            digest: "old".into(),
            proxy: ProxyKind::Traefik,
            reason: "r".into(),
            duration: Duration::ZERO,
            retry_nonce: None,
        },
        Phase::Degraded {
            digest: "old".into(),
            proxy: ProxyKind::Traefik,
            reason: "r".into(),
            duration: Duration::ZERO,
            held: false,
            retry_nonce: None,
        },
    ] {
        let (effects, next) = step(&rest, &planned(job_only()), Instant::now());
        assert_eq!(next.name(), "Applying");
        assert_eq!(writes(&effects).len(), 1);
    }
}

#[tokio::test(start_paused = true)]
async fn a_plan_arriving_mid_rollout_is_ignored_until_the_rollout_finishes() {
    let phase = verifying(both());
    let mut obs = healthy();
    obs.planned = Some(job_only());
    let (effects, next) = step(&phase, &obs, Instant::now());
    assert!(writes(&effects).is_empty());
    assert!(matches!(next, Phase::Verifying { ref change, .. } if change.digest == "spec-new"));
}

// === applying ===

#[tokio::test(start_paused = true)]
async fn applied_effects_start_verifying_with_the_healthy_deadline_from_now() {
    let (_, phase) = step(&Phase::Idle, &planned(both()), Instant::now());
    advance(Duration::from_secs(2)).await;
    let (effects, next) = step(&phase, &applied(2), Instant::now());
    match next {
        Phase::Verifying {
            deadline,
            healthy_since,
            ..
        } => {
            assert_eq!(deadline, Instant::now() + DEADLINE);
            assert_eq!(healthy_since, None);
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(effects, vec![Effect::RequeueAfter(VERIFY_POLL_INTERVAL)]);
}

#[tokio::test(start_paused = true)]
async fn a_retryable_apply_error_reissues_only_the_effects_that_did_not_go_through() {
    let (_, phase) = step(&Phase::Idle, &planned(both()), Instant::now());
    let obs = Observation {
        applied: Some(ApplyOutcome {
            completed: 1,
            error: Some(ApplyError {
                message: "nomad unreachable".into(),
                retryable: true,
            }),
        }),
        ..Observation::default()
    };
    let (effects, next) = step(&phase, &obs, Instant::now());
    assert_eq!(writes(&effects).len(), 1);
    assert!(matches!(writes(&effects)[0], Effect::RegisterJob { .. }));
    assert!(matches!(
        next,
        Phase::Applying {
            kv_written: true,
            job_registered: false,
            ..
        }
    ));
}

#[tokio::test(start_paused = true)]
async fn a_terminal_register_error_after_the_kv_write_restores_the_kv_entries() {
    let (_, phase) = step(&Phase::Idle, &planned(both()), Instant::now());
    let obs = Observation {
        applied: Some(ApplyOutcome {
            completed: 1,
            error: Some(ApplyError {
                message: "enforce index check failed".into(),
                retryable: false,
            }),
        }),
        ..Observation::default()
    };
    let (effects, next) = step(&phase, &obs, Instant::now());
    let w = writes(&effects);
    assert_eq!(w.len(), 1, "only the KV restore, no job revert: {w:?}");
    assert!(matches!(w[0], Effect::RestoreKv { .. }));
    assert!(reason(&next).contains("enforce index check failed"));
    assert_eq!(next.name(), "RollingBack");
}

#[tokio::test(start_paused = true)]
async fn a_terminal_error_before_anything_was_written_is_rolled_back_with_zero_writes() {
    let (_, phase) = step(&Phase::Idle, &planned(job_only()), Instant::now());
    let obs = Observation {
        applied: Some(ApplyOutcome {
            completed: 0,
            error: Some(ApplyError {
                message: "job validation failed".into(),
                retryable: false,
            }),
        }),
        ..Observation::default()
    };
    let (effects, next) = step(&phase, &obs, Instant::now());
    assert!(writes(&effects).is_empty());
    assert!(matches!(&next, Phase::RolledBack { digest, .. } if digest == "spec-job"));
}

#[tokio::test(start_paused = true)]
async fn retryable_apply_errors_give_up_into_rollback_once_the_deadline_passes_restoring_the_attempted_kv_write()
 {
    let (_, mut phase) = step(&Phase::Idle, &planned(both()), Instant::now());
    let obs = Observation {
        applied: Some(ApplyOutcome {
            completed: 0,
            error: Some(ApplyError {
                message: "consul unreachable".into(),
                retryable: true,
            }),
        }),
        ..Observation::default()
    };
    advance(DEADLINE - Duration::from_secs(1)).await;
    let (_, next) = step(&phase, &obs, Instant::now());
    assert_eq!(next.name(), "Applying");
    phase = next;
    advance(Duration::from_secs(1)).await;
    let (effects, next) = step(&phase, &obs, Instant::now());
    // The KV write errored, but its answer may have been lost after it landed: restore it
    // (idempotent). The register never ran, so the job is not reverted.
    assert!(
        matches!(writes(&effects)[..], [Effect::RestoreKv { .. }]),
        "{effects:?}"
    );
    assert_eq!(next.name(), "RollingBack");
    assert!(reason(&next).contains("consul unreachable"));
}

// === verifying: the happy path and the hold ===

#[tokio::test(start_paused = true)]
async fn healthy_signals_held_for_min_healthy_time_become_ready() {
    let phase = verifying(both());
    let (effects, next) = observe_for(phase, &healthy(), DEADLINE).await;
    assert!(effects.is_empty());
    match next {
        Phase::Ready {
            digest,
            proxy,
            duration,
            job,
        } => {
            assert_eq!(digest, "spec-new");
            assert_eq!(
                proxy,
                ProxyKind::Traefik,
                "the change's gate names its proxy"
            );
            assert_eq!(
                job,
                Some(JobRef {
                    job_id: "traefik".into(),
                    version: 4,
                    job_digest: Some("job-new".into()),
                }),
                "the version that passed is where the next rollback goes"
            );
            assert_eq!(duration, MIN_HEALTHY);
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test(start_paused = true)]
async fn healthy_but_not_yet_for_min_healthy_time_keeps_verifying() {
    let phase = verifying(both());
    let (_, phase) = step(&phase, &healthy(), Instant::now());
    advance(MIN_HEALTHY - Duration::from_millis(1)).await;
    let (effects, next) = step(&phase, &healthy(), Instant::now());
    assert!(matches!(
        next,
        Phase::Verifying {
            healthy_since: Some(_),
            ..
        }
    ));
    assert_eq!(
        effects,
        vec![Effect::RequeueAfter(Duration::from_millis(1))]
    );
    advance(Duration::from_millis(1)).await;
    let (_, next) = step(&next, &healthy(), Instant::now());
    assert_eq!(next.name(), "Ready");
}

#[tokio::test(start_paused = true)]
async fn a_break_in_health_restarts_the_min_healthy_time_clock() {
    let phase = verifying(both());
    let (_, phase) = step(&phase, &healthy(), Instant::now());
    advance(Duration::from_secs(4)).await;
    let mut flapping = healthy();
    flapping.allocations = vec![alloc(4, "running", false)];
    let (_, phase) = step(&phase, &flapping, Instant::now());
    assert!(matches!(
        phase,
        Phase::Verifying {
            healthy_since: None,
            ..
        }
    ));
    advance(Duration::from_secs(1)).await;
    let (_, phase) = step(&phase, &healthy(), Instant::now());
    advance(Duration::from_secs(4)).await;
    let (_, phase) = step(&phase, &healthy(), Instant::now());
    assert_eq!(
        phase.name(),
        "Verifying",
        "only 4s of the 5s hold since the break"
    );
    advance(Duration::from_secs(1)).await;
    let (_, phase) = step(&phase, &healthy(), Instant::now());
    assert_eq!(phase.name(), "Ready");
}

#[tokio::test(start_paused = true)]
async fn a_successful_deployment_of_our_version_counts_as_job_health() {
    let phase = verifying(both());
    let mut obs = with_deployment(
        healthy(),
        DeploymentState::Successful,
        "Deployment completed successfully",
    );
    obs.allocations.clear(); // the deployment is the job signal, not the allocation list
    let (_, next) = observe_for(phase, &obs, DEADLINE).await;
    assert_eq!(next.name(), "Ready");
}

#[tokio::test(start_paused = true)]
async fn a_successful_deployment_is_ready_without_holding_min_healthy_time_again() {
    let phase = verifying(both());
    let obs = with_deployment(
        healthy(),
        DeploymentState::Successful,
        "Deployment completed successfully",
    );
    let (effects, next) = step(&phase, &obs, Instant::now());
    assert!(effects.is_empty(), "{effects:?}");
    match next {
        Phase::Ready { duration, .. } => assert_eq!(
            duration,
            Duration::ZERO,
            "Nomad held the version for minHealthyTime already"
        ),
        other => panic!("{other:?}"),
    }
}

#[tokio::test(start_paused = true)]
async fn a_successful_deployment_still_waits_for_the_proxy_signals() {
    let phase = verifying(both());
    let mut obs = with_deployment(
        healthy(),
        DeploymentState::Successful,
        "Deployment completed successfully",
    );
    if let Some(proxy) = obs.proxy.as_mut() {
        proxy.ping_ok = false;
    }
    let (_, next) = step(&phase, &obs, Instant::now());
    match next {
        Phase::Verifying { waiting_for, .. } => {
            assert!(waiting_for.contains("/ping"), "{waiting_for}")
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test(start_paused = true)]
async fn without_a_deployment_the_operator_holds_min_healthy_time_itself() {
    let phase = verifying(both());
    let (_, next) = step(&phase, &healthy(), Instant::now());
    assert_eq!(next.name(), "Verifying");
    advance(MIN_HEALTHY).await;
    let (_, next) = step(&next, &healthy(), Instant::now());
    assert_eq!(next.name(), "Ready");
}

#[tokio::test(start_paused = true)]
async fn a_policy_change_holds_min_healthy_time_even_beside_a_successful_deployment() {
    // The deployment held the job, not the policy tree this change wrote.
    let phase = verifying(policy_only());
    let obs = with_deployment(
        healthy(),
        DeploymentState::Successful,
        "Deployment completed successfully",
    );
    let (_, next) = step(&phase, &obs, Instant::now());
    assert_eq!(next.name(), "Verifying");
    advance(MIN_HEALTHY).await;
    let (_, next) = step(&next, &obs, Instant::now());
    assert_eq!(next.name(), "Ready");
}

#[tokio::test(start_paused = true)]
async fn a_running_deployment_keeps_verifying_even_when_allocations_run() {
    let phase = verifying(both());
    let obs = with_deployment(healthy(), DeploymentState::Running, "Deployment is running");
    let (_, next) = observe_for(phase, &obs, DEADLINE - Duration::from_secs(1)).await;
    match next {
        Phase::Verifying { waiting_for, .. } => {
            assert!(waiting_for.contains("Deployment is running"))
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test(start_paused = true)]
async fn a_deployment_of_an_older_version_is_ignored_in_favour_of_allocations() {
    let phase = verifying(both());
    let mut obs = with_deployment(
        healthy(),
        DeploymentState::Failed,
        "Failed due to unhealthy allocations",
    );
    if let Some(d) = obs.deployment.as_mut() {
        d.job_version = 2;
    }
    let (_, next) = observe_for(phase, &obs, DEADLINE).await;
    assert_eq!(next.name(), "Ready");
}

#[tokio::test(start_paused = true)]
async fn allocations_still_on_the_old_version_keep_verifying() {
    let phase = verifying(both());
    let mut obs = healthy();
    obs.allocations.push(alloc(3, "running", true));
    let (_, next) = step(&phase, &obs, Instant::now());
    match next {
        Phase::Verifying {
            waiting_for,
            healthy_since: None,
            ..
        } => {
            assert!(
                waiting_for.contains("still runs job version 3"),
                "{waiting_for}"
            );
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test(start_paused = true)]
async fn stopped_allocations_of_the_old_version_do_not_hold_the_rollout() {
    let phase = verifying(both());
    let mut obs = healthy();
    let mut old = alloc(3, "complete", false);
    old.desired_status = "stop".into();
    obs.allocations.push(old);
    let (_, next) = observe_for(phase, &obs, DEADLINE).await;
    assert_eq!(next.name(), "Ready");
}

#[tokio::test(start_paused = true)]
async fn a_policy_only_change_is_judged_on_the_running_job_version() {
    let phase = verifying(policy_only());
    let mut obs = healthy();
    obs.job = Some(job(3, "job-old"));
    obs.allocations = vec![alloc(3, "running", true)];
    let (_, next) = observe_for(phase, &obs, DEADLINE).await;
    assert!(matches!(next, Phase::Ready { ref digest, .. } if digest == "spec-policy"));
}

#[tokio::test(start_paused = true)]
async fn the_job_version_with_our_digest_not_yet_visible_keeps_verifying() {
    let phase = verifying(both());
    let mut obs = healthy();
    obs.job = Some(job(3, "job-old"));
    let (_, next) = step(&phase, &obs, Instant::now());
    assert!(matches!(
        next,
        Phase::Verifying {
            job_version: None,
            ..
        }
    ));
}

#[tokio::test(start_paused = true)]
async fn a_gate_without_proxy_signals_needs_no_proxy_probe() {
    let mut change = job_only();
    change.gate.check_ping = false;
    change.gate.expected_entries.clear();
    let phase = verifying(change);
    let mut obs = healthy();
    obs.proxy = None;
    let (_, next) = observe_for(phase, &obs, DEADLINE).await;
    assert_eq!(next.name(), "Ready");
}

// === verifying: failures → rollback ===

#[tokio::test(start_paused = true)]
async fn the_deadline_passing_while_unhealthy_reverts_the_job_and_restores_the_kv_entries() {
    let phase = verifying(both());
    let mut obs = healthy();
    obs.allocations = vec![alloc(4, "pending", false)];
    let (effects, next) = observe_for(phase, &obs, DEADLINE * 2).await;
    let w = writes(&effects);
    assert_eq!(w.len(), 2, "{w:?}");
    assert!(matches!(w[0], Effect::RestoreKv { .. }), "KV first: {w:?}");
    assert_eq!(
        w[1],
        &Effect::RevertJob {
            job_id: "traefik".into(),
            version: 3,
            enforce_prior_version: Some(4),
            target_digest: Some("job-old".into()),
        }
    );
    assert!(matches!(
        next,
        Phase::RollingBack {
            to_version: Some(3),
            ..
        }
    ));
    assert!(
        reason(&next).contains("not healthy within healthyDeadline (30s)"),
        "{}",
        reason(&next)
    );
    assert!(
        reason(&next).contains("Restarting: exit code 1"),
        "{}",
        reason(&next)
    );
}

#[tokio::test(start_paused = true)]
async fn the_deadline_is_not_hit_one_tick_early() {
    let phase = verifying(both());
    let mut obs = healthy();
    obs.proxy = Some(ProxyObservation {
        ping_ok: false,
        ..healthy_proxy()
    });
    let (_, next) = observe_for(phase, &obs, DEADLINE - VERIFY_POLL_INTERVAL).await;
    assert_eq!(next.name(), "Verifying");
}

#[tokio::test(start_paused = true)]
async fn the_restore_puts_previous_entries_back_and_deletes_keys_the_change_added() {
    let restore = kv_change().restore();
    assert_eq!(
        restore,
        Effect::RestoreKv {
            set: kv_change().previous,
            delete: vec!["po/traefik/http/middlewares/rl/rateLimit/average".into()],
        }
    );
}

#[tokio::test(start_paused = true)]
async fn a_failed_deployment_rolls_back_without_waiting_for_the_deadline() {
    let phase = verifying(both());
    let obs = with_deployment(
        healthy(),
        DeploymentState::Failed,
        "Failed due to unhealthy allocations",
    );
    let (effects, next) = step(&phase, &obs, Instant::now());
    assert_eq!(next.name(), "RollingBack");
    assert!(reason(&next).contains("Failed due to unhealthy allocations"));
    assert_eq!(writes(&effects).len(), 2);
}

#[tokio::test(start_paused = true)]
async fn a_cancelled_deployment_of_our_version_rolls_back() {
    let phase = verifying(job_only());
    let obs = with_deployment(
        healthy(),
        DeploymentState::Cancelled,
        "Cancelled because job is stopped",
    );
    let (effects, next) = step(&phase, &obs, Instant::now());
    assert!(reason(&next).contains("Cancelled because job is stopped"));
    assert!(matches!(
        writes(&effects)[..],
        [Effect::RevertJob { version: 3, .. }]
    ));
}

#[tokio::test(start_paused = true)]
async fn a_failed_allocation_of_our_version_rolls_back_immediately() {
    let phase = verifying(job_only());
    let mut obs = healthy();
    obs.allocations = vec![alloc(4, "failed", false)];
    let (_, next) = step(&phase, &obs, Instant::now());
    assert_eq!(next.name(), "RollingBack");
    assert!(
        reason(&next).contains("failed: Restarting: exit code 1"),
        "{}",
        reason(&next)
    );
}

#[tokio::test(start_paused = true)]
async fn a_route_probe_failing_until_the_deadline_rolls_back_naming_the_probe() {
    let phase = verifying(both());
    let mut obs = healthy();
    if let Some(p) = obs.proxy.as_mut() {
        p.probes[0] = ProbeOutcome {
            name: "demo.localhost/".into(),
            ok: false,
            detail: "got 502, want 200".into(),
        };
    }
    let (effects, next) = observe_for(phase, &obs, DEADLINE * 2).await;
    assert_eq!(next.name(), "RollingBack");
    assert!(reason(&next).contains("route probe demo.localhost/ failed: got 502, want 200"));
    assert_eq!(writes(&effects).len(), 2);
}

#[tokio::test(start_paused = true)]
async fn a_ping_failing_until_the_deadline_rolls_back() {
    let phase = verifying(job_only());
    let mut obs = healthy();
    obs.proxy = Some(ProxyObservation {
        ping_ok: false,
        ..healthy_proxy()
    });
    let (_, next) = observe_for(phase, &obs, DEADLINE * 2).await;
    assert!(reason(&next).contains("/ping"), "{}", reason(&next));
}

#[tokio::test(start_paused = true)]
async fn a_disabled_middleware_of_ours_rolls_back_as_soon_as_the_new_config_is_loaded() {
    let phase = verifying(policy_only());
    let mut obs = healthy();
    obs.job = Some(job(3, "job-old"));
    obs.allocations = vec![alloc(3, "running", true)];
    let mut mw = enabled("security-headers@consul", EntryKind::Middleware);
    mw.status = EntryStatus::Disabled;
    mw.errors = vec!["cannot parse CIDRs [10.0.0.300/8]".into()];
    obs.proxy = Some(ProxyObservation {
        rawdata: Some(vec![mw]),
        ..healthy_proxy()
    });
    let (effects, next) = step(&phase, &obs, Instant::now());
    assert_eq!(next.name(), "RollingBack");
    assert!(reason(&next).contains("middleware security-headers@consul is disabled"));
    assert!(reason(&next).contains("cannot parse CIDRs"));
    assert!(
        matches!(writes(&effects)[..], [Effect::RestoreKv { .. }]),
        "no job revert for policy"
    );
}

#[tokio::test(start_paused = true)]
async fn a_user_router_disabled_by_our_middleware_counts_as_ours() {
    let phase = verifying(policy_only());
    let mut obs = healthy();
    obs.job = Some(job(3, "job-old"));
    obs.allocations = vec![alloc(3, "running", true)];
    let mut router = enabled("demo@consulcatalog", EntryKind::Router);
    router.status = EntryStatus::Disabled;
    router.middlewares = vec!["security-headers@consul".into()];
    router.errors = vec!["middleware \"security-headers@consul\" does not exist".into()];
    let mw = enabled("security-headers@consul", EntryKind::Middleware);
    obs.proxy = Some(ProxyObservation {
        rawdata: Some(vec![mw, router]),
        ..healthy_proxy()
    });
    let (_, next) = step(&phase, &obs, Instant::now());
    assert!(
        reason(&next).contains("router demo@consulcatalog is disabled"),
        "{}",
        reason(&next)
    );
}

#[tokio::test(start_paused = true)]
async fn a_disabled_entry_seen_before_our_entries_load_keeps_verifying() {
    let mut change = policy_only();
    change.gate.expected_entries.push("rl@consul".into());
    let phase = verifying(change);
    let mut obs = healthy();
    obs.job = Some(job(3, "job-old"));
    obs.allocations = vec![alloc(3, "running", true)];
    let mut mw = enabled("security-headers@consul", EntryKind::Middleware);
    mw.status = EntryStatus::Disabled;
    obs.proxy = Some(ProxyObservation {
        rawdata: Some(vec![mw]),
        ..healthy_proxy()
    });
    let (_, next) = step(&phase, &obs, Instant::now());
    assert_eq!(next.name(), "Verifying");
}

#[tokio::test(start_paused = true)]
async fn foreign_disabled_routers_do_not_fail_our_gate() {
    let phase = verifying(policy_only());
    let mut obs = healthy();
    obs.job = Some(job(3, "job-old"));
    obs.allocations = vec![alloc(3, "running", true)];
    let mut foreign = enabled("broken@consulcatalog", EntryKind::Router);
    foreign.status = EntryStatus::Disabled;
    foreign.middlewares = vec!["theirs@consulcatalog".into()];
    if let Some(p) = obs.proxy.as_mut() {
        p.rawdata.get_or_insert_with(Vec::new).push(foreign);
    }
    let (_, next) = observe_for(phase, &obs, DEADLINE).await;
    assert_eq!(next.name(), "Ready");
}

#[tokio::test(start_paused = true)]
async fn a_stopped_job_fails_the_gate() {
    let phase = verifying(both());
    let mut obs = healthy();
    if let Some(j) = obs.job.as_mut() {
        j.stopped = true;
    }
    let (_, next) = step(&phase, &obs, Instant::now());
    assert!(reason(&next).contains("stopped"));
}

#[tokio::test(start_paused = true)]
async fn a_job_changed_underneath_the_rollout_fails_the_gate() {
    let phase = verifying(both());
    let (_, phase) = step(&phase, &healthy(), Instant::now());
    let mut obs = healthy();
    obs.job = Some(job(5, "someone-else"));
    let (_, next) = step(&phase, &obs, Instant::now());
    assert!(
        reason(&next).contains("changed underneath"),
        "{}",
        reason(&next)
    );
}

#[tokio::test(start_paused = true)]
async fn healthy_but_short_of_min_healthy_time_at_the_deadline_rolls_back() {
    let phase = verifying(both());
    let mut sick = healthy();
    sick.allocations = vec![alloc(4, "pending", false)];
    let (_, phase) = observe_for(phase, &sick, DEADLINE - Duration::from_secs(2)).await;
    let (_, next) = observe_for(phase, &healthy(), Duration::from_secs(3)).await;
    assert_eq!(next.name(), "RollingBack");
    assert!(
        reason(&next).contains("minHealthyTime"),
        "{}",
        reason(&next)
    );
}

// === observation errors never tear down ===

#[tokio::test(start_paused = true)]
async fn an_observation_error_during_verify_never_rolls_back_even_past_the_deadline() {
    let phase = verifying(both());
    let broken = Observation {
        error: Some("nomad: connection refused".into()),
        ..Observation::default()
    };
    let (effects, next) = observe_for(phase, &broken, DEADLINE * 3).await;
    assert!(writes(&effects).is_empty());
    assert!(
        matches!(&next, Phase::Verifying { waiting_for, .. } if waiting_for.contains("connection refused"))
    );
    assert_eq!(effects, vec![Effect::RequeueAfter(VERIFY_POLL_INTERVAL)]);
}

#[tokio::test(start_paused = true)]
async fn health_seen_before_an_outage_must_hold_again_after_it() {
    let phase = verifying(both());
    let (_, phase) = step(&phase, &healthy(), Instant::now());
    advance(Duration::from_secs(3)).await;
    let broken = Observation {
        error: Some("timeout".into()),
        ..Observation::default()
    };
    let (_, phase) = step(&phase, &broken, Instant::now());
    assert!(matches!(
        phase,
        Phase::Verifying {
            blind_since: Some(_),
            ..
        }
    ));
    advance(Duration::from_secs(2)).await;
    let (_, phase) = step(&phase, &healthy(), Instant::now());
    assert_eq!(
        phase.name(),
        "Verifying",
        "nobody watched it hold during the outage"
    );
    advance(MIN_HEALTHY).await;
    let (_, phase) = step(&phase, &healthy(), Instant::now());
    assert_eq!(phase.name(), "Ready");
}

#[tokio::test(start_paused = true)]
async fn blind_time_does_not_count_against_the_deadline() {
    let phase = verifying(both());
    let broken = Observation {
        error: Some("consul: connection refused".into()),
        ..Observation::default()
    };
    // An outage longer than the whole deadline.
    let (_, phase) = observe_for(phase, &broken, DEADLINE + Duration::from_secs(10)).await;
    let mut sick = healthy();
    sick.allocations = vec![alloc(4, "pending", false)];
    let (_, phase) = step(&phase, &sick, Instant::now());
    assert_eq!(
        phase.name(),
        "Verifying",
        "the outage did not use up the deadline"
    );
    // Recovering within what is left of the deadline converges.
    advance(Duration::from_secs(5)).await;
    let (_, next) = observe_for(phase.clone(), &healthy(), DEADLINE).await;
    assert_eq!(next.name(), "Ready");
    // Staying unhealthy for the rest of it still rolls back.
    let (_, next) = observe_for(phase, &sick, DEADLINE * 2).await;
    assert_eq!(next.name(), "RollingBack");
}

// === rolling back ===

#[tokio::test(start_paused = true)]
async fn a_completed_rollback_reports_rolled_back_with_reason_and_duration() {
    let phase = verifying(both());
    let mut sick = healthy();
    sick.allocations = vec![alloc(4, "failed", false)];
    advance(Duration::from_secs(2)).await;
    let (effects, phase) = step(&phase, &sick, Instant::now());
    advance(Duration::from_millis(300)).await;
    let (after, next) = step(&phase, &applied(writes(&effects).len()), Instant::now());
    assert!(after.is_empty());
    match next {
        Phase::RolledBack {
            digest,
            reason,
            duration,
            ..
        } => {
            assert_eq!(digest, "spec-new");
            assert!(reason.contains("allocation"), "{reason}");
            assert_eq!(duration, Duration::from_millis(2300));
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test(start_paused = true)]
async fn a_rollback_interrupted_by_a_retryable_error_retries_only_what_is_left() {
    let phase = verifying(both());
    let mut sick = healthy();
    sick.allocations = vec![alloc(4, "failed", false)];
    let (_, phase) = step(&phase, &sick, Instant::now());
    let partial = Observation {
        applied: Some(ApplyOutcome {
            completed: 1,
            error: Some(ApplyError {
                message: "nomad: 503".into(),
                retryable: true,
            }),
        }),
        ..Observation::default()
    };
    let (effects, phase) = step(&phase, &partial, Instant::now());
    assert!(matches!(
        writes(&effects)[..],
        [Effect::RevertJob { version: 3, .. }]
    ));
    assert_eq!(phase.name(), "RollingBack");
    // Retryable failures keep trying well past any deadline: giving up would leave it broken.
    advance(DEADLINE * 10).await;
    let still = Observation {
        applied: Some(ApplyOutcome {
            completed: 0,
            error: Some(ApplyError {
                message: "nomad: 503".into(),
                retryable: true,
            }),
        }),
        ..Observation::default()
    };
    let (effects, phase) = step(&phase, &still, Instant::now());
    assert_eq!(writes(&effects).len(), 1);
    let (_, done) = step(&phase, &applied(1), Instant::now());
    assert_eq!(done.name(), "RolledBack");
}

#[tokio::test(start_paused = true)]
async fn a_rollback_refused_by_nomad_reports_degraded_with_both_reasons() {
    let phase = verifying(job_only());
    let sick = with_deployment(
        healthy(),
        DeploymentState::Failed,
        "Failed due to progress deadline",
    );
    let (_, phase) = step(&phase, &sick, Instant::now());
    let refused = Observation {
        applied: Some(ApplyOutcome {
            completed: 0,
            error: Some(ApplyError {
                message: "enforcing version 4 failed".into(),
                retryable: false,
            }),
        }),
        ..Observation::default()
    };
    let (effects, next) = step(&phase, &refused, Instant::now());
    assert!(effects.is_empty());
    assert_eq!(next.name(), "Degraded");
    assert!(reason(&next).contains("progress deadline"));
    assert!(reason(&next).contains("rollback failed: enforcing version 4 failed"));
    assert!(matches!(next, Phase::Degraded { held: false, .. }));
}

#[tokio::test(start_paused = true)]
async fn rollback_effects_the_loop_did_not_run_are_issued_again() {
    let phase = verifying(both());
    let sick = with_deployment(healthy(), DeploymentState::Failed, "Failed");
    let (first, phase) = step(&phase, &sick, Instant::now());
    let (again, _) = step(&phase, &Observation::default(), Instant::now());
    assert_eq!(writes(&first), writes(&again));
}

#[tokio::test(start_paused = true)]
async fn the_revert_enforces_the_version_we_registered_even_when_the_job_is_not_visible() {
    let phase = verifying(job_only());
    let (_, phase) = step(&phase, &healthy(), Instant::now()); // learns version 4
    let mut gone = healthy();
    gone.job = Some(job(4, "job-new"));
    gone.allocations = vec![alloc(4, "lost", false)];
    let (effects, _) = step(&phase, &gone, Instant::now());
    assert!(matches!(
        writes(&effects)[..],
        [Effect::RevertJob {
            enforce_prior_version: Some(4),
            version: 3,
            ..
        }]
    ));
}

#[tokio::test(start_paused = true)]
async fn a_first_job_version_with_nothing_to_revert_to_is_left_in_place_with_its_policy_tree() {
    let mut change = both();
    if let Some(j) = change.job.as_mut() {
        j.rollback_to = None;
        j.enforce_index = 0;
    }
    let phase = verifying(change);
    let mut sick = healthy();
    sick.allocations = vec![alloc(4, "failed", false)];
    let (effects, next) = step(&phase, &sick, Instant::now());
    assert_eq!(next.name(), "Degraded");
    assert!(
        reason(&next).contains("no earlier version of job \"traefik\" passed the gate"),
        "{}",
        reason(&next)
    );
    // The job stays, so the KV tree its entry points reference stays too: deleting it alone
    // would break every router of the running proxy.
    assert!(writes(&effects).is_empty(), "{effects:?}");
}

// === hold ===

#[tokio::test(start_paused = true)]
async fn on_failure_hold_leaves_the_failed_version_in_place_and_reports_degraded() {
    let mut change = both();
    change.gate.on_failure = OnFailure::Hold;
    let phase = verifying(change);
    let sick = with_deployment(
        healthy(),
        DeploymentState::Failed,
        "Failed due to unhealthy allocations",
    );
    let (effects, next) = step(&phase, &sick, Instant::now());
    assert!(effects.is_empty(), "hold writes nothing: {effects:?}");
    match next {
        Phase::Degraded {
            digest,
            reason,
            held,
            ..
        } => {
            assert!(held, "left in place on purpose");
            assert_eq!(digest, "spec-new");
            assert!(reason.contains("onFailure: hold"));
            assert!(reason.contains("unhealthy allocations"));
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test(start_paused = true)]
async fn on_failure_hold_also_holds_when_the_deadline_passes() {
    let mut change = policy_only();
    change.gate.on_failure = OnFailure::Hold;
    let phase = verifying(change);
    let mut obs = healthy();
    obs.job = Some(job(3, "job-old"));
    obs.allocations = vec![alloc(3, "running", true)];
    obs.proxy = Some(ProxyObservation {
        ping_ok: false,
        ..healthy_proxy()
    });
    let (effects, next) = observe_for(phase, &obs, DEADLINE * 2).await;
    assert!(writes(&effects).is_empty());
    assert_eq!(next.name(), "Degraded");
}

// === allocations Nomad leaves behind (review #3) ===

#[tokio::test(start_paused = true)]
async fn a_terminal_allocation_of_an_old_version_does_not_hold_the_gate() {
    // Nomad keeps DesiredStatus "run" on failed and complete allocations until GC.
    let phase = verifying(both());
    let mut obs = healthy();
    obs.allocations.push(alloc(3, "failed", false));
    obs.allocations.push(AllocObservation {
        id: "c0ffee00-0000-0000-0000-000000000002".into(),
        ..alloc(2, "complete", false)
    });
    let (_, next) = observe_for(phase, &obs, MIN_HEALTHY + Duration::from_secs(1)).await;
    assert_eq!(next.name(), "Ready", "{next:?}");
}

#[tokio::test(start_paused = true)]
async fn a_live_allocation_of_an_old_version_still_holds_the_gate() {
    let phase = verifying(both());
    let mut obs = healthy();
    obs.allocations.push(alloc(3, "running", true));
    let (_, next) = step(&phase, &obs, Instant::now());
    assert_eq!(next.name(), "Verifying");
    assert!(
        matches!(&next, Phase::Verifying { waiting_for, .. } if waiting_for.contains("still runs job version 3"))
    );
}

#[tokio::test(start_paused = true)]
async fn an_old_failed_allocation_of_the_running_version_does_not_fail_a_policy_change() {
    let phase = verifying(policy_only());
    let mut obs = healthy();
    obs.job = Some(job(3, "job-old"));
    obs.allocations = vec![
        alloc(3, "running", true),
        AllocObservation {
            id: "dead0000-0000-0000-0000-000000000003".into(),
            ..alloc(3, "failed", false)
        },
    ];
    let (_, next) = observe_for(phase, &obs, MIN_HEALTHY + Duration::from_secs(1)).await;
    assert_eq!(next.name(), "Ready", "{next:?}");
}

// === where a rollback goes (review #6) ===

#[tokio::test(start_paused = true)]
async fn a_rollback_skips_the_revert_when_the_job_already_runs_the_target_version() {
    // After a restart, the revert may already have landed: reverting again would only make
    // another version with the same content.
    let phase = verifying(both());
    let (_, phase) = step(&phase, &healthy(), Instant::now()); // learns version 4
    let mut obs = healthy();
    obs.job = Some(job(5, "job-old"));
    let (effects, next) = step(&phase, &obs, Instant::now());
    assert!(
        matches!(writes(&effects)[..], [Effect::RestoreKv { .. }]),
        "{effects:?}"
    );
    assert_eq!(next.name(), "RollingBack");
}

#[tokio::test(start_paused = true)]
async fn a_verify_only_rollout_that_fails_writes_nothing_and_reports_degraded() {
    let change = Change {
        kv: None,
        job: None,
        ..policy_only()
    };
    let (effects, phase) = step(&Phase::Idle, &planned(change), Instant::now());
    assert!(writes(&effects).is_empty());
    assert_eq!(
        phase.name(),
        "Verifying",
        "nothing to apply: straight to the gate"
    );
    let mut sick = healthy();
    sick.job = Some(job(3, "job-old"));
    sick.allocations = vec![alloc(3, "pending", false)];
    let (effects, next) = observe_for(phase, &sick, DEADLINE * 2).await;
    assert!(writes(&effects).is_empty());
    assert_eq!(next.name(), "Degraded");
    assert!(reason(&next).contains("left in place"), "{}", reason(&next));
}

#[tokio::test(start_paused = true)]
async fn the_failure_is_remembered_with_the_retry_nonce_of_the_rolled_out_document() {
    let change = Change {
        retry_nonce: Some("3".into()),
        ..both()
    };
    let phase = verifying(change);
    let sick = with_deployment(healthy(), DeploymentState::Failed, "Failed");
    let (effects, phase) = step(&phase, &sick, Instant::now());
    let (_, next) = step(&phase, &applied(writes(&effects).len()), Instant::now());
    assert!(
        matches!(&next, Phase::RolledBack { retry_nonce: Some(n), .. } if n == "3"),
        "{next:?}"
    );
}

// === the journal: a restarted operator resumes (review #1) ===

fn roundtrip(journal: &Journal) -> Journal {
    serde_json::from_slice(&serde_json::to_vec(journal).unwrap()).unwrap()
}

#[tokio::test(start_paused = true)]
async fn a_resumed_verification_starts_a_fresh_deadline_and_keeps_the_rollouts_age() {
    let phase = verifying(both());
    advance(Duration::from_secs(10)).await;
    let wall = SystemTime::now();
    let journal = roundtrip(&phase.journal(Instant::now(), wall).unwrap());
    assert_eq!(journal.elapsed_ms, 10_000);

    // Another process, 5 s later on the wall clock.
    advance(Duration::from_secs(100)).await;
    let resumed = Phase::resume(journal, Instant::now(), wall + Duration::from_secs(5));
    match &resumed {
        Phase::Verifying {
            change,
            started,
            deadline,
            healthy_since,
            ..
        } => {
            assert_eq!(change, &both());
            assert_eq!(*deadline, Instant::now() + DEADLINE);
            assert_eq!(
                *healthy_since, None,
                "health must hold again under our eyes"
            );
            assert_eq!(Instant::now() - *started, Duration::from_secs(15));
        }
        other => panic!("{other:?}"),
    }
    let (_, next) = observe_for(resumed, &healthy(), DEADLINE).await;
    assert_eq!(next.name(), "Ready");
}

#[tokio::test(start_paused = true)]
async fn a_resumed_rollback_issues_the_rollback_effects_not_yet_confirmed() {
    let phase = verifying(both());
    let sick = with_deployment(healthy(), DeploymentState::Failed, "Failed");
    let (effects, rolling) = step(&phase, &sick, Instant::now());
    let journal = roundtrip(&rolling.journal(Instant::now(), SystemTime::now()).unwrap());
    let resumed = Phase::resume(journal, Instant::now(), SystemTime::now());
    assert_eq!(resumed.name(), "RollingBack");
    let (again, _) = step(&resumed, &Observation::default(), Instant::now());
    assert_eq!(writes(&again), writes(&effects));
}

#[tokio::test(start_paused = true)]
async fn a_resumed_apply_issues_every_effect_again() {
    let (effects, applying) = step(&Phase::Idle, &planned(both()), Instant::now());
    let journal = roundtrip(&applying.journal(Instant::now(), SystemTime::now()).unwrap());
    let resumed = Phase::resume(journal, Instant::now(), SystemTime::now());
    let (again, _) = step(&resumed, &Observation::default(), Instant::now());
    assert_eq!(writes(&again), writes(&effects));
}

#[tokio::test(start_paused = true)]
async fn a_machine_at_rest_has_no_journal() {
    let ready = Phase::Ready {
        digest: "d".into(),
        proxy: ProxyKind::Traefik,
        duration: Duration::ZERO,
        job: None,
    };
    assert!(ready.journal(Instant::now(), SystemTime::now()).is_none());
    assert!(
        Phase::Idle
            .journal(Instant::now(), SystemTime::now())
            .is_none()
    );
}

// === journals read back from KV are checked (sec #6) ===

fn journal_of(change: Change) -> Journal {
    let mut change = change;
    if let Some(job) = &mut change.job {
        job.job["Meta"]["proxy-operator/owner"] = serde_json::json!("po");
    }
    let (effects, _) = begin(change.clone(), Instant::now());
    Journal {
        change,
        stage: Stage::Applying {
            pending: effects.into_iter().filter(Effect::is_write).collect(),
            kv_written: false,
            job_registered: false,
        },
        elapsed_ms: 0,
        written_at_ms: 0,
    }
}

#[test]
fn a_journal_this_operator_wrote_passes_its_check() {
    journal_of(both()).check("po", "po/traefik/").unwrap();
}

#[test]
fn a_journal_writing_outside_the_policy_tree_or_for_another_owner_is_rejected() {
    let mut outside = journal_of(policy_only());
    if let Stage::Applying { pending, .. } = &mut outside.stage {
        pending.push(Effect::WriteKv {
            set: vec![("po/config".into(), "paused: true".into())],
            delete: Vec::new(),
        });
    }
    let err = outside.check("po", "po/traefik/").unwrap_err();
    assert!(err.to_string().contains("po/config"), "{err}");

    let err = journal_of(both())
        .check("someone-else", "po/traefik/")
        .unwrap_err();
    assert!(err.to_string().contains("owner"), "{err}");

    let mut huge = journal_of(job_only());
    huge.change.gate.min_healthy_time = Duration::MAX;
    assert!(huge.check("po", "po/traefik/").is_err());
}

#[tokio::test(start_paused = true)]
async fn resuming_a_journal_with_an_enormous_deadline_does_not_overflow_the_clock() {
    let mut journal = journal_of(job_only());
    journal.change.gate.healthy_deadline = Duration::MAX;
    journal.stage = Stage::Verifying { job_version: None };
    let phase = Phase::resume(journal, Instant::now(), SystemTime::now());
    assert_eq!(phase.name(), "Verifying");
    advance(Duration::from_secs(3600)).await;
    // Stepping compares against the (capped) deadline without overflowing.
    let (_, next) = step(&phase, &Observation::default(), Instant::now());
    assert_eq!(
        next.name(),
        "RollingBack",
        "the job is gone: the gate fails"
    );
}

#[test]
fn a_gate_journaled_before_gates_named_their_proxy_reads_as_traefik() {
    let mut value = serde_json::to_value(gate()).unwrap();
    value.as_object_mut().unwrap().remove("proxy");
    let read: Gate = serde_json::from_value(value).unwrap();
    assert_eq!(read.proxy, crate::spec::ProxyKind::Traefik);
    assert_eq!(read, gate());
}

// === fail fast (issue 13): the first exit of a task of the new version fails the gate ===

/// An allocation of the new version whose task exited once and was restarted by Nomad.
fn restarted(create_index: u64) -> AllocObservation {
    AllocObservation {
        create_index,
        exited: Some(
            "task traefik running: Started: Task started by client; Terminated: Exit Code: 1, Exit Message: \"listen tcp :443: bind: address already in use\"".into(),
        ),
        ..alloc(4, "running", true)
    }
}

#[tokio::test(start_paused = true)]
async fn the_first_restart_of_a_task_of_the_new_version_rolls_back_at_once_naming_the_task_event() {
    let phase = verifying(both());
    // The deployment is still running: Nomad would only fail it after its restart attempts.
    let obs = Observation {
        allocations: vec![restarted(60)],
        ..with_deployment(healthy(), DeploymentState::Running, "Deployment is running")
    };
    let (effects, next) = step(&phase, &obs, Instant::now());
    assert_eq!(next.name(), "RollingBack", "{next:?}");
    let why = reason(&next);
    assert!(why.contains("address already in use"), "{why}");
    assert!(why.contains("job version 4"), "{why}");
    assert!(
        writes(&effects)
            .iter()
            .any(|e| matches!(e, Effect::RevertJob { version: 3, .. })),
        "{effects:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn an_exit_fails_the_gate_before_any_time_passes_not_after_the_restart_delays() {
    let phase = verifying(job_only());
    let started = Instant::now();
    let obs = Observation {
        allocations: vec![restarted(60)],
        ..healthy()
    };
    let (_, next) = observe_for(phase, &obs, DEADLINE).await;
    assert_eq!(next.name(), "RollingBack");
    assert_eq!(Instant::now(), started, "decided on the first observation");
}

#[tokio::test(start_paused = true)]
async fn restarts_an_allocation_carries_from_before_an_in_place_update_do_not_fail_the_gate() {
    // Created (index 40) before our version was registered (JobModifyIndex 50): its restarts
    // happened under the old version.
    let phase = verifying(job_only());
    let obs = Observation {
        allocations: vec![restarted(40)],
        ..healthy()
    };
    let (_, next) = observe_for(phase, &obs, MIN_HEALTHY + Duration::from_secs(1)).await;
    assert_eq!(next.name(), "Ready", "{next:?}");
}

#[tokio::test(start_paused = true)]
async fn a_task_restart_during_a_policy_only_change_is_left_to_nomads_restart_policy() {
    let phase = verifying(policy_only());
    let obs = Observation {
        job: Some(job(4, "job-old")),
        allocations: vec![restarted(60)],
        ..healthy()
    };
    let (_, next) = observe_for(phase, &obs, MIN_HEALTHY + Duration::from_secs(1)).await;
    assert_eq!(next.name(), "Ready", "{next:?}");
}

/// The handover of a Traefik structural change: the rollback paths before and after the switch,
/// operator restarts at each stage, forged journals.
mod handover;
