//! A job's summary document: what its steps wrote to `GITHUB_STEP_SUMMARY`, as `kiln run`
//! prints it and a runner reports it to the scheduler.

/// One job's document: its steps' summaries in step order, each ending with a line break so
/// the next one starts on a line of its own.
pub fn job_summary(steps: &[String]) -> String {
    let mut document = String::new();
    for step in steps {
        document.push_str(step);
        if !step.ends_with('\n') {
            document.push('\n');
        }
    }
    document
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn step_summaries_are_joined_on_their_own_lines() {
        let steps = ["# One".to_owned(), "two\n".to_owned(), "three".to_owned()];
        assert_eq!(job_summary(&steps), "# One\ntwo\nthree\n");
        assert_eq!(job_summary(&[]), "");
    }
}
