//! Node endpoints (SRC command/agent/node_endpoint.go, nomad/node_endpoint.go): list, read, a
//! node's allocations, drain and scheduling eligibility.

use super::*;

pub(super) async fn list_nodes(r: Req) -> Response {
    let prefix = r.param("prefix").unwrap_or("").to_string();
    r.blocking(move |st| {
        let list: Vec<Value> = st
            .nodes_in_order()
            .into_iter()
            .filter(|n| n.id.starts_with(&prefix))
            .map(|n| st.node_stub(n))
            .collect();
        (st.tables.nodes, Ok(Value::Array(list)))
    })
    .await
}

pub(super) async fn read_node(Path(id): Path<String>, r: Req) -> Response {
    r.blocking(move |st| match st.nodes.get(&id) {
        Some(n) => (n.modify_index, Ok(st.node_json(n))),
        None => (st.tables.nodes, Err(ApiError::new(404, "node not found"))),
    })
    .await
}

pub(super) async fn node_allocations(Path(id): Path<String>, r: Req) -> Response {
    r.blocking(move |st| {
        let allocs: Vec<&crate::nomad::store::Alloc> =
            st.allocs.values().filter(|a| a.node_id == id).collect();
        // The max ModifyIndex of the node's allocations, or the allocs table index without any.
        let index = allocs
            .iter()
            .map(|a| a.modify_index)
            .max()
            .unwrap_or(st.tables.allocs);
        let list = allocs.into_iter().map(|a| st.alloc_json(a, true)).collect();
        (index, Ok(Value::Array(list)))
    })
    .await
}

fn node_update_body(out: &NodeUpdate) -> Value {
    json!({
        "NodeModifyIndex": out.node_modify_index,
        "EvalIDs": if out.eval_ids.is_empty() { Value::Null } else { json!(out.eval_ids) },
        "EvalCreateIndex": out.eval_create_index,
        "Index": out.index,
    })
}

fn node_write(
    r: &Req,
    f: impl FnOnce(&mut Store) -> Result<(NodeUpdate, Plan), ApiError>,
) -> Answer {
    let out = r.apply(f)?;
    Ok(r.written(out.index, &node_update_body(&out)))
}

/// `PUT/POST /v1/node/:id/drain` with `api.NodeUpdateDrainRequest`
/// (`{"DrainSpec": {"Deadline", "IgnoreSystemJobs"} | null, "MarkEligible", "Meta"}`).
pub(super) async fn drain_node(Path(id): Path<String>, r: Req, bytes: Bytes) -> Answer {
    let body = parse_body(&bytes)?;
    const REQ: &str = "NodeUpdateDrainRequest";
    let mark_eligible = typed_field(&body, REQ, "MarkEligible", GoKind::Bool)?
        .and_then(Value::as_bool)
        .unwrap_or(false);
    let spec = match field(&body, "DrainSpec") {
        None => None,
        Some(s) if s.is_object() => {
            let deadline = typed_field(s, "DrainSpec", "Deadline", GoKind::Int)?
                .and_then(Value::as_i64)
                .unwrap_or(0);
            let ignore = typed_field(s, "DrainSpec", "IgnoreSystemJobs", GoKind::Bool)?
                .and_then(Value::as_bool)
                .unwrap_or(false);
            Some((deadline, ignore))
        }
        Some(_) => {
            return Err(ApiError::new(
                400,
                format!(
                    "json: cannot unmarshal value into Go struct field {REQ}.DrainSpec of type api.DrainSpec"
                ),
            ));
        }
    };
    node_write(&r, |st| st.set_drain(&id, spec, mark_eligible))
}

/// `PUT/POST /v1/node/:id/eligibility` with `{"NodeID", "Eligibility": "eligible"|"ineligible"}`.
pub(super) async fn node_eligibility(Path(id): Path<String>, r: Req, bytes: Bytes) -> Answer {
    let body = parse_body(&bytes)?;
    const REQ: &str = "NodeUpdateEligibilityRequest";
    let node = typed_field(&body, REQ, "NodeID", GoKind::String)?
        .and_then(Value::as_str)
        .filter(|n| !n.is_empty())
        .unwrap_or(&id)
        .to_string();
    let eligibility = typed_field(&body, REQ, "Eligibility", GoKind::String)?
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    node_write(&r, |st| st.set_eligibility(&node, &eligibility))
}
