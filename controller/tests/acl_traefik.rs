//! The proxy's shipped policies (`nomad-jobs/acl/consul-traefik.hcl`, `nomad-traefik.hcl`)
//! against the twin with ACLs on and real Traefik 3.7.15 holding only those tokens: its
//! consulCatalog, Consul KV and Nomad providers each discover a service and route real traffic
//! to a real backend on 127.0.0.1, without one refused call; and with the same tokens, the
//! calls next to Traefik's are refused.
#![allow(clippy::unwrap_used, clippy::panic)] // tests fail loudly

mod acl_common;
#[path = "../../tests/support/mod.rs"]
mod support;

use std::process::Command;
use std::time::Duration;

use acl_common::*;
use hashistack_twin::{Api, Twin};
use proxy_operator::consul::{ConsulApi, TxnOp};
use serde_json::json;
use support::{Backend, ChildGuard, eventually, free_port, get_with_host, traefik_bin};

const P: &str = "proxy-operator";

/// Where Traefik finds its tokens.
#[derive(Clone, Copy, PartialEq)]
enum Tokens {
    /// In the static config file, as a job template renders it.
    InConfig,
    /// Only in the environment (`CONSUL_HTTP_TOKEN`, `NOMAD_TOKEN`), as a template with
    /// `env = true` would give them.
    InEnv,
}

/// Traefik with the three providers the operator renders.
fn start_traefik(
    t: &Twin,
    consul_token: &str,
    dir: &std::path::Path,
    tokens: Tokens,
) -> (ChildGuard, u16, u16) {
    let (web, ping) = (free_port(), free_port());
    let (in_file_consul, in_file_nomad) = match tokens {
        Tokens::InConfig => (consul_token, NOMAD_TRAEFIK),
        Tokens::InEnv => ("", ""),
    };
    let consul = t.consul_addr();
    let nomad = t.nomad_addr();
    let config = format!(
        r#"
entryPoints:
  web:
    address: "127.0.0.1:{web}"
  traefik:
    address: "127.0.0.1:{ping}"
ping:
  entryPoint: traefik
log:
  level: DEBUG
providers:
  providersThrottleDuration: 100ms
  consulCatalog:
    exposedByDefault: false
    refreshInterval: 1s
    endpoint:
      address: "{consul}"
      token: "{in_file_consul}"
  consul:
    rootKey: "{P}/traefik"
    endpoints: ["{consul}"]
    token: "{in_file_consul}"
  nomad:
    exposedByDefault: false
    watch: true
    endpoint:
      address: "http://{nomad}"
      token: "{in_file_nomad}"
"#
    );
    let path = dir.join("traefik.yml");
    std::fs::write(&path, config).unwrap();
    let mut cmd = Command::new(traefik_bin());
    cmd.arg(format!("--configfile={}", path.display()))
        .env_remove("CONSUL_HTTP_TOKEN")
        .env_remove("NOMAD_TOKEN")
        .env_remove("NOMAD_ADDR")
        .env("HOME", dir)
        .env("XDG_CONFIG_HOME", dir);
    if tokens == Tokens::InEnv {
        cmd.env("CONSUL_HTTP_TOKEN", consul_token)
            .env("NOMAD_TOKEN", NOMAD_TRAEFIK);
    }
    (ChildGuard::spawn(cmd, &dir.join("traefik.log")), web, ping)
}

async fn root_put(t: &Twin, path: &str, body: serde_json::Value) {
    let (s, text, _) = consul_raw(t, ROOT, "PUT", path, Some(body.to_string().into_bytes())).await;
    assert_eq!(s, 200, "{path}: {text}");
}

async fn routed_to(web: u16, host: &str, backend: &str) -> bool {
    eventually(Duration::from_secs(20), || async move {
        get_with_host(web, host, "/")
            .await
            .filter(|seen| seen.status == 200 && seen.header("x-backend") == Some(backend))
    })
    .await
    .is_some()
}

/// The real backends of the three routes (Consul catalog, Consul KV, Nomad).
struct Backends {
    _catalog: Backend,
    _kv: Backend,
    _nomad: Backend,
}

