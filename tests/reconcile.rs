//! End-to-end: the reconcile loop against the twin, with real Traefik run as a `raw_exec` job
//! inside the twin and a real backend in the twin's Consul catalog (issue 5, "Proof").
//!
//! Every scenario runs its own twin, backend and operator. The operator runs in-process with the
//! real HTTP clients (`ConsulClient`, `NomadClient`, `HttpProbe`), so everything it does goes
//! over HTTP to the twin exactly as it would to a cluster. Assertions read real HTTP responses
//! through Traefik, the status document in the twin's KV, the job through the Nomad API, and the
//! PID of the process listening on Traefik's entry point.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "support/mod.rs"]
mod support;

use std::net::TcpListener;
use std::time::{Duration, Instant};

use hashistack_twin::{Api, Twin, TwinConfig};
use proxy_operator::consul::ConsulClient;
use proxy_operator::nomad::NomadClient;
use proxy_operator::proxy::probe::HttpProbe;
use proxy_operator::reconcile::{Config, Operator};
use proxy_operator::spec::status::{Phase, ProxyStatus};
use proxy_operator::transport::{Api as ClientApi, ClientConfig};
use serde_json::{Value, json};
use support::{
    Backend, Seen, eventually, free_port, get_with_host, pid_listening_on, process_alive,
};
use tokio::sync::{Semaphore, SemaphorePermit, oneshot};
use tokio::task::JoinHandle;

const PREFIX: &str = "proxy-operator";
const JOB: &str = "proxy";
/// The backend's catalog name; Traefik's default rule routes `app.localhost` to it.
const APP: &str = "app";
const APP_HOST: &str = "app.localhost";
/// What the operator's HTTP clients send as User-Agent (requests by Traefik are told apart).
const OPERATOR_UA: &str = "proxy-operator/";
/// Long enough for a real Traefik to start in the twin and pass the gate on a busy machine.
const CONVERGE: Duration = Duration::from_secs(90);
/// The operator's resync interval in these scenarios.
const RESYNC: Duration = Duration::from_secs(3);
/// The longest wait for one pass counter move: a resync, and a slow pass on this small machine.
const PASS_TIMEOUT: Duration = Duration::from_secs(15);

/// Each scenario runs a twin, a Traefik and an operator; a few at a time keep a small machine
/// responsive enough for the health gate's timings.
static SLOTS: Semaphore = Semaphore::const_new(3);

/// The twin, a backend in its catalog, the operator and Traefik's ports.
struct Cluster {
    twin: Twin,
    backend: Backend,
    http: reqwest::Client,
    web: u16,
    websecure: u16,
    dashboard: u16,
    dir: tempfile::TempDir,
    stop: Option<oneshot::Sender<()>>,
    operator: Option<JoinHandle<()>>,
    _slot: SemaphorePermit<'static>,
}

impl Cluster {
    /// Starts the twin, a backend registered as `app` with `traefik.enable=true`, and the
    /// operator (which finds no config yet).
    async fn start() -> Cluster {
        Cluster::start_with(|_| async {}).await
    }

    /// Like [`Cluster::start`], running `before_operator` against the twin first.
    async fn start_with<F, Fut>(before_operator: F) -> Cluster
    where
        F: FnOnce(std::net::SocketAddr) -> Fut,
        Fut: std::future::Future<Output = ()>,
    {
        Cluster::start_on(TwinConfig::default(), before_operator).await
    }

    /// Like [`Cluster::start_with`] on a twin configured as `twin_config` (e.g. an older Nomad).
    async fn start_on<F, Fut>(twin_config: TwinConfig, before_operator: F) -> Cluster
    where
        F: FnOnce(std::net::SocketAddr) -> Fut,
        Fut: std::future::Future<Output = ()>,
    {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let slot = SLOTS.acquire().await.unwrap();
        let twin = Twin::start(twin_config).await.unwrap();
        let backend = Backend::start("app-backend").await;
        support::register_consul_service(
            twin.consul_addr(),
            APP,
            backend.port(),
            &["traefik.enable=true"],
        )
        .await;
        before_operator(twin.nomad_addr()).await;
        let mut cluster = Cluster {
            http: reqwest::Client::builder().no_proxy().build().unwrap(),
            web: free_port(),
            websecure: free_port(),
            dashboard: free_port(),
            dir: tempfile::tempdir().unwrap(),
            backend,
            twin,
            stop: None,
            operator: None,
            _slot: slot,
        };
        cluster.start_operator();
        cluster
    }

