//! The status page in a real browser: `proxy-operator dev` (the real binary, free ports), the
//! page opened in headless Chromium (Debian's `chromium`, driven over the DevTools protocol),
//! a screenshot saved under `target/artifacts/`, the phase visible, and after an edit of the
//! document the new rollout shown by the open page itself (server-sent events), no reload.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "support/mod.rs"]
mod support;

use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine as _;
use serde_json::{Value, json};
use support::{ChildGuard, eventually, free_port, repo_root, traefik_bin};

const BIN: &str = env!("CARGO_BIN_EXE_proxy-operator");
const INSTALL: &str = "Debian's chromium is missing: run scripts/bootstrap as root, or as root: \
                       apt-get update && apt-get install -y chromium (or set CHROMIUM to a Chromium binary)";

/// The browser binary; the test fails (never skips) with the fix when there is none.
fn chromium() -> PathBuf {
    if let Some(path) = std::env::var_os("CHROMIUM").filter(|p| !p.is_empty()) {
        return PathBuf::from(path);
    }
    for dir in std::env::var("PATH").unwrap_or_default().split(':') {
        let path = PathBuf::from(dir).join("chromium");
        if path.is_file() {
            return path;
        }
    }
    panic!("{INSTALL}");
}

/// A DevTools protocol session over a minimal WebSocket client (RFC 6455: client frames
/// masked, text frames only, no fragmentation: what Chromium's endpoint speaks).
struct Cdp {
    stream: TcpStream,
    next_id: u64,
}

impl Cdp {
    fn connect(ws_url: &str) -> Cdp {
        let rest = ws_url.strip_prefix("ws://").unwrap();
        let (host, path) = rest.split_at(rest.find('/').unwrap());
        let mut stream = TcpStream::connect(host).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(30)))
            .unwrap();
        write!(
            stream,
            "GET {path} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
        )
        .unwrap();
        let mut head = Vec::new();
        let mut byte = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") {
            stream.read_exact(&mut byte).unwrap();
            head.push(byte[0]);
        }
        let head = String::from_utf8_lossy(&head);
        assert!(
            head.starts_with("HTTP/1.1 101"),
            "no WebSocket upgrade: {head}"
        );
        Cdp { stream, next_id: 1 }
    }

    fn send_text(&mut self, text: &str) {
        let payload = text.as_bytes();
        let mut frame = vec![0x81u8];
        match payload.len() {
            n if n < 126 => frame.push(0x80 | u8::try_from(n).unwrap()),
            n if n <= 0xffff => {
                frame.push(0x80 | 126);
                frame.extend_from_slice(&u16::try_from(n).unwrap().to_be_bytes());
            }
            n => {
                frame.push(0x80 | 127);
                frame.extend_from_slice(&(n as u64).to_be_bytes());
            }
        }
        let mask = [0x1fu8, 0x2e, 0x3d, 0x4c];
        frame.extend_from_slice(&mask);
        frame.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
        self.stream.write_all(&frame).unwrap();
    }

    fn read_text(&mut self) -> String {
        let mut head = [0u8; 2];
        self.stream.read_exact(&mut head).unwrap();
        let len = match head[1] & 0x7f {
            126 => {
                let mut b = [0u8; 2];
                self.stream.read_exact(&mut b).unwrap();
                u64::from(u16::from_be_bytes(b))
            }
            127 => {
                let mut b = [0u8; 8];
                self.stream.read_exact(&mut b).unwrap();
                u64::from_be_bytes(b)
            }
            n => u64::from(n),
        };
        let mut payload = vec![0u8; usize::try_from(len).unwrap()];
        self.stream.read_exact(&mut payload).unwrap();
        assert_eq!(head[0] & 0x0f, 1, "a text frame");
        String::from_utf8(payload).unwrap()
    }

    /// Sends one command and returns its `result` (events in between are skipped).
    fn call(&mut self, method: &str, params: Value) -> Value {
        let id = self.next_id;
        self.next_id += 1;
        self.send_text(&json!({"id": id, "method": method, "params": params}).to_string());
        loop {
            let message: Value = serde_json::from_str(&self.read_text()).unwrap();
            if message["id"] == id {
                assert!(message.get("error").is_none(), "{method}: {message}");
                return message["result"].clone();
            }
        }
    }

    /// Evaluates `expression` in the page and returns its value.
    fn eval(&mut self, expression: &str) -> Value {
        let r = self.call(
            "Runtime.evaluate",
            json!({"expression": expression, "returnByValue": true}),
        );
        r["result"]["value"].clone()
    }

    fn screenshot(&mut self, name: &str) -> PathBuf {
        let r = self.call("Page.captureScreenshot", json!({"format": "png"}));
        let png = base64::engine::general_purpose::STANDARD
            .decode(r["data"].as_str().unwrap())
            .unwrap();
        assert!(png.starts_with(b"\x89PNG"), "a PNG");
        let dir = repo_root().join("target").join("artifacts");
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(name);
        std::fs::write(&path, png).unwrap();
        path
    }
}

