//! Typed routes → Traefik v3 Consul Catalog tags (`contracts/TRAEFIK.md` §6 for the tag syntax;
//! `$` needs no escaping in Consul tags), and a reader for the rules it writes.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use ipnet::IpNet;
use sha2::{Digest, Sha256};

use super::{
    ConvertOptions, DATACENTER, Finding, HostHeader, HostKind, HostPattern, HttpRoute,
    PLACEHOLDER_CLOSE, PLACEHOLDER_OPEN, PathMatch, Redirect, Route, Scheme, ServiceInput,
    TcpListen, TcpRoute, UpstreamScheme, parse_tag,
};

/// The conversion of one service's legacy tags.
pub(crate) struct Conversion {
    /// Every Traefik tag, deduplicated, `traefik.enable=true` first.
    pub tags: Vec<String>,
    /// Per converted legacy tag, the tags that carry its route (sorted by legacy tag).
    pub per_tag: Vec<(String, Vec<String>)>,
    /// Parser and converter findings, in legacy tag order.
    pub findings: Vec<Finding>,
}

/// Lower-cases and reduces a name to `[a-z0-9-]`, keeping placeholders whole so an interpolated
/// service name stays interpolated in the router name.
fn sanitize(name: &str) -> String {
    let mut out = String::new();
    let mut in_placeholder = false;
    for c in name.chars() {
        if c == PLACEHOLDER_OPEN {
            in_placeholder = true;
        }
        if in_placeholder || c.is_ascii_alphanumeric() {
            out.push(c.to_ascii_lowercase());
        } else if !out.ends_with('-') {
            out.push('-');
        }
        if c == PLACEHOLDER_CLOSE {
            in_placeholder = false;
        }
    }
    let out = out.trim_matches('-');
    let mut out: String = if out.chars().count() > 48 {
        out.chars().take(48).collect()
    } else {
        out.to_string()
    };
    // Cutting could split a placeholder; close it rather than produce a broken one.
    if out.rfind(PLACEHOLDER_OPEN) > out.rfind(PLACEHOLDER_CLOSE)
        || (out.contains(PLACEHOLDER_OPEN) && !out.contains(PLACEHOLDER_CLOSE))
    {
        out = name_hash(&out);
    }
    if out.is_empty() {
        "svc".to_string()
    } else {
        out.trim_end_matches('-').to_string()
    }
}

fn name_hash(s: &str) -> String {
    let digest = Sha256::digest(s.as_bytes());
    let mut out = String::with_capacity(8);
    for b in &digest[..4] {
        let _ = write!(out, "{b:02x}");
    }
    out
}

