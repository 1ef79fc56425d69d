//! Blocking-query semantics of the twin's Consul API (contracts/CONSUL.md §1): wake-up on change,
//! timeout with the same index, 404 blocking on a missing key, prefix indexes that include
//! deletions, and an index that is never 0.
#![allow(clippy::unwrap_used, clippy::panic)]

use std::time::{Duration, Instant};

use hashistack_twin::{Twin, TwinConfig};
use reqwest::StatusCode;
use serde_json::{Value, json};

struct Answer {
    status: StatusCode,
    index: u64,
    body: String,
    held: Duration,
}

async fn start() -> (Twin, reqwest::Client, String) {
    let twin = Twin::start(TwinConfig::default()).await.unwrap();
    let base = format!("http://{}", twin.consul_addr());
    (twin, reqwest::Client::new(), base)
}

async fn get(http: &reqwest::Client, url: String) -> Answer {
    let started = Instant::now();
    let resp = http.get(url).send().await.unwrap();
    let status = resp.status();
    let index = resp
        .headers()
        .get("X-Consul-Index")
        .unwrap_or_else(|| panic!("no X-Consul-Index on a read ({status})"))
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    let body = resp.text().await.unwrap();
    Answer {
        status,
        index,
        body,
        held: started.elapsed(),
    }
}

async fn put(http: &reqwest::Client, url: String, body: &str) {
    let resp = http.put(url).body(body.to_string()).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
}

async fn delete(http: &reqwest::Client, url: String) {
    let resp = http.delete(url).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
}

