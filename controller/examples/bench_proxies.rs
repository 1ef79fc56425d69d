//! `scripts/bench proxies`: the design's proxy performance matrix, measured (issue 14).
//!
//! For real Traefik and real Caddy (`.venv/bin`), each run by the twin as the operator's
//! `raw_exec` job from a document in KV (the operator in-process, as in the end-to-end tests):
//! - direct to the backend (the floor; one plain HTTP backend on 127.0.0.1 with a 2 KiB body);
//! - the proxy as the operator renders it with no policies (`securityHeaders` off, no
//!   middlewares);
//! - the proxy as the operator renders it with the default policies on: security headers, a rate
//!   limit with a ceiling no run reaches, an IP allow list holding 127.0.0.0/8, compression — each
//!   where the proxy's renderer expresses it (a middleware validation refuses for the proxy is
//!   left out and named in the notes);
//! - the default policies without compression, and with `--breakdown` each default policy alone,
//!   so the table shows where the cost goes.
//!
//! Fairness on a small shared host: wrk, the backend, the twin and the operator would otherwise
//! fight the proxy for the same cores. By default this process (backend, twin, operator) and wrk
//! are pinned to one CPU and the proxy to another (`taskset`), with `GOMAXPROCS=1` for the Go
//! proxies to match their one-CPU share (`--no-pin` turns it off). One cluster per proxy; its
//! setups are switched by editing the document (the operator hot-reloads the proxy, and each
//! switch waits for the status to report the new document applied), interleaved over rounds
//! (order reversed every other round), so load from elsewhere falls on all setups alike. Each
//! row is the median over the rounds; the cost of a setup is the median of its per-round ratios
//! to "no policies" of the same round.
//!
//! Per setup and round: a saturating `wrk` run (after a 2 s warm-up) gives req/s and latency, and
//! the proxy's CPU time per request (utime + stime from `/proc/<pid>/stat` over the run, divided
//! by the requests served) — the least noisy figure of what a chain costs. A paced `wrk` run
//! (each connection waits `connections / rate` between requests through wrk's `delay` hook; wrk2
//! is not available) gives latency at a fixed offered rate below saturation. Hot reload is a
//! `securityHeaders` toggle written to `<prefix>/config` until the first response shows it.
//!
//! Flags: `--duration SECS` (10), `--connections N` (32), `--threads N` (1), `--rounds N` (3),
//! `--reloads N` (10), `--paced-rate REQ_PER_S` (2000; 0 skips the paced run), `--breakdown`,
//! `--proxy traefik|caddy` (both), `--no-pin`, `--dump DIR` (each setup's live proxy config).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::print_stdout,
    clippy::print_stderr
)]

#[path = "../../tests/edge_cluster/mod.rs"]
mod edge_cluster;
#[path = "common/proxy_bench.rs"]
mod proxy_bench;
#[path = "../../tests/support/mod.rs"]
mod support;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use edge_cluster::Cluster;
use proxy_bench::{
    LOAD_CPU, Load, PROXY_CPU, Wrk, clock_ticks, cpu_seconds, cpu_ticks, pin_self, proxy_command,
    proxy_placement, rendered_chain, rss_kib,
};
use proxy_operator::spec::ProxyKind;
use proxy_operator::spec::status::Phase;
use serde_json::{Value, json};

const HOST: &str = "app.localhost";
/// The backend's body: text, larger than the compression threshold (1 KiB by default).
const BODY_BYTES: usize = 2048;

#[derive(Clone)]
struct Args {
    duration: u64,
    connections: u32,
    threads: u32,
    reloads: usize,
    rounds: usize,
    paced_rate: u64,
    breakdown: bool,
    pin: bool,
    proxies: Vec<ProxyKind>,
    dump: Option<PathBuf>,
}

