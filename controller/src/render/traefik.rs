//! Traefik: the static configuration (YAML, shipped inside the Nomad job) and the dynamic policy
//! entries (Consul KV key/values read live by Traefik's Consul KV provider).
//!
//! Traefik ignores unknown top-level keys and any bad value in the KV tree makes it reject the
//! WHOLE tree (contracts/TRAEFIK.md), so the static model is typed and every KV value is checked
//! here before it is emitted.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Serialize;

use super::Error;
use super::model::{DiscoveryPrimary, Model};

/// Name of the internal entry point hosting `/ping` and the API.
pub const INTERNAL_ENTRY_POINT: &str = "traefik";
/// Name of the entry point serving Prometheus metrics.
pub const METRICS_ENTRY_POINT: &str = "metrics";
/// The chain middleware every user-facing entry point applies (defined in KV).
pub const POLICY_MIDDLEWARE: &str = "proxy-operator-policy";
/// The always-present headers middleware; keeps the chain valid when no policy is enabled.
pub const HEADERS_MIDDLEWARE: &str = "proxy-operator-headers";
/// The IP allow list middleware.
pub const IP_ALLOW_MIDDLEWARE: &str = "proxy-operator-ipallowlist";
/// The basic auth middleware.
pub const BASIC_AUTH_MIDDLEWARE: &str = "proxy-operator-basicauth";
/// The rate limit middleware.
pub const RATE_LIMIT_MIDDLEWARE: &str = "proxy-operator-ratelimit";
/// The router exposing `api@internal` on the internal entry point when the API is not insecure.
pub const API_ROUTER: &str = "proxy-operator-api";
/// Name prefix of the generation marker: a middleware no router uses, named after the content
/// of the policy tree, so `/api/rawdata` listing it proves Traefik loaded this very tree (an
/// edit of a header value keeps every other name).
pub const GENERATION_MIDDLEWARE: &str = "proxy-operator-generation";
/// Name of the ACME certificate resolver.
pub const ACME_RESOLVER: &str = "acme";

// === static configuration model ===

/// Traefik's static configuration (the subset the operator renders).
#[derive(Debug, Clone, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct StaticConfig {
    /// Phone-home settings, both off.
    pub global: Global,
    /// Logging.
    pub log: Log,
    /// Access log (stdout).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub access_log: Option<AccessLogConfig>,
    /// Entry points by name.
    pub entry_points: BTreeMap<String, StaticEntryPoint>,
    /// `/ping` on the internal entry point.
    pub ping: Ping,
    /// API and dashboard.
    pub api: Api,
    /// Metrics.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub metrics: Option<Metrics>,
    /// Providers.
    pub providers: Providers,
    /// ACME resolvers.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub certificates_resolvers: BTreeMap<String, CertificateResolver>,
}

/// `global`.
#[derive(Debug, Clone, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Global {
    /// Whether Traefik checks for new versions.
    pub check_new_version: bool,
    /// Whether Traefik sends anonymous usage data.
    pub send_anonymous_usage: bool,
}

/// `log`.
#[derive(Debug, Clone, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Log {
    /// Level.
    pub level: String,
    /// `json` or `common`.
    pub format: String,
}

/// `accessLog`: without `filePath` Traefik writes it to stdout, where Nomad collects it.
#[derive(Debug, Clone, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct AccessLogConfig {
    /// `json` or `common`.
    pub format: String,
    /// Which requests are logged.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub filters: Option<AccessLogFilters>,
    /// Which fields are logged.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fields: Option<AccessLogFields>,
}

/// `accessLog.filters`.
#[derive(Debug, Clone, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct AccessLogFilters {
    /// Status codes or ranges kept.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub status_codes: Vec<String>,
    /// Only slower requests (Go duration).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub min_duration: Option<String>,
}

/// `accessLog.fields`.
#[derive(Debug, Clone, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct AccessLogFields {
    /// Request headers.
    pub headers: AccessLogHeaders,
}

/// `accessLog.fields.headers`.
#[derive(Debug, Clone, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct AccessLogHeaders {
    /// `keep` or `drop`.
    pub default_mode: String,
    /// Per header: `redact`.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub names: BTreeMap<String, String>,
}

