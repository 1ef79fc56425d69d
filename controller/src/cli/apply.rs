//! `proxy-operator apply FILE`: validates a document and writes it to `<prefix>/config` with
//! check-and-set, then (with `--wait`) follows the rollout the operator starts for it.

use std::io::{IsTerminal as _, Write as _};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::Context as _;

use super::cluster;
use crate::consul::{ConsulApi, ConsulClient};
use crate::spec::status::{Phase, ProxyStatus};
use crate::spec::{self, looks_secret};
use crate::transport::{ConsulFlags, QueryOptions};

/// Exit code when the rollout ended in another phase than Ready, or the document is invalid.
pub const EXIT_NOT_READY: u8 = 1;
/// Exit code when the key changed since it was read (check-and-set refused).
pub const EXIT_CONFLICT: u8 = 3;
/// Exit code when `--wait` ran out of time.
pub const EXIT_TIMEOUT: u8 = 4;

const EXIT_HELP: &str = "Exit codes: 0 written (with --wait: the rollout reached Ready), \
1 invalid document or the rollout ended RolledBack, Degraded, Invalid or Stalled, \
2 usage, IO or cluster error, 3 the key changed since it was read (use --force to overwrite), \
4 --timeout passed before the rollout ended.";

/// Arguments of `proxy-operator apply`.
#[derive(Debug, clap::Args)]
#[command(after_help = EXIT_HELP)]
pub struct Args {
    /// The ProxyConfig document (YAML or JSON).
    pub file: PathBuf,
    /// Follow the rollout until it ends; exit 0 only when it reaches Ready.
    #[arg(long)]
    pub wait: bool,
    /// How long `--wait` follows the rollout.
    #[arg(long, value_parser = parse_timeout, default_value = "5m")]
    pub timeout: Duration,
    /// Write only if the key is still at this ModifyIndex (from `plan`, `status` or
    /// `consul kv get -detailed`); default: the index read just before writing.
    #[arg(long, value_name = "INDEX", conflicts_with = "force")]
    pub if_index: Option<u64>,
    /// Write even if the key changed since it was read.
    #[arg(long)]
    pub force: bool,
    /// KV prefix the operator uses.
    #[arg(long, value_parser = super::kv_prefix, default_value = "proxy-operator")]
    pub prefix: String,
    #[command(flatten)]
    consul: Box<ConsulFlags>,
}

fn parse_timeout(text: &str) -> Result<Duration, String> {
    let d = spec::parse_duration(text)?;
    if d.is_zero() {
        return Err("must be more than 0s".into());
    }
    Ok(d)
}

/// Runs the command.
pub async fn run(args: Args) -> anyhow::Result<ExitCode> {
    let bytes = std::fs::read(&args.file)
        .with_context(|| format!("failed to read {}", args.file.display()))?;
    let Some(validated) =
        super::load_document(&args.file, &bytes, "invalid ProxyConfig, nothing written")
    else {
        return Ok(ExitCode::from(EXIT_NOT_READY));
    };
    for w in validated.warnings() {
        eprintln!("warning: {w}");
    }
    let consul = cluster::consul(*args.consul)?;
    let key = format!("{}/config", args.prefix);
    let write = Write {
        key: &key,
        bytes: &bytes,
        if_index: args.if_index,
        force: args.force,
    };
    let Some(index) = write_document(&consul, &write).await? else {
        return Ok(ExitCode::from(EXIT_CONFLICT));
    };
    if !args.wait {
        return Ok(ExitCode::SUCCESS);
    }
    wait_for_rollout(&consul, &args.prefix, index, args.timeout).await
}

/// A CAS write of a document.
pub(super) struct Write<'a> {
    pub key: &'a str,
    pub bytes: &'a [u8],
    pub if_index: Option<u64>,
    pub force: bool,
}

/// Writes the document unless the key changed; returns the key's ModifyIndex after the write
/// (the index the operator's status answers with), or `None` when refused (explained on stderr).
pub(super) async fn write_document(
    consul: &ConsulClient,
    w: &Write<'_>,
) -> anyhow::Result<Option<u64>> {
    let (current, _) = consul
        .kv_get(w.key, QueryOptions::NOW)
        .await
        .with_context(|| format!("failed to read {}", w.key))?;
    let read_index = current.as_ref().map_or(0, |p| p.modify_index);
    if let Some(pair) = &current
        && pair.value == w.bytes
        && w.if_index.is_none_or(|i| i == pair.modify_index)
    {
        eprintln!(
            "{} is unchanged (index {}); nothing written",
            w.key, pair.modify_index
        );
        return Ok(Some(pair.modify_index));
    }
    let cas = if w.force {
        None
    } else {
        Some(w.if_index.unwrap_or(read_index))
    };
    let written = consul
        .kv_put(w.key, w.bytes, cas)
        .await
        .with_context(|| format!("failed to write {}", w.key))?;
    if !written {
        let expected = cas.unwrap_or_default();
        let (now, _) = consul
            .kv_get(w.key, QueryOptions::NOW)
            .await
            .with_context(|| format!("failed to read {}", w.key))?;
        let now = now.map_or(0, |p| p.modify_index);
        eprintln!(
            "refused: {} changed since it was read (expected index {expected}, it is at {now}); nothing written. \
             Run `proxy-operator plan` to see what changed, then apply again, or pass --force to overwrite it.",
            w.key
        );
        return Ok(None);
    }
    let (after, _) = consul
        .kv_get(w.key, QueryOptions::NOW)
        .await
        .with_context(|| format!("failed to read {} back", w.key))?;
    let index = after.map_or(0, |p| p.modify_index);
    eprintln!("wrote {} (index {index})", w.key);
    Ok(Some(index))
}

