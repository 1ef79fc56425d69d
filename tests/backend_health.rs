//! Backend health and load balancing through real proxies (issue 14, "Backend health and load
//! balancing"): two instances of one Consul catalog service behind real Traefik and real Caddy,
//! each run by the twin as the operator's `raw_exec` proxy job, with the operator in-process on
//! the real HTTP clients.
//!
//! For each proxy: while both instances pass their Consul check, requests reach both; when one
//! turns critical (its check re-registered with `Status: critical`, as an agent's check update
//! lands in the catalog) it gets no new requests within the provider's refresh; when it passes
//! again it gets traffic again. Which instance answered is read from the `X-Backend` header each
//! real backend sets, and counted on the backend side as well.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "support/mod.rs"]
mod support;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use hashistack_twin::{Twin, TwinConfig};
use proxy_operator::consul::ConsulClient;
use proxy_operator::nomad::NomadClient;
use proxy_operator::proxy::probe::HttpProbe;
use proxy_operator::reconcile::{Config, Operator};
use proxy_operator::spec::ProxyKind;
use proxy_operator::spec::status::{Phase, ProxyStatus};
use proxy_operator::transport::{Api as ClientApi, ClientConfig};
use serde_json::{Value, json};
use support::{free_port, get_with_host};
use tokio::sync::{Semaphore, SemaphorePermit, oneshot};
use tokio::task::JoinHandle;

const PREFIX: &str = "proxy-operator";
const JOB: &str = "proxy";
const SERVICE: &str = "app";
const HOST: &str = "app.localhost";
/// Traefik's `providers.consulCatalog.refreshInterval` in the document. Caddy's catalog watch is
/// a blocking query, so its refresh is the operator's debounce plus one `POST /load`.
const REFRESH: Duration = Duration::from_secs(1);
/// What the test allows on top of the refresh on this small, shared machine: the provider's
/// next poll, the router rebuild, and the in-flight requests of the old backend set.
const SLACK: Duration = Duration::from_secs(6);
/// Requests per sample: enough that round-robin or random balancing over two instances reaches
/// both with overwhelming probability (random: 2^-39 to miss one).
const SAMPLE: usize = 40;
const CONVERGE: Duration = Duration::from_secs(90);

/// One proxy at a time: each scenario runs a twin, a proxy and the operator on two cores.
static SLOTS: Semaphore = Semaphore::const_new(1);

/// A real HTTP backend on 127.0.0.1 that names itself in `X-Backend` and counts what it serves,
/// so "no new requests" is checked where the requests would land, not only in the answers.
struct CountingBackend {
    addr: SocketAddr,
    served: Arc<AtomicU64>,
    task: JoinHandle<()>,
}

impl CountingBackend {
    async fn start(name: &'static str) -> CountingBackend {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let served = Arc::new(AtomicU64::new(0));
        let counter = Arc::clone(&served);
        let app = axum::Router::new().fallback(move || {
            let counter = Arc::clone(&counter);
            async move {
                counter.fetch_add(1, Ordering::SeqCst);
                ([("X-Backend", name)], name)
            }
        });
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        CountingBackend { addr, served, task }
    }

    fn served(&self) -> u64 {
        self.served.load(Ordering::SeqCst)
    }
}

impl Drop for CountingBackend {
    fn drop(&mut self) {
        self.task.abort();
    }
}

struct Cluster {
    twin: Twin,
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
    async fn start() -> Cluster {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let slot = SLOTS.acquire().await.unwrap();
        let twin = Twin::start(TwinConfig::default()).await.unwrap();
        let consul_url = format!("http://{}", twin.consul_addr());
        let nomad_url = format!("http://{}", twin.nomad_addr());
        let consul =
            ConsulClient::new(&ClientConfig::for_address(ClientApi::Consul, &consul_url).unwrap())
                .unwrap();
        let nomad =
            NomadClient::new(&ClientConfig::for_address(ClientApi::Nomad, &nomad_url).unwrap())
                .unwrap();
        let config = Config::new(PREFIX)
            .debounce(Duration::from_millis(50))
            .resync(Duration::from_secs(3));
        let (stop, stopped) = oneshot::channel::<()>();
        let operator = tokio::spawn(
            Operator::new(config, consul, nomad, HttpProbe::new().unwrap()).run(async {
                let _ = stopped.await;
            }),
        );
        Cluster {
            twin,
            http: reqwest::Client::builder().no_proxy().build().unwrap(),
            web: free_port(),
            websecure: free_port(),
            dashboard: free_port(),
            dir: tempfile::tempdir().unwrap(),
            stop: Some(stop),
            operator: Some(operator),
            _slot: slot,
        }
    }

