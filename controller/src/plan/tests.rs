//! The planner on hand-built observations: every branch of the decision.

use serde_json::json;

use super::*;
use crate::proxy::Reach;
use crate::render::digest_kv;
use crate::rollout::JobRef;
use crate::spec::OnFailure;
use crate::spec::status::ProxyStatus;

const ROOT: &str = "po/traefik/";
const OWNER: &str = "proxy-operator";

fn spec(extra: &str) -> ValidatedSpec {
    let doc = format!(
        "apiVersion: proxy-operator.io/v1alpha1\nkind: ProxyConfig\nspec:\n  proxy: traefik\n  rollout:\n    healthyDeadline: 20s\n    minHealthyTime: 2s\n{extra}"
    );
    crate::spec::load(doc.as_bytes()).unwrap()
}

fn kv() -> Vec<(String, String)> {
    vec![
        (
            "po/traefik/http/middlewares/security-headers/headers/frameDeny".into(),
            "true".into(),
        ),
        (
            "po/traefik/http/middlewares/security-headers/headers/stsSeconds".into(),
            "31536000".into(),
        ),
        (
            "po/traefik/http/routers/api/rule".into(),
            "PathPrefix(`/api`)".into(),
        ),
    ]
}

fn rendered(kv: Vec<(String, String)>) -> Rendered {
    Rendered {
        job: json!({"ID": "traefik", "Meta": {"proxy-operator/owner": OWNER, "proxy-operator/spec-digest": "job-1"}}),
        job_digest: "job-1".into(),
        traefik_static: Some("entryPoints: {}".into()),
        kv_digest: digest_kv(&kv),
        traefik_kv: kv,
        caddy: None,
    }
}

fn our_job(digest: &str) -> ObservedJob {
    ObservedJob {
        version: 7,
        modify_index: 120,
        meta: BTreeMap::from([
            (META_OWNER.to_owned(), OWNER.to_owned()),
            (META_SPEC_DIGEST.to_owned(), digest.to_owned()),
        ]),
        stopped: false,
        job_type: Some("system".to_owned()),
    }
}

fn converged() -> Observed {
    Observed {
        job: Some(our_job("job-1")),
        kv: kv(),
    }
}

fn run(spec: &ValidatedSpec, observed: &Observed, status: &ProxyStatus) -> Plan {
    let r = rendered(kv());
    let reach = Reach::on("127.0.0.1");
    let desired = Desired {
        spec,
        rendered: &r,
        owner: OWNER,
        kv_root: ROOT,
        reach: &reach,
    };
    plan(&desired, observed, status)
}

fn change(p: Plan) -> Change {
    match p {
        Plan::Apply(c) => *c,
        other => panic!("expected Apply, got {other:?}"),
    }
}

// === noop ===

/// The status after `spec("")` passed its gate.
fn applied() -> ProxyStatus {
    ProxyStatus {
        last_applied_digest: Some(spec("").digest().to_owned()),
        ..ProxyStatus::default()
    }
}

#[test]
fn matching_digests_plan_nothing() {
    assert_eq!(run(&spec(""), &converged(), &applied()), Plan::Noop);
}

#[test]
fn keys_outside_our_kv_root_do_not_count_as_drift() {
    let mut observed = converged();
    observed.kv.push(("po/traefikfoo/x".into(), "1".into()));
    observed
        .kv
        .push(("other/traefik/http/x".into(), "1".into()));
    assert_eq!(run(&spec(""), &observed, &applied()), Plan::Noop);
}

// === what to apply ===

#[test]
fn a_fresh_cluster_gets_kv_then_a_job_created_with_enforce_index_zero() {
    let c = change(run(
        &spec(""),
        &Observed::default(),
        &ProxyStatus::default(),
    ));
    let kv_change = c.kv.unwrap();
    assert_eq!(kv_change.set, kv());
    assert!(kv_change.delete.is_empty() && kv_change.previous.is_empty());
    let job = c.job.unwrap();
    assert_eq!(job.enforce_index, 0);
    assert_eq!(job.job_id, "traefik");
    assert_eq!(job.rollback_to, None, "nothing ran before");
    assert_eq!(c.digest, spec("").digest());
}

