//! Go-style durations (`10s`, `1m30s`, `500ms`), the syntax Traefik and Nomad use.

use std::time::Duration;

/// Parses a Go-style duration: one or more `<number><unit>` with units `ns`, `us`/`µs`, `ms`,
/// `s`, `m`, `h`; numbers may have a fraction (`1.5s`). Signs and bare numbers are rejected.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    if text.is_empty() {
        return Err("is empty; expected a duration such as \"10s\", \"1m30s\" or \"500ms\"".into());
    }
    let mut total: u128 = 0;
    let mut rest = text;
    while !rest.is_empty() {
        let number_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let (number, after) = rest.split_at(number_len);
        if number.is_empty() {
            return Err(bad(text));
        }
        let unit_len = after
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(after.len());
        let (unit, next) = after.split_at(unit_len);
        let unit_nanos: u128 = match unit {
            "ns" => 1,
            "us" | "µs" | "μs" => 1_000,
            "ms" => 1_000_000,
            "s" => 1_000_000_000,
            "m" => 60 * 1_000_000_000,
            "h" => 3_600 * 1_000_000_000,
            "" => {
                return Err(format!(
                    "{:?} lacks a unit; expected e.g. \"{number}s\"",
                    text
                ));
            }
            _ => {
                return Err(format!(
                    "{:?} has an unknown unit {unit:?}; units are ns, us, ms, s, m, h",
                    text
                ));
            }
        };
        let (whole, fraction) = match number.split_once('.') {
            Some((w, f)) => (w, f),
            None => (number, ""),
        };
        if whole.is_empty()
            || fraction.contains('.')
            || (number.contains('.') && fraction.is_empty())
        {
            return Err(bad(text));
        }
        let whole: u128 = whole.parse().map_err(|_| too_long(text))?;
        // Bound before adding the fraction, so no intermediate can approach u128::MAX.
        if whole > MAX_NANOS / unit_nanos {
            return Err(too_long(text));
        }
        let mut nanos = whole
            .checked_mul(unit_nanos)
            .ok_or_else(|| too_long(text))?;
        // As Go's ParseDuration: the fraction's digits form an integer `f` over `scale` (a power of
        // ten) and add `f * unit / scale`, truncated; digits past what an int64 holds are dropped.
        // Dividing the unit by ten per digit instead loses precision (36 ns / 10 -> 3).
        let (mut f, mut scale): (u128, u128) = (0, 1);
        for digit in fraction.bytes() {
            if f > MAX_NANOS / 10 {
                break;
            }
            f = f * 10 + u128::from(digit - b'0');
            scale *= 10;
        }
        nanos = nanos
            .checked_add(f * unit_nanos / scale)
            .ok_or_else(|| too_long(text))?;
        total = total.checked_add(nanos).ok_or_else(|| too_long(text))?;
        if total > MAX_NANOS {
            return Err(too_long(text));
        }
        rest = next;
    }
    let secs = u64::try_from(total / 1_000_000_000).map_err(|_| too_long(text))?;
    let sub = u32::try_from(total % 1_000_000_000).map_err(|_| too_long(text))?;
    Ok(Duration::new(secs, sub))
}

/// Go's `time.Duration` is an int64 of nanoseconds; anything longer cannot be passed on.
const MAX_NANOS: u128 = i64::MAX as u128;

fn bad(text: &str) -> String {
    format!("{text:?} is not a duration; expected e.g. \"10s\", \"1m30s\" or \"500ms\"")
}

fn too_long(text: &str) -> String {
    format!("{text:?} is too long; durations must be under 290 years")
}

/// Formats a duration the way Go prints it (`1m30s`, `500ms`, `0s`), so rendered configs
/// round-trip through Traefik and Nomad.
pub fn format_duration(duration: Duration) -> String {
    let nanos = duration.as_nanos();
    if nanos == 0 {
        return "0s".to_owned();
    }
    if nanos < 1_000_000_000 {
        return if nanos.is_multiple_of(1_000_000) {
            format!("{}ms", nanos / 1_000_000)
        } else if nanos.is_multiple_of(1_000) {
            format!("{}us", nanos / 1_000)
        } else {
            format!("{nanos}ns")
        };
    }
    let secs = duration.as_secs();
    let (h, m, s) = (secs / 3600, (secs / 60) % 60, secs % 60);
    let sub = duration.subsec_nanos();
    let mut out = String::new();
    if h > 0 {
        out.push_str(&format!("{h}h"));
    }
    if h > 0 || m > 0 {
        out.push_str(&format!("{m}m"));
    }
    if sub == 0 {
        out.push_str(&format!("{s}s"));
    } else {
        let fraction = format!("{sub:09}");
        out.push_str(&format!("{s}.{}s", fraction.trim_end_matches('0')));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_style_durations_parse_into_std_durations() {
        assert_eq!(parse_duration("10s"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration("1m30s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("1.5h"), Ok(Duration::from_secs(5400)));
        // Go computes long fractions as digits * unit / 10^digits (fuzzing found the old
        // digit-by-digit scaling 5 ns short here).
        assert_eq!(
            parse_duration("0.000000000009h"),
            Ok(Duration::from_nanos(32))
        );
        assert_eq!(parse_duration("1.000000000099m"), Ok(Duration::new(60, 5)));
        assert_eq!(
            parse_duration("2h45m0.5s"),
            Ok(Duration::from_millis(9_900_500))
        );
        assert_eq!(parse_duration("250us"), Ok(Duration::from_micros(250)));
        assert_eq!(parse_duration("0s"), Ok(Duration::ZERO));
    }

    #[test]
    fn malformed_durations_are_rejected_with_an_example() {
        for bad in [
            "", "10", "s", "-1s", "1.s", ".5s", "1..5s", "10 s", "1d", "banana", "1s2",
        ] {
            let err = parse_duration(bad).expect_err(bad);
            assert!(
                err.contains("duration") || err.contains("unit"),
                "{bad}: {err}"
            );
        }
    }

    #[test]
    fn durations_beyond_go_range_are_rejected_not_wrapped() {
        assert!(parse_duration("99999999999999999999h").is_err());
        assert!(parse_duration("3000000h").is_err());
        assert!(parse_duration("2562047h").is_ok());
        // Found by the security review: the fraction was added unchecked after the whole part.
        assert!(parse_duration("340282366920938463463374607431768211.999us").is_err());
        assert!(parse_duration("9223372036.854775807s").is_ok());
        assert!(parse_duration("9223372036.854775808s").is_err());
        assert!(parse_duration("2562047h47m16.854775807s").is_ok());
        assert!(parse_duration("2562047h47m16.854775808s").is_err());
    }

    #[test]
    fn formatted_durations_parse_back_to_the_same_value() {
        for d in [
            Duration::from_millis(500),
            Duration::from_secs(90),
            Duration::from_secs(3600 * 5 + 7),
            Duration::from_millis(1500),
            Duration::from_nanos(17),
            Duration::ZERO,
        ] {
            assert_eq!(
                parse_duration(&format_duration(d)),
                Ok(d),
                "{}",
                format_duration(d)
            );
        }
        assert_eq!(format_duration(Duration::from_secs(90)), "1m30s");
    }
}
