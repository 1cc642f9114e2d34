//! Where a job runs: `runs-on` labels mapped to a platform (`-P label=image` or
//! `-P label=-self-hosted`, as act spells it), and which executor runs the jobs. `kiln run`
//! and `kiln runner start` share it, so a label means the same locally and on a runner.

use std::fmt;

/// The image `ubuntu-*` maps to in Docker mode: what `kiln image build` makes.
pub const DEFAULT_IMAGE: &str = "kiln-base:bookworm";

/// What a `runs-on` label maps to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Platform {
    /// Directly on this machine (act's `-self-hosted`).
    Host,
    /// In a container of this image (Docker executor).
    Image(String),
}

impl fmt::Display for Platform {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Platform::Host => f.write_str("host"),
            Platform::Image(image) => f.write_str(image),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExecutorKind {
    Docker,
    Host,
}

impl ExecutorKind {
    pub fn name(self) -> &'static str {
        match self {
            ExecutorKind::Docker => "docker",
            ExecutorKind::Host => "host",
        }
    }
}

#[derive(Debug, thiserror::Error)]
#[error("invalid platform mapping `{0}`: expected LABEL=IMAGE or LABEL=-self-hosted")]
pub struct PlatformError(String);

/// The label -> platform table of one run.
#[derive(Debug, Clone)]
pub struct PlatformMap {
    explicit: Vec<(String, Platform)>,
    executor: ExecutorKind,
}

impl PlatformMap {
    /// `flags` are the `-P` values in order; a later mapping of the same label wins.
    pub fn new(flags: &[String], executor: ExecutorKind) -> Result<PlatformMap, PlatformError> {
        let mut explicit: Vec<(String, Platform)> = Vec::new();
        for flag in flags {
            let (label, target) = flag
                .split_once('=')
                .map(|(l, t)| (l.trim(), t.trim()))
                .filter(|(l, t)| !l.is_empty() && !t.is_empty())
                .ok_or_else(|| PlatformError(flag.clone()))?;
            let platform = if target == "-self-hosted" {
                Platform::Host
            } else {
                Platform::Image(target.to_owned())
            };
            explicit.retain(|(l, _)| !l.eq_ignore_ascii_case(label));
            explicit.push((label.to_owned(), platform));
        }
        Ok(PlatformMap { explicit, executor })
    }

    /// The platform of the first label that maps to one, as act picks it; `None`: the job is
    /// skipped. In host mode every mapped label runs on the host.
    pub fn resolve(&self, labels: &[String]) -> Option<Platform> {
        let platform = labels.iter().find_map(|label| {
            self.explicit
                .iter()
                .find(|(l, _)| l.eq_ignore_ascii_case(label))
                .map(|(_, p)| p.clone())
                .or_else(|| default_platform(label))
        })?;
        Some(match self.executor {
            ExecutorKind::Host => Platform::Host,
            ExecutorKind::Docker => platform,
        })
    }

    /// [`Self::resolve`], or the message saying which `-P` flag would map the labels.
    pub fn resolve_or_explain(&self, labels: &[String]) -> Result<Platform, String> {
        self.resolve(labels).ok_or_else(|| {
            let label = labels.first().map(String::as_str).unwrap_or("LABEL");
            format!(
                "runs-on [{}] maps to no platform; map it with `-P {label}=IMAGE` or `-P {label}=-self-hosted`",
                labels.join(", ")
            )
        })
    }
}

fn default_platform(label: &str) -> Option<Platform> {
    let lower = label.to_ascii_lowercase();
    (lower == "ubuntu-latest" || lower.starts_with("ubuntu-"))
        .then(|| Platform::Image(DEFAULT_IMAGE.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(items: &[&str]) -> Vec<String> {
        items.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn ubuntu_maps_to_the_base_image_in_docker_mode_and_the_host_in_host_mode() {
        let docker = PlatformMap::new(&[], ExecutorKind::Docker).expect("valid");
        assert_eq!(
            docker.resolve(&labels(&["ubuntu-22.04"])),
            Some(Platform::Image(DEFAULT_IMAGE.into()))
        );
        let host = PlatformMap::new(&[], ExecutorKind::Host).expect("valid");
        assert_eq!(
            host.resolve(&labels(&["ubuntu-latest"])),
            Some(Platform::Host)
        );
        assert_eq!(host.resolve(&labels(&["windows-latest"])), None);
    }

    #[test]
    fn explicit_mappings_win_and_the_first_mapped_label_is_used() {
        let flags = labels(&[
            "self-hosted=-self-hosted",
            "gpu=cuda:12",
            "ubuntu-latest=debian:12",
            "GPU=cuda:13",
        ]);
        let map = PlatformMap::new(&flags, ExecutorKind::Docker).expect("valid");
        assert_eq!(
            map.resolve(&labels(&["ubuntu-latest"])),
            Some(Platform::Image("debian:12".into()))
        );
        assert_eq!(
            map.resolve(&labels(&["macos", "gpu"])),
            Some(Platform::Image("cuda:13".into()))
        );
        assert_eq!(
            map.resolve(&labels(&["self-hosted", "linux"])),
            Some(Platform::Host)
        );
    }

    #[test]
    fn malformed_mappings_are_rejected() {
        for bad in ["nolabel", "=img", "label="] {
            assert!(
                PlatformMap::new(&[bad.to_owned()], ExecutorKind::Host).is_err(),
                "{bad}"
            );
        }
    }
}
