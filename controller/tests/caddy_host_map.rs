//! Real Caddy: a catalog rendered as host maps (the shape for large catalogs) routes every
//! request exactly as the same catalog rendered one Caddy route per route: the same backend,
//! status, forwarded path and Host, and response headers, for hosts in any case, with ports,
//! unknown and longer hosts, paths, priorities, shadowed duplicates, wildcard and regexp hosts,
//! several instances and a critical one.
#![allow(clippy::unwrap_used, clippy::panic)] // tests fail loudly

#[path = "../../tests/support/mod.rs"]
mod support;

mod caddy_support;

use std::collections::BTreeSet;

use caddy_support::*;
use proxy_operator::consul::ServiceEntry;
use proxy_operator::proxy::caddy::{CaddyAdmin, CaddyConfig, CaddyOptions, Catalog, sync};
use support::{Backend, get_with_host};

fn router(name: &str, rule: &str, extra: &[&str]) -> Vec<String> {
    let mut tags = vec![
        "traefik.enable=true".to_string(),
        format!("traefik.http.routers.{name}.rule={rule}"),
    ];
    tags.extend(extra.iter().map(|t| t.to_string()));
    tags
}

fn entry(service: &str, backend: &Backend, tags: &[String], status: &str) -> ServiceEntry {
    let tags: Vec<&str> = tags.iter().map(String::as_str).collect();
    instance(service, backend.port(), &tags, status)
}

/// What a client can tell about one answer: status, backend (instances of one service named
/// alike), the path and Host the backend saw, and the headers a middleware sets.
async fn seen(port: u16, host: &str, path: &str) -> String {
    let Some(s) = get_with_host(port, host, path).await else {
        return "no answer".into();
    };
    let body: serde_json::Value = serde_json::from_str(&s.body).unwrap_or_default();
    let backend = s
        .header("x-backend")
        .map(|b| b.trim_end_matches(char::is_numeric).to_string());
    format!(
        "{} {:?} path={} host={} x-resp={:?} location={:?}",
        s.status,
        backend,
        body["path"],
        body["headers"]["host"],
        s.header("x-resp"),
        s.header("location"),
    )
}

