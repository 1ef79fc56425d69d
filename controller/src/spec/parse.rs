//! First layer: bytes → [`ProxyConfig`], with limits, strict YAML and field-path errors.

use std::sync::LazyLock;

use serde_json::{Map, Value};
use serde_saphyr::{DuplicateKeyPolicy, Options};

use super::{FieldError, ParseError, ProxyConfig};

/// Largest document accepted: Consul's KV value limit.
pub const MAX_DOCUMENT_BYTES: usize = 512 * 1024;

/// Deepest nesting accepted. The schema itself is about 6 levels deep; anything far beyond is
/// an attack or an accident, and recursion over it must stay bounded.
pub const MAX_DEPTH: usize = 32;

/// Parses a ProxyConfig from YAML or JSON (JSON is parsed as YAML 1.2, its superset, so both
/// get the same limits and duplicate-key checks).
///
/// YAML booleans are strict: only `true`/`false` (any case) are booleans; `yes`, `on`, `y` are
/// strings and fail where a boolean is expected. Errors name the field path; unknown fields and
/// unknown enum values are all reported at once, each with the closest known name. Values that
/// look like secrets are never echoed in the errors.
pub fn parse(bytes: &[u8]) -> Result<ProxyConfig, ParseError> {
    parse_unscrubbed(bytes).map_err(|e| match e {
        ParseError::Fields(errors) => {
            ParseError::Fields(errors.into_iter().map(super::scrub::scrub).collect())
        }
        ParseError::Syntax {
            message,
            line,
            column,
        } => ParseError::Syntax {
            message: super::scrub::scrub_text(&message, false),
            line,
            column,
        },
        other => other,
    })
}

fn parse_unscrubbed(bytes: &[u8]) -> Result<ProxyConfig, ParseError> {
    if bytes.len() > MAX_DOCUMENT_BYTES {
        return Err(ParseError::TooLarge { size: bytes.len() });
    }
    let text = std::str::from_utf8(bytes).map_err(|e| ParseError::NotUtf8 {
        offset: e.valid_up_to(),
    })?;
    if text.trim().is_empty() {
        return Err(ParseError::Empty);
    }
    let value: Value =
        serde_saphyr::from_str_with_options(text, options()).map_err(syntax_error)?;
    let found = match &value {
        Value::Object(_) => None,
        Value::Null => return Err(ParseError::Empty),
        Value::Array(_) => Some("list"),
        Value::String(_) => Some("string"),
        Value::Number(_) => Some("number"),
        Value::Bool(_) => Some("boolean"),
    };
    if let Some(found) = found {
        return Err(ParseError::NotAMapping { found });
    }

    let mut errors = Vec::new();
    check_against_schema(&value, &SCHEMA, &SCHEMA, "", 0, &mut errors);
    if !errors.is_empty() {
        return Err(ParseError::Fields(errors));
    }

    serde_path_to_error::deserialize::<_, ProxyConfig>(&value).map_err(|e| {
        let path = e.path().to_string();
        let path = if path == "." { String::new() } else { path };
        let mut message = explain(&e.inner().to_string());
        // The YAML deserializer knows where in the text the typed value failed.
        if let Err(located) = serde_saphyr::from_str_with_options::<ProxyConfig>(text, options())
            && let Some(loc) = located.location()
        {
            message.push_str(&format!(" (line {}, column {})", loc.line(), loc.column()));
        }
        ParseError::Fields(vec![FieldError::new(path, message)])
    })
}

fn options() -> Options {
    serde_saphyr::options! {
        strict_booleans: true,
        duplicate_keys: DuplicateKeyPolicy::Error,
        budget: serde_saphyr::budget! {
            max_depth: MAX_DEPTH,
            max_documents: 1,
            max_aliases: 1_000,
            max_anchors: 1_000,
            max_events: 200_000,
            max_nodes: 200_000,
            max_total_scalar_bytes: MAX_DOCUMENT_BYTES * 2,
            max_recorded_anchor_events: 20_000,
            flow_nesting_limit: MAX_DEPTH,
        },
        alias_limits: serde_saphyr::alias_limits! {
            max_total_replayed_events: 20_000,
            max_replay_stack_depth: 16,
        },
    }
}

