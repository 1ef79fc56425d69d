//! Leader-election benchmark (`scripts/bench leader`): failover time after SIGTERM and after
//! SIGKILL with 3 candidate processes, and the idle request rate of 3 replicas.
//!
//! The example starts a twin on loopback and re-executes itself 3 times as `candidate`
//! children, each running `leader::Elector` with the real Consul client, as `run` does. Each
//! child prints its role whenever it changes; the parent timestamps those lines as they
//! arrive. A failover is the time from the signal to the first `leader` line of another
//! candidate. The killed candidate is then started again, so every kill sees 3 candidates.
//!
//! A SIGKILL comes at a random moment of the leader's renewal period (uniform over TTL/2,
//! waited out before the kill): killed right after an election, a leader's session is always
//! at its freshest and every failover would be the worst case.
//!
//! As under Nomad with the shipped job file, each candidate serves `/healthz` and has a Consul
//! service with an HTTP check (interval 2 s, timeout 1 s) registered in the twin's agent under
//! a Nomad-style service ID holding its allocation ID, before it starts; the twin's agent runs
//! the check. The elector finds the check by the allocation ID and binds its session to it, so
//! a SIGKILLed leader loses the lock when its check goes critical, not when the TTL runs out.
//! Between kills the killed candidate's service is deregistered (its allocation is gone) and
//! the replacement's registered, and the next kill waits until its check passes.
//!
//! A third series stops the leader as Nomad does (`nomad alloc stop`, a job update, a drain):
//! its service is deregistered first, which invalidates its session and starts lock-delay, and
//! only then is it sent SIGTERM.
//!
//! Requests are counted at the twin (its request counter and log), so renewals, blocking
//! queries and anything else are all seen, whoever sent them.
//!
//! ```text
//! scripts/bench leader [--kills 20] [--ttl 15s]... [--lock-delay 1s] [--idle 120s]
//! ```
#![forbid(unsafe_code)]

use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, bail};
use hashistack_twin::{Api, RequestRecord, Twin, TwinConfig};
use proxy_operator::consul::ConsulClient;
use proxy_operator::leader::{Elector, ElectorConfig, SessionCheck};
use proxy_operator::spec::{format_duration, parse_duration};
use proxy_operator::transport::{Api as ClientApi, ClientConfig};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::mpsc;
use tokio::time::Instant;

const PREFIX: &str = "bench";
const CANDIDATES: usize = 3;
/// The check of the shipped job file (`nomad-jobs/proxy-operator.nomad.hcl`).
const CHECK_INTERVAL: &str = "2s";
const CHECK_TIMEOUT: &str = "1s";

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    if args.first().map(String::as_str) == Some("candidate") {
        rt.block_on(candidate(&args[1..]))
    } else {
        rt.block_on(bench(Options::parse(&args)?))
    }
}

// === the candidate child ===

/// `candidate <consul addr> <ttl> <lock-delay> <alloc id> <http port>`: serves `/healthz` on
/// the port and elects, bound to its allocation's check, until SIGTERM, which shuts the
/// elector down as `run` does (release the key, destroy the session).
async fn candidate(args: &[String]) -> anyhow::Result<()> {
    let [addr, ttl, lock_delay, name, port] = args else {
        bail!(
            "usage: bench_leader candidate <consul addr> <ttl> <lock-delay> <alloc id> <http port>"
        );
    };
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port.parse::<u16>()?)).await?;
    tokio::spawn(serve_healthz(listener));
    let _ = rustls::crypto::ring::default_provider().install_default();
    let config = ClientConfig::for_address(ClientApi::Consul, &format!("http://{addr}"))?;
    let consul = ConsulClient::new(&config)?;
    let node = consul.agent_self().await?.config.node_name;
    let config = ElectorConfig {
        ttl: parse_duration(ttl).map_err(anyhow::Error::msg)?,
        lock_delay: parse_duration(lock_delay).map_err(anyhow::Error::msg)?,
        allocation: Some(name.clone()),
        session_check: SessionCheck::Allocation(name.clone()),
        ..ElectorConfig::new(PREFIX, node)
    };
    let handle = Elector::spawn(consul, config);
    let mut rx = handle.subscribe();
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let mut last = "";
    loop {
        let role = rx.borrow_and_update().role();
        if role != last {
            println!("ROLE {role}");
            last = role;
        }
        tokio::select! {
            changed = rx.changed() => if changed.is_err() { return Ok(()) },
            _ = term.recv() => {
                handle.shutdown().await;
                println!("ROLE stopped");
                return Ok(());
            }
        }
    }
}

