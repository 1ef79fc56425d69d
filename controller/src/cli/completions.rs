//! `proxy-operator completions SHELL`: prints a completion script for the shell.

use std::process::ExitCode;

use clap::CommandFactory as _;

/// Arguments of `proxy-operator completions`.
#[derive(Debug, clap::Args)]
#[command(
    after_help = "Example: proxy-operator completions bash > /etc/bash_completion.d/proxy-operator"
)]
pub struct Args {
    /// The shell.
    #[arg(value_enum)]
    shell: clap_complete::Shell,
}

/// Runs the command (synchronous: it only writes to stdout).
pub async fn run(args: &Args) -> anyhow::Result<ExitCode> {
    let mut command = super::Cli::command();
    let mut out = Vec::new();
    clap_complete::generate(args.shell, &mut command, "proxy-operator", &mut out);
    super::validate::write_quietly(std::io::stdout().lock(), &String::from_utf8_lossy(&out))?;
    Ok(ExitCode::SUCCESS)
}
