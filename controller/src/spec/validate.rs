//! Second layer: [`ProxyConfig`] → [`ValidatedSpec`], reporting every error at once.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::IpAddr;
use std::path::{Component, Path, PathBuf};
use std::time::Duration;

use ipnet::IpNet;

use super::duration::parse_duration;
use super::types::*;
use super::{FieldError, ValidationErrors};

/// Default Traefik version (what `scripts/bootstrap` installs and tests run).
pub const DEFAULT_TRAEFIK_VERSION: &str = "3.7.15";
/// Default Caddy version.
pub const DEFAULT_CADDY_VERSION: &str = "2.11.7";

/// A listen address: optional host (empty means all interfaces) and a port.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ListenAddress {
    /// IP literal or hostname; `None` for all interfaces.
    pub host: Option<String>,
    /// TCP port, 1–65535.
    pub port: u16,
}

impl fmt::Display for ListenAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.host {
            None => write!(f, ":{}", self.port),
            Some(h) if h.contains(':') => write!(f, "[{h}]:{}", self.port),
            Some(h) => write!(f, "{h}:{}", self.port),
        }
    }
}

impl ListenAddress {
    /// Parses `[host]:port` (`:80`, `0.0.0.0:80`, `[::1]:443`, `localhost:8080`).
    pub fn parse(text: &str) -> Result<Self, String> {
        let example = "expected [host]:port such as \":80\", \"0.0.0.0:8080\" or \"[::1]:443\"";
        let Some((host, port)) = text.rsplit_once(':') else {
            return Err(format!("{text:?} has no port; {example}"));
        };
        let port = parse_port(port).map_err(|e| format!("{text:?}: {e}"))?;
        let host = if let Some(inner) = host.strip_prefix('[') {
            let Some(inner) = inner.strip_suffix(']') else {
                return Err(format!("{text:?} has an unclosed '['; {example}"));
            };
            match inner.parse::<IpAddr>() {
                Ok(IpAddr::V6(_)) => Some(inner.to_owned()),
                _ => {
                    return Err(format!(
                        "{text:?}: {inner:?} is not an IPv6 address; {example}"
                    ));
                }
            }
        } else if host.is_empty() {
            None
        } else if host.parse::<IpAddr>().is_ok() || is_hostname(host) {
            if host.contains(':') {
                return Err(format!(
                    "{text:?}: put IPv6 addresses in brackets; {example}"
                ));
            }
            Some(host.to_owned())
        } else {
            return Err(format!(
                "{text:?}: {host:?} is neither an IP address nor a hostname; {example}"
            ));
        };
        Ok(Self { host, port })
    }

    /// Whether two listeners would fight over the same port. Hosts do not matter: the job
    /// reserves each port as a static host port, and Nomad refuses one port reserved twice
    /// ("Static port 80 already reserved") even for two different addresses.
    fn overlaps(&self, other: &Self) -> bool {
        self.port == other.port
    }
}

