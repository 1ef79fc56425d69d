//! Catalog → Caddy: decides whether a new `/load` is needed, and runs one.
//!
//! The decision is a comparison of identities (the sha256 of the rendered config, see
//! [`super::config`]) with the last one Caddy accepted, so a catalog event that changes nothing
//! Caddy serves (a check output, an unrelated service's health note) costs no `/load`.
//!
//! Bursts are **not** coalesced here: the caller's debounce (leading edge, then trailing) decides
//! when to take a snapshot; each snapshot is rendered whole and becomes at most one `/load`, so
//! ten registrations inside one debounce window are one `/load` of the final catalog.

use super::admin::{self, CaddyAdmin};
use super::config::{self, CaddyConfig, CaddyOptions};
use super::routes::{Catalog, RouteSettings, RouteTable, build_routes};
use crate::render::Model;

/// What the sync remembers between passes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Sync {
    last_loaded: Option<String>,
}

/// What [`Sync::apply`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Caddy already runs this config.
    Unchanged,
    /// The config was loaded and Caddy reports its identity.
    Loaded,
}

/// Renders the config for a catalog snapshot: the pure part of a sync pass.
pub fn desired(
    model: &Model,
    catalog: &Catalog,
    options: &CaddyOptions,
) -> Result<(CaddyConfig, RouteTable), config::Error> {
    let routes = build_routes(catalog, &RouteSettings::from_model(model));
    let config = config::render_config(model, &routes, options)?;
    Ok((config, routes))
}

impl Sync {
    /// Nothing loaded yet: the first pass always loads.
    pub fn new() -> Sync {
        Sync::default()
    }

    /// `Some(config)` when it differs from the last config Caddy accepted.
    pub fn plan(&self, config: CaddyConfig) -> Option<CaddyConfig> {
        (self.last_loaded.as_deref() != Some(config.identity.as_str())).then_some(config)
    }

    /// Records that Caddy accepted `identity`.
    pub fn loaded(&mut self, identity: &str) {
        self.last_loaded = Some(identity.to_string());
    }

    /// Forgets what was loaded, so the next pass loads again: call it when Caddy's identity
    /// differs from [`Sync::last_loaded`] (Caddy restarted from its bootstrap config).
    pub fn forget(&mut self) {
        self.last_loaded = None;
    }

    /// The identity Caddy last accepted.
    pub fn last_loaded(&self) -> Option<&str> {
        self.last_loaded.as_deref()
    }

    /// One pass: loads `config` unless Caddy already runs it, then reads the identity back.
    /// A refused load leaves [`Sync::last_loaded`] unchanged (Caddy keeps the old config).
    pub async fn apply<A: CaddyAdmin>(
        &mut self,
        admin: &A,
        config: CaddyConfig,
    ) -> Result<Outcome, admin::Error> {
        let Some(config) = self.plan(config) else {
            return Ok(Outcome::Unchanged);
        };
        admin.load(&config).await?;
        self.loaded(&config.identity);
        match admin.identity().await? {
            Some(id) if id == config.identity => Ok(Outcome::Loaded),
            other => {
                // Someone else loaded a config in between; load ours again next pass.
                self.forget();
                Err(admin::Error::Status {
                    url: config::IDENTITY_PATH.to_string(),
                    status: 200,
                    message: format!(
                        "Caddy reports identity {:?} right after loading {}",
                        other.unwrap_or_default(),
                        config.identity
                    ),
                })
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // tests fail loudly
mod tests {
    use super::*;

    fn config(id: &str) -> CaddyConfig {
        CaddyConfig {
            body: b"{}".to_vec(),
            identity: id.to_string(),
        }
    }

    #[test]
    fn the_first_snapshot_always_needs_a_load() {
        assert!(Sync::new().plan(config("a")).is_some());
    }

    #[test]
    fn a_snapshot_rendering_the_loaded_config_needs_no_load() {
        let mut sync = Sync::new();
        sync.loaded("a");
        assert!(sync.plan(config("a")).is_none());
        assert_eq!(sync.plan(config("b")).unwrap().identity, "b");
    }

    #[test]
    fn after_a_caddy_restart_is_detected_the_same_config_is_loaded_again() {
        let mut sync = Sync::new();
        sync.loaded("a");
        sync.forget();
        assert!(sync.plan(config("a")).is_some());
        assert_eq!(sync.last_loaded(), None);
    }
}
