//! The local executor: runs each allocation of a `raw_exec`/`exec` task group as real child
//! processes, like a Nomad client with those drivers.
//!
//! Per allocation it builds Nomad's directory layout (`<alloc>/alloc/{logs,data,tmp}`,
//! `<alloc>/<task>/{local,secrets,tmp}`), assigns ports, renders templates, starts each task with
//! the `NOMAD_*` environment, applies the restart policy, runs the service checks, registers the
//! services (Nomad-native or in Consul) and reports allocation health to the deployment.
//!
//! Interpolation: `${NAME}` in `Config.command`, `Config.args`, `Env` values and template
//! `DestPath` is replaced when NAME is one of the task's `NOMAD_*` variables, a key of the task's
//! `Env`, or one of `node.unique.id`, `node.unique.name`, `node.datacenter`, `node.region`,
//! `node.class`, `attr.unique.network.ip-address`; anything else is left as written (as Nomad
//! does). Templates: only literal `EmbeddedTmpl` data, with `{{ env "NAME" }}` replaced by the
//! task environment (delimiters from `LeftDelim`/`RightDelim`); other template functions are
//! written verbatim.

use super::Inner;
use super::jobspec::{arr, dur, s, u};
use super::reaper::{GroupRecord, signal_named};
use super::store::{AllocPort, Plan, ServiceReg, TaskEvent};
use super::util::{go_duration, now_nanos, rfc3339};
use rustix::process::Signal;
use serde_json::{Value, json};
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::watch;

/// Drivers this twin's node has.
const DRIVERS: &[&str] = &["raw_exec", "exec"];

/// Tracks the allocation runners.
#[derive(Debug)]
pub struct Executor {
    base_dir: PathBuf,
    temporary: bool,
    runners: Mutex<HashMap<String, Runner>>,
}

impl Drop for Executor {
    fn drop(&mut self) {
        // Runner tasks own the process guards; when the runtime drops them the groups are killed.
        // A scratch directory in $TMPDIR goes with the executor.
        if self.temporary {
            let _ = std::fs::remove_dir_all(&self.base_dir);
        }
    }
}

#[derive(Debug)]
struct Runner {
    stop: watch::Sender<bool>,
    done: watch::Receiver<bool>,
    handle: tokio::task::JoinHandle<()>,
}

impl Executor {
    /// An executor keeping allocation directories under `base_dir`; a `temporary` one is removed
    /// when the executor goes away.
    /// Before anything starts, it kills the task processes a dead twin left behind (see `reaper`).
    pub fn new(base_dir: PathBuf, temporary: bool) -> Executor {
        super::reaper::take_over(&base_dir, temporary);
        Executor {
            base_dir,
            temporary,
            runners: Mutex::new(HashMap::new()),
        }
    }

    fn runners(&self) -> std::sync::MutexGuard<'_, HashMap<String, Runner>> {
        self.runners.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Starts and stops allocations as the scheduler decided.
    pub fn apply(&self, inner: &Arc<Inner>, plan: Plan) {
        let Ok(rt) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let mut runners = self.runners();
        for id in &plan.stop {
            if let Some(r) = runners.get(id) {
                let _ = r.stop.send(true);
            }
        }
        for (id, waits) in plan.start {
            let wait_on: Vec<watch::Receiver<bool>> = waits
                .iter()
                .filter_map(|w| runners.get(w).map(|r| r.done.clone()))
                .collect();
            let (stop_tx, stop_rx) = watch::channel(false);
            let (done_tx, done_rx) = watch::channel(false);
            let ctx = AllocCtx {
                inner: inner.clone(),
                alloc_id: id.clone(),
                base_dir: self.base_dir.clone(),
            };
            let handle = rt.spawn(async move {
                run_alloc(ctx, wait_on, stop_rx).await;
                let _ = done_tx.send(true);
            });
            runners.insert(
                id,
                Runner {
                    stop: stop_tx,
                    done: done_rx,
                    handle,
                },
            );
        }
    }

    /// Stops every allocation and waits for its processes to be gone.
    pub async fn shutdown(&self) {
        let runners: Vec<(String, Runner)> = self.runners().drain().collect();
        for (_, r) in &runners {
            let _ = r.stop.send(true);
        }
        for (_, r) in runners {
            let mut done = r.done.clone();
            let finished =
                tokio::time::timeout(Duration::from_secs(40), done.wait_for(|d| *d)).await;
            if finished.is_err() {
                // Aborting drops the process guards, which kill the process groups.
                r.handle.abort();
            }
        }
    }

    /// Removes the scratch directory when it was a temporary one.
    pub fn remove_scratch_dir(&self) {
        if self.temporary {
            let _ = std::fs::remove_dir_all(&self.base_dir);
        }
    }
}

struct AllocCtx {
    inner: Arc<Inner>,
    alloc_id: String,
    base_dir: PathBuf,
}

/// What every task of an allocation shares.
#[derive(Clone)]
struct Shared {
    inner: Arc<Inner>,
    alloc_id: String,
    alloc_dir: PathBuf,
    job: Value,
    group: Value,
    ports: Vec<AllocPort>,
    alloc_name: String,
}

