//! Contract tests: the twin's Consul answers have the shape of the sample payloads in HashiCorp's
//! docs (`fixtures/consul/`), and the documented status codes and bodies.
#![allow(clippy::unwrap_used, clippy::panic)]

use std::collections::BTreeSet;

use hashistack_twin::{Twin, TwinConfig};
use reqwest::StatusCode;
use serde_json::{Value, json};

fn fixture(name: &str) -> Value {
    let path = format!("{}/../fixtures/consul/{name}", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {path}: {e}"));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("parse {path}: {e}"))
}

/// Keys real Consul emits that the doc samples leave out, per exact path (array indices written
/// `[]`). Sources: Consul's structs (`structs.Session`, `structs.ServiceNode`,
/// `structs.HealthCheck`, `structs.NodeService`) and the responses recorded in
/// `fixtures/traefik/traefik-consul-trace.txt`. A key is accepted only at the path listed.
const REAL_EXTRA_KEYS: &[(&str, &[&str])] = &[
    ("catalog-service[]", &["ServiceKind", "ServiceWeights"]),
    (
        "catalog-service[].ServiceProxy",
        &["Mode", "MeshGateway", "Expose"],
    ),
    ("health-service[].Node", RAFT_INDEX),
    (
        "health-service[].Service",
        &[
            "EnableTagOverride",
            "Proxy",
            "Connect",
            "PeerName",
            "Datacenter",
            "CreateIndex",
            "ModifyIndex",
        ],
    ),
    ("health-service[].Checks[]", HEALTH_CHECK),
    ("health-checks[]", HEALTH_CHECK),
    ("health-state[]", HEALTH_CHECK),
    // The deprecated `Checks` of structs.Session (`json:",omitempty"`).
    ("session-info[]", &["Checks"]),
    ("session-list[]", &["Checks"]),
    ("session-node[]", &["Checks"]),
    ("session-renew[]", &["Checks"]),
    // agent/agent_endpoint.go `Self`: Stats and xDS (omitempty) next to the sample's keys, and
    // the Config struct's PrimaryDatacenter and BuildDate; serf's Coordinate has Height.
    ("agent-self", &["Stats", "xDS"]),
    ("agent-self.Config", &["PrimaryDatacenter", "BuildDate"]),
    ("agent-self.Coord", &["Height"]),
    // `DebugConfig` is the sanitized runtime config; "format subject to change" (DOC).
    (
        "agent-self.DebugConfig",
        &[
            "Datacenter",
            "NodeName",
            "ServerMode",
            "ACLsEnabled",
            "SessionTTLMin",
        ],
    ),
];

const RAFT_INDEX: &[&str] = &["CreateIndex", "ModifyIndex"];

/// structs.HealthCheck fields the doc sample omits.
const HEALTH_CHECK: &[&str] = &[
    "Type",
    "Interval",
    "Timeout",
    "ExposedPort",
    "Definition",
    "CreateIndex",
    "ModifyIndex",
];

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "bool",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

/// `health-service[3].Checks[0]` → `health-service[].Checks[]`.
fn schema_path(path: &str) -> String {
    let mut out = String::with_capacity(path.len());
    let mut in_index = false;
    for c in path.chars() {
        match c {
            '[' => {
                in_index = true;
                out.push('[');
            }
            ']' => {
                in_index = false;
                out.push(']');
            }
            _ if in_index => {}
            _ => out.push(c),
        }
    }
    out
}

fn extra_allowed(path: &str, key: &str) -> bool {
    let at = schema_path(path);
    REAL_EXTRA_KEYS
        .iter()
        .any(|(p, keys)| *p == at && keys.contains(&key))
}

/// Every key of `expected` is in `actual` with the same JSON type, recursively; extra keys are
/// only those real Consul has at that exact path. A `null` in the sample matches anything (Go
/// nil slices/pointers). Returns the first difference.
fn same_shape(expected: &Value, actual: &Value, path: &str) -> Result<(), String> {
    match (expected, actual) {
        (Value::Null, _) => Ok(()),
        (Value::Object(e), Value::Object(a)) => {
            // Maps keyed by data (Meta, TaggedAddresses, catalog/services) are not schemas: only
            // their value types must match.
            let data_map = ["Meta", "NodeMeta", "ServiceMeta", "TaggedAddresses", "Tags"]
                .iter()
                .any(|m| path.ends_with(m));
            if data_map {
                if let Some(sample) = e.values().next() {
                    for (k, av) in a {
                        same_shape(sample, av, &format!("{path}.{k}"))?;
                    }
                }
                return Ok(());
            }
            for (k, ev) in e {
                let av = a
                    .get(k)
                    .ok_or_else(|| format!("{path}.{k} missing in twin answer {actual}"))?;
                same_shape(ev, av, &format!("{path}.{k}"))?;
            }
            for k in a.keys() {
                if !e.contains_key(k) && !extra_allowed(path, k) {
                    return Err(format!("{path}.{k} is not a key real Consul returns here"));
                }
            }
            Ok(())
        }
        (Value::Array(e), Value::Array(a)) => {
            if let Some(first) = e.first() {
                for (i, item) in a.iter().enumerate() {
                    same_shape(first, item, &format!("{path}[{i}]"))?;
                }
            }
            Ok(())
        }
        (e, a) if type_name(e) == type_name(a) => Ok(()),
        (e, a) => Err(format!("{path}: sample has {e}, twin has {a}")),
    }
}

#[track_caller]
fn assert_same_shape(expected: &Value, actual: &Value, path: &str) {
    if let Err(diff) = same_shape(expected, actual, path) {
        panic!("{diff}");
    }
}

#[test]
fn the_shape_comparator_fails_on_a_wrong_type_a_missing_key_and_a_misplaced_extra_key() {
    let sample = json!([{"Node": {"Node": "n", "Address": "a"}, "Checks": [{"CheckID": "c"}]}]);
    let good = json!([{
        "Node": {"Node": "n1", "Address": "10.0.0.1", "CreateIndex": 5},
        "Checks": [{"CheckID": "serfHealth", "Interval": "10s"}]
    }]);
    assert_eq!(same_shape(&sample, &good, "health-service"), Ok(()));

    let wrong_type = json!([{"Node": {"Node": "n1", "Address": 7}, "Checks": []}]);
    let err = same_shape(&sample, &wrong_type, "health-service").unwrap_err();
    assert!(err.contains("health-service[0].Node.Address"), "{err}");

    let missing = json!([{"Node": {"Node": "n1"}, "Checks": []}]);
    let err = same_shape(&sample, &missing, "health-service").unwrap_err();
    assert!(err.contains("Node.Address missing"), "{err}");

    let unknown = json!([{"Node": {"Node": "n1", "Address": "a", "Bogus": 1}, "Checks": []}]);
    let err = same_shape(&sample, &unknown, "health-service").unwrap_err();
    assert!(err.contains("Node.Bogus is not a key"), "{err}");

    // `Interval` is real on a check, not on a node: allowed per path, not everywhere.
    let misplaced =
        json!([{"Node": {"Node": "n1", "Address": "a", "Interval": "1s"}, "Checks": []}]);
    let err = same_shape(&sample, &misplaced, "health-service").unwrap_err();
    assert!(err.contains("Node.Interval is not a key"), "{err}");

    let nested_wrong = json!([{"Node": {"Node": "n", "Address": "a"}, "Checks": [{"CheckID": 1}]}]);
    let err = same_shape(&sample, &nested_wrong, "health-service").unwrap_err();
    assert!(err.contains("Checks[0].CheckID"), "{err}");
}

struct Api {
    twin: Twin,
    http: reqwest::Client,
}

impl Api {
    async fn start() -> Api {
        Api::with(TwinConfig::default()).await
    }

    async fn with(config: TwinConfig) -> Api {
        let twin = Twin::start(config).await.unwrap();
        Api {
            twin,
            http: reqwest::Client::new(),
        }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.twin.consul_addr())
    }

    async fn call(
        &self,
        method: &str,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> (StatusCode, reqwest::header::HeaderMap, String) {
        let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let mut req = self.http.request(method, self.url(path));
        if let Some(b) = body {
            req = req.body(b);
        }
        let resp = req.send().await.unwrap();
        let status = resp.status();
        let headers = resp.headers().clone();
        (status, headers, resp.text().await.unwrap())
    }

    async fn json(&self, method: &str, path: &str, body: Option<Value>) -> (StatusCode, Value) {
        let (s, _, text) = self
            .call(method, path, body.map(|b| b.to_string().into_bytes()))
            .await;
        let v = serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("{path} answered {s} non-JSON {text:?}: {e}"));
        (s, v)
    }

    async fn put_kv(&self, key: &str, value: &str) -> Value {
        let (s, _, t) = self
            .call(
                "PUT",
                &format!("/v1/kv/{key}"),
                Some(value.as_bytes().to_vec()),
            )
            .await;
        assert_eq!(s, StatusCode::OK);
        serde_json::from_str(&t).unwrap()
    }
}

