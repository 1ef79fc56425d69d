//! The shipped Grafana dashboard queries only metrics the operator really exports.
#![allow(clippy::unwrap_used, clippy::panic)] // tests fail loudly

mod surface_common;

use std::collections::BTreeSet;
use std::time::Duration;

use proxy_operator::metrics::{self, Api, Metrics, PassOutcome, RolloutStage};
use proxy_operator::server::{Role, Surface};
use proxy_operator::spec::status::{Outcome, Phase, ProxyStatus};
use surface_common::{client, parse_openmetrics, start};

fn dashboard() -> serde_json::Value {
    let path = format!(
        "{}/../nomad-jobs/observability/grafana-dashboard.json",
        env!("CARGO_MANIFEST_DIR")
    );
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// Every PromQL string of the dashboard: panel targets and templating queries.
fn queries(value: &serde_json::Value, out: &mut Vec<String>) {
    match value {
        serde_json::Value::Object(map) => {
            for (k, v) in map {
                match (k.as_str(), v) {
                    ("expr" | "query", serde_json::Value::String(s)) => out.push(s.clone()),
                    _ => queries(v, out),
                }
            }
        }
        serde_json::Value::Array(items) => items.iter().for_each(|v| queries(v, out)),
        _ => {}
    }
}

/// Metric names in a PromQL expression: identifiers with our prefix (label names and values
/// never start with it).
fn metric_names(expr: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let mut rest = expr;
    while let Some(i) = rest.find("proxy_operator_") {
        let tail = &rest[i..];
        let end = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(tail.len());
        names.insert(tail[..end].to_owned());
        rest = &tail[end..];
    }
    names
}

/// A surface where every metric has recorded something, as after a rollout and a rollback.
fn busy_surface(cert_dir: &std::path::Path) -> Surface {
    let m = Metrics::new();
    m.pass_completed(PassOutcome::Ok);
    m.pass_completed(PassOutcome::Error("nomad"));
    m.rollout_finished(
        Outcome::Succeeded,
        &[
            (RolloutStage::Plan, Duration::from_millis(5)),
            (RolloutStage::Apply, Duration::from_millis(50)),
            (RolloutStage::Verify, Duration::from_secs(3)),
        ],
    );
    m.rollout_finished(
        Outcome::RolledBack,
        &[(RolloutStage::Rollback, Duration::from_secs(1))],
    );
    m.api_request(
        Api::Consul,
        metrics::endpoint_class("/v1/txn"),
        Some(200),
        Duration::from_millis(2),
    );
    m.api_request(
        Api::Nomad,
        metrics::endpoint_class("/v1/jobs"),
        Some(500),
        Duration::from_millis(9),
    );
    m.watch_woke("config");
    m.document_observed(7, "digest");
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = rcgen::CertificateParams::new(vec!["a.example".to_owned()])
        .unwrap()
        .self_signed(&key)
        .unwrap();
    std::fs::write(cert_dir.join("a.pem"), cert.pem()).unwrap();
    m.certificates(&metrics::scan_cert_dir(cert_dir).unwrap());
    let surface = Surface::new(m);
    surface.set_role(Role::Leader);
    surface.publish_status(&ProxyStatus {
        phase: Phase::Ready,
        ..ProxyStatus::default()
    });
    surface
}

#[tokio::test]
async fn every_metric_the_dashboard_queries_is_in_a_real_scrape() {
    let dir = tempfile::tempdir().unwrap();
    let (addr, stop) = start(busy_surface(dir.path())).await;
    let text = client()
        .get(format!("http://{addr}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let scraped = parse_openmetrics(&text).names();
    let _ = stop.send(());

    let mut exprs = Vec::new();
    queries(&dashboard(), &mut exprs);
    assert!(
        exprs.len() >= 10,
        "the dashboard has its queries: {exprs:?}"
    );
    let used: BTreeSet<String> = exprs.iter().flat_map(|e| metric_names(e)).collect();
    let missing: Vec<&String> = used.iter().filter(|n| !scraped.contains(*n)).collect();
    assert!(
        missing.is_empty(),
        "queried but not exported: {missing:?}\nexported: {scraped:?}"
    );
    for needed in [
        "proxy_operator_rollouts_total",
        "proxy_operator_phase",
        "proxy_operator_api_requests_total",
        "proxy_operator_api_request_duration_seconds_bucket",
        "proxy_operator_leader_changes_total",
        "proxy_operator_certificate_expiry_seconds",
    ] {
        assert!(used.contains(needed), "the dashboard shows {needed}");
    }
}

#[test]
fn the_dashboard_uses_a_data_source_variable_and_unique_panel_ids() {
    let d = dashboard();
    assert_eq!(d["uid"], "proxy-operator");
    let panels = d["panels"].as_array().unwrap();
    let ids: BTreeSet<u64> = panels.iter().map(|p| p["id"].as_u64().unwrap()).collect();
    assert_eq!(ids.len(), panels.len());
    for p in panels {
        assert_eq!(p["datasource"]["uid"], "${datasource}", "{}", p["title"]);
    }
}
