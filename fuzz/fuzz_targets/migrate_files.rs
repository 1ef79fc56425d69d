//! Any text through `migrate::files::migrate_hcl` / `migrate_json`: must return Ok or Err, never
//! panic. A migrated file must migrate again to itself (the module promises idempotence: a service
//! that already carries `traefik.*` tags gets nothing added).
//!
//! The first byte picks the format (bit 0) and `remove_legacy` (bit 1); the rest is the file.
#![no_main]

use libfuzzer_sys::fuzz_target;
use proxy_operator::migrate::ConvertOptions;
use proxy_operator::migrate::files::{self, Format};

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let Ok(text) = std::str::from_utf8(rest) else {
        return;
    };
    let format = if mode & 1 == 0 {
        Format::Hcl
    } else {
        Format::Json
    };
    let remove_legacy = mode & 2 != 0;
    let options = ConvertOptions {
        datacenter: Some("dc1".into()),
        ..ConvertOptions::default()
    };
    let Ok(first) = files::migrate_text(text, format, &options, remove_legacy) else {
        return;
    };
    if !first.is_change() {
        assert_eq!(first.updated, text, "an unchanged file must be returned byte for byte");
        return;
    }
    let second = match files::migrate_text(&first.updated, format, &options, remove_legacy) {
        Ok(second) => second,
        Err(e) => panic!("migrated output no longer parses: {e}\n--- output ---\n{}", first.updated),
    };
    assert!(
        !second.is_change(),
        "migrating the migrated file changes it again\n--- input ---\n{text}\n--- first ---\n{}\n--- second ---\n{}",
        first.updated,
        second.updated
    );
});