fn index_of(headers: &reqwest::header::HeaderMap) -> u64 {
    headers
        .get("X-Consul-Index")
        .expect("X-Consul-Index header")
        .to_str()
        .unwrap()
        .parse()
        .unwrap()
}

#[tokio::test]
async fn kv_answers_have_the_documented_shapes() {
    let api = Api::start().await;
    assert_eq!(
        api.put_kv("zip", "test").await,
        fixture("kv-put-response.json")
    );
    let (_, got) = api.json("GET", "/v1/kv/zip", None).await;
    assert_same_shape(
        &json!([{
            "CreateIndex": 1, "ModifyIndex": 1, "LockIndex": 0, "Key": "", "Flags": 0, "Value": ""
        }]),
        &got,
        "kv-get",
    );
    let mut sample = fixture("kv-get-response.json");
    // The sample shows a locked key; an unlocked key has no Session (omitempty in Consul).
    sample[0].as_object_mut().unwrap().remove("Session");
    assert_same_shape(&sample, &got, "kv-get");
    assert_eq!(got[0]["Value"], "dGVzdA==");
    assert_eq!(got[0]["Key"], "zip");

    for k in ["web/bar", "web/foo", "web/subdir/a"] {
        api.put_kv(k, "x").await;
    }
    let (s, keys) = api.json("GET", "/v1/kv/web/?keys&separator=/", None).await;
    assert_eq!(s, StatusCode::OK);
    assert_same_shape(&fixture("kv-get-keys-response.json"), &keys, "kv-keys");
    assert_eq!(keys, json!(["web/bar", "web/foo", "web/subdir/"]));

    let (s, del) = api.json("DELETE", "/v1/kv/zip", None).await;
    assert_eq!(
        (s, del),
        (StatusCode::OK, fixture("kv-delete-response.json"))
    );
    api.twin.shutdown().await;
}

