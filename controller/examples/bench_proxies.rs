//! `scripts/bench proxies`: the design's proxy performance matrix, measured (issue 14).
//!
//! For real Traefik and real Caddy (`.venv/bin`), each run by the twin as the operator's
//! `raw_exec` job from a document in KV (the operator in-process, as in the end-to-end tests),
//! side by side in one run:
//! - direct to the backend (the floor; one plain HTTP backend on 127.0.0.1 with a 2 KiB body);
//! - the proxy as the operator renders it with no policies (`securityHeaders` off, no
//!   middlewares);
//! - the proxy as the operator renders it with the default policies on: security headers, a rate
//!   limit with a ceiling no run reaches, an IP allow list holding 127.0.0.1, compression — each
//!   where the proxy's renderer expresses it (a middleware validation refuses for the proxy is
//!   left out and named in the table's notes).
//!
//! Each proxy setup is a fresh cluster, so its idle RSS (`VmRSS` of the process listening on the
//! entry point, after it is Ready and idle for a second) is not inflated by an earlier run.
//! Throughput and latency come from `wrk` (Debian) at fixed concurrency with
//! `Accept-Encoding: gzip`, after a warm-up; every answer must be a 2xx or the row says how many
//! were not. Hot reload is measured on the policies cluster: a `securityHeaders` toggle written
//! to `<prefix>/config` until the first response through the proxy shows it.
//!
//! Flags: `--duration SECS` (10), `--connections N` (32), `--threads N` (2), `--reloads N` (5
//! per round), `--rounds N` (3: the setups interleaved, each row the median over the rounds).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::print_stdout,
    clippy::print_stderr
)]

#[path = "../../tests/edge_cluster/mod.rs"]
mod edge_cluster;
#[path = "../../tests/support/mod.rs"]
mod support;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use edge_cluster::Cluster;
use proxy_operator::spec::ProxyKind;
use serde_json::{Value, json};

const HOST: &str = "app.localhost";
/// The backend's body: text, larger than the compression threshold (1 KiB by default).
const BODY_BYTES: usize = 2048;

#[derive(Clone, Copy)]
struct Args {
    duration: u64,
    connections: u32,
    threads: u32,
    reloads: usize,
    rounds: usize,
}

fn args() -> Args {
    let mut a = Args {
        duration: 10,
        connections: 32,
        threads: 2,
        reloads: 5,
        rounds: 3,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || -> u64 {
            it.next()
                .and_then(|v| v.parse().ok())
                .unwrap_or_else(|| panic!("{flag} needs a number"))
        };
        match flag.as_str() {
            "--duration" => a.duration = value(),
            "--connections" => a.connections = u32::try_from(value()).unwrap(),
            "--threads" => a.threads = u32::try_from(value()).unwrap(),
            "--reloads" => a.reloads = usize::try_from(value()).unwrap(),
            "--rounds" => a.rounds = usize::try_from(value()).unwrap().max(1),
            other => panic!(
                "unknown flag {other}; flags: --duration SECS --connections N --threads N --reloads N --rounds N"
            ),
        }
    }
    a
}

/// `wrk` on PATH, or the way to install it.
fn wrk_bin() -> PathBuf {
    std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default())
        .map(|d| d.join("wrk"))
        .find(|p| p.is_file())
        .unwrap_or_else(|| {
            eprintln!(
                "wrk (the load generator) is missing: as root run `apt-get update && apt-get install -y wrk` \
                 (scripts/bootstrap does it when run as root)"
            );
            std::process::exit(2);
        })
}

/// A plain HTTP backend on 127.0.0.1 answering every request with the same text body.
async fn start_backend() -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let body: String = "proxy-operator bench body; "
        .chars()
        .cycle()
        .take(BODY_BYTES)
        .collect();
    let app = axum::Router::new().fallback(move || {
        let body = body.clone();
        async move { ([("content-type", "text/plain")], body) }
    });
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    addr
}

/// One wrk run's figures.
#[derive(Clone, Copy, Default)]
struct Load {
    rps: f64,
    p50_us: f64,
    p95_us: f64,
    p99_us: f64,
    /// Non-2xx answers plus socket errors.
    bad: u64,
}

/// Prints the figures wrk's Lua `done` hook sees, on one line (latencies in microseconds).
const WRK_SCRIPT: &str = r#"
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format("BENCH %d %d %d %d %d %d\n", summary.requests, summary.duration,
    latency:percentile(50), latency:percentile(95), latency:percentile(99),
    e.status + e.connect + e.read + e.write + e.timeout))
end
"#;

