//! Go's `time.Duration` as text (`10s`, `1m30s`, `1.5ms`), exact to the nanosecond.
//!
//! Traefik, Nomad and Consul all read and print durations with Go's `time.ParseDuration` and
//! `time.Duration.String()`. This crate is the one place that speaks that syntax, so every reader
//! and writer in the workspace agrees on it to the nanosecond. Copies with different rounding
//! once printed a 500 µs rate-limit period as `0s`, which made Traefik panic on a zero ticker.
//!
//! Two grammars, one implementation:
//! - [`parse`] is the strict form the `ProxyConfig` document accepts: every number carries a unit
//!   and has digits on both sides of a decimal point, and there is no sign.
//! - [`parse_go`] is exactly Go's grammar, for text that Go programs wrote (API answers, query
//!   parameters): an optional sign, a bare `0`, `.5s` and `1.s`.
//!
//! Two formats, both exact and both readable by [`parse`]:
//! - [`format`] prints what Go's `time.Duration.String()` prints (`1h0m0s`, `1.5s`, `500µs`);
//! - [`format_whole`] prints one integer in the largest unit that divides the value (`2m`,
//!   `1500ms`), for configuration files people read.
#![forbid(unsafe_code)]

use std::time::Duration;

/// Go's `time.Duration` is an int64 of nanoseconds; anything longer cannot be passed on.
const MAX_NANOS: u128 = i64::MAX as u128;

const NANOS_PER_SECOND: u128 = 1_000_000_000;

/// Why a duration text was rejected. The messages quote the text and say what would be accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    /// The text is empty.
    #[error("is empty; expected a duration such as \"10s\", \"1m30s\" or \"500ms\"")]
    Empty,
    /// The text is not a sequence of `<number><unit>`.
    #[error("{text:?} is not a duration; expected e.g. \"10s\", \"1m30s\" or \"500ms\"")]
    Malformed {
        /// The whole text.
        text: String,
    },
    /// A number has no unit after it.
    #[error("{text:?} lacks a unit; expected e.g. \"{number}s\"")]
    MissingUnit {
        /// The whole text.
        text: String,
        /// The number without a unit.
        number: String,
    },
    /// A unit is not one of Go's.
    #[error("{text:?} has an unknown unit {unit:?}; units are ns, us, ms, s, m, h")]
    UnknownUnit {
        /// The whole text.
        text: String,
        /// The unit that was not recognised.
        unit: String,
    },
    /// The value does not fit Go's int64 of nanoseconds.
    #[error("{text:?} is too long; durations must be under 290 years")]
    TooLong {
        /// The whole text.
        text: String,
    },
    /// A valid Go duration below zero, which `std::time::Duration` cannot hold
    /// (only [`parse_go`] returns this).
    #[error("{text:?} is negative; a duration must be zero or longer")]
    Negative {
        /// The whole text.
        text: String,
    },
}

/// Parses the strict form: one or more `<number><unit>` with units `ns`, `us`/`µs`, `ms`, `s`,
/// `m`, `h`; numbers may have a fraction (`1.5s`). Signs, bare numbers (even `0`), `.5s` and
/// `1.s` are rejected. Fractions are computed as Go does (digits × unit / 10^digits, truncated).
pub fn parse(text: &str) -> Result<Duration, ParseError> {
    parse_units(text, text, Grammar::Strict)
}

/// Parses exactly what Go's `time.ParseDuration` accepts: [`parse`]'s form plus an optional
/// leading `+` or `-`, a bare `0`, and fractions without digits on one side (`.5s`, `1.s`).
/// Negative values other than zero are [`ParseError::Negative`], since a `Duration` is unsigned.
pub fn parse_go(text: &str) -> Result<Duration, ParseError> {
    let (negative, body) = match text.as_bytes().first() {
        Some(b'-') => (true, &text[1..]),
        Some(b'+') => (false, &text[1..]),
        _ => (false, text),
    };
    if body == "0" {
        return Ok(Duration::ZERO);
    }
    if body.is_empty() && !text.is_empty() {
        return Err(malformed(text));
    }
    let d = parse_units(text, body, Grammar::Go)?;
    if negative && !d.is_zero() {
        return Err(ParseError::Negative { text: text.into() });
    }
    Ok(d)
}

#[derive(Clone, Copy, PartialEq)]
enum Grammar {
    Strict,
    Go,
}

