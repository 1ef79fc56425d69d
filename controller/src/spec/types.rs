//! The raw `ProxyConfig` document as users write it: serde + schemars types, defaults filled in.
//!
//! Fields that need checking beyond their JSON type (durations, CIDRs, addresses, paths) stay
//! strings here; [`super::validate`] resolves them into typed values in [`super::ValidatedSpec`].
//! Every optional field has a documented default, and the schema generated from these types
//! (`crd-schemas/proxyconfig.v1alpha1.schema.json`) carries those defaults for editors.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::policy_types::policy_struct;
pub use super::policy_types::*;

/// The only `apiVersion` this operator reads.
pub const API_VERSION: &str = "proxy-operator.io/v1alpha1";
/// The `kind` of the desired document.
pub const KIND: &str = "ProxyConfig";

/// Go-style duration strings: one or more `<number><unit>` with units ns, us, µs, ms, s, m, h.
pub const DURATION_PATTERN: &str = r"^([0-9]+(\.[0-9]+)?(ns|us|µs|ms|s|m|h))+$";

/// Headers the seed (HinD) sets on every response; `middlewares.securityHeaders` starts from these.
pub const DEFAULT_SECURITY_HEADERS: [(&str, &str); 5] = [
    ("X-Frame-Options", "SAMEORIGIN"),
    ("X-XSS-Protection", "1; mode=block"),
    ("X-Content-Type-Options", "nosniff"),
    ("Referrer-Policy", "strict-origin-when-cross-origin"),
    (
        "Permissions-Policy",
        "accelerometer=(), camera=(), geolocation=(), microphone=()",
    ),
];

/// The desired state of the cluster's edge proxy (`apiVersion: proxy-operator.io/v1alpha1`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[schemars(title = "ProxyConfig", extend("$id" = "https://proxy-operator.io/schemas/proxyconfig.v1alpha1.schema.json"))]
pub struct ProxyConfig {
    /// Must be `proxy-operator.io/v1alpha1`.
    pub api_version: ApiVersion,
    /// Must be `ProxyConfig`.
    pub kind: ProxyConfigKind,
    /// Name and labels of this document.
    #[serde(default)]
    pub metadata: Metadata,
    /// The desired proxy.
    #[serde(default)]
    pub spec: ProxyConfigSpec,
}

/// `apiVersion` of a ProxyConfig or ProxyStatus.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
pub enum ApiVersion {
    /// `proxy-operator.io/v1alpha1`
    #[default]
    #[serde(rename = "proxy-operator.io/v1alpha1")]
    V1alpha1,
}

/// `kind` of the desired document.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
pub enum ProxyConfigKind {
    /// `ProxyConfig`
    #[default]
    ProxyConfig,
}

/// Name and labels of the document.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct Metadata {
    /// A DNS label naming this document (default `default`).
    pub name: String,
    /// Free-form labels; not part of the spec digest.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
}

impl Default for Metadata {
    fn default() -> Self {
        Self {
            name: "default".to_owned(),
            labels: BTreeMap::new(),
        }
    }
}

/// Everything the operator converges.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct ProxyConfigSpec {
    /// Which proxy runs (default `caddy`, as in HinD; env `PROXY_SERVER`).
    pub proxy: ProxyKind,
    /// Default routing domain: a service `web` answers on `web.<domainSuffix>` (default
    /// `localhost`; env `DOMAIN_SUFFIX`).
    pub domain_suffix: DomainSuffix,
    /// Service discovery providers.
    pub discovery: Discovery,
    /// Listeners (Traefik entry points; Caddy server listen addresses).
    pub entry_points: EntryPoints,
    /// Certificates, ACME and TLS versions.
    pub tls: Tls,
    /// Policies applied to routed traffic; changing them needs no proxy restart.
    pub middlewares: Middlewares,
    /// Named policy sets a service opts into by tag (Traefik:
    /// `traefik.http.routers.<service>.middlewares=<name>@consul`), on top of `middlewares`.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub policies: BTreeMap<String, PolicySet>,
    /// The proxy's log and access log.
    pub logging: Logging,
    /// Prometheus metrics of the proxy.
    pub metrics: Metrics,
    /// The proxy's API and dashboard.
    pub dashboard: Dashboard,
    /// The proxy's Nomad job.
    pub job: Job,
    /// How changes are rolled out, verified and rolled back.
    pub rollout: Rollout,
    /// What to do when the running job drifts from the spec (default `correct`).
    pub drift_policy: DriftPolicy,
    /// When true, the operator observes and reports but changes nothing.
    pub paused: bool,
    /// Change this to retry a document whose rollout failed, without editing anything else.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retry_nonce: Option<String>,
}

