//! The standalone `hashistack-twin` binary: Consul and Nomad APIs in the foreground until SIGINT,
//! SIGTERM or SIGHUP.
#![forbid(unsafe_code)]

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use hashistack_twin::{Twin, TwinConfig};

/// An API-compatible twin of Consul and Nomad for tests, dev mode and benchmarks.
#[derive(Debug, Parser)]
#[command(name = "hashistack-twin", version)]
struct Args {
    /// Address of the Consul HTTP API.
    #[arg(long, default_value = "127.0.0.1:8500")]
    consul_addr: SocketAddr,
    /// Address of the Nomad HTTP API.
    #[arg(long, default_value = "127.0.0.1:4646")]
    nomad_addr: SocketAddr,
    /// Directory where KV, sessions, jobs and indexes persist across restarts.
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// File holding the ACL token every request must carry.
    #[arg(long)]
    acl_token_file: Option<PathBuf>,
    /// Number of Nomad client nodes (each runs its tasks locally on its own loopback address).
    #[arg(long, default_value_t = 1)]
    nodes: usize,
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,hashistack_twin=debug"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();

    if let Err(msg) = exposure_check(&args) {
        eprintln!("hashistack-twin: {msg}");
        return ExitCode::from(2);
    }
    let acl_token = match &args.acl_token_file {
        None => None,
        Some(path) => match std::fs::read_to_string(path) {
            Ok(t) if !t.trim().is_empty() => Some(t.trim().to_string()),
            Ok(_) => {
                eprintln!(
                    "hashistack-twin: ACL token file {} is empty",
                    path.display()
                );
                return ExitCode::from(2);
            }
            Err(e) => {
                eprintln!(
                    "hashistack-twin: failed to read ACL token file {}: {e}",
                    path.display()
                );
                return ExitCode::from(2);
            }
        },
    };
    let config = TwinConfig {
        consul_addr: args.consul_addr,
        nomad_addr: args.nomad_addr,
        data_dir: args.data_dir,
        acl_token,
        nomad_nodes: args.nodes,
        ..TwinConfig::default()
    };
    let signals = hashistack_twin::shutdown_signals();
    let twin = match Twin::start(config).await {
        Ok(t) => t,
        Err(e) => {
            eprintln!("hashistack-twin: {e}");
            return ExitCode::FAILURE;
        }
    };
    println!(
        "consul http://{}  nomad http://{}",
        twin.consul_addr(),
        twin.nomad_addr()
    );
    signals.await;
    tracing::info!("signal received, shutting down");
    twin.shutdown().await;
    ExitCode::SUCCESS
}

/// Refuses to listen beyond loopback without ACLs: the Nomad API runs `raw_exec` tasks, so an
/// open twin is remote code execution for anyone who can reach it.
fn exposure_check(args: &Args) -> Result<(), String> {
    if args.acl_token_file.is_some() {
        return Ok(());
    }
    let exposed: Vec<String> = [
        ("--consul-addr", args.consul_addr),
        ("--nomad-addr", args.nomad_addr),
    ]
    .iter()
    .filter(|(_, addr)| !addr.ip().is_loopback())
    .map(|(flag, addr)| format!("{flag} {addr}"))
    .collect();
    if exposed.is_empty() {
        return Ok(());
    }
    Err(format!(
        "refusing to listen on a non-loopback address ({}) without ACLs: anyone who can reach it could run processes through the Nomad API. Pass --acl-token-file FILE (the management token every request must carry), or listen on 127.0.0.1",
        exposed.join(", ")
    ))
}
