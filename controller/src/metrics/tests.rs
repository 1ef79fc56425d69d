use super::certs::tests::cert_pem;
use super::*;

fn value_of(text: &str, line_start: &str) -> f64 {
    text.lines()
        .find(|l| l.starts_with(line_start))
        .unwrap_or_else(|| panic!("no line {line_start} in\n{text}"))
        .rsplit(' ')
        .next()
        .unwrap()
        .parse()
        .unwrap()
}

#[test]
fn the_expiry_gauge_counts_seconds_from_the_scrape_and_files_that_vanish_disappear() {
    let dir = tempfile::tempdir().unwrap();
    let in_ten_days = unix_now() + 10 * 86_400;
    let (pem, key) = cert_pem(&["a.example"], in_ten_days);
    std::fs::write(dir.path().join("a.pem"), pem).unwrap();
    std::fs::write(dir.path().join("a.key"), key).unwrap();
    std::fs::write(dir.path().join("junk.crt"), "not pem").unwrap();
    let files = scan_cert_dir(dir.path()).unwrap();
    assert_eq!(files.len(), 2, "{files:?}");
    assert!(
        files[1].certificates.is_err(),
        "junk is listed with its error"
    );
    let m = Metrics::new();
    m.certificates(&files);
    let text = m.encode().unwrap();
    let left = value_of(&text, "proxy_operator_certificate_expiry_seconds{file=");
    assert!((f64::from(10 * 86_400 - 5)..=f64::from(10 * 86_400)).contains(&left));
    m.certificates(&[]);
    assert!(!m.encode().unwrap().contains("certificate_expiry_seconds{"));
}

#[test]
fn the_phase_gauge_is_one_for_the_current_phase_only() {
    let m = Metrics::new();
    m.phase(Phase::RolledBack);
    let text = m.encode().unwrap();
    assert_eq!(
        value_of(&text, "proxy_operator_phase{phase=\"RolledBack\"}"),
        1.0
    );
    assert_eq!(
        value_of(&text, "proxy_operator_phase{phase=\"Pending\"}"),
        0.0
    );
    assert_eq!(
        text.lines()
            .filter(|l| l.starts_with("proxy_operator_phase{") && l.ends_with(" 1"))
            .count(),
        1
    );
}

#[test]
fn rollouts_count_by_outcome_and_observe_each_stage() {
    let m = Metrics::new();
    m.rollout_finished(
        Outcome::RolledBack,
        &[
            (RolloutStage::Apply, Duration::from_millis(200)),
            (RolloutStage::Verify, Duration::from_secs(3)),
            (RolloutStage::Rollback, Duration::from_secs(1)),
        ],
    );
    m.rollout_finished(Outcome::Succeeded, &[]);
    let text = m.encode().unwrap();
    assert_eq!(
        value_of(
            &text,
            "proxy_operator_rollouts_total{outcome=\"rolled_back\"}"
        ),
        1.0
    );
    assert_eq!(
        value_of(
            &text,
            "proxy_operator_rollouts_total{outcome=\"succeeded\"}"
        ),
        1.0
    );
    assert_eq!(
        value_of(
            &text,
            "proxy_operator_rollout_phase_duration_seconds_count{phase=\"rollback\"}"
        ),
        1.0
    );
}

#[test]
fn the_rollout_timer_adds_up_each_stage_and_records_them_at_the_end() {
    let m = Metrics::new();
    let t0 = std::time::Instant::now();
    let mut timer = RolloutTimer::default();
    timer.enter(RolloutStage::Apply, t0);
    timer.enter(RolloutStage::Apply, t0 + Duration::from_secs(1));
    timer.enter(RolloutStage::Verify, t0 + Duration::from_secs(2));
    timer.enter(RolloutStage::Rollback, t0 + Duration::from_secs(7));
    timer.finish(Outcome::RolledBack, t0 + Duration::from_secs(8), &m);
    let text = m.encode().unwrap();
    let sum = |stage: &str| {
        value_of(
            &text,
            &format!("proxy_operator_rollout_phase_duration_seconds_sum{{phase=\"{stage}\"}}"),
        )
    };
    assert_eq!(sum("apply"), 2.0);
    assert_eq!(sum("verify"), 5.0);
    assert_eq!(sum("rollback"), 1.0);
}

