//! `proxy-operator status`: reads `<prefix>/status` and prints a short summary (or the JSON).
//! Exit code 0 when the phase is `Ready`, 1 otherwise (and when there is no status yet), 2 when
//! Consul cannot be read. `--watch` prints it again on every change until interrupted.

use std::process::ExitCode;

use anyhow::Context as _;

use std::time::Duration;

use crate::consul::ConsulApi;
use crate::spec::status::{Phase, ProxyStatus};
use crate::transport::{ConsulFlags, QueryOptions};

/// Arguments of `proxy-operator status`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// KV prefix the operator uses.
    #[arg(long, value_parser = super::kv_prefix, default_value = "proxy-operator")]
    prefix: String,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Output::Text)]
    output: Output,
    /// Print the status again each time it changes (blocking queries, no polling) until
    /// interrupted.
    #[arg(long, short)]
    watch: bool,
    #[command(flatten)]
    consul: ConsulFlags,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Output {
    Text,
    Json,
}

/// Runs the command.
pub async fn run(args: Args) -> anyhow::Result<ExitCode> {
    let consul = super::cluster::consul(args.consul)?;
    let key = format!("{}/status", args.prefix);
    let mut index = 0;
    loop {
        let opts = if args.watch && index > 0 {
            QueryOptions::blocking(index, Duration::from_secs(300))
        } else {
            QueryOptions::NOW
        };
        let (pair, meta) = consul
            .kv_get(&key, opts)
            .await
            .with_context(|| format!("failed to read {key}"))?;
        if args.watch && meta.index == index {
            continue; // the wait ran out with nothing new
        }
        index = meta.index.max(1);
        let Some(pair) = pair else {
            eprintln!("no status at {key}: the operator has not run a pass yet");
            if args.watch {
                continue;
            }
            return Ok(ExitCode::from(1));
        };
        let status: ProxyStatus = serde_json::from_slice(&pair.value)
            .with_context(|| format!("failed to parse the status document at {key}"))?;
        let mut text = match args.output {
            Output::Json => serde_json::to_string_pretty(&status)? + "\n",
            Output::Text => summary(&status),
        };
        if args.watch && args.output == Output::Text {
            text = format!("--- index {}\n{text}", pair.modify_index);
        }
        super::validate::write_quietly(std::io::stdout().lock(), &text)
            .context("failed to write to stdout")?;
        if !args.watch {
            return Ok(ExitCode::from(u8::from(status.phase != Phase::Ready)));
        }
    }
}

/// A few lines a human reads at a glance.
fn summary(s: &ProxyStatus) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    let short = |d: &Option<String>| {
        d.as_deref()
            .map_or("-".to_owned(), |d| d.chars().take(12).collect())
    };
    let _ = writeln!(out, "phase:       {:?}", s.phase);
    if let Some(leader) = &s.leader {
        let _ = writeln!(out, "leader:      {leader}");
    }
    if let Some(proxy) = s.proxy {
        let version = s.job_version.map_or("-".to_owned(), |v| v.to_string());
        let _ = writeln!(out, "proxy:       {proxy:?} (job version {version})");
    }
    let _ = writeln!(
        out,
        "observed:    index {} digest {}",
        s.observed_index,
        short(&s.observed_digest)
    );
    let _ = writeln!(out, "applied:     {}", short(&s.last_applied_digest));
    if s.last_attempted_digest != s.last_applied_digest {
        let _ = writeln!(out, "attempted:   {}", short(&s.last_attempted_digest));
    }
    if s.failed_digest.is_some() {
        let _ = writeln!(
            out,
            "failed:      {} (not retried until the document or retryNonce changes)",
            short(&s.failed_digest)
        );
    }
    if s.consecutive_failures > 0 {
        let next = s.next_retry_at.as_deref().unwrap_or("-");
        let _ = writeln!(
            out,
            "failures:    {} in a row, next retry {next}",
            s.consecutive_failures
        );
    }
    for c in &s.conditions {
        let _ = writeln!(
            out,
            "condition:   {} {:?} {}: {}",
            c.condition_type, c.status, c.reason, c.message
        );
    }
    for e in &s.validation_errors {
        let _ = writeln!(out, "error:       {e}");
    }
    for w in &s.warnings {
        let _ = writeln!(out, "warning:     {w}");
    }
    if let Some(h) = s.history.last() {
        let _ = writeln!(
            out,
            "last rollout: {}{} {:?} in {} ms: {}",
            h.proxy
                .map(|p| format!("{} ", p.as_str()))
                .unwrap_or_default(),
            h.digest.chars().take(12).collect::<String>(),
            h.outcome,
            h.duration_ms,
            h.reason
        );
    }
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // tests fail loudly
mod tests {
    use super::*;
    use crate::spec::FieldError;

    #[test]
    fn the_summary_names_the_phase_every_validation_error_and_the_failed_digest() {
        let s = ProxyStatus {
            phase: Phase::Invalid,
            failed_digest: Some("0123456789abcdef".into()),
            validation_errors: vec![
                FieldError::new("spec.proxy", "unknown value"),
                FieldError::new("spec.entryPoints.web.address", "bad port"),
            ],
            ..ProxyStatus::default()
        };
        let text = summary(&s);
        assert!(text.contains("phase:       Invalid"), "{text}");
        assert!(text.contains("spec.proxy: unknown value"));
        assert!(text.contains("spec.entryPoints.web.address: bad port"));
        assert!(text.contains("failed:      0123456789ab"));
    }
}
