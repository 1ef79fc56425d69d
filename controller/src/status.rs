//! The status document written back to Consul KV.
