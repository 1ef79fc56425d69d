#![allow(clippy::unwrap_used, clippy::panic)] // tests fail loudly

use super::*;
use crate::consul::{AgentService, HealthCheck, HealthNode};

fn settings() -> RouteSettings {
    RouteSettings {
        domain_suffix: "example.test".into(),
        exposed_by_default: false,
        entry_points: vec!["web".into(), "websecure".into()],
        tls_entry_point: "websecure".into(),
        policy_sets: ["admin".to_string()].into(),
    }
}

fn instance(
    service: &str,
    id: &str,
    addr: &str,
    port: u16,
    tags: &[&str],
    status: &str,
) -> ServiceEntry {
    ServiceEntry {
        node: HealthNode {
            node: "node-1".into(),
            address: "10.0.0.99".into(),
            ..Default::default()
        },
        service: AgentService {
            id: id.into(),
            service: service.into(),
            tags: tags.iter().map(|t| t.to_string()).collect(),
            address: addr.into(),
            port,
            ..Default::default()
        },
        checks: vec![HealthCheck {
            check_id: format!("service:{id}"),
            status: status.into(),
            service_id: id.into(),
            ..Default::default()
        }],
    }
}

fn catalog(entries: Vec<ServiceEntry>) -> Catalog {
    let mut c = Catalog::new();
    for e in entries {
        c.entry(e.service.service.clone()).or_default().push(e);
    }
    c
}

/// One line per route: what Caddy will match and where it sends the request.
fn summary(table: &RouteTable) -> Vec<String> {
    table
        .routes
        .iter()
        .map(|r| {
            let host = match &r.host {
                None => "*".to_string(),
                Some(HostMatch::Exact(h)) => h.clone(),
                Some(HostMatch::Regexp(re)) => format!("re:{re}"),
            };
            let path = match &r.path {
                None => String::new(),
                Some(PathRule::Prefix(p)) => format!("{p}*"),
                Some(PathRule::Exact(p)) => format!("={p}"),
            };
            let mut line = format!(
                "{} {}{} -> {}",
                r.entry_points.join(","),
                host,
                path,
                r.upstreams.join(",")
            );
            if !r.middlewares.is_empty() {
                line.push_str(&format!(" mw={}", r.middlewares.len()));
            }
            if r.upstream_scheme != UpstreamScheme::Http {
                line.push_str(&format!(" {:?}", r.upstream_scheme));
            }
            if !r.pass_host_header {
                line.push_str(" upstream-host");
            }
            line
        })
        .collect()
}

fn one(tags: &[&str]) -> RouteTable {
    build_routes(
        &catalog(vec![instance(
            "app", "app-1", "10.0.0.1", 8080, tags, "passing",
        )]),
        &settings(),
    )
}

