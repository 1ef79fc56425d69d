//! Traefik's dynamic policy: the Consul KV entries (under `<prefix>/traefik/`) Traefik's Consul
//! KV provider reads live. A bad value anywhere makes Traefik reject the WHOLE tree
//! (contracts/TRAEFIK.md B), so every value is checked here before it is emitted.
//!
//! What each policy renders to:
//!
//! - the entry point policy: a `chain` middleware (`proxy-operator-policy`) every user-facing
//!   entry point applies, of one middleware per enabled policy, in this order: headers,
//!   ipAllowList, basicAuth, forwardAuth, rateLimit, compress, buffering, circuitBreaker, retry
//!   (auth before the rate limit so refused requests spend no tokens; retry innermost so it
//!   replays the buffered body to the backend);
//! - `requiredHeaders` and `ipDenyList`: Traefik 3.7 has neither a header-check nor an IP deny
//!   middleware, but its rule matchers express both. The operator owns one router,
//!   `proxy-operator-deny`, on the user-facing entry points, with a priority above any router a
//!   provider builds and the rule `ClientIP(<denied>) || !HeaderRegexp(<required>, .+)`. Its
//!   only middleware is an allow list no client can match, so what it catches gets 403
//!   Forbidden; requests it does not match go on to their own routers. The entry point chain
//!   still runs first on it (Traefik has no opt-out), so a denied client that fails an earlier
//!   check (allow list, basic auth) gets that check's answer;
//! - a policy set `<name>`: a chain middleware named `<name>` (so services opt in with the
//!   tag `traefik.http.routers.<service>.middlewares=<name>@consul`) of middlewares
//!   `proxy-operator-<name>-<kind>`.

use std::collections::BTreeMap;

use super::Error;
use super::model::{Model, Policy};
use super::traefik::{
    API_ROUTER, BASIC_AUTH_MIDDLEWARE, GENERATION_MIDDLEWARE, HEADERS_MIDDLEWARE,
    INTERNAL_ENTRY_POINT, IP_ALLOW_MIDDLEWARE, POLICY_MIDDLEWARE, RATE_LIMIT_MIDDLEWARE,
    go_duration,
};

/// The kinds of the entry point policy's own middlewares (`proxy-operator-<kind>`), for the
/// key budget's report.
pub const ENTRY_POINT_MIDDLEWARES: [&str; 9] = [
    "ipallowlist",
    "basicauth",
    "forwardauth",
    "ratelimit",
    "compress",
    "buffering",
    "circuitbreaker",
    "retry",
    "deny-all",
];

/// The router refusing denied clients and requests without the required headers.
pub const DENY_ROUTER: &str = "proxy-operator-deny";
/// The middleware of [`DENY_ROUTER`]: an allow list no client matches, so it answers 403.
pub const DENY_ALL_MIDDLEWARE: &str = "proxy-operator-deny-all";
/// An address no TCP client can have: what the deny-all allow list "allows".
const NO_CLIENT: &str = "0.0.0.0/32";
/// Above every router a provider builds (their default priority is the rule's length), below
/// the range Traefik keeps for its own internal routers.
pub const DENY_ROUTER_PRIORITY: u32 = 2_000_000_000;

