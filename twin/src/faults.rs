//! Fault injection and request accounting for both APIs, usable from tests as library calls
//! ([`Faults`]) and over HTTP under `/_twin/...` (a path neither Consul nor Nomad uses).
//!
//! Control endpoints, served on both APIs (each can control either):
//!
//! | request | effect |
//! |---|---|
//! | `GET /_twin/requests` | `{"consul": n, "nomad": n}` requests served so far |
//! | `PUT /_twin/faults/{api}/stop[?for_ms=N]` | close the listener and open connections (restart after N ms) |
//! | `PUT /_twin/faults/{api}/start` | listen again on the same port |
//! | `PUT /_twin/faults/{api}/pause` / `resume` | hold every request until resumed |
//! | `PUT /_twin/faults/{api}/latency?ms=N` | delay every request by N ms |
//! | `PUT /_twin/faults/{api}/fail?path=P&status=S` | answer S to paths starting with P |
//! | `DELETE /_twin/faults` | clear every fault and restart stopped APIs |
//! | `PUT /_twin/consul/session/{id}/expire` | invalidate a session as if its TTL ran out |
//! | `PUT /_twin/consul/tombstones/reap` | forget KV tombstones (prefix indexes may go backwards) |
//!
//! With ACLs on (an `acl_token` configured), every control request must carry that management
//! token (`X-Consul-Token`, `X-Nomad-Token` or `Authorization: Bearer`), or it is answered 403:
//! stopping an API or expiring sessions is nothing an anonymous caller may do.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::Duration;

use axum::Router;
use axum::extract::{Path, Query, Request, State};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, put};
use serde::Deserialize;
use serde_json::json;
use tokio::sync::watch;

use crate::consul::ConsulState;
use crate::server::Server;

/// Which API a fault applies to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Api {
    /// The Consul HTTP API.
    Consul,
    /// The Nomad HTTP API.
    Nomad,
}

impl Api {
    fn parse(s: &str) -> Option<Api> {
        match s {
            "consul" => Some(Api::Consul),
            "nomad" => Some(Api::Nomad),
            _ => None,
        }
    }
}

/// One request as the twin saw it (the token query parameter redacted).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestRecord {
    /// HTTP method.
    pub method: String,
    /// Path and query, with `token=` values replaced by `redacted`.
    pub uri: String,
    /// The `User-Agent` header, if any.
    pub user_agent: String,
}

/// How many recent requests each API remembers.
const LOG_CAPACITY: usize = 2000;

struct Knobs {
    latency_ms: AtomicU64,
    fail: Mutex<Vec<(String, u16)>>,
    paused: watch::Sender<bool>,
    requests: AtomicU64,
    log: Mutex<VecDeque<RequestRecord>>,
}

impl Knobs {
    fn new() -> Knobs {
        Knobs {
            latency_ms: AtomicU64::new(0),
            fail: Mutex::new(Vec::new()),
            paused: watch::channel(false).0,
            requests: AtomicU64::new(0),
            log: Mutex::new(VecDeque::new()),
        }
    }
}

struct ApiControl {
    knobs: Knobs,
    server: OnceLock<Server>,
}

struct Inner {
    consul: ApiControl,
    nomad: ApiControl,
    consul_state: ConsulState,
    /// The management token control requests must carry when ACLs are on.
    control_token: Option<String>,
}

impl Inner {
    fn api(&self, api: Api) -> &ApiControl {
        match api {
            Api::Consul => &self.consul,
            Api::Nomad => &self.nomad,
        }
    }
}

/// Errors of fault control.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The API's port could not be bound again after a stop.
    #[error("failed to restart the {api:?} API: {source}")]
    Restart {
        /// Which API.
        api: Api,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
}

/// Handle on the twin's fault injection and request counters. Cheap to clone.
#[derive(Clone)]
pub struct Faults {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Faults {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Faults")
            .field("consul_requests", &self.requests(Api::Consul))
            .field("nomad_requests", &self.requests(Api::Nomad))
            .finish()
    }
}

impl Faults {
    pub(crate) fn new(consul_state: ConsulState, control_token: Option<String>) -> Faults {
        Faults {
            inner: Arc::new(Inner {
                consul: ApiControl {
                    knobs: Knobs::new(),
                    server: OnceLock::new(),
                },
                nomad: ApiControl {
                    knobs: Knobs::new(),
                    server: OnceLock::new(),
                },
                consul_state,
                control_token,
            }),
        }
    }

    /// Wraps an API's router: the control routes under `/_twin`, then faults, counting and
    /// debug logging around every other request.
    pub(crate) fn wrap(&self, api: Api, router: Router) -> Router {
        let weak = Arc::downgrade(&self.inner);
        let wrapped = router.layer(axum::middleware::from_fn_with_state(
            (api, weak.clone()),
            fault_layer,
        ));
        Router::new()
            .nest("/_twin", control_routes(weak))
            .merge(wrapped)
    }

    pub(crate) fn attach(&self, api: Api, server: Server) {
        let _ = self.inner.api(api).server.set(server);
    }

