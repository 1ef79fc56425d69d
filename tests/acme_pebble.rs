//! ACME for real (issue 14, "Certificates"): the operator renders the proxy's ACME settings from
//! `spec.tls.acme`, the proxy (run by the twin as the operator's `raw_exec` job) gets a
//! certificate from Pebble, Let's Encrypt's ACME test server (Debian's `pebble` package), and
//! the certificate it then serves on the HTTPS entry point chains to Pebble's root, which Pebble
//! regenerates on every start and publishes on its management `/roots/0`.
//!
//! The challenge is exercised: Pebble resolves the test domain through `pebble-challtestsrv`
//! (the same package) answering every A query with 127.0.0.1, and validates on the proxy's
//! entry-point ports (`httpPort` = `web`, `tlsPort` = `websecure`), never 80/443.
//! `PEBBLE_VA_ALWAYS_VALID` is not used.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "edge_cluster/mod.rs"]
mod edge_cluster;
#[path = "support/mod.rs"]
mod support;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use edge_cluster::Cluster;
use proxy_operator::spec::ProxyKind;
use proxy_operator::spec::status::{ConditionStatus, ProxyStatus};
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, ServerName};
use serde_json::json;
use support::{Backend, ChildGuard, free_port};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

const DOMAIN_SUFFIX: &str = "pebble.test";
const HOST: &str = "app.pebble.test";
/// Order, TLS-ALPN-01 validation, finalization and the proxy's reload, on a loaded 2-core
/// machine (Pebble's artificial validation sleeps are off).
const ISSUANCE: Duration = Duration::from_secs(90);

/// A Debian binary from the `pebble` package: `$PEBBLE_DIR/<name>` when set, else on PATH.
/// Panics with the install command when missing: this test never skips silently.
fn pebble_package_bin(name: &str) -> PathBuf {
    let dirs: Vec<PathBuf> = match std::env::var_os("PEBBLE_DIR") {
        Some(dir) => vec![PathBuf::from(dir)],
        None => std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default()).collect(),
    };
    dirs.iter()
        .map(|d| d.join(name))
        .find(|p| p.is_file())
        .unwrap_or_else(|| {
            panic!(
                "{name} is missing (Debian package `pebble`, the ACME test server): as root run \
                 `apt-get update && apt-get install -y pebble` (scripts/bootstrap does it when \
                 run as root), or set PEBBLE_DIR to the directory holding pebble and \
                 pebble-challtestsrv"
            )
        })
}

/// Pebble and its DNS responder on loopback ports, killed by PID when dropped.
struct Pebble {
    /// The ACME directory URL.
    directory: String,
    management: u16,
    /// The self-signed certificate Pebble's own HTTPS listeners present; the proxy's ACME
    /// client must trust it to talk to the directory.
    listener_ca: PathBuf,
    http: reqwest::Client,
    _dns: ChildGuard,
    _pebble: ChildGuard,
}

