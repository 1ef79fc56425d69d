use std::time::Duration;

use tokio::sync::watch;

use super::*;
use crate::consul::TxnOp;
use crate::consul::fake::FakeConsul;

const KEY: &str = "proxy-operator/leader";
/// The node the fake's catalog starts with: sessions need a registered node.
const NODE: &str = "hashistack-twin";

fn rolled_back(indexes: &[usize]) -> consul::Error {
    consul::Error::TxnRolledBack {
        errors: indexes
            .iter()
            .map(|&op_index| TxnOpError {
                op_index,
                what: "failed".to_owned(),
            })
            .collect(),
    }
}

fn term(session: &str) -> Term {
    Term {
        session: session.to_owned(),
        holder: Holder {
            node: "n1".to_owned(),
            allocation: None,
            address: None,
            since: String::new(),
        },
        key: KEY.to_owned(),
    }
}

#[test]
fn the_fence_is_a_check_session_on_the_leader_key_put_first() {
    let fence = Fence::new(KEY, "s1");
    let ops = fence.fenced(vec![TxnOp::Set {
        key: "proxy-operator/status".to_owned(),
        value: b"{}".to_vec(),
    }]);
    assert_eq!(
        ops[0],
        TxnOp::CheckSession {
            key: KEY.to_owned(),
            session: "s1".to_owned()
        }
    );
    assert_eq!(ops[1].key(), "proxy-operator/status");
    assert_eq!(ops.len(), 2);
}

#[test]
fn a_rollback_naming_the_fence_is_deposed_and_never_retried() {
    let e = Fence::new(KEY, "s1").classify(rolled_back(&[0]));
    assert!(e.is_deposed());
    assert!(!e.is_retryable());
    assert!(!e.is_conflict());
    assert!(e.to_string().contains("deposed"), "{e}");
}

#[test]
fn a_lost_lock_is_deposed_even_when_a_cas_failed_with_it() {
    assert!(
        Fence::new(KEY, "s1")
            .classify(rolled_back(&[0, 2]))
            .is_deposed()
    );
}

#[test]
fn a_rollback_of_another_op_is_a_conflict_not_a_deposition() {
    let e = Fence::new(KEY, "s1").classify(rolled_back(&[1]));
    assert!(!e.is_deposed());
    assert!(e.is_conflict());
}

#[test]
fn a_rollback_for_a_missing_permission_is_forbidden_even_on_the_fence() {
    for op_index in [0, 2] {
        let e = Fence::new(KEY, "s1").classify(consul::Error::TxnRolledBack {
            errors: vec![TxnOpError {
                op_index,
                what: "Permission denied: token with AccessorID 'a' lacks permission 'key:write' on \"p/status\"".to_owned(),
            }],
        });
        assert!(e.is_forbidden(), "{e}");
        assert!(
            !e.is_deposed() && !e.is_conflict() && !e.is_retryable(),
            "{e}"
        );
        assert!(
            e.to_string().contains("nomad-jobs/acl/consul-operator.hcl"),
            "{e}"
        );
        assert!(e.to_string().contains("'key:write' on \"p/status\""), "{e}");
    }
}

#[test]
fn a_forbidden_write_is_neither_deposed_nor_retryable() {
    let e = Fence::new(KEY, "s1").classify(consul::Error::injected("txn", 403, "denied"));
    assert!(e.is_forbidden());
    assert!(!e.is_deposed());
    assert!(!e.is_retryable());
}

#[test]
fn the_holder_record_is_camel_case_json_and_an_unlocked_key_has_no_leader() {
    let holder = Holder {
        node: "n1".to_owned(),
        allocation: Some("a-1".to_owned()),
        address: Some("10.0.0.1:9090".to_owned()),
        since: "2026-01-01T00:00:00Z".to_owned(),
    };
    let value = serde_json::to_vec(&holder).unwrap();
    let json: serde_json::Value = serde_json::from_slice(&value).unwrap();
    assert_eq!(json["allocation"], "a-1");
    assert_eq!(json["since"], "2026-01-01T00:00:00Z");
    let mut pair = KvPair {
        key: KEY.to_owned(),
        value,
        session: Some("s1".to_owned()),
        ..KvPair::default()
    };
    assert_eq!(
        current_leader(pair.clone()),
        Some(CurrentLeader {
            holder: Some(holder),
            session: "s1".to_owned()
        })
    );
    pair.session = None;
    assert_eq!(current_leader(pair), None, "a stale record is not a leader");
}

