//! Unit tests of the Consul types (against the doc fixtures) and of the fake's semantics.

use std::collections::BTreeMap;
use std::time::Duration;

use super::fake::FakeConsul;
use super::*;
use crate::transport::{QueryOptions, Watch};

fn fixture(name: &str) -> String {
    let path = format!("{}/../fixtures/consul/{name}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn decode<T: serde::de::DeserializeOwned>(name: &str) -> T {
    serde_json::from_str(&fixture(name)).unwrap_or_else(|e| panic!("{name}: {e}"))
}

#[test]
fn every_consul_response_fixture_decodes_into_the_client_types() {
    let kv: Vec<KvPair> = decode("kv-get-response.json");
    assert_eq!(kv[0].value, b"test");
    assert_eq!(kv[0].modify_index, 200);
    assert_eq!(
        kv[0].session.as_deref(),
        Some("adf4238a-882b-9ddc-4a9d-5b6758e4159e")
    );
    let keys: Vec<String> = decode("kv-get-keys-response.json");
    assert_eq!(keys, ["/web/bar", "/web/foo", "/web/subdir/"]);
    assert!(decode::<bool>("kv-put-response.json"));
    assert!(decode::<bool>("kv-delete-response.json"));
    let created: SessionCreated = decode("session-create-response.json");
    assert_eq!(created.id, "adf4238a-882b-9ddc-4a9d-5b6758e4159e");
    assert!(decode::<bool>("session-destroy-response.json"));
    for name in [
        "session-info-response.json",
        "session-list-response.json",
        "session-node-response.json",
        "session-renew-response.json",
    ] {
        let sessions: Vec<SessionEntry> = decode(name);
        assert_eq!(sessions[0].lock_delay, 15_000_000_000, "{name}");
        assert_eq!(sessions[0].behavior, SessionBehavior::Release, "{name}");
    }
    let renewed: Vec<SessionEntry> = decode("session-renew-response.json");
    assert_eq!(renewed[0].ttl(), Some(Duration::from_secs(30)));
    let services: BTreeMap<String, Vec<String>> = decode("catalog-services-response.json");
    assert_eq!(services["postgresql"], ["primary", "secondary"]);
    let rows: Vec<CatalogService> = decode("catalog-service-response.json");
    assert_eq!(rows[0].service_port, 5000);
    assert_eq!(rows[0].effective_address(), "172.17.0.3");
    let health: Vec<ServiceEntry> = decode("health-service-response.json");
    assert_eq!(health[0].service.port, 8000);
    assert_eq!(health[0].checks.len(), 2);
    assert!(health[0].is_passing());
    let checks: Vec<HealthCheck> = decode("health-checks-response.json");
    assert_eq!(checks[0].status, "passing");
    let leader: String = decode("status-leader-response.json");
    assert!(!leader.is_empty());
    let agent: AgentSelf = decode("agent-self-response.json");
    assert_eq!(agent.config.datacenter, "dc1");
}

/// Every key we send must exist in the documented request, with the same JSON type.
fn assert_same_shape(sent: &serde_json::Value, documented: &serde_json::Value, path: &str) {
    use serde_json::Value;
    match (sent, documented) {
        (Value::Object(s), Value::Object(d)) => {
            for (k, v) in s {
                let Some(dv) = d.get(k) else {
                    panic!("{path}.{k} is not in the documented request")
                };
                assert_same_shape(v, dv, &format!("{path}.{k}"));
            }
        }
        (Value::Array(s), Value::Array(d)) => {
            if let (Some(s0), Some(d0)) = (s.first(), d.first()) {
                assert_same_shape(s0, d0, &format!("{path}[0]"));
            }
        }
        (s, d) => assert_eq!(
            std::mem::discriminant(s),
            std::mem::discriminant(d),
            "{path}: {s} vs {d}"
        ),
    }
}

#[test]
fn session_create_body_sends_node_checks_not_the_deprecated_checks_field() {
    let request = SessionRequest {
        name: "my-service-lock".into(),
        ttl: Some(Duration::from_secs(30)),
        lock_delay: Some(Duration::from_secs(15)),
        behavior: SessionBehavior::Release,
        node: Some("foobar".into()),
        checks: Some(vec!["a".into(), "b".into(), "c".into()]),
    };
    let sent = serde_json::to_value(&request).unwrap();
    // The doc sample still uses the deprecated `Checks`, which Consul binds IN ADDITION to the
    // default serfHealth; the same request in the current field is `NodeChecks`.
    let mut documented: serde_json::Value =
        serde_json::from_str(&fixture("session-create-request.json")).unwrap();
    let checks = documented
        .as_object_mut()
        .unwrap()
        .remove("Checks")
        .unwrap();
    documented["NodeChecks"] = checks;
    assert_eq!(sent, documented);
    assert!(sent.get("Checks").is_none());
}

#[test]
fn a_bound_session_create_sends_service_checks_as_id_objects_next_to_the_request() {
    let request = SessionRequest {
        name: "leader".into(),
        ttl: Some(Duration::from_secs(15)),
        checks: Some(Vec::new()),
        ..Default::default()
    };
    let body = SessionCreateBody {
        request: &request,
        service_checks: vec![ServiceCheckRef {
            id: "_nomad-check-1",
        }],
    };
    let sent = serde_json::to_value(&body).unwrap();
    assert_eq!(
        sent["ServiceChecks"],
        serde_json::json!([{"ID": "_nomad-check-1"}])
    );
    assert_eq!(sent["NodeChecks"], serde_json::json!([]));
    assert_eq!(sent["TTL"], "15s");
    let unbound = SessionCreateBody {
        request: &request,
        service_checks: Vec::new(),
    };
    let sent = serde_json::to_value(&unbound).unwrap();
    assert!(sent.get("ServiceChecks").is_none(), "{sent}");
    assert_eq!(sent, serde_json::to_value(&request).unwrap());
}

#[test]
fn catalog_register_body_round_trips_the_documented_request() {
    let documented: serde_json::Value =
        serde_json::from_str(&fixture("catalog-register-request.json")).unwrap();
    let reg: CatalogRegistration = serde_json::from_value(documented.clone()).unwrap();
    assert_eq!(reg.service.as_ref().map(|s| s.port), Some(8000));
    let sent = serde_json::to_value(&reg).unwrap();
    assert_same_shape(&sent, &documented, "$");
    assert_eq!(sent, documented);
}

#[test]
fn txn_operations_serialize_as_documented_kv_verbs() {
    let ops = vec![
        TxnOp::CheckSession {
            key: "p/leader".into(),
            session: "s1".into(),
        },
        TxnOp::Cas {
            key: "p/status".into(),
            value: b"test".to_vec(),
            index: 7,
        },
        TxnOp::DeleteTree {
            key: "p/traefik/".into(),
        },
    ];
    let sent = serde_json::to_value(&ops).unwrap();
    assert_eq!(
        sent,
        serde_json::json!([
            {"KV": {"Verb": "check-session", "Key": "p/leader", "Session": "s1"}},
            {"KV": {"Verb": "cas", "Key": "p/status", "Value": "dGVzdA==", "Index": 7}},
            {"KV": {"Verb": "delete-tree", "Key": "p/traefik/"}}
        ])
    );
}

#[tokio::test]
async fn fake_cas_write_succeeds_only_at_the_current_index() {
    let c = FakeConsul::new();
    assert!(
        c.kv_put("k", b"v1", Some(0)).await.unwrap(),
        "cas=0 creates an absent key"
    );
    assert!(
        !c.kv_put("k", b"v2", Some(0)).await.unwrap(),
        "cas=0 refuses an existing key"
    );
    let (pair, _) = c.kv_get("k", QueryOptions::NOW).await.unwrap();
    let index = pair.unwrap().modify_index;
    assert!(!c.kv_put("k", b"v2", Some(index + 100)).await.unwrap());
    assert!(c.kv_put("k", b"v2", Some(index)).await.unwrap());
    assert_eq!(c.value("k").unwrap(), b"v2");
    assert!(!c.kv_delete("k", Some(index)).await.unwrap(), "stale index");
    let now = c.entry("k").unwrap().modify_index;
    assert!(c.kv_delete("k", Some(now)).await.unwrap());
    assert!(c.entry("k").is_none());
}

#[tokio::test]
async fn fake_txn_is_all_or_nothing_and_fenced_by_check_session() {
    let c = FakeConsul::new();
    let s = c
        .session_create(&SessionRequest {
            name: "leader".into(),
            ttl: Some(Duration::from_secs(15)),
            ..Default::default()
        })
        .await
        .unwrap();
    assert!(c.kv_acquire("p/leader", b"me", &s).await.unwrap());
    let ok = c
        .txn(vec![
            TxnOp::CheckSession {
                key: "p/leader".into(),
                session: s.clone(),
            },
            TxnOp::Set {
                key: "p/status".into(),
                value: b"one".to_vec(),
            },
        ])
        .await
        .unwrap();
    // Consul answers one entry per check and per write, values left out.
    assert_eq!(ok.results.len(), 2);
    assert!(ok.results.iter().all(|r| r.value.is_empty()));
    assert_eq!(c.value("p/status").unwrap(), b"one");

    let err = c
        .txn(vec![
            TxnOp::Set {
                key: "p/other".into(),
                value: b"x".to_vec(),
            },
            TxnOp::CheckSession {
                key: "p/leader".into(),
                session: "not-the-holder".into(),
            },
            TxnOp::Set {
                key: "p/status".into(),
                value: b"two".to_vec(),
            },
        ])
        .await
        .unwrap_err();
    assert!(err.is_conflict() && !err.is_retryable(), "{err}");
    let Error::TxnRolledBack { errors } = err else {
        unreachable!()
    };
    assert_eq!(errors[0].op_index, 1);
    assert_eq!(c.value("p/status").unwrap(), b"one", "nothing written");
    assert!(c.entry("p/other").is_none(), "nothing written");
}

#[tokio::test(start_paused = true)]
async fn fake_session_expiry_releases_the_lock_and_starts_lock_delay() {
    let c = FakeConsul::new();
    let req = SessionRequest {
        name: "leader".into(),
        ttl: Some(Duration::from_secs(10)),
        lock_delay: Some(Duration::from_secs(15)),
        ..Default::default()
    };
    let s = c.session_create(&req).await.unwrap();
    assert!(c.kv_acquire("lock", b"a", &s).await.unwrap());
    let index = c.entry("lock").unwrap().modify_index;
    // A blocking watcher wakes up when the TTL expires and the lock is released.
    let (pair, meta) = c
        .kv_get(
            "lock",
            QueryOptions::blocking(index, Duration::from_secs(60)),
        )
        .await
        .unwrap();
    assert!(meta.index > index);
    assert_eq!(pair.unwrap().session, None);
    assert!(matches!(
        c.session_renew(&s).await,
        Err(Error::SessionNotFound { .. })
    ));
    let s2 = c.session_create(&req).await.unwrap();
    assert!(
        !c.kv_acquire("lock", b"b", &s2).await.unwrap(),
        "lock-delay holds"
    );
    tokio::time::advance(Duration::from_secs(8)).await;
    c.session_renew(&s2).await.unwrap();
    tokio::time::advance(Duration::from_secs(8)).await;
    assert!(c.kv_acquire("lock", b"b", &s2).await.unwrap());
}

#[tokio::test]
async fn fake_renew_reports_a_longer_ttl_the_server_chose() {
    let c = FakeConsul::new();
    let s = c
        .session_create(&SessionRequest {
            name: "x".into(),
            ttl: Some(Duration::from_secs(15)),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(
        c.session_renew(&s).await.unwrap(),
        Some(Duration::from_secs(15))
    );
    c.set_renew_ttl(Duration::from_secs(60));
    assert_eq!(
        c.session_renew(&s).await.unwrap(),
        Some(Duration::from_secs(60))
    );
}

#[tokio::test(start_paused = true)]
async fn fake_blocking_read_waits_for_a_change_or_the_wait() {
    let c = FakeConsul::new();
    let i = c.set("cfg", "a");
    let start = tokio::time::Instant::now();
    let (_, meta) = c
        .kv_get("cfg", QueryOptions::blocking(i, Duration::from_secs(30)))
        .await
        .unwrap();
    assert_eq!(meta.index, i, "timeout returns the same index");
    assert_eq!(start.elapsed(), Duration::from_secs(30));
    let writer = c.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_secs(3)).await;
        writer.set("cfg", "b");
    });
    let mut watch = Watch::new(Duration::from_secs(60));
    let first = watch.next(|q| c.kv_get("cfg", q)).await.unwrap();
    assert_eq!(first.value.unwrap().value, b"a");
    let second = watch.changed(|q| c.kv_get("cfg", q)).await.unwrap();
    assert_eq!(second.value.unwrap().value, b"b");
    assert_eq!(
        c.calls_of("kv_get").len(),
        3,
        "no polling while nothing changes"
    );
}

