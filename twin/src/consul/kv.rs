//! `/v1/kv/*` and `/v1/txn` (DOC kv.mdx, txn.mdx; SRC agent/kvs_endpoint.go, agent/txn_endpoint.go).

use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use serde_json::{Value, json};
use tokio::time::Instant;

use super::store::{MAX_VALUE_SIZE, PutMode, TxnKvOp};
use super::{
    ConsulState, Params, blocking_read, body_bytes, json, meta_headers, read_opts, store_error,
    text,
};

/// Consul's transaction operation limit (the brief's 64; Consul ≥ 1.x docs allow 128).
pub const MAX_TXN_OPS: usize = 64;

type Q = Query<Vec<(String, String)>>;

pub(super) async fn get_root(st: State<ConsulState>, q: Q) -> Response {
    read(st, String::new(), Params::from_query(q)).await
}

pub(super) async fn get(st: State<ConsulState>, Path(key): Path<String>, q: Q) -> Response {
    if let Some(r) = invalid_key(&key) {
        return r;
    }
    read(st, key, Params::from_query(q)).await
}

/// Consul ≥ 1.21.x/1.22 (CVE-2025-11392, SRC agent/kvs_endpoint.go `KVSEndpoint` and
/// `validateKVKey`) refuses path traversal and a leading `/` with a 400 before any other check
/// (unless the agent runs with `disable_kv_key_validation`). The intermediate 1.21.5 rules
/// (a character regexp, "suspicious" file extensions) were withdrawn and are not modelled.
/// Keys are checked as written; Go's `filepath.Clean` would also accept `a/..`, which this
/// refuses.
fn invalid_key(key: &str) -> Option<Response> {
    let reason = if key.contains("../") || key.contains("..\\") {
        "URL path contains invalid traversal sequence"
    } else if [
        "%2e%2e%2f",
        "%2e%2e/",
        "..%2f",
        "%2e%2e%5c",
        "%252e%252e%252f",
    ]
    .iter()
    .any(|seq| key.contains(seq))
    {
        "URL path contains encoded traversal sequence"
    } else if key.starts_with('/') {
        "key must not begin with a '/'"
    } else if key.starts_with("..") || key.contains("/..") {
        "key contains path traversal sequence after normalization"
    } else {
        return None;
    };
    Some(text(StatusCode::BAD_REQUEST, reason))
}

pub(super) async fn put_root(st: State<ConsulState>, q: Q, body: Body) -> Response {
    write(st, String::new(), Params::from_query(q), body).await
}

pub(super) async fn put(
    st: State<ConsulState>,
    Path(key): Path<String>,
    q: Q,
    body: Body,
) -> Response {
    if let Some(r) = invalid_key(&key) {
        return r;
    }
    write(st, key, Params::from_query(q), body).await
}

pub(super) async fn delete_root(st: State<ConsulState>, q: Q) -> Response {
    remove(st, String::new(), Params::from_query(q)).await
}

pub(super) async fn delete(st: State<ConsulState>, Path(key): Path<String>, q: Q) -> Response {
    if let Some(r) = invalid_key(&key) {
        return r;
    }
    remove(st, key, Params::from_query(q)).await
}

enum Read {
    Keys(Vec<String>),
    Entries(Vec<Value>),
    One(Option<super::store::KvEntry>),
}

