//! Consul ACL rules: the policy language (HCL or JSON) and the authorizer a token's policies
//! make (SRC acl/policy.go `parseCurrent`, acl/policy_merger.go, acl/policy_authorizer.go).
//!
//! Per resource there are exact rules (`key "a/b"`) and prefix rules (`key_prefix "a/"`); the
//! exact rule wins, else the longest matching prefix, else the default policy (deny). When a
//! token has several policies, rules for the same name merge with `deny` > `write` > `list` >
//! `read` (`takesPrecedenceOver`). `write` grants read and list, `list` grants read (keys
//! only), `deny` denies.

use std::collections::BTreeMap;

use serde_json::Value;

/// An access level a rule grants.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    /// `read`.
    Read,
    /// `list` (key rules only).
    List,
    /// `write`.
    Write,
    /// `deny`.
    Deny,
}

impl Level {
    fn parse(s: &str, list_allowed: bool) -> Option<Level> {
        match s {
            "read" => Some(Level::Read),
            "write" => Some(Level::Write),
            "deny" => Some(Level::Deny),
            "list" if list_allowed => Some(Level::List),
            _ => None,
        }
    }

    /// Consul's `takesPrecedenceOver` order when policies are merged.
    fn rank(self) -> u8 {
        match self {
            Level::Deny => 4,
            Level::Write => 3,
            Level::List => 2,
            Level::Read => 1,
        }
    }

    /// Consul's `enforce`: whether this level grants `need` (`None`: no opinion).
    fn grants(self, need: Need) -> bool {
        match self {
            Level::Write => true,
            Level::List => matches!(need, Need::Read | Need::List),
            Level::Read => need == Need::Read,
            Level::Deny => false,
        }
    }
}

/// An access a request needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Need {
    /// `read`.
    Read,
    /// `list`.
    List,
    /// `write`.
    Write,
}

impl Need {
    /// As Consul writes it in "lacks permission 'key:read'".
    pub fn as_str(self) -> &'static str {
        match self {
            Need::Read => "read",
            Need::List => "list",
            Need::Write => "write",
        }
    }
}

/// A resource kind with named rules.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Resource {
    /// `key` / `key_prefix`.
    Key,
    /// `service` / `service_prefix`.
    Service,
    /// `node` / `node_prefix`.
    Node,
    /// `session` / `session_prefix` (named by node).
    Session,
    /// `agent` / `agent_prefix` (named by node).
    Agent,
    /// `event` / `event_prefix`.
    Event,
    /// `query` / `query_prefix`.
    Query,
}

impl Resource {
    /// As Consul writes it in permission errors.
    pub fn as_str(self) -> &'static str {
        match self {
            Resource::Key => "key",
            Resource::Service => "service",
            Resource::Node => "node",
            Resource::Session => "session",
            Resource::Agent => "agent",
            Resource::Event => "event",
            Resource::Query => "query",
        }
    }

    const ALL: [Resource; 7] = [
        Resource::Key,
        Resource::Service,
        Resource::Node,
        Resource::Session,
        Resource::Agent,
        Resource::Event,
        Resource::Query,
    ];

    /// The Go struct and key field of the rule, for Consul's `%#v` in validation errors.
    fn go_shape(self) -> (&'static str, &'static str, &'static str) {
        match self {
            Resource::Key => (
                "KeyPolicy",
                "Prefix",
                ", Sentinel:acl.Sentinel{Code:\"\", EnforcementLevel:\"\"}",
            ),
            Resource::Service => (
                "ServicePolicy",
                "Name",
                ", Sentinel:acl.Sentinel{Code:\"\", EnforcementLevel:\"\"}, Intentions:\"\"",
            ),
            Resource::Node => (
                "NodePolicy",
                "Name",
                ", Sentinel:acl.Sentinel{Code:\"\", EnforcementLevel:\"\"}",
            ),
            Resource::Session => ("SessionPolicy", "Node", ""),
            Resource::Agent => ("AgentPolicy", "Node", ""),
            Resource::Event => ("EventPolicy", "Event", ""),
            Resource::Query => ("PreparedQueryPolicy", "Prefix", ""),
        }
    }
}

