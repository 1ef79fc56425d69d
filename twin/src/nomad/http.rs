//! The Nomad HTTP API: routes, ACL check, blocking queries and the response conventions
//! (`X-Nomad-Index`/`X-Nomad-KnownLeader`/`X-Nomad-LastContact`, plain-text errors).

use super::Inner;
use super::jobspec::{self, arr, b, s, u};
use super::store::{ApiError, RegisterOpts, RegisterOutcome, Store};
use super::util::{go_duration, parse_go_duration};
use super::{diff, events, filter};
use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

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
        .route("/v1/job/{id}/revert", post(revert_job).put(revert_job))
        .route("/v1/job/{id}/stable", post(stable_job).put(stable_job))
        .route("/v1/job/{id}/plan", post(plan_job).put(plan_job))
        .route("/v1/job/{id}/summary", get(job_summary))
        .route("/v1/job/{id}/allocations", get(job_allocations))
        .route("/v1/job/{id}/evaluations", get(job_evaluations))
        .route("/v1/job/{id}/deployment", get(job_latest_deployment))
        .route("/v1/job/{id}/deployments", get(job_deployments))
        .route("/v1/job/{id}/services", get(job_services))
        .route("/v1/evaluations", get(list_evals))
        .route("/v1/evaluation/{id}", get(read_eval))
        .route("/v1/deployments", get(list_deployments))
        .route("/v1/deployment/{id}", get(read_deployment))
        .route(
            "/v1/deployment/allocations/{id}",
            get(deployment_allocations),
        )
        .route(
            "/v1/deployment/fail/{id}",
            post(fail_deployment).put(fail_deployment),
        )
        .route(
            "/v1/deployment/pause/{id}",
            post(pause_deployment).put(pause_deployment),
        )
        .route(
            "/v1/deployment/allocation-health/{id}",
            post(deployment_alloc_health).put(deployment_alloc_health),
        )
        .route("/v1/allocations", get(list_allocs))
        .route("/v1/allocation/{id}", get(read_alloc))
        .route("/v1/allocation/{id}/services", get(alloc_services))
        .route("/v1/services", get(list_services))
        .route("/v1/service/{name}", get(read_service))
        .route("/v1/service/{name}/{id}", delete(delete_service))
        .route("/v1/event/stream", get(event_stream))
        .route("/v1/namespaces", get(list_namespaces))
        .route("/v1/namespace/{name}", get(read_namespace))
        .route("/v1/nodes", get(list_nodes))
        .route("/v1/status/leader", get(status_leader))
        .route("/v1/status/peers", get(status_peers))
        .route("/v1/regions", get(regions))
        .route("/v1/agent/self", get(agent_self))
        .layer(middleware::from_fn_with_state(inner.clone(), acl))
        .with_state(inner)
}

// === conventions ===

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

async fn acl(State(inner): St, req: Request, next: Next) -> Response {
    if let Some(token) = &inner.config.acl_token {
        let path = req.uri().path();
        let exempt = path.starts_with("/v1/status/");
        let h = req.headers();
        let sent = h
            .get("X-Nomad-Token")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
            .or_else(|| {
                h.get(http::header::AUTHORIZATION)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| {
                        let (scheme, rest) = v.split_once(' ')?;
                        scheme
                            .eq_ignore_ascii_case("bearer")
                            .then(|| rest.trim().to_string())
                    })
            });
        if !exempt && sent.as_deref() != Some(token.as_str()) {
            return error(ApiError::new(403, "Permission denied"));
        }
    }
    tracing::debug!(method = %req.method(), uri = %req.uri(), "nomad request");
    next.run(req).await
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

fn field<'a>(body: &'a Value, key: &str) -> Option<&'a Value> {
    let m = body.as_object()?;
    m.get(key)
        .or_else(|| {
            m.iter()
                .find(|(k, _)| k.eq_ignore_ascii_case(key))
                .map(|(_, v)| v)
        })
        .filter(|v| !v.is_null())
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

fn register_body(out: &RegisterOutcome) -> Value {
    json!({
        "EvalID": out.eval_id,
        "EvalCreateIndex": out.eval_create_index,
        "JobModifyIndex": out.job_modify_index,
        "Warnings": "",
        "Index": out.index,
        "LastContact": 0,
        "KnownLeader": false,
        "NextToken": "",
    })
}

// === jobs ===

