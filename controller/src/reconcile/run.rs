//! The run loop: passes at start, after each change of the config key (leading-edge debounce),
//! on requeue and at every resync; and what the loop reports beyond the status document (the
//! HTTP surface, the metrics, the trace of each rollout).

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use sha2::{Digest as _, Sha256};
use tokio::time::Instant;
use tracing::{Span, debug, info, info_span};

use super::{Backoff, MAX_BACKOFF, MAX_DEBOUNCE_FACTOR, MAX_WATCH_WAIT, MIN_BACKOFF, Operator};
use crate::consul::{ConsulApi, KvPair};
use crate::metrics::{PassOutcome, RolloutStage, RolloutTimer, outcome_name};
use crate::nomad::NomadApi;
use crate::proxy::probe::ProxyProbe;
use crate::rollout::Phase;
use crate::server::{SpecSummary, Surface};
use crate::spec::{self, status::Outcome, status::ProxyStatus};
use crate::status::{differs, short};
use crate::transport::{QueryOptions, Watch};

impl<C, N, P> Operator<C, N, P>
where
    C: ConsulApi + 'static,
    N: NomadApi,
    P: ProxyProbe,
{
    /// Runs passes until `shutdown` resolves: at start, after each change of the config key,
    /// when a pass asks to be requeued, and every resync interval.
    ///
    /// Debounce is leading-edge: an edit that finds the loop idle (no pass for a debounce
    /// interval) is looked at at once. Edits that arrive while a pass runs, or within the
    /// debounce interval after one, wait for a quiet period (every further edit restarts it, up
    /// to a cap) and become one trailing pass over the last document, so a burst of edits is
    /// two passes at most, never a rollout of a document in the middle of the burst.
    pub async fn run(mut self, shutdown: impl Future<Output = ()> + Send) {
        tokio::pin!(shutdown);
        let (tx, mut changes) = tokio::sync::watch::channel(0u64);
        let watcher = tokio::spawn(watch_config(
            Arc::clone(&self.consul),
            self.config.config_key(),
            self.config.resync.min(MAX_WATCH_WAIT),
            tx.clone(),
            WatchHooks {
                surface: self.observer.surface.clone(),
                proxy_host: self.config.proxy_host.clone(),
            },
        ));
        // Under election the surface follows the leader's status while this replica does
        // not lead, and shows what this loop writes while it does.
        let role =
            self.observer
                .surface
                .clone()
                .zip(self.leadership())
                .map(|(surface, leadership)| {
                    tokio::spawn(crate::server::serve_by_role(
                        Arc::clone(&self.consul),
                        self.config.prefix.clone(),
                        self.config.proxy_host.clone(),
                        surface,
                        leadership,
                    ))
                });
        let users_watcher = tokio::spawn(self.users.watcher(
            Arc::clone(&self.consul),
            self.config.resync.min(MAX_WATCH_WAIT),
            tx,
        ));
        let mut watching = true;
        let mut next_pass = Instant::now();
        // When the next resync is due. A requeue the last pass asked for (a backoff, a preflight
        // recheck) comes sooner but does not move it, so a loop that keeps requeueing still
        // resyncs, and counts its passes, on time.
        let mut next_resync = Instant::now() + self.config.resync;
        // When the last pass ended: an edit within a debounce interval of it is trailing.
        let mut last_pass_end: Option<Instant> = None;
        'run: loop {
            let mut resync = false;
            tokio::select! {
                () = &mut shutdown => break,
                () = tokio::time::sleep_until(next_pass) => resync = Instant::now() >= next_resync,
                changed = changes.changed(), if watching => {
                    if changed.is_err() {
                        // The watcher ended; keep running on requeues and resyncs.
                        watching = false;
                        continue;
                    }
                    let leading = last_pass_end
                        .is_none_or(|end| Instant::now() >= end + self.config.debounce);
                    let mut seen = Some(*changes.borrow_and_update()).filter(|i| *i != 0);
                    if !leading {
                        // A quiet period: every further edit restarts it (up to a cap). The
                        // watch is paced, so it may not report edits inside the burst: when
                        // the quiet period ends, one read of the key tells whether it moved.
                        let cap = Instant::now() + self.config.debounce * MAX_DEBOUNCE_FACTOR;
                        seen = self.config_index().await;
                        loop {
                            let quiet = (Instant::now() + self.config.debounce).min(cap);
                            tokio::select! {
                                () = &mut shutdown => break 'run,
                                () = tokio::time::sleep_until(quiet) => {
                                    let now = self.config_index().await;
                                    if now == seen || Instant::now() >= cap {
                                        seen = now;
                                        break;
                                    }
                                    seen = now;
                                }
                                changed = changes.changed(), if watching => {
                                    if changed.is_err() {
                                        watching = false;
                                    }
                                }
                            }
                        }
                        changes.borrow_and_update();
                    }
                    // A pass already read this version of the document (the watch reports
                    // an edit the trailing pass of a burst has seen), and the users key it
                    // references did not move either.
                    if seen.is_some_and(|index| index == self.last_pass_index)
                        && !self.users.moved()
                        && self.phase.is_at_rest()
                        && self.store.write_error.is_none()
                    {
                        continue;
                    }
                }
            }
            // Under election: only as leader, cancelled when the term ends or on shutdown.
            let Some(action) = self.elected_pass(resync, shutdown.as_mut()).await else {
                break;
            };
            let now = Instant::now();
            last_pass_end = Some(now);
            if resync || action.requeue_after.is_none() {
                next_resync = now + self.config.resync;
            }
            next_pass = action
                .requeue_after
                .map_or(next_resync, |after| (now + after).min(next_resync));
        }
        watcher.abort();
        users_watcher.abort();
        if let Some(role) = role {
            role.abort();
        }
        self.stop_leading().await;
        info!("operator stopped");
    }

    /// The config key's ModifyIndex now (`None`: absent or unreadable).
    pub(super) async fn config_index(&self) -> Option<u64> {
        match self
            .consul
            .kv_get(&self.config.config_key(), QueryOptions::NOW)
            .await
        {
            Ok((pair, _)) => pair.map(|p| p.modify_index),
            Err(_) => None,
        }
    }

    /// After each pass (`at_rest_before`: the phase it started from, when at rest): the
    /// rollout's trace and timer move on (or end), the metrics count the pass, and the surface
    /// gets the status when it was written and says something new.
    pub(super) fn pass_finished(&mut self, at_rest_before: Option<&Phase>) {
        let now = Instant::now();
        let started = at_rest_before.is_some_and(|before| self.phase != *before);
        let metrics = self.observer.surface.as_ref().map(|s| s.metrics().clone());
        if started {
            let digest = self
                .phase
                .change()
                .map(|c| c.digest.clone())
                .or_else(|| self.store.status.last_attempted_digest.clone())
                .unwrap_or_default();
            self.observer.rollout_started(&digest);
        } else if let Some((root, _, _)) = self.observer.planning.take() {
            root.record("outcome", "none");
        }
        if let Some(mut trace) = self.observer.rollout.take() {
            match outcome_of(&self.phase) {
                Some(outcome) if self.phase.is_at_rest() => {
                    trace.root.record("outcome", outcome_name(outcome));
                    if let Some(metrics) = &metrics {
                        trace.timer.finish(outcome, now.into_std(), metrics);
                    }
                }
                _ => {
                    if let Some(stage) = stage_of(&self.phase) {
                        trace.enter(stage, now);
                    }
                    self.observer.rollout = Some(trace);
                }
            }
        }
        let Some(surface) = self.observer.surface.clone() else {
            return;
        };
        let error = self
            .observer
            .pass_error
            .take()
            .or_else(|| self.store.write_error.as_ref().map(super::Error::label));
        surface.metrics().pass_completed(match error {
            Some(label) => PassOutcome::Error(label),
            None => PassOutcome::Ok,
        });
        surface.pass_completed();
        // What the page shows is what Consul holds: a status whose write failed (it is
        // retried) or was paced is not shown until it is written.
        let written = self.store.written();
        let fresh = self
            .observer
            .published
            .as_ref()
            .is_none_or(|p| differs(p, written));
        if self.store.write_error.is_none() && fresh {
            surface.publish_status(written);
            self.observer.published = Some(written.clone());
        }
    }
}

