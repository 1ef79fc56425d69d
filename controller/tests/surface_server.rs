//! The HTTP surface on a loopback port: every route, OpenMetrics that parse strictly, a page
//! that follows the status by itself, and no secret anywhere.
#![allow(clippy::unwrap_used, clippy::panic)] // tests fail loudly

mod surface_common;

use std::time::Duration;

use futures::StreamExt as _;
use proxy_operator::metrics::{self, Api, Metrics, PassOutcome, RolloutStage};
use proxy_operator::server::{Role, SpecSummary, Surface};
use proxy_operator::spec::status::{
    Condition, ConditionStatus, HistoryEntry, Outcome, Phase, ProxyStatus,
};
use proxy_operator::spec::{self, FieldError, ProxyKind};
use surface_common::{client, parse_openmetrics, start};

const SENTINEL_TOKEN: &str = "sentinel-token-3f9a1c";
const SENTINEL_HASH: &str = "admin:$apr1$sentinel$Zx9QmXk1Yb2v0Q7fLq3Jc/";

fn example(name: &str) -> Vec<u8> {
    std::fs::read(format!(
        "{}/../nomad-jobs/examples/{name}",
        env!("CARGO_MANIFEST_DIR")
    ))
    .unwrap()
}

/// A status as a careless writer could produce it: the hash turns up in messages.
fn status_with_secrets() -> ProxyStatus {
    let mut st = ProxyStatus {
        phase: Phase::RolledBack,
        observed_index: 42,
        observed_digest: Some("abcdef0123456789".into()),
        proxy: Some(ProxyKind::Traefik),
        job_version: Some(3),
        leader: Some("node-1".into()),
        warnings: vec![FieldError::new("spec.x", format!("saw {SENTINEL_HASH}"))],
        ..ProxyStatus::default()
    };
    st.set_condition(
        Condition {
            condition_type: "Ready".into(),
            status: ConditionStatus::False,
            reason: "GateFailed".into(),
            message: "route probe <b>failed</b>".into(),
            ..Condition::default()
        },
        "2026-12-06T03:00:00Z",
    );
    st.set_condition(
        Condition {
            condition_type: "Valid".into(),
            status: ConditionStatus::True,
            reason: "Valid".into(),
            message: format!("users {SENTINEL_HASH}"),
            ..Condition::default()
        },
        "2026-12-06T03:00:00Z",
    );
    st.push_history(HistoryEntry {
        digest: "0123456789abcdef".into(),
        proxy: Some(ProxyKind::Caddy),
        outcome: Outcome::RolledBack,
        started_at: "2026-12-06T02:59:00Z".into(),
        duration_ms: 12_500,
        reason: "route probe demo.localhost/ answered 502".into(),
    });
    st
}

fn surface_with_everything() -> Surface {
    let metrics = Metrics::new();
    metrics.pass_completed(PassOutcome::Ok);
    metrics.pass_completed(PassOutcome::Error(&format!("consul {SENTINEL_TOKEN}")));
    metrics.api_request(
        Api::Consul,
        metrics::endpoint_class(&format!("/v1/kv/x?token={SENTINEL_TOKEN}")),
        Some(200),
        Duration::from_millis(2),
    );
    metrics.watch_woke("config");
    metrics.rollout_finished(
        Outcome::RolledBack,
        &[(RolloutStage::Verify, Duration::from_secs(2))],
    );
    let surface = Surface::new(metrics);
    let validated = spec::load(&example("traefik-consul-primary.yaml")).unwrap();
    surface.publish_spec(SpecSummary::of(&validated, "127.0.0.1"));
    surface.publish_status(&status_with_secrets());
    surface.set_role(Role::Leader);
    surface
}

