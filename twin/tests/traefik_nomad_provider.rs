//! Real Traefik's `providers.nomad` discovers a Nomad-native service through the twin, in polling
//! mode and in watch mode (event stream), routes real traffic to it, drops the route when the job
//! stops, and does not hot-loop against the twin.
#![allow(clippy::unwrap_used, clippy::panic)]

mod nomad_support;
#[path = "../../tests/support/mod.rs"]
mod support;

use nomad_support::{CountedNomad, get_with_host};
use serde_json::json;
use std::net::SocketAddr;
use std::time::Duration;
use support::{Backend, ChildGuard, eventually, free_port, traefik_bin};

fn start_traefik(
    dir: &std::path::Path,
    nomad: SocketAddr,
    watch: bool,
) -> (ChildGuard, SocketAddr) {
    let web = free_port();
    let ping = free_port();
    let mode = if watch {
        "watch: true"
    } else {
        "refreshInterval: 1s"
    };
    let config = format!(
        "entryPoints:\n  web:\n    address: \"127.0.0.1:{web}\"\n  traefik:\n    address: \"127.0.0.1:{ping}\"\n\
         ping:\n  entryPoint: traefik\nlog:\n  level: DEBUG\n\
         providers:\n  providersThrottleDuration: 100ms\n  nomad:\n    exposedByDefault: false\n    {mode}\n    endpoint:\n      address: \"http://{nomad}\"\n"
    );
    let path = dir.join("traefik.yml");
    std::fs::write(&path, config).unwrap();
    let mut cmd = std::process::Command::new(traefik_bin());
    cmd.arg(format!("--configfile={}", path.display()))
        .env_remove("NOMAD_ADDR")
        .env_remove("NOMAD_TOKEN")
        .env_remove("NOMAD_REGION")
        .env_remove("NOMAD_NAMESPACE")
        .env("XDG_CONFIG_HOME", dir)
        .env("XDG_DATA_HOME", dir);
    let guard = ChildGuard::spawn(cmd, &dir.join("traefik.log"));
    (guard, SocketAddr::from(([127, 0, 0, 1], web)))
}

/// A job whose service (provider nomad) points at `backend`'s port through a reserved port.
fn backend_job(backend: &Backend) -> serde_json::Value {
    json!({
        "ID": "whoami",
        "TaskGroups": [{
            "Name": "web",
            "Networks": [{"ReservedPorts": [{"Label": "http", "Value": backend.port()}]}],
            "Services": [{
                "Name": "whoami",
                "PortLabel": "http",
                "Provider": "nomad",
                "Tags": [
                    "traefik.enable=true",
                    "traefik.http.routers.nwhoami.rule=Host(`nomad.test`)",
                    "traefik.http.routers.nwhoami.entrypoints=web",
                ],
            }],
            "Tasks": [{"Name": "hold", "Driver": "raw_exec", "Config": {"command": "/bin/sh", "args": ["-c", "exec sleep 1000"]}}],
        }],
    })
}

async fn route_lifecycle(watch: bool) {
    let nomad = CountedNomad::start().await;
    let backend = Backend::start("nomad-backend").await;
    let dir = tempfile::tempdir().unwrap();
    let (traefik, web) = start_traefik(dir.path(), nomad.addr, watch);
    nomad.client.register(backend_job(&backend)).await;
    let routed = eventually(Duration::from_secs(15), || async {
        get_with_host(web, "nomad.test")
            .await
            .filter(|(status, _)| *status == 200)
    })
    .await;
    assert_eq!(
        routed.map(|(_, b)| b),
        Some("nomad-backend".to_string()),
        "no route through Traefik; log:\n{}",
        traefik.log()
    );

    // Idle: polling every 1 s costs ~2 requests a second; watch mode costs none.
    let before = nomad.count();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let idle = nomad.count() - before;
    let limit = if watch { 2 } else { 10 };
    assert!(
        idle <= limit,
        "Traefik made {idle} Nomad requests in 3 idle seconds (watch={watch})"
    );

    let a = nomad.client.send("DELETE", "/v1/job/whoami", None).await;
    assert_eq!(a.status, 200);
    let gone = eventually(Duration::from_secs(15), || async {
        get_with_host(web, "nomad.test")
            .await
            .filter(|(status, _)| *status == 404)
    })
    .await;
    assert!(
        gone.is_some(),
        "route survived the job stop; log:\n{}",
        traefik.log()
    );
    drop(traefik);
    nomad.shutdown().await;
}

#[tokio::test]
async fn traefik_nomad_provider_in_polling_mode_routes_to_a_job_service_and_drops_it_on_stop() {
    route_lifecycle(false).await;
}

#[tokio::test]
async fn traefik_nomad_provider_in_watch_mode_follows_the_event_stream() {
    route_lifecycle(true).await;
}
