//! The status document at `<prefix>/status` (DESIGN §5): built from what one pass saw and did,
//! and written back with check-and-set.
//!
//! [`next`] is pure: previous status + what happened in this pass → next status. The loop
//! writes only when [`differs`] says the content changed, so an idle operator writes nothing
//! but its pass counter, once per resync interval.
//! The loop's status store (`reconcile/store.rs`) does the CAS write, together with the rollout
//! journal in one transaction, and on a conflict (someone else wrote in between) re-reads the
//! index and tries again.
//!
//! The document holds digests, phases, reasons and validation errors; never a token, a
//! basic-auth hash or a private key (the spec refers to secrets, it does not hold them).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::rollout::{JobRef, Phase as Rollout};
use crate::spec::status::{
    CertificateWarning, Condition, ConditionStatus, HistoryEntry, Outcome, Phase, ProxyStatus,
};
use crate::spec::{FieldError, ProxyKind};

/// Condition type: the config document parsed and validated.
pub const CONDITION_VALID: &str = "Valid";
/// Condition type: a rollout is in flight.
pub const CONDITION_PROGRESSING: &str = "Progressing";
/// Condition type: the proxy runs the observed spec and passed the gate.
pub const CONDITION_READY: &str = "Ready";
/// Condition type: every host checked is served the certificate the document asks for, valid
/// for more than 14 days ([`certificates_checked`]).
pub const CONDITION_CERTIFICATES: &str = "CertificatesServed";
/// Condition type: the status document read at start was unreadable and was rebuilt from what
/// could be kept (its message says what was kept and what was lost).
pub const CONDITION_RECOVERED: &str = "StatusRecovered";

/// What this pass found, in the order the loop decides it.
#[derive(Debug, Clone, Copy)]
pub enum Report<'a> {
    /// The config key is absent, empty or unreadable; nothing was changed.
    NoConfig {
        /// Why.
        reason: &'a str,
    },
    /// The document does not parse or validate; nothing was changed.
    Invalid {
        /// Every error.
        errors: &'a [FieldError],
    },
    /// Observing the cluster (or writing the status) failed; the last good state stays and the
    /// loop backs off.
    ObservationFailed {
        /// What failed.
        error: &'a str,
        /// When the loop tries again.
        retry_in: Duration,
        /// Trying again will not help until someone acts (401/403: a token or policy must
        /// change); the loop retries only at a long interval.
        terminal: bool,
    },
    /// The job is not ours.
    Stalled {
        /// Why.
        reason: &'a str,
    },
    /// The document cannot be rolled out until a person acts (e.g. a job type Nomad cannot
    /// change in place); `reason` says what to do.
    Blocked {
        /// The condition reason (`JobTypeChange`).
        cause: &'a str,
        /// What is wrong and what to do.
        reason: &'a str,
    },
    /// `spec.paused`.
    Paused,
    /// Something differs but is held (a failed digest, or drift with `driftPolicy: warn`).
    Held {
        /// Why.
        reason: &'a str,
        /// Drift being reported (phase Degraded) rather than a failed digest (phase unchanged).
        drift: bool,
    },
    /// Desired and observed match.
    Converged,
    /// A rollout is in flight, or ended in this pass.
    Rollout(&'a Rollout),
}

/// One pass's facts for the status.
#[derive(Debug, Clone, Copy)]
pub struct Pass<'a> {
    /// ModifyIndex of the config key (0 when absent).
    pub observed_index: u64,
    /// Digest of the observed document, when it validated.
    pub observed_digest: Option<&'a str>,
    /// The proxy the document asks for.
    pub proxy: Option<ProxyKind>,
    /// The job version running now, if observed.
    pub job_version: Option<u64>,
    /// The job running now, when it runs a document that passed the gate (a converged pass):
    /// a rollback target even if the status predates `lastGoodJob`.
    pub good_job: Option<&'a JobRef>,
    /// Validation warnings.
    pub warnings: &'a [FieldError],
    /// The verdict.
    pub report: Report<'a>,
}