#[tokio::test]
async fn every_route_answers_and_readyz_waits_for_the_watch_and_a_pass() {
    let surface = surface_with_everything();
    let (addr, stop) = start(surface.clone()).await;
    let http = client();
    let get = |path: &str| http.get(format!("http://{addr}{path}")).send();

    assert_eq!(get("/healthz").await.unwrap().status(), 200);
    let not_ready = get("/readyz").await.unwrap();
    assert_eq!(not_ready.status(), 503);
    assert!(not_ready.text().await.unwrap().contains("watch"));
    surface.watch_established();
    let still = get("/readyz").await.unwrap();
    assert_eq!(still.status(), 503);
    assert!(still.text().await.unwrap().contains("pass"));
    surface.pass_completed();
    assert_eq!(get("/readyz").await.unwrap().status(), 200);

    let api = get("/api/status").await.unwrap();
    assert_eq!(api.status(), 200);
    let json: serde_json::Value = api.json().await.unwrap();
    assert_eq!(json["phase"], "RolledBack");
    assert_eq!(json["observedIndex"], 42);

    let page = get("/").await.unwrap();
    assert!(
        page.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/html")
    );
    let html = page.text().await.unwrap();
    for needle in [
        ">RolledBack<",
        "leader",
        "node-1",
        "traefik",
        "job version 3",
        "GateFailed",
        "route probe &lt;b&gt;failed&lt;/b&gt;",
        "answered 502",
        // History names the proxy each rollout ran.
        "<td>caddy</td>",
        "basic auth: realm &quot;example&quot;, users from Consul key proxy-operator/secrets/basic-auth",
        "/dashboard/",
        "EventSource",
        r#"name="viewport""#,
    ] {
        assert!(html.contains(needle), "page lacks {needle}:\n{html}");
    }
    assert!(!html.contains("<b>failed"), "text is escaped");
    assert!(
        !html.contains("src=\"http") && !html.contains("href=\"https://"),
        "no CDN"
    );
    let schema = get("/schemas/proxyconfig.v1alpha1.schema.json")
        .await
        .unwrap();
    assert_eq!(schema.status(), 200);
    let schema: serde_json::Value = schema.json().await.unwrap();
    assert_eq!(schema["title"], "ProxyConfig");
    assert_eq!(get("/schemas/nope.json").await.unwrap().status(), 404);
    let css = get("/style.css").await.unwrap();
    assert!(
        css.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/css")
    );
    let _ = stop.send(());
}

#[tokio::test]
async fn metrics_parse_as_openmetrics_and_carry_what_was_recorded() {
    let surface = surface_with_everything();
    let (addr, stop) = start(surface).await;
    let resp = client()
        .get(format!("http://{addr}/metrics"))
        .send()
        .await
        .unwrap();
    assert!(
        resp.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("application/openmetrics-text")
    );
    let exp = parse_openmetrics(&resp.text().await.unwrap());
    assert_eq!(
        exp.value("proxy_operator_phase", &[("phase", "RolledBack")]),
        Some(1.0)
    );
    assert_eq!(exp.value("proxy_operator_leader", &[]), Some(1.0));
    assert_eq!(
        exp.value("proxy_operator_leader_changes_total", &[]),
        Some(1.0)
    );
    assert_eq!(
        exp.value(
            "proxy_operator_rollouts_total",
            &[("outcome", "rolled_back")]
        ),
        Some(1.0)
    );
    assert_eq!(
        exp.value(
            "proxy_operator_reconcile_errors_total",
            &[("reason", "consul")]
        ),
        Some(1.0)
    );
    assert_eq!(
        exp.value(
            "proxy_operator_api_requests_total",
            &[("api", "consul"), ("class", "kv"), ("code", "200")]
        ),
        Some(1.0)
    );
    assert_eq!(
        exp.value("proxy_operator_watch_wakeups_total", &[("watch", "config")]),
        Some(1.0)
    );
    assert!(
        exp.value(
            "proxy_operator_build_info",
            &[("version", env!("CARGO_PKG_VERSION"))]
        )
        .is_some()
    );
    let _ = stop.send(());
}

