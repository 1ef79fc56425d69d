//! Fabio `urlprefix-` tags, parsed as fabio's code does (`registry/consul/routecmd.go`
//! `parseURLPrefixTag` + `routecmd.build`, `route/route.go` `addTarget`,
//! `route/access_rules.go`), per `contracts/URLPREFIX.md`.

use std::collections::BTreeMap;
use std::net::IpAddr;

use ipnet::IpNet;

use super::{
    DATACENTER, Finding, Grammar, HostHeader, HostKind, HostPattern, HttpRoute, ParsedTag,
    PathMatch, Redirect, Route, Scheme, TcpListen, TcpRoute, UpstreamScheme,
};

/// fabio's default `registry.consul.tagprefix`.
pub(crate) const PREFIX: &str = "urlprefix-";

pub(crate) fn is_urlprefix(tag: &str) -> bool {
    tag.trim().starts_with(PREFIX)
}

/// Go's `os.Expand` with a mapping that knows only `DC`: `$DC`/`${DC}` stay explicit as
/// [`DATACENTER`], every other variable becomes empty. Returns literal and variable pieces so the
/// caller can lower-case only the literals.
fn expand(s: &str) -> Vec<(bool, String)> {
    fn special(b: u8) -> bool {
        matches!(
            b,
            b'*' | b'#' | b'$' | b'@' | b'!' | b'?' | b'-' | b'0'..=b'9'
        )
    }
    fn alnum(b: u8) -> bool {
        b == b'_' || b.is_ascii_alphanumeric()
    }
    // (name, width) as Go's getShellName; name None with width > 0 is bad syntax that is eaten.
    fn shell_name(s: &[u8]) -> (Option<&[u8]>, usize) {
        if s[0] == b'{' {
            if s.len() > 2 && special(s[1]) && s[2] == b'}' {
                return (Some(&s[1..2]), 3);
            }
            for i in 1..s.len() {
                if s[i] == b'}' {
                    if i == 1 {
                        return (None, 2);
                    }
                    return (Some(&s[1..i]), i + 1);
                }
            }
            return (None, 1);
        }
        if special(s[0]) {
            return (Some(&s[0..1]), 1);
        }
        let mut i = 0;
        while i < s.len() && alnum(s[i]) {
            i += 1;
        }
        (if i == 0 { None } else { Some(&s[..i]) }, i)
    }

    let bytes = s.as_bytes();
    let mut out: Vec<(bool, String)> = Vec::new();
    let mut lit = Vec::new();
    let mut j = 0;
    while j < bytes.len() {
        if bytes[j] == b'$' && j + 1 < bytes.len() {
            let (name, w) = shell_name(&bytes[j + 1..]);
            match name {
                None if w > 0 => {}
                None => lit.push(b'$'),
                Some(n) => {
                    if n == b"DC" {
                        out.push((false, String::from_utf8_lossy(&lit).into_owned()));
                        lit.clear();
                        out.push((true, DATACENTER.to_string()));
                    }
                }
            }
            j += w + 1;
            continue;
        }
        lit.push(bytes[j]);
        j += 1;
    }
    // Splitting happened only at ASCII bytes, so every piece is still valid UTF-8.
    out.push((false, String::from_utf8_lossy(&lit).into_owned()));
    out
}

fn expand_lower(s: &str) -> String {
    expand(s)
        .into_iter()
        .map(|(var, t)| if var { t } else { t.to_lowercase() })
        .collect()
}

fn expand_plain(s: &str) -> String {
    expand(s).into_iter().map(|(_, t)| t).collect()
}

/// Splits `host[:port]` (the port being digits after the last `:`).
pub(crate) fn split_port(host: &str) -> (&str, Option<&str>) {
    match host.rsplit_once(':') {
        Some((h, p)) if !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()) => (h, Some(p)),
        _ => (host, None),
    }
}

/// Validates a host name (without port) as fabio would route on it; returns its kind.
pub(crate) fn host_kind(host: &str, grammar: Grammar) -> Result<HostKind, String> {
    let mut rest = host.replace(DATACENTER, "dc");
    // Placeholders are opaque interpolations: they stand for host characters.
    while let Some(start) = rest.find(super::PLACEHOLDER_OPEN) {
        match rest[start..].find(super::PLACEHOLDER_CLOSE) {
            Some(end) => rest.replace_range(
                start..start + end + super::PLACEHOLDER_CLOSE.len_utf8(),
                "x",
            ),
            None => return Err("unterminated placeholder".into()),
        }
    }
    if rest.is_empty() {
        return Err("empty host".into());
    }
    let mut kind = HostKind::Exact;
    for c in rest.chars() {
        match c {
            'a'..='z' | '0'..='9' | '-' | '.' | '_' => {}
            '*' => {
                kind = if grammar == Grammar::Hind {
                    HostKind::Wildcard
                } else {
                    HostKind::Glob
                };
            }
            '?' if grammar == Grammar::UrlPrefix => kind = HostKind::Glob,
            other => return Err(format!("character {other:?} is not valid in a host name")),
        }
    }
    if kind == HostKind::Wildcard
        && rest
            .split('.')
            .any(|label| label.contains('*') && label != "*")
    {
        return Err("a Caddy wildcard must be a whole label (`*.example.com`)".into());
    }
    Ok(kind)
}

