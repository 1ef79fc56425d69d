//! Issue 14's middlewares and policy sets through real Caddy 2.11.7: each test validates a
//! `proxy: caddy` document (or builds its model), renders it with the catalog the route builder
//! reads, starts Caddy from that config and asserts what a client sees, the same behaviour
//! `policy_traefik_real.rs` asserts through Traefik.
// Tests fail loudly: unwrap and panic are how they report.
#![allow(clippy::unwrap_used, clippy::panic)]

#[path = "../../tests/support/mod.rs"]
mod support;

mod caddy_support;
#[path = "middleware_checks/mod.rs"]
mod checks;
mod render_common;
#[path = "render_common/traefik.rs"]
mod traefik_harness;

use caddy_support::*;
use proxy_operator::render::{self, RenderContext, UsersOwner};
use serde_json::Value;
use support::Backend;
use traefik_harness::{PASSWORD, app_client, fake_http};

/// A set's user: bcrypt (cost 4) of PASSWORD, as in render_common::caddy_model.
const ADMIN_USER: &str = "user:$2a$04$KmdvXirWKCl8agg7DgCxPuIP1jHT1wbO6ssCdyQ8zpW9WZ.bNLZwu";

/// The rule every test routes its app with, so one client resolves it.
const APP_TAGS: [&str; 2] = [
    "traefik.enable=true",
    "traefik.http.routers.app.rule=Host(`app.test`)",
];

/// Caddy serving `middlewares` (YAML under `spec.middlewares`, indented 4; may go on with
/// more of `spec` at indent 2) on its plain entry point, with `entries` in the catalog.
async fn serve(
    dir: &std::path::Path,
    middlewares: &str,
    entries: Vec<proxy_operator::consul::ServiceEntry>,
) -> (Caddy, Ports) {
    let ports = Ports::free();
    let spec = spec(ports, &dir.join("certs"), false, middlewares);
    serve_model(dir, model(&spec, None), entries, ports).await
}

async fn serve_model(
    dir: &std::path::Path,
    model: proxy_operator::render::Model,
    entries: Vec<proxy_operator::consul::ServiceEntry>,
    ports: Ports,
) -> (Caddy, Ports) {
    let config = render(&model, &catalog(entries), ports);
    (Caddy::start(dir, &config, ports.admin).await, ports)
}

/// Caddy serving `middlewares` in front of one app instance, and what must live as long.
struct App {
    caddy: Caddy,
    ports: Ports,
    _backend: Backend,
    _dir: tempfile::TempDir,
}

impl App {
    async fn start(middlewares: &str) -> App {
        let dir = tempfile::tempdir().unwrap();
        let backend = Backend::start("app").await;
        let entries = vec![instance("app", backend.port(), &APP_TAGS, "passing")];
        let (caddy, ports) = serve(dir.path(), middlewares, entries).await;
        App {
            caddy,
            ports,
            _backend: backend,
            _dir: dir,
        }
    }

    fn client(&self, local: Option<std::net::IpAddr>) -> reqwest::Client {
        app_client(self.ports.web, local)
    }

    fn url(&self, path: &str) -> String {
        app_url(self.ports, path)
    }
}