/// Answers 200 to every request, as the operator's `/healthz` does while it runs.
async fn serve_healthz(listener: tokio::net::TcpListener) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    while let Ok((mut conn, _)) = listener.accept().await {
        tokio::spawn(async move {
            let mut buf = [0u8; 1024];
            let _ = conn.read(&mut buf).await;
            let _ = conn
                .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok")
                .await;
        });
    }
}

// === the parent ===

struct Options {
    kills: usize,
    ttls: Vec<Duration>,
    lock_delay: Duration,
    idle: Duration,
}

impl Options {
    fn parse(args: &[String]) -> anyhow::Result<Options> {
        let mut o = Options {
            kills: 20,
            ttls: Vec::new(),
            lock_delay: Duration::from_secs(1),
            idle: Duration::from_secs(120),
        };
        let mut it = args.iter();
        while let Some(flag) = it.next() {
            let value = it.next().with_context(|| format!("{flag} needs a value"))?;
            let duration = || parse_duration(value).map_err(anyhow::Error::msg);
            match flag.as_str() {
                "--kills" => o.kills = value.parse().context("--kills")?,
                "--ttl" => o.ttls.push(duration()?),
                "--lock-delay" => o.lock_delay = duration()?,
                "--idle" => o.idle = duration()?,
                other => bail!(
                    "unknown flag {other}; flags: --kills N, --ttl D (repeatable), --lock-delay D, --idle D"
                ),
            }
        }
        if o.ttls.is_empty() {
            o.ttls.push(proxy_operator::leader::DEFAULT_TTL);
        }
        Ok(o)
    }
}

/// A role line of a candidate: (slot, generation, role, when it arrived).
type Event = (usize, u64, String, Instant);

struct Fleet {
    twin: Twin,
    ttl: Duration,
    lock_delay: Duration,
    children: Vec<Child>,
    generations: Vec<u64>,
    /// The allocation ID of each slot's current candidate.
    allocs: Vec<String>,
    http: reqwest::Client,
    roles: Vec<String>,
    events: mpsc::UnboundedReceiver<Event>,
    send: mpsc::UnboundedSender<Event>,
}

impl Fleet {
    async fn start(ttl: Duration, lock_delay: Duration) -> anyhow::Result<Fleet> {
        let twin = Twin::start(TwinConfig::default()).await?;
        let (send, events) = mpsc::unbounded_channel();
        let mut fleet = Fleet {
            twin,
            ttl,
            lock_delay,
            children: Vec::new(),
            generations: vec![0; CANDIDATES],
            allocs: vec![String::new(); CANDIDATES],
            http: reqwest::Client::builder().no_proxy().build()?,
            roles: vec![String::new(); CANDIDATES],
            events,
            send,
        };
        for slot in 0..CANDIDATES {
            let child = fleet.spawn(slot).await?;
            fleet.children.push(child);
        }
        fleet.settle(Duration::from_secs(30)).await?;
        for slot in 0..CANDIDATES {
            fleet.passing(slot, Duration::from_secs(10)).await?;
        }
        Ok(fleet)
    }

    /// The Nomad-style service ID of an allocation's operator service (`MakeAllocServiceID`).
    fn service_id(alloc: &str) -> String {
        format!("_nomad-task-{alloc}-group-operator-proxy-operator-http")
    }

    async fn consul_put(&self, path: &str, body: Option<serde_json::Value>) -> anyhow::Result<()> {
        let mut request = self
            .http
            .put(format!("http://{}{path}", self.twin.consul_addr()));
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await?;
        if !response.status().is_success() {
            bail!(
                "PUT {path}: {} {}",
                response.status(),
                response.text().await?
            );
        }
        Ok(())
    }