fn args() -> Args {
    let mut a = Args {
        duration: 10,
        connections: 32,
        threads: 1,
        reloads: 10,
        rounds: 3,
        paced_rate: 2000,
        breakdown: false,
        pin: true,
        proxies: Vec::new(),
        dump: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || -> u64 {
            it.next()
                .and_then(|v| v.parse().ok())
                .unwrap_or_else(|| panic!("{flag} needs a number"))
        };
        match flag.as_str() {
            "--duration" => a.duration = value().max(1),
            "--connections" => a.connections = u32::try_from(value()).unwrap().max(1),
            "--threads" => a.threads = u32::try_from(value()).unwrap().max(1),
            "--reloads" => a.reloads = usize::try_from(value()).unwrap(),
            "--rounds" => a.rounds = usize::try_from(value()).unwrap().max(1),
            "--paced-rate" => a.paced_rate = value(),
            "--breakdown" => a.breakdown = true,
            "--no-pin" => a.pin = false,
            "--dump" => a.dump = it.next().map(PathBuf::from),
            "--proxy" => match it.next().as_deref() {
                Some("traefik") => a.proxies.push(ProxyKind::Traefik),
                Some("caddy") => a.proxies.push(ProxyKind::Caddy),
                other => panic!("--proxy takes traefik or caddy, not {other:?}"),
            },
            other => panic!(
                "unknown flag {other}; flags: --duration SECS --connections N --threads N --rounds N \
                 --reloads N --paced-rate REQ_PER_S --breakdown --proxy traefik|caddy --no-pin --dump DIR"
            ),
        }
    }
    if a.proxies.is_empty() {
        a.proxies = vec![ProxyKind::Traefik, ProxyKind::Caddy];
    }
    a
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

/// What one setup measured in one round.
#[derive(Clone, Copy, Default)]
struct Sample {
    load: Load,
    /// The proxy's CPU time per request served, in microseconds.
    cpu_us: Option<f64>,
    /// The proxy's CPU time over the run's wall time (1.0 = one CPU busy throughout).
    cpu_share: Option<f64>,
    /// What else ran on the proxy's CPU over the run, as a share of it (pinned runs only).
    others_share: Option<f64>,
    paced: Option<Load>,
    rss_kib: Option<u64>,
}

/// Warm-up (discarded), the saturating run with the proxy's CPU time around it (`pid` is the
/// proxy's; none for the floor), then the paced run.
fn measure(wrk: &Wrk, port: u16, pid: Option<u32>, a: &Args, ticks: f64) -> Sample {
    let _ = wrk.run(&wrk.saturate, port, 2);
    let cpu0 = pid.and_then(|p| cpu_seconds(p, ticks));
    let core0 = cpu_ticks(PROXY_CPU);
    let started = Instant::now();
    let load = wrk.run(&wrk.saturate, port, a.duration);
    let wall = started.elapsed().as_secs_f64();
    let core1 = cpu_ticks(PROXY_CPU);
    let used = pid
        .and_then(|p| cpu_seconds(p, ticks))
        .zip(cpu0)
        .map(|(c1, c0)| c1 - c0);
    let others = core0
        .zip(core1)
        .zip(used)
        .filter(|_| a.pin)
        .map(|(((b0, t0), (b1, t1)), u)| ((b1 - b0) - u * ticks) / (t1 - t0).max(1.0));
    let paced = (a.paced_rate > 0).then(|| wrk.run(&wrk.paced, port, a.duration));
    Sample {
        load,
        cpu_us: used.map(|u| u * 1e6 / load.requests.max(1.0)),
        cpu_share: used.map(|u| u / wall),
        others_share: others.map(|o| o.max(0.0)),
        paced,
        rss_kib: pid.and_then(rss_kib),
    }
}

/// The default policies, each kept only where validation accepts it for `proxy`; returns them in
/// the document's order and the notes for the ones left out.
fn default_policies(proxy: ProxyKind, base: &Value) -> (Vec<(&'static str, Value)>, Vec<String>) {
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
    let mut kept = Vec::new();
    let mut notes = Vec::new();
    for (field, value) in candidates {
        let mut doc = base.clone();
        doc["spec"]["middlewares"] = json!({ field: value.clone() });
        match proxy_operator::spec::load(&serde_json::to_vec(&doc).unwrap()) {
            Ok(_) => kept.push((field, value)),
            Err(e) => {
                let first = e.to_string();
                let first = first.lines().next().unwrap_or_default().to_owned();
                notes.push(format!("{proxy:?}: {field} not rendered ({first})"));
            }
        }
    }
    (kept, notes)
}

/// One document variant: a row of the table.
struct Setup {
    label: String,
    middlewares: Value,
}

/// No policies, the defaults, the defaults without compression, and with `breakdown` each
/// default alone (security headers are on by default, so "alone" turns them off for the others).
fn setups(proxy: ProxyKind, base: &Value, breakdown: bool) -> (Vec<Setup>, Vec<String>) {
    let (kept, notes) = default_policies(proxy, base);
    let off = || json!({"securityHeaders": {"enabled": false}});
    let with = |names: &[&str]| {
        let mut m = off();
        for (field, value) in kept.iter().filter(|(f, _)| names.contains(f)) {
            m[*field] = value.clone();
        }
        m
    };
    let names: Vec<&str> = kept.iter().map(|(f, _)| *f).collect();
    let mut out = vec![
        Setup {
            label: "no policies".into(),
            middlewares: off(),
        },
        Setup {
            label: format!("default policies ({})", names.join(", ")),
            middlewares: with(&names),
        },
    ];
    if names.contains(&"compress") {
        let rest: Vec<&str> = names.iter().copied().filter(|n| *n != "compress").collect();
        out.push(Setup {
            label: "default policies − compress".into(),
            middlewares: with(&rest),
        });
    }
    if breakdown {
        for name in &names {
            out.push(Setup {
                label: format!("only {name}"),
                middlewares: with(&[name]),
            });
        }
    }
    (out, notes)
}

/// Writes `doc` and waits until the status reports it applied (a digest other than the one
/// observed before the write, Ready, applied).
async fn apply(cluster: &Cluster, proxy: ProxyKind, doc: &Value) {
    let before = cluster.status().await.and_then(|s| s.observed_digest);
    cluster.put_config(doc).await;
    support::eventually(Duration::from_secs(90), || async {
        cluster.status().await.filter(|s| {
            s.phase == Phase::Ready
                && s.proxy == Some(proxy)
                && s.observed_digest.is_some()
                && s.observed_digest != before
                && s.last_applied_digest == s.observed_digest
        })
    })
    .await
    .unwrap_or_else(|| panic!("{proxy:?}: a document edit was not applied within 90 s"));
    // Let the pass finish (status write, Traefik's provider throttle) before measuring.
    tokio::time::sleep(Duration::from_secs(1)).await;
}

/// The proxy's live configuration: Traefik's `/api/rawdata`, Caddy's `/config/`.
async fn live_config(cluster: &Cluster, proxy: ProxyKind) -> Value {
    let path = match proxy {
        ProxyKind::Traefik => "/api/rawdata",
        ProxyKind::Caddy => "/config/",
    };
    let resp = cluster
        .http
        .get(format!("http://127.0.0.1:{}{path}", cluster.dashboard))
        .send()
        .await
        .expect("reach the proxy's API");
    resp.json().await.unwrap_or(Value::Null)
}

/// Toggles `securityHeaders` `times` times on the default policies document and times each edit
/// until the first response shows it.
async fn hot_reloads(
    cluster: &Cluster,
    proxy: ProxyKind,
    doc: &mut Value,
    times: usize,
) -> Vec<Duration> {
    let client = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(2))
        .build()
        .unwrap();
    let mut headers_on = doc["spec"]["middlewares"]["securityHeaders"]["enabled"] == json!(true);
    let mut out = Vec::new();
    for _ in 0..times {
        headers_on = !headers_on;
        doc["spec"]["middlewares"]["securityHeaders"] = json!({"enabled": headers_on});
        let started = Instant::now();
        cluster.put_config(doc).await;
        loop {
            let seen = client
                .get(format!("http://127.0.0.1:{}/", cluster.web))
                .header("Host", HOST)
                .send()
                .await
                .ok()
                .map(|r| r.headers().contains_key("x-frame-options"));
            if seen == Some(headers_on) {
                out.push(started.elapsed());
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
    out
}

/// Every round's samples of one row.
struct Series {
    proxy: &'static str,
    setup: String,
    samples: Vec<Sample>,
}

fn median(mut v: Vec<f64>) -> f64 {
    v.retain(|x| x.is_finite());
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

fn range(v: &[f64]) -> (f64, f64) {
    v.iter()
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), x| {
            (lo.min(*x), hi.max(*x))
        })
}

fn ms(us: f64) -> String {
    format!("{:.2} ms", us / 1000.0)
}

fn opt(v: f64, f: impl Fn(f64) -> String) -> String {
    if v.is_finite() { f(v) } else { "-".into() }
}

/// Everything one proxy's cluster measured.
struct ProxyRun {
    /// The proxy's process last measured (for the check that it is gone after its cluster).
    pid: u32,
    series: Vec<Series>,
    idle_rss_kib: Option<u64>,
    placement: String,
    reloads: Vec<Duration>,
    notes: Vec<String>,
}

/// One cluster for `proxy`: idle RSS fresh, then the setups interleaved over the rounds (the
/// floor among them), then the hot reloads.
async fn run_proxy(
    proxy: ProxyKind,
    wrk: &Wrk,
    backend: SocketAddr,
    scratch: &Path,
    a: &Args,
) -> ProxyRun {
    let name: &'static str = match proxy {
        ProxyKind::Traefik => "traefik",
        ProxyKind::Caddy => "caddy",
    };
    let ticks = clock_ticks();
    let cluster = Cluster::start().await;
    cluster
        .register("app", "app-1", backend.port(), "passing")
        .await;
    let bin = match proxy {
        ProxyKind::Traefik => support::traefik_bin(),
        ProxyKind::Caddy => support::caddy_bin(),
    };
    let mut doc = cluster.doc(
        proxy,
        "localhost",
        &proxy_command(scratch, proxy, &bin, a.pin),
    );
    let (setups, mut notes) = setups(proxy, &doc, a.breakdown);
    doc["spec"]["middlewares"] = setups[0].middlewares.clone();
    cluster.put_config(&doc).await;
    cluster.wait_ready(proxy).await;
    support::eventually(Duration::from_secs(30), || async {
        support::get_with_host(cluster.web, HOST, "/")
            .await
            .filter(|s| s.status == 200)
    })
    .await
    .unwrap_or_else(|| panic!("{proxy:?} never served {HOST}"));
    tokio::time::sleep(Duration::from_secs(1)).await;
    let pid = support::pid_listening_on(cluster.web).expect("the proxy listens on web");
    let mut last_pid = pid;
    let idle_rss_kib = rss_kib(pid);
    let placement = proxy_placement(pid);

    let mut series: Vec<Series> = std::iter::once("direct (floor)".to_owned())
        .chain(setups.iter().map(|s| s.label.clone()))
        .map(|setup| Series {
            proxy: if setup.starts_with("direct") {
                "-"
            } else {
                name
            },
            setup,
            samples: Vec::new(),
        })
        .collect();
    let mut current = 0usize;
    for round in 0..a.rounds {
        let mut order: Vec<usize> = (0..series.len()).collect();
        if round % 2 == 1 {
            order.reverse();
        }
        for i in order {
            let pid = if i == 0 {
                None
            } else {
                let setup = &setups[i - 1];
                if current != i - 1 {
                    doc["spec"]["middlewares"] = setup.middlewares.clone();
                    apply(&cluster, proxy, &doc).await;
                    current = i - 1;
                }
                let pid = support::pid_listening_on(cluster.web).expect("the proxy listens on web");
                last_pid = pid;
                if round == 0 {
                    let live = live_config(&cluster, proxy).await;
                    notes.push(format!(
                        "{name} {}: {}",
                        setup.label,
                        rendered_chain(proxy, &live, cluster.web)
                    ));
                    if let Some(dir) = &a.dump {
                        let file = dir.join(format!("{name}-{}.json", i - 1));
                        std::fs::write(&file, serde_json::to_vec_pretty(&live).unwrap()).unwrap();
                    }
                }
                Some(pid)
            };
            let port = if i == 0 { backend.port() } else { cluster.web };
            let sample = tokio::task::block_in_place(|| measure(wrk, port, pid, a, ticks));
            eprintln!(
                "{name} round {}: {}: {:.0} req/s, p95 {}, proxy {} µs/req",
                round + 1,
                series[i].setup,
                sample.load.rps,
                ms(sample.load.p95_us),
                sample.cpu_us.map_or("-".into(), |c| format!("{c:.1}"))
            );
            series[i].samples.push(sample);
        }
    }
    doc["spec"]["middlewares"] = setups[1].middlewares.clone();
    if current != 1 {
        apply(&cluster, proxy, &doc).await;
    }
    let reloads = hot_reloads(&cluster, proxy, &mut doc, a.reloads).await;
    ProxyRun {
        pid: last_pid,
        series,
        idle_rss_kib,
        placement,
        reloads,
        notes,
    }
}

fn print_tables(a: &Args, wrk: &Wrk, runs: &[(ProxyKind, ProxyRun)]) {
    // The floor is measured in every proxy's rounds; its row pools them.
    let floor = Series {
        proxy: "-",
        setup: "direct (floor)".into(),
        samples: runs
            .iter()
            .flat_map(|(_, r)| r.series[0].samples.iter().copied())
            .collect(),
    };
    let floor_rps = median(floor.samples.iter().map(|s| s.load.rps).collect());
    let rows: Vec<&Series> = std::iter::once(&floor)
        .chain(runs.iter().flat_map(|(_, r)| r.series.iter().skip(1)))
        .collect();
    println!(
        "\nproxies: wrk -t{} -c{} -d{}s (after a 2 s warm-up), Accept-Encoding: gzip, {} B text body, 127.0.0.1; \
         medians over {} interleaved rounds (order reversed every other round), one cluster per proxy",
        a.threads, a.connections, a.duration, BODY_BYTES, a.rounds
    );
    if a.pin {
        println!(
            "placement: proxy pinned to CPU {PROXY_CPU} with GOMAXPROCS=1; wrk, the backend, the twin and the operator pinned to CPU {LOAD_CPU}"
        );
    } else {
        println!(
            "placement: not pinned (--no-pin): wrk, the backend and the proxy share every CPU"
        );
    }
    for (proxy, r) in runs {
        println!(
            "  {proxy:?}: {}; idle RSS fresh (no policies): {}",
            r.placement,
            r.idle_rss_kib
                .map_or("-".into(), |k| format!("{:.1} MiB", k as f64 / 1024.0))
        );
    }
    println!("\nsaturated (wrk as fast as it goes):\n");
    println!(
        "| proxy | setup | req/s | req/s range | × floor | p50 | p95 | p99 | proxy CPU µs/req (range) | proxy CPU use + others on its CPU | RSS after | non-2xx/errors |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|");
    for s in &rows {
        let col = |f: &dyn Fn(&Sample) -> Option<f64>| -> Vec<f64> {
            s.samples.iter().filter_map(f).collect()
        };
        let rps = col(&|x| Some(x.load.rps));
        let (lo, hi) = range(&rps);
        let cpu = col(&|x| x.cpu_us);
        let (clo, chi) = range(&cpu);
        let rss = median(col(&|x| x.rss_kib.map(|k| k as f64)));
        println!(
            "| {} | {} | {:.0} | {lo:.0}–{hi:.0} | {:.2} | {} | {} | {} | {} | {} | {} | {} |",
            s.proxy,
            s.setup,
            median(rps.clone()),
            median(rps) / floor_rps,
            ms(median(col(&|x| Some(x.load.p50_us)))),
            ms(median(col(&|x| Some(x.load.p95_us)))),
            ms(median(col(&|x| Some(x.load.p99_us)))),
            opt(median(cpu), |c| format!("{c:.1} ({clo:.1}–{chi:.1})")),
            opt(median(col(&|x| x.cpu_share)), |c| {
                let others = median(col(&|x| x.others_share));
                format!(
                    "{:.0} % + {}",
                    c * 100.0,
                    opt(others, |o| format!("{:.0} %", o * 100.0))
                )
            }),
            opt(rss, |k| format!("{:.1} MiB", k / 1024.0)),
            s.samples.iter().map(|x| x.load.bad).sum::<u64>()
        );
    }
    if a.paced_rate > 0 {
        println!(
            "\npaced (each of {} connections waits {} ms before each request: offered ≈ {} req/s, below saturation):\n",
            a.connections,
            wrk.pause_ms,
            u64::from(a.connections) * 1000 / wrk.pause_ms
        );
        println!("| proxy | setup | achieved req/s | p50 | p95 | p99 | non-2xx/errors |");
        println!("|---|---|---|---|---|---|---|");
        for s in &rows {
            let paced: Vec<Load> = s.samples.iter().filter_map(|x| x.paced).collect();
            let col = |f: fn(&Load) -> f64| median(paced.iter().map(f).collect());
            println!(
                "| {} | {} | {:.0} | {} | {} | {} | {} |",
                s.proxy,
                s.setup,
                col(|l| l.rps),
                ms(col(|l| l.p50_us)),
                ms(col(|l| l.p95_us)),
                ms(col(|l| l.p99_us)),
                paced.iter().map(|l| l.bad).sum::<u64>()
            );
        }
    }
    println!(
        "\ncost vs the same proxy with no policies, median of the per-round ratios (range):\n"
    );
    println!(
        "| proxy | setup | req/s cost | Δ p95 saturated | CPU/req × | Δ CPU µs/req | Δ p95 paced |"
    );
    println!("|---|---|---|---|---|---|---|");
    let mut goals = Vec::new();
    for (_, r) in runs {
        let bare = &r.series[1];
        for (k, s) in r.series.iter().enumerate().skip(2) {
            let per_round = |f: &dyn Fn(&Sample, &Sample) -> Option<f64>| -> Vec<f64> {
                s.samples
                    .iter()
                    .zip(&bare.samples)
                    .filter_map(|(x, b)| f(x, b))
                    .collect()
            };
            let cell = |v: Vec<f64>, f: &dyn Fn(f64) -> String| {
                let (lo, hi) = range(&v);
                opt(median(v), |m| format!("{} ({}–{})", f(m), f(lo), f(hi)))
            };
            let pct = |x: f64| format!("{:.1} %", x * 100.0);
            let dms = |x: f64| format!("{:+.2} ms", x / 1000.0);
            let cost = per_round(&|x, b| Some(1.0 - x.load.rps / b.load.rps));
            let dp95 = per_round(&|x, b| Some(x.load.p95_us - b.load.p95_us));
            let dp95_paced = per_round(&|x, b| Some(x.paced?.p95_us - b.paced?.p95_us));
            if k == 2 {
                goals.push((
                    s.proxy,
                    median(cost.clone()),
                    median(dp95.clone()),
                    median(dp95_paced.clone()),
                ));
            }
            println!(
                "| {} | {} | {} | {} | {} | {} | {} |",
                s.proxy,
                s.setup,
                cell(cost, &pct),
                cell(dp95, &dms),
                cell(
                    per_round(&|x, b| Some(x.cpu_us? / b.cpu_us?)),
                    &|x| format!("{x:.2}")
                ),
                cell(
                    per_round(&|x, b| Some(x.cpu_us? - b.cpu_us?)),
                    &|x| format!("{x:+.1}")
                ),
                cell(dp95_paced, &dms),
            );
        }
    }
    println!();
    for (proxy, cost, dp95, dp95_paced) in goals {
        let met = cost < 0.10 && dp95 < 1000.0;
        println!(
            "{proxy}: the default policy chain costs {:.1} % req/s and {:+.2} ms p95 saturated ({:+.2} ms p95 paced) \
             vs no policies (goal < 10 %, < 1 ms: {})",
            cost * 100.0,
            dp95 / 1000.0,
            dp95_paced / 1000.0,
            if met { "met" } else { "not met" }
        );
    }
    for (proxy, r) in runs {
        let mut times = r.reloads.clone();
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
    for (_, r) in runs {
        for note in &r.notes {
            println!("note: {note}");
        }
    }
}

fn main() {
    let a = args();
    if a.pin {
        pin_self();
    }
    let scratch = tempfile::tempdir().unwrap();
    let wrk = Wrk::new(scratch.path(), a.threads, a.connections, a.paced_rate, HOST);
    if let Some(dir) = &a.dump {
        std::fs::create_dir_all(dir).unwrap();
    }
    let mut runs = Vec::new();
    for proxy in a.proxies.clone() {
        // A runtime per proxy: dropping it ends the twin's tasks, whose process guards kill the
        // proxy, so one proxy never runs (and polls a dead twin) beside the next one's runs.
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let r = rt.block_on(async {
            let _ = rustls::crypto::ring::default_provider().install_default();
            let backend = start_backend().await;
            run_proxy(proxy, &wrk, backend, scratch.path(), &a).await
        });
        drop(rt);
        let gone = Instant::now();
        while support::process_alive(r.pid) {
            assert!(
                gone.elapsed() < Duration::from_secs(30),
                "{proxy:?} (pid {}) outlived its cluster",
                r.pid
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        runs.push((proxy, r));
    }
    print_tables(&a, &wrk, &runs);
}
