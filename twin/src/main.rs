//! The standalone `hashistack-twin` binary.
#![forbid(unsafe_code)]

fn main() {}
