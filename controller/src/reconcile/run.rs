//! The run loop: passes at start, after each debounced change of the config key, on requeue
//! and at every resync.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;
use tracing::{debug, info};

use super::{Backoff, MAX_BACKOFF, MAX_DEBOUNCE_FACTOR, MAX_WATCH_WAIT, MIN_BACKOFF, Operator};
use crate::consul::ConsulApi;
use crate::nomad::NomadApi;
use crate::proxy::probe::ProxyProbe;
use crate::transport::{QueryOptions, Watch};

impl<C, N, P> Operator<C, N, P>
where
    C: ConsulApi + 'static,
    N: NomadApi,
    P: ProxyProbe,
{
    /// Runs passes until `shutdown` resolves: at start, after each (debounced) change of the
    /// config key, when a pass asks to be requeued, and every resync interval.
    pub async fn run(mut self, shutdown: impl Future<Output = ()> + Send) {
        tokio::pin!(shutdown);
        let (tx, mut changes) = tokio::sync::watch::channel(0u64);
        let watcher = tokio::spawn(watch_config(
            Arc::clone(&self.consul),
            self.config.config_key(),
            self.config.resync.min(MAX_WATCH_WAIT),
            tx.clone(),
        ));
        let users_watcher = tokio::spawn(self.users.watcher(
            Arc::clone(&self.consul),
            self.config.resync.min(MAX_WATCH_WAIT),
            tx,
        ));
        let mut watching = true;
        let mut next_pass = Instant::now();
        // The timer is the resync (not a requeue the last pass asked for).
        let mut resync_due = false;
        'run: loop {
            let mut resync = false;
            tokio::select! {
                () = &mut shutdown => break,
                () = tokio::time::sleep_until(next_pass) => resync = resync_due,
                changed = changes.changed(), if watching => {
                    if changed.is_err() {
                        // The watcher ended; keep running on requeues and resyncs.
                        watching = false;
                        continue;
                    }
                    // A quiet period: every further edit restarts it (up to a cap), so a burst
                    // of edits is one pass over the last document, not a rollout of one in the
                    // middle. The watch is paced, so it may not report edits inside the burst:
                    // when the quiet period ends, one read of the key tells whether it moved.
                    let cap = Instant::now() + self.config.debounce * MAX_DEBOUNCE_FACTOR;
                    let mut seen = self.config_index().await;
                    loop {
                        let quiet = (Instant::now() + self.config.debounce).min(cap);
                        tokio::select! {
                            () = &mut shutdown => break 'run,
                            () = tokio::time::sleep_until(quiet) => {
                                let now = self.config_index().await;
                                if now == seen || Instant::now() >= cap {
                                    seen = now;
                                    break;
                                }
                                seen = now;
                            }
                            changed = changes.changed(), if watching => {
                                if changed.is_err() {
                                    watching = false;
                                }
                            }
                        }
                    }
                    changes.borrow_and_update();
                    // The pass after the burst already read this version of the document.
                    if seen.is_some_and(|index| index != 0 && index == self.last_pass_index)
                        && !self.users.moved()
                        && self.phase.is_at_rest()
                        && self.store.write_error.is_none()
                    {
                        continue;
                    }
                }
            }
            // Under election: only as leader, cancelled when the term ends or on shutdown.
            let Some(action) = self.elected_pass(resync, shutdown.as_mut()).await else {
                break;
            };
            resync_due = action.requeue_after.is_none();
            next_pass = Instant::now() + action.requeue_after.unwrap_or(self.config.resync);
        }
        watcher.abort();
        users_watcher.abort();
        self.stop_leading().await;
        info!("operator stopped");
    }

    /// The config key's ModifyIndex now (`None`: absent or unreadable).
    pub(super) async fn config_index(&self) -> Option<u64> {
        match self
            .consul
            .kv_get(&self.config.config_key(), QueryOptions::NOW)
            .await
        {
            Ok((pair, _)) => pair.map(|p| p.modify_index),
            Err(_) => None,
        }
    }
}

/// Watches the config key (or any key) with blocking queries and signals each change.
pub(super) async fn watch_config<C: ConsulApi>(
    consul: Arc<C>,
    key: String,
    wait: Duration,
    tx: tokio::sync::watch::Sender<u64>,
) {
    let mut watch = Watch::new(wait);
    let mut backoff = Backoff::new(MIN_BACKOFF, MAX_BACKOFF);
    loop {
        match watch.next(|q| consul.kv_get(&key, q)).await {
            Ok(update) => {
                backoff.reset();
                if matches!(
                    update.change,
                    crate::transport::Change::Advanced | crate::transport::Change::Reset
                ) {
                    debug!(index = update.meta.index, "config key changed");
                    if tx.send(update.meta.index).is_err() {
                        return;
                    }
                }
            }
            Err(e) => {
                let delay = backoff.next().unwrap_or(MAX_BACKOFF);
                debug!(error = %e, ?delay, "config watch failed; retrying");
                tokio::time::sleep(delay).await;
                // The error may have hidden a change: read at once next time, and let the loop
                // look once Consul answers again.
                watch.reset();
                if tx.send(0).is_err() {
                    return;
                }
            }
        }
    }
}