/// The KV entries (relative to `<prefix>/traefik/`, sorted) that define the policy chain, the
/// policy sets, the deny router, the TLS certificates and, when the API is not insecure, the
/// router exposing it on the internal entry point.
pub fn policy_kv(model: &Model) -> Result<BTreeMap<String, String>, Error> {
    let mut kv = BTreeMap::new();
    let policy = &model.policy;
    if policy.headers.is_empty() {
        // The chain (which entry points reference) always has this member, and Traefik
        // disables a headers middleware that changes nothing ("headers configuration not
        // valid") together with every router using it: so it deletes a request header no
        // client sends (an empty value means delete).
        kv.insert(
            mw(
                HEADERS_MIDDLEWARE,
                "headers/customRequestHeaders/X-Proxy-Operator-Noop",
            ),
            String::new(),
        );
    }
    let chain = policy_middlewares(&mut kv, &Names::EntryPoint, policy, "middlewares")?;
    // The headers middleware is always in the entry point chain, set or not.
    let chain = if policy.headers.is_empty() {
        std::iter::once(HEADERS_MIDDLEWARE.to_string())
            .chain(chain)
            .collect()
    } else {
        chain
    };
    insert_chain(&mut kv, POLICY_MIDDLEWARE, &chain);

    for (name, set) in &model.policies {
        let members =
            policy_middlewares(&mut kv, &Names::Set(name), set, &format!("policies.{name}"))?;
        if members.is_empty() {
            return Err(Error::InvalidValue {
                field: format!("policies.{name}"),
                reason: "the policy set has no middleware".to_string(),
            });
        }
        insert_chain(&mut kv, name, &members);
    }

    deny_router(&mut kv, model)?;

    for (i, pair) in model.tls.certificates.iter().enumerate() {
        check_plain(&format!("tls.certificates[{i}].certFile"), &pair.cert_file)?;
        check_plain(&format!("tls.certificates[{i}].keyFile"), &pair.key_file)?;
        kv.insert(
            format!("tls/certificates/{i}/certFile"),
            pair.cert_file.clone(),
        );
        kv.insert(
            format!("tls/certificates/{i}/keyFile"),
            pair.key_file.clone(),
        );
    }
    if let Some(min) = &model.tls.min_version {
        if !["VersionTLS12", "VersionTLS13"].contains(&min.as_str()) {
            return Err(Error::InvalidValue {
                field: "tls.minVersion".to_string(),
                reason: format!("{min:?} is not VersionTLS12 or VersionTLS13"),
            });
        }
        kv.insert("tls/options/default/minVersion".to_string(), min.clone());
    }

    if !model.dashboard.insecure {
        let r = |rest: &str| format!("http/routers/{API_ROUTER}/{rest}");
        // Loopback clients only: without `api.insecure` nothing else may read the API, but the
        // operator's health gate on the node must.
        kv.insert(
            r("rule"),
            "(PathPrefix(`/api`) || PathPrefix(`/dashboard`)) \
             && (ClientIP(`127.0.0.0/8`) || ClientIP(`::1/128`))"
                .to_string(),
        );
        kv.insert(r("service"), "api@internal".to_string());
        kv.insert(r("entryPoints/0"), INTERNAL_ENTRY_POINT.to_string());
    }

    let entries: Vec<(String, String)> = kv.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
    let generation: String = super::digest_kv(&entries).chars().take(12).collect();
    kv.insert(
        mw(
            &format!("{GENERATION_MIDDLEWARE}-{generation}"),
            "headers/customResponseHeaders/X-Proxy-Operator-Generation",
        ),
        generation,
    );
    Ok(kv)
}

/// Whether a KV key under `<prefix>/traefik/` holds a secret (basic-auth users), so callers can
/// redact it in logs and output.
pub fn is_secret_key(key: &str) -> bool {
    key.contains("/basicAuth/users/")
}

/// How the middlewares of a policy are named.
enum Names<'a> {
    /// The entry point policy: the historical `proxy-operator-<kind>` names.
    EntryPoint,
    /// A policy set: `proxy-operator-<set>-<kind>`.
    Set(&'a str),
}

impl Names<'_> {
    fn of(&self, kind: &str) -> String {
        match (self, kind) {
            (Names::EntryPoint, "headers") => HEADERS_MIDDLEWARE.to_string(),
            (Names::EntryPoint, "ipallowlist") => IP_ALLOW_MIDDLEWARE.to_string(),
            (Names::EntryPoint, "basicauth") => BASIC_AUTH_MIDDLEWARE.to_string(),
            (Names::EntryPoint, "ratelimit") => RATE_LIMIT_MIDDLEWARE.to_string(),
            (Names::EntryPoint, kind) => format!("proxy-operator-{kind}"),
            (Names::Set(set), kind) => format!("proxy-operator-{set}-{kind}"),
        }
    }
}

