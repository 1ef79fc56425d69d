//! Jobs API behaviour a Nomad client relies on: versions, CAS with EnforceIndex, revert, stop and
//! purge, plan, blocking queries, ACL and persistence.
#![allow(clippy::unwrap_used, clippy::panic)]

mod nomad_support;

use hashistack_twin::TwinConfig;
use nomad_support::{Nomad, sh_job};
use serde_json::json;
use std::time::{Duration, Instant};

#[tokio::test]
async fn register_then_read_returns_the_canonical_job_at_version_zero_with_index_headers() {
    let n = Nomad::start().await;
    let out = n.register(sh_job("web", "sleep 1000")).await;
    assert!(!out["EvalID"].as_str().unwrap().is_empty());
    assert!(out["JobModifyIndex"].as_u64().unwrap() > 0);
    let a = n.send("GET", "/v1/job/web", None).await;
    assert_eq!(a.status, 200);
    assert!(a.index() >= out["JobModifyIndex"].as_u64().unwrap());
    assert_eq!(a.headers.get("X-Nomad-KnownLeader").unwrap(), "true");
    assert!(a.headers.get("X-Nomad-LastContact").is_some());
    let job = a.json();
    assert_eq!(job["Version"], 0);
    assert_eq!(job["Namespace"], "default");
    assert_eq!(job["Region"], "global");
    assert_eq!(job["Name"], "web");
    assert_eq!(job["Priority"], 50);
    // Canonical defaults a real server fills in.
    assert_eq!(job["TaskGroups"][0]["Update"]["HealthCheck"], "checks");
    assert_eq!(job["TaskGroups"][0]["RestartPolicy"]["Mode"], "fail");
    assert_eq!(
        job["TaskGroups"][0]["Tasks"][0]["LogConfig"]["MaxFiles"],
        10
    );
    assert!(job["TaskGroups"][0]["Tasks"][0]["Templates"].is_null());
    n.shutdown().await;
}

#[tokio::test]
async fn unknown_job_keys_are_dropped_silently_and_names_match_case_insensitively() {
    let n = Nomad::start().await;
    let mut job = sh_job("web", "sleep 1000");
    job["Datacenter"] = json!("dc1");
    job["priority"] = json!(70);
    n.register(job).await;
    let job = n.get("/v1/job/web").await;
    assert!(job.get("Datacenter").is_none());
    assert!(job.get("priority").is_none());
    assert_eq!(job["Priority"], 70);
    n.shutdown().await;
}

#[tokio::test]
async fn missing_job_answers_404_job_not_found_in_plain_text() {
    let n = Nomad::start().await;
    let a = n.send("GET", "/v1/job/nope", None).await;
    assert_eq!(a.status, 404);
    assert_eq!(a.text, "job not found");
    assert!(
        a.headers
            .get("content-type")
            .unwrap()
            .to_str()
            .unwrap()
            .starts_with("text/plain")
    );
    let v = n.send("GET", "/v1/job/nope/versions", None).await;
    assert_eq!((v.status, v.text.as_str()), (404, "job versions not found"));
    n.shutdown().await;
}

#[tokio::test]
async fn enforce_index_conflicts_answer_500_with_the_nomad_prefix() {
    let n = Nomad::start().await;
    let job = sh_job("web", "sleep 1000");
    let body = |idx: u64| json!({"Job": job.clone(), "EnforceIndex": true, "JobModifyIndex": idx});
    let a = n.send("PUT", "/v1/jobs", Some(body(5))).await;
    assert_eq!(
        (a.status, a.text.as_str()),
        (500, "Enforcing job modify index 5: job does not exist")
    );
    let a = n.send("PUT", "/v1/jobs", Some(body(0))).await;
    assert_eq!(a.status, 200, "{}", a.text);
    let jmi = a.json()["JobModifyIndex"].as_u64().unwrap();
    let a = n.send("PUT", "/v1/jobs", Some(body(0))).await;
    assert_eq!(
        (a.status, a.text.as_str()),
        (500, "Enforcing job modify index 0: job already exists")
    );
    let a = n.send("PUT", "/v1/jobs", Some(body(jmi + 100))).await;
    assert_eq!(a.status, 500);
    assert_eq!(
        a.text,
        format!(
            "Enforcing job modify index {}: job exists with conflicting job modify index: {jmi}",
            jmi + 100
        )
    );
    let mut changed = job.clone();
    changed["Meta"] = json!({"v": "2"});
    let a = n
        .send(
            "PUT",
            "/v1/job/web",
            Some(json!({"Job": changed, "EnforceIndex": true, "JobModifyIndex": jmi})),
        )
        .await;
    assert_eq!(a.status, 200, "{}", a.text);
    assert!(a.json()["JobModifyIndex"].as_u64().unwrap() > jmi);
    n.shutdown().await;
}

