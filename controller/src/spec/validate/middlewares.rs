//! `spec.middlewares`: security headers, rate limit, IP allow list and basic auth; the newer
//! middlewares are checked in `policies.rs`.

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
    const BASE: &str = "spec.middlewares";
    let headers = v.security_headers(&m.security_headers);
    let mut policy = super::policies::common(
        v,
        BASE,
        super::policies::Parts {
            ip_allow_list: m.ip_allow_list.as_ref(),
            rate_limit: m.rate_limit.as_ref(),
            forward_auth: m.forward_auth.as_ref(),
            circuit_breaker: m.circuit_breaker.as_ref(),
            retry: m.retry.as_ref(),
            buffering: m.buffering.as_ref(),
            compress: m.compress.as_ref(),
        },
        proxy,
    );
    policy.headers = headers;
    if let Some(auth) = &m.basic_auth {
        match &auth.users_from {
            UsersFrom::ConsulKey(key) => {
                v.kv_key(&format!("{BASE}.basicAuth.usersFrom.consulKey"), key)
            }
            UsersFrom::File(file) => {
                v.absolute_path(&format!("{BASE}.basicAuth.usersFrom.file"), file);
            }
        }
        v.realm(&format!("{BASE}.basicAuth.realm"), &auth.realm);
        policy.basic_auth = Some(BasicAuth {
            realm: auth.realm.clone(),
            users: Vec::new(),
            users_file: None,
        });
    }
    super::policies::entry_point_only(v, m, &mut policy);
    policy
}

/// Checks a rate limit at `path` (Traefik reads both numbers as int64; one value beyond it
/// breaks the whole KV provider).
pub(super) fn rate_limit(
    v: &mut Validator,
    path: &str,
    r: &crate::spec::RateLimit,
    proxy: ProxyKind,
) -> RateLimit {
    let period = v.positive_duration(&format!("{path}.period"), &r.period);
    const MAX: u64 = i64::MAX as u64;
    if r.average > MAX {
        v.error(
            format!("{path}.average"),
            format!("must be at most {MAX} (Traefik reads it as a 64-bit signed integer)"),
        );
    }
    if r.burst > MAX {
        v.error(
            format!("{path}.burst"),
            format!("must be at most {MAX} (Traefik reads it as a 64-bit signed integer)"),
        );
    }
    if r.average == 0 {
        v.error(
            format!("{path}.average"),
            "must be at least 1 request per period",
        );
    }
    if r.burst == 0 {
        v.error(format!("{path}.burst"), "must be at least 1");
    }
    if proxy == ProxyKind::Caddy {
        v.error(
            path,
            "rate limiting is Traefik-only: Caddy's standard build has no rate limiter; remove rateLimit or set proxy: traefik",
        );
    }
    RateLimit {
        average: r.average,
        burst: r.burst,
        period: period.unwrap_or(Duration::from_secs(1)),
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

    pub(super) fn realm(&mut self, path: &str, realm: &str) {
        if realm.is_empty() || realm.chars().any(|c| c == '"' || c.is_control()) {
            self.error(
                path,
                "must be non-empty text without quotes or control characters",
            );
        }
    }

    /// CIDRs of an allow or deny list at `path` (`...sourceRange`).
    pub(super) fn cidrs(&mut self, path: &str, ranges: &[String]) -> Vec<IpNet> {
        if ranges.is_empty() {
            self.error(
                path,
                "must list at least one CIDR or address (remove the section to turn it off)",
            );
        }
        let mut out = Vec::new();
        for (i, text) in ranges.iter().enumerate() {
            let path = format!("{path}[{i}]");
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
