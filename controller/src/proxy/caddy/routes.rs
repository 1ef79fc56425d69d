//! Pure: a Consul catalog snapshot (`/v1/health/service/:name` entries) → the routes Caddy serves.
//!
//! Three tag conventions are read, per service instance:
//! - HinD's `https://host[:port][/path]` tags (`contracts/HIND.md` §2): TLS only, upstreams are
//!   the instances carrying the tag. Parsed by [`crate::migrate::parse_tag`], the parser the
//!   migration tool uses.
//! - Traefik's Consul Catalog tags (`traefik.enable`, `traefik.http.routers.<r>.rule`,
//!   `.entrypoints`, `.middlewares`, `.service`, `.priority`, `traefik.http.services.<s>.
//!   loadbalancer.*`, and the middlewares `migrate tags` writes). Rules are read with
//!   [`crate::migrate::parse_rule`], so what `migrate tags` writes routes the same on both proxies.
//! - The default rule `Host(<service>.<domainSuffix>)` for services exposed to Traefik
//!   (`traefik.enable=true`, or `exposedByDefault`) that define no router, as Traefik's
//!   `defaultRule` does.
//!
//! Only instances whose checks all pass get traffic (Consul's `?passing`). Note that Traefik
//! v3's `strictChecks` also admits `warning` by default (traefik/traefik#10388); we follow the
//! stricter rule the issue asks for.
//!
//! What Caddy cannot express is a [`Finding`] and the router is **not** routed (fail closed: an
//! unknown middleware may be an authentication), the way Traefik disables a router whose
//! middleware is missing. Output is deterministic: the same catalog in any order gives the same
//! table.

use std::collections::{BTreeMap, BTreeSet};

use ipnet::IpNet;

use crate::consul::ServiceEntry;
use crate::migrate::{self, HostMatcher, ParsedRule, PathMatcher};
use crate::render::Model;

/// The catalog as the sync reads it: service name → its health entries (every state; the
/// builder filters on health itself so one snapshot serves both the routes and the status).
pub type Catalog = BTreeMap<String, Vec<ServiceEntry>>;

/// What the route builder needs from the spec.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteSettings {
    /// `<service>.<domain_suffix>` is the default rule.
    pub domain_suffix: String,
    /// Traefik's `exposedByDefault` for the Consul catalog.
    pub exposed_by_default: bool,
    /// Every user-facing entry point name (a router without `entrypoints` gets all of them).
    pub entry_points: Vec<String>,
    /// The TLS entry point HinD's `https://` tags are served on.
    pub tls_entry_point: String,
    /// The names of the document's policy sets (`spec.policies`), which services opt into
    /// with [`POLICY_TAG`].
    pub policy_sets: BTreeSet<String>,
}

/// The tag a service opts into a policy set with: `proxy-operator.policy=<name>`.
pub const POLICY_TAG: &str = "proxy-operator.policy=";

impl RouteSettings {
    /// The settings of a resolved spec.
    pub fn from_model(model: &Model) -> RouteSettings {
        RouteSettings {
            domain_suffix: model.domain_suffix.clone(),
            exposed_by_default: model.discovery.consul.exposed_by_default,
            entry_points: model.entry_points.iter().map(|e| e.name.clone()).collect(),
            tls_entry_point: model
                .entry_points
                .iter()
                .find(|e| e.tls)
                .map_or_else(|| "websecure".to_string(), |e| e.name.clone()),
            policy_sets: model.policies.keys().cloned().collect(),
        }
    }
}

/// How the request host is matched.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum HostMatch {
    /// A host name, or a Caddy wildcard (`*.example.com`, one label per `*`).
    Exact(String),
    /// A Go regular expression on the host without port (Traefik's `HostRegexp`).
    Regexp(String),
}

/// How the request path is matched.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum PathRule {
    /// A literal prefix: `/api` matches `/api`, `/api/x` and `/apis` (Traefik's `PathPrefix`).
    Prefix(String),
    /// Exactly this path.
    Exact(String),
}

