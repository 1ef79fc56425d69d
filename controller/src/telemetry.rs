//! Tracing subscriber setup.
