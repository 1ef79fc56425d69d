//! The status builder: what a user reads after each kind of pass.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::*;
use crate::rollout::{Change, Gate, OnFailure};
use crate::spec::status::CertificateWarningKind;

fn at(secs: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(secs)
}

fn pass(report: Report<'_>) -> Pass<'_> {
    Pass {
        observed_index: 42,
        observed_digest: Some("digest-a"),
        proxy: Some(ProxyKind::Traefik),
        job_version: Some(3),
        good_job: None,
        warnings: &[],
        report,
    }
}

fn change() -> Change {
    Change {
        digest: "digest-a".into(),
        retry_nonce: None,
        job_id: "traefik".into(),
        kv: None,
        job: None,
        gate: Gate {
            proxy: crate::spec::ProxyKind::Traefik,
            healthy_deadline: Duration::from_secs(30),
            min_healthy_time: Duration::from_secs(1),
            on_failure: OnFailure::Rollback,
            check_ping: true,
            expected_entries: Vec::new(),
            proxy_api: None,
            probes: Vec::new(),
        },
    }
}

fn rolled_back() -> Rollout {
    Rollout::RolledBack {
        digest: "digest-a".into(),
        proxy: ProxyKind::Traefik,
        reason: "route probe demo.localhost/ failed: got 404, want 200".into(),
        duration: Duration::from_millis(1500),
        retry_nonce: None,
    }
}

fn cond_of<'a>(s: &'a ProxyStatus, t: &str) -> &'a Condition {
    s.condition(t).unwrap()
}

#[test]
fn rfc3339_formats_utc_dates_including_leap_days() {
    assert_eq!(rfc3339(at(0)), "1970-01-01T00:00:00Z");
    assert_eq!(rfc3339(at(951_782_400)), "2000-02-29T00:00:00Z");
    assert_eq!(rfc3339(at(1_714_564_800 + 3661)), "2024-05-01T13:01:01Z");
}

/// The status after digest-a passed its gate as job version 3.
fn verified() -> ProxyStatus {
    let done = Rollout::Ready {
        digest: "digest-a".into(),
        proxy: ProxyKind::Traefik,
        duration: Duration::from_secs(1),
        job: Some(crate::rollout::JobRef {
            job_id: "traefik".into(),
            version: 3,
            job_digest: None,
        }),
    };
    next(
        &ProxyStatus::default(),
        &pass(Report::Rollout(&done)),
        at(50),
    )
}

#[test]
fn a_converged_pass_is_ready_with_the_running_job_version() {
    let s = next(&verified(), &pass(Report::Converged), at(100));
    assert_eq!(s.phase, Phase::Ready);
    assert_eq!(s.observed_index, 42);
    assert_eq!(s.observed_digest.as_deref(), Some("digest-a"));
    assert_eq!(s.last_applied_digest.as_deref(), Some("digest-a"));
    assert_eq!(s.job_version, Some(3));
    assert_eq!(cond_of(&s, CONDITION_READY).status, ConditionStatus::True);
    assert_eq!(cond_of(&s, CONDITION_VALID).status, ConditionStatus::True);
}

#[test]
fn a_converged_pass_never_promotes_a_digest_or_job_that_did_not_pass_the_gate() {
    let s = next(&ProxyStatus::default(), &pass(Report::Converged), at(100));
    assert_eq!(s.last_applied_digest, None);
    assert_eq!(
        s.last_good_job, None,
        "no rollback target from a mere observation"
    );
}

#[test]
fn an_unchanged_pass_produces_no_difference_so_nothing_is_written() {
    let first = next(&ProxyStatus::default(), &pass(Report::Converged), at(100));
    let second = next(&first, &pass(Report::Converged), at(200));
    assert!(!differs(&first, &second));
    assert!(differs(&ProxyStatus::default(), &first));
}

#[test]
fn condition_transition_time_only_moves_when_the_status_flips() {
    let ready = next(&verified(), &pass(Report::Converged), at(100));
    let again = next(&ready, &pass(Report::Converged), at(200));
    assert_eq!(
        cond_of(&again, CONDITION_READY).last_transition_time,
        rfc3339(at(50)),
        "Ready since the rollout passed at 50"
    );
    let failed = next(&again, &pass(Report::Rollout(&rolled_back())), at(300));
    assert_eq!(
        cond_of(&failed, CONDITION_READY).last_transition_time,
        rfc3339(at(300))
    );
}

