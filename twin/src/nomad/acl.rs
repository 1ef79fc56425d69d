//! Nomad ACL policies: parsing the rules (HCL or JSON) and deciding requests, as Nomad's `acl`
//! package does (SRC acl/policy.go `Parse`, `expandNamespacePolicy`; acl/acl.go `NewACL`,
//! `AllowNsOp`, `findClosestMatchingGlob`).
//!
//! A policy has `namespace "<name or glob>" { policy = "deny|read|write|scale", capabilities =
//! [...] }` blocks and `node`, `agent`, `operator`, `quota`, `plugin` blocks with a `policy`.
//! Several policies on one token are merged: the union of capabilities, except that `deny`
//! wins; the strongest `policy` of a block wins, except that `deny` wins.
//!
//! Variables: a namespace block's `variables { path "<glob>" { capabilities = [...] } }`
//! (`read`, `write`, `list`, `destroy`, `deny`; `read` implies `list`), decided for the closest
//! namespace and then the closest path glob, as Nomad's `AllowVariableOperation` does. The
//! namespace shorthand `policy` grants no variable capability.

use std::collections::{BTreeMap, BTreeSet};

/// A policy document that Nomad would refuse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct PolicyError(String);

/// Capabilities Nomad accepts in a namespace block (SRC acl/policy.go).
const NAMESPACE_CAPABILITIES: &[&str] = &[
    "deny",
    "list-jobs",
    "parse-job",
    "read-job",
    "submit-job",
    "dispatch-job",
    "read-logs",
    "read-fs",
    "alloc-exec",
    "alloc-node-exec",
    "alloc-lifecycle",
    "sentinel-override",
    "csi-register-plugin",
    "csi-write-volume",
    "csi-read-volume",
    "csi-list-volume",
    "csi-mount-volume",
    "list-scaling-policies",
    "read-scaling-policy",
    "read-job-scaling",
    "scale-job",
    "submit-recommendation",
    "host-volume-create",
    "host-volume-register",
    "host-volume-read",
    "host-volume-write",
    "host-volume-delete",
];

/// The capabilities a namespace `policy` stands for (SRC acl/policy.go `expandNamespacePolicy`):
/// `write` is everything `read` is, and more.
fn expand_namespace_policy(policy: &str) -> Vec<&'static str> {
    const READ: &[&str] = &[
        "list-jobs",
        "parse-job",
        "read-job",
        "csi-list-volume",
        "csi-read-volume",
        "read-job-scaling",
        "list-scaling-policies",
        "read-scaling-policy",
        "host-volume-read",
    ];
    const WRITE_MORE: &[&str] = &[
        "scale-job",
        "submit-job",
        "dispatch-job",
        "read-logs",
        "read-fs",
        "alloc-exec",
        "alloc-lifecycle",
        "csi-mount-volume",
        "csi-write-volume",
        "submit-recommendation",
        "host-volume-create",
    ];
    match policy {
        "deny" => vec!["deny"],
        "read" => READ.to_vec(),
        "write" => READ.iter().chain(WRITE_MORE).copied().collect(),
        "scale" => vec![
            "list-scaling-policies",
            "read-scaling-policy",
            "read-job-scaling",
            "scale-job",
        ],
        _ => Vec::new(),
    }
}

/// Capabilities Nomad accepts on a variables path (SRC acl/policy.go `isPathCapabilityValid`).
const VARIABLE_CAPABILITIES: &[&str] = &["write", "read", "list", "destroy", "deny"];

/// A coarse level (`node`, `agent`, `operator`, … blocks).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub enum Level {
    /// No rule.
    #[default]
    None,
    /// `policy = "read"`.
    Read,
    /// `policy = "write"`.
    Write,
    /// `policy = "deny"`: wins over everything.
    Deny,
}

impl Level {
    fn parse(block: &str, policy: &str) -> Result<Level, PolicyError> {
        match policy {
            "deny" => Ok(Level::Deny),
            "read" => Ok(Level::Read),
            "write" => Ok(Level::Write),
            other => Err(PolicyError(format!("Invalid {block} policy: {other:?}"))),
        }
    }

    fn merge(self, other: Level) -> Level {
        self.max(other)
    }

    /// Whether reads are allowed.
    pub fn read(self) -> bool {
        matches!(self, Level::Read | Level::Write)
    }

    /// Whether writes are allowed.
    pub fn write(self) -> bool {
        self == Level::Write
    }
}