/// Builds the next status. `now` is wall-clock time for the RFC 3339 fields.
#[must_use]
pub fn next(prev: &ProxyStatus, pass: &Pass<'_>, now: SystemTime) -> ProxyStatus {
    let stamp = rfc3339(now);
    let mut s = prev.clone();
    s.observed_index = pass.observed_index;
    s.warnings = capped(pass.warnings, "warning(s)");
    if pass.proxy.is_some() {
        s.proxy = pass.proxy;
    }
    if !matches!(
        pass.report,
        Report::Invalid { .. } | Report::NoConfig { .. }
    ) {
        s.observed_digest = pass.observed_digest.map(str::to_owned);
        s.validation_errors.clear();
    }
    if !matches!(pass.report, Report::ObservationFailed { .. }) {
        s.next_retry_at = None;
    }
    let valid = |s: &mut ProxyStatus| {
        s.set_condition(
            cond(CONDITION_VALID, true, "Valid", "the document validates"),
            &stamp,
        );
    };
    match pass.report {
        Report::NoConfig { reason } => {
            let c = cond(
                CONDITION_VALID,
                false,
                "ConfigMissing",
                &format!("{reason}; the proxy is left as it is"),
            );
            s.set_condition(c, &stamp);
        }
        Report::Invalid { errors } => {
            s.phase = Phase::Invalid;
            s.observed_digest = None;
            s.validation_errors = capped(errors, "validation error(s)");
            let message = format!("{} validation error(s); nothing was changed", errors.len());
            s.set_condition(
                cond(CONDITION_VALID, false, "ValidationFailed", &message),
                &stamp,
            );
            // Whatever Ready said before (converged, or an observation that failed) was about
            // an earlier pass: the proxy no longer runs the observed document, it keeps the last
            // applied one.
            s.set_condition(
                cond(
                    CONDITION_READY,
                    false,
                    "Invalid",
                    "the document does not validate; the proxy keeps running the last applied document",
                ),
                &stamp,
            );
            s.set_condition(
                cond(
                    CONDITION_PROGRESSING,
                    false,
                    "Invalid",
                    "nothing is rolled out",
                ),
                &stamp,
            );
        }
        Report::ObservationFailed {
            error,
            retry_in,
            terminal,
        } => {
            // A rollout in flight is still in flight; otherwise the operator is stuck until
            // observations succeed again.
            if s.phase != Phase::Progressing {
                s.phase = Phase::Stalled;
            }
            s.consecutive_failures = s.consecutive_failures.saturating_add(1);
            s.next_retry_at = Some(rfc3339(now + retry_in));
            let (reason, message) = if terminal {
                (
                    "AccessDenied",
                    format!(
                        "{error}; this will not resolve by itself (check the token and its ACL policy); the proxy is left as it is"
                    ),
                )
            } else {
                (
                    "ObservationFailed",
                    format!("{error}; the proxy is left as it is, retrying"),
                )
            };
            s.set_condition(cond(CONDITION_READY, false, reason, &message), &stamp);
        }
        Report::Stalled { reason } => {
            valid(&mut s);
            s.phase = Phase::Stalled;
            s.set_condition(cond(CONDITION_READY, false, "ForeignJob", reason), &stamp);
            s.set_condition(
                cond(
                    CONDITION_PROGRESSING,
                    false,
                    "Stalled",
                    "nothing is rolled out",
                ),
                &stamp,
            );
        }
        Report::Blocked { cause, reason } => {
            valid(&mut s);
            s.phase = Phase::Stalled;
            s.set_condition(cond(CONDITION_READY, false, cause, reason), &stamp);
            s.set_condition(
                cond(CONDITION_PROGRESSING, false, "Blocked", reason),
                &stamp,
            );
        }
        Report::Paused => {
            valid(&mut s);
            s.phase = Phase::Paused;
            s.set_condition(
                cond(
                    CONDITION_PROGRESSING,
                    false,
                    "Paused",
                    "spec.paused is true",
                ),
                &stamp,
            );
        }
        Report::Held { reason, drift } => {
            valid(&mut s);
            if drift {
                s.phase = Phase::Degraded;
                s.set_condition(cond(CONDITION_READY, false, "Drifted", reason), &stamp);
            } else {
                // A held failed digest: the phase is how that rollout ended (an observation
                // error or a restart in between may have replaced it).
                s.phase = failed_phase(&s);
            }
            s.set_condition(cond(CONDITION_PROGRESSING, false, "Held", reason), &stamp);
        }
        Report::Converged => {
            valid(&mut s);
            converged(&mut s, pass, &stamp);
        }
        Report::Rollout(phase) => {
            valid(&mut s);
            rollout(&mut s, pass, phase, now, &stamp);
        }
    }
    s
}

