//! Preflight of host volumes on the in-memory fakes: a document whose job mounts a Nomad host
//! volume that a node the proxy can run on lacks is `Invalid`, names the volume, the node and
//! the fix, and changes nothing; once the node has it, the same document rolls out.

#![allow(clippy::unwrap_used, clippy::panic)] // tests fail loudly

use proxy_operator::consul::fake::FakeConsul;
use proxy_operator::nomad::fake::FakeNomad;
use proxy_operator::proxy::probe::fake::FakeProbe;
use proxy_operator::reconcile::{Config, Operator, PREFLIGHT_RECHECK};
use proxy_operator::spec::status::{Phase, ProxyStatus};

const CONFIG: &str = "po/config";
const STATUS: &str = "po/status";
const JOURNAL: &str = "po/rollout";
const JOB: &str = "proxy";

fn with_volume(volume: &str) -> String {
    format!(
        "apiVersion: proxy-operator.io/v1alpha1
kind: ProxyConfig
spec:
  proxy: traefik
  job:
    certVolume: {volume}
"
    )
}

fn status(consul: &FakeConsul) -> ProxyStatus {
    serde_json::from_slice(&consul.value(STATUS).unwrap()).unwrap()
}

#[tokio::test(start_paused = true)]
async fn a_host_volume_missing_on_the_proxys_node_is_invalid_names_the_node_and_the_fix_and_writes_nothing()
 {
    let (consul, nomad, probe) = (FakeConsul::new(), FakeNomad::new(), FakeProbe::healthy());
    let mut op = Operator::new(Config::new("po"), consul.clone(), nomad.clone(), probe);
    consul.set(CONFIG, with_volume("edge-certs"));
    let action = op.reconcile().await;

    assert_eq!(
        action.requeue_after,
        Some(PREFLIGHT_RECHECK),
        "the node is what is wrong: looked at again soon"
    );
    let invalid = status(&consul);
    assert_eq!(invalid.phase, Phase::Invalid, "{invalid:?}");
    let text = serde_json::to_string(&invalid.validation_errors).unwrap();
    assert!(text.contains("spec.job.certVolume"), "{text}");
    assert!(text.contains("edge-certs"), "{text}");
    assert!(text.contains("hashistack-twin ("), "the node: {text}");
    assert!(text.contains("host_volume"), "the fix: {text}");
    assert!(
        nomad.calls_of("job_register").is_empty(),
        "nothing registered"
    );
    assert!(nomad.job(JOB).is_none());
    assert!(consul.value(JOURNAL).is_none(), "no rollout started");
    assert_eq!(nomad.calls_of("nodes").len(), 1, "{:?}", nomad.calls());

    // The node gets the volume; the recheck rolls out with no edit.
    nomad.set_host_volume("edge-certs", "/srv/edge/certs");
    op.reconcile().await;
    assert_eq!(
        nomad.calls_of("job_register").len(),
        1,
        "{:?}",
        status(&consul)
    );
}

#[tokio::test(start_paused = true)]
async fn nomad_failing_to_list_its_nodes_starts_nothing_and_retries() {
    let (consul, nomad, probe) = (FakeConsul::new(), FakeNomad::new(), FakeProbe::healthy());
    let mut op = Operator::new(Config::new("po"), consul.clone(), nomad.clone(), probe);
    consul.set(CONFIG, with_volume("certs"));
    nomad.fail_next(
        "nodes",
        proxy_operator::nomad::Error::injected("nodes", 503, "No cluster leader"),
    );
    let action = op.reconcile().await;
    assert!(action.requeue_after.is_some(), "retried");
    assert!(nomad.calls_of("job_register").is_empty());
    op.reconcile().await;
    assert_eq!(
        nomad.calls_of("job_register").len(),
        1,
        "the default volume is there"
    );
}

/// A loopback port nothing listens on, for entry points the port preflight then finds free (the
/// default :80 would be probed by every test of this binary at once).
fn unused_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[tokio::test(start_paused = true)]
async fn a_raw_exec_proxy_mounts_no_volume_and_never_asks_for_the_nodes() {
    let (consul, nomad, probe) = (FakeConsul::new(), FakeNomad::new(), FakeProbe::healthy());
    let mut op = Operator::new(Config::new("po"), consul.clone(), nomad.clone(), probe);
    consul.set(
        CONFIG,
        format!("apiVersion: proxy-operator.io/v1alpha1\nkind: ProxyConfig\nspec:\n  proxy: traefik\n  entryPoints:\n    web: {{address: \"127.0.0.1:{}\"}}\n    websecure: {{address: \"127.0.0.1:{}\"}}\n  job:\n    driver: {{rawExec: {{command: traefik}}}}\n    certVolume: nowhere\n", unused_port(), unused_port()),
    );
    op.reconcile().await;
    assert!(nomad.calls_of("nodes").is_empty());
    assert_eq!(
        nomad.calls_of("job_register").len(),
        1,
        "{:?}",
        status(&consul)
    );
}
