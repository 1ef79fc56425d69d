//! The health gate: what a rollout must pass, and how one observation reads against it.

use std::collections::BTreeSet;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{AllocObservation, Change, DeploymentState, Observation, OnFailure};
use crate::proxy::probe::RouteProbe;
use crate::proxy::traefik::{EntryKind, EntryStatus, RawEntry};
use crate::spec::ProxyKind;
use crate::status::short;

fn traefik() -> ProxyKind {
    ProxyKind::Traefik
}

/// The health gate one rollout must pass. It carries everything the loop needs to observe the
/// gate signals, so a rollout keeps being judged on its own terms when the document changes,
/// disappears or stops validating mid-rollout.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Gate {
    /// The proxy the rollout runs: whose driver reads its health. Journals written before this
    /// field gated Traefik only.
    #[serde(default = "traefik")]
    pub proxy: ProxyKind,
    /// Everything must be healthy (and held for `min_healthy_time`) before this much time passes.
    pub healthy_deadline: Duration,
    /// How long every signal must stay healthy before the rollout counts as good.
    pub min_healthy_time: Duration,
    /// What to do on failure.
    pub on_failure: OnFailure,
    /// Whether the proxy's own health endpoint (Traefik `/ping`) must answer.
    pub check_ping: bool,
    /// Names (`<name>@<provider>`) of the routers and middlewares this change puts in the proxy;
    /// each must show up enabled in `/api/rawdata`.
    pub expected_entries: Vec<String>,
    /// Base URL of the proxy's API (`/ping`, `/api/rawdata`), when the gate reads it.
    #[serde(default)]
    pub proxy_api: Option<String>,
    /// User route probes sent through the proxy's entry points.
    #[serde(default)]
    pub probes: Vec<RouteProbe>,
}

/// The gate's reading of one observation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Verdict {
    Healthy,
    Pending(String),
    Failed(String),
}

/// The job version carrying the digest we registered, if Nomad shows it.
pub(super) fn our_job_version(change: &Change, obs: &Observation) -> Option<u64> {
    let job = obs.job.as_ref()?;
    match &change.job {
        Some(jc) => {
            (job.spec_digest.as_deref() == Some(jc.job_digest.as_str())).then_some(job.version)
        }
        // A policy-only change runs on whatever version is there.
        None => Some(job.version),
    }
}

pub(super) fn evaluate(change: &Change, obs: &Observation, job_version: Option<u64>) -> Verdict {
    match evaluate_job(change, obs, job_version) {
        Verdict::Healthy => evaluate_proxy(&change.gate, obs),
        other => other,
    }
}

/// `complete`, `failed` or `lost`: the client is done with it. Nomad leaves such allocations
/// with `DesiredStatus: run` until they are garbage-collected (its schedulers filter terminal
/// allocations before diffing), so they linger for hours after a rollout.
pub(super) fn client_terminal(a: &AllocObservation) -> bool {
    matches!(a.client_status.as_str(), "complete" | "failed" | "lost")
}