fn parse_port(text: &str) -> Result<u16, String> {
    match text.parse::<u32>() {
        Ok(p) if (1..=65535).contains(&p) => Ok(p as u16),
        Ok(p) => Err(format!("port {p} is out of range; ports are 1-65535")),
        Err(_) => Err(format!("port {text:?} is not a number; ports are 1-65535")),
    }
}

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

    // Discovery.
    let d = &spec.discovery;
    if d.consul.address.contains("://") {
        v.error(
            "spec.discovery.consul.address",
            format!("{:?} must be host:port without a scheme (e.g. 127.0.0.1:8500); set scheme: https for TLS", d.consul.address),
        );
    } else {
        v.host_port("spec.discovery.consul.address", &d.consul.address);
    }
    if let Some(dc) = &d.consul.datacenter {
        v.identifier("spec.discovery.consul.datacenter", dc);
    }
    if let Some(ca) = &d.consul.ca_file {
        v.absolute_path("spec.discovery.consul.caFile", ca);
        if d.consul.scheme != Scheme::Https {
            v.error(
                "spec.discovery.consul.caFile",
                "is used only with scheme: https; set scheme: https or remove caFile",
            );
        }
    }
    let consul_refresh_interval = v.refresh_interval(
        "spec.discovery.consul.refreshInterval",
        &d.consul.refresh_interval,
    );
    let nomad_refresh_interval = v.refresh_interval(
        "spec.discovery.nomad.refreshInterval",
        &d.nomad.refresh_interval,
    );
    let throttle_duration = v.duration("spec.discovery.throttleDuration", &d.throttle_duration);
    v.http_url(
        "spec.discovery.nomad.address",
        &d.nomad.address,
        "http://127.0.0.1:4646",
    );
    if let Some(ns) = &d.nomad.namespace {
        v.identifier("spec.discovery.nomad.namespace", ns);
    }

    // Entry points.
    let listeners = v.entry_points(&spec.entry_points);

    // TLS.
    let tls = &spec.tls;
    let cert_dir = v.absolute_path("spec.tls.certDir", &tls.cert_dir);
    let mut certificates = Vec::new();
    let mut seen_certs = BTreeSet::new();
    for (i, cert) in tls.certificates.iter().enumerate() {
        let base = format!("spec.tls.certificates[{i}]");
        let cert_file = v.cert_path(
            &format!("{base}.certFile"),
            &cert.cert_file,
            cert_dir.as_deref(),
        );
        let key_file = v.cert_path(
            &format!("{base}.keyFile"),
            &cert.key_file,
            cert_dir.as_deref(),
        );
        if let (Some(cert_file), Some(key_file)) = (cert_file, key_file) {
            if cert_file == key_file {
                v.error(&base, "certFile and keyFile name the same file; give the certificate and its private key separately");
            } else if !seen_certs.insert(cert_file.clone()) {
                v.error(
                    format!("{base}.certFile"),
                    format!("{} is listed twice", cert_file.display()),
                );
            }
            certificates.push(CertificatePaths {
                cert_file,
                key_file,
            });
        }
    }
    let acme = tls
        .acme
        .as_ref()
        .and_then(|a| v.acme(a, cert_dir.as_deref()));
    if spec.proxy == ProxyKind::Traefik && certificates.is_empty() && tls.acme.is_none() {
        v.warn(
            "spec.tls",
            "websecure has no certificates and ACME is off: Traefik will serve its self-signed default certificate; add tls.certificates or tls.acme",
        );
    }

    // Middlewares.
    let m = &spec.middlewares;
    let security_headers = v.security_headers(&m.security_headers);
    let rate_limit = m.rate_limit.as_ref().map(|r| {
        let period = v.positive_duration("spec.middlewares.rateLimit.period", &r.period);
        // Traefik parses both as int64; one value beyond it breaks the whole KV provider.
        const MAX: u64 = i64::MAX as u64;
        if r.average > MAX {
            v.error(
                "spec.middlewares.rateLimit.average",
                format!("must be at most {MAX} (Traefik reads it as a 64-bit signed integer)"),
            );
        }
        if r.burst > MAX {
            v.error(
                "spec.middlewares.rateLimit.burst",
                format!("must be at most {MAX} (Traefik reads it as a 64-bit signed integer)"),
            );
        }
        if r.average == 0 {
            v.error("spec.middlewares.rateLimit.average", "must be at least 1 request per period");
        }
        if r.burst == 0 {
            v.error("spec.middlewares.rateLimit.burst", "must be at least 1");
        }
        if spec.proxy == ProxyKind::Caddy {
            v.error(
                "spec.middlewares.rateLimit",
                "rate limiting is Traefik-only: Caddy's standard build has no rate limiter; remove rateLimit or set proxy: traefik",
            );
        }
        ResolvedRateLimit { average: r.average, burst: r.burst, period: period.unwrap_or(Duration::from_secs(1)) }
    });
    let ip_allow_list = m
        .ip_allow_list
        .as_ref()
        .map(|list| v.cidrs(&list.source_range));
    if let Some(auth) = &m.basic_auth {
        match &auth.users_from {
            UsersFrom::ConsulKey(key) => {
                v.kv_key("spec.middlewares.basicAuth.usersFrom.consulKey", key)
            }
            UsersFrom::File(file) => {
                v.absolute_path("spec.middlewares.basicAuth.usersFrom.file", file);
            }
        }
        if auth.realm.is_empty() || auth.realm.chars().any(|c| c == '"' || c.is_control()) {
            v.error(
                "spec.middlewares.basicAuth.realm",
                "must be non-empty text without quotes or control characters",
            );
        }
    }

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
    let mut sockets: Vec<(String, ListenAddress)> = listeners
        .iter()
        .map(|l| {
            (
                format!("spec.entryPoints.{}.address", entry_point_path(&l.name)),
                l.address.clone(),
            )
        })
        .collect();
    if let Some(a) = &metrics_address {
        sockets.push(("spec.metrics.address".into(), a.clone()));
    }
    if let Some(a) = &dashboard_address {
        sockets.push(("spec.dashboard.address".into(), a.clone()));
    }
    for (i, (path, addr)) in sockets.iter().enumerate() {
        if let Some((other, _)) = sockets[..i].iter().find(|(_, a)| a.overlaps(addr)) {
            v.error(
                path,
                format!("{addr} conflicts with {other}; every listener needs its own port (Nomad reserves host ports, whatever the address)"),
            );
        }
    }

    // Job.
    let proxy = spec.proxy;
    let job = &mut config.spec.job;
    v.nomad_id("spec.job.id", &job.id);
    if !job.cert_volume.is_empty() {
        v.identifier("spec.job.certVolume", &job.cert_volume);
    }
    if job.datacenters.is_empty() {
        v.error(
            "spec.job.datacenters",
            "must list at least one datacenter (\"*\" means all)",
        );
    }
    for (i, dc) in job.datacenters.iter().enumerate() {
        if dc.is_empty() || dc.chars().any(char::is_whitespace) {
            v.error(
                format!("spec.job.datacenters[{i}]"),
                format!("{dc:?} is not a datacenter name (no spaces; \"*\" means all)"),
            );
        }
    }
    v.identifier("spec.job.namespace", &job.namespace);
    v.identifier("spec.job.nodePool", &job.node_pool);
    if let Some(region) = &job.region {
        v.identifier("spec.job.region", region);
    }
    match (job.job_type, job.count) {
        (JobType::System, Some(_)) => v.error(
            "spec.job.count",
            "count only applies to type: service; a system job runs one proxy on every eligible node",
        ),
        (JobType::Service, Some(0)) => v.error("spec.job.count", "must be at least 1"),
        (JobType::Service, None) => job.count = Some(1),
        _ => {}
    }
    let default_version = match proxy {
        ProxyKind::Traefik => DEFAULT_TRAEFIK_VERSION,
        ProxyKind::Caddy => DEFAULT_CADDY_VERSION,
    };
    let version = job
        .version
        .get_or_insert_with(|| default_version.to_owned())
        .clone();
    if version.is_empty()
        || version.len() > 128
        || !version
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "._+-".contains(c))
    {
        v.error("spec.job.version", format!("{version:?} is not a version label; use letters, digits, '.', '_', '+', '-' (e.g. {default_version})"));
    }
    let official_image = match proxy {
        ProxyKind::Traefik => format!("traefik:v{}", version.trim_start_matches('v')),
        ProxyKind::Caddy => format!("caddy:{version}"),
    };
    match job
        .driver
        .get_or_insert(Driver::Docker(DockerDriver { image: None }))
    {
        Driver::Docker(docker) => {
            let image = docker.image.get_or_insert(official_image);
            if image.is_empty() || image.chars().any(|c| c.is_whitespace() || c.is_control()) {
                v.error("spec.job.driver.docker.image", format!("{image:?} is not an image reference (e.g. traefik:v{DEFAULT_TRAEFIK_VERSION})"));
            }
        }
        Driver::RawExec(cmd) => v.command("spec.job.driver.rawExec", cmd),
        Driver::Exec(cmd) => v.command("spec.job.driver.exec", cmd),
    }
    if job.resources.cpu == 0 {
        v.error("spec.job.resources.cpu", "must be at least 1 MHz");
    }
    if job.resources.memory_mb < 10 {
        v.error(
            "spec.job.resources.memoryMB",
            format!(
                "{} MB is below Nomad's minimum of 10 MB",
                job.resources.memory_mb
            ),
        );
    }

    // Rollout.
    let spec = &config.spec;
    let r = &spec.rollout;
    let healthy_deadline = v.positive_duration("spec.rollout.healthyDeadline", &r.healthy_deadline);
    let min_healthy_time = v.duration("spec.rollout.minHealthyTime", &r.min_healthy_time);
    if let (Some(deadline), Some(min)) = (healthy_deadline, min_healthy_time)
        && min >= deadline
    {
        v.error(
            "spec.rollout.minHealthyTime",
            format!(
                "{} must be shorter than healthyDeadline ({}); a version could never pass",
                r.min_healthy_time, r.healthy_deadline
            ),
        );
    }
    for (i, probe) in r.probes.iter().enumerate() {
        let base = format!("spec.rollout.probes[{i}]");
        if probe.host.parse::<IpAddr>().is_err() {
            v.hostname(&format!("{base}.host"), &probe.host);
        }
        if !probe.path.starts_with('/')
            || probe
                .path
                .chars()
                .any(|c| c.is_whitespace() || c.is_control())
        {
            v.error(
                format!("{base}.path"),
                format!(
                    "{:?} must start with '/' and contain no spaces (e.g. /healthz)",
                    probe.path
                ),
            );
        }
        if !(100..=599).contains(&probe.expect_status) {
            v.error(
                format!("{base}.expectStatus"),
                format!("{} is not an HTTP status; use 100-599", probe.expect_status),
            );
        }
        if !listeners.iter().any(|l| l.name == probe.entry_point)
            && !v.entry_point_names.contains(&probe.entry_point)
        {
            v.error(
                format!("{base}.entryPoint"),
                format!(
                    "entry point {:?} does not exist; known: {}",
                    probe.entry_point,
                    v.entry_point_names
                        .iter()
                        .cloned()
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            );
        }
    }
    if let Some(nonce) = &spec.retry_nonce
        && nonce.len() > 256
    {
        v.error("spec.retryNonce", "must be at most 256 characters");
    }

    if !v.errors.is_empty() {
        return Err(ValidationErrors(
            v.errors.into_iter().map(super::scrub::scrub).collect(),
        ));
    }
    let rollout = ResolvedRollout {
        healthy_deadline: healthy_deadline.unwrap_or_default(),
        min_healthy_time: min_healthy_time.unwrap_or_default(),
        probes: r.probes.clone(),
        on_failure: r.on_failure,
    };
    let digest = digest_of(&config);
    Ok(ValidatedSpec {
        config,
        listeners,
        certificates,
        acme,
        security_headers,
        rate_limit,
        ip_allow_list,
        metrics_address,
        dashboard_address,
        consul_refresh_interval: consul_refresh_interval.unwrap_or_default(),
        nomad_refresh_interval: nomad_refresh_interval.unwrap_or_default(),
        throttle_duration: throttle_duration.unwrap_or_default(),
        rollout,
        warnings: v.warnings.into_iter().map(super::scrub::scrub).collect(),
        digest,
    })
}

