//! One task's life: directories, templates, the process, and the restart policy.

use super::*;

pub(super) async fn stopped(rx: &mut watch::Receiver<bool>) {
    // The guard `wait_for` returns is not Send; drop it before the caller's next await.
    let _ = rx.wait_for(|v| *v).await.map(|_| ());
}

pub(super) enum Exit {
    Code(i64, i64),
    Stopped,
}

pub(super) async fn run_task(sh: Shared, task: Value, mut stop: watch::Receiver<bool>) {
    let name = View::task(&task).str("Name").to_string();
    let task_dir = sh.alloc_dir.join(&name);
    sh.event(
        &name,
        TaskEvent::new("Task Setup", "Building Task Directory"),
        unchanged,
    );
    for sub in ["local", "secrets", "tmp"] {
        let _ = std::fs::create_dir_all(task_dir.join(sub));
    }
    let mut env = task_env(&sh, &task);
    // The client reads the job's variables on the task's behalf (Workload Identity grants a
    // task its own `nomad/jobs/<job>` implicitly; the twin does not check other paths).
    let namespace = View::job(&sh.job).str("Namespace").to_string();
    let variables = |path: &str| {
        sh.inner
            .read(|st| st.variable(&namespace, path).map(|v| v.items.clone()))
    };
    if let Err(e) = write_templates(&task_dir, &task, &mut env, &sh.node, &variables) {
        let mut ev = TaskEvent::new("Setup Failure", format!("failed to render template: {e}"));
        ev.setup_error = e;
        ev.fails_task = true;
        sh.event(&name, ev, failed);
        return;
    }
    let restart = View::task(&task).obj_or_empty("RestartPolicy");
    let attempts = restart.uint("Attempts");
    let interval = restart.dur("Interval");
    let delay = restart.dur("Delay");
    let mode = restart.str("Mode").to_string();
    let batch = matches!(View::job(&sh.job).str("Type"), "batch" | "sysbatch");
    let kill_timeout = View::task(&task).dur("KillTimeout");
    let kill_signal = match View::task(&task).str("KillSignal") {
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
        sh.event(&name, term, unchanged);
        if batch && code == 0 {
            sh.event(
                &name,
                TaskEvent::new("Not Restarting", "Task completed successfully"),
                finished,
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
            sh.event(&name, ev, restarting);
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
            sh.event(&name, ev, restarting);
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
            sh.event(&name, ev, failed);
            return;
        };
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = stopped(&mut stop) => break,
        }
    }
    sh.event(
        &name,
        TaskEvent::new("Killed", "Task successfully killed"),
        finished,
    );
}

/// The `config` block of a `raw_exec` / `exec` task (the keys the twin runs; other keys of
/// those drivers are accepted and ignored). A wrongly typed key fails the start with a driver
/// error, as the driver's own HCL spec decoding would.
#[derive(Debug, Default, serde::Deserialize)]
pub(super) struct DriverConfig {
    #[serde(default)]
    command: String,
    #[serde(default)]
    args: Vec<String>,
}

impl DriverConfig {
    fn of(task: &Value) -> Result<DriverConfig, String> {
        match View::task(task).raw("Config") {
            None => Ok(DriverConfig::default()),
            Some(v) => serde_json::from_value(v.clone())
                .map_err(|e| format!("failed to decode driver config: {e}")),
        }
    }
}

pub(super) async fn run_process(
    sh: &Shared,
    task: &Value,
    task_dir: &Path,
    env: &BTreeMap<String, String>,
    stop: &mut watch::Receiver<bool>,
    kill_timeout: Duration,
    kill_signal: Option<Signal>,
) -> Exit {
    let name = View::task(task).str("Name");
    let config = DriverConfig::of(task);
    let (command, args) = match &config {
        Ok(c) => (
            interpolate(&c.command, env, &sh.node),
            c.args
                .iter()
                .map(|a| interpolate(a, env, &sh.node))
                .collect(),
        ),
        Err(_) => (String::new(), Vec::new()),
    };
    let logs = sh.alloc_dir.join("alloc").join("logs");
    let open = |suffix: &str| {
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(logs.join(format!("{name}.{suffix}.0")))
    };
    let spawned = match (config, command.is_empty(), open("stdout"), open("stderr")) {
        (Err(e), ..) => Err(e),
        (Ok(_), true, _, _) => Err("missing command in task config".to_string()),
        (Ok(_), false, Ok(out), Ok(err)) => {
            let mut cmd = tokio::process::Command::new(&command);
            // Only the task environment: never the twin's own (which may hold tokens).
            cmd.args(&args)
                .env_clear()
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
        (Ok(_), false, Err(e), _) | (Ok(_), false, _, Err(e)) => {
            Err(format!("failed to open task log: {e}"))
        }
    };
    let mut child = match spawned {
        Ok(c) => c,
        Err(msg) => {
            let mut ev = TaskEvent::new("Driver Failure", msg.clone());
            ev.driver_error = msg;
            sh.event(name, ev, unchanged);
            return Exit::Code(-1, 0);
        }
    };
    // Dropping the record kills the whole group, so no task outlives its runner even when a test
    // panics; the file it writes lets the next twin reap the group if this one dies first.
    let guard = child.id().map(|pgid| GroupRecord::new(&sh.alloc_dir, pgid));
    sh.event(
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
            sh.event(name, ev, unchanged);
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
