//! What a submitted job goes through before the state store sees it, on every path that
//! submits one: the register and plan endpoints, and in-process callers (the operator's in-memory
//! Nomad). Decoding as Go's `encoding/json` does, `api.Job.Canonicalize`, then the server's
//! validation, with Nomad's status codes and texts.

use super::jobspec;
use super::store::ApiError;
use super::util::go_duration;
use super::view::View;
use serde_json::Value;

/// A key of a request body, matched as Go's decoder matches struct fields (exact, then
/// case-insensitive); `null` reads as absent.
pub(crate) fn field<'a>(body: &'a Value, key: &str) -> Option<&'a Value> {
    let m = body.as_object()?;
    m.get(key)
        .or_else(|| {
            m.iter()
                .find(|(k, _)| k.eq_ignore_ascii_case(key))
                .map(|(_, v)| v)
        })
        .filter(|v| !v.is_null())
}

/// Decodes, canonicalizes and validates the job of a register or plan body (`{"Job": …}`), as
/// the server does before the state store sees it. `namespace` is the request's `namespace`
/// parameter; `path_id` the ID in the path, which must match the job's.
pub fn job_from_body(
    body: &Value,
    namespace: Option<&str>,
    path_id: Option<&str>,
) -> Result<Value, ApiError> {
    let job = decode_job(body, namespace, path_id)?;
    validate(&job)?;
    Ok(job)
}

/// [`job_from_body`] without the server's validation: what a state restore writes. For test
/// setup that stands a stub (a job without task groups) in for someone else's job.
pub fn decode_job(
    body: &Value,
    namespace: Option<&str>,
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
        namespace,
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
    Ok(job)
}

/// `ServiceCheck.validate`'s interval and timeout rules (both at least one second).
fn check_interval_error(c: View<'_>) -> Option<String> {
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

fn validate(job: &Value) -> Result<(), ApiError> {
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
