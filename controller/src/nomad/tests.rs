//! Unit tests of the Nomad types (against the doc fixtures) and of the fake's semantics.

use std::time::Duration;

use serde_json::{Value, json};

use super::fake::FakeNomad;
use super::*;
use crate::transport::QueryOptions;

fn fixture(name: &str) -> String {
    let path = format!("{}/../fixtures/nomad/{name}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn decode<T: serde::de::DeserializeOwned>(name: &str) -> T {
    serde_json::from_str(&fixture(name)).unwrap_or_else(|e| panic!("{name}: {e}"))
}

#[test]
fn every_nomad_response_fixture_decodes_into_the_client_types() {
    let job: Job = decode("job-read-response.json");
    assert_eq!(
        (job.id.as_str(), job.job_type.as_str(), job.job_modify_index),
        ("example", "batch", 7)
    );
    assert!(
        job.raw.get("TaskGroups").is_some(),
        "the raw document is kept"
    );
    for name in [
        "job-versions-response.json",
        "job-versions-diffs-response.json",
    ] {
        let v: JobVersions = decode(name);
        assert!(!v.versions.is_empty(), "{name}");
    }
    let diffs: JobVersions = decode("job-versions-diffs-response.json");
    assert!(diffs.diffs.iter().any(|d| !d.task_groups.is_empty()));
    let versions: JobVersions = decode("job-versions-response.json");
    assert!(versions.versions[0].stable);
    for name in [
        "job-register-response.json",
        "job-update-response.json",
        "job-revert-response.json",
        "job-deregister-response.json",
    ] {
        let r: JobWriteResponse = decode(name);
        assert!(r.job_modify_index > 0, "{name}");
    }
    let plan: PlanResponse = decode("job-plan-response.json");
    assert_eq!(
        plan.diff.as_ref().map(|d| d.diff_type.as_str()),
        Some("Added")
    );
    assert_eq!(
        plan.annotations
            .as_ref()
            .map(|a| a.desired_tg_updates["cache"].place),
        Some(11)
    );
    assert_eq!(
        plan.diff
            .as_ref()
            .map(|d| d.task_groups[0].tasks[0].annotations.clone()),
        Some(vec!["forces create".to_owned()])
    );
    for name in [
        "job-allocations-response.json",
        "allocation-list-response.json",
        "deployment-allocations-response.json",
    ] {
        let allocs: Vec<AllocationStub> = decode(name);
        assert!(
            !allocs[0].id.is_empty() && !allocs[0].client_status.is_empty(),
            "{name}"
        );
    }
    let allocs: Vec<AllocationStub> = decode("allocation-list-response.json");
    assert_eq!(allocs[0].healthy(), Some(true));
    let alloc: AllocationStub = decode("allocation-read-response.json");
    assert!(!alloc.task_states.is_empty());
    for name in [
        "job-latest-deployment-response.json",
        "deployment-read-response.json",
    ] {
        let d: Deployment = decode(name);
        assert!(!d.status.is_empty() && !d.task_groups.is_empty(), "{name}");
    }
    let latest: Deployment = decode("job-latest-deployment-response.json");
    assert_eq!(latest.task_groups["cache"].healthy_allocs, 2);
    for name in [
        "deployment-list-response.json",
        "job-deployments-response.json",
    ] {
        let ds: Vec<Deployment> = decode(name);
        assert!(!ds.is_empty(), "{name}");
    }
    let failed: DeploymentUpdateResponse = decode("deployment-fail-response.json");
    assert_eq!(failed.reverted_job_version, Some(1));
    for name in [
        "deployment-pause-response.json",
        "deployment-promote-response.json",
        "deployment-alloc-health-response.json",
    ] {
        let r: DeploymentUpdateResponse = decode(name);
        assert!(r.deployment_modify_index > 0, "{name}");
    }
    let services: Vec<ServiceNamespace> = decode("services-list-response.json");
    assert_eq!(services[0].services[0].service_name, "example-cache-redis");
    for name in ["service-read-response.json", "job-services-response.json"] {
        let regs: Vec<ServiceRegistration> = decode(name);
        assert!(regs[0].port > 0, "{name}");
    }
    let leader: String = decode("status-leader-response.json");
    assert_eq!(leader, "127.0.0.1:4647");
    let eval: Evaluation = decode("evaluation-read-response.json");
    assert_eq!(eval.status, "blocked");
    for name in [
        "evaluation-list-response.json",
        "job-evaluations-response.json",
    ] {
        let evals: Vec<Evaluation> = decode(name);
        assert!(!evals[0].id.is_empty(), "{name}");
    }
    let jobs: Vec<JobListStub> = decode("job-list-response.json");
    assert!(!jobs[0].id.is_empty());
    let summary: JobSummary = decode("job-summary-response.json");
    assert_eq!(summary.summary["cache"]["Running"], 1);
    let namespaces: Vec<Namespace> = decode("namespace-list-response.json");
    assert_eq!(namespaces[0].name, "default");
    let stable: JobStableResponse = decode("job-stable-response.json");
    assert!(stable.job_modify_index > 0);
}

#[test]
fn register_revert_and_plan_bodies_match_the_documented_requests() {
    let job = json!({"ID": "cache", "TaskGroups": []});
    let sent = serde_json::to_value(JobRegisterRequest {
        job: &job,
        enforce_index: true,
        job_modify_index: Some(7),
    })
    .unwrap();
    let documented: Value = serde_json::from_str(&fixture("job-update-request.json")).unwrap();
    let keys = |v: &Value| {
        v.as_object()
            .map(|m| m.keys().cloned().collect::<Vec<_>>())
            .unwrap_or_default()
    };
    assert_eq!(keys(&sent), keys(&documented));
    assert_eq!(
        sent["EnforceIndex"].is_boolean(),
        documented["EnforceIndex"].is_boolean()
    );
    assert_eq!(
        sent["JobModifyIndex"].is_u64(),
        documented["JobModifyIndex"].is_u64()
    );
    let plain = serde_json::to_value(JobRegisterRequest {
        job: &job,
        enforce_index: false,
        job_modify_index: None,
    })
    .unwrap();
    assert_eq!(
        keys(&plain),
        keys(&serde_json::from_str::<Value>(&fixture("job-register-request.json")).unwrap())
    );

    let revert = serde_json::to_value(JobRevertRequest {
        job_id: "my-job",
        job_version: 2,
        enforce_prior_version: None,
    })
    .unwrap();
    assert_eq!(
        revert,
        serde_json::from_str::<Value>(&fixture("job-revert-request.json")).unwrap()
    );
    let fenced = serde_json::to_value(JobRevertRequest {
        job_id: "my-job",
        job_version: 2,
        enforce_prior_version: Some(3),
    })
    .unwrap();
    assert_eq!(fenced["EnforcePriorVersion"], 3);

    let empty = json!({});
    let plan = serde_json::to_value(JobPlanRequest {
        job: &empty,
        diff: true,
        policy_override: false,
    })
    .unwrap();
    assert_eq!(
        plan,
        serde_json::from_str::<Value>(&fixture("job-plan-request.json")).unwrap()
    );
}

#[test]
fn a_job_wrapped_in_a_job_key_is_unwrapped() {
    let wrapped: Value = serde_json::from_str(&fixture("job-register-request.json")).unwrap();
    assert_eq!(unwrap_job(&wrapped)["ID"], "cache");
    assert_eq!(unwrap_job(&wrapped["Job"])["ID"], "cache");
}

fn proxy_job(image: &str) -> Value {
    json!({
        "ID": "proxy",
        "Type": "system",
        "Meta": {"proxy-operator/owner": "op"},
        "Update": {"AutoRevert": true},
        "TaskGroups": [{"Name": "proxy", "Count": 1, "Tasks": [{"Name": "traefik", "Driver": "docker", "Config": {"image": image}}]}]
    })
}

#[tokio::test]
async fn fake_enforce_index_refuses_stale_and_duplicate_creates_with_nomads_messages() {
    let n = FakeNomad::new();
    let created = n
        .job_register(&proxy_job("traefik:3.1"), Some(0))
        .await
        .unwrap();
    let err = n
        .job_register(&proxy_job("traefik:3.2"), Some(0))
        .await
        .unwrap_err();
    assert!(err.is_conflict() && !err.is_retryable(), "{err}");
    assert!(err.message().unwrap().ends_with("job already exists"));
    let err = n
        .job_register(
            &proxy_job("traefik:3.2"),
            Some(created.job_modify_index + 5),
        )
        .await
        .unwrap_err();
    assert!(
        err.message()
            .unwrap()
            .contains("conflicting job modify index"),
        "{err}"
    );
    let updated = n
        .job_register(&proxy_job("traefik:3.2"), Some(created.job_modify_index))
        .await
        .unwrap();
    assert!(updated.job_modify_index > created.job_modify_index);
    let job = n.job("proxy").unwrap();
    assert_eq!(job.version, 1);
    assert_eq!(job.meta["proxy-operator/owner"], "op");
}

#[tokio::test]
async fn fake_identical_register_creates_no_version() {
    let n = FakeNomad::new();
    let a = n
        .job_register(&proxy_job("traefik:3.1"), None)
        .await
        .unwrap();
    let b = n
        .job_register(&proxy_job("traefik:3.1"), None)
        .await
        .unwrap();
    assert_eq!(a.job_modify_index, b.job_modify_index);
    assert_ne!(a.eval_id, b.eval_id, "a new evaluation all the same");
    assert_eq!(n.versions("proxy").len(), 1);
}

#[tokio::test]
async fn fake_revert_creates_a_new_version_and_enforces_the_prior_version() {
    let n = FakeNomad::new();
    n.job_register(&proxy_job("traefik:3.1"), None)
        .await
        .unwrap();
    n.job_register(&proxy_job("traefik:3.2"), None)
        .await
        .unwrap();
    let err = n.job_revert("proxy", 0, Some(0)).await.unwrap_err();
    assert!(matches!(err, Error::PriorVersionConflict { .. }), "{err}");
    let err = n.job_revert("proxy", 1, None).await.unwrap_err();
    assert_eq!(err.message(), Some("can't revert to current version"));
    n.job_revert("proxy", 0, Some(1)).await.unwrap();
    let job = n.job("proxy").unwrap();
    assert_eq!(job.version, 2);
    assert!(!job.stable);
    assert_eq!(
        job.raw.pointer("/TaskGroups/0/Tasks/0/Config/image"),
        Some(&json!("traefik:3.1"))
    );
    let versions = n.job_versions("proxy", false).await.unwrap().versions;
    assert_eq!(
        versions.iter().map(|j| j.version).collect::<Vec<_>>(),
        [2, 1, 0],
        "newest first"
    );
}

#[tokio::test]
async fn fake_allocation_health_drives_deployment_stability_and_auto_revert() {
    let n = FakeNomad::new();
    n.job_register(&proxy_job("traefik:3.1"), None)
        .await
        .unwrap();
    let (d, _) = n
        .job_latest_deployment("proxy", QueryOptions::NOW)
        .await
        .unwrap();
    assert_eq!(d.unwrap().status, "running");
    n.set_allocation_health("proxy", true);
    let (d, _) = n
        .job_latest_deployment("proxy", QueryOptions::NOW)
        .await
        .unwrap();
    assert_eq!(
        d.unwrap().status_description,
        "Deployment completed successfully"
    );
    assert!(n.job("proxy").unwrap().stable);

    n.job_register(&proxy_job("traefik:broken"), None)
        .await
        .unwrap();
    let (allocs, _) = n.job_allocations("proxy", QueryOptions::NOW).await.unwrap();
    assert!(
        allocs
            .iter()
            .any(|a| a.job_version == 1 && a.healthy().is_none())
    );
    n.set_allocation_health("proxy", false);
    let versions = n.versions("proxy");
    assert_eq!(versions.len(), 3, "auto-revert registered v0's spec as v2");
    assert_eq!(
        versions[2]
            .raw
            .pointer("/TaskGroups/0/Tasks/0/Config/image"),
        Some(&json!("traefik:3.1"))
    );
    let (d, _) = n
        .job_latest_deployment("proxy", QueryOptions::NOW)
        .await
        .unwrap();
    assert_eq!(
        d.unwrap().job_version,
        2,
        "the revert has its own deployment"
    );
}

#[tokio::test]
async fn fake_deployment_fail_refuses_unknown_and_terminal_deployments() {
    let n = FakeNomad::new();
    let mut job = proxy_job("traefik:3.1");
    job["Update"]["AutoRevert"] = json!(false);
    n.job_register(&job, None).await.unwrap();
    let (d, _) = n
        .job_latest_deployment("proxy", QueryOptions::NOW)
        .await
        .unwrap();
    let id = d.unwrap().id;
    let r = n.deployment_fail(&id).await.unwrap();
    assert_eq!(r.reverted_job_version, None);
    let err = n.deployment_fail(&id).await.unwrap_err();
    assert_eq!(err.message(), Some("can't fail terminal deployment"));
    assert_eq!(
        n.deployment_fail("nope").await.unwrap_err().message(),
        Some("deployment not found")
    );
}

#[tokio::test]
async fn fake_stop_bumps_the_version_and_purge_removes_the_job() {
    let n = FakeNomad::new();
    assert_eq!(
        n.job_stop("ghost", false).await.unwrap(),
        JobWriteResponse::default()
    );
    n.job_register(&proxy_job("traefik:3.1"), None)
        .await
        .unwrap();
    n.job_stop("proxy", false).await.unwrap();
    let job = n.job("proxy").unwrap();
    assert!(job.stop);
    assert_eq!((job.version, job.status.as_str()), (1, "dead"));
    n.job_stop("proxy", true).await.unwrap();
    assert!(
        n.job_read("proxy", QueryOptions::NOW)
            .await
            .unwrap()
            .0
            .is_none()
    );
}

#[tokio::test]
async fn fake_plan_reports_added_none_and_edited() {
    let n = FakeNomad::new();
    let p = n.job_plan(&proxy_job("traefik:3.1"), true).await.unwrap();
    assert_eq!(p.diff.unwrap().diff_type, "Added");
    assert_eq!(p.job_modify_index, 0);
    let r = n
        .job_register(&proxy_job("traefik:3.1"), Some(0))
        .await
        .unwrap();
    let same = n.job_plan(&proxy_job("traefik:3.1"), true).await.unwrap();
    assert_eq!(same.diff.unwrap().diff_type, "None");
    assert!(same.annotations.unwrap().desired_tg_updates["proxy"].is_noop());
    let edited = n.job_plan(&proxy_job("traefik:3.2"), true).await.unwrap();
    assert_eq!(edited.job_modify_index, r.job_modify_index);
    assert_eq!(edited.diff.unwrap().diff_type, "Edited");
    assert_eq!(
        edited.annotations.unwrap().desired_tg_updates["proxy"].destructive_update,
        1
    );
}

#[tokio::test(start_paused = true)]
async fn fake_job_read_blocks_until_the_job_changes() {
    let n = FakeNomad::new();
    n.job_register(&proxy_job("traefik:3.1"), None)
        .await
        .unwrap();
    let (job, meta) = n.job_read("proxy", QueryOptions::NOW).await.unwrap();
    assert_eq!(job.unwrap().modify_index, meta.index);
    let writer = n.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_secs(2)).await;
        writer
            .job_register(&proxy_job("traefik:3.2"), None)
            .await
            .unwrap();
    });
    let start = tokio::time::Instant::now();
    let (job, next) = n
        .job_read(
            "proxy",
            QueryOptions::blocking(meta.index, Duration::from_secs(60)),
        )
        .await
        .unwrap();
    assert_eq!(start.elapsed(), Duration::from_secs(2));
    assert!(next.index > meta.index);
    assert_eq!(job.unwrap().version, 1);
}

