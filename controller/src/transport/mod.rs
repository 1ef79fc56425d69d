//! HTTP plumbing shared by the Consul and Nomad clients: configuration by HashiCorp's
//! conventions, TLS, redacted tokens, rate limits, retries, timeouts and the one blocking-query
//! helper every watch uses ([`Watch`]).

mod client;
mod config;
#[cfg(any(test, feature = "test-support"))]
pub mod fake;
mod flags;
mod http;
mod tls;
mod watch;

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

pub(crate) use client::impl_client_error;
pub use client::{ApiClient, ClientError, EncodeFailed, RequestFailed};
pub use config::{
    CONSUL_DEFAULT_RATE, ClientConfig, Endpoint, NOMAD_DEFAULT_RATE, Overrides, RateLimit,
    RetryPolicy, Timeouts, TlsSettings, Token,
};
pub use flags::{
    ApiFlags, ApiNames, ConsulFlags, ConsulNames, NomadFlags, NomadNames, SettingNames,
};
pub use http::{Body, HttpClient, MAX_API_BODY, Request, Response, Retry, read_capped};
pub(crate) use tls::accept_any_certificate;
pub use watch::{Change, Pacing, Watch, WatchUpdate};

/// Which API a client talks to; used in error messages and headers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Api {
    /// Consul (`X-Consul-*` headers, `?ns=`).
    Consul,
    /// Nomad (`X-Nomad-*` headers, `?namespace=`).
    Nomad,
}

impl Api {
    /// The longest `wait` the server honours: Consul clamps to 10 minutes, Nomad's servers to 5
    /// (CONSUL.md §1, NOMAD.md §0).
    pub fn max_wait(self) -> Duration {
        match self {
            Api::Consul => Duration::from_secs(600),
            Api::Nomad => Duration::from_secs(300),
        }
    }

    fn token_header(self) -> &'static str {
        match self {
            Api::Consul => "X-Consul-Token",
            Api::Nomad => "X-Nomad-Token",
        }
    }

    fn header_prefix(self) -> &'static str {
        match self {
            Api::Consul => "x-consul-",
            Api::Nomad => "x-nomad-",
        }
    }
}

impl fmt::Display for Api {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Api::Consul => "Consul",
            Api::Nomad => "Nomad",
        })
    }
}

/// Parameters of a read that may block (`?index=` and `?wait=`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct QueryOptions {
    /// Last index seen; 0 means "answer at once".
    pub index: u64,
    /// How long the server may hold the request; `None` lets it use its default (5 minutes).
    pub wait: Option<Duration>,
}

impl QueryOptions {
    /// A non-blocking read.
    pub const NOW: QueryOptions = QueryOptions {
        index: 0,
        wait: None,
    };

    /// A read that blocks until the state passes `index` or `wait` elapses.
    pub fn blocking(index: u64, wait: Duration) -> QueryOptions {
        QueryOptions {
            index,
            wait: Some(wait),
        }
    }
}

/// What a read's response headers say about the returned state.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct QueryMeta {
    /// `X-Consul-Index` / `X-Nomad-Index`: feed back as [`QueryOptions::index`].
    pub index: u64,
    /// Whether the answering server knows a leader.
    pub known_leader: bool,
    /// Time since the answering server last heard from the leader.
    pub last_contact: Duration,
}

