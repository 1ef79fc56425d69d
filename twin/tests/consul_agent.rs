//! The agent API (DOC api-docs/agent/index.mdx, agent/service.mdx, agent/check.mdx,
//! status.mdx; SRC agent/agent_endpoint.go, agent/checks/check.go): `agent/self` with its full
//! shape and consistent with `status/*`, local services and checks synced to the catalog as
//! anti-entropy does, TTL checks that really expire, and Consul's refusals.
#![allow(clippy::unwrap_used, clippy::panic)]

mod consul_support;

use std::time::{Duration, Instant};

use consul_support::Api;
use reqwest::StatusCode;
use serde_json::{Value, json};

#[tokio::test]
async fn agent_self_has_the_full_top_level_shape_and_agrees_with_status_and_members() {
    let api = Api::start().await;
    let (s, me) = api.json("GET", "/v1/agent/self", None).await;
    assert_eq!(s, StatusCode::OK);
    let keys: Vec<&str> = me.as_object().unwrap().keys().map(String::as_str).collect();
    for k in [
        "Config",
        "Coord",
        "DebugConfig",
        "Member",
        "Meta",
        "Stats",
        "xDS",
    ] {
        assert!(keys.contains(&k), "{k} missing: {keys:?}");
    }
    let (_, leader) = api.json("GET", "/v1/status/leader", None).await;
    let (_, peers) = api.json("GET", "/v1/status/peers", None).await;
    assert_eq!(me["Stats"]["consul"]["leader_addr"], leader);
    assert_eq!(me["Stats"]["consul"]["leader"], "true");
    assert_eq!(me["Stats"]["consul"]["server"], "true");
    assert_eq!(peers, json!([leader]));
    assert_eq!(me["Config"]["Server"], true);
    assert_eq!(me["Member"]["Name"], me["Config"]["NodeName"]);
    assert_eq!(
        format!(
            "{}:{}",
            me["Member"]["Addr"].as_str().unwrap(),
            me["Member"]["Tags"]["port"].as_str().unwrap()
        ),
        leader.as_str().unwrap(),
        "the member's server port is the leader address"
    );
    assert!(me["xDS"]["Ports"]["Plaintext"].is_number());
    let stats = me["Stats"].as_object().unwrap();
    assert!(
        stats
            .values()
            .all(|group| group.as_object().unwrap().values().all(Value::is_string)),
        "Stats is map[string]map[string]string"
    );
    let (_, members) = api.json("GET", "/v1/agent/members", None).await;
    assert_eq!(members[0]["Name"], me["Config"]["NodeName"]);
    let (_, nodes) = api.json("GET", "/v1/catalog/nodes", None).await;
    assert_eq!(
        nodes[0]["Node"], me["Config"]["NodeName"],
        "the agent's node is in the catalog"
    );
    assert_eq!(nodes[0]["ID"], me["Config"]["NodeID"]);
    api.twin.shutdown().await;
}

