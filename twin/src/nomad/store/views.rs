//! JSON views of the state: allocations (stub and full), job summaries and job list stubs.

use super::*;

impl Store {
    // === rendering ===

    /// An allocation as JSON: the list stub, or the full object with its job.
    pub fn alloc_json(&self, a: &Alloc, full: bool) -> Value {
        let group = a.group();
        let address = self
            .nodes
            .get(&a.node_id)
            .map(|n| n.address.as_str())
            .unwrap_or("127.0.0.1");
        let networks: Vec<Value> =
            if a.ports.is_empty() && View::group(&group).list("Networks").is_empty() {
                vec![]
            } else {
                vec![json!({
                    "Mode": "host",
                    "Device": "lo",
                    "CIDR": "",
                    "IP": address,
                    "MBits": 0,
                    "DNS": null,
                    "ReservedPorts": ports_json(a, true),
                    "DynamicPorts": ports_json(a, false),
                })]
            };
        let disk_mb = View::group(&group)
            .obj("EphemeralDisk")
            .map(|d| d.uint("SizeMB"))
            .unwrap_or(300);
        let shared = json!({
            "Networks": networks,
            "DiskMB": disk_mb,
            "Ports": a.ports.iter().map(|p| json!({"Label": p.label, "Value": p.value, "To": p.to, "HostIP": address})).collect::<Vec<_>>(),
        });
        let mut tasks = serde_json::Map::new();
        let mut task_resources = serde_json::Map::new();
        let (mut cpu, mut mem) = (0, 0);
        for t in View::group(&group).list("Tasks") {
            let r = t.obj_or_empty("Resources");
            cpu += r.uint("CPU");
            mem += r.uint("MemoryMB");
            tasks.insert(
                t.str("Name").into(),
                json!({"Cpu": {"CpuShares": r.uint("CPU"), "ReservedCores": null}, "Memory": {"MemoryMB": r.uint("MemoryMB"), "MemoryMaxMB": r.uint("MemoryMaxMB")}, "Networks": null, "Devices": null}),
            );
            task_resources.insert(
                t.str("Name").into(),
                json!({"CPU": r.uint("CPU"), "MemoryMB": r.uint("MemoryMB"), "DiskMB": 0, "Networks": networks}),
            );
        }
        let allocated = json!({"Tasks": tasks, "Shared": shared, "TaskLifecycles": null});
        let mut v = json!({
            "ID": a.id,
            "EvalID": a.eval_id,
            "Name": a.name,
            "Namespace": a.namespace,
            "NodeID": a.node_id,
            "NodeName": self.nodes.get(&a.node_id).map(|n| n.name.as_str()).unwrap_or(""),
            "JobID": a.job_id,
            "JobType": a.job_type,
            "JobVersion": a.job_version,
            "TaskGroup": a.task_group,
            "AllocatedResources": allocated,
            "DesiredStatus": a.desired_status,
            "DesiredDescription": a.desired_description,
            "ClientStatus": a.client_status,
            "ClientDescription": a.client_description,
            "DesiredTransition": {"Migrate": a.migrate.then_some(true), "Reschedule": null, "ForceReschedule": null, "NoShutdownDelay": null},
            "TaskStates": a.task_states,
            "DeploymentStatus": a.deployment_status,
            "FollowupEvalID": "",
            "PreviousAllocation": a.previous_allocation,
            "NextAllocation": a.next_allocation,
            "RescheduleTracker": {"Events": []},
            "PreemptedAllocations": null,
            "PreemptedByAllocation": "",
            "CreateIndex": a.create_index,
            "ModifyIndex": a.modify_index,
            "CreateTime": a.create_time,
            "ModifyTime": a.modify_time,
        });
        if full && let Some(o) = v.as_object_mut() {
            o.insert("Job".into(), a.job.clone());
            o.insert("DeploymentID".into(), json!(a.deployment_id));
            o.insert("AllocModifyIndex".into(), json!(a.alloc_modify_index));
            o.insert(
                "Resources".into(),
                json!({"CPU": cpu, "MemoryMB": mem, "DiskMB": disk_mb, "Networks": networks}),
            );
            o.insert(
                "SharedResources".into(),
                json!({"CPU": 0, "MemoryMB": 0, "DiskMB": disk_mb, "Networks": null}),
            );
            o.insert("TaskResources".into(), Value::Object(task_resources));
            let nodes = self.nodes.len();
            o.insert(
                "Metrics".into(),
                json!({
                    "NodesEvaluated": nodes, "NodesFiltered": 0, "NodesInPool": nodes,
                    "NodesAvailable": {self.datacenter.clone(): nodes},
                    "ClassFiltered": null, "ConstraintFiltered": null, "NodesExhausted": 0,
                    "ClassExhausted": null, "DimensionExhausted": null, "QuotaExhausted": null,
                    "ResourcesExhausted": null, "Scores": null, "ScoreMetaData": null,
                    "AllocationTime": 0, "CoalescedFailures": 0,
                }),
            );
            o.insert(
                "NetworkStatus".into(),
                json!({"InterfaceName": "", "Address": address, "DNS": null}),
            );
        }
        v
    }

