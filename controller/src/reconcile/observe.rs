//! Observing: what runs at rest (the job and the policy tree, for the plan) and every gate
//! signal of a rollout in flight (job, deployment, allocations, the proxy's health, probes).

use super::{Error, Operator, Result, read_key};
use crate::consul::ConsulApi;
use crate::nomad::{self, NomadApi};
use crate::plan::{Observed, ObservedJob, Slots};
use crate::proxy::probe::ProxyProbe;
use crate::render::META_SPEC_DIGEST;
use crate::render::nomad_job::Slot;
use crate::rollout::{
    AllocObservation, Change, DeploymentObservation, DeploymentState, JobObservation, Observation,
};
use crate::transport::QueryOptions;

impl<C, N, P> Operator<C, N, P>
where
    C: ConsulApi + 'static,
    N: NomadApi,
    P: ProxyProbe,
{
    /// What runs at rest in either handover slot of `job_id`, and every running slot's job of
    /// ours as Nomad returned it (for preflight).
    pub(super) async fn observe_at_rest(
        &self,
        job_id: &str,
        kv_root: &str,
    ) -> Result<(Observed, Slots, Vec<serde_json::Value>)> {
        let read = |id: String| async move {
            self.nomad
                .job_read(&id, QueryOptions::NOW)
                .await
                .map(|(job, _)| job)
                .map_err(|source| Error::Nomad {
                    what: format!("the proxy job {id}"),
                    source,
                })
        };
        let tree = async {
            self.consul
                .kv_list(kv_root, QueryOptions::NOW)
                .await
                .map_err(|source| Error::Consul {
                    what: format!("the policy tree {kv_root}"),
                    source,
                })
        };
        // Three independent reads on the path of every edit: at once, not one after another.
        let (a, b, (pairs, _)) = futures::try_join!(
            read(Slot::A.job_id(job_id)),
            read(Slot::B.job_id(job_id)),
            tree
        )?;
        let kv = pairs
            .into_iter()
            .filter(|p| p.key.starts_with(kv_root))
            .map(|p| (p.key, String::from_utf8_lossy(&p.value).into_owned()))
            .collect();
        let (job, slots) = Slots::pick(
            a.as_ref().map(ObservedJob::from),
            b.as_ref().map(ObservedJob::from),
            &self.config.owner,
        );
        // Every slot that runs holds its ports: the serving one, and the newer one of a handover
        // cut short (which the plan registers over, so its own API port is not in the way).
        let other_ours = slots
            .other
            .as_ref()
            .is_some_and(|j| j.owned_by(&self.config.owner));
        let running = [(Slot::A, a), (Slot::B, b)]
            .into_iter()
            .filter(|(slot, _)| *slot == slots.serving || other_ours)
            .filter_map(|(_, j)| j.filter(|j| !j.stop).map(|j| j.raw))
            .collect();
        Ok((Observed { job, kv }, slots, running))
    }

    /// Reads every gate signal of `change`. Nomad failing is an observation error (decide
    /// nothing); the proxy failing to answer is a gate signal (it is unhealthy).
    pub(super) async fn observe_gate(&self, change: &Change) -> Observation {
        let job_id = change.job_id.as_str();
        let mut obs = Observation::default();
        // Traefik reads our policy from Consul: while Consul does not answer, the gate cannot be
        // judged fairly, so the machine is blind (the deadline stops counting). Only whether
        // Consul answers matters here, not what the document says now.
        if let Err(e) = read_key(&*self.consul, &self.config.config_key(), "the config key").await {
            obs.error = Some(e.to_string());
            return obs;
        }
        let nomad = async {
            let what = |w: &str| format!("{w} of the proxy job {job_id}");
            let (job, _) = self
                .nomad
                .job_read(job_id, QueryOptions::NOW)
                .await
                .map_err(|source| Error::Nomad {
                    what: what("the job"),
                    source,
                })?;
            let (deployment, _) = self
                .nomad
                .job_latest_deployment(job_id, QueryOptions::NOW)
                .await
                .map_err(|source| Error::Nomad {
                    what: what("the latest deployment"),
                    source,
                })?;
            let (allocs, _) = self
                .nomad
                .job_allocations(job_id, QueryOptions::NOW)
                .await
                .map_err(|source| Error::Nomad {
                    what: what("the allocations"),
                    source,
                })?;
            // A handover drains the slot it took over from: its allocations say when.
            let draining = match change.job.as_ref().and_then(|j| j.handover.as_ref()) {
                Some(h) => {
                    self.nomad
                        .job_allocations(&h.from_job, QueryOptions::NOW)
                        .await
                        .map_err(|source| Error::Nomad {
                            what: format!("the allocations of the old slot {}", h.from_job),
                            source,
                        })?
                        .0
                }
                None => Vec::new(),
            };
            Ok::<_, Error>((job, deployment, allocs, draining))
        };
        match nomad.await {
            Err(e) => {
                obs.error = Some(e.to_string());
                return obs;
            }
            Ok((job, deployment, allocs, draining)) => {
                obs.draining = draining.into_iter().map(alloc_observation).collect();
                obs.job = job.map(|j| JobObservation {
                    version: j.version,
                    modify_index: j.job_modify_index,
                    spec_digest: j.meta.get(META_SPEC_DIGEST).cloned(),
                    stopped: j.stop,
                });
                obs.deployment = deployment.map(|d| DeploymentObservation {
                    state: DeploymentState::from_nomad(&d.status),
                    id: d.id,
                    job_version: d.job_version,
                    description: d.status_description,
                });
                obs.allocations = allocs.into_iter().map(alloc_observation).collect();
            }
        }
        // Addresses from our own configuration, never from the journal the change may come from.
        let mut reach = self.config.reach();
        let slot_b = change
            .job
            .as_ref()
            .and_then(|j| j.handover.as_ref())
            .is_some_and(|h| Slot::of(&change.job_id, &h.from_job) == Some(Slot::B));
        if slot_b {
            // An explicit `--proxy-api` names slot a's API: slot b's is the next port.
            reach.api = reach
                .api
                .map(|api| crate::proxy::port_shifted(&api, Slot::B.port_offset()));
        }
        let gate = crate::proxy::reached(&change.gate, &reach);
        obs.proxy = Some(self.proxies.driver(gate.proxy).observe(&gate).await);
        obs
    }
}

