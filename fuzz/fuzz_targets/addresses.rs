//! Address parsers on arbitrary text: `spec::ListenAddress::parse` (entry point and metrics
//! addresses in a ProxyConfig) and `transport::Endpoint::parse` (the `--consul`/`--nomad` CLI
//! addresses). Neither may panic, and a parsed listen address must print as text that parses back
//! to the same address (the renderer writes it with `Display`).
#![no_main]

use libfuzzer_sys::fuzz_target;
use proxy_operator::spec::ListenAddress;
use proxy_operator::transport::Endpoint;

fuzz_target!(|text: &str| {
    let _ = Endpoint::parse(text, false);
    let _ = Endpoint::parse(text, true);
    if let Ok(address) = ListenAddress::parse(text) {
        let printed = address.to_string();
        assert_eq!(
            ListenAddress::parse(&printed).as_ref(),
            Ok(&address),
            "{text:?} parsed to {address:?}, printed as {printed:?}"
        );
    }
});
