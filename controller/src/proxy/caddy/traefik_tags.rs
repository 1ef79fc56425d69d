//! Pure: one instance's Traefik Consul Catalog tags → Caddy [`Route`]s (`contracts/TRAEFIK.md`
//! §6 for the tag syntax). Option names are case-insensitive as in Traefik's label parser;
//! router, service, middleware and header names keep their case.

use std::collections::BTreeMap;

use ipnet::IpNet;

use super::routes::{
    Middleware, Route, RouteSettings, Source, UpstreamScheme, dial, matchers_of_rule, normalize,
};
use crate::consul::ServiceEntry;

type Options = BTreeMap<String, String>;

/// The `traefik.*` tags of one instance, grouped.
#[derive(Default)]
struct TraefikTags {
    enable: Option<bool>,
    routers: BTreeMap<String, Options>,
    services: BTreeMap<String, Options>,
    middlewares: BTreeMap<String, Options>,
    /// `traefik.tcp.*` / `traefik.udp.*` router and service names.
    non_http: Vec<String>,
}

fn parse_tags(tags: &[String], report: &mut impl FnMut(&str, String)) -> TraefikTags {
    let mut out = TraefikTags::default();
    for tag in tags {
        let Some((key, value)) = tag.split_once('=') else {
            continue;
        };
        let key = key.trim();
        if !key.to_ascii_lowercase().starts_with("traefik.") {
            continue;
        }
        let parts: Vec<&str> = key.split('.').collect();
        let kind: Vec<String> = parts
            .iter()
            .take(3)
            .map(|p| p.to_ascii_lowercase())
            .collect();
        match (
            kind.get(1).map(String::as_str),
            kind.get(2).map(String::as_str),
        ) {
            (Some("enable"), None) => out.enable = Some(value.trim().eq_ignore_ascii_case("true")),
            (Some("http"), Some(group @ ("routers" | "services" | "middlewares")))
                if parts.len() > 4 =>
            {
                let name = parts[3].to_string();
                let option = option_key(group, &parts[4..]);
                let map = match group {
                    "routers" => &mut out.routers,
                    "services" => &mut out.services,
                    _ => &mut out.middlewares,
                };
                map.entry(name)
                    .or_default()
                    .insert(option, value.to_string());
            }
            (Some("tcp" | "udp"), _) => {
                let name = parts.get(..4).map(|p| p.join(".")).unwrap_or_default();
                if !out.non_http.contains(&name) {
                    out.non_http.push(name);
                }
            }
            _ => report(tag, "not a Traefik tag Caddy reads; ignored".into()),
        }
    }
    out
}

/// Lower-cases an option path, keeping the header name of `headers.custom*headers.<Name>`.
fn option_key(group: &str, rest: &[&str]) -> String {
    let mut lowered: Vec<String> = rest.iter().map(|p| p.to_ascii_lowercase()).collect();
    let custom_header = group == "middlewares"
        && lowered.len() == 3
        && lowered[0] == "headers"
        && lowered[1].starts_with("custom");
    if custom_header {
        lowered[2] = rest[2].to_string();
    }
    lowered.join(".")
}

/// The routes of one instance's Traefik tags (and the default rule).
pub(crate) fn traefik_routes(
    service: &str,
    entry: &ServiceEntry,
    settings: &RouteSettings,
    report: &mut impl FnMut(&str, String),
) -> Vec<Route> {
    let tags = parse_tags(&entry.service.tags, report);
    let exposed = tags.enable.unwrap_or(settings.exposed_by_default);
    if !exposed {
        if !tags.routers.is_empty() {
            report(
                "traefik.enable",
                "routers are defined but the service is not exposed (traefik.enable=true is missing and exposedByDefault is off); not routed".into(),
            );
        }
        return Vec::new();
    }
    for name in &tags.non_http {
        report(
            name,
            "TCP/UDP routers are served by Traefik only; Caddy's stock build has no layer4 app"
                .into(),
        );
    }
    let mut routers = tags.routers.clone();
    if routers.is_empty() {
        if !tags.non_http.is_empty() {
            return Vec::new();
        }
        // Traefik's default router: named after the service, with the default rule.
        routers.insert(normalize(service), Options::new());
    }
    let mut out = Vec::new();
    for (name, options) in &routers {
        match router_route(service, entry, settings, &tags, name, options) {
            Ok(route) => out.push(route),
            Err(reason) => report(&format!("router {name}"), format!("{reason}; not routed")),
        }
    }
    out
}

