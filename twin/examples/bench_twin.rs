//! `scripts/bench twin`: blocking-query wake-up latency with 1, 100 and 1,000 watchers, KV write
//! throughput, and RSS idle and with 1,000 watchers. Run with `--release`.
//!
//! Watchers are raw HTTP/1.1 connections (one blocking `GET /v1/kv/bench/key?index=N` each), so
//! the client side costs little next to the twin; latency runs from just before the PUT is sent to
//! the first byte of each watcher's answer. The twin runs in this process, so RSS includes the
//! load generator (small: raw sockets, no HTTP client state).
#![forbid(unsafe_code)]

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use hashistack_twin::{Twin, TwinConfig};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1).and_then(|v| v.parse().ok()))
        })
        .unwrap_or(0)
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((p / 100.0) * (sorted.len() as f64 - 1.0)).round() as usize;
    sorted[rank.min(sorted.len() - 1)]
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1000.0)
}

/// One row of the wake-up table: samples, p50, p99 and max of the sorted `lat`.
fn latency_row(label: &str, lat: &[Duration]) {
    println!(
        "| {label} | {} | {} | {} | {} |",
        lat.len(),
        ms(percentile(lat, 50.0)),
        ms(percentile(lat, 99.0)),
        ms(lat.last().copied().unwrap_or_default())
    );
}

fn plural(n: usize) -> &'static str {
    if n == 1 { "" } else { "s" }
}

async fn current_index(http: &reqwest::Client, base: &str) -> u64 {
    let resp = http
        .get(format!("{base}/v1/kv/bench/key"))
        .send()
        .await
        .expect("read key");
    resp.headers()
        .get("X-Consul-Index")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .expect("X-Consul-Index")
}

/// One blocking watcher: returns its connection once the request is written; the answer's first
/// byte is awaited by `arrival`.
async fn park(addr: SocketAddr, index: u64) -> TcpStream {
    let mut s = TcpStream::connect(addr).await.expect("connect watcher");
    let _ = s.set_nodelay(true);
    let req =
        format!("GET /v1/kv/bench/key?index={index}&wait=60s HTTP/1.1\r\nHost: bench\r\n\r\n");
    s.write_all(req.as_bytes()).await.expect("send watch");
    s
}

async fn arrival(mut s: TcpStream) -> Instant {
    let mut buf = [0u8; 512];
    let _ = s.read(&mut buf).await;
    Instant::now()
}

