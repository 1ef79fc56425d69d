//! Real Traefik run as a raw_exec job inside the twin: configured by a template, healthy through
//! its `/ping` http check, deployment successful and version stable, and it routes traffic to a
//! service that another job registers, without hot-looping against the twin.
#![allow(clippy::unwrap_used, clippy::panic)]

mod nomad_support;
#[path = "../../tests/support/mod.rs"]
mod support;

use nomad_support::{CountedNomad, get_with_host};
use serde_json::{Value, json};
use std::net::SocketAddr;
use std::time::Duration;
use support::{Backend, eventually, traefik_bin};

const SEC: u64 = 1_000_000_000;

fn traefik_job(kind: &str, nomad: SocketAddr) -> Value {
    let config = format!(
        "entryPoints:\n  web:\n    address: \"127.0.0.1:{{{{ env \"NOMAD_PORT_web\" }}}}\"\n  traefik:\n    address: \"127.0.0.1:{{{{ env \"NOMAD_PORT_ping\" }}}}\"\n\
         ping:\n  entryPoint: traefik\nlog:\n  level: DEBUG\n\
         providers:\n  providersThrottleDuration: 100ms\n  nomad:\n    exposedByDefault: false\n    watch: true\n    endpoint:\n      address: \"http://{nomad}\"\n"
    );
    json!({
        "ID": "edge",
        "Type": kind,
        "TaskGroups": [{
            "Name": "proxy",
            "Networks": [{"DynamicPorts": [{"Label": "web"}, {"Label": "ping"}]}],
            "Update": {"MinHealthyTime": SEC / 2, "HealthyDeadline": 30 * SEC, "ProgressDeadline": 60 * SEC},
            "Services": [{
                "Name": "edge",
                "PortLabel": "web",
                "Provider": "nomad",
                "Checks": [{"Type": "http", "Path": "/ping", "PortLabel": "ping", "Interval": SEC, "Timeout": SEC}],
            }],
            "Tasks": [{
                "Name": "traefik",
                "Driver": "raw_exec",
                "Config": {"command": traefik_bin().display().to_string(), "args": ["--configfile=${NOMAD_TASK_DIR}/traefik.yml"]},
                "Templates": [{"DestPath": "local/traefik.yml", "EmbeddedTmpl": config}],
                "KillTimeout": 5 * SEC,
            }],
        }],
    })
}

fn backend_job(backend: &Backend) -> Value {
    json!({
        "ID": "whoami",
        "TaskGroups": [{
            "Name": "web",
            "Networks": [{"ReservedPorts": [{"Label": "http", "Value": backend.port()}]}],
            "Services": [{
                "Name": "whoami", "PortLabel": "http", "Provider": "nomad",
                "Tags": ["traefik.enable=true", "traefik.http.routers.w.rule=Host(`app.test`)", "traefik.http.routers.w.entrypoints=web"],
            }],
            "Tasks": [{"Name": "hold", "Driver": "raw_exec", "Config": {"command": "/bin/sh", "args": ["-c", "exec sleep 1000"]}}],
        }],
    })
}

async fn traefik_as_a_job(kind: &str) {
    let nomad = CountedNomad::start().await;
    let backend = Backend::start("app-backend").await;
    nomad.client.register(backend_job(&backend)).await;
    nomad.client.register(traefik_job(kind, nomad.addr)).await;
    let dep = nomad
        .client
        .wait_for("/v1/job/edge/deployment", Duration::from_secs(40), |d| {
            d["Status"] == "successful" || d["Status"] == "failed"
        })
        .await;
    let allocs = nomad.client.get("/v1/job/edge/allocations").await;
    assert_eq!(
        dep["Status"], "successful",
        "deployment: {dep:#}\nallocs: {allocs:#}"
    );
    assert_eq!(allocs.as_array().unwrap().len(), 1);
    assert_eq!(allocs[0]["DeploymentStatus"]["Healthy"], true);
    assert_eq!(allocs[0]["ClientStatus"], "running");
    let job = nomad
        .client
        .wait_for("/v1/job/edge", Duration::from_secs(5), |j| {
            j["Stable"] == true
        })
        .await;
    assert_eq!(job["Status"], "running");

    let alloc = nomad
        .client
        .get(&format!(
            "/v1/allocation/{}",
            allocs[0]["ID"].as_str().unwrap()
        ))
        .await;
    let web_port = alloc["AllocatedResources"]["Shared"]["Ports"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["Label"] == "web")
        .and_then(|p| p["Value"].as_u64())
        .unwrap() as u16;
    let web = SocketAddr::from(([127, 0, 0, 1], web_port));
    let routed = eventually(Duration::from_secs(15), || async {
        get_with_host(web, "app.test")
            .await
            .filter(|(status, _)| *status == 200)
    })
    .await;
    assert_eq!(routed.map(|(_, b)| b), Some("app-backend".to_string()));

    // The proxy job watches the twin's event stream: idle, it must not keep asking.
    let before = nomad.count();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let idle = nomad.count() - before;
    assert!(
        idle <= 2,
        "Traefik in the job made {idle} Nomad requests in 3 idle seconds"
    );
    nomad.shutdown().await;
}

#[tokio::test]
async fn traefik_as_a_service_job_becomes_healthy_through_ping_and_its_deployment_succeeds() {
    traefik_as_a_job("service").await;
}

#[tokio::test]
async fn traefik_as_a_system_job_with_an_update_block_gets_a_successful_deployment() {
    traefik_as_a_job("system").await;
}
