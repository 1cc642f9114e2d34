//! Where a job lives before it runs: its key (which names its folder and backend objects),
//! its host folders, and the [`JobSpec`] its backend prepares. Computed once, so a job
//! container can be started ahead of the job (see [`super::prestart`]) with exactly the
//! mounts and names the job will use.

use std::os::unix::fs::DirBuilderExt as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use kiln_workflow::value::Value;

use super::job::JobPaths;
use super::JobRequest;
use crate::backend::{sanitize_name, ContainerSpec, JobSpec, Mount, ServiceSpec};

/// Distinguishes jobs with the same display name in one process (matrix legs of reruns).
static JOB_SEQUENCE: AtomicU64 = AtomicU64::new(0);

/// A job's key and folders, created on disk.
#[derive(Debug, Clone)]
pub struct JobLayout {
    /// Unique per job in this process: names the job's folder and backend objects.
    pub key: String,
    pub paths: JobPaths,
}

impl JobLayout {
    /// Picks a new key for the job `req` describes and creates its folders.
    pub fn create(req: &JobRequest) -> Result<JobLayout, String> {
        let sequence = JOB_SEQUENCE.fetch_add(1, Ordering::Relaxed);
        let key = format!(
            "{}-{}-{sequence}",
            sanitize_name(&req.name),
            std::process::id()
        );
        let dir = req.dirs.jobs().join(&key);
        let repo_name = req
            .contexts
            .get("github")
            .and_then(|g| match g {
                Value::Object(g) => g.get("repository").map(Value::to_display_string),
                _ => None,
            })
            .and_then(|r| r.rsplit('/').next().map(str::to_owned))
            .filter(|r| !r.is_empty() && !r.contains(".."))
            .unwrap_or_else(|| "workspace".to_owned());
        let work = dir.join("work");
        let paths = JobPaths {
            workspace: work.join(&repo_name),
            temp: dir.join("temp"),
            files: dir.join("temp").join("_runner_file_commands"),
            dir: dir.clone(),
        };
        // Only kiln's user may enter the job's folder: its scripts hold the job's secrets.
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&dir)
            .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        for folder in [&paths.workspace, &paths.files] {
            std::fs::create_dir_all(folder)
                .map_err(|e| format!("cannot create {}: {e}", folder.display()))?;
        }
        Ok(JobLayout { key, paths })
    }

    /// What the backend prepares for the job: its container (in Docker mode the job's
    /// evaluated `container:` or its platform image), services, workspace and the folders it
    /// mounts.
    pub fn job_spec(
        &self,
        req: &JobRequest,
        backend_name: &str,
        container: Option<ContainerSpec>,
        services: Vec<ServiceSpec>,
    ) -> JobSpec {
        let mut extra_mounts = vec![mount(&self.paths.temp, false)];
        let mut read_only: Vec<PathBuf> = vec![req.dirs.actions()];
        read_only.extend(req.action_cache.iter().cloned());
        read_only.extend(req.local_repositories.iter().map(|(_, p)| p.clone()));
        for dir in read_only {
            if dir.is_dir() || dir == req.dirs.actions() {
                // The clone folder is mounted even before the first clone, so later clones
                // are visible in the container.
                let _ = std::fs::create_dir_all(&dir);
                extra_mounts.push(mount(&dir, true));
            }
        }
        let container = if backend_name == "docker" {
            match (container, &req.platform_image) {
                (Some(container), _) => Some(container),
                (None, Some(image)) => Some(ContainerSpec {
                    image: image.clone(),
                    ..Default::default()
                }),
                (None, None) => None,
            }
        } else {
            container
        };
        JobSpec {
            job_key: self.key.clone(),
            container,
            services,
            workspace: self.paths.workspace.clone(),
            workspace_job_path: None,
            extra_mounts,
            labels: vec![("kiln.job".to_owned(), req.name.clone())],
        }
    }
}

fn mount(path: &Path, read_only: bool) -> Mount {
    Mount {
        host_path: path.to_path_buf(),
        job_path: path.to_string_lossy().into_owned(),
        read_only,
    }
}