/// Characters that cannot go into a Traefik rule string or a Consul tag safely.
/// The host pattern of a route (`None` for an empty host, which matches any), or why `host` cannot
/// be routed on.
pub(crate) fn host_pattern(host: &str, grammar: Grammar) -> Result<Option<HostPattern>, String> {
    if host.is_empty() {
        return Ok(None);
    }
    let kind = host_kind(host, grammar)?;
    Ok(Some(HostPattern {
        text: host.to_owned(),
        kind,
    }))
}

/// A tag's port as a number, or the finding that it is out of range.
fn port_number(tag: &str, port: &str) -> Result<u16, Finding> {
    port.parse()
        .map_err(|_| Finding::new(tag, "host", format!("port {port:?} is out of range")))
}

/// A port the converted route cannot keep (Traefik's `Host()` ignores ports): `Some(number)`,
/// with a finding saying what `why(port)` explains, or `None` for the grammar's own `default`.
/// An out-of-range port is the refusal.
pub(crate) fn moved_port(
    tag: &str,
    port: &str,
    default: Option<u16>,
    findings: &mut Vec<Finding>,
    why: impl FnOnce(&str) -> String,
) -> Result<Option<u16>, Finding> {
    let n = port_number(tag, port)?;
    if Some(n) == default {
        return Ok(None);
    }
    findings.push(Finding::new(tag, format!("port :{port}"), why(port)));
    Ok(Some(n))
}

pub(crate) fn path_problem(path: &str) -> Option<String> {
    path.chars()
        .find(|c| *c == '`' || c.is_control())
        .map(|c| format!("character {c:?} cannot be written in a Traefik rule"))
}

/// fabio's `parseAccessRule` for one of `allow`/`deny`: elements parsed before an invalid one are
/// kept (fabio appends as it goes and stops at the first error).
fn access_list(tag: &str, key: &str, value: &str, findings: &mut Vec<Finding>) -> Vec<IpNet> {
    let mut nets = Vec::new();
    for item in value.split(',') {
        let Some((kind, data)) = item.split_once(':') else {
            findings.push(Finding::new(
                tag,
                format!("{key}={value}"),
                format!(
                    "element {item:?} is not `ip:<addr>`; fabio stops at it, so only the {} element(s) before it apply",
                    nets.len()
                ),
            ));
            return nets;
        };
        if !kind.trim().eq_ignore_ascii_case("ip") {
            findings.push(Finding::new(
                tag,
                format!("{key}={value}"),
                format!(
                    "element type {:?} is unknown to fabio (only `ip:`); fabio ignores it",
                    kind.trim()
                ),
            ));
            continue;
        }
        let data = data.trim();
        let parsed = if data.contains('/') {
            data.parse::<IpNet>().map(|n| n.trunc()).ok()
        } else {
            data.parse::<IpAddr>().ok().map(|ip| match ip {
                IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                    Some(v4) => IpNet::from(IpAddr::V4(v4)),
                    None => IpNet::from(ip),
                },
                IpAddr::V4(_) => IpNet::from(ip),
            })
        };
        match parsed {
            Some(net) => nets.push(net),
            None => {
                findings.push(Finding::new(
                    tag,
                    format!("{key}={value}"),
                    format!(
                        "{data:?} is not an IP or CIDR; fabio stops at it, so only the {} element(s) before it apply",
                        nets.len()
                    ),
                ));
                return nets;
            }
        }
    }
    nets
}

