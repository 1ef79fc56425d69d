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
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::print_stdout,
    clippy::print_stderr
)]

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hashistack_twin::{Twin, TwinConfig};
use proxy_operator::spec::status::{Phase, ProxyStatus};
use serde_json::{Value, json};

const PREFIX: &str = "proxy-operator";
const JOB: &str = "proxy";
const APP_HOST: &str = "app.localhost";
const WAIT: Duration = Duration::from_secs(120);
/// One request every 10 ms: 100 req/s.
const LOAD_INTERVAL: Duration = Duration::from_millis(10);
/// The load loop's bound: an hour at 100 req/s.
const MAX_REQUESTS: usize = 360_000;

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The operator binary next to this example, built in the same profile.
fn operator_bin() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let profile_dir = exe.parent().and_then(Path::parent).unwrap().to_path_buf();
    let bin = profile_dir.join("proxy-operator");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    let mut cmd = Command::new(cargo);
    cmd.args([
        "build",
        "--quiet",
        "-p",
        "proxy-operator",
        "--bin",
        "proxy-operator",
    ]);
    if profile_dir.file_name().is_some_and(|n| n == "release") {
        cmd.arg("--release");
    }
    assert!(cmd.status().unwrap().success() && bin.is_file());
    bin
}

/// One request's outcome: when it was sent and whether it got a 200 from the backend.
type Sample = (Instant, bool);

struct Bench {
    twin: Twin,
    http: reqwest::Client,
    traefik_bin: PathBuf,
    web: u16,
    websecure: u16,
    dashboard: u16,
    certs: PathBuf,
    operator: Option<Child>,
    operator_bin: PathBuf,
    log_dir: PathBuf,
    starts: usize,
}

impl Bench {
    fn doc(&self, header: &str, cpu: u32, websecure: u16) -> Value {
        json!({
            "apiVersion": "proxy-operator.io/v1alpha1",
            "kind": "ProxyConfig",
            "metadata": {"name": "bench"},
            "spec": {
                "proxy": "traefik",
                "domainSuffix": "localhost",
                "discovery": {
                    "primary": "consul",
                    "consul": {"address": self.twin.consul_addr().to_string(), "refreshInterval": "1s"},
                    "nomad": {"address": format!("http://{}", self.twin.nomad_addr()), "refreshInterval": "30s"},
                    "throttleDuration": "100ms"
                },
                "entryPoints": {
                    "web": {"address": format!("127.0.0.1:{}", self.web), "redirectTo": null},
                    "websecure": {"address": format!("127.0.0.1:{websecure}")}
                },
                "tls": {"certDir": self.certs.display().to_string()},
                "middlewares": {"securityHeaders": {"headers": {"X-Bench": header}}},
                "metrics": {"prometheus": false},
                "dashboard": {"enabled": true, "insecure": true, "address": format!("127.0.0.1:{}", self.dashboard)},
                "job": {
                    "id": JOB,
                    "type": "system",
                    "driver": {"rawExec": {"command": self.traefik_bin.display().to_string()}},
                    "resources": {"cpu": cpu, "memoryMB": 128}
                },
                "rollout": {"healthyDeadline": "30s", "minHealthyTime": "1s"}
            }
        })
    }

