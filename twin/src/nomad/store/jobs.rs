//! Jobs and their versions: register (with EnforceIndex), deregister, revert, stability and
//! the job status Nomad derives.

use super::*;

impl Store {
    // === jobs ===

    /// The current job.
    pub fn job(&self, ns: &str, id: &str) -> Option<&Value> {
        self.jobs
            .get(&(ns.to_string(), id.to_string()))
            .map(|r| &r.job)
    }

    pub(super) fn emit_job(&mut self, kind: &str, job: &Value) {
        let ns = View::job(job).str("Namespace").to_string();
        let id = View::job(job).str("ID").to_string();
        self.emit("Job", kind, &id, &ns, vec![], json!({"Job": job}));
    }

    /// Registers `job` (already decoded and canonicalized), Nomad's `Job.Register`.
    pub fn register(
        &mut self,
        mut job: Value,
        opts: &RegisterOpts,
    ) -> Result<(RegisterOutcome, Plan), ApiError> {
        let ns = View::job(&job).str("Namespace").to_string();
        let id = View::job(&job).str("ID").to_string();
        let key = (ns.clone(), id.clone());
        let existing = self.jobs.get(&key).map(|r| r.job.clone());
        if opts.enforce_index {
            let sent = opts.job_modify_index;
            match &existing {
                Some(_) if sent == 0 => {
                    return Err(ApiError::new(
                        500,
                        format!("{ENFORCE_PREFIX} 0: job already exists"),
                    ));
                }
                Some(cur) if View::job(cur).uint("JobModifyIndex") != sent => {
                    return Err(ApiError::new(
                        500,
                        format!(
                            "{ENFORCE_PREFIX} {sent}: job exists with conflicting job modify index: {}",
                            View::job(cur).uint("JobModifyIndex")
                        ),
                    ));
                }
                None if sent != 0 => {
                    return Err(ApiError::new(
                        500,
                        format!("{ENFORCE_PREFIX} {sent}: job does not exist"),
                    ));
                }
                _ => {}
            }
        }
        if let Some(cur) = &existing {
            validate_job_update(cur, &job)?;
        }
        let changed = opts.force_new_version
            || existing
                .as_ref()
                .is_none_or(|cur| jobspec::spec_changed(cur, &job));
        let mut plan = Plan::default();
        let job_modify_index;
        if changed {
            let index = self.next_index();
            let now = self.clock.now();
            let (version, create_index) = match &existing {
                Some(cur) => (
                    View::job(cur).uint("Version") + 1,
                    View::job(cur).uint("CreateIndex"),
                ),
                None => (0, index),
            };
            let stop = View::job(&job).bool("Stop");
            let obj = job
                .as_object_mut()
                .ok_or_else(|| ApiError::new(400, "Job must be specified"))?;
            obj.insert("Version".into(), json!(version));
            obj.insert("CreateIndex".into(), json!(create_index));
            obj.insert("ModifyIndex".into(), json!(index));
            obj.insert("JobModifyIndex".into(), json!(index));
            obj.insert("SubmitTime".into(), json!(now));
            obj.insert("Stable".into(), json!(false));
            obj.insert(
                "Status".into(),
                json!(if stop { "dead" } else { "pending" }),
            );
            job_modify_index = index;
            let record = self.jobs.entry(key.clone()).or_insert(JobRecord {
                job: Value::Null,
                versions: vec![],
            });
            record.job = job.clone();
            record.versions.insert(0, job.clone());
            prune_versions(&mut record.versions);
            self.tables.jobs = index;
            self.jobs_dirty = true;
            self.emit_job("JobRegistered", &job);
        } else {
            job_modify_index = existing
                .as_ref()
                .map(|c| View::job(c).uint("JobModifyIndex"))
                .unwrap_or(0);
        }
        // Periodic and parameterized jobs are templates for child jobs: no evaluation of their own.
        let template = ["Periodic", "ParameterizedJob"]
            .iter()
            .any(|k| job.get(*k).is_some_and(|v| !v.is_null()));
        if template && !View::job(&job).bool("Stop") {
            self.refresh_job_status(&ns, &id);
            let out = RegisterOutcome {
                eval_id: String::new(),
                eval_create_index: 0,
                job_modify_index,
                index: self.index,
            };
            return Ok((out, plan));
        }
        // Since 0.12.1 the evaluation is committed atomically with a job write (same index).
        let (eval_id, eval_index) = self.create_eval(
            &ns,
            &id,
            opts.trigger,
            job_modify_index,
            opts.eval_priority,
            changed.then_some(job_modify_index),
        );
        plan.extend(self.reconcile(&ns, &id, &eval_id, changed));
        self.refresh_job_status(&ns, &id);
        Ok((
            RegisterOutcome::evaluated(eval_id, eval_index, job_modify_index),
            plan,
        ))
    }

