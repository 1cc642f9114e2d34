//! Starting a step's process with posix_spawn(3) as the leader of a new session.
//!
//! `std::process::Command` can only make the child a session leader through a `pre_exec`
//! closure, and any closure makes it fork: the kernel then copies kiln's page tables for a
//! child that replaces them a moment later, and both sides take copy-on-write faults. That
//! was a sixth of a `run: echo` step's CPU time. glibc's posix_spawn runs the child on
//! kiln's memory until it execs (CLONE_VM | CLONE_VFORK) and does `setsid` itself
//! (POSIX_SPAWN_SETSID), so the step is set up exactly as before, only cheaper.
//!
//! The program is looked up on the PATH of the step's own environment, as execvp would do
//! in the child, before spawning: posix_spawnp would search kiln's PATH instead.

use std::ffi::{CString, OsStr};
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use nix::sys::signal::{killpg, Signal};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;
use tokio::io::unix::AsyncFd;
use tokio::io::Interest;
use tokio::net::unix::pipe;

/// PATH when the step's environment has none, as glibc's execvp assumes.
const DEFAULT_PATH: &str = "/bin:/usr/bin";
/// How often a child is checked for exit where the kernel has no pidfd (before Linux 5.3).
const EXIT_POLL: Duration = Duration::from_millis(5);

/// A running child that leads its own session (so its pid is also its process group id).
pub(crate) struct SessionChild {
    pid: i32,
    /// Readable once the child has exited; `None` where the kernel has no pidfd_open.
    pidfd: Option<AsyncFd<OwnedFd>>,
    /// The exit status once reaped, as a shell reports it (128 + N for signal N).
    exit_code: Option<i32>,
    pub stdout: Option<pipe::Receiver>,
    pub stderr: Option<pipe::Receiver>,
}

impl SessionChild {
    pub fn pid(&self) -> i32 {
        self.pid
    }

    /// Waits for the child to exit and reaps it. Cancel-safe, and returns the same code
    /// again once reaped.
    pub async fn wait(&mut self) -> io::Result<i32> {
        loop {
            if let Some(code) = self.exit_code {
                return Ok(code);
            }
            if let Some(code) = reap(self.pid)? {
                self.exit_code = Some(code);
                continue;
            }
            match &self.pidfd {
                Some(pidfd) => {
                    let mut ready = pidfd.readable().await?;
                    // Only a reaped child ends the wait; a readiness without exit is spurious.
                    if let Some(code) = reap(self.pid)? {
                        self.exit_code = Some(code);
                    } else {
                        ready.clear_ready();
                    }
                }
                None => tokio::time::sleep(EXIT_POLL).await,
            }
        }
    }
}

impl Drop for SessionChild {
    fn drop(&mut self) {
        if self.exit_code.is_some() {
            return;
        }
        // Abandoned while running: until it is reaped the pid cannot be reused, so the
        // group id still names our child's group.
        let _ = killpg(Pid::from_raw(self.pid), Signal::SIGKILL);
        if !matches!(reap(self.pid), Ok(Some(_))) {
            let pid = Pid::from_raw(self.pid);
            // SIGKILL ends it promptly; reap it off the async threads so no zombie stays.
            std::thread::spawn(move || {
                let _ = waitpid(pid, None);
            });
        }
    }
}

/// Reaps `pid` if it has exited.
fn reap(pid: i32) -> io::Result<Option<i32>> {
    match waitpid(Pid::from_raw(pid), Some(WaitPidFlag::WNOHANG)) {
        Ok(WaitStatus::Exited(_, code)) => Ok(Some(code)),
        Ok(WaitStatus::Signaled(_, signal, _)) => Ok(Some(128 + signal as i32)),
        Ok(_) => Ok(None),
        Err(errno) => Err(io::Error::from(errno)),
    }
}

