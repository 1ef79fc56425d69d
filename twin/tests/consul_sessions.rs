//! Sessions as Consul runs them (DOC session.mdx, SRC agent/consul/session_endpoint.go,
//! session_ttl.go, state/session.go, kvs_endpoint.go): the leader-lock sequence with TTL
//! invalidation and lock-delay inside Consul's documented bounds, release/delete behaviour,
//! and the exact refusals.
#![allow(clippy::unwrap_used, clippy::panic)]

mod consul_support;

use std::time::{Duration, Instant};

use consul_support::Api;
use hashistack_twin::TwinConfig;
use reqwest::StatusCode;
use serde_json::{Value, json};

const TTL: Duration = Duration::from_secs(1);
const LOCK_DELAY: Duration = Duration::from_secs(1);
/// Scheduling slack on a 2-core machine shared by several builds.
const SLACK: Duration = Duration::from_millis(500);

/// A twin whose `session_ttl_min` is 1 s (Consul's own tests lower it the same way), so a
/// TTL of 1 s is accepted and its invalidation happens within seconds.
async fn fast_sessions() -> Api {
    Api::with(TwinConfig {
        consul_session_ttl_min: Some(TTL),
        ..TwinConfig::default()
    })
    .await
}

/// Blocks on `path` (a KV read) until `done` holds for the answer; returns when it did.
async fn watch_until(api: &Api, path: &str, done: impl Fn(StatusCode, &str) -> bool) -> Instant {
    let mut index = 1;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        assert!(Instant::now() < deadline, "{path} never reached the state");
        let sep = if path.contains('?') { '&' } else { '?' };
        let a = api
            .call("GET", &format!("{path}{sep}index={index}&wait=10s"), None)
            .await;
        if done(a.status, &a.text) {
            return Instant::now();
        }
        index = a.index();
    }
}

fn unlocked(status: StatusCode, text: &str) -> bool {
    status == StatusCode::OK
        && serde_json::from_str::<Value>(text).unwrap()[0]
            .get("Session")
            .is_none()
}