/// One entry point.
#[derive(Debug, Clone, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct StaticEntryPoint {
    /// `host:port` or `:port`.
    pub address: String,
    /// `SO_REUSEPORT`: the two slots of a handover listen on the same port side by side.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub reuse_port: bool,
    /// HTTP options.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub http: Option<EntryPointHttp>,
    /// Shutdown and timeouts (user-facing entry points).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub transport: Option<EntryPointTransport>,
}

/// `entryPoints.<name>.transport`.
#[derive(Debug, Clone, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct EntryPointTransport {
    /// `lifeCycle`.
    pub life_cycle: LifeCycle,
    /// `respondingTimeouts`.
    pub responding_timeouts: RespondingTimeouts,
}

/// `transport.lifeCycle`.
#[derive(Debug, Clone, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct LifeCycle {
    /// How long a stopping Traefik keeps accepting before it closes its listeners: the new
    /// slot of a handover shares the port by then, and the old one's accept queue empties.
    pub request_accept_grace_timeout: String,
    /// How long open requests may finish on shutdown. Traefik spells it `graceTimeOut`.
    #[serde(rename = "graceTimeOut")]
    pub grace_time_out: String,
}

/// `transport.respondingTimeouts`.
#[derive(Debug, Clone, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct RespondingTimeouts {
    /// Whole-request read timeout (`0s` = none).
    pub read_timeout: String,
    /// Response write timeout (`0s` = none).
    pub write_timeout: String,
    /// Keep-alive idle timeout.
    pub idle_timeout: String,
}

/// `entryPoints.<name>.http`.
#[derive(Debug, Clone, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct EntryPointHttp {
    /// Redirection to another entry point.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub redirections: Option<Redirections>,
    /// Middlewares applied to every router on this entry point.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub middlewares: Vec<String>,
    /// TLS for every router on this entry point.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls: Option<EntryPointTls>,
}

/// `redirections`.
#[derive(Debug, Clone, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Redirections {
    /// `entryPoint`.
    pub entry_point: RedirectEntryPoint,
}

/// `redirections.entryPoint`.
#[derive(Debug, Clone, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct RedirectEntryPoint {
    /// Target entry point.
    pub to: String,
    /// Scheme.
    pub scheme: String,
    /// Permanent (308) redirect.
    pub permanent: bool,
}

/// `entryPoints.<name>.http.tls`.
#[derive(Debug, Clone, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct EntryPointTls {
    /// ACME resolver.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cert_resolver: Option<String>,
}

/// `ping`.
#[derive(Debug, Clone, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Ping {
    /// Entry point serving `/ping`.
    pub entry_point: String,
}

/// `api`.
#[derive(Debug, Clone, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Api {
    /// Dashboard UI.
    pub dashboard: bool,
    /// Serve the API on the `traefik` entry point without a router.
    pub insecure: bool,
}

/// `metrics`.
#[derive(Debug, Clone, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Metrics {
    /// Prometheus.
    pub prometheus: Prometheus,
}

/// `metrics.prometheus`.
#[derive(Debug, Clone, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Prometheus {
    /// Entry point serving `/metrics`.
    pub entry_point: String,
}

/// `providers`.
#[derive(Debug, Clone, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Providers {
    /// How long Traefik batches provider changes (Go duration).
    pub providers_throttle_duration: String,
    /// Nomad provider.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub nomad: Option<NomadProvider>,
    /// Consul Catalog provider.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub consul_catalog: Option<ConsulCatalogProvider>,
    /// Consul KV provider (the live policies).
    pub consul: ConsulKvProvider,
}

/// `providers.nomad`.
#[derive(Debug, Clone, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct NomadProvider {
    /// Expose services without `traefik.enable=true`.
    pub exposed_by_default: bool,
    /// Rule for services without one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub default_rule: Option<String>,
    /// Poll interval (Go duration).
    pub refresh_interval: String,
    /// Watch Nomad's event stream.
    pub watch: bool,
    /// Namespaces to discover services in (empty: the default namespace).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub namespaces: Vec<String>,
    /// API endpoint.
    pub endpoint: NomadEndpoint,
}

/// `providers.nomad.endpoint`.
#[derive(Debug, Clone, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct NomadEndpoint {
    /// `http://host:port`.
    pub address: String,
    /// The Nomad token, as a template action the Nomad client renders
    /// ([`super::nomad_job::nomad_token_action`]), never a token; absent without
    /// `spec.job.tokens`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
}

