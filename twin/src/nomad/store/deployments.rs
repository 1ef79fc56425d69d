//! Deployments: creation per job version, allocation health, progress deadlines, fail (with
//! auto-revert) and pause.

use super::*;

impl Store {
    // === deployments ===

    pub(super) fn create_deployment(&mut self, job: &Value, feasible_nodes: u64) -> Option<String> {
        let ns = View::job(job).str("Namespace").to_string();
        let id = View::job(job).str("ID").to_string();
        let job_type = View::job(job).str("Type");
        if !(job_type == "service" || job_type == "system") {
            return None;
        }
        // Before 1.11 the system scheduler never creates deployments: `/v1/job/:id/deployment`
        // stays null and allocations carry no deployment health.
        if job_type == "system" && !self.system_deployments {
            return None;
        }
        let mut groups = BTreeMap::new();
        for g in View::job(job).list("TaskGroups") {
            let Some(upd) = g.obj("Update") else {
                continue;
            };
            if upd.uint("MaxParallel") == 0 {
                continue;
            }
            // A system deployment's total is the nodes it could place on (SRC
            // scheduler/reconciler/reconcile_node.go: "the desired total is the total we were
            // able to place").
            let desired = if job_type == "system" {
                feasible_nodes
            } else {
                g.uint("Count")
            };
            groups.insert(
                g.str("Name").to_string(),
                DeploymentGroup {
                    auto_revert: upd.bool("AutoRevert"),
                    auto_promote: upd.bool("AutoPromote"),
                    progress_deadline: upd.uint("ProgressDeadline"),
                    require_progress_by: rfc3339(0),
                    promoted: false,
                    placed_canaries: None,
                    desired_canaries: 0,
                    desired_total: desired,
                    placed_allocs: 0,
                    healthy_allocs: 0,
                    unhealthy_allocs: 0,
                    require_progress_by_nanos: 0,
                },
            );
        }
        if groups.is_empty() {
            return None;
        }
        self.cancel_active_deployments(&ns, &id, "Cancelled due to newer version of job");
        let index = self.next_index();
        let now = self.clock.now();
        let d = Deployment {
            id: uuid::Uuid::new_v4().to_string(),
            namespace: ns.clone(),
            job_id: id.clone(),
            job_version: View::job(job).uint("Version"),
            job_modify_index: View::job(job).uint("JobModifyIndex"),
            job_spec_modify_index: View::job(job).uint("JobModifyIndex"),
            job_create_index: View::job(job).uint("CreateIndex"),
            is_multiregion: false,
            task_groups: groups,
            status: "running".into(),
            status_description: "Deployment is running".into(),
            eval_priority: View::job(job).uint("Priority"),
            create_index: index,
            modify_index: index,
            create_time: now,
            modify_time: now,
        };
        let d_id = d.id.clone();
        self.deployments.insert(d_id.clone(), d);
        self.tables.deployments = index;
        self.emit_deployment("DeploymentStatusUpdate", &d_id);
        Some(d_id)
    }

    pub(super) fn emit_deployment(&mut self, kind: &str, d_id: &str) {
        if let Some(d) = self.deployments.get(d_id) {
            let payload = json!({"Deployment": d});
            let (ns, job) = (d.namespace.clone(), d.job_id.clone());
            self.emit("Deployment", kind, d_id, &ns, vec![job], payload);
        }
    }

    /// The active (non-terminal) deployment of a job.
    pub fn active_deployment(&self, ns: &str, id: &str) -> Option<&Deployment> {
        self.deployments
            .values()
            .filter(|d| d.namespace == ns && d.job_id == id && is_active(&d.status))
            .max_by_key(|d| d.create_index)
    }

    pub(super) fn cancel_active_deployments(&mut self, ns: &str, id: &str, why: &str) {
        let ids: Vec<String> = self
            .deployments
            .values()
            .filter(|d| d.namespace == ns && d.job_id == id && is_active(&d.status))
            .map(|d| d.id.clone())
            .collect();
        for d_id in ids {
            self.set_deployment_status(&d_id, "cancelled", why);
        }
    }