fn router_route(
    service: &str,
    entry: &ServiceEntry,
    settings: &RouteSettings,
    tags: &TraefikTags,
    name: &str,
    options: &Options,
) -> Result<Route, String> {
    let default_rule = format!("Host(`{}.{}`)", normalize(service), settings.domain_suffix);
    let rule = options.get("rule").unwrap_or(&default_rule);
    let (host, path) = matchers_of_rule(rule).map_err(|e| format!("rule {rule:?}: {e}"))?;
    let entry_points = match options.get("entrypoints") {
        None => settings.entry_points.clone(),
        Some(list) => {
            let mut eps = Vec::new();
            for ep in list.split(',').map(str::trim).filter(|s| !s.is_empty()) {
                if !settings.entry_points.iter().any(|e| e == ep) {
                    return Err(format!("entry point {ep:?} does not exist"));
                }
                eps.push(ep.to_string());
            }
            eps
        }
    };
    let mut entry_points = entry_points;
    entry_points.sort();
    entry_points.dedup();
    if entry_points.is_empty() {
        return Err("no entry point".into());
    }
    let priority = match options.get("priority") {
        None => 0,
        Some(p) => p
            .trim()
            .parse::<i64>()
            .map_err(|_| format!("priority {p:?} is not an integer"))?,
    };

    // The service: named by the router, or the only one defined, or the default one.
    let svc_options = match options.get("service") {
        Some(s) => match tags.services.get(s.trim()) {
            Some(o) => o.clone(),
            None if tags.services.is_empty() && s.trim() == normalize(service) => Options::new(),
            None => {
                return Err(format!(
                    "service {s:?} is not defined by this service's tags"
                ));
            }
        },
        None => match tags.services.len() {
            0 => Options::new(),
            1 => tags.services.values().next().cloned().unwrap_or_default(),
            _ => return Err("several services are defined and the router names none".into()),
        },
    };
    let (upstream_scheme, pass_host_header, port) = load_balancer(&svc_options, entry)?;

    let mut middlewares = Vec::new();
    if let Some(list) = options.get("middlewares") {
        for m in list.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            let local = m.strip_suffix("@consulcatalog").unwrap_or(m);
            // Traefik's opt-in tag for a policy set (`<name>@consul`, the KV provider): the
            // same tag opts the service in on both proxies.
            if let Some(set) = local.strip_suffix("@consul")
                && settings.policy_sets.contains(set)
            {
                middlewares.push(Middleware::PolicySet(set.to_string()));
                continue;
            }
            if local.contains('@') {
                return Err(format!(
                    "middleware {m:?} lives in another provider, which Caddy does not read"
                ));
            }
            let opts = tags
                .middlewares
                .get(local)
                .ok_or_else(|| format!("middleware {m:?} is not defined"))?;
            middlewares.extend(middleware(local, opts)?);
        }
    }
    Ok(Route {
        service: service.to_string(),
        source: if !tags.routers.contains_key(name) {
            Source::Default
        } else {
            Source::Traefik(name.to_string())
        },
        entry_points,
        host,
        path,
        middlewares,
        upstream_scheme,
        pass_host_header,
        upstreams: vec![dial(entry, port)],
        priority,
    })
}