fn syntax_error(e: serde_saphyr::Error) -> ParseError {
    let location = e.location();
    // The Display of saphyr errors can include a source snippet; the first line is the reason.
    let full = e.to_string();
    let first = full.lines().next().unwrap_or("invalid YAML").trim();
    ParseError::Syntax {
        message: humanize_syntax(strip_location_prefix(first)),
        line: location.as_ref().map(|l| l.line()),
        column: location.as_ref().map(|l| l.column()),
    }
}

/// saphyr prefixes `error: line L column C: `; the location is reported separately.
fn strip_location_prefix(message: &str) -> &str {
    let rest = message.strip_prefix("error: ").unwrap_or(message);
    match rest.strip_prefix("line ").and_then(|r| r.split_once(": ")) {
        Some((position, tail)) if position.contains("column") => tail,
        _ => rest,
    }
}

/// Replaces parser-internal wording with what the author of the document can do.
fn humanize_syntax(message: &str) -> String {
    if let Some((_, rest)) = message.split_once("duplicate mapping key: ") {
        let key = rest.split(',').next().unwrap_or(rest).trim();
        format!("duplicate key {key:?}; each key may appear once per mapping")
    } else if message.contains("budget breached") {
        format!(
            "the document expands beyond the parser's limits (aliases, anchors, nodes or nesting); \
             write values out instead of repeating aliases ({message})"
        )
    } else if message.contains("recursion limit") {
        format!("nesting is deeper than {MAX_DEPTH} levels; a ProxyConfig is about 6 levels deep")
    } else {
        message.to_owned()
    }
}

/// Adds the fix to serde's terse type errors.
fn explain(message: &str) -> String {
    if message.contains("expected a boolean") {
        format!(
            "{message}; write true or false (YAML 1.1 spellings such as yes/no/on/off are not booleans here)"
        )
    } else {
        message
            .replace("expected u16", "expected a whole number")
            .replace("expected u32", "expected a whole number")
            .replace("expected u64", "expected a whole number")
    }
}

static SCHEMA: LazyLock<Value> = LazyLock::new(super::config_schema);

fn resolve<'a>(root: &'a Value, schema: &'a Value) -> &'a Value {
    let mut current = schema;
    // $ref chains in schemars output are one hop; the bound only guards against cycles.
    for _ in 0..8 {
        match current.get("$ref").and_then(Value::as_str) {
            Some(reference) => {
                let Some(pointer) = reference.strip_prefix('#') else {
                    return current;
                };
                match root.pointer(pointer) {
                    Some(target) => current = target,
                    None => return current,
                }
            }
            None => return current,
        }
    }
    current
}

/// The object alternatives of a schema (itself, or its `anyOf`/`oneOf` members).
fn alternatives<'a>(root: &'a Value, schema: &'a Value) -> Vec<&'a Value> {
    let schema = resolve(root, schema);
    let mut out = Vec::new();
    for key in ["anyOf", "oneOf"] {
        if let Some(list) = schema.get(key).and_then(Value::as_array) {
            for alt in list {
                out.extend(alternatives(root, alt));
            }
        }
    }
    if out.is_empty() {
        out.push(schema);
    }
    out
}

fn child_path(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_owned()
    } else {
        format!("{path}.{key}")
    }
}

