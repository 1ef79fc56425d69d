//! The measuring side of `bench_proxies`: where processes run (CPU pinning, `GOMAXPROCS`),
//! what `/proc` says about the proxy (CPU time, RSS), the `wrk` runs, and what the proxy's live
//! configuration runs per request. Included by `bench_proxies.rs` only.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use proxy_operator::spec::ProxyKind;
use serde_json::Value;

/// The CPU the proxy is pinned to.
pub const PROXY_CPU: usize = 0;
/// The CPU everything else is pinned to: wrk, and this process (backend, twin, operator).
pub const LOAD_CPU: usize = 1;

/// A program on PATH, or exit naming the Debian package that has it.
pub fn on_path(name: &str, package: &str) -> PathBuf {
    std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default())
        .map(|d| d.join(name))
        .find(|p| p.is_file())
        .unwrap_or_else(|| {
            eprintln!(
                "{name} is missing: as root run `apt-get update && apt-get install -y {package}`"
            );
            std::process::exit(2);
        })
}

/// `Cpus_allowed_list` of a process or thread (`/proc/<pid>/status`).
pub fn cpus_allowed(proc_dir: &Path) -> String {
    std::fs::read_to_string(proc_dir.join("status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("Cpus_allowed_list:"))
        .map(|v| v.trim().to_owned())
        .unwrap_or_default()
}

/// Pins this process (only its main thread exists yet, so every later thread, wrk and the proxy
/// job's launcher inherit it) to [`LOAD_CPU`].
pub fn pin_self() {
    let cpus = std::thread::available_parallelism().map_or(1, usize::from);
    if cpus < 2 {
        eprintln!("pinning needs 2 CPUs, this host offers {cpus}: run with --no-pin");
        std::process::exit(2);
    }
    let out = Command::new(on_path("taskset", "util-linux"))
        .args(["-p", "-c", &LOAD_CPU.to_string()])
        .arg(std::process::id().to_string())
        .output()
        .expect("run taskset");
    let now = cpus_allowed(Path::new("/proc/self"));
    if !out.status.success() || now != LOAD_CPU.to_string() {
        eprintln!(
            "taskset could not pin this process to CPU {LOAD_CPU} (now {now:?}): {}",
            String::from_utf8_lossy(&out.stderr)
        );
        std::process::exit(2);
    }
}

/// The command the proxy job runs: the binary itself, or when pinning a wrapper that pins it to
/// [`PROXY_CPU`] with `GOMAXPROCS=1` (the job's environment is the twin's minimal task env, so
/// the wrapper is where both can be set before the Go runtime starts).
pub fn proxy_command(scratch: &Path, proxy: ProxyKind, bin: &Path, pin: bool) -> String {
    if !pin {
        return bin.display().to_string();
    }
    let taskset = on_path("taskset", "util-linux");
    let wrapper = scratch.join(format!("pinned-{}", proxy.as_str()));
    let script = format!(
        "#!/bin/sh\nGOMAXPROCS=1 exec '{}' -c {PROXY_CPU} '{}' \"$@\"\n",
        taskset.display(),
        bin.display()
    );
    std::fs::write(&wrapper, script).unwrap();
    std::fs::set_permissions(&wrapper, std::fs::Permissions::from_mode(0o755)).unwrap();
    wrapper.display().to_string()
}

/// What the proxy process runs with: the CPUs of its threads and its `GOMAXPROCS`.
pub fn proxy_placement(pid: u32) -> String {
    let dir = PathBuf::from(format!("/proc/{pid}"));
    let mut cpus: Vec<String> = std::fs::read_dir(dir.join("task"))
        .map(|d| d.flatten().map(|t| cpus_allowed(&t.path())).collect())
        .unwrap_or_default();
    let threads = cpus.len();
    cpus.sort();
    cpus.dedup();
    let gomaxprocs = std::fs::read(dir.join("environ"))
        .unwrap_or_default()
        .split(|b| *b == 0)
        .find_map(|kv| kv.strip_prefix(b"GOMAXPROCS="))
        .map_or(
            "unset (Go default: the CPUs it may run on)".to_owned(),
            |v| String::from_utf8_lossy(v).into_owned(),
        );
    format!(
        "{threads} threads on CPUs {}, GOMAXPROCS {gomaxprocs}",
        cpus.join(" / ")
    )
}

/// utime + stime of a process in seconds (`/proc/<pid>/stat` fields 14 and 15).
pub fn cpu_seconds(pid: u32, ticks_per_s: f64) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name, which may hold spaces: state is field 3.
    let rest: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let utime: f64 = rest.get(11)?.parse().ok()?;
    let stime: f64 = rest.get(12)?.parse().ok()?;
    Some((utime + stime) / ticks_per_s)
}

/// Busy and total clock ticks of one CPU so far (`/proc/stat`): busy is user, nice, system, irq,
/// softirq and steal; total adds idle and iowait.
pub fn cpu_ticks(cpu: usize) -> Option<(f64, f64)> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let line = stat
        .lines()
        .find(|l| l.starts_with(&format!("cpu{cpu} ")))?;
    let t: Vec<f64> = line
        .split_whitespace()
        .skip(1)
        .take(8)
        .map(|v| v.parse().unwrap_or(0.0))
        .collect();
    let busy = t
        .iter()
        .enumerate()
        .filter(|(i, _)| ![3, 4].contains(i))
        .map(|(_, v)| v)
        .sum();
    Some((busy, t.iter().sum()))
}