fn event(
    inner: &Inner,
    alloc_id: &str,
    task: &str,
    ev: TaskEvent,
    f: impl FnOnce(&mut super::store::TaskState),
) {
    inner.write(|st| {
        st.update_alloc(alloc_id, |a| {
            let ts = a.task_states.entry(task.to_string()).or_default();
            ts.events.push(ev);
            // Nomad keeps the last 10 events per task.
            if ts.events.len() > 10 {
                let excess = ts.events.len() - 10;
                ts.events.drain(..excess);
            }
            f(ts);
        })
    });
}

async fn run_alloc(
    ctx: AllocCtx,
    waits: Vec<watch::Receiver<bool>>,
    mut stop: watch::Receiver<bool>,
) {
    for mut w in waits {
        let _ = w.wait_for(|d| *d).await;
    }
    let Some(alloc) = ctx.inner.read(|st| st.allocs.get(&ctx.alloc_id).cloned()) else {
        return;
    };
    let group = alloc.group();
    let tasks: Vec<Value> = arr(&group, "Tasks").to_vec();
    for t in &tasks {
        event(
            &ctx.inner,
            &ctx.alloc_id,
            s(t, "Name"),
            TaskEvent::new("Received", "Task received by client"),
            |_| {},
        );
    }
    if *stop.borrow() {
        for t in &tasks {
            event(
                &ctx.inner,
                &ctx.alloc_id,
                s(t, "Name"),
                TaskEvent::new("Killed", "Task successfully killed"),
                |ts| {
                    ts.state = "dead".into();
                    ts.finished_at = rfc3339(now_nanos());
                },
            );
        }
        return;
    }
    if let Some(bad) = tasks.iter().find(|t| !DRIVERS.contains(&s(t, "Driver"))) {
        let driver = s(bad, "Driver").to_string();
        let msg =
            format!("missing drivers: the twin's node has only raw_exec and exec, not {driver:?}");
        for t in &tasks {
            let mut ev = TaskEvent::new("Driver Failure", msg.clone());
            ev.driver_error = msg.clone();
            ev.fails_task = true;
            event(&ctx.inner, &ctx.alloc_id, s(t, "Name"), ev, |ts| {
                ts.state = "dead".into();
                ts.failed = true;
                ts.finished_at = rfc3339(now_nanos());
            });
        }
        let plan = ctx.inner.write(|st| {
            st.update_alloc(&ctx.alloc_id, |a| {
                a.client_description = "Failed tasks".into()
            });
            st.set_alloc_health(&ctx.alloc_id, false)
        });
        ctx.inner.executor.apply(&ctx.inner, plan);
        return;
    }
    let ports = match assign_ports(&group) {
        Ok(p) => p,
        Err(e) => {
            for t in &tasks {
                let mut ev =
                    TaskEvent::new("Setup Failure", format!("failed to assign ports: {e}"));
                ev.setup_error = e.to_string();
                ev.fails_task = true;
                event(&ctx.inner, &ctx.alloc_id, s(t, "Name"), ev, |ts| {
                    ts.state = "dead".into();
                    ts.failed = true;
                });
            }
            return;
        }
    };
    ctx.inner
        .write(|st| st.update_alloc(&ctx.alloc_id, |a| a.ports = ports.clone()));
    let alloc_dir = ctx.base_dir.join(&ctx.alloc_id);
    for sub in ["alloc/logs", "alloc/data", "alloc/tmp"] {
        let _ = std::fs::create_dir_all(alloc_dir.join(sub));
    }
    let shared = Shared {
        inner: ctx.inner.clone(),
        alloc_id: ctx.alloc_id.clone(),
        alloc_dir: alloc_dir.clone(),
        job: alloc.job.clone(),
        group: group.clone(),
        ports: ports.clone(),
        alloc_name: alloc.name.clone(),
    };
    let (task_stop_tx, task_stop_rx) = watch::channel(false);
    let mut task_handles = Vec::new();
    for t in tasks.clone() {
        let sh = shared.clone();
        let rx = task_stop_rx.clone();
        task_handles.push(tokio::spawn(async move { run_task(sh, t, rx).await }));
    }

    let services = collect_services(&shared);
    let check_status: Arc<Mutex<BTreeMap<String, String>>> = Arc::new(Mutex::new(BTreeMap::new()));
    let mut check_handles: Vec<tokio::task::JoinHandle<()>> = Vec::new();
    let mut registered = false;
    let update = group.get("Update").cloned().unwrap_or(Value::Null);
    let health_mode = if update.is_null() {
        "checks".to_string()
    } else {
        s(&update, "HealthCheck").to_string()
    };
    let min_healthy = dur(&update, "MinHealthyTime");
    let healthy_deadline = if update.is_null() {
        Duration::from_secs(300)
    } else {
        dur(&update, "HealthyDeadline")
    };
    let started = Instant::now();
    let mut healthy_since: Option<Instant> = None;
    let mut health_reported = false;
    let mut tick = tokio::time::interval(Duration::from_millis(50));
    loop {
        tokio::select! {
            _ = stop.changed() => {}
            _ = tick.tick() => {}
        }
        let stopping = *stop.borrow();
        let Some(alloc) = ctx.inner.read(|st| st.allocs.get(&ctx.alloc_id).cloned()) else {
            break;
        };
        let states = &alloc.task_states;
        let all_running = !states.is_empty() && states.values().all(|t| t.state == "running");
        let all_dead = states.values().all(|t| t.state == "dead");
        let any_failed = states.values().any(|t| t.failed);
        if all_running && !registered && !stopping {
            registered = true;
            for svc in &services {
                register_service(&shared, svc, &check_status).await;
                for check in &svc.checks {
                    check_handles.push(tokio::spawn(run_check(
                        shared.clone(),
                        svc.clone(),
                        check.clone(),
                        check_status.clone(),
                    )));
                }
            }
        }
        if !alloc.deployment_id.is_empty() && !health_reported && !stopping {
            let checks_ok = {
                let map = check_status.lock().unwrap_or_else(|p| p.into_inner());
                services
                    .iter()
                    .flat_map(|sv| sv.checks.iter())
                    .all(|c| map.get(&c.id).is_some_and(|st| st == "passing"))
            };
            let healthy_now = match health_mode.as_str() {
                "task_states" => all_running,
                "manual" => false,
                _ => all_running && checks_ok,
            };
            if any_failed {
                health_reported = true;
                let plan = ctx
                    .inner
                    .write(|st| st.set_alloc_health(&ctx.alloc_id, false));
                ctx.inner.executor.apply(&ctx.inner, plan);
            } else if health_mode != "manual" {
                if healthy_now {
                    let since = *healthy_since.get_or_insert_with(Instant::now);
                    if since.elapsed() >= min_healthy {
                        health_reported = true;
                        let plan = ctx
                            .inner
                            .write(|st| st.set_alloc_health(&ctx.alloc_id, true));
                        ctx.inner.executor.apply(&ctx.inner, plan);
                    }
                } else {
                    healthy_since = None;
                }
                if !health_reported && started.elapsed() >= healthy_deadline {
                    health_reported = true;
                    let plan = ctx
                        .inner
                        .write(|st| st.set_alloc_health(&ctx.alloc_id, false));
                    ctx.inner.executor.apply(&ctx.inner, plan);
                }
            }
        }
        if stopping || all_dead {
            break;
        }
    }
    for h in &check_handles {
        h.abort();
    }
    if registered {
        for svc in &services {
            deregister_service(&shared, svc).await;
        }
    }
    let _ = task_stop_tx.send(true);
    for h in task_handles {
        let _ = h.await;
    }
}

