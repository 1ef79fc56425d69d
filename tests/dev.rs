//! End-to-end: `proxy-operator dev`, the real binary. It starts the twin, a demo backend, the
//! operator and (through the operator's job) real Traefik; a request through Traefik reaches the
//! demo backend; SIGINT stops everything it started, Traefik included. ACLs are on: without the
//! generated token nothing registers a job or writes KV, and the token is never printed.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "support/mod.rs"]
mod support;

use std::os::unix::fs::PermissionsExt as _;
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::json;

use support::{
    ChildGuard, eventually, free_port, get_with_host, pid_listening_on, process_alive, traefik_bin,
};

const BIN: &str = env!("CARGO_BIN_EXE_proxy-operator");

/// The banner line naming the token file.
const TOKEN_LINE: &str = "ACL token (management):";

/// The token file the banner names (the banner never holds the token itself).
fn token_file(log: &str) -> PathBuf {
    let line = log
        .lines()
        .find(|l| l.trim_start().starts_with(TOKEN_LINE))
        .unwrap_or_else(|| panic!("no {TOKEN_LINE:?} line in:\n{log}"));
    let path = line.trim_start()[TOKEN_LINE.len()..]
        .split_whitespace()
        .next()
        .unwrap_or_else(|| panic!("no path on {line:?}"));
    PathBuf::from(path)
}

/// `proxy-operator status` against the dev Consul with the token file; `Some` once Ready.
async fn wait_ready(consul: u16, token_file: &std::path::Path) -> Option<String> {
    eventually(Duration::from_secs(60), || async {
        let out = Command::new(BIN)
            .arg("status")
            .env("CONSUL_HTTP_ADDR", format!("http://127.0.0.1:{consul}"))
            .env("CONSUL_HTTP_TOKEN_FILE", token_file)
            .env_remove("CONSUL_HTTP_TOKEN")
            .output()
            .ok()?;
        out.status
            .success()
            .then_some(String::from_utf8_lossy(&out.stdout).into_owned())
    })
    .await
}

/// Every task log of the twin's allocations under `tmp` (the twin's scratch directories).
fn traefik_logs(tmp: &std::path::Path) -> String {
    let mut out = String::new();
    let dirs = |p: &std::path::Path| {
        std::fs::read_dir(p)
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.path())
            .collect::<Vec<_>>()
    };
    for scratch in dirs(tmp) {
        for alloc in dirs(&scratch) {
            for log in dirs(&alloc.join("alloc/logs")) {
                out.push_str(&std::fs::read_to_string(&log).unwrap_or_default());
            }
        }
    }
    out
}