/// Domain suffix with its default (a newtype so `#[serde(default)]` yields `localhost`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(transparent)]
pub struct DomainSuffix(pub String);

impl Default for DomainSuffix {
    fn default() -> Self {
        Self("localhost".to_owned())
    }
}

/// The edge proxy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum ProxyKind {
    /// Traefik v3.
    Traefik,
    /// Caddy v2 (the HinD default).
    #[default]
    Caddy,
}

impl ProxyKind {
    /// The lowercase name used in documents and env vars.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Traefik => "traefik",
            Self::Caddy => "caddy",
        }
    }
}

/// Service discovery: Nomad's and Consul's service catalogs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct Discovery {
    /// Which catalog is the primary source of routes (default `nomad`; env
    /// `TRAEFIK_PROVIDER_PRIMARY`).
    pub primary: DiscoveryPrimary,
    /// Consul catalog provider settings.
    pub consul: ConsulDiscovery,
    /// Nomad service provider settings.
    pub nomad: NomadDiscovery,
    /// Traefik's `providers.providersThrottleDuration`: how long Traefik waits after a provider
    /// change before applying the next one (default `500ms`).
    #[schemars(pattern(DURATION_PATTERN))]
    pub throttle_duration: String,
}

impl Default for Discovery {
    fn default() -> Self {
        Self {
            primary: DiscoveryPrimary::Nomad,
            consul: ConsulDiscovery::default(),
            nomad: NomadDiscovery::default(),
            throttle_duration: "500ms".to_owned(),
        }
    }
}

/// The primary service catalog.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum DiscoveryPrimary {
    /// Nomad's native service discovery.
    #[default]
    Nomad,
    /// Consul's catalog.
    Consul,
}

/// HTTP scheme of a Consul agent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Scheme {
    /// Plain HTTP.
    #[default]
    Http,
    /// HTTPS.
    Https,
}

/// Consul catalog provider.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct ConsulDiscovery {
    /// `host:port` of the Consul agent the proxy talks to (default `127.0.0.1:8500`). The
    /// token comes from the proxy's environment, never from this document.
    pub address: String,
    /// `http` (default) or `https`.
    pub scheme: Scheme,
    /// Consul datacenter (default: the agent's).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub datacenter: Option<String>,
    /// How often the catalog is re-read (default `15s`).
    #[schemars(pattern(DURATION_PATTERN))]
    pub refresh_interval: String,
    /// Route services without a `traefik.enable=true` tag (default false).
    pub exposed_by_default: bool,
    /// PEM file of the CA that signed Consul's certificate, as the proxy sees it, for
    /// `scheme: https` with a private CA (default: the system roots).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<String>,
}

impl Default for ConsulDiscovery {
    fn default() -> Self {
        Self {
            address: "127.0.0.1:8500".to_owned(),
            scheme: Scheme::Http,
            datacenter: None,
            refresh_interval: "15s".to_owned(),
            exposed_by_default: false,
            ca_file: None,
        }
    }
}

/// Nomad service provider.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct NomadDiscovery {
    /// URL of the Nomad agent (default `http://127.0.0.1:4646`).
    pub address: String,
    /// Nomad namespace to discover services in (default: `default`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// How often services are re-read (default `15s`).
    #[schemars(pattern(DURATION_PATTERN))]
    pub refresh_interval: String,
    /// Route services without a `traefik.enable=true` tag (default false).
    pub exposed_by_default: bool,
    /// Watch Nomad's event stream for changes instead of waiting for the refresh (default true).
    pub watch: bool,
}

