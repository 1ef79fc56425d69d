//! Pure renderers: a validated spec becomes the proxy's Nomad job, Traefik's static config and
//! dynamic policy entries (Consul KV). Caddy's JSON config has one renderer, the Caddy driver's
//! [`crate::proxy::caddy::config`] (also pure); the job embeds its bootstrap config. No IO
//! happens here.
//!
//! What goes where (DESIGN §3): structural settings (proxy, discovery, entry points, certificate
//! directory, version, resources) land in the job, so changing them registers a new job version;
//! policies (middlewares, certificate list, the API router) land in KV under
//! `<prefix>/traefik/`, which Traefik reads live, so changing them needs no restart.
//!
//! Digests let the loop compare desired and observed state without diffing Nomad's defaulted
//! job JSON: `job_digest` is stamped into the job's Meta (`proxy-operator/spec-digest`) and read
//! back; `kv_digest` covers the KV entries.

pub mod nomad_job;
pub mod traefik;
pub mod traefik_kv;

use std::collections::BTreeMap;

use serde_json::Value;

use crate::spec::{UsersFrom, ValidatedSpec};

pub use crate::spec::digest::{digest_json, digest_kv};
pub use crate::spec::model::{self, Model};

/// Job Meta key naming the operator instance that owns the job.
pub const META_OWNER: &str = "proxy-operator/owner";
/// Job Meta key holding [`Rendered::job_digest`].
pub const META_SPEC_DIGEST: &str = "proxy-operator/spec-digest";
/// Job Meta key naming the proxy (`traefik` or `caddy`).
pub const META_PROXY: &str = "proxy-operator/proxy";
/// Job Meta key holding the proxy version from the spec, when set.
pub const META_VERSION: &str = "proxy-operator/proxy-version";
/// Default KV prefix.
pub const DEFAULT_PREFIX: &str = "proxy-operator";
/// The most keys a Traefik policy tree may have: one delete-tree plus every key must fit one
/// Consul transaction (64 operations), so a change and its restore are written atomically and
/// Traefik never loads a half-written tree. Equal to `reconcile::MAX_POLICY_KEYS`; checked here
/// so `validate`, `render` and the loop refuse the same documents.
pub const MAX_POLICY_KEYS: usize = 63;

/// Errors rendering a spec. All are terminal: the same spec renders the same way every time.
/// No variant ever carries a secret value (basic-auth users are referred to by index only).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A value would produce a config the proxy or Nomad rejects.
    #[error("failed to render {field}: {reason}")]
    InvalidValue {
        /// Field path.
        field: String,
        /// Why.
        reason: String,
    },
    /// A setting the chosen proxy cannot express.
    #[error("failed to render {field}: not supported: {reason}")]
    Unsupported {
        /// Field path.
        field: String,
        /// Why.
        reason: String,
    },
    /// Basic auth is enabled but the caller did not resolve its users.
    #[error("failed to render {field}: users referenced by {reference} were not resolved")]
    UnresolvedSecret {
        /// Field path.
        field: String,
        /// The reference (a KV key or file path, never the secret).
        reference: String,
    },
    /// YAML serialisation failed.
    #[error("failed to serialize YAML: {0}")]
    SerializeYaml(String),
    /// JSON serialisation failed.
    #[error("failed to serialize JSON: {0}")]
    SerializeJson(#[source] serde_json::Error),
}

/// Result alias of this module.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What the caller knows that the spec does not say.
#[derive(Clone, PartialEq, Eq)]
pub struct RenderContext {
    /// KV prefix (default `proxy-operator`); Traefik's KV root is `<prefix>/traefik`.
    pub prefix: String,
    /// Value of the job's `proxy-operator/owner` Meta.
    pub owner: String,
    /// Basic-auth `user:hash` lines resolved by the caller from the spec's reference; `None`
    /// when not resolved (rendering a spec with basic auth then fails). Secret: redacted in Debug.
    pub basic_auth_users: Option<Vec<String>>,
    /// The same for each policy set whose users the operator reads ([`users_references`]), by
    /// set name; a set missing here fails rendering. Secret: redacted in Debug.
    pub policy_users: BTreeMap<String, Vec<String>>,
}

