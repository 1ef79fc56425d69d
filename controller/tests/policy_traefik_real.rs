//! Every middleware of issue 14 through real Traefik 3.7: the rendered static config and KV
//! policy tree (served by the twin's Consul KV) in front of real backends on 127.0.0.1, each
//! test asserting the HTTP behaviour a client sees.
// Tests fail loudly: unwrap and panic are how they report.
#![allow(clippy::unwrap_used, clippy::panic)]

#[path = "../../tests/support/mod.rs"]
mod support;

#[path = "middleware_checks/mod.rs"]
mod checks;
mod render_common;
#[path = "render_common/traefik.rs"]
mod traefik_harness;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use proxy_operator::render::model::*;
use serde_json::Value;
use support::eventually;
use traefik_harness::*;

/// The headers the backend (`support::Backend`) says it received.
async fn seen_by_backend(resp: reqwest::Response) -> Value {
    let body: Value = resp.json().await.unwrap();
    body["headers"].clone()
}

#[tokio::test]
async fn forward_auth_passes_on_401_and_403_and_lets_200_through_with_the_copied_headers() {
    let (auth, _task) = fake_http(|_, _, headers| Some(checks::auth_verdict(headers))).await;
    let backend = support::Backend::start("app").await;
    let mut model = plain_http_model();
    model.policy.forward_auth = Some(ForwardAuth {
        address: format!("http://{auth}/verify"),
        trust_forward_header: false,
        auth_response_headers: vec!["X-Auth-User".to_string()],
        tls: None,
    });
    let s = serve(model, &format!("http://{}", backend.addr)).await;
    checks::forward_auth_verdicts_reach_the_client(
        &app_client(s.web, None),
        reqwest::Method::GET,
        &format!("http://app.test:{}/", s.web),
    )
    .await;
    assert_no_fatal_log(&s.traefik);
}

#[tokio::test]
async fn forward_auth_reaches_an_https_auth_service_through_the_rendered_ca() {
    let dir = tempfile::tempdir().unwrap();
    let auth = checks::https_auth_service(dir.path(), false).await;
    let ca = dir.path().join("ca.pem").display().to_string();
    let backend = support::Backend::start("app").await;
    let mut model = plain_http_model();
    model.policy.forward_auth = Some(ForwardAuth {
        address: format!("https://localhost:{}/verify", auth.port()),
        trust_forward_header: false,
        auth_response_headers: vec!["X-Auth-User".to_string()],
        tls: Some(ClientFiles {
            ca: Some(ca),
            cert: None,
            key: None,
        }),
    });
    let s = serve(model, &format!("http://{}", backend.addr)).await;
    let ok = app_client(s.web, None)
        .get(format!("http://app.test:{}/", s.web))
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), 200, "log:\n{}", s.traefik.guard.log());
    let seen = seen_by_backend(ok).await;
    assert_eq!(seen["x-auth-user"], "tls-alice", "{seen}");
}

