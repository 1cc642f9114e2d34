//! The `--report FILE` JSON document: one object per run with every job leg (also skipped
//! ones) in the order they were decided, conclusions in GitHub's words, RFC 3339 times.

use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use indexmap::IndexMap;
use kiln_workflow::{Conclusion, StepCache};
use serde::Serialize;

#[derive(Debug, Clone, Serialize)]
pub struct RunReport {
    pub workflow: String,
    /// The workflow file, relative to the repository.
    pub file: String,
    pub event: String,
    pub conclusion: Conclusion,
    pub jobs: Vec<JobReport>,
}

#[derive(Debug, Clone, Serialize)]
pub struct JobReport {
    /// The job's id (`build`, or `caller/build` inside a called workflow).
    pub id: String,
    /// The display name (`build (3.12, full)`).
    pub name: String,
    /// The leg's matrix values; `null` for a job without a matrix.
    pub matrix: Option<serde_json::Value>,
    pub conclusion: Conclusion,
    pub outputs: IndexMap<String, String>,
    /// `null` for a job that never started (skipped).
    #[serde(serialize_with = "serialize_time")]
    pub started_at: Option<SystemTime>,
    #[serde(serialize_with = "serialize_time")]
    pub finished_at: Option<SystemTime>,
    pub steps: Vec<StepReport>,
    /// The job's step summaries as one Markdown document (secrets masked); `null` when no
    /// step wrote one.
    pub summary: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct StepReport {
    pub id: String,
    pub name: String,
    pub outcome: Conclusion,
    pub conclusion: Conclusion,
    /// What a cache step did (lookup, matched key, bytes restored, save); `null` for other
    /// steps. docs/run.md documents the fields.
    pub cache: Option<StepCache>,
}

impl JobReport {
    pub fn duration(&self) -> Option<Duration> {
        self.finished_at?.duration_since(self.started_at?).ok()
    }
}

fn serialize_time<S: serde::Serializer>(
    time: &Option<SystemTime>,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    match time {
        Some(time) => serializer.serialize_str(&rfc3339(*time)),
        None => serializer.serialize_none(),
    }
}

/// `2024-05-01T12:34:56.789Z` (UTC, millisecond precision).
pub fn rfc3339(time: SystemTime) -> String {
    let since = time.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = since.as_secs();
    let (days, of_day) = (secs / 86_400, secs % 86_400);
    let (year, month, day) = civil_from_days(days);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        of_day / 3600,
        of_day % 3600 / 60,
        of_day % 60,
        since.subsec_millis()
    )
}

/// Gregorian date of a day count since 1970-01-01 (Howard Hinnant's civil-from-days algorithm).
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let day_of_era = z % 146_097;
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let mp = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = year_of_era + era * 400 + u64::from(month <= 2);
    (year, month, day)
}

#[derive(Debug, thiserror::Error)]
#[error("cannot write the report to {path}: {source}")]
pub struct ReportError {
    path: String,
    #[source]
    source: std::io::Error,
}

/// Writes the reports of every workflow that ran: one document when one workflow ran (the
/// documented shape), otherwise a JSON array of them.
pub fn write(path: &Path, reports: &[RunReport]) -> Result<(), ReportError> {
    let json = match reports {
        [single] => serde_json::to_string_pretty(single),
        many => serde_json::to_string_pretty(many),
    }
    .map_err(|e| std::io::Error::other(e.to_string()));
    json.and_then(|text| std::fs::write(path, text + "\n"))
        .map_err(|source| ReportError {
            path: path.display().to_string(),
            source,
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_formats_utc_with_milliseconds() {
        assert_eq!(rfc3339(UNIX_EPOCH), "1970-01-01T00:00:00.000Z");
        let leap_day = UNIX_EPOCH + Duration::from_millis(951_782_400_000 + 3_723_456);
        assert_eq!(rfc3339(leap_day), "2000-02-29T01:02:03.456Z");
        let late = UNIX_EPOCH + Duration::from_secs(4_102_444_799);
        assert_eq!(rfc3339(late), "2099-12-31T23:59:59.000Z");
    }

    #[test]
    fn report_shape_matches_the_documented_keys() {
        let report = RunReport {
            workflow: "ci".into(),
            file: ".github/workflows/ci.yml".into(),
            event: "push".into(),
            conclusion: Conclusion::Success,
            jobs: vec![JobReport {
                id: "build".into(),
                name: "build (1)".into(),
                matrix: Some(serde_json::json!({"n": 1})),
                conclusion: Conclusion::Success,
                outputs: IndexMap::from([("v".to_owned(), "1".to_owned())]),
                started_at: Some(UNIX_EPOCH),
                finished_at: None,
                steps: vec![StepReport {
                    id: "s".into(),
                    name: "Run echo".into(),
                    outcome: Conclusion::Failure,
                    conclusion: Conclusion::Success,
                    cache: Some(StepCache {
                        key: "deps-2".into(),
                        lookup: Some(kiln_workflow::CacheLookup::RestoreKey),
                        matched_key: Some("deps-1".into()),
                        restored_bytes: 10,
                        save: Some(kiln_workflow::CacheSave::Saved),
                        saved_bytes: 12,
                        uploaded_bytes: 3,
                    }),
                }],
                summary: Some("# Done\n".into()),
            }],
        };
        let json = serde_json::to_value(&report).expect("serializable");
        assert_eq!(json["jobs"][0]["started_at"], "1970-01-01T00:00:00.000Z");
        assert_eq!(json["jobs"][0]["finished_at"], serde_json::Value::Null);
        assert_eq!(json["jobs"][0]["steps"][0]["outcome"], "failure");
        assert_eq!(json["conclusion"], "success");
        assert_eq!(json["jobs"][0]["matrix"]["n"], 1);
        assert_eq!(json["jobs"][0]["summary"], "# Done\n");
        let cache = &json["jobs"][0]["steps"][0]["cache"];
        assert_eq!(cache["lookup"], "restore-key");
        assert_eq!(cache["matched_key"], "deps-1");
        assert_eq!(cache["save"], "saved");
        assert_eq!(
            (
                &cache["restored_bytes"],
                &cache["saved_bytes"],
                &cache["uploaded_bytes"]
            ),
            (
                &serde_json::json!(10),
                &serde_json::json!(12),
                &serde_json::json!(3)
            )
        );
    }
}
