//! Nomad HTTP client behind the `NomadApi` trait.
