//! The job and allocation lifecycle an operator drives: allocation stop, forced evaluation, an
//! evaluation's allocations, and deployment pause / resume / promote / fail / allocation health
//! with Nomad's refusals (SRC nomad/alloc_endpoint.go, nomad/job_endpoint.go `Evaluate`,
//! nomad/deployment_endpoint.go, nomad/structs/errors.go).
#![allow(clippy::unwrap_used, clippy::panic)]

mod nomad_support;

use nomad_support::{Nomad, sh_job};
use serde_json::{Value, json};
use std::collections::BTreeSet;
use std::time::Duration;

const SEC: u64 = 1_000_000_000;

fn keys(v: &Value) -> BTreeSet<String> {
    v.as_object().unwrap().keys().cloned().collect()
}

fn fixture(name: &str) -> Value {
    let path = format!("{}/../fixtures/nomad/{name}", env!("CARGO_MANIFEST_DIR"));
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

async fn running(n: &Nomad, job: &str) -> Vec<Value> {
    let list = n
        .wait_for(
            &format!("/v1/job/{job}/allocations"),
            Duration::from_secs(20),
            |v| {
                v.as_array()
                    .unwrap()
                    .iter()
                    .any(|a| a["ClientStatus"] == "running" && a["DesiredStatus"] == "run")
            },
        )
        .await;
    list.as_array()
        .unwrap()
        .iter()
        .filter(|a| a["ClientStatus"] == "running" && a["DesiredStatus"] == "run")
        .cloned()
        .collect()
}

#[tokio::test]
async fn stopping_an_allocation_migrates_it_and_its_evaluation_lists_the_replacement() {
    let n = Nomad::start().await;
    n.register(sh_job("web", "exec sleep 1000")).await;
    let first = running(&n, "web").await.remove(0);
    let first_id = first["ID"].as_str().unwrap();
    let a = n
        .send("POST", &format!("/v1/allocation/{first_id}/stop"), None)
        .await;
    assert_eq!(a.status, 200, "{}", a.text);
    let body = a.json();
    assert_eq!(
        keys(&body),
        BTreeSet::from(["EvalID".to_string(), "Index".to_string()])
    );
    assert_eq!(body["Index"].as_u64(), Some(a.index()));
    let eval_id = body["EvalID"].as_str().unwrap();
    let eval = n.get(&format!("/v1/evaluation/{eval_id}")).await;
    assert_eq!(eval["TriggeredBy"], "alloc-stop");
    assert_eq!(eval["JobID"], "web");

    let old = n
        .wait_for(
            &format!("/v1/allocation/{first_id}"),
            Duration::from_secs(15),
            |a| a["ClientStatus"] == "complete",
        )
        .await;
    assert_eq!(old["DesiredStatus"], "stop");
    assert_eq!(old["DesiredDescription"], "alloc is being migrated");
    assert_eq!(old["DesiredTransition"]["Migrate"], true);
    let replacement = running(&n, "web").await.remove(0);
    assert_ne!(
        replacement["ID"], first["ID"],
        "the job still wants one: a replacement runs"
    );
    assert_eq!(replacement["EvalID"], eval_id);
    let placed = n
        .get(&format!("/v1/evaluation/{eval_id}/allocations"))
        .await;
    let ids: Vec<&str> = placed
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["ID"].as_str().unwrap())
        .collect();
    assert_eq!(ids, vec![replacement["ID"].as_str().unwrap()]);
    assert_eq!(
        n.get("/v1/evaluation/00000000-0000-0000-0000-000000000000/allocations")
            .await,
        json!([])
    );

    let unknown = n
        .send(
            "POST",
            "/v1/allocation/00000000-0000-0000-0000-000000000000/stop",
            None,
        )
        .await;
    assert_eq!(
        (unknown.status, unknown.text.as_str()),
        (404, "allocation not found")
    );
    let bad = n
        .send(
            "PUT",
            &format!("/v1/allocation/{first_id}/stop?no_shutdown_delay=maybe"),
            None,
        )
        .await;
    assert_eq!(bad.status, 500);
    assert!(
        bad.text
            .starts_with("no_shutdown_delay value is not a boolean"),
        "{}",
        bad.text
    );
    n.shutdown().await;
}

#[tokio::test]
async fn a_stopped_job_keeps_its_allocation_stopped_after_an_alloc_stop() {
    let n = Nomad::start().await;
    let mut job = sh_job("once", "exec sleep 1000");
    job["Type"] = json!("batch");
    n.register(job).await;
    let alloc = running(&n, "once").await.remove(0);
    assert_eq!(n.send("DELETE", "/v1/job/once", None).await.status, 200);
    let id = alloc["ID"].as_str().unwrap();
    n.wait_for(
        &format!("/v1/allocation/{id}"),
        Duration::from_secs(15),
        |a| a["ClientStatus"] == "complete",
    )
    .await;
    let a = n
        .send("POST", &format!("/v1/allocation/{id}/stop"), None)
        .await;
    assert_eq!(a.status, 200, "{}", a.text);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let allocs = n.get("/v1/job/once/allocations").await;
    assert_eq!(
        allocs.as_array().unwrap().len(),
        1,
        "a stopped job wants nothing: no replacement"
    );
    n.shutdown().await;
}