    /// Sets a deployment's status and description, as the deployment watcher does.
    pub fn set_deployment_status(&mut self, d_id: &str, status: &str, description: &str) {
        let index = self.next_index();
        if let Some(d) = self.deployments.get_mut(d_id) {
            d.status = status.into();
            d.status_description = description.into();
            d.modify_index = index;
            d.modify_time = self.clock.now();
        }
        self.tables.deployments = index;
        self.emit_deployment("DeploymentStatusUpdate", d_id);
    }

    /// Records an allocation's health as its client would (`DeploymentStatus.Healthy`), then
    /// advances its deployment. Returns work for the executor (an auto-revert may start allocs).
    pub fn set_alloc_health(&mut self, alloc_id: &str, healthy: bool) -> Plan {
        // Health is tracked only for allocations that belong to a deployment (as a client does).
        if self
            .allocs
            .get(alloc_id)
            .is_none_or(|a| a.deployment_id.is_empty())
        {
            return Plan::default();
        }
        let index = self.next_index();
        let Some(a) = self.allocs.get_mut(alloc_id) else {
            return Plan::default();
        };
        if a.deployment_status
            .as_ref()
            .and_then(|d| d.healthy)
            .is_some()
        {
            return Plan::default();
        }
        a.deployment_status = Some(AllocDeploymentStatus {
            healthy: Some(healthy),
            timestamp: rfc3339(self.clock.now()),
            canary: false,
            modify_index: index,
        });
        a.modify_index = index;
        a.modify_time = self.clock.now();
        let (d_id, group) = (a.deployment_id.clone(), a.task_group.clone());
        self.tables.allocs = index;
        self.emit_alloc("AllocationUpdated", alloc_id);
        if d_id.is_empty() {
            return Plan::default();
        }
        let mut fail_now = false;
        if let Some(d) = self.deployments.get_mut(&d_id) {
            if !is_active(&d.status) {
                return Plan::default();
            }
            if let Some(g) = d.task_groups.get_mut(&group) {
                if healthy {
                    g.healthy_allocs += 1;
                    if g.progress_deadline > 0 {
                        g.require_progress_by_nanos = self.clock.now() + g.progress_deadline as i64;
                        g.require_progress_by = rfc3339(g.require_progress_by_nanos);
                    }
                } else {
                    g.unhealthy_allocs += 1;
                    fail_now = g.progress_deadline == 0;
                }
            }
            d.modify_index = index;
            d.modify_time = self.clock.now();
        }
        self.tables.deployments = index;
        self.emit_deployment("DeploymentAllocHealth", &d_id);
        if fail_now {
            return self
                .fail_deployment(&d_id, "Failed due to unhealthy allocations")
                .unwrap_or_default()
                .1;
        }
        self.check_deployment_progress(&d_id);
        Plan::default()
    }

    /// `Deployment.SetAllocHealth`: records the health of the named allocations of an active
    /// deployment. The deployment watcher fails the deployment (and auto-reverts) as soon as any
    /// allocation is marked unhealthy (SRC nomad/deploymentwatcher `SetAllocHealth`). Returns the
    /// version an auto-revert registered, and work for the executor.
    pub fn set_deployment_alloc_health(
        &mut self,
        d_id: &str,
        healthy: &[String],
        unhealthy: &[String],
    ) -> Result<(Option<u64>, Plan), ApiError> {
        if healthy.is_empty() && unhealthy.is_empty() {
            return Err(ApiError::new(
                500,
                "must specify at least one healthy/unhealthy allocation ID",
            ));
        }
        let Some(d) = self.deployments.get(d_id) else {
            return Err(ApiError::new(500, "deployment not found"));
        };
        if !is_active(&d.status) {
            return Err(ApiError::new(
                500,
                "can't set health of allocations for a terminal deployment",
            ));
        }
        let mut plan = Plan::default();
        for a in healthy {
            plan.extend(self.set_alloc_health(a, true));
        }
        for a in unhealthy {
            plan.extend(self.set_alloc_health(a, false));
        }
        let mut reverted = None;
        if !unhealthy.is_empty()
            && let Ok((version, p)) =
                self.fail_deployment(d_id, "Failed due to unhealthy allocations")
        {
            reverted = version;
            plan.extend(p);
        }
        Ok((reverted, plan))
    }