#[test]
fn the_current_leader_prints_node_allocation_address_and_since() {
    let mut current = CurrentLeader {
        holder: Some(Holder {
            node: "n1".to_owned(),
            allocation: Some("a-1".to_owned()),
            address: Some("10.0.0.1:9090".to_owned()),
            since: "2026-01-01T00:00:00Z".to_owned(),
        }),
        session: "s1".to_owned(),
    };
    assert_eq!(
        current.to_string(),
        "node n1 (allocation a-1, 10.0.0.1:9090) since 2026-01-01T00:00:00Z"
    );
    current.holder = None;
    assert_eq!(current.to_string(), "session s1");
}

#[tokio::test]
async fn term_lost_fires_when_the_published_state_leaves_the_term() {
    let (tx, rx) = watch::channel(Leadership::Leader(term("s1")));
    let lost = tokio::spawn(term("s1").lost(rx));
    tokio::task::yield_now().await;
    assert!(!lost.is_finished());
    tx.send_replace(Leadership::Leader(term("s1")));
    tokio::task::yield_now().await;
    assert!(!lost.is_finished(), "the same term is not a loss");
    tx.send_replace(Leadership::Follower { holder: None });
    tokio::time::timeout(Duration::from_secs(1), lost)
        .await
        .unwrap()
        .unwrap();
}

#[tokio::test]
async fn wait_for_leadership_returns_none_once_the_elector_stopped() {
    let (tx, mut rx) = watch::channel(Leadership::default());
    tx.send_replace(Leadership::Stopped);
    assert_eq!(wait_for_leadership(&mut rx).await, None);
}

fn config(node: &str) -> ElectorConfig {
    ElectorConfig {
        ttl: Duration::from_secs(10),
        ..ElectorConfig::new("proxy-operator", node)
    }
}

async fn leading(rx: &mut watch::Receiver<Leadership>) -> Term {
    tokio::time::timeout(Duration::from_secs(30), wait_for_leadership(rx))
        .await
        .unwrap()
        .unwrap()
}

