#!/usr/bin/env bash
# Runs one cargo-fuzz target for a while, then merges the inputs that found new coverage into
# the committed corpus (fuzz/corpus/TARGET), which an ordinary test replays.
#   scripts/fuzz.sh expression 600
#   scripts/fuzz.sh workflow 600
# Needs cargo-fuzz (`cargo install cargo-fuzz`). The project builds on the stable toolchain;
# RUSTC_BOOTSTRAP lets cargo-fuzz pass the sanitizer flags it needs.
set -euo pipefail
target="${1:?usage: scripts/fuzz.sh TARGET [SECONDS]}"
seconds="${2:-600}"
cd "$(dirname "$0")/../fuzz"
scratch="$(mktemp -d "${TMPDIR:-/tmp}/kiln-fuzz-$target.XXXXXX")"
trap 'rm -rf "$scratch"' EXIT
export RUSTC_BOOTSTRAP=1
echo "fuzz: $target for ${seconds}s (new inputs in $scratch)"
cargo fuzz run -s none "$target" "$scratch" "corpus/$target" -- \
  -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -max_len=8192 -print_final_stats=1
echo "fuzz: merging inputs with new coverage into corpus/$target"
cargo fuzz run -s none "$target" "corpus/$target" "$scratch" -- -merge=1
echo "fuzz: corpus/$target now holds $(ls "corpus/$target" | wc -l) inputs"