/// `providers.consulCatalog`.
#[derive(Debug, Clone, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ConsulCatalogProvider {
    /// Expose services without `traefik.enable=true`.
    pub exposed_by_default: bool,
    /// Rule for services without one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub default_rule: Option<String>,
    /// Poll interval (Go duration).
    pub refresh_interval: String,
    /// API endpoint.
    pub endpoint: ConsulEndpoint,
}

/// `providers.consulCatalog.endpoint`.
#[derive(Debug, Clone, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ConsulEndpoint {
    /// `host:port`.
    pub address: String,
    /// `http` or `https`.
    pub scheme: String,
    /// Datacenter.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub datacenter: Option<String>,
    /// TLS client settings; present for `https`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls: Option<ClientTls>,
}

/// A provider's TLS client settings. Traefik refuses an empty `tls: {}` ("cannot be a
/// standalone element"), so `insecureSkipVerify: false` is always written: it enables TLS with
/// verification (system roots, or `ca`).
#[derive(Debug, Clone, Serialize, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct ClientTls {
    /// CA certificate file.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ca: Option<String>,
    /// Always false: the server's certificate is verified.
    pub insecure_skip_verify: bool,
}

/// `providers.consul` (KV).
#[derive(Debug, Clone, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ConsulKvProvider {
    /// Root key (`<prefix>/traefik`).
    pub root_key: String,
    /// `host:port` endpoints.
    pub endpoints: Vec<String>,
    /// TLS client settings; without them the KV provider speaks plain HTTP even to an HTTPS
    /// port, whatever the catalog's scheme says.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls: Option<ClientTls>,
}

/// `certificatesResolvers.<name>`.
#[derive(Debug, Clone, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct CertificateResolver {
    /// ACME.
    pub acme: AcmeResolver,
}

/// `certificatesResolvers.<name>.acme`.
#[derive(Debug, Clone, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct AcmeResolver {
    /// Account email.
    pub email: String,
    /// Storage file.
    pub storage: String,
    /// CA server.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ca_server: Option<String>,
    /// TLS-ALPN-01 challenge (needs no extra port).
    pub tls_challenge: Empty,
}

/// An empty YAML mapping (`{}`), which Traefik reads as "enabled with defaults".
#[derive(Debug, Clone, Serialize, PartialEq, Default)]
pub struct Empty {}

/// `requestAcceptGraceTimeout` of every user-facing entry point: a stopping Traefik (the old
/// slot after a handover) keeps accepting this long before it closes its listeners, so the
/// connections the kernel already queued for it are served rather than reset.
pub const REQUEST_ACCEPT_GRACE: Duration = Duration::from_secs(1);

/// A Go duration string Traefik parses (`100ms`, `15s`, `2m`, `1500us`), exact to the
/// nanosecond: the largest unit that divides the value. Rounding (`500us` to `0s`) once made
/// Traefik panic on a zero ticker and changed rate limits silently.
pub fn go_duration(d: Duration) -> String {
    ::go_duration::format_whole(d, ::go_duration::LargestUnit::Minute)
}

/// The rule Traefik applies to services without a router rule: `<service>.<domain suffix>`.
/// `{{ normalize .Name }}` is Traefik's own Go template, evaluated by Traefik, not by Nomad.
pub fn default_rule(domain_suffix: &str) -> String {
    format!("Host(`{{{{ normalize .Name }}}}.{domain_suffix}`)")
}