impl Pebble {
    /// Starts `pebble-challtestsrv` (DNS only: every name is 127.0.0.1) and Pebble validating
    /// HTTP-01 on `http_port` and TLS-ALPN-01 on `tls_port`.
    async fn start(dir: &Path, http_port: u16, tls_port: u16) -> Pebble {
        let ck = rcgen::generate_simple_self_signed(vec![
            "127.0.0.1".to_owned(),
            "localhost".to_owned(),
        ])
        .unwrap();
        let listener_ca = dir.join("pebble-listener.pem");
        let key = dir.join("pebble-listener.key");
        std::fs::write(&listener_ca, ck.cert.pem()).unwrap();
        std::fs::write(&key, ck.signing_key.serialize_pem()).unwrap();

        let dns_port = free_port();
        let mut dns = Command::new(pebble_package_bin("pebble-challtestsrv"));
        dns.args([
            "-dns01",
            &format!("127.0.0.1:{dns_port}"),
            "-http01",
            "",
            "-https01",
            "",
            "-tlsalpn01",
            "",
            "-management",
            &format!("127.0.0.1:{}", free_port()),
            "-defaultIPv4",
            "127.0.0.1",
            "-defaultIPv6",
            "",
        ]);
        let dns = ChildGuard::spawn(dns, &dir.join("challtestsrv.log"));

        let listen = free_port();
        let management = free_port();
        let config = json!({"pebble": {
            "listenAddress": format!("127.0.0.1:{listen}"),
            "managementListenAddress": format!("127.0.0.1:{management}"),
            "certificate": listener_ca.display().to_string(),
            "privateKey": key.display().to_string(),
            "httpPort": http_port,
            "tlsPort": tls_port,
            "ocspResponderURL": "",
            "externalAccountBindingRequired": false
        }});
        let config_path = dir.join("pebble-config.json");
        std::fs::write(&config_path, serde_json::to_vec_pretty(&config).unwrap()).unwrap();
        let mut pebble = Command::new(pebble_package_bin("pebble"));
        pebble
            .arg("-config")
            .arg(&config_path)
            .arg("-dnsserver")
            .arg(format!("127.0.0.1:{dns_port}"))
            .env("PEBBLE_VA_NOSLEEP", "1")
            .env("PEBBLE_WFE_NONCEREJECT", "0");
        let pebble = ChildGuard::spawn(pebble, &dir.join("pebble.log"));

        let http = reqwest::Client::builder()
            .no_proxy()
            // Only for the test's own reads of Pebble's directory and roots on loopback; what
            // is asserted is verified against Pebble's root below.
            .danger_accept_invalid_certs(true)
            .timeout(Duration::from_secs(5))
            .build()
            .unwrap();
        let directory = format!("https://127.0.0.1:{listen}/dir");
        let up = support::eventually(Duration::from_secs(20), || {
            let (http, directory) = (http.clone(), directory.clone());
            async move {
                let resp = http.get(&directory).send().await.ok()?;
                resp.status().is_success().then_some(())
            }
        })
        .await;
        assert!(
            up.is_some(),
            "Pebble's directory {directory} did not answer; log:\n{}\nDNS log:\n{}",
            pebble.log(),
            dns.log()
        );
        Pebble {
            directory,
            management,
            listener_ca,
            http,
            _dns: dns,
            _pebble: pebble,
        }
    }

    /// Pebble's root certificate (`GET /roots/0` on the management listener).
    async fn root(&self) -> CertificateDer<'static> {
        let pem = self
            .http
            .get(format!("https://127.0.0.1:{}/roots/0", self.management))
            .send()
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap();
        CertificateDer::from_pem_slice(&pem).expect("Pebble's /roots/0 is one PEM certificate")
    }

    fn log(&self) -> String {
        self._pebble.log()
    }
}

/// Connects to `127.0.0.1:port` with SNI `host`, verifying the served chain against `root` only
/// (no system roots), then sends `GET /hello`. `Ok(response head)` proves the certificate chains
/// to `root` and names `host`; `Err` says why not (e.g. the proxy's self-signed default).
async fn get_verified(
    port: u16,
    host: &str,
    root: &CertificateDer<'static>,
) -> Result<String, String> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(root.clone()).map_err(|e| format!("root: {e}"))?;
    let config = rustls::ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .map_err(|e| format!("connect: {e}"))?;
    let name = ServerName::try_from(host.to_owned()).map_err(|e| format!("name: {e}"))?;
    let mut tls = connector
        .connect(name, tcp)
        .await
        .map_err(|e| format!("handshake: {e}"))?;
    tls.write_all(
        format!("GET /hello HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .await
    .map_err(|e| format!("write: {e}"))?;
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), tls.read_to_end(&mut answer)).await;
    Ok(String::from_utf8_lossy(&answer).into_owned())
}

/// A script that runs `bin` with its output appended to `<dir>/proxy.log`, so a failure can show
/// the proxy's own words (the twin's executor keeps task logs in its allocation directory).
fn logged(dir: &Path, bin: &Path) -> PathBuf {
    use std::os::unix::fs::PermissionsExt as _;
    let script = dir.join(format!(
        "{}-logged.sh",
        bin.file_name().unwrap().to_string_lossy()
    ));
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\nexec '{}' \"$@\" >>'{}' 2>&1\n",
            bin.display(),
            dir.join("proxy.log").display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    script
}

