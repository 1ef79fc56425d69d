//! Helpers of the surface tests: a strict OpenMetrics text checker, a loopback server, the
//! twin's clients and readers of exported OTLP spans.
#![allow(dead_code, clippy::unwrap_used, clippy::panic)] // each test binary uses a part

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;

use hashistack_twin::Twin;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::trace::v1::Span;
use proxy_operator::consul::ConsulClient;
use proxy_operator::nomad::NomadClient;
use proxy_operator::server::{self, Surface};
use proxy_operator::transport::{Api, ClientConfig};

/// One parsed sample.
#[derive(Debug, Clone)]
pub struct Sample {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub value: f64,
}

/// A parsed exposition: families with their type, and every sample.
#[derive(Debug, Default)]
pub struct Exposition {
    pub types: BTreeMap<String, String>,
    pub samples: Vec<Sample>,
}

impl Exposition {
    /// Every sample name (with suffixes such as `_total`, `_bucket`).
    pub fn names(&self) -> BTreeSet<String> {
        self.samples.iter().map(|s| s.name.clone()).collect()
    }

    /// The value of the sample with this name whose labels include `labels`.
    pub fn value(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        self.samples
            .iter()
            .find(|s| {
                s.name == name
                    && labels
                        .iter()
                        .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
            })
            .map(|s| s.value)
    }
}

fn valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

/// Suffixes a sample of a family of this type may carry (OpenMetrics 1.0, "Metric types").
fn suffixes(kind: &str) -> &'static [&'static str] {
    match kind {
        "counter" => &["_total", "_created"],
        "histogram" => &["_bucket", "_count", "_sum", "_created"],
        "summary" => &["", "_count", "_sum", "_created"],
        "info" => &["_info"],
        "gauge" | "stateset" | "unknown" => &[""],
        _ => &[],
    }
}

fn parse_labels(text: &str, line: &str) -> BTreeMap<String, String> {
    let mut labels = BTreeMap::new();
    let mut rest = text;
    while !rest.is_empty() {
        let eq = rest
            .find('=')
            .unwrap_or_else(|| panic!("label without =: {line}"));
        let name = &rest[..eq];
        assert!(valid_name(name), "bad label name {name:?}: {line}");
        rest = &rest[eq + 1..];
        assert!(rest.starts_with('"'), "unquoted label value: {line}");
        let mut value = String::new();
        let mut chars = rest[1..].char_indices();
        let end = loop {
            match chars.next() {
                Some((i, '"')) => break i + 1,
                Some((_, '\\')) => match chars.next() {
                    Some((_, 'n')) => value.push('\n'),
                    Some((_, c @ ('"' | '\\'))) => value.push(c),
                    other => panic!("bad escape {other:?}: {line}"),
                },
                Some((_, c)) => value.push(c),
                None => panic!("unterminated label value: {line}"),
            }
        };
        assert!(
            labels.insert(name.to_owned(), value).is_none(),
            "duplicate label: {line}"
        );
        rest = &rest[end + 1..];
        if let Some(r) = rest.strip_prefix(',') {
            rest = r;
        } else {
            assert!(rest.is_empty(), "junk after label: {line}");
        }
    }
    labels
}

