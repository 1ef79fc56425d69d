//! Choosing a node for each allocation the scheduler wants, and recording what could not be
//! placed the way the scheduler does (`FailedTGAllocs` plus a blocked evaluation).

use super::*;

/// An allocation the scheduler wants placed.
#[derive(Debug, Clone)]
pub(super) struct Want {
    /// Its task group.
    pub group: String,
    /// Its index in the group (`job.group[index]`).
    pub index: u64,
    /// The node it must run on (system jobs), or `None` to let the scheduler pick.
    pub node: Option<String>,
}

/// Why the placements of one group failed.
#[derive(Debug, Default)]
struct Failure {
    evaluated: u64,
    exhausted: u64,
    dimension: String,
    count: u64,
}

impl Store {
    /// Places each want on a node: its own node for a system job, otherwise the feasible node
    /// with the fewest allocations of the job (spread). A node has each static (reserved) port
    /// once: a node whose running allocations (or earlier placements of this plan) hold a port
    /// the group asks for is exhausted for it, with the scheduler's dimension
    /// `network: reserved port collision <label>=<port>`. Unplaceable wants are recorded on the
    /// evaluation (`FailedTGAllocs`, `QueuedAllocations`) with a blocked follow-up evaluation.
    pub(super) fn place_wants(
        &mut self,
        job: &Value,
        eval_id: &str,
        stopping: &[String],
        wants: Vec<Want>,
    ) -> Vec<(Want, String)> {
        let job_id = View::job(job).str("ID");
        let ns = View::job(job).str("Namespace");
        let mut held: BTreeMap<String, Vec<u64>> = BTreeMap::new();
        let mut load: BTreeMap<String, u64> = BTreeMap::new();
        for a in self
            .allocs
            .values()
            .filter(|a| a.desired_run() && !a.client_terminal() && !stopping.contains(&a.id))
        {
            held.entry(a.node_id.clone())
                .or_default()
                .extend(static_ports(&a.group()).into_iter().map(|(_, p)| p));
            if a.job_id == job_id && a.namespace == ns {
                *load.entry(a.node_id.clone()).or_default() += 1;
            }
        }
        let feasible = self.feasible_nodes();
        let mut placed = Vec::new();
        let mut failed: BTreeMap<String, Failure> = BTreeMap::new();
        for want in wants {
            let g = View::job(job)
                .named("TaskGroups", &want.group)
                .map(|g| g.value().clone())
                .unwrap_or(Value::Null);
            let ports = static_ports(&g);
            let mut candidates: Vec<String> = match &want.node {
                Some(n) => vec![n.clone()],
                None => feasible.clone(),
            };
            // Stable sort: the least loaded node first, node order among equals.
            candidates.sort_by_key(|n| load.get(n).copied().unwrap_or(0));
            let mut collision = None;
            let chosen = candidates.iter().find(|n| {
                let on_node = held.get(*n).map(Vec::as_slice).unwrap_or(&[]);
                match ports.iter().find(|(_, p)| on_node.contains(p)) {
                    Some(c) => {
                        collision = Some(c.clone());
                        false
                    }
                    None => true,
                }
            });
            match chosen.cloned() {
                Some(node) => {
                    held.entry(node.clone())
                        .or_default()
                        .extend(ports.iter().map(|(_, p)| *p));
                    *load.entry(node.clone()).or_default() += 1;
                    placed.push((want, node));
                }
                None => {
                    let f = failed.entry(want.group.clone()).or_default();
                    f.count += 1;
                    f.evaluated = candidates.len() as u64;
                    f.exhausted = candidates.len() as u64;
                    if let Some((label, port)) = collision {
                        f.dimension = format!("network: reserved port collision {label}={port}");
                    }
                }
            }
        }
        if !failed.is_empty() {
            self.record_failed_placements(eval_id, &failed);
        }
        placed
    }

    fn record_failed_placements(&mut self, eval_id: &str, failed: &BTreeMap<String, Failure>) {
        let in_pool = self.nodes.len() as u64;
        let available = self.feasible_nodes().len() as u64;
        let metrics: serde_json::Map<String, Value> = failed
            .iter()
            .map(|(group, f)| {
                let dimension = if f.dimension.is_empty() {
                    Value::Null
                } else {
                    json!({f.dimension.clone(): f.exhausted})
                };
                (
                    group.clone(),
                    json!({
                        "NodesEvaluated": f.evaluated, "NodesFiltered": 0, "NodesInPool": in_pool,
                        "NodesAvailable": {self.datacenter.clone(): available},
                        "ClassFiltered": null, "ConstraintFiltered": null,
                        "NodesExhausted": f.exhausted, "ClassExhausted": null,
                        "DimensionExhausted": dimension, "QuotaExhausted": null,
                        "ResourcesExhausted": null, "Scores": null, "ScoreMetaData": null,
                        "AllocationTime": 0, "CoalescedFailures": f.count - 1,
                    }),
                )
            })
            .collect();
        let queued: serde_json::Map<String, Value> = failed
            .iter()
            .map(|(g, f)| (g.clone(), json!(f.count)))
            .collect();
        let blocked_id = uuid::Uuid::new_v4().to_string();
        if let Some(eval) = self.evals.get(eval_id).cloned() {
            let mut blocked = eval.clone();
            if let Some(o) = blocked.as_object_mut() {
                o.insert("ID".into(), json!(blocked_id));
                o.insert("Status".into(), json!("blocked"));
                o.insert("TriggeredBy".into(), json!("queued-allocs"));
                o.insert("PreviousEval".into(), json!(eval_id));
                o.insert(
                    "StatusDescription".into(),
                    json!("created to place remaining allocations"),
                );
                o.insert("ClassEligibility".into(), json!({}));
            }
            self.evals.insert(blocked_id.clone(), blocked);
            if let Some(o) = self.evals.get_mut(eval_id).and_then(Value::as_object_mut) {
                o.insert("FailedTGAllocs".into(), Value::Object(metrics));
                o.insert("BlockedEval".into(), json!(blocked_id));
                o.insert("QueuedAllocations".into(), Value::Object(queued));
            }
        }
    }
}