/// Parses one `urlprefix-` tag.
pub(crate) fn parse(tag: &str) -> ParsedTag {
    let mut findings = Vec::new();
    let done = |route, findings| ParsedTag::new(tag, Grammar::UrlPrefix, route, findings);
    let refuse = |findings, finding| ParsedTag::refused(tag, Grammar::UrlPrefix, findings, finding);

    let body = tag.trim();
    let body = body.strip_prefix(PREFIX).unwrap_or(body).trim();
    // Only U+0020 separates the route from its options (a tab does not).
    let (route_text, opts_text) = match body.split_once(' ') {
        Some((r, o)) => (r, o),
        None => (body, ""),
    };
    if route_text.is_empty() {
        return refuse(
            findings,
            Finding::new(
                tag,
                "route",
                "empty route: fabio rejects it (errInvalidPrefix)",
            ),
        );
    }

    // routecmd.build: consumed options first, the rest go to the opts map (last one wins).
    let mut proto: Option<&str> = None;
    let mut weight: Option<String> = None;
    let mut redirect_raw: Option<(String, String)> = None;
    let mut opts: BTreeMap<&str, &str> = BTreeMap::new();
    for opt in opts_text.split_whitespace() {
        if let Some(p) = opt.strip_prefix("proto=")
            && matches!(p, "tcp" | "https" | "grpc" | "grpcs")
        {
            proto = Some(p);
        } else if let Some(w) = opt.strip_prefix("weight=") {
            weight = Some(w.to_string());
        } else if let Some(r) = opt.strip_prefix("redirect=") {
            let parts: Vec<&str> = r.split(',').collect();
            if parts.len() == 2 {
                redirect_raw = Some((parts[0].to_string(), parts[1].to_string()));
            } else {
                findings.push(Finding::new(
                    tag,
                    opt,
                    "not `redirect=<code>,<url>` with exactly one comma: fabio drops it and proxies normally",
                ));
            }
        } else {
            let (k, v) = opt.split_once('=').unwrap_or((opt, ""));
            opts.insert(k, v);
        }
    }
    if let Some(w) = &weight {
        findings.push(Finding::new(
            tag,
            format!("weight={w}"),
            "a fixed traffic share needs a Traefik weighted service (file provider), which Consul Catalog tags cannot define; converted without the weight",
        ));
    }
    if let Some(r) = opts.get("register") {
        findings.push(Finding::new(
            tag,
            format!("register={r}"),
            "fabio registers itself in Consul under this name; Traefik has no equivalent (register the name yourself if clients resolve it); ignored",
        ));
    }
    let pxy = opts.get("pxyproto").is_some_and(|v| *v == "true");

    let mut allow = Vec::new();
    let mut deny = Vec::new();
    match (opts.get("allow"), opts.get("deny")) {
        (Some(a), Some(d)) if !a.is_empty() && !d.is_empty() => findings.push(Finding::new(
            tag,
            format!("allow={a} deny={d}"),
            "fabio rejects allow and deny on one route and then applies no access rule at all; converted without either",
        )),
        (a, d) => {
            if let Some(a) = a.filter(|a| !a.is_empty()) {
                allow = access_list(tag, "allow", a, &mut findings);
            }
            if let Some(d) = d.filter(|d| !d.is_empty()) {
                deny = access_list(tag, "deny", d, &mut findings);
            }
        }
    }

    if proto == Some("tcp") {
        let listen = if let Some(port) = route_text.strip_prefix(':') {
            match port.parse::<u16>() {
                Ok(p) if p > 0 => TcpListen::Port(p),
                _ => {
                    return refuse(
                        findings,
                        Finding::new(tag, "route", format!("{route_text:?} is not a TCP port")),
                    );
                }
            }
        } else {
            // `host/` or a bare host: SNI; `IP:PORT`: fabio's tcp-dynamic listener.
            let host = route_text.split_once('/').map_or(route_text, |(h, _)| h);
            let (h, port) = split_port(host);
            if let (Ok(_), Some(p)) = (h.parse::<IpAddr>(), port) {
                match p.parse::<u16>() {
                    Ok(port) if port > 0 => TcpListen::Dynamic {
                        addr: h.to_string(),
                        port,
                    },
                    _ => {
                        return refuse(
                            findings,
                            Finding::new(tag, "route", format!("{p:?} is not a TCP port")),
                        );
                    }
                }
            } else {
                let host = if route_text.contains('/') {
                    expand_lower(host)
                } else {
                    host.to_lowercase()
                };
                match host_kind(&host, Grammar::UrlPrefix) {
                    Ok(kind) => TcpListen::Sni(HostPattern { text: host, kind }),
                    Err(why) => {
                        return refuse(findings, Finding::new(tag, "host", why));
                    }
                }
            }
        };
        let route = TcpRoute {
            listen,
            proxy_protocol: pxy,
            allow,
            deny,
            weight,
            register: opts.get("register").map(|s| s.to_string()),
        };
        return done(Some(Route::Tcp(route)), findings);
    }
    if pxy {
        findings.push(Finding::new(
            tag,
            "pxyproto=true",
            "only applies to TCP routes; fabio ignores it here",
        ));
    }

    if route_text.starts_with(':') {
        return refuse(
            findings,
            Finding::new(
                tag,
                "route",
                "a `:PORT` route without proto=tcp is an HTTP route for the literal host `:PORT`, which no request matches; not converted",
            ),
        );
    }

    // Host and path, as parseURLPrefixTag: bare hosts verbatim (no `$` expansion), else split at the
    // first `/` with `$DC` expanded in both and the host lower-cased.
    let (host_raw, path) = match route_text.split_once('/') {
        None => (route_text.to_lowercase(), "/".to_string()),
        Some((h, p)) => (expand_lower(h), format!("/{}", expand_plain(p))),
    };
    if let Some(why) = path_problem(&path) {
        return refuse(findings, Finding::new(tag, "path", why));
    }
    let (host_name, port) = split_port(&host_raw);
    let mut scheme = Scheme::Any;
    let mut alt_port = None;
    match port {
        Some("443") => scheme = Scheme::Https,
        Some("80") => scheme = Scheme::Http,
        Some(p) => match moved_port(tag, p, None, &mut findings, |p| {
            format!(
                "fabio matched only requests whose Host header carried :{p}; Traefik's Host() ignores the port, so the route answers on the web and websecure entry points (add an entry point on :{p} and restrict the router to it if needed)"
            )
        }) {
            Ok(n) => alt_port = n,
            Err(finding) => return refuse(findings, finding),
        },
        None => {}
    }
    let host = match host_pattern(host_name, Grammar::UrlPrefix) {
        Ok(host) => host,
        Err(why) => {
            return refuse(findings, Finding::new(tag, "host", why));
        }
    };
    if opts.get("proto") == Some(&"http") && scheme == Scheme::Any {
        // Internet Archive's meaning (HIND.md §3, URLPREFIX.md §5): served over plain HTTP only.
        scheme = Scheme::Http;
    }
    let mut route = HttpRoute::new(host, PathMatch::Prefix(path), scheme);
    route.alt_port = alt_port;
    route.allow = allow;
    route.deny = deny;
    route.weight = weight;
    route.upstream = match proto {
        Some("https") | Some("grpcs") => UpstreamScheme::Https,
        Some("grpc") => UpstreamScheme::H2c,
        _ => UpstreamScheme::Http,
    };

    for (k, v) in &opts {
        match *k {
            "strip" => route.strip = Some(v.to_string()),
            "prepend" => route.prepend = Some(v.to_string()),
            "tlsskipverify" => route.tls_skip_verify = *v == "true",
            "host" if !v.is_empty() => {
                route.host_header = Some(if *v == "dst" {
                    HostHeader::Upstream
                } else {
                    HostHeader::Name(v.to_string())
                })
            }
            "register" => route.register = Some(v.to_string()),
            "auth" if !v.is_empty() => route.auth = Some(v.to_string()),
            "grpcservername" => route.grpc_server_name = Some(v.to_string()),
            "allow" | "deny" | "pxyproto" | "host" | "auth" => {}
            "proto" if *v == "http" => {}
            "proto" => findings.push(Finding::new(
                tag,
                format!("proto={v}"),
                "fabio knows proto=tcp|https|grpc|grpcs; any other value has no effect; ignored",
            )),
            "redirect" => {}
            other => findings.push(Finding::new(
                tag,
                if v.is_empty() {
                    other.to_string()
                } else {
                    format!("{other}={v}")
                },
                "unknown option: fabio keeps it and ignores it; ignored",
            )),
        }
    }
    for (name, value) in [("strip", &route.strip), ("prepend", &route.prepend)] {
        if let Some(v) = value
            && let Some(why) = path_problem(v)
        {
            return refuse(findings, Finding::new(tag, format!("{name}={v}"), why));
        }
    }

    if let Some((code, target)) = redirect_raw {
        match code.parse::<u16>() {
            Ok(c) if (300..=399).contains(&c) => {
                if target.chars().any(|c| c == '`' || c.is_control()) {
                    return refuse(
                        findings,
                        Finding::new(
                            tag,
                            format!("redirect={code},{target}"),
                            "target URL has characters a tag cannot carry",
                        ),
                    );
                }
                route.redirect = Some(Redirect { code: c, target });
            }
            _ => {
                return refuse(
                    findings,
                    Finding::new(
                        tag,
                        format!("redirect={code},{target}"),
                        "code is not 300-399: fabio then PROXIES to the URL instead of redirecting; Traefik tags cannot proxy to an arbitrary URL; not converted",
                    ),
                );
            }
        }
    }
    done(Some(Route::Http(route)), findings)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pieces(s: &str) -> String {
        expand(s).into_iter().map(|(_, t)| t).collect()
    }

    #[test]
    fn expand_keeps_dc_explicit_and_blanks_other_variables_like_go_os_expand() {
        assert_eq!(pieces("${DC}.example.com"), "${DC}.example.com");
        assert_eq!(pieces("$DC.example.com"), "${DC}.example.com");
        assert_eq!(pieces("$X.a"), ".a");
        assert_eq!(pieces("${X}a"), "a");
        assert_eq!(pieces("a$"), "a$");
        assert_eq!(pieces("a${}b"), "ab");
        assert_eq!(pieces("a${b"), "ab");
        assert_eq!(pieces("a$/b"), "a$/b");
        assert_eq!(pieces("a$1b"), "ab");
    }
}