/// Parses OpenMetrics text strictly: metadata before samples, known types, sample names that
/// belong to a declared family with a suffix allowed for its type, valid label syntax, float
/// values, and `# EOF` as the last line.
pub fn parse_openmetrics(text: &str) -> Exposition {
    let mut exp = Exposition::default();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.last(), Some(&"# EOF"), "ends with # EOF");
    assert!(text.ends_with("# EOF\n"), "# EOF ends with a newline");
    for line in &lines[..lines.len() - 1] {
        if let Some(meta) = line.strip_prefix("# ") {
            let mut parts = meta.splitn(3, ' ');
            let (kw, name) = (parts.next().unwrap(), parts.next().unwrap_or_default());
            assert!(valid_name(name), "bad family name: {line}");
            match kw {
                "TYPE" => {
                    let kind = parts.next().unwrap_or_default();
                    assert!(!suffixes(kind).is_empty(), "unknown type: {line}");
                    assert!(
                        exp.types.insert(name.to_owned(), kind.to_owned()).is_none(),
                        "family declared twice: {line}"
                    );
                }
                "HELP" => {}
                "UNIT" => {
                    let unit = parts.next().unwrap_or_default();
                    assert!(
                        name.ends_with(&format!("_{unit}")),
                        "unit not in the name: {line}"
                    );
                }
                _ => panic!("unknown metadata: {line}"),
            }
            continue;
        }
        assert!(!line.starts_with('#'), "comment not allowed: {line}");
        let (head, value) = line
            .rsplit_once(' ')
            .unwrap_or_else(|| panic!("no value: {line}"));
        let value: f64 = match value {
            "+Inf" => f64::INFINITY,
            "-Inf" => f64::NEG_INFINITY,
            v => v.parse().unwrap_or_else(|_| panic!("bad value: {line}")),
        };
        let (name, labels) = match head.split_once('{') {
            Some((n, l)) => {
                let l = l
                    .strip_suffix('}')
                    .unwrap_or_else(|| panic!("unclosed labels: {line}"));
                (n, parse_labels(l, line))
            }
            None => (head, BTreeMap::new()),
        };
        assert!(valid_name(name), "bad sample name: {line}");
        let family = exp
            .types
            .iter()
            .filter(|(f, kind)| suffixes(kind).iter().any(|s| format!("{f}{s}") == name))
            .map(|(f, _)| f.clone())
            .next();
        assert!(family.is_some(), "sample of no declared family: {line}");
        exp.samples.push(Sample {
            name: name.to_owned(),
            labels,
            value,
        });
    }
    exp
}

/// Starts the listener on a free loopback port; returns its address and a shutdown sender.
pub async fn start(surface: Surface) -> (SocketAddr, tokio::sync::oneshot::Sender<()>) {
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let (addr, _task) = server::spawn("127.0.0.1:0".parse().unwrap(), surface, async move {
        let _ = rx.await;
    })
    .await
    .unwrap();
    (addr, tx)
}

/// A plain HTTP client (reqwest needs a TLS provider installed even for http).
pub fn client() -> reqwest::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder().no_proxy().build().unwrap()
}

/// The real Consul and Nomad clients of `twin`.
pub fn twin_clients(twin: &Twin) -> (ConsulClient, NomadClient) {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let consul = ConsulClient::new(
        &ClientConfig::for_address(Api::Consul, &twin.consul_addr().to_string()).unwrap(),
    )
    .unwrap();
    let nomad = NomadClient::new(
        &ClientConfig::for_address(Api::Nomad, &twin.nomad_addr().to_string()).unwrap(),
    )
    .unwrap();
    (consul, nomad)
}

/// Every span of the export requests a receiver got.
pub fn spans_in(requests: &[ExportTraceServiceRequest]) -> Vec<Span> {
    requests
        .iter()
        .flat_map(|r| &r.resource_spans)
        .flat_map(|rs| &rs.scope_spans)
        .flat_map(|ss| ss.spans.clone())
        .collect()
}

/// A string (or integer) attribute of an exported span.
pub fn attribute(span: &Span, key: &str) -> Option<String> {
    span.attributes
        .iter()
        .find(|kv| kv.key == key)
        .and_then(|kv| kv.value.as_ref())
        .and_then(|v| match &v.value {
            Some(Value::StringValue(s)) => Some(s.clone()),
            Some(Value::IntValue(i)) => Some(i.to_string()),
            _ => None,
        })
}

/// The names of `root`'s children in the order they started (a stage's span closes after the
/// pass that ran in it, so the export order is not the stage order).
pub fn stages<'a>(spans: &[&'a Span], root: &Span) -> Vec<&'a str> {
    let mut children: Vec<&Span> = spans
        .iter()
        .filter(|s| s.parent_span_id == root.span_id)
        .copied()
        .collect();
    children.sort_by_key(|s| s.start_time_unix_nano);
    children.iter().map(|s| s.name.as_str()).collect()
}
