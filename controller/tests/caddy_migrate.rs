//! `migrate tags` output routes on real Caddy as it does on real Traefik (`tests/migrate.rs`):
//! the same legacy tags, converted by the same tool, judged with the same requests, hosts,
//! paths and status codes.
#![allow(clippy::unwrap_used, clippy::panic)] // tests fail loudly

#[path = "../../tests/support/mod.rs"]
mod support;

mod caddy_support;

use caddy_support::*;
use proxy_operator::migrate::{ConvertOptions, ServiceInput, migrate_service};
use support::Backend;

/// The legacy services of `tests/migrate.rs`, tag for tag.
const SERVICES: &[(&str, &str)] = &[
    ("site", "https://site.test"),
    ("api", "urlprefix-app.test/api"),
    ("stripped", "urlprefix-strip.test/old strip=/old"),
    (
        "redirected",
        "urlprefix-redir.test:80/ redirect=308,https://redir.test$path",
    ),
    (
        "moved",
        "urlprefix-moved.test:80/ redirect=301,https://new.test/landing",
    ),
    (
        "private",
        "urlprefix-private.test/ allow=ip:10.0.0.0/8,ip:192.168.0.0/16",
    ),
    (
        "loopback",
        "urlprefix-loopback.test/ allow=ip:127.0.0.1,ip:::1",
    ),
];

fn json_body(text: &str) -> serde_json::Value {
    serde_json::from_str(text).unwrap_or(serde_json::Value::Null)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn converted_tags_route_on_caddy_with_the_hosts_paths_and_status_codes_traefik_gives() {
    let dir = tempfile::tempdir().unwrap();
    let ports = Ports::free();
    let mut backends = Vec::new();
    let mut entries = Vec::new();
    for (service, tag) in SERVICES {
        let backend = Backend::start(service).await;
        let tags = vec![tag.to_string()];
        let m = migrate_service(
            ServiceInput {
                name: service,
                tags: &tags,
                port: None,
            },
            &ConvertOptions::default(),
            // Only the Traefik tags remain, so Caddy routes what Traefik would.
            true,
        );
        let converted = m.apply(&tags);
        assert!(!converted.iter().any(|t| t == tag), "{converted:?}");
        let refs: Vec<&str> = converted.iter().map(String::as_str).collect();
        entries.push(instance(service, backend.port(), &refs, "passing"));
        backends.push(backend);
    }
    // As in the Traefik test: no entry point redirect, so routes on `web` answer themselves.
    let spec = spec(ports, &dir.path().join("certs"), false, "");
    let m = model(&spec, None);
    let (config, table) =
        proxy_operator::proxy::caddy::sync::desired(&m, &catalog(entries), &options(ports))
            .unwrap();
    assert!(table.findings.is_empty(), "{:?}", table.findings);
    let _caddy = Caddy::start(dir.path(), &config, ports.admin).await;

    let plain = plain_client();
    let get = |host: &'static str, path: &'static str| {
        let plain = plain.clone();
        async move {
            plain
                .get(format!("http://127.0.0.1:{}{path}", ports.web))
                .header("Host", host)
                .send()
                .await
                .unwrap()
        }
    };

    // HinD host: TLS only.
    let resp = tls_get("site.test", ports.websecure, "/anything").await;
    assert_eq!(resp.status(), 200);
    assert_eq!(backend_of(&resp).as_deref(), Some("site"));
    assert_eq!(
        get("site.test", "/").await.status(),
        404,
        "HinD sites are TLS only"
    );

    // Host + path prefix: a literal string prefix, path unchanged.
    for path in ["/api", "/api/v1/x", "/apis"] {
        let resp = get("app.test", path).await;
        assert_eq!(resp.status(), 200, "{path}");
        assert_eq!(json_body(&resp.text().await.unwrap())["path"], path);
    }
    assert_eq!(get("app.test", "/other").await.status(), 404);
    assert_eq!(get("other.test", "/api").await.status(), 404);

    // Strip prefix.
    let body = json_body(&get("strip.test", "/old/page").await.text().await.unwrap());
    assert_eq!(body["path"], "/page");
    assert_eq!(body["backend"], "stripped");

    // Redirects keep path and query, never reach the backend; permanent = 301 for GET, 308
    // for other methods, as on Traefik.
    let resp = get("redir.test", "/a/b?x=1").await;
    assert_eq!(resp.status(), 301);
    assert_eq!(resp.headers()["location"], "https://redir.test/a/b?x=1");
    assert!(backend_of(&resp).is_none());
    let post = plain
        .post(format!("http://127.0.0.1:{}/form", ports.web))
        .header("Host", "redir.test")
        .send()
        .await
        .unwrap();
    assert_eq!(post.status(), 308);
    assert_eq!(post.headers()["location"], "https://redir.test/form");
    let resp = get("moved.test", "/whatever").await;
    assert_eq!(resp.status(), 301);
    assert_eq!(resp.headers()["location"], "https://new.test/landing");

    // IP allow list.
    assert_eq!(get("private.test", "/").await.status(), 403);
    let resp = get("loopback.test", "/").await;
    assert_eq!(resp.status(), 200);
    assert_eq!(backend_of(&resp).as_deref(), Some("loopback"));
}