fn mw(name: &str, rest: &str) -> String {
    format!("http/middlewares/{name}/{rest}")
}

fn insert_chain(kv: &mut BTreeMap<String, String>, name: &str, members: &[String]) {
    for (i, member) in members.iter().enumerate() {
        kv.insert(mw(name, &format!("chain/middlewares/{i}")), member.clone());
    }
}

/// Writes one middleware per enabled policy and returns their names in chain order. `field`
/// names the policy in errors (`middlewares`, `policies.admin`).
fn policy_middlewares(
    kv: &mut BTreeMap<String, String>,
    names: &Names<'_>,
    policy: &Policy,
    field: &str,
) -> Result<Vec<String>, Error> {
    let mut chain = Vec::new();
    let mut add = |kind: &str| {
        let name = names.of(kind);
        chain.push(name.clone());
        name
    };

    if !policy.headers.is_empty() {
        let name = add("headers");
        for (header, value) in &policy.headers {
            check_header(&format!("{field}.headers.{header}"), header, value)?;
            kv.insert(
                mw(&name, &format!("headers/customResponseHeaders/{header}")),
                value.clone(),
            );
        }
    }

    if !policy.ip_allow.is_empty() {
        let name = add("ipallowlist");
        // One comma-joined key (TRAEFIK.md C) instead of one key per range: the whole tree
        // must fit one Consul transaction, and long allow lists would not.
        let ranges: Vec<String> = policy.ip_allow.iter().map(ToString::to_string).collect();
        kv.insert(mw(&name, "ipAllowList/sourceRange"), ranges.join(","));
    }

    if let Some(auth) = &policy.basic_auth {
        let name = add("basicauth");
        if let Some(file) = &auth.users_file {
            // Traefik reads the htpasswd file itself: the secret never passes the operator.
            check_plain(&format!("{field}.basicAuth.usersFrom.file"), file)?;
            kv.insert(mw(&name, "basicAuth/usersFile"), file.clone());
        } else {
            if auth.users.is_empty() {
                return Err(Error::InvalidValue {
                    field: format!("{field}.basicAuth.users"),
                    reason: "the referenced user list is empty".to_string(),
                });
            }
            for (i, user) in auth.users.iter().enumerate() {
                check_htpasswd_line(&format!("{field}.basicAuth.users[{i}]"), user)?;
                kv.insert(mw(&name, &format!("basicAuth/users/{i}")), user.clone());
            }
        }
        check_plain(&format!("{field}.basicAuth.realm"), &auth.realm)?;
        kv.insert(mw(&name, "basicAuth/realm"), auth.realm.clone());
    }

    if let Some(fa) = &policy.forward_auth {
        let name = add("forwardauth");
        let f = |rest: &str| mw(&name, &format!("forwardAuth/{rest}"));
        check_plain(&format!("{field}.forwardAuth.address"), &fa.address)?;
        kv.insert(f("address"), fa.address.clone());
        if fa.trust_forward_header {
            kv.insert(f("trustForwardHeader"), "true".to_string());
        }
        if !fa.auth_response_headers.is_empty() {
            for h in &fa.auth_response_headers {
                check_header(&format!("{field}.forwardAuth.authResponseHeaders"), h, "")?;
            }
            // One comma-joined key, as for the allow list: Traefik splits list values on commas.
            kv.insert(f("authResponseHeaders"), fa.auth_response_headers.join(","));
        }
        if let Some(tls) = &fa.tls {
            let files = [("ca", &tls.ca), ("cert", &tls.cert), ("key", &tls.key)];
            for (key, value) in files {
                if let Some(path) = value {
                    check_plain(&format!("{field}.forwardAuth.tls.{key}"), path)?;
                    kv.insert(f(&format!("tls/{key}")), path.clone());
                }
            }
            if files.iter().all(|(_, v)| v.is_none()) {
                // Traefik refuses an empty tls section; this enables verification with the
                // system roots, which an https:// address gets anyway.
                kv.insert(f("tls/insecureSkipVerify"), "false".to_string());
            }
        }
    }

    if let Some(rl) = &policy.rate_limit {
        let name = add("ratelimit");
        if rl.average == 0 || rl.period.is_zero() {
            return Err(Error::InvalidValue {
                field: format!("{field}.rateLimit"),
                reason: "average and period must be greater than zero".to_string(),
            });
        }
        kv.insert(mw(&name, "rateLimit/average"), rl.average.to_string());
        kv.insert(mw(&name, "rateLimit/burst"), rl.burst.max(1).to_string());
        kv.insert(mw(&name, "rateLimit/period"), go_duration(rl.period));
    }

    if let Some(c) = &policy.compress {
        let name = add("compress");
        kv.insert(
            mw(&name, "compress/minResponseBodyBytes"),
            c.min_response_body_bytes.to_string(),
        );
    }

    if let Some(b) = &policy.buffering {
        let name = add("buffering");
        if b.max_request_body_bytes == 0 && b.max_response_body_bytes == 0 {
            return Err(Error::InvalidValue {
                field: format!("{field}.buffering"),
                reason: "sets no limit".to_string(),
            });
        }
        if b.max_request_body_bytes > 0 {
            kv.insert(
                mw(&name, "buffering/maxRequestBodyBytes"),
                b.max_request_body_bytes.to_string(),
            );
        }
        if b.max_response_body_bytes > 0 {
            kv.insert(
                mw(&name, "buffering/maxResponseBodyBytes"),
                b.max_response_body_bytes.to_string(),
            );
        }
    }

    if let Some(cb) = &policy.circuit_breaker {
        let name = add("circuitbreaker");
        crate::spec::check_breaker_expression(&cb.expression).map_err(|reason| {
            Error::InvalidValue {
                field: format!("{field}.circuitBreaker.expression"),
                reason,
            }
        })?;
        let c = |rest: &str| mw(&name, &format!("circuitBreaker/{rest}"));
        kv.insert(c("expression"), cb.expression.clone());
        kv.insert(c("checkPeriod"), go_duration(cb.check_period));
        kv.insert(c("fallbackDuration"), go_duration(cb.fallback_duration));
        kv.insert(c("recoveryDuration"), go_duration(cb.recovery_duration));
    }

    if let Some(r) = &policy.retry {
        let name = add("retry");
        if r.attempts == 0 {
            return Err(Error::InvalidValue {
                field: format!("{field}.retry.attempts"),
                reason: "must be at least 1".to_string(),
            });
        }
        kv.insert(mw(&name, "retry/attempts"), r.attempts.to_string());
        kv.insert(
            mw(&name, "retry/initialInterval"),
            go_duration(r.initial_interval),
        );
    }
    Ok(chain)
}

