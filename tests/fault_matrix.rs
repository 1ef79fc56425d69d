//! The fault matrix (issue 13): every fault the operator must ride out, injected through the
//! twin's fault injection and process control while traffic flows through real Traefik to a
//! real backend on 127.0.0.1.
//!
//! One twin, one Traefik (a `raw_exec` job the operator registers) and the real
//! `proxy-operator run` binary as a child process (so it can be SIGKILLed), for every case in
//! turn. A load loop sends a request every 20 ms through Traefik's `web` entry point and a
//! sampler records which process listens there. Each case prints one row:
//!
//! - **failed requests**: errors and non-200 answers from the edit (or the fault) until the case
//!   converged plus a second. Printed, not judged: a structural change still stops the old
//!   Traefik before the new one starts (ARCHITECTURE.md, "Handover").
//! - **lost documents**: the ProxyConfig not byte-for-byte what was written, the status document
//!   missing or unreadable.
//! - **proxy teardowns**: Traefik processes replaced beyond what the case itself asks for (one
//!   for a structural change or a killed proxy, none for a policy change), and the job stopped or
//!   gone. A rollback of a good change shows here as a second replacement.
//! - **time to converge after recovery**: from the moment the fault is lifted until the status
//!   is `Ready` on the case's digest and Traefik answers 200.
//! - **pass**: 0 lost documents, 0 teardowns, and convergence within 2 × the backoff the
//!   operator reaches during the fault (doubling from `MIN_BACKOFF`, capped at `MAX_BACKOFF`).
//!
//! `FAULT_MATRIX_LOGS=<dir>` keeps the operators' logs.
//!
//! The operator's leader session has Consul's minimum TTL (10 s): a SIGKILLed leader's lock is
//! released by Consul 1.5–2 × TTL later (`leader.rs`), so for that case recovery is the moment
//! the dead leader's lock is released, the earliest any replica may act.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
// The matrix prints its table.
#![allow(clippy::print_stdout, clippy::print_stderr)]

#[path = "support/mod.rs"]
mod support;

use std::path::PathBuf;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hashistack_twin::{Api, Twin, TwinConfig};
use proxy_operator::reconcile::{MAX_BACKOFF, MIN_BACKOFF};
use proxy_operator::spec::{
    self,
    status::{Phase, ProxyStatus},
};
use serde_json::{Value, json};
use support::{Backend, ChildGuard, free_port, get_with_host, pid_listening_on};

const BIN: &str = env!("CARGO_BIN_EXE_proxy-operator");
const PREFIX: &str = "proxy-operator";
const JOB: &str = "proxy";
const APP: &str = "app";
const APP_HOST: &str = "app.localhost";
/// How long each API fault lasts.
const FAULT: Duration = Duration::from_secs(5);
/// The first rollout (Traefik's first start on a busy machine).
const FIRST_START: Duration = Duration::from_secs(120);
/// The longest any one wait may take before the case counts as not converged.
const WAIT: Duration = Duration::from_secs(90);
/// One request through Traefik every 20 ms.
const LOAD_INTERVAL: Duration = Duration::from_millis(20);
/// How often the listening process is sampled.
const PID_INTERVAL: Duration = Duration::from_millis(100);
/// What is still measured after a case converged.
const SETTLE: Duration = Duration::from_secs(1);

/// The backoff the operator reaches after failing for `fault`: doubling from `MIN_BACKOFF`
/// until it covers the outage, capped at `MAX_BACKOFF`.
fn backoff_after(fault: Duration) -> Duration {
    let mut backoff = MIN_BACKOFF;
    while backoff < fault && backoff < MAX_BACKOFF {
        backoff *= 2;
    }
    backoff.min(MAX_BACKOFF)
}

/// What a case changes in the document.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Edit {
    /// A response header: KV only, Traefik keeps running.
    Policy,
    /// The job's CPU: a new job version, Traefik is replaced once.
    Structural,
}

