//! `spec.logging` and `spec.entryPoints.transport` through real Caddy (issue 14): the rendered
//! config is started with `caddy run`, with its stdout and stderr in separate files, so the
//! tests see where each line goes. Access logs reach stdout as JSON with redacted headers, the
//! 5xx filter keeps only server errors, the proxy's own log takes the chosen format, a request
//! in flight when Caddy gets SIGTERM or SIGINT (or a new config) is answered within the grace
//! period, which also bounds the drain, and the read timeout closes a stalled request.
//! `caddy validate` accepts the config with every logging and timeout setting.
#![allow(clippy::unwrap_used, clippy::panic)] // tests fail loudly

#[path = "../../tests/support/mod.rs"]
mod support;

mod caddy_support;

use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use caddy_support::{Ports, caddy_cmd, catalog, instance};
use proxy_operator::proxy::caddy::{CaddyAdmin, CaddyConfig, Catalog, HttpCaddyAdmin};
use proxy_operator::spec::ValidatedSpec;
use serde_json::Value;
use support::{Backend, eventually, free_port, process_alive};

const OPT_IN: [&str; 1] = ["traefik.enable=true"];

/// A Caddy spec on `ports`: `transport` goes under `entryPoints` (indented 4), `extra` under
/// `spec` (indented 2).
fn spec(ports: Ports, dir: &Path, transport: &str, extra: &str) -> ValidatedSpec {
    let doc = format!(
        "apiVersion: proxy-operator.io/v1alpha1\nkind: ProxyConfig\nspec:\n  proxy: caddy\n  domainSuffix: example.test\n  entryPoints:\n    web:\n      address: \"127.0.0.1:{}\"\n    websecure:\n      address: \"127.0.0.1:{}\"\n{transport}  dashboard:\n    address: \"127.0.0.1:{}\"\n  tls:\n    certDir: {}\n{extra}",
        ports.web,
        ports.websecure,
        ports.admin,
        dir.join("certs").display()
    );
    proxy_operator::spec::load(doc.as_bytes()).unwrap_or_else(|e| panic!("{e}\n{doc}"))
}

fn render(spec: &ValidatedSpec, services: &Catalog, ports: Ports) -> CaddyConfig {
    let model = caddy_support::model(spec, None);
    caddy_support::render(&model, services, ports)
}

/// A real Caddy with stdout and stderr in separate files; killed by PID and reaped on drop.
struct Caddy {
    child: Child,
    stdout: PathBuf,
    stderr: PathBuf,
}