#[test]
fn leader_changes_count_transitions_not_calls() {
    let m = Metrics::new();
    m.leader(false);
    m.leader(true);
    m.leader(true);
    m.leader(false);
    let text = m.encode().unwrap();
    assert_eq!(value_of(&text, "proxy_operator_leader_changes_total"), 2.0);
    assert_eq!(value_of(&text, "proxy_operator_leader "), 0.0);
}

#[test]
fn api_requests_are_labelled_by_class_and_code_never_by_key() {
    let m = Metrics::new();
    m.api_request(
        Api::Consul,
        endpoint_class("/v1/kv/proxy-operator/secret-users?index=3"),
        Some(200),
        Duration::from_millis(3),
    );
    m.api_request(
        Api::Nomad,
        endpoint_class("/v1/job/traefik/plan"),
        None,
        Duration::ZERO,
    );
    let text = m.encode().unwrap();
    assert!(
        text.contains(
            "proxy_operator_api_requests_total{api=\"consul\",class=\"kv\",code=\"200\"} 1"
        )
    );
    assert!(text.contains(
        "proxy_operator_api_requests_total{api=\"nomad\",class=\"job\",code=\"error\"} 1"
    ));
    assert!(!text.contains("secret-users"));
}

#[test]
fn pass_errors_are_counted_by_the_first_word_of_their_reason_only() {
    let m = Metrics::new();
    m.pass_completed(PassOutcome::Ok);
    m.pass_completed(PassOutcome::Error("Consul: token s3cr3t refused"));
    let text = m.encode().unwrap();
    assert_eq!(
        value_of(
            &text,
            "proxy_operator_reconcile_passes_total{outcome=\"error\"}"
        ),
        1.0
    );
    assert!(text.contains("reason=\"consul\""), "{text}");
    assert!(!text.contains("s3cr3t"));
}

#[test]
fn a_new_digest_is_a_new_generation_and_the_same_one_is_not() {
    let m = Metrics::new();
    m.document_observed(5, "aaa");
    m.document_observed(6, "aaa");
    m.document_observed(9, "bbb");
    let text = m.encode().unwrap();
    assert_eq!(value_of(&text, "proxy_operator_config_generation "), 2.0);
    assert_eq!(value_of(&text, "proxy_operator_config_modify_index "), 9.0);
}

#[test]
fn served_certificates_export_fallback_per_host_and_expiry_from_the_scrape_and_are_replaced_whole()
{
    let m = Metrics::new();
    let in_five_days = unix_now() + 5 * 86_400;
    m.served_certificates(vec![
        ServedCertificate {
            host: "acme.example.test".into(),
            fallback: true,
            not_after: None,
        },
        ServedCertificate {
            host: "soon.example.test".into(),
            fallback: false,
            not_after: Some(in_five_days),
        },
    ]);
    let text = m.encode().unwrap();
    assert_eq!(
        value_of(
            &text,
            "proxy_operator_certificate_fallback{host=\"acme.example.test\"}"
        ),
        1.0
    );
    assert_eq!(
        value_of(
            &text,
            "proxy_operator_certificate_fallback{host=\"soon.example.test\"}"
        ),
        0.0
    );
    let left = value_of(
        &text,
        "proxy_operator_served_certificate_expiry_seconds{host=\"soon.example.test\"}",
    );
    assert!((f64::from(5 * 86_400 - 5)..=f64::from(5 * 86_400)).contains(&left));
    assert!(
        !text.contains("served_certificate_expiry_seconds{host=\"acme.example.test\"}"),
        "nothing served, no expiry"
    );
    m.served_certificates(Vec::new());
    let text = m.encode().unwrap();
    assert!(!text.contains("certificate_fallback{"), "{text}");
    assert!(
        !text.contains("served_certificate_expiry_seconds{"),
        "{text}"
    );
}