/// Seeds the cluster with the management token and returns Traefik's Consul token.
async fn seed_cluster(t: &Twin) -> (String, Backends) {
    let consul_token = consul_token(t, "proxy-traefik", &policy("consul-traefik.hcl")).await;
    let (catalog_backend, kv_backend, nomad_backend) = (
        Backend::start("catalog").await,
        Backend::start("kv").await,
        Backend::start("nomad").await,
    );

    // What the cluster holds: a Consul service, the operator's policy tree, a Nomad service,
    // and the keys next to the tree that Traefik must not see.
    root_put(
        t,
        "/v1/catalog/register",
        json!({
            "Node": "hashistack-twin", "Address": "127.0.0.1", "SkipNodeUpdate": true,
            "Service": {"ID": "cat-1", "Service": "cat", "Address": "127.0.0.1", "Port": catalog_backend.port(),
                "Tags": ["traefik.enable=true", "traefik.http.routers.cat.rule=Host(`cat.test`)", "traefik.http.routers.cat.entrypoints=web"]},
            "Check": {"CheckID": "service:cat-1", "Name": "cat alive", "Status": "passing", "ServiceID": "cat-1"}
        }),
    )
    .await;
    let root = consul_client(t, ROOT);
    let kv = |k: &str, v: &str| TxnOp::Set {
        key: format!("{P}/traefik/{k}"),
        value: v.as_bytes().to_vec(),
    };
    root.txn(vec![
        kv("http/routers/kv/rule", "Host(`kv.test`)"),
        kv("http/routers/kv/entryPoints/0", "web"),
        kv("http/routers/kv/service", "kv"),
        kv("http/routers/kv/middlewares/0", "policy"),
        kv(
            "http/services/kv/loadBalancer/servers/0/url",
            &format!("http://127.0.0.1:{}", kv_backend.port()),
        ),
        kv(
            "http/middlewares/policy/headers/customResponseHeaders/X-Policy",
            "from-kv",
        ),
    ])
    .await
    .unwrap();
    for key in [format!("{P}/config"), format!("{P}/secrets/users")] {
        assert!(root.kv_put(&key, b"not for traefik", None).await.unwrap());
    }
    let job = json!({"Job": {
        "ID": "whoami", "Datacenters": ["dc1"],
        "TaskGroups": [{
            "Name": "web",
            "Networks": [{"ReservedPorts": [{"Label": "http", "Value": nomad_backend.port()}]}],
            "Services": [{"Name": "whoami", "PortLabel": "http", "Provider": "nomad",
                "Tags": ["traefik.enable=true", "traefik.http.routers.nomad.rule=Host(`nomad.test`)", "traefik.http.routers.nomad.entrypoints=web"]}],
            "Tasks": [{"Name": "hold", "Driver": "raw_exec", "Config": {"command": "/bin/sh", "args": ["-c", "exec sleep 600"]}}]
        }]
    }});
    let (s, text) = nomad_raw(t, ROOT, "PUT", "/v1/jobs", Some(job)).await;
    assert_eq!(s, 200, "{text}");

    let backends = Backends {
        _catalog: catalog_backend,
        _kv: kv_backend,
        _nomad: nomad_backend,
    };
    (consul_token, backends)
}

async fn wait_up(traefik: &mut ChildGuard, ping: u16) {
    let up = eventually(Duration::from_secs(10), || async move {
        reqwest::get(format!("http://127.0.0.1:{ping}/ping"))
            .await
            .ok()
            .filter(|r| r.status() == 200)
    })
    .await;
    assert!(
        up.is_some(),
        "Traefik never answered /ping (exit {:?}):\n{}",
        traefik.try_wait(),
        traefik.log()
    );
}

