#![allow(clippy::unwrap_used, clippy::panic)] // tests fail loudly

use super::*;
use crate::proxy::caddy::routes::{Route, Source};

const BCRYPT: &str = "$2y$05$SENTINELabcdefghijklmuJ3X7H7t3kRr9JxW4p7pWjHn3eH5yabc";

fn spec(middlewares: &str, tls: &str) -> ValidatedSpec {
    let doc = format!(
        "apiVersion: proxy-operator.io/v1alpha1\nkind: ProxyConfig\nspec:\n  proxy: caddy\n  domainSuffix: example.test\n  entryPoints:\n    web:\n      address: \"127.0.0.1:8000\"\n      redirectTo: websecure\n    websecure:\n      address: \"127.0.0.1:8443\"\n  tls:\n    certDir: /tmp/certs\n{tls}  middlewares:\n{middlewares}"
    );
    crate::spec::load(doc.as_bytes()).unwrap()
}

fn model(spec: &ValidatedSpec, users: Option<&[String]>) -> Model {
    resolve(spec, users).unwrap()
}

pub(super) fn options() -> CaddyOptions {
    CaddyOptions {
        admin: AdminEndpoint::Loopback(2999),
        dev_mode: false,
        secrets: Secrets::Include,
        host_maps_from: HOST_MAPS_FROM,
    }
}

