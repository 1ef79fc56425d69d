//! The agent's local services and checks (DOC api-docs/agent/service.mdx, agent/check.mdx;
//! SRC agent/agent_endpoint.go, agent/agent.go, agent/checks/check.go `CheckTTL`).
//!
//! The twin is a single server agent on node [`NODE_NAME`]. What is registered here is put
//! into the catalog on that node at once, as the agent's anti-entropy does on every local
//! change (`syncChanges`), and removed from it on deregistration. A TTL check turns
//! `critical` with output "TTL expired" when no pass/warn/fail/update arrives within its TTL.
//! HTTP and TCP checks are run by the agent (SRC agent/checks/check.go `CheckHTTP`,
//! `CheckTCP`): the store says which are due ([`Store::due_probes`]), the timer task runs them
//! and hands the result back ([`Store::agent_probe_result`]).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::json;
use tokio::time::Instant;

use super::{
    Check, CheckDef, DeregisterRequest, NODE_NAME, RegisterRequest, ServiceDef, ServiceInstance,
    Store, StoreError,
};

/// What the agent owns, persisted with the snapshot.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct AgentLocal {
    services: BTreeSet<String>,
    /// Check ID → its TTL (`None` for checks the twin does not run itself).
    checks: BTreeMap<String, AgentCheck>,
    #[serde(skip)]
    deadlines: HashMap<String, Instant>,
    /// When each HTTP/TCP check runs next.
    #[serde(skip)]
    probe_due: HashMap<String, Instant>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct AgentCheck {
    ttl: Option<Duration>,
    last_output: String,
    /// What the agent runs every interval (HTTP and TCP checks).
    #[serde(default)]
    probe: Option<Probe>,
}

/// An HTTP or TCP check the agent runs itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Probe {
    /// What to reach.
    pub target: ProbeTarget,
    /// Time between two runs.
    pub interval: Duration,
    /// How long one run may take before the check is critical (Consul's default: 10 s).
    pub timeout: Duration,
}

/// The endpoint of a [`Probe`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ProbeTarget {
    /// `HTTP`: 2xx is passing, 429 warning, anything else critical.
    Http {
        /// The URL.
        url: String,
        /// The method (default `GET`).
        method: String,
    },
    /// `TCP`: a connection is passing.
    Tcp {
        /// `host:port`.
        address: String,
    },
}

/// Consul's default timeout of HTTP and TCP checks (SRC agent/checks/check.go).
const DEFAULT_PROBE_TIMEOUT: Duration = Duration::from_secs(10);

/// A refusal of an agent endpoint, with the status Consul answers.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AgentError {
    /// 400.
    #[error("{0}")]
    BadRequest(String),
    /// 404 (`NotFoundError`).
    #[error("{0}")]
    NotFound(String),
    /// 500.
    #[error("{0}")]
    Internal(String),
}

impl From<StoreError> for AgentError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::BadRequest(m) => AgentError::BadRequest(m),
            other => AgentError::Internal(other.to_string()),
        }
    }
}

/// A check definition as the agent endpoints take it (`structs.CheckType` and friends).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct AgentCheckDef {
    /// Check ID (defaults to the name, or `service:<id>[:n]` in a service registration).
    #[serde(rename = "CheckID", alias = "ID")]
    pub check_id: String,
    /// Name.
    pub name: String,
    /// Initial status (default `critical`).
    pub status: String,
    /// Notes.
    pub notes: String,
    /// The service it belongs to.
    #[serde(rename = "ServiceID")]
    pub service_id: String,
    /// TTL (a TTL check).
    #[serde(rename = "TTL")]
    pub ttl: String,
    /// HTTP URL (an HTTP check).
    #[serde(rename = "HTTP")]
    pub http: String,
    /// HTTP method (default `GET`).
    pub method: String,
    /// TCP address (a TCP check).
    #[serde(rename = "TCP")]
    pub tcp: String,
    /// Interval of HTTP/TCP checks.
    pub interval: String,
    /// Timeout of HTTP/TCP checks.
    pub timeout: String,
}

