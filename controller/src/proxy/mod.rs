//! The proxy boundary: everything that depends on which proxy runs (Traefik or Caddy) sits
//! behind [`ProxyDriver`], so the loop in `reconcile` never matches on the proxy kind.
//!
//! A proxy module provides two things, each registered once in this file:
//! - a pure `gate` function (registered in [`gate`]): the health gate a rollout of a document
//!   for this proxy must pass — whether the proxy's own health endpoint is read, which of our
//!   entries it must have loaded, the address of its API, and the route probes through its entry
//!   points. [`plan`](crate::plan::plan) calls it, so a planned change is complete and pure.
//! - a [`ProxyDriver`] (registered in [`Proxies`]): rendering the proxy's config and Nomad job,
//!   applying policies live, and reading the proxy's health for the gate.
//!
//! Modules:
//! - `traefik`: policies as the Consul KV provider tree, written in one transaction; health
//!   from `/ping` and `/api/rawdata`.
//! - `caddy`: the whole config through the admin API (`POST /load`), routes from the Consul
//!   catalog, policy identity and config identity in the gate.
//! - `probe`: the HTTP seam every driver reads a proxy through (and its test double).

use std::sync::Arc;

use futures::future::BoxFuture;

use crate::consul::ConsulApi;
use crate::leader::Fence;
use crate::render::{self, RenderContext, Rendered};
use crate::rollout::{ApplyError, Gate, ProxyObservation};
use crate::spec::{ProxyKind, ValidatedSpec};

pub mod caddy;
pub mod preflight;
pub mod probe;
pub mod served_cert;
pub mod traefik;

use probe::ProxyProbe;
pub use traefik::TraefikDriver;

/// Where the operator reaches the proxy it runs: for the gate's reads of the proxy's API and
/// for route probes through its entry points.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reach {
    /// Host the proxy's entry points and API listen on, as seen from the operator.
    pub host: String,
    /// Base URL of the proxy's API, when set explicitly; otherwise derived from the document
    /// (Traefik: the dashboard address's port on `host`).
    pub api: Option<String>,
}

impl Reach {
    /// The proxy on `host`, its API derived from the document.
    #[must_use]
    pub fn on(host: impl Into<String>) -> Self {
        Self {
            host: host.into(),
            api: None,
        }
    }
}

/// One policy change to apply live: the rollout's policy entries (full keys under the
/// operator's policy root), and the fence a replica under leader election puts first in its KV
/// write, so a deposed leader writes nothing.
#[derive(Debug, Clone, Copy)]
pub struct PolicyWrite<'a> {
    /// Keys to set, with their values.
    pub set: &'a [(String, String)],
    /// Keys to delete.
    pub delete: &'a [String],
    /// The leader's fence (`None` without election).
    pub fence: Option<&'a Fence>,
}

/// One proxy as the loop drives it. Implementations own the clients they need (a Consul client
/// for Traefik's KV provider tree, an admin-API client for Caddy, the [`ProxyProbe`] for health),
/// so the loop only ever calls these methods.
///
/// The futures are boxed so the loop can hold every driver behind one `dyn ProxyDriver` and pick
/// the one a document or a rollout in flight names ([`Proxies::driver`]).
///
/// # What a Caddy implementation must provide
/// - [`render`](ProxyDriver::render): the job whose task starts Caddy from a bootstrap config
///   (`caddy::config::bootstrap`, which `render::render_model` embeds) and the policy key; the
///   live config is `caddy::config::live`.
/// - [`apply_policy`](ProxyDriver::apply_policy): Caddy has no KV provider, so a policy change is
///   one `POST /load` of the whole config (policy plus the routes synced from the Consul
///   catalog), which Caddy applies atomically and refuses as a whole on error. Routes are
///   catalog-driven: the driver watches the catalog and reloads on a change, coalescing bursts.
/// - [`observe`](ProxyDriver::observe): the admin API answers, and the config loaded is the one
///   we sent (a config identity the operator stamps into the config and reads back, which also
///   detects a Caddy that Nomad restarted from its bootstrap config), plus the route probes.
/// - a pure `gate` function registered in [`gate`], and the driver registered in [`Proxies`].
pub trait ProxyDriver: Send + Sync {
    /// Which proxy this drives.
    fn kind(&self) -> ProxyKind;

