//! Operator actions: allocation stop, forced job evaluation, an evaluation's allocations and
//! deployment promotion (SRC command/agent/alloc_endpoint.go `allocStop`,
//! command/agent/job_endpoint.go `jobForceEvaluate`, command/agent/eval_endpoint.go,
//! command/agent/deployment_endpoint.go).

use super::*;

/// `POST/PUT /v1/allocation/:id/stop` → `{"EvalID", "Index"}`.
pub(super) async fn stop_alloc(
    State(inner): St,
    Path(id): Path<String>,
    Query(q): Params,
) -> Response {
    if let Some(v) = param(&q, "no_shutdown_delay").filter(|v| !v.is_empty())
        && !matches!(
            v,
            "1" | "t"
                | "T"
                | "TRUE"
                | "true"
                | "True"
                | "0"
                | "f"
                | "F"
                | "FALSE"
                | "false"
                | "False"
        )
    {
        return error(ApiError::new(
            500,
            format!(
                "no_shutdown_delay value is not a boolean: strconv.ParseBool: parsing {v:?}: invalid syntax"
            ),
        ));
    }
    let result = inner.write_and_apply(|st| match st.stop_alloc(&id) {
        Ok((eval, plan)) => (Ok(eval), plan),
        Err(e) => (Err(e), Plan::default()),
    });
    match result {
        Ok((eval_id, index)) => {
            write_response(&q, index, &json!({"EvalID": eval_id, "Index": index}))
        }
        Err(e) => error(e),
    }
}

/// `POST/PUT /v1/job/:id/evaluate` with an optional `api.JobEvaluateRequest`
/// (`{"JobID", "EvalOptions": {"ForceReschedule"}}`); an empty body evaluates the path's job.
pub(super) async fn evaluate_job(
    State(inner): St,
    Path(id): Path<String>,
    Query(q): Params,
    bytes: Bytes,
) -> Response {
    if !bytes.is_empty() {
        let body = match parse_body(&bytes) {
            Ok(b) => b,
            Err(e) => return error(e),
        };
        let job_id = match typed_field(&body, "JobEvaluateRequest", "JobID", GoKind::String) {
            Ok(v) => v.and_then(Value::as_str).unwrap_or(""),
            Err(e) => return error(e),
        };
        if job_id.is_empty() {
            return error(ApiError::new(400, "Job ID must be specified"));
        }
        if job_id != id {
            return error(ApiError::new(400, "JobID not same as job name"));
        }
    }
    let ns = namespace(&q);
    let result = inner.write_and_apply(|st| match st.evaluate_job(&ns, &id) {
        Ok((out, plan)) => (Ok(out), plan),
        Err(e) => (Err(e), Plan::default()),
    });
    match result {
        Ok(out) => write_response(&q, out.index, &out.body()),
        Err(e) => error(e),
    }
}

/// `GET /v1/evaluation/:id/allocations`: stubs of the allocations the evaluation placed (an
/// unknown evaluation has none: `[]`).
pub(super) async fn eval_allocations(
    State(inner): St,
    Path(id): Path<String>,
    Query(q): Params,
) -> Response {
    blocking(&inner, &q, move |st| {
        let list: Vec<Value> = st
            .allocs
            .values()
            .filter(|a| a.eval_id == id)
            .map(|a| st.alloc_json(a, false))
            .collect();
        (st.tables.allocs, Ok(Value::Array(list)))
    })
    .await
}

/// `POST/PUT /v1/deployment/promote/:id` with `{"DeploymentID", "All"}` or
/// `{"DeploymentID", "Groups"}`.
pub(super) async fn promote_deployment(
    State(inner): St,
    Path(id): Path<String>,
    Query(q): Params,
    bytes: Bytes,
) -> Response {
    let body = match deployment_request(&bytes, &id) {
        Ok(b) => b,
        Err(e) => return error(e),
    };
    if let Err(e) = typed_field(&body, "DeploymentPromoteRequest", "All", GoKind::Bool) {
        return error(e);
    }
    let result = inner.write(|st| {
        st.promote_deployment(&id)
            .map(|modify| deployment_update_body(st.deployment_eval(&id), modify, None, st.index))
    });
    match result {
        Ok((index, body)) => write_response(&q, index, &body),
        Err(e) => error(e),
    }
}