    fn start_operator(&mut self) {
        let consul_config =
            ClientConfig::for_address(ClientApi::Consul, &self.consul_url()).unwrap();
        let nomad_config = ClientConfig::for_address(ClientApi::Nomad, &self.nomad_url()).unwrap();
        let consul = ConsulClient::new(&consul_config).unwrap();
        let nomad = NomadClient::new(&nomad_config).unwrap();
        let probe = HttpProbe::new().unwrap();
        // Short debounce and resync so idle-time behaviour (no retry, no teardown) is exercised
        // within a test's time.
        let config = Config::new(PREFIX)
            .debounce(Duration::from_millis(50))
            .resync(RESYNC);
        let (stop, stopped) = oneshot::channel::<()>();
        self.operator = Some(tokio::spawn(
            Operator::new(config, consul, nomad, probe).run(async {
                let _ = stopped.await;
            }),
        ));
        self.stop = Some(stop);
    }

    fn consul_url(&self) -> String {
        format!("http://{}", self.twin.consul_addr())
    }

    fn nomad_url(&self) -> String {
        format!("http://{}", self.twin.nomad_addr())
    }

    /// A ProxyConfig for Traefik on this cluster: plain HTTP on `web`, everything on loopback,
    /// short gate timings, no route probes (they share the rate limit with the test's requests).
    fn doc(&self) -> Value {
        json!({
            "apiVersion": "proxy-operator.io/v1alpha1",
            "kind": "ProxyConfig",
            "metadata": {"name": "e2e"},
            "spec": {
                "proxy": "traefik",
                "domainSuffix": "localhost",
                "discovery": {
                    "primary": "consul",
                    "consul": {"address": self.twin.consul_addr().to_string(), "refreshInterval": "1s"},
                    "nomad": {"address": self.nomad_url(), "refreshInterval": "5s"},
                    "throttleDuration": "100ms"
                },
                "entryPoints": {
                    "web": {"address": format!("127.0.0.1:{}", self.web), "redirectTo": null},
                    "websecure": {"address": format!("127.0.0.1:{}", self.websecure)}
                },
                "tls": {"certDir": self.dir.path().join("certs").display().to_string()},
                "metrics": {"prometheus": false},
                "dashboard": {"enabled": true, "insecure": true, "address": format!("127.0.0.1:{}", self.dashboard)},
                "job": {
                    "id": JOB,
                    "type": "system",
                    "driver": {"rawExec": {"command": support::traefik_bin().display().to_string()}},
                    "resources": {"cpu": 100, "memoryMB": 128}
                },
                "rollout": {"healthyDeadline": "15s", "minHealthyTime": "1s", "onFailure": "rollback"}
            }
        })
    }

    async fn put_config(&self, doc: &Value) {
        let resp = self
            .http
            .put(format!("{}/v1/kv/{PREFIX}/config", self.consul_url()))
            .body(serde_json::to_vec_pretty(doc).unwrap())
            .send()
            .await
            .unwrap();
        assert!(resp.status().is_success(), "PUT config: {}", resp.status());
    }

    async fn put_config_text(&self, text: &str) {
        let resp = self
            .http
            .put(format!("{}/v1/kv/{PREFIX}/config", self.consul_url()))
            .body(text.to_owned())
            .send()
            .await
            .unwrap();
        assert!(resp.status().is_success(), "PUT config: {}", resp.status());
    }

    async fn delete_config(&self) {
        let resp = self
            .http
            .delete(format!("{}/v1/kv/{PREFIX}/config", self.consul_url()))
            .send()
            .await
            .unwrap();
        assert!(
            resp.status().is_success(),
            "DELETE config: {}",
            resp.status()
        );
    }

    /// The status document the operator wrote, parsed; `None` when absent or unreadable.
    async fn status(&self) -> Option<ProxyStatus> {
        let resp = self
            .http
            .get(format!("{}/v1/kv/{PREFIX}/status?raw", self.consul_url()))
            .send()
            .await
            .ok()?;
        if !resp.status().is_success() {
            return None;
        }
        serde_json::from_slice(&resp.bytes().await.ok()?).ok()
    }

