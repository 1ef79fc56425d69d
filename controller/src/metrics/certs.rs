//! Certificates of `certDir`, read with `x509-parser`: the pure parsers and the directory scan.

use std::path::{Path, PathBuf};

use super::{Error, Result};

/// What the operator shows of one certificate. Nothing here is secret.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CertificateInfo {
    /// Subject DN.
    pub subject: String,
    /// Issuer DN.
    pub issuer: String,
    /// DNS names and IP addresses of the subjectAltName extension.
    pub sans: Vec<String>,
    /// notBefore, unix seconds.
    pub not_before: i64,
    /// notAfter, unix seconds.
    pub not_after: i64,
    /// DER of the SubjectPublicKeyInfo, to match a private key against.
    #[serde(skip)]
    pub public_key_der: Vec<u8>,
}

impl CertificateInfo {
    /// Seconds from `now` (unix seconds) until it expires; negative once expired.
    #[must_use]
    pub fn seconds_left(&self, now: i64) -> i64 {
        self.not_after - now
    }

    /// Whole days from `now` (unix seconds) until it expires, rounded down; negative once
    /// expired.
    #[must_use]
    pub fn days_left(&self, now: i64) -> i64 {
        self.seconds_left(now).div_euclid(86_400)
    }

    /// How soon it expires, seen from `now` (unix seconds): the page and `debug tls` mark
    /// certificates by it.
    #[must_use]
    pub fn urgency(&self, now: i64) -> Urgency {
        match self.days_left(now) {
            d if d < 0 => Urgency::Expired,
            d if d < 7 => Urgency::ThisWeek,
            d if d < 21 => Urgency::Soon,
            _ => Urgency::Later,
        }
    }

    /// notAfter as RFC 3339 (UTC).
    #[must_use]
    pub fn not_after_rfc3339(&self) -> String {
        crate::status::rfc3339(
            std::time::UNIX_EPOCH
                + std::time::Duration::from_secs(u64::try_from(self.not_after).unwrap_or(0)),
        )
    }
}

/// How soon a certificate expires ([`CertificateInfo::urgency`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Urgency {
    /// Already expired.
    Expired,
    /// Within 7 days: needs attention now.
    ThisWeek,
    /// Within 21 days.
    Soon,
    /// Later than that.
    Later,
}

/// Every `CERTIFICATE` block of PEM data, in order (leaf first in a chain file). Private-key
/// blocks are skipped without being looked at. Pure.
///
/// # Errors
/// [`Error::Pem`] when the data holds no PEM block at all or a broken one,
/// [`Error::Certificate`] when a certificate block is not X.509.
pub fn certificates_from_pem(pem: &[u8]) -> Result<Vec<CertificateInfo>> {
    let mut out = Vec::new();
    let mut blocks = 0usize;
    for block in x509_parser::pem::Pem::iter_from_buffer(pem) {
        let block = block.map_err(|e| Error::Pem(e.to_string()))?;
        blocks += 1;
        if block.label != "CERTIFICATE" {
            continue;
        }
        let index = out.len();
        let info = certificate_from_der(&block.contents).map_err(|e| match e {
            Error::Certificate { reason, .. } => Error::Certificate { index, reason },
            other => other,
        })?;
        out.push(info);
    }
    if blocks == 0 {
        return Err(Error::Pem("no PEM block found".into()));
    }
    Ok(out)
}

/// One DER-encoded certificate (as a TLS server sends it). Pure.
///
/// # Errors
/// [`Error::Certificate`] when it is not X.509.
pub fn certificate_from_der(der: &[u8]) -> Result<CertificateInfo> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).map_err(|e| Error::Certificate {
        index: 0,
        reason: e.to_string(),
    })?;
    let mut sans = Vec::new();
    if let Ok(Some(ext)) = cert.subject_alternative_name() {
        for name in &ext.value.general_names {
            match name {
                x509_parser::extensions::GeneralName::DNSName(d) => sans.push((*d).to_owned()),
                x509_parser::extensions::GeneralName::IPAddress(bytes) => {
                    if let Some(ip) = ip_from_bytes(bytes) {
                        sans.push(ip.to_string());
                    }
                }
                _ => {}
            }
        }
    }
    Ok(CertificateInfo {
        subject: cert.subject().to_string(),
        issuer: cert.issuer().to_string(),
        sans,
        not_before: cert.validity().not_before.timestamp(),
        not_after: cert.validity().not_after.timestamp(),
        public_key_der: cert.public_key().raw.to_vec(),
    })
}

