//! Running as one of several replicas (DESIGN §6, issue 11): passes run only while this replica
//! holds the leader lock, every KV write carries the term's fence, and losing the lock cancels
//! the pass in flight at once.
//!
//! # Expected flow
//! - A follower runs no pass; it waits for a [`Term`] on the elector's channel. Shutdown ends
//!   the wait.
//! - A new term starts from what Consul holds, never from what this replica remembered: the
//!   status document and the journal are read again (a rollout the last leader left in flight
//!   resumes from its journal), and the store fences its writes with the term's session.
//! - Each pass races [`Term::lost`]: when the lock goes (renewal failed, session invalidated,
//!   released), the pass future is dropped where it stands, and its in-memory state with it.
//! - A fenced write refused as deposed parks the pass (nothing after it runs), asks the
//!   elector to step down, and ends the term the same way.
//! - On shutdown the pass is cancelled first, then the elector destroys the session so a
//!   follower takes over without waiting for the TTL.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{Notify, watch};
use tracing::{info, warn};

use super::store::StatusStore;
use super::{Action, Operator};
use crate::consul::ConsulApi;
use crate::leader::{self, LeaderHandle, Leadership, Term};
use crate::nomad::NomadApi;
use crate::proxy::probe::ProxyProbe;
use crate::rollout::Phase;

/// The election state an operator runs under.
#[derive(Debug)]
pub(super) struct Lead {
    handle: LeaderHandle,
    leadership: watch::Receiver<Leadership>,
    /// The session of the term the operator's state belongs to.
    session: Option<String>,
    /// Signalled by a write refused as deposed.
    pub(super) deposed: Arc<Notify>,
}

impl Lead {
    /// Under `elector`, no term yet.
    pub(super) fn new(elector: LeaderHandle) -> Self {
        Lead {
            leadership: elector.subscribe(),
            handle: elector,
            session: None,
            deposed: Arc::new(Notify::new()),
        }
    }
}

/// How a pass under a term ended.
enum Ended {
    Done(Action),
    Lost,
    Deposed,
}

impl<C, N, P> Operator<C, N, P>
where
    C: ConsulApi + 'static,
    N: NomadApi,
    P: ProxyProbe,
{
    /// This replica's role (leader, follower, …) when it runs under election, for readiness
    /// and metrics.
    #[must_use]
    pub fn leadership(&self) -> Option<watch::Receiver<Leadership>> {
        self.lead.as_ref().map(|lead| lead.leadership.clone())
    }

    /// One pass (a resync pass with `resync`), run only as leader and cancelled when the term
    /// ends. Without election, just the pass. `None`: shutdown came first, or the elector
    /// stopped.
    pub(super) async fn elected_pass<S>(
        &mut self,
        resync: bool,
        mut shutdown: Pin<&mut S>,
    ) -> Option<Action>
    where
        S: Future<Output = ()> + ?Sized,
    {
        let Some(lead) = &self.lead else {
            return Some(self.pass_now(resync).await);
        };
        let mut rx = lead.leadership.clone();
        let deposed = Arc::clone(&lead.deposed);
        let term = tokio::select! {
            () = shutdown.as_mut() => return None,
            term = leader::wait_for_leadership(&mut rx) => term?,
        };
        if lead.session.as_deref() != Some(term.session.as_str()) {
            self.begin_term(&term).await;
        }
        let lost = term.lost(rx);
        let ended = {
            let pass = self.pass_now(resync);
            tokio::select! {
                biased;
                () = shutdown.as_mut() => return None,
                () = lost => Ended::Lost,
                () = deposed.notified() => Ended::Deposed,
                action = pass => Ended::Done(action),
            }
        };
        let ended = match ended {
            Ended::Done(_) if self.store.deposed => Ended::Deposed,
            other => other,
        };
        match ended {
            Ended::Done(action) => Some(action),
            Ended::Lost => {
                warn!(session = %term.session, "lost the leader lock; the pass in flight is cancelled and nothing it held is written");
                self.end_term();
                Some(Action::requeue(Duration::ZERO))
            }
            Ended::Deposed => {
                warn!(session = %term.session, "a fenced write was refused: deposed; stepping down");
                if let Some(lead) = &self.lead {
                    lead.handle.step_down(&term.session).await;
                }
                self.end_term();
                Some(Action::requeue(Duration::ZERO))
            }
        }
    }

    async fn pass_now(&mut self, resync: bool) -> Action {
        if resync {
            self.resync().await
        } else {
            self.reconcile().await
        }
    }

    /// A new term: forget everything a past term knew, read the state from Consul at the next
    /// pass, and fence every write with this term's session.
    async fn begin_term(&mut self, term: &Term) {
        self.end_term();
        let key = format!("{}/leader", self.config.prefix);
        let leader = match leader::read_holder(&*self.consul, &key).await {
            Ok(Some(current)) if current.session == term.session => current.to_string(),
            _ => leader::CurrentLeader {
                holder: Some(term.holder.clone()),
                session: term.session.clone(),
            }
            .to_string(),
        };
        info!(session = %term.session, %leader, "leading: resuming from the status document and the journal in Consul");
        self.observer.term_started();
        self.store.fence = Some(term.fence());
        self.store.leader = Some(leader);
        if let Some(lead) = &mut self.lead {
            lead.session = Some(term.session.clone());
        }
    }

    /// Drops every piece of state a term built in memory.
    fn end_term(&mut self) {
        self.phase = Phase::Idle;
        self.applied = None;
        self.started = false;
        self.last_pass_index = 0;
        self.store = StatusStore::new(&self.config);
        if let Some(lead) = &mut self.lead {
            lead.session = None;
        }
    }

    /// After a write refused as deposed: wakes the run loop, which steps down, and never
    /// returns, so nothing after the refused write runs in this pass.
    pub(super) async fn park_if_deposed(&self) {
        if !self.store.deposed {
            return;
        }
        if let Some(lead) = &self.lead {
            lead.deposed.notify_one();
            std::future::pending::<()>().await;
        }
    }

    /// Stops electing: releases the lock and destroys the session (after the pass in flight
    /// was cancelled), so a follower takes over at once.
    pub(super) async fn stop_leading(&mut self) {
        if let Some(lead) = self.lead.take() {
            lead.handle.shutdown().await;
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::panic)] // tests fail loudly
mod tests;
