#![allow(clippy::unwrap_used, clippy::panic)] // tests fail loudly

use super::*;
use crate::proxy::caddy::config::{AdminEndpoint, CaddyOptions, HOST_MAPS_FROM, render_config};
use crate::proxy::caddy::routes::{HostMatch, Source, UpstreamScheme};
use crate::render::model::BasicAuth;

const SENTINEL_HASH: &str = "$2y$05$SENTINELabcdefghijklmuJ3X7H7t3kRr9JxW4p7pWjHn3eH5yabc";

/// The model of a Traefik document (which takes every middleware), so the renderer's own
/// refusals can be reached past validation.
fn model(extra: &str) -> Model {
    let doc = format!(
        "apiVersion: proxy-operator.io/v1alpha1\nkind: ProxyConfig\nspec:\n  proxy: traefik\n  domainSuffix: example.test\n  entryPoints:\n    web:\n      address: \"127.0.0.1:8000\"\n  tls:\n    certDir: /tmp/certs\n{extra}"
    );
    let spec = crate::spec::load(doc.as_bytes()).unwrap();
    crate::proxy::caddy::config::resolve(&spec, None).unwrap()
}

fn route(middlewares: Vec<Middleware>) -> Route {
    Route {
        service: "admin".into(),
        source: Source::Default,
        entry_points: vec!["web".into()],
        host: Some(HostMatch::Exact("admin.example.test".into())),
        path: None,
        middlewares,
        upstream_scheme: UpstreamScheme::Http,
        pass_host_header: true,
        upstreams: vec!["10.0.0.1:80".into()],
        priority: 0,
    }
}

fn table(routes: Vec<Route>) -> RouteTable {
    RouteTable {
        routes,
        findings: Vec::new(),
    }
}

fn render(model: &Model, routes: &RouteTable, secrets: Secrets) -> Result<Value, Error> {
    let options = CaddyOptions {
        admin: AdminEndpoint::Loopback(2999),
        dev_mode: false,
        secrets,
        host_maps_from: HOST_MAPS_FROM,
    };
    render_config(model, routes, &options).map(|c| serde_json::from_slice(&c.body).unwrap())
}

fn refused_field(result: Result<Value, Error>) -> String {
    match result {
        Err(Error::Unsupported { field, .. }) => field,
        other => panic!("expected a refusal, got {other:?}"),
    }
}

#[test]
fn the_renderer_refuses_what_stock_caddy_cannot_express_naming_the_field() {
    for (yaml, field) in [
        (
            "  middlewares:\n    circuitBreaker: {expression: 'NetworkErrorRatio() > 0.5'}\n",
            "spec.middlewares.circuitBreaker",
        ),
        (
            "  middlewares:\n    buffering: {maxResponseBodyBytes: 10}\n",
            "spec.middlewares.buffering.maxResponseBodyBytes",
        ),
        (
            "  middlewares:\n    forwardAuth: {address: 'http://auth.test/', trustForwardHeader: true}\n",
            "spec.middlewares.forwardAuth.trustForwardHeader",
        ),
    ] {
        let got = refused_field(render(&model(yaml), &table(Vec::new()), Secrets::Include));
        assert_eq!(got, field, "{yaml}");
    }
    let set = model(
        "  policies:\n    admin:\n      circuitBreaker: {expression: 'NetworkErrorRatio() > 0.5'}\n",
    );
    let routed = table(vec![route(vec![Middleware::PolicySet("admin".into())])]);
    assert_eq!(
        refused_field(render(&set, &routed, Secrets::Include)),
        "spec.policies.admin.circuitBreaker"
    );
}

#[test]
fn the_entry_point_policy_runs_in_traefik_s_chain_order_and_the_deny_rule_last() {
    let m = model(
        "  middlewares:\n    forwardAuth: {address: 'http://auth.test:4180/v?x=1'}\n    compress: {}\n    buffering: {maxRequestBodyBytes: 5}\n    requiredHeaders: [X-Key]\n    ipDenyList: {sourceRange: [203.0.113.0/24]}\n",
    );
    let routes = entry_point_routes(&m).unwrap();
    let kinds: Vec<&str> = routes
        .iter()
        .map(|r| r["handle"][0]["handler"].as_str().unwrap())
        .collect();
    assert_eq!(
        kinds,
        ["reverse_proxy", "encode", "request_body", "static_response"]
    );
    let auth = &routes[0]["handle"][0];
    assert_eq!(auth["upstreams"][0]["dial"], "auth.test:4180");
    assert_eq!(auth["rewrite"], json!({"method": "GET", "uri": "/v?x=1"}));
    assert_eq!(
        auth["headers"]["request"]["set"]["Host"][0],
        "auth.test:4180"
    );
    assert!(
        auth.get("transport").is_none(),
        "plain HTTP to an http:// address"
    );
    // One route refuses both, as Traefik's one deny router does.
    let deny = &routes[3];
    assert_eq!(deny["handle"][0]["status_code"], 403);
    assert_eq!(deny["match"].as_array().unwrap().len(), 2);
    assert_eq!(deny["terminal"], true);
}

