//! `migrate tags --live` against the twin's Nomad API: shows the tags per job, `--apply`
//! registers them with EnforceIndex, the operator's own jobs are skipped, a second run finds
//! nothing to do.
#![allow(clippy::panic)] // a failing test panics

use std::process::Command;

fn job(id: &str, tags: &[&str], meta: serde_json::Value) -> serde_json::Value {
    serde_json::json!({"Job": {
        "ID": id, "Name": id, "Type": "service", "Datacenters": ["dc1"], "Meta": meta,
        "TaskGroups": [{
            "Name": "web", "Count": 1,
            "Services": [{"Name": format!("{id}-web"), "PortLabel": "http", "Tags": tags}],
            "Tasks": [{"Name": "app", "Driver": "docker", "Config": {"image": "example/app:1"}}]
        }]
    }})
}

async fn tags_of(http: &reqwest::Client, nomad: &str, id: &str) -> (Vec<String>, u64) {
    let v: serde_json::Value = http
        .get(format!("http://{nomad}/v1/job/{id}"))
        .send()
        .await
        .expect("read")
        .json()
        .await
        .expect("json");
    let tags = v["TaskGroups"][0]["Services"][0]["Tags"]
        .as_array()
        .expect("tags")
        .iter()
        .filter_map(|t| t.as_str().map(str::to_string))
        .collect();
    (tags, v["Version"].as_u64().expect("version"))
}

fn migrate(nomad: &str, extra: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_proxy-operator"))
        .args(["migrate", "tags", "--live"])
        .args(extra)
        .env("NOMAD_ADDR", format!("http://{nomad}"))
        .env_remove("NOMAD_TOKEN")
        .env_remove("NOMAD_NAMESPACE")
        .output()
        .expect("run")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_migration_shows_then_applies_tags_and_skips_the_operators_own_jobs() {
    let twin = hashistack_twin::Twin::start(Default::default())
        .await
        .expect("twin");
    let nomad = twin.nomad_addr().to_string();
    let http = reqwest::Client::new();
    for body in [
        job(
            "legacy",
            &["urlprefix-legacy.test:443/", "v1"],
            serde_json::json!({}),
        ),
        job(
            "owned",
            &["https://owned.test"],
            serde_json::json!({"proxy-operator/owner": "proxy-operator"}),
        ),
        job("plain", &["metrics"], serde_json::json!({})),
    ] {
        let resp = http
            .post(format!("http://{nomad}/v1/jobs"))
            .json(&body)
            .send()
            .await
            .expect("register");
        assert!(
            resp.status().is_success(),
            "{}",
            resp.text().await.unwrap_or_default()
        );
    }
    let (before, version) = tags_of(&http, &nomad, "legacy").await;

    let show = tokio::task::spawn_blocking({
        let nomad = nomad.clone();
        move || migrate(&nomad, &[])
    })
    .await
    .expect("join");
    let stdout = String::from_utf8_lossy(&show.stdout);
    assert_eq!(
        show.status.code(),
        Some(1),
        "{stdout}\n{}",
        String::from_utf8_lossy(&show.stderr)
    );
    assert!(stdout.contains("+ traefik.enable=true"), "{stdout}");
    assert!(stdout.contains("would change"), "{stdout}");
    assert!(
        stdout.contains("skipped: owned by proxy-operator"),
        "{stdout}"
    );
    assert_eq!(
        tags_of(&http, &nomad, "legacy").await,
        (before.clone(), version),
        "showing changes nothing"
    );

    let apply = tokio::task::spawn_blocking({
        let nomad = nomad.clone();
        move || migrate(&nomad, &["--apply"])
    })
    .await
    .expect("join");
    assert_eq!(
        apply.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&apply.stdout)
    );
    let (after, new_version) = tags_of(&http, &nomad, "legacy").await;
    assert_eq!(new_version, version + 1);
    assert!(
        after.starts_with(&before),
        "legacy tags stay until --remove-legacy"
    );
    assert!(
        after
            .iter()
            .any(|t| t.ends_with(".rule=Host(`legacy.test`)")),
        "{after:?}"
    );
    let (owned, _) = tags_of(&http, &nomad, "owned").await;
    assert_eq!(owned, ["https://owned.test"]);

    let again = tokio::task::spawn_blocking(move || migrate(&nomad, &["--apply"]))
        .await
        .expect("join");
    assert_eq!(
        again.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&again.stdout)
    );
    twin.shutdown().await;
}
