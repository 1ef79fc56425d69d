//! The Consul HTTP API: KV, transactions, sessions, catalog, health, status, agent, ACLs.
//!
//! Held to `contracts/CONSUL.md`: plain-text errors with Consul's status codes, `X-Consul-Index`
//! ≥ 1 on every read (404s included), blocking queries on every read endpoint, one raft index per
//! write. State lives in [`store::Store`] behind a lock; every index change is published on a
//! `watch` channel that blocked readers wait on.

pub mod acl;
mod agent;
mod catalog;
mod kv;
mod probes;
mod session;
pub mod store;

use std::path::PathBuf;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::{FromRequestParts, Query, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, put};
use serde_json::Value;
use tokio::sync::watch;
use tokio::time::Instant;

use crate::blocking;
use crate::persist::{self, Persister};
pub use acl::TokenPolicy;
pub use acl::rules::RulesError;
use store::Store;

/// File name of the Consul snapshot inside `data_dir`.
pub const SNAPSHOT_FILE: &str = "consul-state.json";

/// Settings of the Consul side.
#[derive(Clone, Default)]
pub struct ConsulConfig {
    /// The management token; ACLs are on (default policy `deny`) when set.
    pub acl_token: Option<String>,
    /// Directory for persisted state.
    pub data_dir: Option<PathBuf>,
    /// Consul's `session_ttl_min` agent option (`None`: its default, 10 s). Lowering it is
    /// what Consul's own tests do to watch TTL invalidation in seconds.
    pub session_ttl_min: Option<Duration>,
}

/// Leaves the token out: configurations get logged, secrets must not.
impl std::fmt::Debug for ConsulConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConsulConfig")
            .field("acl_token", &self.acl_token.as_ref().map(|_| "<redacted>"))
            .field("data_dir", &self.data_dir)
            .field("session_ttl_min", &self.session_ttl_min)
            .finish()
    }
}

/// Errors creating the Consul state.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The snapshot in `data_dir` could not be restored.
    #[error("failed to restore Consul state: {0}")]
    Restore(#[source] persist::Error),
}

struct Inner {
    store: RwLock<Store>,
    changes: watch::Sender<u64>,
    acl_token: Option<String>,
    restricted: RwLock<acl::Restricted>,
    snapshot_path: Option<PathBuf>,
    persister: Option<Persister>,
    tasks: Mutex<Vec<tokio::task::JoinHandle<()>>>,
}

/// Shared state of the Consul API.
#[derive(Clone)]
pub struct ConsulState {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for ConsulState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConsulState")
            .field("index", &self.index())
            .finish()
    }
}

impl ConsulState {
    /// Creates the state, restoring it from `data_dir` when a snapshot is there, and starts the
    /// session TTL reaper (and the snapshot writer). Must run inside a tokio runtime.
    pub fn new(config: ConsulConfig) -> Result<ConsulState, Error> {
        let snapshot_path = config.data_dir.as_ref().map(|d| d.join(SNAPSHOT_FILE));
        let restored = match &snapshot_path {
            Some(path) => persist::read_json::<Store>(path).map_err(Error::Restore)?,
            None => None,
        };
        let mut store = match restored {
            Some(mut s) => {
                s.rearm_after_restore(Instant::now());
                s
            }
            None => Store::seeded(),
        };
        if let Some(min) = config.session_ttl_min {
            store.set_session_ttl_min(min);
        }
        if let Some(secret) = &config.acl_token {
            store.acl_bootstrap(secret, &acl::rfc3339_now());
        }
        let (changes, _) = watch::channel(store.index);
        let state = ConsulState {
            inner: Arc::new_cyclic(|weak: &std::sync::Weak<Inner>| {
                let mut tasks = Vec::new();
                let persister = snapshot_path.as_ref().map(|path| {
                    let weak = weak.clone();
                    let (p, task) =
                        Persister::spawn(path.clone(), Duration::from_millis(20), move || {
                            let inner = weak.upgrade().ok_or_else(|| {
                                persist::Error::Encode(serde::ser::Error::custom("twin stopped"))
                            })?;
                            let store = inner.store.read().unwrap_or_else(|e| e.into_inner());
                            serde_json::to_vec(&*store).map_err(persist::Error::Encode)
                        });
                    tasks.push(task);
                    p
                });
                Inner {
                    store: RwLock::new(store),
                    changes,
                    acl_token: config.acl_token.clone(),
                    restricted: RwLock::new(acl::Restricted::default()),
                    snapshot_path: snapshot_path.clone(),
                    persister,
                    tasks: Mutex::new(tasks),
                }
            }),
        };
        let reaper = tokio::spawn(timers(Arc::downgrade(&state.inner), state.changes()));
        state
            .inner
            .tasks
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(reaper);
        Ok(state)
    }

