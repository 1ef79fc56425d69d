//! Traefik: policies live in the Consul KV provider tree (`<prefix>/traefik/`), written in one
//! transaction; health is `/ping` and our routers and middlewares enabled in `/api/rawdata`.

use std::collections::BTreeSet;
use std::sync::Arc;

use futures::future::BoxFuture;

use super::probe::{ProxyProbe, probe_routes};
use super::{PolicyWrite, ProxyDriver, Reach, base_gate};
use crate::consul::ConsulApi;
use crate::render::Rendered;
use crate::rollout::{ApplyError, Gate, ProxyObservation};
use crate::spec::{self, ProxyKind, ValidatedSpec};

mod kv;
mod rawdata;

pub use kv::{KvPolicyTree, TXN_MAX_OPS};
pub use rawdata::{EntryKind, EntryStatus, RawEntry, parse_rawdata};

/// The name of the provider Traefik's Consul KV provider registers its entries under.
pub const KV_PROVIDER: &str = "consul";

/// Traefik's API port when the document names none.
const DEFAULT_API_PORT: u16 = 8080;

/// The gate of a Traefik rollout: `/ping` must answer, every router and middleware of our tree
/// must be loaded and enabled in `/api/rawdata`, and the route probes must pass.
#[must_use]
pub fn gate(spec: &ValidatedSpec, rendered: &Rendered, kv_root: &str, reach: &Reach) -> Gate {
    Gate {
        check_ping: true,
        expected_entries: expected_entries(&rendered.traefik_kv, kv_root),
        proxy_api: Some(api_address(spec, reach)),
        ..base_gate(ProxyKind::Traefik, spec, reach)
    }
}

/// Base URL of Traefik's API (`/ping`, `/api/rawdata`): the explicit one, or the dashboard
/// address's port on the proxy's host.
#[must_use]
pub fn api_address(spec: &ValidatedSpec, reach: &Reach) -> String {
    if let Some(api) = &reach.api {
        return api.clone();
    }
    let port = spec
        .dashboard_address()
        .map(|a| a.port)
        .or_else(|| {
            spec::ListenAddress::parse(&spec.dashboard().address)
                .ok()
                .map(|a| a.port)
        })
        .unwrap_or(DEFAULT_API_PORT);
    format!("http://{}:{port}", reach.host)
}

/// `<root>http/middlewares/<name>/…` → `<name>@consul` (routers likewise): what `/api/rawdata`
/// must list enabled once Traefik loaded our tree.
#[must_use]
pub fn expected_entries(kv: &[(String, String)], kv_root: &str) -> Vec<String> {
    let mut names = BTreeSet::new();
    for (key, _) in kv {
        let Some(rest) = key.strip_prefix(kv_root) else {
            continue;
        };
        let mut parts = rest.split('/');
        if let (Some("http"), Some("routers" | "middlewares"), Some(name)) =
            (parts.next(), parts.next(), parts.next())
            && !name.is_empty()
        {
            names.insert(format!("{name}@{KV_PROVIDER}"));
        }
    }
    names.into_iter().collect()
}

/// The Traefik driver.
pub struct TraefikDriver<C, P> {
    policy: KvPolicyTree<C>,
    probe: Arc<P>,
}

impl<C: ConsulApi, P> TraefikDriver<C, P> {
    /// A driver writing the tree under `kv_root` and reading Traefik through `probe`.
    pub fn new(consul: Arc<C>, probe: Arc<P>, kv_root: &str) -> Self {
        Self {
            policy: KvPolicyTree::new(consul, kv_root),
            probe,
        }
    }
}

impl<C: ConsulApi + 'static, P: ProxyProbe> ProxyDriver for TraefikDriver<C, P> {
    fn kind(&self) -> ProxyKind {
        ProxyKind::Traefik
    }

    fn apply_policy<'a>(&'a self, write: PolicyWrite<'a>) -> BoxFuture<'a, Result<(), ApplyError>> {
        Box::pin(self.policy.write(write))
    }

    fn observe<'a>(&'a self, gate: &'a Gate) -> BoxFuture<'a, ProxyObservation> {
        Box::pin(async move {
            let mut proxy = ProxyObservation::default();
            if let Some(api) = &gate.proxy_api {
                proxy.ping_ok = self.probe.ping(api).await.unwrap_or(false);
                proxy.rawdata = self.probe.rawdata(api).await.ok();
            }
            proxy.probes = probe_routes(&*self.probe, &gate.probes).await;
            proxy
        })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::panic)] // tests fail loudly
mod tests {
    use super::*;

    const ROOT: &str = "po/traefik/";

    #[test]
    fn expected_entries_ignore_tls_and_foreign_keys() {
        let kv = vec![
            (
                "po/traefik/tls/certificates/0/certFile".to_owned(),
                "/c".to_owned(),
            ),
            (
                "po/traefik/http/middlewares/a/headers/x".to_owned(),
                "1".to_owned(),
            ),
            (
                "po/traefik/http/middlewares/a/headers/y".to_owned(),
                "1".to_owned(),
            ),
            ("elsewhere/http/middlewares/b/x".to_owned(), "1".to_owned()),
        ];
        assert_eq!(expected_entries(&kv, ROOT), vec!["a@consul".to_owned()]);
    }
}