/// Errors of the HTTP layer. Messages never contain a token: tokens travel in headers only, and
/// server error bodies are scrubbed of the client's token before they are kept.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An address setting could not be parsed.
    #[error("invalid address {value:?}: {reason}")]
    InvalidAddress {
        /// The value given.
        value: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// A setting has a malformed value.
    #[error("invalid value for {name}: {value:?} is not {expected}")]
    InvalidSetting {
        /// The variable or flag.
        name: String,
        /// The value given.
        value: String,
        /// What was expected.
        expected: &'static str,
    },
    /// A file named by a setting could not be read.
    #[error("failed to read {what} {path}: {source}")]
    ReadFile {
        /// What the file was supposed to hold.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// TLS material was unusable.
    #[error("failed to load TLS {what} from {path}: {reason}")]
    TlsMaterial {
        /// Which piece (CA certificate, client certificate, client key).
        what: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// Why it was rejected.
        reason: String,
    },
    /// The TLS configuration could not be assembled.
    #[error("failed to configure TLS: {0}")]
    TlsConfig(String),
    /// The HTTP client could not be built.
    #[error("failed to build the {api} HTTP client: {source}")]
    BuildClient {
        /// Which API.
        api: Api,
        /// The cause.
        #[source]
        source: reqwest::Error,
    },
    /// The request never got an HTTP answer (connection refused, reset, TLS failure).
    #[error("failed to reach {api} at {endpoint} for {method} {path}: {detail}")]
    Connect {
        /// Which API.
        api: Api,
        /// Where.
        endpoint: String,
        /// HTTP method.
        method: String,
        /// Request path (no query string).
        path: String,
        /// The cause chain, flattened, with a hint for certificate problems.
        detail: String,
        /// Whether the request can have reached the server (false: the connection never opened).
        maybe_sent: bool,
    },
    /// The TLS handshake failed on a certificate (unknown CA, wrong name, client certificate
    /// required). A configuration problem: retrying cannot help.
    #[error("failed to establish TLS with {api} at {endpoint} for {method} {path}: {detail}")]
    Tls {
        /// Which API.
        api: Api,
        /// Where.
        endpoint: String,
        /// HTTP method.
        method: String,
        /// Request path.
        path: String,
        /// The cause chain, flattened, with a hint naming the problem.
        detail: String,
    },
    /// No answer within the request's timeout.
    #[error("{api} did not answer {method} {path} within {after:?}")]
    Timeout {
        /// Which API.
        api: Api,
        /// HTTP method.
        method: String,
        /// Request path.
        path: String,
        /// The timeout that expired.
        after: Duration,
    },
    /// The server answered with an error status.
    #[error("{api} answered {status} to {method} {path}: {message}")]
    Status {
        /// Which API.
        api: Api,
        /// HTTP method.
        method: String,
        /// Request path.
        path: String,
        /// HTTP status code.
        status: u16,
        /// The plain-text error body (truncated, token scrubbed).
        message: String,
    },
    /// The answer's body was longer than the client reads (a misbehaving server or proxy).
    /// Terminal: the same request would get the same answer.
    #[error("{api}'s answer to {method} {path} is larger than {} MiB; not read", .limit / (1024 * 1024))]
    BodyTooLarge {
        /// Which API.
        api: Api,
        /// HTTP method.
        method: String,
        /// Request path.
        path: String,
        /// The cap, in bytes.
        limit: usize,
    },
    /// The answer did not have the documented shape.
    #[error("failed to decode {api}'s answer to {method} {path}: {source}")]
    Decode {
        /// Which API.
        api: Api,
        /// HTTP method.
        method: String,
        /// Request path.
        path: String,
        /// The cause.
        #[source]
        source: serde_json::Error,
    },
}

/// Markers of a 500 answer that a retry can fix. Both APIs use 500 for deterministic failures
/// too (validation, `Enforcing job modify index`, invalid session), which must not be retried.
const TRANSIENT_500_MARKERS: &[&str] = &[
    "No cluster leader",
    "rpc error",
    "i/o timeout",
    "connection reset",
    "EOF",
    "leadership lost",
    "timed out",
];

impl Error {
    /// True when retrying the same request may succeed: connection failures, timeouts, 429,
    /// 502/503/504, and 500s that name a transient cause (no leader, RPC failure).
    pub fn is_retryable(&self) -> bool {
        match self {
            Error::Connect { .. } | Error::Timeout { .. } => true,
            Error::Status {
                status, message, ..
            } => match status {
                429 | 502 | 503 | 504 => true,
                500 => TRANSIENT_500_MARKERS.iter().any(|m| message.contains(m)),
                _ => false,
            },
            _ => false,
        }
    }

    /// The HTTP status the server answered with, if it answered.
    pub fn status(&self) -> Option<u16> {
        match self {
            Error::Status { status, .. } => Some(*status),
            _ => None,
        }
    }

    /// The server's error text, if it answered with an error status.
    pub fn message(&self) -> Option<&str> {
        match self {
            Error::Status { message, .. } => Some(message),
            _ => None,
        }
    }

    /// True for 401/403: the token is missing, unknown or lacks a permission. Terminal.
    pub fn is_forbidden(&self) -> bool {
        matches!(self.status(), Some(401 | 403))
    }

    /// An error as a server would have produced it; for fakes and tests.
    pub fn from_status(api: Api, method: &str, path: &str, status: u16, message: &str) -> Error {
        Error::Status {
            api,
            method: method.to_owned(),
            path: path.to_owned(),
            status,
            message: message.to_owned(),
        }
    }
}

/// Formats a duration as a Go duration string in whole units up to seconds (`"15s"`,
/// `"300s"`, `"1500ms"`), exact to the nanosecond; both APIs parse it.
pub fn go_duration(d: Duration) -> String {
    ::go_duration::format_whole(d, ::go_duration::LargestUnit::Second)
}

/// Parses a Go duration string as the APIs return it (`"30s"`, `"1m30s"`, `"1h0m0s"`, `"250ms"`,
/// `"0"`); `None` for anything Go's `time.ParseDuration` rejects, and for negative values.
pub fn parse_go_duration(s: &str) -> Option<Duration> {
    ::go_duration::parse_go(s.trim()).ok()
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::panic)] // tests fail loudly
mod tests {
    use super::*;

    #[test]
    fn go_durations_round_trip_through_the_formats_the_apis_use() {
        assert_eq!(go_duration(Duration::from_secs(15)), "15s");
        assert_eq!(go_duration(Duration::from_millis(1500)), "1500ms");
        assert_eq!(parse_go_duration("30s"), Some(Duration::from_secs(30)));
        assert_eq!(parse_go_duration("1m30s"), Some(Duration::from_secs(90)));
        assert_eq!(parse_go_duration("1h0m0s"), Some(Duration::from_secs(3600)));
        assert_eq!(parse_go_duration("250ms"), Some(Duration::from_millis(250)));
        assert_eq!(parse_go_duration(""), None);
        assert_eq!(parse_go_duration("10 parsecs"), None);
    }

    #[test]
    fn only_transient_server_errors_are_retryable() {
        let e = |status, msg| Error::from_status(Api::Nomad, "PUT", "/v1/jobs", status, msg);
        assert!(e(503, "unavailable").is_retryable());
        assert!(e(429, "slow down").is_retryable());
        assert!(e(500, "No cluster leader").is_retryable());
        assert!(
            !e(
                500,
                "Enforcing job modify index 3: job exists with conflicting job modify index: 4"
            )
            .is_retryable()
        );
        assert!(!e(403, "Permission denied").is_retryable());
        assert!(e(403, "Permission denied").is_forbidden());
        assert!(!e(400, "bad").is_retryable());
    }
}
