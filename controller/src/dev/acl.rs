//! ACLs of the dev environment.
//!
//! `dev` starts the twin with ACLs on and a generated management token (issue 15): without
//! one, any web page on the machine could `PUT /v1/jobs` a `raw_exec` job to the dev Nomad port
//! and run commands as the user. The token reaches the operator's clients in-process and is
//! written to a 0600 file the printed `curl` lines read with `$(cat FILE)`; it is never
//! printed.
//!
//! The proxy gets no token. Real Nomad would deliver one without putting it into the job (a
//! `template` with `env = true` reading a Nomad Variable, or Workload Identity), but the twin's
//! executor has neither, and a token in the job spec is readable by anyone with `read-job`.
//! Instead the anonymous Consul token carries exactly the shipped proxy policy
//! (`nomad-jobs/acl/consul-traefik.hcl`: read services, nodes and `<prefix>/traefik/`), which
//! is what Traefik's Consul Catalog and Consul KV providers need. Nothing anonymous can write.
//! Traefik's Nomad provider is refused (403) and stays empty: dev routes from the Consul
//! catalog. Caddy needs neither: the operator loads its routes through the admin API.

use std::io::Write as _;
use std::net::SocketAddr;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::Path;

use super::{Error, Result};

/// Name of the token file in the work directory.
pub const TOKEN_FILE: &str = "acl-token";

/// Consul's anonymous token (`acl.AnonymousTokenID`): what a request without a token runs as.
const ANONYMOUS_ACCESSOR: &str = "00000000-0000-0000-0000-000000000002";

/// The shipped least-privilege policy of the proxy, for the default prefix.
const PROXY_POLICY: &str = include_str!("../../../nomad-jobs/acl/consul-traefik.hcl");

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

/// Links the proxy policy to Consul's anonymous token, with the management token.
pub(super) async fn grant_proxy_reads(consul: SocketAddr, token: &str, prefix: &str) -> Result<()> {
    let client = reqwest::Client::builder()
        .no_proxy()
        .build()
        .map_err(|source| Error::AclRequest {
            step: "build an HTTP client for the twin's ACL API",
            source,
        })?;
    let send = |step: &'static str, url: String, body: serde_json::Value| {
        let request = client.put(url).header("X-Consul-Token", token).json(&body);
        async move {
            let response = request
                .send()
                .await
                .map_err(|source| Error::AclRequest { step, source })?;
            let status = response.status();
            if status.is_success() {
                return Ok(());
            }
            let answer = response.text().await.unwrap_or_default();
            Err(Error::AclRefused {
                step,
                status: status.as_u16(),
                answer: answer.trim().to_owned(),
            })
        }
    };
    send(
        "create the proxy's Consul policy",
        format!("http://{consul}/v1/acl/policy"),
        serde_json::json!({
            "Name": "proxy-traefik",
            "Description": "proxy-operator dev: what the proxy's Consul providers read",
            "Rules": proxy_policy(prefix),
        }),
    )
    .await?;
    send(
        "link the proxy's policy to the anonymous token",
        format!("http://{consul}/v1/acl/token/{ANONYMOUS_ACCESSOR}"),
        serde_json::json!({
            "Description": "Anonymous Token",
            "Policies": [{"Name": "proxy-traefik"}],
        }),
    )
    .await
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
    async fn anonymous_may_read_only_the_proxys_tree_once_granted_and_a_refusal_never_shows_the_token()
     {
        let twin = hashistack_twin::Twin::start(hashistack_twin::TwinConfig {
            acl_token: Some("management-sentinel-7f3a".to_owned()),
            ..hashistack_twin::TwinConfig::default()
        })
        .await
        .unwrap();
        let consul = twin.consul_addr();
        let e = grant_proxy_reads(consul, "wrong-sentinel-91c2", "edge")
            .await
            .unwrap_err();
        assert!(matches!(e, Error::AclRefused { status: 403, .. }), "{e:?}");
        let text = format!("{e} {e:?}");
        assert!(!text.contains("wrong-sentinel-91c2"), "{text}");
        assert!(text.contains("create the proxy's Consul policy"), "{text}");

        grant_proxy_reads(consul, "management-sentinel-7f3a", "edge")
            .await
            .unwrap();
        let client = reqwest::Client::builder().no_proxy().build().unwrap();
        let status = |key: &'static str| {
            let request = client.get(format!("http://{consul}/v1/kv/{key}"));
            async move { request.send().await.unwrap().status().as_u16() }
        };
        // Allowed and absent (404), against refused (403).
        assert_eq!(status("edge/traefik/http/routers").await, 404);
        assert_eq!(status("edge/config").await, 403);
        assert_eq!(status("proxy-operator/traefik/x").await, 403);
        let write = client
            .put(format!("http://{consul}/v1/kv/edge/traefik/x"))
            .body("x")
            .send()
            .await
            .unwrap();
        assert_eq!(write.status().as_u16(), 403);
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
