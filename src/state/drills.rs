//! The last drill result per record, kept by every serving process in
//! `<admin.state_dir>/drills.json` (rewritten atomically) and exported as metrics, so that
//! Prometheus can alert on "no drill in 90 days" and "RTO target missed".

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    sync::{Mutex, PoisonError},
};

use serde::{Deserialize, Serialize};

/// What one drill measured for one record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DrillResult {
    /// Fully qualified, lower case (`www.example.com.`).
    pub record: String,
    /// `A` or `AAAA`.
    #[serde(rename = "type")]
    pub kind: String,
    /// The endpoint that was failed.
    pub endpoint: String,
    /// `override` (injected) or `real` (caused by the operator).
    pub mode: String,
    pub finished_unix_ms: u64,
    /// Time to full recovery; none when some server did not recover within the timeout.
    pub rto_ms: Option<u64>,
    /// What is compared with the target: the RTO, plus in override mode the time the checks
    /// need to notice a real failure.
    pub compared_ms: Option<u64>,
    pub target_ms: Option<u64>,
    /// Whether the target was met; none when the record has no target.
    pub met: Option<bool>,
}

#[derive(Debug, thiserror::Error)]
pub enum ResultsError {
    #[error("{path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("{path}: not a valid drill results file: {message}; move it away to start afresh")]
    Corrupt { path: String, message: String },
}

/// The latest result per (record, type), persisted.
pub struct DrillResults {
    file: PathBuf,
    latest: Mutex<BTreeMap<(String, String), DrillResult>>,
    problem: Option<String>,
}

impl DrillResults {
    /// Opens (creating the directory) and loads the results kept in `dir`. Never fails: a
    /// corrupt file is moved aside and an unusable directory leaves the store in memory only,
    /// each reported by [`DrillResults::problem`].
    pub fn open(dir: &Path) -> Self {
        let loaded = super::file::load::<DrillResult>(dir, "drills.json", "drill results");
        Self {
            file: dir.join("drills.json"),
            latest: Mutex::new(
                loaded
                    .items
                    .into_iter()
                    .map(|r| ((r.record.clone(), r.kind.clone()), r))
                    .collect(),
            ),
            problem: loaded.problem,
        }
    }

    /// What went wrong with the persisted results at start, if anything.
    pub fn problem(&self) -> Option<&str> {
        self.problem.as_deref()
    }

    /// Keeps `result` as the latest of its record (persisted before it is kept in memory).
    pub fn record(&self, result: DrillResult) -> Result<(), ResultsError> {
        let mut latest = self.latest.lock().unwrap_or_else(PoisonError::into_inner);
        let mut next = latest.clone();
        next.insert((result.record.clone(), result.kind.clone()), result);
        self.persist(&next)?;
        *latest = next;
        Ok(())
    }

    pub fn latest(&self) -> Vec<DrillResult> {
        self.latest
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .values()
            .cloned()
            .collect()
    }

    fn persist(
        &self,
        entries: &BTreeMap<(String, String), DrillResult>,
    ) -> Result<(), ResultsError> {
        let path = self.file.display().to_string();
        let list: Vec<&DrillResult> = entries.values().collect();
        let body = serde_json::to_vec_pretty(&list).map_err(|e| ResultsError::Corrupt {
            path: path.clone(),
            message: e.to_string(),
        })?;
        crate::write_atomically(&self.file, &body)
            .map_err(|source| ResultsError::Io { path, source })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn result(record: &str, at: u64, met: bool) -> DrillResult {
        DrillResult {
            record: record.into(),
            kind: "A".into(),
            endpoint: "use1".into(),
            mode: "override".into(),
            finished_unix_ms: at,
            rto_ms: Some(1500),
            compared_ms: Some(3500),
            target_ms: Some(10_000),
            met: Some(met),
        }
    }

    #[test]
    fn the_latest_result_per_record_survives_a_restart() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = DrillResults::open(dir.path());
        store
            .record(result("www.example.com.", 1, true))
            .expect("record");
        store
            .record(result("www.example.com.", 2, false))
            .expect("record");
        store
            .record(result("api.example.com.", 3, true))
            .expect("record");
        let reopened = DrillResults::open(dir.path());
        let latest = reopened.latest();
        assert_eq!(latest.len(), 2);
        let www = latest
            .iter()
            .find(|r| r.record == "www.example.com.")
            .expect("www");
        assert_eq!((www.finished_unix_ms, www.met), (2, Some(false)));
    }

    #[test]
    fn a_corrupt_file_is_moved_aside_and_named() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("drills.json"), "{not json").expect("write");
        let store = DrillResults::open(dir.path());
        assert!(store.latest().is_empty());
        let problem = store.problem().expect("a problem");
        assert!(problem.contains("drills.json"), "{problem}");
    }
}
