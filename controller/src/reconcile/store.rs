//! The status store: the status document (`<prefix>/status`), the write-ahead rollout journal
//! (`<prefix>/rollout`) and the CAS transaction that writes both.
//!
//! The store keeps two copies of the status: what the operator knows (moved on by every pass,
//! whether or not its write goes through, so a lost write never makes it forget a failed digest)
//! and what was last written (a pass writes only when the two differ, so an idle operator writes
//! nothing). The journal is written in the same transaction as the status, and only when its
//! stage changes.

use std::time::SystemTime;

use tokio::time::Instant;
use tracing::{debug, info, warn};

use super::{Config, Error, Operator, Result, read_key, short};
use crate::consul::{ConsulApi, TxnOp};
use crate::nomad::NomadApi;
use crate::proxy::probe::ProxyProbe;
use crate::render::META_OWNER;
use crate::rollout::{Journal, Phase};
use crate::spec::{self, status::ProxyStatus};
use crate::status::{self, Pass};
use crate::transport::QueryOptions;

/// The status document and the journal as this operator knows and last wrote them.
#[derive(Debug)]
pub(super) struct StatusStore {
    status_key: String,
    journal_key: String,
    /// What the operator knows: updated every pass, whether or not the write goes through.
    pub(super) status: ProxyStatus,
    /// The document as last written (or read at start); a pass writes when `status` differs.
    written: ProxyStatus,
    /// The in-flight journal as last written (or read at start).
    journal_written: Option<Journal>,
    /// The journal key holds something unreadable that the next write must remove.
    journal_garbage: bool,
    /// Why the last status write failed, until one succeeds.
    pub(super) write_error: Option<Error>,
    /// ModifyIndex of the status key (the CAS index of the next write); `None` before the
    /// first read.
    index: Option<u64>,
}

impl StatusStore {
    /// A store that has read nothing yet.
    pub(super) fn new(config: &Config) -> Self {
        Self {
            status_key: config.status_key(),
            journal_key: config.journal_key(),
            status: ProxyStatus::default(),
            written: ProxyStatus::default(),
            journal_written: None,
            journal_garbage: false,
            write_error: None,
            index: None,
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
        self.status = status::next(&self.status, pass, SystemTime::now());
        self.flush(consul, journal, false).await;
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
        self.status.updated_at = Some(status::rfc3339(SystemTime::now()));
        let status = self.status.clone();
        match self
            .write(consul, &status, journal.as_ref(), journal_changed)
            .await
        {
            Ok(()) => {
                self.written = status;
                self.journal_written = journal;
                self.journal_garbage = false;
                self.write_error = None;
            }
            Err(e) => {
                warn!(error = %e, "status not written; retrying on a later pass");
                self.write_error = Some(e);
            }
        }
    }

    /// CAS write of the status, with the journal set or removed in the same transaction; on a
    /// conflict re-reads the index and tries again (our content wins: the operator is the status
    /// document's only writer, a conflict means a stale index).
    async fn write<C: ConsulApi>(
        &mut self,
        consul: &C,
        status: &ProxyStatus,
        journal: Option<&Journal>,
        journal_changed: bool,
    ) -> Result<()> {
        let key = self.status_key.clone();
        let mut value = encode(&key, status, true)?;
        value.push(b'\n');
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
            let index = self.index.unwrap_or(0);
            let mut ops = vec![TxnOp::Cas {
                key: key.clone(),
                value: value.clone(),
                index,
            }];
            ops.extend(journal_op.clone());
            match consul.txn(ops).await {
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
                    return Ok(());
                }
                Err(e) if e.is_conflict() => {
                    debug!("status CAS conflict; re-reading its index");
                    self.read_index(consul).await?;
                }
                Err(source) => return Err(Error::WriteStatus { key, source }),
            }
        }
        Err(Error::StatusConflict { key })
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
        if let Some(spec) = doc.and_then(|p| spec::load(&p.value).ok())
            && spec.job().id != job_id
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

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::panic)] // tests fail loudly
mod tests {
    use super::*;

    /// A value whose serialisation fails, as a status or journal never should.
    struct Unencodable;

    impl serde::Serialize for Unencodable {
        fn serialize<S: serde::Serializer>(&self, _: S) -> std::result::Result<S::Ok, S::Error> {
            Err(serde::ser::Error::custom("cannot encode"))
        }
    }

    #[test]
    fn a_value_that_cannot_be_encoded_is_an_error_never_an_empty_document() {
        for pretty in [true, false] {
            let err = encode("po/status", &Unencodable, pretty).unwrap_err();
            assert!(matches!(err, Error::Encode { .. }), "{err}");
            assert!(!err.is_retryable());
            assert!(err.to_string().contains("po/status"), "{err}");
        }
    }

    #[test]
    fn salvage_keeps_every_field_that_still_reads_and_names_the_rest() {
        let (status, kept, lost) = salvage(
            br#"{"failedDigest": "abc", "history": "not a list", "lastAppliedDigest": "def"}"#,
        );
        assert_eq!(status.failed_digest.as_deref(), Some("abc"));
        assert_eq!(status.last_applied_digest.as_deref(), Some("def"));
        assert_eq!(kept, vec!["failedDigest", "lastAppliedDigest"]);
        assert_eq!(lost, vec!["history"]);
        let (status, kept, lost) = salvage(b"<html>");
        assert_eq!(status, ProxyStatus::default());
        assert!(kept.is_empty());
        assert_eq!(lost.len(), 1);
    }
}
