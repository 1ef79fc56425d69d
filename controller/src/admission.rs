//! The document's privilege boundary (issue 11): limits an administrator sets in the operator's
//! own flags, never in the KV document, on what the document may make the cluster do.
//!
//! Whoever can write `<prefix>/config` would otherwise choose the proxy's command or image, its
//! host volumes, namespace and node pool, the directories the proxy reads certificates from and
//! writes ACME state to (on the host itself with `raw_exec`), and — through `usersFrom` — which
//! file on the *operator's* host or which KV key is copied into the proxy's basic-auth users
//! (`/etc/shadow` lines pass the htpasswd check).
//!
//! [`admit`] is pure: it checks a [`ValidatedSpec`] against [`AdminLimits`] and returns every
//! violation as a [`FieldError`] naming the field and the flag that would allow it. A document
//! with any violation is `Invalid` and nothing runs. [`AdminLimits::confine_users_file`] is the
//! one IO step: it re-checks the users file after resolving symlinks, right before reading it.
//!
//! Paths are compared by components and a `..` segment is refused outright, so
//! `/pv/CERTS/../../etc` and `/pv/CERTSX` are both outside `/pv/CERTS`.

use std::collections::BTreeSet;
use std::path::{Component, Path, PathBuf};

use crate::spec::{self, Driver, FieldError, ProxyKind, UsersFrom, ValidatedSpec};

/// Errors of the admission flags (at startup) and of the users-file confinement.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A flag has a value that cannot be a limit.
    #[error("invalid value {value:?} for {flag}: {reason}")]
    InvalidFlag {
        /// The flag, e.g. `--allowed-cert-root`.
        flag: &'static str,
        /// The value given.
        value: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// The users file could not be resolved (missing, unreadable directory).
    #[error("failed to resolve the basic-auth users file {path}: {source}")]
    ResolveUsersFile {
        /// The path from the document.
        path: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The users file resolves (through a symlink) outside `--users-dir`, or reading files is
    /// disabled.
    #[error("{0}")]
    Refused(FieldError),
}

/// Result alias of this module.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// True when the same call may succeed later: a missing users file may appear. A flag or a
    /// refusal will not change without an administrator.
    pub fn is_retryable(&self) -> bool {
        matches!(self, Error::ResolveUsersFile { .. })
    }
}

/// A task driver, as `--allowed-driver` names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, clap::ValueEnum)]
pub enum DriverKind {
    /// `docker`.
    #[value(name = "docker")]
    Docker,
    /// `raw_exec` (unisolated, on the host).
    #[value(name = "raw_exec")]
    RawExec,
    /// `exec` (chroot and cgroups).
    #[value(name = "exec")]
    Exec,
}

impl DriverKind {
    /// The driver of a resolved spec.
    pub fn of(driver: &Driver) -> DriverKind {
        match driver {
            Driver::Docker(_) => DriverKind::Docker,
            Driver::RawExec(_) => DriverKind::RawExec,
            Driver::Exec(_) => DriverKind::Exec,
        }
    }

    /// The name Nomad and the flag use.
    pub fn as_str(self) -> &'static str {
        match self {
            DriverKind::Docker => "docker",
            DriverKind::RawExec => "raw_exec",
            DriverKind::Exec => "exec",
        }
    }
}

/// Wildcard of the namespace, node pool and host volume lists: anything.
pub const ANY: &str = "*";

/// What a document may ask for. Built from [`AdmissionFlags`] at startup.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdminLimits {
    /// Task drivers the document may choose.
    pub drivers: BTreeSet<DriverKind>,
    /// Images per proxy; a pattern ending in `*` allows any completion.
    pub images: Vec<(ProxyKind, String)>,
    /// Commands per proxy for `raw_exec`/`exec`, exactly as the document writes them.
    pub commands: Vec<(ProxyKind, String)>,
    /// Nomad host volume names `job.certVolume` may mount (`*`: any).
    pub host_volumes: BTreeSet<String>,
    /// Directories `tls.certDir`, certificate files and ACME storage must sit in.
    pub cert_roots: Vec<PathBuf>,
    /// Nomad namespaces of the proxy job (`*`: any).
    pub namespaces: BTreeSet<String>,
    /// Nomad node pools of the proxy job (`*`: any).
    pub node_pools: BTreeSet<String>,
    /// KV prefix `usersFrom.consulKey` must sit under; ends with `/`.
    pub secrets_prefix: String,
    /// Directory `usersFrom.file` must sit in; `None` refuses users files.
    pub users_dir: Option<PathBuf>,
}

