//! Job and step identifiers: their format, uniqueness, and the job dependency graph.

use std::collections::{HashMap, HashSet};

use super::reader::Reader;
use crate::model::{Job, Spanned};
use crate::yaml::Pos;

const MAX_ID_LENGTH: usize = 100;

/// Reports an invalid job or step id; returns whether it is valid.
pub fn check_identifier(r: &mut Reader, id: &Spanned<String>) -> bool {
    let value = id.value.as_str();
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
    if value.starts_with("__") {
        r.error(
            id.pos,
            format!("The identifier '{value}' is invalid. IDs starting with '__' are reserved."),
        );
        return false;
    }
    true
}

/// The ids used within one scope (a job's steps), compared case-insensitively.
#[derive(Default)]
pub struct IdScope {
    used: HashSet<String>,
    /// The next suffix to try per generated base, so many `__run` steps stay linear.
    next_suffix: HashMap<String, usize>,
}

impl IdScope {
    /// Records `id`; false when it was already used.
    pub fn claim(&mut self, id: &str) -> bool {
        self.used.insert(id.to_ascii_lowercase())
    }

    /// `base`, or `base_2`, `base_3`, ... whichever is free first, each cut so that the id
    /// stays under the length limit; claims it.
    pub fn unique(&mut self, base: &str) -> String {
        let fitted = |suffix: &str| -> String {
            let room = MAX_ID_LENGTH.saturating_sub(suffix.len());
            base.chars().take(room).chain(suffix.chars()).collect()
        };
        let first = fitted("");
        if self.claim(&first) {
            return first;
        }
        let mut n = self.next_suffix.get(base).copied().unwrap_or(2);
        // Bounded: each failed candidate is an id already claimed, and claims are finite.
        loop {
            let candidate = fitted(&format!("_{n}"));
            n += 1;
            if self.claim(&candidate) {
                self.next_suffix.insert(base.to_string(), n);
                return candidate;
            }
        }
    }

    pub fn contains(&self, id: &str) -> bool {
        self.used.contains(&id.to_ascii_lowercase())
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
    let components = strongly_connected(&edges);
    for (from, targets) in edges.iter().enumerate() {
        for (to, need) in targets {
            if components[from] == components[*to] {
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

/// The strongly connected component of each node (Kosaraju, iterative so that deep graphs
/// cannot overflow the stack): an edge closes a cycle exactly when both ends share one.
fn strongly_connected(edges: &[Vec<(usize, &Spanned<String>)>]) -> Vec<usize> {
    let n = edges.len();
    let mut order = Vec::with_capacity(n);
    let mut visited = vec![false; n];
    for start in 0..n {
        if visited[start] {
            continue;
        }
        visited[start] = true;
        let mut stack = vec![(start, 0usize)];
        while let Some((node, next)) = stack.last_mut() {
            if let Some((target, _)) = edges[*node].get(*next) {
                *next += 1;
                if !visited[*target] {
                    visited[*target] = true;
                    stack.push((*target, 0));
                }
            } else {
                order.push(*node);
                stack.pop();
            }
        }
    }
    let mut reverse: Vec<Vec<usize>> = vec![Vec::new(); n];
    for (from, targets) in edges.iter().enumerate() {
        for (to, _) in targets {
            reverse[*to].push(from);
        }
    }
    let mut component = vec![usize::MAX; n];
    for (id, &root) in order.iter().rev().enumerate() {
        if component[root] != usize::MAX {
            continue;
        }
        component[root] = id;
        let mut stack = vec![root];
        while let Some(node) = stack.pop() {
            for &source in &reverse[node] {
                if component[source] == usize::MAX {
                    component[source] = id;
                    stack.push(source);
                }
            }
        }
    }
    component
}
