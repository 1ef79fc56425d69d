//! Blocking-query machinery shared by the twin's APIs: Go duration parsing, the `wait` rules of
//! Consul (default 5 min, capped at 10 min, plus up to wait/16 of jitter) and the wait loop itself.
//!
//! Every write publishes the new raft index on a `tokio::sync::watch` channel. A blocked reader
//! re-evaluates its query only when that channel changes, so an idle twin does no work and a write
//! wakes every watcher at once.

use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;

/// The server-side default when a client sends no `wait` (Consul `default_query_time`).
pub const DEFAULT_WAIT: Duration = Duration::from_secs(300);
/// The server-side maximum (Consul `max_query_time`).
pub const MAX_WAIT: Duration = Duration::from_secs(600);
/// Consul adds `RandomStagger(wait / JITTER_FRACTION)` to every blocking wait.
pub const JITTER_FRACTION: u32 = 16;

/// Parses a Go `time.ParseDuration` string (`"15000ms"`, `"5m"`, `"1h30m"`, `"1.5s"`, `"0"`).
///
/// Returns `None` for anything Go would reject, including a bare number other than `0`. A
/// negative wait means "use the default" to Consul, so it reads as zero, which callers treat the
/// same way.
pub fn parse_go_duration(text: &str) -> Option<Duration> {
    match go_duration::parse_go(text.trim()) {
        Ok(d) => Some(d),
        Err(go_duration::ParseError::Negative { .. }) => Some(Duration::ZERO),
        Err(_) => None,
    }
}

/// Formats a duration the way Go's `time.Duration.String()` does (`"15s"`, `"1m30s"`,
/// `"24h0m0s"`), used in error texts that quote Consul.
pub use go_duration::format as format_go_duration;

/// The effective wait of a blocking query: `requested` (or the default when absent or zero),
/// capped at [`MAX_WAIT`], plus a random stagger of up to a sixteenth of it, as Consul does.
pub fn effective_wait(requested: Option<Duration>) -> Duration {
    let base = match requested {
        Some(d) if !d.is_zero() => d.min(MAX_WAIT),
        _ => DEFAULT_WAIT,
    };
    let max_jitter = base / JITTER_FRACTION;
    if max_jitter.is_zero() {
        return base;
    }
    let jitter = rand::random_range(0..max_jitter.as_nanos() as u64);
    base + Duration::from_nanos(jitter)
}

/// Runs a blocking query: evaluates `compute` (which returns the result's index and body) and
/// returns it at once when `min_index` is 0 or the index is already past it; otherwise waits for
/// the raft index to move and re-evaluates, until the index passes `min_index` or `wait` elapses.
/// On timeout the current state is returned, as Consul does.
pub async fn block_until<T>(
    mut changes: watch::Receiver<u64>,
    min_index: u64,
    wait: Duration,
    mut compute: impl FnMut() -> (u64, T),
) -> (u64, T) {
    let deadline = Instant::now() + wait;
    loop {
        // Mark the current version seen *before* reading, so a write racing with the read
        // still wakes us.
        changes.borrow_and_update();
        let (index, value) = compute();
        if min_index == 0 || index > min_index {
            return (index, value);
        }
        match tokio::time::timeout_at(deadline, changes.changed()).await {
            Ok(Ok(())) => continue,
            // Timed out, or the state was dropped (shutdown): answer with what we have.
            Ok(Err(_)) | Err(_) => return compute(),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn go_durations_parse_like_time_parse_duration() {
        assert_eq!(parse_go_duration("15000ms"), Some(Duration::from_secs(15)));
        assert_eq!(parse_go_duration("5m"), Some(Duration::from_secs(300)));
        assert_eq!(parse_go_duration("1h30m"), Some(Duration::from_secs(5400)));
        assert_eq!(parse_go_duration("1.5s"), Some(Duration::from_millis(1500)));
        assert_eq!(parse_go_duration("0"), Some(Duration::ZERO));
        assert_eq!(parse_go_duration("10"), None);
        assert_eq!(parse_go_duration("abc"), None);
        assert_eq!(parse_go_duration(""), None);
    }

    #[test]
    fn go_durations_format_like_duration_string() {
        assert_eq!(format_go_duration(Duration::from_secs(10)), "10s");
        assert_eq!(format_go_duration(Duration::from_secs(86400)), "24h0m0s");
        assert_eq!(format_go_duration(Duration::from_secs(90)), "1m30s");
    }

    #[test]
    fn wait_defaults_to_five_minutes_and_is_capped_at_ten_with_a_sixteenth_of_jitter() {
        let d = effective_wait(None);
        assert!(d >= DEFAULT_WAIT && d < DEFAULT_WAIT + DEFAULT_WAIT / 16);
        let d = effective_wait(Some(Duration::from_secs(3600)));
        assert!(d >= MAX_WAIT && d < MAX_WAIT + MAX_WAIT / 16);
        let d = effective_wait(Some(Duration::from_secs(16)));
        assert!(d >= Duration::from_secs(16) && d < Duration::from_secs(17));
    }
}
