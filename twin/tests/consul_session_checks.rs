//! Sessions bound to health checks (DOC api-docs/session.mdx `ServiceChecks`/`NodeChecks`,
//! concepts "Session" invalidation; SRC agent/consul/state/session.go
//! `validateSessionChecksTxn`, state/catalog.go `ensureCheckTxn` and `deleteCheckTxn`,
//! agent/checks/check.go `CheckHTTP`): the agent runs HTTP and TCP checks on their interval,
//! a session create naming a missing or critical check is refused with Consul's texts, and a
//! linked check that goes critical, or is deregistered, invalidates the session (locks
//! released, lock-delay, blocked readers woken).
#![allow(clippy::unwrap_used, clippy::panic)]

mod consul_support;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use consul_support::Api;
use reqwest::StatusCode;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::task::JoinHandle;

/// An HTTP endpoint answering 200 "ok" to everything until its task is aborted; then the port
/// refuses connections, as a killed process's would.
async fn healthz() -> (SocketAddr, JoinHandle<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        loop {
            let Ok((mut conn, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let mut buf = [0u8; 1024];
                let _ = conn.read(&mut buf).await;
                let _ = conn
                    .write_all(
                        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok",
                    )
                    .await;
            });
        }
    });
    (addr, task)
}

/// Registers service `id` with one HTTP check `<id>-http` on `addr` (interval 200 ms), as
/// Nomad's service client registers a job's service with the agent.
async fn register(api: &Api, id: &str, addr: SocketAddr) {
    let body = json!({
        "ID": id,
        "Name": "operator",
        "Port": addr.port(),
        "Checks": [{
            "CheckID": format!("{id}-http"),
            "Name": "healthz",
            "HTTP": format!("http://{addr}/healthz"),
            "Interval": "200ms",
            "Timeout": "100ms",
        }],
    });
    let a = api
        .call(
            "PUT",
            "/v1/agent/service/register",
            Some(body.to_string().as_bytes()),
        )
        .await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.text);
}

async fn check_status(api: &Api, check: &str) -> Option<String> {
    let (_, checks) = api.json("GET", "/v1/agent/checks", None).await;
    checks[check]["Status"].as_str().map(str::to_owned)
}

async fn wait_status(api: &Api, check: &str, status: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while check_status(api, check).await.as_deref() != Some(status) {
        assert!(
            Instant::now() < deadline,
            "{check} never became {status}: {:?}",
            check_status(api, check).await
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn linked(check: &str) -> Value {
    json!({
        "NodeChecks": [],
        "ServiceChecks": [{"ID": check}],
        "LockDelay": "1s",
        "TTL": "30s",
        "Behavior": "release",
    })
}

#[tokio::test]
async fn an_agent_http_check_starts_critical_passes_when_answered_and_fails_when_the_endpoint_dies()
{
    let api = Api::start().await;
    let (addr, server) = healthz().await;
    register(&api, "svc-1", addr).await;
    assert_eq!(
        check_status(&api, "svc-1-http").await.as_deref(),
        Some("critical"),
        "a check without Status starts critical until its first run"
    );
    wait_status(&api, "svc-1-http", "passing").await;
    let (_, checks) = api.json("GET", "/v1/agent/checks", None).await;
    let output = checks["svc-1-http"]["Output"].as_str().unwrap();
    assert!(output.contains("200"), "{output}");
    assert_eq!(checks["svc-1-http"]["ServiceID"], "svc-1");

    server.abort();
    wait_status(&api, "svc-1-http", "critical").await;
    let (_, rows) = api
        .json("GET", "/v1/health/service/operator?passing", None)
        .await;
    assert_eq!(rows, json!([]), "the catalog follows the agent's run");
    api.twin.shutdown().await;
}

#[tokio::test]
async fn session_create_refuses_a_linked_check_that_is_missing_or_critical_with_consuls_texts() {
    let api = Api::start().await;
    let a = api
        .call(
            "PUT",
            "/v1/session/create",
            Some(linked("nope").to_string().as_bytes()),
        )
        .await;
    assert_eq!(a.status, StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(a.text, "Missing check 'nope' registration");

    // Registered but not run yet: critical, so refused; the caller retries.
    let (addr, _server) = healthz().await;
    let body = json!({
        "ID": "svc-2", "Name": "operator", "Port": addr.port(),
        "Check": {"CheckID": "svc-2-http", "HTTP": format!("http://{addr}/"), "Interval": "1h"},
    });
    let r = api
        .call(
            "PUT",
            "/v1/agent/service/register",
            Some(body.to_string().as_bytes()),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let a = api
        .call(
            "PUT",
            "/v1/session/create",
            Some(linked("svc-2-http").to_string().as_bytes()),
        )
        .await;
    assert_eq!(a.status, StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(a.text, "Check 'svc-2-http' is in critical state");
    api.twin.shutdown().await;
}

#[tokio::test]
async fn a_session_linked_to_a_service_check_is_invalidated_when_the_check_fails_releasing_its_lock_and_waking_readers()
 {
    let api = Api::start().await;
    let (addr, server) = healthz().await;
    register(&api, "svc-3", addr).await;
    wait_status(&api, "svc-3-http", "passing").await;
    let sid = api.session(linked("svc-3-http")).await;
    let (_, info) = api
        .json("GET", &format!("/v1/session/info/{sid}"), None)
        .await;
    assert_eq!(
        info[0]["ServiceChecks"],
        json!([{"ID": "svc-3-http", "Namespace": ""}])
    );
    assert!(api.lock("acquire", "leader", &sid).await);
    let held = api.call("GET", "/v1/kv/leader", None).await;
    let index = held.index();

    // A follower's blocking read of the lock key, open before the holder dies.
    let url = api.url(&format!("/v1/kv/leader?index={index}&wait=30s"));
    let reader = tokio::spawn(async move {
        let started = Instant::now();
        let v: Value = reqwest::get(url).await.unwrap().json().await.unwrap();
        (v, started.elapsed())
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    let killed = Instant::now();
    server.abort();

    let (entry, _) = reader.await.unwrap();
    let took = killed.elapsed();
    assert!(
        entry[0].get("Session").is_none(),
        "the lock was released: {entry}"
    );
    assert!(
        took < Duration::from_secs(2),
        "invalidated about one check interval after the endpoint died, not by the 30 s TTL: {took:?}"
    );
    let (_, info) = api
        .json("GET", &format!("/v1/session/info/{sid}"), None)
        .await;
    assert_eq!(info, json!([]), "the session is gone");
    let other = api.session(json!({"LockDelay": "1s"})).await;
    assert!(
        !api.lock("acquire", "leader", &other).await,
        "lock-delay applies after a check invalidation"
    );
    api.twin.shutdown().await;
}

#[tokio::test]
async fn deregistering_the_linked_service_invalidates_the_session() {
    let api = Api::start().await;
    let (addr, _server) = healthz().await;
    register(&api, "svc-4", addr).await;
    wait_status(&api, "svc-4-http", "passing").await;
    let sid = api.session(linked("svc-4-http")).await;
    assert!(api.lock("acquire", "leader", &sid).await);
    let a = api
        .call("PUT", "/v1/agent/service/deregister/svc-4", None)
        .await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.text);
    let (_, info) = api
        .json("GET", &format!("/v1/session/info/{sid}"), None)
        .await;
    assert_eq!(
        info,
        json!([]),
        "deleteCheckTxn invalidates the check's sessions"
    );
    let (_, entry) = api.json("GET", "/v1/kv/leader", None).await;
    assert!(entry[0].get("Session").is_none(), "{entry}");
    api.twin.shutdown().await;
}
