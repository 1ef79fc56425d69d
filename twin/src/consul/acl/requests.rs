//! Which permission each Consul request needs (SRC agent/consul/kvs_endpoint.go
//! `kvsPreApply`, txn_endpoint.go `preCheck`, session_endpoint.go `Apply`/`Renew`,
//! catalog_endpoint.go `vetRegisterWithACL`/`vetDeregisterWithACL`, agent/agent_endpoint.go,
//! agent/acl.go `vetServiceRegister`/`vetCheckUpdate`). Single reads and writes are refused
//! with 403; list reads are answered and filtered ([`super::filter`]).

// Decisions are `Result<_, Response>`: the error is the finished 403 (or 413).
#![allow(clippy::result_large_err)]

use axum::body::Body;
use axum::extract::Request;
use axum::http::{Method, StatusCode};
use axum::middleware::Next;
use axum::response::Response;
use serde::Deserialize;
use serde_json::json;

use super::Caller;
use super::filter::{self, Filter};
use super::rules::{Need, Resource};
use crate::consul::store::NODE_NAME;
use crate::consul::{ConsulState, text};

/// The largest body the ACL layer reads to decide (the handlers apply their own limits).
const BODY_LIMIT: usize = 16 * 1024 * 1024;

fn has_flag(req: &Request, flag: &str) -> bool {
    req.uri().query().is_some_and(|q| {
        q.split('&')
            .any(|kv| kv == flag || kv.starts_with(&format!("{flag}=")))
    })
}

