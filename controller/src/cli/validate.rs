//! `proxy-operator validate`.

use std::process::ExitCode;

/// Arguments of `proxy-operator validate`.
#[derive(Debug, clap::Args)]
pub struct Args {}

/// Runs the command.
pub async fn run(_args: Args) -> anyhow::Result<ExitCode> {
    anyhow::bail!("`validate` is not built yet")
}
