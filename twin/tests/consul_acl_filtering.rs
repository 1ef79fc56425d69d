//! Restricted tokens: the twin refuses single reads and writes with 403 but filters list reads,
//! as Consul does (`X-Consul-Results-Filtered-By-ACLs`, 404 for a KV listing with nothing left).
#![allow(clippy::unwrap_used, clippy::panic)]

use hashistack_twin::consul::TokenPolicy;
use hashistack_twin::{Twin, TwinConfig};
use reqwest::StatusCode;
use serde_json::{Value, json};

const ROOT: &str = "root-token";
const EDGE: &str = "edge-token";

struct Api {
    twin: Twin,
    http: reqwest::Client,
}

impl Api {
    async fn call(
        &self,
        token: &str,
        method: &str,
        path: &str,
        body: Option<&str>,
    ) -> (StatusCode, Option<String>, String) {
        let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let mut req = self
            .http
            .request(method, format!("http://{}{path}", self.twin.consul_addr()))
            .header("X-Consul-Token", token);
        if let Some(b) = body {
            req = req.body(b.to_owned());
        }
        let resp = req.send().await.unwrap();
        let filtered = resp
            .headers()
            .get("X-Consul-Results-Filtered-By-ACLs")
            .map(|v| v.to_str().unwrap().to_owned());
        (resp.status(), filtered, resp.text().await.unwrap())
    }
}

async fn seeded() -> Api {
    let twin = Twin::start(TwinConfig {
        acl_token: Some(ROOT.into()),
        ..TwinConfig::default()
    })
    .await
    .unwrap();
    twin.consul().add_restricted_token(
        EDGE,
        TokenPolicy {
            key_write: vec!["proxy-operator/".into()],
            service_read: vec!["web".into()],
            node_read: vec![String::new()],
            ..TokenPolicy::default()
        },
    );
    let api = Api {
        twin,
        http: reqwest::Client::new(),
    };
    for key in ["proxy-operator/config", "secret/a", "secret/b"] {
        let (s, _, _) = api
            .call(ROOT, "PUT", &format!("/v1/kv/{key}"), Some("v"))
            .await;
        assert_eq!(s, StatusCode::OK);
    }
    for (id, name) in [("web-1", "web"), ("db-1", "db")] {
        let reg = json!({
            "Node": "n1", "Address": "10.0.0.1",
            "Service": {"ID": id, "Service": name, "Port": 80}
        });
        let (s, _, _) = api
            .call(ROOT, "PUT", "/v1/catalog/register", Some(&reg.to_string()))
            .await;
        assert_eq!(s, StatusCode::OK);
    }
    api
}

