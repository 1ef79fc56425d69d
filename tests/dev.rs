//! End-to-end: `proxy-operator dev`, the real binary. It starts the twin, a demo backend, the
//! operator and (through the operator's job) real Traefik; a request through Traefik reaches the
//! demo backend; SIGINT stops everything it started, Traefik included.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "support/mod.rs"]
mod support;

use std::process::Command;
use std::time::{Duration, Instant};

use support::{ChildGuard, eventually, free_port, get_with_host, pid_listening_on, process_alive, traefik_bin};

const BIN: &str = env!("CARGO_BIN_EXE_proxy-operator");

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dev_serves_the_demo_app_through_real_traefik_and_ctrl_c_stops_everything_it_started() {
    let dir = tempfile::tempdir().unwrap();
    let (consul, nomad, http) = (free_port(), free_port(), free_port());
    let mut cmd = Command::new(BIN);
    cmd.args(["dev", "--consul-port", &consul.to_string(), "--nomad-port", &nomad.to_string()])
        .args(["--http-port", &http.to_string()])
        .arg("--traefik-bin")
        .arg(traefik_bin())
        .env("RUST_LOG", "info");
    let mut dev = ChildGuard::spawn(cmd, &dir.path().join("dev.log"));

    // The printed URL is the contract scripts rely on.
    let expected = format!("curl -H 'Host: demo.localhost' http://127.0.0.1:{http}/");
    let printed = eventually(Duration::from_secs(60), || async { dev.log().contains(&expected).then_some(()) }).await;
    assert!(printed.is_some(), "dev never printed {expected:?}:\n{}", dev.log());
    let log = dev.log();
    assert!(log.contains(&format!("http://127.0.0.1:{consul}/v1/kv/proxy-operator/config")), "{log}");
    assert!(log.contains(&format!("CONSUL_HTTP_ADDR=http://127.0.0.1:{consul} proxy-operator status")), "{log}");
    assert!(log.contains(&format!("http://127.0.0.1:{nomad}")), "{log}");

    // A real request through real Traefik (started by the operator as a job in the twin).
    let seen = eventually(Duration::from_secs(90), || async {
        get_with_host(http, "demo.localhost", "/").await.filter(|s| s.status == 200)
    })
    .await;
    let Some(seen) = seen else { panic!("the demo app was never served through Traefik:\n{}", dev.log()) };
    assert_eq!(seen.header("x-backend"), Some("demo"));
    assert!(seen.body.contains("Hello from the demo backend"), "{}", seen.body);
    assert_eq!(seen.header("x-content-type-options"), Some("nosniff"), "the starter policy applies");

    // `proxy-operator status` against the twin answers Ready (exit 0) once the gate passed.
    let ready = eventually(Duration::from_secs(60), || async {
        let out = Command::new(BIN).arg("status").env("CONSUL_HTTP_ADDR", format!("http://127.0.0.1:{consul}")).output().ok()?;
        out.status.success().then_some(String::from_utf8_lossy(&out.stdout).into_owned())
    })
    .await;
    assert!(ready.is_some(), "status never reported Ready:\n{}", dev.log());

    let traefik = pid_listening_on(http).expect("Traefik listens on the http port");
    assert_ne!(traefik, dev.pid(), "the entry point is served by a Traefik child, not by dev itself");

    let kill = Command::new("kill").args(["-INT", &dev.pid().to_string()]).status().unwrap();
    assert!(kill.success());
    let deadline = Instant::now() + Duration::from_secs(30);
    let exit = loop {
        if let Some(status) = dev.try_wait() {
            break status;
        }
        assert!(Instant::now() < deadline, "dev did not exit after SIGINT:\n{}", dev.log());
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(exit.success(), "dev exited with {exit:?}:\n{}", dev.log());
    let gone = eventually(Duration::from_secs(10), || async { (!process_alive(traefik)).then_some(()) }).await;
    assert!(gone.is_some(), "Traefik (pid {traefik}) survived dev's shutdown");
    assert_eq!(pid_listening_on(http), None, "something still listens on the http port");
    assert_eq!(pid_listening_on(consul), None, "the twin's Consul API still listens");
    assert_eq!(pid_listening_on(nomad), None, "the twin's Nomad API still listens");
}

#[test]
fn dev_without_traefik_fails_fast_and_names_scripts_bootstrap() {
    let out = Command::new(BIN).args(["dev", "--traefik-bin", "/nonexistent/traefik"]).output().unwrap();
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
