//! The operator's one HTTP listener (DESIGN §1 `server`): `/metrics` (OpenMetrics text),
//! `/healthz`, `/readyz`, `/api/status`, `/events` (server-sent events), `/schemas/<file>` (the
//! JSON Schemas, for editors) and `/`, a status page.
//!
//! Leader and followers serve it alike. It is fed by a [`Surface`]: a cheap, cloneable handle
//! the loop writes to (`publish_status`, `publish_spec`, `watch_established`, `pass_completed`,
//! `set_role`) and the handlers read from. Nothing on it is secret: the status and the spec
//! summary carry none, every string that still looks like a secret is replaced before it is
//! shown, and every text is HTML-escaped.
//!
//! Under election ([`serve_by_role`], started by the run loop) a replica that does not lead
//! shows role `follower` and [`follow`]s `<prefix>/status` and `<prefix>/config`; the leader
//! shows what its own loop writes. `/api/status` carries the answering replica's `role`.
//! `/readyz` ([`Readiness::check`]): the leader (or a replica without election) is ready once
//! its config watch is established and a pass completed; a follower, once its follow watch of
//! `<prefix>/status` answered (the key may not exist yet). Before its first election answer a
//! replica runs no pass, so it is not ready until it leads or follows.

mod follow;
mod page;

pub use follow::{follow, serve_by_role};

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::metrics::{self, CertificateFile, Metrics};
use crate::spec::status::ProxyStatus;
use crate::spec::{ProxyKind, UsersFrom, ValidatedSpec};

/// Where the listener binds unless `--http-addr` says otherwise: loopback only, so nothing is
/// exposed until an operator decides to.
pub const DEFAULT_HTTP_ADDR: &str = "127.0.0.1:9090";

/// How often `certDir` is scanned again for the page and the expiry gauge.
pub const CERT_RESCAN: Duration = Duration::from_secs(60);

/// Errors of the listener.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The address could not be bound.
    #[error("failed to listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The IO error.
        #[source]
        source: std::io::Error,
    },
    /// Serving failed.
    #[error("failed to serve HTTP: {0}")]
    Serve(#[source] std::io::Error),
}

/// Result alias of this module.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What this replica is in the leader election.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Not known yet (before the first lock attempt).
    #[default]
    Unknown,
    /// Holds `<prefix>/leader`: runs the loop.
    Leader,
    /// Another replica leads; this one serves the surface only.
    Follower,
}

/// What `/readyz` answers from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Readiness {
    /// The first blocking query on the config key returned.
    pub watch_established: bool,
    /// A reconcile pass ran to its end since the start.
    pub pass_completed: bool,
    /// A replica that does not lead: its follow watch of `<prefix>/status` answered, so what
    /// it shows is what the leader wrote ([`follow`]).
    pub following: bool,
}

impl Readiness {
    /// Whether a replica in `role` is ready, and if not, why. The leader (and a replica running
    /// without election, whose role stays unknown) is ready once its config watch is
    /// established and a pass completed. A follower runs no pass: it is ready once its follow
    /// watch is established, since all it serves is what it follows.
    ///
    /// # Errors
    /// What is missing, for `/readyz` and the page.
    pub fn check(self, role: Role) -> Result<(), &'static str> {
        if role == Role::Follower {
            return if self.following {
                Ok(())
            } else {
                Err("the follow watch of the leader's status is not established yet")
            };
        }
        match (self.watch_established, self.pass_completed) {
            (true, true) => Ok(()),
            (false, _) => Err("the watch on the config key is not established yet"),
            (true, false) => Err("no reconcile pass has completed yet"),
        }
    }
}

/// What the page shows of the document: one line per active policy and the links, nothing
/// secret (basic auth is shown by its reference, never its users).
#[derive(Debug, Clone, PartialEq, Eq, Default, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SpecSummary {
    /// `traefik` or `caddy`.
    pub proxy: String,
    /// The proxy version the document asks for.
    pub version: String,
    /// One line per active policy.
    pub policies: Vec<String>,
    /// The proxy's dashboard, when it has one the operator can link to.
    pub dashboard_url: Option<String>,
    /// `spec.tls.certDir`.
    pub cert_dir: String,
}