#[tokio::test]
async fn locked_key_shows_its_session_like_the_sample() {
    let api = Api::start().await;
    let (_, created) = api
        .json("PUT", "/v1/session/create", Some(json!({"Name": "lock"})))
        .await;
    let id = created["ID"].as_str().unwrap().to_string();
    let (s, _, t) = api
        .call(
            "PUT",
            &format!("/v1/kv/zip?acquire={id}"),
            Some(b"test".to_vec()),
        )
        .await;
    assert_eq!((s, t.as_str()), (StatusCode::OK, "true"));
    let (_, got) = api.json("GET", "/v1/kv/zip", None).await;
    assert_same_shape(&fixture("kv-get-response.json"), &got, "kv-get");
    assert_eq!(got[0]["Session"], id.as_str());
    assert_eq!(got[0]["LockIndex"], 1);
    api.twin.shutdown().await;
}

#[tokio::test]
async fn missing_key_is_404_with_an_index_header_of_at_least_one() {
    let api = Api::start().await;
    let (s, h, body) = api.call("GET", "/v1/kv/nothing/here", None).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    assert!(body.is_empty());
    assert!(index_of(&h) >= 1);
    assert_eq!(h.get("X-Consul-KnownLeader").unwrap(), "true");
    assert_eq!(h.get("X-Consul-LastContact").unwrap(), "0");
    assert_eq!(h.get("X-Consul-Effective-Consistency").unwrap(), "leader");
    let (s, h, _) = api
        .call("GET", "/v1/kv/nothing?recurse=&consistent=", None)
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    assert_eq!(
        h.get("X-Consul-Effective-Consistency").unwrap(),
        "consistent"
    );
    let (s, _, body) = api.call("GET", "/v1/kv/x?stale&consistent", None).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert_eq!(
        body,
        "Cannot specify ?stale with ?consistent, conflicting semantics."
    );
    api.twin.shutdown().await;
}

#[tokio::test]
async fn another_datacenter_has_no_path_and_the_own_one_works() {
    let api = Api::start().await;
    let (s, _, body) = api.call("GET", "/v1/catalog/services?dc=dc7", None).await;
    assert_eq!(
        (s, body.as_str()),
        (StatusCode::INTERNAL_SERVER_ERROR, "No path to datacenter")
    );
    let (s, _, _) = api.call("GET", "/v1/catalog/services?dc=dc1", None).await;
    assert_eq!(s, StatusCode::OK);
    api.twin.shutdown().await;
}

#[tokio::test]
async fn oss_consul_refuses_namespaces_with_the_enterprise_error() {
    let api = Api::start().await;
    api.put_kv("x", "v").await;
    for path in [
        "/v1/kv/x?ns=team",
        "/v1/kv/x?recurse&ns=team",
        "/v1/session/list?ns=team",
        "/v1/catalog/services?ns=team",
        "/v1/health/service/consul?ns=team",
    ] {
        let (s, _, body) = api.call("GET", path, None).await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{path}");
        assert_eq!(
            body, "Invalid query parameter: \"ns\" - Namespaces are a Consul Enterprise feature",
            "{path}"
        );
    }
    let (s, _, _) = api
        .call("PUT", "/v1/kv/x?ns=team", Some(b"w".to_vec()))
        .await;
    assert_eq!(
        s,
        StatusCode::BAD_REQUEST,
        "a write in a namespace is refused too"
    );
    let (_, got) = api.json("GET", "/v1/kv/x", None).await;
    assert_eq!(got[0]["Value"], "dg==", "nothing was written");

    let resp = api
        .http
        .get(api.url("/v1/kv/x"))
        .header("X-Consul-Namespace", "team")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    assert_eq!(
        resp.text().await.unwrap(),
        "Invalid header: \"X-Consul-Namespace\" - Namespaces are a Consul Enterprise feature"
    );
    // An empty namespace is no namespace.
    let (s, _, _) = api.call("GET", "/v1/kv/x?ns=", None).await;
    assert_eq!(s, StatusCode::OK);
    api.twin.shutdown().await;
}

#[tokio::test]
async fn kv_keys_with_a_leading_slash_or_traversal_are_refused_like_consul_1_21() {
    let api = Api::start().await;
    for (method, path, reason) in [
        ("PUT", "/v1/kv//lead", "key must not begin with a '/'"),
        ("GET", "/v1/kv//lead", "key must not begin with a '/'"),
        ("GET", "/v1/kv//p?recurse", "key must not begin with a '/'"),
        (
            "DELETE",
            "/v1/kv//p?recurse",
            "key must not begin with a '/'",
        ),
        (
            "PUT",
            "/v1/kv/a/..%2Fb",
            "URL path contains invalid traversal sequence",
        ),
        (
            "GET",
            "/v1/kv/a/..x",
            "key contains path traversal sequence after normalization",
        ),
    ] {
        let (s, _, body) = api.call(method, path, Some(b"v".to_vec())).await;
        assert_eq!(
            (s, body.as_str()),
            (StatusCode::BAD_REQUEST, reason),
            "{method} {path}"
        );
    }
    let (_, keys) = api.json("GET", "/v1/kv/?keys", None).await;
    assert_eq!(keys, json!([]), "nothing was written");
    assert_eq!(api.put_kv("a/b.c-d_e", "ok").await, json!(true));
    api.twin.shutdown().await;
}