impl Edit {
    /// Traefik replacements the edit itself causes.
    fn restarts(self) -> usize {
        match self {
            Edit::Structural => 1,
            Edit::Policy => 0,
        }
    }
}

/// One row of the table.
struct Row {
    case: String,
    failed: usize,
    lost: usize,
    teardowns: usize,
    converged: Option<Duration>,
    bound: Duration,
    detail: String,
}

impl Row {
    fn pass(&self) -> bool {
        self.lost == 0 && self.teardowns == 0 && self.converged.is_some_and(|c| c <= self.bound)
    }

    fn print(&self) {
        let converged = self.converged.map_or_else(
            || "never".to_owned(),
            |c| format!("{:.1} s", c.as_secs_f64()),
        );
        println!(
            "| {:<58} | {:>6} | {:>4} | {:>9} | {:>8} (≤ {:>4.1} s) | {:<4} |",
            self.case,
            self.failed,
            self.lost,
            self.teardowns,
            converged,
            self.bound.as_secs_f64(),
            if self.pass() { "yes" } else { "NO" },
        );
    }
}

/// What a sampler saw, with when.
type Samples<T> = Arc<Mutex<Vec<(Instant, T)>>>;

/// The twin, the backend, Traefik's ports, the operator process and the samplers.
struct Matrix {
    twin: Twin,
    _backend: Backend,
    dir: tempfile::TempDir,
    http: reqwest::Client,
    web: u16,
    websecure: u16,
    dashboard: u16,
    operator: Option<ChildGuard>,
    starts: usize,
    edition: u32,
    cpu: u32,
    /// The document as last written.
    written: String,
    requests: Samples<bool>,
    pids: Samples<Option<u32>>,
    samplers: Vec<tokio::task::JoinHandle<()>>,
    /// The leader's session when the case's fault began.
    leader_before: Option<String>,
    /// The process listening on `web` when the case began.
    pid_before: Option<u32>,
}

impl Drop for Matrix {
    fn drop(&mut self) {
        for task in &self.samplers {
            task.abort();
        }
        // `FAULT_MATRIX_LOGS=<dir>` keeps the operators' logs for a look at what they did.
        if let Some(keep) = std::env::var_os("FAULT_MATRIX_LOGS") {
            let keep = PathBuf::from(keep);
            let _ = std::fs::create_dir_all(&keep);
            for i in 1..=self.starts {
                let name = format!("operator-{i}.log");
                let _ = std::fs::copy(self.dir.path().join(&name), keep.join(&name));
            }
        }
        // A failed assertion must not leave Traefik behind: it is found by its port.
        if let Some(pid) = pid_listening_on(self.web) {
            let _ = Command::new("kill")
                .args(["-KILL", &pid.to_string()])
                .status();
        }
    }
}

impl Matrix {
    async fn start() -> Matrix {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let twin = Twin::start(TwinConfig::default()).await.unwrap();
        let backend = Backend::start("app-backend").await;
        support::register_consul_service(
            twin.consul_addr(),
            APP,
            backend.port(),
            &["traefik.enable=true"],
        )
        .await;
        let dir = tempfile::tempdir().unwrap();
        write_certificate(&dir.path().join("certs"));
        let mut m = Matrix {
            twin,
            _backend: backend,
            dir,
            http: reqwest::Client::builder().no_proxy().build().unwrap(),
            web: free_port(),
            websecure: free_port(),
            dashboard: free_port(),
            operator: None,
            starts: 0,
            edition: 1,
            cpu: 100,
            written: String::new(),
            requests: Arc::default(),
            pids: Arc::default(),
            samplers: Vec::new(),
            leader_before: None,
            pid_before: None,
        };
        m.spawn_operator();
        let digest = m.put_doc().await;
        let first = m.converge(&digest, FIRST_START).await;
        assert!(
            first.is_some(),
            "the first rollout never became Ready: {:#?}\n{}",
            m.status(),
            m.logs()
        );
        m.start_samplers();
        m
    }

