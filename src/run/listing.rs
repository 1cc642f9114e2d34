//! `-l` (list) and `-g` (graph): the jobs an event would run, by stage, without running them.

use std::collections::HashMap;
use std::fmt::Write as _;

use kiln_workflow::model::{Job, JobKind, Workflow};

use kiln_scheduler::discover::WorkflowFile;

/// A job's stage: 0 without needs, else one more than its deepest need. Needs naming no job
/// (the parser reports those) count as stage 0, and the walk is bounded by the job count, so
/// a cycle cannot loop.
pub fn stages(workflow: &Workflow) -> Vec<Vec<&Job>> {
    let index: HashMap<&str, usize> = workflow
        .jobs
        .iter()
        .enumerate()
        .map(|(i, j)| (j.id.value.as_str(), i))
        .collect();
    let mut level = vec![0usize; workflow.jobs.len()];
    for _ in 0..workflow.jobs.len() {
        let mut changed = false;
        for (i, job) in workflow.jobs.iter().enumerate() {
            let wanted = job
                .needs
                .iter()
                .filter_map(|n| index.get(n.value.as_str()))
                .map(|&n| level[n] + 1)
                .max()
                .unwrap_or(0);
            if wanted > level[i] && wanted <= workflow.jobs.len() {
                level[i] = wanted;
                changed = true;
            }
        }
        if !changed {
            break;
        }
    }
    let depth = level.iter().copied().max().map_or(0, |d| d + 1);
    let mut result = vec![Vec::new(); depth];
    for (job, &l) in workflow.jobs.iter().zip(&level) {
        result[l].push(job);
    }
    result
}

fn job_name(job: &Job) -> String {
    job.name
        .as_ref()
        .map(|t| t.raw.clone())
        .unwrap_or_else(|| job.id.value.clone())
}

fn runs_on(job: &Job) -> String {
    match &job.kind {
        JobKind::Call(call) => format!("uses {}", call.uses.value),
        JobKind::Steps(_) => match &job.runs_on {
            Some(kiln_workflow::model::RunsOn::Labels(labels)) => labels
                .iter()
                .map(|l| l.raw.clone())
                .collect::<Vec<_>>()
                .join(", "),
            Some(kiln_workflow::model::RunsOn::Group { labels, group, .. }) => {
                let mut parts: Vec<String> =
                    group.iter().map(|g| format!("group {}", g.raw)).collect();
                parts.extend(labels.iter().map(|l| l.raw.clone()));
                parts.join(", ")
            }
            Some(kiln_workflow::model::RunsOn::Expr(expr)) => expr.raw.clone(),
            None => String::new(),
        },
    }
}

/// act's `-l` table: stage, job id, job name, workflow name, workflow file, events.
pub fn list(files: &[&WorkflowFile], job_filter: Option<&str>) -> String {
    let mut rows = vec![[
        "Stage".to_owned(),
        "Job ID".to_owned(),
        "Job name".to_owned(),
        "Workflow name".to_owned(),
        "Workflow file".to_owned(),
        "Events".to_owned(),
        "Runs on".to_owned(),
    ]];
    for file in files {
        let events = file.events().join(",");
        for (stage, jobs) in stages(&file.workflow).iter().enumerate() {
            for job in jobs
                .iter()
                .filter(|j| job_filter.is_none_or(|f| j.id.value == f))
            {
                rows.push([
                    stage.to_string(),
                    job.id.value.clone(),
                    job_name(job),
                    file.name(),
                    file.display_path.clone(),
                    events.clone(),
                    runs_on(job),
                ]);
            }
        }
    }
    let mut widths = [0usize; 7];
    for row in &rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    for row in &rows {
        let mut line = String::new();
        for (i, (cell, width)) in row.iter().zip(widths).enumerate() {
            if i + 1 == row.len() {
                line.push_str(cell);
            } else {
                let _ = write!(line, "{cell}{}  ", " ".repeat(width - cell.chars().count()));
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// The job graph, stage by stage, each job with the jobs it needs.
pub fn graph(files: &[&WorkflowFile]) -> String {
    let mut out = String::new();
    for file in files {
        let _ = writeln!(out, "{} ({})", file.name(), file.display_path);
        let all = stages(&file.workflow);
        for (stage, jobs) in all.iter().enumerate() {
            for job in jobs {
                let needs: Vec<&str> = job.needs.iter().map(|n| n.value.as_str()).collect();
                let mut line = format!("  stage {stage}  ╭─ {}", job.id.value);
                if let JobKind::Call(call) = &job.kind {
                    let _ = write!(line, " ⇢ {}", call.uses.value);
                }
                if !needs.is_empty() {
                    let _ = write!(line, "  ◀ {}", needs.join(", "));
                }
                let _ = writeln!(out, "{line}");
            }
            if stage + 1 < all.len() {
                let _ = writeln!(out, "           │");
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn workflow(yaml: &str) -> Workflow {
        kiln_workflow::parse_workflow("w.yml", yaml)
            .value
            .expect("valid")
    }

    #[test]
    fn stages_follow_the_deepest_need() {
        let wf = workflow(
            "on: push\njobs:\n  c:\n    needs: [a, b]\n    runs-on: x\n    steps: [{run: c}]\n  b:\n    needs: a\n    runs-on: x\n    steps: [{run: b}]\n  a:\n    runs-on: x\n    steps: [{run: a}]\n  d:\n    runs-on: x\n    steps: [{run: d}]\n",
        );
        let ids: Vec<Vec<&str>> = stages(&wf)
            .iter()
            .map(|s| s.iter().map(|j| j.id.value.as_str()).collect())
            .collect();
        assert_eq!(ids, vec![vec!["a", "d"], vec!["b"], vec!["c"]]);
    }
}
