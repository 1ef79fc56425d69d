//! The Consul client against the twin: every call, CAS and transaction conflicts, session
//! expiry, blocking watches, retries and ACL denial.
#![allow(clippy::unwrap_used, clippy::panic)] // tests fail loudly

mod client_support;

use std::time::Duration;

use client_support::{config, twin};
use hashistack_twin::{Api as TwinApi, Twin};
use proxy_operator::consul::{
    CatalogRegistration, CheckRegistration, ConsulApi, ConsulClient, Error, ServiceRegistration,
    SessionBehavior, SessionRequest, TxnOp,
};
use proxy_operator::transport::{Api, ClientConfig, QueryOptions, RetryPolicy, Watch};

fn client(twin: &Twin, token: Option<&str>) -> ConsulClient {
    ConsulClient::new(&config(Api::Consul, twin.consul_addr(), token)).unwrap()
}

fn session(name: &str, ttl: u64) -> SessionRequest {
    SessionRequest {
        name: name.into(),
        ttl: Some(Duration::from_secs(ttl)),
        lock_delay: Some(Duration::from_secs(15)),
        behavior: SessionBehavior::Release,
        node: None,
        checks: Some(Vec::new()),
    }
}

#[tokio::test]
async fn kv_round_trips_bytes_and_lists_keys_and_prefixes() {
    let t = twin(None).await;
    let c = client(&t, None);
    assert_eq!(
        c.kv_get("proxy-operator/config", QueryOptions::NOW)
            .await
            .unwrap()
            .0,
        None,
        "absent key is None, not an error"
    );
    assert!(
        c.kv_put("proxy-operator/config", b"spec: {}\n", None)
            .await
            .unwrap()
    );
    assert!(
        c.kv_put("proxy-operator/traefik/http/a b", &[0, 159, 146, 150], None)
            .await
            .unwrap()
    );
    assert!(
        c.kv_put("proxy-operator/traefik/tls/x", b"", None)
            .await
            .unwrap()
    );
    let (pair, meta) = c
        .kv_get("proxy-operator/config", QueryOptions::NOW)
        .await
        .unwrap();
    let pair = pair.unwrap();
    assert_eq!(pair.value, b"spec: {}\n");
    assert_eq!(
        meta.index, pair.modify_index,
        "single-key index is the key's ModifyIndex"
    );
    let (binary, _) = c
        .kv_get("proxy-operator/traefik/http/a b", QueryOptions::NOW)
        .await
        .unwrap();
    assert_eq!(
        binary.unwrap().value,
        [0, 159, 146, 150],
        "non-UTF-8 values and escaped keys survive"
    );
    let (empty, _) = c
        .kv_get("proxy-operator/traefik/tls/x", QueryOptions::NOW)
        .await
        .unwrap();
    assert!(empty.unwrap().value.is_empty());
    let (list, _) = c
        .kv_list("proxy-operator/traefik/", QueryOptions::NOW)
        .await
        .unwrap();
    assert_eq!(list.len(), 2);
    let (keys, _) = c
        .kv_keys("proxy-operator/", Some("/"), QueryOptions::NOW)
        .await
        .unwrap();
    assert_eq!(keys, ["proxy-operator/config", "proxy-operator/traefik/"]);
    let (none, _) = c.kv_list("nothing/", QueryOptions::NOW).await.unwrap();
    assert!(
        none.is_empty(),
        "an empty prefix is an empty list, not an error"
    );
    assert!(c.kv_delete("proxy-operator/config", None).await.unwrap());
    assert_eq!(
        c.kv_get("proxy-operator/config", QueryOptions::NOW)
            .await
            .unwrap()
            .0,
        None
    );
    t.shutdown().await;
}

