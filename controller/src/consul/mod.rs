//! Consul HTTP client behind the [`ConsulApi`] trait: KV with CAS, blocking reads,
//! transactions (the `check-session` fence of DESIGN §6), sessions and locks, catalog and health.
//!
//! [`ConsulClient`] talks HTTP through [`crate::transport`]. Code that needs only a slice of the
//! API asks for a role trait from [`roles`] (`ConsulKv`, `ConsulTxn`, `ConsulSessions`,
//! `ConsulCatalog`, `ConsulStatus`); every `ConsulApi` is every role. `fake::FakeConsul`
//! (behind `cfg(test)` or the `test-support` feature) is an in-memory implementation on the
//! twin's Consul store for unit tests of the loop. Watches drive either through
//! [`crate::transport::Watch`].

#[cfg(any(test, feature = "test-support"))]
pub mod fake;
pub mod roles;
mod types;

use std::collections::BTreeMap;
use std::future::Future;
use std::time::Duration;

pub(crate) use roles::role_trait;
pub use types::*;

use crate::transport::{self, ApiClient, ClientError, QueryMeta, QueryOptions, Request, Retry};

/// Errors of the Consul client.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A request failed (network, status, decoding).
    #[error(transparent)]
    Request(#[from] transport::RequestFailed),
    /// A transaction was rolled back (HTTP 409): a check failed (the leader fence, a CAS index),
    /// nothing was written.
    #[error("failed to apply transaction: rolled back: {}", describe_txn_errors(.errors))]
    TxnRolledBack {
        /// Per-operation reasons.
        errors: Vec<TxnOpError>,
    },
    /// Renewal of a session that no longer exists (expired or destroyed): leadership is lost.
    #[error("failed to renew session {id}: it no longer exists (expired or destroyed)")]
    SessionNotFound {
        /// The session.
        id: String,
    },
    /// A KV key or prefix that Consul ≥ 1.21 refuses (leading `/`, a `..` segment) or that
    /// would silently address another key. Caught before sending: these keys are built from
    /// `--prefix` (and `usersFrom.consulKey`), so the message names the flag. Terminal.
    #[error("failed to use KV key {key:?}: {reason} (KV keys are built from --prefix)")]
    InvalidKey {
        /// The key as given.
        key: String,
        /// Why it is refused.
        reason: &'static str,
    },
    /// A request body could not be encoded.
    #[error(transparent)]
    Encode(#[from] transport::EncodeFailed),
}

fn describe_txn_errors(errors: &[TxnOpError]) -> String {
    if errors.is_empty() {
        return "no reason given".to_owned();
    }
    errors
        .iter()
        .map(|e| format!("op {}: {}", e.op_index, e.what))
        .collect::<Vec<_>>()
        .join("; ")
}

/// Why Consul would refuse `key`, or address something other than what was meant; `None`
/// when it is fine. An empty key is the root, valid only for listings.
fn key_problem(key: &str) -> Option<&'static str> {
    if key.starts_with('/') {
        // Consul ≥ 1.21 answers 400 "key must not begin with a '/'"; older servers stored
        // `/x` and `x` as two different keys.
        Some("a key must not begin with '/'")
    } else if key.split('/').any(|segment| segment == "..") {
        // Refused as path traversal by Consul ≥ 1.21 (CVE-2025-11392); proxies may resolve it.
        Some("a key must not contain a '..' segment")
    } else if key.trim() != key {
        Some("a key must not begin or end with whitespace")
    } else {
        None
    }
}

fn check_key(key: &str) -> Result<()> {
    match key_problem(key) {
        Some(reason) => Err(Error::InvalidKey {
            key: key.to_owned(),
            reason,
        }),
        None => Ok(()),
    }
}