#[tokio::test]
async fn forcing_an_evaluation_creates_a_job_register_eval_and_refuses_like_nomad() {
    let n = Nomad::start().await;
    n.register(sh_job("web", "exec sleep 1000")).await;
    running(&n, "web").await;
    let job = n.get("/v1/job/web").await;
    let a = n.send("POST", "/v1/job/web/evaluate", None).await;
    assert_eq!(a.status, 200, "{}", a.text);
    let out = a.json();
    assert_eq!(
        out["JobModifyIndex"], job["ModifyIndex"],
        "Job.Evaluate reports the job's ModifyIndex"
    );
    assert_eq!(out["Index"].as_u64(), Some(a.index()));
    assert_eq!(out["EvalCreateIndex"], out["Index"]);
    let eval = n
        .get(&format!(
            "/v1/evaluation/{}",
            out["EvalID"].as_str().unwrap()
        ))
        .await;
    assert_eq!(eval["TriggeredBy"], "job-register");
    assert_eq!(
        n.get("/v1/job/web").await["Version"],
        job["Version"],
        "no new version"
    );
    let allocs = n.get("/v1/job/web/allocations").await;
    assert_eq!(
        allocs.as_array().unwrap().len(),
        1,
        "an unchanged job keeps its allocation"
    );

    let with_body = n
        .send(
            "PUT",
            "/v1/job/web/evaluate",
            Some(json!({"JobID": "web", "EvalOptions": {"ForceReschedule": true}})),
        )
        .await;
    assert_eq!(with_body.status, 200, "{}", with_body.text);
    let other = n
        .send("PUT", "/v1/job/web/evaluate", Some(json!({"JobID": "api"})))
        .await;
    assert_eq!(
        (other.status, other.text.as_str()),
        (400, "JobID not same as job name")
    );
    let none = n
        .send(
            "PUT",
            "/v1/job/web/evaluate",
            Some(json!({"EvalOptions": {}})),
        )
        .await;
    assert_eq!(
        (none.status, none.text.as_str()),
        (400, "Job ID must be specified")
    );
    let unknown = n.send("POST", "/v1/job/nope/evaluate", None).await;
    assert_eq!(
        (unknown.status, unknown.text.as_str()),
        (500, "job not found")
    );
    let mut periodic = sh_job("cron", "true");
    periodic["Type"] = json!("batch");
    periodic["Periodic"] = json!({"Enabled": true, "Spec": "*/5 * * * *", "SpecType": "cron"});
    n.register(periodic).await;
    let refused = n.send("POST", "/v1/job/cron/evaluate", None).await;
    assert_eq!(
        (refused.status, refused.text.as_str()),
        (500, "can't evaluate periodic job")
    );
    n.shutdown().await;
}

fn manual_health_job(id: &str) -> Value {
    let mut job = sh_job(id, "exec sleep 1000");
    job["TaskGroups"][0]["Update"] = json!({
        "MaxParallel": 1, "HealthCheck": "manual", "MinHealthyTime": 0,
        "HealthyDeadline": 60 * SEC, "ProgressDeadline": 120 * SEC, "AutoRevert": false,
    });
    job
}

async fn deployment_id(n: &Nomad, job: &str) -> String {
    n.get(&format!("/v1/job/{job}/deployment")).await["ID"]
        .as_str()
        .unwrap()
        .to_string()
}

