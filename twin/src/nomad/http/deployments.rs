//! Deployment endpoints: list, read, allocations, fail, pause and allocation health.

use super::*;

pub(super) async fn list_deployments(r: Req, Extension(acl): ReqAcl) -> Response {
    let ns = r.ns();
    r.blocking(|st| {
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

pub(super) async fn read_deployment(Path(id): Path<String>, r: Req) -> Response {
    r.blocking(|st| match st.deployments.get(&id) {
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

pub(super) async fn deployment_allocations(Path(id): Path<String>, r: Req) -> Response {
    r.blocking(|st| {
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

pub(super) async fn fail_deployment(Path(id): Path<String>, r: Req) -> Answer {
    let (index, body) = r.apply(|st| {
        let (reverted, plan) = st.fail_deployment(&id, "Deployment marked as failed")?;
        Ok((st.deployment_update(&id, reverted), plan))
    })?;
    Ok(r.written(index, &body))
}

/// The body of a deployment action, whose `DeploymentID` must name the path's deployment.
pub(super) fn deployment_request(bytes: &Bytes, id: &str) -> Result<Value, ApiError> {
    let body = parse_body(bytes)?;
    if field(&body, "DeploymentID").and_then(Value::as_str) != Some(id) {
        return Err(ApiError::new(400, "Deployment ID does not match"));
    }
    Ok(body)
}

pub(super) async fn pause_deployment(Path(id): Path<String>, r: Req, bytes: Bytes) -> Answer {
    let body = deployment_request(&bytes, &id)?;
    let pause = field(&body, "Pause")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    let (index, body) = r.inner.write(|st| {
        st.pause_deployment(&id, pause)
            .map(|modify| deployment_update_body(st.deployment_eval(&id), modify, None, st.index))
    })?;
    Ok(r.written(index, &body))
}

pub(super) async fn deployment_alloc_health(
    Path(id): Path<String>,
    r: Req,
    bytes: Bytes,
) -> Answer {
    let body = deployment_request(&bytes, &id)?;
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
    let (index, body) = r.apply(|st| {
        let (reverted, plan) = st.set_deployment_alloc_health(&id, &healthy, &unhealthy)?;
        Ok((st.deployment_update(&id, reverted), plan))
    })?;
    Ok(r.written(index, &body))
}
