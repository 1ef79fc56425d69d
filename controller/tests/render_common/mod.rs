//! Shared by the `render_*` test crates: resolved models built by hand (independent of the
//! document parser), the Nomad API field guard, and golden-file comparison.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use proxy_operator::render::model::*;
use serde_json::Value;

/// A Traefik model exercising every policy: headers, IP allow list, basic auth, rate limit,
/// certificates, redirect web → websecure, metrics, non-insecure API.
pub fn traefik_model() -> Model {
    Model {
        proxy: ProxyKind::Traefik,
        domain_suffix: "example.test".to_string(),
        entry_points: vec![
            EntryPoint {
                name: "web".to_string(),
                address: ListenAddr {
                    host: String::new(),
                    port: 80,
                },
                tls: false,
                redirect_to: Some("websecure".to_string()),
            },
            EntryPoint {
                name: "websecure".to_string(),
                address: ListenAddr {
                    host: String::new(),
                    port: 443,
                },
                tls: true,
                redirect_to: None,
            },
        ],
        discovery: Discovery {
            primary: DiscoveryPrimary::Nomad,
            nomad: NomadDiscovery {
                address: "http://127.0.0.1:4646".to_string(),
                namespace: None,
                refresh_interval: Duration::from_secs(15),
                exposed_by_default: true,
                watch: true,
            },
            consul: ConsulDiscovery {
                address: "127.0.0.1:8500".to_string(),
                scheme: "http".to_string(),
                ca_file: None,
                datacenter: None,
                refresh_interval: Duration::from_secs(15),
                exposed_by_default: false,
            },
            throttle: Duration::from_millis(100),
        },
        tls: Tls {
            cert_dir: "/pv/CERTS".to_string(),
            certificates: vec![CertPair {
                cert_file: "/pv/CERTS/example.test.crt".to_string(),
                key_file: "/pv/CERTS/example.test.key".to_string(),
            }],
            acme: None,
            min_version: Some("VersionTLS12".to_string()),
        },
        policy: Policy {
            headers: seed_headers(),
            rate_limit: Some(RateLimit {
                average: 100,
                burst: 50,
                period: Duration::from_secs(1),
            }),
            ip_allow: vec![
                "10.0.0.0/8".parse().unwrap(),
                "127.0.0.1/32".parse().unwrap(),
            ],
            basic_auth: Some(BasicAuth {
                realm: "proxy".to_string(),
                users: vec!["user:$apr1$abcdefgh$h9FWgUz3n9YxylKLlR5SQ/".to_string()],
                users_file: None,
            }),
            ..Policy::default()
        },
        policies: BTreeMap::new(),
        logging: Logging::default(),
        transport: Transport::default(),
        metrics: Some(ListenAddr {
            host: String::new(),
            port: 8082,
        }),
        dashboard: Dashboard {
            enabled: true,
            insecure: false,
            address: ListenAddr {
                host: "127.0.0.1".to_string(),
                port: 8080,
            },
        },
        job: JobSettings {
            id: "traefik".to_string(),
            system: true,
            count: 1,
            datacenters: vec!["dc1".to_string()],
            namespace: Some("default".to_string()),
            region: None,
            node_pool: Some("default".to_string()),
            driver: Driver::RawExec {
                command: "/usr/local/bin/traefik".to_string(),
                args: vec![],
            },
            cpu: 200,
            memory_mb: 256,
            version: Some("3.7.15".to_string()),
            cert_volume: None,
            open_files: 65535,
            tokens: None,
        },
        rollout: Rollout {
            healthy_deadline: Duration::from_secs(120),
            min_healthy_time: Duration::from_secs(10),
            probes: vec![],
            on_failure: OnFailure::Rollback,
        },
    }
}

/// The seed's security headers.
pub fn seed_headers() -> BTreeMap<String, String> {
    [
        ("X-Frame-Options", "SAMEORIGIN"),
        ("X-XSS-Protection", "1; mode=block"),
        ("X-Content-Type-Options", "nosniff"),
        ("Referrer-Policy", "strict-origin-when-cross-origin"),
        (
            "Permissions-Policy",
            "accelerometer=(), camera=(), geolocation=(), microphone=()",
        ),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect()
}

/// A Caddy model (basic-auth password `secret`, bcrypt cost 4 so tests stay fast): headers, IP allow list, bcrypt basic auth, docker driver, service job.
pub fn caddy_model() -> Model {
    let mut m = traefik_model();
    m.proxy = ProxyKind::Caddy;
    m.policy.rate_limit = None;
    m.policy.basic_auth = Some(BasicAuth {
        realm: "proxy".to_string(),
        users: vec![
            "user:$2a$04$KmdvXirWKCl8agg7DgCxPuIP1jHT1wbO6ssCdyQ8zpW9WZ.bNLZwu".to_string(),
        ],
        users_file: None,
    });
    m.dashboard.address = ListenAddr {
        host: "localhost".to_string(),
        port: 2019,
    };
    m.job.id = "caddy".to_string();
    m.job.system = false;
    m.job.count = 2;
    m.job.driver = Driver::Docker {
        image: "caddy:2.11.7".to_string(),
    };
    m
}

/// Moves every listener of `model` to a free loopback port (for starting a real proxy).
pub fn on_free_loopback_ports(model: &mut Model, mut free_port: impl FnMut() -> u16) {
    for ep in &mut model.entry_points {
        ep.address = ListenAddr {
            host: "127.0.0.1".to_string(),
            port: free_port(),
        };
    }
    model.dashboard.address = ListenAddr {
        host: "127.0.0.1".to_string(),
        port: free_port(),
    };
    if model.metrics.is_some() {
        model.metrics = Some(ListenAddr {
            host: "127.0.0.1".to_string(),
            port: free_port(),
        });
    }
}

// === Nomad API field guard ===

/// Nomad's API types (`fixtures/nomad-api-fields.json`).
pub fn nomad_api_types() -> Value {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../fixtures/nomad-api-fields.json"
    );
    serde_json::from_str(&std::fs::read_to_string(path).expect("read nomad-api-fields.json"))
        .expect("parse nomad-api-fields.json")
}

