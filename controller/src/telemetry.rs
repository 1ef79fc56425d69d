//! Logs and traces. Logs: human-readable lines by default, JSON lines for log shippers, the
//! filter from `RUST_LOG` (default `info`), on stderr so stdout stays free for command output.
//!
//! Traces: exported over OTLP/HTTP (protobuf) through `tracing-opentelemetry` when the standard
//! variables ask for it: `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` (used as is) or
//! `OTEL_EXPORTER_OTLP_ENDPOINT` (`/v1/traces` appended), `OTEL_SERVICE_NAME` (default
//! `proxy-operator`) and `OTEL_RESOURCE_ATTRIBUTES` (`key=value,...`). `OTEL_SDK_DISABLED=true`
//! turns them off. With no endpoint nothing is built: no exporter, no thread, no cost.
//!
//! The exporter uses reqwest's blocking client on the batch processor's own thread: the async
//! client would need a Tokio runtime on that thread and panics without one.

use std::io::IsTerminal as _;
use std::sync::{Mutex, OnceLock};

use opentelemetry::KeyValue;
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::{Protocol, WithExportConfig as _};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_subscriber::EnvFilter;
use tracing_subscriber::Layer;
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;

/// Output format of the logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum LogFormat {
    /// One human-readable line per event, with the span fields (pass, generation, digest, phase).
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

/// Errors of telemetry setup.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A global subscriber was already installed (tests, or `init` called twice).
    #[error("failed to install the tracing subscriber: {0}")]
    Install(String),
    /// The OTLP exporter could not be built (a malformed endpoint, most often).
    #[error("failed to build the OTLP trace exporter for {endpoint}: {source}")]
    Exporter {
        /// The endpoint traces would go to.
        endpoint: String,
        /// What the exporter builder reported.
        #[source]
        source: opentelemetry_otlp::ExporterBuildError,
    },
}

/// The service name when `OTEL_SERVICE_NAME` is not set.
pub const DEFAULT_SERVICE_NAME: &str = "proxy-operator";

/// Where and as what traces are exported, read from the `OTEL_*` variables.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OtlpConfig {
    /// The full URL traces are POSTed to (`.../v1/traces`).
    pub traces_endpoint: String,
    /// `service.name`.
    pub service_name: String,
    /// Further resource attributes.
    pub resource_attributes: Vec<(String, String)>,
}

impl OtlpConfig {
    /// Reads the standard variables through `env`; `None` when no endpoint is set (or the SDK
    /// is disabled), which means: export nothing.
    pub fn from_env(env: impl Fn(&str) -> Option<String>) -> Option<Self> {
        let set = |k: &str| {
            env(k)
                .map(|v| v.trim().to_owned())
                .filter(|v| !v.is_empty())
        };
        if set("OTEL_SDK_DISABLED").is_some_and(|v| v.eq_ignore_ascii_case("true")) {
            return None;
        }
        let traces_endpoint = match set("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") {
            Some(e) => e,
            None => {
                let base = set("OTEL_EXPORTER_OTLP_ENDPOINT")?;
                format!("{}/v1/traces", base.trim_end_matches('/'))
            }
        };
        let mut resource_attributes: Vec<(String, String)> = set("OTEL_RESOURCE_ATTRIBUTES")
            .map(|text| parse_resource_attributes(&text))
            .unwrap_or_default();
        let from_attrs = resource_attributes
            .iter()
            .position(|(k, _)| k == "service.name")
            .map(|i| resource_attributes.remove(i).1);
        let service_name = set("OTEL_SERVICE_NAME")
            .or(from_attrs)
            .unwrap_or_else(|| DEFAULT_SERVICE_NAME.to_owned());
        Some(OtlpConfig {
            traces_endpoint,
            service_name,
            resource_attributes,
        })
    }
}

/// `key1=value1,key2=value2` with percent-encoded values (the OpenTelemetry spec's format);
/// malformed members are skipped, as the SDKs do.
fn parse_resource_attributes(text: &str) -> Vec<(String, String)> {
    text.split(',')
        .filter_map(|member| {
            let (k, v) = member.split_once('=')?;
            let k = k.trim();
            (!k.is_empty()).then(|| (k.to_owned(), percent_decode(v.trim())))
        })
        .collect()
}

fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        if bytes[i] == b'%'
            && let (Some(h), Some(l)) = (
                bytes.get(i + 1).copied().and_then(hex),
                bytes.get(i + 2).copied().and_then(hex),
            )
        {
            // Two hex digits make one byte.
            #[allow(clippy::cast_possible_truncation)]
            out.push((h * 16 + l) as u8);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// A running trace pipeline: the provider whose batch thread exports spans.
#[derive(Debug, Clone)]
pub struct Otel {
    provider: SdkTracerProvider,
}

impl Otel {
    /// Builds the exporter and its batch processor (which starts one thread).
    ///
    /// # Errors
    /// [`Error::Exporter`] when the endpoint is malformed.
    pub fn start(config: &OtlpConfig) -> Result<Self, Error> {
        // reqwest is built without a default TLS provider and panics without one, even for
        // http endpoints; installing ring is idempotent.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_protocol(Protocol::HttpBinary)
            .with_endpoint(config.traces_endpoint.clone())
            .build()
            .map_err(|source| Error::Exporter {
                endpoint: config.traces_endpoint.clone(),
                source,
            })?;
        let resource = Resource::builder_empty()
            .with_service_name(config.service_name.clone())
            .with_attributes(
                config
                    .resource_attributes
                    .iter()
                    .map(|(k, v)| KeyValue::new(k.clone(), v.clone())),
            )
            .build();
        let provider = SdkTracerProvider::builder()
            .with_batch_exporter(exporter)
            .with_resource(resource)
            .build();
        Ok(Otel { provider })
    }

    /// The `tracing` layer that turns spans into OpenTelemetry spans of this pipeline.
    pub fn layer<S>(&self) -> impl Layer<S> + Send + Sync + use<S>
    where
        S: tracing::Subscriber + Send + Sync + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
    {
        tracing_opentelemetry::layer().with_tracer(self.provider.tracer("proxy-operator"))
    }

    /// Exports what is buffered and stops the batch thread. Blocks: call it from a plain thread
    /// or `spawn_blocking`.
    pub fn shutdown(&self) {
        let _ = self.provider.shutdown();
    }
}

/// The pipeline [`init`] started, for [`shutdown`].
static GLOBAL: OnceLock<Mutex<Option<Otel>>> = OnceLock::new();

/// Installs the global subscriber: logs in `format`, plus trace export when the `OTEL_*`
/// variables name an endpoint (see the module docs).
///
/// # Errors
/// [`Error::Install`] when a subscriber is already set, [`Error::Exporter`] when the endpoint
/// is malformed.
pub fn init(format: LogFormat) -> Result<(), Error> {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    // Colour codes only for a person at a terminal; log files and shippers get plain text.
    // No span-close lines: a rollout being verified runs a pass every 250 ms, and each pass's
    // events already carry the span's fields (pass, generation, digest, phase).
    let fmt = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    let fmt = match format {
        LogFormat::Text => fmt.boxed(),
        LogFormat::Json => fmt.json().with_current_span(true).boxed(),
    };
    let otel = match OtlpConfig::from_env(|k| std::env::var(k).ok()) {
        Some(config) => Some(Otel::start(&config)?),
        None => None,
    };
    let otel_layer = otel.as_ref().map(Otel::layer);
    tracing_subscriber::registry()
        .with(filter)
        .with(fmt)
        .with(otel_layer)
        .try_init()
        .map_err(|e| Error::Install(e.to_string()))?;
    if let Some(otel) = otel {
        let _ = GLOBAL
            .get_or_init(|| Mutex::new(None))
            .lock()
            .map(|mut g| *g = Some(otel));
    }
    Ok(())
}

/// Flushes and stops the trace export [`init`] started, if any. Call once before the process
/// exits (from a blocking context), or the last spans are lost.
pub fn shutdown() {
    let otel = GLOBAL
        .get()
        .and_then(|g| g.lock().ok().and_then(|mut g| g.take()));
    if let Some(otel) = otel {
        otel.shutdown();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env<'a>(vars: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<String> + 'a {
        move |k| {
            vars.iter()
                .find(|(n, _)| *n == k)
                .map(|(_, v)| (*v).to_owned())
        }
    }

    #[test]
    fn no_endpoint_or_a_disabled_sdk_means_no_export() {
        assert_eq!(OtlpConfig::from_env(env(&[])), None);
        assert_eq!(
            OtlpConfig::from_env(env(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "  ")])),
            None
        );
        assert_eq!(
            OtlpConfig::from_env(env(&[
                ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4318"),
                ("OTEL_SDK_DISABLED", "TRUE")
            ])),
            None
        );
    }

    #[test]
    fn the_base_endpoint_gets_the_traces_path_and_the_signal_endpoint_is_used_as_is() {
        let c = OtlpConfig::from_env(env(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4318/")]));
        assert_eq!(
            c.map(|c| c.traces_endpoint).as_deref(),
            Some("http://c:4318/v1/traces")
        );
        let c = OtlpConfig::from_env(env(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4318"),
            ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "http://t:9/x"),
        ]));
        assert_eq!(
            c.map(|c| c.traces_endpoint).as_deref(),
            Some("http://t:9/x")
        );
    }

    #[test]
    fn service_name_comes_from_its_variable_then_the_resource_attributes_then_the_default() {
        let base = ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4318");
        let name = |vars: &[(&str, &str)]| OtlpConfig::from_env(env(vars)).map(|c| c.service_name);
        assert_eq!(name(&[base]).as_deref(), Some(DEFAULT_SERVICE_NAME));
        let attrs = (
            "OTEL_RESOURCE_ATTRIBUTES",
            "service.name=edge,deployment.environment=prod%20eu, bad",
        );
        assert_eq!(name(&[base, attrs]).as_deref(), Some("edge"));
        assert_eq!(
            name(&[base, attrs, ("OTEL_SERVICE_NAME", "op")]).as_deref(),
            Some("op")
        );
        let c = OtlpConfig::from_env(env(&[base, attrs])).map(|c| c.resource_attributes);
        assert_eq!(
            c,
            Some(vec![(
                "deployment.environment".to_owned(),
                "prod eu".to_owned()
            )])
        );
    }
}