    /// A job's deployments as JSON, newest first.
    pub fn job_deployments(&self, ns: &str, id: &str) -> Vec<Value> {
        let mut list: Vec<&Deployment> = self
            .deployments
            .values()
            .filter(|d| d.namespace == ns && d.job_id == id)
            .collect();
        list.sort_by_key(|d| std::cmp::Reverse(d.create_index));
        list.into_iter()
            .map(|d| serde_json::to_value(d).unwrap_or(Value::Null))
            .collect()
    }

    /// A job's allocations as JSON stubs (`/v1/job/:id/allocations`).
    pub fn job_allocs(&self, ns: &str, id: &str) -> Vec<Value> {
        self.allocs
            .values()
            .filter(|a| a.namespace == ns && a.job_id == id)
            .map(|a| self.alloc_json(a, false))
            .collect()
    }

    /// `/v1/services`: the service names and their tags, per namespace `keep` accepts.
    pub fn service_namespaces(&self, keep: impl Fn(&str) -> bool) -> Value {
        let mut by_ns: BTreeMap<&str, BTreeMap<&str, std::collections::BTreeSet<&str>>> =
            BTreeMap::new();
        for r in self.services.values().filter(|r| keep(&r.namespace)) {
            by_ns
                .entry(&r.namespace)
                .or_default()
                .entry(&r.service_name)
                .or_default()
                .extend(r.tags.iter().map(String::as_str));
        }
        by_ns
            .into_iter()
            .map(|(ns, services)| {
                let services: Vec<Value> = services
                    .into_iter()
                    .map(|(name, tags)| json!({"ServiceName": name, "Tags": tags}))
                    .collect();
                json!({"Namespace": ns, "Services": services})
            })
            .collect()
    }

    /// `/v1/service/:name`: the registrations of one service in the namespaces `keep` accepts.
    pub fn service_registrations(&self, name: &str, keep: impl Fn(&str) -> bool) -> Vec<Value> {
        self.services
            .values()
            .filter(|r| keep(&r.namespace) && r.service_name == name)
            .map(|r| serde_json::to_value(r).unwrap_or(Value::Null))
            .collect()
    }

    /// A job's summary (`/v1/job/:id/summary`).
    pub fn job_summary(&self, ns: &str, id: &str) -> Option<Value> {
        let job = self.job(ns, id)?;
        let mut summary = serde_json::Map::new();
        for g in View::job(job).list("TaskGroups") {
            let name = g.str("Name");
            let mut counts = BTreeMap::from([
                ("Queued", 0u64),
                ("Complete", 0),
                ("Failed", 0),
                ("Running", 0),
                ("Starting", 0),
                ("Lost", 0),
                ("Unknown", 0),
            ]);
            for a in self
                .allocs
                .values()
                .filter(|a| a.namespace == ns && a.job_id == id && a.task_group == name)
            {
                let key = match a.client_status.as_str() {
                    "pending" => "Starting",
                    "running" => "Running",
                    "complete" => "Complete",
                    "failed" => "Failed",
                    "lost" => "Lost",
                    _ => "Unknown",
                };
                *counts.entry(key).or_insert(0) += 1;
            }
            summary.insert(name.to_string(), json!(counts));
        }
        Some(json!({
            "JobID": id,
            "Namespace": ns,
            "Summary": summary,
            "Children": {"Pending": 0, "Running": 0, "Dead": 0, "Desired": 0},
            "CreateIndex": View::job(job).uint("CreateIndex"),
            "ModifyIndex": self.tables.allocs.max(View::job(job).uint("ModifyIndex")),
        }))
    }

