//! The certificate the proxy serves, looked at the way a client sees it (issue 14,
//! "Certificates"): a certificate file that did not load, or an ACME order that failed, is
//! never an error of the proxy. Traefik logs it and serves its self-signed `TRAEFIK DEFAULT
//! CERT`; Caddy 2.11 has no fallback and refuses the handshake for that name (a TLS alert).
//! Neither shows in the health gate, so the operator asks the entry point itself.
//!
//! # Which hosts are checked
//! Decided from the document alone (no catalog read), at most [`MAX_HOSTS`]:
//! - every DNS name (subjectAltName, wildcards left out) of each `spec.tls.certificates` file
//!   the operator can read; the proxy must serve exactly that certificate (same public key);
//! - the host of every route probe (`spec.rollout.probes`, whichever entry point it uses: the
//!   name is routed, and its certificate is the same on every TLS entry point), when the
//!   document has a certificate source (files or ACME): with ACME the proxy must serve a
//!   certificate that names the host and is not its fallback; without ACME, one of the files
//!   must name it. ACME names are therefore checked only when a probe names them (a probe on
//!   the plain entry point is enough, and does not fail the gate while ACME is pending).
//!
//! Every host is asked on the first TLS entry point (`websecure`): both proxies keep one
//! certificate store for every entry point.
//!
//! # Bounds
//! Each handshake has [`CHECK_TIMEOUT`] in all (connect included) and the hosts are asked
//! concurrently, so a check takes at most that long. Nothing but the handshake is read, and
//! rustls caps each handshake message. The chain is not verified: this is an inspection, and a
//! self-signed or private-CA certificate is a valid answer. Key files are never opened.
//!
//! [`targets`] and [`classify`] are pure; [`check`] is the IO around them.

use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::{CertificateDer, ServerName};
use tokio::io::AsyncWriteExt as _;

use crate::metrics::{self, CertificateInfo};
use crate::spec::ValidatedSpec;
use crate::spec::status::{CertificateWarning, CertificateWarningKind};

/// A served certificate expiring within this many days is a warning (issue 14).
pub const EXPIRY_WARNING_DAYS: i64 = 14;
/// The longest one host's check takes: connect and handshake.
pub const CHECK_TIMEOUT: Duration = Duration::from_secs(3);
/// The most hosts one check asks for (certificate files' names first, then probe hosts); the
/// rest are left out, so neither the check nor the metric's `host` label grows with the
/// document.
pub const MAX_HOSTS: usize = 16;
/// Certificate files larger than this are not read: a PEM chain is a few KiB.
const MAX_CERT_FILE_BYTES: u64 = 1 << 20;
/// The subject common name of Traefik's self-signed fallback certificate
/// (`pkg/tls/generate` in Traefik's source).
pub const TRAEFIK_DEFAULT_CN: &str = "TRAEFIK DEFAULT CERT";
/// The issuer of certificates from Caddy's internal CA, which serves nothing unless told to.
const CADDY_INTERNAL_ISSUER: &str = "Caddy Local Authority";

