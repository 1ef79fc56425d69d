//! The HTTP seam the proxy drivers read a proxy through: its own health endpoints (Traefik
//! `/ping` and `/api/rawdata`) and user route probes sent through its entry points
//! (TRAEFIK.md §1, §5).
//!
//! [`ProxyProbe`] is the seam: [`HttpProbe`] talks to a real proxy with short timeouts (a probe
//! that hangs would stall the whole loop); `fake::FakeProbe` (tests and the `test-support`
//! feature) answers from memory.

use std::future::Future;
use std::time::Duration;

use crate::proxy::traefik::{RawEntry, parse_rawdata};
use crate::rollout::ProbeOutcome;

/// Connect timeout of every probe request: the proxy is near, a slow connect means it is down.
pub const CONNECT_TIMEOUT: Duration = Duration::from_millis(500);
/// Whole-request timeout of every probe request.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(2);
/// The most of `/api/rawdata` the operator reads: a few thousand routers and services are well
/// under it, and a larger answer is not something to hold in memory every 250 ms.
pub const MAX_RAWDATA_BYTES: usize = 8 * 1024 * 1024;
/// The most of a route probe's response body the operator reads: the probe judges the status
/// code, and the body is read (and dropped) only so the request completes like a client's.
pub const MAX_PROBE_BODY_BYTES: usize = 1024 * 1024;

/// Errors of the probe.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The proxy did not answer (refused, timeout, reset).
    #[error("failed to reach the proxy at {url}: {source}")]
    Request {
        /// What was requested.
        url: String,
        /// The cause.
        #[source]
        source: reqwest::Error,
    },
    /// The proxy answered with something else than expected.
    #[error("failed to read {url}: HTTP {status}")]
    Status {
        /// What was requested.
        url: String,
        /// The status it returned.
        status: u16,
    },
    /// The answer was larger than the operator reads.
    #[error("failed to read {url}: the response is larger than {limit} bytes")]
    TooLarge {
        /// What was requested.
        url: String,
        /// The cap.
        limit: usize,
    },
    /// `/api/rawdata` was not the JSON Traefik documents.
    #[error("failed to parse /api/rawdata: {0}")]
    Parse(#[source] serde_json::Error),
    /// A probe target could not be turned into a URL.
    #[error("failed to build the probe URL {0:?}")]
    Url(String),
    /// The HTTP client could not be built.
    #[error("failed to build the HTTP client: {0}")]
    Client(#[source] reqwest::Error),
}

/// Result alias of this module.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// A user route probe: a request through the proxy's entry point.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RouteProbe {
    /// The entry point address, `host:port`.
    pub address: String,
    /// The `Host` header.
    pub host: String,
    /// The path, starting with `/`.
    pub path: String,
    /// The status that counts as success.
    pub expect_status: u16,
    /// Send it over HTTPS (SNI and `Host` = `host`, certificate not verified: the probe checks
    /// the route through the local proxy, not the certificate chain, which for a name that
    /// is not the loopback address could never verify).
    #[serde(default)]
    pub tls: bool,
}

/// The spec's route probes, addressed at the proxy's entry points on `proxy_host`.
///
/// A probe on an entry point that redirects (by default `web` → `websecure`) that does not
/// expect the redirect itself (a 3xx) is sent to the redirect's target over HTTPS instead: that
/// is where the redirect takes a client, and otherwise the default probe (`web`, 200) would
/// always see a 308 and fail every rollout. An entry point serves TLS when it is `websecure` or
/// the target of a redirect (as the renderer configures it).
#[must_use]
pub fn route_probes(spec: &crate::spec::ValidatedSpec, proxy_host: &str) -> Vec<RouteProbe> {
    let listeners = spec.entry_points();
    let is_tls = |name: &str| {
        name == "websecure"
            || listeners
                .iter()
                .any(|o| o.redirect_to.as_deref() == Some(name))
    };
    spec.rollout()
        .probes
        .iter()
        .filter_map(|p| {
            let mut listener = spec.entry_point(&p.entry_point)?;
            if let Some(target) = &listener.redirect_to
                && !(300..400).contains(&p.expect_status)
                && let Some(t) = spec.entry_point(target)
            {
                listener = t;
            }
            Some(RouteProbe {
                address: format!("{proxy_host}:{}", listener.address.port),
                host: p.host.clone(),
                path: p.path.clone(),
                expect_status: p.expect_status,
                tls: is_tls(&listener.name),
            })
        })
        .collect()
}

