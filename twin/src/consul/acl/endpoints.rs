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
use crate::consul::store::{Store, StoreError};
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

/// Now as RFC 3339 UTC with nanoseconds (`CreateTime`).
pub(crate) fn rfc3339_now() -> String {
    rfc3339(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default(),
    )
}

fn rfc3339(since_epoch: std::time::Duration) -> String {
    rfc3339_utc::nanos_fixed(since_epoch)
}

/// The frame of the reads: ACLs on, `acl:read`, then the object or 403 "ACL not found".
fn read_one(
    st: &ConsulState,
    who: Who,
    find: impl FnOnce(&Store, &Caller) -> Option<Value>,
) -> Response {
    let run = || {
        let who = caller(st, who)?;
        who.require_global(Global::Acl, Need::Read)?;
        st.read(|s| find(s, &who))
            .map(|v| ok(st, &v))
            .ok_or_else(not_found)
    };
    run().unwrap_or_else(|r| r)
}

/// The frame of the listings: ACLs on, `acl:read`, then every object.
fn list(st: &ConsulState, who: Who, all: impl FnOnce(&Store, &Caller) -> Vec<Value>) -> Response {
    let run = || {
        let who = caller(st, who)?;
        who.require_global(Global::Acl, Need::Read)?;
        Ok(ok(st, &Value::Array(st.read(|s| all(s, &who)))))
    };
    run().unwrap_or_else(|r| r)
}

/// The frame of the deletes: ACLs on, `acl:write`, then `true`.
fn delete(
    st: &ConsulState,
    who: Who,
    remove: impl FnOnce(&mut Store) -> Result<(), StoreError>,
) -> Response {
    let run = || {
        let who = caller(st, who)?;
        who.require_global(Global::Acl, Need::Write)?;
        st.write(remove).map_err(|e| store_error(&e))?;
        Ok(json(StatusCode::OK, HeaderMap::new(), &json!(true)))
    };
    run().unwrap_or_else(|r| r)
}

/// The frame of the writes, in Consul's order: ACLs on (401), the body decoded (400),
/// `acl:write` (403), then the write.
async fn write<T: serde::de::DeserializeOwned>(
    st: &ConsulState,
    who: Who,
    body: Body,
    what: &str,
    apply: impl FnOnce(&mut Store, T, &Caller) -> Result<Value, Response>,
) -> Response {
    let run = async {
        let who = caller(st, who)?;
        let bytes = body_bytes(body, 1024 * 1024).await?;
        let input: T = serde_json::from_slice(&bytes).map_err(|e| {
            text(
                StatusCode::BAD_REQUEST,
                &format!("{what} decoding failed: {e}"),
            )
        })?;
        who.require_global(Global::Acl, Need::Write)?;
        let v = st.write(|s| apply(s, input, &who))?;
        Ok(ok(st, &v))
    };
    run.await.unwrap_or_else(|r| r)
}

fn policy_stub(p: &AclPolicy) -> Value {
    json!({
        "ID": p.id, "Name": p.name, "Description": p.description,
        "Datacenters": p.datacenters, "Hash": p.hash,
        "CreateIndex": p.create_index, "ModifyIndex": p.modify_index,
    })
}

fn stored(e: StoreError) -> Response {
    store_error(&e)
}

async fn policy_create(State(st): State<ConsulState>, who: Who, body: Body) -> Response {
    write(&st, who, body, "Policy", |s, w: PolicyWrite, _| {
        if !w.id.is_empty() {
            return Err(text(
                StatusCode::BAD_REQUEST,
                "Cannot specify the ID when creating a new policy",
            ));
        }
        s.acl_policy_set(w).map(|p| json!(p)).map_err(stored)
    })
    .await
}

async fn policy_update(
    State(st): State<ConsulState>,
    who: Who,
    Path(id): Path<String>,
    body: Body,
) -> Response {
    write(&st, who, body, "Policy", |s, mut w: PolicyWrite, _| {
        if !w.id.is_empty() && w.id != id {
            return Err(text(
                StatusCode::BAD_REQUEST,
                "Policy ID in URL and payload do not match",
            ));
        }
        w.id = id;
        s.acl_policy_set(w).map(|p| json!(p)).map_err(stored)
    })
    .await
}

async fn policy_read(State(st): State<ConsulState>, who: Who, Path(id): Path<String>) -> Response {
    read_one(&st, who, |s, _| s.acl_policy(&id).map(|p| json!(p)))
}

async fn policy_read_by_name(
    State(st): State<ConsulState>,
    who: Who,
    Path(name): Path<String>,
) -> Response {
    read_one(&st, who, |s, _| {
        s.acl_policy_by_name(&name).map(|p| json!(p))
    })
}

async fn policy_delete(
    State(st): State<ConsulState>,
    who: Who,
    Path(id): Path<String>,
) -> Response {
    delete(&st, who, |s| s.acl_policy_delete(&id))
}

async fn policy_list(State(st): State<ConsulState>, who: Who) -> Response {
    list(&st, who, |s, _| {
        s.acl_policies().into_iter().map(policy_stub).collect()
    })
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
    write(&st, who, body, "Token", |s, w: TokenWrite, who| {
        s.acl_token_set(w, None, &rfc3339_now())
            .map(|t| token_json(who, &t))
            .map_err(stored)
    })
    .await
}

async fn token_update(
    State(st): State<ConsulState>,
    who: Who,
    Path(accessor): Path<String>,
    body: Body,
) -> Response {
    write(&st, who, body, "Token", |s, w: TokenWrite, who| {
        if !w.accessor_id.is_empty() && w.accessor_id != accessor {
            return Err(text(
                StatusCode::BAD_REQUEST,
                "Token Accessor ID in URL and payload do not match",
            ));
        }
        s.acl_token_set(w, Some(&accessor), &rfc3339_now())
            .map(|t| token_json(who, &t))
            .map_err(stored)
    })
    .await
}

/// `token/self` needs no `acl:read`: any token may read itself.
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
    read_one(&st, who, |s, who| {
        s.acl_token(&accessor).map(|t| token_json(who, &t))
    })
}

async fn token_delete(
    State(st): State<ConsulState>,
    who: Who,
    Path(accessor): Path<String>,
) -> Response {
    delete(&st, who, |s| s.acl_token_delete(&accessor))
}

async fn token_list(State(st): State<ConsulState>, who: Who) -> Response {
    list(&st, who, |s, who| {
        s.acl_tokens()
            .iter()
            .map(|t| {
                let mut v = token_json(who, t);
                v["Legacy"] = json!(false);
                v
            })
            .collect()
    })
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    #[test]
    fn create_times_are_rfc3339_utc_dates() {
        assert_eq!(
            super::rfc3339(Duration::ZERO),
            "1970-01-01T00:00:00.000000000Z"
        );
        assert_eq!(
            super::rfc3339(Duration::new(1_700_000_000, 5)),
            "2023-11-14T22:13:20.000000005Z"
        );
        assert_eq!(
            super::rfc3339(Duration::from_secs(951_782_400)),
            "2000-02-29T00:00:00.000000000Z",
            "a leap day"
        );
    }
}
