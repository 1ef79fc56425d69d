//! Consul ACLs: policies attached to tokens, checked on every request with Consul's status
//! codes and texts, and list answers filtered the way Consul filters them (DOC
//! security/acl/*.mdx, api-docs/acl/*.mdx; SRC acl/, agent/consul/acl*.go, agent/http.go).
//!
//! Who a request is: `?token`, `X-Consul-Token` or `Authorization: Bearer` (in that order).
//! With ACLs on (`acl_token` configured: the initial management token), a missing token is
//! the anonymous token (no policies unless some are linked to it), an unknown one is 403
//! "ACL not found", and everything else is decided by the token's policies under a default
//! `deny`. With ACLs off everything is allowed, except for restricted tokens added with
//! [`ConsulState::add_restricted_token`](super::ConsulState::add_restricted_token), which
//! are enforced either way.
//!
//! Consul refuses single reads and writes with 403 but FILTERS list reads: a
//! `?recurse`/`?keys` listing drops the keys the token may not read (404 when none is left),
//! catalog, health, session and agent lists drop what it may not read, and the answer carries
//! `X-Consul-Results-Filtered-By-ACLs: true` when something was dropped and the request
//! carried a token. A client that reads "no keys" as "nothing there" is wrong on a real
//! cluster; this lets tests see that.

mod endpoints;
mod filter;
mod requests;
pub mod rules;

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::Next;
use axum::response::Response;

pub(crate) use endpoints::rfc3339_now;
pub(in crate::consul) use endpoints::routes;
use rules::{Authorizer, Global, Need, Resource};

use super::store::acl::ANONYMOUS_ACCESSOR;
use super::{ConsulState, text};

/// What a restricted token may do: prefix rules as in a Consul policy. An empty prefix
/// (`key_prefix "" { … }`) covers everything. A shorthand for tests; a full policy document
/// can be given with [`ConsulState::add_token_with_rules`](super::ConsulState::add_token_with_rules).
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
    /// `node_prefix "" { policy = "write" }`: node registration (a service registration also
    /// needs `service:write`, which this shorthand does not grant).
    pub node_write: bool,
}

impl TokenPolicy {
    /// The policy document this shorthand stands for.
    pub fn rules(&self) -> String {
        let mut out = String::new();
        let mut rule = |kind: &str, name: &str, level: &str| {
            out.push_str(&format!("{kind} {name:?} {{ policy = {level:?} }}\n"));
        };
        for p in &self.key_read {
            rule("key_prefix", p, "read");
        }
        for p in &self.key_write {
            rule("key_prefix", p, "write");
        }
        for p in &self.service_read {
            rule("service_prefix", p, "read");
        }
        for p in &self.node_read {
            rule("node_prefix", p, "read");
        }
        if self.node_write {
            rule("node_prefix", "", "write");
        }
        out
    }
}

/// Who a request is, once its token is resolved.
#[derive(Debug, Clone)]
pub(crate) struct Caller {
    /// The token's AccessorID (the anonymous token's for a request without one).
    pub(crate) accessor: String,
    /// What it may do.
    pub(crate) authz: Arc<Authorizer>,
    /// Whether the request carried a token (Consul reports filtering only then).
    pub(crate) authenticated: bool,
}

impl Caller {
    pub(crate) fn allows(&self, resource: Resource, name: &str, need: Need) -> bool {
        self.authz.allows(resource, name, need)
    }

    /// The 403 Consul answers when `resource:need` on `name` is missing (SRC acl/errors.go
    /// `PermissionDeniedError`).
    pub(crate) fn denied(&self, resource: &str, need: Need, name: Option<&str>) -> Response {
        let anonymous = self.accessor == ANONYMOUS_ACCESSOR;
        let mut msg = if anonymous {
            "Permission denied: anonymous token".to_string()
        } else {
            format!(
                "Permission denied: token with AccessorID '{}'",
                self.accessor
            )
        };
        msg.push_str(&format!(" lacks permission '{resource}:{}'", need.as_str()));
        if let Some(n) = name.filter(|n| !n.is_empty()) {
            msg.push_str(&format!(" on \"{n}\""));
        }
        if anonymous {
            msg.push_str(
                ". The anonymous token is used implicitly when a request does not specify a token.",
            );
        }
        text(StatusCode::FORBIDDEN, &msg)
    }