#[tokio::test]
async fn circuit_breaker_opens_on_backend_500s_and_closes_when_the_backend_recovers() {
    let failing = Arc::new(AtomicBool::new(true));
    let hits = Arc::new(AtomicUsize::new(0));
    let (backend, _task) = {
        let (failing, hits) = (failing.clone(), hits.clone());
        fake_http(move |_, _, _| {
            hits.fetch_add(1, Ordering::SeqCst);
            Some(if failing.load(Ordering::SeqCst) {
                (500, vec![], "backend broken".into())
            } else {
                (200, vec![], "backend fine".into())
            })
        })
        .await
    };
    let mut model = plain_http_model();
    model.policy.circuit_breaker = Some(CircuitBreaker {
        expression: "ResponseCodeRatio(500, 600, 0, 600) > 0.5".to_string(),
        check_period: Duration::from_millis(100),
        fallback_duration: Duration::from_secs(1),
        recovery_duration: Duration::from_secs(1),
    });
    let s = serve(model, &format!("http://{backend}")).await;
    let c = app_client(s.web, None);
    let url = format!("http://app.test:{}/", s.web);

    // The backend answers 500; the breaker's own answer is 503 without reaching it.
    let opened = eventually(Duration::from_secs(10), || {
        let (c, url) = (c.clone(), url.clone());
        async move {
            let r = c.get(&url).send().await.ok()?;
            (r.status() == 503).then_some(())
        }
    })
    .await;
    assert!(
        opened.is_some(),
        "the breaker never opened; log:\n{}",
        s.traefik.guard.log()
    );
    let before = hits.load(Ordering::SeqCst);
    let open = c.get(&url).send().await.unwrap();
    assert_eq!(open.status(), 503, "still open right after tripping");
    assert_eq!(
        hits.load(Ordering::SeqCst),
        before,
        "an open breaker spares the backend"
    );

    failing.store(false, Ordering::SeqCst);
    let closed = eventually(Duration::from_secs(15), || {
        let (c, url) = (c.clone(), url.clone());
        async move {
            let r = c.get(&url).send().await.ok()?;
            (r.status() == 200).then_some(r.text().await.ok()?)
        }
    })
    .await;
    assert_eq!(
        closed.as_deref(),
        Some("backend fine"),
        "the breaker never closed again"
    );
}

/// The app's two instances: one whose port refuses connections (a crashed instance), one
/// that answers. Traefik retries only requests it could not deliver (connection refused or
/// reset before the request was written), never a backend's own error answer.
async fn one_dead_one_alive() -> (Vec<String>, support::Backend) {
    let dead = support::free_port();
    let alive = support::Backend::start("alive").await;
    (
        vec![
            format!("http://127.0.0.1:{dead}"),
            format!("http://{}", alive.addr),
        ],
        alive,
    )
}

#[tokio::test]
async fn retry_turns_a_request_that_fails_on_a_dead_instance_into_a_200() {
    let (servers, _alive) = one_dead_one_alive().await;
    let mut model = plain_http_model();
    model.policy.retry = Some(Retry {
        attempts: 2,
        initial_interval: Duration::from_millis(10),
    });
    let s = serve_servers(model, &servers).await;
    let c = app_client(s.web, None);
    // Round robin sends every other first attempt to the dead instance.
    for i in 0..6 {
        let r = c
            .get(format!("http://app.test:{}/{i}", s.web))
            .send()
            .await
            .unwrap();
        assert_eq!(
            r.status(),
            200,
            "request {i}; log:\n{}",
            s.traefik.guard.log()
        );
        assert_eq!(r.headers()["x-backend"], "alive");
    }
}

#[tokio::test]
async fn without_retry_the_same_dead_instance_costs_a_502() {
    // Guards the test above: it passes because of the retry middleware.
    let (servers, _alive) = one_dead_one_alive().await;
    let s = serve_servers(plain_http_model(), &servers).await;
    let c = app_client(s.web, None);
    let mut statuses = Vec::new();
    for i in 0..6 {
        let r = c
            .get(format!("http://app.test:{}/{i}", s.web))
            .send()
            .await
            .unwrap();
        statuses.push(r.status().as_u16());
    }
    assert!(statuses.contains(&502), "{statuses:?}");
}

#[tokio::test]
async fn buffering_refuses_an_oversized_request_body_with_413() {
    let backend = support::Backend::start("app").await;
    let mut model = plain_http_model();
    model.policy.buffering = Some(Buffering {
        max_request_body_bytes: 1000,
        max_response_body_bytes: 0,
    });
    let s = serve(model, &format!("http://{}", backend.addr)).await;
    let url = format!("http://app.test:{}/upload", s.web);
    checks::an_oversized_body_gets_413(&app_client(s.web, None), &url).await;
}

