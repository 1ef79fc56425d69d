//! `Job.Plan`: what the scheduler would do with a job, without doing it (the desired updates per
//! group, the placements that would fail and, on request, the diff against the current job).

use super::*;
use crate::nomad::diff;

impl Store {
    /// The plan of `job` (decoded and canonicalized): the body of `/v1/job/:id/plan`.
    pub fn plan(&self, job: &Value, want_diff: bool) -> Value {
        let ns = View::job(job).str("Namespace").to_string();
        let id = View::job(job).str("ID");
        let (current, live, mut held) = {
            let cur = self.job(&ns, id).cloned();
            let live: Vec<(String, u64)> = self
                .allocs
                .values()
                .filter(|a| {
                    a.namespace == ns && a.job_id == *id && a.desired_run() && !a.client_terminal()
                })
                .map(|a| (a.task_group.clone(), a.job_version))
                .collect();
            // Static ports other jobs' running allocations hold on the one node.
            let held: Vec<u64> = self
                .allocs
                .values()
                .filter(|a| {
                    !(a.namespace == ns && a.job_id == id)
                        && a.desired_run()
                        && !a.client_terminal()
                })
                .flat_map(|a| static_ports(&a.group()))
                .map(|(_, p)| p)
                .collect();
            (cur, live, held)
        };
        let changed = current
            .as_ref()
            .is_none_or(|c| jobspec::spec_changed(c, job));
        let job_type = View::job(job).str("Type");
        let mut desired = serde_json::Map::new();
        let mut failed = serde_json::Map::new();
        for g in View::job(job).list("TaskGroups") {
            let name = g.str("Name");
            let count = if matches!(job_type, "system" | "sysbatch") {
                1
            } else {
                g.uint("Count")
            };
            let existing = live.iter().filter(|(tg, _)| tg == name).count() as u64;
            let place = count.saturating_sub(existing);
            let stop = existing.saturating_sub(count);
            let (destructive, ignore) = if changed && existing > 0 {
                (existing.min(count), 0)
            } else {
                (0, existing.min(count))
            };
            desired.insert(
            name.into(),
            json!({
                "Ignore": ignore, "Place": place, "Migrate": 0, "Stop": stop, "InPlaceUpdate": 0,
                "DestructiveUpdate": destructive, "Canary": 0, "Preemptions": 0, "Disconnect": 0,
                "Reconnect": 0, "RescheduleNow": 0, "RescheduleLater": 0,
            }),
        );
            let missing: Vec<&str> = g
                .list("Tasks")
                .iter()
                .map(|t| t.str("Driver"))
                .filter(|d| !matches!(*d, "raw_exec" | "exec"))
                .collect();
            // Every allocation this plan would run needs the group's static ports: all of them
            // after a destructive update, otherwise the kept ones plus the new placements.
            let ports = static_ports(g.value());
            let mut collisions = 0u64;
            let mut collision = String::new();
            for _ in 0..(destructive + ignore + place) {
                match ports.iter().find(|(_, p)| held.contains(p)) {
                    Some((label, port)) => {
                        collisions += 1;
                        collision = format!("network: reserved port collision {label}={port}");
                    }
                    None => held.extend(ports.iter().map(|(_, p)| *p)),
                }
            }
            if missing.is_empty() && collisions > 0 {
                failed.insert(
                name.into(),
                json!({
                    "NodesEvaluated": 1, "NodesFiltered": 0, "NodesInPool": 1, "NodesAvailable": {"dc1": 1},
                    "ClassFiltered": null, "ConstraintFiltered": null, "NodesExhausted": 1,
                    "ClassExhausted": null, "DimensionExhausted": {collision: 1}, "QuotaExhausted": null,
                    "ResourcesExhausted": null, "Scores": null, "ScoreMetaData": null,
                    "AllocationTime": 0, "CoalescedFailures": collisions - 1,
                }),
            );
            }
            if !missing.is_empty() {
                failed.insert(
                name.into(),
                json!({
                    "NodesEvaluated": 1, "NodesFiltered": 1, "NodesInPool": 1, "NodesAvailable": {"dc1": 1},
                    "ClassFiltered": null, "ConstraintFiltered": {"missing drivers": 1}, "NodesExhausted": 0,
                    "ClassExhausted": null, "DimensionExhausted": null, "QuotaExhausted": null,
                    "ResourcesExhausted": null, "Scores": null, "ScoreMetaData": null,
                    "AllocationTime": 0, "CoalescedFailures": count.saturating_sub(1),
                }),
            );
            }
        }
        json!({
            "Annotations": {"DesiredTGUpdates": desired, "PreemptedAllocs": null},
            "FailedTGAllocs": if failed.is_empty() { Value::Null } else { Value::Object(failed) },
            "JobModifyIndex": current.as_ref().map(|c| View::job(c).uint("JobModifyIndex")).unwrap_or(0),
            "CreatedEvals": null,
            "Diff": if want_diff { diff::job_diff(current.as_ref(), Some(job), true) } else { Value::Null },
            "NextPeriodicLaunch": crate::nomad::util::ZERO_TIME,
            "Warnings": "",
            "Index": self.index,
        })
    }
}