/// A parsed (and merged) set of rules.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Rules {
    /// Namespace name or glob → capabilities.
    pub namespaces: BTreeMap<String, BTreeSet<String>>,
    /// `node` block.
    pub node: Level,
    /// `agent` block.
    pub agent: Level,
    /// `operator` block.
    pub operator: Level,
    /// Namespace name or glob → variable path glob → capabilities.
    pub variables: BTreeMap<String, BTreeMap<String, BTreeSet<String>>>,
}

/// What a request's token may do.
#[derive(Debug, Clone, Default)]
pub struct Acl {
    /// A management token: everything.
    pub management: bool,
    /// The merged rules of its policies.
    pub rules: Rules,
}

/// One block of a policy, whichever syntax it came in.
struct RawBlock {
    kind: String,
    label: Option<String>,
    policy: Option<String>,
    capabilities: Vec<String>,
    /// `variables { path "<glob>" { capabilities = [...] } }` of a namespace block; `None`
    /// without a `variables` block.
    variables: Option<Vec<(String, Vec<String>)>>,
}

fn bad(what: &str) -> PolicyError {
    PolicyError(format!("Failed to parse ACL Policy: {what}"))
}

fn hcl_string(e: &hcl::Expression, key: &str) -> Result<String, PolicyError> {
    match e {
        hcl::Expression::String(s) => Ok(s.clone()),
        other => Err(bad(&format!("{key} must be a string, not {other}"))),
    }
}

fn hcl_strings(e: &hcl::Expression) -> Result<Vec<String>, PolicyError> {
    match e {
        hcl::Expression::Array(items) => items
            .iter()
            .map(|i| hcl_string(i, "capabilities"))
            .collect(),
        other => Err(bad(&format!("capabilities must be a list, not {other}"))),
    }
}

fn hcl_blocks(rules: &str) -> Result<Vec<RawBlock>, PolicyError> {
    let body = hcl::parse(rules).map_err(|e| bad(&e.to_string()))?;
    let mut out = Vec::new();
    for block in body.blocks() {
        let mut raw = RawBlock {
            kind: block.identifier().to_string(),
            label: block.labels().first().map(|l| l.as_str().to_string()),
            policy: None,
            capabilities: Vec::new(),
            variables: None,
        };
        for inner in block.body().blocks() {
            if inner.identifier() != "variables" {
                continue;
            }
            let paths = raw.variables.get_or_insert_with(Vec::new);
            for path in inner.body().blocks().filter(|b| b.identifier() == "path") {
                let spec = path
                    .labels()
                    .first()
                    .map(|l| l.as_str().to_string())
                    .unwrap_or_default();
                let mut caps = Vec::new();
                for attr in path.body().attributes() {
                    if attr.key() == "capabilities" {
                        caps.extend(hcl_strings(attr.expr())?);
                    }
                }
                paths.push((spec, caps));
            }
        }
        for attr in block.body().attributes() {
            match attr.key() {
                "policy" => raw.policy = Some(hcl_string(attr.expr(), "policy")?),
                "capabilities" => raw.capabilities.extend(hcl_strings(attr.expr())?),
                _ => {}
            }
        }
        out.push(raw);
    }
    Ok(out)
}

