//! Pure: issue 14's middlewares and policy sets in Caddy's JSON, with the HTTP behaviour
//! `controller/tests/policy_traefik_real.rs` asserts through Traefik (proven through real Caddy
//! in `controller/tests/caddy_middlewares.rs`).
//!
//! - The entry point policy runs on every serving server before the catalog routes, after the
//!   security headers, allow list and basic auth (`config::policy_routes`), in Traefik's chain
//!   order: forward auth, compression, the request body limit, then what Traefik's deny router
//!   refuses (denied networks, missing required headers: 403). Each is a route of its own whose
//!   handlers wrap every later route (Caddy compiles a server's routes into one chain).
//! - A policy set (`spec.policies.<name>`) runs inside the routes of the services that carry
//!   [`super::routes::POLICY_TAG`], after the entry point policy, as Traefik runs a set's chain
//!   after the entry point chain: a set adds to the entry point policy, it never lifts it.
//! - Retry is a setting of each `reverse_proxy` (`load_balancing`), not a handler: a set's
//!   retry wins over the entry point's on the set's services.
//!
//! What the stock build (2.11) cannot express is refused by validation and again here (the
//! renderer never trusts its input): the circuit breaker (the namespace
//! `http.reverse_proxy.circuit_breakers` holds no module), a response body limit, a per-handler
//! trust of `X-Forwarded-*`, the rate limiter.

use std::borrow::Cow;

use serde_json::{Value, json};

use super::config::{Error, Secrets, basic_auth_handler};
use super::routes::{Middleware, Route, RouteTable};
use crate::render::Model;
use crate::render::model::{Buffering, Compress, ForwardAuth, Policy};

/// A policy set's handlers, serialised (so routes stay `Hash`/`Eq` for the host maps). They
/// may hold basic-auth hashes: `Debug` prints the set's name only.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Handlers {
    set: String,
    json: String,
}

impl std::fmt::Debug for Handlers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Handlers(policy set {}, redacted)", self.set)
    }
}

/// The entry point policy's routes after `config::policy_routes`.
///
/// # Errors
/// The policy holds what the stock build cannot express, or an invalid forward-auth address.
pub(super) fn entry_point_routes(model: &Model) -> Result<Vec<Value>, Error> {
    let policy = &model.policy;
    let mut routes: Vec<Value> = common_handlers(policy, "spec.middlewares")?
        .into_iter()
        .map(|h| json!({"handle": [h]}))
        .collect();
    // Traefik's deny router: `ClientIP(<denied>) || !HeaderRegexp(<required>, .+)` → 403.
    // `header_regexp` fields are ANDed, so `not` of all of them is "one is missing or empty".
    let mut refused = Vec::new();
    if !policy.ip_deny.is_empty() {
        let ranges: Vec<String> = policy.ip_deny.iter().map(ToString::to_string).collect();
        refused.push(json!({"remote_ip": {"ranges": ranges}}));
    }
    if !policy.required_headers.is_empty() {
        let present: serde_json::Map<String, Value> = policy
            .required_headers
            .iter()
            .map(|h| (h.clone(), json!({"pattern": ".+"})))
            .collect();
        refused.push(json!({"not": [{"header_regexp": present}]}));
    }
    if !refused.is_empty() {
        routes.push(json!({
            "match": refused,
            "handle": [{"handler": "static_response", "status_code": 403, "body": "Forbidden\n"}],
            "terminal": true
        }));
    }
    Ok(routes)
}

