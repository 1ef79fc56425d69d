//! `proxy-operator render`: prints everything the operator would apply for a document — the
//! proxy's Nomad job, Traefik's static config and KV policy entries, or Caddy's config — without
//! touching a cluster. Data goes to stdout, errors to stderr.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use serde_json::{Map, Value, json};

use crate::render::{self, RenderContext};
use crate::spec;

/// Output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Output {
    /// One JSON object.
    Json,
    /// One YAML document.
    Yaml,
}

/// Arguments of `proxy-operator render`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The ProxyConfig document (YAML or JSON).
    pub file: PathBuf,
    /// Output format.
    #[arg(long, value_enum, default_value = "json")]
    pub output: Output,
    /// Consul KV prefix (Traefik's KV root is `<prefix>/traefik`).
    #[arg(long, value_parser = super::kv_prefix, default_value = render::DEFAULT_PREFIX)]
    pub prefix: String,
    /// Value of the job's `proxy-operator/owner` Meta.
    #[arg(long, default_value = render::DEFAULT_PREFIX)]
    pub owner: String,
    /// htpasswd file standing in for the spec's `basicAuth.usersFrom` (the running operator
    /// reads the reference itself). Without it a clearly marked placeholder stands in (said on
    /// stderr); the users are printed as `<redacted>`.
    #[arg(long, value_name = "FILE")]
    pub basic_auth_users: Option<PathBuf>,
}

/// Runs the command: exit 0 rendered, 1 the document is invalid or cannot be rendered, 2 usage
/// or IO error.
pub async fn run(args: Args) -> anyhow::Result<ExitCode> {
    let bytes = std::fs::read(&args.file)
        .with_context(|| format!("failed to read {}", args.file.display()))?;
    let users = match &args.basic_auth_users {
        None => None,
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("failed to read {}", path.display()))?;
            Some(
                text.lines()
                    .map(str::trim)
                    .filter(|l| !l.is_empty() && !l.starts_with('#'))
                    .map(str::to_string)
                    .collect::<Vec<_>>(),
            )
        }
    };
    let Some(validated) = super::load_document(&args.file, &bytes, "invalid ProxyConfig") else {
        return Ok(ExitCode::from(1));
    };
    // Offline, the reference cannot be read: a visibly fake user stands in so every document
    // renders as is, and stderr says so.
    let users = match (users, validated.basic_auth()) {
        (None, Some(auth)) => {
            let reference = match &auth.users_from {
                spec::UsersFrom::ConsulKey(k) => format!("Consul key {k}"),
                spec::UsersFrom::File(f) => format!("file {f}"),
            };
            eprintln!(
                "note: basic-auth users ({reference}) are not read offline; the render shows the placeholder {:?} in their place. \
                 Pass --basic-auth-users FILE (htpasswd lines) to render the real ones.",
                super::cluster::users_placeholder(&validated)
            );
            Some(vec![
                super::cluster::users_placeholder(&validated).to_owned(),
            ])
        }
        (users, _) => users,
    };
    // A policy set's users are not read offline either: the placeholder stands in for them.
    let ctx = RenderContext {
        prefix: args.prefix.clone(),
        owner: args.owner.clone(),
        basic_auth_users: users,
        ..RenderContext::default()
    }
    .with_unresolved_users(
        &validated,
        &[super::cluster::users_placeholder(&validated).to_owned()],
    );
    let rendered = match render_all(&validated, &ctx) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("{}: {e}", args.file.display());
            if matches!(e, render::Error::UnresolvedSecret { .. }) {
                eprintln!("  pass --basic-auth-users FILE (htpasswd lines) to render it");
            }
            return Ok(ExitCode::from(1));
        }
    };
    let doc = to_document(&rendered.0, rendered.1.as_ref());
    let text = match args.output {
        Output::Json => {
            let mut s = serde_json::to_string_pretty(&doc).context("failed to encode JSON")?;
            s.push('\n');
            s
        }
        Output::Yaml => serde_saphyr::to_string(&doc).context("failed to encode YAML")?,
    };
    super::validate::write_quietly(std::io::stdout().lock(), &text)
        .context("failed to write to stdout")?;
    Ok(ExitCode::SUCCESS)
}

/// What the loop renders (through the proxy's driver), and for Caddy the live config the loop
/// loads through the admin API, without catalog routes: it holds the policy the bootstrap
/// config in the job leaves out, so the user sees the policy (redacted).
fn render_all(
    spec: &spec::ValidatedSpec,
    ctx: &RenderContext,
) -> render::Result<(render::Rendered, Option<Value>)> {
    let rendered = crate::proxy::render(spec, ctx, &format!("{}/traefik/", ctx.prefix))?;
    if rendered.caddy.is_none() {
        return Ok((rendered, None));
    }
    let model = render::resolve(spec, ctx)?;
    let live = crate::proxy::caddy::live(&model, &crate::proxy::caddy::RouteTable::default())?;
    let live = serde_json::from_slice(&live.body).map_err(render::Error::SerializeJson)?;
    Ok((rendered, Some(live)))
}

/// Everything rendered, as one document; secret KV values, Caddy basic-auth passwords and any
/// string shaped like a password hash are replaced by `<redacted>`.
pub(super) fn to_document(r: &render::Rendered, caddy_load: Option<&Value>) -> Value {
    let mut doc = Map::new();
    doc.insert("job".into(), r.job.clone());
    doc.insert("jobDigest".into(), json!(r.job_digest));
    if let Some(yaml) = &r.traefik_static {
        doc.insert("traefikStatic".into(), json!(yaml));
    }
    // Caddy's policy entry too: it is what the loop writes under the policy root.
    if r.traefik_static.is_some() || !r.traefik_kv.is_empty() {
        let kv: Map<String, Value> = r
            .traefik_kv
            .iter()
            .map(|(k, v)| {
                let shown = if render::traefik::is_secret_key(k)
                    && v != super::cluster::USERS_PLACEHOLDER
                {
                    "<redacted>"
                } else {
                    v.as_str()
                };
                (k.clone(), json!(shown))
            })
            .collect();
        doc.insert("traefikKv".into(), Value::Object(kv));
        doc.insert("kvDigest".into(), json!(r.kv_digest));
    }
    if let Some(caddy) = &r.caddy {
        doc.insert("caddy".into(), caddy.clone());
    }
    if let Some(live) = caddy_load {
        doc.insert("caddyLoad".into(), live.clone());
    }
    let mut doc = Value::Object(doc);
    redact(&mut doc);
    doc
}

/// Replaces secrets anywhere in `value`: `password` members (Caddy's `http_basic` accounts) and
/// strings that carry a password hash, wherever a future renderer puts them (embedded configs
/// included).
fn redact(value: &mut Value) {
    match value {
        Value::Object(map) => {
            for (k, v) in map.iter_mut() {
                if k == "password" && v.is_string() {
                    *v = json!(REDACTED);
                } else {
                    redact(v);
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(redact),
        Value::String(s) if crate::spec::looks_secret(s) => *s = REDACTED.to_string(),
        _ => {}
    }
}

const REDACTED: &str = "<redacted>";