// === ports ===

fn assign_ports(group: &Value) -> std::io::Result<Vec<AllocPort>> {
    let mut ports = Vec::new();
    for net in arr(group, "Networks") {
        for p in arr(net, "ReservedPorts") {
            ports.push(AllocPort {
                label: s(p, "Label").into(),
                value: u(p, "Value") as u16,
                to: p.get("To").and_then(Value::as_i64).unwrap_or(0),
                reserved: true,
            });
        }
        for p in arr(net, "DynamicPorts") {
            // Bind-then-release: the port was free a moment ago, like Nomad's dynamic range pick.
            let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
            let value = listener.local_addr()?.port();
            ports.push(AllocPort {
                label: s(p, "Label").into(),
                value,
                to: p.get("To").and_then(Value::as_i64).unwrap_or(0),
                reserved: false,
            });
        }
    }
    Ok(ports)
}

fn port_for(ports: &[AllocPort], label: &str) -> u16 {
    if let Some(p) = ports.iter().find(|p| p.label == label) {
        return p.value;
    }
    label.parse().unwrap_or(0)
}

// === environment and interpolation ===

fn task_env(sh: &Shared, task: &Value) -> BTreeMap<String, String> {
    let task_name = s(task, "Name");
    let task_dir = sh.alloc_dir.join(task_name);
    let (node_id, node_name, dc) = sh.inner.read(|st| {
        (
            st.node_id.clone(),
            st.node_name.clone(),
            st.datacenter.clone(),
        )
    });
    let mut env = BTreeMap::new();
    let mut put = |k: String, v: String| {
        env.insert(k, v);
    };
    put(
        "NOMAD_ALLOC_DIR".into(),
        sh.alloc_dir.join("alloc").display().to_string(),
    );
    put(
        "NOMAD_TASK_DIR".into(),
        task_dir.join("local").display().to_string(),
    );
    put(
        "NOMAD_SECRETS_DIR".into(),
        task_dir.join("secrets").display().to_string(),
    );
    put("NOMAD_ALLOC_ID".into(), sh.alloc_id.clone());
    put(
        "NOMAD_SHORT_ALLOC_ID".into(),
        sh.alloc_id.chars().take(8).collect(),
    );
    put("NOMAD_ALLOC_NAME".into(), sh.alloc_name.clone());
    let index = sh
        .alloc_name
        .rsplit('[')
        .next()
        .unwrap_or("0")
        .trim_end_matches(']')
        .to_string();
    put("NOMAD_ALLOC_INDEX".into(), index);
    put("NOMAD_JOB_NAME".into(), s(&sh.job, "Name").into());
    put("NOMAD_JOB_ID".into(), s(&sh.job, "ID").into());
    put("NOMAD_JOB_PARENT_ID".into(), s(&sh.job, "ParentID").into());
    put("NOMAD_GROUP_NAME".into(), s(&sh.group, "Name").into());
    put("NOMAD_TASK_NAME".into(), task_name.into());
    put("NOMAD_NAMESPACE".into(), s(&sh.job, "Namespace").into());
    put("NOMAD_REGION".into(), s(&sh.job, "Region").into());
    put("NOMAD_DC".into(), dc);
    put("NOMAD_NODE_ID".into(), node_id);
    put("NOMAD_NODE_NAME".into(), node_name);
    let res = task.get("Resources").cloned().unwrap_or(Value::Null);
    put("NOMAD_CPU_LIMIT".into(), u(&res, "CPU").to_string());
    put("NOMAD_MEMORY_LIMIT".into(), u(&res, "MemoryMB").to_string());
    for p in &sh.ports {
        let l = &p.label;
        put(format!("NOMAD_PORT_{l}"), p.value.to_string());
        put(format!("NOMAD_HOST_PORT_{l}"), p.value.to_string());
        put(format!("NOMAD_IP_{l}"), "127.0.0.1".into());
        put(format!("NOMAD_HOST_IP_{l}"), "127.0.0.1".into());
        put(format!("NOMAD_ADDR_{l}"), format!("127.0.0.1:{}", p.value));
        put(
            format!("NOMAD_HOST_ADDR_{l}"),
            format!("127.0.0.1:{}", p.value),
        );
        put(format!("NOMAD_ALLOC_PORT_{l}"), p.value.to_string());
    }
    for meta in [sh.job.get("Meta"), sh.group.get("Meta"), task.get("Meta")]
        .into_iter()
        .flatten()
    {
        if let Some(m) = meta.as_object() {
            for (k, v) in m {
                let value = v.as_str().unwrap_or_default().to_string();
                put(
                    format!("NOMAD_META_{}", k.replace(['.', '-'], "_")),
                    value.clone(),
                );
                put(format!("NOMAD_META_{k}"), value);
            }
        }
    }
    let base = env.clone();
    if let Some(m) = task.get("Env").and_then(Value::as_object) {
        for (k, v) in m {
            let value = interpolate(v.as_str().unwrap_or_default(), &base, &sh.inner);
            env.insert(k.clone(), value);
        }
    }
    env
}

