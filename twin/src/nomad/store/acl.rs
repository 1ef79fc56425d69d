//! ACL policies and tokens (SRC nomad/acl_endpoint.go `UpsertPolicies`, `UpsertTokens`,
//! nomad/structs ACLPolicy.Validate / ACLToken.Validate, nomad/acl.go `ResolveToken`).

use super::*;
use crate::nomad::acl::{self, Acl, Rules};

/// A stored policy.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AclPolicyRecord {
    pub name: String,
    pub description: String,
    pub rules: String,
    /// The parsed rules (parsed again from `rules` when the state is restored).
    #[serde(skip)]
    pub parsed: Rules,
    pub create_index: u64,
    pub modify_index: u64,
}

/// A stored token.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AclTokenRecord {
    pub accessor_id: String,
    pub secret_id: String,
    pub name: String,
    /// `client` or `management`.
    pub kind: String,
    pub policies: Vec<String>,
    pub global: bool,
    pub create_time: String,
    pub create_index: u64,
    pub modify_index: u64,
}

fn valid_policy_name(name: &str) -> bool {
    (1..=128).contains(&name.len()) && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
}

/// Nomad's multierror text for validation failures.
fn multierror(errs: &[String]) -> String {
    format!(
        "{} error{} occurred:\n\t* {}\n\n",
        errs.len(),
        if errs.len() == 1 { "" } else { "s" },
        errs.join("\n\t* ")
    )
}

impl Store {
    /// Creates or replaces a policy (`ACL.UpsertPolicies`); refusals are RPC errors (500).
    pub fn upsert_acl_policy(
        &mut self,
        name: &str,
        description: &str,
        rules: &str,
    ) -> Result<u64, ApiError> {
        let mut errs = Vec::new();
        if !valid_policy_name(name) {
            errs.push(format!("invalid name '{name}'"));
        }
        if description.len() > 256 {
            errs.push(format!(
                "description longer than 256 characters: {}",
                description.len()
            ));
        }
        let parsed = match acl::parse(rules) {
            Ok(p) => p,
            Err(e) => {
                errs.push(format!("failed to parse rules: {e}"));
                Rules::default()
            }
        };
        if !errs.is_empty() {
            return Err(ApiError::new(500, multierror(&errs)));
        }
        let index = self.next_index();
        let create_index = self
            .acl_policies
            .get(name)
            .map(|p| p.create_index)
            .unwrap_or(index);
        self.acl_policies.insert(
            name.to_string(),
            AclPolicyRecord {
                name: name.into(),
                description: description.into(),
                rules: rules.into(),
                parsed,
                create_index,
                modify_index: index,
            },
        );
        self.tables.acl_policies = index;
        Ok(index)
    }

    /// Puts back persisted policies (rules parsed again) and tokens.
    pub(super) fn restore_acl(
        &mut self,
        policies: Vec<AclPolicyRecord>,
        tokens: Vec<AclTokenRecord>,
    ) {
        for mut p in policies {
            match acl::parse(&p.rules) {
                Ok(parsed) => {
                    p.parsed = parsed;
                    self.acl_policies.insert(p.name.clone(), p);
                }
                Err(e) => {
                    tracing::error!(policy = %p.name, error = %e, "persisted ACL policy unreadable")
                }
            }
        }
        for t in tokens {
            self.acl_tokens.insert(t.accessor_id.clone(), t);
        }
    }

    /// Deletes a policy; tokens that name it lose what it granted.
    pub fn delete_acl_policy(&mut self, name: &str) -> u64 {
        let index = self.next_index();
        self.acl_policies.remove(name);
        self.tables.acl_policies = index;
        index
    }

    /// Creates a token (`ACL.UpsertTokens` with no accessor). `secret` fixes the secret ID
    /// (tokens seeded from the configuration); otherwise one is generated.
    pub fn create_acl_token(
        &mut self,
        name: &str,
        kind: &str,
        policies: Vec<String>,
        global: bool,
        secret: Option<String>,
    ) -> Result<AclTokenRecord, ApiError> {
        let mut errs = Vec::new();
        if name.len() > 256 {
            errs.push(format!("token name too long: {}", name.len()));
        }
        match kind {
            "client" if policies.is_empty() => errs.push("client token missing policies".into()),
            "management" if !policies.is_empty() => {
                errs.push("management token cannot be associated with policies or roles".into())
            }
            "client" | "management" => {}
            _ => errs.push("token type must be client or management".into()),
        }
        if !errs.is_empty() {
            return Err(ApiError::new(500, multierror(&errs)));
        }
        let index = self.next_index();
        let token = AclTokenRecord {
            accessor_id: uuid::Uuid::new_v4().to_string(),
            secret_id: secret.unwrap_or_else(|| uuid::Uuid::new_v4().to_string()),
            name: name.into(),
            kind: kind.into(),
            policies,
            global,
            create_time: rfc3339(self.clock.now()),
            create_index: index,
            modify_index: index,
        };
        self.acl_tokens
            .insert(token.accessor_id.clone(), token.clone());
        self.tables.acl_tokens = index;
        Ok(token)
    }

    /// Deletes a token by accessor ID.
    pub fn delete_acl_token(&mut self, accessor: &str) -> u64 {
        let index = self.next_index();
        self.acl_tokens.remove(accessor);
        self.tables.acl_tokens = index;
        index
    }

    /// The token with this secret.
    pub fn token_by_secret(&self, secret: &str) -> Option<&AclTokenRecord> {
        self.acl_tokens.values().find(|t| t.secret_id == secret)
    }

    /// What a request may do: no token is the anonymous token (the `anonymous` policy, when one
    /// exists); an unknown secret is refused with 403 `ACL token not found`.
    pub fn resolve_acl(&self, secret: Option<&str>) -> Result<Acl, ApiError> {
        let policies: Vec<String> = match secret.filter(|s| !s.is_empty()) {
            None => vec!["anonymous".into()],
            Some(secret) => {
                let token = self
                    .token_by_secret(secret)
                    .ok_or_else(|| ApiError::new(403, "ACL token not found"))?;
                if token.kind == "management" {
                    return Ok(Acl::management());
                }
                token.policies.clone()
            }
        };
        let mut rules = Rules::default();
        for p in policies.iter().filter_map(|n| self.acl_policies.get(n)) {
            rules.merge(&p.parsed);
        }
        Ok(Acl {
            management: false,
            rules,
        })
    }

    /// A policy as `/v1/acl/policy/:name` answers it.
    pub fn acl_policy_json(p: &AclPolicyRecord, full: bool) -> Value {
        let mut v = json!({
            "Name": p.name, "Description": p.description, "JobACL": null,
            "CreateIndex": p.create_index, "ModifyIndex": p.modify_index,
        });
        if full && let Some(o) = v.as_object_mut() {
            o.insert("Rules".into(), json!(p.rules));
        }
        v
    }

    /// A token as `/v1/acl/token` answers it; list stubs carry no secret.
    pub fn acl_token_json(t: &AclTokenRecord, with_secret: bool) -> Value {
        let mut v = json!({
            "AccessorID": t.accessor_id, "Name": t.name, "Type": t.kind,
            "Policies": if t.policies.is_empty() { Value::Null } else { json!(t.policies) },
            "Roles": null, "Global": t.global, "Hash": "", "CreateTime": t.create_time,
            "ExpirationTime": null, "CreateIndex": t.create_index, "ModifyIndex": t.modify_index,
        });
        if with_secret && let Some(o) = v.as_object_mut() {
            o.insert("SecretID".into(), json!(t.secret_id));
            o.insert("ExpirationTTL".into(), json!(0));
        }
        v
    }
}
