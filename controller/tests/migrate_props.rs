//! Property tests: what the converter writes reads back as the route it came from, and no input
//! makes any layer panic.
#![allow(clippy::panic)] // a failing test panics

use proptest::prelude::*;
use proxy_operator::migrate::files::{migrate_hcl, migrate_json};
use proxy_operator::migrate::{
    ConvertOptions, HostMatcher, PathMatch, PathMatcher, Route, ServiceInput, migrate_service,
    parse_rule, parse_tag,
};

fn host() -> impl Strategy<Value = String> {
    "[a-zA-Z0-9][a-zA-Z0-9-]{0,12}(\\.[a-zA-Z0-9-]{1,8}){0,3}"
}

fn path() -> impl Strategy<Value = String> {
    "(/[a-zA-Z0-9._~-]{0,8}){0,4}"
}

fn rules(tags: &[String]) -> Vec<String> {
    tags.iter()
        .filter(|t| t.starts_with("traefik.http.routers."))
        .filter_map(|t| t.split_once(".rule=").map(|(_, r)| r.to_string()))
        .collect()
}

fn check_round_trip(tag: &str) -> Result<(), TestCaseError> {
    let parsed = parse_tag(tag).ok_or_else(|| TestCaseError::fail("not a legacy tag"))?;
    let Some(Route::Http(route)) = parsed.route else {
        return Err(TestCaseError::fail(format!(
            "no route for {tag}: {:?}",
            parsed.findings
        )));
    };
    let tags = vec![tag.to_string()];
    let m = migrate_service(
        ServiceInput {
            name: "svc",
            tags: &tags,
            port: None,
        },
        &ConvertOptions::default(),
        false,
    );
    let rules = rules(&m.add);
    prop_assert!(!rules.is_empty(), "no router for {}", tag);
    for rule in rules {
        let back = parse_rule(&rule).map_err(TestCaseError::fail)?;
        prop_assert_eq!(
            back.host.clone(),
            route
                .host
                .as_ref()
                .map(|h| HostMatcher::Host(h.text.clone())),
            "{}",
            rule
        );
        let expected_path = match &route.path {
            PathMatch::Prefix(p) if p == "/" && route.host.is_some() => None,
            PathMatch::Prefix(p) => Some(PathMatcher::Prefix(p.clone())),
            PathMatch::Exact(p) => Some(PathMatcher::Exact(p.clone())),
        };
        prop_assert_eq!(back.path, expected_path, "{}", rule);
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn urlprefix_route_round_trips_through_the_traefik_rule(h in host(), p in path(), port in prop::option::of(prop::sample::select(vec![80u16, 443]))) {
        let port = port.map(|n| format!(":{n}")).unwrap_or_default();
        let tag = format!("urlprefix-{h}{port}{}", if p.is_empty() { "/".to_string() } else { p.clone() });
        check_round_trip(&tag)?;
        // The host is lower-cased, the path kept.
        let Some(Route::Http(r)) = parse_tag(&tag).and_then(|t| t.route) else { unreachable!() };
        prop_assert_eq!(r.host.map(|x| x.text), Some(h.to_lowercase()));
    }

    #[test]
    fn host_less_urlprefix_route_round_trips(p in "(/[a-zA-Z0-9._~-]{1,8}){1,4}") {
        check_round_trip(&format!("urlprefix-{p} strip=/x"))?;
    }

    #[test]
    fn hind_route_round_trips_through_the_traefik_rule(h in host(), p in path(), star in any::<bool>()) {
        let suffix = if p.is_empty() { String::new() } else if star { format!("{p}*") } else { p.clone() };
        check_round_trip(&format!("https://{h}{suffix}"))?;
    }

    #[test]
    fn converting_is_deterministic_and_idempotent(tags in prop::collection::vec(prop_oneof![
        host().prop_map(|h| format!("https://{h}")),
        (host(), path()).prop_map(|(h, p)| format!("urlprefix-{h}{p}/ strip=/a")),
        Just("urlprefix-:5432 proto=tcp".to_string()),
        Just("metrics".to_string()),
    ], 0..6)) {
        let options = ConvertOptions::default();
        let a = migrate_service(ServiceInput { name: "svc", tags: &tags, port: None }, &options, false);
        let b = migrate_service(ServiceInput { name: "svc", tags: &tags, port: None }, &options, false);
        prop_assert_eq!(&a, &b);
        let applied = a.apply(&tags);
        let again = migrate_service(ServiceInput { name: "svc", tags: &applied, port: None }, &options, false);
        prop_assert!(!again.is_change());
    }

    #[test]
    fn no_tag_makes_the_parser_or_converter_panic(tag in any::<String>(), name in any::<String>()) {
        let _ = parse_tag(&tag);
        for t in [tag.clone(), format!("urlprefix-{tag}"), format!("https://{tag}"), format!("urlprefix-/a {tag}")] {
            let tags = vec![t];
            let _ = migrate_service(ServiceInput { name: &name, tags: &tags, port: None }, &ConvertOptions::default(), true);
        }
    }

    #[test]
    fn no_urlprefix_shaped_input_panics(tag in "urlprefix-[ -~\\t]{0,40}") {
        let tags = vec![tag];
        let options = ConvertOptions { datacenter: Some("dc1".into()), ..ConvertOptions::default() };
        let _ = migrate_service(ServiceInput { name: "s", tags: &tags, port: Some(1) }, &options, false);
    }

    #[test]
    fn no_job_file_makes_the_file_layer_panic(text in any::<String>(), tag in "[ -~]{0,30}") {
        let _ = migrate_hcl(&text, &ConvertOptions::default(), false);
        let _ = migrate_json(&text, &ConvertOptions::default(), false);
        let hcl = format!("job \"j\" {{\n  group \"g\" {{\n    service {{\n      tags = [\"{}\", \"https://a.org\"]\n    }}\n  }}\n}}\n", tag.replace(['\\', '"'], ""));
        let _ = migrate_hcl(&hcl, &ConvertOptions::default(), true);
        let json = serde_json::json!({"Job": {"Name": "j", "TaskGroups": [{"Name": "g", "Services": [{"Name": "s", "Tags": [tag, "https://a.org"]}]}]}}).to_string();
        let _ = migrate_json(&json, &ConvertOptions::default(), true);
    }
}