/// Checks an operator KV prefix (`--prefix`) before anything is read or written under it:
/// non-empty, no leading or trailing `/`, no `..` segment, no empty segment, no surrounding
/// whitespace. Call it when parsing flags so a bad prefix fails at startup, not on first use.
pub fn validate_kv_prefix(prefix: &str) -> Result<()> {
    let reason = if prefix.is_empty() {
        Some("the prefix must not be empty")
    } else if let Some(reason) = key_problem(prefix) {
        Some(reason)
    } else if prefix.ends_with('/') {
        Some("the prefix must not end with '/' (keys are <prefix>/config, <prefix>/status)")
    } else if prefix.contains("//") {
        Some("the prefix must not contain an empty segment ('//')")
    } else {
        None
    };
    match reason {
        Some(reason) => Err(Error::InvalidKey {
            key: prefix.to_owned(),
            reason,
        }),
        None => Ok(()),
    }
}

/// Result alias of this module.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// True when Consul's ACLs refused the call: a 401/403, or a transaction rolled back
    /// because an operation was denied (Consul reports those per operation with 409, see
    /// [`TxnOpError::is_acl_refusal`]). Terminal: the token or its policy must change.
    pub fn is_forbidden(&self) -> bool {
        self.transport_forbidden() || self.acl_rollback()
    }

    /// True when a transaction's check failed: another writer or a lost lock. A rollback for a
    /// missing permission is no conflict (re-reading cannot help): it is
    /// [`Error::is_forbidden`].
    pub fn is_conflict(&self) -> bool {
        matches!(self, Error::TxnRolledBack { .. }) && !self.acl_rollback()
    }

    /// A transaction Consul rolled back because its ACLs denied an operation.
    fn acl_rollback(&self) -> bool {
        match self {
            Error::TxnRolledBack { errors } => errors.iter().any(TxnOpError::is_acl_refusal),
            _ => false,
        }
    }
}

/// The Consul calls the operator makes. Reads take [`QueryOptions`] (index 0: answer at once)
/// and return [`QueryMeta`]; drive them with [`crate::transport::Watch`] to watch.
/// CAS and lock failures are `Ok(false)`, as Consul answers them, not errors. The slices of it
/// that callers use are the role traits in [`roles`].
pub trait ConsulApi: Send + Sync {
    /// Reads one key; `None` when absent.
    fn kv_get(
        &self,
        key: &str,
        opts: QueryOptions,
    ) -> impl Future<Output = Result<(Option<KvPair>, QueryMeta)>> + Send;

    /// Reads every key under `prefix` (`?recurse`); empty when none.
    ///
    /// Consul answers a listing with 404 both when nothing is there AND when the token may read
    /// none of it: `KVS.List` drops denied entries (`FilterDirEnt`) instead of answering 403, so
    /// with a mis-scoped `key_prefix` policy an empty result is not proof that the tree is
    /// empty. Only an explicit 403 (e.g. an unknown token) is an error here, never an empty
    /// list. Callers that hold evidence of content (a status, a journal) must treat an empty
    /// listing under their own prefix as suspicious.
    fn kv_list(
        &self,
        prefix: &str,
        opts: QueryOptions,
    ) -> impl Future<Output = Result<(Vec<KvPair>, QueryMeta)>> + Send;

    /// Lists key names under `prefix` (`?keys`), cut after `separator` when given. ACL
    /// filtering as for [`ConsulApi::kv_list`]: denied keys are left out, not refused.
    fn kv_keys(
        &self,
        prefix: &str,
        separator: Option<&str>,
        opts: QueryOptions,
    ) -> impl Future<Output = Result<(Vec<String>, QueryMeta)>> + Send;

    /// Writes a value; with `cas`, only if the key's ModifyIndex equals it (0: only if absent).
    fn kv_put(
        &self,
        key: &str,
        value: &[u8],
        cas: Option<u64>,
    ) -> impl Future<Output = Result<bool>> + Send;

    /// Deletes a key; with `cas` (> 0), only if its ModifyIndex equals it.
    fn kv_delete(&self, key: &str, cas: Option<u64>) -> impl Future<Output = Result<bool>> + Send;

    /// Acquires the lock on `key` for `session`, writing `value`.
    fn kv_acquire(
        &self,
        key: &str,
        value: &[u8],
        session: &str,
    ) -> impl Future<Output = Result<bool>> + Send;

    /// Releases `session`'s lock on `key`, writing `value`.
    fn kv_release(
        &self,
        key: &str,
        value: &[u8],
        session: &str,
    ) -> impl Future<Output = Result<bool>> + Send;

