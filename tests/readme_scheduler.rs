//! README's "a scheduler and two runners on one machine", run as written: the block's
//! commands in bash, with this build's `kiln` first on PATH and a free port instead of 8470
//! (tests run side by side). The run must succeed on the registered runners, and every leg of
//! the example must have printed its lines through `kiln submit`.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const LIMIT: Duration = Duration::from_secs(240);

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The first ```sh block after the section's heading.
fn readme_block() -> String {
    let readme = std::fs::read_to_string(root().join("README.md")).expect("README.md");
    let section = readme
        .split("### A scheduler and two runners on one machine")
        .nth(1)
        .expect("README has the section \"A scheduler and two runners on one machine\"");
    let start = section.find("```sh\n").expect("the section has a sh block") + "```sh\n".len();
    let end = section[start..].find("```").expect("the block ends") + start;
    section[start..end].to_owned()
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

#[test]
fn readmes_scheduler_and_two_runners_run_the_example() {
    let block = readme_block();
    assert!(
        block.contains("127.0.0.1:8470"),
        "the block uses port 8470:\n{block}"
    );
    let script = block.replace("8470", &free_port().to_string());
    let kiln = PathBuf::from(env!("CARGO_BIN_EXE_kiln"));
    let path = format!(
        "{}:{}",
        kiln.parent().expect("the binary's directory").display(),
        std::env::var("PATH").unwrap_or_default()
    );
    // Whatever the block leaves running is stopped with the shell's jobs when it ends early.
    let guarded = format!("trap 'kill $(jobs -p) 2>/dev/null' EXIT\nset -e\n{script}");
    let mut child = Command::new("bash")
        .arg("-c")
        .arg(&guarded)
        .current_dir(root())
        .env("PATH", path)
        .env_remove("KILN_URL")
        .env_remove("KILN_TOKEN")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("bash");
    let start = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        if start.elapsed() > LIMIT {
            let _ = child.kill();
            panic!("README's scheduler block did not finish within {LIMIT:?}");
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let output = child.wait_with_output().expect("output");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    eprintln!("{stdout}\n{stderr}");
    assert!(
        status.success(),
        "the block failed ({status}):\n{stdout}\n{stderr}"
    );
    for line in [
        "python=3.11 variant=minimal",
        "python=3.12 variant=full",
        "experimental=true",
        "python=3.13 variant=minimal",
        "sources: a.txt b.txt",
    ] {
        assert!(
            stdout.contains(line),
            "`{line}` missing from kiln submit's output:\n{stdout}\n{stderr}"
        );
    }
    assert!(
        stdout.contains("matrix build") && stdout.contains("success"),
        "the run's summary is missing:\n{stdout}"
    );
}
