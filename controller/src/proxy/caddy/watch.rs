//! Catalog → Caddy: the driver's background task.
//!
//! It follows the Consul catalog with blocking queries (`/v1/catalog/services` for the set of
//! services, `/v1/health/service/:name` for each service whose tags Caddy routes on, every
//! instance with its checks: the route builder keeps the passing ones), coalesces bursts with a
//! short debounce, and loads the whole config (`POST /load`) whenever the rendered identity
//! differs from what Caddy reports. Caddy is never restarted for a catalog change.
//!
//! Once a second it reads Caddy's identity back (one loopback GET, no Consul traffic; every
//! 20 ms while Caddy is not running our config): an identity that is not the one loaded last
//! means Caddy started from its bootstrap config (a new allocation; a restarted task resumes the
//! last config loaded, see [`super::config`]) or someone loaded another config, and the same
//! pass loads ours again.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tracing::{debug, info, warn};

use super::admin::{self, CaddyAdmin, HttpCaddyAdmin};
use super::driver::{Live, Report, Shared, pick_default_probe};
use super::routes::{Catalog, RouteSettings, build_routes};
use super::sync::Sync;
use crate::consul::{ConsulApi, ServiceEntry};
use crate::transport::{QueryOptions, Watch};

/// How long a burst of catalog events is gathered before one load.
pub const DEBOUNCE: Duration = Duration::from_millis(25);
/// How often Caddy's identity is read back while Caddy runs our config.
const IDENTITY_CHECK: Duration = Duration::from_secs(1);
/// How often while it does not (starting, restarted, unreachable): a Caddy that Nomad just
/// started in a new allocation serves its bootstrap config, without routes, until this finds it.
const CATCH_UP: Duration = Duration::from_millis(20);
/// Blocking-query wait.
const WAIT: Duration = Duration::from_secs(300);
/// Pause after a failed catalog read.
const RETRY: Duration = Duration::from_secs(1);
/// How often an unreachable Caddy's policy key is read again.
const RECHECK: Duration = Duration::from_secs(5);
/// The longest a load waits for the first answer of a new service's health watch.
const FIRST_READ: Duration = Duration::from_secs(2);

enum Event {
    Services(BTreeMap<String, Vec<String>>),
    Health(String, Vec<ServiceEntry>),
}

/// Whether Caddy routes on a service with these tags: HinD's `https://` tags, Traefik's tags,
/// or every service when the document exposes services by default.
fn relevant(tags: &[String], exposed_by_default: bool) -> bool {
    exposed_by_default
        || tags
            .iter()
            .any(|t| t.starts_with("https://") || t.starts_with("traefik."))
}

async fn watch_services<C: ConsulApi>(consul: Arc<C>, tx: mpsc::UnboundedSender<Event>) {
    let mut watch = Watch::new(WAIT);
    loop {
        match watch.next(|o| consul.catalog_services(o)).await {
            Ok(update) => {
                if update.change.is_change() && tx.send(Event::Services(update.value)).is_err() {
                    return;
                }
            }
            Err(e) => {
                debug!(error = %e, "catalog services watch failed; retrying");
                watch.reset();
                tokio::time::sleep(RETRY).await;
            }
        }
    }
}

async fn watch_health<C: ConsulApi>(
    consul: Arc<C>,
    name: String,
    tx: mpsc::UnboundedSender<Event>,
) {
    let mut watch = Watch::new(WAIT);
    loop {
        match watch
            .next(|o: QueryOptions| consul.health_service(&name, false, o))
            .await
        {
            Ok(update) => {
                if update.change.is_change()
                    && tx.send(Event::Health(name.clone(), update.value)).is_err()
                {
                    return;
                }
            }
            Err(e) => {
                debug!(service = %name, error = %e, "health watch failed; retrying");
                watch.reset();
                tokio::time::sleep(RETRY).await;
            }
        }
    }
}

/// The catalog as the watches see it, and the watches themselves.
struct Follower<C> {
    consul: Arc<C>,
    tx: mpsc::UnboundedSender<Event>,
    services: BTreeMap<String, Vec<String>>,
    health: BTreeMap<String, JoinHandle<()>>,
    catalog: Catalog,
    /// Services whose health watch has not answered yet, since when.
    pending: BTreeMap<String, Instant>,
    list: Option<JoinHandle<()>>,
}

