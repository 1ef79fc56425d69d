//! `proxy-operator history` and `proxy-operator rollback`: the documents the operator applied,
//! kept as revisions at `<prefix>/revisions/<n>`, and writing one of them back.
//!
//! The operator's loop writes a [`Revision`] for every rollout that ends (any outcome) and keeps
//! the last [`REVISIONS_KEPT`]. Documents never hold secrets (basic auth is by reference), and
//! the stored text is the document as it was in `<prefix>/config`, so writing it back restores
//! exactly what was applied.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;
use serde::{Deserialize, Serialize};

use super::apply::{self, Write};
use super::cluster;
use crate::consul::ConsulApi;
use crate::spec::status::Outcome;
use crate::spec::{self, looks_secret};
use crate::transport::{ConsulFlags, QueryOptions};

/// How many revisions the loop keeps.
pub const REVISIONS_KEPT: usize = 10;

/// One applied document, as the loop stores it at `<prefix>/revisions/<revision>` (JSON).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Revision {
    /// Increasing number; also the last segment of the key.
    pub revision: u64,
    /// Spec digest of the document.
    pub digest: String,
    /// ModifyIndex of `<prefix>/config` the document had.
    pub config_index: u64,
    /// When its rollout ended (RFC 3339).
    pub finished_at: String,
    /// How its rollout ended.
    pub outcome: Outcome,
    /// Why.
    pub reason: String,
    /// The document text, exactly as it was in `<prefix>/config`.
    pub document: String,
}

/// The KV key of a revision.
#[must_use]
pub fn revision_key(prefix: &str, revision: u64) -> String {
    format!("{prefix}/revisions/{revision}")
}

/// What the loop writes when a rollout ends, in its fenced transaction: the new record's key
/// and JSON, and the keys of the oldest records beyond [`REVISIONS_KEPT`] to delete. `existing`
/// are the revision numbers under `<prefix>/revisions/` now; the new record's number is one
/// past the highest (its `revision` field is set here). Pure.
///
/// # Errors
/// Only when the record cannot be encoded as JSON (never for these types).
pub fn revision_ops(
    prefix: &str,
    existing: &[u64],
    mut record: Revision,
) -> Result<(String, Vec<u8>, Vec<String>), serde_json::Error> {
    let next = existing.iter().max().map_or(1, |n| n + 1);
    record.revision = next;
    let value = serde_json::to_vec(&record)?;
    let mut kept: Vec<u64> = existing.to_vec();
    kept.sort_unstable();
    kept.push(next);
    let excess = kept.len().saturating_sub(REVISIONS_KEPT);
    let deletes = kept[..excess]
        .iter()
        .map(|n| revision_key(prefix, *n))
        .collect();
    Ok((revision_key(prefix, next), value, deletes))
}

/// Arguments of `proxy-operator history`.
#[derive(Debug, clap::Args)]
pub struct HistoryArgs {
    /// KV prefix the operator uses.
    #[arg(long, value_parser = super::kv_prefix, default_value = "proxy-operator")]
    prefix: String,
    #[command(flatten)]
    consul: ConsulFlags,
}

/// Arguments of `proxy-operator rollback`.
#[derive(Debug, clap::Args)]
#[command(
    after_help = "Exit codes: as `apply`: 0 written (with --wait: Ready), 1 the rollout \
did not reach Ready or no revision to go back to, 2 error, 3 the key changed since it was read, 4 timeout."
)]
pub struct RollbackArgs {
    /// The revision to restore (see `history`); default: the newest succeeded revision whose
    /// document differs from the current one.
    #[arg(long, value_name = "REVISION")]
    to: Option<u64>,
    /// Follow the rollout until it ends.
    #[arg(long)]
    wait: bool,
    /// How long `--wait` follows the rollout.
    #[arg(long, value_parser = spec::parse_duration, default_value = "5m")]
    timeout: Duration,
    /// KV prefix the operator uses.
    #[arg(long, value_parser = super::kv_prefix, default_value = "proxy-operator")]
    prefix: String,
    #[command(flatten)]
    consul: ConsulFlags,
}

/// Reads every revision, oldest first; unreadable entries are reported and skipped.
async fn revisions(consul: &impl ConsulApi, prefix: &str) -> anyhow::Result<Vec<Revision>> {
    let root = format!("{prefix}/revisions/");
    let (pairs, _) = consul
        .kv_list(&root, QueryOptions::NOW)
        .await
        .with_context(|| format!("failed to read {root}"))?;
    let mut out: Vec<Revision> = pairs
        .into_iter()
        .filter_map(|p| match serde_json::from_slice::<Revision>(&p.value) {
            Ok(r) => Some(r),
            Err(e) => {
                eprintln!("warning: skipping {}: not a revision record: {e}", p.key);
                None
            }
        })
        .collect();
    out.sort_by_key(|r| r.revision);
    Ok(out)
}

fn shown(s: &str) -> &str {
    if looks_secret(s) { "<redacted>" } else { s }
}

