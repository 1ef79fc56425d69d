//! Nomad ACL policies enforced per request: namespace capabilities and `policy` shorthands,
//! `node` / `agent` rules, Nomad's 403 texts, `namespace=*` list filtering, and the
//! `/v1/acl/policy/:name` and `/v1/acl/token` endpoints (SRC acl/, nomad/acl_endpoint.go,
//! command/agent/acl_endpoint.go).
#![allow(clippy::unwrap_used, clippy::panic)]

mod nomad_support;

use hashistack_twin::nomad::AclTokenSeed;
use hashistack_twin::{Twin, TwinConfig};
use nomad_support::{Answer, Nomad, sh_job};
use serde_json::json;

const MANAGEMENT: &str = "mgmt-0000-secret";
const DEPLOYER: &str = "deployer-1111-secret";
const READER: &str = "reader-2222-secret";
const PROD_ONLY: &str = "prod-3333-secret";

fn seed(name: &str, secret: &str, rules: &str) -> AclTokenSeed {
    AclTokenSeed {
        name: name.into(),
        secret_id: secret.into(),
        policies: vec![(format!("{name}-policy"), rules.into())],
    }
}

async fn twin_with_acls() -> Nomad {
    Nomad::start_with(TwinConfig {
        acl_token: Some(MANAGEMENT.into()),
        nomad_acl_tokens: vec![
            // A least-privilege deployer: submit and read jobs in its namespace, read nodes.
            seed(
                "deployer",
                DEPLOYER,
                r#"
                namespace "default" {
                  capabilities = ["submit-job", "read-job", "list-jobs"]
                }
                node { policy = "read" }
                "#,
            ),
            seed("reader", READER, r#"namespace "*" { policy = "read" }"#),
            seed(
                "prod",
                PROD_ONLY,
                r#"{"namespace": {"prod": {"policy": "write"}}}"#,
            ),
        ],
        ..TwinConfig::default()
    })
    .await
}

fn denied(a: &Answer) -> bool {
    a.status == 403 && a.text == "Permission denied"
}

#[tokio::test]
async fn a_least_privilege_token_does_what_its_policy_says_and_nothing_next_to_it() {
    let n = twin_with_acls().await;
    let job = json!({"Job": sh_job("web", "exec sleep 1000")});
    let a = n
        .send_as(Some(DEPLOYER), "PUT", "/v1/jobs", Some(job.clone()))
        .await;
    assert_eq!(a.status, 200, "submit-job: {}", a.text);
    assert_eq!(
        n.send_as(Some(DEPLOYER), "GET", "/v1/job/web", None)
            .await
            .status,
        200
    );
    assert_eq!(
        n.send_as(Some(DEPLOYER), "GET", "/v1/jobs", None)
            .await
            .status,
        200
    );
    assert_eq!(
        n.send_as(Some(DEPLOYER), "GET", "/v1/job/web/allocations", None)
            .await
            .status,
        200
    );
    assert_eq!(
        n.send_as(Some(DEPLOYER), "GET", "/v1/nodes", None)
            .await
            .status,
        200
    );
    // Next to what it may do: node writes, the agent, allocation lifecycle, ACL admin.
    let nodes = n
        .send_as(Some(DEPLOYER), "GET", "/v1/nodes", None)
        .await
        .json();
    let node = nodes[0]["ID"].as_str().unwrap();
    let drain = n
        .send_as(
            Some(DEPLOYER),
            "PUT",
            &format!("/v1/node/{node}/drain"),
            Some(json!({"DrainSpec": {"Deadline": 0}})),
        )
        .await;
    assert!(denied(&drain), "{} {}", drain.status, drain.text);
    assert!(denied(
        &n.send_as(Some(DEPLOYER), "GET", "/v1/agent/self", None)
            .await
    ));
    assert!(denied(
        &n.send_as(Some(DEPLOYER), "GET", "/v1/acl/policies", None)
            .await
    ));
    let allocs = n.get("/v1/job/web/allocations").await;
    let alloc = allocs[0]["ID"].as_str().unwrap();
    assert!(denied(
        &n.send_as(
            Some(DEPLOYER),
            "POST",
            &format!("/v1/allocation/{alloc}/stop"),
            None
        )
        .await
    ));
    // Another namespace is refused.
    assert!(denied(
        &n.send_as(Some(DEPLOYER), "GET", "/v1/jobs?namespace=prod", None)
            .await
    ));

    // `policy = "read"` reads but does not submit.
    assert_eq!(
        n.send_as(Some(READER), "GET", "/v1/job/web", None)
            .await
            .status,
        200
    );
    assert!(denied(
        &n.send_as(Some(READER), "PUT", "/v1/jobs", Some(job.clone()))
            .await
    ));
    assert!(denied(
        &n.send_as(Some(READER), "DELETE", "/v1/job/web", None).await
    ));
    assert!(
        denied(&n.send_as(Some(READER), "GET", "/v1/nodes", None).await),
        "no node rule"
    );

    // Unknown and missing tokens; status endpoints need none.
    let unknown = n
        .send_as(Some("no-such-secret"), "GET", "/v1/jobs", None)
        .await;
    assert_eq!(
        (unknown.status, unknown.text.as_str()),
        (403, "ACL token not found")
    );
    assert!(denied(&n.send_as(None, "GET", "/v1/jobs", None).await));
    assert_eq!(
        n.send_as(None, "GET", "/v1/status/leader", None)
            .await
            .status,
        200
    );
    // The management token may do everything.
    assert_eq!(
        n.send_as(Some(MANAGEMENT), "GET", "/v1/agent/self", None)
            .await
            .status,
        200
    );
    n.shutdown().await;
}

#[tokio::test]
async fn listings_across_namespaces_are_filtered_to_what_the_token_may_see() {
    let n = twin_with_acls().await;
    let a = n
        .send_as(
            Some(MANAGEMENT),
            "PUT",
            "/v1/jobs",
            Some(json!({"Job": sh_job("web", "exec sleep 1000")})),
        )
        .await;
    assert_eq!(a.status, 200, "{}", a.text);
    let all = n
        .send_as(Some(READER), "GET", "/v1/jobs?namespace=*", None)
        .await;
    assert_eq!(all.json().as_array().unwrap().len(), 1);
    // A token with rules only for `prod` sees no job of `default`, and no `default` namespace.
    let filtered = n
        .send_as(Some(PROD_ONLY), "GET", "/v1/jobs?namespace=*", None)
        .await;
    assert_eq!((filtered.status, filtered.json()), (200, json!([])));
    let allocs = n
        .send_as(Some(PROD_ONLY), "GET", "/v1/allocations?namespace=*", None)
        .await;
    assert_eq!((allocs.status, allocs.json()), (200, json!([])));
    assert!(denied(
        &n.send_as(Some(PROD_ONLY), "GET", "/v1/jobs", None).await
    ));
    let namespaces = n
        .send_as(Some(PROD_ONLY), "GET", "/v1/namespaces", None)
        .await;
    assert_eq!((namespaces.status, namespaces.json()), (200, json!([])));
    assert!(denied(
        &n.send_as(Some(PROD_ONLY), "GET", "/v1/namespace/default", None)
            .await
    ));
    let namespaces = n.send_as(Some(READER), "GET", "/v1/namespaces", None).await;
    assert_eq!(namespaces.json()[0]["Name"], "default");
    // `*` with read-job in `default` lists default's allocations.
    let seen = n
        .send_as(Some(DEPLOYER), "GET", "/v1/allocations?namespace=*", None)
        .await;
    assert_eq!(seen.status, 200, "{}", seen.text);
    assert!(!seen.json().as_array().unwrap().is_empty());
    n.shutdown().await;
}

#[tokio::test]
async fn policies_and_tokens_made_through_the_api_take_effect_at_once() {
    let n = twin_with_acls().await;
    let rules = "namespace \"default\" {\n  policy = \"read\"\n  capabilities = [\"alloc-lifecycle\"]\n}\nagent { policy = \"read\" }\n";
    let up = n
        .send_as(
            Some(MANAGEMENT),
            "PUT",
            "/v1/acl/policy/ops",
            Some(json!({"Name": "ops", "Description": "operators", "Rules": rules})),
        )
        .await;
    assert_eq!(up.status, 200, "{}", up.text);
    assert_eq!(up.text, "", "an upsert answers an empty body");
    assert!(up.index() > 0);
    let read = n
        .send_as(Some(MANAGEMENT), "GET", "/v1/acl/policy/ops", None)
        .await
        .json();
    assert_eq!(
        (
            read["Name"].as_str(),
            read["Rules"].as_str(),
            read["Description"].as_str()
        ),
        (Some("ops"), Some(rules), Some("operators"))
    );
    let listed = n
        .send_as(Some(MANAGEMENT), "GET", "/v1/acl/policies", None)
        .await
        .json();
    assert!(
        listed
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["Name"] == "ops" && p.get("Rules").is_none())
    );

    let created = n
        .send_as(
            Some(MANAGEMENT),
            "POST",
            "/v1/acl/token",
            Some(json!({"Name": "ops-token", "Type": "client", "Policies": ["ops"]})),
        )
        .await;
    assert_eq!(created.status, 200, "{}", created.text);
    let token = created.json();
    let secret = token["SecretID"].as_str().unwrap().to_string();
    assert_eq!(token["Type"], "client");
    assert_eq!(token["Policies"], json!(["ops"]));
    assert_eq!(
        n.send_as(Some(&secret), "GET", "/v1/agent/self", None)
            .await
            .status,
        200
    );
    assert!(denied(
        &n.send_as(
            Some(&secret),
            "PUT",
            "/v1/jobs",
            Some(json!({"Job": sh_job("x", "true")}))
        )
        .await
    ));
    let me = n
        .send_as(Some(&secret), "GET", "/v1/acl/token/self", None)
        .await
        .json();
    assert_eq!(me["AccessorID"], token["AccessorID"]);
    // Token listings carry no secrets.
    let list = n
        .send_as(Some(MANAGEMENT), "GET", "/v1/acl/tokens", None)
        .await;
    for sentinel in [secret.as_str(), DEPLOYER, MANAGEMENT] {
        assert!(!list.text.contains(sentinel), "a token list leaks a secret");
    }
    // Deleting the policy takes its grants away from the token.
    let del = n
        .send_as(Some(MANAGEMENT), "DELETE", "/v1/acl/policy/ops", None)
        .await;
    assert_eq!(del.status, 200);
    assert!(denied(
        &n.send_as(Some(&secret), "GET", "/v1/agent/self", None)
            .await
    ));
    let gone = n
        .send_as(Some(MANAGEMENT), "GET", "/v1/acl/policy/ops", None)
        .await;
    assert_eq!(
        (gone.status, gone.text.as_str()),
        (404, "ACL policy not found")
    );
    n.shutdown().await;
}

