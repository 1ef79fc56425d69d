//! Every example document and golden input, rendered through `spec::load` + `render::render`
//! (Caddy: `proxy::render` and the driver's live config),
//! judged by the real proxies: Traefik starts on its static config and builds every entry point
//! and policy middleware from the KV entries (served by the twin's Consul KV); Caddy's config
//! passes `caddy validate`. Listen addresses are moved to free loopback ports, ACME is dropped
//! (it would contact a real CA) and certificate files are generated.
// Tests fail loudly: unwrap and panic are how they report.
#![allow(clippy::unwrap_used, clippy::panic)]

#[path = "../../tests/support/mod.rs"]
mod support;

mod caddy_support;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use proxy_operator::proxy::{self, caddy};
use proxy_operator::render::{self, RenderContext};
use proxy_operator::spec::{self, ProxyKind};
use serde_json::Value;
use support::{ChildGuard, caddy_bin, eventually, free_port, traefik_bin};

fn documents() -> Vec<PathBuf> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let mut docs = Vec::new();
    for dir in [
        root.join("../nomad-jobs/examples"),
        root.join("tests/golden/input"),
    ] {
        let Ok(entries) = std::fs::read_dir(dir) else {
            continue;
        };
        for e in entries {
            let p = e.unwrap().path();
            if matches!(
                p.extension().and_then(|e| e.to_str()),
                Some("yaml" | "yml" | "json")
            ) {
                docs.push(p);
            }
        }
    }
    docs.sort();
    docs
}

fn loopback() -> String {
    format!("127.0.0.1:{}", free_port())
}

/// Loads `path` and moves everything that would bind or call out onto loopback test resources.
fn localised(path: &Path, consul: &str, nomad: &str, dir: &Path) -> spec::ValidatedSpec {
    let mut config = spec::parse(&std::fs::read(path).unwrap()).unwrap();
    let s = &mut config.spec;
    s.entry_points.web.address = loopback();
    s.entry_points.websecure.address = loopback();
    for ep in s.entry_points.extra.values_mut() {
        ep.address = loopback();
    }
    s.metrics.address = loopback();
    s.dashboard.address = loopback();
    s.discovery.consul.address = consul.to_string();
    s.discovery.nomad.address = format!("http://{nomad}");
    s.tls.acme = None;
    s.tls.cert_dir = dir.display().to_string();
    for (i, cert) in s.tls.certificates.iter_mut().enumerate() {
        let ck = rcgen::generate_simple_self_signed(vec![format!("cert{i}.test")]).unwrap();
        std::fs::write(dir.join(format!("cert{i}.crt")), ck.cert.pem()).unwrap();
        std::fs::write(
            dir.join(format!("cert{i}.key")),
            ck.signing_key.serialize_pem(),
        )
        .unwrap();
        cert.cert_file = format!("cert{i}.crt");
        cert.key_file = format!("cert{i}.key");
    }
    // Files the proxy reads itself (the auth service's CA, a policy set's htpasswd) must exist,
    // or Traefik disables the middleware.
    if let Some(tls) = s
        .middlewares
        .forward_auth
        .as_mut()
        .and_then(|f| f.tls.as_mut())
        .filter(|tls| tls.ca_file.is_some())
    {
        let ck = rcgen::generate_simple_self_signed(vec!["auth.test".to_string()]).unwrap();
        // `.crt`, not `.pem`: a Caddy without listed files or ACME loads every `.pem` under
        // certDir as a certificate+key bundle and refuses to start on a CA alone.
        let ca = dir.join("auth-ca.crt");
        std::fs::write(&ca, ck.cert.pem()).unwrap();
        tls.ca_file = Some(ca.display().to_string());
    }
    for (name, set) in s.policies.iter_mut() {
        if let Some(auth) = set.basic_auth.as_mut() {
            let file = dir.join(format!("{name}.htpasswd"));
            std::fs::write(&file, "user:$apr1$abcdefgh$h9FWgUz3n9YxylKLlR5SQ/\n").unwrap();
            auth.users_from = spec::UsersFrom::File(file.display().to_string());
        }
    }
    spec::validate(&config).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn ctx() -> RenderContext {
    RenderContext {
        basic_auth_users: Some(vec![
            "user:$apr1$abcdefgh$h9FWgUz3n9YxylKLlR5SQ/".to_string(),
        ]),
        ..RenderContext::default()
    }
}

#[tokio::test]
async fn real_traefik_builds_every_traefik_example_with_its_policy_chain() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let twin = hashistack_twin::Twin::start(hashistack_twin::TwinConfig::default())
        .await
        .unwrap();
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(2))
        .build()
        .unwrap();
    let mut judged = 0;
    for (n, path) in documents().into_iter().enumerate() {
        let dir = tempfile::tempdir().unwrap();
        let validated = localised(
            &path,
            &twin.consul_addr().to_string(),
            &twin.nomad_addr().to_string(),
            dir.path(),
        );
        if validated.proxy() != ProxyKind::Traefik {
            continue;
        }
        judged += 1;
        // A prefix per document, so their KV trees don't mix.
        let ctx = RenderContext {
            prefix: format!("example{n}"),
            ..ctx()
        };
        let rendered = render::render(&validated, &ctx).unwrap();
        for (k, v) in &rendered.traefik_kv {
            let resp = client
                .put(format!("http://{}/v1/kv/{k}", twin.consul_addr()))
                .body(v.clone())
                .send()
                .await
                .unwrap();
            assert!(resp.status().is_success(), "PUT {k}: {}", resp.status());
        }
        let config = dir.path().join("traefik.yml");
        std::fs::write(&config, rendered.traefik_static.as_deref().unwrap()).unwrap();
        let mut cmd = Command::new(traefik_bin());
        cmd.arg(format!("--configfile={}", config.display()))
            .current_dir(dir.path());
        let mut guard = ChildGuard::spawn(cmd, &dir.path().join("traefik.log"));

        let internal = render::internal_address(&validated);
        let raw_url = format!("http://127.0.0.1:{}/api/rawdata", internal.port);
        let ping_url = format!("http://127.0.0.1:{}/ping", internal.port);
        let c = client.clone();
        let raw = eventually(Duration::from_secs(15), || {
            let (c, ping_url, raw_url) = (c.clone(), ping_url.clone(), raw_url.clone());
            async move {
                c.get(&ping_url)
                    .send()
                    .await
                    .ok()
                    .filter(|r| r.status() == 200)?;
                let raw: Value = c.get(&raw_url).send().await.ok()?.json().await.ok()?;
                let chain = &raw["middlewares"]["proxy-operator-policy@consul"];
                let members = chain["chain"]["middlewares"].as_array()?;
                let all_enabled = chain["status"] == "enabled"
                    && members.iter().all(|m| {
                        // Names are qualified with the provider only once a router uses them.
                        let m = m.as_str().unwrap_or_default();
                        let key = if m.contains('@') {
                            m.to_string()
                        } else {
                            format!("{m}@consul")
                        };
                        raw["middlewares"][&key]["status"] == "enabled"
                    });
                all_enabled.then_some(raw)
            }
        })
        .await
        .unwrap_or_else(|| {
            panic!(
                "{}: Traefik never served ping + an enabled policy chain (exit {:?}); log:\n{}",
                path.display(),
                guard.try_wait(),
                guard.log()
            )
        });
        // Every router the operator owns (API, deny router) is up, not disabled by one of
        // its middlewares.
        for (name, router) in raw["routers"].as_object().unwrap() {
            if name.ends_with("@consul") {
                assert_eq!(
                    router["status"],
                    "enabled",
                    "{}: {name}: {router}",
                    path.display()
                );
            }
        }
        if !validated.dashboard().insecure {
            // The API is reachable only through the operator's KV router.
            assert_eq!(
                raw["routers"]["proxy-operator-api@consul"]["status"],
                "enabled"
            );
        }

        let eps: Value = client
            .get(format!(
                "http://127.0.0.1:{}/api/entrypoints",
                internal.port
            ))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let built: Vec<&str> = eps
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|e| e["name"].as_str())
            .collect();
        for l in validated.entry_points() {
            assert!(
                built.contains(&l.name.as_str()),
                "{}: {} missing in {built:?}",
                path.display(),
                l.name
            );
        }
        for line in guard.log().lines() {
            assert!(
                !line.contains("Command error") && !line.contains("\"level\":\"fatal\""),
                "{}: {line}",
                path.display()
            );
        }
    }
    assert!(
        judged >= 2,
        "expected at least two Traefik examples, judged {judged}"
    );
    twin.shutdown().await;
}