/// Errors of one look at a served certificate. Each names the step that failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The host is not a DNS name a client could send as SNI.
    #[error("{0:?} is not a valid TLS server name")]
    ServerName(String),
    /// The TLS client could not be configured (never expected with the ring provider).
    #[error("failed to configure TLS: {0}")]
    Config(#[source] rustls::Error),
    /// The entry point did not accept a connection.
    #[error("failed to connect to {address}: {source}")]
    Connect {
        /// `host:port` of the entry point.
        address: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The handshake was refused (a TLS alert) or broke off.
    #[error("the TLS handshake with {address} for {host} failed: {source}")]
    Handshake {
        /// `host:port` of the entry point.
        address: String,
        /// The SNI sent.
        host: String,
        /// The cause (rustls's, e.g. a received alert).
        #[source]
        source: std::io::Error,
    },
    /// No answer within [`CHECK_TIMEOUT`].
    #[error("no TLS answer from {address} within {timeout:?}")]
    Timeout {
        /// `host:port` of the entry point.
        address: String,
        /// The time allowed.
        timeout: Duration,
    },
}

impl Error {
    /// Whether the entry point answered at all: a refused handshake is an answer (the proxy has
    /// no certificate for the name), a refused connection or silence is not.
    #[must_use]
    pub fn reached(&self) -> bool {
        matches!(self, Error::Handshake { .. })
    }
}

/// The chain `address` serves for SNI `host`, leaf first, unverified. At most `timeout` in all.
///
/// # Errors
/// [`Error::Connect`] / [`Error::Timeout`] when the entry point does not answer,
/// [`Error::Handshake`] when it refuses the name, [`Error::ServerName`] for a bad host.
pub async fn fetch_chain(
    address: &str,
    host: &str,
    timeout: Duration,
) -> Result<Vec<CertificateDer<'static>>, Error> {
    let name =
        ServerName::try_from(host.to_owned()).map_err(|_| Error::ServerName(host.to_owned()))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(Arc::clone(&provider))
        .with_safe_default_protocol_versions()
        .map_err(Error::Config)?
        .dangerous()
        // Any chain: what is served is the answer, whoever signed it.
        .with_custom_certificate_verifier(crate::transport::accept_any_certificate(provider))
        .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let handshake = async {
        let tcp = tokio::net::TcpStream::connect(address)
            .await
            .map_err(|source| Error::Connect {
                address: address.to_owned(),
                source,
            })?;
        let mut tls = connector
            .connect(name, tcp)
            .await
            .map_err(|source| Error::Handshake {
                address: address.to_owned(),
                host: host.to_owned(),
                source,
            })?;
        let chain: Vec<CertificateDer<'static>> = tls
            .get_ref()
            .1
            .peer_certificates()
            .map(|c| c.iter().map(|c| c.clone().into_owned()).collect())
            .unwrap_or_default();
        // Polite close; the answer does not matter.
        let _ = tls.shutdown().await;
        Ok(chain)
    };
    tokio::time::timeout(timeout, handshake)
        .await
        .unwrap_or_else(|_| {
            Err(Error::Timeout {
                address: address.to_owned(),
                timeout,
            })
        })
}

/// What the document says the proxy must serve for a host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Expect {
    /// Exactly the certificate of `spec.tls.certificates[index]`.
    File {
        /// Position in `spec.tls.certificates`.
        index: usize,
        /// The certificate file.
        path: String,
        /// Its leaf's SubjectPublicKeyInfo (DER).
        public_key_der: Vec<u8>,
    },
    /// A certificate ACME obtained: one naming the host that is not the proxy's fallback.
    Acme,
    /// One of the certificate files (none of which the operator could read for this host).
    Named,
}

/// One host to look at, where, and what it must serve.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// The SNI (lower case).
    pub host: String,
    /// The TLS entry point, `host:port` as the operator reaches it.
    pub address: String,
    /// What must be served.
    pub expect: Expect,
}

/// What the entry point answered for one host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Served {
    /// This leaf certificate.
    Leaf(CertificateInfo),
    /// No certificate: the handshake was refused, or what came was not X.509.
    Refused(String),
    /// No answer at all.
    Unreachable(String),
}

/// How one host fares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// The expected certificate, valid for more than [`EXPIRY_WARNING_DAYS`].
    Expected(CertificateInfo),
    /// The expected certificate, expiring within [`EXPIRY_WARNING_DAYS`] (or expired).
    Expiring(CertificateInfo),
    /// The proxy's fallback, another certificate, or none.
    Fallback {
        /// What was served, if anything.
        served: Option<CertificateInfo>,
        /// What was served instead, in words.
        why: String,
    },
    /// The entry point did not answer.
    Unreachable(String),
}

/// One host's result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checked {
    /// What was asked.
    pub target: Target,
    /// How it fared.
    pub verdict: Verdict,
}

/// The hosts to check ([module docs](self)). `leaves[i]` is the leaf of
/// `spec.tls.certificates[i]` when the operator could read it. Pure.
#[must_use]
pub fn targets(
    spec: &ValidatedSpec,
    proxy_host: &str,
    leaves: &[Option<CertificateInfo>],
) -> Vec<Target> {
    let Some(entry) = spec.entry_points().iter().find(|e| e.tls) else {
        return Vec::new();
    };
    let address = format!("{proxy_host}:{}", entry.address.port);
    let mut out: Vec<Target> = Vec::new();
    let mut push = |host: &str, expect: Expect| {
        let host = host.to_ascii_lowercase();
        if is_dns_name(&host) && !out.iter().any(|t| t.host == host) {
            out.push(Target {
                host,
                address: address.clone(),
                expect,
            });
        }
    };
    for (index, (pair, leaf)) in spec.certificates().iter().zip(leaves).enumerate() {
        let Some(leaf) = leaf else { continue };
        for name in &leaf.sans {
            push(
                name,
                Expect::File {
                    index,
                    path: pair.cert_file.clone(),
                    public_key_der: leaf.public_key_der.clone(),
                },
            );
        }
    }
    let source = if spec.acme().is_some() {
        Some(Expect::Acme)
    } else {
        (!spec.certificates().is_empty()).then_some(Expect::Named)
    };
    if let Some(expect) = source {
        for probe in &spec.rollout().probes {
            push(&probe.host, expect.clone());
        }
    }
    out.truncate(MAX_HOSTS);
    out
}

