//! The one blocking-query helper every watch uses.
//!
//! It follows the client rules of Consul's blocking-query docs (CONSUL.md §1), which Nomad's
//! blocking queries share: send `index` and `wait`; reset when the index goes backwards; never
//! send 0 once an answer arrived (1 is always safe); pace the loop with a token bucket so a
//! server that answers at once cannot make it spin.

use std::future::Future;
use std::time::Duration;

use tokio::time::Instant;

use super::{QueryMeta, QueryOptions};

/// How a watch paces its own requests: a token bucket of `burst` requests refilled one per
/// `interval`. The default (burst 2, one per second) lets two changes in a row through at once
/// and then caps a churning or misbehaving server at one request per second.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pacing {
    /// Requests allowed back to back.
    pub burst: u32,
    /// Time to earn one more request.
    pub interval: Duration,
}

impl Default for Pacing {
    fn default() -> Self {
        Pacing {
            burst: 2,
            interval: Duration::from_secs(1),
        }
    }
}

/// What an answer means relative to the previous one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    /// The first answer of this watch.
    First,
    /// The index moved forward: the state may have changed (the server promises no more).
    Advanced,
    /// Same index: the wait expired without a change.
    Unchanged,
    /// The index went backwards (snapshot restore, tombstones reaped): treat the answer as new
    /// state and continue from its index.
    Reset,
}

impl Change {
    /// True unless the answer is known to carry the same state as the previous one.
    pub fn is_change(self) -> bool {
        !matches!(self, Change::Unchanged)
    }
}

/// One answer of a watch.
#[derive(Debug, Clone, PartialEq)]
pub struct WatchUpdate<T> {
    /// The returned state.
    pub value: T,
    /// Its index and leader headers.
    pub meta: QueryMeta,
    /// How it relates to the previous answer.
    pub change: Change,
}

/// Index bookkeeping and pacing of one blocking query, independent of which call it drives, so
/// the same helper serves KV, catalog, health and Nomad watches, and the in-memory fakes.
///
/// ```no_run
/// # use proxy_operator::transport::{Watch, QueryOptions, QueryMeta};
/// # async fn read(_q: QueryOptions) -> Result<(u32, QueryMeta), std::io::Error> { Ok((0, QueryMeta::default())) }
/// # async fn demo() -> Result<(), std::io::Error> {
/// let mut watch = Watch::new(std::time::Duration::from_secs(300));
/// loop {
///     let update = watch.next(read).await?;
///     if update.change.is_change() { /* react to update.value */ }
/// }
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct Watch {
    index: u64,
    answered: bool,
    wait: Duration,
    pacing: Pacing,
    /// GCRA "theoretical arrival time" of the next request.
    next_at: Option<Instant>,
}

impl Watch {
    /// A watch that asks the server to hold each request up to `wait`.
    pub fn new(wait: Duration) -> Watch {
        Watch {
            index: 0,
            answered: false,
            wait,
            pacing: Pacing::default(),
            next_at: None,
        }
    }

    /// Sets the pacing of this watch's requests.
    #[must_use]
    pub fn with_pacing(mut self, pacing: Pacing) -> Watch {
        self.pacing = Pacing {
            burst: pacing.burst.max(1),
            interval: pacing.interval,
        };
        self
    }

    /// The index the next request will send.
    pub fn index(&self) -> u64 {
        self.index
    }

    /// The options of the next request: non-blocking before the first answer, then blocking on
    /// the last index (at least 1).
    pub fn options(&self) -> QueryOptions {
        if self.answered {
            QueryOptions::blocking(self.index.max(1), self.wait)
        } else {
            QueryOptions {
                index: 0,
                wait: Some(self.wait),
            }
        }
    }

    /// Forgets the index, so the next request reads at once (after an error that may have
    /// hidden a change, or when the caller wants a full resync).
    pub fn reset(&mut self) {
        self.index = 0;
        self.answered = false;
    }

