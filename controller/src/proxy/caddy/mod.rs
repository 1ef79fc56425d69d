//! Caddy as a first-class proxy: its whole JSON config rendered from the spec and the Consul
//! catalog, loaded through its admin API (`POST /load`, atomic: Caddy keeps the old config when a
//! load fails), and checked by an identity the operator sets.
//!
//! - [`routes`] (pure): catalog health entries → [`routes::RouteTable`], in HinD's `https://`,
//!   Traefik's router and the default-rule conventions.
//! - [`config`] (pure): model + routes → [`config::CaddyConfig`] (body and identity), plus
//!   [`config::caddy_unsupported`], the policies the stock build cannot express.
//! - `policy` (pure): issue 14's middlewares (forward auth, retry, request body limit,
//!   compression, required headers, IP deny list) and the policy sets services opt into with
//!   [`routes::POLICY_TAG`] or Traefik's `<set>@consul` middleware tag.
//! - [`admin`]: the admin API client behind [`admin::CaddyAdmin`].
//! - [`sync`]: decides whether a catalog snapshot needs a new `/load`.
//! - `driver`: [`CaddyDriver`], the [`super::ProxyDriver`] the loop calls, and [`gate`].
//! - `watch`: the driver's task following the catalog and Caddy's identity.
//!
//! What the proxy driver calls, in order, for each pass (catalog change or spec change):
//! 1. [`config::resolve`] (the spec's model plus the basic-auth users read from `usersFrom`),
//!    then [`routes::build_routes`] and [`config::live`] (or [`sync::desired`]);
//! 2. [`sync::Sync::plan`] → `Some(config)` when the identity differs from the last one loaded;
//! 3. [`admin::CaddyAdmin::load`], then [`sync::Sync::loaded`] on success;
//! 4. the gate: [`admin::CaddyAdmin::identity`] equals [`config::CaddyConfig::identity`],
//!    [`admin::CaddyAdmin::upstreams`] lists the routes' upstreams (its `fails` counters move
//!    only with passive health checks, which the config does not turn on), and route probes
//!    pass through the entry points.
//!
//! A Caddy that Nomad restarts in the same allocation (crash, OOM, `kill -9`) runs
//! `caddy run --config <bootstrap> --resume`: it starts from the live config it autosaved last
//! (see [`config`]), so it serves the last good routes and policy by itself, with the operator's
//! identity (`tests/caddy_e2e.rs`, operator stopped: kill -9 → last routes serve in ~10.1 s, of
//! which 10 s is the job's restart delay). Only a new allocation (a structural change, a node
//! whose allocation directory is gone) starts from the job's bootstrap config, which the driver
//! renders without routes and without policy (404 and the HTTPS redirect only); it answers
//! another identity, and the watch calls [`sync::Sync::forget`] and loads again within its 20 ms
//! catch-up tick. [`config::Secrets::Withhold`] renders a bootstrap config that holds routes
//! (`tests/caddy_restart.rs`: ~90 ms to serve them, ~120 ms to the live config); the job does
//! not use it, because routes in the job would register a job version per catalog change.
//!
//! Large catalogs render as host maps (`config/host_map.rs`), so `/load` stays fast: from
//! [`HOST_MAPS_FROM`] routes on, Caddy's `/reverse_proxy/upstreams` reports the map's
//! placeholders instead of the instances. `scripts/bench caddy` (release, 2 cores, 20 runs):
//! 10,000 services render in 62 ms and load in 81 ms (render + load p95 163 ms; one Caddy route
//! per service: 920 ms median).
//!
//! Handover between two processes (Caddy 2.11): every TCP listener gets SO_REUSEPORT
//! unconditionally (`listen_unix.go` `reusePort`, since v2.6.0, #4705; there is no option to
//! turn it on or off), so a second Caddy binds the same ports and the kernel splits new
//! connections between both. `apps.http.shutdown_delay` keeps a stopping Caddy serving before
//! its grace period, and `apps.http.grace_period` bounds the drain (`modules/caddyhttp/app.go`,
//! v2.6.0, #4906). Listeners can also be inherited as file descriptors (`fd/N`, v2.9.0, #6573;
//! named `fdname/`, v2.11.0, #7243).

pub mod admin;
pub mod config;
mod driver;
mod policy;
pub mod routes;
pub mod sync;
mod traefik_tags;
mod watch;

pub use admin::{CaddyAdmin, HttpCaddyAdmin};
pub use config::{
    AdminEndpoint, CaddyConfig, CaddyOptions, HOST_MAPS_FROM, Secrets, bootstrap,
    caddy_unsupported, live, render_config, resolve,
};
pub use driver::{CaddyDriver, POLICY_KEY, gate, render};
pub use routes::{Catalog, RouteSettings, RouteTable, build_routes};
pub use sync::Sync;
