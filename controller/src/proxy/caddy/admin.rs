//! Caddy's admin API, behind a small trait so the driver can be tested with a fake.
//!
//! - `POST /load`: the whole config, atomically. When Caddy refuses it (400), it keeps running
//!   the old config; the error text comes back in [`Error::Rejected`].
//! - `GET /config/apps/http/@id`: the identity of the loaded config ([`super::config`]).
//! - `GET /reverse_proxy/upstreams`: Caddy's view of upstream health, for the gate.
//!
//! Every request has a timeout and every response body a size cap. Error text never carries a
//! secret: Caddy's own text is withheld when it quotes something hash-shaped.

use std::future::Future;
use std::time::Duration;

use serde::Deserialize;

use super::config::{CaddyConfig, IDENTITY_PATH, IDENTITY_PREFIX};

/// Largest response body read (the upstream list of 10,000 services is about 1 MiB).
pub const MAX_BODY: usize = 8 * 1024 * 1024;
/// Longest piece of Caddy's error text kept in an error.
const MAX_MESSAGE: usize = 4096;
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// `/load` of a large config provisions every route; 10,000 services take well under this.
const LOAD_TIMEOUT: Duration = Duration::from_secs(30);
const READ_TIMEOUT: Duration = Duration::from_secs(5);

/// Errors talking to Caddy's admin API.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The client could not be built.
    #[error("failed to build the Caddy admin client: {0}")]
    Client(#[source] reqwest::Error),
    /// No answer (refused, reset, timed out): Caddy may be restarting.
    #[error("failed to reach Caddy's admin API at {url}: {source}")]
    Request {
        /// URL.
        url: String,
        /// Cause.
        #[source]
        source: reqwest::Error,
    },
    /// Caddy refused the config and keeps serving the previous one.
    #[error("Caddy refused the config (HTTP {status}) and keeps the previous one: {message}")]
    Rejected {
        /// HTTP status (always 400, Caddy's answer to a config error).
        status: u16,
        /// Caddy's error text.
        message: String,
    },
    /// Any other unexpected status.
    #[error("Caddy's admin API answered {url} with HTTP {status}: {message}")]
    Status {
        /// URL.
        url: String,
        /// HTTP status.
        status: u16,
        /// Body text.
        message: String,
    },
    /// The body was larger than [`MAX_BODY`].
    #[error("Caddy's answer to {url} is larger than {limit} bytes")]
    TooLarge {
        /// URL.
        url: String,
        /// The cap.
        limit: usize,
    },
    /// The body was not the expected JSON.
    #[error("failed to decode Caddy's answer to {url}: {source}")]
    Decode {
        /// URL.
        url: String,
        /// Cause.
        #[source]
        source: serde_json::Error,
    },
}

impl Error {
    /// Whether trying again may help: connection problems and 5xx. A refused config is
    /// terminal for that config.
    pub fn is_retryable(&self) -> bool {
        match self {
            Error::Request { .. } => true,
            Error::Status { status, .. } => *status >= 500,
            Error::Client(_)
            | Error::Rejected { .. }
            | Error::TooLarge { .. }
            | Error::Decode { .. } => false,
        }
    }
}

/// Result alias of this module.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// One upstream as Caddy reports it.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct UpstreamStatus {
    /// `host:port`.
    pub address: String,
    /// Requests in flight.
    #[serde(default)]
    pub num_requests: u64,
    /// Recent failures counted by passive health checks.
    #[serde(default)]
    pub fails: u64,
}

/// What the Caddy driver needs from the admin API.
pub trait CaddyAdmin: Send + Sync + 'static {
    /// `POST /load` the whole config.
    fn load(&self, config: &CaddyConfig) -> impl Future<Output = Result<()>> + Send;
    /// The identity of the loaded config; `None` when Caddy runs a config without one (fresh
    /// start from a file we did not render, or an empty Caddy).
    fn identity(&self) -> impl Future<Output = Result<Option<String>>> + Send;
    /// Caddy's upstream list with passive health counters.
    fn upstreams(&self) -> impl Future<Output = Result<Vec<UpstreamStatus>>> + Send;
}

/// The real client over loopback HTTP.
#[derive(Debug, Clone)]
pub struct HttpCaddyAdmin {
    client: reqwest::Client,
    base: String,
}

impl HttpCaddyAdmin {
    /// A client for the admin API at `base` (`http://127.0.0.1:2019`). The process must have
    /// installed a rustls crypto provider (reqwest is built without one).
    pub fn new(base: &str) -> Result<Self> {
        // Caddy restarts its admin listener on every `/load` (contracts/CADDY.md §3), so a
        // pooled keep-alive connection is dead after a load: one connection per request.
        let client = reqwest::Client::builder()
            .pool_max_idle_per_host(0)
            .connect_timeout(CONNECT_TIMEOUT)
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .build()
            .map_err(Error::Client)?;
        Ok(Self {
            client,
            base: base.trim_end_matches('/').to_string(),
        })
    }

    async fn send(
        &self,
        request: reqwest::RequestBuilder,
        url: &str,
        timeout: Duration,
    ) -> Result<(u16, Vec<u8>)> {
        let request_err = |source| Error::Request {
            url: url.to_string(),
            source,
        };
        let mut response = request.timeout(timeout).send().await.map_err(request_err)?;
        let status = response.status().as_u16();
        let mut body = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(request_err)? {
            if body.len() + chunk.len() > MAX_BODY {
                return Err(Error::TooLarge {
                    url: url.to_string(),
                    limit: MAX_BODY,
                });
            }
            body.extend_from_slice(&chunk);
        }
        Ok((status, body))
    }

