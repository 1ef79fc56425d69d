//! The served-certificate check: the pure choice of hosts and verdicts, and the handshake
//! against in-process TLS servers standing in for the proxy's entry point.

use std::path::Path;
use std::time::Instant;

use rustls::pki_types::PrivateKeyDer;
use rustls::pki_types::pem::PemObject as _;

use super::*;
use crate::metrics::test_cert_pem;

const DAY: i64 = 86_400;

fn info(subject: &str, issuer: &str, sans: &[&str], not_after: i64, key: &[u8]) -> CertificateInfo {
    CertificateInfo {
        subject: subject.to_owned(),
        issuer: issuer.to_owned(),
        sans: sans.iter().map(|s| (*s).to_owned()).collect(),
        not_before: 0,
        not_after,
        public_key_der: key.to_vec(),
    }
}

fn target(host: &str, expect: Expect) -> Target {
    Target {
        host: host.to_owned(),
        address: "127.0.0.1:1".to_owned(),
        expect,
    }
}

fn file_expect(key: &[u8]) -> Expect {
    Expect::File {
        index: 0,
        path: "/certs/app.pem".to_owned(),
        public_key_der: key.to_vec(),
    }
}

#[test]
fn traefiks_default_certificate_is_a_fallback_whatever_the_document_expects() {
    let default = info(
        "CN=TRAEFIK DEFAULT CERT",
        "CN=TRAEFIK DEFAULT CERT",
        &["1f2e.traefik.default"],
        100 * DAY,
        b"k",
    );
    for expect in [file_expect(b"k"), Expect::Acme, Expect::Named] {
        let verdict = classify(
            &target("app.example.test", expect.clone()),
            &Served::Leaf(default.clone()),
            0,
        );
        assert!(
            matches!(&verdict, Verdict::Fallback { served: Some(_), why } if why.contains("Traefik's self-signed default")),
            "{expect:?}: {verdict:?}"
        );
    }
}

#[test]
fn a_certificate_file_is_expected_only_with_its_own_key_and_expiring_under_fourteen_days() {
    let t = target("app.example.test", file_expect(b"file-key"));
    let leaf = |not_after, key: &[u8]| {
        Served::Leaf(info(
            "CN=app",
            "CN=ca",
            &["app.example.test"],
            not_after,
            key,
        ))
    };
    assert!(matches!(
        classify(&t, &leaf(15 * DAY, b"file-key"), 0),
        Verdict::Expected(_)
    ));
    assert!(matches!(
        classify(&t, &leaf(14 * DAY - 1, b"file-key"), 0),
        Verdict::Expiring(_)
    ));
    assert!(
        matches!(
            classify(&t, &leaf(-DAY, b"file-key"), 0),
            Verdict::Expiring(_)
        ),
        "expired is the most urgent expiry"
    );
    assert!(
        matches!(
            classify(&t, &leaf(100 * DAY, b"other-key"), 0),
            Verdict::Fallback { why, .. } if why.contains("another certificate")
        ),
        "the same name under another key is not the file's certificate"
    );
}

#[test]
fn an_acme_host_is_expected_when_a_certificate_names_it_even_by_wildcard() {
    let t = target("app.example.test", Expect::Acme);
    let names = |sans: &[&str]| {
        classify(
            &t,
            &Served::Leaf(info("CN=x", "CN=Pebble", sans, 60 * DAY, b"k")),
            0,
        )
    };
    assert!(matches!(names(&["APP.example.test"]), Verdict::Expected(_)));
    assert!(matches!(names(&["*.example.test"]), Verdict::Expected(_)));
    assert!(matches!(names(&["*.test"]), Verdict::Fallback { .. }));
    assert!(matches!(
        names(&["other.example.test"]),
        Verdict::Fallback { why, .. } if why.contains("does not name it")
    ));
}

