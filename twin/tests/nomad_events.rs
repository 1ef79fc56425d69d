//! `/v1/event/stream`: ndjson batches filtered by topic, replay from `index`, and a stream that
//! stays open (Traefik's watch mode depends on it).
#![allow(clippy::unwrap_used, clippy::panic)]

mod nomad_support;

use futures::StreamExt;
use nomad_support::{Nomad, sh_job};
use serde_json::{Value, json};
use std::time::Duration;

fn service_job() -> Value {
    let mut job = sh_job("evjob", "exec sleep 1000");
    job["TaskGroups"][0]["Networks"] = json!([{"DynamicPorts": [{"Label": "http"}]}]);
    job["TaskGroups"][0]["Services"] = json!([{"Name": "evsvc", "PortLabel": "http", "Provider": "nomad", "Tags": ["traefik.enable=true"]}]);
    job
}

/// Reads ndjson lines until `want` matches one or the timeout passes.
async fn read_until(
    stream: &mut (impl futures::Stream<Item = reqwest::Result<bytes::Bytes>> + Unpin),
    buf: &mut String,
    timeout: Duration,
    want: impl Fn(&Value) -> bool,
) -> Option<Value> {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        while let Some(pos) = buf.find('\n') {
            let line: String = buf.drain(..=pos).collect();
            let v: Value = serde_json::from_str(line.trim()).unwrap();
            if want(&v) {
                return Some(v);
            }
        }
        match tokio::time::timeout_at(deadline, stream.next()).await {
            Ok(Some(Ok(chunk))) => buf.push_str(std::str::from_utf8(&chunk).unwrap()),
            _ => return None,
        }
    }
}

#[tokio::test]
async fn service_topic_streams_registration_events_and_the_stream_stays_open() {
    let n = Nomad::start().await;
    let resp = reqwest::get(format!(
        "{}/v1/event/stream?index=0&topic=Service:*",
        n.base
    ))
    .await
    .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    assert_eq!(resp.headers()["content-type"], "application/json");
    let mut stream = Box::pin(resp.bytes_stream());
    let mut buf = String::new();
    n.register(service_job()).await;
    let batch = read_until(&mut stream, &mut buf, Duration::from_secs(15), |v| {
        v["Events"]
            .as_array()
            .is_some_and(|e| e.iter().any(|e| e["Type"] == "ServiceRegistration"))
    })
    .await
    .expect("no ServiceRegistration event");
    let ev = &batch["Events"][0];
    assert_eq!(ev["Topic"], "Service");
    assert_eq!(ev["Payload"]["Service"]["ServiceName"], "evsvc");
    assert!(batch["Index"].as_u64().unwrap() > 0);
    assert!(
        batch["Events"]
            .as_array()
            .unwrap()
            .iter()
            .all(|e| e["Topic"] == "Service"),
        "topic filter let other topics through: {batch}"
    );
    n.send("DELETE", "/v1/job/evjob", None).await;
    let gone = read_until(&mut stream, &mut buf, Duration::from_secs(15), |v| {
        v["Events"]
            .as_array()
            .is_some_and(|e| e.iter().any(|e| e["Type"] == "ServiceDeregistration"))
    })
    .await;
    assert!(
        gone.is_some(),
        "no ServiceDeregistration event; the stream must stay open"
    );
    n.shutdown().await;
}

#[tokio::test]
async fn stream_replays_buffered_events_after_the_given_index() {
    let n = Nomad::start().await;
    let before = n.send("GET", "/v1/jobs", None).await.index();
    n.register(sh_job("replayed", "exec sleep 1000")).await;
    let resp = reqwest::get(format!(
        "{}/v1/event/stream?index={before}&topic=Job:replayed",
        n.base
    ))
    .await
    .unwrap();
    let mut stream = Box::pin(resp.bytes_stream());
    let mut buf = String::new();
    let batch = read_until(&mut stream, &mut buf, Duration::from_secs(5), |v| {
        v["Index"].as_u64().is_some()
    })
    .await
    .expect("nothing replayed");
    assert!(batch["Index"].as_u64().unwrap() > before);
    assert_eq!(batch["Events"][0]["Topic"], "Job");
    assert_eq!(batch["Events"][0]["Key"], "replayed");
    assert_eq!(batch["Events"][0]["Payload"]["Job"]["ID"], "replayed");
    n.shutdown().await;
}