impl<C: ConsulApi + 'static> Follower<C> {
    fn apply(&mut self, event: Event) {
        match event {
            Event::Services(services) => self.services = services,
            Event::Health(name, entries) => {
                self.pending.remove(&name);
                if self.health.contains_key(&name) {
                    self.catalog.insert(name, entries);
                }
            }
        }
    }

    /// Starts the watches for `exposed_by_default`'s relevant services and stops the others.
    fn follow(&mut self, exposed_by_default: bool) {
        if self.list.is_none() {
            self.list = Some(tokio::spawn(watch_services(
                Arc::clone(&self.consul),
                self.tx.clone(),
            )));
        }
        let wanted: BTreeSet<&String> = self
            .services
            .iter()
            .filter(|(_, tags)| relevant(tags, exposed_by_default))
            .map(|(name, _)| name)
            .collect();
        self.health.retain(|name, task| {
            let keep = wanted.contains(name);
            if !keep {
                task.abort();
            }
            keep
        });
        self.catalog.retain(|name, _| wanted.contains(name));
        self.pending.retain(|name, _| wanted.contains(name));
        for name in wanted {
            if !self.health.contains_key(name) {
                self.pending.insert(name.clone(), Instant::now());
                self.health.insert(
                    name.clone(),
                    tokio::spawn(watch_health(
                        Arc::clone(&self.consul),
                        name.clone(),
                        self.tx.clone(),
                    )),
                );
            }
        }
    }

    /// Whether the catalog is complete enough to load: every new service answered once, or
    /// waited on long enough.
    fn settled(&self) -> bool {
        self.pending
            .values()
            .all(|since| since.elapsed() >= FIRST_READ)
    }

    fn stop(&mut self) {
        for (_, task) in std::mem::take(&mut self.health) {
            task.abort();
        }
        if let Some(task) = self.list.take() {
            task.abort();
        }
        self.catalog.clear();
        self.pending.clear();
        self.services.clear();
    }
}

impl<C> Drop for Follower<C> {
    fn drop(&mut self) {
        for task in self.health.values() {
            task.abort();
        }
        if let Some(task) = &self.list {
            task.abort();
        }
    }
}

/// The admin client for the base URL of the live model, rebuilt when it moves.
fn admin_for(cached: &mut Option<(String, HttpCaddyAdmin)>, base: &str) -> Option<HttpCaddyAdmin> {
    if cached.as_ref().is_none_or(|(b, _)| b != base) {
        *cached = HttpCaddyAdmin::new(base).ok().map(|a| (base.to_owned(), a));
    }
    cached.as_ref().map(|(_, a)| a.clone())
}

/// The watch task; runs until the driver aborts it.
pub(super) async fn run<C: ConsulApi + 'static>(
    consul: Arc<C>,
    key: String,
    shared: Arc<Shared>,
    debounce: Duration,
) {
    let (tx, mut rx) = mpsc::unbounded_channel();
    let mut follower = Follower {
        consul: Arc::clone(&consul),
        tx,
        services: BTreeMap::new(),
        health: BTreeMap::new(),
        catalog: Catalog::new(),
        pending: BTreeMap::new(),
        list: None,
    };
    let mut sync = Sync::new();
    let mut admin_cache = None;
    let mut last = Report::default();
    // The identity of the last config Caddy refused: never sent again.
    let mut refused: Option<String> = None;
    let mut last_recheck = Instant::now();
    loop {
        let live = shared.lock().live.clone();
        let tick = match (&live, &last.loaded) {
            (None, _) => WAIT,
            (Some(_), Some(_)) => IDENTITY_CHECK,
            (Some(_), None) => CATCH_UP,
        };
        tokio::select! {
            event = rx.recv() => {
                let Some(event) = event else { return };
                // Coalesce the burst: everything that arrives within the debounce is one load.
                // A new service's health watch starts at once, so its first answer usually lands
                // in the same window instead of costing a second one.
                let exposed = live.as_ref().map(|l| l.model.discovery.consul.exposed_by_default);
                let take = |follower: &mut Follower<C>, event| {
                    follower.apply(event);
                    if let Some(exposed) = exposed {
                        follower.follow(exposed);
                    }
                };
                take(&mut follower, event);
                let until = Instant::now() + debounce;
                while let Ok(Some(event)) = tokio::time::timeout_at(until, rx.recv()).await {
                    take(&mut follower, event);
                }
            }
            () = shared.kick.notified() => {}
            () = tokio::time::sleep(tick) => {}
        }
        let (generation, adopt) = {
            let state = shared.lock();
            (state.generation, state.adopt)
        };
        if adopt {
            adopt_from_kv(&*consul, &key, &shared).await;
        }
        let Some(Live { policy, model }) = shared.lock().live.clone() else {
            if follower.list.is_some() {
                follower.stop();
                sync.forget();
            }
            last = Report {
                generation,
                ..Report::default()
            };
            shared.report.send_replace(last.clone());
            continue;
        };
        follower.follow(model.discovery.consul.exposed_by_default);
        if !follower.settled() && last.policy.as_deref() == Some(policy.as_str()) {
            // New services are still being read; the routes Caddy has stay until they are.
            continue;
        }
        let routes = build_routes(&follower.catalog, &RouteSettings::from_model(&model));
        let mut report = Report {
            generation,
            policy: Some(policy.clone()),
            loaded: last.loaded.clone().filter(|_| last.policy.is_some()),
            rejected: None,
            default_probe: pick_default_probe(&model, &routes),
        };
        let config = match super::config::live(&model, &routes) {
            Ok(config) => config,
            Err(e) => {
                report.rejected = Some(e.to_string());
                last = report;
                shared.report.send_replace(last.clone());
                continue;
            }
        };
        let base = super::config::AdminEndpoint::from_model(&model).base_url();
        let Some(admin) = base.as_deref().and_then(|b| admin_for(&mut admin_cache, b)) else {
            last = report;
            shared.report.send_replace(last.clone());
            continue;
        };
        match admin.identity().await {
            Ok(id) if id.as_deref() != sync.last_loaded() => {
                if sync.last_loaded().is_some() {
                    info!(caddy = ?id, ours = ?sync.last_loaded(), "Caddy runs another config (restarted?); loading ours again");
                }
                sync.forget();
            }
            Ok(_) => {}
            Err(e) => {
                // Caddy is not up (yet): keep what we know, try again at the next tick. Now and
                // then, check that Caddy is still the proxy: a switch away deletes the policy key
                // through the other proxy's driver, and then there is nothing to catch up with.
                debug!(error = %e, "Caddy's admin API does not answer");
                if last_recheck.elapsed() >= RECHECK {
                    last_recheck = Instant::now();
                    recheck_kv(&*consul, &key, &shared).await;
                }
                report.loaded = None;
                sync.forget();
                last = report;
                shared.report.send_replace(last.clone());
                continue;
            }
        }
        let identity = config.identity.clone();
        if refused.as_deref() == Some(identity.as_str()) {
            // Terminal for this config: Caddy keeps the previous one until something changes.
            report.rejected = last.rejected.clone();
            last = report;
            shared.report.send_replace(last.clone());
            continue;
        }
        match sync.apply(&admin, config).await {
            Ok(outcome) => {
                debug!(?outcome, identity = %identity, routes = routes.routes.len(), "Caddy config in sync");
                report.loaded = Some(identity);
            }
            Err(admin::Error::Rejected { message, .. }) => {
                warn!(error = %message, "Caddy refused the config and keeps the previous one");
                report.rejected = Some(message);
                refused = Some(identity);
            }
            Err(e) => {
                debug!(error = %e, "loading Caddy's config failed; retrying");
                report.loaded = None;
            }
        }
        last = report;
        shared.report.send_replace(last.clone());
    }
}