impl Default for RenderContext {
    fn default() -> Self {
        RenderContext {
            prefix: DEFAULT_PREFIX.to_string(),
            owner: DEFAULT_PREFIX.to_string(),
            basic_auth_users: None,
            policy_users: BTreeMap::new(),
        }
    }
}

impl RenderContext {
    /// The users resolved for `owner`, if any.
    pub fn users(&self, owner: &UsersOwner) -> Option<&Vec<String>> {
        match owner {
            UsersOwner::EntryPoint => self.basic_auth_users.as_ref(),
            UsersOwner::Set(name) => self.policy_users.get(name),
        }
    }

    /// Stores the users resolved for `owner`.
    pub fn set_users(&mut self, owner: &UsersOwner, users: Vec<String>) {
        match owner {
            UsersOwner::EntryPoint => self.basic_auth_users = Some(users),
            UsersOwner::Set(name) => {
                self.policy_users.insert(name.clone(), users);
            }
        }
    }

    /// `users` for every reference of `spec` not resolved yet: what renders a document whose
    /// references cannot be read where the caller runs (offline commands, placeholders).
    #[must_use]
    pub fn with_unresolved_users(mut self, spec: &ValidatedSpec, users: &[String]) -> Self {
        for r in users_references(spec) {
            if self.users(&r.owner).is_none() {
                self.set_users(&r.owner, users.to_vec());
            }
        }
        self
    }
}

impl std::fmt::Debug for RenderContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let redacted = |u: &Vec<String>| format!("<{} redacted>", u.len());
        f.debug_struct("RenderContext")
            .field("prefix", &self.prefix)
            .field("owner", &self.owner)
            .field(
                "basic_auth_users",
                &self.basic_auth_users.as_ref().map(redacted),
            )
            .field(
                "policy_users",
                &self
                    .policy_users
                    .iter()
                    .map(|(name, u)| (name, redacted(u)))
                    .collect::<BTreeMap<_, _>>(),
            )
            .finish()
    }
}

/// Whose basic-auth users a reference holds.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum UsersOwner {
    /// `spec.middlewares.basicAuth`.
    EntryPoint,
    /// `spec.policies.<name>.basicAuth`.
    Set(String),
}

/// A basic-auth users reference the caller reads before rendering (never the users).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsersReference<'a> {
    /// Whose users.
    pub owner: UsersOwner,
    /// The field of the reference, `spec.middlewares.basicAuth.usersFrom` or
    /// `spec.policies.<name>.basicAuth.usersFrom`.
    pub field: String,
    /// The reference.
    pub from: &'a UsersFrom,
}

impl UsersReference<'_> {
    /// `Consul key <key>` or `file <path>`: safe for errors, status and logs.
    pub fn describe(&self) -> String {
        match self.from {
            UsersFrom::ConsulKey(key) => format!("Consul key {key}"),
            UsersFrom::File(file) => format!("file {file}"),
        }
    }
}

/// The basic-auth users references of `spec` the caller must read for [`resolve`]: the entry
/// point's, and each policy set's unless the proxy reads the set's file itself (Traefik's
/// `usersFile`). In document order, the entry point's first.
pub fn users_references(spec: &ValidatedSpec) -> Vec<UsersReference<'_>> {
    let mut out = Vec::new();
    if let Some(auth) = spec.basic_auth() {
        out.push(UsersReference {
            owner: UsersOwner::EntryPoint,
            field: "spec.middlewares.basicAuth.usersFrom".to_string(),
            from: &auth.users_from,
        });
    }
    for (name, set) in &spec.spec().policies {
        let read_by_proxy = spec
            .model()
            .policies
            .get(name)
            .and_then(|p| p.basic_auth.as_ref())
            .is_some_and(|a| a.users_file.is_some());
        if let Some(auth) = set.basic_auth.as_ref().filter(|_| !read_by_proxy) {
            out.push(UsersReference {
                owner: UsersOwner::Set(name.clone()),
                field: format!("spec.policies.{name}.basicAuth.usersFrom"),
                from: &auth.users_from,
            });
        }
    }
    out
}