#[test]
fn real_caddy_validates_every_caddy_example() {
    let mut judged = 0;
    for path in documents() {
        let dir = tempfile::tempdir().unwrap();
        let validated = localised(&path, "127.0.0.1:8500", "127.0.0.1:4646", dir.path());
        if validated.proxy() != ProxyKind::Caddy {
            continue;
        }
        judged += 1;
        let services = caddy_support::catalog(vec![caddy_support::instance(
            "web",
            18082,
            &["https://web.localhost"],
            "passing",
        )]);
        // Caddy takes bcrypt only, for the entry point and for every policy set.
        let ctx = RenderContext::default().with_unresolved_users(
            &validated,
            &["user:$2a$04$N34jSI.C5TeYW9uLCeGZN.5Ckg.IPT4vdI5ft9vdE7gb0EZ/UPLVi".to_string()],
        );
        let model = render::resolve(&validated, &ctx).unwrap();
        let routes = caddy::build_routes(&services, &caddy::RouteSettings::from_model(&model));
        assert_eq!(routes.routes.len(), 1, "{:?}", routes.findings);
        let live = caddy::live(&model, &routes).unwrap();
        for config in [
            proxy::render(&validated, &ctx, "proxy-operator/traefik/")
                .unwrap()
                .caddy
                .unwrap(),
            serde_json::from_slice(&live.body).unwrap(),
        ] {
            let file = dir.path().join("caddy.json");
            std::fs::write(&file, serde_json::to_vec(&config).unwrap()).unwrap();
            let out = Command::new(caddy_bin())
                .args(["validate", "--config"])
                .arg(&file)
                .env("XDG_CONFIG_HOME", dir.path().join("config"))
                .env("XDG_DATA_HOME", dir.path().join("data"))
                .env("HOME", dir.path())
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "{}: caddy validate failed:\n{}{}",
                path.display(),
                String::from_utf8_lossy(&out.stderr),
                // The config's own logger writes to stdout, so the reason may be there.
                String::from_utf8_lossy(&out.stdout)
            );
        }
    }
    assert!(judged >= 1, "expected at least one Caddy example");
}