    /// Applies KV operations atomically; [`Error::TxnRolledBack`] when a check fails.
    fn txn(&self, ops: Vec<TxnOp>) -> impl Future<Output = Result<TxnResults>> + Send;

    /// Creates a session and returns its id.
    fn session_create(
        &self,
        request: &SessionRequest,
    ) -> impl Future<Output = Result<String>> + Send {
        self.session_create_bound(request, &[])
    }

    /// Creates a session also bound to these service health checks (`ServiceChecks`, Consul ≥
    /// 1.7) and returns its id. Consul invalidates the session as soon as one of them goes
    /// critical or is deregistered, and refuses the session (500, "Missing check '<id>'
    /// registration" / "Check '<id>' is in critical state") when one is unknown on the
    /// session's node or critical now.
    fn session_create_bound(
        &self,
        request: &SessionRequest,
        service_checks: &[String],
    ) -> impl Future<Output = Result<String>> + Send;

    /// Renews a session and returns the TTL the server now enforces, which may be longer than
    /// asked: schedule the next renewal from it. [`Error::SessionNotFound`] when it is gone.
    fn session_renew(&self, id: &str) -> impl Future<Output = Result<Option<Duration>>> + Send;

    /// Destroys a session (idempotent); its locks are released and lock-delay starts.
    fn session_destroy(&self, id: &str) -> impl Future<Output = Result<()>> + Send;

    /// Reads a session; `None` when it does not exist.
    fn session_info(
        &self,
        id: &str,
        opts: QueryOptions,
    ) -> impl Future<Output = Result<(Option<SessionEntry>, QueryMeta)>> + Send;

    /// Service names and their tags.
    fn catalog_services(
        &self,
        opts: QueryOptions,
    ) -> impl Future<Output = Result<(BTreeMap<String, Vec<String>>, QueryMeta)>> + Send;

    /// Instances of one service, without health filtering.
    fn catalog_service(
        &self,
        name: &str,
        opts: QueryOptions,
    ) -> impl Future<Output = Result<(Vec<CatalogService>, QueryMeta)>> + Send;

    /// Registers a node, service and check in the catalog.
    fn catalog_register(
        &self,
        registration: &CatalogRegistration,
    ) -> impl Future<Output = Result<()>> + Send;

    /// Removes a service instance (or, without `service_id`, the whole node) from the catalog.
    fn catalog_deregister(
        &self,
        node: &str,
        service_id: Option<&str>,
    ) -> impl Future<Output = Result<()>> + Send;

    /// Instances of a service with their checks; `passing_only` keeps those whose every check
    /// passes.
    fn health_service(
        &self,
        name: &str,
        passing_only: bool,
        opts: QueryOptions,
    ) -> impl Future<Output = Result<(Vec<ServiceEntry>, QueryMeta)>> + Send;

    /// The Raft leader's address, `""` when there is none.
    fn status_leader(&self) -> impl Future<Output = Result<String>> + Send;

    /// The local agent's checks by check id (`GET /v1/agent/checks`), those registered
    /// through it (by Nomad, for a job's `provider = "consul"` services). Consul filters out
    /// the checks the token may not read (`service:read` on the service, `node:read` for node
    /// checks) instead of refusing.
    fn agent_checks(&self) -> impl Future<Output = Result<BTreeMap<String, HealthCheck>>> + Send;
}

transport::impl_client_error!(Error, transport::Api::Consul);

/// The HTTP implementation of [`ConsulApi`]: the shared [`ApiClient`] with this module's
/// errors. Build it with `ConsulClient::new(&config)` (see
/// [`transport::ClientConfig::consul_from_env`]).
pub type ConsulClient = ApiClient<Error>;

impl ConsulClient {
    /// `PUT /v1/kv/:key?acquire=` or `?release=`: `verb` is the query parameter.
    async fn lock(&self, verb: &str, key: &str, value: &[u8], session: &str) -> Result<bool> {
        check_key(key)?;
        let request = Request::put("/v1/kv")
            .key(key)
            .query(verb, session)
            .bytes(value.to_vec());
        self.write_bool(|| format!("{verb} lock {key}"), request)
            .await
    }

