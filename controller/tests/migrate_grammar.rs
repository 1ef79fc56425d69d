//! Table tests: every rule of the urlprefix grammar (`contracts/URLPREFIX.md`) and of HinD's
//! `https://` tags (`contracts/HIND.md`), and every real example in those files, through the
//! parser and the Traefik converter.
#![allow(clippy::panic)] // a failing test panics

use proxy_operator::migrate::{
    ConvertOptions, HostKind, PathMatch, Route, Scheme, ServiceInput, ServiceMigration, TcpListen,
    UpstreamScheme, migrate_service, parse_tag,
};

fn convert_with(tags: &[&str], options: &ConvertOptions) -> ServiceMigration {
    let tags: Vec<String> = tags.iter().map(|t| t.to_string()).collect();
    migrate_service(
        ServiceInput {
            name: "web",
            tags: &tags,
            port: None,
        },
        options,
        false,
    )
}

fn convert(tags: &[&str]) -> ServiceMigration {
    convert_with(tags, &ConvertOptions::default())
}

/// Every tag of the routers whose rule is `rule`, with the router name replaced by `R`.
fn routers(m: &ServiceMigration, rule: &str) -> Vec<Vec<String>> {
    let names: Vec<String> = m
        .add
        .iter()
        .filter_map(|t| t.strip_suffix(&format!(".rule={rule}")).map(str::to_string))
        .collect();
    names
        .iter()
        .map(|n| {
            m.add
                .iter()
                .filter(|t| t.starts_with(&format!("{n}.")))
                .map(|t| t.replacen(n.as_str(), "R", 1))
                .collect()
        })
        .collect()
}

fn has_finding(m: &ServiceMigration, option_part: &str) -> bool {
    m.findings.iter().any(|f| f.option.contains(option_part))
}

fn http(tag: &str) -> proxy_operator::migrate::HttpRoute {
    match parse_tag(tag).and_then(|p| p.route) {
        Some(Route::Http(r)) => r,
        other => panic!("{tag}: expected an HTTP route, got {other:?}"),
    }
}

fn value_of(m: &ServiceMigration, key_suffix: &str) -> Option<String> {
    m.add.iter().find_map(|t| {
        t.split_once('=')
            .filter(|(k, _)| k.ends_with(key_suffix))
            .map(|(_, v)| v.to_string())
    })
}

// === urlprefix: lexical rules ===

#[test]
fn whitespace_around_prefix_and_route_is_tolerated_like_fabio() {
    for tag in [" urlprefix-/foo", "urlprefix- /foo", "urlprefix-/foo "] {
        let r = http(tag);
        assert_eq!(r.host, None, "{tag}");
        assert_eq!(r.path, PathMatch::Prefix("/foo".into()), "{tag}");
    }
}

#[test]
fn only_a_space_separates_route_from_options_so_a_tab_is_part_of_the_path_and_rejected() {
    let p = parse_tag("urlprefix-/foo\tstrip=/foo").expect("a urlprefix tag");
    assert!(p.route.is_none());
    assert!(p.findings.iter().any(|f| f.option == "path"));
}

#[test]
fn options_are_separated_by_any_whitespace() {
    let r = http("urlprefix-/foo  strip=/foo\tprepend=/bar");
    assert_eq!(r.strip.as_deref(), Some("/foo"));
    assert_eq!(r.prepend.as_deref(), Some("/bar"));
}

#[test]
fn empty_route_is_rejected_with_a_finding() {
    let p = parse_tag("urlprefix-").expect("a urlprefix tag");
    assert!(p.route.is_none());
    assert_eq!(p.findings.len(), 1);
}

#[test]
fn host_is_lower_cased_and_path_case_is_kept() {
    let r = http("urlprefix-Example.COM/Static");
    assert_eq!(r.host.map(|h| h.text), Some("example.com".to_string()));
    assert_eq!(r.path, PathMatch::Prefix("/Static".into()));
}

#[test]
fn bare_host_routes_the_whole_host_like_host_slash() {
    assert_eq!(http("urlprefix-mysite.com"), http("urlprefix-mysite.com/"));
    let m = convert(&["urlprefix-mysite.com"]);
    assert_eq!(
        routers(&m, "Host(`mysite.com`)").len(),
        2,
        "plain and TLS routers: fabio matched both"
    );
}

