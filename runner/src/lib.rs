//! kiln-runner: executes jobs. This crate holds the execution backends ([`backend`]), the
//! local base image builder ([`image`]) and, with the `test-support` feature, helpers for
//! tests that need Docker (`testing`: `require_docker`, `ensure_busybox_image`,
//! `ensure_base_image`).

pub mod backend;
pub mod image;
#[cfg(feature = "test-support")]
pub mod testing;
pub mod actions;
pub mod executor;
pub mod mask;
