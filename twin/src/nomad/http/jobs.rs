//! Job endpoints: register/update (with EnforceIndex), read, list, versions, revert, stable,
//! deregister, plan, and the per-job reads.

use super::*;

/// Decodes, canonicalizes and validates a job from a register/plan body.
pub(super) fn job_from_body(
    body: &Value,
    q: &[(String, String)],
    path_id: Option<&str>,
) -> Result<Value, ApiError> {
    let raw = field(body, "Job").ok_or_else(|| ApiError::new(400, "Job must be specified"))?;
    let mut job =
        jobspec::decode("Job", Some(raw), "Job").map_err(|e| ApiError::new(400, e.to_string()))?;
    let id = View::job(&job).str("ID").to_string();
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
        View::job(&job).str("Namespace"),
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
pub(super) fn check_interval_error(c: View<'_>) -> Option<String> {
    const MIN: u64 = 1_000_000_000;
    if matches!(c.str("Type").to_ascii_lowercase().as_str(), "" | "ttl") {
        return None;
    }
    let nanos = |k| c.dur(k);
    let (interval, timeout) = (c.uint("Interval"), c.uint("Timeout"));
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

pub(super) fn validate(job: &Value) -> Result<(), ApiError> {
    let mut errs = Vec::new();
    let job = View::job(job);
    let job_type = job.str("Type");
    if !matches!(job_type, "service" | "batch" | "system" | "sysbatch") {
        errs.push(format!("Invalid job type: {job_type:?}"));
    }
    if job.list("TaskGroups").is_empty() {
        errs.push("Missing job task groups".to_string());
    }
    for g in job.list("TaskGroups") {
        let name = g.str("Name");
        let mut gerrs = Vec::new();
        let tasks = g.list("Tasks");
        if tasks.is_empty() {
            gerrs.push(format!("Missing tasks for task group {name:?}"));
        }
        for t in &tasks {
            if t.str("Driver").is_empty() {
                gerrs.push(format!(
                    "Task {:?} validation failed: Missing task driver",
                    t.str("Name")
                ));
            }
            if t.str("Name").is_empty() {
                gerrs.push("Missing task name".to_string());
            }
        }
        let services = g
            .list("Services")
            .into_iter()
            .chain(tasks.iter().flat_map(|t| t.list("Services")));
        for svc in services {
            for c in svc.list("Checks") {
                if let Some(e) = check_interval_error(c) {
                    gerrs.push(format!(
                        "Service {} is invalid: Check {} invalid: {e}",
                        svc.str("Name"),
                        c.str("Name")
                    ));
                }
            }
        }
        if let Some(up) = g.obj("Update") {
            // Not Nomad's answer: the twin has no canaries and no promotion, and accepting the
            // block would let a canary rollout pass here that waits for promotion on a real server.
            let canary = up.uint("Canary");
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
            let hc = up.str("HealthCheck");
            if !matches!(hc, "checks" | "task_states" | "manual") {
                gerrs.push(format!("Invalid health check given: {hc:?}"));
            }
            let (min, deadline, progress) = (
                up.uint("MinHealthyTime"),
                up.uint("HealthyDeadline"),
                up.uint("ProgressDeadline"),
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
            if up.bool("AutoPromote") && up.uint("Canary") == 0 {
                gerrs.push("Auto Promote requires a Canary count greater than zero".into());
            }
        }
        if job_type == "system" && g.is_set("Scaling") {
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
        Ok(out) => query_response(&q, out.index, &register_body(&out)),
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
    let job = match job_from_body(&body, &q, Some(&id)) {
        Ok(j) => j,
        Err(e) => return error(e),
    };
    let want_diff = field(&body, "Diff")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    let ns = View::job(&job).str("Namespace").to_string();
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
            .flat_map(|a| crate::nomad::store::static_ports(&a.group()))
            .map(|(_, p)| p)
            .collect();
        (cur, st.index, live, held)
    });
    let changed = current
        .as_ref()
        .is_none_or(|c| jobspec::spec_changed(c, &job));
    let job_type = View::job(&job).str("Type");
    let mut desired = serde_json::Map::new();
    let mut failed = serde_json::Map::new();
    for g in View::job(&job).list("TaskGroups") {
        let name = g.str("Name");
        let count = if matches!(job_type, "system" | "sysbatch") {
            1
        } else {
            g.uint("Count")
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
        let missing: Vec<&str> = g
            .list("Tasks")
            .iter()
            .map(|t| t.str("Driver"))
            .filter(|d| !matches!(*d, "raw_exec" | "exec"))
            .collect();
        // Every allocation this plan would run needs the group's static ports: all of them
        // after a destructive update, otherwise the kept ones plus the new placements.
        let ports = crate::nomad::store::static_ports(g.value());
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
        "JobModifyIndex": current.as_ref().map(|c| View::job(c).uint("JobModifyIndex")).unwrap_or(0),
        "CreatedEvals": null,
        "Diff": if want_diff { diff::job_diff(current.as_ref(), Some(&job), true) } else { Value::Null },
        "NextPeriodicLaunch": crate::nomad::util::ZERO_TIME,
        "Warnings": "",
        "Index": index,
    });
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

pub(super) fn job_deployments_of(st: &Store, ns: &str, id: &str) -> Vec<Value> {
    let mut list: Vec<&crate::nomad::store::Deployment> = st
        .deployments
        .values()
        .filter(|d| d.namespace == ns && d.job_id == id)
        .collect();
    list.sort_by_key(|d| std::cmp::Reverse(d.create_index));
    list.into_iter()
        .map(|d| serde_json::to_value(d).unwrap_or(Value::Null))
        .collect()
}

pub(super) async fn job_latest_deployment(
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

pub(super) async fn job_deployments(
    State(inner): St,
    Path(id): Path<String>,
    Query(q): Params,
) -> Response {
    let ns = namespace(&q);
    blocking(&inner, &q, |st| {
        (
            st.tables.deployments,
            Ok(Value::Array(job_deployments_of(st, &ns, &id))),
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