#[test]
fn caddys_internal_ca_is_a_fallback_only_where_files_or_acme_were_asked_for() {
    let internal = Served::Leaf(info(
        "CN=",
        "CN=Caddy Local Authority - ECC Intermediate",
        &["app.example.test"],
        60 * DAY,
        b"k",
    ));
    assert!(matches!(
        classify(&target("app.example.test", Expect::Acme), &internal, 0),
        Verdict::Fallback { .. }
    ));
    assert!(matches!(
        classify(&target("app.example.test", Expect::Named), &internal, 0),
        Verdict::Expected(_)
    ));
}

#[test]
fn a_refused_handshake_is_a_fallback_with_nothing_served_and_silence_is_unreachable() {
    let t = target("app.example.test", Expect::Acme);
    let refused = classify(&t, &Served::Refused("alert".into()), 0);
    assert!(matches!(&refused, Verdict::Fallback { served: None, .. }));
    let checked = Checked {
        target: t.clone(),
        verdict: refused,
    };
    let gauge = checked.gauge().unwrap();
    assert!(gauge.fallback && gauge.not_after.is_none());
    let unreachable = Checked {
        verdict: classify(&t, &Served::Unreachable("refused".into()), 0),
        target: t,
    };
    assert!(matches!(unreachable.verdict, Verdict::Unreachable(_)));
    assert!(unreachable.gauge().is_none(), "nothing is known: no gauge");
    let w = unreachable.warning(0).unwrap();
    assert_eq!(w.kind, CertificateWarningKind::CertificateUnchecked);
}

#[test]
fn warnings_name_the_host_what_was_served_the_expected_source_and_the_fix() {
    let fallback = Checked {
        target: target("app.example.test", file_expect(b"k")),
        verdict: Verdict::Fallback {
            served: None,
            why: "no certificate".into(),
        },
    };
    let w = fallback.warning(0).unwrap();
    assert_eq!(w.kind, CertificateWarningKind::CertificateFallback);
    assert_eq!(w.host, "app.example.test");
    for needle in [
        "app.example.test",
        "no certificate",
        "spec.tls.certificates[0] (/certs/app.pem)",
        "proxy's log",
    ] {
        assert!(w.message.contains(needle), "{needle}: {}", w.message);
    }
    let leaf = info("CN=a", "CN=b", &["app.example.test"], 5 * DAY + 10, b"k");
    let expiring = Checked {
        target: target("app.example.test", Expect::Acme),
        verdict: Verdict::Expiring(leaf.clone()),
    };
    let w = expiring.warning(0).unwrap();
    assert_eq!(w.kind, CertificateWarningKind::CertificateExpiring);
    assert_eq!(w.days_left, Some(5));
    assert_eq!(w.not_after, Some(leaf.not_after_rfc3339()));
    assert!(w.message.contains("5 days left"), "{}", w.message);
    let fine = Checked {
        target: target("app.example.test", Expect::Acme),
        verdict: Verdict::Expected(leaf),
    };
    assert_eq!(fine.warning(0), None);
    assert_eq!(fine.gauge().map(|g| g.fallback), Some(false));
}

