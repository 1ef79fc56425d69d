//! The whole loop on the in-memory fakes: every assertion is on what the operator wrote (the
//! fakes' recorded calls, the KV tree, the job versions) and on the status document it left.

#![allow(clippy::unwrap_used, clippy::panic)] // tests fail loudly

use std::time::Duration;

use proxy_operator::consul::fake::FakeConsul;
use proxy_operator::consul::{self, ConsulApi};
use proxy_operator::nomad::fake::FakeNomad;
use proxy_operator::proxy;
use proxy_operator::proxy::probe::fake::FakeProbe;
use proxy_operator::reconcile::{Action, Config, Operator, TERMINAL_RETRY};
use proxy_operator::render::{self, RenderContext};
use proxy_operator::spec::{self, status::Phase, status::ProxyStatus};
use proxy_operator::transport::QueryOptions;
use serde_json::json;

const PREFIX: &str = "po";
const CONFIG: &str = "po/config";
const STATUS: &str = "po/status";
const JOB: &str = "proxy";

// === fixtures ===

fn doc(extra: &str) -> String {
    format!(
        "apiVersion: proxy-operator.io/v1alpha1
kind: ProxyConfig
spec:
  proxy: traefik
  rollout:
    healthyDeadline: 20s
    minHealthyTime: 2s
{extra}"
    )
}

/// A policy-only edit: a response header.
fn with_header(value: &str) -> String {
    doc(&format!(
        "  middlewares:\n    securityHeaders:\n      headers:\n        X-Edition: \"{value}\"\n"
    ))
}

/// A structural edit: the job's resources.
fn with_cpu(cpu: u32, nonce: Option<&str>) -> String {
    let nonce = nonce.map_or(String::new(), |n| format!("  retryNonce: \"{n}\"\n"));
    doc(&format!(
        "  job:\n    resources:\n      cpu: {cpu}\n{nonce}"
    ))
}

struct World {
    consul: FakeConsul,
    nomad: FakeNomad,
    probe: FakeProbe,
    op: Operator<FakeConsul, FakeNomad, FakeProbe>,
}

/// These scenarios are the rollout *in place* (a new version of the serving job, reverted on
/// failure): what a Caddy gets, and a Traefik whose second handover slot is not the operator's.
/// A foreign job holds slot b (`proxy-b`), so every structural change here goes in place. The
/// handover is tested in `rollout::tests::handover`, `plan::tests::handover`,
/// `tests/availability_loop.rs` and end to end in `tests/handover.rs`.
fn world() -> World {
    let consul = FakeConsul::new();
    let nomad = FakeNomad::new();
    nomad.seed_job(&json!({
        "ID": "proxy-b", "Name": "proxy-b", "Type": "system", "TaskGroups": [],
        "Meta": {"proxy-operator/owner": "someone-else"}
    }));
    let probe = FakeProbe::healthy();
    let op = Operator::new(
        Config::new(PREFIX),
        consul.clone(),
        nomad.clone(),
        probe.clone(),
    );
    World {
        consul,
        nomad,
        probe,
        op,
    }
}

impl World {
    /// Puts a document and makes the fake proxy report everything it renders as loaded.
    fn put(&self, document: &str) {
        self.consul.set(CONFIG, document);
        if let Ok(spec) = spec::load(document.as_bytes()) {
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
    }

    fn status(&self) -> ProxyStatus {
        let value = self
            .consul
            .value(STATUS)
            .expect("a status document was written");
        serde_json::from_slice(&value).unwrap()
    }

    fn writes_to_nomad(&self) -> Vec<&'static str> {
        self.nomad
            .calls()
            .into_iter()
            .map(|c| c.op)
            .filter(|op| {
                matches!(
                    *op,
                    "job_register" | "job_revert" | "job_stop" | "deployment_fail"
                )
            })
            .collect()
    }

    fn writes_to_consul(&self) -> Vec<String> {
        self.consul
            .calls()
            .into_iter()
            .filter(|c| matches!(c.op, "txn" | "kv_put" | "kv_delete"))
            .map(|c| format!("{} {}", c.op, c.target))
            .collect()
    }

    /// Runs passes, advancing paused time by what each asks, until `done` or 100 passes.
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
            "never got there; phase {}, status {:?}",
            self.op.phase().name(),
            self.op.status().phase
        );
    }

    /// From nothing to Ready on `document`, the deployment turning healthy when asked.
    async fn ready(&mut self, document: &str) {
        self.put(document);
        self.op.reconcile().await;
        self.nomad.set_allocation_health(JOB, true);
        self.until(|w| w.op.status().phase == Phase::Ready).await;
    }
}

fn consul_down() -> consul::Error {
    consul::Error::injected("read KV", 500, "rpc error: No cluster leader")
}

// === converge ===

#[tokio::test(start_paused = true)]
async fn a_fresh_cluster_gets_the_policy_tree_then_the_job_and_becomes_ready() {
    let mut w = world();
    w.put(&doc(""));
    let action = w.op.reconcile().await;
    assert!(
        action.requeue_after.is_some(),
        "a rollout in flight is polled"
    );
    let consul_writes = w.writes_to_consul();
    assert!(
        consul_writes[0].starts_with("txn"),
        "KV first: {consul_writes:?}"
    );
    assert_eq!(w.writes_to_nomad(), vec!["job_register"]);
    let register = &w.nomad.calls_of("job_register")[0];
    assert_eq!(register.index, Some(0), "created with EnforceIndex 0");
    assert_eq!(w.status().phase, Phase::Progressing);
    assert!(w.consul.value("po/traefik/http/middlewares").is_none());
    assert!(!w.consul.calls_of("txn").is_empty());

    w.nomad.set_allocation_health(JOB, true);
    w.until(|w| w.op.status().phase == Phase::Ready).await;
    let status = w.status();
    assert_eq!(status.phase, Phase::Ready);
    assert_eq!(
        status.last_applied_digest.as_deref(),
        Some(spec::load(doc("").as_bytes()).unwrap().digest())
    );
    assert_eq!(status.job_version, Some(0));
    assert_eq!(status.history.len(), 1);
    let job = w.nomad.job(JOB).unwrap();
    assert_eq!(
        job.meta.get("proxy-operator/owner").map(String::as_str),
        Some(PREFIX)
    );
}

#[tokio::test(start_paused = true)]
async fn an_idle_operator_writes_nothing() {
    let mut w = world();
    w.ready(&doc("")).await;
    w.consul.clear_calls();
    w.nomad.clear_calls();
    for _ in 0..5 {
        let action = w.op.reconcile().await;
        assert_eq!(action, Action::await_change());
    }
    assert!(
        w.writes_to_consul().is_empty(),
        "{:?}",
        w.writes_to_consul()
    );
    assert!(w.writes_to_nomad().is_empty());
    assert_eq!(w.probe.calls(), w.probe.calls(), "probe untouched at rest");
}

#[tokio::test(start_paused = true)]
async fn a_policy_change_is_one_kv_transaction_and_no_new_job_version() {
    let mut w = world();
    w.ready(&with_header("one")).await;
    let version = w.nomad.job(JOB).unwrap().version;
    w.consul.clear_calls();
    w.nomad.clear_calls();

    w.put(&with_header("two"));
    w.until(|w| w.op.status().phase == Phase::Ready && w.op.phase().name() == "Ready")
        .await;

    assert!(w.writes_to_nomad().is_empty(), "{:?}", w.writes_to_nomad());
    assert_eq!(w.nomad.job(JOB).unwrap().version, version);
    let txns = w.consul.calls_of("txn");
    assert!(!txns.is_empty());
    let header = w.consul.value(
        "po/traefik/http/middlewares/security-headers/headers/customResponseHeaders/X-Edition",
    );
    let found = w.consul.calls().iter().any(|c| c.op == "txn");
    assert!(found);
    let values: Vec<String> = kv_values(&w.consul, "po/traefik/").await;
    assert!(
        values.iter().any(|v| v == "two"),
        "new header value written: {values:?} {header:?}"
    );
    assert!(!values.iter().any(|v| v == "one"));
}