/// Starts `argv` in `workdir` with exactly `env`, stdin on /dev/null and stdout and stderr
/// on pipes, in a new session. `spawned` gets the pid as soon as the process exists, before
/// anything else is done. Must run inside a Tokio runtime (the pipes register with it).
pub(crate) fn spawn_session(
    argv: &[String],
    env: &[(String, String)],
    workdir: &Path,
    spawned: impl FnOnce(i32),
) -> io::Result<SessionChild> {
    let Some(program) = argv.first() else {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "empty command line",
        ));
    };
    let path_var = env
        .iter()
        .rev()
        .find(|(name, _)| name == "PATH")
        .map_or(DEFAULT_PATH, |(_, value)| value.as_str());
    let program = resolve_program(program, path_var, workdir)?;
    let program = c_string(program.as_os_str())?;
    let argv = argv
        .iter()
        .map(|arg| c_string(OsStr::new(arg)))
        .collect::<io::Result<Vec<_>>>()?;
    let envp = last_of_each_name(env)
        .map(|(name, value)| c_string(OsStr::new(&format!("{name}={value}"))))
        .collect::<io::Result<Vec<_>>>()?;
    let workdir = c_string(workdir.as_os_str())?;
    let (stdout_read, stdout_write) = pipe_pair()?;
    let (stderr_read, stderr_write) = pipe_pair()?;

    let pid = {
        let mut actions = FileActions::new()?;
        actions.open_dev_null_as_stdin()?;
        actions.dup2(stdout_write.as_raw_fd(), libc::STDOUT_FILENO)?;
        actions.dup2(stderr_write.as_raw_fd(), libc::STDERR_FILENO)?;
        actions.chdir(&workdir)?;
        let attributes = Attributes::new()?;
        spawn(&program, &argv, &envp, &actions, &attributes)?
    };
    spawned(pid);
    // The child has its copies; ours must close so the pipes end when the child's tree does.
    drop((stdout_write, stderr_write));

    let mut child = SessionChild {
        pid,
        pidfd: None,
        exit_code: None,
        stdout: None,
        stderr: None,
    };
    // From here on, an error drops `child`, which kills and reaps the process.
    child.pidfd = match pidfd_open(pid) {
        // SAFETY: an OwnedFd keeps its descriptor open and unchanged until it is dropped,
        // which happens only with the AsyncFd.
        Ok(fd) => Some(
            unsafe { AsyncFd::register_with_interest(fd, Interest::READABLE) }
                .map_err(io::Error::from)?,
        ),
        Err(error) if error.raw_os_error() == Some(libc::ENOSYS) => None,
        Err(error) => return Err(error),
    };
    child.stdout = Some(pipe::Receiver::from_owned_fd(stdout_read)?);
    child.stderr = Some(pipe::Receiver::from_owned_fd(stderr_read)?);
    Ok(child)
}

/// `env` without the earlier of repeated names, in order: a later entry overrides, as with
/// `Command::env` (getenv would find the first of two).
fn last_of_each_name(env: &[(String, String)]) -> impl Iterator<Item = &(String, String)> {
    let last_index: std::collections::HashMap<&str, usize> = env
        .iter()
        .enumerate()
        .map(|(index, (name, _))| (name.as_str(), index))
        .collect();
    env.iter()
        .enumerate()
        .filter(move |(index, (name, _))| last_index.get(name.as_str()) == Some(index))
        .map(|(_, pair)| pair)
}

/// Where execvp would find `program`: as given when it names a path, else the first
/// executable regular file of that name on `path_var` (relative entries are relative to
/// the child's working directory, where execvp would resolve them).
fn resolve_program(program: &str, path_var: &str, workdir: &Path) -> io::Result<PathBuf> {
    if program.contains('/') {
        return Ok(PathBuf::from(program));
    }
    for dir in path_var.split(':') {
        let dir = if dir.is_empty() { "." } else { dir };
        let candidate = workdir.join(dir).join(program);
        if is_executable_file(&candidate) {
            return Ok(candidate);
        }
    }
    Err(io::Error::new(
        io::ErrorKind::NotFound,
        format!("`{program}` was not found on PATH ({path_var})"),
    ))
}

fn is_executable_file(path: &Path) -> bool {
    let Ok(c_path) = c_string(path.as_os_str()) else {
        return false;
    };
    // SAFETY: `c_path` is a valid NUL-terminated string for the duration of the call.
    let executable = unsafe { libc::access(c_path.as_ptr(), libc::X_OK) } == 0;
    executable && path.is_file()
}

fn c_string(text: &OsStr) -> io::Result<CString> {
    CString::new(text.as_bytes()).map_err(|_| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{text:?} contains a NUL byte"),
        )
    })
}

/// A pipe whose ends close on exec; the child gets its end through dup2, which clears that.
fn pipe_pair() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0; 2];
    // SAFETY: `fds` has room for the two descriptors pipe2 writes.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: pipe2 succeeded, so both are open descriptors that nothing else owns.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