#[tokio::test]
async fn sentinel_secrets_appear_on_no_route() {
    let surface = surface_with_everything();
    surface.watch_established();
    surface.pass_completed();
    let (addr, stop) = start(surface).await;
    let http = client();
    for path in ["/", "/metrics", "/api/status", "/readyz", "/healthz"] {
        let body = http
            .get(format!("http://{addr}{path}"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        assert!(!body.contains(SENTINEL_TOKEN), "{path} shows the token");
        assert!(!body.contains("$apr1$"), "{path} shows the hash:\n{body}");
    }
    let mut events = http
        .get(format!("http://{addr}/events"))
        .send()
        .await
        .unwrap()
        .bytes_stream();
    let first = tokio::time::timeout(Duration::from_secs(5), events.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    let first = String::from_utf8_lossy(&first);
    assert!(!first.contains("$apr1$") && !first.contains(SENTINEL_TOKEN));
    let _ = stop.send(());
}

#[tokio::test]
async fn the_event_stream_sends_the_new_phase_without_a_reload() {
    let surface = surface_with_everything();
    let (addr, stop) = start(surface.clone()).await;
    let resp = client()
        .get(format!("http://{addr}/events"))
        .send()
        .await
        .unwrap();
    assert!(
        resp.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/event-stream")
    );
    let mut events = resp.bytes_stream();
    let mut seen = String::new();
    while !seen.contains("RolledBack") {
        let chunk = tokio::time::timeout(Duration::from_secs(5), events.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        seen.push_str(&String::from_utf8_lossy(&chunk));
    }
    assert!(seen.contains("event: update"));
    surface.publish_status(&ProxyStatus {
        phase: Phase::Ready,
        ..status_with_secrets()
    });
    let mut next = String::new();
    while !next.contains(r#"id="phase">Ready<"#) {
        let chunk = tokio::time::timeout(Duration::from_secs(5), events.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        next.push_str(&String::from_utf8_lossy(&chunk));
    }
    let _ = stop.send(());
}

#[tokio::test]
async fn a_follower_serves_the_page_and_metrics_too() {
    let surface = Surface::new(Metrics::new());
    surface.set_role(Role::Follower);
    let (addr, stop) = start(surface).await;
    let http = client();
    let html = http
        .get(format!("http://{addr}/"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(html.contains("follower"));
    assert!(html.contains("No status yet"));
    let api = http
        .get(format!("http://{addr}/api/status"))
        .send()
        .await
        .unwrap();
    assert_eq!(api.status(), 503);
    let exp = parse_openmetrics(
        &http
            .get(format!("http://{addr}/metrics"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap(),
    );
    assert_eq!(exp.value("proxy_operator_leader", &[]), Some(0.0));
    let _ = stop.send(());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_shows_what_the_leader_wrote_to_consul() {
    use proxy_operator::consul::{ConsulApi, ConsulClient};
    let _ = rustls::crypto::ring::default_provider().install_default();
    let twin = hashistack_twin::Twin::start(hashistack_twin::TwinConfig::default())
        .await
        .unwrap();
    let consul = ConsulClient::new(
        &proxy_operator::transport::ClientConfig::for_address(
            proxy_operator::transport::Api::Consul,
            &twin.consul_addr().to_string(),
        )
        .unwrap(),
    )
    .unwrap();
    let surface = Surface::new(Metrics::new());
    surface.set_role(Role::Follower);
    let (stop_follow, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(proxy_operator::server::follow(
        consul.clone(),
        "proxy-operator".into(),
        "127.0.0.1".into(),
        surface.clone(),
        async move {
            let _ = stopped.await;
        },
    ));
    let (addr, stop) = start(surface).await;
    consul
        .kv_put(
            "proxy-operator/config",
            &example("traefik-consul-primary.yaml"),
            None,
        )
        .await
        .unwrap();
    let mut status = status_with_secrets();
    status.phase = Phase::Degraded;
    consul
        .kv_put(
            "proxy-operator/status",
            &serde_json::to_vec(&status).unwrap(),
            None,
        )
        .await
        .unwrap();
    let http = client();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let html = http
            .get(format!("http://{addr}/"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        if html.contains(r#"id="phase">Degraded<"#) && html.contains("basic auth: realm") {
            assert!(!html.contains("$apr1$"));
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the page never showed the status:\n{html}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let _ = stop_follow.send(());
    let _ = stop.send(());
    twin.shutdown().await;
}

#[tokio::test]
async fn a_follower_is_ready_once_its_follow_watch_answered_and_never_waits_for_a_pass() {
    let surface = Surface::new(Metrics::new());
    surface.set_role(Role::Follower);
    let (addr, stop) = start(surface.clone()).await;
    let http = client();
    let get = |path: &str| http.get(format!("http://{addr}{path}")).send();

    let not_ready = get("/readyz").await.unwrap();
    assert_eq!(not_ready.status(), 503);
    assert!(
        not_ready.text().await.unwrap().contains("follow watch"),
        "says what it waits for"
    );
    surface.set_following(true);
    assert_eq!(get("/readyz").await.unwrap().status(), 200);
    assert!(!surface.readiness().pass_completed, "no pass ran");
    // Following stopped (it took the lock): as leader it waits for its own watch and pass.
    surface.set_following(false);
    surface.set_role(Role::Leader);
    assert_eq!(get("/readyz").await.unwrap().status(), 503);
    let _ = stop.send(());
}