/// A name a client sends as SNI: letters, digits, `-` and dots, no wildcard, no IP address.
fn is_dns_name(host: &str) -> bool {
    !host.is_empty()
        && host.len() <= 253
        && host.parse::<std::net::IpAddr>().is_err()
        && host
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.'))
        && matches!(ServerName::try_from(host), Ok(ServerName::DnsName(_)))
}

/// Whether `leaf` names `host` (exactly, or by a wildcard for one label).
fn names(leaf: &CertificateInfo, host: &str) -> bool {
    leaf.sans.iter().any(|san| {
        let san = san.to_ascii_lowercase();
        match san.strip_prefix("*.") {
            Some(parent) => host
                .split_once('.')
                .is_some_and(|(label, rest)| !label.is_empty() && rest == parent),
            None => san == host,
        }
    })
}

/// The proxy's own fallback certificate, by its subject or issuer.
fn fallback_name(leaf: &CertificateInfo, expect: &Expect) -> Option<&'static str> {
    if leaf.subject.contains(TRAEFIK_DEFAULT_CN) {
        return Some("Traefik's self-signed default certificate");
    }
    // Caddy's internal CA is the expected issuer in dev mode (no files, no ACME: nothing is
    // checked then); with files or ACME it is not what the document asked for.
    (!matches!(expect, Expect::Named) && leaf.issuer.contains(CADDY_INTERNAL_ISSUER))
        .then_some("a certificate of Caddy's internal CA")
}

/// How `served` fares against `target.expect`, at `now` (unix seconds). Pure.
#[must_use]
pub fn classify(target: &Target, served: &Served, now: i64) -> Verdict {
    let leaf = match served {
        Served::Unreachable(why) => return Verdict::Unreachable(why.clone()),
        Served::Refused(why) => {
            return Verdict::Fallback {
                served: None,
                why: format!("no certificate (the handshake was refused: {why})"),
            };
        }
        Served::Leaf(leaf) => leaf,
    };
    let wrong = |why: String| Verdict::Fallback {
        served: Some(leaf.clone()),
        why,
    };
    if let Some(name) = fallback_name(leaf, &target.expect) {
        return wrong(name.to_owned());
    }
    match &target.expect {
        Expect::File { public_key_der, .. } if *public_key_der != leaf.public_key_der => {
            return wrong(format!("another certificate ({})", leaf.subject));
        }
        Expect::Acme | Expect::Named if !names(leaf, &target.host) => {
            return wrong(format!(
                "a certificate that does not name it (subject {}, names {})",
                leaf.subject,
                leaf.sans.join(", ")
            ));
        }
        _ => {}
    }
    if leaf.days_left(now) < EXPIRY_WARNING_DAYS {
        Verdict::Expiring(leaf.clone())
    } else {
        Verdict::Expected(leaf.clone())
    }
}