/// The images the operator pins by default (what a document without `job.driver` resolves
/// to), taken from the spec's own defaulting so there is one source of the pinned versions.
pub fn pinned_images() -> Vec<(ProxyKind, String)> {
    [ProxyKind::Traefik, ProxyKind::Caddy]
        .into_iter()
        .filter_map(|proxy| {
            let doc = format!(
                "apiVersion: {}\nkind: {}\nspec:\n  proxy: {}\n",
                spec::API_VERSION,
                spec::KIND,
                proxy.as_str()
            );
            match spec::load(doc.as_bytes()).ok()?.driver() {
                Driver::Docker(d) => d.image.clone().map(|image| (proxy, image)),
                Driver::RawExec(_) | Driver::Exec(_) => None,
            }
        })
        .collect()
}

impl AdminLimits {
    /// The defaults for `--prefix prefix`: docker only, the pinned images, host volume `certs`,
    /// certificates under `/pv/CERTS`, namespace and node pool `default`, users keys under
    /// `<prefix>/secrets/`, no users files.
    pub fn defaults(prefix: &str) -> AdminLimits {
        AdminLimits {
            drivers: BTreeSet::from([DriverKind::Docker]),
            images: pinned_images(),
            commands: Vec::new(),
            host_volumes: BTreeSet::from(["certs".to_owned()]),
            cert_roots: vec![PathBuf::from("/pv/CERTS")],
            namespaces: BTreeSet::from(["default".to_owned()]),
            node_pools: BTreeSet::from(["default".to_owned()]),
            secrets_prefix: format!("{prefix}/secrets/"),
            users_dir: None,
        }
    }

    /// Resolves `file` (from `usersFrom.file`) on this host, symlinks included, and returns the
    /// real path only if it still sits in `--users-dir`. Read the file from the returned path.
    pub async fn confine_users_file(&self, file: &str) -> Result<PathBuf> {
        let field = "spec.middlewares.basicAuth.usersFrom.file";
        let Some(dir) = &self.users_dir else {
            return Err(Error::Refused(users_file_disabled(field)));
        };
        let resolve = |path: PathBuf, shown: String| async move {
            tokio::fs::canonicalize(&path)
                .await
                .map_err(|source| Error::ResolveUsersFile {
                    path: shown,
                    source,
                })
        };
        let real = resolve(PathBuf::from(file), file.to_owned()).await?;
        let real_dir = resolve(dir.clone(), dir.display().to_string()).await?;
        if real.starts_with(&real_dir) {
            Ok(real)
        } else {
            Err(Error::Refused(FieldError::new(
                field,
                format!(
                    "{file:?} resolves to {} outside --users-dir {}; move the file into that directory",
                    real.display(),
                    dir.display()
                ),
            )))
        }
    }
}

fn users_file_disabled(field: &str) -> FieldError {
    FieldError::new(
        field,
        "reading basic-auth users from a file on the operator's host is disabled; an administrator can allow a directory with --users-dir, or store the users in Consul under --secrets-prefix and use usersFrom.consulKey",
    )
}

