//! The loop under election, admission, the users-key watch and revisions, on the fakes.

use std::time::Duration;

use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use super::super::{Config, Operator};
use crate::admission::AdminLimits;
use crate::cli::history::Revision;
use crate::consul::fake::FakeConsul;
use crate::consul::{CatalogRegistration, ConsulApi};
use crate::leader::{self, Elector, ElectorConfig};
use crate::nomad::fake::FakeNomad;
use crate::proxy::probe::fake::FakeProbe;
use crate::render::{self, RenderContext};
use crate::spec::status::{Phase, ProxyStatus};
use crate::spec::{self, ProxyKind};
use crate::transport::QueryOptions;

const PREFIX: &str = "po";
const CONFIG: &str = "po/config";
const STATUS: &str = "po/status";
const USERS: &str = "po/secrets/users";
const JOB: &str = "proxy";
const SENTINEL: &str = "SENTINEL$h9FWgUz3n9YxylKLlR5SQ";

fn doc(extra: &str) -> String {
    format!(
        "apiVersion: proxy-operator.io/v1alpha1
kind: ProxyConfig
spec:
  proxy: traefik
  rollout:
    healthyDeadline: 20s
    minHealthyTime: 100ms
{extra}"
    )
}

fn with_users(key: &str) -> String {
    doc(&format!(
        "  middlewares:\n    basicAuth:\n      usersFrom:\n        consulKey: {key}\n"
    ))
}

fn users(name: &str) -> String {
    format!("{name}:$apr1$SENTINEL$h9FWgUz3n9YxylKLlR5SQ/\n")
}

fn status(consul: &FakeConsul) -> ProxyStatus {
    consul
        .value(STATUS)
        .map(|v| serde_json::from_slice(&v).unwrap())
        .unwrap_or_default()
}

/// Makes the fake proxy report what `document` renders (with `users`) as loaded.
fn enable(probe: &FakeProbe, document: &str, users: Option<&str>) {
    let ctx = RenderContext {
        prefix: PREFIX.into(),
        owner: PREFIX.into(),
        basic_auth_users: users.map(|u| vec![u.trim().to_owned()]),
        ..RenderContext::default()
    };
    let rendered = render::render(&spec::load(document.as_bytes()).unwrap(), &ctx).unwrap();
    probe.set_enabled(&crate::proxy::traefik::expected_entries(
        &rendered.traefik_kv,
        "po/traefik/",
    ));
}

async fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    for _ in 0..400 {
        if check() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("never: {what}");
}

struct Replica {
    stop: oneshot::Sender<()>,
    task: JoinHandle<()>,
}

/// An operator under election on the shared fakes, running its loop.
fn replica(consul: &FakeConsul, nomad: &FakeNomad, probe: &FakeProbe, node: &str) -> Replica {
    let elector = Elector::spawn(
        consul.clone(),
        ElectorConfig {
            retry: Duration::from_millis(100),
            ..ElectorConfig::new(PREFIX, node)
        },
    );
    let op = Operator::new(
        Config::new(PREFIX).debounce(Duration::from_millis(20)),
        consul.clone(),
        nomad.clone(),
        probe.clone(),
    )
    .with_leader(elector);
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(op.run(async {
        let _ = stopped.await;
    }));
    Replica { stop, task }
}

async fn register_nodes(consul: &FakeConsul, nodes: &[&str]) {
    for node in nodes {
        consul
            .catalog_register(&CatalogRegistration {
                node: (*node).to_owned(),
                address: "127.0.0.1".to_owned(),
                ..CatalogRegistration::default()
            })
            .await
            .unwrap();
    }
}