#[tokio::test]
async fn raw_read_returns_the_bytes_as_text_plain() {
    let api = Api::start().await;
    api.put_kv("cfg", "hello: world").await;
    let (s, h, body) = api.call("GET", "/v1/kv/cfg?raw", None).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(body, "hello: world");
    assert!(
        h.get("content-type")
            .unwrap()
            .to_str()
            .unwrap()
            .starts_with("text/plain")
    );
    assert_eq!(h.get("X-Content-Type-Options").unwrap(), "nosniff");
    api.twin.shutdown().await;
}

#[tokio::test]
async fn writes_do_not_carry_an_index_header() {
    let api = Api::start().await;
    let (_, h, _) = api.call("PUT", "/v1/kv/a", Some(b"1".to_vec())).await;
    assert!(h.get("X-Consul-Index").is_none());
    api.twin.shutdown().await;
}

#[tokio::test]
async fn failed_cas_is_200_false_and_successful_cas_is_200_true() {
    let api = Api::start().await;
    let (s, _, t) = api.call("PUT", "/v1/kv/c?cas=0", Some(b"1".to_vec())).await;
    assert_eq!((s, t.as_str()), (StatusCode::OK, "true"));
    let (s, _, t) = api.call("PUT", "/v1/kv/c?cas=0", Some(b"2".to_vec())).await;
    assert_eq!((s, t.as_str()), (StatusCode::OK, "false"));
    let (_, got) = api.json("GET", "/v1/kv/c", None).await;
    let m = got[0]["ModifyIndex"].as_u64().unwrap();
    let (s, _, t) = api
        .call(
            "PUT",
            &format!("/v1/kv/c?cas={}", m + 100),
            Some(b"2".to_vec()),
        )
        .await;
    assert_eq!((s, t.as_str()), (StatusCode::OK, "false"));
    let (s, _, t) = api
        .call("PUT", &format!("/v1/kv/c?cas={m}"), Some(b"2".to_vec()))
        .await;
    assert_eq!((s, t.as_str()), (StatusCode::OK, "true"));
    // CAS delete with a stale index keeps the key.
    let (s, _, t) = api.call("DELETE", &format!("/v1/kv/c?cas={m}"), None).await;
    assert_eq!((s, t.as_str()), (StatusCode::OK, "false"));
    let (s, _, _) = api.call("GET", "/v1/kv/c", None).await;
    assert_eq!(s, StatusCode::OK);
    let (s, _, t) = api
        .call("PUT", "/v1/kv/c?cas=1&acquire=x", Some(b"2".to_vec()))
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert!(t.starts_with("Conflicting flags: "), "{t}");
    api.twin.shutdown().await;
}

#[tokio::test]
async fn values_up_to_512_kib_are_stored_and_larger_ones_get_413() {
    let api = Api::start().await;
    let max = vec![b'a'; 512 * 1024];
    let (s, _, t) = api.call("PUT", "/v1/kv/big", Some(max.clone())).await;
    assert_eq!((s, t.as_str()), (StatusCode::OK, "true"));
    let (_, _, raw) = api.call("GET", "/v1/kv/big?raw", None).await;
    assert_eq!(raw.len(), max.len());
    let (s, _, t) = api
        .call("PUT", "/v1/kv/big", Some(vec![b'a'; 512 * 1024 + 1]))
        .await;
    assert_eq!(s, StatusCode::PAYLOAD_TOO_LARGE);
    assert!(t.contains("too large"), "{t}");
    api.twin.shutdown().await;
}

#[tokio::test]
async fn missing_key_name_is_400() {
    let api = Api::start().await;
    let (s, _, t) = api.call("PUT", "/v1/kv/", Some(b"x".to_vec())).await;
    assert_eq!(
        (s, t.as_str()),
        (StatusCode::BAD_REQUEST, "Missing key name")
    );
    let (s, _, t) = api.call("GET", "/v1/kv/", None).await;
    assert_eq!(
        (s, t.as_str()),
        (StatusCode::BAD_REQUEST, "Missing key name")
    );
    let (s, v) = api.json("GET", "/v1/kv/?keys", None).await;
    assert_eq!((s, v), (StatusCode::OK, json!([])));
    api.twin.shutdown().await;
}

