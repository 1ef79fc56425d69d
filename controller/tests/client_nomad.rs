//! The Nomad client against the twin: register with EnforceIndex, versions, revert with
//! EnforcePriorVersion, stop/purge, plan, allocations, deployments, services, ACL denial.
#![allow(clippy::unwrap_used, clippy::panic)] // tests fail loudly

mod client_support;

use std::time::Duration;

use client_support::{config, twin};
use hashistack_twin::{Api as TwinApi, Twin};
use proxy_operator::nomad::{Error, NomadApi, NomadClient};
use proxy_operator::transport::{Api, QueryOptions, Watch};
use serde_json::{Value, json};

const SEC: u64 = 1_000_000_000;

fn client(twin: &Twin, token: Option<&str>) -> NomadClient {
    NomadClient::new(&config(Api::Nomad, twin.nomad_addr(), token)).unwrap()
}

fn sh_job(id: &str, script: &str) -> Value {
    json!({
        "ID": id,
        "Type": "service",
        "Meta": {"proxy-operator/owner": "test"},
        "TaskGroups": [{
            "Name": "g",
            "Count": 1,
            "Tasks": [{
                "Name": "t",
                "Driver": "raw_exec",
                "Config": {"command": "/bin/sh", "args": ["-c", script]},
                "KillTimeout": 2 * SEC,
            }],
        }],
    })
}

#[tokio::test]
async fn register_with_enforce_index_creates_once_and_refuses_stale_writes() {
    let t = twin(None).await;
    let n = client(&t, None);
    assert_eq!(
        n.job_read("web", QueryOptions::NOW).await.unwrap().0,
        None,
        "absent job is None"
    );
    let created = n
        .job_register(&sh_job("web", "sleep 1000"), Some(0))
        .await
        .unwrap();
    assert!(created.job_modify_index > 0 && !created.eval_id.is_empty());

    let before = t.requests(TwinApi::Nomad);
    let err = n
        .job_register(&sh_job("web", "sleep 2000"), Some(0))
        .await
        .unwrap_err();
    assert!(
        matches!(err, Error::EnforceIndexConflict { .. }) && !err.is_retryable(),
        "{err}"
    );
    assert_eq!(
        t.requests(TwinApi::Nomad) - before,
        1,
        "a conflict is never retried"
    );
    let err = n
        .job_register(
            &sh_job("web", "sleep 2000"),
            Some(created.job_modify_index + 100),
        )
        .await
        .unwrap_err();
    assert!(err.is_conflict(), "{err}");
    assert!(
        err.to_string().contains("conflicting job modify index"),
        "{err}"
    );

    let updated = n
        .job_register(&sh_job("web", "sleep 2000"), Some(created.job_modify_index))
        .await
        .unwrap();
    let (job, meta) = n.job_read("web", QueryOptions::NOW).await.unwrap();
    let job = job.unwrap();
    assert_eq!(
        (job.version, job.job_modify_index),
        (1, updated.job_modify_index)
    );
    assert_eq!(job.meta["proxy-operator/owner"], "test");
    assert_eq!(job.job_type, "service");
    assert_eq!(
        meta.index, job.modify_index,
        "X-Nomad-Index of a job read is its ModifyIndex"
    );
    assert_eq!(
        job.raw.pointer("/TaskGroups/0/Tasks/0/Config/args/1"),
        Some(&json!("sleep 2000"))
    );
    t.shutdown().await;
}