/// `GET`/`PUT` on Chromium's DevTools HTTP endpoint.
fn devtools_http(port: u16, method: &str, path: &str) -> Value {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    // Chromium keeps the connection open whatever the request says: read what Content-Length
    // announces, no more.
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let mut reader = BufReader::new(stream);
    let mut length = 0;
    loop {
        let mut line = String::new();
        reader.read_line(&mut line).unwrap();
        if line.trim().is_empty() {
            break;
        }
        if let Some((name, value)) = line.split_once(':')
            && name.eq_ignore_ascii_case("content-length")
        {
            length = value.trim().parse().unwrap();
        }
    }
    let mut body = vec![0u8; length];
    reader.read_exact(&mut body).unwrap();
    serde_json::from_slice(&body)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&body)))
}

fn phase_and_rollouts(cdp: &mut Cdp) -> (String, u64) {
    let v = cdp.eval(
        "[document.getElementById('phase') ? document.getElementById('phase').textContent : '', \
          document.querySelectorAll('#history tr').length]",
    );
    (
        v[0].as_str().unwrap_or_default().to_owned(),
        v[1].as_u64().unwrap_or_default(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_status_page_shows_the_phase_and_follows_a_new_rollout_without_a_reload() {
    let browser_bin = chromium();
    let dir = tempfile::tempdir().unwrap();
    let (consul, nomad, http, status) = (free_port(), free_port(), free_port(), free_port());
    let mut cmd = Command::new(BIN);
    cmd.args(["dev", "--consul-port", &consul.to_string()])
        .args(["--nomad-port", &nomad.to_string()])
        .args(["--http-port", &http.to_string()])
        .args(["--http-addr", &format!("127.0.0.1:{status}")])
        .arg("--traefik-bin")
        .arg(traefik_bin())
        .env("RUST_LOG", "info");
    let dev = ChildGuard::spawn(cmd, &dir.path().join("dev.log"));
    let page_url = format!("http://127.0.0.1:{status}/");
    let printed = eventually(Duration::from_secs(60), || async {
        dev.log()
            .contains(&format!("status page:               {page_url}"))
            .then_some(())
    })
    .await;
    assert!(
        printed.is_some(),
        "dev never printed the status page URL:\n{}",
        dev.log()
    );
    assert!(
        dev.log()
            .contains(&format!("http://demo.localhost:{http}/")),
        "{}",
        dev.log()
    );
    let _ = rustls::crypto::ring::default_provider().install_default();
    let client = reqwest::Client::builder().no_proxy().build().unwrap();
    let api = format!("{page_url}api/status");
    let ready = eventually(Duration::from_secs(90), || async {
        let v: Value = client.get(&api).send().await.ok()?.json().await.ok()?;
        (v["phase"] == "Ready").then_some(v)
    })
    .await;
    let Some(ready) = ready else {
        panic!("dev never became Ready:\n{}", dev.log())
    };

    // The browser, with its DevTools endpoint on a free loopback port.
    let profile = tempfile::tempdir().unwrap();
    let mut browser = Command::new(&browser_bin);
    browser
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--hide-scrollbars",
            "--no-first-run",
            "--window-size=1280,1100",
            "--remote-debugging-port=0",
            "--remote-debugging-address=127.0.0.1",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .arg("about:blank")
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let mut child = browser
        .spawn()
        .unwrap_or_else(|e| panic!("{}: {e}; {INSTALL}", browser_bin.display()));
    let stderr = child.stderr.take().unwrap();
    let mut guard = BrowserGuard(child);
    let devtools_port = BufReader::new(stderr)
        .lines()
        .map_while(Result::ok)
        .find_map(|line| {
            let url = line.strip_prefix("DevTools listening on ws://127.0.0.1:")?;
            url.split('/').next()?.parse::<u16>().ok()
        })
        .expect("chromium printed its DevTools address");
    let target = devtools_http(devtools_port, "PUT", &format!("/json/new?{page_url}"));
    let mut cdp = Cdp::connect(target["webSocketDebuggerUrl"].as_str().unwrap());
    cdp.call("Page.enable", json!({}));
    cdp.call("Runtime.enable", json!({}));

    let deadline = Instant::now() + Duration::from_secs(30);
    let rollouts = loop {
        let (phase, rollouts) = phase_and_rollouts(&mut cdp);
        let live = cdp.eval("document.getElementById('conn').textContent");
        if phase == "Ready" && live == "live" {
            break rollouts;
        }
        assert!(
            Instant::now() < deadline,
            "the page never showed Ready live: {phase:?} {live}"
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    assert!(rollouts >= 1, "the first rollout is listed");
    let shot = cdp.screenshot("surface-status-page.png");
    eprintln!("screenshot: {}", shot.display());
    // Set in this document only: a reload would lose it.
    cdp.eval("window.__loadedOnce = 'yes'");

    // The edit: the starter document with a rate limit, PUT to the twin's KV.
    let config_file = dev
        .log()
        .lines()
        .find_map(|l| {
            l.trim()
                .strip_prefix("edit the config:  $EDITOR ")
                .map(str::to_owned)
        })
        .expect("dev printed the config file");
    let edited = std::fs::read_to_string(config_file.trim())
        .unwrap()
        .replace(
            "    # rateLimit:\n    #   average: 5\n    #   burst: 5\n",
            "    rateLimit:\n      average: 50\n      burst: 100\n",
        );
    assert!(edited.contains("    rateLimit:\n      average: 50"));
    // ACLs are on in dev: the management token sits next to the starter document.
    let token_file = std::path::Path::new(config_file.trim()).with_file_name("acl-token");
    let token = std::fs::read_to_string(&token_file).unwrap();
    client
        .put(format!(
            "http://127.0.0.1:{consul}/v1/kv/proxy-operator/config"
        ))
        .header("X-Consul-Token", token.trim())
        .body(edited)
        .send()
        .await
        .unwrap()
        .error_for_status()
        .unwrap();

    let deadline = Instant::now() + Duration::from_secs(90);
    let mut seen_progressing = false;
    loop {
        let (phase, now) = phase_and_rollouts(&mut cdp);
        seen_progressing |= phase == "Progressing";
        let policies = cdp.eval("document.getElementById('live').textContent");
        if phase == "Ready"
            && now == rollouts + 1
            && policies
                .as_str()
                .unwrap_or_default()
                .contains("rate limit: 50 requests")
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the open page never showed the new rollout: {phase} {now} rollouts\n{}",
            dev.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(
        cdp.eval("window.__loadedOnce"),
        json!("yes"),
        "the page updated itself, without a reload"
    );
    let after = cdp.screenshot("surface-status-page-after-edit.png");
    eprintln!(
        "screenshot: {} (saw Progressing: {seen_progressing})",
        after.display()
    );
    assert_ne!(
        ready["observedDigest"],
        client
            .get(&api)
            .send()
            .await
            .unwrap()
            .json::<Value>()
            .await
            .unwrap()["observedDigest"],
        "a new document was rolled out"
    );
    guard.stop();
    drop(dev);
}

/// Kills the browser (by PID) however the test ends.
struct BrowserGuard(std::process::Child);

impl BrowserGuard {
    fn stop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Drop for BrowserGuard {
    fn drop(&mut self) {
        self.stop();
    }
}