/// `getconf CLK_TCK`, the unit of `/proc` CPU times.
pub fn clock_ticks() -> f64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
        .unwrap_or(100.0)
}

pub fn rss_kib(pid: u32) -> Option<u64> {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

/// One wrk run's figures.
#[derive(Clone, Copy, Default)]
pub struct Load {
    /// Requests per second over the run.
    pub rps: f64,
    /// Requests completed.
    pub requests: f64,
    /// Latency percentiles, microseconds.
    pub p50_us: f64,
    /// 95th percentile.
    pub p95_us: f64,
    /// 99th percentile.
    pub p99_us: f64,
    /// Non-2xx answers plus socket errors.
    pub bad: u64,
}

/// Prints the figures wrk's Lua `done` hook sees, on one line (latencies in microseconds).
const WRK_DONE: &str = r#"
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format("BENCH %d %d %d %d %d %d\n", summary.requests, summary.duration,
    latency:percentile(50), latency:percentile(95), latency:percentile(99),
    e.status + e.connect + e.read + e.write + e.timeout))
end
"#;

/// The load generator and its two scripts: saturating, and paced to `--paced-rate`.
pub struct Wrk {
    bin: PathBuf,
    /// The script of the saturating runs.
    pub saturate: PathBuf,
    /// The script of the paced runs.
    pub paced: PathBuf,
    /// The pause each connection takes before each request in the paced run.
    pub pause_ms: u64,
    threads: u32,
    connections: u32,
    host: String,
}

impl Wrk {
    /// Writes the scripts into `scratch`; the paced one offers about `paced_rate` req/s.
    pub fn new(scratch: &Path, threads: u32, connections: u32, paced_rate: u64, host: &str) -> Wrk {
        let saturate = scratch.join("saturate.lua");
        std::fs::write(&saturate, WRK_DONE).unwrap();
        // wrk's delay hook takes whole milliseconds: the offered rate is connections / pause.
        let pause_ms = (u64::from(connections) * 1000 / paced_rate.max(1)).max(1);
        let paced = scratch.join("paced.lua");
        std::fs::write(
            &paced,
            format!("{WRK_DONE}\ndelay = function() return {pause_ms} end\n"),
        )
        .unwrap();
        Wrk {
            bin: on_path("wrk", "wrk"),
            saturate,
            paced,
            pause_ms,
            threads,
            connections,
            host: host.to_owned(),
        }
    }

