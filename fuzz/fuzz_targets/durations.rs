//! Every duration parser on arbitrary text: the `go-duration` crate's strict `parse` (ProxyConfig
//! durations, via `spec::parse_duration`) and Go's full grammar `parse_go` (durations in
//! Consul/Nomad answers via `transport::parse_go_duration`, and the twin's `wait=` parameter via
//! `blocking::parse_go_duration`). None may panic.
//!
//! Properties checked as well:
//! - every format (`format`, `format_whole`) parses back to the same duration, so rendered
//!   configs round-trip through Traefik and Nomad;
//! - whatever the strict grammar accepts, Go's grammar (and so the twin) reads as the same value.
#![no_main]

use go_duration::LargestUnit;
use libfuzzer_sys::fuzz_target;
use proxy_operator::{spec, transport};

fuzz_target!(|text: &str| {
    let _ = transport::parse_go_duration(text);
    let go = go_duration::parse_go(text);
    let twin = hashistack_twin::blocking::parse_go_duration(text);
    let Ok(d) = spec::parse_duration(text) else {
        return;
    };
    for formatted in [
        go_duration::format(d),
        go_duration::format_whole(d, LargestUnit::Minute),
        go_duration::format_whole(d, LargestUnit::Second),
    ] {
        assert_eq!(
            spec::parse_duration(&formatted),
            Ok(d),
            "{text:?} parsed to {d:?}, formatted as {formatted:?}"
        );
    }
    assert_eq!(go, Ok(d), "{text:?}: the strict and the Go grammar disagree");
    assert_eq!(twin, Some(d), "{text:?}: the twin disagrees with the spec parser");
});
