//! No task process outlives the twin: a twin killed with SIGKILL leaves records the next twin uses
//! to kill the orphaned process groups (and remove the dead twin's scratch directory), and SIGHUP
//! shuts the binary down like SIGTERM.
#![allow(clippy::unwrap_used, clippy::panic)]

mod nomad_support;

use nomad_support::{pid_alive, sh_job};
use serde_json::json;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

struct Bin {
    child: Child,
    nomad: String,
}

impl Drop for Bin {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn start_bin(data_dir: Option<&Path>, tmpdir: &Path) -> Bin {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let nomad_port = free_port();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_hashistack-twin"));
    cmd.args(["--consul-addr", &format!("127.0.0.1:{}", free_port())])
        .args(["--nomad-addr", &format!("127.0.0.1:{nomad_port}")])
        .env("TMPDIR", tmpdir)
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    if let Some(d) = data_dir {
        cmd.args(["--data-dir", &d.display().to_string()]);
    }
    let bin = Bin {
        child: cmd.spawn().unwrap(),
        nomad: format!("http://127.0.0.1:{nomad_port}"),
    };
    let http = reqwest::Client::new();
    for _ in 0..200 {
        if http
            .get(format!("{}/v1/agent/self", bin.nomad))
            .send()
            .await
            .is_ok()
        {
            return bin;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the twin binary did not start");
}

/// Registers a job whose shell writes its own pid and its background child's pid under `dir`.
async fn register_pid_writer(bin: &Bin, dir: &Path) {
    let script = format!(
        "sleep 377 & echo $$ $! >> {}; wait",
        dir.join("pids").display()
    );
    let r = reqwest::Client::new()
        .put(format!("{}/v1/jobs", bin.nomad))
        .json(&json!({"Job": sh_job("orphan", &script)}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
}

/// The pids written so far, one `(shell, sleep)` pair per line.
fn written_pids(dir: &Path) -> Vec<u32> {
    std::fs::read_to_string(dir.join("pids"))
        .unwrap_or_default()
        .split_whitespace()
        .map(|p| p.parse().unwrap())
        .collect()
}

async fn eventually(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn scratch_dirs(tmp: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(tmp)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("hashistack-twin-nomad-"))
        })
        .collect()
}

fn kill_all(pids: &[u32]) {
    for p in pids {
        let _ = Command::new("kill").args(["-9", &p.to_string()]).status();
    }
}

#[tokio::test]
async fn a_twin_restarted_on_the_same_data_dir_kills_the_tasks_a_sigkilled_twin_left_behind() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mut first = start_bin(Some(&data), dir.path()).await;
    register_pid_writer(&first, dir.path()).await;
    eventually("the task wrote its pids", || {
        written_pids(dir.path()).len() == 2
    })
    .await;
    let orphans = written_pids(dir.path());
    first.child.kill().unwrap();
    first.child.wait().unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        orphans.iter().all(|p| pid_alive(*p)),
        "SIGKILL leaves the task group running (nothing in the twin can run)"
    );
    let second = start_bin(Some(&data), dir.path()).await;
    let gone = orphans.clone();
    eventually("the orphaned shell and its child are killed", || {
        gone.iter().all(|p| !pid_alive(*p))
    })
    .await;
    kill_all(&orphans);
    drop(second);
    kill_all(&written_pids(dir.path()));
}

#[tokio::test]
async fn a_new_twin_reaps_a_sigkilled_twins_scratch_dir_and_tasks_and_sighup_cleans_up_its_own() {
    let dir = tempfile::tempdir().unwrap();
    let tmp = dir.path().join("tmp");
    std::fs::create_dir_all(&tmp).unwrap();
    let mut first = start_bin(None, &tmp).await;
    register_pid_writer(&first, dir.path()).await;
    eventually("the task wrote its pids", || {
        written_pids(dir.path()).len() == 2
    })
    .await;
    let orphans = written_pids(dir.path());
    let first_scratch = scratch_dirs(&tmp);
    assert_eq!(first_scratch.len(), 1);
    first.child.kill().unwrap();
    first.child.wait().unwrap();

    let mut second = start_bin(None, &tmp).await;
    let gone = orphans.clone();
    eventually("the orphaned tasks are killed", || {
        gone.iter().all(|p| !pid_alive(*p))
    })
    .await;
    assert!(
        !first_scratch[0].exists(),
        "the dead twin's scratch directory is removed"
    );
    assert_eq!(
        scratch_dirs(&tmp).len(),
        1,
        "only the live twin's scratch dir"
    );

    // SIGHUP (a closed terminal) stops the tasks and removes the scratch dir like SIGTERM.
    register_pid_writer(&second, dir.path()).await;
    eventually("the new task wrote its pids", || {
        written_pids(dir.path()).len() == 4
    })
    .await;
    let own = written_pids(dir.path())[2..].to_vec();
    let hup = Command::new("kill")
        .args(["-HUP", &second.child.id().to_string()])
        .status()
        .unwrap();
    assert!(hup.success());
    let mut status = None;
    eventually("the twin exits on SIGHUP", || {
        status = second.child.try_wait().unwrap();
        status.is_some()
    })
    .await;
    assert!(status.unwrap().success());
    assert!(own.iter().all(|p| !pid_alive(*p)), "its tasks are stopped");
    assert!(scratch_dirs(&tmp).is_empty(), "its scratch dir is removed");
    kill_all(&orphans);
    kill_all(&own);
}
