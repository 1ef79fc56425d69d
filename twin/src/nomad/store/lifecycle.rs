//! Operator actions on running work: stopping an allocation, forcing a job's evaluation, and
//! promoting a deployment (SRC nomad/alloc_endpoint.go `Stop`, nomad/job_endpoint.go
//! `Evaluate`, nomad/deployment_endpoint.go `Promote`, nomad/state/state_store.go
//! `UpdateDeploymentPromotion`).

use super::*;

impl Store {
    /// `Alloc.Stop`: marks the allocation for migration and runs an `alloc-stop` evaluation, which
    /// stops it and places a replacement wherever the job still wants one. Returns the evaluation
    /// and the write's index.
    pub fn stop_alloc(&mut self, alloc_id: &str) -> Result<((String, u64), Plan), ApiError> {
        let (ns, job_id) = match self.allocs.get(alloc_id) {
            Some(a) => (a.namespace.clone(), a.job_id.clone()),
            // The RPC's `Unknown allocation "<id>"`, which the HTTP agent turns into this 404.
            None => return Err(ApiError::new(404, "allocation not found")),
        };
        let modify = self
            .job(&ns, &job_id)
            .map(|j| View::job(j).uint("ModifyIndex"))
            .unwrap_or(0);
        let (eval_id, index) = self.create_eval(&ns, &job_id, "alloc-stop", modify, 0, None);
        if let Some(a) = self.allocs.get_mut(alloc_id) {
            a.migrate = true;
            a.modify_index = index;
            a.modify_time = self.clock.now();
        }
        self.tables.allocs = index;
        let plan = self.reconcile(&ns, &job_id, &eval_id, false);
        self.refresh_job_status(&ns, &job_id);
        Ok(((eval_id, index), plan))
    }

    /// `Job.Evaluate`: a new `job-register` evaluation of the current version (no new version, no
    /// new deployment); allocations that are missing (failed, stopped) are placed again.
    pub fn evaluate_job(
        &mut self,
        ns: &str,
        id: &str,
    ) -> Result<(RegisterOutcome, Plan), ApiError> {
        let job = self
            .job(ns, id)
            .ok_or_else(|| ApiError::new(500, "job not found"))?;
        let view = View::job(job);
        if view.is_set("Periodic") {
            return Err(ApiError::new(500, "can't evaluate periodic job"));
        }
        if view.is_set("ParameterizedJob") {
            return Err(ApiError::new(500, "can't evaluate parameterized job"));
        }
        // The evaluation records the job's ModifyIndex, not its JobModifyIndex.
        let modify = view.uint("ModifyIndex");
        let (eval_id, eval_index) = self.create_eval(ns, id, "job-register", modify, 0, None);
        let plan = self.reconcile(ns, id, &eval_id, false);
        self.refresh_job_status(ns, id);
        Ok((
            RegisterOutcome::evaluated(eval_id, eval_index, modify),
            plan,
        ))
    }

    /// `Deployment.Promote`. The twin places no canaries (register refuses `Canary > 0`), so an
    /// active deployment has none to promote and gets the state store's refusal.
    pub fn promote_deployment(&mut self, d_id: &str) -> Result<u64, ApiError> {
        let d = self
            .deployments
            .get(d_id)
            .ok_or_else(|| ApiError::new(500, "deployment not found"))?;
        if !is_active(&d.status) {
            return Err(ApiError::new(500, "can't promote terminal deployment"));
        }
        if d.task_groups
            .values()
            .all(|g| g.placed_canaries.as_ref().is_none_or(Vec::is_empty))
        {
            return Err(ApiError::new(500, "no canaries to promote"));
        }
        Ok(d.modify_index)
    }
}
