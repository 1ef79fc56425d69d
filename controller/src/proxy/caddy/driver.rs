//! The Caddy [`ProxyDriver`]: Caddy as the loop drives it.
//!
//! - **Job.** The Nomad job starts Caddy from a bootstrap config without policy and without
//!   routes ([`config::bootstrap`], which `render::render_model` embeds), so neither a policy
//!   edit nor a catalog change registers a new job version. A new allocation started from it
//!   serves nothing but 404 and the HTTPS redirect (fail closed) until the operator loads the
//!   live config, which the watch does within a second of seeing the bootstrap identity; a task
//!   restarted in its allocation resumes the live config Caddy autosaved (`--resume`).
//! - **Policy.** Caddy has no KV provider, so the loop's policy tree for Caddy is one key,
//!   `<kv_root>caddy`, holding the identity of the live config rendered without routes: every
//!   setting of the document that reaches Caddy's config (policy, entry points, TLS, discovery)
//!   moves it, so the planner sees a Caddy policy change like a Traefik one and the rollout's
//!   `WriteKv` comes here. [`apply_policy`](ProxyDriver::apply_policy) writes the key, hands the
//!   model to the watch and waits for its `/load`: a config Caddy refuses is a terminal
//!   [`ApplyError`] (Caddy keeps the old config).
//! - **Routes.** [`super::watch`] follows the Consul catalog with blocking queries and loads the
//!   whole config on every change that alters it, bursts coalesced.
//! - **Gate.** The admin API answers with the identity of the config the watch loaded last
//!   (`check_ping`), that config holds the rollout's policy (an expected entry
//!   `policy:<identity>@caddy`, reported disabled with Caddy's error when it refused it), and the
//!   route probes pass; without probes in the document, one catalog route is probed.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use futures::future::BoxFuture;
use tokio::sync::{Notify, watch};

use super::admin::{CaddyAdmin, HttpCaddyAdmin};
use super::config::{self, AdminEndpoint, IDENTITY_PREFIX};
use super::routes::{HostMatch, PathRule, RouteTable};
use crate::consul::ConsulApi;
use crate::proxy::PolicyWrite;
use crate::proxy::probe::{ProxyProbe, RouteProbe, probe_routes};
use crate::proxy::traefik::{EntryKind, EntryStatus, KvPolicyTree, RawEntry};
use crate::proxy::{ProxyDriver, Reach, base_gate};
use crate::render::{self, Model, RenderContext, Rendered};
use crate::rollout::{ApplyError, Gate, ProbeOutcome, ProxyObservation};
use crate::spec::{ProxyKind, ValidatedSpec};

/// The policy key under the operator's policy root.
pub const POLICY_KEY: &str = "caddy";
/// The provider name of the gate's expected entries.
const PROVIDER: &str = "caddy";
/// How many rendered models are kept for a later `apply_policy` (the document's, the one in
/// flight, the one a rollback restores).
const MODEL_CACHE: usize = 8;
/// The longest `apply_policy` waits for the watch to load the new policy.
const APPLY_WAIT: Duration = Duration::from_secs(20);

/// The gate of a Caddy rollout: the admin API answers with the identity the operator loaded,
/// that config carries this document's policy, and the route probes pass.
#[must_use]
pub fn gate(spec: &ValidatedSpec, rendered: &Rendered, kv_root: &str, reach: &Reach) -> Gate {
    let key = format!("{kv_root}{POLICY_KEY}");
    Gate {
        check_ping: true,
        expected_entries: rendered
            .traefik_kv
            .iter()
            .filter(|(k, _)| *k == key)
            .map(|(_, v)| entry_name(v))
            .collect(),
        proxy_api: Some(admin_base(spec.model(), reach)),
        ..base_gate(ProxyKind::Caddy, spec, reach)
    }
}