impl SpecSummary {
    /// Summarises a validated document; `proxy_host` is the host the proxy is reached on (the
    /// loop's `--proxy-host`), used for the dashboard link.
    #[must_use]
    pub fn of(spec: &ValidatedSpec, proxy_host: &str) -> Self {
        let mut policies = Vec::new();
        let headers = spec.security_headers();
        if !headers.is_empty() {
            let names: Vec<&str> = headers.keys().map(String::as_str).collect();
            policies.push(format!("security headers: {}", names.join(", ")));
        }
        if let Some(rl) = spec.rate_limit() {
            policies.push(format!(
                "rate limit: {} requests per {} on average, burst {}",
                rl.average,
                crate::spec::format_duration(rl.period),
                rl.burst
            ));
        }
        if let Some(ranges) = spec.ip_allow_list() {
            let ranges: Vec<String> = ranges.iter().map(ToString::to_string).collect();
            policies.push(format!("IP allow list: {}", ranges.join(", ")));
        }
        if let Some(auth) = spec.basic_auth() {
            let from = match &auth.users_from {
                UsersFrom::ConsulKey(k) => format!("Consul key {k}"),
                UsersFrom::File(f) => format!("file {f}"),
            };
            policies.push(format!(
                "basic auth: realm {:?}, users from {from}",
                auth.realm
            ));
        }
        let certs = spec.certificates().len();
        if certs > 0 {
            policies.push(format!("TLS: {certs} certificate file pair(s)"));
        }
        if spec.acme().is_some() {
            policies.push("TLS: ACME certificates".to_owned());
        }
        if spec.paused() {
            policies.push("paused: nothing is changed".to_owned());
        }
        let (proxy, dashboard_url) = match spec.proxy() {
            ProxyKind::Traefik => (
                "traefik",
                spec.dashboard_address().map(|a| {
                    let host = Some(a.host.as_str()).filter(|h| !h.is_empty() && *h != "0.0.0.0");
                    format!(
                        "http://{}:{}/dashboard/",
                        host.unwrap_or(proxy_host),
                        a.port
                    )
                }),
            ),
            ProxyKind::Caddy => ("caddy", None),
        };
        SpecSummary {
            proxy: proxy.to_owned(),
            version: spec.version().to_owned(),
            policies,
            dashboard_url,
            cert_dir: spec.tls().cert_dir.clone(),
        }
    }
}

struct Shared {
    metrics: Metrics,
    status: watch::Sender<Option<ProxyStatus>>,
    ready: watch::Sender<Readiness>,
    role: watch::Sender<Role>,
    spec: watch::Sender<Option<SpecSummary>>,
    certs: watch::Sender<Vec<CertificateFile>>,
    /// Bumped on every change above; the page's event stream follows it.
    changes: watch::Sender<u64>,
    /// Set when the listener shuts down: open event streams end, so a graceful shutdown does
    /// not wait for every open page to be closed.
    closing: watch::Sender<bool>,
}

/// The state the listener serves, written by the loop. Clone it freely: every clone is the
/// same state.
#[derive(Clone)]
pub struct Surface {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for Surface {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Surface")
            .field("ready", &*self.shared.ready.borrow())
            .field("role", &*self.shared.role.borrow())
            .finish_non_exhaustive()
    }
}

impl Surface {
    /// An empty surface (no status, not ready, role unknown) around a metrics registry.
    #[must_use]
    pub fn new(metrics: Metrics) -> Self {
        Surface {
            shared: Arc::new(Shared {
                metrics,
                status: watch::Sender::new(None),
                ready: watch::Sender::new(Readiness::default()),
                role: watch::Sender::new(Role::Unknown),
                spec: watch::Sender::new(None),
                certs: watch::Sender::new(Vec::new()),
                changes: watch::Sender::new(0),
                closing: watch::Sender::new(false),
            }),
        }
    }

    /// The metrics registry (clone it into the clients and the loop).
    #[must_use]
    pub fn metrics(&self) -> &Metrics {
        &self.shared.metrics
    }

    fn changed(&self) {
        self.shared.changes.send_modify(|n| *n = n.wrapping_add(1));
    }

    /// A status was written or read (leader: after each write; follower: after each read of
    /// `<prefix>/status`). Also sets the phase gauge.
    pub fn publish_status(&self, status: &ProxyStatus) {
        self.shared.metrics.phase(status.phase);
        self.shared.status.send_replace(Some(status.clone()));
        self.changed();
    }

    /// The document validated: its policies and links for the page.
    pub fn publish_spec(&self, summary: SpecSummary) {
        self.shared.spec.send_replace(Some(summary));
        self.changed();
    }

