//! `proxy-operator dev`.

use std::process::ExitCode;

/// Arguments of `proxy-operator dev`.
#[derive(Debug, clap::Args)]
pub struct Args {}

/// Runs the command.
pub async fn run(_args: Args) -> anyhow::Result<ExitCode> {
    anyhow::bail!("`dev` is not built yet")
}
