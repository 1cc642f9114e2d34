//! Terminal output of a run. Both modes print every log line prefixed with
//! `[workflow/job]`; on a TTY a live footer below the scrolling log shows each running job
//! with a spinner, its current step and elapsed time, redrawn in place.

use std::io::{BufWriter, Stdout, Write};
use std::time::{Duration, Instant};

use indexmap::IndexMap;
use kiln_workflow::Conclusion;

use super::report::RunReport;

const SPINNER: [char; 10] = ['⠋', '⠙', '⠹', '⠸', '⠼', '⠴', '⠦', '⠧', '⠇', '⠏'];

struct LiveJob {
    step: String,
    started: Instant,
}

pub struct Renderer {
    out: BufWriter<Stdout>,
    live: bool,
    running: IndexMap<String, LiveJob>,
    footer_lines: usize,
    frame: usize,
}

fn mark(conclusion: Conclusion) -> &'static str {
    match conclusion {
        Conclusion::Success => "✔",
        Conclusion::Failure => "✘",
        Conclusion::Cancelled => "⊗",
        Conclusion::Skipped => "⊘",
    }
}

/// `12ms`, `3.40s`, `2m05s`.
pub fn format_duration(duration: Duration) -> String {
    let millis = duration.as_millis();
    if millis < 1000 {
        format!("{millis}ms")
    } else if millis < 60_000 {
        format!("{:.2}s", duration.as_secs_f64())
    } else {
        format!("{}m{:02}s", millis / 60_000, millis % 60_000 / 1000)
    }
}

impl Renderer {
    /// `live`: draw the status footer (only when stdout is a terminal).
    pub fn new(live: bool) -> Renderer {
        Renderer {
            out: BufWriter::with_capacity(64 * 1024, std::io::stdout()),
            live,
            running: IndexMap::new(),
            footer_lines: 0,
            frame: 0,
        }
    }

    /// Terminal writes fail only when stdout is gone (a closed pipe); the run goes on and
    /// its exit status and report still say how it ended.
    fn write_line(&mut self, line: &str) {
        self.clear_footer();
        let _ = writeln!(self.out, "{line}");
    }

    fn clear_footer(&mut self) {
        if self.footer_lines > 0 {
            // Cursor to the start of the footer's first line, then erase to the end of the screen.
            let _ = write!(self.out, "\x1b[{}F\x1b[J", self.footer_lines);
            self.footer_lines = 0;
        }
    }

    fn draw_footer(&mut self) {
        if !self.live || self.running.is_empty() {
            return;
        }
        let spinner = SPINNER[self.frame % SPINNER.len()];
        // Auto-wrap is off while the footer is drawn: the terminal clips a line wider than
        // the screen instead of wrapping it, so the footer is exactly one row per job and
        // `clear_footer` moves up by the right count on any terminal width.
        let _ = write!(self.out, "\x1b[?7l");
        for (name, job) in &self.running {
            let elapsed = format_duration(job.started.elapsed());
            let _ = writeln!(
                self.out,
                "\x1b[2m{spinner} {name} · {} · {elapsed}\x1b[0m",
                job.step
            );
        }
        let _ = write!(self.out, "\x1b[?7h");
        self.footer_lines = self.running.len();
    }

    /// A line outside any job (executor choice, skipped workflows).
    pub fn notice(&mut self, message: &str) {
        self.write_line(&format!("kiln: {message}"));
    }

    pub fn job_started(&mut self, prefix: &str) {
        self.write_line(&format!("[{prefix}] 🚀 job started"));
        self.running.insert(
            prefix.to_owned(),
            LiveJob {
                step: "setting up".to_owned(),
                started: Instant::now(),
            },
        );
    }

    /// A job-level message (skipped, failed to start).
    pub fn job_message(&mut self, prefix: &str, message: &str) {
        self.write_line(&format!("[{prefix}] {message}"));
    }

    pub fn step_started(&mut self, prefix: &str, step: &str) {
        self.write_line(&format!("[{prefix}] ▶ {step}"));
        if let Some(job) = self.running.get_mut(prefix) {
            job.step = step.replace(['\n', '\r'], " ");
        }
    }

    pub fn log(&mut self, prefix: &str, line: &str) {
        self.write_line(&format!("[{prefix}]   {line}"));
    }

    pub fn step_finished(
        &mut self,
        prefix: &str,
        step: &str,
        conclusion: Conclusion,
        duration: Duration,
    ) {
        let line = format!(
            "[{prefix}] {} {step}: {conclusion} ({})",
            mark(conclusion),
            format_duration(duration)
        );
        self.write_line(&line);
    }

    pub fn job_finished(&mut self, prefix: &str, conclusion: Conclusion, duration: Duration) {
        self.running.shift_remove(prefix);
        let line = format!(
            "[{prefix}] {} job {conclusion} ({})",
            mark(conclusion),
            format_duration(duration)
        );
        self.write_line(&line);
    }

    /// Advances the spinner and redraws the footer; call a few times a second on a TTY.
    pub fn tick(&mut self) {
        self.frame = self.frame.wrapping_add(1);
        self.flush();
    }

    /// Draws the footer (live mode) and pushes everything written so far to the terminal.
    pub fn flush(&mut self) {
        self.clear_footer();
        self.draw_footer();
        let _ = self.out.flush();
    }

    /// The table printed at the end: one row per job leg.
    pub fn summary(&mut self, reports: &[RunReport]) {
        self.clear_footer();
        self.running.clear();
        let several = reports.len() > 1;
        let mut rows = Vec::new();
        for report in reports {
            for job in &report.jobs {
                let name = if several {
                    format!("{}/{}", report.workflow, job.name)
                } else {
                    job.name.clone()
                };
                let duration = job
                    .duration()
                    .map(format_duration)
                    .unwrap_or_else(|| "-".to_owned());
                rows.push((
                    name,
                    format!("{} {}", mark(job.conclusion), job.conclusion),
                    duration,
                ));
            }
        }
        let name_width = rows
            .iter()
            .map(|r| r.0.chars().count())
            .chain([3])
            .max()
            .unwrap_or(3);
        let _ = writeln!(self.out);
        let _ = writeln!(
            self.out,
            "{:<name_width$}  {:<11}  DURATION",
            "JOB", "RESULT"
        );
        for (name, result, duration) in rows {
            // Padding counts chars so the multi-byte marks line up.
            let pad = name_width.saturating_sub(name.chars().count());
            let _ = writeln!(
                self.out,
                "{name}{}  {result:<11}  {duration}",
                " ".repeat(pad)
            );
        }
        for report in reports {
            let _ = writeln!(
                self.out,
                "workflow {}: {}",
                report.workflow, report.conclusion
            );
        }
        let _ = self.out.flush();
    }
}

#[cfg(test)]
mod tests {
    use super::format_duration;
    use std::time::Duration;

    #[test]
    fn durations_read_naturally() {
        assert_eq!(format_duration(Duration::from_millis(12)), "12ms");
        assert_eq!(format_duration(Duration::from_millis(3400)), "3.40s");
        assert_eq!(format_duration(Duration::from_secs(125)), "2m05s");
    }
}