fn app_url(ports: Ports, path: &str) -> String {
    format!("http://app.test:{}{path}", ports.web)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forward_auth_passes_on_401_and_403_and_lets_200_through_with_only_the_copied_headers() {
    let (auth, _task) = fake_http(|_, request_line, headers| {
        // The auth service is asked with GET on its own path, told the original request.
        assert!(
            request_line.starts_with("GET /verify?via=caddy "),
            "{request_line}"
        );
        assert_eq!(checks::header(headers, "x-forwarded-method"), Some("POST"));
        assert_eq!(
            checks::header(headers, "x-forwarded-uri"),
            Some("/orders?id=7")
        );
        Some(checks::auth_verdict(headers))
    })
    .await;
    let app = App::start(&format!(
        "    forwardAuth:\n      address: 'http://{auth}/verify?via=caddy'\n      authResponseHeaders: [X-Auth-User]\n"
    ))
    .await;
    checks::forward_auth_verdicts_reach_the_client(
        &app.client(None),
        reqwest::Method::POST,
        &app.url("/orders?id=7"),
    )
    .await;
}

/// The app's two instances: one whose port refuses connections (a crashed instance), one that
/// answers.
async fn one_dead_one_alive() -> (Vec<proxy_operator::consul::ServiceEntry>, Backend) {
    let alive = Backend::start("alive").await;
    let dead = support::free_port();
    (
        vec![
            instance("app", dead, &APP_TAGS, "passing"),
            instance("app", alive.port(), &APP_TAGS, "passing"),
        ],
        alive,
    )
}

async fn statuses_of_twelve_requests(ports: Ports) -> Vec<u16> {
    let c = app_client(ports.web, None);
    let mut out = Vec::new();
    for i in 0..12 {
        let r = c
            .get(app_url(ports, &format!("/{i}")))
            .send()
            .await
            .unwrap();
        out.push(r.status().as_u16());
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_turns_a_request_that_fails_on_a_dead_instance_into_a_200() {
    let dir = tempfile::tempdir().unwrap();
    let (entries, _alive) = one_dead_one_alive().await;
    let (caddy, ports) = serve(
        dir.path(),
        "    retry: {attempts: 2, initialInterval: 10ms}\n",
        entries,
    )
    .await;
    let statuses = statuses_of_twelve_requests(ports).await;
    assert_eq!(statuses, [200; 12], "log:\n{}", caddy.guard.log());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_retry_the_same_dead_instance_costs_a_502() {
    // Guards the test above: it passes because of the retry (a random pick misses the dead
    // instance twelve times in a row once in 4096 runs).
    let dir = tempfile::tempdir().unwrap();
    let (entries, _alive) = one_dead_one_alive().await;
    let (_caddy, ports) = serve(dir.path(), "", entries).await;
    let statuses = statuses_of_twelve_requests(ports).await;
    assert!(statuses.contains(&502), "{statuses:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn buffering_refuses_an_oversized_request_body_with_413() {
    let app = App::start("    buffering: {maxRequestBodyBytes: 1000}\n").await;
    checks::an_oversized_body_gets_413(&app.client(None), &app.url("/upload")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compress_gzips_for_clients_that_accept_it_and_only_for_them() {
    let app = App::start("    compress: {minResponseBodyBytes: 10}\n").await;
    checks::gzip_only_for_clients_that_accept_it(&app.client(None), &app.url("/")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_without_a_required_header_is_refused_with_403() {
    let app = App::start("    requiredHeaders: [X-Api-Key, X-Tenant]\n").await;
    checks::a_missing_or_empty_required_header_gets_403(
        &app.client(None),
        &app.url("/"),
        &["X-Api-Key", "X-Tenant"],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_from_a_denied_network_gets_403_and_others_get_through() {
    let app = App::start("    ipDenyList: {sourceRange: [127.0.0.1/32]}\n").await;
    checks::a_denied_network_gets_403(
        &app.client(Some([127, 0, 0, 1].into())),
        &app.client(Some([127, 0, 0, 2].into())),
        &app.url("/"),
        &format!("http://127.0.0.1:{}/", app.ports.web),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_policy_set_applies_only_to_the_service_that_opts_in_with_its_tag() {
    let dir = tempfile::tempdir().unwrap();
    let admin = Backend::start("admin").await;
    let public = Backend::start("public").await;
    let ports = Ports::free();
    // A set's basic auth on Caddy, its users from a Consul key: the loop reads the key and hands
    // the lines over in the render context, as here.
    let spec = spec(
        ports,
        &dir.path().join("certs"),
        false,
        "  policies:\n    admin:\n      headers: {X-Policy: admin}\n      basicAuth:\n        usersFrom: {consulKey: proxy-operator/secrets/admin}\n        realm: admin\n",
    );
    let unresolved = render::resolve(&spec, &RenderContext::default()).unwrap_err();
    assert!(
        unresolved
            .to_string()
            .contains("spec.policies.admin.basicAuth.usersFrom"),
        "{unresolved}"
    );
    let mut ctx = RenderContext::default();
    ctx.set_users(
        &UsersOwner::Set("admin".into()),
        vec![ADMIN_USER.to_string()],
    );
    let m = render::resolve(&spec, &ctx).unwrap();
    let (caddy, ports) = serve_model(
        dir.path(),
        m,
        vec![
            instance(
                "admin",
                admin.port(),
                &["traefik.enable=true", "proxy-operator.policy=admin"],
                "passing",
            ),
            instance("public", public.port(), &["traefik.enable=true"], "passing"),
            // Traefik's own opt-in tag, so one tag serves both proxies.
            instance(
                "ops",
                admin.port(),
                &[
                    "traefik.enable=true",
                    "traefik.http.routers.ops.middlewares=admin@consul",
                ],
                "passing",
            ),
        ],
        ports,
    )
    .await;
    let http = plain_client();
    let url = format!("http://127.0.0.1:{}/", ports.web);
    let get = |host: &'static str, password: Option<&str>| {
        let mut req = http.get(&url).header("Host", host);
        if let Some(password) = password {
            req = req.basic_auth("user", Some(password));
        }
        req.send()
    };

    let anonymous = get("admin.example.test", None).await.unwrap();
    assert_eq!(anonymous.status(), 401, "log:\n{}", caddy.guard.log());
    assert_eq!(
        anonymous.headers()["www-authenticate"],
        "Basic realm=\"admin\""
    );
    assert_eq!(
        anonymous.headers()["x-policy"],
        "admin",
        "the set's headers on its 401"
    );
    let wrong = get("admin.example.test", Some("not-the-password"))
        .await
        .unwrap();
    assert_eq!(wrong.status(), 401, "a wrong password");
    assert!(wrong.headers().get("x-backend").is_none());
    let ok = get("admin.example.test", Some(PASSWORD)).await.unwrap();
    assert_eq!(ok.status(), 200);
    assert_eq!(backend_of(&ok).as_deref(), Some("admin"));
    assert_eq!(ok.headers()["x-policy"], "admin");
    assert_eq!(ok.headers().get_all("x-policy").iter().count(), 1, "once");
    // The entry point policy still applies to the opted-in service.
    assert_eq!(ok.headers()["x-frame-options"], "SAMEORIGIN");

    let ops = get("ops.example.test", None).await.unwrap();
    assert_eq!(ops.status(), 401, "Traefik's tag opts in on Caddy too");

    let public = get("public.example.test", None).await.unwrap();
    assert_eq!(public.status(), 200, "the other service asks for nothing");
    assert_eq!(backend_of(&public).as_deref(), Some("public"));
    assert!(public.headers().get("x-policy").is_none());
    assert_eq!(public.headers()["x-frame-options"], "SAMEORIGIN");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forward_auth_reaches_a_mutual_tls_auth_service_with_the_rendered_ca_and_client_certificate()
 {
    let dir = tempfile::tempdir().unwrap();
    let auth = checks::https_auth_service(dir.path(), true).await;
    let d = dir.path().display();
    let address = format!("https://localhost:{}/verify", auth.port());
    let with_tls = |client_cert: bool| {
        let mut yaml = format!(
            "    forwardAuth:\n      address: '{address}'\n      authResponseHeaders: [X-Auth-User]\n      tls:\n        caFile: {d}/ca.pem\n"
        );
        if client_cert {
            yaml.push_str(&format!(
                "        certFile: {d}/client.crt\n        keyFile: {d}/client.key\n"
            ));
        }
        yaml
    };
    let ok = App::start(&with_tls(true)).await;
    let resp = ok.client(None).get(ok.url("/")).send().await.unwrap();
    assert_eq!(resp.status(), 200, "log:\n{}", ok.caddy.guard.log());
    let seen: Value = resp.json().await.unwrap();
    assert_eq!(seen["headers"]["x-auth-user"], "tls-alice", "{seen}");
    drop(ok);

    // Guards the above: without the client certificate the auth service refuses the handshake
    // and nothing reaches the app.
    let no_cert = App::start(&with_tls(false)).await;
    let refused = no_cert
        .client(None)
        .get(no_cert.url("/"))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 502);
    assert!(refused.headers().get("x-backend").is_none());
}

#[test]
fn caddy_validate_accepts_every_middleware_caddy_renders_together_with_a_policy_set() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().display();
    let ca = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    std::fs::write(dir.path().join("ca.pem"), ca.cert.pem()).unwrap();
    let ports = Ports::free();
    let every = format!(
        "    ipAllowList: {{sourceRange: [127.0.0.0/8]}}
    forwardAuth:
      address: 'https://localhost:9/verify'
      authResponseHeaders: [X-Auth-User]
      tls: {{caFile: {d}/ca.pem}}
    retry: {{attempts: 3, initialInterval: 50ms}}
    buffering: {{maxRequestBodyBytes: 1000}}
    compress: {{}}
    requiredHeaders: [X-Api-Key]
    ipDenyList: {{sourceRange: [203.0.113.0/24]}}
  policies:
    admin:
      headers: {{X-Policy: admin}}
      ipAllowList: {{sourceRange: [10.0.0.0/8]}}
      forwardAuth: {{address: 'http://127.0.0.1:9/admin'}}
      retry: {{attempts: 2}}
      buffering: {{maxRequestBodyBytes: 10}}
      compress: {{minResponseBodyBytes: 1}}
      basicAuth: {{usersFrom: {{consulKey: proxy-operator/secrets/admin}}}}
"
    );
    let spec = spec(ports, &dir.path().join("certs"), false, &every);
    let entries = vec![
        instance(
            "admin",
            18090,
            &["traefik.enable=true", "proxy-operator.policy=admin"],
            "passing",
        ),
        instance("app", 18091, &APP_TAGS, "passing"),
    ];
    let mut ctx = RenderContext::default();
    ctx.set_users(
        &UsersOwner::Set("admin".into()),
        vec![ADMIN_USER.to_string()],
    );
    let config = render(
        &render::resolve(&spec, &ctx).unwrap(),
        &catalog(entries),
        ports,
    );
    let path = dir.path().join("caddy.json");
    std::fs::write(&path, &config.body).unwrap();
    let out = caddy_cmd(dir.path())
        .args(["validate", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Both services' proxies retry, each with its own policy's attempts.
    let body: Value = serde_json::from_slice(&config.body).unwrap();
    let text = body.to_string();
    assert!(
        text.contains(r#""retries":2"#) && text.contains(r#""retries":1"#),
        "{text}"
    );
    assert!(
        text.contains(r#""http_basic""#),
        "the set's accounts: {text}"
    );
}