impl Checked {
    /// The status warning, when there is something to warn about: it names the host, what was
    /// served and what to fix.
    #[must_use]
    pub fn warning(&self, now: i64) -> Option<CertificateWarning> {
        let host = &self.target.host;
        let source = match &self.target.expect {
            Expect::File { index, path, .. } => {
                format!("the certificate of spec.tls.certificates[{index}] ({path})")
            }
            Expect::Acme => "a certificate from ACME (spec.tls.acme)".to_owned(),
            Expect::Named => "a certificate of spec.tls.certificates naming it".to_owned(),
        };
        let fix = match &self.target.expect {
            Expect::File { .. } => {
                "check that the proxy can read the file and its key, and the proxy's log for why \
                 it did not load"
            }
            Expect::Acme => {
                "check spec.tls.acme (caServer, caRoots, email), that the CA reaches the entry \
                 points for the challenge, and the proxy's log for the ACME error"
            }
            Expect::Named => "add a certificate file that names it, or enable spec.tls.acme",
        };
        let (kind, message, leaf) = match &self.verdict {
            Verdict::Expected(_) => return None,
            Verdict::Expiring(leaf) => {
                let renew = match &self.target.expect {
                    Expect::Acme => "the ACME renewal has not happened; check the proxy's log",
                    _ => "renew the certificate file",
                };
                (
                    CertificateWarningKind::CertificateExpiring,
                    format!(
                        "{host}: the served certificate ({source}) expires {} ({} days left); {renew}",
                        leaf.not_after_rfc3339(),
                        leaf.days_left(now)
                    ),
                    Some(leaf),
                )
            }
            Verdict::Fallback { served, why } => (
                CertificateWarningKind::CertificateFallback,
                format!("{host}: the proxy serves {why} instead of {source}; {fix}"),
                served.as_ref(),
            ),
            Verdict::Unreachable(why) => (
                CertificateWarningKind::CertificateUnchecked,
                format!(
                    "{host}: the served certificate could not be checked: {why}; the operator \
                     reaches the proxy's entry points on its --proxy-host"
                ),
                None,
            ),
        };
        Some(CertificateWarning {
            kind,
            host: host.clone(),
            message,
            not_after: leaf.map(CertificateInfo::not_after_rfc3339),
            days_left: leaf
                .filter(|_| kind == CertificateWarningKind::CertificateExpiring)
                .map(|l| l.days_left(now)),
        })
    }

    /// What the metrics export for this host: `None` when it could not be checked.
    #[must_use]
    pub fn gauge(&self) -> Option<metrics::ServedCertificate> {
        let (fallback, leaf) = match &self.verdict {
            Verdict::Expected(leaf) | Verdict::Expiring(leaf) => (false, Some(leaf)),
            Verdict::Fallback { served, .. } => (true, served.as_ref()),
            Verdict::Unreachable(_) => return None,
        };
        Some(metrics::ServedCertificate {
            host: self.target.host.clone(),
            fallback,
            not_after: leaf.map(|l| l.not_after),
        })
    }
}

/// What `address` serves for `host`, as [`classify`] reads it.
async fn served(address: &str, host: &str) -> Served {
    match fetch_chain(address, host, CHECK_TIMEOUT).await {
        Ok(chain) => match chain.first() {
            Some(der) => match metrics::certificate_from_der(der) {
                Ok(leaf) => Served::Leaf(leaf),
                Err(e) => Served::Refused(format!("the certificate sent is unreadable: {e}")),
            },
            None => Served::Refused("no certificate was sent".to_owned()),
        },
        Err(e) if e.reached() => Served::Refused(e.to_string()),
        Err(e) => Served::Unreachable(e.to_string()),
    }
}

/// The leaf of a certificate file, when the operator can read it (only the certificate blocks
/// are looked at; a key in the same file is skipped unread).
async fn read_leaf(path: &str) -> Option<CertificateInfo> {
    let size = tokio::fs::metadata(path).await.ok()?.len();
    if size > MAX_CERT_FILE_BYTES {
        return None;
    }
    let bytes = tokio::fs::read(path).await.ok()?;
    metrics::certificates_from_pem(&bytes)
        .ok()?
        .into_iter()
        .next()
}

/// Checks every host of the document ([`targets`]) on the proxy reached at `proxy_host`, at
/// `now` (unix seconds). Takes at most about [`CHECK_TIMEOUT`]; never fails (what could not be
/// checked is [`Verdict::Unreachable`]).
pub async fn check(spec: &ValidatedSpec, proxy_host: &str, now: i64) -> Vec<Checked> {
    let mut leaves = Vec::new();
    for pair in spec.certificates() {
        leaves.push(read_leaf(&pair.cert_file).await);
    }
    let targets = targets(spec, proxy_host, &leaves);
    let looks = targets.iter().map(|t| served(&t.address, &t.host));
    let answers = futures::future::join_all(looks).await;
    targets
        .into_iter()
        .zip(answers)
        .map(|(target, answer)| Checked {
            verdict: classify(&target, &answer, now),
            target,
        })
        .collect()
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::panic)] // tests fail loudly
pub(crate) mod tests;
