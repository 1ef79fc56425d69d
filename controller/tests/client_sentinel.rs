//! A sentinel token never shows up in logs, error messages (Display, Debug, source chain) or the
//! Debug output of configs and clients, whatever fails: 403, a server echoing the token,
//! connection refused.
#![allow(clippy::unwrap_used, clippy::panic)] // tests fail loudly

use std::io::Write;
use std::sync::{Arc, Mutex, OnceLock};

use hashistack_twin::{Twin, TwinConfig};
use proxy_operator::consul::{ConsulApi, ConsulClient, SessionRequest, TxnOp};
use proxy_operator::nomad::{NomadApi, NomadClient};
use proxy_operator::transport::{Api, ClientConfig, HttpClient, QueryOptions, RetryPolicy, Token};

const SENTINEL: &str = "SENTINEL-TOKEN-5b1f0c7e-9d2a-4c1b-8e3f-deadbeef0001";

/// Every log line of the process, at every level, from every crate (reqwest's `log` records
/// included).
fn logs() -> &'static Arc<Mutex<Vec<u8>>> {
    static LOGS: OnceLock<Arc<Mutex<Vec<u8>>>> = OnceLock::new();
    LOGS.get_or_init(|| {
        let buffer = Arc::new(Mutex::new(Vec::new()));
        let sink = buffer.clone();
        let _ = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::TRACE)
            .with_ansi(false)
            .with_writer(move || Capture(sink.clone()))
            .try_init();
        buffer
    })
}

struct Capture(Arc<Mutex<Vec<u8>>>);

impl Write for Capture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn assert_clean(what: &str, err: &dyn std::error::Error) {
    let mut texts = vec![err.to_string(), format!("{err:?}")];
    let mut source = err.source();
    while let Some(s) = source {
        texts.push(s.to_string());
        texts.push(format!("{s:?}"));
        source = s.source();
    }
    for t in texts {
        assert!(!t.contains(SENTINEL), "{what} leaked the token: {t}");
    }
}

fn config(api: Api, addr: &str) -> ClientConfig {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let mut c = ClientConfig::for_address(api, addr).unwrap();
    c.token = Some(Token::new(SENTINEL));
    c.retry = RetryPolicy {
        max_retries: 1,
        ..RetryPolicy::default()
    };
    c
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_token_never_appears_in_logs_errors_or_debug_output() {
    let logs = logs();
    let twin = Twin::start(TwinConfig {
        acl_token: Some("the-real-token".into()),
        ..TwinConfig::default()
    })
    .await
    .unwrap();

    // 403 from both APIs, on reads, writes, transactions and sessions.
    let consul_config = config(Api::Consul, &format!("http://{}", twin.consul_addr()));
    let consul = ConsulClient::new(&consul_config).unwrap();
    assert_clean(
        "kv_get",
        &consul.kv_get("k", QueryOptions::NOW).await.unwrap_err(),
    );
    assert_clean(
        "kv_put",
        &consul.kv_put("k", b"v", Some(0)).await.unwrap_err(),
    );
    assert_clean(
        "txn",
        &consul
            .txn(vec![TxnOp::Get { key: "k".into() }])
            .await
            .unwrap_err(),
    );
    assert_clean(
        "session_create",
        &consul
            .session_create(&SessionRequest::default())
            .await
            .unwrap_err(),
    );
    let nomad_config = config(Api::Nomad, &format!("http://{}", twin.nomad_addr()));
    let nomad = NomadClient::new(&nomad_config).unwrap();
    assert_clean(
        "job_read",
        &nomad.job_read("j", QueryOptions::NOW).await.unwrap_err(),
    );
    assert_clean(
        "job_register",
        &nomad
            .job_register(&serde_json::json!({"ID": "j"}), Some(0))
            .await
            .unwrap_err(),
    );

    // A server that echoes the token in its error body (some proxies do) is scrubbed.
    let echo = axum::Router::new().fallback(|headers: axum::http::HeaderMap| async move {
        let token = headers
            .get("X-Consul-Token")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned();
        (
            axum::http::StatusCode::FORBIDDEN,
            format!("ACL not found: token {token} is unknown"),
        )
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let echo_addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, echo).await });
    let echoing = ConsulClient::new(&config(Api::Consul, &format!("http://{echo_addr}"))).unwrap();
    let err = echoing.kv_get("k", QueryOptions::NOW).await.unwrap_err();
    assert!(
        err.to_string().contains("<redacted>"),
        "the echo was received and scrubbed: {err}"
    );
    assert_clean("echoing server", &err);

    // Connection refused.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let closed_addr = closed.local_addr().unwrap();
    drop(closed);
    let refused = NomadClient::new(&config(Api::Nomad, &format!("http://{closed_addr}"))).unwrap();
    let err = refused.status_leader().await.unwrap_err();
    assert!(err.is_retryable(), "{err}");
    assert_clean("connection refused", &err);

    // Debug of configuration and clients.
    for text in [
        format!("{consul_config:?}"),
        format!("{nomad_config:?}"),
        format!("{consul:?}"),
        format!("{nomad:?}"),
        format!("{:?}", HttpClient::new(&consul_config).unwrap()),
        format!("{}", consul_config.token.as_ref().unwrap()),
    ] {
        assert!(
            !text.contains(SENTINEL),
            "Debug/Display leaked the token: {text}"
        );
    }

    twin.shutdown().await;
    let captured = String::from_utf8_lossy(&logs.lock().unwrap()).into_owned();
    assert!(
        captured.contains("/v1/kv/k"),
        "requests were logged at all:\n{captured}"
    );
    assert!(!captured.contains(SENTINEL), "a log line leaked the token");
}