#[tokio::test]
async fn fake_services_group_by_namespace() {
    let n = FakeNomad::new();
    let reg: Vec<ServiceRegistration> = decode("service-read-response.json");
    for r in reg {
        n.register_service(r);
    }
    let (list, _) = n.services(QueryOptions::NOW).await.unwrap();
    assert_eq!(list[0].services[0].service_name, "example-cache-redis");
    let (regs, _) = n
        .service("example-cache-redis", QueryOptions::NOW)
        .await
        .unwrap();
    assert_eq!(regs.len(), 2);
    let (none, _) = n.service("unknown", QueryOptions::NOW).await.unwrap();
    assert!(none.is_empty());
}

#[tokio::test]
async fn fake_records_calls_and_injects_errors() {
    let n = FakeNomad::new();
    n.fail_next(
        "job_register",
        Error::injected("register job proxy", 503, "No cluster leader"),
    );
    assert!(
        n.job_register(&proxy_job("x"), None)
            .await
            .unwrap_err()
            .is_retryable()
    );
    n.job_register(&proxy_job("x"), Some(0)).await.unwrap();
    let calls = n.calls_of("job_register");
    assert_eq!(calls.len(), 2);
    assert_eq!(calls[1].index, Some(0));
}

#[test]
fn task_group_and_task_diffs_read_their_object_fields_from_the_top_level() {
    let plan: PlanResponse = decode("job-plan-response.json");
    let group = &plan.diff.unwrap().task_groups[0];
    assert_eq!(
        (group.diff_type.as_str(), group.name.as_str()),
        ("Added", "cache")
    );
    // The fixture elides the group's fields and objects (`["..."]`).
    assert!(group.fields.is_empty() && group.objects.is_empty());
    assert_eq!(group.updates["create"], 1);
    let task = &group.tasks[0];
    assert_eq!(
        (task.diff_type.as_str(), task.name.as_str()),
        ("Added", "redis")
    );
    let names: Vec<_> = task.fields.iter().map(|f| f.name.as_str()).collect();
    assert_eq!(names, ["Driver", "KillTimeout"]);
    // Written back in Nomad's shape: the object's fields at the top level, not nested.
    let json = serde_json::to_value(task).unwrap();
    assert_eq!(json["Name"], "redis");
    assert_eq!(json["Annotations"][0], "forces create");
    assert!(json.get("Node").is_none(), "{json}");
}
