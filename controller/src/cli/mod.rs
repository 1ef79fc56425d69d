//! Command-line interface. Every command lives in its own file; data goes to stdout, errors to
//! stderr. Exit codes: 0 success, 1 a negative answer (invalid, not ready, changes pending),
//! 2 usage or IO error; `plan` follows `nomad job plan` (0, 1, 255) and `apply` adds 3 (the key
//! changed since it was read) and 4 (timeout).

mod apply;
mod cluster;
mod completions;
mod debug;
mod dev;
pub mod history;
mod migrate;
mod plan;
mod render;
mod run;
mod schema;
mod status;
mod validate;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Exit code for a usage, IO or internal error.
pub const EXIT_ERROR: u8 = 2;

/// Exit codes, shown under `--help`.
const EXIT_CODES: &str = "Exit codes: 0 success; 1 a negative answer (invalid document, not Ready, \
changes pending, rollout failed); 2 usage, IO or cluster error. `plan`: 0 no change, 1 changes, \
255 error (as `nomad job plan`). `apply`/`rollback`: 3 the key changed since it was read, 4 --wait timed out.";

/// proxy-operator: one ProxyConfig document in Consul KV, one converged edge proxy.
#[derive(Debug, Parser)]
#[command(name = "proxy-operator", version, about, long_about = None, after_help = EXIT_CODES)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Validate ProxyConfig documents (YAML or JSON) without touching a cluster.
    Validate(validate::Args),
    /// Write the JSON Schemas of ProxyConfig and its status document.
    Schema(schema::Args),
    /// Render the proxy's Nomad job and proxy configuration from a ProxyConfig document.
    Render(render::Args),
    /// Run the operator: watch the ProxyConfig in Consul KV and converge the proxy to it.
    Run(Box<run::Args>),
    /// Print the status document the operator keeps in Consul KV (`--watch` follows it).
    Status(status::Args),
    /// Show what applying a document would change on the live cluster (0 none, 1 changes, 255 error).
    Plan(plan::Args),
    /// Validate a document and write it to `<prefix>/config` with check-and-set; `--wait` follows the rollout.
    Apply(apply::Args),
    /// List the documents the operator applied (`<prefix>/revisions/`) with their outcome.
    History(history::HistoryArgs),
    /// Write a previous good document back with check-and-set; `--wait` follows the rollout.
    Rollback(history::RollbackArgs),
    /// Inspect the live proxy: served certificates, routes, or a redacted dump for bug reports.
    #[command(subcommand)]
    Debug(debug::Command),
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell).
    Completions(completions::Args),
    /// Run everything on loopback: the twin, a demo backend, real Traefik and the operator.
    Dev(dev::Args),
    /// Migrate legacy service tags (HinD `https://`, Fabio `urlprefix-`) to Traefik tags.
    #[command(subcommand)]
    Migrate(migrate::Command),
}

/// The document in `bytes` (read from `file`), validated; `None` when it is invalid, after every
/// field error went to stderr under `FILE: <heading>:`.
fn load_document(
    file: &std::path::Path,
    bytes: &[u8],
    heading: &str,
) -> Option<crate::spec::ValidatedSpec> {
    match crate::spec::load(bytes) {
        Ok(spec) => Some(spec),
        Err(e) => {
            eprintln!("{}: {heading}:", file.display());
            for fe in e.field_errors() {
                eprintln!("  {fe}");
            }
            None
        }
    }
}

/// Parses a `--prefix` value, refusing keys Consul would refuse (a leading `/`, `..`) before
/// anything starts, instead of at the first KV call.
fn kv_prefix(value: &str) -> Result<String, String> {
    crate::consul::validate_kv_prefix(value)
        .map(|()| value.to_string())
        .map_err(|e| e.to_string())
}

/// Parses the command line, runs the command and maps its outcome to an exit code.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    // reqwest is built without a default TLS provider; install ring once for the whole process.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: failed to start the async runtime: {e}");
            return ExitCode::from(EXIT_ERROR);
        }
    };
    let outcome = runtime.block_on(async move {
        match cli.command {
            Command::Validate(args) => validate::run(args).await,
            Command::Schema(args) => schema::run(args).await,
            Command::Render(args) => render::run(args).await,
            Command::Run(args) => run::run(*args).await,
            Command::Status(args) => status::run(args).await,
            Command::Plan(args) => plan::run(args).await,
            Command::Apply(args) => apply::run(args).await,
            Command::History(args) => history::run_history(args).await,
            Command::Rollback(args) => history::run_rollback(args).await,
            Command::Debug(cmd) => debug::run(cmd).await,
            Command::Completions(args) => completions::run(&args).await,
            Command::Dev(args) => dev::run(args).await,
            Command::Migrate(cmd) => migrate::run(cmd).await,
        }
    });
    match outcome {
        Ok(code) => code,
        Err(e) => {
            cluster::print_error(&e);
            ExitCode::from(EXIT_ERROR)
        }
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser as _;

    use super::Cli;

    #[test]
    fn the_command_line_is_well_formed() {
        <Cli as clap::CommandFactory>::command().debug_assert();
    }

    #[test]
    fn a_prefix_consul_would_refuse_is_a_usage_error_before_anything_starts() {
        for command in ["run", "status", "dev", "history"] {
            for prefix in ["/leading-slash", "a/../b"] {
                let parsed = Cli::try_parse_from(["proxy-operator", command, "--prefix", prefix]);
                let error = parsed.err().map(|e| e.to_string()).unwrap_or_default();
                assert!(
                    error.contains("--prefix"),
                    "{command} --prefix {prefix}: {error}"
                );
            }
        }
        assert!(
            Cli::try_parse_from(["proxy-operator", "status", "--prefix", "team-a/edge"]).is_ok()
        );
    }
}
