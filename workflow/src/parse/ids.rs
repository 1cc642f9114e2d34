//! Job and step identifiers: their format, uniqueness, and the job dependency graph.

use std::collections::{HashMap, HashSet, VecDeque};

use super::reader::Reader;
use crate::model::{Job, Spanned};
use crate::yaml::Pos;

const MAX_ID_LENGTH: usize = 100;

/// Reports an invalid job or step id; returns whether it is valid.
pub fn check_identifier(r: &mut Reader, id: &Spanned<String>) -> bool {
    let value = id.value.as_str();
    if value.starts_with("__") {
        r.error(
            id.pos,
            format!("The identifier '{value}' is invalid. IDs starting with '__' are reserved."),
        );
        return false;
    }
    let mut chars = value.chars();
    let first_ok = chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_');
    let rest_ok = chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    if !first_ok || !rest_ok || value.chars().count() >= MAX_ID_LENGTH {
        r.error(
            id.pos,
            format!(
                "The identifier '{value}' is invalid. IDs may only contain alphanumeric characters, '_', and '-'. \
                 IDs must start with a letter or '_' and and must be less than {MAX_ID_LENGTH} characters."
            ),
        );
        return false;
    }
    true
}

/// The ids used within one scope (a job's steps), compared case-insensitively.
#[derive(Default)]
pub struct IdScope {
    used: HashSet<String>,
}

impl IdScope {
    /// Records `id`; false when it was already used.
    pub fn claim(&mut self, id: &str) -> bool {
        self.used.insert(id.to_ascii_lowercase())
    }

    /// `base`, or `base_2`, `base_3`, ... whichever is free first; claims it.
    pub fn unique(&mut self, base: &str) -> String {
        if self.claim(base) {
            return base.to_string();
        }
        // Bounded: each candidate is new unless claimed, and there are finitely many claims.
        for n in 2..=self.used.len() + 2 {
            let candidate = format!("{base}_{n}");
            if self.claim(&candidate) {
                return candidate;
            }
        }
        base.to_string()
    }
}

/// `needs` that name no job, a graph without a start, and every edge that closes a cycle.
pub fn check_job_graph(r: &mut Reader, jobs: &[Job], jobs_pos: Pos) {
    let index: HashMap<String, usize> = jobs
        .iter()
        .enumerate()
        .map(|(i, j)| (j.id.value.to_ascii_lowercase(), i))
        .collect();
    let mut edges: Vec<Vec<(usize, &Spanned<String>)>> = vec![Vec::new(); jobs.len()];
    for (i, job) in jobs.iter().enumerate() {
        for need in &job.needs {
            match index.get(&need.value.to_ascii_lowercase()) {
                Some(&target) => edges[i].push((target, need)),
                None => r.error(
                    need.pos,
                    format!(
                        "Job '{}' depends on unknown job '{}'.",
                        job.id.value, need.value
                    ),
                ),
            }
        }
    }
    if !jobs.iter().any(|j| j.needs.is_empty()) {
        let pos = jobs.first().map_or(jobs_pos, |j| j.id.pos);
        r.error(
            pos,
            "The workflow must contain at least one job with no dependencies.",
        );
        return;
    }
    if is_acyclic(&edges) {
        return;
    }
    for (from, targets) in edges.iter().enumerate() {
        for (to, need) in targets {
            if reaches(&edges, *to, from) {
                r.error(
                    need.pos,
                    format!(
                        "Job '{}' depends on job '{}' which creates a cycle in the dependency graph.",
                        jobs[from].id.value, jobs[*to].id.value
                    ),
                );
            }
        }
    }
}

/// Kahn's algorithm: the graph is acyclic when every node can be ordered.
fn is_acyclic(edges: &[Vec<(usize, &Spanned<String>)>]) -> bool {
    let mut pending: Vec<usize> = edges.iter().map(Vec::len).collect();
    let mut dependents: Vec<Vec<usize>> = vec![Vec::new(); edges.len()];
    for (from, targets) in edges.iter().enumerate() {
        for (to, _) in targets {
            dependents[*to].push(from);
        }
    }
    let mut ready: VecDeque<usize> = (0..edges.len()).filter(|&i| pending[i] == 0).collect();
    let mut ordered = 0;
    while let Some(node) = ready.pop_front() {
        ordered += 1;
        for &dependent in &dependents[node] {
            pending[dependent] -= 1;
            if pending[dependent] == 0 {
                ready.push_back(dependent);
            }
        }
    }
    ordered == edges.len()
}

fn reaches(edges: &[Vec<(usize, &Spanned<String>)>], from: usize, to: usize) -> bool {
    let mut seen = vec![false; edges.len()];
    let mut queue = VecDeque::from([from]);
    while let Some(node) = queue.pop_front() {
        if node == to {
            return true;
        }
        if std::mem::replace(&mut seen[node], true) {
            continue;
        }
        queue.extend(edges[node].iter().map(|(t, _)| *t));
    }
    false
}
