//! The checked-in JSON Schemas match the Rust types; examples pass both the schema and the
//! Rust validator; invalid documents fail the Rust validator, and the schema too wherever a
//! JSON Schema can express the rule.
// Tests fail by panicking; the workspace lint is for production code.
#![allow(clippy::panic)]

use std::path::{Path, PathBuf};

use proxy_operator::spec;
use serde_json::Value;

fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(path)
}

/// YAML → JSON value the way the schema sees it (strict booleans, like `spec::parse`).
fn as_json(bytes: &[u8]) -> Option<Value> {
    let text = std::str::from_utf8(bytes).ok()?;
    let options = serde_saphyr::options! { strict_booleans: true };
    serde_saphyr::from_str_with_options::<Value>(text, options).ok()
}

fn config_validator() -> jsonschema::Validator {
    let schema: Value = serde_json::from_str(
        &std::fs::read_to_string(repo("crd-schemas/proxyconfig.v1alpha1.schema.json"))
            .expect("schema file readable"),
    )
    .expect("schema file is JSON");
    jsonschema::validator_for(&schema).expect("schema compiles")
}

#[test]
fn checked_in_schemas_match_the_rust_types() {
    for (name, generated) in spec::schema_files() {
        let path = repo(&format!("crd-schemas/{name}"));
        let on_disk = std::fs::read_to_string(&path).unwrap_or_default();
        assert!(
            on_disk == generated,
            "{} is stale or missing; regenerate it with `cargo run -p proxy-operator -- schema`",
            path.display()
        );
    }
}

#[test]
fn the_status_schema_accepts_a_status_the_operator_writes() {
    let schema: Value = serde_json::from_str(
        &std::fs::read_to_string(repo("crd-schemas/proxystatus.v1alpha1.schema.json"))
            .expect("readable"),
    )
    .expect("JSON");
    let validator = jsonschema::validator_for(&schema).expect("compiles");
    let mut status = spec::status::ProxyStatus {
        phase: spec::status::Phase::Invalid,
        ..Default::default()
    };
    status
        .validation_errors
        .push(spec::FieldError::new("spec.proxy", "bad"));
    status.push_history(spec::status::HistoryEntry::default());
    let json = serde_json::to_value(&status).expect("serialises");
    let errors: Vec<String> = validator
        .iter_errors(&json)
        .map(|e| e.to_string())
        .collect();
    assert!(errors.is_empty(), "{errors:?}");
    assert!(!validator.is_valid(&serde_json::json!({"phase": "Exploded"})));
}

fn examples() -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(repo("nomad-jobs/examples"))
        .expect("examples dir")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "yaml" || x == "json"))
        .collect();
    files.sort();
    files
}

#[test]
fn every_example_passes_the_schema_and_the_rust_validator() {
    let validator = config_validator();
    let files = examples();
    let names: Vec<String> = files
        .iter()
        .filter_map(|f| f.file_name())
        .map(|n| n.to_string_lossy().into_owned())
        .collect();
    for expected in [
        "caddy.yaml",
        "traefik-consul-primary.yaml",
        "traefik-nomad-primary.yaml",
    ] {
        assert!(
            names.iter().any(|n| n == expected),
            "missing example {expected}"
        );
    }
    for file in files {
        let bytes = std::fs::read(&file).expect("readable");
        let text = String::from_utf8_lossy(&bytes);
        assert!(
            text.starts_with(
                "# yaml-language-server: $schema=../../crd-schemas/proxyconfig.v1alpha1.schema.json"
            ),
            "{} lacks the yaml-language-server schema line",
            file.display()
        );
        let json = as_json(&bytes).unwrap_or_else(|| panic!("{} is not YAML", file.display()));
        let errors: Vec<String> = validator
            .iter_errors(&json)
            .map(|e| format!("{}: {e}", e.instance_path()))
            .collect();
        assert!(
            errors.is_empty(),
            "{}: schema errors {errors:#?}",
            file.display()
        );
        if let Err(e) = spec::load(&bytes) {
            panic!("{}: {e}", file.display());
        }
    }
}

/// What the schema can say about an invalid document.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Schema {
    /// The schema rejects it too.
    Rejects,
    /// Beyond what a JSON Schema expresses (cross-field rules, CIDR/port syntax); only Rust rejects it.
    CannotExpress,
    /// Not even parseable into JSON for the schema to judge (limits, duplicate keys, empty).
    Unparseable,
}

