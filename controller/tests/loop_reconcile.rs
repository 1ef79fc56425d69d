//! The whole loop on the in-memory fakes: every assertion is on what the operator wrote (the
//! fakes' recorded calls, the KV tree, the job versions) and on the status document it left.

#![allow(clippy::unwrap_used, clippy::panic)] // tests fail loudly

use std::time::Duration;

use proxy_operator::consul::fake::FakeConsul;
use proxy_operator::consul::{self, ConsulApi};
use proxy_operator::nomad::fake::FakeNomad;
use proxy_operator::plan;
use proxy_operator::probe::fake::FakeProbe;
use proxy_operator::reconcile::{Action, Config, Operator};
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

fn world() -> World {
    let consul = FakeConsul::new();
    let nomad = FakeNomad::new();
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
            };
            let rendered = render::render(&spec, &ctx).unwrap();
            self.probe
                .set_enabled(&plan::expected_entries(&rendered.traefik_kv, "po/traefik/"));
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
