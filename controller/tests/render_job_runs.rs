//! The rendered Nomad job really runs the proxy: registered with the twin's Nomad API (whose
//! executor runs `raw_exec` tasks as real processes and renders literal templates with the
//! job's delimiters), it starts real Traefik on the embedded static config.
// Tests fail loudly: unwrap and panic are how they report.
#![allow(clippy::unwrap_used, clippy::panic)]

#[path = "../../tests/support/mod.rs"]
mod support;

use std::time::Duration;

use proxy_operator::render::{self, RenderContext};
use proxy_operator::spec;
use serde_json::json;
use support::{eventually, free_port, traefik_bin};

#[tokio::test]
async fn the_rendered_raw_exec_job_starts_real_traefik_under_the_twins_executor() {
    let twin = hashistack_twin::Twin::start(hashistack_twin::TwinConfig::default())
        .await
        .unwrap();
    let internal = free_port();
    let doc = format!(
        r#"
apiVersion: proxy-operator.io/v1alpha1
kind: ProxyConfig
spec:
  proxy: traefik
  discovery:
    consul: {{ address: "{consul}" }}
    nomad: {{ address: "http://{nomad}" }}
  entryPoints:
    web: {{ address: "127.0.0.1:{web}" }}
    websecure: {{ address: "127.0.0.1:{websecure}" }}
  metrics: {{ address: "127.0.0.1:{metrics}" }}
  dashboard: {{ address: "127.0.0.1:{internal}" }}
  job:
    id: proxy-render-test
    driver:
      rawExec: {{ command: "{bin}" }}
"#,
        consul = twin.consul_addr(),
        nomad = twin.nomad_addr(),
        web = free_port(),
        websecure = free_port(),
        metrics = free_port(),
        bin = traefik_bin().display(),
    );
    let validated = spec::load(doc.as_bytes()).unwrap();
    let rendered = render::render(&validated, &RenderContext::default()).unwrap();

    let _ = rustls::crypto::ring::default_provider().install_default();
    let c = reqwest::Client::builder()
        .timeout(Duration::from_secs(2))
        .build()
        .unwrap();
    let resp = c
        .post(format!("http://{}/v1/jobs", twin.nomad_addr()))
        .json(&json!({ "Job": rendered.job }))
        .send()
        .await
        .unwrap();
    let status = resp.status();
    assert!(
        status.is_success(),
        "register: {status} {}",
        resp.text().await.unwrap_or_default()
    );

    let ping = format!("http://127.0.0.1:{internal}/ping");
    let up = eventually(Duration::from_secs(20), || {
        let (c, ping) = (c.clone(), ping.clone());
        async move { c.get(&ping).send().await.ok().filter(|r| r.status() == 200) }
    })
    .await;
    let job: serde_json::Value = c
        .get(format!(
            "http://{}/v1/job/proxy-render-test",
            twin.nomad_addr()
        ))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let allocs = c
        .get(format!(
            "http://{}/v1/job/proxy-render-test/allocations",
            twin.nomad_addr()
        ))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    twin.shutdown().await;
    assert!(
        up.is_some(),
        "Traefik from the rendered job never answered /ping; allocations: {allocs}"
    );
    assert_eq!(
        render::job_digest_of(&job),
        Some(rendered.job_digest.as_str()),
        "the stored job keeps the digest stamp the loop compares"
    );
}