    /// `GET <base><path>`, decoded; an answer outside 2xx is [`Error::Status`] with Caddy's
    /// text.
    async fn read<T: serde::de::DeserializeOwned>(&self, path: &str) -> Result<T> {
        let url = format!("{}{path}", self.base);
        let (status, body) = self.send(self.client.get(&url), &url, READ_TIMEOUT).await?;
        if !(200..300).contains(&status) {
            return Err(Error::Status {
                url,
                status,
                message: message(&body),
            });
        }
        serde_json::from_slice(&body).map_err(|source| Error::Decode { url, source })
    }
}

/// Caddy's error text: the `error` field of its JSON answer, or the body, cut to
/// [`MAX_MESSAGE`], and withheld whole when it quotes something shaped like a secret.
fn message(body: &[u8]) -> String {
    #[derive(Deserialize)]
    struct CaddyError {
        error: String,
    }
    let text = serde_json::from_slice::<CaddyError>(body)
        .map(|e| e.error)
        .unwrap_or_else(|_| String::from_utf8_lossy(body).trim().to_string());
    if crate::spec::looks_secret(&text) {
        return "<Caddy's error text withheld: it quotes a secret-shaped value>".to_string();
    }
    let mut end = text.len().min(MAX_MESSAGE);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text[..end].to_string()
}

impl CaddyAdmin for HttpCaddyAdmin {
    async fn load(&self, config: &CaddyConfig) -> Result<()> {
        let url = format!("{}/load", self.base);
        let request = self
            .client
            .post(&url)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(config.body.clone());
        let (status, body) = self.send(request, &url, LOAD_TIMEOUT).await?;
        match status {
            200..=299 => Ok(()),
            400 => Err(Error::Rejected {
                status,
                message: message(&body),
            }),
            _ => Err(Error::Status {
                url,
                status,
                message: message(&body),
            }),
        }
    }

    async fn identity(&self) -> Result<Option<String>> {
        // A config without `apps.http.@id` answers `null`.
        let value: serde_json::Value = self.read(IDENTITY_PATH).await?;
        Ok(value
            .as_str()
            .filter(|s| s.starts_with(IDENTITY_PREFIX))
            .map(str::to_string))
    }

    async fn upstreams(&self) -> Result<Vec<UpstreamStatus>> {
        self.read("/reverse_proxy/upstreams").await
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // tests fail loudly
mod tests {
    use super::*;

    #[test]
    fn caddy_error_text_is_taken_from_its_json_error_field() {
        let body = br#"{"error":"loading config: unknown field \"routez\""}"#;
        assert_eq!(message(body), "loading config: unknown field \"routez\"");
        assert_eq!(message(b"plain text\n"), "plain text");
    }

    #[test]
    fn caddy_error_text_quoting_a_password_hash_is_withheld() {
        let body = br#"{"error":"bad account: $2y$05$SENTINELsecretSENTINEL"}"#;
        let text = message(body);
        assert!(!text.contains("SENTINEL"), "{text}");
        let err = Error::Rejected {
            status: 400,
            message: text,
        };
        assert!(!err.to_string().contains("SENTINEL"));
    }

    #[test]
    fn long_caddy_error_text_is_cut_at_a_character_boundary() {
        let body = "é".repeat(MAX_MESSAGE);
        let text = message(body.as_bytes());
        assert!(text.len() <= MAX_MESSAGE);
        assert!(text.chars().all(|c| c == 'é'));
    }

    /// A fake admin API answering every request with `body`.
    async fn serve(body: Vec<u8>) -> (String, tokio::task::JoinHandle<()>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let app = axum::Router::new().fallback(move || {
            let body = body.clone();
            async move { body }
        });
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        (format!("http://{addr}"), task)
    }

    #[tokio::test]
    async fn an_answer_over_the_body_cap_is_an_error_not_a_big_allocation() {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let (base, task) = serve(vec![b' '; MAX_BODY + 1]).await;
        let err = HttpCaddyAdmin::new(&base)
            .unwrap()
            .upstreams()
            .await
            .unwrap_err();
        assert!(matches!(err, Error::TooLarge { .. }), "{err}");
        task.abort();
    }

    #[tokio::test]
    async fn a_config_without_our_identity_reads_back_as_none() {
        let _ = rustls::crypto::ring::default_provider().install_default();
        for body in [&b"null"[..], br#""someone-else""#] {
            let (base, task) = serve(body.to_vec()).await;
            let id = HttpCaddyAdmin::new(&base)
                .unwrap()
                .identity()
                .await
                .unwrap();
            assert_eq!(id, None);
            task.abort();
        }
    }

    #[test]
    fn only_unreachable_caddy_and_server_errors_are_retryable() {
        let rejected = Error::Rejected {
            status: 400,
            message: String::new(),
        };
        assert!(!rejected.is_retryable());
        let busy = Error::Status {
            url: String::new(),
            status: 503,
            message: String::new(),
        };
        assert!(busy.is_retryable());
        let forbidden = Error::Status {
            url: String::new(),
            status: 403,
            message: String::new(),
        };
        assert!(!forbidden.is_retryable());
    }
}
