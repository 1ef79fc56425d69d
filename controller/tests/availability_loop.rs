//! Availability (issue 13) on the in-memory fakes: a rollback always has somewhere to go while a
//! good version exists, and a forged journal never points the operator's probes elsewhere.

#![allow(clippy::unwrap_used, clippy::panic)] // tests fail loudly

use std::time::Duration;

use proxy_operator::consul::fake::FakeConsul;
use proxy_operator::nomad::fake::FakeNomad;
use proxy_operator::proxy;
use proxy_operator::proxy::probe::fake::FakeProbe;
use proxy_operator::reconcile::{Action, Config, Operator, PREFLIGHT_RECHECK};
use proxy_operator::render::{self, RenderContext};
use proxy_operator::spec::{self, status::Phase, status::ProxyStatus};

const PREFIX: &str = "po";
const CONFIG: &str = "po/config";
const STATUS: &str = "po/status";
const JOURNAL: &str = "po/rollout";
const JOB: &str = "proxy";
/// The second handover slot of `JOB`.
const JOB_B: &str = "proxy-b";

fn with_cpu(cpu: u32) -> String {
    format!(
        "apiVersion: proxy-operator.io/v1alpha1
kind: ProxyConfig
spec:
  proxy: traefik
  rollout:
    healthyDeadline: 20s
    minHealthyTime: 2s
  job:
    resources:
      cpu: {cpu}
"
    )
}

struct World {
    consul: FakeConsul,
    nomad: FakeNomad,
    probe: FakeProbe,
    op: Operator<FakeConsul, FakeNomad, FakeProbe>,
}

fn operator(
    consul: &FakeConsul,
    nomad: &FakeNomad,
    probe: &FakeProbe,
) -> Operator<FakeConsul, FakeNomad, FakeProbe> {
    Operator::new(
        Config::new(PREFIX),
        consul.clone(),
        nomad.clone(),
        probe.clone(),
    )
}

fn world() -> World {
    let (consul, nomad, probe) = (FakeConsul::new(), FakeNomad::new(), FakeProbe::healthy());
    let op = operator(&consul, &nomad, &probe);
    World {
        consul,
        nomad,
        probe,
        op,
    }
}

impl World {
    fn put(&self, document: &str) {
        self.consul.set(CONFIG, document);
        let spec = spec::load(document.as_bytes()).unwrap();
        let ctx = RenderContext {
            prefix: PREFIX.into(),
            owner: PREFIX.into(),
            basic_auth_users: None,
            ..RenderContext::default()
        };
        let rendered = render::render(&spec, &ctx).unwrap();
        self.probe.set_enabled(&proxy::traefik::expected_entries(
            &rendered.traefik_kv,
            "po/traefik/",
        ));
    }

    fn status(&self) -> ProxyStatus {
        serde_json::from_slice(&self.consul.value(STATUS).unwrap()).unwrap()
    }

    /// Marks the allocations of both handover slots (whichever exist) healthy or not.
    fn set_health(&self, healthy: bool) {
        for id in [JOB, JOB_B] {
            if self.nomad.job(id).is_some() {
                self.nomad.set_allocation_health(id, healthy);
            }
        }
    }

    /// The serving slot's job: the one not stopped.
    fn serving(&self) -> proxy_operator::nomad::Job {
        [JOB, JOB_B]
            .into_iter()
            .filter_map(|id| self.nomad.job(id))
            .find(|j| !j.stop)
            .expect("a serving slot")
    }

    fn restart(&mut self) {
        self.op = operator(&self.consul, &self.nomad, &self.probe);
    }

    async fn until(&mut self, done: impl Fn(&Self) -> bool) -> Action {
        let mut action = self.op.reconcile().await;
        for _ in 0..100 {
            if done(self) {
                return action;
            }
            tokio::time::advance(action.requeue_after.unwrap_or(Duration::from_millis(250))).await;
            action = self.op.reconcile().await;
        }
        panic!(
            "never got there; phase {}; status {:#?}",
            self.op.phase().name(),
            self.op.status()
        );
    }

