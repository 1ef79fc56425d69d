//! The operator's shipped policies (`nomad-jobs/acl/consul-operator.hcl`, `nomad-operator.hcl`)
//! against the twin with ACLs on, through the operator's real clients: the calls the operator
//! makes go through, the calls next to them are refused (403 or filtered lists), the whole
//! write set of a rollout and its rollback works under the tokens, and a token without the
//! policy gets a terminal error that names the missing permission.
#![allow(clippy::unwrap_used, clippy::panic)] // tests fail loudly

mod acl_common;

use std::time::Duration;

use acl_common::*;
use proxy_operator::consul::{
    CatalogRegistration, ConsulApi, SessionBehavior, SessionRequest, TxnOp,
};
use proxy_operator::leader::{self, Elector, ElectorConfig, Leadership};
use proxy_operator::nomad::NomadApi;
use proxy_operator::transport::QueryOptions;
use serde_json::json;

const P: &str = "proxy-operator";

fn set(key: &str, value: &str) -> TxnOp {
    TxnOp::Set {
        key: key.to_owned(),
        value: value.as_bytes().to_vec(),
    }
}

fn session(node: &str) -> SessionRequest {
    SessionRequest {
        name: "acl test".into(),
        ttl: Some(Duration::from_secs(15)),
        lock_delay: Some(Duration::from_secs(1)),
        behavior: SessionBehavior::Release,
        node: Some(node.into()),
        checks: Some(Vec::new()),
    }
}

