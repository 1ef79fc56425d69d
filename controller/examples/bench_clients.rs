//! `scripts/bench clients`: client overhead against an in-process twin on loopback, and the
//! requests a watch makes while nothing changes.
//!
//! Options: `--requests N` (KV get/put samples, default 2000), `--seconds N` (idle watch
//! duration, default 60).
#![allow(clippy::unwrap_used, clippy::panic)] // a benchmark fails loudly

use std::num::NonZeroU32;
use std::time::{Duration, Instant};

use hashistack_twin::{Api as TwinApi, Twin, TwinConfig};
use proxy_operator::consul::{ConsulApi, ConsulClient};
use proxy_operator::nomad::{NomadApi, NomadClient};
use proxy_operator::transport::{Api, ClientConfig, RateLimit, Watch};

fn arg(name: &str, default: u64) -> u64 {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .map(|v| {
            v.parse()
                .unwrap_or_else(|_| panic!("{name} takes a number"))
        })
        .unwrap_or(default)
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let rank = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[rank.min(sorted.len() - 1)]
}

struct Row {
    what: String,
    requests: usize,
    per_second: f64,
    p50: Duration,
    p99: Duration,
}

async fn measure<F, Fut>(what: &str, n: usize, mut op: F) -> Row
where
    F: FnMut(usize) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    for i in 0..n.min(50) {
        op(i).await; // warm the connection pool
    }
    let mut samples = Vec::with_capacity(n);
    let started = Instant::now();
    for i in 0..n {
        let t = Instant::now();
        op(i).await;
        samples.push(t.elapsed());
    }
    let total = started.elapsed();
    samples.sort();
    Row {
        what: what.to_owned(),
        requests: n,
        per_second: n as f64 / total.as_secs_f64(),
        p50: percentile(&samples, 0.50),
        p99: percentile(&samples, 0.99),
    }
}

#[tokio::main]
async fn main() {
    let requests = arg("--requests", 2000) as usize;
    let seconds = arg("--seconds", 60);
    let _ = rustls::crypto::ring::default_provider().install_default();
    let twin = Twin::start(TwinConfig::default()).await.unwrap();

    // Throughput with the rate limiter opened up, so the numbers are the client's overhead.
    let mut config =
        ClientConfig::for_address(Api::Consul, &format!("http://{}", twin.consul_addr())).unwrap();
    let unlimited = NonZeroU32::new(1_000_000).unwrap();
    config.rate_limit = RateLimit {
        per_second: unlimited,
        burst: unlimited,
    };
    let consul = ConsulClient::new(&config).unwrap();
    let value = vec![b'x'; 512];
    let put = measure("KV put (512 B)", requests, |i| {
        let (c, v) = (&consul, &value);
        async move {
            assert!(
                c.kv_put(&format!("bench/k{}", i % 100), v, None)
                    .await
                    .unwrap()
            );
        }
    })
    .await;
    let get = measure("KV get (512 B)", requests, |i| {
        let c = &consul;
        async move {
            assert!(
                c.kv_get(&format!("bench/k{}", i % 100), Default::default())
                    .await
                    .unwrap()
                    .0
                    .is_some()
            );
        }
    })
    .await;
    let default_rate = ClientConfig::consul_default().rate_limit.per_second;

    println!(
        "client overhead on loopback against the twin (rate limit lifted; default Consul limit {default_rate}/s)"
    );
    println!(
        "{:<18} {:>9} {:>10} {:>10} {:>10}",
        "operation", "requests", "req/s", "p50", "p99"
    );
    for r in [&put, &get] {
        println!(
            "{:<18} {:>9} {:>10.0} {:>10} {:>10}",
            r.what,
            r.requests,
            r.per_second,
            format!("{:.0}µs", r.p50.as_secs_f64() * 1e6),
            format!("{:.0}µs", r.p99.as_secs_f64() * 1e6)
        );
    }

    // Idle watches: one Consul KV watch and one Nomad job watch with the default 5 min wait.
    let consul = ConsulClient::new(
        &ClientConfig::for_address(Api::Consul, &format!("http://{}", twin.consul_addr())).unwrap(),
    )
    .unwrap();
    let nomad = NomadClient::new(
        &ClientConfig::for_address(Api::Nomad, &format!("http://{}", twin.nomad_addr())).unwrap(),
    )
    .unwrap();
    consul
        .kv_put("proxy-operator/config", b"spec: {}", None)
        .await
        .unwrap();
    let (consul_before, nomad_before) = (
        twin.requests(TwinApi::Consul),
        twin.requests(TwinApi::Nomad),
    );
    let kv_watch = tokio::spawn({
        let consul = consul.clone();
        async move {
            let mut w = Watch::new(Duration::from_secs(300));
            loop {
                if w.next(|q| consul.kv_get("proxy-operator/config", q))
                    .await
                    .is_err()
                {
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
        }
    });
    let job_watch = tokio::spawn({
        let nomad = nomad.clone();
        async move {
            let mut w = Watch::new(Duration::from_secs(300));
            loop {
                if w.next(|q| nomad.job_read("proxy", q)).await.is_err() {
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
        }
    });
    tokio::time::sleep(Duration::from_secs(seconds)).await;
    let consul_requests = twin.requests(TwinApi::Consul) - consul_before;
    let nomad_requests = twin.requests(TwinApi::Nomad) - nomad_before;
    kv_watch.abort();
    job_watch.abort();
    println!();
    println!(
        "requests made by an idle watch over {seconds} s (2 = the initial read and the blocking query still open)"
    );
    println!(
        "{:<28} {:>9} {:>22}",
        "watch", "requests", "beyond the open query"
    );
    for (what, n) in [
        ("Consul KV key (wait 5m)", consul_requests),
        ("Nomad job (wait 5m)", nomad_requests),
    ] {
        // The first read answers at once; the second is the blocking query still open.
        println!("{:<28} {:>9} {:>22}", what, n, n.saturating_sub(2));
    }
    twin.shutdown().await;
}
