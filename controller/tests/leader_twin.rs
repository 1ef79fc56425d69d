//! Leader election against the twin with the real Consul client: two candidates, handover on
//! failed renewals, on an invalidated session and on shutdown, and the fence refusing a deposed
//! leader's write.
#![allow(clippy::unwrap_used, clippy::panic)] // tests fail loudly

use std::time::{Duration, Instant};

use hashistack_twin::{Api as TwinApi, Twin, TwinConfig};
use proxy_operator::consul::{ConsulApi, ConsulClient, TxnOp};
use proxy_operator::leader::{
    self, Elector, ElectorConfig, LeaderHandle, Leadership, Term, read_holder,
};
use proxy_operator::transport::{Api, ClientConfig, QueryOptions, RetryPolicy, Token};
use tokio::sync::watch;

const PREFIX: &str = "proxy-operator";
const KEY: &str = "proxy-operator/leader";

async fn twin() -> Twin {
    Twin::start(TwinConfig::default()).await.unwrap()
}

fn client(twin: &Twin) -> ConsulClient {
    client_with_token(twin, None)
}

fn client_with_token(twin: &Twin, token: Option<&str>) -> ConsulClient {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let mut config =
        ClientConfig::for_address(Api::Consul, &format!("http://{}", twin.consul_addr())).unwrap();
    config.token = token.map(Token::new);
    config.retry = RetryPolicy {
        max_retries: 1,
        min_delay: Duration::from_millis(5),
        max_delay: Duration::from_millis(20),
    };
    ConsulClient::new(&config).unwrap()
}

/// A candidate as `run` would start it: the session's node is the agent's own.
async fn candidate(twin: &Twin, allocation: &str) -> (LeaderHandle, watch::Receiver<Leadership>) {
    let consul = client(twin);
    let node = consul.agent_self().await.unwrap().config.node_name;
    let config = ElectorConfig {
        ttl: Duration::from_secs(10),
        allocation: Some(allocation.to_owned()),
        address: Some(format!("127.0.0.1:{}", 9090)),
        ..ElectorConfig::new(PREFIX, node)
    };
    let handle = Elector::spawn(consul, config);
    let rx = handle.subscribe();
    (handle, rx)
}

async fn leads(rx: &mut watch::Receiver<Leadership>, within: Duration) -> Term {
    tokio::time::timeout(within, leader::wait_for_leadership(rx))
        .await
        .expect("no leadership in time")
        .expect("elector stopped")
}

/// Starts two candidates and returns them with the leader first.
async fn pair(
    twin: &Twin,
) -> (
    (LeaderHandle, watch::Receiver<Leadership>, Term),
    (LeaderHandle, watch::Receiver<Leadership>),
) {
    let (a, mut ra) = candidate(twin, "alloc-a").await;
    let ta = leads(&mut ra, Duration::from_secs(5)).await;
    let (b, mut rb) = candidate(twin, "alloc-b").await;
    rb.wait_for(|l| matches!(l, Leadership::Follower { holder: Some(_) }))
        .await
        .unwrap();
    ((a, ra, ta), (b, rb))
}

#[tokio::test]
async fn of_two_candidates_one_leads_and_the_other_follows_naming_the_leader() {
    let t = twin().await;
    let ((a, ra, ta), (b, rb)) = pair(&t).await;
    assert!(ra.borrow().is_leader());
    let Leadership::Follower {
        holder: Some(current),
    } = rb.borrow().clone()
    else {
        panic!("b is not a follower: {:?}", rb.borrow());
    };
    assert_eq!(current.session, ta.session);
    let holder = current.holder.unwrap();
    assert_eq!(holder.allocation.as_deref(), Some("alloc-a"));
    assert!(!holder.since.is_empty());
    // `status` reads the same record.
    let read = read_holder(&client(&t), KEY).await.unwrap().unwrap();
    assert_eq!(read.session, ta.session);
    b.shutdown().await;
    a.shutdown().await;
    assert_eq!(read_holder(&client(&t), KEY).await.unwrap(), None);
}

#[tokio::test]
async fn failing_renewals_end_the_term_and_hand_over_to_the_follower() {
    let t = twin().await;
    let ((a, ra, ta), (b, mut rb)) = pair(&t).await;
    t.faults().fail_path(
        TwinApi::Consul,
        &format!("/v1/session/renew/{}", ta.session),
        500,
    );
    // The first renewal is due at TTL/2 = 5 s.
    tokio::time::timeout(Duration::from_secs(8), ta.lost(ra.clone()))
        .await
        .expect("the leader kept leading with failing renewals");
    let tb = leads(&mut rb, Duration::from_secs(3)).await;
    assert_ne!(tb.session, ta.session);
    assert_eq!(
        read_holder(&client(&t), KEY)
            .await
            .unwrap()
            .unwrap()
            .session,
        tb.session
    );
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test]
async fn an_invalidated_session_hands_over_within_about_a_second() {
    let t = twin().await;
    let ((a, ra, ta), (b, mut rb)) = pair(&t).await;
    let start = Instant::now();
    // As an operator's `consul session destroy` or a reaped TTL would.
    client(&t).session_destroy(&ta.session).await.unwrap();
    tokio::time::timeout(Duration::from_secs(1), ta.lost(ra.clone()))
        .await
        .expect("the leader did not notice its session was gone");
    leads(&mut rb, Duration::from_secs(3)).await;
    let failover = start.elapsed();
    // Lock-delay (1 s) plus round trips.
    assert!(failover < Duration::from_millis(2000), "{failover:?}");
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test]
async fn shutdown_releases_the_lock_and_the_follower_takes_over_without_lock_delay() {
    let t = twin().await;
    let ((a, _ra, _), (b, mut rb)) = pair(&t).await;
    let start = Instant::now();
    a.shutdown().await;
    leads(&mut rb, Duration::from_secs(3)).await;
    let failover = start.elapsed();
    assert!(failover < Duration::from_millis(900), "{failover:?}");
    b.shutdown().await;
}

