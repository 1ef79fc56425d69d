//! `PUT /v1/catalog/register` and `/deregister` (DOC catalog.mdx; SRC
//! agent/consul/catalog_endpoint.go, state/catalog.go).

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_json::{Value, json};
use tokio::time::Instant;

use super::{Check, Node, ServiceInstance, Store, StoreError, go_parse_uuid};

/// What the catalog reads of a check's `Definition` (`structs.HealthCheckDefinition`): a
/// field of the wrong type is a decode error, not an empty interval.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
struct DefinitionView {
    #[serde(rename = "HTTP")]
    http: Option<String>,
    #[serde(rename = "TCP")]
    tcp: Option<String>,
    interval: Option<String>,
    timeout: Option<String>,
}

impl Store {
    /// `PUT /v1/catalog/register`.
    pub fn register(&mut self, req: RegisterRequest, now: Instant) -> Result<(), StoreError> {
        // SRC agent/consul/catalog_endpoint.go `Register`: each refusal is a plain RPC error,
        // which the HTTP layer answers with 500.
        if req.node.is_empty() {
            return Err(StoreError::Internal("Must provide node".to_string()));
        }
        if req.address.is_empty() && !req.skip_node_update {
            return Err(StoreError::Internal(
                "Must provide address if SkipNodeUpdate is not set".to_string(),
            ));
        }
        if !req.id.is_empty() {
            go_parse_uuid(&req.id)
                .map_err(|e| StoreError::Internal(format!("Bad node ID: {e}")))?;
        }
        if let Some(svc) = &req.service {
            // Consul checks the ID-without-name case; with neither, its state store fails on
            // the empty index value. The twin refuses both with the documented text.
            if svc.service.is_empty() {
                return Err(StoreError::Internal(
                    "Must provide service name with ID".to_string(),
                ));
            }
            if matches!(svc.address.as_str(), "0.0.0.0" | "::" | "[::]") {
                return Err(StoreError::Internal("Invalid service address".to_string()));
            }
        }
        let exists = self.nodes.contains_key(&req.node);
        let mut checks: Vec<CheckDef> = req.checks.clone().unwrap_or_default();
        if let Some(c) = req.check.clone() {
            checks.push(c);
        }
        // The state store applies node, service and checks in one transaction
        // (`ensureRegistrationTxn`): a check that cannot be inserted aborts all of it.
        let new_service_id = req.service.as_ref().map(|s| {
            if s.id.is_empty() {
                s.service.clone()
            } else {
                s.id.clone()
            }
        });
        for c in &mut checks {
            if c.node.is_empty() {
                c.node = req.node.clone();
            }
            let node_known = c.node == req.node || self.nodes.contains_key(&c.node);
            if !node_known {
                return Err(StoreError::Internal(
                    "failed inserting check: Missing node registration".to_string(),
                ));
            }
            let service_known = c.service_id.is_empty()
                || (c.node == req.node && new_service_id.as_deref() == Some(c.service_id.as_str()))
                || self
                    .services
                    .get(&c.node)
                    .is_some_and(|m| m.contains_key(&c.service_id));
            if !service_known {
                return Err(StoreError::Internal(
                    "failed inserting check: Missing service registration".to_string(),
                ));
            }
            if let Some(d) = &c.definition {
                DefinitionView::deserialize(d)
                    .map_err(|e| StoreError::BadRequest(format!("Request decode failed: {e}")))?;
            }
        }
        let idx = self.next();
        let mut changed = false;

        // Node.
        if !(req.skip_node_update && exists) {
            let old = self.nodes.get(&req.node).cloned();
            let node = Node {
                id: if req.id.is_empty() {
                    old.as_ref().map(|n| n.id.clone()).unwrap_or_default()
                } else {
                    req.id.clone()
                },
                node: req.node.clone(),
                address: req.address.clone(),
                tagged_addresses: req.tagged_addresses.clone().unwrap_or_default(),
                meta: req.node_meta.clone().unwrap_or_default(),
                create_index: old.as_ref().map_or(idx, |n| n.create_index),
                modify_index: idx,
            };
            let same = old.as_ref().is_some_and(|o| {
                Node {
                    modify_index: o.modify_index,
                    ..node.clone()
                } == *o
            });
            if !same {
                self.nodes.insert(req.node.clone(), node);
                self.nodes_index = idx;
                self.touch_node_services(&req.node, idx);
                changed = true;
            }
        }

        // Service.
        if let Some(def) = req.service {
            let id = if def.id.is_empty() {
                def.service.clone()
            } else {
                def.id.clone()
            };
            let old = self
                .services
                .get(&req.node)
                .and_then(|m| m.get(&id))
                .cloned();
            let weights = def.weights.map_or((1, 1), |w| (w.passing, w.warning));
            let inst = ServiceInstance {
                id: id.clone(),
                service: def.service.clone(),
                tags: def.tags.unwrap_or_default(),
                address: def.address,
                tagged_addresses: def.tagged_addresses.unwrap_or_else(|| json!({})),
                meta: def.meta.unwrap_or_default(),
                port: def.port,
                weights,
                enable_tag_override: def.enable_tag_override,
                kind: def.kind,
                create_index: old.as_ref().map_or(idx, |s| s.create_index),
                modify_index: idx,
            };
            let same = old.as_ref().is_some_and(|o| {
                ServiceInstance {
                    modify_index: o.modify_index,
                    ..inst.clone()
                } == *o
            });
            if !same {
                if let Some(o) = &old
                    && o.service != inst.service
                {
                    self.touch_service(&o.service.clone(), idx);
                }
                self.touch_service(&inst.service, idx);
                self.services
                    .entry(req.node.clone())
                    .or_default()
                    .insert(id.clone(), inst);
                self.services_index = idx;
                // Checks of the service carry its name and tags.
                let (name, tags) = {
                    let s = &self.services[&req.node][&id];
                    (s.service.clone(), s.tags.clone())
                };
                if let Some(node_checks) = self.checks.get_mut(&req.node) {
                    for c in node_checks.values_mut().filter(|c| c.service_id == id) {
                        c.service_name = name.clone();
                        c.service_tags = tags.clone();
                    }
                }
                changed = true;
            }
        }

        // Checks.
        let mut went_critical = Vec::new();
        for def in checks {
            let check_id = if def.check_id.is_empty() {
                def.name.clone()
            } else {
                def.check_id.clone()
            };
            if check_id.is_empty() {
                continue;
            }
            let node = def.node.clone();
            // Validated above: the service exists on the check's node.
            let (service_name, service_tags) = self
                .services
                .get(&node)
                .and_then(|m| m.get(&def.service_id))
                .map(|s| (s.service.clone(), s.tags.clone()))
                .unwrap_or_default();
            let old = self
                .checks
                .get(&node)
                .and_then(|m| m.get(&check_id))
                .cloned();
            let definition = def.definition.clone().unwrap_or_else(|| json!({}));
            // Validated in the pre-check above.
            let view = DefinitionView::deserialize(&definition).unwrap_or_default();
            let kind = if !def.kind.is_empty() {
                def.kind.clone()
            } else if view.http.is_some() {
                "http".to_string()
            } else if view.tcp.is_some() {
                "tcp".to_string()
            } else {
                String::new()
            };
            let check = Check {
                node: node.clone(),
                check_id: check_id.clone(),
                name: def.name.clone(),
                status: if def.status.is_empty() {
                    "critical".to_string()
                } else {
                    def.status.clone()
                },
                notes: def.notes.clone(),
                output: def.output.clone(),
                service_id: def.service_id.clone(),
                service_name,
                service_tags,
                kind,
                interval: if def.interval.is_empty() {
                    view.interval.clone().unwrap_or_default()
                } else {
                    def.interval.clone()
                },
                timeout: if def.timeout.is_empty() {
                    view.timeout.clone().unwrap_or_default()
                } else {
                    def.timeout.clone()
                },
                definition,
                create_index: old.as_ref().map_or(idx, |c| c.create_index),
                modify_index: idx,
            };
            let same = old.as_ref().is_some_and(|o| {
                Check {
                    modify_index: o.modify_index,
                    ..check.clone()
                } == *o
            });
            if same {
                continue;
            }
            if check.status == "critical" {
                went_critical.push((check.node.clone(), check.check_id.clone()));
            }
            if check.service_id.is_empty() {
                self.touch_node_services(&node, idx);
            } else {
                self.touch_service(&check.service_name.clone(), idx);
            }
            self.checks.entry(node).or_default().insert(check_id, check);
            self.checks_index = idx;
            changed = true;
        }
        if changed {
            self.index = idx;
        }
        for (node, check_id) in went_critical {
            self.invalidate_sessions_on_check(&node, &check_id, now);
        }
        Ok(())
    }