/// Parses the `<number><unit>` sequence `body` of `text` (which may carry a sign in front).
fn parse_units(text: &str, body: &str, grammar: Grammar) -> Result<Duration, ParseError> {
    if body.is_empty() {
        return Err(ParseError::Empty);
    }
    let mut total: u128 = 0;
    let mut rest = body;
    while !rest.is_empty() {
        let whole_len = rest
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(rest.len());
        let (whole, after_whole) = rest.split_at(whole_len);
        let (fraction, after_number, has_point) = match after_whole.strip_prefix('.') {
            Some(tail) => {
                let len = tail
                    .find(|c: char| !c.is_ascii_digit())
                    .unwrap_or(tail.len());
                (&tail[..len], &tail[len..], true)
            }
            None => ("", after_whole, false),
        };
        if whole.is_empty() && fraction.is_empty() {
            return Err(malformed(text));
        }
        let number = &rest[..rest.len() - after_number.len()];
        let unit_len = after_number
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(after_number.len());
        let (unit, next) = after_number.split_at(unit_len);
        let unit_nanos = unit_nanos(text, number, unit)?;
        if grammar == Grammar::Strict && (whole.is_empty() || (has_point && fraction.is_empty())) {
            return Err(malformed(text));
        }
        total = total
            .checked_add(component_nanos(text, whole, fraction, unit_nanos)?)
            .filter(|t| *t <= MAX_NANOS)
            .ok_or_else(|| too_long(text))?;
        rest = next;
    }
    let secs = u64::try_from(total / NANOS_PER_SECOND).map_err(|_| too_long(text))?;
    let sub = u32::try_from(total % NANOS_PER_SECOND).map_err(|_| too_long(text))?;
    Ok(Duration::new(secs, sub))
}

fn unit_nanos(text: &str, number: &str, unit: &str) -> Result<u128, ParseError> {
    Ok(match unit {
        "ns" => 1,
        // Go accepts both the micro sign (U+00B5) and the Greek mu (U+03BC).
        "us" | "µs" | "μs" => 1_000,
        "ms" => 1_000_000,
        "s" => NANOS_PER_SECOND,
        "m" => 60 * NANOS_PER_SECOND,
        "h" => 3_600 * NANOS_PER_SECOND,
        "" => {
            return Err(ParseError::MissingUnit {
                text: text.into(),
                number: number.into(),
            });
        }
        _ => {
            return Err(ParseError::UnknownUnit {
                text: text.into(),
                unit: unit.into(),
            });
        }
    })
}

/// The nanoseconds of one `<whole>.<fraction><unit>` component, at most [`MAX_NANOS`].
fn component_nanos(
    text: &str,
    whole: &str,
    fraction: &str,
    unit_nanos: u128,
) -> Result<u128, ParseError> {
    let whole: u128 = if whole.is_empty() {
        0
    } else {
        whole.parse().map_err(|_| too_long(text))?
    };
    // Bound before adding the fraction, so no intermediate can approach u128::MAX.
    if whole > MAX_NANOS / unit_nanos {
        return Err(too_long(text));
    }
    // As Go's ParseDuration: the fraction's digits form an integer `f` over `scale` (a power of
    // ten) and add `f * unit / scale`, truncated; digits past what an int64 holds are dropped.
    // Dividing the unit by ten per digit instead loses precision (36 ns / 10 -> 3).
    let (mut f, mut scale): (u128, u128) = (0, 1);
    for digit in fraction.bytes() {
        if f > MAX_NANOS / 10 {
            break;
        }
        let Some(next) = scale.checked_mul(10) else {
            // Leading zeros pushed the scale past 10^38, which is more than `f * unit` can
            // reach (f < 10^19, unit < 10^13): the fraction truncates to nothing.
            f = 0;
            scale = 1;
            break;
        };
        f = f * 10 + u128::from(digit - b'0');
        scale = next;
    }
    (whole * unit_nanos)
        .checked_add(f * unit_nanos / scale)
        .filter(|n| *n <= MAX_NANOS)
        .ok_or_else(|| too_long(text))
}

fn malformed(text: &str) -> ParseError {
    ParseError::Malformed { text: text.into() }
}

fn too_long(text: &str) -> ParseError {
    ParseError::TooLong { text: text.into() }
}

/// Formats a duration exactly as Go's `time.Duration.String()` does: `0s`, `17ns`, `1.5µs`,
/// `500ms`, `1.5s`, `1m30s`, `1h0m0s`. This is what Nomad and Consul print in their answers.
pub fn format(d: Duration) -> String {
    let nanos = d.as_nanos();
    if nanos == 0 {
        return "0s".to_owned();
    }
    if nanos < NANOS_PER_SECOND {
        let (per_unit, unit) = if nanos < 1_000 {
            (1, "ns")
        } else if nanos < 1_000_000 {
            // Go prints the micro sign U+00B5.
            (1_000, "µs")
        } else {
            (1_000_000, "ms")
        };
        return format!("{}{unit}", decimal(nanos, per_unit));
    }
    let secs = nanos / NANOS_PER_SECOND;
    let (h, m) = (secs / 3600, (secs / 60) % 60);
    let seconds = decimal(nanos % (60 * NANOS_PER_SECOND), NANOS_PER_SECOND);
    // Go stops at hours (days vary in length) and prints minutes whenever hours are printed.
    if h > 0 {
        format!("{h}h{m}m{seconds}s")
    } else if m > 0 {
        format!("{m}m{seconds}s")
    } else {
        format!("{seconds}s")
    }
}

