//! End-to-end: the operator deployed as several replicas (issue 11, "Proof"). Three real
//! `proxy-operator run` processes against the twin, real Traefik run by the twin as a `raw_exec`
//! job, a real backend in the catalog.
//!
//! The shipped job file itself runs in a 3-node twin (one replica per node, each on its node's
//! address, one leader, the proxy Ready). The failover scenarios run the operators as child
//! processes of the test instead, so it can signal them and see their traffic: each reaches
//! Consul through its own recording pass-through, so the test sees every request each replica
//! sent and what Consul answered: that is how "KV writes only from the current holder" and
//! "nothing the frozen leader held reaches Consul" are checked.
//!
//! The leader TTL is 10 s, the smallest `--leader-ttl` (and Consul session TTL) allowed, with a
//! 1 s lock-delay. The child processes have no Consul check (no Nomad allocation), so their
//! sessions are TTL-only and a SIGKILL failover takes 10 to 20 s (Consul reaps a session between
//! its TTL and twice its TTL after the last renewal): of the 20 kills 5 are SIGKILL. Under the
//! job file the session is bound to the allocation's `/healthz` check, and a SIGKILLed leader
//! is replaced within seconds; the job-file test shows that.
//!
//! "Per-node gates": each replica judges the proxy through its own `--proxy-host`, as a replica
//! on another node would. One replica's view is broken on purpose; the test shows that who leads
//! decides nothing a failover can undo: a digest that failed one leader's gate is not retried by
//! the next, and a version that passed is not rolled back by a leader that cannot see it.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "support/jobfile.rs"]
mod jobfile;
#[path = "support/mod.rs"]
mod support;

use std::net::SocketAddr;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hashistack_twin::{Twin, TwinConfig};
use proxy_operator::spec;
use proxy_operator::spec::status::{Phase, ProxyStatus};
use serde_json::{Value, json};
use support::{Backend, ChildGuard, eventually, free_port, get_with_host};

const BIN: &str = env!("CARGO_BIN_EXE_proxy-operator");
const PREFIX: &str = "proxy-operator";
const JOB: &str = "proxy";
const APP_HOST: &str = "app.localhost";
const CONVERGE: Duration = Duration::from_secs(60);

/// One request a replica sent to Consul, and Consul's answer.
#[derive(Debug, Clone)]
struct Record {
    replica: usize,
    at: Instant,
    method: String,
    path: String,
    body: Vec<u8>,
    status: u16,
}

type Log = Arc<Mutex<Vec<Record>>>;

/// A pass-through to Consul that records every request of one replica.
async fn recorder(replica: usize, upstream: SocketAddr, log: Log) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let client = reqwest::Client::builder().no_proxy().build().unwrap();
    let app = axum::Router::new().fallback(move |req: axum::extract::Request| {
        let (client, log) = (client.clone(), Arc::clone(&log));
        async move {
            let method = req.method().as_str().to_owned();
            let path = req
                .uri()
                .path_and_query()
                .map_or(String::new(), |p| p.as_str().to_owned());
            let headers: Vec<(String, String)> = req
                .headers()
                .iter()
                .filter(|(k, _)| !matches!(k.as_str(), "host" | "content-length"))
                .map(|(k, v)| (k.as_str().to_owned(), v.to_str().unwrap_or("").to_owned()))
                .collect();
            let body = axum::body::to_bytes(req.into_body(), usize::MAX)
                .await
                .unwrap_or_default()
                .to_vec();
            let at = Instant::now();
            let mut out = client.request(
                reqwest::Method::from_bytes(method.as_bytes()).unwrap(),
                format!("http://{upstream}{path}"),
            );
            for (k, v) in &headers {
                out = out.header(k, v);
            }
            let answer = out.body(body.clone()).send().await;
            let (status, headers, bytes) = match answer {
                Ok(resp) => {
                    let status = resp.status().as_u16();
                    let headers: Vec<(String, String)> = resp
                        .headers()
                        .iter()
                        .filter(|(k, _)| {
                            !matches!(k.as_str(), "content-length" | "transfer-encoding")
                        })
                        .map(|(k, v)| (k.as_str().to_owned(), v.to_str().unwrap_or("").to_owned()))
                        .collect();
                    (
                        status,
                        headers,
                        resp.bytes().await.unwrap_or_default().to_vec(),
                    )
                }
                Err(_) => (502, Vec::new(), Vec::new()),
            };
            log.lock().unwrap().push(Record {
                replica,
                at,
                method,
                path,
                body,
                status,
            });
            let mut builder = axum::http::Response::builder().status(status);
            for (k, v) in headers {
                builder = builder.header(k, v);
            }
            builder.body(axum::body::Body::from(bytes)).unwrap()
        }
    });
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    addr
}

struct Cluster {
    twin: Twin,
    _backend: Backend,
    http: reqwest::Client,
    web: u16,
    websecure: u16,
    dashboard: u16,
    dir: tempfile::TempDir,
    log: Log,
    /// Each replica's recording address to Consul.
    consul_for: Vec<SocketAddr>,
    operators: Vec<Option<ChildGuard>>,
    /// The Consul token the replicas use (`None`: the twin's anonymous access).
    token: Option<String>,
    /// Extra `run` flags of each replica: how it sees the proxy from "its node".
    views: Vec<Vec<String>>,
}

