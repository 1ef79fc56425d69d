//! Any bytes through `proxy::traefik::parse_rawdata` (Traefik's `/api/rawdata` body): must return, never
//! panic; every router middleware comes out qualified with a provider when the router has one.
#![no_main]

use libfuzzer_sys::fuzz_target;
use proxy_operator::proxy::traefik::{EntryKind, parse_rawdata};

fuzz_target!(|data: &[u8]| {
    let Ok(entries) = parse_rawdata(data) else {
        return;
    };
    for entry in &entries {
        if entry.kind == EntryKind::Router && entry.name.contains('@') {
            for m in &entry.middlewares {
                assert!(
                    m.contains('@'),
                    "middleware {m:?} of {:?} left unqualified",
                    entry.name
                );
            }
        }
    }
});
