//! `spec.tls`: the certificate directory, certificate pairs and ACME.

use std::collections::BTreeSet;
use std::path::{Component, Path, PathBuf};

use super::field::Validator;
use crate::spec::model::{Acme, CertPair, Tls};
use crate::spec::{self, LETS_ENCRYPT_DIRECTORY, ProxyKind, TlsVersion};

/// Checks `spec.tls` and resolves it: certificate pairs and ACME storage with absolute paths.
pub(super) fn check(v: &mut Validator, tls: &spec::Tls, proxy: ProxyKind) -> Tls {
    let cert_dir = v.absolute_path("spec.tls.certDir", &tls.cert_dir);
    let mut certificates = Vec::new();
    let mut seen_certs = BTreeSet::new();
    for (i, cert) in tls.certificates.iter().enumerate() {
        let base = format!("spec.tls.certificates[{i}]");
        let cert_file = v.cert_path(
            &format!("{base}.certFile"),
            &cert.cert_file,
            cert_dir.as_deref(),
        );
        let key_file = v.cert_path(
            &format!("{base}.keyFile"),
            &cert.key_file,
            cert_dir.as_deref(),
        );
        if let (Some(cert_file), Some(key_file)) = (cert_file, key_file) {
            if cert_file == key_file {
                v.error(&base, "certFile and keyFile name the same file; give the certificate and its private key separately");
            } else if !seen_certs.insert(cert_file.clone()) {
                v.error(
                    format!("{base}.certFile"),
                    format!("{} is listed twice", cert_file.display()),
                );
            }
            certificates.push(CertPair {
                cert_file: cert_file.display().to_string(),
                key_file: key_file.display().to_string(),
            });
        }
    }
    let acme = tls
        .acme
        .as_ref()
        .and_then(|a| v.acme(a, cert_dir.as_deref()));
    if proxy == ProxyKind::Traefik && certificates.is_empty() && tls.acme.is_none() {
        v.warn(
            "spec.tls",
            "websecure has no certificates and ACME is off: Traefik will serve its self-signed default certificate; add tls.certificates or tls.acme",
        );
    }

    Tls {
        cert_dir: tls.cert_dir.clone(),
        certificates,
        acme,
        min_version: Some(
            match tls.min_version {
                TlsVersion::VersionTLS12 => "VersionTLS12",
                TlsVersion::VersionTLS13 => "VersionTLS13",
            }
            .to_string(),
        ),
    }
}

impl Validator {
    /// A path that is absolute, or relative to `certDir`. Never echoes inline PEM (it may be a key).
    pub(super) fn cert_path(
        &mut self,
        path: &str,
        text: &str,
        cert_dir: Option<&Path>,
    ) -> Option<PathBuf> {
        if text.contains("-----BEGIN") || text.contains('\n') {
            self.error(path, "inline PEM is not accepted: write the certificate or key to a file under certDir and give its path (e.g. example.com.key)");
            return None;
        }
        if text.is_empty() {
            self.error(path, "must name a file (absolute, or relative to certDir)");
            return None;
        }
        let p = Path::new(text);
        if p.components().any(|c| c == Component::ParentDir) {
            self.error(
                path,
                format!(
                    "{text:?} must not contain '..'; give a path inside certDir or an absolute path"
                ),
            );
            return None;
        }
        if text.chars().any(char::is_control) {
            self.error(path, "must not contain control characters");
            return None;
        }
        if p.is_absolute() {
            Some(p.to_path_buf())
        } else {
            cert_dir.map(|dir| dir.join(p))
        }
    }

    pub(super) fn acme(&mut self, acme: &spec::Acme, cert_dir: Option<&Path>) -> Option<Acme> {
        let email_ok = acme.email.split_once('@').is_some_and(|(user, domain)| {
            !user.is_empty() && domain.contains('.') && !domain.contains('@')
        }) && !acme
            .email
            .chars()
            .any(|c| c.is_whitespace() || c.is_control());
        if !email_ok {
            self.error(
                "spec.tls.acme.email",
                format!(
                    "{:?} is not an e-mail address (e.g. ops@example.com)",
                    acme.email
                ),
            );
        }
        let storage = self.cert_path("spec.tls.acme.storage", &acme.storage, cert_dir);
        let ca_server = match url::Url::parse(&acme.ca_server) {
            Ok(u) if (u.scheme() == "https" || u.scheme() == "http") && u.host().is_some() => {
                Some(u)
            }
            _ => {
                self.error(
                    "spec.tls.acme.caServer",
                    format!(
                        "{:?} is not an ACME directory URL (e.g. {LETS_ENCRYPT_DIRECTORY})",
                        acme.ca_server
                    ),
                );
                None
            }
        };
        let ca_roots: Vec<Option<String>> = acme
            .ca_roots
            .iter()
            .enumerate()
            .map(|(i, root)| {
                let path = format!("spec.tls.acme.caRoots[{i}]");
                if root.contains(':') {
                    // LEGO_CA_CERTIFICATES is a ':'-separated list.
                    self.error(
                        &path,
                        format!("{root:?} must not contain ':'; rename the file"),
                    );
                    return None;
                }
                self.cert_path(&path, root, cert_dir)
                    .map(|p| p.display().to_string())
            })
            .collect();
        let ca_roots: Option<Vec<String>> = ca_roots.into_iter().collect();
        Some(Acme {
            email: acme.email.clone(),
            storage: storage?.display().to_string(),
            ca_server: Some(ca_server?.to_string()),
            ca_roots: ca_roots?,
        })
        .filter(|_| email_ok)
    }
}