#[tokio::test]
async fn cas_conflicts_answer_false_and_write_nothing() {
    let t = twin(None).await;
    let c = client(&t, None);
    assert!(c.kv_put("status", b"v1", Some(0)).await.unwrap());
    assert!(
        !c.kv_put("status", b"v2", Some(0)).await.unwrap(),
        "cas=0 on an existing key"
    );
    let index = c
        .kv_get("status", QueryOptions::NOW)
        .await
        .unwrap()
        .0
        .unwrap()
        .modify_index;
    assert!(
        !c.kv_put("status", b"v2", Some(index + 1000)).await.unwrap(),
        "stale index"
    );
    assert!(!c.kv_delete("status", Some(index + 1000)).await.unwrap());
    assert_eq!(
        c.kv_get("status", QueryOptions::NOW)
            .await
            .unwrap()
            .0
            .unwrap()
            .value,
        b"v1"
    );
    assert!(c.kv_put("status", b"v2", Some(index)).await.unwrap());
    let index = c
        .kv_get("status", QueryOptions::NOW)
        .await
        .unwrap()
        .0
        .unwrap()
        .modify_index;
    assert!(c.kv_delete("status", Some(index)).await.unwrap());
    t.shutdown().await;
}

#[tokio::test]
async fn transaction_fenced_by_check_session_rolls_back_when_the_lock_is_not_held() {
    let t = twin(None).await;
    let c = client(&t, None);
    let leader = c.session_create(&session("leader", 15)).await.unwrap();
    assert!(c.kv_acquire("p/leader", b"node-a", &leader).await.unwrap());
    let ok = c
        .txn(vec![
            TxnOp::CheckSession {
                key: "p/leader".into(),
                session: leader.clone(),
            },
            TxnOp::Cas {
                key: "p/status".into(),
                value: b"ready".to_vec(),
                index: 0,
            },
            TxnOp::Set {
                key: "p/traefik/a".into(),
                value: b"1".to_vec(),
            },
            TxnOp::Get {
                key: "p/leader".into(),
            },
        ])
        .await
        .unwrap();
    assert_eq!(
        ok.results.last().unwrap().value,
        b"node-a",
        "get results carry the value"
    );
    assert_eq!(
        c.kv_get("p/status", QueryOptions::NOW)
            .await
            .unwrap()
            .0
            .unwrap()
            .value,
        b"ready"
    );

    let deposed = c.session_create(&session("deposed", 15)).await.unwrap();
    let err = c
        .txn(vec![
            TxnOp::CheckSession {
                key: "p/leader".into(),
                session: deposed,
            },
            TxnOp::Set {
                key: "p/status".into(),
                value: b"stale".to_vec(),
            },
            TxnOp::DeleteTree {
                key: "p/traefik/".into(),
            },
        ])
        .await
        .unwrap_err();
    assert!(err.is_conflict() && !err.is_retryable(), "{err}");
    let Error::TxnRolledBack { errors } = &err else {
        panic!("{err:?}")
    };
    assert_eq!(errors[0].op_index, 0);
    assert_eq!(
        c.kv_get("p/status", QueryOptions::NOW)
            .await
            .unwrap()
            .0
            .unwrap()
            .value,
        b"ready",
        "nothing written"
    );
    assert_eq!(
        c.kv_list("p/traefik/", QueryOptions::NOW)
            .await
            .unwrap()
            .0
            .len(),
        1,
        "nothing deleted"
    );

    let err = c
        .txn(vec![TxnOp::CheckNotExists {
            key: "p/status".into(),
        }])
        .await
        .unwrap_err();
    assert!(err.is_conflict());
    let err = c
        .txn(vec![TxnOp::CheckIndex {
            key: "p/status".into(),
            index: 1,
        }])
        .await
        .unwrap_err();
    assert!(err.is_conflict());
    t.shutdown().await;
}

