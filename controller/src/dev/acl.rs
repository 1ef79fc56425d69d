//! ACLs of the dev environment.
//!
//! `dev` starts the twin with ACLs on and a generated management token (issue 15): without
//! one, any web page on the machine could `PUT /v1/jobs` a `raw_exec` job to the dev Nomad port
//! and run commands as the user. The token reaches the operator's clients in-process and is
//! written to a 0600 file the printed `curl` lines read with `$(cat FILE)`; it is never
//! printed.
//!
//! The proxy gets its tokens the Nomad way, never in its job spec (anyone with `read-job` reads
//! a job): dev mints a Consul token with the shipped proxy policy
//! (`nomad-jobs/acl/consul-traefik.hcl`, for the dev prefix) and a Nomad token with
//! `nomad-jobs/acl/nomad-traefik.hcl`, and writes both to the Nomad Variable
//! `nomad/jobs/<proxy job id>` (items `consul_token`, `nomad_token`); the starter document
//! sets `spec.job.tokens: {nomadVariable: {}}`, so the rendered job's templates read them when
//! the twin's executor starts Traefik. Anonymous gets nothing. Caddy needs no token: the
//! operator loads its routes through the admin API (its starter sets no `tokens`; the variable
//! is written anyway and unused).

use std::io::Write as _;
use std::net::SocketAddr;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::Path;

use super::{Error, Result};

/// Name of the token file in the work directory.
pub const TOKEN_FILE: &str = "acl-token";

/// The shipped least-privilege Consul policy of the proxy, for the default prefix.
const PROXY_POLICY: &str = include_str!("../../../nomad-jobs/acl/consul-traefik.hcl");

/// The shipped Nomad policy of the proxy (its Nomad provider reads service registrations).
const NOMAD_PROXY_POLICY: &str = include_str!("../../../nomad-jobs/acl/nomad-traefik.hcl");

/// The name of the proxy's policies and tokens in both APIs.
const PROXY_POLICY_NAME: &str = "proxy-traefik";

/// A fresh directory for the token file and the starter document under the system temp dir,
/// `0700` and unguessable: a directory someone else made in advance under a predictable name
/// could let them swap the files the printed commands read.
pub(super) fn private_temp_dir() -> Result<std::path::PathBuf> {
    use std::os::unix::fs::DirBuilderExt as _;
    let random = uuid::Uuid::new_v4().simple().to_string();
    let dir = std::env::temp_dir().join(format!(
        "proxy-operator-dev-{}-{}",
        std::process::id(),
        &random[..12]
    ));
    std::fs::DirBuilder::new()
        .mode(0o700)
        .create(&dir)
        .map_err(|source| Error::Private {
            what: "the dev work directory",
            path: dir.clone(),
            source,
        })?;
    Ok(dir)
}

/// Writes `token` to `path`, readable by the user only (created 0600, never widened).
pub(super) fn write_token_file(path: &Path, token: &str) -> Result<()> {
    let write = || -> std::io::Result<()> {
        // A file left by an earlier run with wider permissions must not keep them.
        match std::fs::remove_file(path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
            _ => {}
        }
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path)?;
        file.write_all(token.as_bytes())?;
        file.write_all(b"\n")
    };
    write().map_err(|source| Error::Private {
        what: "the ACL token file",
        path: path.to_path_buf(),
        source,
    })
}

/// The proxy policy for `prefix` (the shipped file names the default prefix).
pub(super) fn proxy_policy(prefix: &str) -> String {
    PROXY_POLICY.replace(
        &format!("\"{}/", crate::render::DEFAULT_PREFIX),
        &format!("\"{prefix}/"),
    )
}

/// The variable path the proxy job reads its tokens from: the default of
/// `spec.job.tokens.nomadVariable.path`, which Workload Identity lets the job's tasks read.
pub(super) fn tokens_variable_path(job_id: &str) -> String {
    format!("nomad/jobs/{job_id}")
}

/// The twin's ACL API, driven with the management token.
struct Admin<'a> {
    client: reqwest::Client,
    token: &'a str,
}

/// Whether a refusal's answer may be shown: an answer to a write of secrets may echo them.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Answer {
    Show,
    Withhold,
}