pub(super) fn evaluate_job(
    change: &Change,
    obs: &Observation,
    job_version: Option<u64>,
) -> Verdict {
    let Some(job) = &obs.job else {
        return Verdict::Failed("the proxy job no longer exists".to_owned());
    };
    if job.stopped {
        return Verdict::Failed("the proxy job was stopped".to_owned());
    }
    let Some(version) = job_version else {
        return Verdict::Pending("the registered job version is not visible yet".to_owned());
    };
    if change.job.is_some() && job.version != version {
        return Verdict::Failed(format!(
            "the job changed underneath the rollout (now version {}, expected {version})",
            job.version
        ));
    }
    let wanted: Vec<&AllocObservation> = obs
        .allocations
        .iter()
        .filter(|a| a.desired_status == "run")
        .collect();
    // A crashed allocation of the new version (its tasks dead, restarts exhausted) fails the
    // gate at once, deployment or not: Nomad's deployment would only give up at its
    // healthyDeadline, and the reason names the task events so the status says why. Only a
    // job change creates allocations of `version` after this rollout began; for a policy or
    // verify-only change, an allocation of the running version that failed long ago says
    // nothing about this change.
    if change.job.is_some()
        && let Some(a) = wanted.iter().find(|a| {
            a.job_version == version && matches!(a.client_status.as_str(), "failed" | "lost")
        })
    {
        let detail = a.task_detail.as_deref().unwrap_or("no task event");
        let deployment = obs
            .deployment
            .as_ref()
            .filter(|d| d.job_version == version && d.state == DeploymentState::Failed)
            .map(|d| format!("deployment failed: {}; ", d.description))
            .unwrap_or_default();
        return Verdict::Failed(format!(
            "{deployment}allocation {} of job version {version} {}: {detail}",
            short(&a.id),
            a.client_status
        ));
    }
    // Fail fast: the first exit or restart of a task of the new version fails the gate with
    // the task event as the reason, rather than waiting for Nomad's restart attempts (each a
    // `delay` apart, 21 s by default with the proxy's entry points down all the while). Only
    // allocations created for this version count: one updated in place carries the restarts of
    // the versions before. Outside a rollout nobody judges, and Nomad's restart policy applies.
    if change.job.is_some()
        && let Some((a, exited)) = wanted.iter().find_map(|a| {
            let fresh = a.job_version == version && a.create_index >= job.modify_index;
            fresh
                .then_some(a.exited.as_deref())
                .flatten()
                .map(|e| (a, e))
        })
    {
        return Verdict::Failed(format!(
            "allocation {} of job version {version}: {exited} (fails the rollout at the first exit, not after Nomad's restart attempts)",
            short(&a.id)
        ));
    }
    // Deployment health where the job has deployments for this version (only a job change
    // creates one; a policy change is judged on the running allocations).
    if change.job.is_some()
        && let Some(dep) = obs.deployment.as_ref().filter(|d| d.job_version == version)
    {
        return match dep.state {
            DeploymentState::Successful => Verdict::Healthy,
            DeploymentState::Failed => {
                Verdict::Failed(format!("deployment failed: {}", dep.description))
            }
            DeploymentState::Cancelled => {
                Verdict::Failed(format!("deployment cancelled: {}", dep.description))
            }
            DeploymentState::Running | DeploymentState::Paused => Verdict::Pending(format!(
                "deployment {}: {}",
                short(&dep.id),
                dep.description
            )),
        };
    }
    // No deployment (system jobs before Nomad 1.11): allocations running with running tasks; the
    // minHealthyTime hold happens in the caller.
    let live: Vec<&AllocObservation> = wanted.into_iter().filter(|a| !client_terminal(a)).collect();
    if live.is_empty() {
        return Verdict::Pending(format!(
            "no allocation of job version {version} running yet"
        ));
    }
    if let Some(a) = live.iter().find(|a| a.job_version != version) {
        return Verdict::Pending(format!(
            "allocation {} still runs job version {}",
            short(&a.id),
            a.job_version
        ));
    }
    if let Some(a) = live
        .iter()
        .find(|a| a.client_status != "running" || !a.tasks_running)
    {
        let detail = a.task_detail.as_deref().unwrap_or("tasks not running");
        return Verdict::Pending(format!(
            "allocation {} {}: {detail}",
            short(&a.id),
            a.client_status
        ));
    }
    Verdict::Healthy
}

/// Whether Nomad already held this version healthy for `min_healthy_time`: a successful
/// deployment of it. The job's update stanza carries the gate's `minHealthyTime`
/// ([`crate::render::nomad_job`]), so holding again in the operator only delays Ready by that
/// much (about a second of every structural change at the defaults).
pub(super) fn held_by_deployment(change: &Change, obs: &Observation, job_version: u64) -> bool {
    change.job.is_some()
        && obs
            .deployment
            .as_ref()
            .is_some_and(|d| d.job_version == job_version && d.state == DeploymentState::Successful)
}

pub(super) fn evaluate_proxy(gate: &Gate, obs: &Observation) -> Verdict {
    let needs_proxy = gate.check_ping || !gate.expected_entries.is_empty();
    let Some(proxy) = &obs.proxy else {
        return if needs_proxy {
            Verdict::Pending("the proxy was not probed".to_owned())
        } else {
            Verdict::Healthy
        };
    };
    if gate.check_ping && !proxy.ping_ok {
        return Verdict::Pending("the proxy's /ping does not answer 200".to_owned());
    }
    if !gate.expected_entries.is_empty() {
        let Some(entries) = &proxy.rawdata else {
            return Verdict::Pending("/api/rawdata could not be read".to_owned());
        };
        let expected: BTreeSet<&str> = gate.expected_entries.iter().map(String::as_str).collect();
        let missing: Vec<&str> = expected
            .iter()
            .copied()
            .filter(|name| !entries.iter().any(|e| e.name == *name))
            .collect();
        let ours_disabled: Vec<&RawEntry> = entries
            .iter()
            .filter(|e| e.status == EntryStatus::Disabled)
            .filter(|e| {
                expected.contains(e.name.as_str())
                    || (e.kind == EntryKind::Router
                        && e.middlewares.iter().any(|m| expected.contains(m.as_str())))
            })
            .collect();
        if let Some(bad) = ours_disabled.first() {
            let reason = format!(
                "{} {} is disabled in /api/rawdata: {}",
                bad.kind.as_str(),
                bad.name,
                bad.errors.join("; ")
            );
            // Only once everything we wrote is loaded is a disabled entry the new config's fault
            // rather than a stale reading from before the reload.
            return if missing.is_empty() {
                Verdict::Failed(reason)
            } else {
                Verdict::Pending(reason)
            };
        }
        if !missing.is_empty() {
            return Verdict::Pending(format!(
                "not loaded by the proxy yet: {}",
                missing.join(", ")
            ));
        }
    }
    if let Some(p) = proxy.probes.iter().find(|p| !p.ok) {
        return Verdict::Pending(format!("route probe {} failed: {}", p.name, p.detail));
    }
    Verdict::Healthy
}
