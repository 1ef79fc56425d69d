//! ACL policies and tokens as Consul stores them (DOC acl/policies.mdx, acl/tokens.mdx; SRC
//! agent/consul/acl_endpoint.go `PolicySet`/`PolicyDelete`, agent/consul/auth/token_writer.go).
//! Every refusal is a plain RPC error, which the HTTP layer answers with 500.

use std::collections::BTreeMap;
use std::hash::{Hash, Hasher};

use serde::{Deserialize, Serialize};

use super::{Store, StoreError, go_parse_uuid};
use crate::consul::acl::rules::Authorizer;

/// The builtin `global-management` policy's ID (`structs.ACLPolicyGlobalManagementID`).
pub const GLOBAL_MANAGEMENT_ID: &str = "00000000-0000-0000-0000-000000000001";
/// The anonymous token's AccessorID (`acl.AnonymousTokenID`).
pub const ANONYMOUS_ACCESSOR: &str = "00000000-0000-0000-0000-000000000002";
/// The rules of `global-management` (`structs.ACLPolicyGlobalManagement`).
pub const GLOBAL_MANAGEMENT_RULES: &str = r#"
acl = "write"
agent_prefix "" {
	policy = "write"
}
event_prefix "" {
	policy = "write"
}
key_prefix "" {
	policy = "write"
}
keyring = "write"
node_prefix "" {
	policy = "write"
}
operator = "write"
mesh = "write"
peering = "write"
query_prefix "" {
	policy = "write"
}
service_prefix "" {
	policy = "write"
	intentions = "write"
}
session_prefix "" {
	policy = "write"
}"#;

/// `structs.ACLPolicy` as the API shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct AclPolicy {
    /// UUID.
    #[serde(rename = "ID")]
    pub id: String,
    /// Unique name.
    pub name: String,
    /// Free text.
    pub description: String,
    /// The rules document, HCL or JSON, as written.
    pub rules: String,
    /// Datacenters the policy applies in (`null`: all).
    pub datacenters: Option<Vec<String>>,
    /// Opaque content hash.
    pub hash: String,
    /// Creation index.
    pub create_index: u64,
    /// Last modification index.
    pub modify_index: u64,
}

/// A token's link to a policy, by ID or (on write) by name.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PolicyLink {
    /// Policy ID.
    #[serde(rename = "ID", default)]
    pub id: String,
    /// Policy name (filled in on reads).
    #[serde(rename = "Name", default)]
    pub name: String,
}

/// `structs.ACLToken` as the API shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct AclToken {
    /// Public identifier.
    #[serde(rename = "AccessorID")]
    pub accessor_id: String,
    /// The secret a request carries.
    #[serde(rename = "SecretID")]
    pub secret_id: String,
    /// Free text.
    pub description: String,
    /// Linked policies.
    pub policies: Vec<PolicyLink>,
    /// Local to this datacenter.
    pub local: bool,
    /// RFC 3339 creation time.
    pub create_time: String,
    /// Opaque content hash.
    pub hash: String,
    /// Creation index.
    pub create_index: u64,
    /// Last modification index.
    pub modify_index: u64,
}

/// What `PUT /v1/acl/policy` writes.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct PolicyWrite {
    /// ID (updates only).
    #[serde(rename = "ID", default)]
    pub id: String,
    /// Name.
    #[serde(default)]
    pub name: String,
    /// Description.
    #[serde(default)]
    pub description: String,
    /// Rules.
    #[serde(default)]
    pub rules: String,
    /// Datacenters.
    #[serde(default)]
    pub datacenters: Option<Vec<String>>,
}

/// What `PUT /v1/acl/token` writes.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct TokenWrite {
    /// AccessorID (optional on create).
    #[serde(rename = "AccessorID", default)]
    pub accessor_id: String,
    /// SecretID (optional on create).
    #[serde(rename = "SecretID", default)]
    pub secret_id: String,
    /// Description.
    #[serde(default)]
    pub description: String,
    /// Policies by ID or name.
    #[serde(default)]
    pub policies: Vec<PolicyLink>,
    /// Local.
    #[serde(default)]
    pub local: bool,
}