#[tokio::test]
async fn the_leader_lock_passes_to_a_follower_after_ttl_invalidation_and_lock_delay_within_consuls_bounds()
 {
    let api = fast_sessions().await;
    let leader = api
        .session(json!({"Name": "leader", "TTL": "1s", "LockDelay": "1s", "Behavior": "release"}))
        .await;
    let follower = api
        .session(json!({"Name": "follower", "LockDelay": "1s"}))
        .await;
    assert!(api.lock("acquire", "svc/leader", &leader).await);
    assert!(
        !api.lock("acquire", "svc/leader", &follower).await,
        "a held lock is not acquired by another session"
    );

    // The holder renews for longer than two TTLs: the session lives on.
    let mut last_renew = Instant::now();
    for _ in 0..5 {
        tokio::time::sleep(TTL / 2).await;
        let a = api
            .call("PUT", &format!("/v1/session/renew/{leader}"), None)
            .await;
        assert_eq!(a.status, StatusCode::OK, "{}", a.text);
        assert_eq!(a.json()[0]["TTL"], "1s");
        last_renew = Instant::now();
    }

    // The holder dies (stops renewing). The follower's blocking watch sees the release.
    let released_at = watch_until(&api, "/v1/kv/svc/leader", unlocked).await;
    let silent = released_at - last_renew;
    assert!(
        silent >= TTL,
        "invalidated after {silent:?}: never before the TTL"
    );
    assert!(
        silent <= 2 * TTL + SLACK,
        "invalidated after {silent:?}: at the latest at twice the TTL"
    );
    let a = api
        .call("PUT", &format!("/v1/session/renew/{leader}"), None)
        .await;
    assert_eq!(a.status, StatusCode::NOT_FOUND);
    assert_eq!(a.text, format!("Session id '{leader}' not found"));
    let (_, info) = api
        .json("GET", &format!("/v1/session/info/{leader}"), None)
        .await;
    assert_eq!(info, json!([]));

    // Lock-delay: the unlocked key refuses the follower until LockDelay has passed.
    assert!(!api.lock("acquire", "svc/leader", &follower).await);
    let acquired_at = loop {
        if api.lock("acquire", "svc/leader", &follower).await {
            break Instant::now();
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let waited = acquired_at - released_at;
    assert!(
        waited + Duration::from_millis(50) >= LOCK_DELAY,
        "re-acquired {waited:?} after the release: lock-delay holds for LockDelay"
    );
    assert!(waited <= LOCK_DELAY + SLACK, "re-acquired late: {waited:?}");
    let (_, entry) = api.json("GET", "/v1/kv/svc/leader", None).await;
    assert_eq!(entry[0]["Session"], follower.as_str());
    assert_eq!(entry[0]["LockIndex"], 2, "a fresh acquire counts");
    api.twin.shutdown().await;
}

#[tokio::test]
async fn behavior_delete_deletes_the_held_keys_when_the_ttl_runs_out() {
    let api = fast_sessions().await;
    let s = api
        .session(json!({"TTL": "1s", "Behavior": "delete", "LockDelay": "0s"}))
        .await;
    assert!(api.lock("acquire", "eph/a", &s).await);
    assert!(api.lock("acquire", "eph/b", &s).await);
    api.call("PUT", "/v1/kv/eph/unlocked", Some(b"keep")).await;
    let created = Instant::now();
    let gone = watch_until(&api, "/v1/kv/eph/a", |s, _| s == StatusCode::NOT_FOUND).await;
    let after = gone - created;
    assert!(after >= TTL && after <= 2 * TTL + SLACK, "{after:?}");
    assert_eq!(
        api.call("GET", "/v1/kv/eph/b", None).await.status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        api.call("GET", "/v1/kv/eph/unlocked", None).await.status,
        StatusCode::OK,
        "keys the session did not hold stay"
    );
    api.twin.shutdown().await;
}

#[tokio::test]
async fn a_release_starts_no_lock_delay_but_a_destroy_does() {
    let api = Api::start().await;
    let a = api.session(json!({"LockDelay": "1s"})).await;
    let b = api.session(json!({"LockDelay": "1s"})).await;
    let c = api.session(json!({})).await;
    assert!(api.lock("acquire", "l", &a).await);
    assert!(api.lock("release", "l", &a).await);
    assert!(
        api.lock("acquire", "l", &b).await,
        "?release is not an invalidation: no lock-delay"
    );
    let a = api
        .call("PUT", &format!("/v1/session/destroy/{b}"), None)
        .await;
    assert_eq!((a.status, a.text.as_str()), (StatusCode::OK, "true"));
    let destroyed = Instant::now();
    let (_, entry) = api.json("GET", "/v1/kv/l", None).await;
    assert!(entry[0].get("Session").is_none(), "released: {entry}");
    assert!(
        !api.lock("acquire", "l", &c).await,
        "destroy invalidates, and invalidation starts lock-delay"
    );
    while !api.lock("acquire", "l", &c).await {
        assert!(
            destroyed.elapsed() < LOCK_DELAY + SLACK,
            "lock-delay never ended"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(destroyed.elapsed() + Duration::from_millis(50) >= LOCK_DELAY);
    api.twin.shutdown().await;
}

#[tokio::test]
async fn during_lock_delay_kv_acquire_is_false_before_the_session_is_looked_at_and_txn_lock_ignores_it()
 {
    let api = Api::start().await;
    let a = api.session(json!({"LockDelay": "30s"})).await;
    let b = api.session(json!({})).await;
    assert!(api.lock("acquire", "k", &a).await);
    api.call("PUT", &format!("/v1/session/destroy/{a}"), None)
        .await;
    // kvsPreApply refuses on lock-delay before the raft apply that would fail on the session.
    assert!(
        !api.lock("acquire", "k", "00000000-0000-0000-0000-00000000dead")
            .await
    );
    let outside = api
        .call(
            "PUT",
            "/v1/kv/other?acquire=00000000-0000-0000-0000-00000000dead",
            Some(b"v"),
        )
        .await;
    assert_eq!(outside.status, StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(
        outside.text,
        "invalid session \"00000000-0000-0000-0000-00000000dead\""
    );
    // Txn.Apply has no lock-delay pre-check (SRC agent/consul/txn_endpoint.go).
    let (s, body) = api
        .json(
            "PUT",
            "/v1/txn",
            Some(json!([{"KV": {"Verb": "lock", "Key": "k", "Value": "eA==", "Session": b}}])),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{body}");
    assert_eq!(body["Results"][0]["KV"]["Session"], b.as_str());
    api.twin.shutdown().await;
}

#[tokio::test]
async fn a_session_on_an_unknown_node_is_refused_with_consuls_error() {
    let api = Api::start().await;
    let a = api
        .call(
            "PUT",
            "/v1/session/create",
            Some(br#"{"Node": "no-such-node"}"#),
        )
        .await;
    assert_eq!(a.status, StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(a.text, "Missing node registration");
    let (_, list) = api.json("GET", "/v1/session/list", None).await;
    assert_eq!(list, json!([]), "nothing was created");
    api.twin.shutdown().await;
}

#[tokio::test]
async fn session_create_refusals_carry_consuls_texts_and_codes() {
    let api = fast_sessions().await;
    let refused = |body: &'static str| {
        let api = &api;
        async move {
            let a = api
                .call("PUT", "/v1/session/create", Some(body.as_bytes()))
                .await;
            (a.status, a.text)
        }
    };
    assert_eq!(
        refused(r#"{"Behavior": "sometimes"}"#).await,
        (
            StatusCode::INTERNAL_SERVER_ERROR,
            "Invalid Behavior setting 'sometimes'".to_string()
        )
    );
    assert_eq!(
        refused(r#"{"TTL": "soon"}"#).await,
        (
            StatusCode::INTERNAL_SERVER_ERROR,
            "Session TTL 'soon' invalid: time: invalid duration \"soon\"".to_string()
        )
    );
    assert_eq!(
        refused(r#"{"TTL": "500ms"}"#).await,
        (
            StatusCode::INTERNAL_SERVER_ERROR,
            "Invalid Session TTL '500000000', must be between [1s=24h0m0s]".to_string()
        ),
        "the bound names the configured session_ttl_min"
    );
    let (status, text) = refused(r#"{"Name": 7}"#).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(text.starts_with("Request decode failed: "), "{text}");
    // Any lock-delay is accepted; invalidation caps it at 60 s (MaxLockDelay).
    let id = api.session(json!({"LockDelay": "90s"})).await;
    let (_, info) = api
        .json("GET", &format!("/v1/session/info/{id}"), None)
        .await;
    assert_eq!(info[0]["LockDelay"], 90_000_000_000u64);
    api.twin.shutdown().await;
}

#[tokio::test]
async fn session_node_and_list_show_the_live_sessions_and_block_until_they_change() {
    let api = Api::start().await;
    let (s, _) = api
        .json(
            "PUT",
            "/v1/catalog/register",
            Some(json!({"Node": "n1", "Address": "10.0.0.1",
                "Check": {"CheckID": "serfHealth", "Name": "Serf", "Status": "passing"}})),
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    let on_n1 = api.session(json!({"Node": "n1", "Name": "on-n1"})).await;
    let local = api.session(json!({"Name": "local"})).await;
    let (_, n1) = api.json("GET", "/v1/session/node/n1", None).await;
    assert_eq!(n1.as_array().unwrap().len(), 1);
    assert_eq!(n1[0]["ID"], on_n1.as_str());
    assert_eq!(n1[0]["Node"], "n1");
    let (_, none) = api.json("GET", "/v1/session/node/nowhere", None).await;
    assert_eq!(none, json!([]));
    let listed = api.call("GET", "/v1/session/list", None).await;
    let ids: Vec<String> = listed
        .json()
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["ID"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(ids.len(), 2);
    assert!(ids.contains(&on_n1) && ids.contains(&local));

    // A blocked list returns when a session goes away.
    let index = listed.index();
    let destroy = async {
        tokio::time::sleep(Duration::from_millis(200)).await;
        api.call("PUT", &format!("/v1/session/destroy/{local}"), None)
            .await
    };
    let blocked = format!("/v1/session/list?index={index}&wait=20s");
    let (after, _) = tokio::join!(api.call("GET", &blocked, None), destroy);
    assert!(after.index() > index);
    assert_eq!(after.json().as_array().unwrap().len(), 1);

    // Deregistering the node invalidates its sessions.
    let (s, _) = api
        .json("PUT", "/v1/catalog/deregister", Some(json!({"Node": "n1"})))
        .await;
    assert_eq!(s, StatusCode::OK);
    let (_, n1) = api.json("GET", "/v1/session/node/n1", None).await;
    assert_eq!(n1, json!([]));
    api.twin.shutdown().await;
}
