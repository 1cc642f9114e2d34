#!/usr/bin/env bash
# Restore of the 50,000-file tree on a churned filesystem: every restore lands right after the
# deletion of the previous copy, as on a build host that wipes its workspace before each job.
# ext4 then skips the inodes freed in the last minute(s) while allocating, so every create
# costs more (docs/cache.md, "Performance"). Each side deletes its own previous copy just before
# its own timed restore, and the sides take turns at going first, so both meet the same state.
#   benches/cache-churn.sh     KILN_BENCH_DIR (default target/bench-data), KILN_BENCH_ROUNDS (4)
# Prints one line per step and a table of medians.
set -euo pipefail
cd "$(dirname "$0")/.."
BENCH_DIR=${KILN_BENCH_DIR:-target/bench-data}
ROUNDS=${KILN_BENCH_ROUNDS:-4}
# shellcheck source=benches/cache-setup.sh
. benches/cache-setup.sh tree
RUN="$BENCH_DIR/churn-$(date +%s)"
mkdir -p "$RUN"
RESULTS="$RUN/results.tsv"
: >"$RESULTS"
verify() { # DIR: the restored tree must have the source's digest
  [ "$("$BIN" digest "$1")" = "$(cat "$BENCH_DIR/tree.digest")" ] || { echo "restore into $1 differs from the source" >&2; exit 1; }
}
now() { date +%s.%N; }
elapsed() { python3 -c "print(f'{$2-$1:.3f}')"; }

echo "preparing: kiln entry and reference archive" >&2
"$BIN" kiln "$RUN/kiln-work" "$BENCH_DIR/tree" >/dev/null
tar -C "$BENCH_DIR" -cf - tree | zstd -q -3 -T0 >"$RUN/tree.tar.zst"
# Round 0's copies exist only to be deleted before round 1.
for side in reference kiln floor; do
  mkdir -p "$RUN/$side-0"; tar -C "$RUN/$side-0" -xf - < <(zstd -dc "$RUN/tree.tar.zst")
done
sync

step() { # SIDE ROUND
  local side=$1 r=$2 out="$RUN/$1-$2" t start
  rm -rf "$RUN/$side-$((r - 1))"
  mkdir -p "$out"
  case $side in
    reference)
      start=$(now); zstd -dc "$RUN/tree.tar.zst" | tar -x -C "$out"; t=$(elapsed "$start" "$(now)") ;;
    kiln)
      t=$("$BIN" kiln-restore "$RUN/kiln-work" "$BENCH_DIR/tree" "$out" | awk '$1=="restore_seconds" {print $2}') ;;
    floor)
      t=$("$BIN" floor "$BENCH_DIR/tree" "$out/tree" 8 | awk '$1=="floor_seconds" {print $2}') ;;
  esac
  verify "$out/tree"
  printf '%s\t%s\n' "$side" "$t" >>"$RESULTS"
  printf 'round %s %-9s %s s\n' "$r" "$side" "$t" >&2
  sync
}

sides=(reference kiln floor)
for r in $(seq 1 "$ROUNDS"); do
  # Rotate which side goes first.
  for i in 0 1 2; do step "${sides[$(((i + r) % 3))]}" "$r"; done
done

python3 - "$RESULTS" <<'PY'
import statistics, sys
rows = {}
for line in open(sys.argv[1]):
    side, t = line.split()
    rows.setdefault(side, []).append(float(t))
med = {k: statistics.median(v) for k, v in rows.items()}
print("restore right after deleting the previous copy; median (min-max) of", len(rows["kiln"]), "rounds")
print("| step | seconds | reference / step |")
print("|---|---|---|")
for side in ("reference", "kiln", "floor"):
    v = rows[side]
    print(f"| {side} | {med[side]:.2f} ({min(v):.2f}-{max(v):.2f}) | {med['reference'] / med[side]:.2f}x |")
PY
echo "copies left in $RUN (delete them when no benchmark follows: deletions slow ext4 for minutes)" >&2