    /// Stops (or purges) a job, Nomad's `Job.Deregister`.
    pub fn deregister(&mut self, ns: &str, id: &str, purge: bool) -> (RegisterOutcome, Plan) {
        let key = (ns.to_string(), id.to_string());
        let Some(current) = self.jobs.get(&key).map(|r| r.job.clone()) else {
            return (RegisterOutcome::default(), Plan::default());
        };
        let mut plan = Plan::default();
        let job_modify_index;
        if purge {
            let index = self.next_index();
            self.jobs.remove(&key);
            self.tables.jobs = index;
            self.jobs_dirty = true;
            job_modify_index = index;
            self.emit_job("JobDeregistered", &current);
        } else {
            // The FSM upserts a stopped copy on every deregister, even of a stopped job: a new
            // version and JobModifyIndex, with the evaluation at the same index.
            let mut stopped = current.clone();
            if let Some(o) = stopped.as_object_mut() {
                o.insert("Stop".into(), json!(true));
            }
            let opts = RegisterOpts {
                trigger: "job-deregister",
                force_new_version: true,
                ..Default::default()
            };
            match self.register(stopped, &opts) {
                Ok((out, p)) => return (out, p),
                Err(_) => job_modify_index = View::job(&current).uint("JobModifyIndex"),
            }
        }
        let (eval_id, eval_index) = self.create_eval(
            ns,
            id,
            "job-deregister",
            job_modify_index,
            0,
            purge.then_some(job_modify_index),
        );
        plan.extend(self.stop_job_allocs(ns, id, "alloc not needed due to job update"));
        self.cancel_active_deployments(ns, id, "Cancelled because job is stopped");
        if purge {
            for svc in self
                .services
                .values()
                .filter(|r| r.namespace == ns && r.job_id == id)
                .map(|r| r.id.clone())
                .collect::<Vec<_>>()
            {
                self.remove_service(&svc);
            }
        }
        (
            RegisterOutcome::evaluated(eval_id, eval_index, job_modify_index),
            plan,
        )
    }

    /// Reverts to version `version`, Nomad's `Job.Revert`.
    pub fn revert(
        &mut self,
        ns: &str,
        id: &str,
        version: u64,
        enforce_prior: Option<u64>,
    ) -> Result<(RegisterOutcome, Plan), ApiError> {
        let record = self
            .jobs
            .get(&(ns.to_string(), id.to_string()))
            .ok_or_else(|| ApiError::new(500, format!("job \"{id}\" not found")))?;
        let current = record.job.clone();
        let cur_version = View::job(&current).uint("Version");
        if version == cur_version {
            return Err(ApiError::new(500, "can't revert to current version"));
        }
        // Nomad's order: current version, then the version lookup, then EnforcePriorVersion.
        let target = record
            .versions
            .iter()
            .find(|v| View::job(v).uint("Version") == version)
            .cloned()
            .ok_or_else(|| {
                ApiError::new(
                    500,
                    format!("job \"{id}\" in namespace \"{ns}\" at version {version} not found"),
                )
            })?;
        if let Some(prior) = enforce_prior
            && prior != cur_version
        {
            return Err(ApiError::new(
                500,
                format!("Current job has version {cur_version}; enforcing version {prior}"),
            ));
        }
        let mut job = target;
        if let Some(o) = job.as_object_mut() {
            o.insert("VersionTag".into(), Value::Null);
            o.insert("Stable".into(), json!(false));
        }
        let opts = RegisterOpts {
            enforce_index: enforce_prior.is_some(),
            job_modify_index: View::job(&current).uint("JobModifyIndex"),
            trigger: "job-register",
            ..Default::default()
        };
        // Job.Revert goes through Job.Register: a target equal to the current spec creates no
        // version, only an evaluation.
        self.register(job, &opts)
    }

    /// Sets a version's `Stable` flag, Nomad's `Job.Stable`.
    pub fn set_stable(
        &mut self,
        ns: &str,
        id: &str,
        version: u64,
        stable: bool,
    ) -> Result<u64, ApiError> {
        let key = (ns.to_string(), id.to_string());
        if !self.jobs.contains_key(&key) {
            return Err(ApiError::new(500, format!("job \"{id}\" not found")));
        }
        let index = self.next_index();
        let mut job_after = None;
        if let Some(r) = self.jobs.get_mut(&key) {
            let mut found = false;
            for v in r.versions.iter_mut() {
                if View::job(v).uint("Version") == version {
                    if let Some(o) = v.as_object_mut() {
                        o.insert("Stable".into(), json!(stable));
                        o.insert("ModifyIndex".into(), json!(index));
                    }
                    found = true;
                }
            }
            if !found {
                return Err(ApiError::new(
                    500,
                    format!("job \"{id}\" in namespace \"{ns}\" at version {version} not found"),
                ));
            }
            if View::job(&r.job).uint("Version") == version
                && let Some(o) = r.job.as_object_mut()
            {
                o.insert("Stable".into(), json!(stable));
                o.insert("ModifyIndex".into(), json!(index));
            }
            job_after = Some(r.job.clone());
        }
        self.tables.jobs = index;
        self.jobs_dirty = true;
        if let Some(j) = job_after {
            self.emit_job("JobRegistered", &j);
        }
        Ok(index)
    }

