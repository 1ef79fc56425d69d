//! The ProxyConfig document: types (serde + schemars), parsing (YAML/JSON) and validation.
//!
//! Two layers, as in ripgrep's raw and resolved arguments:
//!
//! 1. [`parse`] turns bytes into a [`ProxyConfig`]: size, depth and alias limits, strict YAML
//!    booleans, duplicate keys, unknown fields (with the closest known name), wrong types.
//! 2. [`validate`] turns a [`ProxyConfig`] into a [`ValidatedSpec`]: every value checked (CIDRs,
//!    ports, addresses, durations, hostnames, paths) and every contradiction found, with *all*
//!    errors reported at once, each naming its field path and what would be valid. Each
//!    section (`validate/`) resolves its part of the [`model::Model`] the renderers read, so
//!    defaults are applied in exactly one place.
//!
//! [`load`] does both. A document that fails either layer changes nothing that runs.
//!
//! # Decisions
//!
//! - `websecure` with neither certificate files nor ACME is a **warning** for Traefik (it then
//!   serves its self-signed default certificate, fine for a first start and for tests) and
//!   nothing for Caddy (its automatic HTTPS obtains certificates by itself). Warnings are in
//!   [`ValidatedSpec::warnings`] and go to the status; they never block a rollout.
//! - Options only Traefik has (`middlewares.rateLimit`, `dashboard.insecure`) are errors with
//!   `proxy: caddy`, because silently dropping a rate limit or an exposure setting would
//!   surprise the operator more than a refusal.
//! - The newer middlewares (`forwardAuth`, `circuitBreaker`, `retry`, `buffering`,
//!   `compress`, `requiredHeaders`, `ipDenyList`), `policies`, and non-default `logging` and
//!   `entryPoints.transport` are rendered for Traefik only; with `proxy: caddy` each is an error
//!   naming the field and the proxy until Caddy's renderer expresses it. `geoBlock` and `waf`
//!   are errors for both proxies: they need plugins neither stock build has.
//! - Basic-auth users are accepted only by reference (`usersFrom`); an inline `users` field is
//!   an error, because this document lives unencrypted in Consul KV and is echoed in status.

pub mod digest;
mod duration;
mod env;
pub mod model;
mod parse;
mod policy_types;
mod scrub;
pub mod status;
mod types;
mod validate;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

pub use duration::{MAX_GATE_DURATION, format_duration, parse_duration};
pub use env::{EnvError, from_env};
pub use parse::{MAX_DEPTH, MAX_DOCUMENT_BYTES, parse};
pub use scrub::looks_secret;
pub use types::*;
pub use validate::{ListenAddress, ValidatedSpec, validate};
pub use validate::{check_breaker_expression, port_label};

/// One problem with a document: where (`spec.middlewares.ipAllowList.sourceRange[2]`) and what
/// would be valid. An empty path means the document as a whole.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct FieldError {
    /// Dotted field path with `[i]` for list items.
    pub path: String,
    /// What is wrong and what would be valid. Never contains secrets.
    pub message: String,
}

impl FieldError {
    /// A problem at `path`.
    pub fn new(path: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            path: path.into(),
            message: message.into(),
        }
    }
}

impl std::fmt::Display for FieldError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.path.is_empty() {
            f.write_str(&self.message)
        } else {
            write!(f, "{}: {}", self.path, self.message)
        }
    }
}

/// Every validation error of a document (never empty).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{} validation error(s): {}", .0.len(), join(.0))]
pub struct ValidationErrors(pub Vec<FieldError>);

fn join(errors: &[FieldError]) -> String {
    errors
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}