/// Builds the static configuration.
pub fn static_config(model: &Model, kv_prefix: &str) -> StaticConfig {
    let policy_ref = vec![format!("{POLICY_MIDDLEWARE}@consul")];
    let resolver = model.tls.acme.as_ref().map(|_| ACME_RESOLVER.to_string());
    let mut entry_points = BTreeMap::new();
    for ep in &model.entry_points {
        let http = EntryPointHttp {
            redirections: ep.redirect_to.as_ref().map(|to| Redirections {
                entry_point: RedirectEntryPoint {
                    to: to.clone(),
                    scheme: "https".to_string(),
                    permanent: true,
                },
            }),
            // Traefik runs entry point middlewares before its redirect router, so a redirecting
            // entry point with the chain would ask for basic auth before redirecting. Every
            // request there is redirected, so the policy applies after the redirect instead.
            middlewares: if ep.redirect_to.is_some() {
                Vec::new()
            } else {
                policy_ref.clone()
            },
            tls: ep.tls.then(|| EntryPointTls {
                cert_resolver: resolver.clone(),
            }),
        };
        let t = &model.transport;
        entry_points.insert(
            ep.name.clone(),
            StaticEntryPoint {
                address: ep.address.to_addr_string(),
                reuse_port: true,
                http: Some(http),
                transport: Some(EntryPointTransport {
                    life_cycle: LifeCycle {
                        request_accept_grace_timeout: go_duration(REQUEST_ACCEPT_GRACE),
                        grace_time_out: go_duration(t.grace_timeout),
                    },
                    responding_timeouts: RespondingTimeouts {
                        read_timeout: go_duration(t.read_timeout),
                        write_timeout: go_duration(t.write_timeout),
                        idle_timeout: go_duration(t.idle_timeout),
                    },
                }),
            },
        );
    }
    if let Some(addr) = &model.metrics {
        entry_points.insert(
            METRICS_ENTRY_POINT.to_string(),
            StaticEntryPoint {
                address: addr.to_addr_string(),
                reuse_port: true,
                http: None,
                transport: None,
            },
        );
    }
    entry_points.insert(
        INTERNAL_ENTRY_POINT.to_string(),
        StaticEntryPoint {
            address: model.dashboard.address.to_addr_string(),
            // Each slot has its own API port, so the gate reads the instance it gates.
            reuse_port: false,
            http: None,
            transport: None,
        },
    );

    let d = &model.discovery;
    let rule = default_rule(&model.domain_suffix);
    // Both catalogs are watched; only the primary routes services by the default rule, the
    // other one routes only services whose tags give a rule.
    let nomad = NomadProvider {
        exposed_by_default: d.nomad.exposed_by_default,
        default_rule: (d.primary == DiscoveryPrimary::Nomad).then(|| rule.clone()),
        refresh_interval: go_duration(d.nomad.refresh_interval),
        watch: d.nomad.watch,
        namespaces: d.nomad.namespace.iter().cloned().collect(),
        endpoint: NomadEndpoint {
            address: d.nomad.address.clone(),
            token: model
                .job
                .tokens
                .as_ref()
                .map(super::nomad_job::nomad_token_action),
        },
    };
    let consul_tls = (d.consul.scheme == "https").then(|| ClientTls {
        ca: d.consul.ca_file.clone(),
        insecure_skip_verify: false,
    });
    let consul_catalog = ConsulCatalogProvider {
        exposed_by_default: d.consul.exposed_by_default,
        default_rule: (d.primary == DiscoveryPrimary::Consul).then(|| rule.clone()),
        refresh_interval: go_duration(d.consul.refresh_interval),
        endpoint: ConsulEndpoint {
            address: d.consul.address.clone(),
            scheme: d.consul.scheme.clone(),
            datacenter: d.consul.datacenter.clone(),
            tls: consul_tls.clone(),
        },
    };

    let mut certificates_resolvers = BTreeMap::new();
    if let Some(acme) = &model.tls.acme {
        certificates_resolvers.insert(
            ACME_RESOLVER.to_string(),
            CertificateResolver {
                acme: AcmeResolver {
                    email: acme.email.clone(),
                    storage: acme.storage.clone(),
                    ca_server: acme.ca_server.clone(),
                    tls_challenge: Empty {},
                },
            },
        );
    }

    StaticConfig {
        global: Global {
            check_new_version: false,
            send_anonymous_usage: false,
        },
        log: Log {
            level: model.logging.level.clone(),
            format: model.logging.format.clone(),
        },
        access_log: model.logging.access_log.as_ref().map(|a| AccessLogConfig {
            format: a.format.clone(),
            filters: (!a.status_codes.is_empty() || a.min_duration.is_some()).then(|| {
                AccessLogFilters {
                    status_codes: a.status_codes.clone(),
                    min_duration: a.min_duration.map(go_duration),
                }
            }),
            fields: a.headers.then(|| AccessLogFields {
                headers: AccessLogHeaders {
                    default_mode: "keep".to_string(),
                    names: a
                        .redact_headers
                        .iter()
                        .map(|h| (h.clone(), "redact".to_string()))
                        .collect(),
                },
            }),
        }),
        entry_points,
        ping: Ping {
            entry_point: INTERNAL_ENTRY_POINT.to_string(),
        },
        api: Api {
            dashboard: model.dashboard.enabled,
            insecure: model.dashboard.insecure,
        },
        metrics: model.metrics.as_ref().map(|_| Metrics {
            prometheus: Prometheus {
                entry_point: METRICS_ENTRY_POINT.to_string(),
            },
        }),
        providers: Providers {
            providers_throttle_duration: go_duration(d.throttle),
            nomad: Some(nomad),
            consul_catalog: Some(consul_catalog),
            consul: ConsulKvProvider {
                root_key: format!("{kv_prefix}/traefik"),
                endpoints: vec![d.consul.address.clone()],
                tls: consul_tls,
            },
        },
        certificates_resolvers,
    }
}