#[test]
fn an_invalid_document_lists_every_error_and_keeps_what_was_applied() {
    let ready = next(&verified(), &pass(Report::Converged), at(100));
    let errors = vec![
        FieldError::new(
            "spec.middlewares.ipAllowList.sourceRange[0]",
            "\"10.0.0.300/8\" is not a CIDR",
        ),
        FieldError::new("spec.entryPoints.web.address", "port 99999 is out of range"),
        FieldError::new("spec.proxy", "unknown value \"nginx\""),
    ];
    let mut p = pass(Report::Invalid { errors: &errors });
    p.observed_digest = None;
    p.observed_index = 43;
    let s = next(&ready, &p, at(200));
    assert_eq!(s.phase, Phase::Invalid);
    assert_eq!(s.validation_errors, errors);
    assert_eq!(s.observed_index, 43);
    assert_eq!(s.observed_digest, None);
    assert_eq!(
        s.last_applied_digest.as_deref(),
        Some("digest-a"),
        "what runs is unchanged"
    );
    assert_eq!(cond_of(&s, CONDITION_VALID).reason, "ValidationFailed");
    assert!(
        cond_of(&s, CONDITION_VALID)
            .message
            .contains("3 validation error(s)")
    );
    let ready = cond_of(&s, CONDITION_READY);
    assert_eq!(ready.status, ConditionStatus::False);
    assert!(
        ready.message.contains("keeps running the last applied"),
        "{}",
        ready.message
    );
}

#[test]
fn an_invalid_document_after_a_failed_observation_does_not_keep_saying_it_retries() {
    let failed = next(
        &verified(),
        &pass(Report::ObservationFailed {
            error: "failed to read the users key: connection refused",
            retry_in: Duration::from_secs(4),
            terminal: false,
        }),
        at(100),
    );
    assert_eq!(
        cond_of(&failed, CONDITION_READY).reason,
        "ObservationFailed"
    );
    let errors = vec![FieldError::new("spec.proxy", "bad")];
    let s = next(&failed, &pass(Report::Invalid { errors: &errors }), at(200));
    let ready = cond_of(&s, CONDITION_READY);
    assert_eq!(ready.reason, "Invalid");
    assert!(!ready.message.contains("retrying"), "{}", ready.message);
}

#[test]
fn fixing_an_invalid_document_clears_its_errors() {
    let errors = vec![FieldError::new("spec.proxy", "bad")];
    let invalid = next(
        &ProxyStatus::default(),
        &pass(Report::Invalid { errors: &errors }),
        at(1),
    );
    let fixed = next(&invalid, &pass(Report::Converged), at(2));
    assert!(fixed.validation_errors.is_empty());
    assert_eq!(fixed.phase, Phase::Ready);
}

#[test]
fn a_missing_config_key_keeps_the_phase_and_says_so() {
    let ready = next(&verified(), &pass(Report::Converged), at(100));
    let mut p = pass(Report::NoConfig {
        reason: "the config key proxy-operator/config is absent",
    });
    p.observed_digest = None;
    p.observed_index = 0;
    let s = next(&ready, &p, at(200));
    assert_eq!(s.phase, Phase::Ready);
    assert_eq!(s.observed_digest.as_deref(), Some("digest-a"));
    let c = cond_of(&s, CONDITION_VALID);
    assert_eq!(c.reason, "ConfigMissing");
    assert!(c.message.contains("left as it is"));
}

#[test]
fn observation_failures_count_up_with_a_next_retry_time_and_clear_on_success() {
    let ready = next(&verified(), &pass(Report::Converged), at(100));
    let report = Report::ObservationFailed {
        error: "failed to read the job: connection refused",
        retry_in: Duration::from_secs(4),
        terminal: false,
    };
    let one = next(&ready, &pass(report), at(200));
    let two = next(&one, &pass(report), at(204));
    assert_eq!(two.phase, Phase::Stalled);
    assert_eq!(two.consecutive_failures, 2);
    assert_eq!(
        two.next_retry_at.as_deref(),
        Some(rfc3339(at(208)).as_str())
    );
    assert!(
        cond_of(&two, CONDITION_READY)
            .message
            .contains("connection refused")
    );
    let back = next(&two, &pass(Report::Converged), at(210));
    assert_eq!(back.consecutive_failures, 0);
    assert_eq!(back.next_retry_at, None);
    assert_eq!(back.phase, Phase::Ready);
}

