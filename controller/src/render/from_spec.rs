//! The one place that maps a [`ValidatedSpec`] onto the renderer's [`Model`].

use crate::spec::{self, ListenAddress, ValidatedSpec};

use super::Error;
use super::model::*;

/// Where the internal listener goes when the spec turns the dashboard off: Traefik still needs
/// an entry point for `/ping` and the API the health gate reads; loopback keeps it private.
const FALLBACK_INTERNAL: (&str, u16) = ("127.0.0.1", 8080);

fn listen(addr: &ListenAddress) -> ListenAddr {
    ListenAddr {
        host: addr.host.clone().unwrap_or_default(),
        port: addr.port,
    }
}

/// The proxy's internal listener, which the health gate probes: Traefik's `traefik` entry point
/// (`/ping`, `/api/rawdata`) at `dashboard.address`, or Caddy's admin API, which always stays on
/// `localhost` at the dashboard's port. With the dashboard off, Traefik's falls back to
/// `127.0.0.1:8080`, since `/ping` and the API are still needed.
pub fn internal_address(spec: &ValidatedSpec) -> ListenAddr {
    let addr = spec.dashboard_address().map(listen).unwrap_or(ListenAddr {
        host: FALLBACK_INTERNAL.0.to_string(),
        port: FALLBACK_INTERNAL.1,
    });
    match spec.proxy() {
        spec::ProxyKind::Traefik => addr,
        spec::ProxyKind::Caddy => ListenAddr {
            host: "localhost".to_string(),
            port: addr.port,
        },
    }
}

impl Model {
    /// Resolves a validated spec. `basic_auth_users` are the `user:hash` lines the caller read
    /// from the spec's `usersFrom` reference; they are required when basic auth is on.
    pub fn from_spec(
        spec: &ValidatedSpec,
        basic_auth_users: Option<&[String]>,
    ) -> Result<Model, Error> {
        let proxy = match spec.proxy() {
            spec::ProxyKind::Traefik => ProxyKind::Traefik,
            spec::ProxyKind::Caddy => ProxyKind::Caddy,
        };
        // A listener serves TLS when it is `websecure` or the target of an HTTPS redirect.
        let listeners = spec.entry_points();
        let entry_points = listeners
            .iter()
            .map(|l| EntryPoint {
                name: l.name.clone(),
                address: listen(&l.address),
                tls: l.name == "websecure"
                    || listeners
                        .iter()
                        .any(|o| o.redirect_to.as_deref() == Some(l.name.as_str())),
                redirect_to: l.redirect_to.clone(),
            })
            .collect();

        let d = spec.discovery();
        let discovery = Discovery {
            primary: match d.primary {
                spec::DiscoveryPrimary::Nomad => Primary::Nomad,
                spec::DiscoveryPrimary::Consul => Primary::Consul,
            },
            nomad: NomadDiscovery {
                address: d.nomad.address.clone(),
                namespace: d.nomad.namespace.clone(),
                refresh_interval: spec.nomad_refresh_interval(),
                exposed_by_default: d.nomad.exposed_by_default,
                watch: d.nomad.watch,
            },
            consul: ConsulDiscovery {
                address: d.consul.address.clone(),
                scheme: match d.consul.scheme {
                    spec::Scheme::Http => "http",
                    spec::Scheme::Https => "https",
                }
                .to_string(),
                datacenter: d.consul.datacenter.clone(),
                ca_file: d.consul.ca_file.clone(),
                refresh_interval: spec.consul_refresh_interval(),
                exposed_by_default: d.consul.exposed_by_default,
            },
            throttle: spec.throttle_duration(),
        };

        let tls = Tls {
            cert_dir: spec.tls().cert_dir.clone(),
            certificates: spec
                .certificates()
                .iter()
                .map(|c| CertPair {
                    cert_file: c.cert_file.display().to_string(),
                    key_file: c.key_file.display().to_string(),
                })
                .collect(),
            acme: spec.acme().map(|a| Acme {
                email: a.email.clone(),
                storage: a.storage.display().to_string(),
                ca_server: Some(a.ca_server.to_string()),
            }),
            min_version: Some(
                match spec.min_tls_version() {
                    spec::TlsVersion::VersionTLS12 => "VersionTLS12",
                    spec::TlsVersion::VersionTLS13 => "VersionTLS13",
                }
                .to_string(),
            ),
        };

        let basic_auth = match spec.basic_auth() {
            None => None,
            Some(auth) => {
                let reference = match &auth.users_from {
                    spec::UsersFrom::ConsulKey(key) => format!("Consul key {key}"),
                    spec::UsersFrom::File(file) => format!("file {file}"),
                };
                let users = basic_auth_users.ok_or_else(|| Error::UnresolvedSecret {
                    field: "spec.middlewares.basicAuth.usersFrom".to_string(),
                    reference,
                })?;
                Some(BasicAuth {
                    realm: auth.realm.clone(),
                    users: users.to_vec(),
                })
            }
        };
        let policy = Policy {
            headers: spec.security_headers().clone(),
            rate_limit: spec.rate_limit().map(|r| RateLimit {
                average: r.average,
                burst: r.burst,
                period: r.period,
            }),
            ip_allow: spec.ip_allow_list().map(<[_]>::to_vec).unwrap_or_default(),
            basic_auth,
        };

        let dashboard = Dashboard {
            enabled: spec.dashboard().enabled,
            insecure: spec.dashboard().insecure,
            address: internal_address(spec),
        };

        let job = spec.job();
        let driver = match spec.driver() {
            spec::Driver::Docker(d) => Driver::Docker {
                image: d.image.clone().unwrap_or_default(),
            },
            spec::Driver::RawExec(c) => Driver::RawExec {
                command: c.command.clone(),
                args: c.args.clone(),
            },
            spec::Driver::Exec(c) => Driver::Exec {
                command: c.command.clone(),
                args: c.args.clone(),
            },
        };
        let job = JobSettings {
            id: job.id.clone(),
            system: job.job_type == spec::JobType::System,
            count: job.count.unwrap_or(1),
            datacenters: job.datacenters.clone(),
            namespace: Some(job.namespace.clone()),
            region: job.region.clone(),
            node_pool: Some(job.node_pool.clone()),
            driver,
            cpu: job.resources.cpu,
            memory_mb: job.resources.memory_mb,
            version: Some(spec.version().to_string()).filter(|v| !v.is_empty()),
            cert_volume: Some(job.cert_volume.clone()).filter(|v| !v.is_empty()),
        };

        let rollout = spec.rollout();
        Ok(Model {
            proxy,
            domain_suffix: spec.domain_suffix().to_string(),
            entry_points,
            discovery,
            tls,
            policy,
            metrics: match proxy {
                ProxyKind::Traefik => spec.metrics_address().map(listen),
                // Caddy serves /metrics on its admin API.
                ProxyKind::Caddy => None,
            },
            dashboard,
            job,
            rollout: Rollout {
                healthy_deadline: rollout.healthy_deadline,
                min_healthy_time: rollout.min_healthy_time,
            },
        })
    }
}