#[tokio::test]
async fn identical_reregister_keeps_the_version_but_creates_a_new_evaluation() {
    let n = Nomad::start().await;
    let first = n.register(sh_job("web", "sleep 1000")).await;
    let second = n.register(sh_job("web", "sleep 1000")).await;
    assert_eq!(first["JobModifyIndex"], second["JobModifyIndex"]);
    assert_ne!(first["EvalID"], second["EvalID"]);
    assert_eq!(n.get("/v1/job/web").await["Version"], 0);
    let evals = n.get("/v1/job/web/evaluations").await;
    assert_eq!(evals.as_array().unwrap().len(), 2);
    let third = n.register(sh_job("web", "sleep 999")).await;
    assert!(third["JobModifyIndex"].as_u64() > first["JobModifyIndex"].as_u64());
    assert_eq!(n.get("/v1/job/web").await["Version"], 1);
    n.shutdown().await;
}

#[tokio::test]
async fn path_id_must_match_the_job_id() {
    let n = Nomad::start().await;
    let a = n
        .send(
            "PUT",
            "/v1/job/other",
            Some(json!({"Job": sh_job("web", "true")})),
        )
        .await;
    assert_eq!(
        (a.status, a.text.as_str()),
        (400, "Job ID does not match name")
    );
    let a = n.send("PUT", "/v1/jobs", Some(json!({}))).await;
    assert_eq!((a.status, a.text.as_str()), (400, "Job must be specified"));
    n.shutdown().await;
}

#[tokio::test]
async fn versions_are_an_object_newest_first_with_diffs_on_request() {
    let n = Nomad::start().await;
    n.register(sh_job("web", "sleep 1000")).await;
    let mut v1 = sh_job("web", "sleep 1000");
    v1["TaskGroups"][0]["Tasks"][0]["Env"] = json!({"foo": "bar"});
    n.register(v1).await;
    let versions = n.get("/v1/job/web/versions").await;
    let list = versions["Versions"].as_array().unwrap();
    assert_eq!(list.len(), 2);
    assert_eq!(list[0]["Version"], 1);
    assert_eq!(list[1]["Version"], 0);
    assert!(versions["Diffs"].is_null());
    let with = n.get("/v1/job/web/versions?diffs=true").await;
    let diff = &with["Diffs"][0];
    assert_eq!(diff["Type"], "Edited");
    assert_eq!(
        diff["TaskGroups"][0]["Tasks"][0]["Fields"][0]["Name"],
        "Env[foo]"
    );
    assert_eq!(diff["TaskGroups"][0]["Tasks"][0]["Fields"][0]["New"], "bar");
    n.shutdown().await;
}

#[tokio::test]
async fn revert_creates_a_new_version_copied_from_the_old_one_and_enforces_the_prior_version() {
    let n = Nomad::start().await;
    n.register(sh_job("web", "sleep 1000")).await;
    n.register(sh_job("web", "sleep 2000")).await;
    let a = n
        .send(
            "POST",
            "/v1/job/web/revert",
            Some(json!({"JobID": "web", "JobVersion": 1})),
        )
        .await;
    assert_eq!(
        (a.status, a.text.as_str()),
        (500, "can't revert to current version")
    );
    let a = n
        .send(
            "POST",
            "/v1/job/web/revert",
            Some(json!({"JobID": "web", "JobVersion": 0, "EnforcePriorVersion": 7})),
        )
        .await;
    assert_eq!(
        (a.status, a.text.as_str()),
        (500, "Current job has version 1; enforcing version 7")
    );
    let a = n
        .send(
            "POST",
            "/v1/job/web/revert",
            Some(json!({"JobID": "other", "JobVersion": 0})),
        )
        .await;
    assert_eq!(a.status, 400);
    let a = n
        .send(
            "POST",
            "/v1/job/web/revert",
            Some(json!({"JobID": "web", "JobVersion": 0, "EnforcePriorVersion": 1})),
        )
        .await;
    assert_eq!(a.status, 200, "{}", a.text);
    assert!(a.headers.get("X-Nomad-KnownLeader").is_some());
    let job = n.get("/v1/job/web").await;
    assert_eq!(job["Version"], 2);
    assert_eq!(job["Stable"], false);
    assert_eq!(
        job["TaskGroups"][0]["Tasks"][0]["Config"]["args"][1],
        "sleep 1000"
    );
    let a = n
        .send(
            "POST",
            "/v1/job/web/revert",
            Some(json!({"JobID": "web", "JobVersion": 42})),
        )
        .await;
    assert_eq!(
        (a.status, a.text.as_str()),
        (
            500,
            "job \"web\" in namespace \"default\" at version 42 not found"
        )
    );
    n.shutdown().await;
}

