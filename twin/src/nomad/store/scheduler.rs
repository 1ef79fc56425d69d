//! The scheduler: evaluations, placement of allocations, and client-side allocation updates.

use super::placement::Want;
use super::*;

impl Store {
    pub(super) fn create_eval(
        &mut self,
        ns: &str,
        id: &str,
        trigger: &str,
        job_modify_index: u64,
        priority: u64,
        at_index: Option<u64>,
    ) -> (String, u64) {
        // An evaluation submitted with the job write shares its raft index.
        let index = at_index.unwrap_or_else(|| self.next_index());
        let eval_id = uuid::Uuid::new_v4().to_string();
        let job = self.job(ns, id).cloned().unwrap_or(Value::Null);
        let priority = if priority > 0 {
            priority
        } else {
            View::job(&job).uint("Priority").max(50)
        };
        let now = self.clock.now();
        let queued: serde_json::Map<String, Value> = View::job(&job)
            .list("TaskGroups")
            .iter()
            .map(|g| (g.str("Name").to_string(), json!(0)))
            .collect();
        let eval = json!({
            "ID": eval_id,
            "Namespace": ns,
            "Priority": priority,
            "Type": if View::job(&job).str("Type").is_empty() { "service" } else { View::job(&job).str("Type") },
            "TriggeredBy": trigger,
            "JobID": id,
            "JobModifyIndex": job_modify_index,
            "NodeID": "",
            "NodeModifyIndex": 0,
            "DeploymentID": "",
            "Status": "complete",
            "StatusDescription": "",
            "Wait": 0,
            "WaitUntil": null,
            "NextEval": "",
            "PreviousEval": "",
            "BlockedEval": "",
            "RelatedEvals": null,
            "FailedTGAllocs": null,
            "ClassEligibility": null,
            "EscapedComputedClass": false,
            "AnnotatePlan": false,
            "QueuedAllocations": queued,
            "SnapshotIndex": index,
            "CreateIndex": index,
            "ModifyIndex": index,
            "CreateTime": now,
            "ModifyTime": now,
        });
        self.evals.insert(eval_id.clone(), eval.clone());
        self.tables.evals = index;
        self.emit(
            "Evaluation",
            "EvaluationUpdated",
            &eval_id,
            ns,
            vec![id.to_string()],
            json!({"Evaluation": eval}),
        );
        (eval_id, index)
    }