#[test]
fn dc_variable_is_kept_explicit_and_needs_a_datacenter_to_convert() {
    let r = http("urlprefix-${DC}.example.com/");
    assert_eq!(
        r.host.as_ref().map(|h| h.text.as_str()),
        Some("${DC}.example.com")
    );
    assert_eq!(http("urlprefix-$DC.example.com/").host, r.host);

    let without = convert(&["urlprefix-${DC}.example.com/"]);
    assert!(without.add.is_empty());
    assert!(has_finding(&without, "$DC"));

    let options = ConvertOptions {
        datacenter: Some("DC1".into()),
        ..ConvertOptions::default()
    };
    let with = convert_with(&["urlprefix-${DC}.example.com/"], &options);
    assert_eq!(routers(&with, "Host(`dc1.example.com`)").len(), 2);
}

#[test]
fn unknown_variables_expand_to_nothing_as_fabio_does() {
    let r = http("urlprefix-api$ENV.example.com/v$X/x");
    assert_eq!(r.host.map(|h| h.text), Some("api.example.com".to_string()));
    assert_eq!(r.path, PathMatch::Prefix("/v/x".into()));
}

#[test]
fn a_bare_host_is_not_expanded_so_a_dollar_host_is_rejected() {
    let p = parse_tag("urlprefix-${DC}.example.com").expect("a urlprefix tag");
    assert!(p.route.is_none());
    assert!(p.findings.iter().any(|f| f.option == "host"));
}

#[test]
fn port_443_means_tls_only_and_port_80_plain_http_only() {
    let m = convert(&["urlprefix-a.com:443/", "urlprefix-b.com:80/"]);
    assert_eq!(
        routers(&m, "Host(`a.com`)"),
        vec![vec![
            "R.rule=Host(`a.com`)".to_string(),
            "R.entrypoints=websecure".into(),
            "R.tls=true".into(),
            "R.service=web".into()
        ]]
    );
    assert_eq!(
        routers(&m, "Host(`b.com`)"),
        vec![vec![
            "R.rule=Host(`b.com`)".to_string(),
            "R.entrypoints=web".into(),
            "R.service=web".into()
        ]]
    );
}

#[test]
fn another_port_in_the_host_is_reported_because_host_ignores_ports() {
    let m = convert(&["urlprefix-a.com:8080/"]);
    assert!(has_finding(&m, ":8080"));
    assert_eq!(routers(&m, "Host(`a.com`)").len(), 2);
}

#[test]
fn host_less_route_matches_every_host_by_path_and_reports_priority() {
    let m = convert(&["urlprefix-/css"]);
    assert_eq!(routers(&m, "PathPrefix(`/css`)").len(), 2);
    assert!(has_finding(&m, "host"));
}

#[test]
fn glob_host_becomes_an_anchored_host_regexp() {
    let r = http("urlprefix-*.example.com/");
    assert_eq!(r.host.as_ref().map(|h| h.kind), Some(HostKind::Glob));
    let m = convert(&["urlprefix-*.example.com/"]);
    assert_eq!(routers(&m, r"HostRegexp(`^.*\.example\.com$`)").len(), 2);
}

#[test]
fn proto_http_means_plain_http_only_as_internet_archive_used_it() {
    let m = convert(&["urlprefix-h-web.dom.org/ proto=http"]);
    let r = routers(&m, "Host(`h-web.dom.org`)");
    assert_eq!(r.len(), 1);
    assert!(r[0].contains(&"R.entrypoints=web".to_string()));
}

// === urlprefix: options ===

#[test]
fn strip_and_prepend_become_middlewares_in_fabio_order() {
    let m = convert(&["urlprefix-/bar prepend=/baz strip=/foo"]);
    assert_eq!(value_of(&m, ".stripprefix.prefixes"), Some("/foo".into()));
    assert_eq!(value_of(&m, ".addprefix.prefix"), Some("/baz".into()));
    let mws = value_of(&m, ".middlewares").expect("middlewares");
    let order: Vec<&str> = mws.split(',').collect();
    assert!(
        order[0].ends_with("-strip") && order[1].ends_with("-prepend"),
        "{mws}"
    );
}