    /// Waits until the operator has completed `passes` more passes, as the status document's pass
    /// counter shows (the resync pass writes it even when nothing changed). A counter seen to
    /// move twice proves a whole pass ran after the call began: the pass that wrote the first
    /// move may have started before, the next one started after it ended. So "nothing changed"
    /// assertions after this wait are about passes that saw the event, and fail when the
    /// operator has stalled.
    async fn wait_passes(&self, passes: usize, after: &str) {
        let mut last = self.status().await.map_or(0, |s| s.passes);
        for seen in 0..passes {
            let moved = self
                .wait_status(
                    &format!("pass {} of {passes} after {after}", seen + 1),
                    PASS_TIMEOUT,
                    |s| s.passes > last,
                )
                .await;
            last = moved.passes;
        }
    }

    /// Waits until the status satisfies `done`; panics with the last status and Traefik's log.
    async fn wait_status(
        &self,
        what: &str,
        timeout: Duration,
        done: impl Fn(&ProxyStatus) -> bool,
    ) -> ProxyStatus {
        let context = || async {
            format!(
                "job: {}\nallocations: {}",
                serde_json::to_string_pretty(&self.job().await).unwrap(),
                serde_json::to_string_pretty(
                    &self.nomad_get(&format!("/v1/job/{JOB}/allocations")).await
                )
                .unwrap(),
            )
        };
        support::wait_status(what, timeout, || self.status(), done, context).await
    }

    async fn nomad_get(&self, path: &str) -> Option<Value> {
        let resp = self
            .http
            .get(format!("{}{path}", self.nomad_url()))
            .send()
            .await
            .ok()?;
        if !resp.status().is_success() {
            return None;
        }
        resp.json().await.ok()
    }

    async fn job(&self) -> Option<Value> {
        self.nomad_get(&format!("/v1/job/{JOB}")).await
    }

    /// The handover's second slot (`proxy-b`), when it was ever registered.
    async fn job_b(&self) -> Option<Value> {
        self.nomad_get(&format!("/v1/job/{JOB}-b")).await
    }

    /// Whether either slot of the proxy job is registered and not stopped.
    async fn a_slot_runs(&self) -> bool {
        for job in [self.job().await, self.job_b().await].into_iter().flatten() {
            if job["Stop"] == false {
                return true;
            }
        }
        false
    }

    /// Job registrations the operator sent (`POST /v1/jobs` or `/v1/job/<id>`), not the
    /// other job writes (stop, revert, stable).
    fn registers(&self) -> usize {
        self.twin
            .faults()
            .request_log(Api::Nomad)
            .iter()
            .filter(|r| {
                let path = r.uri.split('?').next().unwrap_or_default();
                r.user_agent.starts_with(OPERATOR_UA)
                    && matches!(r.method.as_str(), "POST" | "PUT")
                    && (path == "/v1/jobs"
                        || path
                            .strip_prefix("/v1/job/")
                            .is_some_and(|id| !id.contains('/')))
            })
            .count()
    }

    async fn job_version(&self) -> u64 {
        self.job()
            .await
            .and_then(|j| j["Version"].as_u64())
            .expect("the proxy job exists")
    }

    /// A request to the backend's route through Traefik's entry point on `port`.
    async fn through(&self, port: u16) -> Option<Seen> {
        get_with_host(port, APP_HOST, "/hello").await
    }

    /// Waits until a request through `port` reaches the backend; returns that response.
    async fn wait_serving(&self, port: u16, timeout: Duration) -> Seen {
        let seen = eventually(timeout, || async {
            self.through(port).await.filter(|s| {
                s.status == 200 && s.header("x-backend") == Some(self.backend.name.as_str())
            })
        })
        .await;
        match seen {
            Some(seen) => seen,
            None => panic!(
                "no request through 127.0.0.1:{port} reached the backend; last: {:?}",
                self.through(port).await
            ),
        }
    }

    /// Requests the operator (not Traefik) sent to `api` whose method and path match.
    fn operator_requests(&self, api: Api, method: &str, path_prefix: &str) -> usize {
        self.twin
            .faults()
            .request_log(api)
            .iter()
            .filter(|r| {
                r.user_agent.starts_with(OPERATOR_UA)
                    && r.method == method
                    && r.uri.starts_with(path_prefix)
            })
            .count()
    }

