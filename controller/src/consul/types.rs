//! Wire types of the Consul HTTP API (CONSUL.md), named and shaped as the API sends them.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::transport::{go_duration, parse_go_duration};

/// One KV entry. `value` holds the decoded bytes (the API sends base64; `null` for an empty
/// value). `Debug` shows the value's length and a short digest only: values can be basic-auth
/// hashes or TLS keys.
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct KvPair {
    /// The key.
    pub key: String,
    /// Index of the write that created the key.
    #[serde(default)]
    pub create_index: u64,
    /// Index of the last write; the `cas` value for the next write.
    #[serde(default)]
    pub modify_index: u64,
    /// How many times the key was acquired by a session.
    #[serde(default)]
    pub lock_index: u64,
    /// Opaque flags.
    #[serde(default)]
    pub flags: u64,
    /// The value.
    #[serde(default, with = "base64_bytes")]
    pub value: Vec<u8>,
    /// The session holding the lock, if any.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "empty_string_as_none"
    )]
    pub session: Option<String>,
}

impl fmt::Debug for KvPair {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KvPair")
            .field("key", &self.key)
            .field("create_index", &self.create_index)
            .field("modify_index", &self.modify_index)
            .field("lock_index", &self.lock_index)
            .field("flags", &self.flags)
            .field("value", &Redacted(&self.value))
            .field("session", &self.session)
            .finish()
    }
}

/// A KV value in `Debug` output: its length and the first 6 bytes of its SHA-256, enough to
/// tell two values apart in a failed assertion, never the content.
pub struct Redacted<'a>(pub &'a [u8]);

impl fmt::Debug for Redacted<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use sha2::{Digest, Sha256};
        let digest = Sha256::digest(self.0);
        write!(f, "<{} bytes, sha256:", self.0.len())?;
        for b in &digest[..6] {
            write!(f, "{b:02x}")?;
        }
        f.write_str(">")
    }
}

/// Base64 in JSON, bytes in Rust.
pub(crate) mod base64_bytes {
    use super::*;

    /// Serializes bytes as a base64 string.
    pub fn serialize<S: Serializer>(value: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&BASE64.encode(value))
    }

    /// Deserializes a base64 string (or `null`) into bytes.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let text: Option<String> = Option::deserialize(d)?;
        match text {
            None => Ok(Vec::new()),
            Some(t) => BASE64
                .decode(t.as_bytes())
                .map_err(serde::de::Error::custom),
        }
    }
}

fn empty_string_as_none<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    let s: Option<String> = Option::deserialize(d)?;
    Ok(s.filter(|s| !s.is_empty()))
}

fn null_as_default<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Default + Deserialize<'de>,
{
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

/// What happens to a session's locks when it is invalidated.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SessionBehavior {
    /// Locks are released (the default).
    #[default]
    Release,
    /// Held keys are deleted.
    Delete,
}

/// Body of `PUT /v1/session/create`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SessionRequest {
    /// Human-readable name.
    pub name: String,
    /// TTL (10 s to 24 h); `None` for a session without TTL.
    pub ttl: Option<Duration>,
    /// Lock delay after invalidation; `None` for Consul's default (15 s).
    pub lock_delay: Option<Duration>,
    /// Release or delete held keys on invalidation.
    pub behavior: SessionBehavior,
    /// Node the session belongs to; `None` for the agent's node.
    pub node: Option<String>,
    /// Node health checks bound to the session, sent as `NodeChecks` (the field since Consul
    /// 1.7; the deprecated `Checks` would keep `serfHealth` bound next to the given checks).
    /// `Some(vec![])` binds none, so the session lives by its TTL alone. `None` keeps
    /// Consul's default (`serfHealth`).
    pub checks: Option<Vec<String>>,
}

impl Serialize for SessionRequest {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut map = s.serialize_map(None)?;
        if let Some(d) = self.lock_delay {
            map.serialize_entry("LockDelay", &go_duration(d))?;
        }
        map.serialize_entry("Name", &self.name)?;
        if let Some(node) = &self.node {
            map.serialize_entry("Node", node)?;
        }
        if let Some(checks) = &self.checks {
            map.serialize_entry("NodeChecks", checks)?;
        }
        map.serialize_entry("Behavior", &self.behavior)?;
        if let Some(ttl) = self.ttl {
            map.serialize_entry("TTL", &go_duration(ttl))?;
        }
        map.end()
    }
}