/// `routes` with every [`Middleware::PolicySet`] replaced by the set's handlers and retry, and
/// the entry point's retry on the routes without one. Borrowed when there is nothing to do, so
/// a large catalog is not copied.
///
/// # Errors
/// A route names a set the model lacks, or a set holds what Caddy cannot express.
pub(super) fn attach<'a>(
    model: &Model,
    table: &'a RouteTable,
    secrets: Secrets,
) -> Result<Cow<'a, RouteTable>, Error> {
    let entry_retry = model.policy.retry.as_ref().map(retry);
    let named = |r: &Route| {
        r.middlewares
            .iter()
            .any(|m| matches!(m, Middleware::PolicySet(_)))
    };
    if entry_retry.is_none() && !table.routes.iter().any(named) {
        return Ok(Cow::Borrowed(table));
    }
    let mut out = table.clone();
    for route in &mut out.routes {
        let mut middlewares = Vec::with_capacity(route.middlewares.len() + 1);
        for mw in route.middlewares.drain(..) {
            let Middleware::PolicySet(name) = mw else {
                middlewares.push(mw);
                continue;
            };
            let set = model
                .policies
                .get(&name)
                .ok_or_else(|| Error::InvalidValue {
                    field: format!("spec.policies.{name}"),
                    reason: format!(
                        "service {} opts into it, but the document defines no such set",
                        route.service
                    ),
                })?;
            let handlers = set_handlers(&name, set, secrets)?;
            middlewares.push(Middleware::Handlers(Handlers {
                json: Value::Array(handlers).to_string(),
                set: name,
            }));
            middlewares.extend(set.retry.as_ref().map(retry));
        }
        if let Some(r) = &entry_retry
            && !middlewares
                .iter()
                .any(|m| matches!(m, Middleware::Retry { .. }))
        {
            middlewares.push(r.clone());
        }
        route.middlewares = middlewares;
    }
    Ok(Cow::Owned(out))
}

/// `identity` (of the live config without routes) made to cover every policy set as Caddy
/// renders it (handlers, basic-auth accounts included, and retry): sha256 (hex) of both, or
/// `identity` itself without sets. A set reaches Caddy's config only inside the routes that opt
/// in, so without this a set edit, or a rotation of a set's users, would not be a policy change.
///
/// # Errors
/// A set holds what Caddy cannot express, or basic auth without users.
pub(super) fn identity_with_sets(identity: &str, model: &Model) -> Result<String, Error> {
    use sha2::Digest as _;
    if model.policies.is_empty() {
        return Ok(identity.to_owned());
    }
    let mut digest = sha2::Sha256::new();
    digest.update(identity.as_bytes());
    for (name, set) in &model.policies {
        let handlers = Value::Array(set_handlers(name, set, Secrets::Include)?);
        for part in [
            name.clone(),
            handlers.to_string(),
            format!("{:?}", set.retry),
        ] {
            digest.update([0]);
            digest.update(part.as_bytes());
        }
    }
    Ok(format!("{:x}", digest.finalize()))
}

/// The handlers of the policy middlewares `config::middleware_handlers` does not render.
///
/// # Errors
/// A [`Middleware::PolicySet`] that [`attach`] did not resolve.
pub(super) fn handlers(mw: &Middleware) -> Result<Vec<Value>, Error> {
    match mw {
        Middleware::Handlers(h) => match serde_json::from_str(&h.json) {
            Ok(Value::Array(list)) => Ok(list),
            Ok(_) => Err(Error::InvalidValue {
                field: format!("spec.policies.{}", h.set),
                reason: "rendered handlers are not a list".into(),
            }),
            Err(e) => Err(Error::Serialize(e)),
        },
        Middleware::PolicySet(name) => Err(Error::InvalidValue {
            field: format!("spec.policies.{name}"),
            reason: "the set was not resolved before rendering".into(),
        }),
        _ => Ok(Vec::new()),
    }
}

/// Sets the route's retry on its `reverse_proxy` handler. Caddy retries a request it could not
/// deliver (a dial error, any method; any transport error for GET), never an upstream's own
/// answer, as Traefik's retry does (`reverseproxy.go` `tryAgain`). Round robin makes the retry
/// go to the next instance: with Caddy's default random selection it may pick the dead one
/// again (no health check marks it down), where Traefik's round robin moves on.
pub(super) fn tune_proxy(route: &Route, proxy: &mut Value) {
    for mw in &route.middlewares {
        if let Middleware::Retry {
            attempts,
            interval_ms,
        } = mw
        {
            proxy["load_balancing"] = json!({
                "selection_policy": {"policy": "round_robin"},
                "retries": attempts.saturating_sub(1),
                // Nanoseconds. Caddy waits this long before every retry (Traefik doubles it
                // each time); Traefik's `0s` is 1 ns, because Caddy's provisioning may replace
                // a zero with its 250 ms default.
                "try_interval": interval_ms.saturating_mul(1_000_000).max(1),
            });
        }
    }
}