#[tokio::test]
async fn versions_come_newest_first_with_diffs_and_revert_enforces_the_prior_version() {
    let t = twin(None).await;
    let n = client(&t, None);
    n.job_register(&sh_job("web", "sleep 1000"), None)
        .await
        .unwrap();
    n.job_register(&sh_job("web", "sleep 2000"), None)
        .await
        .unwrap();
    let versions = n.job_versions("web", true).await.unwrap();
    assert_eq!(
        versions
            .versions
            .iter()
            .map(|j| j.version)
            .collect::<Vec<_>>(),
        [1, 0]
    );
    assert!(!versions.diffs.is_empty(), "diffs on request");
    assert!(
        n.job_versions("ghost", false)
            .await
            .unwrap()
            .versions
            .is_empty(),
        "unknown job has no versions"
    );

    let err = n.job_revert("web", 0, Some(0)).await.unwrap_err();
    assert!(
        matches!(err, Error::PriorVersionConflict { .. }) && !err.is_retryable(),
        "{err}"
    );
    let err = n.job_revert("web", 1, None).await.unwrap_err();
    assert!(
        err.to_string().contains("can't revert to current version"),
        "{err}"
    );
    let reverted = n.job_revert("web", 0, Some(1)).await.unwrap();
    let job = n
        .job_read("web", QueryOptions::NOW)
        .await
        .unwrap()
        .0
        .unwrap();
    assert_eq!(
        (job.version, job.job_modify_index),
        (2, reverted.job_modify_index)
    );
    assert_eq!(
        job.raw.pointer("/TaskGroups/0/Tasks/0/Config/args/1"),
        Some(&json!("sleep 1000"))
    );
    assert!(!job.stable);
    t.shutdown().await;
}

#[tokio::test]
async fn marking_a_version_stable_sets_its_flag_without_making_a_new_version() {
    let t = twin(None).await;
    let n = client(&t, None);
    n.job_register(&sh_job("edge", "sleep 1000"), None)
        .await
        .unwrap();
    n.job_register(&sh_job("edge", "sleep 2000"), None)
        .await
        .unwrap();
    let before = n
        .job_read("edge", QueryOptions::NOW)
        .await
        .unwrap()
        .0
        .unwrap();

    let stable = |versions: &proxy_operator::nomad::JobVersions, v: u64| {
        versions
            .versions
            .iter()
            .find(|j| j.version == v)
            .map(|j| j.stable)
    };
    n.job_stable("edge", 0, true).await.unwrap();
    let versions = n.job_versions("edge", false).await.unwrap();
    assert_eq!(stable(&versions, 0), Some(true), "{versions:?}");
    n.job_stable("edge", 0, false).await.unwrap();
    let versions = n.job_versions("edge", false).await.unwrap();
    assert_eq!(stable(&versions, 0), Some(false));

    n.job_stable("edge", 1, true).await.unwrap();
    let after = n
        .job_read("edge", QueryOptions::NOW)
        .await
        .unwrap()
        .0
        .unwrap();
    assert!(after.stable, "the current version carries the flag too");
    assert_eq!(
        (after.version, after.job_modify_index),
        (before.version, before.job_modify_index),
        "stability is not a spec change: EnforceIndex is unaffected"
    );
    assert!(
        after.modify_index > before.modify_index,
        "but it is a write"
    );

    let err = n.job_stable("edge", 9, true).await.unwrap_err();
    assert!(err.to_string().contains("at version 9 not found"), "{err}");
    let err = n.job_stable("ghost", 0, true).await.unwrap_err();
    assert!(err.to_string().contains("not found"), "{err}");
    t.shutdown().await;
}