fn regex_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if "\\.+*?()|[]{}^$".contains(c) {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// The regex a glob or wildcard host becomes (anchored, as Traefik v3 `HostRegexp` expects).
pub(crate) fn host_regex(host: &HostPattern) -> String {
    let mut out = String::from("^");
    for c in host.text.chars() {
        match (c, host.kind) {
            ('*', HostKind::Wildcard) => out.push_str("[^.]+"),
            ('*', _) => out.push_str(".*"),
            ('?', HostKind::Glob) => out.push('.'),
            (c, _) => out.push_str(&regex_escape(&c.to_string())),
        }
    }
    out.push('$');
    out
}

fn host_rule(host: &HostPattern, sni: bool) -> String {
    match (host.kind, sni) {
        (HostKind::Exact, false) => format!("Host(`{}`)", host.text),
        (HostKind::Exact, true) => format!("HostSNI(`{}`)", host.text),
        (_, false) => format!("HostRegexp(`{}`)", host_regex(host)),
        (_, true) => format!("HostSNIRegexp(`{}`)", host_regex(host)),
    }
}

/// The rule of an HTTP route: `Host(..) && PathPrefix(..)`, `Path(..)` for exact paths.
pub(crate) fn http_rule(host: Option<&HostPattern>, path: &PathMatch) -> String {
    let path_rule = match path {
        PathMatch::Prefix(p) if p == "/" => None,
        PathMatch::Prefix(p) => Some(format!("PathPrefix(`{p}`)")),
        PathMatch::Exact(p) => Some(format!("Path(`{p}`)")),
    };
    match (host, path_rule) {
        (Some(h), Some(p)) => format!("{} && {p}", host_rule(h, false)),
        (Some(h), None) => host_rule(h, false),
        (None, Some(p)) => p,
        (None, None) => "PathPrefix(`/`)".to_string(),
    }
}

/// fabio's `BuildRedirectURL` as a Traefik `redirectregex` (regex, replacement). The regex
/// captures the request host (1), the path after `strip` (2) and the query with its `?` (3).
pub(crate) fn redirect_regex(
    redirect: &Redirect,
    strip: Option<&str>,
    prepend: Option<&str>,
) -> (String, String) {
    let regex = match strip {
        Some(s) if !s.is_empty() => {
            format!("^[a-z]+://([^/?]+)(?:{})?([^?]*)(.*)$", regex_escape(s))
        }
        _ => "^[a-z]+://([^/?]+)([^?]*)(.*)$".to_string(),
    };
    let target = redirect.target.as_str();
    let (scheme, rest) = match target.find("://") {
        Some(i) => (&target[..i + 3], &target[i + 3..]),
        None => ("", target),
    };
    let (mut host, mut path, query) = if scheme.is_empty() {
        let (p, q) = rest
            .split_once('?')
            .map_or((rest, None), |(p, q)| (p, Some(q)));
        (String::new(), p.to_string(), q.map(str::to_string))
    } else {
        let end = rest.find(['/', '?']).unwrap_or(rest.len());
        let (h, after) = rest.split_at(end);
        let (p, q) = after
            .split_once('?')
            .map_or((after, None), |(p, q)| (p, Some(q)));
        (h.to_string(), p.to_string(), q.map(str::to_string))
    };
    // Literal `$` must be doubled for Go's regexp.Expand; placeholders are inserted afterwards.
    const HOST_MARK: &str = "\u{E002}";
    const PATH_MARK: &str = "\u{E003}";
    const QUERY_MARK: &str = "\u{E004}";
    if let Some(h) = host.strip_suffix("$path") {
        host = h.to_string();
        path = "$path".to_string();
    }
    if path.contains("/$path") {
        path = path.replacen("/$path", "$path", 1);
    }
    let mut query_part = query.map(|q| format!("?{q}")).unwrap_or_default();
    if path.contains("$path") {
        path = path.replacen("$path", PATH_MARK, 1);
        if query_part.is_empty() {
            query_part = QUERY_MARK.to_string();
        }
    }
    if path.is_empty() {
        path = "/".to_string();
    }
    host = host.replacen("$host", HOST_MARK, 1);
    let raw = format!("{scheme}{host}{path}{query_part}");
    let replacement = raw
        .replace('$', "$$")
        .replace(HOST_MARK, "${1}")
        .replace(
            PATH_MARK,
            &format!("{}${{2}}", prepend.unwrap_or("").replace('$', "$$")),
        )
        .replace(QUERY_MARK, "${3}");
    (regex, replacement)
}

fn substitute_dc(text: &str, dc: &str) -> String {
    text.replace(DATACENTER, dc)
}

/// Collected tags of one service, deduplicated in insertion order.
#[derive(Default)]
struct Tags {
    list: Vec<String>,
}

impl Tags {
    fn push(&mut self, tag: String) {
        if !self.list.contains(&tag) {
            self.list.push(tag);
        }
    }
}

fn sources(nets: &[IpNet]) -> String {
    nets.iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(",")
}

/// Traefik's answer to each legacy redirect code: permanent or not, and what differs.
fn permanence(code: u16) -> (bool, Option<String>) {
    match code {
        301 => (true, None),
        302 => (false, None),
        308 => (
            true,
            Some(
                "Traefik's permanent redirect answers 301 to GET/HEAD and 308 to other methods"
                    .into(),
            ),
        ),
        307 => (
            false,
            Some(
                "Traefik's temporary redirect answers 302 to GET/HEAD and 307 to other methods"
                    .into(),
            ),
        ),
        c => (
            false,
            Some(format!(
                "Traefik redirects only as permanent (301/308) or temporary (302/307); {c} becomes temporary"
            )),
        ),
    }
}

struct ServiceKey {
    upstream: UpstreamScheme,
    pass_host: bool,
}

fn service_name(base: &str, key: &ServiceKey) -> String {
    let mut name = base.to_string();
    match key.upstream {
        UpstreamScheme::Http => {}
        UpstreamScheme::Https => name.push_str("-https"),
        UpstreamScheme::H2c => name.push_str("-h2c"),
    }
    if !key.pass_host {
        name.push_str("-upstreamhost");
    }
    name
}

#[allow(clippy::too_many_arguments)] // one call site; a struct would only rename the list
fn convert_http(
    tag: &str,
    id: &str,
    base: &str,
    route: &HttpRoute,
    service: ServiceInput<'_>,
    options: &ConvertOptions,
    findings: &mut Vec<Finding>,
    service_tags: &mut BTreeMap<String, Vec<String>>,
) -> Option<Vec<String>> {
    if let Some(auth) = &route.auth {
        findings.push(Finding::new(
            tag,
            format!("auth={auth}"),
            "needs a basicAuth middleware with the htpasswd file of fabio's proxy.auth scheme, which the tag does not name; route NOT converted so it does not become public",
        ));
        return None;
    }
    if !route.deny.is_empty() {
        findings.push(Finding::new(
            tag,
            format!("deny={}", sources(&route.deny)),
            "Traefik has no IP deny-list middleware; route NOT converted so the denied networks are not let in (use ipAllowList with the complement, or a plugin)",
        ));
        return None;
    }
    let mut host = route.host.clone();
    let mut path = route.path.clone();
    let uses_dc = host.as_ref().is_some_and(|h| h.text.contains(DATACENTER))
        || path.as_str().contains(DATACENTER);
    if uses_dc {
        match &options.datacenter {
            Some(dc) => {
                if let Some(h) = host.as_mut() {
                    h.text = substitute_dc(&h.text, &dc.to_lowercase());
                }
                path = match path {
                    PathMatch::Prefix(p) => PathMatch::Prefix(substitute_dc(&p, dc)),
                    PathMatch::Exact(p) => PathMatch::Exact(substitute_dc(&p, dc)),
                };
            }
            None => {
                findings.push(Finding::new(
                    tag,
                    "$DC",
                    "fabio replaced $DC with the Consul datacenter; pass --datacenter to convert this route; NOT converted",
                ));
                return None;
            }
        }
    }
    if host.is_none() {
        findings.push(Finding::new(
            tag,
            "host",
            "host-less route: fabio tried host routes first, Traefik orders routers by rule length; check priorities",
        ));
    }
    if route.tls_skip_verify {
        findings.push(Finding::new(
            tag,
            "tlsskipverify=true",
            "needs a serversTransport with insecureSkipVerify (file provider) or the global serversTransport.insecureSkipVerify; Consul tags can only reference one; not set",
        ));
    }
    if let Some(name) = &route.grpc_server_name {
        findings.push(Finding::new(
            tag,
            format!("grpcservername={name}"),
            "a serversTransport serverName is needed (file provider); not set",
        ));
    }
    for bad in [&route.strip, &route.prepend].into_iter().flatten() {
        if bad.contains(',') {
            findings.push(Finding::new(
                tag,
                bad.clone(),
                "a comma would split the Traefik list value; NOT converted",
            ));
            return None;
        }
    }

    let key = ServiceKey {
        upstream: route.upstream,
        pass_host: route.host_header != Some(HostHeader::Upstream),
    };
    let svc = service_name(base, &key);
    let svc_prefix = format!("traefik.http.services.{svc}.loadbalancer");
    let entry = service_tags.entry(svc.clone()).or_default();
    let mut defs = vec![format!("{svc_prefix}.passhostheader={}", key.pass_host)];
    match key.upstream {
        UpstreamScheme::Http => {}
        UpstreamScheme::Https => defs.push(format!("{svc_prefix}.server.scheme=https")),
        UpstreamScheme::H2c => defs.push(format!("{svc_prefix}.server.scheme=h2c")),
    }
    if let Some(port) = service.port {
        defs.push(format!("{svc_prefix}.server.port={port}"));
    }
    for d in defs {
        if !entry.contains(&d) {
            entry.push(d);
        }
    }

    let mut out = Vec::new();
    let mut middlewares = Vec::new();
    let mw = |suffix: &str| format!("{id}-{suffix}");
    if !route.allow.is_empty() {
        let name = mw("allow");
        out.push(format!(
            "traefik.http.middlewares.{name}.ipallowlist.sourcerange={}",
            sources(&route.allow)
        ));
        middlewares.push(name);
    }
    if let Some(redirect) = &route.redirect {
        let (regex, replacement) =
            redirect_regex(redirect, route.strip.as_deref(), route.prepend.as_deref());
        let (permanent, note) = permanence(redirect.code);
        if let Some(note) = note {
            findings.push(Finding::new(
                tag,
                format!("redirect={}", redirect.code),
                note,
            ));
        }
        let name = mw("redirect");
        out.push(format!(
            "traefik.http.middlewares.{name}.redirectregex.regex={regex}"
        ));
        out.push(format!(
            "traefik.http.middlewares.{name}.redirectregex.replacement={replacement}"
        ));
        out.push(format!(
            "traefik.http.middlewares.{name}.redirectregex.permanent={permanent}"
        ));
        middlewares.push(name);
    } else {
        if let Some(strip) = route.strip.as_deref().filter(|s| !s.is_empty()) {
            let name = mw("strip");
            out.push(format!(
                "traefik.http.middlewares.{name}.stripprefix.prefixes={strip}"
            ));
            middlewares.push(name);
        }
        if let Some(prepend) = route.prepend.as_deref().filter(|s| !s.is_empty()) {
            let name = mw("prepend");
            out.push(format!(
                "traefik.http.middlewares.{name}.addprefix.prefix={prepend}"
            ));
            middlewares.push(name);
        }
        if let Some(HostHeader::Name(h)) = &route.host_header {
            let name = mw("host");
            out.push(format!(
                "traefik.http.middlewares.{name}.headers.customrequestheaders.Host={h}"
            ));
            middlewares.push(name);
            if route.upstream == UpstreamScheme::Https {
                findings.push(Finding::new(
                    tag,
                    format!("host={h}"),
                    "fabio also used it as the TLS server name; that needs a serversTransport serverName (file provider); only the Host header is set",
                ));
            }
        }
    }

    let rule = http_rule(host.as_ref(), &path);
    let routers: Vec<(String, &str, bool)> = match route.scheme {
        Scheme::Http => vec![(id.to_string(), options.web_entrypoint.as_str(), false)],
        Scheme::Https => vec![(id.to_string(), options.websecure_entrypoint.as_str(), true)],
        Scheme::Any => vec![
            (id.to_string(), options.web_entrypoint.as_str(), false),
            (
                format!("{id}-tls"),
                options.websecure_entrypoint.as_str(),
                true,
            ),
        ],
    };
    for (name, entrypoint, tls) in routers {
        let r = format!("traefik.http.routers.{name}");
        out.push(format!("{r}.rule={rule}"));
        out.push(format!("{r}.entrypoints={entrypoint}"));
        if tls {
            out.push(format!("{r}.tls=true"));
            if let Some(resolver) = &options.cert_resolver {
                out.push(format!("{r}.tls.certresolver={resolver}"));
            }
        }
        out.push(format!("{r}.service={svc}"));
        if !middlewares.is_empty() {
            out.push(format!("{r}.middlewares={}", middlewares.join(",")));
        }
    }
    Some(out)
}

fn convert_tcp(
    tag: &str,
    id: &str,
    route: &TcpRoute,
    options: &ConvertOptions,
    findings: &mut Vec<Finding>,
) -> Option<Vec<String>> {
    if !route.deny.is_empty() {
        findings.push(Finding::new(
            tag,
            format!("deny={}", sources(&route.deny)),
            "Traefik has no IP deny-list middleware; route NOT converted so the denied networks are not let in",
        ));
        return None;
    }
    if route.proxy_protocol {
        findings.push(Finding::new(
            tag,
            "pxyproto=true",
            "Traefik v3 sends PROXY protocol through a TCP serversTransport (file provider); not set",
        ));
    }
    let r = format!("traefik.tcp.routers.{id}");
    let mut out = Vec::new();
    match &route.listen {
        TcpListen::Port(port) | TcpListen::Dynamic { port, .. } => {
            let ep = options.tcp_entrypoint.replace("{port}", &port.to_string());
            findings.push(Finding::new(
                tag,
                format!(":{port}"),
                format!(
                    "needs a Traefik TCP entry point `{ep}` on :{port} in the static configuration"
                ),
            ));
            out.push(format!("{r}.rule=HostSNI(`*`)"));
            out.push(format!("{r}.entrypoints={ep}"));
        }
        TcpListen::Sni(host) => {
            if host.text.contains(DATACENTER) {
                findings.push(Finding::new(
                    tag,
                    "$DC",
                    "pass --datacenter to convert this route; NOT converted",
                ));
                return None;
            }
            out.push(format!("{r}.rule={}", host_rule(host, true)));
            out.push(format!("{r}.entrypoints={}", options.websecure_entrypoint));
            out.push(format!("{r}.tls.passthrough=true"));
        }
    }
    if !route.allow.is_empty() {
        let name = format!("{id}-allow");
        out.push(format!(
            "traefik.tcp.middlewares.{name}.ipallowlist.sourcerange={}",
            sources(&route.allow)
        ));
        out.push(format!("{r}.middlewares={name}"));
    }
    Some(out)
}

/// Converts every legacy tag of a service.
pub(crate) fn convert_service(service: ServiceInput<'_>, options: &ConvertOptions) -> Conversion {
    let mut parsed: Vec<_> = service.tags.iter().filter_map(|t| parse_tag(t)).collect();
    parsed.sort_by(|a, b| a.tag.cmp(&b.tag));
    parsed.dedup_by(|a, b| a.tag == b.tag);

    let base = sanitize(service.name);
    let mut findings = Vec::new();
    let mut per_tag = Vec::new();
    let mut service_tags: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for p in &parsed {
        findings.extend(p.findings.iter().cloned());
        let Some(route) = &p.route else { continue };
        let id = format!("{base}-{}", name_hash(&p.tag));
        let produced = match route {
            Route::Http(r) => convert_http(
                &p.tag,
                &id,
                &base,
                r,
                service,
                options,
                &mut findings,
                &mut service_tags,
            ),
            Route::Tcp(r) => convert_tcp(&p.tag, &id, r, options, &mut findings),
        };
        if let Some(tags) = produced {
            per_tag.push((p.tag.clone(), tags));
        }
    }
    let mut all = Tags::default();
    if !per_tag.is_empty() {
        all.push("traefik.enable=true".to_string());
    }
    for defs in service_tags.values() {
        for d in defs {
            all.push(d.clone());
        }
    }
    for (_, tags) in &per_tag {
        for t in tags {
            all.push(t.clone());
        }
    }
    // A converted route also needs the shared tags (enable, its service) to work.
    let shared: Vec<String> = all
        .list
        .iter()
        .filter(|t| t.starts_with("traefik.enable") || t.starts_with("traefik.http.services."))
        .cloned()
        .collect();
    for (_, tags) in per_tag.iter_mut() {
        let is_http = tags.iter().any(|t| t.starts_with("traefik.http."));
        let svc_names: Vec<String> = tags
            .iter()
            .filter_map(|t| {
                t.split_once(".service=")
                    .map(|(_, s)| format!("traefik.http.services.{s}."))
            })
            .collect();
        for s in &shared {
            if s.starts_with("traefik.enable")
                || (is_http && svc_names.iter().any(|n| s.starts_with(n.as_str())))
            {
                tags.push(s.clone());
            }
        }
    }
    Conversion {
        tags: all.list,
        per_tag,
        findings,
    }
}

// === Reading rules back ===

/// The host matcher of a Traefik rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostMatcher {
    /// `Host(`h`)`.
    Host(String),
    /// `HostRegexp(`re`)`.
    HostRegexp(String),
    /// `HostSNI(`h`)`.
    HostSni(String),
    /// `HostSNIRegexp(`re`)`.
    HostSniRegexp(String),
}

