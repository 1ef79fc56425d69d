//! Loading the document: read the config key, parse and validate it, admit it (the privilege
//! boundary of [`crate::admission`]), resolve its references (basic-auth users from KV or a
//! file, for the entry point and each policy set) and render it. The users keys are watched like
//! the config key ([`UsersWatch`]).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio::sync::watch;
use tracing::{debug, info};

use super::run::{WatchHooks, watch_config};
use super::store::Document;
use super::{Action, Error, Facts, Operator, Result, read_key};
use crate::admission;
use crate::consul::ConsulApi;
use crate::nomad::NomadApi;
use crate::proxy::probe::ProxyProbe;
use crate::render::{RenderContext, Rendered, UsersReference, users_references};
use crate::spec::{self, FieldError, UsersFrom, ValidatedSpec};
use crate::status::Report;
use crate::transport::QueryOptions;

/// Everything a pass derives from the document.
pub(super) struct Loaded {
    pub(super) spec: ValidatedSpec,
    pub(super) rendered: Rendered,
    pub(super) index: u64,
}

impl<C, N, P> Operator<C, N, P>
where
    C: ConsulApi + 'static,
    N: NomadApi,
    P: ProxyProbe,
{
    /// Reads, parses, validates and renders the document. `Ok(None)`: nothing to act on (the
    /// status says why); `Err`: back off.
    pub(super) async fn load(&mut self) -> Result<Option<Loaded>, Action> {
        let key = self.config.config_key();
        let pair = match read_key(&*self.consul, &key, "the config key").await {
            Ok(pair) => {
                self.last_pass_index = pair.as_ref().map_or(0, |p| p.modify_index);
                pair
            }
            Err(e) => {
                return Err(self.observation_failed(&e, None).await);
            }
        };
        let Some(pair) = pair else {
            let reason = format!("the config key {key} is absent");
            self.report_plain(0, Report::NoConfig { reason: &reason })
                .await;
            return Ok(None);
        };
        if pair.value.iter().all(u8::is_ascii_whitespace) {
            let reason = format!("the config key {key} is empty");
            self.report_plain(pair.modify_index, Report::NoConfig { reason: &reason })
                .await;
            return Ok(None);
        }
        let spec = match spec::load(&pair.value) {
            Ok(spec) => spec,
            Err(e) => {
                let errors = e.field_errors();
                info!(
                    errors = errors.len(),
                    "the config document is invalid; nothing is changed"
                );
                self.report_plain(pair.modify_index, Report::Invalid { errors: &errors })
                    .await;
                return Ok(None);
            }
        };
        if let Some(limits) = &self.config.limits {
            let errors = admission::admit(&spec, limits);
            if !errors.is_empty() {
                info!(
                    errors = errors.len(),
                    "the config document is outside the operator's limits; nothing is changed"
                );
                self.report_plain(pair.modify_index, Report::Invalid { errors: &errors })
                    .await;
                return Ok(None);
            }
        }
        let mut ctx = RenderContext {
            prefix: self.config.prefix.clone(),
            owner: self.config.owner.clone(),
            ..RenderContext::default()
        };
        match self.read_users(&spec, &mut ctx).await {
            Ok(()) => {}
            Err(Error::Refused(refusal)) => {
                let errors = vec![refusal];
                self.report_plain(pair.modify_index, Report::Invalid { errors: &errors })
                    .await;
                return Ok(None);
            }
            Err(e) => {
                let facts = Facts {
                    index: pair.modify_index,
                    digest: Some(spec.digest().to_owned()),
                    proxy: Some(spec.proxy()),
                    job_version: None,
                    good_job: None,
                    warnings: spec.warnings().to_vec(),
                };
                return Err(self.observation_failed(&e, Some(&facts)).await);
            }
        }
        match self.proxies.driver(spec.proxy()).render(&spec, &ctx) {
            Ok(rendered) => {
                self.store.document =
                    String::from_utf8(pair.value.clone())
                        .ok()
                        .map(|text| Document {
                            digest: spec.digest().to_owned(),
                            index: pair.modify_index,
                            text,
                        });
                Ok(Some(Loaded {
                    spec,
                    rendered,
                    index: pair.modify_index,
                }))
            }
            Err(e) => {
                // The same document always renders the same way: report it like a validation
                // error and wait for an edit.
                let errors = vec![FieldError::new("", e.to_string())];
                self.report_plain(pair.modify_index, Report::Invalid { errors: &errors })
                    .await;
                Ok(None)
            }
        }
    }

    /// Reads the users of every basic-auth reference of `spec` ([`users_references`]: the
    /// entry point's and each policy set's) into `ctx`, and has [`UsersWatch`] follow every
    /// Consul key among them from now on.
    pub(super) async fn read_users(
        &self,
        spec: &ValidatedSpec,
        ctx: &mut RenderContext,
    ) -> Result<()> {
        let references = users_references(spec);
        self.users.follow(
            references
                .iter()
                .filter_map(|r| match r.from {
                    UsersFrom::ConsulKey(key) => Some(key.clone()),
                    UsersFrom::File(_) => None,
                })
                .collect(),
        );
        for r in &references {
            let users = self.read_users_of(r).await?;
            ctx.set_users(&r.owner, users);
        }
        Ok(())
    }

    /// The `user:hash` lines behind one reference. Errors name the reference and its field,
    /// never the content.
    async fn read_users_of(&self, r: &UsersReference<'_>) -> Result<Vec<String>> {
        let secret = |reason: String| Error::Secret {
            reference: format!("{} ({})", r.describe(), r.field),
            reason,
        };
        let text = match r.from {
            UsersFrom::ConsulKey(key) => match self.consul.kv_get(key, QueryOptions::NOW).await {
                Ok((Some(pair), _)) => {
                    String::from_utf8(pair.value).map_err(|_| secret("not UTF-8".into()))?
                }
                Ok((None, _)) => return Err(secret("absent".into())),
                Err(source) => {
                    return Err(Error::Consul {
                        what: format!("KV key {key} ({})", r.field),
                        source,
                    });
                }
            },
            UsersFrom::File(path) => {
                let real = match &self.config.limits {
                    Some(limits) => match limits.confine_users_file(path).await {
                        Ok(real) => real,
                        Err(admission::Error::Refused(mut refusal)) => {
                            // The confinement names the entry point's field; say whose it is.
                            refusal.path = format!("{}.file", r.field);
                            return Err(Error::Refused(refusal));
                        }
                        Err(e) => return Err(secret(e.to_string())),
                    },
                    None => path.into(),
                };
                tokio::fs::read_to_string(&real)
                    .await
                    .map_err(|e| secret(e.kind().to_string()))?
            }
        };
        Ok(text
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
            .map(str::to_owned)
            .collect())
    }
}