    /// Stops an API: its listener and every open connection close, new connections are refused.
    pub async fn stop(&self, api: Api) {
        if let Some(s) = self.inner.api(api).server.get() {
            s.stop().await;
        }
    }

    /// Starts a stopped API again on the same port.
    pub async fn start(&self, api: Api) -> Result<(), Error> {
        match self.inner.api(api).server.get() {
            Some(s) => s
                .start()
                .await
                .map_err(|source| Error::Restart { api, source }),
            None => Ok(()),
        }
    }

    /// Whether the API is accepting connections.
    pub async fn is_running(&self, api: Api) -> bool {
        match self.inner.api(api).server.get() {
            Some(s) => s.is_running().await,
            None => false,
        }
    }

    /// Holds every request to the API (connections are accepted, answers wait) until resumed.
    pub fn pause(&self, api: Api) {
        self.inner.api(api).knobs.paused.send_replace(true);
    }

    /// Releases a paused API.
    pub fn resume(&self, api: Api) {
        self.inner.api(api).knobs.paused.send_replace(false);
    }

    /// Delays every request to the API by `delay` (zero removes the delay).
    pub fn latency(&self, api: Api, delay: Duration) {
        self.inner
            .api(api)
            .knobs
            .latency_ms
            .store(delay.as_millis() as u64, Ordering::Relaxed);
    }

    /// Answers `status` (plain-text body) to every request whose path starts with `path_prefix`.
    pub fn fail_path(&self, api: Api, path_prefix: &str, status: u16) {
        let mut fail = self
            .inner
            .api(api)
            .knobs
            .fail
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        fail.retain(|(p, _)| p != path_prefix);
        fail.push((path_prefix.to_string(), status));
    }

    /// Removes every fault (latency, failing paths, pauses) and restarts stopped APIs.
    pub async fn clear(&self) -> Result<(), Error> {
        for api in [Api::Consul, Api::Nomad] {
            let knobs = &self.inner.api(api).knobs;
            knobs.latency_ms.store(0, Ordering::Relaxed);
            knobs.fail.lock().unwrap_or_else(|e| e.into_inner()).clear();
            knobs.paused.send_replace(false);
            self.start(api).await?;
        }
        Ok(())
    }

    /// Invalidates a Consul session now (locks released or deleted, lock-delay started), as if
    /// its TTL had run out. Returns whether the session existed.
    pub fn expire_session(&self, id: &str) -> bool {
        self.inner.consul_state.expire_session(id)
    }

    /// Forgets Consul's KV tombstones so prefix indexes can go backwards, as after Consul's
    /// tombstone GC; exercises the client's "reset the index" rule.
    pub fn reap_tombstones(&self) {
        self.inner.consul_state.reap_tombstones();
    }

    /// Requests the API has received (control requests under `/_twin` excluded).
    pub fn requests(&self, api: Api) -> u64 {
        self.inner.api(api).knobs.requests.load(Ordering::Relaxed)
    }

    /// The most recent requests the API received, oldest first (at most 2,000).
    pub fn request_log(&self, api: Api) -> Vec<RequestRecord> {
        self.inner
            .api(api)
            .knobs
            .log
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .cloned()
            .collect()
    }
}

/// Replaces `token=` values in a query string so secrets never reach logs.
fn redact(uri: &axum::http::Uri) -> String {
    let path = uri.path();
    match uri.query() {
        None => path.to_string(),
        Some(q) => {
            let parts: Vec<String> = q
                .split('&')
                .map(|kv| {
                    if kv.starts_with("token=") {
                        "token=redacted".to_string()
                    } else {
                        kv.to_string()
                    }
                })
                .collect();
            format!("{path}?{}", parts.join("&"))
        }
    }
}

async fn fault_layer(
    State((api, weak)): State<(Api, Weak<Inner>)>,
    req: Request,
    next: Next,
) -> Response {
    let Some(inner) = weak.upgrade() else {
        return next.run(req).await;
    };
    let knobs = &inner.api(api).knobs;
    let record = RequestRecord {
        method: req.method().to_string(),
        uri: redact(req.uri()),
        user_agent: req
            .headers()
            .get(axum::http::header::USER_AGENT)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string(),
    };
    knobs.requests.fetch_add(1, Ordering::Relaxed);
    {
        let mut log = knobs.log.lock().unwrap_or_else(|e| e.into_inner());
        if log.len() >= LOG_CAPACITY {
            log.pop_front();
        }
        log.push_back(record.clone());
    }
    let mut paused = knobs.paused.subscribe();
    let _ = paused.wait_for(|p| !*p).await;
    let latency = knobs.latency_ms.load(Ordering::Relaxed);
    if latency > 0 {
        tokio::time::sleep(Duration::from_millis(latency)).await;
    }
    let injected = {
        let fail = knobs.fail.lock().unwrap_or_else(|e| e.into_inner());
        fail.iter()
            .find(|(p, _)| req.uri().path().starts_with(p.as_str()))
            .map(|(_, s)| *s)
    };
    drop(inner);
    let started = tokio::time::Instant::now();
    let resp = match injected {
        Some(status) => (
            StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
            "hashistack-twin: injected fault",
        )
            .into_response(),
        None => next.run(req).await,
    };
    tracing::debug!(
        api = ?api,
        method = %record.method,
        uri = %record.uri,
        status = resp.status().as_u16(),
        elapsed_ms = started.elapsed().as_millis() as u64,
        "request"
    );
    resp
}

