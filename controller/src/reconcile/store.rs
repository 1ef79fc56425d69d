//! The status store: the status document (`<prefix>/status`), the write-ahead rollout journal
//! (`<prefix>/rollout`) and the CAS transaction that writes both.
//!
//! The store keeps two copies of the status: what the operator knows (moved on by every pass,
//! whether or not its write goes through, so a lost write never makes it forget a failed digest)
//! and what was last written (a pass writes only when the two differ, so an idle operator writes
//! nothing). The journal is written in the same transaction as the status, and only when its
//! stage changes.
//!
//! Writes are paced while a rollout is in flight: the gate is polled about four times a second
//! and its progress changes the status each time, but the document is written at most once per
//! [`STATUS_PACE`]. A phase change, a new journal stage, a retry after a failed write and every
//! pass at rest are written at once. What was paced is written by a later poll of the same
//! rollout (at most a pace later) or with the phase change that ends it.

use std::time::{Duration, SystemTime};

use tokio::time::Instant;
use tracing::{debug, info, warn};

use super::{Config, Error, Operator, Result, read_key, short};
use crate::cli::history::{Revision, revision_ops};
use crate::consul::{ConsulApi, TxnOp, TxnResults};
use crate::leader::{self, Fence};
use crate::nomad::NomadApi;
use crate::proxy::probe::ProxyProbe;
use crate::render::META_OWNER;
use crate::rollout::{Journal, Phase};
use crate::spec;
use crate::spec::status::{HistoryEntry, ProxyStatus};
use crate::status::{self, Pass};
use crate::transport::QueryOptions;

/// The shortest time between two status writes of a rollout in flight that change neither the
/// phase nor the journal stage (issue 13: the gate hold wrote about four times a second).
pub(super) const STATUS_PACE: Duration = Duration::from_secs(1);

/// The status document and the journal as this operator knows and last wrote them.
#[derive(Debug)]
pub(super) struct StatusStore {
    status_key: String,
    journal_key: String,
    /// What the operator knows: updated every pass, whether or not the write goes through.
    pub(super) status: ProxyStatus,
    /// The document as last written (or read at start); a pass writes when `status` differs.
    written: ProxyStatus,
    /// When the last write went through, for the pacing of a rollout in flight.
    written_at: Option<Instant>,
    /// The in-flight journal as last written (or read at start).
    journal_written: Option<Journal>,
    /// The journal key holds something unreadable that the next write must remove.
    journal_garbage: bool,
    /// Why the last status write failed, until one succeeds.
    pub(super) write_error: Option<Error>,
    /// ModifyIndex of the status key (the CAS index of the next write); `None` before the
    /// first read.
    index: Option<u64>,
    /// The leader fence every write carries; `None` for a single replica run without election.
    pub(super) fence: Option<Fence>,
    /// Set when a fenced write was refused because the lock is no longer ours: the replica
    /// steps down and this store writes nothing more.
    pub(super) deposed: bool,
    /// Revision ops to add to the next write: a rollout ended ([`crate::cli::history`]).
    pub(super) revision: Option<Vec<TxnOp>>,
    /// Who leads, as the status's `leader` field says it (set for each term).
    pub(super) leader: Option<String>,
    /// The document the last pass at rest loaded, for the revision of the rollout it starts.
    pub(super) document: Option<Document>,
    /// Since when the served certificates have been unsettled (a fallback, or not checked),
    /// for the sooner rechecks of [`served`].
    served_unsettled_since: Option<Instant>,
    prefix: String,
}

/// A document as it was in `<prefix>/config`.
#[derive(Debug, Clone)]
pub(super) struct Document {
    pub(super) digest: String,
    pub(super) index: u64,
    pub(super) text: String,
}

