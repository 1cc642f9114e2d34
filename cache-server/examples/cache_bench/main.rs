//! Benchmark driver for benches/cache-bench.sh (see docs/cache.md, "Performance").
//!
//!   cache_bench gen-tree DIR              50,000 files of 0-8 KiB plus 4 files of 64 MiB
//!   cache_bench gen-file DIR              one 256 MiB file
//!   cache_bench digest DIR                content digest of a tree (restore verification)
//!   cache_bench kiln WORK SRC [--resave]  save SRC to a fresh server, restore into WORK/out;
//!                                         with --resave, change one file, save again, undo
//!   cache_bench kiln-save WORK SRC        the save alone, to a fresh server in WORK (which a
//!                                         kiln-restore can then read)
//!   cache_bench floor SRC OUT [THREADS]   the same tree created from memory: this machine's
//!                                         floor for a restore (THREADS writers, default 2)
//!   cache_bench v1-kiln WORK FILE         FILE through kiln's v1 API (reserve, PATCH, commit,
//!                                         lookup, download), as `actions/cache` v1 does
//!   cache_bench v1-env FILE OUT           the same against $ACTIONS_CACHE_URL (act's server,
//!                                         run from a workflow step); results go to OUT
//!
//! Results are printed as `name value` lines for the script to collect.

mod data;
mod kiln;
mod v1;

use std::path::Path;
use std::process::ExitCode;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    let arg = |i: usize| args.get(i).map(Path::new);
    let result = match (args.get(1).map(String::as_str), arg(2), arg(3)) {
        (Some("gen-tree"), Some(dir), _) => data::gen_tree(dir).map_err(|e| e.to_string()),
        (Some("gen-file"), Some(dir), _) => data::gen_file(dir).map_err(|e| e.to_string()),
        (Some("digest"), Some(dir), _) => data::tree_digest(dir)
            .map(|d| println!("{d}"))
            .map_err(|e| e.to_string()),
        (Some("kiln"), Some(work), Some(src)) => {
            kiln::run(work, src, args.iter().any(|a| a == "--resave"))
        }
        (Some("kiln-save"), Some(work), Some(src)) => kiln::save_only(work, src),
        (Some("kiln-restore"), Some(work), Some(src)) => match arg(4) {
            Some(out) => kiln::restore_only(work, src, out),
            None => Err("kiln-restore needs WORK SRC OUT".into()),
        },
        (Some("floor"), Some(src), Some(out)) => {
            let threads = args.get(4).and_then(|t| t.parse().ok()).unwrap_or(2);
            data::create_floor(src, out, threads)
                .map(|t| println!("floor_seconds {t:.3}"))
                .map_err(|e| e.to_string())
        }
        (Some("v1-kiln"), Some(work), Some(file)) => kiln::v1_against_kiln(work, file),
        (Some("v1-env"), Some(file), Some(out)) => v1::against_env(file, out),
        _ => Err(
            "usage: cache_bench gen-tree DIR | gen-file DIR | digest DIR | \
                  kiln WORK SRC [--resave] | kiln-save WORK SRC | kiln-restore WORK SRC OUT | floor SRC OUT [THREADS] | v1-kiln WORK FILE | v1-env FILE OUT"
                .into(),
        ),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("cache_bench: {e}");
            ExitCode::FAILURE
        }
    }
}