    /// Puts the base document and waits until it is Ready and serving; returns the status.
    async fn converge(&self) -> ProxyStatus {
        self.put_config(&self.doc()).await;
        let status = self
            .wait_status("phase Ready", CONVERGE, |s| s.phase == Phase::Ready)
            .await;
        self.wait_serving(self.web, Duration::from_secs(30)).await;
        status
    }

    async fn shutdown(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(op) = self.operator.take() {
            let _ = tokio::time::timeout(Duration::from_secs(10), op).await;
        }
        self.twin.shutdown().await;
    }
}

// === (1) fresh cluster ===

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fresh_cluster_with_a_traefik_config_becomes_ready_and_routes_with_security_headers() {
    let cluster = Cluster::start().await;
    assert!(
        cluster.job().await.is_none(),
        "no proxy job before the config exists"
    );

    let status = cluster.converge().await;
    assert_eq!(status.phase, Phase::Ready);
    assert!(
        status.last_applied_digest.is_some(),
        "Ready names the applied digest"
    );
    assert_eq!(status.last_applied_digest, status.observed_digest);
    assert!(status.job_version.is_some());

    let seen = cluster
        .wait_serving(cluster.web, Duration::from_secs(10))
        .await;
    let body: Value = serde_json::from_str(&seen.body).unwrap();
    assert_eq!(body["backend"], "app-backend");
    assert_eq!(body["path"], "/hello");
    // HinD's five security headers, on a response routed through the operator's policy chain.
    assert_eq!(seen.header("x-frame-options"), Some("SAMEORIGIN"));
    assert_eq!(seen.header("x-xss-protection"), Some("1; mode=block"));
    assert_eq!(seen.header("x-content-type-options"), Some("nosniff"));
    assert_eq!(
        seen.header("referrer-policy"),
        Some("strict-origin-when-cross-origin")
    );
    assert_eq!(
        seen.header("permissions-policy"),
        Some("accelerometer=(), camera=(), geolocation=(), microphone=()")
    );

    // The job carries the ownership stamp and the digest it was rendered from.
    let job = cluster.job().await.unwrap();
    assert_eq!(job["Meta"]["proxy-operator/owner"], PREFIX);
    assert!(job["Meta"]["proxy-operator/spec-digest"].is_string());
    cluster.shutdown().await;
}

// === (2) live policy change ===

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_header_and_rate_limit_change_applies_live_without_restarting_traefik_or_a_new_job_version()
 {
    let cluster = Cluster::start().await;
    let before = cluster.converge().await;
    let version = cluster.job_version().await;
    let pid = pid_listening_on(cluster.web).expect("Traefik listens on web");
    let seen = cluster
        .wait_serving(cluster.web, Duration::from_secs(5))
        .await;
    assert_eq!(seen.header("x-policy"), None);
    let registers_before = cluster.operator_requests(Api::Nomad, "POST", "/v1/job");

    let mut doc = cluster.doc();
    doc["spec"]["middlewares"] = json!({
        "securityHeaders": {"headers": {"X-Policy": "v2"}, "remove": ["X-XSS-Protection"]},
        "rateLimit": {"average": 1, "burst": 1, "period": "1m"}
    });
    cluster.put_config(&doc).await;
    let after = cluster
        .wait_status("Ready with the new digest", CONVERGE, |s| {
            s.phase == Phase::Ready
                && s.last_applied_digest.is_some()
                && s.last_applied_digest != before.last_applied_digest
        })
        .await;

    // The response changed: the new header is there, the removed one is gone...
    let changed = eventually(Duration::from_secs(15), || async {
        cluster
            .through(cluster.web)
            .await
            .filter(|s| s.header("x-policy") == Some("v2"))
    })
    .await
    .expect("the new header shows up in responses");
    assert_eq!(changed.header("x-xss-protection"), None);
    assert_eq!(changed.header("x-frame-options"), Some("SAMEORIGIN"));
    // ...and the rate limit holds: one request a minute, the next one is refused.
    let limited = eventually(Duration::from_secs(5), || async {
        cluster
            .through(cluster.web)
            .await
            .filter(|s| s.status == 429)
    })
    .await;
    assert!(
        limited.is_some(),
        "a burst beyond 1/min is not refused with 429"
    );

    // Same Traefik process, same job version, no job registration.
    assert_eq!(
        pid_listening_on(cluster.web),
        Some(pid),
        "Traefik was restarted for a policy change"
    );
    assert!(process_alive(pid));
    assert_eq!(
        cluster.job_version().await,
        version,
        "a policy change registered a new job version"
    );
    assert_eq!(after.job_version, before.job_version);
    assert_eq!(
        cluster.operator_requests(Api::Nomad, "POST", "/v1/job"),
        registers_before
    );
    cluster.shutdown().await;
}