    /// Renders the proxy's Nomad job (with its config embedded) and the policy it reads live.
    /// By default `render::render`, which renders what the document's `spec.proxy` needs.
    ///
    /// # Errors
    /// The document cannot be rendered for this proxy (terminal: the same document always
    /// renders the same way).
    fn render(&self, spec: &ValidatedSpec, ctx: &RenderContext) -> render::Result<Rendered> {
        render::render(spec, ctx)
    }

    /// Applies a policy change live. All or nothing: the proxy must never load half of a
    /// change.
    fn apply_policy<'a>(&'a self, write: PolicyWrite<'a>) -> BoxFuture<'a, Result<(), ApplyError>>;

    /// Reads the proxy's own health and sends the gate's route probes. A proxy that does not
    /// answer is a gate signal (unhealthy), never an error.
    fn observe<'a>(&'a self, gate: &'a Gate) -> BoxFuture<'a, ProxyObservation>;
}

/// Every proxy the operator can run, each behind its driver.
pub struct Proxies {
    traefik: Box<dyn ProxyDriver>,
    caddy: Box<dyn ProxyDriver>,
}

impl std::fmt::Debug for Proxies {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Proxies").finish_non_exhaustive()
    }
}

impl Proxies {
    /// The drivers over the operator's clients; `kv_root` is the policy root
    /// (`<prefix>/traefik/`).
    pub fn new<C, P>(consul: Arc<C>, probe: Arc<P>, kv_root: &str) -> Self
    where
        C: ConsulApi + 'static,
        P: ProxyProbe,
    {
        Self {
            traefik: Box::new(TraefikDriver::new(
                Arc::clone(&consul),
                Arc::clone(&probe),
                kv_root,
            )),
            caddy: Box::new(caddy::CaddyDriver::new(consul, probe, kv_root)),
        }
    }

    /// The driver of `kind`.
    #[must_use]
    pub fn driver(&self, kind: ProxyKind) -> &dyn ProxyDriver {
        match kind {
            ProxyKind::Traefik => self.traefik.as_ref(),
            ProxyKind::Caddy => self.caddy.as_ref(),
        }
    }
}

/// What the loop renders for `spec` (the job and the policy entries under `kv_root`), pure: the
/// same as the proxy's driver renders, for the CLI's `render`, `plan` and `validate`.
///
/// # Errors
/// The document cannot be rendered for its proxy (terminal).
pub fn render(
    spec: &ValidatedSpec,
    ctx: &RenderContext,
    kv_root: &str,
) -> render::Result<Rendered> {
    match spec.proxy() {
        ProxyKind::Traefik => render::render(spec, ctx),
        ProxyKind::Caddy => caddy::render(spec, ctx, kv_root),
    }
}

/// The health gate a rollout of `spec` must pass, derived by the proxy's own module. Pure.
#[must_use]
pub fn gate(spec: &ValidatedSpec, rendered: &Rendered, kv_root: &str, reach: &Reach) -> Gate {
    match spec.proxy() {
        ProxyKind::Traefik => traefik::gate(spec, rendered, kv_root, reach),
        ProxyKind::Caddy => caddy::gate(spec, rendered, kv_root, reach),
    }
}

/// The gate as this operator reaches the proxy: every address comes from `reach` (the
/// operator's own configuration), whatever the gate says. A gate read back from the journal is
/// untrusted input (the journal key is writable by whoever can write our KV prefix), and its
/// addresses would otherwise make the operator GET arbitrary URLs and put their status codes
/// into the status document. Only the ports survive (the document chose them, and they can
/// only point at the proxy's own host): the API is `reach.api`, or `http://<reach.host>:<port>`;
/// a probe connects to `<reach.host>:<port>` whatever its `Host` header says. A gate this
/// operator planned comes back unchanged.
#[must_use]
pub fn reached(gate: &Gate, reach: &Reach) -> Gate {
    let port = |address: &str| {
        address
            .rsplit_once(':')
            .and_then(|(_, port)| port.trim_end_matches('/').parse::<u16>().ok())
    };
    let proxy_api = gate.proxy_api.as_deref().and_then(|api| match &reach.api {
        Some(explicit) => Some(explicit.clone()),
        None => {
            let rest = api.strip_prefix("http://")?;
            let port = port(rest).filter(|_| !rest.trim_end_matches('/').contains('/'))?;
            Some(format!("http://{}:{port}", reach.host))
        }
    });
    // A probe without a port still counts, and fails (nothing listens on port 0): dropping it
    // would pass a gate that asked for it.
    let probes = gate
        .probes
        .iter()
        .map(|p| probe::RouteProbe {
            address: format!("{}:{}", reach.host, port(&p.address).unwrap_or(0)),
            ..p.clone()
        })
        .collect();
    Gate {
        proxy_api,
        probes,
        ..gate.clone()
    }
}

