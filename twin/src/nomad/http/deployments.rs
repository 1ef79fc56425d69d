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

pub(super) async fn fail_deployment(
    State(inner): St,
    Path(id): Path<String>,
    Query(q): Params,
) -> Response {
    let result =
        inner.write_and_apply(
            |st| match st.fail_deployment(&id, "Deployment marked as failed") {
                Ok((reverted, plan)) => (Ok(st.deployment_update(&id, reverted)), plan),
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
    let result = inner.write_and_apply(|st| {
        match st.set_deployment_alloc_health(&id, &healthy, &unhealthy) {
            Ok((reverted, plan)) => (Ok(st.deployment_update(&id, reverted)), plan),
            Err(e) => (Err(e), Default::default()),
        }
    });
    match result {
        Ok((index, body)) => write_response(&q, index, &body),
        Err(e) => error(e),
    }
}