/// HCL's JSON form: `{"namespace": {"<name>": {...}}, "node": {"policy": "read"}}` (a block
/// may also be a list of such objects).
fn json_blocks(rules: &str) -> Result<Vec<RawBlock>, PolicyError> {
    use serde_json::Value;
    let doc: Value = serde_json::from_str(rules).map_err(|e| bad(&e.to_string()))?;
    let top = doc.as_object().ok_or_else(|| bad("not an object"))?;
    let capabilities = |o: &serde_json::Map<String, Value>| match o.get("capabilities") {
        None => Ok(Vec::new()),
        Some(Value::Array(items)) => items
            .iter()
            .map(|i| {
                i.as_str()
                    .map(String::from)
                    .ok_or_else(|| bad("capabilities must hold strings"))
            })
            .collect::<Result<_, _>>(),
        Some(_) => Err(bad("capabilities must be a list")),
    };
    // A block, or a list of blocks, as HCL's JSON form writes repeated blocks.
    let each = |v: &Value| -> Vec<Value> {
        match v {
            Value::Array(a) => a.clone(),
            other => vec![other.clone()],
        }
    };
    // `"variables": {"path": {"<glob>": {"capabilities": [...]}}}`.
    let variables = |v: &Value| -> Result<Vec<(String, Vec<String>)>, PolicyError> {
        let mut paths = Vec::new();
        for block in each(v) {
            let o = block
                .as_object()
                .ok_or_else(|| bad("variables must be an object"))?;
            for labelled in o.get("path").map(each).unwrap_or_default() {
                let labelled = labelled
                    .as_object()
                    .ok_or_else(|| bad("path must be an object"))?;
                for (spec, inner) in labelled {
                    let inner = inner
                        .as_object()
                        .ok_or_else(|| bad("path must be an object"))?;
                    paths.push((spec.clone(), capabilities(inner)?));
                }
            }
        }
        Ok(paths)
    };
    let body = |kind: &str, label: Option<String>, v: &Value| -> Result<RawBlock, PolicyError> {
        let o = v
            .as_object()
            .ok_or_else(|| bad(&format!("{kind} must be an object")))?;
        let policy = match o.get("policy") {
            None => None,
            Some(Value::String(p)) => Some(p.clone()),
            Some(_) => return Err(bad("policy must be a string")),
        };
        Ok(RawBlock {
            kind: kind.to_string(),
            label,
            policy,
            capabilities: capabilities(o)?,
            variables: o.get("variables").map(variables).transpose()?,
        })
    };
    let mut out = Vec::new();
    for (kind, v) in top {
        let items: Vec<&Value> = match v {
            Value::Array(a) => a.iter().collect(),
            other => vec![other],
        };
        for item in items {
            if kind == "namespace" || kind == "host_volume" {
                let labelled = item
                    .as_object()
                    .ok_or_else(|| bad("namespace must be an object"))?;
                for (label, inner) in labelled {
                    out.push(body(kind, Some(label.clone()), inner)?);
                }
            } else {
                out.push(body(kind, None, item)?);
            }
        }
    }
    Ok(out)
}

/// `read` implies `list`; `deny` stands alone (SRC acl/policy.go `expandVariablesCapabilities`).
fn expand_variable_caps(caps: Vec<String>) -> Vec<String> {
    if caps.iter().any(|c| c == "deny") {
        return vec!["deny".to_string()];
    }
    let mut caps = caps;
    if caps.iter().any(|c| c == "read") && !caps.iter().any(|c| c == "list") {
        caps.push("list".to_string());
    }
    caps
}

fn valid_namespace_name(name: &str) -> bool {
    (1..=128).contains(&name.len())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '*')
}

/// Parses policy rules the way Nomad's `acl.Parse` does (HCL, or HCL's JSON form).
pub fn parse(rules: &str) -> Result<Rules, PolicyError> {
    // Nomad's hot path: empty rules are a valid policy that grants nothing.
    if rules.trim().is_empty() {
        return Ok(Rules::default());
    }
    let blocks = if rules.trim_start().starts_with('{') {
        json_blocks(rules)?
    } else {
        hcl_blocks(rules)?
    };
    if blocks.is_empty() {
        return Err(PolicyError(format!("Invalid policy: {rules}")));
    }
    let mut out = Rules::default();
    for block in blocks {
        let kind = block.kind.as_str();
        match kind {
            "namespace" => {
                let name = block.label.unwrap_or_default();
                if !valid_namespace_name(&name) {
                    return Err(PolicyError(format!("Invalid namespace name: {name:?}")));
                }
                let mut caps: BTreeSet<String> = BTreeSet::new();
                for cap in block.capabilities {
                    if !NAMESPACE_CAPABILITIES.contains(&cap.as_str()) {
                        return Err(PolicyError(format!(
                            "Invalid namespace capability '{cap}': namespace {name:?}"
                        )));
                    }
                    caps.insert(cap);
                }
                if let Some(p) = &block.policy {
                    if !matches!(p.as_str(), "deny" | "read" | "write" | "scale") {
                        return Err(PolicyError(format!(
                            "Invalid namespace policy: {p:?} in namespace {name:?}"
                        )));
                    }
                    caps.extend(expand_namespace_policy(p).iter().map(|c| c.to_string()));
                }
                if let Some(paths) = block.variables {
                    if paths.is_empty() {
                        return Err(PolicyError(format!(
                            "Invalid variable policy: no variable paths in namespace {name}"
                        )));
                    }
                    let vars = out.variables.entry(name.clone()).or_default();
                    for (spec, caps) in paths {
                        if spec.is_empty() {
                            return Err(PolicyError(format!(
                                "Invalid missing variable path in namespace {name}"
                            )));
                        }
                        if let Some(cap) = caps
                            .iter()
                            .find(|c| !VARIABLE_CAPABILITIES.contains(&c.as_str()))
                        {
                            return Err(PolicyError(format!(
                                "Invalid variable capability '{cap}' in namespace {name}"
                            )));
                        }
                        vars.entry(spec)
                            .or_default()
                            .extend(expand_variable_caps(caps));
                    }
                }
                out.namespaces.entry(name).or_default().extend(caps);
            }
            "node" | "agent" | "operator" | "quota" | "plugin" => {
                let level = Level::parse(kind, block.policy.as_deref().unwrap_or(""))?;
                match kind {
                    "node" => out.node = out.node.merge(level),
                    "agent" => out.agent = out.agent.merge(level),
                    "operator" => out.operator = out.operator.merge(level),
                    _ => {}
                }
            }
            // Other top-level blocks of newer Nomad (host_volume, node_pool) are accepted and
            // grant nothing the twin checks.
            _ => {}
        }
    }
    Ok(out)
}