/// Everything rendered from one spec.
#[derive(Clone, PartialEq)]
pub struct Rendered {
    /// The `Job` object of `POST /v1/jobs` (Nomad JSON job format), Meta stamped.
    pub job: Value,
    /// sha256 hex of the canonical job JSON without the `proxy-operator/spec-digest` Meta key;
    /// the same value is in that Meta key.
    pub job_digest: String,
    /// Traefik's static config (YAML), also embedded in the job; `None` for Caddy.
    pub traefik_static: Option<String>,
    /// Full KV keys under `<prefix>/traefik/` with their values, sorted by key; empty for Caddy.
    /// Basic-auth users are secret: see [`traefik::is_secret_key`].
    pub traefik_kv: Vec<(String, String)>,
    /// sha256 hex over the KV entries (`key NUL value NUL`, sorted).
    pub kv_digest: String,
    /// Caddy's bootstrap JSON config, the one embedded in the job; `None` for Traefik. It holds
    /// neither the policy nor routes ([`crate::proxy::caddy::config::bootstrap`]); the loop loads
    /// the live config ([`crate::proxy::caddy::config::live`]: the policy with the basic-auth
    /// users plus the catalog's routes) through Caddy's admin API (`POST /load`).
    pub caddy: Option<Value>,
}

impl std::fmt::Debug for Rendered {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kv: Vec<(&str, &str)> = self
            .traefik_kv
            .iter()
            .map(|(k, v)| {
                (
                    k.as_str(),
                    if traefik::is_secret_key(k) {
                        "<redacted>"
                    } else {
                        v
                    },
                )
            })
            .collect();
        f.debug_struct("Rendered")
            .field("job_digest", &self.job_digest)
            .field("kv_digest", &self.kv_digest)
            .field("traefik_static", &self.traefik_static.is_some())
            .field("traefik_kv", &kv)
            .field("caddy", &self.caddy.is_some())
            .finish_non_exhaustive()
    }
}

/// Renders every artefact of a validated spec: the proxy's Nomad job (Meta stamped), and for
/// Traefik its static config and KV policy entries, or for Caddy its bootstrap JSON config.
/// Caddy's policy entry is the driver's: [`crate::proxy::render()`] renders what the loop writes
/// for either proxy.
pub fn render(spec: &ValidatedSpec, ctx: &RenderContext) -> Result<Rendered> {
    render_model(&resolve(spec, ctx)?, ctx)
}

/// The proxy's internal listener, which the health gate probes (see
/// [`model::Dashboard::address`]).
pub fn internal_address(spec: &ValidatedSpec) -> model::ListenAddr {
    spec.model().dashboard.address.clone()
}

/// The spec's model with the basic-auth users the caller read from the spec's `usersFrom`
/// references ([`users_references`], [`RenderContext::basic_auth_users`] and
/// [`RenderContext::policy_users`]); each is required.
///
/// # Errors
/// A reference's users were not resolved ([`Error::UnresolvedSecret`] naming its field).
pub fn resolve(spec: &ValidatedSpec, ctx: &RenderContext) -> Result<Model> {
    let mut model = spec.model().clone();
    for r in users_references(spec) {
        let users = ctx.users(&r.owner).ok_or_else(|| Error::UnresolvedSecret {
            field: r.field.clone(),
            reference: r.describe(),
        })?;
        let auth = match &r.owner {
            UsersOwner::EntryPoint => model.policy.basic_auth.as_mut(),
            UsersOwner::Set(name) => model
                .policies
                .get_mut(name)
                .and_then(|p| p.basic_auth.as_mut()),
        };
        if let Some(auth) = auth {
            auth.users = users.clone();
        }
    }
    Ok(model)
}

