//! `debug dump DIR`: one directory with what a bug report needs. Every file goes through
//! [`redact_json`] (or the line filter for the document): basic-auth users, anything shaped
//! like a password hash or key, and members named like tokens, passwords or secrets.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context as _;
use serde_json::{Value, json};

use super::super::cluster;
use crate::consul::ConsulApi;
use crate::nomad::NomadApi;
use crate::spec::{self, looks_secret};
use crate::transport::{ConsulFlags, NomadFlags, QueryOptions};

const REDACTED: &str = "<redacted>";

/// Arguments of `debug dump`.
#[derive(Debug, clap::Args)]
#[command(
    after_help = "Exit codes: 0 everything collected, 1 some parts could not be read \
(listed in DIR/README.txt), 2 usage or IO error."
)]
pub struct Args {
    /// Directory to write (created when missing).
    dir: PathBuf,
    /// KV prefix the operator uses.
    #[arg(long, value_parser = super::super::kv_prefix, default_value = "proxy-operator")]
    prefix: String,
    /// Base URL of the proxy's API (Traefik's `/api/rawdata`); skipped when not given.
    #[arg(long)]
    proxy_api: Option<String>,
    #[command(flatten)]
    consul: Box<ConsulFlags>,
    #[command(flatten)]
    nomad: Box<NomadFlags>,
}

/// Whether a member name says its value is secret.
fn secret_name(name: &str) -> bool {
    let n = name.to_ascii_lowercase();
    ["token", "password", "secret", "privatekey", "private_key"]
        .iter()
        .any(|m| n.contains(m))
        || n.contains("basicauth/users")
}

