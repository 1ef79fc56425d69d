//! Backend health and load balancing through real proxies (issue 14, "Backend health and load
//! balancing"): two instances of one Consul catalog service behind real Traefik and real Caddy,
//! each run by the twin as the operator's `raw_exec` proxy job, with the operator in-process on
//! the real HTTP clients.
//!
//! For each proxy: while both instances pass their Consul check, requests reach both; when one
//! turns critical (its check re-registered with `Status: critical`, as an agent's check update
//! lands in the catalog) it gets no new requests within the provider's refresh; when it passes
//! again it gets traffic again. Which instance answered is read from the `X-Backend` header each
//! real backend sets, and counted on the backend side as well.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "edge_cluster/mod.rs"]
mod edge_cluster;
#[path = "support/mod.rs"]
mod support;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use edge_cluster::{Cluster, REFRESH};
use proxy_operator::spec::ProxyKind;
use support::get_with_host;
use tokio::task::JoinHandle;

const SERVICE: &str = "app";
const HOST: &str = "app.localhost";
/// What the test allows on top of the refresh on this small, shared machine: the provider's
/// next poll, the router rebuild, and the in-flight requests of the old backend set.
const SLACK: Duration = Duration::from_secs(6);
/// Requests per sample: enough that round-robin or random balancing over two instances reaches
/// both with overwhelming probability (random: 2^-39 to miss one).
const SAMPLE: usize = 40;

/// A real HTTP backend on 127.0.0.1 that names itself in `X-Backend` and counts what it serves,
/// so "no new requests" is checked where the requests would land, not only in the answers.
struct CountingBackend {
    addr: SocketAddr,
    served: Arc<AtomicU64>,
    task: JoinHandle<()>,
}

impl CountingBackend {
    async fn start(name: &'static str) -> CountingBackend {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let served = Arc::new(AtomicU64::new(0));
        let counter = Arc::clone(&served);
        let app = axum::Router::new().fallback(move || {
            let counter = Arc::clone(&counter);
            async move {
                counter.fetch_add(1, Ordering::SeqCst);
                ([("X-Backend", name)], name)
            }
        });
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        CountingBackend { addr, served, task }
    }

    fn served(&self) -> u64 {
        self.served.load(Ordering::SeqCst)
    }
}

impl Drop for CountingBackend {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Sends [`SAMPLE`] requests for [`HOST`] on `web` one after the other and counts the answers
/// by the backend that served them (`"<status>"` for an answer without `X-Backend`, `"down"`
/// for a failed connection).
async fn sample(web: u16) -> BTreeMap<String, usize> {
    let mut seen = BTreeMap::new();
    for _ in 0..SAMPLE {
        let key = match get_with_host(web, HOST, "/hello").await {
            Some(s) if s.status == 200 => s.header("x-backend").unwrap_or("200?").to_owned(),
            Some(s) => s.status.to_string(),
            None => "down".to_owned(),
        };
        *seen.entry(key).or_insert(0) += 1;
    }
    seen
}

/// Samples until `done` holds for a sample, or `within` passes; returns the time it took and
/// the sample that satisfied it, or panics with the last one.
async fn until(
    web: u16,
    what: &str,
    within: Duration,
    done: impl Fn(&BTreeMap<String, usize>) -> bool,
) -> (Duration, BTreeMap<String, usize>) {
    let started = Instant::now();
    loop {
        let seen = sample(web).await;
        if done(&seen) {
            return (started.elapsed(), seen);
        }
        assert!(
            started.elapsed() < within,
            "{what}: not within {within:?}; last sample: {seen:?}"
        );
    }
}

fn only(seen: &BTreeMap<String, usize>, name: &str) -> bool {
    seen.len() == 1 && seen.get(name) == Some(&SAMPLE)
}

fn both(seen: &BTreeMap<String, usize>) -> bool {
    seen.len() == 2
        && seen.get("a").is_some_and(|n| *n > 0)
        && seen.get("b").is_some_and(|n| *n > 0)
}

/// The scenario, the same for both proxies.
async fn only_passing_instances_get_traffic(proxy: ProxyKind) {
    let cluster = Cluster::start().await;
    let a = CountingBackend::start("a").await;
    let b = CountingBackend::start("b").await;
    cluster
        .register(SERVICE, "app-a", a.addr.port(), "passing")
        .await;
    cluster
        .register(SERVICE, "app-b", b.addr.port(), "passing")
        .await;
    let bin = match proxy {
        ProxyKind::Traefik => support::traefik_bin(),
        ProxyKind::Caddy => support::caddy_bin(),
    };
    let doc = cluster.doc(proxy, "localhost", &bin.display().to_string());
    cluster.put_config(&doc).await;
    cluster.wait_ready(proxy).await;
    let web = cluster.web;

    // (1) both passing: the proxy balances over both.
    let (t, seen) = until(web, "both instances served", Duration::from_secs(30), both).await;
    println!("{proxy:?}: both passing → {seen:?} (after {t:?})");

    // (2) b turns critical: within the refresh, every request goes to a, and b serves nothing.
    cluster
        .register(SERVICE, "app-b", b.addr.port(), "critical")
        .await;
    assert_eq!(
        cluster.passing(SERVICE).await,
        vec![a.addr.port()],
        "the catalog reports only a passing"
    );
    let (t, _) = until(web, "b removed", REFRESH + SLACK, |s| only(s, "a")).await;
    println!("{proxy:?}: b critical → only a after {t:?} (refresh {REFRESH:?})");
    let b_before = b.served();
    let seen = sample(web).await;
    let seen_again = sample(web).await;
    assert!(
        only(&seen, "a") && only(&seen_again, "a"),
        "{proxy:?}: a critical instance got traffic: {seen:?} then {seen_again:?}"
    );
    assert_eq!(
        b.served(),
        b_before,
        "{proxy:?}: the critical backend served requests after it left the proxy's set"
    );

    // (3) b passes again: it gets traffic again within the refresh.
    cluster
        .register(SERVICE, "app-b", b.addr.port(), "passing")
        .await;
    let b_before = b.served();
    let (t, seen) = until(web, "b back", REFRESH + SLACK, both).await;
    println!("{proxy:?}: b passing again → {seen:?} after {t:?}");
    assert!(b.served() > b_before, "b counted no new request: {seen:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn traefik_sends_traffic_only_to_passing_instances_and_takes_a_recovered_one_back() {
    only_passing_instances_get_traffic(ProxyKind::Traefik).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn caddy_sends_traffic_only_to_passing_instances_and_takes_a_recovered_one_back() {
    only_passing_instances_get_traffic(ProxyKind::Caddy).await;
}
