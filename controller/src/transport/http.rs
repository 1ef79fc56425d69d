//! One HTTP client per API: a token header, a shared rate limiter, full-jitter retries and
//! timeouts sized for blocking queries.

use std::error::Error as _;
use std::fmt;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use backon::Retryable;
use bytes::{Bytes, BytesMut};
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use http::{HeaderMap, Method};
use rand::Rng;
use serde::de::DeserializeOwned;
use tracing::Instrument as _;
use url::Url;

use crate::metrics::{self, Metrics};

use super::{
    Api, ClientConfig, Endpoint, Error, QueryMeta, QueryOptions, RetryPolicy, Timeouts, Token,
};

/// When a failed request may be sent again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Retry {
    /// Reads and writes whose repetition cannot do harm: a repeated plain PUT writes the same
    /// value, a repeated CAS write or `EnforceIndex` register fails its check instead of writing
    /// twice, a repeated delete deletes nothing. Retried on every retryable error.
    Idempotent,
    /// Writes whose repetition would do something twice (creating a session): retried only when
    /// the request certainly never reached the server (connection refused) or was refused
    /// with 429 before being processed.
    UnsentOnly,
    /// Never retried.
    Never,
}

/// A request body.
#[derive(Debug, Clone, Default)]
pub enum Body {
    /// No body.
    #[default]
    Empty,
    /// Raw bytes (a KV value).
    Bytes(Vec<u8>),
    /// A JSON document.
    Json(Vec<u8>),
}

/// A request to one API, described independently of the base address.
#[derive(Debug, Clone)]
pub struct Request {
    method: Method,
    segments: Vec<String>,
    query: Vec<(String, String)>,
    body: Body,
    blocking: Option<QueryOptions>,
    retry: Retry,
    accept: &'static [u16],
}

impl Request {
    /// A request with `method` to `path` (`/v1/status/leader`); segments are percent-encoded.
    pub fn new(method: Method, path: &str) -> Request {
        Request {
            method,
            segments: path
                .trim_start_matches('/')
                .split('/')
                .map(str::to_owned)
                .collect(),
            query: Vec::new(),
            body: Body::Empty,
            blocking: None,
            retry: Retry::Idempotent,
            accept: &[],
        }
    }

    /// A GET request.
    pub fn get(path: &str) -> Request {
        Request::new(Method::GET, path)
    }

    /// A PUT request.
    pub fn put(path: &str) -> Request {
        Request::new(Method::PUT, path)
    }

    /// A POST request.
    pub fn post(path: &str) -> Request {
        Request::new(Method::POST, path)
    }

    /// A DELETE request.
    pub fn delete(path: &str) -> Request {
        Request::new(Method::DELETE, path)
    }

    /// Appends a KV key (or any `/`-separated name) to the path, each part percent-encoded, so
    /// `a b/c?d` becomes `/a%20b/c%3Fd`.
    #[must_use]
    pub fn key(mut self, key: &str) -> Request {
        self.segments.extend(key.split('/').map(str::to_owned));
        self
    }

    /// Adds a query parameter.
    #[must_use]
    pub fn query(mut self, name: &str, value: impl ToString) -> Request {
        self.query.push((name.to_owned(), value.to_string()));
        self
    }

    /// Adds a presence flag (`?recurse`); Consul checks presence, not value.
    #[must_use]
    pub fn flag(mut self, name: &str) -> Request {
        self.query.push((name.to_owned(), String::new()));
        self
    }

    /// Sets a raw body.
    #[must_use]
    pub fn bytes(mut self, body: Vec<u8>) -> Request {
        self.body = Body::Bytes(body);
        self
    }

    /// Sets a JSON body.
    pub fn json<T: serde::Serialize + ?Sized>(
        mut self,
        body: &T,
    ) -> Result<Request, serde_json::Error> {
        self.body = Body::Json(serde_json::to_vec(body)?);
        Ok(self)
    }

