//! A Caddy killed with SIGKILL and started again (as Nomad restarts a task) from its bootstrap
//! config file serves the bootstrap's routes again, and the operator's identity check notices the
//! restart and loads the live config. Prints the measured times.
#![allow(clippy::unwrap_used, clippy::panic)] // tests fail loudly

#[path = "../../tests/support/mod.rs"]
mod support;

mod caddy_support;

use std::time::{Duration, Instant};

use caddy_support::*;
use proxy_operator::proxy::caddy::sync::Outcome;
use proxy_operator::proxy::caddy::{CaddyAdmin, Sync};
use support::{Backend, eventually, get_with_host, process_alive};

const RUNS: usize = 5;

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_caddy_restarted_from_its_bootstrap_serves_again_and_gets_the_live_config_back() {
    let dir = tempfile::tempdir().unwrap();
    let ports = Ports::free();
    let old = Backend::start("old").await;
    let fresh = Backend::start("fresh").await;
    let spec = spec(ports, &dir.path().join("certs"), false, "");
    let m = model(&spec, None);
    let opt_in = ["traefik.enable=true"];
    // The job's bootstrap holds the routes of the last structural change; the catalog moved on.
    let bootstrap_catalog = catalog(vec![instance("old", old.port(), &opt_in, "passing")]);
    let bootstrap = render(&m, &bootstrap_catalog, ports);
    let live_catalog = catalog(vec![
        instance("old", old.port(), &opt_in, "passing"),
        instance("fresh", fresh.port(), &opt_in, "passing"),
    ]);
    let live = render(&m, &live_catalog, ports);

    let mut caddy = Caddy::start(dir.path(), &bootstrap, ports.admin).await;
    let mut sync = Sync::new();
    assert_eq!(
        sync.apply(&caddy.admin, live.clone()).await.unwrap(),
        Outcome::Loaded
    );

    let mut to_bootstrap_routes = Vec::new();
    let mut to_live_config = Vec::new();
    for _ in 0..RUNS {
        let pid = caddy.pid();
        let config_path = caddy.config_path.clone();
        let killed = Instant::now();
        drop(caddy); // SIGKILL by PID, then reaped
        assert!(!process_alive(pid));
        caddy = Caddy::spawn(dir.path(), &config_path, ports.admin);
        let served = eventually(Duration::from_secs(10), || async {
            get_with_host(ports.web, "old.example.test", "/")
                .await
                .filter(|s| s.status == 200)
        })
        .await;
        assert!(
            served.is_some(),
            "bootstrap routes never served:\n{}",
            caddy.guard.log()
        );
        to_bootstrap_routes.push(killed.elapsed());

        // The driver's check: an identity other than the one it loaded means a restart.
        let seen = caddy.admin.identity().await.unwrap();
        assert_eq!(seen.as_deref(), Some(bootstrap.identity.as_str()));
        assert_ne!(seen.as_deref(), sync.last_loaded());
        sync.forget();
        assert_eq!(
            sync.apply(&caddy.admin, live.clone()).await.unwrap(),
            Outcome::Loaded
        );
        let fresh_seen = get_with_host(ports.web, "fresh.example.test", "/")
            .await
            .unwrap();
        assert_eq!(fresh_seen.status, 200);
        to_live_config.push(killed.elapsed());
        assert_ne!(caddy.pid(), pid);
    }
    let (a, b) = (
        median(to_bootstrap_routes.clone()),
        median(to_live_config.clone()),
    );
    println!(
        "caddy kill -9 → restart (caddy run --config) → bootstrap routes serve: median {:?}, max {:?} over {RUNS} runs",
        a,
        to_bootstrap_routes.iter().max().unwrap()
    );
    println!(
        "caddy kill -9 → restart → identity mismatch detected → /load live config → new route serves: median {:?}, max {:?}",
        b,
        to_live_config.iter().max().unwrap()
    );
    // The restart itself is Caddy's: 50–100 ms here (contracts/CADDY.md §1); a generous bound
    // so a loaded machine doesn't fail the test, while a hang still does.
    assert!(a < Duration::from_secs(3), "{a:?}");
}
