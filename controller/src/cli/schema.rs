//! `proxy-operator schema`.

use std::process::ExitCode;

/// Arguments of `proxy-operator schema`.
#[derive(Debug, clap::Args)]
pub struct Args {}

/// Runs the command.
pub async fn run(_args: Args) -> anyhow::Result<ExitCode> {
    anyhow::bail!("`schema` is not built yet")
}