#[derive(Deserialize)]
struct ControlQuery {
    ms: Option<u64>,
    for_ms: Option<u64>,
    path: Option<String>,
    status: Option<u16>,
}

fn control_routes(weak: Weak<Inner>) -> Router {
    Router::new()
        .route("/requests", get(requests))
        .route("/faults", delete(clear))
        .route("/faults/{api}/{action}", put(fault_action))
        .route("/consul/session/{id}/expire", put(expire))
        .route("/consul/tombstones/reap", put(reap))
        .layer(axum::middleware::from_fn_with_state(
            weak.clone(),
            require_management,
        ))
        .with_state(weak)
}

/// The token a control request carries, from either API's header or a bearer token.
fn control_token(req: &Request) -> Option<&str> {
    let header = |name| req.headers().get(name).and_then(|v| v.to_str().ok());
    header("X-Consul-Token")
        .or_else(|| header("X-Nomad-Token"))
        .or_else(|| {
            header(axum::http::header::AUTHORIZATION.as_str())
                .and_then(|v| v.strip_prefix("Bearer "))
                .map(str::trim)
        })
}

/// With ACLs on, only the management token may use the control routes.
async fn require_management(State(weak): State<Weak<Inner>>, req: Request, next: Next) -> Response {
    let expected = match weak.upgrade() {
        Some(inner) => inner.control_token.clone(),
        None => return gone(),
    };
    match expected {
        None => next.run(req).await,
        Some(t) if control_token(&req).is_some_and(|given| given.as_bytes() == t.as_bytes()) => {
            next.run(req).await
        }
        Some(_) => (
            StatusCode::FORBIDDEN,
            "Permission denied: the twin's control routes need the management token",
        )
            .into_response(),
    }
}

fn faults(weak: &Weak<Inner>) -> Option<Faults> {
    weak.upgrade().map(|inner| Faults { inner })
}

fn gone() -> Response {
    (StatusCode::SERVICE_UNAVAILABLE, "twin is shutting down").into_response()
}

async fn requests(State(weak): State<Weak<Inner>>) -> Response {
    let Some(f) = faults(&weak) else {
        return gone();
    };
    axum::Json(json!({ "consul": f.requests(Api::Consul), "nomad": f.requests(Api::Nomad) }))
        .into_response()
}

async fn clear(State(weak): State<Weak<Inner>>) -> Response {
    let Some(f) = faults(&weak) else {
        return gone();
    };
    match f.clear().await {
        Ok(()) => axum::Json(json!(true)).into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
}

async fn fault_action(
    State(weak): State<Weak<Inner>>,
    Path((api, action)): Path<(String, String)>,
    Query(q): Query<ControlQuery>,
) -> Response {
    let Some(f) = faults(&weak) else {
        return gone();
    };
    let Some(api) = Api::parse(&api) else {
        return (StatusCode::BAD_REQUEST, "api must be consul or nomad").into_response();
    };
    match action.as_str() {
        "stop" => {
            // Answer first: the request may be arriving on the very listener being closed.
            let restart_after = q.for_ms.map(Duration::from_millis);
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_millis(20)).await;
                f.stop(api).await;
                if let Some(d) = restart_after {
                    tokio::time::sleep(d).await;
                    if let Err(e) = f.start(api).await {
                        tracing::warn!(error = %e, "restart after injected stop failed");
                    }
                }
            });
        }
        "start" => {
            if let Err(e) = f.start(api).await {
                return (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response();
            }
        }
        "pause" => f.pause(api),
        "resume" => f.resume(api),
        "latency" => f.latency(api, Duration::from_millis(q.ms.unwrap_or(0))),
        "fail" => match q.path {
            Some(p) => f.fail_path(api, &p, q.status.unwrap_or(500)),
            None => return (StatusCode::BAD_REQUEST, "fail needs ?path=").into_response(),
        },
        _ => return (StatusCode::NOT_FOUND, "unknown fault action").into_response(),
    }
    axum::Json(json!(true)).into_response()
}

async fn expire(State(weak): State<Weak<Inner>>, Path(id): Path<String>) -> Response {
    let Some(f) = faults(&weak) else {
        return gone();
    };
    axum::Json(json!({ "expired": f.expire_session(&id) })).into_response()
}

async fn reap(State(weak): State<Weak<Inner>>) -> Response {
    let Some(f) = faults(&weak) else {
        return gone();
    };
    f.reap_tombstones();
    axum::Json(json!(true)).into_response()
}
