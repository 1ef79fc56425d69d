//! UTC times as RFC 3339 text, with no time-zone database and no dependency.
//!
//! The operator stamps its status document in whole seconds; the twin prints times the way
//! Consul's and Nomad's Go code marshals a `time.Time` (`RFC3339Nano`: a fraction with its
//! trailing zeros cut, none when it is zero). Both read the calendar through the one
//! [`civil_from_days`] here, so a leap-day fix reaches every caller.
#![forbid(unsafe_code)]

use std::time::Duration;

/// `2024-05-01T12:00:00Z`: RFC 3339 in UTC at second precision, `since_epoch` after
/// 1970-01-01T00:00:00Z (any fraction is dropped).
#[must_use]
pub fn seconds(since_epoch: Duration) -> String {
    let mut out = date_time(since_epoch.as_secs());
    out.push('Z');
    out
}

/// `2024-05-01T12:00:00.5Z`: Go's `time.RFC3339Nano` in UTC, as Go marshals a `time.Time` to
/// JSON: nanoseconds with trailing zeros cut, and no fraction at all on a whole second.
#[must_use]
pub fn nanos(since_epoch: Duration) -> String {
    let mut out = date_time(since_epoch.as_secs());
    let frac = since_epoch.subsec_nanos();
    if frac != 0 {
        let digits = format!("{frac:09}");
        out.push('.');
        out.push_str(digits.trim_end_matches('0'));
    }
    out.push('Z');
    out
}

/// `2024-05-01T12:00:00.500000000Z`: RFC 3339 in UTC with all nine fraction digits, as the
/// twin's Consul ACL endpoints print `CreateTime` (Go itself cuts trailing zeros: [`nanos`]).
#[must_use]
pub fn nanos_fixed(since_epoch: Duration) -> String {
    format!(
        "{}.{:09}Z",
        date_time(since_epoch.as_secs()),
        since_epoch.subsec_nanos()
    )
}

/// `YYYY-MM-DDTHH:MM:SS` of `secs` since the epoch.
fn date_time(secs: u64) -> String {
    let days = i64::try_from(secs / 86_400).unwrap_or(i64::MAX / 2);
    let rem = secs % 86_400;
    let (year, month, day) = civil_from_days(days);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// Year, month and day of `days` since 1970-01-01 (Howard Hinnant's `civil_from_days`, exact
/// for the proleptic Gregorian calendar).
#[must_use]
pub fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    (yoe + era * 400 + i64::from(month <= 2), month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seconds_print_the_calendar_date_including_leap_days() {
        assert_eq!(seconds(Duration::ZERO), "1970-01-01T00:00:00Z");
        assert_eq!(
            seconds(Duration::from_secs(951_782_400)),
            "2000-02-29T00:00:00Z"
        );
        assert_eq!(
            seconds(Duration::from_millis(1_714_568_461_900)),
            "2024-05-01T13:01:01Z"
        );
    }

    #[test]
    fn nanos_cut_trailing_zeros_and_omit_a_zero_fraction_as_go_does() {
        assert_eq!(
            nanos(Duration::new(1_714_564_800, 0)),
            "2024-05-01T12:00:00Z"
        );
        assert_eq!(
            nanos(Duration::new(1_714_564_800, 500_000_000)),
            "2024-05-01T12:00:00.5Z"
        );
        assert_eq!(
            nanos(Duration::new(1_714_564_800, 123_456_789)),
            "2024-05-01T12:00:00.123456789Z"
        );
    }

    #[test]
    fn fixed_nanos_always_print_nine_digits() {
        assert_eq!(
            nanos_fixed(Duration::new(1_700_000_000, 5)),
            "2023-11-14T22:13:20.000000005Z"
        );
        assert_eq!(
            nanos_fixed(Duration::ZERO),
            "1970-01-01T00:00:00.000000000Z"
        );
    }

    #[test]
    fn days_before_the_epoch_are_civil_dates_too() {
        assert_eq!(civil_from_days(-1), (1969, 12, 31));
        assert_eq!(civil_from_days(-719_468), (0, 3, 1));
    }
}