#[tokio::test]
async fn nodes_list_their_datacenter_pool_state_and_host_volumes() {
    let t = hashistack_twin::Twin::start(hashistack_twin::TwinConfig {
        nomad_nodes: 2,
        ..hashistack_twin::TwinConfig::default()
    })
    .await
    .unwrap();
    let n = client(&t, None);
    let (nodes, meta) = n.nodes(QueryOptions::NOW).await.unwrap();
    assert_eq!(nodes.len(), 2, "{nodes:?}");
    assert!(meta.index > 0);
    for node in &nodes {
        assert_eq!(node.id.len(), 36, "{node:?}");
        assert!(!node.name.is_empty() && !node.datacenter.is_empty());
        assert_eq!(node.node_pool, "default");
        assert!(node.schedulable(), "{node:?}");
        assert!(
            node.host_volumes.is_empty(),
            "a client without host_volume blocks reports null"
        );
    }

    // A draining node is one the scheduler no longer places on.
    let http = reqwest::Client::builder().no_proxy().build().unwrap();
    let drain = json!({"DrainSpec": {"Deadline": 60 * SEC, "IgnoreSystemJobs": false}});
    let resp = http
        .post(format!(
            "http://{}/v1/node/{}/drain",
            t.nomad_addr(),
            nodes[1].id
        ))
        .json(&drain)
        .send()
        .await
        .unwrap();
    assert!(resp.status().is_success(), "{}", resp.status());
    let (after, _) = n.nodes(QueryOptions::NOW).await.unwrap();
    let drained = after.iter().find(|x| x.id == nodes[1].id).unwrap();
    assert!(drained.drain && !drained.schedulable(), "{drained:?}");
    t.shutdown().await;
}

#[tokio::test]
async fn plan_reports_the_diff_and_the_index_to_enforce() {
    let t = twin(None).await;
    let n = client(&t, None);
    let fresh = n
        .job_plan(&sh_job("web", "sleep 1000"), true)
        .await
        .unwrap();
    assert_eq!(fresh.job_modify_index, 0);
    assert_eq!(fresh.diff.unwrap().diff_type, "Added");
    assert_eq!(fresh.annotations.unwrap().desired_tg_updates["g"].place, 1);
    let r = n
        .job_register(&json!({"Job": sh_job("web", "sleep 1000")}), None)
        .await
        .unwrap();
    let same = n
        .job_plan(&sh_job("web", "sleep 1000"), true)
        .await
        .unwrap();
    assert_eq!(same.job_modify_index, r.job_modify_index);
    assert_eq!(same.diff.unwrap().diff_type, "None");
    let edited = n.job_plan(&sh_job("web", "sleep 5"), true).await.unwrap();
    let diff = edited.diff.unwrap();
    assert_eq!(diff.diff_type, "Edited");
    assert_eq!(diff.task_groups[0].name, "g");
    t.shutdown().await;
}

#[tokio::test]
async fn stop_keeps_a_stopped_version_and_purge_removes_the_job() {
    let t = twin(None).await;
    let n = client(&t, None);
    let ghost = n.job_stop("ghost", false).await.unwrap();
    assert_eq!(ghost.eval_id, "", "stopping an unknown job is a no-op");
    n.job_register(&sh_job("web", "sleep 1000"), None)
        .await
        .unwrap();
    n.job_stop("web", false).await.unwrap();
    let job = n
        .job_read("web", QueryOptions::NOW)
        .await
        .unwrap()
        .0
        .unwrap();
    assert!(job.stop);
    assert_eq!(job.version, 1);
    n.job_stop("web", true).await.unwrap();
    assert_eq!(n.job_read("web", QueryOptions::NOW).await.unwrap().0, None);
    t.shutdown().await;
}