/// `PUT /v1/agent/service/register` (`structs.ServiceDefinition`).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct AgentServiceDef {
    /// Name (the catalog entry's `Service`).
    pub name: String,
    /// The fields the catalog entry takes as they are: ID (defaults to the name), tags,
    /// addresses, meta, port, weights, kind, EnableTagOverride. Its `service` is replaced by
    /// [`AgentServiceDef::name`].
    #[serde(flatten)]
    pub service: ServiceDef,
    /// The definition has no `Service` field, so Consul ignores one, whatever its type; taking it
    /// here keeps it from reaching (and failing to decode into) the flattened catalog fields.
    #[serde(rename = "Service")]
    _service: serde::de::IgnoredAny,
    /// One check.
    pub check: Option<AgentCheckDef>,
    /// Several checks.
    pub checks: Option<Vec<AgentCheckDef>>,
}

/// How the agent keeps a check's status: a TTL it waits on, or a probe it runs.
#[derive(Debug, Clone, Default)]
struct Runner {
    ttl: Option<Duration>,
    probe: Option<Probe>,
}

/// `CheckType.Validate` (SRC agent/structs/check_type.go), for the check kinds the twin knows.
fn validate(c: &AgentCheckDef) -> Result<Runner, AgentError> {
    let parse = |s: &str| {
        if s.is_empty() {
            Ok(Duration::ZERO)
        } else {
            crate::blocking::parse_go_duration(s).ok_or_else(|| {
                AgentError::BadRequest(format!(
                    "Request decode failed: time: invalid duration {s:?}"
                ))
            })
        }
    };
    let ttl = parse(&c.ttl)?;
    let interval = parse(&c.interval)?;
    let interval_check = !c.http.is_empty() || !c.tcp.is_empty();
    let invalid = |m: &str| Err(AgentError::BadRequest(format!("Invalid check: {m}")));
    if !interval.is_zero() && !ttl.is_zero() {
        return invalid("Interval and TTL cannot both be specified");
    }
    if interval_check && interval.is_zero() {
        return invalid(
            "Interval must be > 0 for Script, HTTP, H2PING, TCP, UDP or OSService checks",
        );
    }
    if !interval_check && ttl.is_zero() {
        return invalid("TTL must be > 0 for TTL checks");
    }
    if !c.status.is_empty() && !matches!(c.status.as_str(), "passing" | "warning" | "critical") {
        return Err(AgentError::BadRequest(
            "Status for checks must 'passing', 'warning', 'critical'".into(),
        ));
    }
    let timeout = parse(&c.timeout)?;
    let timeout = if timeout.is_zero() {
        DEFAULT_PROBE_TIMEOUT
    } else {
        timeout
    };
    let target = if !c.http.is_empty() {
        Some(ProbeTarget::Http {
            url: c.http.clone(),
            method: if c.method.is_empty() {
                "GET".into()
            } else {
                c.method.clone()
            },
        })
    } else if !c.tcp.is_empty() {
        Some(ProbeTarget::Tcp {
            address: c.tcp.clone(),
        })
    } else {
        None
    };
    Ok(Runner {
        ttl: (!ttl.is_zero()).then_some(ttl),
        probe: target.map(|target| Probe {
            target,
            interval,
            timeout,
        }),
    })
}

fn catalog_check(c: &AgentCheckDef, id: String, service_id: &str) -> CheckDef {
    let kind = if !c.http.is_empty() {
        "http"
    } else if !c.tcp.is_empty() {
        "tcp"
    } else {
        "ttl"
    };
    CheckDef {
        node: NODE_NAME.to_string(),
        name: c.name.clone(),
        check_id: id,
        status: if c.status.is_empty() {
            "critical".into()
        } else {
            c.status.clone()
        },
        notes: c.notes.clone(),
        output: String::new(),
        service_id: service_id.to_string(),
        kind: kind.to_string(),
        interval: c.interval.clone(),
        timeout: c.timeout.clone(),
        definition: Some(json!({})),
    }
}

