//! The Nomad HTTP API: routes, ACL check, blocking queries and the response conventions
//! (`X-Nomad-Index`/`X-Nomad-KnownLeader`/`X-Nomad-LastContact`, plain-text errors).

mod acl;
mod cluster;
mod deployments;
mod jobs;
mod lifecycle;
mod nodes;
mod variables;

use super::Inner;
use super::submit::{field, job_from_body};
use super::view::View;
use super::{diff, events, filter};
use crate::nomad::store::{
    ApiError, NodeUpdate, Plan, RegisterOpts, Store, deployment_update_body,
};
use crate::nomad::util::parse_go_duration;
use axum::body::Bytes;
use axum::extract::{FromRequestParts, Path, Query, Request, State};
use axum::handler::Handler;
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodRouter, any, delete, get, post};
use axum::{Extension, Router};
use serde_json::{Value, json};
use std::sync::Arc;
use std::time::Duration;

use acl::*;
use cluster::*;
use deployments::*;
use jobs::*;
use lifecycle::*;
use nodes::*;
use variables::*;

type St = State<Arc<Inner>>;
type Params = Query<Vec<(String, String)>>;

/// Longest blocking wait the server grants (`MaxBlockingRPCQueryTime`).
const MAX_WAIT: Duration = Duration::from_secs(300);

/// Builds the router.
pub fn router(inner: Arc<Inner>) -> Router {
    Router::new()
        .route(
            "/v1/jobs",
            get(list_jobs).put(register_jobs).post(register_jobs),
        )
        .route(
            "/v1/job/{id}",
            get(read_job)
                .put(register_job)
                .post(register_job)
                .delete(deregister_job),
        )
        .route("/v1/job/{id}/versions", get(job_versions))
        .route("/v1/job/{id}/revert", post_or_put(revert_job))
        .route("/v1/job/{id}/stable", post_or_put(stable_job))
        .route("/v1/job/{id}/plan", post_or_put(plan_job))
        .route("/v1/job/{id}/summary", get(job_summary))
        .route("/v1/job/{id}/allocations", get(job_allocations))
        .route("/v1/job/{id}/evaluations", get(job_evaluations))
        .route("/v1/job/{id}/deployment", get(job_latest_deployment))
        .route("/v1/job/{id}/deployments", get(job_deployments))
        .route("/v1/job/{id}/services", get(job_services))
        .route("/v1/job/{id}/evaluate", post_or_put(evaluate_job))
        .route("/v1/evaluations", get(list_evals))
        .route("/v1/evaluation/{id}", get(read_eval))
        .route("/v1/evaluation/{id}/allocations", get(eval_allocations))
        .route("/v1/deployments", get(list_deployments))
        .route("/v1/deployment/{id}", get(read_deployment))
        .route(
            "/v1/deployment/allocations/{id}",
            get(deployment_allocations),
        )
        .route("/v1/deployment/fail/{id}", post_or_put(fail_deployment))
        .route(
            "/v1/deployment/promote/{id}",
            post_or_put(promote_deployment),
        )
        .route("/v1/deployment/pause/{id}", post_or_put(pause_deployment))
        .route(
            "/v1/deployment/allocation-health/{id}",
            post_or_put(deployment_alloc_health),
        )
        .route("/v1/allocations", get(list_allocs))
        .route("/v1/allocation/{id}", get(read_alloc))
        .route("/v1/allocation/{id}/stop", post_or_put(stop_alloc))
        .route("/v1/allocation/{id}/services", get(alloc_services))
        .route("/v1/services", get(list_services))
        .route("/v1/service/{name}", get(read_service))
        .route("/v1/service/{name}/{id}", delete(delete_service))
        .route("/v1/event/stream", get(event_stream))
        .route("/v1/namespaces", get(list_namespaces))
        .route("/v1/namespace/{name}", get(read_namespace))
        .route("/v1/nodes", get(list_nodes))
        .route("/v1/node/{id}", get(read_node))
        .route("/v1/node/{id}/allocations", get(node_allocations))
        .route("/v1/node/{id}/drain", post_or_put(drain_node))
        .route("/v1/node/{id}/eligibility", post_or_put(node_eligibility))
        .route("/v1/status/leader", get(status_leader))
        .route("/v1/status/peers", get(status_peers))
        .route("/v1/regions", get(regions))
        .route("/v1/agent/self", get(agent_self))
        .route("/v1/vars", get(list_variables))
        .route("/v1/var/", any(missing_variable_path))
        .route(
            "/v1/var/{*path}",
            get(read_variable)
                .put(put_variable)
                .post(put_variable)
                .delete(delete_variable),
        )
        .route("/v1/acl/policies", get(list_policies))
        .route(
            "/v1/acl/policy/{name}",
            get(read_policy)
                .put(upsert_policy)
                .post(upsert_policy)
                .delete(delete_policy),
        )
        .route("/v1/acl/tokens", get(list_tokens))
        .route("/v1/acl/token", post_or_put(create_token))
        .route(
            "/v1/acl/token/{accessor}",
            get(read_token).delete(delete_token),
        )
        .layer(middleware::from_fn_with_state(inner.clone(), acl))
        .with_state(inner)
}