/// The router refusing denied networks and requests without the required headers (see the
/// module docs); nothing when neither is set.
fn deny_router(kv: &mut BTreeMap<String, String>, model: &Model) -> Result<(), Error> {
    let policy = &model.policy;
    if policy.ip_deny.is_empty() && policy.required_headers.is_empty() {
        return Ok(());
    }
    let mut terms: Vec<String> = policy
        .ip_deny
        .iter()
        .map(|net| format!("ClientIP(`{net}`)"))
        .collect();
    for (i, header) in policy.required_headers.iter().enumerate() {
        check_header(&format!("middlewares.requiredHeaders[{i}]"), header, "")?;
        terms.push(format!("!HeaderRegexp(`{header}`, `.+`)"));
    }
    let entry_points: Vec<&str> = model
        .entry_points
        .iter()
        .filter(|ep| ep.redirect_to.is_none())
        .map(|ep| ep.name.as_str())
        .collect();
    if entry_points.is_empty() {
        return Err(Error::InvalidValue {
            field: "middlewares.ipDenyList".to_string(),
            reason: "every entry point redirects, so there is no entry point to refuse requests on"
                .to_string(),
        });
    }
    let r = |rest: &str| format!("http/routers/{DENY_ROUTER}/{rest}");
    kv.insert(r("rule"), terms.join(" || "));
    kv.insert(r("priority"), DENY_ROUTER_PRIORITY.to_string());
    kv.insert(r("service"), "noop@internal".to_string());
    kv.insert(r("middlewares/0"), DENY_ALL_MIDDLEWARE.to_string());
    for (i, ep) in entry_points.iter().enumerate() {
        kv.insert(r(&format!("entryPoints/{i}")), (*ep).to_string());
    }
    kv.insert(
        mw(DENY_ALL_MIDDLEWARE, "ipAllowList/sourceRange"),
        NO_CLIENT.to_string(),
    );
    Ok(())
}

