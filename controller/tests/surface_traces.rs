//! Trace export over OTLP/HTTP: an in-test receiver on loopback decodes what the operator sends.
#![allow(clippy::unwrap_used, clippy::panic)] // tests fail loudly

use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::routing::post;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use prost::Message as _;
use proxy_operator::telemetry::{Otel, OtlpConfig};
use tracing_subscriber::layer::SubscriberExt as _;

type Received = Arc<Mutex<Vec<ExportTraceServiceRequest>>>;

async fn receiver() -> (String, Received) {
    let got: Received = Arc::default();
    let sink = got.clone();
    let app = axum::Router::new().route(
        "/v1/traces",
        post(move |body: Bytes| {
            let sink = sink.clone();
            async move {
                let req = ExportTraceServiceRequest::decode(body).unwrap();
                sink.lock().unwrap().push(req);
                ""
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    (format!("http://{addr}"), got)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rollout_span_tree_arrives_at_the_otlp_endpoint_with_the_service_name() {
    let (base, got) = receiver().await;
    let vars = [
        ("OTEL_EXPORTER_OTLP_ENDPOINT", base.as_str()),
        ("OTEL_SERVICE_NAME", "edge-operator"),
        ("OTEL_RESOURCE_ATTRIBUTES", "deployment.environment=test"),
    ];
    let config = OtlpConfig::from_env(|k| {
        vars.iter()
            .find(|(n, _)| *n == k)
            .map(|(_, v)| (*v).to_owned())
    })
    .unwrap();
    let otel = tokio::task::spawn_blocking(move || Otel::start(&config).unwrap())
        .await
        .unwrap();
    let subscriber = tracing_subscriber::registry().with(otel.layer());
    tracing::subscriber::with_default(subscriber, || {
        let rollout = tracing::info_span!("rollout", digest = "abc123");
        let _r = rollout.enter();
        for phase in ["plan", "apply", "verify"] {
            let span = tracing::info_span!("phase", otel.name = phase);
            let _p = span.enter();
            tracing::info_span!("consul.kv_get").in_scope(|| {});
        }
    });
    tokio::task::spawn_blocking(move || otel.shutdown())
        .await
        .unwrap();

    let requests = got.lock().unwrap().clone();
    let spans: Vec<_> = requests
        .iter()
        .flat_map(|r| &r.resource_spans)
        .flat_map(|rs| &rs.scope_spans)
        .flat_map(|ss| &ss.spans)
        .collect();
    let service = requests
        .iter()
        .flat_map(|r| &r.resource_spans)
        .filter_map(|rs| rs.resource.as_ref())
        .flat_map(|r| &r.attributes)
        .find(|kv| kv.key == "service.name")
        .and_then(|kv| kv.value.as_ref())
        .and_then(|v| v.value.clone());
    assert_eq!(service, Some(Value::StringValue("edge-operator".into())));
    let by_name = |name: &str| {
        spans
            .iter()
            .filter(|s| s.name == name)
            .copied()
            .collect::<Vec<_>>()
    };
    let rollout = by_name("rollout");
    assert_eq!(rollout.len(), 1, "{spans:#?}");
    let rollout = rollout[0];
    assert!(rollout.parent_span_id.is_empty(), "the rollout is the root");
    for phase in ["plan", "apply", "verify"] {
        let p = by_name(phase);
        assert_eq!(p.len(), 1, "one {phase} span");
        assert_eq!(p[0].parent_span_id, rollout.span_id);
        assert_eq!(p[0].trace_id, rollout.trace_id, "one trace per rollout");
    }
    let calls = by_name("consul.kv_get");
    assert_eq!(calls.len(), 3);
    let phase_ids: Vec<_> = ["plan", "apply", "verify"]
        .iter()
        .map(|p| by_name(p)[0].span_id.clone())
        .collect();
    assert!(calls.iter().all(|c| phase_ids.contains(&c.parent_span_id)));
}

#[test]
fn without_an_endpoint_no_pipeline_is_configured() {
    // `init` builds an exporter (and its thread) only from a `Some` config.
    let config = OtlpConfig::from_env(|k| {
        matches!(k, "OTEL_SERVICE_NAME" | "OTEL_RESOURCE_ATTRIBUTES").then(|| "x=y".to_owned())
    });
    assert!(config.is_none(), "no endpoint, no export");
}
