//! Keeps task processes from outliving the twin.
//!
//! Every task runs in its own process group. While it runs, `<alloc_dir>/pids/<pgid>` holds the
//! group leader's start time, and the executor's base directory holds an `owner` file naming the
//! twin process (pid and start time). When a twin dies without cleaning up (SIGKILL, OOM, abort),
//! the next twin that starts on the same data directory, or any twin that starts with a scratch
//! directory in the same `$TMPDIR`, finds the dead owner, kills the recorded groups and removes the
//! dead twin's scratch directory. A pid and its start time together name one process, so a reused
//! pid is never signalled.

use rustix::process::{Pid, Signal, kill_process_group};
use std::path::{Path, PathBuf};

/// Prefix of scratch directories in `$TMPDIR`.
pub const SCRATCH_PREFIX: &str = "hashistack-twin-nomad-";
const OWNER_FILE: &str = "owner";
const PIDS_DIR: &str = "pids";

/// Start time (clock ticks since boot, field 22 of `/proc/<pid>/stat`) of a live process.
pub fn start_time(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may hold spaces and parentheses; the fields after it never do.
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace();
    let state = fields.next()?;
    if state == "Z" {
        return None;
    }
    // `rest` starts at field 3 (state); field 22 is 19 further.
    fields.nth(18)?.parse().ok()
}

/// A signal by its name, with or without the `SIG` prefix.
pub fn signal_named(name: &str) -> Option<Signal> {
    Some(match name.trim_start_matches("SIG") {
        "HUP" => Signal::HUP,
        "INT" => Signal::INT,
        "QUIT" => Signal::QUIT,
        "KILL" => Signal::KILL,
        "USR1" => Signal::USR1,
        "USR2" => Signal::USR2,
        "TERM" => Signal::TERM,
        "ABRT" => Signal::ABORT,
        "ALRM" => Signal::ALARM,
        "CONT" => Signal::CONT,
        "STOP" => Signal::STOP,
        "WINCH" => Signal::WINCH,
        _ => return None,
    })
}

/// Sends `sig` to every process of group `pgid`; a group that is already gone is fine.
pub fn signal_group(pgid: u32, sig: Signal) {
    if let Some(pid) = i32::try_from(pgid).ok().and_then(Pid::from_raw) {
        let _ = kill_process_group(pid, sig);
    }
}

/// The record of one running process group; dropping it kills the group and removes the record.
#[derive(Debug)]
pub struct GroupRecord {
    pgid: u32,
    file: Option<PathBuf>,
}

impl GroupRecord {
    /// Records group `pgid` (whose leader was just spawned) under `alloc_dir`.
    pub fn new(alloc_dir: &Path, pgid: u32) -> GroupRecord {
        let dir = alloc_dir.join(PIDS_DIR);
        let file = dir.join(pgid.to_string());
        let written = std::fs::create_dir_all(&dir).and_then(|()| {
            std::fs::write(
                &file,
                start_time(pgid).map(|t| t.to_string()).unwrap_or_default(),
            )
        });
        if let Err(e) = &written {
            tracing::warn!(pgid, error = %e, "failed to record task process group");
        }
        GroupRecord {
            pgid,
            file: written.ok().map(|()| file),
        }
    }

    /// Sends `sig` to the whole group.
    pub fn signal(&self, sig: Signal) {
        signal_group(self.pgid, sig);
    }
}

impl Drop for GroupRecord {
    fn drop(&mut self) {
        signal_group(self.pgid, Signal::KILL);
        if let Some(f) = &self.file {
            let _ = std::fs::remove_file(f);
        }
    }
}

fn owner_alive(base_dir: &Path) -> Option<bool> {
    let text = std::fs::read_to_string(base_dir.join(OWNER_FILE)).ok()?;
    let mut parts = text.split_whitespace();
    let pid: u32 = parts.next()?.parse().ok()?;
    let started: u64 = parts.next()?.parse().ok()?;
    Some(start_time(pid) == Some(started))
}

/// Kills every group recorded under `base_dir` (`<alloc>/pids/<pgid>`) and removes the records.
fn kill_recorded_groups(base_dir: &Path) -> usize {
    let mut killed = 0;
    let Ok(allocs) = std::fs::read_dir(base_dir) else {
        return 0;
    };
    for alloc in allocs.flatten() {
        let Ok(pids) = std::fs::read_dir(alloc.path().join(PIDS_DIR)) else {
            continue;
        };
        for entry in pids.flatten() {
            let path = entry.path();
            let pgid = entry
                .file_name()
                .to_str()
                .and_then(|n| n.parse::<u32>().ok());
            let recorded = std::fs::read_to_string(&path)
                .ok()
                .and_then(|t| t.trim().parse::<u64>().ok());
            if let Some(pgid) = pgid {
                // A live leader with another start time means the pid was reused: not ours. A dead
                // leader's pgid cannot be reused while members of its group are alive.
                let reused = match (start_time(pgid), recorded) {
                    (Some(now), Some(then)) => now != then,
                    (Some(_), None) => true,
                    (None, _) => false,
                };
                if !reused {
                    signal_group(pgid, Signal::KILL);
                    killed += 1;
                }
            }
            let _ = std::fs::remove_file(&path);
        }
    }
    killed
}

/// Prepares `base_dir` for this twin: kills the task groups a dead predecessor left behind (on a
/// persistent data directory, or in every dead twin's scratch directory next to a temporary one,
/// which is then removed) and records this process as the owner.
pub fn take_over(base_dir: &Path, temporary: bool) {
    if owner_alive(base_dir) != Some(true) {
        let n = kill_recorded_groups(base_dir);
        if n > 0 {
            tracing::warn!(groups = n, dir = %base_dir.display(), "killed task processes a dead twin left behind");
        }
    }
    if temporary && let Some(parent) = base_dir.parent() {
        for entry in std::fs::read_dir(parent).into_iter().flatten().flatten() {
            let path = entry.path();
            let is_scratch = entry
                .file_name()
                .to_str()
                .is_some_and(|n| n.starts_with(SCRATCH_PREFIX));
            // Only directories with an owner file that names a dead process: a twin of an older
            // build (no owner file) may still be running.
            if is_scratch && path != base_dir && owner_alive(&path) == Some(false) {
                let n = kill_recorded_groups(&path);
                tracing::warn!(groups = n, dir = %path.display(), "removed a dead twin's scratch directory");
                let _ = std::fs::remove_dir_all(&path);
            }
        }
    }
    let me = std::process::id();
    let owner = start_time(me).map(|t| format!("{me} {t}\n"));
    let written = std::fs::create_dir_all(base_dir).and_then(|()| match owner {
        Some(o) => std::fs::write(base_dir.join(OWNER_FILE), o),
        None => Ok(()),
    });
    if let Err(e) = written {
        tracing::warn!(dir = %base_dir.display(), error = %e, "failed to record the executor's owner");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn start_time_names_a_live_process_and_not_a_missing_one() {
        assert!(start_time(std::process::id()).is_some());
        assert!(start_time(u32::MAX - 1).is_none());
    }

    #[test]
    fn kill_signal_names_map_with_or_without_the_sig_prefix() {
        assert_eq!(signal_named("SIGTERM"), Some(Signal::TERM));
        assert_eq!(signal_named("INT"), Some(Signal::INT));
        assert_eq!(signal_named("SIGNOPE"), None);
    }
}