    pub(super) fn invalidate_sessions_on_check(
        &mut self,
        node: &str,
        check_id: &str,
        now: Instant,
    ) {
        // Consul keeps one `session_checks` row per (node, check) whichever field named the
        // check (`structs.Session.CheckIDs`), and `checkSessionsTxn` looks it up by node and
        // check ID alone.
        let doomed: Vec<String> = self
            .sessions
            .values()
            .filter(|s| {
                s.node == node
                    && s.node_checks
                        .iter()
                        .chain(&s.checks)
                        .chain(s.service_checks.iter().flatten().map(|c| &c.id))
                        .any(|c| c == check_id)
            })
            .map(|s| s.id.clone())
            .collect();
        for id in doomed {
            self.session_invalidate(&id, now);
        }
    }

    /// `PUT /v1/catalog/deregister`: a service (and its checks), a check, or a whole node.
    pub fn deregister(&mut self, req: DeregisterRequest, now: Instant) -> Result<(), StoreError> {
        if req.node.is_empty() {
            return Err(StoreError::Internal("Must provide node".to_string()));
        }
        let idx = self.next();
        let mut changed = false;
        let mut removed_checks: Vec<String> = Vec::new();
        if !req.service_id.is_empty() {
            let removed = self
                .services
                .get_mut(&req.node)
                .and_then(|m| m.remove(&req.service_id));
            if let Some(svc) = removed {
                self.touch_service(&svc.service, idx);
                self.services_index = idx;
                if let Some(m) = self.checks.get_mut(&req.node) {
                    let ids: Vec<String> = m
                        .values()
                        .filter(|c| c.service_id == req.service_id)
                        .map(|c| c.check_id.clone())
                        .collect();
                    for id in ids {
                        m.remove(&id);
                        removed_checks.push(id);
                        self.checks_index = idx;
                    }
                }
                changed = true;
            }
        } else if !req.check_id.is_empty() {
            let removed = self
                .checks
                .get_mut(&req.node)
                .and_then(|m| m.remove(&req.check_id));
            if let Some(c) = removed {
                if c.service_id.is_empty() {
                    self.touch_node_services(&req.node, idx);
                } else {
                    self.touch_service(&c.service_name, idx);
                }
                self.checks_index = idx;
                removed_checks.push(c.check_id);
                changed = true;
            }
        } else if self.nodes.contains_key(&req.node) {
            self.touch_node_services(&req.node, idx);
            self.nodes.remove(&req.node);
            if self.services.remove(&req.node).is_some() {
                self.services_index = idx;
            }
            if let Some(m) = self.checks.remove(&req.node) {
                for c in m.into_values() {
                    removed_checks.push(c.check_id);
                }
                self.checks_index = idx;
            }
            self.nodes_index = idx;
            changed = true;
            let doomed: Vec<String> = self
                .sessions
                .values()
                .filter(|s| s.node == req.node)
                .map(|s| s.id.clone())
                .collect();
            for id in doomed {
                self.session_invalidate(&id, now);
            }
        }
        if changed {
            self.index = self.index.max(idx);
        }
        for check_id in removed_checks {
            self.invalidate_sessions_on_check(&req.node, &check_id, now);
        }
        Ok(())
    }
}

