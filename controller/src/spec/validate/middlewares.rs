//! `spec.middlewares`: security headers, rate limit, IP allow list and basic auth.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::time::Duration;

use ipnet::IpNet;

use super::field::{Validator, is_header_name};
use crate::spec::model::{BasicAuth, Policy, RateLimit};
use crate::spec::{DEFAULT_SECURITY_HEADERS, Middlewares, ProxyKind, SecurityHeaders, UsersFrom};

/// Checks `spec.middlewares` and resolves them into the policy every user-facing entry point
/// gets. Basic-auth users stay empty: they are behind a reference `render` resolves.
pub(super) fn check(v: &mut Validator, m: &Middlewares, proxy: ProxyKind) -> Policy {
    let security_headers = v.security_headers(&m.security_headers);
    let rate_limit = m.rate_limit.as_ref().map(|r| {
        let period = v.positive_duration("spec.middlewares.rateLimit.period", &r.period);
        // Traefik parses both as int64; one value beyond it breaks the whole KV provider.
        const MAX: u64 = i64::MAX as u64;
        if r.average > MAX {
            v.error(
                "spec.middlewares.rateLimit.average",
                format!("must be at most {MAX} (Traefik reads it as a 64-bit signed integer)"),
            );
        }
        if r.burst > MAX {
            v.error(
                "spec.middlewares.rateLimit.burst",
                format!("must be at most {MAX} (Traefik reads it as a 64-bit signed integer)"),
            );
        }
        if r.average == 0 {
            v.error("spec.middlewares.rateLimit.average", "must be at least 1 request per period");
        }
        if r.burst == 0 {
            v.error("spec.middlewares.rateLimit.burst", "must be at least 1");
        }
        if proxy == ProxyKind::Caddy {
            v.error(
                "spec.middlewares.rateLimit",
                "rate limiting is Traefik-only: Caddy's standard build has no rate limiter; remove rateLimit or set proxy: traefik",
            );
        }
        RateLimit { average: r.average, burst: r.burst, period: period.unwrap_or(Duration::from_secs(1)) }
    });
    let ip_allow_list = m
        .ip_allow_list
        .as_ref()
        .map(|list| v.cidrs(&list.source_range));
    if let Some(auth) = &m.basic_auth {
        match &auth.users_from {
            UsersFrom::ConsulKey(key) => {
                v.kv_key("spec.middlewares.basicAuth.usersFrom.consulKey", key)
            }
            UsersFrom::File(file) => {
                v.absolute_path("spec.middlewares.basicAuth.usersFrom.file", file);
            }
        }
        if auth.realm.is_empty() || auth.realm.chars().any(|c| c == '"' || c.is_control()) {
            v.error(
                "spec.middlewares.basicAuth.realm",
                "must be non-empty text without quotes or control characters",
            );
        }
    }

    Policy {
        headers: security_headers,
        rate_limit,
        ip_allow: ip_allow_list.unwrap_or_default(),
        basic_auth: m.basic_auth.as_ref().map(|auth| BasicAuth {
            realm: auth.realm.clone(),
            users: Vec::new(),
        }),
    }
}

impl Validator {
    fn security_headers(&mut self, h: &SecurityHeaders) -> BTreeMap<String, String> {
        let mut out: BTreeMap<String, String> = DEFAULT_SECURITY_HEADERS
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        for (name, value) in &h.headers {
            let path = format!("spec.middlewares.securityHeaders.headers.{name}");
            if !is_header_name(name) {
                self.error(
                    &path,
                    format!(
                        "{name:?} is not an HTTP header name (letters, digits and !#$%&'*+-.^_`|~)"
                    ),
                );
                continue;
            }
            // Tabs too: the renderers refuse every control character, and `validate` must
            // refuse what the operator would.
            if value.chars().any(char::is_control) {
                self.error(
                    &path,
                    "header values must not contain tabs, line breaks or other control characters",
                );
                continue;
            }
            out.retain(|k, _| !k.eq_ignore_ascii_case(name));
            out.insert(name.clone(), value.clone());
        }
        for (i, name) in h.remove.iter().enumerate() {
            let path = format!("spec.middlewares.securityHeaders.remove[{i}]");
            if h.headers.keys().any(|k| k.eq_ignore_ascii_case(name)) {
                self.error(
                    path,
                    format!("{name:?} is both set in headers and removed; keep one"),
                );
            } else if !out.keys().any(|k| k.eq_ignore_ascii_case(name)) {
                let defaults: Vec<&str> =
                    DEFAULT_SECURITY_HEADERS.iter().map(|(k, _)| *k).collect();
                self.error(
                    path,
                    format!(
                        "{name:?} is not a default header; removable: {}",
                        defaults.join(", ")
                    ),
                );
            } else {
                out.retain(|k, _| !k.eq_ignore_ascii_case(name));
            }
        }
        if h.enabled { out } else { BTreeMap::new() }
    }

    fn cidrs(&mut self, ranges: &[String]) -> Vec<IpNet> {
        if ranges.is_empty() {
            self.error(
                "spec.middlewares.ipAllowList.sourceRange",
                "must list at least one CIDR; an empty allow list would refuse every client",
            );
        }
        let mut out = Vec::new();
        for (i, text) in ranges.iter().enumerate() {
            let path = format!("spec.middlewares.ipAllowList.sourceRange[{i}]");
            let parsed = text
                .parse::<IpNet>()
                .or_else(|_| text.parse::<IpAddr>().map(IpNet::from));
            match parsed {
                Ok(net) => {
                    if net.trunc() != net {
                        self.warn(&path, format!("{text:?} has host bits set; it means {}", net.trunc()));
                    }
                    out.push(net);
                }
                Err(_) => self.error(
                    path,
                    format!("{text:?} is not a CIDR or IP address (e.g. 10.0.0.0/8, 192.0.2.7 or 2001:db8::/32)"),
                ),
            }
        }
        out
    }
}