#[test]
fn each_tag_convention_routes_as_its_proxy_would() {
    let cases: &[(&str, &[&str], &[&str])] = &[
        (
            "HinD host: TLS only",
            &["https://app.test"],
            &["websecure app.test -> 10.0.0.1:8080"],
        ),
        (
            "HinD host is lower-cased",
            &["https://App.Test"],
            &["websecure app.test -> 10.0.0.1:8080"],
        ),
        (
            "HinD prefix path",
            &["https://app.test/api/*"],
            &["websecure app.test/api/* -> 10.0.0.1:8080"],
        ),
        (
            "HinD exact path",
            &["https://app.test/exact"],
            &["websecure app.test=/exact -> 10.0.0.1:8080"],
        ),
        (
            "HinD wildcard",
            &["https://*.app.test"],
            &["websecure *.app.test -> 10.0.0.1:8080"],
        ),
        (
            "HinD plain-HTTP tags are ignored as HinD does",
            &["http://app.test"],
            &[],
        ),
        ("untagged, not exposed", &[], &[]),
        (
            "opt-in gets the default rule on every entry point",
            &["traefik.enable=true"],
            &["web,websecure app.example.test -> 10.0.0.1:8080"],
        ),
        (
            "router with host and prefix",
            &[
                "traefik.enable=true",
                "traefik.http.routers.r.rule=Host(`a.test`) && PathPrefix(`/api`)",
                "traefik.http.routers.r.entrypoints=websecure",
            ],
            &["websecure a.test/api* -> 10.0.0.1:8080"],
        ),
        (
            "router option names are case-insensitive",
            &[
                "traefik.enable=true",
                "traefik.http.routers.R.Rule=Host(`a.test`)",
                "traefik.http.routers.R.EntryPoints=web",
            ],
            &["web a.test -> 10.0.0.1:8080"],
        ),
        (
            "router with exact path and no host",
            &[
                "traefik.enable=true",
                "traefik.http.routers.r.rule=Path(`/health`)",
            ],
            &["web,websecure *=/health -> 10.0.0.1:8080"],
        ),
        (
            "router without a rule gets the default rule",
            &[
                "traefik.enable=true",
                "traefik.http.routers.r.entrypoints=web",
            ],
            &["web app.example.test -> 10.0.0.1:8080"],
        ),
        (
            "HostRegexp",
            &[
                "traefik.enable=true",
                "traefik.http.routers.r.rule=HostRegexp(`^[^.]+\\.d\\.test$`)",
            ],
            &["web,websecure re:^[^.]+\\.d\\.test$ -> 10.0.0.1:8080"],
        ),
        (
            "service port, scheme and host header",
            &[
                "traefik.enable=true",
                "traefik.http.routers.r.rule=Host(`a.test`)",
                "traefik.http.services.s.loadbalancer.server.port=9000",
                "traefik.http.services.s.loadbalancer.server.scheme=https",
                "traefik.http.services.s.loadbalancer.passhostheader=false",
            ],
            &["web,websecure a.test -> 10.0.0.1:9000 Https upstream-host"],
        ),
        (
            "h2c upstream",
            &[
                "traefik.enable=true",
                "traefik.http.services.s.loadbalancer.server.scheme=h2c",
            ],
            &["web,websecure app.example.test -> 10.0.0.1:8080 H2c"],
        ),
        (
            "HinD and Traefik tags on one service both route",
            &[
                "https://old.test",
                "traefik.enable=true",
                "traefik.http.routers.r.rule=Host(`new.test`)",
            ],
            &[
                "websecure old.test -> 10.0.0.1:8080",
                "web,websecure new.test -> 10.0.0.1:8080",
            ],
        ),
        (
            "middlewares in router order",
            &[
                "traefik.enable=true",
                "traefik.http.routers.r.rule=Host(`a.test`)",
                "traefik.http.routers.r.middlewares=allow,strip@consulcatalog,hdr",
                "traefik.http.middlewares.allow.ipallowlist.sourcerange=10.0.0.0/8,127.0.0.1",
                "traefik.http.middlewares.strip.stripprefix.prefixes=/old",
                "traefik.http.middlewares.hdr.headers.customrequestheaders.X-A=1",
                "traefik.http.middlewares.hdr.headers.customresponseheaders.X-B=2",
            ],
            &["web,websecure a.test -> 10.0.0.1:8080 mw=4"],
        ),
    ];
    for (what, tags, expected) in cases {
        let table = one(tags);
        assert_eq!(
            summary(&table),
            *expected,
            "{what}: findings {:?}",
            table.findings
        );
    }
}

