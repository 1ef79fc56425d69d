//! A blocking watch against a server that answers at once (a new index every time) never
//! exceeds the configured request rates: the watch's own pacing, and the client's rate limit.
#![allow(clippy::unwrap_used, clippy::panic)] // tests fail loudly

use std::net::SocketAddr;
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use proxy_operator::consul::{ConsulApi, ConsulClient};
use proxy_operator::transport::{Api, ClientConfig, Pacing, RateLimit, Watch};

/// A Consul KV endpoint that never blocks and always reports a new index.
async fn eager_server() -> (SocketAddr, Arc<Mutex<Vec<Instant>>>) {
    let hits = Arc::new(Mutex::new(Vec::new()));
    let index = Arc::new(AtomicU64::new(1));
    let (h, i) = (hits.clone(), index.clone());
    let app = axum::Router::new().fallback(move || {
        let (h, i) = (h.clone(), i.clone());
        async move {
            h.lock().unwrap().push(Instant::now());
            let n = i.fetch_add(1, Ordering::SeqCst);
            let body = format!(r#"[{{"Key":"cfg","CreateIndex":1,"ModifyIndex":{n},"LockIndex":0,"Flags":0,"Value":"eA=="}}]"#);
            ([("X-Consul-Index", n.to_string()), ("Content-Type", "application/json".to_owned())], body)
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    (addr, hits)
}

fn client(addr: SocketAddr, rate: Option<RateLimit>) -> ConsulClient {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let mut config = ClientConfig::for_address(Api::Consul, &format!("http://{addr}")).unwrap();
    if let Some(rate) = rate {
        config.rate_limit = rate;
    }
    ConsulClient::new(&config).unwrap()
}

/// Runs a watch loop for `duration` and returns how many requests the server saw.
async fn run_watch(client: &ConsulClient, mut watch: Watch, duration: Duration) -> usize {
    let deadline = Instant::now() + duration;
    let mut answers = 0;
    while Instant::now() < deadline {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, watch.next(|q| client.kv_get("cfg", q))).await {
            Ok(result) => {
                result.unwrap();
                answers += 1;
            }
            Err(_) => break,
        }
    }
    answers
}

/// The most requests seen in any window of `window` length.
fn max_in_window(hits: &[Instant], window: Duration) -> usize {
    (0..hits.len())
        .map(|i| {
            hits[i..]
                .iter()
                .take_while(|t| **t - hits[i] < window)
                .count()
        })
        .max()
        .unwrap_or(0)
}

#[tokio::test]
async fn the_watch_paces_itself_against_a_server_that_answers_at_once() {
    let (addr, hits) = eager_server().await;
    let c = client(addr, None);
    let pacing = Pacing {
        burst: 2,
        interval: Duration::from_millis(250),
    };
    let answers = run_watch(
        &c,
        Watch::new(Duration::from_secs(60)).with_pacing(pacing),
        Duration::from_secs(2),
    )
    .await;
    let hits = hits.lock().unwrap().clone();
    assert_eq!(hits.len(), answers);
    // Burst 2, then one per 250 ms: at most 2 + 2 s / 250 ms = 10 requests, and at least a few.
    assert!(
        (6..=10).contains(&hits.len()),
        "{} requests in 2 s",
        hits.len()
    );
    assert!(
        max_in_window(&hits, Duration::from_millis(1000)) <= 2 + 4,
        "{hits:?}"
    );
}

#[tokio::test]
async fn the_client_rate_limit_caps_a_watch_that_paces_nothing() {
    let (addr, hits) = eager_server().await;
    let rate = RateLimit {
        per_second: NonZeroU32::new(10).unwrap(),
        burst: NonZeroU32::new(5).unwrap(),
    };
    let c = client(addr, Some(rate));
    let no_pacing = Pacing {
        burst: 10_000,
        interval: Duration::from_micros(1),
    };
    run_watch(
        &c,
        Watch::new(Duration::from_secs(60)).with_pacing(no_pacing),
        Duration::from_secs(2),
    )
    .await;
    let hits = hits.lock().unwrap().clone();
    // Burst 5, then 10/s: at most 5 + 20 in 2 s; a spinning loop would make thousands.
    assert!(
        (15..=26).contains(&hits.len()),
        "{} requests in 2 s",
        hits.len()
    );
    assert!(
        max_in_window(&hits, Duration::from_millis(1000)) <= 5 + 10 + 1,
        "burst + rate per second"
    );
}