    /// `PUT path` with `body` (`what`, for an encoding failure) as JSON, failing as step `op`;
    /// Consul's answer (`true`) adds nothing.
    async fn put_json(
        &self,
        op: impl Fn() -> String,
        path: &str,
        what: &'static str,
        body: &impl serde::Serialize,
    ) -> Result<()> {
        let request = Self::encode(what, Request::put(path), body)?;
        self.send(op, request).await.map(|_| ())
    }

    async fn write_bool(&self, op: impl Fn() -> String, request: Request) -> Result<bool> {
        self.json::<bool>(op, request).await.map(|(v, _)| v)
    }

    /// `GET /v1/agent/self`: the agent's datacenter, node and version.
    pub async fn agent_self(&self) -> Result<AgentSelf> {
        self.json(
            || "read agent self".to_owned(),
            Request::get("/v1/agent/self"),
        )
        .await
        .map(|(v, _)| v)
    }
}

impl ConsulApi for ConsulClient {
    async fn kv_get(&self, key: &str, opts: QueryOptions) -> Result<(Option<KvPair>, QueryMeta)> {
        check_key(key)?;
        let request = Request::get("/v1/kv").key(key).blocking(opts);
        let (pairs, meta): (Option<Vec<KvPair>>, _) = self
            .optional(|| format!("read KV key {key}"), request)
            .await?;
        let pair = pairs.unwrap_or_default().into_iter().find(|p| p.key == key);
        Ok((pair, meta))
    }

    async fn kv_list(&self, prefix: &str, opts: QueryOptions) -> Result<(Vec<KvPair>, QueryMeta)> {
        check_key(prefix)?;
        let request = Request::get("/v1/kv")
            .key(prefix)
            .flag("recurse")
            .blocking(opts);
        let (pairs, meta) = self
            .optional(|| format!("list KV prefix {prefix}"), request)
            .await?;
        Ok((pairs.unwrap_or_default(), meta))
    }

    async fn kv_keys(
        &self,
        prefix: &str,
        separator: Option<&str>,
        opts: QueryOptions,
    ) -> Result<(Vec<String>, QueryMeta)> {
        check_key(prefix)?;
        let mut request = Request::get("/v1/kv")
            .key(prefix)
            .flag("keys")
            .blocking(opts);
        if let Some(sep) = separator {
            request = request.query("separator", sep);
        }
        let (keys, meta) = self
            .optional(|| format!("list KV keys under {prefix}"), request)
            .await?;
        Ok((keys.unwrap_or_default(), meta))
    }

    async fn kv_put(&self, key: &str, value: &[u8], cas: Option<u64>) -> Result<bool> {
        check_key(key)?;
        let mut request = Request::put("/v1/kv").key(key).bytes(value.to_vec());
        if let Some(index) = cas {
            request = request.query("cas", index);
        }
        self.write_bool(|| format!("write KV key {key}"), request)
            .await
    }

    async fn kv_delete(&self, key: &str, cas: Option<u64>) -> Result<bool> {
        check_key(key)?;
        let mut request = Request::delete("/v1/kv").key(key);
        if let Some(index) = cas {
            request = request.query("cas", index);
        }
        self.write_bool(|| format!("delete KV key {key}"), request)
            .await
    }

    async fn kv_acquire(&self, key: &str, value: &[u8], session: &str) -> Result<bool> {
        self.lock("acquire", key, value, session).await
    }

    async fn kv_release(&self, key: &str, value: &[u8], session: &str) -> Result<bool> {
        self.lock("release", key, value, session).await
    }

    async fn txn(&self, ops: Vec<TxnOp>) -> Result<TxnResults> {
        for op in &ops {
            check_key(op.key())?;
        }
        let op = || format!("apply a transaction of {} operations", ops.len());
        let request = Self::encode("transaction", Request::put("/v1/txn"), &ops)?.accept(&[409]);
        let (body, response): (TxnResponse, _) = self.json(op, request).await?;
        if response.status == 409 || !body.errors.is_empty() {
            return Err(Error::TxnRolledBack {
                errors: body.errors,
            });
        }
        Ok(TxnResults {
            results: body.results.into_iter().filter_map(|r| r.kv).collect(),
        })
    }