/// Walks a document against the generated schema to report every unknown field and unknown
/// enum value with a suggestion, which serde (first error only, no suggestion) cannot.
fn check_against_schema(
    value: &Value,
    schema: &Value,
    root: &Value,
    path: &str,
    depth: usize,
    errors: &mut Vec<FieldError>,
) {
    if depth > MAX_DEPTH {
        return;
    }
    let alts = alternatives(root, schema);
    match value {
        Value::Object(map) => check_object(map, &alts, root, path, depth, errors),
        Value::Array(items) => {
            if let Some(item_schema) = alts.iter().find_map(|s| s.get("items")) {
                for (i, item) in items.iter().enumerate() {
                    check_against_schema(
                        item,
                        item_schema,
                        root,
                        &format!("{path}[{i}]"),
                        depth + 1,
                        errors,
                    );
                }
            }
        }
        Value::String(text) => {
            let mut variants: Vec<&str> = alts
                .iter()
                .filter_map(|s| s.get("enum").and_then(Value::as_array))
                .flatten()
                .filter_map(Value::as_str)
                .collect();
            variants.extend(
                alts.iter()
                    .filter_map(|s| s.get("const").and_then(Value::as_str)),
            );
            let accepts_any_string = alts.iter().any(|s| {
                s.get("enum").is_none()
                    && s.get("const").is_none()
                    && (s.get("type") == Some(&Value::from("string"))
                        || s.get("type")
                            .and_then(Value::as_array)
                            .is_some_and(|t| t.contains(&Value::from("string"))))
            });
            if !variants.is_empty() && !accepts_any_string && !variants.contains(&text.as_str()) {
                let mut message = format!("{text:?} is not one of {}", variants.join(", "));
                if let Some(best) = closest(text, &variants) {
                    message.push_str(&format!("; did you mean {best:?}?"));
                }
                errors.push(FieldError::new(path, message));
            }
        }
        _ => {}
    }
}

fn check_object(
    map: &Map<String, Value>,
    alts: &[&Value],
    root: &Value,
    path: &str,
    depth: usize,
    errors: &mut Vec<FieldError>,
) {
    let objects: Vec<&Value> = alts
        .iter()
        .copied()
        .filter(|s| s.get("properties").is_some() || s.get("additionalProperties").is_some())
        .collect();
    if objects.is_empty() {
        return;
    }
    let known: Vec<&str> = objects
        .iter()
        .filter_map(|s| s.get("properties").and_then(Value::as_object))
        .flat_map(|p| p.keys().map(String::as_str))
        .collect();
    let open_schema = objects
        .iter()
        .find_map(|s| s.get("additionalProperties").filter(|a| a.is_object()));
    for (key, child) in map {
        let property = objects
            .iter()
            .find_map(|s| s.get("properties").and_then(|p| p.get(key)));
        let child_path = child_path(path, key);
        match (property, open_schema) {
            (Some(schema), _) => {
                check_against_schema(child, schema, root, &child_path, depth + 1, errors)
            }
            (None, Some(schema)) => {
                check_against_schema(child, schema, root, &child_path, depth + 1, errors)
            }
            (None, None) => errors.push(FieldError::new(
                child_path,
                unknown_field_message(path, key, &known),
            )),
        }
    }
}

fn unknown_field_message(parent: &str, key: &str, known: &[&str]) -> String {
    if key == "users" && parent.ends_with("basicAuth") {
        return "inline basic-auth users are not accepted: password hashes are secrets, and this \
                document is stored unencrypted in Consul KV and echoed in status. Put the htpasswd \
                lines in a Consul KV key or a file on the proxy's node and reference it, e.g. \
                `usersFrom: {consulKey: proxy-operator/secrets/basic-auth}` or \
                `usersFrom: {file: /etc/proxy/htpasswd}`"
            .to_owned();
    }
    let mut message = format!("unknown field {key:?}");
    if let Some(best) = closest(key, known) {
        message.push_str(&format!("; did you mean {best:?}?"));
    }
    if !known.is_empty() {
        message.push_str(&format!(" Known fields here: {}", known.join(", ")));
    }
    message
}

/// The known name closest to `given`, if any is close enough to be a plausible typo.
pub(super) fn closest<'a>(given: &str, known: &[&'a str]) -> Option<&'a str> {
    let lowered = given.to_lowercase();
    known
        .iter()
        .map(|k| {
            (
                *k,
                strsim::normalized_damerau_levenshtein(&lowered, &k.to_lowercase()),
            )
        })
        .filter(|(_, score)| *score >= 0.5)
        .max_by(|a, b| a.1.total_cmp(&b.1))
        .map(|(k, _)| k)
}