impl Rules {
    /// Merges another policy's rules into these.
    pub fn merge(&mut self, other: &Rules) {
        for (ns, caps) in &other.namespaces {
            self.namespaces
                .entry(ns.clone())
                .or_default()
                .extend(caps.iter().cloned());
        }
        self.node = self.node.merge(other.node);
        self.agent = self.agent.merge(other.agent);
        self.operator = self.operator.merge(other.operator);
        for (ns, paths) in &other.variables {
            let mine = self.variables.entry(ns.clone()).or_default();
            for (path, caps) in paths {
                mine.entry(path.clone())
                    .or_default()
                    .extend(caps.iter().cloned());
            }
        }
    }

    /// The capabilities that apply to namespace `ns`: an exact rule, else the closest glob.
    fn namespace_caps(&self, ns: &str) -> Option<&BTreeSet<String>> {
        closest(&self.namespaces, ns)
    }

    /// The capabilities on variable `path` in namespace `ns`: the closest namespace rule with
    /// a `variables` block, then the closest path glob in it.
    fn variable_caps(&self, ns: &str, path: &str) -> Option<&BTreeSet<String>> {
        closest(&self.variables, ns).and_then(|paths| closest(paths, path))
    }
}

/// The rule for `name`: an exact one, else the closest glob (the fewest characters left for
/// the wildcards), as Nomad's `findClosestMatchingGlob`.
fn closest<'a, T>(rules: &'a BTreeMap<String, T>, name: &str) -> Option<&'a T> {
    if let Some(exact) = rules.get(name) {
        return Some(exact);
    }
    rules
        .iter()
        .filter(|(pattern, _)| pattern.contains('*') && glob_match(pattern, name))
        .min_by_key(|(pattern, _)| name.len().saturating_sub(pattern.replace('*', "").len()))
        .map(|(_, v)| v)
}

fn glob_match(pattern: &str, name: &str) -> bool {
    let parts: Vec<&str> = pattern.split('*').collect();
    let (first, last) = (parts[0], parts[parts.len() - 1]);
    if !name.starts_with(first) || name.len() < first.len() + last.len() || !name.ends_with(last) {
        return false;
    }
    let mut rest = &name[first.len()..name.len() - last.len()];
    for part in &parts[1..parts.len() - 1] {
        match rest.find(part) {
            Some(i) => rest = &rest[i + part.len()..],
            None => return false,
        }
    }
    true
}

impl Acl {
    /// A management token's ACL.
    pub fn management() -> Acl {
        Acl {
            management: true,
            rules: Rules::default(),
        }
    }

    /// Whether `cap` is allowed in namespace `ns` (`*`: in any namespace the rules name).
    pub fn allow_ns_op(&self, ns: &str, cap: &str) -> bool {
        if self.management {
            return true;
        }
        if ns == "*" {
            return self
                .rules
                .namespaces
                .values()
                .any(|caps| !caps.contains("deny") && caps.contains(cap));
        }
        self.rules
            .namespace_caps(ns)
            .is_some_and(|caps| !caps.contains("deny") && caps.contains(cap))
    }

    /// Whether any capability is allowed in namespace `ns` (namespace reads and listings).
    pub fn allow_namespace(&self, ns: &str) -> bool {
        self.management
            || self
                .rules
                .namespace_caps(ns)
                .is_some_and(|caps| !caps.contains("deny") && !caps.is_empty())
    }

    /// Whether `cap` (`read`, `write`, `list`, `destroy`) is allowed on variable `path` in
    /// namespace `ns`.
    pub fn allow_variable(&self, ns: &str, path: &str, cap: &str) -> bool {
        self.management
            || self
                .rules
                .variable_caps(ns, path)
                .is_some_and(|caps| !caps.contains("deny") && caps.contains(cap))
    }

    /// `node:read`.
    pub fn allow_node_read(&self) -> bool {
        self.management || self.rules.node.read()
    }