fn retry(r: &crate::render::model::Retry) -> Middleware {
    Middleware::Retry {
        attempts: r.attempts,
        interval_ms: u64::try_from(r.initial_interval.as_millis()).unwrap_or(u64::MAX),
    }
}

/// A set's handlers, in Traefik's chain order: headers, allow list, basic auth, forward auth,
/// compression, body limit.
fn set_handlers(name: &str, set: &Policy, secrets: Secrets) -> Result<Vec<Value>, Error> {
    let base = format!("spec.policies.{name}");
    let mut out = Vec::new();
    if !set.headers.is_empty() {
        let set_map: serde_json::Map<String, Value> = set
            .headers
            .iter()
            .map(|(k, v)| (k.clone(), json!([v])))
            .collect();
        // As the entry point's: at once, so the 401/403 of later handlers carry them, and
        // deferred, so they replace (not duplicate) the same header from the backend.
        out.push(json!({"handler": "headers", "response": {"set": set_map.clone()}}));
        out.push(json!({"handler": "headers", "response": {"set": set_map, "deferred": true}}));
    }
    if !set.ip_allow.is_empty() {
        let ranges: Vec<String> = set.ip_allow.iter().map(ToString::to_string).collect();
        out.push(json!({"handler": "subroute", "routes": [{
            "match": [{"not": [{"remote_ip": {"ranges": ranges}}]}],
            "handle": [{"handler": "static_response", "status_code": 403, "body": "Forbidden\n"}]
        }]}));
    }
    if let Some(auth) = &set.basic_auth {
        out.push(basic_auth_handler(auth, secrets).map_err(|e| rebase(e, &base))?);
    }
    if set.rate_limit.is_some() {
        return Err(Error::Unsupported {
            field: format!("{base}.rateLimit"),
            reason: format!(
                "module {} is missing from Caddy's stock build",
                super::config::RATE_LIMIT_MODULE
            ),
        });
    }
    out.extend(common_handlers(set, &base)?);
    Ok(out)
}

/// Forward auth, compression and the request body limit of `policy`, in that order; refuses
/// what the stock build cannot express.
fn common_handlers(policy: &Policy, base: &str) -> Result<Vec<Value>, Error> {
    let unsupported = |field: &str, reason: &str| Error::Unsupported {
        field: format!("{base}.{field}"),
        reason: reason.into(),
    };
    if policy.circuit_breaker.is_some() {
        return Err(unsupported(
            "circuitBreaker",
            "the namespace http.reverse_proxy.circuit_breakers holds no module in Caddy's stock build",
        ));
    }
    let mut out = Vec::new();
    if let Some(f) = &policy.forward_auth {
        out.push(forward_auth(f, base)?);
    }
    if let Some(c) = &policy.compress {
        out.push(compress(c));
    }
    if let Some(b) = &policy.buffering {
        if b.max_response_body_bytes > 0 {
            return Err(unsupported(
                "buffering.maxResponseBodyBytes",
                "Caddy's stock build limits request bodies only",
            ));
        }
        out.extend(request_body(b));
    }
    Ok(out)
}

