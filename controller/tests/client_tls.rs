//! TLS between the clients and a server: CA file and directory, mutual TLS, server name
//! override, skip-verify, and a clear error for a certificate from an unknown CA.
//! The server is a tiny TLS-terminating HTTP/1.1 responder answering `/v1/status/leader`.
#![allow(clippy::unwrap_used, clippy::panic)] // tests fail loudly

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use proxy_operator::consul::{ConsulApi, ConsulClient};
use proxy_operator::nomad::{NomadApi, NomadClient};
use proxy_operator::transport::{Api, ClientConfig};
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

struct Ca {
    pem: String,
    der: CertificateDer<'static>,
    issuer: Issuer<'static, KeyPair>,
}

fn ca(name: &str) -> Ca {
    let mut params = CertificateParams::new(Vec::new()).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.distinguished_name.push(DnType::CommonName, name);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let key = KeyPair::generate().unwrap();
    let cert = params.self_signed(&key).unwrap();
    Ca {
        pem: cert.pem(),
        der: cert.der().clone(),
        issuer: Issuer::new(params, key),
    }
}

struct Leaf {
    cert_pem: String,
    key_pem: String,
    der: CertificateDer<'static>,
    key_der: Vec<u8>,
}

fn leaf(ca: &Ca, names: &[&str]) -> Leaf {
    let mut params =
        CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>()).unwrap();
    params.distinguished_name.push(DnType::CommonName, names[0]);
    params.use_authority_key_identifier_extension = true;
    let key = KeyPair::generate().unwrap();
    let cert = params.signed_by(&key, &ca.issuer).unwrap();
    Leaf {
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
        der: cert.der().clone(),
        key_der: key.serialize_der(),
    }
}

/// Serves `/v1/status/leader` over TLS until dropped; with `client_ca`, client certificates
/// signed by it are required.
async fn serve(server: &Leaf, client_ca: Option<&Ca>) -> SocketAddr {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let builder = rustls::ServerConfig::builder();
    let builder = match client_ca {
        Some(ca) => {
            let mut roots = rustls::RootCertStore::empty();
            roots.add(ca.der.clone()).unwrap();
            let verifier = rustls::server::WebPkiClientVerifier::builder(Arc::new(roots))
                .build()
                .unwrap();
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(server.key_der.clone()));
    let config = builder
        .with_single_cert(vec![server.der.clone()], key)
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let mut buf = Vec::new();
                let mut chunk = [0u8; 1024];
                while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                    match tls.read(&mut chunk).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                }
                let body = "\"10.0.0.1:8300\"";
                let response = format!(
                    "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nX-Consul-Index: 1\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = tls.write_all(response.as_bytes()).await;
                let _ = tls.shutdown().await;
            });
        }
    });
    addr
}

fn write(dir: &tempfile::TempDir, name: &str, content: &str) -> PathBuf {
    let path = dir.path().join(name);
    std::fs::write(&path, content).unwrap();
    path
}

fn config(api: Api, url: &str) -> ClientConfig {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let mut c = ClientConfig::for_address(api, url).unwrap();
    c.retry.max_retries = 0;
    c
}

#[tokio::test]
async fn the_server_certificate_is_verified_against_the_configured_ca_file_and_directory() {
    let ca = ca("test CA");
    let server = leaf(&ca, &["localhost"]);
    let addr = serve(&server, None).await;
    let dir = tempfile::tempdir().unwrap();
    let mut c = config(Api::Consul, &format!("https://localhost:{}", addr.port()));
    c.tls.ca_file = Some(write(&dir, "ca.pem", &ca.pem));
    assert_eq!(
        ConsulClient::new(&c)
            .unwrap()
            .status_leader()
            .await
            .unwrap(),
        "10.0.0.1:8300"
    );

    let cas = tempfile::tempdir().unwrap();
    write(&cas, "README", "not a certificate");
    write(&cas, "ca.pem", &ca.pem);
    let mut c = config(Api::Nomad, &format!("https://localhost:{}", addr.port()));
    c.tls.ca_path = Some(cas.path().to_path_buf());
    assert_eq!(
        NomadClient::new(&c).unwrap().status_leader().await.unwrap(),
        "10.0.0.1:8300"
    );
}