/// The body of `PUT /v1/session/create`: the request and the service checks bound to it.
#[derive(Serialize)]
pub(crate) struct SessionCreateBody<'a> {
    #[serde(flatten)]
    pub(crate) request: &'a SessionRequest,
    #[serde(rename = "ServiceChecks", skip_serializing_if = "Vec::is_empty")]
    pub(crate) service_checks: Vec<ServiceCheckRef<'a>>,
}

/// `{"ID": …}` in `ServiceChecks` (the namespace is Enterprise's).
#[derive(Serialize)]
pub(crate) struct ServiceCheckRef<'a> {
    #[serde(rename = "ID")]
    pub(crate) id: &'a str,
}

/// `{"ID": …}` answered by session create.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct SessionCreated {
    /// The new session's id.
    #[serde(rename = "ID")]
    pub id: String,
}

/// A session as `/v1/session/info`, `/list`, `/node` and `/renew` return it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct SessionEntry {
    /// Session id.
    #[serde(rename = "ID")]
    pub id: String,
    /// Name.
    #[serde(default)]
    pub name: String,
    /// Node.
    #[serde(default)]
    pub node: String,
    /// Lock delay in nanoseconds (Consul answers an integer here, a string in requests).
    #[serde(default)]
    pub lock_delay: u64,
    /// Behaviour on invalidation.
    #[serde(default)]
    pub behavior: SessionBehavior,
    /// TTL as a Go duration string (`"30s"`), empty without TTL.
    #[serde(default, rename = "TTL")]
    pub ttl: String,
    /// Node checks.
    #[serde(default, deserialize_with = "null_as_default")]
    pub node_checks: Vec<String>,
    /// Service checks.
    #[serde(default)]
    pub service_checks: Option<serde_json::Value>,
    /// Creation index.
    #[serde(default)]
    pub create_index: u64,
    /// Last modification index.
    #[serde(default)]
    pub modify_index: u64,
}

impl SessionEntry {
    /// The TTL the server enforces, which may be longer than the one asked for.
    pub fn ttl(&self) -> Option<Duration> {
        parse_go_duration(&self.ttl).filter(|d| !d.is_zero())
    }
}

/// One operation of a `/v1/txn` transaction (KV operations only; the operator needs no others).
/// `Debug` shows values as length and digest ([`Redacted`]), never their content.
#[derive(Clone, PartialEq, Eq)]
pub enum TxnOp {
    /// Write a value.
    Set {
        /// Key.
        key: String,
        /// Value.
        value: Vec<u8>,
    },
    /// Write only if the key's ModifyIndex equals `index` (0: only if absent).
    Cas {
        /// Key.
        key: String,
        /// Value.
        value: Vec<u8>,
        /// Expected ModifyIndex.
        index: u64,
    },
    /// Read a key; fails the transaction when it is absent.
    Get {
        /// Key.
        key: String,
    },
    /// Read every key under a prefix.
    GetTree {
        /// Prefix.
        key: String,
    },
    /// Delete a key.
    Delete {
        /// Key.
        key: String,
    },
    /// Delete only if ModifyIndex equals `index`.
    DeleteCas {
        /// Key.
        key: String,
        /// Expected ModifyIndex.
        index: u64,
    },
    /// Delete every key under a prefix.
    DeleteTree {
        /// Prefix.
        key: String,
    },
    /// Fail unless ModifyIndex equals `index`.
    CheckIndex {
        /// Key.
        key: String,
        /// Expected ModifyIndex.
        index: u64,
    },
    /// Fail unless the key is locked by `session`: the leader fence (DESIGN §6).
    CheckSession {
        /// Key.
        key: String,
        /// Session that must hold it.
        session: String,
    },
    /// Fail if the key exists.
    CheckNotExists {
        /// Key.
        key: String,
    },
    /// Acquire with a session.
    Lock {
        /// Key.
        key: String,
        /// Value.
        value: Vec<u8>,
        /// Session.
        session: String,
    },
    /// Release a session's lock.
    Unlock {
        /// Key.
        key: String,
        /// Value.
        value: Vec<u8>,
        /// Session.
        session: String,
    },
}