#[test]
fn a_foreign_job_is_stalled_with_the_reason() {
    let s = next(
        &ProxyStatus::default(),
        &pass(Report::Stalled {
            reason: "job \"traefik\" exists without the proxy-operator/owner Meta",
        }),
        at(1),
    );
    assert_eq!(s.phase, Phase::Stalled);
    assert_eq!(cond_of(&s, CONDITION_READY).reason, "ForeignJob");
    assert!(cond_of(&s, CONDITION_READY).message.contains("owner Meta"));
}

#[test]
fn a_paused_spec_reports_paused() {
    let s = next(&ProxyStatus::default(), &pass(Report::Paused), at(1));
    assert_eq!(s.phase, Phase::Paused);
    assert_eq!(cond_of(&s, CONDITION_PROGRESSING).reason, "Paused");
}

#[test]
fn a_rollout_in_flight_is_progressing_with_the_attempted_digest() {
    let phase = Rollout::Verifying {
        change: change(),
        started: tokio::time::Instant::now(),
        deadline: tokio::time::Instant::now(),
        healthy_since: None,
        job_version: None,
        waiting_for: "deployment 5456bd7a: Deployment is running".into(),
        blind_since: None,
    };
    let s = next(
        &ProxyStatus::default(),
        &pass(Report::Rollout(&phase)),
        at(1),
    );
    assert_eq!(s.phase, Phase::Progressing);
    assert_eq!(s.last_attempted_digest.as_deref(), Some("digest-a"));
    assert_eq!(s.last_applied_digest, None);
    assert!(
        cond_of(&s, CONDITION_PROGRESSING)
            .message
            .contains("Deployment is running")
    );
}

fn handover_change() -> Change {
    let mut c = change();
    c.job_id = "traefik-b".into();
    c.job = Some(crate::rollout::JobChange {
        job_id: "traefik-b".into(),
        job: serde_json::json!({"ID": "traefik-b"}),
        job_digest: "job-b".into(),
        enforce_index: 0,
        rollback_to: None,
        handover: Some(crate::rollout::Handover {
            from_job: "traefik".into(),
            from_version: 3,
        }),
    });
    c
}

fn progress_message(phase: &Rollout) -> String {
    let s = next(
        &ProxyStatus::default(),
        &pass(Report::Rollout(phase)),
        at(1),
    );
    assert_eq!(s.phase, Phase::Progressing);
    cond_of(&s, CONDITION_PROGRESSING).message.clone()
}

#[test]
fn each_stage_of_a_handover_says_which_slot_serves() {
    let applying = |switch, job_registered| Rollout::Applying {
        change: handover_change(),
        started: tokio::time::Instant::now(),
        pending: Vec::new(),
        kv_written: true,
        job_registered,
        switch,
    };
    let starting = progress_message(&applying(None, false));
    assert!(
        starting.contains("traefik-b starts next to traefik, which serves until"),
        "{starting}"
    );
    let stopping = progress_message(&applying(
        Some(crate::rollout::Switch::Stopping { job_version: 0 }),
        true,
    ));
    assert!(
        stopping.contains("traefik-b passed the health gate; stopping traefik"),
        "{stopping}"
    );
}