    /// `node:write`.
    pub fn allow_node_write(&self) -> bool {
        self.management || self.rules.node.write()
    }

    /// `agent:read`.
    pub fn allow_agent_read(&self) -> bool {
        self.management || self.rules.agent.read()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn policy_shorthands_expand_and_capabilities_add_up() {
        let r = parse(
            r#"
            namespace "default" {
              policy = "read"
              capabilities = ["submit-job"]
            }
            node { policy = "read" }
            "#,
        )
        .unwrap();
        let acl = Acl {
            management: false,
            rules: r,
        };
        assert!(acl.allow_ns_op("default", "list-jobs"));
        assert!(acl.allow_ns_op("default", "submit-job"));
        assert!(!acl.allow_ns_op("default", "alloc-lifecycle"));
        assert!(!acl.allow_ns_op("prod", "read-job"));
        assert!(acl.allow_node_read() && !acl.allow_node_write());
        assert!(!acl.allow_agent_read());
    }

    #[test]
    fn the_closest_glob_applies_and_deny_wins_after_merging() {
        let mut r = parse(
            "namespace \"*\" { policy = \"write\" }\nnamespace \"prod-*\" { policy = \"read\" }",
        )
        .unwrap();
        let acl = Acl {
            management: false,
            rules: r.clone(),
        };
        assert!(acl.allow_ns_op("default", "submit-job"));
        assert!(!acl.allow_ns_op("prod-eu", "submit-job"));
        assert!(acl.allow_ns_op("prod-eu", "read-job"));
        r.merge(&parse(r#"namespace "default" { capabilities = ["deny"] }"#).unwrap());
        let merged = Acl {
            management: false,
            rules: r,
        };
        assert!(!merged.allow_ns_op("default", "read-job"));
    }

    #[test]
    fn variable_paths_grant_by_closest_glob_and_read_implies_list() {
        let rules = parse(
            r#"
            namespace "default" {
              policy = "write"
              variables {
                path "nomad/jobs/*" { capabilities = ["read"] }
                path "nomad/jobs/secret" { capabilities = ["deny"] }
                path "team/*" { capabilities = ["write", "destroy"] }
              }
            }
            "#,
        )
        .unwrap();
        let acl = Acl {
            management: false,
            rules,
        };
        assert!(acl.allow_variable("default", "nomad/jobs/proxy", "read"));
        assert!(acl.allow_variable("default", "nomad/jobs/proxy", "list"));
        assert!(!acl.allow_variable("default", "nomad/jobs/proxy", "write"));
        assert!(!acl.allow_variable("default", "nomad/jobs/secret", "read"));
        assert!(acl.allow_variable("default", "team/a", "write"));
        assert!(!acl.allow_variable("default", "other", "read"));
        assert!(!acl.allow_variable("prod", "nomad/jobs/proxy", "read"));
        assert!(Acl::management().allow_variable("prod", "x", "write"));
        assert_eq!(
            parse(
                r#"namespace "default" {
                  variables {
                    path "x" { capabilities = ["peek"] }
                  }
                }"#
            )
            .unwrap_err()
            .to_string(),
            "Invalid variable capability 'peek' in namespace default"
        );
        assert!(parse("namespace \"default\" {\n  variables {}\n}").is_err());
        let json = parse(
            r#"{"namespace": {"default": {"variables": {"path": {"nomad/jobs/*": {"capabilities": ["read"]}}}}}}"#,
        )
        .unwrap();
        let acl = Acl {
            management: false,
            rules: json,
        };
        assert!(acl.allow_variable("default", "nomad/jobs/proxy", "list"));
        assert!(!acl.allow_variable("default", "nomad/jobs/proxy", "write"));
    }

    #[test]
    fn rules_nomad_refuses_are_refused_with_its_text() {
        assert_eq!(
            parse(r#"namespace "default" { capabilities = ["launch-rockets"] }"#)
                .unwrap_err()
                .to_string(),
            "Invalid namespace capability 'launch-rockets': namespace \"default\""
        );
        assert!(parse(r#"node { policy = "admin" }"#).is_err());
        assert_eq!(parse(""), Ok(Rules::default()));
        assert!(
            parse("# only a comment").is_err(),
            "no block: Invalid policy"
        );
        assert!(parse("namespace {").is_err());
        let json = parse(
            r#"{"namespace": {"default": {"policy": "write"}}, "agent": {"policy": "read"}}"#,
        )
        .unwrap();
        assert!(json.namespaces["default"].contains("submit-job"));
        assert_eq!(json.agent, Level::Read);
    }
}