// === (3) rollback, no retry storm, retryNonce ===

/// A proxy "build" that exits as soon as it starts.
const EXITS_AT_START: &str = "/bin/false";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_structural_change_whose_proxy_cannot_start_rolls_back_is_not_retried_and_retries_on_a_new_nonce()
 {
    let cluster = Cluster::start().await;
    let good = cluster.converge().await;
    let good_version = cluster.job_version().await;

    // The new proxy build exits at start (`false` stands in for a binary that can't run):
    // nothing preflight can see beforehand.
    let mut doc = cluster.doc();
    doc["spec"]["job"]["driver"]["rawExec"]["command"] = json!(EXITS_AT_START);
    cluster.put_config(&doc).await;

    let rolled = cluster
        .wait_status("phase RolledBack", CONVERGE, |s| {
            s.phase == Phase::RolledBack
        })
        .await;
    eprintln!(
        "rolled back: {}",
        serde_json::to_string_pretty(&rolled).unwrap()
    );
    assert!(
        rolled.failed_digest.is_some(),
        "the failed digest is remembered"
    );
    assert_ne!(rolled.failed_digest, good.last_applied_digest);
    assert_eq!(
        rolled.last_applied_digest, good.last_applied_digest,
        "the last good digest stays applied"
    );
    let reason = rolled
        .history
        .first()
        .map(|h| h.reason.clone())
        .unwrap_or_default();
    assert!(
        !reason.is_empty(),
        "the history says why it rolled back: {rolled:#?}"
    );
    let conditions = serde_json::to_string(&rolled.conditions).unwrap();
    assert!(
        conditions.contains("RolledBack") || conditions.contains("Rollback"),
        "conditions: {conditions}"
    );

    // The previous version serves again.
    cluster
        .wait_serving(cluster.web, Duration::from_secs(30))
        .await;
    let job = cluster.job().await.unwrap();
    assert_eq!(
        job["Meta"]["proxy-operator/spec-digest"],
        cluster
            .nomad_get(&format!("/v1/job/{JOB}/versions"))
            .await
            .unwrap()["Versions"]
            .as_array()
            .unwrap()
            .iter()
            .find(|v| v["Version"].as_u64() == Some(good_version))
            .unwrap()["Meta"]["proxy-operator/spec-digest"],
        "the running job is the last good version's content"
    );

    // No retry storm: through several resyncs the same document is not registered again.
    let version_after_rollback = cluster.job_version().await;
    let registers = cluster.operator_requests(Api::Nomad, "POST", "/v1/job");
    cluster.wait_passes(3, "the rollback").await;
    assert_eq!(
        cluster.job_version().await,
        version_after_rollback,
        "the failed document was re-applied"
    );
    assert_eq!(
        cluster.operator_requests(Api::Nomad, "POST", "/v1/job"),
        registers
    );
    let held_status = cluster.status().await.unwrap();
    assert_eq!(held_status.failed_digest, rolled.failed_digest);
    assert_ne!(held_status.phase, Phase::Progressing);

    // A new retryNonce retries the same document: it is registered again (the handover's new
    // slot), fails again and is stopped again; the serving slot is never touched (the history
    // folds the repeat into one entry).
    let registers = cluster.registers();
    doc["spec"]["retryNonce"] = json!("try-again-1");
    cluster.put_config(&doc).await;
    eventually(CONVERGE, || async {
        let stopped = cluster.job_b().await.is_some_and(|j| j["Stop"] == true);
        (cluster.registers() > registers && stopped).then_some(())
    })
    .await
    .expect("the retry registered the document again and stopped it");
    assert_eq!(
        cluster.job_version().await,
        version_after_rollback,
        "the serving slot was not touched by the retry"
    );
    let retried = cluster
        .wait_status("RolledBack after the retry", CONVERGE, |s| {
            s.phase == Phase::RolledBack
        })
        .await;
    assert_eq!(retried.last_applied_digest, good.last_applied_digest);
    assert_eq!(retried.failed_digest, rolled.failed_digest);

    // Fixing the document converges, and a success clears the failed digest.
    doc["spec"]["job"]["driver"]["rawExec"]["command"] =
        json!(support::traefik_bin().display().to_string());
    doc["spec"]["entryPoints"]["web"]["address"] = json!(format!("127.0.0.1:{}", free_port()));
    let fixed_port = doc["spec"]["entryPoints"]["web"]["address"]
        .as_str()
        .unwrap()
        .rsplit(':')
        .next()
        .unwrap()
        .parse::<u16>()
        .unwrap();
    cluster.put_config(&doc).await;
    let fixed = cluster
        .wait_status("Ready after the fix", CONVERGE, |s| {
            s.phase == Phase::Ready && s.last_applied_digest != good.last_applied_digest
        })
        .await;
    assert_eq!(
        fixed.failed_digest, None,
        "a success clears the failed digest"
    );
    cluster
        .wait_serving(fixed_port, Duration::from_secs(30))
        .await;
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_structural_change_onto_a_port_already_taken_is_refused_by_preflight_and_changes_nothing()
{
    let cluster = Cluster::start().await;
    let good = cluster.converge().await;
    let version = cluster.job_version().await;
    let pid = pid_listening_on(cluster.web).expect("Traefik listens on web");

    let held = TcpListener::bind("127.0.0.1:0").unwrap();
    let taken = held.local_addr().unwrap().port();
    let mut doc = cluster.doc();
    doc["spec"]["entryPoints"]["web"]["address"] = json!(format!("127.0.0.1:{taken}"));
    cluster.put_config(&doc).await;

    let invalid = cluster
        .wait_status("phase Invalid", CONVERGE, |s| s.phase == Phase::Invalid)
        .await;
    assert!(
        invalid
            .validation_errors
            .iter()
            .any(|e| e.path == "spec.entryPoints.web.address"),
        "preflight names the entry point whose port is taken: {invalid:#?}"
    );
    assert_eq!(invalid.last_applied_digest, good.last_applied_digest);

    // Through a resync or two, nothing that runs changed.
    cluster.wait_passes(2, "the refused document").await;
    assert_eq!(
        cluster.job_version().await,
        version,
        "no job was registered"
    );
    assert_eq!(
        pid_listening_on(cluster.web),
        Some(pid),
        "the proxy was not restarted"
    );
    cluster
        .wait_serving(cluster.web, Duration::from_secs(5))
        .await;
    drop(held);
    cluster.shutdown().await;
}

// === (4) invalid document ===

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invalid_document_reports_every_error_and_changes_nothing_that_runs() {
    let cluster = Cluster::start().await;
    let good = cluster.converge().await;
    let version = cluster.job_version().await;
    let pid = pid_listening_on(cluster.web).expect("Traefik listens on web");

    let mut doc = cluster.doc();
    doc["spec"]["middlewares"] = json!({
        "ipAllowList": {"sourceRange": ["10.0.0.0/8", "10.0.0.300/8"]},
        "rateLimit": {"average": 0}
    });
    doc["spec"]["rollout"]["healthyDeadline"] = json!("banana");
    doc["spec"]["entryPoints"]["websecure"]["address"] = json!("127.0.0.1:99999");
    cluster.put_config(&doc).await;

    let invalid = cluster
        .wait_status("phase Invalid", CONVERGE, |s| s.phase == Phase::Invalid)
        .await;
    let paths: Vec<&str> = invalid
        .validation_errors
        .iter()
        .map(|e| e.path.as_str())
        .collect();
    for expected in [
        "spec.middlewares.ipAllowList.sourceRange[1]",
        "spec.middlewares.rateLimit.average",
        "spec.rollout.healthyDeadline",
        "spec.entryPoints.websecure.address",
    ] {
        assert!(
            paths.contains(&expected),
            "{expected} missing from the reported errors {paths:?}"
        );
    }
    assert_eq!(invalid.last_applied_digest, good.last_applied_digest);

    // Through a resync or two, nothing that runs changed.
    cluster.wait_passes(2, "the invalid document").await;
    assert_eq!(cluster.job_version().await, version);
    assert_eq!(pid_listening_on(cluster.web), Some(pid));
    let seen = cluster
        .wait_serving(cluster.web, Duration::from_secs(5))
        .await;
    assert_eq!(
        seen.header("x-frame-options"),
        Some("SAMEORIGIN"),
        "the running policy is untouched"
    );
    cluster.shutdown().await;
}

// === (5) Consul outage during a rollout ===

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_consul_outage_during_a_rollout_tears_nothing_down_and_the_rollout_converges_after_it() {
    let cluster = Cluster::start().await;
    let good = cluster.converge().await;

    // A structural change (new websecure port), with a gate long enough to outlive the outage's
    // aftermath (Traefik's own Consul providers reconnect with backoff).
    let new_websecure = free_port();
    let mut doc = cluster.doc();
    doc["spec"]["entryPoints"]["websecure"]["address"] =
        json!(format!("127.0.0.1:{new_websecure}"));
    doc["spec"]["rollout"]["healthyDeadline"] = json!("60s");
    let registers = cluster.registers();
    cluster.put_config(&doc).await;
    let registered = eventually(CONVERGE, || async {
        (cluster.registers() > registers).then_some(())
    })
    .await;
    assert!(
        registered.is_some(),
        "the rollout never registered the new version"
    );

    cluster.twin.faults().stop(Api::Consul).await;
    let outage = Instant::now();
    while outage.elapsed() < Duration::from_secs(20) {
        assert!(
            cluster.a_slot_runs().await,
            "every slot of the proxy job was stopped during the Consul outage"
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    let during = cluster.registers();
    cluster.twin.faults().start(Api::Consul).await.unwrap();

    let done = cluster
        .wait_status(
            "Ready with the new digest after the outage",
            CONVERGE,
            |s| s.phase == Phase::Ready && s.last_applied_digest != good.last_applied_digest,
        )
        .await;
    eprintln!(
        "after the outage: {}",
        serde_json::to_string_pretty(&done).unwrap()
    );
    assert_eq!(
        done.failed_digest, None,
        "the outage was not counted as a failed rollout"
    );
    assert!(cluster.a_slot_runs().await, "the new version serves");
    assert_eq!(
        cluster.registers(),
        during,
        "no revert or re-register after the outage"
    );
    cluster
        .wait_serving(cluster.web, Duration::from_secs(30))
        .await;
    assert!(
        pid_listening_on(new_websecure).is_some(),
        "the new version listens on the new port"
    );
    cluster.shutdown().await;
}

// === (6) config deleted ===

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_the_config_key_does_not_stop_the_proxy() {
    let cluster = Cluster::start().await;
    cluster.converge().await;
    let version = cluster.job_version().await;
    let pid = pid_listening_on(cluster.web).expect("Traefik listens on web");

    cluster.delete_config().await;
    let reported = cluster
        .wait_status("the missing config reported", CONVERGE, |s| {
            serde_json::to_string(&s.conditions)
                .unwrap()
                .contains("absent")
        })
        .await;
    assert_ne!(reported.phase, Phase::Progressing);

    // Through resyncs: the job, its version, Traefik and the route all stay.
    cluster.wait_passes(2, "the config key was deleted").await;
    let job = cluster.job().await.expect("the proxy job still exists");
    assert_eq!(job["Stop"], false);
    assert_eq!(cluster.job_version().await, version);
    assert_eq!(pid_listening_on(cluster.web), Some(pid));
    cluster
        .wait_serving(cluster.web, Duration::from_secs(5))
        .await;
    assert_eq!(
        cluster.operator_requests(Api::Nomad, "DELETE", "/v1/job"),
        0
    );
    // The policy entries Traefik reads stay too (the chain is still applied).
    let seen = cluster.through(cluster.web).await.unwrap();
    assert_eq!(seen.header("x-content-type-options"), Some("nosniff"));
    cluster.shutdown().await;
}

// === (7) foreign job ===

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_foreign_job_with_the_same_id_is_reported_stalled_and_left_untouched() {
    let cluster = Cluster::start_with(|nomad| async move {
        let foreign = json!({"Job": {
            "ID": JOB, "Name": JOB, "Type": "service", "Datacenters": ["*"],
            "Meta": {"team": "someone-else"},
            "TaskGroups": [{"Name": "web", "Count": 1, "Tasks": [{
                "Name": "sleeper", "Driver": "raw_exec",
                "Config": {"command": "/bin/sh", "args": ["-c", "exec sleep 600"]}
            }]}]
        }});
        let resp = reqwest::Client::builder()
            .no_proxy()
            .build()
            .unwrap()
            .post(format!("http://{nomad}/v1/jobs"))
            .json(&foreign)
            .send()
            .await
            .unwrap();
        assert!(
            resp.status().is_success(),
            "register the foreign job: {}",
            resp.status()
        );
    })
    .await;
    let before = cluster.job().await.unwrap();

    cluster.put_config(&cluster.doc()).await;
    let stalled = cluster
        .wait_status("phase Stalled", CONVERGE, |s| s.phase == Phase::Stalled)
        .await;
    let said = serde_json::to_string(&stalled.conditions).unwrap();
    assert!(
        said.contains("owner") || said.contains("not ours") || said.contains("foreign"),
        "Stalled says why: {said}"
    );

    cluster.wait_passes(2, "the foreign job was reported").await;
    let after = cluster.job().await.unwrap();
    assert_eq!(
        after["Version"], before["Version"],
        "the foreign job was changed"
    );
    assert_eq!(after["JobModifyIndex"], before["JobModifyIndex"]);
    assert_eq!(after["Meta"], before["Meta"]);
    assert_eq!(after["TaskGroups"][0]["Tasks"][0]["Name"], "sleeper");
    assert_eq!(
        cluster.operator_requests(Api::Nomad, "POST", "/v1/job"),
        0,
        "the operator wrote to the foreign job"
    );
    assert!(
        pid_listening_on(cluster.web).is_none(),
        "a Traefik was started anyway"
    );
    cluster.shutdown().await;
}

// === a document that is not even YAML ===

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_document_that_does_not_parse_is_invalid_and_starts_nothing() {
    let cluster = Cluster::start().await;
    cluster
        .put_config_text(
            "apiVersion: proxy-operator.io/v1alpha1\nkind: ProxyConfig\nspec: [unclosed\n",
        )
        .await;
    let invalid = cluster
        .wait_status("phase Invalid", CONVERGE, |s| s.phase == Phase::Invalid)
        .await;
    assert!(!invalid.validation_errors.is_empty());
    cluster.wait_passes(2, "the unparsable document").await;
    assert!(
        cluster.job().await.is_none(),
        "an unparsable document started a proxy"
    );
    cluster.shutdown().await;
}

// === Nomad before 1.11: system jobs have no deployments ===

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_nomad_before_1_11_the_gate_uses_allocation_health_and_still_rolls_back_a_broken_change()
{
    let old_nomad = TwinConfig {
        nomad_system_deployments: false,
        ..TwinConfig::default()
    };
    let cluster = Cluster::start_on(old_nomad, |_| async {}).await;
    let good = cluster.converge().await;
    // The gate passed with no deployment to read: allocation health held for minHealthyTime.
    assert_eq!(
        cluster
            .nomad_get(&format!("/v1/job/{JOB}/deployment"))
            .await,
        Some(Value::Null),
        "this twin mode must not create deployments for system jobs"
    );
    let good_version = cluster.job_version().await;

    // A change whose proxy cannot start fails through the allocation, not a deployment.
    let mut doc = cluster.doc();
    doc["spec"]["job"]["driver"]["rawExec"]["command"] = json!(EXITS_AT_START);
    cluster.put_config(&doc).await;
    let rolled = cluster
        .wait_status("phase RolledBack", CONVERGE, |s| {
            s.phase == Phase::RolledBack
        })
        .await;
    assert_eq!(rolled.last_applied_digest, good.last_applied_digest);
    assert!(rolled.failed_digest.is_some());
    cluster
        .wait_serving(cluster.web, Duration::from_secs(30))
        .await;
    let versions = cluster
        .nomad_get(&format!("/v1/job/{JOB}/versions"))
        .await
        .unwrap();
    let digest_of = |version: u64| {
        versions["Versions"]
            .as_array()
            .unwrap()
            .iter()
            .find(|v| v["Version"].as_u64() == Some(version))
            .map(|v| v["Meta"]["proxy-operator/spec-digest"].clone())
    };
    assert_eq!(
        Some(cluster.job().await.unwrap()["Meta"]["proxy-operator/spec-digest"].clone()),
        digest_of(good_version),
        "the running job is the last good version's content"
    );
    cluster.shutdown().await;
}