/// Replaces secrets anywhere in a JSON value.
pub(super) fn redact_json(value: &mut Value) {
    match value {
        Value::Object(map) => {
            for (k, v) in map.iter_mut() {
                if secret_name(k) && !v.is_null() {
                    *v = json!(REDACTED);
                } else {
                    redact_json(v);
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(redact_json),
        Value::String(s) if looks_secret(s) => *s = REDACTED.to_owned(),
        _ => {}
    }
}

/// A document's text with any secret-looking line replaced (documents hold references, never
/// secrets, but a pasted hash must not travel in a bug report).
fn redact_text(text: &str) -> String {
    text.lines()
        .map(|l| {
            if looks_secret(l) {
                format!("# {REDACTED} line")
            } else {
                l.to_owned()
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
        + "\n"
}

fn write(dir: &Path, name: &str, text: &str) -> anyhow::Result<()> {
    let path = dir.join(name);
    std::fs::write(&path, text).with_context(|| format!("failed to write {}", path.display()))
}

fn write_json(dir: &Path, name: &str, mut value: Value) -> anyhow::Result<()> {
    redact_json(&mut value);
    write(dir, name, &(serde_json::to_string_pretty(&value)? + "\n"))
}

fn kv_json(bytes: &[u8]) -> Value {
    serde_json::from_slice(bytes)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(bytes).into_owned()))
}

/// Runs `debug dump`.
pub async fn run(args: Args) -> anyhow::Result<ExitCode> {
    std::fs::create_dir_all(&args.dir)
        .with_context(|| format!("failed to create {}", args.dir.display()))?;
    let dir = args.dir.as_path();
    let consul = cluster::consul(*args.consul)?;
    let nomad = cluster::nomad(*args.nomad)?;
    let p = &args.prefix;
    let mut notes: Vec<String> = Vec::new();
    let mut missing = |what: &str, e: &dyn std::fmt::Display| notes.push(format!("{what}: {e}"));

    let config_key = format!("{p}/config");
    let document = match consul.kv_get(&config_key, QueryOptions::NOW).await {
        Ok((Some(pair), _)) => {
            write(
                dir,
                "config.yaml",
                &redact_text(&String::from_utf8_lossy(&pair.value)),
            )?;
            Some(pair.value)
        }
        Ok((None, _)) => {
            missing(&config_key, &"absent");
            None
        }
        Err(e) => {
            missing(&config_key, &e);
            None
        }
    };
    for (name, key) in [
        ("status.json", format!("{p}/status")),
        ("journal.json", format!("{p}/rollout")),
    ] {
        match consul.kv_get(&key, QueryOptions::NOW).await {
            Ok((Some(pair), _)) => write_json(dir, name, kv_json(&pair.value))?,
            Ok((None, _)) => missing(&key, &"absent"),
            Err(e) => missing(&key, &e),
        }
    }
    let kv_root = format!("{p}/traefik/");
    match consul.kv_list(&kv_root, QueryOptions::NOW).await {
        Ok((pairs, _)) => {
            let tree: serde_json::Map<String, Value> = pairs
                .into_iter()
                .map(|pair| {
                    let v = if crate::render::traefik::is_secret_key(&pair.key) {
                        json!(REDACTED)
                    } else {
                        json!(String::from_utf8_lossy(&pair.value))
                    };
                    (pair.key, v)
                })
                .collect();
            write_json(dir, "policy-tree.json", Value::Object(tree))?;
        }
        Err(e) => missing(&kv_root, &e),
    }
    let spec = document.as_deref().and_then(|d| spec::load(d).ok());
    if let Some(spec) = &spec {
        // Users are never read for a dump: the placeholder stands in.
        let (ctx, _) = cluster::render_context(spec, p, None).await?;
        // The loop's own entry point, so a Caddy dump shows the job and key it registers.
        match crate::proxy::render(spec, &ctx, &kv_root) {
            Ok(r) => write_json(
                dir,
                "rendered.json",
                super::super::render::to_document(&r, None),
            )?,
            Err(e) => missing("render", &e),
        }
        let job_id = spec.job().id.clone();
        match nomad.job_read(&job_id, QueryOptions::NOW).await {
            Ok((Some(job), _)) => write_json(dir, "job.json", job.raw)?,
            Ok((None, _)) => missing(&format!("job {job_id}"), &"absent"),
            Err(e) => missing(&format!("job {job_id}"), &e),
        }
        match nomad.job_versions(&job_id, false).await {
            Ok(v) => {
                let versions: Vec<Value> = v.versions.into_iter().map(|j| j.raw).collect();
                write_json(dir, "job-versions.json", Value::Array(versions))?;
            }
            Err(e) => missing(&format!("versions of job {job_id}"), &e),
        }
    } else if document.is_some() {
        missing(
            "render",
            &"the document does not validate (see status.json)",
        );
    }
    if let Some(api) = &args.proxy_api {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let url = format!("{}/api/rawdata", api.trim_end_matches('/'));
        let got = async {
            reqwest::Client::builder()
                .timeout(std::time::Duration::from_secs(5))
                .build()?
                .get(&url)
                .send()
                .await?
                .error_for_status()?
                .json::<Value>()
                .await
        }
        .await;
        match got {
            Ok(v) => write_json(dir, "proxy-rawdata.json", v)?,
            Err(e) => missing(&url, &e),
        }
    }
    let mut readme = String::from(
        "proxy-operator debug dump. Secrets (basic-auth users, tokens, password hashes, keys) are replaced by <redacted>.\n",
    );
    let _ = writeln!(readme, "prefix: {p}");
    if !notes.is_empty() {
        readme.push_str("\nNot collected:\n");
        for n in &notes {
            let _ = writeln!(readme, "- {}", if looks_secret(n) { REDACTED } else { n });
        }
    }
    write(dir, "README.txt", &readme)?;
    eprintln!("wrote {}", dir.display());
    Ok(ExitCode::from(u8::from(!notes.is_empty())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_members_hashes_and_basic_auth_keys_are_redacted() {
        let mut v = json!({
            "Env": {"CONSUL_HTTP_TOKEN": "abc", "PATH": "/bin"},
            "users": ["u:$2y$05$xyz"],
            "proxy-operator/traefik/http/middlewares/m/basicAuth/users/0": "u:plain",
        });
        redact_json(&mut v);
        assert_eq!(v["Env"]["CONSUL_HTTP_TOKEN"], REDACTED);
        assert_eq!(v["Env"]["PATH"], "/bin");
        assert_eq!(v["users"][0], REDACTED);
        assert_eq!(
            v["proxy-operator/traefik/http/middlewares/m/basicAuth/users/0"],
            REDACTED
        );
        assert_eq!(
            redact_text("a: 1\nb: u:$apr1$x\n"),
            "a: 1\n# <redacted> line\n"
        );
    }
}
