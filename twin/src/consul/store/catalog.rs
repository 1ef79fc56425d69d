//! Catalog and health reads: nodes, service instances, checks and the per-service indexes
//! blocking queries report (DOC catalog.mdx, health.mdx).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::Store;

/// A catalog node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Node {
    /// Node UUID.
    pub id: String,
    /// Node name.
    pub node: String,
    /// Node address.
    pub address: String,
    /// Tagged addresses (`lan`, `wan`...).
    pub tagged_addresses: BTreeMap<String, String>,
    /// Node meta.
    pub meta: BTreeMap<String, String>,
    /// Creation index.
    pub create_index: u64,
    /// Last modification index.
    pub modify_index: u64,
}

/// A service instance on a node.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ServiceInstance {
    /// Service ID (unique per node).
    pub id: String,
    /// Service name.
    pub service: String,
    /// Tags, in registration order.
    pub tags: Vec<String>,
    /// Service address (empty: use the node's).
    pub address: String,
    /// Tagged addresses as Consul stores them (`{"lan": {"address", "port"}}`).
    pub tagged_addresses: Value,
    /// Service meta.
    pub meta: BTreeMap<String, String>,
    /// Port.
    pub port: i64,
    /// Weights `{Passing, Warning}`.
    pub weights: (i64, i64),
    /// EnableTagOverride.
    pub enable_tag_override: bool,
    /// Kind (`""` for typical services).
    pub kind: String,
    /// Creation index.
    pub create_index: u64,
    /// Last modification index.
    pub modify_index: u64,
}

/// A health check.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Check {
    /// Node.
    pub node: String,
    /// Check ID.
    pub check_id: String,
    /// Name.
    pub name: String,
    /// `passing`, `warning`, `critical` or `maintenance`.
    pub status: String,
    /// Notes.
    pub notes: String,
    /// Output.
    pub output: String,
    /// Service ID (`""` for a node check).
    pub service_id: String,
    /// Service name, filled from the service.
    pub service_name: String,
    /// Service tags, filled from the service.
    pub service_tags: Vec<String>,
    /// Check type (`http`, `tcp`, `ttl`...; empty for catalog checks).
    pub kind: String,
    /// Interval text.
    pub interval: String,
    /// Timeout text.
    pub timeout: String,
    /// Definition object as registered.
    pub definition: Value,
    /// Creation index.
    pub create_index: u64,
    /// Last modification index.
    pub modify_index: u64,
}

impl Store {
    /// The catalog `services` table index.
    pub fn services_index(&self) -> u64 {
        self.services_index
    }

    /// The checks table index.
    pub fn checks_index(&self) -> u64 {
        self.checks_index
    }

    /// The nodes table index.
    pub fn nodes_index(&self) -> u64 {
        self.nodes_index
    }

    /// The index of everything about one service (instances, their checks, their nodes).
    pub fn service_index(&self, name: &str) -> u64 {
        self.service_indexes
            .get(name)
            .copied()
            .unwrap_or(self.services_index)
    }

    pub(super) fn touch_service(&mut self, name: &str, idx: u64) {
        self.service_indexes.insert(name.to_string(), idx);
    }

    pub(super) fn touch_node_services(&mut self, node: &str, idx: u64) {
        let names: Vec<String> = self
            .services
            .get(node)
            .map(|m| m.values().map(|s| s.service.clone()).collect())
            .unwrap_or_default();
        for name in names {
            self.touch_service(&name, idx);
        }
    }

    /// `GET /v1/catalog/services`: name → union of tags.
    pub fn catalog_services(&self) -> serde_json::Map<String, Value> {
        let mut by_name: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for svc in self.services.values().flat_map(|m| m.values()) {
            let tags = by_name.entry(svc.service.clone()).or_default();
            for t in &svc.tags {
                if !tags.contains(t) {
                    tags.push(t.clone());
                }
            }
        }
        by_name.into_iter().map(|(k, v)| (k, json!(v))).collect()
    }

    /// Instances of a service as `(node, instance)`, ordered by node then ID.
    pub fn instances(&self, name: &str) -> Vec<(&Node, &ServiceInstance)> {
        let mut out = Vec::new();
        for (node_name, m) in &self.services {
            let Some(node) = self.nodes.get(node_name) else {
                continue;
            };
            for svc in m.values().filter(|s| s.service == name) {
                out.push((node, svc));
            }
        }
        out
    }

    /// Checks that apply to an instance: node checks plus its own service checks.
    pub fn instance_checks(&self, node: &str, service_id: &str) -> Vec<&Check> {
        self.checks
            .get(node)
            .map(|m| {
                m.values()
                    .filter(|c| c.service_id.is_empty() || c.service_id == service_id)
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Every check, ordered by node then ID.
    pub fn all_checks(&self) -> Vec<&Check> {
        self.checks.values().flat_map(|m| m.values()).collect()
    }

    /// Checks of instances of a service.
    pub fn service_checks(&self, name: &str) -> Vec<&Check> {
        self.all_checks()
            .into_iter()
            .filter(|c| c.service_name == name && !c.service_id.is_empty())
            .collect()
    }

    /// Every node.
    pub fn nodes(&self) -> Vec<&Node> {
        self.nodes.values().collect()
    }

    /// One node.
    pub fn node(&self, name: &str) -> Option<&Node> {
        self.nodes.get(name)
    }

    /// Services registered on a node.
    pub fn node_services(&self, name: &str) -> Vec<&ServiceInstance> {
        self.services
            .get(name)
            .map(|m| m.values().collect())
            .unwrap_or_default()
    }
}
