//! Second layer: [`ProxyConfig`] → [`ValidatedSpec`], reporting every error at once.
//!
//! One file per section of the document; `field` holds the plumbing they share (the error
//! collector with field paths, and checks for names, addresses, paths and durations).

mod discovery;
mod entry_points;
mod field;
mod job;
mod logging;
mod middlewares;
mod policies;
mod rollout;
mod tls;

use std::collections::BTreeMap;
use std::time::Duration;

use ipnet::IpNet;

use super::model::{self, Acme, CertPair, EntryPoint, ListenAddr, Model, RateLimit};
use super::types::*;
use super::{FieldError, ValidationErrors};

pub use entry_points::port_label;
pub use field::ListenAddress;
use field::Validator;
pub(crate) use field::is_hostname;
pub use policies::check_breaker_expression;

/// A document that passed validation: the document with its defaults filled in, and the
/// resolved [`Model`] the renderers read.
///
/// [`ValidatedSpec::config`] holds the document with proxy-dependent defaults filled in
/// (`job.version`, `job.driver`, `job.count`), so re-serialising it gives the complete desired
/// state; [`ValidatedSpec::model`] is the same state resolved to types.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValidatedSpec {
    config: ProxyConfig,
    model: Model,
    warnings: Vec<FieldError>,
    digest: String,
}

impl ValidatedSpec {
    /// The document with every default applied.
    pub fn config(&self) -> &ProxyConfig {
        &self.config
    }
    /// The resolved model the renderers read. Basic-auth users are empty here: they live behind
    /// a reference the caller reads, and `render` fills them in.
    pub fn model(&self) -> &Model {
        &self.model
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
        self.model.proxy
    }
    /// Default routing domain.
    pub fn domain_suffix(&self) -> &str {
        &self.model.domain_suffix
    }
    /// Discovery settings as written (addresses validated).
    pub fn discovery(&self) -> &Discovery {
        &self.config.spec.discovery
    }
    /// `discovery.consul.refreshInterval`.
    pub fn consul_refresh_interval(&self) -> Duration {
        self.model.discovery.consul.refresh_interval
    }
    /// `discovery.nomad.refreshInterval`.
    pub fn nomad_refresh_interval(&self) -> Duration {
        self.model.discovery.nomad.refresh_interval
    }
    /// `discovery.throttleDuration` (Traefik `providers.providersThrottleDuration`).
    pub fn throttle_duration(&self) -> Duration {
        self.model.discovery.throttle
    }
    /// Entry points in order: `web`, `websecure`, then `extra` by name.
    pub fn entry_points(&self) -> &[EntryPoint] {
        &self.model.entry_points
    }
    /// An entry point by name.
    pub fn entry_point(&self, name: &str) -> Option<&EntryPoint> {
        self.model.entry_points.iter().find(|l| l.name == name)
    }
    /// TLS settings as written (`certDir` absolute).
    pub fn tls(&self) -> &Tls {
        &self.config.spec.tls
    }
    /// Certificate pairs with absolute paths.
    pub fn certificates(&self) -> &[CertPair] {
        &self.model.tls.certificates
    }
    /// ACME settings, if enabled.
    pub fn acme(&self) -> Option<&Acme> {
        self.model.tls.acme.as_ref()
    }
    /// `tls.minVersion`.
    pub fn min_tls_version(&self) -> TlsVersion {
        self.config.spec.tls.min_version
    }
    /// The response headers to set (empty when security headers are disabled).
    pub fn security_headers(&self) -> &BTreeMap<String, String> {
        &self.model.policy.headers
    }
    /// The rate limit, if set.
    pub fn rate_limit(&self) -> Option<&RateLimit> {
        self.model.policy.rate_limit.as_ref()
    }
    /// Allowed client networks, if restricted.
    pub fn ip_allow_list(&self) -> Option<&[IpNet]> {
        Some(self.model.policy.ip_allow.as_slice()).filter(|l| !l.is_empty())
    }
    /// Basic auth (by reference), if set.
    pub fn basic_auth(&self) -> Option<&BasicAuth> {
        self.config.spec.middlewares.basic_auth.as_ref()
    }
    /// Where the proxy's own Prometheus metrics entry point listens (Traefik), if enabled.
    /// Caddy serves metrics on its admin API, so this is `None` for Caddy.
    pub fn metrics_address(&self) -> Option<&ListenAddr> {
        self.model.metrics.as_ref()
    }
    /// Dashboard settings as written.
    pub fn dashboard(&self) -> &Dashboard {
        &self.config.spec.dashboard
    }
    /// The internal listener (Traefik's API/dashboard/ping entry point, Caddy's admin API on
    /// `localhost`), if the dashboard is enabled.
    pub fn dashboard_address(&self) -> Option<&ListenAddr> {
        Some(&self.model.dashboard.address).filter(|_| self.model.dashboard.enabled)
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
        self.model.job.version.as_deref().unwrap_or_default()
    }
    /// Rollout settings, durations parsed.
    pub fn rollout(&self) -> &model::Rollout {
        &self.model.rollout
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

/// Validates a parsed document, reporting every error at once. Each section of the document is
/// checked and resolved into its part of the [`Model`] by its own file.
pub fn validate(config: &ProxyConfig) -> Result<ValidatedSpec, ValidationErrors> {
    let mut v = Validator::default();
    let mut config = config.clone();
    let spec = &config.spec;
    let proxy = spec.proxy;

    v.dns_label("metadata.name", &config.metadata.name);
    for key in config.metadata.labels.keys() {
        if key.trim().is_empty() {
            v.error("metadata.labels", "label names must not be empty");
        }
    }
    v.hostname("spec.domainSuffix", &spec.domain_suffix.0);

    let discovery = discovery::check(&mut v, &spec.discovery);
    let entry_points = v.entry_points(&spec.entry_points);
    let tls = tls::check(&mut v, &spec.tls, proxy);
    let policy = middlewares::check(&mut v, &spec.middlewares, proxy);
    let policies = policies::check_sets(&mut v, &spec.policies, proxy);
    let logging = logging::check(&mut v, &spec.logging, proxy);
    let transport = logging::transport(&mut v, &spec.entry_points.transport);
    let (metrics, dashboard) = entry_points::check_listeners(&mut v, spec, &entry_points);
    let job = job::check(&mut v, &mut config.spec.job, proxy);
    let rollout = rollout::check(&mut v, &config.spec, &entry_points);

    if !v.errors.is_empty() {
        return Err(ValidationErrors(
            v.errors.into_iter().map(super::scrub::scrub).collect(),
        ));
    }
    let model = Model {
        proxy,
        domain_suffix: config.spec.domain_suffix.0.clone(),
        entry_points,
        discovery,
        tls,
        policy,
        policies,
        logging,
        transport,
        metrics,
        dashboard,
        job,
        rollout,
    };
    let digest = digest_of(&config);
    Ok(ValidatedSpec {
        config,
        model,
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
