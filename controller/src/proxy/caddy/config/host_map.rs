//! Pure: a large catalog's routes as a few host-map routes, so `/load` provisions a handful of
//! Caddy routes instead of one per service.
//!
//! Caddy provisions every route with its own matchers and handlers on each `/load`: with one
//! route per service, 10,000 services took about a second (issue 10). Consecutive routes on
//! plain host names are rendered instead as:
//!
//! - **groups**: routes with the same priority and path matcher (paths compared lowercased, as
//!   Caddy's `path` matcher does). Groups keep the serving order: they appear in the order of
//!   their first route, which is priority, then longer paths, exact before prefix. Two routes of
//!   one host in different groups therefore keep their relative order, except groups with the
//!   same priority, path length and kind, whose paths never match the same request. A host
//!   repeated inside a group is the route served first there; the later one is shadowed, as
//!   before (`routes::report_shadowed` names it).
//! - **shapes**: within a group, routes with the same middlewares, upstream protocol,
//!   `passHostHeader` and number of upstreams. Each (group, shape) is one Caddy route:
//!   - its `host` matcher lists every host of the shape: Caddy's own case-insensitive matcher
//!     (a binary search from 101 hosts on), and the list automatic HTTPS reads its domains from,
//!     so certificates are managed for the same hosts as with one route per service;
//!   - its `map` handler (`http.handlers.map`) maps the host to the `host:port` of each passing
//!     instance, in the placeholders `{proxy_operator.upstream.N}`;
//!   - the shape's middlewares, then one `reverse_proxy` whose upstreams dial those placeholders
//!     (`Upstream.Dial` accepts placeholders, resolved per request in `fillDialInfo`,
//!     `modules/caddyhttp/reverseproxy/hosts.go`). Selection stays Caddy's default random choice
//!     among N distinct instances, as with N static upstreams; no health check is configured
//!     either way, so only the passing instances the catalog lists get traffic.
//!
//! The map compares its input exactly, while hosts match case-insensitively, so the input is
//! composed from `{http.request.host.labels.N}` (Caddy lowercases each label, `replacer.go`):
//! with K the most labels of a mapped host, `{labels.K-1}.….{labels.0}` is the request host
//! lowercased, preceded by one dot per label it has fewer than K. The `host` matcher has already
//! matched, so the request host is one of the mapped hosts up to case, and the input is exactly
//! its key.
//!
//! What differs: Caddy's `/reverse_proxy/upstreams` reports the placeholders, not the instances
//! (the gate does not read it), and a request is matched by a map lookup (a linear scan of the
//! shape's hosts, one string comparison each) instead of a route per service; both are why the
//! per-route shape is kept below [`super::HOST_MAPS_FROM`] routes. Routes on wildcard or regexp
//! hosts, without a host, or with non-ASCII paths stay one Caddy route each, in their place.

use std::collections::{HashMap, HashSet};

use serde_json::{Map, Value, json};

use super::{Error, path_pattern, proxy_handler, route_middlewares, service_route};
use crate::proxy::caddy::routes::{HostMatch, Middleware, PathRule, Route, UpstreamScheme};

/// The catalog routes of one server, in serving order: a run of at least `from` consecutive
/// routes on plain host names becomes host maps, everything else one Caddy route per route.
/// Errors name the first route in serving order that cannot be rendered.
pub(super) fn catalog_routes(routes: &[&Route], from: usize) -> Result<Vec<Value>, Error> {
    let mut out = Vec::new();
    let mut run: Vec<(&Route, String)> = Vec::new();
    for route in routes {
        match map_host(route) {
            Some(host) => run.push((route, host)),
            None => {
                flush(&mut run, from, &mut out)?;
                out.push(service_route(route)?);
            }
        }
    }
    flush(&mut run, from, &mut out)?;
    Ok(out)
}

fn flush(run: &mut Vec<(&Route, String)>, from: usize, out: &mut Vec<Value>) -> Result<(), Error> {
    if run.len() >= from {
        out.extend(host_maps(run)?);
    } else {
        for (route, _) in run.iter() {
            out.push(service_route(route)?);
        }
    }
    run.clear();
    Ok(())
}

