//! The loop over the real HTTP clients against the twin: the status document really goes through
//! `/v1/txn` with CAS, a foreign job registered over Nomad's API is left alone, and the blocking
//! watch picks up an edit.

#![allow(clippy::unwrap_used, clippy::panic)] // tests fail loudly

mod surface_common;

use std::time::Duration;

use hashistack_twin::{Twin, TwinConfig};
use proxy_operator::consul::{ConsulApi, ConsulClient};
use proxy_operator::nomad::{NomadApi, NomadClient};
use proxy_operator::proxy::probe::fake::FakeProbe;
use proxy_operator::reconcile::{Action, Config, Operator};
use proxy_operator::spec::status::{Phase, ProxyStatus};
use proxy_operator::transport::QueryOptions;
use serde_json::json;
use surface_common::twin_clients;

const CONFIG: &str = "proxy-operator/config";
const STATUS: &str = "proxy-operator/status";

async fn twin() -> (Twin, ConsulClient, NomadClient) {
    let twin = Twin::start(TwinConfig::default()).await.unwrap();
    let (consul, nomad) = twin_clients(&twin);
    (twin, consul, nomad)
}

async fn status(consul: &ConsulClient) -> Option<ProxyStatus> {
    let (pair, _) = consul.kv_get(STATUS, QueryOptions::NOW).await.unwrap();
    pair.map(|p| serde_json::from_slice(&p.value).unwrap())
}

fn doc(extra: &str) -> String {
    format!(
        "apiVersion: proxy-operator.io/v1alpha1\nkind: ProxyConfig\nspec:\n  proxy: traefik\n{extra}"
    )
}

#[tokio::test]
async fn statuses_are_written_with_cas_through_the_real_api_and_unchanged_passes_write_nothing() {
    let (twin, consul, nomad) = twin().await;
    let mut op = Operator::new(
        Config::new("proxy-operator"),
        consul.clone(),
        nomad.clone(),
        FakeProbe::healthy(),
    );
    assert!(
        consul
            .kv_put(CONFIG, doc("  paused: true\n").as_bytes(), Some(0))
            .await
            .unwrap()
    );
    assert_eq!(op.reconcile().await, Action::await_change());
    let first = status(&consul).await.expect("written");
    assert_eq!(first.phase, Phase::Paused);
    let (pair, _) = consul.kv_get(STATUS, QueryOptions::NOW).await.unwrap();
    let index = pair.unwrap().modify_index;

    op.reconcile().await;
    let (pair, _) = consul.kv_get(STATUS, QueryOptions::NOW).await.unwrap();
    assert_eq!(
        pair.unwrap().modify_index,
        index,
        "an unchanged pass writes nothing"
    );

    // Someone else rewrote the status: the next write re-reads the index and still lands.
    consul.kv_put(STATUS, b"{}", None).await.unwrap();
    consul
        .kv_put(
            CONFIG,
            b"apiVersion: proxy-operator.io/v1alpha1\nkind: ProxyConfig\nspec:\n  proxy: nginx\n",
            None,
        )
        .await
        .unwrap();
    op.reconcile().await;
    let invalid = status(&consul).await.unwrap();
    assert_eq!(invalid.phase, Phase::Invalid);
    assert!(!invalid.validation_errors.is_empty());
    let (jobs, _) = nomad.job_read("proxy", QueryOptions::NOW).await.unwrap();
    assert!(jobs.is_none(), "nothing registered");
    twin.shutdown().await;
}

#[tokio::test]
async fn a_foreign_job_registered_through_nomad_is_stalled_and_untouched() {
    let (twin, consul, nomad) = twin().await;
    let foreign = json!({
        "ID": "proxy", "Name": "proxy", "Type": "service", "Datacenters": ["dc1"],
        "TaskGroups": [{"Name": "web", "Count": 0, "Tasks": [{"Name": "t", "Driver": "raw_exec", "Config": {"command": "/bin/true"}}]}]
    });
    nomad.job_register(&foreign, None).await.unwrap();
    let (before, _) = nomad.job_read("proxy", QueryOptions::NOW).await.unwrap();
    let before = before.unwrap();
    let mut op = Operator::new(
        Config::new("proxy-operator"),
        consul.clone(),
        nomad.clone(),
        FakeProbe::healthy(),
    );
    consul
        .kv_put(CONFIG, doc("").as_bytes(), Some(0))
        .await
        .unwrap();
    op.reconcile().await;
    let s = status(&consul).await.unwrap();
    assert_eq!(s.phase, Phase::Stalled);
    let (after, _) = nomad.job_read("proxy", QueryOptions::NOW).await.unwrap();
    let after = after.unwrap();
    assert_eq!(after.version, before.version);
    assert_eq!(after.job_modify_index, before.job_modify_index);
    let (tree, _) = consul
        .kv_list("proxy-operator/traefik/", QueryOptions::NOW)
        .await
        .unwrap();
    assert!(tree.is_empty(), "no policy written for a job we do not own");
    twin.shutdown().await;
}

#[tokio::test]
async fn run_picks_up_an_edit_through_the_blocking_watch() {
    let (twin, consul, nomad) = twin().await;
    let config = Config::new("proxy-operator").debounce(Duration::from_millis(10));
    let op = Operator::new(config, consul.clone(), nomad, FakeProbe::healthy());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(op.run(async move {
        let _ = stopped.await;
    }));
    tokio::time::sleep(Duration::from_millis(200)).await;
    let edited = tokio::time::Instant::now();
    consul
        .kv_put(CONFIG, doc("  paused: true\n").as_bytes(), None)
        .await
        .unwrap();
    loop {
        if status(&consul)
            .await
            .is_some_and(|s| s.phase == Phase::Paused)
        {
            break;
        }
        assert!(
            edited.elapsed() < Duration::from_secs(5),
            "the edit was not picked up"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let _ = stop.send(());
    tokio::time::timeout(Duration::from_secs(5), task)
        .await
        .unwrap()
        .unwrap();
    twin.shutdown().await;
}