impl Cluster {
    async fn start(replicas: usize) -> Cluster {
        let mut cluster = Cluster::prepare(vec![Vec::new(); replicas]).await;
        for i in 0..replicas {
            cluster.spawn(i);
        }
        cluster
    }

    /// The twin, the backend and one recorder per view; no replica started yet.
    async fn prepare(views: Vec<Vec<String>>) -> Cluster {
        Cluster::prepare_on(views, TwinConfig::default()).await
    }

    /// [`Cluster::prepare`] on a twin started with `config`.
    async fn prepare_on(views: Vec<Vec<String>>, config: TwinConfig) -> Cluster {
        let replicas = views.len();
        let _ = rustls::crypto::ring::default_provider().install_default();
        let twin = Twin::start(config).await.unwrap();
        let backend = Backend::start("app-backend").await;
        support::register_consul_service(
            twin.consul_addr(),
            "app",
            backend.port(),
            &["traefik.enable=true"],
        )
        .await;
        let log: Log = Arc::default();
        let mut consul_for = Vec::new();
        for i in 0..replicas {
            consul_for.push(recorder(i, twin.consul_addr(), Arc::clone(&log)).await);
        }
        Cluster {
            http: reqwest::Client::builder().no_proxy().build().unwrap(),
            web: free_port(),
            websecure: free_port(),
            dashboard: free_port(),
            dir: tempfile::tempdir().unwrap(),
            _backend: backend,
            twin,
            log,
            consul_for,
            operators: (0..replicas).map(|_| None).collect(),
            token: None,
            views,
        }
    }

    /// Starts replica `i` (`--instance-id op-<i>`), with the limits that allow the `raw_exec`
    /// Traefik from `.venv` and this test's certificate directory.
    fn spawn(&mut self, i: usize) {
        let mut cmd = Command::new(BIN);
        cmd.args([
            "run",
            "--prefix",
            PREFIX,
            "--debounce",
            "50ms",
            "--resync",
            "5s",
        ])
        .args(["--leader-ttl", "10s", "--lock-delay", "1s"])
        .args(["--instance-id", &format!("op-{i}")])
        // Three replicas on one machine: each status listener on its own free port.
        .args(["--http-addr", "127.0.0.1:0"])
        .args(["--consul-addr", &format!("http://{}", self.consul_for[i])])
        .args([
            "--nomad-addr",
            &format!("http://{}", self.twin.nomad_addr()),
        ])
        .args(support::operator_limit_flags(self.dir.path()))
        .args(&self.views[i])
        .env_remove("CONSUL_HTTP_TOKEN")
        .env_remove("NOMAD_TOKEN")
        .env_remove("CONSUL_HTTP_ADDR")
        .env_remove("NOMAD_ADDR")
        .env_remove("NOMAD_ALLOC_ID")
        .env("RUST_LOG", "info");
        if let Some(token) = &self.token {
            cmd.env("CONSUL_HTTP_TOKEN", token);
        }
        let log = self.dir.path().join(format!("op-{i}.log"));
        self.operators[i] = Some(ChildGuard::spawn(cmd, &log));
    }

    fn pid(&self, i: usize) -> u32 {
        self.operators[i].as_ref().unwrap().pid()
    }

    fn signal(&self, i: usize, signal: &str) {
        let status = Command::new("kill")
            .args([&format!("-{signal}"), &self.pid(i).to_string()])
            .status()
            .unwrap();
        assert!(status.success(), "kill -{signal}");
    }

    /// Sends `signal` and waits for replica `i` to exit.
    async fn kill(&mut self, i: usize, signal: &str) {
        self.signal(i, signal);
        let guard = self.operators[i].as_mut().unwrap();
        let gone = eventually(Duration::from_secs(15), || {
            let exited = guard.try_wait().is_some();
            async move { exited.then_some(()) }
        })
        .await;
        assert!(gone.is_some(), "replica {i} did not exit on {signal}");
        self.operators[i] = None;
    }

    fn consul(&self) -> String {
        format!("http://{}", self.twin.consul_addr())
    }

