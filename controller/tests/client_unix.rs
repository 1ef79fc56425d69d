//! `unix://` addresses (`CONSUL_HTTP_ADDR=unix:///…`) reach an agent listening on a socket.
#![allow(clippy::unwrap_used, clippy::panic)] // tests fail loudly

use proxy_operator::consul::{ConsulApi, ConsulClient};
use proxy_operator::transport::ClientConfig;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[tokio::test]
async fn a_unix_socket_address_reaches_the_agent_and_sends_the_token_header() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("consul.sock");
    let listener = tokio::net::UnixListener::bind(&socket).unwrap();
    let server = tokio::spawn(async move {
        let (mut stream, _) = listener.accept().await.unwrap();
        let mut buf = Vec::new();
        let mut chunk = [0u8; 1024];
        while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
            let n = stream.read(&mut chunk).await.unwrap();
            assert!(n > 0, "request ended early");
            buf.extend_from_slice(&chunk[..n]);
        }
        let body = "\"10.0.0.9:8300\"";
        let response = format!(
            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
        stream.write_all(response.as_bytes()).await.unwrap();
        String::from_utf8(buf).unwrap()
    });
    let env = |k: &str| match k {
        "CONSUL_HTTP_ADDR" => Some(format!("unix://{}", socket.display())),
        "CONSUL_HTTP_TOKEN" => Some("unix-token".to_owned()),
        _ => None,
    };
    let client = ConsulClient::new(&ClientConfig::consul_from_env(env).unwrap()).unwrap();
    assert_eq!(client.status_leader().await.unwrap(), "10.0.0.9:8300");
    let request = server.await.unwrap().to_lowercase();
    assert!(
        request.starts_with("get /v1/status/leader http/1.1"),
        "{request}"
    );
    assert!(request.contains("x-consul-token: unix-token"), "{request}");
}