    async fn session_create_bound(
        &self,
        request: &SessionRequest,
        service_checks: &[String],
    ) -> Result<String> {
        let body = SessionCreateBody {
            request,
            service_checks: service_checks
                .iter()
                .map(|id| ServiceCheckRef { id })
                .collect(),
        };
        // A repeated create would leave an orphan session holding nothing; retry only when the
        // first attempt certainly never arrived.
        let http = Self::encode("session request", Request::put("/v1/session/create"), &body)?
            .retry(Retry::UnsentOnly);
        let (created, _): (SessionCreated, _) = self
            .json(|| format!("create session {:?}", request.name), http)
            .await?;
        Ok(created.id)
    }

    async fn session_renew(&self, id: &str) -> Result<Option<Duration>> {
        let request = Request::put("/v1/session/renew").key(id);
        let result = self
            .json::<Vec<SessionEntry>>(|| format!("renew session {id}"), request)
            .await;
        match result {
            Ok((entries, _)) => match entries.into_iter().next() {
                Some(entry) => Ok(entry.ttl()),
                None => Err(Error::SessionNotFound { id: id.to_owned() }),
            },
            Err(e) if e.status() == Some(404) => Err(Error::SessionNotFound { id: id.to_owned() }),
            Err(e) => Err(e),
        }
    }

    async fn session_destroy(&self, id: &str) -> Result<()> {
        let request = Request::put("/v1/session/destroy").key(id);
        self.send(|| format!("destroy session {id}"), request)
            .await
            .map(|_| ())
    }

    async fn session_info(
        &self,
        id: &str,
        opts: QueryOptions,
    ) -> Result<(Option<SessionEntry>, QueryMeta)> {
        let request = Request::get("/v1/session/info").key(id).blocking(opts);
        let (entries, meta): (Vec<SessionEntry>, _) =
            self.read(|| format!("read session {id}"), request).await?;
        Ok((entries.into_iter().next(), meta))
    }

    async fn catalog_services(
        &self,
        opts: QueryOptions,
    ) -> Result<(BTreeMap<String, Vec<String>>, QueryMeta)> {
        let request = Request::get("/v1/catalog/services").blocking(opts);
        self.read(|| "list catalog services".to_owned(), request)
            .await
    }

    async fn catalog_service(
        &self,
        name: &str,
        opts: QueryOptions,
    ) -> Result<(Vec<CatalogService>, QueryMeta)> {
        let request = Request::get("/v1/catalog/service").key(name).blocking(opts);
        self.read(|| format!("read catalog service {name}"), request)
            .await
    }

    async fn catalog_register(&self, registration: &CatalogRegistration) -> Result<()> {
        let op = || format!("register node {} in the catalog", registration.node);
        let path = "/v1/catalog/register";
        self.put_json(op, path, "catalog registration", registration)
            .await
    }

    async fn catalog_deregister(&self, node: &str, service_id: Option<&str>) -> Result<()> {
        let mut body = serde_json::Map::new();
        body.insert("Node".into(), node.into());
        if let Some(id) = service_id {
            body.insert("ServiceID".into(), id.into());
        }
        let op = || format!("deregister {} from the catalog", service_id.unwrap_or(node));
        let path = "/v1/catalog/deregister";
        self.put_json(op, path, "catalog deregistration", &body)
            .await
    }

    async fn health_service(
        &self,
        name: &str,
        passing_only: bool,
        opts: QueryOptions,
    ) -> Result<(Vec<ServiceEntry>, QueryMeta)> {
        let mut request = Request::get("/v1/health/service").key(name).blocking(opts);
        if passing_only {
            request = request.flag("passing");
        }
        self.read(|| format!("read health of service {name}"), request)
            .await
    }

    async fn status_leader(&self) -> Result<String> {
        self.raft_leader().await
    }

    async fn agent_checks(&self) -> Result<BTreeMap<String, HealthCheck>> {
        let request = Request::get("/v1/agent/checks");
        self.json(|| "list the agent's checks".to_owned(), request)
            .await
            .map(|(v, _)| v)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::panic)] // tests fail loudly
mod tests;
