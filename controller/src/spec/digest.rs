//! Content digests: sha256 over canonical JSON (object keys sorted, no whitespace) and over KV
//! entries. The spec digest, the job digest stamped into Nomad Meta and the policy-tree digest
//! all come from here, so "same content" means the same thing everywhere.

use std::collections::BTreeMap;

use serde_json::Value;
use sha2::{Digest, Sha256};

/// sha256 hex of `value` serialised with object keys sorted, so field order never matters.
pub fn digest_json(value: &Value) -> String {
    let mut bytes = Vec::new();
    write_canonical(value, &mut bytes);
    hex(&Sha256::digest(&bytes))
}

/// sha256 hex over KV entries: `key NUL value NUL` in key order.
pub fn digest_kv(entries: &[(String, String)]) -> String {
    let sorted: BTreeMap<&str, &str> = entries
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let mut h = Sha256::new();
    for (k, v) in sorted {
        h.update(k.as_bytes());
        h.update([0]);
        h.update(v.as_bytes());
        h.update([0]);
    }
    hex(&h.finalize())
}

/// JSON with object keys sorted and no whitespace.
fn write_canonical(value: &Value, out: &mut Vec<u8>) {
    match value {
        Value::Object(map) => {
            let sorted: BTreeMap<&String, &Value> = map.iter().collect();
            out.push(b'{');
            for (i, (k, v)) in sorted.into_iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                out.extend_from_slice(Value::String(k.clone()).to_string().as_bytes());
                out.push(b':');
                write_canonical(v, out);
            }
            out.push(b'}');
        }
        Value::Array(items) => {
            out.push(b'[');
            for (i, v) in items.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_canonical(v, out);
            }
            out.push(b']');
        }
        scalar => out.extend_from_slice(scalar.to_string().as_bytes()),
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_job_digest_ignores_key_order_but_not_values() {
        let a = json!({"ID": "x", "Meta": {"a": "1", "b": "2"}});
        let b = json!({"Meta": {"b": "2", "a": "1"}, "ID": "x"});
        assert_eq!(digest_json(&a), digest_json(&b));
        assert_ne!(
            digest_json(&a),
            digest_json(&json!({"ID": "y", "Meta": {"a": "1", "b": "2"}}))
        );
        assert_eq!(digest_json(&a).len(), 64);
    }

    #[test]
    fn the_kv_digest_ignores_entry_order_and_separates_keys_from_values() {
        let one = vec![
            ("a".to_string(), "1".to_string()),
            ("b".to_string(), "2".to_string()),
        ];
        let rev: Vec<_> = one.iter().rev().cloned().collect();
        assert_eq!(digest_kv(&one), digest_kv(&rev));
        // Without a separator `ab`+`c` and `a`+`bc` would collide.
        assert_ne!(
            digest_kv(&[("ab".to_string(), "c".to_string())]),
            digest_kv(&[("a".to_string(), "bc".to_string())])
        );
    }
}