impl RouteProbe {
    /// `host` + `path`, for messages.
    #[must_use]
    pub fn name(&self) -> String {
        format!("{}{}", self.host, self.path)
    }
}

/// Reads the proxy's health. `api` is the base URL of the proxy's API / ping entry point
/// (`http://127.0.0.1:8080`).
pub trait ProxyProbe: Send + Sync + 'static {
    /// Whether `GET <api>/ping` answers 200.
    fn ping(&self, api: &str) -> impl Future<Output = Result<bool>> + Send;
    /// `GET <api>/api/rawdata`, parsed.
    fn rawdata(&self, api: &str) -> impl Future<Output = Result<Vec<RawEntry>>> + Send;
    /// Sends the probe and returns the status code that came back.
    fn route(&self, probe: &RouteProbe) -> impl Future<Output = Result<u16>> + Send;
}

/// The real probe over HTTP with short timeouts. Redirects are not followed: a probe expecting a
/// 301 from the HTTP→HTTPS redirect must see it.
#[derive(Debug, Clone)]
pub struct HttpProbe {
    client: reqwest::Client,
}

impl HttpProbe {
    /// Builds the client. The process must have installed a rustls crypto provider.
    ///
    /// # Errors
    /// [`Error::Client`] when reqwest cannot build the client.
    pub fn new() -> Result<Self> {
        let client = Self::builder().build().map_err(Error::Client)?;
        Ok(Self { client })
    }

    /// What every probe client shares: bounded waits, redirects and proxies left alone (a probe
    /// judges the answer the proxy itself gives).
    fn builder() -> reqwest::ClientBuilder {
        reqwest::Client::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            .timeout(REQUEST_TIMEOUT)
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
    }

    /// `https://<host><path>` connected to `address`, so SNI and `Host` carry the route's host
    /// as a browser's would, and the proxy picks the certificate and router it serves for it.
    async fn route_tls(&self, probe: &RouteProbe) -> Result<u16> {
        let bad_url = || Error::Url(format!("https://{}{}", probe.host, probe.path));
        if probe.host.is_empty() || probe.host.contains(['/', ':', '@', ' ']) {
            return Err(bad_url());
        }
        let addr = tokio::net::lookup_host(probe.address.as_str())
            .await
            .ok()
            .and_then(|mut addrs| addrs.next())
            .ok_or_else(bad_url)?;
        let client = Self::builder()
            .danger_accept_invalid_certs(true)
            .resolve(&probe.host, addr)
            .build()
            .map_err(Error::Client)?;
        let url = format!("https://{}{}", probe.host, probe.path);
        route_status(client.get(&url), url).await
    }

    async fn get(&self, url: String) -> Result<reqwest::Response> {
        send(self.client.get(&url), url).await
    }
}

impl ProxyProbe for HttpProbe {
    async fn ping(&self, api: &str) -> Result<bool> {
        let url = format!("{}/ping", api.trim_end_matches('/'));
        Ok(self.get(url).await?.status().as_u16() == 200)
    }

    async fn rawdata(&self, api: &str) -> Result<Vec<RawEntry>> {
        let url = format!("{}/api/rawdata", api.trim_end_matches('/'));
        let response = self.get(url.clone()).await?;
        let status = response.status().as_u16();
        if status != 200 {
            return Err(Error::Status { url, status });
        }
        let body = capped(response, url, MAX_RAWDATA_BYTES).await?;
        parse_rawdata(&body)
    }

    async fn route(&self, probe: &RouteProbe) -> Result<u16> {
        if !probe.path.starts_with('/') || probe.address.contains('/') {
            return Err(Error::Url(format!("{}{}", probe.address, probe.path)));
        }
        if probe.tls {
            return self.route_tls(probe).await;
        }
        let url = format!("http://{}{}", probe.address, probe.path);
        let request = self
            .client
            .get(&url)
            .header(reqwest::header::HOST, &probe.host);
        route_status(request, url).await
    }
}

/// Sends `request`; a failure names `url`.
async fn send(request: reqwest::RequestBuilder, url: String) -> Result<reqwest::Response> {
    request
        .send()
        .await
        .map_err(|source| Error::Request { url, source })
}

/// The status a route answers `request` (to `url`) with; its body is read, up to
/// [`MAX_PROBE_BODY_BYTES`], so a route that never finishes its answer fails the probe.
async fn route_status(request: reqwest::RequestBuilder, url: String) -> Result<u16> {
    let response = send(request, url.clone()).await?;
    let status = response.status().as_u16();
    capped(response, url, MAX_PROBE_BODY_BYTES).await?;
    Ok(status)
}