    /// Recomputes the job's `Status` from its allocations (`pending`/`running`/`dead`).
    pub fn refresh_job_status(&mut self, ns: &str, id: &str) {
        let key = (ns.to_string(), id.to_string());
        let Some(job) = self.jobs.get(&key).map(|r| r.job.clone()) else {
            return;
        };
        let status = job_status(&job, &self.allocs, &self.evals);
        if View::job(&job).str("Status") != status {
            let index = self.next_index();
            if let Some(r) = self.jobs.get_mut(&key) {
                if let Some(o) = r.job.as_object_mut() {
                    o.insert("Status".into(), json!(status));
                    o.insert("ModifyIndex".into(), json!(index));
                }
                let version = View::job(&r.job).uint("Version");
                if let Some(v) = r
                    .versions
                    .iter_mut()
                    .find(|v| View::job(v).uint("Version") == version)
                    && let Some(o) = v.as_object_mut()
                {
                    o.insert("Status".into(), json!(status));
                    o.insert("ModifyIndex".into(), json!(index));
                }
            }
            self.tables.jobs = index;
            self.jobs_dirty = true;
            if let Some(j) = self.job(ns, id).cloned() {
                self.emit_job("JobRegistered", &j);
            }
        }
    }
}

/// Nomad's `validateJobUpdate`: a job keeps its type, and its periodic / parameterized nature,
/// until it is purged (the server answers these as RPC errors, so HTTP 500).
pub(super) fn validate_job_update(old: &Value, new: &Value) -> Result<(), ApiError> {
    let (old_type, new_type) = (View::job(old).str("Type"), View::job(new).str("Type"));
    if old_type != new_type {
        return Err(ApiError::new(
            500,
            format!("cannot update job from type \"{old_type}\" to \"{new_type}\""),
        ));
    }
    let set = |j: &Value, k: &str| j.get(k).is_some_and(|v| !v.is_null());
    let msg = match (set(old, "Periodic"), set(new, "Periodic")) {
        (true, false) => Some("cannot update periodic job to being non-periodic"),
        (false, true) => Some("cannot update non-periodic job to being periodic"),
        _ => match (set(old, "ParameterizedJob"), set(new, "ParameterizedJob")) {
            (true, false) => Some("cannot update parameterized job to being non-parameterized"),
            (false, true) => Some("cannot update non-parameterized job to being parameterized"),
            _ => None,
        },
    };
    match msg {
        Some(m) => Err(ApiError::new(500, m)),
        None => Ok(()),
    }
}

pub(super) fn prune_versions(versions: &mut Vec<Value>) {
    if versions.len() <= TRACKED_VERSIONS {
        return;
    }
    // Keep the newest ones, the most recent stable version and tagged versions.
    let latest_stable = versions.iter().position(|v| View::job(v).bool("Stable"));
    let mut kept = Vec::new();
    for (i, v) in versions.iter().enumerate() {
        let tagged = v.get("VersionTag").is_some_and(|t| !t.is_null());
        if kept.len() < TRACKED_VERSIONS || Some(i) == latest_stable || tagged {
            kept.push(v.clone());
        }
    }
    *versions = kept;
}

/// The client status Nomad derives from its tasks.
/// The state store's `getJobStatus`: system, periodic and parameterized jobs run until stopped;
/// otherwise any non-terminal allocation means running, then any non-terminal evaluation pending,
/// and a job with only terminal allocations and evaluations is dead.
pub(super) fn job_status(
    job: &Value,
    allocs: &BTreeMap<String, Alloc>,
    evals: &BTreeMap<String, Value>,
) -> &'static str {
    let (ns, id) = (View::job(job).str("Namespace"), View::job(job).str("ID"));
    let set = |k: &str| job.get(k).is_some_and(|v| !v.is_null());
    if View::job(job).str("Type") == "system" || set("Periodic") || set("ParameterizedJob") {
        return if View::job(job).bool("Stop") {
            "dead"
        } else {
            "running"
        };
    }
    let mut seen = false;
    for a in allocs
        .values()
        .filter(|a| a.namespace == ns && a.job_id == id)
    {
        seen = true;
        if a.desired_run() && !a.client_terminal() {
            return "running";
        }
    }
    for e in evals
        .values()
        .filter(|e| View::eval(e).str("Namespace") == ns && View::eval(e).str("JobID") == id)
    {
        seen = true;
        if !matches!(
            View::eval(e).str("Status"),
            "complete" | "failed" | "canceled"
        ) {
            return "pending";
        }
    }
    if seen { "dead" } else { "pending" }
}