/// A global (unnamed) permission.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Global {
    /// `acl = "…"`.
    Acl,
    /// `operator = "…"`.
    Operator,
    /// `keyring = "…"`.
    Keyring,
    /// `mesh = "…"`.
    Mesh,
    /// `peering = "…"`.
    Peering,
}

impl Global {
    /// As Consul writes it in permission errors.
    pub fn as_str(self) -> &'static str {
        match self {
            Global::Acl => "acl",
            Global::Operator => "operator",
            Global::Keyring => "keyring",
            Global::Mesh => "mesh",
            Global::Peering => "peering",
        }
    }

    const ALL: [Global; 5] = [
        Global::Acl,
        Global::Operator,
        Global::Keyring,
        Global::Mesh,
        Global::Peering,
    ];
}

/// Rules of one resource kind.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Table {
    exact: BTreeMap<String, Level>,
    prefix: BTreeMap<String, Level>,
}

impl Table {
    fn merge(map: &mut BTreeMap<String, Level>, name: &str, level: Level) {
        let slot = map.entry(name.to_string()).or_insert(level);
        if level.rank() > slot.rank() {
            *slot = level;
        }
    }

    /// The rule that applies to `name`: exact, else longest prefix.
    fn lookup(&self, name: &str) -> Option<Level> {
        if let Some(l) = self.exact.get(name) {
            return Some(*l);
        }
        self.prefix
            .iter()
            .filter(|(p, _)| name.starts_with(p.as_str()))
            .max_by_key(|(p, _)| p.len())
            .map(|(_, l)| *l)
    }
}

/// A parsed policy, or several merged: what a token may do.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Authorizer {
    tables: BTreeMap<Resource, Table>,
    globals: BTreeMap<Global, Level>,
}

/// A policy document Consul refuses, with Consul's message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct RulesError(pub String);

impl Authorizer {
    /// Parses a rules document, HCL or JSON, as `acl.NewPolicyFromSource` does.
    pub fn parse(rules: &str) -> Result<Authorizer, RulesError> {
        let mut a = Authorizer::default();
        if rules.trim().is_empty() {
            return Ok(a);
        }
        let items = if rules.trim_start().starts_with('{') {
            let v: Value = serde_json::from_str(rules)
                .map_err(|e| RulesError(format!("Failed to parse ACL rules: {e}")))?;
            json_items(&v)?
        } else {
            hcl::parse(rules).map_err(|e| RulesError(format!("Failed to parse ACL rules: {e}")))?
        };
        for item in items {
            a.add(item)?;
        }
        Ok(a)
    }

    fn add(&mut self, item: Item) -> Result<(), RulesError> {
        let Item { kind, name, policy } = item;
        if let Some(g) = Global::ALL.iter().find(|g| g.as_str() == kind) {
            let level = Level::parse(&policy, false)
                .ok_or_else(|| RulesError(format!("Invalid {kind} policy: {policy:?}")))?;
            let slot = self.globals.entry(*g).or_insert(level);
            if level.rank() > slot.rank() {
                *slot = level;
            }
            return Ok(());
        }
        let (base, prefixed) = match kind.strip_suffix("_prefix") {
            Some(b) => (b, true),
            None => (kind.as_str(), false),
        };
        // hcl.Decode ignores keys the Policy struct does not have.
        let Some(resource) = Resource::ALL.iter().find(|r| r.as_str() == base) else {
            return Ok(());
        };
        let name = name.unwrap_or_default();
        let level = Level::parse(&policy, *resource == Resource::Key).ok_or_else(|| {
            let (ty, field, rest) = resource.go_shape();
            RulesError(format!(
                "Invalid {kind} policy: acl.{ty}{{{field}:{name:?}, Policy:{policy:?}{rest}}}"
            ))
        })?;
        let table = self.tables.entry(*resource).or_default();
        let map = if prefixed {
            &mut table.prefix
        } else {
            &mut table.exact
        };
        Table::merge(map, &name, level);
        Ok(())
    }

    /// Merges another token policy into this one (Consul's policy merger).
    pub fn merge(&mut self, other: &Authorizer) {
        for (r, t) in &other.tables {
            let mine = self.tables.entry(*r).or_default();
            for (n, l) in &t.exact {
                Table::merge(&mut mine.exact, n, *l);
            }
            for (n, l) in &t.prefix {
                Table::merge(&mut mine.prefix, n, *l);
            }
        }
        for (g, l) in &other.globals {
            let slot = self.globals.entry(*g).or_insert(*l);
            if l.rank() > slot.rank() {
                *slot = *l;
            }
        }
    }