/// Decodes, canonicalizes and validates a job from a register/plan body.
fn job_from_body(
    body: &Value,
    q: &[(String, String)],
    path_id: Option<&str>,
) -> Result<Value, ApiError> {
    let raw = field(body, "Job").ok_or_else(|| ApiError::new(400, "Job must be specified"))?;
    let mut job =
        jobspec::decode("Job", Some(raw), "Job").map_err(|e| ApiError::new(400, e.to_string()))?;
    let id = s(&job, "ID").to_string();
    if id.is_empty() {
        return Err(ApiError::new(400, "Job ID hasn't been provided"));
    }
    if let Some(p) = path_id
        && p != id
    {
        return Err(ApiError::new(400, "Job ID does not match name"));
    }
    let ns = match (
        param(q, "namespace"),
        field(body, "Namespace").and_then(Value::as_str),
        s(&job, "Namespace"),
    ) {
        (Some(ns), _, _) if !ns.is_empty() => ns.to_string(),
        (_, Some(ns), _) if !ns.is_empty() => ns.to_string(),
        (_, _, ns) if !ns.is_empty() => ns.to_string(),
        _ => "default".to_string(),
    };
    if ns != "default" {
        return Err(ApiError::new(
            500,
            format!("job \"{id}\" is in nonexistent namespace \"{ns}\""),
        ));
    }
    jobspec::canonicalize(&mut job, &ns);
    validate(&job)?;
    Ok(job)
}

/// `ServiceCheck.validate`'s interval and timeout rules (both at least one second).
fn check_interval_error(c: &Value) -> Option<String> {
    const MIN: u64 = 1_000_000_000;
    if matches!(s(c, "Type").to_ascii_lowercase().as_str(), "" | "ttl") {
        return None;
    }
    let nanos = |k| std::time::Duration::from_nanos(u(c, k));
    let (interval, timeout) = (u(c, "Interval"), u(c, "Timeout"));
    if interval == 0 {
        return Some("missing required value interval. Interval cannot be less than 1s".into());
    }
    if interval < MIN {
        return Some(format!(
            "interval ({}) cannot be lower than 1s",
            go_duration(nanos("Interval"))
        ));
    }
    if timeout == 0 {
        return Some("missing required value timeout. Timeout cannot be less than 1s".into());
    }
    if timeout < MIN {
        return Some(format!(
            "timeout ({}) is lower than required minimum timeout 1s",
            go_duration(nanos("Timeout"))
        ));
    }
    None
}

fn validate(job: &Value) -> Result<(), ApiError> {
    let mut errs = Vec::new();
    let job_type = s(job, "Type");
    if !matches!(job_type, "service" | "batch" | "system" | "sysbatch") {
        errs.push(format!("Invalid job type: {job_type:?}"));
    }
    if arr(job, "TaskGroups").is_empty() {
        errs.push("Missing job task groups".to_string());
    }
    for g in arr(job, "TaskGroups") {
        let name = s(g, "Name");
        let mut gerrs = Vec::new();
        if arr(g, "Tasks").is_empty() {
            gerrs.push(format!("Missing tasks for task group {name:?}"));
        }
        for t in arr(g, "Tasks") {
            if s(t, "Driver").is_empty() {
                gerrs.push(format!(
                    "Task {:?} validation failed: Missing task driver",
                    s(t, "Name")
                ));
            }
            if s(t, "Name").is_empty() {
                gerrs.push("Missing task name".to_string());
            }
        }
        let services = arr(g, "Services")
            .iter()
            .chain(arr(g, "Tasks").iter().flat_map(|t| arr(t, "Services")));
        for svc in services {
            for c in arr(svc, "Checks") {
                if let Some(e) = check_interval_error(c) {
                    gerrs.push(format!(
                        "Service {} is invalid: Check {} invalid: {e}",
                        s(svc, "Name"),
                        s(c, "Name")
                    ));
                }
            }
        }
        if let Some(up) = g.get("Update").filter(|v| !v.is_null()) {
            // Not Nomad's answer: the twin has no canaries and no promotion, and accepting the
            // block would let a canary rollout pass here that waits for promotion on a real server.
            let canary = u(up, "Canary");
            if canary > 0 {
                return Err(ApiError::new(
                    500,
                    format!(
                        "hashistack-twin: canary deployments are not implemented (task group {name:?} has Canary = {canary})"
                    ),
                ));
            }
            if !matches!(job_type, "service" | "system") {
                gerrs.push(format!("Job type {job_type:?} does not allow update block"));
            }
            let hc = s(up, "HealthCheck");
            if !matches!(hc, "checks" | "task_states" | "manual") {
                gerrs.push(format!("Invalid health check given: {hc:?}"));
            }
            let (min, deadline, progress) = (
                u(up, "MinHealthyTime"),
                u(up, "HealthyDeadline"),
                u(up, "ProgressDeadline"),
            );
            if deadline == 0 {
                gerrs.push("Healthy deadline must be greater than zero".into());
            }
            if min >= deadline {
                gerrs.push(format!(
                    "Minimum healthy time must be less than healthy deadline: {min} > {deadline}"
                ));
            }
            if progress != 0 && progress <= deadline {
                gerrs.push(format!(
                    "Healthy deadline must be less than progress deadline: {deadline} > {progress}"
                ));
            }
            if b(up, "AutoPromote") && u(up, "Canary") == 0 {
                gerrs.push("Auto Promote requires a Canary count greater than zero".into());
            }
        }
        if job_type == "system" && g.get("Scaling").is_some_and(|v| !v.is_null()) {
            return Err(ApiError::new(
                400,
                "Task groups with job type system do not support scaling blocks",
            ));
        }
        if !gerrs.is_empty() {
            errs.push(format!(
                "Task group {name} validation failed: {} error{} occurred:\n\t* {}\n\n",
                gerrs.len(),
                if gerrs.len() == 1 { "" } else { "s" },
                gerrs.join("\n\t* ")
            ));
        }
    }
    if errs.is_empty() {
        return Ok(());
    }
    Err(ApiError::new(
        500,
        format!(
            "{} error{} occurred:\n\t* {}\n\n",
            errs.len(),
            if errs.len() == 1 { "" } else { "s" },
            errs.join("\n\t* ")
        ),
    ))
}