#[tokio::test(start_paused = true)]
async fn a_failed_renewal_publishes_follower_first_and_vacates_the_lock() {
    let consul = FakeConsul::new();
    let handle = Elector::spawn(consul.clone(), config(NODE));
    let mut rx = handle.subscribe();
    let t = leading(&mut rx).await;
    assert_eq!(t.holder.node, NODE);
    consul.fail_next(
        "session_renew",
        consul::Error::injected("renew", 500, "boom"),
    );
    let lost = t.lost(rx.clone());
    tokio::time::timeout(Duration::from_secs(6), lost)
        .await
        .unwrap();
    // Vacated: the key is unlocked and the session gone.
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(consul.entry(KEY).unwrap().session, None);
    assert!(!consul.calls_of("session_destroy").is_empty());
    handle.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn a_term_lost_while_consul_fails_destroys_its_session_once_consul_answers_and_leads_again() {
    let consul = FakeConsul::new();
    let handle = Elector::spawn(consul.clone(), config(NODE));
    let mut rx = handle.subscribe();
    let t = leading(&mut rx).await;
    // Consul answers 500 to the renewal and to the clean-up after it: the key stays locked by
    // the old session, which Consul would only reap up to 2 × TTL later.
    consul.fail_next(
        "session_renew",
        consul::Error::injected("renew", 500, "boom"),
    );
    consul.fail_next(
        "kv_release",
        consul::Error::injected("release", 500, "boom"),
    );
    consul.fail_next(
        "session_destroy",
        consul::Error::injected("destroy", 500, "boom"),
    );
    tokio::time::timeout(Duration::from_secs(6), t.lost(rx.clone()))
        .await
        .unwrap();
    assert_eq!(
        consul.entry(KEY).unwrap().session.as_deref(),
        Some(t.session.as_str()),
        "the premise: the old session still holds the key"
    );
    // Consul answers again: the old session is destroyed and the replica leads again well
    // before the old session's TTL could run out.
    let t2 = tokio::time::timeout(Duration::from_secs(9), leading(&mut rx))
        .await
        .unwrap();
    assert_ne!(t2.session, t.session);
    handle.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn a_renewal_answering_a_longer_ttl_schedules_the_next_from_it() {
    let consul = FakeConsul::new();
    consul.set_renew_ttl(Duration::from_secs(60));
    let handle = Elector::spawn(consul.clone(), config(NODE));
    let mut rx = handle.subscribe();
    leading(&mut rx).await;
    tokio::time::sleep(Duration::from_secs(6)).await;
    assert_eq!(consul.calls_of("session_renew").len(), 1);
    // The next renewal is at 30 s (60 s / 2) after the first, not 5 s.
    tokio::time::sleep(Duration::from_secs(20)).await;
    assert_eq!(consul.calls_of("session_renew").len(), 1);
    tokio::time::sleep(Duration::from_secs(15)).await;
    assert_eq!(consul.calls_of("session_renew").len(), 2);
    handle.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn a_step_down_after_a_refused_write_ends_the_term_and_shutdown_releases_the_key() {
    let consul = FakeConsul::new();
    let handle = Elector::spawn(consul.clone(), config(NODE));
    let mut rx = handle.subscribe();
    let t = leading(&mut rx).await;
    handle.step_down("some-older-session").await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(rx.borrow().is_leader(), "a stale step-down is ignored");
    handle.step_down(&t.session).await;
    tokio::time::timeout(Duration::from_secs(1), t.lost(rx.clone()))
        .await
        .unwrap();
    // It contends again after TTL/2 and, alone, leads with a new session.
    let t2 = leading(&mut rx).await;
    assert_ne!(t2.session, t.session);
    handle.shutdown().await;
    assert_eq!(*rx.borrow(), Leadership::Stopped);
    assert_eq!(consul.entry(KEY).unwrap().session, None);
}

#[tokio::test(start_paused = true)]
async fn an_idle_follower_holds_no_session_and_only_waits_on_the_key() {
    let consul = FakeConsul::new();
    let leader = Elector::spawn(consul.clone(), config(NODE));
    leading(&mut leader.subscribe()).await;
    consul
        .catalog_register(&crate::consul::CatalogRegistration {
            node: "n2".to_owned(),
            address: "10.0.0.2".to_owned(),
            ..Default::default()
        })
        .await
        .unwrap();
    let follower = Elector::spawn(consul.clone(), config("n2"));
    let mut rx = follower.subscribe();
    rx.wait_for(|l| matches!(l, Leadership::Follower { holder: Some(_) }))
        .await
        .unwrap();
    let sessions = consul.calls_of("session_create").len();
    consul.clear_calls();
    tokio::time::sleep(Duration::from_secs(60)).await;
    let calls = consul.calls();
    assert_eq!(sessions, 1, "only the leader created a session");
    // In a minute: the leader's renewals every 5 s, and no follower request beyond blocking
    // reads.
    assert!(
        calls
            .iter()
            .all(|c| c.op == "session_renew" || c.op == "kv_get"),
        "{calls:?}"
    );
    let renewals = consul.calls_of("session_renew").len();
    assert!((11..=12).contains(&renewals), "{renewals} renewals");
    follower.shutdown().await;
    leader.shutdown().await;
}

#[test]
fn the_flags_default_to_a_15s_ttl_and_a_1s_lock_delay_and_refuse_out_of_range_values() {
    use clap::Parser;
    #[derive(clap::Parser)]
    struct Cli {
        #[command(flatten)]
        leader: LeaderFlags,
    }
    let cli = Cli::try_parse_from(["x"]).unwrap();
    let config = cli.leader.config("p", "n1", None);
    assert_eq!(config.ttl, DEFAULT_TTL);
    assert_eq!(config.lock_delay, DEFAULT_LOCK_DELAY);
    assert_eq!(config.key, "p/leader");
    assert!(Cli::try_parse_from(["x", "--leader-ttl", "5s"]).is_err());
    assert!(Cli::try_parse_from(["x", "--lock-delay", "61s"]).is_err());
    let cli = Cli::try_parse_from(["x", "--leader-ttl", "30s", "--instance-id", "a1"]).unwrap();
    assert_eq!(cli.leader.leader_ttl, Duration::from_secs(30));
    assert_eq!(cli.leader.instance_id.as_deref(), Some("a1"));
}

#[tokio::test(start_paused = true)]
async fn a_term_won_after_lock_delay_renews_on_the_sessions_clock_not_the_acquires() {
    let consul = FakeConsul::new();
    // A leader killed a moment ago: its session is invalidated, lock-delay (1 s) runs.
    let old = consul
        .session_create(&SessionRequest {
            name: "old".to_owned(),
            ttl: Some(Duration::from_secs(10)),
            lock_delay: Some(Duration::from_secs(1)),
            behavior: SessionBehavior::Release,
            node: Some(NODE.to_owned()),
            checks: Some(Vec::new()),
        })
        .await
        .unwrap();
    assert!(consul.kv_acquire(KEY, b"{}", &old).await.unwrap());
    consul.expire_session(&old);
    let start = tokio::time::Instant::now();
    let handle = Elector::spawn(consul.clone(), config(NODE));
    let mut rx = handle.subscribe();
    leading(&mut rx).await;
    let won = start.elapsed();
    assert!(
        won >= Duration::from_secs(1),
        "lock-delay was waited out: {won:?}"
    );
    // The session was made before the lock-delay; its TTL (10 s) runs from then, so the first
    // renewal is due 5 s after it, not 5 s after the acquire.
    tokio::time::sleep_until(start + Duration::from_millis(5_200)).await;
    assert_eq!(consul.calls_of("session_renew").len(), 1);
    handle.shutdown().await;
}

// === the session's health check ===

const ALLOC: &str = "5c63e7a1-0000-4000-8000-00000000abcd";
/// What Nomad registers for the shipped job's group service (`MakeAllocServiceID`).
const SERVICE_ID: &str =
    "_nomad-task-5c63e7a1-0000-4000-8000-00000000abcd-group-operator-proxy-operator-http";

fn register_operator_service(consul: &FakeConsul, status: &str) {
    consul
        .register_agent_service(serde_json::json!({
            "ID": SERVICE_ID,
            "Name": "proxy-operator",
            "Port": 9090,
            "Check": {
                "CheckID": "_nomad-check-0123abcd",
                "Name": "healthz",
                "HTTP": "http://127.0.0.1:9090/healthz",
                "Interval": "2s",
                "Timeout": "1s",
                "Status": status,
            },
        }))
        .unwrap();
}

/// The session's record as Consul keeps it.
async fn session_entry(consul: &FakeConsul, session: &str) -> crate::consul::SessionEntry {
    let (info, _) = consul
        .session_info(session, QueryOptions::NOW)
        .await
        .unwrap();
    info.unwrap()
}

fn bound_config() -> ElectorConfig {
    ElectorConfig {
        session_check: SessionCheck::Allocation(ALLOC.to_owned()),
        ..config(NODE)
    }
}

fn check(service_id: &str, id: &str, status: &str) -> (String, crate::consul::HealthCheck) {
    let c = crate::consul::HealthCheck {
        node: NODE.to_owned(),
        check_id: id.to_owned(),
        status: status.to_owned(),
        service_id: service_id.to_owned(),
        ..Default::default()
    };
    (id.to_owned(), c)
}

#[test]
fn only_the_checks_of_this_allocations_services_bind_and_none_means_ttl_only() {
    let checks: std::collections::BTreeMap<_, _> = [
        check(SERVICE_ID, "mine", "passing"),
        check(
            "_nomad-task-ffffffff-other-alloc-web-http",
            "theirs",
            "critical",
        ),
        check("", "serfHealth", "passing"),
    ]
    .into_iter()
    .collect();
    assert_eq!(
        check::of_allocation(&checks, ALLOC),
        check::Binding::Checks(vec!["mine".to_owned()])
    );
    let other = check::of_allocation(&checks, "no-such-alloc");
    assert!(
        matches!(&other, check::Binding::TtlOnly(reason) if reason.contains("no-such-alloc")),
        "{other:?}"
    );
    assert!(matches!(
        check::of_allocation(&checks, ""),
        check::Binding::TtlOnly(_)
    ));
}

#[test]
fn a_critical_check_of_the_allocation_is_waited_for_not_skipped() {
    let checks: std::collections::BTreeMap<_, _> = [
        check(SERVICE_ID, "a", "passing"),
        check(SERVICE_ID, "b", "critical"),
    ]
    .into_iter()
    .collect();
    assert_eq!(
        check::of_allocation(&checks, ALLOC),
        check::Binding::Critical("b".to_owned())
    );
    assert!(
        Error::CheckCritical {
            check: "b".to_owned()
        }
        .is_retryable()
    );
}

#[tokio::test(start_paused = true)]
async fn the_session_is_bound_to_the_allocations_check_and_its_failure_ends_the_term_before_the_ttl()
 {
    let consul = FakeConsul::new();
    register_operator_service(&consul, "passing");
    let handle = Elector::spawn(consul.clone(), bound_config());
    let mut rx = handle.subscribe();
    let t = leading(&mut rx).await;
    assert_eq!(
        session_entry(&consul, &t.session).await.service_checks,
        Some(serde_json::json!([{"ID": "_nomad-check-0123abcd", "Namespace": ""}]))
    );
    // The leader dies: its /healthz check goes critical and Consul invalidates the session,
    // long before the 10 s TTL (and its 2 x reaping) would.
    let start = tokio::time::Instant::now();
    consul.set_check_status(SERVICE_ID, "critical");
    tokio::time::timeout(Duration::from_secs(1), t.lost(rx.clone()))
        .await
        .unwrap();
    assert!(start.elapsed() < Duration::from_secs(1));
    assert_eq!(consul.entry(KEY).unwrap().session, None);
    handle.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn a_check_still_critical_at_start_is_waited_for_and_then_bound_not_replaced_by_a_ttl_only_session()
 {
    let consul = FakeConsul::new();
    register_operator_service(&consul, "critical");
    let handle = Elector::spawn(consul.clone(), bound_config());
    let mut rx = handle.subscribe();
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert!(
        consul.calls_of("session_create").is_empty(),
        "no session while the check is critical"
    );
    let state = rx.borrow().clone();
    assert!(
        matches!(&state, Leadership::Unknown { error: Some(e) } if e.contains("_nomad-check-0123abcd")),
        "{state:?}"
    );
    consul.set_check_status(SERVICE_ID, "passing");
    let t = leading(&mut rx).await;
    assert!(
        session_entry(&consul, &t.session)
            .await
            .service_checks
            .is_some(),
        "bound once passing"
    );
    handle.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn without_a_check_of_the_allocation_the_session_lives_by_its_ttl_alone() {
    let consul = FakeConsul::new();
    let handle = Elector::spawn(consul.clone(), bound_config());
    let mut rx = handle.subscribe();
    let t = leading(&mut rx).await;
    let info = session_entry(&consul, &t.session).await;
    assert_eq!(info.service_checks, None);
    assert_eq!(info.ttl, "10s");
    handle.shutdown().await;
}

#[test]
fn session_check_defaults_to_the_nomad_allocation_and_the_flag_overrides_it() {
    use clap::Parser;
    #[derive(clap::Parser)]
    struct Cli {
        #[command(flatten)]
        leader: LeaderFlags,
    }
    let parse = |args: &[&str]| {
        let mut argv = vec!["x"];
        argv.extend_from_slice(args);
        Cli::try_parse_from(argv).unwrap().leader.session_check()
    };
    assert_eq!(parse(&[]), SessionCheck::TtlOnly);
    assert_eq!(
        parse(&["--nomad-alloc-id", ALLOC]),
        SessionCheck::Allocation(ALLOC.to_owned())
    );
    assert_eq!(
        parse(&["--nomad-alloc-id", ALLOC, "--session-check", "c1"]),
        SessionCheck::Id("c1".to_owned())
    );
    assert_eq!(
        parse(&["--nomad-alloc-id", ALLOC, "--session-check", "none"]),
        SessionCheck::TtlOnly
    );
}
