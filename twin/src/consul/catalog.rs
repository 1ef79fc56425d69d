//! `/v1/catalog/*`, `/v1/health/*` (DOC catalog.mdx, health.mdx; SRC agent/health_endpoint.go).

use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use serde_json::{Value, json};
use tokio::time::Instant;

use super::store::{
    Check, DATACENTER, DeregisterRequest, Node, RegisterRequest, ServiceInstance, Store,
};
use super::{
    ConsulState, Params, ReadOpts, blocking_read, json, json_body, meta_headers, read_opts,
    store_error, text,
};

type Q = Query<Vec<(String, String)>>;

fn node_json(n: &Node) -> Value {
    json!({
        "ID": n.id,
        "Node": n.node,
        "Address": n.address,
        "Datacenter": DATACENTER,
        "TaggedAddresses": n.tagged_addresses,
        "Meta": n.meta,
        "CreateIndex": n.create_index,
        "ModifyIndex": n.modify_index,
    })
}

fn service_json(s: &ServiceInstance) -> Value {
    json!({
        "ID": s.id,
        "Service": s.service,
        "Tags": s.tags,
        "Address": s.address,
        "TaggedAddresses": s.tagged_addresses,
        "Meta": s.meta,
        "Port": s.port,
        "Weights": { "Passing": s.weights.0, "Warning": s.weights.1 },
        "EnableTagOverride": s.enable_tag_override,
        "Proxy": { "Mode": "", "MeshGateway": {}, "Expose": {} },
        "Connect": {},
        "PeerName": "",
        "CreateIndex": s.create_index,
        "ModifyIndex": s.modify_index,
        "Namespace": "default",
        "Datacenter": DATACENTER,
    })
}

pub(super) fn check_json(c: &Check) -> Value {
    json!({
        "Node": c.node,
        "CheckID": c.check_id,
        "Name": c.name,
        "Status": c.status,
        "Notes": c.notes,
        "Output": c.output,
        "ServiceID": c.service_id,
        "ServiceName": c.service_name,
        "ServiceTags": c.service_tags,
        "Type": c.kind,
        "Interval": c.interval,
        "Timeout": c.timeout,
        "ExposedPort": 0,
        "Definition": c.definition,
        "CreateIndex": c.create_index,
        "ModifyIndex": c.modify_index,
        "Namespace": "default",
    })
}

fn catalog_row(n: &Node, s: &ServiceInstance) -> Value {
    json!({
        "ID": n.id,
        "Node": n.node,
        "Address": n.address,
        "Datacenter": DATACENTER,
        "TaggedAddresses": n.tagged_addresses,
        "NodeMeta": n.meta,
        "ServiceKind": s.kind,
        "ServiceID": s.id,
        "ServiceName": s.service,
        "ServiceTags": s.tags,
        "ServiceAddress": s.address,
        "ServiceTaggedAddresses": s.tagged_addresses,
        "ServiceWeights": { "Passing": s.weights.0, "Warning": s.weights.1 },
        "ServiceMeta": s.meta,
        "ServicePort": s.port,
        "ServiceEnableTagOverride": s.enable_tag_override,
        "ServiceProxy": {
            "DestinationServiceName": "",
            "DestinationServiceID": "",
            "LocalServiceAddress": "",
            "LocalServicePort": 0,
            "Config": null,
            "Upstreams": null,
            "Mode": "",
            "MeshGateway": {},
            "Expose": {}
        },
        "ServiceConnect": { "Native": false, "Proxy": null },
        "CreateIndex": s.create_index,
        "ModifyIndex": s.modify_index,
        "Namespace": "default",
    })
}

fn has_tags(s: &ServiceInstance, tags: &[String]) -> bool {
    tags.iter().all(|t| s.tags.contains(t))
}

/// Parses Go's `strconv.ParseBool`.
fn go_bool(v: &str) -> Option<bool> {
    match v {
        "1" | "t" | "T" | "true" | "TRUE" | "True" => Some(true),
        "0" | "f" | "F" | "false" | "FALSE" | "False" => Some(false),
        _ => None,
    }
}

async fn opts(q: Q) -> Result<(Params, ReadOpts), Response> {
    let p = Params::from_query(q);
    let o = read_opts(&p)?;
    Ok((p, o))
}

/// A catalog write's answer: `true`, or the store's error.
fn written(result: Result<(), super::store::StoreError>) -> Response {
    match result {
        Ok(()) => json(StatusCode::OK, HeaderMap::new(), &json!(true)),
        Err(e) => store_error(&e),
    }
}

pub(super) async fn register(State(st): State<ConsulState>, body: Body) -> Response {
    let req: RegisterRequest = match json_body(body, 4 * 1024 * 1024).await {
        Ok(r) => r,
        Err(r) => return r,
    };
    written(st.write(|s| s.register(req, Instant::now())))
}

pub(super) async fn deregister(State(st): State<ConsulState>, body: Body) -> Response {
    let req: DeregisterRequest = match json_body(body, 1024 * 1024).await {
        Ok(r) => r,
        Err(r) => return r,
    };
    written(st.write(|s| s.deregister(req, Instant::now())))
}

pub(super) async fn services(State(st): State<ConsulState>, q: Q) -> Response {
    let (_, o) = match opts(q).await {
        Ok(v) => v,
        Err(r) => return r,
    };
    let (index, body) = blocking_read(&st, o, |s| {
        (s.services_index(), Value::Object(s.catalog_services()))
    })
    .await;
    json(StatusCode::OK, meta_headers(index, &o), &body)
}

