//! The operator's surface wired to the real loop: the real HTTP clients against the twin, real
//! Traefik run by the twin's executor, the listener `run` and `dev` start. It scrapes `/metrics`
//! during a rollout and a rollback, receives the rollout's trace in an in-test OTLP/HTTP
//! receiver, and looks for a sentinel token and basic-auth hash on every surface.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "support/mod.rs"]
mod support;

#[path = "../controller/tests/surface_common/mod.rs"]
mod surface_common;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use hashistack_twin::{Twin, TwinConfig};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::trace::v1::Span;
use prost::Message as _;
use proxy_operator::consul::{ConsulApi, ConsulClient};
use proxy_operator::dev::{Endpoints, starter_config};
use proxy_operator::metrics::Metrics;
use proxy_operator::metrics::probe::MeteredProbe;
use proxy_operator::nomad::NomadClient;
use proxy_operator::proxy::probe::HttpProbe;
use proxy_operator::reconcile::{Config, Operator};
use proxy_operator::server::{self, Surface};
use proxy_operator::spec::status::{Phase, ProxyStatus};
use proxy_operator::telemetry::{Otel, OtlpConfig};
use proxy_operator::transport::{Api, ClientConfig, QueryOptions, Token};
use support::{free_port, traefik_bin};
use surface_common::{Exposition, attribute, parse_openmetrics, spans_in, stages};
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;

const PREFIX: &str = "proxy-operator";
const SENTINEL_TOKEN: &str = "sentinel-token-7f3c91d2e4b8";
const SENTINEL_HASH: &str = "$apr1$sntl9x2q$SENTINELHASHq0wErTy1";
const USERS_KEY: &str = "proxy-operator/secrets/users";

// === what the test process records: logs and exported spans ===

type Spans = Arc<Mutex<Vec<ExportTraceServiceRequest>>>;

struct Recorded {
    logs: Arc<Mutex<Vec<u8>>>,
    spans: Spans,
}

#[derive(Clone)]
struct LogSink(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for LogSink {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// One subscriber for the whole test binary: the operator's logs at debug level into a buffer,
/// its spans over OTLP/HTTP to a receiver on loopback (the exporter `run` would build from
/// `OTEL_EXPORTER_OTLP_ENDPOINT`).
fn recorded() -> &'static Recorded {
    static RECORDED: OnceLock<Recorded> = OnceLock::new();
    RECORDED.get_or_init(|| {
        let spans: Spans = Arc::default();
        let sink = spans.clone();
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let app = axum::Router::new().route(
                    "/v1/traces",
                    axum::routing::post(move |body: Bytes| {
                        let sink = sink.clone();
                        async move {
                            let req = ExportTraceServiceRequest::decode(body).unwrap();
                            sink.lock().unwrap().push(req);
                            ""
                        }
                    }),
                );
                let listener = tokio::net::TcpListener::from_std(listener).unwrap();
                axum::serve(listener, app).await.unwrap();
            });
        });
        let base = format!("http://{addr}");
        let config =
            OtlpConfig::from_env(|k| (k == "OTEL_EXPORTER_OTLP_ENDPOINT").then(|| base.clone()))
                .unwrap();
        let otel = std::thread::spawn(move || Otel::start(&config).unwrap())
            .join()
            .unwrap();
        let logs = Arc::new(Mutex::new(Vec::new()));
        let writer = LogSink(logs.clone());
        tracing_subscriber::registry()
            .with(tracing_subscriber::EnvFilter::new(
                "warn,proxy_operator=debug",
            ))
            .with(
                tracing_subscriber::fmt::layer()
                    .with_ansi(false)
                    .with_writer(move || writer.clone()),
            )
            .with(otel.layer())
            .init();
        // The pipeline lives as long as the process; spans leave every batch interval.
        std::mem::forget(otel);
        Recorded { logs, spans }
    })
}

fn exported_spans() -> Vec<Span> {
    spans_in(&recorded().spans.lock().unwrap())
}

