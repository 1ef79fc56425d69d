//! Trace export over OTLP/HTTP: an in-test receiver on loopback decodes what the operator sends.
#![allow(clippy::unwrap_used, clippy::panic)] // tests fail loudly

mod surface_common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::routing::post;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::trace::v1::Span;
use prost::Message as _;
use proxy_operator::consul::fake::FakeConsul;
use proxy_operator::nomad::fake::FakeNomad;
use proxy_operator::proxy;
use proxy_operator::proxy::probe::fake::FakeProbe;
use proxy_operator::reconcile::{Config, Operator};
use proxy_operator::render::{self, RenderContext};
use proxy_operator::spec::{self, status::Phase};
use proxy_operator::telemetry::{Otel, OtlpConfig};
use surface_common::{attribute, spans_in, stages};
use tracing_subscriber::layer::SubscriberExt as _;

type Received = Arc<Mutex<Vec<ExportTraceServiceRequest>>>;

/// The receiver on a runtime of its own, so a test on the paused clock can still take exports.
fn receiver_thread() -> (String, Received) {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            tx.send(receiver().await).unwrap();
            std::future::pending::<()>().await;
        });
    });
    rx.recv().unwrap()
}

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
    let spans = spans_in(&requests);
    let service = requests
        .iter()
        .flat_map(|r| &r.resource_spans)
        .filter_map(|rs| rs.resource.as_ref())
        .flat_map(|r| &r.attributes)
        .find(|kv| kv.key == "service.name")
        .and_then(|kv| kv.value.as_ref())
        .and_then(|v| v.value.clone());
    assert_eq!(service, Some(Value::StringValue("edge-operator".into())));
    let by_name = |name: &str| spans.iter().filter(|s| s.name == name).collect::<Vec<_>>();
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

fn otlp_config(base: &str) -> OtlpConfig {
    OtlpConfig::from_env(|k| (k == "OTEL_EXPORTER_OTLP_ENDPOINT").then(|| base.to_owned())).unwrap()
}

fn doc(header: &str, min_healthy: &str) -> String {
    format!(
        "apiVersion: proxy-operator.io/v1alpha1\nkind: ProxyConfig\nspec:\n  proxy: traefik\n  rollout:\n    healthyDeadline: 20s\n    minHealthyTime: {min_healthy}\n  middlewares:\n    securityHeaders:\n      headers:\n        X-Edition: \"{header}\"\n"
    )
}

/// Puts `document` and makes the fake proxy report what it renders as loaded.
fn put(consul: &FakeConsul, probe: &FakeProbe, document: &str) {
    consul.set("po/config", document);
    let spec = spec::load(document.as_bytes()).unwrap();
    let ctx = RenderContext {
        prefix: "po".into(),
        owner: "po".into(),
        basic_auth_users: None,
        ..RenderContext::default()
    };
    let rendered = render::render(&spec, &ctx).unwrap();
    probe.set_enabled(&proxy::traefik::expected_entries(
        &rendered.traefik_kv,
        "po/traefik/",
    ));
}

/// Passes on the paused clock until the status phase is `phase`.
async fn until(op: &mut Operator<FakeConsul, FakeNomad, FakeProbe>, phase: Phase) {
    for _ in 0..100 {
        let action = op.reconcile().await;
        if op.status().phase == phase {
            return;
        }
        tokio::time::advance(action.requeue_after.unwrap_or(Duration::from_millis(250))).await;
    }
    panic!("never {phase:?}; phase {}", op.phase().name());
}

#[tokio::test(start_paused = true)]
async fn a_rollout_traces_plan_apply_and_verify_and_a_rolled_back_one_also_rollback() {
    let (base, got) = receiver_thread();
    let config = otlp_config(&base);
    let otel = std::thread::spawn(move || Otel::start(&config).unwrap())
        .join()
        .unwrap();
    let consul = FakeConsul::new();
    let nomad = FakeNomad::new();
    let probe = FakeProbe::healthy();
    let mut op = Operator::new(
        Config::new("po"),
        consul.clone(),
        nomad.clone(),
        probe.clone(),
    );
    {
        let _guard =
            tracing::subscriber::set_default(tracing_subscriber::registry().with(otel.layer()));
        // A fresh cluster: the policy tree and the job, verified, Ready.
        put(&consul, &probe, &doc("good", "2s"));
        op.reconcile().await;
        nomad.set_allocation_health("proxy", true);
        until(&mut op, Phase::Ready).await;
        // A policy change the proxy never loads: verified until the deadline, then reverted.
        put(&consul, &probe, &doc("bad", "2s"));
        probe.set_ping(false);
        until(&mut op, Phase::RolledBack).await;
    }
    std::thread::spawn(move || otel.shutdown()).join().unwrap();

    let spans = spans_in(&got.lock().unwrap());
    let roots: Vec<_> = spans
        .iter()
        .filter(|s| s.name == "rollout" && s.parent_span_id.is_empty())
        .filter(|s| attribute(s, "outcome").is_some_and(|o| o != "none"))
        .collect();
    let outcomes: Vec<_> = roots.iter().map(|r| attribute(r, "outcome")).collect();
    assert_eq!(roots.len(), 2, "two rollouts: {outcomes:?}");
    let ready = roots
        .iter()
        .find(|r| attribute(r, "outcome").as_deref() == Some("succeeded"))
        .expect("the first rollout succeeded");
    let rolled_back = roots
        .iter()
        .find(|r| attribute(r, "outcome").as_deref() == Some("rolled_back"))
        .expect("the second rolled back");

    let all: Vec<&Span> = spans.iter().collect();
    let first = stages(&all, ready);
    assert_eq!(first, ["plan", "apply", "verify"], "{first:?}");
    let second = stages(&all, rolled_back);
    assert_eq!(
        second,
        ["plan", "apply", "verify", "rollback"],
        "{second:?}"
    );
    for root in [ready, rolled_back] {
        for child in spans.iter().filter(|s| s.parent_span_id == root.span_id) {
            assert_eq!(child.trace_id, root.trace_id, "one trace per rollout");
        }
    }
    assert_ne!(ready.trace_id, rolled_back.trace_id);
    // The passes nest under their stage: every reconcile pass of the rollout is a child of one
    // of its stages, never a root of its own.
    let stage_ids: Vec<_> = spans
        .iter()
        .filter(|s| s.parent_span_id == rolled_back.span_id)
        .map(|s| s.span_id.clone())
        .collect();
    assert!(
        spans
            .iter()
            .filter(|s| s.name == "reconcile" && s.trace_id == rolled_back.trace_id)
            .all(|s| stage_ids.contains(&s.parent_span_id))
    );
}

#[test]
fn without_an_endpoint_no_pipeline_is_configured() {
    // `init` builds an exporter (and its thread) only from a `Some` config.
    let config = OtlpConfig::from_env(|k| {
        matches!(k, "OTEL_SERVICE_NAME" | "OTEL_RESOURCE_ATTRIBUTES").then(|| "x=y".to_owned())
    });
    assert!(config.is_none(), "no endpoint, no export");
}