/// `value / per_unit` in decimal, with the fraction's trailing zeros (and a bare point) dropped.
fn decimal(value: u128, per_unit: u128) -> String {
    let (whole, fraction) = (value / per_unit, value % per_unit);
    if fraction == 0 {
        return whole.to_string();
    }
    let width = per_unit.ilog10() as usize;
    let digits = format!("{fraction:0width$}");
    format!("{whole}.{}", digits.trim_end_matches('0'))
}

/// The largest unit [`format_whole`] may use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LargestUnit {
    /// Minutes (`2m`), then seconds, milliseconds, microseconds, nanoseconds.
    Minute,
    /// Seconds (`300s`), then milliseconds, microseconds, nanoseconds.
    Second,
}

/// Formats a duration as one integer in the largest unit (up to `largest`) that divides it
/// exactly: `2m`, `15s`, `1500ms`, `500us`, `1000000001ns`, `0s`. Never rounds: rounding a
/// 500 µs period to `0s` once made Traefik panic on a zero ticker.
pub fn format_whole(d: Duration, largest: LargestUnit) -> String {
    let nanos = d.as_nanos();
    if nanos == 0 {
        return "0s".to_owned();
    }
    let units: &[(&str, u128)] = match largest {
        LargestUnit::Minute => &[
            ("m", 60 * NANOS_PER_SECOND),
            ("s", NANOS_PER_SECOND),
            ("ms", 1_000_000),
            ("us", 1_000),
        ],
        LargestUnit::Second => &[("s", NANOS_PER_SECOND), ("ms", 1_000_000), ("us", 1_000)],
    };
    for (unit, per) in units {
        if nanos.is_multiple_of(*per) {
            return format!("{}{unit}", nanos / per);
        }
    }
    format!("{nanos}ns")
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // tests fail loudly
mod tests {
    use super::*;

    #[test]
    fn go_style_durations_parse_into_std_durations() {
        assert_eq!(parse("10s"), Ok(Duration::from_secs(10)));
        assert_eq!(parse("1m30s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse("1.5h"), Ok(Duration::from_secs(5400)));
        // Go computes long fractions as digits * unit / 10^digits (fuzzing found the old
        // digit-by-digit scaling 5 ns short here).
        assert_eq!(parse("0.000000000009h"), Ok(Duration::from_nanos(32)));
        assert_eq!(parse("1.000000000099m"), Ok(Duration::new(60, 5)));
        assert_eq!(parse("2h45m0.5s"), Ok(Duration::from_millis(9_900_500)));
        assert_eq!(parse("250us"), Ok(Duration::from_micros(250)));
        assert_eq!(parse("250µs"), Ok(Duration::from_micros(250)));
        assert_eq!(parse("250μs"), Ok(Duration::from_micros(250)));
        assert_eq!(parse("0s"), Ok(Duration::ZERO));
    }

    #[test]
    fn a_fraction_with_more_leading_zeros_than_u128_can_scale_truncates_to_nothing() {
        // Found by fuzzing (fuzz/regressions/durations): the scale overflowed u128 (a panic in
        // debug, a division by zero after wrapping in release).
        let zeros = "0".repeat(60);
        assert_eq!(parse(&format!("1.{zeros}7m")), Ok(Duration::from_secs(60)));
        assert_eq!(
            parse(
                "0.000000000000000000000777777777777700000m0.000000000000000000000777777777777700000m"
            ),
            Ok(Duration::ZERO)
        );
    }

    #[test]
    fn malformed_durations_are_rejected_with_an_example() {
        for bad in [
            "", "10", "0", "s", "-1s", "+1s", "1.s", ".5s", "1..5s", "10 s", "1d", "banana", "1s2",
        ] {
            let err = parse(bad).expect_err(bad).to_string();
            assert!(
                err.contains("duration") || err.contains("unit"),
                "{bad}: {err}"
            );
        }
        assert_eq!(
            parse("10").unwrap_err().to_string(),
            "\"10\" lacks a unit; expected e.g. \"10s\""
        );
        assert_eq!(
            parse("1d").unwrap_err().to_string(),
            "\"1d\" has an unknown unit \"d\"; units are ns, us, ms, s, m, h"
        );
    }

    #[test]
    fn durations_beyond_go_range_are_rejected_not_wrapped() {
        assert!(parse("99999999999999999999h").is_err());
        assert!(parse("3000000h").is_err());
        assert!(parse("2562047h").is_ok());
        // Found by the security review: the fraction was added unchecked after the whole part.
        assert!(parse("340282366920938463463374607431768211.999us").is_err());
        assert!(parse("9223372036.854775807s").is_ok());
        assert!(parse("9223372036.854775808s").is_err());
        assert!(parse("2562047h47m16.854775807s").is_ok());
        assert!(parse("2562047h47m16.854775808s").is_err());
        assert!(parse_go("2562047h47m16.854775808s").is_err());
    }

    #[test]
    fn the_go_grammar_also_takes_signs_a_bare_zero_and_half_empty_fractions() {
        assert_eq!(parse_go("0"), Ok(Duration::ZERO));
        assert_eq!(parse_go("-0"), Ok(Duration::ZERO));
        assert_eq!(parse_go("+5s"), Ok(Duration::from_secs(5)));
        assert_eq!(parse_go(".5s"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_go("1.s"), Ok(Duration::from_secs(1)));
        assert_eq!(parse_go("15000ms"), Ok(Duration::from_secs(15)));
        assert_eq!(parse_go("1h0m0s"), Ok(Duration::from_secs(3600)));
        assert!(matches!(parse_go("-5s"), Err(ParseError::Negative { .. })));
        for bad in [
            "",
            "-",
            "+",
            "10",
            ".s",
            "1..5s",
            "abc",
            "10 parsecs",
            " 5s",
        ] {
            assert!(parse_go(bad).is_err(), "{bad:?} must be rejected");
        }
    }

    #[test]
    fn whatever_the_strict_grammar_accepts_the_go_grammar_reads_the_same() {
        for text in ["10s", "1.5h", "0.000000000009h", "2h45m0.5s", "250us", "0s"] {
            assert_eq!(parse_go(text), parse(text), "{text}");
        }
    }

    #[test]
    fn durations_print_like_go_duration_string() {
        let cases = [
            (Duration::ZERO, "0s"),
            (Duration::from_nanos(17), "17ns"),
            (Duration::from_nanos(1_500), "1.5µs"),
            (Duration::from_micros(500), "500µs"),
            (Duration::from_millis(500), "500ms"),
            (Duration::from_nanos(1_000_001), "1.000001ms"),
            (Duration::from_secs(10), "10s"),
            (Duration::from_millis(1500), "1.5s"),
            (Duration::from_secs(90), "1m30s"),
            (Duration::from_secs(1800), "30m0s"),
            (Duration::from_secs(86400), "24h0m0s"),
            (Duration::new(3661, 5), "1h1m1.000000005s"),
        ];
        for (d, text) in cases {
            assert_eq!(format(d), text, "{d:?}");
        }
    }

    #[test]
    fn go_durations_use_the_largest_whole_unit() {
        let minute = |d| format_whole(d, LargestUnit::Minute);
        assert_eq!(minute(Duration::from_millis(100)), "100ms");
        assert_eq!(minute(Duration::from_secs(120)), "2m");
        assert_eq!(minute(Duration::from_millis(1500)), "1500ms");
        assert_eq!(minute(Duration::from_micros(500)), "500us");
        assert_eq!(minute(Duration::from_nanos(1_000_000_001)), "1000000001ns");
        assert_eq!(minute(Duration::ZERO), "0s");
        let second = |d| format_whole(d, LargestUnit::Second);
        assert_eq!(second(Duration::from_secs(300)), "300s");
        assert_eq!(second(Duration::from_millis(1500)), "1500ms");
        assert_eq!(second(Duration::from_nanos(1_500)), "1500ns");
    }

    #[test]
    fn formatted_durations_parse_back_to_the_same_value() {
        for d in [
            Duration::from_millis(500),
            Duration::from_secs(90),
            Duration::from_secs(3600 * 5 + 7),
            Duration::from_millis(1500),
            Duration::from_nanos(17),
            Duration::from_nanos(1_500),
            Duration::new(3661, 5),
            Duration::from_nanos(MAX_NANOS as u64),
            Duration::ZERO,
        ] {
            for text in [
                format(d),
                format_whole(d, LargestUnit::Minute),
                format_whole(d, LargestUnit::Second),
            ] {
                assert_eq!(parse(&text), Ok(d), "{text}");
            }
        }
    }
}