#[test]
fn https_and_grpc_upstreams_set_the_server_scheme() {
    assert_eq!(
        http("urlprefix-/foo proto=https").upstream,
        UpstreamScheme::Https
    );
    let m = convert(&["urlprefix-/foo proto=https tlsskipverify=true"]);
    assert_eq!(
        value_of(&m, "loadbalancer.server.scheme"),
        Some("https".into())
    );
    assert!(has_finding(&m, "tlsskipverify"));

    let g = convert(&["urlprefix-/my.service proto=grpc"]);
    assert_eq!(
        value_of(&g, "loadbalancer.server.scheme"),
        Some("h2c".into())
    );
    let gs = convert(&["urlprefix-/my.service proto=grpcs grpcservername=my.service"]);
    assert_eq!(
        value_of(&gs, "loadbalancer.server.scheme"),
        Some("https".into())
    );
    assert!(has_finding(&gs, "grpcservername"));
}

#[test]
fn host_dst_disables_host_passthrough_and_host_name_sets_the_header() {
    let m = convert(&["urlprefix-/a host=dst"]);
    assert_eq!(
        value_of(&m, "loadbalancer.passhostheader"),
        Some("false".into())
    );
    let n = convert(&["urlprefix-/a host=internal.example"]);
    assert_eq!(
        value_of(&n, "customrequestheaders.Host"),
        Some("internal.example".into())
    );
    assert_eq!(
        value_of(&n, "loadbalancer.passhostheader"),
        Some("true".into())
    );
}

#[test]
fn allow_list_takes_ip_elements_and_makes_bare_ips_single_hosts() {
    let r = http(
        "urlprefix-/admin allow=ip:10.0.0.0/8,ip:fe80::/10,ip:192.168.1.7,ip:::1,ip:10.1.2.3/16",
    );
    let nets: Vec<String> = r.allow.iter().map(|n| n.to_string()).collect();
    assert_eq!(
        nets,
        [
            "10.0.0.0/8",
            "fe80::/10",
            "192.168.1.7/32",
            "::1/128",
            "10.1.0.0/16"
        ]
    );
    let m = convert(&["urlprefix-/admin allow=ip:10.0.0.0/8,ip:fe80::/10"]);
    assert_eq!(
        value_of(&m, ".ipallowlist.sourcerange"),
        Some("10.0.0.0/8,fe80::/10".into())
    );
}

#[test]
fn docs_example_without_ip_prefix_fails_at_the_bad_element_as_in_fabio_code() {
    let p = parse_tag("urlprefix-/x allow=ip:fe80::1234,100.123.0.0/16").expect("a urlprefix tag");
    let Some(Route::Http(r)) = p.route else {
        panic!("route expected")
    };
    assert_eq!(r.allow.len(), 1, "elements before the bad one still apply");
    assert!(p.findings.iter().any(|f| f.option.starts_with("allow=")));
}

#[test]
fn allow_and_deny_together_apply_no_rule_like_fabio() {
    let p =
        parse_tag("urlprefix-/x allow=ip:10.0.0.0/8 deny=ip:10.1.0.0/16").expect("a urlprefix tag");
    let Some(Route::Http(r)) = p.route else {
        panic!("route expected")
    };
    assert!(r.allow.is_empty() && r.deny.is_empty());
    assert!(!p.findings.is_empty());
}

#[test]
fn deny_list_is_reported_and_the_route_not_converted_so_nothing_opens_up() {
    let m = convert(&["urlprefix-/x deny=ip:10.0.0.0/8"]);
    assert!(m.add.is_empty());
    assert!(has_finding(&m, "deny="));
}

#[test]
fn auth_is_reported_and_the_route_not_converted_so_it_does_not_become_public() {
    let m = convert(&["urlprefix-/ proto=https auth=mybasicauth"]);
    assert!(m.add.is_empty());
    assert!(has_finding(&m, "auth=mybasicauth"));
}

#[test]
fn weight_register_and_unknown_options_are_reported_and_the_route_still_converts() {
    let m = convert(&["urlprefix-/x weight=0.05 register=alias foo=bar flag"]);
    assert_eq!(routers(&m, "PathPrefix(`/x`)").len(), 2);
    for option in ["weight=0.05", "register=alias", "foo=bar", "flag"] {
        assert!(has_finding(&m, option), "{option}: {:?}", m.findings);
    }
}

