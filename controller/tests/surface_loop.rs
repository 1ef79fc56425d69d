//! The surface next to the real loop, with no wiring inside it: the operator runs against the
//! twin, `server::follow` reads what it writes, and the page and `/api/status` show it.
#![allow(clippy::unwrap_used, clippy::panic)] // tests fail loudly

mod surface_common;

use std::time::Duration;

use hashistack_twin::{Twin, TwinConfig};
use proxy_operator::consul::ConsulApi;
use proxy_operator::leader::{Elector, ElectorConfig};
use proxy_operator::metrics::Metrics;
use proxy_operator::probe::fake::FakeProbe;
use proxy_operator::reconcile::{Config, Operator};
use proxy_operator::server::{self, Role, Surface};
use surface_common::{client, start, twin_clients};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_follows_the_status_the_real_loop_writes() {
    let twin = Twin::start(TwinConfig::default()).await.unwrap();
    let (consul, nomad) = twin_clients(&twin);
    consul
        .kv_put(
            "proxy-operator/config",
            b"apiVersion: proxy-operator.io/v1alpha1\nkind: ProxyConfig\nspec:\n  proxy: traefik\n  paused: true\n  middlewares:\n    rateLimit: {average: 10, burst: 20}\n",
            Some(0),
        )
        .await
        .unwrap();
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let stopped = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|s| *s).await;
    };
    let operator = Operator::new(
        Config::new("proxy-operator"),
        consul.clone(),
        nomad,
        FakeProbe::healthy(),
    );
    let loop_task = tokio::spawn(operator.run(stopped(stop_rx.clone())));

    let surface = Surface::new(Metrics::new());
    surface.set_role(Role::Leader);
    tokio::spawn(server::follow(
        consul,
        "proxy-operator".into(),
        "127.0.0.1".into(),
        surface.clone(),
        stopped(stop_rx.clone()),
    ));
    let (addr, stop_http) = start(surface).await;
    let http = client();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let html = http
            .get(format!("http://{addr}/"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        if html.contains(r#"id="phase">Paused<"#) {
            assert!(
                html.contains("rate limit: 10 requests per 1s on average, burst 20"),
                "{html}"
            );
            assert!(html.contains("paused: nothing is changed"), "{html}");
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the page never showed Paused:\n{html}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let api: serde_json::Value = http
        .get(format!("http://{addr}/api/status"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(api["phase"], "Paused");
    let metrics = http
        .get(format!("http://{addr}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("proxy_operator_phase{phase=\"Paused\"} 1"),
        "{metrics}"
    );

    let _ = stop_tx.send(true);
    let _ = stop_http.send(());
    tokio::time::timeout(Duration::from_secs(10), loop_task)
        .await
        .unwrap()
        .unwrap();
    twin.shutdown().await;
}

/// One replica as `run` starts it: its own surface and listener, its elector on the twin.
async fn replica(
    twin: &Twin,
    name: &str,
    stop: tokio::sync::watch::Receiver<bool>,
) -> (Surface, std::net::SocketAddr, tokio::task::JoinHandle<()>) {
    let (consul, nomad) = twin_clients(twin);
    let node = consul.agent_self().await.unwrap().config.node_name;
    let elector = Elector::spawn(
        consul.clone(),
        ElectorConfig {
            ttl: Duration::from_secs(10),
            allocation: Some(name.to_owned()),
            ..ElectorConfig::new("proxy-operator", node)
        },
    );
    let surface = Surface::new(Metrics::new());
    let (addr, _stop_http) = start(surface.clone()).await;
    std::mem::forget(_stop_http); // the listener lives as long as the test
    let operator = Operator::new(
        Config::new("proxy-operator"),
        consul,
        nomad,
        FakeProbe::healthy(),
    )
    .with_leader(elector)
    .with_surface(surface.clone());
    let mut stop = stop;
    let task = tokio::spawn(operator.run(async move {
        let _ = stop.wait_for(|s| *s).await;
    }));
    (surface, addr, task)
}

async fn get_json(addr: std::net::SocketAddr, path: &str) -> (u16, serde_json::Value) {
    let response = client()
        .get(format!("http://{addr}{path}"))
        .send()
        .await
        .unwrap();
    let code = response.status().as_u16();
    (code, response.json().await.unwrap_or_default())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_serves_the_leaders_status_as_follower_and_takes_over_when_the_leader_stops() {
    let twin = Twin::start(TwinConfig::default()).await.unwrap();
    let (writer, _) = twin_clients(&twin);
    writer
        .kv_put(
            "proxy-operator/config",
            b"apiVersion: proxy-operator.io/v1alpha1\nkind: ProxyConfig\nspec:\n  proxy: traefik\n  paused: true\n",
            Some(0),
        )
        .await
        .unwrap();
    let (stop_a, rx_a) = tokio::sync::watch::channel(false);
    let (surface_a, addr_a, task_a) = replica(&twin, "alloc-a", rx_a).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while surface_a.role() != Role::Leader || surface_a.status().is_none() {
        assert!(tokio::time::Instant::now() < deadline, "a never led");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (stop_b, rx_b) = tokio::sync::watch::channel(false);
    let (surface_b, addr_b, task_b) = replica(&twin, "alloc-b", rx_b).await;

    // b follows: its /api/status is what a wrote, and it says it is a follower.
    let api = loop {
        let (code, api) = get_json(addr_b, "/api/status").await;
        if code == 200 && api["role"] == "follower" {
            break api;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "b never served a's status as follower: {code} {api}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(api["phase"], "Paused", "{api}");
    assert_eq!(surface_b.role(), Role::Follower);
    let ready = client()
        .get(format!("http://{addr_b}/readyz"))
        .send()
        .await
        .unwrap();
    assert_eq!(
        ready.status().as_u16(),
        200,
        "a following follower is ready"
    );
    assert!(!surface_b.readiness().pass_completed, "b ran no pass");
    let (_, api_a) = get_json(addr_a, "/api/status").await;
    assert_eq!(api_a["role"], "leader");

    // a stops (releasing the lock): b leads, stops following and shows what it writes.
    let _ = stop_a.send(true);
    tokio::time::timeout(Duration::from_secs(10), task_a)
        .await
        .unwrap()
        .unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while !(surface_b.role() == Role::Leader && surface_b.readiness().pass_completed) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "b never took over: {surface_b:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(!surface_b.readiness().following, "a leader does not follow");
    let (_, api) = get_json(addr_b, "/api/status").await;
    assert_eq!(api["role"], "leader");
    assert_eq!(api["phase"], "Paused");

    let _ = stop_b.send(true);
    tokio::time::timeout(Duration::from_secs(10), task_b)
        .await
        .unwrap()
        .unwrap();
    twin.shutdown().await;
}
