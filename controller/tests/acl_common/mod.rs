//! Shared by the `acl_*` tests: a twin with ACLs on, the shipped policies of `nomad-jobs/acl/`
//! loaded the way the README creates them (`/v1/acl/policy` + `/v1/acl/token` for Consul, a
//! policy-bound token for Nomad), and the project's real clients holding those tokens.
#![allow(dead_code, clippy::unwrap_used, clippy::panic)]

use std::time::Duration;

use hashistack_twin::nomad::AclTokenSeed;
use hashistack_twin::{Twin, TwinConfig};
use proxy_operator::consul::ConsulClient;
use proxy_operator::nomad::NomadClient;
use proxy_operator::transport::{Api, ClientConfig, RetryPolicy, Token};
use serde_json::{Value, json};

/// The management token of the twin.
pub const ROOT: &str = "root-management-secret-5d1e";
/// Nomad secret of the operator's policy.
pub const NOMAD_OPERATOR: &str = "nomad-operator-secret-8c2f";
/// Nomad secret of Traefik's policy.
pub const NOMAD_TRAEFIK: &str = "nomad-traefik-secret-41aa";
/// Nomad secret of a token with a policy that grants nothing the operator needs.
pub const NOMAD_NOTHING: &str = "nomad-nothing-secret-0b7d";

/// A shipped policy file, as `consul acl policy create -rules @file` reads it.
pub fn policy(file: &str) -> String {
    let path = format!("{}/../nomad-jobs/acl/{file}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {path}: {e}"))
}

fn seed(name: &str, secret: &str, rules: String) -> AclTokenSeed {
    AclTokenSeed {
        name: name.into(),
        secret_id: secret.into(),
        policies: vec![(name.into(), rules)],
    }
}

/// A twin with ACLs on (management token [`ROOT`]) and the shipped Nomad policies bound to
/// [`NOMAD_OPERATOR`] and [`NOMAD_TRAEFIK`].
pub async fn acl_twin() -> Twin {
    Twin::start(TwinConfig {
        acl_token: Some(ROOT.into()),
        nomad_acl_tokens: vec![
            seed(
                "proxy-operator",
                NOMAD_OPERATOR,
                policy("nomad-operator.hcl"),
            ),
            seed("proxy-traefik", NOMAD_TRAEFIK, policy("nomad-traefik.hcl")),
            // A real policy about something else: the token is known, its rights are not ours.
            seed(
                "batch-reader",
                NOMAD_NOTHING,
                r#"namespace "batch" { capabilities = ["read-job"] }"#.into(),
            ),
        ],
        ..TwinConfig::default()
    })
    .await
    .unwrap()
}

/// An HTTP client that never goes through a proxy.
pub fn http() -> reqwest::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap()
}

/// A raw call to the twin's Consul API with `token`: (status, body, filtered-by-ACLs header).
pub async fn consul_raw(
    twin: &Twin,
    token: &str,
    method: &str,
    path: &str,
    body: Option<Vec<u8>>,
) -> (u16, String, Option<String>) {
    let url = format!("http://{}{path}", twin.consul_addr());
    let mut req = http()
        .request(method.parse().unwrap(), url)
        .header("X-Consul-Token", token);
    if let Some(b) = body {
        req = req.body(b);
    }
    let resp = req.send().await.unwrap();
    let status = resp.status().as_u16();
    let filtered = resp
        .headers()
        .get("X-Consul-Results-Filtered-By-ACLs")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    (status, resp.text().await.unwrap(), filtered)
}

/// A raw call to the twin's Nomad API with `token`: (status, body).
pub async fn nomad_raw(
    twin: &Twin,
    token: &str,
    method: &str,
    path: &str,
    body: Option<Value>,
) -> (u16, String) {
    let url = format!("http://{}{path}", twin.nomad_addr());
    let mut req = http()
        .request(method.parse().unwrap(), url)
        .header("X-Nomad-Token", token);
    if let Some(b) = body {
        req = req.json(&b);
    }
    let resp = req.send().await.unwrap();
    (resp.status().as_u16(), resp.text().await.unwrap())
}

/// Creates a Consul policy from `rules` and a token linked to it, as the README's
/// `consul acl policy create` / `consul acl token create` do; returns the token's SecretID.
pub async fn consul_token(twin: &Twin, name: &str, rules: &str) -> String {
    let body = json!({"Name": name, "Description": name, "Rules": rules});
    let (s, text, _) = consul_raw(
        twin,
        ROOT,
        "PUT",
        "/v1/acl/policy",
        Some(body.to_string().into_bytes()),
    )
    .await;
    assert_eq!(s, 200, "policy {name} refused: {text}");
    let body = json!({"Description": name, "Policies": [{"Name": name}]});
    let (s, text, _) = consul_raw(
        twin,
        ROOT,
        "PUT",
        "/v1/acl/token",
        Some(body.to_string().into_bytes()),
    )
    .await;
    assert_eq!(s, 200, "token {name} refused: {text}");
    let token: Value = serde_json::from_str(&text).unwrap();
    token["SecretID"].as_str().unwrap().to_owned()
}

fn config(api: Api, addr: std::net::SocketAddr, token: &str) -> ClientConfig {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let mut config = ClientConfig::for_address(api, &format!("http://{addr}")).unwrap();
    config.token = Some(Token::new(token));
    config.retry = RetryPolicy {
        max_retries: 2,
        min_delay: Duration::from_millis(5),
        max_delay: Duration::from_millis(20),
    };
    config
}

/// The operator's Consul client holding `token`.
pub fn consul_client(twin: &Twin, token: &str) -> ConsulClient {
    ConsulClient::new(&config(Api::Consul, twin.consul_addr(), token)).unwrap()
}

/// The operator's Nomad client holding `token`, in `namespace` (`NOMAD_NAMESPACE`) when given.
pub fn nomad_client(twin: &Twin, token: &str, namespace: Option<&str>) -> NomadClient {
    let mut config = config(Api::Nomad, twin.nomad_addr(), token);
    config.namespace = namespace.map(str::to_owned);
    NomadClient::new(&config).unwrap()
}

/// A small proxy job as the operator registers one (owner Meta, a raw_exec task that idles).
pub fn proxy_job(id: &str, namespace: &str, digest: &str) -> Value {
    json!({
        "ID": id,
        "Name": id,
        "Type": "service",
        "Namespace": namespace,
        "Datacenters": ["dc1"],
        "Meta": {"proxy-operator/owner": "proxy-operator", "proxy-operator/spec-digest": digest},
        "TaskGroups": [{
            "Name": "proxy",
            "Count": 1,
            "Tasks": [{
                "Name": "proxy",
                "Driver": "raw_exec",
                "Config": {"command": "/bin/sh", "args": ["-c", format!("exec sleep 600 # {digest}")]},
            }],
        }],
    })
}