/// Base URL of Caddy's admin API: the explicit one, or loopback at the dashboard port (the
/// admin API is never bound elsewhere, so the operator runs on the proxy's node).
fn admin_base(model: &Model, reach: &Reach) -> String {
    reach.api.clone().unwrap_or_else(|| {
        AdminEndpoint::from_model(model)
            .base_url()
            .unwrap_or_else(|| format!("http://127.0.0.1:{}", model.dashboard.address.port))
    })
}

fn entry_name(policy: &str) -> String {
    format!("policy:{policy}@{PROVIDER}")
}

/// The policy identity of `model`: its live config without routes, and its policy sets (which
/// only render into routes), so a set edit or a rotation of a set's users is a policy change.
fn policy_identity(model: &Model) -> Result<String, config::Error> {
    let config = config::live(model, &RouteTable::default())?;
    let identity = config
        .identity
        .strip_prefix(IDENTITY_PREFIX)
        .unwrap_or(&config.identity);
    super::policy::identity_with_sets(identity, model)
}

/// What the loop registers and writes for a Caddy document, pure: the job (its bootstrap config
/// without policy or routes) and the policy key under `kv_root`. The CLI's `render`, `plan` and
/// `validate` must use this (through [`crate::proxy::render()`]) to show what the loop does.
///
/// # Errors
/// The document cannot be rendered for Caddy (terminal).
pub fn render(
    spec: &ValidatedSpec,
    ctx: &RenderContext,
    kv_root: &str,
) -> render::Result<Rendered> {
    render_with_model(spec, ctx, &format!("{kv_root}{POLICY_KEY}")).map(|(r, _, _)| r)
}

fn render_with_model(
    spec: &ValidatedSpec,
    ctx: &RenderContext,
    key: &str,
) -> render::Result<(Rendered, Model, String)> {
    let model = render::resolve(spec, ctx)?;
    let policy = policy_identity(&model)?;
    // The job carries neither the policy nor the routes (`config::bootstrap`).
    let mut rendered = render::render_model(&model, ctx)?;
    rendered.traefik_kv = vec![(key.to_owned(), policy.clone())];
    rendered.kv_digest = render::digest_kv(&rendered.traefik_kv);
    Ok((rendered, model, policy))
}

/// A model the watch loads, named by its policy identity.
#[derive(Debug, Clone)]
pub(super) struct Live {
    pub(super) policy: String,
    pub(super) model: Arc<Model>,
}

/// What the driver and its watch share.
#[derive(Debug, Default)]
pub(super) struct State {
    /// Recently rendered models by policy identity, newest last.
    rendered: VecDeque<Live>,
    /// What the watch loads; `None` until a policy is applied or adopted from KV.
    pub(super) live: Option<Live>,
    /// Bumped by every request for a load; the watch reports the generation it served.
    pub(super) generation: u64,
    /// The watch should read the policy key (an operator that restarted adopts what runs).
    pub(super) adopt: bool,
}

impl State {
    pub(super) fn find(&self, policy: &str) -> Option<Live> {
        self.rendered
            .iter()
            .rev()
            .find(|l| l.policy == policy)
            .cloned()
    }
}

/// What the watch did last.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(super) struct Report {
    /// The request generation this report answers.
    pub(super) generation: u64,
    /// The policy of the config it tried last.
    pub(super) policy: Option<String>,
    /// The identity Caddy accepted last (and reported back).
    pub(super) loaded: Option<String>,
    /// Caddy's refusal of the last config (terminal for that config).
    pub(super) rejected: Option<String>,
    /// The route the gate probes when the document has no probes.
    pub(super) default_probe: Option<(String, String, u16)>,
}

/// The state shared between the driver and its watch task.
#[derive(Debug)]
pub(super) struct Shared {
    pub(super) state: Mutex<State>,
    pub(super) kick: Notify,
    pub(super) report: watch::Sender<Report>,
}