    /// Waits for the pacing budget, sends one request through `query` and records its index.
    pub async fn next<T, E, F, Fut>(&mut self, query: F) -> Result<WatchUpdate<T>, E>
    where
        F: FnOnce(QueryOptions) -> Fut,
        Fut: Future<Output = Result<(T, QueryMeta), E>>,
    {
        self.pace().await;
        let (value, meta) = query(self.options()).await?;
        let change = self.observe(meta.index);
        Ok(WatchUpdate {
            value,
            meta,
            change,
        })
    }

    /// Like [`Watch::next`], but keeps asking until the answer is a change.
    pub async fn changed<T, E, F, Fut>(&mut self, mut query: F) -> Result<WatchUpdate<T>, E>
    where
        F: FnMut(QueryOptions) -> Fut,
        Fut: Future<Output = Result<(T, QueryMeta), E>>,
    {
        loop {
            let update = self.next(&mut query).await?;
            if update.change.is_change() {
                return Ok(update);
            }
        }
    }

    /// Records an answer's index and classifies it.
    pub fn observe(&mut self, index: u64) -> Change {
        let change = if !self.answered {
            Change::First
        } else if index > self.index {
            Change::Advanced
        } else if index == self.index || (self.index == 1 && index == 0) {
            Change::Unchanged
        } else {
            Change::Reset
        };
        self.answered = true;
        // Rule 2: never block on 0 (it would return at once, forever); 1 is always safe.
        self.index = index.max(1);
        change
    }

    async fn pace(&mut self) {
        let now = Instant::now();
        let tolerance = self.pacing.interval * (self.pacing.burst - 1);
        let tat = self.next_at.unwrap_or(now).max(now);
        let allowed_at = tat.checked_sub(tolerance).unwrap_or(now);
        if allowed_at > now {
            tokio::time::sleep_until(allowed_at).await;
        }
        self.next_at = Some(tat + self.pacing.interval);
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::panic)] // tests fail loudly
mod tests {
    use std::convert::Infallible;

    use super::*;

    fn answer(index: u64) -> impl Future<Output = Result<((), QueryMeta), Infallible>> {
        std::future::ready(Ok((
            (),
            QueryMeta {
                index,
                ..QueryMeta::default()
            },
        )))
    }

    #[tokio::test(start_paused = true)]
    async fn first_request_does_not_block_and_later_ones_send_the_last_index() {
        let mut w = Watch::new(Duration::from_secs(60));
        let mut sent = Vec::new();
        for index in [5, 9, 9] {
            let u = w
                .next(|q| {
                    sent.push(q);
                    answer(index)
                })
                .await
                .unwrap();
            let _ = u;
        }
        assert_eq!(sent[0].index, 0);
        assert_eq!(sent[1], QueryOptions::blocking(5, Duration::from_secs(60)));
        assert_eq!(sent[2], QueryOptions::blocking(9, Duration::from_secs(60)));
    }

    #[test]
    fn index_going_backwards_is_a_reset_and_the_watch_continues_from_the_new_index() {
        let mut w = Watch::new(Duration::from_secs(60));
        assert_eq!(w.observe(100), Change::First);
        assert_eq!(w.observe(100), Change::Unchanged);
        assert_eq!(w.observe(120), Change::Advanced);
        assert_eq!(w.observe(7), Change::Reset);
        assert_eq!(w.options().index, 7);
    }

    #[test]
    fn index_zero_is_never_sent_after_the_first_answer() {
        let mut w = Watch::new(Duration::from_secs(60));
        w.observe(0);
        assert_eq!(w.options().index, 1);
        assert_eq!(w.observe(0), Change::Unchanged);
        assert_eq!(w.options().index, 1);
    }

    #[tokio::test(start_paused = true)]
    async fn pacing_caps_a_server_that_answers_at_once() {
        let mut w = Watch::new(Duration::from_secs(60)).with_pacing(Pacing {
            burst: 2,
            interval: Duration::from_millis(500),
        });
        let start = Instant::now();
        for index in 1..=12 {
            w.next(|_| answer(index)).await.unwrap();
        }
        // 2 immediately, then one every 500 ms: the 12th request goes at 5 s.
        assert_eq!(start.elapsed(), Duration::from_secs(5));
    }
}
