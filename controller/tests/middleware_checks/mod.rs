//! The HTTP behaviour of issue 14's middlewares, asserted one way for every proxy: each check
//! takes clients and URLs that reach the app (a `support::Backend` named `app`) through the
//! proxy under test. Included with `#[path = "middleware_checks/mod.rs"] mod checks;` by test
//! crates that also declare `traefik_harness` (`render_common/traefik.rs`, for its `answer`):
//! `caddy_middlewares.rs`, and meant for `policy_traefik_real.rs`, which asserts the same
//! behaviour through Traefik.
#![allow(dead_code)]

use std::path::Path;
use std::sync::Arc;

use reqwest::{Client, Method};
use serde_json::Value;

/// What a hand-rolled auth service answers: status, headers, body.
pub type Answer = (u16, Vec<(String, String)>, String);

/// A header of a request head, by lowercased name.
pub fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

/// The auth service's verdict on a request head (lowercased header names), chosen by the
/// client's `X-Test-Verdict`: none → 401 with a challenge, `ok` → 200 vouching for `alice`
/// (plus a header the proxy must not copy), `anonymous-ok` → 200 vouching for no one,
/// anything else → 403.
pub fn auth_verdict(headers: &[(String, String)]) -> Answer {
    match header(headers, "x-test-verdict") {
        None => (
            401,
            vec![("WWW-Authenticate".into(), "Bearer realm=\"sso\"".into())],
            "login first".into(),
        ),
        Some("ok") => (
            200,
            vec![
                ("X-Auth-User".into(), "alice".into()),
                ("X-Not-Copied".into(), "1".into()),
            ],
            String::new(),
        ),
        Some("anonymous-ok") => (200, vec![], String::new()),
        Some(_) => (403, vec![], "denied by auth".into()),
    }
}

/// Forward auth with `authResponseHeaders: [X-Auth-User]` in front of the app, its service
/// answering [`auth_verdict`]: 401 and 403 reach the client as the auth service wrote them,
/// 200 lets the request through with only the listed header copied, and a client cannot
/// forge that header.
pub async fn forward_auth_verdicts_reach_the_client(c: &Client, method: Method, url: &str) {
    let send = |verdict: Option<&str>, forged: Option<&str>| {
        let mut req = c.request(method.clone(), url);
        if let Some(v) = verdict {
            req = req.header("X-Test-Verdict", v);
        }
        if let Some(f) = forged {
            req = req.header("X-Auth-User", f);
        }
        req.send()
    };
    let anonymous = send(None, None).await.unwrap();
    assert_eq!(anonymous.status(), 401);
    assert_eq!(
        anonymous.headers()["www-authenticate"],
        "Bearer realm=\"sso\""
    );
    assert!(anonymous.headers().get("x-backend").is_none());
    assert_eq!(anonymous.text().await.unwrap(), "login first");

    let denied = send(Some("no"), None).await.unwrap();
    assert_eq!(denied.status(), 403);
    assert_eq!(denied.text().await.unwrap(), "denied by auth");

    let ok = send(Some("ok"), Some("mallory")).await.unwrap();
    assert_eq!(ok.status(), 200);
    assert_eq!(ok.headers()["x-backend"], "app");
    let seen: Value = ok.json().await.unwrap();
    assert_eq!(seen["headers"]["x-auth-user"], "alice", "{seen}");
    assert!(
        seen["headers"].get("x-not-copied").is_none(),
        "only the listed headers: {seen}"
    );

    // An auth service that vouches for no user: the client's own value is dropped too.
    let forged = send(Some("anonymous-ok"), Some("mallory")).await.unwrap();
    assert_eq!(forged.status(), 200);
    let seen: Value = forged.json().await.unwrap();
    assert!(seen["headers"].get("x-auth-user").is_none(), "{seen}");
}

/// `maxRequestBodyBytes: 1000`: 2000 bytes get 413, 10 bytes reach the app.
pub async fn an_oversized_body_gets_413(c: &Client, url: &str) {
    let big = c.post(url).body(vec![b'x'; 2000]).send().await.unwrap();
    assert_eq!(big.status(), 413);
    let small = c.post(url).body(vec![b'x'; 10]).send().await.unwrap();
    assert_eq!(small.status(), 200);
    assert_eq!(small.headers()["x-backend"], "app");
    let seen: Value = small.json().await.unwrap();
    assert_eq!(
        seen["bodyBytes"], 10,
        "the app got the whole small body: {seen}"
    );
}

