//! Consul HTTP client behind the `ConsulApi` trait.
