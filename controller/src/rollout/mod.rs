//! The health-gated rollout state machine (DESIGN §4).
//!
//! ```text
//! Idle → Applying → Verifying(deadline) → Ready
//!                          │ fail / deadline passed
//!                          ▼
//!                     RollingBack → RolledBack        (onFailure: rollback)
//!                          └──────→ Degraded           (onFailure: hold, or nothing to go back to)
//! ```
//!
//! A Traefik structural change is a handover (ARCHITECTURE.md): the job registered is the idle
//! slot, gated while the serving slot keeps serving (`Applying` and `Verifying` are its
//! *Warming* stage); it goes on to *Switching* (stop the old slot) and *Draining* (until the
//! old slot's allocations are done), both `Applying` with a [`Switch`], before `Ready`. A
//! failure before the switch stops the new slot (`RollingBack` with a `StopJob`); after the
//! switch nothing can fail any more. An operator that restarts before the switch stops the new
//! slot (`RollingBack` with `abandon`, then `Idle`) and plans the change again; after it, it
//! finishes the drain.
//!
//! [`step`] is pure: it takes the current [`Phase`], what the loop just saw ([`Observation`]) and
//! the time, and returns the [`Effect`]s the loop must carry out plus the next phase. The loop
//! executes the effects in order, stops at the first failure and reports how far it got in the
//! next observation's [`Observation::applied`]. Nothing here does IO, so every transition is
//! tested with tokio's paused clock.
//!
//! # Guarantees
//! - A failed *observation* never rolls anything back: the machine only decides on what it saw.
//! - A rollback goes to the last job version that passed the gate (`EnforcePriorVersion` on the
//!   version we registered) and restores the previous KV entries in one transaction.
//! - A new plan is only taken at rest (`Idle`, `Ready`, `RolledBack`, `Degraded`); a rollout in
//!   flight finishes first, on the gate it carries.
//! - A rollback goes only to a version of the same job that passed the gate; with none, the
//!   failed version stays in place with the policy tree it references (`Degraded`).
//! - A phase in flight has a [`Journal`] the loop persists, so another process resumes it.
//!
//! The machine lives in [`step`](fn@step) (the phases and their transitions), the rollout it
//! carries in `change` (what changes, the effects), what it decides on in `observation`, how a
//! gate reads an observation in `gate`, and how a rollout in flight survives a restart in
//! `journal`.

use std::time::Duration;

use tokio::time::Instant;

mod change;
mod gate;
mod handover;
mod journal;
mod observation;
mod step;

pub use crate::spec::OnFailure;
pub use crate::spec::status::JobRef;
pub(crate) use change::KvDebug;
pub use change::{ApplyError, ApplyOutcome, Change, Effect, Handover, JobChange, KvChange};
pub use gate::Gate;
pub use journal::{
    CONSUL_MAX_VALUE_BYTES, Journal, JournalRejected, JournalTooLarge, MAX_JOURNAL_BYTES, Stage,
};
pub use observation::{
    AllocObservation, DeploymentObservation, DeploymentState, JobObservation, Observation,
    ProbeOutcome, ProxyObservation,
};
pub use step::{Phase, Switch, step};

/// How often the loop looks again while a rollout is being verified or retried.
pub const VERIFY_POLL_INTERVAL: Duration = Duration::from_millis(250);

/// The longest gate duration: the same limit validation applies to the document.
pub use crate::spec::MAX_GATE_DURATION;

/// `t + d`, capped at [`MAX_GATE_DURATION`] so no value can overflow the clock.
pub(crate) fn after(t: Instant, d: Duration) -> Instant {
    t.checked_add(d.min(MAX_GATE_DURATION)).unwrap_or(t)
}

/// `1.5s`, `250ms`, `2m0s`: durations as a user wrote them.
pub(crate) fn human(d: Duration) -> String {
    if d.as_secs() >= 60 {
        format!("{}m{}s", d.as_secs() / 60, d.as_secs() % 60)
    } else if d.subsec_millis() == 0 {
        format!("{}s", d.as_secs())
    } else if d.as_secs() == 0 {
        format!("{}ms", d.as_millis())
    } else {
        format!("{:.1}s", d.as_secs_f64())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::panic)] // tests fail loudly
mod tests;
