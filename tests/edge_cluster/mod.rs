//! The cluster the issue-14 proofs run on (`backend_health`, `acme_pebble`): the twin (Consul +
//! Nomad API, its executor running the proxy job as real processes), the operator in-process on
//! the real HTTP clients, and a document for real Traefik or Caddy on free loopback ports.
//!
//! Included with `#[path = "edge_cluster/mod.rs"] mod edge_cluster;` next to `support`.
#![allow(dead_code)]

use std::time::Duration;

use hashistack_twin::{Twin, TwinConfig};
use proxy_operator::consul::ConsulClient;
use proxy_operator::nomad::NomadClient;
use proxy_operator::proxy::probe::HttpProbe;
use proxy_operator::reconcile::{Config, Operator};
use proxy_operator::spec::ProxyKind;
use proxy_operator::spec::status::{Phase, ProxyStatus};
use proxy_operator::transport::{Api as ClientApi, ClientConfig};
use serde_json::{Value, json};
use tokio::sync::{Semaphore, SemaphorePermit, oneshot};
use tokio::task::JoinHandle;

use crate::support::free_port;

/// The operator's KV prefix.
pub const PREFIX: &str = "proxy-operator";
/// The proxy's Nomad job.
pub const JOB: &str = "proxy";
/// Traefik's `providers.consulCatalog.refreshInterval` in the document. Caddy's catalog watch is
/// a blocking query, so its refresh is the operator's debounce plus one `POST /load`.
pub const REFRESH: Duration = Duration::from_secs(1);
const CONVERGE: Duration = Duration::from_secs(90);

/// One cluster at a time per test binary: each runs a twin, a proxy and the operator on a
/// 2-core machine.
static SLOTS: Semaphore = Semaphore::const_new(1);

/// Twin + operator; the proxy appears once a document is written.
pub struct Cluster {
    /// The twin.
    pub twin: Twin,
    /// A plain HTTP client (no proxy from the environment).
    pub http: reqwest::Client,
    /// The plain HTTP entry point's port.
    pub web: u16,
    /// The HTTPS entry point's port.
    pub websecure: u16,
    /// The dashboard / admin port.
    pub dashboard: u16,
    /// Scratch directory (certDir lives in `certs/`).
    pub dir: tempfile::TempDir,
    stop: Option<oneshot::Sender<()>>,
    operator: Option<JoinHandle<()>>,
    _slot: SemaphorePermit<'static>,
}

impl Cluster {
    /// Starts the twin and the operator (which finds no document yet).
    pub async fn start() -> Cluster {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let slot = SLOTS
            .acquire()
            .await
            .expect("the slot semaphore is never closed");
        let twin = Twin::start(TwinConfig::default())
            .await
            .expect("start the twin");
        let consul_url = format!("http://{}", twin.consul_addr());
        let nomad_url = format!("http://{}", twin.nomad_addr());
        let consul = ConsulClient::new(
            &ClientConfig::for_address(ClientApi::Consul, &consul_url).expect("consul config"),
        )
        .expect("consul client");
        let nomad = NomadClient::new(
            &ClientConfig::for_address(ClientApi::Nomad, &nomad_url).expect("nomad config"),
        )
        .expect("nomad client");
        let config = Config::new(PREFIX)
            .debounce(Duration::from_millis(50))
            .resync(Duration::from_secs(3));
        let (stop, stopped) = oneshot::channel::<()>();
        let probe = HttpProbe::new().expect("probe");
        let operator = tokio::spawn(Operator::new(config, consul, nomad, probe).run(async {
            let _ = stopped.await;
        }));
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir_all(dir.path().join("certs")).expect("create certDir");
        Cluster {
            twin,
            http: reqwest::Client::builder()
                .no_proxy()
                .build()
                .expect("HTTP client"),
            web: free_port(),
            websecure: free_port(),
            dashboard: free_port(),
            dir,
            stop: Some(stop),
            operator: Some(operator),
            _slot: slot,
        }
    }

