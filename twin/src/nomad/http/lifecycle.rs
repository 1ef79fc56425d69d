//! Operator actions: allocation stop, forced job evaluation, an evaluation's allocations and
//! deployment promotion (SRC command/agent/alloc_endpoint.go `allocStop`,
//! command/agent/job_endpoint.go `jobForceEvaluate`, command/agent/eval_endpoint.go,
//! command/agent/deployment_endpoint.go).

use super::*;

/// `POST/PUT /v1/allocation/:id/stop` → `{"EvalID", "Index"}`.
pub(super) async fn stop_alloc(Path(id): Path<String>, r: Req) -> Answer {
    if let Some(v) = r.param("no_shutdown_delay").filter(|v| !v.is_empty())
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
        return Err(ApiError::new(
            500,
            format!(
                "no_shutdown_delay value is not a boolean: strconv.ParseBool: parsing {v:?}: invalid syntax"
            ),
        ));
    }
    let (eval_id, index) = r.apply(|st| st.stop_alloc(&id))?;
    Ok(r.written(index, &json!({"EvalID": eval_id, "Index": index})))
}

/// `POST/PUT /v1/job/:id/evaluate` with an optional `api.JobEvaluateRequest`
/// (`{"JobID", "EvalOptions": {"ForceReschedule"}}`); an empty body evaluates the path's job.
pub(super) async fn evaluate_job(Path(id): Path<String>, r: Req, bytes: Bytes) -> Answer {
    if !bytes.is_empty() {
        let body = parse_body(&bytes)?;
        let job_id = typed_field(&body, "JobEvaluateRequest", "JobID", GoKind::String)?
            .and_then(Value::as_str)
            .unwrap_or("");
        if job_id.is_empty() {
            return Err(ApiError::new(400, "Job ID must be specified"));
        }
        if job_id != id {
            return Err(ApiError::new(400, "JobID not same as job name"));
        }
    }
    let ns = r.ns();
    let out = r.apply(|st| st.evaluate_job(&ns, &id))?;
    Ok(r.written(out.index, &out.body()))
}

/// `GET /v1/evaluation/:id/allocations`: stubs of the allocations the evaluation placed (an
/// unknown evaluation has none: `[]`).
pub(super) async fn eval_allocations(Path(id): Path<String>, r: Req) -> Response {
    r.blocking(move |st| {
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
pub(super) async fn promote_deployment(Path(id): Path<String>, r: Req, bytes: Bytes) -> Answer {
    let body = deployment_request(&bytes, &id)?;
    typed_field(&body, "DeploymentPromoteRequest", "All", GoKind::Bool)?;
    let (index, body) = r.inner.write(|st| {
        st.promote_deployment(&id)
            .map(|modify| deployment_update_body(st.deployment_eval(&id), modify, None, st.index))
    })?;
    Ok(r.written(index, &body))
}
