//! Caddy: the whole JSON config, loaded through its admin API (`POST /load` keeps the old config
//! when the new one fails). Routes come from the discovered services the caller passes in, so the
//! loop can sync Caddy from the catalog without consul-template.
//!
//! Layout: one server per entry point. A TLS entry point gets automatic HTTPS (certificate files
//! from the spec are loaded, ACME when configured); a plain entry point that redirects answers
//! every request with a permanent redirect to the HTTPS entry point. The policy (security
//! headers, IP allow list, basic auth) runs before the service routes; unknown hosts get 404.

use serde_json::{Value, json};

use super::Error;
use super::model::{EntryPoint, Model};

/// A service Caddy proxies to: the hosts it answers for and its healthy upstreams.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CaddyService {
    /// Service name; routes are ordered by it so the output is stable.
    pub name: String,
    /// Host names matched (`svc.example.com`).
    pub hosts: Vec<String>,
    /// Upstream `host:port` addresses.
    pub upstreams: Vec<String>,
}

/// Name of the server built for an entry point.
fn server_name(ep: &EntryPoint) -> String {
    ep.name.clone()
}

/// Renders Caddy's JSON config for `model` and the given services: the live config the loop
/// `POST`s to `/load`. It carries the basic-auth hashes, so it never goes into the job.
pub fn render_caddy(model: &Model, services: &[CaddyService]) -> Result<Value, Error> {
    render_with(model, services, Secrets::Include)
}

