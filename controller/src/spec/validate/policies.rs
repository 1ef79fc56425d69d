//! The middlewares both the entry point policy (`spec.middlewares`) and the named policy sets
//! (`spec.policies.<name>`) can hold, the refusals only an entry point can express, and the
//! options no stock proxy build has.
//!
//! Every middleware here renders for Traefik. Caddy (`proxy/caddy/policy.rs`) renders them too,
//! except what its stock build cannot express, which is refused naming the field, why and the
//! fix: silently dropping an auth or a limit would open what the operator meant to close.

use std::collections::BTreeMap;

use super::field::{Validator, is_header_name};
use crate::spec::model::{self, BasicAuth, ClientFiles, Policy};
use crate::spec::{
    Buffering, CircuitBreaker, Compress, ForwardAuth, IpAllowList, Middlewares, PolicySet,
    ProxyKind, RateLimit, Retry, UsersFrom,
};

/// Traefik's int64 ceiling for byte counts.
const MAX_BYTES: u64 = i64::MAX as u64;

/// Names a policy set may not take: the operator's own middlewares start with this.
const RESERVED_PREFIX: &str = "proxy-operator";

/// The middlewares shared by the entry point policy and the policy sets.
pub(super) struct Parts<'a> {
    pub(super) ip_allow_list: Option<&'a IpAllowList>,
    pub(super) rate_limit: Option<&'a RateLimit>,
    pub(super) forward_auth: Option<&'a ForwardAuth>,
    pub(super) circuit_breaker: Option<&'a CircuitBreaker>,
    pub(super) retry: Option<&'a Retry>,
    pub(super) buffering: Option<&'a Buffering>,
    pub(super) compress: Option<&'a Compress>,
}

/// Checks the shared middlewares under `base` (`spec.middlewares` or `spec.policies.<name>`).
pub(super) fn common(v: &mut Validator, base: &str, p: Parts<'_>, proxy: ProxyKind) -> Policy {
    let caddy_refuses = |v: &mut Validator, field: &str, why: &str| {
        if proxy == ProxyKind::Caddy {
            v.error(
                format!("{base}.{field}"),
                format!("refused with proxy: caddy: {why}"),
            );
        }
    };
    let ip_allow = p
        .ip_allow_list
        .map(|l| v.cidrs(&format!("{base}.ipAllowList.sourceRange"), &l.source_range))
        .unwrap_or_default();
    let rate_limit = p
        .rate_limit
        .map(|r| super::middlewares::rate_limit(v, &format!("{base}.rateLimit"), r, proxy));
    let forward_auth = p.forward_auth.map(|f| {
        if f.trust_forward_header {
            caddy_refuses(v, "forwardAuth.trustForwardHeader", "Caddy decides which clients' X-Forwarded-* headers to trust per server (trusted_proxies), not per forward auth, and the operator renders no trusted proxies; remove trustForwardHeader (the auth service then sees the headers Caddy sets itself) or set proxy: traefik");
        }
        forward_auth(v, &format!("{base}.forwardAuth"), f)
    });
    let circuit_breaker = p.circuit_breaker.map(|c| {
        caddy_refuses(v, "circuitBreaker", "Caddy's stock build has no circuit breaker: reverse_proxy's circuit_breaker field takes a module from the namespace http.reverse_proxy.circuit_breakers, which holds none (see `caddy list-modules`; the module http.reverse_proxy.circuit_breakers.simple from github.com/caddyserver/circuitbreaker needs a custom build); remove circuitBreaker (retry sends a request a dead instance refused to the next one) or set proxy: traefik");
        let path = format!("{base}.circuitBreaker");
        if let Err(why) = check_breaker_expression(&c.expression) {
            v.error(format!("{path}.expression"), format!("{why}; e.g. \"ResponseCodeRatio(500, 600, 0, 600) > 0.25\" or \"NetworkErrorRatio() > 0.5\""));
        }
        let mut d = |field: &str, text: &str, default: u64| {
            v.positive_duration(&format!("{path}.{field}"), text)
                .unwrap_or(std::time::Duration::from_millis(default))
        };
        model::CircuitBreaker {
            expression: c.expression.clone(),
            check_period: d("checkPeriod", &c.check_period, 100),
            fallback_duration: d("fallbackDuration", &c.fallback_duration, 10_000),
            recovery_duration: d("recoveryDuration", &c.recovery_duration, 10_000),
        }
    });
    let retry = p.retry.map(|r| {
        let path = format!("{base}.retry");
        if !(1..=100).contains(&r.attempts) {
            v.error(
                format!("{path}.attempts"),
                "must be 1 to 100 (attempts in total, the first included)",
            );
        }
        model::Retry {
            attempts: r.attempts,
            initial_interval: v
                .duration(&format!("{path}.initialInterval"), &r.initial_interval)
                .unwrap_or_default(),
        }
    });
    let buffering = p.buffering.map(|b| {
        let path = format!("{base}.buffering");
        for (field, n) in [
            ("maxRequestBodyBytes", b.max_request_body_bytes),
            ("maxResponseBodyBytes", b.max_response_body_bytes),
        ] {
            if n > MAX_BYTES {
                v.error(format!("{path}.{field}"), format!("must be at most {MAX_BYTES}"));
            }
        }
        if b.max_response_body_bytes > 0 {
            caddy_refuses(v, "buffering.maxResponseBodyBytes", "Caddy's stock build limits request bodies only (request_body max_size), not responses; remove maxResponseBodyBytes or set proxy: traefik");
        }
        if b.max_request_body_bytes == 0 && b.max_response_body_bytes == 0 {
            v.error(&path, "sets no limit; give maxRequestBodyBytes and/or maxResponseBodyBytes, or remove buffering");
        }
        model::Buffering {
            max_request_body_bytes: b.max_request_body_bytes,
            max_response_body_bytes: b.max_response_body_bytes,
        }
    });
    let compress = p.compress.map(|c| {
        if c.min_response_body_bytes > MAX_BYTES {
            v.error(
                format!("{base}.compress.minResponseBodyBytes"),
                format!("must be at most {MAX_BYTES}"),
            );
        }
        model::Compress {
            min_response_body_bytes: c.min_response_body_bytes,
        }
    });
    Policy {
        headers: BTreeMap::new(),
        rate_limit,
        ip_allow,
        basic_auth: None,
        forward_auth,
        circuit_breaker,
        retry,
        buffering,
        compress,
        required_headers: Vec::new(),
        ip_deny: Vec::new(),
    }
}

