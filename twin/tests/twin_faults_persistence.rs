//! Twin infrastructure: persistence across restarts, fault injection (library calls and the
//! `/_twin` control endpoint), and the standalone binary's signal handling.
#![allow(clippy::unwrap_used, clippy::panic)]

use std::time::{Duration, Instant};

use hashistack_twin::{Api, Twin, TwinConfig};
use reqwest::StatusCode;
use serde_json::{Value, json};

/// Polls `cond` until it holds, failing the test after `limit`: tests wait for the state they
/// need instead of sleeping a fixed window and hoping it was long enough.
async fn wait_until<F, Fut>(what: &str, limit: Duration, mut cond: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + limit;
    while !cond().await {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Whether a fresh connection to `url` is refused.
async fn refused(url: &str) -> bool {
    reqwest::Client::new()
        .get(url)
        .send()
        .await
        .is_err_and(|e| e.is_connect())
}

fn index_of(resp: &reqwest::Response) -> u64 {
    resp.headers()
        .get("X-Consul-Index")
        .unwrap()
        .to_str()
        .unwrap()
        .parse()
        .unwrap()
}

#[tokio::test]
async fn kv_sessions_and_indexes_survive_a_restart_with_the_same_data_dir() {
    let dir = tempfile::tempdir().unwrap();
    let config = TwinConfig {
        data_dir: Some(dir.path().to_path_buf()),
        ..TwinConfig::default()
    };
    let http = reqwest::Client::new();

    let twin = Twin::start(config.clone()).await.unwrap();
    let base = format!("http://{}", twin.consul_addr());
    let created: Value = http
        .put(format!("{base}/v1/session/create"))
        .body("{}")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let sid = created["ID"].as_str().unwrap().to_string();
    http.put(format!("{base}/v1/kv/app/leader?acquire={sid}"))
        .body("me")
        .send()
        .await
        .unwrap();
    http.put(format!("{base}/v1/kv/app/config"))
        .body("cfg")
        .send()
        .await
        .unwrap();
    http.delete(format!("{base}/v1/kv/app/gone"))
        .send()
        .await
        .unwrap();
    let before: Value = http
        .get(format!("{base}/v1/kv/app?recurse"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let before_index = index_of(
        &http
            .get(format!("{base}/v1/kv/app?recurse"))
            .send()
            .await
            .unwrap(),
    );
    twin.shutdown().await;

    let twin = Twin::start(config).await.unwrap();
    let base = format!("http://{}", twin.consul_addr());
    let resp = http
        .get(format!("{base}/v1/kv/app?recurse"))
        .send()
        .await
        .unwrap();
    assert_eq!(
        index_of(&resp),
        before_index,
        "the prefix index is restored"
    );
    let after: Value = resp.json().await.unwrap();
    assert_eq!(
        after, before,
        "entries, indexes and the lock holder are restored"
    );
    let info: Value = http
        .get(format!("{base}/v1/session/info/{sid}"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(info[0]["ID"], sid.as_str(), "sessions are restored");
    http.put(format!("{base}/v1/kv/app/new"))
        .body("x")
        .send()
        .await
        .unwrap();
    let new: Value = http
        .get(format!("{base}/v1/kv/app/new"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(
        new[0]["ModifyIndex"].as_u64().unwrap() > before_index,
        "indexes never go backwards"
    );
    twin.shutdown().await;
}

#[tokio::test]
async fn a_stopped_api_refuses_connections_and_recovers_on_the_same_port() {
    let twin = Twin::start(TwinConfig::default()).await.unwrap();
    let base = format!("http://{}", twin.consul_addr());
    let http = reqwest::Client::new();
    http.put(format!("{base}/v1/kv/k"))
        .body("1")
        .send()
        .await
        .unwrap();
    let idx = index_of(&http.get(format!("{base}/v1/kv/k")).send().await.unwrap());
    // A held blocking query dies with the connection, as with a real agent going away.
    let parked_before = twin.consul().watchers();
    let held = tokio::spawn({
        let (http, url) = (http.clone(), format!("{base}/v1/kv/k?index={idx}&wait=30s"));
        async move { http.get(url).send().await }
    });
    wait_until(
        "the blocking query is parked",
        Duration::from_secs(10),
        || async { twin.consul().watchers() > parked_before },
    )
    .await;

    twin.faults().stop(Api::Consul).await;
    assert!(!twin.faults().is_running(Api::Consul).await);
    let err = held
        .await
        .unwrap()
        .expect_err("the held blocking query must fail");
    assert!(!err.is_timeout());
    let refused = http
        .get(format!("{base}/v1/kv/k"))
        .send()
        .await
        .expect_err("stopped API must refuse");
    assert!(refused.is_connect(), "{refused:?}");
    let fresh = reqwest::Client::new();
    assert!(
        fresh
            .get(format!("{base}/v1/kv/k"))
            .send()
            .await
            .unwrap_err()
            .is_connect()
    );

    twin.faults().start(Api::Consul).await.unwrap();
    let resp = http.get(format!("{base}/v1/kv/k")).send().await.unwrap();
    assert_eq!(
        resp.status(),
        StatusCode::OK,
        "state is intact after the outage"
    );
    twin.shutdown().await;
}

#[tokio::test]
async fn failing_paths_latency_and_pause_apply_until_cleared() {
    let twin = Twin::start(TwinConfig::default()).await.unwrap();
    let base = format!("http://{}", twin.consul_addr());
    let http = reqwest::Client::new();

    twin.faults().fail_path(Api::Consul, "/v1/kv/", 500);
    let resp = http.get(format!("{base}/v1/kv/a")).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::INTERNAL_SERVER_ERROR);
    let resp = http
        .get(format!("{base}/v1/status/leader"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK, "other paths are unaffected");

    twin.faults()
        .latency(Api::Consul, Duration::from_millis(300));
    let started = Instant::now();
    http.get(format!("{base}/v1/status/leader"))
        .send()
        .await
        .unwrap();
    assert!(started.elapsed() >= Duration::from_millis(300));

    twin.faults().pause(Api::Consul);
    let seen = twin.requests(Api::Consul);
    let paused = tokio::spawn({
        let (http, url) = (http.clone(), format!("{base}/v1/status/leader"));
        async move { http.get(url).send().await.map(|r| r.status()) }
    });
    // Once the request is counted it is inside the twin; from then on only the pause holds it.
    wait_until(
        "the paused request arrived",
        Duration::from_secs(10),
        || async { twin.requests(Api::Consul) > seen },
    )
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!paused.is_finished(), "a paused API holds requests");
    twin.faults().resume(Api::Consul);
    assert_eq!(paused.await.unwrap().unwrap(), StatusCode::OK);

    twin.faults().clear().await.unwrap();
    let started = Instant::now();
    let resp = http.get(format!("{base}/v1/kv/a")).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::NOT_FOUND);
    assert!(started.elapsed() < Duration::from_millis(300));
    twin.shutdown().await;
}

#[tokio::test]
async fn the_control_endpoint_injects_faults_and_counts_requests_over_http() {
    let twin = Twin::start(TwinConfig::default()).await.unwrap();
    let consul = format!("http://{}", twin.consul_addr());
    let nomad = format!("http://{}", twin.nomad_addr());
    let http = reqwest::Client::new();

    http.get(format!("{consul}/v1/status/leader"))
        .send()
        .await
        .unwrap();
    let counts: Value = http
        .get(format!("{consul}/_twin/requests"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        counts["consul"], 1,
        "control requests are not counted: {counts}"
    );

    let r = http
        .put(format!(
            "{nomad}/_twin/faults/consul/fail?path=/v1/kv&status=503"
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(
        http.get(format!("{consul}/v1/kv/a"))
            .send()
            .await
            .unwrap()
            .status(),
        StatusCode::SERVICE_UNAVAILABLE
    );
    assert_eq!(
        http.delete(format!("{nomad}/_twin/faults"))
            .send()
            .await
            .unwrap()
            .status(),
        StatusCode::OK
    );
    assert_eq!(
        http.get(format!("{consul}/v1/kv/a"))
            .send()
            .await
            .unwrap()
            .status(),
        StatusCode::NOT_FOUND
    );

    // Stop Consul for a while through its own control endpoint; it comes back by itself.
    let r = http
        .put(format!("{consul}/_twin/faults/consul/stop?for_ms=700"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let leader = format!("{consul}/v1/status/leader");
    let stopped_at = Instant::now();
    wait_until(
        "the stopped API refuses connections",
        Duration::from_secs(5),
        || refused(&leader),
    )
    .await;
    wait_until(
        "the API restarts by itself",
        Duration::from_secs(10),
        || async { !refused(&leader).await },
    )
    .await;
    assert!(
        stopped_at.elapsed() >= Duration::from_millis(600),
        "it stayed down for about for_ms=700 (measured from after the stop answered)"
    );
    let r = reqwest::Client::new()
        .get(format!("{consul}/v1/status/leader"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);

    // Force-expire a session: its lock is released.
    let created: Value = http
        .put(format!("{consul}/v1/session/create"))
        .json(&json!({"LockDelay": "0s"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let sid = created["ID"].as_str().unwrap();
    http.put(format!("{consul}/v1/kv/lock?acquire={sid}"))
        .body("x")
        .send()
        .await
        .unwrap();
    let r: Value = http
        .put(format!("{consul}/_twin/consul/session/{sid}/expire"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(r, json!({"expired": true}));
    let entry: Value = http
        .get(format!("{consul}/v1/kv/lock"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(entry[0].get("Session").is_none(), "{entry}");
    twin.shutdown().await;
}

#[tokio::test]
async fn force_expired_session_releases_locks_like_a_ttl_expiry() {
    let twin = Twin::start(TwinConfig::default()).await.unwrap();
    let base = format!("http://{}", twin.consul_addr());
    let http = reqwest::Client::new();
    let created: Value = http
        .put(format!("{base}/v1/session/create"))
        .json(&json!({"TTL": "10s", "Behavior": "delete"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let sid = created["ID"].as_str().unwrap();
    http.put(format!("{base}/v1/kv/lock?acquire={sid}"))
        .body("x")
        .send()
        .await
        .unwrap();
    assert!(twin.faults().expire_session(sid));
    assert_eq!(
        http.get(format!("{base}/v1/kv/lock"))
            .send()
            .await
            .unwrap()
            .status(),
        StatusCode::NOT_FOUND
    );
    let r = http
        .put(format!("{base}/v1/session/renew/{sid}"))
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.status(),
        StatusCode::NOT_FOUND,
        "an expired session cannot be renewed"
    );
    assert!(!twin.faults().expire_session(sid));
    twin.shutdown().await;
}

#[tokio::test]
async fn the_binary_serves_both_apis_and_exits_cleanly_on_sigterm() {
    // This test builds its client before (or without) any in-process Twin::start, which is what
    // installs reqwest's TLS provider elsewhere.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let consul_port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let nomad_port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let dir = tempfile::tempdir().unwrap();
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, "bin-token\n").unwrap();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_hashistack-twin"))
        .args(["--consul-addr", &format!("127.0.0.1:{consul_port}")])
        .args(["--nomad-addr", &format!("127.0.0.1:{nomad_port}")])
        .args(["--data-dir", &dir.path().join("data").display().to_string()])
        .args(["--acl-token-file", &token_file.display().to_string()])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let http = reqwest::Client::new();
    let mut answered = None;
    for _ in 0..100 {
        if let Ok(r) = http
            .put(format!("http://127.0.0.1:{consul_port}/v1/kv/a"))
            .header("X-Consul-Token", "bin-token")
            .body("1")
            .send()
            .await
        {
            answered = Some(r.status());
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(answered, Some(StatusCode::OK));
    let denied = http
        .get(format!("http://127.0.0.1:{consul_port}/v1/kv/a"))
        .send()
        .await
        .unwrap();
    assert_eq!(
        denied.status(),
        StatusCode::FORBIDDEN,
        "the token file is enforced"
    );

    let killed = std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let mut status = None;
    for _ in 0..100 {
        if let Some(s) = child.try_wait().unwrap() {
            status = Some(s);
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let status = status.unwrap_or_else(|| {
        let _ = child.kill();
        panic!("the twin did not exit on SIGTERM")
    });
    assert!(status.success(), "exit status {status}");
    assert!(
        dir.path().join("data").join("consul-state.json").exists(),
        "the final snapshot is written"
    );
}

#[tokio::test]
async fn with_acls_on_the_control_routes_need_the_management_token() {
    const SENTINEL: &str = "mgmt-sentinel-4b1d";
    let twin = Twin::start(TwinConfig {
        acl_token: Some(SENTINEL.into()),
        ..TwinConfig::default()
    })
    .await
    .unwrap();
    let consul = format!("http://{}", twin.consul_addr());
    let nomad = format!("http://{}", twin.nomad_addr());
    let http = reqwest::Client::new();
    for (req, what) in [
        (http.get(format!("{consul}/_twin/requests")), "no token"),
        (
            http.put(format!("{consul}/_twin/faults/consul/stop"))
                .header("X-Consul-Token", "guess"),
            "a wrong token",
        ),
        (
            http.delete(format!("{nomad}/_twin/faults"))
                .header("X-Nomad-Token", "guess"),
            "a wrong Nomad token",
        ),
    ] {
        let r = req.send().await.unwrap();
        assert_eq!(r.status(), StatusCode::FORBIDDEN, "{what}");
        let body = r.text().await.unwrap();
        assert!(body.starts_with("Permission denied"), "{body}");
        assert!(!body.contains(SENTINEL));
    }
    assert!(
        twin.faults().is_running(Api::Consul).await,
        "the refused stop did nothing"
    );
    for req in [
        http.get(format!("{consul}/_twin/requests"))
            .header("X-Consul-Token", SENTINEL),
        http.get(format!("{nomad}/_twin/requests"))
            .header("X-Nomad-Token", SENTINEL),
        http.get(format!("{consul}/_twin/requests"))
            .header("Authorization", format!("Bearer {SENTINEL}")),
    ] {
        assert_eq!(req.send().await.unwrap().status(), StatusCode::OK);
    }
    twin.shutdown().await;
}

#[tokio::test]
async fn a_generated_management_token_turns_acls_on_and_never_shows_in_debug_output() {
    let config = TwinConfig {
        generate_acl_token: true,
        ..TwinConfig::default()
    };
    let twin = Twin::start(config.clone()).await.unwrap();
    let token = twin.acl_token().unwrap().to_string();
    assert_eq!(token.len(), 36, "a UUID");
    let consul = format!("http://{}", twin.consul_addr());
    let http = reqwest::Client::new();
    let anonymous = http.get(format!("{consul}/v1/kv/a")).send().await.unwrap();
    assert_eq!(anonymous.status(), StatusCode::FORBIDDEN);
    let r = http
        .get(format!("{consul}/v1/kv/a"))
        .header("X-Consul-Token", &token)
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.status(),
        StatusCode::NOT_FOUND,
        "the token reaches the API"
    );
    let r = http
        .get(format!("{consul}/_twin/requests"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    let shown = format!(
        "{:?} {:?}",
        TwinConfig {
            acl_token: Some(token.clone()),
            ..config
        },
        twin
    );
    assert!(!shown.contains(&token), "{shown}");
    assert!(shown.contains("<redacted>"), "{shown}");
    twin.shutdown().await;
}

#[test]
fn the_binary_refuses_a_non_loopback_address_without_an_acl_token_file() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_hashistack-twin"))
        .args(["--consul-addr", "0.0.0.0:0", "--nomad-addr", "127.0.0.1:0"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(
            "refusing to listen on a non-loopback address (--consul-addr 0.0.0.0:0) without ACLs"
        ) && err.contains("--acl-token-file"),
        "{err}"
    );
}
