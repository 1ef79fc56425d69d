//! Unit tests of `dev`: the starter documents and the banner.
#![allow(clippy::unwrap_used, clippy::panic)] // tests fail loudly
use super::*;

fn endpoints() -> Endpoints {
    let at = |port| SocketAddr::from(([127, 0, 0, 1], port));
    Endpoints {
        consul: at(18500),
        nomad: at(14646),
        http: at(18080),
        https: at(18443),
        dashboard: at(18081),
        backend: at(19000),
        status: at(19090),
    }
}

#[test]
fn starter_config_is_a_valid_traefik_document_pointing_at_the_twin() {
    let text = starter_config(
        &endpoints(),
        Path::new("/opt/bin/traefik"),
        Path::new("/tmp/dev/certs"),
    );
    let spec = crate::spec::load(text.as_bytes()).unwrap();
    assert_eq!(spec.proxy(), crate::spec::ProxyKind::Traefik);
    assert_eq!(spec.discovery().consul.address, "127.0.0.1:18500");
    assert_eq!(spec.discovery().nomad.address, "http://127.0.0.1:14646");
    let web = spec.entry_point("web").unwrap();
    assert!(
        web.redirect_to.is_none(),
        "web must serve plain HTTP in dev"
    );
    assert!(text.contains("command: \"/opt/bin/traefik\""));
    // Traefik reads its tokens from the variable dev writes.
    let rendered = crate::render::render(&spec, &crate::render::RenderContext::default()).unwrap();
    let job = rendered.job.to_string();
    let read = format!(
        "with nomadVar \\\"{}\\\"",
        acl::tokens_variable_path(DEV_JOB_ID)
    );
    assert!(job.contains(&read), "{read} not in {job}");
    assert!(job.contains("\"Envvars\":true"), "{job}");
    assert!(
        text.starts_with("# yaml-language-server: $schema=http://127.0.0.1:19090/schemas/proxyconfig.v1alpha1.schema.json\n"),
        "the schema is served by the operator's listener: {text}"
    );
}

#[test]
fn the_caddy_starter_differs_from_traefiks_only_in_the_proxy_its_binary_the_dashboard_and_tokens() {
    let caddy = starter_for(
        ProxyKind::Caddy,
        &endpoints(),
        Path::new("/opt/bin/caddy"),
        Path::new("/tmp/dev/certs"),
    );
    let spec = crate::spec::load(caddy.as_bytes()).unwrap();
    assert_eq!(spec.proxy(), ProxyKind::Caddy);
    assert!(crate::proxy::caddy::caddy_unsupported(&spec).is_empty());
    let traefik = starter_config(
        &endpoints(),
        Path::new("/opt/bin/caddy"),
        Path::new("/tmp/dev/certs"),
    );
    let changed: Vec<(&str, &str)> = traefik
        .lines()
        .filter(|l| *l != "    insecure: true" && !TRAEFIK_TOKENS.lines().any(|t| t == *l))
        .zip(caddy.lines())
        .filter(|(a, b)| a != b)
        .collect();
    assert_eq!(changed, vec![("  proxy: traefik", "  proxy: caddy")]);
    assert_eq!(
        traefik.lines().count(),
        caddy.lines().count() + 1 + TRAEFIK_TOKENS.lines().filter(|l| !l.is_empty()).count()
    );
    let text = banner_for(
        ProxyKind::Caddy,
        &endpoints(),
        "proxy-operator",
        Path::new("/tmp/dev/proxyconfig.yaml"),
        Path::new("/tmp/dev/acl-token"),
    );
    assert!(text.contains("curl -H 'Host: demo.localhost' http://127.0.0.1:18080/"));
    assert!(text.contains("Caddy admin API"));
}

#[test]
fn banner_shows_the_proxied_curl_and_how_to_edit_and_read_status() {
    let text = banner(
        &endpoints(),
        "proxy-operator",
        Path::new("/tmp/dev/proxyconfig.yaml"),
        Path::new("/tmp/dev/acl-token"),
    );
    assert!(text.contains("curl -H 'Host: demo.localhost' http://127.0.0.1:18080/"));
    assert!(text.contains(
        "curl -X PUT -H \"X-Consul-Token: $(cat /tmp/dev/acl-token)\" --data-binary @/tmp/dev/proxyconfig.yaml http://127.0.0.1:18500/v1/kv/proxy-operator/config"
    ));
    assert!(text.contains(
        "CONSUL_HTTP_TOKEN_FILE=/tmp/dev/acl-token CONSUL_HTTP_ADDR=http://127.0.0.1:18500 proxy-operator status"
    ));
    assert!(text.contains("NOMAD_TOKEN=\"$(cat /tmp/dev/acl-token)\""));
    assert!(text.contains("http://127.0.0.1:18081/dashboard/"));
    assert!(text.contains("http://127.0.0.1:14646"));
    assert!(text.contains("status page:               http://127.0.0.1:19090/"));
    assert!(
        text.contains("http://demo.localhost:18080/"),
        "a URL that works in a browser: {text}"
    );
}

#[test]
fn a_missing_traefik_names_the_bootstrap_fix() {
    let e = Error::TraefikMissing(PathBuf::from("/nowhere/traefik"));
    assert!(e.to_string().contains("scripts/bootstrap"));
}