/// Compression with a small minimum: gzip with `Accept-Encoding: gzip`, none without.
pub async fn gzip_only_for_clients_that_accept_it(c: &Client, url: &str) {
    let gz = c
        .get(url)
        .header("Accept-Encoding", "gzip")
        .send()
        .await
        .unwrap();
    assert_eq!(gz.status(), 200);
    assert_eq!(gz.headers()["content-encoding"], "gzip");
    let bytes = gz.bytes().await.unwrap();
    assert_eq!(&bytes[..2], &[0x1f, 0x8b], "a gzip stream");

    let plain = c.get(url).send().await.unwrap();
    assert!(plain.headers().get("content-encoding").is_none());
    let body: Value = plain.json().await.unwrap();
    assert_eq!(body["backend"], "app");
}

/// `requiredHeaders: <required>`: 403 when any is missing or empty, the app with all of them.
pub async fn a_missing_or_empty_required_header_gets_403(c: &Client, url: &str, required: &[&str]) {
    let with = |present: &[(&str, &str)]| {
        let mut req = c.get(url);
        for (k, v) in present {
            req = req.header(*k, *v);
        }
        req.send()
    };
    let missing = with(&[]).await.unwrap();
    assert_eq!(missing.status(), 403);
    assert!(missing.headers().get("x-backend").is_none());
    let all: Vec<(&str, &str)> = required.iter().map(|h| (*h, "v")).collect();
    for i in 0..required.len() {
        let mut one_missing = all.clone();
        one_missing.remove(i);
        let r = with(&one_missing).await.unwrap();
        assert_eq!(r.status(), 403, "without {}", required[i]);
        let mut empty = all.clone();
        empty[i].1 = "";
        let r = with(&empty).await.unwrap();
        assert_eq!(
            r.status(),
            403,
            "an empty {} counts as missing",
            required[i]
        );
    }
    let ok = with(&all).await.unwrap();
    assert_eq!(ok.status(), 200);
    assert_eq!(ok.headers()["x-backend"], "app");
}

/// `ipDenyList` holding `denied`'s address: 403 for it (also for a host no route knows, not
/// 404), the app for `other`.
pub async fn a_denied_network_gets_403(denied: &Client, other: &Client, url: &str, unknown: &str) {
    let r = denied.get(url).send().await.unwrap();
    assert_eq!(r.status(), 403);
    assert!(r.headers().get("x-backend").is_none());
    let r = other.get(url).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["x-backend"], "app");
    let r = denied.get(unknown).send().await.unwrap();
    assert_eq!(r.status(), 403);
}

/// A certificate for `localhost` signed by `ca`, written to `<dir>/<name>.crt` and `.key`.
fn leaf(
    dir: &Path,
    name: &str,
    ca: &rcgen::Issuer<'_, rcgen::KeyPair>,
) -> (rustls_pki_types::CertificateDer<'static>, Vec<u8>) {
    let params = rcgen::CertificateParams::new(vec!["localhost".to_string()]).unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = params.signed_by(&key, ca).unwrap();
    std::fs::write(dir.join(format!("{name}.crt")), cert.pem()).unwrap();
    std::fs::write(dir.join(format!("{name}.key")), key.serialize_pem()).unwrap();
    (cert.der().clone(), key.serialize_der())
}

/// An HTTPS auth service on `localhost` (127.0.0.1) that vouches for `tls-alice`, its
/// certificate signed by a private CA written to `<dir>/ca.pem`. With `require_client_cert`, it
/// refuses the handshake unless the client presents a certificate of the same CA, as
/// `<dir>/client.crt` and `<dir>/client.key` hold.
pub async fn https_auth_service(dir: &Path, require_client_cert: bool) -> std::net::SocketAddr {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let mut params = rcgen::CertificateParams::new(Vec::new()).unwrap();
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let ca_cert = params.self_signed(&ca_key).unwrap();
    std::fs::write(dir.join("ca.pem"), ca_cert.pem()).unwrap();
    let ca = rcgen::Issuer::new(params, ca_key);
    let (server_der, server_key) = leaf(dir, "server", &ca);
    leaf(dir, "client", &ca);
    let builder = rustls::ServerConfig::builder();
    let builder = if require_client_cert {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(ca_cert.der().clone()).unwrap();
        let verifier = rustls::server::WebPkiClientVerifier::builder(Arc::new(roots))
            .build()
            .unwrap();
        builder.with_client_cert_verifier(verifier)
    } else {
        builder.with_no_client_auth()
    };
    let key = rustls_pki_types::PrivateKeyDer::Pkcs8(server_key.into());
    let config = builder.with_single_cert(vec![server_der], key).unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                if let Ok(tls) = acceptor.accept(tcp).await {
                    let verdict = |_: usize, _: &str, _: &[(String, String)]| {
                        Some((
                            200,
                            vec![("X-Auth-User".into(), "tls-alice".into())],
                            String::new(),
                        ))
                    };
                    crate::traefik_harness::answer(tls, 0, &verdict).await;
                }
            });
        }
    });
    addr
}