#[tokio::test]
async fn fake_injected_errors_fail_the_next_call_once() {
    let c = FakeConsul::new();
    c.fail_next(
        "kv_put",
        Error::injected("write KV key x", 503, "unavailable"),
    );
    let err = c.kv_put("x", b"1", None).await.unwrap_err();
    assert!(err.is_retryable());
    assert!(c.kv_put("x", b"1", None).await.unwrap());
    assert_eq!(c.calls_of("kv_put").len(), 2);
}

#[tokio::test]
async fn fake_catalog_and_health_reflect_registrations_and_check_status() {
    let c = FakeConsul::new();
    let reg: CatalogRegistration =
        serde_json::from_str(&fixture("catalog-register-request.json")).unwrap();
    c.catalog_register(&reg).await.unwrap();
    let (services, _) = c.catalog_services(QueryOptions::NOW).await.unwrap();
    assert_eq!(services["redis"], ["primary", "v1"]);
    let (passing, _) = c
        .health_service("redis", true, QueryOptions::NOW)
        .await
        .unwrap();
    assert_eq!(passing.len(), 1);
    c.set_check_status("redis1", "critical");
    let (passing, _) = c
        .health_service("redis", true, QueryOptions::NOW)
        .await
        .unwrap();
    assert!(passing.is_empty());
    let (all, _) = c
        .health_service("redis", false, QueryOptions::NOW)
        .await
        .unwrap();
    assert_eq!(all.len(), 1);
    c.catalog_deregister("t2.320", Some("redis1"))
        .await
        .unwrap();
    let (rows, _) = c.catalog_service("redis", QueryOptions::NOW).await.unwrap();
    assert!(rows.is_empty());
}