async fn do_register(
    inner: Arc<Inner>,
    q: Vec<(String, String)>,
    bytes: Bytes,
    path_id: Option<String>,
) -> Response {
    let body = match parse_body(&bytes) {
        Ok(b) => b,
        Err(e) => return error(e),
    };
    let envelope = (|| {
        const REQ: &str = "JobRegisterRequest";
        for k in ["PolicyOverride", "PreserveCounts"] {
            typed_field(&body, REQ, k, GoKind::Bool)?;
        }
        Ok::<_, ApiError>(RegisterOpts {
            enforce_index: typed_field(&body, REQ, "EnforceIndex", GoKind::Bool)?
                .and_then(Value::as_bool)
                .unwrap_or(false),
            job_modify_index: typed_field(&body, REQ, "JobModifyIndex", GoKind::Uint64)?
                .and_then(Value::as_u64)
                .unwrap_or(0),
            eval_priority: typed_field(&body, REQ, "EvalPriority", GoKind::Int)?
                .and_then(Value::as_u64)
                .unwrap_or(0),
            trigger: "job-register",
            force_new_version: false,
        })
    })();
    let opts = match envelope {
        Ok(o) => o,
        Err(e) => return error(e),
    };
    let job = match job_from_body(&body, &q, path_id.as_deref()) {
        Ok(j) => j,
        Err(e) => return error(e),
    };
    match inner.write_and_apply(|st| match st.register(job, &opts) {
        Ok((out, plan)) => (Ok(out), plan),
        Err(e) => (Err(e), Default::default()),
    }) {
        Ok(out) => write_response(&q, out.index, &register_body(&out)),
        Err(e) => error(e),
    }
}

async fn register_jobs(State(inner): St, Query(q): Params, bytes: Bytes) -> Response {
    do_register(inner, q, bytes, None).await
}

async fn register_job(
    State(inner): St,
    Path(id): Path<String>,
    Query(q): Params,
    bytes: Bytes,
) -> Response {
    do_register(inner, q, bytes, Some(id)).await
}

async fn list_jobs(State(inner): St, Query(q): Params) -> Response {
    let ns = namespace(&q);
    let prefix = param(&q, "prefix").unwrap_or("").to_string();
    let filter = match param(&q, "filter").map(filter::parse).transpose() {
        Ok(f) => f,
        Err(e) => return error(ApiError::new(500, e.to_string())),
    };
    blocking(&inner, &q, |st| {
        let list: Vec<Value> = st
            .jobs
            .iter()
            .filter(|((jns, id), _)| ns_matches(&ns, jns) && id.starts_with(&prefix))
            .map(|(_, r)| st.job_stub(&r.job))
            .filter(|stub| filter.as_ref().is_none_or(|f| filter::eval(f, stub)))
            .collect();
        (st.tables.jobs, Ok(Value::Array(list)))
    })
    .await
}

async fn read_job(State(inner): St, Path(id): Path<String>, Query(q): Params) -> Response {
    let ns = namespace(&q);
    blocking(&inner, &q, |st| match st.job(&ns, &id) {
        Some(job) => (u(job, "ModifyIndex"), Ok(job.clone())),
        None => (st.tables.jobs, Err(ApiError::new(404, "job not found"))),
    })
    .await
}

async fn job_versions(State(inner): St, Path(id): Path<String>, Query(q): Params) -> Response {
    let ns = namespace(&q);
    let diffs = matches!(
        param(&q, "diffs"),
        Some("true" | "1" | "t" | "T" | "TRUE" | "True")
    );
    blocking(&inner, &q, |st| {
        let Some(record) = st.jobs.get(&(ns.clone(), id.clone())) else {
            return (st.tables.jobs, Err(ApiError::new(404, "job versions not found")));
        };
        let versions = record.versions.clone();
        let diff_list = if diffs {
            let d: Vec<Value> =
                versions.windows(2).map(|w| diff::job_diff(Some(&w[1]), Some(&w[0]), false)).collect();
            Value::Array(d)
        } else {
            Value::Null
        };
        let index = versions.iter().map(|v| u(v, "ModifyIndex")).max().unwrap_or(st.tables.jobs);
        (
            index,
            Ok(json!({"Versions": versions, "Diffs": diff_list, "Index": index, "KnownLeader": true, "LastContact": 0, "NextToken": ""})),
        )
    })
    .await
}