    /// The HTTP routes of the Consul API.
    pub fn router(&self) -> Router {
        let api = Router::new()
            .route(
                "/v1/kv/",
                get(kv::get_root).put(kv::put_root).delete(kv::delete_root),
            )
            .route(
                "/v1/kv/{*key}",
                get(kv::get).put(kv::put).delete(kv::delete),
            )
            .route("/v1/txn", put(kv::txn))
            .route("/v1/session/create", put(session::create))
            .route("/v1/session/destroy/{id}", put(session::destroy))
            .route("/v1/session/renew/{id}", put(session::renew))
            .route("/v1/session/info/{id}", get(session::info))
            .route("/v1/session/list", get(session::list))
            .route("/v1/session/node/{node}", get(session::node))
            .route("/v1/catalog/register", put(catalog::register))
            .route("/v1/catalog/deregister", put(catalog::deregister))
            .route("/v1/catalog/services", get(catalog::services))
            .route("/v1/catalog/service/{name}", get(catalog::service))
            .route("/v1/catalog/nodes", get(catalog::nodes))
            .route("/v1/health/service/{name}", get(catalog::health_service))
            .route("/v1/health/state/{state}", get(catalog::health_state))
            .route("/v1/health/checks/{name}", get(catalog::health_checks))
            .route("/v1/health/node/{node}", get(catalog::health_node))
            .merge(agent::routes())
            .merge(acl::routes())
            .route_layer(axum::middleware::from_fn_with_state(
                self.clone(),
                acl::layer,
            ))
            .route("/v1/catalog/datacenters", get(catalog::datacenters))
            .route("/v1/status/leader", get(agent::status_leader))
            .route("/v1/status/peers", get(agent::status_peers))
            .fallback(|| async { text(StatusCode::NOT_FOUND, "404 page not found\n") });
        api.layer(axum::middleware::from_fn(datacenter))
            .layer(axum::middleware::from_fn(oss_namespace))
            .layer(axum::middleware::from_fn_with_state(
                self.clone(),
                default_acl_policy,
            ))
            .layer(axum::extract::DefaultBodyLimit::max(16 * 1024 * 1024))
            .with_state(self.clone())
    }

    /// The current raft index.
    pub fn index(&self) -> u64 {
        self.read(|s| s.index)
    }

    /// Reads the store.
    pub fn read<R>(&self, f: impl FnOnce(&Store) -> R) -> R {
        let store = self.inner.store.read().unwrap_or_else(|e| e.into_inner());
        f(&store)
    }

    /// Mutates the store, then wakes blocked readers and schedules a snapshot when the index moved.
    pub fn write<R>(&self, f: impl FnOnce(&mut Store) -> R) -> R {
        let (out, before, after) = {
            let mut store = self.inner.store.write().unwrap_or_else(|e| e.into_inner());
            let before = store.index;
            let out = f(&mut store);
            (out, before, store.index)
        };
        if after != before {
            self.inner.changes.send_replace(after);
            if let Some(p) = &self.inner.persister {
                p.mark_dirty();
            }
        }
        out
    }

    /// A receiver that changes whenever the raft index moves.
    pub fn changes(&self) -> watch::Receiver<u64> {
        self.inner.changes.subscribe()
    }

    /// How many blocking queries are waiting for a change right now (plus internal subscribers
    /// of the change channel, if any). Lets tests and benchmarks wait until watchers are parked.
    pub fn watchers(&self) -> usize {
        self.inner.changes.receiver_count()
    }

    /// Invalidates a session now, as if its TTL had run out (fault injection). Returns whether
    /// it existed.
    pub fn expire_session(&self, id: &str) -> bool {
        self.write(|s| s.session_invalidate(id, Instant::now()))
    }

    /// Adds a token whose rules are narrower than the configured one (which may do
    /// everything): requests with it are refused or filtered the way Consul refuses and
    /// filters them (see [`TokenPolicy`]). Works with or without a configured ACL token.
    pub fn add_restricted_token(&self, secret: &str, policy: TokenPolicy) {
        // The shorthand always renders to a valid document.
        if let Ok(authz) = acl::rules::Authorizer::parse(&policy.rules()) {
            self.restrict(secret, authz);
        }
    }