impl Default for NomadDiscovery {
    fn default() -> Self {
        Self {
            address: "http://127.0.0.1:4646".to_owned(),
            namespace: None,
            refresh_interval: "15s".to_owned(),
            exposed_by_default: false,
            watch: true,
        }
    }
}

/// The proxy's listeners.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct EntryPoints {
    /// Plain HTTP listener (default `:80`, redirecting to `websecure`).
    pub web: EntryPoint,
    /// HTTPS listener (default `:443`).
    pub websecure: EntryPoint,
    /// More listeners by name (letters, digits, `-`, `_`).
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub extra: BTreeMap<String, EntryPoint>,
    /// Graceful shutdown and request timeouts of every listener above.
    pub transport: Transport,
}

impl Default for EntryPoints {
    fn default() -> Self {
        Self {
            web: EntryPoint {
                address: ":80".to_owned(),
                redirect_to: Some("websecure".to_owned()),
            },
            websecure: EntryPoint {
                address: ":443".to_owned(),
                redirect_to: None,
            },
            extra: BTreeMap::new(),
            transport: Transport::default(),
        }
    }
}

/// One listener.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct EntryPoint {
    /// `[host]:port`, e.g. `:80`, `0.0.0.0:8080`, `[::1]:443`.
    pub address: String,
    /// Redirect every request to this entry point with HTTPS (permanent). For `web` the default
    /// is `websecure`; set `null` to serve plain HTTP.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub redirect_to: Option<String>,
}

/// Minimum TLS version.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
pub enum TlsVersion {
    /// TLS 1.2 (default).
    #[default]
    VersionTLS12,
    /// TLS 1.3.
    VersionTLS13,
}

/// Certificates and ACME.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct Tls {
    /// Where certificates live on the proxy's node (default `/pv/CERTS`, HinD's). Absolute.
    pub cert_dir: String,
    /// Certificate/key file pairs; relative paths are resolved in `certDir`.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub certificates: Vec<Certificate>,
    /// Automatic certificates from an ACME CA (Let's Encrypt by default).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub acme: Option<Acme>,
    /// Lowest TLS version accepted (default `VersionTLS12`).
    pub min_version: TlsVersion,
}

impl Default for Tls {
    fn default() -> Self {
        Self {
            cert_dir: "/pv/CERTS".to_owned(),
            certificates: Vec::new(),
            acme: None,
            min_version: TlsVersion::VersionTLS12,
        }
    }
}

/// A certificate and its private key, as file paths (never inline PEM: keys are secrets).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Certificate {
    /// PEM certificate (chain) file.
    pub cert_file: String,
    /// PEM private key file.
    pub key_file: String,
}

/// Let's Encrypt's production directory.
pub const LETS_ENCRYPT_DIRECTORY: &str = "https://acme-v02.api.letsencrypt.org/directory";

/// ACME account settings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Acme {
    /// Account e-mail the CA sends expiry notices to.
    pub email: String,
    /// Where account and certificates are stored (default `acme.json` in `certDir`).
    #[serde(default = "default_acme_storage")]
    pub storage: String,
    /// ACME directory URL (default Let's Encrypt production).
    #[serde(default = "default_ca_server")]
    pub ca_server: String,
    /// PEM files (absolute or relative to `certDir`) of the CAs behind a private ACME directory
    /// (step-ca, Pebble), trusted in addition to the system roots.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ca_roots: Vec<String>,
}

fn default_acme_storage() -> String {
    "acme.json".to_owned()
}

fn default_ca_server() -> String {
    LETS_ENCRYPT_DIRECTORY.to_owned()
}

