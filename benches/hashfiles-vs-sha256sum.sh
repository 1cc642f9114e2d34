#!/usr/bin/env bash
# kiln's hashFiles('**') against the shell pipeline people reach for:
#   find . -type f -print0 | sort -z | xargs -0 -P2 sha256sum
# on a generated tree of 50,000 files of 0-8 KiB plus 4 files of 64 MiB (~451 MiB), with a
# hot page cache. Both sides must agree on the final digest before any time is reported.
#
# The pipeline's per-file digests are put in GitHub's order (depth-first, each directory's
# entries in strcmp order), which is NOT `sort -z` order: the tree has `d00/` and `d00.big`
# side by side, and GitHub walks `d00/...` first while `sort` puts `d00.big` first. That order
# is computed here independently (path components compared as bytes), checked against
# `hash_files --list`, and the reference digest is SHA-256 over the raw 32-byte digests in it.
#
# Environment: ROUNDS (default 5), KILN_BENCH_DIR (default target/bench-data, where the tree
# is generated once), CARGO_TARGET_DIR as usual.
set -euo pipefail

rounds=${ROUNDS:-5}
root=$(cd "$(dirname "$0")/.." && pwd)
bench_dir=${KILN_BENCH_DIR:-$root/target/bench-data}
tree=$bench_dir/hashfiles-tree
marker=$bench_dir/hashfiles-tree.v1.complete
target_dir=${CARGO_TARGET_DIR:-$root/target}
bin=$target_dir/release/examples/hash_files

for tool in python3 find sort xargs sha256sum; do
    command -v "$tool" >/dev/null || { echo "error: $tool is required" >&2; exit 1; }
done

if [[ ! -f $marker ]]; then
    echo "generating the tree in $tree (once)..." >&2
    rm -rf "$tree"
    mkdir -p "$tree"
    python3 - "$tree" <<'PY'
import os, random, sys
tree = sys.argv[1]
rng = random.Random(20261127)  # fixed seed: the same bytes on every machine
for top in range(50):
    for sub in range(10):
        directory = os.path.join(tree, f"d{top:02d}", f"s{sub}")
        os.makedirs(directory)
        for index in range(100):
            with open(os.path.join(directory, f"f{index:03d}.bin"), "wb") as out:
                out.write(rng.randbytes(rng.randint(0, 8192)))
for big in range(4):
    # Named so that GitHub's order and `sort` order differ (d00/ vs d00.big).
    with open(os.path.join(tree, f"d{big:02d}.big"), "wb") as out:
        for _ in range(64):
            out.write(rng.randbytes(1 << 20))
PY
    touch "$marker"
fi

echo "building the release example..." >&2
(cd "$root" && cargo build --quiet --release -p kiln-workflow --example hash_files)

echo "warming the page cache..." >&2
find "$tree" -type f -print0 | xargs -0 cat >/dev/null

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

kiln_digest=$("$bin" "$tree" '**')
"$bin" --list "$tree" '**' >"$work/kiln.list"
(cd "$tree" && find . -type f -print0 | sort -z | xargs -0 -P2 sha256sum) >"$work/sums"
reference_digest=$(python3 - "$work/kiln.list" "$work/sums" <<'PY'
import hashlib, sys
kiln_list, sums = sys.argv[1:3]
digests = {}
with open(sums, "rb") as lines:
    for line in lines:
        digest, path = line.rstrip(b"\n").split(b"  ", 1)
        digests[path.removeprefix(b"./")] = bytes.fromhex(digest.decode())
github_order = sorted(digests, key=lambda path: path.split(b"/"))
with open(kiln_list, "rb") as lines:
    kiln_order = [line.rstrip(b"\n") for line in lines]
if kiln_order != github_order:
    sys.exit(f"file order differs: kiln listed {len(kiln_order)} files, the tree has {len(github_order)}")
print(hashlib.sha256(b"".join(digests[path] for path in github_order)).hexdigest())
PY
)
files=$(wc -l <"$work/kiln.list")
echo "files: $files, size: $(du -sh --apparent-size "$tree" | cut -f1)"
echo "kiln digest:      $kiln_digest"
echo "pipeline digest:  $reference_digest"
if [[ $kiln_digest != "$reference_digest" ]]; then
    echo "error: the digests differ" >&2
    exit 1
fi

now_ms() { echo $(( $(date +%s%N) / 1000000 )); }
kiln_times=()
pipeline_times=()
for ((round = 1; round <= rounds; round++)); do
    start=$(now_ms)
    "$bin" "$tree" '**' >/dev/null
    kiln_times+=($(( $(now_ms) - start )))
    start=$(now_ms)
    (cd "$tree" && find . -type f -print0 | sort -z | xargs -0 -P2 sha256sum >/dev/null)
    pipeline_times+=($(( $(now_ms) - start )))
    echo "round $round: kiln ${kiln_times[-1]} ms, pipeline ${pipeline_times[-1]} ms" >&2
done

median() { printf '%s\n' "$@" | sort -n | awk '{ v[NR] = $1 } END { print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
kiln_median=$(median "${kiln_times[@]}")
pipeline_median=$(median "${pipeline_times[@]}")
echo "median over $rounds rounds: kiln ${kiln_median} ms, pipeline ${pipeline_median} ms"
awk -v k="$kiln_median" -v p="$pipeline_median" 'BEGIN { printf "kiln is %.2fx the pipeline'"'"'s throughput\n", p / k }'