async fn read(State(st): State<ConsulState>, key: String, p: Params) -> Response {
    let opts = match read_opts(&p) {
        Ok(o) => o,
        Err(r) => return r,
    };
    let keys = p.has("keys");
    let recurse = p.has("recurse");
    if key.is_empty() && !keys && !recurse {
        return text(StatusCode::BAD_REQUEST, "Missing key name");
    }
    let separator = p
        .get("separator")
        .or_else(|| p.get("seperator"))
        .map(str::to_string);
    let (index, result) = blocking_read(&st, opts, |s| {
        if keys {
            (
                s.kv_prefix_index(&key),
                Read::Keys(s.kv_keys(&key, separator.as_deref())),
            )
        } else if recurse {
            let entries = s
                .kv_list(&key)
                .iter()
                .map(|e| serde_json::to_value(e).unwrap_or(Value::Null))
                .collect();
            (s.kv_prefix_index(&key), Read::Entries(entries))
        } else {
            (s.kv_key_index(&key), Read::One(s.kv_get(&key).cloned()))
        }
    })
    .await;
    let headers = meta_headers(index, &opts);
    match result {
        Read::Keys(k) if k.is_empty() && !key.is_empty() => not_found(headers),
        Read::Keys(k) => json(StatusCode::OK, headers, &json!(k)),
        Read::Entries(e) if e.is_empty() => not_found(headers),
        Read::Entries(e) => json(StatusCode::OK, headers, &Value::Array(e)),
        Read::One(None) => not_found(headers),
        Read::One(Some(e)) if p.has("raw") => {
            let mut resp = (StatusCode::OK, e.value).into_response();
            resp.headers_mut().extend(headers);
            resp.headers_mut()
                .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
            resp.headers_mut().insert(
                "X-Content-Type-Options",
                HeaderValue::from_static("nosniff"),
            );
            resp.headers_mut().insert(
                "Content-Security-Policy",
                HeaderValue::from_static("sandbox"),
            );
            resp
        }
        Read::One(Some(e)) => json(StatusCode::OK, headers, &json!([e])),
    }
}

fn not_found(headers: HeaderMap) -> Response {
    let mut resp = StatusCode::NOT_FOUND.into_response();
    resp.headers_mut().extend(headers);
    resp
}

/// Go's `strconv.ParseUint` error text, which Consul returns as a 500.
#[allow(clippy::result_large_err)] // the error is the finished HTTP answer
fn parse_u64(p: &Params, name: &str) -> Result<Option<u64>, Response> {
    match p.get(name) {
        None => Ok(None),
        Some(v) => v.parse::<u64>().map(Some).map_err(|_| {
            text(
                StatusCode::INTERNAL_SERVER_ERROR,
                &format!("strconv.ParseUint: parsing {v:?}: invalid syntax"),
            )
        }),
    }
}

fn conflicting(p: &Params, flags: &[&str]) -> Option<Response> {
    let n = flags.iter().filter(|f| p.has(f)).count();
    (n > 1).then(|| {
        text(
            StatusCode::BAD_REQUEST,
            &format!("Conflicting flags: {}", p.encode()),
        )
    })
}

fn too_large(len: usize) -> Response {
    text(
        StatusCode::PAYLOAD_TOO_LARGE,
        &format!(
            "Request body({len} bytes) too large, max size: {MAX_VALUE_SIZE} bytes. See https://developer.hashicorp.com/docs/agent/config/config-files#kv_max_value_size."
        ),
    )
}

async fn write(State(st): State<ConsulState>, key: String, p: Params, body: Body) -> Response {
    if key.is_empty() {
        return text(StatusCode::BAD_REQUEST, "Missing key name");
    }
    if let Some(r) = conflicting(&p, &["cas", "acquire", "release"]) {
        return r;
    }
    let flags = match parse_u64(&p, "flags") {
        Ok(f) => f.unwrap_or(0),
        Err(r) => return r,
    };
    let mode = if p.has("cas") {
        match parse_u64(&p, "cas") {
            Ok(c) => PutMode::Cas(c.unwrap_or(0)),
            Err(r) => return r,
        }
    } else if let Some(s) = p.get("acquire") {
        PutMode::Acquire(s.to_string())
    } else if let Some(s) = p.get("release") {
        PutMode::Release(s.to_string())
    } else {
        PutMode::Set
    };
    let bytes = match body_bytes(body, 16 * 1024 * 1024).await {
        Ok(b) => b,
        Err(r) => return r,
    };
    if bytes.len() > MAX_VALUE_SIZE {
        return too_large(bytes.len());
    }
    match st.write(|s| s.kv_put(&key, bytes.to_vec(), flags, &mode, Instant::now())) {
        Ok(ok) => json(StatusCode::OK, HeaderMap::new(), &json!(ok)),
        Err(e) => store_error(&e),
    }
}

