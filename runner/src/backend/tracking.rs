//! Finding every process a host job started, also those that left its process groups
//! (`setsid`, daemons that fork twice), so that none outlives the job.
//!
//! Two mechanisms:
//! - the **environment marker** GitHub's runner uses, always: every step runs with
//!   `RUNNER_TRACKING_ID=<a random id of the job>`, which its descendants inherit, and the
//!   job's end stops and kills every process whose environment holds that exact entry. As on
//!   GitHub, a process started with that variable cleared or changed is not found by it;
//! - a **cgroup of its own** per job (cgroup v2, a child of kiln's own cgroup), when kiln may
//!   create one (root, or a delegated subtree): every step's process is moved into it as soon
//!   as it is spawned (with whatever it forked before that), whatever it forks stays there,
//!   and `cgroup.kill` ends them all at once, whatever their environment. posix_spawn cannot
//!   start a process in a cgroup, so a process forked and detached in the instant before
//!   the move could stay outside: the marker still finds it.
//!
//! The scan reads `/proc` once per round, at most [`SCAN_ROUNDS`] rounds and
//! [`ENVIRON_READ_LIMIT`] bytes of each environment, and signals a process only through a
//! pidfd opened before its environment was checked again, so a pid reused by another process
//! in the meantime is never signalled. Other jobs' processes carry other ids; the user's carry
//! none.

use std::fs;
use std::io::Read as _;
use std::os::fd::{FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;

/// The variable GitHub's runner tracks job processes with; programs that know it clear it to
/// outlive the job on purpose.
pub const TRACKING_VARIABLE: &str = "RUNNER_TRACKING_ID";
/// Most rounds of stopping the job's processes (each round stops what the previous one missed
/// because it was being forked).
const SCAN_ROUNDS: usize = 16;
/// A process's environment is read up to this far (the kernel caps one at a few MiB by default).
const ENVIRON_READ_LIMIT: u64 = 8 * 1024 * 1024;
/// Most processes moved into a job's cgroup at one spawn (a step's process and what it forked
/// before the move).
const MAX_ADOPTED: usize = 1024;
/// How long the end of a job waits for a killed cgroup to empty before removing it.
const CGROUP_DRAIN: Duration = Duration::from_secs(2);

/// How a host job's processes are found at its end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tracking {
    /// The environment marker, and a cgroup per job where kiln may create one.
    Auto,
    /// Only the environment marker.
    Environment,
}

/// The tracking of one job.
#[derive(Debug)]
pub(crate) struct JobTracking {
    /// `RUNNER_TRACKING_ID`'s value: `kiln_<pid of this kiln>_` and 128 random bits, so
    /// what a kiln process started can be found after it died ([`end_jobs_of_process`]).
    id: String,
    /// The job's cgroup, where its processes go.
    cgroup: Mutex<Option<PathBuf>>,
}

impl JobTracking {
    pub fn start(tracking: Tracking) -> JobTracking {
        let id = format!("{}{}", owner_prefix(std::process::id()), random_hex());
        let cgroup = match tracking {
            Tracking::Auto => create_job_cgroup(&id),
            Tracking::Environment => None,
        };
        JobTracking {
            cgroup: Mutex::new(cgroup),
            id,
        }
    }

    /// The variable every process of the job gets.
    pub fn variable(&self) -> (String, String) {
        (TRACKING_VARIABLE.to_owned(), self.id.clone())
    }

    /// Moves a just-spawned step process into the job's cgroup, with the processes it forked
    /// before (kiln's thread may have been descheduled between the spawn and this call).
    pub fn adopt(&self, pid: i32) {
        let Ok(cgroup) = self.cgroup.lock() else {
            return;
        };
        let Some(procs) = cgroup.as_ref().map(|dir| dir.join("cgroup.procs")) else {
            return;
        };
        let mut pending = vec![pid];
        let mut moved = 0;
        while let Some(pid) = pending.pop() {
            // A process that is gone or cannot be moved is left to the marker.
            if fs::write(&procs, pid.to_string()).is_ok() {
                moved += 1;
                if moved < MAX_ADOPTED {
                    pending.extend(children_of(pid));
                }
            }
        }
    }