    /// One run of `secs` against `port` with `script`, `Accept-Encoding: gzip`.
    pub fn run(&self, script: &Path, port: u16, secs: u64) -> Load {
        let out = Command::new(&self.bin)
            .arg(format!("-t{}", self.threads))
            .arg(format!("-c{}", self.connections))
            .arg(format!("-d{secs}s"))
            .arg("-s")
            .arg(script)
            .args([
                "-H",
                &format!("Host: {}", self.host),
                "-H",
                "Accept-Encoding: gzip",
            ])
            .arg(format!("http://127.0.0.1:{port}/"))
            .output()
            .expect("run wrk");
        let text = String::from_utf8_lossy(&out.stdout);
        let line = text
            .lines()
            .find_map(|l| l.strip_prefix("BENCH "))
            .unwrap_or_else(|| {
                panic!(
                    "wrk printed no figures: {text}{}",
                    String::from_utf8_lossy(&out.stderr)
                )
            });
        let n: Vec<f64> = line
            .split_whitespace()
            .map(|v| v.parse().unwrap())
            .collect();
        Load {
            rps: n[0] / (n[1] / 1e6),
            requests: n[0],
            p50_us: n[2],
            p95_us: n[3],
            p99_us: n[4],
            bad: n[5] as u64,
        }
    }
}

/// What the proxy runs per request, from its live configuration: Traefik's entry point chain
/// (each member's type and settings); Caddy's handlers on the plain HTTP server, in order.
pub fn rendered_chain(proxy: ProxyKind, live: &Value, web: u16) -> String {
    match proxy {
        ProxyKind::Traefik => {
            let mws = &live["middlewares"];
            let chain = mws["proxy-operator-policy@consul"]["chain"]["middlewares"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            chain
                .iter()
                .filter_map(Value::as_str)
                .map(|name| {
                    // rawdata keys a middleware by its qualified name, and holds its settings
                    // under the one key that is neither its status nor its users.
                    let m = &mws[name];
                    let settings = m
                        .as_object()
                        .and_then(|o| {
                            o.iter()
                                .find(|(k, _)| !["status", "usedBy", "error"].contains(&k.as_str()))
                        })
                        .map_or("?".to_owned(), |(k, v)| format!("{k} {v}"));
                    format!("{} {settings}", name.trim_end_matches("@consul"))
                })
                .collect::<Vec<_>>()
                .join(" → ")
        }
        ProxyKind::Caddy => {
            let servers = live["apps"]["http"]["servers"]
                .as_object()
                .cloned()
                .unwrap_or_default();
            let port = format!(":{web}");
            servers
                .values()
                .find(|s| {
                    s["listen"].as_array().is_some_and(|l| {
                        l.iter()
                            .any(|a| a.as_str().is_some_and(|a| a.ends_with(&port)))
                    })
                })
                .map_or("no server on the web port".into(), |s| {
                    caddy_routes(&s["routes"])
                })
        }
    }
}

/// Caddy routes as `match? handler+handler → …`, subroutes in brackets.
fn caddy_routes(routes: &Value) -> String {
    let empty = Vec::new();
    routes
        .as_array()
        .unwrap_or(&empty)
        .iter()
        .map(|r| {
            let matchers = r["match"].as_array().map_or(String::new(), |sets| {
                let sets: Vec<String> = sets
                    .iter()
                    .map(|s| {
                        s.as_object().map_or(String::new(), |o| {
                            o.keys().cloned().collect::<Vec<_>>().join("&")
                        })
                    })
                    .collect();
                format!("[{}] ", sets.join("|"))
            });
            let handlers: Vec<String> = r["handle"]
                .as_array()
                .unwrap_or(&empty)
                .iter()
                .map(|h| match h["handler"].as_str() {
                    Some("subroute") => format!("subroute{{{}}}", caddy_routes(&h["routes"])),
                    Some("headers") => {
                        let set = h["response"]["set"].as_object().map_or(0, |m| m.len());
                        let deferred = if h["response"]["deferred"] == true {
                            ", deferred"
                        } else {
                            ""
                        };
                        format!("headers(set {set}{deferred})")
                    }
                    Some(other) => other.to_owned(),
                    None => "?".into(),
                })
                .collect();
            format!("{matchers}{}", handlers.join("+"))
        })
        .collect::<Vec<_>>()
        .join(" → ")
}
