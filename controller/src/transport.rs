//! HTTP plumbing shared by the Consul and Nomad clients: TLS, tokens, rate limits, retries, blocking queries.