/// A document for Traefik with `websecure` on `port`, the given certificate pairs (cert, key)
/// and TLS route probes for `probe_hosts`; `acme` adds an ACME resolver.
pub(crate) fn spec(
    port: u16,
    pairs: &[(&Path, &Path)],
    probe_hosts: &[&str],
    acme: bool,
) -> ValidatedSpec {
    let mut doc = format!(
        "apiVersion: proxy-operator.io/v1alpha1
kind: ProxyConfig
spec:
  proxy: traefik
  entryPoints:
    web: {{address: \":18080\"}}
    websecure: {{address: \":{port}\"}}
  tls:
    certDir: /tmp
"
    );
    if !pairs.is_empty() {
        doc.push_str("    certificates:\n");
        for (cert, key) in pairs {
            doc.push_str(&format!(
                "      - {{certFile: {}, keyFile: {}}}\n",
                cert.display(),
                key.display()
            ));
        }
    }
    if acme {
        doc.push_str("    acme: {email: ops@example.test}\n");
    }
    if !probe_hosts.is_empty() {
        doc.push_str("  rollout:\n    probes:\n");
        for host in probe_hosts {
            doc.push_str(&format!(
                "      - {{host: {host}, entryPoint: websecure}}\n"
            ));
        }
    }
    crate::spec::load(doc.as_bytes()).unwrap()
}

#[test]
fn targets_are_the_files_dns_names_then_the_tls_probe_hosts_once_each_on_websecure() {
    let leaf = info(
        "CN=a",
        "CN=a",
        &[
            "a.example.test",
            "*.example.test",
            "127.0.0.1",
            "B.example.test",
        ],
        0,
        b"k",
    );
    let (c, k) = (Path::new("/c/a.pem"), Path::new("/c/a.key"));
    let s = spec(
        18443,
        &[(c, k)],
        &["b.example.test", "p.example.test"],
        true,
    );
    let t = targets(&s, "10.0.0.5", &[Some(leaf)]);
    let hosts: Vec<&str> = t.iter().map(|t| t.host.as_str()).collect();
    assert_eq!(
        hosts,
        ["a.example.test", "b.example.test", "p.example.test"]
    );
    assert!(t.iter().all(|t| t.address == "10.0.0.5:18443"));
    assert!(
        matches!(t[1].expect, Expect::File { index: 0, .. }),
        "the file wins"
    );
    assert_eq!(t[2].expect, Expect::Acme);

    let unread = targets(&s, "10.0.0.5", &[None]);
    assert_eq!(
        unread.iter().map(|t| t.host.as_str()).collect::<Vec<_>>(),
        ["b.example.test", "p.example.test"],
        "a file the operator cannot read names no host"
    );

    let no_source = spec(18443, &[], &["p.example.test"], false);
    assert!(
        targets(&no_source, "127.0.0.1", &[]).is_empty(),
        "without files or ACME nothing failed to load: the default certificate is what was asked for"
    );
    let named = spec(18443, &[(c, k)], &["p.example.test"], false);
    assert_eq!(
        targets(&named, "127.0.0.1", &[None])[0].expect,
        Expect::Named
    );
}

#[test]
fn no_more_than_max_hosts_are_checked() {
    let sans: Vec<String> = (0..40).map(|i| format!("h{i}.example.test")).collect();
    let sans: Vec<&str> = sans.iter().map(String::as_str).collect();
    let leaf = info("CN=a", "CN=a", &sans, 0, b"k");
    let s = spec(
        18443,
        &[(Path::new("/c/a.pem"), Path::new("/c/a.key"))],
        &[],
        false,
    );
    assert_eq!(targets(&s, "127.0.0.1", &[Some(leaf)]).len(), MAX_HOSTS);
}

// === the handshake, against in-process TLS servers ===

/// Resolves no certificate for any name: the handshake ends with an alert, as Caddy's does for
/// a name it has no certificate for.
#[derive(Debug)]
struct NoCertificate;

impl rustls::server::ResolvesServerCert for NoCertificate {
    fn resolve(
        &self,
        _: rustls::server::ClientHello<'_>,
    ) -> Option<Arc<rustls::sign::CertifiedKey>> {
        None
    }
}

/// A TLS server on a free loopback port: `Some((cert, key))` serves that certificate for every
/// name, `None` refuses every handshake.
pub(crate) async fn tls_server(pair: Option<(&str, &str)>) -> (u16, tokio::task::JoinHandle<()>) {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth();
    let config = match pair {
        Some((cert, key)) => builder
            .with_single_cert(
                vec![CertificateDer::from_pem_slice(cert.as_bytes()).unwrap()],
                PrivateKeyDer::from_pem_slice(key.as_bytes()).unwrap(),
            )
            .unwrap(),
        None => builder.with_cert_resolver(Arc::new(NoCertificate)),
    };
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let task = tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                if let Ok(mut tls) = acceptor.accept(tcp).await {
                    let _ = tls.shutdown().await;
                }
            });
        }
    });
    (port, task)
}

/// Writes a certificate file and its key under `dir`.
pub(crate) fn write_pair(
    dir: &Path,
    name: &str,
    cert: &str,
    key: &str,
) -> (std::path::PathBuf, std::path::PathBuf) {
    let (c, k) = (
        dir.join(format!("{name}.pem")),
        dir.join(format!("{name}.key")),
    );
    std::fs::write(&c, cert).unwrap();
    std::fs::write(&k, key).unwrap();
    (c, k)
}