/// Renders every artefact of a resolved model.
pub fn render_model(model: &Model, ctx: &RenderContext) -> Result<Rendered> {
    let boot;
    let mut job_model = model;
    let (config_name, config_data, traefik_static, traefik_kv, caddy) = match model.proxy {
        model::ProxyKind::Traefik => {
            let yaml = traefik::static_yaml(&traefik::static_config(model, &ctx.prefix))?;
            let root = format!("{}/traefik/", ctx.prefix);
            let tree = traefik::policy_kv(model)?;
            check_key_budget(&tree, model)?;
            let kv: Vec<(String, String)> = tree
                .into_iter()
                .map(|(k, v)| (format!("{root}{k}"), v))
                .collect();
            ("traefik.yml", yaml.clone(), Some(yaml), kv, None)
        }
        model::ProxyKind::Caddy => {
            let (caddy_model, config) = crate::proxy::caddy::config::bootstrap(model)?;
            boot = caddy_model;
            job_model = &boot;
            let config: Value =
                serde_json::from_slice(&config.body).map_err(Error::SerializeJson)?;
            let text = serde_json::to_string_pretty(&config).map_err(Error::SerializeJson)?;
            ("caddy.json", text, None, Vec::new(), Some(config))
        }
    };
    let mut job = nomad_job::proxy_job(
        job_model,
        &nomad_job::ConfigFile {
            name: config_name,
            data: &config_data,
        },
    )?;
    job.meta.insert(META_OWNER.to_string(), ctx.owner.clone());
    job.meta.insert(
        META_PROXY.to_string(),
        match model.proxy {
            model::ProxyKind::Traefik => "traefik",
            model::ProxyKind::Caddy => "caddy",
        }
        .to_string(),
    );
    if let Some(v) = &model.job.version {
        job.meta.insert(META_VERSION.to_string(), v.clone());
    }
    let unstamped = serde_json::to_value(&job).map_err(Error::SerializeJson)?;
    let job_digest = digest_json(&unstamped);
    job.meta
        .insert(META_SPEC_DIGEST.to_string(), job_digest.clone());
    let job = serde_json::to_value(&job).map_err(Error::SerializeJson)?;
    let kv_digest = digest_kv(&traefik_kv);
    Ok(Rendered {
        job,
        job_digest,
        traefik_static,
        traefik_kv,
        kv_digest,
        caddy,
    })
}

/// Refuses a policy tree over [`MAX_POLICY_KEYS`], naming the field that contributes most keys.
fn check_key_budget(tree: &BTreeMap<String, String>, model: &Model) -> Result<()> {
    if tree.len() <= MAX_POLICY_KEYS {
        return Ok(());
    }
    let count = |needle: &str| tree.keys().filter(|k| k.contains(needle)).count();
    let mut sources: Vec<(usize, String, &str)> = vec![
        (
            count("/proxy-operator-headers/headers/"),
            "spec.middlewares.securityHeaders".to_string(),
            "set fewer headers",
        ),
        (
            // The entry point's users only: a set's are counted with the set.
            count(&format!(
                "/{}/basicAuth/users/",
                traefik::BASIC_AUTH_MIDDLEWARE
            )),
            "spec.middlewares.basicAuth.usersFrom".to_string(),
            "reference fewer basic-auth users",
        ),
        (
            count("tls/certificates/"),
            "spec.tls.certificates".to_string(),
            "list fewer certificate pairs",
        ),
        (
            count("/proxy-operator-policy/")
                + count("/routers/proxy-operator-deny/")
                + traefik_kv::ENTRY_POINT_MIDDLEWARES
                    .iter()
                    .map(|kind| count(&format!("/proxy-operator-{kind}/")))
                    .sum::<usize>(),
            "spec.middlewares".to_string(),
            "enable fewer middlewares",
        ),
    ];
    for name in model.policies.keys() {
        sources.push((
            count(&format!("/middlewares/{name}/"))
                + count(&format!("/middlewares/proxy-operator-{name}-")),
            format!("spec.policies.{name}"),
            "use fewer policy sets or fewer middlewares in them",
        ));
    }
    let (field, fix) = sources
        .into_iter()
        .max_by_key(|(n, _, _)| *n)
        .map(|(_, field, fix)| (field, fix))
        .unwrap_or(("spec".to_string(), "simplify the policy"));
    Err(Error::InvalidValue {
        field: field.to_string(),
        reason: format!(
            "the Traefik policy tree would have {} keys, more than the {MAX_POLICY_KEYS} one Consul transaction can write atomically (Traefik must never load a half-written tree); {fix}",
            tree.len()
        ),
    })
}

