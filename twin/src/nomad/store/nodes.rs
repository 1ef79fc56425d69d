//! Client nodes: scheduling eligibility and drain, as the `Node.UpdateEligibility` and
//! `Node.UpdateDrain` RPCs and the state store handle them (SRC nomad/node_endpoint.go,
//! nomad/state/state_store.go `updateNodeEligibilityImpl`, nomad/drainer/).
//!
//! Every node of the twin runs on this machine. Each gets its own loopback address
//! (`127.0.0.1`, `127.0.0.2`, …) that its tasks see as `NOMAD_IP_<label>`, and dynamic ports are
//! picked free on the machine, so allocations of one job on several nodes never share a port.
//! A task that binds a *static* port on every address (`:80`) still collides with the same task on
//! another twin node, which real separate machines would not.

use super::*;

/// A drain in progress (`structs.DrainStrategy`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct DrainStrategy {
    /// Nanoseconds; `-1` means force, `0` no deadline.
    pub deadline: i64,
    /// Whether system allocations stay on the node.
    pub ignore_system_jobs: bool,
    /// RFC 3339 time the deadline forces the drain (zero time without deadline).
    pub force_deadline: String,
    /// RFC 3339 start time.
    pub started_at: String,
}

/// One client node (`structs.Node`, the fields the twin models).
#[derive(Debug, Clone)]
pub struct Node {
    pub id: String,
    pub name: String,
    pub datacenter: String,
    /// The loopback address this node's tasks use.
    pub address: String,
    /// `eligible` or `ineligible`.
    pub eligibility: String,
    pub drain: Option<DrainStrategy>,
    /// The last finished drain (`structs.DrainMetadata`), as JSON.
    pub last_drain: Option<Value>,
    /// The client's `host_volume` blocks by name (`structs.ClientHostVolumeConfig`): what a
    /// job's `volume "x" { type = "host", source = "<name>" }` can mount on this node.
    pub host_volumes: BTreeMap<String, HostVolume>,
    pub create_index: u64,
    pub modify_index: u64,
}

impl Node {
    /// A ready, eligible node number `n` (0-based) with the given ID.
    pub fn new(n: usize, id: String, datacenter: &str) -> Node {
        Node {
            id,
            name: if n == 0 {
                "hashistack-twin".into()
            } else {
                format!("hashistack-twin-{}", n + 1)
            },
            datacenter: datacenter.into(),
            address: format!("127.0.0.{}", (n % 250) + 1),
            eligibility: "eligible".into(),
            drain: None,
            last_drain: None,
            host_volumes: BTreeMap::new(),
            create_index: 1,
            modify_index: 1,
        }
    }

    /// Whether new allocations may be placed on it.
    pub fn feasible(&self) -> bool {
        self.eligibility == "eligible" && self.drain.is_none()
    }
}

/// One `host_volume` of a client's config, as the node reports it (`Path`, `ReadOnly`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostVolume {
    /// The host path.
    pub path: String,
    /// Whether the client config makes it read-only.
    pub read_only: bool,
}

/// What `Node.UpdateDrain` and `Node.UpdateEligibility` answer.
#[derive(Debug, Clone, Default)]
pub struct NodeUpdate {
    pub node_modify_index: u64,
    pub eval_ids: Vec<String>,
    pub eval_create_index: u64,
    pub index: u64,
}

impl Store {
    /// Adds client nodes until there are `count` (at least one).
    pub fn set_node_count(&mut self, count: usize) {
        for n in self.nodes.len()..count.max(1) {
            let node = Node::new(n, uuid::Uuid::new_v4().to_string(), &self.datacenter);
            self.nodes.insert(node.id.clone(), node);
        }
    }

    /// The nodes in the order they were added (the first is the twin's own agent).
    pub fn nodes_in_order(&self) -> Vec<&Node> {
        let mut nodes: Vec<&Node> = self.nodes.values().collect();
        nodes.sort_by_key(|n| (n.id != self.node_id, n.address.len(), n.address.clone()));
        nodes
    }

    /// IDs of the nodes new allocations may go to, in node order.
    pub fn feasible_nodes(&self) -> Vec<String> {
        self.nodes_in_order()
            .into_iter()
            .filter(|n| n.feasible())
            .map(|n| n.id.clone())
            .collect()
    }