    /// The first blocking query on the config key returned.
    pub fn watch_established(&self) {
        self.shared
            .ready
            .send_modify(|r| r.watch_established = true);
        self.changed();
    }

    /// A reconcile pass ran to its end.
    pub fn pass_completed(&self) {
        if !self.shared.ready.borrow().pass_completed {
            self.shared.ready.send_modify(|r| r.pass_completed = true);
            self.changed();
        }
    }

    /// The follow watch of `<prefix>/status` answered (`true`), or following stopped.
    pub fn set_following(&self, following: bool) {
        if self.shared.ready.borrow().following != following {
            self.shared.ready.send_modify(|r| r.following = following);
            self.changed();
        }
    }

    /// The role this replica has now.
    #[must_use]
    pub fn role(&self) -> Role {
        *self.shared.role.borrow()
    }

    /// The leader election decided; also sets the leader gauges.
    pub fn set_role(&self, role: Role) {
        self.shared.metrics.leader(role == Role::Leader);
        if self.shared.role.send_replace(role) != role {
            self.changed();
        }
    }

    /// Replaces the certificates shown (and exported as expiry gauges).
    pub fn set_certificates(&self, files: Vec<CertificateFile>) {
        self.shared.metrics.certificates(&files);
        self.shared.certs.send_replace(files);
        self.changed();
    }

    /// Scans the published spec's `certDir` once (off the async threads). A directory that
    /// cannot be read leaves an empty list: a missing `/pv/CERTS` on a follower's node is
    /// normal, not an error of the surface.
    pub async fn rescan_certificates(&self) {
        let Some(dir) = self
            .shared
            .spec
            .borrow()
            .as_ref()
            .map(|s| PathBuf::from(&s.cert_dir))
        else {
            return;
        };
        let files = tokio::task::spawn_blocking(move || metrics::scan_cert_dir(&dir))
            .await
            .ok()
            .and_then(std::result::Result::ok)
            .unwrap_or_default();
        self.set_certificates(files);
    }

    /// What `/readyz` answers from.
    #[must_use]
    pub fn readiness(&self) -> Readiness {
        *self.shared.ready.borrow()
    }

    /// The status last published.
    #[must_use]
    pub fn status(&self) -> Option<ProxyStatus> {
        self.shared.status.borrow().clone()
    }

    /// The document summary last published.
    #[must_use]
    pub fn spec(&self) -> Option<SpecSummary> {
        self.shared.spec.borrow().clone()
    }

    fn snapshot(&self) -> page::Snapshot {
        page::Snapshot {
            status: self.shared.status.borrow().clone(),
            ready: *self.shared.ready.borrow(),
            role: *self.shared.role.borrow(),
            spec: self.shared.spec.borrow().clone(),
            certs: self.shared.certs.borrow().clone(),
        }
    }
}

/// The `--http-addr` flag, for `run` and `dev` to flatten into their arguments.
#[derive(Debug, Clone, clap::Args)]
pub struct HttpArgs {
    /// Address of the HTTP listener (`/metrics`, `/healthz`, `/readyz`, `/api/status`, the
    /// status page). Loopback by default: bind a routable address only where it should be seen.
    #[arg(long, value_name = "ADDR", default_value = DEFAULT_HTTP_ADDR)]
    pub http_addr: SocketAddr,
}

/// Binds `addr` and serves `surface` on a task until `shutdown` resolves; returns the bound
/// address (useful with port 0) and the task.
///
/// # Errors
/// [`Error::Bind`] when the address cannot be bound.
pub async fn spawn(
    addr: SocketAddr,
    surface: Surface,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(SocketAddr, tokio::task::JoinHandle<Result<()>>)> {
    let listener = bind(addr).await?;
    let bound = listener
        .local_addr()
        .map_err(|source| Error::Bind { addr, source })?;
    Ok((bound, tokio::spawn(serve(listener, surface, shutdown))))
}

/// Binds the listener (`--http-addr`).
///
/// # Errors
/// [`Error::Bind`] when the address is taken or not local.
pub async fn bind(addr: SocketAddr) -> Result<TcpListener> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| Error::Bind { addr, source })
}

/// The routes, for tests and embedding.
pub fn router(surface: Surface) -> Router {
    Router::new()
        .route("/", get(index))
        .route("/metrics", get(metrics_text))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/api/status", get(api_status))
        .route("/events", get(events))
        .route("/style.css", get(style))
        .route("/schemas/{file}", get(schema))
        .with_state(surface)
}