impl StatusStore {
    /// A store that has read nothing yet.
    pub(super) fn new(config: &Config) -> Self {
        Self {
            status_key: config.status_key(),
            journal_key: config.journal_key(),
            status: ProxyStatus::default(),
            written: ProxyStatus::default(),
            written_at: None,
            journal_written: None,
            journal_garbage: false,
            write_error: None,
            index: None,
            fence: None,
            deposed: false,
            revision: None,
            leader: None,
            document: None,
            served_unsettled_since: None,
            prefix: config.prefix.clone(),
        }
    }

    /// Reads the status document and the journal at start. Returns the journal's raw value,
    /// which the caller checks before trusting it ([`StatusStore::resumed`] or
    /// [`StatusStore::discard_journal`]).
    pub(super) async fn read<C: ConsulApi>(&mut self, consul: &C) -> Result<Option<Vec<u8>>> {
        let pair = read_key(consul, &self.status_key, "the status document").await?;
        let journal = read_key(consul, &self.journal_key, "the rollout journal").await?;
        match pair {
            Some(pair) => {
                self.index = Some(pair.modify_index);
                match serde_json::from_slice::<ProxyStatus>(&pair.value) {
                    Ok(read) => {
                        self.status = read;
                        self.written = self.status.clone();
                    }
                    Err(e) => self.unreadable(&pair.value, &e),
                }
            }
            None => self.index = Some(0),
        }
        if self.leader.is_some() {
            // The next write says who leads now.
            self.status.leader.clone_from(&self.leader);
        }
        Ok(journal.map(|p| p.value))
    }

    /// An unreadable status document (hand-edited, another schema) never becomes an empty one:
    /// that would forget `failedDigest` (the retry-storm guard) and `lastGoodJob` (where a
    /// rollback goes). The copy in memory is kept when there is one; otherwise every field that
    /// still reads is recovered. Either way a condition says what happened, and the next write
    /// replaces the document with a readable one.
    fn unreadable(&mut self, value: &[u8], error: &serde_json::Error) {
        let key = &self.status_key;
        let known = self.status != ProxyStatus::default();
        let (kept, lost) = if known {
            (vec!["the copy this operator knows".to_owned()], Vec::new())
        } else {
            let (recovered, kept, lost) = salvage(value);
            self.status = recovered;
            (kept, lost)
        };
        warn!(key = %key, error = %error, ?kept, ?lost, "the status document is unreadable; it is not taken for an empty one");
        let message = format!(
            "the status document {key} was unreadable ({error}); kept: {}; lost: {}",
            list(&kept),
            list(&lost)
        );
        status::recovered(&mut self.status, &message, SystemTime::now());
        // What is in KV is not what we know: the next flush writes.
        self.written = ProxyStatus::default();
    }

    /// The journal read at start is the rollout now in flight.
    pub(super) fn resumed(&mut self, journal: Journal) {
        self.journal_written = Some(journal);
    }

    /// The journal read at start is not trusted: the next write removes it.
    pub(super) fn discard_journal(&mut self) {
        self.journal_garbage = true;
    }

    /// Whether `next` records another rollout or stage than the journal last written.
    pub(super) fn journal_changed(&self, next: Option<&Journal>) -> bool {
        match (next, &self.journal_written) {
            (Some(a), Some(b)) => !a.same_stage(b),
            (None, None) => false,
            _ => true,
        }
    }

    /// Builds the next status from one pass's facts and writes it (with the in-flight journal)
    /// when it says something new. The status the operator knows moves on even when the write
    /// fails; the write is retried on later passes.
    pub(super) async fn record<C: ConsulApi>(
        &mut self,
        consul: &C,
        pass: &Pass<'_>,
        journal: Option<Journal>,
    ) {
        let now = SystemTime::now();
        let next = status::next(&self.status, pass, now);
        if next.history.last() != self.status.history.last()
            && let Some(entry) = next.history.last()
        {
            self.revision = self.revision_ops(consul, entry, now).await;
        }
        self.status = next;
        self.flush(consul, journal, false).await;
    }