#[tokio::test]
async fn a_certificate_from_an_unknown_ca_fails_with_an_error_naming_the_ca_problem() {
    let trusted = ca("trusted CA");
    let rogue = ca("rogue CA");
    let server = leaf(&rogue, &["localhost"]);
    let addr = serve(&server, None).await;
    let dir = tempfile::tempdir().unwrap();
    let mut c = config(Api::Consul, &format!("https://localhost:{}", addr.port()));
    c.tls.ca_file = Some(write(&dir, "ca.pem", &trusted.pem));
    let err = ConsulClient::new(&c)
        .unwrap()
        .status_leader()
        .await
        .unwrap_err();
    let text = err.to_string();
    assert!(
        text.contains("unknown CA") && text.contains("CONSUL_CACERT"),
        "{text}"
    );
    assert_eq!(err.status(), None, "no HTTP answer");
    assert!(
        !err.is_retryable(),
        "a certificate problem is configuration, not weather"
    );

    // The same server is accepted with verification disabled.
    let mut c = config(Api::Consul, &format!("https://localhost:{}", addr.port()));
    c.tls.skip_verify = true;
    assert_eq!(
        ConsulClient::new(&c)
            .unwrap()
            .status_leader()
            .await
            .unwrap(),
        "10.0.0.1:8300"
    );
}

#[tokio::test]
async fn mutual_tls_requires_and_accepts_the_client_certificate() {
    let ca = ca("cluster CA");
    let server = leaf(&ca, &["localhost"]);
    let client = leaf(&ca, &["cli.dc1.consul"]);
    let addr = serve(&server, Some(&ca)).await;
    let dir = tempfile::tempdir().unwrap();
    let ca_file = write(&dir, "ca.pem", &ca.pem);

    let mut without = config(Api::Nomad, &format!("https://localhost:{}", addr.port()));
    without.tls.ca_file = Some(ca_file.clone());
    let err = NomadClient::new(&without)
        .unwrap()
        .status_leader()
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("requires a client certificate") && !err.is_retryable(),
        "{err}"
    );

    let mut with = without.clone();
    with.tls.client_cert = Some(write(&dir, "cli.pem", &client.cert_pem));
    with.tls.client_key = Some(write(&dir, "cli-key.pem", &client.key_pem));
    assert_eq!(
        NomadClient::new(&with)
            .unwrap()
            .status_leader()
            .await
            .unwrap(),
        "10.0.0.1:8300"
    );
}

#[tokio::test]
async fn the_tls_server_name_setting_verifies_a_name_other_than_the_address() {
    let ca = ca("cluster CA");
    let server = leaf(&ca, &["server.dc1.consul"]);
    let addr = serve(&server, None).await;
    let dir = tempfile::tempdir().unwrap();
    let mut c = config(Api::Consul, &format!("https://127.0.0.1:{}", addr.port()));
    c.tls.ca_file = Some(write(&dir, "ca.pem", &ca.pem));
    let err = ConsulClient::new(&c)
        .unwrap()
        .status_leader()
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("not valid for this host name"),
        "{err}"
    );
    c.tls.server_name = Some("server.dc1.consul".into());
    assert_eq!(
        ConsulClient::new(&c)
            .unwrap()
            .status_leader()
            .await
            .unwrap(),
        "10.0.0.1:8300"
    );
}

#[test]
fn unusable_tls_material_is_reported_with_its_path() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = config(Api::Consul, "https://localhost:8501");
    c.tls.ca_file = Some(write(&dir, "ca.pem", "garbage"));
    let err = ConsulClient::new(&c).unwrap_err();
    assert!(err.to_string().contains("ca.pem"), "{err}");
    let mut c = config(Api::Consul, "https://localhost:8501");
    c.tls.client_cert = Some(dir.path().join("missing.pem"));
    let err = ConsulClient::new(&c).unwrap_err();
    assert!(err.to_string().contains("needs both"), "{err}");
}