/// Traefik's forwardAuth as Caddy's `forward_auth` directive adapts it: a `reverse_proxy` to
/// the auth service with the method rewritten to GET and the URI to the address's; a 2xx answer
/// copies `authResponseHeaders` onto the request (a client's own value of such a header is
/// deleted first, so it cannot be forged) and the request goes on to the next handler; any
/// other answer is passed to the client as is.
fn forward_auth(f: &ForwardAuth, base: &str) -> Result<Value, Error> {
    let field = format!("{base}.forwardAuth");
    if f.trust_forward_header {
        return Err(Error::Unsupported {
            field: format!("{field}.trustForwardHeader"),
            reason: "Caddy trusts X-Forwarded-* per server (trusted_proxies), not per handler"
                .into(),
        });
    }
    let invalid = |reason: &str| Error::InvalidValue {
        field: format!("{field}.address"),
        reason: reason.into(),
    };
    // The address is not echoed: validation refuses credentials in it, but never trust input.
    let url = url::Url::parse(&f.address).map_err(|_| invalid("is not a URL"))?;
    if !url.username().is_empty() || url.password().is_some() {
        return Err(invalid("must not carry credentials (user:password@)"));
    }
    let host = url.host_str().ok_or_else(|| invalid("has no host"))?;
    let port = url
        .port_or_known_default()
        .ok_or_else(|| invalid("has no port"))?;
    let dial = format!("{host}:{port}");
    let mut uri = url.path().to_string();
    if let Some(q) = url.query() {
        uri = format!("{uri}?{q}");
    }
    // Traefik sends the auth request to the address's own host, the client's in
    // X-Forwarded-Host (which reverse_proxy sets, with X-Forwarded-For/-Proto).
    let host_header = url
        .port()
        .map_or_else(|| host.to_string(), |p| format!("{host}:{p}"));
    let mut copy = vec![json!({"handle": [{"handler": "vars"}]})];
    if !f.auth_response_headers.is_empty() {
        copy.push(json!({"handle": [{"handler": "headers", "request": {"delete": f.auth_response_headers}}]}));
    }
    for h in &f.auth_response_headers {
        let value = format!("{{http.reverse_proxy.header.{h}}}");
        copy.push(json!({
            "match": [{"not": [{"vars": {value.clone(): [""]}}]}],
            "handle": [{"handler": "headers", "request": {"set": {h.clone(): [value]}}}]
        }));
    }
    let mut proxy = json!({
        "handler": "reverse_proxy",
        "upstreams": [{"dial": dial}],
        "rewrite": {"method": "GET", "uri": uri},
        "headers": {"request": {"set": {
            "Host": [host_header],
            "X-Forwarded-Method": ["{http.request.method}"],
            "X-Forwarded-Uri": ["{http.request.uri}"]
        }}},
        "handle_response": [{"match": {"status_code": [2]}, "routes": copy}]
    });
    if url.scheme() == "https" {
        let mut tls = json!({});
        if let Some(files) = &f.tls {
            if let Some(ca) = &files.ca {
                tls["ca"] = json!({"provider": "file", "pem_files": [ca]});
            }
            if let (Some(cert), Some(key)) = (&files.cert, &files.key) {
                tls["client_certificate_file"] = json!(cert);
                tls["client_certificate_key_file"] = json!(key);
            }
        }
        proxy["transport"] = json!({"protocol": "http", "tls": tls});
    }
    Ok(proxy)
}

/// gzip and zstd (the stock build has no brotli encoder), only for clients that accept them,
/// from Traefik's `minResponseBodyBytes` on.
fn compress(c: &Compress) -> Value {
    json!({
        "handler": "encode",
        "encodings": {"gzip": {}, "zstd": {}},
        "prefer": ["gzip", "zstd"],
        "minimum_length": c.min_response_body_bytes,
    })
}

/// A body over the limit fails the upstream read, which `reverse_proxy` answers with 413.
fn request_body(b: &Buffering) -> Option<Value> {
    (b.max_request_body_bytes > 0)
        .then(|| json!({"handler": "request_body", "max_size": b.max_request_body_bytes}))
}

/// A basic-auth error of `config::bcrypt_accounts` named under `base` instead of the entry
/// point's field.
fn rebase(e: Error, base: &str) -> Error {
    let f = |field: String| field.replace("spec.middlewares", base);
    match e {
        Error::InvalidValue { field, reason } => Error::InvalidValue {
            field: f(field),
            reason,
        },
        Error::Unsupported { field, reason } => Error::Unsupported {
            field: f(field),
            reason,
        },
        other => other,
    }
}

#[cfg(test)]
mod tests;