    async fn ready(&mut self, document: &str) {
        self.put(document);
        self.op.reconcile().await;
        // Setup, not the behaviour under test: the version's allocations report healthy on
        // every observation until the gate passes (marking them once races the allocation the
        // twin-backed fake places for the deployment).
        self.until(|w| {
            w.set_health(true);
            w.op.status().phase == Phase::Ready
        })
        .await;
    }

    /// Slot b's allocation crashes as soon as it is placed, until the rollout ends.
    async fn crash_slot_b_until_at_rest(&mut self) {
        self.until(|w| {
            w.nomad
                .crash_allocations(JOB_B, &[("Terminated", "Exit Code: 1")]);
            w.op.phase().is_at_rest()
        })
        .await;
    }

    /// A structural change whose new version turns unhealthy, to its end.
    async fn failing_change(&mut self, document: &str) {
        self.put(document);
        self.op.reconcile().await;
        assert_eq!(self.op.phase().name(), "Verifying");
        self.set_health(false);
        self.until(|w| w.op.phase().is_at_rest()).await;
    }
}

fn job_digest(job: &proxy_operator::nomad::Job) -> Option<String> {
    job.meta.get("proxy-operator/spec-digest").cloned()
}

// === rollback without status ===
//
// A Traefik structural change is a handover: the new version runs in the other job slot and a
// failure stops it, while the serving slot never changed. So no rollback target is needed, and
// a lost or unreadable status cannot leave a failed version serving. (Nomad's `Stable` versions
// stay the rollback target of changes made in place: Caddy, `plan::stable_rollback_target`.)

#[tokio::test(start_paused = true)]
async fn a_lost_status_document_still_ends_a_failed_handover_rolled_back_with_the_good_version_serving()
 {
    let mut w = world();
    w.ready(&with_cpu(100)).await;
    w.ready(&with_cpu(150)).await;
    let good = w.serving();
    assert_eq!(
        good.id, JOB_B,
        "the second version was handed over to slot b"
    );

    w.consul.remove(STATUS);
    w.consul.remove(JOURNAL);
    w.restart();
    w.failing_change(&with_cpu(200)).await;

    assert_eq!(w.status().phase, Phase::RolledBack, "{:?}", w.status());
    assert!(
        w.nomad.calls_of("job_revert").is_empty(),
        "nothing to revert"
    );
    let now = w.serving();
    assert_eq!(now.id, good.id, "the slot that served still serves");
    assert_eq!(job_digest(&now), job_digest(&good));
    assert_eq!(now.version, good.version, "never touched");
    assert!(
        w.nomad.job(JOB).unwrap().stop,
        "the failed new slot is stopped"
    );
}

#[tokio::test(start_paused = true)]
async fn an_unreadable_status_document_still_rolls_a_failed_change_back() {
    let mut w = world();
    w.ready(&with_cpu(100)).await;
    let good = w.nomad.job(JOB).unwrap();

    w.consul.set(STATUS, b"{\"phase\": \"Re");
    w.restart();
    w.failing_change(&with_cpu(200)).await;

    assert_eq!(w.status().phase, Phase::RolledBack, "{:?}", w.status());
    assert_eq!(job_digest(&w.serving()), job_digest(&good));
}

#[tokio::test(start_paused = true)]
async fn without_deployments_a_lost_status_still_rolls_a_crashing_handover_back() {
    // No deployments (a system job before Nomad 1.11): only the operator marks a version
    // stable; the handover needs no such record anyway, since the serving slot never changed.
    let mut w = world();
    w.nomad.set_deployments_enabled(false);
    w.put(&with_cpu(100));
    w.until(|w| w.op.status().phase == Phase::Ready).await;

    w.consul.remove(STATUS);
    w.restart();
    w.put(&with_cpu(200));
    w.op.reconcile().await;
    // The new slot's allocation crashes as soon as it is placed.
    w.crash_slot_b_until_at_rest().await;

    let status = w.status();
    assert_eq!(status.phase, Phase::RolledBack, "{status:?}");
    assert!(w.nomad.calls_of("job_revert").is_empty());
    assert!(w.nomad.job(JOB_B).unwrap().stop);
    assert!(
        !w.nomad.job(JOB).unwrap().stop,
        "the old slot never stopped"
    );
}