#[tokio::test]
async fn failed_transaction_is_409_with_errors_and_writes_nothing() {
    let api = Api::start().await;
    api.put_kv("app/status", "old").await;
    let (_, got) = api.json("GET", "/v1/kv/app/status", None).await;
    let idx = got[0]["ModifyIndex"].as_u64().unwrap();
    let ops = json!([
        {"KV": {"Verb": "set", "Key": "app/other", "Value": "bmV3"}},
        {"KV": {"Verb": "cas", "Key": "app/status", "Value": "bmV3", "Index": idx + 1}},
    ]);
    let (s, body) = api.json("PUT", "/v1/txn", Some(ops)).await;
    assert_eq!(s, StatusCode::CONFLICT);
    assert_eq!(body["Results"], Value::Null);
    assert_eq!(body["Errors"][0]["OpIndex"], 1);
    assert!(
        body["Errors"][0]["What"]
            .as_str()
            .unwrap()
            .contains("app/status")
    );
    let (s, _, _) = api.call("GET", "/v1/kv/app/other", None).await;
    assert_eq!(
        s,
        StatusCode::NOT_FOUND,
        "a rolled-back transaction must not write"
    );

    let ops = json!([
        {"KV": {"Verb": "set", "Key": "app/other", "Value": "bmV3"}},
        {"KV": {"Verb": "cas", "Key": "app/status", "Value": "bmV3", "Index": idx}},
        {"KV": {"Verb": "get", "Key": "app/other"}},
        {"KV": {"Verb": "check-index", "Key": "app/other", "Index": 0}},
    ]);
    let (s, body) = api.json("PUT", "/v1/txn", Some(ops)).await;
    assert_eq!(
        s,
        StatusCode::CONFLICT,
        "check-index 0 on an existing key fails: {body}"
    );

    let ops = json!([
        {"KV": {"Verb": "set", "Key": "app/other", "Value": "bmV3"}},
        {"KV": {"Verb": "cas", "Key": "app/status", "Value": "bmV3", "Index": idx}},
        {"KV": {"Verb": "get", "Key": "app/other"}},
        {"KV": {"Verb": "delete", "Key": "app/nothing"}},
        {"KV": {"Verb": "get-or-empty", "Key": "app/nothing"}},
    ]);
    let (s, body) = api.json("PUT", "/v1/txn", Some(ops)).await;
    assert_eq!(s, StatusCode::OK, "{body}");
    assert_eq!(body["Errors"], Value::Null);
    let results = body["Results"].as_array().unwrap();
    assert_eq!(
        results.len(),
        3,
        "set, cas and get yield results, delete does not"
    );
    assert_eq!(
        results[0]["KV"]["Value"],
        Value::Null,
        "writes return no value"
    );
    assert_eq!(results[2]["KV"]["Value"], "bmV3");
    assert_eq!(
        results[0]["KV"]["ModifyIndex"], results[1]["KV"]["ModifyIndex"],
        "one transaction, one index"
    );

    let too_many: Vec<Value> = (0..65)
        .map(|i| json!({"KV": {"Verb": "get", "Key": format!("k{i}")}}))
        .collect();
    let (s, _, _) = api
        .call(
            "PUT",
            "/v1/txn",
            Some(Value::Array(too_many).to_string().into_bytes()),
        )
        .await;
    assert_eq!(s, StatusCode::PAYLOAD_TOO_LARGE);
    api.twin.shutdown().await;
}

#[tokio::test]
async fn check_session_fences_a_deposed_leader() {
    let api = Api::start().await;
    let (_, a) = api
        .json(
            "PUT",
            "/v1/session/create",
            Some(json!({"LockDelay": "0s"})),
        )
        .await;
    let (_, b) = api.json("PUT", "/v1/session/create", Some(json!({}))).await;
    let (a, b) = (
        a["ID"].as_str().unwrap().to_string(),
        b["ID"].as_str().unwrap().to_string(),
    );
    let (_, _, t) = api
        .call(
            "PUT",
            &format!("/v1/kv/p/leader?acquire={a}"),
            Some(b"a".to_vec()),
        )
        .await;
    assert_eq!(t, "true");
    let fenced = |session: &str| {
        json!([
            {"KV": {"Verb": "check-session", "Key": "p/leader", "Session": session}},
            {"KV": {"Verb": "set", "Key": "p/status", "Value": "b2s="}},
        ])
    };
    let (s, body) = api.json("PUT", "/v1/txn", Some(fenced(&b))).await;
    assert_eq!(s, StatusCode::CONFLICT, "{body}");
    let (s, _) = api.json("PUT", "/v1/txn", Some(fenced(&a))).await;
    assert_eq!(s, StatusCode::OK);
    api.twin.shutdown().await;
}

