//! kiln-runner: executes jobs. This crate holds the execution backends ([`backend`]), the
//! local base image builder ([`image`]) and, with the `test-support` feature, helpers for
//! tests that need Docker (`testing`: `require_docker`, `ensure_busybox_image`,
//! `ensure_base_image`).

pub mod actions;
pub mod agent;
pub mod backend;
pub mod executor;
pub mod image;
pub mod mask;
pub mod platform;
pub mod summary;
#[cfg(feature = "test-support")]
pub mod testing;
mod transfer;
