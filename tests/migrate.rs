//! End-to-end: legacy HinD/fabio tags are converted, registered in the twin's Consul catalog, and
//! real Traefik (Consul Catalog provider) judges them with real requests: host, host+path,
//! strip-prefix, redirect and the IP allow list must each behave as the legacy tag meant.
#![allow(clippy::panic)] // a failing test (and the shared harness) panics

#[path = "support/mod.rs"]
mod support;

use std::time::Duration;

use proxy_operator::migrate::{ConvertOptions, ServiceInput, migrate_service};
use support::{Backend, ChildGuard, eventually, free_port, traefik_bin};

struct Legacy {
    service: &'static str,
    tags: &'static [&'static str],
}

const SERVICES: &[Legacy] = &[
    // HinD: the whole tag is a Caddy site address, served over TLS.
    Legacy {
        service: "site",
        tags: &["https://site.test"],
    },
    // fabio host + path prefix, both schemes.
    Legacy {
        service: "api",
        tags: &["urlprefix-app.test/api"],
    },
    Legacy {
        service: "stripped",
        tags: &["urlprefix-strip.test/old strip=/old"],
    },
    // Internet Archive's HTTP→HTTPS redirect tag, and a 301 with a fixed target.
    Legacy {
        service: "redirected",
        tags: &["urlprefix-redir.test:80/ redirect=308,https://redir.test$path"],
    },
    Legacy {
        service: "moved",
        tags: &["urlprefix-moved.test:80/ redirect=301,https://new.test/landing"],
    },
    // Allow lists: loopback allowed, and a list the test client is not on.
    Legacy {
        service: "private",
        tags: &["urlprefix-private.test/ allow=ip:10.0.0.0/8,ip:192.168.0.0/16"],
    },
    Legacy {
        service: "loopback",
        tags: &["urlprefix-loopback.test/ allow=ip:127.0.0.1,ip:::1"],
    },
];

async fn register(http: &reqwest::Client, consul: &str, name: &str, port: u16, tags: &[String]) {
    let body = serde_json::json!({
        "Node": "node-1",
        "Address": "127.0.0.1",
        "Service": {"ID": format!("{name}-1"), "Service": name, "Tags": tags, "Address": "127.0.0.1", "Port": port},
        "Check": {"CheckID": format!("service:{name}-1"), "Name": "alive", "Status": "passing", "ServiceID": format!("{name}-1")}
    });
    let resp = http
        .put(format!("http://{consul}/v1/catalog/register"))
        .json(&body)
        .send()
        .await
        .expect("register");
    assert!(
        resp.status().is_success(),
        "catalog register {name}: {}",
        resp.status()
    );
}