/// Seeds what an administrator would have written: the document, a users key, a key of
/// another application, and a second Consul node.
async fn seed_consul(t: &hashistack_twin::Twin) {
    let root = consul_client(t, ROOT);
    for (key, value) in [
        (format!("{P}/config"), "proxy: traefik"),
        (format!("{P}/secrets/users"), "alice:$apr1$x$y"),
        (format!("{P}/secretsX"), "next to the secrets prefix"),
        ("other-app/config".into(), "not ours"),
    ] {
        assert!(root.kv_put(&key, value.as_bytes(), None).await.unwrap());
    }
    root.catalog_register(&CatalogRegistration {
        node: "node-b".into(),
        address: "10.0.0.2".into(),
        ..Default::default()
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn the_consul_operator_policy_allows_the_operators_calls_and_refuses_the_ones_next_to_them() {
    let t = acl_twin().await;
    seed_consul(&t).await;
    let secret = consul_token(&t, "proxy-operator", &policy("consul-operator.hcl")).await;
    let op = consul_client(&t, &secret);

    // Allowed: learn the node, read the document and the users key, lead, write its tree.
    let node = op.agent_self().await.unwrap().config.node_name;
    let (doc, _) = op
        .kv_get(&format!("{P}/config"), QueryOptions::NOW)
        .await
        .unwrap();
    assert_eq!(doc.unwrap().value, b"proxy: traefik");
    let (users, _) = op
        .kv_get(&format!("{P}/secrets/users"), QueryOptions::NOW)
        .await
        .unwrap();
    assert!(users.is_some());
    let sid = op.session_create(&session(&node)).await.unwrap();
    assert!(
        op.kv_acquire(&format!("{P}/leader"), b"{}", &sid)
            .await
            .unwrap()
    );
    assert!(op.session_renew(&sid).await.is_ok());
    let fence = leader::Fence::new(format!("{P}/leader"), sid.clone());
    fence
        .txn(
            &op,
            vec![
                set(&format!("{P}/status"), "{}"),
                set(&format!("{P}/rollout"), "{}"),
                set(&format!("{P}/traefik/http/middlewares/m/headers/x"), "1"),
                set(&format!("{P}/revisions/1"), "{}"),
            ],
        )
        .await
        .unwrap();
    let (tree, _) = op
        .kv_list(&format!("{P}/traefik/"), QueryOptions::NOW)
        .await
        .unwrap();
    assert_eq!(tree.len(), 1);
    // Catalog and health reads (Caddy's routes, the health gate).
    op.catalog_services(QueryOptions::NOW).await.unwrap();
    op.health_service("web", false, QueryOptions::NOW)
        .await
        .unwrap();

    // Refused next to them. Each 403 is terminal and names the permission and the key.
    let refused = |e: proxy_operator::consul::Error, permission: &str, key: &str| {
        let text = e.to_string();
        assert!(e.is_forbidden() && !e.is_retryable(), "{text}");
        assert!(
            text.contains(&format!("lacks permission '{permission}' on \"{key}\"")),
            "{text}"
        );
        assert!(
            !text.contains(&secret),
            "the token never reaches an error: {text}"
        );
    };
    // The document is read only: whoever writes it chooses the proxy.
    let config = format!("{P}/config");
    refused(
        op.kv_put(&config, b"x", None).await.unwrap_err(),
        "key:write",
        &config,
    );
    // A fenced transaction that touches the document is refused whole: nothing else lands.
    let e = fence
        .txn(
            &op,
            vec![set(&format!("{P}/status"), "changed"), set(&config, "x")],
        )
        .await
        .unwrap_err();
    assert!(e.is_forbidden(), "{e}");
    assert!(
        !e.is_deposed() && !e.is_conflict() && !e.is_retryable(),
        "{e}"
    );
    assert!(
        e.to_string()
            .contains(&format!("lacks permission 'key:write' on \"{config}\"")),
        "{e}"
    );
    let (status, _) = op
        .kv_get(&format!("{P}/status"), QueryOptions::NOW)
        .await
        .unwrap();
    assert_eq!(status.unwrap().value, b"{}");
    // The users key is read only; the key next to the secrets prefix is not readable.
    let users = format!("{P}/secrets/users");
    refused(
        op.kv_put(&users, b"x", None).await.unwrap_err(),
        "key:write",
        &users,
    );
    let next = format!("{P}/secretsX");
    refused(
        op.kv_get(&next, QueryOptions::NOW).await.unwrap_err(),
        "key:read",
        &next,
    );
    // `key` rules are exact: a key that only starts like the status key is not writable.
    let status_x = format!("{P}/status-old");
    refused(
        op.kv_put(&status_x, b"x", None).await.unwrap_err(),
        "key:write",
        &status_x,
    );
    // Another application's tree.
    refused(
        op.kv_get("other-app/config", QueryOptions::NOW)
            .await
            .unwrap_err(),
        "key:read",
        "other-app/config",
    );
    refused(
        op.kv_put("other-app/config", b"x", None).await.unwrap_err(),
        "key:write",
        "other-app/config",
    );
    // The catalog is read only.
    let e = op
        .catalog_register(&CatalogRegistration {
            node: "node-c".into(),
            address: "10.0.0.3".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    refused(e, "node:write", "node-c");
    // A listing of the whole store is filtered to what the token may read, and says so.
    let (s, body, filtered) = consul_raw(&t, &secret, "GET", "/v1/kv/?recurse", None).await;
    assert_eq!(s, 200);
    let keys: Vec<String> = serde_json::from_str::<serde_json::Value>(&body)
        .unwrap()
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["Key"].as_str().unwrap().to_owned())
        .collect();
    assert!(keys.contains(&format!("{P}/config")), "{keys:?}");
    assert!(
        !keys
            .iter()
            .any(|k| k.starts_with("other-app/") || k == &next),
        "{keys:?}"
    );
    assert_eq!(filtered.as_deref(), Some("true"));
    // ACL administration.
    let (s, text, _) = consul_raw(&t, &secret, "GET", "/v1/acl/policies", None).await;
    assert_eq!(s, 403, "{text}");
    t.shutdown().await;
}

#[tokio::test]
async fn the_consul_operator_policy_lets_sessions_be_made_on_any_registered_node_only() {
    // `session_prefix ""`: a system job runs one replica per node with one policy, so the
    // policy cannot name the node. A session still needs a node Consul knows.
    let t = acl_twin().await;
    seed_consul(&t).await;
    let secret = consul_token(&t, "proxy-operator", &policy("consul-operator.hcl")).await;
    let op = consul_client(&t, &secret);
    let own = op.agent_self().await.unwrap().config.node_name;
    op.session_create(&session(&own)).await.unwrap();
    op.session_create(&session("node-b")).await.unwrap();
    let e = op
        .session_create(&session("no-such-node"))
        .await
        .unwrap_err();
    assert!(
        !e.is_forbidden(),
        "an unknown node is not an ACL matter: {e}"
    );
    // A narrowed per-node policy (the alternative the policy file documents) refuses the
    // other node with the permission named.
    let narrow = policy("consul-operator.hcl")
        .replace("session_prefix \"\" {", &format!("session \"{own}\" {{"));
    assert_ne!(
        narrow,
        policy("consul-operator.hcl"),
        "the rule to narrow is in the file"
    );
    let narrow = consul_client(&t, &consul_token(&t, "per-node", &narrow).await);
    narrow.session_create(&session(&own)).await.unwrap();
    let e = narrow.session_create(&session("node-b")).await.unwrap_err();
    assert!(e.is_forbidden(), "{e}");
    assert!(
        e.to_string()
            .contains("lacks permission 'session:write' on \"node-b\""),
        "{e}"
    );
    t.shutdown().await;
}

#[tokio::test]
async fn the_nomad_operator_policy_allows_the_proxy_job_in_its_namespace_and_nothing_next_to_it() {
    let t = acl_twin().await;
    let op = nomad_client(&t, NOMAD_OPERATOR, None);
    let job = proxy_job("traefik", "default", "d1");

    // Allowed: plan, register (EnforceIndex), read, versions, allocations, deployment,
    // services, nodes.
    op.job_plan(&job, true).await.unwrap();
    let written = op.job_register(&job, Some(0)).await.unwrap();
    let (read, _) = op.job_read("traefik", QueryOptions::NOW).await.unwrap();
    assert_eq!(read.unwrap().job_modify_index, written.job_modify_index);
    assert_eq!(
        op.job_versions("traefik", false)
            .await
            .unwrap()
            .versions
            .len(),
        1
    );
    op.job_allocations("traefik", QueryOptions::NOW)
        .await
        .unwrap();
    op.job_latest_deployment("traefik", QueryOptions::NOW)
        .await
        .unwrap();
    op.services(QueryOptions::NOW).await.unwrap();
    let (s, text) = nomad_raw(&t, NOMAD_OPERATOR, "GET", "/v1/nodes", None).await;
    assert_eq!(s, 200, "the health gate reads nodes: {text}");

    // Refused next to it: another namespace (read and register), node writes, the agent,
    // allocation lifecycle, ACL administration. Nomad's text is "Permission denied".
    let prod = nomad_client(&t, NOMAD_OPERATOR, Some("prod"));
    for e in [
        prod.job_register(&proxy_job("traefik", "prod", "d1"), Some(0))
            .await
            .unwrap_err(),
        prod.job_read("traefik", QueryOptions::NOW)
            .await
            .unwrap_err(),
    ] {
        assert!(e.is_forbidden() && !e.is_retryable(), "{e}");
        assert!(e.to_string().contains("Permission denied"), "{e}");
        assert!(!e.to_string().contains(NOMAD_OPERATOR), "{e}");
    }
    let (_, nodes) = nomad_raw(&t, NOMAD_OPERATOR, "GET", "/v1/nodes", None).await;
    let node: serde_json::Value = serde_json::from_str(&nodes).unwrap();
    let node = node[0]["ID"].as_str().unwrap();
    let (_, allocs) = nomad_raw(&t, ROOT, "GET", "/v1/job/traefik/allocations", None).await;
    let allocs: serde_json::Value = serde_json::from_str(&allocs).unwrap();
    let alloc = allocs[0]["ID"].as_str().unwrap().to_owned();
    for (method, path, body) in [
        (
            "PUT",
            format!("/v1/node/{node}/drain"),
            Some(json!({"DrainSpec": {"Deadline": 0}})),
        ),
        (
            "PUT",
            format!("/v1/node/{node}/eligibility"),
            Some(json!({"Eligibility": "ineligible"})),
        ),
        ("GET", "/v1/agent/self".to_owned(), None),
        ("POST", format!("/v1/allocation/{alloc}/stop"), None),
        ("GET", "/v1/acl/policies".to_owned(), None),
        ("GET", "/v1/jobs?namespace=prod".to_owned(), None),
    ] {
        let (s, text) = nomad_raw(&t, NOMAD_OPERATOR, method, &path, body).await;
        assert_eq!(
            (s, text.as_str()),
            (403, "Permission denied"),
            "{method} {path}"
        );
    }
    t.shutdown().await;
}

/// The write set of one rollout and its rollback, call for call as the loop makes them
/// (`reconcile::write_status`, `write_kv`, `execute`), under the shipped policies: the loop
/// itself is not yet wired to leader election, so its writes are emulated here with the real
/// clients, fenced by a real elector's term.
#[tokio::test]
async fn a_rollout_and_its_rollback_need_nothing_beyond_the_shipped_policies() {
    let t = acl_twin().await;
    seed_consul(&t).await;
    let secret = consul_token(&t, "proxy-operator", &policy("consul-operator.hcl")).await;
    let consul = consul_client(&t, &secret);
    let nomad = nomad_client(&t, NOMAD_OPERATOR, None);

    // Lead, with the same token.
    let node = consul.agent_self().await.unwrap().config.node_name;
    let config = ElectorConfig {
        ttl: Duration::from_secs(10),
        ..ElectorConfig::new(P, node)
    };
    let handle = Elector::spawn(consul_client(&t, &secret), config);
    let mut rx = handle.subscribe();
    let term = tokio::time::timeout(Duration::from_secs(5), leader::wait_for_leadership(&mut rx))
        .await
        .unwrap()
        .unwrap();
    let fence = term.fence();
    let status = format!("{P}/status");
    let journal = format!("{P}/rollout");
    let tree = format!("{P}/traefik/");
    let key = |k: &str| format!("{tree}{k}");

    // Observe: the document, the job, the tree, the status index.
    consul
        .kv_get(&format!("{P}/config"), QueryOptions::NOW)
        .await
        .unwrap();
    assert!(
        nomad
            .job_read("traefik", QueryOptions::NOW)
            .await
            .unwrap()
            .0
            .is_none()
    );
    consul.kv_list(&tree, QueryOptions::NOW).await.unwrap();
    assert!(
        consul
            .kv_get(&status, QueryOptions::NOW)
            .await
            .unwrap()
            .0
            .is_none()
    );

    // Rollout 1 (a new job): journal first (with a status CAS on a missing key), then the
    // policy tree, then the job, then status + journal removal.
    let r = fence
        .txn(
            &consul,
            vec![
                TxnOp::Cas {
                    key: status.clone(),
                    value: b"{\"phase\":\"Applying\"}".to_vec(),
                    index: 0,
                },
                set(&journal, "{\"stage\":\"kv\"}"),
            ],
        )
        .await
        .unwrap();
    let mut status_index = r
        .results
        .iter()
        .find(|p| p.key == status)
        .unwrap()
        .modify_index;
    fence
        .txn(
            &consul,
            vec![
                set(&key("http/middlewares/p/headers/x"), "v1"),
                set(&key("http/routers/r/rule"), "Host(`a`)"),
            ],
        )
        .await
        .unwrap();
    let v0 = nomad
        .job_register(&proxy_job("traefik", "default", "d1"), Some(0))
        .await
        .unwrap();
    nomad
        .job_allocations("traefik", QueryOptions::NOW)
        .await
        .unwrap();
    nomad
        .job_latest_deployment("traefik", QueryOptions::NOW)
        .await
        .unwrap();
    let r = fence
        .txn(
            &consul,
            vec![
                TxnOp::Cas {
                    key: status.clone(),
                    value: b"{\"phase\":\"Ready\"}".to_vec(),
                    index: status_index,
                },
                TxnOp::Delete {
                    key: journal.clone(),
                },
                set(&format!("{P}/revisions/1"), "{}"),
            ],
        )
        .await
        .unwrap();
    status_index = r
        .results
        .iter()
        .find(|p| p.key == status)
        .unwrap()
        .modify_index;

    // Rollout 2 fails its gate and is rolled back: a large change rewrites the whole tree
    // (delete-tree + sets), the job is registered with EnforceIndex, then reverted with
    // EnforcePriorVersion and the previous tree restored.
    let mut rewrite = vec![TxnOp::DeleteTree { key: tree.clone() }];
    rewrite.push(set(&key("http/middlewares/p/headers/x"), "v2"));
    fence.txn(&consul, rewrite).await.unwrap();
    let v1 = nomad
        .job_register(
            &proxy_job("traefik", "default", "d2"),
            Some(v0.job_modify_index),
        )
        .await
        .unwrap();
    let stale = nomad
        .job_register(
            &proxy_job("traefik", "default", "d3"),
            Some(v0.job_modify_index),
        )
        .await
        .unwrap_err();
    assert!(
        !stale.is_forbidden(),
        "a stale index is a conflict, not an ACL matter: {stale}"
    );
    let versions = nomad.job_versions("traefik", true).await.unwrap();
    assert_eq!(versions.versions[0].version, 1);
    assert!(v1.job_modify_index > v0.job_modify_index);
    nomad.job_revert("traefik", 0, Some(1)).await.unwrap();
    fence
        .txn(
            &consul,
            vec![
                TxnOp::DeleteTree { key: tree.clone() },
                set(&key("http/middlewares/p/headers/x"), "v1"),
                set(&key("http/routers/r/rule"), "Host(`a`)"),
                TxnOp::Cas {
                    key: status.clone(),
                    value: b"{\"phase\":\"RolledBack\"}".to_vec(),
                    index: status_index,
                },
                TxnOp::Delete {
                    key: journal.clone(),
                },
            ],
        )
        .await
        .unwrap();

    // What the management token sees: the reverted job, the restored tree, the status.
    let (job, _) = nomad_client(&t, ROOT, None)
        .job_read("traefik", QueryOptions::NOW)
        .await
        .unwrap();
    let job = job.unwrap();
    assert_eq!(
        (
            job.version,
            job.meta
                .get("proxy-operator/spec-digest")
                .map(String::as_str)
        ),
        (2, Some("d1"))
    );
    let root = consul_client(&t, ROOT);
    let (pairs, _) = root.kv_list(&tree, QueryOptions::NOW).await.unwrap();
    assert_eq!(pairs.len(), 2);
    let (s, _) = root.kv_get(&status, QueryOptions::NOW).await.unwrap();
    assert_eq!(s.unwrap().value, b"{\"phase\":\"RolledBack\"}");
    assert!(
        matches!(*rx.borrow(), Leadership::Leader(_)),
        "the term survived the whole set"
    );
    handle.shutdown().await;
    t.shutdown().await;
}

#[tokio::test]
async fn tokens_without_the_policies_get_terminal_errors_that_name_what_is_missing() {
    const SENTINEL: &str = "sentinel-token-3e9d-never-logged";
    let t = acl_twin().await;
    seed_consul(&t).await;
    // A Consul token whose policy is about another application.
    let other = consul_token(
        &t,
        "other-app",
        "key_prefix \"other-app/\" { policy = \"write\" }",
    )
    .await;
    let consul = consul_client(&t, &other);

    // The elector publishes why it cannot lead: the session permission on the node.
    let handle = Elector::spawn(
        consul_client(&t, &other),
        ElectorConfig {
            ttl: Duration::from_secs(10),
            ..ElectorConfig::new(P, "hashistack-twin")
        },
    );
    let mut rx = handle.subscribe();
    let state = tokio::time::timeout(
        Duration::from_secs(5),
        rx.wait_for(|l| matches!(l, Leadership::Unknown { error: Some(_) })),
    )
    .await
    .unwrap()
    .unwrap()
    .clone();
    let Leadership::Unknown { error: Some(error) } = state else {
        unreachable!()
    };
    assert!(error.contains("403"), "{error}");
    assert!(
        error.contains("lacks permission 'key:read' on \"proxy-operator/leader\"")
            || error.contains("lacks permission 'session:write' on \"hashistack-twin\""),
        "{error}"
    );
    assert!(!error.contains(&other), "{error}");
    handle.shutdown().await;

    // Each fenced write of the set is refused with the permission and key named. Consul
    // answers a denied transaction operation with a rollback (409), not a 403: the fence tells
    // it apart from a lost lock and a CAS conflict, so it is never retried nor taken for a
    // deposition, even when the denied op is the fence itself (no read on the leader key).
    let root = consul_client(&t, ROOT);
    let sid = root
        .session_create(&session("hashistack-twin"))
        .await
        .unwrap();
    assert!(
        root.kv_acquire(&format!("{P}/leader"), b"{}", &sid)
            .await
            .unwrap()
    );
    let fence = leader::Fence::new(format!("{P}/leader"), sid);
    for op in [
        TxnOp::Cas {
            key: format!("{P}/status"),
            value: b"{}".to_vec(),
            index: 0,
        },
        set(&format!("{P}/rollout"), "{}"),
        set(&format!("{P}/traefik/http/routers/r/rule"), "x"),
    ] {
        let e = fence.txn(&consul, vec![op]).await.unwrap_err();
        assert!(e.is_forbidden(), "{e}");
        assert!(
            !e.is_deposed() && !e.is_conflict() && !e.is_retryable(),
            "{e}"
        );
        let text = e.to_string();
        assert!(
            text.contains("lacks permission 'key:read' on \"proxy-operator/leader\""),
            "{text}"
        );
        assert!(
            text.contains("nomad-jobs/acl/consul-operator.hcl"),
            "{text}"
        );
        assert!(!text.contains(&other), "{text}");
    }
    // With read on the leader key only, the write itself is what is named.
    let reader = consul_token(
        &t,
        "leader-reader",
        "key \"proxy-operator/leader\" { policy = \"read\" }",
    )
    .await;
    let e = fence
        .txn(
            &consul_client(&t, &reader),
            vec![set(&format!("{P}/status"), "{}")],
        )
        .await
        .unwrap_err();
    assert!(e.is_forbidden() && !e.is_deposed(), "{e}");
    assert!(
        e.to_string()
            .contains("lacks permission 'key:write' on \"proxy-operator/status\""),
        "{e}"
    );

    // An unknown Consul token: the text says the token is not found, not a permission.
    let e = consul_client(&t, SENTINEL)
        .kv_get(&format!("{P}/config"), QueryOptions::NOW)
        .await
        .unwrap_err();
    assert!(e.is_forbidden() && !e.is_retryable(), "{e}");
    assert!(e.to_string().contains("ACL not found"), "{e}");
    assert!(!e.to_string().contains(SENTINEL), "{e}");

    // Nomad: a token with another policy, and an unknown one. Nomad's own text carries no
    // detail, so the step (register job traefik), the API and the path are what the operator
    // can name.
    let job = proxy_job("traefik", "default", "d1");
    let e = nomad_client(&t, NOMAD_NOTHING, None)
        .job_register(&job, Some(0))
        .await
        .unwrap_err();
    assert!(e.is_forbidden() && !e.is_retryable(), "{e}");
    let text = e.to_string();
    assert!(
        text.contains("register job traefik")
            && text.contains("403")
            && text.contains("Permission denied"),
        "{text}"
    );
    let e = nomad_client(&t, SENTINEL, None)
        .job_read("traefik", QueryOptions::NOW)
        .await
        .unwrap_err();
    assert!(e.is_forbidden() && !e.is_retryable(), "{e}");
    assert!(e.to_string().contains("ACL token not found"), "{e}");
    assert!(!e.to_string().contains(SENTINEL), "{e}");
    t.shutdown().await;
}
