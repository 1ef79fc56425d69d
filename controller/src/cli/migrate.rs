//! `proxy-operator migrate ...`.

use std::process::ExitCode;

/// Migration subcommands.
#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Convert legacy tags to Traefik tags in job files or live jobs.
    Tags(TagsArgs),
}

/// Arguments of `proxy-operator migrate tags`.
#[derive(Debug, clap::Args)]
pub struct TagsArgs {}

/// Runs the command.
pub async fn run(_cmd: Command) -> anyhow::Result<ExitCode> {
    anyhow::bail!("`migrate tags` is not built yet")
}
