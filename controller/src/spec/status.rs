//! The status document the operator writes to `<prefix>/status` (DESIGN §5).
//!
//! Unlike `ProxyConfig`, unknown fields are tolerated when reading, so an older operator can
//! read a status written by a newer one during an upgrade.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{ApiVersion, FieldError, ProxyKind};

/// How many rollouts `history` keeps.
pub const HISTORY_LIMIT: usize = 10;

/// The observed state of the proxy, as the operator last saw and changed it.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", default)]
#[schemars(title = "ProxyStatus", extend("$id" = "https://proxy-operator.io/schemas/proxystatus.v1alpha1.schema.json"))]
pub struct ProxyStatus {
    /// `proxy-operator.io/v1alpha1`.
    pub api_version: ApiVersion,
    /// `ProxyStatus`.
    pub kind: ProxyStatusKind,
    /// ModifyIndex of the config key this status answers.
    pub observed_index: u64,
    /// Digest of the config document observed (absent when it did not parse).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub observed_digest: Option<String>,
    /// Summary of where the proxy stands.
    pub phase: Phase,
    /// Detailed conditions (`Ready`, `Progressing`, `Valid`, ...).
    pub conditions: Vec<Condition>,
    /// Digest of the last spec that passed the health gate.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_applied_digest: Option<String>,
    /// Digest of the last spec a rollout was started for.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_attempted_digest: Option<String>,
    /// Digest of a spec that failed; it is not retried until it or `retryNonce` changes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub failed_digest: Option<String>,
    /// `retryNonce` of the failed spec.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub failed_retry_nonce: Option<String>,
    /// The proxy that runs.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub proxy: Option<ProxyKind>,
    /// Nomad version of the proxy's job.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub job_version: Option<u64>,
    /// The last job version that passed the health gate: where a failed rollout goes back to.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_good_job: Option<JobRef>,
    /// Identity of the operator replica that wrote this.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub leader: Option<String>,
    /// Failed attempts in a row (observations or rollouts).
    pub consecutive_failures: u32,
    /// When the next retry happens (RFC 3339), if one is scheduled.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_retry_at: Option<String>,
    /// Every validation error of the observed document (phase `Invalid`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub validation_errors: Vec<FieldError>,
    /// Validation warnings of the observed document; they do not block rollouts.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<FieldError>,
    /// What the last look at the certificates the proxy serves found wrong: a host served the
    /// proxy's fallback (self-signed) certificate, or one expiring within 14 days. Replaced by
    /// every check (after a rollout passes the gate and at each resync); never blocks a rollout.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub certificate_warnings: Vec<CertificateWarning>,
    /// The last rollouts, oldest first, at most [`HISTORY_LIMIT`].
    pub history: Vec<HistoryEntry>,
    /// When this document was written (RFC 3339).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub updated_at: Option<String>,
    /// Reconcile passes completed, counted on across operator restarts. A pass that changes
    /// nothing writes nothing, but the periodic resync pass writes this counter, so a reader
    /// who sees it move twice after an event knows a whole pass ran after it.
    pub passes: u64,
}

/// What is wrong with the certificate the proxy serves for one host.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", default)]
pub struct CertificateWarning {
    /// What kind of problem.
    pub kind: CertificateWarningKind,
    /// The host name (SNI) the certificate was asked for.
    pub host: String,
    /// What was served instead, and what to fix.
    pub message: String,
    /// notAfter of the served certificate (RFC 3339), when one was served.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub not_after: Option<String>,
    /// Whole days until notAfter (negative once expired), for `CertificateExpiring`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub days_left: Option<i64>,
}

/// Kinds of [`CertificateWarning`], most urgent first.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default, Serialize, Deserialize, JsonSchema,
)]
pub enum CertificateWarningKind {
    /// The proxy serves its own fallback certificate for the host (Traefik's self-signed
    /// default), another one that does not name it, or none at all (Caddy refuses the
    /// handshake): the configured file did not load, or ACME did not obtain one.
    #[default]
    CertificateFallback,
    /// The served certificate expires within 14 days (or has expired).
    CertificateExpiring,
    /// The entry point could not be reached to look at the certificate.
    CertificateUnchecked,
}

impl CertificateWarningKind {
    /// The name, as the status document spells it.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::CertificateFallback => "CertificateFallback",
            Self::CertificateExpiring => "CertificateExpiring",
            Self::CertificateUnchecked => "CertificateUnchecked",
        }
    }
}

/// One version of one Nomad job.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", default)]
pub struct JobRef {
    /// Nomad job ID.
    pub job_id: String,
    /// Job version.
    pub version: u64,
    /// Its `proxy-operator/spec-digest` Meta, when it has one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub job_digest: Option<String>,
}

/// `kind` of the status document.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
pub enum ProxyStatusKind {
    /// `ProxyStatus`
    #[default]
    ProxyStatus,
}

/// Where the proxy stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize, JsonSchema)]
pub enum Phase {
    /// Nothing observed or done yet.
    #[default]
    Pending,
    /// A rollout is under way.
    Progressing,
    /// The proxy runs the observed spec and passed the health gate.
    Ready,
    /// The proxy runs but is unhealthy, or a failed version is held (`onFailure: hold`).
    Degraded,
    /// The last rollout failed and was reverted to the last good version.
    RolledBack,
    /// The observed document does not validate; nothing was changed.
    Invalid,
    /// `spec.paused` is true; nothing is changed.
    Paused,
    /// Observations keep failing; the last good state stays while the operator backs off.
    Stalled,
}

