use std::time::Duration;

use tokio::sync::watch;

use super::*;
use crate::consul::fake::FakeConsul;
use crate::consul::{CatalogRegistration, TxnOp};

const KEY: &str = "proxy-operator/leader";

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
fn a_forbidden_write_is_neither_deposed_nor_retryable() {
    let e = Fence::new(KEY, "s1").classify(consul::Error::injected("txn", 403, "denied"));
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

/// A Consul with these nodes registered: like the real one, it refuses a session on a node it
/// doesn't know.
async fn consul_with_nodes(nodes: &[&str]) -> FakeConsul {
    let consul = FakeConsul::new();
    for node in nodes {
        consul
            .catalog_register(&CatalogRegistration {
                node: (*node).to_owned(),
                address: "127.0.0.1".to_owned(),
                ..CatalogRegistration::default()
            })
            .await
            .expect("registering a node in the fake");
    }
    consul
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
    let consul = consul_with_nodes(&["n1"]).await;
    let handle = Elector::spawn(consul.clone(), config("n1"));
    let mut rx = handle.subscribe();
    let t = leading(&mut rx).await;
    assert_eq!(t.holder.node, "n1");
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
async fn a_renewal_answering_a_longer_ttl_schedules_the_next_from_it() {
    let consul = consul_with_nodes(&["n1"]).await;
    consul.set_renew_ttl(Duration::from_secs(60));
    let handle = Elector::spawn(consul.clone(), config("n1"));
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
    let consul = consul_with_nodes(&["n1"]).await;
    let handle = Elector::spawn(consul.clone(), config("n1"));
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
    let consul = consul_with_nodes(&["n1", "n2"]).await;
    let leader = Elector::spawn(consul.clone(), config("n1"));
    leading(&mut leader.subscribe()).await;
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