    /// Marks a deployment successful when every group has its healthy allocations; the job
    /// version then becomes stable.
    pub fn check_deployment_progress(&mut self, d_id: &str) {
        let Some(d) = self.deployments.get(d_id) else {
            return;
        };
        if d.status != "running" {
            return;
        }
        if d.task_groups
            .values()
            .all(|g| g.healthy_allocs >= g.desired_total)
        {
            let (ns, job, version) = (d.namespace.clone(), d.job_id.clone(), d.job_version);
            self.set_deployment_status(d_id, "successful", "Deployment completed successfully");
            let _ = self.set_stable(&ns, &job, version, true);
        }
    }

    /// Fails deployments whose progress deadline passed. Returns executor work from auto-reverts.
    pub fn check_deadlines(&mut self) -> Plan {
        self.complete_drains();
        let now = self.clock.now();
        let expired: Vec<String> = self
            .deployments
            .values()
            .filter(|d| progress_deadlines(d).any(|by| now > by))
            .map(|d| d.id.clone())
            .collect();
        let mut plan = Plan::default();
        for d_id in expired {
            if let Ok((_, p)) = self.fail_deployment(&d_id, "Failed due to progress deadline") {
                plan.extend(p);
            }
        }
        plan
    }

    /// When [`Store::check_deadlines`] fails the next deployment if nothing changes before then.
    pub fn next_deadline(&self) -> Option<i64> {
        let now = self.clock.now();
        self.deployments
            .values()
            .flat_map(progress_deadlines)
            .filter(|by| *by >= now)
            .min()
            .map(|by| by + 1)
    }

    /// Fails a deployment and auto-reverts when a group asks for it. Returns the reverted version.
    pub fn fail_deployment(
        &mut self,
        d_id: &str,
        description: &str,
    ) -> Result<(Option<u64>, Plan), ApiError> {
        let d = self
            .deployments
            .get(d_id)
            .cloned()
            .ok_or_else(|| ApiError::new(500, "deployment not found"))?;
        if !is_active(&d.status) {
            return Err(ApiError::new(500, "can't fail terminal deployment"));
        }
        let auto_revert = d.task_groups.values().any(|g| g.auto_revert);
        let mut description = description.to_string();
        let mut revert_to = None;
        if auto_revert {
            let record = self
                .jobs
                .get(&(d.namespace.clone(), d.job_id.clone()))
                .cloned();
            let current = record
                .as_ref()
                .map(|r| r.job.clone())
                .unwrap_or(Value::Null);
            let stable = record.as_ref().and_then(|r| {
                r.versions
                    .iter()
                    .find(|v| {
                        View::job(v).bool("Stable") && View::job(v).uint("Version") != d.job_version
                    })
                    .cloned()
            });
            match stable {
                Some(v) if jobspec::spec_changed(&v, &current) => {
                    description = format!(
                        "{description} - rolling back to job version {}",
                        View::job(&v).uint("Version")
                    );
                    revert_to = Some(v);
                }
                Some(v) => {
                    description = format!(
                        "{description} - not rolling back to stable job version {} as current job has same specification",
                        View::job(&v).uint("Version")
                    );
                }
                None => {
                    description = format!("{description} - no stable job version to auto revert to")
                }
            }
        }
        self.set_deployment_status(d_id, "failed", &description);
        let mut plan = Plan::default();
        let mut reverted = None;
        if let Some(v) = revert_to {
            reverted = Some(View::job(&v).uint("Version"));
            let mut job = v;
            if let Some(o) = job.as_object_mut() {
                o.insert("VersionTag".into(), Value::Null);
            }
            let opts = RegisterOpts {
                trigger: "deployment-watcher",
                ..Default::default()
            };
            if let Ok((_, p)) = self.register(job, &opts) {
                plan.extend(p);
            }
        }
        Ok((reverted, plan))
    }