// === urlprefix: redirects ===

#[test]
fn redirect_with_path_keeps_the_request_path_and_query() {
    let m = convert(&["urlprefix-/path redirect=303,https://www.foo.com$path"]);
    assert_eq!(
        value_of(&m, "redirectregex.replacement"),
        Some("https://www.foo.com${2}${3}".into())
    );
    assert_eq!(
        value_of(&m, "redirectregex.regex"),
        Some("^[a-z]+://([^/?]+)([^?]*)(.*)$".into())
    );
    assert_eq!(
        value_of(&m, "redirectregex.permanent"),
        Some("false".into())
    );
    assert!(has_finding(&m, "redirect=303"));
}

#[test]
fn redirect_to_a_fixed_url_ignores_the_request_path() {
    let m = convert(&["urlprefix-/path redirect=301,https://www.google.com/"]);
    assert_eq!(
        value_of(&m, "redirectregex.replacement"),
        Some("https://www.google.com/".into())
    );
    assert_eq!(value_of(&m, "redirectregex.permanent"), Some("true".into()));
    assert!(m.findings.iter().all(|f| !f.option.starts_with("redirect")));
}

#[test]
fn redirect_without_path_gets_a_slash_like_fabio() {
    let m = convert(&["urlprefix-www.bar.com:80/foo redirect=302,https://www.bar.com"]);
    assert_eq!(
        value_of(&m, "redirectregex.replacement"),
        Some("https://www.bar.com/".into())
    );
}

#[test]
fn redirect_with_host_and_strip_uses_captures_and_the_stripped_path() {
    let m = convert(&["urlprefix-/old redirect=301,https://$host/$path strip=/old"]);
    assert_eq!(
        value_of(&m, "redirectregex.regex"),
        Some("^[a-z]+://([^/?]+)(?:/old)?([^?]*)(.*)$".into())
    );
    assert_eq!(
        value_of(&m, "redirectregex.replacement"),
        Some("https://${1}${2}${3}".into())
    );
    assert!(
        value_of(&m, "stripprefix.prefixes").is_none(),
        "a redirect never reaches the upstream"
    );
}

#[test]
fn malformed_redirect_is_dropped_and_the_route_proxies_as_in_fabio() {
    let m = convert(&["urlprefix-/p redirect=301"]);
    assert!(has_finding(&m, "redirect=301"));
    assert!(value_of(&m, "redirectregex.regex").is_none());
    assert_eq!(routers(&m, "PathPrefix(`/p`)").len(), 2);
}

#[test]
fn redirect_code_outside_3xx_proxies_to_the_url_in_fabio_and_is_not_converted() {
    let m = convert(&["urlprefix-/p redirect=200,https://x.org/"]);
    assert!(m.add.is_empty());
    assert!(has_finding(&m, "redirect=200"));
}

// === urlprefix: TCP ===

#[test]
fn tcp_port_route_needs_a_tcp_entry_point() {
    let p = parse_tag("urlprefix-:3306 proto=tcp").expect("a urlprefix tag");
    assert!(matches!(p.route, Some(Route::Tcp(ref t)) if t.listen == TcpListen::Port(3306)));
    let m = convert(&["urlprefix-:3306 proto=tcp pxyproto=true"]);
    assert_eq!(value_of(&m, ".rule"), Some("HostSNI(`*`)".into()));
    assert_eq!(value_of(&m, ".entrypoints"), Some("tcp-3306".into()));
    assert!(has_finding(&m, ":3306") && has_finding(&m, "pxyproto"));
}

#[test]
fn tcp_host_route_is_sni_passthrough_and_ip_port_is_a_dynamic_listener() {
    let m = convert(&["urlprefix-foo.com/ proto=tcp"]);
    assert_eq!(value_of(&m, ".rule"), Some("HostSNI(`foo.com`)".into()));
    assert_eq!(value_of(&m, ".tls.passthrough"), Some("true".into()));
    let p = parse_tag("urlprefix-127.0.0.1:1234 proto=tcp").expect("a urlprefix tag");
    assert!(
        matches!(p.route, Some(Route::Tcp(ref t)) if matches!(t.listen, TcpListen::Dynamic { port: 1234, .. }))
    );
}