/// The basic-auth users keys the loaded document references (the entry point's and every
/// policy set's), shared with the task that watches them: a rotation or revocation in any of them
/// starts a pass within the debounce, not at the next resync.
#[derive(Debug)]
pub(super) struct UsersWatch {
    keys: watch::Sender<Vec<String>>,
    /// Set by the watcher when a key changed; cleared when a pass reads them.
    moved: Arc<AtomicBool>,
}

impl Default for UsersWatch {
    fn default() -> Self {
        Self {
            keys: watch::channel(Vec::new()).0,
            moved: Arc::new(AtomicBool::new(false)),
        }
    }
}

impl UsersWatch {
    /// Watches `keys` from now on (empty: nothing to watch). A pass is about to read them.
    fn follow(&self, mut keys: Vec<String>) {
        keys.sort();
        keys.dedup();
        self.moved.store(false, Ordering::SeqCst);
        self.keys.send_if_modified(|current| {
            let changed = *current != keys;
            if changed {
                *current = keys;
            }
            changed
        });
    }

    /// Whether a users key changed since a pass last read them.
    pub(super) fn moved(&self) -> bool {
        self.moved.load(Ordering::SeqCst)
    }

    /// The watcher task: blocking queries on each key the document references now (the config
    /// watch's own loop, [`watch_config`], once per key); each change marks the keys moved and
    /// signals `changes` (the config watch's channel). A new set of keys restarts the watches.
    pub(super) fn watcher<C: ConsulApi + 'static>(
        &self,
        consul: Arc<C>,
        wait: Duration,
        changes: watch::Sender<u64>,
    ) -> impl std::future::Future<Output = ()> + Send + 'static {
        let mut followed = self.keys.subscribe();
        let moved = Arc::clone(&self.moved);
        async move {
            loop {
                let keys = followed.borrow_and_update().clone();
                if keys.is_empty() {
                    if followed.changed().await.is_err() {
                        return;
                    }
                    continue;
                }
                // Every key's watch reports into one channel: any of them moving is a change.
                let (tx, mut seen) = watch::channel(0u64);
                let watching = futures::future::join_all(keys.into_iter().map(|key| {
                    watch_config(
                        Arc::clone(&consul),
                        key,
                        wait,
                        tx.clone(),
                        WatchHooks::none(),
                    )
                }));
                drop(tx);
                tokio::pin!(watching);
                loop {
                    tokio::select! {
                        changed = followed.changed() => {
                            if changed.is_err() {
                                return;
                            }
                            break;
                        }
                        _ = &mut watching => return,
                        changed = seen.changed() => {
                            if changed.is_err() {
                                return;
                            }
                            let index = *seen.borrow_and_update();
                            debug!(index, "a basic-auth users key changed");
                            moved.store(true, Ordering::SeqCst);
                            if changes.send(index).is_err() {
                                return;
                            }
                        }
                    }
                }
            }
        }
    }
}
