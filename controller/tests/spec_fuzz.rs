//! Random input through parse + validate: never a panic, never a hang.
//!
//! Drives random bytes, random YAML-ish text and random mutations of the example documents.
// Tests fail by panicking; the workspace lint is for production code.
#![allow(clippy::panic)]

use std::time::{Duration, Instant};

use proptest::prelude::*;
use proxy_operator::spec;

const EXAMPLES: [&str; 3] = [
    include_str!("../../nomad-jobs/examples/traefik-nomad-primary.yaml"),
    include_str!("../../nomad-jobs/examples/traefik-consul-primary.yaml"),
    include_str!("../../nomad-jobs/examples/caddy.yaml"),
];

/// Parse + validate one input; the test fails if it panics or takes too long.
fn check(bytes: &[u8]) {
    let start = Instant::now();
    let outcome = spec::load(bytes);
    if let Ok(v) = &outcome {
        // A valid document re-serialises into one that validates to the same digest.
        let json = serde_json::to_vec(v.config()).expect("serialises");
        let again = spec::load(&json).expect("re-serialised document validates");
        assert_eq!(again.digest(), v.digest());
    }
    assert!(
        start.elapsed() < Duration::from_secs(2),
        "took {:?}",
        start.elapsed()
    );
}

fn mutate(doc: &str, ops: &[(u8, usize, u8)]) -> Vec<u8> {
    let mut bytes = doc.as_bytes().to_vec();
    const TOKENS: [&[u8]; 12] = [
        b": ",
        b"\n  ",
        b"&a ",
        b"*a",
        b"[",
        b"{",
        b"- ",
        b"yes",
        b"-1",
        b"\"",
        b"!!binary ",
        b"~",
    ];
    for &(op, at, byte) in ops {
        if bytes.is_empty() {
            bytes.push(byte);
            continue;
        }
        let at = at % bytes.len();
        match op % 4 {
            0 => bytes[at] = byte,
            1 => {
                bytes.remove(at);
            }
            2 => {
                let token = TOKENS[usize::from(byte) % TOKENS.len()];
                bytes.splice(at..at, token.iter().copied());
            }
            _ => {
                // Duplicate a line: duplicate keys, repeated blocks.
                let start = bytes[..at]
                    .iter()
                    .rposition(|b| *b == b'\n')
                    .map_or(0, |p| p + 1);
                let end = bytes[at..]
                    .iter()
                    .position(|b| *b == b'\n')
                    .map_or(bytes.len(), |p| at + p + 1);
                let line: Vec<u8> = bytes[start..end].to_vec();
                bytes.splice(end..end, line);
            }
        }
    }
    bytes
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
        check(&bytes);
    }

    #[test]
    fn random_yaml_like_text_never_panics(text in "[a-zA-Z0-9:{}\\[\\],&*!|>'\"\\- \n#.]{0,512}") {
        check(text.as_bytes());
    }

    #[test]
    fn mutated_examples_never_panic(
        which in 0usize..3,
        ops in proptest::collection::vec((any::<u8>(), any::<usize>(), any::<u8>()), 1..12),
    ) {
        check(&mutate(EXAMPLES[which], &ops));
    }
}

#[test]
fn pathological_inputs_finish_quickly() {
    let cases: Vec<Vec<u8>> = vec![
        b"[".repeat(100_000),
        b"{a: ".repeat(50_000),
        b"- ".repeat(200_000),
        format!("a: &a x\n{}", "b: *a\n".repeat(10)).into_bytes(),
        "x: \""
            .to_owned()
            .into_bytes()
            .into_iter()
            .chain(std::iter::repeat_n(b'a', 500_000))
            .collect(),
        vec![0xff; 1000],
        "\u{feff}apiVersion: proxy-operator.io/v1alpha1\nkind: ProxyConfig\n"
            .as_bytes()
            .to_vec(),
    ];
    for case in cases {
        check(&case);
    }
}
