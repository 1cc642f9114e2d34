//! kiln-workflow: the GitHub Actions workflow language. Pure: no async runtime and no I/O
//! beyond reading the files it is given.

pub mod hashfiles;
pub mod value;

pub use hashfiles::{hash_files, hash_files_with, matched_files, HashFilesError, HashFilesOptions};
pub use value::{Kind, Object, Value};