fn ip_from_bytes(bytes: &[u8]) -> Option<std::net::IpAddr> {
    match bytes.len() {
        4 => <[u8; 4]>::try_from(bytes).ok().map(std::net::IpAddr::from),
        16 => <[u8; 16]>::try_from(bytes).ok().map(std::net::IpAddr::from),
        _ => None,
    }
}

/// One PEM file of `certDir` and what it holds.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CertificateFile {
    /// The file.
    pub path: PathBuf,
    /// Its certificates (leaf first), or why they could not be read.
    pub certificates: std::result::Result<Vec<CertificateInfo>, String>,
}

impl CertificateFile {
    /// The first certificate of the file, if it parsed.
    #[must_use]
    pub fn leaf(&self) -> Option<&CertificateInfo> {
        self.certificates.as_ref().ok()?.first()
    }
}

/// Reads every file of `dir` that holds a certificate (`.pem`, `.crt`, `.cer`), sorted by
/// path. Key files (`.key`) are never opened here. A file that fails to parse is listed with
/// its error instead of failing the scan.
///
/// # Errors
/// [`Error::CertDir`] when the directory cannot be listed.
pub fn scan_cert_dir(dir: &Path) -> Result<Vec<CertificateFile>> {
    let entries = std::fs::read_dir(dir).map_err(|source| Error::CertDir {
        dir: dir.to_owned(),
        source,
    })?;
    let mut paths: Vec<PathBuf> = entries
        .filter_map(std::result::Result::ok)
        .map(|e| e.path())
        .filter(|p| {
            p.extension()
                .and_then(|e| e.to_str())
                .is_some_and(|e| matches!(e, "pem" | "crt" | "cer"))
        })
        .collect();
    paths.sort();
    let mut out = Vec::new();
    for path in paths {
        let certificates = match std::fs::read(&path) {
            Ok(bytes) => certificates_from_pem(&bytes).map_err(|e| e.to_string()),
            Err(e) => Err(format!("failed to read: {e}")),
        };
        if matches!(&certificates, Ok(c) if c.is_empty()) {
            continue; // a `.pem` holding only a key
        }
        out.push(CertificateFile { path, certificates });
    }
    Ok(out)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::panic)] // tests fail loudly
pub(crate) mod tests {
    use std::time::Duration;

    use super::*;

    /// A self-signed certificate for `names` expiring at `not_after_unix`, and its key (PEM).
    pub(crate) fn cert_pem(names: &[&str], not_after_unix: i64) -> (String, String) {
        let mut params = rcgen::CertificateParams::new(
            names.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>(),
        )
        .unwrap();
        let epoch = rcgen::date_time_ymd(1970, 1, 1);
        params.not_after = epoch + Duration::from_secs(u64::try_from(not_after_unix).unwrap());
        params.not_before =
            epoch + Duration::from_secs(u64::try_from(not_after_unix - 86_400 * 30).unwrap());
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        (cert.pem(), key.serialize_pem())
    }

    #[test]
    fn a_certificate_made_by_rcgen_reports_its_names_and_not_after() {
        let not_after = 2_000_000_000;
        let (pem, key) = cert_pem(&["demo.localhost", "127.0.0.1"], not_after);
        let both = format!("{key}{pem}");
        let certs = certificates_from_pem(both.as_bytes()).unwrap();
        assert_eq!(certs.len(), 1, "the key block is skipped");
        assert_eq!(certs[0].not_after, not_after);
        assert_eq!(certs[0].seconds_left(not_after - 90), 90);
        assert!(certs[0].sans.contains(&"demo.localhost".to_owned()));
        assert!(certs[0].sans.contains(&"127.0.0.1".to_owned()));
    }

    #[test]
    fn data_that_is_not_pem_or_not_x509_is_an_error_not_a_panic() {
        assert!(matches!(
            certificates_from_pem(b"hello"),
            Err(Error::Pem(_))
        ));
        let broken = "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n";
        assert!(matches!(
            certificates_from_pem(broken.as_bytes()),
            Err(Error::Certificate { index: 0, .. })
        ));
    }
}