#[tokio::test]
async fn blocking_read_wakes_as_soon_as_the_key_changes() {
    let (twin, http, base) = start().await;
    put(&http, format!("{base}/v1/kv/cfg"), "v1").await;
    let first = get(&http, format!("{base}/v1/kv/cfg")).await;
    let watch = tokio::spawn({
        let (http, url) = (
            http.clone(),
            format!("{base}/v1/kv/cfg?index={}&wait=30s", first.index),
        );
        async move { get(&http, url).await }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        !watch.is_finished(),
        "a blocking read with the current index must block"
    );
    let written = Instant::now();
    put(&http, format!("{base}/v1/kv/cfg"), "v2").await;
    let woke = watch.await.unwrap();
    assert!(
        written.elapsed() < Duration::from_secs(1),
        "woke {:?} after the write",
        written.elapsed()
    );
    assert_eq!(woke.status, StatusCode::OK);
    assert!(woke.index > first.index);
    let v: Value = serde_json::from_str(&woke.body).unwrap();
    assert_eq!(v[0]["Value"], "djI=");
    twin.shutdown().await;
}

#[tokio::test]
async fn blocking_read_times_out_after_wait_with_the_same_index() {
    let (twin, http, base) = start().await;
    put(&http, format!("{base}/v1/kv/cfg"), "v1").await;
    let first = get(&http, format!("{base}/v1/kv/cfg")).await;
    let timed_out = get(
        &http,
        format!("{base}/v1/kv/cfg?index={}&wait=1000ms", first.index),
    )
    .await;
    assert_eq!(timed_out.status, StatusCode::OK);
    assert_eq!(timed_out.index, first.index);
    assert!(
        timed_out.held >= Duration::from_millis(1000),
        "held only {:?}",
        timed_out.held
    );
    // wait + at most wait/16 of jitter, plus scheduling slack
    assert!(
        timed_out.held < Duration::from_millis(1400),
        "held {:?}",
        timed_out.held
    );
    twin.shutdown().await;
}

#[tokio::test]
async fn missing_key_blocks_with_404_and_wakes_when_it_is_created() {
    let (twin, http, base) = start().await;
    let missing = get(&http, format!("{base}/v1/kv/later")).await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);
    assert!(missing.index >= 1);
    let still = get(
        &http,
        format!("{base}/v1/kv/later?index={}&wait=300ms", missing.index),
    )
    .await;
    assert_eq!(
        (still.status, still.index),
        (StatusCode::NOT_FOUND, missing.index)
    );
    assert!(still.held >= Duration::from_millis(300));
    let watch = tokio::spawn({
        let (http, url) = (
            http.clone(),
            format!("{base}/v1/kv/later?index={}&wait=30s", missing.index),
        );
        async move { get(&http, url).await }
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    put(&http, format!("{base}/v1/kv/later"), "here").await;
    let woke = tokio::time::timeout(Duration::from_secs(2), watch)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(woke.status, StatusCode::OK);
    assert!(woke.index > missing.index);
    twin.shutdown().await;
}

#[tokio::test]
async fn prefix_index_includes_deletions_so_a_delete_wakes_watchers() {
    let (twin, http, base) = start().await;
    put(&http, format!("{base}/v1/kv/traefik/a"), "1").await;
    put(&http, format!("{base}/v1/kv/traefik/b"), "2").await;
    let list = get(&http, format!("{base}/v1/kv/traefik?recurse=")).await;
    let watch = tokio::spawn({
        let (http, url) = (
            http.clone(),
            format!(
                "{base}/v1/kv/traefik?index={}&recurse=&wait=15000ms",
                list.index
            ),
        );
        async move { get(&http, url).await }
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    delete(&http, format!("{base}/v1/kv/traefik/b")).await;
    let woke = tokio::time::timeout(Duration::from_secs(2), watch)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(woke.status, StatusCode::OK);
    assert!(
        woke.index > list.index,
        "the tombstone raises the prefix index"
    );
    let entries: Value = serde_json::from_str(&woke.body).unwrap();
    assert_eq!(entries.as_array().unwrap().len(), 1);

    // Deleting the whole tree answers 404 with the tombstone index, above the previous one.
    delete(&http, format!("{base}/v1/kv/traefik?recurse")).await;
    let gone = get(&http, format!("{base}/v1/kv/traefik?recurse=")).await;
    assert_eq!(gone.status, StatusCode::NOT_FOUND);
    assert!(gone.index > woke.index);
    twin.shutdown().await;
}

#[tokio::test]
async fn writes_outside_the_prefix_do_not_wake_a_prefix_watch() {
    let (twin, http, base) = start().await;
    put(&http, format!("{base}/v1/kv/traefik/a"), "1").await;
    let list = get(&http, format!("{base}/v1/kv/traefik?recurse=")).await;
    let watch = tokio::spawn({
        let (http, url) = (
            http.clone(),
            format!(
                "{base}/v1/kv/traefik?index={}&recurse=&wait=800ms",
                list.index
            ),
        );
        async move { get(&http, url).await }
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    put(&http, format!("{base}/v1/kv/other/x"), "1").await;
    put(&http, format!("{base}/v1/kv/traefik/a"), "1").await; // identical rewrite: no index bump
    let answer = watch.await.unwrap();
    assert_eq!(answer.index, list.index);
    assert!(
        answer.held >= Duration::from_millis(800),
        "woke early after {:?}",
        answer.held
    );
    twin.shutdown().await;
}

#[tokio::test]
async fn reaped_tombstones_make_the_prefix_index_go_backwards() {
    let (twin, http, base) = start().await;
    put(&http, format!("{base}/v1/kv/p/a"), "1").await;
    put(&http, format!("{base}/v1/kv/p/zz"), "2").await;
    delete(&http, format!("{base}/v1/kv/p/zz")).await;
    let with_tombstone = get(&http, format!("{base}/v1/kv/p/?recurse")).await;
    twin.faults().reap_tombstones();
    let after = get(&http, format!("{base}/v1/kv/p/?recurse")).await;
    assert!(
        after.index < with_tombstone.index,
        "{} !< {}",
        after.index,
        with_tombstone.index
    );
    twin.shutdown().await;
}

#[tokio::test]
async fn every_read_endpoint_reports_an_index_of_at_least_one_and_blocks() {
    let (twin, http, base) = start().await;
    let (_, created) = {
        let resp = http
            .put(format!("{base}/v1/session/create"))
            .body("{}")
            .send()
            .await
            .unwrap();
        ((), resp.json::<Value>().await.unwrap())
    };
    let sid = created["ID"].as_str().unwrap().to_string();
    let reads = [
        "/v1/kv/missing".to_string(),
        "/v1/kv/missing?recurse".to_string(),
        "/v1/kv/?keys".to_string(),
        "/v1/catalog/services".to_string(),
        "/v1/catalog/service/consul".to_string(),
        "/v1/catalog/nodes".to_string(),
        "/v1/health/service/consul".to_string(),
        "/v1/health/state/any".to_string(),
        "/v1/health/checks/consul".to_string(),
        format!("/v1/session/info/{sid}"),
        "/v1/session/list".to_string(),
    ];
    let mut watches = Vec::new();
    for path in &reads {
        let now = get(&http, format!("{base}{path}")).await;
        assert!(now.index >= 1, "{path} reported index {}", now.index);
        let sep = if path.contains('?') { '&' } else { '?' };
        let url = format!("{base}{path}{sep}index={}&wait=400ms", now.index);
        let http = http.clone();
        let path = path.clone();
        watches.push(tokio::spawn(async move { (path, get(&http, url).await) }));
    }
    for w in watches {
        let (path, answer) = w.await.unwrap();
        assert!(
            answer.held >= Duration::from_millis(400),
            "{path} did not block: {:?}",
            answer.held
        );
    }
    twin.shutdown().await;
}

#[tokio::test]
async fn catalog_and_health_watches_wake_on_registration_and_check_changes() {
    let (twin, http, base) = start().await;
    let services = get(&http, format!("{base}/v1/catalog/services")).await;
    let checks = get(&http, format!("{base}/v1/health/state/any")).await;
    let w_services = tokio::spawn({
        let (http, url) = (
            http.clone(),
            format!("{base}/v1/catalog/services?index={}", services.index),
        );
        async move { get(&http, url).await }
    });
    let w_checks = tokio::spawn({
        let (http, url) = (
            http.clone(),
            format!("{base}/v1/health/state/any?index={}", checks.index),
        );
        async move { get(&http, url).await }
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    let reg = json!({
        "Node": "hashistack-twin", "Address": "127.0.0.1", "SkipNodeUpdate": true,
        "Service": {"ID": "web-1", "Service": "web", "Tags": ["traefik.enable=true"], "Port": 8080},
        "Check": {"CheckID": "service:web-1", "Name": "web", "Status": "passing", "ServiceID": "web-1"}
    });
    let resp = http
        .put(format!("{base}/v1/catalog/register"))
        .json(&reg)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let s = tokio::time::timeout(Duration::from_secs(2), w_services)
        .await
        .unwrap()
        .unwrap();
    let c = tokio::time::timeout(Duration::from_secs(2), w_checks)
        .await
        .unwrap()
        .unwrap();
    assert!(s.index > services.index && c.index > checks.index);
    assert!(
        s.body.contains("\"web\":[\"traefik.enable=true\"]"),
        "{}",
        s.body
    );

    // A check turning critical wakes health/service watchers of that service.
    let health = get(&http, format!("{base}/v1/health/service/web")).await;
    let w_health = tokio::spawn({
        let (http, url) = (
            http.clone(),
            format!(
                "{base}/v1/health/service/web?index={}&passing",
                health.index
            ),
        );
        async move { get(&http, url).await }
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    let crit = json!({
        "Node": "hashistack-twin", "SkipNodeUpdate": true,
        "Check": {"CheckID": "service:web-1", "Name": "web", "Status": "critical", "ServiceID": "web-1"}
    });
    http.put(format!("{base}/v1/catalog/register"))
        .json(&crit)
        .send()
        .await
        .unwrap();
    let h = tokio::time::timeout(Duration::from_secs(2), w_health)
        .await
        .unwrap()
        .unwrap();
    assert!(h.index > health.index);
    assert_eq!(h.body, "[]", "?passing drops the critical instance");
    twin.shutdown().await;
}

#[tokio::test]
async fn session_info_watch_wakes_when_the_session_is_destroyed() {
    let (twin, http, base) = start().await;
    let created: Value = http
        .put(format!("{base}/v1/session/create"))
        .body("{}")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let id = created["ID"].as_str().unwrap().to_string();
    let info = get(&http, format!("{base}/v1/session/info/{id}")).await;
    let watch = tokio::spawn({
        let (http, url) = (
            http.clone(),
            format!("{base}/v1/session/info/{id}?index={}", info.index),
        );
        async move { get(&http, url).await }
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    http.put(format!("{base}/v1/session/destroy/{id}"))
        .send()
        .await
        .unwrap();
    let woke = tokio::time::timeout(Duration::from_secs(2), watch)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(woke.body, "[]");
    twin.shutdown().await;
}

#[tokio::test]
async fn malformed_index_and_wait_are_400() {
    let (twin, http, base) = start().await;
    let resp = http
        .get(format!("{base}/v1/kv/a?index=abc"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    assert_eq!(resp.text().await.unwrap(), "Invalid index");
    let resp = http
        .get(format!("{base}/v1/kv/a?index=1&wait=soon"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    assert_eq!(resp.text().await.unwrap(), "Invalid wait time");
    twin.shutdown().await;
}

#[tokio::test]
async fn two_hundred_watchers_all_wake_on_one_write() {
    let (twin, http, base) = start().await;
    put(&http, format!("{base}/v1/kv/hot"), "0").await;
    let first = get(&http, format!("{base}/v1/kv/hot")).await;
    let mut watches = Vec::new();
    for _ in 0..200 {
        let (http, url) = (
            http.clone(),
            format!("{base}/v1/kv/hot?index={}&wait=30s", first.index),
        );
        watches.push(tokio::spawn(async move { get(&http, url).await }));
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    put(&http, format!("{base}/v1/kv/hot"), "1").await;
    let deadline = Duration::from_secs(3);
    for w in watches {
        let a = tokio::time::timeout(deadline, w)
            .await
            .expect("every watcher wakes")
            .unwrap();
        assert!(a.index > first.index);
    }
    twin.shutdown().await;
}