#[tokio::test]
async fn only_the_leader_runs_passes_and_a_follower_takes_over_where_it_left_off() {
    let (consul, nomad, probe) = (FakeConsul::new(), FakeNomad::new(), FakeProbe::healthy());
    register_nodes(&consul, &["n1", "n2"]).await;
    let first = doc("");
    consul.set(CONFIG, &first);
    enable(&probe, &first, None);
    let a = replica(&consul, &nomad, &probe, "n1");
    let b = replica(&consul, &nomad, &probe, "n2");
    eventually("a job is registered", || nomad.job(JOB).is_some()).await;
    nomad.set_allocation_health(JOB, true);
    eventually("Ready", || status(&consul).phase == Phase::Ready).await;
    assert_eq!(
        nomad.calls_of("job_register").len(),
        1,
        "one replica acted, the other waited"
    );
    let leader = status(&consul).leader.unwrap_or_default();
    let holder = leader::read_holder(&consul, "po/leader")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(leader, holder.to_string(), "status names the holder");

    // The leader stops (SIGTERM): the other one takes over and converges an edit.
    let (stopping, staying) = if holder.holder.as_ref().unwrap().node == "n1" {
        (a, b)
    } else {
        (b, a)
    };
    stopping.stop.send(()).unwrap();
    stopping.task.await.unwrap();
    let edited =
        doc("  middlewares:\n    securityHeaders:\n      headers:\n        X-Edition: \"two\"\n");
    consul.set(CONFIG, &edited);
    enable(&probe, &edited, None);
    let digest = spec::load(edited.as_bytes()).unwrap().digest().to_owned();
    eventually("the edit converges under the new leader", || {
        let s = status(&consul);
        s.phase == Phase::Ready && s.last_applied_digest.as_deref() == Some(digest.as_str())
    })
    .await;
    assert_ne!(status(&consul).leader.unwrap_or_default(), leader);
    assert_eq!(
        nomad.calls_of("job_register").len(),
        1,
        "a policy edit after a failover registers no job version"
    );
    staying.stop.send(()).unwrap();
    staying.task.await.unwrap();
    assert!(
        leader::read_holder(&consul, "po/leader")
            .await
            .unwrap()
            .is_none(),
        "shutdown released the lock"
    );
}

#[tokio::test]
async fn a_leader_whose_session_is_invalidated_stops_writing_at_once() {
    let (consul, nomad, probe) = (FakeConsul::new(), FakeNomad::new(), FakeProbe::healthy());
    register_nodes(&consul, &["n1"]).await;
    let first = doc("");
    consul.set(CONFIG, &first);
    enable(&probe, &first, None);
    let a = replica(&consul, &nomad, &probe, "n1");
    eventually("a job is registered", || nomad.job(JOB).is_some()).await;
    let session = leader::read_holder(&consul, "po/leader")
        .await
        .unwrap()
        .unwrap()
        .session;
    // The rollout is in flight (the deployment is not healthy yet) when the lock goes.
    consul.expire_session(&session);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let writes = |c: &FakeConsul| {
        c.calls()
            .into_iter()
            .filter(|c| c.op == "txn" && !c.target.contains("leader"))
            .count()
    };
    let before = writes(&consul);
    let registers = nomad.calls_of("job_register").len();
    nomad.set_allocation_health(JOB, true);
    tokio::time::sleep(Duration::from_millis(500)).await;
    // The replica waits half a TTL before contending again: nobody leads meanwhile.
    assert!(
        leader::read_holder(&consul, "po/leader")
            .await
            .unwrap()
            .is_none()
    );
    assert_eq!(writes(&consul), before, "no write without the lock");
    assert_eq!(nomad.calls_of("job_register").len(), registers);
    a.stop.send(()).unwrap();
    a.task.await.unwrap();
}

fn operator(
    consul: &FakeConsul,
    nomad: &FakeNomad,
    probe: &FakeProbe,
) -> Operator<FakeConsul, FakeNomad, FakeProbe> {
    let mut config = Config::new(PREFIX).debounce(Duration::from_millis(20));
    config.limits = Some(AdminLimits::defaults(PREFIX));
    Operator::new(config, consul.clone(), nomad.clone(), probe.clone())
}

