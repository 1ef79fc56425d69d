//! The executor runs real processes: environment, templates, logs, restart policy, checks,
//! deployment health, replacement on a new version and kill on stop.
#![allow(clippy::unwrap_used, clippy::panic)]

mod nomad_support;

use nomad_support::{Nomad, pid_alive, sh_job};
use serde_json::{Value, json};
use std::path::PathBuf;
use std::time::Duration;

const SEC: u64 = 1_000_000_000;

async fn first_alloc(n: &Nomad, job: &str, check: impl Fn(&Value) -> bool) -> Value {
    let list = n
        .wait_for(
            &format!("/v1/job/{job}/allocations"),
            Duration::from_secs(20),
            |v| v.as_array().is_some_and(|a| a.iter().any(&check)),
        )
        .await;
    list.as_array()
        .unwrap()
        .iter()
        .find(|a| check(a))
        .cloned()
        .unwrap()
}

async fn read_env_file(n: &Nomad, alloc_id: &str) -> (String, PathBuf) {
    // The task writes its environment into its alloc dir, under the twin's scratch dir in $TMPDIR.
    assert_eq!(
        n.get(&format!("/v1/allocation/{alloc_id}")).await["ID"],
        alloc_id
    );
    for _ in 0..200 {
        for entry in glob_env_files(alloc_id) {
            if let Ok(text) = std::fs::read_to_string(&entry)
                && text.contains("NOMAD_ALLOC_ID")
            {
                return (text, entry);
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("task never wrote its environment");
}

fn glob_env_files(alloc_id: &str) -> Vec<PathBuf> {
    let mut out = Vec::new();
    if let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) {
        for e in entries.flatten() {
            let p = e.path().join(alloc_id).join("alloc").join("env.txt");
            if p.exists() {
                out.push(p);
            }
        }
    }
    out
}

#[tokio::test]
async fn raw_exec_task_runs_with_nomad_env_ports_template_and_logs() {
    let n = Nomad::start().await;
    let mut job = sh_job(
        "envy",
        "env > \"$NOMAD_ALLOC_DIR/env.txt\"; echo hello-stdout; cat local/conf.txt >&2; exec sleep 1000",
    );
    job["TaskGroups"][0]["Networks"] = json!([{"ReservedPorts": [{"Label": "admin", "Value": 18999}], "DynamicPorts": [{"Label": "http"}]}]);
    job["TaskGroups"][0]["Tasks"][0]["Env"] =
        json!({"MY_ADDR": "${NOMAD_ADDR_http}", "LITERAL": "${unknown.thing}"});
    job["TaskGroups"][0]["Tasks"][0]["Templates"] = json!([{"DestPath": "local/conf.txt", "EmbeddedTmpl": "port={{ env \"NOMAD_PORT_http\" }}\n"}]);
    n.register(job).await;
    let alloc = first_alloc(&n, "envy", |a| a["ClientStatus"] == "running").await;
    let alloc_id = alloc["ID"].as_str().unwrap().to_string();
    assert_eq!(alloc["TaskStates"]["t"]["State"], "running");
    let events: Vec<&str> = alloc["TaskStates"]["t"]["Events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["Type"].as_str().unwrap())
        .collect();
    assert!(
        events.starts_with(&["Received", "Task Setup", "Started"]),
        "{events:?}"
    );
    let (env, env_path) = read_env_file(&n, &alloc_id).await;
    let var = |name: &str| {
        env.lines()
            .find_map(|l| l.strip_prefix(&format!("{name}=")))
            .unwrap_or_else(|| panic!("{name} missing"))
            .to_string()
    };
    let alloc_root = env_path.parent().unwrap().parent().unwrap().to_path_buf();
    assert_eq!(var("NOMAD_ALLOC_ID"), alloc_id);
    assert_eq!(
        PathBuf::from(var("NOMAD_ALLOC_DIR")),
        alloc_root.join("alloc")
    );
    assert_eq!(
        PathBuf::from(var("NOMAD_TASK_DIR")),
        alloc_root.join("t").join("local")
    );
    assert_eq!(var("NOMAD_JOB_NAME"), "envy");
    assert_eq!(var("NOMAD_PORT_admin"), "18999");
    assert_eq!(var("NOMAD_ADDR_admin"), "127.0.0.1:18999");
    let http_port: u16 = var("NOMAD_PORT_http").parse().unwrap();
    assert!(http_port > 0);
    assert_eq!(var("NOMAD_HOST_PORT_http"), http_port.to_string());
    assert_eq!(var("NOMAD_IP_http"), "127.0.0.1");
    assert_eq!(var("MY_ADDR"), format!("127.0.0.1:{http_port}"));
    assert_eq!(var("LITERAL"), "${unknown.thing}");
    assert_eq!(
        std::fs::read_to_string(alloc_root.join("t/local/conf.txt")).unwrap(),
        format!("port={http_port}\n")
    );
    assert!(alloc_root.join("t/secrets").is_dir());
    let stdout_log = alloc_root.join("alloc/logs/t.stdout.0");
    let stderr_log = alloc_root.join("alloc/logs/t.stderr.0");
    for _ in 0..100 {
        if std::fs::read_to_string(&stderr_log)
            .unwrap_or_default()
            .contains("port=")
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        std::fs::read_to_string(stdout_log).unwrap(),
        "hello-stdout\n"
    );
    assert_eq!(
        std::fs::read_to_string(stderr_log).unwrap(),
        format!("port={http_port}\n")
    );
    let full = n.get(&format!("/v1/allocation/{alloc_id}")).await;
    assert_eq!(full["Job"]["ID"], "envy");
    assert_eq!(n.get("/v1/job/envy").await["Status"], "running");
    n.shutdown().await;
}

#[tokio::test]
async fn a_task_gets_path_home_and_nomad_variables_but_not_the_twins_environment() {
    // Cargo runs tests with CARGO_* variables set; a task must not inherit them (nor any token
    // the twin's process holds).
    assert!(
        std::env::var("CARGO_MANIFEST_DIR").is_ok(),
        "the sentinel must be set here"
    );
    let n = Nomad::start().await;
    let mut job = sh_job(
        "envmin",
        "env > \"$NOMAD_ALLOC_DIR/env.txt\"; exec sleep 1000",
    );
    job["TaskGroups"][0]["Tasks"][0]["Env"] = json!({"MINE": "yes"});
    n.register(job).await;
    let alloc = first_alloc(&n, "envmin", |a| a["ClientStatus"] == "running").await;
    let (env, _) = read_env_file(&n, alloc["ID"].as_str().unwrap()).await;
    let names: Vec<&str> = env
        .lines()
        .filter_map(|l| l.split_once('=').map(|(k, _)| k))
        .collect();
    assert!(
        !names.contains(&"CARGO_MANIFEST_DIR"),
        "the twin's environment leaked: {names:?}"
    );
    assert!(env.lines().any(|l| l == "MINE=yes"));
    assert!(env.lines().any(|l| l.starts_with("PATH=/")));
    assert!(env.lines().any(|l| l.starts_with("HOME=")));
    let unexpected: Vec<&&str> = names
        .iter()
        .filter(|k| {
            !k.starts_with("NOMAD_") && !["PATH", "HOME", "MINE", "PWD", "SHLVL", "_"].contains(k)
        })
        .collect();
    assert!(
        unexpected.is_empty(),
        "only PATH, HOME, NOMAD_* and the task env: {unexpected:?}"
    );
    n.shutdown().await;
}

#[tokio::test]
async fn a_command_named_without_a_path_is_found_in_the_client_agents_path() {
    // A binary installed outside the system path, found only through the PATH the client agent
    // runs with (as a Nomad client started with that environment would find it).
    let bin = tempfile::tempdir().unwrap();
    let script = bin.path().join("twin-path-probe");
    std::fs::write(
        &script,
        "#!/bin/sh\necho \"$PATH\" > \"$NOMAD_ALLOC_DIR/env.txt\"; echo NOMAD_ALLOC_ID >> \"$NOMAD_ALLOC_DIR/env.txt\"; exec sleep 1000\n",
    )
    .unwrap();
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let client_path = format!("{}:/usr/bin:/bin", bin.path().display());
    let n = Nomad::start_with(hashistack_twin::TwinConfig {
        nomad_client_path: Some(client_path.clone()),
        ..hashistack_twin::TwinConfig::default()
    })
    .await;
    let mut job = sh_job("bypath", "unused");
    job["TaskGroups"][0]["Tasks"][0]["Config"] = json!({"command": "twin-path-probe"});
    n.register(job).await;
    let alloc = first_alloc(&n, "bypath", |a| a["ClientStatus"] == "running").await;
    let (env, _) = read_env_file(&n, alloc["ID"].as_str().unwrap()).await;
    assert_eq!(env.lines().next(), Some(client_path.as_str()));
    n.shutdown().await;
}

#[tokio::test]
async fn failing_command_restarts_per_policy_then_the_allocation_fails() {
    let n = Nomad::start().await;
    let mut job = sh_job("crashy", "echo boom; exit 3");
    job["TaskGroups"][0]["RestartPolicy"] =
        json!({"Attempts": 2, "Interval": 60 * SEC, "Delay": 100_000_000u64, "Mode": "fail"});
    job["TaskGroups"][0]["Update"] = json!({"MinHealthyTime": SEC, "HealthyDeadline": 10 * SEC, "ProgressDeadline": 0, "HealthCheck": "task_states"});
    n.register(job).await;
    let alloc = first_alloc(&n, "crashy", |a| a["ClientStatus"] == "failed").await;
    let ts = &alloc["TaskStates"]["t"];
    assert_eq!(ts["State"], "dead");
    assert_eq!(ts["Failed"], true);
    assert_eq!(ts["Restarts"], 2);
    let events = ts["Events"].as_array().unwrap();
    let terminated = events.iter().filter(|e| e["Type"] == "Terminated").count();
    assert!(terminated >= 2, "{events:#?}");
    assert!(events.iter().any(|e| e["Type"] == "Terminated"
        && e["ExitCode"] == 3
        && e["DisplayMessage"] == "Exit Code: 3"));
    let last = events.last().unwrap();
    assert_eq!(last["Type"], "Not Restarting");
    assert_eq!(
        last["DisplayMessage"],
        "Exceeded allowed attempts 2 in interval 1m0s and mode is \"fail\""
    );
    let dep = n
        .wait_for("/v1/job/crashy/deployment", Duration::from_secs(10), |d| {
            d["Status"] == "failed"
        })
        .await;
    let alloc = n
        .get(&format!("/v1/allocation/{}", alloc["ID"].as_str().unwrap()))
        .await;
    assert_eq!(alloc["DeploymentStatus"]["Healthy"], false);
    assert_eq!(
        dep["StatusDescription"],
        "Failed due to unhealthy allocations"
    );
    assert_eq!(dep["TaskGroups"]["g"]["UnhealthyAllocs"], 1);
    n.shutdown().await;
}

#[tokio::test]
async fn http_check_makes_the_allocation_healthy_and_the_deployment_successful() {
    let n = Nomad::start().await;
    let job = json!({
        "ID": "webby",
        "TaskGroups": [{
            "Name": "g",
            "Networks": [{"DynamicPorts": [{"Label": "http"}]}],
            "Update": {"MinHealthyTime": 300_000_000u64, "HealthyDeadline": 20 * SEC, "ProgressDeadline": 30 * SEC},
            "Services": [{
                "Name": "webby", "PortLabel": "http", "Provider": "nomad", "Tags": ["a", "b"],
                "Checks": [{"Type": "http", "Path": "/", "Interval": SEC, "Timeout": SEC}],
            }],
            "Tasks": [{
                "Name": "server", "Driver": "raw_exec",
                "Config": {"command": "python3", "args": ["-m", "http.server", "${NOMAD_PORT_http}", "--bind", "127.0.0.1"]},
            }],
        }],
    });
    n.register(job).await;
    let dep = n
        .wait_for("/v1/job/webby/deployment", Duration::from_secs(30), |d| {
            d["Status"] == "successful"
        })
        .await;
    assert_eq!(
        dep["StatusDescription"],
        "Deployment completed successfully"
    );
    assert_eq!(dep["TaskGroups"]["g"]["HealthyAllocs"], 1);
    assert_eq!(dep["TaskGroups"]["g"]["DesiredTotal"], 1);
    let alloc = first_alloc(&n, "webby", |a| a["ClientStatus"] == "running").await;
    assert_eq!(alloc["DeploymentStatus"]["Healthy"], true);
    let job = n
        .wait_for("/v1/job/webby", Duration::from_secs(5), |j| {
            j["Stable"] == true
        })
        .await;
    assert_eq!(job["Version"], 0);
    let regs = n.get("/v1/service/webby").await;
    assert_eq!(regs.as_array().unwrap().len(), 1);
    let port = regs[0]["Port"].as_u64().unwrap();
    assert_eq!(regs[0]["Address"], "127.0.0.1");
    assert_eq!(
        regs[0]["ID"],
        format!(
            "_nomad-task-{}-group-g-webby-http",
            alloc["ID"].as_str().unwrap()
        )
    );
    let body = reqwest::get(format!("http://127.0.0.1:{port}/"))
        .await
        .unwrap();
    assert_eq!(body.status().as_u16(), 200);
    assert_eq!(
        n.get("/v1/services").await,
        json!([{"Namespace": "default", "Services": [{"ServiceName": "webby", "Tags": ["a", "b"]}]}])
    );
    n.shutdown().await;
}

#[tokio::test]
async fn unhealthy_deployment_auto_reverts_to_the_last_stable_version() {
    let n = Nomad::start().await;
    let update = json!({"MinHealthyTime": 100_000_000u64, "HealthyDeadline": 5 * SEC, "ProgressDeadline": 0, "AutoRevert": true, "HealthCheck": "task_states"});
    let mut good = sh_job("rev", "exec sleep 1000");
    good["TaskGroups"][0]["Update"] = update.clone();
    n.register(good).await;
    n.wait_for("/v1/job/rev", Duration::from_secs(15), |j| {
        j["Stable"] == true
    })
    .await;
    let mut bad = sh_job("rev", "exit 1");
    bad["TaskGroups"][0]["Update"] = update;
    bad["TaskGroups"][0]["RestartPolicy"] =
        json!({"Attempts": 0, "Mode": "fail", "Delay": 0, "Interval": 60 * SEC});
    n.register(bad).await;
    let deps = n
        .wait_for("/v1/job/rev/deployments", Duration::from_secs(15), |d| {
            d.as_array().is_some_and(|a| {
                a.iter()
                    .any(|x| x["JobVersion"] == 1 && x["Status"] == "failed")
            })
        })
        .await;
    let failed = deps
        .as_array()
        .unwrap()
        .iter()
        .find(|x| x["JobVersion"] == 1)
        .unwrap();
    assert_eq!(
        failed["StatusDescription"],
        "Failed due to unhealthy allocations - rolling back to job version 0"
    );
    let job = n
        .wait_for("/v1/job/rev", Duration::from_secs(15), |j| {
            j["Version"] == 2
        })
        .await;
    assert_eq!(
        job["TaskGroups"][0]["Tasks"][0]["Config"]["args"][1],
        "exec sleep 1000"
    );
    first_alloc(&n, "rev", |a| {
        a["JobVersion"] == 2 && a["ClientStatus"] == "running"
    })
    .await;
    n.shutdown().await;
}

async fn pid_of(n: &Nomad, job: &str) -> (u32, String) {
    let alloc = first_alloc(n, job, |a| a["ClientStatus"] == "running").await;
    let id = alloc["ID"].as_str().unwrap().to_string();
    let (env, _) = read_env_file(n, &id).await;
    let pid = env
        .lines()
        .find_map(|l| l.strip_prefix("MYPID="))
        .unwrap()
        .parse()
        .unwrap();
    (pid, id)
}

const PID_SCRIPT: &str = "export MYPID=$$; env > \"$NOMAD_ALLOC_DIR/env.txt\"; exec sleep 1000";

#[tokio::test]
async fn stopping_the_job_kills_the_task_process() {
    let n = Nomad::start().await;
    n.register(sh_job("killme", PID_SCRIPT)).await;
    let (pid, alloc_id) = pid_of(&n, "killme").await;
    assert!(pid_alive(pid));
    let a = n.send("DELETE", "/v1/job/killme", None).await;
    assert_eq!(a.status, 200);
    let alloc = n
        .wait_for(
            &format!("/v1/allocation/{alloc_id}"),
            Duration::from_secs(10),
            |a| a["ClientStatus"] == "complete",
        )
        .await;
    assert_eq!(alloc["DesiredStatus"], "stop");
    let events: Vec<&str> = alloc["TaskStates"]["t"]["Events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["Type"].as_str().unwrap())
        .collect();
    assert!(events.ends_with(&["Killing", "Killed"]), "{events:?}");
    assert!(!pid_alive(pid), "task process {pid} survived the stop");
    n.shutdown().await;
}

#[tokio::test]
async fn a_new_job_version_replaces_the_old_allocation_and_its_process() {
    let n = Nomad::start().await;
    n.register(sh_job("roll", PID_SCRIPT)).await;
    let (old_pid, old_alloc) = pid_of(&n, "roll").await;
    let mut v1 = sh_job("roll", PID_SCRIPT);
    v1["Meta"] = json!({"rev": "2"});
    n.register(v1).await;
    let new = first_alloc(&n, "roll", |a| {
        a["JobVersion"] == 1 && a["ClientStatus"] == "running"
    })
    .await;
    assert_ne!(new["ID"], old_alloc);
    let old = n.get(&format!("/v1/allocation/{old_alloc}")).await;
    assert_eq!(old["DesiredStatus"], "stop");
    assert_eq!(old["ClientStatus"], "complete");
    assert!(!pid_alive(old_pid));
    n.shutdown().await;
}

#[tokio::test]
async fn shutdown_kills_every_task_process() {
    let n = Nomad::start().await;
    n.register(sh_job("a", PID_SCRIPT)).await;
    let (pid, _) = pid_of(&n, "a").await;
    n.shutdown().await;
    assert!(!pid_alive(pid));
}

#[tokio::test]
async fn unsupported_driver_fails_the_allocation_with_a_missing_drivers_event() {
    let n = Nomad::start().await;
    let mut job = sh_job("docky", "x");
    job["TaskGroups"][0]["Tasks"][0]["Driver"] = json!("docker");
    n.register(job).await;
    let alloc = first_alloc(&n, "docky", |a| a["ClientStatus"] == "failed").await;
    let ev = alloc["TaskStates"]["t"]["Events"]
        .as_array()
        .unwrap()
        .last()
        .cloned()
        .unwrap();
    assert_eq!(ev["Type"], "Driver Failure");
    assert!(
        ev["DisplayMessage"]
            .as_str()
            .unwrap()
            .contains("missing drivers"),
        "{ev}"
    );
    n.shutdown().await;
}

#[tokio::test]
async fn system_job_places_one_allocation_and_gets_a_deployment_with_its_update_block() {
    let n = Nomad::start().await;
    let mut job = sh_job("sys", "exec sleep 1000");
    job["Type"] = json!("system");
    job["TaskGroups"][0]["Count"] = json!(3);
    job["TaskGroups"][0]["Update"] = json!({"MinHealthyTime": 100_000_000u64, "HealthyDeadline": 5 * SEC, "HealthCheck": "task_states"});
    n.register(job).await;
    let dep = n
        .wait_for("/v1/job/sys/deployment", Duration::from_secs(15), |d| {
            d["Status"] == "successful"
        })
        .await;
    assert_eq!(dep["TaskGroups"]["g"]["DesiredTotal"], 1);
    assert_eq!(
        n.get("/v1/job/sys/allocations")
            .await
            .as_array()
            .unwrap()
            .len(),
        1
    );
    let mut plain = sh_job("sys2", "exec sleep 1000");
    plain["Type"] = json!("system");
    n.register(plain).await;
    first_alloc(&n, "sys2", |a| a["ClientStatus"] == "running").await;
    let a = n.send("GET", "/v1/job/sys2/deployment", None).await;
    assert_eq!(
        a.text, "null",
        "a system job without an update block has no deployment"
    );
    n.shutdown().await;
}

async fn system_job_in_mode(system_deployments: bool) -> (Nomad, Value) {
    let n = Nomad::start_with(hashistack_twin::TwinConfig {
        nomad_system_deployments: system_deployments,
        ..Default::default()
    })
    .await;
    let mut job = sh_job("sys", "exec sleep 1000");
    job["Type"] = json!("system");
    job["TaskGroups"][0]["Update"] = json!({"MinHealthyTime": 100_000_000u64, "HealthyDeadline": 5 * SEC, "HealthCheck": "task_states"});
    n.register(job).await;
    let alloc = first_alloc(&n, "sys", |a| a["ClientStatus"] == "running").await;
    (n, alloc)
}

#[tokio::test]
async fn pre_1_11_mode_gives_system_jobs_no_deployment_and_reports_nomad_1_10() {
    let (n, alloc) = system_job_in_mode(false).await;
    // Long enough for a deployment's min healthy time to pass, were there one.
    tokio::time::sleep(Duration::from_millis(600)).await;
    let a = n.send("GET", "/v1/job/sys/deployment", None).await;
    assert_eq!((a.status, a.text.as_str()), (200, "null"));
    assert_eq!(n.get("/v1/job/sys/deployments").await, json!([]));
    let full = n
        .get(&format!("/v1/allocation/{}", alloc["ID"].as_str().unwrap()))
        .await;
    assert_eq!(full["DeploymentID"], "");
    assert!(
        full["DeploymentStatus"].is_null(),
        "{}",
        full["DeploymentStatus"]
    );
    let agent = n.get("/v1/agent/self").await;
    assert_eq!(agent["config"]["Version"]["Version"], "1.10.5");
    assert_eq!(n.get("/v1/nodes").await[0]["Version"], "1.10.5");
    // Service jobs keep their deployments in every version.
    let mut svc = sh_job("web", "exec sleep 1000");
    svc["TaskGroups"][0]["Update"] = json!({"MinHealthyTime": 100_000_000u64, "HealthyDeadline": 5 * SEC, "HealthCheck": "task_states"});
    n.register(svc).await;
    n.wait_for("/v1/job/web/deployment", Duration::from_secs(15), |d| {
        d["Status"] == "successful"
    })
    .await;
    n.shutdown().await;
}

#[tokio::test]
async fn default_mode_is_nomad_1_11_where_system_jobs_get_a_deployment() {
    let (n, _) = system_job_in_mode(true).await;
    n.wait_for("/v1/job/sys/deployment", Duration::from_secs(15), |d| {
        d["Status"] == "successful"
    })
    .await;
    let agent = n.get("/v1/agent/self").await;
    assert_eq!(agent["config"]["Version"]["Version"], "1.11.2");
    assert_eq!(n.get("/v1/nodes").await[0]["Version"], "1.11.2");
    n.shutdown().await;
}

#[tokio::test]
async fn a_second_allocation_on_a_reserved_static_port_is_not_placed_and_the_eval_says_why() {
    let n = Nomad::start().await;
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut job = sh_job("web", "exec sleep 1000");
    job["TaskGroups"][0]["Count"] = json!(2);
    job["TaskGroups"][0]["Networks"] =
        json!([{"ReservedPorts": [{"Label": "http", "Value": port}]}]);
    let out = n.register(job).await;
    first_alloc(&n, "web", |a| a["ClientStatus"] == "running").await;
    let allocs = n.get("/v1/job/web/allocations").await;
    assert_eq!(allocs.as_array().unwrap().len(), 1, "{allocs:#}");
    let eval = n
        .get(&format!(
            "/v1/evaluation/{}",
            out["EvalID"].as_str().unwrap()
        ))
        .await;
    let failed = &eval["FailedTGAllocs"]["g"];
    assert_eq!(
        failed["DimensionExhausted"][format!("network: reserved port collision http={port}")],
        1,
        "{eval:#}"
    );
    assert!(!eval["BlockedEval"].as_str().unwrap().is_empty());
    // The plan of a job that asks for the same port says so before anything is registered.
    let mut rival = sh_job("rival", "exec sleep 1000");
    rival["TaskGroups"][0]["Networks"] =
        json!([{"ReservedPorts": [{"Label": "http", "Value": port}]}]);
    let plan = n
        .send("POST", "/v1/job/rival/plan", Some(json!({"Job": rival})))
        .await;
    assert_eq!(plan.status, 200, "{}", plan.text);
    assert_eq!(
        plan.json()["FailedTGAllocs"]["g"]["DimensionExhausted"]
            [format!("network: reserved port collision http={port}")],
        1,
        "{}",
        plan.text
    );
    // Another job asking for the same port is not placed either.
    let mut other = sh_job("other", "exec sleep 1000");
    other["TaskGroups"][0]["Networks"] =
        json!([{"ReservedPorts": [{"Label": "web", "Value": port}]}]);
    n.register(other).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(n.get("/v1/job/other/allocations").await, json!([]));
    n.shutdown().await;
}

#[tokio::test]
async fn an_alloc_runs_as_soon_as_any_task_runs_and_a_system_job_runs_until_stopped() {
    let n = Nomad::start().await;
    let mut job = sh_job("two", "exec sleep 1000");
    let mut flaky = job["TaskGroups"][0]["Tasks"][0].clone();
    flaky["Name"] = json!("flaky");
    flaky["Config"]["args"] = json!(["-c", "exit 3"]);
    job["TaskGroups"][0]["Tasks"]
        .as_array_mut()
        .unwrap()
        .push(flaky);
    job["TaskGroups"][0]["RestartPolicy"] =
        json!({"Attempts": 100, "Interval": 600 * SEC, "Delay": 2 * SEC, "Mode": "delay"});
    n.register(job).await;
    let alloc = first_alloc(&n, "two", |a| {
        a["TaskStates"]["t"]["State"] == "running"
            && a["TaskStates"]["flaky"]["Restarts"].as_u64() >= Some(1)
    })
    .await;
    assert_eq!(alloc["ClientStatus"], "running", "{alloc:#}");
    assert_eq!(alloc["ClientDescription"], "Tasks are running");
    assert_eq!(n.get("/v1/job/two").await["Status"], "running");

    let mut sys = sh_job("sys", "exit 3");
    sys["Type"] = json!("system");
    sys["TaskGroups"][0]["RestartPolicy"] =
        json!({"Attempts": 0, "Interval": 600 * SEC, "Delay": 0, "Mode": "fail"});
    n.register(sys).await;
    let failed = first_alloc(&n, "sys", |a| a["ClientStatus"] == "failed").await;
    assert_eq!(failed["ClientDescription"], "Failed tasks");
    assert_eq!(
        n.get("/v1/job/sys").await["Status"],
        "running",
        "a system job runs until it is stopped"
    );
    assert_eq!(n.send("DELETE", "/v1/job/sys", None).await.status, 200);
    assert_eq!(n.get("/v1/job/sys").await["Status"], "dead");
    n.shutdown().await;
}
