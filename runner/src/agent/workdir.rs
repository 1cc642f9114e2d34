//! The runner's work directory: one folder per job (`jobs/<job>-<attempt>-<lease>/`, holding
//! the job's source clone and its executor folders), the snapshot and git caches, and a lock
//! file, so two runners never share one directory.
//!
//! A runner that starts again removes what an earlier instance left: every job folder still
//! there is a job that instance did not finish, and the executor names its Docker objects
//! after the job keys that are the folder names under `<job>/run/jobs/`.

use std::fs::File;
use std::os::unix::fs::DirBuilderExt as _;
use std::os::unix::io::AsRawFd as _;
use std::path::{Path, PathBuf};

use kiln_proto::v1 as pb;

use super::AgentError;
use crate::actions::remove_action_images;
use crate::backend::{sanitize_name, DockerBackend};
use crate::executor::RunDirs;

pub(crate) struct WorkDir {
    root: PathBuf,
    /// Holds the exclusive lock for as long as the runner runs.
    _lock: File,
}

impl WorkDir {
    /// Creates (mode 0700) and locks the directory.
    pub(crate) fn open(root: &Path) -> Result<WorkDir, AgentError> {
        let failed = |detail: String| AgentError::WorkDir(format!("{}: {detail}", root.display()));
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(root.join("jobs"))
            .map_err(|e| failed(format!("cannot create it: {e}")))?;
        let lock = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(root.join("lock"))
            .map_err(|e| failed(format!("cannot open its lock file: {e}")))?;
        // SAFETY: flock on a descriptor we own; it is released when the file is closed.
        let locked = unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
        if locked != 0 {
            return Err(failed(
                "another kiln runner uses this directory; give each runner its own --config (or --work-dir)".to_owned(),
            ));
        }
        Ok(WorkDir {
            root: root.to_path_buf(),
            _lock: lock,
        })
    }

    pub(crate) fn root(&self) -> &Path {
        &self.root
    }

    /// The folder of one lease of one job. The names come from the scheduler, so they are
    /// reduced to safe characters (and a hash when that changed them).
    pub(crate) fn job_root(&self, job: &pb::JobRef) -> PathBuf {
        let lease: String = job.lease_id.chars().take(12).collect();
        self.root.join("jobs").join(sanitize_name(&format!(
            "{}-{}-{lease}",
            job.job_id, job.attempt
        )))
    }

    /// Removes the job folders an earlier instance left, and (with Docker) the containers,
    /// networks and action images of their jobs. Returns one line per thing removed or not.
    pub(crate) async fn sweep(&self, docker: Option<&DockerBackend>) -> Vec<String> {
        let mut notes = Vec::new();
        let Ok(entries) = std::fs::read_dir(self.root.join("jobs")) else {
            return notes;
        };
        for entry in entries.flatten() {
            let folder = entry.path();
            let run = RunDirs::new(folder.join("run"));
            let keys: Vec<String> = std::fs::read_dir(run.jobs())
                .into_iter()
                .flatten()
                .flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect();
            match docker {
                Some(docker) => {
                    for key in &keys {
                        match docker.remove_job_objects(key).await {
                            Ok(()) => notes.push(format!(
                                "removed the containers and networks of job {key}, left by an earlier run of this runner"
                            )),
                            Err(error) => notes.push(format!(
                                "could not remove the containers of job {key}, left by an earlier run of this runner: {error}"
                            )),
                        }
                    }
                    notes.extend(remove_action_images(&run).await);
                }
                None if !keys.is_empty() => notes.push(format!(
                    "{} holds jobs of an earlier run of this runner; without Docker, containers they may have left are not looked for",
                    folder.display()
                )),
                None => {}
            }
            match std::fs::remove_dir_all(&folder) {
                Ok(()) => notes.push(format!(
                    "removed {}, left by an earlier run of this runner",
                    folder.display()
                )),
                Err(error) => notes.push(format!("could not remove {}: {error}", folder.display())),
            }
        }
        notes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_directory_serves_one_runner_at_a_time() {
        let root = tempfile::tempdir().unwrap();
        let first = WorkDir::open(root.path()).unwrap();
        let second = WorkDir::open(root.path()).err().unwrap().to_string();
        assert!(second.contains("another kiln runner"), "{second}");
        drop(first);
        WorkDir::open(root.path()).unwrap();
    }

    #[test]
    fn job_folders_stay_inside_the_work_directory() {
        let root = tempfile::tempdir().unwrap();
        let work = WorkDir::open(root.path()).unwrap();
        let job = pb::JobRef {
            job_id: "../../etc/passwd".to_owned(),
            lease_id: "lease/../x".to_owned(),
            attempt: 1,
        };
        let folder = work.job_root(&job);
        assert_eq!(folder.parent(), Some(root.path().join("jobs").as_path()));
        let name = folder.file_name().unwrap().to_string_lossy();
        assert!(!name.contains('/') && !name.starts_with('.'), "{name}");
    }

    #[tokio::test]
    async fn a_new_instance_removes_the_job_folders_of_the_last() {
        let root = tempfile::tempdir().unwrap();
        let work = WorkDir::open(root.path()).unwrap();
        let left = root.path().join("jobs/build-1-abc/run/jobs/build-77-0");
        std::fs::create_dir_all(&left).unwrap();
        let notes = work.sweep(None).await;
        assert!(!root.path().join("jobs/build-1-abc").exists(), "{notes:?}");
        assert!(
            notes.iter().any(|n| n.contains("without Docker")),
            "{notes:?}"
        );
    }
}