impl Shared {
    pub(super) fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The Caddy driver.
pub struct CaddyDriver<C, P> {
    tree: KvPolicyTree<C>,
    consul: Arc<C>,
    probe: Arc<P>,
    key: String,
    shared: Arc<Shared>,
    task: Mutex<Option<tokio::task::JoinHandle<()>>>,
    /// Debounce of catalog bursts.
    debounce: Duration,
}

impl<C: ConsulApi + 'static, P> CaddyDriver<C, P> {
    /// A driver storing its policy key under `kv_root` and reading Caddy through `probe`.
    pub fn new(consul: Arc<C>, probe: Arc<P>, kv_root: &str) -> Self {
        Self {
            tree: KvPolicyTree::new(Arc::clone(&consul), kv_root),
            consul,
            probe,
            key: format!("{kv_root}{POLICY_KEY}"),
            shared: Arc::new(Shared {
                state: Mutex::new(State::default()),
                kick: Notify::new(),
                report: watch::Sender::new(Report::default()),
            }),
            task: Mutex::new(None),
            debounce: super::watch::DEBOUNCE,
        }
    }

    /// Starts the catalog watch once, on the runtime the loop runs on.
    fn ensure_watch(&self) {
        let mut task = self.task.lock().unwrap_or_else(PoisonError::into_inner);
        if task.as_ref().is_some_and(|t| !t.is_finished()) {
            return;
        }
        let Ok(handle) = tokio::runtime::Handle::try_current() else {
            return;
        };
        *task = Some(handle.spawn(super::watch::run(
            Arc::clone(&self.consul),
            self.key.clone(),
            Arc::clone(&self.shared),
            self.debounce,
        )));
    }

    /// Asks the watch to load (or stop loading) and waits for its report.
    async fn request(&self, live: Option<Live>) -> Report {
        let generation = {
            let mut state = self.shared.lock();
            state.live = live;
            state.adopt = false;
            state.generation += 1;
            state.generation
        };
        self.ensure_watch();
        let mut rx = self.shared.report.subscribe();
        self.shared.kick.notify_one();
        let wait = rx.wait_for(|r| r.generation >= generation);
        match tokio::time::timeout(APPLY_WAIT, wait).await {
            Ok(Ok(report)) => report.clone(),
            _ => Report::default(),
        }
    }
}

impl<C, P> Drop for CaddyDriver<C, P> {
    fn drop(&mut self) {
        if let Some(task) = self
            .task
            .get_mut()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
        {
            task.abort();
        }
    }
}