/// The `proxy-operator/spec-digest` Meta of an observed job. Nomad fills a registered job with
/// defaults, so the loop compares this stamp with [`Rendered::job_digest`], never the JSON.
pub fn job_digest_of(job: &Value) -> Option<&str> {
    job.get("Meta")?.get(META_SPEC_DIGEST)?.as_str()
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::panic)] // tests fail loudly
mod tests {
    use super::*;

    #[test]
    fn the_key_budget_matches_the_loop_and_long_allow_lists_fit_in_one_key() {
        let ranges: Vec<String> = (0..200)
            .map(|i| format!("      - 10.{i}.0.0/16\n"))
            .collect();
        let doc = format!(
            "apiVersion: proxy-operator.io/v1alpha1\nkind: ProxyConfig\nspec:\n  proxy: traefik\n  middlewares:\n    ipAllowList:\n      sourceRange:\n{}",
            ranges.concat()
        );
        let spec = crate::spec::load(doc.as_bytes()).unwrap();
        let r = render(&spec, &RenderContext::default()).unwrap();
        assert!(
            r.traefik_kv.len() <= MAX_POLICY_KEYS,
            "{}",
            r.traefik_kv.len()
        );
        let (_, joined) = r
            .traefik_kv
            .iter()
            .find(|(k, _)| k.ends_with("ipAllowList/sourceRange"))
            .unwrap();
        assert_eq!(joined.split(',').count(), 200);
        assert!(joined.starts_with("10.0.0.0/16,10.1.0.0/16,"));
    }

    #[test]
    fn a_policy_tree_over_the_key_budget_is_refused_naming_the_field() {
        let headers: Vec<String> = (0..70)
            .map(|i| format!("        X-Custom-{i}: v\n"))
            .collect();
        let doc = format!(
            "apiVersion: proxy-operator.io/v1alpha1\nkind: ProxyConfig\nspec:\n  proxy: traefik\n  middlewares:\n    securityHeaders:\n      headers:\n{}",
            headers.concat()
        );
        let spec = crate::spec::load(doc.as_bytes()).unwrap();
        let err = render(&spec, &RenderContext::default())
            .unwrap_err()
            .to_string();
        assert!(err.contains("spec.middlewares.securityHeaders"), "{err}");
        assert!(err.contains("set fewer headers"), "{err}");
    }

    #[test]
    fn too_many_policy_sets_are_refused_naming_the_biggest_set_instead_of_writing_two_transactions()
    {
        let sets: Vec<String> = (0..30)
            .map(|i| {
                format!("    set{i:02}:\n      compress: {{}}\n      retry: {{attempts: 2}}\n")
            })
            .collect();
        let doc = format!(
            "apiVersion: proxy-operator.io/v1alpha1\nkind: ProxyConfig\nspec:\n  proxy: traefik\n  policies:\n{}",
            sets.concat()
        );
        let spec = crate::spec::load(doc.as_bytes()).unwrap();
        let err = render(&spec, &RenderContext::default())
            .unwrap_err()
            .to_string();
        assert!(err.contains("spec.policies.set"), "{err}");
        assert!(err.contains("one Consul transaction"), "{err}");
    }