    fn start_operator(&mut self) {
        self.starts += 1;
        let log = std::fs::File::create(self.log_dir.join(format!("operator-{}.log", self.starts)))
            .unwrap();
        let child = Command::new(&self.operator_bin)
            .args(["run"])
            .env(
                "CONSUL_HTTP_ADDR",
                format!("http://{}", self.twin.consul_addr()),
            )
            .env("NOMAD_ADDR", format!("http://{}", self.twin.nomad_addr()))
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::from(log.try_clone().unwrap()))
            .stderr(Stdio::from(log))
            .spawn()
            .expect("start proxy-operator run");
        self.operator = Some(child);
    }

    /// SIGKILL: no shutdown path runs, as when the node dies.
    fn kill_operator(&mut self) {
        if let Some(mut child) = self.operator.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    fn stop_operator(&mut self) {
        if let Some(mut child) = self.operator.take() {
            let _ = Command::new("kill")
                .args(["-TERM", &child.id().to_string()])
                .status();
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = child.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    async fn put(&self, doc: &Value) -> String {
        let bytes = serde_json::to_vec(doc).unwrap();
        let digest = proxy_operator::spec::load(&bytes)
            .expect("a valid bench document")
            .digest()
            .to_owned();
        let resp = self
            .http
            .put(format!(
                "http://{}/v1/kv/{PREFIX}/config",
                self.twin.consul_addr()
            ))
            .body(bytes)
            .send()
            .await
            .unwrap();
        assert!(resp.status().is_success());
        digest
    }

    fn status(&self) -> Option<ProxyStatus> {
        let value = self.twin.consul().read(|s| {
            s.kv_get(&format!("{PREFIX}/status"))
                .map(|e| e.value.clone())
        })?;
        serde_json::from_slice(&value).ok()
    }

    fn journal_written(&self) -> bool {
        self.twin
            .consul()
            .read(|s| s.kv_get(&format!("{PREFIX}/rollout")).is_some())
    }

    async fn wait_status(&self, what: &str, done: impl Fn(&ProxyStatus) -> bool) {
        let deadline = Instant::now() + WAIT;
        loop {
            if self.status().is_some_and(|s| done(&s)) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what}: {:#?}",
                self.status()
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    async fn wait_ready(&self, digest: &str) {
        self.wait_status("Ready", |s| {
            s.phase == Phase::Ready && s.last_applied_digest.as_deref() == Some(digest)
        })
        .await;
    }
}

async fn start_backend() -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = axum::Router::new().fallback(|| async { ([("X-Backend", "bench")], "ok") });
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    addr
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
    let mut traefik = std::env::var_os("TRAEFIK_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../.venv/bin/traefik"));
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
    assert!(
        traefik_bin.is_file(),
        "Traefik missing at {}: run scripts/bootstrap",
        traefik_bin.display()
    );
    let traefik_bin = std::fs::canonicalize(&traefik_bin).unwrap();
    let operator_bin = operator.unwrap_or_else(operator_bin);
    let log_dir = std::env::temp_dir().join(format!("bench-availability-{}", std::process::id()));
    std::fs::create_dir_all(log_dir.join("certs")).unwrap();

    let twin = Twin::start(TwinConfig::default()).await.unwrap();
    let backend = start_backend().await;
    let http = reqwest::Client::builder().no_proxy().build().unwrap();
    let registration = json!({
        "Node": "hashistack-twin", "Address": "127.0.0.1", "SkipNodeUpdate": true,
        "Service": {"ID": "app-1", "Service": "app", "Tags": ["traefik.enable=true"], "Address": "127.0.0.1", "Port": backend.port()}
    });
    let r = http
        .put(format!("http://{}/v1/catalog/register", twin.consul_addr()))
        .json(&registration)
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success());

    let mut b = Bench {
        twin,
        http,
        traefik_bin,
        web: free_port(),
        websecure: free_port(),
        dashboard: free_port(),
        certs: log_dir.join("certs"),
        operator: None,
        operator_bin,
        log_dir: log_dir.clone(),
        starts: 0,
    };
    eprintln!(
        "bench availability: {runs} runs per row; logs in {}",
        log_dir.display()
    );
    b.start_operator();
    let websecure = b.websecure;
    let mut cpu = 100;
    let digest = b.put(&b.doc("start", cpu, websecure)).await;
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

    let mut row = Row {
        name: "policy change (a response header)",
        runs: Vec::new(),
    };
    for i in 0..runs {
        let t0 = Instant::now();
        let digest = b.put(&b.doc(&format!("policy-{i}"), cpu, websecure)).await;
        b.wait_ready(&digest).await;
        row.runs.push(window(t0).await);
    }
    rows.push(row);

    let mut row = Row {
        name: "successful structural change (job CPU)",
        runs: Vec::new(),
    };
    for _ in 0..runs {
        cpu += 1;
        let t0 = Instant::now();
        let digest = b.put(&b.doc("structural", cpu, websecure)).await;
        b.wait_ready(&digest).await;
        row.runs.push(window(t0).await);
    }
    rows.push(row);

    let mut row = Row {
        name: "failed structural change (port taken)",
        runs: Vec::new(),
    };
    for _ in 0..runs {
        let squatter = TcpListener::bind("0.0.0.0:0").unwrap();
        let taken = squatter.local_addr().unwrap().port();
        let t0 = Instant::now();
        let bad = b.put(&b.doc("structural", cpu, taken)).await;
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
        let good = b.put(&b.doc("structural", cpu, websecure)).await;
        b.wait_ready(&good).await;
    }
    rows.push(row);

    let mut row = Row {
        name: "operator SIGKILLed mid-rollout (structural)",
        runs: Vec::new(),
    };
    for _ in 0..runs {
        cpu += 1;
        let t0 = Instant::now();
        let digest = b.put(&b.doc("structural", cpu, websecure)).await;
        let deadline = Instant::now() + WAIT;
        while !b.journal_written() {
            assert!(Instant::now() < deadline, "the rollout never started");
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        b.kill_operator();
        b.start_operator();
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