    /// Ends every process of the job that still runs, and removes its cgroup. Blocking (a few
    /// milliseconds, up to [`CGROUP_DRAIN`] when processes are slow to die); returns the pids
    /// that could not be ended.
    pub fn end(&self) -> Vec<i32> {
        let cgroup = self.cgroup.lock().ok().and_then(|mut c| c.take());
        if let Some(dir) = &cgroup {
            kill_cgroup(dir);
        }
        let entry = format!("{TRACKING_VARIABLE}={}", self.id);
        kill_marked(entry.as_bytes(), Match::Whole)
    }
}

/// The start of the tracking ids of the jobs kiln process `pid` runs.
fn owner_prefix(pid: u32) -> String {
    format!("kiln_{pid}_")
}

/// Ends every process of every host job that kiln process `pid` started (it died without
/// ending them: SIGKILL, a crash), through their cgroups and their marker; removes those
/// cgroups. For a process that watches kiln and outlives it (`kiln runner start`'s guard).
/// Returns the pids that could not be ended.
pub fn end_jobs_of_process(pid: u32) -> Vec<i32> {
    let prefix = owner_prefix(pid);
    if let Some(own) = own_cgroup_dir() {
        let jobs = fs::read_dir(own).into_iter().flatten().flatten();
        for job in jobs {
            let name = job.file_name();
            let name = name.to_string_lossy();
            if name.starts_with(&prefix) && name.ends_with(".kiln-job") {
                kill_cgroup(&job.path());
            }
        }
    }
    let entry = format!("{TRACKING_VARIABLE}={prefix}");
    kill_marked(entry.as_bytes(), Match::Prefix)
}

/// How a process's variable is compared with the entry looked for.
#[derive(Clone, Copy)]
enum Match {
    /// `RUNNER_TRACKING_ID=<the job's id>` exactly.
    Whole,
    /// `RUNNER_TRACKING_ID=kiln_<pid>_` followed by any job's id.
    Prefix,
}

/// The children of `pid`'s main thread (a step's shell has no other).
fn children_of(pid: i32) -> Vec<i32> {
    fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
        .map(|text| {
            text.split_whitespace()
                .filter_map(|p| p.parse().ok())
                .collect()
        })
        .unwrap_or_default()
}

/// Whether [`Tracking::Auto`] gives jobs a cgroup of their own on this machine.
pub fn cgroup_tracking_available() -> bool {
    let Some(dir) = create_job_cgroup(&format!("kiln_probe_{}", random_hex())) else {
        return false;
    };
    let _ = fs::remove_dir(dir);
    true
}

/// 128 bits from the kernel's generator, as hex.
pub(crate) fn random_hex() -> String {
    let mut bytes = [0u8; 16];
    let filled = fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut bytes))
        .is_ok();
    if !filled {
        // Without /dev/urandom: the time and our pid still make the id unique per job.
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        bytes = (nanos ^ (u128::from(std::process::id()) << 64)).to_le_bytes();
    }
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Where kiln's own cgroup is in the cgroup v2 hierarchy, if there is one mounted and kiln
/// can create cgroups below its own: probed once per process.
fn own_cgroup_dir() -> Option<&'static Path> {
    static DIR: OnceLock<Option<PathBuf>> = OnceLock::new();
    DIR.get_or_init(|| {
        let mountinfo = fs::read_to_string("/proc/self/mountinfo").ok()?;
        // `id parent dev root mountpoint options [optional...] - fstype source superoptions`
        let mount = mountinfo.lines().find_map(|line| {
            let (fields, fstype) = line.split_once(" - ")?;
            if !fstype.starts_with("cgroup2 ") {
                return None;
            }
            fields.split(' ').nth(4).map(PathBuf::from)
        })?;
        let own = fs::read_to_string("/proc/self/cgroup").ok()?;
        let relative = own.lines().find_map(|line| line.strip_prefix("0::"))?;
        let dir = mount.join(relative.trim_start_matches('/'));
        // A cgroup whose controllers go to its children may hold no processes of its own
        // children's kind; kiln's cgroup holds kiln, so its children can only be plain ones,
        // which is all tracking needs.
        dir.join("cgroup.procs").exists().then_some(dir)
    })
    .as_deref()
}