/// Runs `history`.
pub async fn run_history(args: HistoryArgs) -> anyhow::Result<ExitCode> {
    let consul = cluster::consul(args.consul)?;
    let revs = revisions(&consul, &args.prefix).await?;
    let mut out = String::new();
    if revs.is_empty() {
        eprintln!(
            "no revisions at {}/revisions/ yet (the operator records one per finished rollout); the status history follows",
            args.prefix
        );
        let status = cluster::read_status(&consul, &args.prefix)
            .await?
            .unwrap_or_default();
        out.push_str("STARTED                DIGEST        OUTCOME      TOOK     REASON\n");
        for h in &status.history {
            out.push_str(&format!(
                "{:<22} {:<13} {:<12} {:<8} {}\n",
                h.started_at,
                h.digest.chars().take(12).collect::<String>(),
                crate::metrics::outcome_name(h.outcome),
                format!("{}s", h.duration_ms / 1000),
                shown(&h.reason)
            ));
        }
    } else {
        out.push_str("REV  FINISHED               DIGEST        OUTCOME      REASON\n");
        for r in &revs {
            out.push_str(&format!(
                "{:<4} {:<22} {:<13} {:<12} {}\n",
                r.revision,
                r.finished_at,
                r.digest.chars().take(12).collect::<String>(),
                crate::metrics::outcome_name(r.outcome),
                shown(&r.reason)
            ));
        }
    }
    super::validate::write_quietly(std::io::stdout().lock(), &out)
        .context("failed to write to stdout")?;
    Ok(ExitCode::SUCCESS)
}

/// The revision `rollback` restores: `--to`, or the newest succeeded one unlike the current
/// document.
fn pick<'a>(
    revs: &'a [Revision],
    to: Option<u64>,
    current_digest: Option<&str>,
) -> Option<&'a Revision> {
    match to {
        Some(n) => revs.iter().find(|r| r.revision == n),
        None => revs
            .iter()
            .rev()
            .find(|r| r.outcome == Outcome::Succeeded && Some(r.digest.as_str()) != current_digest),
    }
}

/// Runs `rollback`.
pub async fn run_rollback(args: RollbackArgs) -> anyhow::Result<ExitCode> {
    let consul = cluster::consul(args.consul)?;
    let revs = revisions(&consul, &args.prefix).await?;
    let key = format!("{}/config", args.prefix);
    let (current, _) = consul
        .kv_get(&key, QueryOptions::NOW)
        .await
        .with_context(|| format!("failed to read {key}"))?;
    let current_digest = current
        .as_ref()
        .and_then(|p| spec::load(&p.value).ok())
        .map(|s| s.digest().to_owned());
    let Some(target) = pick(&revs, args.to, current_digest.as_deref()) else {
        match args.to {
            Some(n) => eprintln!(
                "no revision {n} at {}/revisions/ (see `proxy-operator history`)",
                args.prefix
            ),
            None => eprintln!(
                "no succeeded revision other than the current document at {}/revisions/ (see `proxy-operator history`)",
                args.prefix
            ),
        }
        return Ok(ExitCode::from(apply::EXIT_NOT_READY));
    };
    if let Err(e) = spec::load(target.document.as_bytes()) {
        eprintln!(
            "revision {} no longer validates; nothing written:",
            target.revision
        );
        for fe in e.field_errors() {
            eprintln!("  {fe}");
        }
        return Ok(ExitCode::from(apply::EXIT_NOT_READY));
    }
    eprintln!(
        "restoring revision {} (digest {}, {})",
        target.revision,
        target.digest.chars().take(12).collect::<String>(),
        crate::metrics::outcome_name(target.outcome)
    );
    let write = Write {
        key: &key,
        bytes: target.document.as_bytes(),
        if_index: Some(current.as_ref().map_or(0, |p| p.modify_index)),
        force: false,
    };
    let Some(index) = apply::write_document(&consul, &write).await? else {
        return Ok(ExitCode::from(apply::EXIT_CONFLICT));
    };
    if !args.wait {
        return Ok(ExitCode::SUCCESS);
    }
    apply::wait_for_rollout(&consul, &args.prefix, index, args.timeout).await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rev(n: u64, digest: &str, outcome: Outcome) -> Revision {
        Revision {
            revision: n,
            digest: digest.into(),
            config_index: n * 10,
            finished_at: String::new(),
            outcome,
            reason: String::new(),
            document: String::new(),
        }
    }

    #[test]
    fn rollback_picks_the_newest_succeeded_revision_unlike_the_current_document() {
        let revs = [
            rev(1, "a", Outcome::Succeeded),
            rev(2, "b", Outcome::Succeeded),
            rev(3, "c", Outcome::RolledBack),
            rev(4, "d", Outcome::Succeeded),
        ];
        assert_eq!(pick(&revs, None, Some("d")).map(|r| r.revision), Some(2));
        assert_eq!(pick(&revs, None, Some("c")).map(|r| r.revision), Some(4));
        assert_eq!(pick(&revs, Some(1), Some("d")).map(|r| r.revision), Some(1));
        assert_eq!(pick(&revs, Some(9), None), None);
    }

    #[test]
    fn a_new_revision_takes_the_next_number_and_only_the_last_ten_are_kept() {
        let (key, value, deletes) =
            revision_ops("p", &[], rev(0, "a", Outcome::Succeeded)).unwrap_or_default();
        assert_eq!(key, "p/revisions/1");
        assert!(deletes.is_empty());
        let back: Revision =
            serde_json::from_slice(&value).unwrap_or_else(|_| rev(0, "", Outcome::Failed));
        assert_eq!(back.revision, 1);
        let existing: Vec<u64> = (3..=12).collect();
        let (key, _, deletes) =
            revision_ops("p", &existing, rev(0, "b", Outcome::Held)).unwrap_or_default();
        assert_eq!(key, "p/revisions/13");
        assert_eq!(deletes, ["p/revisions/3"]);
    }

    #[test]
    fn a_revision_record_round_trips_in_camel_case() {
        let r = rev(3, "abc", Outcome::RolledBack);
        let json = serde_json::to_value(&r).unwrap_or_default();
        assert_eq!(json["configIndex"], 30);
        assert_eq!(json["outcome"], "RolledBack");
        assert_eq!(revision_key("p", 3), "p/revisions/3");
    }
}