#[tokio::test]
async fn fake_keys_with_separator_fold_subdirectories() {
    let c = FakeConsul::new();
    for k in ["web/bar", "web/foo", "web/subdir/a", "web/subdir/b"] {
        c.set(k, "x");
    }
    let (keys, _) = c
        .kv_keys("web/", Some("/"), QueryOptions::NOW)
        .await
        .unwrap();
    assert_eq!(keys, ["web/bar", "web/foo", "web/subdir/"]);
    let (pairs, _) = c.kv_list("web/subdir/", QueryOptions::NOW).await.unwrap();
    assert_eq!(pairs.len(), 2);
}

#[test]
fn operator_prefixes_consul_would_refuse_are_rejected_naming_the_flag() {
    for ok in ["proxy-operator", "team/edge", "a.b_c-d"] {
        assert!(validate_kv_prefix(ok).is_ok(), "{ok}");
    }
    for bad in ["", "/proxy", "proxy/", "a/../b", "..", "a//b", " p", "p "] {
        let err = validate_kv_prefix(bad).unwrap_err();
        assert!(matches!(err, Error::InvalidKey { .. }), "{bad:?}");
        assert!(err.to_string().contains("--prefix"), "{err}");
    }
}

#[test]
fn kv_values_never_show_in_debug_output_only_length_and_digest() {
    const HASH: &str = "alice:$apr1$SENTINEL$Xq0bJ7yH1cJzYVw8mQ0bK/";
    let pair = KvPair {
        key: "p/traefik/http/middlewares/ba/basicAuth/users/0".into(),
        value: HASH.as_bytes().to_vec(),
        ..KvPair::default()
    };
    let shown = format!("{pair:?} {pair:#?}");
    assert!(!shown.contains("SENTINEL"), "{shown}");
    assert!(
        shown.contains(&format!("<{} bytes, sha256:", HASH.len())),
        "{shown}"
    );
    assert!(
        shown.contains("basicAuth/users/0"),
        "keys stay readable: {shown}"
    );
    let other = KvPair {
        value: b"bob:$apr1$other".to_vec(),
        ..pair.clone()
    };
    assert_ne!(
        format!("{pair:?}"),
        format!("{other:?}"),
        "values stay distinguishable"
    );

    let value = HASH.as_bytes().to_vec();
    let ops = vec![
        TxnOp::Set {
            key: "k".into(),
            value: value.clone(),
        },
        TxnOp::Cas {
            key: "k".into(),
            value: value.clone(),
            index: 7,
        },
        TxnOp::Lock {
            key: "k".into(),
            value: value.clone(),
            session: "s1".into(),
        },
        TxnOp::Unlock {
            key: "k".into(),
            value,
            session: "s1".into(),
        },
        TxnOp::CheckIndex {
            key: "k".into(),
            index: 7,
        },
    ];
    let shown = format!("{ops:?} {ops:#?}");
    assert!(!shown.contains("SENTINEL"), "{shown}");
    assert!(
        shown.contains("index: 7") && shown.contains("\"s1\""),
        "{shown}"
    );
    let results = TxnResults {
        results: vec![pair],
    };
    assert!(!format!("{results:?}").contains("SENTINEL"));
}