    /// Adds a token governed by a Consul policy document (HCL or JSON rules, exactly what
    /// `PUT /v1/acl/policy` takes), enforced with or without a configured ACL token. With
    /// ACLs on, the same can be done over HTTP with `/v1/acl/policy` and `/v1/acl/token`.
    pub fn add_token_with_rules(&self, secret: &str, rules: &str) -> Result<(), RulesError> {
        let authz = acl::rules::Authorizer::parse(rules)?;
        self.restrict(secret, authz);
        Ok(())
    }

    fn restrict(&self, secret: &str, authz: acl::rules::Authorizer) {
        self.inner
            .restricted
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .add(secret, authz);
    }

    /// Forgets every KV tombstone, as Consul's tombstone GC does, so prefix indexes may go
    /// backwards (the "reset the index" case of blocking-query clients).
    pub fn reap_tombstones(&self) {
        let mut store = self.inner.store.write().unwrap_or_else(|e| e.into_inner());
        store.reap_tombstones();
        drop(store);
        self.inner.changes.send_modify(|_| {});
    }

    /// Writes a final snapshot and stops background tasks.
    pub async fn shutdown(&self) {
        let tasks: Vec<_> =
            std::mem::take(&mut *self.inner.tasks.lock().unwrap_or_else(|e| e.into_inner()));
        for t in tasks {
            t.abort();
        }
        if let Some(path) = &self.inner.snapshot_path {
            let bytes = self.read(serde_json::to_vec);
            match bytes
                .map_err(persist::Error::Encode)
                .and_then(|b| persist::write_atomic(path, &b))
            {
                Ok(()) => {}
                Err(e) => tracing::warn!(error = %e, "final Consul snapshot failed"),
            }
        }
    }
}

/// Consul's timers. A TTL check turns critical when its TTL passes without an update
/// (SRC agent/checks/check.go `CheckTTL`); HTTP and TCP checks run every interval
/// ([`probes`]). A TTL session is invalidated when `TTL × SessionTTLMultiplier` (2) has
/// passed since its creation or last renewal (SRC agent/consul/session_ttl.go
/// `createSessionTimer`), so never before its TTL and at the latest at twice it, the bound the
/// docs give. The task sleeps until the earliest deadline and re-plans after every write (a
/// renewal only moves a deadline later, so waking at the old one is harmless).
async fn timers(inner: std::sync::Weak<Inner>, mut changes: watch::Receiver<u64>) {
    loop {
        let Some(strong) = inner.upgrade() else {
            return;
        };
        let next = ConsulState { inner: strong }.read(Store::next_deadline);
        let idle = Instant::now() + Duration::from_secs(1);
        let wake = next.map_or(idle, |d| d.min(idle));
        tokio::select! {
            _ = tokio::time::sleep_until(wake) => {}
            changed = changes.changed() => {
                if changed.is_err() {
                    return;
                }
                continue;
            }
        }
        let Some(strong) = inner.upgrade() else {
            return;
        };
        let state = ConsulState { inner: strong };
        let now = Instant::now();
        for id in state.read(|s| s.expired_sessions(now)) {
            tracing::debug!(session = %id, "session TTL expired");
            state.write(|s| s.session_invalidate(&id, now));
        }
        for id in state.read(|s| s.expired_checks(now)) {
            tracing::debug!(check = %id, "check missed its TTL, now critical");
            state.write(|s| s.expire_check(&id, now));
        }
        probes::start_due(&state);
    }
}

// === request helpers ===

/// Query parameters in order, with Consul's presence-flag semantics.
#[derive(Debug, Default)]
pub(crate) struct Params(Vec<(String, String)>);

impl Params {
    pub(crate) fn from_query(q: Query<Vec<(String, String)>>) -> Params {
        Params(q.0)
    }

    pub(crate) fn has(&self, name: &str) -> bool {
        self.0.iter().any(|(k, _)| k == name)
    }

    pub(crate) fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    pub(crate) fn all(&self, name: &str) -> Vec<&str> {
        self.0
            .iter()
            .filter(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
            .collect()
    }

    /// Go's `url.Values.Encode()`: sorted by key.
    pub(crate) fn encode(&self) -> String {
        let mut pairs = self.0.clone();
        pairs.sort_by(|a, b| a.0.cmp(&b.0));
        pairs
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join("&")
    }
}

/// The blocking and consistency options of a read.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ReadOpts {
    pub(crate) min_index: u64,
    pub(crate) wait: Duration,
    pub(crate) consistency: &'static str,
}