    /// Whether `need` on the named resource is allowed (default policy: deny).
    pub fn allows(&self, resource: Resource, name: &str, need: Need) -> bool {
        self.tables
            .get(&resource)
            .and_then(|t| t.lookup(name))
            .is_some_and(|l| l.grants(need))
    }

    /// Whether a global permission is allowed.
    pub fn allows_global(&self, global: Global, need: Need) -> bool {
        self.globals.get(&global).is_some_and(|l| l.grants(need))
    }

    /// `KeyWritePrefix`: write on the prefix itself and no rule under it that withholds write
    /// (SRC acl/policy_authorizer.go).
    pub fn allows_key_write_prefix(&self, prefix: &str) -> bool {
        if !self.allows(Resource::Key, prefix, Need::Write) {
            return false;
        }
        self.tables.get(&Resource::Key).is_none_or(|t| {
            t.exact
                .iter()
                .chain(&t.prefix)
                .filter(|(name, _)| name.starts_with(prefix))
                .all(|(_, l)| *l == Level::Write)
        })
    }
}

/// One rule as written: `kind "name" { policy = "…" }` or `kind = "…"`.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Item {
    kind: String,
    name: Option<String>,
    policy: String,
}

/// The JSON form: `{"key_prefix": {"a/": {"policy": "read"}}, "operator": "read"}` (objects or
/// lists of objects, as HCL's JSON decoder accepts them).
fn json_items(v: &Value) -> Result<Vec<Item>, RulesError> {
    let bad = |what: &str| RulesError(format!("Failed to parse ACL rules: {what}"));
    let Value::Object(top) = v else {
        return Err(bad("the document is not an object"));
    };
    let mut out = Vec::new();
    for (kind, body) in top {
        match body {
            Value::String(p) => out.push(Item {
                kind: kind.clone(),
                name: None,
                policy: p.clone(),
            }),
            Value::Object(_) | Value::Array(_) => {
                let blocks: Vec<&serde_json::Map<String, Value>> = match body {
                    Value::Object(m) => vec![m],
                    Value::Array(list) => list.iter().filter_map(Value::as_object).collect(),
                    _ => Vec::new(),
                };
                for block in blocks {
                    for (name, rule) in block {
                        let policy = rule
                            .get("policy")
                            .and_then(Value::as_str)
                            .ok_or_else(|| bad(&format!("{kind} {name:?} has no policy")))?;
                        out.push(Item {
                            kind: kind.clone(),
                            name: Some(name.clone()),
                            policy: policy.to_string(),
                        });
                    }
                }
            }
            _ => return Err(bad(&format!("{kind} has an unexpected type"))),
        }
    }
    Ok(out)
}

/// The subset of HCL 1 Consul policies are written in: `ident = "string"`, blocks
/// `ident "label" { … }` (also `ident "label" = { … }` and `ident { "label" { … } }`), `#`,
/// `//` and `/* */` comments.
mod hcl {
    use super::Item;

    #[derive(Debug, Clone, PartialEq)]
    enum Tok {
        Ident(String),
        Str(String),
        Open,
        Close,
        Eq,
        Comma,
    }