fn route(host: &str) -> Route {
    Route {
        service: "app".into(),
        source: Source::Hind(format!("https://{host}")),
        entry_points: vec!["websecure".into()],
        host: Some(HostMatch::Exact(host.into())),
        path: None,
        middlewares: Vec::new(),
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

fn render(model: &Model, routes: &RouteTable, options: &CaddyOptions) -> Value {
    let config = render_config(model, routes, options).unwrap();
    serde_json::from_slice(&config.body).unwrap()
}

#[test]
fn each_entry_point_is_a_server_and_the_plain_one_redirects_to_https() {
    let s = spec("    securityHeaders:\n      enabled: true\n", "");
    let v = render(
        &model(&s, None),
        &table(vec![route("app.test")]),
        &options(),
    );
    let servers = v["apps"]["http"]["servers"].as_object().unwrap();
    assert_eq!(servers.len(), 2);
    let web = &servers["web"];
    assert_eq!(web["listen"], json!(["127.0.0.1:8000"]));
    assert_eq!(
        web["routes"][0]["match"][0]["method"],
        json!(["GET", "HEAD"])
    );
    assert_eq!(web["routes"][0]["handle"][0]["status_code"], 301);
    assert_eq!(web["routes"][1]["handle"][0]["status_code"], 308);
    assert_eq!(
        web["routes"][1]["handle"][0]["headers"]["Location"],
        json!(["https://{http.request.host}:8443{http.request.uri}"])
    );
    let secure = &servers["websecure"];
    assert_eq!(
        secure["tls_connection_policies"][0]["protocol_min"],
        "tls1.2"
    );
    let routes = secure["routes"].as_array().unwrap();
    // headers, the app, 404.
    assert_eq!(routes.len(), 3);
    assert_eq!(routes[1]["match"][0]["host"], json!(["app.test"]));
    assert_eq!(
        routes[1]["handle"][0]["upstreams"][0]["dial"],
        "10.0.0.1:80"
    );
    assert_eq!(routes[2]["handle"][0]["status_code"], 404);
    assert_eq!(v["apps"]["http"]["https_port"], 8443);
    assert_eq!(v["apps"]["http"]["http_port"], 8000);
}

#[test]
fn the_admin_api_stays_on_loopback_with_origins_and_only_the_live_config_persists() {
    let s = spec("    securityHeaders:\n      enabled: true\n", "");
    let v = render(&model(&s, None), &table(vec![]), &options());
    assert_eq!(v["admin"]["listen"], "127.0.0.1:2999");
    assert_eq!(
        v["admin"]["origins"],
        json!(["127.0.0.1:2999", "localhost:2999"])
    );
    assert_eq!(v["admin"]["config"]["persist"], true);
    let bootstrap = CaddyOptions {
        secrets: Secrets::Withhold,
        ..options()
    };
    let v = render(&model(&s, None), &table(vec![]), &bootstrap);
    assert_eq!(v["admin"]["config"]["persist"], false);
    let unix = CaddyOptions {
        admin: AdminEndpoint::Unix("/run/caddy/admin.sock".into()),
        ..options()
    };
    let v = render(&model(&s, None), &table(vec![]), &unix);
    assert_eq!(v["admin"]["listen"], "unix//run/caddy/admin.sock");
    assert_eq!(
        AdminEndpoint::from_model(&model(&s, None)),
        AdminEndpoint::Loopback(8080)
    );
}

#[test]
fn the_identity_is_in_the_body_stable_and_changes_with_any_route() {
    let s = spec("    securityHeaders:\n      enabled: true\n", "");
    let m = model(&s, None);
    let a = render_config(&m, &table(vec![route("a.test")]), &options()).unwrap();
    let again = render_config(&m, &table(vec![route("a.test")]), &options()).unwrap();
    let b = render_config(&m, &table(vec![route("b.test")]), &options()).unwrap();
    assert_eq!(a, again);
    assert_ne!(a.identity, b.identity);
    assert!(a.identity.starts_with(IDENTITY_PREFIX));
    let v: Value = serde_json::from_slice(&a.body).unwrap();
    assert_eq!(v["apps"]["http"]["@id"], json!(a.identity));
    assert!(
        !format!("{a:?}").contains("apps"),
        "Debug never prints the body"
    );
}

#[test]
fn policy_runs_before_the_routes_headers_then_allow_list_then_basic_auth() {
    let s = spec(
        "    securityHeaders:\n      enabled: true\n    ipAllowList:\n      sourceRange: [10.0.0.0/8]\n    basicAuth:\n      usersFrom: {file: /etc/htpasswd}\n",
        "",
    );
    let users = vec![format!("alice:{BCRYPT}"), String::new(), "# comment".into()];
    let v = render(
        &model(&s, Some(&users)),
        &table(vec![route("a.test")]),
        &options(),
    );
    let routes = v["apps"]["http"]["servers"]["websecure"]["routes"]
        .as_array()
        .unwrap();
    assert_eq!(routes[0]["handle"][0]["handler"], "headers");
    assert_eq!(routes[0]["handle"][1]["response"]["deferred"], true);
    assert!(routes[0]["handle"][0]["response"]["set"]["X-Frame-Options"].is_array());
    assert_eq!(
        routes[1]["match"][0]["not"][0]["remote_ip"]["ranges"],
        json!(["10.0.0.0/8"])
    );
    assert_eq!(routes[1]["handle"][0]["status_code"], 403);
    let basic = &routes[2]["handle"][0]["providers"]["http_basic"];
    assert_eq!(
        basic["accounts"],
        json!([{"username": "alice", "password": BCRYPT}])
    );
    assert_eq!(basic["hash"]["algorithm"], "bcrypt");
}

#[test]
fn non_bcrypt_hashes_are_refused_naming_the_line_but_never_the_hash() {
    let s = spec(
        "    basicAuth:\n      usersFrom: {file: /etc/htpasswd}\n",
        "",
    );
    let users = vec![format!("alice:{BCRYPT}"), "bob:$apr1$SENTINEL$xyz".into()];
    let err = render_config(&model(&s, Some(&users)), &table(vec![]), &options())
        .unwrap_err()
        .to_string();
    assert!(err.contains("line 2"), "{err}");
    assert!(err.contains("bcrypt"), "{err}");
    assert!(!err.contains("SENTINEL"), "{err}");
    let err = render_config(
        &model(&s, Some(&["no-colon".into()])),
        &table(vec![]),
        &options(),
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("user:hash"), "{err}");
    let truncated = vec!["alice:$2y$05$SENTINELshort".to_string()];
    let err = render_config(&model(&s, Some(&truncated)), &table(vec![]), &options())
        .unwrap_err()
        .to_string();
    assert!(err.contains("60-character"), "{err}");
    assert!(!err.contains("SENTINEL"), "{err}");
}

#[test]
fn the_bootstrap_config_withholds_the_hashes_and_answers_401() {
    let s = spec(
        "    basicAuth:\n      usersFrom: {file: /etc/htpasswd}\n",
        "",
    );
    let users = vec![format!("alice:{BCRYPT}")];
    let bootstrap = CaddyOptions {
        secrets: Secrets::Withhold,
        ..options()
    };
    let config = render_config(
        &model(&s, Some(&users)),
        &table(vec![route("a.test")]),
        &bootstrap,
    )
    .unwrap();
    let text = String::from_utf8(config.body).unwrap();
    assert!(!text.contains("SENTINEL"));
    assert!(text.contains("Basic realm=\\\"restricted\\\""), "{text}");
}

#[test]
fn the_rate_limiter_is_refused_naming_the_missing_module() {
    let doc = "apiVersion: proxy-operator.io/v1alpha1\nkind: ProxyConfig\nspec:\n  proxy: traefik\n  middlewares:\n    rateLimit:\n      average: 10\n      burst: 20\n";
    let traefik_spec = crate::spec::load(doc.as_bytes()).unwrap();
    let errors = caddy_unsupported(&traefik_spec);
    assert_eq!(errors.len(), 1);
    assert_eq!(errors[0].path, "spec.middlewares.rateLimit");
    assert!(
        errors[0].message.contains("http.handlers.rate_limit"),
        "{}",
        errors[0]
    );
    let err = render_config(&model(&traefik_spec, None), &table(vec![]), &options())
        .unwrap_err()
        .to_string();
    assert!(err.contains("http.handlers.rate_limit"), "{err}");
    assert!(caddy_unsupported(&spec("    securityHeaders:\n      enabled: true\n", "")).is_empty());
}

#[test]
fn certificates_come_from_files_a_folder_acme_or_the_internal_ca() {
    let headers = "    securityHeaders:\n      enabled: true\n";
    let files = spec(
        headers,
        "    certificates:\n      - certFile: a.crt\n        keyFile: a.key\n",
    );
    let v = render(&model(&files, None), &table(vec![]), &options());
    assert_eq!(
        v["apps"]["tls"]["certificates"]["load_files"],
        json!([{"certificate": "/tmp/certs/a.crt", "key": "/tmp/certs/a.key"}])
    );
    let secure = &v["apps"]["http"]["servers"]["websecure"];
    assert_eq!(secure["automatic_https"]["disable_certificates"], true);

    let folder = spec(headers, "");
    let v = render(&model(&folder, None), &table(vec![]), &options());
    assert_eq!(
        v["apps"]["tls"]["certificates"]["load_folders"],
        json!(["/tmp/certs"])
    );
    assert_eq!(v["storage"]["root"], "/tmp/certs");

    let acme = spec(headers, "    acme:\n      email: ops@example.test\n");
    let v = render(&model(&acme, None), &table(vec![]), &options());
    let issuer = &v["apps"]["tls"]["automation"]["policies"][0]["issuers"][0];
    assert_eq!(issuer["module"], "acme");
    assert_eq!(issuer["email"], "ops@example.test");
    assert_eq!(
        v["apps"]["http"]["servers"]["web"]["automatic_https"],
        json!({"disable": true})
    );
    assert_eq!(
        v["apps"]["http"]["servers"]["websecure"]["automatic_https"],
        json!({"disable_redirects": true})
    );

    let dev = CaddyOptions {
        dev_mode: true,
        ..options()
    };
    let v = render(&model(&folder, None), &table(vec![]), &dev);
    assert_eq!(
        v["apps"]["tls"]["automation"]["policies"][0]["issuers"][0]["module"],
        "internal"
    );
    assert_eq!(
        v["apps"]["pki"]["certificate_authorities"]["local"]["install_trust"],
        false
    );
}

#[test]
fn traefik_matchers_and_middlewares_become_caddy_handlers_in_order() {
    let s = spec("    securityHeaders:\n      enabled: false\n", "");
    let mut r = route("unused");
    r.host = Some(HostMatch::Regexp("^[^.]+\\.d\\.test$".into()));
    r.path = Some(PathRule::Prefix("/api".into()));
    r.pass_host_header = false;
    r.upstream_scheme = UpstreamScheme::Https;
    r.middlewares = vec![
        Middleware::IpAllow(vec!["10.0.0.0/8".parse().unwrap()]),
        Middleware::StripPrefix("/api".into()),
        Middleware::AddPrefix("/v1".into()),
        Middleware::RedirectRegex {
            regex: "^http://(.*)$".into(),
            replacement: "https://${1}".into(),
            permanent: true,
        },
    ];
    let v = render(&model(&s, None), &table(vec![r]), &options());
    let route = &v["apps"]["http"]["servers"]["websecure"]["routes"][0];
    assert_eq!(route["match"][0]["path"], json!(["/api*"]));
    assert_eq!(
        route["match"][0]["vars_regexp"]["{http.request.host}"]["pattern"],
        "^[^.]+\\.d\\.test$"
    );
    let handlers: Vec<&str> = route["handle"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["handler"].as_str().unwrap())
        .collect();
    assert_eq!(
        handlers,
        [
            "subroute",
            "rewrite",
            "rewrite",
            "vars",
            "subroute",
            "reverse_proxy"
        ]
    );
    let redirect = &route["handle"][4]["routes"][0]["handle"][0];
    assert_eq!(
        redirect["headers"]["Location"],
        json!(["https://{http.regexp.redirect3.1}"])
    );
    let proxy = &route["handle"][5];
    assert_eq!(proxy["transport"]["tls"], json!({}));
    assert_eq!(
        proxy["headers"]["request"]["set"]["Host"],
        json!(["{http.reverse_proxy.upstream.hostport}"])
    );
}

#[test]
fn a_route_without_upstreams_is_left_out() {
    let s = spec("    securityHeaders:\n      enabled: false\n", "");
    let mut r = route("a.test");
    r.upstreams.clear();
    let v = render(&model(&s, None), &table(vec![r]), &options());
    let routes = v["apps"]["http"]["servers"]["websecure"]["routes"]
        .as_array()
        .unwrap();
    assert_eq!(routes.len(), 1, "only the 404");
}

#[test]
fn a_value_that_looks_like_the_identity_placeholder_does_not_take_its_place() {
    let s = spec("    securityHeaders:\n      enabled: false\n", "");
    let mut r = route("a.test");
    let fake = format!("{IDENTITY_PREFIX}{}", "0".repeat(64));
    r.middlewares = vec![Middleware::ResponseHeaders(
        [
            ("@id".to_string(), fake.clone()),
            ("X-Fake".to_string(), fake.clone()),
        ]
        .into(),
    )];
    let config = render_config(&model(&s, None), &table(vec![r]), &options()).unwrap();
    let v: Value = serde_json::from_slice(&config.body).unwrap();
    assert_eq!(v["apps"]["http"]["@id"], json!(config.identity));
    let headers =
        &v["apps"]["http"]["servers"]["websecure"]["routes"][0]["handle"][0]["response"]["set"];
    assert_eq!(headers["X-Fake"], json!([fake]));
}

#[test]
fn basic_auth_without_the_users_read_is_refused_before_rendering() {
    let s = spec(
        "    basicAuth:\n      usersFrom: {consulKey: edge/htpasswd}\n",
        "",
    );
    let err = resolve(&s, None).unwrap_err();
    assert!(
        matches!(err, crate::render::Error::UnresolvedSecret { .. }),
        "{err}"
    );
    assert!(err.to_string().contains("usersFrom"));
    let users = vec![format!("alice:{BCRYPT}")];
    let m = model(&s, Some(&users));
    assert_eq!(m.policy.basic_auth.unwrap().users, users);
}

#[test]
fn basic_auth_with_an_empty_users_list_is_refused_naming_the_field_rather_than_locking_everyone_out()
 {
    let s = spec(
        "    basicAuth:\n      usersFrom: {consulKey: edge/htpasswd}\n",
        "",
    );
    let empty: Vec<String> = Vec::new();
    let err = render_config(&model(&s, Some(&empty)), &table(Vec::new()), &options()).unwrap_err();
    assert!(
        err.to_string()
            .contains("spec.middlewares.basicAuth.usersFrom"),
        "{err}"
    );
    assert!(err.to_string().contains("holds no user:hash line"), "{err}");
    // The bootstrap config withholds the users anyway: it answers 401 until the live one loads.
    let boot = CaddyOptions {
        secrets: Secrets::Withhold,
        ..options()
    };
    assert!(render_config(&model(&s, Some(&empty)), &table(Vec::new()), &boot).is_ok());
}

fn maps_from(from: usize) -> CaddyOptions {
    CaddyOptions {
        host_maps_from: from,
        ..options()
    }
}

fn secure_routes(v: &Value) -> Vec<Value> {
    v["apps"]["http"]["servers"]["websecure"]["routes"]
        .as_array()
        .unwrap()
        .clone()
}

#[test]
fn a_run_of_host_routes_becomes_a_map_and_a_proxy_route_per_path_and_shape() {
    let s = spec("    securityHeaders:\n      enabled: false\n", "");
    let a = route("A.test");
    let mut b = route("b.deep.test");
    b.upstreams = vec!["10.0.0.2:80".into(), "10.0.0.3:80".into()];
    let mut c = route("c.test");
    c.path = Some(PathRule::Prefix("/API".into()));
    c.middlewares = vec![Middleware::StripPrefix("/API".into())];
    let mut d = route("d.test");
    d.upstreams = vec!["10.0.0.4:80".into()];
    let routes = table(vec![c, a, b, d]);
    let v = render(&model(&s, None), &routes, &maps_from(1));
    let list = secure_routes(&v);
    // /API group (longer path first), then the hosts without path: one upstream, two upstreams;
    // each a map route and a proxy route; then 404.
    assert_eq!(list.len(), 7, "{list:#?}");
    assert_eq!(list[0]["match"][0], json!({"path": ["/api*"]}));
    assert_eq!(
        list[0]["handle"][0]["mappings"],
        json!([{"input": ".c.test", "outputs": ["10.0.0.1:80"]}])
    );
    assert_eq!(
        list[1]["match"][0],
        json!({"path": ["/api*"], "not": [{"vars": {"{proxy_operator.0.upstream.0}": [""]}}]})
    );
    assert_eq!(list[1]["handle"][0]["strip_path_prefix"], "/API");
    assert_eq!(
        list[1]["handle"][1]["upstreams"],
        json!([{"dial": "{proxy_operator.0.upstream.0}"}])
    );
    assert_eq!(list[1]["terminal"], true);
    let map = &list[2]["handle"][0];
    assert_eq!(map["handler"], "map");
    assert!(list[2].get("match").is_none(), "{:?}", list[2]);
    assert!(list[2].get("terminal").is_none(), "{:?}", list[2]);
    assert_eq!(
        map["source"],
        "{http.request.host.labels.2}.{http.request.host.labels.1}.{http.request.host.labels.0}"
    );
    assert_eq!(
        map["destinations"],
        json!(["{proxy_operator.1.upstream.0}"])
    );
    assert_eq!(
        map["mappings"],
        json!([
            {"input": ".a.test", "outputs": ["10.0.0.1:80"]},
            {"input": ".d.test", "outputs": ["10.0.0.4:80"]}
        ])
    );
    assert_eq!(
        list[4]["handle"][0]["mappings"],
        json!([{"input": ".b.deep.test", "outputs": ["10.0.0.2:80", "10.0.0.3:80"]}])
    );
    assert_eq!(
        list[5]["handle"][0]["upstreams"],
        json!([
            {"dial": "{proxy_operator.2.upstream.0}"},
            {"dial": "{proxy_operator.2.upstream.1}"}
        ])
    );
    assert_eq!(list[6]["handle"][0]["status_code"], 404);
}

#[test]
fn where_caddy_manages_certificates_the_proxy_route_lists_its_hosts_for_automatic_https() {
    let s = spec("    securityHeaders:\n      enabled: false\n", "");
    let dev = CaddyOptions {
        dev_mode: true,
        ..maps_from(1)
    };
    let v = render(
        &model(&s, None),
        &table(vec![route("b.test"), route("A.test")]),
        &dev,
    );
    let list = secure_routes(&v);
    assert_eq!(list[1]["match"][0]["host"], json!(["a.test", "b.test"]));
    let acme = spec(
        "    securityHeaders:\n      enabled: false\n",
        "    acme:\n      email: ops@example.test\n",
    );
    let v = render(
        &model(&acme, None),
        &table(vec![route("a.test")]),
        &maps_from(1),
    );
    assert_eq!(secure_routes(&v)[1]["match"][0]["host"], json!(["a.test"]));
    let files = render(
        &model(&s, None),
        &table(vec![route("a.test")]),
        &maps_from(1),
    );
    assert!(secure_routes(&files)[1]["match"][0].get("host").is_none());
}

#[test]
fn map_inputs_are_lowercased_and_padded_to_one_label_more_than_the_longest_host() {
    let s = spec("    securityHeaders:\n      enabled: false\n", "");
    let v = render(
        &model(&s, None),
        &table(vec![route("X.Sub.Example.test"), route("b.test")]),
        &maps_from(1),
    );
    let map = &secure_routes(&v)[0]["handle"][0];
    assert_eq!(
        map["source"],
        "{http.request.host.labels.4}.{http.request.host.labels.3}.{http.request.host.labels.2}.{http.request.host.labels.1}.{http.request.host.labels.0}"
    );
    let inputs: Vec<&str> = map["mappings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["input"].as_str().unwrap())
        .collect();
    assert_eq!(inputs, ["...b.test", ".x.sub.example.test"]);
}

#[test]
fn below_the_threshold_every_route_is_its_own_caddy_route_as_before() {
    let s = spec("    securityHeaders:\n      enabled: true\n", "");
    let m = model(&s, None);
    let routes = table(
        (0..HOST_MAPS_FROM - 1)
            .map(|i| route(&format!("h{i}.test")))
            .collect(),
    );
    let default = render_config(&m, &routes, &options()).unwrap();
    let never = render_config(&m, &routes, &maps_from(usize::MAX)).unwrap();
    assert_eq!(default, never);
    assert!(!String::from_utf8(default.body).unwrap().contains("\"map\""));
    let mut more = routes.clone();
    more.routes.push(route("last.test"));
    let at = render(&m, &more, &options());
    assert_eq!(secure_routes(&at)[1]["handle"][0]["handler"], "map");
}

#[test]
fn wildcard_regexp_and_hostless_routes_stay_single_routes_in_their_place() {
    let s = spec("    securityHeaders:\n      enabled: false\n", "");
    let mut top = route("top.test");
    top.priority = 10;
    let mut wild = route("*.w.test");
    wild.service = "wild".into();
    let mut re = route("unused");
    re.host = Some(HostMatch::Regexp("^r[0-9]+\\.test$".into()));
    let mut any = route("unused");
    any.host = None;
    any.path = Some(PathRule::Prefix("/any".into()));
    let mut unicode = route("u.test");
    unicode.path = Some(PathRule::Prefix("/ü".into()));
    let mut low = route("low.test");
    low.priority = -1;
    let mut table = table(vec![
        low,
        any,
        re,
        wild,
        route("a.test"),
        route("b.test"),
        top,
        unicode,
    ]);
    table.routes.sort_by_cached_key(|r| {
        // The serving order `build_routes` gives.
        let host_class = match &r.host {
            Some(HostMatch::Exact(h)) if !h.contains('*') => 0,
            Some(HostMatch::Exact(_)) => 1,
            Some(HostMatch::Regexp(_)) => 2,
            None => 3,
        };
        let len = r.path.as_ref().map_or(0, |p| match p {
            PathRule::Prefix(p) | PathRule::Exact(p) => p.len(),
        });
        (-r.priority, host_class, usize::MAX - len, r.name())
    });
    let v = render(&model(&s, None), &table, &maps_from(1));
    let kinds: Vec<String> = secure_routes(&v)
        .iter()
        .filter(|r| {
            r["handle"][0]["handler"] != "reverse_proxy" || r["match"][0].get("not").is_none()
        })
        .map(|r| {
            if r["handle"][0]["handler"] == "map" {
                let hosts: Vec<&str> = r["handle"][0]["mappings"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|m| m["input"].as_str().unwrap().trim_start_matches('.'))
                    .collect();
                format!("map {hosts:?}")
            } else if let Some(h) = r["match"][0].get("host") {
                format!("route {h}")
            } else if r["match"][0].get("vars_regexp").is_some() {
                "regexp".to_string()
            } else if let Some(p) = r["match"][0].get("path") {
                format!("path {p}")
            } else {
                format!("{}", r["handle"][0]["status_code"])
            }
        })
        .collect();
    assert_eq!(
        kinds,
        [
            "map [\"top.test\"]",
            // The non-ASCII path breaks the run: one route, then the maps resume.
            "route [\"u.test\"]",
            "map [\"a.test\", \"b.test\"]",
            "route [\"*.w.test\"]",
            "regexp",
            "path [\"/any*\"]",
            "map [\"low.test\"]",
            "404",
        ]
    );
    // Placeholders are numbered across runs, so no map answers for another's hosts.
    let dests: Vec<String> = secure_routes(&v)
        .iter()
        .filter(|r| r["handle"][0]["handler"] == "map")
        .map(|r| {
            r["handle"][0]["destinations"][0]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    assert_eq!(
        dests,
        [
            "{proxy_operator.0.upstream.0}",
            "{proxy_operator.1.upstream.0}",
            "{proxy_operator.2.upstream.0}"
        ]
    );
}

#[test]
fn a_host_repeated_in_a_group_is_served_by_the_first_route_only() {
    let s = spec("    securityHeaders:\n      enabled: false\n", "");
    let first = route("dup.test");
    let mut second = route("DUP.test");
    second.upstreams = vec!["10.0.0.9:80".into()];
    let mut other_path = route("dup.test");
    other_path.path = Some(PathRule::Exact("/x".into()));
    other_path.upstreams = vec!["10.0.0.8:80".into()];
    let v = render(
        &model(&s, None),
        &table(vec![other_path, first, second]),
        &maps_from(1),
    );
    let list = secure_routes(&v);
    assert_eq!(list.len(), 5, "{list:#?}");
    assert_eq!(list[0]["match"][0]["path"], json!(["/x"]));
    assert_eq!(
        list[2]["handle"][0]["mappings"],
        json!([{"input": ".dup.test", "outputs": ["10.0.0.1:80"]}])
    );
}