    /// Adds (or replaces) a `host_volume` in a node's client config, as a client restarted
    /// with it fingerprints it: the node is updated (`NodeRegistration` event). `false` when
    /// there is no such node.
    pub fn set_host_volume(&mut self, node_id: &str, name: &str, volume: HostVolume) -> bool {
        let Some(node) = self.nodes.get_mut(node_id) else {
            return false;
        };
        node.host_volumes.insert(name.to_owned(), volume);
        self.touch_node(node_id, "NodeRegistration");
        true
    }

    /// Whether an allocation of a job of this kind must leave `node_id` because it drains.
    pub(super) fn drained_off(&self, node_id: &str, system: bool) -> bool {
        self.nodes
            .get(node_id)
            .and_then(|n| n.drain.as_ref())
            .is_some_and(|d| !(system && d.ignore_system_jobs))
    }

    /// Bumps a node's index and emits its event (`Node` topic: `NodeDrain`, `NodeEligibility`).
    fn touch_node(&mut self, node_id: &str, kind: &str) -> u64 {
        let index = self.next_index();
        if let Some(n) = self.nodes.get_mut(node_id) {
            n.modify_index = index;
        }
        self.tables.nodes = index;
        if let Some(n) = self.nodes.get(node_id) {
            let payload = json!({"Node": self.node_json(n)});
            let id = n.id.clone();
            self.emit("Node", kind, &id, "", vec![], payload);
        }
        index
    }

    /// `Node.UpdateEligibility`: errors are RPC errors (HTTP 500) with Nomad's texts.
    pub fn set_eligibility(
        &mut self,
        node_id: &str,
        eligibility: &str,
    ) -> Result<(NodeUpdate, Plan), ApiError> {
        if !matches!(eligibility, "eligible" | "ineligible") {
            return Err(ApiError::new(
                500,
                format!("invalid scheduling eligibility {eligibility:?}"),
            ));
        }
        let node = self
            .nodes
            .get(node_id)
            .ok_or_else(|| ApiError::new(500, "node not found"))?;
        if node.drain.is_some() && eligibility == "eligible" {
            return Err(ApiError::new(
                500,
                "can not set node's scheduling eligibility to eligible while it is draining",
            ));
        }
        if node.eligibility == eligibility {
            return Ok((NodeUpdate::default(), Plan::default()));
        }
        if let Some(n) = self.nodes.get_mut(node_id) {
            n.eligibility = eligibility.into();
        }
        let index = self.touch_node(node_id, "NodeEligibility");
        let mut out = NodeUpdate {
            node_modify_index: index,
            index,
            ..Default::default()
        };
        let mut plan = Plan::default();
        // Only a node becoming eligible can gain work (system jobs); ineligible keeps what runs.
        if eligibility == "eligible" {
            let (ids, eval_index, p) = self.node_evals(node_id, "node-update");
            out.eval_ids = ids;
            out.eval_create_index = eval_index;
            plan = p;
        }
        Ok((out, plan))
    }

    /// `Node.UpdateDrain`: a drain spec starts a drain (the node becomes ineligible and its
    /// allocations are migrated or stopped); `None` cancels it, and `mark_eligible` makes the node
    /// eligible again.
    pub fn set_drain(
        &mut self,
        node_id: &str,
        spec: Option<(i64, bool)>,
        mark_eligible: bool,
    ) -> Result<(NodeUpdate, Plan), ApiError> {
        if !self.nodes.contains_key(node_id) {
            return Err(ApiError::new(500, "node not found"));
        }
        let now = self.clock.now();
        if let Some(n) = self.nodes.get_mut(node_id) {
            match spec {
                Some((deadline, ignore_system_jobs)) => {
                    n.drain = Some(DrainStrategy {
                        deadline,
                        ignore_system_jobs,
                        force_deadline: if deadline > 0 {
                            rfc3339(now + deadline)
                        } else {
                            rfc3339(0)
                        },
                        started_at: rfc3339(now),
                    });
                    n.eligibility = "ineligible".into();
                }
                None => {
                    if n.drain.take().is_some() {
                        n.last_drain = Some(json!({
                            "StartedAt": rfc3339(now), "UpdatedAt": rfc3339(now),
                            "Status": "canceled", "AccessorID": "", "Meta": null,
                        }));
                    }
                    if mark_eligible {
                        n.eligibility = "eligible".into();
                    }
                }
            }
        }
        let index = self.touch_node(node_id, "NodeDrain");
        let trigger = if spec.is_some() {
            "node-drain"
        } else {
            "node-update"
        };
        let (eval_ids, eval_create_index, plan) = self.node_evals(node_id, trigger);
        Ok((
            NodeUpdate {
                node_modify_index: index,
                eval_ids,
                eval_create_index,
                index,
            },
            plan,
        ))
    }