#[tokio::test]
async fn a_deposed_leaders_fenced_write_is_refused_classified_and_writes_nothing() {
    let t = twin().await;
    let ((a, _ra, ta), (b, mut rb)) = pair(&t).await;
    let stale = ta.fence();
    // Frozen past its TTL: Consul invalidates the session, the follower takes over.
    assert!(t.faults().expire_session(&ta.session));
    let tb = leads(&mut rb, Duration::from_secs(3)).await;
    let c = client(&t);
    let write = vec![TxnOp::Set {
        key: "proxy-operator/status".to_owned(),
        value: b"{\"phase\":\"stale\"}".to_vec(),
    }];
    let err = stale.txn(&c, write.clone()).await.unwrap_err();
    assert!(err.is_deposed(), "{err}");
    assert!(!err.is_retryable());
    assert!(!err.is_conflict(), "never retried as a conflict");
    assert_eq!(
        c.kv_get("proxy-operator/status", QueryOptions::NOW)
            .await
            .unwrap()
            .0,
        None,
        "nothing the deposed leader held reached Consul"
    );
    // The current leader's fenced write goes through.
    tb.fence().txn(&c, write).await.unwrap();
    a.step_down(&ta.session).await;
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test]
async fn a_killed_leader_is_replaced_once_consul_reaps_its_session() {
    let t = twin().await;
    let ((a, _ra, _), (b, mut rb)) = pair(&t).await;
    let start = Instant::now();
    // SIGKILL: no release, no destroy, no more renewals.
    a.abort();
    leads(&mut rb, Duration::from_secs(30)).await;
    let failover = start.elapsed();
    eprintln!("failover after a kill with TTL 10s and lock-delay 1s: {failover:?}");
    // Consul reaps a session between one and two TTLs after its last renewal; then lock-delay.
    assert!(failover > Duration::from_secs(5), "{failover:?}");
    assert!(failover < Duration::from_secs(23), "{failover:?}");
    b.shutdown().await;
}

#[tokio::test]
async fn a_refused_token_is_published_as_the_reason_without_the_token_and_is_terminal() {
    const SENTINEL: &str = "sentinel-7f3c-not-a-valid-token";
    let t = Twin::start(TwinConfig {
        acl_token: Some("the-real-token".to_owned()),
        ..TwinConfig::default()
    })
    .await
    .unwrap();
    let consul = client_with_token(&t, Some(SENTINEL));
    let config = ElectorConfig {
        ttl: Duration::from_secs(10),
        ..ElectorConfig::new(PREFIX, "node-1")
    };
    let handle = Elector::spawn(consul, config);
    let mut rx = handle.subscribe();
    let state = rx
        .wait_for(|l| matches!(l, Leadership::Unknown { error: Some(_) }))
        .await
        .unwrap()
        .clone();
    let Leadership::Unknown { error: Some(error) } = state else {
        unreachable!()
    };
    assert!(error.contains("403"), "{error}");
    assert!(!error.contains(SENTINEL), "{error}");
    assert_eq!(rx.borrow().role(), "unknown");
    let err = read_holder(&client_with_token(&t, Some(SENTINEL)), KEY)
        .await
        .unwrap_err();
    assert!(!err.is_retryable());
    assert!(!err.to_string().contains(SENTINEL), "{err}");
    handle.shutdown().await;
}

#[tokio::test]
async fn a_leader_whose_consul_stops_answering_stands_down_within_the_ttl() {
    let t = twin().await;
    let ((a, ra, ta), (b, mut rb)) = pair(&t).await;
    let start = Instant::now();
    // Every request is held: the renewal at TTL/2 never gets an answer.
    t.faults().pause(TwinApi::Consul);
    tokio::time::timeout(Duration::from_secs(12), ta.lost(ra.clone()))
        .await
        .expect("the leader kept leading without a renewal for longer than the TTL");
    let stood_down = start.elapsed();
    assert!(stood_down <= Duration::from_secs(11), "{stood_down:?}");
    t.faults().resume(TwinApi::Consul);
    leads(&mut rb, Duration::from_secs(25)).await;
    a.shutdown().await;
    b.shutdown().await;
}