async fn served_certificate_chains_to_pebble(proxy: ProxyKind, bin: &Path) {
    let cluster = Cluster::start().await;
    let pebble = Pebble::start(cluster.dir.path(), cluster.web, cluster.websecure).await;
    let app = Backend::start("app-backend").await;
    cluster
        .register("app", "app-1", app.port(), "passing")
        .await;
    let command = logged(cluster.dir.path(), bin);
    let mut doc = cluster.doc(proxy, DOMAIN_SUFFIX, &command.display().to_string());
    // Pebble's directory is served with its own certificate: the document trusts that CA
    // (`caRoots`), which the proxy gets through its own mechanism, nothing set by hand.
    doc["spec"]["tls"]["acme"] = json!({
        "email": "proofs@pebble.test",
        "caServer": pebble.directory,
        "caRoots": [pebble.listener_ca.display().to_string()],
    });
    // A probe naming the ACME host (on the plain entry point, so the gate does not wait for
    // issuance) makes it one the operator checks the served certificate of.
    doc["spec"]["rollout"]["probes"] = json!([{"host": HOST, "entryPoint": "web"}]);
    cluster.put_config(&doc).await;
    cluster.wait_ready(proxy).await;

    let root = pebble.root().await;
    let started = Instant::now();
    let mut last = String::new();
    while started.elapsed() < ISSUANCE {
        match get_verified(cluster.websecure, HOST, &root).await {
            Ok(head) => {
                println!(
                    "{proxy:?}: certificate for {HOST} chains to Pebble's root after {:?}",
                    started.elapsed()
                );
                assert!(head.starts_with("HTTP/1.1 200"), "{head}");
                assert!(
                    head.to_ascii_lowercase().contains("x-backend: app-backend"),
                    "served by the backend through the proxy: {head}"
                );
                // The same endpoint does not verify against an unrelated root: the check above
                // is the chain, not a client that accepts anything.
                let other = rcgen::generate_simple_self_signed(vec![HOST.to_owned()]).unwrap();
                let other_root = other.cert.der().clone();
                let refused = get_verified(cluster.websecure, HOST, &other_root).await;
                assert!(
                    refused.as_ref().is_err_and(|e| e.starts_with("handshake")),
                    "a client trusting another root accepted the chain: {refused:?}"
                );
                // The challenge ran on the entry points' ports: the proxy holds neither 80
                // nor 443 (the tests run as root here, where it could).
                let pid = support::pid_listening_on(cluster.websecure);
                for port in [80, 443] {
                    let holder = support::pid_listening_on(port);
                    assert!(
                        pid.is_some() && holder != pid,
                        "{proxy:?} (pid {pid:?}) listens on port {port}"
                    );
                }
                // Pebble's VA validated a challenge against the proxy (no authorization reuse:
                // the account and its first order are new).
                assert!(
                    pebble.log().contains("set VALID by completed challenge"),
                    "Pebble validated no challenge:\n{}",
                    pebble.log()
                );
                // The operator sees it too: once the certificate is served, no warning stands
                // for the host (a fallback seen before issuance is looked at again soon).
                support::wait_status(
                    "no certificate warning once Pebble's certificate is served",
                    ISSUANCE,
                    || cluster.status(),
                    |s: &ProxyStatus| {
                        s.certificate_warnings.is_empty()
                            && s.condition("CertificatesServed")
                                .is_some_and(|c| c.status == ConditionStatus::True)
                    },
                    || async { String::new() },
                )
                .await;
                return;
            }
            Err(e) => last = e,
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    panic!(
        "{proxy:?} served no certificate chaining to Pebble's root within {ISSUANCE:?}: {last}\n\
         Pebble log:\n{}\nproxy log:\n{}",
        pebble.log(),
        std::fs::read_to_string(cluster.dir.path().join("proxy.log")).unwrap_or_default()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn traefik_gets_its_certificate_from_pebble_over_tls_alpn_and_serves_it() {
    // `caRoots` reaches lego (Traefik's ACME client) as LEGO_CA_CERTIFICATES in the task's env.
    served_certificate_chains_to_pebble(ProxyKind::Traefik, &support::traefik_bin()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn caddy_gets_its_certificate_from_pebble_and_serves_it() {
    // `caRoots` is the ACME issuer's `trusted_roots_pem_files`. Caddy picks HTTP-01 or
    // TLS-ALPN-01 itself; both ports are the entry points'.
    served_certificate_chains_to_pebble(ProxyKind::Caddy, &support::caddy_bin()).await;
}
