//! Reading workflows and actions: YAML to the typed model, collecting every diagnostic.

mod action;
pub mod contexts;
mod cron;
mod expressions;
mod ids;
mod job;
mod on;
mod reader;
mod reusable;
mod steps;
mod workflow;

pub use action::parse_action;
pub use reusable::PermissionsPolicy;

use crate::diag::Diagnostic;
use crate::model::Workflow;
use crate::yaml::{self, Limits};
use reader::Reader;

/// A callback loading a called workflow by its `uses:` reference: the file name to report
/// diagnostics under, and the content. `None` when it cannot be loaded.
pub type Resolver<'a> = &'a dyn Fn(&str) -> Option<(String, String)>;

/// What the parser allows; defaults are GitHub's limits.
#[derive(Clone, Copy)]
pub struct ParseOptions<'a> {
    /// Loads called reusable workflows; without it, `uses:` jobs are not followed.
    pub resolver: Option<Resolver<'a>>,
    /// Jobs in the whole run, counting the jobs of called workflows.
    pub max_jobs: usize,
    pub max_depth: usize,
    /// In characters.
    pub max_file_size: usize,
    /// An estimate of the parsed template's size in bytes, as GitHub bounds it.
    pub max_result_size: usize,
    /// How deep reusable workflows may call each other (the caller is level 0).
    pub max_nested_reusable_depth: usize,
    /// The default `GITHUB_TOKEN` permissions of the repository.
    pub permissions_policy: PermissionsPolicy,
}

impl Default for ParseOptions<'_> {
    fn default() -> Self {
        ParseOptions {
            resolver: None,
            max_jobs: 256,
            max_depth: 50,
            max_file_size: 1024 * 1024,
            max_result_size: 10 * 1024 * 1024,
            // GitHub allows ten levels of workflows, the caller included.
            max_nested_reusable_depth: 10,
            permissions_policy: PermissionsPolicy::LimitedRead,
        }
    }
}

/// The model (None when the document is unusable) and every diagnostic found.
#[derive(Debug)]
pub struct ParseResult<T> {
    pub value: Option<T>,
    pub diagnostics: Vec<Diagnostic>,
}

impl<T> ParseResult<T> {
    pub fn has_errors(&self) -> bool {
        self.diagnostics.iter().any(Diagnostic::is_error)
    }

    pub fn errors(&self) -> impl Iterator<Item = &Diagnostic> {
        self.diagnostics.iter().filter(|d| d.is_error())
    }
}

/// Parses and validates a workflow without following reusable workflows.
pub fn parse_workflow(file_name: &str, content: &str) -> ParseResult<Workflow> {
    parse_workflow_with(file_name, content, &ParseOptions::default())
}

pub fn parse_workflow_with(
    file_name: &str,
    content: &str,
    options: &ParseOptions,
) -> ParseResult<Workflow> {
    let (value, mut diagnostics, size) = read_workflow_file(file_name, content, options);
    let Some(mut workflow) = value else {
        return ParseResult {
            value: None,
            diagnostics,
        };
    };
    if diagnostics.iter().any(Diagnostic::is_error) {
        return ParseResult {
            value: Some(workflow),
            diagnostics,
        };
    }
    if options.resolver.is_some() {
        reusable::resolve_calls(file_name, &mut workflow, size, options, &mut diagnostics);
    }
    let jobs = reusable::count_jobs(&workflow);
    if jobs > options.max_jobs {
        diagnostics.push(Diagnostic::error(
            file_name,
            None,
            format!(
                "The workflow may not contain more than {} jobs",
                options.max_jobs
            ),
        ));
    }
    ParseResult {
        value: Some(workflow),
        diagnostics,
    }
}

/// One file: YAML, then the model, without following calls; also the file's accounted size.
fn read_workflow_file(
    file_name: &str,
    content: &str,
    options: &ParseOptions,
) -> (Option<Workflow>, Vec<Diagnostic>, usize) {
    let limits = Limits {
        max_depth: options.max_depth,
        max_file_size: options.max_file_size,
    };
    let document = yaml::parse(content, limits);
    let mut reader = Reader::with_yaml_errors(file_name, &document);
    let Some(root) = document.root else {
        if document.errors.is_empty() {
            reader.diags.push(Diagnostic::error(
                file_name,
                None,
                "The workflow file is empty",
            ));
        }
        return (None, reader.diags, 0);
    };
    if !document.errors.is_empty() {
        return (None, reader.diags, 0);
    }
    let size = reusable::result_size(&root, file_name);
    if size > options.max_result_size {
        reader.diags.push(Diagnostic::error(
            file_name,
            None,
            "Maximum object size exceeded",
        ));
        return (None, reader.diags, size);
    }
    let workflow = workflow::read_workflow(&mut reader, &root);
    (workflow, reader.diags, size)
}