#[tokio::test]
async fn a_healthy_rollout_is_observed_through_allocations_deployment_and_services() {
    let t = twin(None).await;
    let n = client(&t, None);
    assert_eq!(
        n.job_latest_deployment("webby", QueryOptions::NOW)
            .await
            .unwrap()
            .0,
        None
    );
    let job = json!({
        "ID": "webby",
        "TaskGroups": [{
            "Name": "g",
            "Networks": [{"DynamicPorts": [{"Label": "http"}]}],
            "Update": {"MinHealthyTime": 200_000_000u64, "HealthyDeadline": 20 * SEC, "ProgressDeadline": 30 * SEC},
            "Services": [{
                "Name": "webby", "PortLabel": "http", "Provider": "nomad", "Tags": ["a"],
                "Checks": [{"Type": "http", "Path": "/", "Interval": SEC, "Timeout": SEC}],
            }],
            "Tasks": [{
                "Name": "server", "Driver": "raw_exec",
                "Config": {"command": "python3", "args": ["-m", "http.server", "${NOMAD_PORT_http}", "--bind", "127.0.0.1"]},
            }],
        }],
    });
    n.job_register(&job, Some(0)).await.unwrap();
    let mut watch = Watch::new(Duration::from_secs(10));
    let deployment = tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            let u = watch
                .next(|q| n.job_latest_deployment("webby", q))
                .await
                .unwrap();
            if let Some(d) = u.value.filter(|d| d.status == "successful") {
                return d;
            }
        }
    })
    .await
    .unwrap();
    assert_eq!(
        deployment.status_description,
        "Deployment completed successfully"
    );
    assert_eq!(deployment.task_groups["g"].healthy_allocs, 1);
    let (allocs, _) = n.job_allocations("webby", QueryOptions::NOW).await.unwrap();
    let running: Vec<_> = allocs
        .iter()
        .filter(|a| a.client_status == "running")
        .collect();
    assert_eq!(running.len(), 1);
    assert_eq!(running[0].healthy(), Some(true));
    assert_eq!(running[0].job_version, 0);
    assert_eq!(running[0].task_states["server"].state, "running");
    let (services, _) = n.services(QueryOptions::NOW).await.unwrap();
    assert_eq!(services[0].services[0].service_name, "webby");
    let (regs, _) = n.service("webby", QueryOptions::NOW).await.unwrap();
    assert_eq!((regs.len(), regs[0].address.as_str()), (1, "127.0.0.1"));
    assert!(
        n.service("nope", QueryOptions::NOW)
            .await
            .unwrap()
            .0
            .is_empty()
    );
    assert!(
        n.job_read("webby", QueryOptions::NOW)
            .await
            .unwrap()
            .0
            .unwrap()
            .stable
    );
    t.shutdown().await;
}

#[tokio::test]
async fn failing_a_running_deployment_marks_it_failed_and_a_second_fail_is_refused() {
    let t = twin(None).await;
    let n = client(&t, None);
    let mut job = sh_job("slow", "sleep 1000");
    job["TaskGroups"][0]["Update"] = json!({"MinHealthyTime": 60 * SEC, "HealthyDeadline": 120 * SEC, "ProgressDeadline": 180 * SEC, "HealthCheck": "task_states"});
    n.job_register(&job, None).await.unwrap();
    let deployment = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            if let Some(d) = n
                .job_latest_deployment("slow", QueryOptions::NOW)
                .await
                .unwrap()
                .0
            {
                return d;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .unwrap();
    assert_eq!(deployment.status, "running");
    let r = n.deployment_fail(&deployment.id).await.unwrap();
    assert_eq!(
        r.reverted_job_version, None,
        "no stable version to revert to"
    );
    let (d, _) = n
        .job_latest_deployment("slow", QueryOptions::NOW)
        .await
        .unwrap();
    let d = d.unwrap();
    assert_eq!(
        (d.status.as_str(), d.status_description.as_str()),
        ("failed", "Deployment marked as failed")
    );
    let err = n.deployment_fail(&deployment.id).await.unwrap_err();
    assert!(
        err.to_string().contains("can't fail terminal deployment") && !err.is_retryable(),
        "{err}"
    );
    t.shutdown().await;
}

#[tokio::test]
async fn a_wrong_token_gets_a_terminal_forbidden_error() {
    let t = twin(Some("right-token")).await;
    let bad = client(&t, Some("wrong-token"));
    let err = bad
        .job_register(&sh_job("web", "sleep 1"), Some(0))
        .await
        .unwrap_err();
    assert!(err.is_forbidden() && !err.is_retryable(), "{err}");
    assert!(!err.to_string().contains("wrong-token"));
    let good = client(&t, Some("right-token"));
    assert!(!good.status_leader().await.unwrap().is_empty());
    t.shutdown().await;
}
