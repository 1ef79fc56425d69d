//! Variables endpoints (SRC command/agent/variable_endpoint.go): `GET /v1/vars` lists the
//! metadata the token may `list`; `GET/PUT/POST/DELETE /v1/var/:path` read, write (whole
//! items) and delete, with `?cas=<ModifyIndex>`. A check-and-set conflict is a 409 whose body
//! is the variable found (or only its namespace and path); a delete answers 204.
//!
//! The request's namespace is the `namespace` query parameter (default `default`); the body's
//! `Namespace` and `Path` are not read.

use super::*;
use std::collections::BTreeMap;

fn cas(r: &Req) -> Result<Option<u64>, ApiError> {
    match r.param("cas") {
        None | Some("") => Ok(None),
        Some(v) => v.parse().map(Some).map_err(|e| {
            ApiError::new(
                400,
                format!("can not parse cas: strconv.ParseUint: parsing {v:?}: {e}"),
            )
        }),
    }
}

/// `409 Conflict` with the variable the check found and its index.
fn conflict(r: &Req, found: &Value) -> Response {
    let index = found["ModifyIndex"].as_u64().unwrap_or(0);
    let mut resp = r.written(index, found);
    *resp.status_mut() = StatusCode::CONFLICT;
    resp
}

pub(super) async fn list_variables(r: Req, Extension(acl): ReqAcl) -> Response {
    let ns = r.ns();
    let prefix = r.param("prefix").unwrap_or("").to_string();
    r.blocking(|st| {
        let list: Vec<Value> = st
            .variables
            .values()
            .filter(|v| {
                ns_matches(&ns, &v.namespace)
                    && v.path.starts_with(&prefix)
                    && acl.allow_variable(&v.namespace, &v.path, "list")
            })
            .map(|v| v.metadata())
            .collect();
        (st.tables.variables, Ok(Value::Array(list)))
    })
    .await
}

pub(super) async fn missing_variable_path() -> Answer {
    Err(ApiError::new(400, "missing variable path"))
}

pub(super) async fn read_variable(Path(path): Path<String>, r: Req) -> Response {
    let ns = r.ns();
    r.blocking(|st| match st.variable(&ns, &path) {
        Some(v) => (v.modify_index, Ok(v.json())),
        None => (
            st.tables.variables,
            Err(ApiError::new(404, "variable not found")),
        ),
    })
    .await
}

pub(super) async fn put_variable(Path(path): Path<String>, r: Req, bytes: Bytes) -> Answer {
    let body = parse_body(&bytes)?;
    let items: BTreeMap<String, String> = match field(&body, "Items") {
        None | Some(Value::Null) => BTreeMap::new(),
        Some(v) => serde_json::from_value(v.clone()).map_err(|_| {
            ApiError::new(
                400,
                "json: cannot unmarshal into Go struct field VariableDecrypted.Items of type map[string]string",
            )
        })?,
    };
    if items.is_empty() {
        return Err(ApiError::new(400, "variable missing required Items object"));
    }
    let cas = cas(&r)?;
    let ns = r.ns();
    match r
        .inner
        .write(|st| st.put_variable(&ns, &path, items, cas))?
    {
        Ok(v) => Ok(r.written(v.modify_index, &v.json())),
        Err(found) => Ok(conflict(&r, &found)),
    }
}

pub(super) async fn delete_variable(Path(path): Path<String>, r: Req) -> Answer {
    let cas = cas(&r)?;
    let ns = r.ns();
    match r.inner.write(|st| st.delete_variable(&ns, &path, cas)) {
        Ok(index) => {
            let mut resp = write_empty(&r.q, index);
            *resp.status_mut() = StatusCode::NO_CONTENT;
            Ok(resp)
        }
        Err(found) => Ok(conflict(&r, &found)),
    }
}
