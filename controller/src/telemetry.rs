//! Tracing subscriber setup: human-readable lines by default, JSON lines for log shippers.
//!
//! The filter comes from `RUST_LOG` (e.g. `proxy_operator=debug`), defaulting to `info`. Logs go
//! to stderr so stdout stays free for command output.

use std::io::IsTerminal as _;

use tracing_subscriber::EnvFilter;

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
}

/// Installs the global subscriber.
///
/// # Errors
/// [`Error::Install`] when a subscriber is already set.
pub fn init(format: LogFormat) -> Result<(), Error> {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        // Colour codes only for a person at a terminal; log files and shippers get plain text.
        // No span-close lines: a rollout being verified runs a pass every 250 ms, and each pass's
        // events already carry the span's fields (pass, generation, digest, phase).
        .with_ansi(std::io::stderr().is_terminal());
    let result = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().with_current_span(true).try_init(),
    };
    result.map_err(|e| Error::Install(e.to_string()))
}