/// Serialises the static configuration as YAML.
pub fn static_yaml(config: &StaticConfig) -> Result<String, Error> {
    serde_saphyr::to_string(config).map_err(|e| Error::SerializeYaml(e.to_string()))
}

// === dynamic policy (Consul KV): see `traefik_kv.rs` ===

pub use super::traefik_kv::{is_secret_key, policy_kv};

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::panic)] // tests fail loudly
mod tests {
    use super::*;

    #[test]
    fn consul_over_https_gives_both_consul_providers_a_tls_block_with_the_ca() {
        let doc = "apiVersion: proxy-operator.io/v1alpha1\nkind: ProxyConfig\nspec:\n  proxy: traefik\n  discovery:\n    consul: {address: \"consul.service:8501\", scheme: https, caFile: /etc/consul/ca.pem}\n";
        let spec = crate::spec::load(doc.as_bytes()).unwrap();
        let r = crate::render::render(&spec, &crate::render::RenderContext::default()).unwrap();
        let yaml: serde_json::Value =
            serde_saphyr::from_str(r.traefik_static.as_deref().unwrap()).unwrap();
        let p = &yaml["providers"];
        assert_eq!(p["consul"]["tls"]["ca"], "/etc/consul/ca.pem", "{p}");
        assert_eq!(
            p["consulCatalog"]["endpoint"]["tls"]["ca"],
            "/etc/consul/ca.pem"
        );
        assert_eq!(p["consulCatalog"]["endpoint"]["scheme"], "https");

        let plain = doc.replace(", scheme: https, caFile: /etc/consul/ca.pem", "");
        let spec = crate::spec::load(plain.as_bytes()).unwrap();
        let r = crate::render::render(&spec, &crate::render::RenderContext::default()).unwrap();
        let yaml: serde_json::Value =
            serde_saphyr::from_str(r.traefik_static.as_deref().unwrap()).unwrap();
        assert!(yaml["providers"]["consul"].get("tls").is_none());
        assert!(
            yaml["providers"]["consulCatalog"]["endpoint"]
                .get("tls")
                .is_none()
        );
    }

    #[test]
    fn go_durations_use_the_largest_whole_unit() {
        assert_eq!(go_duration(Duration::from_millis(100)), "100ms");
        assert_eq!(go_duration(Duration::from_secs(15)), "15s");
        assert_eq!(go_duration(Duration::from_secs(120)), "2m");
        assert_eq!(go_duration(Duration::from_millis(1500)), "1500ms");
        assert_eq!(go_duration(Duration::ZERO), "0s");
        assert_eq!(go_duration(Duration::from_micros(500)), "500us");
        assert_eq!(go_duration(Duration::from_micros(1500)), "1500us");
        assert_eq!(
            go_duration(Duration::from_nanos(1_000_000_001)),
            "1000000001ns"
        );
        for d in [
            Duration::from_micros(1500),
            Duration::from_nanos(7),
            Duration::from_secs(3601),
        ] {
            assert_eq!(crate::spec::parse_duration(&go_duration(d)), Ok(d));
        }
    }

    #[test]
    fn default_rule_keeps_traefiks_own_template_for_traefik_to_evaluate() {
        assert_eq!(
            default_rule("example.com"),
            "Host(`{{ normalize .Name }}.example.com`)"
        );
    }
}