/// What the loop reports beyond the status document. Inert (no metrics, no page) without a
/// surface; the trace spans are made either way, and cost nothing without a subscriber.
#[derive(Debug, Default)]
pub(super) struct Observer {
    pub(super) surface: Option<Surface>,
    /// The status last published to the surface.
    published: Option<ProxyStatus>,
    /// The rollout in flight: its root span, the span of its stage, its timer.
    rollout: Option<RolloutTrace>,
    /// The pass at rest now running, in a root span of its own until it turns out to start a
    /// rollout (then that root is the rollout's): root, plan span, start.
    planning: Option<(Span, Span, Instant)>,
    /// Why the pass now running failed (the error variant), if it did.
    pass_error: Option<&'static str>,
}

impl Observer {
    /// Called before a pass in `phase`; returns the span the pass runs in: the plan of a
    /// possible rollout at rest, the stage of the rollout in flight.
    pub(super) fn pass_starting(&mut self, phase: &Phase, now: Instant) -> Span {
        self.pass_error = None;
        if phase.is_at_rest() {
            // Every pass at rest plans, and may start a rollout: its plan is the first child of
            // the rollout's trace. When it starts none, the root closes as `outcome=none`.
            self.rollout = None;
            let root = info_span!(
                parent: None,
                "rollout",
                digest = tracing::field::Empty,
                outcome = tracing::field::Empty
            );
            let plan = info_span!(parent: &root, "plan");
            self.planning = Some((root, plan.clone(), now));
            return plan;
        }
        let stage = stage_of(phase).unwrap_or(RolloutStage::Verify);
        let trace = self.rollout.get_or_insert_with(|| {
            // A rollout resumed from its journal by a restarted operator: its trace starts here.
            let root = info_span!(
                parent: None,
                "rollout",
                digest = phase.change().map(|c| short(&c.digest).to_owned()),
                outcome = tracing::field::Empty
            );
            let stage_span = stage_span(&root, stage);
            let mut timer = RolloutTimer::default();
            timer.enter(stage, now.into_std());
            RolloutTrace {
                root,
                stage,
                stage_span,
                timer,
            }
        });
        trace.enter(stage, now);
        trace.stage_span.clone()
    }

