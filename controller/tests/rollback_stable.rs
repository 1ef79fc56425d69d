//! Rollback without status on a Nomad that gives system jobs no deployments (before 1.11): the
//! operator marks the version that passed its gate `Stable` itself (`POST /v1/job/:id/stable`),
//! so a lost status document never leaves a failed change without a rollback target.

#![allow(clippy::unwrap_used, clippy::panic)] // tests fail loudly

use std::time::Duration;

use proxy_operator::consul::fake::FakeConsul;
use proxy_operator::nomad::NomadApi;
use proxy_operator::nomad::fake::FakeNomad;
use proxy_operator::proxy;
use proxy_operator::proxy::probe::fake::FakeProbe;
use proxy_operator::reconcile::{Config, Operator};
use proxy_operator::render::{self, RenderContext};
use proxy_operator::spec::{self, status::Phase, status::ProxyStatus};
use proxy_operator::transport::QueryOptions;

const PREFIX: &str = "po";
const CONFIG: &str = "po/config";
const STATUS: &str = "po/status";
const JOURNAL: &str = "po/rollout";
const JOB: &str = "proxy";

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
    type: system
    resources:
      cpu: {cpu}
"
    )
}

type Op = Operator<FakeConsul, FakeNomad, FakeProbe>;

fn operator(consul: &FakeConsul, nomad: &FakeNomad, probe: &FakeProbe) -> Op {
    Operator::new(
        Config::new(PREFIX),
        consul.clone(),
        nomad.clone(),
        probe.clone(),
    )
}

async fn until(op: &mut Op, done: impl Fn(&Op) -> bool) {
    let mut action = op.reconcile().await;
    for _ in 0..100 {
        if done(op) {
            return;
        }
        tokio::time::advance(action.requeue_after.unwrap_or(Duration::from_millis(250))).await;
        action = op.reconcile().await;
    }
    panic!(
        "never got there; phase {}; status {:#?}",
        op.phase().name(),
        op.status()
    );
}

/// Writes the document, and has the fake proxy load what it renders (the gate reads it).
fn put(consul: &FakeConsul, probe: &FakeProbe, cpu: u32) {
    let document = with_cpu(cpu);
    consul.set(CONFIG, &document);
    let spec = spec::load(document.as_bytes()).unwrap();
    let ctx = RenderContext {
        prefix: PREFIX.into(),
        owner: PREFIX.into(),
        basic_auth_users: None,
        ..RenderContext::default()
    };
    let rendered = render::render(&spec, &ctx).unwrap();
    probe.set_enabled(&proxy::traefik::expected_entries(
        &rendered.traefik_kv,
        "po/traefik/",
    ));
}

/// A foreign job holds the handover's slot b, so structural changes go in place (a new version
/// of the serving job, reverted on failure), which is where a rollback target is needed: what a
/// Caddy always gets. The handover needs none (`tests/availability_loop.rs`).
fn hold_slot_b(nomad: &FakeNomad) {
    nomad.seed_job(&serde_json::json!({
        "ID": "proxy-b", "Name": "proxy-b", "Type": "system", "TaskGroups": [],
        "Meta": {"proxy-operator/owner": "someone-else"}
    }));
}

fn digest(job: &proxy_operator::nomad::Job) -> Option<String> {
    job.meta.get("proxy-operator/spec-digest").cloned()
}

#[tokio::test(start_paused = true)]
async fn a_system_job_without_deployments_is_marked_stable_once_it_passes_so_a_lost_status_still_rolls_back()
 {
    let (consul, nomad, probe) = (FakeConsul::new(), FakeNomad::new(), FakeProbe::healthy());
    nomad.set_deployments_enabled(false);
    hold_slot_b(&nomad);
    let mut op = operator(&consul, &nomad, &probe);

    put(&consul, &probe, 100);
    until(&mut op, |op| op.status().phase == Phase::Ready).await;
    put(&consul, &probe, 150);
    until(&mut op, |op| {
        op.status().phase == Phase::Ready && nomad.job(JOB).is_some_and(|j| j.version == 1)
    })
    .await;
    let good = nomad.job(JOB).unwrap();
    let (deployment, _) = nomad
        .job_latest_deployment(JOB, QueryOptions::NOW)
        .await
        .unwrap();
    assert!(
        deployment.is_none(),
        "the premise: Nomad made no deployment that could mark it"
    );
    assert!(good.stable, "the operator marked the version that passed");
    let marks = nomad.calls_of("job_stable");
    assert_eq!(marks.len(), 2, "once per version that passed: {marks:?}");

    // The status document and the journal are lost; a new operator process starts.
    consul.remove(STATUS);
    consul.remove(JOURNAL);
    let mut op = operator(&consul, &nomad, &probe);
    put(&consul, &probe, 200);
    op.reconcile().await;
    assert_eq!(op.phase().name(), "Verifying");
    nomad.crash_allocations(JOB, &[("Terminated", "Exit Code: 1")]);
    until(&mut op, |op| op.phase().is_at_rest()).await;

    let status: ProxyStatus = serde_json::from_slice(&consul.value(STATUS).unwrap()).unwrap();
    assert_eq!(status.phase, Phase::RolledBack, "{status:?}");
    let now = nomad.job(JOB).unwrap();
    assert_eq!(
        digest(&now),
        digest(&good),
        "back to the version that passed"
    );
    assert_eq!(
        nomad.calls_of("job_stable").len(),
        2,
        "the failed version is never marked"
    );
}

#[tokio::test(start_paused = true)]
async fn a_version_nomad_already_marked_stable_is_not_marked_again() {
    let (consul, nomad, probe) = (FakeConsul::new(), FakeNomad::new(), FakeProbe::healthy());
    let mut op = operator(&consul, &nomad, &probe);
    put(&consul, &probe, 100);
    op.reconcile().await;
    until(&mut op, |op| {
        nomad.set_allocation_health(JOB, true);
        op.status().phase == Phase::Ready
    })
    .await;
    assert!(nomad.job(JOB).unwrap().stable, "the deployment marked it");
    assert!(
        nomad.calls_of("job_stable").is_empty(),
        "{:?}",
        nomad.calls()
    );
}
