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
//!   `passHostHeader` and number of upstreams. Each (group, shape) is two Caddy routes:
//!   - one that runs its `map` handler (`http.handlers.map`), which maps the host to the
//!     `host:port` of each passing instance, in placeholders of its own
//!     (`{proxy_operator.<n>.upstream.<i>}`); a map only defines placeholders, lazily, so the
//!     route does nothing else and the next one runs;
//!   - one that matches when the map knows the host (its first placeholder is not empty) and
//!     the group's path, then runs the shape's middlewares and one `reverse_proxy` whose
//!     upstreams dial those placeholders (`Upstream.Dial` accepts placeholders, resolved per
//!     request in `fillDialInfo`, `modules/caddyhttp/reverseproxy/hosts.go`). Selection stays
//!     Caddy's default random choice among N distinct instances, as with N static upstreams; no
//!     health check is configured either way, so only the passing instances the catalog lists
//!     get traffic. On a server whose certificates Caddy manages (ACME, or the internal CA in
//!     dev mode), this route also lists the shape's hosts in a `host` matcher: automatic HTTPS
//!     reads the domains it obtains certificates for from `host` matchers (`autohttps.go`), so
//!     the same certificates are managed as with one route per service.
//!
//! The map compares its input exactly, while Caddy's `host` matcher ignores case, so the input
//! is composed from `{http.request.host.labels.N}` (the request host without port, label `N`
//! from the right, lowercased by Caddy, `replacer.go`): with K one more than the most labels of
//! a mapped host, `{labels.K-1}.….{labels.0}` is the request host lowercased, preceded by one dot
//! per label it has fewer than K. Every mapped key starts with at least one dot, so a request
//! host with K or more labels (a subdomain of a mapped host) never matches one, and a host with
//! fewer matches exactly the key of the same host in any case, as the `host` matcher does.
//!
//! What differs: Caddy's `/reverse_proxy/upstreams` reports the placeholders, not the instances
//! (the gate does not read it), and a request is matched by map lookups (a linear scan of the
//! shape's hosts, one string comparison each, for the guard and again for the dial) instead of
//! a route per service; both are why the per-route shape is kept below
//! [`super::HOST_MAPS_FROM`] routes. Routes on wildcard or regexp
//! hosts, without a host, or with non-ASCII paths stay one Caddy route each, in their place.

use std::collections::{HashMap, HashSet};

use serde_json::{Map, Value, json};

use super::{Error, path_pattern, proxy_handler, route_middlewares, service_route};
use crate::proxy::caddy::routes::{HostMatch, Middleware, PathRule, Route, UpstreamScheme};

/// The catalog routes of one server, in serving order: a run of at least `from` consecutive
/// routes on plain host names becomes host maps, everything else one Caddy route per route.
/// Errors name the first route in serving order that cannot be rendered.
/// `name_hosts`: list the hosts in `host` matchers too (the server's certificates are managed).
pub(super) fn catalog_routes(
    routes: &[&Route],
    from: usize,
    name_hosts: bool,
) -> Result<Vec<Value>, Error> {
    let mut out = Vec::new();
    let mut run: Vec<(&Route, String)> = Vec::new();
    for route in routes {
        match map_host(route) {
            Some(host) => run.push((route, host)),
            None => {
                flush(&mut run, from, name_hosts, &mut out)?;
                out.push(service_route(route)?);
            }
        }
    }
    flush(&mut run, from, name_hosts, &mut out)?;
    Ok(out)
}

fn flush(
    run: &mut Vec<(&Route, String)>,
    from: usize,
    name_hosts: bool,
    out: &mut Vec<Value>,
) -> Result<(), Error> {
    if run.len() >= from {
        let maps = out.iter().filter(|r| is_map_route(r)).count();
        out.extend(host_maps(run, maps, name_hosts)?);
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

/// Whether a rendered route is the map half of a (group, shape).
fn is_map_route(route: &Value) -> bool {
    route["handle"][0]["handler"] == "map"
}

/// The host maps of a run; `first` numbers the placeholders after the maps rendered before it.
fn host_maps(
    run: &[(&Route, String)],
    first: usize,
    name_hosts: bool,
) -> Result<Vec<Value>, Error> {
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
            g.shapes.into_iter().map(move |shape| (path.clone(), shape))
        })
        .enumerate()
        .flat_map(|(n, (path, shape))| shape_routes(first + n, path.as_deref(), shape, name_hosts))
        .collect())
}

/// The two Caddy routes of one (group, shape), the `n`th map of the server.
fn shape_routes(n: usize, path: Option<&str>, shape: Shape<'_>, name_hosts: bool) -> [Value; 2] {
    let Shape {
        first,
        handlers,
        mut hosts,
    } = shape;
    hosts.sort_by(|a, b| a.0.cmp(&b.0));
    let labels = 1 + hosts
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
        .map(|i| format!("{{proxy_operator.{n}.upstream.{i}}}"))
        .collect();
    let mappings: Vec<Value> = hosts
        .iter()
        .map(|(host, upstreams)| {
            let pad = ".".repeat(labels - host.split('.').count());
            json!({"input": format!("{pad}{host}"), "outputs": upstreams})
        })
        .collect();
    let mut when = Map::new();
    if let Some(path) = path {
        when.insert("path".into(), json!([path]));
    }
    let mut map = json!({"handle": [{
        "handler": "map",
        "source": source,
        "destinations": destinations,
        "mappings": mappings,
    }]});
    if !when.is_empty() {
        map["match"] = json!([Value::Object(when.clone())]);
    }
    if name_hosts {
        when.insert(
            "host".into(),
            json!(hosts.iter().map(|(h, _)| h).collect::<Vec<_>>()),
        );
    }
    when.insert(
        "not".into(),
        json!([{"vars": {destinations[0].clone(): [""]}}]),
    );
    let mut handle = handlers;
    handle.push(proxy_handler(first, &destinations));
    let proxy = json!({"match": [Value::Object(when)], "handle": handle, "terminal": true});
    [map, proxy]
}