/// `url` (`http://host:port`) with its port `offset` higher; unchanged when it has no port.
#[must_use]
pub fn port_shifted(url: &str, offset: u16) -> String {
    let trimmed = url.trim_end_matches('/');
    match trimmed
        .rsplit_once(':')
        .and_then(|(host, port)| Some((host, port.parse::<u16>().ok()?)))
    {
        Some((host, port)) if offset > 0 => format!("{host}:{}", port.saturating_add(offset)),
        _ => url.to_owned(),
    }
}

/// The part of every gate that comes from the document alone: the rollout's timings and
/// failure policy, and the route probes through the entry points on `reach.host`. Proxy modules
/// add their own health signals.
#[must_use]
pub fn base_gate(kind: ProxyKind, spec: &ValidatedSpec, reach: &Reach) -> Gate {
    let rollout = spec.rollout();
    Gate {
        proxy: kind,
        healthy_deadline: rollout.healthy_deadline,
        min_healthy_time: rollout.min_healthy_time,
        on_failure: rollout.on_failure,
        check_ping: false,
        expected_entries: Vec::new(),
        proxy_api: None,
        probes: probe::route_probes(spec, &reach.host),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::panic)] // tests fail loudly
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::spec::OnFailure;

    fn gate(api: &str, probe_address: &str) -> Gate {
        Gate {
            proxy: ProxyKind::Traefik,
            healthy_deadline: Duration::from_secs(30),
            min_healthy_time: Duration::from_secs(5),
            on_failure: OnFailure::Rollback,
            check_ping: true,
            expected_entries: Vec::new(),
            proxy_api: Some(api.into()),
            probes: vec![probe::RouteProbe {
                address: probe_address.into(),
                host: "app.example.test".into(),
                path: "/healthz".into(),
                expect_status: 200,
                tls: false,
            }],
        }
    }

    #[test]
    fn a_gate_this_operator_planned_is_reached_unchanged() {
        let planned = gate("http://127.0.0.1:8080", "127.0.0.1:18443");
        assert_eq!(reached(&planned, &Reach::on("127.0.0.1")), planned);
    }

    #[test]
    fn forged_addresses_are_replaced_by_the_operators_own_host_keeping_only_the_ports() {
        let forged = gate(
            "http://169.254.169.254:80/latest/meta-data",
            "10.9.8.7:9200",
        );
        let gate = reached(&forged, &Reach::on("127.0.0.1"));
        assert_eq!(gate.proxy_api, None, "a URL with a path is no API base");
        assert_eq!(gate.probes[0].address, "127.0.0.1:9200");
        let forged = super::tests::gate("http://metadata.internal:81", "evil:notaport");
        let gate = reached(&forged, &Reach::on("10.0.0.5"));
        assert_eq!(gate.proxy_api.as_deref(), Some("http://10.0.0.5:81"));
        assert_eq!(gate.probes[0].address, "10.0.0.5:0", "kept, and it fails");
    }

    #[test]
    fn an_explicit_api_address_in_the_operators_configuration_always_wins() {
        let forged = gate("https://attacker.example:443", "127.0.0.1:80");
        let reach = Reach {
            host: "127.0.0.1".into(),
            api: Some("http://127.0.0.1:9000".into()),
        };
        assert_eq!(
            reached(&forged, &reach).proxy_api.as_deref(),
            Some("http://127.0.0.1:9000")
        );
    }
}