fn interpolate(text: &str, env: &BTreeMap<String, String>, inner: &Inner) -> String {
    let mut out = String::new();
    let mut rest = text;
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let Some(end) = after.find('}') else {
            out.push_str(&rest[start..]);
            return out;
        };
        let name = &after[..end];
        let value = env.get(name).cloned().or_else(|| {
            inner.read(|st| match name {
                "node.unique.id" => Some(st.node_id.clone()),
                "node.unique.name" => Some(st.node_name.clone()),
                "node.datacenter" => Some(st.datacenter.clone()),
                "node.region" => Some("global".into()),
                "node.class" => Some(String::new()),
                "attr.unique.network.ip-address" => Some("127.0.0.1".into()),
                _ => None,
            })
        });
        match value {
            Some(v) => out.push_str(&v),
            None => out.push_str(&rest[start..start + 2 + end + 1]),
        }
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    out
}

fn render_template(data: &str, left: &str, right: &str, env: &BTreeMap<String, String>) -> String {
    let mut out = String::new();
    let mut rest = data;
    while let Some(start) = rest.find(left) {
        let after = &rest[start + left.len()..];
        let Some(end) = after.find(right) else {
            break;
        };
        let expr = after[..end]
            .trim()
            .trim_start_matches('-')
            .trim_end_matches('-')
            .trim();
        let replaced = expr
            .strip_prefix("env")
            .map(str::trim)
            .and_then(|q| q.strip_prefix('"').and_then(|q| q.strip_suffix('"')))
            .map(|name| env.get(name).cloned().unwrap_or_default());
        out.push_str(&rest[..start]);
        match replaced {
            Some(v) => out.push_str(&v),
            None => out.push_str(&rest[start..start + left.len() + end + right.len()]),
        }
        rest = &after[end + right.len()..];
    }
    out.push_str(rest);
    out
}

fn within(base: &Path, rel: &str) -> Option<PathBuf> {
    let rel = Path::new(rel);
    let mut out = base.to_path_buf();
    for c in rel.components() {
        match c {
            std::path::Component::Normal(p) => out.push(p),
            std::path::Component::CurDir => {}
            std::path::Component::RootDir => {}
            _ => return None,
        }
    }
    Some(out)
}