async fn kv_values(consul: &FakeConsul, prefix: &str) -> Vec<String> {
    let (pairs, _) = consul.kv_list(prefix, QueryOptions::NOW).await.unwrap();
    pairs
        .into_iter()
        .map(|p| String::from_utf8_lossy(&p.value).into_owned())
        .collect()
}

// === rollback ===

#[tokio::test(start_paused = true)]
async fn an_unhealthy_structural_change_is_reverted_and_not_retried_until_the_nonce_changes() {
    let mut w = world();
    w.ready(&with_cpu(100, None)).await;
    let good = w.nomad.job(JOB).unwrap().version;

    w.put(&with_cpu(200, None));
    w.op.reconcile().await;
    assert_eq!(w.nomad.calls_of("job_register").len(), 2);
    let bad = w.nomad.job(JOB).unwrap().version;
    assert!(bad > good);
    w.nomad.set_allocation_health(JOB, false);
    w.until(|w| w.op.status().phase == Phase::RolledBack).await;

    let reverts = w.nomad.calls_of("job_revert");
    assert_eq!(reverts.len(), 1, "{:?}", w.nomad.calls());
    let status = w.status();
    assert_eq!(status.phase, Phase::RolledBack);
    assert_eq!(
        status.failed_digest.as_deref(),
        Some(spec::load(with_cpu(200, None).as_bytes()).unwrap().digest())
    );
    let last = status.history.last().unwrap();
    assert!(last.reason.contains("unhealthy"), "{}", last.reason);
    let current = w.nomad.job(JOB).unwrap();
    assert!(current.version > bad, "the revert is a new version");
    let good_digest = w.nomad.versions(JOB)[usize::try_from(good).unwrap()]
        .meta
        .get("proxy-operator/spec-digest")
        .cloned();
    assert_eq!(
        current.meta.get("proxy-operator/spec-digest").cloned(),
        good_digest
    );

    // The same document is not applied again, however often the loop looks.
    w.nomad.clear_calls();
    for _ in 0..5 {
        tokio::time::advance(Duration::from_secs(60)).await;
        w.op.reconcile().await;
    }
    assert!(w.writes_to_nomad().is_empty(), "{:?}", w.writes_to_nomad());
    assert_eq!(w.status().phase, Phase::RolledBack);

    // A new retryNonce retries it.
    w.put(&with_cpu(200, Some("1")));
    w.op.reconcile().await;
    assert_eq!(w.writes_to_nomad(), vec!["job_register"]);
}

#[tokio::test(start_paused = true)]
async fn a_policy_change_the_proxy_rejects_restores_the_previous_entries() {
    let mut w = world();
    w.ready(&with_header("good")).await;
    let before = kv_values(&w.consul, "po/traefik/").await;
    w.consul.clear_calls();
    w.nomad.clear_calls();

    // The proxy never loads the new tree: ping fails until the deadline.
    w.consul.set(CONFIG, with_header("bad"));
    w.probe.set_ping(false);
    w.until(|w| w.op.status().phase == Phase::RolledBack).await;

    assert!(
        w.writes_to_nomad().is_empty(),
        "a policy rollback never touches the job"
    );
    assert_eq!(
        w.consul
            .calls_of("txn")
            .iter()
            .filter(|c| !c.target.contains("status"))
            .count(),
        2,
        "{:?}",
        w.consul.calls_of("txn")
    );
    let mut after = kv_values(&w.consul, "po/traefik/").await;
    let mut before = before;
    after.sort();
    before.sort();
    assert_eq!(after, before, "previous entries restored");
    assert!(w.status().history.last().unwrap().reason.contains("/ping"));
}

#[tokio::test(start_paused = true)]
async fn on_failure_hold_leaves_the_failed_version_running_and_reports_degraded() {
    let mut w = world();
    w.ready(&with_cpu(100, None)).await;
    let hold = doc("  job:\n    resources:\n      cpu: 300\n").replace(
        "minHealthyTime: 2s",
        "minHealthyTime: 2s\n    onFailure: hold",
    );
    w.put(&hold);
    w.op.reconcile().await;
    let failed_version = w.nomad.job(JOB).unwrap().version;
    w.nomad.set_allocation_health(JOB, false);
    w.until(|w| w.op.status().phase == Phase::Degraded).await;
    assert!(w.nomad.calls_of("job_revert").is_empty());
    assert_eq!(w.nomad.job(JOB).unwrap().version, failed_version);
}

// === never act on nothing ===

#[tokio::test(start_paused = true)]
async fn an_invalid_document_reports_every_error_and_writes_nothing_to_nomad() {
    let mut w = world();
    w.put(&doc("  entryPoints:\n    web:\n      address: \":99999\"\n  middlewares:\n    ipAllowList:\n      sourceRange: [\"10.0.0.300/8\"]\n"));
    assert_eq!(w.op.reconcile().await, Action::await_change());
    assert!(w.writes_to_nomad().is_empty());
    assert!(
        w.nomad.calls().is_empty(),
        "not even a read: {:?}",
        w.nomad.calls()
    );
    let status = w.status();
    assert_eq!(status.phase, Phase::Invalid);
    assert!(
        status.validation_errors.len() >= 2,
        "{:?}",
        status.validation_errors
    );
    assert!(w.consul.value("po/traefik/").is_none());
}

#[tokio::test(start_paused = true)]
async fn a_paused_document_is_reported_paused_and_applies_nothing() {
    let mut w = world();
    w.put(&doc("  paused: true\n"));
    w.op.reconcile().await;
    assert!(w.writes_to_nomad().is_empty());
    assert_eq!(w.status().phase, Phase::Paused);
}

#[tokio::test(start_paused = true)]
async fn deleting_the_config_key_leaves_the_proxy_running() {
    let mut w = world();
    w.ready(&doc("")).await;
    w.nomad.clear_calls();
    w.consul.remove(CONFIG);
    assert_eq!(w.op.reconcile().await, Action::await_change());
    assert!(w.writes_to_nomad().is_empty());
    assert!(w.nomad.job(JOB).is_some_and(|j| !j.stop));
    let status = w.status();
    assert_eq!(status.phase, Phase::Ready);
    let valid = status
        .conditions
        .iter()
        .find(|c| c.condition_type == "Valid")
        .unwrap();
    assert_eq!(valid.reason, "ConfigMissing");
    assert!(
        !kv_values(&w.consul, "po/traefik/").await.is_empty(),
        "policy tree kept"
    );
}

#[tokio::test(start_paused = true)]
async fn an_empty_config_key_leaves_the_proxy_running() {
    let mut w = world();
    w.ready(&doc("")).await;
    w.nomad.clear_calls();
    w.consul.set(CONFIG, "  \n");
    w.op.reconcile().await;
    assert!(w.writes_to_nomad().is_empty());
}

#[tokio::test(start_paused = true)]
async fn a_foreign_job_with_our_id_is_stalled_and_never_touched() {
    let mut w = world();
    w.nomad
        .seed_job(&json!({"ID": JOB, "Name": JOB, "Type": "system", "TaskGroups": []}));
    w.put(&doc(""));
    w.op.reconcile().await;
    assert!(w.writes_to_nomad().is_empty(), "{:?}", w.writes_to_nomad());
    let status = w.status();
    assert_eq!(status.phase, Phase::Stalled);
    let ready = status
        .conditions
        .iter()
        .find(|c| c.condition_type == "Ready")
        .unwrap();
    assert!(ready.message.contains("owner"), "{}", ready.message);
    assert!(
        kv_values(&w.consul, "po/traefik/").await.is_empty(),
        "no policy written either"
    );
}

