//! Go-style durations (`10s`, `1m30s`, `500ms`), the syntax Traefik and Nomad use. The grammar
//! and its arithmetic live in the `go-duration` crate; this is the document's view of it.

use std::time::Duration;

/// The longest gate duration (`spec.rollout.healthyDeadline`, `minHealthyTime`) a document may
/// ask for, and the longest one the rollout machine accepts back from a journal: one limit, so a
/// document that validates can always be journaled and resumed, and a journal holding more is
/// not something this operator wrote. It also keeps the clock arithmetic far from overflow.
pub const MAX_GATE_DURATION: Duration = Duration::from_secs(7 * 24 * 3600);

/// Parses a duration in the strict form a ProxyConfig accepts ([`go_duration::parse`]); the
/// error names the text and what would be valid, ready for a field error.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    go_duration::parse(text).map_err(|e| e.to_string())
}

/// Formats a duration the way Go prints it (`1m30s`, `500ms`, `0s`).
pub use go_duration::format as format_duration;