fn write_templates(
    task_dir: &Path,
    task: &Value,
    env: &BTreeMap<String, String>,
    inner: &Inner,
) -> Result<(), String> {
    for t in arr(task, "Templates") {
        let dest = interpolate(s(t, "DestPath"), env, inner);
        if dest.is_empty() {
            return Err("template has no destination".into());
        }
        if !s(t, "SourcePath").is_empty() && s(t, "EmbeddedTmpl").is_empty() {
            return Err(format!(
                "template source {:?}: only literal data is supported by the twin",
                s(t, "SourcePath")
            ));
        }
        let left = if s(t, "LeftDelim").is_empty() {
            "{{"
        } else {
            s(t, "LeftDelim")
        };
        let right = if s(t, "RightDelim").is_empty() {
            "}}"
        } else {
            s(t, "RightDelim")
        };
        let body = render_template(s(t, "EmbeddedTmpl"), left, right, env);
        let path = within(task_dir, &dest)
            .ok_or_else(|| format!("template destination {dest:?} escapes the task directory"))?;
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)
                .map_err(|e| format!("failed to create {}: {e}", parent.display()))?;
        }
        std::fs::write(&path, body)
            .map_err(|e| format!("failed to write {}: {e}", path.display()))?;
        let perms = u32::from_str_radix(
            if s(t, "Perms").is_empty() {
                "0644"
            } else {
                s(t, "Perms")
            },
            8,
        )
        .unwrap_or(0o644);
        use std::os::unix::fs::PermissionsExt;
        let _ = std::fs::set_permissions(&path, std::fs::Permissions::from_mode(perms));
    }
    Ok(())
}

// === tasks ===

async fn stopped(rx: &mut watch::Receiver<bool>) {
    // The guard `wait_for` returns is not Send; drop it before the caller's next await.
    let _ = rx.wait_for(|v| *v).await.map(|_| ());
}

enum Exit {
    Code(i64, i64),
    Stopped,
}

async fn run_task(sh: Shared, task: Value, mut stop: watch::Receiver<bool>) {
    let inner = sh.inner.clone();
    let name = s(&task, "Name").to_string();
    let task_dir = sh.alloc_dir.join(&name);
    event(
        &inner,
        &sh.alloc_id,
        &name,
        TaskEvent::new("Task Setup", "Building Task Directory"),
        |_| {},
    );
    for sub in ["local", "secrets", "tmp"] {
        let _ = std::fs::create_dir_all(task_dir.join(sub));
    }
    let env = task_env(&sh, &task);
    if let Err(e) = write_templates(&task_dir, &task, &env, &inner) {
        let mut ev = TaskEvent::new("Setup Failure", format!("failed to render template: {e}"));
        ev.setup_error = e;
        ev.fails_task = true;
        event(&inner, &sh.alloc_id, &name, ev, |ts| {
            ts.state = "dead".into();
            ts.failed = true;
            ts.finished_at = rfc3339(now_nanos());
        });
        return;
    }
    let restart = task.get("RestartPolicy").cloned().unwrap_or(Value::Null);
    let attempts = u(&restart, "Attempts");
    let interval = dur(&restart, "Interval");
    let delay = dur(&restart, "Delay");
    let mode = s(&restart, "Mode").to_string();
    let batch = matches!(s(&sh.job, "Type"), "batch" | "sysbatch");
    let kill_timeout = dur(&task, "KillTimeout");
    let kill_signal = match s(&task, "KillSignal") {
        "" => Some(Signal::INT),
        sig => signal_named(sig),
    };
    let mut window_start = Instant::now();
    let mut count = 0u64;
    loop {
        if *stop.borrow() {
            break;
        }
        let exit = run_process(
            &sh,
            &task,
            &task_dir,
            &env,
            &mut stop,
            kill_timeout,
            kill_signal,
        )
        .await;
        let (code, signal) = match exit {
            Exit::Stopped => break,
            Exit::Code(c, sig) => (c, sig),
        };
        let mut term = TaskEvent::new(
            "Terminated",
            format!(
                "Exit Code: {code}{}",
                if signal != 0 {
                    format!(", Signal: {signal}")
                } else {
                    String::new()
                }
            ),
        );
        term.exit_code = code;
        term.signal = signal;
        term.details.insert("exit_code".into(), code.to_string());
        event(&inner, &sh.alloc_id, &name, term, |_| {});
        if batch && code == 0 {
            event(
                &inner,
                &sh.alloc_id,
                &name,
                TaskEvent::new("Not Restarting", "Task completed successfully"),
                |ts| {
                    ts.state = "dead".into();
                    ts.finished_at = rfc3339(now_nanos());
                },
            );
            return;
        }
        if window_start.elapsed() > interval {
            window_start = Instant::now();
            count = 0;
        }
        count += 1;
        let wait = if count <= attempts {
            let mut ev = TaskEvent::new(
                "Restarting",
                format!("Task restarting in {}", go_duration(delay)),
            );
            ev.restart_reason = "Restart within policy".into();
            ev.start_delay = delay.as_nanos() as i64;
            event(&inner, &sh.alloc_id, &name, ev, |ts| {
                ts.state = "pending".into();
                ts.restarts += 1;
                ts.last_restart = rfc3339(now_nanos());
            });
            delay
        } else if mode == "delay" {
            let until_window_end = interval.saturating_sub(window_start.elapsed()) + delay;
            let mut ev = TaskEvent::new(
                "Restarting",
                format!(
                    "Exceeded allowed attempts, applying a delay - Task restarting in {}",
                    go_duration(until_window_end)
                ),
            );
            ev.restart_reason = "Exceeded allowed attempts, applying a delay".into();
            ev.start_delay = until_window_end.as_nanos() as i64;
            event(&inner, &sh.alloc_id, &name, ev, |ts| {
                ts.state = "pending".into();
                ts.restarts += 1;
                ts.last_restart = rfc3339(now_nanos());
            });
            window_start = Instant::now() + until_window_end;
            count = 0;
            until_window_end
        } else {
            let msg = format!(
                "Exceeded allowed attempts {attempts} in interval {} and mode is \"fail\"",
                go_duration(interval)
            );
            let mut ev = TaskEvent::new("Not Restarting", msg.clone());
            ev.restart_reason = msg;
            ev.fails_task = true;
            event(&inner, &sh.alloc_id, &name, ev, |ts| {
                ts.state = "dead".into();
                ts.failed = true;
                ts.finished_at = rfc3339(now_nanos());
            });
            return;
        };
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = stopped(&mut stop) => break,
        }
    }
    event(
        &inner,
        &sh.alloc_id,
        &name,
        TaskEvent::new("Killed", "Task successfully killed"),
        |ts| {
            ts.state = "dead".into();
            ts.finished_at = rfc3339(now_nanos());
        },
    );
}