/// Status of a condition.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
pub enum ConditionStatus {
    /// The condition holds.
    True,
    /// It does not.
    False,
    /// Not known yet.
    #[default]
    Unknown,
}

/// One condition, Kubernetes-style.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", default)]
pub struct Condition {
    /// Condition type, e.g. `Ready`.
    #[serde(rename = "type")]
    pub condition_type: String,
    /// True, False or Unknown.
    pub status: ConditionStatus,
    /// CamelCase machine-readable reason.
    pub reason: String,
    /// Human-readable explanation.
    pub message: String,
    /// When `status` last changed (RFC 3339).
    pub last_transition_time: String,
}

/// How a rollout ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
pub enum Outcome {
    /// Passed the health gate.
    #[default]
    Succeeded,
    /// Failed and was reverted.
    RolledBack,
    /// Failed and was left running (`onFailure: hold`).
    Held,
    /// Failed before anything changed (e.g. the register call was refused).
    Failed,
}

/// One rollout in `history`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", default)]
pub struct HistoryEntry {
    /// Spec digest rolled out.
    pub digest: String,
    /// The proxy the rollout ran (absent in entries written before it was recorded).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proxy: Option<ProxyKind>,
    /// How it ended.
    pub outcome: Outcome,
    /// When it started (RFC 3339).
    pub started_at: String,
    /// How long it took.
    pub duration_ms: u64,
    /// Why it ended that way.
    pub reason: String,
}

impl ProxyStatus {
    /// Appends a rollout, keeping only the last [`HISTORY_LIMIT`].
    pub fn push_history(&mut self, entry: HistoryEntry) {
        self.history.push(entry);
        if self.history.len() > HISTORY_LIMIT {
            let excess = self.history.len() - HISTORY_LIMIT;
            self.history.drain(..excess);
        }
    }

    /// Sets a condition by type. `lastTransitionTime` moves to `now` only when the status
    /// changes, so it tells how long a condition has held.
    pub fn set_condition(&mut self, mut condition: Condition, now: &str) {
        match self
            .conditions
            .iter_mut()
            .find(|c| c.condition_type == condition.condition_type)
        {
            Some(existing) => {
                condition.last_transition_time = if existing.status == condition.status {
                    existing.last_transition_time.clone()
                } else {
                    now.to_owned()
                };
                *existing = condition;
            }
            None => {
                condition.last_transition_time = now.to_owned();
                self.conditions.push(condition);
            }
        }
    }

    /// The condition of a type, if set.
    pub fn condition(&self, condition_type: &str) -> Option<&Condition> {
        self.conditions
            .iter()
            .find(|c| c.condition_type == condition_type)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(i: u64) -> HistoryEntry {
        HistoryEntry {
            digest: format!("d{i}"),
            duration_ms: i,
            ..HistoryEntry::default()
        }
    }

    #[test]
    fn history_keeps_only_the_last_ten_rollouts_oldest_first() {
        let mut status = ProxyStatus::default();
        for i in 0..13 {
            status.push_history(entry(i));
        }
        let digests: Vec<&str> = status.history.iter().map(|h| h.digest.as_str()).collect();
        assert_eq!(
            digests,
            [
                "d3", "d4", "d5", "d6", "d7", "d8", "d9", "d10", "d11", "d12"
            ]
        );
    }

    #[test]
    fn condition_transition_time_moves_only_when_status_changes() {
        let mut status = ProxyStatus::default();
        let ready = |s| Condition {
            condition_type: "Ready".into(),
            status: s,
            ..Condition::default()
        };
        status.set_condition(ready(ConditionStatus::False), "t1");
        status.set_condition(ready(ConditionStatus::False), "t2");
        assert_eq!(
            status
                .condition("Ready")
                .map(|c| c.last_transition_time.as_str()),
            Some("t1")
        );
        status.set_condition(ready(ConditionStatus::True), "t3");
        assert_eq!(
            status
                .condition("Ready")
                .map(|c| c.last_transition_time.as_str()),
            Some("t3")
        );
        assert_eq!(status.conditions.len(), 1);
    }

    #[test]
    fn status_serialises_in_camel_case_with_its_kind() {
        let mut status = ProxyStatus {
            phase: Phase::RolledBack,
            observed_index: 42,
            ..ProxyStatus::default()
        };
        status.push_history(HistoryEntry {
            outcome: Outcome::RolledBack,
            ..entry(1)
        });
        let json = serde_json::to_value(&status).expect("serialises");
        assert_eq!(json["apiVersion"], "proxy-operator.io/v1alpha1");
        assert_eq!(json["kind"], "ProxyStatus");
        assert_eq!(json["phase"], "RolledBack");
        assert_eq!(json["observedIndex"], 42);
        assert_eq!(json["history"][0]["durationMs"], 1);
        let back: ProxyStatus = serde_json::from_value(json).expect("round-trips");
        assert_eq!(back, status);
    }

    #[test]
    fn status_with_fields_from_a_newer_operator_still_reads() {
        let json = serde_json::json!({"apiVersion": "proxy-operator.io/v1alpha1", "kind": "ProxyStatus", "phase": "Ready", "futureField": 1});
        let status: ProxyStatus = serde_json::from_value(json).expect("unknown fields tolerated");
        assert_eq!(status.phase, Phase::Ready);
    }
}