#[test]
fn a_handover_whose_old_slot_drains_is_ready_on_the_new_slot_and_still_progressing() {
    let draining = Rollout::Applying {
        change: handover_change(),
        started: tokio::time::Instant::now(),
        pending: Vec::new(),
        kv_written: true,
        job_registered: true,
        switch: Some(crate::rollout::Switch::Draining {
            job_version: 7,
            deadline: tokio::time::Instant::now(),
        }),
    };
    let s = next(
        &ProxyStatus::default(),
        &pass(Report::Rollout(&draining)),
        at(1),
    );
    assert_eq!(s.phase, Phase::Ready, "the new slot passed and serves");
    assert_eq!(s.last_applied_digest.as_deref(), Some("digest-a"));
    assert_eq!(
        s.last_good_job,
        Some(crate::rollout::JobRef {
            job_id: "traefik-b".into(),
            version: 7,
            job_digest: Some("job-b".into()),
        }),
        "a later rollback returns to the slot that passed"
    );
    let progressing = cond_of(&s, CONDITION_PROGRESSING);
    assert_eq!(
        progressing.status,
        ConditionStatus::True,
        "the drain still holds the next change"
    );
    assert_eq!(progressing.reason, "Draining");
    assert!(
        progressing
            .message
            .contains("traefik-b serves; traefik drains"),
        "{}",
        progressing.message
    );
    assert!(
        s.history.is_empty(),
        "history is written when the drain ends"
    );
}

#[test]
fn a_successful_rollout_records_history_and_the_applied_digest() {
    let done = Rollout::Ready {
        digest: "digest-a".into(),
        proxy: ProxyKind::Traefik,
        duration: Duration::from_secs(12),
        job: Some(crate::rollout::JobRef {
            job_id: "traefik".into(),
            version: 4,
            job_digest: Some("job-a".into()),
        }),
    };
    let s = next(
        &ProxyStatus::default(),
        &pass(Report::Rollout(&done)),
        at(1000),
    );
    assert_eq!(s.phase, Phase::Ready);
    assert_eq!(s.last_applied_digest.as_deref(), Some("digest-a"));
    assert_eq!(s.job_version, Some(4));
    assert_eq!(
        s.last_good_job
            .as_ref()
            .map(|j| (j.job_id.as_str(), j.version)),
        Some(("traefik", 4))
    );
    assert_eq!(s.history.len(), 1);
    assert_eq!(s.history[0].outcome, Outcome::Succeeded);
    assert_eq!(s.history[0].duration_ms, 12_000);
    assert_eq!(s.history[0].started_at, rfc3339(at(988)));
}

#[test]
fn history_names_the_proxy_of_the_rollout_not_of_the_document_read_at_its_end() {
    // A switch to Caddy failed and was rolled back; by the pass that records it the document
    // may already say something else. The entry names the proxy the rollout ran.
    let failed_switch = Rollout::RolledBack {
        digest: "digest-a".into(),
        proxy: ProxyKind::Caddy,
        reason: "caddy admin API did not answer".into(),
        duration: Duration::from_secs(3),
        retry_nonce: None,
    };
    let s = next(
        &ProxyStatus::default(),
        &pass(Report::Rollout(&failed_switch)),
        at(1000),
    );
    assert_eq!(s.history.len(), 1);
    assert_eq!(s.history[0].proxy, Some(ProxyKind::Caddy));
    let json = serde_json::to_value(&s.history[0]).unwrap();
    assert_eq!(json["proxy"], "caddy");
    // Entries written before the field existed still read.
    let old: HistoryEntry = serde_json::from_value(serde_json::json!({
        "digest": "d", "outcome": "Succeeded", "startedAt": "2026-01-01T00:00:00Z",
        "durationMs": 1, "reason": "r"
    }))
    .unwrap();
    assert_eq!(old.proxy, None);
}

#[test]
fn a_rolled_back_rollout_remembers_the_failed_digest_and_nonce_with_the_reason() {
    let phase = match rolled_back() {
        Rollout::RolledBack {
            digest,
            proxy,
            reason,
            duration,
            ..
        } => Rollout::RolledBack {
            digest,
            proxy,
            reason,
            duration,
            retry_nonce: Some("7".into()),
        },
        other => other,
    };
    let p = pass(Report::Rollout(&phase));
    let ready = next(&verified(), &pass(Report::Converged), at(1));
    let s = next(&ready, &p, at(10));
    assert_eq!(s.phase, Phase::RolledBack);
    assert_eq!(s.failed_digest.as_deref(), Some("digest-a"));
    assert_eq!(s.failed_retry_nonce.as_deref(), Some("7"));
    assert_eq!(s.consecutive_failures, 1);
    let last = s.history.last().unwrap();
    assert_eq!(last.outcome, Outcome::RolledBack);
    assert!(last.reason.contains("got 404"));
    assert!(cond_of(&s, CONDITION_READY).message.contains("got 404"));
}