#[tokio::test]
async fn fake_answers_with_the_twin_stores_rules_and_error_texts() {
    let c = FakeConsul::new();
    let err = c
        .session_create(&SessionRequest {
            name: "short".into(),
            ttl: Some(Duration::from_secs(5)),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.status(), Some(500), "{err}");
    assert!(err.to_string().contains("Invalid Session TTL"), "{err}");
    let err = c
        .session_create(&SessionRequest {
            name: "elsewhere".into(),
            node: Some("no-such-node".into()),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("Missing node registration"),
        "{err}"
    );
    let huge = vec![b'x'; 512 * 1024 + 1];
    let err = c.kv_put("p/status", &huge, None).await.unwrap_err();
    assert_eq!(err.status(), Some(413), "{err}");
    assert!(!err.is_retryable(), "an oversized value never fits: {err}");
    assert!(c.value("p/status").is_none(), "nothing written");
}

/// The body Consul answers a rolled-back `/v1/txn` with (status 409): `Results` null, one
/// `Errors` entry per failed operation with the server's text.
fn rolled_back_with(whats: &[&str]) -> Error {
    let errors: Vec<_> = whats
        .iter()
        .enumerate()
        .map(|(i, what)| serde_json::json!({"OpIndex": i, "What": what}))
        .collect();
    let body = serde_json::json!({"Results": null, "Errors": errors}).to_string();
    let answer: TxnResponse = serde_json::from_str(&body).unwrap();
    Error::TxnRolledBack {
        errors: answer.errors,
    }
}

#[test]
fn a_transaction_rolled_back_by_consuls_acls_is_forbidden_not_a_conflict() {
    // The texts Txn.preCheck reports per operation: PermissionDeniedError (with and without a
    // token), acl.ErrPermissionDenied, and acl.ErrNotFound for a token Consul does not know.
    for what in [
        "Permission denied: token with AccessorID 'a1b2c3d4-0000-4000-8000-000000000001' lacks permission 'key:write' on \"proxy-operator/status\"",
        "Permission denied: anonymous token lacks permission 'key:write' on \"proxy-operator/status\". The anonymous token is used implicitly when a request does not specify a token.",
        "Permission denied",
        "ACL not found",
    ] {
        let err = rolled_back_with(&[what]);
        assert!(err.is_forbidden(), "{what}");
        assert!(!err.is_conflict() && !err.is_retryable(), "{what}");
        // A denied operation next to a failed check is still a refusal: re-reading the index
        // and trying again would be refused the same way.
        let mixed = rolled_back_with(&["failed to set key \"p/status\", index is stale", what]);
        assert!(mixed.is_forbidden() && !mixed.is_conflict(), "{what}");
    }
}

#[test]
fn a_transaction_rolled_back_by_a_failed_check_is_a_conflict_not_forbidden() {
    for what in [
        "failed to set key \"p/status\", index is stale",
        "failed session check for key \"p/leader\", current session \"s2\" != \"s1\"",
        "failed to check session, key \"p/leader\" doesn't exist",
        "failed to lock key \"p/leader\", lock is already held",
    ] {
        let err = rolled_back_with(&[what]);
        assert!(err.is_conflict(), "{what}");
        assert!(!err.is_forbidden() && !err.is_retryable(), "{what}");
    }
}
