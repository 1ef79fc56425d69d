//! The resolved model: what validation produces and the renderers read. Every default is applied
//! here once, every address split into host and port, every duration a `Duration`, every path
//! absolute. The renderers read only this, so they can be tested (and fuzzed) with a hand-built
//! model, and adding a field touches its raw type (`types.rs`), its section in `validate/` and
//! the renderer that uses it.

use std::collections::BTreeMap;
use std::time::Duration;

use ipnet::IpNet;

pub use super::types::{DiscoveryPrimary, OnFailure, Probe, ProxyKind};

/// A listen address: optional host (empty = all interfaces) and a port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListenAddr {
    /// Host or IP; empty means every interface.
    pub host: String,
    /// TCP port.
    pub port: u16,
}

impl ListenAddr {
    /// `host:port` (IPv6 hosts in brackets), or `:port` for every interface.
    pub fn to_addr_string(&self) -> String {
        self.to_string()
    }

    /// Whether the address is bound to loopback only.
    pub fn is_loopback(&self) -> bool {
        self.host == "localhost"
            || self
                .host
                .parse::<std::net::IpAddr>()
                .is_ok_and(|ip| ip.is_loopback())
    }
}

/// An entry point (a listener of the proxy).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EntryPoint {
    /// Name (`web`, `websecure`, ...); also the Nomad port label.
    pub name: String,
    /// Where it listens.
    pub address: ListenAddr,
    /// Whether it terminates TLS.
    pub tls: bool,
    /// Entry point to redirect plain HTTP requests to (HTTPS).
    pub redirect_to: Option<String>,
}

/// Nomad service discovery as the proxy sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NomadDiscovery {
    /// Nomad API URL as the proxy reaches it (`http://127.0.0.1:4646`).
    pub address: String,
    /// Namespace to discover services in; `None` for the default.
    pub namespace: Option<String>,
    /// Poll interval.
    pub refresh_interval: Duration,
    /// Whether services are exposed without a `traefik.enable=true` tag.
    pub exposed_by_default: bool,
    /// Whether Traefik watches Nomad's event stream instead of waiting for the refresh.
    pub watch: bool,
}

/// Consul catalog discovery as the proxy sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsulDiscovery {
    /// `host:port` of the Consul agent (also the KV provider's endpoint).
    pub address: String,
    /// `http` or `https`.
    pub scheme: String,
    /// CA file for `https` (Traefik's `tls.ca`); `None` for the system roots.
    pub ca_file: Option<String>,
    /// Datacenter; `None` for the agent's.
    pub datacenter: Option<String>,
    /// Poll interval.
    pub refresh_interval: Duration,
    /// Whether services are exposed without a `traefik.enable=true` tag.
    pub exposed_by_default: bool,
}

/// Service discovery settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Discovery {
    /// The primary catalog (gets the default rule `<service>.<domain suffix>`).
    pub primary: DiscoveryPrimary,
    /// Nomad's catalog.
    pub nomad: NomadDiscovery,
    /// Consul's catalog.
    pub consul: ConsulDiscovery,
    /// Traefik's `providersThrottleDuration`: how long it batches provider changes.
    pub throttle: Duration,
}

/// A certificate and key file pair (paths inside the proxy's task).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertPair {
    /// Certificate path.
    pub cert_file: String,
    /// Private key path.
    pub key_file: String,
}

/// ACME settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Acme {
    /// Account email.
    pub email: String,
    /// Storage file (Traefik) or directory (Caddy).
    pub storage: String,
    /// CA directory URL; `None` for Let's Encrypt production.
    pub ca_server: Option<String>,
    /// PEM files of extra CAs to trust for the directory's HTTPS (resolved paths).
    pub ca_roots: Vec<String>,
}

/// TLS settings.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Tls {
    /// Directory holding certificates (and Caddy's storage).
    pub cert_dir: String,
    /// Certificate files to serve.
    pub certificates: Vec<CertPair>,
    /// ACME, when enabled.
    pub acme: Option<Acme>,
    /// Minimum TLS version: `VersionTLS12` or `VersionTLS13` (Traefik's names).
    pub min_version: Option<String>,
}

/// Rate limit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RateLimit {
    /// Average requests per `period`.
    pub average: u64,
    /// Burst size.
    pub burst: u64,
    /// Period.
    pub period: Duration,
}

