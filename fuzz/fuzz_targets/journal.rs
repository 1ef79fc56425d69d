//! The rollout journal as the operator reads it back from `<prefix>/rollout`: untrusted bytes
//! (anyone who can write the KV prefix can write it). Parsing, the trust check, resuming the
//! phase on this process's clock, stepping it once, re-deriving the gate's addresses and the
//! size check must never panic; a journal that passes its check and resumes must write back a
//! journal that passes the same check.
#![no_main]

use std::time::SystemTime;

use libfuzzer_sys::fuzz_target;
use proxy_operator::proxy::{Reach, reached};
use proxy_operator::rollout::{Journal, Observation, Phase, step};
use tokio::time::Instant;

const OWNER: &str = "po";
const KV_ROOT: &str = "po/traefik/";

fuzz_target!(|data: &[u8]| {
    let Ok(journal) = serde_json::from_slice::<Journal>(data) else {
        return;
    };
    let _ = journal.fits();
    if journal.check(OWNER, KV_ROOT).is_err() {
        return;
    }
    let reach = Reach::on("127.0.0.1");
    let gate = reached(&journal.change.gate, &reach);
    if let Some(api) = &gate.proxy_api {
        assert!(api.starts_with("http://127.0.0.1:"), "{api}");
    }
    for probe in &gate.probes {
        assert!(probe.address.starts_with("127.0.0.1:"), "{}", probe.address);
    }
    let now = Instant::now();
    let wall = SystemTime::now();
    let phase = Phase::resume(journal, now, wall);
    let (_, next) = step(&phase, &Observation::default(), now);
    for p in [&phase, &next] {
        if let Some(again) = p.journal(now, wall) {
            assert!(
                again.check(OWNER, KV_ROOT).is_ok(),
                "a trusted journal resumed into one its own check rejects"
            );
        }
    }
});
