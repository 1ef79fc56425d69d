//! Traefik's `/api/rawdata`: the routers, middlewares and services it loaded, each with its
//! status (a `disabled` entry answers 404) and error texts.

use serde_json::Value;

use crate::proxy::probe::{Error, Result};

/// Kind of a `/api/rawdata` entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntryKind {
    /// An HTTP router.
    Router,
    /// An HTTP middleware.
    Middleware,
    /// An HTTP service.
    Service,
}

impl EntryKind {
    /// Lower-case name for messages.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            EntryKind::Router => "router",
            EntryKind::Middleware => "middleware",
            EntryKind::Service => "service",
        }
    }
}

/// Traefik's verdict on one entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntryStatus {
    /// `enabled`.
    Enabled,
    /// `warning` (works, with a complaint).
    Warning,
    /// `disabled`: Traefik refused it (unknown middleware, bad value) and it answers 404.
    Disabled,
}

/// One router, middleware or service from `/api/rawdata`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawEntry {
    /// Full name, `<name>@<provider>`.
    pub name: String,
    /// What it is.
    pub kind: EntryKind,
    /// Traefik's status.
    pub status: EntryStatus,
    /// Traefik's error texts (`error: [...]`).
    pub errors: Vec<String>,
    /// For routers: the middlewares it uses, as qualified names (`name@provider`).
    pub middlewares: Vec<String>,
}

/// Parses the body of `GET /api/rawdata` (HTTP routers, middlewares and services).
///
/// # Errors
/// [`Error::Parse`] when the body is not a JSON object.
pub fn parse_rawdata(body: &[u8]) -> Result<Vec<RawEntry>> {
    let doc: Value = serde_json::from_slice(body).map_err(Error::Parse)?;
    let mut entries = Vec::new();
    for (section, kind) in [
        ("routers", EntryKind::Router),
        ("middlewares", EntryKind::Middleware),
        ("services", EntryKind::Service),
    ] {
        let Some(map) = doc.get(section).and_then(Value::as_object) else {
            continue;
        };
        for (name, entry) in map {
            let status = match entry.get("status").and_then(Value::as_str) {
                Some("disabled") => EntryStatus::Disabled,
                Some("warning") => EntryStatus::Warning,
                _ => EntryStatus::Enabled,
            };
            let errors = strings(entry.get("error"));
            // Router middleware names without `@` live in the router's own provider.
            let provider = name.rsplit_once('@').map(|(_, p)| p);
            let middlewares = strings(entry.get("middlewares"))
                .into_iter()
                .map(|m| match (m.contains('@'), provider) {
                    (false, Some(p)) => format!("{m}@{p}"),
                    _ => m,
                })
                .collect();
            entries.push(RawEntry {
                name: name.clone(),
                kind,
                status,
                errors,
                middlewares,
            });
        }
    }
    Ok(entries)
}

fn strings(v: Option<&Value>) -> Vec<String> {
    match v {
        Some(Value::Array(items)) => items
            .iter()
            .filter_map(Value::as_str)
            .map(str::to_owned)
            .collect(),
        Some(Value::String(s)) => vec![s.clone()],
        _ => Vec::new(),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::panic)] // tests fail loudly
mod tests {
    use super::*;

    /// Shaped like Traefik 3.7's answer after an invalid CIDR was written to the KV tree
    /// (TRAEFIK.md §5 and Consul KV note D): the middleware and the router using it are disabled.
    const RAWDATA: &str = r#"{
      "routers": {
        "demo@consulcatalog": {
          "entryPoints": ["web"], "middlewares": ["allow@consul", "hdrs"], "service": "demo",
          "rule": "Host(`demo.localhost`)", "priority": 27, "observability": {},
          "status": "disabled",
          "error": ["cannot parse CIDRs [10.0.0.300/8]: invalid CIDR address: 10.0.0.300/8"],
          "using": ["web"]
        },
        "dashboard@internal": {
          "entryPoints": ["traefik"], "service": "dashboard@internal",
          "rule": "PathPrefix(`/`)", "priority": 1, "status": "enabled", "using": ["traefik"]
        }
      },
      "middlewares": {
        "allow@consul": {
          "ipAllowList": {"sourceRange": ["10.0.0.300/8"]},
          "status": "disabled",
          "error": ["cannot parse CIDRs [10.0.0.300/8]: invalid CIDR address: 10.0.0.300/8"],
          "usedBy": ["demo@consulcatalog"]
        },
        "security-headers@consul": {
          "headers": {"frameDeny": true}, "status": "enabled", "usedBy": []
        }
      },
      "services": {
        "demo@consulcatalog": {
          "loadBalancer": {"servers": [{"url": "http://127.0.0.1:18082"}], "strategy": "wrr",
                           "passHostHeader": true, "responseForwarding": {}},
          "status": "enabled", "usedBy": ["demo@consulcatalog"],
          "serverStatus": {"http://127.0.0.1:18082": "UP"}
        }
      }
    }"#;

    fn entry<'a>(entries: &'a [RawEntry], name: &str) -> &'a RawEntry {
        entries.iter().find(|e| e.name == name).unwrap()
    }

    #[test]
    fn rawdata_parser_reads_every_router_middleware_and_service() {
        let entries = parse_rawdata(RAWDATA.as_bytes()).unwrap();
        assert_eq!(entries.len(), 5);
        assert_eq!(
            entry(&entries, "demo@consulcatalog").kind,
            EntryKind::Router
        );
        assert_eq!(entry(&entries, "allow@consul").kind, EntryKind::Middleware);
        assert_eq!(
            entries
                .iter()
                .filter(|e| e.kind == EntryKind::Service)
                .count(),
            1
        );
    }

    #[test]
    fn rawdata_parser_keeps_disabled_status_and_error_texts() {
        let entries = parse_rawdata(RAWDATA.as_bytes()).unwrap();
        let mw = entry(&entries, "allow@consul");
        assert_eq!(mw.status, EntryStatus::Disabled);
        assert!(mw.errors[0].contains("cannot parse CIDRs"));
        assert_eq!(
            entry(&entries, "security-headers@consul").status,
            EntryStatus::Enabled
        );
        assert_eq!(
            entry(&entries, "dashboard@internal").errors,
            Vec::<String>::new()
        );
    }

    #[test]
    fn rawdata_parser_qualifies_router_middlewares_with_the_routers_provider() {
        let entries = parse_rawdata(RAWDATA.as_bytes()).unwrap();
        assert_eq!(
            entry(&entries, "demo@consulcatalog").middlewares,
            vec!["allow@consul".to_owned(), "hdrs@consulcatalog".to_owned()]
        );
    }

    #[test]
    fn rawdata_parser_accepts_an_empty_config_and_rejects_non_json() {
        assert!(parse_rawdata(b"{}").unwrap().is_empty());
        assert!(matches!(parse_rawdata(b"<html>"), Err(Error::Parse(_))));
    }
}