fn keys_of(body: &str) -> Vec<String> {
    let v: Value = serde_json::from_str(body).unwrap();
    v.as_array()
        .unwrap()
        .iter()
        .map(|e| e["Key"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn kv_listings_drop_denied_keys_and_answer_404_when_none_is_left() {
    let api = seeded().await;
    let (s, filtered, body) = api.call(EDGE, "GET", "/v1/kv/?recurse", None).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(keys_of(&body), ["proxy-operator/config"]);
    assert_eq!(filtered.as_deref(), Some("true"));

    let (s, filtered, body) = api.call(EDGE, "GET", "/v1/kv/secret?recurse", None).await;
    assert_eq!(
        (s, body.as_str()),
        (StatusCode::NOT_FOUND, ""),
        "looks empty"
    );
    assert_eq!(filtered.as_deref(), Some("true"));
    let (s, filtered, _) = api.call(EDGE, "GET", "/v1/kv/secret?keys", None).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    assert_eq!(filtered.as_deref(), Some("true"));
    let (s, _, body) = api.call(EDGE, "GET", "/v1/kv/?keys", None).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(body, r#"["proxy-operator/config"]"#);

    let (s, filtered, body) = api
        .call(EDGE, "GET", "/v1/kv/proxy-operator?recurse", None)
        .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(keys_of(&body), ["proxy-operator/config"]);
    assert_eq!(filtered, None, "nothing was dropped");

    // The full token sees everything, unfiltered.
    let (_, filtered, body) = api.call(ROOT, "GET", "/v1/kv/secret?recurse", None).await;
    assert_eq!(keys_of(&body), ["secret/a", "secret/b"]);
    assert_eq!(filtered, None);
    api.twin.shutdown().await;
}

#[tokio::test]
async fn single_reads_and_writes_outside_the_policy_are_403() {
    let api = seeded().await;
    let (s, _, body) = api.call(EDGE, "GET", "/v1/kv/secret/a", None).await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    assert!(
        body.starts_with("Permission denied: token with AccessorID '")
            && body.ends_with("lacks permission 'key:read' on \"secret/a\""),
        "{body}"
    );
    let (s, _, body) = api.call(EDGE, "PUT", "/v1/kv/secret/c", Some("x")).await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    assert!(body.contains("'key:write'"), "{body}");
    let (s, _, _) = api
        .call(EDGE, "DELETE", "/v1/kv/secret?recurse", None)
        .await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    let (s, _, _) = api
        .call(EDGE, "PUT", "/v1/kv/proxy-operator/status", Some("{}"))
        .await;
    assert_eq!(s, StatusCode::OK, "inside the policy");

    let txn = json!([
        {"KV": {"Verb": "set", "Key": "proxy-operator/x", "Value": "eA=="}},
        {"KV": {"Verb": "set", "Key": "secret/c", "Value": "eA=="}}
    ]);
    let (s, _, body) = api
        .call(EDGE, "PUT", "/v1/txn", Some(&txn.to_string()))
        .await;
    assert_eq!(s, StatusCode::CONFLICT);
    let v: Value = serde_json::from_str(&body).unwrap();
    // Txn.preCheck reports each refused operation with the permission error's own text.
    assert_eq!(v["Errors"].as_array().unwrap().len(), 1, "{v}");
    assert_eq!(v["Errors"][0]["OpIndex"], 1);
    let what = v["Errors"][0]["What"].as_str().unwrap();
    assert!(
        what.starts_with("Permission denied: token with AccessorID '")
            && what.ends_with("lacks permission 'key:write' on \"secret/c\""),
        "{what}"
    );
    let (s, _, _) = api.call(ROOT, "GET", "/v1/kv/proxy-operator/x", None).await;
    assert_eq!(s, StatusCode::NOT_FOUND, "the transaction applied nothing");
    api.twin.shutdown().await;
}

#[tokio::test]
async fn catalog_and_health_lists_drop_services_the_token_may_not_read() {
    let api = seeded().await;
    let (s, filtered, body) = api.call(EDGE, "GET", "/v1/catalog/services", None).await;
    assert_eq!(s, StatusCode::OK);
    let services: Value = serde_json::from_str(&body).unwrap();
    assert!(services.get("web").is_some(), "{services}");
    assert!(services.get("db").is_none(), "{services}");
    assert_eq!(filtered.as_deref(), Some("true"));

    let (s, filtered, body) = api.call(EDGE, "GET", "/v1/health/service/db", None).await;
    assert_eq!((s, body.as_str()), (StatusCode::OK, "[]"));
    assert_eq!(filtered.as_deref(), Some("true"));
    let (s, filtered, body) = api.call(EDGE, "GET", "/v1/catalog/service/db", None).await;
    assert_eq!((s, body.as_str()), (StatusCode::OK, "[]"));
    assert_eq!(filtered.as_deref(), Some("true"));
    let (_, filtered, body) = api.call(EDGE, "GET", "/v1/health/service/web", None).await;
    assert_eq!(
        serde_json::from_str::<Value>(&body)
            .unwrap()
            .as_array()
            .unwrap()
            .len(),
        1
    );
    assert_eq!(filtered, None);

    let (_, filtered, body) = api.call(ROOT, "GET", "/v1/health/service/db", None).await;
    assert_eq!(
        serde_json::from_str::<Value>(&body)
            .unwrap()
            .as_array()
            .unwrap()
            .len(),
        1
    );
    assert_eq!(filtered, None);
    api.twin.shutdown().await;
}