#[test]
fn what_caddy_cannot_express_is_not_routed_and_says_why() {
    let cases: &[(&str, &[&str], &str)] = &[
        (
            "or-rule",
            &[
                "traefik.enable=true",
                "traefik.http.routers.r.rule=Host(`a`) || Host(`b`)",
            ],
            "rule",
        ),
        (
            "unknown entry point",
            &[
                "traefik.enable=true",
                "traefik.http.routers.r.entrypoints=admin",
            ],
            "entry point \"admin\" does not exist",
        ),
        (
            "basic auth in tags",
            &[
                "traefik.enable=true",
                "traefik.http.routers.r.middlewares=auth",
                "traefik.http.middlewares.auth.basicauth.users=a:$apr1$x",
            ],
            "basicauth has no equivalent",
        ),
        (
            "rate limit in tags",
            &[
                "traefik.enable=true",
                "traefik.http.routers.r.middlewares=rl",
                "traefik.http.middlewares.rl.ratelimit.average=5",
            ],
            "ratelimit has no equivalent",
        ),
        (
            "middleware from another provider",
            &[
                "traefik.enable=true",
                "traefik.http.routers.r.middlewares=auth@file",
            ],
            "another provider",
        ),
        (
            "missing middleware",
            &[
                "traefik.enable=true",
                "traefik.http.routers.r.middlewares=nope",
            ],
            "\"nope\" is not defined",
        ),
        (
            "ip strategy",
            &[
                "traefik.enable=true",
                "traefik.http.routers.r.middlewares=a",
                "traefik.http.middlewares.a.ipallowlist.sourcerange=10.0.0.0/8",
                "traefik.http.middlewares.a.ipallowlist.ipstrategy.depth=1",
            ],
            "ipstrategy",
        ),
        (
            "bad CIDR",
            &[
                "traefik.enable=true",
                "traefik.http.routers.r.middlewares=a",
                "traefik.http.middlewares.a.ipallowlist.sourcerange=10.0.0.300/8",
            ],
            "not an IP or CIDR",
        ),
        (
            "two strip prefixes",
            &[
                "traefik.enable=true",
                "traefik.http.routers.r.middlewares=s",
                "traefik.http.middlewares.s.stripprefix.prefixes=/a,/b",
            ],
            "several prefixes",
        ),
        (
            "placeholder in a header",
            &[
                "traefik.enable=true",
                "traefik.http.routers.r.middlewares=h",
                "traefik.http.middlewares.h.headers.customrequestheaders.X={http.request.host}",
            ],
            "placeholder",
        ),
        (
            "two services, none named",
            &[
                "traefik.enable=true",
                "traefik.http.services.a.loadbalancer.server.port=1",
                "traefik.http.services.b.loadbalancer.server.port=2",
            ],
            "several services",
        ),
        (
            "undefined service",
            &[
                "traefik.enable=true",
                "traefik.http.routers.r.service=other",
            ],
            "\"other\" is not defined",
        ),
        (
            "sticky sessions",
            &[
                "traefik.enable=true",
                "traefik.http.services.s.loadbalancer.sticky.cookie=true",
            ],
            "sticky",
        ),
        (
            "path with a wildcard",
            &[
                "traefik.enable=true",
                "traefik.http.routers.r.rule=PathPrefix(`/a*b`)",
            ],
            "no * or %",
        ),
        (
            "routers but not exposed",
            &["traefik.http.routers.r.rule=Host(`a.test`)"],
            "not exposed",
        ),
        (
            "TCP router",
            &[
                "traefik.enable=true",
                "traefik.tcp.routers.db.rule=HostSNI(`*`)",
            ],
            "TCP/UDP",
        ),
    ];
    for (what, tags, reason) in cases {
        let table = one(tags);
        assert!(table.routes.is_empty(), "{what}: {:?}", summary(&table));
        assert!(
            table
                .findings
                .iter()
                .any(|f| f.to_string().contains(reason)),
            "{what}: expected a finding with {reason:?}, got {:?}",
            table.findings
        );
    }
}

#[test]
fn only_instances_whose_checks_all_pass_get_traffic() {
    let tags = ["https://app.test"];
    let table = build_routes(
        &catalog(vec![
            instance("app", "a1", "10.0.0.1", 80, &tags, "passing"),
            instance("app", "a2", "10.0.0.2", 80, &tags, "critical"),
            instance("app", "a3", "10.0.0.3", 80, &tags, "warning"),
            instance("app", "a4", "10.0.0.4", 80, &tags, "passing"),
        ]),
        &settings(),
    );
    assert_eq!(
        summary(&table),
        ["websecure app.test -> 10.0.0.1:80,10.0.0.4:80"]
    );

    let all_down = build_routes(
        &catalog(vec![instance(
            "app", "a2", "10.0.0.2", 80, &tags, "critical",
        )]),
        &settings(),
    );
    assert!(
        all_down.routes.is_empty(),
        "a service without passing instances is not routed"
    );

    let mut node_down = instance("app", "a1", "10.0.0.1", 80, &tags, "passing");
    node_down.checks.push(HealthCheck {
        check_id: "serfHealth".into(),
        status: "critical".into(),
        ..Default::default()
    });
    assert!(
        build_routes(&catalog(vec![node_down]), &settings())
            .routes
            .is_empty()
    );
}

#[test]
fn upstreams_use_the_node_address_when_the_service_has_none_and_bracket_ipv6() {
    let table = build_routes(
        &catalog(vec![
            instance("app", "a1", "", 80, &["https://app.test"], "passing"),
            instance("app", "a2", "fd00::1", 81, &["https://app.test"], "passing"),
            instance("app", "a3", "", 80, &["https://app.test"], "passing"),
        ]),
        &settings(),
    );
    assert_eq!(
        summary(&table),
        ["websecure app.test -> 10.0.0.99:80,[fd00::1]:81"]
    );
}

#[test]
fn instances_that_define_one_router_differently_leave_it_unrouted() {
    let table = build_routes(
        &catalog(vec![
            instance(
                "app",
                "a1",
                "10.0.0.1",
                80,
                &[
                    "traefik.enable=true",
                    "traefik.http.routers.r.rule=Host(`a.test`)",
                ],
                "passing",
            ),
            instance(
                "app",
                "a2",
                "10.0.0.2",
                80,
                &[
                    "traefik.enable=true",
                    "traefik.http.routers.r.rule=Host(`b.test`)",
                ],
                "passing",
            ),
        ]),
        &settings(),
    );
    assert!(table.routes.is_empty(), "{:?}", summary(&table));
    assert!(
        table
            .findings
            .iter()
            .any(|f| f.reason.contains("differently"))
    );
}

