//! Every duration parser on arbitrary text: `spec::parse_duration` (ProxyConfig durations),
//! `transport::parse_go_duration` (durations in Consul/Nomad answers) and the twin's
//! `blocking::parse_go_duration` (the `wait=` query parameter). None may panic.
//!
//! Properties checked as well:
//! - `spec::format_duration` output parses back to the same duration (rendered configs
//!   round-trip through Traefik and Nomad);
//! - whatever the strict spec parser accepts, the twin (which implements Go's
//!   `time.ParseDuration`) accepts with the same value, up to its float rounding.
#![no_main]

use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use proxy_operator::{spec, transport};

fuzz_target!(|text: &str| {
    let _ = transport::parse_go_duration(text);
    let twin = hashistack_twin::blocking::parse_go_duration(text);
    let Ok(d) = spec::parse_duration(text) else {
        return;
    };
    let formatted = spec::format_duration(d);
    assert_eq!(
        spec::parse_duration(&formatted),
        Ok(d),
        "{text:?} parsed to {d:?}, formatted as {formatted:?}"
    );
    let Some(t) = twin else {
        panic!("the twin rejects {text:?}, which the spec parser reads as {d:?}");
    };
    // The twin sums f64 nanoseconds; the spec parser adds integers and truncates each component
    // below a nanosecond, as Go does. Each f64 addition may be off by half an ulp of the running
    // total (2^-53 relative), and each component by up to 1 ns: allow exactly that.
    let components = text.matches(|c: char| c.is_ascii_alphabetic()).count() as u128 + 1;
    let ulp = d.as_nanos() / (1u128 << 52) + 1;
    let slack = Duration::from_nanos(u64::try_from(components * (ulp + 1)).unwrap_or(u64::MAX));
    let diff = t.abs_diff(d);
    assert!(
        diff <= slack,
        "{text:?}: spec reads {d:?}, the twin {t:?} (allowed difference {slack:?})"
    );
});