impl Caddy {
    async fn start(dir: &Path, config: &CaddyConfig, ports: Ports) -> Caddy {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let path = dir.join("caddy.json");
        std::fs::write(&path, &config.body).unwrap();
        let (stdout, stderr) = (dir.join("stdout.log"), dir.join("stderr.log"));
        let child = caddy_cmd(dir)
            .args(["run", "--config"])
            .arg(&path)
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&stdout).unwrap())
            .stderr(std::fs::File::create(&stderr).unwrap())
            .spawn()
            .unwrap();
        let caddy = Caddy {
            child,
            stdout,
            stderr,
        };
        let admin = HttpCaddyAdmin::new(&format!("http://127.0.0.1:{}", ports.admin)).unwrap();
        let loaded = eventually(Duration::from_secs(10), || {
            let admin = admin.clone();
            async move {
                (admin.identity().await.ok().flatten().as_deref() == Some(&config.identity))
                    .then_some(())
            }
        })
        .await;
        assert!(
            loaded.is_some(),
            "Caddy never loaded the config:\n{}",
            caddy.stderr()
        );
        caddy
    }

    fn stdout(&self) -> String {
        std::fs::read_to_string(&self.stdout).unwrap_or_default()
    }

    fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }

    /// The access log entries on stdout.
    fn access_entries(&self) -> Vec<Value> {
        self.stdout()
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .filter(|e| {
                e["logger"]
                    .as_str()
                    .is_some_and(|l| l.starts_with("http.log.access"))
            })
            .collect()
    }

    /// Waits for the access entry of `uri`.
    async fn entry_for(&self, uri: &str) -> Value {
        eventually(Duration::from_secs(5), || async {
            self.access_entries()
                .into_iter()
                .find(|e| e["request"]["uri"] == uri)
        })
        .await
        .unwrap_or_else(|| {
            panic!(
                "no access entry for {uri}; stdout:\n{}\nstderr:\n{}",
                self.stdout(),
                self.stderr()
            )
        })
    }

    /// Sends `signal` (`TERM`, `INT`) by PID.
    fn signal(&self, signal: &str) {
        let status = std::process::Command::new("kill")
            .args([&format!("-{signal}"), &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    }

    /// Waits up to `limit` for Caddy to exit by itself; whether it did.
    async fn exits_within(&mut self, limit: Duration) -> bool {
        let start = Instant::now();
        while start.elapsed() < limit {
            if self.child.try_wait().ok().flatten().is_some() {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        false
    }
}

impl Drop for Caddy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn client() -> reqwest::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(20))
        .build()
        .unwrap()
}

async fn get(port: u16, host: &str, path: &str, headers: &[(&str, &str)]) -> (u16, String) {
    let mut req = client()
        .get(format!("http://127.0.0.1:{port}{path}"))
        .header("Host", host);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = req.send().await.unwrap();
    (resp.status().as_u16(), resp.text().await.unwrap())
}

/// Caddy with `logging` (under `spec`) in front of two services: `app` (a backend that answers
/// 200) and `broken`, whose port nobody listens on, so Caddy answers 502 and writes an error
/// entry as well.
async fn app_and_broken(logging: &str) -> (tempfile::TempDir, Ports, Backend, Caddy) {
    let dir = tempfile::tempdir().unwrap();
    let ports = Ports::free();
    let app = Backend::start("app").await;
    let s = spec(ports, dir.path(), "", logging);
    let services = catalog(vec![
        instance("app", app.port(), &OPT_IN, "passing"),
        instance("broken", free_port(), &OPT_IN, "passing"),
    ]);
    let caddy = Caddy::start(dir.path(), &render(&s, &services, ports), ports).await;
    (dir, ports, app, caddy)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn access_log_lines_reach_caddys_stdout_as_json_and_a_redacted_headers_value_never_does() {
    let (_dir, ports, _app, caddy) = app_and_broken(
        "  logging:\n    accessLog:\n      headers: true\n      redactHeaders: [Authorization, Cookie, Proxy-Authorization, x-secret-token]\n",
    )
    .await;

    let sentinel = "SENTINEL-9d3c61";
    let (status, body) = get(
        ports.web,
        "app.example.test",
        "/logged",
        &[
            ("X-Secret-Token", sentinel),
            ("Authorization", "Bearer SENTINEL-bearer"),
            ("X-Visible", "shown-value"),
        ],
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert!(body.contains(sentinel), "the backend still gets the header");

    let failed = get(
        ports.web,
        "broken.example.test",
        "/failed",
        &[("X-Secret-Token", sentinel)],
    )
    .await;
    assert_eq!(failed.0, 502);

    let failed = caddy.entry_for("/failed").await;
    assert_eq!(failed["request"]["headers"]["X-Secret-Token"], "REDACTED");
    let entry = caddy.entry_for("/logged").await;
    assert_eq!(entry["status"], 200, "{entry}");
    let headers = &entry["request"]["headers"];
    assert_eq!(headers["X-Secret-Token"], "REDACTED", "{entry}");
    assert_eq!(headers["Authorization"], "REDACTED", "{entry}");
    assert_eq!(
        headers["X-Visible"],
        serde_json::json!(["shown-value"]),
        "{entry}"
    );
    assert!(entry["resp_headers"]["X-Backend"].is_array(), "{entry}");
    let (out, err) = (caddy.stdout(), caddy.stderr());
    assert!(
        !out.contains("SENTINEL") && !err.contains("SENTINEL"),
        "{out}\n{err}"
    );
    // Everything after the config loaded is on stdout, as JSON: access entries and the proxy's
    // own log; stderr holds only what Caddy said before the config took over its logs.
    assert!(!err.contains("http.log.access"), "{err}");
    for line in out.lines() {
        let v: Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"));
        assert!(v["level"].is_string(), "{line}");
    }
    let error = out
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .find(|e| e["logger"] == "http.log.error")
        .unwrap_or_else(|| panic!("the proxy's own log (the 502) is on stdout too:\n{out}"));
    assert_eq!(error["request"]["uri"], "/failed", "{error}");
    assert!(error["request"].get("headers").is_none(), "{error}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_5xx_filter_logs_only_server_errors_without_headers_and_the_proxy_log_is_console_text() {
    let (_dir, ports, _app, caddy) = app_and_broken(
        "  logging:\n    format: common\n    accessLog:\n      statusCodes: ['500-599']\n",
    )
    .await;

    assert_eq!(get(ports.web, "app.example.test", "/ok", &[]).await.0, 200);
    assert_eq!(
        get(ports.web, "nobody.example.test", "/missing", &[])
            .await
            .0,
        404
    );
    assert_eq!(
        get(ports.web, "broken.example.test", "/broken", &[])
            .await
            .0,
        502
    );

    let entry = caddy.entry_for("/broken").await;
    assert_eq!(entry["status"], 502, "{entry}");
    assert!(entry["request"].get("headers").is_none(), "{entry}");
    assert!(entry.get("resp_headers").is_none(), "{entry}");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let uris: Vec<Value> = caddy
        .access_entries()
        .iter()
        .map(|e| e["request"]["uri"].clone())
        .collect();
    assert_eq!(uris, ["/broken"], "200 and 404 are filtered out");
    // The proxy's own log is Caddy's console text: not JSON, level spelled out.
    let out = caddy.stdout();
    let text: Vec<&str> = out
        .lines()
        .filter(|l| serde_json::from_str::<Value>(l).is_err())
        .collect();
    assert!(
        text.iter().any(|l| l.contains("\tINFO\t")),
        "no console line on stdout:\n{out}"
    );
    assert!(
        !out.contains('\u{1b}'),
        "console text without colour escapes:\n{out}"
    );
    let error = text
        .iter()
        .find(|l| l.contains("\tERROR\thttp.log.error\t"))
        .unwrap_or_else(|| panic!("no error entry for the 502:\n{out}"));
    assert!(
        error.contains("/broken") && !error.contains("\"headers\""),
        "{error}"
    );
}

/// A backend whose `/slow` answers after `delay`, reporting each arrival on the channel.
async fn slow_backend(
    delay: Duration,
) -> (
    u16,
    tokio::sync::mpsc::UnboundedReceiver<()>,
    tokio::task::JoinHandle<()>,
) {
    let (arrived, rx) = tokio::sync::mpsc::unbounded_channel();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let app = axum::Router::new().fallback(move || {
        let arrived = arrived.clone();
        async move {
            let _ = arrived.send(());
            tokio::time::sleep(delay).await;
            "slow response, complete\n"
        }
    });
    let task = tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (port, rx, task)
}

/// A Caddy with `graceTimeout: grace` in front of a backend that takes 5 s, and a request to it
/// that reached the backend.
struct InFlight {
    _dir: tempfile::TempDir,
    ports: Ports,
    spec: ValidatedSpec,
    services: Catalog,
    caddy: Caddy,
    request: tokio::task::JoinHandle<Result<(u16, String), String>>,
    backend: tokio::task::JoinHandle<()>,
}

impl InFlight {
    async fn start(grace: &str) -> InFlight {
        let dir = tempfile::tempdir().unwrap();
        let ports = Ports::free();
        let (port, mut arrived, backend) = slow_backend(Duration::from_secs(5)).await;
        let spec = spec(
            ports,
            dir.path(),
            &format!("    transport:\n      graceTimeout: {grace}\n"),
            "",
        );
        let services = catalog(vec![instance("slow", port, &OPT_IN, "passing")]);
        let caddy = Caddy::start(dir.path(), &render(&spec, &services, ports), ports).await;
        let web = ports.web;
        let request = tokio::spawn(async move {
            let resp = client()
                .get(format!("http://127.0.0.1:{web}/slow"))
                .header("Host", "slow.example.test")
                .send()
                .await
                .map_err(|e| e.to_string())?;
            let status = resp.status().as_u16();
            let body = resp.text().await.map_err(|e| e.to_string())?;
            Ok((status, body))
        });
        tokio::time::timeout(Duration::from_secs(10), arrived.recv())
            .await
            .expect("the request never reached the backend");
        InFlight {
            _dir: dir,
            ports,
            spec,
            services,
            caddy,
            request,
            backend,
        }
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.backend.abort();
    }
}

/// Sends `signal` to a Caddy with `graceTimeout: grace` while a 5 s request is in flight, and
/// returns the request's outcome, how long after the signal it came, and how long after the
/// signal Caddy exited.
async fn five_second_request_across(
    signal: &str,
    grace: &str,
) -> (Result<(u16, String), String>, Duration, Option<Duration>) {
    let mut flight = InFlight::start(grace).await;
    let pid = flight.caddy.child.id();
    flight.caddy.signal(signal);
    let signalled = Instant::now();
    // Draining: the listener is closed, so a new connection is refused at once.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let late = client()
        .get(format!("http://127.0.0.1:{}/slow", flight.ports.web))
        .header("Host", "slow.example.test")
        .send()
        .await;
    assert!(late.is_err(), "a draining Caddy accepted a new request");
    let outcome = (&mut flight.request).await.unwrap();
    let answered = signalled.elapsed();
    let exited = flight
        .caddy
        .exits_within(Duration::from_secs(15))
        .await
        .then(|| signalled.elapsed());
    assert!(exited.is_none() || !process_alive(pid));
    (outcome, answered, exited)
}

/// A 5 s request in flight at `signal` with a 10 s grace period gets its full response, and
/// Caddy exits once it is answered.
async fn drains_on(signal: &str) {
    let (outcome, answered, exited) = five_second_request_across(signal, "10s").await;
    let (status, body) = outcome.unwrap_or_else(|e| panic!("the request failed: {e}"));
    assert_eq!(status, 200);
    assert_eq!(body, "slow response, complete\n");
    assert!(
        answered < Duration::from_secs(10),
        "answered {answered:?} after SIG{signal}"
    );
    // Caddy exits once the last request is done, not at the end of the grace period.
    let exited = exited.expect("Caddy did not exit after draining");
    assert!(
        exited < Duration::from_secs(8),
        "exited {exited:?} after SIG{signal}"
    );
    assert!(exited >= answered, "exited before answering");
    println!("SIG{signal} → full response after {answered:?}, Caddy exited after {exited:?}");
}

/// Docker's `docker stop` (Nomad's docker driver) sends SIGTERM.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_in_flight_at_sigterm_gets_its_full_response_within_the_grace_period() {
    drains_on("TERM").await;
}

/// Nomad's exec and raw_exec drivers send SIGINT, Nomad's default `kill_signal`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_in_flight_at_sigint_gets_its_full_response_within_the_grace_period() {
    drains_on("INT").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_grace_period_bounds_the_drain_so_a_longer_request_is_cut_at_its_end() {
    let (outcome, answered, exited) = five_second_request_across("TERM", "1s").await;
    assert!(
        outcome.is_err() || outcome.as_ref().is_ok_and(|(s, _)| *s >= 500),
        "a 5 s request outlived a 1 s grace period: {outcome:?}"
    );
    assert!(answered < Duration::from_secs(4), "cut after {answered:?}");
    let exited = exited.expect("Caddy did not exit after its grace period");
    assert!(
        exited < Duration::from_secs(4),
        "exited {exited:?} after SIGTERM"
    );
}

#[test]
fn caddy_validate_accepts_the_config_with_every_logging_and_timeout_setting() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("certs")).unwrap();
    let ports = Ports::free();
    let s = spec(
        ports,
        dir.path(),
        "    transport: {graceTimeout: 0s, readTimeout: 5s, writeTimeout: 30s, idleTimeout: 90s}\n",
        "  logging:\n    level: DEBUG\n    format: common\n    accessLog:\n      statusCodes: ['500-599']\n      headers: true\n      redactHeaders: [Authorization, Cookie, Proxy-Authorization, X-Api-Key]\n",
    );
    let services = catalog(vec![instance("app", 18081, &OPT_IN, "passing")]);
    let config = render(&s, &services, ports);
    let path = dir.path().join("caddy.json");
    std::fs::write(&path, &config.body).unwrap();
    let out = caddy_cmd(dir.path())
        .args(["validate", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success() && said.contains("Valid configuration"),
        "{said}"
    );

    // The judge can fail: an unknown filter module is refused.
    let mut v: Value = serde_json::from_slice(&config.body).unwrap();
    v["logging"]["logs"]["access"]["encoder"]["fields"]["request>headers>X-Api-Key"]["filter"] =
        "blank".into();
    std::fs::write(&path, serde_json::to_vec(&v).unwrap()).unwrap();
    let out = caddy_cmd(dir.path())
        .args(["validate", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    assert!(
        !out.status.success(),
        "caddy validate took an unknown filter"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_in_flight_across_a_config_load_is_answered_and_the_load_does_not_wait_for_it() {
    let mut flight = InFlight::start("10s").await;
    let app = Backend::start("app").await;
    let mut services = flight.services.clone();
    services.extend(catalog(vec![instance(
        "app",
        app.port(),
        &OPT_IN,
        "passing",
    )]));
    let next = render(&flight.spec, &services, flight.ports);
    let admin = HttpCaddyAdmin::new(&format!("http://127.0.0.1:{}", flight.ports.admin)).unwrap();
    let loading = Instant::now();
    admin.load(&next).await.unwrap();
    let loaded = loading.elapsed();
    assert!(
        loaded < Duration::from_secs(2),
        "the load waited {loaded:?} for the drain"
    );
    let (status, body) = (&mut flight.request)
        .await
        .unwrap()
        .unwrap_or_else(|e| panic!("the request in flight failed across the load: {e}"));
    assert_eq!((status, body.as_str()), (200, "slow response, complete\n"));
    let (status, _) = get(flight.ports.web, "app.example.test", "/", &[]).await;
    assert_eq!(status, 200, "the new config serves");
}

/// How long Caddy keeps a connection whose request headers never finish, up to `limit`; `None`
/// when it is still open then.
async fn closes_a_stalled_request_after(transport: &str, limit: Duration) -> Option<Duration> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let dir = tempfile::tempdir().unwrap();
    let ports = Ports::free();
    let s = spec(ports, dir.path(), transport, "");
    let _caddy = Caddy::start(dir.path(), &render(&s, &catalog(vec![]), ports), ports).await;
    let mut conn = tokio::net::TcpStream::connect(("127.0.0.1", ports.web))
        .await
        .unwrap();
    conn.write_all(b"GET / HTTP/1.1\r\nHost: slow.example.test\r\n")
        .await
        .unwrap();
    let sent = Instant::now();
    let mut buf = Vec::new();
    // Caddy either closes the connection or answers 408 and closes it.
    tokio::time::timeout(limit, conn.read_to_end(&mut buf))
        .await
        .ok()
        .map(|_| sent.elapsed())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_read_timeout_closes_a_connection_whose_request_never_finishes() {
    let limit = Duration::from_secs(4);
    let cut = closes_a_stalled_request_after("    transport:\n      readTimeout: 1s\n", limit)
        .await
        .expect("Caddy kept a stalled request past its 1 s read timeout");
    assert!(cut >= Duration::from_millis(900), "closed after {cut:?}");
    // The default (60 s) keeps it open longer than the test waits.
    assert_eq!(closes_a_stalled_request_after("", limit).await, None);
}