fn wrk(bin: &Path, script: &Path, port: u16, secs: u64, a: &Args) -> Load {
    let out = Command::new(bin)
        .arg(format!("-t{}", a.threads))
        .arg(format!("-c{}", a.connections))
        .arg(format!("-d{secs}s"))
        .arg("-s")
        .arg(script)
        .args([
            "-H",
            &format!("Host: {HOST}"),
            "-H",
            "Accept-Encoding: gzip",
        ])
        .arg(format!("http://127.0.0.1:{port}/"))
        .output()
        .expect("run wrk");
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text
        .lines()
        .find_map(|l| l.strip_prefix("BENCH "))
        .unwrap_or_else(|| {
            panic!(
                "wrk printed no figures: {text}{}",
                String::from_utf8_lossy(&out.stderr)
            )
        });
    let n: Vec<f64> = line
        .split_whitespace()
        .map(|v| v.parse().unwrap())
        .collect();
    Load {
        rps: n[0] / (n[1] / 1e6),
        p50_us: n[2],
        p95_us: n[3],
        p99_us: n[4],
        bad: n[5] as u64,
    }
}

/// Warm-up (discarded), then the measured run.
fn measure(bin: &Path, script: &Path, port: u16, a: &Args) -> Load {
    let _ = wrk(bin, script, port, 2, a);
    wrk(bin, script, port, a.duration, a)
}

fn rss_kib(pid: u32) -> Option<u64> {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

fn proxy_bin(proxy: ProxyKind) -> PathBuf {
    match proxy {
        ProxyKind::Traefik => support::traefik_bin(),
        ProxyKind::Caddy => support::caddy_bin(),
    }
}

/// The default policies, each kept only where validation accepts it for `proxy`; returns the
/// middlewares and the notes for the ones left out.
fn default_policies(proxy: ProxyKind, base: &Value) -> (Value, Vec<String>) {
    let candidates = [
        ("securityHeaders", json!({"enabled": true})),
        // A ceiling no run here reaches (per client, and wrk is one client).
        (
            "rateLimit",
            json!({"average": 1_000_000_000u64, "burst": 1_000_000_000u64}),
        ),
        ("ipAllowList", json!({"sourceRange": ["127.0.0.0/8"]})),
        ("compress", json!({})),
    ];
    let mut kept = serde_json::Map::new();
    let mut notes = Vec::new();
    for (field, value) in candidates {
        let mut doc = base.clone();
        doc["spec"]["middlewares"] = json!({ field: value.clone() });
        match proxy_operator::spec::load(&serde_json::to_vec(&doc).unwrap()) {
            Ok(_) => {
                kept.insert(field.to_owned(), value);
            }
            Err(e) => {
                let first = e.to_string();
                let first = first.lines().next().unwrap_or_default().to_owned();
                notes.push(format!("{proxy:?}: {field} not rendered ({first})"));
            }
        }
    }
    (Value::Object(kept), notes)
}

/// A row of the table.
struct Row {
    proxy: String,
    setup: &'static str,
    rss_kib: Option<u64>,
    load: Load,
}

/// What every setup shares: the load generator, its script, the backend and the flags.
struct Rig {
    wrk: PathBuf,
    script: PathBuf,
    backend: SocketAddr,
    args: Args,
}

/// The proxy setups, each on a fresh cluster.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Setup {
    /// `securityHeaders` off, no middlewares.
    Bare,
    /// The default policies (those the proxy's renderer expresses).
    Defaults,
    /// The default policies without compression: shows what compression costs on its own.
    DefaultsWithoutCompress,
}

impl Setup {
    fn label(self) -> &'static str {
        match self {
            Setup::Bare => "no policies",
            Setup::Defaults => "default policies",
            Setup::DefaultsWithoutCompress => "default policies − compress",
        }
    }
}

/// What one proxy setup measured.
struct Measured {
    row: Row,
    reloads: Vec<Duration>,
    notes: Vec<String>,
    /// The middlewares the document carried.
    middlewares: Vec<String>,
}