#[test]
fn port_route_without_proto_tcp_matches_nothing_and_is_reported() {
    let p = parse_tag("urlprefix-:3306").expect("a urlprefix tag");
    assert!(p.route.is_none() && !p.findings.is_empty());
}

// === Internet Archive's real legacy tags (URLPREFIX.md §4, HIND.md §3) ===

#[test]
fn internet_archive_project_nomad_tags_convert_to_routers_with_the_same_meaning() {
    let host = "av.dev.archive.org";
    let tags = [
        format!("urlprefix-{host}:443/"),
        format!("urlprefix-{host}:80/ redirect=308,https://{host}$path"),
        format!("urlprefix-canary-{host}:443/"),
        "urlprefix-av-ws.dev.archive.org:443/".to_string(),
        "urlprefix-av-http.dev.archive.org/ proto=http".to_string(),
        format!("urlprefix-{host}:5432/"),
        "urlprefix-:5432 proto=tcp".to_string(),
    ];
    let refs: Vec<&str> = tags.iter().map(String::as_str).collect();
    let m = convert(&refs);
    let main = routers(&m, &format!("Host(`{host}`)"));
    // :443 (TLS), :80 (redirect), :5432 (both entry points).
    assert_eq!(main.len(), 4, "{main:?}");
    assert!(
        main.iter().any(|r| r.contains(&"R.tls=true".to_string())
            && !r.iter().any(|t| t.contains("middlewares")))
    );
    let redirect = main
        .iter()
        .find(|r| r.iter().any(|t| t.contains("middlewares")))
        .expect("redirect router");
    assert!(redirect.contains(&"R.entrypoints=web".to_string()));
    assert_eq!(
        value_of(&m, "redirectregex.replacement"),
        Some(format!("https://{host}${{2}}${{3}}"))
    );
    assert_eq!(routers(&m, &format!("Host(`canary-{host}`)")).len(), 1);
    assert_eq!(
        routers(&m, "Host(`av-http.dev.archive.org`)")[0][1],
        "R.entrypoints=web"
    );
    assert!(
        m.add
            .iter()
            .any(|t| t.starts_with("traefik.tcp.routers.") && t.ends_with(".entrypoints=tcp-5432"))
    );
}

// === HinD ===

#[test]
fn hind_https_tags_become_tls_routers_on_websecure() {
    for (tag, host) in [
        (
            "https://internetarchive-hello-js-main.x.archive.org",
            "internetarchive-hello-js-main.x.archive.org",
        ),
        (
            "https://canary-av.dev.archive.org",
            "canary-av.dev.archive.org",
        ),
        ("https://av-ws.dev.archive.org", "av-ws.dev.archive.org"),
        ("https://Prod.Example.ORG", "prod.example.org"),
    ] {
        let m = convert(&[tag]);
        assert_eq!(
            routers(&m, &format!("Host(`{host}`)")),
            vec![vec![
                format!("R.rule=Host(`{host}`)"),
                "R.entrypoints=websecure".into(),
                "R.tls=true".into(),
                "R.service=web".into()
            ]],
            "{tag}"
        );
        assert!(m.findings.is_empty(), "{tag}: {:?}", m.findings);
    }
}

#[test]
fn hind_path_is_exact_unless_it_ends_in_a_star_like_a_caddy_site_address() {
    assert_eq!(
        http("https://a.org/api").path,
        PathMatch::Exact("/api".into())
    );
    assert_eq!(
        http("https://a.org/api/*").path,
        PathMatch::Prefix("/api/".into())
    );
    assert_eq!(
        routers(
            &convert(&["https://a.org/api"]),
            "Host(`a.org`) && Path(`/api`)"
        )
        .len(),
        1
    );
    assert_eq!(
        routers(
            &convert(&["https://a.org/api*"]),
            "Host(`a.org`) && PathPrefix(`/api`)"
        )
        .len(),
        1
    );
}