/// Basic auth. Validation knows only the realm: the `user:hash` lines live behind a reference
/// (`usersFrom`) the caller reads, and `render` fills them in from its context.
#[derive(Clone, PartialEq, Eq)]
pub struct BasicAuth {
    /// Realm.
    pub realm: String,
    /// `user:hash` lines (htpasswd). Secret: never logged or put in errors.
    pub users: Vec<String>,
    /// An htpasswd file on the proxy's node the proxy reads itself (policy sets); when set,
    /// `users` stays empty.
    pub users_file: Option<String>,
}

impl std::fmt::Debug for BasicAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BasicAuth")
            .field("realm", &self.realm)
            .field("users", &format_args!("<{} redacted>", self.users.len()))
            .field("users_file", &self.users_file)
            .finish()
    }
}

/// Forward authentication.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ForwardAuth {
    /// Auth service URL.
    pub address: String,
    /// Pass the client's `X-Forwarded-*` headers on.
    pub trust_forward_header: bool,
    /// Headers copied from the auth answer onto the forwarded request.
    pub auth_response_headers: Vec<String>,
    /// TLS client files towards the auth service.
    pub tls: Option<ClientFiles>,
}

/// TLS client files (absolute paths on the proxy's node).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ClientFiles {
    /// CA bundle.
    pub ca: Option<String>,
    /// Client certificate.
    pub cert: Option<String>,
    /// Client key.
    pub key: Option<String>,
}

/// Circuit breaker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CircuitBreaker {
    /// Traefik's breaker expression, checked for its function names and parentheses.
    pub expression: String,
    /// Evaluation period.
    pub check_period: Duration,
    /// Time open.
    pub fallback_duration: Duration,
    /// Ramp-up time after closing.
    pub recovery_duration: Duration,
}

/// Retry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Retry {
    /// Attempts in total.
    pub attempts: u32,
    /// First back-off interval.
    pub initial_interval: Duration,
}

/// Body size limits in bytes; 0 = none.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Buffering {
    /// Request body limit (413 beyond).
    pub max_request_body_bytes: u64,
    /// Response body limit.
    pub max_response_body_bytes: u64,
}

/// Compression.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Compress {
    /// Smaller responses are not compressed.
    pub min_response_body_bytes: u64,
}

/// A set of middlewares: the one every user-facing entry point applies, or a named set a
/// service opts into.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Policy {
    /// Response headers set on every response (security headers).
    pub headers: BTreeMap<String, String>,
    /// Rate limit, when enabled.
    pub rate_limit: Option<RateLimit>,
    /// Allowed client networks; empty = everyone.
    pub ip_allow: Vec<IpNet>,
    /// Basic auth, when enabled.
    pub basic_auth: Option<BasicAuth>,
    /// Forward auth, when enabled.
    pub forward_auth: Option<ForwardAuth>,
    /// Circuit breaker, when enabled.
    pub circuit_breaker: Option<CircuitBreaker>,
    /// Retry, when enabled.
    pub retry: Option<Retry>,
    /// Body size limits, when enabled.
    pub buffering: Option<Buffering>,
    /// Compression, when enabled.
    pub compress: Option<Compress>,
    /// Request headers every request must carry (entry point policy only).
    pub required_headers: Vec<String>,
    /// Refused client networks (entry point policy only).
    pub ip_deny: Vec<IpNet>,
}

/// The access log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccessLog {
    /// `json` or `common`.
    pub format: String,
    /// Status codes or ranges kept; empty = all.
    pub status_codes: Vec<String>,
    /// Only requests slower than this.
    pub min_duration: Option<Duration>,
    /// Whether request headers are logged.
    pub headers: bool,
    /// Headers redacted when headers are logged.
    pub redact_headers: Vec<String>,
}

/// The proxy's logging.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Logging {
    /// `TRACE`, `DEBUG`, `INFO`, `WARN` or `ERROR`.
    pub level: String,
    /// `json` or `common`.
    pub format: String,
    /// Access log, when on.
    pub access_log: Option<AccessLog>,
}

impl Default for Logging {
    fn default() -> Self {
        Self {
            level: "INFO".to_string(),
            format: "json".to_string(),
            access_log: None,
        }
    }
}

/// Shutdown and timeouts of the user-facing entry points.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transport {
    /// Drain time on shutdown.
    pub grace_timeout: Duration,
    /// Request read timeout; zero = none.
    pub read_timeout: Duration,
    /// Response write timeout; zero = none.
    pub write_timeout: Duration,
    /// Keep-alive idle timeout.
    pub idle_timeout: Duration,
}