    fn lex(src: &str) -> Result<Vec<Tok>, String> {
        let mut out = Vec::new();
        let mut it = src.chars().peekable();
        while let Some(&c) = it.peek() {
            match c {
                c if c.is_whitespace() => {
                    it.next();
                }
                '#' => {
                    for c in it.by_ref() {
                        if c == '\n' {
                            break;
                        }
                    }
                }
                '/' => {
                    it.next();
                    match it.next() {
                        Some('/') => {
                            for c in it.by_ref() {
                                if c == '\n' {
                                    break;
                                }
                            }
                        }
                        Some('*') => {
                            let mut prev = ' ';
                            loop {
                                match it.next() {
                                    Some('/') if prev == '*' => break,
                                    Some(c) => prev = c,
                                    None => return Err("unterminated comment".into()),
                                }
                            }
                        }
                        _ => return Err("unexpected '/'".into()),
                    }
                }
                '{' => {
                    it.next();
                    out.push(Tok::Open);
                }
                '}' => {
                    it.next();
                    out.push(Tok::Close);
                }
                '=' => {
                    it.next();
                    out.push(Tok::Eq);
                }
                ',' => {
                    it.next();
                    out.push(Tok::Comma);
                }
                '"' => {
                    it.next();
                    let mut s = String::new();
                    loop {
                        match it.next() {
                            Some('"') => break,
                            Some('\\') => match it.next() {
                                Some('n') => s.push('\n'),
                                Some('t') => s.push('\t'),
                                Some(c) => s.push(c),
                                None => return Err("unterminated string".into()),
                            },
                            Some('\n') | None => return Err("unterminated string".into()),
                            Some(c) => s.push(c),
                        }
                    }
                    out.push(Tok::Str(s));
                }
                c if c.is_ascii_alphabetic() || c == '_' => {
                    let mut s = String::new();
                    while let Some(&c) = it.peek() {
                        if c.is_ascii_alphanumeric() || c == '_' || c == '-' || c == '.' {
                            s.push(c);
                            it.next();
                        } else {
                            break;
                        }
                    }
                    out.push(Tok::Ident(s));
                }
                other => return Err(format!("illegal char {other:?}")),
            }
        }
        Ok(out)
    }

    struct Parser {
        toks: Vec<Tok>,
        pos: usize,
    }

    impl Parser {
        fn peek(&self) -> Option<&Tok> {
            self.toks.get(self.pos)
        }

        fn next(&mut self) -> Option<Tok> {
            let t = self.toks.get(self.pos).cloned();
            self.pos += 1;
            t
        }

        /// `{ policy = "…" intentions = "…" }`: the body of one rule.
        fn rule_body(&mut self) -> Result<Option<String>, String> {
            let mut policy = None;
            loop {
                match self.next() {
                    Some(Tok::Close) => return Ok(policy),
                    Some(Tok::Comma) => {}
                    Some(Tok::Ident(k)) | Some(Tok::Str(k)) => {
                        if self.next() != Some(Tok::Eq) {
                            return Err(format!("expected '=' after {k:?}"));
                        }
                        match self.next() {
                            Some(Tok::Str(v)) => {
                                if k == "policy" {
                                    policy = Some(v);
                                }
                            }
                            Some(Tok::Open) => self.skip_object()?,
                            other => return Err(format!("unexpected {other:?} in a rule")),
                        }
                    }
                    other => return Err(format!("unexpected {other:?} in a rule")),
                }
            }
        }

        fn skip_object(&mut self) -> Result<(), String> {
            let mut depth = 1;
            while depth > 0 {
                match self.next() {
                    Some(Tok::Open) => depth += 1,
                    Some(Tok::Close) => depth -= 1,
                    Some(_) => {}
                    None => return Err("unterminated object".into()),
                }
            }
            Ok(())
        }

        fn labelled_rule(
            &mut self,
            kind: &str,
            name: String,
            out: &mut Vec<Item>,
        ) -> Result<(), String> {
            if self.peek() == Some(&Tok::Eq) {
                self.next();
            }
            if self.next() != Some(Tok::Open) {
                return Err(format!("expected '{{' after {kind} {name:?}"));
            }
            let policy = self.rule_body()?.unwrap_or_default();
            out.push(Item {
                kind: kind.to_string(),
                name: Some(name),
                policy,
            });
            Ok(())
        }
    }

    pub(super) fn parse(src: &str) -> Result<Vec<Item>, String> {
        let mut p = Parser {
            toks: lex(src)?,
            pos: 0,
        };
        let mut out = Vec::new();
        while let Some(tok) = p.next() {
            let kind = match tok {
                Tok::Ident(k) | Tok::Str(k) => k,
                Tok::Comma => continue,
                other => return Err(format!("unexpected {other:?}")),
            };
            match p.next() {
                Some(Tok::Eq) => match p.next() {
                    Some(Tok::Str(v)) => out.push(Item {
                        kind,
                        name: None,
                        policy: v,
                    }),
                    Some(Tok::Open) => nested(&mut p, &kind, &mut out)?,
                    other => return Err(format!("unexpected {other:?} after {kind} =")),
                },
                Some(Tok::Str(name)) => p.labelled_rule(&kind, name, &mut out)?,
                Some(Tok::Open) => nested(&mut p, &kind, &mut out)?,
                other => return Err(format!("unexpected {other:?} after {kind}")),
            }
        }
        Ok(out)
    }