async fn run_process(
    sh: &Shared,
    task: &Value,
    task_dir: &Path,
    env: &BTreeMap<String, String>,
    stop: &mut watch::Receiver<bool>,
    kill_timeout: Duration,
    kill_signal: Option<Signal>,
) -> Exit {
    let inner = &sh.inner;
    let name = s(task, "Name");
    let config = task.get("Config").cloned().unwrap_or(Value::Null);
    let command = interpolate(s(&config, "command"), env, inner);
    let args: Vec<String> = arr(&config, "args")
        .iter()
        .map(|a| interpolate(a.as_str().unwrap_or_default(), env, inner))
        .collect();
    let logs = sh.alloc_dir.join("alloc").join("logs");
    let open = |suffix: &str| {
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(logs.join(format!("{name}.{suffix}.0")))
    };
    let spawned = match (command.is_empty(), open("stdout"), open("stderr")) {
        (true, _, _) => Err("missing command in task config".to_string()),
        (false, Ok(out), Ok(err)) => {
            let mut cmd = tokio::process::Command::new(&command);
            cmd.args(&args)
                .envs(env)
                .current_dir(task_dir)
                .stdin(std::process::Stdio::null())
                .stdout(out)
                .stderr(err)
                .process_group(0)
                .kill_on_drop(true);
            cmd.spawn()
                .map_err(|e| format!("failed to launch command with executor: {e}"))
        }
        (false, Err(e), _) | (false, _, Err(e)) => Err(format!("failed to open task log: {e}")),
    };
    let mut child = match spawned {
        Ok(c) => c,
        Err(msg) => {
            let mut ev = TaskEvent::new("Driver Failure", msg.clone());
            ev.driver_error = msg;
            event(inner, &sh.alloc_id, name, ev, |_| {});
            return Exit::Code(-1, 0);
        }
    };
    // Dropping the record kills the whole group, so no task outlives its runner even when a test
    // panics; the file it writes lets the next twin reap the group if this one dies first.
    let guard = child.id().map(|pgid| GroupRecord::new(&sh.alloc_dir, pgid));
    event(
        inner,
        &sh.alloc_id,
        name,
        TaskEvent::new("Started", "Task started by client"),
        |ts| {
            ts.state = "running".into();
            ts.started_at = rfc3339(now_nanos());
        },
    );
    let status = tokio::select! {
        st = child.wait() => st,
        _ = stopped(stop) => {
            let mut ev = TaskEvent::new("Killing", format!("Sent interrupt. Waiting {} before force killing", go_duration(kill_timeout)));
            ev.kill_timeout = kill_timeout.as_nanos() as u64;
            event(inner, &sh.alloc_id, name, ev, |_| {});
            if let (Some(g), Some(sig)) = (&guard, kill_signal) {
                g.signal(sig);
            }
            if tokio::time::timeout(kill_timeout, child.wait()).await.is_err() {
                if let Some(g) = &guard {
                    g.signal(Signal::KILL);
                }
                let _ = child.wait().await;
            }
            // Reap stray members of the group too.
            drop(guard);
            return Exit::Stopped;
        }
    };
    // The main process is gone; take any background children it left with it.
    drop(guard);
    use std::os::unix::process::ExitStatusExt;
    match status {
        Ok(st) => Exit::Code(
            st.code().map(i64::from).unwrap_or(-1),
            st.signal().map(i64::from).unwrap_or(0),
        ),
        Err(_) => Exit::Code(-1, 0),
    }
}