policy_struct! {
    /// Policies applied to routed traffic.
    #[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
    #[serde(rename_all = "camelCase", deny_unknown_fields, default)]
    pub struct Middlewares {
        /// Response headers (on by default, with HinD's values).
        pub security_headers: SecurityHeaders,
        /// Request headers every request must carry (non-empty); others get 403.
        #[serde(skip_serializing_if = "Vec::is_empty")]
        pub required_headers: Vec<String>,
        /// Client networks refused with 403 (off unless set).
        #[serde(skip_serializing_if = "Option::is_none")]
        pub ip_deny_list: Option<IpDenyList>,
        /// Not supported: blocking by country needs a plugin neither stock proxy build has.
        /// Accepted by the parser only so validation can say so.
        #[serde(skip_serializing_if = "Option::is_none")]
        pub geo_block: Option<serde_json::Value>,
        /// Not supported: a WAF (SQL injection, XSS rules) needs a plugin neither stock proxy
        /// build has. Accepted by the parser only so validation can say so.
        #[serde(skip_serializing_if = "Option::is_none")]
        pub waf: Option<serde_json::Value>,
    }
}

/// Security response headers: HinD's five defaults, plus `headers` (added or overriding), minus
/// `remove`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct SecurityHeaders {
    /// Send the headers at all (default true).
    pub enabled: bool,
    /// Headers to add or override, e.g. `Strict-Transport-Security: max-age=31536000`.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub headers: BTreeMap<String, String>,
    /// Default headers not to send, by name.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub remove: Vec<String>,
}

impl Default for SecurityHeaders {
    fn default() -> Self {
        Self {
            enabled: true,
            headers: BTreeMap::new(),
            remove: Vec::new(),
        }
    }
}

/// Token-bucket rate limit per client IP (Traefik `rateLimit`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RateLimit {
    /// Requests allowed per `period` on average (1 to 2^63-1: Traefik parses it as an int64).
    #[schemars(range(min = 1, max = i64::MAX))]
    pub average: u64,
    /// Requests allowed in a burst (default 1; 1 to 2^63-1: Traefik parses it as an int64).
    #[serde(default = "default_burst")]
    #[schemars(range(min = 1, max = i64::MAX))]
    pub burst: u64,
    /// The period `average` is counted over (default `1s`).
    #[serde(default = "default_period")]
    #[schemars(pattern(DURATION_PATTERN))]
    pub period: String,
}

fn default_burst() -> u64 {
    1
}

fn default_period() -> String {
    "1s".to_owned()
}

/// Client networks allowed to connect.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct IpAllowList {
    /// CIDRs (`10.0.0.0/8`) or single addresses (`192.0.2.7`, treated as /32 or /128).
    #[schemars(length(min = 1))]
    pub source_range: Vec<String>,
}

/// Basic authentication by reference: the user list (htpasswd lines) is read from Consul KV or
/// a file on the proxy's node, never written into this document.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BasicAuth {
    /// Where the htpasswd lines live.
    pub users_from: UsersFrom,
    /// Realm shown by browsers (default `restricted`).
    #[serde(default = "default_realm")]
    pub realm: String,
}

fn default_realm() -> String {
    "restricted".to_owned()
}

/// Reference to the basic-auth user list.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub enum UsersFrom {
    /// A Consul KV key holding htpasswd lines, e.g. `proxy-operator/secrets/basic-auth`.
    ConsulKey(String),
    /// An absolute htpasswd path: read by the operator (`--users-dir`), by Traefik for a set.
    File(String),
}

/// Prometheus metrics.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct Metrics {
    /// Expose Prometheus metrics (default true).
    pub prometheus: bool,
    /// Listener for `/metrics` (default `:8082`; Traefik names this entry point `metrics`).
    pub address: String,
}

impl Default for Metrics {
    fn default() -> Self {
        Self {
            prometheus: true,
            address: ":8082".to_owned(),
        }
    }
}