impl fmt::Debug for TxnOp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct(match self {
            TxnOp::Set { .. } => "Set",
            TxnOp::Cas { .. } => "Cas",
            TxnOp::Get { .. } => "Get",
            TxnOp::GetTree { .. } => "GetTree",
            TxnOp::Delete { .. } => "Delete",
            TxnOp::DeleteCas { .. } => "DeleteCas",
            TxnOp::DeleteTree { .. } => "DeleteTree",
            TxnOp::CheckIndex { .. } => "CheckIndex",
            TxnOp::CheckSession { .. } => "CheckSession",
            TxnOp::CheckNotExists { .. } => "CheckNotExists",
            TxnOp::Lock { .. } => "Lock",
            TxnOp::Unlock { .. } => "Unlock",
        });
        d.field("key", &self.key());
        match self {
            TxnOp::Set { value, .. } => d.field("value", &Redacted(value)),
            TxnOp::Cas { value, index, .. } => {
                d.field("value", &Redacted(value)).field("index", index)
            }
            TxnOp::DeleteCas { index, .. } | TxnOp::CheckIndex { index, .. } => {
                d.field("index", index)
            }
            TxnOp::CheckSession { session, .. } => d.field("session", session),
            TxnOp::Lock { value, session, .. } | TxnOp::Unlock { value, session, .. } => {
                d.field("value", &Redacted(value)).field("session", session)
            }
            TxnOp::Get { .. }
            | TxnOp::GetTree { .. }
            | TxnOp::Delete { .. }
            | TxnOp::DeleteTree { .. }
            | TxnOp::CheckNotExists { .. } => &mut d,
        };
        d.finish()
    }
}

impl TxnOp {
    /// The verb sent on the wire.
    pub fn verb(&self) -> &'static str {
        match self {
            TxnOp::Set { .. } => "set",
            TxnOp::Cas { .. } => "cas",
            TxnOp::Get { .. } => "get",
            TxnOp::GetTree { .. } => "get-tree",
            TxnOp::Delete { .. } => "delete",
            TxnOp::DeleteCas { .. } => "delete-cas",
            TxnOp::DeleteTree { .. } => "delete-tree",
            TxnOp::CheckIndex { .. } => "check-index",
            TxnOp::CheckSession { .. } => "check-session",
            TxnOp::CheckNotExists { .. } => "check-not-exists",
            TxnOp::Lock { .. } => "lock",
            TxnOp::Unlock { .. } => "unlock",
        }
    }

    /// The key or prefix the operation touches.
    pub fn key(&self) -> &str {
        match self {
            TxnOp::Set { key, .. }
            | TxnOp::Cas { key, .. }
            | TxnOp::Get { key }
            | TxnOp::GetTree { key }
            | TxnOp::Delete { key }
            | TxnOp::DeleteCas { key, .. }
            | TxnOp::DeleteTree { key }
            | TxnOp::CheckIndex { key, .. }
            | TxnOp::CheckSession { key, .. }
            | TxnOp::CheckNotExists { key }
            | TxnOp::Lock { key, .. }
            | TxnOp::Unlock { key, .. } => key,
        }
    }
}

impl Serialize for TxnOp {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        #[derive(Serialize)]
        #[serde(rename_all = "PascalCase")]
        struct Kv<'a> {
            verb: &'a str,
            key: &'a str,
            #[serde(skip_serializing_if = "Option::is_none")]
            value: Option<String>,
            #[serde(skip_serializing_if = "Option::is_none")]
            index: Option<u64>,
            #[serde(skip_serializing_if = "Option::is_none")]
            session: Option<&'a str>,
        }
        #[derive(Serialize)]
        struct Op<'a> {
            #[serde(rename = "KV")]
            kv: Kv<'a>,
        }
        let (value, index, session) = match self {
            TxnOp::Set { value, .. } => (Some(value), None, None),
            TxnOp::Cas { value, index, .. } => (Some(value), Some(*index), None),
            TxnOp::DeleteCas { index, .. } | TxnOp::CheckIndex { index, .. } => {
                (None, Some(*index), None)
            }
            TxnOp::CheckSession { session, .. } => (None, None, Some(session.as_str())),
            TxnOp::Lock { value, session, .. } | TxnOp::Unlock { value, session, .. } => {
                (Some(value), None, Some(session.as_str()))
            }
            TxnOp::Get { .. }
            | TxnOp::GetTree { .. }
            | TxnOp::Delete { .. }
            | TxnOp::DeleteTree { .. }
            | TxnOp::CheckNotExists { .. } => (None, None, None),
        };
        Op {
            kv: Kv {
                verb: self.verb(),
                key: self.key(),
                value: value.map(|v| BASE64.encode(v)),
                index,
                session,
            },
        }
        .serialize(s)
    }
}

