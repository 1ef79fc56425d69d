use super::*;
use crate::consul::fake::FakeConsul;
use crate::proxy::PolicyWrite;
use crate::proxy::caddy::{CaddyOptions, Secrets};
use crate::proxy::probe::fake::FakeProbe;
use crate::render::RenderContext;

const ROOT: &str = "proxy-operator/traefik/";

fn driver() -> (CaddyDriver<FakeConsul, FakeProbe>, Arc<FakeConsul>) {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let consul = Arc::new(FakeConsul::new());
    let driver = CaddyDriver::new(Arc::clone(&consul), Arc::new(FakeProbe::healthy()), ROOT);
    (driver, consul)
}

/// A port nothing listens on (bound, then released): the driver must never reach someone
/// else's Caddy from a unit test.
fn admin_port() -> u16 {
    static PORT: std::sync::OnceLock<u16> = std::sync::OnceLock::new();
    *PORT.get_or_init(|| {
        std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port()
    })
}

fn doc(middlewares: &str) -> ValidatedSpec {
    let port = admin_port();
    let text = format!(
        "apiVersion: proxy-operator.io/v1alpha1\nkind: ProxyConfig\nspec:\n  proxy: caddy\n  domainSuffix: example.net\n  dashboard: {{address: \"127.0.0.1:{port}\"}}\n  middlewares:\n{middlewares}"
    );
    crate::spec::load(text.as_bytes()).unwrap()
}

const HEADERS: &str = "    securityHeaders: {enabled: true}\n";
const ALLOW: &str =
    "    securityHeaders: {enabled: true}\n    ipAllowList: {sourceRange: [10.0.0.0/8]}\n";

#[tokio::test]
async fn a_policy_edit_changes_the_policy_key_and_not_the_job() {
    let (driver, _) = driver();
    let ctx = RenderContext::default();
    let a = driver.render(&doc(HEADERS), &ctx).unwrap();
    let b = driver.render(&doc(ALLOW), &ctx).unwrap();
    assert_eq!(
        a.job_digest, b.job_digest,
        "a policy edit would restart Caddy"
    );
    assert_ne!(
        a.kv_digest, b.kv_digest,
        "the planner would not see the policy edit"
    );
    assert_eq!(a.traefik_kv.len(), 1);
    assert_eq!(a.traefik_kv[0].0, format!("{ROOT}{POLICY_KEY}"));
}

#[tokio::test]
async fn the_job_holds_no_policy_no_secret_and_an_admin_api_on_loopback() {
    let (driver, _) = driver();
    let spec = doc("    basicAuth:\n      usersFrom: {consulKey: secrets/users}\n");
    let ctx = RenderContext {
        basic_auth_users: Some(vec![
            "alice:$2a$04$SENTINELSENTINELSENTINELSENTINELSENTINELSENTINELSENTI".into(),
        ]),
        ..RenderContext::default()
    };
    let rendered = driver.render(&spec, &ctx).unwrap();
    let job = serde_json::to_string(&rendered.job).unwrap();
    assert!(!job.contains("SENTINEL"), "a basic-auth hash is in the job");
    let boot = rendered.caddy.unwrap();
    assert_eq!(
        boot["admin"]["listen"],
        format!("127.0.0.1:{}", admin_port())
    );
    assert!(!rendered.traefik_kv[0].1.contains("SENTINEL"));
}

#[tokio::test]
async fn basic_auth_without_its_users_is_a_render_error_naming_the_field() {
    let (driver, _) = driver();
    let spec = doc("    basicAuth:\n      usersFrom: {consulKey: secrets/users}\n");
    let err = driver
        .render(&spec, &RenderContext::default())
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("spec.middlewares.basicAuth.usersFrom"),
        "{err}"
    );
}

#[test]
fn the_gate_reads_the_admin_api_and_expects_the_documents_policy() {
    let spec = doc(ALLOW);
    let rendered = Rendered {
        traefik_kv: vec![(format!("{ROOT}{POLICY_KEY}"), "abc".into())],
        ..crate::render::render(&doc(HEADERS), &RenderContext::default()).unwrap()
    };
    let gate = gate(&spec, &rendered, ROOT, &Reach::on("10.0.0.5"));
    assert!(gate.check_ping);
    assert_eq!(gate.proxy, ProxyKind::Caddy);
    assert_eq!(
        gate.proxy_api,
        Some(format!("http://127.0.0.1:{}", admin_port()))
    );
    assert_eq!(gate.expected_entries, vec!["policy:abc@caddy".to_owned()]);
}

#[tokio::test]
async fn applying_a_policy_while_caddy_is_down_writes_the_key_and_succeeds() {
    let (driver, consul) = driver();
    let rendered = driver
        .render(&doc(HEADERS), &RenderContext::default())
        .unwrap();
    let started = std::time::Instant::now();
    driver
        .apply_policy(PolicyWrite {
            set: &rendered.traefik_kv,
            delete: &[],
            fence: None,
        })
        .await
        .unwrap();
    assert!(
        started.elapsed() < APPLY_WAIT,
        "waited for a Caddy that is not there"
    );
    let (key, value) = &rendered.traefik_kv[0];
    assert_eq!(consul.value(key).unwrap(), value.as_bytes());
    let report = driver.shared.report.borrow().clone();
    assert_eq!(report.policy.as_deref(), Some(value.as_str()));
    assert_eq!(report.loaded, None);
}

