//! Running the `kiln` binary from a test: output captured, killed if the test ends first,
//! bounded in time.
#![allow(dead_code)]

use std::process::{Output, Stdio};
use std::time::Duration;

/// `kiln` with no input, its output captured, killed when dropped.
pub fn kiln_command() -> tokio::process::Command {
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_kiln"));
    command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    command
}

/// Runs `command` to its end, within `limit`.
pub async fn output_within(command: &mut tokio::process::Command, limit: Duration) -> Output {
    tokio::time::timeout(limit, command.output())
        .await
        .expect("kiln finished in time")
        .expect("kiln runs")
}

/// Standard output, then standard error.
pub fn text(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}