#[tokio::test]
async fn a_document_outside_the_limits_is_invalid_naming_the_flag_and_nothing_else_is_written() {
    let (consul, nomad, probe) = (FakeConsul::new(), FakeNomad::new(), FakeProbe::healthy());
    let cases = [
        (with_users("secrets/users"), "--secrets-prefix"),
        (doc("  tls:\n    certDir: /etc\n"), "--allowed-cert-root"),
        (
            doc("  job:\n    driver:\n      rawExec:\n        command: /bin/sh\n"),
            "--allowed-driver raw_exec",
        ),
        (
            doc("  job:\n    certVolume: root\n"),
            "--allowed-host-volume",
        ),
    ];
    for (document, flag) in cases {
        let mut op = operator(&consul, &nomad, &probe);
        consul.set(CONFIG, &document);
        consul.clear_calls();
        op.reconcile().await;
        let s = status(&consul);
        assert_eq!(s.phase, Phase::Invalid, "{document}");
        let text = format!("{:?}", s.validation_errors);
        assert!(text.contains(flag), "{flag} named: {text}");
        let writes: Vec<String> = consul
            .calls()
            .into_iter()
            .filter(|c| matches!(c.op, "txn" | "kv_put" | "kv_delete"))
            .map(|c| c.target)
            .collect();
        assert!(
            writes.iter().all(|t| *t == format!("cas {STATUS}")),
            "only the status is written: {writes:?}"
        );
        assert!(nomad.calls_of("job_register").is_empty());
    }
}

#[tokio::test]
async fn a_users_file_outside_the_users_dir_is_invalid_even_through_a_symlink() {
    let (consul, nomad, probe) = (FakeConsul::new(), FakeNomad::new(), FakeProbe::healthy());
    let dir = tempfile::tempdir().unwrap();
    let link = dir.path().join("users");
    std::os::unix::fs::symlink("/etc/hostname", &link).unwrap();
    let mut config = Config::new(PREFIX);
    let mut limits = AdminLimits::defaults(PREFIX);
    limits.users_dir = Some(dir.path().to_path_buf());
    config.limits = Some(limits);
    let mut op = Operator::new(config, consul.clone(), nomad.clone(), probe.clone());
    consul.set(
        CONFIG,
        doc(&format!(
            "  middlewares:\n    basicAuth:\n      usersFrom:\n        file: {}\n",
            link.display()
        )),
    );
    op.reconcile().await;
    let s = status(&consul);
    assert_eq!(s.phase, Phase::Invalid);
    assert!(format!("{:?}", s.validation_errors).contains("--users-dir"));
    assert!(nomad.calls_of("job_register").is_empty());
}

