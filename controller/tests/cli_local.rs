//! The real binary without a cluster: `debug tls` against an in-test TLS server and a
//! certificate directory, `debug route` against a stand-in Traefik API and entry point,
//! `render` of a shipped example offline, `completions`, and the exit codes in `--help`.
#![allow(clippy::unwrap_used, clippy::panic)] // tests fail loudly

use std::process::Output;
use std::sync::Arc;
use std::time::Duration;

async fn run(args: &[&str]) -> Output {
    tokio::process::Command::new(env!("CARGO_BIN_EXE_proxy-operator"))
        .args(args)
        .env_remove("RUST_LOG")
        .kill_on_drop(true)
        .output()
        .await
        .unwrap()
}

fn streams(out: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

struct Made {
    cert: rcgen::Certificate,
    key: rcgen::KeyPair,
    not_after_unix: u64,
}

fn make_cert(days: u64) -> Made {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let not_after_unix = now + days * 86_400 + 3_600;
    let mut params =
        rcgen::CertificateParams::new(vec!["localhost".to_owned(), "demo.localhost".to_owned()])
            .unwrap();
    let epoch = rcgen::date_time_ymd(1970, 1, 1);
    params.not_before = epoch + Duration::from_secs(now - 3_600);
    params.not_after = epoch + Duration::from_secs(not_after_unix);
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = params.self_signed(&key).unwrap();
    Made {
        cert,
        key,
        not_after_unix,
    }
}

/// A TLS server on loopback serving `made`'s certificate; returns its address.
async fn tls_server(made: &Made) -> std::net::SocketAddr {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let key = rustls::pki_types::PrivateKeyDer::try_from(made.key.serialize_der()).unwrap();
    let config = rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(vec![made.cert.der().clone()], key)
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((sock, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let _ = acceptor.accept(sock).await;
            });
        }
    });
    addr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn debug_tls_shows_the_served_chain_and_the_files_with_expiry_and_key_match() {
    let served = make_cert(30);
    let addr = tls_server(&served).await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("edge.pem"), served.cert.pem()).unwrap();
    std::fs::write(dir.path().join("edge.key"), served.key.serialize_pem()).unwrap();
    let other = make_cert(90);
    std::fs::write(dir.path().join("other.pem"), other.cert.pem()).unwrap();
    std::fs::write(dir.path().join("other.key"), served.key.serialize_pem()).unwrap();

    let out = run(&[
        "debug",
        "tls",
        "demo.localhost",
        "--connect",
        &addr.to_string(),
        "--cert-dir",
        dir.path().to_str().unwrap(),
    ])
    .await;
    let (stdout, stderr) = streams(&out);
    let expected_date = proxy_operator::status::rfc3339(
        std::time::UNIX_EPOCH + Duration::from_secs(served.not_after_unix),
    );
    assert!(
        stdout.contains(&format!("Served by {addr} for demo.localhost")),
        "{stdout}"
    );
    assert!(
        stdout.contains(&format!("not after: {expected_date} (30 days left)")),
        "{stdout}\n{stderr}"
    );
    assert!(
        stdout.contains("SANs:      localhost, demo.localhost"),
        "{stdout}"
    );
    assert!(stdout.contains("edge.key matches"), "{stdout}");
    assert!(stdout.contains("other.key DOES NOT MATCH"), "{stdout}");
    assert!(stdout.contains("(90 days left)"), "{stdout}");
    assert!(!stdout.contains("PRIVATE KEY"), "keys are never printed");
    assert_eq!(out.status.code(), Some(1), "a key mismatch needs attention");

    std::fs::remove_file(dir.path().join("other.pem")).unwrap();
    let out = run(&[
        "debug",
        "tls",
        "localhost",
        "--connect",
        &addr.to_string(),
        "--cert-dir",
        dir.path().to_str().unwrap(),
    ])
    .await;
    assert_eq!(out.status.code(), Some(0), "{:?}", streams(&out));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn debug_route_names_the_router_that_serves_the_host_and_shows_the_answer() {
    let rawdata = serde_json::json!({"routers": {
        "demo@consulcatalog": {"rule": "Host(`demo.localhost`)", "service": "demo@consulcatalog",
            "middlewares": ["proxy-operator-policy@consul"], "entryPoints": ["web"], "status": "enabled"},
        "demo-api@consulcatalog": {"rule": "Host(`demo.localhost`) && PathPrefix(`/api`)", "service": "demo-api@consulcatalog",
            "entryPoints": ["web"], "status": "enabled"},
        "other@consulcatalog": {"rule": "Host(`other.localhost`)", "service": "other@consulcatalog"},
    }});
    let api = axum::Router::new().route(
        "/api/rawdata",
        axum::routing::get(move || {
            let body = rawdata.clone();
            async move { axum::Json(body) }
        }),
    );
    let entry =
        axum::Router::new().fallback(|| async { ([("x-served-by", "demo-backend")], "hello") });
    let mut addrs = Vec::new();
    for app in [api, entry] {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        addrs.push(l.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(l, app).await });
    }
    let out = run(&[
        "debug",
        "route",
        "demo.localhost",
        "/",
        "--proxy-api",
        &format!("http://{}", addrs[0]),
        "--entry-point",
        &format!("http://{}", addrs[1]),
    ])
    .await;
    let (stdout, stderr) = streams(&out);
    assert_eq!(out.status.code(), Some(0), "{stdout}\n{stderr}");
    assert!(
        stdout.starts_with("Router demo@consulcatalog serves it:"),
        "{stdout}"
    );
    assert!(
        stdout.contains("middlewares: proxy-operator-policy@consul"),
        "{stdout}"
    );
    assert!(stdout.contains("200 OK"), "{stdout}");
    assert!(stdout.contains("x-served-by: demo-backend"), "{stdout}");

    let out = run(&[
        "debug",
        "route",
        "demo.localhost",
        "/api/users",
        "--proxy-api",
        &format!("http://{}", addrs[0]),
        "--entry-point",
        &format!("http://{}", addrs[1]),
    ])
    .await;
    assert!(
        streams(&out)
            .0
            .starts_with("Router demo-api@consulcatalog serves it:")
    );

    let out = run(&[
        "debug",
        "route",
        "nobody.localhost",
        "--proxy-api",
        &format!("http://{}", addrs[0]),
        "--entry-point",
        &format!("http://{}", addrs[1]),
    ])
    .await;
    assert_eq!(out.status.code(), Some(1));
    assert!(streams(&out).0.contains("No router matches"));
}

