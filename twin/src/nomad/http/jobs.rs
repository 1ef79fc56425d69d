//! Job endpoints: register/update (with EnforceIndex), read, list, versions, revert, stable,
//! deregister, plan, and the per-job reads.

use super::*;

pub(super) fn do_register(r: &Req, bytes: &Bytes, path_id: Option<&str>) -> Answer {
    let body = parse_body(bytes)?;
    const REQ: &str = "JobRegisterRequest";
    for k in ["PolicyOverride", "PreserveCounts"] {
        typed_field(&body, REQ, k, GoKind::Bool)?;
    }
    let opts = RegisterOpts {
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
    };
    let job = job_from_body(&body, r.param("namespace"), path_id)?;
    let out = r.apply(|st| st.register(job, &opts))?;
    Ok(r.written(out.index, &out.body()))
}

pub(super) async fn register_jobs(r: Req, bytes: Bytes) -> Answer {
    do_register(&r, &bytes, None)
}

pub(super) async fn register_job(Path(id): Path<String>, r: Req, bytes: Bytes) -> Answer {
    do_register(&r, &bytes, Some(&id))
}

pub(super) async fn list_jobs(r: Req, Extension(acl): ReqAcl) -> Answer {
    let ns = r.ns();
    let prefix = r.param("prefix").unwrap_or("").to_string();
    let filter = r.filter()?;
    Ok(r.blocking(|st| {
        let list: Vec<Value> = st
            .jobs
            .iter()
            .filter(|((jns, id), _)| {
                ns_matches(&ns, jns) && acl.allow_ns_op(jns, "list-jobs") && id.starts_with(&prefix)
            })
            .map(|(_, r)| st.job_stub(&r.job))
            .filter(|stub| filter.as_ref().is_none_or(|f| filter::eval(f, stub)))
            .collect();
        (st.tables.jobs, Ok(Value::Array(list)))
    })
    .await)
}

pub(super) async fn read_job(Path(id): Path<String>, r: Req) -> Response {
    let ns = r.ns();
    r.blocking(|st| match st.job(&ns, &id) {
        Some(job) => (View::job(job).uint("ModifyIndex"), Ok(job.clone())),
        None => (st.tables.jobs, Err(ApiError::new(404, "job not found"))),
    })
    .await
}

pub(super) async fn job_versions(Path(id): Path<String>, r: Req) -> Response {
    let ns = r.ns();
    let diffs = matches!(
        r.param("diffs"),
        Some("true" | "1" | "t" | "T" | "TRUE" | "True")
    );
    r.blocking(|st| {
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
        let index = versions.iter().map(|v| View::job(v).uint("ModifyIndex")).max().unwrap_or(st.tables.jobs);
        (
            index,
            Ok(json!({"Versions": versions, "Diffs": diff_list, "Index": index, "KnownLeader": true, "LastContact": 0, "NextToken": ""})),
        )
    })
    .await
}

pub(super) async fn revert_job(Path(id): Path<String>, r: Req, bytes: Bytes) -> Answer {
    let body = parse_body(&bytes)?;
    const REQ: &str = "JobRevertRequest";
    let job_id = typed_field(&body, REQ, "JobID", GoKind::String)?
        .and_then(Value::as_str)
        .unwrap_or("");
    let version = typed_field(&body, REQ, "JobVersion", GoKind::Uint64)?
        .and_then(Value::as_u64)
        .unwrap_or(0);
    let enforce =
        typed_field(&body, REQ, "EnforcePriorVersion", GoKind::Uint64)?.and_then(Value::as_u64);
    if job_id.is_empty() {
        return Err(ApiError::new(400, "JobID must be specified"));
    }
    if job_id != id {
        return Err(ApiError::new(400, "Job ID does not match"));
    }
    let ns = r.ns();
    let out = r.apply(|st| st.revert(&ns, &id, version, enforce))?;
    Ok(query_response(&r.q, out.index, &out.body()))
}

pub(super) async fn stable_job(Path(id): Path<String>, r: Req, bytes: Bytes) -> Answer {
    let body = parse_body(&bytes)?;
    let job_id = field(&body, "JobID").and_then(Value::as_str).unwrap_or("");
    if job_id != id {
        return Err(ApiError::new(400, "Job ID does not match"));
    }
    let version = field(&body, "JobVersion")
        .and_then(Value::as_u64)
        .unwrap_or(0);
    let stable = field(&body, "Stable")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    let ns = r.ns();
    let index = r
        .inner
        .write(|st| st.set_stable(&ns, &id, version, stable))?;
    Ok(r.written(index, &json!({"JobModifyIndex": index, "Index": index})))
}

pub(super) async fn deregister_job(Path(id): Path<String>, r: Req) -> Answer {
    let purge = parse_bool(&r.q, "purge")?;
    for key in ["global", "no_shutdown_delay"] {
        parse_bool(&r.q, key)?;
    }
    let ns = r.ns();
    let out = r.inner.write_and_apply(|st| st.deregister(&ns, &id, purge));
    let index = if out.index == 0 {
        r.inner.read(|st| st.index)
    } else {
        out.index
    };
    Ok(r.written(
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
    ))
}

pub(super) async fn plan_job(Path(id): Path<String>, r: Req, bytes: Bytes) -> Answer {
    let body = parse_body(&bytes)?;
    let job = job_from_body(&body, r.param("namespace"), Some(&id))?;
    let want_diff = field(&body, "Diff")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    let (index, body) = r.inner.read(|st| (st.index, st.plan(&job, want_diff)));
    Ok(r.written(index, &body))
}

pub(super) async fn job_summary(Path(id): Path<String>, r: Req) -> Response {
    let ns = r.ns();
    r.blocking(|st| match st.job_summary(&ns, &id) {
        Some(sum) => (st.tables.allocs.max(st.tables.jobs), Ok(sum)),
        None => (st.tables.jobs, Err(ApiError::new(404, "job not found"))),
    })
    .await
}

pub(super) async fn job_allocations(Path(id): Path<String>, r: Req) -> Response {
    let ns = r.ns();
    r.blocking(|st| (st.tables.allocs, Ok(Value::Array(st.job_allocs(&ns, &id)))))
        .await
}

pub(super) async fn job_evaluations(Path(id): Path<String>, r: Req) -> Response {
    let ns = r.ns();
    r.blocking(|st| {
        let mut list: Vec<Value> = st
            .evals
            .values()
            .filter(|e| View::eval(e).str("Namespace") == ns && View::eval(e).str("JobID") == id)
            .cloned()
            .collect();
        list.sort_by_key(|e| std::cmp::Reverse(View::eval(e).uint("CreateIndex")));
        (st.tables.evals, Ok(Value::Array(list)))
    })
    .await
}

pub(super) async fn job_latest_deployment(Path(id): Path<String>, r: Req) -> Response {
    let ns = r.ns();
    r.blocking(|st| {
        let latest = st
            .job_deployments(&ns, &id)
            .into_iter()
            .next()
            .unwrap_or(Value::Null);
        (st.tables.deployments, Ok(latest))
    })
    .await
}

pub(super) async fn job_deployments(Path(id): Path<String>, r: Req) -> Response {
    let ns = r.ns();
    r.blocking(|st| {
        let list = st.job_deployments(&ns, &id);
        (st.tables.deployments, Ok(Value::Array(list)))
    })
    .await
}

pub(super) async fn job_services(Path(id): Path<String>, r: Req) -> Response {
    let ns = r.ns();
    r.blocking(|st| {
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