// === services and checks ===

#[derive(Clone, Debug)]
struct Svc {
    id: String,
    name: String,
    provider: String,
    tags: Vec<String>,
    meta: Value,
    address: String,
    port: u16,
    checks: Vec<Check>,
}

#[derive(Clone, Debug)]
struct Check {
    id: String,
    name: String,
    kind: String,
    path: String,
    method: String,
    protocol: String,
    port: u16,
    interval: Duration,
    timeout: Duration,
    initial: String,
}

fn collect_services(sh: &Shared) -> Vec<Svc> {
    let mut out = Vec::new();
    let group_name = s(&sh.group, "Name");
    let mut add = |svc: &Value, owner: String| {
        let name = s(svc, "Name").to_string();
        let label = s(svc, "PortLabel");
        let port = port_for(&sh.ports, label);
        let id = format!("_nomad-task-{}-{owner}-{name}-{label}", sh.alloc_id);
        let checks = arr(svc, "Checks")
            .iter()
            .enumerate()
            .map(|(i, c)| {
                let check_label = if s(c, "PortLabel").is_empty() {
                    label
                } else {
                    s(c, "PortLabel")
                };
                let check_name = if s(c, "Name").is_empty() {
                    format!("service: \"{name}\" check")
                } else {
                    s(c, "Name").to_string()
                };
                Check {
                    id: format!("_nomad-check-{}-{owner}-{name}-{i}", sh.alloc_id),
                    name: check_name,
                    kind: s(c, "Type").to_string(),
                    path: s(c, "Path").to_string(),
                    method: s(c, "Method").to_string(),
                    protocol: s(c, "Protocol").to_string(),
                    port: port_for(&sh.ports, check_label),
                    interval: dur(c, "Interval").max(Duration::from_millis(200)),
                    timeout: if dur(c, "Timeout").is_zero() {
                        Duration::from_secs(2)
                    } else {
                        dur(c, "Timeout")
                    },
                    initial: if s(c, "InitialStatus").is_empty() {
                        "critical".into()
                    } else {
                        s(c, "InitialStatus").into()
                    },
                }
            })
            .collect();
        out.push(Svc {
            id,
            name,
            provider: s(svc, "Provider").to_string(),
            tags: arr(svc, "Tags")
                .iter()
                .filter_map(|t| t.as_str().map(String::from))
                .collect(),
            meta: svc.get("Meta").cloned().unwrap_or(Value::Null),
            address: if s(svc, "Address").is_empty() {
                "127.0.0.1".into()
            } else {
                s(svc, "Address").into()
            },
            port,
            checks,
        });
    };
    for svc in arr(&sh.group, "Services") {
        add(svc, format!("group-{group_name}"));
    }
    for t in arr(&sh.group, "Tasks") {
        for svc in arr(t, "Services") {
            add(svc, s(t, "Name").to_string());
        }
    }
    out
}

async fn register_service(sh: &Shared, svc: &Svc, statuses: &Arc<Mutex<BTreeMap<String, String>>>) {
    {
        let mut map = statuses.lock().unwrap_or_else(|p| p.into_inner());
        for c in &svc.checks {
            map.entry(c.id.clone()).or_insert_with(|| c.initial.clone());
        }
    }
    if svc.provider == "nomad" {
        let (node_id, dc) = sh
            .inner
            .read(|st| (st.node_id.clone(), st.datacenter.clone()));
        let reg = ServiceReg {
            id: svc.id.clone(),
            service_name: svc.name.clone(),
            namespace: s(&sh.job, "Namespace").into(),
            node_id,
            datacenter: dc,
            job_id: s(&sh.job, "ID").into(),
            alloc_id: sh.alloc_id.clone(),
            tags: svc.tags.clone(),
            address: svc.address.clone(),
            port: svc.port,
            create_index: 0,
            modify_index: 0,
        };
        sh.inner.write(|st| st.upsert_service(reg));
    } else {
        consul_register(sh, svc, statuses).await;
    }
}

async fn deregister_service(sh: &Shared, svc: &Svc) {
    if svc.provider == "nomad" {
        sh.inner.write(|st| st.remove_service(&svc.id));
    } else {
        let node = sh.inner.read(|st| st.node_name.clone());
        let body = json!({"Node": node, "ServiceID": svc.id});
        let _ = consul_put(sh, "/v1/catalog/deregister", &body).await;
    }
}

async fn consul_put(sh: &Shared, path: &str, body: &Value) -> Result<(), reqwest::Error> {
    let url = format!("http://{}{path}", sh.inner.config.consul_http_addr);
    let mut req = sh.inner.http.put(url).json(body);
    if let Some(token) = &sh.inner.config.acl_token {
        req = req.header("X-Consul-Token", token);
    }
    req.send().await?.error_for_status()?;
    Ok(())
}