    /// The revision of a rollout that just ended, written with the status that records its end
    /// (`proxy-operator history` / `rollback`). The document text is the one the rollout
    /// started from; after a failover it is read again and used only when its digest matches.
    /// `None` (logged) when the text is gone or the revisions cannot be listed: the status
    /// write does not wait for a revision.
    async fn revision_ops<C: ConsulApi>(
        &self,
        consul: &C,
        entry: &HistoryEntry,
        now: SystemTime,
    ) -> Option<Vec<TxnOp>> {
        let document = match self.document.as_ref().filter(|d| d.digest == entry.digest) {
            Some(doc) => doc.clone(),
            None => {
                let key = format!("{}/config", self.prefix);
                let pair = read_key(consul, &key, "the config key").await.ok()??;
                let spec = spec::load(&pair.value).ok()?;
                if spec.digest() != entry.digest {
                    debug!(digest = %short(&entry.digest), "no revision: the document of the finished rollout is no longer in the config key");
                    return None;
                }
                Document {
                    digest: entry.digest.clone(),
                    index: pair.modify_index,
                    text: String::from_utf8(pair.value).ok()?,
                }
            }
        };
        let root = format!("{}/revisions/", self.prefix);
        let existing: Vec<u64> = match consul.kv_keys(&root, None, QueryOptions::NOW).await {
            Ok((keys, _)) => keys
                .iter()
                .filter_map(|k| k.strip_prefix(root.as_str())?.parse().ok())
                .collect(),
            Err(e) => {
                warn!(error = %e, "no revision recorded: {root} cannot be listed");
                return None;
            }
        };
        let record = Revision {
            revision: 0,
            digest: document.digest,
            config_index: document.index,
            finished_at: status::rfc3339(now),
            outcome: entry.outcome,
            reason: entry.reason.clone(),
            document: document.text,
        };
        let (key, value, deletes) = revision_ops(&self.prefix, &existing, record).ok()?;
        Some(
            std::iter::once(TxnOp::Set { key, value })
                .chain(deletes.into_iter().map(|key| TxnOp::Delete { key }))
                .collect(),
        )
    }

    /// The document as Consul holds it (as last written or read): what the page shows.
    pub(super) fn written(&self) -> &ProxyStatus {
        &self.written
    }

    /// One more pass completed; with `heartbeat`, the counter is written even when nothing else
    /// changed (the periodic resync proves the loop still runs).
    pub(super) async fn count_pass<C: ConsulApi>(
        &mut self,
        consul: &C,
        journal: Option<Journal>,
        heartbeat: bool,
    ) {
        self.status.passes = self.status.passes.saturating_add(1);
        if heartbeat {
            self.flush(consul, journal, true).await;
        }
    }

    /// Writes the status and the journal when either changed since the last write; with
    /// `heartbeat`, also when only the pass counter moved.
    pub(super) async fn flush<C: ConsulApi>(
        &mut self,
        consul: &C,
        journal: Option<Journal>,
        heartbeat: bool,
    ) {
        let journal_changed = self.journal_garbage || self.journal_changed(journal.as_ref());
        let counted = heartbeat && self.written.passes != self.status.passes;
        if !journal_changed && !counted && !status::differs(&self.written, &self.status) {
            self.write_error = None;
            return;
        }
        if self.deposed {
            // A deposed leader writes nothing more; its successor owns the document.
            return;
        }
        let paced = journal.is_some()
            && !journal_changed
            && !counted
            && self.write_error.is_none()
            && self.written.phase == self.status.phase
            && self.written_at.is_some_and(|at| at.elapsed() < STATUS_PACE);
        if paced {
            return;
        }
        self.status.updated_at = Some(status::rfc3339(SystemTime::now()));
        let status = self.status.clone();
        match self
            .write(consul, status, journal.as_ref(), journal_changed)
            .await
        {
            Ok(written) => {
                self.status = written.clone();
                self.written = written;
                self.written_at = Some(Instant::now());
                self.journal_written = journal;
                self.journal_garbage = false;
                self.write_error = None;
                self.revision = None;
            }
            Err(e) if e.is_deposed() => {
                warn!(error = %e, "status not written: this replica was deposed; stepping down, not retrying");
                self.deposed = true;
                self.write_error = Some(e);
            }
            Err(e) => {
                warn!(error = %e, "status not written; retrying on a later pass");
                self.write_error = Some(e);
            }
        }
    }

