//! Real Traefik judges the rendered configuration. Traefik has no check mode and silently
//! ignores unknown top-level keys (contracts/TRAEFIK.md), so these tests start it on the rendered
//! static config and ask its API what it actually built: the entry points, and — with the
//! rendered KV entries served by the twin's Consul KV — the policy chain and its middlewares.
// Tests fail loudly: unwrap and panic are how they report.
#![allow(clippy::unwrap_used, clippy::panic)]

#[path = "../../tests/support/mod.rs"]
mod support;

mod render_common;
#[path = "render_common/traefik.rs"]
mod traefik_harness;

use std::path::Path;
use std::time::Duration;

use proxy_operator::render::{self, RenderContext};
use render_common::*;
use serde_json::Value;
use support::{eventually, free_port};
use traefik_harness::*;

#[tokio::test]
async fn traefik_starts_on_the_rendered_static_config_and_builds_every_entry_point() {
    let mut model = loopback_model(traefik_model());
    model.dashboard.insecure = true; // the API without the KV router, which needs Consul
    model.discovery.consul.address = format!("127.0.0.1:{}", free_port());
    model.discovery.nomad.address = format!("http://127.0.0.1:{}", free_port());
    let rendered = render::render_model(&model, &RenderContext::default()).unwrap();
    let yaml = rendered.traefik_static.as_deref().unwrap();
    let mut t = start_traefik(yaml);
    wait_for_ping(&mut t).await;

    let eps: Value = client()
        .get(format!("http://127.0.0.1:{}/api/entrypoints", t.internal))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let mut names: Vec<(String, String)> = eps
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["name"].as_str().unwrap().to_string(),
                e["address"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    names.sort();
    let mut expected: Vec<(String, String)> = model
        .entry_points
        .iter()
        .map(|e| (e.name.clone(), e.address.to_addr_string()))
        .chain([(
            "traefik".to_string(),
            model.dashboard.address.to_addr_string(),
        )])
        .chain(
            model
                .metrics
                .iter()
                .map(|m| ("metrics".to_string(), m.to_addr_string())),
        )
        .collect();
    expected.sort();
    assert_eq!(
        names, expected,
        "entry points Traefik built from the rendered YAML"
    );
    let web = eps
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["name"] == "web")
        .unwrap();
    assert_eq!(
        web["http"]["redirections"]["entryPoint"]["to"], "websecure",
        "{web}"
    );
    assert!(
        web["http"]["middlewares"].is_null(),
        "redirecting entry point has no chain: {web}"
    );
    let websecure = eps
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["name"] == "websecure")
        .unwrap();
    assert_eq!(
        websecure["http"]["middlewares"][0], "proxy-operator-policy@consul",
        "{websecure}"
    );
    assert!(
        t.guard.try_wait().is_none(),
        "Traefik exited; log:\n{}",
        t.guard.log()
    );
    assert_no_fatal_log(&t);
}

#[tokio::test]
async fn traefik_reports_a_typo_in_a_nested_static_key_which_is_why_the_model_is_typed() {
    // Guards the judge itself: a broken static config must make this harness fail.
    let mut model = loopback_model(traefik_model());
    model.dashboard.insecure = true;
    let yaml = render::render_model(&model, &RenderContext::default())
        .unwrap()
        .traefik_static
        .unwrap();
    let broken = yaml.replacen("    address:", "    adress:", 1);
    assert_ne!(broken, yaml);
    let mut t = start_traefik(&broken);
    let exited = eventually(Duration::from_secs(5), || {
        let status = t.guard.try_wait();
        async move { status }
    })
    .await;
    assert!(
        exited.is_some_and(|s| !s.success()),
        "Traefik accepted a misspelt key"
    );
    assert!(
        t.guard.log().contains("field not found"),
        "{}",
        t.guard.log()
    );
}

fn write_self_signed(dir: &Path, host: &str) -> (String, String) {
    let ck = rcgen::generate_simple_self_signed(vec![host.to_string()]).unwrap();
    let cert = dir.join(format!("{host}.crt"));
    let key = dir.join(format!("{host}.key"));
    std::fs::write(&cert, ck.cert.pem()).unwrap();
    std::fs::write(&key, ck.signing_key.serialize_pem()).unwrap();
    (cert.display().to_string(), key.display().to_string())
}