#[tokio::test]
async fn the_acl_endpoints_refuse_like_nomad() {
    let n = twin_with_acls().await;
    let mismatch = n
        .send_as(
            Some(MANAGEMENT),
            "PUT",
            "/v1/acl/policy/ops",
            Some(json!({"Name": "other", "Rules": ""})),
        )
        .await;
    assert_eq!(
        (mismatch.status, mismatch.text.as_str()),
        (400, "ACL policy name does not match request path")
    );
    let bad = n
        .send_as(
            Some(MANAGEMENT),
            "PUT",
            "/v1/acl/policy/bad",
            Some(json!({"Name": "bad", "Rules": "namespace \"default\" { policy = \"admin\" }"})),
        )
        .await;
    assert_eq!(bad.status, 500);
    assert!(
        bad.text
            .contains("failed to parse rules: Invalid namespace policy"),
        "{}",
        bad.text
    );
    let name = n
        .send_as(
            Some(MANAGEMENT),
            "PUT",
            "/v1/acl/policy/no_underscores",
            Some(json!({"Name": "no_underscores", "Rules": ""})),
        )
        .await;
    assert_eq!(name.status, 500);
    assert!(
        name.text.contains("invalid name 'no_underscores'"),
        "{}",
        name.text
    );
    let no_policies = n
        .send_as(
            Some(MANAGEMENT),
            "POST",
            "/v1/acl/token",
            Some(json!({"Name": "t", "Type": "client"})),
        )
        .await;
    assert_eq!(no_policies.status, 500);
    assert!(
        no_policies.text.contains("client token missing policies"),
        "{}",
        no_policies.text
    );
    let kind = n
        .send_as(
            Some(MANAGEMENT),
            "POST",
            "/v1/acl/token",
            Some(json!({"Name": "t", "Type": "root", "Policies": ["x"]})),
        )
        .await;
    assert!(
        kind.text
            .contains("token type must be client or management"),
        "{}",
        kind.text
    );
    assert!(denied(
        &n.send_as(
            Some(READER),
            "POST",
            "/v1/acl/token",
            Some(json!({"Name": "t", "Type": "management"}))
        )
        .await
    ));
    n.shutdown().await;
}

