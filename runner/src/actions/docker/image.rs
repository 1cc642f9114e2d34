//! Images of actions with a Dockerfile: built through the Docker API at their first use in a
//! run (once per run, also when several jobs use the action at once) and removed at run end.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, LazyLock, Mutex};

use bollard::query_parameters::{
    BuildImageOptionsBuilder, ListImagesOptionsBuilder, RemoveImageOptionsBuilder,
};
use futures_util::StreamExt;
use sha2::{Digest, Sha256};
use tokio::sync::OnceCell;

use super::connect;
use crate::actions::LoadedAction;
use crate::executor::job::JobRunner;
use crate::executor::step::StepCtx;
use crate::executor::RunDirs;

/// Label on every image built from an action's Dockerfile; its value is the run's directory,
/// so the end of the run removes exactly its own images.
pub const ACTION_IMAGE_LABEL: &str = "dev.kiln.action-image-run";

/// Images built in this process, per run directory and digest of the build context: each
/// action is built once per run, also when several jobs use it at the same time.
type BuildCell = Arc<OnceCell<Result<String, String>>>;
static BUILT: LazyLock<Mutex<HashMap<(PathBuf, String), BuildCell>>> =
    LazyLock::new(|| Mutex::new(HashMap::new()));

impl JobRunner {
    /// The image of the action's Dockerfile, built at its first use in the run: an action
    /// whose files are the same (checked out again by another job) is not built again.
    pub(super) async fn action_image(
        &self,
        ctx: &StepCtx,
        loaded: &LoadedAction,
        dockerfile: &str,
    ) -> Result<String, String> {
        let dir = loaded.dir.clone();
        let context = tokio::task::spawn_blocking(move || -> std::io::Result<Vec<u8>> {
            let mut builder = tar::Builder::new(Vec::new());
            builder.follow_symlinks(false);
            // No times or owners in the archive: equal files give an equal digest.
            builder.mode(tar::HeaderMode::Deterministic);
            builder.append_dir_all(".", &dir)?;
            builder.into_inner()
        })
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| format!("cannot pack {}: {e}", loaded.dir.display()))?;
        let mut hasher = Sha256::new();
        hasher.update(self.req.dirs.root.to_string_lossy().as_bytes());
        hasher.update([0]);
        hasher.update(dockerfile.as_bytes());
        hasher.update([0]);
        hasher.update(&context);
        let digest: String = hasher.finalize()[..8]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        let cell = {
            let mut built = BUILT
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            built
                .entry((self.req.dirs.root.clone(), digest.clone()))
                .or_default()
                .clone()
        };
        let tag = format!("kiln-action-{digest}:latest");
        cell.get_or_init(|| self.build_action_image(ctx, loaded, dockerfile, tag, context))
            .await
            .clone()
    }

    /// Builds the action's Dockerfile through the Docker API, labelled with the run so
    /// [`remove_action_images`] finds it.
    async fn build_action_image(
        &self,
        ctx: &StepCtx,
        loaded: &LoadedAction,
        dockerfile: &str,
        tag: String,
        context: Vec<u8>,
    ) -> Result<String, String> {
        let docker = connect().await?;
        let run_dir = self.req.dirs.root.to_string_lossy().into_owned();
        self.emitter.log(
            &self.log,
            &ctx.name,
            &format!(
                "Build container for action use: '{}'.",
                loaded.dir.join(dockerfile).display()
            ),
        );
        let labels = HashMap::from([(ACTION_IMAGE_LABEL, run_dir.as_str())]);
        let options = BuildImageOptionsBuilder::new()
            .dockerfile(dockerfile)
            .t(&tag)
            .rm(true)
            .labels(&labels)
            .build();
        let mut stream = docker.build_image(
            options,
            None::<HashMap<_, _>>,
            Some(bollard::body_full(context.into())),
        );
        while let Some(item) = stream.next().await {
            let info = item
                .map_err(|e| format!("building {dockerfile} in {}: {e}", loaded.dir.display()))?;
            if let Some(line) = info
                .stream
                .as_deref()
                .map(str::trim_end)
                .filter(|l| !l.is_empty())
            {
                self.emitter.log(&self.log, &ctx.name, line);
            }
            if let Some(error) = info.error_detail.and_then(|d| d.message) {
                return Err(format!(
                    "building {dockerfile} in {} failed: {error}",
                    loaded.dir.display()
                ));
            }
        }
        Ok(tag)
    }
}

/// Removes the images built from action Dockerfiles during the run in `dirs`. Returns what
/// could not be removed, as messages.
pub async fn remove_action_images(dirs: &RunDirs) -> Vec<String> {
    let run_dir = dirs.root.to_string_lossy().into_owned();
    {
        let mut built = BUILT
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        built.retain(|(root, _), _| root != &dirs.root);
    }
    let docker = match connect().await {
        Ok(docker) => docker,
        Err(error) => return vec![error],
    };
    let filters = HashMap::from([(
        "label".to_owned(),
        vec![format!("{ACTION_IMAGE_LABEL}={run_dir}")],
    )]);
    let images = match docker
        .list_images(Some(
            ListImagesOptionsBuilder::new().filters(&filters).build(),
        ))
        .await
    {
        Ok(images) => images,
        Err(e) => return vec![format!("cannot list the run's action images: {e}")],
    };
    let mut errors = Vec::new();
    for image in images {
        let options = RemoveImageOptionsBuilder::new().force(true).build();
        if let Err(e) = docker.remove_image(&image.id, Some(options), None).await {
            errors.push(format!("cannot remove the action image {}: {e}", image.id));
        }
    }
    errors
}