#[test]
fn a_policy_change_writes_only_the_changed_kv_entries_and_no_job() {
    let mut observed = converged();
    observed.kv[1].1 = "60".into();
    let p = run(&spec(""), &observed, &ProxyStatus::default());
    assert_eq!(p.kind(), "policy");
    let kv_change = change(p).kv.unwrap();
    assert_eq!(kv_change.set, vec![kv()[1].clone()]);
    assert_eq!(kv_change.previous, vec![observed.kv[1].clone()]);
}

#[test]
fn stale_kv_keys_of_ours_are_deleted_and_remembered_for_restore() {
    let mut observed = converged();
    observed.kv.push((
        "po/traefik/http/middlewares/old/headers/x".into(),
        "1".into(),
    ));
    let kv_change = change(run(&spec(""), &observed, &ProxyStatus::default()))
        .kv
        .unwrap();
    assert!(kv_change.set.is_empty());
    assert_eq!(
        kv_change.delete,
        vec!["po/traefik/http/middlewares/old/headers/x".to_owned()]
    );
    assert_eq!(kv_change.previous, vec![observed.kv[3].clone()]);
}

#[test]
fn a_structural_change_registers_the_job_with_the_observed_modify_index() {
    let observed = Observed {
        job: Some(our_job("job-0")),
        kv: kv(),
    };
    let p = run(&spec(""), &observed, &ProxyStatus::default());
    assert_eq!(p.kind(), "job");
    let job = change(p).job.unwrap();
    assert_eq!(job.enforce_index, 120);
    assert_eq!(job.job_digest, "job-1");
}

#[test]
fn a_change_of_both_carries_kv_and_job() {
    let observed = Observed {
        job: Some(our_job("job-0")),
        kv: Vec::new(),
    };
    assert_eq!(
        run(&spec(""), &observed, &ProxyStatus::default()).kind(),
        "policy+job"
    );
}

#[test]
fn a_stopped_job_of_ours_is_registered_again() {
    let mut observed = converged();
    if let Some(j) = observed.job.as_mut() {
        j.stopped = true;
    }
    let job = change(run(&spec(""), &observed, &ProxyStatus::default()))
        .job
        .unwrap();
    assert_eq!(
        job.rollback_to, None,
        "a stopped version is no rollback target"
    );
}

fn good(job_id: &str, version: u64) -> ProxyStatus {
    ProxyStatus {
        last_applied_digest: Some("older".into()),
        job_version: Some(version),
        last_good_job: Some(JobRef {
            job_id: job_id.into(),
            version,
            job_digest: Some("job-0".into()),
        }),
        ..ProxyStatus::default()
    }
}

#[test]
fn rollback_goes_to_the_version_that_last_passed_the_gate() {
    let observed = Observed {
        job: Some(our_job("job-0")),
        kv: kv(),
    };
    let target = change(run(&spec(""), &observed, &good("traefik", 5)))
        .job
        .unwrap()
        .rollback_to
        .unwrap();
    assert_eq!(target.version, 5);
    assert_eq!(target.job_digest.as_deref(), Some("job-0"));
}

#[test]
fn without_a_version_that_passed_the_gate_there_is_no_rollback_target() {
    // Version 7 runs but never passed the gate (a first rollout that failed and was held): it
    // is no place to go back to.
    let observed = Observed {
        job: Some(our_job("job-0")),
        kv: kv(),
    };
    let job = change(run(&spec(""), &observed, &ProxyStatus::default()))
        .job
        .unwrap();
    assert_eq!(job.rollback_to, None);
}