/// The body of `response`, at most `limit` bytes; more is [`Error::TooLarge`] naming `url`.
async fn capped(response: reqwest::Response, url: String, limit: usize) -> Result<bytes::Bytes> {
    match crate::transport::read_capped(response, limit).await {
        Ok(Some(body)) => Ok(body),
        Ok(None) => Err(Error::TooLarge { url, limit }),
        Err(source) => Err(Error::Request { url, source }),
    }
}

/// Sends every route probe and reports each outcome (a probe that cannot be sent fails).
pub async fn probe_routes<P: ProxyProbe + ?Sized>(
    probe: &P,
    routes: &[RouteProbe],
) -> Vec<ProbeOutcome> {
    let mut outcomes = Vec::with_capacity(routes.len());
    for route in routes {
        let outcome = match probe.route(route).await {
            Ok(code) => ProbeOutcome {
                name: route.name(),
                ok: code == route.expect_status,
                detail: format!("got {code}, want {}", route.expect_status),
            },
            Err(e) => ProbeOutcome {
                name: route.name(),
                ok: false,
                detail: e.to_string(),
            },
        };
        outcomes.push(outcome);
    }
    outcomes
}

#[cfg(any(test, feature = "test-support"))]
pub mod fake {
    //! An in-memory [`ProxyProbe`] whose answers tests set.

    use std::collections::BTreeMap;
    use std::sync::{Arc, Mutex, PoisonError};

    use super::{ProxyProbe, Result, RouteProbe};
    use crate::proxy::traefik::{EntryKind, EntryStatus, RawEntry};

    #[derive(Debug, Default)]
    struct State {
        ping_ok: bool,
        unreachable: bool,
        rawdata: Vec<RawEntry>,
        routes: BTreeMap<String, u16>,
        calls: usize,
        targets: Vec<String>,
    }

    /// A probe answering from memory. Clones share state, so a test keeps one handle and gives
    /// the operator another.
    #[derive(Debug, Clone, Default)]
    pub struct FakeProbe {
        state: Arc<Mutex<State>>,
    }

    impl FakeProbe {
        /// A healthy proxy: `/ping` 200, empty rawdata, every route answers 200.
        #[must_use]
        pub fn healthy() -> Self {
            let probe = Self::default();
            probe.with(|s| s.ping_ok = true);
            probe
        }

        fn with<T>(&self, f: impl FnOnce(&mut State) -> T) -> T {
            let mut guard = self.state.lock().unwrap_or_else(PoisonError::into_inner);
            f(&mut guard)
        }

        /// Sets whether `/ping` answers 200.
        pub fn set_ping(&self, ok: bool) {
            self.with(|s| s.ping_ok = ok);
        }

        /// Makes every call fail as if the proxy were unreachable (or not).
        pub fn set_unreachable(&self, unreachable: bool) {
            self.with(|s| s.unreachable = unreachable);
        }

        /// Replaces the rawdata entries.
        pub fn set_rawdata(&self, entries: Vec<RawEntry>) {
            self.with(|s| s.rawdata = entries);
        }

        /// Marks every named entry enabled (middlewares when the name has no kind hint).
        pub fn set_enabled(&self, names: &[String]) {
            let entries = names
                .iter()
                .map(|n| RawEntry {
                    name: n.clone(),
                    kind: EntryKind::Middleware,
                    status: EntryStatus::Enabled,
                    errors: Vec::new(),
                    middlewares: Vec::new(),
                })
                .collect();
            self.set_rawdata(entries);
        }

        /// Sets the status a route probe for `host` gets (default 200).
        pub fn set_route(&self, host: &str, status: u16) {
            self.with(|s| s.routes.insert(host.to_owned(), status));
        }

        /// How many calls the operator made.
        #[must_use]
        pub fn calls(&self) -> usize {
            self.with(|s| s.calls)
        }

        /// Every address the operator asked for, in order: the API base URL of `/ping` and
        /// `/api/rawdata`, and `host:port` of a route probe.
        #[must_use]
        pub fn targets(&self) -> Vec<String> {
            self.with(|s| s.targets.clone())
        }

        fn call(&self, target: &str) -> Result<()> {
            self.with(|s| {
                s.calls += 1;
                s.targets.push(target.to_owned());
                if s.unreachable {
                    Err(super::Error::Url("fake proxy unreachable".into()))
                } else {
                    Ok(())
                }
            })
        }
    }