// === one operator on the twin, as `run` wires it ===

struct World {
    twin: Twin,
    consul: ConsulClient,
    endpoints: Endpoints,
    cert_dir: tempfile::TempDir,
    stop: tokio::sync::watch::Sender<bool>,
    operator: tokio::task::JoinHandle<()>,
    http: reqwest::Client,
}

async fn world(token: Option<&str>) -> World {
    let _ = recorded();
    let _ = rustls::crypto::ring::default_provider().install_default();
    let twin = Twin::start(TwinConfig::default()).await.unwrap();
    // dev's starter document takes Traefik's tokens from the Nomad Variable dev writes; this
    // twin has ACLs off, so the variable only has to exist for the task to start.
    let variable = reqwest::Client::new()
        .put(format!(
            "http://{}/v1/var/nomad/jobs/proxy",
            twin.nomad_addr()
        ))
        .json(&serde_json::json!({
            "Items": {"consul_token": "acls-off", "nomad_token": "acls-off"}
        }))
        .send()
        .await
        .unwrap();
    assert!(variable.status().is_success(), "{variable:?}");
    let client_config = |api, addr: SocketAddr| {
        let mut c = ClientConfig::for_address(api, &addr.to_string()).unwrap();
        c.token = token.map(Token::new);
        c
    };
    let consul = ConsulClient::new(&client_config(Api::Consul, twin.consul_addr())).unwrap();
    let nomad = NomadClient::new(&client_config(Api::Nomad, twin.nomad_addr())).unwrap();
    let surface = Surface::new(Metrics::new());
    consul.http().observe(surface.metrics().clone());
    nomad.http().observe(surface.metrics().clone());
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let on_stop = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|s| *s).await;
    };
    let (status, _http) = server::spawn(
        "127.0.0.1:0".parse().unwrap(),
        surface.clone(),
        on_stop(stopped.clone()),
    )
    .await
    .unwrap();
    let loopback = |port| SocketAddr::from(([127, 0, 0, 1], port));
    let endpoints = Endpoints {
        consul: twin.consul_addr(),
        nomad: twin.nomad_addr(),
        http: loopback(free_port()),
        https: loopback(free_port()),
        dashboard: loopback(free_port()),
        backend: loopback(free_port()),
        status,
    };
    let operator = Operator::new(
        Config::new(PREFIX).debounce(Duration::from_millis(100)),
        consul.clone(),
        nomad,
        MeteredProbe::new(HttpProbe::new().unwrap(), surface.metrics().clone()),
    )
    .with_surface(surface);
    let operator = tokio::spawn(operator.run(on_stop(stopped)));
    World {
        twin,
        consul,
        endpoints,
        cert_dir: tempfile::tempdir().unwrap(),
        stop,
        operator,
        http: surface_common::client(),
    }
}

impl World {
    /// `dev`'s starter document without its demo probe; `edition` changes the policy tree (a
    /// live change), `probe` adds a route probe expecting that status.
    fn document(&self, edition: &str, probe: Option<u16>, basic_auth: bool) -> String {
        let mut doc = starter_config(&self.endpoints, &traefik_bin(), self.cert_dir.path());
        let probes = "    probes:\n      - host: demo.localhost\n        path: /\n        expectStatus: 200\n";
        assert!(doc.contains(probes), "{doc}");
        let probe = probe.map_or(String::new(), |s| {
            format!("    probes:\n      - host: demo.localhost\n        path: /\n        expectStatus: {s}\n")
        });
        doc = doc.replace(probes, &probe);
        doc = doc.replace(
            "healthyDeadline: 30s\n    minHealthyTime: 2s",
            "healthyDeadline: 15s\n    minHealthyTime: 1s",
        );
        let headers = "    securityHeaders:\n      enabled: true\n";
        let mut middlewares =
            format!("{headers}      headers:\n        X-Edition: \"{edition}\"\n");
        if basic_auth {
            middlewares.push_str(&format!(
                "    basicAuth:\n      usersFrom:\n        consulKey: {USERS_KEY}\n      realm: wired\n"
            ));
        }
        assert!(doc.contains(headers));
        doc.replace(headers, &middlewares)
    }