    /// A job list stub (`/v1/jobs`).
    pub fn job_stub(&self, job: &Value) -> Value {
        let ns = View::job(job).str("Namespace");
        let id = View::job(job).str("ID");
        json!({
            "ID": id,
            "ParentID": View::job(job).str("ParentID"),
            "Name": View::job(job).str("Name"),
            "Namespace": ns,
            "Datacenters": job.get("Datacenters"),
            "NodePool": View::job(job).str("NodePool"),
            "Multiregion": job.get("Multiregion"),
            "Type": View::job(job).str("Type"),
            "Priority": View::job(job).uint("Priority"),
            "Periodic": job.get("Periodic").is_some_and(|p| !p.is_null()),
            "ParameterizedJob": job.get("ParameterizedJob").is_some_and(|p| !p.is_null()),
            "Stop": View::job(job).bool("Stop"),
            "Status": View::job(job).str("Status"),
            "StatusDescription": View::job(job).str("StatusDescription"),
            "JobSummary": self.job_summary(ns, id),
            "CreateIndex": View::job(job).uint("CreateIndex"),
            "ModifyIndex": View::job(job).uint("ModifyIndex"),
            "JobModifyIndex": View::job(job).uint("JobModifyIndex"),
            "SubmitTime": View::job(job).uint("SubmitTime"),
            "Meta": job.get("Meta"),
        })
    }

    /// A node (`/v1/node/:id`), secret ID cleared as the server does.
    pub fn node_json(&self, n: &Node) -> Value {
        let drain = n.drain.as_ref().map(|d| {
            json!({"Deadline": d.deadline, "IgnoreSystemJobs": d.ignore_system_jobs,
                   "ForceDeadline": d.force_deadline, "StartedAt": d.started_at})
        });
        json!({
            "ID": n.id, "SecretID": "", "Datacenter": n.datacenter, "Name": n.name,
            "HTTPAddr": format!("{}:4646", n.address), "TLSEnabled": false,
            "Attributes": {
                "unique.network.ip-address": n.address, "unique.hostname": n.name,
                "nomad.version": self.nomad_version, "os.name": "linux", "kernel.name": "linux",
                "driver.raw_exec": "1", "driver.exec": "1",
            },
            "Resources": null, "Reserved": null, "NodeResources": null, "ReservedResources": null,
            "Links": {}, "Meta": {}, "NodeClass": "", "NodePool": "default", "ComputedClass": "",
            "CgroupParent": "", "Drain": n.drain.is_some(), "DrainStrategy": drain,
            "SchedulingEligibility": n.eligibility, "Status": "ready", "StatusDescription": "",
            "StatusUpdatedAt": 0, "Events": [], "Drivers": drivers_json(),
            "HostVolumes": host_volumes_json(n), "GCVolumesOnNodeGC": false, "HostNetworks": null,
            "CSIControllerPlugins": null, "CSINodePlugins": null, "LastDrain": n.last_drain,
            "NodeMaxAllocs": 0, "CreateIndex": n.create_index, "ModifyIndex": n.modify_index,
        })
    }

    /// A node list stub (`/v1/nodes`).
    pub fn node_stub(&self, n: &Node) -> Value {
        json!({
            "Address": n.address, "ID": n.id, "Attributes": null, "Datacenter": n.datacenter,
            "Name": n.name, "NodeClass": "", "NodePool": "default", "Version": self.nomad_version,
            "Drain": n.drain.is_some(), "SchedulingEligibility": n.eligibility, "Status": "ready",
            "StatusDescription": "", "Drivers": drivers_json(), "HostVolumes": host_volumes_json(n),
            "NodeResources": null, "ReservedResources": null, "LastDrain": n.last_drain,
            "CreateIndex": n.create_index, "ModifyIndex": n.modify_index,
        })
    }
}

pub(super) fn ports_json(a: &Alloc, reserved: bool) -> Value {
    let ports: Vec<Value> = a
        .ports
        .iter()
        .filter(|p| p.reserved == reserved)
        .map(|p| json!({"Label": p.label, "Value": p.value, "To": p.to, "HostNetwork": "default"}))
        .collect();
    if ports.is_empty() {
        Value::Null
    } else {
        Value::Array(ports)
    }
}

/// `Node.HostVolumes`: `map[string]*ClientHostVolumeConfig` (`Name`, `Path`, `ReadOnly`, and
/// `ID` for dynamic volumes, which the twin has none of); `null` without any, as a client with
/// no `host_volume` block reports it. The list stub carries it too (`Node.Stub`).
fn host_volumes_json(n: &Node) -> Value {
    if n.host_volumes.is_empty() {
        return Value::Null;
    }
    n.host_volumes
        .iter()
        .map(|(name, v)| {
            let config = json!({"Name": name, "Path": v.path, "ReadOnly": v.read_only, "ID": ""});
            (name.clone(), config)
        })
        .collect()
}

fn drivers_json() -> Value {
    let info = json!({"Attributes": null, "Detected": true, "Healthy": true,
                      "HealthDescription": "Healthy", "UpdateTime": "0001-01-01T00:00:00Z"});
    json!({"raw_exec": info, "exec": info})
}