/// Records that the status document was unreadable and rebuilt: `message` says what was kept
/// and what was lost.
pub fn recovered(s: &mut ProxyStatus, message: &str, now: SystemTime) {
    s.set_condition(
        cond(
            CONDITION_RECOVERED,
            true,
            "UnreadableStatusRebuilt",
            message,
        ),
        &rfc3339(now),
    );
}

/// Records a look at the certificates the proxy serves: `checked` hosts were asked, `warnings`
/// is what was wrong. The warnings replace the last check's, most urgent kind first, and the
/// `CertificatesServed` condition summarises them (its reason: the most urgent kind); with
/// nothing checked (the document names no host to check) both
/// are removed. A warning never changes the phase: it is not a failed rollout.
pub fn certificates_checked(
    s: &mut ProxyStatus,
    checked: usize,
    mut warnings: Vec<CertificateWarning>,
    now: SystemTime,
) {
    warnings.sort_by(|a, b| (a.kind, &a.host).cmp(&(b.kind, &b.host)));
    if checked == 0 {
        s.certificate_warnings.clear();
        s.conditions
            .retain(|c| c.condition_type != CONDITION_CERTIFICATES);
        return;
    }
    let condition = match warnings.first() {
        None => cond(
            CONDITION_CERTIFICATES,
            true,
            "Served",
            &format!(
                "{checked} host(s) checked: each is served its certificate, valid for 14 days or more"
            ),
        ),
        Some(first) => {
            let messages: Vec<&str> = warnings.iter().map(|w| w.message.as_str()).collect();
            cond(
                CONDITION_CERTIFICATES,
                false,
                first.kind.as_str(),
                &format!(
                    "{} of {checked} host(s) checked: {}",
                    warnings.len(),
                    messages.join("; ")
                ),
            )
        }
    };
    s.set_condition(condition, &rfc3339(now));
    s.certificate_warnings = warnings
        .into_iter()
        .map(|mut w| {
            w.message = cut(&w.message);
            w
        })
        .collect();
}

/// How the rollout of the failed digest ended, from its history entry.
fn failed_phase(s: &ProxyStatus) -> Phase {
    let ended = s
        .history
        .iter()
        .rev()
        .find(|h| Some(&h.digest) == s.failed_digest.as_ref())
        .map(|h| h.outcome);
    match ended {
        Some(Outcome::RolledBack) => Phase::RolledBack,
        Some(Outcome::Held | Outcome::Failed) => Phase::Degraded,
        _ if matches!(s.phase, Phase::RolledBack | Phase::Degraded) => s.phase,
        _ => Phase::RolledBack,
    }
}

/// What runs is a document that passed the gate. Which one (`lastAppliedDigest`) and where a
/// rollback goes (`lastGoodJob`) only change when a rollout passes the gate.
fn converged(s: &mut ProxyStatus, pass: &Pass<'_>, stamp: &str) {
    s.phase = Phase::Ready;
    s.consecutive_failures = 0;
    s.failed_digest = None;
    s.failed_retry_nonce = None;
    if pass.job_version.is_some() {
        s.job_version = pass.job_version;
    }
    if let Some(job) = pass.good_job {
        s.last_good_job = Some(job.clone());
    }
    s.set_condition(
        cond(
            CONDITION_READY,
            true,
            "Converged",
            "the proxy runs the observed spec",
        ),
        stamp,
    );
    s.set_condition(
        cond(
            CONDITION_PROGRESSING,
            false,
            "Converged",
            "nothing to roll out",
        ),
        stamp,
    );
}