    /// Pauses or resumes a deployment (`Deployment.Pause`).
    pub fn pause_deployment(&mut self, d_id: &str, pause: bool) -> Result<u64, ApiError> {
        let d = self
            .deployments
            .get(d_id)
            .ok_or_else(|| ApiError::new(500, "deployment not found"))?;
        // SRC nomad/deployment_endpoint.go `Pause`: the refusal names the action asked for.
        if !is_active(&d.status) {
            return Err(ApiError::new(
                500,
                if pause {
                    "can't pause terminal deployment"
                } else {
                    "can't resume terminal deployment"
                },
            ));
        }
        if pause {
            self.set_deployment_status(d_id, "paused", "Deployment is paused");
        } else {
            self.set_deployment_status(d_id, "running", "Deployment is running");
            self.check_deployment_progress(d_id);
        }
        Ok(self
            .deployments
            .get(d_id)
            .map(|d| d.modify_index)
            .unwrap_or(0))
    }

    /// The answer to an action on deployment `d_id`: a new evaluation, the deployment's modify
    /// index and the version an auto-revert registered.
    pub fn deployment_update(&mut self, d_id: &str, reverted: Option<u64>) -> (u64, Value) {
        let eval = self.deployment_eval(d_id);
        let modify = self
            .deployments
            .get(d_id)
            .map(|d| d.modify_index)
            .unwrap_or(0);
        deployment_update_body(eval, modify, reverted, self.index)
    }

    /// Creates the evaluation a deployment action returns.
    pub fn deployment_eval(&mut self, d_id: &str) -> (String, u64) {
        let (ns, job) = self
            .deployments
            .get(d_id)
            .map(|d| (d.namespace.clone(), d.job_id.clone()))
            .unwrap_or_default();
        let jmi = self
            .job(&ns, &job)
            .map(|j| View::job(j).uint("JobModifyIndex"))
            .unwrap_or(0);
        self.create_eval(&ns, &job, "deployment-watcher", jmi, 0, None)
    }
}

/// The progress deadlines of a running deployment's groups that still wait for healthy
/// allocations.
fn progress_deadlines(d: &Deployment) -> impl Iterator<Item = i64> + '_ {
    d.task_groups
        .values()
        .filter(move |g| {
            d.status == "running"
                && g.progress_deadline > 0
                && g.require_progress_by_nanos > 0
                && g.healthy_allocs < g.desired_total
        })
        .map(|g| g.require_progress_by_nanos)
}

/// Whether a deployment status is non-terminal.
pub fn is_active(status: &str) -> bool {
    matches!(
        status,
        "running" | "paused" | "blocked" | "unblocking" | "initializing" | "pending"
    )
}

/// The body of a deployment action (`DeploymentUpdateResponse`) and its index.
pub fn deployment_update_body(
    eval: (String, u64),
    modify_index: u64,
    reverted: Option<u64>,
    index: u64,
) -> (u64, Value) {
    let mut body = json!({
        "EvalID": eval.0,
        "EvalCreateIndex": eval.1,
        "DeploymentModifyIndex": modify_index,
        // `DeploymentUpdateResponse` embeds `WriteMeta`, which carries only `Index`.
        "Index": index,
    });
    if let (Some(v), Some(o)) = (reverted, body.as_object_mut()) {
        o.insert("RevertedJobVersion".into(), json!(v));
    }
    (index, body)
}
