//! The fake on tokio's clock: deployment deadlines pass when paused time is advanced, and
//! blocking reads wake for them.

#![allow(clippy::unwrap_used)] // tests fail loudly

use std::time::Duration;

use serde_json::{Value, json};

use super::FakeNomad;
use crate::nomad::{Deployment, NomadApi};
use crate::transport::QueryOptions;

/// A service job whose deployment must progress within 30 seconds.
fn web() -> Value {
    json!({
        "ID": "web",
        "Type": "service",
        "Update": {"MinHealthyTime": 1_000_000_000u64, "HealthyDeadline": 10_000_000_000u64,
            "ProgressDeadline": 30_000_000_000u64},
        "TaskGroups": [{"Name": "web", "Count": 1, "Tasks": [
            {"Name": "web", "Driver": "docker", "Config": {"image": "nginx"}}
        ]}]
    })
}

/// The job's latest deployment, read without blocking.
async fn latest(n: &FakeNomad) -> Deployment {
    let (d, _) = n
        .job_latest_deployment("web", QueryOptions::NOW)
        .await
        .unwrap();
    d.unwrap()
}

#[tokio::test(start_paused = true)]
async fn a_deployment_fails_when_its_progress_deadline_passes_on_paused_tokio_time() {
    let n = FakeNomad::new();
    n.job_register(&web(), None).await.unwrap();
    tokio::time::advance(Duration::from_secs(29)).await;
    assert_eq!(latest(&n).await.status, "running");
    tokio::time::advance(Duration::from_secs(2)).await;
    assert_eq!(
        latest(&n).await.status_description,
        "Failed due to progress deadline"
    );
}

#[tokio::test(start_paused = true)]
async fn a_blocking_deployment_read_wakes_when_the_progress_deadline_passes() {
    let n = FakeNomad::new();
    n.job_register(&web(), None).await.unwrap();
    let (_, meta) = n
        .job_latest_deployment("web", QueryOptions::NOW)
        .await
        .unwrap();
    let index = meta.index;
    let start = tokio::time::Instant::now();
    let (d, next) = n
        .job_latest_deployment(
            "web",
            QueryOptions::blocking(index, Duration::from_secs(120)),
        )
        .await
        .unwrap();
    assert!(next.index > index);
    assert_eq!(d.unwrap().status, "failed");
    let waited = start.elapsed();
    assert!(
        waited >= Duration::from_secs(30) && waited < Duration::from_secs(31),
        "{waited:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn a_healthy_deployment_has_no_deadline_left() {
    let n = FakeNomad::new();
    n.job_register(&web(), None).await.unwrap();
    n.set_allocation_health("web", true);
    tokio::time::advance(Duration::from_secs(3600)).await;
    assert_eq!(latest(&n).await.status, "successful");
    assert!(n.job("web").unwrap().stable);
}

#[tokio::test]
async fn the_node_has_the_default_cert_volume_and_any_other_once_set() {
    let n = FakeNomad::new();
    let (nodes, _) = n.nodes(QueryOptions::NOW).await.unwrap();
    assert_eq!(nodes.len(), 1);
    assert!(nodes[0].schedulable());
    assert_eq!(
        nodes[0].host_volumes.keys().collect::<Vec<_>>(),
        ["certs"],
        "{nodes:?}"
    );
    n.set_host_volume("edge-certs", "/srv/edge");
    let (nodes, _) = n.nodes(QueryOptions::NOW).await.unwrap();
    assert_eq!(nodes[0].host_volumes["edge-certs"].path, "/srv/edge");
}
