#!/usr/bin/env bash
# Runs one cargo-fuzz target for a while, then merges the inputs that found new coverage into
# the committed corpus (fuzz/corpus/TARGET), which an ordinary test replays.
#   scripts/fuzz.sh expression 600
#   scripts/fuzz.sh workflow 600
#   scripts/fuzz.sh unpack_tar 600     (archive restores: one or two tars into one workspace)
# Needs cargo-fuzz (`cargo install cargo-fuzz`). The project builds on the stable toolchain;
# RUSTC_BOOTSTRAP lets cargo-fuzz pass the sanitizer flags it needs.
set -euo pipefail
target="${1:?usage: scripts/fuzz.sh TARGET [SECONDS]}"
seconds="${2:-600}"
# A tar header is 512 bytes: a chain of links across two archives needs a dozen of them.
case "$target" in
  unpack_tar) max_len=16384 ;;
  *) max_len=8192 ;;
esac
cd "$(dirname "$0")/../fuzz"
scratch="$(mktemp -d "${TMPDIR:-/tmp}/kiln-fuzz-$target.XXXXXX")"
trap 'rm -rf "$scratch"' EXIT
export RUSTC_BOOTSTRAP=1
echo "fuzz: $target for ${seconds}s (new inputs in $scratch)"
cargo fuzz run -s none "$target" "$scratch" "corpus/$target" -- \
  -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -max_len="$max_len" -print_final_stats=1
echo "fuzz: merging inputs with new coverage into corpus/$target"
cargo fuzz run -s none "$target" "corpus/$target" "$scratch" -- -merge=1
echo "fuzz: corpus/$target now holds $(ls "corpus/$target" | wc -l) inputs"
