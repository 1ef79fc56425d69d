//! Restricted tokens: ACL rules narrower than "everything", enforced the way Consul enforces
//! them (DOC acl/acl-rules.mdx; SRC agent/consul/kvs_endpoint.go, acl_filter.go,
//! txn_endpoint.go).
//!
//! Consul refuses single-key reads and every write with 403, but FILTERS list reads: a
//! `?recurse`/`?keys` listing drops the keys the token may not read (and answers 404 when none
//! is left), catalog and health lists drop services and nodes it may not read, and the answer
//! carries `X-Consul-Results-Filtered-By-ACLs: true` whenever something was dropped. A client
//! that reads "no keys" as "nothing there" is wrong on a real cluster; this mode lets tests
//! see that.
//!
//! Only prefix allow-rules are modelled (`key_prefix`, `service_prefix`, `node_prefix`), which
//! is what the operator's policies use. Sessions, agent and status endpoints are allowed;
//! catalog register/deregister need `node_prefix` write, modelled as `node_write`.

use std::collections::HashMap;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::Request;
use axum::http::{HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Value, json};

use super::text;

/// What a restricted token may do: prefix rules as in a Consul policy. An empty prefix
/// (`key_prefix "" { … }`) covers everything.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TokenPolicy {
    /// `key_prefix "<p>" { policy = "read" }`.
    pub key_read: Vec<String>,
    /// `key_prefix "<p>" { policy = "write" }` (implies read).
    pub key_write: Vec<String>,
    /// `service_prefix "<p>" { policy = "read" }`.
    pub service_read: Vec<String>,
    /// `node_prefix "<p>" { policy = "read" }`.
    pub node_read: Vec<String>,
    /// `node_prefix "" { policy = "write" }`: catalog register/deregister.
    pub node_write: bool,
}

fn covered(rules: &[String], name: &str) -> bool {
    rules.iter().any(|p| name.starts_with(p.as_str()))
}

impl TokenPolicy {
    fn key_read(&self, key: &str) -> bool {
        covered(&self.key_read, key) || covered(&self.key_write, key)
    }

    fn key_write(&self, key: &str) -> bool {
        covered(&self.key_write, key)
    }

    fn service_read(&self, name: &str) -> bool {
        covered(&self.service_read, name)
    }

    fn node_read(&self, name: &str) -> bool {
        covered(&self.node_read, name)
    }
}

/// A restricted token as the request carries it.
#[derive(Debug, Clone)]
pub(super) struct Restricted {
    accessor: String,
    policy: Arc<TokenPolicy>,
}

/// The restricted tokens of a twin, by secret.
#[derive(Debug, Default)]
pub(super) struct Tokens(HashMap<String, Restricted>);

impl Tokens {
    pub(super) fn add(&mut self, secret: &str, policy: TokenPolicy) {
        self.0.insert(
            secret.to_owned(),
            Restricted {
                accessor: uuid::Uuid::new_v4().to_string(),
                policy: Arc::new(policy),
            },
        );
    }

    pub(super) fn get(&self, secret: &str) -> Option<Restricted> {
        self.0.get(secret).cloned()
    }
}

/// Consul ≥ 1.12's `acl.PermissionDeniedError` text.
fn denied(r: &Restricted, permission: &str, on: &str) -> Response {
    text(
        StatusCode::FORBIDDEN,
        &format!(
            "Permission denied: token with AccessorID '{}' lacks permission '{permission}' on {on:?}",
            r.accessor
        ),
    )
}

fn has_flag(req: &Request, flag: &str) -> bool {
    req.uri().query().is_some_and(|q| {
        q.split('&')
            .any(|kv| kv == flag || kv.starts_with(&format!("{flag}=")))
    })
}

/// Decoded KV key of a `/v1/kv/...` path (the route decodes the same way).
fn kv_key(path: &str) -> Option<String> {
    let raw = path.strip_prefix("/v1/kv/")?.as_bytes();
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
    Some(String::from_utf8_lossy(&out).into_owned())
}

/// What to do with a list answer.
#[derive(Clone, Copy)]
enum Filter {
    KvEntries,
    KvKeys,
    CatalogServices,
    ServiceRows,
    HealthRows,
    Checks,
    Nodes,
}