/// A request or response step before the proxy, in the router's order.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Middleware {
    /// `ipallowlist.sourcerange`: other clients get 403.
    IpAllow(Vec<IpNet>),
    /// `stripprefix.prefixes` (one prefix).
    StripPrefix(String),
    /// `addprefix.prefix`.
    AddPrefix(String),
    /// `redirectregex`: the regex runs on `scheme://host/path?query`; `replacement` uses Go's
    /// `$1`/`${1}`/`$$` syntax. Permanent: 301 for GET/HEAD, 308 otherwise; else 302/307.
    RedirectRegex {
        /// The regex.
        regex: String,
        /// The replacement, Go `regexp.Expand` syntax.
        replacement: String,
        /// Permanent or temporary.
        permanent: bool,
    },
    /// `redirectscheme`: requests not already on `scheme` are redirected.
    RedirectScheme {
        /// Target scheme (`https`).
        scheme: String,
        /// Target port, when not the scheme's default.
        port: Option<u16>,
        /// Permanent or temporary.
        permanent: bool,
    },
    /// `headers.customrequestheaders`: set (empty value: delete) request headers.
    RequestHeaders(BTreeMap<String, String>),
    /// `headers.customresponseheaders`: set (empty value: delete) response headers.
    ResponseHeaders(BTreeMap<String, String>),
    /// The policy set the service opts into with [`POLICY_TAG`]; the renderer replaces it with
    /// the set's [`Middleware::Handlers`] (and [`Middleware::Retry`]).
    PolicySet(String),
    /// Handlers rendered from a policy set (`super::policy`).
    Handlers(super::policy::Handlers),
    /// Retries on the route's `reverse_proxy`: it is a setting of the proxy, not a handler.
    Retry {
        /// Attempts in total, the first included.
        attempts: u32,
        /// The wait between two attempts, in milliseconds.
        interval_ms: u64,
    },
}

/// The upstream protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum UpstreamScheme {
    /// HTTP/1.1 (default).
    Http,
    /// HTTPS.
    Https,
    /// HTTP/2 cleartext.
    H2c,
}

/// Which convention a route came from.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Source {
    /// A HinD `https://` tag.
    Hind(String),
    /// A Traefik router.
    Traefik(String),
    /// Traefik's default rule.
    Default,
}

/// One route Caddy serves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    /// The Consul service.
    pub service: String,
    /// The tag or router it came from.
    pub source: Source,
    /// Entry points it is served on, sorted.
    pub entry_points: Vec<String>,
    /// Host matcher; `None` matches every host.
    pub host: Option<HostMatch>,
    /// Path matcher; `None` matches every path.
    pub path: Option<PathRule>,
    /// Steps before the proxy, in order.
    pub middlewares: Vec<Middleware>,
    /// Upstream protocol.
    pub upstream_scheme: UpstreamScheme,
    /// Whether the client's `Host` goes upstream (Traefik's `passhostheader`, default true).
    pub pass_host_header: bool,
    /// `host:port` of every passing instance, sorted and deduplicated.
    pub upstreams: Vec<String>,
    /// Traefik's explicit `priority` (higher first); 0 when unset.
    pub priority: i64,
}

impl Route {
    /// A stable name for logs and findings: `service/tag` or `service/router`.
    pub fn name(&self) -> String {
        match &self.source {
            Source::Hind(tag) => format!("{}/{tag}", self.service),
            Source::Traefik(router) => format!("{}/{router}", self.service),
            Source::Default => format!("{}/default", self.service),
        }
    }

    /// Sort key: explicit priority, then exact hosts before regexps before no host, then
    /// longer paths, exact paths before prefixes; the name breaks ties. Caddy runs routes in
    /// order and the first terminal match wins, so more specific routes go first, like
    /// Caddy's own site sorting and Traefik's rule-length priority.
    fn order_key(&self) -> (i64, u8, usize, u8, String) {
        let host_class = match &self.host {
            Some(HostMatch::Exact(h)) if !h.contains('*') => 0,
            Some(HostMatch::Exact(_)) => 1,
            Some(HostMatch::Regexp(_)) => 2,
            None => 3,
        };
        let (path_len, path_class) = match &self.path {
            Some(PathRule::Exact(p)) => (p.len(), 0),
            Some(PathRule::Prefix(p)) => (p.len(), 1),
            None => (0, 2),
        };
        (
            -self.priority,
            host_class,
            usize::MAX - path_len,
            path_class,
            self.name(),
        )
    }
}

/// Something in the catalog that is not routed as written, and why.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Finding {
    /// The Consul service.
    pub service: String,
    /// The tag, router or middleware concerned.
    pub subject: String,
    /// What happens instead.
    pub reason: String,
}

