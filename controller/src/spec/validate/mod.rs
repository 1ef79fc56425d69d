//! Second layer: [`ProxyConfig`] → [`ValidatedSpec`], reporting every error at once.
//!
//! One file per section of the document; `field` holds the plumbing they share (the error
//! collector with field paths, and checks for names, addresses, paths and durations).

mod discovery;
mod entry_points;
mod field;
mod job;
mod middlewares;
mod rollout;
mod tls;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use ipnet::IpNet;

use super::types::*;
use super::{FieldError, ValidationErrors};

pub use entry_points::port_label;
pub use field::ListenAddress;
use field::Validator;
pub(crate) use field::is_hostname;

/// One entry point, resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listener {
    /// `web`, `websecure` or a name from `entryPoints.extra`.
    pub name: String,
    /// Where it listens.
    pub address: ListenAddress,
    /// Entry point every request is redirected to with HTTPS, if any.
    pub redirect_to: Option<String>,
}

/// A certificate pair with both paths absolute.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertificatePaths {
    /// Certificate (chain) file.
    pub cert_file: PathBuf,
    /// Private key file.
    pub key_file: PathBuf,
}

/// ACME settings with the storage path resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolvedAcme {
    /// Account e-mail.
    pub email: String,
    /// Absolute storage path.
    pub storage: PathBuf,
    /// ACME directory URL.
    pub ca_server: url::Url,
}

/// Rate limit with its period parsed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ResolvedRateLimit {
    /// Requests per period on average.
    pub average: u64,
    /// Burst size.
    pub burst: u64,
    /// Period.
    pub period: Duration,
}

/// Rollout settings with durations parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolvedRollout {
    /// Deadline for a new version to become healthy.
    pub healthy_deadline: Duration,
    /// How long it must stay healthy.
    pub min_healthy_time: Duration,
    /// Route probes (entry points checked to exist).
    pub probes: Vec<Probe>,
    /// What happens on failure.
    pub on_failure: OnFailure,
}

/// A document that passed validation: defaults applied, every value resolved to its type.
///
/// This is the only input of the renderers and the planner. [`ValidatedSpec::config`] holds the
/// document with proxy-dependent defaults filled in (`job.version`, `job.driver`, `job.count`),
/// so re-serialising it gives the complete desired state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValidatedSpec {
    config: ProxyConfig,
    listeners: Vec<Listener>,
    certificates: Vec<CertificatePaths>,
    acme: Option<ResolvedAcme>,
    security_headers: BTreeMap<String, String>,
    rate_limit: Option<ResolvedRateLimit>,
    ip_allow_list: Option<Vec<IpNet>>,
    metrics_address: Option<ListenAddress>,
    dashboard_address: Option<ListenAddress>,
    consul_refresh_interval: Duration,
    nomad_refresh_interval: Duration,
    throttle_duration: Duration,
    rollout: ResolvedRollout,
    warnings: Vec<FieldError>,
    digest: String,
}

impl ValidatedSpec {
    /// The document with every default applied.
    pub fn config(&self) -> &ProxyConfig {
        &self.config
    }
    /// The `spec` part of [`Self::config`].
    pub fn spec(&self) -> &ProxyConfigSpec {
        &self.config.spec
    }
    /// `metadata.name`.
    pub fn name(&self) -> &str {
        &self.config.metadata.name
    }
    /// Which proxy runs.
    pub fn proxy(&self) -> ProxyKind {
        self.config.spec.proxy
    }
    /// Default routing domain.
    pub fn domain_suffix(&self) -> &str {
        &self.config.spec.domain_suffix.0
    }
    /// Discovery settings (addresses validated).
    pub fn discovery(&self) -> &Discovery {
        &self.config.spec.discovery
    }
    /// `discovery.consul.refreshInterval`.
    pub fn consul_refresh_interval(&self) -> Duration {
        self.consul_refresh_interval
    }
    /// `discovery.nomad.refreshInterval`.
    pub fn nomad_refresh_interval(&self) -> Duration {
        self.nomad_refresh_interval
    }
    /// `discovery.throttleDuration` (Traefik `providers.providersThrottleDuration`).
    pub fn throttle_duration(&self) -> Duration {
        self.throttle_duration
    }
    /// Entry points in order: `web`, `websecure`, then `extra` by name.
    pub fn entry_points(&self) -> &[Listener] {
        &self.listeners
    }
    /// An entry point by name.
    pub fn entry_point(&self, name: &str) -> Option<&Listener> {
        self.listeners.iter().find(|l| l.name == name)
    }
    /// TLS settings as written (`certDir` absolute).
    pub fn tls(&self) -> &Tls {
        &self.config.spec.tls
    }
    /// Certificate pairs with absolute paths.
    pub fn certificates(&self) -> &[CertificatePaths] {
        &self.certificates
    }
    /// ACME settings, if enabled.
    pub fn acme(&self) -> Option<&ResolvedAcme> {
        self.acme.as_ref()
    }
    /// `tls.minVersion`.
    pub fn min_tls_version(&self) -> TlsVersion {
        self.config.spec.tls.min_version
    }
    /// The response headers to set (empty when security headers are disabled).
    pub fn security_headers(&self) -> &BTreeMap<String, String> {
        &self.security_headers
    }
    /// The rate limit, if set.
    pub fn rate_limit(&self) -> Option<&ResolvedRateLimit> {
        self.rate_limit.as_ref()
    }
    /// Allowed client networks, if restricted.
    pub fn ip_allow_list(&self) -> Option<&[IpNet]> {
        self.ip_allow_list.as_deref()
    }
    /// Basic auth (by reference), if set.
    pub fn basic_auth(&self) -> Option<&BasicAuth> {
        self.config.spec.middlewares.basic_auth.as_ref()
    }
    /// Where Prometheus metrics are served, if enabled.
    pub fn metrics_address(&self) -> Option<&ListenAddress> {
        self.metrics_address.as_ref()
    }
    /// Dashboard settings as written.
    pub fn dashboard(&self) -> &Dashboard {
        &self.config.spec.dashboard
    }
    /// Where the API/dashboard/ping listen, if enabled.
    pub fn dashboard_address(&self) -> Option<&ListenAddress> {
        self.dashboard_address.as_ref()
    }
    /// The job settings, with `version`, `driver` and (for service jobs) `count` filled in.
    pub fn job(&self) -> &Job {
        &self.config.spec.job
    }
    /// The resolved task driver.
    pub fn driver(&self) -> &Driver {
        // Always Some after validation; the fallback keeps this total without a panic.
        static FALLBACK: std::sync::LazyLock<Driver> =
            std::sync::LazyLock::new(|| Driver::Docker(DockerDriver { image: None }));
        self.config.spec.job.driver.as_ref().unwrap_or(&FALLBACK)
    }
    /// The resolved proxy version.
    pub fn version(&self) -> &str {
        self.config.spec.job.version.as_deref().unwrap_or_default()
    }
    /// Rollout settings, durations parsed.
    pub fn rollout(&self) -> &ResolvedRollout {
        &self.rollout
    }
    /// `driftPolicy`.
    pub fn drift_policy(&self) -> DriftPolicy {
        self.config.spec.drift_policy
    }
    /// `paused`.
    pub fn paused(&self) -> bool {
        self.config.spec.paused
    }
    /// `retryNonce`.
    pub fn retry_nonce(&self) -> Option<&str> {
        self.config.spec.retry_nonce.as_deref()
    }
    /// Problems that do not block a rollout (reported in status).
    pub fn warnings(&self) -> &[FieldError] {
        &self.warnings
    }
    /// SHA-256 (hex) of the canonical JSON of `apiVersion` + the resolved `spec`, without
    /// `paused` and `retryNonce`: pausing or retrying is not a change to roll out.
    pub fn digest(&self) -> &str {
        &self.digest
    }
}

