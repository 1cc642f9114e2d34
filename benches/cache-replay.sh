#!/usr/bin/env bash
# kiln bench cache: how long the replay takes per commit, on this project's own history with
# its CI workflow (-W .github/workflows/ci.yml) and on a synthetic history of 2,000 commits
# shaped like this project (benches/synthetic-history.py: ~6,000 files, three Cargo.lock files,
# merged pull requests), with and without --branches.
#
# Reference, in the same run: replaying by checkout, the alternative kiln-bench does not take
# (docs/bench.md): per commit, `git checkout` into a worktree and `kiln hash-files` of the key's
# pattern, on the newest KILN_REPLAY_SAMPLE (default 200) commits of the synthetic history. That
# only computes the key; the replay also looks it up and saves. Ratio = reference / replay.
#   benches/cache-replay.sh    KILN_BENCH_DIR (default target/bench-data), KILN_REPLAY_COMMITS
#                              (2000), KILN_REPLAY_ROUNDS (3; the median is printed)
# Prints the replay's table for this project, then one line per measurement and a summary.
set -euo pipefail
cd "$(dirname "$0")/.."
BENCH_DIR=${KILN_BENCH_DIR:-target/bench-data}
COMMITS=${KILN_REPLAY_COMMITS:-2000}
ROUNDS=${KILN_REPLAY_ROUNDS:-3}
SAMPLE=${KILN_REPLAY_SAMPLE:-200}
mkdir -p "$BENCH_DIR"
BENCH_DIR=$(cd "$BENCH_DIR" && pwd)
cargo build --release --bin kiln >&2
KILN=$(pwd)/target/release/kiln
SELF=$(pwd)

SYNTH="$BENCH_DIR/synthetic-$COMMITS"
if [ ! -f "$SYNTH/.complete" ]; then
  rm -rf "$SYNTH"
  git init -q -b main "$SYNTH"
  python3 benches/synthetic-history.py "$COMMITS" | git -C "$SYNTH" fast-import --quiet
  touch "$SYNTH/.complete"
fi

median() { sort -g | awk '{ v[NR] = $1 } END { print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
now() { date +%s.%N; }

# REPO LABEL ARGS...: runs the replay ROUNDS times; prints the median replay ms/commit (the
# report's own figure) and wall ms/commit (the whole command: git log, parsing, the store).
measure() {
  local repo=$1 label=$2 json commits start end replay=() wall=()
  shift 2
  for _ in $(seq "$ROUNDS"); do
    start=$(now)
    json=$("$KILN" bench cache --repo "$repo" --format json "$@")
    end=$(now)
    commits=$(jq '.commits | length' <<<"$json")
    replay+=("$(jq '.ms_per_commit' <<<"$json")")
    wall+=("$(python3 -c "print(($end - $start) * 1000 / $commits)")")
  done
  printf '%-44s %6d commits  replay %7.2f ms/commit  wall %7.2f ms/commit\n' "$label" "$commits" \
    "$(printf '%s\n' "${replay[@]}" | median)" "$(printf '%s\n' "${wall[@]}" | median)"
}

echo "== this project's history with its CI workflow (kiln bench cache -W .github/workflows/ci.yml)"
"$KILN" bench cache --repo "$SELF" -W "$SELF/.github/workflows/ci.yml" --default-branch main | sed -n '1,9p'
echo
echo "== timings (median of $ROUNDS)"
measure "$SELF" "this project, -W ci.yml" -W "$SELF/.github/workflows/ci.yml"
measure "$SYNTH" "synthetic, default branch" --default-branch main
measure "$SYNTH" "synthetic, --branches" --default-branch main --branches
measure "$SYNTH" "synthetic, --compare-key (two replays)" --default-branch main \
  --compare-key '${{ runner.os }}-cargo-${{ hashFiles('"'"'Cargo.lock'"'"') }}'

# The reference: a checkout per commit and hashFiles on the checked-out files.
WT="$BENCH_DIR/replay-worktree"
git -C "$SYNTH" worktree remove --force "$WT" 2>/dev/null || rm -rf "$WT"
git -C "$SYNTH" worktree prune
mapfile -t SHAS < <(git -C "$SYNTH" rev-list --first-parent -n "$SAMPLE" main | tac)
git -C "$SYNTH" worktree add -q --detach "$WT" "${SHAS[0]}"
start=$(now)
for sha in "${SHAS[@]}"; do
  git -C "$WT" checkout -q --detach "$sha"
  (cd "$WT" && "$KILN" hash-files '**/Cargo.lock' >/dev/null)
done
end=$(now)
git -C "$SYNTH" worktree remove --force "$WT"
reference=$(python3 -c "print(f'{($end - $start) * 1000 / ${#SHAS[@]}:.2f}')")
printf '%-44s %6d commits  %7.2f ms/commit (key only)\n' "reference: checkout + kiln hash-files" "${#SHAS[@]}" "$reference"
replay=$("$KILN" bench cache --repo "$SYNTH" --default-branch main --commits "$SAMPLE" --format json | jq '.ms_per_commit')
printf '%-44s %6d commits  %7.2f ms/commit (key, lookup, save)\n' "replay of the same commits" "$SAMPLE" "$replay"
python3 -c "print(f'ratio reference / replay: {$reference / $replay:.1f}x')"