#[tokio::test]
async fn sessions_lock_renew_release_and_destroy() {
    let t = twin(None).await;
    let c = client(&t, None);
    let a = c.session_create(&session("a", 15)).await.unwrap();
    let b = c.session_create(&session("b", 15)).await.unwrap();
    assert!(c.kv_acquire("lock", b"a", &a).await.unwrap());
    assert!(
        !c.kv_acquire("lock", b"b", &b).await.unwrap(),
        "held by another session"
    );
    assert_eq!(
        c.session_renew(&a).await.unwrap(),
        Some(Duration::from_secs(15))
    );
    let (info, _) = c.session_info(&a, QueryOptions::NOW).await.unwrap();
    assert_eq!(info.unwrap().name, "a");
    assert!(
        !c.kv_release("lock", b"", &b).await.unwrap(),
        "only the holder releases"
    );
    assert!(c.kv_release("lock", b"", &a).await.unwrap());
    assert!(
        c.kv_acquire("lock", b"b", &b).await.unwrap(),
        "release starts no lock-delay"
    );
    c.session_destroy(&b).await.unwrap();
    c.session_destroy(&b).await.unwrap();
    assert_eq!(c.session_info(&b, QueryOptions::NOW).await.unwrap().0, None);
    let pair = c
        .kv_get("lock", QueryOptions::NOW)
        .await
        .unwrap()
        .0
        .unwrap();
    assert_eq!(pair.session, None, "destroy released the lock");
    assert!(
        !c.kv_acquire("lock", b"a", &a).await.unwrap(),
        "lock-delay after invalidation"
    );
    t.shutdown().await;
}

#[tokio::test]
async fn session_checks_are_bound_without_the_default_serf_health() {
    let t = twin(None).await;
    let c = client(&t, None);
    // A node without serfHealth: Consul would refuse a session that keeps the default check.
    let reg = CatalogRegistration {
        node: "n1".into(),
        address: "10.0.0.5".into(),
        check: Some(CheckRegistration {
            node: "n1".into(),
            check_id: "app".into(),
            name: "app".into(),
            status: "passing".into(),
            ..CheckRegistration::default()
        }),
        ..CatalogRegistration::default()
    };
    c.catalog_register(&reg).await.unwrap();
    let request = SessionRequest {
        node: Some("n1".into()),
        checks: Some(vec!["app".into()]),
        ..session("bound", 15)
    };
    let id = c.session_create(&request).await.unwrap();
    let (info, _) = c.session_info(&id, QueryOptions::NOW).await.unwrap();
    assert_eq!(info.unwrap().node_checks, ["app"]);
    t.shutdown().await;
}

#[tokio::test]
async fn an_expired_session_loses_its_lock_and_renewal_reports_it_gone() {
    let t = twin(None).await;
    let c = client(&t, None);
    let s = c.session_create(&session("leader", 10)).await.unwrap();
    assert!(c.kv_acquire("p/leader", b"me", &s).await.unwrap());
    let index = c
        .kv_get("p/leader", QueryOptions::NOW)
        .await
        .unwrap()
        .1
        .index;
    let watcher = {
        let c = c.clone();
        tokio::spawn(async move {
            c.kv_get(
                "p/leader",
                QueryOptions::blocking(index, Duration::from_secs(30)),
            )
            .await
        })
    };
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(t.consul().expire_session(&s));
    let (pair, meta) = tokio::time::timeout(Duration::from_secs(5), watcher)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert!(
        meta.index > index,
        "the blocked watcher woke on the release"
    );
    assert_eq!(pair.unwrap().session, None);
    let err = c.session_renew(&s).await.unwrap_err();
    assert!(
        matches!(err, Error::SessionNotFound { .. }) && !err.is_retryable(),
        "{err}"
    );
    let err = c
        .txn(vec![
            TxnOp::CheckSession {
                key: "p/leader".into(),
                session: s.clone(),
            },
            TxnOp::Set {
                key: "p/status".into(),
                value: b"x".to_vec(),
            },
        ])
        .await
        .unwrap_err();
    assert!(err.is_conflict(), "the fence holds after expiry");
    t.shutdown().await;
}

