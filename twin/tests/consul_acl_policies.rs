//! ACL policy documents, enforced (DOC security/acl/acl-rules.mdx, api-docs/acl/*.mdx; SRC
//! acl/policy.go, acl/policy_authorizer.go, agent/consul/acl_endpoint.go): policies created
//! over `/v1/acl/policy`, linked to tokens over `/v1/acl/token`, checked on every request with
//! Consul's 403 texts and list filtering.
#![allow(clippy::unwrap_used, clippy::panic)]

mod consul_support;

use consul_support::Api;
use hashistack_twin::TwinConfig;
use reqwest::StatusCode;
use serde_json::{Value, json};

const ROOT: &str = "root-secret-sentinel-7f3a";

/// A least-privilege policy of the operator's kind: its KV tree, leader sessions, catalog
/// reads.
const OPERATOR_RULES: &str = r#"
# proxy-operator: its own tree, a leader lock, discovery
key_prefix "proxy-operator/" {
  policy = "write"
}
session_prefix "" {
  policy = "write"
}
service_prefix "" {
  policy = "read"
}
node_prefix "" {
  policy = "read"
}
"#;

async fn acl_twin() -> Api {
    let mut api = Api::with(TwinConfig {
        acl_token: Some(ROOT.into()),
        ..TwinConfig::default()
    })
    .await;
    api.token = Some(ROOT.into());
    api
}

