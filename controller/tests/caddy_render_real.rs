//! Real Caddy judges the config the Caddy driver renders (`proxy::caddy::config`, the one Caddy
//! renderer): `caddy validate` loads and provisions every module without binding listeners
//! (contracts/CADDY.md §4), and a started Caddy serves the policy.
// Tests fail loudly: unwrap and panic are how they report.
#![allow(clippy::unwrap_used, clippy::panic)]

#[path = "../../tests/support/mod.rs"]
mod support;

mod caddy_support;
mod render_common;

use std::path::Path;
use std::process::Output;
use std::time::Duration;

use caddy_support::{caddy_cmd as caddy, catalog, instance};
use proxy_operator::proxy::caddy::{Catalog, RouteSettings, build_routes, live};
use proxy_operator::render::{self, Model, RenderContext};
use render_common::*;
use serde_json::Value;
use support::{ChildGuard, eventually, free_port};

fn validate(config: &Value) -> (Output, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("caddy.json");
    std::fs::write(&path, serde_json::to_vec_pretty(config).unwrap()).unwrap();
    let out = caddy(dir.path())
        .args(["validate", "--config"])
        .arg(&path)
        .output()
        .expect("run caddy validate");
    (out, dir)
}

/// Traefik router tags routing `host` to the service.
fn host_tags(service: &str, host: &str) -> Vec<String> {
    vec![
        "traefik.enable=true".to_string(),
        format!("traefik.http.routers.{service}.rule=Host(`{host}`)"),
    ]
}

fn services() -> Catalog {
    let (web, api) = (
        host_tags("web", "web.example.test"),
        host_tags("api", "api.example.test"),
    );
    fn tags(t: &[String]) -> Vec<&str> {
        t.iter().map(String::as_str).collect()
    }
    catalog(vec![
        instance("web", 18082, &tags(&web), "passing"),
        instance("web", 18083, &tags(&web), "passing"),
        instance("api", 18084, &tags(&api), "passing"),
    ])
}

/// The live config the driver loads for `model` and the catalog, as JSON.
fn live_config(model: &Model, catalog: &Catalog) -> Value {
    let routes = build_routes(catalog, &RouteSettings::from_model(model));
    serde_json::from_slice(&live(model, &routes).unwrap().body).unwrap()
}

/// Caddy's storage root (and the certificate folder it loads) must exist and be writable where
/// validate runs.
fn with_storage(mut model: Model, dir: &Path) -> Model {
    let certs = dir.join("certs");
    std::fs::create_dir_all(&certs).unwrap();
    model.tls.cert_dir = certs.display().to_string();
    model
}

#[test]
fn caddy_validate_accepts_the_rendered_config_with_services_and_every_policy() {
    let dir = tempfile::tempdir().unwrap();
    let mut model = with_storage(caddy_model(), dir.path());
    // Caddy loads certificate files while provisioning, so they must be real.
    let ck = rcgen::generate_simple_self_signed(vec!["web.example.test".to_string()]).unwrap();
    let (cert, key) = (dir.path().join("web.crt"), dir.path().join("web.key"));
    std::fs::write(&cert, ck.cert.pem()).unwrap();
    std::fs::write(&key, ck.signing_key.serialize_pem()).unwrap();
    model.tls.certificates[0].cert_file = cert.display().to_string();
    model.tls.certificates[0].key_file = key.display().to_string();

    let config = live_config(&model, &services());
    let (out, _d) = validate(&config);
    assert!(
        out.status.success(),
        "caddy validate rejected the rendered config:\n{}\n{}",
        String::from_utf8_lossy(&out.stderr),
        serde_json::to_string_pretty(&config).unwrap()
    );
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(said.contains("Valid configuration"), "{said}");
}

