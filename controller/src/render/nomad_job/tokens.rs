//! The proxy's tokens (`spec.job.tokens`): the identities and templates through which the
//! Nomad client hands Traefik its Consul and Nomad tokens (see the parent module's docs).

use std::time::Duration;

use super::{
    ConfigFile, LEFT_DELIM, Model, ProxyKind, RIGHT_DELIM, Template, TokenSource, WorkloadIdentity,
    nanos,
};
use crate::render::Error;

/// The identity Nomad logs in to Consul with for the `default` Consul cluster.
const CONSUL_IDENTITY: &str = "consul_default";
/// The audience Consul's `nomad-workloads` auth method (`nomad setup consul`) expects.
const CONSUL_AUDIENCE: &str = "consul.io";
/// Lifetime of the Consul identity JWT; Nomad renews it before it expires.
const CONSUL_IDENTITY_TTL: Duration = Duration::from_secs(3600);
/// Where the token template writes its `KEY=value` lines (read into the task's environment).
pub const TOKENS_ENV_PATH: &str = "secrets/proxy-tokens.env";

/// The template action, in the config file's delimiters, that the Nomad client replaces with
/// Traefik's Nomad token when it renders the static config: Traefik's Nomad provider reads its
/// token only from there (`controller/tests/acl_traefik.rs`). With a variable, the action
/// reads the variable itself rather than `NOMAD_TOKEN`, so the token never needs to be in the
/// task's environment.
///
/// `env` in a Nomad template reads the task's environment as the client builds it, which
/// carries the default identity as `NOMAD_TOKEN` when `identity { env = true }`
/// (hashicorp/nomad `client/taskenv/env.go`, `WorkloadToken`).
///
/// The string arguments are Go raw strings (backquotes): the action sits inside a YAML
/// double-quoted scalar, where a `"` would be escaped as `\"` and break the template.
pub fn nomad_token_action(source: &TokenSource) -> String {
    match source {
        TokenSource::WorkloadIdentity => format!("{LEFT_DELIM} env `NOMAD_TOKEN` {RIGHT_DELIM}"),
        TokenSource::NomadVariable { path } => format!(
            "{LEFT_DELIM} with nomadVar `{path}` {RIGHT_DELIM}{LEFT_DELIM} .nomad_token {RIGHT_DELIM}{LEFT_DELIM} end {RIGHT_DELIM}"
        ),
    }
}

/// The template that gives Traefik's two Consul providers their token through the environment
/// (Consul's Go client falls back to `CONSUL_HTTP_TOKEN` / `CONSUL_HTTP_TOKEN_FILE`). Its data
/// is the operator's own, so it keeps Nomad's default delimiters.
pub(super) fn consul_token_template(source: &TokenSource) -> Template {
    let data = match source {
        // Nomad writes the Consul token it got for the consul_default identity there.
        TokenSource::WorkloadIdentity => {
            "CONSUL_HTTP_TOKEN_FILE={{ env \"NOMAD_SECRETS_DIR\" }}/consul_token\n".to_string()
        }
        TokenSource::NomadVariable { path } => format!(
            "{{{{ with nomadVar \"{path}\" }}}}CONSUL_HTTP_TOKEN={{{{ .consul_token }}}}\n{{{{ end }}}}"
        ),
    };
    Template {
        embedded_tmpl: data,
        dest_path: TOKENS_ENV_PATH.to_string(),
        change_mode: "restart".to_string(),
        perms: "0600".to_string(),
        left_delim: "{{".to_string(),
        right_delim: "}}".to_string(),
        envvars: true,
    }
}

/// The identities of a task whose tokens come from Workload Identity: the default one as
/// `NOMAD_TOKEN` (for the static config's template), and `consul_default`, with which the
/// Nomad client logs in to Consul and writes the token to `secrets/consul_token`.
pub(super) fn workload_identities() -> (WorkloadIdentity, Vec<WorkloadIdentity>) {
    (
        WorkloadIdentity {
            name: String::new(),
            audience: Vec::new(),
            change_mode: "restart".to_string(),
            env: true,
            ttl: 0,
        },
        vec![WorkloadIdentity {
            name: CONSUL_IDENTITY.to_string(),
            audience: vec![CONSUL_AUDIENCE.to_string()],
            change_mode: String::new(),
            env: false,
            ttl: nanos(CONSUL_IDENTITY_TTL),
        }],
    )
}

/// The Nomad token's template action the config must carry (`None` without `tokens`), after
/// checking that it is the config's only template action: everything else Nomad copies
/// literally.
pub(super) fn config_token_action(
    model: &Model,
    config: &ConfigFile<'_>,
) -> Result<Option<String>, Error> {
    let tokens = model.job.tokens.as_ref();
    let token_action = match (model.proxy, tokens) {
        (_, None) => None,
        (ProxyKind::Traefik, Some(source)) => Some(nomad_token_action(source)),
        (ProxyKind::Caddy, Some(_)) => {
            return Err(Error::Unsupported {
                field: "spec.job.tokens".to_string(),
                reason: "Caddy reads neither Consul nor Nomad and takes no tokens".to_string(),
            });
        }
    };
    // The one template action the config may hold is the token's; everything else is literal.
    let literal = match &token_action {
        Some(action) if !config.data.contains(action.as_str()) => {
            return Err(Error::InvalidValue {
                field: "spec.job.tokens".to_string(),
                reason: "the static config does not carry the Nomad token's template action"
                    .to_string(),
            });
        }
        Some(action) => config.data.replace(action.as_str(), ""),
        None => config.data.to_string(),
    };
    if literal.contains(LEFT_DELIM) || literal.contains(RIGHT_DELIM) {
        return Err(Error::InvalidValue {
            field: "rendered config".to_string(),
            reason: format!("contains the template delimiter {LEFT_DELIM:?}"),
        });
    }
    Ok(token_action)
}
