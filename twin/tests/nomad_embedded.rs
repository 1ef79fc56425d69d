//! The twin's Nomad in process (`nomad::embedded`): the same submit path and store as the HTTP
//! API, on the caller's clock, with a client that starts placed allocations at once.

#![allow(clippy::unwrap_used)] // tests fail loudly

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

use hashistack_twin::nomad::embedded::{Clock, Embedded};
use serde_json::{Value, json};

const SECOND: i64 = 1_000_000_000;
const START: i64 = 1_704_067_200 * SECOND;

fn nomad() -> (Embedded, Arc<AtomicI64>) {
    let now = Arc::new(AtomicI64::new(START));
    let read = now.clone();
    (
        Embedded::new(Clock::new(move || read.load(Ordering::SeqCst))),
        now,
    )
}

fn web(image: &str) -> Value {
    json!({"Job": {
        "ID": "web",
        "Type": "service",
        "Update": {
            "MinHealthyTime": SECOND,
            "HealthyDeadline": 5 * SECOND,
            "ProgressDeadline": 10 * SECOND,
        },
        "TaskGroups": [{"Name": "g", "Count": 2, "Tasks": [
            {"Name": "t", "Driver": "raw_exec", "Config": {"command": image}}
        ]}],
    }})
}

fn latest(n: &Embedded) -> Value {
    n.latest_deployment("web").0.unwrap()
}

#[test]
fn a_deployment_fails_only_once_its_progress_deadline_passes_on_the_callers_clock() {
    let (mut n, now) = nomad();
    n.register(&web("/bin/true"), None).unwrap();
    assert_eq!(n.job("web").0.unwrap()["SubmitTime"], json!(START));
    assert_eq!(latest(&n)["Status"], "running");
    assert_eq!(n.tick(), Some(START + 10 * SECOND + 1));

    now.store(START + 10 * SECOND, Ordering::SeqCst);
    n.tick();
    assert_eq!(latest(&n)["Status"], "running", "not past the deadline yet");

    now.store(START + 10 * SECOND + 1, Ordering::SeqCst);
    assert_eq!(n.tick(), None, "no deadline left");
    let d = latest(&n);
    assert_eq!(d["Status"], "failed");
    assert_eq!(d["StatusDescription"], "Failed due to progress deadline");
}

#[test]
fn register_validates_like_the_endpoint_and_seed_only_decodes() {
    let (mut n, _) = nomad();
    let stub = json!({"Job": {"ID": "stub", "Type": "system", "TaskGroups": []}});
    let err = n.register(&stub, None).unwrap_err();
    assert_eq!(err.status, 500);
    assert!(err.message.contains("Missing job task groups"), "{err:?}");
    let err = n
        .register(&json!({"Job": {"Type": "service"}}), None)
        .unwrap_err();
    assert_eq!(
        (err.status, err.message.as_str()),
        (400, "Job ID hasn't been provided")
    );
    let seeded = n.seed(&stub).unwrap();
    assert_eq!(seeded["Name"], "stub", "canonicalized");
    assert_eq!(seeded["Version"], 0);
}

#[test]
fn placed_allocations_run_at_once_and_health_decides_the_deployment() {
    let (mut n, _) = nomad();
    n.register(&web("/bin/true"), Some(0)).unwrap();
    let (allocs, _) = n.allocations("web");
    assert_eq!(allocs.len(), 2);
    assert!(allocs.iter().all(|a| a["ClientStatus"] == "running"));
    assert!(allocs.iter().all(|a| a["DeploymentStatus"].is_null()));

    n.set_health("web", true);
    assert_eq!(latest(&n)["Status"], "successful");
    assert_eq!(n.job("web").0.unwrap()["Stable"], true);

    let answer = n.register(&web("/bin/false"), Some(0)).unwrap_err();
    assert!(answer.message.ends_with("job already exists"), "{answer:?}");
    let index = n.job("web").0.unwrap()["JobModifyIndex"].as_u64();
    n.register(&web("/bin/false"), index).unwrap();
    let (allocs, _) = n.allocations("web");
    let stopped = allocs.iter().filter(|a| a["DesiredStatus"] == "stop");
    assert!(
        stopped.clone().count() == 2
            && stopped.into_iter().all(|a| a["ClientStatus"] == "complete")
    );

    n.set_health("web", false);
    let d = latest(&n);
    assert_eq!(d["Status"], "failed");
    assert_eq!(
        d["StatusDescription"],
        "Failed due to unhealthy allocations"
    );
    let failed = n
        .allocations("web")
        .0
        .into_iter()
        .filter(|a| a["JobVersion"] == 1 && a["ClientStatus"] == "failed")
        .count();
    assert_eq!(failed, 2);
}