/// The parts of `spec.middlewares` Traefik expresses as router rules on the entry points (so a
/// policy set cannot hold them), and the plugin-only options, refused.
pub(super) fn entry_point_only(v: &mut Validator, m: &Middlewares, policy: &mut Policy) {
    const BASE: &str = "spec.middlewares";
    for (i, name) in m.required_headers.iter().enumerate() {
        if !is_header_name(name) {
            v.error(
                format!("{BASE}.requiredHeaders[{i}]"),
                format!(
                    "{name:?} is not an HTTP header name (letters, digits and !#$%&'*+-.^_`|~)"
                ),
            );
        }
    }
    policy.required_headers = m.required_headers.clone();
    if let Some(deny) = &m.ip_deny_list {
        policy.ip_deny = v.cidrs(
            &format!("{BASE}.ipDenyList.sourceRange"),
            &deny.source_range,
        );
    }
    if m.geo_block.is_some() {
        v.error(format!("{BASE}.geoBlock"), "geo-blocking needs a plugin (a GeoIP database and a middleware) that neither the stock Traefik nor the stock Caddy build has; remove geoBlock, or block the networks with ipDenyList / ipAllowList");
    }
    if m.waf.is_some() {
        v.error(format!("{BASE}.waf"), "a WAF (SQL injection, XSS rules) needs a plugin (e.g. Coraza) that neither the stock Traefik nor the stock Caddy build has; remove waf and run a WAF as a forwardAuth service or in front of the proxy");
    }
}

/// Checks `spec.policies` and resolves each set.
pub(super) fn check_sets(
    v: &mut Validator,
    sets: &BTreeMap<String, PolicySet>,
    proxy: ProxyKind,
) -> BTreeMap<String, Policy> {
    let mut out = BTreeMap::new();
    for (name, set) in sets {
        let base = format!("spec.policies.{name}");
        let name_ok = !name.is_empty()
            && name.len() <= 63
            && name
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
            && !name.starts_with('-');
        if !name_ok {
            v.error(&base, format!("{name:?} is not a policy name: use 1-63 lowercase letters, digits and '-' (it becomes the Traefik middleware `{name}@consul`)"));
        } else if name.starts_with(RESERVED_PREFIX) {
            v.error(&base, format!("{name:?} starts with {RESERVED_PREFIX:?}, which names the operator's own middlewares; pick another name"));
        }
        let mut policy = common(
            v,
            &base,
            Parts {
                ip_allow_list: set.ip_allow_list.as_ref(),
                rate_limit: set.rate_limit.as_ref(),
                forward_auth: set.forward_auth.as_ref(),
                circuit_breaker: set.circuit_breaker.as_ref(),
                retry: set.retry.as_ref(),
                buffering: set.buffering.as_ref(),
                compress: set.compress.as_ref(),
            },
            proxy,
        );
        for (header, value) in &set.headers {
            let path = format!("{base}.headers.{header}");
            if !is_header_name(header) {
                v.error(&path, format!("{header:?} is not an HTTP header name"));
            } else if value.chars().any(char::is_control) {
                v.error(&path, "header values must not contain control characters");
            }
        }
        policy.headers = set.headers.clone();
        if let Some(auth) = &set.basic_auth {
            v.realm(&format!("{base}.basicAuth.realm"), &auth.realm);
            let users_file = match &auth.users_from {
                UsersFrom::ConsulKey(key) => {
                    v.kv_key(&format!("{base}.basicAuth.usersFrom.consulKey"), key);
                    None
                }
                UsersFrom::File(file) => v
                    .absolute_path(&format!("{base}.basicAuth.usersFrom.file"), file)
                    .map(|p| p.display().to_string())
                    // Caddy's http_basic takes the accounts inline: the operator reads the file
                    // as it reads spec.middlewares.basicAuth's. Traefik reads it itself, so the
                    // secret never passes the operator.
                    .filter(|_| proxy == ProxyKind::Traefik),
            };
            policy.basic_auth = Some(BasicAuth {
                realm: auth.realm.clone(),
                users: Vec::new(),
                users_file,
            });
        }
        if policy == Policy::default() {
            v.error(&base, "sets no middleware; add one (basicAuth, forwardAuth, headers, ...) or remove the set");
        }
        out.insert(name.clone(), policy);
    }
    out
}