#[tokio::test]
async fn a_watch_blocks_until_the_key_changes_and_sends_no_request_meanwhile() {
    let t = twin(None).await;
    let c = client(&t, None);
    c.kv_put("cfg", b"one", None).await.unwrap();
    let mut watch = Watch::new(Duration::from_secs(30));
    let first = watch.next(|q| c.kv_get("cfg", q)).await.unwrap();
    assert_eq!(first.value.unwrap().value, b"one");
    let before = t.requests(TwinApi::Consul);
    let writer = c.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(500)).await;
        writer.kv_put("cfg", b"two", None).await.unwrap();
    });
    let next = tokio::time::timeout(
        Duration::from_secs(5),
        watch.changed(|q| c.kv_get("cfg", q)),
    )
    .await
    .unwrap()
    .unwrap();
    assert_eq!(next.value.unwrap().value, b"two");
    assert_eq!(
        t.requests(TwinApi::Consul) - before,
        2,
        "one blocking read and the write"
    );
    t.shutdown().await;
}

#[tokio::test]
async fn blocking_read_times_out_with_the_same_index() {
    let t = twin(None).await;
    let c = client(&t, None);
    c.kv_put("cfg", b"one", None).await.unwrap();
    let index = c.kv_get("cfg", QueryOptions::NOW).await.unwrap().1.index;
    let started = std::time::Instant::now();
    let (_, meta) = c
        .kv_get("cfg", QueryOptions::blocking(index, Duration::from_secs(1)))
        .await
        .unwrap();
    assert!(started.elapsed() >= Duration::from_secs(1));
    assert_eq!(meta.index, index);
    t.shutdown().await;
}

#[tokio::test]
async fn catalog_and_health_reads_follow_registrations_and_check_status() {
    let t = twin(None).await;
    let c = client(&t, None);
    let mut reg = CatalogRegistration {
        node: "n1".into(),
        address: "10.0.0.5".into(),
        service: Some(ServiceRegistration {
            id: "web-1".into(),
            service: "web".into(),
            tags: vec!["traefik.enable=true".into()],
            port: 8080,
            ..ServiceRegistration::default()
        }),
        check: Some(CheckRegistration {
            node: "n1".into(),
            check_id: "service:web-1".into(),
            name: "web".into(),
            status: "passing".into(),
            service_id: "web-1".into(),
            ..CheckRegistration::default()
        }),
        ..CatalogRegistration::default()
    };
    c.catalog_register(&reg).await.unwrap();
    let (services, _) = c.catalog_services(QueryOptions::NOW).await.unwrap();
    assert_eq!(services["web"], ["traefik.enable=true"]);
    let (rows, _) = c.catalog_service("web", QueryOptions::NOW).await.unwrap();
    assert_eq!(
        (rows[0].service_port, rows[0].effective_address()),
        (8080, "10.0.0.5")
    );
    let (healthy, _) = c
        .health_service("web", true, QueryOptions::NOW)
        .await
        .unwrap();
    assert_eq!(healthy.len(), 1);
    reg.check.as_mut().unwrap().status = "critical".into();
    c.catalog_register(&reg).await.unwrap();
    assert!(
        c.health_service("web", true, QueryOptions::NOW)
            .await
            .unwrap()
            .0
            .is_empty()
    );
    assert_eq!(
        c.health_service("web", false, QueryOptions::NOW)
            .await
            .unwrap()
            .0
            .len(),
        1
    );
    c.catalog_deregister("n1", Some("web-1")).await.unwrap();
    assert!(
        c.catalog_service("web", QueryOptions::NOW)
            .await
            .unwrap()
            .0
            .is_empty()
    );
    assert!(!c.status_leader().await.unwrap().is_empty());
    assert!(!c.agent_self().await.unwrap().config.datacenter.is_empty());
    t.shutdown().await;
}

