//! The Nomad HTTP API and the local executor that runs raw_exec/exec tasks as real processes.
//!
//! Layout: `jobspec` decodes and canonicalizes jobs as a real server does; `view` reads them with
//! typed, checked accessors; `store` holds the state (jobs, versions, evaluations, deployments,
//! allocations, services, client nodes) under one growing index; `http` serves the API with
//! blocking queries; `executor` runs allocations as child processes on their node with restart
//! policy, templates, service checks and health; `events` serves `/v1/event/stream`; `diff`
//! builds plan/version diffs; `filter` evaluates the go-bexpr forms clients send; `reaper` kills
//! task processes a dead twin left behind; `acl` parses and decides Nomad ACL policies
//! (namespace capabilities, `node`/`agent`, and `variables` paths).
//!
//! Variables (`/v1/var/:path`, `/v1/vars`, `store/variables.rs`) are kept in plain text (no
//! keyring). The executor reads a job's variables for its templates (`nomadVar`) as the client
//! does with the task's identity; a template whose variable is missing fails the task start
//! instead of blocking it (`executor/template.rs`).
//! `submit` is what a submitted job goes through before the store (decode, canonicalize,
//! validate), on the HTTP paths and in process; `embedded` serves the store in process, without
//! HTTP or task processes, on the caller's clock (the operator's in-memory `FakeNomad`).
//!
//! Client nodes: `NomadConfig::nodes` of them, each on its own loopback address (see
//! `store/nodes.rs`); the executor runs every allocation's tasks locally on its node.
//!
//! Not implemented (answered with an explicit error, never silently accepted): canary
//! deployments. A job whose update block has `Canary > 0` is refused with a 500
//! "hashistack-twin: canary deployments are not implemented ..." on register and plan, so
//! `/v1/deployment/promote/:id` on an active deployment answers Nomad's "no canaries to promote".

pub mod acl;
mod diff;
pub mod embedded;
mod events;
mod executor;
mod filter;
mod http;
mod jobspec;
mod reaper;
mod store;
pub mod submit;
mod util;
mod view;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};

use store::{EventBatch, Plan, Store};

/// Settings of the Nomad side.
#[derive(Debug, Clone)]
pub struct NomadConfig {
    /// The Consul HTTP API that services with `provider = "consul"` register in, as a Nomad agent does.
    pub consul_http_addr: SocketAddr,
    /// Token every request must carry, when set.
    pub acl_token: Option<String>,
    /// Directory for persisted state.
    pub data_dir: Option<PathBuf>,
    /// `true` behaves like Nomad >= 1.11 (system jobs with an update block get deployments);
    /// `false` like 1.10 (no system-job deployments) and reports that version.
    pub system_deployments: bool,
    /// How many client nodes the twin runs (at least one). Each runs its allocations' tasks as
    /// local processes on its own loopback address.
    pub nodes: usize,
    /// Client tokens that exist from the start, with the ACL policies attached to them. They
    /// take effect when `acl_token` (the management token) is set.
    pub acl_tokens: Vec<AclTokenSeed>,
    /// The `PATH` the client agent runs with, which its `raw_exec` tasks inherit (`None`: the
    /// twin's own). A test that installs binaries outside the system path sets it, as an
    /// operator sets the Nomad agent's environment.
    pub client_path: Option<String>,
}

/// A client token the twin knows from the start.
#[derive(Debug, Clone, Default)]
pub struct AclTokenSeed {
    /// Its name.
    pub name: String,
    /// The secret a request carries (`X-Nomad-Token`).
    pub secret_id: String,
    /// Its policies: name and rules (Nomad's HCL or JSON policy document).
    pub policies: Vec<(String, String)>,
}

impl AclTokenSeed {
    /// Checks every policy document as Nomad would before it stores it.
    pub fn validate(&self) -> Result<(), acl::PolicyError> {
        self.policies
            .iter()
            .try_for_each(|(_, rules)| acl::parse(rules).map(|_| ()))
    }
}

impl NomadConfig {
    /// The Nomad version the agent and node report for this mode.
    pub fn version(&self) -> &'static str {
        if self.system_deployments {
            "1.11.2"
        } else {
            "1.10.5"
        }
    }
}

