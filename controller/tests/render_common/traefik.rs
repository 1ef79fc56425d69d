//! The one harness that runs real Traefik on a rendered static config, with the rendered KV
//! policy tree served by the twin's Consul KV. Included with
//! `#[path = "render_common/traefik.rs"] mod traefik_harness;` by test crates that also declare
//! `mod support;` (tests/support) and `mod render_common;`.
#![allow(dead_code)]

use std::process::Command;
use std::time::Duration;

use proxy_operator::render::model::Model;
use serde_json::Value;

use crate::render_common::on_free_loopback_ports;
use crate::support::{ChildGuard, eventually, free_port, traefik_bin};

/// The password of both test hashes in `render_common` (`openssl passwd -apr1 -salt abcdefgh`).
pub const PASSWORD: &str = "secret";

pub struct RunningTraefik {
    pub guard: ChildGuard,
    pub internal: u16,
    _dir: tempfile::TempDir,
}

pub fn start_traefik(static_yaml: &str) -> RunningTraefik {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("traefik.yml");
    std::fs::write(&config, static_yaml).unwrap();
    // Traefik silently ignores a --configfile that does not exist and runs on defaults.
    assert!(config.is_file());
    let internal: u16 = static_yaml
        .lines()
        .skip_while(|l| !l.starts_with("  traefik:"))
        .find_map(|l| l.trim().strip_prefix("address: ").map(str::to_string))
        .and_then(|a| a.trim_matches('"').rsplit(':').next().map(str::to_string))
        .and_then(|p| p.parse().ok())
        .expect("internal entry point address in the rendered YAML");
    let mut cmd = Command::new(traefik_bin());
    cmd.arg(format!("--configfile={}", config.display()))
        .current_dir(dir.path())
        .env("XDG_CONFIG_HOME", dir.path())
        .env("HOME", dir.path());
    let guard = ChildGuard::spawn(cmd, &dir.path().join("traefik.log"));
    RunningTraefik {
        guard,
        internal,
        _dir: dir,
    }
}

pub fn client() -> reqwest::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder()
        .timeout(Duration::from_secs(2))
        .build()
        .unwrap()
}

pub fn assert_no_fatal_log(t: &RunningTraefik) {
    let log = t.guard.log();
    for line in log.lines() {
        assert!(
            !line.contains("Command error")
                && !line.contains("\"level\":\"fatal\"")
                && !line.contains(" FTL "),
            "Traefik logged a fatal error: {line}\nfull log:\n{log}"
        );
    }
}

pub async fn wait_for_ping(t: &mut RunningTraefik) {
    let c = client();
    let url = format!("http://127.0.0.1:{}/ping", t.internal);
    let ok = eventually(Duration::from_secs(10), || {
        let c = c.clone();
        let url = url.clone();
        async move {
            c.get(&url)
                .send()
                .await
                .ok()
                .filter(|r| r.status() == 200)
                .map(|_| ())
        }
    })
    .await;
    if ok.is_none() {
        panic!(
            "Traefik /ping never answered 200 (exit: {:?}); log:\n{}",
            t.guard.try_wait(),
            t.guard.log()
        );
    }
}

pub fn loopback_model(mut model: Model) -> Model {
    on_free_loopback_ports(&mut model, free_port);
    model
}

/// Writes the rendered KV entries into the twin's Consul KV, one PUT per key.
pub async fn put_kv(consul: std::net::SocketAddr, entries: &[(String, String)]) {
    let c = client();
    for (k, v) in entries {
        let resp = c
            .put(format!("http://{consul}/v1/kv/{k}"))
            .body(v.clone())
            .send()
            .await
            .unwrap_or_else(|e| panic!("PUT {k}: {e}"));
        assert!(resp.status().is_success(), "PUT {k}: {}", resp.status());
    }
}

/// Real Traefik on a rendered model, with the rendered policy tree and one app route
/// (`Host(app.test)` on the `web` entry point to `backend`) in the twin's Consul KV, loaded.
pub struct Served {
    /// The twin (Consul KV and catalog).
    pub twin: hashistack_twin::Twin,
    /// Traefik.
    pub traefik: RunningTraefik,
    /// Port of the plain-HTTP `web` entry point.
    pub web: u16,
    /// The KV entries written.
    pub kv: Vec<(String, String)>,
}

/// A model with only a plain-HTTP `web` entry point on a free loopback port, no policy, no
/// certificates: tests add the one policy they exercise.
pub fn plain_http_model() -> Model {
    let mut model = crate::render_common::traefik_model();
    model.entry_points.retain(|ep| ep.name == "web");
    model.entry_points[0].redirect_to = None;
    model.policy = Default::default();
    model.tls.certificates.clear();
    model.tls.min_version = None;
    model.metrics = None;
    model.dashboard.insecure = false;
    loopback_model(model)
}

/// Renders `model`, writes its tree plus the app route to `backend` into a fresh twin, starts
/// Traefik and waits until Traefik loaded this very tree (its generation marker) with every
/// router and middleware enabled.
pub async fn serve(model: Model, backend: &str) -> Served {
    serve_servers(model, &[backend.to_string()]).await
}