/// The ACL tables.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct AclTables {
    policies: BTreeMap<String, AclPolicy>,
    tokens: BTreeMap<String, AclToken>,
    index: u64,
}

fn hash_of(parts: &[&str]) -> String {
    use base64::Engine;
    let mut h = std::collections::hash_map::DefaultHasher::new();
    parts.hash(&mut h);
    base64::engine::general_purpose::STANDARD.encode(h.finish().to_be_bytes())
}

/// Consul's `acl.IsValidPolicyName`: 1–128 of `[A-Za-z0-9_-]`.
fn valid_name(name: &str) -> bool {
    (1..=128).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// `validateTokenID`: a UUID outside the prefix Consul reserves for its builtin IDs.
fn invalid_token_id(id: &str) -> Option<String> {
    const RESERVED: &str = "00000000-0000-0000-0000-0000000000";
    if id.starts_with(RESERVED) {
        return Some(format!("UUIDs with the prefix {RESERVED:?} are reserved"));
    }
    go_parse_uuid(id)
        .is_err()
        .then(|| "not a valid UUID".to_string())
}

fn internal(msg: String) -> StoreError {
    StoreError::Internal(msg)
}

impl Store {
    /// Creates what a Consul cluster has after bootstrapping with an initial management token:
    /// the `global-management` policy, the anonymous token (no policies) and the management
    /// token itself. Idempotent; no raft index is spent on it.
    pub fn acl_bootstrap(&mut self, management_secret: &str, create_time: &str) {
        let idx = self.index.max(1);
        let acl = &mut self.acl;
        acl.policies
            .entry(GLOBAL_MANAGEMENT_ID.to_string())
            .or_insert_with(|| AclPolicy {
                id: GLOBAL_MANAGEMENT_ID.to_string(),
                name: "global-management".to_string(),
                description: "Builtin Policy that grants unlimited access".to_string(),
                rules: GLOBAL_MANAGEMENT_RULES.to_string(),
                datacenters: None,
                hash: hash_of(&[GLOBAL_MANAGEMENT_RULES]),
                create_index: idx,
                modify_index: idx,
            });
        let token = |accessor: String, secret: &str, description: &str, policies| AclToken {
            accessor_id: accessor,
            secret_id: secret.to_string(),
            description: description.to_string(),
            policies,
            local: false,
            create_time: create_time.to_string(),
            hash: hash_of(&[secret, description]),
            create_index: idx,
            modify_index: idx,
        };
        acl.tokens
            .entry(ANONYMOUS_ACCESSOR.to_string())
            .or_insert_with(|| {
                token(
                    ANONYMOUS_ACCESSOR.to_string(),
                    "anonymous",
                    "Anonymous Token",
                    Vec::new(),
                )
            });
        if !acl
            .tokens
            .values()
            .any(|t| t.secret_id == management_secret)
        {
            let accessor = uuid::Uuid::new_v4().to_string();
            acl.tokens.insert(
                accessor.clone(),
                token(
                    accessor,
                    management_secret,
                    "Initial Management Token",
                    vec![PolicyLink {
                        id: GLOBAL_MANAGEMENT_ID.to_string(),
                        name: String::new(),
                    }],
                ),
            );
        }
    }

    /// The ACL tables' index.
    pub fn acl_index(&self) -> u64 {
        self.acl.index
    }

    /// One policy by ID.
    pub fn acl_policy(&self, id: &str) -> Option<&AclPolicy> {
        self.acl.policies.get(id)
    }

    /// One policy by name.
    pub fn acl_policy_by_name(&self, name: &str) -> Option<&AclPolicy> {
        self.acl.policies.values().find(|p| p.name == name)
    }

    /// Every policy, by ID.
    pub fn acl_policies(&self) -> Vec<&AclPolicy> {
        self.acl.policies.values().collect()
    }

    /// Creates (`id` empty) or updates a policy with `PolicySet`'s validations.
    pub fn acl_policy_set(&mut self, w: PolicyWrite) -> Result<AclPolicy, StoreError> {
        if w.name.is_empty() {
            return Err(internal("Invalid Policy: no Name is set".into()));
        }
        if !valid_name(&w.name) {
            return Err(internal(
                "Invalid Policy: invalid Name. Only alphanumeric characters, '-' and '_' are allowed"
                    .into(),
            ));
        }
        let by_name = self.acl_policy_by_name(&w.name).map(|p| p.id.clone());
        let existing = if w.id.is_empty() {
            if by_name.is_some() {
                return Err(internal(format!(
                    "Invalid Policy: A Policy with Name {:?} already exists",
                    w.name
                )));
            }
            None
        } else {
            if go_parse_uuid(&w.id).is_err() {
                return Err(internal("Policy ID invalid UUID".into()));
            }
            let Some(old) = self.acl.policies.get(&w.id).cloned() else {
                return Err(internal(format!("cannot find policy {}", w.id)));
            };
            if by_name.as_ref().is_some_and(|id| *id != w.id) {
                return Err(internal(format!(
                    "Invalid Policy: A policy with name {:?} already exists",
                    w.name
                )));
            }
            if old.id == GLOBAL_MANAGEMENT_ID && old.rules != w.rules {
                return Err(internal(
                    "Changing the Rules for the builtin global-management policy is not permitted"
                        .into(),
                ));
            }
            Some(old)
        };
        Authorizer::parse(&w.rules).map_err(|e| internal(e.0))?;
        let idx = self.next();
        let policy = AclPolicy {
            id: existing
                .as_ref()
                .map_or_else(|| uuid::Uuid::new_v4().to_string(), |p| p.id.clone()),
            hash: hash_of(&[&w.name, &w.description, &w.rules]),
            name: w.name,
            description: w.description,
            rules: w.rules,
            datacenters: w.datacenters,
            create_index: existing.as_ref().map_or(idx, |p| p.create_index),
            modify_index: idx,
        };
        self.acl.policies.insert(policy.id.clone(), policy.clone());
        self.acl_published(idx);
        Ok(policy)
    }

    /// Publishes an ACL write made at `idx`: the ACL tables' index and the store's.
    fn acl_published(&mut self, idx: u64) {
        self.acl.index = idx;
        self.index = idx;
    }

    /// Deletes a policy; an unknown ID is not an error (`PolicyDelete`).
    pub fn acl_policy_delete(&mut self, id: &str) -> Result<(), StoreError> {
        if id == GLOBAL_MANAGEMENT_ID {
            return Err(internal(
                "Delete operation not permitted on the builtin global-management policy".into(),
            ));
        }
        if self.acl.policies.remove(id).is_some() {
            let idx = self.next();
            self.acl_published(idx);
        }
        Ok(())
    }

    /// One token by AccessorID, its policy links named.
    pub fn acl_token(&self, accessor: &str) -> Option<AclToken> {
        self.acl.tokens.get(accessor).map(|t| self.named(t))
    }

    /// The token a request's secret stands for.
    pub fn acl_token_by_secret(&self, secret: &str) -> Option<AclToken> {
        self.acl
            .tokens
            .values()
            .find(|t| t.secret_id == secret)
            .map(|t| self.named(t))
    }

    /// Every token, by AccessorID.
    pub fn acl_tokens(&self) -> Vec<AclToken> {
        self.acl.tokens.values().map(|t| self.named(t)).collect()
    }

    fn named(&self, t: &AclToken) -> AclToken {
        let mut t = t.clone();
        for link in &mut t.policies {
            if let Some(p) = self.acl.policies.get(&link.id) {
                link.name = p.name.clone();
            }
        }
        t
    }

    /// What a token may do: its existing policies merged.
    pub fn acl_authorizer(&self, token: &AclToken) -> Authorizer {
        let mut a = Authorizer::default();
        for link in &token.policies {
            if let Some(p) = self.acl.policies.get(&link.id)
                && let Ok(parsed) = Authorizer::parse(&p.rules)
            {
                a.merge(&parsed);
            }
        }
        a
    }

    /// Creates (`accessor` empty in the URL) or updates a token, resolving policy links by ID
    /// or name as `TokenSet` does.
    pub fn acl_token_set(
        &mut self,
        w: TokenWrite,
        update: Option<&str>,
        create_time: &str,
    ) -> Result<AclToken, StoreError> {
        // SRC agent/consul/auth/token_writer.go `Create` / `Update`.
        let existing = match update {
            Some(accessor) => {
                if go_parse_uuid(accessor).is_err() {
                    return Err(internal("AccessorID is not a valid UUID".into()));
                }
                let old = self
                    .acl
                    .tokens
                    .get(accessor)
                    .cloned()
                    .ok_or_else(|| internal(format!("Cannot find token {accessor:?}")))?;
                if !w.secret_id.is_empty() && w.secret_id != old.secret_id {
                    return Err(internal(
                        "Changing a token's SecretID is not permitted".into(),
                    ));
                }
                if w.local != old.local {
                    return Err(internal(format!("Cannot toggle local mode of {accessor}")));
                }
                Some(old)
            }
            None => {
                for (field, id) in [("AccessorID", &w.accessor_id), ("SecretID", &w.secret_id)] {
                    if id.is_empty() {
                        continue;
                    }
                    if let Some(why) = invalid_token_id(id) {
                        return Err(internal(format!("Invalid Token: {field} - {why}")));
                    }
                    let in_use = self
                        .acl
                        .tokens
                        .values()
                        .any(|t| t.accessor_id == *id || t.secret_id == *id);
                    if in_use {
                        return Err(internal(format!(
                            "Invalid Token: {field} is already in use"
                        )));
                    }
                }
                None
            }
        };
        let mut links: Vec<PolicyLink> = Vec::new();
        for link in w.policies {
            let id = if link.id.is_empty() {
                self.acl_policy_by_name(&link.name)
                    .map(|p| p.id.clone())
                    .ok_or_else(|| {
                        internal(format!("No such ACL policy with name {:?}", link.name))
                    })?
            } else if self.acl.policies.contains_key(&link.id) {
                link.id
            } else {
                return Err(internal(format!(
                    "No such ACL policy with ID {:?}",
                    link.id
                )));
            };
            if !links.iter().any(|l| l.id == id) {
                links.push(PolicyLink {
                    id,
                    name: String::new(),
                });
            }
        }
        let idx = self.next();
        let token = match existing {
            Some(old) => AclToken {
                description: w.description,
                policies: links,
                hash: hash_of(&[&old.secret_id, &old.accessor_id]),
                modify_index: idx,
                ..old
            },
            None => {
                let pick = |given: String| {
                    if given.is_empty() {
                        uuid::Uuid::new_v4().to_string()
                    } else {
                        given
                    }
                };
                let accessor = pick(w.accessor_id);
                let secret = pick(w.secret_id);
                AclToken {
                    hash: hash_of(&[&secret, &accessor]),
                    accessor_id: accessor,
                    secret_id: secret,
                    description: w.description,
                    policies: links,
                    local: w.local,
                    create_time: create_time.to_string(),
                    create_index: idx,
                    modify_index: idx,
                }
            }
        };
        self.acl
            .tokens
            .insert(token.accessor_id.clone(), token.clone());
        self.acl_published(idx);
        Ok(self.named(&token))
    }

    /// Deletes a token (`TokenDelete`); the anonymous token cannot be deleted.
    pub fn acl_token_delete(&mut self, accessor: &str) -> Result<(), StoreError> {
        if accessor == ANONYMOUS_ACCESSOR {
            return Err(internal(
                "Delete operation not permitted on the anonymous token".into(),
            ));
        }
        if self.acl.tokens.remove(accessor).is_some() {
            let idx = self.next();
            self.acl_published(idx);
        }
        Ok(())
    }
}