/// Validates a parsed document, reporting every error at once.
pub fn validate(config: &ProxyConfig) -> Result<ValidatedSpec, ValidationErrors> {
    let mut v = Validator::default();
    let mut config = config.clone();
    let spec = &config.spec;

    v.dns_label("metadata.name", &config.metadata.name);
    for key in config.metadata.labels.keys() {
        if key.trim().is_empty() {
            v.error("metadata.labels", "label names must not be empty");
        }
    }
    v.hostname("spec.domainSuffix", &spec.domain_suffix.0);

    let intervals = discovery::check(&mut v, &spec.discovery);
    let listeners = v.entry_points(&spec.entry_points);
    let (certificates, acme) = tls::check(&mut v, &spec.tls, spec.proxy);
    let middlewares = middlewares::check(&mut v, &spec.middlewares, spec.proxy);

    // Metrics and dashboard.
    let metrics_address = if spec.metrics.prometheus {
        v.listen("spec.metrics.address", &spec.metrics.address)
    } else {
        None
    };
    let dashboard_address = if spec.dashboard.enabled {
        v.listen("spec.dashboard.address", &spec.dashboard.address)
    } else {
        None
    };
    if spec.dashboard.insecure && !spec.dashboard.enabled {
        v.error(
            "spec.dashboard.insecure",
            "insecure: true needs enabled: true; there is no dashboard to expose",
        );
    }
    if spec.dashboard.insecure && spec.proxy == ProxyKind::Caddy {
        v.error("spec.dashboard.insecure", "insecure is Traefik-only (api.insecure); Caddy's admin API always stays on localhost. Remove it or set proxy: traefik");
    }
    entry_points::check_sockets(
        &mut v,
        &listeners,
        metrics_address.as_ref(),
        dashboard_address.as_ref(),
    );

    let proxy = spec.proxy;
    job::check(&mut v, &mut config.spec.job, proxy);
    let rollout = rollout::check(&mut v, &config.spec, &listeners);

    if !v.errors.is_empty() {
        return Err(ValidationErrors(
            v.errors.into_iter().map(super::scrub::scrub).collect(),
        ));
    }
    let digest = digest_of(&config);
    Ok(ValidatedSpec {
        config,
        listeners,
        certificates,
        acme,
        security_headers: middlewares.security_headers,
        rate_limit: middlewares.rate_limit,
        ip_allow_list: middlewares.ip_allow_list,
        metrics_address,
        dashboard_address,
        consul_refresh_interval: intervals.consul_refresh.unwrap_or_default(),
        nomad_refresh_interval: intervals.nomad_refresh.unwrap_or_default(),
        throttle_duration: intervals.throttle.unwrap_or_default(),
        rollout,
        warnings: v.warnings.into_iter().map(super::scrub::scrub).collect(),
        digest,
    })
}

fn digest_of(config: &ProxyConfig) -> String {
    let mut spec = config.spec.clone();
    spec.paused = false;
    spec.retry_nonce = None;
    super::digest::digest_json(
        &serde_json::json!({ "apiVersion": config.api_version, "spec": spec }),
    )
}
