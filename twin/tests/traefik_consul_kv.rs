//! Real Traefik (`providers.consul`, its KV provider) reads routers, services and middlewares from
//! the twin's KV and applies changes pushed through blocking queries.
#![allow(clippy::unwrap_used, clippy::panic)]

#[path = "../../tests/support/mod.rs"]
mod support;

use std::process::Command;
use std::time::Duration;

use base64::Engine;
use hashistack_twin::{Api, Twin, TwinConfig};
use reqwest::StatusCode;
use serde_json::{Value, json};
use support::{Backend, ChildGuard, eventually, free_port, traefik_bin};

const TOKEN: &str = "kv-secret-token";

fn b64(s: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(s)
}

async fn header_through_traefik(
    http: &reqwest::Client,
    web: u16,
) -> Option<(StatusCode, String, String)> {
    let resp = http
        .get(format!("http://127.0.0.1:{web}/"))
        .header("Host", "kv.test")
        .send()
        .await
        .ok()?;
    let status = resp.status();
    let policy = resp
        .headers()
        .get("X-Policy")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let backend = resp
        .headers()
        .get("X-Backend")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    Some((status, policy, backend))
}

#[tokio::test]
async fn traefik_consul_kv_applies_routers_and_middlewares_written_in_one_transaction() {
    let twin = Twin::start(TwinConfig {
        acl_token: Some(TOKEN.into()),
        ..TwinConfig::default()
    })
    .await
    .unwrap();
    let backend = Backend::start("kv-backend").await;
    let consul = format!("http://{}", twin.consul_addr());
    let http = reqwest::Client::new();

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
  consul:
    rootKey: traefik
    endpoints: ["{}"]
    token: "{TOKEN}"
"#,
        twin.consul_addr()
    );
    let path = dir.path().join("traefik.yml");
    std::fs::write(&path, config).unwrap();
    let mut cmd = Command::new(traefik_bin());
    cmd.arg(format!("--configfile={}", path.display()));
    let traefik = ChildGuard::spawn(cmd, &dir.path().join("traefik.log"));
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
        traefik.log()
    );

    let url = format!("http://127.0.0.1:{}", backend.port());
    let ops = json!([
        {"KV": {"Verb": "set", "Key": "traefik/http/routers/r1/rule", "Value": b64("Host(`kv.test`)")}},
        {"KV": {"Verb": "set", "Key": "traefik/http/routers/r1/entryPoints/0", "Value": b64("web")}},
        {"KV": {"Verb": "set", "Key": "traefik/http/routers/r1/service", "Value": b64("s1")}},
        {"KV": {"Verb": "set", "Key": "traefik/http/routers/r1/middlewares/0", "Value": b64("m1")}},
        {"KV": {"Verb": "set", "Key": "traefik/http/services/s1/loadBalancer/servers/0/url", "Value": b64(&url)}},
        {"KV": {"Verb": "set", "Key": "traefik/http/middlewares/m1/headers/customResponseHeaders/X-Policy", "Value": b64("v1")}},
    ]);
    let resp = http
        .put(format!("{consul}/v1/txn"))
        .header("X-Consul-Token", TOKEN)
        .json(&ops)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK, "{:?}", resp.text().await);

    let v1 = eventually(Duration::from_secs(10), || {
        let http = http.clone();
        async move {
            let (status, policy, backend) = header_through_traefik(&http, web).await?;
            (status == StatusCode::OK && policy == "v1" && backend == "kv-backend").then_some(())
        }
    })
    .await;
    assert!(
        v1.is_some(),
        "KV config never took effect:\n{}",
        traefik.log()
    );

    // Idle: one blocking recursive GET outstanding (wait=15000ms), nothing else.
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let before = twin.requests(Api::Consul);
    tokio::time::sleep(Duration::from_secs(3)).await;
    let idle = twin.requests(Api::Consul) - before;
    eprintln!("consul requests from Traefik while idle for 3 s: {idle} (total {before})");
    assert!(
        idle <= 4,
        "Traefik sent {idle} requests in 3 s idle: {:#?}",
        twin.faults().request_log(Api::Consul)
    );
    let log = twin.faults().request_log(Api::Consul);
    assert!(
        log.iter()
            .any(|r| r.uri.starts_with("/v1/kv/traefik?index=") && r.uri.contains("recurse=")),
        "Traefik never blocked on the prefix: {log:#?}"
    );

    let resp = http
        .put(format!(
            "{consul}/v1/kv/traefik/http/middlewares/m1/headers/customResponseHeaders/X-Policy"
        ))
        .header("X-Consul-Token", TOKEN)
        .body("v2")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.json::<Value>().await.unwrap(), json!(true));
    let v2 = eventually(Duration::from_secs(10), || {
        let http = http.clone();
        async move {
            let (status, policy, _) = header_through_traefik(&http, web).await?;
            (status == StatusCode::OK && policy == "v2").then_some(())
        }
    })
    .await;
    assert!(
        v2.is_some(),
        "header change never took effect:\n{}",
        traefik.log()
    );

    // Deleting the whole tree empties Traefik's KV config: the route disappears.
    let resp = http
        .delete(format!("{consul}/v1/kv/traefik?recurse"))
        .header("X-Consul-Token", TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let gone = eventually(Duration::from_secs(10), || {
        let http = http.clone();
        async move {
            let (status, _, _) = header_through_traefik(&http, web).await?;
            (status == StatusCode::NOT_FOUND).then_some(())
        }
    })
    .await;
    assert!(
        gone.is_some(),
        "route survived the tree delete:\n{}",
        traefik.log()
    );
    drop(traefik);
    twin.shutdown().await;
}
