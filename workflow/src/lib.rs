//! kiln-workflow: the GitHub Actions workflow language. Pure: no async runtime and no I/O
//! beyond reading the files it is given.

pub mod expr;
pub mod value;

pub use value::{Kind, Object, Value};
pub mod diag;
pub mod model;
pub mod parse;
pub mod pinning;
pub mod yaml;

pub use diag::{Diagnostic, Severity};
pub use parse::{
    parse_action, parse_workflow, parse_workflow_with, ParseOptions, ParseResult, PermissionsPolicy,
};
pub use pinning::unpinned_uses;