/// Every way `spec` exceeds `limits`, each naming its field and the flag that would allow it.
/// Empty when the document is admitted.
pub fn admit(spec: &ValidatedSpec, limits: &AdminLimits) -> Vec<FieldError> {
    let mut errors = Vec::new();
    let proxy = spec.proxy();
    let job = spec.job();

    let driver = spec.driver();
    let kind = DriverKind::of(driver);
    if !limits.drivers.contains(&kind) {
        errors.push(FieldError::new(
            "spec.job.driver",
            format!(
                "driver {} is not allowed by this operator (allowed: {}); an administrator can allow it with --allowed-driver {}",
                kind.as_str(),
                join(limits.drivers.iter().map(|d| d.as_str())),
                kind.as_str()
            ),
        ));
    }
    match driver {
        Driver::Docker(docker) => {
            let image = docker.image.as_deref().unwrap_or_default();
            if !allowed_for(&limits.images, proxy, image, true) {
                errors.push(FieldError::new(
                    "spec.job.driver.docker.image",
                    format!(
                        "image {image:?} is not allowed for {} (allowed: {}); an administrator can allow it with --allowed-image {}={image}",
                        proxy.as_str(),
                        join(for_proxy(&limits.images, proxy)),
                        proxy.as_str()
                    ),
                ));
            }
        }
        Driver::RawExec(cmd) | Driver::Exec(cmd) => {
            let field = match kind {
                DriverKind::RawExec => "spec.job.driver.rawExec.command",
                _ => "spec.job.driver.exec.command",
            };
            if !allowed_for(&limits.commands, proxy, &cmd.command, false) {
                errors.push(FieldError::new(
                    field,
                    format!(
                        "command {:?} is not allowed for {} (allowed: {}); an administrator can allow it with --allowed-command {}={}",
                        cmd.command,
                        proxy.as_str(),
                        join(for_proxy(&limits.commands, proxy)),
                        proxy.as_str(),
                        cmd.command
                    ),
                ));
            }
        }
    }

    if !job.cert_volume.is_empty() && !allowed_name(&limits.host_volumes, &job.cert_volume) {
        errors.push(not_listed(
            "spec.job.certVolume",
            "host volume",
            &job.cert_volume,
            &limits.host_volumes,
            "--allowed-host-volume",
        ));
    }
    if !allowed_name(&limits.namespaces, &job.namespace) {
        errors.push(not_listed(
            "spec.job.namespace",
            "namespace",
            &job.namespace,
            &limits.namespaces,
            "--allowed-namespace",
        ));
    }
    if !allowed_name(&limits.node_pools, &job.node_pool) {
        errors.push(not_listed(
            "spec.job.nodePool",
            "node pool",
            &job.node_pool,
            &limits.node_pools,
            "--allowed-node-pool",
        ));
    }

    let mut cert_path = |field: String, path: &Path| {
        if let Some(problem) = outside(path, &limits.cert_roots) {
            errors.push(FieldError::new(
                field,
                format!(
                    "{:?} {problem} (allowed: {}); the proxy reads certificates and writes ACME state there, so an administrator must allow the directory with --allowed-cert-root",
                    path.display().to_string(),
                    join(limits.cert_roots.iter().map(|r| r.display().to_string()))
                ),
            ));
        }
    };
    cert_path(
        "spec.tls.certDir".to_owned(),
        Path::new(&spec.tls().cert_dir),
    );
    for (i, pair) in spec.certificates().iter().enumerate() {
        let base = format!("spec.tls.certificates[{i}]");
        cert_path(format!("{base}.certFile"), Path::new(&pair.cert_file));
        cert_path(format!("{base}.keyFile"), Path::new(&pair.key_file));
    }
    if let Some(acme) = spec.acme() {
        cert_path("spec.tls.acme.storage".to_owned(), Path::new(&acme.storage));
        for (i, root) in acme.ca_roots.iter().enumerate() {
            cert_path(format!("spec.tls.acme.caRoots[{i}]"), Path::new(root));
        }
    }

    // Every reference the operator reads: the entry point's and each policy set's.
    for reference in crate::render::users_references(spec) {
        match reference.from {
            UsersFrom::ConsulKey(key) => {
                if !under_kv_prefix(key, &limits.secrets_prefix) {
                    errors.push(FieldError::new(
                        format!("{}.consulKey", reference.field),
                        format!(
                            "{key:?} is outside the secrets prefix {:?}; store the users under it, or an administrator can change it with --secrets-prefix",
                            limits.secrets_prefix
                        ),
                    ));
                }
            }
            UsersFrom::File(file) => {
                let field = format!("{}.file", reference.field);
                match &limits.users_dir {
                    None => errors.push(users_file_disabled(&field)),
                    Some(dir) => {
                        if let Some(problem) = outside(Path::new(file), std::slice::from_ref(dir)) {
                            errors.push(FieldError::new(
                                field,
                                format!(
                                    "{file:?} {problem} (--users-dir {}); move the file there, or an administrator can change --users-dir",
                                    dir.display()
                                ),
                            ));
                        }
                    }
                }
            }
        }
    }
    errors
}