    /// The pass is about to carry out the machine's effects: `stage` is `Apply` when they carry
    /// the change forward, `Rollback` when they revert it. Returns their span, a child of the
    /// rollout's root (the API calls they make nest under it). A pass at rest that gets here
    /// has started a rollout (`digest`): its planning root becomes the rollout's.
    pub(super) fn effects_starting(
        &mut self,
        stage: RolloutStage,
        digest: &str,
        now: Instant,
    ) -> Span {
        self.rollout_started(digest);
        match &mut self.rollout {
            Some(trace) => {
                trace.enter(stage, now);
                trace.stage_span.clone()
            }
            // Unreachable in practice (a pass in flight always has a trace): the effects then
            // run in the pass's own span.
            None => Span::current(),
        }
    }

    /// The pass at rest now running started a rollout of `digest`: its root span becomes the
    /// rollout's, with its plan span as the first stage. Nothing when it already did.
    fn rollout_started(&mut self, digest: &str) {
        if let Some((root, plan, t0)) = self.planning.take() {
            root.record("digest", short(digest));
            let mut timer = RolloutTimer::default();
            timer.enter(RolloutStage::Plan, t0.into_std());
            self.rollout = Some(RolloutTrace {
                root,
                stage: RolloutStage::Plan,
                stage_span: plan,
                timer,
            });
        }
    }

    /// A term starts: the surface was showing what the last leader wrote (followed), so the
    /// first status this leader holds is published whether or not it differs from the last
    /// one this replica published.
    pub(super) fn term_started(&mut self) {
        self.published = None;
    }

    /// The pass failed; `label` is the error variant ([`super::Error::label`]).
    pub(super) fn pass_failed(&mut self, label: &'static str) {
        self.pass_error = Some(label);
    }
}

/// One rollout's trace and stage timer.
#[derive(Debug)]
struct RolloutTrace {
    root: Span,
    stage: RolloutStage,
    stage_span: Span,
    timer: RolloutTimer,
}

impl RolloutTrace {
    /// Moves to `stage` (a new child span of the root) unless the rollout is in it already.
    fn enter(&mut self, stage: RolloutStage, now: Instant) {
        self.timer.enter(stage, now.into_std());
        if stage != self.stage {
            self.stage = stage;
            self.stage_span = stage_span(&self.root, stage);
        }
    }
}

/// The span of one stage of a rollout, a child of its root.
fn stage_span(root: &Span, stage: RolloutStage) -> Span {
    match stage {
        RolloutStage::Plan => info_span!(parent: root, "plan"),
        RolloutStage::Apply => info_span!(parent: root, "apply"),
        RolloutStage::Verify => info_span!(parent: root, "verify"),
        RolloutStage::Rollback => info_span!(parent: root, "rollback"),
    }
}