    fn certs(&self) -> PathBuf {
        self.dir.path().join("certs")
    }

    fn spawn_operator(&mut self) {
        self.starts += 1;
        let mut cmd = Command::new(BIN);
        cmd.args(["run", "--prefix", PREFIX, "--debounce", "50ms"])
            .args([
                "--resync",
                "2s",
                "--leader-ttl",
                "10s",
                "--lock-delay",
                "1s",
            ])
            .args(["--http-addr", "127.0.0.1:0"])
            .args([
                "--consul-addr",
                &format!("http://{}", self.twin.consul_addr()),
            ])
            .args([
                "--nomad-addr",
                &format!("http://{}", self.twin.nomad_addr()),
            ])
            .args(support::operator_limit_flags(self.dir.path()))
            .env_remove("CONSUL_HTTP_TOKEN")
            .env_remove("NOMAD_TOKEN")
            .env_remove("CONSUL_HTTP_ADDR")
            .env_remove("NOMAD_ADDR")
            .env_remove("NOMAD_ALLOC_ID")
            .env("RUST_LOG", "info");
        let log = self
            .dir
            .path()
            .join(format!("operator-{}.log", self.starts));
        self.operator = Some(ChildGuard::spawn(cmd, &log));
    }

    fn logs(&self) -> String {
        let mut out = String::new();
        for i in 1..=self.starts {
            let path = self.dir.path().join(format!("operator-{i}.log"));
            let text = std::fs::read_to_string(&path).unwrap_or_default();
            let tail: Vec<&str> = text.lines().rev().take(40).collect();
            out.push_str(&format!("--- operator {i} (last 40 lines)\n"));
            for line in tail.into_iter().rev() {
                out.push_str(line);
                out.push('\n');
            }
        }
        out
    }

    /// The document: Traefik by `raw_exec` on loopback with a certificate pair from the
    /// certificate directory, `edition` as a response header and `cpu` as the job's CPU.
    fn doc(&self) -> String {
        let certs = self.certs();
        let doc = json!({
            "apiVersion": "proxy-operator.io/v1alpha1",
            "kind": "ProxyConfig",
            "metadata": {"name": "faults"},
            "spec": {
                "proxy": "traefik",
                "domainSuffix": "localhost",
                "discovery": {
                    "primary": "consul",
                    "consul": {"address": self.twin.consul_addr().to_string(), "refreshInterval": "1s"},
                    "nomad": {"address": format!("http://{}", self.twin.nomad_addr()), "refreshInterval": "5s"},
                    "throttleDuration": "100ms"
                },
                "entryPoints": {
                    "web": {"address": format!("127.0.0.1:{}", self.web), "redirectTo": null},
                    "websecure": {"address": format!("127.0.0.1:{}", self.websecure)}
                },
                "tls": {
                    "certDir": certs.display().to_string(),
                    "certificates": [{
                        "certFile": certs.join("edge.pem").display().to_string(),
                        "keyFile": certs.join("edge-key.pem").display().to_string()
                    }]
                },
                "middlewares": {"securityHeaders": {"headers": {"X-Edition": self.edition.to_string()}}},
                "metrics": {"prometheus": false},
                "dashboard": {"enabled": true, "insecure": true, "address": format!("127.0.0.1:{}", self.dashboard)},
                "job": {
                    "id": JOB,
                    "type": "system",
                    "driver": {"rawExec": {"command": support::traefik_bin().display().to_string()}},
                    "resources": {"cpu": self.cpu, "memoryMB": 128}
                },
                "rollout": {"healthyDeadline": "45s", "minHealthyTime": "2s", "onFailure": "rollback"}
            }
        });
        serde_json::to_string_pretty(&doc).unwrap()
    }

