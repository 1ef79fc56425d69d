//! Caddy as a first-class proxy: its whole JSON config rendered from the spec and the Consul
//! catalog, loaded through its admin API (`POST /load`, atomic: Caddy keeps the old config when a
//! load fails), and checked by an identity the operator sets.
//!
//! - [`routes`] (pure): catalog health entries → [`routes::RouteTable`], in HinD's `https://`,
//!   Traefik's router and the default-rule conventions.
//! - [`config`] (pure): model + routes → [`config::CaddyConfig`] (body and identity), plus
//!   [`config::caddy_unsupported`], the policies the stock build cannot express.
//! - [`admin`]: the admin API client behind [`admin::CaddyAdmin`].
//! - [`sync`]: decides whether a catalog snapshot needs a new `/load`.
//!
//! What the proxy driver calls, in order, for each pass (catalog change or spec change):
//! 1. `Model::from_spec(spec, users)` then [`routes::build_routes`] and [`config::render_config`];
//! 2. [`sync::Sync::plan`] → `Some(config)` when the identity differs from the last one loaded;
//! 3. [`admin::CaddyAdmin::load`], then [`sync::Sync::loaded`] on success;
//! 4. the gate: [`admin::CaddyAdmin::identity`] equals [`config::CaddyConfig::identity`], and
//!    [`admin::CaddyAdmin::upstreams`] reports the upstreams healthy.
//!
//! A restarted Caddy (Nomad restarts it from the bootstrap config) answers a different identity;
//! the driver then calls [`sync::Sync::forget`] and loads again.

pub mod admin;
pub mod config;
pub mod routes;
pub mod sync;
mod traefik_tags;

pub use admin::{CaddyAdmin, HttpCaddyAdmin};
pub use config::{
    AdminEndpoint, CaddyConfig, CaddyOptions, Secrets, caddy_unsupported, render_config,
};
pub use routes::{Catalog, RouteSettings, RouteTable, build_routes};
pub use sync::Sync;