/// Parses `index`, `wait`, `stale`, `consistent` as Consul's `parseWait`/`parseConsistency` do.
#[allow(clippy::result_large_err)] // the error is the finished HTTP answer
pub(crate) fn read_opts(p: &Params) -> Result<ReadOpts, Response> {
    let min_index = match p.get("index") {
        None | Some("") => 0,
        Some(v) => v
            .parse::<u64>()
            .map_err(|_| text(StatusCode::BAD_REQUEST, "Invalid index"))?,
    };
    let requested = match p.get("wait") {
        None | Some("") => None,
        Some(v) => Some(
            blocking::parse_go_duration(v)
                .ok_or_else(|| text(StatusCode::BAD_REQUEST, "Invalid wait time"))?,
        ),
    };
    let stale = p.has("stale");
    let consistent = p.has("consistent");
    if stale && consistent {
        return Err(text(
            StatusCode::BAD_REQUEST,
            "Cannot specify ?stale with ?consistent, conflicting semantics.",
        ));
    }
    let consistency = if stale {
        "stale"
    } else if consistent {
        "consistent"
    } else {
        "leader"
    };
    Ok(ReadOpts {
        min_index,
        wait: blocking::effective_wait(requested),
        consistency,
    })
}

/// A blocking read's request: the state, the query and its blocking options (a bad `index`,
/// `wait` or consistency pair is refused before the handler runs, with Consul's answer).
pub(crate) struct BlockingRead {
    pub(crate) st: ConsulState,
    pub(crate) params: Params,
    pub(crate) opts: ReadOpts,
}

impl FromRequestParts<ConsulState> for BlockingRead {
    type Rejection = Response;

    async fn from_request_parts(
        parts: &mut Parts,
        st: &ConsulState,
    ) -> Result<BlockingRead, Response> {
        let q = Query::<Vec<(String, String)>>::from_request_parts(parts, st)
            .await
            .map_err(IntoResponse::into_response)?;
        let params = Params::from_query(q);
        let opts = read_opts(&params)?;
        Ok(BlockingRead {
            st: st.clone(),
            params,
            opts,
        })
    }
}

impl BlockingRead {
    /// Answers a blocking read of `f` (the index and the body) as JSON with Consul's query-meta
    /// headers.
    pub(crate) async fn json(&self, f: impl Fn(&Store) -> (u64, Value)) -> Response {
        let (index, body) = blocking_read(&self.st, self.opts, f).await;
        json(StatusCode::OK, meta_headers(index, &self.opts), &body)
    }
}

/// Runs a blocking read against the store.
pub(crate) async fn blocking_read<T>(
    st: &ConsulState,
    opts: ReadOpts,
    f: impl Fn(&Store) -> (u64, T),
) -> (u64, T) {
    let (index, value) =
        blocking::block_until(st.changes(), opts.min_index, opts.wait, || st.read(&f)).await;
    (index.max(1), value)
}

/// The query-meta headers of a read (`setMeta` in Consul).
pub(crate) fn meta_headers(index: u64, opts: &ReadOpts) -> HeaderMap {
    let mut h = HeaderMap::new();
    h.insert("X-Consul-Index", HeaderValue::from(index.max(1)));
    h.insert("X-Consul-KnownLeader", HeaderValue::from_static("true"));
    h.insert("X-Consul-LastContact", HeaderValue::from_static("0"));
    h.insert(
        "X-Consul-Effective-Consistency",
        HeaderValue::from_static(opts.consistency),
    );
    h
}

/// A JSON response.
pub(crate) fn json(status: StatusCode, headers: HeaderMap, body: &Value) -> Response {
    let bytes = serde_json::to_vec(body).unwrap_or_default();
    let mut resp = (status, bytes).into_response();
    resp.headers_mut().extend(headers);
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    resp
}

/// A plain-text error, as Consul writes them.
pub(crate) fn text(status: StatusCode, msg: &str) -> Response {
    let mut resp = (status, msg.to_string()).into_response();
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    resp
}