/// The path matcher of a Traefik rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PathMatcher {
    /// `PathPrefix(`p`)`.
    Prefix(String),
    /// `Path(`p`)`.
    Exact(String),
}

/// A rule of the shape this module writes: matchers joined by `&&`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ParsedRule {
    /// The host matcher, if any.
    pub host: Option<HostMatcher>,
    /// The path matcher, if any.
    pub path: Option<PathMatcher>,
}

/// Parses a rule written by this module (`Host(`a`) && PathPrefix(`/b`)` and the like). It is
/// not a full Traefik rule parser: `||`, `!`, parentheses and other matchers are errors.
pub fn parse_rule(rule: &str) -> Result<ParsedRule, String> {
    let mut out = ParsedRule::default();
    for part in rule.split(" && ") {
        let part = part.trim();
        let (name, rest) = part
            .split_once("(`")
            .ok_or_else(|| format!("expected Matcher(`..`) in {part:?}"))?;
        let arg = rest
            .strip_suffix("`)")
            .ok_or_else(|| format!("unterminated matcher {part:?}"))?;
        if arg.contains('`') {
            return Err(format!("one argument expected in {part:?}"));
        }
        let arg = arg.to_string();
        match name {
            "Host" | "HostRegexp" | "HostSNI" | "HostSNIRegexp" if out.host.is_some() => {
                return Err("two host matchers".into());
            }
            "Path" | "PathPrefix" if out.path.is_some() => return Err("two path matchers".into()),
            "Host" => out.host = Some(HostMatcher::Host(arg)),
            "HostRegexp" => out.host = Some(HostMatcher::HostRegexp(arg)),
            "HostSNI" => out.host = Some(HostMatcher::HostSni(arg)),
            "HostSNIRegexp" => out.host = Some(HostMatcher::HostSniRegexp(arg)),
            "PathPrefix" => out.path = Some(PathMatcher::Prefix(arg)),
            "Path" => out.path = Some(PathMatcher::Exact(arg)),
            other => return Err(format!("unknown matcher {other}")),
        }
    }
    Ok(out)
}
