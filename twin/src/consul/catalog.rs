//! `/v1/catalog/*`, `/v1/health/*` (DOC catalog.mdx, health.mdx; SRC agent/health_endpoint.go).

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use serde_json::{Value, json};
use tokio::time::Instant;

use super::store::{
    Check, DATACENTER, DeregisterRequest, Node, RegisterRequest, ServiceInstance, Store,
};
use super::{BlockingRead, ConsulState, json, json_body, store_error, text};

/// The node's identity fields (which a node and a catalog row both start with), then `rest`.
fn node_and(n: &Node, rest: Value) -> Value {
    let mut out = json!({
        "ID": n.id,
        "Node": n.node,
        "Address": n.address,
        "Datacenter": DATACENTER,
        "TaggedAddresses": n.tagged_addresses,
    });
    if let (Value::Object(out), Value::Object(rest)) = (&mut out, rest) {
        out.extend(rest);
    }
    out
}

fn node_json(n: &Node) -> Value {
    node_and(
        n,
        json!({
            "Meta": n.meta,
            "CreateIndex": n.create_index,
            "ModifyIndex": n.modify_index,
        }),
    )
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
    node_and(
        n,
        json!({
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
        }),
    )
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

/// The `?tag=` filters (an instance must carry all of them).
fn tags(r: &BlockingRead) -> Vec<String> {
    r.params
        .all("tag")
        .into_iter()
        .map(str::to_string)
        .collect()
}

/// The checks `keep` selects, at the checks index: `/v1/health/state` and `/v1/health/node`.
fn checks_where(s: &Store, keep: impl Fn(&Check) -> bool) -> (u64, Value) {
    let checks = s
        .all_checks()
        .into_iter()
        .filter(|c| keep(c))
        .map(check_json)
        .collect();
    (s.checks_index(), Value::Array(checks))
}

/// A catalog write's answer: `true`, or the store's error.
fn written(result: Result<(), super::store::StoreError>) -> Response {
    match result {
        Ok(()) => json(StatusCode::OK, HeaderMap::new(), &json!(true)),
        Err(e) => store_error(&e),
    }
}

pub(super) async fn register(State(st): State<ConsulState>, body: Body) -> Response {
    match json_body::<RegisterRequest>(body, 4 * 1024 * 1024).await {
        Ok(req) => written(st.write(|s| s.register(req, Instant::now()))),
        Err(r) => r,
    }
}

pub(super) async fn deregister(State(st): State<ConsulState>, body: Body) -> Response {
    match json_body::<DeregisterRequest>(body, 1024 * 1024).await {
        Ok(req) => written(st.write(|s| s.deregister(req, Instant::now()))),
        Err(r) => r,
    }
}

pub(super) async fn services(r: BlockingRead) -> Response {
    r.json(|s| (s.services_index(), Value::Object(s.catalog_services())))
        .await
}

pub(super) async fn service(Path(name): Path<String>, r: BlockingRead) -> Response {
    let tags = tags(&r);
    r.json(|s| {
        let rows = s
            .instances(&name)
            .into_iter()
            .filter(|(_, svc)| has_tags(svc, &tags))
            .map(|(n, svc)| catalog_row(n, svc))
            .collect();
        (s.service_index(&name), Value::Array(rows))
    })
    .await
}

pub(super) async fn nodes(r: BlockingRead) -> Response {
    r.json(|s| {
        let rows = s.nodes().into_iter().map(node_json).collect();
        (s.nodes_index(), Value::Array(rows))
    })
    .await
}

/// The health entries of `name`'s instances carrying all `tags`, each with whether all its
/// checks pass.
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

pub(super) async fn health_service(Path(name): Path<String>, r: BlockingRead) -> Response {
    let passing_only = match r.params.get("passing") {
        None => false,
        Some("") => true,
        Some(v) => match go_bool(v) {
            Some(b) => b,
            None => return text(StatusCode::BAD_REQUEST, "Invalid value for ?passing"),
        },
    };
    let tags = tags(&r);
    // The passing filter does not change the index: it is the unfiltered service's, as in Consul.
    r.json(|s| {
        let body = health_entries(s, &name, &tags)
            .into_iter()
            .filter(|(_, ok)| !passing_only || *ok)
            .map(|(v, _)| v)
            .collect();
        (s.service_index(&name), Value::Array(body))
    })
    .await
}

pub(super) async fn health_state(Path(state): Path<String>, r: BlockingRead) -> Response {
    if !matches!(state.as_str(), "any" | "passing" | "warning" | "critical") {
        return text(StatusCode::BAD_REQUEST, "Invalid state");
    }
    r.json(|s| checks_where(s, |c| state == "any" || c.status == state))
        .await
}

pub(super) async fn health_checks(Path(name): Path<String>, r: BlockingRead) -> Response {
    r.json(|s| {
        let checks = s
            .service_checks(&name)
            .into_iter()
            .map(check_json)
            .collect();
        (s.service_index(&name), Value::Array(checks))
    })
    .await
}

pub(super) async fn health_node(Path(node): Path<String>, r: BlockingRead) -> Response {
    r.json(|s| checks_where(s, |c| c.node == node)).await
}

/// `GET /v1/catalog/datacenters`: the known datacenters, nearest first (no ACL needed).
pub(super) async fn datacenters() -> Response {
    json(StatusCode::OK, HeaderMap::new(), &json!([DATACENTER]))
}
