//! Real Caddy 2.11.7 routing real HTTP to real backends on 127.0.0.1, driven only through the
//! operator's rendered config and its admin client: one Caddy process per test, started from a
//! bootstrap file and killed by PID.
#![allow(clippy::unwrap_used, clippy::panic)] // tests fail loudly

#[path = "../../tests/support/mod.rs"]
mod support;

mod caddy_support;

use std::time::Duration;

use caddy_support::*;
use proxy_operator::proxy::caddy::admin::Error as AdminError;
use proxy_operator::proxy::caddy::sync::Outcome;
use proxy_operator::proxy::caddy::{CaddyAdmin, Sync};
use support::{Backend, get_with_host};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hind_tagged_service_is_served_over_tls_with_the_security_headers_and_http_redirects_to_https()
 {
    let dir = tempfile::tempdir().unwrap();
    let ports = Ports::free();
    let backend = Backend::start("app").await;
    let spec = spec(ports, &dir.path().join("certs"), true, "");
    let m = model(&spec, None);
    let cat = catalog(vec![instance(
        "app",
        backend.port(),
        &["https://app.example.test"],
        "passing",
    )]);
    let config = render(&m, &cat, ports);
    let _caddy = Caddy::start(dir.path(), &config, ports.admin).await;

    let resp = tls_get("app.example.test", ports.websecure, "/hello").await;
    assert_eq!(resp.status(), 200);
    assert_eq!(backend_of(&resp).as_deref(), Some("app"));
    for (name, value) in [
        ("x-frame-options", "SAMEORIGIN"),
        ("x-content-type-options", "nosniff"),
        ("referrer-policy", "strict-origin-when-cross-origin"),
    ] {
        assert_eq!(resp.headers()[name], value, "{name}");
        assert_eq!(
            resp.headers().get_all(name).iter().count(),
            1,
            "{name} once"
        );
    }
    // A path the backend doesn't know still goes to it: the site has no path.
    let deep = tls_get("app.example.test", ports.websecure, "/a/b?c=d").await;
    assert_eq!(backend_of(&deep).as_deref(), Some("app"));

    // Plain HTTP is redirected to the HTTPS entry point, path and query kept.
    let http = plain_client();
    let url = format!("http://127.0.0.1:{}/x/y?z=1", ports.web);
    let get = http
        .get(&url)
        .header("Host", "app.example.test")
        .send()
        .await
        .unwrap();
    assert_eq!(get.status(), 301);
    assert_eq!(
        get.headers()["location"],
        format!("https://app.example.test:{}/x/y?z=1", ports.websecure)
    );
    let post = http
        .post(&url)
        .header("Host", "app.example.test")
        .send()
        .await
        .unwrap();
    assert_eq!(post.status(), 308);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn catalog_changes_route_after_one_load_with_the_same_caddy_pid() {
    let dir = tempfile::tempdir().unwrap();
    let ports = Ports::free();
    let app = Backend::start("app").await;
    let fresh = Backend::start("fresh").await;
    let good = Backend::start("good").await;
    let sick = Backend::start("sick").await;
    let spec = spec(ports, &dir.path().join("certs"), false, "");
    let m = model(&spec, None);
    let opt_in = ["traefik.enable=true"];
    let base = vec![instance("app", app.port(), &opt_in, "passing")];
    let config = render(&m, &catalog(base.clone()), ports);
    let caddy = Caddy::start(dir.path(), &config, ports.admin).await;
    let pid = caddy.pid();
    let mut sync = Sync::new();
    sync.loaded(&config.identity);

    let status = |host: &'static str| async move {
        get_with_host(ports.web, host, "/").await.map(|s| s.status)
    };
    assert_eq!(status("app.example.test").await, Some(200));
    assert_eq!(status("fresh.example.test").await, Some(404));

    // Registered: one /load, same process.
    let mut with_fresh = base.clone();
    with_fresh.push(instance("fresh", fresh.port(), &opt_in, "passing"));
    let config = render(&m, &catalog(with_fresh.clone()), ports);
    assert_eq!(
        sync.apply(&caddy.admin, config.clone()).await.unwrap(),
        Outcome::Loaded
    );
    let seen = get_with_host(ports.web, "fresh.example.test", "/")
        .await
        .unwrap();
    assert_eq!(seen.status, 200);
    assert_eq!(seen.header("x-backend"), Some("fresh"));
    assert_eq!(caddy.pid(), pid);
    // The same snapshot again needs no /load.
    assert_eq!(
        sync.apply(&caddy.admin, config).await.unwrap(),
        Outcome::Unchanged
    );

    // Deregistered: the route is gone.
    let config = render(&m, &catalog(base.clone()), ports);
    assert_eq!(
        sync.apply(&caddy.admin, config).await.unwrap(),
        Outcome::Loaded
    );
    assert_eq!(status("fresh.example.test").await, Some(404));
    assert_eq!(status("app.example.test").await, Some(200));

    // A critical instance gets no traffic; the passing one gets all of it.
    let mut pair = base;
    pair.push(instance("pair", good.port(), &opt_in, "passing"));
    pair.push(instance("pair", sick.port(), &opt_in, "critical"));
    let config = render(&m, &catalog(pair), ports);
    sync.apply(&caddy.admin, config).await.unwrap();
    for _ in 0..12 {
        let seen = get_with_host(ports.web, "pair.example.test", "/")
            .await
            .unwrap();
        assert_eq!(seen.header("x-backend"), Some("good"));
    }
    assert_eq!(caddy.pid(), pid, "no restart through all of it");
    let upstreams = caddy.admin.upstreams().await.unwrap();
    let addresses: Vec<&str> = upstreams.iter().map(|u| u.address.as_str()).collect();
    assert!(
        addresses.contains(&format!("127.0.0.1:{}", good.port()).as_str()),
        "{addresses:?}"
    );
    assert!(
        !addresses.contains(&format!("127.0.0.1:{}", sick.port()).as_str()),
        "{addresses:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_ip_allow_list_answers_403_outside_and_200_inside_and_changes_live() {
    let dir = tempfile::tempdir().unwrap();
    let ports = Ports::free();
    let app = Backend::start("app").await;
    let cat = catalog(vec![instance(
        "app",
        app.port(),
        &["traefik.enable=true"],
        "passing",
    )]);
    let outside = spec(
        ports,
        &dir.path().join("certs"),
        false,
        "    ipAllowList:\n      sourceRange: [10.0.0.0/8]\n",
    );
    let config = render(&model(&outside, None), &cat, ports);
    let caddy = Caddy::start(dir.path(), &config, ports.admin).await;
    let seen = get_with_host(ports.web, "app.example.test", "/")
        .await
        .unwrap();
    assert_eq!(seen.status, 403);
    assert_eq!(seen.header("x-frame-options"), Some("SAMEORIGIN"));
    assert_eq!(seen.header("x-backend"), None);

    let inside = spec(
        ports,
        &dir.path().join("certs"),
        false,
        "    ipAllowList:\n      sourceRange: [10.0.0.0/8, 127.0.0.0/8]\n",
    );
    let pid = caddy.pid();
    caddy
        .admin
        .load(&render(&model(&inside, None), &cat, ports))
        .await
        .unwrap();
    let seen = get_with_host(ports.web, "app.example.test", "/")
        .await
        .unwrap();
    assert_eq!(seen.status, 200);
    assert_eq!(seen.header("x-backend"), Some("app"));
    assert_eq!(caddy.pid(), pid);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn basic_auth_answers_401_without_credentials_and_200_with_them() {
    let dir = tempfile::tempdir().unwrap();
    let ports = Ports::free();
    let app = Backend::start("app").await;
    let out = caddy_cmd(dir.path())
        .args([
            "hash-password",
            "--plaintext",
            "s3cret",
            "--algorithm",
            "bcrypt",
            "--bcrypt-cost",
            "4",
        ])
        .output()
        .unwrap();
    let hash = String::from_utf8(out.stdout).unwrap().trim().to_string();
    assert!(hash.starts_with("$2a$"), "{hash}");
    let users = vec![format!("alice:{hash}")];
    let spec = spec(
        ports,
        &dir.path().join("certs"),
        false,
        "    basicAuth:\n      usersFrom: {file: /etc/htpasswd}\n      realm: edge\n",
    );
    let cat = catalog(vec![instance(
        "app",
        app.port(),
        &["traefik.enable=true"],
        "passing",
    )]);
    let config = render(&model(&spec, Some(&users)), &cat, ports);
    let _caddy = Caddy::start(dir.path(), &config, ports.admin).await;

    let http = plain_client();
    let url = format!("http://127.0.0.1:{}/", ports.web);
    let anonymous = http
        .get(&url)
        .header("Host", "app.example.test")
        .send()
        .await
        .unwrap();
    assert_eq!(anonymous.status(), 401);
    assert_eq!(
        anonymous.headers()["www-authenticate"],
        "Basic realm=\"edge\""
    );
    let wrong = http
        .get(&url)
        .header("Host", "app.example.test")
        .basic_auth("alice", Some("nope"))
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), 401);
    let ok = http
        .get(&url)
        .header("Host", "app.example.test")
        .basic_auth("alice", Some("s3cret"))
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), 200);
    assert_eq!(backend_of(&ok).as_deref(), Some("app"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_load_returns_caddys_reason_and_the_old_config_keeps_serving() {
    let dir = tempfile::tempdir().unwrap();
    let ports = Ports::free();
    let app = Backend::start("app").await;
    let cat = catalog(vec![instance(
        "app",
        app.port(),
        &["traefik.enable=true"],
        "passing",
    )]);
    let good = spec(ports, &dir.path().join("certs"), false, "");
    let config = render(&model(&good, None), &cat, ports);
    let caddy = Caddy::start(dir.path(), &config, ports.admin).await;
    let mut sync = Sync::new();
    sync.loaded(&config.identity);

    // The web entry point moved to a port that is already taken.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let busy = Ports {
        web: taken.local_addr().unwrap().port(),
        ..ports
    };
    let bad = render(
        &model(&spec(busy, &dir.path().join("certs"), false, ""), None),
        &cat,
        busy,
    );
    let err = sync.apply(&caddy.admin, bad).await.unwrap_err();
    match &err {
        AdminError::Rejected { status, message } => {
            assert_eq!(*status, 400);
            assert!(message.contains("address already in use"), "{message}");
        }
        other => panic!("expected Rejected, got {other}"),
    }
    assert!(!err.is_retryable());
    assert_eq!(sync.last_loaded(), Some(config.identity.as_str()));
    assert_eq!(
        caddy.admin.identity().await.unwrap(),
        Some(config.identity.clone())
    );
    let seen = get_with_host(ports.web, "app.example.test", "/")
        .await
        .unwrap();
    assert_eq!(seen.status, 200);
    assert_eq!(seen.header("x-backend"), Some("app"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_api_refuses_foreign_hosts_and_a_stopped_caddy_is_a_retryable_error() {
    let dir = tempfile::tempdir().unwrap();
    let ports = Ports::free();
    let spec = spec(ports, &dir.path().join("certs"), false, "");
    let config = render(&model(&spec, None), &catalog(vec![]), ports);
    let caddy = Caddy::start(dir.path(), &config, ports.admin).await;
    let resp = plain_client()
        .get(format!("http://127.0.0.1:{}/config/", ports.admin))
        .header("Host", "evil.example")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 403, "DNS-rebinding guard from `origins`");
    let admin = caddy.admin.clone();
    drop(caddy);
    tokio::time::sleep(Duration::from_millis(100)).await;
    let err = admin.identity().await.unwrap_err();
    assert!(err.is_retryable(), "{err}");
}
