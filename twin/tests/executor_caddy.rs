//! Real Caddy run as a raw_exec task under the twin's minimal task environment (`PATH`, `HOME`,
//! `NOMAD_*`): it starts from a templated Caddyfile, its http check makes the deployment
//! successful, and it serves on its dynamic port.
#![allow(clippy::unwrap_used, clippy::panic)]

mod nomad_support;
#[path = "../../tests/support/mod.rs"]
mod support;

use nomad_support::Nomad;
use serde_json::json;
use std::time::Duration;
use support::caddy_bin;

const SEC: u64 = 1_000_000_000;

#[tokio::test]
async fn real_caddy_starts_as_a_task_with_the_minimal_environment_and_serves() {
    let n = Nomad::start().await;
    let caddyfile = "{\n  admin 127.0.0.1:{{ env \"NOMAD_PORT_admin\" }}\n  storage file_system {{ env \"NOMAD_TASK_DIR\" }}/data\n}\n\
                     http://127.0.0.1:{{ env \"NOMAD_PORT_web\" }} {\n  respond \"caddy-ok\"\n}\n";
    let job = json!({
        "ID": "caddy",
        "TaskGroups": [{
            "Name": "proxy",
            "Networks": [{"DynamicPorts": [{"Label": "web"}, {"Label": "admin"}]}],
            "Update": {"MinHealthyTime": SEC / 2, "HealthyDeadline": 30 * SEC, "ProgressDeadline": 60 * SEC},
            "Services": [{
                "Name": "caddy", "PortLabel": "web", "Provider": "nomad",
                "Checks": [{"Type": "http", "Path": "/", "PortLabel": "web", "Interval": SEC, "Timeout": SEC}],
            }],
            "Tasks": [{
                "Name": "caddy",
                "Driver": "raw_exec",
                "Config": {"command": caddy_bin().display().to_string(),
                           "args": ["run", "--config", "${NOMAD_TASK_DIR}/Caddyfile", "--adapter", "caddyfile"]},
                "Templates": [{"DestPath": "local/Caddyfile", "EmbeddedTmpl": caddyfile}],
                "KillTimeout": 5 * SEC,
            }],
        }],
    });
    n.register(job).await;
    let dep = n
        .wait_for("/v1/job/caddy/deployment", Duration::from_secs(40), |d| {
            d["Status"] == "successful" || d["Status"] == "failed"
        })
        .await;
    let allocs = n.get("/v1/job/caddy/allocations").await;
    assert_eq!(
        dep["Status"], "successful",
        "deployment: {dep:#}\nallocs: {allocs:#}"
    );
    let alloc = n
        .get(&format!(
            "/v1/allocation/{}",
            allocs[0]["ID"].as_str().unwrap()
        ))
        .await;
    let port = alloc["AllocatedResources"]["Shared"]["Ports"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["Label"] == "web")
        .unwrap()["Value"]
        .as_u64()
        .unwrap();
    let body = reqwest::get(format!("http://127.0.0.1:{port}/"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(body, "caddy-ok");
    n.shutdown().await;
}
