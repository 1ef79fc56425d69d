//! What the commands that talk to a cluster share: building the clients from the environment
//! and flags, reading the documents under `<prefix>/`, resolving the basic-auth reference for a
//! render, and printing an error chain once with what to check.

use anyhow::Context as _;

use crate::consul::{ConsulApi, ConsulClient};
use crate::nomad::NomadClient;
use crate::render::RenderContext;
use crate::spec::status::ProxyStatus;
use crate::spec::{UsersFrom, ValidatedSpec};
use crate::transport::{self, Api, ClientConfig, ConsulFlags, NomadFlags, Overrides, QueryOptions};

/// Builds the Consul client the `consul` CLI would use (`CONSUL_*`), flags overriding.
pub(super) fn consul(flags: ConsulFlags) -> anyhow::Result<ConsulClient> {
    ConsulClient::new(&settings(Api::Consul, flags.into())?)
        .context("failed to build the Consul client")
}

/// Builds the Nomad client the `nomad` CLI would use (`NOMAD_*`), flags overriding.
pub(super) fn nomad(flags: NomadFlags) -> anyhow::Result<NomadClient> {
    NomadClient::new(&settings(Api::Nomad, flags.into())?)
        .context("failed to build the Nomad client")
}

/// `api`'s settings from the environment, `overrides` (the flags) winning.
fn settings(api: Api, overrides: Overrides) -> anyhow::Result<ClientConfig> {
    let mut config = ClientConfig::from_env(api, |k| std::env::var(k).ok())
        .with_context(|| format!("failed to read the {api} settings from the environment"))?;
    config
        .apply(overrides)
        .with_context(|| format!("failed to apply the {api} flags"))?;
    Ok(config)
}

/// `<prefix>/status`, `None` when absent.
pub(super) async fn read_status(
    consul: &impl ConsulApi,
    prefix: &str,
) -> anyhow::Result<Option<ProxyStatus>> {
    let key = format!("{prefix}/status");
    let (pair, _) = consul
        .kv_get(&key, QueryOptions::NOW)
        .await
        .with_context(|| format!("failed to read {key}"))?;
    pair.map(|p| {
        serde_json::from_slice(&p.value)
            .with_context(|| format!("failed to parse the status document at {key}"))
    })
    .transpose()
}

/// What stands in for basic-auth users that cannot be read where the command runs; it is
/// visibly not a hash, so nobody mistakes a placeholder render for the real one.
pub(super) const USERS_PLACEHOLDER: &str = "placeholder:<users-not-read-offline>";

/// Caddy takes complete bcrypt hashes only (`proxy::caddy::config::bcrypt_accounts`), so its
/// placeholder is shaped like one: it matches no password, and its name says what it is.
const CADDY_USERS_PLACEHOLDER: &str =
    "placeholder:$2y$04$users.not.read.offline.placeholder.placeholder.placeh";

/// The placeholder user line for `spec`'s proxy.
pub(super) fn users_placeholder(spec: &ValidatedSpec) -> &'static str {
    match spec.proxy() {
        crate::spec::ProxyKind::Caddy => CADDY_USERS_PLACEHOLDER,
        crate::spec::ProxyKind::Traefik => USERS_PLACEHOLDER,
    }
}

/// The render context of a cluster command: the users of each `usersFrom.consulKey` reference
/// (the entry point's and every policy set's) read from Consul, of a `usersFrom.file` reference
/// read when the file exists here. Returns whether a placeholder stands in (the caller says so
/// on stderr).
pub(super) async fn render_context(
    spec: &ValidatedSpec,
    prefix: &str,
    consul: Option<&ConsulClient>,
) -> anyhow::Result<(RenderContext, bool)> {
    let mut ctx = RenderContext {
        prefix: prefix.to_owned(),
        owner: prefix.to_owned(),
        ..RenderContext::default()
    };
    let mut any_placeholder = false;
    for reference in crate::render::users_references(spec) {
        let text = match (reference.from, consul) {
            (UsersFrom::ConsulKey(key), Some(consul)) => {
                let (pair, _) = consul
                    .kv_get(key, QueryOptions::NOW)
                    .await
                    .with_context(|| format!("failed to read the basic-auth users key {key}"))?;
                pair.map(|p| String::from_utf8_lossy(&p.value).into_owned())
            }
            (UsersFrom::File(path), _) => std::fs::read_to_string(path).ok(),
            (UsersFrom::ConsulKey(_), None) => None,
        };
        let users: Option<Vec<String>> = text.map(|t| {
            t.lines()
                .map(str::trim)
                .filter(|l| !l.is_empty() && !l.starts_with('#'))
                .map(str::to_owned)
                .collect()
        });
        let placeholder = users.as_ref().is_none_or(Vec::is_empty);
        any_placeholder |= placeholder;
        ctx.set_users(
            &reference.owner,
            if placeholder {
                vec![users_placeholder(spec).to_owned()]
            } else {
                users.unwrap_or_default()
            },
        );
    }
    Ok((ctx, any_placeholder))
}

/// The text of one link of an error chain without the text of the links below it (many errors
/// print their source too, which made every cause appear twice).
fn own_text(link: &str, below: Option<&str>) -> String {
    match below {
        Some(b) if !b.is_empty() => link
            .strip_suffix(b)
            .map_or(link, |s| s.trim_end_matches([':', ' ']))
            .to_owned(),
        _ => link.to_owned(),
    }
}

/// Prints an error to stderr: each link of its chain once, then what to check when the chain
/// says an API was not reached.
pub(super) fn print_error(error: &anyhow::Error) {
    let links: Vec<String> = error.chain().map(ToString::to_string).collect();
    let mut shown: Vec<String> = Vec::new();
    for (i, link) in links.iter().enumerate() {
        let text = own_text(link, links.get(i + 1).map(String::as_str));
        if text.is_empty() || shown.iter().any(|s| s == &text) {
            continue;
        }
        if shown.is_empty() {
            eprintln!("error: {text}");
        } else {
            eprintln!("  caused by: {text}");
        }
        shown.push(text);
    }
    if let Some(hint) = hint(error) {
        eprintln!("{hint}");
    }
}

/// What to check for an API that did not answer, naming the variable and the address used.
fn hint(error: &anyhow::Error) -> Option<String> {
    error.chain().find_map(|link| {
        let t = link
            .downcast_ref::<transport::Error>()
            .or_else(|| link.downcast_ref::<Box<transport::Error>>().map(AsRef::as_ref))?;
        let (api, endpoint) = match t {
            transport::Error::Connect { api, endpoint, .. }
            | transport::Error::Tls { api, endpoint, .. } => (*api, endpoint.clone()),
            _ => return None,
        };
        let names = transport::SettingNames::of(api);
        let (var, flag) = (names.addr_env(), names.addr_flag());
        Some(format!(
            "check: is {api} running and reachable at {endpoint}? That address came from {var} (or --{flag}); set it to your {api} agent's address."
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_link_that_repeats_its_cause_is_cut_before_the_cause() {
        assert_eq!(
            own_text(
                "failed to read k: failed to reach X: refused",
                Some("failed to reach X: refused")
            ),
            "failed to read k"
        );
        assert_eq!(own_text("plain", Some("other")), "plain");
        assert_eq!(own_text("last", None), "last");
    }
}
