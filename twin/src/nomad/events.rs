//! `GET /v1/event/stream`: newline-delimited JSON batches `{"Index", "Events"}` and `{}`
//! heartbeats every 10 s, filtered by `topic=Topic:key` and `namespace`, replaying buffered
//! events after `index`. The stream stays open until the client goes away.

use super::Inner;
use super::store::EventBatch;
use axum::body::Body;
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use std::sync::Arc;
use std::time::Duration;

/// Heartbeat period (Nomad's event broker default).
const HEARTBEAT: Duration = Duration::from_secs(10);

struct Subscription {
    topics: Vec<(String, String)>,
    namespace: String,
}

impl Subscription {
    fn wants(&self, ev: &Value) -> bool {
        let topic = ev.get("Topic").and_then(Value::as_str).unwrap_or("");
        let key = ev.get("Key").and_then(Value::as_str).unwrap_or("");
        let ns = ev.get("Namespace").and_then(Value::as_str).unwrap_or("");
        if self.namespace != "*" && !ns.is_empty() && ns != self.namespace {
            return false;
        }
        if self.topics.is_empty() {
            return true;
        }
        let filter_keys: Vec<&str> = ev
            .get("FilterKeys")
            .and_then(Value::as_array)
            .map(|a| a.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        self.topics.iter().any(|(t, k)| {
            (t == "*" || t == topic) && (k == "*" || k == key || filter_keys.contains(&k.as_str()))
        })
    }

    fn filter(&self, batch: &EventBatch) -> Option<String> {
        let events: Vec<&Value> = batch.events.iter().filter(|e| self.wants(e)).collect();
        if events.is_empty() {
            return None;
        }
        Some(format!(
            "{}\n",
            json!({"Index": batch.index, "Events": events})
        ))
    }
}

/// Serves the stream.
pub fn stream(inner: Arc<Inner>, params: &[(String, String)]) -> Response {
    let topics = params
        .iter()
        .filter(|(k, _)| k == "topic")
        .map(|(_, v)| match v.split_once(':') {
            Some((t, k)) => (t.to_string(), k.to_string()),
            None => (v.clone(), "*".to_string()),
        })
        .collect();
    let namespace = params
        .iter()
        .find(|(k, _)| k == "namespace")
        .map(|(_, v)| v.clone())
        .unwrap_or_else(|| "default".into());
    let from_index: u64 = params
        .iter()
        .find(|(k, _)| k == "index")
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0);
    let sub = Subscription { topics, namespace };
    let mut live = inner.events.subscribe();
    let replay: Vec<String> = if from_index > 0 {
        inner.read(|st| {
            st.events
                .iter()
                .filter(|b| b.index > from_index)
                .filter_map(|b| sub.filter(b))
                .collect()
        })
    } else {
        Vec::new()
    };
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<String, std::io::Error>>(64);
    tokio::spawn(async move {
        for line in replay {
            if tx.send(Ok(line)).await.is_err() {
                return;
            }
        }
        let mut heartbeat =
            tokio::time::interval_at(tokio::time::Instant::now() + HEARTBEAT, HEARTBEAT);
        loop {
            let line = tokio::select! {
                _ = heartbeat.tick() => Some("{}\n".to_string()),
                batch = live.recv() => match batch {
                    Ok(b) => sub.filter(&b),
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => None,
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
                },
                _ = tx.closed() => return,
            };
            if let Some(line) = line
                && tx.send(Ok(line)).await.is_err()
            {
                return;
            }
        }
    });
    let body = Body::from_stream(tokio_stream_from(rx));
    ([(http::header::CONTENT_TYPE, "application/json")], body).into_response()
}

fn tokio_stream_from(
    mut rx: tokio::sync::mpsc::Receiver<Result<String, std::io::Error>>,
) -> impl futures::Stream<Item = Result<String, std::io::Error>> {
    futures::stream::poll_fn(move |cx| rx.poll_recv(cx))
}
