//! `/v1/acl/policy`, `/v1/acl/policies`, `/v1/acl/token`, `/v1/acl/tokens` (DOC
//! api-docs/acl/policies.mdx, acl/tokens.mdx; SRC agent/acl_endpoint.go): how tests and the
//! project's shipped least-privilege policies get their tokens. Reads need `acl:read`, writes
//! `acl:write` (the management token has both); a SecretID is shown only to `acl:write`.

// Handlers build `Result<Response, Response>`: the error is the finished HTTP answer.
#![allow(clippy::result_large_err)]

use axum::Router;
use axum::body::Body;
use axum::extract::{Extension, Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use axum::routing::{get, put};
use serde_json::{Value, json};

use super::Caller;
use super::rules::{Global, Need};
use crate::consul::store::acl::{AclPolicy, AclToken, PolicyWrite, TokenWrite};
use crate::consul::{ConsulState, body_bytes, json, store_error, text};

/// The ACL routes (behind the ACL layer, which hands them the caller).
pub(in crate::consul) fn routes() -> Router<ConsulState> {
    Router::new()
        .route("/v1/acl/policy", put(policy_create))
        .route(
            "/v1/acl/policy/{id}",
            get(policy_read).put(policy_update).delete(policy_delete),
        )
        .route("/v1/acl/policy/name/{name}", get(policy_read_by_name))
        .route("/v1/acl/policies", get(policy_list))
        .route("/v1/acl/token", put(token_create))
        .route("/v1/acl/token/self", get(token_self))
        .route(
            "/v1/acl/token/{accessor}",
            get(token_read).put(token_update).delete(token_delete),
        )
        .route("/v1/acl/tokens", get(token_list))
}

type Who = Option<Extension<Caller>>;

/// ACLs off: every ACL endpoint answers 401 (`aclDisabled` in SRC agent/acl_endpoint.go).
fn caller(st: &ConsulState, who: Who) -> Result<Caller, Response> {
    match (st.inner.acl_token.is_some(), who) {
        (true, Some(Extension(c))) => Ok(c),
        _ => Err(text(StatusCode::UNAUTHORIZED, "ACL support disabled")),
    }
}

fn not_found() -> Response {
    text(StatusCode::FORBIDDEN, "ACL not found")
}

fn ok(st: &ConsulState, body: &Value) -> Response {
    let mut h = HeaderMap::new();
    let index = st.read(|s| s.acl_index()).max(1);
    h.insert("X-Consul-Index", index.into());
    json(StatusCode::OK, h, body)
}

/// Seconds since the epoch as RFC 3339 UTC (civil date from days, Howard Hinnant's method).
pub(crate) fn rfc3339_now() -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let secs = now.as_secs();
    let (days, rem) = ((secs / 86_400) as i64, secs % 86_400);
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{:09}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        now.subsec_nanos()
    )
}

async fn decode<T: serde::de::DeserializeOwned>(body: Body, what: &str) -> Result<T, Response> {
    let bytes = body_bytes(body, 1024 * 1024).await?;
    serde_json::from_slice(&bytes).map_err(|e| {
        text(
            StatusCode::BAD_REQUEST,
            &format!("{what} decoding failed: {e}"),
        )
    })
}

fn policy_json(p: &AclPolicy) -> Value {
    json!(p)
}

fn policy_stub(p: &AclPolicy) -> Value {
    json!({
        "ID": p.id, "Name": p.name, "Description": p.description,
        "Datacenters": p.datacenters, "Hash": p.hash,
        "CreateIndex": p.create_index, "ModifyIndex": p.modify_index,
    })
}

async fn policy_create(State(st): State<ConsulState>, who: Who, body: Body) -> Response {
    let run = async {
        let who = caller(&st, who)?;
        who.require_global(Global::Acl, Need::Write)?;
        let w: PolicyWrite = decode(body, "Policy").await?;
        if !w.id.is_empty() {
            return Err(text(
                StatusCode::BAD_REQUEST,
                "Cannot specify the ID when creating a new policy",
            ));
        }
        let p = st
            .write(|s| s.acl_policy_set(w))
            .map_err(|e| store_error(&e))?;
        Ok(ok(&st, &policy_json(&p)))
    };
    run.await.unwrap_or_else(|r| r)
}

async fn policy_update(
    State(st): State<ConsulState>,
    who: Who,
    Path(id): Path<String>,
    body: Body,
) -> Response {
    let run = async {
        let who = caller(&st, who)?;
        who.require_global(Global::Acl, Need::Write)?;
        let mut w: PolicyWrite = decode(body, "Policy").await?;
        if !w.id.is_empty() && w.id != id {
            return Err(text(
                StatusCode::BAD_REQUEST,
                "Policy ID in URL and payload do not match",
            ));
        }
        w.id = id;
        let p = st
            .write(|s| s.acl_policy_set(w))
            .map_err(|e| store_error(&e))?;
        Ok(ok(&st, &policy_json(&p)))
    };
    run.await.unwrap_or_else(|r| r)
}