impl Store {
    fn agent_node_register(
        &mut self,
        service: Option<ServiceDef>,
        checks: Vec<CheckDef>,
        now: Instant,
    ) -> Result<(), StoreError> {
        let req = RegisterRequest {
            node: NODE_NAME.to_string(),
            skip_node_update: true,
            service,
            checks: Some(checks),
            ..RegisterRequest::default()
        };
        self.register(req, now)
    }

    /// Keeps a check the agent runs locally (fresh output) and arms its TTL or its first run.
    fn agent_check_add(&mut self, id: String, runner: Runner, now: Instant) {
        let same_probe = self
            .agent
            .checks
            .get(&id)
            .is_some_and(|c| c.probe.is_some() && c.probe == runner.probe);
        self.agent.checks.insert(
            id.clone(),
            AgentCheck {
                ttl: runner.ttl,
                last_output: String::new(),
                probe: runner.probe,
            },
        );
        self.arm_check(&id, now);
        // A re-registration of the same probe keeps its schedule (Nomad re-syncs services).
        if !same_probe {
            self.arm_probe(&id, now);
        }
    }

    /// The first run comes after a random part of the interval, as Consul staggers it
    /// (`RandomStagger(Interval)` in `CheckHTTP.run`); until then the check keeps its initial
    /// status.
    fn arm_probe(&mut self, id: &str, now: Instant) {
        let Some(probe) = self.agent.checks.get(id).and_then(|c| c.probe.as_ref()) else {
            self.agent.probe_due.remove(id);
            return;
        };
        let stagger = probe.interval.mul_f64(rand::random_range(0.0..1.0));
        self.agent.probe_due.insert(id.to_string(), now + stagger);
    }

    /// The HTTP/TCP checks due at `now`, each scheduled again one interval later.
    pub fn due_probes(&mut self, now: Instant) -> Vec<(String, Probe)> {
        let due: Vec<String> = self
            .agent
            .probe_due
            .iter()
            .filter(|(_, at)| **at <= now)
            .map(|(id, _)| id.clone())
            .collect();
        let mut out = Vec::new();
        for id in due {
            match self.agent.checks.get(&id).and_then(|c| c.probe.clone()) {
                Some(probe) => {
                    self.agent
                        .probe_due
                        .insert(id.clone(), now + probe.interval);
                    out.push((id, probe));
                }
                None => {
                    self.agent.probe_due.remove(&id);
                }
            }
        }
        out
    }

    /// Records what a run of an HTTP/TCP check found. A check deregistered while it ran is left
    /// alone.
    pub fn agent_probe_result(&mut self, id: &str, status: &str, output: &str, now: Instant) {
        if self.agent.checks.get(id).is_none_or(|c| c.probe.is_none()) {
            return;
        }
        // The check exists (it is ours); a failure would only leave the old status.
        let _ = self.set_agent_check_status(id, status, output, now);
    }

    fn arm_check(&mut self, id: &str, now: Instant) {
        if let Some(ttl) = self.agent.checks.get(id).and_then(|c| c.ttl) {
            self.agent.deadlines.insert(id.to_string(), now + ttl);
        }
    }