fn alloc_observation(a: nomad::AllocationStub) -> AllocObservation {
    let tasks_running =
        !a.task_states.is_empty() && a.task_states.values().all(|t| t.state == "running");
    // A failed task first: its events say why the allocation failed.
    let task_detail = a
        .task_states
        .iter()
        .filter(|(_, t)| t.state != "running")
        .max_by_key(|(_, t)| t.failed)
        .map(|(name, t)| task_summary(name, t));
    // The first task that exited since the allocation started: a restart or a `Terminated`
    // event (Nomad's restart policy may already have it running again), or a dead task.
    let exited = a
        .task_states
        .iter()
        .find(|(_, t)| {
            t.restarts > 0
                || t.state == "dead"
                || t.events.iter().any(|e| e.event_type == "Terminated")
        })
        .map(|(name, t)| task_summary(name, t));
    AllocObservation {
        create_index: a.create_index,
        exited,
        id: a.id,
        job_version: a.job_version,
        desired_status: a.desired_status,
        client_status: a.client_status,
        tasks_running,
        task_detail,
    }
}

/// `task traefik dead (failed, 2 restarts): Not Restarting: Exceeded allowed attempts ...;
/// Terminated: Exit Code: 1`: the last event, and the last event that says what went wrong
/// (a driver failure, an exit) when the last one only says what Nomad did about it.
fn task_summary(name: &str, t: &nomad::TaskState) -> String {
    let text = |e: &nomad::TaskEvent| {
        let message = if e.display_message.is_empty() {
            e.message.as_str()
        } else {
            e.display_message.as_str()
        };
        if message.is_empty() {
            e.event_type.clone()
        } else {
            format!("{}: {message}", e.event_type)
        }
    };
    let mut out = format!("task {name} {}", t.state);
    if t.failed {
        out.push_str(&format!(" (failed, {} restarts)", t.restarts));
    }
    let Some(last) = t.events.last() else {
        return out;
    };
    out.push_str(": ");
    out.push_str(&text(last));
    let is_cause = |e: &nomad::TaskEvent| {
        matches!(
            e.event_type.as_str(),
            "Driver Failure" | "Terminated" | "Failed Validation" | "Setup Failure" | "Killed"
        )
    };
    if !is_cause(last)
        && let Some(cause) = t.events.iter().rev().find(|e| is_cause(e))
    {
        out.push_str("; ");
        out.push_str(&text(cause));
    }
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::panic)] // tests fail loudly
mod tests {
    use super::*;

    fn stub(restarts: u64, state: &str, events: &[(&str, &str)]) -> nomad::AllocationStub {
        let task = nomad::TaskState {
            state: state.into(),
            restarts,
            events: events
                .iter()
                .map(|(kind, message)| nomad::TaskEvent {
                    event_type: (*kind).into(),
                    display_message: (*message).into(),
                    ..nomad::TaskEvent::default()
                })
                .collect(),
            ..nomad::TaskState::default()
        };
        nomad::AllocationStub {
            id: "a1".into(),
            job_version: 4,
            desired_status: "run".into(),
            client_status: "running".into(),
            create_index: 61,
            task_states: [("traefik".to_owned(), task)].into(),
            ..nomad::AllocationStub::default()
        }
    }

    #[test]
    fn a_task_nomad_already_restarted_counts_as_exited_with_the_event_that_says_why() {
        let a = alloc_observation(stub(
            1,
            "running",
            &[
                ("Started", "Task started by client"),
                ("Terminated", "Exit Code: 1"),
                ("Restarting", "Task restarting in 15s"),
                ("Started", "Task started by client"),
            ],
        ));
        assert!(a.tasks_running, "Nomad has it running again");
        let exited = a.exited.unwrap();
        assert!(exited.contains("Terminated: Exit Code: 1"), "{exited}");
        assert_eq!(a.create_index, 61);
    }

    #[test]
    fn a_task_that_exited_but_is_not_restarted_yet_counts_as_exited() {
        let a = alloc_observation(stub(0, "pending", &[("Terminated", "Exit Code: 2")]));
        assert!(a.exited.unwrap().contains("Exit Code: 2"));
    }

    #[test]
    fn a_task_running_since_its_start_has_not_exited() {
        let a = alloc_observation(stub(0, "running", &[("Started", "Task started by client")]));
        assert_eq!(a.exited, None);
    }
}
