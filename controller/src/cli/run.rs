//! `proxy-operator run`.

use std::process::ExitCode;

/// Arguments of `proxy-operator run`.
#[derive(Debug, clap::Args)]
pub struct Args {}

/// Runs the command.
pub async fn run(_args: Args) -> anyhow::Result<ExitCode> {
    anyhow::bail!("`run` is not built yet")
}
