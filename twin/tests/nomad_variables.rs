//! Nomad Variables as documented (SRC command/agent/variable_endpoint.go, website
//! api-docs/variables): write, read, list, check-and-set, delete, their status codes; the
//! `variables` ACL block; and the executor reading a job's variable for its templates
//! (`nomadVar`, `env = true`).
#![allow(clippy::unwrap_used, clippy::panic)]

mod nomad_support;

use hashistack_twin::TwinConfig;
use hashistack_twin::nomad::AclTokenSeed;
use nomad_support::{Nomad, sh_job};
use serde_json::{Value, json};
use std::time::Duration;

const MANAGEMENT: &str = "mgmt-vars-secret";
const JOB_READER: &str = "job-reader-secret";

fn items(v: &Value) -> &Value {
    &v["Items"]
}

#[tokio::test]
async fn a_variable_is_written_whole_read_listed_and_deleted_with_nomads_status_codes() {
    let n = Nomad::start().await;
    let put = n
        .send(
            "PUT",
            "/v1/var/team/app",
            Some(json!({"Items": {"user": "me", "pass": "x"}})),
        )
        .await;
    assert_eq!(put.status, 200, "{}", put.text);
    let written = put.json();
    assert_eq!(written["Path"], "team/app");
    assert_eq!(written["Namespace"], "default");
    assert_eq!(items(&written)["user"], "me");
    let first = written["ModifyIndex"].as_u64().unwrap();
    assert_eq!(put.index(), first);
    assert_eq!(written["CreateIndex"], first);

    let read = n.send("GET", "/v1/var/team/app", None).await;
    assert_eq!(read.status, 200);
    assert_eq!(read.json()["Items"], json!({"user": "me", "pass": "x"}));
    assert_eq!(read.index(), first);

    // A write replaces the items; the create index stays.
    let again = n
        .send(
            "PUT",
            "/v1/var/team/app",
            Some(json!({"Items": {"user": "you"}})),
        )
        .await
        .json();
    assert_eq!(again["Items"], json!({"user": "you"}));
    assert_eq!(again["CreateIndex"], first);
    assert!(again["ModifyIndex"].as_u64().unwrap() > first);

    n.send(
        "PUT",
        "/v1/var/other/thing",
        Some(json!({"Items": {"k": "v"}})),
    )
    .await;
    let listed = n.get("/v1/vars?prefix=team/").await;
    let paths: Vec<&str> = listed
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["Path"].as_str().unwrap())
        .collect();
    assert_eq!(paths, ["team/app"]);
    assert!(
        listed[0].get("Items").is_none(),
        "a listing carries metadata only: {listed}"
    );
    assert_eq!(n.get("/v1/vars").await.as_array().unwrap().len(), 2);

    let deleted = n.send("DELETE", "/v1/var/team/app", None).await;
    assert_eq!(deleted.status, 204, "{}", deleted.text);
    let gone = n.send("GET", "/v1/var/team/app", None).await;
    assert_eq!(
        (gone.status, gone.text.as_str()),
        (404, "variable not found")
    );
    n.shutdown().await;
}

