//! Services with `provider = "consul"` land in the twin's Consul catalog with their checks, their
//! check status follows the real probes, and they leave the catalog when the job stops.
#![allow(clippy::unwrap_used, clippy::panic)]

mod nomad_support;
#[path = "../../tests/support/mod.rs"]
mod support;

use nomad_support::Nomad;
use serde_json::{Value, json};
use std::time::Duration;
use support::{Backend, eventually, free_port};

const SEC: u64 = 1_000_000_000;

async fn consul_get(n: &Nomad, path: &str) -> Value {
    let addr = n.twin.as_ref().unwrap().consul_addr();
    reqwest::get(format!("http://{addr}{path}"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

#[tokio::test]
async fn consul_provider_services_register_with_live_check_status_and_deregister_on_stop() {
    let n = Nomad::start().await;
    let backend = Backend::start("consul-backend").await;
    let dead_port = free_port();
    let job = json!({
        "ID": "api",
        "TaskGroups": [{
            "Name": "g",
            "Networks": [{"ReservedPorts": [{"Label": "http", "Value": backend.port()}, {"Label": "dead", "Value": dead_port}]}],
            "Services": [
                {
                    "Name": "api", "PortLabel": "http", "Tags": ["traefik.enable=true"],
                    "Checks": [{"Name": "api-http", "Type": "http", "Path": "/health", "Interval": SEC, "Timeout": SEC}],
                },
                {
                    "Name": "broken", "PortLabel": "dead", "Provider": "consul",
                    "Checks": [{"Type": "tcp", "Interval": SEC, "Timeout": SEC}],
                },
            ],
            "Tasks": [{"Name": "hold", "Driver": "raw_exec", "Config": {"command": "/bin/sh", "args": ["-c", "exec sleep 1000"]}}],
        }],
    });
    n.register(job).await;
    let job = n.get("/v1/job/api").await;
    assert_eq!(
        job["TaskGroups"][0]["Services"][0]["Provider"], "consul",
        "consul is the default provider"
    );

    let passing = eventually(Duration::from_secs(15), || async {
        let v = consul_get(&n, "/v1/health/service/api?passing").await;
        v.as_array().filter(|a| a.len() == 1).cloned()
    })
    .await
    .expect("api never became passing in Consul");
    let entry = &passing[0];
    assert_eq!(entry["Service"]["Port"], backend.port());
    assert_eq!(entry["Service"]["Address"], "127.0.0.1");
    assert_eq!(entry["Service"]["Tags"], json!(["traefik.enable=true"]));
    assert_eq!(entry["Node"]["Node"], "hashistack-twin");
    assert!(
        entry["Checks"]
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c["Name"] == "api-http" && c["Status"] == "passing")
    );
    assert!(
        n.get("/v1/services").await.as_array().unwrap().is_empty(),
        "consul services are not in Nomad's catalog"
    );

    let broken = consul_get(&n, "/v1/health/service/broken").await;
    assert_eq!(broken.as_array().unwrap().len(), 1);
    assert!(
        broken[0]["Checks"]
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c["ServiceID"] != "" && c["Status"] == "critical")
    );
    assert_eq!(
        consul_get(&n, "/v1/health/service/broken?passing").await,
        json!([])
    );

    assert_eq!(n.send("DELETE", "/v1/job/api", None).await.status, 200);
    let gone = eventually(Duration::from_secs(15), || async {
        let v = consul_get(&n, "/v1/catalog/service/api").await;
        v.as_array().is_some_and(Vec::is_empty).then_some(())
    })
    .await;
    assert!(
        gone.is_some(),
        "api stayed in the Consul catalog after the job stopped"
    );
    n.shutdown().await;
}
