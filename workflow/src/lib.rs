//! kiln-workflow: the GitHub Actions workflow language. Pure: no async runtime and no I/O
//! beyond reading the files it is given.

pub mod expr;
pub mod value;

pub use value::{Kind, Object, Value};
