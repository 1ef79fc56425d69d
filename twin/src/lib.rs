//! hashistack-twin: an API-compatible twin of Consul and Nomad, held to HashiCorp's API docs.
//!
//! It is test infrastructure for proxy-operator's tests, `dev` mode and benchmarks: real Traefik
//! and the operator's clients talk to it over HTTP exactly as they would to a real cluster.
#![forbid(unsafe_code)]

pub mod consul;
pub mod nomad;

use std::net::SocketAddr;
use std::path::PathBuf;

/// How to start a twin.
#[derive(Debug, Clone)]
pub struct TwinConfig {
    /// Where the Consul API listens (`127.0.0.1:0` picks a free port).
    pub consul_addr: SocketAddr,
    /// Where the Nomad API listens (`127.0.0.1:0` picks a free port).
    pub nomad_addr: SocketAddr,
    /// Where state is persisted across restarts; `None` keeps it in memory.
    pub data_dir: Option<PathBuf>,
    /// When set, every request must carry this token (`X-Consul-Token` / `X-Nomad-Token`).
    pub acl_token: Option<String>,
}

impl Default for TwinConfig {
    fn default() -> Self {
        let ephemeral = SocketAddr::from(([127, 0, 0, 1], 0));
        TwinConfig { consul_addr: ephemeral, nomad_addr: ephemeral, data_dir: None, acl_token: None }
    }
}

/// A running twin.
pub struct Twin {
    consul_addr: SocketAddr,
    nomad_addr: SocketAddr,
    nomad: nomad::NomadState,
    tasks: Vec<tokio::task::JoinHandle<()>>,
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
}

impl Twin {
    /// Starts the Consul and Nomad APIs.
    pub async fn start(config: TwinConfig) -> Result<Twin, Error> {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let consul_listener = tokio::net::TcpListener::bind(config.consul_addr)
            .await
            .map_err(|source| Error::Bind { addr: config.consul_addr, source })?;
        let nomad_listener = tokio::net::TcpListener::bind(config.nomad_addr)
            .await
            .map_err(|source| Error::Bind { addr: config.nomad_addr, source })?;
        let consul_addr = consul_listener.local_addr().map_err(|source| Error::Bind { addr: config.consul_addr, source })?;
        let nomad_addr = nomad_listener.local_addr().map_err(|source| Error::Bind { addr: config.nomad_addr, source })?;
        let consul = consul::ConsulState::new(consul::ConsulConfig {
            acl_token: config.acl_token.clone(),
            data_dir: config.data_dir.clone(),
        });
        let nomad = nomad::NomadState::new(nomad::NomadConfig {
            consul_http_addr: consul_addr,
            acl_token: config.acl_token.clone(),
            data_dir: config.data_dir.clone(),
        });
        let consul_router = consul.router();
        let nomad_router = nomad.router();
        let tasks = vec![
            tokio::spawn(async move {
                let _ = axum::serve(consul_listener, consul_router).await;
            }),
            tokio::spawn(async move {
                let _ = axum::serve(nomad_listener, nomad_router).await;
            }),
        ];
        Ok(Twin { consul_addr, nomad_addr, nomad, tasks })
    }

    /// The Consul API's address.
    pub fn consul_addr(&self) -> SocketAddr {
        self.consul_addr
    }

    /// The Nomad API's address.
    pub fn nomad_addr(&self) -> SocketAddr {
        self.nomad_addr
    }

    /// Stops both APIs and every process the executor started.
    pub async fn shutdown(self) {
        self.nomad.shutdown().await;
        for task in self.tasks {
            task.abort();
        }
    }
}