#[test]
fn a_changed_job_id_never_reverts_the_new_job_to_the_old_jobs_version() {
    let observed = Observed {
        job: Some(our_job("job-0")),
        kv: kv(),
    };
    // The version that passed belongs to another job ID: its number means nothing here.
    let job = change(run(&spec(""), &observed, &good("traefik-old", 5)))
        .job
        .unwrap();
    assert_eq!(job.job_id, "traefik");
    assert_eq!(job.rollback_to, None);
}

#[test]
fn a_running_document_that_never_passed_the_gate_is_verified_before_it_counts_as_ready() {
    // After a restart mid-rollout (or a lost status), what runs matches the document but was
    // never verified: the plan is a verify-only rollout that writes nothing.
    let c = change(run(&spec(""), &converged(), &ProxyStatus::default()));
    assert!(c.kv.is_none() && c.job.is_none(), "{c:?}");
    assert_eq!(c.kind(), "verify");
    assert_eq!(c.job_id, "traefik");
}

#[test]
fn the_rollout_carries_the_retry_nonce_of_the_document_it_rolls_out() {
    let c = change(run(
        &spec("  retryNonce: \"7\"\n  job:\n    resources:\n      cpu: 300\n"),
        &Observed {
            job: Some(our_job("job-0")),
            kv: kv(),
        },
        &ProxyStatus::default(),
    ));
    assert_eq!(c.retry_nonce.as_deref(), Some("7"));
}

#[test]
fn the_gate_comes_from_the_spec_and_expects_our_kv_entries_enabled() {
    let c = change(run(
        &spec("    onFailure: hold\n"),
        &Observed::default(),
        &ProxyStatus::default(),
    ));
    assert_eq!(c.gate.healthy_deadline, std::time::Duration::from_secs(20));
    assert_eq!(c.gate.min_healthy_time, std::time::Duration::from_secs(2));
    assert_eq!(c.gate.on_failure, OnFailure::Hold);
    assert!(c.gate.check_ping);
    assert_eq!(
        c.gate.expected_entries,
        vec![
            "api@consul".to_owned(),
            "security-headers@consul".to_owned()
        ]
    );
}

// === hold ===

#[test]
fn a_paused_spec_plans_nothing_even_on_a_fresh_cluster() {
    let p = run(
        &spec("  paused: true\n"),
        &Observed::default(),
        &ProxyStatus::default(),
    );
    assert_eq!(p, Plan::Hold(HoldReason::Paused));
}

#[test]
fn a_failed_digest_is_not_retried_while_the_nonce_is_unchanged() {
    let s = spec("");
    let status = ProxyStatus {
        failed_digest: Some(s.digest().to_owned()),
        ..ProxyStatus::default()
    };
    let observed = Observed {
        job: Some(our_job("job-0")),
        kv: kv(),
    };
    assert!(matches!(
        run(&s, &observed, &status),
        Plan::Hold(HoldReason::FailedDigest { .. })
    ));
}

#[test]
fn changing_the_retry_nonce_retries_a_failed_digest() {
    let failed = spec("");
    let retried = spec("  retryNonce: \"2\"\n");
    assert_eq!(
        failed.digest(),
        retried.digest(),
        "the nonce is not part of the digest"
    );
    let status = ProxyStatus {
        failed_digest: Some(failed.digest().to_owned()),
        ..ProxyStatus::default()
    };
    let observed = Observed {
        job: Some(our_job("job-0")),
        kv: kv(),
    };
    assert_eq!(run(&retried, &observed, &status).kind(), "job");
}

#[test]
fn a_changed_document_is_applied_even_after_a_failure() {
    let status = ProxyStatus {
        failed_digest: Some("another".into()),
        ..ProxyStatus::default()
    };
    let observed = Observed {
        job: Some(our_job("job-0")),
        kv: kv(),
    };
    assert_eq!(run(&spec(""), &observed, &status).kind(), "job");
}

#[test]
fn drift_from_an_applied_spec_is_corrected_by_default() {
    let s = spec("");
    let status = ProxyStatus {
        last_applied_digest: Some(s.digest().to_owned()),
        ..ProxyStatus::default()
    };
    let mut observed = converged();
    observed.kv[0].1 = "false".into();
    assert_eq!(run(&s, &observed, &status).kind(), "policy");
}