    /// `kind { "name" { … } "other" = { … } }`.
    fn nested(p: &mut Parser, kind: &str, out: &mut Vec<Item>) -> Result<(), String> {
        loop {
            match p.next() {
                Some(Tok::Close) => return Ok(()),
                Some(Tok::Comma) => {}
                Some(Tok::Str(name)) | Some(Tok::Ident(name)) => {
                    p.labelled_rule(kind, name, out)?
                }
                other => return Err(format!("unexpected {other:?} in {kind}")),
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn exact_rules_beat_prefixes_and_the_longest_prefix_wins() {
        let a = Authorizer::parse(
            r#"
            # the operator's tree
            key_prefix "app/" { policy = "write" }
            key_prefix "app/secret/" { policy = "deny" }
            key "app/secret/visible" { policy = "read" }
            session_prefix "" { policy = "write" }
            operator = "read"
            "#,
        )
        .unwrap();
        assert!(a.allows(Resource::Key, "app/config", Need::Write));
        assert!(!a.allows(Resource::Key, "app/secret/x", Need::Read));
        assert!(a.allows(Resource::Key, "app/secret/visible", Need::Read));
        assert!(!a.allows(Resource::Key, "app/secret/visible", Need::Write));
        assert!(
            !a.allows(Resource::Key, "other", Need::Read),
            "default deny"
        );
        assert!(a.allows(Resource::Session, "any-node", Need::Write));
        assert!(a.allows_global(Global::Operator, Need::Read));
        assert!(!a.allows_global(Global::Acl, Need::Read));
        assert!(!a.allows_key_write_prefix("app/"), "a deny lies under it");
        assert!(a.allows_key_write_prefix("app/config/"));
    }

    #[test]
    fn json_rules_mean_the_same_as_hcl() {
        let hcl = Authorizer::parse(
            r#"key_prefix "p/" { policy = "list" } service "web" { policy = "read" }"#,
        )
        .unwrap();
        let json = Authorizer::parse(
            r#"{"key_prefix": {"p/": {"policy": "list"}}, "service": [{"web": {"policy": "read"}}]}"#,
        )
        .unwrap();
        assert_eq!(hcl, json);
        assert!(
            json.allows(Resource::Key, "p/x", Need::Read),
            "list grants read"
        );
        assert!(!json.allows(Resource::Key, "p/x", Need::Write));
    }

    #[test]
    fn merged_policies_let_deny_win_then_write() {
        let mut a = Authorizer::parse(r#"key_prefix "p/" { policy = "read" }"#).unwrap();
        a.merge(&Authorizer::parse(r#"key_prefix "p/" { policy = "write" }"#).unwrap());
        assert!(a.allows(Resource::Key, "p/x", Need::Write));
        a.merge(&Authorizer::parse(r#"key_prefix "p/" { policy = "deny" }"#).unwrap());
        assert!(!a.allows(Resource::Key, "p/x", Need::Read));
    }

    #[test]
    fn invalid_levels_are_refused_with_consuls_text() {
        let e = Authorizer::parse(r#"key_prefix "p/" { policy = "admin" }"#).unwrap_err();
        assert_eq!(
            e.0,
            "Invalid key_prefix policy: acl.KeyPolicy{Prefix:\"p/\", Policy:\"admin\", Sentinel:acl.Sentinel{Code:\"\", EnforcementLevel:\"\"}}"
        );
        let e = Authorizer::parse(r#"node "n" { policy = "list" }"#).unwrap_err();
        assert!(
            e.0.starts_with("Invalid node policy: acl.NodePolicy{Name:\"n\""),
            "{e}"
        );
        let e = Authorizer::parse(r#"operator = "all""#).unwrap_err();
        assert_eq!(e.0, "Invalid operator policy: \"all\"");
        let e = Authorizer::parse(r#"key_prefix "p/" { policy = "read" "#).unwrap_err();
        assert!(e.0.starts_with("Failed to parse ACL rules: "), "{e}");
    }
}