async fn policy_read(State(st): State<ConsulState>, who: Who, Path(id): Path<String>) -> Response {
    let run = || {
        let who = caller(&st, who)?;
        who.require_global(Global::Acl, Need::Read)?;
        st.read(|s| s.acl_policy(&id).map(policy_json))
            .map(|p| ok(&st, &p))
            .ok_or_else(not_found)
    };
    run().unwrap_or_else(|r| r)
}

async fn policy_read_by_name(
    State(st): State<ConsulState>,
    who: Who,
    Path(name): Path<String>,
) -> Response {
    let run = || {
        let who = caller(&st, who)?;
        who.require_global(Global::Acl, Need::Read)?;
        st.read(|s| s.acl_policy_by_name(&name).map(policy_json))
            .map(|p| ok(&st, &p))
            .ok_or_else(not_found)
    };
    run().unwrap_or_else(|r| r)
}

async fn policy_delete(
    State(st): State<ConsulState>,
    who: Who,
    Path(id): Path<String>,
) -> Response {
    let run = || {
        let who = caller(&st, who)?;
        who.require_global(Global::Acl, Need::Write)?;
        st.write(|s| s.acl_policy_delete(&id))
            .map_err(|e| store_error(&e))?;
        Ok(json(StatusCode::OK, HeaderMap::new(), &json!(true)))
    };
    run().unwrap_or_else(|r| r)
}

async fn policy_list(State(st): State<ConsulState>, who: Who) -> Response {
    let run = || {
        let who = caller(&st, who)?;
        who.require_global(Global::Acl, Need::Read)?;
        let list: Vec<Value> = st.read(|s| s.acl_policies().into_iter().map(policy_stub).collect());
        Ok(ok(&st, &Value::Array(list)))
    };
    run().unwrap_or_else(|r| r)
}

/// A token as `who` may see it: the SecretID only for `acl:write` or the token itself.
fn token_json(who: &Caller, t: &AclToken) -> Value {
    let mut v = json!(t);
    let own = who.accessor == t.accessor_id;
    if !own && !who.authz.allows_global(Global::Acl, Need::Write) {
        v["SecretID"] = json!("<hidden>");
    }
    v
}

async fn token_create(State(st): State<ConsulState>, who: Who, body: Body) -> Response {
    let run = async {
        let who = caller(&st, who)?;
        who.require_global(Global::Acl, Need::Write)?;
        let w: TokenWrite = decode(body, "Token").await?;
        let now = rfc3339_now();
        let t = st
            .write(|s| s.acl_token_set(w, None, &now))
            .map_err(|e| store_error(&e))?;
        Ok(ok(&st, &token_json(&who, &t)))
    };
    run.await.unwrap_or_else(|r| r)
}

async fn token_update(
    State(st): State<ConsulState>,
    who: Who,
    Path(accessor): Path<String>,
    body: Body,
) -> Response {
    let run = async {
        let who = caller(&st, who)?;
        who.require_global(Global::Acl, Need::Write)?;
        let w: TokenWrite = decode(body, "Token").await?;
        if !w.accessor_id.is_empty() && w.accessor_id != accessor {
            return Err(text(
                StatusCode::BAD_REQUEST,
                "Token Accessor ID in URL and payload do not match",
            ));
        }
        let now = rfc3339_now();
        let t = st
            .write(|s| s.acl_token_set(w, Some(&accessor), &now))
            .map_err(|e| store_error(&e))?;
        Ok(ok(&st, &token_json(&who, &t)))
    };
    run.await.unwrap_or_else(|r| r)
}

async fn token_self(State(st): State<ConsulState>, who: Who) -> Response {
    let run = || {
        let who = caller(&st, who)?;
        st.read(|s| s.acl_token(&who.accessor))
            .map(|t| ok(&st, &token_json(&who, &t)))
            .ok_or_else(not_found)
    };
    run().unwrap_or_else(|r| r)
}

async fn token_read(
    State(st): State<ConsulState>,
    who: Who,
    Path(accessor): Path<String>,
) -> Response {
    let run = || {
        let who = caller(&st, who)?;
        who.require_global(Global::Acl, Need::Read)?;
        st.read(|s| s.acl_token(&accessor))
            .map(|t| ok(&st, &token_json(&who, &t)))
            .ok_or_else(not_found)
    };
    run().unwrap_or_else(|r| r)
}

async fn token_delete(
    State(st): State<ConsulState>,
    who: Who,
    Path(accessor): Path<String>,
) -> Response {
    let run = || {
        let who = caller(&st, who)?;
        who.require_global(Global::Acl, Need::Write)?;
        st.write(|s| s.acl_token_delete(&accessor))
            .map_err(|e| store_error(&e))?;
        Ok(json(StatusCode::OK, HeaderMap::new(), &json!(true)))
    };
    run().unwrap_or_else(|r| r)
}

async fn token_list(State(st): State<ConsulState>, who: Who) -> Response {
    let run = || {
        let who = caller(&st, who)?;
        who.require_global(Global::Acl, Need::Read)?;
        let list: Vec<Value> = st.read(|s| {
            s.acl_tokens()
                .iter()
                .map(|t| {
                    let mut v = token_json(&who, t);
                    v["Legacy"] = json!(false);
                    v
                })
                .collect()
        });
        Ok(ok(&st, &Value::Array(list)))
    };
    run().unwrap_or_else(|r| r)
}