    /// CAS write of the status, with the journal set or removed (and a finished rollout's
    /// revision added) in the same transaction, behind the leader fence when there is one.
    /// Returns the document written. On a CAS conflict it re-reads the document, merges what
    /// the other writer changed with what this pass changed ([`merge`]) and tries again: it
    /// never overwrites content it has not seen. A refused fence is [`Error::Deposed`], never
    /// retried.
    async fn write<C: ConsulApi>(
        &mut self,
        consul: &C,
        mut status: ProxyStatus,
        journal: Option<&Journal>,
        journal_changed: bool,
    ) -> Result<ProxyStatus> {
        let key = self.status_key.clone();
        let journal_op = if journal_changed {
            let key = self.journal_key.clone();
            Some(match journal {
                Some(journal) => TxnOp::Set {
                    value: encode(&key, journal, false)?,
                    key,
                },
                None => TxnOp::Delete { key },
            })
        } else {
            None
        };
        for _ in 0..3 {
            let mut value = encode(&key, &status, true)?;
            value.extend_from_slice(b"\n");
            let index = self.index.unwrap_or(0);
            let mut ops = vec![TxnOp::Cas {
                key: key.clone(),
                value,
                index,
            }];
            ops.extend(journal_op.clone());
            ops.extend(self.revision.iter().flatten().cloned());
            match self.txn(consul, ops).await {
                Ok(results) => {
                    let written = results
                        .results
                        .iter()
                        .find(|p| p.key == key)
                        .map(|p| p.modify_index);
                    self.index = written.or(Some(index));
                    if written.is_none()
                        && let Err(e) = self.read_index(consul).await
                    {
                        // The write went through; the next one conflicts on the stale index
                        // and re-reads it then.
                        debug!(error = %e, "the status index could not be re-read after a write");
                    }
                    return Ok(status);
                }
                Err(e) if e.is_deposed() => return Err(Error::Deposed { key, source: e }),
                Err(e) if e.is_conflict() => {
                    debug!("status CAS conflict; re-reading and merging");
                    status = self.merge_theirs(consul, &status).await?;
                }
                Err(leader::Error::Write(source)) => {
                    return Err(Error::WriteStatus { key, source });
                }
                Err(e) => return Err(Error::Deposed { key, source: e }),
            }
        }
        Err(Error::StatusConflict { key })
    }

    /// One transaction, behind the fence when this replica leads under election.
    async fn txn<C: ConsulApi>(
        &self,
        consul: &C,
        ops: Vec<TxnOp>,
    ) -> std::result::Result<TxnResults, leader::Error> {
        match &self.fence {
            Some(fence) => fence.txn(consul, ops).await,
            None => consul.txn(ops).await.map_err(leader::Error::Write),
        }
    }

    /// After a CAS conflict: reads the document another writer left, and returns `ours` merged
    /// onto it. What we last wrote is the merge base; the document read becomes the new base
    /// and its index the next CAS index.
    async fn merge_theirs<C: ConsulApi>(
        &mut self,
        consul: &C,
        ours: &ProxyStatus,
    ) -> Result<ProxyStatus> {
        let pair = read_key(consul, &self.status_key, "the status document").await?;
        let (theirs, index) = match pair {
            Some(pair) => {
                let theirs = serde_json::from_slice::<ProxyStatus>(&pair.value)
                    .unwrap_or_else(|_| salvage(&pair.value).0);
                (theirs, pair.modify_index)
            }
            None => (ProxyStatus::default(), 0),
        };
        let (merged, contested) = merge(&self.written, ours, &theirs);
        if !contested.is_empty() {
            warn!(fields = ?contested, "another writer changed the status document; on the fields this pass also changed, the pass's newer observation is kept");
        }
        self.written = theirs;
        self.index = Some(index);
        Ok(merged)
    }