impl std::fmt::Display for Finding {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "service {} {}: {}",
            self.service, self.subject, self.reason
        )
    }
}

/// The routes of a catalog snapshot, in serving order, and what was not routed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RouteTable {
    /// Routes, most specific first.
    pub routes: Vec<Route>,
    /// Findings, sorted and deduplicated.
    pub findings: Vec<Finding>,
}

/// Builds the route table of a catalog snapshot.
pub fn build_routes(catalog: &Catalog, settings: &RouteSettings) -> RouteTable {
    let mut findings = BTreeSet::new();
    // (service, source) → the route (upstreams merged across instances), or None once two
    // instances disagreed about it.
    let mut merged: BTreeMap<(String, Source), Option<Route>> = BTreeMap::new();
    for (name, entries) in catalog {
        for entry in entries.iter().filter(|e| e.is_passing()) {
            let mut report = |subject: &str, reason: String| {
                findings.insert(Finding {
                    service: name.clone(),
                    subject: subject.to_string(),
                    reason,
                });
            };
            for route in instance_routes(name, entry, settings, &mut report) {
                let key = (route.service.clone(), route.source.clone());
                match merged.get_mut(&key) {
                    None => {
                        merged.insert(key, Some(route));
                    }
                    Some(None) => {}
                    Some(Some(existing)) => {
                        if same_definition(existing, &route) {
                            existing.upstreams.extend(route.upstreams);
                        } else {
                            report(
                                &route.name(),
                                "instances of the service define it differently; not routed until they agree".into(),
                            );
                            merged.insert(key, None);
                        }
                    }
                }
            }
        }
    }
    let mut routes: Vec<Route> = merged.into_values().flatten().collect();
    for r in &mut routes {
        r.upstreams.sort();
        r.upstreams.dedup();
    }
    routes.sort_by_cached_key(Route::order_key);
    report_shadowed(&routes, &mut findings);
    RouteTable {
        routes,
        findings: findings.into_iter().collect(),
    }
}

fn same_definition(a: &Route, b: &Route) -> bool {
    Route {
        upstreams: Vec::new(),
        ..a.clone()
    } == Route {
        upstreams: Vec::new(),
        ..b.clone()
    }
}

/// Two routes with the same matchers on a shared entry point: only the first is reachable.
fn report_shadowed(routes: &[Route], findings: &mut BTreeSet<Finding>) {
    let mut seen: BTreeMap<(String, Option<HostMatch>, Option<PathRule>), String> = BTreeMap::new();
    for r in routes {
        for ep in &r.entry_points {
            let key = (ep.clone(), r.host.clone(), r.path.clone());
            match seen.get(&key) {
                Some(first) if *first != r.name() => {
                    findings.insert(Finding {
                        service: r.service.clone(),
                        subject: r.name(),
                        reason: format!(
                            "same host and path as {first} on entry point {ep}, which comes first; this route gets no traffic there"
                        ),
                    });
                }
                Some(_) => {}
                None => {
                    seen.insert(key, r.name());
                }
            }
        }
    }
}