#[tokio::test]
async fn a_seeded_policy_nomad_would_refuse_stops_the_twin_without_naming_the_secret() {
    let sentinel = "SENTINEL-SECRET-9f3b";
    let err = Twin::start(TwinConfig {
        acl_token: Some(MANAGEMENT.into()),
        nomad_acl_tokens: vec![seed(
            "broken",
            sentinel,
            r#"namespace "default" { capabilities = ["fly"] }"#,
        )],
        ..TwinConfig::default()
    })
    .await
    .unwrap_err();
    let text = format!("{err} {err:?}");
    assert!(
        text.contains("Invalid namespace capability 'fly'"),
        "{text}"
    );
    assert!(text.contains("broken"), "{text}");
    assert!(
        !text.contains(sentinel),
        "the error names the token's secret: {text}"
    );
}

#[tokio::test]
async fn policies_and_tokens_made_through_the_api_survive_a_restart_on_the_same_data_dir() {
    let dir = tempfile::tempdir().unwrap();
    let config = TwinConfig {
        acl_token: Some(MANAGEMENT.into()),
        data_dir: Some(dir.path().to_path_buf()),
        ..TwinConfig::default()
    };
    let n = Nomad::start_with(config.clone()).await;
    let up = n
        .send(
            "PUT",
            "/v1/acl/policy/readers",
            Some(
                json!({"Name": "readers", "Rules": "namespace \"default\" { policy = \"read\" }"}),
            ),
        )
        .await;
    assert_eq!(up.status, 200, "{}", up.text);
    let token = n
        .send(
            "POST",
            "/v1/acl/token",
            Some(json!({"Name": "r", "Type": "client", "Policies": ["readers"]})),
        )
        .await
        .json();
    let secret = token["SecretID"].as_str().unwrap().to_string();
    n.shutdown().await;

    let n = Nomad::start_with(config).await;
    assert_eq!(
        n.send_as(Some(&secret), "GET", "/v1/jobs", None)
            .await
            .status,
        200
    );
    assert!(denied(
        &n.send_as(
            Some(&secret),
            "PUT",
            "/v1/jobs",
            Some(json!({"Job": sh_job("x", "true")}))
        )
        .await
    ));
    let tokens = n.get("/v1/acl/tokens").await;
    let management = tokens
        .as_array()
        .unwrap()
        .iter()
        .filter(|t| t["Type"] == "management")
        .count();
    assert_eq!(management, 1, "the bootstrap token is not seeded twice");
    n.shutdown().await;
}
