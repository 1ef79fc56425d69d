//! End-to-end: the handover of a Traefik structural change (issue 13), through the twin and
//! real Traefik run as `raw_exec` jobs, with traffic flowing: one request every 20 ms to a real
//! backend on 127.0.0.1 through Traefik's `web` entry point for the whole scenario.
//!
//! - A good structural change (the job's CPU) registers the other slot next to the serving one,
//!   gates it, stops the old one and lets it drain, slot a to b and back to a (the stopped copy
//!   registered with its index): a keep-alive client sees no failed request (no connection
//!   error, no non-2xx). A client opening a connection per request sees no connection error
//!   either, but a few 404s while the new Traefik loads its first configuration (it listens
//!   before that: traefik#7347, no option in 3.7 to wait); the test bounds that window.
//! - A structural change whose task exits stops only the new slot: the old Traefik (the same
//!   PID) serves throughout, no request fails, and the status says RolledBack with the exit.
//!
//! The operator runs in-process with the real HTTP clients. What the twin does not model (two
//! allocations placed by Nomad's scheduler on one node with the same static port) is in
//! ARCHITECTURE.md; the two Traefik processes here really share the port through
//! `SO_REUSEPORT`, and the kernel really spreads the connections over both.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
#![allow(clippy::print_stdout, clippy::print_stderr)] // the measured window is the test's report

#[path = "support/mod.rs"]
mod support;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hashistack_twin::{Twin, TwinConfig};
use proxy_operator::consul::ConsulClient;
use proxy_operator::nomad::NomadClient;
use proxy_operator::proxy::probe::HttpProbe;
use proxy_operator::reconcile::{Config, Operator};
use proxy_operator::spec::status::{Phase, ProxyStatus};
use proxy_operator::transport::{Api as ClientApi, ClientConfig};
use serde_json::{Value, json};
use support::{Backend, free_port, pid_listening_on, process_alive};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

const PREFIX: &str = "proxy-operator";
const JOB: &str = "proxy";
const JOB_B: &str = "proxy-b";
const APP_HOST: &str = "app.localhost";
/// Long enough for a real Traefik to start in the twin and pass the gate on a busy machine.
const CONVERGE: Duration = Duration::from_secs(90);
/// One request every 20 ms.
const LOAD_INTERVAL: Duration = Duration::from_millis(20);

/// One request's outcome: when it was sent, and its status or the error.
type Sample = (Instant, Result<u16, String>);

struct Cluster {
    twin: Twin,
    _backend: Backend,
    http: reqwest::Client,
    web: u16,
    websecure: u16,
    dashboard: u16,
    dir: tempfile::TempDir,
    stop: Option<oneshot::Sender<()>>,
    operator: Option<JoinHandle<()>>,
}

