//! `proxy-operator status`.

use std::process::ExitCode;

/// Arguments of `proxy-operator status`.
#[derive(Debug, clap::Args)]
pub struct Args {}

/// Runs the command.
pub async fn run(_args: Args) -> anyhow::Result<ExitCode> {
    anyhow::bail!("`status` is not built yet")
}
