//! The health check the leader session is bound to.
//!
//! A TTL session of a SIGKILLed leader lives on for up to 2 × TTL after its last renewal
//! (Consul's `SessionTTLMultiplier`), so a TTL alone cannot replace a killed leader within
//! TTL + 1 s. Consul also invalidates a session the moment one of its linked checks goes
//! critical or is deregistered (SRC agent/consul/state/catalog.go `ensureCheckTxn`,
//! `deleteCheckTxn`), so the session is bound to the operator's own `/healthz` check, which
//! Nomad registers with the local agent for the job's `provider = "consul"` service: a killed
//! leader then loses the lock about one check interval after it dies. The TTL stays as the
//! backstop.
//!
//! Nomad derives the service ID from the allocation (`_nomad-task-<alloc id>-<task|group>-
//! <service>-<port>`, SRC nomad/structs `MakeAllocServiceID`) and the check ID from a hash of the
//! check (`_nomad-check-<hash>`, command/agent/consul `MakeCheckID`), so the check is found at
//! run time among the agent's checks whose service ID holds `NOMAD_ALLOC_ID`.

use std::collections::BTreeMap;

use crate::consul::{ConsulApi, HealthCheck};

/// Which health checks the leader session is bound to.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum SessionCheck {
    /// None: the session lives by its TTL alone (Kubernetes, or `--session-check=none`).
    #[default]
    TtlOnly,
    /// This check on the local agent's node (`--session-check <id>`).
    Id(String),
    /// The service checks of this Nomad allocation on the local agent (the default under
    /// Nomad, from `NOMAD_ALLOC_ID`).
    Allocation(String),
}

/// What a session may be bound to right now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Binding {
    /// These checks: each exists and is not critical.
    Checks(Vec<String>),
    /// Nothing to bind, and why (logged once).
    TtlOnly(String),
    /// A check to bind is critical, typically because it has not run yet after a (re)start:
    /// Consul would refuse the session ("Check '<id>' is in critical state"). Wait and ask
    /// again; a TTL-only session now would cost a slow failover for the whole term.
    Critical(String),
}

/// Resolves `check` against the local agent's checks.
pub(crate) async fn resolve(
    consul: &impl ConsulApi,
    check: &SessionCheck,
) -> crate::consul::Result<Binding> {
    match check {
        SessionCheck::TtlOnly => Ok(Binding::TtlOnly(
            "no session check configured (--session-check=none, or neither NOMAD_ALLOC_ID nor --session-check set)"
                .to_owned(),
        )),
        SessionCheck::Id(id) => {
            let checks = consul.agent_checks().await?;
            Ok(match checks.get(id) {
                Some(c) if c.status == "critical" => Binding::Critical(id.clone()),
                // Not an agent check (a catalog registration, say): Consul decides at create.
                _ => Binding::Checks(vec![id.clone()]),
            })
        }
        SessionCheck::Allocation(alloc) => Ok(of_allocation(&consul.agent_checks().await?, alloc)),
    }
}

/// The binding for the checks of allocation `alloc` among the agent's `checks`.
pub(crate) fn of_allocation(checks: &BTreeMap<String, HealthCheck>, alloc: &str) -> Binding {
    let ours: Vec<&HealthCheck> = checks
        .values()
        .filter(|c| !alloc.is_empty() && !c.service_id.is_empty() && c.service_id.contains(alloc))
        .collect();
    if ours.is_empty() {
        return Binding::TtlOnly(format!(
            "the local Consul agent has no service check of allocation {alloc} (the job registers no `provider = \"consul\"` service with a check, or the token may not read it)"
        ));
    }
    if let Some(c) = ours.iter().find(|c| c.status == "critical") {
        return Binding::Critical(c.check_id.clone());
    }
    Binding::Checks(ours.iter().map(|c| c.check_id.clone()).collect())
}

/// True when Consul refused a session because a linked check is critical (a race with the
/// check's first run, or a flap): waiting helps, unlike for other 500s.
pub(crate) fn refused_as_critical(error: &crate::consul::Error) -> bool {
    error.status() == Some(500) && error.to_string().contains("is in critical state")
}