#[tokio::test]
async fn a_wrong_token_gets_a_terminal_forbidden_error_sent_once() {
    let t = twin(Some("right-token")).await;
    let bad = client(&t, Some("wrong-token"));
    let before = t.requests(TwinApi::Consul);
    let err = bad.kv_get("x", QueryOptions::NOW).await.unwrap_err();
    assert!(err.is_forbidden() && !err.is_retryable(), "{err}");
    assert_eq!(err.status(), Some(403));
    assert_eq!(
        t.requests(TwinApi::Consul) - before,
        1,
        "403 is not retried"
    );
    assert!(!err.to_string().contains("wrong-token"));
    let good = client(&t, Some("right-token"));
    assert!(good.kv_put("x", b"1", None).await.unwrap());
    t.shutdown().await;
}

#[tokio::test]
async fn a_forbidden_listing_is_an_error_not_an_empty_tree() {
    let t = twin(Some("right-token")).await;
    let good = client(&t, Some("right-token"));
    assert!(good.kv_put("p/config", b"1", None).await.unwrap());
    let bad = client(&t, Some("wrong-token"));
    let err = bad.kv_list("p", QueryOptions::NOW).await.unwrap_err();
    assert_eq!(err.status(), Some(403), "{err}");
    let err = bad.kv_keys("p", None, QueryOptions::NOW).await.unwrap_err();
    assert_eq!(err.status(), Some(403), "{err}");
    t.shutdown().await;
}

#[tokio::test]
async fn a_listing_the_policy_does_not_cover_comes_back_empty_as_consul_filters_it() {
    // Why the loop must not read an empty listing as "nothing there": Consul (and the twin's
    // restricted tokens) drop denied keys from listings instead of answering 403.
    let t = twin(Some("right-token")).await;
    t.consul().add_restricted_token(
        "narrow-token",
        hashistack_twin::consul::TokenPolicy {
            key_write: vec!["other/".into()],
            ..Default::default()
        },
    );
    let good = client(&t, Some("right-token"));
    assert!(good.kv_put("p/config", b"1", None).await.unwrap());
    let narrow = client(&t, Some("narrow-token"));
    let (pairs, _) = narrow.kv_list("p", QueryOptions::NOW).await.unwrap();
    assert!(pairs.is_empty(), "filtered, not refused");
    let err = narrow
        .kv_get("p/config", QueryOptions::NOW)
        .await
        .unwrap_err();
    assert_eq!(err.status(), Some(403), "a single read is refused: {err}");
    t.shutdown().await;
}

#[tokio::test]
async fn a_transaction_consuls_acls_roll_back_is_forbidden_and_never_a_conflict() {
    // Txn.preCheck answers a denied operation with 409 and "Permission denied: … lacks
    // permission 'key:write' on …" in `Errors`: retrying it as a CAS conflict would loop.
    let t = twin(Some("right-token")).await;
    t.consul().add_restricted_token(
        "narrow-token",
        hashistack_twin::consul::TokenPolicy {
            key_write: vec!["p/".into()],
            ..Default::default()
        },
    );
    let narrow = client(&t, Some("narrow-token"));
    let err = narrow
        .txn(vec![
            TxnOp::Set {
                key: "p/status".into(),
                value: b"{}".to_vec(),
            },
            TxnOp::Set {
                key: "elsewhere/x".into(),
                value: b"x".to_vec(),
            },
        ])
        .await
        .unwrap_err();
    assert!(err.is_forbidden(), "{err}");
    assert!(!err.is_conflict() && !err.is_retryable(), "{err}");
    assert!(err.to_string().contains("'key:write'"), "{err}");
    let good = client(&t, Some("right-token"));
    let (status, _) = good.kv_get("p/status", QueryOptions::NOW).await.unwrap();
    assert!(status.is_none(), "the transaction applied nothing");
    t.shutdown().await;
}