#[tokio::test]
async fn a_finished_rollout_leaves_a_revision_with_the_document_text_and_never_the_users() {
    let (consul, nomad, probe) = (FakeConsul::new(), FakeNomad::new(), FakeProbe::healthy());
    let document = with_users(USERS);
    consul.set(USERS, users("alice"));
    consul.set(CONFIG, &document);
    enable(&probe, &document, Some(&users("alice")));
    let mut op = operator(&consul, &nomad, &probe);
    op.reconcile().await;
    nomad.set_allocation_health(JOB, true);
    for _ in 0..100 {
        if status(&consul).phase == Phase::Ready {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        op.reconcile().await;
    }
    assert_eq!(status(&consul).phase, Phase::Ready);
    let value = consul.value("po/revisions/1").expect("revision 1 written");
    let revision: Revision = serde_json::from_slice(&value).unwrap();
    assert_eq!(revision.document, document);
    assert_eq!(revision.revision, 1);
    assert!(
        !String::from_utf8_lossy(&value).contains(SENTINEL),
        "no secret in a revision"
    );
    assert_eq!(
        spec::load(revision.document.as_bytes()).unwrap().proxy(),
        ProxyKind::Traefik
    );
}

#[tokio::test]
async fn rotating_the_users_key_rewrites_the_policy_within_the_debounce() {
    let (consul, nomad, probe) = (FakeConsul::new(), FakeNomad::new(), FakeProbe::healthy());
    let document = with_users(USERS);
    consul.set(USERS, users("alice"));
    consul.set(CONFIG, &document);
    enable(&probe, &document, Some(&users("alice")));
    let mut config = Config::new(PREFIX).debounce(Duration::from_millis(20));
    // A resync far away: only the watch can start the pass.
    config.resync = Duration::from_secs(3600);
    let op = Operator::new(config, consul.clone(), nomad.clone(), probe.clone());
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(op.run(async {
        let _ = stopped.await;
    }));
    eventually("a job is registered", || nomad.job(JOB).is_some()).await;
    nomad.set_allocation_health(JOB, true);
    eventually("Ready", || status(&consul).phase == Phase::Ready).await;
    let users_key = "po/traefik/http/middlewares/proxy-operator-basicauth/basicAuth/users/0";
    let read = |c: &FakeConsul| String::from_utf8(c.value(users_key).unwrap_or_default()).unwrap();
    assert!(read(&consul).starts_with("alice:"));
    enable(&probe, &document, Some(&users("bob")));
    consul.set(USERS, users("bob"));
    let started = tokio::time::Instant::now();
    eventually("bob replaces alice", || read(&consul).starts_with("bob:")).await;
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    let (pair, _) = consul.kv_get(STATUS, QueryOptions::NOW).await.unwrap();
    assert!(!String::from_utf8_lossy(&pair.unwrap().value).contains(SENTINEL));
    stop.send(()).unwrap();
    task.await.unwrap();
}

#[tokio::test]
async fn a_refused_fence_makes_the_leader_step_down_and_the_next_term_converges_the_edit() {
    let (consul, nomad, probe) = (FakeConsul::new(), FakeNomad::new(), FakeProbe::healthy());
    register_nodes(&consul, &["n1"]).await;
    let first = doc("");
    consul.set(CONFIG, &first);
    enable(&probe, &first, None);
    let a = replica(&consul, &nomad, &probe, "n1");
    eventually("a job is registered", || nomad.job(JOB).is_some()).await;
    nomad.set_allocation_health(JOB, true);
    eventually("Ready", || status(&consul).phase == Phase::Ready).await;
    let session = leader::read_holder(&consul, "po/leader")
        .await
        .unwrap()
        .unwrap()
        .session;
    // Consul refuses the next write on its fence (op 0), as it would for a deposed leader
    // whose elector has not noticed yet.
    consul.fail_next(
        "txn",
        crate::consul::Error::TxnRolledBack {
            errors: vec![crate::consul::TxnOpError {
                op_index: 0,
                what: "failed session check".to_owned(),
            }],
        },
    );
    let edited =
        doc("  middlewares:\n    securityHeaders:\n      headers:\n        X-Edition: \"two\"\n");
    consul.set(CONFIG, &edited);
    enable(&probe, &edited, None);
    eventually("the replica stepped down from its term", || {
        consul
            .entry("po/leader")
            .is_none_or(|p| p.session.as_deref() != Some(session.as_str()))
    })
    .await;
    // The next term (after the elector's pause) reads the state again and converges the edit.
    let digest = spec::load(edited.as_bytes()).unwrap().digest().to_owned();
    for _ in 0..600 {
        let s = status(&consul);
        if s.phase == Phase::Ready && s.last_applied_digest.as_deref() == Some(digest.as_str()) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let s = status(&consul);
    assert_eq!(s.last_applied_digest.as_deref(), Some(digest.as_str()));
    let now = leader::read_holder(&consul, "po/leader")
        .await
        .unwrap()
        .unwrap();
    assert_ne!(now.session, session, "a new term, a new session");
    a.stop.send(()).unwrap();
    a.task.await.unwrap();
}
