//! Bounded reads (issue 13): a Consul or Nomad answer larger than 16 MiB is a clean, terminal
//! error naming the endpoint, and the client stops reading at the cap instead of buffering what
//! the server sends. Driven by a loopback server that lies about or never ends its body.
#![allow(clippy::unwrap_used, clippy::panic)] // tests fail loudly

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use proxy_operator::consul::{ConsulApi, ConsulClient};
use proxy_operator::nomad::{NomadApi, NomadClient};
use proxy_operator::transport::{
    Api, ClientConfig, MAX_API_BODY, QueryOptions, RetryPolicy, read_capped,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// What the loopback server sends after the status line and headers.
#[derive(Clone, Copy)]
enum Body {
    /// Chunked JSON-ish bytes that never end; stops when the client hangs up.
    Endless,
    /// `Content-Length` of `declared` bytes, then `sent` bytes.
    Sized { declared: usize, sent: usize },
}

/// Serves every connection with `body`; returns the address and the bytes of body written.
async fn server(body: Body) -> (String, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = format!("http://{}", listener.local_addr().unwrap());
    let written = Arc::new(AtomicUsize::new(0));
    let counter = written.clone();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let counter = counter.clone();
            tokio::spawn(async move {
                let mut request = [0u8; 4096];
                let _ = stream.read(&mut request).await;
                let chunk = vec![b' '; 64 * 1024];
                match body {
                    Body::Endless => {
                        let head = "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nX-Consul-Index: 5\r\nTransfer-Encoding: chunked\r\n\r\n";
                        if stream.write_all(head.as_bytes()).await.is_err() {
                            return;
                        }
                        loop {
                            let frame = format!("{:x}\r\n", chunk.len());
                            let ok = stream.write_all(frame.as_bytes()).await.is_ok()
                                && stream.write_all(&chunk).await.is_ok()
                                && stream.write_all(b"\r\n").await.is_ok();
                            if !ok {
                                return;
                            }
                            counter.fetch_add(chunk.len(), Ordering::SeqCst);
                        }
                    }
                    Body::Sized { declared, sent } => {
                        let head = format!(
                            "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {declared}\r\n\r\n"
                        );
                        if stream.write_all(head.as_bytes()).await.is_err() {
                            return;
                        }
                        let mut left = sent;
                        while left > 0 {
                            let n = left.min(chunk.len());
                            if stream.write_all(&chunk[..n]).await.is_err() {
                                return;
                            }
                            counter.fetch_add(n, Ordering::SeqCst);
                            left -= n;
                        }
                        let _ = stream.shutdown().await;
                    }
                }
            });
        }
    });
    (addr, written)
}

fn config(api: Api, addr: &str) -> ClientConfig {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let mut config = ClientConfig::for_address(api, addr).unwrap();
    config.retry = RetryPolicy {
        max_retries: 3,
        min_delay: Duration::from_millis(5),
        max_delay: Duration::from_millis(20),
    };
    config
}

#[tokio::test]
async fn an_endless_consul_answer_stops_at_16_mib_with_a_terminal_error_naming_the_endpoint() {
    let (addr, written) = server(Body::Endless).await;
    let consul = ConsulClient::new(&config(Api::Consul, &addr)).unwrap();
    let err = tokio::time::timeout(
        Duration::from_secs(60),
        consul.kv_list("proxy-operator", QueryOptions::NOW),
    )
    .await
    .expect("the read stops at the cap instead of running forever")
    .unwrap_err();
    let text = err.to_string();
    assert!(text.contains("/v1/kv/proxy-operator"), "{text}");
    assert!(text.contains("larger than 16 MiB"), "{text}");
    assert!(
        !err.is_retryable(),
        "an oversized answer is terminal: {text}"
    );
    // One attempt, cut at the cap: the server got at most the cap plus what sat in socket
    // buffers when the client hung up, never a second request's worth.
    let sent = written.load(Ordering::SeqCst);
    assert!(sent >= MAX_API_BODY, "stopped before the cap: {sent}");
    assert!(
        sent < MAX_API_BODY + 8 * 1024 * 1024,
        "kept reading past the cap: {sent}"
    );
}

#[tokio::test]
async fn a_declared_oversized_nomad_answer_is_refused_before_its_body_is_read() {
    let (addr, written) = server(Body::Sized {
        declared: MAX_API_BODY + 1,
        sent: MAX_API_BODY + 1,
    })
    .await;
    let nomad = NomadClient::new(&config(Api::Nomad, &addr)).unwrap();
    let err = nomad
        .job_read("traefik", QueryOptions::NOW)
        .await
        .unwrap_err();
    let text = err.to_string();
    assert!(text.contains("/v1/job/traefik"), "{text}");
    assert!(text.contains("larger than 16 MiB"), "{text}");
    assert!(!err.is_retryable(), "{text}");
    assert!(
        written.load(Ordering::SeqCst) < MAX_API_BODY,
        "the body was read although its length was declared over the cap"
    );
}

async fn get(url: String) -> reqwest::Response {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::get(url).await.unwrap()
}

#[tokio::test]
async fn a_body_is_read_whole_up_to_the_cap_and_refused_one_byte_past_it() {
    let (addr, _) = server(Body::Sized {
        declared: 10,
        sent: 10,
    })
    .await;
    let response = get(format!("{addr}/v1/x")).await;
    assert_eq!(
        read_capped(response, 9).await.unwrap(),
        None,
        "10 bytes exceed a 9-byte cap"
    );
    let response = get(format!("{addr}/v1/x")).await;
    assert_eq!(
        read_capped(response, 10).await.unwrap().map(|b| b.len()),
        Some(10),
        "a body at the cap is read whole"
    );
}

#[tokio::test]
async fn an_endless_body_without_a_length_stops_at_a_small_probe_cap() {
    let (addr, written) = server(Body::Endless).await;
    let response = get(format!("{addr}/api/rawdata")).await;
    let one_mib = 1024 * 1024;
    assert_eq!(read_capped(response, one_mib).await.unwrap(), None);
    let sent = written.load(Ordering::SeqCst);
    assert!(
        sent < one_mib + 8 * 1024 * 1024,
        "read past the cap: {sent}"
    );
}