#[tokio::test]
async fn a_check_and_set_conflict_is_a_409_with_the_variable_found() {
    let n = Nomad::start().await;
    let body = json!({"Items": {"k": "v1"}});
    let created = n.send("PUT", "/v1/var/app?cas=0", Some(body.clone())).await;
    assert_eq!(created.status, 200, "{}", created.text);
    let index = created.json()["ModifyIndex"].as_u64().unwrap();
    // cas=0 means "only if absent".
    let conflict = n.send("PUT", "/v1/var/app?cas=0", Some(body.clone())).await;
    assert_eq!(conflict.status, 409, "{}", conflict.text);
    assert_eq!(conflict.json()["ModifyIndex"], index);
    assert_eq!(conflict.json()["Items"]["k"], "v1");
    let stale = n
        .send("DELETE", &format!("/v1/var/app?cas={}", index + 100), None)
        .await;
    assert_eq!(stale.status, 409);
    let updated = n
        .send(
            "PUT",
            &format!("/v1/var/app?cas={index}"),
            Some(json!({"Items": {"k": "v2"}})),
        )
        .await;
    assert_eq!(updated.status, 200, "{}", updated.text);
    let absent = n
        .send("PUT", "/v1/var/nothing?cas=5", Some(body.clone()))
        .await;
    assert_eq!(absent.status, 409);
    assert_eq!(absent.json()["Path"], "nothing");
    assert_eq!(absent.json()["ModifyIndex"], 0);
    let bad_cas = n.send("PUT", "/v1/var/app?cas=x", Some(body)).await;
    assert_eq!(bad_cas.status, 400);
    assert!(
        bad_cas.text.starts_with("can not parse cas"),
        "{}",
        bad_cas.text
    );
    n.shutdown().await;
}

#[tokio::test]
async fn bad_writes_are_refused_as_nomad_refuses_them() {
    let n = Nomad::start().await;
    let no_items = n
        .send("PUT", "/v1/var/app", Some(json!({"Items": {}})))
        .await;
    assert_eq!(
        (no_items.status, no_items.text.as_str()),
        (400, "variable missing required Items object")
    );
    let not_strings = n
        .send("PUT", "/v1/var/app", Some(json!({"Items": {"k": 1}})))
        .await;
    assert_eq!(not_strings.status, 400, "{}", not_strings.text);
    let reserved = n
        .send(
            "PUT",
            "/v1/var/nomad/other",
            Some(json!({"Items": {"k": "v"}})),
        )
        .await;
    assert_eq!(reserved.status, 500, "{}", reserved.text);
    assert!(reserved.text.contains("\"nomad\""), "{}", reserved.text);
    let no_path = n.send("GET", "/v1/var/", None).await;
    assert_eq!(
        (no_path.status, no_path.text.as_str()),
        (400, "missing variable path")
    );
    n.shutdown().await;
}

async fn twin_with_acls() -> Nomad {
    Nomad::start_with(TwinConfig {
        acl_token: Some(MANAGEMENT.into()),
        nomad_acl_tokens: vec![AclTokenSeed {
            name: "job-reader".into(),
            secret_id: JOB_READER.into(),
            policies: vec![(
                "job-vars".into(),
                r#"
                namespace "default" {
                  variables {
                    path "nomad/jobs/*" { capabilities = ["read"] }
                  }
                }
                "#
                .into(),
            )],
        }],
        ..TwinConfig::default()
    })
    .await
}