#[test]
fn drift_with_drift_policy_warn_is_reported_not_corrected() {
    let s = spec("  driftPolicy: warn\n");
    let status = ProxyStatus {
        last_applied_digest: Some(s.digest().to_owned()),
        ..ProxyStatus::default()
    };
    let observed = Observed {
        job: Some(our_job("hand-edited")),
        kv: kv(),
    };
    assert_eq!(
        run(&s, &observed, &status),
        Plan::Hold(HoldReason::Drift { what: "job".into() })
    );
}

#[test]
fn drift_policy_warn_still_applies_a_new_document() {
    let s = spec("  driftPolicy: warn\n");
    let status = ProxyStatus {
        last_applied_digest: Some("previous-doc".into()),
        ..ProxyStatus::default()
    };
    let observed = Observed {
        job: Some(our_job("job-0")),
        kv: kv(),
    };
    assert_eq!(run(&s, &observed, &status).kind(), "job");
}

// === stalled ===

#[test]
fn a_job_without_owner_meta_is_stalled_and_never_touched() {
    let mut job = our_job("job-1");
    job.meta.clear();
    let p = run(
        &spec(""),
        &Observed {
            job: Some(job),
            kv: Vec::new(),
        },
        &ProxyStatus::default(),
    );
    match p {
        Plan::Stalled { reason } => {
            assert!(
                reason.contains("without the proxy-operator/owner Meta"),
                "{reason}"
            );
            assert!(reason.contains("\"traefik\""), "{reason}");
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_job_owned_by_another_operator_is_stalled() {
    let mut job = our_job("job-1");
    job.meta.insert(META_OWNER.into(), "someone-else".into());
    let p = run(
        &spec(""),
        &Observed {
            job: Some(job),
            kv: kv(),
        },
        &ProxyStatus::default(),
    );
    assert!(matches!(p, Plan::Stalled { ref reason } if reason.contains("someone-else")));
}

#[test]
fn stalled_wins_over_a_failed_digest_but_paused_wins_over_stalled() {
    let mut job = our_job("job-1");
    job.meta.clear();
    let observed = Observed {
        job: Some(job),
        kv: Vec::new(),
    };
    let s = spec("");
    let status = ProxyStatus {
        failed_digest: Some(s.digest().to_owned()),
        ..ProxyStatus::default()
    };
    assert_eq!(run(&s, &observed, &status).kind(), "stalled");
    assert_eq!(
        run(&spec("  paused: true\n"), &observed, &status).kind(),
        "hold"
    );
}

// === the gate a planned change carries ===

/// A change planned for `spec` on a fresh cluster, the proxy reached as `reach` says.
fn planned_gate(spec: &ValidatedSpec, reach: &Reach) -> Gate {
    let r = rendered(kv());
    let desired = Desired {
        spec,
        rendered: &r,
        owner: OWNER,
        kv_root: ROOT,
        reach,
    };
    change(plan(
        &desired,
        &Observed::default(),
        &ProxyStatus::default(),
    ))
    .gate
}

const PROBED: &str = "  dashboard: {address: \":9090\"}
  entryPoints:
    web: {address: \":18080\", redirectTo: websecure}
    websecure: {address: \":18443\"}
  rollout:
    probes:
      - host: app.example.test
";

fn probed_spec(proxy: &str) -> ValidatedSpec {
    let doc = format!(
        "apiVersion: proxy-operator.io/v1alpha1\nkind: ProxyConfig\nspec:\n  proxy: {proxy}\n{PROBED}"
    );
    crate::spec::load(doc.as_bytes()).unwrap()
}

#[test]
fn a_planned_traefik_change_carries_its_gate_with_the_proxy_api_and_the_route_probes() {
    let gate = planned_gate(&probed_spec("traefik"), &Reach::on("10.1.2.3"));
    assert_eq!(gate.proxy, crate::spec::ProxyKind::Traefik);
    assert!(gate.check_ping);
    assert_eq!(
        gate.proxy_api.as_deref(),
        Some("http://10.1.2.3:9090"),
        "the API is the dashboard's port on the proxy's host"
    );
    assert_eq!(
        gate.expected_entries,
        vec!["api@consul", "security-headers@consul"],
        "every router and middleware of the tree"
    );
    assert_eq!(gate.probes.len(), 1);
    assert_eq!(
        (gate.probes[0].address.as_str(), gate.probes[0].tls),
        ("10.1.2.3:18443", true),
        "the default probe follows web's redirect to websecure"
    );
    assert_eq!(gate.probes[0].host, "app.example.test");
}

#[test]
fn an_explicit_proxy_api_address_wins_over_the_documents_dashboard_port() {
    let reach = Reach {
        host: "10.1.2.3".into(),
        api: Some("http://proxy.internal:7777".into()),
    };
    let gate = planned_gate(&probed_spec("traefik"), &reach);
    assert_eq!(
        gate.proxy_api.as_deref(),
        Some("http://proxy.internal:7777")
    );
    assert_eq!(gate.probes[0].address, "10.1.2.3:18443");
}

#[test]
fn a_planned_caddy_change_is_gated_on_its_admin_api_and_route_probes_not_on_traefiks_api() {
    let gate = planned_gate(&probed_spec("caddy"), &Reach::on("127.0.0.1"));
    assert_eq!(gate.proxy, crate::spec::ProxyKind::Caddy);
    // Caddy's health is its admin API answering with the config identity we loaded.
    assert!(gate.check_ping);
    let api = gate.proxy_api.as_deref().unwrap_or_default();
    assert!(
        api.starts_with("http://127.0.0.1:"),
        "the admin API is only ever on loopback: {api}"
    );
    assert!(
        gate.expected_entries.iter().all(|e| e.ends_with("@caddy")),
        "no Traefik router or middleware is expected of Caddy: {:?}",
        gate.expected_entries
    );
    assert_eq!(gate.probes.len(), 1);
    assert_eq!(gate.probes[0].address, "127.0.0.1:18443");
}

// === rollback target from Nomad when the status does not know (issue 13) ===

fn version(v: u64, stable: bool, owner: Option<&str>, stop: bool) -> crate::nomad::Job {
    let mut meta = serde_json::Map::new();
    if let Some(owner) = owner {
        meta.insert(META_OWNER.into(), owner.into());
    }
    meta.insert(META_SPEC_DIGEST.into(), format!("job-{v}").into());
    crate::nomad::Job::from_value(serde_json::json!({
        "ID": "traefik", "Version": v, "Stable": stable, "Stop": stop, "Meta": meta,
    }))
    .unwrap()
}

#[test]
fn the_rollback_target_from_nomad_is_the_newest_stable_version_carrying_our_owner_meta() {
    let versions = [
        version(7, false, Some("po"), false),
        version(6, true, Some("someone-else"), false),
        version(5, true, Some("po"), true),
        version(4, true, Some("po"), false),
        version(3, true, None, false),
        version(2, true, Some("po"), false),
    ];
    let target = stable_rollback_target("traefik", "po", &versions).unwrap();
    assert_eq!(target.version, 4);
    assert_eq!(target.job_digest.as_deref(), Some("job-4"));
    assert_eq!(target.job_id, "traefik");
}

#[test]
fn no_stable_version_of_ours_gives_no_rollback_target() {
    let versions = [
        version(1, false, Some("po"), false),
        version(0, true, None, false),
    ];
    assert_eq!(stable_rollback_target("traefik", "po", &versions), None);
    assert_eq!(
        stable_rollback_target("other-job", "po", &[version(1, true, Some("po"), false)]),
        None
    );
}

/// Structural changes of a serving Traefik become handovers to the other slot.
mod handover;
