#!/usr/bin/env bash
# Cache save/restore throughput through kiln's native client and server on loopback, as ratios
# against `tar | zstd -3 -T0` (save) and `zstd -d | tar -x` (restore) on the same data, plus the
# share of bytes re-uploaded after a one-file change.
#   benches/cache-bench.sh            # data in ${KILN_BENCH_DIR:-target/bench-data}, generated once
# The act v1 comparison is not included (see docs/cache.md).
set -euo pipefail
cd "$(dirname "$0")/.."
BENCH_DIR=${KILN_BENCH_DIR:-target/bench-data}
mkdir -p "$BENCH_DIR"
BENCH_DIR=$(cd "$BENCH_DIR" && pwd)
cargo build --release -p kiln-cache --example cache_bench >&2
BIN=target/release/examples/cache_bench
[ -d "$BENCH_DIR/tree" ] || "$BIN" gen-tree "$BENCH_DIR/tree"
[ -d "$BENCH_DIR/file" ] || "$BIN" gen-file "$BENCH_DIR/file"

now() { date +%s.%N; }
ratio() { python3 -c "print(f'{$1/$2:.2f}')"; }

for data in tree file; do
  src="$BENCH_DIR/$data"
  work="$BENCH_DIR/run-$data"
  rm -rf "$work"; mkdir -p "$work"
  sync
  t0=$(now); tar -C "$BENCH_DIR" -cf - "$data" | zstd -3 -T0 -q -o "$work/ref.tar.zst"; t1=$(now)
  ref_save=$(python3 -c "print($t1-$t0)")
  mkdir -p "$work/ref-out"; sync
  t0=$(now); zstd -d -q -c "$work/ref.tar.zst" | tar -C "$work/ref-out" -xf -; t1=$(now)
  ref_restore=$(python3 -c "print($t1-$t0)")
  # kiln: copy the source so the one-file change does not touch the generated data.
  cp -a "$src" "$work/src-$data"; mv "$work/src-$data" "$work/$data"
  mkdir -p "$work/out"; sync
  out=$("$BIN" run "$work/store" "$work/$data" "$work/out")
  get() { echo "$out" | awk -v k="$1" '$1==k {print $2}'; }
  kiln_save=$(get save_seconds); kiln_restore=$(get restore_seconds)
  echo "[$data] reference: tar|zstd -3 -T0 ${ref_save}s, zstd -d|tar -x ${ref_restore}s"
  echo "[$data] kiln: save ${kiln_save}s (speed-up $(ratio "$ref_save" "$kiln_save")x, goal 1.5x), restore ${kiln_restore}s (speed-up $(ratio "$ref_restore" "$kiln_restore")x, goal 3x)"
  echo "[$data] re-save after one-file change uploaded $(get resave_uploaded_bytes) bytes = $(get resave_uploaded_percent)% (goal < 1%)"
  rm -rf "$work"
done