async fn revert_job(
    State(inner): St,
    Path(id): Path<String>,
    Query(q): Params,
    bytes: Bytes,
) -> Response {
    let body = match parse_body(&bytes) {
        Ok(b) => b,
        Err(e) => return error(e),
    };
    const REQ: &str = "JobRevertRequest";
    let typed = (|| {
        Ok::<_, ApiError>((
            typed_field(&body, REQ, "JobID", GoKind::String)?
                .and_then(Value::as_str)
                .unwrap_or(""),
            typed_field(&body, REQ, "JobVersion", GoKind::Uint64)?
                .and_then(Value::as_u64)
                .unwrap_or(0),
            typed_field(&body, REQ, "EnforcePriorVersion", GoKind::Uint64)?.and_then(Value::as_u64),
        ))
    })();
    let (job_id, version, enforce) = match typed {
        Ok(t) => t,
        Err(e) => return error(e),
    };
    if job_id.is_empty() {
        return error(ApiError::new(400, "JobID must be specified"));
    }
    if job_id != id {
        return error(ApiError::new(400, "Job ID does not match"));
    }
    let ns = namespace(&q);
    match inner.write_and_apply(|st| match st.revert(&ns, &id, version, enforce) {
        Ok((out, plan)) => (Ok(out), plan),
        Err(e) => (Err(e), Default::default()),
    }) {
        Ok(out) => query_response(&q, out.index, &register_body(&out)),
        Err(e) => error(e),
    }
}

async fn stable_job(
    State(inner): St,
    Path(id): Path<String>,
    Query(q): Params,
    bytes: Bytes,
) -> Response {
    let body = match parse_body(&bytes) {
        Ok(b) => b,
        Err(e) => return error(e),
    };
    let job_id = field(&body, "JobID").and_then(Value::as_str).unwrap_or("");
    if job_id != id {
        return error(ApiError::new(400, "Job ID does not match"));
    }
    let version = field(&body, "JobVersion")
        .and_then(Value::as_u64)
        .unwrap_or(0);
    let stable = field(&body, "Stable")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    let ns = namespace(&q);
    match inner.write(|st| st.set_stable(&ns, &id, version, stable)) {
        Ok(index) => write_response(&q, index, &json!({"JobModifyIndex": index, "Index": index})),
        Err(e) => error(e),
    }
}

async fn deregister_job(State(inner): St, Path(id): Path<String>, Query(q): Params) -> Response {
    let purge = match parse_bool(&q, "purge") {
        Ok(p) => p,
        Err(e) => return error(e),
    };
    for key in ["global", "no_shutdown_delay"] {
        if let Err(e) = parse_bool(&q, key) {
            return error(e);
        }
    }
    let ns = namespace(&q);
    let out = inner.write_and_apply(|st| st.deregister(&ns, &id, purge));
    let index = if out.index == 0 {
        inner.read(|st| st.index)
    } else {
        out.index
    };
    write_response(
        &q,
        index,
        &json!({
            "EvalID": out.eval_id,
            "EvalCreateIndex": out.eval_create_index,
            "JobModifyIndex": out.job_modify_index,
            "VolumeEvalID": "",
            "VolumeEvalIndex": 0,
            "Index": out.index,
            "LastContact": 0,
            "KnownLeader": false,
            "NextToken": "",
        }),
    )
}

