//! The real binary against the in-process twin: `plan`, `apply`, `status`, `history`,
//! `rollback` and `debug dump`, with exit codes, diffs, CAS refusals and no secret printed.
#![allow(clippy::unwrap_used, clippy::panic)] // tests fail loudly

use std::process::Output;
use std::time::Duration;

use hashistack_twin::{Twin, TwinConfig};
use proxy_operator::cli::history::{Revision, revision_key};
use proxy_operator::consul::{ConsulApi, ConsulClient};
use proxy_operator::nomad::{NomadApi, NomadClient};
use proxy_operator::render::nomad_job::{Slot, slot_job};
use proxy_operator::render::{self, RenderContext};
use proxy_operator::spec::status::{HistoryEntry, Outcome, Phase, ProxyStatus};
use proxy_operator::spec::{self, FieldError};
use proxy_operator::transport::{Api, ClientConfig, QueryOptions};

const TOKEN: &str = "sentinel-token-6c1d0e";
const HASH: &str = "admin:$apr1$sentinel$Zx9QmXk1Yb2v0Q7fLq3Jc/";
const CONFIG: &str = "proxy-operator/config";
const STATUS: &str = "proxy-operator/status";
const USERS: &str = "proxy-operator/secrets/basic-auth";

struct Cluster {
    twin: Twin,
    consul: ConsulClient,
    nomad: NomadClient,
}

async fn cluster() -> Cluster {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let twin = Twin::start(TwinConfig {
        acl_token: Some(TOKEN.to_owned()),
        ..TwinConfig::default()
    })
    .await
    .unwrap();
    let config = |api, addr: std::net::SocketAddr| {
        let mut c = ClientConfig::for_address(api, &addr.to_string()).unwrap();
        c.token = Some(proxy_operator::transport::Token::new(TOKEN));
        c
    };
    let consul = ConsulClient::new(&config(Api::Consul, twin.consul_addr())).unwrap();
    let nomad = NomadClient::new(&config(Api::Nomad, twin.nomad_addr())).unwrap();
    consul.kv_put(USERS, HASH.as_bytes(), None).await.unwrap();
    Cluster {
        twin,
        consul,
        nomad,
    }
}

fn doc(extra: &str) -> String {
    format!(
        "apiVersion: proxy-operator.io/v1alpha1\nkind: ProxyConfig\nspec:\n  proxy: traefik\n  middlewares:\n    basicAuth:\n      usersFrom:\n        consulKey: {USERS}\n{extra}"
    )
}

impl Cluster {
    /// Runs the binary with the twin's addresses and the token in the environment, as an
    /// operator's shell would have them.
    async fn run(&self, args: &[&str]) -> Output {
        tokio::process::Command::new(env!("CARGO_BIN_EXE_proxy-operator"))
            .args(args)
            .env("CONSUL_HTTP_ADDR", self.twin.consul_addr().to_string())
            .env("NOMAD_ADDR", self.twin.nomad_addr().to_string())
            .env("CONSUL_HTTP_TOKEN", TOKEN)
            .env("NOMAD_TOKEN", TOKEN)
            .env_remove("RUST_LOG")
            .kill_on_drop(true)
            .output()
            .await
            .unwrap()
    }

    /// `plan` for the document with the proxy's CPU raised to 700: a structural change. Its
    /// exit code is 1 and nothing secret is printed; returns stdout.
    async fn plan_cpu_change(&self, dir: &tempfile::TempDir) -> String {
        let restart = write_file(
            dir,
            "restart.yaml",
            &doc("  job:\n    resources: {cpu: 700, memoryMB: 300}\n"),
        );
        let out = self.run(&["plan", &restart]).await;
        let (stdout, stderr) = streams(&out);
        assert_eq!(out.status.code(), Some(1), "{stdout}\n{stderr}");
        assert!(stdout.contains("CPU: \"200\" => \"700\""), "{stdout}");
        assert_no_secret(&out);
        stdout
    }

    /// What the operator would have done for `text`: its job registered, its policy tree written.
    async fn converge(&self, text: &str) {
        let validated = spec::load(text.as_bytes()).unwrap();
        let ctx = RenderContext {
            basic_auth_users: Some(vec![HASH.to_owned()]),
            ..RenderContext::default()
        };
        let rendered = render::render(&validated, &ctx).unwrap();
        self.nomad.job_register(&rendered.job, None).await.unwrap();
        for (k, v) in &rendered.traefik_kv {
            self.consul.kv_put(k, v.as_bytes(), None).await.unwrap();
        }
        self.consul
            .kv_put(CONFIG, text.as_bytes(), None)
            .await
            .unwrap();
    }
}

fn write_file(dir: &tempfile::TempDir, name: &str, text: &str) -> String {
    let path = dir.path().join(name);
    std::fs::write(&path, text).unwrap();
    path.to_str().unwrap().to_owned()
}