#[tokio::test]
async fn deployment_pause_resume_promote_and_alloc_health_answer_as_documented() {
    let n = Nomad::start().await;
    n.register(manual_health_job("web")).await;
    let alloc = running(&n, "web").await.remove(0);
    let d = deployment_id(&n, "web").await;

    let pause = n
        .send(
            "PUT",
            &format!("/v1/deployment/pause/{d}"),
            Some(json!({"DeploymentID": d, "Pause": true})),
        )
        .await;
    assert_eq!(pause.status, 200, "{}", pause.text);
    assert_eq!(
        keys(&pause.json()),
        keys(&fixture("deployment-pause-response.json"))
    );
    let dep = n.get(&format!("/v1/deployment/{d}")).await;
    assert_eq!(
        (dep["Status"].as_str(), dep["StatusDescription"].as_str()),
        (Some("paused"), Some("Deployment is paused"))
    );
    let resume = n
        .send(
            "PUT",
            &format!("/v1/deployment/pause/{d}"),
            Some(json!({"DeploymentID": d, "Pause": false})),
        )
        .await;
    assert_eq!(resume.status, 200, "{}", resume.text);
    assert_eq!(
        n.get(&format!("/v1/deployment/{d}")).await["Status"],
        "running"
    );

    let promote = n
        .send(
            "PUT",
            &format!("/v1/deployment/promote/{d}"),
            Some(json!({"DeploymentID": d, "All": true})),
        )
        .await;
    assert_eq!(
        (promote.status, promote.text.as_str()),
        (500, "no canaries to promote")
    );
    let mismatch = n
        .send(
            "PUT",
            &format!("/v1/deployment/promote/{d}"),
            Some(json!({"DeploymentID": "other", "All": true})),
        )
        .await;
    assert_eq!(
        (mismatch.status, mismatch.text.as_str()),
        (400, "Deployment ID does not match")
    );

    let empty = n
        .send(
            "PUT",
            &format!("/v1/deployment/allocation-health/{d}"),
            Some(json!({"DeploymentID": d})),
        )
        .await;
    assert_eq!(
        (empty.status, empty.text.as_str()),
        (
            500,
            "must specify at least one healthy/unhealthy allocation ID"
        )
    );
    // Marking an allocation unhealthy fails the deployment at once.
    let unhealthy = n
        .send(
            "PUT",
            &format!("/v1/deployment/allocation-health/{d}"),
            Some(json!({"DeploymentID": d, "UnhealthyAllocationIDs": [alloc["ID"]]})),
        )
        .await;
    assert_eq!(unhealthy.status, 200, "{}", unhealthy.text);
    let dep = n.get(&format!("/v1/deployment/{d}")).await;
    assert_eq!(dep["Status"], "failed");
    assert_eq!(
        dep["StatusDescription"],
        "Failed due to unhealthy allocations"
    );
    let a = n
        .get(&format!("/v1/allocation/{}", alloc["ID"].as_str().unwrap()))
        .await;
    assert_eq!(a["DeploymentStatus"]["Healthy"], false);

    // A terminal deployment refuses every action with its own text.
    let refusals = [
        (
            "pause",
            json!({"DeploymentID": d, "Pause": true}),
            "can't pause terminal deployment",
        ),
        (
            "pause",
            json!({"DeploymentID": d, "Pause": false}),
            "can't resume terminal deployment",
        ),
        (
            "promote",
            json!({"DeploymentID": d, "All": true}),
            "can't promote terminal deployment",
        ),
        (
            "fail",
            json!({"DeploymentID": d}),
            "can't fail terminal deployment",
        ),
        (
            "allocation-health",
            json!({"DeploymentID": d, "HealthyAllocationIDs": [alloc["ID"]]}),
            "can't set health of allocations for a terminal deployment",
        ),
    ];
    for (action, body, text) in refusals {
        let a = n
            .send("PUT", &format!("/v1/deployment/{action}/{d}"), Some(body))
            .await;
        assert_eq!((a.status, a.text.as_str()), (500, text), "{action}");
    }
    // An unknown deployment is "deployment not found" for every action.
    let ghost = "00000000-0000-0000-0000-000000000000";
    for (action, body) in [
        ("pause", json!({"DeploymentID": ghost, "Pause": true})),
        ("promote", json!({"DeploymentID": ghost, "All": true})),
        ("fail", json!({"DeploymentID": ghost})),
        (
            "allocation-health",
            json!({"DeploymentID": ghost, "HealthyAllocationIDs": ["x"]}),
        ),
    ] {
        let a = n
            .send(
                "PUT",
                &format!("/v1/deployment/{action}/{ghost}"),
                Some(body),
            )
            .await;
        assert_eq!(
            (a.status, a.text.as_str()),
            (500, "deployment not found"),
            "{action}"
        );
    }
    n.shutdown().await;
}

#[tokio::test]
async fn healthy_alloc_health_completes_a_manual_deployment_and_marks_the_version_stable() {
    let n = Nomad::start().await;
    n.register(manual_health_job("web")).await;
    let alloc = running(&n, "web").await.remove(0);
    let d = deployment_id(&n, "web").await;
    let a = n
        .send(
            "POST",
            &format!("/v1/deployment/allocation-health/{d}"),
            Some(json!({"DeploymentID": d, "HealthyAllocationIDs": [alloc["ID"]]})),
        )
        .await;
    assert_eq!(a.status, 200, "{}", a.text);
    let body = a.json();
    assert!(
        body.get("RevertedJobVersion").is_none(),
        "no rollback: {body}"
    );
    let dep = n.get(&format!("/v1/deployment/{d}")).await;
    assert_eq!(dep["Status"], "successful");
    assert_eq!(n.get("/v1/job/web").await["Stable"], true);
    n.shutdown().await;
}