async fn plan_job(
    State(inner): St,
    Path(id): Path<String>,
    Query(q): Params,
    bytes: Bytes,
) -> Response {
    let body = match parse_body(&bytes) {
        Ok(b) => b,
        Err(e) => return error(e),
    };
    let job = match job_from_body(&body, &q, Some(&id)) {
        Ok(j) => j,
        Err(e) => return error(e),
    };
    let want_diff = field(&body, "Diff")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    let ns = s(&job, "Namespace").to_string();
    let (current, index, live, mut held) = inner.read(|st| {
        let cur = st.job(&ns, &id).cloned();
        let live: Vec<(String, u64)> = st
            .allocs
            .values()
            .filter(|a| {
                a.namespace == ns && a.job_id == id && a.desired_run() && !a.client_terminal()
            })
            .map(|a| (a.task_group.clone(), a.job_version))
            .collect();
        // Static ports other jobs' running allocations hold on the one node.
        let held: Vec<u64> = st
            .allocs
            .values()
            .filter(|a| {
                !(a.namespace == ns && a.job_id == id) && a.desired_run() && !a.client_terminal()
            })
            .flat_map(|a| super::store::static_ports(&a.group()))
            .map(|(_, p)| p)
            .collect();
        (cur, st.index, live, held)
    });
    let changed = current
        .as_ref()
        .is_none_or(|c| jobspec::spec_changed(c, &job));
    let job_type = s(&job, "Type");
    let mut desired = serde_json::Map::new();
    let mut failed = serde_json::Map::new();
    for g in arr(&job, "TaskGroups") {
        let name = s(g, "Name");
        let count = if matches!(job_type, "system" | "sysbatch") {
            1
        } else {
            u(g, "Count")
        };
        let existing = live.iter().filter(|(tg, _)| tg == name).count() as u64;
        let place = count.saturating_sub(existing);
        let stop = existing.saturating_sub(count);
        let (destructive, ignore) = if changed && existing > 0 {
            (existing.min(count), 0)
        } else {
            (0, existing.min(count))
        };
        desired.insert(
            name.into(),
            json!({
                "Ignore": ignore, "Place": place, "Migrate": 0, "Stop": stop, "InPlaceUpdate": 0,
                "DestructiveUpdate": destructive, "Canary": 0, "Preemptions": 0, "Disconnect": 0,
                "Reconnect": 0, "RescheduleNow": 0, "RescheduleLater": 0,
            }),
        );
        let missing: Vec<&str> = arr(g, "Tasks")
            .iter()
            .map(|t| s(t, "Driver"))
            .filter(|d| !matches!(*d, "raw_exec" | "exec"))
            .collect();
        // Every allocation this plan would run needs the group's static ports: all of them
        // after a destructive update, otherwise the kept ones plus the new placements.
        let ports = super::store::static_ports(g);
        let mut collisions = 0u64;
        let mut collision = String::new();
        for _ in 0..(destructive + ignore + place) {
            match ports.iter().find(|(_, p)| held.contains(p)) {
                Some((label, port)) => {
                    collisions += 1;
                    collision = format!("network: reserved port collision {label}={port}");
                }
                None => held.extend(ports.iter().map(|(_, p)| *p)),
            }
        }
        if missing.is_empty() && collisions > 0 {
            failed.insert(
                name.into(),
                json!({
                    "NodesEvaluated": 1, "NodesFiltered": 0, "NodesInPool": 1, "NodesAvailable": {"dc1": 1},
                    "ClassFiltered": null, "ConstraintFiltered": null, "NodesExhausted": 1,
                    "ClassExhausted": null, "DimensionExhausted": {collision: 1}, "QuotaExhausted": null,
                    "ResourcesExhausted": null, "Scores": null, "ScoreMetaData": null,
                    "AllocationTime": 0, "CoalescedFailures": collisions - 1,
                }),
            );
        }
        if !missing.is_empty() {
            failed.insert(
                name.into(),
                json!({
                    "NodesEvaluated": 1, "NodesFiltered": 1, "NodesInPool": 1, "NodesAvailable": {"dc1": 1},
                    "ClassFiltered": null, "ConstraintFiltered": {"missing drivers": 1}, "NodesExhausted": 0,
                    "ClassExhausted": null, "DimensionExhausted": null, "QuotaExhausted": null,
                    "ResourcesExhausted": null, "Scores": null, "ScoreMetaData": null,
                    "AllocationTime": 0, "CoalescedFailures": count.saturating_sub(1),
                }),
            );
        }
    }
    let body = json!({
        "Annotations": {"DesiredTGUpdates": desired, "PreemptedAllocs": null},
        "FailedTGAllocs": if failed.is_empty() { Value::Null } else { Value::Object(failed) },
        "JobModifyIndex": current.as_ref().map(|c| u(c, "JobModifyIndex")).unwrap_or(0),
        "CreatedEvals": null,
        "Diff": if want_diff { diff::job_diff(current.as_ref(), Some(&job), true) } else { Value::Null },
        "NextPeriodicLaunch": super::util::ZERO_TIME,
        "Warnings": "",
        "Index": index,
    });
    write_response(&q, index, &body)
}

async fn job_summary(State(inner): St, Path(id): Path<String>, Query(q): Params) -> Response {
    let ns = namespace(&q);
    blocking(&inner, &q, |st| match st.job_summary(&ns, &id) {
        Some(sum) => (st.tables.allocs.max(st.tables.jobs), Ok(sum)),
        None => (st.tables.jobs, Err(ApiError::new(404, "job not found"))),
    })
    .await
}

async fn job_allocations(State(inner): St, Path(id): Path<String>, Query(q): Params) -> Response {
    let ns = namespace(&q);
    blocking(&inner, &q, |st| {
        let list: Vec<Value> = st
            .allocs
            .values()
            .filter(|a| a.namespace == ns && a.job_id == id)
            .map(|a| st.alloc_json(a, false))
            .collect();
        (st.tables.allocs, Ok(Value::Array(list)))
    })
    .await
}

async fn job_evaluations(State(inner): St, Path(id): Path<String>, Query(q): Params) -> Response {
    let ns = namespace(&q);
    blocking(&inner, &q, |st| {
        let mut list: Vec<Value> = st
            .evals
            .values()
            .filter(|e| s(e, "Namespace") == ns && s(e, "JobID") == id)
            .cloned()
            .collect();
        list.sort_by_key(|e| std::cmp::Reverse(u(e, "CreateIndex")));
        (st.tables.evals, Ok(Value::Array(list)))
    })
    .await
}