    fn consul_url(&self) -> String {
        format!("http://{}", self.twin.consul_addr())
    }

    /// The document: `proxy` on loopback, Consul catalog discovery refreshed every [`REFRESH`],
    /// plain HTTP on `web` (no redirect), no middlewares.
    fn doc(&self, proxy: ProxyKind) -> Value {
        let (name, bin) = match proxy {
            ProxyKind::Traefik => ("traefik", support::traefik_bin()),
            ProxyKind::Caddy => ("caddy", support::caddy_bin()),
        };
        json!({
            "apiVersion": "proxy-operator.io/v1alpha1",
            "kind": "ProxyConfig",
            "metadata": {"name": "health"},
            "spec": {
                "proxy": name,
                "domainSuffix": "localhost",
                "discovery": {
                    "primary": "consul",
                    "consul": {
                        "address": self.twin.consul_addr().to_string(),
                        "refreshInterval": format!("{}s", REFRESH.as_secs()),
                    },
                    "throttleDuration": "100ms"
                },
                "entryPoints": {
                    "web": {"address": format!("127.0.0.1:{}", self.web), "redirectTo": null},
                    "websecure": {"address": format!("127.0.0.1:{}", self.websecure)}
                },
                "tls": {"certDir": self.dir.path().join("certs").display().to_string()},
                "metrics": {"prometheus": false},
                "dashboard": {"enabled": true, "address": format!("127.0.0.1:{}", self.dashboard)},
                "job": {
                    "id": JOB,
                    "type": "system",
                    "driver": {"rawExec": {"command": bin.display().to_string()}},
                    "resources": {"cpu": 100, "memoryMB": 128}
                },
                "rollout": {"healthyDeadline": "20s", "minHealthyTime": "1s", "onFailure": "rollback"}
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

    async fn wait_ready(&self, proxy: ProxyKind) {
        let deadline = Instant::now() + CONVERGE;
        let mut last = None;
        while Instant::now() < deadline {
            if let Some(s) = self.status().await {
                if s.phase == Phase::Ready
                    && s.proxy == Some(proxy)
                    && s.observed_digest.is_some()
                    && s.last_applied_digest == s.observed_digest
                {
                    return;
                }
                last = Some(s);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!(
            "{proxy:?} not Ready within {CONVERGE:?}; last status: {}",
            serde_json::to_string_pretty(&last).unwrap()
        );
    }

    /// Registers (or re-registers) instance `id` of [`SERVICE`] with its check in `status`, the
    /// way an agent's anti-entropy writes a check's new state into the catalog.
    async fn register(&self, id: &str, port: u16, status: &str) {
        let registration = json!({
            "Node": "hashistack-twin", "Address": "127.0.0.1", "SkipNodeUpdate": true,
            "Service": {"ID": id, "Service": SERVICE, "Tags": ["traefik.enable=true"],
                        "Address": "127.0.0.1", "Port": port},
            "Check": {"CheckID": format!("service:{id}"), "Name": format!("{SERVICE} alive"),
                      "Status": status, "ServiceID": id}
        });
        let resp = self
            .http
            .put(format!("{}/v1/catalog/register", self.consul_url()))
            .json(&registration)
            .send()
            .await
            .unwrap();
        assert!(
            resp.status().is_success(),
            "register {id} as {status}: {}",
            resp.status()
        );
    }

    /// The instances the catalog's health endpoint reports passing: what both providers read.
    async fn passing(&self) -> Vec<u16> {
        let resp = self
            .http
            .get(format!(
                "{}/v1/health/service/{SERVICE}?passing=true",
                self.consul_url()
            ))
            .send()
            .await
            .unwrap();
        let entries: Vec<Value> = resp.json().await.unwrap();
        let mut ports: Vec<u16> = entries
            .iter()
            .filter_map(|e| e["Service"]["Port"].as_u64())
            .map(|p| u16::try_from(p).unwrap())
            .collect();
        ports.sort_unstable();
        ports
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(op) = self.operator.take() {
            op.abort();
        }
    }
}

/// Sends [`SAMPLE`] requests for [`HOST`] on `web` one after the other and counts the answers
/// by the backend that served them (`"<status>"` for an answer without `X-Backend`, `"down"`
/// for a failed connection).
async fn sample(web: u16) -> BTreeMap<String, usize> {
    let mut seen = BTreeMap::new();
    for _ in 0..SAMPLE {
        let key = match get_with_host(web, HOST, "/hello").await {
            Some(s) if s.status == 200 => s.header("x-backend").unwrap_or("200?").to_owned(),
            Some(s) => s.status.to_string(),
            None => "down".to_owned(),
        };
        *seen.entry(key).or_insert(0) += 1;
    }
    seen
}

/// Samples until `done` holds for a sample, or `within` passes; returns the time it took and
/// the sample that satisfied it, or panics with the last one.
async fn until(
    web: u16,
    what: &str,
    within: Duration,
    done: impl Fn(&BTreeMap<String, usize>) -> bool,
) -> (Duration, BTreeMap<String, usize>) {
    let started = Instant::now();
    loop {
        let seen = sample(web).await;
        if done(&seen) {
            return (started.elapsed(), seen);
        }
        assert!(
            started.elapsed() < within,
            "{what}: not within {within:?}; last sample: {seen:?}"
        );
    }
}

fn only(seen: &BTreeMap<String, usize>, name: &str) -> bool {
    seen.len() == 1 && seen.get(name) == Some(&SAMPLE)
}

fn both(seen: &BTreeMap<String, usize>) -> bool {
    seen.len() == 2 && seen.get("a").is_some_and(|n| *n > 0) && seen.get("b").is_some_and(|n| *n > 0)
}

/// The scenario, the same for both proxies.
async fn only_passing_instances_get_traffic(proxy: ProxyKind) {
    let cluster = Cluster::start().await;
    let a = CountingBackend::start("a").await;
    let b = CountingBackend::start("b").await;
    cluster.register("app-a", a.addr.port(), "passing").await;
    cluster.register("app-b", b.addr.port(), "passing").await;
    cluster.put_config(&cluster.doc(proxy)).await;
    cluster.wait_ready(proxy).await;
    let web = cluster.web;

    // (1) both passing: the proxy balances over both.
    let (t, seen) = until(web, "both instances served", Duration::from_secs(30), both).await;
    println!("{proxy:?}: both passing → {seen:?} (after {t:?})");

    // (2) b turns critical: within the refresh, every request goes to a, and b serves nothing.
    cluster.register("app-b", b.addr.port(), "critical").await;
    assert_eq!(
        cluster.passing().await,
        vec![a.addr.port()],
        "the catalog reports only a passing"
    );
    let (t, _) = until(web, "b removed", REFRESH + SLACK, |s| only(s, "a")).await;
    println!("{proxy:?}: b critical → only a after {t:?} (refresh {REFRESH:?})");
    let b_before = b.served();
    let seen = sample(web).await;
    let seen_again = sample(web).await;
    assert!(
        only(&seen, "a") && only(&seen_again, "a"),
        "{proxy:?}: a critical instance got traffic: {seen:?} then {seen_again:?}"
    );
    assert_eq!(
        b.served(),
        b_before,
        "{proxy:?}: the critical backend served requests after it left the proxy's set"
    );

    // (3) b passes again: it gets traffic again within the refresh.
    cluster.register("app-b", b.addr.port(), "passing").await;
    let b_before = b.served();
    let (t, seen) = until(web, "b back", REFRESH + SLACK, both).await;
    println!("{proxy:?}: b passing again → {seen:?} after {t:?}");
    assert!(b.served() > b_before, "b counted no new request: {seen:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn traefik_sends_traffic_only_to_passing_instances_and_takes_a_recovered_one_back() {
    only_passing_instances_get_traffic(ProxyKind::Traefik).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn caddy_sends_traffic_only_to_passing_instances_and_takes_a_recovered_one_back() {
    only_passing_instances_get_traffic(ProxyKind::Caddy).await;
}