    async fn read_index<C: ConsulApi>(&mut self, consul: &C) -> Result<()> {
        let pair = read_key(consul, &self.status_key, "the status document").await?;
        self.index = Some(pair.map_or(0, |p| p.modify_index));
        Ok(())
    }
}

/// JSON of a document the store writes. An encoding failure is an error, never an empty value:
/// an empty CAS write would erase the status, an empty journal would lose the rollout.
fn encode<T: serde::Serialize>(key: &str, value: &T, pretty: bool) -> Result<Vec<u8>> {
    let encoded = if pretty {
        serde_json::to_vec_pretty(value)
    } else {
        serde_json::to_vec(value)
    };
    encoded.map_err(|source| Error::Encode {
        key: key.to_owned(),
        source,
    })
}

/// Three-way merge of the status document at the level of its top-level fields: a field this
/// pass did not change (`ours` equals `base`) takes the other writer's value (`theirs`), a
/// field only this pass changed takes ours. Where both changed a field, the pass counter takes
/// the larger, the history keeps the entries of both, and any other field takes ours (the
/// newer observation); those fields are returned, for the log.
fn merge(
    base: &ProxyStatus,
    ours: &ProxyStatus,
    theirs: &ProxyStatus,
) -> (ProxyStatus, Vec<String>) {
    use serde_json::{Map, Value};
    let object = |s: &ProxyStatus| match serde_json::to_value(s) {
        Ok(Value::Object(map)) => map,
        _ => Map::new(),
    };
    let (base_map, ours_map, theirs_map) = (object(base), object(ours), object(theirs));
    let mut keys: Vec<&String> = ours_map.keys().chain(theirs_map.keys()).collect();
    keys.sort();
    keys.dedup();
    let mut merged = Map::new();
    let mut contested = Vec::new();
    for key in keys {
        let (b, o, t) = (base_map.get(key), ours_map.get(key), theirs_map.get(key));
        let value = if o == b {
            t
        } else if t == b || t == o {
            o
        } else {
            if key != "updatedAt" {
                contested.push(key.clone());
            }
            o
        };
        if let Some(value) = value {
            merged.insert(key.clone(), value.clone());
        }
    }
    let mut status: ProxyStatus =
        serde_json::from_value(Value::Object(merged)).unwrap_or_else(|_| ours.clone());
    if contested.iter().any(|f| f == "passes") {
        status.passes = ours.passes.max(theirs.passes);
    }
    if contested.iter().any(|f| f == "history") {
        let mut history = theirs.history.clone();
        for entry in &ours.history {
            if !history.contains(entry) {
                history.push(entry.clone());
            }
        }
        history.sort_by(|a, b| a.started_at.cmp(&b.started_at));
        let excess = history.len().saturating_sub(spec::status::HISTORY_LIMIT);
        history.drain(..excess);
        status.history = history;
    }
    (status, contested)
}

/// Every top-level field of an unreadable status document that still reads on its own, and the
/// names of those kept and lost.
fn salvage(value: &[u8]) -> (ProxyStatus, Vec<String>, Vec<String>) {
    let Ok(serde_json::Value::Object(fields)) = serde_json::from_slice(value) else {
        return (
            ProxyStatus::default(),
            Vec::new(),
            vec!["everything (not a JSON object)".to_owned()],
        );
    };
    let mut good = serde_json::Map::new();
    let (mut kept, mut lost) = (Vec::new(), Vec::new());
    for (name, field) in fields {
        let mut candidate = good.clone();
        candidate.insert(name.clone(), field);
        if serde_json::from_value::<ProxyStatus>(serde_json::Value::Object(candidate.clone()))
            .is_ok()
        {
            good = candidate;
            kept.push(name);
        } else {
            lost.push(name);
        }
    }
    let status = serde_json::from_value(serde_json::Value::Object(good)).unwrap_or_default();
    (status, kept, lost)
}

