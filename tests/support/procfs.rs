//! What `/proc` says about a process.

use std::fs;

/// The state letter of `/proc/PID/stat` (`R`, `S`, `Z`, …) and the parent
/// pid, or `None` if there is no such process.
pub fn proc_state(pid: i32) -> Option<(char, i32)> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name is in parentheses and may itself contain spaces or
    // parentheses: the fields we want follow the last ')'.
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace();
    let state = fields.next()?.chars().next()?;
    let ppid = fields.next()?.parse().ok()?;
    Some((state, ppid))
}

/// True if `pid` exists and is neither a zombie nor dead.
pub fn pid_alive(pid: i32) -> bool {
    matches!(proc_state(pid), Some((state, _)) if state != 'Z' && state != 'X')
}

/// The command line of `pid`, arguments separated by spaces; empty for a
/// zombie, a kernel thread or a vanished process.
pub fn cmdline(pid: i32) -> String {
    fs::read(format!("/proc/{pid}/cmdline"))
        .map(|raw| {
            raw.split(|b| *b == 0)
                .filter(|a| !a.is_empty())
                .map(|a| String::from_utf8_lossy(a).into_owned())
                .collect::<Vec<_>>()
                .join(" ")
        })
        .unwrap_or_default()
}

/// The number of open file descriptors of `pid`.
pub fn fd_count(pid: i32) -> usize {
    fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap_or_else(|e| panic!("cannot read /proc/{pid}/fd: {e}"))
        .count()
}

/// Every open fd of `pid` with what it points to (`socket:[123]`,
/// `pipe:[456]`, `/dev/null`, …), sorted by fd.
pub fn fd_targets(pid: i32) -> Vec<(i32, String)> {
    let mut fds: Vec<(i32, String)> = fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap_or_else(|e| panic!("cannot read /proc/{pid}/fd: {e}"))
        .filter_map(|entry| {
            let entry = entry.ok()?;
            let fd = entry.file_name().to_str()?.parse().ok()?;
            // The fd may close between readdir and readlink.
            let target = fs::read_link(entry.path()).ok()?;
            Some((fd, target.to_string_lossy().into_owned()))
        })
        .collect();
    fds.sort();
    fds
}

/// The children of `pid` (its main thread's, `/proc/PID/task/PID/children`;
/// a single-threaded parent such as `unshare` has no others), oldest first.
pub fn children(pid: i32) -> Vec<i32> {
    fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
        .unwrap_or_default()
        .split_whitespace()
        .filter_map(|p| p.parse().ok())
        .collect()
}

/// Pids of the zombie children of `pid`.
pub fn child_zombies(pid: i32) -> Vec<i32> {
    let mut zombies: Vec<i32> = fs::read_dir("/proc")
        .expect("cannot read /proc")
        .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter(|&child| matches!(proc_state(child), Some(('Z', ppid)) if ppid == pid))
        .collect();
    zombies.sort();
    zombies
}

/// The live processes whose process group is `pgid`.
pub fn group_members(pgid: i32) -> Vec<i32> {
    let Ok(dir) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter(|&pid| {
            let Ok(stat) = fs::read_to_string(format!("/proc/{pid}/stat")) else {
                return false;
            };
            let Some(close) = stat.rfind(')') else {
                return false;
            };
            // After the command: state, ppid, pgrp.
            let mut fields = stat[close + 1..].split_whitespace();
            let state = fields.next().and_then(|s| s.chars().next());
            let pgrp = fields.nth(1).and_then(|g| g.parse::<i32>().ok());
            pgrp == Some(pgid) && !matches!(state, Some('Z' | 'X'))
        })
        .collect()
}

/// The environment `pid` started with (`/proc/PID/environ`), as `KEY=VALUE`.
pub fn environ(pid: i32) -> Vec<String> {
    let raw = fs::read(format!("/proc/{pid}/environ"))
        .unwrap_or_else(|e| panic!("cannot read /proc/{pid}/environ: {e}"));
    raw.split(|b| *b == 0)
        .filter(|v| !v.is_empty())
        .map(|v| String::from_utf8_lossy(v).into_owned())
        .collect()
}

/// The variable `key` of [`environ`].
pub fn env_var(pid: i32, key: &str) -> Option<String> {
    let prefix = format!("{key}=");
    environ(pid)
        .into_iter()
        .find_map(|kv| kv.strip_prefix(&prefix).map(str::to_string))
}
