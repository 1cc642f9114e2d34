pub mod cache;
pub mod expr;
pub mod hash_files;
pub mod image;
pub mod plan;
pub mod run;
pub mod runner;
pub mod validate;
mod workflow_files;
