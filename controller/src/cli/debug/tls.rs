//! `debug tls [HOST]`.

use std::fmt::Write as _;
use std::net::ToSocketAddrs as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;
use rustls::pki_types::PrivateKeyDer;
use rustls::pki_types::pem::PemObject as _;

use crate::metrics::{self, CertificateInfo, Urgency};
use crate::proxy::served_cert;

/// How long connecting and the handshake may take together.
const FETCH_TIMEOUT: Duration = Duration::from_secs(5);

const EXIT_HELP: &str = "Exit codes: 0 all good, 1 a certificate expires within 7 days, has \
expired, or its key does not match, or the chain could not be fetched; 2 usage or IO error.";

/// Arguments of `debug tls`.
#[derive(Debug, clap::Args)]
#[command(after_help = EXIT_HELP)]
pub struct Args {
    /// Server name sent in the TLS handshake (SNI).
    #[arg(default_value = "localhost")]
    host: String,
    /// The HTTPS entry point to connect to.
    #[arg(long, default_value = "127.0.0.1:443")]
    connect: String,
    /// The certificate directory to list (the document's `spec.tls.certDir`).
    #[arg(long, default_value = "/pv/CERTS")]
    cert_dir: PathBuf,
}

/// Appends one certificate's description; returns whether it needs attention (expired or
/// expiring within 7 days).
fn describe(out: &mut String, pad: &str, c: &CertificateInfo) -> bool {
    let now = metrics::unix_now();
    let days = c.days_left(now);
    let urgency = c.urgency(now);
    let _ = writeln!(out, "{pad}subject:   {}", c.subject);
    if !c.sans.is_empty() {
        let _ = writeln!(out, "{pad}SANs:      {}", c.sans.join(", "));
    }
    let _ = writeln!(out, "{pad}issuer:    {}", c.issuer);
    let note = match urgency {
        Urgency::Expired => " (EXPIRED)",
        Urgency::ThisWeek => " (expires within a week)",
        Urgency::Soon | Urgency::Later => "",
    };
    let _ = writeln!(
        out,
        "{pad}not after: {} ({days} days left){note}",
        c.not_after_rfc3339()
    );
    matches!(urgency, Urgency::Expired | Urgency::ThisWeek)
}

/// Key files tried for a certificate file, in order.
fn key_candidates(cert: &Path) -> Vec<PathBuf> {
    let stem = cert
        .file_stem()
        .and_then(|s| s.to_str())
        .unwrap_or_default();
    let dir = cert.parent().unwrap_or_else(|| Path::new("."));
    let base = stem
        .strip_suffix("-cert")
        .or_else(|| stem.strip_suffix(".crt"))
        .unwrap_or(stem);
    vec![
        cert.to_owned(),
        dir.join(format!("{stem}.key")),
        dir.join(format!("{base}.key")),
        dir.join(format!("{base}-key.pem")),
        dir.join(format!("{base}.key.pem")),
    ]
}

/// Whether a private key in one of the candidate files belongs to the certificate: `Some(file,
/// matches)`, or `None` when no key was found. The key is never printed.
fn key_match(cert_file: &Path, cert: &CertificateInfo) -> Option<(PathBuf, bool)> {
    key_candidates(cert_file).into_iter().find_map(|path| {
        let bytes = std::fs::read(&path).ok()?;
        let key = PrivateKeyDer::from_pem_slice(&bytes).ok()?;
        let signer = rustls::crypto::ring::sign::any_supported_type(&key).ok()?;
        let spki = signer.public_key()?;
        Some((path, spki.as_ref() == cert.public_key_der.as_slice()))
    })
}

/// Runs `debug tls`.
pub async fn run(args: Args) -> anyhow::Result<ExitCode> {
    let mut out = String::new();
    let mut attention = false;
    let addr = args
        .connect
        .to_socket_addrs()
        .with_context(|| format!("--connect {:?} is not host:port", args.connect))?
        .next()
        .with_context(|| format!("--connect {:?} resolves to no address", args.connect))?;
    let chain = served_cert::fetch_chain(&addr.to_string(), &args.host, FETCH_TIMEOUT).await;
    let _ = writeln!(out, "Served by {addr} for {}:", args.host);
    match chain {
        Ok(chain) if !chain.is_empty() => {
            for (i, der) in chain.iter().enumerate() {
                let _ = writeln!(out, "  [{i}]");
                match metrics::certificate_from_der(der) {
                    Ok(c) => attention |= describe(&mut out, "      ", &c),
                    Err(e) => {
                        let _ = writeln!(out, "      unreadable: {e}");
                        attention = true;
                    }
                }
            }
        }
        Ok(_) => {
            let _ = writeln!(out, "  no certificate was sent");
            attention = true;
        }
        Err(e) => {
            let mut why = e.to_string();
            let mut source = std::error::Error::source(&e);
            while let Some(s) = source {
                let _ = write!(why, ": {s}");
                source = s.source();
            }
            let _ = writeln!(out, "  could not fetch the chain: {why}");
            attention = true;
        }
    }
    let _ = writeln!(out, "\nFiles in {}:", args.cert_dir.display());
    match metrics::scan_cert_dir(&args.cert_dir) {
        Ok(files) if files.is_empty() => {
            let _ = writeln!(out, "  no certificate files (.pem, .crt, .cer)");
        }
        Ok(files) => {
            for f in files {
                let _ = writeln!(out, "  {}", f.path.display());
                match (&f.certificates, f.leaf()) {
                    (Ok(_), Some(c)) => {
                        attention |= describe(&mut out, "      ", c);
                        match key_match(&f.path, c) {
                            Some((key, true)) => {
                                let _ = writeln!(out, "      key:       {} matches", key.display());
                            }
                            Some((key, false)) => {
                                let _ = writeln!(
                                    out,
                                    "      key:       {} DOES NOT MATCH",
                                    key.display()
                                );
                                attention = true;
                            }
                            None => {
                                let _ = writeln!(out, "      key:       none found next to it");
                            }
                        }
                    }
                    (Err(e), _) => {
                        let _ = writeln!(out, "      unreadable: {e}");
                        attention = true;
                    }
                    (Ok(_), None) => {}
                }
            }
        }
        Err(e) => {
            let _ = writeln!(out, "  {e}");
        }
    }
    super::super::validate::write_quietly(std::io::stdout().lock(), &out)
        .context("failed to write to stdout")?;
    Ok(ExitCode::from(u8::from(attention)))
}