/// file → (path or text the Rust error must name, what the schema does).
const INVALID: &[(&str, &str, Schema)] = &[
    ("alias-bomb.yaml", "failed to parse", Schema::Unparseable),
    (
        "caddy-with-rate-limit.yaml",
        "spec.middlewares.rateLimit",
        Schema::CannotExpress,
    ),
    (
        "count-on-system-job.yaml",
        "spec.job.count",
        Schema::CannotExpress,
    ),
    ("deep-nesting.yaml", "failed to parse", Schema::Unparseable),
    ("duplicate-keys.yaml", "duplicate", Schema::Unparseable),
    ("empty.yaml", "empty or null", Schema::Unparseable),
    (
        "inline-basic-auth-users.yaml",
        "spec.middlewares.basicAuth.users",
        Schema::Rejects,
    ),
    (
        "insecure-dashboard-with-caddy.yaml",
        "spec.dashboard.insecure",
        Schema::CannotExpress,
    ),
    (
        "invalid-cidr.yaml",
        "spec.middlewares.ipAllowList.sourceRange[2]",
        Schema::CannotExpress,
    ),
    (
        "invalid-duration.yaml",
        "spec.rollout.healthyDeadline",
        Schema::Rejects,
    ),
    (
        "invalid-hostname.yaml",
        "spec.domainSuffix",
        Schema::CannotExpress,
    ),
    (
        "invalid-port.yaml",
        "spec.entryPoints.websecure.address",
        Schema::CannotExpress,
    ),
    (
        "listeners-on-one-port.yaml",
        "spec.metrics.address",
        Schema::CannotExpress,
    ),
    (
        "memory-too-small.yaml",
        "spec.job.resources.memoryMB",
        Schema::Rejects,
    ),
    (
        "min-healthy-time-exceeds-deadline.yaml",
        "spec.rollout.minHealthyTime",
        Schema::CannotExpress,
    ),
    ("null.yaml", "empty or null", Schema::Rejects),
    (
        "rate-limit-zero.yaml",
        "spec.middlewares.rateLimit.average",
        Schema::Rejects,
    ),
    (
        "redirect-to-missing-entry-point.yaml",
        "spec.entryPoints.web.redirectTo",
        Schema::CannotExpress,
    ),
    (
        "relative-basic-auth-file.yaml",
        "spec.middlewares.basicAuth.usersFrom.file",
        Schema::CannotExpress,
    ),
    (
        "relative-cert-dir.yaml",
        "spec.tls.certDir",
        Schema::CannotExpress,
    ),
    ("top-level-list.yaml", "is a list", Schema::Rejects),
    (
        "unknown-field.yaml",
        "spec.entryPoints.web.adress",
        Schema::Rejects,
    ),
    ("unknown-proxy.yaml", "spec.proxy", Schema::Rejects),
    ("wrong-api-version.yaml", "apiVersion", Schema::Rejects),
    ("wrong-type.yaml", "spec.job.resources.cpu", Schema::Rejects),
    ("yaml11-boolean.yaml", "spec.paused", Schema::Rejects),
];

#[test]
fn every_invalid_document_fails_the_rust_validator_and_the_schema_where_it_can() {
    let validator = config_validator();
    let dir = repo("controller/tests/data/invalid");
    let mut on_disk: Vec<String> = std::fs::read_dir(&dir)
        .expect("invalid dir")
        .filter_map(|e| e.ok().map(|e| e.file_name().to_string_lossy().into_owned()))
        .collect();
    on_disk.sort();
    let listed: Vec<String> = INVALID.iter().map(|(f, _, _)| (*f).to_owned()).collect();
    assert_eq!(
        on_disk,
        listed,
        "every file in {} needs a row in INVALID",
        dir.display()
    );

    for (file, needle, schema) in INVALID {
        let bytes = std::fs::read(dir.join(file)).expect("readable");
        let err = match spec::load(&bytes) {
            Ok(_) => panic!("{file}: the Rust validator accepted it"),
            Err(e) => e,
        };
        let rendered: Vec<String> = err.field_errors().iter().map(ToString::to_string).collect();
        assert!(
            rendered.iter().any(|e| e.contains(needle)),
            "{file}: expected an error mentioning {needle:?}, got {rendered:#?}"
        );
        let json = as_json(&bytes);
        match (schema, json) {
            (Schema::Unparseable, None) => {}
            (Schema::Unparseable, Some(json)) if json.is_null() => {}
            (Schema::Unparseable, Some(_)) => panic!("{file}: expected it not to parse at all"),
            (_, None) => panic!("{file}: expected parseable YAML"),
            (Schema::Rejects, Some(json)) => {
                assert!(!validator.is_valid(&json), "{file}: the schema accepted it")
            }
            (Schema::CannotExpress, Some(json)) => assert!(
                validator.is_valid(&json),
                "{file}: the schema now rejects it; move it to Schema::Rejects"
            ),
        }
    }
}