#[test]
fn caddy_validate_accepts_the_initial_config_embedded_in_the_job() {
    let dir = tempfile::tempdir().unwrap();
    let mut model = with_storage(caddy_model(), dir.path());
    model.tls.certificates.clear();
    let rendered = render::render_model(&model, &RenderContext::default()).unwrap();
    let config = rendered.caddy.expect("caddy config");
    let embedded = rendered.job["TaskGroups"][0]["Tasks"][0]["Templates"][0]["EmbeddedTmpl"]
        .as_str()
        .unwrap();
    assert_eq!(serde_json::from_str::<Value>(embedded).unwrap(), config);
    let (out, _d) = validate(&config);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn caddy_validate_rejects_a_broken_config_so_this_judge_can_fail() {
    let dir = tempfile::tempdir().unwrap();
    let mut model = with_storage(caddy_model(), dir.path());
    model.tls.certificates.clear();
    let mut config = live_config(&model, &services());
    config["apps"]["http"]["servers"]["websecure"]["routez"] = Value::Array(vec![]);
    let (out, _d) = validate(&config);
    assert!(
        !out.status.success(),
        "caddy validate accepted an unknown field"
    );
    // Caddy logs the reason with the config's logger, which writes to stdout.
    let said = [out.stdout, out.stderr].concat();
    assert!(String::from_utf8_lossy(&said).contains("unknown field"));
}

#[tokio::test]
async fn caddy_serves_a_discovered_service_behind_the_rendered_policy() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let dir = tempfile::tempdir().unwrap();
    let backend = support::Backend::start("app").await;
    let mut model = with_storage(caddy_model(), dir.path());
    on_free_loopback_ports(&mut model, free_port);
    model.tls.certificates.clear();
    // Only the plain entry point, so the request path needs no certificate.
    model.entry_points.retain(|e| !e.tls);
    model.entry_points[0].redirect_to = None;
    let tags = host_tags("app", "app.example.test");
    let tags: Vec<&str> = tags.iter().map(String::as_str).collect();
    let svc = catalog(vec![instance("app", backend.port(), &tags, "passing")]);
    let config = live_config(&model, &svc);
    let path = dir.path().join("caddy.json");
    std::fs::write(&path, serde_json::to_vec(&config).unwrap()).unwrap();
    let mut cmd = caddy(dir.path());
    cmd.args(["run", "--config"]).arg(&path);
    let mut guard = ChildGuard::spawn(cmd, &dir.path().join("caddy.log"));

    let port = model.entry_points[0].address.port;
    let c = reqwest::Client::builder()
        .resolve("app.example.test", ([127, 0, 0, 1], port).into())
        .timeout(Duration::from_secs(2))
        .build()
        .unwrap();
    let url = format!("http://app.example.test:{port}/hi");
    let first = eventually(Duration::from_secs(10), || {
        let c = c.clone();
        let url = url.clone();
        async move { c.get(&url).send().await.ok() }
    })
    .await
    .unwrap_or_else(|| {
        panic!(
            "Caddy never answered (exit {:?}):\n{}",
            guard.try_wait(),
            guard.log()
        )
    });
    assert_eq!(first.status(), 401, "basic auth of the policy");
    assert_eq!(first.headers()["x-frame-options"], "SAMEORIGIN");
    let ok = c
        .get(&url)
        .basic_auth("user", Some("secret"))
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), 200);
    assert_eq!(ok.headers()["x-backend"], "app");
    assert_eq!(
        ok.headers()["referrer-policy"],
        "strict-origin-when-cross-origin"
    );
    let unknown = c
        .get(format!("http://127.0.0.1:{port}/"))
        .basic_auth("user", Some("secret"))
        .send()
        .await
        .unwrap();
    assert_eq!(unknown.status(), 404, "unknown hosts get 404");
    let admin = model.dashboard.address.port;
    let cfg = c
        .get(format!("http://127.0.0.1:{admin}/config/"))
        .send()
        .await
        .unwrap();
    assert_eq!(cfg.status(), 200, "admin API on the rendered address");
}
