//! List answers filtered by what a token may read (SRC agent/consul/acl_filter.go,
//! agent/acl.go `filterServices`/`filterChecks`): rows are dropped, a KV listing with nothing
//! left is a 404, and `X-Consul-Results-Filtered-By-ACLs: true` says so when the request
//! carried a token.

use axum::body::Body;
use axum::http::response::Parts;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::Response;
use serde::Deserialize;
use serde_json::Value;

use super::Caller;
use super::rules::{Need, Resource};
use crate::consul::text;

/// What to do with a list answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Filter {
    /// `/v1/kv/…?recurse`: entries by `key:read`.
    KvEntries,
    /// `/v1/kv/…?keys`: key names by `key:read`.
    KvKeys,
    /// `/v1/catalog/services`: names by `service:read`.
    CatalogServices,
    /// `/v1/catalog/service/:name`: rows by `node:read` and `service:read`.
    ServiceRows,
    /// `/v1/health/service/:name`: entries by `node:read` and `service:read`.
    HealthRows,
    /// Health checks: by `node:read` and, for service checks, `service:read`.
    Checks,
    /// `/v1/catalog/nodes`: by `node:read`.
    Nodes,
    /// Sessions: by `session:read` on their node.
    Sessions,
    /// `/v1/agent/services` (an object by ID): by `service:read`.
    AgentServices,
    /// `/v1/agent/checks` (an object by ID): like [`Filter::Checks`].
    AgentChecks,
    /// `/v1/agent/members`: serf members by `node:read` on their name.
    Members,
}

/// Typed views of the rows the filter reads: a row that lacks a field is an error, not a
/// silently empty name that a prefix rule might match.
mod rows {
    use serde::Deserialize;

    /// Declares each row view with Consul's PascalCase field names.
    macro_rules! views {
        ($($name:ident { $($field:ident: $ty:ty),+ $(,)? })*) => {$(
            #[derive(Deserialize)]
            #[serde(rename_all = "PascalCase")]
            pub(super) struct $name {
                $(pub(super) $field: $ty,)+
            }
        )*};
    }

    views! {
        KvEntry { key: String }
        ServiceRow { service_name: String, node: String }
        NodeName { node: String }
        Member { name: String }
        ServiceName { service: String }
        HealthRow { node: NodeName, service: ServiceName }
        CheckRow { node: String, service_name: String }
    }
}

fn check_visible(who: &Caller, c: &rows::CheckRow) -> bool {
    who.allows(Resource::Node, &c.node, Need::Read)
        && (c.service_name.is_empty() || who.allows(Resource::Service, &c.service_name, Need::Read))
}

/// Whether a token may see one element of a list answer.
fn keep(who: &Caller, filter: Filter, v: &Value) -> Result<bool, serde_json::Error> {
    let read = |r: Resource, name: &str| who.allows(r, name, Need::Read);
    Ok(match filter {
        Filter::KvEntries => read(Resource::Key, &rows::KvEntry::deserialize(v)?.key),
        Filter::KvKeys => read(Resource::Key, &String::deserialize(v)?),
        Filter::CatalogServices => true,
        Filter::ServiceRows => {
            let row = rows::ServiceRow::deserialize(v)?;
            read(Resource::Service, &row.service_name) && read(Resource::Node, &row.node)
        }
        Filter::HealthRows => {
            let row = rows::HealthRow::deserialize(v)?;
            read(Resource::Service, &row.service.service) && read(Resource::Node, &row.node.node)
        }
        Filter::Checks | Filter::AgentChecks => {
            check_visible(who, &rows::CheckRow::deserialize(v)?)
        }
        Filter::Nodes | Filter::Sessions => {
            let node = rows::NodeName::deserialize(v)?.node;
            let resource = if filter == Filter::Sessions {
                Resource::Session
            } else {
                Resource::Node
            };
            read(resource, &node)
        }
        Filter::Members => read(Resource::Node, &rows::Member::deserialize(v)?.name),
        Filter::AgentServices => read(
            Resource::Service,
            &rows::ServiceName::deserialize(v)?.service,
        ),
    })
}

