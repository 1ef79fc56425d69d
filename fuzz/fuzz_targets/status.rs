//! The status document as the operator reads it back from `<prefix>/status`: bytes anyone with
//! write access to the prefix (or an older operator) may have written. Parsing it, building the
//! next status from it (a converged pass, a recovered document) and comparing must never panic,
//! and a document that parses must survive its own round trip unchanged: the operator rewrites
//! what it read, and must not lose `lastGoodJob` doing so.
#![no_main]

use std::time::SystemTime;

use libfuzzer_sys::fuzz_target;
use proxy_operator::spec::status::ProxyStatus;
use proxy_operator::status::{self, Pass, Report};

fuzz_target!(|data: &[u8]| {
    let Ok(read) = serde_json::from_slice::<ProxyStatus>(data) else {
        return;
    };
    let written = serde_json::to_vec(&read).expect("a parsed status serializes");
    let back: ProxyStatus = serde_json::from_slice(&written).expect("its own output parses");
    assert_eq!(back, read, "the round trip changed the status");
    let pass = Pass {
        observed_index: 7,
        observed_digest: Some("digest"),
        proxy: None,
        job_version: Some(3),
        good_job: None,
        warnings: &[],
        report: Report::Converged,
    };
    let now = SystemTime::now();
    let next = status::next(&read, &pass, now);
    assert_eq!(
        next.last_good_job, read.last_good_job,
        "a converged pass without a new good job forgot where a rollback goes"
    );
    let _ = status::differs(&read, &next);
    let mut recovered = read.clone();
    status::recovered(&mut recovered, "fuzz", now);
    let _ = serde_json::to_vec(&recovered).expect("a recovered status serializes");
});
