//! The pinning rule, and arbitrary input never panicking.

use kiln_workflow::{parse_action, parse_workflow, unpinned_uses, Severity};

#[test]
fn remote_uses_must_be_pinned_to_a_commit() {
    let content = "\
on: push
jobs:
  a:
    runs-on: x
    steps:
      - uses: actions/checkout@v4
      - uses: actions/cache@0123456789abcdef0123456789abcdef01234567
      - uses: ./local/action
      - uses: docker://alpine:3
      - uses: org/repo/path@main
  b:
    uses: org/workflows/.github/workflows/x.yml@v1
";
    let result = parse_workflow("ci.yml", content);
    assert!(!result.has_errors(), "{:?}", result.diagnostics);
    let workflow = result.value.expect("workflow");
    let found = unpinned_uses(&workflow, "ci.yml");
    let lines: Vec<u32> = found.iter().map(|d| d.line).collect();
    assert_eq!(lines, [6, 10, 12]);
    assert!(found
        .iter()
        .all(|d| d.severity == Severity::Warning && d.hint.is_some()));
    assert_eq!(
        found[0].message,
        "'actions/checkout@v4' is not pinned to a full commit SHA"
    );
}

/// A small deterministic generator, so the test needs no extra crates.
struct Lcg(u64);

impl Lcg {
    fn next(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        self.0 >> 33
    }
}

#[test]
fn garbage_never_panics() {
    let pieces = [
        "on:",
        " push",
        "\n",
        "jobs:",
        "  a:",
        "    runs-on: x",
        "    steps:",
        "      - run: ",
        "${{",
        "}}",
        "[",
        "]",
        "{",
        "}",
        "&a ",
        "*a",
        "!!int ",
        "'",
        "\"",
        "- ",
        ": ",
        "needs: [a, b]",
        "uses: x@y",
        "|",
        ">",
        "#",
        "\t",
        "\u{feff}",
        "é",
        "matrix:",
        "if: ",
        "secrets.x",
        "---\n",
        "...",
    ];
    let mut rng = Lcg(7);
    for _ in 0..3000 {
        let len = (rng.next() % 40) as usize;
        let text: String = (0..len)
            .map(|_| pieces[(rng.next() as usize) % pieces.len()])
            .collect();
        let _ = parse_workflow("fuzz.yml", &text);
        let _ = parse_action("action.yml", &text);
    }
    let deep = "a: ".repeat(10_000) + "b";
    assert!(parse_workflow("deep.yml", &deep).has_errors());
    let nested = "[".repeat(100_000);
    assert!(parse_workflow("nested.yml", &nested).has_errors());
    assert!(parse_workflow("empty.yml", "").has_errors());
    assert!(parse_workflow("bytes.yml", "\u{0}\u{1}\u{7f}").has_errors());
}

#[test]
fn a_workflow_calling_itself_stops_at_the_nesting_limit() {
    let content =
        "on: workflow_call\njobs:\n  again:\n    uses: me/repo/.github/workflows/self.yml@v1\n";
    let resolver = |uses: &str| Some((uses.to_string(), content.to_string()));
    for max in [3, usize::MAX] {
        let options = kiln_workflow::ParseOptions {
            resolver: Some(&resolver),
            max_nested_reusable_depth: max,
            ..kiln_workflow::ParseOptions::default()
        };
        let result = kiln_workflow::parse_workflow_with("self.yml", content, &options);
        let messages: Vec<&str> = result.errors().map(|d| d.message.as_str()).collect();
        assert_eq!(messages.len(), 1, "{messages:?}");
        assert!(
            messages[0].starts_with("Nested reusable workflow depth exceeded"),
            "{messages:?}"
        );
    }
}

#[test]
fn workflows_calling_each_other_twice_do_not_fan_out() {
    let content = "on: workflow_call\njobs:\n  a:\n    uses: me/repo/.github/workflows/self.yml@v1\n  b:\n    uses: me/repo/.github/workflows/self.yml@v1\n";
    let resolver = |uses: &str| Some((uses.to_string(), content.to_string()));
    let options = kiln_workflow::ParseOptions {
        resolver: Some(&resolver),
        max_nested_reusable_depth: usize::MAX,
        max_result_size: usize::MAX,
        ..kiln_workflow::ParseOptions::default()
    };
    let result = kiln_workflow::parse_workflow_with("self.yml", content, &options);
    assert!(result
        .errors()
        .any(|d| d.message == "The workflow may not contain more than 256 jobs"));
}

/// The fuzz seeds, each cut, spliced and with characters swapped, must parse without panics.
#[test]
fn mutated_seed_corpus_never_panics() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus/workflow");
    let mut seeds: Vec<String> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()))
        .filter_map(Result::ok)
        .filter_map(|entry| std::fs::read_to_string(entry.path()).ok())
        .collect();
    seeds.sort();
    assert!(
        seeds.len() >= 30,
        "the seed corpus has {} files",
        seeds.len()
    );
    let swaps = [
        ':', '-', ' ', '\n', '[', '{', '$', '\'', '"', '#', '&', '!', '|',
    ];
    let mut rng = Lcg(11);
    for seed in &seeds {
        let _ = parse_workflow("seed.yml", seed);
        let _ = parse_action("action.yml", seed);
        let chars: Vec<char> = seed.chars().collect();
        for _ in 0..40 {
            let mut mutated = chars.clone();
            let at = (rng.next() as usize) % mutated.len().max(1);
            match rng.next() % 3 {
                0 => mutated.truncate(at),
                1 => mutated.insert(
                    at.min(mutated.len()),
                    swaps[(rng.next() as usize) % swaps.len()],
                ),
                _ => {
                    if at < mutated.len() {
                        mutated[at] = swaps[(rng.next() as usize) % swaps.len()];
                    }
                }
            }
            let text: String = mutated.into_iter().collect();
            let _ = parse_workflow("seed.yml", &text);
            let _ = parse_action("action.yml", &text);
        }
    }
}

/// Inputs as large as the file-size limit allows stay linear: many keys, steps and a long
/// dependency cycle.
#[test]
fn large_inputs_stay_fast() {
    let started = std::time::Instant::now();
    let mut steps = String::from("on: push\njobs:\n  a:\n    runs-on: x\n    steps:\n");
    steps.push_str(&"      - run: echo\n".repeat(20_000));
    let result = parse_workflow("steps.yml", &steps);
    assert!(!result.has_errors());
    let mut env = String::from("on: push\nenv:\n");
    for i in 0..20_000 {
        env.push_str(&format!("  K{i}: v\n"));
    }
    env.push_str("jobs:\n  a:\n    runs-on: x\n    steps: [{run: a}]\n");
    assert!(!parse_workflow("env.yml", &env).has_errors());
    let mut cycle =
        String::from("on: push\njobs:\n  start:\n    runs-on: x\n    steps: [{run: a}]\n");
    for i in 0..5_000 {
        let next = (i + 1) % 5_000;
        cycle.push_str(&format!(
            "  j{i}:\n    needs: j{next}\n    runs-on: x\n    steps: [{{run: a}}]\n"
        ));
    }
    let result = parse_workflow("cycle.yml", &cycle);
    assert_eq!(
        result
            .errors()
            .filter(|d| d.message.contains("creates a cycle"))
            .count(),
        5_000
    );
    assert!(
        started.elapsed().as_secs() < 30,
        "took {:?}",
        started.elapsed()
    );
}