fn list(names: &[String]) -> String {
    if names.is_empty() {
        "nothing".to_owned()
    } else {
        names.join(", ")
    }
}

impl<C, N, P> Operator<C, N, P>
where
    C: ConsulApi + 'static,
    N: NomadApi,
    P: ProxyProbe,
{
    /// Records one pass in the status store, with the journal of the phase now.
    pub(super) async fn report(&mut self, pass: &Pass<'_>) {
        let journal = self.phase.journal(Instant::now(), SystemTime::now());
        self.store.record(&*self.consul, pass, journal).await;
        self.park_if_deposed().await;
    }

    /// Whether `phase` would write another journal than the one last written.
    pub(super) fn journal_changed(&self, phase: &Phase) -> bool {
        let next = phase.journal(Instant::now(), SystemTime::now());
        self.store.journal_changed(next.as_ref())
    }

    /// At start: reads the status document and the journal, and resumes a rollout an earlier
    /// operator left in flight when its journal is trusted.
    pub(super) async fn load_status(&mut self) -> Result<()> {
        let Some(value) = self.store.read(&*self.consul).await? else {
            return Ok(());
        };
        let parsed = serde_json::from_slice::<Journal>(&value)
            .map_err(|e| e.to_string())
            .and_then(|j| {
                j.check(&self.config.owner, &self.config.kv_root())
                    .map(|()| j)
                    .map_err(|e| e.to_string())
            });
        let parsed = match parsed {
            Ok(journal) => self.trust_journal(journal).await?,
            Err(e) => Err(e),
        };
        match parsed {
            Ok(journal) if self.phase.is_at_rest() => {
                info!(
                    digest = %short(&journal.change.digest),
                    kind = journal.change.kind(),
                    "resuming the rollout an earlier operator left in flight"
                );
                self.phase = Phase::resume(journal.clone(), Instant::now(), SystemTime::now());
                self.store.resumed(journal);
            }
            Ok(_) => {}
            Err(e) => {
                // Without it the plan still re-verifies what runs before calling it Ready.
                warn!(error = %e, "the rollout journal is unreadable or untrusted; it is dropped and what runs is verified again");
                self.store.discard_journal();
            }
        }
        Ok(())
    }

    /// The checks on a journal that need the document and Nomad: it must be about the job the
    /// document names (when the document still loads), and that job, if it exists, must carry
    /// our owner Meta before anything registers or reverts it. `Err`: Nomad or Consul could not
    /// be read (back off); `Ok(Err)`: the journal is not trusted.
    async fn trust_journal(
        &self,
        journal: Journal,
    ) -> Result<std::result::Result<Journal, String>> {
        let job_id = journal.change.job_id.clone();
        let key = self.config.config_key();
        let doc = read_key(&*self.consul, &key, "the config key").await?;
        // A deleted or broken document does not stop a rollout in flight (it runs on its own
        // terms), so only a document that loads can contradict the journal.
        // Either handover slot of the document's job (`<id>`, `<id>-b`) is its job.
        if let Some(spec) = doc.and_then(|p| spec::load(&p.value).ok())
            && crate::render::nomad_job::Slot::of(&job_id, &spec.job().id).is_none()
        {
            return Ok(Err(format!(
                "it rolls out job {job_id:?}, but the document names job {:?}",
                spec.job().id
            )));
        }
        let (job, _) = self
            .nomad
            .job_read(&job_id, QueryOptions::NOW)
            .await
            .map_err(|source| Error::Nomad {
                what: format!("the proxy job {job_id}"),
                source,
            })?;
        if let Some(job) = job
            && job.meta.get(META_OWNER) != Some(&self.config.owner)
        {
            return Ok(Err(format!(
                "job {job_id:?} does not carry our {META_OWNER} Meta"
            )));
        }
        Ok(Ok(journal))
    }
}

mod served;

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::panic)] // tests fail loudly
mod tests;