    async fn put(&self, document: &str) {
        self.consul
            .kv_put(&format!("{PREFIX}/config"), document.as_bytes(), None)
            .await
            .unwrap();
    }

    async fn status(&self) -> Option<ProxyStatus> {
        let (pair, _) = self
            .consul
            .kv_get(&format!("{PREFIX}/status"), QueryOptions::NOW)
            .await
            .unwrap();
        pair.and_then(|p| serde_json::from_slice(&p.value).ok())
    }

    async fn get(&self, path: &str) -> String {
        self.http
            .get(format!("http://{}{path}", self.endpoints.status))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }

    /// One scrape, parsed strictly, and how long it took.
    async fn scrape(&self) -> (Exposition, String, Duration) {
        let started = Instant::now();
        let text = self.get("/metrics").await;
        let took = started.elapsed();
        (parse_openmetrics(&text), text, took)
    }

    /// Waits until the status document says `phase` for `digest`'s rollout, scraping on the
    /// way; returns the scrapes that saw the rollout in flight.
    async fn until(&self, phase: Phase, attempted: &str, limit: Duration) -> Vec<Exposition> {
        let deadline = Instant::now() + limit;
        let mut in_flight = Vec::new();
        loop {
            let (exp, _, _) = self.scrape().await;
            if exp.value("proxy_operator_phase", &[("phase", "Progressing")]) == Some(1.0) {
                in_flight.push(exp);
            }
            let s = self.status().await;
            if let Some(s) = &s
                && s.phase == phase
                && s.last_attempted_digest.as_deref() == Some(attempted)
            {
                return in_flight;
            }
            assert!(
                Instant::now() < deadline,
                "never reached {phase:?}; status {s:#?}\nlogs:\n{}",
                logs_tail()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn shutdown(self) {
        let _ = self.stop.send(true);
        let _ = tokio::time::timeout(Duration::from_secs(10), self.operator).await;
        self.twin.shutdown().await;
    }
}

fn logs() -> String {
    String::from_utf8_lossy(&recorded().logs.lock().unwrap()).into_owned()
}

fn logs_tail() -> String {
    let logs = logs();
    let start = logs.len().saturating_sub(6000);
    logs[logs.floor_char_boundary(start)..].to_owned()
}

fn digest(document: &str) -> String {
    proxy_operator::spec::load(document.as_bytes())
        .unwrap()
        .digest()
        .to_owned()
}

fn counter(exp: &Exposition, name: &str, labels: &[(&str, &str)]) -> f64 {
    exp.value(name, labels).unwrap_or(0.0)
}

/// Sum of a counter over every label set that includes `labels`.
fn total(exp: &Exposition, name: &str, labels: &[(&str, &str)]) -> f64 {
    exp.samples
        .iter()
        .filter(|s| {
            s.name == name
                && labels
                    .iter()
                    .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
        })
        .map(|s| s.value)
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_a_real_rollout_and_rollback_and_each_rollout_is_one_trace_of_its_stages() {
    let w = world(None).await;
    let good = w.document("1", None, false);
    w.put(&good).await;
    let in_flight = w
        .until(Phase::Ready, &digest(&good), Duration::from_secs(90))
        .await;
    assert!(
        !in_flight.is_empty(),
        "no scrape saw the rollout in flight (phase Progressing)"
    );
    let (exp, text, _) = w.scrape().await;
    assert_eq!(
        counter(
            &exp,
            "proxy_operator_rollouts_total",
            &[("outcome", "succeeded")]
        ),
        1.0,
        "{text}"
    );
    assert_eq!(
        counter(
            &exp,
            "proxy_operator_rollouts_total",
            &[("outcome", "rolled_back")]
        ),
        0.0
    );
    assert_eq!(
        exp.value("proxy_operator_phase", &[("phase", "Ready")]),
        Some(1.0)
    );
    assert_eq!(
        exp.value("proxy_operator_phase", &[("phase", "Progressing")]),
        Some(0.0)
    );
    for stage in ["plan", "apply", "verify"] {
        assert_eq!(
            counter(
                &exp,
                "proxy_operator_rollout_phase_duration_seconds_count",
                &[("phase", stage)]
            ),
            1.0,
            "{stage}: {text}"
        );
    }
    let passes = counter(
        &exp,
        "proxy_operator_reconcile_passes_total",
        &[("outcome", "ok")],
    );
    assert!(passes >= 3.0, "a plan pass and verification passes: {text}");
    assert!(
        total(
            &exp,
            "proxy_operator_api_requests_total",
            &[("api", "consul"), ("class", "kv"), ("code", "200")]
        ) > 0.0,
        "{text}"
    );
    assert!(
        total(
            &exp,
            "proxy_operator_api_requests_total",
            &[("api", "consul"), ("class", "txn")]
        ) > 0.0,
        "{text}"
    );
    assert!(
        total(
            &exp,
            "proxy_operator_api_requests_total",
            &[("api", "nomad"), ("class", "job")]
        ) > 0.0,
        "{text}"
    );
    assert!(
        total(
            &exp,
            "proxy_operator_api_request_duration_seconds_count",
            &[("api", "nomad")]
        ) > 0.0
    );
    assert!(
        total(
            &exp,
            "proxy_operator_api_requests_total",
            &[("api", "proxy"), ("class", "ping"), ("code", "200")]
        ) > 0.0,
        "the gate's reads of Traefik's API are counted: {text}"
    );
    assert!(
        total(
            &exp,
            "proxy_operator_api_request_duration_seconds_count",
            &[("api", "proxy"), ("class", "api")]
        ) > 0.0,
        "{text}"
    );
    assert!(
        counter(
            &exp,
            "proxy_operator_watch_wakeups_total",
            &[("watch", "config")]
        ) >= 1.0
    );
    assert_eq!(
        exp.value("proxy_operator_config_generation", &[]),
        Some(1.0)
    );

    // A live policy change whose route probe can never pass: rolled back at healthyDeadline.
    let bad = w.document("2", Some(418), false);
    w.put(&bad).await;
    let in_flight = w
        .until(Phase::RolledBack, &digest(&bad), Duration::from_secs(90))
        .await;
    assert!(
        !in_flight.is_empty(),
        "no scrape saw the failing rollout in flight"
    );
    let (after, text, _) = w.scrape().await;
    assert_eq!(
        counter(
            &after,
            "proxy_operator_rollouts_total",
            &[("outcome", "succeeded")]
        ),
        1.0,
        "{text}"
    );
    assert_eq!(
        counter(
            &after,
            "proxy_operator_rollouts_total",
            &[("outcome", "rolled_back")]
        ),
        1.0,
        "{text}"
    );
    assert_eq!(
        after.value("proxy_operator_phase", &[("phase", "RolledBack")]),
        Some(1.0)
    );
    assert_eq!(
        after.value("proxy_operator_phase", &[("phase", "Ready")]),
        Some(0.0)
    );
    assert!(
        counter(
            &after,
            "proxy_operator_reconcile_passes_total",
            &[("outcome", "ok")]
        ) > passes
    );
    assert!(
        total(
            &after,
            "proxy_operator_api_requests_total",
            &[("api", "consul"), ("class", "txn")]
        ) > total(
            &exp,
            "proxy_operator_api_requests_total",
            &[("api", "consul"), ("class", "txn")]
        ),
        "the rollback restored the policy tree in a txn"
    );
    assert_eq!(
        after.value("proxy_operator_config_generation", &[]),
        Some(2.0)
    );

    // The trace of the good rollout: one root, its stages as children, API calls beneath.
    let short: String = digest(&good).chars().take(12).collect();
    let deadline = Instant::now() + Duration::from_secs(30);
    let spans = loop {
        let spans = exported_spans();
        let done = spans.iter().any(|s| {
            s.name == "rollout"
                && attribute(s, "digest").as_deref() == Some(short.as_str())
                && attribute(s, "outcome").as_deref() == Some("succeeded")
        });
        if done {
            break spans;
        }
        assert!(
            Instant::now() < deadline,
            "the rollout's trace never arrived"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    let root = spans
        .iter()
        .find(|s| s.name == "rollout" && attribute(s, "digest").as_deref() == Some(short.as_str()))
        .unwrap();
    assert!(root.parent_span_id.is_empty(), "the rollout is a root span");
    let in_trace: Vec<&Span> = spans
        .iter()
        .filter(|s| s.trace_id == root.trace_id)
        .collect();
    let children = stages(&in_trace, root);
    assert_eq!(
        children,
        ["plan", "apply", "verify"],
        "one span per stage, in order"
    );
    let by_id = |id: &[u8]| in_trace.iter().find(|s| s.span_id == id).copied();
    let stage_of = |span: &Span| {
        let mut at = span;
        while let Some(parent) = by_id(&at.parent_span_id) {
            if parent.span_id == root.span_id {
                return at.name.clone();
            }
            at = parent;
        }
        panic!("{} is not under the rollout", span.name)
    };
    let calls: Vec<(&str, String)> = in_trace
        .iter()
        .filter(|s| s.name.starts_with("consul ") || s.name.starts_with("nomad "))
        .map(|s| (s.name.as_str(), stage_of(s)))
        .collect();
    assert!(
        calls
            .iter()
            .any(|(n, stage)| n.starts_with("nomad POST job") && stage == "apply")
            || calls
                .iter()
                .any(|(n, stage)| n.starts_with("nomad PUT job") && stage == "apply"),
        "the job registration is a call of the rollout's apply: {calls:?}"
    );
    assert!(
        calls
            .iter()
            .any(|(n, stage)| n.starts_with("consul PUT txn") && stage == "apply"),
        "the policy tree write: {calls:?}"
    );
    assert!(
        calls
            .iter()
            .any(|(n, stage)| n.starts_with("consul PUT txn") && stage == "plan"),
        "the write-ahead status and journal: {calls:?}"
    );
    assert!(
        calls
            .iter()
            .any(|(n, stage)| n.starts_with("nomad GET") && stage == "verify"),
        "the gate reads Nomad while verifying: {calls:?}"
    );
    assert!(
        in_trace
            .iter()
            .filter(|s| s.name == "reconcile")
            .all(|s| matches!(
                by_id(&s.parent_span_id).map(|p| p.name.as_str()),
                Some("plan" | "verify")
            )),
        "every pass of the rollout runs in one of its stages"
    );

    // The trace of the rolled-back rollout ends in its rollback, which restores the tree.
    let bad_short: String = digest(&bad).chars().take(12).collect();
    let deadline = Instant::now() + Duration::from_secs(30);
    let (spans, root) = loop {
        let spans = exported_spans();
        let root = spans
            .iter()
            .find(|s| {
                s.name == "rollout"
                    && attribute(s, "digest").as_deref() == Some(bad_short.as_str())
                    && attribute(s, "outcome").as_deref() == Some("rolled_back")
            })
            .cloned();
        if let Some(root) = root {
            break (spans, root);
        }
        assert!(
            Instant::now() < deadline,
            "the rolled-back rollout's trace never arrived"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    let in_trace: Vec<&Span> = spans.iter().collect();
    let children = stages(&in_trace, &root);
    assert_eq!(children, ["plan", "apply", "verify", "rollback"]);
    let rollback = spans
        .iter()
        .find(|s| s.parent_span_id == root.span_id && s.name == "rollback")
        .unwrap();
    assert!(
        spans
            .iter()
            .any(|s| s.parent_span_id == rollback.span_id && s.name.starts_with("consul PUT txn")),
        "the restore of the policy tree is a call of the rollback"
    );
    w.shutdown().await;
}

/// Every file under `dir`, as text.
fn read_tree(dir: &Path) -> String {
    let mut out = String::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            out.push_str(&read_tree(&path));
        } else {
            out.push_str(&String::from_utf8_lossy(&std::fs::read(&path).unwrap()));
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sentinel_token_and_basic_auth_hash_reach_no_metrics_page_trace_dump_or_log() {
    let w = world(Some(SENTINEL_TOKEN)).await;
    w.consul
        .kv_put(
            USERS_KEY,
            format!("wired:{SENTINEL_HASH}\n").as_bytes(),
            None,
        )
        .await
        .unwrap();
    let document = w.document("sentinel", None, true);
    w.put(&document).await;
    // Whatever the gate says, the rollout ran: the hash went into the policy tree and the
    // journal, the token onto every request.
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let s = w.status().await;
        if let Some(s) = &s
            && s.last_attempted_digest.as_deref() == Some(digest(&document).as_str())
            && matches!(s.phase, Phase::Ready | Phase::RolledBack | Phase::Degraded)
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the rollout never ended: {s:#?}\n{}",
            logs_tail()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let traefik_kv = w
        .consul
        .kv_list(&format!("{PREFIX}/traefik/"), QueryOptions::NOW)
        .await
        .unwrap()
        .0;
    assert!(
        traefik_kv
            .iter()
            .any(|p| String::from_utf8_lossy(&p.value).contains(SENTINEL_HASH)),
        "the hash reached the proxy's policy tree, so the test can fail"
    );

    let mut surfaces = vec![
        ("/metrics", w.get("/metrics").await),
        ("the page", w.get("/").await),
        ("/api/status", w.get("/api/status").await),
    ];
    let mut events = w
        .http
        .get(format!("http://{}/events", w.endpoints.status))
        .send()
        .await
        .unwrap();
    let first = tokio::time::timeout(Duration::from_secs(5), events.chunk())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    surfaces.push(("/events", String::from_utf8_lossy(&first).into_owned()));
    assert!(
        surfaces[1].1.contains("basic auth"),
        "the page shows the policy: {}",
        surfaces[1].1
    );

    let dump = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_proxy-operator"))
        .args(["debug", "dump"])
        .arg(dump.path().join("dump"))
        .env("CONSUL_HTTP_ADDR", format!("http://{}", w.endpoints.consul))
        .env("NOMAD_ADDR", format!("http://{}", w.endpoints.nomad))
        .env("CONSUL_HTTP_TOKEN", SENTINEL_TOKEN)
        .env("NOMAD_TOKEN", SENTINEL_TOKEN)
        .env("RUST_LOG", "debug")
        .output()
        .unwrap();
    let dumped = read_tree(&dump.path().join("dump"));
    assert!(
        dumped.contains("traefik"),
        "the dump holds the policy tree: {dumped}"
    );
    surfaces.push(("debug dump", dumped));
    surfaces.push((
        "debug dump's output",
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    ));

    // Traces: wait for this rollout's root, then look at everything exported.
    let short: String = digest(&document).chars().take(12).collect();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let done = exported_spans().iter().any(|s| {
            s.name == "rollout"
                && attribute(s, "digest").as_deref() == Some(short.as_str())
                && attribute(s, "outcome").is_some()
        });
        if done {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the rollout's trace never arrived"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    surfaces.push(("traces", format!("{:?}", recorded().spans.lock().unwrap())));
    let logs = logs();
    assert!(
        logs.contains("rolling out"),
        "the operator's logs were captured"
    );
    surfaces.push(("logs", logs));

    for (what, text) in &surfaces {
        assert!(!text.is_empty(), "{what} is empty");
        for sentinel in [SENTINEL_TOKEN, SENTINEL_HASH, "SENTINELHASH"] {
            assert!(!text.contains(sentinel), "{what} shows {sentinel}");
        }
    }
    w.shutdown().await;
}