#[tokio::test]
async fn stop_creates_a_stopped_version_and_purge_removes_the_job() {
    let n = Nomad::start().await;
    n.register(sh_job("web", "sleep 1000")).await;
    let a = n.send("DELETE", "/v1/job/web", None).await;
    assert_eq!(a.status, 200, "{}", a.text);
    assert!(!a.json()["EvalID"].as_str().unwrap().is_empty());
    let job = n.get("/v1/job/web").await;
    assert_eq!(job["Stop"], true);
    assert_eq!(job["Version"], 1);
    assert_eq!(job["Status"], "dead");
    let a = n.send("DELETE", "/v1/job/web?purge=true", None).await;
    assert_eq!(a.status, 200);
    assert_eq!(n.send("GET", "/v1/job/web", None).await.status, 404);
    let a = n.send("DELETE", "/v1/job/never-existed", None).await;
    assert_eq!(a.status, 200);
    assert_eq!(a.json()["EvalID"], "");
    assert_eq!(a.json()["JobModifyIndex"], 0);
    let a = n.send("DELETE", "/v1/job/web?purge=maybe", None).await;
    assert_eq!(a.status, 500);
    assert!(
        a.text.starts_with("Failed to parse value of \"purge\""),
        "{}",
        a.text
    );
    n.shutdown().await;
}

#[tokio::test]
async fn job_without_a_deployment_answers_200_null() {
    let n = Nomad::start().await;
    let mut job = sh_job("batchy", "true");
    job["Type"] = json!("batch");
    n.register(job).await;
    let a = n.send("GET", "/v1/job/batchy/deployment", None).await;
    assert_eq!((a.status, a.text.as_str()), (200, "null"));
    let a = n.send("GET", "/v1/job/nope/deployment", None).await;
    assert_eq!((a.status, a.text.as_str()), (200, "null"));
    assert_eq!(n.get("/v1/job/batchy/deployments").await, json!([]));
    n.shutdown().await;
}

#[tokio::test]
async fn plan_reports_placements_a_diff_and_the_current_job_modify_index() {
    let n = Nomad::start().await;
    let a = n
        .send(
            "POST",
            "/v1/job/web/plan",
            Some(json!({"Job": sh_job("web", "sleep 1000"), "Diff": true})),
        )
        .await;
    assert_eq!(a.status, 200, "{}", a.text);
    let plan = a.json();
    assert_eq!(plan["JobModifyIndex"], 0);
    assert_eq!(plan["Diff"]["Type"], "Added");
    assert_eq!(plan["Annotations"]["DesiredTGUpdates"]["g"]["Place"], 1);
    let out = n.register(sh_job("web", "sleep 1000")).await;
    let plan = n
        .send(
            "POST",
            "/v1/job/web/plan",
            Some(json!({"Job": sh_job("web", "sleep 5"), "Diff": true})),
        )
        .await
        .json();
    assert_eq!(plan["JobModifyIndex"], out["JobModifyIndex"]);
    assert_eq!(plan["Diff"]["Type"], "Edited");
    assert_eq!(
        plan["Diff"]["TaskGroups"][0]["Tasks"][0]["Annotations"][0],
        "forces create/destroy update"
    );
    let mut docker = sh_job("web", "x");
    docker["TaskGroups"][0]["Tasks"][0]["Driver"] = json!("docker");
    let plan = n
        .send("POST", "/v1/job/web/plan", Some(json!({"Job": docker})))
        .await
        .json();
    assert_eq!(
        plan["FailedTGAllocs"]["g"]["ConstraintFiltered"]["missing drivers"],
        1
    );
    n.shutdown().await;
}

