//! The Nomad HTTP API and the local executor that runs raw_exec/exec tasks as real processes.

use std::net::SocketAddr;
use std::path::PathBuf;

/// Settings of the Nomad side.
#[derive(Debug, Clone)]
pub struct NomadConfig {
    /// The Consul HTTP API that services with `provider = "consul"` register in, as a Nomad agent does.
    pub consul_http_addr: SocketAddr,
    /// Token every request must carry, when set.
    pub acl_token: Option<String>,
    /// Directory for persisted state.
    pub data_dir: Option<PathBuf>,
}

/// Shared state of the Nomad API and its executor.
#[derive(Debug, Clone)]
pub struct NomadState {}

impl NomadState {
    /// Creates the state (restoring it from `data_dir` when present).
    pub fn new(_config: NomadConfig) -> NomadState {
        NomadState {}
    }

    /// The HTTP routes of the Nomad API.
    pub fn router(&self) -> axum::Router {
        axum::Router::new()
    }

    /// Stops every task process the executor started.
    pub async fn shutdown(&self) {}
}