/// Runs `rounds` rounds of `watchers` parked watchers woken by one PUT; returns all latencies and
/// the RSS measured while the last round's watchers were parked.
async fn wake_latency(
    twin: &Twin,
    http: &reqwest::Client,
    watchers: usize,
    rounds: usize,
) -> (Vec<Duration>, u64) {
    let base = format!("http://{}", twin.consul_addr());
    let addr = twin.consul_addr();
    let mut all = Vec::with_capacity(watchers * rounds);
    let mut parked_rss = 0;
    for round in 0..rounds {
        let index = current_index(http, &base).await;
        let baseline = twin.consul().watchers();
        let mut conns = Vec::with_capacity(watchers);
        for _ in 0..watchers {
            conns.push(park(addr, index).await);
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        while twin.consul().watchers() < baseline + watchers && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        parked_rss = rss_kib();
        let tasks: Vec<_> = conns
            .into_iter()
            .map(|c| tokio::spawn(arrival(c)))
            .collect();
        tokio::time::sleep(Duration::from_millis(20)).await;
        let t0 = Instant::now();
        let resp = http
            .put(format!("{base}/v1/kv/bench/key"))
            .body(format!("round-{round}"))
            .send()
            .await;
        assert!(
            resp.map(|r| r.status().is_success()).unwrap_or(false),
            "PUT failed"
        );
        for t in tasks {
            let at = t.await.expect("watcher task");
            all.push(at.saturating_duration_since(t0));
        }
    }
    all.sort();
    (all, parked_rss)
}

/// The wake mechanism alone: `watchers` tasks parked in `blocking::block_until` on the twin's
/// change channel (what each HTTP blocking query runs), woken by one store write.
async fn wake_latency_in_process(twin: &Twin, watchers: usize, rounds: usize) -> Vec<Duration> {
    let consul = twin.consul().clone();
    let mut all = Vec::with_capacity(watchers * rounds);
    for round in 0..rounds {
        let index = consul.read(|s| s.kv_key_index("bench/key"));
        let baseline = consul.watchers();
        let tasks: Vec<_> = (0..watchers)
            .map(|_| {
                let consul = consul.clone();
                tokio::spawn(async move {
                    let compute = || {
                        consul
                            .read(|s| (s.kv_key_index("bench/key"), s.kv_get("bench/key").cloned()))
                    };
                    hashistack_twin::blocking::block_until(
                        consul.changes(),
                        index,
                        Duration::from_secs(60),
                        compute,
                    )
                    .await;
                    Instant::now()
                })
            })
            .collect();
        while consul.watchers() < baseline + watchers {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        let t0 = Instant::now();
        let value = format!("inproc-{round}").into_bytes();
        let _ = consul.write(|s| {
            s.kv_put(
                "bench/key",
                value,
                0,
                &hashistack_twin::consul::store::PutMode::Set,
                tokio::time::Instant::now(),
            )
        });
        for t in tasks {
            all.push(t.await.expect("watcher").saturating_duration_since(t0));
        }
    }
    all.sort();
    all
}

async fn write_throughput(base: &str, writers: usize, period: Duration) -> f64 {
    let started = Instant::now();
    let mut tasks = Vec::new();
    for w in 0..writers {
        let base = base.to_string();
        tasks.push(tokio::spawn(async move {
            let http = reqwest::Client::new();
            let mut n = 0u64;
            while started.elapsed() < period {
                let url = format!("{base}/v1/kv/bench/w{w}/k{}", n % 100);
                if http
                    .put(url)
                    .body(format!("value-{n}"))
                    .send()
                    .await
                    .map(|r| r.status().is_success())
                    .unwrap_or(false)
                {
                    n += 1;
                }
            }
            n
        }));
    }
    let mut total = 0;
    for t in tasks {
        total += t.await.unwrap_or(0);
    }
    total as f64 / started.elapsed().as_secs_f64()
}

#[tokio::main]
async fn main() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let twin = Twin::start(TwinConfig::default())
        .await
        .expect("start twin");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let idle_rss = rss_kib();
    let http = reqwest::Client::new();
    let base = format!("http://{}", twin.consul_addr());
    http.put(format!("{base}/v1/kv/bench/key"))
        .body("0")
        .send()
        .await
        .expect("seed key");

    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!(
        "hashistack-twin benchmark ({} CPUs, load average at start: {})",
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1),
        load.split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" ")
    );
    println!();
    println!(
        "| blocking-query wake-up after a KV write (HTTP: PUT sent -> first byte at each watcher) | samples | p50 | p99 | max |"
    );
    println!("|---|---:|---:|---:|---:|");
    let mut rss_1000 = 0;
    for (watchers, rounds) in [(1usize, 200usize), (100, 20), (1000, 5)] {
        let (lat, rss) = wake_latency(&twin, &http, watchers, rounds).await;
        if watchers == 1000 {
            rss_1000 = rss;
        }
        latency_row(
            &format!("{watchers} HTTP watcher{}", plural(watchers)),
            &lat,
        );
    }
    for (watchers, rounds) in [(1usize, 200usize), (100, 20), (1000, 10)] {
        let lat = wake_latency_in_process(&twin, watchers, rounds).await;
        let label = format!(
            "{watchers} in-process waiter{} (mechanism only, no HTTP)",
            plural(watchers)
        );
        latency_row(&label, &lat);
    }
    println!();
    println!("| KV write throughput (PUT over HTTP keep-alive, 2 s) | writes/s |");
    println!("|---|---:|");
    for writers in [1usize, 8] {
        let rate = write_throughput(&base, writers, Duration::from_secs(2)).await;
        println!(
            "| {writers} concurrent writer{} | {rate:.0} |",
            if writers == 1 { "" } else { "s" }
        );
    }
    println!();
    println!("| RSS (VmRSS of the process) | MiB |");
    println!("|---|---:|");
    println!("| idle | {:.1} |", idle_rss as f64 / 1024.0);
    println!(
        "| with 1,000 parked watchers | {:.1} |",
        rss_1000 as f64 / 1024.0
    );
    twin.shutdown().await;
}