fn load_balancer(
    options: &Options,
    entry: &ServiceEntry,
) -> Result<(UpstreamScheme, bool, u16), String> {
    let mut scheme = UpstreamScheme::Http;
    let mut pass_host = true;
    let mut port = entry.service.port;
    for (key, value) in options {
        let value = value.trim();
        match key.as_str() {
            "loadbalancer.server.scheme" => {
                scheme = match value.to_ascii_lowercase().as_str() {
                    "http" => UpstreamScheme::Http,
                    "https" => UpstreamScheme::Https,
                    "h2c" => UpstreamScheme::H2c,
                    other => {
                        return Err(format!("server scheme {other:?} is not http, https or h2c"));
                    }
                }
            }
            "loadbalancer.passhostheader" => pass_host = parse_bool(key, value)?,
            "loadbalancer.server.port" => {
                port = value
                    .parse()
                    .map_err(|_| format!("server port {value:?} is not a port"))?;
            }
            other => {
                return Err(format!(
                    "service option {other} has no Caddy equivalent the operator writes"
                ));
            }
        }
    }
    Ok((scheme, pass_host, port))
}

fn parse_bool(key: &str, value: &str) -> Result<bool, String> {
    match value.to_ascii_lowercase().as_str() {
        "true" => Ok(true),
        "false" => Ok(false),
        _ => Err(format!("{key}={value:?} is not true or false")),
    }
}

/// Caddy expands `{...}` placeholders in the values it is given; a literal one would change
/// meaning, so such values are refused rather than rewritten.
fn no_placeholder(what: &str, value: &str) -> Result<(), String> {
    if value.contains(['{', '}']) {
        return Err(format!(
            "{what} {value:?} contains {{ or }}, which Caddy reads as a placeholder"
        ));
    }
    Ok(())
}

fn middleware(name: &str, options: &Options) -> Result<Vec<Middleware>, String> {
    let kind = options
        .keys()
        .next()
        .and_then(|k| k.split('.').next())
        .unwrap_or_default()
        .to_string();
    let unsupported = |key: &str| {
        Err(format!(
            "middleware {name}: {key} has no equivalent in Caddy's stock build"
        ))
    };
    let get = |opt: &str| options.get(&format!("{kind}.{opt}")).map(|v| v.trim());
    for key in options.keys() {
        if !key.starts_with(&format!("{kind}.")) {
            return Err(format!("middleware {name} mixes types ({kind} and {key})"));
        }
    }
    match kind.as_str() {
        "ipallowlist" => {
            if options.len() != 1 {
                return unsupported("ipallowlist.ipstrategy");
            }
            let ranges = get("sourcerange")
                .ok_or_else(|| format!("middleware {name}: sourcerange is missing"))?;
            let mut nets = Vec::new();
            for r in ranges.split(',').map(str::trim).filter(|s| !s.is_empty()) {
                let net = r
                    .parse::<IpNet>()
                    .or_else(|_| r.parse::<std::net::IpAddr>().map(IpNet::from))
                    .map_err(|_| format!("middleware {name}: {r:?} is not an IP or CIDR"))?;
                nets.push(net);
            }
            if nets.is_empty() {
                return Err(format!("middleware {name}: sourcerange is empty"));
            }
            Ok(vec![Middleware::IpAllow(nets)])
        }
        "stripprefix" => {
            let prefixes =
                get("prefixes").ok_or_else(|| format!("middleware {name}: prefixes is missing"))?;
            if options.len() != 1 || prefixes.contains(',') {
                return unsupported("stripprefix with several prefixes or forceslash");
            }
            no_placeholder("prefix", prefixes)?;
            Ok(vec![Middleware::StripPrefix(prefixes.to_string())])
        }
        "addprefix" => {
            let prefix =
                get("prefix").ok_or_else(|| format!("middleware {name}: prefix is missing"))?;
            no_placeholder("prefix", prefix)?;
            Ok(vec![Middleware::AddPrefix(prefix.to_string())])
        }
        "redirectregex" | "redirectscheme"
            if options.keys().any(|k| {
                !matches!(
                    k.split_once('.').map(|(_, o)| o),
                    Some("regex" | "replacement" | "permanent" | "scheme" | "port")
                )
            }) =>
        {
            unsupported(&kind)
        }
        "redirectregex" => {
            let regex =
                get("regex").ok_or_else(|| format!("middleware {name}: regex is missing"))?;
            let replacement = get("replacement")
                .ok_or_else(|| format!("middleware {name}: replacement is missing"))?;
            caddy_replacement(replacement, "check")
                .map_err(|e| format!("middleware {name}: {e}"))?;
            let permanent = get("permanent").map_or(Ok(false), |v| parse_bool("permanent", v))?;
            Ok(vec![Middleware::RedirectRegex {
                regex: regex.to_string(),
                replacement: replacement.to_string(),
                permanent,
            }])
        }
        "redirectscheme" => {
            let scheme = get("scheme").unwrap_or("https").to_ascii_lowercase();
            if scheme != "https" && scheme != "http" {
                return Err(format!(
                    "middleware {name}: scheme {scheme:?} is not http or https"
                ));
            }
            let port = get("port")
                .map(|p| {
                    p.parse::<u16>()
                        .map_err(|_| format!("middleware {name}: port {p:?}"))
                })
                .transpose()?;
            let permanent = get("permanent").map_or(Ok(false), |v| parse_bool("permanent", v))?;
            Ok(vec![Middleware::RedirectScheme {
                scheme,
                port,
                permanent,
            }])
        }
        "headers" => {
            let mut request = BTreeMap::new();
            let mut response = BTreeMap::new();
            for (key, value) in options {
                let Some((group, header)) =
                    key.strip_prefix("headers.").and_then(|r| r.split_once('.'))
                else {
                    return unsupported(key);
                };
                if value.chars().any(char::is_control) {
                    return Err(format!(
                        "middleware {name}: header {header} has a control character"
                    ));
                }
                no_placeholder("header value", value)?;
                match group {
                    "customrequestheaders" => request.insert(header.to_string(), value.clone()),
                    "customresponseheaders" => response.insert(header.to_string(), value.clone()),
                    _ => return unsupported(key),
                };
            }
            let mut steps = Vec::new();
            if !request.is_empty() {
                steps.push(Middleware::RequestHeaders(request));
            }
            if !response.is_empty() {
                steps.push(Middleware::ResponseHeaders(response));
            }
            Ok(steps)
        }
        other => unsupported(other),
    }
}