fn check_header(field: &str, name: &str, value: &str) -> Result<(), Error> {
    let token_ok = !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b));
    if !token_ok {
        return Err(Error::InvalidValue {
            field: field.to_string(),
            reason: "a header name must be a non-empty HTTP token".to_string(),
        });
    }
    check_plain(field, value)
}

fn check_plain(field: &str, value: &str) -> Result<(), Error> {
    if value.chars().any(|c| c.is_control()) {
        return Err(Error::InvalidValue {
            field: field.to_string(),
            reason: "control characters are not allowed".to_string(),
        });
    }
    Ok(())
}

/// Checks the shape of a htpasswd line without ever putting it in the error.
fn check_htpasswd_line(field: &str, line: &str) -> Result<(), Error> {
    let field = field.to_string();
    let Some((user, hash)) = line.split_once(':') else {
        return Err(Error::InvalidValue {
            field,
            reason: "expected user:hash".to_string(),
        });
    };
    if user.is_empty() || hash.is_empty() || line.chars().any(|c| c.is_control() || c == ',') {
        return Err(Error::InvalidValue {
            field,
            reason: "expected user:hash without commas or control characters".to_string(),
        });
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::panic)] // tests fail loudly
mod tests {
    use super::*;

    #[test]
    fn header_names_must_be_http_tokens_and_values_free_of_control_characters() {
        assert!(check_header("h", "X-Frame-Options", "SAMEORIGIN").is_ok());
        assert!(check_header("h", "Bad Name", "x").is_err());
        assert!(check_header("h", "", "x").is_err());
        let err = check_header("h", "X-Ok", "a\nInjected: 1")
            .unwrap_err()
            .to_string();
        assert!(err.contains("control characters"), "{err}");
    }

    #[test]
    fn a_malformed_htpasswd_line_is_rejected_without_echoing_it() {
        let secret = "alice$apr1$salt$hash-without-colon";
        let err = check_htpasswd_line("middlewares.basicAuth.users[3]", secret)
            .unwrap_err()
            .to_string();
        assert!(err.contains("users[3]"), "{err}");
        assert!(
            !err.contains("apr1"),
            "the error must not carry the secret: {err}"
        );
        assert!(check_htpasswd_line("u", "alice:$apr1$salt$hash").is_ok());
        assert!(check_htpasswd_line("u", "alice:$apr1$a,b").is_err());
    }

    #[test]
    fn basic_auth_users_are_the_only_secret_keys() {
        assert!(is_secret_key(
            "p/traefik/http/middlewares/m/basicAuth/users/0"
        ));
        assert!(!is_secret_key(
            "p/traefik/http/middlewares/m/basicAuth/realm"
        ));
        assert!(!is_secret_key("p/traefik/tls/certificates/0/keyFile"));
    }
}