#[tokio::test]
async fn keys_consul_refuses_fail_before_sending_and_name_the_prefix_flag() {
    let t = twin(None).await;
    let c = client(&t, None);
    let before = t.requests(TwinApi::Consul);
    for key in ["/lead", "a/../b", "..", " p/config"] {
        let err = c.kv_put(key, b"v", None).await.unwrap_err();
        assert!(matches!(err, Error::InvalidKey { .. }), "{key}: {err}");
        assert!(err.to_string().contains("--prefix"), "{err}");
        assert!(!err.is_retryable());
    }
    let err = c.kv_list("/p", QueryOptions::NOW).await.unwrap_err();
    assert!(matches!(err, Error::InvalidKey { .. }), "{err}");
    let err = c
        .txn(vec![TxnOp::Set {
            key: "/p/status".into(),
            value: b"{}".to_vec(),
        }])
        .await
        .unwrap_err();
    assert!(matches!(err, Error::InvalidKey { .. }), "{err}");
    assert_eq!(t.requests(TwinApi::Consul), before, "nothing was sent");
    t.shutdown().await;
}

#[tokio::test]
async fn a_namespace_against_consul_ce_fails_with_the_enterprise_error() {
    let t = twin(None).await;
    let _ = rustls::crypto::ring::default_provider().install_default();
    let mut config =
        ClientConfig::for_address(Api::Consul, &format!("http://{}", t.consul_addr())).unwrap();
    config.namespace = Some("team".into());
    let c = ConsulClient::new(&config).unwrap();
    let err = c.kv_get("p/config", QueryOptions::NOW).await.unwrap_err();
    assert_eq!(err.status(), Some(400), "{err}");
    assert!(
        err.to_string()
            .contains("Namespaces are a Consul Enterprise feature"),
        "{err}"
    );
    // Without a namespace nothing is added to the query.
    let plain = client(&t, None);
    assert_eq!(
        plain.kv_get("p/config", QueryOptions::NOW).await.unwrap().0,
        None
    );
    t.shutdown().await;
}

#[tokio::test]
async fn unavailable_answers_are_retried_with_backoff_then_reported_as_retryable() {
    let t = twin(None).await;
    let c = client(&t, None);
    t.faults().fail_path(TwinApi::Consul, "/v1/kv/flaky", 503);
    let before = t.requests(TwinApi::Consul);
    let err = c.kv_get("flaky", QueryOptions::NOW).await.unwrap_err();
    assert!(err.is_retryable(), "{err}");
    assert_eq!(
        t.requests(TwinApi::Consul) - before,
        3,
        "first attempt and two retries"
    );
    t.faults().clear().await.unwrap();
    assert!(c.kv_put("flaky", b"ok", None).await.unwrap());
    t.shutdown().await;
}

#[tokio::test]
async fn session_create_is_not_repeated_after_a_server_error() {
    let t = twin(None).await;
    let c = client(&t, None);
    t.faults()
        .fail_path(TwinApi::Consul, "/v1/session/create", 503);
    let before = t.requests(TwinApi::Consul);
    c.session_create(&session("x", 15)).await.unwrap_err();
    assert_eq!(
        t.requests(TwinApi::Consul) - before,
        1,
        "a 503 may follow a created session; no blind retry"
    );
    t.shutdown().await;
}

#[tokio::test]
async fn connection_refused_is_retryable_and_names_the_address() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    let mut config = ClientConfig::for_address(Api::Consul, &format!("http://{addr}")).unwrap();
    config.retry = RetryPolicy {
        max_retries: 1,
        min_delay: Duration::from_millis(1),
        max_delay: Duration::from_millis(2),
    };
    let c = ConsulClient::new(&config).unwrap();
    let err = c.status_leader().await.unwrap_err();
    assert!(err.is_retryable(), "{err}");
    assert!(err.to_string().contains(&addr.to_string()), "{err}");
}
