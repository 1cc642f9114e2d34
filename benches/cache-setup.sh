# Sourced by the cache benches: builds cache_bench and generates the data sets once.
# Sets BENCH_DIR (absolute) and BIN; takes the data set names as arguments.
mkdir -p "$BENCH_DIR"
BENCH_DIR=$(cd "$BENCH_DIR" && pwd)
cargo build --release -p kiln-cache --example cache_bench >&2
BIN=$(pwd)/target/release/examples/cache_bench
for data in "$@"; do
  if [ ! -f "$BENCH_DIR/$data.digest" ]; then
    rm -rf "${BENCH_DIR:?}/$data"
    "$BIN" "gen-$data" "$BENCH_DIR/$data"
    "$BIN" digest "$BENCH_DIR/$data" >"$BENCH_DIR/$data.digest"
  fi
done