    #[test]
    fn render_context_debug_redacts_the_basic_auth_users_of_the_entry_point_and_of_each_set() {
        let mut ctx = RenderContext {
            basic_auth_users: Some(vec!["alice:$apr1$salt$hash".to_string()]),
            ..RenderContext::default()
        };
        ctx.set_users(
            &UsersOwner::Set("admin".into()),
            vec!["bob:$2y$05$SENTINEL".into(), "carol:$2y$05$SENTINEL".into()],
        );
        let shown = format!("{ctx:?}");
        assert!(
            !shown.contains("apr1") && !shown.contains("SENTINEL"),
            "{shown}"
        );
        assert!(shown.contains("1 redacted"), "{shown}");
        assert!(shown.contains("\"admin\": \"<2 redacted>\""), "{shown}");
    }

    const SET_DOC: &str = "apiVersion: proxy-operator.io/v1alpha1\nkind: ProxyConfig\nspec:\n  proxy: PROXY\n  policies:\n    admin:\n      basicAuth:\n        usersFrom: {consulKey: secrets/admin}\n    files:\n      basicAuth:\n        usersFrom: {file: /etc/htpasswd}\n";

    fn set_spec(proxy: &str) -> ValidatedSpec {
        crate::spec::load(SET_DOC.replace("PROXY", proxy).as_bytes()).unwrap()
    }

    #[test]
    fn a_policy_set_whose_users_were_not_resolved_fails_naming_its_field_and_reference() {
        let spec = set_spec("caddy");
        let owners: Vec<String> = users_references(&spec)
            .iter()
            .map(|r| r.field.clone())
            .collect();
        assert_eq!(
            owners,
            [
                "spec.policies.admin.basicAuth.usersFrom",
                "spec.policies.files.basicAuth.usersFrom"
            ],
            "Caddy takes every set's accounts inline"
        );
        let mut ctx = RenderContext::default();
        ctx.set_users(&UsersOwner::Set("files".into()), vec!["u:h".into()]);
        match resolve(&spec, &ctx).unwrap_err() {
            Error::UnresolvedSecret { field, reference } => {
                assert_eq!(field, "spec.policies.admin.basicAuth.usersFrom");
                assert_eq!(reference, "Consul key secrets/admin");
            }
            other => panic!("{other}"),
        }
        ctx.set_users(&UsersOwner::Set("admin".into()), vec!["a:h".into()]);
        let model = resolve(&spec, &ctx).unwrap();
        let users = |set: &str| {
            model.policies[set]
                .basic_auth
                .as_ref()
                .unwrap()
                .users
                .clone()
        };
        assert_eq!(users("admin"), ["a:h"]);
        assert_eq!(users("files"), ["u:h"]);
    }

    #[test]
    fn traefik_reads_a_sets_users_file_itself_and_the_sets_consul_key_users_render_as_secret_keys()
    {
        let spec = set_spec("traefik");
        let refs = users_references(&spec);
        assert_eq!(refs.len(), 1, "{refs:?}");
        assert_eq!(refs[0].owner, UsersOwner::Set("admin".into()));
        let ctx = RenderContext::default()
            .with_unresolved_users(&spec, &["bob:$apr1$SENTINEL$h9FWgUz3n9YxylKLlR5SQ/".into()]);
        let r = render(&spec, &ctx).unwrap();
        let secret: Vec<&(String, String)> = r
            .traefik_kv
            .iter()
            .filter(|(_, v)| v.contains("SENTINEL"))
            .collect();
        assert_eq!(secret.len(), 1, "{r:?}");
        assert!(traefik::is_secret_key(&secret[0].0), "{}", secret[0].0);
        assert!(
            r.traefik_kv
                .iter()
                .any(|(k, v)| k.ends_with("-files-basicauth/basicAuth/usersFile")
                    && v == "/etc/htpasswd")
        );
        assert!(!format!("{r:?}").contains("SENTINEL"));
    }
}