#[test]
fn the_table_does_not_depend_on_catalog_order() {
    let entries = vec![
        instance("b", "b1", "10.0.0.2", 80, &["https://b.test"], "passing"),
        instance(
            "a",
            "a2",
            "10.0.0.3",
            80,
            &["https://a.test", "https://a.test/x/*"],
            "passing",
        ),
        instance(
            "a",
            "a1",
            "10.0.0.1",
            80,
            &["https://a.test/x/*", "https://a.test"],
            "passing",
        ),
        instance(
            "c",
            "c1",
            "10.0.0.4",
            80,
            &["traefik.enable=true"],
            "passing",
        ),
    ];
    let forward = build_routes(&catalog(entries.clone()), &settings());
    let mut reversed = entries;
    reversed.reverse();
    for e in &mut reversed {
        e.service.tags.reverse();
    }
    assert_eq!(forward, build_routes(&catalog(reversed), &settings()));
}

#[test]
fn specific_routes_come_first_and_priority_overrides() {
    let table = build_routes(
        &catalog(vec![
            instance(
                "any",
                "1",
                "10.0.0.1",
                80,
                &[
                    "traefik.enable=true",
                    "traefik.http.routers.r.rule=PathPrefix(`/x`)",
                ],
                "passing",
            ),
            instance(
                "wild",
                "2",
                "10.0.0.2",
                80,
                &["https://*.a.test"],
                "passing",
            ),
            instance(
                "short",
                "3",
                "10.0.0.3",
                80,
                &["https://b.a.test"],
                "passing",
            ),
            instance(
                "long",
                "4",
                "10.0.0.4",
                80,
                &["https://b.a.test/deep/*"],
                "passing",
            ),
            instance(
                "re",
                "5",
                "10.0.0.5",
                80,
                &[
                    "traefik.enable=true",
                    "traefik.http.routers.r.rule=HostRegexp(`.+`)",
                ],
                "passing",
            ),
            instance(
                "pri",
                "6",
                "10.0.0.6",
                80,
                &[
                    "traefik.enable=true",
                    "traefik.http.routers.r.rule=PathPrefix(`/`)",
                    "traefik.http.routers.r.priority=100",
                ],
                "passing",
            ),
        ]),
        &settings(),
    );
    let services: Vec<&str> = table.routes.iter().map(|r| r.service.as_str()).collect();
    assert_eq!(services, ["pri", "long", "short", "wild", "re", "any"]);
}

#[test]
fn the_same_host_and_path_from_two_services_is_reported_and_the_first_by_name_wins() {
    let table = build_routes(
        &catalog(vec![
            instance(
                "beta",
                "b",
                "10.0.0.2",
                80,
                &["https://same.test"],
                "passing",
            ),
            instance(
                "alpha",
                "a",
                "10.0.0.1",
                80,
                &["https://same.test"],
                "passing",
            ),
        ]),
        &settings(),
    );
    assert_eq!(table.routes[0].service, "alpha");
    let finding = table.findings.iter().find(|f| f.service == "beta").unwrap();
    assert!(
        finding.reason.contains("alpha/https://same.test"),
        "{finding}"
    );
}

#[test]
fn a_hind_tag_with_its_own_port_is_served_on_the_tls_entry_point_and_says_so() {
    let table = one(&["https://app.test:8443"]);
    assert_eq!(summary(&table), ["websecure app.test -> 10.0.0.1:8080"]);
    assert!(
        table.findings[0].reason.contains(":8443"),
        "{:?}",
        table.findings
    );
}

#[test]
fn exposed_by_default_gives_every_service_the_default_rule_unless_disabled() {
    let mut s = settings();
    s.exposed_by_default = true;
    let c = catalog(vec![
        instance("My_App", "1", "10.0.0.1", 80, &[], "passing"),
        instance(
            "off",
            "2",
            "10.0.0.2",
            80,
            &["traefik.enable=false"],
            "passing",
        ),
    ]);
    assert_eq!(
        summary(&build_routes(&c, &s)),
        ["web,websecure my-app.example.test -> 10.0.0.1:80"]
    );
}