/// Serves until `shutdown` resolves, rescanning `certDir` every [`CERT_RESCAN`] and whenever a
/// new spec is published.
///
/// # Errors
/// [`Error::Serve`] when accepting connections fails.
pub async fn serve(
    listener: TcpListener,
    surface: Surface,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<()> {
    let scanner = tokio::spawn(rescan_loop(surface.clone()));
    let closing = surface.shared.closing.clone();
    let shutdown = async move {
        shutdown.await;
        closing.send_replace(true);
    };
    let result = axum::serve(listener, router(surface))
        .with_graceful_shutdown(shutdown)
        .await
        .map_err(Error::Serve);
    scanner.abort();
    result
}

async fn rescan_loop(surface: Surface) {
    let mut spec = surface.shared.spec.subscribe();
    loop {
        surface.rescan_certificates().await;
        tokio::select! {
            () = tokio::time::sleep(CERT_RESCAN) => {}
            changed = spec.changed() => if changed.is_err() { return },
        }
    }
}

async fn metrics_text(State(surface): State<Surface>) -> Response {
    match surface.metrics().encode() {
        Ok(text) => ([(header::CONTENT_TYPE, metrics::CONTENT_TYPE)], text).into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
}

async fn healthz() -> &'static str {
    "ok\n"
}

async fn readyz(State(surface): State<Surface>) -> (StatusCode, String) {
    let r = *surface.shared.ready.borrow();
    let role = *surface.shared.role.borrow();
    match r.check(role) {
        Ok(()) => (StatusCode::OK, "ready\n".into()),
        Err(why) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready: {why}\n"),
        ),
    }
}

async fn api_status(State(surface): State<Surface>) -> Response {
    let status = surface.shared.status.borrow().clone();
    match status {
        Some(status) => {
            let mut value = serde_json::to_value(&status).unwrap_or_default();
            page::redact_json(&mut value);
            // Which replica answers: a follower shows what the leader wrote.
            if let Some(map) = value.as_object_mut() {
                map.insert("role".into(), serde_json::json!(surface.role()));
            }
            axum::Json(value).into_response()
        }
        None => (
            StatusCode::SERVICE_UNAVAILABLE,
            axum::Json(serde_json::json!({"error": "no status observed yet"})),
        )
            .into_response(),
    }
}

async fn index(State(surface): State<Surface>) -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        page::document(&surface.snapshot()),
    )
        .into_response()
}

/// The JSON Schemas of `crd-schemas/`, so an editor's `$schema` can point at the operator
/// (e.g. `dev`'s starter document) instead of a URL that does not exist.
async fn schema(axum::extract::Path(file): axum::extract::Path<String>) -> Response {
    match crate::spec::schema_files()
        .into_iter()
        .find(|(name, _)| *name == file)
    {
        Some((_, text)) => {
            ([(header::CONTENT_TYPE, "application/schema+json")], text).into_response()
        }
        None => (
            StatusCode::NOT_FOUND,
            format!(
                "no schema {file:?}; there are {} and {}\n",
                crate::spec::CONFIG_SCHEMA_FILE,
                crate::spec::STATUS_SCHEMA_FILE
            ),
        )
            .into_response(),
    }
}

async fn style() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/css; charset=utf-8"),
            (header::CACHE_CONTROL, "max-age=300"),
        ],
        page::CSS,
    )
        .into_response()
}

/// One `update` event with the freshly rendered page body on connect and after every change.
async fn events(State(surface): State<Surface>) -> impl IntoResponse {
    let rx = surface.shared.changes.subscribe();
    let stream =
        futures::stream::unfold((surface, rx, true), |(surface, mut rx, first)| async move {
            let mut closing = surface.shared.closing.subscribe();
            if *closing.borrow() {
                return None;
            }
            if !first {
                tokio::select! {
                    changed = rx.changed() => changed.ok()?,
                    _ = closing.wait_for(|c| *c) => return None,
                }
            }
            rx.borrow_and_update();
            let body = page::live(&surface.snapshot());
            let event = Event::default().event("update").data(body);
            Some((
                Ok::<_, std::convert::Infallible>(event),
                (surface, rx, false),
            ))
        });
    Sse::new(stream).keep_alive(KeepAlive::default())
}