/// Maps a store error onto Consul's status codes.
pub(crate) fn store_error(e: &store::StoreError) -> Response {
    match e {
        store::StoreError::BadRequest(m) => text(StatusCode::BAD_REQUEST, m),
        other => text(StatusCode::INTERNAL_SERVER_ERROR, &other.to_string()),
    }
}

/// Reads the request body up to `limit` bytes (a larger body is a 413 as in Consul).
pub(crate) async fn body_bytes(body: Body, limit: usize) -> Result<bytes::Bytes, Response> {
    axum::body::to_bytes(body, limit.saturating_add(1))
        .await
        .map_err(|_| text(StatusCode::PAYLOAD_TOO_LARGE, "Request body too large"))
}

/// Consul's 400 for a request body that does not decode.
pub(crate) fn decode_failed(msg: impl std::fmt::Display) -> Response {
    text(
        StatusCode::BAD_REQUEST,
        &format!("Request decode failed: {msg}"),
    )
}

/// A JSON request body of at most `limit` bytes, or Consul's answer (413, 400).
pub(crate) async fn json_body<T: serde::de::DeserializeOwned>(
    body: Body,
    limit: usize,
) -> Result<T, Response> {
    let bytes = body_bytes(body, limit).await?;
    serde_json::from_slice(&bytes).map_err(decode_failed)
}

/// [`json_body`] for endpoints whose fields are all optional: a blank body is `T::default()`.
pub(crate) async fn json_body_or_default<T: serde::de::DeserializeOwned + Default>(
    body: Body,
    limit: usize,
) -> Result<T, Response> {
    let bytes = body_bytes(body, limit).await?;
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    serde_json::from_slice(&bytes).map_err(decode_failed)
}

/// `?dc=` naming another datacenter: the twin is a single-datacenter cluster, so Consul's RPC
/// forwarding fails as it does for an unknown datacenter.
async fn datacenter(req: Request, next: Next) -> Response {
    let other = req.uri().query().is_some_and(|q| {
        q.split('&').any(|kv| {
            kv.strip_prefix("dc=")
                .is_some_and(|dc| !dc.is_empty() && dc != store::DATACENTER)
        })
    });
    if other {
        return text(StatusCode::INTERNAL_SERVER_ERROR, "No path to datacenter");
    }
    next.run(req).await
}

/// The twin is Consul OSS (CE): endpoints that call `parseEntMeta` refuse a namespace with a
/// 400 before doing anything else (SRC agent/http_ce.go), header first, then `?ns=`. The
/// catalog register/deregister bodies and txn ops carry their namespace in JSON instead.
async fn oss_namespace(req: Request, next: Next) -> Response {
    let path = req.uri().path();
    // The agent's service and check endpoints parse it too (`parseEntMetaNoWildcard`).
    let parses_ns = [
        "/v1/kv/",
        "/v1/session/",
        "/v1/catalog/",
        "/v1/health/",
        "/v1/agent/service",
        "/v1/agent/check",
    ]
    .iter()
    .any(|p| path.starts_with(p))
        && !matches!(path, "/v1/catalog/register" | "/v1/catalog/deregister");
    if !parses_ns {
        return next.run(req).await;
    }
    let header_ns = req
        .headers()
        .get("X-Consul-Namespace")
        .is_some_and(|v| !v.is_empty());
    if header_ns {
        return text(
            StatusCode::BAD_REQUEST,
            "Invalid header: \"X-Consul-Namespace\" - Namespaces are a Consul Enterprise feature",
        );
    }
    // Go's `Query().Get("ns")` is the first value, percent-decoded; an empty one is no namespace.
    let query_ns = Query::<Vec<(String, String)>>::try_from_uri(req.uri())
        .ok()
        .and_then(|q| q.0.into_iter().find(|(k, _)| k == "ns"))
        .is_some_and(|(_, v)| !v.is_empty());
    if query_ns {
        return text(
            StatusCode::BAD_REQUEST,
            "Invalid query parameter: \"ns\" - Namespaces are a Consul Enterprise feature",
        );
    }
    next.run(req).await
}

/// `X-Consul-Default-ACL-Policy` on every response (Consul ≥ 1.9).
async fn default_acl_policy(State(st): State<ConsulState>, req: Request, next: Next) -> Response {
    let mut resp = next.run(req).await;
    let policy = if st.inner.acl_token.is_some() {
        "deny"
    } else {
        "allow"
    };
    resp.headers_mut().insert(
        "X-Consul-Default-ACL-Policy",
        HeaderValue::from_static(policy),
    );
    resp
}