/// Drops what `who` may not read from an answer; the count of dropped elements.
fn retain(who: &Caller, filter: Filter, value: &mut Value) -> Result<usize, serde_json::Error> {
    match value {
        Value::Array(items) => {
            let verdicts = items
                .iter()
                .map(|v| keep(who, filter, v))
                .collect::<Result<Vec<bool>, _>>()?;
            let before = items.len();
            let mut verdict = verdicts.into_iter();
            items.retain(|_| verdict.next().unwrap_or(false));
            Ok(before - items.len())
        }
        Value::Object(map) if filter == Filter::CatalogServices => {
            let before = map.len();
            map.retain(|name, _| who.allows(Resource::Service, name, Need::Read));
            Ok(before - map.len())
        }
        Value::Object(map) => {
            let mut doomed = Vec::new();
            for (k, v) in map.iter() {
                if !keep(who, filter, v)? {
                    doomed.push(k.clone());
                }
            }
            for k in &doomed {
                map.remove(k);
            }
            Ok(doomed.len())
        }
        _ => Ok(0),
    }
}

fn twin_fault(e: impl std::fmt::Display) -> Response {
    text(
        StatusCode::INTERNAL_SERVER_ERROR,
        &format!("hashistack-twin: ACL filter cannot read its own answer: {e}"),
    )
}

/// An answer's head and its JSON body, which the filter rewrites (so the length goes).
async fn json_answer(resp: Response) -> Result<(Parts, Value), Response> {
    let (mut parts, body) = resp.into_parts();
    parts.headers.remove(header::CONTENT_LENGTH);
    let bytes = axum::body::to_bytes(body, usize::MAX)
        .await
        .map_err(twin_fault)?;
    let value = serde_json::from_slice(&bytes).map_err(twin_fault)?;
    Ok((parts, value))
}

/// The filtered answer: the original head with `value` as its body.
fn with_body(parts: Parts, value: &Value) -> Response {
    match serde_json::to_vec(value) {
        Ok(body) => Response::from_parts(parts, Body::from(body)),
        Err(e) => twin_fault(e),
    }
}

/// Filters a list answer.
pub(super) async fn list(who: &Caller, filter: Filter, kv_root: bool, resp: Response) -> Response {
    let (mut parts, mut value) = match json_answer(resp).await {
        Ok(answer) => answer,
        Err(fault) => return fault,
    };
    let removed = match retain(who, filter, &mut value) {
        Ok(n) => n,
        Err(e) => return twin_fault(e),
    };
    if removed > 0 && who.authenticated {
        parts.headers.insert(
            "X-Consul-Results-Filtered-By-ACLs",
            HeaderValue::from_static("true"),
        );
    }
    // KVS.List / KVS.ListKeys: nothing left to show is a 404 with the query meta (a key
    // listing of the root excepted), exactly as if the keys did not exist.
    let empty_kv = match filter {
        Filter::KvEntries => true,
        Filter::KvKeys => !kv_root,
        _ => false,
    } && value.as_array().is_some_and(Vec::is_empty);
    if empty_kv {
        parts.status = StatusCode::NOT_FOUND;
        parts.headers.remove(header::CONTENT_TYPE);
        return Response::from_parts(parts, Body::empty());
    }
    with_body(parts, &value)
}

#[derive(Deserialize)]
struct TxnResultView {
    #[serde(rename = "KV")]
    kv: Option<rows::KvEntry>,
}

/// `Txn.Apply` drops the results of KV reads the token may not read (`FilterTxnResults`).
pub(super) async fn txn_results(who: &Caller, resp: Response) -> Response {
    let (parts, mut value) = match json_answer(resp).await {
        Ok(answer) => answer,
        Err(fault) => return fault,
    };
    if let Some(results) = value.get_mut("Results").and_then(Value::as_array_mut) {
        let mut verdicts = Vec::with_capacity(results.len());
        for r in results.iter() {
            match TxnResultView::deserialize(r) {
                Ok(TxnResultView { kv: Some(e) }) => {
                    verdicts.push(who.allows(Resource::Key, &e.key, Need::Read))
                }
                Ok(_) => verdicts.push(true),
                Err(e) => return twin_fault(e),
            }
        }
        let mut verdict = verdicts.into_iter();
        results.retain(|_| verdict.next().unwrap_or(false));
    }
    with_body(parts, &value)
}