    /// Brings the job's allocations in line with its current version (the scheduler's reconcile).
    /// Any spec change replaces the allocations (a destructive update); an unchanged spec keeps them.
    /// System jobs want one allocation per feasible node (SRC scheduler/scheduler_system.go);
    /// other jobs want `Count` allocations spread over the feasible nodes. Allocations on a
    /// draining node are migrated (service, batch) or stopped (system, unless the drain ignores
    /// system jobs); an ineligible node keeps what it runs but gets nothing new.
    pub(super) fn reconcile(
        &mut self,
        ns: &str,
        id: &str,
        eval_id: &str,
        spec_changed: bool,
    ) -> Plan {
        let mut plan = Plan::default();
        let Some(job) = self.job(ns, id).cloned() else {
            return plan;
        };
        if View::job(&job).bool("Stop") {
            plan.extend(self.stop_job_allocs(ns, id, "alloc not needed due to job update"));
            self.cancel_active_deployments(ns, id, "Cancelled because job is stopped");
            return plan;
        }
        let version = View::job(&job).uint("Version");
        let system = matches!(View::job(&job).str("Type"), "system" | "sysbatch");
        let feasible = self.feasible_nodes();
        let live: Vec<Alloc> = self
            .allocs
            .values()
            .filter(|a| {
                a.namespace == ns && a.job_id == id && a.desired_run() && !a.client_terminal()
            })
            .cloned()
            .collect();
        let mut wants: Vec<Want> = Vec::new();
        let mut stops: Vec<(String, &'static str)> = Vec::new();
        let mut migrating: Vec<String> = Vec::new();
        for group in View::job(&job).list("TaskGroups") {
            let name = group.str("Name").to_string();
            let (current, old): (Vec<&Alloc>, Vec<&Alloc>) = live
                .iter()
                .filter(|a| a.task_group == name)
                .partition(|a| a.job_version == version || !spec_changed);
            for a in &old {
                stops.push((a.id.clone(), "alloc not needed due to job update"));
            }
            let mut kept: Vec<&Alloc> = Vec::new();
            for a in current {
                if a.migrate && !self.drained_off(&a.node_id, system) {
                    stops.push((a.id.clone(), "alloc is being migrated"));
                } else if self.drained_off(&a.node_id, system) {
                    let why = if system {
                        "alloc not needed as node is tainted"
                    } else {
                        // The drainer marks the allocation for migration (DesiredTransition).
                        migrating.push(a.id.clone());
                        "alloc is being migrated"
                    };
                    stops.push((a.id.clone(), why));
                } else {
                    kept.push(a);
                }
            }
            if system {
                let mut covered: Vec<&str> = Vec::new();
                for a in kept {
                    if covered.contains(&a.node_id.as_str()) {
                        stops.push((a.id.clone(), "alloc not needed due to job update"));
                    } else {
                        covered.push(&a.node_id);
                    }
                }
                for node in feasible.iter().filter(|n| !covered.contains(&n.as_str())) {
                    wants.push(Want {
                        group: name.clone(),
                        index: 0,
                        node: Some(node.clone()),
                    });
                }
                continue;
            }
            let count = group.uint("Count");
            let keep = kept.len().min(count as usize);
            for a in &kept[keep..] {
                stops.push((a.id.clone(), "alloc not needed due to job update"));
            }
            let used: Vec<u64> = kept[..keep]
                .iter()
                .filter_map(|a| alloc_index(&a.name))
                .collect();
            let mut next = 0u64;
            for _ in keep as u64..count {
                while used.contains(&next) {
                    next += 1;
                }
                wants.push(Want {
                    group: name.clone(),
                    index: next,
                    node: None,
                });
                next += 1;
            }
        }
        for alloc_id in &migrating {
            if let Some(a) = self.allocs.get_mut(alloc_id) {
                a.migrate = true;
            }
        }
        for (alloc_id, why) in &stops {
            self.set_desired_stop(alloc_id, why);
            plan.stop.push(alloc_id.clone());
        }
        // New allocations start once the ones they replace have stopped (their ports are free).
        let waits: Vec<String> = plan.stop.clone();
        let joins_active = !spec_changed
            && self
                .active_deployment(ns, id)
                .is_some_and(|d| d.job_version == version);
        let deployment_id = if spec_changed {
            self.create_deployment(&job, feasible.len() as u64)
        } else if joins_active {
            // Reschedules and scale-ups of the same version join its deployment.
            self.active_deployment(ns, id).map(|d| d.id.clone())
        } else {
            None
        };
        let placed = self.place_wants(&job, eval_id, &plan.stop, wants);
        for (want, node) in placed {
            let alloc_id = self.place_alloc(
                &job,
                &want.group,
                want.index,
                eval_id,
                deployment_id.as_deref(),
                &node,
            );
            plan.start.push((alloc_id, waits.clone()));
        }
        if spec_changed && let Some(d_id) = deployment_id {
            // A deployment with nothing to place (count 0) is complete at once.
            self.check_deployment_progress(&d_id);
        }
        plan
    }

    /// Places a restored job's allocations again (no new version, no new deployment).
    pub fn replace_allocs_after_restore(&mut self, ns: &str, id: &str) -> Plan {
        let jmi = self
            .job(ns, id)
            .map(|j| View::job(j).uint("JobModifyIndex"))
            .unwrap_or(0);
        let (eval_id, _) = self.create_eval(ns, id, "node-update", jmi, 0, None);
        let plan = self.reconcile(ns, id, &eval_id, false);
        self.refresh_job_status(ns, id);
        plan
    }

    pub(super) fn stop_job_allocs(&mut self, ns: &str, id: &str, why: &str) -> Plan {
        let ids: Vec<String> = self
            .allocs
            .values()
            .filter(|a| a.namespace == ns && a.job_id == id && a.desired_run())
            .map(|a| a.id.clone())
            .collect();
        for a in &ids {
            self.set_desired_stop(a, why);
        }
        Plan {
            start: vec![],
            stop: ids,
        }
    }

    pub(super) fn set_desired_stop(&mut self, alloc_id: &str, why: &str) {
        let index = self.next_index();
        if let Some(a) = self.allocs.get_mut(alloc_id) {
            a.desired_status = "stop".into();
            a.desired_description = why.into();
            a.modify_index = index;
            a.alloc_modify_index = index;
            a.modify_time = self.clock.now();
        }
        self.tables.allocs = index;
        self.emit_alloc("AllocationUpdateDesiredStatus", alloc_id);
    }

    pub(super) fn place_alloc(
        &mut self,
        job: &Value,
        group_name: &str,
        index_in_group: u64,
        eval_id: &str,
        deployment: Option<&str>,
        node_id: &str,
    ) -> String {
        let index = self.next_index();
        let now = self.clock.now();
        let id = uuid::Uuid::new_v4().to_string();
        let task_states = View::job(job)
            .named("TaskGroups", group_name)
            .map(|g| g.list("Tasks"))
            .unwrap_or_default()
            .iter()
            .map(|t| (t.str("Name").to_string(), TaskState::default()))
            .collect();
        let alloc = Alloc {
            id: id.clone(),
            eval_id: eval_id.to_string(),
            name: format!(
                "{}.{}[{}]",
                View::job(job).str("ID"),
                group_name,
                index_in_group
            ),
            namespace: View::job(job).str("Namespace").to_string(),
            job_id: View::job(job).str("ID").to_string(),
            node_id: node_id.to_string(),
            job_type: View::job(job).str("Type").to_string(),
            job_version: View::job(job).uint("Version"),
            job: job.clone(),
            task_group: group_name.to_string(),
            desired_status: "run".into(),
            desired_description: String::new(),
            client_status: "pending".into(),
            client_description: String::new(),
            task_states,
            deployment_id: deployment.unwrap_or("").to_string(),
            deployment_status: None,
            migrate: false,
            ports: Vec::new(),
            previous_allocation: String::new(),
            next_allocation: String::new(),
            create_index: index,
            modify_index: index,
            alloc_modify_index: index,
            create_time: now,
            modify_time: now,
        };
        self.allocs.insert(id.clone(), alloc);
        self.tables.allocs = index;
        if let Some(d_id) = deployment {
            if let Some(d) = self.deployments.get_mut(d_id) {
                if let Some(g) = d.task_groups.get_mut(group_name) {
                    g.placed_allocs += 1;
                    if g.require_progress_by_nanos == 0 && g.progress_deadline > 0 {
                        g.require_progress_by_nanos = now + g.progress_deadline as i64;
                        g.require_progress_by = rfc3339(g.require_progress_by_nanos);
                    }
                }
                d.modify_index = index;
                d.modify_time = now;
            }
            self.tables.deployments = index;
        }
        self.emit_alloc("AllocationCreated", &id);
        id
    }

    pub(super) fn emit_alloc(&mut self, kind: &str, alloc_id: &str) {
        if let Some(a) = self.allocs.get(alloc_id) {
            let payload = json!({"Allocation": self.alloc_json(a, false)});
            let (ns, job_id, dep) = (
                a.namespace.clone(),
                a.job_id.clone(),
                a.deployment_id.clone(),
            );
            let mut keys = vec![job_id];
            if !dep.is_empty() {
                keys.push(dep);
            }
            self.emit("Allocation", kind, alloc_id, &ns, keys, payload);
        }
    }

    // === allocation updates from the executor ===

    /// Applies a client-side update to an allocation.
    pub fn update_alloc(&mut self, alloc_id: &str, f: impl FnOnce(&mut Alloc)) {
        let index = self.next_index();
        let Some(a) = self.allocs.get_mut(alloc_id) else {
            return;
        };
        f(a);
        if let Some((status, description)) = client_status_of(a) {
            a.client_status = status.into();
            a.client_description = description.into();
        }
        a.modify_index = index;
        a.modify_time = self.clock.now();
        let (ns, job) = (a.namespace.clone(), a.job_id.clone());
        self.tables.allocs = index;
        self.emit_alloc("AllocationUpdated", alloc_id);
        self.refresh_job_status(&ns, &job);
    }
}

pub(super) fn alloc_index(name: &str) -> Option<u64> {
    let start = name.rfind('[')?;
    name[start + 1..].trim_end_matches(']').parse().ok()
}

/// The static ports (label, value) a task group reserves for itself on its node. A port with
/// `IgnoreCollision` (`ignore_collision = true`, for programs that bind with SO_REUSEPORT) is
/// shared: it neither blocks nor is blocked by another allocation's port.
pub fn static_ports(group: &Value) -> Vec<(String, u64)> {
    View::group(group)
        .list("Networks")
        .iter()
        .flat_map(|n| n.list("ReservedPorts"))
        .filter(|p| p.uint("Value") > 0 && !p.bool("IgnoreCollision"))
        .map(|p| (p.str("Label").to_string(), p.uint("Value")))
        .collect()
}

/// The Nomad client's `getClientStatus`: any failed (dead) task fails the allocation, then any
/// running task makes it running, then any pending task pending, then all dead is complete.
pub(super) fn client_status_of(a: &Alloc) -> Option<(&'static str, &'static str)> {
    let (mut pending, mut running, mut dead, mut failed) = (false, false, false, false);
    for t in a.task_states.values() {
        match t.state.as_str() {
            "running" => running = true,
            "pending" => pending = true,
            "dead" if t.failed => failed = true,
            "dead" => dead = true,
            _ => {}
        }
    }
    if failed {
        Some(("failed", "Failed tasks"))
    } else if running {
        Some(("running", "Tasks are running"))
    } else if pending {
        Some(("pending", "No tasks have started"))
    } else if dead {
        Some(("complete", "All tasks have completed"))
    } else {
        None
    }
}