    /// Writes the document over HTTP; its digest.
    async fn put_doc(&mut self) -> String {
        self.written = self.doc();
        let resp = self
            .http
            .put(format!(
                "http://{}/v1/kv/{PREFIX}/config",
                self.twin.consul_addr()
            ))
            .body(self.written.clone())
            .send()
            .await
            .unwrap();
        assert!(resp.status().is_success(), "PUT config: {}", resp.status());
        spec::load(self.written.as_bytes())
            .unwrap()
            .digest()
            .to_owned()
    }

    async fn edit(&mut self, edit: Edit) -> String {
        match edit {
            Edit::Policy => self.edition += 1,
            Edit::Structural => self.cpu += 1,
        }
        self.put_doc().await
    }

    /// A KV entry read in-process: no request the faults or the counters see.
    fn kv(&self, key: &str) -> Option<(Vec<u8>, u64, Option<String>)> {
        self.twin.consul().read(|s| {
            s.kv_get(key)
                .map(|e| (e.value.clone(), e.modify_index, e.session.clone()))
        })
    }

    /// Starts a case: remembers the process serving now; the case's start.
    fn begin(&mut self) -> Instant {
        self.pid_before = pid_listening_on(self.web);
        Instant::now()
    }

    /// The session holding the leader lock now.
    fn leader(&self) -> Option<String> {
        self.kv(&format!("{PREFIX}/leader")).and_then(|e| e.2)
    }

    fn status(&self) -> Option<ProxyStatus> {
        serde_json::from_slice(&self.kv(&format!("{PREFIX}/status"))?.0).ok()
    }

    /// The journal's modify index (0 without one).
    fn journal_index(&self) -> u64 {
        self.kv(&format!("{PREFIX}/rollout")).map_or(0, |e| e.1)
    }

