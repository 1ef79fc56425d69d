//! Small helpers: clocks in Nomad's two time formats and Go-style duration parsing and printing.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Nanoseconds since the Unix epoch (Nomad's `CreateTime`/`ModifyTime`/`SubmitTime`).
pub fn now_nanos() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as i64)
        .unwrap_or(0)
}

/// Go's zero `time.Time` as Nomad prints it.
pub const ZERO_TIME: &str = "0001-01-01T00:00:00Z";

/// RFC 3339 with nanoseconds, as Go's `time.Time` marshals UTC times; a time at or before the
/// epoch is Nomad's unset time, [`ZERO_TIME`].
pub fn rfc3339(nanos: i64) -> String {
    match u64::try_from(nanos) {
        Ok(n) if n > 0 => rfc3339_utc::nanos(Duration::from_nanos(n)),
        _ => ZERO_TIME.to_string(),
    }
}

/// Parses a Go duration string (`"7000ms"`, `"5s"`, `"1m30s"`); `None` when Go would reject it.
pub fn parse_go_duration(text: &str) -> Option<Duration> {
    ::go_duration::parse_go(text).ok()
}

/// Prints a duration like Go's `time.Duration.String` (`15s`, `30m0s`, `1.5s`).
pub use ::go_duration::format as go_duration;

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn timestamps_print_like_go_utc_times() {
        assert_eq!(
            rfc3339(1_495_755_683_227_522_000),
            "2017-05-25T23:41:23.227522Z"
        );
        assert_eq!(rfc3339(0), ZERO_TIME);
    }

    #[test]
    fn go_durations_parse_and_print() {
        assert_eq!(parse_go_duration("7000ms"), Some(Duration::from_secs(7)));
        assert_eq!(parse_go_duration("1m30s"), Some(Duration::from_secs(90)));
        assert_eq!(parse_go_duration("10"), None);
        assert_eq!(go_duration(Duration::from_secs(1800)), "30m0s");
        assert_eq!(go_duration(Duration::from_secs(15)), "15s");
    }
}