    /// Finishes drains whose node has no allocation left that the drain must move (the drainer
    /// then clears the strategy; the node stays ineligible).
    pub(super) fn complete_drains(&mut self) {
        let done: Vec<String> = self
            .nodes
            .values()
            .filter_map(|n| n.drain.as_ref().map(|d| (n, d)))
            .filter(|(n, d)| {
                !self.allocs.values().any(|a| {
                    a.node_id == n.id
                        && !a.client_terminal()
                        && !(d.ignore_system_jobs && a.job_type == "system")
                })
            })
            .map(|(n, _)| n.id.clone())
            .collect();
        for id in done {
            let now = rfc3339(self.clock.now());
            if let Some(n) = self.nodes.get_mut(&id) {
                let started = n
                    .drain
                    .take()
                    .map(|d| d.started_at)
                    .unwrap_or_else(|| now.clone());
                n.last_drain = Some(json!({
                    "StartedAt": started, "UpdatedAt": now, "Status": "complete",
                    "AccessorID": "", "Meta": null,
                }));
            }
            self.touch_node(&id, "NodeDrain");
        }
    }

    /// `createNodeEvals`: an evaluation for every job with allocations on the node and for every
    /// system job, each run through the scheduler at once.
    fn node_evals(&mut self, node_id: &str, trigger: &str) -> (Vec<String>, u64, Plan) {
        let mut jobs: Vec<(String, String)> = self
            .allocs
            .values()
            .filter(|a| a.node_id == node_id)
            .map(|a| (a.namespace.clone(), a.job_id.clone()))
            .collect();
        jobs.extend(
            self.jobs
                .iter()
                .filter(|(_, r)| matches!(View::job(&r.job).str("Type"), "system" | "sysbatch"))
                .map(|(k, _)| k.clone()),
        );
        jobs.sort();
        jobs.dedup();
        let (mut ids, mut last, mut plan) = (Vec::new(), 0, Plan::default());
        for (ns, id) in jobs {
            let Some(job) = self.job(&ns, &id) else {
                continue;
            };
            let jmi = View::job(job).uint("JobModifyIndex");
            let (eval_id, index) = self.create_eval(&ns, &id, trigger, jmi, 0, None);
            if let Some(o) = self.evals.get_mut(&eval_id).and_then(Value::as_object_mut) {
                o.insert("NodeID".into(), json!(node_id));
            }
            plan.extend(self.reconcile(&ns, &id, &eval_id, false));
            self.refresh_job_status(&ns, &id);
            ids.push(eval_id);
            last = index;
        }
        (ids, last, plan)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn a_node_reports_its_host_volumes_in_the_read_and_the_list_stub_and_null_without_any() {
        let mut st = Store::new("node-1".into());
        let node = st.nodes_in_order()[0].clone();
        assert_eq!(st.node_json(&node)["HostVolumes"], Value::Null);
        assert_eq!(st.node_stub(&node)["HostVolumes"], Value::Null);
        let before = node.modify_index;

        let volume = HostVolume {
            path: "/srv/certs".into(),
            read_only: true,
        };
        assert!(st.set_host_volume("node-1", "certs", volume));
        assert!(!st.set_host_volume(
            "ghost",
            "certs",
            HostVolume {
                path: String::new(),
                read_only: false
            }
        ));
        let node = st.nodes_in_order()[0].clone();
        let want =
            json!({"certs": {"Name": "certs", "Path": "/srv/certs", "ReadOnly": true, "ID": ""}});
        assert_eq!(st.node_json(&node)["HostVolumes"], want);
        assert_eq!(st.node_stub(&node)["HostVolumes"], want);
        assert!(
            node.modify_index > before,
            "a fingerprint change is a node update"
        );
    }
}