/// `host:port` of an instance (the node's address when the service has none).
pub(crate) fn dial(entry: &ServiceEntry, port: u16) -> String {
    let host = if entry.service.address.is_empty() {
        &entry.node.address
    } else {
        &entry.service.address
    };
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

/// Traefik's `normalize`: runs of characters other than letters and digits become one `-`.
pub(crate) fn normalize(name: &str) -> String {
    name.split(|c: char| !c.is_alphanumeric())
        .filter(|s| !s.is_empty())
        .collect::<Vec<_>>()
        .join("-")
        .to_lowercase()
}

fn instance_routes(
    service: &str,
    entry: &ServiceEntry,
    settings: &RouteSettings,
    report: &mut impl FnMut(&str, String),
) -> Vec<Route> {
    let mut out = hind_routes(service, entry, settings, report);
    out.extend(super::traefik_tags::traefik_routes(
        service, entry, settings, report,
    ));
    match policy_set(entry, settings) {
        Ok(None) => out,
        Ok(Some(name)) => {
            let set = Middleware::PolicySet(name);
            for route in out.iter_mut().filter(|r| !r.middlewares.contains(&set)) {
                route.middlewares.insert(0, set.clone());
            }
            out
        }
        // Fail closed: the set may be the service's only authentication.
        Err(reason) => {
            report(
                POLICY_TAG.trim_end_matches('='),
                format!("{reason}; not routed"),
            );
            Vec::new()
        }
    }
}

/// The policy set an instance opts into, checked against the document's sets.
fn policy_set(entry: &ServiceEntry, settings: &RouteSettings) -> Result<Option<String>, String> {
    let names: BTreeSet<&str> = entry
        .service
        .tags
        .iter()
        .filter_map(|t| t.strip_prefix(POLICY_TAG))
        .map(str::trim)
        .collect();
    let mut names = names.into_iter();
    match (names.next(), names.next()) {
        (None, _) => Ok(None),
        (Some(a), Some(b)) => Err(format!(
            "names two policy sets ({a:?}, {b:?}); a service opts into one"
        )),
        (Some(name), None) if settings.policy_sets.contains(name) => Ok(Some(name.to_string())),
        (Some(name), None) => Err(format!(
            "policy set {name:?} is not defined in spec.policies"
        )),
    }
}

fn hind_routes(
    service: &str,
    entry: &ServiceEntry,
    settings: &RouteSettings,
    report: &mut impl FnMut(&str, String),
) -> Vec<Route> {
    let mut out = Vec::new();
    for tag in entry
        .service
        .tags
        .iter()
        .filter(|t| t.starts_with("https://"))
    {
        let Some(parsed) = migrate::parse_tag(tag) else {
            continue;
        };
        for f in &parsed.findings {
            // The port note is about Traefik; on Caddy we say what happens here.
            if !f.option.starts_with("port") {
                report(tag, f.reason.clone());
            }
        }
        let Some(migrate::Route::Http(route)) = parsed.route else {
            continue;
        };
        if let Some(port) = route.alt_port {
            report(
                tag,
                format!(
                    "HinD's Caddy served this site on its own listener :{port}; served on entry point {} instead",
                    settings.tls_entry_point
                ),
            );
        }
        let path = match &route.path {
            migrate::PathMatch::Prefix(p) if p == "/" => None,
            migrate::PathMatch::Prefix(p) => Some(PathRule::Prefix(p.clone())),
            migrate::PathMatch::Exact(p) => Some(PathRule::Exact(p.clone())),
        };
        out.push(Route {
            service: service.to_string(),
            source: Source::Hind(tag.to_string()),
            entry_points: vec![settings.tls_entry_point.clone()],
            host: route.host.map(|h| HostMatch::Exact(h.text)),
            path,
            middlewares: Vec::new(),
            upstream_scheme: UpstreamScheme::Http,
            pass_host_header: true,
            upstreams: vec![dial(entry, entry.service.port)],
            priority: 0,
        });
    }
    out
}

/// The host and path matchers of a Traefik rule Caddy can express.
pub(crate) fn matchers_of_rule(
    rule: &str,
) -> Result<(Option<HostMatch>, Option<PathRule>), String> {
    let ParsedRule { host, path } = migrate::parse_rule(rule)?;
    let host = match host {
        None => None,
        Some(HostMatcher::Host(h)) => Some(HostMatch::Exact(h.to_lowercase())),
        Some(HostMatcher::HostRegexp(re)) => Some(HostMatch::Regexp(re)),
        Some(HostMatcher::HostSni(_) | HostMatcher::HostSniRegexp(_)) => {
            return Err("HostSNI belongs to TCP routers".into());
        }
    };
    let path = match path {
        None => None,
        Some(PathMatcher::Prefix(p)) if p == "/" => None,
        Some(PathMatcher::Prefix(p)) => Some(PathRule::Prefix(p)),
        Some(PathMatcher::Exact(p)) => Some(PathRule::Exact(p)),
    };
    if let Some(HostMatch::Exact(text)) = &host
        && (text.is_empty() || text.contains(|c: char| c.is_whitespace() || c == '/'))
    {
        return Err(format!("{text:?} is not a host name"));
    }
    if let Some(PathRule::Prefix(p) | PathRule::Exact(p)) = &path {
        // Caddy's path matcher reads `*` as a wildcard and unescapes `%xx`; a literal one
        // would match differently than on Traefik.
        if !p.starts_with('/') || p.contains(['*', '%']) {
            return Err(format!(
                "path {p:?} must start with / and contain no * or % to match the same on Caddy"
            ));
        }
    }
    Ok((host, path))
}

#[cfg(test)]
mod tests;
