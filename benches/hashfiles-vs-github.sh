#!/usr/bin/env bash
# Differential check of kiln's hashFiles() against GitHub's own code: the runner's
# hashFiles.ts logic run by node over @actions/glob 0.4.0 with minimatch 3.1.2 (what the
# runner's bundle ships), installed from npm into a cache directory. Builds two workspaces
# full of awkward names (globs, escapes, braces, astral characters, dot files, symlinks,
# broken links, loops, a non-UTF-8 name), evaluates ~340 pattern lists (200 of them random) with both, and
# requires the same file list and digest, or an error from both.
#
# Needs node and npm. Environment: KILN_BENCH_DIR (default target/bench-data).
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
cache=${KILN_BENCH_DIR:-$root/target/bench-data}/hashfiles-reference
target_dir=${CARGO_TARGET_DIR:-$root/target}
for tool in node npm python3; do
    command -v "$tool" >/dev/null || { echo "error: $tool is required" >&2; exit 1; }
done

mkdir -p "$cache"
if [[ ! -f $cache/node_modules/@actions/glob/package.json ]]; then
    echo "installing @actions/glob 0.4.0 (minimatch 3.1.2) into $cache..." >&2
    cat >"$cache/package.json" <<'JSON'
{ "private": true, "dependencies": { "@actions/glob": "0.4.0" }, "overrides": { "minimatch": "3.1.2" } }
JSON
    (cd "$cache" && npm install --no-audit --no-fund --silent)
fi
cat >"$cache/reference.js" <<'JS'
// The runner's hashFiles.ts: glob, keep files under cwd, skip directories, hash each file
// and the digests. @actions/core prints debug lines on stdout, hence the marker.
const glob = require('@actions/glob'), crypto = require('crypto'), fs = require('fs'), path = require('path');
(async () => {
  const args = JSON.parse(process.argv[2]);
  const report = (value) => console.log('@@RESULT ' + JSON.stringify(value));
  let follow = false;
  if (args.length && args[0].startsWith('--')) {
    if (args[0].toLowerCase() !== '--follow-symbolic-links') return report({error: 'Invalid glob option'});
    follow = true;
    args.shift();
  }
  try {
    const cwd = process.cwd(), combined = crypto.createHash('sha256'), files = [];
    const globber = await glob.create(args.join('\n'), {followSymbolicLinks: follow});
    for await (const file of globber.globGenerator()) {
      if (!file.startsWith(cwd + path.sep) || fs.statSync(file).isDirectory()) continue;
      combined.update(crypto.createHash('sha256').update(fs.readFileSync(file)).digest());
      files.push(file.slice(cwd.length + 1));
    }
    report({files, digest: files.length ? combined.digest('hex') : ''});
  } catch (e) { report({error: String(e.message)}); }
})();
JS

(cd "$root" && cargo build --quiet -p kiln-workflow --example hash_files)
python3 - "$target_dir/debug/examples/hash_files" "$cache" <<'PY'
import json, os, shutil, subprocess, sys
binary, cache = sys.argv[1:3]
base = os.path.join(cache, "trees")

def make_tree(ws, awkward):
    files = {"a.txt": "A", "B.txt": "Bu", "b.txt": "b", "b/c.txt": "c", ".hid/h.txt": "h", "package-lock.json": "pl",
             "node_modules/x/package-lock.json": "nm", "src/x.json": "x", "src/sub/y.json": "y", "src/a10.txt": "10",
             "src/a9.txt": "9", "src/_u.txt": "_", "src/Z.txt": "Z", "a b.txt": "ab", "x[1].txt": "x1", "star*.txt": "st",
             "q?.txt": "q", "brace{a,b}.txt": "br", "back\\slash.txt": "bs", "ünï.txt": "u", "emoji😀.txt": "em",
             "-dash.txt": "d", ".dot/.inner": "i", "d.e/f.txt": "f", "!bang.txt": "bang", "#hash.txt": "hash",
             "a(b).txt": "p", "plus+(x).txt": "pl", "@at.txt": "at", "B/k.txt": "k", "x]y.txt": "xy", "[ab].txt": "lit",
             "a\tb": "tab", "deep/1/2/3/4/5/z.txt": "z", "deep/1/2/z.json": "zj"}
    for name, content in files.items():
        path = os.path.join(ws, name)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "w") as out:
            out.write(content)
    os.makedirs(os.path.join(ws, "emptydir"))
    os.symlink("src", os.path.join(ws, "linkdir"))
    os.symlink("a.txt", os.path.join(ws, "linkfile"))
    os.symlink("..", os.path.join(ws, "deep/1/up"))
    if awkward:
        os.symlink("missing", os.path.join(ws, "src/dangling"))
        with open(ws.encode() + b"/bad\xff.bin", "w") as out:
            out.write("bad")
        os.symlink("loop2", os.path.join(ws, "loop1"))
        os.symlink("loop1", os.path.join(ws, "loop2"))