impl Cluster {
    async fn start() -> Cluster {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let twin = Twin::start(TwinConfig::default()).await.unwrap();
        let backend = Backend::start("app-backend").await;
        support::register_consul_service(
            twin.consul_addr(),
            "app",
            backend.port(),
            &["traefik.enable=true"],
        )
        .await;
        // Slot b's API is the dashboard port + 1: take two consecutive picks, so that port is
        // ours too (`free_port` never hands a port out twice in this process, so another test
        // running beside this one cannot get it).
        let dashboard = loop {
            let (a, b) = (free_port(), free_port());
            if b == a + 1 {
                break a;
            }
        };
        let (web, websecure) = (free_port(), free_port());
        let mut cluster = Cluster {
            http: reqwest::Client::builder().no_proxy().build().unwrap(),
            web,
            websecure,
            dashboard,
            dir: tempfile::tempdir().unwrap(),
            _backend: backend,
            twin,
            stop: None,
            operator: None,
        };
        let consul = ConsulClient::new(
            &ClientConfig::for_address(ClientApi::Consul, &cluster.url(true)).unwrap(),
        )
        .unwrap();
        let nomad = NomadClient::new(
            &ClientConfig::for_address(ClientApi::Nomad, &cluster.url(false)).unwrap(),
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

    fn url(&self, consul: bool) -> String {
        if consul {
            format!("http://{}", self.twin.consul_addr())
        } else {
            format!("http://{}", self.twin.nomad_addr())
        }
    }

    /// The document: the job's `cpu`, and the task's `command` (Traefik unless given).
    fn doc(&self, cpu: u32, command: Option<&str>) -> Value {
        let traefik = support::traefik_bin().display().to_string();
        let command = command.unwrap_or(&traefik);
        json!({
            "apiVersion": "proxy-operator.io/v1alpha1",
            "kind": "ProxyConfig",
            "metadata": {"name": "handover"},
            "spec": {
                "proxy": "traefik",
                "domainSuffix": "localhost",
                "discovery": {
                    "primary": "consul",
                    "consul": {"address": self.twin.consul_addr().to_string(), "refreshInterval": "1s"},
                    "nomad": {"address": self.url(false), "refreshInterval": "30s"},
                    "throttleDuration": "100ms"
                },
                "entryPoints": {
                    "web": {"address": format!("127.0.0.1:{}", self.web), "redirectTo": null},
                    "websecure": {"address": format!("127.0.0.1:{}", self.websecure)},
                    "transport": {"graceTimeout": "3s"}
                },
                "tls": {"certDir": self.dir.path().join("certs").display().to_string()},
                "metrics": {"prometheus": false},
                "dashboard": {"enabled": true, "insecure": true, "address": format!("127.0.0.1:{}", self.dashboard)},
                "job": {
                    "id": JOB,
                    "type": "system",
                    "driver": {"rawExec": {"command": command}},
                    "resources": {"cpu": cpu, "memoryMB": 128}
                },
                "rollout": {"healthyDeadline": "30s", "minHealthyTime": "1s", "onFailure": "rollback"}
            }
        })
    }

    /// Writes `doc`; its digest.
    async fn put(&self, doc: &Value) -> String {
        let resp = self
            .http
            .put(format!("{}/v1/kv/{PREFIX}/config", self.url(true)))
            .body(serde_json::to_vec_pretty(doc).unwrap())
            .send()
            .await
            .unwrap();
        assert!(resp.status().is_success(), "PUT config: {}", resp.status());
        proxy_operator::spec::load(&serde_json::to_vec(doc).unwrap())
            .unwrap()
            .digest()
            .to_owned()
    }

    async fn status(&self) -> Option<ProxyStatus> {
        let resp = self
            .http
            .get(format!("{}/v1/kv/{PREFIX}/status?raw", self.url(true)))
            .send()
            .await
            .ok()?;
        if !resp.status().is_success() {
            return None;
        }
        serde_json::from_slice(&resp.bytes().await.ok()?).ok()
    }

    async fn job(&self, id: &str) -> Option<Value> {
        let resp = self
            .http
            .get(format!("{}/v1/job/{id}", self.url(false)))
            .send()
            .await
            .ok()?;
        if !resp.status().is_success() {
            return None;
        }
        resp.json().await.ok()
    }

    async fn wait_status(&self, what: &str, done: impl Fn(&ProxyStatus) -> bool) -> ProxyStatus {
        let context = || async {
            format!(
                "job {JOB}: {}\njob {JOB_B}: {}",
                self.job(JOB)
                    .await
                    .map(|j| j["Stop"].clone())
                    .unwrap_or_default(),
                self.job(JOB_B)
                    .await
                    .map(|j| j["Stop"].clone())
                    .unwrap_or_default(),
            )
        };
        support::wait_status(what, CONVERGE, || self.status(), done, context).await
    }

    async fn wait_ready(&self, digest: &str, slot_job: &str) -> ProxyStatus {
        self.wait_status(&format!("Ready on {slot_job}"), |s| {
            s.phase == Phase::Ready
                && s.last_applied_digest.as_deref() == Some(digest)
                && s.last_good_job
                    .as_ref()
                    .is_some_and(|j| j.job_id == slot_job)
        })
        .await
    }

    async fn stopped(&self, id: &str) -> bool {
        self.job(id)
            .await
            .is_some_and(|j| j["Stop"].as_bool() == Some(true))
    }

    /// Stops the operator, purges both slots, and waits for every Traefik to be gone by PID.
    async fn shutdown(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(op) = self.operator.take() {
            let _ = tokio::time::timeout(Duration::from_secs(10), op).await;
        }
        for id in [JOB, JOB_B] {
            let _ = self
                .http
                .delete(format!("{}/v1/job/{id}?purge=true", self.url(false)))
                .send()
                .await;
        }
        let deadline = Instant::now() + Duration::from_secs(30);
        while [self.web, self.dashboard, self.dashboard + 1]
            .iter()
            .any(|p| pid_listening_on(*p).is_some())
        {
            assert!(Instant::now() < deadline, "a Traefik outlived its job");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// The load loop: a GET every [`LOAD_INTERVAL`] through `web` until the handle is aborted
/// (bounded at an hour of requests). `fresh`: a new connection for every request, so each one
/// is handed by the kernel to either listening Traefik (a keep-alive client stays on the
/// connection it has, and would never meet the new process before the old one closes).
fn start_load(web: u16, fresh: bool, samples: Arc<Mutex<Vec<Sample>>>) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut client = reqwest::Client::builder()
            .no_proxy()
            .timeout(Duration::from_secs(2));
        if fresh {
            client = client.pool_max_idle_per_host(0);
        }
        let client = client.build().unwrap();
        let mut tick = tokio::time::interval(LOAD_INTERVAL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        for _ in 0..180_000 {
            tick.tick().await;
            let sent = Instant::now();
            let get = || {
                client
                    .get(format!("http://127.0.0.1:{web}/hello"))
                    .header("Host", APP_HOST)
                    .send()
            };
            let mut outcome = get().await;
            // The old Traefik closes its idle kept-alive connections when it shuts down; a GET
            // sent on one at that instant meets the close before any response. HTTP lets a
            // client resend an idempotent request then (RFC 9112 §9.3.1), and browsers do; so
            // does this client, once. Anything else counts as failed.
            if let Err(e) = &outcome
                && !fresh
                && format!("{e:?}").contains("IncompleteMessage")
            {
                outcome = get().await;
            }
            let outcome = outcome
                .map(|r| r.status().as_u16())
                .map_err(|e| format!("{e:?}"));
            samples.lock().unwrap().push((sent, outcome));
        }
    })
}

/// The failed requests (each with what came back) and the longest time without a 2xx.
fn failures(samples: &[Sample]) -> (Vec<String>, Duration, usize) {
    let failed = samples
        .iter()
        .filter(|(_, r)| !matches!(r, Ok(s) if (200..300).contains(s)))
        .map(|(_, r)| format!("{r:?}"))
        .collect();
    let oks: Vec<Instant> = samples
        .iter()
        .filter(|(_, r)| matches!(r, Ok(s) if (200..300).contains(s)))
        .map(|(t, _)| *t)
        .collect();
    let gap = oks
        .windows(2)
        .map(|w| w[1].duration_since(w[0]))
        .max()
        .unwrap_or_default();
    (failed, gap, samples.len())
}

/// The spans of the bursts of 404s (404s less than 2 s apart are one burst).
fn windows_404(samples: &[Sample]) -> Vec<Duration> {
    let times: Vec<Instant> = samples
        .iter()
        .filter(|(_, r)| matches!(r, Ok(404)))
        .map(|(t, _)| *t)
        .collect();
    let mut windows = Vec::new();
    let mut start = None;
    let mut last: Option<Instant> = None;
    for t in times {
        match last {
            Some(l) if t.duration_since(l) < Duration::from_secs(2) => {}
            _ => {
                if let (Some(s), Some(l)) = (start, last) {
                    windows.push(l.duration_since(s));
                }
                start = Some(t);
            }
        }
        last = Some(t);
    }
    if let (Some(s), Some(l)) = (start, last) {
        windows.push(l.duration_since(s));
    }
    windows
}

async fn serving(cluster: &Cluster) {
    let ok = support::eventually(CONVERGE, || async {
        support::get_with_host(cluster.web, APP_HOST, "/hello")
            .await
            .filter(|s| s.status == 200)
    })
    .await;
    assert!(ok.is_some(), "Traefik never served the backend");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_good_structural_change_fails_no_request_on_a_kept_alive_connection_and_404s_new_ones_for_under_a_second()
 {
    let cluster = Cluster::start().await;
    let first = cluster.put(&cluster.doc(100, None)).await;
    cluster.wait_ready(&first, JOB).await;
    serving(&cluster).await;

    let samples = Arc::new(Mutex::new(Vec::new()));
    let load = start_load(cluster.web, false, Arc::clone(&samples));
    let fresh_samples = Arc::new(Mutex::new(Vec::new()));
    let fresh_load = start_load(cluster.web, true, Arc::clone(&fresh_samples));
    tokio::time::sleep(Duration::from_secs(1)).await;

    // Slot a to slot b: a fresh job (EnforceIndex 0).
    let second = cluster.put(&cluster.doc(101, None)).await;
    cluster.wait_ready(&second, JOB_B).await;
    assert!(cluster.stopped(JOB).await, "the old slot is stopped");
    assert!(!cluster.stopped(JOB_B).await, "the new slot serves");
    let old = cluster.job(JOB).await.unwrap();
    assert_eq!(
        old["Meta"]["proxy-operator/slot"], "a",
        "stopped, not purged: its versions stay"
    );

    // And back to slot a: its stopped copy registered again with its JobModifyIndex.
    let third = cluster.put(&cluster.doc(102, None)).await;
    cluster.wait_ready(&third, JOB).await;
    assert!(cluster.stopped(JOB_B).await);
    assert!(!cluster.stopped(JOB).await);
    // The old slot's drain (requestAcceptGraceTimeout, then graceTimeOut) ends under load.
    tokio::time::sleep(Duration::from_secs(2)).await;
    load.abort();
    fresh_load.abort();

    let (failed, gap, total) = failures(&samples.lock().unwrap());
    eprintln!(
        "two handovers, keep-alive client: {total} requests, {} failed, longest gap without a 2xx {gap:?}",
        failed.len()
    );
    assert!(total > 100, "the load ran: {total} requests");
    assert!(
        failed.is_empty(),
        "{} of {total} keep-alive requests failed during the handovers: {:?}",
        failed.len(),
        &failed[..failed.len().min(20)]
    );

    // A connection per request meets the new Traefik as soon as it listens, before its first
    // dynamic configuration is loaded (Traefik opens its entry points first; traefik#7347):
    // those requests get a 404. Nothing else may fail, and the 404s of each handover must fit
    // in under a second.
    let fresh = fresh_samples.lock().unwrap().clone();
    let (failed, gap, total) = failures(&fresh);
    let not_404: Vec<&String> = failed.iter().filter(|f| *f != "Ok(404)").collect();
    let windows = windows_404(&fresh);
    eprintln!(
        "two handovers, a connection per request: {total} requests, {} failed ({} 404s in windows {windows:?}), longest gap without a 2xx {gap:?}",
        failed.len(),
        failed.len() - not_404.len()
    );
    assert!(total > 100, "the load ran: {total} requests");
    assert!(
        not_404.is_empty(),
        "connection errors or other statuses during the handovers: {not_404:?}"
    );
    assert!(
        windows.len() <= 2,
        "404s only at the two handovers: {windows:?}"
    );
    assert!(
        windows.iter().all(|w| *w < Duration::from_secs(1)),
        "each handover's 404 window is under a second: {windows:?}"
    );
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_structural_change_whose_task_exits_stops_only_the_new_slot_and_the_old_proxy_serves_throughout()
 {
    let cluster = Cluster::start().await;
    let good = cluster.put(&cluster.doc(100, None)).await;
    cluster.wait_ready(&good, JOB).await;
    serving(&cluster).await;
    let old_pid = pid_listening_on(cluster.dashboard).expect("the serving Traefik");

    let samples = Arc::new(Mutex::new(Vec::new()));
    let load = start_load(cluster.web, true, Arc::clone(&samples));
    tokio::time::sleep(Duration::from_secs(1)).await;

    // A task that exits at once (status 1): the new slot dies at start.
    let t0 = Instant::now();
    let bad = cluster.put(&cluster.doc(100, Some("/bin/false"))).await;
    let status = cluster
        .wait_status("RolledBack", |s| {
            s.phase == Phase::RolledBack && s.failed_digest.as_deref() == Some(bad.as_str())
        })
        .await;
    eprintln!(
        "the failed handover was rolled back {:?} after the edit",
        t0.elapsed()
    );
    tokio::time::sleep(Duration::from_secs(1)).await;
    load.abort();

    let reason = status
        .conditions
        .iter()
        .map(|c| c.message.clone())
        .collect::<Vec<_>>()
        .join(" | ");
    eprintln!("status: {reason}");
    assert!(
        reason.contains("the old one never stopped serving"),
        "the status names the handover's outcome: {reason}"
    );
    assert!(
        reason.contains(JOB_B),
        "the status names the new slot: {reason}"
    );
    assert!(
        cluster.stopped(JOB_B).await,
        "the failed new slot is stopped"
    );
    assert!(
        !cluster.stopped(JOB).await,
        "the old slot was never stopped"
    );
    assert!(
        process_alive(old_pid),
        "the old Traefik is the same process"
    );
    assert_eq!(pid_listening_on(cluster.dashboard), Some(old_pid));

    let (failed, gap, total) = failures(&samples.lock().unwrap());
    eprintln!(
        "failed handover under load: {total} requests, {} failed, longest gap without a 2xx {gap:?}",
        failed.len()
    );
    assert!(total > 50, "the load ran: {total} requests");
    assert!(
        failed.is_empty(),
        "{} of {total} requests failed while the old proxy should have served: {:?}",
        failed.len(),
        &failed[..failed.len().min(20)]
    );
    cluster.shutdown().await;
}
