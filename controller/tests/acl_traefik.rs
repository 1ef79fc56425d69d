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

// === the proxy job as rendered with `spec.job.tokens` ===

/// What the Nomad client does with one of the job's templates, for exactly the actions the
/// operator renders: `env "X"` (the task's environment) and `with nomadVar "P"` ... `.item` ...
/// `end` (a Nomad Variable's items). Anything else fails the test: an action this renderer
/// does not know is an action nobody proved. The twin's executor has none of this (its
/// templates are literal data plus `{{ env }}`; no `Envvars`, Variables or workload
/// identities), so the test plays the client.
fn render_template(
    tmpl: &serde_json::Value,
    env: &std::collections::BTreeMap<String, String>,
    variables: &std::collections::BTreeMap<String, std::collections::BTreeMap<String, String>>,
) -> String {
    let data = tmpl["EmbeddedTmpl"].as_str().unwrap();
    let (left, right) = (
        tmpl["LeftDelim"].as_str().unwrap(),
        tmpl["RightDelim"].as_str().unwrap(),
    );
    let arg = |action: &str, func: &str| -> Option<String> {
        let rest = action.strip_prefix(func)?.trim();
        let quoted = (rest.starts_with('"') && rest.ends_with('"'))
            || (rest.starts_with('`') && rest.ends_with('`'));
        (quoted && rest.len() >= 2).then(|| rest[1..rest.len() - 1].to_string())
    };
    let (mut out, mut rest) = (String::new(), data);
    let mut scope: Option<Option<&std::collections::BTreeMap<String, String>>> = None;
    while let Some(start) = rest.find(left) {
        if scope != Some(None) {
            out.push_str(&rest[..start]);
        }
        let after = &rest[start + left.len()..];
        let end = after
            .find(right)
            .unwrap_or_else(|| panic!("unclosed action in {data}"));
        let action = after[..end].trim();
        rest = &after[end + right.len()..];
        if let Some(name) = arg(action, "env ") {
            out.push_str(env.get(&name).map(String::as_str).unwrap_or_default());
        } else if let Some(path) = arg(action, "with nomadVar ") {
            scope = Some(variables.get(&path));
        } else if action == "end" {
            scope = None;
        } else if let (Some(item), Some(Some(items))) = (action.strip_prefix('.'), scope) {
            out.push_str(items.get(item).map(String::as_str).unwrap_or_default());
        } else {
            panic!("the test's template renderer does not implement {action:?}");
        }
    }
    out.push_str(rest);
    out
}

/// Renders the proxy job from a document with `tokens`, writes the policy tree as the
/// operator does, renders the job's templates into a task directory as the Nomad client does,
/// and runs the task's raw_exec command there. Returns Traefik, its `web` port and the job.
async fn run_rendered_proxy_job(
    t: &Twin,
    tokens: &str,
    task_env: std::collections::BTreeMap<String, String>,
    variables: std::collections::BTreeMap<String, std::collections::BTreeMap<String, String>>,
    task_dir: &std::path::Path,
) -> (ChildGuard, u16, serde_json::Value) {
    let (web, websecure, internal) = (free_port(), free_port(), free_port());
    let doc = format!(
        r#"apiVersion: proxy-operator.io/v1alpha1
kind: ProxyConfig
spec:
  proxy: traefik
  discovery:
    primary: consul
    consul: {{address: "{consul}", refreshInterval: 1s}}
    nomad: {{address: "http://{nomad}", watch: true}}
    throttleDuration: 100ms
  entryPoints:
    web: {{address: "127.0.0.1:{web}", redirectTo: null}}
    websecure: {{address: "127.0.0.1:{websecure}"}}
  metrics: {{prometheus: false}}
  dashboard: {{address: "127.0.0.1:{internal}"}}
  job:
    id: proxy
    driver: {{rawExec: {{command: "{traefik}"}}}}
    tokens: {tokens}
"#,
        consul = t.consul_addr(),
        nomad = t.nomad_addr(),
        traefik = traefik_bin().display(),
    );
    let spec = proxy_operator::spec::load(doc.as_bytes()).unwrap_or_else(|e| panic!("{e}"));
    let rendered =
        proxy_operator::render::render(&spec, &proxy_operator::render::RenderContext::default())
            .unwrap();
    consul_client(t, ROOT)
        .txn(
            rendered
                .traefik_kv
                .iter()
                .map(|(key, value)| TxnOp::Set {
                    key: key.clone(),
                    value: value.as_bytes().to_vec(),
                })
                .collect(),
        )
        .await
        .unwrap();

    let task = rendered.job["TaskGroups"][0]["Tasks"][0].clone();
    assert_eq!(task["Driver"], "raw_exec");
    std::fs::create_dir_all(task_dir.join("secrets")).unwrap();
    std::fs::create_dir_all(task_dir.join("local")).unwrap();
    let mut env = task_env;
    env.insert(
        "NOMAD_SECRETS_DIR".into(),
        task_dir.join("secrets").display().to_string(),
    );
    let mut from_templates = Vec::new();
    for tmpl in task["Templates"].as_array().unwrap() {
        let text = render_template(tmpl, &env, &variables);
        let dest = task_dir.join(tmpl["DestPath"].as_str().unwrap());
        std::fs::write(&dest, &text).unwrap();
        if tmpl["Envvars"] == true {
            for line in text.lines().filter(|l| !l.trim().is_empty()) {
                let (k, v) = line.split_once('=').unwrap();
                from_templates.push((k.to_string(), v.to_string()));
            }
        }
    }
    // raw_exec: the task directory is the working directory, the environment is the task's
    // plus the templates' variables.
    let mut cmd = Command::new(task["Config"]["command"].as_str().unwrap());
    cmd.args(
        task["Config"]["args"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a.as_str().unwrap()),
    )
    .current_dir(task_dir)
    .env_remove("CONSUL_HTTP_TOKEN")
    .env_remove("CONSUL_HTTP_TOKEN_FILE")
    .env_remove("NOMAD_TOKEN")
    .env_remove("NOMAD_ADDR")
    .env("HOME", task_dir)
    .env("XDG_CONFIG_HOME", task_dir)
    .envs(&env)
    .envs(from_templates);
    let mut traefik = ChildGuard::spawn(cmd, &task_dir.join("traefik.log"));
    wait_up(&mut traefik, internal).await;
    (traefik, web, rendered.job)
}