#[tokio::test]
async fn every_shipped_example_renders_offline_with_a_marked_placeholder_for_basic_auth_users() {
    let examples = format!("{}/../nomad-jobs/examples", env!("CARGO_MANIFEST_DIR"));
    for entry in std::fs::read_dir(&examples).unwrap() {
        let path = entry.unwrap().path();
        let out = run(&["render", path.to_str().unwrap()]).await;
        let (stdout, stderr) = streams(&out);
        assert_eq!(out.status.code(), Some(0), "{}: {stderr}", path.display());
        if path.ends_with("traefik-consul-primary.yaml") {
            assert!(
                stderr.contains("not read offline") && stderr.contains("placeholder"),
                "{stderr}"
            );
            assert!(stderr.contains("--basic-auth-users"), "{stderr}");
            assert!(
                stdout.contains("placeholder:<users-not-read-offline>"),
                "{stdout}"
            );
        }
    }
}

#[tokio::test]
async fn completions_are_printed_for_bash_and_help_documents_the_exit_codes() {
    let out = run(&["completions", "bash"]).await;
    assert_eq!(out.status.code(), Some(0));
    let script = streams(&out).0;
    assert!(
        script.contains("proxy-operator") && script.contains("apply"),
        "{script}"
    );
    let help = streams(&run(&["--help"]).await).0;
    assert!(
        help.contains("Exit codes") && help.contains("255"),
        "{help}"
    );
    let plan = streams(&run(&["plan", "--help"]).await).0;
    assert!(plan.contains("0 no change, 1 changes, 255 error"), "{plan}");
    let apply = streams(&run(&["apply", "--help"]).await).0;
    assert!(
        apply.contains("3 the key changed") && apply.contains("--force"),
        "{apply}"
    );
}
