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

/// RFC 3339 with nanoseconds, as Go's `time.Time` marshals UTC times.
pub fn rfc3339(nanos: i64) -> String {
    if nanos <= 0 {
        return ZERO_TIME.to_string();
    }
    let secs = nanos.div_euclid(1_000_000_000);
    let frac = nanos.rem_euclid(1_000_000_000);
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    let mut out = format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}",
        rem / 3600,
        (rem % 3600) / 60,
        rem % 60
    );
    if frac != 0 {
        let digits = format!("{frac:09}");
        out.push('.');
        out.push_str(digits.trim_end_matches('0'));
    }
    out.push('Z');
    out
}

// Howard Hinnant's days-to-civil algorithm.
fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (if m <= 2 { y + 1 } else { y }, m, d)
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