    /// Waits until the rollout of an edit made after `before` has written its journal.
    async fn rollout_started(&self, before: u64) {
        let deadline = Instant::now() + WAIT;
        while self.journal_index() == before {
            assert!(
                Instant::now() < deadline,
                "the rollout never started: {:#?}\n{}",
                self.status(),
                self.logs()
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// Waits until the status is `Ready` on `digest` and Traefik answers 200; how long it took.
    async fn converge(&self, digest: &str, within: Duration) -> Option<Duration> {
        let start = Instant::now();
        while start.elapsed() < within {
            let ready = self.status().is_some_and(|s| {
                s.phase == Phase::Ready && s.last_applied_digest.as_deref() == Some(digest)
            });
            if ready
                && get_with_host(self.web, APP_HOST, "/")
                    .await
                    .is_some_and(|seen| seen.status == 200)
            {
                return Some(start.elapsed());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        None
    }

    fn start_samplers(&mut self) {
        let (web, requests) = (self.web, Arc::clone(&self.requests));
        self.samplers.push(tokio::spawn(async move {
            let client = reqwest::Client::builder()
                .no_proxy()
                .timeout(Duration::from_secs(2))
                .build()
                .unwrap();
            let mut tick = tokio::time::interval(LOAD_INTERVAL);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            // Bounded: an hour at 50 req/s.
            for _ in 0..180_000 {
                tick.tick().await;
                let sent = Instant::now();
                let ok = client
                    .get(format!("http://127.0.0.1:{web}/"))
                    .header("Host", APP_HOST)
                    .send()
                    .await
                    .is_ok_and(|r| r.status().as_u16() == 200);
                requests.lock().unwrap().push((sent, ok));
            }
        }));
        let (web, pids) = (self.web, Arc::clone(&self.pids));
        self.samplers.push(tokio::spawn(async move {
            for _ in 0..36_000 {
                let pid = tokio::task::spawn_blocking(move || pid_listening_on(web))
                    .await
                    .ok()
                    .flatten();
                pids.lock().unwrap().push((Instant::now(), pid));
                tokio::time::sleep(PID_INTERVAL).await;
            }
        }));
    }

    /// The job as Nomad answers it now.
    /// The serving slot of the proxy job: `<id>`, or the handover's `<id>-b` when `<id>` is
    /// stopped or absent.
    async fn job(&self) -> Option<Value> {
        let a = self.job_by_id(JOB).await;
        if a.as_ref().is_some_and(|j| j["Stop"] == false) {
            return a;
        }
        self.job_by_id(&format!("{JOB}-b")).await.or(a)
    }

    async fn job_by_id(&self, id: &str) -> Option<Value> {
        let resp = self
            .http
            .get(format!("http://{}/v1/job/{id}", self.twin.nomad_addr()))
            .send()
            .await
            .ok()?;
        resp.status().is_success().then_some(())?;
        resp.json().await.ok()
    }

    /// Ends a case: waits for convergence on `digest` after `recovered`, then counts what the
    /// case cost since `t0`; `restarts` Traefik replacements are the case's own.
    async fn row(
        &self,
        case: &str,
        restarts: usize,
        t0: Instant,
        fault: (Instant, Instant),
        digest: &str,
    ) -> Row {
        let (fault_start, recovered) = fault;
        let bound = 2 * backoff_after(recovered.saturating_duration_since(fault_start));
        let converged = self
            .converge(digest, WAIT)
            .await
            .map(|_| recovered.elapsed());
        tokio::time::sleep(SETTLE).await;
        let end = Instant::now();
        let failed = self
            .requests
            .lock()
            .unwrap()
            .iter()
            .filter(|(t, ok)| *t >= t0 && *t <= end && !ok)
            .count();
        // Seeded with the process of the case's start: a replacement within the first samples
        // must not go unseen.
        let mut seen: Vec<u32> = self.pid_before.into_iter().collect();
        for (t, pid) in self.pids.lock().unwrap().iter() {
            if *t >= t0
                && *t <= end
                && let Some(pid) = pid
                && seen.last() != Some(pid)
            {
                seen.push(*pid);
            }
        }
        let replaced = seen.len().saturating_sub(1);
        let job = self.job().await;
        let stopped = job
            .as_ref()
            .is_none_or(|j| j["Stop"].as_bool().unwrap_or(false));
        let teardowns = replaced.saturating_sub(restarts) + usize::from(stopped);
        let config = self.kv(&format!("{PREFIX}/config")).map(|e| e.0);
        let mut lost = usize::from(config.as_deref() != Some(self.written.as_bytes()));
        lost += usize::from(self.status().is_none());
        let detail = format!(
            "processes listening: {seen:?}; leader session replaced: {}; status: {:?}; job version {:?}",
            self.leader() != self.leader_before,
            self.status().map(|s| (s.phase, s.last_applied_digest)),
            job.as_ref().map(|j| j["Version"].clone()),
        );
        Row {
            case: case.to_owned(),
            failed,
            lost,
            teardowns,
            converged,
            bound,
            detail,
        }
    }

    /// A case that injects an API fault mid-rollout of `edit`: `inject` at once after the
    /// rollout's journal is written, `lift` after [`FAULT`].
    async fn api_fault(
        &mut self,
        case: &str,
        edit: Edit,
        inject: impl AsyncFnOnce(&Twin),
        lift: impl AsyncFnOnce(&Twin),
    ) -> Row {
        let t0 = self.begin();
        let before = self.journal_index();
        let digest = self.edit(edit).await;
        self.rollout_started(before).await;
        self.leader_before = self.leader();
        let fault_start = Instant::now();
        inject(&self.twin).await;
        tokio::time::sleep(FAULT).await;
        lift(&self.twin).await;
        let recovered = Instant::now();
        self.row(case, edit.restarts(), t0, (fault_start, recovered), &digest)
            .await
    }
}

/// Prints a row as soon as its case ended (a later case that panics keeps the earlier rows).
fn record(rows: &mut Vec<Row>, row: Row) {
    row.print();
    rows.push(row);
}

/// A self-signed certificate and its key as `edge.pem` and `edge-key.pem` in `dir`.
fn write_certificate(dir: &std::path::Path) {
    std::fs::create_dir_all(dir).unwrap();
    let params = rcgen::CertificateParams::new(vec!["app.localhost".into()]).unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = params.self_signed(&key).unwrap();
    std::fs::write(dir.join("edge.pem"), cert.pem()).unwrap();
    std::fs::write(dir.join("edge-key.pem"), key.serialize_pem()).unwrap();
}

/// Makes `dir` unreadable to the operator. Permission bits do not stop root, which these tests
/// may run as: then the directory is moved away, so every read of it fails all the same.
/// Returns how to undo it.
fn make_unreadable(dir: &std::path::Path) -> impl FnOnce() + use<> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o000)).unwrap();
    let readable = std::fs::read(dir.join("edge.pem")).is_ok();
    let away = dir.with_extension("away");
    if readable {
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        std::fs::rename(dir, &away).unwrap();
    }
    let dir = dir.to_path_buf();
    move || {
        if readable {
            std::fs::rename(&away, &dir).unwrap();
        } else {
            std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_fault_of_the_matrix_loses_no_document_tears_down_no_serving_proxy_and_converges_within_twice_the_backoff()
 {
    let mut m = Matrix::start().await;
    let mut rows: Vec<Row> = Vec::new();
    let header = || {
        println!(
            "| {:<58} | {:>6} | {:>4} | {:>9} | {:>21} | {:<4} |",
            "case", "failed", "lost", "teardowns", "converged after recovery", "pass"
        );
        println!(
            "|{:-<60}|{:-<8}|{:-<6}|{:-<11}|{:-<23}|{:-<6}|",
            "", "", "", "", "", ""
        );
    };
    header();

    record(
        &mut rows,
        m.api_fault(
            "Consul down mid-rollout (policy change)",
            Edit::Policy,
            async |t: &Twin| t.faults().stop(Api::Consul).await,
            async |t: &Twin| t.faults().start(Api::Consul).await.unwrap(),
        )
        .await,
    );
    record(
        &mut rows,
        m.api_fault(
            "Nomad down mid-rollout (structural change)",
            Edit::Structural,
            async |t: &Twin| t.faults().stop(Api::Nomad).await,
            async |t: &Twin| t.faults().start(Api::Nomad).await.unwrap(),
        )
        .await,
    );

    // The operator SIGKILLed once its journal is written, and started again at once.
    {
        let case = "operator SIGKILLed mid-rollout, restarted (structural)";
        let t0 = m.begin();
        let before = m.journal_index();
        let leader = m.leader();
        assert!(leader.is_some(), "the operator leads");
        m.leader_before = leader.clone();
        let digest = m.edit(Edit::Structural).await;
        m.rollout_started(before).await;
        let fault_start = Instant::now();
        m.operator = None; // ChildGuard: SIGKILL and reap
        m.spawn_operator();
        // Recovery: Consul released the dead leader's lock (its session ran out).
        let deadline = Instant::now() + WAIT;
        while m.leader() == leader {
            assert!(
                Instant::now() < deadline,
                "the dead leader's lock was never released"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let recovered = Instant::now();
        record(
            &mut rows,
            m.row(
                case,
                Edit::Structural.restarts(),
                t0,
                (fault_start, recovered),
                &digest,
            )
            .await,
        );
    }

    record(
        &mut rows,
        m.api_fault(
            "5 s latency on both APIs mid-rollout (policy change)",
            Edit::Policy,
            async |t: &Twin| {
                t.faults().latency(Api::Consul, Duration::from_secs(5));
                t.faults().latency(Api::Nomad, Duration::from_secs(5));
            },
            async |t: &Twin| t.faults().clear().await.unwrap(),
        )
        .await,
    );
    record(
        &mut rows,
        m.api_fault(
            "Consul answers 500 mid-rollout (policy change)",
            Edit::Policy,
            async |t: &Twin| t.faults().fail_path(Api::Consul, "/v1/", 500),
            async |t: &Twin| t.faults().clear().await.unwrap(),
        )
        .await,
    );
    record(
        &mut rows,
        m.api_fault(
            "Nomad answers 500 mid-rollout (structural change)",
            Edit::Structural,
            async |t: &Twin| t.faults().fail_path(Api::Nomad, "/v1/", 500),
            async |t: &Twin| t.faults().clear().await.unwrap(),
        )
        .await,
    );

    // The proxy process SIGKILLed at rest: Nomad restarts it after the job's restart delay;
    // recovery is the new process listening.
    {
        let case = "the proxy process killed (Nomad restarts it)";
        let t0 = m.begin();
        let digest = m.status().and_then(|s| s.last_applied_digest).unwrap();
        let pid = pid_listening_on(m.web).expect("Traefik listens");
        m.leader_before = m.leader();
        let fault_start = Instant::now();
        let killed = Command::new("kill")
            .args(["-KILL", &pid.to_string()])
            .status()
            .unwrap();
        assert!(killed.success());
        let deadline = Instant::now() + WAIT;
        loop {
            match pid_listening_on(m.web) {
                Some(new) if new != pid => break,
                _ => {
                    assert!(Instant::now() < deadline, "Nomad never restarted Traefik");
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
        }
        let recovered = Instant::now();
        record(
            &mut rows,
            m.row(case, 1, t0, (fault_start, recovered), &digest).await,
        );
    }

    // The certificate directory unreadable while a structural change is written: preflight
    // refuses it (nothing changes, Traefik keeps serving); once readable again it rolls out.
    {
        let case = "the certificate directory unreadable (structural change)";
        let t0 = m.begin();
        m.leader_before = m.leader();
        let fault_start = Instant::now();
        let restore = make_unreadable(&m.certs());
        let digest = m.edit(Edit::Structural).await;
        let refused = support::eventually(WAIT, || {
            let s = m.status();
            let digest = digest.clone();
            async move {
                // A refusal names the certificate file (the status of a refused document
                // carries no observed digest).
                s.filter(|s| {
                    s.phase == Phase::Invalid
                        && s.last_applied_digest.as_deref() != Some(&digest)
                        && s.validation_errors
                            .iter()
                            .any(|e| e.message.contains("edge.pem"))
                })
            }
        })
        .await;
        let refused = refused.unwrap_or_else(|| {
            panic!(
                "the change was not refused while the certificates were unreadable: {:#?}\n{}",
                m.status(),
                m.logs()
            )
        });
        assert_eq!(
            refused.validation_errors[0].path, "spec.tls.certificates[0]",
            "{refused:?}"
        );
        tokio::time::sleep(FAULT.saturating_sub(fault_start.elapsed())).await;
        restore();
        let recovered = Instant::now();
        record(
            &mut rows,
            m.row(
                case,
                Edit::Structural.restarts(),
                t0,
                (fault_start, recovered),
                &digest,
            )
            .await,
        );
    }

    println!(
        "\nFault matrix: Traefik under {} req/s (loopback); faults last {} s; resync 2 s\n",
        1000 / LOAD_INTERVAL.as_millis(),
        FAULT.as_secs()
    );
    header();
    for row in &rows {
        row.print();
    }
    for row in &rows {
        println!("{}: {}", row.case, row.detail);
    }
    let failed: Vec<String> = rows
        .iter()
        .filter(|r| !r.pass())
        .map(|r| format!("{}: {}", r.case, r.detail))
        .collect();
    assert!(
        failed.is_empty(),
        "failed cases:\n{}\n{}",
        failed.join("\n"),
        m.logs()
    );

    m.operator = None;
    let _ = m
        .http
        .delete(format!(
            "http://{}/v1/job/{JOB}?purge=true",
            m.twin.nomad_addr()
        ))
        .send()
        .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
}
