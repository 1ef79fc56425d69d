//! Any text through `migrate::files::migrate_hcl` / `migrate_json`: must return Ok or Err, never
//! panic. When a file changes:
//! - every tag the report says was added is really an element of a tags list in the output (not,
//!   say, swallowed by a comment), so the report matches what Nomad will see;
//! - migrating the output again changes nothing (the module promises idempotence: a service that
//!   already carries `traefik.*` tags gets nothing added).
//!
//! The first byte picks the format (bit 0) and `remove_legacy` (bit 1); the rest is the file.
#![no_main]

use std::collections::BTreeSet;

use hcl_edit::expr::Expression;
use hcl_edit::structure::{Body, Structure};
use libfuzzer_sys::fuzz_target;
use proxy_operator::migrate::ConvertOptions;
use proxy_operator::migrate::files::{self, Format};

/// Every plain string element of every `tags` list in an HCL body, at any depth.
fn hcl_tags(body: &Body, out: &mut BTreeSet<String>) {
    for structure in body.iter() {
        match structure {
            Structure::Attribute(attr) if attr.key.as_str() == "tags" => {
                if let Expression::Array(arr) = &attr.value {
                    for e in arr.iter() {
                        if let Expression::String(s) = e {
                            out.insert(s.value().to_string());
                        }
                    }
                }
            }
            Structure::Attribute(_) => {}
            Structure::Block(block) => hcl_tags(&block.body, out),
        }
    }
}

/// Every string element of every `Tags` array in a JSON document, at any depth.
fn json_tags(value: &serde_json::Value, out: &mut BTreeSet<String>) {
    match value {
        serde_json::Value::Object(map) => {
            for (k, v) in map {
                if k == "Tags"
                    && let serde_json::Value::Array(items) = v
                {
                    out.extend(items.iter().filter_map(|t| t.as_str().map(str::to_string)));
                }
                json_tags(v, out);
            }
        }
        serde_json::Value::Array(items) => items.iter().for_each(|v| json_tags(v, out)),
        _ => {}
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let Ok(text) = std::str::from_utf8(rest) else {
        return;
    };
    let format = if mode & 1 == 0 {
        Format::Hcl
    } else {
        Format::Json
    };
    let remove_legacy = mode & 2 != 0;
    let options = ConvertOptions {
        datacenter: Some("dc1".into()),
        ..ConvertOptions::default()
    };
    let Ok(first) = files::migrate_text(text, format, &options, remove_legacy) else {
        return;
    };
    if !first.is_change() {
        assert_eq!(
            first.updated, text,
            "an unchanged file must be returned byte for byte"
        );
        return;
    }

    let mut present = BTreeSet::new();
    match format {
        Format::Hcl => match hcl_edit::parser::parse_body(&first.updated) {
            Ok(body) => hcl_tags(&body, &mut present),
            Err(e) => panic!("migrated HCL no longer parses: {e}\n{}", first.updated),
        },
        Format::Json => match serde_json::from_str(&first.updated) {
            Ok(doc) => json_tags(&doc, &mut present),
            Err(e) => panic!("migrated JSON no longer parses: {e}\n{}", first.updated),
        },
    }
    for service in &first.services {
        for tag in &service.migration.add {
            // Tags with interpolations are templates in HCL, not plain strings; skip them.
            if tag.contains("${") || tag.contains("%{") {
                continue;
            }
            assert!(
                present.contains(tag),
                "{} reports adding {tag:?}, but the output has no such tag\n--- input ---\n{text}\n--- output ---\n{}",
                service.location,
                first.updated
            );
        }
    }

    let second = match files::migrate_text(&first.updated, format, &options, remove_legacy) {
        Ok(second) => second,
        Err(e) => panic!(
            "migrated output no longer migrates: {e}\n--- output ---\n{}",
            first.updated
        ),
    };
    assert!(
        !second.is_change(),
        "migrating the migrated file changes it again\n--- input ---\n{text}\n--- first ---\n{}\n--- second ---\n{}",
        first.updated,
        second.updated
    );
});
