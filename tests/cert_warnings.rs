//! Certificate warnings for real (issue 14, "Certificates"): the twin runs the operator's
//! `raw_exec` job of real Traefik or Caddy, and after the rollout passes the gate the operator
//! looks at what the HTTPS entry point serves for each host the document names.
//!
//! One document covers the three cases side by side:
//! - `good.<suffix>`: a certificate file valid for 90 days → no warning, fallback gauge 0;
//! - `soon.<suffix>`: a certificate file expiring in 5 days → `CertificateExpiring`;
//! - `acme.<suffix>`: ACME against a directory nobody answers on → Traefik serves its
//!   `TRAEFIK DEFAULT CERT`, Caddy refuses the handshake → `CertificateFallback`, gauge 1.
//!
//! Neither failure fails the rollout: the phase is `Ready`. The key files carry a sentinel that
//! must appear in neither the status document nor the metrics.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "support/mod.rs"]
mod support;

use std::path::Path;
use std::time::Duration;

use hashistack_twin::{Twin, TwinConfig};
use proxy_operator::consul::ConsulClient;
use proxy_operator::metrics::Metrics;
use proxy_operator::nomad::NomadClient;
use proxy_operator::proxy::probe::HttpProbe;
use proxy_operator::reconcile::{Config, Operator};
use proxy_operator::server::Surface;
use proxy_operator::spec::ProxyKind;
use proxy_operator::spec::status::{CertificateWarningKind, Phase, ProxyStatus};
use proxy_operator::transport::{Api as ClientApi, ClientConfig};
use serde_json::json;
use support::{Backend, free_port};

const PREFIX: &str = "proxy-operator";
const SUFFIX: &str = "certs.test";
const SENTINEL: &str = "SENTINEL-key-material-4b1d";
const DAY: u64 = 86_400;
const CONVERGE: Duration = Duration::from_secs(120);

/// A self-signed certificate for `host` valid for `days`, written as `<name>.pem` and
/// `<name>.key` (the key file with the sentinel before its PEM block, which Go's PEM decoder
/// skips like any text outside a block).
fn write_cert(dir: &Path, name: &str, host: &str, days: u64) {
    let mut params = rcgen::CertificateParams::new(vec![host.to_owned()]).unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap();
    let epoch = rcgen::date_time_ymd(1970, 1, 1);
    params.not_before = epoch + now - Duration::from_secs(DAY);
    params.not_after = epoch + now + Duration::from_secs(days * DAY);
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = params.self_signed(&key).unwrap();
    std::fs::write(dir.join(format!("{name}.pem")), cert.pem()).unwrap();
    std::fs::write(
        dir.join(format!("{name}.key")),
        format!("{SENTINEL}\n{}", key.serialize_pem()),
    )
    .unwrap();
}

struct Harness {
    twin: Twin,
    surface: Surface,
    http: reqwest::Client,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    operator: tokio::task::JoinHandle<()>,
}

impl Harness {
    /// The twin and the operator on the real clients, with a surface for the metrics.
    async fn start() -> Harness {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let twin = Twin::start(TwinConfig::default()).await.unwrap();
        let consul = ConsulClient::new(
            &ClientConfig::for_address(
                ClientApi::Consul,
                &format!("http://{}", twin.consul_addr()),
            )
            .unwrap(),
        )
        .unwrap();
        let nomad = NomadClient::new(
            &ClientConfig::for_address(ClientApi::Nomad, &format!("http://{}", twin.nomad_addr()))
                .unwrap(),
        )
        .unwrap();
        let surface = Surface::new(Metrics::new());
        let config = Config::new(PREFIX)
            .debounce(Duration::from_millis(50))
            .resync(Duration::from_secs(3));
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let operator = tokio::spawn(
            Operator::new(config, consul, nomad, HttpProbe::new().unwrap())
                .with_surface(surface.clone())
                .run(async {
                    let _ = stopped.await;
                }),
        );
        Harness {
            twin,
            surface,
            http: reqwest::Client::builder().no_proxy().build().unwrap(),
            stop: Some(stop),
            operator,
        }
    }

    fn consul(&self) -> String {
        format!("http://{}", self.twin.consul_addr())
    }

    async fn register(&self, service: &str, port: u16) {
        let registration = json!({
            "Node": "hashistack-twin", "Address": "127.0.0.1", "SkipNodeUpdate": true,
            "Service": {"ID": service, "Service": service, "Tags": ["traefik.enable=true"],
                        "Address": "127.0.0.1", "Port": port},
            "Check": {"CheckID": format!("service:{service}"), "Name": "alive",
                      "Status": "passing", "ServiceID": service}
        });
        let resp = self
            .http
            .put(format!("{}/v1/catalog/register", self.consul()))
            .json(&registration)
            .send()
            .await
            .unwrap();
        assert!(resp.status().is_success());
    }