/// Routes through all three providers, no refusal in Traefik's log.
async fn assert_all_three_providers_route(t: &Twin, traefik: &ChildGuard, web: u16) {
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
    let log = traefik.log();
    for refusal in [
        "Permission denied",
        "ACL not found",
        "response code: 403",
        "Unexpected response code",
    ] {
        assert!(!log.contains(refusal), "refused ({refusal}):\n{log}");
    }
    let consul_log = t.faults().request_log(Api::Consul);
    assert!(
        consul_log
            .iter()
            .any(|r| r.uri.starts_with(&format!("/v1/kv/{P}/traefik"))),
        "{consul_log:#?}"
    );
}

#[track_caller]
fn assert_job_holds_no_token(job: &serde_json::Value, tokens: &[&str]) {
    let text = job.to_string();
    for token in tokens {
        assert!(!text.contains(token), "the job holds a token: {text}");
    }
}

/// `spec.job.tokens: {workloadIdentity: {}}`: the Nomad client logs the task in to Consul
/// with its `consul_default` identity (the token lands in `secrets/consul_token`) and exposes
/// the task's identity as `NOMAD_TOKEN`. The twin mints no workload identities, so the tokens
/// of the shipped policies stand in for them.
#[tokio::test]
async fn the_proxy_job_rendered_with_workload_identity_routes_through_all_three_providers() {
    let t = acl_twin().await;
    let (consul_token, _backends) = seed_cluster(&t).await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("secrets")).unwrap();
    std::fs::write(dir.path().join("secrets/consul_token"), &consul_token).unwrap();
    let env = [("NOMAD_TOKEN".to_string(), NOMAD_TRAEFIK.to_string())].into();
    let (traefik, web, job) = run_rendered_proxy_job(
        &t,
        "{workloadIdentity: {}}",
        env,
        Default::default(),
        dir.path(),
    )
    .await;
    assert_all_three_providers_route(&t, &traefik, web).await;
    assert_job_holds_no_token(&job, &[&consul_token, NOMAD_TRAEFIK]);
    let config = std::fs::read_to_string(dir.path().join("secrets/traefik.yml")).unwrap();
    assert!(
        config.contains(&format!("token: \"{NOMAD_TRAEFIK}\"")),
        "{config}"
    );
    assert!(
        !config.contains(&consul_token),
        "Consul's token comes from the file"
    );
    drop(traefik);
    t.shutdown().await;
}

/// `spec.job.tokens: {nomadVariable: {}}`: the Nomad client reads `nomad/jobs/proxy` with the
/// task's identity; its `consul_token` reaches Traefik's Consul providers as
/// `CONSUL_HTTP_TOKEN`, its `nomad_token` the static config. The twin has no Variables, so the
/// test hands the renderer the variable's items.
#[tokio::test]
async fn the_proxy_job_rendered_with_a_nomad_variable_routes_through_all_three_providers() {
    let t = acl_twin().await;
    let (consul_token, _backends) = seed_cluster(&t).await;
    let dir = tempfile::tempdir().unwrap();
    let items = [
        ("consul_token".to_string(), consul_token.clone()),
        ("nomad_token".to_string(), NOMAD_TRAEFIK.to_string()),
    ]
    .into();
    let variables = [("nomad/jobs/proxy".to_string(), items)].into();
    let (traefik, web, job) = run_rendered_proxy_job(
        &t,
        "{nomadVariable: {}}",
        Default::default(),
        variables,
        dir.path(),
    )
    .await;
    assert_all_three_providers_route(&t, &traefik, web).await;
    assert_job_holds_no_token(&job, &[&consul_token, NOMAD_TRAEFIK]);
    drop(traefik);
    t.shutdown().await;
}
