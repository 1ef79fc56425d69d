//! hashistack-twin: an API-compatible twin of Consul and Nomad, held to HashiCorp's API docs.
//!
//! It is test infrastructure for proxy-operator's tests, `dev` mode and benchmarks: real Traefik
//! and the operator's clients talk to it over HTTP exactly as they would to a real cluster.
//!
//! ```no_run
//! # async fn demo() -> Result<(), hashistack_twin::Error> {
//! use hashistack_twin::{Api, Twin, TwinConfig};
//! let twin = Twin::start(TwinConfig::default()).await?;
//! let consul = format!("http://{}", twin.consul_addr());
//! twin.faults().stop(Api::Consul).await; // connection refused from now on
//! twin.faults().start(Api::Consul).await.ok(); // same port again
//! twin.shutdown().await;
//! # Ok(()) }
//! ```
#![forbid(unsafe_code)]

pub mod blocking;
pub mod consul;
pub mod faults;
pub mod nomad;
pub mod persist;
mod server;

use std::net::SocketAddr;
use std::path::PathBuf;

pub use faults::{Api, Faults, RequestRecord};

/// How to start a twin.
#[derive(Clone)]
pub struct TwinConfig {
    /// Where the Consul API listens (`127.0.0.1:0` picks a free port).
    pub consul_addr: SocketAddr,
    /// Where the Nomad API listens (`127.0.0.1:0` picks a free port).
    pub nomad_addr: SocketAddr,
    /// Where state is persisted across restarts; `None` keeps it in memory.
    pub data_dir: Option<PathBuf>,
    /// When set, ACLs are on and this is the management token: every request must carry a
    /// token (`X-Consul-Token` / `X-Nomad-Token`) and so must the `/_twin` control routes.
    pub acl_token: Option<String>,
    /// Turn ACLs on with a freshly generated management token when `acl_token` is `None`
    /// (read it back with [`Twin::acl_token`]): what `proxy-operator dev` hands to the operator
    /// and the proxy so that nothing else on the machine can drive the twin.
    pub generate_acl_token: bool,
    /// Nomad version mode: `true` (default) is Nomad >= 1.11, where system jobs with an update
    /// block get deployments; `false` is 1.10, where they get none (`/v1/job/:id/deployment` is
    /// `null`) and the agent and node report 1.10.5.
    pub nomad_system_deployments: bool,
    /// How many Nomad client nodes the twin runs (default 1). A system job gets one allocation
    /// per eligible node; every node runs its tasks as local processes.
    pub nomad_nodes: usize,
    /// Nomad client tokens with their ACL policies (enforced when `acl_token`, the management
    /// token, is set). More can be made at run time through `/v1/acl/policy/:name` and
    /// `/v1/acl/token`.
    pub nomad_acl_tokens: Vec<nomad::AclTokenSeed>,
    /// Consul's `session_ttl_min` agent option (`None`: Consul's default, 10 s). Tests lower it
    /// to watch TTL invalidation and lock-delay in seconds, as Consul's own tests do.
    pub consul_session_ttl_min: Option<std::time::Duration>,
    /// The `PATH` of the Nomad client agent, which `raw_exec` tasks inherit (`None`: the
    /// twin's own `PATH`), so a job can name its command (`traefik`) instead of a path.
    pub nomad_client_path: Option<String>,
}

impl Default for TwinConfig {
    fn default() -> Self {
        let ephemeral = SocketAddr::from(([127, 0, 0, 1], 0));
        TwinConfig {
            consul_addr: ephemeral,
            nomad_addr: ephemeral,
            data_dir: None,
            acl_token: None,
            nomad_system_deployments: true,
            nomad_nodes: 1,
            nomad_acl_tokens: Vec::new(),
            consul_session_ttl_min: None,
            generate_acl_token: false,
            nomad_client_path: None,
        }
    }
}

/// Leaves the token out: configurations get logged, secrets must not.
impl std::fmt::Debug for TwinConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TwinConfig")
            .field("consul_addr", &self.consul_addr)
            .field("nomad_addr", &self.nomad_addr)
            .field("data_dir", &self.data_dir)
            .field("acl_token", &self.acl_token.as_ref().map(|_| "<redacted>"))
            .field("generate_acl_token", &self.generate_acl_token)
            .field("nomad_system_deployments", &self.nomad_system_deployments)
            .field("consul_session_ttl_min", &self.consul_session_ttl_min)
            .field("nomad_nodes", &self.nomad_nodes)
            .field("nomad_acl_tokens", &self.nomad_acl_tokens.len())
            .field("nomad_client_path", &self.nomad_client_path)
            .finish_non_exhaustive()
    }
}

/// A running twin.
pub struct Twin {
    consul_addr: SocketAddr,
    nomad_addr: SocketAddr,
    acl_token: Option<String>,
    consul: consul::ConsulState,
    nomad: nomad::NomadState,
    faults: Faults,
}

impl std::fmt::Debug for Twin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Twin")
            .field("consul_addr", &self.consul_addr)
            .field("nomad_addr", &self.nomad_addr)
            .finish()
    }
}

