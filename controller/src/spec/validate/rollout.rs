//! `spec.rollout` (health deadline, minimum healthy time, route probes) and `spec.retryNonce`.

use std::net::IpAddr;

use std::time::Duration;

use super::field::Validator;
use crate::spec::model::{EntryPoint, Rollout};
use crate::spec::{MAX_GATE_DURATION, ProxyConfigSpec, format_duration};

/// Checks `spec.rollout` and `spec.retryNonce`; the probes' entry points must exist.
pub(super) fn check(
    v: &mut Validator,
    spec: &ProxyConfigSpec,
    listeners: &[EntryPoint],
) -> Rollout {
    let r = &spec.rollout;
    let healthy_deadline = v
        .positive_duration("spec.rollout.healthyDeadline", &r.healthy_deadline)
        .and_then(|d| {
            at_most_gate_limit(v, "spec.rollout.healthyDeadline", &r.healthy_deadline, d)
        });
    let min_healthy_time = v
        .duration("spec.rollout.minHealthyTime", &r.min_healthy_time)
        .and_then(|d| at_most_gate_limit(v, "spec.rollout.minHealthyTime", &r.min_healthy_time, d));
    if let (Some(deadline), Some(min)) = (healthy_deadline, min_healthy_time)
        && min >= deadline
    {
        v.error(
            "spec.rollout.minHealthyTime",
            format!(
                "{} must be shorter than healthyDeadline ({}); a version could never pass",
                r.min_healthy_time, r.healthy_deadline
            ),
        );
    }
    for (i, probe) in r.probes.iter().enumerate() {
        let base = format!("spec.rollout.probes[{i}]");
        if probe.host.parse::<IpAddr>().is_err() {
            v.hostname(&format!("{base}.host"), &probe.host);
        }
        if !probe.path.starts_with('/')
            || probe
                .path
                .chars()
                .any(|c| c.is_whitespace() || c.is_control())
        {
            v.error(
                format!("{base}.path"),
                format!(
                    "{:?} must start with '/' and contain no spaces (e.g. /healthz)",
                    probe.path
                ),
            );
        }
        if !(100..=599).contains(&probe.expect_status) {
            v.error(
                format!("{base}.expectStatus"),
                format!("{} is not an HTTP status; use 100-599", probe.expect_status),
            );
        }
        if !listeners.iter().any(|l| l.name == probe.entry_point)
            && !v.entry_point_names.contains(&probe.entry_point)
        {
            v.error(
                format!("{base}.entryPoint"),
                format!(
                    "entry point {:?} does not exist; known: {}",
                    probe.entry_point,
                    v.entry_point_names
                        .iter()
                        .cloned()
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            );
        }
    }
    if let Some(nonce) = &spec.retry_nonce
        && nonce.len() > 256
    {
        v.error("spec.retryNonce", "must be at most 256 characters");
    }

    Rollout {
        healthy_deadline: healthy_deadline.unwrap_or_default(),
        min_healthy_time: min_healthy_time.unwrap_or_default(),
        probes: r.probes.clone(),
        on_failure: r.on_failure,
    }
}

/// A gate duration longer than [`MAX_GATE_DURATION`] is refused here rather than by the journal
/// check later, where the rollout could no longer be resumed after a restart.
fn at_most_gate_limit(v: &mut Validator, path: &str, text: &str, d: Duration) -> Option<Duration> {
    if d > MAX_GATE_DURATION {
        v.error(
            path,
            format!(
                "{text:?} is longer than {}, the longest health gate the operator keeps; use at most \"{}\"",
                format_duration(MAX_GATE_DURATION),
                format_duration(MAX_GATE_DURATION)
            ),
        );
        return None;
    }
    Some(d)
}
