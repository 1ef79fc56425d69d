//! Harness for the `caddy_*` tests: a spec on free loopback ports, an in-memory catalog
//! snapshot, and a real Caddy started from a bootstrap config file and killed by PID.
#![allow(dead_code, clippy::unwrap_used, clippy::panic)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use proxy_operator::consul::{AgentService, HealthCheck, HealthNode, ServiceEntry};
use proxy_operator::proxy::caddy::{
    AdminEndpoint, CaddyAdmin, CaddyConfig, CaddyOptions, Catalog, HOST_MAPS_FROM, HttpCaddyAdmin,
    Secrets, sync,
};
use proxy_operator::render::Model;
use proxy_operator::spec::ValidatedSpec;

use crate::support::{ChildGuard, caddy_bin, eventually, free_port};

/// Loopback ports of one Caddy.
#[derive(Debug, Clone, Copy)]
pub struct Ports {
    pub web: u16,
    pub websecure: u16,
    pub admin: u16,
}

impl Ports {
    pub fn free() -> Ports {
        Ports {
            web: free_port(),
            websecure: free_port(),
            admin: free_port(),
        }
    }
}

/// A Caddy spec on `ports`; `middlewares` is the YAML under `spec.middlewares` (indented 4).
pub fn spec(ports: Ports, cert_dir: &Path, redirect: bool, middlewares: &str) -> ValidatedSpec {
    let redirect = if redirect {
        "\n      redirectTo: websecure"
    } else {
        ""
    };
    let doc = format!(
        "apiVersion: proxy-operator.io/v1alpha1\nkind: ProxyConfig\nspec:\n  proxy: caddy\n  domainSuffix: example.test\n  entryPoints:\n    web:\n      address: \"127.0.0.1:{}\"{redirect}\n    websecure:\n      address: \"127.0.0.1:{}\"\n  dashboard:\n    address: \"127.0.0.1:{}\"\n  tls:\n    certDir: {}\n  middlewares:\n    securityHeaders:\n      enabled: true\n{middlewares}",
        ports.web,
        ports.websecure,
        ports.admin,
        cert_dir.display()
    );
    proxy_operator::spec::load(doc.as_bytes()).unwrap_or_else(|e| panic!("{e}\n{doc}"))
}

pub fn model(spec: &ValidatedSpec, users: Option<&[String]>) -> Model {
    proxy_operator::proxy::caddy::config::resolve(spec, users).unwrap()
}

/// Live options for `ports`, dev mode (Caddy's internal CA) so TLS works offline.
pub fn options(ports: Ports) -> CaddyOptions {
    CaddyOptions {
        admin: AdminEndpoint::Loopback(ports.admin),
        dev_mode: true,
        secrets: Secrets::Include,
        host_maps_from: HOST_MAPS_FROM,
    }
}

pub fn render(model: &Model, catalog: &Catalog, ports: Ports) -> CaddyConfig {
    sync::desired(model, catalog, &options(ports)).unwrap().0
}

/// A passing (or `status`) instance of `service` on 127.0.0.1:`port`.
pub fn instance(service: &str, port: u16, tags: &[&str], status: &str) -> ServiceEntry {
    let id = format!("{service}-{port}");
    ServiceEntry {
        node: HealthNode {
            node: "node-1".into(),
            address: "127.0.0.1".into(),
            ..Default::default()
        },
        service: AgentService {
            id: id.clone(),
            service: service.into(),
            tags: tags.iter().map(|t| t.to_string()).collect(),
            address: "127.0.0.1".into(),
            port,
            ..Default::default()
        },
        checks: vec![HealthCheck {
            check_id: format!("service:{id}"),
            status: status.into(),
            service_id: id,
            ..Default::default()
        }],
    }
}

pub fn catalog(entries: Vec<ServiceEntry>) -> Catalog {
    let mut c = Catalog::new();
    for e in entries {
        c.entry(e.service.service.clone()).or_default().push(e);
    }
    c
}

/// `caddy` with its XDG state in `dir`.
pub fn caddy_cmd(dir: &Path) -> Command {
    let mut cmd = Command::new(caddy_bin());
    cmd.env("XDG_CONFIG_HOME", dir.join("config"))
        .env("XDG_DATA_HOME", dir.join("data"))
        .env("HOME", dir);
    cmd
}

/// A real Caddy started with `caddy run --config <bootstrap file>`.
pub struct Caddy {
    pub guard: ChildGuard,
    pub admin: HttpCaddyAdmin,
    pub config_path: PathBuf,
    pub dir: PathBuf,
}

impl Caddy {
    /// Writes `config` as the bootstrap file in `dir` and starts Caddy; returns once the admin
    /// API reports the config's identity.
    pub async fn start(dir: &Path, config: &CaddyConfig, admin_port: u16) -> Caddy {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let config_path = dir.join("caddy.json");
        std::fs::write(&config_path, &config.body).unwrap();
        let caddy = Caddy::spawn(dir, &config_path, admin_port);
        caddy.wait_for(&config.identity).await;
        caddy
    }

    /// Spawns without waiting.
    pub fn spawn(dir: &Path, config_path: &Path, admin_port: u16) -> Caddy {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let mut cmd = caddy_cmd(dir);
        cmd.arg("run").arg("--config").arg(config_path);
        let n = std::fs::read_dir(dir).map(|d| d.count()).unwrap_or(0);
        let guard = ChildGuard::spawn(cmd, &dir.join(format!("caddy-{n}.log")));
        Caddy {
            guard,
            admin: HttpCaddyAdmin::new(&format!("http://127.0.0.1:{admin_port}")).unwrap(),
            config_path: config_path.to_path_buf(),
            dir: dir.to_path_buf(),
        }
    }

    pub async fn wait_for(&self, identity: &str) {
        let admin = self.admin.clone();
        let ok = eventually(Duration::from_secs(10), || {
            let admin = admin.clone();
            async move {
                (admin.identity().await.ok().flatten().as_deref() == Some(identity)).then_some(())
            }
        })
        .await;
        assert!(
            ok.is_some(),
            "Caddy never reported {identity}; log:\n{}",
            self.guard.log()
        );
    }

    pub fn pid(&self) -> u32 {
        self.guard.pid()
    }
}

/// An HTTPS client that sends `host` as SNI and Host to 127.0.0.1:`port` and accepts Caddy's
/// internal CA.
pub fn tls_client(host: &str, port: u16) -> reqwest::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder()
        .no_proxy()
        .danger_accept_invalid_certs(true)
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(5))
        .resolve(host, std::net::SocketAddr::from(([127, 0, 0, 1], port)))
        .build()
        .unwrap()
}

/// A plain client that follows no redirect.
pub fn plain_client() -> reqwest::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder()
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap()
}

/// `GET https://host:port/path` through Caddy, once the internal CA has issued the
/// certificate (issuance runs in the background after a load). Returns status and response.
pub async fn tls_get(host: &str, port: u16, path: &str) -> reqwest::Response {
    let client = tls_client(host, port);
    let url = format!("https://{host}:{port}{path}");
    eventually(Duration::from_secs(15), || {
        let client = client.clone();
        let url = url.clone();
        async move { client.get(&url).send().await.ok() }
    })
    .await
    .unwrap_or_else(|| panic!("no TLS answer from {url}"))
}

/// The backend that answered, from its `X-Backend` header.
pub fn backend_of(resp: &reqwest::Response) -> Option<String> {
    resp.headers()
        .get("x-backend")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
}