#[tokio::test(start_paused = true)]
async fn a_handover_needs_no_rollback_target_so_nomad_failing_to_list_versions_does_not_block_it() {
    let mut w = world();
    w.ready(&with_cpu(100)).await;
    w.consul.remove(STATUS);
    w.restart();
    // Marking the passed version stable read the versions once already.
    let reads = w.nomad.calls_of("job_versions").len();
    w.put(&with_cpu(200));
    w.nomad.fail_next(
        "job_versions",
        proxy_operator::nomad::Error::injected("versions", 503, "No cluster leader"),
    );
    w.op.reconcile().await;
    assert_eq!(w.nomad.calls_of("job_versions").len(), reads);
    let registers = w.nomad.calls_of("job_register").len();
    assert_eq!(registers, 2, "the new slot was registered");
    assert!(w.nomad.job(JOB_B).is_some());
    assert_eq!(w.op.phase().name(), "Verifying");
}

// === the journal is untrusted input ===

fn with_probe(cpu: u32) -> String {
    with_probe_header(cpu, "a")
}

/// [`with_probe`] with a response header `X-Test: value`: a policy-only change of it keeps the
/// serving slot and is gated on it.
fn with_probe_header(cpu: u32, value: &str) -> String {
    format!(
        "{}  middlewares:\n    securityHeaders:\n      headers:\n        X-Test: {value}\n  entryPoints:\n    web:\n      address: \":18080\"\n  rollout:\n    healthyDeadline: 20s\n    minHealthyTime: 2s\n    probes:\n      - host: app.example.test\n        path: /healthz\n        entryPoint: web\n        expectStatus: 200\n",
        with_cpu(cpu).replace(
            "  rollout:\n    healthyDeadline: 20s\n    minHealthyTime: 2s\n",
            ""
        )
    )
}

#[tokio::test(start_paused = true)]
async fn a_forged_journal_never_points_the_gate_at_another_host() {
    let mut w = world();
    w.ready(&with_probe(100)).await;
    // A policy change: a structural one would be a handover, which a restarted operator
    // abandons before observing any gate.
    w.put(&with_probe_header(100, "b"));
    w.op.reconcile().await;
    assert_eq!(w.op.phase().name(), "Verifying");
    let mut j: serde_json::Value =
        serde_json::from_slice(&w.consul.value(JOURNAL).unwrap()).unwrap();
    let gate = &mut j["change"]["gate"];
    assert!(gate["probes"][0]["address"].is_string(), "{gate}");
    gate["proxyApi"] = "http://169.254.169.254:80".into();
    gate["probes"][0]["address"] = "10.9.8.7:9200".into();
    w.consul.set(JOURNAL, serde_json::to_vec(&j).unwrap());

    w.restart();
    w.set_health(true);
    w.until(|w| w.op.phase().is_at_rest()).await;

    let targets = w.probe.targets();
    assert!(!targets.is_empty());
    for target in &targets {
        assert!(
            target.starts_with("http://127.0.0.1:") || target.starts_with("127.0.0.1:"),
            "the operator was made to reach {target}"
        );
    }
    assert!(targets.iter().any(|t| t == "127.0.0.1:9200"), "{targets:?}");
    assert!(
        targets.iter().any(|t| t == "http://127.0.0.1:80"),
        "{targets:?}"
    );
}

fn with_big_headers(n: usize, bytes: usize) -> String {
    let headers: String = (0..n)
        .map(|i| format!("        X-Big-{i}: \"{}\"\n", "a".repeat(bytes)))
        .collect();
    format!(
        "{}  middlewares:\n    securityHeaders:\n      headers:\n{headers}",
        with_cpu(100)
    )
}