#[test]
fn a_held_failed_digest_keeps_reporting_rolled_back() {
    let failed = next(
        &ProxyStatus::default(),
        &pass(Report::Rollout(&rolled_back())),
        at(10),
    );
    let held = next(
        &failed,
        &pass(Report::Held {
            reason: "not retried",
            drift: false,
        }),
        at(20),
    );
    assert_eq!(held.phase, Phase::RolledBack);
    assert_eq!(held.history.len(), 1);
    assert_eq!(held.failed_digest.as_deref(), Some("digest-a"));
}

#[test]
fn a_hold_on_failure_is_degraded_with_outcome_held() {
    let phase = Rollout::Degraded {
        digest: "digest-a".into(),
        proxy: ProxyKind::Traefik,
        reason: "deployment failed (onFailure: hold, left in place)".into(),
        duration: Duration::from_secs(3),
        held: true,
        retry_nonce: None,
    };
    let s = next(
        &ProxyStatus::default(),
        &pass(Report::Rollout(&phase)),
        at(10),
    );
    assert_eq!(s.phase, Phase::Degraded);
    assert_eq!(s.history[0].outcome, Outcome::Held);
    assert_eq!(s.failed_digest.as_deref(), Some("digest-a"));
}

#[test]
fn drift_under_warn_is_degraded_and_says_drifted() {
    let ready = next(&verified(), &pass(Report::Converged), at(1));
    let s = next(
        &ready,
        &pass(Report::Held {
            reason: "the running job drifted",
            drift: true,
        }),
        at(2),
    );
    assert_eq!(s.phase, Phase::Degraded);
    assert_eq!(cond_of(&s, CONDITION_READY).reason, "Drifted");
}

#[test]
fn repeated_outcomes_for_one_digest_are_folded_and_history_stays_at_ten() {
    let mut s = ProxyStatus::default();
    for i in 0..3 {
        s = next(&s, &pass(Report::Rollout(&rolled_back())), at(10 + i));
    }
    assert_eq!(
        s.history.len(),
        1,
        "same digest and outcome fold into one entry"
    );
    for i in 0..15 {
        let done = Rollout::Ready {
            digest: format!("d{i}"),
            proxy: ProxyKind::Traefik,
            duration: Duration::from_secs(1),
            job: None,
        };
        s = next(&s, &pass(Report::Rollout(&done)), at(100 + i));
    }
    assert_eq!(s.history.len(), 10);
    assert_eq!(s.history.last().unwrap().digest, "d14");
}

// === observation errors and held failures (review #8) ===

fn degraded_held() -> ProxyStatus {
    let phase = Rollout::Degraded {
        digest: "digest-a".into(),
        proxy: ProxyKind::Traefik,
        reason: "deployment failed (onFailure: hold, left in place)".into(),
        duration: Duration::from_secs(3),
        held: true,
        retry_nonce: None,
    };
    next(
        &ProxyStatus::default(),
        &pass(Report::Rollout(&phase)),
        at(10),
    )
}

fn blip() -> Report<'static> {
    Report::ObservationFailed {
        error: "failed to read the job: 503 No cluster leader",
        retry_in: Duration::from_secs(2),
        terminal: false,
    }
}

#[test]
fn an_observation_error_never_turns_a_held_failure_into_rolled_back() {
    let stalled = next(&degraded_held(), &pass(blip()), at(20));
    let held = next(
        &stalled,
        &pass(Report::Held {
            reason: "not retried",
            drift: false,
        }),
        at(30),
    );
    assert_eq!(held.phase, Phase::Degraded, "the failed version still runs");
}

#[test]
fn an_observation_error_during_a_rollout_keeps_it_progressing() {
    let phase = Rollout::Verifying {
        change: change(),
        started: tokio::time::Instant::now(),
        deadline: tokio::time::Instant::now(),
        healthy_since: None,
        job_version: None,
        waiting_for: "deployment running".into(),
        blind_since: None,
    };
    let progressing = next(
        &ProxyStatus::default(),
        &pass(Report::Rollout(&phase)),
        at(1),
    );
    let s = next(&progressing, &pass(blip()), at(2));
    assert_eq!(s.phase, Phase::Progressing);
}