    /// A JSON read of the twin's Consul API.
    async fn consul_json(&self, path: &str) -> Value {
        let url = format!("{}{path}", self.consul());
        self.http
            .get(url)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    async fn kv(&self, key: &str) -> Option<(Vec<u8>, Option<String>)> {
        let resp = self
            .http
            .get(format!("{}/v1/kv/{key}", self.consul()))
            .send()
            .await
            .ok()?;
        if resp.status().as_u16() != 200 {
            return None;
        }
        let v: Value = resp.json().await.ok()?;
        let entry = &v[0];
        let value = entry["Value"].as_str().map_or(Vec::new(), |b| {
            use base64::Engine as _;
            base64::engine::general_purpose::STANDARD
                .decode(b)
                .unwrap_or_default()
        });
        Some((value, entry["Session"].as_str().map(str::to_owned)))
    }

    /// The replica holding the lock now, and its session.
    async fn leader(&self) -> Option<(usize, String)> {
        let (value, session) = self.kv(&format!("{PREFIX}/leader")).await?;
        let session = session?;
        let holder: Value = serde_json::from_slice(&value).ok()?;
        let id = holder["allocation"]
            .as_str()?
            .strip_prefix("op-")?
            .parse()
            .ok()?;
        Some((id, session))
    }

    async fn status(&self) -> ProxyStatus {
        match self.kv(&format!("{PREFIX}/status")).await {
            Some((value, _)) => serde_json::from_slice(&value).unwrap_or_default(),
            None => ProxyStatus::default(),
        }
    }

    async fn put_config(&self, doc: &str) -> u64 {
        let resp = self
            .http
            .put(format!("{}/v1/kv/{PREFIX}/config", self.consul()))
            .body(doc.to_owned())
            .send()
            .await
            .unwrap();
        assert!(resp.status().is_success());
        let resp = self
            .http
            .get(format!("{}/v1/kv/{PREFIX}/config", self.consul()))
            .send()
            .await
            .unwrap();
        let v: Value = resp.json().await.unwrap();
        v[0]["ModifyIndex"].as_u64().unwrap()
    }

    async fn job_versions(&self) -> Vec<u64> {
        self.versions_of(JOB).await
    }

    /// The versions of both job slots (`<id>` and the handover's `<id>-b`), as `(id, version)`.
    async fn slot_versions(&self) -> Vec<(String, u64)> {
        let mut all = Vec::new();
        for id in [JOB.to_owned(), format!("{JOB}-b")] {
            for v in self.versions_of(&id).await {
                all.push((id.clone(), v));
            }
        }
        all
    }

    async fn versions_of(&self, job: &str) -> Vec<u64> {
        let resp = self
            .http
            .get(format!(
                "http://{}/v1/job/{job}/versions",
                self.twin.nomad_addr()
            ))
            .send()
            .await
            .unwrap();
        let v: Value = resp.json().await.unwrap_or(Value::Null);
        let mut versions: Vec<u64> = v["Versions"]
            .as_array()
            .map(|a| a.iter().filter_map(|j| j["Version"].as_u64()).collect())
            .unwrap_or_default();
        versions.sort_unstable();
        versions
    }

    /// The document: Traefik by `raw_exec` on loopback, with `edition` as a response header
    /// (a policy edit) and `cpu` as the job's resources (a structural edit).
    fn doc(&self, edition: u32, cpu: u32) -> String {
        let doc = json!({
            "apiVersion": "proxy-operator.io/v1alpha1",
            "kind": "ProxyConfig",
            "metadata": {"name": "deploy"},
            "spec": {
                "proxy": "traefik",
                "domainSuffix": "localhost",
                "discovery": {
                    "primary": "consul",
                    "consul": {"address": self.twin.consul_addr().to_string(), "refreshInterval": "1s"},
                    "nomad": {"address": format!("http://{}", self.twin.nomad_addr()), "refreshInterval": "5s"},
                    "throttleDuration": "100ms"
                },
                "entryPoints": {
                    "web": {"address": format!("127.0.0.1:{}", self.web), "redirectTo": null},
                    "websecure": {"address": format!("127.0.0.1:{}", self.websecure)}
                },
                "tls": {"certDir": self.dir.path().join("certs").display().to_string()},
                "middlewares": {"securityHeaders": {"headers": {"X-Edition": edition.to_string()}}},
                "metrics": {"prometheus": false},
                "dashboard": {"enabled": true, "insecure": true, "address": format!("127.0.0.1:{}", self.dashboard)},
                "job": {
                    "id": JOB,
                    "type": "system",
                    "driver": {"rawExec": {"command": support::traefik_bin().display().to_string()}},
                    "resources": {"cpu": cpu, "memoryMB": 128}
                },
                "rollout": {"healthyDeadline": "20s", "minHealthyTime": "1s", "onFailure": "rollback"}
            }
        });
        serde_json::to_string_pretty(&doc).unwrap()
    }

    /// Waits until `doc` is applied (status Ready on its digest) and Traefik answers with its
    /// edition header.
    async fn converged(&self, doc: &str, edition: u32) -> bool {
        let digest = spec::load(doc.as_bytes()).unwrap().digest().to_owned();
        let want = edition.to_string();
        eventually(CONVERGE, || {
            let (digest, want) = (digest.clone(), want.clone());
            async move {
                let s = self.status().await;
                if s.phase != Phase::Ready || s.last_applied_digest.as_deref() != Some(&digest) {
                    return None;
                }
                let seen = get_with_host(self.web, APP_HOST, "/").await?;
                (seen.status == 200 && seen.header("X-Edition") == Some(want.as_str()))
                    .then_some(())
            }
        })
        .await
        .is_some()
    }

    fn logs(&self) -> String {
        (0..self.operators.len())
            .map(|i| {
                let path = self.dir.path().join(format!("op-{i}.log"));
                format!(
                    "--- op-{i}\n{}",
                    std::fs::read_to_string(path).unwrap_or_default()
                )
            })
            .collect()
    }

    fn records(&self) -> Vec<Record> {
        self.log.lock().unwrap().clone()
    }
}

/// The KV writes of a transaction body under the prefix (not the leader key itself), and the
/// session its first op checks.
fn txn_writes(body: &[u8]) -> (Vec<String>, Option<String>) {
    let ops: Vec<Value> = serde_json::from_slice(body).unwrap_or_default();
    let fence = ops.first().and_then(|op| {
        (op["KV"]["Verb"] == "check-session")
            .then(|| op["KV"]["Session"].as_str().map(str::to_owned))?
    });
    let writes = ops
        .iter()
        .filter(|op| {
            matches!(
                op["KV"]["Verb"].as_str(),
                Some("set" | "cas" | "delete" | "delete-cas" | "delete-tree")
            )
        })
        .filter_map(|op| op["KV"]["Key"].as_str().map(str::to_owned))
        .filter(|k| k.starts_with(&format!("{PREFIX}/")) && *k != format!("{PREFIX}/leader"))
        .collect();
    (writes, fence)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_replicas_one_leader_failovers_converge_and_a_frozen_leader_writes_nothing() {
    let mut c = Cluster::start(3).await;

    // (a) Exactly one leads; the proxy reaches Ready.
    let doc = c.doc(0, 100);
    c.put_config(&doc).await;
    assert!(c.converged(&doc, 0).await, "never Ready\n{}", c.logs());
    let (first, _) = c.leader().await.expect("a leader");
    let leading: Vec<usize> = (0..3)
        .filter(|i| {
            std::fs::read_to_string(c.dir.path().join(format!("op-{i}.log")))
                .unwrap_or_default()
                .contains("acquired the lock")
        })
        .collect();
    assert_eq!(leading, vec![first], "exactly one replica ever acquired");
    let status = c.status().await;
    assert!(
        status
            .leader
            .as_deref()
            .unwrap_or("")
            .contains(&format!("op-{first}")),
        "status names the leader: {:?}",
        status.leader
    );

    // (b) Kill the leader, mixing SIGTERM and SIGKILL, with a policy edit after each kill and
    // one structural edit in the middle.
    let signals = [
        "TERM", "KILL", "TERM", "TERM", "KILL", "TERM", "TERM", "TERM", "TERM", "KILL", "TERM",
        "TERM", "TERM", "KILL", "TERM", "TERM", "TERM", "KILL", "TERM", "TERM",
    ];
    assert_eq!(signals.len(), 20);
    let mut failovers: Vec<(&str, Duration)> = Vec::new();
    let mut cpu = 100;
    for (n, signal) in signals.iter().enumerate() {
        let (old, old_session) = c.leader().await.expect("a leader before the kill");
        let killed = Instant::now();
        c.kill(old, signal).await;
        let next = eventually(Duration::from_secs(40), || async {
            c.leader().await.filter(|(_, s)| *s != old_session)
        })
        .await;
        let (new, _) =
            next.unwrap_or_else(|| panic!("no failover after SIG{signal}\n{}", c.logs()));
        failovers.push((signal, killed.elapsed()));
        assert_ne!(new, old);
        c.spawn(old);
        let edition = u32::try_from(n).unwrap() + 1;
        if n == 3 {
            cpu = 110;
        }
        if n == 12 {
            cpu = 120;
        }
        let doc = c.doc(edition, cpu);
        c.put_config(&doc).await;
        assert!(
            c.converged(&doc, edition).await,
            "edit {edition} after SIG{signal} did not converge\n{}",
            c.logs()
        );
    }
    for (signal, took) in &failovers {
        eprintln!("failover after SIG{signal}: {took:?}");
    }
    for (signal, took) in &failovers {
        let bound = if *signal == "TERM" {
            Duration::from_secs(3)
        } else {
            // Consul reaps a session up to twice its TTL after the last renewal, then the
            // lock-delay runs.
            Duration::from_secs(25)
        };
        assert!(took < &bound, "failover after SIG{signal} took {took:?}");
    }
    assert_eq!(
        c.job_versions().await,
        vec![0, 1, 2],
        "one job version per structural edit, none from failovers"
    );

    // Every KV write under the prefix that Consul accepted carried the fence of the session
    // holding the lock.
    let records = c.records();
    let mut accepted = 0;
    for r in records
        .iter()
        .filter(|r| r.method == "PUT" && r.path.starts_with("/v1/txn"))
    {
        let (writes, fence) = txn_writes(&r.body);
        if writes.is_empty() {
            continue;
        }
        assert!(
            fence.is_some(),
            "an unfenced write from op-{}: {writes:?}",
            r.replica
        );
        if r.status == 200 {
            accepted += 1;
        }
    }
    assert!(accepted > 0);
    let unfenced_puts: Vec<&Record> = records
        .iter()
        .filter(|r| {
            matches!(r.method.as_str(), "PUT" | "DELETE")
                && r.path.starts_with(&format!("/v1/kv/{PREFIX}/"))
                && !r.path.starts_with(&format!("/v1/kv/{PREFIX}/leader"))
        })
        .collect();
    assert!(
        unfenced_puts.is_empty(),
        "plain KV writes: {unfenced_puts:?}"
    );

    // (c) Freeze the leader past its TTL: another takes over and converges an edit; the frozen
    // one, resumed, steps down and nothing it held reaches Consul.
    let (frozen, frozen_session) = c.leader().await.unwrap();
    // Frozen in the middle of a rollout, so it holds a journal and a pass in memory.
    let doc = c.doc(99, cpu);
    let index = c.put_config(&doc).await;
    let in_flight = eventually(Duration::from_secs(20), || async {
        let s = c.status().await;
        (s.observed_index >= index && s.phase == Phase::Progressing).then_some(())
    })
    .await;
    assert!(
        in_flight.is_some(),
        "the rollout never started\n{}",
        c.logs()
    );
    c.signal(frozen, "STOP");
    let next = eventually(Duration::from_secs(40), || async {
        c.leader().await.filter(|(_, s)| *s != frozen_session)
    })
    .await;
    assert!(
        next.is_some(),
        "no failover from a frozen leader\n{}",
        c.logs()
    );
    let doc = c.doc(100, cpu);
    c.put_config(&doc).await;
    assert!(c.converged(&doc, 100).await, "{}", c.logs());
    let resumed = Instant::now();
    c.signal(frozen, "CONT");
    tokio::time::sleep(Duration::from_secs(3)).await;
    let after: Vec<Record> = c
        .records()
        .into_iter()
        .filter(|r| {
            r.replica == frozen
                && r.at >= resumed
                && r.method == "PUT"
                && r.path.starts_with("/v1/txn")
        })
        .collect();
    for r in &after {
        let (writes, fence) = txn_writes(&r.body);
        if !writes.is_empty() {
            assert_eq!(fence.as_deref(), Some(frozen_session.as_str()));
            assert_ne!(
                r.status, 200,
                "a write of the frozen leader was accepted: {writes:?}"
            );
        }
    }
    let log = std::fs::read_to_string(c.dir.path().join(format!("op-{frozen}.log"))).unwrap();
    assert!(
        log.contains("lost the lock") || log.contains("deposed"),
        "the resumed replica stepped down:\n{log}"
    );
    assert!(
        c.converged(&doc, 100).await,
        "the frozen leader undid nothing"
    );
    assert_ne!(c.leader().await.map(|(i, _)| i), Some(frozen));
    eprintln!(
        "frozen leader: {} transaction(s) after resuming, none accepted",
        after.len()
    );
}

/// The allocations of `job` as `(alloc id, node id, client status)`.
async fn allocations(c: &Cluster, job: &str) -> Vec<(String, String, String)> {
    let url = format!("http://{}/v1/job/{job}/allocations", c.twin.nomad_addr());
    let v: Value = c.http.get(url).send().await.unwrap().json().await.unwrap();
    v.as_array()
        .map(|a| {
            a.iter()
                .map(|x| {
                    let s = |k: &str| x[k].as_str().unwrap_or_default().to_owned();
                    (s("ID"), s("NodeID"), s("ClientStatus"))
                })
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_shipped_job_file_runs_one_replica_per_node_on_three_nodes_and_one_leads() {
    let data = tempfile::tempdir().unwrap();
    let c = Cluster::prepare_on(
        Vec::new(),
        TwinConfig {
            nomad_nodes: 3,
            data_dir: Some(data.path().to_path_buf()),
            ..TwinConfig::default()
        },
    )
    .await;
    // `nomad job run -var ...` of the file as shipped: raw_exec of this build's binary, the
    // twin's addresses, no ACLs, and the operator flags an admin would add for a loopback test.
    let http_port = free_port();
    let mut extra: Vec<hcl::Value> = support::operator_limit_flags(c.dir.path())
        .into_iter()
        .map(hcl::Value::from)
        .collect();
    for flag in [
        "--leader-ttl=10s",
        "--lock-delay=1s",
        "--debounce=50ms",
        "--resync=5s",
    ] {
        extra.push(hcl::Value::from(flag));
    }
    let job = jobfile::evaluate_job(&[
        ("binary", hcl::Value::from(BIN)),
        ("http_port", hcl::Value::from(http_port)),
        ("token_source", hcl::Value::from("none")),
        ("consul_addr", hcl::Value::from(c.consul())),
        (
            "nomad_addr",
            hcl::Value::from(format!("http://{}", c.twin.nomad_addr())),
        ),
        ("extra_args", hcl::Value::Array(extra)),
    ])
    .unwrap();
    let body = jobfile::api_job(&job);
    let resp = c
        .http
        .put(format!("http://{}/v1/jobs", c.twin.nomad_addr()))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(
        resp.status().as_u16(),
        200,
        "{}",
        resp.text().await.unwrap()
    );

    let logs = || {
        let mut out = String::new();
        for entry in std::fs::read_dir(data.path().join("nomad-allocs"))
            .into_iter()
            .flatten()
        {
            let dir = entry.unwrap().path();
            let log = dir.join("alloc/logs/operator.stderr.0");
            out.push_str(&format!(
                "--- {}\n{}",
                dir.display(),
                std::fs::read_to_string(log).unwrap_or_default()
            ));
        }
        out
    };

    // One allocation per node, each a live operator answering on its node's address.
    let running = eventually(Duration::from_secs(30), || async {
        let allocs = allocations(&c, "proxy-operator").await;
        (allocs.len() == 3 && allocs.iter().all(|(_, _, s)| s == "running")).then_some(allocs)
    })
    .await
    .unwrap_or_else(|| panic!("3 running allocations never appeared\n{}", logs()));
    let mut nodes: Vec<&str> = running.iter().map(|(_, n, _)| n.as_str()).collect();
    nodes.sort_unstable();
    nodes.dedup();
    assert_eq!(nodes.len(), 3, "one replica per node: {running:?}");
    for n in 1..=3 {
        let url = format!("http://127.0.0.{n}:{http_port}/healthz");
        let up = eventually(Duration::from_secs(20), || {
            let (http, url) = (c.http.clone(), url.clone());
            async move {
                let r = http.get(url).send().await.ok()?;
                r.status().is_success().then_some(())
            }
        })
        .await;
        assert!(up.is_some(), "no operator answers at {url}\n{}", logs());
    }

    // Three processes, not one answering on every address: each allocation's own log says it
    // listens on its node's address, and none of them restarted.
    let mut listeners = Vec::new();
    for (id, _, _) in &running {
        let log = data
            .path()
            .join("nomad-allocs")
            .join(id)
            .join("alloc/logs/operator.stderr.0");
        // The log reaches the file a little after the listener answers.
        let url = eventually(Duration::from_secs(20), || {
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            let url = text
                .split('"')
                .find(|s| {
                    s.starts_with("http://127.0.0.") && s.ends_with(&format!(":{http_port}/"))
                })
                .map(str::to_owned);
            async move { url }
        })
        .await
        .unwrap_or_else(|| {
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            panic!(
                "allocation {id} logged no node listener\n{text}\n{}",
                logs()
            )
        });
        listeners.push(url);
        let url = format!("http://{}/v1/allocation/{id}", c.twin.nomad_addr());
        let alloc: Value = c.http.get(url).send().await.unwrap().json().await.unwrap();
        assert_eq!(
            alloc["TaskStates"]["operator"]["Restarts"].as_u64(),
            Some(0),
            "allocation {id} restarted\n{}",
            logs()
        );
    }
    listeners.sort();
    listeners.dedup();
    assert_eq!(listeners.len(), 3, "{listeners:?}");

    // The proxy (one Traefik: entry points are fixed loopback ports) reaches Ready.
    let mut doc: Value = serde_json::from_str(&c.doc(0, 100)).unwrap();
    doc["spec"]["job"]["type"] = json!("service");
    doc["spec"]["job"]["count"] = json!(1);
    let doc = serde_json::to_string_pretty(&doc).unwrap();
    c.put_config(&doc).await;
    assert!(c.converged(&doc, 0).await, "never Ready\n{}", logs());

    // Exactly one replica acquired the lock, and it is one of the three allocations.
    let (holder, session) = c.kv(&format!("{PREFIX}/leader")).await.unwrap();
    assert!(session.is_some(), "the leader key is held by a session");
    let holder: Value = serde_json::from_slice(&holder).unwrap();
    let leader_alloc = holder["allocation"].as_str().unwrap_or_default();
    assert!(
        running.iter().any(|(id, _, _)| id == leader_alloc),
        "the holder {holder} is not one of {running:?}"
    );
    let all = logs();
    assert_eq!(
        all.matches("acquired the lock").count(),
        1,
        "exactly one replica ever acquired\n{all}"
    );

    // The leader's session is bound to its allocation's /healthz check, which the twin's Nomad
    // registered with the Consul agent for the job's service, as Nomad does.
    let session = session.unwrap();
    let info = c.consul_json(&format!("/v1/session/info/{session}")).await;
    let bound = info[0]["ServiceChecks"][0]["ID"]
        .as_str()
        .unwrap_or_else(|| panic!("the session is bound to no check: {info}\n{all}"))
        .to_owned();
    let checks = c.consul_json("/v1/agent/checks").await;
    let service = checks[&bound]["ServiceID"].as_str().unwrap_or_default();
    assert!(
        service.starts_with("_nomad-task-") && service.contains(leader_alloc),
        "{bound} is not a check of the leader's allocation: {checks}"
    );

    // SIGKILL the leader's process: its check goes critical, Consul invalidates the session,
    // and another allocation leads within the TTL (10 s) + 1 s, not the 1.5 to 2 x TTL a
    // TTL-only session takes.
    let pid = pid_of_allocation(leader_alloc).expect("the leader's process");
    let killed = Instant::now();
    let status = Command::new("kill")
        .args(["-KILL", &pid.to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let next = eventually(Duration::from_secs(25), || async {
        let (value, holder) = c.kv(&format!("{PREFIX}/leader")).await?;
        let holder = holder?;
        (holder != session).then(|| serde_json::from_slice::<Value>(&value).ok())?
    })
    .await
    .unwrap_or_else(|| panic!("nobody took over\n{}", logs()));
    let took = killed.elapsed();
    assert_ne!(next["allocation"].as_str(), Some(leader_alloc), "{next}");
    assert!(
        took < Duration::from_secs(11),
        "SIGKILL failover took {took:?} (TTL 10 s)"
    );
    eprintln!("job-file SIGKILL failover: {took:?}");
}

/// The PID of the process Nomad runs for allocation `alloc` (its `NOMAD_ALLOC_ID`), found in
/// `/proc` because the twin, like Nomad's API, does not report task PIDs.
fn pid_of_allocation(alloc: &str) -> Option<u32> {
    let wanted = format!("NOMAD_ALLOC_ID={alloc}");
    std::fs::read_dir("/proc")
        .ok()?
        .flatten()
        .find_map(|entry| {
            let pid: u32 = entry.file_name().to_str()?.parse().ok()?;
            let environ = std::fs::read(entry.path().join("environ")).ok()?;
            let cmdline = std::fs::read(entry.path().join("cmdline")).ok()?;
            let is_operator = String::from_utf8_lossy(&cmdline).contains("proxy-operator");
            let has_alloc = environ.split(|b| *b == 0).any(|kv| kv == wanted.as_bytes());
            (is_operator && has_alloc).then_some(pid)
        })
}

/// Waits until replica `i` leads and has written a status pass of its own after `since` passes.
async fn pass_by(c: &Cluster, i: usize, since: u64) -> Option<ProxyStatus> {
    eventually(Duration::from_secs(40), || async {
        let s = c.status().await;
        let by_i = s
            .leader
            .as_deref()
            .is_some_and(|l| l.contains(&format!("op-{i}")));
        (by_i && s.passes > since).then_some(s)
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_node_gates_that_disagree_do_not_make_the_job_flap_across_replicas() {
    // op-1 looks at the proxy through 127.0.0.2, where nothing listens (Traefik binds
    // 127.0.0.1): from its "node", every gate fails. op-0 sees the proxy fine.
    let views = vec![
        Vec::new(),
        vec!["--proxy-host".to_owned(), "127.0.0.2".to_owned()],
    ];
    let mut c = Cluster::prepare(views).await;
    let fast_gate = |doc: String| {
        let mut v: Value = serde_json::from_str(&doc).unwrap();
        v["spec"]["rollout"] =
            json!({"healthyDeadline": "6s", "minHealthyTime": "1s", "onFailure": "rollback"});
        serde_json::to_string_pretty(&v).unwrap()
    };

    // op-0 alone rolls out version 0 and it passes its gate.
    c.spawn(0);
    let good = fast_gate(c.doc(0, 100));
    c.put_config(&good).await;
    assert!(c.converged(&good, 0).await, "never Ready\n{}", c.logs());
    assert_eq!(c.job_versions().await, vec![0]);

    // Failover to op-1, which cannot see the proxy: at rest it rolls nothing back.
    c.spawn(1);
    let before = c.status().await.passes;
    c.kill(0, "TERM").await;
    let s = pass_by(&c, 1, before)
        .await
        .unwrap_or_else(|| panic!("op-1 never took over\n{}", c.logs()));
    let s = pass_by(&c, 1, s.passes).await.unwrap_or(s);
    assert_eq!(s.phase, Phase::Ready, "{}", c.logs());
    assert_eq!(
        c.job_versions().await,
        vec![0],
        "a leader that cannot see the proxy changed the job"
    );
    assert_eq!(
        get_with_host(c.web, APP_HOST, "/").await.map(|r| r.status),
        Some(200)
    );

    // A structural edit under op-1 fails op-1's gate and is rolled back.
    let failing = fast_gate(c.doc(1, 110));
    let failing_digest = spec::load(failing.as_bytes()).unwrap().digest().to_owned();
    c.put_config(&failing).await;
    let rolled_back = eventually(CONVERGE, || async {
        let s = c.status().await;
        (s.phase == Phase::RolledBack && s.failed_digest.as_deref() == Some(&failing_digest))
            .then_some(s)
    })
    .await
    .unwrap_or_else(|| panic!("op-1's failing gate never rolled back\n{}", c.logs()));
    // Applied (then undone, as the status says): in place, a new version of the job; handed
    // over, the other slot registered. Either way something beside the first version.
    let versions = c.slot_versions().await;
    assert!(versions.len() >= 2, "the edit was applied: {versions:?}");

    // Failover back to op-0, whose gate would pass the same digest: it does not retry it.
    c.spawn(0);
    let before = rolled_back.passes;
    c.kill(1, "TERM").await;
    let s = pass_by(&c, 0, before)
        .await
        .unwrap_or_else(|| panic!("op-0 never took over\n{}", c.logs()));
    let s = pass_by(&c, 0, s.passes).await.unwrap_or(s);
    assert_eq!(s.phase, Phase::RolledBack, "{}", c.logs());
    assert_eq!(s.failed_digest.as_deref(), Some(failing_digest.as_str()));
    assert_eq!(
        c.slot_versions().await,
        versions,
        "the new leader re-applied a digest that failed the previous leader's gate"
    );

    // The cluster is not stuck: the next edit converges under op-0.
    let next = fast_gate(c.doc(2, 100));
    c.put_config(&next).await;
    assert!(c.converged(&next, 2).await, "{}", c.logs());
}

/// `GET http://127.0.0.1:<port>/` for `app.localhost` as `user`; the status code.
async fn login(port: u16, user: &str, password: &str) -> Option<u16> {
    let client = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(5))
        .build()
        .ok()?;
    let resp = client
        .get(format!("http://127.0.0.1:{port}/"))
        .header("Host", APP_HOST)
        .basic_auth(user, Some(password))
        .send()
        .await
        .ok()?;
    Some(resp.status().as_u16())
}

/// An htpasswd line for `user` (`openssl passwd -apr1`, which Traefik accepts).
fn htpasswd(user: &str, password: &str) -> String {
    let out = Command::new("openssl")
        .args(["passwd", "-apr1", "-salt", "e2esalt1", password])
        .output()
        .expect("openssl passwd");
    assert!(out.status.success());
    format!("{user}:{}", String::from_utf8(out.stdout).unwrap().trim())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotating_the_users_key_changes_who_can_log_in_within_a_second() {
    let c = Cluster::start(1).await;
    let users_key = format!("{PREFIX}/secrets/users");
    let put_users = |text: String| {
        let (http, url) = (c.http.clone(), format!("{}/v1/kv/{users_key}", c.consul()));
        async move {
            let resp = http.put(url).body(text).send().await.unwrap();
            assert!(resp.status().is_success());
        }
    };
    put_users(htpasswd("alice", "alice-pw")).await;
    let mut doc: Value = serde_json::from_str(&c.doc(0, 100)).unwrap();
    doc["spec"]["middlewares"]["basicAuth"] = json!({"usersFrom": {"consulKey": users_key}});
    let doc = serde_json::to_string(&doc).unwrap();
    c.put_config(&doc).await;
    let digest = spec::load(doc.as_bytes()).unwrap().digest().to_owned();
    let ready = eventually(CONVERGE, || async {
        let s = c.status().await;
        (s.phase == Phase::Ready && s.last_applied_digest.as_deref() == Some(&digest)).then_some(())
    })
    .await;
    assert!(ready.is_some(), "never Ready\n{}", c.logs());
    assert_eq!(login(c.web, "alice", "alice-pw").await, Some(200));
    assert_eq!(login(c.web, "bob", "bob-pw").await, Some(401));

    let rotated = Instant::now();
    put_users(htpasswd("bob", "bob-pw")).await;
    let switched = eventually(Duration::from_secs(10), || async {
        let bob = login(c.web, "bob", "bob-pw").await;
        let alice = login(c.web, "alice", "alice-pw").await;
        (bob == Some(200) && alice == Some(401)).then_some(())
    })
    .await;
    let took = rotated.elapsed();
    assert!(
        switched.is_some(),
        "the rotation never applied\n{}",
        c.logs()
    );
    eprintln!("users key rotation applied through Traefik in {took:?}");
    assert!(took < Duration::from_secs(1), "took {took:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn documents_outside_the_privilege_boundary_are_invalid_naming_the_flag() {
    let mut c = Cluster::start(1).await;
    let base: Value = serde_json::from_str(&c.doc(0, 100)).unwrap();
    let with = |path: &[&str], value: Value| {
        let mut doc = base.clone();
        let mut at = &mut doc["spec"];
        for p in path {
            at = &mut at[*p];
        }
        *at = value;
        serde_json::to_string(&doc).unwrap()
    };
    let cases = [
        (
            with(
                &["middlewares", "basicAuth"],
                json!({"usersFrom": {"file": "/etc/shadow"}}),
            ),
            "--users-dir",
        ),
        (
            with(
                &["middlewares", "basicAuth"],
                json!({"usersFrom": {"consulKey": "elsewhere/users"}}),
            ),
            "--secrets-prefix",
        ),
        (
            with(
                &["job", "driver"],
                json!({"rawExec": {"command": "/bin/sh"}}),
            ),
            "--allowed-command",
        ),
        (
            with(
                &["job", "driver"],
                json!({"docker": {"image": "evil/traefik:latest"}}),
            ),
            "--allowed-image",
        ),
        (
            with(&["job", "certVolume"], json!("root")),
            "--allowed-host-volume",
        ),
        (
            with(&["tls", "certDir"], json!("/etc")),
            "--allowed-cert-root",
        ),
    ];
    for (doc, flag) in &cases {
        let index = c.put_config(doc).await;
        let status = eventually(Duration::from_secs(30), || async {
            let s = c.status().await;
            (s.observed_index >= index).then_some(s)
        })
        .await
        .unwrap_or_else(|| panic!("no pass over the document for {flag}\n{}", c.logs()));
        assert_eq!(status.phase, Phase::Invalid, "{flag}");
        let errors = format!("{:?}", status.validation_errors);
        assert!(errors.contains(flag), "{flag} is named: {errors}");
    }
    assert!(c.job_versions().await.is_empty(), "no job registered");
    let records = c.records();
    for r in records
        .iter()
        .filter(|r| r.method == "PUT" && r.path.starts_with("/v1/txn"))
    {
        let (writes, _) = txn_writes(&r.body);
        assert!(
            writes.iter().all(|k| *k == format!("{PREFIX}/status")),
            "only the status is written: {writes:?}"
        );
    }
    c.kill(0, "TERM").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_without_the_policy_tree_permission_gets_an_actionable_error_in_status() {
    let mut c = Cluster::start(0).await;
    // The shipped operator policy without its `<prefix>/traefik/` write.
    let shipped =
        std::fs::read_to_string(support::repo_root().join("nomad-jobs/acl/consul-operator.hcl"))
            .unwrap();
    let rules = shipped.replace(
        "key_prefix \"proxy-operator/traefik/\" {\n  policy = \"write\"",
        "key_prefix \"proxy-operator/traefik/\" {\n  policy = \"read\"",
    );
    assert_ne!(rules, shipped, "the shipped policy grants the tree");
    c.twin
        .consul()
        .add_token_with_rules("operator-token", &rules)
        .unwrap();
    c.token = Some("operator-token".to_owned());
    c.operators.push(None);
    c.views.push(Vec::new());
    c.consul_for
        .push(recorder(0, c.twin.consul_addr(), Arc::clone(&c.log)).await);
    c.spawn(0);
    let doc = c.doc(0, 100);
    c.put_config(&doc).await;
    let status = eventually(Duration::from_secs(40), || async {
        let s = c.status().await;
        let text = serde_json::to_string(&s).unwrap();
        (text.contains("ermission denied")).then_some(text)
    })
    .await
    .unwrap_or_else(|| panic!("no permission error in status\n{}", c.logs()));
    assert!(
        status.contains("proxy-operator/traefik/"),
        "names the key: {status}"
    );
    assert!(
        !status.contains("operator-token"),
        "the token never reaches status"
    );
    eprintln!("status with a token lacking the tree permission: {status}");
    c.kill(0, "TERM").await;
}