async fn remove(State(st): State<ConsulState>, key: String, p: Params) -> Response {
    let recurse = p.has("recurse");
    if key.is_empty() && !recurse {
        return text(StatusCode::BAD_REQUEST, "Missing key name");
    }
    if let Some(r) = conflicting(&p, &["recurse", "cas"]) {
        return r;
    }
    let cas = if p.has("cas") {
        match parse_u64(&p, "cas") {
            Ok(c) => Some(c.unwrap_or(0)),
            Err(r) => return r,
        }
    } else {
        None
    };
    let ok = st.write(|s| s.kv_delete(&key, recurse, cas));
    json(StatusCode::OK, HeaderMap::new(), &json!(ok))
}

/// `PUT /v1/txn`.
pub(super) async fn txn(State(st): State<ConsulState>, q: Q, body: Body) -> Response {
    let p = Params::from_query(q);
    let bytes = match body_bytes(body, 16 * 1024 * 1024).await {
        Ok(b) => b,
        Err(r) => return r,
    };
    if bytes.len() > MAX_VALUE_SIZE {
        return too_large(bytes.len());
    }
    let raw: Vec<Value> = match serde_json::from_slice(&bytes) {
        Ok(v) => v,
        Err(e) => {
            return text(
                StatusCode::BAD_REQUEST,
                &format!("Failed to parse body: {e}"),
            );
        }
    };
    if raw.len() > MAX_TXN_OPS {
        return text(
            StatusCode::PAYLOAD_TOO_LARGE,
            &format!(
                "Transaction contains too many operations ({} > {MAX_TXN_OPS})",
                raw.len()
            ),
        );
    }
    let mut ops = Vec::with_capacity(raw.len());
    for op in raw {
        let Some(kv) = op.get("KV") else {
            return text(
                StatusCode::BAD_REQUEST,
                "Failed to parse body: hashistack-twin implements only KV transaction operations",
            );
        };
        let op: TxnKvOp = match serde_json::from_value(kv.clone()) {
            Ok(o) => o,
            Err(e) => {
                return text(
                    StatusCode::BAD_REQUEST,
                    &format!("Failed to parse body: {e}"),
                );
            }
        };
        if let Some(v) = &op.value {
            let len = base64::engine::general_purpose::STANDARD
                .decode(v.as_bytes())
                .map(|b| b.len())
                .unwrap_or(0);
            if len > MAX_VALUE_SIZE {
                return text(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    &format!(
                        "Value for key {:?} is too large ({len} > {MAX_VALUE_SIZE} bytes)",
                        op.key
                    ),
                );
            }
        }
        ops.push(op);
    }
    let read_only = ops.iter().all(|o| {
        matches!(
            o.verb.as_str(),
            "get"
                | "get-or-empty"
                | "get-tree"
                | "check-index"
                | "check-session"
                | "check-not-exists"
        )
    });
    let headers = if read_only {
        match read_opts(&p) {
            Ok(mut opts) => {
                opts.min_index = 0;
                let mut h = meta_headers(1, &opts);
                h.remove("X-Consul-Index");
                h
            }
            Err(r) => return r,
        }
    } else {
        HeaderMap::new()
    };
    match st.write(|s| s.txn(&ops, Instant::now())) {
        Ok(results) => {
            let results: Vec<Value> = results.into_iter().map(|e| json!({ "KV": e })).collect();
            let results = if results.is_empty() {
                Value::Null
            } else {
                Value::Array(results)
            };
            json(
                StatusCode::OK,
                headers,
                &json!({ "Results": results, "Errors": null }),
            )
        }
        Err(errors) => {
            let errors: Vec<Value> = errors
                .into_iter()
                .map(|(i, what)| json!({ "OpIndex": i, "What": what }))
                .collect();
            json(
                StatusCode::CONFLICT,
                headers,
                &json!({ "Results": null, "Errors": errors }),
            )
        }
    }
}