    /// `PUT /v1/agent/service/register`: the service and its checks, synced to the catalog.
    pub fn agent_service_register(
        &mut self,
        def: AgentServiceDef,
        now: Instant,
    ) -> Result<(), AgentError> {
        if def.name.is_empty() {
            return Err(AgentError::BadRequest("Missing service name".into()));
        }
        if matches!(def.service.address.as_str(), "0.0.0.0" | "::" | "[::]") {
            return Err(AgentError::BadRequest("Invalid service address".into()));
        }
        let id = if def.service.id.is_empty() {
            def.name.clone()
        } else {
            def.service.id.clone()
        };
        let defs: Vec<AgentCheckDef> = def
            .check
            .clone()
            .into_iter()
            .chain(def.checks.clone().unwrap_or_default())
            .collect();
        let numbered = defs.len() > 1;
        let mut checks = Vec::new();
        let mut local = Vec::new();
        for (i, c) in defs.iter().enumerate() {
            let runner = validate(c)?;
            let check_id = match (c.check_id.is_empty(), numbered) {
                (false, _) => c.check_id.clone(),
                (true, false) => format!("service:{id}"),
                (true, true) => format!("service:{id}:{}", i + 1),
            };
            let mut cc = c.clone();
            if cc.name.is_empty() {
                cc.name = format!("Service '{}' check", def.name);
            }
            checks.push(catalog_check(&cc, check_id.clone(), &id));
            local.push((check_id, runner));
        }
        let service = ServiceDef {
            id: id.clone(),
            service: def.name,
            ..def.service
        };
        self.agent_node_register(Some(service), checks, now)?;
        self.agent.services.insert(id);
        for (check_id, runner) in local {
            self.agent_check_add(check_id, runner, now);
        }
        Ok(())
    }

    /// `PUT /v1/agent/service/deregister/:id`: the service and its checks leave the catalog.
    pub fn agent_service_deregister(&mut self, id: &str, now: Instant) -> Result<(), AgentError> {
        if !self.agent.services.contains(id) {
            return Err(AgentError::NotFound(format!(
                "Unknown service ID {id:?}. Ensure that the service ID is passed, not the service name."
            )));
        }
        let owned: Vec<String> = self
            .all_checks()
            .into_iter()
            .filter(|c| c.node == NODE_NAME && c.service_id == id)
            .map(|c| c.check_id.clone())
            .collect();
        self.deregister(
            DeregisterRequest {
                node: NODE_NAME.to_string(),
                service_id: id.to_string(),
                ..DeregisterRequest::default()
            },
            now,
        )?;
        self.agent.services.remove(id);
        for c in owned {
            self.agent.checks.remove(&c);
            self.agent.deadlines.remove(&c);
            self.agent.probe_due.remove(&c);
        }
        Ok(())
    }

    /// `PUT /v1/agent/check/register`.
    pub fn agent_check_register(
        &mut self,
        def: AgentCheckDef,
        now: Instant,
    ) -> Result<(), AgentError> {
        if def.name.is_empty() {
            return Err(AgentError::BadRequest("Missing check name".into()));
        }
        if !def.status.is_empty()
            && !matches!(def.status.as_str(), "passing" | "warning" | "critical")
        {
            return Err(AgentError::BadRequest("Bad check status".into()));
        }
        let runner = validate(&def)?;
        if !def.service_id.is_empty() && !self.agent.services.contains(&def.service_id) {
            return Err(AgentError::NotFound(format!(
                "ServiceID {:?} does not exist",
                def.service_id
            )));
        }
        let id = if def.check_id.is_empty() {
            def.name.clone()
        } else {
            def.check_id.clone()
        };
        let check = catalog_check(&def, id.clone(), &def.service_id);
        self.agent_node_register(None, vec![check], now)?;
        self.agent_check_add(id, runner, now);
        Ok(())
    }

    fn unknown_check(id: &str) -> AgentError {
        AgentError::NotFound(format!(
            "Unknown check ID {id:?}. Ensure that the check ID is passed, not the check name."
        ))
    }

    /// `PUT /v1/agent/check/deregister/:id`.
    pub fn agent_check_deregister(&mut self, id: &str, now: Instant) -> Result<(), AgentError> {
        if !self.agent.checks.contains_key(id) {
            return Err(Self::unknown_check(id));
        }
        self.deregister(
            DeregisterRequest {
                node: NODE_NAME.to_string(),
                check_id: id.to_string(),
                ..DeregisterRequest::default()
            },
            now,
        )?;
        self.agent.checks.remove(id);
        self.agent.deadlines.remove(id);
        self.agent.probe_due.remove(id);
        Ok(())
    }