#[tokio::test]
async fn an_agent_service_with_a_ttl_check_reaches_catalog_and_health_and_expires_to_critical() {
    let api = Api::start().await;
    let reg = json!({
        "ID": "web-1", "Name": "web", "Tags": ["v1"], "Port": 8080,
        "Meta": {"version": "1"},
        "Check": {"TTL": "800ms", "Notes": "pushed by the app"}
    });
    let a = api
        .call(
            "PUT",
            "/v1/agent/service/register",
            Some(reg.to_string().as_bytes()),
        )
        .await;
    assert_eq!((a.status, a.text.as_str()), (StatusCode::OK, ""));

    let (_, services) = api.json("GET", "/v1/agent/services", None).await;
    assert_eq!(
        services["web-1"],
        json!({"ID": "web-1", "Service": "web", "Tags": ["v1"], "Meta": {"version": "1"},
            "Port": 8080, "Address": "", "EnableTagOverride": false, "Datacenter": "dc1",
            "Weights": {"Passing": 1, "Warning": 1}})
    );
    let (_, checks) = api.json("GET", "/v1/agent/checks", None).await;
    let check = &checks["service:web-1"];
    assert_eq!(check["Status"], "critical", "a TTL check starts critical");
    assert_eq!(check["Type"], "ttl");
    assert_eq!(check["Name"], "Service 'web' check");
    assert_eq!(check["ServiceName"], "web");
    assert!(
        checks.get("serfHealth").is_none(),
        "serfHealth is not an agent-local check"
    );

    // Anti-entropy put it in the catalog on the agent's node.
    let (_, rows) = api.json("GET", "/v1/catalog/service/web", None).await;
    assert_eq!(rows[0]["Node"], "hashistack-twin");
    assert_eq!(rows[0]["ServicePort"], 8080);
    let (_, passing) = api
        .json("GET", "/v1/health/service/web?passing", None)
        .await;
    assert_eq!(passing, json!([]), "critical: not passing");

    // The twin starts the TTL when it handles the pass, somewhere between sending it and the
    // answer: the earliest legal expiry is TTL after the send, the latest TTL after the answer.
    let sent_at = Instant::now();
    let a = api
        .call(
            "PUT",
            "/v1/agent/check/pass/service:web-1?note=all%20good",
            None,
        )
        .await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.text);
    let passed_at = Instant::now();
    let healthy = api
        .call("GET", "/v1/health/service/web?passing", None)
        .await;
    let entry = &healthy.json()[0];
    assert_eq!(entry["Service"]["ID"], "web-1");
    let own = entry["Checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["CheckID"] == "service:web-1")
        .unwrap();
    assert_eq!(
        (own["Status"].as_str(), own["Output"].as_str()),
        (Some("passing"), Some("all good"))
    );

    // No update within the TTL: a blocked health query wakes with the check critical.
    let mut index = healthy.index();
    let expired = loop {
        let a = api
            .call(
                "GET",
                &format!("/v1/health/checks/web?index={index}&wait=10s"),
                None,
            )
            .await;
        index = a.index();
        let c = a.json()[0].clone();
        if c["Status"] == "critical" {
            break (Instant::now(), c);
        }
        assert!(
            passed_at.elapsed() < Duration::from_secs(10),
            "the TTL never expired"
        );
    };
    let since_sent = expired.0 - sent_at;
    assert!(
        since_sent >= Duration::from_millis(800),
        "expired {since_sent:?} after the pass was sent, before its TTL"
    );
    let after = expired.0 - passed_at;
    assert!(
        after < Duration::from_millis(800 + 600),
        "expired late: {after:?}"
    );
    assert_eq!(
        expired.1["Output"],
        "TTL expired (last output before timeout follows): all good"
    );

    // update brings it back; deregistration takes service and check out of the catalog.
    let a = api
        .call(
            "PUT",
            "/v1/agent/check/update/service:web-1",
            Some(br#"{"Status": "warning", "Output": "slow"}"#),
        )
        .await;
    assert_eq!(a.status, StatusCode::OK);
    let (_, checks) = api.json("GET", "/v1/health/checks/web", None).await;
    assert_eq!(
        (checks[0]["Status"].as_str(), checks[0]["Output"].as_str()),
        (Some("warning"), Some("slow"))
    );
    let a = api
        .call("PUT", "/v1/agent/service/deregister/web-1", None)
        .await;
    assert_eq!(a.status, StatusCode::OK);
    let (_, rows) = api.json("GET", "/v1/catalog/service/web", None).await;
    assert_eq!(rows, json!([]));
    let (_, checks) = api.json("GET", "/v1/agent/checks", None).await;
    assert_eq!(checks, json!({}));
    api.twin.shutdown().await;
}

#[tokio::test]
async fn a_session_bound_to_an_agent_ttl_check_dies_when_the_check_expires() {
    let api = Api::start().await;
    let a = api
        .call(
            "PUT",
            "/v1/agent/check/register",
            Some(br#"{"Name": "leader-alive", "TTL": "500ms", "Status": "passing"}"#),
        )
        .await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.text);
    let sid = api
        .session(json!({"NodeChecks": ["serfHealth", "leader-alive"], "LockDelay": "0s"}))
        .await;
    assert!(api.lock("acquire", "lock", &sid).await);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (_, info) = api
            .json("GET", &format!("/v1/session/info/{sid}"), None)
            .await;
        if info == json!([]) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the session outlived its critical check"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (_, entry) = api.json("GET", "/v1/kv/lock", None).await;
    assert!(
        entry[0].get("Session").is_none(),
        "the lock was released: {entry}"
    );
    api.twin.shutdown().await;
}

#[tokio::test]
async fn agent_refusals_carry_consuls_texts_and_codes() {
    let api = Api::start().await;
    let put = |path: &'static str, body: &'static str| {
        let api = &api;
        async move {
            let a = api.call("PUT", path, Some(body.as_bytes())).await;
            (a.status, a.text)
        }
    };
    assert_eq!(
        put("/v1/agent/service/register", r#"{"Port": 80}"#).await,
        (StatusCode::BAD_REQUEST, "Missing service name".into())
    );
    assert_eq!(
        put(
            "/v1/agent/service/register",
            r#"{"Name": "x", "Address": "0.0.0.0"}"#
        )
        .await,
        (StatusCode::BAD_REQUEST, "Invalid service address".into())
    );
    let (s, t) = put("/v1/agent/service/register", r#"{"Name": 5}"#).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert!(t.starts_with("Request decode failed: "), "{t}");
    assert_eq!(
        put("/v1/agent/check/register", r#"{"TTL": "10s"}"#).await,
        (StatusCode::BAD_REQUEST, "Missing check name".into())
    );
    assert_eq!(
        put("/v1/agent/check/register", r#"{"Name": "c"}"#).await,
        (
            StatusCode::BAD_REQUEST,
            "Invalid check: TTL must be > 0 for TTL checks".into()
        )
    );
    assert_eq!(
        put(
            "/v1/agent/check/register",
            r#"{"Name": "c", "TTL": "10s", "Status": "great"}"#
        )
        .await,
        (StatusCode::BAD_REQUEST, "Bad check status".into())
    );
    assert_eq!(
        put(
            "/v1/agent/check/register",
            r#"{"Name": "c", "TTL": "10s", "ServiceID": "nope"}"#
        )
        .await,
        (
            StatusCode::NOT_FOUND,
            "ServiceID \"nope\" does not exist".into()
        )
    );
    assert_eq!(
        put("/v1/agent/check/pass/nope", "").await,
        (
            StatusCode::NOT_FOUND,
            "Unknown check ID \"nope\". Ensure that the check ID is passed, not the check name."
                .into()
        )
    );
    assert_eq!(
        put("/v1/agent/service/deregister/nope", "").await,
        (
            StatusCode::NOT_FOUND,
            "Unknown service ID \"nope\". Ensure that the service ID is passed, not the service name.".into()
        )
    );
    assert_eq!(
        put("/v1/agent/check/register", r#"{"Name": "web-http", "HTTP": "http://127.0.0.1:9/"}"#).await,
        (
            StatusCode::BAD_REQUEST,
            "Invalid check: Interval must be > 0 for Script, HTTP, H2PING, TCP, UDP or OSService checks".into()
        )
    );
    let (s, _) = put(
        "/v1/agent/check/register",
        r#"{"Name": "web-http", "HTTP": "http://127.0.0.1:9/", "Interval": "10s"}"#,
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(
        put("/v1/agent/check/pass/web-http", "").await,
        (
            StatusCode::INTERNAL_SERVER_ERROR,
            "CheckID \"web-http\" does not have associated TTL".into()
        )
    );
    assert_eq!(
        put("/v1/agent/check/update/web-http", r#"{"Status": "fine"}"#).await,
        (
            StatusCode::BAD_REQUEST,
            "Invalid check status: 'fine'".into()
        )
    );
    api.twin.shutdown().await;
}

#[tokio::test]
async fn an_agent_service_is_named_by_name_and_a_service_key_is_ignored_whatever_its_type() {
    let api = Api::start().await;
    let body = json!({
        "Name": "web",
        "Service": 5,
        "Port": 8080,
        "Tags": ["a"],
        "Meta": {"k": "v"},
        "EnableTagOverride": true
    })
    .to_string();
    let a = api
        .call("PUT", "/v1/agent/service/register", Some(body.as_bytes()))
        .await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.text);
    let (_, rows) = api.json("GET", "/v1/catalog/service/web", None).await;
    let row = &rows[0];
    assert_eq!(row["ServiceName"], "web");
    assert_eq!(row["ServiceID"], "web", "the ID defaults to the name");
    assert_eq!(row["ServicePort"], 8080);
    assert_eq!(row["ServiceTags"], json!(["a"]));
    assert_eq!(row["ServiceMeta"], json!({"k": "v"}));
    assert_eq!(row["ServiceEnableTagOverride"], true);
}