/// The proxy's API and dashboard.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct Dashboard {
    /// Serve the API and dashboard (default true; the operator's health gate reads the API).
    pub enabled: bool,
    /// Traefik `api.insecure`: serve them unauthenticated on `address` (default false; env
    /// `TRAEFIK_API_INSECURE`). Traefik only.
    pub insecure: bool,
    /// Listener of the API, dashboard and ping (default `:8080`; Caddy's admin API stays on
    /// localhost).
    pub address: String,
}

impl Default for Dashboard {
    fn default() -> Self {
        Self {
            enabled: true,
            insecure: false,
            address: ":8080".to_owned(),
        }
    }
}

/// Nomad job type of the proxy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum JobType {
    /// One proxy on every eligible node (default).
    #[default]
    System,
    /// `count` proxies placed by the scheduler.
    Service,
}

/// The proxy's Nomad job.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct Job {
    /// Nomad job ID (default `proxy`).
    pub id: String,
    /// `system` (default) or `service`.
    #[serde(rename = "type")]
    pub job_type: JobType,
    /// Datacenters (default `["*"]`, all).
    pub datacenters: Vec<String>,
    /// Nomad namespace (default `default`).
    pub namespace: String,
    /// Node pool (default `default`).
    pub node_pool: String,
    /// Nomad region (default: the agent's).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    /// Instances, for `type: service` only (default 1).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub count: Option<u32>,
    /// How the proxy runs (default: docker with the official image of `version`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub driver: Option<Driver>,
    /// CPU and memory.
    pub resources: Resources,
    /// Proxy version: the image tag, or a label for a binary (default `3.7.15` for Traefik,
    /// `2.11.7` for Caddy).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// The Nomad host volume (client `host_volume` name) mounted at `tls.certDir` for the
    /// docker and exec drivers, so certificates and ACME state survive restarts (default
    /// `certs`). The empty string mounts nothing (the image or chroot provides the directory).
    /// With raw_exec, `certDir` is the host path itself and nothing is mounted.
    pub cert_volume: String,
    /// Open-file limit of the proxy (default 65535). The docker driver sets it (`ulimit`);
    /// raw_exec and exec inherit the Nomad client's hard limit, which the Go runtime of both
    /// proxies raises its soft limit to, so set `LimitNOFILE` on the Nomad agent instead.
    #[schemars(range(min = 1024))]
    pub open_files: u32,
    /// Where Traefik's Consul and Nomad tokens come from when the cluster has ACLs on (default:
    /// none, ACLs off). The job never carries a token (anyone with `read-job` reads a job spec):
    /// it carries a Nomad `template` that reads the token at the client, from the task's
    /// Workload Identity (`workloadIdentity: {}`) or a Nomad Variable
    /// (`nomadVariable: {path: nomad/jobs/proxy}`). Caddy reads neither API and takes no
    /// tokens.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tokens: Option<ProxyTokens>,
}

/// Where the proxy's ACL tokens come from (`spec.job.tokens`): one key naming the source, as
/// `driver` names the driver. Each source is read by the Nomad client when it starts the task;
/// the operator never sees a token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub enum ProxyTokens {
    /// `workloadIdentity: {}`: Nomad Workload Identity (Nomad >= 1.7, `nomad setup consul`
    /// done). The task's own identity is its Nomad token (attach
    /// `nomad-jobs/acl/nomad-traefik.hcl` with `nomad acl policy apply -job <job id>`), and
    /// Nomad logs in to Consul with the task's `consul_default` identity (bind
    /// `consul-traefik.hcl` to it with a role and a binding rule).
    WorkloadIdentity(WorkloadIdentityTokens),
    /// `nomadVariable: {path: ...}`: a Nomad Variable with the items `consul_token` and
    /// `nomad_token` (tokens of the `consul-traefik.hcl` and `nomad-traefik.hcl` policies),
    /// read with the task's identity.
    NomadVariable(NomadVariableTokens),
}

/// `spec.job.tokens.workloadIdentity`: no settings.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct WorkloadIdentityTokens {}

