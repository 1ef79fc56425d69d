//! Deployment endpoints: list, read, allocations, fail, pause and allocation health.

use super::*;

pub(super) async fn list_deployments(
    State(inner): St,
    Query(q): Params,
    Extension(acl): ReqAcl,
) -> Response {
    let ns = namespace(&q);
    blocking(&inner, &q, |st| {
        let mut list: Vec<&crate::nomad::store::Deployment> = st
            .deployments
            .values()
            .filter(|d| ns_matches(&ns, &d.namespace) && acl.allow_ns_op(&d.namespace, "read-job"))
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

pub(super) async fn read_deployment(
    State(inner): St,
    Path(id): Path<String>,
    Query(q): Params,
) -> Response {
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

pub(super) async fn deployment_allocations(
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

pub(super) fn deployment_update_body(
    eval: (String, u64),
    modify_index: u64,
    reverted: Option<u64>,
    index: u64,
) -> (u64, Value) {
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
    (index, body)
}

pub(super) async fn fail_deployment(
    State(inner): St,
    Path(id): Path<String>,
    Query(q): Params,
) -> Response {
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
        Ok((index, body)) => write_response(&q, index, &body),
        Err(e) => error(e),
    }
}

/// The body of a deployment action, whose `DeploymentID` must name the path's deployment.
pub(super) fn deployment_request(bytes: &Bytes, id: &str) -> Result<Value, ApiError> {
    let body = parse_body(bytes)?;
    if field(&body, "DeploymentID").and_then(Value::as_str) != Some(id) {
        return Err(ApiError::new(400, "Deployment ID does not match"));
    }
    Ok(body)
}

pub(super) async fn pause_deployment(
    State(inner): St,
    Path(id): Path<String>,
    Query(q): Params,
    bytes: Bytes,
) -> Response {
    let body = match deployment_request(&bytes, &id) {
        Ok(b) => b,
        Err(e) => return error(e),
    };
    let pause = field(&body, "Pause")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    let result = inner.write(|st| {
        st.pause_deployment(&id, pause)
            .map(|modify| deployment_update_body(st.deployment_eval(&id), modify, None, st.index))
    });
    match result {
        Ok((index, body)) => write_response(&q, index, &body),
        Err(e) => error(e),
    }
}

pub(super) async fn deployment_alloc_health(
    State(inner): St,
    Path(id): Path<String>,
    Query(q): Params,
    bytes: Bytes,
) -> Response {
    let body = match deployment_request(&bytes, &id) {
        Ok(b) => b,
        Err(e) => return error(e),
    };
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
    if healthy.is_empty() && unhealthy.is_empty() {
        return error(ApiError::new(
            500,
            "must specify at least one healthy/unhealthy allocation ID",
        ));
    }
    let result = inner.write_and_apply(|st| {
        let Some(d) = st.deployments.get(&id) else {
            return (
                Err(ApiError::new(500, "deployment not found")),
                Default::default(),
            );
        };
        if !crate::nomad::store::is_active(&d.status) {
            return (
                Err(ApiError::new(
                    500,
                    "can't set health of allocations for a terminal deployment",
                )),
                Default::default(),
            );
        }
        let mut plan = crate::nomad::store::Plan::default();
        for a in &healthy {
            plan.extend(st.set_alloc_health(a, true));
        }
        for a in &unhealthy {
            plan.extend(st.set_alloc_health(a, false));
        }
        // The deployment watcher fails the deployment (and auto-reverts) as soon as the operator
        // marks any allocation unhealthy (SRC nomad/deploymentwatcher `SetAllocHealth`).
        let mut reverted = None;
        if !unhealthy.is_empty()
            && let Ok((version, p)) = st.fail_deployment(&id, "Failed due to unhealthy allocations")
        {
            reverted = version;
            plan.extend(p);
        }
        let eval = st.deployment_eval(&id);
        let modify = st.deployments.get(&id).map(|d| d.modify_index).unwrap_or(0);
        (
            Ok(deployment_update_body(eval, modify, reverted, st.index)),
            plan,
        )
    });
    match result {
        Ok((index, body)) => write_response(&q, index, &body),
        Err(e) => error(e),
    }
}