const PASS_SENTINEL: &str = "SENTINEL-PASS-0c4e21aa";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn basic_auth_credentials_in_the_address_never_appear_in_logs_errors_or_debug_output() {
    let logs = logs();
    let twin = Twin::start(TwinConfig::default()).await.unwrap();
    let assert_no_pass = |what: &str, err: &dyn std::error::Error| {
        let mut texts = vec![err.to_string(), format!("{err:?}")];
        let mut source = err.source();
        while let Some(s) = source {
            texts.push(s.to_string());
            texts.push(format!("{s:?}"));
            source = s.source();
        }
        for t in texts {
            assert!(
                !t.contains(PASS_SENTINEL),
                "{what} leaked the password: {t}"
            );
        }
    };

    // The credentials still work as basic auth (the twin ignores them), and the address is
    // shown with the password replaced.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let addr = format!("http://ops:{PASS_SENTINEL}@{}", twin.consul_addr());
    let ok_config = ClientConfig::for_address(Api::Consul, &addr).unwrap();
    let consul = ConsulClient::new(&ok_config).unwrap();
    assert!(consul.kv_put("k", b"v", None).await.unwrap());
    assert!(consul.http().endpoint().contains("ops:redacted@"));

    // Connection refused, with the password in the address.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let closed_addr = closed.local_addr().unwrap();
    drop(closed);
    let mut refused_config = ClientConfig::for_address(
        Api::Nomad,
        &format!("http://ops:{PASS_SENTINEL}@{closed_addr}"),
    )
    .unwrap();
    refused_config.retry = RetryPolicy {
        max_retries: 1,
        ..RetryPolicy::default()
    };
    let refused = NomadClient::new(&refused_config).unwrap();
    let err = refused.status_leader().await.unwrap_err();
    assert!(err.to_string().contains("redacted"), "{err}");
    assert_no_pass("connection refused", &err);

    // An address that does not parse.
    let err = ClientConfig::for_address(Api::Consul, &format!("ftp://ops:{PASS_SENTINEL}@h"))
        .unwrap_err();
    assert_no_pass("invalid address", &err);

    for text in [
        format!("{ok_config:?}"),
        format!("{refused_config:?}"),
        format!("{consul:?}"),
        format!("{refused:?}"),
        ok_config.endpoint.to_string(),
    ] {
        assert!(
            !text.contains(PASS_SENTINEL),
            "Debug/Display leaked the password: {text}"
        );
    }
    twin.shutdown().await;
    let captured = String::from_utf8_lossy(&logs.lock().unwrap()).into_owned();
    assert!(
        captured.contains("/v1/kv/k"),
        "requests were logged at all:\n{captured}"
    );
    assert!(
        !captured.contains(PASS_SENTINEL),
        "a log line leaked the password"
    );
}