shutil.rmtree(base, ignore_errors=True)
home = os.path.join(base, "home")
os.makedirs(os.path.join(home, "x"))
with open(os.path.join(home, "x/h.txt"), "w") as out:
    out.write("home")
env = dict(os.environ, HOME=home)
clean, awkward = os.path.join(base, "clean"), os.path.join(base, "awkward")
make_tree(clean, False)
make_tree(awkward, True)
ws = clean
clean_patterns = [["**"],["*"],["."],["./"],["**/"],["*/"],["src/"],["src/**/"],["src/**"],["src/**/*"],["**/*.txt"],["x[1].txt"],
 ["x\\[1\\].txt"],["x[[]1].txt"],["star\\*.txt"],["q\\?.txt"],["q?.txt"],["brace{a,b}.txt"],["back\\\\slash.txt"],["*😀*"],
 ["emoji?.txt"],["emoji??.txt"],["emoji???.txt"],["[!a]*"],["[^a]*"],["[a-c]*"],["[z-a]*"],["[]"],["[]]*"],["*[*"],["a(b).txt"],
 ["plus+(x).txt"],["@at.txt"],["!bang.txt"],["\\!bang.txt"],["#hash.txt"],["\\#hash.txt"],[" # x","a.txt"],["!**","a.txt"],
 ["a.txt","!**"],["**/*.json","!**/node_modules/**"],["src","!src/sub"],["src","!src/sub/"],["linkdir"],["linkdir/**"],
 ["--follow-symbolic-links","linkdir/**"],["--follow-symbolic-links","**"],["--FOLLOW-symbolic-links","deep"],["deep/**"],
 ["**/x.json","**/y.json"],["b/**","src/**"],["/etc/hostname"],[ws+"/a.txt"],[ws],[ws+"/"],["~/x"],["~"],["../x"],["a/../b"],
 ["./a.txt"],["a.txt/"],["b/"],["B/*"],["d.e"],["*.e/*"],["**/.inner"],["**/.*"],[".*"],["*/.*/**"],["a b.txt"],["a\tb"],
 ["src/a?.txt","src/a??.txt"],["**/**/**/*.txt"],["**/s*/**/*.json"],["*/*/*"],["src/*/"],["src//sub"],["src/sub/."],
 ["--bogus"],["-x"],["!"],["! !a.txt"],["a.txt\nb.txt"],["src/[a-z]9.txt"],["src/[0-9]*"],["src/a[!0-8].txt"],["[\\d-a]*"],
 ["x[\\]]*"],["x]*"],["ü*"],["*.TXT"],["[ab].txt"],["\\[ab].txt"],["[[]ab].txt"],["*/**/z.*"],["deep/**/2"],["deep/**/2/"],
 ["**/1/**"],["deep/*/"],["emptydir"],["emptydir/**"],["nonexistent/**"],["a.txt/x"],["*.txt","!*.txt","b*"],["[!]*"],["[^]*"],
 ["[\\!]*"],["*\\"],["a\\"],["[a\\"],["x[1"],["*[1"],["[*"],["src/[Z_]*"],["**/[.]hid/*"],["[.]hid/*"],[".h[i]d/h.txt"],
 ["src/**/sub/**"],["**/sub"],["sub"],["  src/x.json  "],["!src/x.json"],["src/*.json","!src/x.json","src/x.json"],
 ["**/*.json","!src"], ["**/*.json","!src/"], ["deep/1/up/a.txt"], ["--follow-symbolic-links","deep/1/**"]]
