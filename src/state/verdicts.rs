//! Verdicts kept across restarts (`admin.state_dir/verdicts.json`): written when a verdict
//! changes, read at start, so that a server restarted where it cannot reach a quorum of probers
//! holds its last verdicts (fail static) instead of starting undecided.

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    sync::{Mutex, PoisonError},
};

use serde::{Deserialize, Serialize};

use crate::model::{EndpointId, Health};

const FILE: &str = "verdicts.json";

/// One endpoint's verdict as saved.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SavedVerdict {
    pub endpoint: EndpointId,
    pub health: Health,
    /// When the verdict was saved (wall clock).
    pub saved_unix_ms: u64,
}

/// What a start found in the state directory.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Restored {
    /// Verdicts of configured endpoints taken over.
    pub endpoints: usize,
    /// When the newest of them was saved.
    pub saved_unix_ms: Option<u64>,
}

pub struct VerdictStore {
    file: PathBuf,
    writable: bool,
    problem: Option<String>,
    /// What the file holds now (saved only when a health differs).
    saved: Mutex<BTreeMap<EndpointId, Health>>,
    restored: Restored,
}

impl VerdictStore {
    /// Opens the store in `dir`; returns it with the saved verdicts of the endpoints in
    /// `configured` (others are forgotten). A corrupt file is moved aside (see `state::file`).
    pub fn open(
        dir: &Path,
        configured: impl Fn(&EndpointId) -> bool,
    ) -> (Self, BTreeMap<EndpointId, Health>) {
        let loaded = super::file::load::<SavedVerdict>(dir, FILE, "saved verdicts");
        let restored: BTreeMap<EndpointId, (Health, u64)> = loaded
            .items
            .into_iter()
            .filter(|v| v.health != Health::Unknown && configured(&v.endpoint))
            .map(|v| (v.endpoint, (v.health, v.saved_unix_ms)))
            .collect();
        let store = Self {
            file: dir.join(FILE),
            writable: loaded.writable,
            problem: loaded.problem,
            saved: Mutex::new(restored.iter().map(|(e, (h, _))| (e.clone(), *h)).collect()),
            restored: Restored {
                endpoints: restored.len(),
                saved_unix_ms: restored.values().map(|(_, at)| *at).max(),
            },
        };
        let verdicts = restored.into_iter().map(|(e, (h, _))| (e, h)).collect();
        (store, verdicts)
    }

    pub fn problem(&self) -> Option<&str> {
        self.problem.as_deref()
    }

    pub fn restored(&self) -> &Restored {
        &self.restored
    }

    /// Saves `verdicts` if any decided health differs from what the file holds. A failure is
    /// logged (the server keeps serving; the next change tries again).
    pub fn save(&self, verdicts: &crate::quorum::Verdicts, now_ms: u64) {
        if !self.writable {
            return;
        }
        let next: BTreeMap<EndpointId, Health> = verdicts
            .iter()
            .filter(|(_, v)| v.health != Health::Unknown)
            .map(|(e, v)| (e.clone(), v.health))
            .collect();
        let mut saved = self.saved.lock().unwrap_or_else(PoisonError::into_inner);
        if *saved == next {
            return;
        }
        let list: Vec<SavedVerdict> = next
            .iter()
            .map(|(endpoint, health)| SavedVerdict {
                endpoint: endpoint.clone(),
                health: *health,
                saved_unix_ms: now_ms,
            })
            .collect();
        let written = serde_json::to_vec_pretty(&list)
            .map_err(std::io::Error::other)
            .and_then(|body| crate::write_atomically(&self.file, &body));
        match written {
            Ok(()) => *saved = next,
            Err(error) => tracing::error!(file = %self.file.display(), %error,
                "cannot save the verdicts; a restart would start without them"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::quorum::Verdict;

    fn verdict(health: Health) -> std::sync::Arc<Verdict> {
        std::sync::Arc::new(Verdict {
            health,
            ..Verdict::unknown(1)
        })
    }

    #[test]
    fn verdicts_survive_a_restart_for_configured_endpoints_only() {
        let dir = tempfile::tempdir().expect("dir");
        let (store, restored) = VerdictStore::open(dir.path(), |_| true);
        assert!(restored.is_empty());
        let mut verdicts = BTreeMap::new();
        verdicts.insert(EndpointId::new("a"), verdict(Health::Down));
        verdicts.insert(EndpointId::new("b"), verdict(Health::Up));
        verdicts.insert(EndpointId::new("c"), verdict(Health::Unknown));
        store.save(&verdicts, 1_000);
        let (store, restored) = VerdictStore::open(dir.path(), |e| e.as_str() != "b");
        assert_eq!(
            restored,
            BTreeMap::from([(EndpointId::new("a"), Health::Down)])
        );
        assert_eq!(store.restored().endpoints, 1);
        assert_eq!(store.restored().saved_unix_ms, Some(1_000));
        assert!(store.problem().is_none());
    }

    #[test]
    fn a_corrupt_file_starts_empty_and_is_reported() {
        let dir = tempfile::tempdir().expect("dir");
        std::fs::write(dir.path().join(FILE), b"[{\"endpoint\": ").expect("write");
        let (store, restored) = VerdictStore::open(dir.path(), |_| true);
        assert!(restored.is_empty());
        assert!(store.problem().expect("problem").contains("moved aside"));
    }
}