    /// Makes this a blocking read.
    #[must_use]
    pub fn blocking(mut self, options: QueryOptions) -> Request {
        self.blocking = Some(options);
        self
    }

    /// Sets the retry mode (default [`Retry::Idempotent`]).
    #[must_use]
    pub fn retry(mut self, retry: Retry) -> Request {
        self.retry = retry;
        self
    }

    /// Non-2xx statuses answered as `Ok` because they carry meaning (404 for an absent key,
    /// 409 for a rolled-back transaction).
    #[must_use]
    pub fn accept(mut self, statuses: &'static [u16]) -> Request {
        self.accept = statuses;
        self
    }

    /// The path, for messages.
    pub fn path(&self) -> String {
        format!("/{}", self.segments.join("/"))
    }
}

/// An answer with a 2xx status (or one listed in [`Request::accept`]).
#[derive(Debug, Clone)]
pub struct Response {
    /// HTTP status.
    pub status: u16,
    /// Response headers.
    pub headers: HeaderMap,
    /// Body.
    pub body: Bytes,
    /// Index and leader headers.
    pub meta: QueryMeta,
    api: Api,
    method: String,
    path: String,
}

impl Response {
    /// Decodes the JSON body.
    pub fn json<T: DeserializeOwned>(&self) -> Result<T, Error> {
        serde_json::from_slice(&self.body).map_err(|source| Error::Decode {
            api: self.api,
            method: self.method.clone(),
            path: self.path.clone(),
            source,
        })
    }

    /// The body as text (error bodies are plain text).
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// An HTTP client of one API. Cheap to clone; clones share the connection pool and the rate
/// limiter, so the configured rate holds for the whole process.
#[derive(Clone)]
pub struct HttpClient {
    inner: Arc<Inner>,
}

struct Inner {
    api: Api,
    endpoint: String,
    base: Url,
    http: reqwest::Client,
    token: Option<Token>,
    namespace: Option<String>,
    region: Option<String>,
    limiter: DefaultDirectRateLimiter,
    retry: RetryPolicy,
    timeouts: Timeouts,
    /// Where each request is counted ([`HttpClient::observe`]); unset, nothing is.
    observer: OnceLock<Metrics>,
}

impl fmt::Debug for HttpClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HttpClient")
            .field("api", &self.inner.api)
            .field("endpoint", &self.inner.endpoint)
            .field("token", &self.inner.token)
            .field("namespace", &self.inner.namespace)
            .field("region", &self.inner.region)
            .finish_non_exhaustive()
    }
}

/// Largest part of an error body kept in an error message.
const MAX_ERROR_BODY: usize = 512;

/// Largest Consul or Nomad answer the operator reads (issue 13). The biggest legitimate answers
/// are KV listings under the operator's prefix (values ≤ 512 KiB each) and catalogs of 10,000
/// services, well under this; anything larger is a misbehaving server or proxy.
pub const MAX_API_BODY: usize = 16 * 1024 * 1024;

/// Most a body read pre-allocates on the word of `Content-Length`.
const MAX_PREALLOCATION: usize = 64 * 1024;

/// Reads `response`'s body as a stream and stops as soon as it would pass `limit` bytes, so a
/// server that sends an endless or oversized body costs at most `limit` bytes of memory.
/// `Ok(None)` means the body was longer than `limit` (the connection is dropped, not drained).
/// A declared `Content-Length` over the limit is refused before reading, but a smaller one is
/// not trusted: the count is kept on the bytes that actually arrive.
///
/// The one capped reader for every HTTP answer the operator reads: Consul and Nomad
/// ([`MAX_API_BODY`]), and the proxy probes (their callers pass their own limits).
pub async fn read_capped(
    mut response: reqwest::Response,
    limit: usize,
) -> Result<Option<Bytes>, reqwest::Error> {
    let declared = response.content_length();
    if declared.is_some_and(|n| n > limit as u64) {
        return Ok(None);
    }
    let capacity = declared.map_or(0, |n| usize::try_from(n).unwrap_or(limit));
    let mut body = BytesMut::with_capacity(capacity.min(limit).min(MAX_PREALLOCATION));
    while let Some(chunk) = response.chunk().await? {
        if body.len() + chunk.len() > limit {
            return Ok(None);
        }
        body.extend_from_slice(&chunk);
    }
    Ok(Some(body.freeze()))
}