/// Errors of the Nomad side that are not API answers.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The state file could not be written.
    #[error("failed to persist nomad state: {0}")]
    Persist(#[source] std::io::Error),
    /// The state file could not be encoded.
    #[error("failed to encode nomad state: {0}")]
    Encode(#[source] serde_json::Error),
}

/// Shared state of the Nomad API and its executor.
#[derive(Debug, Clone)]
pub struct NomadState {
    inner: Arc<Inner>,
}

/// Everything the handlers and the executor share.
#[derive(Debug)]
pub(crate) struct Inner {
    pub config: NomadConfig,
    store: Mutex<Store>,
    persist_lock: Mutex<u64>,
    pub changed: tokio::sync::watch::Sender<u64>,
    pub events: tokio::sync::broadcast::Sender<Arc<EventBatch>>,
    pub executor: executor::Executor,
    pub http: reqwest::Client,
    background: Mutex<Vec<tokio::task::JoinHandle<()>>>,
}

const STATE_FILE: &str = "nomad.json";

impl NomadState {
    /// Creates the state (restoring it from `data_dir` when present). Jobs restored from disk get
    /// fresh allocations: processes do not survive a restart of the twin.
    pub fn new(config: NomadConfig) -> NomadState {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let restored = config
            .data_dir
            .as_ref()
            .and_then(|d| std::fs::read(d.join(STATE_FILE)).ok())
            .and_then(|bytes| serde_json::from_slice::<store::Persisted>(&bytes).ok());
        let mut store = match restored {
            Some(p) => Store::restore(p),
            None => Store::new(uuid::Uuid::new_v4().to_string()),
        };
        store.system_deployments = config.system_deployments;
        store.nomad_version = config.version();
        store.set_node_count(config.nodes);
        seed_acl(&mut store, &config);
        let temporary = config.data_dir.is_none();
        let base_dir = match &config.data_dir {
            Some(d) => d.join("nomad-allocs"),
            None => std::env::temp_dir().join(format!(
                "{}{}",
                reaper::SCRATCH_PREFIX,
                uuid::Uuid::new_v4()
            )),
        };
        let (changed, _) = tokio::sync::watch::channel(store.index);
        let (events, _) = tokio::sync::broadcast::channel(1024);
        let http = reqwest::Client::builder()
            .timeout(std::time::Duration::from_secs(10))
            .build()
            .unwrap_or_else(|_| reqwest::Client::new());
        let inner = Arc::new(Inner {
            config,
            store: Mutex::new(store),
            persist_lock: Mutex::new(0),
            changed,
            events,
            executor: executor::Executor::new(base_dir, temporary),
            http,
            background: Mutex::new(Vec::new()),
        });
        let state = NomadState { inner };
        state.start_background();
        state
    }

    fn start_background(&self) {
        let Ok(handle) = tokio::runtime::Handle::try_current() else {
            return;
        };
        // Jobs restored from disk are placed again, as a fresh client would after losing its allocs.
        let restored: Vec<(String, String)> = self.inner.read(|st| {
            st.jobs
                .keys()
                .filter(|k| {
                    st.job(&k.0, &k.1)
                        .is_some_and(|j| !view::View::job(j).bool("Stop"))
                })
                .cloned()
                .collect()
        });
        for (ns, id) in restored {
            let plan = self
                .inner
                .write(|st| st.replace_allocs_after_restore(&ns, &id));
            self.inner.executor.apply(&self.inner, plan);
        }
        let weak = Arc::downgrade(&self.inner);
        let deadline_watcher = handle.spawn(async move {
            loop {
                tokio::time::sleep(std::time::Duration::from_millis(200)).await;
                let Some(inner) = weak.upgrade() else {
                    return;
                };
                let plan = inner.write(|st| st.check_deadlines());
                inner.executor.apply(&inner, plan);
            }
        });
        self.inner.lock_background().push(deadline_watcher);
    }

    /// The HTTP routes of the Nomad API.
    pub fn router(&self) -> axum::Router {
        http::router(self.inner.clone())
    }

    /// Stops every task process the executor started (interrupt, then kill after each task's
    /// `KillTimeout`), deregisters their services and ends background work.
    pub async fn shutdown(&self) {
        for task in self.inner.lock_background().drain(..) {
            task.abort();
        }
        self.inner.executor.shutdown().await;
        self.inner.executor.remove_scratch_dir();
    }
}

/// The management token and the seeded client tokens with their policies. Tokens restored from
/// the data dir are kept; a seed adds only the tokens whose secret is not known yet.
fn seed_acl(store: &mut Store, config: &NomadConfig) {
    let Some(management) = &config.acl_token else {
        return;
    };
    if store.token_by_secret(management).is_none() {
        let created = store.create_acl_token(
            "Bootstrap Token",
            "management",
            Vec::new(),
            true,
            Some(management.clone()),
        );
        if let Err(e) = created {
            tracing::error!(error = %e.message, "nomad management token not created");
        }
    }
    for seed in &config.acl_tokens {
        let mut names = Vec::new();
        for (name, rules) in &seed.policies {
            match store.upsert_acl_policy(name, "", rules) {
                Ok(_) => names.push(name.clone()),
                Err(e) => {
                    tracing::error!(policy = %name, error = %e.message, "nomad ACL policy refused")
                }
            }
        }
        if store.token_by_secret(&seed.secret_id).is_some() {
            continue;
        }
        let created = store.create_acl_token(
            &seed.name,
            "client",
            names,
            false,
            Some(seed.secret_id.clone()),
        );
        if let Err(e) = created {
            tracing::error!(token = %seed.name, error = %e.message, "nomad ACL token refused");
        }
    }
}

impl Inner {
    fn lock_store(&self) -> MutexGuard<'_, Store> {
        self.store
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn lock_background(&self) -> MutexGuard<'_, Vec<tokio::task::JoinHandle<()>>> {
        self.background
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Reads the state.
    pub fn read<R>(&self, f: impl FnOnce(&Store) -> R) -> R {
        f(&self.lock_store())
    }

    /// Changes the state, then publishes its events, wakes blocking queries and persists.
    pub fn write<R>(&self, f: impl FnOnce(&mut Store) -> R) -> R {
        let (result, batch, index, snapshot) = {
            let mut st = self.lock_store();
            let before = st.index;
            let result = f(&mut st);
            let batch = st.take_events();
            let snapshot = if self.config.data_dir.is_some() && st.index != before {
                Some(st.persisted())
            } else {
                None
            };
            st.jobs_dirty = false;
            (result, batch, st.index, snapshot)
        };
        if let Some(snapshot) = snapshot
            && let Err(e) = self.persist(&snapshot)
        {
            tracing::warn!(error = %e, "nomad state not persisted");
        }
        if let Some(batch) = batch {
            let _ = self.events.send(Arc::new(batch));
        }
        self.changed.send_replace(index);
        result
    }

    fn persist(&self, snapshot: &store::Persisted) -> Result<(), Error> {
        let Some(dir) = &self.config.data_dir else {
            return Ok(());
        };
        let mut last = self.persist_lock.lock().unwrap_or_else(|p| p.into_inner());
        // Writers race outside the store lock; never let an older snapshot replace a newer one.
        if snapshot.index <= *last {
            return Ok(());
        }
        std::fs::create_dir_all(dir).map_err(Error::Persist)?;
        let bytes = serde_json::to_vec(snapshot).map_err(Error::Encode)?;
        let tmp = dir.join(format!("{STATE_FILE}.tmp"));
        std::fs::write(&tmp, bytes).map_err(Error::Persist)?;
        std::fs::rename(&tmp, dir.join(STATE_FILE)).map_err(Error::Persist)?;
        *last = snapshot.index;
        Ok(())
    }

    /// Runs a state change that produces executor work, and hands the work to the executor.
    pub fn write_and_apply<R>(self: &Arc<Self>, f: impl FnOnce(&mut Store) -> (R, Plan)) -> R {
        let (result, plan) = self.write(f);
        self.executor.apply(self, plan);
        result
    }
}