fn rollout(s: &mut ProxyStatus, pass: &Pass<'_>, phase: &Rollout, now: SystemTime, stamp: &str) {
    let history = |s: &mut ProxyStatus,
                   digest: &str,
                   proxy: ProxyKind,
                   outcome,
                   duration: &Duration,
                   reason: &str| {
        push_deduped(
            s,
            HistoryEntry {
                digest: digest.to_owned(),
                proxy: Some(proxy),
                outcome,
                started_at: rfc3339(now.checked_sub(*duration).unwrap_or(now)),
                duration_ms: u64::try_from(duration.as_millis()).unwrap_or(u64::MAX),
                reason: reason.to_owned(),
            },
        );
    };
    match phase {
        Rollout::Idle => converged(s, pass, stamp),
        Rollout::Applying {
            change,
            switch: Some(switch @ crate::rollout::Switch::Draining { job_version, .. }),
            ..
        } => {
            // The new slot passed its gate and serves, and the old one was stopped: the change is
            // live, so the document is Ready (as a Deployment is complete once its old pods are
            // terminating). The old slot's drain still holds the machine, so the next change
            // waits for it, and the history entry comes when it ends.
            converged(s, pass, stamp);
            s.last_applied_digest = Some(change.digest.clone());
            s.last_attempted_digest = Some(change.digest.clone());
            s.job_version = Some(*job_version);
            s.last_good_job = Some(crate::rollout::JobRef {
                job_id: change.job_id.clone(),
                version: *job_version,
                job_digest: change.job.as_ref().map(|j| j.job_digest.clone()),
            });
            s.set_condition(
                cond(
                    CONDITION_PROGRESSING,
                    true,
                    "Draining",
                    &describe_switch(change, switch),
                ),
                stamp,
            );
        }
        Rollout::Applying { change, .. } | Rollout::Verifying { change, .. } => {
            s.phase = Phase::Progressing;
            s.last_attempted_digest = Some(change.digest.clone());
            let message = match phase {
                Rollout::Verifying { waiting_for, .. } => format!("verifying: {waiting_for}"),
                Rollout::Applying {
                    switch: Some(switch),
                    ..
                } => describe_switch(change, switch),
                _ => format!("applying {}", describe(change)),
            };
            s.set_condition(
                cond(CONDITION_PROGRESSING, true, "RollingOut", &message),
                stamp,
            );
        }
        Rollout::RollingBack { change, reason, .. } => {
            s.phase = Phase::Progressing;
            s.last_attempted_digest = Some(change.digest.clone());
            let message = format!("rolling back: {reason}");
            s.set_condition(
                cond(CONDITION_PROGRESSING, true, "RollingBack", &message),
                stamp,
            );
        }
        Rollout::Ready {
            digest,
            proxy,
            duration,
            job,
        } => {
            history(
                s,
                digest,
                *proxy,
                Outcome::Succeeded,
                duration,
                "passed the health gate",
            );
            converged(s, pass, stamp);
            s.last_applied_digest = Some(digest.clone());
            if let Some(job) = job {
                s.job_version = Some(job.version);
                s.last_good_job = Some(job.clone());
            }
        }
        Rollout::RolledBack {
            digest,
            proxy,
            reason,
            duration,
            retry_nonce,
        } => {
            history(s, digest, *proxy, Outcome::RolledBack, duration, reason);
            failed(
                s,
                digest,
                retry_nonce.as_deref(),
                Phase::RolledBack,
                reason,
                stamp,
            );
        }
        Rollout::Degraded {
            digest,
            proxy,
            reason,
            duration,
            held,
            retry_nonce,
        } => {
            let outcome = if *held {
                Outcome::Held
            } else {
                Outcome::Failed
            };
            history(s, digest, *proxy, outcome, duration, reason);
            failed(
                s,
                digest,
                retry_nonce.as_deref(),
                Phase::Degraded,
                reason,
                stamp,
            );
        }
    }
}

fn failed(
    s: &mut ProxyStatus,
    digest: &str,
    retry_nonce: Option<&str>,
    phase: Phase,
    reason: &str,
    stamp: &str,
) {
    s.phase = phase;
    s.consecutive_failures = s.consecutive_failures.saturating_add(1);
    s.failed_digest = Some(digest.to_owned());
    s.failed_retry_nonce = retry_nonce.map(str::to_owned);
    s.last_attempted_digest = Some(digest.to_owned());
    let name = if phase == Phase::RolledBack {
        "RolledBack"
    } else {
        "Degraded"
    };
    s.set_condition(cond(CONDITION_READY, false, name, reason), stamp);
    let message = "the failed spec is not retried until the document or retryNonce changes";
    s.set_condition(cond(CONDITION_PROGRESSING, false, name, message), stamp);
}

/// Appends to history, replacing the last entry when it has the same digest and outcome (a
/// repeated outcome is news only once).
fn push_deduped(s: &mut ProxyStatus, entry: HistoryEntry) {
    if let Some(last) = s.history.last_mut()
        && last.digest == entry.digest
        && last.outcome == entry.outcome
    {
        *last = entry;
        return;
    }
    s.push_history(entry);
}