/// Why bytes are not a `ProxyConfig` at all.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    /// Larger than Consul's value limit.
    #[error(
        "document is {size} bytes; the limit is {MAX_DOCUMENT_BYTES} bytes (512 KiB, Consul's value size limit)"
    )]
    TooLarge {
        /// Size of the rejected document in bytes.
        size: usize,
    },
    /// Not UTF-8 text.
    #[error("document is not UTF-8 text (byte {offset}); save it as UTF-8 YAML or JSON")]
    NotUtf8 {
        /// Offset of the first invalid byte.
        offset: usize,
    },
    /// Nothing but whitespace, comments or `null`.
    #[error(
        "document is empty or null; expected a mapping with apiVersion: {API_VERSION}, kind: {KIND} and spec"
    )]
    Empty,
    /// YAML/JSON syntax, or a resource limit (aliases, depth, events) was hit.
    #[error("failed to parse the document{}: {message}", location(*line, *column))]
    Syntax {
        /// What the parser said.
        message: String,
        /// 1-based line, when known.
        line: Option<u64>,
        /// 1-based column, when known.
        column: Option<u64>,
    },
    /// The top level is a list or a scalar.
    #[error("document is a {found}; expected a mapping with apiVersion, kind and spec")]
    NotAMapping {
        /// What was found instead (`list`, `string`, ...).
        found: &'static str,
    },
    /// Unknown fields, unknown enum values or wrong types, each with its path.
    #[error("{}", join(.0))]
    Fields(Vec<FieldError>),
}

fn location(line: Option<u64>, column: Option<u64>) -> String {
    match (line, column) {
        (Some(l), Some(c)) => format!(" at line {l}, column {c}"),
        (Some(l), None) => format!(" at line {l}"),
        _ => String::new(),
    }
}

impl ParseError {
    /// The error as field errors, for status documents and `validate --output json`.
    pub fn field_errors(&self) -> Vec<FieldError> {
        match self {
            Self::Fields(errors) => errors.clone(),
            other => vec![FieldError::new("", other.to_string())],
        }
    }
}

/// Why a document cannot be used: it did not parse, or it did not validate.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SpecError {
    /// The first layer failed.
    #[error("failed to parse the ProxyConfig: {0}")]
    Parse(#[source] ParseError),
    /// The second layer failed.
    #[error("failed to validate the ProxyConfig: {0}")]
    Invalid(#[source] ValidationErrors),
}

impl SpecError {
    /// Every problem as field errors (what the status document's `validationErrors` holds).
    pub fn field_errors(&self) -> Vec<FieldError> {
        match self {
            Self::Parse(e) => e.field_errors(),
            Self::Invalid(e) => e.0.clone(),
        }
    }
}

/// Parses and validates a document: the only way from bytes to something the operator acts on.
pub fn load(bytes: &[u8]) -> Result<ValidatedSpec, SpecError> {
    let config = parse(bytes).map_err(SpecError::Parse)?;
    validate(&config).map_err(SpecError::Invalid)
}

/// The JSON Schema of [`ProxyConfig`] (what `crd-schemas/proxyconfig.v1alpha1.schema.json` holds).
pub fn config_schema() -> serde_json::Value {
    header_first(schemars::schema_for!(ProxyConfig).to_value())
}

/// Puts `$schema`, `$id`, `title` and `description` at the top, where readers look first.
fn header_first(schema: serde_json::Value) -> serde_json::Value {
    let serde_json::Value::Object(mut map) = schema else {
        return schema;
    };
    let mut ordered = serde_json::Map::new();
    for key in ["$schema", "$id", "title", "description"] {
        if let Some(v) = map.shift_remove(key) {
            ordered.insert(key.to_owned(), v);
        }
    }
    ordered.extend(map);
    serde_json::Value::Object(ordered)
}

/// The JSON Schema of [`status::ProxyStatus`].
pub fn status_schema() -> serde_json::Value {
    header_first(schemars::schema_for!(status::ProxyStatus).to_value())
}

/// File name of the ProxyConfig schema in `crd-schemas/`.
pub const CONFIG_SCHEMA_FILE: &str = "proxyconfig.v1alpha1.schema.json";
/// File name of the ProxyStatus schema in `crd-schemas/`.
pub const STATUS_SCHEMA_FILE: &str = "proxystatus.v1alpha1.schema.json";

/// The checked-in schema files, byte for byte: `(file name, pretty JSON + newline)`.
pub fn schema_files() -> [(&'static str, String); 2] {
    let pretty = |v: serde_json::Value| {
        // A Value always serialises; the fallback keeps this total.
        serde_json::to_string_pretty(&v).unwrap_or_default() + "\n"
    };
    [
        (CONFIG_SCHEMA_FILE, pretty(config_schema())),
        (STATUS_SCHEMA_FILE, pretty(status_schema())),
    ]
}

#[cfg(test)]
mod tests;
