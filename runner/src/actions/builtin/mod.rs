//! Actions kiln runs itself, without downloading them: `actions/checkout`, the v4 artifact
//! actions, `actions/cache` (and its `restore`/`save` halves) and `actions/setup-*` for
//! versions already installed.

mod artifacts;
mod cache;
mod checkout;
mod setup;

pub use artifacts::ArtifactServer;
pub use cache::CacheSave;

use indexmap::IndexMap;
use kiln_workflow::Conclusion;

use super::action_inputs;
use crate::executor::job::{Frame, JobRunner};
use crate::executor::step::StepCtx;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Builtin {
    Checkout,
    UploadArtifact,
    DownloadArtifact,
    Setup(setup::Tool),
    Cache(cache::CacheStep),
}

impl Builtin {
    /// The built-in standing in for `owner/repo[/path]`; `path` only matters for the cache
    /// actions (`actions/cache/restore`, `actions/cache/save`).
    pub fn find(owner: &str, repo: &str, path: Option<&str>) -> Option<Builtin> {
        if !owner.eq_ignore_ascii_case("actions") {
            return None;
        }
        if repo.eq_ignore_ascii_case("cache") {
            return cache::CacheStep::find(path).map(Builtin::Cache);
        }
        Some(match repo.to_ascii_lowercase().as_str() {
            "checkout" => Builtin::Checkout,
            "upload-artifact" => Builtin::UploadArtifact,
            "download-artifact" => Builtin::DownloadArtifact,
            "setup-node" => Builtin::Setup(setup::Tool::Node),
            "setup-python" => Builtin::Setup(setup::Tool::Python),
            "setup-go" => Builtin::Setup(setup::Tool::Go),
            "setup-java" => Builtin::Setup(setup::Tool::Java),
            _ => return None,
        })
    }
}

/// A built-in's result: outputs on success, the error message otherwise.
pub type BuiltinResult = Result<Vec<(String, String)>, String>;

/// Input lookup ignoring case, with empty meaning unset, as `core.getInput` does.
pub fn input<'a>(inputs: &'a IndexMap<String, String>, name: &str) -> Option<&'a str> {
    inputs
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.trim())
        .filter(|v| !v.is_empty())
}

impl JobRunner {
    pub(super) async fn run_builtin(
        &mut self,
        builtin: Builtin,
        frame: &Frame,
        ctx: &StepCtx,
        with: &IndexMap<String, String>,
    ) -> (Conclusion, Vec<(String, String)>) {
        let inputs = match action_inputs(self, frame, ctx, None, with) {
            Ok(inputs) => inputs,
            Err(message) => return (self.fail(&ctx.name, &message), Vec::new()),
        };
        let result = match builtin {
            Builtin::Checkout => self.checkout(ctx, &inputs).await,
            Builtin::UploadArtifact => self.upload_artifact(ctx, &inputs).await,
            Builtin::DownloadArtifact => self.download_artifact(ctx, &inputs).await,
            Builtin::Setup(tool) => self.setup_tool(ctx, tool, &inputs).await,
            Builtin::Cache(step) => self.cache_step(ctx, step, &inputs).await,
        };
        match result {
            Ok(outputs) => (Conclusion::Success, outputs),
            Err(message) => (self.fail(&ctx.name, &message), Vec::new()),
        }
    }

    /// A path input resolved against the workspace; it may not climb out of it.
    pub(crate) fn workspace_path(&self, relative: &str) -> Result<std::path::PathBuf, String> {
        let path = std::path::Path::new(relative);
        if path.is_absolute() {
            return Ok(path.to_path_buf());
        }
        if path
            .components()
            .any(|c| matches!(c, std::path::Component::ParentDir))
        {
            return Err(format!("`{relative}` must stay inside the workspace"));
        }
        Ok(self.paths.workspace.join(path))
    }
}