fn pidfd_open(pid: i32) -> io::Result<OwnedFd> {
    // SAFETY: pidfd_open takes a pid and flags and returns a new descriptor or -1.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the kernel returned a new descriptor that only we own.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

/// posix_spawn reports failure as its return value, not through errno.
fn check(code: libc::c_int) -> io::Result<()> {
    if code == 0 {
        Ok(())
    } else {
        Err(io::Error::from_raw_os_error(code))
    }
}

struct FileActions(libc::posix_spawn_file_actions_t);

impl FileActions {
    fn new() -> io::Result<FileActions> {
        // SAFETY: a zeroed value is a placeholder that init overwrites in place; it is
        // wrapped (and so destroyed in Drop) only once init succeeded.
        unsafe {
            let mut raw: libc::posix_spawn_file_actions_t = std::mem::zeroed();
            check(libc::posix_spawn_file_actions_init(&mut raw))?;
            Ok(FileActions(raw))
        }
    }

    fn open_dev_null_as_stdin(&mut self) -> io::Result<()> {
        // SAFETY: the path is a static NUL-terminated string; glibc copies it.
        check(unsafe {
            libc::posix_spawn_file_actions_addopen(
                &mut self.0,
                libc::STDIN_FILENO,
                c"/dev/null".as_ptr(),
                libc::O_RDONLY,
                0,
            )
        })
    }

    fn dup2(&mut self, from: i32, to: i32) -> io::Result<()> {
        // SAFETY: plain descriptor numbers, checked by the child when it runs the action.
        check(unsafe { libc::posix_spawn_file_actions_adddup2(&mut self.0, from, to) })
    }

    fn chdir(&mut self, dir: &CString) -> io::Result<()> {
        // SAFETY: glibc copies the NUL-terminated path.
        check(unsafe { libc::posix_spawn_file_actions_addchdir_np(&mut self.0, dir.as_ptr()) })
    }
}

impl Drop for FileActions {
    fn drop(&mut self) {
        // SAFETY: initialised in `new`, destroyed once.
        unsafe { libc::posix_spawn_file_actions_destroy(&mut self.0) };
    }
}

/// New session, no blocked signals, and SIGPIPE back to its default: kiln ignores SIGPIPE
/// (as every Rust program does) and an ignored signal would stay ignored across exec.
struct Attributes(libc::posix_spawnattr_t);

impl Attributes {
    fn new() -> io::Result<Attributes> {
        // SAFETY: as for FileActions. The signal sets are initialised by sigemptyset.
        unsafe {
            let mut raw: libc::posix_spawnattr_t = std::mem::zeroed();
            check(libc::posix_spawnattr_init(&mut raw))?;
            let mut attributes = Attributes(raw);
            let mut empty: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut empty);
            let mut defaults: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut defaults);
            libc::sigaddset(&mut defaults, libc::SIGPIPE);
            check(libc::posix_spawnattr_setsigmask(&mut attributes.0, &empty))?;
            check(libc::posix_spawnattr_setsigdefault(
                &mut attributes.0,
                &defaults,
            ))?;
            let flags = libc::POSIX_SPAWN_SETSID
                | libc::POSIX_SPAWN_SETSIGMASK as libc::c_short
                | libc::POSIX_SPAWN_SETSIGDEF as libc::c_short;
            check(libc::posix_spawnattr_setflags(&mut attributes.0, flags))?;
            Ok(attributes)
        }
    }
}

impl Drop for Attributes {
    fn drop(&mut self) {
        // SAFETY: initialised in `new`, destroyed once.
        unsafe { libc::posix_spawnattr_destroy(&mut self.0) };
    }
}

fn spawn(
    program: &CString,
    argv: &[CString],
    envp: &[CString],
    actions: &FileActions,
    attributes: &Attributes,
) -> io::Result<i32> {
    let argv_ptrs: Vec<*mut libc::c_char> = argv
        .iter()
        .map(|arg| arg.as_ptr() as *mut libc::c_char)
        .chain(std::iter::once(std::ptr::null_mut()))
        .collect();
    let envp_ptrs: Vec<*mut libc::c_char> = envp
        .iter()
        .map(|var| var.as_ptr() as *mut libc::c_char)
        .chain(std::iter::once(std::ptr::null_mut()))
        .collect();
    let mut pid: libc::pid_t = 0;
    // SAFETY: every pointer refers to a live NUL-terminated string or is the terminating
    // null; posix_spawn does not keep them after it returns, nor write through them.
    check(unsafe {
        libc::posix_spawn(
            &mut pid,
            program.as_ptr(),
            &actions.0,
            &attributes.0,
            argv_ptrs.as_ptr(),
            envp_ptrs.as_ptr(),
        )
    })?;
    Ok(pid)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn programs_resolve_on_the_given_path_only() {
        let dir = tempfile::tempdir().unwrap();
        let path = format!("{}:/usr/bin:/bin", dir.path().display());
        assert!(resolve_program("sh", &path, dir.path())
            .unwrap()
            .ends_with("bin/sh"));
        let err = resolve_program("sh", dir.path().to_str().unwrap(), dir.path()).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::NotFound);
        assert_eq!(
            resolve_program("./x", "", dir.path()).unwrap(),
            PathBuf::from("./x")
        );
    }

    #[tokio::test]
    async fn the_child_gets_the_last_value_of_a_repeated_variable_and_its_exit_code() {
        let dir = tempfile::tempdir().unwrap();
        let env = [
            ("PATH".to_owned(), "/usr/bin:/bin".to_owned()),
            ("X".to_owned(), "first".to_owned()),
            ("X".to_owned(), "last".to_owned()),
        ];
        let argv = ["sh", "-c", "echo $X; pwd; exit 3"].map(str::to_owned);
        let mut child = spawn_session(&argv, &env, dir.path(), |_| {}).unwrap();
        let mut out = String::new();
        let mut stdout = child.stdout.take().unwrap();
        tokio::io::AsyncReadExt::read_to_string(&mut stdout, &mut out)
            .await
            .unwrap();
        assert_eq!(child.wait().await.unwrap(), 3);
        let cwd = dir.path().canonicalize().unwrap();
        assert_eq!(out, format!("last\n{}\n", cwd.display()));
    }

    #[test]
    fn a_non_executable_file_is_skipped() {
        let first = tempfile::tempdir().unwrap();
        std::fs::write(first.path().join("sh"), "not a program").unwrap();
        let path = format!("{}:/bin:/usr/bin", first.path().display());
        let found = resolve_program("sh", &path, first.path()).unwrap();
        assert!(!found.starts_with(first.path()), "{found:?}");
    }
}