/// An operator that restarted finds the policy key written by its predecessor: when the
/// document renders to the same policy, Caddy goes on being loaded from it.
async fn adopt_from_kv<C: ConsulApi>(consul: &C, key: &str, shared: &Shared) {
    let value = match consul.kv_get(key, QueryOptions::NOW).await {
        Ok((pair, _)) => pair.and_then(|p| String::from_utf8(p.value).ok()),
        Err(e) => {
            debug!(error = %e, "reading the Caddy policy key failed");
            return;
        }
    };
    let mut state = shared.lock();
    state.adopt = false;
    if state.live.is_none()
        && let Some(policy) = value
    {
        state.live = state.find(&policy);
    }
}

/// While Caddy does not answer: the policy key tells whether Caddy is still the proxy. Deleted
/// (another proxy took over) stops the catch-up; another rendered policy is loaded instead.
async fn recheck_kv<C: ConsulApi>(consul: &C, key: &str, shared: &Shared) {
    let Ok((pair, _)) = consul.kv_get(key, QueryOptions::NOW).await else {
        return;
    };
    let value = pair.and_then(|p| String::from_utf8(p.value).ok());
    let mut state = shared.lock();
    if state.live.as_ref().map(|l| l.policy.as_str()) != value.as_deref() {
        info!(policy = ?value, "the Caddy policy key changed while Caddy is down; following it");
        state.live = value.and_then(|v| state.find(&v));
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // tests fail loudly
mod tests {
    use super::*;
    use crate::consul::fake::FakeConsul;
    use crate::proxy::caddy::driver::State;

    #[test]
    fn caddy_follows_services_with_hind_or_traefik_tags_or_all_when_exposed_by_default() {
        let tags = |t: &[&str]| t.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
        assert!(relevant(&tags(&["https://a.example.org"]), false));
        assert!(relevant(&tags(&["traefik.enable=true"]), false));
        assert!(!relevant(&tags(&["urlprefix-a/", "http"]), false));
        assert!(relevant(&[], true));
    }

    #[tokio::test]
    async fn a_deleted_policy_key_stops_the_catch_up_of_a_caddy_that_is_gone() {
        let consul = FakeConsul::new();
        let model = Arc::new(crate::spec::load(
            b"apiVersion: proxy-operator.io/v1alpha1\nkind: ProxyConfig\nspec:\n  proxy: caddy\n",
        )
        .unwrap()
        .model()
        .clone());
        let shared = Shared {
            state: std::sync::Mutex::new(State::default()),
            kick: tokio::sync::Notify::new(),
            report: tokio::sync::watch::Sender::new(Report::default()),
        };
        shared.lock().live = Some(Live {
            policy: "p1".into(),
            model,
        });
        consul.set("po/traefik/caddy", "p1");
        recheck_kv(&consul, "po/traefik/caddy", &shared).await;
        assert!(
            shared.lock().live.is_some(),
            "the key still names our policy"
        );
        consul.remove("po/traefik/caddy");
        recheck_kv(&consul, "po/traefik/caddy", &shared).await;
        assert!(
            shared.lock().live.is_none(),
            "still loading a Caddy that was switched away"
        );
    }
}
