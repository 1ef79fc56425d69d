//! `proxy-operator run`: the operator itself. Watches `<prefix>/config` and converges the proxy.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;
use tracing::info;

use crate::admission::AdmissionFlags;
use crate::consul::{ConsulApi, ConsulClient};
use crate::leader::{Elector, LeaderFlags};
use crate::metrics::probe::MeteredProbe;
use crate::nomad::NomadClient;
use crate::proxy::probe::HttpProbe;
use crate::reconcile::{self, Operator};
use crate::spec;
use crate::telemetry::{self, LogFormat};
use crate::transport::{ClientConfig, ConsulFlags, NomadFlags};

/// Arguments of `proxy-operator run`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// KV prefix: the document is `<prefix>/config`, the status `<prefix>/status`.
    #[arg(long, value_parser = super::kv_prefix, default_value = "proxy-operator")]
    prefix: String,
    /// Quiet time after a config change before a pass (bursts of edits become one pass);
    /// at most 1m.
    #[arg(long, value_parser = parse_debounce, default_value = "250ms")]
    debounce: Duration,
    /// Interval of the full resync that catches missed changes and drift; 1s to 24h.
    #[arg(long, value_parser = parse_resync, default_value = "5m")]
    resync: Duration,
    /// When `<prefix>/config` is absent, write a first document from PROXY_SERVER,
    /// DOMAIN_SUFFIX, TRAEFIK_PROVIDER_PRIMARY and TRAEFIK_API_INSECURE (create-only).
    #[arg(long)]
    bootstrap_from_env: bool,
    /// Log format.
    #[arg(long, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    /// Value of the job's `proxy-operator/owner` Meta (default: the prefix).
    #[arg(long)]
    owner: Option<String>,
    /// Host the proxy's entry points and API are probed on.
    #[arg(long, default_value = "127.0.0.1")]
    proxy_host: String,
    /// Base URL of the proxy's API for `/ping` and `/api/rawdata` (default: the spec's
    /// dashboard address on --proxy-host).
    #[arg(long)]
    proxy_api: Option<String>,
    #[command(flatten)]
    leader: LeaderFlags,
    #[command(flatten)]
    admission: Box<AdmissionFlags>,
    #[command(flatten)]
    consul: Box<ConsulFlags>,
    #[command(flatten)]
    nomad: Box<NomadFlags>,
    #[command(flatten)]
    http: crate::server::HttpArgs,
}

/// The longest debounce: an edit must not wait longer than this to be looked at.
const MAX_DEBOUNCE: Duration = Duration::from_secs(60);
/// The resync bounds: below a second the loop spins on the API (held back only by the client
/// rate limiters); beyond a day drift goes unnoticed for too long.
const MIN_RESYNC: Duration = Duration::from_secs(1);
const MAX_RESYNC: Duration = Duration::from_secs(24 * 3600);

fn parse_bounded(text: &str, min: Duration, max: Duration) -> Result<Duration, String> {
    let d = spec::parse_duration(text)?;
    if d < min || d > max {
        return Err(format!(
            "must be between {} and {}",
            spec::format_duration(min),
            spec::format_duration(max)
        ));
    }
    Ok(d)
}

fn parse_debounce(text: &str) -> Result<Duration, String> {
    parse_bounded(text, Duration::ZERO, MAX_DEBOUNCE)
}

fn parse_resync(text: &str) -> Result<Duration, String> {
    parse_bounded(text, MIN_RESYNC, MAX_RESYNC)
}