/// Traefik's `redirectregex.replacement` (Go `regexp.Expand`: `$1`, `${1}`, `$name`, `${name}`,
/// `$$`) → a Caddy template reading the captures of the regexp matcher `name`
/// (`{http.regexp.<name>.1}`). A literal `{` or `}` would be read as a placeholder, so it is
/// refused.
pub(crate) fn caddy_replacement(replacement: &str, name: &str) -> Result<String, String> {
    let mut out = String::new();
    let mut chars = replacement.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '{' | '}' => {
                return Err(format!(
                    "replacement {replacement:?} contains {{ or }} outside ${{...}}, which Caddy reads as a placeholder"
                ));
            }
            '$' => match chars.peek().copied() {
                Some('$') => {
                    chars.next();
                    out.push('$');
                }
                Some('{') => {
                    chars.next();
                    let mut group = String::new();
                    for g in chars.by_ref() {
                        if g == '}' {
                            break;
                        }
                        group.push(g);
                    }
                    if group.is_empty()
                        || !group.chars().all(|g| g.is_ascii_alphanumeric() || g == '_')
                    {
                        return Err(format!(
                            "replacement {replacement:?}: bad group ${{{group}}}"
                        ));
                    }
                    out.push_str(&format!("{{http.regexp.{name}.{group}}}"));
                }
                Some(g) if g.is_ascii_alphanumeric() || g == '_' => {
                    let mut group = String::new();
                    while let Some(&g) = chars.peek() {
                        if g.is_ascii_alphanumeric() || g == '_' {
                            group.push(g);
                            chars.next();
                        } else {
                            break;
                        }
                    }
                    out.push_str(&format!("{{http.regexp.{name}.{group}}}"));
                }
                // Go drops a `$` that starts no valid reference.
                _ => {}
            },
            c => out.push(c),
        }
    }
    Ok(out)
}