#[test]
fn hind_wildcard_host_matches_one_label() {
    let r = http("https://*.example.com");
    assert_eq!(r.host.as_ref().map(|h| h.kind), Some(HostKind::Wildcard));
    assert_eq!(
        routers(
            &convert(&["https://*.example.com"]),
            r"HostRegexp(`^[^.]+\.example\.com$`)"
        )
        .len(),
        1
    );
}

#[test]
fn hind_alt_port_is_reported() {
    let m = convert(&["https://av.dev.archive.org:5432"]);
    assert!(has_finding(&m, ":5432"));
    assert_eq!(routers(&m, "Host(`av.dev.archive.org`)").len(), 1);
    assert_eq!(http("https://a.org:5432").scheme, Scheme::Https);
}

#[test]
fn hind_http_tags_are_reported_and_not_converted_because_hind_no_longer_serves_them() {
    let m = convert(&["http://a.org"]);
    assert!(m.add.is_empty());
    assert!(has_finding(&m, "http://"));
}

#[test]
fn other_tags_are_not_routes() {
    assert!(parse_tag("metrics").is_none());
    assert!(parse_tag("traefik.enable=true").is_none());
    assert!(convert(&["metrics", "v1"]).add.is_empty());
}

// === Converter guarantees ===

#[test]
fn conversion_is_stable_whatever_the_tag_order() {
    let a = convert(&[
        "https://a.org",
        "urlprefix-/x strip=/x",
        "urlprefix-:22 proto=tcp",
    ]);
    let b = convert(&[
        "urlprefix-:22 proto=tcp",
        "https://a.org",
        "urlprefix-/x strip=/x",
        "https://a.org",
    ]);
    assert_eq!(a, b);
}

#[test]
fn a_service_that_already_has_traefik_tags_is_left_alone() {
    let first = convert(&["https://a.org"]);
    let mut tags: Vec<String> = vec!["https://a.org".to_string()];
    tags.extend(first.add.iter().cloned());
    let again = migrate_service(
        ServiceInput {
            name: "web",
            tags: &tags,
            port: None,
        },
        &ConvertOptions::default(),
        false,
    );
    assert!(again.already_converted);
    assert!(!again.is_change());
}

#[test]
fn remove_legacy_removes_only_tags_whose_traefik_tags_are_present() {
    let first = convert(&["https://a.org"]);
    let mut tags: Vec<String> = vec!["https://a.org".to_string(), "https://b.org".to_string()];
    tags.extend(first.add.iter().cloned());
    let m = migrate_service(
        ServiceInput {
            name: "web",
            tags: &tags,
            port: None,
        },
        &ConvertOptions::default(),
        true,
    );
    assert_eq!(m.remove, vec!["https://a.org".to_string()]);
    assert!(m.add.is_empty());
}

#[test]
fn router_names_are_unique_valid_and_derived_from_the_service() {
    let tags: Vec<String> = ["https://a.org", "https://b.org", "urlprefix-/x"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    let m = migrate_service(
        ServiceInput {
            name: "My_Service.v2",
            tags: &tags,
            port: Some(8080),
        },
        &ConvertOptions::default(),
        false,
    );
    let names: Vec<&str> = m
        .add
        .iter()
        .filter_map(|t| {
            t.strip_prefix("traefik.http.routers.")?
                .split_once(".rule=")
                .map(|(n, _)| n)
        })
        .collect();
    assert_eq!(names.len(), 4);
    let mut unique = names.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), names.len());
    for n in names {
        assert!(n.starts_with("my-service-v2-"), "{n}");
        assert!(
            n.chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-'),
            "{n}"
        );
    }
    assert!(m.add.contains(
        &"traefik.http.services.my-service-v2.loadbalancer.server.port=8080".to_string()
    ));
    assert_eq!(m.add[0], "traefik.enable=true");
}

#[test]
fn cert_resolver_and_entry_point_names_come_from_the_options() {
    let options = ConvertOptions {
        web_entrypoint: "http".into(),
        websecure_entrypoint: "https".into(),
        cert_resolver: Some("le".into()),
        ..ConvertOptions::default()
    };
    let m = convert_with(&["https://a.org"], &options);
    assert_eq!(value_of(&m, ".entrypoints"), Some("https".into()));
    assert_eq!(value_of(&m, ".tls.certresolver"), Some("le".into()));
}