impl Admin<'_> {
    /// `PUT url` with `body` as JSON; the answer's JSON (`Null` when empty).
    async fn put(
        &self,
        step: &'static str,
        url: String,
        header: &'static str,
        body: serde_json::Value,
        show: Answer,
    ) -> Result<serde_json::Value> {
        let response = self
            .client
            .put(url)
            .header(header, self.token)
            .json(&body)
            .send()
            .await
            .map_err(|source| Error::AclRequest { step, source })?;
        let status = response.status();
        let text = response.text().await.unwrap_or_default();
        if !status.is_success() {
            return Err(Error::AclRefused {
                step,
                status: status.as_u16(),
                answer: match show {
                    Answer::Show => text.trim().to_owned(),
                    Answer::Withhold => "(withheld: it may hold the tokens)".to_owned(),
                },
            });
        }
        Ok(serde_json::from_str(&text).unwrap_or(serde_json::Value::Null))
    }

    /// The `SecretID` of a token-creating answer.
    fn secret(step: &'static str, answer: &serde_json::Value) -> Result<String> {
        answer["SecretID"]
            .as_str()
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .ok_or(Error::AclRefused {
                step,
                status: 200,
                answer: "the answer has no SecretID".to_owned(),
            })
    }
}

/// Mints the proxy's Consul and Nomad tokens from the shipped policies and writes them to the
/// Nomad Variable `nomad/jobs/<job_id>`, with the management token. The tokens stay in the
/// twin: nothing here logs or returns them.
pub(super) async fn provision_proxy_tokens(
    consul: SocketAddr,
    nomad: SocketAddr,
    token: &str,
    prefix: &str,
    job_id: &str,
) -> Result<()> {
    let client = reqwest::Client::builder()
        .no_proxy()
        .build()
        .map_err(|source| Error::AclRequest {
            step: "build an HTTP client for the twin's ACL API",
            source,
        })?;
    let admin = Admin { client, token };
    const CONSUL: &str = "X-Consul-Token";
    const NOMAD: &str = "X-Nomad-Token";
    admin
        .put(
            "create the proxy's Consul policy",
            format!("http://{consul}/v1/acl/policy"),
            CONSUL,
            serde_json::json!({
                "Name": PROXY_POLICY_NAME,
                "Description": "proxy-operator dev: what the proxy's Consul providers read",
                "Rules": proxy_policy(prefix),
            }),
            Answer::Show,
        )
        .await?;
    let step = "create the proxy's Consul token";
    let answer = admin
        .put(
            step,
            format!("http://{consul}/v1/acl/token"),
            CONSUL,
            serde_json::json!({
                "Description": "proxy-operator dev: the proxy's Consul providers",
                "Policies": [{"Name": PROXY_POLICY_NAME}],
            }),
            Answer::Show,
        )
        .await?;
    let consul_token = Admin::secret(step, &answer)?;
    admin
        .put(
            "create the proxy's Nomad policy",
            format!("http://{nomad}/v1/acl/policy/{PROXY_POLICY_NAME}"),
            NOMAD,
            serde_json::json!({
                "Name": PROXY_POLICY_NAME,
                "Description": "proxy-operator dev: what the proxy's Nomad provider reads",
                "Rules": NOMAD_PROXY_POLICY,
            }),
            Answer::Show,
        )
        .await?;
    let step = "create the proxy's Nomad token";
    let answer = admin
        .put(
            step,
            format!("http://{nomad}/v1/acl/token"),
            NOMAD,
            serde_json::json!({
                "Name": PROXY_POLICY_NAME,
                "Type": "client",
                "Policies": [PROXY_POLICY_NAME],
            }),
            Answer::Show,
        )
        .await?;
    let nomad_token = Admin::secret(step, &answer)?;
    admin
        .put(
            "write the proxy's tokens to its Nomad Variable",
            format!("http://{nomad}/v1/var/{}", tokens_variable_path(job_id)),
            NOMAD,
            serde_json::json!({
                "Items": {"consul_token": consul_token, "nomad_token": nomad_token},
            }),
            Answer::Withhold,
        )
        .await?;
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // tests fail loudly
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt as _;

    #[test]
    fn the_token_file_is_readable_by_the_user_only_even_when_a_wider_one_was_left_behind() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(TOKEN_FILE);
        std::fs::write(&path, "old").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        write_token_file(&path, "s3cr3t").unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "s3cr3t\n");
    }

    #[test]
    fn the_work_directory_is_fresh_and_private_to_the_user() {
        let (a, b) = (private_temp_dir().unwrap(), private_temp_dir().unwrap());
        assert_ne!(a, b);
        let mode = std::fs::metadata(&a).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o700);
        std::fs::remove_dir(&a).unwrap();
        std::fs::remove_dir(&b).unwrap();
    }

    #[tokio::test]
    async fn the_proxys_variable_holds_tokens_of_the_shipped_policies_and_anonymous_gets_nothing() {
        const MANAGEMENT: &str = "management-sentinel-7f3a";
        let twin = hashistack_twin::Twin::start(hashistack_twin::TwinConfig {
            acl_token: Some(MANAGEMENT.to_owned()),
            ..hashistack_twin::TwinConfig::default()
        })
        .await
        .unwrap();
        let (consul, nomad) = (twin.consul_addr(), twin.nomad_addr());
        let e = provision_proxy_tokens(consul, nomad, "wrong-sentinel-91c2", "edge", "proxy")
            .await
            .unwrap_err();
        assert!(matches!(e, Error::AclRefused { status: 403, .. }), "{e:?}");
        let text = format!("{e} {e:?}");
        assert!(!text.contains("wrong-sentinel-91c2"), "{text}");
        assert!(text.contains("create the proxy's Consul policy"), "{text}");

        provision_proxy_tokens(consul, nomad, MANAGEMENT, "edge", "proxy")
            .await
            .unwrap();
        let client = reqwest::Client::builder().no_proxy().build().unwrap();
        let status = |url: String, header: &'static str, token: Option<String>| {
            let mut request = client.get(url);
            if let Some(token) = token {
                request = request.header(header, token);
            }
            async move { request.send().await.unwrap().status().as_u16() }
        };
        let variable: serde_json::Value = client
            .get(format!("http://{nomad}/v1/var/nomad/jobs/proxy"))
            .header("X-Nomad-Token", MANAGEMENT)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let item = |k: &str| Some(variable["Items"][k].as_str().unwrap().to_owned());
        let (consul_token, nomad_token) = (item("consul_token"), item("nomad_token"));
        assert_ne!(consul_token.as_deref(), Some(MANAGEMENT));
        assert_ne!(nomad_token.as_deref(), Some(MANAGEMENT));
        let kv = |key: &str| format!("http://{consul}/v1/kv/{key}");
        const C: &str = "X-Consul-Token";
        // The Consul token reads the proxy's tree (allowed and absent: 404) and nothing else.
        assert_eq!(
            status(kv("edge/traefik/http/routers"), C, consul_token.clone()).await,
            404
        );
        assert_eq!(
            status(kv("edge/config"), C, consul_token.clone()).await,
            403
        );
        let write = client
            .put(kv("edge/traefik/x"))
            .header(C, consul_token.clone().unwrap())
            .body("x")
            .send()
            .await
            .unwrap();
        assert_eq!(write.status().as_u16(), 403);
        // The Nomad token reads service registrations and submits nothing.
        const N: &str = "X-Nomad-Token";
        let services = format!("http://{nomad}/v1/services");
        assert_eq!(status(services.clone(), N, nomad_token.clone()).await, 200);
        let submit = client
            .put(format!("http://{nomad}/v1/jobs"))
            .header(N, nomad_token.clone().unwrap())
            .json(&serde_json::json!({"Job": {"ID": "x"}}))
            .send()
            .await
            .unwrap();
        assert_eq!(submit.status().as_u16(), 403);
        // Anonymous: neither the tree, nor the services, nor the variable.
        assert_eq!(status(kv("edge/traefik/http/routers"), C, None).await, 403);
        assert_eq!(status(services, N, None).await, 403);
        let var = format!("http://{nomad}/v1/var/nomad/jobs/proxy");
        assert_eq!(status(var, N, None).await, 403);
        twin.shutdown().await;
    }

    #[test]
    fn the_proxy_policy_reads_the_traefik_tree_of_the_dev_prefix_and_writes_nothing() {
        let rules = proxy_policy("edge");
        assert!(rules.contains("key_prefix \"edge/traefik/\""), "{rules}");
        assert!(!rules.contains("proxy-operator/"), "{rules}");
        assert!(!rules.contains("= \"write\""), "{rules}");
        assert_eq!(rules.matches("policy = \"read\"").count(), 3, "{rules}");
    }
}