impl Default for Transport {
    fn default() -> Self {
        Self {
            grace_timeout: Duration::from_secs(30),
            read_timeout: Duration::from_secs(60),
            write_timeout: Duration::ZERO,
            idle_timeout: Duration::from_secs(180),
        }
    }
}

/// Dashboard / API settings (Traefik) or admin API (Caddy).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dashboard {
    /// Whether the dashboard UI is served. The API itself is always reachable from loopback
    /// clients on the internal entry point, because the operator's health gate reads it.
    pub enabled: bool,
    /// Traefik `api.insecure`.
    pub insecure: bool,
    /// The internal listener (Traefik's `traefik` entry point, Caddy's admin).
    pub address: ListenAddr,
}

/// The task driver of the proxy job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Driver {
    /// Docker image.
    Docker {
        /// Image reference.
        image: String,
    },
    /// A host binary run without isolation.
    RawExec {
        /// Command.
        command: String,
        /// Extra arguments.
        args: Vec<String>,
    },
    /// A host binary in a chroot.
    Exec {
        /// Command.
        command: String,
        /// Extra arguments.
        args: Vec<String>,
    },
}

/// The proxy's Nomad job settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobSettings {
    /// Job ID.
    pub id: String,
    /// `true` for a system job (one per node), `false` for a service job.
    pub system: bool,
    /// Instances of a service job.
    pub count: u32,
    /// Datacenters.
    pub datacenters: Vec<String>,
    /// Namespace.
    pub namespace: Option<String>,
    /// Region; `None` for the agent's.
    pub region: Option<String>,
    /// Node pool.
    pub node_pool: Option<String>,
    /// Task driver.
    pub driver: Driver,
    /// CPU MHz.
    pub cpu: u32,
    /// Memory MiB.
    pub memory_mb: u32,
    /// Proxy version, informational (kept in job Meta).
    pub version: Option<String>,
    /// Nomad host volume mounted at the certificate directory (docker and exec drivers);
    /// `None` mounts nothing.
    pub cert_volume: Option<String>,
    /// Open-file limit (docker `ulimit nofile`).
    pub open_files: u32,
    /// Where the proxy's ACL tokens come from; `None` when ACLs are off.
    pub tokens: Option<TokenSource>,
}

/// Where the proxy's ACL tokens come from (`spec.job.tokens`, resolved).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenSource {
    /// The task's Workload Identity (`NOMAD_TOKEN`) and its `consul_default` identity.
    WorkloadIdentity,
    /// A Nomad Variable with `consul_token` and `nomad_token` items.
    NomadVariable {
        /// Variable path.
        path: String,
    },
}

/// Rollout settings: the timings go into the job's update block, the rest into the health gate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rollout {
    /// An allocation must be healthy by then.
    pub healthy_deadline: Duration,
    /// An allocation must stay healthy this long.
    pub min_healthy_time: Duration,
    /// Route probes (their entry points checked to exist).
    pub probes: Vec<Probe>,
    /// What happens on failure.
    pub on_failure: OnFailure,
}

/// Everything the renderers need, resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Model {
    /// Which proxy.
    pub proxy: ProxyKind,
    /// Domain suffix for default rules (`<service>.<suffix>`).
    pub domain_suffix: String,
    /// User-facing entry points.
    pub entry_points: Vec<EntryPoint>,
    /// Discovery.
    pub discovery: Discovery,
    /// TLS.
    pub tls: Tls,
    /// Middleware policy of every user-facing entry point.
    pub policy: Policy,
    /// Named policy sets services opt into.
    pub policies: BTreeMap<String, Policy>,
    /// Logging.
    pub logging: Logging,
    /// Entry point shutdown and timeouts.
    pub transport: Transport,
    /// Where Prometheus metrics are served (Traefik entry point `metrics`); `None` when off.
    pub metrics: Option<ListenAddr>,
    /// Dashboard / admin.
    pub dashboard: Dashboard,
    /// The Nomad job.
    pub job: JobSettings,
    /// Rollout settings.
    pub rollout: Rollout,
}

impl std::fmt::Display for ListenAddr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.host.is_empty() {
            write!(f, ":{}", self.port)
        } else if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

impl From<&super::ListenAddress> for ListenAddr {
    fn from(addr: &super::ListenAddress) -> Self {
        ListenAddr {
            host: addr.host.clone().unwrap_or_default(),
            port: addr.port,
        }
    }
}