fn forward_auth(v: &mut Validator, path: &str, f: &ForwardAuth) -> model::ForwardAuth {
    match url::Url::parse(&f.address) {
        // Credentials in the URL would sit unencrypted in KV and in status: refused, and the
        // address is not echoed.
        Ok(u) if !u.username().is_empty() || u.password().is_some() => v.error(
            format!("{path}.address"),
            "must not carry credentials (user:password@); authenticate the proxy to the auth service with tls.certFile/keyFile",
        ),
        Ok(u) if matches!(u.scheme(), "http" | "https") && u.host().is_some() => {
            if f.tls.is_some() && u.scheme() != "https" {
                v.error(format!("{path}.tls"), "is set but the address is http://; use an https:// address or remove tls");
            }
        }
        _ => v.error(
            format!("{path}.address"),
            "is not an http(s) URL with a host (e.g. http://oauth2-proxy.service.consul:4180/oauth2/auth)",
        ),
    }
    if f.address.chars().any(|c| c.is_control() || c == ',') {
        v.error(
            format!("{path}.address"),
            "must not contain commas or control characters",
        );
    }
    for (i, name) in f.auth_response_headers.iter().enumerate() {
        if !is_header_name(name) {
            v.error(
                format!("{path}.authResponseHeaders[{i}]"),
                format!("{name:?} is not an HTTP header name"),
            );
        }
    }
    let tls = f.tls.as_ref().map(|t| {
        let mut file = |field: &str, value: &Option<String>| {
            value.as_ref().and_then(|p| {
                v.absolute_path(&format!("{path}.tls.{field}"), p)
                    .map(|p| p.display().to_string())
            })
        };
        let files = ClientFiles {
            ca: file("caFile", &t.ca_file),
            cert: file("certFile", &t.cert_file),
            key: file("keyFile", &t.key_file),
        };
        if t.cert_file.is_some() != t.key_file.is_some() {
            v.error(
                format!("{path}.tls"),
                "certFile and keyFile go together (mutual TLS); give both or neither",
            );
        }
        files
    });
    model::ForwardAuth {
        address: f.address.clone(),
        trust_forward_header: f.trust_forward_header,
        auth_response_headers: f.auth_response_headers.clone(),
        tls,
    }
}

/// Checks a breaker expression against Traefik's grammar closely enough that a typo is caught
/// here: a bad expression disables the middleware and every router using it (404s).
/// Used by validation and again by the renderer, which never trusts its input.
pub fn check_breaker_expression(expr: &str) -> Result<(), String> {
    const FUNCTIONS: [&str; 3] = [
        "NetworkErrorRatio",
        "ResponseCodeRatio",
        "LatencyAtQuantileMS",
    ];
    if expr.trim().is_empty() {
        return Err("is empty".to_string());
    }
    let mut depth = 0i32;
    let mut saw_function = false;
    let chars: Vec<char> = expr.chars().collect();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c.is_ascii_alphabetic() {
            let start = i;
            while i < chars.len() && chars[i].is_ascii_alphanumeric() {
                i += 1;
            }
            let word: String = chars[start..i].iter().collect();
            if !FUNCTIONS.contains(&word.as_str()) {
                return Err(format!(
                    "{word:?} is not a breaker function (NetworkErrorRatio, ResponseCodeRatio, LatencyAtQuantileMS)"
                ));
            }
            if chars.get(i) != Some(&'(') {
                return Err(format!("{word} must be called, e.g. {word}(...)"));
            }
            saw_function = true;
            continue;
        }
        match c {
            '(' => depth += 1,
            ')' => {
                depth -= 1;
                if depth < 0 {
                    return Err("has a ')' without its '('".to_string());
                }
            }
            '0'..='9' | '.' | ',' | ' ' | '<' | '>' | '=' | '!' | '&' | '|' => {}
            other => return Err(format!("{other:?} is not allowed in a breaker expression")),
        }
        i += 1;
    }
    if depth != 0 {
        return Err("has unbalanced parentheses".to_string());
    }
    if !saw_function {
        return Err("uses no breaker function".to_string());
    }
    Ok(())
}