    /// `pass`/`warn`/`fail`/`update` of a TTL check: new status and output, TTL timer reset.
    pub fn agent_check_update(
        &mut self,
        id: &str,
        status: &str,
        output: &str,
        now: Instant,
    ) -> Result<(), AgentError> {
        let Some(local) = self.agent.checks.get(id).cloned() else {
            return Err(Self::unknown_check(id));
        };
        if local.ttl.is_none() {
            return Err(AgentError::Internal(format!(
                "CheckID {id:?} does not have associated TTL"
            )));
        }
        self.set_agent_check_status(id, status, output, now)?;
        if let Some(c) = self.agent.checks.get_mut(id) {
            c.last_output = output.to_string();
        }
        self.arm_check(id, now);
        Ok(())
    }

    fn set_agent_check_status(
        &mut self,
        id: &str,
        status: &str,
        output: &str,
        now: Instant,
    ) -> Result<(), StoreError> {
        let Some(current) = self.checks.get(NODE_NAME).and_then(|m| m.get(id)).cloned() else {
            return Ok(());
        };
        let def = CheckDef {
            node: current.node,
            check_id: current.check_id,
            name: current.name,
            status: status.to_string(),
            notes: current.notes,
            output: output.to_string(),
            service_id: current.service_id,
            kind: current.kind,
            interval: current.interval,
            timeout: current.timeout,
            definition: Some(current.definition),
        };
        self.agent_node_register(None, vec![def], now)
    }

    /// TTL checks whose timer has run out.
    pub fn expired_checks(&self, now: Instant) -> Vec<String> {
        self.agent
            .deadlines
            .iter()
            .filter(|(_, d)| **d <= now)
            .map(|(id, _)| id.clone())
            .collect()
    }

    /// Turns a TTL check critical, as `CheckTTL` does when its timer fires.
    pub fn expire_check(&mut self, id: &str, now: Instant) {
        self.agent.deadlines.remove(id);
        let Some(last) = self.agent.checks.get(id).map(|c| c.last_output.clone()) else {
            return;
        };
        let output = if last.is_empty() {
            "TTL expired".to_string()
        } else {
            format!("TTL expired (last output before timeout follows): {last}")
        };
        // The check exists (it is ours); a failure would only leave the old status.
        let _ = self.set_agent_check_status(id, "critical", &output, now);
    }

    /// The earliest timer of any kind (session TTLs, TTL checks, check runs), for the timer
    /// task.
    pub fn next_deadline(&self) -> Option<Instant> {
        [
            self.next_session_deadline(),
            self.agent.deadlines.values().min().copied(),
            self.agent.probe_due.values().min().copied(),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// Re-arms TTL check timers after a restore (a restarted agent starts them afresh).
    pub(super) fn rearm_checks(&mut self, now: Instant) {
        let ids: Vec<String> = self.agent.checks.keys().cloned().collect();
        for id in ids {
            self.arm_check(&id, now);
            self.arm_probe(&id, now);
        }
    }

    /// The agent's services.
    pub fn agent_services(&self) -> Vec<&ServiceInstance> {
        self.node_services(NODE_NAME)
            .into_iter()
            .filter(|s| self.agent.services.contains(&s.id))
            .collect()
    }

    /// The agent's checks.
    pub fn agent_checks(&self) -> Vec<&Check> {
        self.checks
            .get(NODE_NAME)
            .map(|m| {
                m.values()
                    .filter(|c| self.agent.checks.contains_key(&c.check_id))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// How many TTL checks the agent runs (`Stats.agent.check_ttls`).
    pub fn agent_ttl_checks(&self) -> usize {
        self.agent
            .checks
            .values()
            .filter(|c| c.ttl.is_some())
            .count()
    }
}
