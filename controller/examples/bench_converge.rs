//! `scripts/bench converge`: how fast the operator converges, and what it costs while idle.
//!
//! Runs the twin in-process, a real backend in its Consul catalog, the real `proxy-operator run`
//! binary as a child process (so its RSS and its requests are its own), and real Traefik as the
//! job the operator registers. Prints medians and p95 over `--runs` runs (default 20) of:
//! - KV edit → new policy visible in responses through Traefik (and the operator's share: KV edit
//!   → policy written to Traefik's KV tree), with the default debounce and with none. A single
//!   edit (the loop idle for longer than the debounce window, as between two edits by hand) is
//!   what the goal is about; edits made right after the last pass ended (a burst, coalesced into
//!   a trailing pass) are a series of their own;
//! - a structural change with the default debounce: KV edit → new job version registered, → its
//!   allocation running, → healthy in Nomad (its service check passing for the update's
//!   `min_healthy_time`), → Ready (the operator's gate), so the table says where the time goes;
//! - a document whose entry point's port is taken: refused by the preflight (KV edit → Invalid),
//!   or, where the preflight cannot see it, gate failure → previous version serving (the revert
//!   registered → a request through the old entry point reaches the backend again), plus the
//!   whole KV edit → serving-again time;
//! - requests the operator makes to Consul and Nomad per minute while idle (counted by the
//!   twin, told apart from Traefik's by User-Agent), and how many of them are blocking queries;
//! - the operator's RSS (VmRSS and peak VmHWM from /proc), with its HTTP listener serving
//!   `/metrics`, the status page and its event stream all along;
//! - `/metrics` latency (p50, p99, max) while rollouts run: scraped every 20 ms during the
//!   structural and gate-failure series, the page and an event stream loaded alongside.
//!
//! Flags: `--runs N`, `--idle-secs N` (default 60), `--operator-bin PATH`, `--traefik-bin PATH`.
// A bench fails loudly: the panic's message is its report.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
// A bench prints its table.
#![allow(clippy::print_stdout, clippy::print_stderr)]

mod common;

use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;
use std::process::Child;
use std::time::{Duration, Instant};

use common::{APP_HOST, HEADER, JOB, PREFIX, Stack, WAIT, doc_digest, free_port};
use hashistack_twin::Api;
use proxy_operator::spec::status::{ConditionStatus, Phase};
use serde_json::{Value, json};

const OPERATOR_UA: &str = "proxy-operator/";

/// The wait before a single edit: longer than the default debounce (250 ms) since the last pass
/// ended, so the edit finds the loop idle and is read at once (leading edge). An edit sooner
/// than that is part of a burst and waits for the trailing pass.
const WINDOW: Duration = Duration::from_millis(400);

struct Args {
    runs: usize,
    idle: Duration,
    operator_bin: Option<PathBuf>,
    traefik_bin: PathBuf,
}

fn args() -> Args {
    let mut out = Args {
        runs: 20,
        idle: Duration::from_secs(60),
        operator_bin: None,
        traefik_bin: common::default_traefik_bin(),
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().unwrap_or_else(|| panic!("{flag} needs a value"));
        match flag.as_str() {
            "--runs" => out.runs = value().parse().expect("--runs N"),
            "--idle-secs" => {
                out.idle = Duration::from_secs(value().parse().expect("--idle-secs N"))
            }
            "--operator-bin" => out.operator_bin = Some(PathBuf::from(value())),
            "--traefik-bin" => out.traefik_bin = PathBuf::from(value()),
            other => panic!(
                "unknown flag {other}; flags: --runs N --idle-secs N --operator-bin PATH --traefik-bin PATH"
            ),
        }
    }
    out
}

struct Stats(Vec<Duration>);

impl Stats {
    fn row(&self, name: &str) -> String {
        let mut v = self.0.clone();
        v.sort();
        if v.is_empty() {
            return format!(
                "| {name:<60} | {:>10} | {:>10} | {:>10} | {:>4} |",
                "-", "-", "-", 0
            );
        }
        let pick = |q: f64| v[((v.len() as f64 - 1.0) * q).round() as usize];
        let ms = |d: Duration| format!("{:.1} ms", d.as_secs_f64() * 1000.0);
        format!(
            "| {name:<60} | {:>10} | {:>10} | {:>10} | {:>4} |",
            ms(pick(0.5)),
            ms(pick(0.95)),
            ms(*v.last().unwrap()),
            v.len()
        )
    }
}