#[tokio::test(start_paused = true)]
async fn consul_errors_back_off_without_teardown_and_the_loop_recovers() {
    let mut w = world();
    w.ready(&doc("")).await;
    w.nomad.clear_calls();
    let mut delays = Vec::new();
    for _ in 0..3 {
        w.consul.fail_next("kv_get", consul_down());
        let action = w.op.reconcile().await;
        delays.push(action.requeue_after.expect("an error is retried"));
    }
    assert!(
        delays.iter().all(|d| *d >= Duration::from_millis(250)),
        "{delays:?}"
    );
    assert!(delays[2] > delays[0] / 2, "backs off: {delays:?}");
    assert!(w.writes_to_nomad().is_empty());
    assert!(w.op.status().consecutive_failures >= 1 || w.op.status().phase == Phase::Ready);
    assert_eq!(
        w.op.reconcile().await,
        Action::await_change(),
        "recovers on the next good pass"
    );
    assert_eq!(w.status().phase, Phase::Ready);
    assert_eq!(w.status().consecutive_failures, 0);
}

#[tokio::test(start_paused = true)]
async fn nomad_errors_during_verification_do_not_roll_back() {
    let mut w = world();
    w.put(&doc(""));
    w.op.reconcile().await;
    for _ in 0..200 {
        w.nomad.fail_next(
            "job_read",
            proxy_operator::nomad::Error::injected("read job", 503, "no leader"),
        );
        tokio::time::advance(Duration::from_millis(250)).await;
        w.op.reconcile().await;
    }
    assert!(w.nomad.calls_of("job_revert").is_empty());
    assert_eq!(w.op.phase().name(), "Verifying", "still waiting to see");
    w.nomad.set_allocation_health(JOB, true);
    w.until(|w| w.op.status().phase == Phase::Ready).await;
}

#[tokio::test(start_paused = true)]
async fn bootstrap_from_env_writes_only_when_the_key_is_absent() {
    let consul = FakeConsul::new();
    let document = br#"{"apiVersion":"proxy-operator.io/v1alpha1","kind":"ProxyConfig"}"#;
    assert!(consul.kv_put(CONFIG, document, Some(0)).await.unwrap());
    assert!(
        !consul.kv_put(CONFIG, b"other", Some(0)).await.unwrap(),
        "create-only CAS"
    );
    assert_eq!(consul.value(CONFIG).unwrap(), document.to_vec());
}

// === the watch ===

