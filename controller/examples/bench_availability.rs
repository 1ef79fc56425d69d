//! `scripts/bench availability`: what a change costs the traffic through the proxy.
//!
//! Runs the twin in-process, a backend in its Consul catalog, the real `proxy-operator run`
//! binary as a child process (so it can be SIGKILLed), and real Traefik as the job it registers.
//! A bounded loop sends one request every 10 ms (100 req/s, loopback only) through Traefik's
//! `web` entry point for the whole run; each change is measured from the edit until the
//! operator reports it settled plus one second, as failed requests (an error or a non-200) and
//! the longest gap between two successful responses. Rows, `--runs` each (default 10):
//! - a policy change (a response header);
//! - a successful structural change (the job's CPU);
//! - a failed structural change (`websecure` moved to a port something else holds);
//! - a structural change with the operator SIGKILLed once its journal is written, then restarted.
//!
//! Flags: `--runs N`, `--operator-bin PATH`, `--traefik-bin PATH`.
// A bench fails loudly: the panic's message is its report.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
// A bench prints its table.
#![allow(clippy::print_stdout, clippy::print_stderr)]

mod common;

use std::net::TcpListener;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{APP_HOST, JOB, PREFIX, Stack, WAIT, doc_digest};
use proxy_operator::spec::status::Phase;

/// One request every 10 ms: 100 req/s.
const LOAD_INTERVAL: Duration = Duration::from_millis(10);
/// The load loop's bound: an hour at 100 req/s.
const MAX_REQUESTS: usize = 360_000;

/// The rollout's healthy deadline in every row.
const HEALTHY_DEADLINE: &str = "30s";

/// One request's outcome: when it was sent and whether it got a 200 from the backend.
type Sample = (Instant, bool);

impl Stack {
    /// Writes the document with the policy `header`, the job's `cpu` and `websecure`'s port;
    /// its digest.
    async fn edit(&self, header: &str, cpu: u32, websecure: u16) -> String {
        let doc = self.doc(header, cpu, websecure, HEALTHY_DEADLINE);
        let digest = doc_digest(&doc);
        self.put(&doc).await;
        digest
    }

    fn journal_written(&self) -> bool {
        self.kv(&format!("{PREFIX}/rollout")).is_some()
    }

    async fn wait_ready(&self, digest: &str) {
        self.wait_status("Ready", |s| {
            s.phase == Phase::Ready && s.last_applied_digest.as_deref() == Some(digest)
        })
        .await;
    }
}

/// The load loop: one request every [`LOAD_INTERVAL`] until `stop`, at most [`MAX_REQUESTS`].
fn start_load(web: u16, samples: Arc<Mutex<Vec<Sample>>>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let client = reqwest::Client::builder()
            .no_proxy()
            .timeout(Duration::from_secs(1))
            .build()
            .unwrap();
        let mut tick = tokio::time::interval(LOAD_INTERVAL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        for _ in 0..MAX_REQUESTS {
            tick.tick().await;
            let sent = Instant::now();
            let ok = client
                .get(format!("http://127.0.0.1:{web}/"))
                .header("Host", APP_HOST)
                .send()
                .await
                .is_ok_and(|r| r.status().as_u16() == 200);
            samples.lock().unwrap().push((sent, ok));
        }
    })
}

/// Failed requests and the longest time without a successful response in `[from, to]`.
fn measure(samples: &[Sample], from: Instant, to: Instant) -> (usize, Duration) {
    let window: Vec<&Sample> = samples
        .iter()
        .filter(|(t, _)| *t >= from && *t <= to)
        .collect();
    let failed = window.iter().filter(|(_, ok)| !ok).count();
    let mut last_ok = from;
    let mut gap = Duration::ZERO;
    for (t, ok) in window {
        if *ok {
            gap = gap.max(t.saturating_duration_since(last_ok));
            last_ok = *t;
        }
    }
    gap = gap.max(to.saturating_duration_since(last_ok));
    (failed, gap)
}

struct Row {
    name: &'static str,
    runs: Vec<(usize, Duration)>,
}

impl Row {
    fn new(name: &'static str) -> Row {
        Row {
            name,
            runs: Vec::new(),
        }
    }

    fn print(&self) {
        let mut failed: Vec<usize> = self.runs.iter().map(|r| r.0).collect();
        let mut gaps: Vec<Duration> = self.runs.iter().map(|r| r.1).collect();
        failed.sort_unstable();
        gaps.sort();
        let ms = |d: &Duration| format!("{:.0} ms", d.as_secs_f64() * 1000.0);
        println!(
            "| {:<44} | {:>4} | {:>6} | {:>6} | {:>10} | {:>10} |",
            self.name,
            self.runs.len(),
            failed.iter().sum::<usize>(),
            failed.last().copied().unwrap_or(0),
            gaps.get(gaps.len() / 2).map_or("-".into(), ms),
            gaps.last().map_or("-".into(), ms),
        );
    }
}

