//! `proxy-operator render`.

use std::process::ExitCode;

/// Arguments of `proxy-operator render`.
#[derive(Debug, clap::Args)]
pub struct Args {}

/// Runs the command.
pub async fn run(_args: Args) -> anyhow::Result<ExitCode> {
    anyhow::bail!("`render` is not built yet")
}