async fn consul_register(sh: &Shared, svc: &Svc, statuses: &Arc<Mutex<BTreeMap<String, String>>>) {
    let (node, dc) = sh
        .inner
        .read(|st| (st.node_name.clone(), st.datacenter.clone()));
    let status_of = |id: &str| {
        statuses
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(id)
            .cloned()
            .unwrap_or_else(|| "critical".into())
    };
    let checks: Vec<Value> = svc
        .checks
        .iter()
        .map(|c| {
            let target = check_target(c);
            let mut definition =
                json!({"Interval": go_duration(c.interval), "Timeout": go_duration(c.timeout)});
            if let Some(o) = definition.as_object_mut() {
                if c.kind == "http" {
                    o.insert("HTTP".into(), json!(target));
                    o.insert(
                        "Method".into(),
                        json!(if c.method.is_empty() {
                            "GET"
                        } else {
                            &c.method
                        }),
                    );
                } else {
                    o.insert("TCP".into(), json!(target));
                }
            }
            json!({
                "Node": node,
                "CheckID": c.id,
                "Name": c.name,
                "Status": status_of(&c.id),
                "ServiceID": svc.id,
                "Output": "",
                "Type": c.kind,
                "Definition": definition,
            })
        })
        .collect();
    let mut meta = svc.meta.clone();
    if meta.is_null() {
        meta = json!({});
    }
    if let Some(o) = meta.as_object_mut() {
        o.insert("external-source".into(), json!("nomad"));
    }
    let body = json!({
        "Node": node,
        "Address": "127.0.0.1",
        "Datacenter": dc,
        "Service": {
            "ID": svc.id,
            "Service": svc.name,
            "Tags": svc.tags,
            "Address": svc.address,
            "Port": svc.port,
            "Meta": meta,
        },
        "Checks": checks,
    });
    if let Err(e) = consul_put(sh, "/v1/catalog/register", &body).await {
        tracing::warn!(service = %svc.name, error = %e, "consul service registration failed");
    }
}

fn check_target(c: &Check) -> String {
    if c.kind == "http" {
        let scheme = if c.protocol.is_empty() {
            "http"
        } else {
            &c.protocol
        };
        let path = if c.path.starts_with('/') {
            c.path.clone()
        } else {
            format!("/{}", c.path)
        };
        format!("{scheme}://127.0.0.1:{}{path}", c.port)
    } else {
        format!("127.0.0.1:{}", c.port)
    }
}

async fn probe(inner: &Inner, c: &Check) -> bool {
    match c.kind.as_str() {
        "http" => {
            let method = reqwest::Method::from_bytes(if c.method.is_empty() {
                b"GET"
            } else {
                c.method.as_bytes()
            })
            .unwrap_or(reqwest::Method::GET);
            match inner
                .http
                .request(method, check_target(c))
                .timeout(c.timeout)
                .send()
                .await
            {
                Ok(resp) => resp.status().is_success(),
                Err(_) => false,
            }
        }
        "tcp" => matches!(
            tokio::time::timeout(
                c.timeout,
                tokio::net::TcpStream::connect(("127.0.0.1", c.port))
            )
            .await,
            Ok(Ok(_))
        ),
        // Script and gRPC checks are not run by the twin; they never pass.
        _ => false,
    }
}

async fn run_check(sh: Shared, svc: Svc, c: Check, statuses: Arc<Mutex<BTreeMap<String, String>>>) {
    loop {
        let passing = probe(&sh.inner, &c).await;
        let status = if passing { "passing" } else { "critical" };
        let changed = {
            let mut map = statuses.lock().unwrap_or_else(|p| p.into_inner());
            map.insert(c.id.clone(), status.to_string()) != Some(status.to_string())
        };
        if changed && svc.provider != "nomad" {
            consul_register(&sh, &svc, &statuses).await;
        }
        tokio::time::sleep(c.interval).await;
    }
}

/// Tests for the helpers that need no processes.
#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_templates_substitute_and_other_actions_stay_verbatim() {
        let env = BTreeMap::from([("NOMAD_PORT_http".to_string(), "8080".to_string())]);
        let out = render_template(
            "port={{ env \"NOMAD_PORT_http\" }} {{ key \"x\" }}",
            "{{",
            "}}",
            &env,
        );
        assert_eq!(out, "port=8080 {{ key \"x\" }}");
    }

    #[test]
    fn template_destinations_cannot_escape_the_task_dir() {
        assert!(within(Path::new("/a/task"), "../x").is_none());
        assert_eq!(
            within(Path::new("/a/task"), "local/x.yml"),
            Some(PathBuf::from("/a/task/local/x.yml"))
        );
    }

    #[test]
    fn service_ports_resolve_labels_and_numbers() {
        let ports = vec![AllocPort {
            label: "http".into(),
            value: 1234,
            to: 0,
            reserved: true,
        }];
        assert_eq!(port_for(&ports, "http"), 1234);
        assert_eq!(port_for(&ports, "8080"), 8080);
        assert_eq!(port_for(&ports, "nope"), 0);
    }
}