pub(super) async fn service(
    State(st): State<ConsulState>,
    Path(name): Path<String>,
    q: Q,
) -> Response {
    let (p, o) = match opts(q).await {
        Ok(v) => v,
        Err(r) => return r,
    };
    let tags: Vec<String> = p.all("tag").into_iter().map(str::to_string).collect();
    let (index, rows) = blocking_read(&st, o, |s| {
        let rows: Vec<Value> = s
            .instances(&name)
            .into_iter()
            .filter(|(_, svc)| has_tags(svc, &tags))
            .map(|(n, svc)| catalog_row(n, svc))
            .collect();
        (s.service_index(&name), rows)
    })
    .await;
    json(StatusCode::OK, meta_headers(index, &o), &Value::Array(rows))
}

pub(super) async fn nodes(State(st): State<ConsulState>, q: Q) -> Response {
    let (_, o) = match opts(q).await {
        Ok(v) => v,
        Err(r) => return r,
    };
    let (index, rows) = blocking_read(&st, o, |s| {
        (
            s.nodes_index(),
            s.nodes().into_iter().map(node_json).collect::<Vec<_>>(),
        )
    })
    .await;
    json(StatusCode::OK, meta_headers(index, &o), &Value::Array(rows))
}

fn health_entries(s: &Store, name: &str, tags: &[String]) -> Vec<(Value, bool)> {
    s.instances(name)
        .into_iter()
        .filter(|(_, svc)| has_tags(svc, tags))
        .map(|(n, svc)| {
            let checks = s.instance_checks(&n.node, &svc.id);
            let passing = checks.iter().all(|c| c.status == "passing");
            let checks: Vec<Value> = checks.into_iter().map(check_json).collect();
            (
                json!({ "Node": node_json(n), "Service": service_json(svc), "Checks": checks }),
                passing,
            )
        })
        .collect()
}

pub(super) async fn health_service(
    State(st): State<ConsulState>,
    Path(name): Path<String>,
    q: Q,
) -> Response {
    let (p, o) = match opts(q).await {
        Ok(v) => v,
        Err(r) => return r,
    };
    let passing_only = match p.get("passing") {
        None => false,
        Some("") => true,
        Some(v) => match go_bool(v) {
            Some(b) => b,
            None => return text(StatusCode::BAD_REQUEST, "Invalid value for ?passing"),
        },
    };
    let tags: Vec<String> = p.all("tag").into_iter().map(str::to_string).collect();
    // The passing filter runs after the blocking query, so the index is the unfiltered one.
    let (index, entries) = blocking_read(&st, o, |s| {
        (s.service_index(&name), health_entries(s, &name, &tags))
    })
    .await;
    let body: Vec<Value> = entries
        .into_iter()
        .filter(|(_, ok)| !passing_only || *ok)
        .map(|(v, _)| v)
        .collect();
    json(StatusCode::OK, meta_headers(index, &o), &Value::Array(body))
}

pub(super) async fn health_state(
    State(st): State<ConsulState>,
    Path(state): Path<String>,
    q: Q,
) -> Response {
    let (_, o) = match opts(q).await {
        Ok(v) => v,
        Err(r) => return r,
    };
    if !matches!(state.as_str(), "any" | "passing" | "warning" | "critical") {
        return text(StatusCode::BAD_REQUEST, "Invalid state");
    }
    let (index, checks) = blocking_read(&st, o, |s| {
        let checks: Vec<Value> = s
            .all_checks()
            .into_iter()
            .filter(|c| state == "any" || c.status == state)
            .map(check_json)
            .collect();
        (s.checks_index(), checks)
    })
    .await;
    json(
        StatusCode::OK,
        meta_headers(index, &o),
        &Value::Array(checks),
    )
}

pub(super) async fn health_checks(
    State(st): State<ConsulState>,
    Path(name): Path<String>,
    q: Q,
) -> Response {
    let (_, o) = match opts(q).await {
        Ok(v) => v,
        Err(r) => return r,
    };
    let (index, checks) = blocking_read(&st, o, |s| {
        (
            s.service_index(&name),
            s.service_checks(&name)
                .into_iter()
                .map(check_json)
                .collect::<Vec<_>>(),
        )
    })
    .await;
    json(
        StatusCode::OK,
        meta_headers(index, &o),
        &Value::Array(checks),
    )
}

pub(super) async fn health_node(
    State(st): State<ConsulState>,
    Path(node): Path<String>,
    q: Q,
) -> Response {
    let (_, o) = match opts(q).await {
        Ok(v) => v,
        Err(r) => return r,
    };
    let (index, checks) = blocking_read(&st, o, |s| {
        let checks: Vec<Value> = s
            .all_checks()
            .into_iter()
            .filter(|c| c.node == node)
            .map(check_json)
            .collect();
        (s.checks_index(), checks)
    })
    .await;
    json(
        StatusCode::OK,
        meta_headers(index, &o),
        &Value::Array(checks),
    )
}

/// `GET /v1/catalog/datacenters`: the known datacenters, nearest first (no ACL needed).
pub(super) async fn datacenters() -> Response {
    json(StatusCode::OK, HeaderMap::new(), &json!([DATACENTER]))
}