fn config(
    m: &proxy_operator::render::Model,
    cat: &Catalog,
    ports: Ports,
    from: usize,
) -> CaddyConfig {
    let options = CaddyOptions {
        host_maps_from: from,
        ..options(ports)
    };
    sync::desired(m, cat, &options).unwrap().0
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn host_maps_route_every_request_as_one_route_per_service_does() {
    let dir = tempfile::tempdir().unwrap();
    let ports = Ports::free();
    let names = [
        "alpha1", "alpha2", "alpha3", "beta", "betaroot", "gamma", "delta", "eps", "dupa", "dupb",
        "prio", "deep", "regex", "wild",
    ];
    let mut backends = std::collections::BTreeMap::new();
    for n in names {
        backends.insert(n, Backend::start(n).await);
    }
    let b = |n: &str| &backends[n];
    let opt_in = vec!["traefik.enable=true".to_string()];
    let cat = catalog(vec![
        // Default rule, two passing instances and a critical one.
        entry("alpha", b("alpha1"), &opt_in, "passing"),
        entry("alpha", b("alpha2"), &opt_in, "passing"),
        entry("alpha", b("alpha3"), &opt_in, "critical"),
        entry(
            "beta",
            b("beta"),
            &router(
                "beta",
                "Host(`Beta.example.test`) && PathPrefix(`/api`)",
                &[
                    "traefik.http.routers.beta.middlewares=beta-strip",
                    "traefik.http.middlewares.beta-strip.stripprefix.prefixes=/api",
                ],
            ),
            "passing",
        ),
        entry(
            "betaroot",
            b("betaroot"),
            &router("betaroot", "Host(`beta.example.test`)", &[]),
            "passing",
        ),
        entry(
            "gamma",
            b("gamma"),
            &router("gamma", "Host(`gamma.example.test`) && Path(`/exact`)", &[]),
            "passing",
        ),
        entry(
            "delta",
            b("delta"),
            &router(
                "delta",
                "Host(`delta.example.test`)",
                &[
                    "traefik.http.routers.delta.middlewares=delta-h",
                    "traefik.http.middlewares.delta-h.headers.customresponseheaders.X-Resp=delta",
                    "traefik.http.services.delta.loadbalancer.passhostheader=false",
                ],
            ),
            "passing",
        ),
        entry(
            "eps",
            b("eps"),
            &router(
                "eps",
                "Host(`eps.example.test`)",
                &[
                    "traefik.http.routers.eps.middlewares=eps-allow",
                    "traefik.http.middlewares.eps-allow.ipallowlist.sourcerange=10.0.0.0/8",
                ],
            ),
            "passing",
        ),
        // Same host and path twice: the first by name serves, as before.
        entry(
            "dupa",
            b("dupa"),
            &router("dupa", "Host(`dup.example.test`)", &[]),
            "passing",
        ),
        entry(
            "dupb",
            b("dupb"),
            &router("dupb", "Host(`dup.example.test`)", &[]),
            "passing",
        ),
        entry(
            "prio",
            b("prio"),
            &router(
                "prio",
                "Host(`alpha.example.test`) && PathPrefix(`/p`)",
                &["traefik.http.routers.prio.priority=100"],
            ),
            "passing",
        ),
        entry(
            "deep",
            b("deep"),
            &router("deep", "Host(`a.b.c.deep.example.test`)", &[]),
            "passing",
        ),
        entry(
            "regex",
            b("regex"),
            &router("regex", "HostRegexp(`^r[0-9]+\\.example\\.test$`)", &[]),
            "passing",
        ),
        entry(
            "wild",
            b("wild"),
            &router("wild", "Host(`*.wild.example.test`)", &[]),
            "passing",
        ),
    ]);
    let m = model(&spec(ports, &dir.path().join("certs"), false, ""), None);
    let per_route = config(&m, &cat, ports, usize::MAX);
    let mapped = config(&m, &cat, ports, 1);
    let text = |c: &CaddyConfig| String::from_utf8(c.body.clone()).unwrap();
    assert!(!text(&per_route).contains("\"handler\":\"map\""));
    assert!(text(&mapped).contains("\"handler\":\"map\""));
    // alpha's two passing instances: a map with two upstreams.
    assert!(text(&mapped).contains(".upstream.1}"));

    let hosts = [
        "alpha.example.test",
        "ALPHA.Example.Test",
        "alpha.example.test:1234",
        "x.alpha.example.test",
        "example.test",
        "beta.example.test",
        "BETA.example.test",
        "gamma.example.test",
        "delta.example.test",
        "eps.example.test",
        "dup.example.test",
        "a.b.c.deep.example.test",
        "b.c.deep.example.test",
        "z.a.b.c.deep.example.test",
        "r7.example.test",
        "R7.example.test",
        "x.wild.example.test",
        "unknown.test",
    ];
    let paths = [
        "/", "/api", "/api/x", "/API/x", "/apix", "/exact", "/exact/", "/p/q",
    ];
    let caddy = Caddy::start(dir.path(), &per_route, ports.admin).await;
    let mut expected = Vec::new();
    for host in hosts {
        for path in paths {
            expected.push(format!(
                "{host}{path}: {}",
                seen(ports.web, host, path).await
            ));
        }
    }
    caddy.admin.load(&mapped).await.unwrap();
    assert_eq!(
        caddy.admin.identity().await.unwrap().as_deref(),
        Some(mapped.identity.as_str())
    );
    let mut got = Vec::new();
    for host in hosts {
        for path in paths {
            got.push(format!(
                "{host}{path}: {}",
                seen(ports.web, host, path).await
            ));
        }
    }
    for (e, g) in expected.iter().zip(&got) {
        assert_eq!(e, g);
    }
    // The comparison covers served, shadowed and refused requests alike.
    let all = got.join("\n");
    for needle in [
        "Some(\"alpha\")",
        "Some(\"beta\") path=\"/x\"",
        "Some(\"betaroot\")",
        "Some(\"gamma\") path=\"/exact\"",
        "Some(\"dupa\")",
        "Some(\"prio\")",
        "Some(\"deep\")",
        "Some(\"regex\")",
        "Some(\"wild\")",
        "x-resp=Some(\"delta\")",
        "403 None",
        "404 None",
    ] {
        assert!(all.contains(needle), "{needle} never seen:\n{all}");
    }
    assert!(!all.contains("dupb"), "{all}");

    // Both passing instances get traffic through the map; the critical one none.
    let mut answered = BTreeSet::new();
    for _ in 0..40 {
        let s = get_with_host(ports.web, "alpha.example.test", "/")
            .await
            .unwrap();
        answered.insert(s.header("x-backend").unwrap_or("none").to_string());
    }
    assert_eq!(
        answered,
        BTreeSet::from(["alpha1".to_string(), "alpha2".to_string()])
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hosts_in_a_map_get_certificates_from_automatic_https_like_single_routes() {
    let dir = tempfile::tempdir().unwrap();
    let ports = Ports::free();
    let app = Backend::start("hind").await;
    let cat = catalog(vec![
        instance(
            "hind",
            app.port(),
            &["https://hind.example.test"],
            "passing",
        ),
        instance(
            "other",
            app.port(),
            &["https://other.example.test/api"],
            "passing",
        ),
    ]);
    let m = model(&spec(ports, &dir.path().join("certs"), false, ""), None);
    let mapped = config(&m, &cat, ports, 1);
    assert!(
        String::from_utf8(mapped.body.clone())
            .unwrap()
            .contains("\"handler\":\"map\"")
    );
    let _caddy = Caddy::start(dir.path(), &mapped, ports.admin).await;
    let resp = tls_get("hind.example.test", ports.websecure, "/").await;
    assert_eq!(resp.status().as_u16(), 200);
    assert_eq!(backend_of(&resp).as_deref(), Some("hind"));
    let resp = tls_get("other.example.test", ports.websecure, "/api").await;
    assert_eq!(resp.status().as_u16(), 200);
}