#[test]
fn the_same_observation_error_again_is_bookkeeping_not_a_new_document() {
    let one = next(&verified(), &pass(blip()), at(100));
    let two = next(&one, &pass(blip()), at(104));
    assert_eq!(two.consecutive_failures, 2);
    assert!(
        !differs(&one, &two),
        "only nextRetryAt and the counter moved"
    );
    let other = Report::ObservationFailed {
        error: "failed to read the job: connection refused",
        retry_in: Duration::from_secs(2),
        terminal: false,
    };
    assert!(differs(&two, &next(&two, &pass(other), at(108))));
}

#[test]
fn a_terminal_error_says_so_in_the_condition_reason() {
    let denied = Report::ObservationFailed {
        error: "failed to read the proxy job proxy: HTTP 403 Permission denied",
        retry_in: Duration::from_secs(300),
        terminal: true,
    };
    let s = next(&verified(), &pass(denied), at(100));
    let ready = cond_of(&s, CONDITION_READY);
    assert_eq!(ready.reason, "AccessDenied");
    assert!(ready.message.contains("will not resolve by itself"));
}

fn cert_warning(kind: CertificateWarningKind, host: &str) -> CertificateWarning {
    CertificateWarning {
        kind,
        host: host.to_owned(),
        message: format!("{host}: something to fix"),
        ..CertificateWarning::default()
    }
}

#[test]
fn certificate_warnings_are_a_condition_and_a_list_that_never_change_the_phase_and_last_across_passes()
 {
    let mut s = next(&ProxyStatus::default(), &pass(Report::Converged), at(10));
    let warnings = vec![
        cert_warning(
            CertificateWarningKind::CertificateFallback,
            "acme.example.test",
        ),
        cert_warning(
            CertificateWarningKind::CertificateExpiring,
            "soon.example.test",
        ),
    ];
    // Found in another order: listed most urgent first, and the condition names that.
    let found = vec![warnings[1].clone(), warnings[0].clone()];
    certificates_checked(&mut s, 3, found, at(11));
    assert_eq!(s.phase, Phase::Ready, "a warning, not a failure");
    assert_eq!(s.certificate_warnings, warnings);
    let c = cond_of(&s, CONDITION_CERTIFICATES);
    assert_eq!(c.status, ConditionStatus::False);
    assert_eq!(c.reason, "CertificateFallback");
    assert!(
        c.message.starts_with("2 of 3 host(s) checked"),
        "{}",
        c.message
    );
    assert!(c.message.contains("acme.example.test") && c.message.contains("soon.example.test"));

    // A pass that does not look (a held digest, an observation error) keeps what was found.
    let later = next(&s, &pass(Report::Converged), at(20));
    assert_eq!(later.certificate_warnings, warnings);
    let json = serde_json::to_value(&later).unwrap();
    assert_eq!(
        json["certificateWarnings"][0]["kind"],
        "CertificateFallback"
    );
    assert_eq!(json["certificateWarnings"][0]["host"], "acme.example.test");

    let mut fixed = later.clone();
    certificates_checked(&mut fixed, 3, Vec::new(), at(30));
    assert!(fixed.certificate_warnings.is_empty());
    assert_eq!(
        cond_of(&fixed, CONDITION_CERTIFICATES).status,
        ConditionStatus::True
    );
    assert!(differs(&later, &fixed), "the fix is news: it is written");
    assert!(
        serde_json::to_value(&fixed)
            .unwrap()
            .get("certificateWarnings")
            .is_none()
    );

    certificates_checked(&mut fixed, 0, Vec::new(), at(40));
    assert!(
        fixed.condition(CONDITION_CERTIFICATES).is_none(),
        "nothing to check, nothing said"
    );
}

#[test]
fn a_repeated_identical_certificate_check_is_not_news() {
    let mut a = next(&ProxyStatus::default(), &pass(Report::Converged), at(10));
    certificates_checked(&mut a, 1, Vec::new(), at(11));
    let mut b = a.clone();
    certificates_checked(&mut b, 1, Vec::new(), at(500));
    assert!(!differs(&a, &b), "an idle operator writes nothing");
}