#[tokio::test]
async fn compress_gzips_for_clients_that_accept_it_and_only_for_them() {
    let backend = support::Backend::start("app").await;
    let mut model = plain_http_model();
    model.policy.compress = Some(Compress {
        min_response_body_bytes: 10,
    });
    let s = serve(model, &format!("http://{}", backend.addr)).await;
    let url = format!("http://app.test:{}/", s.web);
    checks::gzip_only_for_clients_that_accept_it(&app_client(s.web, None), &url).await;
}

#[tokio::test]
async fn a_request_without_a_required_header_is_refused_with_403() {
    let backend = support::Backend::start("app").await;
    let mut model = plain_http_model();
    model.policy.required_headers = vec!["X-Api-Key".to_string(), "X-Tenant".to_string()];
    let s = serve(model, &format!("http://{}", backend.addr)).await;
    let url = format!("http://app.test:{}/", s.web);
    checks::a_missing_or_empty_required_header_gets_403(
        &app_client(s.web, None),
        &url,
        &["X-Api-Key", "X-Tenant"],
    )
    .await;
}

#[tokio::test]
async fn a_client_from_a_denied_network_gets_403_and_others_get_through() {
    let backend = support::Backend::start("app").await;
    let mut model = plain_http_model();
    model.policy.ip_deny = vec!["127.0.0.1/32".parse().unwrap()];
    let s = serve(model, &format!("http://{}", backend.addr)).await;
    checks::a_denied_network_gets_403(
        &app_client(s.web, Some([127, 0, 0, 1].into())),
        &app_client(s.web, Some([127, 0, 0, 2].into())),
        &format!("http://app.test:{}/", s.web),
        &format!("http://127.0.0.1:{}/", s.web),
    )
    .await;
}

/// `openssl passwd -apr1 -salt abcdefgh secret`, as in render_common.
const SET_USER: &str = "user:$apr1$abcdefgh$h9FWgUz3n9YxylKLlR5SQ/";

#[tokio::test]
async fn a_policy_set_applies_only_to_the_service_that_opts_in_with_its_tag() {
    let dir = tempfile::tempdir().unwrap();
    let htpasswd = dir.path().join("admin.htpasswd");
    std::fs::write(&htpasswd, format!("{SET_USER}\n")).unwrap();
    // Traefik reads the file itself.
    a_set_s_basic_auth_guards_only_the_service_that_opts_in(BasicAuth {
        realm: "admin".to_string(),
        users: Vec::new(),
        users_file: Some(htpasswd.display().to_string()),
    })
    .await;
}

#[tokio::test]
async fn a_policy_set_s_users_from_a_consul_key_are_rendered_inline_and_guard_only_its_service() {
    // The operator read the set's `usersFrom.consulKey`; Traefik gets the users in its KV tree.
    a_set_s_basic_auth_guards_only_the_service_that_opts_in(BasicAuth {
        realm: "admin".to_string(),
        users: vec![SET_USER.to_string()],
        users_file: None,
    })
    .await;
}