fn join<S: AsRef<str>>(items: impl IntoIterator<Item = S>) -> String {
    let all: Vec<String> = items.into_iter().map(|s| s.as_ref().to_owned()).collect();
    if all.is_empty() {
        "none".to_owned()
    } else {
        all.join(", ")
    }
}

fn for_proxy(list: &[(ProxyKind, String)], proxy: ProxyKind) -> impl Iterator<Item = &str> {
    list.iter()
        .filter(move |(p, _)| *p == proxy)
        .map(|(_, v)| v.as_str())
}

fn allowed_for(list: &[(ProxyKind, String)], proxy: ProxyKind, value: &str, glob: bool) -> bool {
    for_proxy(list, proxy).any(|pattern| match pattern.strip_suffix('*') {
        Some(stem) if glob => value.starts_with(stem),
        _ => pattern == value,
    })
}

fn allowed_name(set: &BTreeSet<String>, name: &str) -> bool {
    set.contains(ANY) || set.contains(name)
}

fn not_listed(
    field: &str,
    what: &str,
    value: &str,
    set: &BTreeSet<String>,
    flag: &str,
) -> FieldError {
    FieldError::new(
        field,
        format!(
            "{what} {value:?} is not allowed (allowed: {}); an administrator can allow it with {flag} {value}",
            join(set)
        ),
    )
}

/// Why `path` is not inside one of `roots`; `None` when it is. Lexical: a `..` segment is
/// refused rather than resolved, since the path lives on another host where symlinks may
/// differ.
fn outside(path: &Path, roots: &[PathBuf]) -> Option<&'static str> {
    if !path.is_absolute() {
        return Some("is not an absolute path");
    }
    if path.components().any(|c| c == Component::ParentDir) {
        return Some("contains '..'");
    }
    // `Path::starts_with` compares whole components: `/pv/CERTSX` is not under `/pv/CERTS`.
    if roots.iter().any(|root| path.starts_with(root)) {
        None
    } else {
        Some("is outside the allowed directories")
    }
}

fn under_kv_prefix(key: &str, prefix: &str) -> bool {
    key.strip_prefix(prefix).is_some_and(|rest| {
        !rest.is_empty()
            && rest
                .split('/')
                .all(|s| !s.is_empty() && s != ".." && s != ".")
    })
}

/// The admission flags of `run` (flatten them with `#[command(flatten)]`).
#[derive(Debug, Clone, PartialEq, Eq, clap::Args)]
pub struct AdmissionFlags {
    /// Task drivers a ProxyConfig may choose (repeat or comma-separate): docker, raw_exec,
    /// exec.
    #[arg(
        long = "allowed-driver",
        value_enum,
        value_delimiter = ',',
        default_value = "docker"
    )]
    pub allowed_drivers: Vec<DriverKind>,
    /// Images a ProxyConfig may run, as PROXY=IMAGE (e.g. traefik=traefik:v3.7.15; a trailing
    /// `*` allows any completion: traefik=traefik:v3.*). Repeatable; replaces the default,
    /// the pinned Traefik and Caddy images.
    #[arg(long = "allowed-image", value_parser = parse_proxy_pair)]
    pub allowed_images: Vec<(ProxyKind, String)>,
    /// Commands raw_exec/exec may run, as PROXY=COMMAND (e.g.
    /// traefik=/usr/local/bin/traefik). Repeatable; none by default.
    #[arg(long = "allowed-command", value_parser = parse_proxy_pair)]
    pub allowed_commands: Vec<(ProxyKind, String)>,
    /// Nomad host volumes the proxy job may mount as `job.certVolume` (`*`: any).
    #[arg(
        long = "allowed-host-volume",
        value_delimiter = ',',
        default_value = "certs"
    )]
    pub allowed_host_volumes: Vec<String>,
    /// Directories `tls.certDir`, certificate files and ACME storage must sit in. Repeatable.
    #[arg(long = "allowed-cert-root", default_value = "/pv/CERTS")]
    pub allowed_cert_roots: Vec<PathBuf>,
    /// Nomad namespaces the proxy job may run in (`*`: any).
    #[arg(
        long = "allowed-namespace",
        value_delimiter = ',',
        default_value = "default"
    )]
    pub allowed_namespaces: Vec<String>,
    /// Nomad node pools the proxy job may run in (`*`: any).
    #[arg(
        long = "allowed-node-pool",
        value_delimiter = ',',
        default_value = "default"
    )]
    pub allowed_node_pools: Vec<String>,
    /// KV prefix `usersFrom.consulKey` must sit under (default `<prefix>/secrets/`).
    #[arg(long)]
    pub secrets_prefix: Option<String>,
    /// Directory on the operator's host `usersFrom.file` must sit in; unset refuses users
    /// files.
    #[arg(long)]
    pub users_dir: Option<PathBuf>,
}