impl HttpClient {
    /// Builds a client: reads the token file, loads TLS material, sets up the rate limiter.
    pub fn new(config: &ClientConfig) -> Result<HttpClient, Error> {
        let token = match &config.token_file {
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|source| Error::ReadFile {
                    what: "token file",
                    path: path.clone(),
                    source,
                })?;
                let from_file = Token::new(text);
                if from_file.is_empty() {
                    config.token.clone()
                } else {
                    Some(from_file)
                }
            }
            None => config.token.clone(),
        }
        .filter(|t| !t.is_empty());

        let mut builder = reqwest::Client::builder()
            .connect_timeout(config.timeouts.connect)
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("proxy-operator/", env!("CARGO_PKG_VERSION")))
            .no_proxy();
        let base = match &config.endpoint {
            Endpoint::Tcp(url) => {
                if url.scheme() == "https" {
                    if config.tls.skip_verify {
                        tracing::warn!(api = %config.api, "TLS certificate verification is disabled");
                    }
                    builder =
                        builder.tls_backend_preconfigured(super::tls::client_config(&config.tls)?);
                }
                url.clone()
            }
            Endpoint::Unix(path) => {
                builder = builder.unix_socket(path.clone());
                Url::parse("http://localhost/").map_err(|_| Error::InvalidAddress {
                    value: config.endpoint.to_string(),
                    reason: "cannot address a unix socket",
                })?
            }
        };
        let http = builder.build().map_err(|source| Error::BuildClient {
            api: config.api,
            source,
        })?;
        let quota =
            Quota::per_second(config.rate_limit.per_second).allow_burst(config.rate_limit.burst);
        Ok(HttpClient {
            inner: Arc::new(Inner {
                api: config.api,
                endpoint: config.endpoint.to_string(),
                base,
                http,
                token,
                namespace: config.namespace.clone(),
                region: config.region.clone(),
                limiter: RateLimiter::direct(quota),
                retry: config.retry,
                timeouts: config.timeouts,
                observer: OnceLock::new(),
            }),
        })
    }

    /// Which API this client talks to.
    pub fn api(&self) -> Api {
        self.inner.api
    }

    /// Counts every request of this client and its clones in `metrics` (endpoint class,
    /// status code or `error`, latency). The first call wins (false: one was set already);
    /// without one, requests cost one atomic load more.
    pub fn observe(&self, metrics: Metrics) -> bool {
        self.inner.observer.set(metrics).is_ok()
    }

    /// The address, for messages.
    pub fn endpoint(&self) -> &str {
        &self.inner.endpoint
    }

    /// Sends `request`, waiting for the rate limiter, retrying with full-jitter exponential
    /// backoff when the request's [`Retry`] mode and the error allow it.
    pub async fn send(&self, request: Request) -> Result<Response, Error> {
        let policy = self.inner.retry;
        let mode = request.retry;
        let attempt = || self.attempt(&request);
        attempt
            .retry(FullJitter::new(policy))
            .sleep(tokio::time::sleep)
            .when(|e: &Error| match mode {
                Retry::Idempotent => e.is_retryable(),
                Retry::UnsentOnly => {
                    matches!(
                        e,
                        Error::Connect {
                            maybe_sent: false,
                            ..
                        }
                    ) || e.status() == Some(429)
                }
                Retry::Never => false,
            })
            .notify(|e: &Error, delay: Duration| {
                tracing::debug!(api = %self.inner.api, error = %e, ?delay, "retrying request");
            })
            .await
    }

    fn url(&self, request: &Request) -> Url {
        let mut url = self.inner.base.clone();
        if let Ok(mut segments) = url.path_segments_mut() {
            segments.pop_if_empty().extend(&request.segments);
        }
        {
            let mut pairs = url.query_pairs_mut();
            for (k, v) in &request.query {
                if v.is_empty() {
                    pairs.append_key_only(k);
                } else {
                    pairs.append_pair(k, v);
                }
            }
            if let Some(ns) = &self.inner.namespace {
                pairs.append_pair(
                    match self.inner.api {
                        Api::Consul => "ns",
                        Api::Nomad => "namespace",
                    },
                    ns,
                );
            }
            if let (Api::Nomad, Some(region)) = (self.inner.api, &self.inner.region) {
                pairs.append_pair("region", region);
            }
            if let Some(q) = request.blocking.filter(|q| q.index > 0) {
                pairs.append_pair("index", &q.index.to_string());
                if let Some(wait) = q.wait {
                    pairs.append_pair(
                        "wait",
                        &super::go_duration(wait.min(self.inner.api.max_wait())),
                    );
                }
            }
        }
        if url.query() == Some("") {
            url.set_query(None);
        }
        url
    }

    /// The whole-request timeout: for a blocking query, the wait the server will use plus its
    /// jitter (wait/16) plus a margin, so an answer is never cut off but a dead connection is.
    fn timeout(&self, request: &Request) -> Duration {
        match request.blocking.filter(|q| q.index > 0) {
            Some(q) => {
                let wait = q
                    .wait
                    .unwrap_or(Duration::from_secs(300))
                    .min(self.inner.api.max_wait());
                wait + wait / 16 + self.inner.timeouts.blocking_margin
            }
            None => self.inner.timeouts.request,
        }
    }

    /// One request, in a span of its own (the endpoint class names it, never the key or job).
    async fn attempt(&self, request: &Request) -> Result<Response, Error> {
        let path = request.path();
        let class = metrics::endpoint_class(&path);
        // A span's name is static metadata, so each API spells its own; the fields are shared.
        macro_rules! request_span {
            ($name:literal) => {
                tracing::info_span!(
                    $name,
                    otel.name = format!("{} {} {class}", $name, request.method),
                    http.request.method = %request.method,
                    class,
                    http.response.status_code = tracing::field::Empty,
                )
            };
        }
        let span = match self.inner.api {
            Api::Consul => request_span!("consul"),
            Api::Nomad => request_span!("nomad"),
        };
        self.inner.limiter.until_ready().await;
        let started = Instant::now();
        let result = self.attempt_once(request).instrument(span.clone()).await;
        let status = match &result {
            Ok(response) => Some(response.status),
            Err(e) => e.status(),
        };
        if let Some(code) = status {
            span.record("http.response.status_code", code);
        }
        if let Some(observer) = self.inner.observer.get() {
            let api = match self.inner.api {
                Api::Consul => metrics::Api::Consul,
                Api::Nomad => metrics::Api::Nomad,
            };
            observer.api_request(api, class, status, started.elapsed());
        }
        result
    }

    async fn attempt_once(&self, request: &Request) -> Result<Response, Error> {
        let inner = &*self.inner;
        let url = self.url(request);
        let path = request.path();
        let method = request.method.to_string();
        let timeout = self.timeout(request);
        let mut builder = inner
            .http
            .request(request.method.clone(), url)
            .timeout(timeout);
        if let Some(token) = &inner.token {
            builder = builder.header(inner.api.token_header(), token.expose());
        }
        builder = match &request.body {
            Body::Empty => builder,
            Body::Bytes(b) => builder.body(b.clone()),
            Body::Json(b) => builder
                .header(http::header::CONTENT_TYPE, "application/json")
                .body(b.clone()),
        };
        let started = Instant::now();
        let result = builder.send().await;
        let response = match result {
            Ok(r) => r,
            Err(e) => return Err(self.transport_error(e, &method, &path, timeout)),
        };
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let body = match read_capped(response, MAX_API_BODY).await {
            Ok(Some(b)) => b,
            Ok(None) => {
                return Err(Error::BodyTooLarge {
                    api: inner.api,
                    method,
                    path,
                    limit: MAX_API_BODY,
                });
            }
            Err(e) => return Err(self.transport_error(e, &method, &path, timeout)),
        };
        tracing::debug!(api = %inner.api, %method, %path, status, elapsed = ?started.elapsed(), "request");
        let meta = parse_meta(inner.api, &headers);
        if (200..300).contains(&status) || request.accept.contains(&status) {
            return Ok(Response {
                status,
                headers,
                body,
                meta,
                api: inner.api,
                method,
                path,
            });
        }
        Err(Error::Status {
            api: inner.api,
            method,
            path,
            status,
            message: self.scrub(&body),
        })
    }

    /// Keeps an error body short and free of the client's own token, whatever the server echoes.
    fn scrub(&self, body: &[u8]) -> String {
        let mut text = String::from_utf8_lossy(body).trim().to_owned();
        if let Some(token) = &self.inner.token {
            text = text.replace(token.expose(), "<redacted>");
        }
        if text.len() > MAX_ERROR_BODY {
            let mut cut = MAX_ERROR_BODY;
            while !text.is_char_boundary(cut) {
                cut -= 1;
            }
            text.truncate(cut);
            text.push('…');
        }
        text
    }

    fn transport_error(
        &self,
        e: reqwest::Error,
        method: &str,
        path: &str,
        timeout: Duration,
    ) -> Error {
        if e.is_timeout() {
            return Error::Timeout {
                api: self.inner.api,
                method: method.to_owned(),
                path: path.to_owned(),
                after: timeout,
            };
        }
        let maybe_sent = !e.is_connect();
        let mut detail = String::new();
        let mut source: Option<&dyn std::error::Error> = e.source();
        let mut parts = Vec::new();
        while let Some(s) = source {
            parts.push(s.to_string());
            source = s.source();
        }
        parts.dedup();
        if parts.is_empty() {
            parts.push(e.to_string());
        }
        detail.push_str(&parts.join(": "));
        let certificate_problem =
            detail.contains("invalid peer certificate") || detail.contains("received fatal alert");
        if let Some(hint) = tls_hint(&detail, self.inner.api) {
            detail.push_str(" (");
            detail.push_str(hint);
            detail.push(')');
        }
        if certificate_problem {
            return Error::Tls {
                api: self.inner.api,
                endpoint: self.inner.endpoint.clone(),
                method: method.to_owned(),
                path: path.to_owned(),
                detail,
            };
        }
        Error::Connect {
            api: self.inner.api,
            endpoint: self.inner.endpoint.clone(),
            method: method.to_owned(),
            path: path.to_owned(),
            detail,
            maybe_sent,
        }
    }
}

