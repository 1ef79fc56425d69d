//! ACL enforcement per request and the ACL endpoints (SRC command/agent/acl_endpoint.go and the
//! permission check at the top of each RPC in nomad/*_endpoint.go).
//!
//! Every request's token is resolved to an [`Acl`] before its handler runs; the handler gets it
//! as a request extension to filter `namespace=*` listings. Refusals are Nomad's: an unknown
//! secret is 403 `ACL token not found`, a missing permission 403 `Permission denied`. With no
//! management token configured ACLs are off and everything is allowed.

use super::*;
use crate::nomad::acl::Acl;

/// What a route requires.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Need {
    /// No ACL check (`/v1/status/*`, `/v1/regions`).
    Nothing,
    /// Any valid token (`/v1/acl/token/self`, `/v1/namespaces` which filters).
    Token,
    /// A management token.
    Management,
    /// A capability in the request's namespace.
    Ns(&'static str),
    /// Any capability in the request's namespace (`/v1/namespace/:name` names it in the path).
    Namespace,
    NodeRead,
    NodeWrite,
    AgentRead,
    /// Any token, anonymous included: the handler filters what it answers (`/v1/vars`).
    Filtered,
    /// A capability on the variable at the request's path (`/v1/var/:path`).
    Variable(&'static str),
}

fn need(method: &http::Method, path: &str, q: &[(String, String)]) -> Need {
    let read = method == http::Method::GET;
    let seg: Vec<&str> = path.trim_start_matches("/v1/").split('/').collect();
    match seg.as_slice() {
        ["status", ..] | ["regions"] => Need::Nothing,
        ["acl", "token", "self"] => Need::Token,
        ["acl", ..] => Need::Management,
        ["jobs"] if read => Need::Ns("list-jobs"),
        ["jobs"] => Need::Ns("submit-job"),
        ["job", _] if read => Need::Ns("read-job"),
        ["job", _] => Need::Ns("submit-job"),
        ["job", _, "plan" | "revert" | "stable" | "evaluate"] => Need::Ns("submit-job"),
        ["job", ..] => Need::Ns("read-job"),
        ["evaluations"] | ["evaluation", ..] => Need::Ns("read-job"),
        ["deployments"] | ["deployment", _] | ["deployment", "allocations", _] => {
            Need::Ns("read-job")
        }
        ["deployment", ..] => Need::Ns("submit-job"),
        ["allocation", _, "stop"] => Need::Ns("alloc-lifecycle"),
        ["allocations"] | ["allocation", ..] => Need::Ns("read-job"),
        ["services"] => Need::Ns("read-job"),
        ["service", ..] if read => Need::Ns("read-job"),
        ["service", ..] => Need::Ns("submit-job"),
        ["event", "stream"] => {
            let topics: Vec<&str> = q
                .iter()
                .filter(|(k, _)| k == "topic")
                .map(|(_, v)| v.split(':').next().unwrap_or(""))
                .collect();
            // No topic (every topic) or `*` needs management; Node topics need node:read.
            if topics.is_empty() || topics.contains(&"*") {
                Need::Management
            } else if topics.iter().all(|t| matches!(*t, "Node" | "NodeDrain")) {
                Need::NodeRead
            } else {
                Need::Ns("read-job")
            }
        }
        ["vars"] => Need::Filtered,
        ["var", ..] if read => Need::Variable("read"),
        ["var", ..] if method == http::Method::DELETE => Need::Variable("destroy"),
        ["var", ..] => Need::Variable("write"),
        ["namespaces"] => Need::Token,
        ["namespace", _] => Need::Namespace,
        ["nodes"] | ["node", _] | ["node", _, "allocations"] => Need::NodeRead,
        ["node", ..] => Need::NodeWrite,
        ["agent", ..] => Need::AgentRead,
        _ => Need::Management,
    }
}

fn token_of(h: &HeaderMap) -> Option<String> {
    h.get("X-Nomad-Token")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
        .or_else(|| {
            h.get(http::header::AUTHORIZATION)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| {
                    let (scheme, rest) = v.split_once(' ')?;
                    scheme
                        .eq_ignore_ascii_case("bearer")
                        .then(|| rest.trim().to_string())
                })
        })
}

/// The middleware: resolves the token, checks the route's requirement, hands the ACL on.
pub(super) async fn acl(State(inner): St, mut req: Request, next: Next) -> Response {
    tracing::debug!(method = %req.method(), path = %req.uri().path(), "nomad request");
    if inner.config.acl_token.is_none() {
        req.extensions_mut().insert(Arc::new(Acl::management()));
        return next.run(req).await;
    }
    let q: Vec<(String, String)> = Query::<Vec<(String, String)>>::try_from_uri(req.uri())
        .map(|Query(q)| q)
        .unwrap_or_default();
    let need = need(req.method(), req.uri().path(), &q);
    if need == Need::Nothing {
        return next.run(req).await;
    }
    let secret = token_of(req.headers());
    let acl = match inner.read(|st| st.resolve_acl(secret.as_deref())) {
        Ok(a) => a,
        Err(e) => return error(e),
    };
    let ns = namespace(&q);
    let allowed = match need {
        Need::Nothing => true,
        Need::Token => secret.is_some() || acl.management,
        Need::Management => acl.management,
        Need::Ns(cap) => acl.allow_ns_op(&ns, cap),
        Need::Namespace => {
            let name = req.uri().path().rsplit('/').next().unwrap_or("");
            acl.allow_namespace(name)
        }
        Need::NodeRead => acl.allow_node_read(),
        Need::NodeWrite => acl.allow_node_write(),
        Need::AgentRead => acl.allow_agent_read(),
        Need::Filtered => true,
        Need::Variable(cap) => {
            let path = req.uri().path().strip_prefix("/v1/var/").unwrap_or("");
            acl.allow_variable(&ns, path, cap)
        }
    };
    if !allowed {
        return error(ApiError::new(403, "Permission denied"));
    }
    req.extensions_mut().insert(Arc::new(acl));
    next.run(req).await
}