awkward_patterns = [["**"], ["--follow-symbolic-links", "**"], ["src/**"], ["src/*.json"], ["src/d*"], ["*.bin"],
    ["--follow-symbolic-links", "*.bin"], ["bad*"], ["b*"], ["a.txt", "!src/dangling", "src/*"], ["loop*"],
    ["--follow-symbolic-links", "loop*"], ["*.txt"], ["a.txt", "src/x.json"], ["--follow-symbolic-links", "src/**"]]

# Random pattern lists (fixed seed) for the corners of minimatch's parser: half free-form
# from glob-heavy pieces, half real paths of the tree with characters turned into globs.
import random
rng = random.Random(4242)
pieces = ["*", "?", "[", "]", "!", "^", "\\", "-", "a", "b", "x", "1", ".", "/", "**", "src", "sub", "txt", "json",
          "{", "}", ",", "(", ")", "|", "+", "@", "#", " ", "ü", "😀", "[a-z]", "[!a]", "[z-a]", "\\*"]
real_paths = sorted(os.path.relpath(os.path.join(d, f), clean) for d, _, fs in os.walk(clean) for f in fs)

def globbed(path):
    out = []
    for c in path:
        roll = rng.random()
        if c == "/" and roll < 0.15:
            out.append("/**/")
        elif c == "/":
            out.append(c)
        elif roll < 0.08:
            out.append("?")
        elif roll < 0.16:
            out.append("*")
        elif roll < 0.22:
            out.append(f"[{c}]")
        elif roll < 0.26:
            out.append(f"[!{c}]")
        elif roll < 0.30:
            out.append("\\" + c)
        else:
            out.append(c)
    return "".join(out)

for _ in range(100):
    clean_patterns.append(["".join(rng.choice(pieces) for _ in range(rng.randint(1, 7))) for _ in range(rng.randint(1, 2))])
for _ in range(100):
    chosen = [globbed(rng.choice(real_paths)) for _ in range(rng.randint(1, 3))]
    if len(chosen) > 1 and rng.random() < 0.5:
        chosen[rng.randrange(len(chosen))] = "!" + chosen[-1]
    clean_patterns.append(chosen)

agree = differ = matched = failed_both = 0
for ws, pattern_lists in ((clean, clean_patterns), (awkward, awkward_patterns)):
    for args in pattern_lists:
        run = subprocess.run(["node", os.path.join(cache, "reference.js"), json.dumps(args)], cwd=ws, env=env,
                             capture_output=True, text=True)
        lines = [line for line in run.stdout.splitlines() if line.startswith("@@RESULT ")]
        github = json.loads(lines[0][9:]) if lines else {"error": "node failed: " + run.stderr[-200:]}
        digest = subprocess.run([binary, ws] + args, env=env, capture_output=True, text=True)
        listing = subprocess.run([binary, "--list", ws] + args, env=env, capture_output=True, text=True)
        if digest.returncode != 0:
            kiln = {"error": digest.stderr.strip()}
        else:
            kiln = {"files": [f for f in listing.stdout.split("\n") if f], "digest": digest.stdout.strip()}
        if ("error" in github and "error" in kiln) or github == kiln:
            agree += 1
            matched += bool(github.get("files"))
            failed_both += "error" in github
        else:
            differ += 1
            print("DIFFERS", json.dumps(args, ensure_ascii=False))
            print("  github", json.dumps(github, ensure_ascii=False)[:400])
            print("  kiln  ", json.dumps(kiln, ensure_ascii=False)[:400])
print(f"({matched} pattern lists matched files, {failed_both} failed on both sides)")
print(f"hashfiles-vs-github: {agree} passed, {differ} failed")
sys.exit(1 if differ else 0)
PY