/// Plain words for the certificate failures operators actually meet.
fn tls_hint(detail: &str, api: Api) -> Option<&'static str> {
    if detail.contains("UnknownIssuer") || detail.contains("unknown issuer") {
        Some(match api {
            Api::Consul => {
                "the server certificate is not signed by a trusted CA: unknown CA; set CONSUL_CACERT to the CA that issued it"
            }
            Api::Nomad => {
                "the server certificate is not signed by a trusted CA: unknown CA; set NOMAD_CACERT to the CA that issued it"
            }
        })
    } else if detail.contains("NotValidForName") || detail.contains("not valid for name") {
        Some("the server certificate is not valid for this host name; set the TLS server name")
    } else if detail.contains("CertificateRequired") || detail.contains("certificate required") {
        Some("the server requires a client certificate; set the client certificate and key")
    } else if detail.contains("Expired") {
        Some("the server certificate has expired")
    } else {
        None
    }
}

fn parse_meta(api: Api, headers: &HeaderMap) -> QueryMeta {
    let header = |name: &str| {
        let full = format!("{}{name}", api.header_prefix());
        headers
            .get(full.as_str())
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    QueryMeta {
        index: header("index").and_then(|v| v.parse().ok()).unwrap_or(0),
        known_leader: header("knownleader").is_some_and(|v| v == "true"),
        last_contact: Duration::from_millis(
            header("lastcontact")
                .and_then(|v| v.parse().ok())
                .unwrap_or(0),
        ),
    }
}

/// Exponential backoff with full jitter: attempt n sleeps a uniformly random time in
/// `0..=min(max, min·2ⁿ)`, so clients that failed together do not retry together.
#[derive(Debug, Clone)]
struct FullJitter {
    attempt: u32,
    remaining: usize,
    min: Duration,
    max: Duration,
}

impl FullJitter {
    fn new(policy: RetryPolicy) -> FullJitter {
        FullJitter {
            attempt: 0,
            remaining: policy.max_retries,
            min: policy.min_delay,
            max: policy.max_delay,
        }
    }
}

impl Iterator for FullJitter {
    type Item = Duration;

    fn next(&mut self) -> Option<Duration> {
        if self.remaining == 0 {
            return None;
        }
        self.remaining -= 1;
        let cap = self
            .min
            .saturating_mul(1u32 << self.attempt.min(20))
            .min(self.max);
        self.attempt += 1;
        let nanos = u64::try_from(cap.as_nanos()).unwrap_or(u64::MAX);
        Some(Duration::from_nanos(rand::rng().random_range(0..=nanos)))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::panic)] // tests fail loudly
mod tests {
    use super::*;

    #[test]
    fn full_jitter_stays_under_the_growing_cap_and_stops_after_the_budget() {
        let policy = RetryPolicy {
            max_retries: 6,
            min_delay: Duration::from_millis(100),
            max_delay: Duration::from_millis(1000),
        };
        let delays: Vec<_> = FullJitter::new(policy).collect();
        assert_eq!(delays.len(), 6);
        for (n, d) in delays.iter().enumerate() {
            let cap = Duration::from_millis(100 * (1 << n)).min(Duration::from_millis(1000));
            assert!(*d <= cap, "attempt {n}: {d:?} > {cap:?}");
        }
    }

    #[test]
    fn urls_encode_keys_and_add_namespace_and_blocking_parameters() {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let mut config = ClientConfig::for_address(Api::Consul, "http://127.0.0.1:8500").unwrap();
        config.namespace = Some("team".into());
        let client = HttpClient::new(&config).unwrap();
        let req = Request::get("/v1/kv")
            .key("a b/c?d")
            .flag("recurse")
            .blocking(QueryOptions::blocking(7, Duration::from_secs(60)));
        assert_eq!(
            client.url(&req).as_str(),
            "http://127.0.0.1:8500/v1/kv/a%20b/c%3Fd?recurse&ns=team&index=7&wait=60s"
        );
        // Blocking read timeout: wait + wait/16 + margin.
        assert_eq!(
            client.timeout(&req),
            Duration::from_secs(60) + Duration::from_millis(3750) + Duration::from_secs(5)
        );
        let plain = Request::get("/v1/status/leader");
        assert_eq!(
            client.url(&plain).as_str(),
            "http://127.0.0.1:8500/v1/status/leader?ns=team"
        );
    }

    #[test]
    fn index_zero_sends_no_blocking_parameters() {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let config = ClientConfig::for_address(Api::Nomad, "http://127.0.0.1:4646").unwrap();
        let client = HttpClient::new(&config).unwrap();
        let req = Request::get("/v1/job/x").blocking(QueryOptions {
            index: 0,
            wait: Some(Duration::from_secs(5)),
        });
        assert_eq!(client.url(&req).as_str(), "http://127.0.0.1:4646/v1/job/x");
        // Nomad's servers clamp wait to 5 minutes; the timeout follows the clamp.
        let long = Request::get("/v1/job/x")
            .blocking(QueryOptions::blocking(3, Duration::from_secs(3600)));
        assert!(client.url(&long).as_str().ends_with("wait=300s"));
        assert_eq!(
            client.timeout(&long),
            Duration::from_secs(300 + 18) + Duration::from_millis(750) + Duration::from_secs(5)
        );
    }
}
