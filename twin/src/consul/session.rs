//! `/v1/session/*` (DOC session.mdx; SRC agent/session_endpoint.go).

use std::time::Duration;

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use serde_json::{Value, json};
use tokio::time::Instant;

use super::store::{ServiceCheckRef, Session, SessionSpec, Store};
use super::{
    BlockingRead, ConsulState, decode_failed, json, json_body_or_default, store_error, text,
};

/// `LockDelay` may be a duration string or a number: below 1000 it counts seconds, otherwise
/// nanoseconds (Consul's `lockDelayMinThreshold`).
#[allow(clippy::result_large_err)] // the error is the finished HTTP answer
fn lock_delay(v: &Value) -> Result<Option<Duration>, Response> {
    match v {
        Value::Null => Ok(None),
        Value::String(s) => crate::blocking::parse_go_duration(s)
            .map(Some)
            .ok_or_else(|| decode_failed(format!("time: invalid duration {s:?}"))),
        Value::Number(n) => {
            let n = n.as_f64().unwrap_or(0.0).max(0.0);
            if n < 1000.0 {
                Ok(Some(Duration::from_secs_f64(n)))
            } else {
                Ok(Some(Duration::from_nanos(n as u64)))
            }
        }
        other => Err(decode_failed(format!("invalid LockDelay {other}"))),
    }
}

/// The body of `PUT /v1/session/create`, typed: a field of the wrong JSON type is a decode
/// error (400), as Go's decoder makes it, instead of silently becoming its default.
/// `NodeChecks`/`Checks` keep "absent" apart from `null` (a nil slice in Go) because
/// `fixupEmptySessionChecks` treats them differently.
#[derive(Debug, Default, serde::Deserialize)]
#[serde(rename_all = "PascalCase")]
struct CreateBody {
    #[serde(default)]
    name: String,
    #[serde(default)]
    node: Option<String>,
    #[serde(default)]
    lock_delay: Value,
    #[serde(default)]
    behavior: Option<String>,
    #[serde(rename = "TTL", default)]
    ttl: Option<String>,
    #[serde(default, deserialize_with = "present")]
    node_checks: Option<Option<Vec<String>>>,
    #[serde(default, deserialize_with = "present")]
    checks: Option<Option<Vec<String>>>,
    #[serde(default)]
    service_checks: Option<Vec<ServiceCheckRef>>,
}

/// A field that is present (possibly `null`) becomes `Some(..)`; an absent one stays `None`.
fn present<'de, D, T>(d: D) -> Result<Option<Option<T>>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: serde::Deserialize<'de>,
{
    serde::Deserialize::deserialize(d).map(Some)
}

/// Consul starts from `NodeChecks = Checks = ["serfHealth"]`, decodes the body over it and then
/// applies `fixupEmptySessionChecks` (SRC agent/session_endpoint.go): an empty (or `null`)
/// `Checks` clears `NodeChecks`; `Checks: ["serfHealth"]` defers to `NodeChecks`; an empty
/// `NodeChecks` drops `Checks`; otherwise both lists stay bound. Returns (NodeChecks, Checks).
fn fixup_session_checks(
    node_checks: Option<Option<Vec<String>>>,
    checks: Option<Option<Vec<String>>>,
) -> (Vec<String>, Vec<String>) {
    let serf = || vec!["serfHealth".to_string()];
    // A JSON `null` decodes to a nil slice in Go: present but empty.
    let given = |list: Option<Option<Vec<String>>>| match list {
        None => serf(),
        Some(l) => l.unwrap_or_default(),
    };
    let node_checks = given(node_checks);
    let checks = given(checks);
    if checks.is_empty() {
        return (Vec::new(), Vec::new());
    }
    if checks.len() == 1 && checks[0] == "serfHealth" {
        return (node_checks, Vec::new());
    }
    if node_checks.is_empty() {
        return (node_checks, Vec::new());
    }
    (node_checks, checks)
}

pub(super) async fn create(State(st): State<ConsulState>, body: Body) -> Response {
    let body: CreateBody = match json_body_or_default(body, 1024 * 1024).await {
        Ok(v) => v,
        Err(r) => return r,
    };
    let lock_delay = match lock_delay(&body.lock_delay) {
        Ok(d) => d,
        Err(r) => return r,
    };
    let (node_checks, checks) = fixup_session_checks(body.node_checks, body.checks);
    let spec = SessionSpec {
        name: body.name,
        node: body.node,
        lock_delay,
        behavior: body.behavior,
        ttl: body.ttl,
        node_checks: Some(node_checks),
        checks,
        service_checks: body.service_checks,
    };
    match st.write(|s| s.session_create(spec, Instant::now())) {
        Ok(id) => json(StatusCode::OK, HeaderMap::new(), &json!({ "ID": id })),
        Err(e) => store_error(&e),
    }
}

pub(super) async fn destroy(State(st): State<ConsulState>, Path(id): Path<String>) -> Response {
    st.write(|s| s.session_invalidate(&id, Instant::now()));
    json(StatusCode::OK, HeaderMap::new(), &json!(true))
}

pub(super) async fn renew(State(st): State<ConsulState>, Path(id): Path<String>) -> Response {
    // Renewal resets a timer but changes no data, so it does not advance the raft index.
    match st.write(|s| s.session_renew(&id, Instant::now())) {
        Some(session) => json(StatusCode::OK, HeaderMap::new(), &json!([session])),
        None => text(
            StatusCode::NOT_FOUND,
            &format!("Session id '{id}' not found"),
        ),
    }
}

pub(super) async fn info(Path(id): Path<String>, r: BlockingRead) -> Response {
    list_by(r, move |s| s.session(&id).cloned().into_iter().collect()).await
}

pub(super) async fn list(r: BlockingRead) -> Response {
    list_by(r, |s| s.sessions()).await
}

pub(super) async fn node(Path(node): Path<String>, r: BlockingRead) -> Response {
    list_by(r, move |s| s.sessions_of_node(&node)).await
}

/// The sessions `select` picks, at the sessions index.
async fn list_by(r: BlockingRead, select: impl Fn(&Store) -> Vec<Session>) -> Response {
    r.json(|s| (s.sessions_index(), json!(select(s)))).await
}