/// The lowercased host of a route the maps can serve: an exact host name of ASCII labels
/// (what Caddy's `host` matcher compares without IDNA conversion or wildcards) and an ASCII path.
fn map_host(route: &Route) -> Option<String> {
    let Some(HostMatch::Exact(host)) = &route.host else {
        return None;
    };
    let label = |l: &str| {
        !l.is_empty()
            && l.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    };
    let path_ascii = match &route.path {
        None => true,
        Some(PathRule::Prefix(p) | PathRule::Exact(p)) => p.is_ascii(),
    };
    (host.split('.').all(label) && path_ascii).then(|| host.to_ascii_lowercase())
}

/// What routes of one group share besides the host and the upstreams' addresses.
type ShapeKey<'a> = (&'a [Middleware], UpstreamScheme, bool, usize);

struct Shape<'a> {
    /// The first route of the shape: its middlewares and proxy settings are the shape's.
    first: &'a Route,
    handlers: Vec<Value>,
    /// (lowercased host, its upstreams), in serving order.
    hosts: Vec<(String, &'a [String])>,
}

struct Group<'a> {
    /// The path pattern, lowercased as Caddy compares it.
    path: Option<String>,
    hosts: HashSet<String>,
    shapes: Vec<Shape<'a>>,
    by_key: HashMap<ShapeKey<'a>, usize>,
}

fn host_maps(run: &[(&Route, String)]) -> Result<Vec<Value>, Error> {
    let mut groups: Vec<Group<'_>> = Vec::new();
    let mut by_key: HashMap<(i64, Option<String>), usize> = HashMap::new();
    for (route, host) in run {
        let path = route
            .path
            .as_ref()
            .map(|p| path_pattern(p).to_ascii_lowercase());
        let g = *by_key
            .entry((route.priority, path.clone()))
            .or_insert_with(|| {
                groups.push(Group {
                    path,
                    hosts: HashSet::new(),
                    shapes: Vec::new(),
                    by_key: HashMap::new(),
                });
                groups.len() - 1
            });
        let group = &mut groups[g];
        if !group.hosts.insert(host.clone()) {
            continue;
        }
        let key: ShapeKey<'_> = (
            &route.middlewares,
            route.upstream_scheme,
            route.pass_host_header,
            route.upstreams.len(),
        );
        let s = match group.by_key.get(&key) {
            Some(s) => *s,
            None => {
                // Rendered as each shape first appears, so an error names the first route in
                // serving order that cannot be rendered.
                group.shapes.push(Shape {
                    first: route,
                    handlers: route_middlewares(route)?,
                    hosts: Vec::new(),
                });
                group.by_key.insert(key, group.shapes.len() - 1);
                group.shapes.len() - 1
            }
        };
        group.shapes[s].hosts.push((host.clone(), &route.upstreams));
    }
    Ok(groups
        .into_iter()
        .flat_map(|g| {
            let path = g.path;
            g.shapes
                .into_iter()
                .map(move |shape| shape_route(path.as_deref(), shape))
        })
        .collect())
}

fn shape_route(path: Option<&str>, shape: Shape<'_>) -> Value {
    let Shape {
        first,
        handlers,
        mut hosts,
    } = shape;
    hosts.sort_by(|a, b| a.0.cmp(&b.0));
    let labels = hosts
        .iter()
        .map(|(h, _)| h.split('.').count())
        .max()
        .unwrap_or(1);
    let source = (0..labels)
        .rev()
        .map(|i| format!("{{http.request.host.labels.{i}}}"))
        .collect::<Vec<_>>()
        .join(".");
    let destinations: Vec<String> = (0..first.upstreams.len())
        .map(|i| format!("{{proxy_operator.upstream.{i}}}"))
        .collect();
    let mappings: Vec<Value> = hosts
        .iter()
        .map(|(host, upstreams)| {
            let pad = ".".repeat(labels - host.split('.').count());
            json!({"input": format!("{pad}{host}"), "outputs": upstreams})
        })
        .collect();
    let mut matcher = Map::new();
    matcher.insert(
        "host".into(),
        json!(hosts.iter().map(|(h, _)| h).collect::<Vec<_>>()),
    );
    if let Some(path) = path {
        matcher.insert("path".into(), json!([path]));
    }
    let mut handle = vec![json!({
        "handler": "map",
        "source": source,
        "destinations": destinations,
        "mappings": mappings,
    })];
    handle.extend(handlers);
    handle.push(proxy_handler(first, &destinations));
    json!({"match": [Value::Object(matcher)], "handle": handle, "terminal": true})
}