/// Results of an applied transaction: one KV entry per operation that yields one (values only
/// for `get`/`get-tree`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TxnResults {
    /// The entries, in operation order.
    pub results: Vec<KvPair>,
}

/// Why one operation rolled a transaction back.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct TxnOpError {
    /// Index of the failing operation.
    pub op_index: usize,
    /// The server's reason.
    pub what: String,
}

impl TxnOpError {
    /// True when Consul's ACLs refused the operation. `Txn.preCheck`
    /// (agent/consul/txn_endpoint.go) reports a denied operation by the permission error's own
    /// text, and the HTTP layer answers 409 for any operation error, so a refusal arrives as a
    /// rollback, not as a 403. The texts are `acl.ErrPermissionDenied` and
    /// `PermissionDeniedError` ("Permission denied", "Permission denied: token with AccessorID
    /// … lacks permission 'key:write' on …") and `acl.ErrNotFound` ("ACL not found").
    pub fn is_acl_refusal(&self) -> bool {
        self.what.starts_with("Permission denied") || self.what.starts_with("ACL not found")
    }
}

/// The `/v1/txn` answer body (200 and 409 alike).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct TxnResponse {
    #[serde(default, deserialize_with = "null_as_default")]
    pub results: Vec<TxnResult>,
    #[serde(default, deserialize_with = "null_as_default")]
    pub errors: Vec<TxnOpError>,
}

#[derive(Debug, Clone, Deserialize)]
pub(crate) struct TxnResult {
    #[serde(rename = "KV")]
    pub kv: Option<KvPair>,
}

/// One row of `/v1/catalog/service/:name` (node and service flattened).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct CatalogService {
    /// Node name.
    pub node: String,
    /// Node address.
    pub address: String,
    /// Node tagged addresses.
    #[serde(deserialize_with = "null_as_default")]
    pub tagged_addresses: BTreeMap<String, String>,
    /// Node metadata.
    #[serde(deserialize_with = "null_as_default")]
    pub node_meta: BTreeMap<String, String>,
    /// Service instance id.
    #[serde(rename = "ServiceID")]
    pub service_id: String,
    /// Service name.
    pub service_name: String,
    /// Service address; empty means the node's address.
    pub service_address: String,
    /// Service port.
    pub service_port: u16,
    /// Service tags.
    #[serde(deserialize_with = "null_as_default")]
    pub service_tags: Vec<String>,
    /// Service metadata.
    #[serde(deserialize_with = "null_as_default")]
    pub service_meta: BTreeMap<String, String>,
    /// Creation index.
    pub create_index: u64,
    /// Last modification index.
    pub modify_index: u64,
    /// Namespace (Enterprise).
    pub namespace: Option<String>,
}

impl CatalogService {
    /// The address to reach the instance at: the service address, else the node's.
    pub fn effective_address(&self) -> &str {
        if self.service_address.is_empty() {
            &self.address
        } else {
            &self.service_address
        }
    }
}

/// One entry of `/v1/health/service/:name`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ServiceEntry {
    /// The node.
    pub node: HealthNode,
    /// The service instance.
    pub service: AgentService,
    /// Node and service checks.
    #[serde(default, deserialize_with = "null_as_default")]
    pub checks: Vec<HealthCheck>,
}

impl ServiceEntry {
    /// True when every check (node checks included) is passing, Consul's `?passing` rule.
    pub fn is_passing(&self) -> bool {
        self.checks.iter().all(|c| c.status == "passing")
    }
}

