//! Any bytes through `spec::load`: must return, never panic; a valid document must survive
//! re-serialisation with the same digest.
#![no_main]

use libfuzzer_sys::fuzz_target;
use proxy_operator::spec;

fuzz_target!(|data: &[u8]| {
    if let Ok(validated) = spec::load(data) {
        let json = serde_json::to_vec(validated.config()).expect("a validated config serialises");
        let again = spec::load(&json).expect("a re-serialised valid config validates");
        assert_eq!(again.digest(), validated.digest());
    }
});