fn streams(out: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn assert_no_secret(out: &Output) {
    let (stdout, stderr) = streams(out);
    for text in [&stdout, &stderr] {
        assert!(!text.contains(TOKEN), "token printed:\n{text}");
        assert!(!text.contains("$apr1$"), "hash printed:\n{text}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plan_exits_0_when_the_cluster_runs_the_document_already() {
    let c = cluster().await;
    let text = doc("");
    c.converge(&text).await;
    let dir = tempfile::tempdir().unwrap();
    let file = write_file(&dir, "edge.yaml", &text);
    let out = c.run(&["plan", &file]).await;
    let (stdout, stderr) = streams(&out);
    assert_eq!(out.status.code(), Some(0), "{stdout}\n{stderr}");
    assert!(stdout.contains("Change: no change"), "{stdout}");
    assert!(stdout.contains("apply --if-index"), "{stdout}");
    assert_no_secret(&out);
    c.twin.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plan_exits_1_with_the_policy_diff_and_the_nomad_job_diff() {
    let c = cluster().await;
    c.converge(&doc("")).await;
    let dir = tempfile::tempdir().unwrap();

    let policy = write_file(
        &dir,
        "policy.yaml",
        &doc("    rateLimit: {average: 100, burst: 50}\n"),
    );
    let out = c.run(&["plan", &policy]).await;
    let (stdout, stderr) = streams(&out);
    assert_eq!(out.status.code(), Some(1), "{stdout}\n{stderr}");
    assert!(stdout.contains("live policy change"), "{stdout}");
    assert!(
        stdout.contains("+ proxy-operator/traefik/http/middlewares/"),
        "{stdout}"
    );
    assert!(stdout.contains("rateLimit/average = \"100\""), "{stdout}");
    assert_no_secret(&out);

    let stdout = c.plan_cpu_change(&dir).await;
    assert!(
        stdout.contains("Change: handover: job proxy-b starts next to proxy"),
        "{stdout}"
    );
    assert!(stdout.contains("+/- Job: \"proxy\""), "{stdout}");
    assert!(stdout.contains("Task Group"), "{stdout}");
    c.twin.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plan_compares_with_slot_b_when_a_handover_left_it_serving() {
    let c = cluster().await;
    let text = doc("");
    c.converge(&text).await;
    // What a handover leaves: the same document in slot b, slot a stopped.
    let validated = spec::load(text.as_bytes()).unwrap();
    let ctx = RenderContext {
        basic_auth_users: Some(vec![HASH.to_owned()]),
        ..RenderContext::default()
    };
    let rendered = render::render(&validated, &ctx).unwrap();
    let slot_b = slot_job(&rendered.job, Slot::B).unwrap();
    c.nomad.job_register(&slot_b, None).await.unwrap();
    c.nomad.job_stop("proxy", false).await.unwrap();
    let dir = tempfile::tempdir().unwrap();

    let same = write_file(&dir, "same.yaml", &text);
    let out = c.run(&["plan", &same]).await;
    let (stdout, stderr) = streams(&out);
    assert_eq!(out.status.code(), Some(0), "{stdout}\n{stderr}");
    assert!(stdout.contains("Change: no change"), "{stdout}");

    let stdout = c.plan_cpu_change(&dir).await;
    assert!(
        stdout.contains("Change: handover: job proxy starts next to proxy-b"),
        "{stdout}"
    );
    // The diff is against what serves: only the CPU, not slot b's own ports or Meta.
    assert!(stdout.contains("+/- Job: \"proxy-b\""), "{stdout}");
    assert!(!stdout.contains("proxy-operator/slot"), "{stdout}");
    c.twin.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plan_and_status_against_an_unreachable_consul_say_what_to_check_once() {
    let dir = tempfile::tempdir().unwrap();
    let file = write_file(&dir, "edge.yaml", &doc(""));
    let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = dead.local_addr().unwrap().to_string();
    drop(dead);
    let run = |args: Vec<String>| {
        let addr = addr.clone();
        async move {
            tokio::process::Command::new(env!("CARGO_BIN_EXE_proxy-operator"))
                .args(args)
                .env("CONSUL_HTTP_ADDR", &addr)
                .env("NOMAD_ADDR", &addr)
                .env("CONSUL_HTTP_TOKEN", TOKEN)
                .output()
                .await
                .unwrap()
        }
    };
    let out = run(vec!["plan".into(), file]).await;
    assert_eq!(out.status.code(), Some(255), "{:?}", streams(&out));
    assert_no_secret(&out);

    let out = run(vec!["status".into()]).await;
    let (_, stderr) = streams(&out);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("CONSUL_HTTP_ADDR") && stderr.contains(&addr),
        "{stderr}"
    );
    let lines: Vec<&str> = stderr.lines().collect();
    assert!(lines.last().unwrap().starts_with("check:"), "{stderr}");
    let reach = stderr.matches("failed to reach").count();
    assert_eq!(reach, 1, "each link of the chain once:\n{stderr}");
    assert_no_secret(&out);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn apply_refuses_a_key_that_changed_since_it_was_read_unless_forced() {
    let c = cluster().await;
    c.consul
        .kv_put(CONFIG, doc("").as_bytes(), None)
        .await
        .unwrap();
    let (pair, _) = c.consul.kv_get(CONFIG, QueryOptions::NOW).await.unwrap();
    let seen = pair.unwrap().modify_index;
    // Someone else edits the document after we looked at it.
    let theirs = doc("  paused: true\n");
    c.consul
        .kv_put(CONFIG, theirs.as_bytes(), None)
        .await
        .unwrap();

    let dir = tempfile::tempdir().unwrap();
    let mine = doc("    rateLimit: {average: 5, burst: 5}\n");
    let file = write_file(&dir, "mine.yaml", &mine);
    let out = c
        .run(&["apply", &file, "--if-index", &seen.to_string()])
        .await;
    let (_, stderr) = streams(&out);
    assert_eq!(out.status.code(), Some(3), "{stderr}");
    assert!(
        stderr.contains("changed since it was read") && stderr.contains("--force"),
        "{stderr}"
    );
    let (pair, _) = c.consul.kv_get(CONFIG, QueryOptions::NOW).await.unwrap();
    assert_eq!(pair.unwrap().value, theirs.as_bytes(), "nothing written");

    let out = c.run(&["apply", &file, "--force"]).await;
    assert_eq!(out.status.code(), Some(0), "{:?}", streams(&out));
    let (pair, _) = c.consul.kv_get(CONFIG, QueryOptions::NOW).await.unwrap();
    assert_eq!(pair.unwrap().value, mine.as_bytes());

    let invalid = write_file(
        &dir,
        "bad.yaml",
        "apiVersion: proxy-operator.io/v1alpha1\nkind: ProxyConfig\nspec:\n  proxy: nginx\n",
    );
    let out = c.run(&["apply", &invalid]).await;
    assert_eq!(out.status.code(), Some(1));
    assert!(streams(&out).1.contains("spec.proxy"));
    c.twin.shutdown().await;
}

/// Plays the operator: answers the next config index with `phase` in the status document.
fn answer_with(
    consul: ConsulClient,
    phase: Phase,
    reason: &'static str,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let (_, meta) = consul.kv_get(CONFIG, QueryOptions::NOW).await.unwrap();
        let (pair, _) = consul
            .kv_get(
                CONFIG,
                QueryOptions::blocking(meta.index, Duration::from_secs(20)),
            )
            .await
            .unwrap();
        let index = pair.unwrap().modify_index;
        let mut status = ProxyStatus {
            phase: Phase::Progressing,
            observed_index: index,
            ..ProxyStatus::default()
        };
        consul
            .kv_put(STATUS, &serde_json::to_vec(&status).unwrap(), None)
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(300)).await;
        status.phase = phase;
        status.warnings = vec![FieldError::new("x", HASH)];
        status.push_history(HistoryEntry {
            digest: "d".into(),
            outcome: if phase == Phase::Ready {
                Outcome::Succeeded
            } else {
                Outcome::RolledBack
            },
            reason: reason.into(),
            ..HistoryEntry::default()
        });
        consul
            .kv_put(STATUS, &serde_json::to_vec(&status).unwrap(), None)
            .await
            .unwrap();
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn apply_wait_exits_0_on_ready_and_1_with_the_reason_on_a_rollback() {
    let c = cluster().await;
    c.consul
        .kv_put(CONFIG, doc("").as_bytes(), None)
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();

    let good = write_file(
        &dir,
        "good.yaml",
        &doc("    rateLimit: {average: 5, burst: 5}\n"),
    );
    let operator = answer_with(c.consul.clone(), Phase::Ready, "passed the gate");
    let out = c.run(&["apply", &good, "--wait", "--timeout", "20s"]).await;
    operator.await.unwrap();
    let (_, stderr) = streams(&out);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(
        stderr.contains("phase: Progressing") && stderr.contains("done: Ready"),
        "{stderr}"
    );

    let bad = write_file(
        &dir,
        "bad.yaml",
        &doc("    rateLimit: {average: 6, burst: 6}\n"),
    );
    let operator = answer_with(
        c.consul.clone(),
        Phase::RolledBack,
        "route probe demo.localhost/ answered 502",
    );
    let out = c.run(&["apply", &bad, "--wait", "--timeout", "20s"]).await;
    operator.await.unwrap();
    let (_, stderr) = streams(&out);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("RolledBack") && stderr.contains("answered 502"),
        "{stderr}"
    );
    assert_no_secret(&out);

    let slow = write_file(
        &dir,
        "slow.yaml",
        &doc("    rateLimit: {average: 7, burst: 7}\n"),
    );
    let out = c.run(&["apply", &slow, "--wait", "--timeout", "1s"]).await;
    assert_eq!(out.status.code(), Some(4), "{:?}", streams(&out));
    c.twin.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_lists_revisions_and_rollback_writes_the_previous_good_document_back() {
    let c = cluster().await;
    let first = doc("");
    let second = doc("    rateLimit: {average: 9, burst: 9}\n");
    for (n, text, outcome) in [
        (1, &first, Outcome::Succeeded),
        (2, &second, Outcome::Succeeded),
    ] {
        let rev = Revision {
            revision: n,
            digest: spec::load(text.as_bytes()).unwrap().digest().to_owned(),
            config_index: n,
            finished_at: format!("2026-12-06T0{n}:00:00Z"),
            outcome,
            reason: "passed the gate".into(),
            document: text.clone(),
        };
        c.consul
            .kv_put(
                &revision_key("proxy-operator", n),
                &serde_json::to_vec(&rev).unwrap(),
                None,
            )
            .await
            .unwrap();
    }
    c.consul
        .kv_put(CONFIG, second.as_bytes(), None)
        .await
        .unwrap();

    let out = c.run(&["history"]).await;
    let (stdout, stderr) = streams(&out);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(stdout.lines().nth(1).unwrap().starts_with("1 "), "{stdout}");
    assert!(
        stdout.contains("succeeded") && stdout.contains("passed the gate"),
        "{stdout}"
    );

    let out = c.run(&["rollback"]).await;
    assert_eq!(out.status.code(), Some(0), "{:?}", streams(&out));
    assert!(streams(&out).1.contains("restoring revision 1"));
    let (pair, _) = c.consul.kv_get(CONFIG, QueryOptions::NOW).await.unwrap();
    assert_eq!(pair.unwrap().value, first.as_bytes());

    let out = c.run(&["rollback", "--to", "7"]).await;
    assert_eq!(out.status.code(), Some(1));
    c.twin.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn debug_dump_collects_everything_and_no_file_holds_a_secret() {
    let c = cluster().await;
    let text = doc("");
    c.converge(&text).await;
    let status = ProxyStatus {
        phase: Phase::Ready,
        warnings: vec![FieldError::new("x", HASH)],
        ..ProxyStatus::default()
    };
    c.consul
        .kv_put(STATUS, &serde_json::to_vec(&status).unwrap(), None)
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let target = dir.path().join("dump");
    let out = c.run(&["debug", "dump", target.to_str().unwrap()]).await;
    assert_no_secret(&out);
    for name in [
        "config.yaml",
        "status.json",
        "policy-tree.json",
        "rendered.json",
        "job.json",
        "job-versions.json",
        "README.txt",
    ] {
        let body =
            std::fs::read_to_string(target.join(name)).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert!(!body.contains(TOKEN), "{name} holds the token");
        assert!(!body.contains("$apr1$"), "{name} holds the hash:\n{body}");
    }
    let tree = std::fs::read_to_string(target.join("policy-tree.json")).unwrap();
    assert!(tree.contains("<redacted>"), "{tree}");
    c.twin.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_watch_prints_each_new_status_until_interrupted() {
    use tokio::io::AsyncBufReadExt as _;
    let c = cluster().await;
    let write = |phase| {
        let status = ProxyStatus {
            phase,
            ..ProxyStatus::default()
        };
        serde_json::to_vec(&status).unwrap()
    };
    c.consul
        .kv_put(STATUS, &write(Phase::Progressing), None)
        .await
        .unwrap();
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_proxy-operator"))
        .args(["status", "--watch"])
        .env("CONSUL_HTTP_ADDR", c.twin.consul_addr().to_string())
        .env("CONSUL_HTTP_TOKEN", TOKEN)
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = tokio::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let mut seen = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let mut wrote_ready = false;
    while !seen
        .iter()
        .any(|l: &String| l.contains("phase:       Ready"))
    {
        let line = tokio::time::timeout_at(deadline, lines.next_line())
            .await
            .expect("status --watch printed the new status in time")
            .unwrap()
            .expect("still running");
        if line.contains("phase:       Progressing") && !wrote_ready {
            wrote_ready = true;
            c.consul
                .kv_put(STATUS, &write(Phase::Ready), None)
                .await
                .unwrap();
        }
        seen.push(line);
    }
    assert_eq!(
        seen.iter().filter(|l| l.starts_with("--- index")).count(),
        2,
        "{seen:?}"
    );
    child.kill().await.unwrap();
    c.twin.shutdown().await;
}