async fn a_set_s_basic_auth_guards_only_the_service_that_opts_in(auth: BasicAuth) {
    let admin = support::Backend::start("admin").await;
    let public = support::Backend::start("public").await;
    let mut model = plain_http_model();
    model.discovery.primary = DiscoveryPrimary::Consul;
    model.discovery.consul.refresh_interval = Duration::from_secs(1);
    model.policies.insert(
        "admin".to_string(),
        Policy {
            basic_auth: Some(auth),
            ..Policy::default()
        },
    );
    // The entry point policy still applies to both services.
    model
        .policy
        .headers
        .insert("X-Entry-Policy".to_string(), "on".to_string());
    let s = serve(model, &format!("http://{}", admin.addr)).await;
    let consul = s.twin.consul_addr();
    support::register_consul_service(
        consul,
        "admin",
        admin.port(),
        &[
            "traefik.enable=true",
            "traefik.http.routers.admin.middlewares=admin@consul",
        ],
    )
    .await;
    support::register_consul_service(consul, "public", public.port(), &["traefik.enable=true"])
        .await;

    let status_of = |host: &'static str| {
        let web = s.web;
        async move {
            support::get_with_host(web, host, "/")
                .await
                .map(|seen| seen.status)
        }
    };
    let both_routed = eventually(Duration::from_secs(15), || async {
        let (a, p) = (
            status_of("admin.example.test").await?,
            status_of("public.example.test").await?,
        );
        (a != 404 && p != 404).then_some((a, p))
    })
    .await;
    assert_eq!(
        both_routed,
        Some((401, 200)),
        "admin asks for credentials, public does not; log:\n{}",
        s.traefik.guard.log()
    );
    let c = reqwest::Client::builder()
        .no_proxy()
        .resolve("admin.example.test", ([127, 0, 0, 1], s.web).into())
        .build()
        .unwrap();
    let url = format!("http://admin.example.test:{}/", s.web);
    let unauthorized = c.get(&url).send().await.unwrap();
    assert_eq!(
        unauthorized.headers()["www-authenticate"],
        "Basic realm=\"admin\""
    );
    let ok = c
        .get(&url)
        .basic_auth("user", Some(PASSWORD))
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), 200);
    assert_eq!(ok.headers()["x-backend"], "admin");
    assert_eq!(ok.headers()["x-entry-policy"], "on");
    let public = support::get_with_host(s.web, "public.example.test", "/")
        .await
        .unwrap();
    assert_eq!(public.header("x-entry-policy"), Some("on"));
    assert_eq!(public.header("x-backend"), Some("public"));
}

fn access_lines(log: &str) -> Vec<Value> {
    log.lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v.get("DownstreamStatus").is_some())
        .collect()
}

#[tokio::test]
async fn access_log_lines_reach_stdout_as_json_without_the_filtered_codes_or_the_secret() {
    const SENTINEL: &str = "Bearer sentinel-token-5f3a";
    let backend = support::Backend::start("app").await;
    let mut model = plain_http_model();
    model.logging = Logging {
        level: "INFO".to_string(),
        format: "json".to_string(),
        access_log: Some(AccessLog {
            format: "json".to_string(),
            status_codes: vec!["400-499".to_string()],
            min_duration: None,
            headers: true,
            redact_headers: vec!["Authorization".to_string()],
        }),
    };
    let s = serve(model, &format!("http://{}", backend.addr)).await;
    let c = app_client(s.web, None);
    let ok = c
        .get(format!("http://app.test:{}/served", s.web))
        .header("Authorization", SENTINEL)
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), 200);
    let missing = c
        .get(format!("http://127.0.0.1:{}/nowhere", s.web))
        .header("Authorization", SENTINEL)
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status(), 404);

    let lines = eventually(Duration::from_secs(5), || {
        let lines = access_lines(&s.traefik.guard.log());
        async move {
            lines
                .iter()
                .any(|l| l["RequestPath"] == "/nowhere")
                .then_some(lines)
        }
    })
    .await
    .unwrap_or_else(|| panic!("no access log line; log:\n{}", s.traefik.guard.log()));
    // Before the tree loaded, the harness's own /api polls were 404s too: they are logged.
    assert!(
        lines.iter().all(|l| l["DownstreamStatus"] == 404),
        "only the kept codes: {lines:?}"
    );
    assert!(
        !lines.iter().any(|l| l["RequestPath"] == "/served"),
        "{lines:?}"
    );
    let nowhere = lines
        .iter()
        .find(|l| l["RequestPath"] == "/nowhere")
        .unwrap();
    assert_eq!(nowhere["request_Authorization"], "REDACTED", "{nowhere}");
    assert!(!s.traefik.guard.log().contains("sentinel-token-5f3a"));
}

