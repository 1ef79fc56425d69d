//! Loading the document: read the config key, parse and validate it, admit it (the privilege
//! boundary of [`crate::admission`]), resolve its references (basic-auth users from KV or a
//! file) and render it. The users key is watched like the config key ([`UsersWatch`]).

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
use crate::render::{RenderContext, Rendered};
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
        let users = match self.basic_auth_users(&spec).await {
            Ok(users) => users,
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
        };
        let ctx = RenderContext {
            prefix: self.config.prefix.clone(),
            owner: self.config.owner.clone(),
            basic_auth_users: users,
        };
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

    pub(super) async fn basic_auth_users(
        &self,
        spec: &ValidatedSpec,
    ) -> Result<Option<Vec<String>>> {
        let Some(auth) = spec.basic_auth() else {
            self.users.follow(None);
            return Ok(None);
        };
        let text = match &auth.users_from {
            UsersFrom::ConsulKey(key) => {
                self.users.follow(Some(key));
                let what = format!("KV key {key}");
                match self.consul.kv_get(key, QueryOptions::NOW).await {
                    Ok((Some(pair), _)) => {
                        String::from_utf8(pair.value).map_err(|_| Error::Secret {
                            reference: what.clone(),
                            reason: "not UTF-8".into(),
                        })?
                    }
                    Ok((None, _)) => {
                        return Err(Error::Secret {
                            reference: what,
                            reason: "absent".into(),
                        });
                    }
                    Err(source) => return Err(Error::Consul { what, source }),
                }
            }
            UsersFrom::File(path) => {
                self.users.follow(None);
                let real = match &self.config.limits {
                    Some(limits) => match limits.confine_users_file(path).await {
                        Ok(real) => real,
                        Err(admission::Error::Refused(refusal)) => {
                            return Err(Error::Refused(refusal));
                        }
                        Err(e) => {
                            return Err(Error::Secret {
                                reference: format!("file {path}"),
                                reason: e.to_string(),
                            });
                        }
                    },
                    None => path.into(),
                };
                tokio::fs::read_to_string(&real)
                    .await
                    .map_err(|e| Error::Secret {
                        reference: format!("file {path}"),
                        reason: e.kind().to_string(),
                    })?
            }
        };
        let users = text
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
            .map(str::to_owned)
            .collect();
        Ok(Some(users))
    }
}

/// The basic-auth users key the loaded document references, shared with the task that watches
/// it: a rotation or revocation starts a pass within the debounce, not at the next resync.
#[derive(Debug)]
pub(super) struct UsersWatch {
    key: watch::Sender<Option<String>>,
    /// Set by the watcher when the key changed; cleared when a pass reads it.
    moved: Arc<AtomicBool>,
}

impl Default for UsersWatch {
    fn default() -> Self {
        Self {
            key: watch::channel(None).0,
            moved: Arc::new(AtomicBool::new(false)),
        }
    }
}

impl UsersWatch {
    /// Watches `key` from now on (`None`: nothing to watch). A pass is about to read it.
    fn follow(&self, key: Option<&String>) {
        self.moved.store(false, Ordering::SeqCst);
        self.key.send_if_modified(|current| {
            let changed = current.as_ref() != key;
            if changed {
                *current = key.cloned();
            }
            changed
        });
    }

    /// Whether the users key changed since a pass last read it.
    pub(super) fn moved(&self) -> bool {
        self.moved.load(Ordering::SeqCst)
    }

    /// The watcher task: blocking queries on whichever key the document references now (the
    /// config watch's own loop, [`watch_config`]); each change marks the key moved and signals
    /// `changes` (the config watch's channel).
    pub(super) fn watcher<C: ConsulApi + 'static>(
        &self,
        consul: Arc<C>,
        wait: Duration,
        changes: watch::Sender<u64>,
    ) -> impl std::future::Future<Output = ()> + Send + 'static {
        let mut keys = self.key.subscribe();
        let moved = Arc::clone(&self.moved);
        async move {
            loop {
                let current = keys.borrow_and_update().clone();
                let Some(key) = current else {
                    if keys.changed().await.is_err() {
                        return;
                    }
                    continue;
                };
                let (tx, mut seen) = watch::channel(0u64);
                let watching = watch_config(Arc::clone(&consul), key, wait, tx, WatchHooks::none());
                tokio::pin!(watching);
                loop {
                    tokio::select! {
                        changed = keys.changed() => {
                            if changed.is_err() {
                                return;
                            }
                            break;
                        }
                        () = &mut watching => return,
                        changed = seen.changed() => {
                            if changed.is_err() {
                                return;
                            }
                            let index = *seen.borrow_and_update();
                            debug!(index, "basic-auth users key changed");
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