/// [`serve`] with several servers behind the app route (Traefik balances round-robin).
pub async fn serve_servers(mut model: Model, backends: &[String]) -> Served {
    let twin = hashistack_twin::Twin::start(hashistack_twin::TwinConfig::default())
        .await
        .unwrap();
    model.discovery.consul.address = twin.consul_addr().to_string();
    model.discovery.nomad.address = format!("http://{}", twin.nomad_addr());
    let ctx = proxy_operator::render::RenderContext::default();
    let rendered = proxy_operator::render::render_model(&model, &ctx).unwrap();
    let root = format!("{}/traefik", ctx.prefix);
    let mut kv = rendered.traefik_kv.clone();
    kv.extend([
        (
            format!("{root}/http/routers/app/rule"),
            "Host(`app.test`)".to_string(),
        ),
        (
            format!("{root}/http/routers/app/service"),
            "app".to_string(),
        ),
        (
            format!("{root}/http/routers/app/entryPoints/0"),
            "web".to_string(),
        ),
    ]);
    for (i, url) in backends.iter().enumerate() {
        kv.push((
            format!("{root}/http/services/app/loadBalancer/servers/{i}/url"),
            url.clone(),
        ));
    }
    put_kv(twin.consul_addr(), &kv).await;
    let mut traefik = start_traefik(rendered.traefik_static.as_deref().unwrap());
    wait_for_ping(&mut traefik).await;
    let generation = kv
        .iter()
        .find_map(|(k, _)| {
            k.split('/')
                .find(|seg| seg.starts_with("proxy-operator-generation-"))
                .map(str::to_string)
        })
        .unwrap();
    wait_until_loaded(&traefik, &generation, &["app@consul"]).await;
    let web = model.entry_points[0].address.port;
    Served {
        twin,
        traefik,
        web,
        kv,
    }
}

/// Waits until `/api/rawdata` lists the middleware `generation` and the `routers`, and every
/// router and middleware from Consul KV is enabled; panics with the last answer and the log.
pub async fn wait_until_loaded(t: &RunningTraefik, generation: &str, routers: &[&str]) {
    let c = client();
    let url = format!("http://127.0.0.1:{}/api/rawdata", t.internal);
    let ok = eventually(Duration::from_secs(15), || {
        let c = c.clone();
        let url = url.clone();
        async move {
            let raw: Value = c.get(&url).send().await.ok()?.json().await.ok()?;
            let all_enabled = |kind: &str| {
                raw[kind].as_object().is_some_and(|m| {
                    m.iter()
                        .filter(|(name, _)| name.ends_with("@consul"))
                        .all(|(_, v)| v["status"] == "enabled")
                })
            };
            (raw["middlewares"]
                .get(format!("{generation}@consul"))
                .is_some()
                && routers.iter().all(|r| raw["routers"].get(*r).is_some())
                && all_enabled("routers")
                && all_enabled("middlewares"))
            .then_some(())
        }
    })
    .await;
    if ok.is_none() {
        let body = match c.get(&url).send().await {
            Ok(r) => r.text().await.unwrap_or_default(),
            Err(e) => e.to_string(),
        };
        panic!(
            "Traefik never loaded the tree; last /api/rawdata: {body}\nlog:\n{}",
            t.guard.log()
        );
    }
}

/// An HTTP client for `app.test` through the `web` entry point: no redirects, no automatic
/// decompression, optionally bound to a local address (e.g. 127.0.0.2).
pub fn app_client(web: u16, local: Option<std::net::IpAddr>) -> reqwest::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let mut b = reqwest::Client::builder()
        .no_proxy()
        .resolve("app.test", ([127, 0, 0, 1], web).into())
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(5));
    if let Some(ip) = local {
        b = b.local_address(ip);
    }
    b.build().unwrap()
}

/// What a hand-rolled test server answers: status, headers, body.
pub type Answer = (u16, Vec<(String, String)>, String);

/// A minimal HTTP/1.1 server on 127.0.0.1 for behaviours `support::Backend` cannot show (an
/// auth service's verdicts, failing backends). `handler` sees the connection number (from 0)
/// and the request head (lowercased header names); `None` closes the connection unanswered.
/// Every answer closes the connection.
pub async fn fake_http<F>(handler: F) -> (std::net::SocketAddr, tokio::task::JoinHandle<()>)
where
    F: Fn(usize, &str, &[(String, String)]) -> Option<Answer> + Send + Sync + 'static,
{
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let handler = std::sync::Arc::new(handler);
    let task = tokio::spawn(async move {
        let mut n = 0usize;
        while let Ok((stream, _)) = listener.accept().await {
            let handler = handler.clone();
            let i = n;
            n += 1;
            tokio::spawn(async move { answer(stream, i, &*handler).await });
        }
    });
    (addr, task)
}

/// Reads one request head from `stream` and writes `handler`'s answer.
pub async fn answer<S, F>(mut stream: S, i: usize, handler: &F)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
    F: Fn(usize, &str, &[(String, String)]) -> Option<Answer> + ?Sized,
{
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
        match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => return,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
    let head = String::from_utf8_lossy(&buf).to_string();
    let mut lines = head.lines();
    let request_line = lines.next().unwrap_or_default().to_string();
    let headers: Vec<(String, String)> = lines
        .take_while(|l| !l.is_empty())
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let Some((status, extra, body)) = handler(i, &request_line, &headers) else {
        return; // dropped: the proxy sees the connection close without an answer
    };
    let mut out = format!(
        "HTTP/1.1 {status} X\r\nContent-Length: {}\r\nConnection: close\r\n",
        body.len()
    );
    for (k, v) in extra {
        out.push_str(&format!("{k}: {v}\r\n"));
    }
    out.push_str("\r\n");
    out.push_str(&body);
    let _ = stream.write_all(out.as_bytes()).await;
    let _ = stream.shutdown().await;
}