#[tokio::test]
async fn access_log_lines_reach_stdout_in_the_common_log_format_when_chosen() {
    let backend = support::Backend::start("app").await;
    let mut model = plain_http_model();
    model.logging.access_log = Some(AccessLog {
        format: "common".to_string(),
        status_codes: Vec::new(),
        min_duration: None,
        headers: false,
        redact_headers: Vec::new(),
    });
    let s = serve(model, &format!("http://{}", backend.addr)).await;
    let r = app_client(s.web, None)
        .get(format!("http://app.test:{}/clf-probe", s.web))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let line = eventually(Duration::from_secs(5), || {
        let log = s.traefik.guard.log();
        async move {
            log.lines()
                .find(|l| l.contains("\"GET /clf-probe HTTP/1.1\" 200"))
                .map(str::to_string)
        }
    })
    .await
    .unwrap_or_else(|| panic!("no CLF line; log:\n{}", s.traefik.guard.log()));
    assert!(
        serde_json::from_str::<Value>(&line).is_err(),
        "a text line: {line}"
    );
}

/// A backend that answers every request after `delay`.
async fn slow_backend(delay: Duration) -> std::net::SocketAddr {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                let _ = stream.read(&mut buf).await;
                tokio::time::sleep(delay).await;
                let _ = stream
                    .write_all(
                        b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\nConnection: close\r\n\r\nslow",
                    )
                    .await;
            });
        }
    });
    addr
}

/// Starts a request that takes 3 s at the backend, sends Traefik SIGTERM (by its PID) while it
/// is in flight, and returns what the client got. Traefik keeps accepting for
/// `requestAcceptGraceTimeout` (1 s, rendered for the handover) before its `graceTimeOut` starts,
/// so the request outlasts both with a short grace.
async fn in_flight_request_across_sigterm(grace: Duration) -> Result<u16, String> {
    let backend = slow_backend(Duration::from_secs(3)).await;
    let mut model = plain_http_model();
    model.transport.grace_timeout = grace;
    let s = serve(model, &format!("http://{backend}")).await;
    let c = app_client(s.web, None);
    let url = format!("http://app.test:{}/", s.web);
    let request = tokio::spawn(async move { c.get(&url).send().await });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let killed = std::process::Command::new("kill")
        .args(["-TERM", &s.traefik.guard.pid().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    match request.await.unwrap() {
        Ok(r) => Ok(r.status().as_u16()),
        Err(e) => Err(e.to_string()),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_in_flight_when_traefik_is_stopped_finishes_within_the_grace_timeout() {
    assert_eq!(
        in_flight_request_across_sigterm(Duration::from_secs(10)).await,
        Ok(200)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_grace_timeout_shorter_than_the_request_cuts_it_off_so_the_drain_is_what_saves_it() {
    let outcome = in_flight_request_across_sigterm(Duration::from_millis(200)).await;
    assert_ne!(outcome, Ok(200), "the request outlived a 200 ms drain");
}

/// Sends an unfinished request head and reports whether Traefik closed (or answered) the
/// connection within `wait`.
async fn closes_a_stalled_request(read_timeout: Duration, wait: Duration) -> bool {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let backend = support::Backend::start("app").await;
    let mut model = plain_http_model();
    model.transport.read_timeout = read_timeout;
    let s = serve(model, &format!("http://{}", backend.addr)).await;
    let mut conn = tokio::net::TcpStream::connect(("127.0.0.1", s.web))
        .await
        .unwrap();
    conn.write_all(b"GET / HTTP/1.1\r\nHost: app.test\r\n")
        .await
        .unwrap();
    let mut buf = [0u8; 512];
    // EOF or an answer (Go may write 408) both mean the server gave up on the request.
    tokio::time::timeout(wait, conn.read(&mut buf))
        .await
        .is_ok()
}

#[tokio::test]
async fn the_read_timeout_closes_a_connection_whose_request_never_finishes() {
    assert!(closes_a_stalled_request(Duration::from_millis(500), Duration::from_secs(5)).await);
}

#[tokio::test]
async fn with_the_default_read_timeout_the_same_stalled_request_is_still_waited_for() {
    // Guards the test above: the close comes from the rendered readTimeout.
    assert!(!closes_a_stalled_request(Duration::from_secs(60), Duration::from_secs(3)).await);
}