fn job_deployments_of(st: &Store, ns: &str, id: &str) -> Vec<Value> {
    let mut list: Vec<&super::store::Deployment> = st
        .deployments
        .values()
        .filter(|d| d.namespace == ns && d.job_id == id)
        .collect();
    list.sort_by_key(|d| std::cmp::Reverse(d.create_index));
    list.into_iter()
        .map(|d| serde_json::to_value(d).unwrap_or(Value::Null))
        .collect()
}

async fn job_latest_deployment(
    State(inner): St,
    Path(id): Path<String>,
    Query(q): Params,
) -> Response {
    let ns = namespace(&q);
    blocking(&inner, &q, |st| {
        let latest = job_deployments_of(st, &ns, &id)
            .into_iter()
            .next()
            .unwrap_or(Value::Null);
        (st.tables.deployments, Ok(latest))
    })
    .await
}

async fn job_deployments(State(inner): St, Path(id): Path<String>, Query(q): Params) -> Response {
    let ns = namespace(&q);
    blocking(&inner, &q, |st| {
        (
            st.tables.deployments,
            Ok(Value::Array(job_deployments_of(st, &ns, &id))),
        )
    })
    .await
}

async fn job_services(State(inner): St, Path(id): Path<String>, Query(q): Params) -> Response {
    let ns = namespace(&q);
    blocking(&inner, &q, |st| {
        let list: Vec<Value> = st
            .services
            .values()
            .filter(|r| r.namespace == ns && r.job_id == id)
            .map(|r| serde_json::to_value(r).unwrap_or(Value::Null))
            .collect();
        (st.tables.services, Ok(Value::Array(list)))
    })
    .await
}

// === evaluations ===

async fn list_evals(State(inner): St, Query(q): Params) -> Response {
    let ns = namespace(&q);
    let prefix = param(&q, "prefix").unwrap_or("").to_string();
    blocking(&inner, &q, |st| {
        let mut list: Vec<Value> = st
            .evals
            .values()
            .filter(|e| ns_matches(&ns, s(e, "Namespace")) && s(e, "ID").starts_with(&prefix))
            .cloned()
            .collect();
        list.sort_by_key(|e| std::cmp::Reverse(u(e, "CreateIndex")));
        (st.tables.evals, Ok(Value::Array(list)))
    })
    .await
}

async fn read_eval(State(inner): St, Path(id): Path<String>, Query(q): Params) -> Response {
    let related = matches!(param(&q, "related"), Some("true" | "1"));
    blocking(&inner, &q, |st| match st.evals.get(&id) {
        Some(e) => {
            let mut e = e.clone();
            if related && let Some(o) = e.as_object_mut() {
                o.insert("RelatedEvals".into(), json!([]));
            }
            (u(&e, "ModifyIndex"), Ok(e))
        }
        None => (st.tables.evals, Err(ApiError::new(404, "eval not found"))),
    })
    .await
}

// === deployments ===

async fn list_deployments(State(inner): St, Query(q): Params) -> Response {
    let ns = namespace(&q);
    blocking(&inner, &q, |st| {
        let mut list: Vec<&super::store::Deployment> = st
            .deployments
            .values()
            .filter(|d| ns_matches(&ns, &d.namespace))
            .collect();
        list.sort_by_key(|d| std::cmp::Reverse(d.create_index));
        let list: Vec<Value> = list
            .into_iter()
            .map(|d| serde_json::to_value(d).unwrap_or(Value::Null))
            .collect();
        (st.tables.deployments, Ok(Value::Array(list)))
    })
    .await
}

async fn read_deployment(State(inner): St, Path(id): Path<String>, Query(q): Params) -> Response {
    blocking(&inner, &q, |st| match st.deployments.get(&id) {
        Some(d) => (
            d.modify_index,
            Ok(serde_json::to_value(d).unwrap_or(Value::Null)),
        ),
        None => (
            st.tables.deployments,
            Err(ApiError::new(404, "deployment not found")),
        ),
    })
    .await
}

async fn deployment_allocations(
    State(inner): St,
    Path(id): Path<String>,
    Query(q): Params,
) -> Response {
    blocking(&inner, &q, |st| {
        let list: Vec<Value> = st
            .allocs
            .values()
            .filter(|a| a.deployment_id == id)
            .map(|a| st.alloc_json(a, false))
            .collect();
        (st.tables.allocs, Ok(Value::Array(list)))
    })
    .await
}

fn deployment_update_body(
    eval: (String, u64),
    modify_index: u64,
    reverted: Option<u64>,
    index: u64,
) -> Value {
    let mut body = json!({
        "EvalID": eval.0,
        "EvalCreateIndex": eval.1,
        "DeploymentModifyIndex": modify_index,
        // `DeploymentUpdateResponse` embeds `WriteMeta`, which carries only `Index`.
        "Index": index,
    });
    if let (Some(v), Some(o)) = (reverted, body.as_object_mut()) {
        o.insert("RevertedJobVersion".into(), json!(v));
    }
    body
}