/// The stage a rollout in `phase` is in (`None` at rest).
fn stage_of(phase: &Phase) -> Option<RolloutStage> {
    match phase {
        Phase::Applying { .. } => Some(RolloutStage::Apply),
        Phase::Verifying { .. } => Some(RolloutStage::Verify),
        Phase::RollingBack { .. } => Some(RolloutStage::Rollback),
        Phase::Idle | Phase::Ready { .. } | Phase::RolledBack { .. } | Phase::Degraded { .. } => {
            None
        }
    }
}

/// How a rollout that ended in `phase` went: the outcome of the history entry it adds.
fn outcome_of(phase: &Phase) -> Option<Outcome> {
    match phase {
        Phase::Ready { .. } => Some(Outcome::Succeeded),
        Phase::RolledBack { .. } => Some(Outcome::RolledBack),
        Phase::Degraded { held: true, .. } => Some(Outcome::Held),
        Phase::Degraded { held: false, .. } => Some(Outcome::Failed),
        Phase::Idle
        | Phase::Applying { .. }
        | Phase::Verifying { .. }
        | Phase::RollingBack { .. } => None,
    }
}

/// What the config watch reports besides the change itself.
pub(super) struct WatchHooks {
    surface: Option<Surface>,
    /// `--proxy-host`, for the dashboard link of the page.
    proxy_host: String,
}

impl WatchHooks {
    /// Reports nothing: for watches of keys that are not the document (the users key holds
    /// secrets and must never be parsed or published as one).
    pub(super) fn none() -> Self {
        Self {
            surface: None,
            proxy_host: String::new(),
        }
    }

    /// The watch answered (first answer: it is established).
    fn woke(&self, first: bool) {
        if let Some(surface) = &self.surface {
            surface.metrics().watch_woke("config");
            if first {
                surface.watch_established();
            }
        }
    }

    /// A new version of the document: its index and digest for the metrics, its policies and
    /// links for the page (a document that does not validate keeps the last summary).
    fn document(&self, pair: &KvPair) {
        let Some(surface) = &self.surface else {
            return;
        };
        match spec::load(&pair.value) {
            Ok(spec) => {
                surface
                    .metrics()
                    .document_observed(pair.modify_index, spec.digest());
                surface.publish_spec(SpecSummary::of(&spec, &self.proxy_host));
            }
            Err(_) => {
                let digest = format!("{:x}", Sha256::digest(&pair.value));
                surface
                    .metrics()
                    .document_observed(pair.modify_index, &digest);
            }
        }
    }
}