    /// The twin's Consul HTTP address as a URL.
    pub fn consul_url(&self) -> String {
        format!("http://{}", self.twin.consul_addr())
    }

    /// The document: `proxy` run by `raw_exec` from `command`, on loopback, Consul catalog
    /// discovery refreshed every [`REFRESH`], plain HTTP on `web` (no redirect), default
    /// middlewares. Tests edit the JSON for what they add (ACME, policies).
    pub fn doc(&self, proxy: ProxyKind, domain_suffix: &str, command: &str) -> Value {
        let name = match proxy {
            ProxyKind::Traefik => "traefik",
            ProxyKind::Caddy => "caddy",
        };
        json!({
            "apiVersion": "proxy-operator.io/v1alpha1",
            "kind": "ProxyConfig",
            "metadata": {"name": "proofs"},
            "spec": {
                "proxy": name,
                "domainSuffix": domain_suffix,
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
                    "driver": {"rawExec": {"command": command}},
                    "resources": {"cpu": 100, "memoryMB": 128}
                },
                "rollout": {"healthyDeadline": "20s", "minHealthyTime": "1s", "onFailure": "rollback"}
            }
        })
    }

    /// Writes the document to `<prefix>/config`.
    pub async fn put_config(&self, doc: &Value) {
        let resp = self
            .http
            .put(format!("{}/v1/kv/{PREFIX}/config", self.consul_url()))
            .body(serde_json::to_vec_pretty(doc).expect("serialize the document"))
            .send()
            .await
            .expect("reach the twin's KV");
        assert!(resp.status().is_success(), "PUT config: {}", resp.status());
    }

    /// The status document, when there is a readable one.
    pub async fn status(&self) -> Option<ProxyStatus> {
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

    /// Waits until the document in KV is Ready on `proxy`, or panics with the last status.
    pub async fn wait_ready(&self, proxy: ProxyKind) {
        crate::support::wait_status(
            &format!("{proxy:?} Ready"),
            CONVERGE,
            || self.status(),
            |s: &ProxyStatus| {
                s.phase == Phase::Ready
                    && s.proxy == Some(proxy)
                    && s.observed_digest.is_some()
                    && s.last_applied_digest == s.observed_digest
            },
            || async { String::new() },
        )
        .await;
    }

    /// Registers (or re-registers) instance `id` of `service` with tag `traefik.enable=true`
    /// and its check in `status` (`passing`, `critical`), the way an agent's anti-entropy
    /// writes a check's state into the catalog.
    pub async fn register(&self, service: &str, id: &str, port: u16, status: &str) {
        let registration = json!({
            "Node": "hashistack-twin", "Address": "127.0.0.1", "SkipNodeUpdate": true,
            "Service": {"ID": id, "Service": service, "Tags": ["traefik.enable=true"],
                        "Address": "127.0.0.1", "Port": port},
            "Check": {"CheckID": format!("service:{id}"), "Name": format!("{service} alive"),
                      "Status": status, "ServiceID": id}
        });
        let resp = self
            .http
            .put(format!("{}/v1/catalog/register", self.consul_url()))
            .json(&registration)
            .send()
            .await
            .expect("reach the twin's catalog");
        assert!(
            resp.status().is_success(),
            "register {id} as {status}: {}",
            resp.status()
        );
    }

    /// The ports of the instances of `service` the catalog's health endpoint reports passing:
    /// what both providers read.
    pub async fn passing(&self, service: &str) -> Vec<u16> {
        let resp = self
            .http
            .get(format!(
                "{}/v1/health/service/{service}?passing=true",
                self.consul_url()
            ))
            .send()
            .await
            .expect("reach the twin's health endpoint");
        let entries: Vec<Value> = resp.json().await.expect("health entries");
        let mut ports: Vec<u16> = entries
            .iter()
            .filter_map(|e| e["Service"]["Port"].as_u64())
            .filter_map(|p| u16::try_from(p).ok())
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