impl<C: ConsulApi + 'static, P: ProxyProbe> ProxyDriver for CaddyDriver<C, P> {
    fn kind(&self) -> ProxyKind {
        ProxyKind::Caddy
    }

    fn render(&self, spec: &ValidatedSpec, ctx: &RenderContext) -> render::Result<Rendered> {
        let (rendered, model, policy) = render_with_model(spec, ctx, &self.key)?;
        {
            let mut state = self.shared.lock();
            state.rendered.retain(|l| l.policy != policy);
            state.rendered.push_back(Live {
                policy,
                model: Arc::new(model),
            });
            while state.rendered.len() > MODEL_CACHE {
                state.rendered.pop_front();
            }
            if state.live.is_none() {
                state.adopt = true;
            }
        }
        self.ensure_watch();
        self.shared.kick.notify_one();
        Ok(rendered)
    }

    fn apply_policy<'a>(&'a self, write: PolicyWrite<'a>) -> BoxFuture<'a, Result<(), ApplyError>> {
        Box::pin(async move {
            self.tree.write(write).await?;
            if let Some((_, policy)) = write.set.iter().find(|(k, _)| *k == self.key) {
                let live = self.shared.lock().find(policy);
                let Some(live) = live else {
                    // A restore after an operator restart: nothing rendered it in this process;
                    // Caddy keeps what it runs and the next pass renders the document again.
                    return Ok(());
                };
                let report = self.request(Some(live)).await;
                if let Some(reason) = report
                    .rejected
                    .filter(|_| report.policy.as_deref() == Some(policy))
                {
                    return Err(ApplyError::new(
                        format!("Caddy refused the config and keeps the previous one: {reason}"),
                        false,
                    ));
                }
            } else if write.delete.contains(&self.key) {
                // Another proxy takes over: stop loading Caddy.
                self.request(None).await;
            }
            Ok(())
        })
    }

    fn observe<'a>(&'a self, gate: &'a Gate) -> BoxFuture<'a, ProxyObservation> {
        Box::pin(async move {
            let mut proxy = ProxyObservation::default();
            let Some(api) = &gate.proxy_api else {
                proxy.probes = probe_routes(&*self.probe, &gate.probes).await;
                return proxy;
            };
            let report = self.shared.report.borrow().clone();
            let identity = match HttpCaddyAdmin::new(api) {
                Ok(admin) => admin.identity().await.ok(),
                Err(_) => None,
            };
            if let Some(id) = &identity {
                proxy.ping_ok = id.is_some() && *id == report.loaded;
                if !proxy.ping_ok {
                    // Caddy restarted from its bootstrap config, or someone loaded another
                    // config: the watch reloads ours now rather than at its next tick.
                    self.shared.kick.notify_one();
                }
            }
            if let Some(policy) = &report.policy {
                let rejected = report.rejected.clone();
                proxy.rawdata = Some(vec![RawEntry {
                    name: entry_name(policy),
                    kind: EntryKind::Middleware,
                    status: if rejected.is_some() {
                        EntryStatus::Disabled
                    } else if proxy.ping_ok {
                        EntryStatus::Enabled
                    } else {
                        EntryStatus::Warning
                    },
                    errors: rejected.into_iter().collect(),
                    middlewares: Vec::new(),
                }]);
                // Loaded but not (yet) what Caddy runs: the entry is not listed, so the gate waits.
                if !proxy.ping_ok && report.rejected.is_none() {
                    proxy.rawdata = Some(Vec::new());
                }
            }
            proxy.probes = if gate.probes.is_empty() {
                default_probe(&*self.probe, api, report.default_probe.as_ref()).await
            } else {
                probe_routes(&*self.probe, &gate.probes).await
            };
            proxy
        })
    }
}

/// Without probes in the document, one catalog route through its entry point: anything but a
/// server error or Caddy's own 404 counts (the backend's answer is its business).
async fn default_probe<P: ProxyProbe>(
    probe: &P,
    api: &str,
    route: Option<&(String, String, u16)>,
) -> Vec<ProbeOutcome> {
    let Some((host, path, port)) = route else {
        return Vec::new();
    };
    let proxy_host = api
        .trim_start_matches("http://")
        .rsplit_once(':')
        .map_or("127.0.0.1", |(h, _)| h);
    let route = RouteProbe {
        address: format!("{proxy_host}:{port}"),
        host: host.clone(),
        path: path.clone(),
        expect_status: 200,
        tls: true,
    };
    let outcome = match probe.route(&route).await {
        Ok(code) => ProbeOutcome {
            name: route.name(),
            ok: code < 500 && code != 404,
            detail: format!("got {code}, want a backend's answer (not 404 or 5xx)"),
        },
        Err(e) => ProbeOutcome {
            name: route.name(),
            ok: false,
            detail: e.to_string(),
        },
    };
    vec![outcome]
}

/// The route a default probe takes: the first TLS route with an exact host, on its entry point.
pub(super) fn pick_default_probe(
    model: &Model,
    routes: &RouteTable,
) -> Option<(String, String, u16)> {
    routes.routes.iter().find_map(|r| {
        let Some(HostMatch::Exact(host)) = &r.host else {
            return None;
        };
        if host.contains('*') {
            return None;
        }
        let ep = model
            .entry_points
            .iter()
            .find(|ep| ep.tls && r.entry_points.contains(&ep.name))?;
        let path = match &r.path {
            Some(PathRule::Prefix(p) | PathRule::Exact(p)) if p.starts_with('/') => p.clone(),
            _ => "/".to_owned(),
        };
        Some((host.clone(), path, ep.address.port))
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::panic)] // tests fail loudly
mod tests;