/// Runs a request under a restricted token: refuses what Consul refuses, filters what it
/// filters.
pub(super) async fn enforce(r: Restricted, req: Request, next: Next) -> Response {
    let path = req.uri().path().to_owned();
    let method = req.method().clone();
    let policy = r.policy.clone();
    let kv_root = path == "/v1/kv/";
    let filter = if let Some(key) = kv_key(&path) {
        if method == Method::GET {
            if has_flag(&req, "keys") {
                Some(Filter::KvKeys)
            } else if has_flag(&req, "recurse") {
                Some(Filter::KvEntries)
            } else if !policy.key_read(&key) {
                return denied(&r, "key:read", &key);
            } else {
                None
            }
        } else {
            // DELETE ?recurse needs write on the whole prefix (`KeyWritePrefix`); with
            // allow-rules only, a rule covering the prefix covers everything under it.
            if !policy.key_write(&key) {
                return denied(&r, "key:write", &key);
            }
            None
        }
    } else if path == "/v1/txn" {
        return txn(&r, req, next).await;
    } else if path == "/v1/catalog/services" {
        Some(Filter::CatalogServices)
    } else if path.starts_with("/v1/catalog/service/") {
        Some(Filter::ServiceRows)
    } else if path.starts_with("/v1/health/service/") {
        Some(Filter::HealthRows)
    } else if path.starts_with("/v1/health/checks/")
        || path.starts_with("/v1/health/state/")
        || path.starts_with("/v1/health/node/")
    {
        Some(Filter::Checks)
    } else if path == "/v1/catalog/nodes" {
        Some(Filter::Nodes)
    } else if matches!(
        path.as_str(),
        "/v1/catalog/register" | "/v1/catalog/deregister"
    ) && !policy.node_write
    {
        return denied(&r, "node:write", "");
    } else {
        None
    };
    let resp = next.run(req).await;
    match filter {
        Some(f) if resp.status() == StatusCode::OK => filter_list(&policy, f, kv_root, resp).await,
        _ => resp,
    }
}

/// Typed views of the list rows the filter reads: a row that lacks a field is an error, not a
/// silently empty name that a prefix rule might match.
mod rows {
    use serde::Deserialize;

    #[derive(Deserialize)]
    #[serde(rename_all = "PascalCase")]
    pub(super) struct KvEntry {
        pub(super) key: String,
    }

    #[derive(Deserialize)]
    #[serde(rename_all = "PascalCase")]
    pub(super) struct ServiceRow {
        pub(super) service_name: String,
        pub(super) node: String,
    }

    #[derive(Deserialize)]
    #[serde(rename_all = "PascalCase")]
    pub(super) struct NodeName {
        pub(super) node: String,
    }

    #[derive(Deserialize)]
    #[serde(rename_all = "PascalCase")]
    pub(super) struct ServiceName {
        pub(super) service: String,
    }

    #[derive(Deserialize)]
    #[serde(rename_all = "PascalCase")]
    pub(super) struct HealthRow {
        pub(super) node: NodeName,
        pub(super) service: ServiceName,
    }

    #[derive(Deserialize)]
    #[serde(rename_all = "PascalCase")]
    pub(super) struct CheckRow {
        pub(super) node: String,
        pub(super) service_name: String,
    }
}

/// Whether a token may see one row of a list answer.
fn keep(policy: &TokenPolicy, filter: Filter, v: &Value) -> Result<bool, serde_json::Error> {
    Ok(match filter {
        Filter::KvEntries => {
            let row = rows::KvEntry::deserialize(v)?;
            policy.key_read(&row.key)
        }
        Filter::KvKeys => {
            let key = String::deserialize(v)?;
            policy.key_read(&key)
        }
        Filter::CatalogServices => true,
        Filter::ServiceRows => {
            let row = rows::ServiceRow::deserialize(v)?;
            policy.service_read(&row.service_name) && policy.node_read(&row.node)
        }
        Filter::HealthRows => {
            let row = rows::HealthRow::deserialize(v)?;
            policy.service_read(&row.service.service) && policy.node_read(&row.node.node)
        }
        Filter::Checks => {
            let row = rows::CheckRow::deserialize(v)?;
            policy.node_read(&row.node)
                && (row.service_name.is_empty() || policy.service_read(&row.service_name))
        }
        Filter::Nodes => {
            let row = rows::NodeName::deserialize(v)?;
            policy.node_read(&row.node)
        }
    })
}