/// Walks `value` as Go type `go_type` and returns one message per key or value Nomad's API type
/// does not have, naming its path (`Job.TaskGroups[0].Tasks[0].Templates[0].Destination`).
pub fn check_against_nomad_api(
    api: &Value,
    value: &Value,
    go_type: &str,
    path: &str,
) -> Vec<String> {
    let mut errors = Vec::new();
    walk(api, value, go_type, path, &mut errors);
    errors
}

fn walk(api: &Value, value: &Value, go_type: &str, path: &str, errors: &mut Vec<String>) {
    let ty = go_type.trim_start_matches('*');
    if value.is_null() {
        return;
    }
    if ty == "[]byte" {
        if !value.is_string() {
            errors.push(format!(
                "{path}: expected base64 string for []byte, got {value}"
            ));
        }
        return;
    }
    if let Some(elem) = ty.strip_prefix("[]") {
        match value.as_array() {
            Some(items) => {
                for (i, item) in items.iter().enumerate() {
                    walk(api, item, elem, &format!("{path}[{i}]"), errors);
                }
            }
            None => errors.push(format!("{path}: expected a list ({ty}), got {value}")),
        }
        return;
    }
    if let Some(elem) = ty.strip_prefix("map[string]") {
        match value.as_object() {
            Some(map) => {
                if elem != "any" && elem != "interface{}" {
                    for (k, v) in map {
                        walk(api, v, elem, &format!("{path}[{k:?}]"), errors);
                    }
                }
            }
            None => errors.push(format!("{path}: expected an object ({ty}), got {value}")),
        }
        return;
    }
    let ok = match ty {
        "any" | "interface{}" => true,
        "string" | "time.Time" => value.is_string(),
        "bool" => value.is_boolean(),
        "int" | "int8" | "int32" | "int64" | "time.Duration" => value.is_i64(),
        "uint" | "uint8" | "uint16" | "uint32" | "uint64" => value.is_u64(),
        "float32" | "float64" => value.is_number(),
        named => {
            if let Some(fields) = api["types"].get(named).and_then(Value::as_object) {
                match value.as_object() {
                    Some(obj) => {
                        for (k, v) in obj {
                            match fields.get(k).and_then(Value::as_str) {
                                Some(field_ty) => walk(api, v, field_ty, &format!("{path}.{k}"), errors),
                                None => errors.push(format!(
                                    "{path}.{k}: no such field in Nomad's api.{named} (keys are case-sensitive Go names)"
                                )),
                            }
                        }
                    }
                    None => {
                        errors.push(format!("{path}: expected an object ({named}), got {value}"))
                    }
                }
                return;
            }
            if let Some(under) = api["non_struct_named_types"]
                .get(named)
                .and_then(Value::as_str)
            {
                walk(api, value, under, path, errors);
                return;
            }
            errors.push(format!("{path}: unknown Go type {named}"));
            return;
        }
    };
    if !ok {
        errors.push(format!("{path}: value {value} does not fit Go type {ty}"));
    }
}

// === golden files ===

/// Directory of golden files.
pub fn golden_dir() -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/golden"))
}

/// Compares `actual` with the golden file at `path`; with `UPDATE_GOLDEN=1` rewrites it instead.
/// Returns a unified diff on mismatch.
pub fn check_golden(path: &Path, actual: &str) -> Result<(), String> {
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::create_dir_all(path.parent().expect("golden parent")).expect("mkdir golden");
        std::fs::write(path, actual).expect("write golden");
        return Ok(());
    }
    let expected = std::fs::read_to_string(path).map_err(|e| {
        format!(
            "cannot read golden file {}: {e}; run with UPDATE_GOLDEN=1 to create it",
            path.display()
        )
    })?;
    if expected == actual {
        return Ok(());
    }
    let diff = similar::TextDiff::from_lines(expected.as_str(), actual)
        .unified_diff()
        .header(&format!("{} (golden)", path.display()), "rendered")
        .to_string();
    Err(format!(
        "rendered output differs from the golden file (UPDATE_GOLDEN=1 to accept):\n{diff}"
    ))
}