#[tokio::test]
async fn blocking_job_read_wakes_on_change_and_times_out_with_the_same_index() {
    let n = Nomad::start().await;
    n.register(sh_job("web", "sleep 1000")).await;
    let first = n.send("GET", "/v1/job/web", None).await;
    let idx = first.index();
    let started = Instant::now();
    let timed_out = n
        .send("GET", &format!("/v1/job/web?index={idx}&wait=300ms"), None)
        .await;
    assert!(started.elapsed() >= Duration::from_millis(300));
    assert_eq!(timed_out.index(), idx);
    let base = n.base.clone();
    let waiter = tokio::spawn(async move {
        let started = Instant::now();
        let resp = reqwest::get(format!("{base}/v1/job/web?index={idx}&wait=20s"))
            .await
            .unwrap();
        let index: u64 = resp.headers()["X-Nomad-Index"]
            .to_str()
            .unwrap()
            .parse()
            .unwrap();
        (
            started.elapsed(),
            index,
            resp.json::<serde_json::Value>().await.unwrap(),
        )
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    n.register(sh_job("web", "sleep 2000")).await;
    let (elapsed, index, job) = waiter.await.unwrap();
    assert!(
        elapsed < Duration::from_secs(5),
        "blocking read did not wake: {elapsed:?}"
    );
    assert!(index > idx);
    assert_eq!(job["Version"], 1);
    let bad = n.send("GET", "/v1/job/web?index=1&wait=banana", None).await;
    assert_eq!((bad.status, bad.text.as_str()), (400, "Invalid wait time"));
    n.shutdown().await;
}

#[tokio::test]
async fn stable_flag_can_be_set_on_a_version() {
    let n = Nomad::start().await;
    n.register(sh_job("web", "sleep 1000")).await;
    let a = n
        .send(
            "POST",
            "/v1/job/web/stable",
            Some(json!({"JobID": "web", "JobVersion": 0, "Stable": true})),
        )
        .await;
    assert_eq!(a.status, 200, "{}", a.text);
    assert!(a.json()["JobModifyIndex"].as_u64().unwrap() > 0);
    assert_eq!(n.get("/v1/job/web").await["Stable"], true);
    assert_eq!(
        n.get("/v1/job/web/versions").await["Versions"][0]["Stable"],
        true
    );
    n.shutdown().await;
}

#[tokio::test]
async fn requests_without_the_configured_token_get_403_permission_denied() {
    let n = Nomad::start_with(TwinConfig {
        acl_token: Some("s3cret".into()),
        ..TwinConfig::default()
    })
    .await;
    let anonymous = reqwest::get(format!("{}/v1/jobs", n.base)).await.unwrap();
    assert_eq!(anonymous.status().as_u16(), 403);
    assert_eq!(anonymous.text().await.unwrap(), "Permission denied");
    let bearer = n
        .client
        .get(format!("{}/v1/jobs", n.base))
        .bearer_auth("s3cret")
        .send()
        .await
        .unwrap();
    assert_eq!(bearer.status().as_u16(), 200);
    assert_eq!(n.send("GET", "/v1/jobs", None).await.status, 200);
    n.shutdown().await;
}

#[tokio::test]
async fn jobs_versions_and_indexes_survive_a_restart_with_a_data_dir() {
    let dir = tempfile::tempdir().unwrap();
    let config = TwinConfig {
        data_dir: Some(dir.path().to_path_buf()),
        ..TwinConfig::default()
    };
    let n = Nomad::start_with(config.clone()).await;
    n.register(sh_job("web", "sleep 1000")).await;
    n.register(sh_job("web", "sleep 2000")).await;
    let before = n.send("GET", "/v1/jobs", None).await.index();
    let last_alloc_index = n.send("GET", "/v1/allocations", None).await.index();
    n.shutdown().await;
    let n = Nomad::start_with(config).await;
    let job = n.get("/v1/job/web").await;
    assert_eq!(job["Version"], 1);
    assert_eq!(
        n.get("/v1/job/web/versions").await["Versions"]
            .as_array()
            .unwrap()
            .len(),
        2
    );
    let after = n.send("GET", "/v1/jobs", None).await.index();
    assert!(after >= before, "index went backwards: {before} -> {after}");
    let alloc_index = n.send("GET", "/v1/allocations", None).await.index();
    assert!(
        alloc_index >= last_alloc_index,
        "alloc index went backwards: {last_alloc_index} -> {alloc_index}"
    );
    let out = n.register(sh_job("web", "sleep 3000")).await;
    assert!(out["JobModifyIndex"].as_u64().unwrap() > before);
    n.shutdown().await;
}

#[tokio::test]
async fn changing_a_jobs_type_or_periodic_nature_answers_500_like_validate_job_update() {
    let n = Nomad::start().await;
    n.register(sh_job("web", "sleep 1000")).await;
    let mut system = sh_job("web", "sleep 1000");
    system["Type"] = json!("system");
    let a = n
        .send("PUT", "/v1/jobs", Some(json!({"Job": system.clone()})))
        .await;
    assert_eq!(
        (a.status, a.text.as_str()),
        (500, "cannot update job from type \"service\" to \"system\"")
    );
    let mut periodic = sh_job("web", "sleep 1000");
    periodic["Type"] = json!("service");
    periodic["Periodic"] = json!({"Enabled": true, "Spec": "*/5 * * * *", "SpecType": "cron"});
    let a = n
        .send("PUT", "/v1/jobs", Some(json!({"Job": periodic})))
        .await;
    assert_eq!(
        (a.status, a.text.as_str()),
        (500, "cannot update non-periodic job to being periodic")
    );
    // A stopped job keeps its type until it is purged.
    assert_eq!(n.send("DELETE", "/v1/job/web", None).await.status, 200);
    let a = n
        .send("PUT", "/v1/jobs", Some(json!({"Job": system.clone()})))
        .await;
    assert_eq!(a.status, 500, "{}", a.text);
    let job = n.get("/v1/job/web").await;
    assert_eq!(job["Type"], "service");
    assert_eq!(
        n.send("DELETE", "/v1/job/web?purge=true", None)
            .await
            .status,
        200
    );
    n.register(system).await;
    assert_eq!(n.get("/v1/job/web").await["Type"], "system");
    n.shutdown().await;
}

#[tokio::test]
async fn revert_to_a_version_equal_to_the_current_spec_only_creates_an_evaluation() {
    let n = Nomad::start().await;
    n.register(sh_job("web", "sleep 1000")).await;
    n.register(sh_job("web", "sleep 2000")).await;
    n.register(sh_job("web", "sleep 1000")).await;
    let before = n.get("/v1/job/web").await;
    assert_eq!(before["Version"], 2);
    // Nomad looks the version up before it checks EnforcePriorVersion.
    let a = n
        .send(
            "POST",
            "/v1/job/web/revert",
            Some(json!({"JobID": "web", "JobVersion": 42, "EnforcePriorVersion": 7})),
        )
        .await;
    assert_eq!(
        (a.status, a.text.as_str()),
        (
            500,
            "job \"web\" in namespace \"default\" at version 42 not found"
        )
    );
    let a = n
        .send(
            "POST",
            "/v1/job/web/revert",
            Some(json!({"JobID": "web", "JobVersion": 0, "EnforcePriorVersion": 2})),
        )
        .await;
    assert_eq!(a.status, 200, "{}", a.text);
    let out = a.json();
    assert!(!out["EvalID"].as_str().unwrap().is_empty());
    assert_eq!(out["JobModifyIndex"], before["JobModifyIndex"]);
    let after = n.get("/v1/job/web").await;
    assert_eq!(after["Version"], 2, "no new version for an unchanged spec");
    assert_eq!(after["JobModifyIndex"], before["JobModifyIndex"]);
    let versions = n.get("/v1/job/web/versions").await;
    assert_eq!(versions["Versions"].as_array().unwrap().len(), 3);
    n.shutdown().await;
}

#[tokio::test]
async fn every_stop_writes_a_stopped_version_and_answers_one_index_for_job_and_eval() {
    let n = Nomad::start().await;
    n.register(sh_job("web", "sleep 1000")).await;
    for expected_version in [1, 2] {
        let a = n.send("DELETE", "/v1/job/web", None).await;
        assert_eq!(a.status, 200, "{}", a.text);
        let out = a.json();
        let jmi = out["JobModifyIndex"].as_u64().unwrap();
        assert_eq!(out["EvalCreateIndex"], jmi);
        assert_eq!(out["Index"], jmi);
        let job = n.get("/v1/job/web").await;
        assert_eq!(
            job["Version"], expected_version,
            "a stop of a stopped job too"
        );
        assert_eq!(job["JobModifyIndex"], jmi);
        assert_eq!(job["Stop"], true);
    }
    let a = n.send("DELETE", "/v1/job/web?purge=true", None).await;
    let out = a.json();
    assert_eq!(out["EvalCreateIndex"], out["JobModifyIndex"]);
    assert_eq!(out["Index"], out["JobModifyIndex"]);
    n.shutdown().await;
}

#[tokio::test]
async fn the_server_rejects_sub_second_checks_batch_update_blocks_and_mistyped_envelope_fields() {
    let n = Nomad::start().await;
    let mut job = sh_job("web", "sleep 1000");
    job["TaskGroups"][0]["Services"] = json!([{
        "Name": "web", "Provider": "nomad",
        "Checks": [{"Name": "alive", "Type": "tcp", "Interval": 250_000_000u64, "Timeout": 1_000_000_000u64}],
    }]);
    let a = n
        .send("PUT", "/v1/jobs", Some(json!({"Job": job.clone()})))
        .await;
    assert_eq!(a.status, 500, "{}", a.text);
    assert!(
        a.text.contains("interval (250ms) cannot be lower than 1s"),
        "{}",
        a.text
    );
    job["TaskGroups"][0]["Services"][0]["Checks"][0]["Interval"] = json!(2_000_000_000u64);
    job["TaskGroups"][0]["Services"][0]["Checks"][0]["Timeout"] = json!(500_000_000u64);
    let a = n
        .send("PUT", "/v1/jobs", Some(json!({"Job": job.clone()})))
        .await;
    assert_eq!(a.status, 500, "{}", a.text);
    assert!(
        a.text
            .contains("timeout (500ms) is lower than required minimum timeout 1s"),
        "{}",
        a.text
    );

    let mut batch = sh_job("once", "true");
    batch["Type"] = json!("batch");
    batch["TaskGroups"][0]["Update"] = json!({"MaxParallel": 1});
    let a = n.send("PUT", "/v1/jobs", Some(json!({"Job": batch}))).await;
    assert_eq!(a.status, 500, "{}", a.text);
    assert!(
        a.text
            .contains("Job type \"batch\" does not allow update block"),
        "{}",
        a.text
    );

    let ok = sh_job("web", "sleep 1000");
    let a = n
        .send(
            "PUT",
            "/v1/jobs",
            Some(json!({"Job": ok.clone(), "EnforceIndex": "true"})),
        )
        .await;
    assert_eq!(
        (a.status, a.text.as_str()),
        (
            400,
            "json: cannot unmarshal string into Go struct field JobRegisterRequest.EnforceIndex of type bool"
        )
    );
    n.register(ok).await;
    let a = n
        .send(
            "POST",
            "/v1/job/web/revert",
            Some(json!({"JobID": "web", "JobVersion": "1"})),
        )
        .await;
    assert_eq!(
        (a.status, a.text.as_str()),
        (
            400,
            "json: cannot unmarshal string into Go struct field JobRevertRequest.JobVersion of type uint64"
        )
    );
    let a = n
        .send(
            "POST",
            "/v1/job/web/revert",
            Some(json!({"JobID": "web", "JobVersion": 1.5})),
        )
        .await;
    assert_eq!(a.status, 400, "{}", a.text);
    assert!(
        a.text
            .contains("cannot unmarshal number 1.5 into Go struct field"),
        "{}",
        a.text
    );
    assert_eq!(
        n.get("/v1/job/web").await["Version"],
        0,
        "nothing was written"
    );
    n.shutdown().await;
}

#[tokio::test]
async fn a_canary_update_block_is_refused_explicitly_because_the_twin_has_no_canaries() {
    let n = Nomad::start().await;
    let mut job = sh_job("web", "sleep 1000");
    job["TaskGroups"][0]["Update"] = json!({"Canary": 1, "MaxParallel": 1});
    let a = n
        .send("PUT", "/v1/jobs", Some(json!({"Job": job.clone()})))
        .await;
    assert_eq!(a.status, 500);
    assert!(
        a.text
            .starts_with("hashistack-twin: canary deployments are not implemented"),
        "{}",
        a.text
    );
    assert_eq!(n.send("GET", "/v1/job/web", None).await.status, 404);
    let a = n
        .send("POST", "/v1/job/web/plan", Some(json!({"Job": job})))
        .await;
    assert_eq!(a.status, 500, "{}", a.text);
    n.shutdown().await;
}