/// Starts a fresh cluster running `proxy` in `setup`, measures idle RSS and the load, and with
/// the default policies `args.reloads` hot reloads of a `securityHeaders` toggle.
async fn run_setup(rig: &Rig, proxy: ProxyKind, setup: Setup) -> Measured {
    let cluster = Cluster::start().await;
    cluster
        .register("app", "app-1", rig.backend.port(), "passing")
        .await;
    let mut doc = cluster.doc(proxy, "localhost", &proxy_bin(proxy).display().to_string());
    let (middlewares, mut notes) = match setup {
        Setup::Bare => (json!({"securityHeaders": {"enabled": false}}), Vec::new()),
        Setup::Defaults => default_policies(proxy, &doc),
        Setup::DefaultsWithoutCompress => {
            let (mut m, _) = default_policies(proxy, &doc);
            if let Some(m) = m.as_object_mut() {
                m.remove("compress");
            }
            (m, Vec::new())
        }
    };
    let names: Vec<String> = middlewares
        .as_object()
        .map(|m| m.keys().cloned().collect())
        .unwrap_or_default();
    if setup == Setup::Defaults {
        notes.push(format!("{proxy:?} default policies: {}", names.join(", ")));
    }
    let reloads = if setup == Setup::Defaults {
        rig.args.reloads
    } else {
        0
    };
    doc["spec"]["middlewares"] = middlewares;
    cluster.put_config(&doc).await;
    cluster.wait_ready(proxy).await;
    let served = support::eventually(Duration::from_secs(30), || async {
        support::get_with_host(cluster.web, HOST, "/")
            .await
            .filter(|s| s.status == 200)
    })
    .await
    .unwrap_or_else(|| panic!("{proxy:?} ({}) never served {HOST}", setup.label()));
    let encoded = reqwest::Client::builder()
        .no_proxy()
        .build()
        .unwrap()
        .get(format!("http://127.0.0.1:{}/", cluster.web))
        .header("Host", HOST)
        .header("Accept-Encoding", "gzip")
        .send()
        .await
        .ok()
        .and_then(|r| {
            r.headers()
                .get("content-encoding")
                .and_then(|v| v.to_str().ok().map(str::to_owned))
        });
    eprintln!(
        "{proxy:?} {}: served; x-frame-options={:?}, content-encoding with gzip asked={encoded:?}",
        setup.label(),
        served.header("x-frame-options")
    );
    tokio::time::sleep(Duration::from_secs(1)).await;
    let pid = support::pid_listening_on(cluster.web).expect("the proxy listens on web");
    let rss = rss_kib(pid);
    let (wb, sc, web, args) = (rig.wrk.clone(), rig.script.clone(), cluster.web, rig.args);
    let load = tokio::task::spawn_blocking(move || measure(&wb, &sc, web, &args))
        .await
        .unwrap();

    let mut times = Vec::new();
    let client = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(2))
        .build()
        .unwrap();
    let mut headers_on = served.header("x-frame-options").is_some();
    for _ in 0..reloads {
        headers_on = !headers_on;
        doc["spec"]["middlewares"]["securityHeaders"] = json!({"enabled": headers_on});
        let started = Instant::now();
        cluster.put_config(&doc).await;
        loop {
            let seen = client
                .get(format!("http://127.0.0.1:{}/", cluster.web))
                .header("Host", HOST)
                .send()
                .await
                .ok()
                .map(|r| r.headers().contains_key("x-frame-options"));
            if seen == Some(headers_on) {
                times.push(started.elapsed());
                break;
            }
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "{proxy:?}: a headers toggle was not applied within 60 s"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        // Let the operator finish the pass (status write) before the next edit.
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    let name = match proxy {
        ProxyKind::Traefik => "traefik",
        ProxyKind::Caddy => "caddy",
    };
    Measured {
        row: Row {
            proxy: name.to_owned(),
            setup: setup.label(),
            rss_kib: rss,
            load,
        },
        reloads: times,
        notes,
        middlewares: names,
    }
}

fn ms(us: f64) -> String {
    format!("{:.2} ms", us / 1000.0)
}

/// Every round's figures for one row, summarised as medians.
struct Series {
    proxy: String,
    setup: &'static str,
    rss_kib: Vec<u64>,
    loads: Vec<Load>,
}

impl Series {
    fn median(&self, of: impl Fn(&Load) -> f64) -> f64 {
        let mut v: Vec<f64> = self.loads.iter().map(of).collect();
        v.sort_by(f64::total_cmp);
        v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
    }

    fn summary(&self) -> Load {
        Load {
            rps: self.median(|l| l.rps),
            p50_us: self.median(|l| l.p50_us),
            p95_us: self.median(|l| l.p95_us),
            p99_us: self.median(|l| l.p99_us),
            bad: self.loads.iter().map(|l| l.bad).sum(),
        }
    }
}

fn series<'a>(all: &'a mut Vec<Series>, proxy: &str, setup: &'static str) -> &'a mut Series {
    let at = match all
        .iter()
        .position(|s| s.proxy == proxy && s.setup == setup)
    {
        Some(at) => at,
        None => {
            all.push(Series {
                proxy: proxy.to_owned(),
                setup,
                rss_kib: Vec::new(),
                loads: Vec::new(),
            });
            all.len() - 1
        }
    };
    &mut all[at]
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let a = args();
    let wrk = wrk_bin();
    let scratch = tempfile::tempdir().unwrap();
    let script = scratch.path().join("report.lua");
    std::fs::write(&script, WRK_SCRIPT).unwrap();
    let backend = start_backend().await;
    let rig = Rig {
        wrk,
        script,
        backend,
        args: a,
    };

    // Rounds interleave the setups, so load from elsewhere on a shared machine falls on all of
    // them alike; each row is the median over the rounds.
    let mut all: Vec<Series> = Vec::new();
    let mut notes = Vec::new();
    let mut reloads: Vec<(ProxyKind, Vec<Duration>)> = Vec::new();
    let mut compress_rendered = [true, true];
    for round in 0..a.rounds {
        let (wb, sc, args) = (rig.wrk.clone(), rig.script.clone(), a);
        let floor = tokio::task::spawn_blocking(move || measure(&wb, &sc, backend.port(), &args))
            .await
            .unwrap();
        series(&mut all, "-", "direct (floor)").loads.push(floor);
        for (i, proxy) in [ProxyKind::Traefik, ProxyKind::Caddy]
            .into_iter()
            .enumerate()
        {
            for setup in [Setup::Bare, Setup::Defaults, Setup::DefaultsWithoutCompress] {
                if setup == Setup::DefaultsWithoutCompress && !compress_rendered[i] {
                    continue;
                }
                let m = run_setup(&rig, proxy, setup).await;
                if setup == Setup::Defaults {
                    compress_rendered[i] = m.middlewares.iter().any(|n| n == "compress");
                    match reloads.iter_mut().find(|(p, _)| *p == proxy) {
                        Some((_, times)) => times.extend(m.reloads),
                        None => reloads.push((proxy, m.reloads)),
                    }
                }
                if round == 0 {
                    notes.extend(m.notes);
                }
                let row = series(&mut all, &m.row.proxy, m.row.setup);
                row.loads.push(m.row.load);
                row.rss_kib.extend(m.row.rss_kib);
            }
        }
    }

    let floor = all[0].summary();
    println!(
        "\nproxies: wrk -t{} -c{} -d{}s (after a 2 s warm-up), Accept-Encoding: gzip, {} B text body; \
         127.0.0.1, {} CPUs; medians over {} interleaved rounds, each proxy row a fresh cluster",
        a.threads,
        a.connections,
        a.duration,
        BODY_BYTES,
        std::thread::available_parallelism().map_or(0, usize::from),
        a.rounds
    );
    println!(
        "| proxy | setup | idle RSS | req/s | req/s range | × floor | p50 | p95 | p99 | non-2xx/errors |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|");
    for s in &all {
        let l = s.summary();
        let mut rss = s.rss_kib.clone();
        rss.sort_unstable();
        let (lo, hi) = s
            .loads
            .iter()
            .map(|l| l.rps)
            .fold((f64::MAX, 0.0f64), |(lo, hi), r| (lo.min(r), hi.max(r)));
        println!(
            "| {} | {} | {} | {:.0} | {:.0}–{:.0} | {:.2} | {} | {} | {} | {} |",
            s.proxy,
            s.setup,
            rss.get(rss.len() / 2)
                .map_or("-".to_owned(), |k| format!("{:.1} MiB", *k as f64 / 1024.0)),
            l.rps,
            lo,
            hi,
            l.rps / floor.rps,
            ms(l.p50_us),
            ms(l.p95_us),
            ms(l.p99_us),
            l.bad
        );
    }
    println!();
    for proxy in ["traefik", "caddy"] {
        let find = |setup: Setup| {
            all.iter()
                .find(|s| s.proxy == proxy && s.setup == setup.label())
                .map(Series::summary)
        };
        let (Some(bare), Some(full)) = (find(Setup::Bare), find(Setup::Defaults)) else {
            continue;
        };
        let cost = 1.0 - full.rps / bare.rps;
        let dp95 = (full.p95_us - bare.p95_us) / 1000.0;
        println!(
            "{proxy}: the default policy chain costs {:.1} % req/s and {:+.2} ms p95 vs no policies (goal < 10 %, < 1 ms: {})",
            cost * 100.0,
            dp95,
            if cost < 0.10 && dp95 < 1.0 {
                "met"
            } else {
                "not met"
            }
        );
    }
    for (proxy, mut times) in reloads {
        times.sort();
        if let (Some(min), Some(max)) = (times.first(), times.last()) {
            println!(
                "{proxy:?}: hot reload (securityHeaders toggle in KV → first response showing it): median {:?}, min {:?}, max {:?} over {}",
                times[times.len() / 2],
                min,
                max,
                times.len()
            );
        }
    }
    println!(
        "design claims (bigger machines): Caddy 10K+ req/s, p95 < 20 ms; Traefik 15K+ req/s, p95 < 15 ms"
    );
    for note in notes {
        println!("note: {note}");
    }
}