#[tokio::test]
async fn traefik_applies_the_rendered_policy_chain_from_the_twins_consul_kv() {
    let twin = hashistack_twin::Twin::start(hashistack_twin::TwinConfig::default())
        .await
        .unwrap();
    let certs = tempfile::tempdir().unwrap();
    let (cert_file, key_file) = write_self_signed(certs.path(), "probe.test");

    let mut model = loopback_model(traefik_model());
    model.dashboard.insecure = false; // the API is reachable only through our KV router
    model.discovery.consul.address = twin.consul_addr().to_string();
    model.discovery.nomad.address = format!("http://{}", twin.nomad_addr());
    model.tls.certificates[0].cert_file = cert_file;
    model.tls.certificates[0].key_file = key_file;
    let ctx = RenderContext {
        prefix: "po-test".to_string(),
        ..RenderContext::default()
    };
    let rendered = render::render_model(&model, &ctx).unwrap();

    // A router and service of a user's app, so the request path exercises the chain.
    let backend = support::Backend::start("app").await;
    let mut entries = rendered.traefik_kv.clone();
    let root = "po-test/traefik";
    entries.extend([
        (
            format!("{root}/http/routers/app/rule"),
            "Host(`probe.test`)".to_string(),
        ),
        (
            format!("{root}/http/routers/app/service"),
            "app".to_string(),
        ),
        (
            format!("{root}/http/routers/app/entryPoints/0"),
            "websecure".to_string(),
        ),
        (format!("{root}/http/routers/app/tls"), "true".to_string()),
        (
            format!("{root}/http/services/app/loadBalancer/servers/0/url"),
            format!("http://{}", backend.addr),
        ),
    ]);
    put_kv(twin.consul_addr(), &entries).await;

    let mut t = start_traefik(rendered.traefik_static.as_deref().unwrap());
    wait_for_ping(&mut t).await;

    let c = client();
    let rawdata_url = format!("http://127.0.0.1:{}/api/rawdata", t.internal);
    let wanted = [
        "proxy-operator-policy@consul",
        "proxy-operator-headers@consul",
        "proxy-operator-ipallowlist@consul",
        "proxy-operator-basicauth@consul",
        "proxy-operator-ratelimit@consul",
    ];
    let raw = eventually(Duration::from_secs(15), || {
        let c = c.clone();
        let url = rawdata_url.clone();
        async move {
            let raw: Value = c.get(&url).send().await.ok()?.json().await.ok()?;
            let app = &raw["routers"]["app@consul"];
            (wanted
                .iter()
                .all(|m| raw["middlewares"][m]["status"] == "enabled")
                && app["status"] == "enabled")
                .then_some(raw)
        }
    })
    .await;
    let Some(raw) = raw else {
        let last = c.get(&rawdata_url).send().await.ok();
        let body = match last {
            Some(r) => r.text().await.unwrap_or_default(),
            None => "<no answer>".to_string(),
        };
        panic!(
            "middlewares never all enabled; last /api/rawdata: {body}\nlog:\n{}",
            t.guard.log()
        );
    };
    let chain: Vec<&str> =
        raw["middlewares"]["proxy-operator-policy@consul"]["chain"]["middlewares"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap())
            .collect();
    assert_eq!(
        chain,
        // Traefik qualifies same-provider names with the provider.
        [
            "proxy-operator-headers@consul",
            "proxy-operator-ipallowlist@consul",
            "proxy-operator-basicauth@consul",
            "proxy-operator-ratelimit@consul"
        ]
    );
    assert_eq!(
        raw["routers"]["proxy-operator-api@consul"]["status"], "enabled",
        "{raw}"
    );
    // The allow list travels as ONE comma-joined KV key; Traefik splits it into both ranges
    // (the request below comes from the second one, 127.0.0.1/32).
    assert_eq!(
        raw["middlewares"]["proxy-operator-ipallowlist@consul"]["ipAllowList"]["sourceRange"],
        serde_json::json!(["10.0.0.0/8", "127.0.0.1/32"]),
        "{raw}"
    );

    // The chain really runs on the user-facing entry point.
    let websecure = model
        .entry_points
        .iter()
        .find(|e| e.name == "websecure")
        .unwrap()
        .address
        .port;
    let web = model
        .entry_points
        .iter()
        .find(|e| e.name == "web")
        .unwrap()
        .address
        .port;
    let tls_client = reqwest::Client::builder()
        .danger_accept_invalid_certs(true)
        .resolve("probe.test", ([127, 0, 0, 1], websecure).into())
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(2))
        .build()
        .unwrap();
    let url = format!("https://probe.test:{websecure}/hello");
    let anonymous = tls_client.get(&url).send().await.unwrap();
    assert_eq!(anonymous.status(), 401, "basic auth of the policy chain");
    assert_eq!(
        anonymous.headers()["x-frame-options"],
        "SAMEORIGIN",
        "headers run before auth"
    );
    let ok = tls_client
        .get(&url)
        .basic_auth("user", Some(PASSWORD))
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), 200);
    assert_eq!(ok.headers()["x-backend"], "app");
    assert_eq!(ok.headers()["x-content-type-options"], "nosniff");
    let redirect = tls_client
        .get(format!("http://127.0.0.1:{web}/x"))
        .send()
        .await
        .unwrap();
    // Traefik's permanent redirect answers GET with 301 (308 for other methods).
    assert_eq!(redirect.status(), 301, "web redirects to websecure");
    assert!(
        redirect.headers()["location"]
            .to_str()
            .unwrap()
            .starts_with("https://")
    );

    assert_no_fatal_log(&t);
    drop(t);
    twin.shutdown().await;
}

