#!/usr/bin/env python3
"""Writes a git fast-import stream of a synthetic history shaped like this project's, for
benches/cache-replay.sh: about as many files (source folders, two fuzz corpora of a few
thousand small files, three Cargo.lock files), a .github/workflows/ci.yml caching on
hashFiles('**/Cargo.lock'), and COMMITS commits in all. Each main-line commit edits one to
four source files; every 25th also changes the root Cargo.lock, every 150th a nested one,
every 10th adds corpus files. Every 40th main-line commit merges a pull request branch of
two commits (GitHub's merge message), so --branches has pull requests to replay.
Deterministic (seeded). Usage: synthetic-history.py COMMITS | git fast-import --quiet
"""
import random
import sys

COMMITS = int(sys.argv[1]) if len(sys.argv) > 1 else 2000
rng = random.Random(13)
out = sys.stdout.buffer
mark = 0
clock = 1_700_000_000

WORKFLOW = b"""name: ci
on: [push, pull_request]
jobs:
  test:
    runs-on: ubuntu-latest
    steps:
      - uses: actions/checkout@v4
      - name: cargo cache
        uses: actions/cache@v4
        with:
          path: |
            ~/.cargo/registry
            target
          key: ${{ runner.os }}-cargo-${{ hashFiles('**/Cargo.lock') }}
          restore-keys: |
            ${{ runner.os }}-cargo-
      - run: cargo test
"""

SOURCE_DIRS = ["src", "src/cmd", "src/run", "workflow/src", "workflow/src/parse",
               "runner/src", "runner/src/executor", "scheduler/src", "cache-server/src",
               "cache-server/src/http", "bench/src", "docs", "tests"]
files = {}
for d in SOURCE_DIRS:
    for i in range(rng.randint(8, 24)):
        files[f"{d}/file{i}.rs"] = f"// {d} {i}\n".encode() * rng.randint(20, 400)
for corpus, n in (("fuzz/corpus/expression", 2800), ("fuzz/corpus/workflow", 2500)):
    for i in range(n):
        files[f"{corpus}/{i:05x}"] = f"case {i} {rng.random()}\n".encode()
locks = ["Cargo.lock", "fuzz/Cargo.lock", "cache-server/fuzz/Cargo.lock"]
for lock in locks:
    files[lock] = f"# {lock} v0\n".encode() * 200
files[".github/workflows/ci.yml"] = WORKFLOW
sources = [p for p in files if p.endswith(".rs")]


def data(content):
    out.write(b"data %d\n" % len(content))
    out.write(content)
    out.write(b"\n")


def commit(branch, message, changes, parents=()):
    """Writes one commit; returns its mark."""
    global mark, clock
    mark += 1
    clock += 60
    out.write(b"commit refs/heads/%s\nmark :%d\n" % (branch.encode(), mark))
    out.write(b"committer kiln bench <bench@example.com> %d +0000\n" % clock)
    data(message.encode())
    for i, parent in enumerate(parents):
        out.write(b"%s :%d\n" % (b"from" if i == 0 else b"merge", parent))
    for path, content in changes.items():
        out.write(b"M 100644 inline %s\n" % path.encode())
        data(content)
    out.write(b"\n")
    return mark


def edits(n):
    changes = {}
    for path in rng.sample(sources, n):
        changes[path] = files[path] + f"// edit {mark}\n".encode()
        files[path] = changes[path]
    return changes


head = commit("main", "initial import", dict(files))
written, line, pull = 1, 0, 0
while written < COMMITS:
    line += 1
    changes = edits(rng.randint(1, 4))
    if line % 25 == 0:
        changes["Cargo.lock"] = files["Cargo.lock"] + f"# bump {line}\n".encode()
    if line % 150 == 0:
        lock = locks[1 + (line // 150) % 2]
        changes[lock] = files[lock] + f"# bump {line}\n".encode()
    if line % 10 == 0:
        for i in range(rng.randint(1, 6)):
            changes[f"fuzz/corpus/expression/new-{line}-{i}"] = f"new {line} {i}\n".encode()
    for path, content in changes.items():
        files[path] = content
    if line % 40 == 0 and written + 3 <= COMMITS:
        pull += 1
        branch = f"feature-{pull}"
        side = head
        for step in range(2):
            side_changes = edits(2)
            if step == 0 and pull % 2 == 0:
                side_changes["Cargo.lock"] = files["Cargo.lock"] + f"# pr {pull}\n".encode()
                files["Cargo.lock"] = side_changes["Cargo.lock"]
            side = commit(branch, f"{branch} step {step}", side_changes, (side,))
            changes.update(side_changes)
        head = commit("main", f"Merge pull request #{pull} from octo/{branch}", changes,
                      (head, side))
        written += 3
    else:
        head = commit("main", f"change {line}", changes, (head,))
        written += 1