#[tokio::test]
async fn traefik_discovers_and_routes_through_all_three_providers_with_only_the_shipped_tokens() {
    let t = acl_twin().await;
    let (consul_token, _backends) = seed_cluster(&t).await;
    let dir = tempfile::tempdir().unwrap();
    let (mut traefik, web, ping) = start_traefik(&t, &consul_token, dir.path(), Tokens::InConfig);
    wait_up(&mut traefik, ping).await;

    for (host, backend) in [
        ("cat.test", "catalog"),
        ("kv.test", "kv"),
        ("nomad.test", "nomad"),
    ] {
        assert!(
            routed_to(web, host, backend).await,
            "no route for {host} to the {backend} backend; log:\n{}",
            traefik.log()
        );
    }
    let seen = get_with_host(web, "kv.test", "/").await.unwrap();
    assert_eq!(
        seen.header("x-policy"),
        Some("from-kv"),
        "the KV middleware applies"
    );

    // Traefik used its providers through the twin and was refused nothing.
    let consul_log = t.faults().request_log(Api::Consul);
    assert!(
        consul_log
            .iter()
            .any(|r| r.uri.starts_with(&format!("/v1/kv/{P}/traefik"))),
        "{consul_log:#?}"
    );
    assert!(
        consul_log
            .iter()
            .any(|r| r.uri.starts_with("/v1/catalog/services")),
        "{consul_log:#?}"
    );
    let log = traefik.log();
    // (Not a bare "403": ephemeral ports in the log may contain it.)
    for refusal in [
        "Permission denied",
        "ACL not found",
        "response code: 403",
        "Unexpected response code",
    ] {
        assert!(
            !log.contains(refusal),
            "Traefik was refused something ({refusal}):\n{log}"
        );
    }

    // Next to what Traefik does, the same tokens are refused.
    for (path, body) in [
        (format!("/v1/kv/{P}/traefik/http/routers/kv/rule"), "x"),
        (format!("/v1/kv/{P}/status"), "x"),
        ("/v1/session/create".to_owned(), "{}"),
    ] {
        let (s, text, _) = consul_raw(
            &t,
            &consul_token,
            "PUT",
            &path,
            Some(body.as_bytes().to_vec()),
        )
        .await;
        assert_eq!(s, 403, "PUT {path}: {text}");
        assert!(text.starts_with("Permission denied"), "{text}");
    }
    for key in [
        format!("{P}/config"),
        format!("{P}/secrets/users"),
        format!("{P}/leader"),
    ] {
        let (s, text, _) =
            consul_raw(&t, &consul_token, "GET", &format!("/v1/kv/{key}"), None).await;
        assert_eq!(s, 403, "GET {key}: {text}");
    }
    let (s, body, filtered) = consul_raw(
        &t,
        &consul_token,
        "GET",
        &format!("/v1/kv/{P}?recurse"),
        None,
    )
    .await;
    assert_eq!(s, 200, "{body}");
    assert_eq!(
        filtered.as_deref(),
        Some("true"),
        "the listing says it was filtered"
    );
    assert!(
        !body.contains("secrets") && !body.contains("\"proxy-operator/config\""),
        "{body}"
    );
    let (s, text, _) = consul_raw(
        &t,
        &consul_token,
        "PUT",
        "/v1/catalog/register",
        Some(br#"{"Node": "evil", "Address": "10.9.9.9"}"#.to_vec()),
    )
    .await;
    assert_eq!(s, 403, "{text}");
    for (method, path, body) in [
        (
            "PUT",
            "/v1/jobs",
            Some(json!({"Job": {"ID": "evil", "TaskGroups": []}})),
        ),
        ("DELETE", "/v1/job/whoami", None),
        ("GET", "/v1/nodes", None),
        ("GET", "/v1/agent/self", None),
        ("GET", "/v1/jobs?namespace=prod", None),
    ] {
        let (s, text) = nomad_raw(&t, NOMAD_TRAEFIK, method, path, body).await;
        assert_eq!(
            (s, text.as_str()),
            (403, "Permission denied"),
            "{method} {path}"
        );
    }
    drop(traefik);
    t.shutdown().await;
}

/// How the proxy job may hand Traefik its tokens: the Consul providers read
/// `CONSUL_HTTP_TOKEN` from the environment, the Nomad provider does not read `NOMAD_TOKEN`
/// (its client is built from the static config alone) and is refused. The Nomad token must be
/// rendered into the static config.
#[tokio::test]
async fn traefiks_nomad_provider_ignores_nomad_token_in_its_environment_while_consuls_read_theirs()
{
    let t = acl_twin().await;
    let (consul_token, _backends) = seed_cluster(&t).await;
    let dir = tempfile::tempdir().unwrap();
    let (mut traefik, web, ping) = start_traefik(&t, &consul_token, dir.path(), Tokens::InEnv);
    wait_up(&mut traefik, ping).await;
    for (host, backend) in [("cat.test", "catalog"), ("kv.test", "kv")] {
        assert!(
            routed_to(web, host, backend).await,
            "no route for {host} with the token in CONSUL_HTTP_TOKEN; log:\n{}",
            traefik.log()
        );
    }
    let refused = eventually(Duration::from_secs(10), || {
        let log = traefik.log();
        async move {
            log.contains("watching Nomad events: Unexpected response code: 403")
                .then_some(())
        }
    })
    .await;
    assert!(refused.is_some(), "log:\n{}", traefik.log());
    let seen = get_with_host(web, "nomad.test", "/").await.unwrap();
    assert_eq!(
        seen.status, 404,
        "no Nomad route without a token in the config"
    );
    drop(traefik);
    t.shutdown().await;
}