/// Weights of a service definition.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct WeightsDef {
    /// Weight while passing.
    #[serde(default = "one")]
    pub passing: i64,
    /// Weight while warning.
    #[serde(default = "one")]
    pub warning: i64,
}

fn one() -> i64 {
    1
}

/// The `Service` block of a register request.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct ServiceDef {
    /// Service ID (defaults to the name).
    #[serde(rename = "ID")]
    pub id: String,
    /// Service name.
    pub service: String,
    /// Tags.
    pub tags: Option<Vec<String>>,
    /// Address.
    pub address: String,
    /// Tagged addresses.
    pub tagged_addresses: Option<Value>,
    /// Meta.
    pub meta: Option<BTreeMap<String, String>>,
    /// Port.
    pub port: i64,
    /// Weights.
    pub weights: Option<WeightsDef>,
    /// EnableTagOverride.
    pub enable_tag_override: bool,
    /// Kind.
    pub kind: String,
}

/// A check in a register request.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct CheckDef {
    /// Node (must match the request's).
    #[serde(default)]
    pub node: String,
    /// Check ID (defaults to the name).
    #[serde(rename = "CheckID", default)]
    pub check_id: String,
    /// Name.
    #[serde(default)]
    pub name: String,
    /// Status (defaults to `critical`).
    #[serde(default)]
    pub status: String,
    /// Notes.
    #[serde(default)]
    pub notes: String,
    /// Output.
    #[serde(default)]
    pub output: String,
    /// Service ID.
    #[serde(rename = "ServiceID", default)]
    pub service_id: String,
    /// Type.
    #[serde(rename = "Type", default)]
    pub kind: String,
    /// Interval.
    #[serde(default)]
    pub interval: String,
    /// Timeout.
    #[serde(default)]
    pub timeout: String,
    /// Definition.
    #[serde(default)]
    pub definition: Option<Value>,
}

/// `PUT /v1/catalog/register` body.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct RegisterRequest {
    /// Node ID.
    #[serde(rename = "ID")]
    pub id: String,
    /// Node name.
    pub node: String,
    /// Node address.
    pub address: String,
    /// Datacenter.
    pub datacenter: String,
    /// Tagged addresses.
    pub tagged_addresses: Option<BTreeMap<String, String>>,
    /// Node meta.
    pub node_meta: Option<BTreeMap<String, String>>,
    /// Service.
    pub service: Option<ServiceDef>,
    /// One check.
    pub check: Option<CheckDef>,
    /// Several checks.
    pub checks: Option<Vec<CheckDef>>,
    /// Keep the node as is.
    pub skip_node_update: bool,
}

/// `PUT /v1/catalog/deregister` body.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct DeregisterRequest {
    /// Node.
    pub node: String,
    /// Service to remove.
    #[serde(rename = "ServiceID")]
    pub service_id: String,
    /// Check to remove.
    #[serde(rename = "CheckID")]
    pub check_id: String,
    /// Datacenter.
    pub datacenter: String,
}