/// Scrapes `/metrics` every 20 ms until stopped; loads the page every tenth time and keeps
/// one event stream open, as a browser on the status page would. Returns each scrape's time.
async fn scrape_while(
    http: reqwest::Client,
    surface: SocketAddr,
    stop: tokio::sync::watch::Receiver<bool>,
) -> Vec<Duration> {
    let mut took = Vec::new();
    let mut events = http
        .get(format!("http://{surface}/events"))
        .send()
        .await
        .ok();
    let mut i = 0u32;
    while !*stop.borrow() {
        let t0 = Instant::now();
        if let Ok(r) = http.get(format!("http://{surface}/metrics")).send().await
            && r.status().is_success()
            && r.text().await.is_ok()
        {
            took.push(t0.elapsed());
        }
        if i.is_multiple_of(10) {
            let _ = http.get(format!("http://{surface}/")).send().await;
            if let Some(e) = events.as_mut() {
                // Drain what the stream sent, without waiting for more.
                let _ = tokio::time::timeout(Duration::from_millis(1), e.chunk()).await;
            }
        }
        i += 1;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    took
}

impl Stack {
    /// (Re)starts the operator with `debounce`, its HTTP surface on `surface` (the same port
    /// across restarts).
    fn start_operator(&mut self, debounce: &str, surface: SocketAddr) {
        self.stop_operator();
        let surface = surface.to_string();
        // The operator's privilege boundary: allow exactly what the bench runs.
        let traefik = format!("traefik={}", self.traefik_bin.display());
        let certs = self.certs.display().to_string();
        self.spawn_operator(
            debounce,
            &[
                "run",
                "--debounce",
                debounce,
                "--http-addr",
                &surface,
                "--allowed-driver",
                "raw_exec",
                "--allowed-command",
                &traefik,
                "--allowed-cert-root",
                &certs,
            ],
        );
    }

    /// One series of `runs` policy edits with the operator running with `debounce`: `single`
    /// edits wait out [`WINDOW`] first, the others follow the last pass at once. Returns (KV edit
    /// -> visible through Traefik, KV edit -> written to Traefik's KV tree).
    async fn policy_series(&self, debounce: &str, single: bool, runs: usize) -> (Stats, Stats) {
        let (mut visible, mut share) = (Stats(Vec::new()), Stats(Vec::new()));
        let key = format!(
            "{PREFIX}/traefik/http/middlewares/proxy-operator-headers/headers/customResponseHeaders/{HEADER}"
        );
        for i in 0..runs {
            let value = format!("{debounce}-{}-{i}", if single { "single" } else { "after" });
            let doc = self.doc(&value, 100, self.websecure, "60s");
            if single {
                tokio::time::sleep(WINDOW).await;
            }
            let t0 = Instant::now();
            self.put(&doc).await;
            let mut written = None;
            let deadline = t0 + WAIT;
            while written.is_none() {
                if self.kv(&key).as_deref() == Some(value.as_bytes()) {
                    written = Some(t0.elapsed());
                }
                assert!(Instant::now() < deadline, "policy never written to KV");
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            let seen = self.wait_serving(Some(&value)).await;
            share.0.push(written.unwrap());
            visible.0.push(seen - t0);
            let applied = doc_digest(&doc);
            self.wait_status("Ready after a policy change", |s| {
                s.phase == Phase::Ready && s.observed_digest.as_deref() == Some(applied.as_str())
            })
            .await;
        }
        (visible, share)
    }

    /// Whether an allocation of job `version` runs with all its tasks running, and whether
    /// Nomad has marked it healthy (`DeploymentStatus.Healthy`: its checks passed for the
    /// update's `min_healthy_time`), read from the twin's Nomad API as the operator reads it.
    async fn alloc_state(&self, job_id: &str, version: u64) -> (bool, bool) {
        let Ok(resp) = self
            .http
            .get(format!(
                "http://{}/v1/job/{job_id}/allocations",
                self.twin.nomad_addr()
            ))
            .send()
            .await
        else {
            return (false, false);
        };
        let allocs: Vec<Value> = resp.json().await.unwrap_or_default();
        let ours = allocs
            .iter()
            .filter(|a| a["JobVersion"].as_u64() == Some(version) && a["DesiredStatus"] == "run");
        let (mut running, mut healthy) = (false, false);
        for a in ours {
            running |= a["ClientStatus"] == "running"
                && a["TaskStates"]
                    .as_object()
                    .is_some_and(|t| !t.is_empty() && t.values().all(|t| t["State"] == "running"));
            healthy |= a["DeploymentStatus"]["Healthy"] == true;
        }
        (running, healthy)
    }

    /// Waits until the (re)started operator's `/metrics` counts a finished pass.
    async fn wait_first_pass(&self, surface: SocketAddr) {
        let deadline = Instant::now() + WAIT;
        loop {
            if let Ok(r) = self
                .http
                .get(format!("http://{surface}/metrics"))
                .send()
                .await
                && let Ok(text) = r.text().await
                && text.lines().any(|l| {
                    l.starts_with("proxy_operator_reconcile_passes_total{") && !l.ends_with(" 0")
                })
            {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "the operator never finished a pass"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// (phase, sum of seconds, count) of each stage in the operator's
    /// `rollout_phase_duration` histogram, scraped from its `/metrics`.
    async fn stage_sums(&self, surface: SocketAddr) -> Vec<(String, f64, f64)> {
        let text = self
            .http
            .get(format!("http://{surface}/metrics"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        let value = |line: &str| -> f64 { line.rsplit(' ').next().unwrap().parse().unwrap() };
        let mut out: Vec<(String, f64, f64)> = Vec::new();
        for line in text.lines() {
            let Some((name, rest)) = line.split_once("{phase=\"") else {
                continue;
            };
            if !name.contains("rollout_phase_duration") {
                continue;
            }
            let phase = rest.split('"').next().unwrap().to_owned();
            let entry = match out.iter_mut().position(|(p, _, _)| *p == phase) {
                Some(i) => &mut out[i],
                None => {
                    out.push((phase, 0.0, 0.0));
                    out.last_mut().unwrap()
                }
            };
            if name.ends_with("_sum") {
                entry.1 = value(line);
            } else if name.ends_with("_count") {
                entry.2 = value(line);
            }
        }
        out
    }

    /// The highest `JobModifyIndex` of both slots' jobs (`proxy`, `proxy-b`), 0 when neither
    /// exists: a structural change registers a job above it.
    async fn slots_modify_index(&self) -> u64 {
        let mut highest = 0;
        for id in [JOB.to_owned(), format!("{JOB}-b")] {
            if let Some(job) = self.job_by_id(&id).await {
                highest = highest.max(job["JobModifyIndex"].as_u64().unwrap_or(0));
            }
        }
        highest
    }

    /// The running job of either slot registered after `after` (a `JobModifyIndex`): the
    /// handover puts a structural change in the other slot, an in-place change in the same one.
    async fn registered_since(&self, after: u64) -> Option<(String, u64)> {
        for id in [JOB.to_owned(), format!("{JOB}-b")] {
            if let Some(job) = self.job_by_id(&id).await
                && job["JobModifyIndex"].as_u64().unwrap_or(0) > after
                && job["Stop"] != true
            {
                return Some((id, job["Version"].as_u64()?));
            }
        }
        None
    }

    async fn job_by_id(&self, id: &str) -> Option<Value> {
        let resp = self
            .http
            .get(format!("http://{}/v1/job/{id}", self.twin.nomad_addr()))
            .send()
            .await
            .ok()?;
        if !resp.status().is_success() {
            return None;
        }
        resp.json().await.ok()
    }

    async fn through(&self) -> Option<(u16, Option<String>, Option<String>)> {
        let resp = self
            .http
            .get(format!("http://127.0.0.1:{}/", self.web))
            .header("Host", APP_HOST)
            .timeout(Duration::from_secs(2))
            .send()
            .await
            .ok()?;
        let h = |n: &str| {
            resp.headers()
                .get(n)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        };
        Some((resp.status().as_u16(), h("x-backend"), h(HEADER)))
    }

    async fn wait_serving(&self, header: Option<&str>) -> Instant {
        let deadline = Instant::now() + WAIT;
        loop {
            if let Some((200, Some(_), seen)) = self.through().await
                && (header.is_none() || seen.as_deref() == header)
            {
                return Instant::now();
            }
            assert!(
                Instant::now() < deadline,
                "never served{}",
                header
                    .map(|h| format!(" with {HEADER}: {h}"))
                    .unwrap_or_default()
            );
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }

    /// The operator's requests to `api` among those the twin received after its counter read
    /// `since`: (all, blocking queries). The twin keeps the last 2,000 requests of all clients.
    fn operator_requests_since(&self, api: Api, since: u64) -> (usize, usize) {
        let total = self.twin.requests(api);
        let log = self.twin.faults().request_log(api);
        let new = usize::try_from(total - since).unwrap();
        assert!(
            new <= log.len(),
            "more requests than the twin's log keeps; shorten --idle-secs"
        );
        let ours: Vec<_> = log[log.len() - new..]
            .iter()
            .filter(|r| r.user_agent.starts_with(OPERATOR_UA))
            .collect();
        let blocking = ours.iter().filter(|r| r.uri.contains("index=")).count();
        (ours.len(), blocking)
    }
}

/// The mean time per stage between two [`Stack::stage_sums`] scrapes, e.g. `plan 3 ms, ...`.
fn stage_means(before: &[(String, f64, f64)], after: &[(String, f64, f64)]) -> String {
    after
        .iter()
        .filter_map(|(phase, sum, count)| {
            let (sum0, count0) = before
                .iter()
                .find(|(p, _, _)| p == phase)
                .map_or((0.0, 0.0), |(_, s, c)| (*s, *c));
            let n = count - count0;
            (n > 0.0).then(|| format!("{phase} {:.0} ms", (sum - sum0) / n * 1000.0))
        })
        .collect::<Vec<_>>()
        .join(", ")
}

fn rss_kib(pid: u32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let args = args();
    let traefik_bin = common::checked_traefik_bin(&args.traefik_bin);
    let operator_bin = args
        .operator_bin
        .clone()
        .unwrap_or_else(common::operator_bin);
    let mut b = Stack::start("converge", traefik_bin, operator_bin).await;
    let log_dir = b.log_dir.clone();
    let surface = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let runs = args.runs;
    eprintln!(
        "bench converge: {runs} runs per series; logs in {}",
        log_dir.display()
    );

    // Converge once with the default debounce.
    let good_deadline = "60s";
    b.start_operator("250ms", surface);
    let websecure = b.websecure;
    b.put(&b.doc("start", 100, websecure, good_deadline)).await;
    b.wait_status("first Ready", |s| s.phase == Phase::Ready)
        .await;
    b.wait_serving(Some("start")).await;

    // --- policy changes, default debounce and none ---
    let mut policy = Vec::new();
    for (debounce, single) in [("250ms", true), ("250ms", false), ("0ms", true)] {
        if debounce != "250ms" {
            b.start_operator(debounce, surface);
        }
        let (visible, share) = b.policy_series(debounce, single, runs).await;
        policy.push((debounce, single, visible, share));
    }

    // --- structural changes with the default debounce ---
    b.start_operator("250ms", surface);
    b.wait_first_pass(surface).await;

    // --- from here on rollouts run back to back: scrape /metrics all along ---
    let (stop_scraping, scraping) = tokio::sync::watch::channel(false);
    let scraper = tokio::spawn(scrape_while(b.http.clone(), surface, scraping));

    // --- structural changes: KV edit -> job registered -> allocation running -> Ready ---
    let mut registered = Stats(Vec::new());
    let mut alloc_running = Stats(Vec::new());
    let mut alloc_healthy = Stats(Vec::new());
    let mut gated = Stats(Vec::new());
    let mut structural_ready = Stats(Vec::new());
    let mut drained = Stats(Vec::new());
    let stages_before = b.stage_sums(surface).await;
    for i in 0..runs {
        let before = b.slots_modify_index().await;
        let doc = b.doc(
            "structural",
            101 + u32::try_from(i).unwrap(),
            websecure,
            good_deadline,
        );
        let digest = doc_digest(&doc);
        // A single edit, as for policies: the loop has been idle for longer than the window.
        tokio::time::sleep(WINDOW).await;
        let t0 = Instant::now();
        b.put(&doc).await;
        let (mut version, mut running, mut healthy) = (None, None, None);
        loop {
            let now = Instant::now();
            if version.is_none()
                && let Some(registered_job) = b.registered_since(before).await
            {
                registered.0.push(now - t0);
                version = Some(registered_job);
            }
            if let Some((job_id, v)) = &version
                && healthy.is_none()
            {
                let (is_running, is_healthy) = b.alloc_state(job_id, *v).await;
                if is_running && running.is_none() {
                    alloc_running.0.push(now - t0);
                    running = Some(now);
                }
                if is_healthy {
                    alloc_healthy.0.push(now - running.unwrap_or(now));
                    healthy = Some(now);
                }
            }
            if b.status().is_some_and(|s| {
                s.phase == Phase::Ready && s.last_applied_digest.as_deref() == Some(digest.as_str())
            }) {
                structural_ready.0.push(now - t0);
                gated.0.push(now - healthy.or(running).unwrap_or(now));
                break;
            }
            assert!(t0.elapsed() < WAIT, "never Ready: {:#?}", b.status());
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        b.wait_serving(Some("structural")).await;
        // A handover is Ready once the new slot passed and the old one was stopped; the old
        // one's drain still holds the next change. Each run is a single edit at rest, so the
        // drain is waited for (and reported) here rather than charged to the next edit.
        let ready_at = Instant::now();
        b.wait_status("the old slot drained", |s| {
            s.condition("Progressing")
                .is_none_or(|c| c.status == ConditionStatus::False)
        })
        .await;
        drained.0.push(ready_at.elapsed());
    }
    let stages_after = b.stage_sums(surface).await;

    // --- gate failures: the new websecure port is held. The preflight (issue 13) refuses such a
    // document before the running proxy is touched; where it cannot see the port, the gate fails
    // at its deadline and the previous version is reverted. Each run takes whichever happens.
    let held = TcpListener::bind("127.0.0.1:0").unwrap();
    let taken = held.local_addr().unwrap().port();
    let (mut back, mut total, mut refused) =
        (Stats(Vec::new()), Stats(Vec::new()), Stats(Vec::new()));
    let good_cpu = 100 + u32::try_from(runs).unwrap();
    for i in 0..runs {
        let mut doc = b.doc("structural", good_cpu, taken, "4s");
        doc["spec"]["retryNonce"] = json!(format!("fail-{i}"));
        let seen_before = b.status().map_or(0, |s| s.observed_index);
        let t0 = Instant::now();
        b.put(&doc).await;
        // The revert: the failed version undone (in place: the previous version registered
        // again; with the handover: the new slot stopped, the old one never stopped serving).
        let reverted = loop {
            let status = b.status();
            if status
                .as_ref()
                .is_some_and(|s| s.phase == Phase::Invalid && s.observed_index > seen_before)
            {
                refused.0.push(t0.elapsed());
                break None;
            }
            if status
                .as_ref()
                .is_some_and(|s| s.phase == Phase::RolledBack && s.observed_index > seen_before)
            {
                break Some(Instant::now());
            }
            assert!(
                t0.elapsed() < WAIT,
                "never reverted nor refused: {:#?}",
                b.status()
            );
            tokio::time::sleep(Duration::from_millis(2)).await;
        };
        let Some(reverted) = reverted else {
            // Refused: the old version never stopped; the next run waits out the window.
            tokio::time::sleep(WINDOW).await;
            continue;
        };
        let serving = b.wait_serving(Some("structural")).await;
        back.0.push(serving.saturating_duration_since(reverted));
        total.0.push(serving - t0);
    }
    drop(held);
    let _ = stop_scraping.send(true);
    let mut scrapes = scraper.await.unwrap();
    scrapes.sort();

    // --- idle: back to the good document (a no-op: it is the applied digest), then at rest ---
    let good = b.doc("structural", good_cpu, websecure, good_deadline);
    let good_digest = doc_digest(&good);
    b.put(&good).await;
    b.wait_status("Ready again", |s| {
        s.phase == Phase::Ready && s.observed_digest.as_deref() == Some(good_digest.as_str())
    })
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (consul0, nomad0) = (b.twin.requests(Api::Consul), b.twin.requests(Api::Nomad));
    tokio::time::sleep(args.idle).await;
    let (consul_idle, consul_blocking) = b.operator_requests_since(Api::Consul, consul0);
    let (nomad_idle, nomad_blocking) = b.operator_requests_since(Api::Nomad, nomad0);
    let per_min = |n: usize| n as f64 * 60.0 / args.idle.as_secs_f64();
    // The process that ran every series since the structural ones (default debounce).
    let pid = b.operator.as_ref().map(Child::id).unwrap();
    let (rss, hwm) = rss_kib(pid);
    b.stop_operator();

    println!();
    println!(
        "proxy-operator converge benchmark ({runs} runs per series; twin in-process, real Traefik {}, operator binary {})",
        b.traefik_bin.display(),
        b.operator_bin.display()
    );
    println!(
        "| {:<60} | {:>10} | {:>10} | {:>10} | {:>4} |",
        "series", "median", "p95", "max", "n"
    );
    println!(
        "|{:-<62}|{:-<12}|{:-<12}|{:-<12}|{:-<6}|",
        "", "", "", "", ""
    );
    for (debounce, single, visible, share) in &policy {
        let kind = if *single {
            "single edit"
        } else {
            "right after a pass"
        };
        println!(
            "{}",
            visible.row(&format!(
                "KV edit -> policy visible via Traefik ({debounce}, {kind})"
            ))
        );
        println!(
            "{}",
            share.row(&format!(
                "  operator share: KV edit -> Traefik KV written ({debounce})"
            ))
        );
    }
    println!(
        "{}",
        registered.row("KV edit -> job version registered (structural, 250ms)")
    );
    println!(
        "{}",
        alloc_running.row("KV edit -> its allocation running (Nomad twin)")
    );
    println!(
        "{}",
        alloc_healthy.row("  running -> allocation healthy (check + Nomad minHealthy)")
    );
    println!(
        "{}",
        gated.row("  allocation healthy -> gate passed (Ready)")
    );
    println!(
        "{}",
        structural_ready.row("KV edit -> Ready (structural, gate passed, 250ms)")
    );
    println!(
        "{}",
        drained.row("  Ready -> old slot drained (holds the next change)")
    );
    println!(
        "{}",
        refused.row("KV edit (port taken) -> refused by preflight (Invalid)")
    );
    println!(
        "{}",
        back.row("gate failure (RolledBack) -> previous serving")
    );
    println!(
        "{}",
        total.row("KV edit -> failed at deadline (4s) -> previous serving")
    );
    println!();
    println!(
        "structural rollouts, mean time per stage from the operator's rollout_phase_duration histogram: {}",
        stage_means(&stages_before, &stages_after)
    );
    println!(
        "  the gate holds a healthy allocation for the document's minHealthyTime (1s here) and polls every {} ms",
        proxy_operator::rollout::VERIFY_POLL_INTERVAL.as_millis()
    );
    println!(
        "idle over {:?}: Consul {:.1} req/min ({} blocking), Nomad {:.1} req/min ({} blocking)",
        args.idle,
        per_min(consul_idle),
        consul_blocking,
        per_min(nomad_idle),
        nomad_blocking
    );
    println!(
        "operator RSS after all series and the idle period, /metrics, the status page and its event stream served all along: {:.1} MiB (peak VmHWM {:.1} MiB; goal under 20 MiB)",
        rss as f64 / 1024.0,
        hwm as f64 / 1024.0
    );
    let quantile = |q: f64| {
        scrapes
            .get(((scrapes.len().max(1) - 1) as f64 * q).round() as usize)
            .map_or(f64::NAN, |d| d.as_secs_f64() * 1000.0)
    };
    println!(
        "/metrics while rollouts run: p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms over {} scrapes (goal p99 under 5 ms)",
        quantile(0.5),
        quantile(0.99),
        quantile(1.0),
        scrapes.len()
    );
    b.twin.shutdown().await;
    let _ = std::fs::remove_dir_all(&log_dir);
}
