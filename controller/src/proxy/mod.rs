//! Proxy drivers: what the operator calls to converge a running proxy.

pub mod caddy;