/// Errors starting or stopping the twin.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A listener could not be bound.
    #[error("failed to bind {addr}: {source}")]
    Bind {
        /// The address asked for.
        addr: SocketAddr,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The Consul state could not be restored from `data_dir`.
    #[error("failed to start the Consul API: {0}")]
    Consul(#[from] consul::Error),
    /// A Nomad ACL policy in `nomad_acl_tokens` is one Nomad would refuse.
    #[error("failed to load Nomad ACL policy for token {token:?}: {source}")]
    NomadAcl {
        /// The token's name (never its secret).
        token: String,
        /// Nomad's refusal.
        #[source]
        source: nomad::acl::PolicyError,
    },
}

impl Twin {
    /// Starts the Consul and Nomad APIs (restoring state from `data_dir` when given).
    pub async fn start(mut config: TwinConfig) -> Result<Twin, Error> {
        let _ = rustls::crypto::ring::default_provider().install_default();
        for seed in &config.nomad_acl_tokens {
            seed.validate().map_err(|source| Error::NomadAcl {
                token: seed.name.clone(),
                source,
            })?;
        }
        if config.acl_token.is_none() && config.generate_acl_token {
            config.acl_token = Some(uuid::Uuid::new_v4().to_string());
        }
        let bind = |addr: SocketAddr| async move {
            tokio::net::TcpListener::bind(addr)
                .await
                .map_err(|source| Error::Bind { addr, source })
        };
        let consul_listener = bind(config.consul_addr).await?;
        let nomad_listener = bind(config.nomad_addr).await?;
        let consul_addr = consul_listener.local_addr().map_err(|source| Error::Bind {
            addr: config.consul_addr,
            source,
        })?;
        let nomad_addr = nomad_listener.local_addr().map_err(|source| Error::Bind {
            addr: config.nomad_addr,
            source,
        })?;
        let consul = consul::ConsulState::new(consul::ConsulConfig {
            acl_token: config.acl_token.clone(),
            data_dir: config.data_dir.clone(),
            session_ttl_min: config.consul_session_ttl_min,
        })?;
        let nomad = nomad::NomadState::new(nomad::NomadConfig {
            consul_http_addr: consul_addr,
            acl_token: config.acl_token.clone(),
            data_dir: config.data_dir.clone(),
            system_deployments: config.nomad_system_deployments,
            nodes: config.nomad_nodes,
            acl_tokens: config.nomad_acl_tokens.clone(),
            client_path: config.nomad_client_path.clone(),
        });
        let faults = Faults::new(consul.clone(), config.acl_token.clone());
        let consul_app = faults.wrap(Api::Consul, consul.router());
        let nomad_app = faults.wrap(Api::Nomad, nomad.router());
        faults.attach(
            Api::Consul,
            server::Server::serve(consul_listener, consul_addr, consul_app),
        );
        faults.attach(
            Api::Nomad,
            server::Server::serve(nomad_listener, nomad_addr, nomad_app),
        );
        tracing::info!(%consul_addr, %nomad_addr, "hashistack-twin listening");
        Ok(Twin {
            consul_addr,
            nomad_addr,
            acl_token: config.acl_token,
            consul,
            nomad,
            faults,
        })
    }

    /// The Consul API's address.
    pub fn consul_addr(&self) -> SocketAddr {
        self.consul_addr
    }

    /// The Nomad API's address.
    pub fn nomad_addr(&self) -> SocketAddr {
        self.nomad_addr
    }

    /// The management token when ACLs are on (configured or generated), `None` when off.
    pub fn acl_token(&self) -> Option<&str> {
        self.acl_token.as_deref()
    }

    /// Fault injection and request counters.
    pub fn faults(&self) -> &Faults {
        &self.faults
    }

    /// Requests an API has received so far (control requests excluded).
    pub fn requests(&self, api: Api) -> u64 {
        self.faults.requests(api)
    }

    /// Direct access to the Consul state (reads and writes without HTTP, e.g. for benchmarks).
    pub fn consul(&self) -> &consul::ConsulState {
        &self.consul
    }

    /// Stops both APIs and every process the executor started, and writes the final snapshot.
    pub async fn shutdown(self) {
        self.nomad.shutdown().await;
        self.faults.stop(Api::Consul).await;
        self.faults.stop(Api::Nomad).await;
        self.consul.shutdown().await;
    }
}

/// A future that ends on SIGTERM, SIGHUP or SIGINT: how the twin's binary and
/// `proxy-operator dev` (which runs the twin in-process) stop. The handlers are installed at
/// once, so a signal that arrives while the APIs start (a client may already be served) is not
/// met by the default action, which would skip the cleanup.
pub fn shutdown_signals() -> impl std::future::Future<Output = ()> {
    use tokio::signal::unix::{SignalKind, signal};
    // A closed terminal (SIGHUP) ends the run like Ctrl-C: task processes sit in their own
    // process groups, so the hangup would not reach them and they would outlive us.
    let mut term = signal(SignalKind::terminate()).ok();
    let mut hup = signal(SignalKind::hangup()).ok();
    let mut int = signal(SignalKind::interrupt()).ok();
    async move {
        tokio::select! {
            _ = recv(term.as_mut()) => {}
            _ = recv(hup.as_mut()) => {}
            _ = recv(int.as_mut()) => {}
        }
    }
}

async fn recv(s: Option<&mut tokio::signal::unix::Signal>) {
    match s {
        Some(s) => {
            s.recv().await;
        }
        None => std::future::pending::<()>().await,
    }
}
