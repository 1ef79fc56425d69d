//! Any text through `migrate::parse_tag`: must return, never panic. When the tag yields a route,
//! `migrate_service` must either write routers whose rules `parse_rule` reads back to the same
//! host and path, or say why the route was NOT converted (the module's "nothing is dropped
//! silently" guarantee).
#![no_main]

use libfuzzer_sys::fuzz_target;
use proxy_operator::migrate::{
    self, ConvertOptions, DATACENTER, HostKind, HostMatcher, PLACEHOLDER_OPEN, PathMatch,
    PathMatcher, Route, ServiceInput,
};

fuzz_target!(|tag: &str| {
    let Some(parsed) = migrate::parse_tag(tag) else {
        return;
    };
    let Some(route) = &parsed.route else {
        return;
    };
    let options = ConvertOptions {
        // With a datacenter, `$DC` routes are converted too instead of being skipped.
        datacenter: Some("dc1".into()),
        ..ConvertOptions::default()
    };
    let tags = [tag.to_string()];
    let migration = migrate::migrate_service(
        ServiceInput {
            name: "svc",
            tags: &tags,
            port: None,
        },
        &options,
        false,
    );
    let rules: Vec<&str> = migration
        .add
        .iter()
        .filter_map(|t| t.split_once('='))
        // Only router rules: other tag values (a redirect regex, say) may contain `.rule=`.
        .filter(|(key, _)| key.ends_with(".rule"))
        .map(|(_, rule)| rule)
        .collect();
    if rules.is_empty() {
        assert!(
            migration
                .findings
                .iter()
                .any(|f| f.reason.contains("NOT converted")),
            "route of {tag:?} produced no router and no NOT-converted finding: {migration:?}"
        );
        return;
    }
    for rule in &rules {
        let read = match migrate::parse_rule(rule) {
            Ok(read) => read,
            Err(e) => panic!("rule {rule:?} written for tag {tag:?} does not parse back: {e}"),
        };
        // The round trip is only comparable where the converter rewrites nothing.
        if let Route::Http(http) = route {
            let literal = |s: &str| !s.contains(DATACENTER) && !s.contains(PLACEHOLDER_OPEN);
            if let Some(host) = &http.host
                && host.kind == HostKind::Exact
                && literal(&host.text)
            {
                assert_eq!(
                    read.host,
                    Some(HostMatcher::Host(host.text.clone())),
                    "host of {tag:?} lost in rule {rule:?}"
                );
            }
            if literal(http.path.as_str()) {
                let expected = match &http.path {
                    PathMatch::Prefix(p) if p == "/" => {
                        if http.host.is_none() {
                            Some(PathMatcher::Prefix("/".into()))
                        } else {
                            None
                        }
                    }
                    PathMatch::Prefix(p) => Some(PathMatcher::Prefix(p.clone())),
                    PathMatch::Exact(p) => Some(PathMatcher::Exact(p.clone())),
                };
                assert_eq!(read.path, expected, "path of {tag:?} lost in rule {rule:?}");
            }
        }
    }
});