/// Renders the config embedded in the Nomad job: the live config without services and without
/// secrets. Anyone with `read-job` can read a job, so basic-auth hashes must not be in it. Where
/// basic auth is on, every request is answered 401 (fail closed) until the operator loads the
/// full config through the admin API.
pub fn render_caddy_bootstrap(model: &Model) -> Result<Value, Error> {
    render_with(model, &[], Secrets::Withhold)
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Secrets {
    Include,
    Withhold,
}

fn render_with(model: &Model, services: &[CaddyService], secrets: Secrets) -> Result<Value, Error> {
    let mut servers = serde_json::Map::new();
    let tls_ep = model.entry_points.iter().find(|ep| ep.tls);
    let policy = policy_routes(model, secrets)?;
    let service_routes = service_routes(services)?;

    for ep in &model.entry_points {
        let mut server = serde_json::Map::new();
        server.insert("listen".into(), json!([ep.address.to_addr_string()]));
        let mut routes: Vec<Value> = Vec::new();
        match (&ep.redirect_to, ep.tls) {
            (Some(to), false) => {
                let target = model
                    .entry_points
                    .iter()
                    .find(|e| &e.name == to)
                    .ok_or_else(|| Error::InvalidValue {
                        field: format!("entryPoints.{}.redirectTo", ep.name),
                        reason: format!("no entry point named {to:?}"),
                    })?;
                let port = if target.address.port == 443 {
                    String::new()
                } else {
                    format!(":{}", target.address.port)
                };
                routes.push(json!({
                    "handle": [{
                        "handler": "static_response",
                        "status_code": 308,
                        "headers": {"Location": [format!("https://{{http.request.host}}{port}{{http.request.uri}}")]}
                    }]
                }));
                server.insert("automatic_https".into(), json!({"disable": true}));
            }
            _ => {
                routes.extend(policy.iter().cloned());
                routes.extend(service_routes.iter().cloned());
                routes.push(json!({
                    "handle": [{"handler": "static_response", "status_code": 404, "body": "no service for this host\n"}]
                }));
                if ep.tls {
                    server.insert("tls_connection_policies".into(), json!([{}]));
                    // Redirects are our own route on the plain entry point.
                    server.insert("automatic_https".into(), json!({"disable_redirects": true}));
                } else {
                    server.insert("automatic_https".into(), json!({"disable": true}));
                }
            }
        }
        server.insert("routes".into(), Value::Array(routes));
        servers.insert(server_name(ep), Value::Object(server));
    }

    let mut http = serde_json::Map::new();
    // Automatic HTTPS decides which servers are HTTPS by port; tell it the entry point ports.
    if let Some(plain) = model.entry_points.iter().find(|ep| !ep.tls) {
        http.insert("http_port".into(), json!(plain.address.port));
    }
    if let Some(tls) = tls_ep {
        http.insert("https_port".into(), json!(tls.address.port));
    }
    http.insert("servers".into(), Value::Object(servers));

    let mut apps = serde_json::Map::new();
    apps.insert("http".into(), Value::Object(http));
    if let Some(tls_app) = tls_app(model) {
        apps.insert("tls".into(), tls_app);
    }

    Ok(json!({
        "admin": {"listen": model.dashboard.address.to_addr_string()},
        "logging": {"logs": {"default": {"encoder": {"format": "json"}}}},
        "storage": {"module": "file_system", "root": model.tls.cert_dir},
        "apps": Value::Object(apps),
    }))
}

fn tls_app(model: &Model) -> Option<Value> {
    let mut app = serde_json::Map::new();
    if !model.tls.certificates.is_empty() {
        let files: Vec<Value> = model
            .tls
            .certificates
            .iter()
            .map(|c| json!({"certificate": c.cert_file, "key": c.key_file}))
            .collect();
        app.insert("certificates".into(), json!({"load_files": files}));
    }
    if let Some(acme) = &model.tls.acme {
        let mut issuer = json!({"module": "acme", "email": acme.email});
        if let Some(ca) = &acme.ca_server {
            issuer["ca"] = json!(ca);
        }
        app.insert(
            "automation".into(),
            json!({"policies": [{"issuers": [issuer]}]}),
        );
    }
    (!app.is_empty()).then_some(Value::Object(app))
}

/// Routes applied before the service routes: headers on every response, the IP allow list
/// (403 outside it), basic auth. Caddy has no built-in rate limiter, so `rateLimit` is refused.
fn policy_routes(model: &Model, secrets: Secrets) -> Result<Vec<Value>, Error> {
    let policy = &model.policy;
    if policy.rate_limit.is_some() {
        return Err(Error::Unsupported {
            field: "middlewares.rateLimit".to_string(),
            reason: "Caddy has no built-in rate limiter".to_string(),
        });
    }
    let mut routes = Vec::new();
    if !policy.headers.is_empty() {
        let set: serde_json::Map<String, Value> = policy
            .headers
            .iter()
            .map(|(k, v)| (k.clone(), json!([v])))
            .collect();
        // Set now, so error responses (401, 403) of the handlers after it carry them, and set
        // again deferred, so they replace (not duplicate) the same header from a backend.
        routes.push(json!({"handle": [
            {"handler": "headers", "response": {"set": set.clone()}},
            {"handler": "headers", "response": {"set": set, "deferred": true}}
        ]}));
    }
    if !policy.ip_allow.is_empty() {
        let ranges: Vec<String> = policy.ip_allow.iter().map(ToString::to_string).collect();
        routes.push(json!({
            "match": [{"not": [{"remote_ip": {"ranges": ranges}}]}],
            "handle": [{"handler": "static_response", "status_code": 403, "body": "Forbidden\n"}],
            "terminal": true
        }));
    }
    if let Some(auth) = &policy.basic_auth {
        let mut accounts = Vec::new();
        for (i, line) in auth.users.iter().enumerate() {
            let field = format!("middlewares.basicAuth.users[{i}]");
            let Some((user, hash)) = line.split_once(':') else {
                return Err(Error::InvalidValue {
                    field,
                    reason: "expected user:hash".to_string(),
                });
            };
            // Caddy verifies bcrypt (and argon2id) hashes only, not Apache's apr1 MD5.
            if !(hash.starts_with("$2a$") || hash.starts_with("$2b$") || hash.starts_with("$2y$")) {
                return Err(Error::Unsupported {
                    field,
                    reason: "Caddy needs bcrypt hashes ($2a$/$2b$/$2y$)".to_string(),
                });
            }
            accounts.push(json!({"username": user, "password": hash}));
        }
        if secrets == Secrets::Withhold {
            let challenge = format!("Basic realm=\"{}\"", auth.realm);
            routes.push(json!({
                "handle": [{
                    "handler": "static_response",
                    "status_code": 401,
                    "headers": {"Www-Authenticate": [challenge]},
                    "body": "Unauthorized\n"
                }],
                "terminal": true
            }));
            return Ok(routes);
        }
        routes.push(json!({
            "handle": [{
                "handler": "authentication",
                "providers": {"http_basic": {"accounts": accounts, "realm": auth.realm, "hash": {"algorithm": "bcrypt"}}}
            }]
        }));
    }
    Ok(routes)
}

fn service_routes(services: &[CaddyService]) -> Result<Vec<Value>, Error> {
    let mut sorted: Vec<&CaddyService> = services.iter().collect();
    sorted.sort_by(|a, b| a.name.cmp(&b.name));
    let mut routes = Vec::new();
    for svc in sorted {
        if svc.hosts.is_empty() || svc.upstreams.is_empty() {
            continue;
        }
        for host in &svc.hosts {
            if host.is_empty() || host.chars().any(|c| c.is_whitespace() || c.is_control()) {
                return Err(Error::InvalidValue {
                    field: format!("services.{}.hosts", svc.name),
                    reason: format!("{host:?} is not a host name"),
                });
            }
        }
        let upstreams: Vec<Value> = svc.upstreams.iter().map(|u| json!({"dial": u})).collect();
        routes.push(json!({
            "match": [{"host": svc.hosts}],
            "handle": [{"handler": "reverse_proxy", "upstreams": upstreams}],
            "terminal": true
        }));
    }
    Ok(routes)
}
