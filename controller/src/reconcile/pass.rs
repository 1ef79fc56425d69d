//! One pass at rest (plan, maybe start a rollout) or in flight (step the rollout on its gate),
//! and driving the machine through its effects.

use std::time::{Duration, SystemTime};

use tokio::time::Instant;
use tracing::{Instrument as _, info, warn};

use super::{
    Action, Error, Facts, MAX_BACKOFF, MIN_BACKOFF, Operator, PREFLIGHT_RECHECK, TERMINAL_RETRY,
    short,
};
use crate::consul::ConsulApi;
use crate::metrics::RolloutStage;
use crate::nomad::NomadApi;
use crate::plan::{self, Desired, HoldReason, Plan};
use crate::proxy::probe::ProxyProbe;
use crate::rollout::{self, Effect, JobRef, Observation, Phase};
use crate::status::Report;

impl<C, N, P> Operator<C, N, P>
where
    C: ConsulApi + 'static,
    N: NomadApi,
    P: ProxyProbe,
{
    pub(super) async fn at_rest(&mut self) -> Action {
        let loaded = match self.load().await {
            Ok(Some(loaded)) => loaded,
            Ok(None) => return Action::await_change(),
            Err(action) => return action,
        };
        let span = tracing::Span::current();
        span.record("generation", loaded.index);
        span.record("digest", short(loaded.spec.digest()));
        let kv_root = self.config.kv_root();
        let reach = self.config.reach();
        let desired = Desired {
            spec: &loaded.spec,
            rendered: &loaded.rendered,
            owner: &self.config.owner,
            kv_root: &kv_root,
            reach: &reach,
        };
        let base_id = plan::job_id(&desired).to_owned();
        let (observed, slots, running) = match self.observe_at_rest(&base_id, &kv_root).await {
            Ok(observed) => observed,
            Err(e) => {
                let facts = Facts::of(&loaded, None);
                return self.observation_failed(&e, Some(&facts)).await;
            }
        };
        self.backoff.reset();
        let job_id = slots.serving.job_id(&base_id);
        let job_version = observed.job.as_ref().map(|j| j.version);
        let decided = plan::plan_slots(&desired, &observed, &slots, &self.store.status);
        span.record("plan", decided.kind());
        let mut facts = Facts::of(&loaded, job_version);
        match decided {
            Plan::Noop => {
                // What runs carries a document that passed the gate: a rollback target.
                facts.good_job = observed.job.as_ref().map(|job| JobRef {
                    job_id: job_id.clone(),
                    version: job.version,
                    job_digest: job.spec_digest().map(str::to_owned),
                });
                let recheck = self.check_served_certificates(&loaded.spec).await;
                self.report(&facts.pass(Report::Converged)).await;
                recheck
            }
            Plan::Hold(reason) => {
                let text = reason.to_string();
                let report = match reason {
                    HoldReason::Paused => Report::Paused,
                    HoldReason::FailedDigest { .. } => Report::Held {
                        reason: &text,
                        drift: false,
                    },
                    HoldReason::Drift { .. } => Report::Held {
                        reason: &text,
                        drift: true,
                    },
                    HoldReason::JobTypeChange { .. } => {
                        warn!(reason = %text, "the document changes the job type; held");
                        Report::Blocked {
                            cause: "JobTypeChange",
                            reason: &text,
                        }
                    }
                };
                self.report(&facts.pass(report)).await;
                Action::await_change()
            }
            Plan::Stalled { reason } => {
                warn!(%reason, "the proxy job is not ours; it is left untouched");
                self.report(&facts.pass(Report::Stalled { reason: &reason }))
                    .await;
                Action::await_change()
            }
            Plan::Apply(mut change) => {
                if let Some(jc) = change.job.as_mut()
                    && jc.rollback_to.is_none()
                    && jc.handover.is_none()
                    && jc.job_id == job_id
                    && observed.job.is_some()
                {
                    // The status does not know a good version (lost, unreadable, rebuilt):
                    // Nomad's version history does. A rollout never starts blind to it.
                    match self.nomad.job_versions(&job_id, false).await {
                        Ok(versions) => {
                            jc.rollback_to = plan::stable_rollback_target(
                                &job_id,
                                &self.config.owner,
                                &versions.versions,
                            );
                        }
                        Err(source) => {
                            let e = Error::Nomad {
                                what: format!("the versions of the proxy job {job_id}"),
                                source,
                            };
                            return self.observation_failed(&e, Some(&facts)).await;
                        }
                    }
                }
                if let Some(jc) = &change.job {
                    // Before the running proxy is touched: what would certainly fail the new
                    // version fails the document instead, and nothing changes.
                    let now = crate::metrics::unix_now();
                    let mut errors = crate::proxy::preflight::check(
                        &loaded.spec,
                        &jc.job,
                        &running,
                        &reach.host,
                        now,
                    );
                    let volumes =
                        crate::proxy::preflight::host_volumes(&self.nomad, &jc.job, &running);
                    match volumes.await {
                        Ok(missing) => errors.extend(missing),
                        Err(source) => {
                            let what = "the client nodes (their host volumes)".to_owned();
                            let e = Error::Nomad { what, source };
                            return self.observation_failed(&e, Some(&facts)).await;
                        }
                    }
                    if !errors.is_empty() {
                        warn!(errors = errors.len(), first = %errors[0], "preflight failed; the running proxy is left as it is");
                        self.report(&facts.pass(Report::Invalid { errors: &errors }))
                            .await;
                        // The node, not the document, is wrong (a port taken, a certificate or
                        // host volume missing): look again soon, so fixing it needs no edit.
                        return Action::requeue(PREFLIGHT_RECHECK);
                    }
                }
                info!(kind = change.kind(), digest = %short(&change.digest), "rolling out");
                let obs = Observation {
                    planned: Some(*change),
                    ..Observation::default()
                };
                self.drive(obs, &facts).await
            }
        }
    }

    pub(super) async fn in_flight(&mut self) -> Action {
        let Some(change) = self.phase.change().cloned() else {
            return Action::await_change();
        };
        let span = tracing::Span::current();
        span.record("digest", short(&change.digest));
        span.record("plan", change.kind());
        let mut obs = self.observe_gate(&change).await;
        let blind = obs.error.is_some();
        if !blind {
            self.backoff.reset();
        }
        obs.applied = self.applied.take();
        let facts = Facts::unchanged(&self.store.status);
        let action = self.drive(obs, &facts).await;
        if blind && !self.phase.is_at_rest() {
            // Nomad does not answer: look again, but not four times a second.
            let retry = self.backoff.next().unwrap_or(MAX_BACKOFF);
            return Action::requeue(action.requeue_after.map_or(retry, |d| d.max(retry)));
        }
        action
    }

    /// Steps the machine, carries out its effects, and reports.
    pub(super) async fn drive(&mut self, obs: Observation, facts: &Facts) -> Action {
        let before = self.phase.clone();
        let (mut effects, mut phase) = rollout::step(&self.phase, &obs, Instant::now());
        if before.is_at_rest()
            && let Some(journal) = phase.journal(Instant::now(), SystemTime::now())
            && let Err(e) = journal.fits()
        {
            // Consul would refuse the write-ahead journal (a 413 every pass): nothing starts,
            // and the status says what to change.
            warn!(error = %e, "the rollout is not started: its journal does not fit in Consul");
            let text = e.to_string();
            let report = Report::Blocked {
                cause: "JournalTooLarge",
                reason: &text,
            };
            self.report(&facts.pass(report)).await;
            return Action::await_change();
        }
        if before.is_at_rest() && !phase.is_at_rest() {
            // Write-ahead: a rollout starts only once its journal is in Consul, so a restart
            // resumes it rather than mistaking its unverified version for a good one. A status
            // that cannot be written (a 403 on the status key) therefore starts nothing.
            let status = self.store.status.clone();
            self.phase = phase.clone();
            self.report(&facts.pass(Report::Rollout(&phase))).await;
            if let Some(e) = self.store.write_error.take() {
                warn!(error = %e, "the rollout is not started: its status cannot be written");
                self.phase = before;
                self.store.status = status;
                let terminal = !e.is_retryable();
                let text = format!("{e}; no rollout starts until the status can be written");
                let report = Report::ObservationFailed {
                    error: &text,
                    retry_in: if terminal {
                        TERMINAL_RETRY
                    } else {
                        MIN_BACKOFF
                    },
                    terminal,
                };
                // Most likely not written either; kept in memory for /api/status and logs.
                self.report(&facts.pass(report)).await;
                if self.store.write_error.is_none() {
                    self.store.write_error = Some(e);
                }
                return Action::await_change();
            }
        }
        let mut requeue = None;
        let mut failed = false;
        // Applying and RollingBack consume the outcome of their own effects: step them again at
        // once rather than a poll later, so a rollout or rollback finishes within one pass.
        for _ in 0..4 {
            requeue = effects.iter().find_map(|e| match e {
                Effect::RequeueAfter(d) => Some(*d),
                _ => None,
            });
            let writes: Vec<Effect> = effects.iter().filter(|e| e.is_write()).cloned().collect();
            // Only a rollout in flight has writes; its gate names the proxy they go to.
            let Some(proxy) = phase.change().map(|c| c.gate.proxy) else {
                break;
            };
            if writes.is_empty() {
                break;
            }
            if self.journal_changed(&phase) {
                // Best effort: a rollback goes ahead even when its journal cannot be written.
                self.phase = phase.clone();
                self.report(&facts.pass(Report::Rollout(&phase))).await;
            }
            // The effects get a span of their own under the rollout's root: `apply` when they
            // carry the change forward, `rollback` when they revert it.
            let reverts = matches!(phase, Phase::RollingBack { .. });
            let stage = if reverts {
                RolloutStage::Rollback
            } else {
                RolloutStage::Apply
            };
            let digest = phase.change().map(|c| c.digest.clone()).unwrap_or_default();
            let span = self
                .observer
                .effects_starting(stage, &digest, Instant::now());
            let outcome = self.execute(&writes, proxy).instrument(span).await;
            let consumes = matches!(phase, Phase::Applying { .. } | Phase::RollingBack { .. });
            if !consumes {
                break;
            }
            if outcome.error.is_some() {
                failed = true;
                self.applied = Some(outcome);
                break;
            }
            let next_obs = Observation {
                applied: Some(outcome),
                ..Observation::default()
            };
            (effects, phase) = rollout::step(&phase, &next_obs, Instant::now());
        }
        let changed = phase != before;
        self.phase = phase;
        let phase = self.phase.clone();
        if let (false, Phase::Ready { job: Some(job), .. }) = (before.is_at_rest(), &phase) {
            self.mark_stable(job).await;
        }
        if changed || !phase.is_at_rest() {
            self.report(&facts.pass(Report::Rollout(&phase))).await;
        }
        if failed {
            return self.backoff_action();
        }
        if !before.is_at_rest() && phase.is_at_rest() {
            // The rollout ended: look at the document again at once, since an edit made while
            // it ran has not been planned yet.
            return Action::requeue(Duration::ZERO);
        }
        match requeue {
            Some(d) => Action::requeue(d),
            None if !self.phase.is_at_rest() => Action::requeue(rollout::VERIFY_POLL_INTERVAL),
            None => Action::await_change(),
        }
    }
}