/// The Nomad port label of an entry point: labels allow only `[A-Za-z0-9_]`, so every other
/// character becomes `_`. Validation refuses names that collide this way; the renderer labels
/// the job's ports with it.
pub fn port_label(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

fn entry_point_path(name: &str) -> String {
    match name {
        "web" | "websecure" => name.to_owned(),
        other => format!("extra.{other}"),
    }
}

fn digest_of(config: &ProxyConfig) -> String {
    let mut spec = config.spec.clone();
    spec.paused = false;
    spec.retry_nonce = None;
    super::digest::digest_json(
        &serde_json::json!({ "apiVersion": config.api_version, "spec": spec }),
    )
}

#[derive(Default)]
struct Validator {
    errors: Vec<FieldError>,
    warnings: Vec<FieldError>,
    entry_point_names: BTreeSet<String>,
}

impl Validator {
    fn error(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.errors.push(FieldError::new(path, message));
    }

    fn warn(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.warnings.push(FieldError::new(path, message));
    }

    fn duration(&mut self, path: &str, text: &str) -> Option<Duration> {
        match parse_duration(text) {
            Ok(d) => Some(d),
            Err(e) => {
                self.error(path, e);
                None
            }
        }
    }

    fn positive_duration(&mut self, path: &str, text: &str) -> Option<Duration> {
        let d = self.duration(path, text)?;
        if d.is_zero() {
            self.error(path, format!("{text:?} must be longer than zero"));
            return None;
        }
        Some(d)
    }

    /// A provider poll interval: Traefik builds a ticker from it, and polling Consul or Nomad
    /// more often than once a second only loads the servers.
    fn refresh_interval(&mut self, path: &str, text: &str) -> Option<Duration> {
        let d = self.positive_duration(path, text)?;
        if d < Duration::from_secs(1) {
            self.error(
                path,
                format!("{text:?} is shorter than 1s; Traefik polls at this interval, use at least \"1s\" (default \"15s\")"),
            );
            return None;
        }
        Some(d)
    }

    fn hostname(&mut self, path: &str, text: &str) {
        if !is_hostname(text) {
            self.error(
                path,
                format!("{text:?} is not a hostname; use DNS labels of letters, digits and '-' separated by dots (e.g. example.com)"),
            );
        }
    }

    fn dns_label(&mut self, path: &str, text: &str) {
        let ok = !text.is_empty()
            && text.len() <= 63
            && text
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
            && !text.starts_with('-')
            && !text.ends_with('-');
        if !ok {
            self.error(path, format!("{text:?} is not a DNS label; use 1-63 lowercase letters, digits and '-' (e.g. default)"));
        }
    }

    fn identifier(&mut self, path: &str, text: &str) {
        let ok = !text.is_empty()
            && text.len() <= 128
            && text
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c));
        if !ok {
            self.error(
                path,
                format!("{text:?} is not a valid name; use 1-128 letters, digits, '-', '_' or '.'"),
            );
        }
    }

    fn nomad_id(&mut self, path: &str, text: &str) {
        let ok = !text.is_empty()
            && text.len() <= 128
            && text
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c));
        if !ok {
            self.error(path, format!("{text:?} is not a Nomad job ID; use 1-128 letters, digits, '-', '_' or '.' (e.g. proxy)"));
        }
    }

    fn host_port(&mut self, path: &str, text: &str) {
        match ListenAddress::parse(text) {
            Ok(ListenAddress { host: None, .. }) => {
                self.error(path, format!("{text:?} needs a host (e.g. 127.0.0.1:8500)"));
            }
            Ok(_) => {}
            Err(e) => self.error(path, e),
        }
    }

    fn listen(&mut self, path: &str, text: &str) -> Option<ListenAddress> {
        match ListenAddress::parse(text) {
            Ok(a) => Some(a),
            Err(e) => {
                self.error(path, e);
                None
            }
        }
    }

    fn http_url(&mut self, path: &str, text: &str, example: &str) {
        match url::Url::parse(text) {
            Ok(u) if (u.scheme() == "http" || u.scheme() == "https") && u.host().is_some() => {
                if u.path() != "/" && !u.path().is_empty() {
                    self.error(
                        path,
                        format!("{text:?} must not have a path (e.g. {example})"),
                    );
                }
            }
            _ => self.error(
                path,
                format!("{text:?} is not an http(s) URL with a host (e.g. {example})"),
            ),
        }
    }

    fn absolute_path(&mut self, path: &str, text: &str) -> Option<PathBuf> {
        let p = Path::new(text);
        if !p.is_absolute() {
            self.error(
                path,
                format!("{text:?} is not an absolute path (e.g. /pv/CERTS)"),
            );
            return None;
        }
        if p.components().any(|c| c == Component::ParentDir) {
            self.error(path, format!("{text:?} must not contain '..'"));
            return None;
        }
        if text.chars().any(char::is_control) {
            self.error(path, "must not contain control characters");
            return None;
        }
        Some(p.to_path_buf())
    }

    /// A path that is absolute, or relative to `certDir`. Never echoes inline PEM (it may be a key).
    fn cert_path(&mut self, path: &str, text: &str, cert_dir: Option<&Path>) -> Option<PathBuf> {
        if text.contains("-----BEGIN") || text.contains('\n') {
            self.error(path, "inline PEM is not accepted: write the certificate or key to a file under certDir and give its path (e.g. example.com.key)");
            return None;
        }
        if text.is_empty() {
            self.error(path, "must name a file (absolute, or relative to certDir)");
            return None;
        }
        let p = Path::new(text);
        if p.components().any(|c| c == Component::ParentDir) {
            self.error(
                path,
                format!(
                    "{text:?} must not contain '..'; give a path inside certDir or an absolute path"
                ),
            );
            return None;
        }
        if text.chars().any(char::is_control) {
            self.error(path, "must not contain control characters");
            return None;
        }
        if p.is_absolute() {
            Some(p.to_path_buf())
        } else {
            cert_dir.map(|dir| dir.join(p))
        }
    }

    fn acme(&mut self, acme: &Acme, cert_dir: Option<&Path>) -> Option<ResolvedAcme> {
        let email_ok = acme.email.split_once('@').is_some_and(|(user, domain)| {
            !user.is_empty() && domain.contains('.') && !domain.contains('@')
        }) && !acme
            .email
            .chars()
            .any(|c| c.is_whitespace() || c.is_control());
        if !email_ok {
            self.error(
                "spec.tls.acme.email",
                format!(
                    "{:?} is not an e-mail address (e.g. ops@example.com)",
                    acme.email
                ),
            );
        }
        let storage = self.cert_path("spec.tls.acme.storage", &acme.storage, cert_dir);
        let ca_server = match url::Url::parse(&acme.ca_server) {
            Ok(u) if (u.scheme() == "https" || u.scheme() == "http") && u.host().is_some() => {
                Some(u)
            }
            _ => {
                self.error(
                    "spec.tls.acme.caServer",
                    format!(
                        "{:?} is not an ACME directory URL (e.g. {LETS_ENCRYPT_DIRECTORY})",
                        acme.ca_server
                    ),
                );
                None
            }
        };
        Some(ResolvedAcme {
            email: acme.email.clone(),
            storage: storage?,
            ca_server: ca_server?,
        })
        .filter(|_| email_ok)
    }

    fn kv_key(&mut self, path: &str, key: &str) {
        if key.is_empty()
            || key.starts_with('/')
            || key.split('/').any(|s| s == ".." || s == ".")
            || key.chars().any(|c| c.is_whitespace() || c.is_control())
        {
            self.error(path, format!("{key:?} is not a Consul KV key; use a path without a leading '/' or spaces (e.g. proxy-operator/secrets/basic-auth)"));
        }
    }

    fn command(&mut self, path: &str, cmd: &CommandDriver) {
        let c = &cmd.command;
        if c.is_empty() || c.trim() != c || c.chars().any(char::is_control) {
            self.error(format!("{path}.command"), format!("{c:?} is not a command; give an absolute path or a name in PATH (e.g. /usr/local/bin/traefik)"));
        } else if c.contains('/') && !c.starts_with('/') {
            self.error(format!("{path}.command"), format!("{c:?} is a relative path; give an absolute path or a bare name looked up in PATH"));
        }
        for (i, arg) in cmd.args.iter().enumerate() {
            if arg.contains('\0') {
                self.error(format!("{path}.args[{i}]"), "must not contain NUL bytes");
            }
        }
    }

    fn entry_points(&mut self, eps: &EntryPoints) -> Vec<Listener> {
        let mut all: Vec<(String, &EntryPoint)> = vec![
            ("web".into(), &eps.web),
            ("websecure".into(), &eps.websecure),
        ];
        for (name, ep) in &eps.extra {
            let path = format!("spec.entryPoints.extra.{name}");
            let valid = name.chars().next().is_some_and(|c| c.is_ascii_alphabetic())
                && name.len() <= 64
                && name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
            if !valid {
                self.error(&path, format!("{name:?} is not an entry point name; start with a letter, then letters, digits, '-' or '_'"));
            } else if ["web", "websecure", "metrics", "traefik", "internal"]
                .iter()
                .any(|r| port_label(name) == port_label(r))
            {
                self.error(&path, format!("{name:?} is reserved; web and websecure are set directly under entryPoints, metrics, traefik and internal are used by the operator"));
            } else if let Some((other, _)) =
                all.iter().find(|(n, _)| port_label(n) == port_label(name))
            {
                self.error(&path, format!("{name:?} and {other:?} become the same Nomad port label {:?} ('-' maps to '_'); rename one", port_label(name)));
            }
            all.push((name.clone(), ep));
        }
        self.entry_point_names = all.iter().map(|(n, _)| n.clone()).collect();
        let mut listeners = Vec::new();
        for (name, ep) in &all {
            let base = format!("spec.entryPoints.{}", entry_point_path(name));
            let address = self.listen(&format!("{base}.address"), &ep.address);
            if let Some(target) = &ep.redirect_to {
                let path = format!("{base}.redirectTo");
                match all.iter().find(|(n, _)| n == target) {
                    None => {
                        let names: Vec<&str> = all.iter().map(|(n, _)| n.as_str()).collect();
                        let mut msg = format!(
                            "entry point {target:?} does not exist; known: {}",
                            names.join(", ")
                        );
                        if let Some(best) = super::parse::closest(target, &names) {
                            msg.push_str(&format!("; did you mean {best:?}?"));
                        }
                        self.error(path, msg);
                    }
                    Some((n, _)) if n == name => {
                        self.error(path, "an entry point cannot redirect to itself")
                    }
                    Some((n, t)) if t.redirect_to.is_some() => {
                        self.error(path, format!("{n:?} redirects too; redirect to an entry point that serves traffic"));
                    }
                    Some(_) => {}
                }
            }
            if let Some(address) = address {
                listeners.push(Listener {
                    name: name.clone(),
                    address,
                    redirect_to: ep.redirect_to.clone(),
                });
            }
        }
        listeners
    }

    fn security_headers(&mut self, h: &SecurityHeaders) -> BTreeMap<String, String> {
        let mut out: BTreeMap<String, String> = DEFAULT_SECURITY_HEADERS
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        for (name, value) in &h.headers {
            let path = format!("spec.middlewares.securityHeaders.headers.{name}");
            if !is_header_name(name) {
                self.error(
                    &path,
                    format!(
                        "{name:?} is not an HTTP header name (letters, digits and !#$%&'*+-.^_`|~)"
                    ),
                );
                continue;
            }
            // Tabs too: the renderers refuse every control character, and `validate` must
            // refuse what the operator would.
            if value.chars().any(char::is_control) {
                self.error(
                    &path,
                    "header values must not contain tabs, line breaks or other control characters",
                );
                continue;
            }
            out.retain(|k, _| !k.eq_ignore_ascii_case(name));
            out.insert(name.clone(), value.clone());
        }
        for (i, name) in h.remove.iter().enumerate() {
            let path = format!("spec.middlewares.securityHeaders.remove[{i}]");
            if h.headers.keys().any(|k| k.eq_ignore_ascii_case(name)) {
                self.error(
                    path,
                    format!("{name:?} is both set in headers and removed; keep one"),
                );
            } else if !out.keys().any(|k| k.eq_ignore_ascii_case(name)) {
                let defaults: Vec<&str> =
                    DEFAULT_SECURITY_HEADERS.iter().map(|(k, _)| *k).collect();
                self.error(
                    path,
                    format!(
                        "{name:?} is not a default header; removable: {}",
                        defaults.join(", ")
                    ),
                );
            } else {
                out.retain(|k, _| !k.eq_ignore_ascii_case(name));
            }
        }
        if h.enabled { out } else { BTreeMap::new() }
    }

    fn cidrs(&mut self, ranges: &[String]) -> Vec<IpNet> {
        if ranges.is_empty() {
            self.error(
                "spec.middlewares.ipAllowList.sourceRange",
                "must list at least one CIDR; an empty allow list would refuse every client",
            );
        }
        let mut out = Vec::new();
        for (i, text) in ranges.iter().enumerate() {
            let path = format!("spec.middlewares.ipAllowList.sourceRange[{i}]");
            let parsed = text
                .parse::<IpNet>()
                .or_else(|_| text.parse::<IpAddr>().map(IpNet::from));
            match parsed {
                Ok(net) => {
                    if net.trunc() != net {
                        self.warn(&path, format!("{text:?} has host bits set; it means {}", net.trunc()));
                    }
                    out.push(net);
                }
                Err(_) => self.error(
                    path,
                    format!("{text:?} is not a CIDR or IP address (e.g. 10.0.0.0/8, 192.0.2.7 or 2001:db8::/32)"),
                ),
            }
        }
        out
    }
}

/// RFC 1123 hostname: dot-separated labels of 1–63 letters, digits and `-`, at most 253 bytes.
pub(crate) fn is_hostname(text: &str) -> bool {
    !text.is_empty()
        && text.len() <= 253
        && text.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        })
}

fn is_header_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "!#$%&'*+-.^_`|~".contains(c))
}