#[test]
fn every_tag_migrate_writes_routes_on_caddy_without_findings() {
    use crate::migrate::{ConvertOptions, ServiceInput, migrate_service};
    let legacy: &[(&str, &str, &str)] = &[
        ("site", "https://site.test", "websecure site.test"),
        (
            "api",
            "urlprefix-app.test/api",
            "web app.test/api*|websecure app.test/api*",
        ),
        (
            "stripped",
            "urlprefix-strip.test/old strip=/old",
            "web strip.test/old*|websecure strip.test/old*",
        ),
        (
            "redirected",
            "urlprefix-redir.test:80/ redirect=308,https://redir.test$path",
            "web redir.test",
        ),
        (
            "private",
            "urlprefix-private.test/ allow=ip:10.0.0.0/8,ip:192.168.0.0/16",
            "web private.test|websecure private.test",
        ),
        (
            "exact",
            "https://exact.test/only",
            "websecure exact.test=/only",
        ),
        (
            "hosted",
            "urlprefix-h.test/ host=other.test proto=https",
            "web h.test|websecure h.test",
        ),
    ];
    for (name, tag, expected) in legacy {
        let tags = vec![tag.to_string()];
        let m = migrate_service(
            ServiceInput {
                name,
                tags: &tags,
                port: None,
            },
            &ConvertOptions::default(),
            true,
        );
        let converted = m.apply(&tags);
        let refs: Vec<&str> = converted.iter().map(String::as_str).collect();
        let table = build_routes(
            &catalog(vec![instance(name, "1", "10.0.0.1", 80, &refs, "passing")]),
            &settings(),
        );
        assert!(table.findings.is_empty(), "{tag}: {:?}", table.findings);
        let got: Vec<String> = summary(&table)
            .iter()
            .map(|l| l.split(" -> ").next().unwrap_or_default().to_string())
            .collect();
        assert_eq!(got.join("|"), *expected, "{tag} → {converted:?}");
    }
}

#[test]
fn go_replacements_become_caddy_capture_placeholders() {
    use crate::proxy::caddy::traefik_tags::caddy_replacement;
    let cases = [
        (
            "https://${1}${2}${3}",
            "https://{http.regexp.r.1}{http.regexp.r.2}{http.regexp.r.3}",
        ),
        ("https://$1/x", "https://{http.regexp.r.1}/x"),
        ("https://a.test/$$path", "https://a.test/$path"),
        ("$name_x", "{http.regexp.r.name_x}"),
        ("trailing $", "trailing "),
    ];
    for (go, caddy) in cases {
        assert_eq!(caddy_replacement(go, "r").unwrap(), caddy, "{go}");
    }
    assert!(caddy_replacement("https://{host}", "r").is_err());
}

#[test]
fn a_service_opting_into_a_policy_set_runs_it_first_in_every_route_and_an_unknown_set_is_not_routed()
 {
    let opted = one(&[
        "https://app.example.test",
        "traefik.enable=true",
        "traefik.http.routers.api.rule=Host(`api.example.test`)",
        "traefik.http.routers.api.middlewares=strip",
        "traefik.http.middlewares.strip.stripprefix.prefixes=/v1",
        "proxy-operator.policy=admin",
    ]);
    assert_eq!(opted.routes.len(), 2, "{opted:#?}");
    for r in &opted.routes {
        assert_eq!(
            r.middlewares.first(),
            Some(&Middleware::PolicySet("admin".into())),
            "{}",
            r.name()
        );
    }
    assert!(opted.findings.is_empty(), "{:?}", opted.findings);

    // Traefik's own opt-in tag works on Caddy too, and both tags naming one set run it once.
    let traefik_tag = one(&[
        "traefik.enable=true",
        "traefik.http.routers.app.middlewares=admin@consul",
        "proxy-operator.policy=admin",
    ]);
    assert_eq!(
        traefik_tag.routes[0].middlewares,
        [Middleware::PolicySet("admin".into())]
    );
    let unknown = one(&[
        "traefik.enable=true",
        "traefik.http.routers.app.middlewares=other@consul",
    ]);
    assert!(unknown.routes.is_empty(), "{unknown:#?}");

    let plain = one(&["traefik.enable=true"]);
    assert!(plain.routes[0].middlewares.is_empty());

    // Fail closed: the set may be the service's only authentication.
    for (tags, why) in [
        (
            ["traefik.enable=true", "proxy-operator.policy=missing"].as_slice(),
            "not defined",
        ),
        (
            [
                "traefik.enable=true",
                "proxy-operator.policy=admin",
                "proxy-operator.policy=other",
            ]
            .as_slice(),
            "two policy sets",
        ),
    ] {
        let t = one(tags);
        assert!(t.routes.is_empty(), "{tags:?}: {t:#?}");
        assert!(
            t.findings
                .iter()
                .any(|f| f.reason.contains(why) && f.reason.contains("not routed")),
            "{tags:?}: {:?}",
            t.findings
        );
    }
}