#[tokio::test]
async fn run_converges_after_a_config_edit_and_stops_on_shutdown() {
    let consul = FakeConsul::new();
    let nomad = FakeNomad::new();
    let probe = FakeProbe::healthy();
    let config = Config::new(PREFIX).debounce(Duration::from_millis(20));
    let op = Operator::new(config, consul.clone(), nomad.clone(), probe.clone());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(op.run(async move {
        let _ = stopped.await;
    }));
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(
        nomad.calls_of("job_register").is_empty(),
        "nothing to act on yet"
    );
    consul.set(CONFIG, doc("  paused: true\n"));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        if let Some(v) = consul.value(STATUS) {
            let s: ProxyStatus = serde_json::from_slice(&v).unwrap();
            if s.phase == Phase::Paused {
                break;
            }
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the edit was never picked up"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let _ = stop.send(());
    tokio::time::timeout(Duration::from_secs(2), task)
        .await
        .unwrap()
        .unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_consul_outage_longer_than_the_deadline_during_a_rollout_still_converges() {
    let mut w = world();
    w.put(&doc(""));
    w.op.reconcile().await;
    assert_eq!(w.op.phase().name(), "Verifying");
    // Consul answers nothing for 30 s (the healthy deadline is 20 s).
    let start = tokio::time::Instant::now();
    while tokio::time::Instant::now() - start < Duration::from_secs(30) {
        w.consul.fail_next("kv_get", consul_down());
        let action = w.op.reconcile().await;
        tokio::time::advance(action.requeue_after.unwrap()).await;
    }
    assert!(
        w.writes_to_nomad().iter().all(|op| *op == "job_register"),
        "{:?}",
        w.writes_to_nomad()
    );
    w.nomad.set_allocation_health(JOB, true);
    w.until(|w| w.op.status().phase == Phase::Ready).await;
    assert!(w.nomad.calls_of("job_revert").is_empty());
}

// === restarts mid-rollout (review #1) ===

fn digest(document: &str) -> String {
    spec::load(document.as_bytes()).unwrap().digest().to_owned()
}

fn job_digest(job: &proxy_operator::nomad::Job) -> Option<String> {
    job.meta.get("proxy-operator/spec-digest").cloned()
}

fn nomad_down() -> proxy_operator::nomad::Error {
    proxy_operator::nomad::Error::injected("nomad", 503, "No cluster leader")
}

impl World {
    /// The operator process restarts (a crash, its own redeploy, a leader change): a new
    /// operator with nothing in memory, on the same cluster.
    fn restart(&mut self) {
        self.op = Operator::new(
            Config::new(PREFIX),
            self.consul.clone(),
            self.nomad.clone(),
            self.probe.clone(),
        );
    }
}

#[tokio::test(start_paused = true)]
async fn a_restart_mid_verification_resumes_the_gate_instead_of_declaring_the_new_version_ready() {
    let mut w = world();
    w.ready(&with_cpu(100, None)).await;
    let good = w.nomad.job(JOB).unwrap();
    w.put(&with_cpu(200, None));
    w.op.reconcile().await;
    assert_eq!(w.op.phase().name(), "Verifying");

    w.restart();
    w.op.reconcile().await;
    assert_eq!(w.op.phase().name(), "Verifying", "the rollout is resumed");
    let status = w.status();
    assert_eq!(
        status.phase,
        Phase::Progressing,
        "not Ready: never verified"
    );
    assert_eq!(
        status.last_applied_digest.as_deref(),
        Some(digest(&with_cpu(100, None)).as_str())
    );

    // The new version is broken: the resumed gate rolls it back to the one that passed.
    w.nomad.set_allocation_health(JOB, false);
    w.until(|w| w.op.status().phase == Phase::RolledBack).await;
    assert_eq!(w.nomad.calls_of("job_revert").len(), 1);
    assert_eq!(job_digest(&w.nomad.job(JOB).unwrap()), job_digest(&good));
    assert_eq!(w.status().job_version, Some(good.version));
}

#[tokio::test(start_paused = true)]
async fn a_restart_during_a_rollback_finishes_it_and_does_not_apply_the_failed_document_again() {
    let mut w = world();
    w.ready(&with_cpu(100, None)).await;
    let good = w.nomad.job(JOB).unwrap();
    w.put(&with_cpu(200, None));
    w.op.reconcile().await;
    w.nomad.set_allocation_health(JOB, false);
    // Nomad loses its leader as the revert goes out: the rollback is in flight at the restart.
    w.nomad.fail_next("job_revert", nomad_down());
    w.op.reconcile().await;
    assert_eq!(w.op.phase().name(), "RollingBack");
    let registers = w.nomad.calls_of("job_register").len();

    w.restart();
    w.until(|w| w.op.status().phase == Phase::RolledBack).await;
    assert_eq!(job_digest(&w.nomad.job(JOB).unwrap()), job_digest(&good));
    for _ in 0..3 {
        tokio::time::advance(Duration::from_secs(60)).await;
        w.op.reconcile().await;
    }
    assert_eq!(
        w.nomad.calls_of("job_register").len(),
        registers,
        "the failed document is not applied again"
    );
    let status = w.status();
    assert_eq!(status.phase, Phase::RolledBack);
    assert_eq!(
        status.failed_digest.as_deref(),
        Some(digest(&with_cpu(200, None)).as_str())
    );
}

#[tokio::test(start_paused = true)]
async fn a_restart_that_lost_the_rollout_journal_still_verifies_before_calling_anything_ready() {
    let mut w = world();
    w.ready(&with_cpu(100, None)).await;
    w.put(&with_cpu(200, None));
    w.op.reconcile().await;
    w.consul.remove("po/rollout");

    w.restart();
    w.op.reconcile().await;
    assert_ne!(w.status().phase, Phase::Ready);
    assert_eq!(w.op.phase().name(), "Verifying");
    w.nomad.set_allocation_health(JOB, false);
    w.until(|w| w.op.status().phase == Phase::Degraded).await;
    assert_eq!(
        w.status().last_applied_digest.as_deref(),
        Some(digest(&with_cpu(100, None)).as_str()),
        "the unverified document never became the applied one"
    );
}

// === the failed digest survives a lost status write (review #2) ===

#[tokio::test(start_paused = true)]
async fn a_lost_status_write_after_a_rollback_still_remembers_the_failed_digest() {
    let mut w = world();
    w.ready(&with_cpu(100, None)).await;
    w.put(&with_cpu(200, None));
    w.op.reconcile().await;
    assert_eq!(w.nomad.calls_of("job_register").len(), 2);
    w.nomad.set_allocation_health(JOB, false);
    // Every status write of the pass that rolls back fails (a Consul blip).
    w.consul.fail_next("txn", consul_down());
    w.consul.fail_next("txn", consul_down());
    let action = w.op.reconcile().await;
    assert_eq!(w.nomad.calls_of("job_revert").len(), 1);
    assert!(
        action.requeue_after.is_some(),
        "an unwritten status is retried"
    );
    let mut action = action;
    for _ in 0..5 {
        tokio::time::advance(action.requeue_after.unwrap_or(Duration::from_secs(60))).await;
        action = w.op.reconcile().await;
    }
    assert_eq!(
        w.nomad.calls_of("job_register").len(),
        2,
        "the failed digest was registered again"
    );
    let status = w.status();
    assert_eq!(status.phase, Phase::RolledBack);
    assert_eq!(
        status.failed_digest.as_deref(),
        Some(digest(&with_cpu(200, None)).as_str()),
        "the write went through once Consul answered"
    );
}

#[tokio::test(start_paused = true)]
async fn a_resync_pass_writes_only_the_pass_counter_and_the_count_survives_a_restart() {
    let mut w = world();
    w.ready(&doc("")).await;
    let before = w.op.status().passes;
    let writes = w.writes_to_consul().len();
    w.op.reconcile().await;
    assert_eq!(
        w.writes_to_consul().len(),
        writes,
        "a pass that finds nothing new writes nothing"
    );
    w.op.resync().await;
    assert_eq!(
        w.writes_to_consul(),
        {
            let mut all = w.writes_to_consul()[..writes].to_vec();
            all.push(format!("txn cas {STATUS}"));
            all
        },
        "the resync pass writes the status alone"
    );
    let after = w.status();
    assert_eq!(after.passes, before + 2, "both passes since are counted");
    assert_eq!(after.phase, Phase::Ready);
    assert!(w.writes_to_nomad().len() == 1, "nothing else was written");

    // A restarted operator counts on from the document.
    w.op = Operator::new(
        Config::new(PREFIX),
        w.consul.clone(),
        w.nomad.clone(),
        w.probe.clone(),
    );
    w.op.resync().await;
    assert_eq!(w.status().passes, after.passes + 1);
}

#[tokio::test(start_paused = true)]
async fn an_unreadable_status_document_at_restart_keeps_the_failed_digest_and_the_rollback_target()
{
    let mut w = world();
    w.ready(&with_cpu(100, None)).await;
    w.put(&with_cpu(200, None));
    w.op.reconcile().await;
    w.nomad.set_allocation_health(JOB, false);
    w.until(|w| w.op.status().phase == Phase::RolledBack).await;
    let rolled = w.status();
    assert!(rolled.failed_digest.is_some() && rolled.last_good_job.is_some());
    let registers = w.nomad.calls_of("job_register").len();

    // A hand edit breaks one field, and the operator restarts.
    let mut broken: serde_json::Value =
        serde_json::from_slice(&w.consul.value(STATUS).unwrap()).unwrap();
    broken["history"] = serde_json::json!("edited by hand");
    w.consul.set(STATUS, broken.to_string());
    w.op = Operator::new(
        Config::new(PREFIX),
        w.consul.clone(),
        w.nomad.clone(),
        w.probe.clone(),
    );
    for _ in 0..3 {
        let action = w.op.reconcile().await;
        tokio::time::advance(action.requeue_after.unwrap_or(Duration::from_secs(60))).await;
    }
    assert_eq!(
        w.nomad.calls_of("job_register").len(),
        registers,
        "the failed document was applied again"
    );
    let status = w.status();
    assert_eq!(status.failed_digest, rolled.failed_digest);
    assert_eq!(status.last_good_job, rolled.last_good_job);
    let recovered = status
        .conditions
        .iter()
        .find(|c| c.condition_type == "StatusRecovered")
        .expect("the rebuilt status says so");
    assert!(
        recovered.message.contains("lost: history"),
        "{}",
        recovered.message
    );
}

#[tokio::test(start_paused = true)]
async fn a_status_key_the_token_cannot_write_starts_no_rollout_and_never_loops() {
    let mut w = world();
    w.ready(&with_cpu(100, None)).await;
    let registers = w.nomad.calls_of("job_register").len();
    w.consul.deny("txn", STATUS, 403);
    w.put(&with_cpu(200, None));
    let mut action = w.op.reconcile().await;
    assert_eq!(
        action,
        Action::requeue(TERMINAL_RETRY),
        "a 403 is retried slowly"
    );
    for _ in 0..10 {
        w.nomad.set_allocation_health(JOB, false);
        tokio::time::advance(action.requeue_after.unwrap_or(Duration::from_secs(1))).await;
        action = w.op.reconcile().await;
    }
    assert_eq!(w.nomad.calls_of("job_register").len(), registers);
    assert!(w.nomad.calls_of("job_revert").is_empty());
    let ready = w.op.status().condition("Ready").unwrap().clone();
    assert_eq!(ready.reason, "AccessDenied", "{ready:?}");
    assert!(ready.message.contains("403"), "{}", ready.message);
}

// === a system job's old allocations (review #3) ===

#[tokio::test(start_paused = true)]
async fn an_old_failed_allocation_does_not_hold_the_next_rollout_of_a_system_job() {
    let mut w = world();
    w.nomad.set_deployments_enabled(false);
    w.ready(&with_cpu(100, None)).await;
    w.put(&with_cpu(200, None));
    w.op.reconcile().await;
    w.nomad.set_allocation_health(JOB, false);
    w.until(|w| w.op.status().phase == Phase::RolledBack).await;

    // Nomad leaves the failed allocations of version 1 with DesiredStatus "run" until GC.
    w.put(&with_cpu(300, None));
    w.until(|w| {
        matches!(
            w.op.status().phase,
            Phase::Ready | Phase::RolledBack | Phase::Degraded
        ) && w.op.phase().is_at_rest()
            && w.nomad.calls_of("job_register").len() == 3
    })
    .await;
    assert_eq!(
        w.status().phase,
        Phase::Ready,
        "{:?}",
        w.status().conditions
    );
    assert_eq!(
        w.status().last_applied_digest.as_deref(),
        Some(digest(&with_cpu(300, None)).as_str())
    );
}

// === the rollout in flight owns its gate (review #4) ===

#[tokio::test(start_paused = true)]
async fn a_rollout_keeps_going_to_its_end_when_the_document_is_deleted_emptied_or_broken() {
    for breakage in ["delete", "empty", "invalid"] {
        let mut w = world();
        w.ready(&with_cpu(100, None)).await;
        let good = w.nomad.job(JOB).unwrap();
        w.put(&with_cpu(200, None));
        w.op.reconcile().await;
        w.nomad.set_allocation_health(JOB, false);
        match breakage {
            "delete" => w.consul.remove(CONFIG),
            "empty" => {
                w.consul.set(CONFIG, "");
            }
            _ => {
                w.consul.set(CONFIG, "spec: [not, a, document");
            }
        }
        w.until(|w| w.op.status().phase == Phase::RolledBack).await;
        assert_eq!(w.nomad.calls_of("job_revert").len(), 1, "{breakage}");
        assert_eq!(
            job_digest(&w.nomad.job(JOB).unwrap()),
            job_digest(&good),
            "{breakage}"
        );
    }
}

// === lost answers (review #5) ===

#[tokio::test(start_paused = true)]
async fn a_register_whose_answer_was_lost_is_recognised_and_rolled_back_when_it_fails() {
    let mut w = world();
    w.ready(&with_cpu(100, None)).await;
    let good = w.nomad.job(JOB).unwrap();
    w.nomad.lose_answer("job_register", nomad_down());
    w.put(&with_cpu(200, None));
    w.op.reconcile().await;
    assert_eq!(
        w.op.phase().name(),
        "Verifying",
        "the job carries our digest: the register landed"
    );
    w.nomad.set_allocation_health(JOB, false);
    w.until(|w| w.op.phase().is_at_rest()).await;
    assert_eq!(w.status().phase, Phase::RolledBack);
    assert_eq!(w.nomad.calls_of("job_revert").len(), 1);
    assert_eq!(job_digest(&w.nomad.job(JOB).unwrap()), job_digest(&good));
}

#[tokio::test(start_paused = true)]
async fn a_revert_whose_answer_was_lost_reports_rolled_back_not_a_failed_rollback() {
    let mut w = world();
    w.ready(&with_cpu(100, None)).await;
    let good = w.nomad.job(JOB).unwrap();
    w.put(&with_cpu(200, None));
    w.op.reconcile().await;
    w.nomad.lose_answer("job_revert", nomad_down());
    w.nomad.set_allocation_health(JOB, false);
    w.until(|w| w.op.phase().is_at_rest()).await;
    assert_eq!(
        w.status().phase,
        Phase::RolledBack,
        "{:?}",
        w.status().conditions
    );
    assert_eq!(job_digest(&w.nomad.job(JOB).unwrap()), job_digest(&good));
}

#[tokio::test(start_paused = true)]
async fn a_policy_write_whose_answer_was_lost_is_restored_when_the_rollout_fails() {
    let mut w = world();
    w.ready(&with_header("good")).await;
    let mut before = kv_values(&w.consul, "po/traefik/").await;
    w.consul.lose_answer(
        "txn",
        "po/traefik/",
        consul::Error::injected("txn", 500, "internal error"),
    );
    w.consul.set(CONFIG, with_header("bad"));
    w.until(|w| w.op.phase().is_at_rest() && w.op.status().phase != Phase::Ready)
        .await;
    let mut after = kv_values(&w.consul, "po/traefik/").await;
    before.sort();
    after.sort();
    assert_eq!(after, before, "the tree that landed was restored");
    assert_eq!(w.status().phase, Phase::RolledBack);
}

// === the rollback target (review #6) ===

#[tokio::test(start_paused = true)]
async fn a_first_version_that_fails_is_left_in_place_with_the_policy_tree_it_references() {
    let mut w = world();
    w.put(&doc(""));
    w.op.reconcile().await;
    w.nomad.set_allocation_health(JOB, false);
    w.until(|w| w.op.phase().is_at_rest()).await;
    assert_eq!(w.status().phase, Phase::Degraded);
    assert!(w.nomad.calls_of("job_revert").is_empty());
    assert!(w.nomad.job(JOB).is_some_and(|j| !j.stop));
    assert!(
        !kv_values(&w.consul, "po/traefik/").await.is_empty(),
        "the running job's routers still find their middlewares"
    );
}

#[tokio::test(start_paused = true)]
async fn a_document_after_a_failed_first_version_never_rolls_back_to_it() {
    let mut w = world();
    w.put(&with_cpu(100, None));
    w.op.reconcile().await;
    w.nomad.set_allocation_health(JOB, false);
    w.until(|w| w.op.phase().is_at_rest()).await;
    assert_eq!(w.status().phase, Phase::Degraded);

    w.put(&with_cpu(200, None));
    w.op.reconcile().await;
    assert_eq!(w.nomad.calls_of("job_register").len(), 2);
    w.nomad.set_allocation_health(JOB, false);
    w.until(|w| w.op.phase().is_at_rest()).await;
    assert!(
        w.nomad.calls_of("job_revert").is_empty(),
        "version 0 never passed the gate: {:?}",
        w.nomad.calls_of("job_revert")
    );
    assert_eq!(w.status().phase, Phase::Degraded);
}

#[tokio::test(start_paused = true)]
async fn changing_the_job_id_never_reverts_the_new_job_to_the_old_jobs_version() {
    let mut w = world();
    w.ready(&doc("")).await;
    w.put(&doc("  job:\n    id: proxy-two\n"));
    w.op.reconcile().await;
    assert!(w.nomad.job("proxy-two").is_some());
    w.nomad.set_allocation_health("proxy-two", false);
    w.until(|w| w.op.phase().is_at_rest()).await;
    assert!(
        w.nomad.calls_of("job_revert").is_empty(),
        "{:?}",
        w.nomad.calls_of("job_revert")
    );
    assert_eq!(w.status().phase, Phase::Degraded);
    assert!(
        w.nomad.job(JOB).is_some_and(|j| !j.stop),
        "the old job is untouched"
    );
}

// === retryNonce (review #7) ===

#[tokio::test(start_paused = true)]
async fn a_retry_nonce_bumped_during_a_rollout_still_retries_the_failed_document() {
    let mut w = world();
    w.ready(&with_cpu(100, None)).await;
    w.put(&with_cpu(200, None));
    w.op.reconcile().await;
    // The user bumps the nonce while the rollout runs (same digest: the nonce is not in it).
    w.put(&with_cpu(200, Some("1")));
    w.nomad.set_allocation_health(JOB, false);
    w.until(|w| w.op.status().phase == Phase::RolledBack).await;
    let registers = w.nomad.calls_of("job_register").len();
    tokio::time::advance(Duration::from_millis(250)).await;
    w.op.reconcile().await;
    assert_eq!(
        w.nomad.calls_of("job_register").len(),
        registers + 1,
        "the nonce the failure is remembered with is the rolled-out one"
    );
}

// === status correctness (review #8) ===

#[tokio::test(start_paused = true)]
async fn a_persistent_observation_error_writes_the_status_once_not_on_every_retry() {
    let mut w = world();
    w.ready(&doc("")).await;
    w.consul.clear_calls();
    for _ in 0..8 {
        w.nomad.fail_next("job_read", nomad_down());
        let action = w.op.reconcile().await;
        tokio::time::advance(action.requeue_after.unwrap()).await;
    }
    let status_writes = w
        .consul
        .calls_of("txn")
        .iter()
        .filter(|c| c.target.contains(STATUS))
        .count();
    assert_eq!(status_writes, 1, "{:?}", w.consul.calls_of("txn"));
    assert_eq!(w.op.status().consecutive_failures, 8);
    assert_eq!(w.status().phase, Phase::Stalled);
}

#[tokio::test(start_paused = true)]
async fn a_forbidden_token_is_reported_as_access_denied_and_retried_slowly() {
    let mut w = world();
    w.ready(&doc("")).await;
    w.nomad.fail_next(
        "job_read",
        proxy_operator::nomad::Error::injected("read job", 403, "Permission denied"),
    );
    let action = w.op.reconcile().await;
    assert_eq!(action, Action::requeue(TERMINAL_RETRY));
    let ready = w.status().condition("Ready").unwrap().clone();
    assert_eq!(ready.reason, "AccessDenied");
    assert!(ready.message.contains("token"), "{}", ready.message);
}

#[tokio::test(start_paused = true)]
async fn a_burst_of_edits_longer_than_the_debounce_is_one_pass_over_the_last_document() {
    let consul = FakeConsul::new();
    let config = Config::new(PREFIX).debounce(Duration::from_millis(100));
    let op = Operator::new(
        config,
        consul.clone(),
        FakeNomad::new(),
        FakeProbe::healthy(),
    );
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(op.run(async move {
        let _ = stopped.await;
    }));
    tokio::time::sleep(Duration::from_millis(50)).await;
    consul.clear_calls();
    // Five edits 60 ms apart: 300 ms of edits, each within 100 ms of the last.
    let mut last = 0;
    for i in 0..5 {
        last = consul.set(
            CONFIG,
            doc(&format!("  paused: true\n  retryNonce: \"{i}\"\n")),
        );
        tokio::time::sleep(Duration::from_millis(60)).await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let writes: Vec<_> = consul
        .calls_of("txn")
        .into_iter()
        .filter(|c| c.target.contains(STATUS))
        .collect();
    assert_eq!(writes.len(), 1, "one pass after the burst: {writes:?}");
    let status: ProxyStatus = serde_json::from_slice(&consul.value(STATUS).unwrap()).unwrap();
    assert_eq!(status.observed_index, last);
    let _ = stop.send(());
    task.await.unwrap();
}

// === the policy gate sees the new tree, not the old one (review #8 of the gate) ===

#[tokio::test(start_paused = true)]
async fn a_policy_change_is_ready_only_once_the_proxy_lists_the_new_trees_generation() {
    let mut w = world();
    w.ready(&with_header("one")).await;
    // Traefik keeps serving the old tree (say it rejected the new one): every name we expect
    // except the new generation marker is there.
    w.consul.set(CONFIG, with_header("two"));
    let mut action = w.op.reconcile().await;
    for _ in 0..20 {
        tokio::time::advance(action.requeue_after.unwrap_or(Duration::from_millis(250))).await;
        action = w.op.reconcile().await;
    }
    assert_ne!(w.op.status().phase, Phase::Ready);
    let waiting =
        w.op.status()
            .condition("Progressing")
            .unwrap()
            .message
            .clone();
    assert!(waiting.contains("proxy-operator-generation-"), "{waiting}");

    // Traefik loads it.
    w.put(&with_header("two"));
    w.until(|w| w.op.status().phase == Phase::Ready).await;
    assert_eq!(
        w.status().last_applied_digest.as_deref(),
        Some(digest(&with_header("two")).as_str())
    );
}

// === policy trees larger than one transaction (review #7) ===

fn with_cidrs(n: usize) -> String {
    let ranges: Vec<String> = (0..n).map(|i| format!("\"10.{i}.0.0/16\"")).collect();
    doc(&format!(
        "  middlewares:\n    ipAllowList:\n      sourceRange: [{}]\n",
        ranges.join(", ")
    ))
}

fn with_headers(n: usize) -> String {
    let headers: String = (0..n)
        .map(|i| format!("        X-Edition-{i}: \"{i}\"\n"))
        .collect();
    doc(&format!(
        "  middlewares:\n    securityHeaders:\n      headers:\n{headers}"
    ))
}

fn rendered_tree(document: &str) -> Vec<(String, String)> {
    let spec = spec::load(document.as_bytes()).unwrap();
    let ctx = RenderContext {
        prefix: PREFIX.into(),
        owner: PREFIX.into(),
        basic_auth_users: None,
        ..RenderContext::default()
    };
    let mut kv = render::render(&spec, &ctx).unwrap().traefik_kv;
    kv.sort();
    kv
}

async fn tree(consul: &FakeConsul) -> Vec<(String, String)> {
    let (pairs, _) = consul
        .kv_list("po/traefik/", QueryOptions::NOW)
        .await
        .unwrap();
    let mut kv: Vec<(String, String)> = pairs
        .into_iter()
        .map(|p| (p.key, String::from_utf8_lossy(&p.value).into_owned()))
        .collect();
    kv.sort();
    kv
}

fn policy_txns(consul: &FakeConsul) -> Vec<String> {
    consul
        .calls_of("txn")
        .into_iter()
        .filter(|c| c.target.contains("po/traefik/"))
        .map(|c| c.target)
        .collect()
}

#[tokio::test(start_paused = true)]
async fn a_policy_change_larger_than_one_transaction_is_still_written_and_restored_atomically() {
    let mut w = world();
    w.ready(&with_cidrs(40)).await;
    let before = tree(&w.consul).await;
    w.consul.clear_calls();

    // 40 allow-list keys go, 40 header keys come: more than 64 operations.
    w.consul.set(CONFIG, with_headers(40));
    w.probe.set_ping(false);
    w.op.reconcile().await;
    assert_eq!(
        policy_txns(&w.consul).len(),
        1,
        "{:?}",
        policy_txns(&w.consul)
    );
    assert_eq!(tree(&w.consul).await, rendered_tree(&with_headers(40)));

    // The proxy never becomes healthy: the restore is just as large, and just as atomic.
    w.until(|w| w.op.status().phase == Phase::RolledBack).await;
    assert_eq!(
        policy_txns(&w.consul).len(),
        2,
        "{:?}",
        policy_txns(&w.consul)
    );
    assert_eq!(tree(&w.consul).await, before);
}

#[tokio::test(start_paused = true)]
async fn a_policy_tree_that_cannot_fit_one_transaction_is_invalid_and_writes_nothing() {
    let mut w = world();
    w.consul.set(CONFIG, with_headers(70));
    w.op.reconcile().await;
    let status = w.status();
    assert_eq!(status.phase, Phase::Invalid);
    assert!(
        status.validation_errors[0]
            .to_string()
            .contains("one Consul transaction"),
        "{:?}",
        status.validation_errors
    );
    assert!(w.nomad.calls().is_empty());
    assert!(tree(&w.consul).await.is_empty());
}

#[tokio::test(start_paused = true)]
async fn a_status_written_before_good_jobs_were_recorded_still_gives_a_rollback_target() {
    let mut w = world();
    w.ready(&with_cpu(100, None)).await;
    let good = w.nomad.job(JOB).unwrap();
    // The status as an older operator wrote it: the applied digest, no lastGoodJob.
    let mut old = w.status();
    old.last_good_job = None;
    w.consul.set(STATUS, serde_json::to_vec(&old).unwrap());
    w.restart();
    w.op.reconcile().await;
    assert_eq!(
        w.status().last_good_job.map(|j| j.version),
        Some(good.version),
        "the running job carries a document that passed"
    );
    w.put(&with_cpu(200, None));
    w.op.reconcile().await;
    w.nomad.set_allocation_health(JOB, false);
    w.until(|w| w.op.phase().is_at_rest()).await;
    assert_eq!(w.status().phase, Phase::RolledBack);
    assert_eq!(job_digest(&w.nomad.job(JOB).unwrap()), job_digest(&good));
}

// === the rollout journal is untrusted input (sec #6) ===

fn journal(w: &World) -> serde_json::Value {
    serde_json::from_slice(&w.consul.value("po/rollout").expect("a journal")).unwrap()
}

#[tokio::test(start_paused = true)]
async fn a_journal_with_an_absurd_deadline_is_dropped_and_what_runs_is_verified_instead_of_panicking()
 {
    let mut w = world();
    w.ready(&with_cpu(100, None)).await;
    w.put(&with_cpu(200, None));
    w.op.reconcile().await;
    assert_eq!(w.op.phase().name(), "Verifying");
    let mut j = journal(&w);
    j["change"]["gate"]["healthyDeadline"] = json!({"secs": u64::MAX, "nanos": 0});
    w.consul.set("po/rollout", serde_json::to_vec(&j).unwrap());

    w.restart();
    w.op.reconcile().await;
    assert_ne!(w.status().phase, Phase::Ready, "never verified");
    assert_eq!(
        w.op.phase().name(),
        "Verifying",
        "the running version is verified again with the document's own gate"
    );
    let rewritten = journal(&w);
    assert_ne!(
        rewritten["change"]["gate"]["healthyDeadline"]["secs"],
        json!(u64::MAX),
        "the absurd journal is replaced"
    );
    w.nomad.set_allocation_health(JOB, true);
    w.until(|w| w.op.status().phase == Phase::Ready).await;
    assert!(w.consul.value("po/rollout").is_none());
}

#[tokio::test(start_paused = true)]
async fn a_journal_naming_a_foreign_job_never_registers_or_reverts_it() {
    let mut w = world();
    w.ready(&with_cpu(100, None)).await;
    // A register that fails leaves the rollout Applying, its register pending in the journal.
    w.put(&with_cpu(200, None));
    w.nomad.fail_next("job_register", nomad_down());
    w.op.reconcile().await;
    assert_eq!(w.op.phase().name(), "Applying");
    // Someone with write access to the prefix points it at another team's job.
    let victim = w
        .nomad
        .seed_job(&json!({"ID": "victim", "Type": "service", "Meta": {"team": "db"}}))
        .unwrap();
    let text = String::from_utf8(w.consul.value("po/rollout").unwrap()).unwrap();
    assert!(
        text.contains("\"RegisterJob\"") || text.contains("registerJob"),
        "{text}"
    );
    let forged = text.replace("\"proxy\"", "\"victim\"");
    w.consul.set("po/rollout", forged);

    w.restart();
    w.until(|w| w.op.status().phase == Phase::Ready || w.op.phase().name() == "Verifying")
        .await;
    assert!(
        w.nomad
            .calls_of("job_register")
            .iter()
            .all(|c| c.target != "victim")
            && w.nomad
                .calls_of("job_revert")
                .iter()
                .all(|c| c.target != "victim"),
        "the foreign job is never written: {:?}",
        w.nomad.calls()
    );
    assert_eq!(w.nomad.versions("victim").len(), 1);
    assert_eq!(
        w.nomad.job("victim").unwrap().job_modify_index,
        victim.job_modify_index
    );
}

// === a job type Nomad cannot change in place (twin #1) ===

#[tokio::test(start_paused = true)]
async fn changing_the_job_type_on_the_same_id_is_held_with_what_to_do_and_never_re_registered() {
    use proxy_operator::nomad::NomadApi;
    let mut w = world();
    w.ready(&doc("")).await;
    assert_eq!(w.nomad.job(JOB).unwrap().job_type, "system");
    let registers = w.nomad.calls_of("job_register").len();

    w.put(&doc("  job:\n    type: service\n"));
    for _ in 0..5 {
        let action = w.op.reconcile().await;
        tokio::time::advance(action.requeue_after.unwrap_or(Duration::from_secs(60))).await;
    }
    assert_eq!(
        w.nomad.calls_of("job_register").len(),
        registers,
        "Nomad refuses a type change: nothing is registered"
    );
    let status = w.status();
    assert_eq!(status.phase, Phase::Stalled);
    let ready = status
        .conditions
        .iter()
        .find(|c| c.condition_type == "Ready")
        .unwrap();
    assert_eq!(ready.reason, "JobTypeChange");
    for hint in [
        "spec.job.id",
        "nomad job stop -purge proxy",
        "\"system\"",
        "\"service\"",
    ] {
        assert!(ready.message.contains(hint), "{hint} in {}", ready.message);
    }
    assert_eq!(
        w.nomad.job(JOB).unwrap().job_type,
        "system",
        "still serving"
    );

    // The fake refuses it like Nomad does.
    let mut job = w.nomad.job(JOB).unwrap().raw;
    job["Type"] = json!("service");
    let err = w.nomad.job_register(&job, None).await.unwrap_err();
    assert!(
        err.to_string()
            .contains("cannot update job from type \"system\" to \"service\""),
        "{err}"
    );
}

// === bounded status (sec L4) ===

#[tokio::test(start_paused = true)]
async fn a_document_with_thousands_of_errors_gets_a_capped_status_that_still_fits_consul() {
    let mut w = world();
    let junk: String = (0..3000)
        .map(|i| format!("  unknownField{i}: {i}\n"))
        .collect();
    let document = doc(&junk);
    let all = match spec::load(document.as_bytes()) {
        Ok(_) => panic!("the document must be invalid"),
        Err(e) => e.field_errors().len(),
    };
    assert!(all >= 3000, "{all} errors");
    w.put(&document);
    w.op.reconcile().await;
    let raw = w.consul.value(STATUS).expect("the status was written");
    assert!(raw.len() < 64 * 1024, "status is {} bytes", raw.len());
    let status = w.status();
    assert_eq!(status.phase, Phase::Invalid);
    assert_eq!(status.validation_errors.len(), 51);
    let more = &status.validation_errors[50].message;
    assert!(more.contains(&format!("and {} more", all - 50)), "{more}");
    let valid = status
        .conditions
        .iter()
        .find(|c| c.condition_type == "Valid")
        .unwrap();
    assert!(
        valid.message.contains(&all.to_string()),
        "{}",
        valid.message
    );
    assert!(w.writes_to_nomad().is_empty());
}

// === basic-auth hashes stay out of logs, status and Debug (sec L1) ===

/// Every log line of the test, at every level, with span fields.
#[derive(Clone, Default)]
struct Captured(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Captured {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

const SENTINEL_USERS: &str = "sentinel:$apr1$SENTINEL$h9FWgUz3n9YxylKLlR5SQ/\n";
const SENTINEL: &str = "SENTINEL$h9FWgUz3n9YxylKLlR5SQ";

fn with_basic_auth(extra: &str) -> String {
    doc(&format!(
        "  middlewares:\n    basicAuth:\n      usersFrom:\n        consulKey: secrets/basic-auth\n{extra}"
    ))
}

#[tokio::test(start_paused = true)]
async fn basic_auth_hashes_reach_only_the_policy_tree_and_the_journal_never_logs_status_or_debug() {
    let logs = Captured::default();
    let writer = logs.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);
    // Tracing caches each callsite's interest for the whole process: a parallel test that hit the
    // same log lines with no subscriber may have cached "never", which would hide the very logs
    // this test inspects. Recompute it now that this thread's subscriber exists.
    tracing::callsite::rebuild_interest_cache();

    let mut w = world();
    w.consul.set("secrets/basic-auth", SENTINEL_USERS);
    let first = with_basic_auth("");
    w.consul.set(CONFIG, &first);
    let ctx = RenderContext {
        prefix: PREFIX.into(),
        owner: PREFIX.into(),
        basic_auth_users: Some(vec![SENTINEL_USERS.trim().to_owned()]),
        ..RenderContext::default()
    };
    let rendered = render::render(&spec::load(first.as_bytes()).unwrap(), &ctx).unwrap();
    w.probe.set_enabled(&proxy::traefik::expected_entries(
        &rendered.traefik_kv,
        "po/traefik/",
    ));

    let mut seen_debug = Vec::new();
    let mut journals = Vec::new();
    w.op.reconcile().await;
    seen_debug.push(format!("{:?} {:?}", w.op.phase(), w.op.status()));
    journals.extend(w.consul.value("po/rollout"));
    w.nomad.set_allocation_health(JOB, true);
    w.until(|w| w.op.status().phase == Phase::Ready).await;

    // A structural change that fails: the rollback restores the previous tree from the journal.
    w.consul.set(
        CONFIG,
        with_basic_auth("  job:\n    resources:\n      cpu: 321\n"),
    );
    w.op.reconcile().await;
    seen_debug.push(format!("{:?} {:?}", w.op.phase(), w.op.status()));
    journals.extend(w.consul.value("po/rollout"));
    w.nomad.set_allocation_health(JOB, false);
    w.until(|w| w.op.status().phase == Phase::RolledBack).await;
    seen_debug.push(format!("{:?} {:?}", w.op.phase(), w.op.status()));

    // Where Traefik needs it: the policy tree.
    let tree = kv_values(&w.consul, "po/traefik/").await;
    assert!(
        tree.iter().any(|v| v.contains(SENTINEL)),
        "the policy tree carries the users"
    );
    // The journal holds it by design (see `rollout::Journal`).
    assert!(
        journals
            .iter()
            .any(|j| String::from_utf8_lossy(j).contains(SENTINEL)),
        "the journal restores the previous tree, users included"
    );
    // Nowhere else.
    let status = String::from_utf8(w.consul.value(STATUS).unwrap()).unwrap();
    assert!(!status.contains(SENTINEL), "status document: {status}");
    for d in &seen_debug {
        assert!(!d.contains(SENTINEL), "Debug output: {d}");
    }
    let text = logs.text();
    // The write of the tree that carries the hashes was logged, so the capture saw the code
    // path that holds them. (Not the `reconcile` span's name: another test's thread can cache
    // that callsite's interest before this thread's subscriber exists, now and then.)
    assert!(
        text.contains("writing the policy tree"),
        "logs were captured: {text}"
    );
    assert!(!text.contains(SENTINEL), "a log line holds the hash");

    // Debug of the journal and everything in it.
    for j in &journals {
        let journal: proxy_operator::rollout::Journal = serde_json::from_slice(j).unwrap();
        let debug = format!("{journal:?}");
        assert!(!debug.contains(SENTINEL), "{debug}");
        if journal.change.kv.is_some() {
            assert!(
                debug.contains("po/traefik/"),
                "keys are still shown: {debug}"
            );
        }
    }

    // An unreadable users key: the error names the key, never the content.
    w.consul.set("secrets/basic-auth", [0xff, 0xfe, b'S']);
    w.consul
        .set(CONFIG, with_basic_auth("  retryNonce: \"2\"\n"));
    w.op.reconcile().await;
    let status = String::from_utf8(w.consul.value(STATUS).unwrap()).unwrap();
    assert!(status.contains("secrets/basic-auth"), "{status}");
    assert!(!status.contains(SENTINEL));
}

// === a crashed allocation fails the gate at once (twin #8) ===

#[tokio::test(start_paused = true)]
async fn a_crashed_allocation_of_the_new_version_rolls_back_at_once_naming_the_task_event() {
    let mut w = world();
    w.ready(&with_cpu(100, None)).await;
    let good = w.nomad.job(JOB).unwrap();
    w.put(&with_cpu(200, None));
    w.op.reconcile().await;
    assert_eq!(w.op.phase().name(), "Verifying");
    let bind = "listen tcp :80: bind: address already in use";
    w.nomad.crash_allocations(
        JOB,
        &[
            ("Started", "Task started by client"),
            ("Driver Failure", bind),
            (
                "Not Restarting",
                "Exceeded allowed attempts 2 in interval 30m0s and mode is \"fail\"",
            ),
        ],
    );
    // Well inside healthyDeadline (20s): no waiting for Nomad's deployment to give up.
    let started = tokio::time::Instant::now();
    w.until(|w| w.op.status().phase == Phase::RolledBack).await;
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "rolled back after {:?}",
        started.elapsed()
    );
    assert_eq!(job_digest(&w.nomad.job(JOB).unwrap()), job_digest(&good));
    let status = String::from_utf8(w.consul.value(STATUS).unwrap()).unwrap();
    assert!(status.contains(bind), "the status says why: {status}");
    assert!(status.contains("Not Restarting"), "{status}");
}

// === status-write pacing (issue 13) ===

/// The CAS writes of the status document (each is one `/v1/txn` naming the status key).
fn status_writes(consul: &FakeConsul) -> usize {
    consul
        .calls_of("txn")
        .iter()
        .filter(|c| c.target.contains(STATUS))
        .count()
}

#[tokio::test(start_paused = true)]
async fn during_a_long_gate_hold_the_status_is_written_at_most_once_a_second_and_on_every_phase_change()
 {
    let mut w = world();
    w.ready(&with_cpu(100, None)).await;
    // A system job without deployments (Nomad before 1.11): the operator holds minHealthyTime
    // itself (a successful deployment has held it already).
    w.nomad.set_deployments_enabled(false);
    let hold = doc("  job:\n    resources:\n      cpu: 200\n").replace(
        "healthyDeadline: 20s\n    minHealthyTime: 2s",
        "healthyDeadline: 60s\n    minHealthyTime: 20s",
    );
    assert!(hold.contains("minHealthyTime: 20s"), "{hold}");
    w.put(&hold);
    w.consul.clear_calls();
    // The pass that starts the rollout writes the journal and Progressing at once.
    w.op.reconcile().await;
    assert_eq!(w.status().phase, Phase::Progressing);
    w.nomad.set_allocation_health(JOB, true);
    let started = status_writes(&w.consul);
    assert!(started >= 1, "the start is written at once");
    let begun = tokio::time::Instant::now();
    let mut passes = 0;
    let mut action = w.op.reconcile().await;
    while w.op.status().phase == Phase::Progressing {
        passes += 1;
        assert!(passes < 1000, "never left the hold");
        tokio::time::advance(action.requeue_after.unwrap_or(Duration::from_millis(250))).await;
        action = w.op.reconcile().await;
    }
    let held = begun.elapsed();
    assert!(held >= Duration::from_secs(20), "{held:?}");
    assert!(
        passes >= 60,
        "the gate was polled about 4 times a second: {passes}"
    );
    assert_eq!(
        w.op.status().phase,
        Phase::Ready,
        "{:?}",
        w.op.status().history.last()
    );
    assert_eq!(
        w.status().phase,
        Phase::Ready,
        "the phase change is written in the pass that makes it"
    );
    let during = status_writes(&w.consul) - started;
    let limit = usize::try_from(held.as_secs()).unwrap() + 2;
    assert!(
        during <= limit,
        "{during} status writes in {held:?} of hold ({passes} passes)"
    );
    assert!(during >= 2, "the hold still reports progress: {during}");
}