    impl ProxyProbe for FakeProbe {
        async fn ping(&self, api: &str) -> Result<bool> {
            self.call(api)?;
            Ok(self.with(|s| s.ping_ok))
        }

        async fn rawdata(&self, api: &str) -> Result<Vec<RawEntry>> {
            self.call(api)?;
            Ok(self.with(|s| s.rawdata.clone()))
        }

        async fn route(&self, probe: &RouteProbe) -> Result<u16> {
            self.call(&probe.address)?;
            Ok(self.with(|s| s.routes.get(&probe.host).copied().unwrap_or(200)))
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::panic)] // tests fail loudly
mod tests {
    use super::*;

    #[tokio::test]
    async fn http_probe_reports_a_refused_connection_as_an_error_naming_the_url() {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        drop(listener);
        let probe = HttpProbe::new().unwrap();
        let err = probe.ping(&format!("http://{addr}")).await.unwrap_err();
        assert!(
            err.to_string().contains(&format!("http://{addr}/ping")),
            "{err}"
        );
    }

    #[tokio::test]
    async fn http_probe_sends_the_host_header_and_returns_the_status_without_following_redirects() {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let app = axum::Router::new().fallback(|headers: axum::http::HeaderMap| async move {
            match headers.get("host").and_then(|h| h.to_str().ok()) {
                Some("demo.localhost") => (
                    axum::http::StatusCode::MOVED_PERMANENTLY,
                    [("location", "https://x/")],
                ),
                _ => (axum::http::StatusCode::NOT_FOUND, [("location", "")]),
            }
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(async move { axum::serve(listener, app).await });
        let probe = HttpProbe::new().unwrap();
        let mut route = RouteProbe {
            address: addr.to_string(),
            host: "demo.localhost".into(),
            path: "/".into(),
            expect_status: 301,
            tls: false,
        };
        assert_eq!(probe.route(&route).await.unwrap(), 301);
        route.host = "other.localhost".into();
        assert_eq!(probe.route(&route).await.unwrap(), 404);
        server.abort();
    }

    fn spec_with_probes(probes: &str) -> crate::spec::ValidatedSpec {
        let doc = format!(
            "apiVersion: proxy-operator.io/v1alpha1
kind: ProxyConfig
spec:
  proxy: traefik
  entryPoints:
    web: {{address: \":18080\", redirectTo: websecure}}
    websecure: {{address: \":18443\"}}
  rollout:
    probes:
{probes}"
        );
        crate::spec::load(doc.as_bytes()).unwrap()
    }

    #[test]
    fn a_default_probe_on_the_redirecting_web_entry_point_goes_to_websecure_over_tls() {
        let spec = spec_with_probes(
            "      - host: app.example.test
      - host: app.example.test
        path: /old
        expectStatus: 308
      - host: app.example.test
        entryPoint: websecure
",
        );
        let probes = route_probes(&spec, "127.0.0.1");
        assert_eq!(probes.len(), 3);
        assert_eq!(
            probes[0].address, "127.0.0.1:18443",
            "follows web's redirect"
        );
        assert!(probes[0].tls);
        assert_eq!(probes[0].expect_status, 200);
        assert_eq!(
            (probes[1].address.as_str(), probes[1].tls),
            ("127.0.0.1:18080", false),
            "a probe expecting the redirect must see it on web"
        );
        assert_eq!(
            (probes[2].address.as_str(), probes[2].tls),
            ("127.0.0.1:18443", true),
            "websecure is probed over TLS"
        );
    }

    /// A TLS server with a self-signed certificate for `app.example.test` that answers 204 only
    /// when both SNI and `Host` name that host (421 otherwise), like a proxy routing by host.
    async fn tls_server() -> (std::net::SocketAddr, tokio::task::JoinHandle<()>) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let cert = rcgen::generate_simple_self_signed(vec!["app.example.test".to_owned()]).unwrap();
        let key = rustls_pki_types::PrivateKeyDer::Pkcs8(cert.signing_key.serialize_der().into());
        let config = rustls::ServerConfig::builder()
            .with_no_client_auth()
            .with_single_cert(vec![cert.cert.der().clone()], key)
            .unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(std::sync::Arc::new(config));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let task = tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let Ok(mut tls) = acceptor.accept(tcp).await else {
                    continue;
                };
                let sni = tls.get_ref().1.server_name().map(str::to_owned);
                let mut buf = vec![0u8; 4096];
                let n = tls.read(&mut buf).await.unwrap_or(0);
                let request = String::from_utf8_lossy(&buf[..n]).to_lowercase();
                let ok = sni.as_deref() == Some("app.example.test")
                    && request.contains("\r\nhost: app.example.test");
                let status = if ok {
                    "204 No Content"
                } else {
                    "421 Misdirected Request"
                };
                let answer =
                    format!("HTTP/1.1 {status}\r\ncontent-length: 0\r\nconnection: close\r\n\r\n");
                let _ = tls.write_all(answer.as_bytes()).await;
                let _ = tls.shutdown().await;
            }
        });
        (addr, task)
    }

    #[tokio::test]
    async fn http_probe_reaches_a_tls_route_with_the_routes_sni_and_host_despite_a_self_signed_certificate()
     {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let (addr, server) = tls_server().await;
        let probe = HttpProbe::new().unwrap();
        let route = RouteProbe {
            address: addr.to_string(),
            host: "app.example.test".into(),
            path: "/health".into(),
            expect_status: 204,
            tls: true,
        };
        assert_eq!(probe.route(&route).await.unwrap(), 204);
        // Plain HTTP to the TLS port (the old behaviour) never gets an answer.
        let plain = RouteProbe {
            tls: false,
            ..route.clone()
        };
        assert!(probe.route(&plain).await.is_err());
        server.abort();
    }

    /// A loopback server answering every request with `body` (a streamed, unsized body when
    /// `chunked`: the cap must hold without a Content-Length too).
    async fn serve_big(
        size: usize,
        chunked: bool,
    ) -> (std::net::SocketAddr, tokio::task::JoinHandle<()>) {
        let app = axum::Router::new().fallback(move || async move {
            if chunked {
                let chunks = futures::stream::iter(
                    (0..size / 65536 + 1).map(|_| Ok::<_, std::io::Error>(vec![b'x'; 65536])),
                );
                axum::body::Body::from_stream(chunks)
            } else {
                axum::body::Body::from(vec![b'x'; size])
            }
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        (addr, server)
    }

    #[tokio::test]
    async fn an_oversized_rawdata_answer_is_an_error_naming_the_url_not_a_9_mib_buffer() {
        let _ = rustls::crypto::ring::default_provider().install_default();
        for chunked in [false, true] {
            let (addr, server) = serve_big(MAX_RAWDATA_BYTES + 1024 * 1024, chunked).await;
            let probe = HttpProbe::new().unwrap();
            let err = probe.rawdata(&format!("http://{addr}")).await.unwrap_err();
            assert!(
                matches!(
                    err,
                    Error::TooLarge {
                        limit: MAX_RAWDATA_BYTES,
                        ..
                    }
                ),
                "{err}"
            );
            assert!(
                err.to_string()
                    .contains(&format!("http://{addr}/api/rawdata")),
                "{err}"
            );
            server.abort();
        }
    }

    #[tokio::test]
    async fn a_route_probe_with_an_oversized_body_fails_naming_the_url() {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let (addr, server) = serve_big(MAX_PROBE_BODY_BYTES + 1, true).await;
        let route = RouteProbe {
            address: addr.to_string(),
            host: "app.example.test".into(),
            path: "/big".into(),
            expect_status: 200,
            tls: false,
        };
        let err = HttpProbe::new().unwrap().route(&route).await.unwrap_err();
        assert!(
            err.to_string().contains(&format!("http://{addr}/big")),
            "{err}"
        );
        assert!(
            err.to_string().contains("larger than 1048576 bytes"),
            "{err}"
        );
        let outcome = probe_routes(&HttpProbe::new().unwrap(), &[route]).await;
        assert!(!outcome[0].ok, "an oversized answer fails the probe");
        server.abort();
    }

    #[tokio::test]
    async fn a_route_probe_under_the_cap_reports_its_status() {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let (addr, server) = serve_big(MAX_PROBE_BODY_BYTES - 1, true).await;
        let route = RouteProbe {
            address: addr.to_string(),
            host: "app.example.test".into(),
            path: "/".into(),
            expect_status: 200,
            tls: false,
        };
        // serve_big rounds up to whole 64 KiB chunks: 1 MiB exactly, still within the cap.
        assert_eq!(HttpProbe::new().unwrap().route(&route).await.unwrap(), 200);
        server.abort();
    }
}
