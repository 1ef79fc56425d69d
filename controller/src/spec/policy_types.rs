//! Raw types of the traffic policies added in issue 14: the newer middlewares, named policy sets
//! services opt into, logging, and the entry points' lifecycle and timeouts. Kept apart from
//! `types.rs` so each stays readable; both are re-exported from [`crate::spec`].

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::types::{BasicAuth, DURATION_PATTERN, IpAllowList, RateLimit};

/// Delegates the decision to an external service (an OAuth2 proxy, a JWT validator): Traefik
/// sends it the request's headers; 2xx lets the request through, any other answer goes back to
/// the client as is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ForwardAuth {
    /// URL of the auth service, `http://` or `https://`.
    pub address: String,
    /// Pass the client's `X-Forwarded-*` headers on instead of replacing them (default false:
    /// only trust them when every client comes through another trusted proxy).
    #[serde(default)]
    pub trust_forward_header: bool,
    /// Headers of the auth service's 2xx answer copied onto the request sent to the backend
    /// (e.g. `X-Auth-User`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub auth_response_headers: Vec<String>,
    /// TLS to an `https://` auth service with a private CA or a client certificate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<ForwardAuthTls>,
}

/// TLS client settings towards the auth service: file paths on the proxy's node, never PEM.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ForwardAuthTls {
    /// PEM file of the CA that signed the auth service's certificate (default: system roots).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<String>,
    /// Client certificate file, for mutual TLS (with `keyFile`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cert_file: Option<String>,
    /// Client key file, for mutual TLS (with `certFile`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_file: Option<String>,
}

/// Stops sending traffic to a failing backend for a while (Traefik `circuitBreaker`): while
/// open, requests get 503 without reaching it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CircuitBreaker {
    /// When to open, e.g. `ResponseCodeRatio(500, 600, 0, 600) > 0.25` or
    /// `NetworkErrorRatio() > 0.5 || LatencyAtQuantileMS(50.0) > 100`.
    pub expression: String,
    /// How often the expression is evaluated (default `100ms`).
    #[serde(default = "default_check_period")]
    #[schemars(pattern(DURATION_PATTERN))]
    pub check_period: String,
    /// How long it stays open before trying again (default `10s`).
    #[serde(default = "default_ten_seconds")]
    #[schemars(pattern(DURATION_PATTERN))]
    pub fallback_duration: String,
    /// How long traffic ramps back up after it closes (default `10s`).
    #[serde(default = "default_ten_seconds")]
    #[schemars(pattern(DURATION_PATTERN))]
    pub recovery_duration: String,
}

fn default_check_period() -> String {
    "100ms".to_owned()
}

fn default_ten_seconds() -> String {
    "10s".to_owned()
}

/// Re-sends a request Traefik could not deliver (connection refused or failed before the
/// request was written), to the next instance; a backend's own 5xx answer, or a connection
/// dropped after the request went out, is not retried (it may not be idempotent).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Retry {
    /// Attempts in total, the first included (at least 1).
    #[schemars(range(min = 1, max = 100))]
    pub attempts: u32,
    /// Wait before the first retry, doubled each time (default `100ms`).
    #[serde(default = "default_check_period")]
    #[schemars(pattern(DURATION_PATTERN))]
    pub initial_interval: String,
}

/// Request and response size limits (Traefik `buffering`): a larger request body gets 413.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Buffering {
    /// Largest request body in bytes; larger gets 413 Request Entity Too Large (0 = no limit).
    #[serde(default)]
    #[schemars(range(max = i64::MAX))]
    pub max_request_body_bytes: u64,
    /// Largest response body in bytes; larger gets 500 (0 = no limit).
    #[serde(default)]
    #[schemars(range(max = i64::MAX))]
    pub max_response_body_bytes: u64,
}

/// Response compression (gzip, brotli, zstd) for clients that send `Accept-Encoding`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Compress {
    /// Smaller responses go out uncompressed (default 1024).
    #[serde(default = "default_min_compress")]
    #[schemars(range(max = i64::MAX))]
    pub min_response_body_bytes: u64,
}

fn default_min_compress() -> u64 {
    1024
}

/// Client networks refused with 403.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct IpDenyList {
    /// CIDRs (`203.0.113.0/24`) or single addresses.
    #[schemars(length(min = 1))]
    pub source_range: Vec<String>,
}

