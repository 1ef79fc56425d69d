//! Several client nodes: system jobs get one allocation per eligible node, each node runs its
//! tasks as real processes apart by port, and drain / eligibility steer the scheduler
//! (Nomad's node endpoints, SRC command/agent/node_endpoint.go and nomad/node_endpoint.go).
#![allow(clippy::unwrap_used, clippy::panic)]

mod nomad_support;

use hashistack_twin::TwinConfig;
use nomad_support::{Nomad, pid_alive};
use serde_json::{Value, json};
use std::collections::BTreeSet;
use std::time::Duration;

async fn three_nodes() -> Nomad {
    Nomad::start_with(TwinConfig {
        nomad_nodes: 3,
        ..TwinConfig::default()
    })
    .await
}

/// A system job whose task records its PID, then serves HTTP on its node address and dynamic port.
fn web_system_job(id: &str) -> Value {
    json!({
        "ID": id,
        "Type": "system",
        "TaskGroups": [{
            "Name": "web",
            "Networks": [{"DynamicPorts": [{"Label": "http"}]}],
            "Tasks": [{
                "Name": "srv",
                "Driver": "raw_exec",
                "Config": {"command": "/bin/sh", "args": ["-c",
                    "echo $$ > \"$NOMAD_ALLOC_DIR/pid\"; exec python3 -m http.server \"$NOMAD_PORT_http\" --bind \"$NOMAD_IP_http\""]},
                "KillTimeout": 2_000_000_000u64,
            }],
        }],
    })
}

fn pid_file(alloc_id: &str) -> Option<u32> {
    let entries = std::fs::read_dir(std::env::temp_dir()).ok()?;
    entries.flatten().find_map(|e| {
        let text =
            std::fs::read_to_string(e.path().join(alloc_id).join("alloc").join("pid")).ok()?;
        text.trim().parse().ok()
    })
}

