#![allow(clippy::unwrap_used, clippy::panic)] // tests fail loudly
