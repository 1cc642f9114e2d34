//! kiln-workflow: the GitHub Actions workflow language. Pure: no async runtime and no I/O
//! beyond reading the files it is given (workflow files, and the workspace for hashFiles).

pub mod commands;
pub mod diag;
pub mod envfile;
pub mod eval;
pub mod expr;
pub mod hashfiles;
pub mod matrix;
pub mod model;
pub mod parse;
pub mod pinning;
pub mod plan;
pub mod status;
pub mod uses;
pub mod value;
pub mod yaml;

pub use diag::{Diagnostic, Severity};
pub use parse::{
    parse_action, parse_workflow, parse_workflow_with, ParseOptions, ParseResult, PermissionsPolicy,
};
pub use pinning::unpinned_uses;
pub use status::{CacheLookup, CacheSave, Conclusion, StepCache};
pub use value::{Kind, Object, Value};