async fn pid_of(alloc_id: &str) -> u32 {
    for _ in 0..200 {
        if let Some(pid) = pid_file(alloc_id) {
            return pid;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("allocation {alloc_id} never wrote its pid");
}

fn http_port(alloc: &Value) -> u64 {
    alloc["AllocatedResources"]["Shared"]["Ports"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["Label"] == "http")
        .unwrap()["Value"]
        .as_u64()
        .unwrap()
}

async fn running_allocs(n: &Nomad, job: &str, count: usize) -> Vec<Value> {
    let list = n
        .wait_for(
            &format!("/v1/job/{job}/allocations"),
            Duration::from_secs(30),
            |v| {
                v.as_array()
                    .unwrap()
                    .iter()
                    .filter(|a| a["ClientStatus"] == "running")
                    .count()
                    == count
            },
        )
        .await;
    let mut out = Vec::new();
    for stub in list
        .as_array()
        .unwrap()
        .iter()
        .filter(|a| a["ClientStatus"] == "running")
    {
        out.push(
            n.get(&format!("/v1/allocation/{}", stub["ID"].as_str().unwrap()))
                .await,
        );
    }
    out
}

#[tokio::test]
async fn nodes_are_listed_and_read_as_documented_and_an_unknown_node_is_404() {
    let n = three_nodes().await;
    let nodes = n.get("/v1/nodes").await;
    let nodes = nodes.as_array().unwrap();
    assert_eq!(nodes.len(), 3);
    let ids: BTreeSet<&str> = nodes.iter().map(|x| x["ID"].as_str().unwrap()).collect();
    let addrs: BTreeSet<&str> = nodes
        .iter()
        .map(|x| x["Address"].as_str().unwrap())
        .collect();
    assert_eq!((ids.len(), addrs.len()), (3, 3), "{nodes:#?}");
    for stub in nodes {
        assert_eq!(stub["SchedulingEligibility"], "eligible");
        assert_eq!(stub["Status"], "ready");
        assert_eq!(stub["Drain"], false);
        let id = stub["ID"].as_str().unwrap();
        let full = n.get(&format!("/v1/node/{id}")).await;
        assert_eq!(full["ID"], id);
        assert_eq!(full["SecretID"], "", "the server clears the secret");
        assert_eq!(full["DrainStrategy"], Value::Null);
        assert_eq!(
            full["Attributes"]["unique.network.ip-address"],
            stub["Address"]
        );
        assert_eq!(full["Drivers"]["raw_exec"]["Healthy"], true);
    }
    let unknown = n
        .send("GET", "/v1/node/00000000-0000-0000-0000-000000000000", None)
        .await;
    assert_eq!(
        (unknown.status, unknown.text.as_str()),
        (404, "node not found")
    );
    n.shutdown().await;
}

#[tokio::test]
async fn a_system_job_on_three_nodes_runs_three_processes_on_distinct_ports_and_a_drain_stops_one()
{
    let n = three_nodes().await;
    let node_ids: BTreeSet<String> = n
        .get("/v1/nodes")
        .await
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x["ID"].as_str().unwrap().to_string())
        .collect();
    n.register(web_system_job("edge")).await;
    let allocs = running_allocs(&n, "edge", 3).await;
    let on_nodes: BTreeSet<String> = allocs
        .iter()
        .map(|a| a["NodeID"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(on_nodes, node_ids, "one allocation per node");
    let ports: BTreeSet<u64> = allocs.iter().map(http_port).collect();
    assert_eq!(ports.len(), 3, "dynamic ports keep the allocations apart");
    let mut pids = BTreeSet::new();
    for a in &allocs {
        let id = a["ID"].as_str().unwrap();
        let pid = pid_of(id).await;
        assert!(pid_alive(pid));
        pids.insert(pid);
        // Each process serves on its own node's address and port.
        let node = n
            .get(&format!("/v1/node/{}", a["NodeID"].as_str().unwrap()))
            .await;
        let shared = &a["AllocatedResources"]["Shared"]["Ports"][0];
        assert_eq!(
            shared["HostIP"],
            node["Attributes"]["unique.network.ip-address"]
        );
        let url = format!(
            "http://{}:{}/",
            node["Attributes"]["unique.network.ip-address"]
                .as_str()
                .unwrap(),
            http_port(a)
        );
        let mut served = false;
        for _ in 0..100 {
            if reqwest::get(&url)
                .await
                .is_ok_and(|r| r.status().is_success())
            {
                served = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert!(served, "allocation {id} does not serve on {url}");
    }
    assert_eq!(pids.len(), 3, "three processes");

    let drained = allocs[0].clone();
    let node = drained["NodeID"].as_str().unwrap();
    let pid = pid_of(drained["ID"].as_str().unwrap()).await;
    let a = n
        .send(
            "PUT",
            &format!("/v1/node/{node}/drain"),
            Some(json!({"DrainSpec": {"Deadline": 0, "IgnoreSystemJobs": false}, "Meta": null})),
        )
        .await;
    assert_eq!(a.status, 200, "{}", a.text);
    let body = a.json();
    assert!(body["NodeModifyIndex"].as_u64().unwrap() > 0);
    assert_eq!(body["Index"].as_u64(), Some(a.index()));
    assert!(
        !body["EvalIDs"].as_array().unwrap().is_empty(),
        "a node eval per affected job"
    );
    let stopped = n
        .wait_for(
            &format!("/v1/allocation/{}", drained["ID"].as_str().unwrap()),
            Duration::from_secs(15),
            |a| a["ClientStatus"] == "complete",
        )
        .await;
    assert_eq!(stopped["DesiredStatus"], "stop");
    assert_eq!(
        stopped["DesiredDescription"],
        "alloc not needed as node is tainted"
    );
    assert!(!pid_alive(pid), "the drained node's process is gone");
    for other in &allocs[1..] {
        let a = n
            .get(&format!("/v1/allocation/{}", other["ID"].as_str().unwrap()))
            .await;
        assert_eq!(a["ClientStatus"], "running", "other nodes keep theirs");
    }
    // The drain completes once nothing is left; the node stays ineligible.
    let done = n
        .wait_for(&format!("/v1/node/{node}"), Duration::from_secs(10), |v| {
            v["DrainStrategy"].is_null()
        })
        .await;
    assert_eq!(done["SchedulingEligibility"], "ineligible");
    assert_eq!(done["LastDrain"]["Status"], "complete");
    let on_node = n.get(&format!("/v1/node/{node}/allocations")).await;
    assert!(
        on_node
            .as_array()
            .unwrap()
            .iter()
            .all(|a| a["DesiredStatus"] == "stop")
    );

    // Eligible again: the system job is placed back on the node.
    let a = n
        .send(
            "PUT",
            &format!("/v1/node/{node}/eligibility"),
            Some(json!({"Eligibility": "eligible"})),
        )
        .await;
    assert_eq!(a.status, 200, "{}", a.text);
    let back = running_allocs(&n, "edge", 3).await;
    assert!(back.iter().any(|a| a["NodeID"] == node));
    n.shutdown().await;
}

#[tokio::test]
async fn an_ineligible_node_keeps_its_allocation_but_gets_no_new_one() {
    let n = three_nodes().await;
    let nodes = n.get("/v1/nodes").await;
    let node = nodes[1]["ID"].as_str().unwrap().to_string();
    let a = n
        .send(
            "POST",
            &format!("/v1/node/{node}/eligibility"),
            Some(json!({"NodeID": node, "Eligibility": "ineligible"})),
        )
        .await;
    assert_eq!(a.status, 200, "{}", a.text);
    assert_eq!(
        a.json()["EvalIDs"],
        Value::Null,
        "ineligibility moves nothing"
    );
    n.register(web_system_job("edge")).await;
    let allocs = running_allocs(&n, "edge", 2).await;
    assert!(allocs.iter().all(|a| a["NodeID"] != node.as_str()));
    // A service job spreads over the eligible nodes only.
    let mut svc = web_system_job("api");
    svc["Type"] = json!("service");
    svc["TaskGroups"][0]["Count"] = json!(4);
    n.register(svc).await;
    let allocs = running_allocs(&n, "api", 4).await;
    let mut per_node = std::collections::BTreeMap::<String, u32>::new();
    for a in &allocs {
        *per_node
            .entry(a["NodeID"].as_str().unwrap().to_string())
            .or_default() += 1;
    }
    assert!(!per_node.contains_key(&node), "{per_node:?}");
    assert_eq!(
        per_node.values().copied().collect::<Vec<_>>(),
        vec![2, 2],
        "spread"
    );
    n.shutdown().await;
}

#[tokio::test]
async fn node_updates_are_refused_with_nomads_texts() {
    let n = three_nodes().await;
    let nodes = n.get("/v1/nodes").await;
    let node = nodes[2]["ID"].as_str().unwrap().to_string();
    let bogus = n
        .send(
            "PUT",
            &format!("/v1/node/{node}/eligibility"),
            Some(json!({"Eligibility": "bogus"})),
        )
        .await;
    assert_eq!(
        (bogus.status, bogus.text.as_str()),
        (500, "invalid scheduling eligibility \"bogus\"")
    );
    let unknown = n
        .send(
            "PUT",
            "/v1/node/nope/drain",
            Some(json!({"DrainSpec": {"Deadline": 0}})),
        )
        .await;
    assert_eq!(
        (unknown.status, unknown.text.as_str()),
        (500, "node not found")
    );
    let unknown = n
        .send(
            "PUT",
            "/v1/node/nope/eligibility",
            Some(json!({"Eligibility": "eligible"})),
        )
        .await;
    assert_eq!(
        (unknown.status, unknown.text.as_str()),
        (500, "node not found")
    );
    let typed = n
        .send(
            "PUT",
            &format!("/v1/node/{node}/drain"),
            Some(json!({"MarkEligible": "yes"})),
        )
        .await;
    assert_eq!(typed.status, 400, "{}", typed.text);

    // A service allocation that ignores SIGINT keeps the drain going for its kill timeout.
    let job = json!({
        "ID": "slow", "Type": "service",
        "Constraints": null,
        "TaskGroups": [{"Name": "g", "Count": 1, "Tasks": [{
            "Name": "t", "Driver": "raw_exec",
            "Config": {"command": "/bin/sh", "args": ["-c", "trap '' INT; while true; do sleep 0.1; done"]},
            "KillTimeout": 4_000_000_000u64,
        }]}],
    });
    n.register(job).await;
    let allocs = running_allocs(&n, "slow", 1).await;
    let busy = allocs[0]["NodeID"].as_str().unwrap().to_string();
    let a = n
        .send(
            "PUT",
            &format!("/v1/node/{busy}/drain"),
            Some(json!({"DrainSpec": {"Deadline": 60_000_000_000u64}})),
        )
        .await;
    assert_eq!(a.status, 200, "{}", a.text);
    let draining = n.get(&format!("/v1/node/{busy}")).await;
    assert_eq!(draining["Drain"], true);
    assert_eq!(draining["DrainStrategy"]["Deadline"], 60_000_000_000u64);
    let refused = n
        .send(
            "PUT",
            &format!("/v1/node/{busy}/eligibility"),
            Some(json!({"Eligibility": "eligible"})),
        )
        .await;
    assert_eq!(
        (refused.status, refused.text.as_str()),
        (
            500,
            "can not set node's scheduling eligibility to eligible while it is draining"
        )
    );
    // The service allocation is migrated: a replacement runs on another node.
    let moved = n
        .wait_for("/v1/job/slow/allocations", Duration::from_secs(30), |v| {
            v.as_array().unwrap().iter().any(|a| {
                a["ClientStatus"] == "running"
                    && a["DesiredStatus"] == "run"
                    && a["NodeID"] != busy.as_str()
            })
        })
        .await;
    let old = moved
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["NodeID"] == busy.as_str())
        .unwrap();
    assert_eq!(old["DesiredDescription"], "alloc is being migrated");
    assert_eq!(old["DesiredTransition"]["Migrate"], true);
    // Cancelling the drain with MarkEligible makes the node eligible again at once.
    let a = n
        .send(
            "PUT",
            &format!("/v1/node/{busy}/drain"),
            Some(json!({"DrainSpec": null, "MarkEligible": true})),
        )
        .await;
    assert_eq!(a.status, 200, "{}", a.text);
    let node_now = n.get(&format!("/v1/node/{busy}")).await;
    assert_eq!(node_now["SchedulingEligibility"], "eligible");
    assert_eq!(node_now["DrainStrategy"], Value::Null);
    n.shutdown().await;
}

#[tokio::test]
async fn two_allocations_share_a_static_port_on_one_node_only_with_ignore_collision() {
    let n = Nomad::start().await;
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let job = |id: &str, ignore: bool| {
        json!({
            "ID": id,
            "TaskGroups": [{
                "Name": "g",
                "Count": 1,
                "Networks": [{"ReservedPorts": [{"Label": "http", "Value": port, "IgnoreCollision": ignore}]}],
                "Tasks": [{"Name": "t", "Driver": "raw_exec", "Config": {"command": "/bin/sh", "args": ["-c", "exec sleep 1000"]}}],
            }],
        })
    };
    n.register(job("old", true)).await;
    n.register(job("new", true)).await;
    running_allocs(&n, "old", 1).await;
    running_allocs(&n, "new", 1).await;
    // Without the flag the port is the node's once: the third job is not placed.
    let third = n.register(job("third", false)).await;
    let eval = n
        .get(&format!(
            "/v1/evaluation/{}",
            third["EvalID"].as_str().unwrap()
        ))
        .await;
    assert_eq!(
        eval["FailedTGAllocs"],
        Value::Null,
        "shared ports block nobody: {eval:#}"
    );
    n.register(job("fourth", false)).await;
    let allocs = n.get("/v1/job/fourth/allocations").await;
    assert_eq!(allocs, json!([]), "an exclusive port is held by `third`");
    n.shutdown().await;
}