    async fn put_config(&self, doc: &serde_json::Value) {
        let resp = self
            .http
            .put(format!("{}/v1/kv/{PREFIX}/config", self.consul()))
            .body(serde_json::to_vec_pretty(doc).unwrap())
            .send()
            .await
            .unwrap();
        assert!(resp.status().is_success());
    }

    /// The status document as Consul holds it, raw and parsed.
    async fn status(&self) -> Option<(String, ProxyStatus)> {
        let resp = self
            .http
            .get(format!("{}/v1/kv/{PREFIX}/status?raw", self.consul()))
            .send()
            .await
            .ok()?;
        let text = resp.text().await.ok()?;
        let status = serde_json::from_str(&text).ok()?;
        Some((text, status))
    }
}

impl Drop for Harness {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        self.operator.abort();
    }
}

fn gauge(metrics: &str, line_start: &str) -> Option<f64> {
    metrics
        .lines()
        .find(|l| l.starts_with(line_start))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
}

/// One proxy at a time: each test runs a twin, a proxy and the operator on a 2-core machine.
static SLOTS: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(1);

async fn fallback_and_expiry_are_warned_and_a_good_certificate_is_not(proxy: ProxyKind) {
    let _slot = SLOTS.acquire().await.unwrap();
    let h = Harness::start().await;
    let dir = tempfile::tempdir().unwrap();
    let certs = dir.path().join("certs");
    std::fs::create_dir_all(&certs).unwrap();
    write_cert(&certs, "good", &format!("good.{SUFFIX}"), 90);
    write_cert(&certs, "soon", &format!("soon.{SUFFIX}"), 5);
    let backends = [
        Backend::start("good").await,
        Backend::start("soon").await,
        Backend::start("acme").await,
    ];
    for b in &backends {
        h.register(&b.name, b.port()).await;
    }
    let (web, websecure, dashboard) = (free_port(), free_port(), free_port());
    // A directory URL on a port nobody listens on: every ACME order fails.
    let dead_directory = format!("https://127.0.0.1:{}/dir", free_port());
    let (name, bin) = match proxy {
        ProxyKind::Traefik => ("traefik", support::traefik_bin()),
        ProxyKind::Caddy => ("caddy", support::caddy_bin()),
    };
    let doc = json!({
        "apiVersion": "proxy-operator.io/v1alpha1",
        "kind": "ProxyConfig",
        "metadata": {"name": "cert-warnings"},
        "spec": {
            "proxy": name,
            "domainSuffix": SUFFIX,
            "discovery": {
                "primary": "consul",
                "consul": {"address": h.twin.consul_addr().to_string(), "refreshInterval": "1s"},
                "throttleDuration": "100ms"
            },
            "entryPoints": {
                "web": {"address": format!("127.0.0.1:{web}"), "redirectTo": null},
                "websecure": {"address": format!("127.0.0.1:{websecure}")}
            },
            "tls": {
                "certDir": certs.display().to_string(),
                "certificates": [
                    {"certFile": "good.pem", "keyFile": "good.key"},
                    {"certFile": "soon.pem", "keyFile": "soon.key"}
                ],
                "acme": {"email": "ops@certs.test", "caServer": dead_directory}
            },
            "metrics": {"prometheus": false},
            "dashboard": {"enabled": true, "address": format!("127.0.0.1:{dashboard}")},
            "job": {
                "id": "proxy",
                "type": "system",
                "driver": {"rawExec": {"command": bin.display().to_string()}},
                "resources": {"cpu": 100, "memoryMB": 128}
            },
            "rollout": {
                "healthyDeadline": "30s",
                "minHealthyTime": "1s",
                "onFailure": "rollback",
                // Names the ACME host; on the plain entry point, so the pending (here: failing)
                // certificate does not fail the gate.
                "probes": [{"host": format!("acme.{SUFFIX}"), "entryPoint": "web"}]
            }
        }
    });
    h.put_config(&doc).await;

    let good = format!("good.{SUFFIX}");
    let soon = format!("soon.{SUFFIX}");
    let acme = format!("acme.{SUFFIX}");
    let (raw, status) = support::wait_status(
        &format!("{proxy:?} Ready with the certificate warnings"),
        CONVERGE,
        || h.status(),
        |(_, s): &(String, ProxyStatus)| {
            let kind_of = |host: &str| {
                s.certificate_warnings
                    .iter()
                    .find(|w| w.host == host)
                    .map(|w| w.kind)
            };
            s.phase == Phase::Ready
                && s.proxy == Some(proxy)
                && kind_of(&acme) == Some(CertificateWarningKind::CertificateFallback)
                && kind_of(&soon) == Some(CertificateWarningKind::CertificateExpiring)
        },
        || async { String::new() },
    )
    .await;
    println!("{proxy:?} status:\n{raw}");

    // (c) the good certificate: no warning.
    assert!(
        status.certificate_warnings.iter().all(|w| w.host != good),
        "{raw}"
    );
    // (b) expiring in 5 days: the warning says when and how many days.
    let w = status
        .certificate_warnings
        .iter()
        .find(|w| w.host == soon)
        .unwrap();
    assert!(matches!(w.days_left, Some(3..=5)), "{w:?}");
    assert!(
        w.not_after.is_some() && w.message.contains("soon.pem"),
        "{w:?}"
    );
    // (a) ACME failed: the fallback is named, with the fix.
    let w = status
        .certificate_warnings
        .iter()
        .find(|w| w.host == acme)
        .unwrap();
    let served = match proxy {
        ProxyKind::Traefik => "Traefik's self-signed default certificate",
        ProxyKind::Caddy => "handshake was refused",
    };
    assert!(
        w.message.contains(served) && w.message.contains("spec.tls.acme"),
        "{w:?}"
    );
    let condition = status.condition("CertificatesServed").unwrap();
    assert_eq!(condition.reason, "CertificateFallback", "{condition:?}");

    let metrics = h.surface.metrics().encode().unwrap();
    let fallback = |host: &str| {
        gauge(
            &metrics,
            &format!("proxy_operator_certificate_fallback{{host=\"{host}\"}}"),
        )
    };
    assert_eq!(fallback(&acme), Some(1.0), "{metrics}");
    assert_eq!(fallback(&good), Some(0.0), "{metrics}");
    assert_eq!(fallback(&soon), Some(0.0), "{metrics}");
    let soon_left = gauge(
        &metrics,
        &format!("proxy_operator_served_certificate_expiry_seconds{{host=\"{soon}\"}}"),
    )
    .unwrap();
    assert!(
        soon_left > 0.0 && soon_left < 14.0 * 86_400.0,
        "{soon_left}"
    );

    assert!(!raw.contains(SENTINEL), "key material in the status");
    assert!(!metrics.contains(SENTINEL), "key material in the metrics");

    // Fixed: only the good certificate is left. The warnings and their gauges go, and the
    // condition says every host checked is served its certificate.
    let mut fixed = doc.clone();
    fixed["spec"]["tls"] = json!({
        "certDir": certs.display().to_string(),
        "certificates": [{"certFile": "good.pem", "keyFile": "good.key"}]
    });
    // Without a probe Caddy's gate picks a default route, which may be the acme host that has
    // no certificate now: the probe names the good one.
    fixed["spec"]["rollout"]["probes"] = json!([{"host": good, "entryPoint": "web"}]);
    h.put_config(&fixed).await;
    let (raw, _) = support::wait_status(
        &format!("{proxy:?} Ready with no certificate warning"),
        CONVERGE,
        || h.status(),
        |(_, s): &(String, ProxyStatus)| {
            s.phase == Phase::Ready
                && s.last_applied_digest == s.observed_digest
                && s.observed_digest != status.observed_digest
                && s.certificate_warnings.is_empty()
                && s.condition("CertificatesServed")
                    .is_some_and(|c| c.reason == "Served" && c.message.starts_with("1 host(s)"))
        },
        || async { String::new() },
    )
    .await;
    let metrics = h.surface.metrics().encode().unwrap();
    assert_eq!(
        gauge(
            &metrics,
            &format!("proxy_operator_certificate_fallback{{host=\"{good}\"}}")
        ),
        Some(0.0),
        "{metrics}"
    );
    assert!(!metrics.contains(&format!("host=\"{acme}\"")), "{metrics}");
    assert!(!metrics.contains(&format!("host=\"{soon}\"")), "{metrics}");
    assert!(!raw.contains(SENTINEL));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn traefik_fallback_and_expiring_certificates_are_status_warnings_and_metrics() {
    fallback_and_expiry_are_warned_and_a_good_certificate_is_not(ProxyKind::Traefik).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn caddy_fallback_and_expiring_certificates_are_status_warnings_and_metrics() {
    fallback_and_expiry_are_warned_and_a_good_certificate_is_not(ProxyKind::Caddy).await;
}