/// Declares a policy struct: its own fields first, then the policies that both the entry
/// points' `middlewares` and a named policy set hold, declared once here so the two cannot drift.
macro_rules! policy_struct {
    (
        $(#[$meta:meta])*
        pub struct $name:ident {
            $( $(#[$field_meta:meta])* pub $field:ident: $ty:ty, )*
        }
    ) => {
        $(#[$meta])*
        pub struct $name {
            $( $(#[$field_meta])* pub $field: $ty, )*
            /// Per-client request rate limit (off unless set).
            #[serde(skip_serializing_if = "Option::is_none")]
            pub rate_limit: Option<RateLimit>,
            /// Only these client networks may connect (off unless set).
            #[serde(skip_serializing_if = "Option::is_none")]
            pub ip_allow_list: Option<IpAllowList>,
            /// HTTP basic authentication, with users read from a reference (off unless set).
            /// The operator reads `usersFrom.consulKey`; `usersFrom.file` is read by Traefik on
            /// the proxy's node in a policy set, and by the operator on its own host otherwise
            /// (Caddy takes the accounts inline).
            #[serde(skip_serializing_if = "Option::is_none")]
            pub basic_auth: Option<BasicAuth>,
            /// Ask an external auth service about every request (off unless set).
            #[serde(skip_serializing_if = "Option::is_none")]
            pub forward_auth: Option<ForwardAuth>,
            /// Stop sending traffic to a failing backend for a while (off unless set).
            #[serde(skip_serializing_if = "Option::is_none")]
            pub circuit_breaker: Option<CircuitBreaker>,
            /// Re-send requests whose backend could not be reached (off unless set).
            #[serde(skip_serializing_if = "Option::is_none")]
            pub retry: Option<Retry>,
            /// Request and response body size limits (off unless set).
            #[serde(skip_serializing_if = "Option::is_none")]
            pub buffering: Option<Buffering>,
            /// Compress responses (off unless set).
            #[serde(skip_serializing_if = "Option::is_none")]
            pub compress: Option<Compress>,
        }
    };
}
pub(super) use policy_struct;

policy_struct! {
    /// A named set of policies a service opts into with the tag
    /// `traefik.http.routers.<service>.middlewares=<name>@consul`, on top of the entry point's
    /// `middlewares`. Router-level refusals (`requiredHeaders`, `ipDenyList`) are entry-point only.
    #[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
    #[serde(rename_all = "camelCase", deny_unknown_fields, default)]
    pub struct PolicySet {
        /// Response headers to add.
        #[serde(skip_serializing_if = "BTreeMap::is_empty")]
        pub headers: BTreeMap<String, String>,
    }
}

/// Log level of the proxy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "UPPERCASE")]
pub enum LogLevel {
    /// Everything.
    Trace,
    /// Debugging detail.
    Debug,
    /// Normal operation (default).
    #[default]
    Info,
    /// Problems that did not stop a request.
    Warn,
    /// Failures.
    Error,
}

/// Log line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// One JSON object per line (default).
    #[default]
    Json,
    /// Human-readable text; for access logs, the Common Log Format.
    Common,
}

/// The proxy's own log and its access log, both on stdout so Nomad collects them.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct Logging {
    /// Level of the proxy's log (default `INFO`).
    pub level: LogLevel,
    /// Format of the proxy's log (default `json`).
    pub format: LogFormat,
    /// Access log (off unless set).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub access_log: Option<AccessLog>,
}

/// One line per request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct AccessLog {
    /// Write it (default true when the section is present).
    pub enabled: bool,
    /// `json` (default) or `common` (Common Log Format).
    pub format: LogFormat,
    /// Only these status codes or ranges, e.g. `["400-599"]` (default: every code).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub status_codes: Vec<String>,
    /// Only requests slower than this (default: every request).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schemars(pattern(DURATION_PATTERN))]
    pub min_duration: Option<String>,
    /// Log request headers (json format only; default false).
    pub headers: bool,
    /// Headers written as `REDACTED` when `headers` is on (default `Authorization`, `Cookie`,
    /// `Proxy-Authorization`).
    pub redact_headers: Vec<String>,
}

impl Default for AccessLog {
    fn default() -> Self {
        Self {
            enabled: true,
            format: LogFormat::Json,
            status_codes: Vec::new(),
            min_duration: None,
            headers: false,
            redact_headers: vec![
                "Authorization".to_owned(),
                "Cookie".to_owned(),
                "Proxy-Authorization".to_owned(),
            ],
        }
    }
}

/// Shutdown and timeouts of every user-facing entry point.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct Transport {
    /// On shutdown, how long open requests may finish (default `30s`). The proxy task's
    /// `kill_timeout` is rendered 5 s longer, so Nomad never kills a draining proxy; Nomad caps
    /// it at the client's `max_kill_timeout` (30 s unless raised), so raise that on the
    /// clients for the full drain.
    #[schemars(pattern(DURATION_PATTERN))]
    pub grace_timeout: String,
    /// Longest time to read a whole request, body included (default `60s`; `0s` = none).
    #[schemars(pattern(DURATION_PATTERN))]
    pub read_timeout: String,
    /// Longest time to write a response (default `0s` = none, for streaming).
    #[schemars(pattern(DURATION_PATTERN))]
    pub write_timeout: String,
    /// How long an idle keep-alive connection stays open (default `180s`).
    #[schemars(pattern(DURATION_PATTERN))]
    pub idle_timeout: String,
}

impl Default for Transport {
    fn default() -> Self {
        Self {
            grace_timeout: "30s".to_owned(),
            read_timeout: "60s".to_owned(),
            write_timeout: "0s".to_owned(),
            idle_timeout: "180s".to_owned(),
        }
    }
}