    /// Registers the slot's service and HTTP check in the twin's agent, as Nomad does when
    /// the allocation starts (the check starts critical).
    async fn register(&self, slot: usize, port: u16) -> anyhow::Result<()> {
        let alloc = &self.allocs[slot];
        let body = serde_json::json!({
            "ID": Self::service_id(alloc),
            "Name": "proxy-operator",
            "Address": "127.0.0.1",
            "Port": port,
            "Checks": [{
                "CheckID": format!("_nomad-check-{alloc}"),
                "Name": "healthz",
                "HTTP": format!("http://127.0.0.1:{port}/healthz"),
                "Interval": CHECK_INTERVAL,
                "Timeout": CHECK_TIMEOUT,
            }],
        });
        self.consul_put("/v1/agent/service/register", Some(body))
            .await
    }

    /// Deregisters the slot's service, as Nomad does when the allocation is gone.
    async fn deregister(&self, slot: usize) -> anyhow::Result<()> {
        let path = format!(
            "/v1/agent/service/deregister/{}",
            Self::service_id(&self.allocs[slot])
        );
        self.consul_put(&path, None).await
    }

    /// Waits until the slot's check passes (Nomad's healthy allocation).
    async fn passing(&self, slot: usize, timeout: Duration) -> anyhow::Result<()> {
        let check = format!("_nomad-check-{}", self.allocs[slot]);
        let url = format!("http://{}/v1/agent/checks", self.twin.consul_addr());
        let deadline = Instant::now() + timeout;
        loop {
            let checks: serde_json::Value = self.http.get(&url).send().await?.json().await?;
            if checks[&check]["Status"] == "passing" {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!("check {check} never passed: {}", checks[&check]);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn spawn(&mut self, slot: usize) -> anyhow::Result<Child> {
        self.generations[slot] += 1;
        self.roles[slot].clear();
        let generation = self.generations[slot];
        self.allocs[slot] = uuid::Uuid::new_v4().to_string();
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        self.register(slot, port).await?;
        let mut child = Command::new(std::env::current_exe()?)
            .args([
                "candidate".to_owned(),
                self.twin.consul_addr().to_string(),
                format_duration(self.ttl),
                format_duration(self.lock_delay),
                self.allocs[slot].clone(),
                port.to_string(),
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .context("start a candidate")?;
        let stdout = child.stdout.take().context("candidate stdout")?;
        let send = self.send.clone();
        tokio::spawn(async move {
            let mut lines = BufReader::new(stdout).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                if let Some(role) = line.strip_prefix("ROLE ") {
                    let _ = send.send((slot, generation, role.to_owned(), Instant::now()));
                }
            }
        });
        Ok(child)
    }

    /// Applies events until `done` holds; returns the instant of the event that made it hold.
    async fn until(
        &mut self,
        timeout: Duration,
        done: impl Fn(&[String], usize) -> bool,
    ) -> anyhow::Result<Instant> {
        let deadline = Instant::now() + timeout;
        loop {
            let event = tokio::time::timeout_at(deadline, self.events.recv())
                .await
                .with_context(|| {
                    format!(
                        "no settled election within {timeout:?}: roles {:?}",
                        self.roles
                    )
                })?
                .context("event channel closed")?;
            let (slot, generation, role, at) = event;
            if generation != self.generations[slot] {
                continue;
            }
            self.roles[slot] = role;
            if done(&self.roles, slot) {
                return Ok(at);
            }
        }
    }

    /// Waits for one leader and the others following.
    async fn settle(&mut self, timeout: Duration) -> anyhow::Result<()> {
        if settled(&self.roles) {
            return Ok(());
        }
        self.until(timeout, |roles, _| settled(roles)).await?;
        Ok(())
    }

    fn leader(&self) -> anyhow::Result<usize> {
        self.roles
            .iter()
            .position(|r| r == "leader")
            .context("no leader")
    }

    /// Kills the leader with `signal` and returns the time until another candidate leads;
    /// then restarts the killed one and waits until it follows.
    async fn failover(&mut self, signal: Signal) -> anyhow::Result<Duration> {
        if let Signal::Kill = signal {
            let phase = rand::random_range(0.0..0.5);
            tokio::time::sleep(self.ttl.mul_f64(phase)).await;
        }
        let old = self.leader()?;
        let start = Instant::now();
        match signal {
            Signal::Term | Signal::Stop => {
                if let Signal::Stop = signal {
                    // Nomad deregisters the group's services before it signals the task
                    // (allocrunner groupServiceHook.PreKill): the check's deregistration
                    // invalidates the session first, and lock-delay starts.
                    self.deregister(old).await?;
                }
                let pid = self.children[old].id().context("leader pid")?;
                let status = std::process::Command::new("kill")
                    .args(["-TERM", &pid.to_string()])
                    .status()?;
                if !status.success() {
                    bail!("kill -TERM {pid} failed");
                }
            }
            Signal::Kill => self.children[old].start_kill()?,
        }
        // Up to 2 × TTL for Consul to reap a killed leader's session, plus lock-delay.
        let budget = self.ttl * 2 + self.lock_delay + Duration::from_secs(10);
        let at = self
            .until(budget, |roles, slot| slot != old && roles[slot] == "leader")
            .await?;
        let failover = at.saturating_duration_since(start);
        self.children[old].wait().await?;
        if !matches!(signal, Signal::Stop) {
            self.deregister(old).await?;
        }
        self.children[old] = self.spawn(old).await?;
        self.settle(Duration::from_secs(30)).await?;
        self.passing(old, Duration::from_secs(10)).await?;
        Ok(failover)
    }

    async fn stop(mut self) {
        for child in &mut self.children {
            if let Some(pid) = child.id() {
                let _ = std::process::Command::new("kill")
                    .args(["-TERM", &pid.to_string()])
                    .status();
            }
            let _ = tokio::time::timeout(Duration::from_secs(12), child.wait()).await;
            let _ = child.start_kill();
            let _ = child.wait().await;
        }
        self.twin.shutdown().await;
    }
}

fn settled(roles: &[String]) -> bool {
    roles.iter().filter(|r| *r == "leader").count() == 1
        && roles.iter().filter(|r| *r == "follower").count() == CANDIDATES - 1
}

#[derive(Clone, Copy)]
enum Signal {
    Term,
    Kill,
    /// A stop by Nomad: services deregistered, then SIGTERM.
    Stop,
}

/// What 3 idle replicas sent in a window, per minute.
struct Idle {
    renewals: f64,
    blocking: f64,
    other: f64,
    other_uris: Vec<String>,
}

async fn idle(fleet: &Fleet, window: Duration) -> anyhow::Result<Idle> {
    // Let the last election's requests finish.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let before = fleet.twin.requests(Api::Consul);
    tokio::time::sleep(window).await;
    let after = fleet.twin.requests(Api::Consul);
    let n = usize::try_from(after - before)?;
    let log = fleet.twin.faults().request_log(Api::Consul);
    if n > log.len() {
        bail!("{n} requests in the window, more than the twin's log keeps");
    }
    let per_minute = |count: usize| count as f64 * 60.0 / window.as_secs_f64();
    let window_log = &log[log.len() - n..];
    let is_renewal = |r: &&RequestRecord| r.uri.starts_with("/v1/session/renew/");
    let is_blocking = |r: &&RequestRecord| r.method == "GET" && r.uri.contains("index=");
    let renewals = window_log.iter().filter(is_renewal).count();
    let blocking = window_log.iter().filter(is_blocking).count();
    let other_uris: Vec<String> = window_log
        .iter()
        .filter(|r| !is_renewal(r) && !is_blocking(r))
        .map(|r| format!("{} {}", r.method, r.uri))
        .collect();
    Ok(Idle {
        renewals: per_minute(renewals),
        blocking: per_minute(blocking),
        other: per_minute(other_uris.len()),
        other_uris,
    })
}

fn ms(d: Duration) -> String {
    if d < Duration::from_secs(1) {
        format!("{} ms", d.as_millis())
    } else {
        format!("{:.2} s", d.as_secs_f64())
    }
}

struct Series {
    ttl: Duration,
    term: Vec<Duration>,
    kill: Vec<Duration>,
    stop: Vec<Duration>,
    idle: Idle,
}

fn stats(samples: &[Duration]) -> (Duration, Duration, Duration) {
    let mut sorted = samples.to_vec();
    sorted.sort();
    let n = sorted.len();
    let median = if n % 2 == 1 {
        sorted[n / 2]
    } else {
        (sorted[n / 2 - 1] + sorted[n / 2]) / 2
    };
    (sorted[0], median, sorted[n - 1])
}

async fn series(o: &Options, ttl: Duration) -> anyhow::Result<Series> {
    let mut fleet = Fleet::start(ttl, o.lock_delay).await?;
    eprintln!(
        "ttl {}: 3 candidates elected; idle for {}",
        format_duration(ttl),
        format_duration(o.idle)
    );
    let idle = idle(&fleet, o.idle).await?;
    let mut term = Vec::new();
    let mut kill = Vec::new();
    let mut stop = Vec::new();
    for (signal, samples, name) in [
        (Signal::Term, &mut term, "SIGTERM"),
        (Signal::Kill, &mut kill, "SIGKILL"),
        (Signal::Stop, &mut stop, "stop"),
    ] {
        for i in 0..o.kills {
            let d = fleet.failover(signal).await?;
            eprintln!(
                "ttl {} {name} {}/{}: {}",
                format_duration(ttl),
                i + 1,
                o.kills,
                ms(d)
            );
            samples.push(d);
        }
    }
    fleet.stop().await;
    Ok(Series {
        ttl,
        term,
        kill,
        stop,
        idle,
    })
}

async fn bench(o: Options) -> anyhow::Result<()> {
    if o.kills == 0 {
        bail!("--kills must be at least 1");
    }
    let mut all = Vec::new();
    for &ttl in &o.ttls {
        all.push(series(&o, ttl).await?);
    }
    println!(
        "\nleader failover: 3 candidate processes, real Consul client, twin on loopback (reaps a TTL session 2 x TTL after its last renewal, as Consul does); session bound to each candidate's HTTP check (interval {CHECK_INTERVAL}, timeout {CHECK_TIMEOUT}, run by the twin's agent); lock-delay {}",
        format_duration(o.lock_delay)
    );
    println!(
        "{:<6} {:<8} {:>6} {:>10} {:>10} {:>10}  goal",
        "ttl", "signal", "kills", "min", "median", "max"
    );
    for s in &all {
        for (name, samples, goal) in [
            ("SIGTERM", &s.term, "< 1 s".to_owned()),
            (
                "SIGKILL",
                &s.kill,
                format!("< {} (TTL + 1 s)", ms(s.ttl + Duration::from_secs(1))),
            ),
            (
                "stop",
                &s.stop,
                "none (Nomad's stop: deregister, then SIGTERM; about lock-delay)".to_owned(),
            ),
        ] {
            let (min, median, max) = stats(samples);
            println!(
                "{:<6} {:<8} {:>6} {:>10} {:>10} {:>10}  {goal}",
                format_duration(s.ttl),
                name,
                samples.len(),
                ms(min),
                ms(median),
                ms(max)
            );
        }
    }
    println!(
        "\nidle requests of 3 replicas (1 leader, 2 followers), per minute, window {}",
        format_duration(o.idle)
    );
    println!(
        "{:<6} {:>9} {:>14} {:>7} {:>16} {:>15} {:>19}  goal",
        "ttl",
        "renewals",
        "blocking reqs",
        "other",
        "beyond blocking",
        "per replica",
        "leader (renewals)"
    );
    for s in &all {
        let beyond = s.idle.renewals + s.idle.other;
        println!(
            "{:<6} {:>9.1} {:>14.1} {:>7.1} {:>16.1} {:>15.1} {:>19.1}  <= 4 per replica beyond blocking",
            format_duration(s.ttl),
            s.idle.renewals,
            s.idle.blocking,
            s.idle.other,
            beyond,
            beyond / CANDIDATES as f64,
            s.idle.renewals
        );
        if !s.idle.other_uris.is_empty() {
            println!("       other requests: {:?}", s.idle.other_uris);
        }
    }
    Ok(())
}