/// The request's ACL, for handlers that filter listings by namespace.
pub(super) type ReqAcl = Extension<Arc<Acl>>;

// === endpoints ===

pub(super) async fn list_policies(r: Req) -> Response {
    r.blocking(|st| {
        let list: Vec<Value> = st
            .acl_policies
            .values()
            .map(|p| Store::acl_policy_json(p, false))
            .collect();
        (st.tables.acl_policies, Ok(Value::Array(list)))
    })
    .await
}

pub(super) async fn read_policy(Path(name): Path<String>, r: Req) -> Response {
    r.blocking(move |st| match st.acl_policies.get(&name) {
        Some(p) => (p.modify_index, Ok(Store::acl_policy_json(p, true))),
        None => (
            st.tables.acl_policies,
            Err(ApiError::new(404, "ACL policy not found")),
        ),
    })
    .await
}

/// `POST/PUT /v1/acl/policy/:name` with `{"Name", "Description", "Rules"}`; answers an empty
/// body with `X-Nomad-Index`.
pub(super) async fn upsert_policy(Path(name): Path<String>, r: Req, bytes: Bytes) -> Answer {
    // The ACL endpoints answer an undecodable body with a 500.
    let body = parse_body(&bytes).map_err(|e| ApiError::new(500, e.message))?;
    const REQ: &str = "ACLPolicy";
    let get = |k| {
        typed_field(&body, REQ, k, GoKind::String)
            .map(|v| v.and_then(Value::as_str).unwrap_or("").to_string())
    };
    let (body_name, description, rules) = (get("Name")?, get("Description")?, get("Rules")?);
    if body_name != name {
        return Err(ApiError::new(
            400,
            "ACL policy name does not match request path",
        ));
    }
    let index = r
        .inner
        .write(|st| st.upsert_acl_policy(&name, &description, &rules))?;
    Ok(write_empty(&r.q, index))
}

pub(super) async fn delete_policy(Path(name): Path<String>, r: Req) -> Response {
    let index = r.inner.write(|st| st.delete_acl_policy(&name));
    write_empty(&r.q, index)
}

pub(super) async fn list_tokens(r: Req) -> Response {
    r.blocking(|st| {
        let list: Vec<Value> = st
            .acl_tokens
            .values()
            .map(|t| Store::acl_token_json(t, false))
            .collect();
        (st.tables.acl_tokens, Ok(Value::Array(list)))
    })
    .await
}

pub(super) async fn read_token(
    Path(accessor): Path<String>,
    r: Req,
    headers: HeaderMap,
) -> Response {
    let secret = token_of(&headers);
    r.blocking(move |st| {
        let found = if accessor == "self" {
            secret.as_deref().and_then(|s| st.token_by_secret(s))
        } else {
            st.acl_tokens.get(&accessor)
        };
        match found {
            Some(t) => (t.modify_index, Ok(Store::acl_token_json(t, true))),
            None => (
                st.tables.acl_tokens,
                Err(ApiError::new(404, "ACL token not found")),
            ),
        }
    })
    .await
}

/// `POST/PUT /v1/acl/token` with `{"Name", "Type", "Policies", "Global"}`: the new token,
/// secret included.
pub(super) async fn create_token(r: Req, bytes: Bytes) -> Answer {
    // The ACL endpoints answer an undecodable body with a 500.
    let body = parse_body(&bytes).map_err(|e| ApiError::new(500, e.message))?;
    const REQ: &str = "ACLToken";
    let fields = (|| {
        let name = typed_field(&body, REQ, "Name", GoKind::String)?
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string();
        let kind = typed_field(&body, REQ, "Type", GoKind::String)?
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string();
        let global = typed_field(&body, REQ, "Global", GoKind::Bool)?
            .and_then(Value::as_bool)
            .unwrap_or(false);
        let policies: Vec<String> = match field(&body, "Policies") {
            None => Vec::new(),
            Some(Value::Array(items)) => items
                .iter()
                .map(|i| {
                    i.as_str().map(String::from).ok_or_else(|| {
                        ApiError::new(500, "json: cannot unmarshal value into Go struct field ACLToken.Policies of type string")
                    })
                })
                .collect::<Result<_, _>>()?,
            Some(_) => {
                return Err(ApiError::new(
                    500,
                    "json: cannot unmarshal value into Go struct field ACLToken.Policies of type []string",
                ));
            }
        };
        Ok::<_, ApiError>((name, kind, policies, global))
    })();
    let (name, kind, policies, global) = fields?;
    if field(&body, "AccessorID")
        .and_then(Value::as_str)
        .is_some_and(|a| !a.is_empty())
    {
        return Err(ApiError::new(
            400,
            "hashistack-twin: updating a token (AccessorID set) is not implemented",
        ));
    }
    let t = r
        .inner
        .write(|st| st.create_acl_token(&name, &kind, policies, global, None))?;
    Ok(r.written(t.modify_index, &Store::acl_token_json(&t, true)))
}

pub(super) async fn delete_token(Path(accessor): Path<String>, r: Req) -> Response {
    let index = r.inner.write(|st| st.delete_acl_token(&accessor));
    write_empty(&r.q, index)
}
