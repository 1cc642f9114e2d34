//! kiln-runner: executes jobs. This crate holds the execution backends ([`backend`]), the
//! local base image builder ([`image`]) and helpers for tests that need Docker ([`testing`]).

pub mod backend;
pub mod image;
pub mod testing;
pub mod actions;
pub mod executor;
pub mod mask;
