//! `proxy-operator debug`: looks at the live proxy the way a person debugging it would.
//! - `tls [HOST]`: the chain the entry point serves for HOST and the files in `certDir`, with
//!   expiry and whether each key matches its certificate;
//! - `route HOST [PATH]`: which Traefik router, service and middlewares serve it (matched against
//!   `/api/rawdata`), then one request through the entry point;
//! - `dump DIR`: everything a bug report needs, secrets redacted.

mod dump;
mod route;
mod tls;

use std::process::ExitCode;

/// The `debug` subcommands.
#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// The certificate chain the entry point serves (subject, SANs, issuer, not-after, days
    /// left) and the certificate files in certDir with their expiry and key match.
    Tls(tls::Args),
    /// Which router, service and middlewares of the live Traefik serve HOST and PATH; then one
    /// request through the entry point (status, headers, timing).
    Route(route::Args),
    /// Write the document, status, rollout journal, rendered config, live proxy config and job
    /// versions to DIR, secrets redacted, for a bug report.
    Dump(dump::Args),
}

/// Runs a `debug` subcommand.
pub async fn run(command: Command) -> anyhow::Result<ExitCode> {
    match command {
        Command::Tls(args) => tls::run(args).await,
        Command::Route(args) => route::run(args).await,
        Command::Dump(args) => dump::run(args).await,
    }
}
