//! Where a job runs: the `-P` platform table lives in kiln-runner, which `kiln runner start`
//! shares with `kiln run`.

pub use kiln_runner::platform::{ExecutorKind, Platform, PlatformMap};
