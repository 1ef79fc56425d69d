//! Job endpoints: register/update (with EnforceIndex), read, list, versions, revert, stable,
//! deregister, plan, and the per-job reads.

use super::*;

pub(super) async fn do_register(
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
    let job = match job_from_body(&body, param(&q, "namespace"), path_id.as_deref()) {
        Ok(j) => j,
        Err(e) => return error(e),
    };
    match inner.write_and_apply(|st| match st.register(job, &opts) {
        Ok((out, plan)) => (Ok(out), plan),
        Err(e) => (Err(e), Default::default()),
    }) {
        Ok(out) => write_response(&q, out.index, &out.body()),
        Err(e) => error(e),
    }
}

pub(super) async fn register_jobs(State(inner): St, Query(q): Params, bytes: Bytes) -> Response {
    do_register(inner, q, bytes, None).await
}

pub(super) async fn register_job(
    State(inner): St,
    Path(id): Path<String>,
    Query(q): Params,
    bytes: Bytes,
) -> Response {
    do_register(inner, q, bytes, Some(id)).await
}

pub(super) async fn list_jobs(
    State(inner): St,
    Query(q): Params,
    Extension(acl): ReqAcl,
) -> Response {
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
            .filter(|((jns, id), _)| {
                ns_matches(&ns, jns) && acl.allow_ns_op(jns, "list-jobs") && id.starts_with(&prefix)
            })
            .map(|(_, r)| st.job_stub(&r.job))
            .filter(|stub| filter.as_ref().is_none_or(|f| filter::eval(f, stub)))
            .collect();
        (st.tables.jobs, Ok(Value::Array(list)))
    })
    .await
}

pub(super) async fn read_job(
    State(inner): St,
    Path(id): Path<String>,
    Query(q): Params,
) -> Response {
    let ns = namespace(&q);
    blocking(&inner, &q, |st| match st.job(&ns, &id) {
        Some(job) => (View::job(job).uint("ModifyIndex"), Ok(job.clone())),
        None => (st.tables.jobs, Err(ApiError::new(404, "job not found"))),
    })
    .await
}

pub(super) async fn job_versions(
    State(inner): St,
    Path(id): Path<String>,
    Query(q): Params,
) -> Response {
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
        let index = versions.iter().map(|v| View::job(v).uint("ModifyIndex")).max().unwrap_or(st.tables.jobs);
        (
            index,
            Ok(json!({"Versions": versions, "Diffs": diff_list, "Index": index, "KnownLeader": true, "LastContact": 0, "NextToken": ""})),
        )
    })
    .await
}

pub(super) async fn revert_job(
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
        Ok(out) => query_response(&q, out.index, &out.body()),
        Err(e) => error(e),
    }
}

pub(super) async fn stable_job(
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

pub(super) async fn deregister_job(
    State(inner): St,
    Path(id): Path<String>,
    Query(q): Params,
) -> Response {
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

pub(super) async fn plan_job(
    State(inner): St,
    Path(id): Path<String>,
    Query(q): Params,
    bytes: Bytes,
) -> Response {
    let body = match parse_body(&bytes) {
        Ok(b) => b,
        Err(e) => return error(e),
    };
    let job = match job_from_body(&body, param(&q, "namespace"), Some(&id)) {
        Ok(j) => j,
        Err(e) => return error(e),
    };
    let want_diff = field(&body, "Diff")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    let (index, body) = inner.read(|st| (st.index, st.plan(&job, want_diff)));
    write_response(&q, index, &body)
}

pub(super) async fn job_summary(
    State(inner): St,
    Path(id): Path<String>,
    Query(q): Params,
) -> Response {
    let ns = namespace(&q);
    blocking(&inner, &q, |st| match st.job_summary(&ns, &id) {
        Some(sum) => (st.tables.allocs.max(st.tables.jobs), Ok(sum)),
        None => (st.tables.jobs, Err(ApiError::new(404, "job not found"))),
    })
    .await
}

pub(super) async fn job_allocations(
    State(inner): St,
    Path(id): Path<String>,
    Query(q): Params,
) -> Response {
    let ns = namespace(&q);
    blocking(&inner, &q, |st| {
        (st.tables.allocs, Ok(Value::Array(st.job_allocs(&ns, &id))))
    })
    .await
}

pub(super) async fn job_evaluations(
    State(inner): St,
    Path(id): Path<String>,
    Query(q): Params,
) -> Response {
    let ns = namespace(&q);
    blocking(&inner, &q, |st| {
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

pub(super) async fn job_latest_deployment(
    State(inner): St,
    Path(id): Path<String>,
    Query(q): Params,
) -> Response {
    let ns = namespace(&q);
    blocking(&inner, &q, |st| {
        let latest = st
            .job_deployments(&ns, &id)
            .into_iter()
            .next()
            .unwrap_or(Value::Null);
        (st.tables.deployments, Ok(latest))
    })
    .await
}

pub(super) async fn job_deployments(
    State(inner): St,
    Path(id): Path<String>,
    Query(q): Params,
) -> Response {
    let ns = namespace(&q);
    blocking(&inner, &q, |st| {
        (
            st.tables.deployments,
            Ok(Value::Array(st.job_deployments(&ns, &id))),
        )
    })
    .await
}

pub(super) async fn job_services(
    State(inner): St,
    Path(id): Path<String>,
    Query(q): Params,
) -> Response {
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