/// Percent-decodes a path segment the way the routes decode it.
fn decode(raw: &str) -> String {
    let raw = raw.as_bytes();
    let mut out = Vec::with_capacity(raw.len());
    let mut i = 0;
    while i < raw.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        match (
            raw[i],
            raw.get(i + 1).copied().and_then(hex),
            raw.get(i + 2).copied().and_then(hex),
        ) {
            (b'%', Some(h), Some(l)) => {
                out.push((h * 16 + l) as u8);
                i += 3;
            }
            (b, _, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Reads the body for a decision and gives back a request the handler can still read.
async fn with_body(req: Request) -> Result<(Request, bytes::Bytes), Response> {
    let (parts, body) = req.into_parts();
    let bytes = axum::body::to_bytes(body, BODY_LIMIT)
        .await
        .map_err(|_| text(StatusCode::PAYLOAD_TOO_LARGE, "Request body too large"))?;
    Ok((Request::from_parts(parts, Body::from(bytes.clone())), bytes))
}

/// Refuses, or runs the request (filtering its answer when it is a list).
pub(super) async fn enforce(st: &ConsulState, who: &Caller, req: Request, next: Next) -> Response {
    let path = req.uri().path().to_owned();
    let method = req.method().clone();
    let verdict = if let Some(raw) = path.strip_prefix("/v1/kv/") {
        kv(who, &method, &decode(raw), &req)
    } else if path == "/v1/txn" {
        return txn(who, req, next).await;
    } else if path.starts_with("/v1/session/") {
        match session(st, who, &path, req).await {
            Ok((r, v)) => return finish(who, v, r, next).await,
            Err(resp) => return resp,
        }
    } else if path == "/v1/catalog/register" || path == "/v1/catalog/deregister" {
        match catalog_write(st, who, &path, req).await {
            Ok(r) => return next.run(r).await,
            Err(resp) => return resp,
        }
    } else if path.starts_with("/v1/agent/") {
        match agent(st, who, &path, req).await {
            Ok((r, v)) => return finish(who, v, r, next).await,
            Err(resp) => return resp,
        }
    } else {
        Ok(match path.as_str() {
            "/v1/catalog/services" => Some(Filter::CatalogServices),
            "/v1/catalog/nodes" => Some(Filter::Nodes),
            p if p.starts_with("/v1/catalog/service/") => Some(Filter::ServiceRows),
            p if p.starts_with("/v1/health/service/") => Some(Filter::HealthRows),
            p if p.starts_with("/v1/health/checks/")
                || p.starts_with("/v1/health/state/")
                || p.starts_with("/v1/health/node/") =>
            {
                Some(Filter::Checks)
            }
            _ => None,
        })
    };
    match verdict {
        Ok(v) => finish(who, v, req, next).await,
        Err(resp) => resp,
    }
}

async fn finish(who: &Caller, filter: Option<Filter>, req: Request, next: Next) -> Response {
    let kv_root = req.uri().path() == "/v1/kv/";
    let resp = next.run(req).await;
    match filter {
        Some(f) if resp.status() == StatusCode::OK => filter::list(who, f, kv_root, resp).await,
        _ => resp,
    }
}

type Verdict = Result<Option<Filter>, Response>;

/// KV: single reads need `key:read`, listings are filtered, writes need `key:write`, a
/// recursive delete needs write on everything under the prefix.
fn kv(who: &Caller, method: &Method, key: &str, req: &Request) -> Verdict {
    if *method == Method::GET {
        if has_flag(req, "keys") {
            return Ok(Some(Filter::KvKeys));
        }
        if has_flag(req, "recurse") {
            return Ok(Some(Filter::KvEntries));
        }
        who.require(Resource::Key, key, Need::Read)?;
        return Ok(None);
    }
    if *method == Method::DELETE && has_flag(req, "recurse") {
        if !who.authz.allows_key_write_prefix(key) {
            return Err(who.denied("key", Need::Write, Some(key)));
        }
        return Ok(None);
    }
    who.require(Resource::Key, key, Need::Write)?;
    Ok(None)
}

/// What the pre-check reads of a transaction operation.
#[derive(Deserialize)]
struct TxnOpView {
    #[serde(rename = "KV", default)]
    kv: Option<TxnKvView>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct TxnKvView {
    verb: String,
    #[serde(default)]
    key: String,
}

/// `/v1/txn`: every operation is vetted first (`Txn.preCheck` → `kvsPreApply`); any refusal
/// answers 409 with one error per refused operation and applies nothing. Reads are not
/// vetted but their results are filtered.
async fn txn(who: &Caller, req: Request, next: Next) -> Response {
    let (req, bytes) = match with_body(req).await {
        Ok(v) => v,
        Err(r) => return r,
    };
    // A body that is not a list of operations is left to the endpoint, which answers 400.
    let Ok(ops) = serde_json::from_slice::<Vec<TxnOpView>>(&bytes) else {
        return next.run(req).await;
    };
    let mut errors = Vec::new();
    for (i, op) in ops.iter().enumerate() {
        let Some(kv) = &op.kv else { continue };
        let key = kv.key.as_str();
        let refused = match kv.verb.as_str() {
            "get" | "get-tree" | "get-or-empty" => None,
            "check-session" | "check-index" => {
                (!who.allows(Resource::Key, key, Need::Read)).then_some(Need::Read)
            }
            "delete-tree" => (!who.authz.allows_key_write_prefix(key)).then_some(Need::Write),
            _ => (!who.allows(Resource::Key, key, Need::Write)).then_some(Need::Write),
        };
        if let Some(need) = refused {
            let denial = who.denied("key", need, Some(key));
            let what = response_text(denial).await;
            errors.push(json!({"OpIndex": i, "What": what}));
        }
    }
    if !errors.is_empty() {
        let body = json!({"Results": null, "Errors": errors});
        return crate::consul::json(StatusCode::CONFLICT, Default::default(), &body);
    }
    let resp = next.run(req).await;
    if resp.status() == StatusCode::OK {
        filter::txn_results(who, resp).await
    } else {
        resp
    }
}

async fn response_text(resp: Response) -> String {
    let body = resp.into_body();
    match axum::body::to_bytes(body, BODY_LIMIT).await {
        Ok(b) => String::from_utf8_lossy(&b).into_owned(),
        Err(_) => "Permission denied".to_string(),
    }
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "PascalCase")]
struct SessionNode {
    #[serde(default)]
    node: Option<String>,
}

/// Sessions: create/destroy/renew need `session:write` on the session's node; reads are
/// filtered by `session:read`.
async fn session(
    st: &ConsulState,
    who: &Caller,
    path: &str,
    req: Request,
) -> Result<(Request, Option<Filter>), Response> {
    if path == "/v1/session/create" {
        let (req, bytes) = with_body(req).await?;
        let view: SessionNode = if bytes.iter().all(u8::is_ascii_whitespace) {
            SessionNode::default()
        } else {
            match serde_json::from_slice(&bytes) {
                Ok(v) => v,
                // The handler answers the decode error.
                Err(_) => return Ok((req, None)),
            }
        };
        let node = view
            .node
            .filter(|n| !n.is_empty())
            .unwrap_or_else(|| NODE_NAME.to_string());
        who.require(Resource::Session, &node, Need::Write)?;
        return Ok((req, None));
    }
    let id = path
        .strip_prefix("/v1/session/destroy/")
        .or_else(|| path.strip_prefix("/v1/session/renew/"));
    if let Some(id) = id {
        // An unknown session has no node to check: destroy stays idempotent, renew is 404.
        if let Some(node) = st.read(|s| s.session(id).map(|s| s.node.clone())) {
            who.require(Resource::Session, &node, Need::Write)?;
        }
        return Ok((req, None));
    }
    Ok((req, Some(Filter::Sessions)))
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct RegisterView {
    #[serde(rename = "ID", default)]
    id: String,
    #[serde(default)]
    node: String,
    #[serde(default)]
    address: String,
    #[serde(default)]
    tagged_addresses: Option<std::collections::BTreeMap<String, String>>,
    #[serde(default)]
    node_meta: Option<std::collections::BTreeMap<String, String>>,
    #[serde(default)]
    skip_node_update: bool,
    #[serde(default)]
    service: Option<ServiceView>,
    #[serde(default)]
    check: Option<CheckView>,
    #[serde(default)]
    checks: Option<Vec<CheckView>>,
    #[serde(rename = "ServiceID", default)]
    service_id: String,
    #[serde(rename = "CheckID", default)]
    check_id: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct ServiceView {
    #[serde(rename = "ID", default)]
    id: String,
    #[serde(default)]
    service: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct CheckView {
    #[serde(rename = "ServiceID", default)]
    service_id: String,
    #[serde(default)]
    node: String,
    #[serde(rename = "CheckID", default)]
    check_id: String,
    #[serde(default)]
    name: String,
}

/// `vetRegisterWithACL` / `vetDeregisterWithACL`.
async fn catalog_write(
    st: &ConsulState,
    who: &Caller,
    path: &str,
    req: Request,
) -> Result<Request, Response> {
    let (req, bytes) = with_body(req).await?;
    let Ok(r) = serde_json::from_slice::<RegisterView>(&bytes) else {
        return Ok(req);
    };
    let node = r.node.as_str();
    let service_name = |id: &str| {
        st.read(|s| {
            s.node_services(node)
                .into_iter()
                .find(|svc| svc.id == id)
                .map(|svc| svc.service.clone())
        })
    };
    if path == "/v1/catalog/deregister" {
        if !r.service_id.is_empty() {
            if let Some(name) = service_name(&r.service_id) {
                who.require(Resource::Service, &name, Need::Write)?;
            }
        } else if !r.check_id.is_empty() {
            let check = st.read(|s| {
                s.all_checks()
                    .into_iter()
                    .find(|c| c.node == node && c.check_id == r.check_id)
                    .map(|c| c.service_name.clone())
            });
            match check {
                Some(service) if !service.is_empty() => {
                    who.require(Resource::Service, &service, Need::Write)?
                }
                _ => who.require(Resource::Node, node, Need::Write)?,
            }
        } else {
            who.require(Resource::Node, node, Need::Write)?;
        }
        return Ok(req);
    }
    // Re-posting unchanged node details needs no node:write (`ChangesNode`).
    let changes_node = !r.skip_node_update
        && st.read(|s| {
            s.node(node).is_none_or(|n| {
                n.id != r.id
                    || n.address != r.address
                    || n.tagged_addresses != r.tagged_addresses.clone().unwrap_or_default()
                    || n.meta != r.node_meta.clone().unwrap_or_default()
            })
        });
    if changes_node {
        who.require(Resource::Node, node, Need::Write)?;
    }
    let mut own_service_id = None;
    if let Some(svc) = &r.service {
        who.require(Resource::Service, &svc.service, Need::Write)?;
        let id = if svc.id.is_empty() {
            svc.service.clone()
        } else {
            svc.id.clone()
        };
        if let Some(old) = service_name(&id)
            && old != svc.service
        {
            who.require(Resource::Service, &old, Need::Write)?;
        }
        own_service_id = Some(id);
    }
    for check in r.check.iter().chain(r.checks.iter().flatten()) {
        // With ACLs a check must sit on the request's node (`vetRegisterWithACL`).
        if !check.node.is_empty() && !check.node.eq_ignore_ascii_case(node) {
            let id = if check.check_id.is_empty() {
                &check.name
            } else {
                &check.check_id
            };
            return Err(text(
                StatusCode::INTERNAL_SERVER_ERROR,
                &format!(
                    "Node '{}' for check '{id}' doesn't match register request node '{node}'",
                    check.node
                ),
            ));
        }
        if check.service_id.is_empty() {
            who.require(Resource::Node, node, Need::Write)?;
        } else if own_service_id.as_deref() != Some(check.service_id.as_str())
            && let Some(name) = service_name(&check.service_id)
        {
            who.require(Resource::Service, &name, Need::Write)?;
        }
    }
    Ok(req)
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct AgentServiceView {
    #[serde(default)]
    name: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct AgentCheckView {
    #[serde(rename = "ServiceID", default)]
    service_id: String,
}

/// The agent endpoints: `agent:read` on the agent's node for `/v1/agent/self`,
/// `service:write` for a service (and its checks), `node:write` on the agent's node for a node
/// check (`vetServiceRegister`, `vetCheckRegister`, `vetCheckUpdate`); listings are filtered.
async fn agent(
    st: &ConsulState,
    who: &Caller,
    path: &str,
    req: Request,
) -> Result<(Request, Option<Filter>), Response> {
    let rest = path.trim_start_matches("/v1/agent/");
    let check_service = |check_id: &str| {
        st.read(|s| {
            s.all_checks()
                .into_iter()
                .find(|c| c.node == NODE_NAME && c.check_id == check_id)
                .map(|c| c.service_name.clone())
        })
    };
    let require_check = |service: Option<String>| match service {
        Some(name) if !name.is_empty() => who.require(Resource::Service, &name, Need::Write),
        _ => who.require(Resource::Node, NODE_NAME, Need::Write),
    };
    match rest {
        "self" => {
            who.require(Resource::Agent, NODE_NAME, Need::Read)?;
            Ok((req, None))
        }
        "services" => Ok((req, Some(Filter::AgentServices))),
        "members" => Ok((req, Some(Filter::Members))),
        "checks" => Ok((req, Some(Filter::AgentChecks))),
        "service/register" => {
            let (req, bytes) = with_body(req).await?;
            if let Ok(v) = serde_json::from_slice::<AgentServiceView>(&bytes) {
                who.require(Resource::Service, &v.name, Need::Write)?;
            }
            Ok((req, None))
        }
        "check/register" => {
            let (req, bytes) = with_body(req).await?;
            if let Ok(v) = serde_json::from_slice::<AgentCheckView>(&bytes) {
                let service = (!v.service_id.is_empty()).then(|| {
                    st.read(|s| {
                        s.node_services(NODE_NAME)
                            .into_iter()
                            .find(|svc| svc.id == v.service_id)
                            .map_or_else(|| v.service_id.clone(), |svc| svc.service.clone())
                    })
                });
                require_check(service)?;
            }
            Ok((req, None))
        }
        _ => {
            if let Some(id) = rest.strip_prefix("service/deregister/") {
                let id = decode(id);
                let name = st.read(|s| {
                    s.node_services(NODE_NAME)
                        .into_iter()
                        .find(|svc| svc.id == id)
                        .map(|svc| svc.service.clone())
                });
                if let Some(name) = name {
                    who.require(Resource::Service, &name, Need::Write)?;
                }
                return Ok((req, None));
            }
            let check = [
                "check/deregister/",
                "check/pass/",
                "check/warn/",
                "check/fail/",
                "check/update/",
            ]
            .iter()
            .find_map(|p| rest.strip_prefix(p));
            if let Some(id) = check {
                let service = check_service(&decode(id));
                if service.is_some() {
                    require_check(service)?;
                }
            }
            Ok((req, None))
        }
    }
}