/// `spec.job.tokens.nomadVariable`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NomadVariableTokens {
    /// Variable path (default `nomad/jobs/<job id>`, which the job reads without any policy;
    /// another path needs a policy granting `read` on it attached to the job).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
}

impl Default for Job {
    fn default() -> Self {
        Self {
            id: "proxy".to_owned(),
            job_type: JobType::System,
            datacenters: vec!["*".to_owned()],
            namespace: "default".to_owned(),
            node_pool: "default".to_owned(),
            region: None,
            count: None,
            driver: None,
            resources: Resources::default(),
            version: None,
            cert_volume: "certs".to_owned(),
            open_files: 65535,
            tokens: None,
        }
    }
}

/// Task driver of the proxy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub enum Driver {
    /// A container image.
    Docker(DockerDriver),
    /// A binary on the node, unisolated.
    RawExec(CommandDriver),
    /// A binary on the node, in Nomad's chroot/cgroup isolation.
    Exec(CommandDriver),
}

/// `docker` driver settings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DockerDriver {
    /// Image reference, e.g. `traefik:v3.7.15` (default: the official image of `job.version`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
}

/// `raw_exec` / `exec` driver settings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CommandDriver {
    /// The proxy binary: an absolute path, or a name looked up in the node's PATH (default: the
    /// proxy's name, `traefik` or `caddy`, so changing `spec.proxy` alone switches the binary).
    #[serde(default)]
    pub command: String,
    /// Extra arguments before the ones the operator adds (config file flags).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub args: Vec<String>,
}

/// Task resources.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct Resources {
    /// CPU in MHz (default 200).
    #[schemars(range(min = 1))]
    pub cpu: u32,
    /// Memory in MB (default 256, at least 10).
    #[serde(rename = "memoryMB")]
    #[schemars(range(min = 10))]
    pub memory_mb: u32,
}

impl Default for Resources {
    fn default() -> Self {
        Self {
            cpu: 200,
            memory_mb: 256,
        }
    }
}

/// What to do when a rollout fails its health gate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum OnFailure {
    /// Revert to the last version that passed the gate (default).
    #[default]
    Rollback,
    /// Leave the failed version running for inspection; status says `Degraded`.
    Hold,
}

/// What to do about drift between the spec and the running job.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum DriftPolicy {
    /// Re-apply the spec (default).
    #[default]
    Correct,
    /// Only report it in the status.
    Warn,
}

/// Rollout, health gate and rollback.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct Rollout {
    /// Time a new version has to become healthy before it counts as failed (default `60s`).
    #[schemars(pattern(DURATION_PATTERN))]
    pub healthy_deadline: String,
    /// Time a new version must stay healthy to pass (default `10s`); less than
    /// `healthyDeadline`.
    #[schemars(pattern(DURATION_PATTERN))]
    pub min_healthy_time: String,
    /// Requests sent through the proxy that must answer as expected.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub probes: Vec<Probe>,
    /// `rollback` (default) or `hold`.
    pub on_failure: OnFailure,
}

impl Default for Rollout {
    fn default() -> Self {
        Self {
            healthy_deadline: "60s".to_owned(),
            min_healthy_time: "10s".to_owned(),
            probes: Vec::new(),
            on_failure: OnFailure::Rollback,
        }
    }
}

/// A route probe: a request through the proxy and the status it must answer with.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Probe {
    /// `Host` header, e.g. `whoami.example.com`.
    pub host: String,
    /// Path starting with `/` (default `/`).
    #[serde(default = "default_probe_path")]
    pub path: String,
    /// Expected HTTP status (default 200).
    #[serde(default = "default_expect_status")]
    #[schemars(range(min = 100, max = 599))]
    pub expect_status: u16,
    /// Entry point the probe is sent to (default `web`).
    #[serde(default = "default_probe_entry_point")]
    pub entry_point: String,
}

fn default_probe_path() -> String {
    "/".to_owned()
}

fn default_expect_status() -> u16 {
    200
}

fn default_probe_entry_point() -> String {
    "web".to_owned()
}
