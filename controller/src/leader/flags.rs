//! The election flags of `proxy-operator run`.

use std::time::Duration;

use super::{ElectorConfig, SessionCheck};

/// The election flags of `run` (flatten them with `#[command(flatten)]`).
#[derive(Debug, Clone, PartialEq, Eq, clap::Args)]
pub struct LeaderFlags {
    /// TTL of the leader's Consul session (10s to 24h); renewed at half of it (120/TTL
    /// requests a minute). Without a --session-check, Consul reaps a killed leader's session 2
    /// × TTL after its last renewal, so it is replaced 1.5 to 2 × TTL plus --lock-delay after
    /// the kill; with one, when the check goes critical.
    #[arg(long, value_parser = parse_ttl, default_value = "15s")]
    pub leader_ttl: Duration,
    /// Consul lock-delay after the leader's session is invalidated (1ms to 60s). Short,
    /// because every write of the operator is fenced.
    #[arg(long, value_parser = parse_lock_delay, default_value = "1s")]
    pub lock_delay: Duration,
    /// This replica's instance, recorded in the leader key (the Nomad allocation, or the
    /// Kubernetes pod name).
    #[arg(long, env = "NOMAD_ALLOC_ID")]
    pub instance_id: Option<String>,
    /// Consul health check the leader session is bound to: when it goes critical (the
    /// replica died), Consul invalidates the session at once, so a killed leader is replaced
    /// about one check interval later instead of 1.5 to 2 × --leader-ttl. Default under Nomad:
    /// the checks of this allocation's `provider = "consul"` services on the local agent.
    /// `none`: the TTL alone.
    #[arg(long, value_name = "CHECK_ID|none")]
    pub session_check: Option<String>,
    /// The Nomad allocation whose service checks the session is bound to by default.
    #[arg(long, env = "NOMAD_ALLOC_ID", hide = true)]
    pub nomad_alloc_id: Option<String>,
}

fn parse_bounded(text: &str, min: Duration, max: Duration) -> Result<Duration, String> {
    let d = crate::spec::parse_duration(text)?;
    if d < min || d > max {
        return Err(format!(
            "must be between {} and {}",
            crate::spec::format_duration(min),
            crate::spec::format_duration(max)
        ));
    }
    Ok(d)
}

fn parse_ttl(text: &str) -> Result<Duration, String> {
    // Consul's bounds for a session TTL.
    parse_bounded(text, Duration::from_secs(10), Duration::from_secs(86_400))
}

fn parse_lock_delay(text: &str) -> Result<Duration, String> {
    // Consul caps lock-delay at 60 s (`MaxLockDelay`) and reads 0 as its 15 s default.
    parse_bounded(text, Duration::from_millis(1), Duration::from_secs(60))
}

impl LeaderFlags {
    /// The elector configuration for `<prefix>/leader` on the agent's `node`, recording
    /// `address` (the HTTP listener) in the holder record.
    pub fn config(&self, prefix: &str, node: &str, address: Option<String>) -> ElectorConfig {
        ElectorConfig {
            ttl: self.leader_ttl,
            lock_delay: self.lock_delay,
            allocation: self.instance_id.clone(),
            address,
            session_check: self.session_check(),
            ..ElectorConfig::new(prefix, node)
        }
    }
}

impl LeaderFlags {
    /// `--session-check`, or the allocation's checks under Nomad, or none.
    pub fn session_check(&self) -> SessionCheck {
        match (
            self.session_check.as_deref(),
            self.nomad_alloc_id.as_deref(),
        ) {
            (Some("none"), _) => SessionCheck::TtlOnly,
            (Some(id), _) if !id.is_empty() => SessionCheck::Id(id.to_owned()),
            (_, Some(alloc)) if !alloc.is_empty() => SessionCheck::Allocation(alloc.to_owned()),
            _ => SessionCheck::TtlOnly,
        }
    }
}