async fn fail_deployment(State(inner): St, Path(id): Path<String>, Query(q): Params) -> Response {
    let result =
        inner.write_and_apply(
            |st| match st.fail_deployment(&id, "Deployment marked as failed") {
                Ok((reverted, plan)) => {
                    let eval = st.deployment_eval(&id);
                    let modify = st.deployments.get(&id).map(|d| d.modify_index).unwrap_or(0);
                    (
                        Ok(deployment_update_body(eval, modify, reverted, st.index)),
                        plan,
                    )
                }
                Err(e) => (Err(e), Default::default()),
            },
        );
    match result {
        Ok(body) => write_response(&q, u(&body, "Index"), &body),
        Err(e) => error(e),
    }
}

async fn pause_deployment(
    State(inner): St,
    Path(id): Path<String>,
    Query(q): Params,
    bytes: Bytes,
) -> Response {
    let body = match parse_body(&bytes) {
        Ok(b) => b,
        Err(e) => return error(e),
    };
    if field(&body, "DeploymentID").and_then(Value::as_str) != Some(id.as_str()) {
        return error(ApiError::new(400, "Deployment ID does not match"));
    }
    let pause = field(&body, "Pause")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    let result = inner.write(|st| {
        st.pause_deployment(&id, pause)
            .map(|modify| deployment_update_body(st.deployment_eval(&id), modify, None, st.index))
    });
    match result {
        Ok(body) => write_response(&q, u(&body, "Index"), &body),
        Err(e) => error(e),
    }
}

async fn deployment_alloc_health(
    State(inner): St,
    Path(id): Path<String>,
    Query(q): Params,
    bytes: Bytes,
) -> Response {
    let body = match parse_body(&bytes) {
        Ok(b) => b,
        Err(e) => return error(e),
    };
    if field(&body, "DeploymentID").and_then(Value::as_str) != Some(id.as_str()) {
        return error(ApiError::new(400, "Deployment ID does not match"));
    }
    let ids = |key: &str| -> Vec<String> {
        field(&body, key)
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(|v| v.as_str().map(String::from))
                    .collect()
            })
            .unwrap_or_default()
    };
    let (healthy, unhealthy) = (ids("HealthyAllocationIDs"), ids("UnhealthyAllocationIDs"));
    let result = inner.write_and_apply(|st| {
        let Some(d) = st.deployments.get(&id) else {
            return (
                Err(ApiError::new(500, "deployment not found")),
                Default::default(),
            );
        };
        if !super::store::is_active(&d.status) {
            return (
                Err(ApiError::new(
                    500,
                    "can't set health of allocations for a terminal deployment",
                )),
                Default::default(),
            );
        }
        let mut plan = super::store::Plan::default();
        for a in &healthy {
            plan.extend(st.set_alloc_health(a, true));
        }
        for a in &unhealthy {
            plan.extend(st.set_alloc_health(a, false));
        }
        let eval = st.deployment_eval(&id);
        let modify = st.deployments.get(&id).map(|d| d.modify_index).unwrap_or(0);
        (
            Ok(deployment_update_body(eval, modify, None, st.index)),
            plan,
        )
    });
    match result {
        Ok(body) => write_response(&q, u(&body, "Index"), &body),
        Err(e) => error(e),
    }
}

// === allocations ===

async fn list_allocs(State(inner): St, Query(q): Params) -> Response {
    let ns = namespace(&q);
    let prefix = param(&q, "prefix").unwrap_or("").to_string();
    let filter = match param(&q, "filter").map(filter::parse).transpose() {
        Ok(f) => f,
        Err(e) => return error(ApiError::new(500, e.to_string())),
    };
    blocking(&inner, &q, |st| {
        let list: Vec<Value> = st
            .allocs
            .values()
            .filter(|a| ns_matches(&ns, &a.namespace) && a.id.starts_with(&prefix))
            .map(|a| st.alloc_json(a, false))
            .filter(|v| filter.as_ref().is_none_or(|f| filter::eval(f, v)))
            .collect();
        (st.tables.allocs, Ok(Value::Array(list)))
    })
    .await
}

async fn read_alloc(State(inner): St, Path(id): Path<String>, Query(q): Params) -> Response {
    blocking(&inner, &q, |st| match st.allocs.get(&id) {
        Some(a) => (a.modify_index, Ok(st.alloc_json(a, true))),
        None => (st.tables.allocs, Err(ApiError::new(404, "alloc not found"))),
    })
    .await
}

async fn alloc_services(State(inner): St, Path(id): Path<String>, Query(q): Params) -> Response {
    blocking(&inner, &q, |st| {
        let list: Vec<Value> = st
            .services
            .values()
            .filter(|r| r.alloc_id == id)
            .map(|r| serde_json::to_value(r).unwrap_or(Value::Null))
            .collect();
        (st.tables.services, Ok(Value::Array(list)))
    })
    .await
}

