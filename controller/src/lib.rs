//! proxy-operator: converges the edge proxy of a Nomad + Consul cluster to one desired document,
//! a `ProxyConfig` kept in Consul KV.
//!
//! The core (`spec`, `render`, `plan`, `rollout`, `migrate`) does no IO. The clients (`consul`,
//! `nomad`, and the proxy drivers in `proxy`) sit behind small traits so the loop in `reconcile`
//! runs against in-memory fakes, the twin, or a real cluster. `ARCHITECTURE.md` is the map.
#![forbid(unsafe_code)]

pub mod admission;
pub mod cli;
pub mod consul;
pub mod dev;
pub mod leader;
pub mod metrics;
pub mod migrate;
pub mod nomad;
pub mod plan;
pub mod proxy;
pub mod reconcile;
pub mod render;
pub mod rollout;
pub mod server;
pub mod spec;
pub mod status;
pub mod telemetry;
pub mod transport;

/// The HTTP seam to the proxy, now under [`proxy`]; kept at its old path for callers.
pub use proxy::probe;
