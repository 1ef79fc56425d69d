//! What the in-memory fakes of both APIs share: call recording, error injection (the next call
//! fails, a write lands but its answer is lost, a target is denied) and blocking reads on tokio
//! time over a model that publishes its index, so `start_paused` tests do not spin.
//!
//! The behaviour of the APIs themselves is not here: the Consul fake drives the twin's Consul
//! store, the Nomad fake the twin's Nomad in process (`hashistack_twin::nomad::embedded`).

use std::collections::{HashMap, VecDeque};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;

use super::{QueryMeta, QueryOptions};

/// One recorded call: the trait method and what it targeted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Call {
    /// Trait method name (`kv_put`, `job_register`, …).
    pub op: &'static str,
    /// The key, session, job, deployment or service it targeted (or a summary).
    pub target: String,
    /// The request's index (blocking index, CAS index, `EnforceIndex`), when it had one.
    pub index: Option<u64>,
}

/// Recorded calls and queued faults of one fake. `E` is the fake's error type.
#[derive(Debug)]
pub struct Recorder<E> {
    calls: Vec<Call>,
    failures: HashMap<&'static str, VecDeque<E>>,
    lost_answers: Vec<(&'static str, String, E)>,
    denied: Vec<(&'static str, String, u16)>,
}

impl<E> Default for Recorder<E> {
    fn default() -> Self {
        Recorder {
            calls: Vec::new(),
            failures: HashMap::new(),
            lost_answers: Vec::new(),
            denied: Vec::new(),
        }
    }
}

impl<E> Recorder<E> {
    /// Records a call, then answers the fault queued for it: a denial (built by `denied` from
    /// the status) or the next injected error of `op`.
    pub fn enter(
        &mut self,
        op: &'static str,
        target: &str,
        index: Option<u64>,
        denied: impl FnOnce(u16) -> E,
    ) -> Result<(), E> {
        self.calls.push(Call {
            op,
            target: target.to_owned(),
            index,
        });
        if let Some((_, _, status)) = self
            .denied
            .iter()
            .find(|(o, t, _)| *o == op && target.contains(t.as_str()))
        {
            return Err(denied(*status));
        }
        match self.failures.get_mut(op).and_then(VecDeque::pop_front) {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// Every call so far, oldest first.
    pub fn calls(&self) -> Vec<Call> {
        self.calls.clone()
    }

    /// The calls of one method.
    pub fn calls_of(&self, op: &str) -> Vec<Call> {
        self.calls.iter().filter(|c| c.op == op).cloned().collect()
    }

    /// Forgets recorded calls.
    pub fn clear_calls(&mut self) {
        self.calls.clear();
    }

    /// Queues `error` for the next call of `op`; queued errors are used one per call, in order.
    pub fn fail_next(&mut self, op: &'static str, error: E) {
        self.failures.entry(op).or_default().push_back(error);
    }

    /// Makes every call of `op` whose target contains `target` fail with HTTP `status`.
    pub fn deny(&mut self, op: &'static str, target: &str, status: u16) {
        self.denied.push((op, target.to_owned(), status));
    }

    /// Makes the next call of `op` whose target contains `target` take effect and then answer
    /// `error` (`""` matches every target).
    pub fn lose_answer(&mut self, op: &'static str, target: &str, error: E) {
        self.lost_answers.push((op, target.to_owned(), error));
    }

    /// Replaces a successful `result` of `op` on `target` with the lost-answer error queued for
    /// it, if any. A failed call keeps its own error and leaves the queue alone.
    pub fn lost_answer<T>(&mut self, op: &str, target: &str, result: Result<T, E>) -> Result<T, E> {
        let value = result?;
        match self
            .lost_answers
            .iter()
            .position(|(o, t, _)| *o == op && target.contains(t.as_str()))
        {
            Some(pos) => Err(self.lost_answers.remove(pos).2),
            None => Ok(value),
        }
    }
}

/// A fake's state: anything with a raft-style index that every write advances.
pub trait Indexed {
    /// The last index handed out.
    fn index(&self) -> u64;
}

/// A fake's state behind a lock, with the change notifications blocking reads wait on.
#[derive(Debug)]
pub struct Model<S> {
    state: Mutex<S>,
    changed: watch::Sender<u64>,
}

impl<S: Indexed> Model<S> {
    /// Wraps `state`.
    pub fn new(state: S) -> Model<S> {
        let (changed, _) = watch::channel(state.index());
        Model {
            state: Mutex::new(state),
            changed,
        }
    }

    /// The state, for reads and for writes that publish nothing (fault settings).
    pub fn lock(&self) -> MutexGuard<'_, S> {
        // A panic while holding the lock is a test failure already; keep going with the state.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Runs `f` on the state at the current (tokio) time and wakes blocked readers when it
    /// advanced the index.
    pub fn write<T>(&self, f: impl FnOnce(&mut S, Instant) -> T) -> T {
        let (out, changed) = {
            let mut st = self.lock();
            let before = st.index();
            let out = f(&mut st, Instant::now());
            let after = st.index();
            (out, (after != before).then_some(after))
        };
        if let Some(i) = changed {
            self.changed.send_replace(i);
        }
        out
    }

    /// A blocking read: answers at once when `opts.index` is 0 or the read's index passed it,
    /// otherwise waits for a change, the read's own wake-up time (a session expiring) or the
    /// end of the wait (`default_wait` when none is given, and at most `max_wait`).
    ///
    /// `read` may change the state (expire sessions); it returns the value, its index and when
    /// the state next changes by itself.
    pub async fn blocking<T>(
        &self,
        opts: QueryOptions,
        default_wait: Duration,
        max_wait: Duration,
        mut read: impl FnMut(&mut S, Instant) -> (T, u64, Option<Instant>),
    ) -> (T, QueryMeta) {
        let deadline = Instant::now() + opts.wait.unwrap_or(default_wait).min(max_wait);
        let mut rx = self.changed.subscribe();
        loop {
            rx.borrow_and_update();
            let now = Instant::now();
            let (value, index, wake) = self.write(|st, now| read(st, now));
            let index = index.max(1);
            if opts.index == 0 || index > opts.index || now >= deadline {
                return (
                    value,
                    QueryMeta {
                        index,
                        known_leader: true,
                        last_contact: Duration::ZERO,
                    },
                );
            }
            let wake = wake.map_or(deadline, |w| w.min(deadline));
            tokio::select! {
                _ = rx.changed() => {}
                () = tokio::time::sleep_until(wake) => {}
            }
        }
    }
}