#[tokio::test(start_paused = true)]
async fn a_rollout_whose_journal_cannot_fit_in_consul_is_blocked_with_a_clear_reason_and_writes_nothing()
 {
    let mut w = world();
    w.ready(&with_cpu(100)).await;
    let version = w.nomad.job(JOB).unwrap().version;
    let txns = w.consul.calls_of("txn").len();

    w.put(&with_big_headers(20, 10 * 1024));
    let action = w.op.reconcile().await;

    assert_eq!(action.requeue_after, None, "not retried in a loop");
    let status = String::from_utf8(w.consul.value(STATUS).unwrap()).unwrap();
    assert!(status.contains("JournalTooLarge"), "{status}");
    assert!(status.contains("rollout journal would be"), "{status}");
    assert!(w.consul.value(JOURNAL).is_none());
    assert!(w.op.phase().is_at_rest());
    assert_eq!(
        w.nomad.job(JOB).unwrap().version,
        version,
        "the job is untouched"
    );
    // Only the status write: no policy transaction.
    assert_eq!(w.consul.calls_of("txn").len(), txns + 1);
    assert!(
        w.consul
            .value(
                "po/traefik/http/middlewares/security-headers/headers/customResponseHeaders/X-Big-0"
            )
            .is_none()
    );
}

// === preflight before touching the running proxy ===

fn with_web_port(cpu: u32, port: u16) -> String {
    format!(
        "{}  entryPoints:\n    web:\n      address: \":{port}\"\n",
        with_cpu(cpu)
    )
}

fn held_port() -> std::net::TcpListener {
    std::net::TcpListener::bind(("0.0.0.0", 0)).unwrap()
}

#[tokio::test(start_paused = true)]
async fn a_structural_change_to_a_port_something_else_holds_is_invalid_and_touches_nothing() {
    let mut w = world();
    let free = held_port();
    let free_port = free.local_addr().unwrap().port();
    drop(free);
    w.ready(&with_web_port(100, free_port)).await;
    let before = w.nomad.job(JOB).unwrap();
    let registers = w.nomad.calls_of("job_register").len();

    let squatter = held_port();
    let taken = squatter.local_addr().unwrap().port();
    w.put(&with_web_port(100, taken));
    let action = w.op.reconcile().await;

    // The node is what is wrong, so the operator looks again soon rather than waiting for an edit.
    assert_eq!(action.requeue_after, Some(PREFLIGHT_RECHECK));
    let status = w.status();
    assert_eq!(status.phase, Phase::Invalid, "{status:?}");
    let text = serde_json::to_string(&status).unwrap();
    assert!(text.contains("spec.entryPoints.web.address"), "{text}");
    assert!(
        text.contains(&format!("port {taken} is already in use")),
        "{text}"
    );
    assert_eq!(
        w.nomad.calls_of("job_register").len(),
        registers,
        "nothing registered"
    );
    assert_eq!(w.nomad.job(JOB).unwrap().version, before.version);
    assert!(w.consul.value(JOURNAL).is_none());

    // Freed, the same document rolls out on the recheck, with no edit.
    drop(squatter);
    w.op.reconcile().await;
    assert_eq!(w.nomad.calls_of("job_register").len(), registers + 1);
}

#[tokio::test(start_paused = true)]
async fn a_port_the_running_proxy_job_holds_passes_preflight() {
    let mut w = world();
    let port = held_port().local_addr().unwrap().port();
    w.ready(&with_web_port(100, port)).await;
    // The running version reserves the port and now listens on it (the fake Nomad binds
    // nothing: this listener plays the running proxy's socket).
    let running_proxy = std::net::TcpListener::bind(("0.0.0.0", port)).unwrap();
    let registers = w.nomad.calls_of("job_register").len();
    w.put(&with_web_port(250, port));
    w.op.reconcile().await;
    assert_eq!(w.nomad.calls_of("job_register").len(), registers + 1);
    assert_eq!(w.op.phase().name(), "Verifying");
    drop(running_proxy);
}

