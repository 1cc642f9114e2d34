//! Finding and signalling a process and all its descendants through /proc, for processes
//! that are not our children (a `docker exec`'d process, seen from the host).

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

/// `pid` and all its descendants, parents before children. Empty when `pid` is not visible
/// here (another PID namespace or a remote Docker daemon).
pub(crate) fn process_tree(pid: i32) -> Vec<i32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let parents: Vec<(i32, i32)> = entries
        .filter_map(|entry| {
            let pid: i32 = entry.ok()?.file_name().to_str()?.parse().ok()?;
            Some((pid, parent_of(pid)?))
        })
        .collect();
    if !parents.iter().any(|&(p, _)| p == pid) {
        return Vec::new();
    }
    let mut tree = vec![pid];
    // Breadth-first over the snapshot; each pid is added once, so this ends.
    let mut next = 0;
    while next < tree.len() {
        let parent = tree[next];
        tree.extend(
            parents
                .iter()
                .filter(|&&(child, ppid)| ppid == parent && !tree.contains(&child))
                .map(|&(child, _)| child)
                .collect::<Vec<_>>(),
        );
        next += 1;
    }
    tree
}

/// The parent pid from `/proc/PID/stat`. The command name may contain spaces and
/// parentheses, so parse after its last `)`.
fn parent_of(pid: i32) -> Option<i32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after_name = &stat[stat.rfind(')')? + 1..];
    after_name.split_whitespace().nth(1)?.parse().ok()
}

/// When the process started (clock ticks since boot, `/proc/PID/stat` field 22): with the pid
/// it identifies a process even after pid numbers wrap around.
pub(crate) fn start_time(pid: i32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name start at field 3, so field 22 is the 20th of them.
    stat[stat.rfind(')')? + 1..]
        .split_whitespace()
        .nth(19)?
        .parse()
        .ok()
}

/// Sends `signal` to each process; ESRCH (already gone) is expected and ignored.
pub(crate) fn signal_all(pids: &[i32], signal: Signal) {
    for &pid in pids {
        let _ = kill(Pid::from_raw(pid), signal);
    }
}

/// The processes that still run. Zombies do not count: inside a container nobody may ever
/// reap them, and they hold no resources a step cares about.
pub(crate) fn living(pids: &[i32]) -> Vec<i32> {
    pids.iter()
        .copied()
        .filter(|&pid| {
            std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .ok()
                .and_then(|stat| {
                    let state = stat[stat.rfind(')')? + 1..]
                        .split_whitespace()
                        .next()?
                        .to_owned();
                    Some(state != "Z" && state != "X")
                })
                .unwrap_or(false)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_children_of_this_process() {
        let mut child = std::process::Command::new("sleep")
            .arg("5")
            .spawn()
            .expect("sleep runs");
        let tree = process_tree(std::process::id() as i32);
        let _ = child.kill();
        let _ = child.wait();
        assert_eq!(tree.first(), Some(&(std::process::id() as i32)));
        assert!(tree.contains(&(child.id() as i32)), "{tree:?}");
    }

    #[test]
    fn exited_children_are_not_living() {
        let mut child = std::process::Command::new("true")
            .spawn()
            .expect("true runs");
        let pid = child.id() as i32;
        std::thread::sleep(std::time::Duration::from_millis(100));
        // Not reaped yet: a zombie, which must not count as living.
        assert!(living(&[pid]).is_empty());
        let _ = child.wait();
        assert_eq!(living(&[std::process::id() as i32]).len(), 1);
    }

    #[test]
    fn start_time_identifies_a_process() {
        let me = std::process::id() as i32;
        let first = start_time(me).expect("our own start time");
        assert_eq!(start_time(me), Some(first));
        assert_eq!(start_time(i32::MAX), None);
    }

    #[test]
    fn invisible_process_gives_an_empty_tree() {
        assert!(process_tree(i32::MAX).is_empty());
    }
}