fn text(s: &str) -> &str {
    if looks_secret(s) { "<redacted>" } else { s }
}

/// One line per phase change and per condition change; on a terminal, a progress line too.
struct Follower {
    terminal: bool,
    last_phase: Option<Phase>,
    last_conditions: Vec<(String, String, String)>,
}

impl Follower {
    fn observe(&mut self, status: &ProxyStatus, started: Instant, timeout: Duration) {
        let mut err = std::io::stderr().lock();
        if self.terminal {
            let _ = write!(err, "\r\x1b[2K");
        }
        if self.last_phase != Some(status.phase) {
            let _ = writeln!(err, "phase: {:?}", status.phase);
            self.last_phase = Some(status.phase);
        }
        for c in &status.conditions {
            let now = (
                c.condition_type.clone(),
                format!("{:?}", c.status),
                c.reason.clone(),
            );
            if !self.last_conditions.contains(&now) {
                let _ = writeln!(
                    err,
                    "  {} {:?} {}: {}",
                    c.condition_type,
                    c.status,
                    text(&c.reason),
                    text(&c.message)
                );
            }
        }
        self.last_conditions = status
            .conditions
            .iter()
            .map(|c| {
                (
                    c.condition_type.clone(),
                    format!("{:?}", c.status),
                    c.reason.clone(),
                )
            })
            .collect();
        if self.terminal {
            let _ = write!(
                err,
                "{}",
                progress(started.elapsed(), timeout, status.phase)
            );
        }
        let _ = err.flush();
    }

    fn finish(&self) {
        if self.terminal {
            eprint!("\r\x1b[2K");
        }
    }
}

/// `[#####.....] 12s of 5m Progressing`
fn progress(elapsed: Duration, timeout: Duration, phase: Phase) -> String {
    const WIDTH: u128 = 24;
    let filled = (elapsed.as_millis() * WIDTH / timeout.as_millis().max(1)).min(WIDTH);
    let filled = usize::try_from(filled).unwrap_or(0);
    let width = usize::try_from(WIDTH).unwrap_or(24);
    format!(
        "[{}{}] {}s of {} {phase:?}",
        "#".repeat(filled),
        ".".repeat(width - filled),
        elapsed.as_secs(),
        spec::format_duration(timeout)
    )
}

/// Follows `<prefix>/status` with blocking queries until it answers `config_index` in a final
/// phase: 0 on Ready (or Paused), 1 otherwise with the reason, 4 on timeout.
pub(super) async fn wait_for_rollout(
    consul: &ConsulClient,
    prefix: &str,
    config_index: u64,
    timeout: Duration,
) -> anyhow::Result<ExitCode> {
    let key = format!("{prefix}/status");
    let started = Instant::now();
    let mut follower = Follower {
        terminal: std::io::stderr().is_terminal(),
        last_phase: None,
        last_conditions: Vec::new(),
    };
    let mut index = 0;
    loop {
        let left = timeout.saturating_sub(started.elapsed());
        if left.is_zero() {
            follower.finish();
            eprintln!(
                "timed out after {}: the rollout of index {config_index} has not ended (last phase {})",
                spec::format_duration(timeout),
                follower
                    .last_phase
                    .map_or("unknown".to_owned(), |p| format!("{p:?}"))
            );
            return Ok(ExitCode::from(EXIT_TIMEOUT));
        }
        // Short blocking waits keep the progress line moving and the timeout exact.
        let wait = left.min(Duration::from_secs(1));
        let read = tokio::time::timeout(
            wait + Duration::from_secs(5),
            consul.kv_get(&key, QueryOptions::blocking(index, wait)),
        )
        .await;
        let Ok(read) = read else { continue };
        let (pair, meta) = read.with_context(|| format!("failed to read {key}"))?;
        index = meta.index;
        let Some(pair) = pair else { continue };
        let status: ProxyStatus = serde_json::from_slice(&pair.value)
            .with_context(|| format!("failed to parse the status document at {key}"))?;
        if status.observed_index < config_index {
            continue; // an answer to an older document
        }
        follower.observe(&status, started, timeout);
        let reason = || {
            status
                .history
                .last()
                .map(|h| text(&h.reason).to_owned())
                .or_else(|| {
                    status
                        .conditions
                        .iter()
                        .find(|c| c.condition_type == "Ready")
                        .map(|c| text(&c.message).to_owned())
                })
                .unwrap_or_default()
        };
        match status.phase {
            Phase::Ready | Phase::Paused => {
                follower.finish();
                eprintln!("done: {:?}", status.phase);
                return Ok(ExitCode::SUCCESS);
            }
            Phase::RolledBack | Phase::Degraded | Phase::Stalled => {
                follower.finish();
                eprintln!("failed: {:?}: {}", status.phase, reason());
                return Ok(ExitCode::from(EXIT_NOT_READY));
            }
            Phase::Invalid => {
                follower.finish();
                eprintln!("failed: Invalid:");
                for e in &status.validation_errors {
                    eprintln!("  {}", text(&e.to_string()));
                }
                return Ok(ExitCode::from(EXIT_NOT_READY));
            }
            Phase::Pending | Phase::Progressing => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_progress_bar_fills_with_elapsed_time_and_never_overflows() {
        let t = Duration::from_secs(100);
        assert!(progress(Duration::ZERO, t, Phase::Progressing).starts_with("[......"));
        assert!(
            progress(Duration::from_secs(50), t, Phase::Progressing)
                .starts_with("[############......")
        );
        assert!(
            progress(Duration::from_secs(500), t, Phase::Ready)
                .starts_with("[########################]")
        );
    }
}
