//! The local executor: runs each allocation of a `raw_exec`/`exec` task group as real child
//! processes, like a Nomad client with those drivers.
//!
//! Per allocation it builds Nomad's directory layout (`<alloc>/alloc/{logs,data,tmp}`,
//! `<alloc>/<task>/{local,secrets,tmp}`), assigns ports, renders templates, starts each task with
//! a minimal environment (`PATH`, `HOME`, the `NOMAD_*` variables and the task's `env`, never the
//! twin's own environment), applies the restart policy, runs the service checks, registers the
//! services (Nomad-native or in Consul) and reports allocation health to the deployment.
//!
//! Interpolation: `${NAME}` in `Config.command`, `Config.args`, `Env` values and template
//! `DestPath` is replaced when NAME is one of the task's `NOMAD_*` variables, a key of the task's
//! `Env`, or one of `node.unique.id`, `node.unique.name`, `node.datacenter`, `node.region`,
//! `node.class`, `attr.unique.network.ip-address`; anything else is left as written (as Nomad
//! does). Templates: only literal `EmbeddedTmpl` data, with `{{ env "NAME" }}` replaced by the
//! task environment (delimiters from `LeftDelim`/`RightDelim`); other template functions are
//! written verbatim.

mod env;
mod services;
mod task;
mod template;

use env::*;
use services::*;
use task::*;
use template::*;

use super::Inner;
use super::reaper::{GroupRecord, signal_named};
use super::store::{AllocPort, Node, Plan, TaskEvent, TaskState};
use super::util::{go_duration, now_nanos, rfc3339};
use super::view::View;
use rustix::process::Signal;
use serde_json::Value;
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
    /// The node the allocation runs on.
    node: Node,
}

fn event(inner: &Inner, alloc_id: &str, task: &str, ev: TaskEvent, f: impl FnOnce(&mut TaskState)) {
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

impl Shared {
    /// Records `ev` on `task` and moves its state with `f`.
    fn event(&self, task: &str, ev: TaskEvent, f: impl FnOnce(&mut TaskState)) {
        event(&self.inner, &self.alloc_id, task, ev, f);
    }
}

impl AllocCtx {
    /// Records a fresh `ev()` on each of `tasks` and moves each one's state with `f`.
    fn event_all(&self, tasks: &[Value], ev: impl Fn() -> TaskEvent, f: impl Fn(&mut TaskState)) {
        for t in tasks {
            event(
                &self.inner,
                &self.alloc_id,
                View::task(t).str("Name"),
                ev(),
                &f,
            );
        }
    }
}

// === task-state moves that go with an event ===

/// The event changes nothing but the event list.
fn unchanged(_: &mut TaskState) {}

/// The task ended now.
fn finished(ts: &mut TaskState) {
    ts.state = "dead".into();
    ts.finished_at = rfc3339(now_nanos());
}

/// The task ended now, failed.
fn failed(ts: &mut TaskState) {
    ts.failed = true;
    finished(ts);
}

/// The task waits for its restart.
fn restarting(ts: &mut TaskState) {
    ts.state = "pending".into();
    ts.restarts += 1;
    ts.last_restart = rfc3339(now_nanos());
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
    let tasks: Vec<Value> = View::group(&group)
        .list("Tasks")
        .iter()
        .map(|t| t.value().clone())
        .collect();
    ctx.event_all(
        &tasks,
        || TaskEvent::new("Received", "Task received by client"),
        unchanged,
    );
    if *stop.borrow() {
        ctx.event_all(
            &tasks,
            || TaskEvent::new("Killed", "Task successfully killed"),
            finished,
        );
        return;
    }
    if let Some(bad) = tasks
        .iter()
        .find(|t| !DRIVERS.contains(&View::task(t).str("Driver")))
    {
        let driver = View::task(bad).str("Driver").to_string();
        let msg =
            format!("missing drivers: the twin's node has only raw_exec and exec, not {driver:?}");
        let ev = || {
            let mut ev = TaskEvent::new("Driver Failure", msg.clone());
            ev.driver_error = msg.clone();
            ev.fails_task = true;
            ev
        };
        ctx.event_all(&tasks, ev, failed);
        let plan = ctx.inner.write(|st| {
            st.update_alloc(&ctx.alloc_id, |a| {
                a.client_description = "Failed tasks".into()
            });
            st.set_alloc_health(&ctx.alloc_id, false)
        });
        ctx.inner.executor.apply(&ctx.inner, plan);
        return;
    }
    let Some(node) = ctx.inner.read(|st| st.nodes.get(&alloc.node_id).cloned()) else {
        tracing::error!(alloc = %ctx.alloc_id, node = %alloc.node_id, "allocation on an unknown node");
        return;
    };
    let ports = match assign_ports(&group, &node.address) {
        Ok(p) => p,
        Err(e) => {
            let ev = || {
                let mut ev =
                    TaskEvent::new("Setup Failure", format!("failed to assign ports: {e}"));
                ev.setup_error = e.to_string();
                ev.fails_task = true;
                ev
            };
            ctx.event_all(&tasks, ev, |ts| {
                ts.state = "dead".into();
                ts.failed = true;
            });
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
        node: node.clone(),
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
    let update = View::group(&group).obj("Update");
    let health_mode = update
        .map_or("checks", |u| u.str("HealthCheck"))
        .to_string();
    let min_healthy = update.map_or(Duration::ZERO, |u| u.dur("MinHealthyTime"));
    let healthy_deadline = update.map_or(Duration::from_secs(300), |u| u.dur("HealthyDeadline"));
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

fn assign_ports(group: &Value, address: &str) -> std::io::Result<Vec<AllocPort>> {
    let mut ports = Vec::new();
    for net in View::group(group).list("Networks") {
        for p in net.list("ReservedPorts") {
            ports.push(AllocPort {
                label: p.str("Label").into(),
                value: p.uint("Value") as u16,
                to: p.int("To"),
                reserved: true,
            });
        }
        for p in net.list("DynamicPorts") {
            // Bind-then-release: the port was free a moment ago, like Nomad's dynamic range pick.
            let listener = std::net::TcpListener::bind((address, 0))?;
            let value = listener.local_addr()?.port();
            ports.push(AllocPort {
                label: p.str("Label").into(),
                value,
                to: p.int("To"),
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

#[cfg(test)]
mod tests {
    use super::*;

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