#[tokio::test]
async fn traefik_keeps_the_policy_chain_valid_when_no_policy_is_enabled() {
    let twin = hashistack_twin::Twin::start(hashistack_twin::TwinConfig::default())
        .await
        .unwrap();
    let mut model = loopback_model(traefik_model());
    model.policy = proxy_operator::render::model::Policy::default();
    model.tls.certificates.clear();
    model.dashboard.insecure = false;
    model.discovery.consul.address = twin.consul_addr().to_string();
    model.discovery.nomad.address = format!("http://{}", twin.nomad_addr());
    let rendered = render::render_model(&model, &RenderContext::default()).unwrap();
    put_kv(twin.consul_addr(), &rendered.traefik_kv).await;
    let mut t = start_traefik(rendered.traefik_static.as_deref().unwrap());
    wait_for_ping(&mut t).await;

    let c = client();
    let url = format!("http://127.0.0.1:{}/api/rawdata", t.internal);
    let raw = eventually(Duration::from_secs(15), || {
        let c = c.clone();
        let url = url.clone();
        async move {
            let raw: Value = c.get(&url).send().await.ok()?.json().await.ok()?;
            (raw["middlewares"]["proxy-operator-policy@consul"]["status"] == "enabled")
                .then_some(raw)
        }
    })
    .await
    .unwrap_or_else(|| panic!("policy chain never enabled; log:\n{}", t.guard.log()));
    assert_eq!(
        raw["middlewares"]["proxy-operator-headers@consul"]["status"], "enabled",
        "{raw}"
    );
    assert_no_fatal_log(&t);
    drop(t);
    twin.shutdown().await;
}

#[tokio::test]
async fn traefik_speaks_tls_to_consul_from_both_providers_when_the_scheme_is_https() {
    // A listener that records the first byte of every connection: 0x16 opens a TLS handshake,
    // a plain HTTP request starts with `G`.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let consul = listener.local_addr().unwrap();
    listener.set_nonblocking(true).unwrap();
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::<u8>::new()));
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let recorder = {
        let (seen, stop) = (seen.clone(), stop.clone());
        std::thread::spawn(move || {
            use std::io::Read;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                match listener.accept() {
                    Ok((mut conn, _)) => {
                        conn.set_nonblocking(false).unwrap();
                        conn.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
                        let mut first = [0u8; 1];
                        if conn.read_exact(&mut first).is_ok() {
                            seen.lock().unwrap().push(first[0]);
                        }
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(20)),
                }
            }
        })
    };

    let mut model = loopback_model(traefik_model());
    model.discovery.consul.address = consul.to_string();
    model.discovery.consul.scheme = "https".to_string();
    model.tls.certificates.clear();
    let rendered = render::render_model(&model, &RenderContext::default()).unwrap();
    let mut t = start_traefik(rendered.traefik_static.as_deref().unwrap());
    wait_for_ping(&mut t).await;
    let enough = eventually(Duration::from_secs(10), || {
        let n = seen.lock().unwrap().len();
        async move { (n >= 2).then_some(()) }
    })
    .await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    recorder.join().unwrap();
    let seen = seen.lock().unwrap().clone();
    assert!(
        enough.is_some(),
        "both providers connect: {seen:?}\n{}",
        t.guard.log()
    );
    assert!(
        seen.iter().all(|b| *b == 0x16),
        "every connection opens with a TLS handshake: {seen:?}"
    );
    assert_no_fatal_log(&t);
}