/// A write endpoint: Nomad's agent takes both verbs for it.
fn post_or_put<H, T>(handler: H) -> MethodRouter<Arc<Inner>>
where
    H: Handler<T, Arc<Inner>> + Clone,
    T: 'static,
{
    post(handler.clone()).put(handler)
}

// === conventions ===

/// A handler's answer; an error is answered as Nomad does ([`error`]).
type Answer = Result<Response, ApiError>;

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        error(self)
    }
}

/// The state and the query string every handler reads, extracted together.
pub(super) struct Req {
    inner: Arc<Inner>,
    q: Vec<(String, String)>,
}

impl FromRequestParts<Arc<Inner>> for Req {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, inner: &Arc<Inner>) -> Result<Req, Response> {
        let Query(q) = Params::from_request_parts(parts, inner)
            .await
            .map_err(IntoResponse::into_response)?;
        Ok(Req {
            inner: inner.clone(),
            q,
        })
    }
}

impl Req {
    /// A query parameter.
    fn param(&self, key: &str) -> Option<&str> {
        param(&self.q, key)
    }

    /// The request's namespace (`default` when absent or blank).
    fn ns(&self) -> String {
        namespace(&self.q)
    }

    /// The `filter` expression, parsed (a bad one is Nomad's 500).
    fn filter(&self) -> Result<Option<filter::Expr>, ApiError> {
        self.param("filter")
            .map(filter::parse)
            .transpose()
            .map_err(|e| ApiError::new(500, e.to_string()))
    }

    /// Answers `read` as a blocking query ([`blocking`]).
    async fn blocking<F>(&self, read: F) -> Response
    where
        F: Fn(&Store) -> (u64, Result<Value, ApiError>),
    {
        blocking(&self.inner, &self.q, read).await
    }

    /// A write's answer: `body` with `X-Nomad-Index: index`.
    fn written(&self, index: u64, body: &Value) -> Response {
        write_response(&self.q, index, body)
    }

    /// Runs the write `f`, then the plan it returns on the executor; what `f` returned.
    fn apply<T>(
        &self,
        f: impl FnOnce(&mut Store) -> Result<(T, Plan), ApiError>,
    ) -> Result<T, ApiError> {
        self.inner.write_and_apply(|st| match f(st) {
            Ok((out, plan)) => (Ok(out), plan),
            Err(e) => (Err(e), Plan::default()),
        })
    }
}

fn param<'a>(q: &'a [(String, String)], key: &str) -> Option<&'a str> {
    q.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
}

fn namespace(q: &[(String, String)]) -> String {
    match param(q, "namespace") {
        Some(ns) if !ns.is_empty() => ns.to_string(),
        _ => "default".into(),
    }
}

fn ns_matches(wanted: &str, ns: &str) -> bool {
    wanted == "*" || wanted == ns
}