fn json_body(text: &str) -> serde_json::Value {
    serde_json::from_str(text).unwrap_or(serde_json::Value::Null)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn converted_tags_route_through_real_traefik_as_the_legacy_tags_meant() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let twin = hashistack_twin::Twin::start(Default::default())
        .await
        .expect("twin starts");
    let consul = twin.consul_addr().to_string();
    let http = reqwest::Client::new();

    let mut backends = Vec::new();
    for legacy in SERVICES {
        let backend = Backend::start(legacy.service).await;
        let tags: Vec<String> = legacy.tags.iter().map(|t| t.to_string()).collect();
        let m = migrate_service(
            ServiceInput {
                name: legacy.service,
                tags: &tags,
                port: None,
            },
            &ConvertOptions::default(),
            false,
        );
        assert!(!m.add.is_empty(), "{}: {:?}", legacy.service, m.findings);
        register(
            &http,
            &consul,
            legacy.service,
            backend.port(),
            &m.apply(&tags),
        )
        .await;
        backends.push(backend);
    }

    let dir = tempfile::tempdir().expect("tempdir");
    let (web, websecure, admin) = (free_port(), free_port(), free_port());
    let config = format!(
        r#"entryPoints:
  web:
    address: "127.0.0.1:{web}"
  websecure:
    address: "127.0.0.1:{websecure}"
  traefik:
    address: "127.0.0.1:{admin}"
ping: {{}}
api:
  insecure: true
log:
  level: INFO
providers:
  providersThrottleDuration: 100ms
  consulCatalog:
    exposedByDefault: false
    watch: true
    endpoint:
      address: "{consul}"
"#
    );
    let config_path = dir.path().join("traefik.yml");
    std::fs::write(&config_path, config).expect("write static config");
    let mut cmd = std::process::Command::new(traefik_bin());
    cmd.arg(format!("--configfile={}", config_path.display()))
        .env("XDG_CONFIG_HOME", dir.path())
        .env("XDG_DATA_HOME", dir.path());
    let traefik = ChildGuard::spawn(cmd, &dir.path().join("traefik.log"));

    // Every converted router is loaded and none is disabled by a bad tag.
    let rawdata = eventually(Duration::from_secs(20), || {
        let http = http.clone();
        async move {
            let body = http
                .get(format!("http://127.0.0.1:{admin}/api/rawdata"))
                .send()
                .await
                .ok()?
                .text()
                .await
                .ok()?;
            let v = json_body(&body);
            let routers = v.get("routers")?.as_object()?;
            let ours = routers
                .keys()
                .filter(|k| k.ends_with("@consulcatalog"))
                .count();
            (ours >= 11).then_some(v)
        }
    })
    .await
    .unwrap_or_else(|| panic!("routers never loaded; traefik log:\n{}", traefik.log()));
    for kind in ["routers", "middlewares", "services"] {
        for (name, item) in rawdata[kind].as_object().into_iter().flatten() {
            assert_eq!(item["status"], "enabled", "{kind} {name}: {item}");
        }
    }

    let plain = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client");
    let get = |host: &'static str, path: &'static str| {
        let plain = plain.clone();
        async move {
            plain
                .get(format!("http://127.0.0.1:{web}{path}"))
                .header("Host", host)
                .send()
                .await
                .expect("request through traefik")
        }
    };
    let backend_of = |resp: &reqwest::Response| {
        resp.headers()
            .get("x-backend")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };

    // Host (HinD, TLS only): answered on websecure with SNI site.test, not on web.
    let tls = reqwest::Client::builder()
        .tls_danger_accept_invalid_certs(true)
        .resolve(
            "site.test",
            std::net::SocketAddr::from(([127, 0, 0, 1], websecure)),
        )
        .build()
        .expect("tls client");
    let resp = tls
        .get(format!("https://site.test:{websecure}/anything"))
        .send()
        .await
        .expect("tls request");
    assert_eq!(resp.status(), 200);
    assert_eq!(backend_of(&resp).as_deref(), Some("site"));
    assert_eq!(
        get("site.test", "/").await.status(),
        404,
        "HinD sites are TLS only"
    );

    // Host + path prefix: a literal string prefix, as in fabio.
    for path in ["/api", "/api/v1/x", "/apis"] {
        let resp = get("app.test", path).await;
        assert_eq!(resp.status(), 200, "{path}");
        let body = json_body(&resp.text().await.expect("body"));
        assert_eq!(body["path"], path, "path reaches the backend unchanged");
    }
    assert_eq!(get("app.test", "/other").await.status(), 404);
    assert_eq!(get("other.test", "/api").await.status(), 404);

    // Strip prefix.
    let body = json_body(
        &get("strip.test", "/old/page")
            .await
            .text()
            .await
            .expect("body"),
    );
    assert_eq!(body["path"], "/page");
    assert_eq!(body["backend"], "stripped");

    // Redirects keep the request path and query ($path), and never reach the backend.
    let resp = get("redir.test", "/a/b?x=1").await;
    // Traefik has no exact 308 for GET: permanent means 301 for GET and 308 for other methods,
    // which is what the converter's finding for `redirect=308` says.
    assert_eq!(resp.status(), 301);
    assert_eq!(resp.headers()["location"], "https://redir.test/a/b?x=1");
    assert!(backend_of(&resp).is_none());
    let post = plain
        .post(format!("http://127.0.0.1:{web}/form"))
        .header("Host", "redir.test")
        .send()
        .await
        .expect("request through traefik");
    assert_eq!(post.status(), 308);
    assert_eq!(post.headers()["location"], "https://redir.test/form");
    let resp = get("moved.test", "/whatever").await;
    assert_eq!(resp.status(), 301);
    assert_eq!(resp.headers()["location"], "https://new.test/landing");

    // IP allow list: 127.0.0.1 is not in 10/8 or 192.168/16 → 403; the loopback list admits it.
    assert_eq!(get("private.test", "/").await.status(), 403);
    let resp = get("loopback.test", "/").await;
    assert_eq!(resp.status(), 200);
    assert_eq!(backend_of(&resp).as_deref(), Some("loopback"));

    drop(traefik);
    twin.shutdown().await;
}