// === both slots running with the journal lost ===
//
// A handover cut short (the operator gone before its switch, its journal lost with it) leaves
// both slots running. The older one served before; the newer never passed a gate anyone saw.

/// Both slots run `with_cpu(100)` (slot a) and `with_cpu(200)` (slot b, unverified), no journal.
async fn cut_short_handover() -> World {
    let mut w = world();
    w.ready(&with_cpu(100)).await;
    w.put(&with_cpu(200));
    w.op.reconcile().await;
    assert_eq!(w.op.phase().name(), "Verifying");
    assert!(!w.nomad.job(JOB).unwrap().stop && !w.nomad.job(JOB_B).unwrap().stop);
    w.consul.remove(JOURNAL);
    w.consul.remove(STATUS);
    w.restart();
    w
}

#[tokio::test(start_paused = true)]
async fn with_the_journal_lost_a_newer_slot_that_passes_is_kept_and_the_older_stops_only_after() {
    let mut w = cut_short_handover().await;
    let stops = w.nomad.calls_of("job_stop").len();
    w.op.reconcile().await;
    assert_eq!(
        w.nomad.calls_of("job_stop").len(),
        stops,
        "nothing stops before the newer slot passes"
    );
    w.until(|w| {
        w.set_health(true);
        w.nomad.job(JOB).unwrap().stop
    })
    .await;
    assert!(!w.nomad.job(JOB_B).unwrap().stop, "the newer slot serves");
    w.until(|w| w.op.phase().is_at_rest()).await;
    let status = w.status();
    assert_eq!(status.phase, Phase::Ready, "{status:?}");
    assert_eq!(
        status.last_good_job.map(|j| j.job_id).as_deref(),
        Some(JOB_B)
    );
}

#[tokio::test(start_paused = true)]
async fn with_the_journal_lost_a_newer_slot_that_fails_is_stopped_and_the_older_keeps_serving() {
    let mut w = cut_short_handover().await;
    let good = w.nomad.job(JOB).unwrap();
    w.op.reconcile().await;
    w.crash_slot_b_until_at_rest().await;
    assert!(
        w.nomad.job(JOB_B).unwrap().stop,
        "the unverified slot is stopped"
    );
    let serving = w.nomad.job(JOB).unwrap();
    assert!(!serving.stop, "the older slot never stopped");
    assert_eq!(job_digest(&serving), job_digest(&good));
    assert_eq!(w.status().phase, Phase::RolledBack, "{:?}", w.status());
}

#[tokio::test(start_paused = true)]
async fn an_operator_restarted_mid_handover_into_slot_b_trusts_its_journal_and_starts_the_handover_over()
 {
    let mut w = world();
    w.ready(&with_cpu(100)).await;
    w.put(&with_cpu(200));
    w.op.reconcile().await;
    assert_eq!(w.op.phase().name(), "Verifying");
    assert!(w.consul.value(JOURNAL).is_some());
    let stops = w.nomad.calls_of("job_stop").len();

    // The journal names job proxy-b while the document names proxy: the same job's other slot.
    w.restart();
    w.op.reconcile().await;
    assert_eq!(
        w.nomad.calls_of("job_stop").len(),
        stops + 1,
        "the unverified new slot is stopped first (abandoned), not left beside the old one"
    );
    assert!(w.nomad.job(JOB_B).unwrap().stop);
    assert!(
        !w.nomad.job(JOB).unwrap().stop,
        "the old slot never stopped"
    );
    w.until(|w| {
        w.set_health(true);
        w.op.status().phase == Phase::Ready && !w.nomad.job(JOB_B).unwrap().stop
    })
    .await;
    w.until(|w| w.op.phase().is_at_rest()).await;
    assert!(
        w.nomad.job(JOB).unwrap().stop,
        "handed over again, then the old slot stopped"
    );
}