/// Runs the command until SIGINT or SIGTERM.
pub async fn run(args: Args) -> anyhow::Result<ExitCode> {
    telemetry::init(args.log_format)?;
    let env = |k: &str| std::env::var(k).ok();
    let mut consul_config = ClientConfig::consul_from_env(env)
        .context("failed to read the Consul settings from the environment")?;
    consul_config
        .apply((*args.consul).into())
        .context("failed to apply the Consul flags")?;
    let mut nomad_config = ClientConfig::nomad_from_env(env)
        .context("failed to read the Nomad settings from the environment")?;
    nomad_config
        .apply((*args.nomad).into())
        .context("failed to apply the Nomad flags")?;
    let consul = ConsulClient::new(&consul_config).context("failed to build the Consul client")?;
    let nomad = NomadClient::new(&nomad_config).context("failed to build the Nomad client")?;
    let probe = HttpProbe::new().context("failed to build the probe client")?;

    let limits = args
        .admission
        .limits(&args.prefix)
        .context("invalid admission flags")?;
    let mut config = reconcile::Config::new(args.prefix)
        .debounce(args.debounce)
        .resync(args.resync);
    config.limits = Some(limits);
    if let Some(owner) = args.owner {
        config.owner = owner;
    }
    config.proxy_host = args.proxy_host;
    config.proxy_api = args.proxy_api;

    if args.bootstrap_from_env {
        bootstrap(&consul, &config.config_key()).await?;
    }
    // The surface (issue 12): /metrics, /healthz, /readyz, the status page, fed by the loop
    // and the clients; it stops with the loop.
    let surface = crate::server::Surface::new(crate::metrics::Metrics::new());
    consul.http().observe(surface.metrics().clone());
    nomad.http().observe(surface.metrics().clone());
    let probe = MeteredProbe::new(probe, surface.metrics().clone());
    let (stop, mut on_stop) = tokio::sync::watch::channel(false);
    let (http_addr, http) =
        crate::server::spawn(args.http.http_addr, surface.clone(), async move {
            let _ = on_stop.wait_for(|s| *s).await;
        })
        .await
        .context("failed to start the HTTP listener (--http-addr)")?;
    info!(url = %format!("http://{http_addr}/"), "status page, /metrics, /healthz and /readyz listening");
    // The session must be on the agent's own node, as Consul defaults it.
    let node = consul
        .agent_self()
        .await
        .context("failed to read the Consul agent's node name (GET /v1/agent/self) for the leader session")?
        .config
        .node_name;
    let elector = Elector::spawn(
        consul.clone(),
        args.leader
            .config(&config.prefix, &node, Some(http_addr.to_string())),
    );
    info!(prefix = %config.prefix, consul = %consul_config.endpoint, nomad = %nomad_config.endpoint, %node, "operator starting; passes run only while this replica holds the leader lock");
    Operator::new(config, consul, nomad, probe)
        .with_leader(elector)
        .with_surface(surface)
        .run(shutdown_signal())
        .await;
    let _ = stop.send(true);
    let _ = http.await;
    let _ = tokio::task::spawn_blocking(telemetry::shutdown).await;
    Ok(ExitCode::SUCCESS)
}

/// Writes the document mapped from the HinD environment, only if the key does not exist (CAS 0),
/// so an operator restart never overwrites an edited document.
pub async fn bootstrap(consul: &impl ConsulApi, key: &str) -> anyhow::Result<bool> {
    let document = spec::from_env(|k| std::env::var(k).ok())
        .context("failed to map the environment onto a ProxyConfig")?;
    let mut bytes =
        serde_json::to_vec_pretty(&document).context("failed to encode the document")?;
    bytes.push(b'\n');
    let written = consul
        .kv_put(key, &bytes, Some(0))
        .await
        .with_context(|| format!("failed to write the first document to {key}"))?;
    if written {
        info!(%key, "bootstrapped the config document from the environment");
    } else {
        info!(%key, "config document exists; --bootstrap-from-env left it alone");
    }
    Ok(written)
}

async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
    info!("shutdown requested");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_run_command_line_is_well_formed() {
        <Args as clap::Args>::augment_args(clap::Command::new("run")).debug_assert();
    }

    fn parse(args: &[&str]) -> Result<clap::ArgMatches, clap::Error> {
        <Args as clap::Args>::augment_args(clap::Command::new("run"))
            .try_get_matches_from(std::iter::once("run").chain(args.iter().copied()))
    }

    #[test]
    fn a_resync_below_one_second_or_an_absurd_debounce_is_a_clear_cli_error() {
        for bad in [
            ["--resync", "0s"],
            ["--resync", "500ms"],
            ["--resync", "1000h"],
            ["--debounce", "2h"],
        ] {
            let err = parse(&bad).expect_err("rejected").to_string();
            assert!(err.contains("must be between"), "{bad:?}: {err}");
            assert!(err.contains(bad[0]), "names the flag: {err}");
        }
        assert!(parse(&["--resync", "1s", "--debounce", "0s"]).is_ok());
        assert!(parse(&[]).is_ok(), "the defaults are within bounds");
    }
}