// === services ===

async fn list_services(State(inner): St, Query(q): Params) -> Response {
    let ns = namespace(&q);
    blocking(&inner, &q, |st| {
        let mut by_ns: BTreeMap<String, BTreeMap<String, std::collections::BTreeSet<String>>> =
            BTreeMap::new();
        for r in st
            .services
            .values()
            .filter(|r| ns_matches(&ns, &r.namespace))
        {
            by_ns
                .entry(r.namespace.clone())
                .or_default()
                .entry(r.service_name.clone())
                .or_default()
                .extend(r.tags.iter().cloned());
        }
        let list: Vec<Value> = by_ns
            .into_iter()
            .map(|(ns, services)| {
                let services: Vec<Value> = services
                    .into_iter()
                    .map(|(name, tags)| json!({"ServiceName": name, "Tags": tags}))
                    .collect();
                json!({"Namespace": ns, "Services": services})
            })
            .collect();
        (st.tables.services, Ok(Value::Array(list)))
    })
    .await
}

async fn read_service(State(inner): St, Path(name): Path<String>, Query(q): Params) -> Response {
    let ns = namespace(&q);
    let filter = match param(&q, "filter").map(filter::parse).transpose() {
        Ok(f) => f,
        Err(e) => return error(ApiError::new(500, e.to_string())),
    };
    blocking(&inner, &q, |st| {
        let list: Vec<Value> = st
            .services
            .values()
            .filter(|r| ns_matches(&ns, &r.namespace) && r.service_name == name)
            .map(|r| serde_json::to_value(r).unwrap_or(Value::Null))
            .filter(|v| filter.as_ref().is_none_or(|f| filter::eval(f, v)))
            .collect();
        (st.tables.services, Ok(Value::Array(list)))
    })
    .await
}

async fn delete_service(
    State(inner): St,
    Path((_name, id)): Path<(String, String)>,
    Query(q): Params,
) -> Response {
    let index = inner.write(|st| {
        st.remove_service(&id);
        st.index
    });
    write_response(&q, index, &Value::Null)
}

async fn event_stream(State(inner): St, Query(q): Params) -> Response {
    events::stream(inner, &q)
}

// === namespaces, status, agent ===

fn default_namespace() -> Value {
    json!({
        "Name": "default",
        "Description": "Default shared namespace",
        "Quota": "",
        "Capabilities": null,
        "NodePoolConfiguration": null,
        "VaultConfiguration": null,
        "ConsulConfiguration": null,
        "Meta": null,
        "CreateIndex": 1,
        "ModifyIndex": 1,
    })
}

async fn list_namespaces(State(inner): St, Query(q): Params) -> Response {
    blocking(&inner, &q, |_| (1, Ok(json!([default_namespace()])))).await
}

async fn read_namespace(State(inner): St, Path(name): Path<String>, Query(q): Params) -> Response {
    blocking(&inner, &q, |_| {
        if name == "default" {
            (1, Ok(default_namespace()))
        } else {
            (1, Err(ApiError::new(404, "namespace not found")))
        }
    })
    .await
}

async fn list_nodes(State(inner): St, Query(q): Params) -> Response {
    blocking(&inner, &q, |st| {
        let node = json!({
            "ID": st.node_id, "Name": st.node_name, "Datacenter": st.datacenter, "NodePool": "default",
            "NodeClass": "", "Address": "127.0.0.1", "Version": inner.config.version(), "Drain": false,
            "SchedulingEligibility": "eligible", "Status": "ready", "StatusDescription": "",
            "Drivers": {"raw_exec": {"Detected": true, "Healthy": true}, "exec": {"Detected": true, "Healthy": true}},
            "CreateIndex": 1, "ModifyIndex": 1,
        });
        (1, Ok(json!([node])))
    })
    .await
}

async fn status_leader(Query(q): Params) -> Response {
    query_response(&q, 1, &json!("127.0.0.1:4647"))
}

async fn status_peers(Query(q): Params) -> Response {
    query_response(&q, 1, &json!(["127.0.0.1:4647"]))
}

async fn regions(Query(q): Params) -> Response {
    query_response(&q, 1, &json!(["global"]))
}

async fn agent_self(State(inner): St, Query(q): Params) -> Response {
    let (node_id, node_name, dc) = inner.read(|st| {
        (
            st.node_id.clone(),
            st.node_name.clone(),
            st.datacenter.clone(),
        )
    });
    let body = json!({
        "config": {"Region": "global", "Datacenter": dc, "NodeName": node_name, "Version": {"Version": inner.config.version(), "VersionPrerelease": "", "VersionMetadata": ""}, "ACL": {"Enabled": inner.config.acl_token.is_some()}},
        "member": {"Name": format!("{node_name}.global"), "Addr": "127.0.0.1", "Port": 4648, "Tags": {"region": "global", "dc": dc, "role": "nomad", "id": node_id}, "Status": "alive"},
        "stats": {},
    });
    query_response(&q, 1, &body)
}
