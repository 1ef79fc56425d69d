//! The Consul HTTP API: KV, transactions, sessions, catalog, health, status, agent.

use std::path::PathBuf;

/// Settings of the Consul side.
#[derive(Debug, Clone, Default)]
pub struct ConsulConfig {
    /// Token every request must carry, when set.
    pub acl_token: Option<String>,
    /// Directory for persisted state.
    pub data_dir: Option<PathBuf>,
}

/// Shared state of the Consul API.
#[derive(Debug, Clone)]
pub struct ConsulState {}

impl ConsulState {
    /// Creates the state (restoring it from `data_dir` when present).
    pub fn new(_config: ConsulConfig) -> ConsulState {
        ConsulState {}
    }

    /// The HTTP routes of the Consul API.
    pub fn router(&self) -> axum::Router {
        axum::Router::new()
    }
}