fn create_job_cgroup(id: &str) -> Option<PathBuf> {
    let dir = own_cgroup_dir()?.join(format!("{id}.kiln-job"));
    fs::create_dir(&dir).ok()?;
    Some(dir)
}

/// Kills everything in the cgroup and removes it once empty (bounded).
fn kill_cgroup(dir: &Path) {
    let killed = fs::write(dir.join("cgroup.kill"), "1").is_ok();
    let deadline = Instant::now() + CGROUP_DRAIN;
    loop {
        let members = cgroup_members(dir);
        if members.is_empty() {
            break;
        }
        if !killed {
            // Before Linux 5.14 there is no cgroup.kill: freeze, then kill one by one.
            let _ = fs::write(dir.join("cgroup.freeze"), "1");
            for pid in members {
                let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), Signal::SIGKILL);
            }
        }
        if Instant::now() > deadline {
            break;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    // Removing fails while a process is still dying; the directory is then left empty-handed
    // to the kernel, which frees it with its last process.
    for _ in 0..20 {
        if fs::remove_dir(dir).is_ok() || !dir.exists() {
            return;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn cgroup_members(dir: &Path) -> Vec<i32> {
    fs::read_to_string(dir.join("cgroup.procs"))
        .map(|text| text.lines().filter_map(|l| l.trim().parse().ok()).collect())
        .unwrap_or_default()
}

/// Stops, then kills, every process whose environment holds `entry`; returns those that
/// could not be ended.
fn kill_marked(entry: &[u8], how: Match) -> Vec<i32> {
    // Stopped processes cannot fork: stop rounds go on until a scan finds nothing new.
    for _ in 0..SCAN_ROUNDS {
        let running: Vec<i32> = marked_processes(entry, how)
            .into_iter()
            .filter(|&pid| process_state(pid) != Some('T'))
            .collect();
        if running.is_empty() {
            break;
        }
        for pid in running {
            signal_if_marked(pid, entry, how, Signal::SIGSTOP);
        }
    }
    for pid in marked_processes(entry, how) {
        signal_if_marked(pid, entry, how, Signal::SIGKILL);
    }
    // SIGKILL is delivered to stopped processes too; give them a moment to be gone.
    let deadline = Instant::now() + Duration::from_millis(500);
    loop {
        let left: Vec<i32> = marked_processes(entry, how)
            .into_iter()
            .filter(|&pid| !matches!(process_state(pid), Some('Z' | 'X') | None))
            .collect();
        if left.is_empty() || Instant::now() > deadline {
            return left;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Every process (but kiln) whose environment holds `entry` as one of its variables.
fn marked_processes(entry: &[u8], how: Match) -> Vec<i32> {
    let me = std::process::id() as i32;
    let Ok(entries) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter(|&pid| pid != me && has_entry(pid, entry, how))
        .collect()
}

fn has_entry(pid: i32, entry: &[u8], how: Match) -> bool {
    let Ok(file) = fs::File::open(format!("/proc/{pid}/environ")) else {
        return false;
    };
    let mut environ = Vec::new();
    if file
        .take(ENVIRON_READ_LIMIT)
        .read_to_end(&mut environ)
        .is_err()
    {
        return false;
    }
    environ.split(|&b| b == 0).any(|variable| match how {
        Match::Whole => variable == entry,
        Match::Prefix => variable.starts_with(entry),
    })
}

/// The state letter of `/proc/PID/stat` (`R`, `S`, `T`, `Z`...).
fn process_state(pid: i32) -> Option<char> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat[stat.rfind(')')? + 1..].trim_start().chars().next()
}

/// Signals `pid` only if, once a pidfd pins it, it is still a process holding `entry`.
fn signal_if_marked(pid: i32, entry: &[u8], how: Match, signal: Signal) {
    let Some(pidfd) = pidfd_open(pid) else {
        return;
    };
    if !has_entry(pid, entry, how) {
        return;
    }
    // SAFETY: a valid pidfd, a signal number, no siginfo, no flags.
    unsafe {
        libc::syscall(
            libc::SYS_pidfd_send_signal,
            std::os::fd::AsRawFd::as_raw_fd(&pidfd),
            signal as libc::c_int,
            std::ptr::null::<libc::siginfo_t>(),
            0,
        );
    }
}

fn pidfd_open(pid: i32) -> Option<OwnedFd> {
    // SAFETY: pidfd_open takes a pid and flags and returns a new descriptor or -1.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    // SAFETY: a non-negative result is a new descriptor that only we own.
    (fd >= 0).then(|| unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_random_and_long() {
        let a = JobTracking::start(Tracking::Environment);
        let b = JobTracking::start(Tracking::Environment);
        assert_ne!(a.id, b.id);
        let prefix = owner_prefix(std::process::id());
        assert!(a.id.starts_with(&prefix), "{}", a.id);
        assert_eq!(a.id.len(), prefix.len() + 32);
        assert_eq!(a.variable().0, "RUNNER_TRACKING_ID");
    }

    #[test]
    fn only_processes_with_the_exact_entry_are_found() {
        let entry = format!("{TRACKING_VARIABLE}=kiln_test_{}", random_hex());
        let (name, value) = entry.split_once('=').unwrap();
        let mut marked = std::process::Command::new("sleep")
            .arg("30")
            .env(name, value)
            .spawn()
            .unwrap();
        let mut prefixed = std::process::Command::new("sleep")
            .arg("30")
            .env(name, format!("{value}x"))
            .spawn()
            .unwrap();
        let found = marked_processes(entry.as_bytes(), Match::Whole);
        let left = kill_marked(entry.as_bytes(), Match::Whole);
        let other_alive = process_state(prefixed.id() as i32).is_some_and(|s| s != 'Z');
        let _ = prefixed.kill();
        let _ = prefixed.wait();
        let status = marked.wait().unwrap();
        assert_eq!(found, [marked.id() as i32]);
        assert!(left.is_empty(), "{left:?}");
        assert!(other_alive, "a process with another id was signalled");
        assert!(!status.success(), "the marked process was killed");
    }

    #[test]
    fn the_jobs_of_a_dead_kiln_process_are_ended_and_no_others() {
        // Pids no live kiln has: the prefixes of two "dead" kiln processes.
        let (dead, other) = (4_000_000_001u32, 4_000_000_002u32);
        let sleeper = |owner: u32| {
            std::process::Command::new("sleep")
                .arg("30")
                .env(
                    TRACKING_VARIABLE,
                    format!("{}{}", owner_prefix(owner), random_hex()),
                )
                .spawn()
                .unwrap()
        };
        let (mut first, mut second, mut unrelated) = (sleeper(dead), sleeper(dead), sleeper(other));
        let left = end_jobs_of_process(dead);
        let unrelated_alive = process_state(unrelated.id() as i32).is_some_and(|s| s != 'Z');
        let _ = unrelated.kill();
        let _ = unrelated.wait();
        assert!(left.is_empty(), "{left:?}");
        assert!(
            !first.wait().unwrap().success(),
            "a job process of the dead kiln survived"
        );
        assert!(
            !second.wait().unwrap().success(),
            "a job process of the dead kiln survived"
        );
        assert!(unrelated_alive, "another kiln's job process was signalled");
    }
}
