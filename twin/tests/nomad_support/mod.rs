//! Helpers shared by the Nomad twin tests: a running twin and a small JSON client.
#![allow(dead_code, clippy::unwrap_used, clippy::panic)]

use hashistack_twin::{Twin, TwinConfig};
use serde_json::{Value, json};
use std::time::Duration;

/// A twin plus a client for its Nomad API.
pub struct Nomad {
    pub twin: Option<Twin>,
    pub base: String,
    pub client: reqwest::Client,
    pub token: Option<String>,
}

/// An answer: status, headers and JSON (or text) body.
pub struct Answer {
    pub status: u16,
    pub headers: reqwest::header::HeaderMap,
    pub text: String,
}

impl Answer {
    /// The body as JSON.
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.text).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.text))
    }

    /// `X-Nomad-Index`.
    pub fn index(&self) -> u64 {
        self.headers
            .get("X-Nomad-Index")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    }
}

impl Nomad {
    /// Starts a twin with `config`.
    pub async fn start_with(config: TwinConfig) -> Nomad {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let token = config.acl_token.clone();
        let twin = Twin::start(config).await.unwrap();
        let base = format!("http://{}", twin.nomad_addr());
        Nomad {
            twin: Some(twin),
            base,
            client: reqwest::Client::new(),
            token,
        }
    }

    /// Starts a twin with defaults.
    pub async fn start() -> Nomad {
        Nomad::start_with(TwinConfig::default()).await
    }

    /// Sends a request with the twin's token.
    pub async fn send(&self, method: &str, path: &str, body: Option<Value>) -> Answer {
        self.send_as(self.token.as_deref(), method, path, body)
            .await
    }

    /// Sends a request with `token` (or none).
    pub async fn send_as(
        &self,
        token: Option<&str>,
        method: &str,
        path: &str,
        body: Option<Value>,
    ) -> Answer {
        let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let mut req = self
            .client
            .request(method, format!("{}{path}", self.base))
            .timeout(Duration::from_secs(60));
        if let Some(t) = token {
            req = req.header("X-Nomad-Token", t);
        }
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.unwrap();
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let text = resp.text().await.unwrap();
        Answer {
            status,
            headers,
            text,
        }
    }

    /// GET, expecting 200, returning JSON.
    pub async fn get(&self, path: &str) -> Value {
        let a = self.send("GET", path, None).await;
        assert_eq!(a.status, 200, "GET {path}: {}", a.text);
        a.json()
    }

    /// Registers a job, expecting 200.
    pub async fn register(&self, job: Value) -> Value {
        let a = self
            .send("PUT", "/v1/jobs", Some(json!({"Job": job})))
            .await;
        assert_eq!(a.status, 200, "register: {}", a.text);
        a.json()
    }

    /// Polls `path` until `check` accepts the JSON.
    pub async fn wait_for(
        &self,
        path: &str,
        timeout: Duration,
        check: impl Fn(&Value) -> bool,
    ) -> Value {
        let deadline = std::time::Instant::now() + timeout;
        loop {
            let a = self.send("GET", path, None).await;
            if a.status == 200 {
                let v = a.json();
                if check(&v) {
                    return v;
                }
                if std::time::Instant::now() > deadline {
                    panic!("timed out waiting on {path}; last answer: {v:#}");
                }
            } else if std::time::Instant::now() > deadline {
                panic!(
                    "timed out waiting on {path}; last status {}: {}",
                    a.status, a.text
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Stops the twin (kills every task).
    pub async fn shutdown(mut self) {
        if let Some(t) = self.twin.take() {
            t.shutdown().await;
        }
    }
}

/// A raw_exec service job running `sh -c script` in one group with one task.
pub fn sh_job(id: &str, script: &str) -> Value {
    json!({
        "ID": id,
        "Type": "service",
        "TaskGroups": [{
            "Name": "g",
            "Count": 1,
            "Tasks": [{
                "Name": "t",
                "Driver": "raw_exec",
                "Config": {"command": "/bin/sh", "args": ["-c", script]},
                "KillTimeout": 2_000_000_000u64,
            }],
        }],
    })
}

/// Whether a process with this PID exists (and is not a zombie).
pub fn pid_alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat.split_whitespace().nth(2).is_none_or(|st| st != "Z"),
        Err(_) => false,
    }
}

/// A Nomad API served on its own (no Consul side), counting the requests it answers, so a test
/// can tell whether a client hot-loops.
pub struct CountedNomad {
    pub state: hashistack_twin::nomad::NomadState,
    pub addr: std::net::SocketAddr,
    pub requests: std::sync::Arc<std::sync::atomic::AtomicU64>,
    pub client: Nomad,
    server: tokio::task::JoinHandle<()>,
}

async fn count_request(
    axum::extract::State(counter): axum::extract::State<
        std::sync::Arc<std::sync::atomic::AtomicU64>,
    >,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    next.run(req).await
}

impl CountedNomad {
    /// Starts the Nomad API on a free loopback port.
    pub async fn start() -> CountedNomad {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let state = hashistack_twin::nomad::NomadState::new(hashistack_twin::nomad::NomadConfig {
            consul_http_addr: "127.0.0.1:9".parse().unwrap(),
            acl_token: None,
            data_dir: None,
            system_deployments: true,
            nodes: 1,
            acl_tokens: Vec::new(),
            client_path: None,
        });
        let requests = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
        let app = state.router().layer(axum::middleware::from_fn_with_state(
            requests.clone(),
            count_request,
        ));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        let client = Nomad {
            twin: None,
            base: format!("http://{addr}"),
            client: reqwest::Client::new(),
            token: None,
        };
        CountedNomad {
            state,
            addr,
            requests,
            client,
            server,
        }
    }

    /// Requests answered so far.
    pub fn count(&self) -> u64 {
        self.requests.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Stops the API and every task.
    pub async fn shutdown(self) {
        self.state.shutdown().await;
        self.server.abort();
    }
}

/// Sends `GET http://addr/` with `Host: host`; returns status and the `X-Backend` header.
pub async fn get_with_host(addr: std::net::SocketAddr, host: &str) -> Option<(u16, String)> {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(2))
        .build()
        .unwrap();
    let resp = client
        .get(format!("http://{addr}/"))
        .header("Host", host)
        .send()
        .await
        .ok()?;
    let backend = resp
        .headers()
        .get("X-Backend")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    Some((resp.status().as_u16(), backend))
}