fn args() -> (usize, Option<PathBuf>, PathBuf) {
    let mut runs = 10;
    let mut operator = None;
    let mut traefik = common::default_traefik_bin();
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().unwrap_or_else(|| panic!("{flag} needs a value"));
        match flag.as_str() {
            "--runs" => runs = value().parse().expect("--runs N"),
            "--operator-bin" => operator = Some(PathBuf::from(value())),
            "--traefik-bin" => traefik = PathBuf::from(value()),
            other => panic!(
                "unknown flag {other}; flags: --runs N --operator-bin PATH --traefik-bin PATH"
            ),
        }
    }
    (runs, operator, traefik)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let (runs, operator, traefik_bin) = args();
    let traefik_bin = common::checked_traefik_bin(&traefik_bin);
    let operator_bin = operator.unwrap_or_else(common::operator_bin);
    let mut b = Stack::start("availability", traefik_bin, operator_bin).await;
    let log_dir = b.log_dir.clone();
    eprintln!(
        "bench availability: {runs} runs per row; logs in {}",
        log_dir.display()
    );
    b.spawn_operator("run", &["run"]);
    let websecure = b.websecure;
    let mut cpu = 100;
    let digest = b.edit("start", cpu, websecure).await;
    b.wait_ready(&digest).await;

    let samples = Arc::new(Mutex::new(Vec::new()));
    let load = start_load(b.web, Arc::clone(&samples));
    // Traefik serving before the first measurement.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let settle = Duration::from_secs(1);
    let window = |from: Instant| {
        let to = Instant::now() + settle;
        let samples = Arc::clone(&samples);
        async move {
            tokio::time::sleep(settle).await;
            measure(&samples.lock().unwrap(), from, to)
        }
    };

    let mut rows = Vec::new();

    let mut row = Row::new("policy change (a response header)");
    for i in 0..runs {
        let t0 = Instant::now();
        let digest = b.edit(&format!("policy-{i}"), cpu, websecure).await;
        b.wait_ready(&digest).await;
        row.runs.push(window(t0).await);
    }
    rows.push(row);

    let mut row = Row::new("successful structural change (job CPU)");
    for _ in 0..runs {
        cpu += 1;
        let t0 = Instant::now();
        let digest = b.edit("structural", cpu, websecure).await;
        b.wait_ready(&digest).await;
        row.runs.push(window(t0).await);
    }
    rows.push(row);

    let mut row = Row::new("failed structural change (port taken)");
    for _ in 0..runs {
        let squatter = TcpListener::bind("0.0.0.0:0").unwrap();
        let taken = squatter.local_addr().unwrap().port();
        let t0 = Instant::now();
        let bad = b.edit("structural", cpu, taken).await;
        let port = format!("port {taken} ");
        b.wait_status("the failed change settled", |s| {
            // Refused by preflight (Invalid names the port), or rolled out and rolled back.
            let refused = s.phase == Phase::Invalid
                && s.validation_errors
                    .iter()
                    .any(|e| e.message.starts_with(&port));
            let undone = s.failed_digest.as_deref() == Some(bad.as_str())
                && matches!(s.phase, Phase::RolledBack | Phase::Degraded);
            refused || undone
        })
        .await;
        row.runs.push(window(t0).await);
        drop(squatter);
        let good = b.edit("structural", cpu, websecure).await;
        b.wait_ready(&good).await;
    }
    rows.push(row);

    let mut row = Row::new("operator SIGKILLed mid-rollout (structural)");
    for _ in 0..runs {
        cpu += 1;
        let t0 = Instant::now();
        let digest = b.edit("structural", cpu, websecure).await;
        let deadline = Instant::now() + WAIT;
        while !b.journal_written() {
            assert!(Instant::now() < deadline, "the rollout never started");
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        b.kill_operator();
        b.spawn_operator("run", &["run"]);
        b.wait_ready(&digest).await;
        row.runs.push(window(t0).await);
    }
    rows.push(row);

    load.abort();
    b.stop_operator();
    println!(
        "\nUnder {} req/s through Traefik (loopback); each run from the edit to settled + {}s:\n",
        1000 / LOAD_INTERVAL.as_millis(),
        settle.as_secs()
    );
    println!(
        "| {:<44} | {:>4} | {:>6} | {:>6} | {:>10} | {:>10} |",
        "change", "runs", "failed", "max/run", "gap p50", "gap max"
    );
    println!(
        "|{:-<46}|{:-<6}|{:-<8}|{:-<8}|{:-<12}|{:-<12}|",
        "", "", "", "", "", ""
    );
    for row in &rows {
        row.print();
    }
    // Stops the proxy the twin runs, and the twin.
    let _ = b
        .http
        .delete(format!(
            "http://{}/v1/job/{JOB}?purge=true",
            b.twin.nomad_addr()
        ))
        .send()
        .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
}