/// A handover past its gate, in the words of its stage.
fn describe_switch(change: &crate::rollout::Change, switch: &crate::rollout::Switch) -> String {
    let old = change
        .job
        .as_ref()
        .and_then(|j| j.handover.as_ref())
        .map_or("the old slot", |h| h.from_job.as_str());
    let new = &change.job_id;
    match switch {
        crate::rollout::Switch::Stopping { .. } => format!(
            "handover: {new} passed the health gate; stopping {old}, which keeps serving until it stops accepting"
        ),
        crate::rollout::Switch::Draining { .. } => {
            format!("handover: {new} serves; {old} drains its in-flight requests")
        }
    }
}

fn describe(change: &crate::rollout::Change) -> String {
    match (&change.kv, &change.job) {
        (Some(kv), Some(job)) => format!(
            "{} KV change(s) and {}",
            kv.set.len() + kv.delete.len(),
            describe_job(job)
        ),
        (Some(kv), None) => format!("{} KV change(s)", kv.set.len() + kv.delete.len()),
        (None, Some(job)) => describe_job(job),
        (None, None) => "nothing: verifying what runs".to_owned(),
    }
}

fn describe_job(job: &crate::rollout::JobChange) -> String {
    match &job.handover {
        Some(h) => format!(
            "a handover: {} starts next to {}, which serves until {} passes the health gate",
            job.job_id, h.from_job, job.job_id
        ),
        None => "a new job version".to_owned(),
    }
}

/// How many validation errors (and warnings) the status lists: a document of thousands of
/// unknown keys must not make the status exceed Consul's 512 KiB value limit, or the write fails
/// forever and the status keeps saying whatever it said before.
pub const MAX_LISTED_ERRORS: usize = 50;
/// The longest text of one listed error or condition message, in bytes.
pub const MAX_MESSAGE_BYTES: usize = 1024;

/// The first [`MAX_LISTED_ERRORS`], each cut to [`MAX_MESSAGE_BYTES`], and one entry saying how
/// many more there are.
fn capped(errors: &[FieldError], what: &str) -> Vec<FieldError> {
    let mut out: Vec<FieldError> = errors
        .iter()
        .take(MAX_LISTED_ERRORS)
        .map(|e| FieldError::new(cut(&e.path), cut(&e.message)))
        .collect();
    if errors.len() > MAX_LISTED_ERRORS {
        out.push(FieldError::new(
            "",
            format!(
                "and {} more {what}; run `proxy-operator validate` on the document for all of them",
                errors.len() - MAX_LISTED_ERRORS
            ),
        ));
    }
    out
}

/// `text` cut to [`MAX_MESSAGE_BYTES`] on a character boundary.
fn cut(text: &str) -> String {
    if text.len() <= MAX_MESSAGE_BYTES {
        return text.to_owned();
    }
    let mut end = MAX_MESSAGE_BYTES;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &text[..end])
}

fn cond(condition_type: &str, status: bool, reason: &str, message: &str) -> Condition {
    Condition {
        condition_type: condition_type.to_owned(),
        status: if status {
            ConditionStatus::True
        } else {
            ConditionStatus::False
        },
        reason: reason.to_owned(),
        message: cut(message),
        last_transition_time: String::new(),
    }
}

/// Whether `next` says anything `prev` does not: the loop writes only then. `updatedAt`,
/// `nextRetryAt`, `consecutiveFailures` and `passes` alone are bookkeeping, not news: an
/// operator backing off from the same error does not rewrite the document on every retry (the
/// resync pass writes `passes` on its own, see `reconcile`).
#[must_use]
pub fn differs(prev: &ProxyStatus, next: &ProxyStatus) -> bool {
    let strip = |s: &ProxyStatus| ProxyStatus {
        updated_at: None,
        next_retry_at: None,
        consecutive_failures: 0,
        passes: 0,
        ..s.clone()
    };
    strip(prev) != strip(next)
}

/// The first 12 characters of a digest or an ID, as logs, reasons and conditions show it: the
/// one short form everywhere (unique enough among a job's versions, allocations and deployments).
#[must_use]
pub fn short(digest: &str) -> &str {
    digest.get(..12).unwrap_or(digest)
}

/// `2024-05-01T12:00:00Z`: RFC 3339 in UTC, second precision.
#[must_use]
pub fn rfc3339(t: SystemTime) -> String {
    rfc3339_utc::seconds(t.duration_since(UNIX_EPOCH).unwrap_or_default())
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::panic)] // tests fail loudly
mod tests;