#[tokio::test]
async fn without_a_caddy_answering_the_observation_is_unhealthy_not_an_error() {
    let (driver, _) = driver();
    let spec = doc(HEADERS);
    let rendered = driver.render(&spec, &RenderContext::default()).unwrap();
    let gate = gate(&spec, &rendered, ROOT, &Reach::on("127.0.0.1"));
    let obs = driver.observe(&gate).await;
    assert!(!obs.ping_ok);
}

#[test]
fn hinds_defaults_render_a_caddy_serving_the_catalogs_https_tags() {
    let doc = crate::spec::from_env(|_| None).unwrap();
    let text = serde_json::to_vec(&doc).unwrap();
    let spec = crate::spec::load(&text).unwrap();
    assert_eq!(spec.proxy(), ProxyKind::Caddy);
    let model = crate::render::resolve(&spec, &RenderContext::default()).unwrap();
    let catalog =
        super::super::routes::Catalog::from([(
            "app".to_owned(),
            vec![serde_json::from_value(serde_json::json!({
            "Node": {"Node": "n1", "Address": "10.0.0.1"},
            "Service": {"ID": "app-1", "Service": "app", "Tags": ["https://app.example.org"],
                        "Address": "10.0.0.1", "Port": 8080},
            "Checks": [{"CheckID": "c", "Status": "passing", "ServiceID": "app-1"}]
        }))
        .unwrap()],
        )]);
    let (config, routes) = super::super::sync::desired(
        &model,
        &catalog,
        &CaddyOptions::of(&model, Secrets::Include),
    )
    .unwrap();
    assert_eq!(routes.routes.len(), 1, "{:?}", routes.findings);
    let body = String::from_utf8(config.body).unwrap();
    assert!(
        body.contains("app.example.org") && body.contains("10.0.0.1:8080"),
        "{body}"
    );
}

#[test]
fn the_caddy_example_renders_its_job_and_live_config() {
    let text = std::fs::read(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../nomad-jobs/examples/caddy.yaml"
    ))
    .unwrap();
    let spec = crate::spec::load(&text).unwrap();
    assert!(config::caddy_unsupported(&spec).is_empty());
    let model = crate::render::resolve(&spec, &RenderContext::default()).unwrap();
    config::live(&model, &RouteTable::default()).unwrap();
    assert_eq!(
        AdminEndpoint::from_model(&model).base_url().unwrap(),
        format!("http://127.0.0.1:{}", model.dashboard.address.port)
    );
}

#[test]
fn with_the_default_driver_changing_spec_proxy_alone_switches_binary_image_and_version() {
    let render = |proxy: &str| {
        let text = format!(
            "apiVersion: proxy-operator.io/v1alpha1\nkind: ProxyConfig\nspec:\n  proxy: {proxy}\n  domainSuffix: example.net\n"
        );
        let spec = crate::spec::load(text.as_bytes()).unwrap();
        crate::render::render(&spec, &RenderContext::default())
            .unwrap()
            .job
    };
    let traefik = render("traefik");
    let caddy = render("caddy");
    let task = |job: &serde_json::Value| job["TaskGroups"][0]["Tasks"][0]["Config"].clone();
    assert_eq!(task(&traefik)["image"], "traefik:v3.7.15");
    assert_eq!(task(&traefik)["command"], "traefik");
    assert_eq!(task(&caddy)["image"], "caddy:2.11.7");
    assert_eq!(task(&caddy)["command"], "caddy");
    assert_eq!(caddy["Meta"]["proxy-operator/proxy"], "caddy");
}

#[tokio::test]
async fn the_pure_render_the_cli_uses_is_what_the_driver_renders() {
    let (driver, _) = driver();
    let spec = doc(ALLOW);
    let ctx = RenderContext::default();
    let from_driver = driver.render(&spec, &ctx).unwrap();
    let pure = crate::proxy::render(&spec, &ctx, ROOT).unwrap();
    assert_eq!(pure.job_digest, from_driver.job_digest);
    assert_eq!(pure.traefik_kv, from_driver.traefik_kv);
}

#[test]
fn with_raw_exec_and_no_command_changing_spec_proxy_alone_switches_the_binary() {
    let command = |proxy: &str| {
        let text = format!(
            "apiVersion: proxy-operator.io/v1alpha1\nkind: ProxyConfig\nspec:\n  proxy: {proxy}\n  job:\n    driver:\n      rawExec: {{}}\n"
        );
        let spec = crate::spec::load(text.as_bytes()).unwrap();
        let job = crate::render::render(&spec, &RenderContext::default())
            .unwrap()
            .job;
        job["TaskGroups"][0]["Tasks"][0]["Config"]["command"].clone()
    };
    assert_eq!(command("traefik"), "traefik");
    assert_eq!(command("caddy"), "caddy");
}