/// Sends SIGINT to dev and waits until it exited successfully.
async fn interrupt(dev: &mut ChildGuard) {
    let kill = Command::new("kill")
        .args(["-INT", &dev.pid().to_string()])
        .status()
        .unwrap();
    assert!(kill.success());
    let deadline = Instant::now() + Duration::from_secs(30);
    let exit = loop {
        if let Some(status) = dev.try_wait() {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "dev did not exit after SIGINT:\n{}",
            dev.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(exit.success(), "dev exited with {exit:?}:\n{}", dev.log());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dev_serves_the_demo_app_through_real_traefik_and_ctrl_c_stops_everything_it_started() {
    let dir = tempfile::tempdir().unwrap();
    let (consul, nomad, http) = (free_port(), free_port(), free_port());
    let mut cmd = Command::new(BIN);
    cmd.args([
        "dev",
        "--consul-port",
        &consul.to_string(),
        "--nomad-port",
        &nomad.to_string(),
    ])
    .args(["--http-port", &http.to_string()])
    .arg("--traefik-bin")
    .arg(traefik_bin())
    .env("RUST_LOG", "info");
    let mut dev = ChildGuard::spawn(cmd, &dir.path().join("dev.log"));

    // The printed URL is the contract scripts rely on.
    let expected = format!("curl -H 'Host: demo.localhost' http://127.0.0.1:{http}/");
    let printed = eventually(Duration::from_secs(60), || async {
        dev.log().contains(&expected).then_some(())
    })
    .await;
    assert!(
        printed.is_some(),
        "dev never printed {expected:?}:\n{}",
        dev.log()
    );
    let log = dev.log();
    assert!(
        log.contains(&format!(
            "http://127.0.0.1:{consul}/v1/kv/proxy-operator/config"
        )),
        "{log}"
    );
    assert!(
        log.contains(&format!(
            "CONSUL_HTTP_ADDR=http://127.0.0.1:{consul} proxy-operator status"
        )),
        "{log}"
    );
    assert!(log.contains(&format!("http://127.0.0.1:{nomad}")), "{log}");

    // A real request through real Traefik (started by the operator as a job in the twin).
    let seen = eventually(Duration::from_secs(90), || async {
        get_with_host(http, "demo.localhost", "/")
            .await
            .filter(|s| s.status == 200)
    })
    .await;
    let Some(seen) = seen else {
        panic!(
            "the demo app was never served through Traefik:\n{}",
            dev.log()
        )
    };
    assert_eq!(seen.header("x-backend"), Some("demo"));
    assert!(
        seen.body.contains("Hello from the demo backend"),
        "{}",
        seen.body
    );
    assert_eq!(
        seen.header("x-content-type-options"),
        Some("nosniff"),
        "the starter policy applies"
    );

    // `proxy-operator status` against the twin answers Ready (exit 0) once the gate passed.
    let ready = wait_ready(consul, &token_file(&log)).await;
    assert!(
        ready.is_some(),
        "status never reported Ready:\n{}",
        dev.log()
    );

    let traefik = pid_listening_on(http).expect("Traefik listens on the http port");
    assert_ne!(
        traefik,
        dev.pid(),
        "the entry point is served by a Traefik child, not by dev itself"
    );

    interrupt(&mut dev).await;
    let gone = eventually(Duration::from_secs(10), || async {
        (!process_alive(traefik)).then_some(())
    })
    .await;
    assert!(
        gone.is_some(),
        "Traefik (pid {traefik}) survived dev's shutdown"
    );
    assert_eq!(
        pid_listening_on(http),
        None,
        "something still listens on the http port"
    );
    assert_eq!(
        pid_listening_on(consul),
        None,
        "the twin's Consul API still listens"
    );
    assert_eq!(
        pid_listening_on(nomad),
        None,
        "the twin's Nomad API still listens"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dev_turns_acls_on_so_an_anonymous_raw_exec_job_and_kv_write_are_refused_and_never_prints_the_token()
 {
    let dir = tempfile::tempdir().unwrap();
    // The twin's allocation directories go under the temp dir: Traefik's logs are read there.
    let tmp = dir.path().join("tmp");
    std::fs::create_dir(&tmp).unwrap();
    let (consul, nomad, http) = (free_port(), free_port(), free_port());
    let mut cmd = Command::new(BIN);
    cmd.env("TMPDIR", &tmp);
    cmd.args(["dev", "--consul-port", &consul.to_string()])
        .args(["--nomad-port", &nomad.to_string()])
        .args(["--http-port", &http.to_string()])
        .arg("--traefik-bin")
        .arg(traefik_bin())
        // As chatty as it gets: the sentinel check below covers every log line.
        .env("RUST_LOG", "debug")
        .env_remove("CONSUL_HTTP_TOKEN")
        .env_remove("NOMAD_TOKEN");
    let mut dev = ChildGuard::spawn(cmd, &dir.path().join("dev.log"));
    let printed = eventually(Duration::from_secs(60), || async {
        dev.log().contains(TOKEN_LINE).then_some(())
    })
    .await;
    assert!(
        printed.is_some(),
        "dev never printed its token file:\n{}",
        dev.log()
    );
    let file = token_file(&dev.log());
    let mode = std::fs::metadata(&file).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "{}", file.display());
    let token = std::fs::read_to_string(&file).unwrap().trim().to_owned();
    assert_eq!(token.len(), 36, "a generated UUID");

    let _ = rustls::crypto::ring::default_provider().install_default();
    let client = reqwest::Client::builder().no_proxy().build().unwrap();
    // The drive-by: a page on this machine registering a job that runs a command.
    let marker = dir.path().join("drive-by-ran");
    let job = json!({"Job": {
        "ID": "drive-by", "Name": "drive-by", "Type": "batch", "Datacenters": ["*"],
        "TaskGroups": [{"Name": "g", "Count": 1, "Tasks": [{
            "Name": "t", "Driver": "raw_exec",
            "Config": {"command": "/bin/sh", "args": ["-c", format!("touch {}", marker.display())]}
        }]}]
    }});
    let jobs = format!("http://127.0.0.1:{nomad}/v1/jobs");
    let refused = client.put(&jobs).json(&job).send().await.unwrap();
    assert_eq!(refused.status().as_u16(), 403, "{:?}", refused.text().await);
    let forged = client
        .put(&jobs)
        .header("X-Nomad-Token", "00000000-0000-0000-0000-000000000000")
        .json(&job)
        .send()
        .await
        .unwrap();
    assert_eq!(forged.status().as_u16(), 403, "{:?}", forged.text().await);

    // Anonymous Consul reads and writes nothing: the proxy has its own tokens.
    let config = format!("http://127.0.0.1:{consul}/v1/kv/proxy-operator/config");
    let write = client.put(&config).body("kind: Evil").send().await.unwrap();
    assert_eq!(write.status().as_u16(), 403, "{:?}", write.text().await);
    let tree = format!("http://127.0.0.1:{consul}/v1/kv/proxy-operator/traefik/x");
    let write = client.put(&tree).body("x").send().await.unwrap();
    assert_eq!(write.status().as_u16(), 403, "{:?}", write.text().await);
    let read = client.get(&config).send().await.unwrap();
    assert_eq!(
        read.status().as_u16(),
        403,
        "the document is not the proxy's to read"
    );
    let read = client.get(&tree).send().await.unwrap();
    assert_eq!(read.status().as_u16(), 403, "anonymous has no read grant");
    let variable = format!("http://127.0.0.1:{nomad}/v1/var/nomad/jobs/proxy");
    let read = client.get(&variable).send().await.unwrap();
    assert_eq!(
        read.status().as_u16(),
        403,
        "the proxy's tokens are not anonymous"
    );

    // The printed commands work: the file's token is the twin's management token.
    let listed = client
        .get(&jobs)
        .header("X-Nomad-Token", &token)
        .send()
        .await
        .unwrap();
    assert_eq!(listed.status().as_u16(), 200);
    let listed: serde_json::Value = listed.json().await.unwrap();
    assert!(
        listed
            .as_array()
            .unwrap()
            .iter()
            .all(|j| j["ID"] != "drive-by"),
        "{listed}"
    );
    // A read with the management token, as the printed commands do.
    let read_as_admin = |url: String, header: &'static str| {
        let request = client.get(url).header(header, &token);
        async move { request.send().await.unwrap().text().await.unwrap() }
    };
    let stored = read_as_admin(format!("{config}?raw"), "X-Consul-Token").await;
    assert!(stored.contains("kind: ProxyConfig"), "{stored}");

    // The operator and the proxy work with ACLs on: Ready, and the demo served by Traefik.
    let ready = wait_ready(consul, &file).await;
    assert!(
        ready.is_some(),
        "status never reported Ready:\n{}",
        dev.log()
    );
    let served = eventually(Duration::from_secs(30), || async {
        get_with_host(http, "demo.localhost", "/")
            .await
            .filter(|s| s.status == 200)
    })
    .await;
    assert!(served.is_some(), "the demo is not served:\n{}", dev.log());
    assert!(!marker.exists(), "the anonymous job ran");

    // Traefik got its tokens from the Nomad Variable: neither is in the job spec, and none of
    // its providers was refused.
    let tokens: serde_json::Value =
        serde_json::from_str(&read_as_admin(variable, "X-Nomad-Token").await).unwrap();
    let job = read_as_admin(
        format!("http://127.0.0.1:{nomad}/v1/job/proxy"),
        "X-Nomad-Token",
    )
    .await;
    assert!(
        job.contains("nomadVar"),
        "the job reads the variable: {job}"
    );
    for item in ["consul_token", "nomad_token"] {
        let secret = tokens["Items"][item].as_str().unwrap();
        assert_eq!(secret.len(), 36, "{item} is a token");
        assert!(!job.contains(secret), "{item} is in the job spec");
        assert!(!dev.log().contains(secret), "{item} was printed");
    }
    assert!(
        !job.contains(&token),
        "the management token is in the job spec"
    );
    let traefik_log = traefik_logs(&tmp);
    assert!(
        traefik_log.contains("Starting provider *nomad.Provider"),
        "no Traefik log found (its nomad provider should start):\n{traefik_log}"
    );
    // A provider refused by Consul or Nomad logs a "Provider error" at level error.
    assert!(
        !traefik_log.contains("\"level\":\"error\""),
        "Traefik logged an error:\n{traefik_log}"
    );
    for refusal in [
        "Permission denied",
        "ACL not found",
        "ACL token not found",
        "response code: 403",
        "Unexpected response code",
    ] {
        assert!(
            !traefik_log.contains(refusal),
            "Traefik was refused something ({refusal}):\n{traefik_log}"
        );
    }

    interrupt(&mut dev).await;
    let log = dev.log();
    assert!(log.contains("DEBUG"), "debug logs were on:\n{log}");
    assert!(
        !log.contains(&token),
        "the ACL token appears in dev's output:\n{log}"
    );
    assert!(!file.exists(), "the token file outlived dev");
}

#[test]
fn dev_without_traefik_fails_fast_and_names_scripts_bootstrap() {
    let out = Command::new(BIN)
        .args(["dev", "--traefik-bin", "/nonexistent/traefik"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("scripts/bootstrap"), "{stderr}");
    assert!(stderr.contains("/nonexistent/traefik"), "{stderr}");
}

#[test]
fn dev_refuses_an_http_port_that_is_taken_before_starting_anything() {
    let held = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = held.local_addr().unwrap().port();
    let out = Command::new(BIN)
        .args(["dev", "--http-port", &port.to_string(), "--traefik-bin"])
        .arg(traefik_bin())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains(&format!("127.0.0.1:{port}")), "{stderr}");
}