/// The node part of a health entry.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct HealthNode {
    /// Node id.
    #[serde(rename = "ID")]
    pub id: String,
    /// Node name.
    pub node: String,
    /// Address.
    pub address: String,
    /// Datacenter.
    pub datacenter: String,
    /// Metadata.
    #[serde(deserialize_with = "null_as_default")]
    pub meta: BTreeMap<String, String>,
}

/// A service instance as the health and agent endpoints show it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct AgentService {
    /// Instance id.
    #[serde(rename = "ID")]
    pub id: String,
    /// Service name.
    pub service: String,
    /// Tags.
    #[serde(deserialize_with = "null_as_default")]
    pub tags: Vec<String>,
    /// Address (empty: the node's).
    pub address: String,
    /// Port.
    pub port: u16,
    /// Metadata.
    #[serde(deserialize_with = "null_as_default")]
    pub meta: BTreeMap<String, String>,
    /// Namespace (Enterprise).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
}

/// A health check.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct HealthCheck {
    /// Node.
    pub node: String,
    /// Check id.
    #[serde(rename = "CheckID")]
    pub check_id: String,
    /// Name.
    pub name: String,
    /// `passing`, `warning` or `critical`.
    pub status: String,
    /// Notes.
    pub notes: String,
    /// Last output.
    pub output: String,
    /// Service instance id (empty for node checks).
    #[serde(rename = "ServiceID")]
    pub service_id: String,
    /// Service name.
    pub service_name: String,
    /// Service tags.
    #[serde(deserialize_with = "null_as_default")]
    pub service_tags: Vec<String>,
}

/// Body of `PUT /v1/catalog/register`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct CatalogRegistration {
    /// Datacenter.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub datacenter: Option<String>,
    /// Node id.
    #[serde(default, rename = "ID", skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// Node name.
    pub node: String,
    /// Node address.
    pub address: String,
    /// Node tagged addresses.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub tagged_addresses: BTreeMap<String, String>,
    /// Node metadata.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub node_meta: BTreeMap<String, String>,
    /// The service to register on the node.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service: Option<ServiceRegistration>,
    /// A check to register.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub check: Option<CheckRegistration>,
    /// Leave the node's own fields untouched.
    #[serde(default)]
    pub skip_node_update: bool,
}

/// The `Service` block of a catalog registration.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ServiceRegistration {
    /// Instance id.
    #[serde(rename = "ID")]
    pub id: String,
    /// Service name.
    pub service: String,
    /// Tags.
    #[serde(default)]
    pub tags: Vec<String>,
    /// Address.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub address: String,
    /// Tagged addresses (`{"lan": {"address": …, "port": …}}`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tagged_addresses: Option<serde_json::Value>,
    /// Metadata.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub meta: BTreeMap<String, String>,
    /// Port.
    #[serde(default)]
    pub port: u16,
    /// Namespace (Enterprise).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
}

/// The `Check` block of a catalog registration.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct CheckRegistration {
    /// Node.
    pub node: String,
    /// Check id.
    #[serde(rename = "CheckID")]
    pub check_id: String,
    /// Name.
    pub name: String,
    /// Notes.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub notes: String,
    /// `passing`, `warning` or `critical`.
    pub status: String,
    /// Service instance the check belongs to.
    #[serde(
        default,
        rename = "ServiceID",
        skip_serializing_if = "String::is_empty"
    )]
    pub service_id: String,
    /// Check definition (`TCP`, `HTTP`, `Interval`, …), passed through.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub definition: Option<serde_json::Value>,
    /// Namespace (Enterprise).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
}

/// `GET /v1/agent/self`, the stable part.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct AgentSelf {
    /// Agent configuration.
    pub config: AgentConfig,
    /// Serf member, passed through.
    #[serde(default)]
    pub member: serde_json::Value,
}

/// `Config` of `/v1/agent/self`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct AgentConfig {
    /// Datacenter.
    pub datacenter: String,
    /// Node name.
    pub node_name: String,
    /// Whether the agent is a server.
    #[serde(default)]
    pub server: bool,
    /// Consul version.
    pub version: String,
}