fn error(e: ApiError) -> Response {
    let status = StatusCode::from_u16(e.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    (
        status,
        [(http::header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        e.message,
    )
        .into_response()
}

fn json_body(q: &[(String, String)], body: &Value) -> Vec<u8> {
    let text = if param(q, "pretty").is_some() {
        serde_json::to_vec_pretty(body)
    } else {
        serde_json::to_vec(body)
    };
    text.unwrap_or_default()
}

/// A read answer with the full query meta headers.
fn query_response(q: &[(String, String)], index: u64, body: &Value) -> Response {
    let mut resp = (
        StatusCode::OK,
        [(http::header::CONTENT_TYPE, "application/json")],
        json_body(q, body),
    )
        .into_response();
    set_meta(resp.headers_mut(), index, true);
    resp
}

/// A write answer: only `X-Nomad-Index`.
/// A write answered with no body, only `X-Nomad-Index` (the handler returned a nil object).
fn write_empty(_q: &[(String, String)], index: u64) -> Response {
    let mut resp = StatusCode::OK.into_response();
    set_meta(resp.headers_mut(), index, false);
    resp
}

fn write_response(q: &[(String, String)], index: u64, body: &Value) -> Response {
    let mut resp = (
        StatusCode::OK,
        [(http::header::CONTENT_TYPE, "application/json")],
        json_body(q, body),
    )
        .into_response();
    set_meta(resp.headers_mut(), index, false);
    resp
}

fn set_meta(h: &mut HeaderMap, index: u64, full: bool) {
    if let Ok(v) = HeaderValue::from_str(&index.to_string()) {
        h.insert("X-Nomad-Index", v);
    }
    if full {
        h.insert("X-Nomad-KnownLeader", HeaderValue::from_static("true"));
        h.insert("X-Nomad-LastContact", HeaderValue::from_static("0"));
    }
}

/// Runs a read as a blocking query: answers at once without `index`, otherwise when the result's
/// index passes `index` or after `wait` (default and maximum 5 minutes, plus up to wait/16 jitter).
async fn blocking<F>(inner: &Arc<Inner>, q: &[(String, String)], read: F) -> Response
where
    F: Fn(&Store) -> (u64, Result<Value, ApiError>),
{
    let min_index = match param(q, "index") {
        None | Some("") => 0,
        Some(v) => match v.parse::<u64>() {
            Ok(i) => i,
            Err(_) => return error(ApiError::new(400, "Invalid index")),
        },
    };
    let wait = match param(q, "wait") {
        None | Some("") => MAX_WAIT,
        Some(v) => match parse_go_duration(v) {
            Some(d) => d.min(MAX_WAIT),
            None => return error(ApiError::new(400, "Invalid wait time")),
        },
    };
    let jitter = if wait.as_millis() >= 16 {
        Duration::from_millis(rand::random_range(0..(wait.as_millis() / 16) as u64))
    } else {
        Duration::ZERO
    };
    let deadline = tokio::time::Instant::now() + wait + jitter;
    let mut changes = inner.changed.subscribe();
    loop {
        changes.borrow_and_update();
        let (index, result) = inner.read(&read);
        let index = index.max(1);
        if min_index == 0 || index > min_index || tokio::time::Instant::now() >= deadline {
            return match result {
                Ok(body) => query_response(q, index, &body),
                Err(e) => {
                    let mut resp = error(e);
                    set_meta(resp.headers_mut(), index, true);
                    resp
                }
            };
        }
        if tokio::time::timeout_at(deadline, changes.changed())
            .await
            .is_err()
        {
            // Timed out: the loop answers with the current state.
            continue;
        }
    }
}

fn parse_body(bytes: &Bytes) -> Result<Value, ApiError> {
    if bytes.is_empty() {
        return Err(ApiError::new(400, "Request body is empty"));
    }
    serde_json::from_slice(bytes)
        .map_err(|e| ApiError::new(400, format!("Failed to decode request body: {e}")))
}

/// Go kinds of request-envelope fields, for `encoding/json`'s type errors.
#[derive(Clone, Copy)]
enum GoKind {
    Bool,
    Uint64,
    Int,
    String,
}

/// `field`, checked the way Go's JSON decoder checks the struct field it fills: a value of the
/// wrong JSON type is a 400 with the decoder's text (the server decodes the whole envelope before
/// it looks at anything).
fn typed_field<'a>(
    body: &'a Value,
    go_struct: &str,
    key: &str,
    kind: GoKind,
) -> Result<Option<&'a Value>, ApiError> {
    let Some(v) = field(body, key) else {
        return Ok(None);
    };
    let (ok, go_type) = match kind {
        GoKind::Bool => (v.is_boolean(), "bool"),
        GoKind::Uint64 => (v.is_u64(), "uint64"),
        GoKind::Int => (v.is_i64() || v.is_u64() && v.as_i64().is_some(), "int"),
        GoKind::String => (v.is_string(), "string"),
    };
    if ok {
        return Ok(Some(v));
    }
    let what = match v {
        Value::Bool(_) => "bool".to_string(),
        Value::String(_) => "string".to_string(),
        Value::Array(_) => "array".to_string(),
        Value::Object(_) => "object".to_string(),
        // A number of the wrong range or with a fraction is named with its text.
        Value::Number(n) if !matches!(kind, GoKind::Bool | GoKind::String) => format!("number {n}"),
        _ => "number".to_string(),
    };
    Err(ApiError::new(
        400,
        format!(
            "json: cannot unmarshal {what} into Go struct field {go_struct}.{key} of type {go_type}"
        ),
    ))
}

fn parse_bool(q: &[(String, String)], key: &str) -> Result<bool, ApiError> {
    match param(q, key) {
        None | Some("") => Ok(false),
        Some("1" | "t" | "T" | "TRUE" | "true" | "True") => Ok(true),
        Some("0" | "f" | "F" | "FALSE" | "false" | "False") => Ok(false),
        Some(other) => Err(ApiError::new(
            500,
            format!(
                "Failed to parse value of {key:?} ({other}) as a bool: strconv.ParseBool: parsing {other:?}: invalid syntax"
            ),
        )),
    }
}