fn parse_proxy_pair(text: &str) -> std::result::Result<(ProxyKind, String), String> {
    let (proxy, value) = text
        .split_once('=')
        .ok_or_else(|| format!("{text:?} is not PROXY=VALUE (e.g. traefik=traefik:v3.7.15)"))?;
    let proxy = match proxy {
        "traefik" => ProxyKind::Traefik,
        "caddy" => ProxyKind::Caddy,
        other => return Err(format!("{other:?} is not a proxy; use traefik or caddy")),
    };
    if value.is_empty() || value.trim() != value {
        return Err(format!("{value:?} is empty or has surrounding spaces"));
    }
    Ok((proxy, value.to_owned()))
}

impl AdmissionFlags {
    /// The limits for `--prefix prefix`, with every flag checked.
    pub fn limits(&self, prefix: &str) -> Result<AdminLimits> {
        let mut limits = AdminLimits::defaults(prefix);
        limits.drivers = self.allowed_drivers.iter().copied().collect();
        if !self.allowed_images.is_empty() {
            limits.images.clone_from(&self.allowed_images);
        }
        limits.commands.clone_from(&self.allowed_commands);
        limits.host_volumes = self.allowed_host_volumes.iter().cloned().collect();
        limits.namespaces = self.allowed_namespaces.iter().cloned().collect();
        limits.node_pools = self.allowed_node_pools.iter().cloned().collect();
        for root in &self.allowed_cert_roots {
            absolute_dir("--allowed-cert-root", root)?;
        }
        limits.cert_roots.clone_from(&self.allowed_cert_roots);
        if let Some(dir) = &self.users_dir {
            absolute_dir("--users-dir", dir)?;
            limits.users_dir = Some(dir.clone());
        }
        if let Some(secrets) = &self.secrets_prefix {
            let trimmed = secrets.trim_end_matches('/');
            if crate::consul::validate_kv_prefix(trimmed).is_err() {
                return Err(Error::InvalidFlag {
                    flag: "--secrets-prefix",
                    value: secrets.clone(),
                    reason: "not a Consul KV prefix (no leading '/', no '..' or empty segment)",
                });
            }
            limits.secrets_prefix = format!("{trimmed}/");
        }
        Ok(limits)
    }
}

fn absolute_dir(flag: &'static str, dir: &Path) -> Result<()> {
    let reason = if !dir.is_absolute() {
        Some("not an absolute path")
    } else if dir.components().any(|c| c == Component::ParentDir) {
        Some("must not contain '..'")
    } else if dir == Path::new("/") {
        Some("the root directory would allow every path")
    } else {
        None
    };
    match reason {
        Some(reason) => Err(Error::InvalidFlag {
            flag,
            value: dir.display().to_string(),
            reason,
        }),
        None => Ok(()),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::panic)] // tests fail loudly
mod tests;
