//! Evaluations, allocations, services, the event stream, namespaces, nodes, status and agent.

use super::*;

pub(super) async fn list_evals(r: Req, Extension(acl): ReqAcl) -> Response {
    let ns = r.ns();
    let prefix = r.param("prefix").unwrap_or("").to_string();
    r.blocking(|st| {
        let mut list: Vec<Value> = st
            .evals
            .values()
            .filter(|e| {
                ns_matches(&ns, View::eval(e).str("Namespace"))
                    && acl.allow_ns_op(View::eval(e).str("Namespace"), "read-job")
                    && View::eval(e).str("ID").starts_with(&prefix)
            })
            .cloned()
            .collect();
        list.sort_by_key(|e| std::cmp::Reverse(View::eval(e).uint("CreateIndex")));
        (st.tables.evals, Ok(Value::Array(list)))
    })
    .await
}

pub(super) async fn read_eval(Path(id): Path<String>, r: Req) -> Response {
    let related = matches!(r.param("related"), Some("true" | "1"));
    r.blocking(|st| match st.evals.get(&id) {
        Some(e) => {
            let mut e = e.clone();
            if related && let Some(o) = e.as_object_mut() {
                o.insert("RelatedEvals".into(), json!([]));
            }
            (View::eval(&e).uint("ModifyIndex"), Ok(e))
        }
        None => (st.tables.evals, Err(ApiError::new(404, "eval not found"))),
    })
    .await
}

// === allocations ===

pub(super) async fn list_allocs(r: Req, Extension(acl): ReqAcl) -> Answer {
    let ns = r.ns();
    let prefix = r.param("prefix").unwrap_or("").to_string();
    let filter = r.filter()?;
    Ok(r.blocking(|st| {
        let list: Vec<Value> = st
            .allocs
            .values()
            .filter(|a| {
                ns_matches(&ns, &a.namespace)
                    && acl.allow_ns_op(&a.namespace, "read-job")
                    && a.id.starts_with(&prefix)
            })
            .map(|a| st.alloc_json(a, false))
            .filter(|v| filter.as_ref().is_none_or(|f| filter::eval(f, v)))
            .collect();
        (st.tables.allocs, Ok(Value::Array(list)))
    })
    .await)
}

pub(super) async fn read_alloc(Path(id): Path<String>, r: Req) -> Response {
    r.blocking(|st| match st.allocs.get(&id) {
        Some(a) => (a.modify_index, Ok(st.alloc_json(a, true))),
        None => (st.tables.allocs, Err(ApiError::new(404, "alloc not found"))),
    })
    .await
}

pub(super) async fn alloc_services(Path(id): Path<String>, r: Req) -> Response {
    r.blocking(|st| {
        let list: Vec<Value> = st
            .services
            .values()
            .filter(|r| r.alloc_id == id)
            .map(|r| serde_json::to_value(r).unwrap_or(Value::Null))
            .collect();
        (st.tables.services, Ok(Value::Array(list)))
    })
    .await
}

// === services ===

pub(super) async fn list_services(r: Req, Extension(acl): ReqAcl) -> Response {
    let ns = r.ns();
    r.blocking(|st| {
        let list = st.service_namespaces(|ns_of| {
            ns_matches(&ns, ns_of) && acl.allow_ns_op(ns_of, "read-job")
        });
        (st.tables.services, Ok(list))
    })
    .await
}

pub(super) async fn read_service(Path(name): Path<String>, r: Req) -> Answer {
    let ns = r.ns();
    let filter = r.filter()?;
    Ok(r.blocking(|st| {
        let list: Vec<Value> = st
            .service_registrations(&name, |ns_of| ns_matches(&ns, ns_of))
            .into_iter()
            .filter(|v| filter.as_ref().is_none_or(|f| filter::eval(f, v)))
            .collect();
        (st.tables.services, Ok(Value::Array(list)))
    })
    .await)
}

pub(super) async fn delete_service(Path((_name, id)): Path<(String, String)>, r: Req) -> Response {
    let index = r.inner.write(|st| {
        st.remove_service(&id);
        st.index
    });
    r.written(index, &Value::Null)
}

pub(super) async fn event_stream(r: Req) -> Response {
    events::stream(r.inner, &r.q)
}

// === namespaces, status, agent ===

pub(super) fn default_namespace() -> Value {
    json!({
        "Name": "default",
        "Description": "Default shared namespace",
        "Quota": "",
        "Capabilities": null,
        "NodePoolConfiguration": null,
        "VaultConfiguration": null,
        "ConsulConfiguration": null,
        "Meta": null,
        "CreateIndex": 1,
        "ModifyIndex": 1,
    })
}

pub(super) async fn list_namespaces(r: Req, Extension(acl): ReqAcl) -> Response {
    // Only the namespaces the token has any capability in are listed.
    let visible = acl.allow_namespace("default");
    r.blocking(move |_| {
        let list = if visible {
            json!([default_namespace()])
        } else {
            json!([])
        };
        (1, Ok(list))
    })
    .await
}

pub(super) async fn read_namespace(Path(name): Path<String>, r: Req) -> Response {
    r.blocking(|_| {
        if name == "default" {
            (1, Ok(default_namespace()))
        } else {
            (1, Err(ApiError::new(404, "namespace not found")))
        }
    })
    .await
}

pub(super) async fn status_leader(Query(q): Params) -> Response {
    query_response(&q, 1, &json!("127.0.0.1:4647"))
}

pub(super) async fn status_peers(Query(q): Params) -> Response {
    query_response(&q, 1, &json!(["127.0.0.1:4647"]))
}

pub(super) async fn regions(Query(q): Params) -> Response {
    query_response(&q, 1, &json!(["global"]))
}

pub(super) async fn agent_self(State(inner): St, Query(q): Params) -> Response {
    let (node_id, node_name, dc) = inner.read(|st| {
        (
            st.node_id.clone(),
            st.node_name.clone(),
            st.datacenter.clone(),
        )
    });
    let body = json!({
        "config": {"Region": "global", "Datacenter": dc, "NodeName": node_name, "Version": {"Version": inner.config.version(), "VersionPrerelease": "", "VersionMetadata": ""}, "ACL": {"Enabled": inner.config.acl_token.is_some()}},
        "member": {"Name": format!("{node_name}.global"), "Addr": "127.0.0.1", "Port": 4648, "Tags": {"region": "global", "dc": dc, "role": "nomad", "id": node_id}, "Status": "alive"},
        "stats": {},
    });
    query_response(&q, 1, &body)
}