#[tokio::test]
async fn session_answers_have_the_documented_shapes_and_codes() {
    let api = Api::start().await;
    // The sample request names node "foobar" and checks a, b, c: register them first, as a real
    // cluster would have them (serfHealth too: the deprecated `Checks` field keeps the default
    // NodeChecks bound).
    let node = json!({
        "Node": "foobar", "Address": "10.1.10.12",
        "Checks": [
            {"CheckID": "serfHealth", "Name": "Serf Health Status", "Status": "passing"},
            {"CheckID": "a", "Name": "a", "Status": "passing"},
            {"CheckID": "b", "Name": "b", "Status": "passing"},
            {"CheckID": "c", "Name": "c", "Status": "passing"}
        ]
    });
    let (s, _) = api.json("PUT", "/v1/catalog/register", Some(node)).await;
    assert_eq!(s, StatusCode::OK);
    let (s, created) = api
        .json(
            "PUT",
            "/v1/session/create",
            Some(fixture("session-create-request.json")),
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    assert_same_shape(
        &fixture("session-create-response.json"),
        &created,
        "session-create",
    );
    let id = created["ID"].as_str().unwrap();

    let (s, info) = api
        .json("GET", &format!("/v1/session/info/{id}"), None)
        .await;
    assert_eq!(s, StatusCode::OK);
    assert_same_shape(
        &fixture("session-info-response.json"),
        &info,
        "session-info",
    );
    assert_eq!(info[0]["LockDelay"], 15_000_000_000u64);
    assert_eq!(info[0]["TTL"], "30s");
    assert_eq!(info[0]["NodeChecks"], json!(["serfHealth"]));
    assert_eq!(info[0]["Checks"], json!(["a", "b", "c"]));
    let (_, list) = api.json("GET", "/v1/session/list", None).await;
    assert_same_shape(
        &fixture("session-list-response.json"),
        &list,
        "session-list",
    );
    let (_, by_node) = api.json("GET", "/v1/session/node/foobar", None).await;
    assert_same_shape(
        &fixture("session-node-response.json"),
        &by_node,
        "session-node",
    );
    let (s, renewed) = api
        .json("PUT", &format!("/v1/session/renew/{id}"), None)
        .await;
    assert_eq!(s, StatusCode::OK);
    assert_same_shape(
        &fixture("session-renew-response.json"),
        &renewed,
        "session-renew",
    );

    let (s, destroyed) = api
        .json("PUT", &format!("/v1/session/destroy/{id}"), None)
        .await;
    assert_eq!(
        (s, destroyed.clone()),
        (StatusCode::OK, fixture("session-destroy-response.json"))
    );
    let (s, again) = api
        .json("PUT", &format!("/v1/session/destroy/{id}"), None)
        .await;
    assert_eq!(
        (s, again),
        (StatusCode::OK, json!(true)),
        "destroy is idempotent"
    );
    let (s, info) = api
        .json("GET", &format!("/v1/session/info/{id}"), None)
        .await;
    assert_eq!((s, info), (StatusCode::OK, json!([])));
    let (s, _, body) = api
        .call("PUT", &format!("/v1/session/renew/{id}"), None)
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    assert_eq!(body, format!("Session id '{id}' not found"));

    let (s, _, body) = api
        .call(
            "PUT",
            "/v1/session/create",
            Some(br#"{"TTL": "5s"}"#.to_vec()),
        )
        .await;
    assert_eq!(s, StatusCode::INTERNAL_SERVER_ERROR);
    assert!(body.starts_with("Invalid Session TTL"), "{body}");
    let (s, _, _) = api
        .call(
            "PUT",
            "/v1/session/create",
            Some(br#"{"TTL": "25h"}"#.to_vec()),
        )
        .await;
    assert_eq!(s, StatusCode::INTERNAL_SERVER_ERROR);
    let (s, _, _) = api
        .call("PUT", "/v1/session/create", Some(b"{not json".to_vec()))
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    let (s, _, body) = api
        .call(
            "PUT",
            "/v1/kv/k?acquire=00000000-0000-0000-0000-00000000dead",
            Some(vec![]),
        )
        .await;
    assert_eq!(s, StatusCode::INTERNAL_SERVER_ERROR);
    assert!(body.contains("invalid session"), "{body}");
    api.twin.shutdown().await;
}

/// Registers node `n1` with passing checks serfHealth, a and b.
async fn node_with_checks(api: &Api) {
    let node = json!({
        "Node": "n1", "Address": "10.0.0.1",
        "Checks": [
            {"CheckID": "serfHealth", "Name": "serf", "Status": "passing"},
            {"CheckID": "a", "Name": "a", "Status": "passing"},
            {"CheckID": "b", "Name": "b", "Status": "passing"}
        ]
    });
    let (s, _) = api.json("PUT", "/v1/catalog/register", Some(node)).await;
    assert_eq!(s, StatusCode::OK);
}

#[tokio::test]
async fn session_checks_follow_consuls_fixup_of_the_deprecated_field() {
    let api = Api::start().await;
    node_with_checks(&api).await;
    // (request body, NodeChecks, Checks) as agent/session_endpoint.go's
    // fixupEmptySessionChecks leaves them.
    let cases = [
        (json!({}), json!(["serfHealth"]), Value::Null),
        (
            json!({"Checks": ["a"]}),
            json!(["serfHealth"]),
            json!(["a"]),
        ),
        (json!({"Checks": []}), json!([]), Value::Null),
        (json!({"Checks": null}), json!([]), Value::Null),
        (
            json!({"Checks": ["serfHealth"]}),
            json!(["serfHealth"]),
            Value::Null,
        ),
        (json!({"NodeChecks": ["a"]}), json!(["a"]), Value::Null),
        (json!({"NodeChecks": []}), json!([]), Value::Null),
        (
            json!({"NodeChecks": [], "Checks": ["a"]}),
            json!([]),
            Value::Null,
        ),
        (
            json!({"NodeChecks": ["a"], "Checks": ["b"]}),
            json!(["a"]),
            json!(["b"]),
        ),
        (
            json!({"NodeChecks": ["a"], "Checks": ["serfHealth"]}),
            json!(["a"]),
            Value::Null,
        ),
        // An empty Checks clears even explicitly given NodeChecks (SRC, kept for pre-1.7 callers).
        (
            json!({"NodeChecks": ["a"], "Checks": []}),
            json!([]),
            Value::Null,
        ),
    ];
    for (body, node_checks, checks) in cases {
        let mut body = body;
        body["Node"] = json!("n1");
        let (s, created) = api
            .json("PUT", "/v1/session/create", Some(body.clone()))
            .await;
        assert_eq!(s, StatusCode::OK, "{body}: {created}");
        let id = created["ID"].as_str().unwrap();
        let (_, info) = api
            .json("GET", &format!("/v1/session/info/{id}"), None)
            .await;
        assert_eq!(info[0]["NodeChecks"], node_checks, "{body}");
        assert_eq!(info[0]["Checks"], checks, "{body}: Checks is omitempty");
    }

    // A session bound through the deprecated field dies when that check goes critical...
    let (_, created) = api
        .json(
            "PUT",
            "/v1/session/create",
            Some(json!({"Node": "n1", "Checks": ["b"]})),
        )
        .await;
    let id = created["ID"].as_str().unwrap().to_string();
    let critical = json!({
        "Node": "n1", "Address": "10.0.0.1",
        "Check": {"CheckID": "b", "Name": "b", "Status": "critical"}
    });
    let (s, _) = api
        .json("PUT", "/v1/catalog/register", Some(critical))
        .await;
    assert_eq!(s, StatusCode::OK);
    let (_, info) = api
        .json("GET", &format!("/v1/session/info/{id}"), None)
        .await;
    assert_eq!(info, json!([]), "session bound to check b was invalidated");

    // ...and the default serfHealth stays required when only `Checks` is given.
    let node = json!({
        "Node": "bare", "Address": "10.0.0.2",
        "Check": {"CheckID": "a", "Name": "a", "Status": "passing"}
    });
    let (s, _) = api.json("PUT", "/v1/catalog/register", Some(node)).await;
    assert_eq!(s, StatusCode::OK);
    let (s, _, body) = api
        .call(
            "PUT",
            "/v1/session/create",
            Some(br#"{"Node": "bare", "Checks": ["a"]}"#.to_vec()),
        )
        .await;
    assert_eq!(s, StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(body, "Missing check 'serfHealth' registration");
    let (s, _, _) = api
        .call(
            "PUT",
            "/v1/session/create",
            Some(br#"{"Node": "bare", "NodeChecks": ["a"]}"#.to_vec()),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "NodeChecks replaces the default");
    api.twin.shutdown().await;
}

#[tokio::test]
async fn destroyed_session_releases_its_lock_and_lock_delay_blocks_reacquire() {
    let api = Api::start().await;
    let (_, a) = api
        .json(
            "PUT",
            "/v1/session/create",
            Some(json!({"LockDelay": "1s"})),
        )
        .await;
    let (_, b) = api.json("PUT", "/v1/session/create", Some(json!({}))).await;
    let (a, b) = (
        a["ID"].as_str().unwrap().to_string(),
        b["ID"].as_str().unwrap().to_string(),
    );
    api.call(
        "PUT",
        &format!("/v1/kv/lock?acquire={a}"),
        Some(b"a".to_vec()),
    )
    .await;
    api.call("PUT", &format!("/v1/session/destroy/{a}"), None)
        .await;
    let (_, got) = api.json("GET", "/v1/kv/lock", None).await;
    assert!(
        got[0].get("Session").is_none(),
        "released on invalidation: {got}"
    );
    let (_, _, t) = api
        .call(
            "PUT",
            &format!("/v1/kv/lock?acquire={b}"),
            Some(b"b".to_vec()),
        )
        .await;
    assert_eq!(t, "false", "lock-delay holds the key");
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    let (_, _, t) = api
        .call(
            "PUT",
            &format!("/v1/kv/lock?acquire={b}"),
            Some(b"b".to_vec()),
        )
        .await;
    assert_eq!(t, "true", "acquire succeeds after lock-delay");
    let (_, got) = api.json("GET", "/v1/kv/lock", None).await;
    assert_eq!(got[0]["LockIndex"], 2);
    api.twin.shutdown().await;
}

#[tokio::test]
async fn catalog_and_health_answers_have_the_documented_shapes() {
    let api = Api::start().await;
    let (s, ok) = api
        .json(
            "PUT",
            "/v1/catalog/register",
            Some(fixture("catalog-register-request.json")),
        )
        .await;
    assert_eq!((s, ok), (StatusCode::OK, json!(true)));

    let (s, services) = api.json("GET", "/v1/catalog/services", None).await;
    assert_eq!(s, StatusCode::OK);
    let sample = fixture("catalog-services-response.json");
    assert_eq!(type_name(&services), type_name(&sample));
    assert_eq!(services["consul"], json!([]));
    assert_eq!(services["redis"], json!(["primary", "v1"]));

    let (_, rows) = api.json("GET", "/v1/catalog/service/redis", None).await;
    assert_eq!(rows.as_array().unwrap().len(), 1);
    assert_same_shape(
        &fixture("catalog-service-response.json"),
        &rows,
        "catalog-service",
    );
    assert_eq!(rows[0]["ServiceAddress"], "127.0.0.1");
    assert_eq!(rows[0]["Address"], "192.168.10.10");
    let (_, rows) = api
        .json(
            "GET",
            "/v1/catalog/service/redis?tag=primary&tag=nope",
            None,
        )
        .await;
    assert_eq!(rows, json!([]), "tags are ANDed");
    let (s, rows) = api.json("GET", "/v1/catalog/service/unknown", None).await;
    assert_eq!((s, rows), (StatusCode::OK, json!([])));

    let (_, health) = api.json("GET", "/v1/health/service/redis", None).await;
    assert_eq!(health.as_array().unwrap().len(), 1);
    assert_same_shape(
        &fixture("health-service-response.json"),
        &health,
        "health-service",
    );
    assert_eq!(health[0]["Checks"][0]["ServiceName"], "redis");
    let (_, checks) = api.json("GET", "/v1/health/checks/redis", None).await;
    assert_same_shape(
        &fixture("health-checks-response.json"),
        &checks,
        "health-checks",
    );
    let (s, any) = api.json("GET", "/v1/health/state/any", None).await;
    assert_eq!(s, StatusCode::OK);
    assert_same_shape(
        &fixture("health-checks-response.json"),
        &any,
        "health-state",
    );
    let (s, _, t) = api.call("GET", "/v1/health/state/bogus", None).await;
    assert_eq!((s, t.as_str()), (StatusCode::BAD_REQUEST, "Invalid state"));

    // ?passing filters out instances with any non-passing check.
    let critical = json!({
        "Node": "t2.320", "Address": "192.168.10.10", "SkipNodeUpdate": true,
        "Check": {"CheckID": "service:redis1", "Name": "Redis health check", "Status": "critical", "ServiceID": "redis1"}
    });
    api.json("PUT", "/v1/catalog/register", Some(critical))
        .await;
    let (_, all) = api.json("GET", "/v1/health/service/redis", None).await;
    let (_, passing) = api
        .json("GET", "/v1/health/service/redis?passing", None)
        .await;
    assert_eq!(
        (
            all.as_array().unwrap().len(),
            passing.as_array().unwrap().len()
        ),
        (1, 0)
    );
    let (s, _, t) = api
        .call("GET", "/v1/health/service/redis?passing=maybe", None)
        .await;
    assert_eq!(
        (s, t.as_str()),
        (StatusCode::BAD_REQUEST, "Invalid value for ?passing")
    );

    let (_, ok) = api
        .json(
            "PUT",
            "/v1/catalog/deregister",
            Some(json!({"Node": "t2.320", "ServiceID": "redis1"})),
        )
        .await;
    assert_eq!(ok, json!(true));
    let (_, services) = api.json("GET", "/v1/catalog/services", None).await;
    assert!(
        services.get("redis").is_none(),
        "deregistered service disappears: {services}"
    );
    let (_, checks) = api.json("GET", "/v1/health/checks/redis", None).await;
    assert_eq!(checks, json!([]), "its checks go with it");
    api.twin.shutdown().await;
}

#[tokio::test]
async fn status_and_agent_answers_have_the_documented_shapes() {
    let api = Api::start().await;
    let (s, leader) = api.json("GET", "/v1/status/leader", None).await;
    assert_eq!(s, StatusCode::OK);
    assert_same_shape(
        &fixture("status-leader-response.json"),
        &leader,
        "status-leader",
    );
    assert_ne!(leader, json!(""), "the twin always has a leader");
    let (s, me) = api.json("GET", "/v1/agent/self", None).await;
    assert_eq!(s, StatusCode::OK);
    assert_same_shape(&fixture("agent-self-response.json"), &me, "agent-self");
    api.twin.shutdown().await;
}

#[tokio::test]
async fn with_an_acl_token_requests_without_a_valid_token_get_403() {
    let config = TwinConfig {
        acl_token: Some("s3cret".into()),
        ..TwinConfig::default()
    };
    let api = Api::with(config).await;
    let (s, _, body) = api.call("GET", "/v1/kv/a", None).await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    assert_eq!(
        body,
        "Permission denied: anonymous token lacks permission 'key:read' on \"a\". The anonymous token is used implicitly when a request does not specify a token."
    );
    let resp = api
        .http
        .get(api.url("/v1/kv/a"))
        .header("X-Consul-Token", "wrong")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::FORBIDDEN);
    assert_eq!(resp.text().await.unwrap(), "ACL not found");
    for req in [
        api.http
            .get(api.url("/v1/kv/a"))
            .header("X-Consul-Token", "s3cret"),
        api.http
            .get(api.url("/v1/kv/a"))
            .header("Authorization", "Bearer s3cret"),
        api.http.get(api.url("/v1/kv/a?token=s3cret")),
    ] {
        let resp = req.send().await.unwrap();
        assert_eq!(
            resp.status(),
            StatusCode::NOT_FOUND,
            "a valid token reaches the API"
        );
        assert_eq!(
            resp.headers().get("X-Consul-Default-ACL-Policy").unwrap(),
            "deny"
        );
    }
    // The anonymous token has no policy: Txn.preCheck refuses the write (409, nothing applied).
    let (s, _, body) = api
        .call(
            "PUT",
            "/v1/txn",
            Some(br#"[{"KV": {"Verb": "set", "Key": "a", "Value": "eA=="}}]"#.to_vec()),
        )
        .await;
    assert_eq!(s, StatusCode::CONFLICT);
    let v: Value = serde_json::from_str(&body).unwrap();
    let what = v["Errors"][0]["What"].as_str().unwrap();
    assert!(
        what.starts_with(
            "Permission denied: anonymous token lacks permission 'key:write' on \"a\""
        ),
        "{body}"
    );
    let (s, _, _) = api.call("GET", "/v1/status/leader", None).await;
    assert_eq!(s, StatusCode::OK, "status needs no ACL");
    api.twin.shutdown().await;
}

#[tokio::test]
async fn every_kv_fixture_key_is_exercised() {
    // Guards the list above: a new fixture in fixtures/consul must get a contract test.
    let dir = format!("{}/../fixtures/consul", env!("CARGO_MANIFEST_DIR"));
    let names: BTreeSet<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    let covered: BTreeSet<String> = [
        "agent-self-response.json",
        "catalog-register-request.json",
        "catalog-service-response.json",
        "catalog-services-response.json",
        "health-checks-response.json",
        "health-service-response.json",
        "kv-delete-response.json",
        "kv-get-keys-response.json",
        "kv-get-response.json",
        "kv-put-response.json",
        "session-create-request.json",
        "session-create-response.json",
        "session-destroy-response.json",
        "session-info-response.json",
        "session-list-response.json",
        "session-node-response.json",
        "session-renew-response.json",
        "status-leader-response.json",
    ]
    .into_iter()
    .map(String::from)
    .collect();
    assert_eq!(names, covered);
}
