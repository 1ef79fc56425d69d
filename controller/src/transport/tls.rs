//! The rustls configuration of a client: CA file or directory, client certificate (mTLS), server
//! name override and skip-verify, all with the ring provider.

use std::path::Path;
use std::sync::Arc;

use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, verify_tls12_signature, verify_tls13_signature};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, RootCertStore, SignatureScheme};

use super::{Error, TlsSettings};

/// Builds the TLS configuration for `settings`. Without a CA file or directory the platform's
/// trust store is used, as the Go CLIs do.
pub(super) fn client_config(settings: &TlsSettings) -> Result<rustls::ClientConfig, Error> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::TlsConfig(e.to_string()))?;

    let base: Arc<dyn ServerCertVerifier> = if settings.skip_verify {
        accept_any_certificate(provider.clone())
    } else if settings.ca_file.is_some() || settings.ca_path.is_some() {
        let mut roots = RootCertStore::empty();
        if let Some(file) = &settings.ca_file {
            add_pem_file(&mut roots, file)?;
        }
        if let Some(dir) = &settings.ca_path {
            add_pem_dir(&mut roots, dir)?;
        }
        WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider.clone())
            .build()
            .map_err(|e| Error::TlsConfig(e.to_string()))?
    } else {
        Arc::new(
            rustls_platform_verifier::Verifier::new(provider.clone())
                .map_err(|e| Error::TlsConfig(e.to_string()))?,
        )
    };
    let verifier: Arc<dyn ServerCertVerifier> = match &settings.server_name {
        Some(name) if !settings.skip_verify => {
            let name = ServerName::try_from(name.clone()).map_err(|_| {
                Error::TlsConfig(format!("{name:?} is not a valid TLS server name"))
            })?;
            Arc::new(Verifier::As { inner: base, name })
        }
        _ => base,
    };
    let builder = builder
        .dangerous()
        .with_custom_certificate_verifier(verifier);

    let mut config = match (&settings.client_cert, &settings.client_key) {
        (Some(cert_path), Some(key_path)) => {
            let certs = read_certs(cert_path, "client certificate")?;
            let key = PrivateKeyDer::from_pem_file(key_path).map_err(|e| Error::TlsMaterial {
                what: "client key",
                path: key_path.clone(),
                reason: e.to_string(),
            })?;
            builder
                .with_client_auth_cert(certs, key)
                .map_err(|e| Error::TlsMaterial {
                    what: "client certificate",
                    path: cert_path.clone(),
                    reason: e.to_string(),
                })?
        }
        (None, None) => builder.with_no_client_auth(),
        (Some(_), None) | (None, Some(_)) => {
            return Err(Error::TlsConfig(
                "a client certificate needs both a certificate and a key file".into(),
            ));
        }
    };
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(config)
}

fn read_certs(path: &Path, what: &'static str) -> Result<Vec<CertificateDer<'static>>, Error> {
    let material = |reason: String| Error::TlsMaterial {
        what,
        path: path.to_path_buf(),
        reason,
    };
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| material(e.to_string()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| material(e.to_string()))?;
    if certs.is_empty() {
        return Err(material("no PEM certificate in the file".into()));
    }
    Ok(certs)
}

fn add_pem_file(roots: &mut RootCertStore, path: &Path) -> Result<(), Error> {
    for cert in read_certs(path, "CA certificate")? {
        roots.add(cert).map_err(|e| Error::TlsMaterial {
            what: "CA certificate",
            path: path.to_path_buf(),
            reason: e.to_string(),
        })?;
    }
    Ok(())
}

fn add_pem_dir(roots: &mut RootCertStore, dir: &Path) -> Result<(), Error> {
    let entries = std::fs::read_dir(dir).map_err(|source| Error::ReadFile {
        what: "CA directory",
        path: dir.to_path_buf(),
        source,
    })?;
    let mut added = 0;
    for entry in entries.flatten() {
        let path = entry.path();
        // Like Go's x509 loader: every regular file that parses as PEM counts; others are skipped.
        if path.is_file() && read_certs(&path, "CA certificate").is_ok() {
            add_pem_file(roots, &path)?;
            added += 1;
        }
    }
    if added == 0 {
        return Err(Error::TlsMaterial {
            what: "CA certificates",
            path: dir.to_path_buf(),
            reason: "no PEM certificate in the directory".into(),
        });
    }
    Ok(())
}

/// The two verifiers the settings add to the platform's or the CA's: one for skip-verify, one
/// for a configured server name. One type, so the trait is implemented once.
#[derive(Debug)]
enum Verifier {
    /// `*_SKIP_VERIFY`: any certificate is accepted, but handshake signatures are still
    /// checked so the connection is at least encrypted to whoever holds the presented key.
    AcceptAny(Arc<CryptoProvider>),
    /// Verifies the server certificate against a configured name instead of the address's host
    /// (`CONSUL_TLS_SERVER_NAME`, `NOMAD_TLS_SERVER_NAME`), e.g. `server.dc1.consul` while
    /// connecting to an IP address.
    As {
        inner: Arc<dyn ServerCertVerifier>,
        name: ServerName<'static>,
    },
}

/// A verifier that accepts any certificate chain but still checks handshake signatures: for
/// skip-verify, and for `debug tls`, which shows what is served, valid or not.
pub(crate) fn accept_any_certificate(provider: Arc<CryptoProvider>) -> Arc<dyn ServerCertVerifier> {
    Arc::new(Verifier::AcceptAny(provider))
}

/// The TLS version of a handshake signature: 1.2 and 1.3 check them by different rules.
#[derive(Debug, Clone, Copy)]
enum Version {
    Tls12,
    Tls13,
}

impl Verifier {
    /// Checks a handshake signature: with the provider's algorithms when any certificate is
    /// accepted (skip-verify still proves the peer holds the presented key), else as the
    /// wrapped verifier does.
    fn signature(
        &self,
        version: Version,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        let inner = match self {
            Verifier::AcceptAny(provider) => {
                let algorithms = &provider.signature_verification_algorithms;
                return match version {
                    Version::Tls12 => verify_tls12_signature(message, cert, dss, algorithms),
                    Version::Tls13 => verify_tls13_signature(message, cert, dss, algorithms),
                };
            }
            Verifier::As { inner, .. } => inner,
        };
        match version {
            Version::Tls12 => inner.verify_tls12_signature(message, cert, dss),
            Version::Tls13 => inner.verify_tls13_signature(message, cert, dss),
        }
    }
}

impl ServerCertVerifier for Verifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match self {
            Verifier::AcceptAny(_) => Ok(ServerCertVerified::assertion()),
            Verifier::As { inner, name } => {
                inner.verify_server_cert(end_entity, intermediates, name, ocsp_response, now)
            }
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.signature(Version::Tls12, message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.signature(Version::Tls13, message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        match self {
            Verifier::AcceptAny(provider) => provider
                .signature_verification_algorithms
                .supported_schemes(),
            Verifier::As { inner, .. } => inner.supported_verify_schemes(),
        }
    }
}