async fn filter_list(
    policy: &TokenPolicy,
    filter: Filter,
    kv_root: bool,
    resp: Response,
) -> Response {
    let (mut parts, body) = resp.into_parts();
    let Ok(bytes) = axum::body::to_bytes(body, usize::MAX).await else {
        return text(StatusCode::INTERNAL_SERVER_ERROR, "failed to read answer");
    };
    let Ok(mut value) = serde_json::from_slice::<Value>(&bytes) else {
        return Response::from_parts(parts, Body::from(bytes));
    };
    let verdicts: Result<Vec<bool>, serde_json::Error> = match &value {
        Value::Array(items) => items.iter().map(|v| keep(policy, filter, v)).collect(),
        _ => Ok(Vec::new()),
    };
    let verdicts = match verdicts {
        Ok(v) => v,
        Err(e) => {
            return text(
                StatusCode::INTERNAL_SERVER_ERROR,
                &format!("hashistack-twin: ACL filter cannot read its own answer: {e}"),
            );
        }
    };
    let removed = match &mut value {
        Value::Array(items) => {
            let before = items.len();
            let mut verdict = verdicts.iter();
            items.retain(|_| verdict.next().copied().unwrap_or(false));
            before - items.len()
        }
        Value::Object(map) if matches!(filter, Filter::CatalogServices) => {
            let before = map.len();
            map.retain(|name, _| policy.service_read(name));
            before - map.len()
        }
        _ => 0,
    };
    if removed > 0 {
        parts.headers.insert(
            "X-Consul-Results-Filtered-By-ACLs",
            HeaderValue::from_static("true"),
        );
    }
    parts.headers.remove(axum::http::header::CONTENT_LENGTH);
    // KVS.List / KVS.ListKeys: nothing left to show is a 404 with the query meta (a key
    // listing of the root excepted), exactly as if the keys did not exist.
    let empty_kv = match filter {
        Filter::KvEntries => true,
        Filter::KvKeys => !kv_root,
        _ => false,
    } && value.as_array().is_some_and(Vec::is_empty);
    if empty_kv {
        parts.status = StatusCode::NOT_FOUND;
        parts.headers.remove(axum::http::header::CONTENT_TYPE);
        return Response::from_parts(parts, Body::empty());
    }
    let body = serde_json::to_vec(&value).unwrap_or_default();
    Response::from_parts(parts, Body::from(body))
}

/// What the ACL pre-check reads of a transaction operation.
#[derive(serde::Deserialize)]
struct TxnOpView {
    #[serde(rename = "KV", default)]
    kv: Option<TxnKvView>,
}

#[derive(serde::Deserialize)]
#[serde(rename_all = "PascalCase")]
struct TxnKvView {
    verb: String,
    #[serde(default)]
    key: String,
}

/// `/v1/txn`: every operation is vetted first (`Txn.preCheck`); any refusal answers 409 with
/// one "Permission denied" error per refused operation and applies nothing.
async fn txn(r: &Restricted, req: Request, next: Next) -> Response {
    let (parts, body) = req.into_parts();
    let Ok(bytes) = axum::body::to_bytes(body, 16 * 1024 * 1024).await else {
        return text(StatusCode::PAYLOAD_TOO_LARGE, "Request body too large");
    };
    // A body that is not a list of operations is left to the endpoint, which answers 400.
    let ops: Vec<TxnOpView> = match serde_json::from_slice(&bytes) {
        Ok(ops) => ops,
        Err(_) => {
            return next
                .run(Request::from_parts(parts, Body::from(bytes)))
                .await;
        }
    };
    let mut errors = Vec::new();
    for (i, op) in ops.iter().enumerate() {
        let Some(kv) = &op.kv else { continue };
        let (verb, key) = (kv.verb.as_str(), kv.key.as_str());
        let allowed = match verb {
            "get" | "get-tree" | "check-index" | "check-session" | "check-not-exists" => {
                r.policy.key_read(key)
            }
            _ => r.policy.key_write(key),
        };
        if !allowed {
            errors.push(json!({"OpIndex": i, "What": "Permission denied"}));
        }
    }
    if !errors.is_empty() {
        let body = json!({"Results": null, "Errors": errors});
        let mut resp = (StatusCode::CONFLICT, body.to_string()).into_response();
        resp.headers_mut().insert(
            axum::http::header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        return resp;
    }
    next.run(Request::from_parts(parts, Body::from(bytes)))
        .await
}
