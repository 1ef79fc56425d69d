//! Real Traefik (`providers.consulCatalog`, `watch: true`) discovers services through the twin's
//! Consul catalog and routes real traffic to a real backend; the twin's blocking queries keep it
//! from polling.
#![allow(clippy::unwrap_used, clippy::panic)]

#[path = "../../tests/support/mod.rs"]
mod support;

use std::process::Command;
use std::time::Duration;

use hashistack_twin::{Api, Twin, TwinConfig};
use reqwest::StatusCode;
use serde_json::json;
use support::{Backend, ChildGuard, eventually, free_port, traefik_bin};

const TOKEN: &str = "catalog-secret-token";

struct Traefik {
    child: ChildGuard,
    web: u16,
    _dir: tempfile::TempDir,
}

async fn start_traefik(consul: std::net::SocketAddr) -> Traefik {
    let dir = tempfile::tempdir().unwrap();
    let (web, ping) = (free_port(), free_port());
    let config = format!(
        r#"
entryPoints:
  web:
    address: "127.0.0.1:{web}"
  ping:
    address: "127.0.0.1:{ping}"
ping:
  entryPoint: ping
log:
  level: DEBUG
providers:
  providersThrottleDuration: 100ms
  consulCatalog:
    watch: true
    exposedByDefault: false
    refreshInterval: 1s
    endpoint:
      address: "{consul}"
      token: "{TOKEN}"
"#
    );
    let path = dir.path().join("traefik.yml");
    std::fs::write(&path, config).unwrap();
    let mut cmd = Command::new(traefik_bin());
    cmd.arg(format!("--configfile={}", path.display()));
    let child = ChildGuard::spawn(cmd, &dir.path().join("traefik.log"));
    let http = reqwest::Client::new();
    let up = eventually(Duration::from_secs(10), || {
        let http = http.clone();
        async move {
            let r = http
                .get(format!("http://127.0.0.1:{ping}/ping"))
                .send()
                .await
                .ok()?;
            (r.status() == StatusCode::OK).then_some(())
        }
    })
    .await;
    assert!(
        up.is_some(),
        "traefik did not answer /ping:\n{}",
        child.log()
    );
    Traefik {
        child,
        web,
        _dir: dir,
    }
}

async fn through_traefik(
    http: &reqwest::Client,
    web: u16,
    host: &str,
) -> Option<(StatusCode, String)> {
    let resp = http
        .get(format!("http://127.0.0.1:{web}/hello"))
        .header("Host", host)
        .send()
        .await
        .ok()?;
    let status = resp.status();
    let backend = resp
        .headers()
        .get("X-Backend")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    Some((status, backend))
}

#[tokio::test]
async fn traefik_consul_catalog_routes_a_registered_service_and_drops_it_on_deregister() {
    let twin = Twin::start(TwinConfig {
        acl_token: Some(TOKEN.into()),
        ..TwinConfig::default()
    })
    .await
    .unwrap();
    let backend = Backend::start("catalog-backend").await;
    let consul = format!("http://{}", twin.consul_addr());
    let http = reqwest::Client::new();
    let traefik = start_traefik(twin.consul_addr()).await;

    let registration = json!({
        "Node": "hashistack-twin",
        "Address": "127.0.0.1",
        "SkipNodeUpdate": true,
        "Service": {
            "ID": "whoami-1",
            "Service": "whoami",
            "Tags": [
                "traefik.enable=true",
                "traefik.http.routers.whoami.rule=Host(`whoami.test`)",
                "traefik.http.routers.whoami.entrypoints=web"
            ],
            "Address": "127.0.0.1",
            "Port": backend.port()
        },
        "Check": {
            "CheckID": "service:whoami-1", "Name": "whoami alive", "Status": "passing",
            "ServiceID": "whoami-1", "Definition": {"HTTP": format!("http://127.0.0.1:{}/", backend.port()), "Interval": "10s"}
        }
    });
    let resp = http
        .put(format!("{consul}/v1/catalog/register"))
        .header("X-Consul-Token", TOKEN)
        .json(&registration)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);

    let routed = eventually(Duration::from_secs(10), || {
        let http = http.clone();
        async move {
            let (status, name) = through_traefik(&http, traefik.web, "whoami.test").await?;
            (status == StatusCode::OK && name == "catalog-backend").then_some(())
        }
    })
    .await;
    assert!(
        routed.is_some(),
        "route never reached the backend:\n{}",
        traefik.child.log()
    );

    // Idle: Traefik's two watch plans sit in blocking queries; it must not poll.
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let before = twin.requests(Api::Consul);
    tokio::time::sleep(Duration::from_secs(3)).await;
    let idle = twin.requests(Api::Consul) - before;
    eprintln!("consul requests from Traefik while idle for 3 s: {idle} (total {before})");
    assert!(
        idle <= 6,
        "Traefik sent {idle} requests in 3 s idle: {:#?}",
        twin.faults().request_log(Api::Consul)
    );
    // It really uses blocking queries against the twin.
    let log = twin.faults().request_log(Api::Consul);
    assert!(
        log.iter()
            .any(|r| r.uri.starts_with("/v1/catalog/services?index=")),
        "{log:#?}"
    );
    assert!(
        log.iter()
            .any(|r| r.uri.starts_with("/v1/health/state/any?index=")),
        "{log:#?}"
    );

    let resp = http
        .put(format!("{consul}/v1/catalog/deregister"))
        .header("X-Consul-Token", TOKEN)
        .json(&json!({"Node": "hashistack-twin", "ServiceID": "whoami-1"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let gone = eventually(Duration::from_secs(10), || {
        let http = http.clone();
        async move {
            let (status, _) = through_traefik(&http, traefik.web, "whoami.test").await?;
            (status == StatusCode::NOT_FOUND).then_some(())
        }
    })
    .await;
    assert!(
        gone.is_some(),
        "route survived deregistration:\n{}",
        traefik.child.log()
    );
    drop(traefik);
    twin.shutdown().await;
}