#[tokio::test]
async fn with_acls_anonymous_cannot_write_and_a_token_gets_only_its_variable_paths() {
    let n = twin_with_acls().await;
    let body = json!({"Items": {"consul_token": "c", "nomad_token": "n"}});
    let anonymous = n
        .send_as(None, "PUT", "/v1/var/nomad/jobs/proxy", Some(body.clone()))
        .await;
    assert_eq!(
        (anonymous.status, anonymous.text.as_str()),
        (403, "Permission denied")
    );
    let unknown = n
        .send_as(
            Some("no-such-token"),
            "GET",
            "/v1/var/nomad/jobs/proxy",
            None,
        )
        .await;
    assert_eq!(
        (unknown.status, unknown.text.as_str()),
        (403, "ACL token not found")
    );
    for path in ["nomad/jobs/proxy", "team/app"] {
        let put = n
            .send("PUT", &format!("/v1/var/{path}"), Some(body.clone()))
            .await;
        assert_eq!(put.status, 200, "management writes {path}: {}", put.text);
    }
    let read = n
        .send_as(Some(JOB_READER), "GET", "/v1/var/nomad/jobs/proxy", None)
        .await;
    assert_eq!(read.status, 200, "{}", read.text);
    for (method, path) in [
        ("GET", "/v1/var/team/app"),
        ("PUT", "/v1/var/nomad/jobs/proxy"),
        ("DELETE", "/v1/var/nomad/jobs/proxy"),
    ] {
        let body = (method == "PUT").then(|| body.clone());
        let a = n.send_as(Some(JOB_READER), method, path, body).await;
        assert_eq!(a.status, 403, "{method} {path}: {}", a.text);
    }
    // Listings are filtered, not refused.
    let listed = n.send_as(Some(JOB_READER), "GET", "/v1/vars", None).await;
    assert_eq!(listed.status, 200);
    let paths: Vec<String> = listed
        .json()
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["Path"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(paths, ["nomad/jobs/proxy"]);
    let anonymous_list = n.send_as(None, "GET", "/v1/vars", None).await;
    assert_eq!(
        (anonymous_list.status, anonymous_list.text.as_str()),
        (200, "[]")
    );
    n.shutdown().await;
}

async fn wait_file(path: &std::path::Path) -> String {
    for _ in 0..200 {
        if let Ok(text) = std::fs::read_to_string(path)
            && !text.is_empty()
        {
            return text;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{} never written", path.display());
}

#[tokio::test]
async fn a_task_gets_its_jobs_variable_through_an_env_template_and_a_file_template() {
    let n = twin_with_acls().await;
    let out = tempfile::tempdir().unwrap();
    let seen = out.path().join("seen");
    n.send(
        "PUT",
        "/v1/var/nomad/jobs/vars-job",
        Some(
            json!({"Items": {"consul_token": "consul-sentinel", "nomad_token": "nomad-sentinel"}}),
        ),
    )
    .await;
    let mut job = sh_job(
        "vars-job",
        &format!(
            "printf '%s|%s|%s' \"$CONSUL_HTTP_TOKEN\" \"$(cat secrets/conf.yml)\" \"$(stat -c %a secrets/tokens.env)\" > {}; exec sleep 1000",
            seen.display()
        ),
    );
    job["TaskGroups"][0]["Tasks"][0]["Templates"] = json!([
        {
            "DestPath": "secrets/tokens.env",
            "EmbeddedTmpl": "{{ with nomadVar \"nomad/jobs/vars-job\" }}CONSUL_HTTP_TOKEN={{ .consul_token }}\n{{ end }}",
            "Envvars": true,
            "Perms": "0600",
        },
        {
            "DestPath": "secrets/conf.yml",
            "EmbeddedTmpl": "token: \"[[ with nomadVar `nomad/jobs/vars-job` ]][[ .nomad_token ]][[ end ]]\"",
            "LeftDelim": "[[",
            "RightDelim": "]]",
        },
    ]);
    n.register(job).await;
    assert_eq!(
        wait_file(&seen).await,
        "consul-sentinel|token: \"nomad-sentinel\"|600"
    );
    n.shutdown().await;
}

#[tokio::test]
async fn a_task_whose_variable_does_not_exist_fails_its_start_with_an_event_naming_the_path() {
    let n = Nomad::start().await;
    let mut job = sh_job("orphan", "exec sleep 1000");
    job["TaskGroups"][0]["Tasks"][0]["Templates"] = json!([{
        "DestPath": "secrets/tokens.env",
        "EmbeddedTmpl": "{{ with nomadVar \"nomad/jobs/orphan\" }}X={{ .x }}{{ end }}",
        "Envvars": true,
    }]);
    n.register(job).await;
    let allocs = n
        .wait_for("/v1/job/orphan/allocations", Duration::from_secs(20), |v| {
            v.as_array()
                .is_some_and(|a| a.iter().any(|a| a["ClientStatus"] == "failed"))
        })
        .await;
    let events = allocs[0]["TaskStates"]["t"]["Events"].to_string();
    assert!(events.contains("Setup Failure"), "{events}");
    assert!(
        events.contains("nomad/jobs/orphan") && events.contains("does not exist"),
        "{events}"
    );
    n.shutdown().await;
}