/// Creates a policy and a token linked to it by name; returns (AccessorID, SecretID).
async fn token_for(api: &Api, name: &str, rules: &str) -> (String, String) {
    let (s, p) = api
        .json(
            "PUT",
            "/v1/acl/policy",
            Some(json!({"Name": name, "Description": "test", "Rules": rules})),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{p}");
    assert_eq!(p["Name"], name);
    assert!(p["ID"].as_str().unwrap().len() == 36);
    let (s, t) = api
        .json(
            "PUT",
            "/v1/acl/token",
            Some(json!({"Description": name, "Policies": [{"Name": name}]})),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{t}");
    assert_eq!(t["Policies"], json!([{"ID": p["ID"], "Name": name}]));
    (
        t["AccessorID"].as_str().unwrap().to_string(),
        t["SecretID"].as_str().unwrap().to_string(),
    )
}

#[tokio::test]
async fn the_operator_policy_allows_its_calls_and_refuses_the_calls_next_to_them() {
    let api = acl_twin().await;
    let (accessor, secret) = token_for(&api, "proxy-operator", OPERATOR_RULES).await;
    for key in ["proxy-operator/config", "other/secret"] {
        assert_eq!(
            api.call("PUT", &format!("/v1/kv/{key}"), Some(b"v"))
                .await
                .status,
            StatusCode::OK
        );
    }
    let (s, _) = api
        .json(
            "PUT",
            "/v1/catalog/register",
            Some(json!({"Node": "n1", "Address": "10.0.0.1",
                "Service": {"ID": "web-1", "Service": "web", "Port": 80}})),
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    let op = api.as_token(&secret);

    // Allowed: its tree, a session and a lock, discovery reads.
    let a = op
        .call("PUT", "/v1/kv/proxy-operator/status", Some(b"{}"))
        .await;
    assert_eq!((a.status, a.text.as_str()), (StatusCode::OK, "true"));
    let (s, created) = op
        .json("PUT", "/v1/session/create", Some(json!({"TTL": "15s"})))
        .await;
    assert_eq!(s, StatusCode::OK, "{created}");
    let sid = created["ID"].as_str().unwrap();
    let a = op
        .call(
            "PUT",
            &format!("/v1/kv/proxy-operator/leader?acquire={sid}"),
            Some(b"me"),
        )
        .await;
    assert_eq!(a.text, "true");
    assert_eq!(
        op.call("PUT", &format!("/v1/session/renew/{sid}"), None)
            .await
            .status,
        StatusCode::OK
    );
    let (s, rows) = op.json("GET", "/v1/health/service/web", None).await;
    assert_eq!((s, rows.as_array().unwrap().len()), (StatusCode::OK, 1));

    // Refused next to them: another tree (read and write), the catalog write, the agent.
    let a = op.call("GET", "/v1/kv/other/secret", None).await;
    assert_eq!(a.status, StatusCode::FORBIDDEN);
    assert_eq!(
        a.text,
        format!(
            "Permission denied: token with AccessorID '{accessor}' lacks permission 'key:read' on \"other/secret\""
        )
    );
    assert!(
        !a.text.contains(&secret),
        "the secret never reaches an error"
    );
    let a = op.call("PUT", "/v1/kv/proxy-operatorX", Some(b"v")).await;
    assert_eq!(
        a.status,
        StatusCode::FORBIDDEN,
        "prefix is a string prefix: 'proxy-operator/' only"
    );
    let a = op.call("DELETE", "/v1/kv/?recurse", None).await;
    assert_eq!(a.status, StatusCode::FORBIDDEN);
    assert!(
        a.text.ends_with("lacks permission 'key:write'"),
        "an empty name is left out, as PermissionDeniedError does: {}",
        a.text
    );
    let a = op
        .call(
            "PUT",
            "/v1/catalog/register",
            Some(br#"{"Node": "n2", "Address": "10.0.0.2"}"#),
        )
        .await;
    assert_eq!(a.status, StatusCode::FORBIDDEN);
    assert!(
        a.text.ends_with("lacks permission 'node:write' on \"n2\""),
        "{}",
        a.text
    );
    let a = op.call("GET", "/v1/agent/self", None).await;
    assert_eq!(a.status, StatusCode::FORBIDDEN);
    assert!(
        a.text
            .ends_with("lacks permission 'agent:read' on \"hashistack-twin\""),
        "{}",
        a.text
    );
    let a = op.call("GET", "/v1/acl/policies", None).await;
    assert_eq!(a.status, StatusCode::FORBIDDEN);
    assert!(
        a.text.ends_with("lacks permission 'acl:read'"),
        "{}",
        a.text
    );

    // A listing of everything is filtered, not refused, and says so.
    let a = op.call("GET", "/v1/kv/?recurse", None).await;
    assert_eq!(a.status, StatusCode::OK);
    let keys: Vec<String> = a
        .json()
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["Key"].as_str().unwrap().to_string())
        .collect();
    assert!(
        keys.iter().all(|k| k.starts_with("proxy-operator/")),
        "{keys:?}"
    );
    assert_eq!(
        a.header("X-Consul-Results-Filtered-By-ACLs").as_deref(),
        Some("true")
    );
    api.twin.shutdown().await;
}

#[tokio::test]
async fn json_rules_exact_keys_deny_and_list_behave_as_consul_documents() {
    let api = acl_twin().await;
    let rules = json!({
        "key_prefix": {"app/": {"policy": "write"}, "app/private/": {"policy": "deny"}},
        "key": {"app/private/open": {"policy": "read"}},
        "session": {"hashistack-twin": {"policy": "read"}}
    })
    .to_string();
    let (_, secret) = token_for(&api, "json-rules", &rules).await;
    for key in ["app/a", "app/private/x", "app/private/open"] {
        api.call("PUT", &format!("/v1/kv/{key}"), Some(b"v")).await;
    }
    let t = api.as_token(&secret);
    assert_eq!(
        t.call("GET", "/v1/kv/app/a", None).await.status,
        StatusCode::OK
    );
    assert_eq!(
        t.call("GET", "/v1/kv/app/private/x", None).await.status,
        StatusCode::FORBIDDEN,
        "the longer deny prefix wins"
    );
    assert_eq!(
        t.call("GET", "/v1/kv/app/private/open", None).await.status,
        StatusCode::OK,
        "an exact rule beats every prefix"
    );
    assert_eq!(
        t.call("PUT", "/v1/kv/app/private/open", Some(b"x"))
            .await
            .status,
        StatusCode::FORBIDDEN
    );
    let a = t.call("GET", "/v1/kv/app?keys", None).await;
    assert_eq!(a.json(), json!(["app/a", "app/private/open"]));
    // session "hashistack-twin" read: sessions are listed, not created.
    let a = t.call("PUT", "/v1/session/create", Some(b"{}")).await;
    assert_eq!(a.status, StatusCode::FORBIDDEN);
    assert!(
        a.text
            .ends_with("lacks permission 'session:write' on \"hashistack-twin\""),
        "{}",
        a.text
    );
    api.call("PUT", "/v1/session/create", Some(b"{}")).await;
    let (_, list) = t.json("GET", "/v1/session/list", None).await;
    assert_eq!(list.as_array().unwrap().len(), 1);
    api.twin.shutdown().await;
}

#[tokio::test]
async fn policy_and_token_refusals_carry_consuls_texts() {
    let api = acl_twin().await;
    let refused = |path: &'static str, body: Value| {
        let api = &api;
        async move {
            let a = api
                .call("PUT", path, Some(body.to_string().as_bytes()))
                .await;
            (a.status, a.text)
        }
    };
    assert_eq!(
        refused("/v1/acl/policy", json!({"Rules": ""})).await,
        (
            StatusCode::INTERNAL_SERVER_ERROR,
            "Invalid Policy: no Name is set".into()
        )
    );
    assert_eq!(
        refused("/v1/acl/policy", json!({"Name": "bad name"})).await,
        (
            StatusCode::INTERNAL_SERVER_ERROR,
            "Invalid Policy: invalid Name. Only alphanumeric characters, '-' and '_' are allowed"
                .into()
        )
    );
    let (s, text) = refused(
        "/v1/acl/policy",
        json!({"Name": "p", "Rules": "key_prefix \"a/\" { policy = \"admin\" }"}),
    )
    .await;
    assert_eq!(s, StatusCode::INTERNAL_SERVER_ERROR);
    assert!(
        text.starts_with(
            "Invalid key_prefix policy: acl.KeyPolicy{Prefix:\"a/\", Policy:\"admin\""
        ),
        "{text}"
    );
    let (s, text) = refused(
        "/v1/acl/policy",
        json!({"Name": "p", "Rules": "key_prefix {"}),
    )
    .await;
    assert_eq!(s, StatusCode::INTERNAL_SERVER_ERROR);
    assert!(text.starts_with("Failed to parse ACL rules: "), "{text}");
    assert_eq!(
        refused(
            "/v1/acl/policy",
            json!({"ID": "00000000-0000-0000-0000-000000000009", "Name": "p"})
        )
        .await,
        (
            StatusCode::BAD_REQUEST,
            "Cannot specify the ID when creating a new policy".into()
        )
    );
    token_for(&api, "dup", "").await;
    assert_eq!(
        refused("/v1/acl/policy", json!({"Name": "dup"})).await,
        (
            StatusCode::INTERNAL_SERVER_ERROR,
            "Invalid Policy: A Policy with Name \"dup\" already exists".into()
        )
    );
    assert_eq!(
        refused("/v1/acl/token", json!({"Policies": [{"Name": "nope"}]})).await,
        (
            StatusCode::INTERNAL_SERVER_ERROR,
            "No such ACL policy with name \"nope\"".into()
        )
    );
    let a = api
        .call(
            "DELETE",
            "/v1/acl/policy/00000000-0000-0000-0000-000000000001",
            None,
        )
        .await;
    assert_eq!(
        (a.status, a.text.as_str()),
        (
            StatusCode::INTERNAL_SERVER_ERROR,
            "Delete operation not permitted on the builtin global-management policy"
        )
    );
    let a = api
        .call(
            "GET",
            "/v1/acl/policy/00000000-0000-0000-0000-0000000000ff",
            None,
        )
        .await;
    assert_eq!(
        (a.status, a.text.as_str()),
        (StatusCode::FORBIDDEN, "ACL not found")
    );
    api.twin.shutdown().await;
}

#[tokio::test]
async fn tokens_are_listed_read_and_deleted_and_secrets_show_only_to_acl_write() {
    let api = acl_twin().await;
    let (reader_accessor, reader) = token_for(&api, "acl-reader", "acl = \"read\"").await;
    let (other_accessor, other_secret) = token_for(&api, "other", "").await;
    let (s, me) = api.json("GET", "/v1/acl/token/self", None).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(me["SecretID"], ROOT);
    assert_eq!(
        me["Policies"],
        json!([{"ID": "00000000-0000-0000-0000-000000000001", "Name": "global-management"}])
    );
    let r = api.as_token(&reader);
    let (s, seen) = r
        .json("GET", &format!("/v1/acl/token/{other_accessor}"), None)
        .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(
        seen["SecretID"], "<hidden>",
        "acl:read does not see secrets"
    );
    let (_, own) = r.json("GET", "/v1/acl/token/self", None).await;
    assert_eq!(own["AccessorID"], reader_accessor.as_str());
    let (s, list) = r.json("GET", "/v1/acl/tokens", None).await;
    assert_eq!(s, StatusCode::OK);
    assert!(!list.to_string().contains(ROOT) && !list.to_string().contains(&other_secret));
    assert!(
        list.as_array()
            .unwrap()
            .iter()
            .any(|t| t["AccessorID"] == "00000000-0000-0000-0000-000000000002")
    );
    let a = r
        .call("DELETE", &format!("/v1/acl/token/{other_accessor}"), None)
        .await;
    assert_eq!(a.status, StatusCode::FORBIDDEN);
    let a = api
        .call("DELETE", &format!("/v1/acl/token/{other_accessor}"), None)
        .await;
    assert_eq!((a.status, a.text.as_str()), (StatusCode::OK, "true"));
    let gone = api
        .as_token(&other_secret)
        .call("GET", "/v1/kv/x", None)
        .await;
    assert_eq!(
        (gone.status, gone.text.as_str()),
        (StatusCode::FORBIDDEN, "ACL not found")
    );
    api.twin.shutdown().await;
}

#[tokio::test]
async fn policies_linked_to_the_anonymous_token_apply_to_requests_without_a_token() {
    let api = acl_twin().await;
    api.call("PUT", "/v1/kv/public/motd", Some(b"hi")).await;
    let mut anon = Api {
        twin: api.twin,
        http: api.http.clone(),
        token: None,
    };
    assert_eq!(
        anon.call("GET", "/v1/kv/public/motd", None).await.status,
        StatusCode::FORBIDDEN
    );
    anon.token = Some(ROOT.into());
    anon.json(
        "PUT",
        "/v1/acl/policy",
        Some(
            json!({"Name": "public-read", "Rules": "key_prefix \"public/\" { policy = \"read\" }"}),
        ),
    )
    .await;
    let (s, t) = anon
        .json(
            "PUT",
            "/v1/acl/token/00000000-0000-0000-0000-000000000002",
            Some(json!({"Policies": [{"Name": "public-read"}]})),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{t}");
    anon.token = None;
    assert_eq!(
        anon.call("GET", "/v1/kv/public/motd", None).await.status,
        StatusCode::OK
    );
    assert_eq!(
        anon.call("PUT", "/v1/kv/public/motd", Some(b"x"))
            .await
            .status,
        StatusCode::FORBIDDEN
    );
    anon.twin.shutdown().await;
}

#[tokio::test]
async fn without_acls_the_acl_endpoints_answer_401_and_a_rules_token_is_still_enforced() {
    let api = Api::start().await;
    let a = api.call("GET", "/v1/acl/policies", None).await;
    assert_eq!(
        (a.status, a.text.as_str()),
        (StatusCode::UNAUTHORIZED, "ACL support disabled")
    );
    api.twin
        .consul()
        .add_token_with_rules("narrow", OPERATOR_RULES)
        .unwrap();
    let t = api.as_token("narrow");
    assert_eq!(
        t.call("PUT", "/v1/kv/proxy-operator/a", Some(b"v"))
            .await
            .status,
        StatusCode::OK
    );
    assert_eq!(
        t.call("PUT", "/v1/kv/elsewhere", Some(b"v")).await.status,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        api.call("PUT", "/v1/kv/elsewhere", Some(b"v")).await.status,
        StatusCode::OK
    );
    let err = api
        .twin
        .consul()
        .add_token_with_rules("bad", "key_prefix \"\" { policy = \"sometimes\" }")
        .unwrap_err();
    assert!(
        err.to_string().starts_with("Invalid key_prefix policy"),
        "{err}"
    );
    api.twin.shutdown().await;
}

#[tokio::test]
async fn policies_and_tokens_survive_a_restart_with_the_same_data_dir() {
    let dir = tempfile::tempdir().unwrap();
    let config = TwinConfig {
        acl_token: Some(ROOT.into()),
        data_dir: Some(dir.path().to_path_buf()),
        ..TwinConfig::default()
    };
    let mut api = Api::with(config.clone()).await;
    api.token = Some(ROOT.into());
    let (_, secret) = token_for(&api, "kept", OPERATOR_RULES).await;
    api.twin.shutdown().await;
    let api = Api::with(config).await;
    let t = api.as_token(&secret);
    assert_eq!(
        t.call("PUT", "/v1/kv/proxy-operator/a", Some(b"v"))
            .await
            .status,
        StatusCode::OK
    );
    assert_eq!(
        t.call("PUT", "/v1/kv/b", Some(b"v")).await.status,
        StatusCode::FORBIDDEN
    );
    api.twin.shutdown().await;
}

#[tokio::test]
async fn catalog_writes_need_node_write_and_service_write_as_vet_register_does() {
    let api = acl_twin().await;
    let (_, node_only) =
        token_for(&api, "node-only", "node_prefix \"\" { policy = \"write\" }").await;
    let (_, both) = token_for(
        &api,
        "node-and-web",
        "node_prefix \"\" { policy = \"write\" }\nservice \"web\" { policy = \"write\" }",
    )
    .await;
    let reg =
        br#"{"Node": "n1", "Address": "10.0.0.1", "Service": {"ID": "web-1", "Service": "web"}}"#;
    let a = api
        .as_token(&node_only)
        .call("PUT", "/v1/catalog/register", Some(reg))
        .await;
    assert_eq!(a.status, StatusCode::FORBIDDEN);
    assert!(
        a.text
            .ends_with("lacks permission 'service:write' on \"web\""),
        "{}",
        a.text
    );
    let a = api
        .as_token(&both)
        .call("PUT", "/v1/catalog/register", Some(reg))
        .await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.text);
    let a = api
        .as_token(&node_only)
        .call(
            "PUT",
            "/v1/catalog/deregister",
            Some(br#"{"Node": "n1", "ServiceID": "web-1"}"#),
        )
        .await;
    assert_eq!(
        a.status,
        StatusCode::FORBIDDEN,
        "deregistering a service needs service:write"
    );
    let a = api
        .as_token(&both)
        .call(
            "PUT",
            "/v1/catalog/deregister",
            Some(br#"{"Node": "n1", "ServiceID": "web-1"}"#),
        )
        .await;
    assert_eq!(a.status, StatusCode::OK);
    api.twin.shutdown().await;
}

#[tokio::test]
async fn agent_endpoints_vet_service_and_node_writes_and_filter_their_lists() {
    let api = acl_twin().await;
    let (_, web) = token_for(
        &api,
        "web-agent",
        "service \"web\" { policy = \"write\" }\nagent_prefix \"\" { policy = \"read\" }",
    )
    .await;
    let t = api.as_token(&web);
    let a = t
        .call(
            "PUT",
            "/v1/agent/service/register",
            Some(br#"{"Name": "web", "Check": {"TTL": "30s"}}"#),
        )
        .await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.text);
    let a = t
        .call(
            "PUT",
            "/v1/agent/service/register",
            Some(br#"{"Name": "db"}"#),
        )
        .await;
    assert_eq!(a.status, StatusCode::FORBIDDEN);
    assert!(
        a.text
            .ends_with("lacks permission 'service:write' on \"db\""),
        "{}",
        a.text
    );
    api.call(
        "PUT",
        "/v1/agent/service/register",
        Some(br#"{"Name": "db"}"#),
    )
    .await;
    let a = t
        .call("PUT", "/v1/agent/check/pass/service:web", None)
        .await;
    assert_eq!(
        a.status,
        StatusCode::OK,
        "a service check needs service:write: {}",
        a.text
    );
    let a = t
        .call(
            "PUT",
            "/v1/agent/check/register",
            Some(br#"{"Name": "disk", "TTL": "30s"}"#),
        )
        .await;
    assert_eq!(a.status, StatusCode::FORBIDDEN);
    assert!(
        a.text
            .ends_with("lacks permission 'node:write' on \"hashistack-twin\""),
        "{}",
        a.text
    );
    let a = t.call("GET", "/v1/agent/services", None).await;
    let services = a.json();
    assert!(
        services.get("web").is_some() && services.get("db").is_none(),
        "{services}"
    );
    assert_eq!(
        a.header("X-Consul-Results-Filtered-By-ACLs").as_deref(),
        Some("true")
    );
    let (s, _) = t.json("GET", "/v1/agent/self", None).await;
    assert_eq!(s, StatusCode::OK, "agent_prefix read allows agent/self");
    let (_, members) = t.json("GET", "/v1/agent/members", None).await;
    assert_eq!(members, json!([]), "members need node:read");
    api.twin.shutdown().await;
}

#[tokio::test]
async fn token_writes_are_validated_as_consuls_token_writer_does() {
    let api = acl_twin().await;
    let put = |path: String, body: Value| {
        let api = &api;
        async move {
            let a = api
                .call("PUT", &path, Some(body.to_string().as_bytes()))
                .await;
            (a.status, a.text)
        }
    };
    let err = |t: &str| (StatusCode::INTERNAL_SERVER_ERROR, t.to_string());
    assert_eq!(
        put("/v1/acl/token".into(), json!({"SecretID": "not-a-uuid"})).await,
        err("Invalid Token: SecretID - not a valid UUID")
    );
    assert_eq!(
        put(
            "/v1/acl/token".into(),
            json!({"AccessorID": "00000000-0000-0000-0000-000000000077"})
        )
        .await,
        err(
            "Invalid Token: AccessorID - UUIDs with the prefix \"00000000-0000-0000-0000-0000000000\" are reserved"
        )
    );
    let secret = "6d0c2f39-6f1b-4c4b-9d7e-3a9d9c1b2e11";
    let (s, t) = api
        .json("PUT", "/v1/acl/token", Some(json!({"SecretID": secret})))
        .await;
    assert_eq!(s, StatusCode::OK, "{t}");
    assert_eq!(t["SecretID"], secret, "a chosen SecretID is kept");
    let accessor = t["AccessorID"].as_str().unwrap().to_string();
    assert_eq!(
        put("/v1/acl/token".into(), json!({"SecretID": secret})).await,
        err("Invalid Token: SecretID is already in use")
    );
    assert_eq!(
        put(
            format!("/v1/acl/token/{accessor}"),
            json!({"SecretID": "9e1f0c7a-0d55-4a53-8f3e-2b7c6a4d1f00"})
        )
        .await,
        err("Changing a token's SecretID is not permitted")
    );
    assert_eq!(
        put(format!("/v1/acl/token/{accessor}"), json!({"Local": true})).await,
        err(&format!("Cannot toggle local mode of {accessor}"))
    );
    assert_eq!(
        put(
            format!("/v1/acl/token/{accessor}"),
            json!({"AccessorID": "9e1f0c7a-0d55-4a53-8f3e-2b7c6a4d1f00"})
        )
        .await,
        (
            StatusCode::BAD_REQUEST,
            "Token Accessor ID in URL and payload do not match".into()
        )
    );
    assert_eq!(
        put(
            "/v1/acl/token/9e1f0c7a-0d55-4a53-8f3e-2b7c6a4d1f00".into(),
            json!({})
        )
        .await,
        err("Cannot find token \"9e1f0c7a-0d55-4a53-8f3e-2b7c6a4d1f00\"")
    );
    let (s, _) = api
        .json(
            "PUT",
            &format!("/v1/acl/token/{accessor}"),
            Some(json!({"Description": "renamed"})),
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    let (_, t) = api
        .json("GET", &format!("/v1/acl/token/{accessor}"), None)
        .await;
    assert_eq!(
        (t["Description"].as_str(), t["SecretID"].as_str()),
        (Some("renamed"), Some(secret))
    );
    api.twin.shutdown().await;
}
