//! The surface next to the real loop, with no wiring inside it: the operator runs against the
//! twin, `server::follow` reads what it writes, and the page and `/api/status` show it.
#![allow(clippy::unwrap_used, clippy::panic)] // tests fail loudly

mod surface_common;

use std::time::Duration;

use hashistack_twin::{Twin, TwinConfig};
use proxy_operator::consul::{ConsulApi, ConsulClient};
use proxy_operator::metrics::Metrics;
use proxy_operator::nomad::NomadClient;
use proxy_operator::probe::fake::FakeProbe;
use proxy_operator::reconcile::{Config, Operator};
use proxy_operator::server::{self, Role, Surface};
use proxy_operator::transport::{Api, ClientConfig};
use surface_common::{client, start};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_follows_the_status_the_real_loop_writes() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let twin = Twin::start(TwinConfig::default()).await.unwrap();
    let consul = ConsulClient::new(
        &ClientConfig::for_address(Api::Consul, &twin.consul_addr().to_string()).unwrap(),
    )
    .unwrap();
    let nomad = NomadClient::new(
        &ClientConfig::for_address(Api::Nomad, &twin.nomad_addr().to_string()).unwrap(),
    )
    .unwrap();
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