/// Watches the config key (or any key) with blocking queries and signals each change.
pub(super) async fn watch_config<C: ConsulApi>(
    consul: Arc<C>,
    key: String,
    wait: Duration,
    tx: tokio::sync::watch::Sender<u64>,
    hooks: WatchHooks,
) {
    let mut watch = Watch::new(wait);
    let mut backoff = Backoff::new(MIN_BACKOFF, MAX_BACKOFF);
    let mut established = false;
    loop {
        match watch.next(|q| consul.kv_get(&key, q)).await {
            Ok(update) => {
                backoff.reset();
                hooks.woke(!established);
                established = true;
                // The loop is woken first: parsing the document again for the page and the
                // metrics is not on the path of an edit to the proxy.
                if matches!(
                    update.change,
                    crate::transport::Change::Advanced | crate::transport::Change::Reset
                ) {
                    debug!(index = update.meta.index, "config key changed");
                    if tx.send(update.meta.index).is_err() {
                        return;
                    }
                }
                if update.change.is_change()
                    && let Some(pair) = &update.value
                {
                    hooks.document(pair);
                }
            }
            Err(e) => {
                let delay = backoff.next().unwrap_or(MAX_BACKOFF);
                debug!(error = %e, ?delay, "config watch failed; retrying");
                tokio::time::sleep(delay).await;
                // The error may have hidden a change: read at once next time, and let the loop
                // look once Consul answers again.
                watch.reset();
                if tx.send(0).is_err() {
                    return;
                }
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::panic)] // tests fail loudly
mod tests {
    use super::*;
    use crate::consul::fake::FakeConsul;
    use crate::metrics::Metrics;
    use crate::nomad::fake::FakeNomad;
    use crate::proxy::probe::fake::FakeProbe;
    use crate::reconcile::Config;
    use crate::spec::status::Phase as StatusPhase;

    /// A paused document (a pass reads it, nothing is rolled out) that differs by `n`.
    fn doc(n: u32) -> String {
        format!(
            "apiVersion: proxy-operator.io/v1alpha1\nkind: ProxyConfig\nspec:\n  proxy: traefik\n  paused: true\n  middlewares:\n    rateLimit: {{average: {n}, burst: 50}}\n"
        )
    }

    fn passes(surface: &Surface) -> u64 {
        let text = surface.metrics().encode().unwrap();
        text.lines()
            .filter(|l| l.starts_with("proxy_operator_reconcile_passes_total{"))
            .map(|l| l.rsplit(' ').next().unwrap().parse::<u64>().unwrap())
            .sum()
    }

    fn status(consul: &FakeConsul) -> Option<ProxyStatus> {
        consul
            .value("po/status")
            .map(|v| serde_json::from_slice(&v).unwrap())
    }

    /// Starts the loop on the fakes with `debounce`; returns the consul fake, the surface and
    /// the stop handle.
    fn start(
        debounce: Duration,
    ) -> (
        FakeConsul,
        Surface,
        tokio::sync::oneshot::Sender<()>,
        tokio::task::JoinHandle<()>,
    ) {
        let consul = FakeConsul::new();
        let surface = Surface::new(Metrics::new());
        let op = Operator::new(
            Config::new("po").debounce(debounce),
            consul.clone(),
            FakeNomad::new(),
            FakeProbe::healthy(),
        )
        .with_surface(surface.clone());
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(op.run(async {
            stopped.await.ok();
        }));
        (consul, surface, stop, task)
    }

    #[tokio::test(start_paused = true)]
    async fn a_single_edit_to_an_idle_loop_is_read_at_once_without_waiting_for_the_debounce() {
        let debounce = Duration::from_secs(10);
        let (consul, surface, stop, task) = start(debounce);
        tokio::time::sleep(debounce * 2).await;
        assert_eq!(passes(&surface), 1, "the pass at start");
        let edited = Instant::now();
        let index = consul.set("po/config", doc(7));
        loop {
            if status(&consul).is_some_and(|s| s.observed_index == index) {
                break;
            }
            assert!(
                edited.elapsed() < debounce,
                "the edit waited for the debounce interval"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert!(
            edited.elapsed() < Duration::from_millis(100),
            "{:?}",
            edited.elapsed()
        );
        assert_eq!(status(&consul).unwrap().phase, StatusPhase::Paused);
        assert_eq!(passes(&surface), 2);
        stop.send(()).unwrap();
        task.await.unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn a_burst_of_edits_is_one_leading_and_one_trailing_pass_over_the_last_document() {
        let debounce = Duration::from_secs(2);
        let (consul, surface, stop, task) = start(debounce);
        tokio::time::sleep(debounce * 2).await;
        let before = passes(&surface);
        let mut last = 0;
        for n in 1..=5 {
            last = consul.set("po/config", doc(n));
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        tokio::time::sleep(debounce * 10).await;
        assert_eq!(
            passes(&surface) - before,
            2,
            "the first edit at once, the other four as one pass"
        );
        let s = status(&consul).unwrap();
        assert_eq!(
            s.observed_index, last,
            "the trailing pass read the last edit"
        );
        stop.send(()).unwrap();
        task.await.unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn the_surface_gets_readiness_the_spec_summary_and_the_written_status() {
        let (consul, surface, stop, task) = start(Duration::from_millis(50));
        consul.set("po/config", doc(3));
        let metrics = loop {
            tokio::time::sleep(Duration::from_millis(50)).await;
            let text = surface.metrics().encode().unwrap();
            if text.contains("proxy_operator_phase{phase=\"Paused\"} 1") {
                break text;
            }
        };
        assert!(
            metrics.contains("proxy_operator_watch_wakeups_total{watch=\"config\"}"),
            "{metrics}"
        );
        assert!(
            metrics.contains("proxy_operator_config_generation 1"),
            "{metrics}"
        );
        let ready = surface.readiness();
        assert!(ready.watch_established && ready.pass_completed);
        let spec = surface.spec().unwrap();
        assert!(
            spec.policies
                .iter()
                .any(|p| p.starts_with("rate limit: 3 requests")),
            "{:?}",
            spec.policies
        );
        assert_eq!(surface.status().unwrap().phase, StatusPhase::Paused);
        stop.send(()).unwrap();
        task.await.unwrap();
    }

    // === basic-auth users of the entry point and of every policy set ===

    /// A paused document whose entry point and policy set `admin` take their users from `a`
    /// and `b`.
    fn users_doc(proxy: &str, a: Option<&str>, b: &str) -> String {
        let entry = a.map_or(String::new(), |a| {
            format!("  middlewares:\n    basicAuth:\n      usersFrom: {{consulKey: {a}}}\n")
        });
        format!(
            "apiVersion: proxy-operator.io/v1alpha1\nkind: ProxyConfig\nspec:\n  proxy: {proxy}\n  paused: true\n{entry}  policies:\n    admin:\n      basicAuth:\n        usersFrom: {{consulKey: {b}}}\n"
        )
    }

    const APR1: &str = "u:$apr1$abcdefgh$h9FWgUz3n9YxylKLlR5SQ/\n";

    #[tokio::test(start_paused = true)]
    async fn an_edit_to_any_users_key_the_document_references_starts_a_pass_and_others_do_not() {
        let debounce = Duration::from_millis(200);
        let (consul, surface, stop, task) = start(debounce);
        for key in ["secrets/a", "secrets/b", "secrets/c"] {
            consul.set(key, APR1);
        }
        consul.set(
            "po/config",
            users_doc("traefik", Some("secrets/a"), "secrets/b"),
        );
        tokio::time::sleep(debounce * 10).await;
        assert_eq!(status(&consul).unwrap().phase, StatusPhase::Paused);
        let mut before = passes(&surface);
        for key in ["secrets/b", "secrets/a"] {
            consul.set(
                key,
                format!("{APR1}v:$apr1$abcdefgh$h9FWgUz3n9YxylKLlR5SQ/\n"),
            );
            tokio::time::sleep(debounce * 10).await;
            assert_eq!(passes(&surface), before + 1, "an edit of {key}");
            before += 1;
        }
        // The set moves to another key: the old one is no longer watched, the new one is.
        consul.set("po/config", users_doc("traefik", None, "secrets/c"));
        tokio::time::sleep(debounce * 10).await;
        before = passes(&surface);
        consul.set("secrets/b", APR1);
        consul.set("secrets/a", APR1);
        tokio::time::sleep(debounce * 10).await;
        assert_eq!(passes(&surface), before, "keys the document left");
        consul.set("secrets/c", format!("{APR1}{APR1}"));
        tokio::time::sleep(debounce * 10).await;
        assert_eq!(passes(&surface), before + 1, "the set's new key");
        stop.send(()).unwrap();
        task.await.unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn a_set_s_users_that_are_absent_unreadable_empty_or_not_bcrypt_on_caddy_name_the_field_never_the_hash()
     {
        const SENTINEL: &str = "SENTINELsentinelSENTINEL";
        let debounce = Duration::from_millis(50);
        let (consul, _surface, stop, task) = start(debounce);
        consul.set("po/config", users_doc("caddy", None, "secrets/admin"));
        let settle = || tokio::time::sleep(debounce * 20);
        let text =
            |consul: &FakeConsul| String::from_utf8(consul.value("po/status").unwrap()).unwrap();
        settle().await;
        let absent = text(&consul);
        assert!(
            absent.contains(
                "Consul key secrets/admin (spec.policies.admin.basicAuth.usersFrom): absent"
            ),
            "{absent}"
        );
        for (users, says) in [
            (
                format!("u:$apr1${SENTINEL}$h9FWgUz3n9YxylKLlR5SQ/\n").into_bytes(),
                "spec.policies.admin.basicAuth.usersFrom (line 1)",
            ),
            (
                [&[0xff, 0xfe][..], SENTINEL.as_bytes()].concat(),
                "(spec.policies.admin.basicAuth.usersFrom): not UTF-8",
            ),
            (
                b"# nobody yet\n".to_vec(),
                "spec.policies.admin.basicAuth.usersFrom: holds no user:hash line",
            ),
        ] {
            consul.set("secrets/admin", &users);
            settle().await;
            let status = text(&consul);
            assert!(status.contains(says), "{says}: {status}");
            assert!(!status.contains("SENTINEL"), "{status}");
        }
        // A good bcrypt line carrying the sentinel: Paused, and the status never shows it.
        consul.set(
            "secrets/admin",
            format!("u:$2y$04${SENTINEL}abcdefghijklmnopqrstuvwxyz012\n"),
        );
        settle().await;
        let good = text(&consul);
        assert_eq!(
            status(&consul).unwrap().phase,
            StatusPhase::Paused,
            "{good}"
        );
        assert!(!good.contains("SENTINEL"), "{good}");
        stop.send(()).unwrap();
        task.await.unwrap();
    }
}