#[tokio::test]
async fn the_entry_point_serving_the_files_certificate_is_expected_and_one_serving_another_is_a_fallback()
 {
    let dir = tempfile::tempdir().unwrap();
    let now = crate::metrics::unix_now();
    let (cert, key) = test_cert_pem(&["app.example.test"], now + 90 * DAY);
    let (c, k) = write_pair(dir.path(), "app", &cert, &key);
    let (port, server) = tls_server(Some((&cert, &key))).await;
    let checked = check(&spec(port, &[(&c, &k)], &[], false), "127.0.0.1", now).await;
    assert_eq!(checked.len(), 1);
    assert!(
        matches!(checked[0].verdict, Verdict::Expected(_)),
        "{checked:?}"
    );
    server.abort();

    // The proxy serves a certificate of its own for the name instead.
    let (other_cert, other_key) = test_cert_pem(&["app.example.test"], now + 90 * DAY);
    let (port, server) = tls_server(Some((&other_cert, &other_key))).await;
    let checked = check(&spec(port, &[(&c, &k)], &[], false), "127.0.0.1", now).await;
    assert!(
        matches!(
            &checked[0].verdict,
            Verdict::Fallback {
                served: Some(_),
                ..
            }
        ),
        "{checked:?}"
    );
    server.abort();
}

#[tokio::test]
async fn a_served_certificate_expiring_in_five_days_is_a_warning_with_its_not_after() {
    let dir = tempfile::tempdir().unwrap();
    let now = crate::metrics::unix_now();
    let (cert, key) = test_cert_pem(&["soon.example.test"], now + 5 * DAY + 60);
    let (c, k) = write_pair(dir.path(), "soon", &cert, &key);
    let (port, server) = tls_server(Some((&cert, &key))).await;
    let checked = check(&spec(port, &[(&c, &k)], &[], false), "127.0.0.1", now).await;
    let w = checked[0].warning(now).unwrap();
    assert_eq!(w.kind, CertificateWarningKind::CertificateExpiring);
    assert_eq!(w.days_left, Some(5));
    assert_eq!(
        checked[0].gauge().unwrap().not_after,
        Some(now + 5 * DAY + 60)
    );
    server.abort();
}

#[tokio::test]
async fn a_refused_handshake_for_an_acme_host_is_a_fallback_naming_the_alert() {
    let (port, server) = tls_server(None).await;
    let now = crate::metrics::unix_now();
    let checked = check(
        &spec(port, &[], &["app.example.test"], true),
        "127.0.0.1",
        now,
    )
    .await;
    assert_eq!(checked.len(), 1);
    let w = checked[0].warning(now).unwrap();
    assert_eq!(w.kind, CertificateWarningKind::CertificateFallback, "{w:?}");
    assert!(w.message.contains("handshake was refused"), "{}", w.message);
    assert!(w.message.contains("spec.tls.acme"), "{}", w.message);
    server.abort();
}

#[tokio::test]
async fn a_closed_port_and_a_silent_one_are_unreachable_within_the_time_out() {
    // A closed port: refused at once.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    let now = crate::metrics::unix_now();
    let checked = check(
        &spec(port, &[], &["app.example.test"], true),
        "127.0.0.1",
        now,
    )
    .await;
    assert!(
        matches!(checked[0].verdict, Verdict::Unreachable(_)),
        "{checked:?}"
    );

    // A port that accepts and never answers: the time-out ends the look.
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = silent.local_addr().unwrap().port();
    let holder = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((tcp, _)) = silent.accept().await {
            held.push(tcp);
        }
    });
    let started = Instant::now();
    let checked = check(
        &spec(port, &[], &["app.example.test"], true),
        "127.0.0.1",
        now,
    )
    .await;
    assert!(
        matches!(&checked[0].verdict, Verdict::Unreachable(why) if why.contains("within")),
        "{checked:?}"
    );
    assert!(started.elapsed() < CHECK_TIMEOUT + Duration::from_secs(2));
    holder.abort();
}