#[test]
fn a_set_s_basic_auth_hashes_stay_out_of_debug_output_and_the_bootstrap_config() {
    let mut m = model("  policies:\n    admin:\n      headers: {X-Policy: admin}\n");
    let set = m.policies.get_mut("admin").unwrap();
    set.basic_auth = Some(BasicAuth {
        realm: "admin".into(),
        users: vec![format!("alice:{SENTINEL_HASH}")],
        users_file: None,
    });
    let routed = table(vec![route(vec![Middleware::PolicySet("admin".into())])]);
    let attached = attach(&m, &routed, Secrets::Include).unwrap();
    let debug = format!("{attached:?}");
    assert!(debug.contains("policy set admin"), "{debug}");
    assert!(!debug.contains("SENTINEL"), "{debug}");
    let live = render(&m, &routed, Secrets::Include).unwrap().to_string();
    assert!(
        live.contains(SENTINEL_HASH),
        "the live config carries the account"
    );
    let boot = render(&m, &routed, Secrets::Withhold).unwrap().to_string();
    assert!(!boot.contains("SENTINEL"), "{boot}");
    assert!(
        boot.contains(r#"Basic realm=\"admin\""#),
        "401 until the live config: {boot}"
    );

    // A set whose users nobody read, or whose list is empty, is refused, never rendered open.
    m.policies.get_mut("admin").unwrap().basic_auth = Some(BasicAuth {
        realm: "admin".into(),
        users: Vec::new(),
        users_file: Some("/etc/admin.htpasswd".into()),
    });
    match render(&m, &routed, Secrets::Include) {
        Err(Error::InvalidValue { field, reason }) => {
            assert_eq!(field, "spec.policies.admin.basicAuth.usersFrom");
            assert!(reason.contains("no user:hash line"), "{reason}");
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
}

#[test]
fn a_set_s_non_bcrypt_user_line_is_refused_naming_the_set_s_field_and_line_never_the_hash() {
    let mut m = model("  policies:\n    admin:\n      headers: {X-Policy: admin}\n");
    m.policies.get_mut("admin").unwrap().basic_auth = Some(BasicAuth {
        realm: "admin".into(),
        users: vec![
            format!("alice:{SENTINEL_HASH}"),
            "bob:$apr1$SENTINEL$h9FWgUz3n9YxylKLlR5SQ/".into(),
        ],
        users_file: None,
    });
    let routed = table(vec![route(vec![Middleware::PolicySet("admin".into())])]);
    let err = render(&m, &routed, Secrets::Include).unwrap_err();
    let text = format!("{err} {err:?}");
    assert!(
        text.contains("spec.policies.admin.basicAuth.usersFrom (line 2)"),
        "{text}"
    );
    assert!(text.contains("htpasswd -B"), "the fix: {text}");
    assert!(!text.contains("SENTINEL"), "{text}");
}

#[test]
fn a_route_naming_a_set_the_model_lacks_is_an_error_not_an_open_route() {
    let m = model("");
    let routed = table(vec![route(vec![Middleware::PolicySet("ghost".into())])]);
    match render(&m, &routed, Secrets::Include) {
        Err(Error::InvalidValue { field, .. }) => assert_eq!(field, "spec.policies.ghost"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn without_sets_or_retry_the_route_table_is_borrowed_not_copied() {
    let plain = table(vec![route(Vec::new())]);
    assert!(matches!(
        attach(&model(""), &plain, Secrets::Include).unwrap(),
        Cow::Borrowed(_)
    ));
    let retry = model("  middlewares:\n    retry: {attempts: 3, initialInterval: 20ms}\n");
    let attached = attach(&retry, &plain, Secrets::Include).unwrap();
    assert_eq!(
        attached.routes[0].middlewares,
        [Middleware::Retry {
            attempts: 3,
            interval_ms: 20
        }]
    );
    let v = render(&retry, &plain, Secrets::Include).unwrap();
    assert_eq!(
        v["apps"]["http"]["servers"]["web"]["routes"][1]["handle"][0]["load_balancing"],
        json!({"selection_policy": {"policy": "round_robin"}, "retries": 2, "try_interval": 20_000_000})
    );
    let no_wait = model("  middlewares:\n    retry: {attempts: 2, initialInterval: 0s}\n");
    let v = render(&no_wait, &plain, Secrets::Include).unwrap();
    assert_eq!(
        v["apps"]["http"]["servers"]["web"]["routes"][1]["handle"][0]["load_balancing"]["try_interval"],
        1,
        "not Caddy's 250 ms default"
    );
}

#[test]
fn in_host_maps_a_set_s_handlers_and_retry_stay_with_the_services_that_opted_in() {
    let m = model(
        "  policies:\n    admin:\n      headers: {X-Policy: admin}\n      retry: {attempts: 4}\n",
    );
    let mut public = route(Vec::new());
    public.service = "public".into();
    public.host = Some(HostMatch::Exact("public.example.test".into()));
    let routed = table(vec![
        route(vec![Middleware::PolicySet("admin".into())]),
        public,
    ]);
    let options = CaddyOptions {
        admin: AdminEndpoint::Loopback(2999),
        dev_mode: false,
        secrets: Secrets::Include,
        host_maps_from: 1,
    };
    let v: Value =
        serde_json::from_slice(&render_config(&m, &routed, &options).unwrap().body).unwrap();
    let routes = v["apps"]["http"]["servers"]["web"]["routes"]
        .as_array()
        .unwrap();
    // Per shape: the map route, then the proxy route with the shape's handlers.
    let last = |r: &Value| r["handle"].as_array().unwrap().last().unwrap().clone();
    let proxies: Vec<&Value> = routes
        .iter()
        .filter(|r| last(r)["handler"] == "reverse_proxy")
        .collect();
    assert_eq!(proxies.len(), 2, "{routes:#?}");
    let with_set: Vec<&&Value> = proxies
        .iter()
        .filter(|r| r.to_string().contains("X-Policy"))
        .collect();
    assert_eq!(with_set.len(), 1, "one shape runs the set: {proxies:#?}");
    assert_eq!(last(with_set[0])["load_balancing"]["retries"], 3);
    for r in &proxies {
        if !r.to_string().contains("X-Policy") {
            assert!(last(r).get("load_balancing").is_none(), "{r}");
        }
    }
}

#[test]
fn a_forward_auth_address_with_credentials_is_refused_without_echoing_them() {
    let mut m = model("  middlewares:\n    forwardAuth: {address: 'http://auth.test/verify'}\n");
    if let Some(f) = m.policy.forward_auth.as_mut() {
        f.address = "http://svc:hunter2-sentinel@auth.test/verify".into();
    }
    match render(&m, &table(Vec::new()), Secrets::Include) {
        Err(e @ Error::InvalidValue { .. }) => {
            let text = e.to_string();
            assert!(
                text.contains("spec.middlewares.forwardAuth.address"),
                "{text}"
            );
            assert!(!text.contains("hunter2"), "{text}");
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn the_policy_identity_moves_when_a_set_changes_or_its_users_are_rotated_and_never_shows_them() {
    let base = model("");
    assert_eq!(identity_with_sets("abc", &base).unwrap(), "abc", "no sets");
    let mut m = model("  policies:\n    admin:\n      headers: {X-Policy: admin}\n");
    let headers_only = identity_with_sets("abc", &m).unwrap();
    assert_ne!(headers_only, "abc");
    let with_users = |m: &mut Model, hash: &str| {
        m.policies.get_mut("admin").unwrap().basic_auth = Some(BasicAuth {
            realm: "admin".into(),
            users: vec![format!("alice:{hash}")],
            users_file: None,
        });
        identity_with_sets("abc", m).unwrap()
    };
    let first = with_users(&mut m, SENTINEL_HASH);
    let rotated = with_users(
        &mut m,
        "$2y$05$OTHERxxxabcdefghijklmuJ3X7H7t3kRr9JxW4p7pWjHn3eH5yabc",
    );
    assert_ne!(first, headers_only);
    assert_ne!(first, rotated, "a rotation is a policy change");
    assert_eq!(first, with_users(&mut m, SENTINEL_HASH), "stable");
    assert!(!first.contains("SENTINEL") && first.len() == 64, "{first}");
    // Users nobody read are refused here too, before anything is loaded.
    m.policies.get_mut("admin").unwrap().basic_auth = Some(BasicAuth {
        realm: "admin".into(),
        users: Vec::new(),
        users_file: None,
    });
    assert!(identity_with_sets("abc", &m).is_err());
}