    /// `Ok` when allowed, else the 403.
    #[allow(clippy::result_large_err)] // the error is the finished HTTP answer
    pub(crate) fn require(
        &self,
        resource: Resource,
        name: &str,
        need: Need,
    ) -> Result<(), Response> {
        if self.allows(resource, name, need) {
            Ok(())
        } else {
            Err(self.denied(resource.as_str(), need, Some(name)))
        }
    }

    /// `Ok` when a global permission is allowed, else the 403.
    #[allow(clippy::result_large_err)] // the error is the finished HTTP answer
    pub(crate) fn require_global(&self, global: Global, need: Need) -> Result<(), Response> {
        if self.authz.allows_global(global, need) {
            Ok(())
        } else {
            Err(self.denied(global.as_str(), need, None))
        }
    }
}

/// Tokens added as library calls, by secret: enforced whether or not ACLs are on.
#[derive(Debug, Default)]
pub(super) struct Restricted(HashMap<String, (String, Arc<Authorizer>)>);

impl Restricted {
    pub(super) fn add(&mut self, secret: &str, authz: Authorizer) {
        self.0.insert(
            secret.to_owned(),
            (uuid::Uuid::new_v4().to_string(), Arc::new(authz)),
        );
    }
}

/// How a request's token resolves.
pub(crate) enum Resolution {
    /// ACLs are off: everything is allowed.
    Open,
    /// ACLs are on and the secret names no token.
    NotFound,
    /// A token (or the anonymous one).
    Caller(Caller),
}

/// Resolves a secret as Consul's ACL resolver does.
pub(crate) fn resolve(st: &ConsulState, secret: Option<&str>) -> Resolution {
    let secret = secret.filter(|s| !s.is_empty());
    if let Some(s) = secret {
        let restricted = st
            .inner
            .restricted
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .0
            .get(s)
            .cloned();
        if let Some((accessor, authz)) = restricted {
            return Resolution::Caller(Caller {
                accessor,
                authz,
                authenticated: true,
            });
        }
    }
    if st.inner.acl_token.is_none() {
        return Resolution::Open;
    }
    st.read(|store| match secret {
        None => {
            let authz = store
                .acl_token(ANONYMOUS_ACCESSOR)
                .map(|t| store.acl_authorizer(&t))
                .unwrap_or_default();
            Resolution::Caller(Caller {
                accessor: ANONYMOUS_ACCESSOR.to_string(),
                authz: Arc::new(authz),
                authenticated: false,
            })
        }
        Some(s) => match store.acl_token_by_secret(s) {
            Some(t) => Resolution::Caller(Caller {
                authz: Arc::new(store.acl_authorizer(&t)),
                accessor: t.accessor_id,
                authenticated: true,
            }),
            None => Resolution::NotFound,
        },
    })
}

/// The token of a request, in Consul's priority order: `?token`, `X-Consul-Token`, `Bearer`.
pub(crate) fn request_token(req: &Request) -> Option<String> {
    if let Some(q) = req.uri().query() {
        for pair in q.split('&') {
            if let Some(v) = pair.strip_prefix("token=") {
                return Some(v.to_string());
            }
        }
    }
    if let Some(v) = req
        .headers()
        .get("X-Consul-Token")
        .and_then(|v| v.to_str().ok())
    {
        return Some(v.to_string());
    }
    req.headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(|v| v.trim().to_string())
}

/// The ACL layer of the Consul routes: resolves the token, hands the caller to the ACL
/// endpoints, refuses what the token may not do and filters what it may not see.
pub(super) async fn layer(State(st): State<ConsulState>, mut req: Request, next: Next) -> Response {
    let caller = match resolve(&st, request_token(&req).as_deref()) {
        Resolution::Open => return next.run(req).await,
        Resolution::NotFound => return text(StatusCode::FORBIDDEN, "ACL not found"),
        Resolution::Caller(c) => c,
    };
    req.extensions_mut().insert(caller.clone());
    requests::enforce(&st, &caller, req, next).await
}
