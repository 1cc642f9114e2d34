//! kiln never pulls: before a Docker job starts, every image it needs (its container or
//! platform image, its services) must already be in the daemon's store. `kiln run` and
//! `kiln runner start` check the same way and fail the job with the same fix.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use bollard::Docker;

use super::image_exists;
use crate::platform::DEFAULT_IMAGE;

/// Whether an image is in the daemon's store, once the first lookup answered.
type ImageLookup = Arc<tokio::sync::OnceCell<bool>>;

/// Images looked up in the daemon's store: each once per checker, also when the legs of a
/// matrix ask for it at the same moment. `kiln run` keeps one for the run; a runner makes one
/// per job, so an image loaded while it runs is found by the next job.
#[derive(Default)]
pub struct ImageChecks {
    known: Mutex<HashMap<String, ImageLookup>>,
}

impl ImageChecks {
    /// Looks each image up once; `Err` names the first missing one with the fix.
    pub async fn require(&self, docker: &Docker, images: &[String]) -> Result<(), String> {
        for image in images {
            let lookup = match self.known.lock() {
                Ok(mut known) => known.entry(image.clone()).or_default().clone(),
                Err(_) => ImageLookup::default(),
            };
            // Concurrent legs wait for the first one's answer; a failed lookup is not kept, so
            // the next leg asks again.
            let present = *lookup
                .get_or_try_init(|| image_exists(docker, image))
                .await
                .map_err(|e| format!("cannot look up image {image}: {e}"))?;
            if !present {
                return Err(missing_image(image));
            }
        }
        Ok(())
    }
}

/// The error a job shows when its image is not in the daemon's store.
pub fn missing_image(image: &str) -> String {
    if image == DEFAULT_IMAGE || image.starts_with("kiln-base:") {
        format!("image {image} is not available locally and kiln does not pull images: build it with `kiln image build --tag {image}`")
    } else {
        format!("image {image} is not available locally and kiln does not pull images: `docker pull {image}` (or `docker load`) first, or map the label to another image with -P")
    }
}
