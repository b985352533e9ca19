//! Operator overrides: force an endpoint Up or Down, or drain it (withdraw it from answers while
//! it is still probed), each with a reason, an author and an expiry. Overrides are kept in
//! `<state_dir>/overrides.json` (rewritten atomically) so they survive a restart, expire by
//! themselves, and every change is appended to `<state_dir>/audit.log` (JSON lines).

use std::{
    collections::{BTreeMap, VecDeque},
    io::Write,
    path::{Path, PathBuf},
    sync::{Mutex, PoisonError},
};

use serde::{Deserialize, Serialize};

use crate::model::{EndpointId, Health};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    ForceUp,
    ForceDown,
    /// Withdraw from answers; keep probing.
    Drain,
}

impl Action {
    pub const ALL: [Action; 3] = [Action::ForceUp, Action::ForceDown, Action::Drain];

    pub fn as_str(self) -> &'static str {
        match self {
            Action::ForceUp => "force_up",
            Action::ForceDown => "force_down",
            Action::Drain => "drain",
        }
    }

    /// The health answers use, given the quorum verdict.
    pub fn effective(self, _verdict: Health) -> Health {
        match self {
            Action::ForceUp => Health::Up,
            Action::ForceDown | Action::Drain => Health::Down,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Override {
    pub endpoint: EndpointId,
    pub action: Action,
    pub reason: String,
    pub by: String,
    pub created_unix_ms: u64,
    pub expires_unix_ms: u64,
}

/// One line of the audit log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditEntry {
    pub at_unix_ms: u64,
    /// `set`, `clear` or `expired`.
    pub what: String,
    pub who: String,
    pub endpoint: EndpointId,
    pub action: Action,
    pub reason: String,
    pub expires_unix_ms: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum OverrideError {
    #[error("{path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("{path}: not a valid overrides file: {message}")]
    Corrupt { path: String, message: String },
}

/// How many audit entries are kept in memory for the status page.
const RECENT: usize = 50;

pub struct OverrideStore {
    /// Overrides that expired so far (for the metric).
    pub expired_total: std::sync::atomic::AtomicU64,
    dir: PathBuf,
    entries: Mutex<BTreeMap<EndpointId, Override>>,
    recent: Mutex<VecDeque<AuditEntry>>,
}

impl OverrideStore {
    /// Opens (creating the directory) and loads the persisted overrides.
    pub fn open(dir: &Path) -> Result<Self, OverrideError> {
        let io = |source| OverrideError::Io {
            path: dir.display().to_string(),
            source,
        };
        std::fs::create_dir_all(dir).map_err(io)?;
        let file = dir.join("overrides.json");
        let entries = match std::fs::read(&file) {
            Ok(bytes) => {
                let list: Vec<Override> =
                    serde_json::from_slice(&bytes).map_err(|e| OverrideError::Corrupt {
                        path: file.display().to_string(),
                        message: e.to_string(),
                    })?;
                list.into_iter().map(|o| (o.endpoint.clone(), o)).collect()
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => BTreeMap::new(),
            Err(source) => {
                return Err(OverrideError::Io {
                    path: file.display().to_string(),
                    source,
                });
            }
        };
        Ok(Self {
            expired_total: std::sync::atomic::AtomicU64::new(0),
            dir: dir.to_path_buf(),
            entries: Mutex::new(entries),
            recent: Mutex::new(VecDeque::new()),
        })
    }

    fn persist(&self, entries: &BTreeMap<EndpointId, Override>) -> Result<(), OverrideError> {
        let file = self.dir.join("overrides.json");
        let list: Vec<&Override> = entries.values().collect();
        let body = serde_json::to_vec_pretty(&list).map_err(|e| OverrideError::Corrupt {
            path: file.display().to_string(),
            message: e.to_string(),
        })?;
        crate::write_atomically(&file, &body).map_err(|source| OverrideError::Io {
            path: file.display().to_string(),
            source,
        })
    }

    fn audit(&self, entry: AuditEntry) {
        let path = self.dir.join("audit.log");
        let line = serde_json::to_string(&entry).unwrap_or_default();
        let written = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .and_then(|mut f| writeln!(f, "{line}"));
        if let Err(error) = written {
            tracing::error!(path = %path.display(), %error, "cannot append to the audit log");
        }
        tracing::info!(what = %entry.what, who = %entry.who, endpoint = %entry.endpoint,
            action = entry.action.as_str(), reason = %entry.reason, "override {}", entry.what);
        let mut recent = self.recent.lock().unwrap_or_else(PoisonError::into_inner);
        recent.push_front(entry);
        recent.truncate(RECENT);
    }

    /// Sets (or replaces) the override of an endpoint.
    pub fn set(&self, o: Override) -> Result<(), OverrideError> {
        let mut entries = self.entries.lock().unwrap_or_else(PoisonError::into_inner);
        let mut next = entries.clone();
        next.insert(o.endpoint.clone(), o.clone());
        self.persist(&next)?;
        *entries = next;
        drop(entries);
        self.audit(AuditEntry {
            at_unix_ms: o.created_unix_ms,
            what: "set".into(),
            who: o.by,
            endpoint: o.endpoint,
            action: o.action,
            reason: o.reason,
            expires_unix_ms: o.expires_unix_ms,
        });
        Ok(())
    }

    /// Removes the override of an endpoint; returns it if there was one.
    pub fn clear(
        &self,
        endpoint: &EndpointId,
        by: &str,
        reason: &str,
        now_ms: u64,
    ) -> Result<Option<Override>, OverrideError> {
        let mut entries = self.entries.lock().unwrap_or_else(PoisonError::into_inner);
        let mut next = entries.clone();
        let removed = next.remove(endpoint);
        if removed.is_none() {
            return Ok(None);
        }
        self.persist(&next)?;
        *entries = next;
        drop(entries);
        if let Some(o) = &removed {
            self.audit(AuditEntry {
                at_unix_ms: now_ms,
                what: "clear".into(),
                who: by.to_string(),
                endpoint: o.endpoint.clone(),
                action: o.action,
                reason: reason.to_string(),
                expires_unix_ms: o.expires_unix_ms,
            });
        }
        Ok(removed)
    }

    /// The overrides in force at `now_ms`; expired ones are removed (and audited).
    pub fn active(&self, now_ms: u64) -> BTreeMap<EndpointId, Override> {
        let mut entries = self.entries.lock().unwrap_or_else(PoisonError::into_inner);
        let expired: Vec<Override> = entries
            .values()
            .filter(|o| o.expires_unix_ms <= now_ms)
            .cloned()
            .collect();
        if !expired.is_empty() {
            let mut next = entries.clone();
            for o in &expired {
                next.remove(&o.endpoint);
            }
            if let Err(error) = self.persist(&next) {
                tracing::error!(%error, "cannot persist expired overrides; they are out of force anyway");
            }
            *entries = next;
        }
        // Whatever happened on disk, an expired override is never in force.
        let active: BTreeMap<EndpointId, Override> = entries
            .iter()
            .filter(|(_, o)| o.expires_unix_ms > now_ms)
            .map(|(k, o)| (k.clone(), o.clone()))
            .collect();
        drop(entries);
        for o in expired {
            self.expired_total
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            self.audit(AuditEntry {
                at_unix_ms: now_ms,
                what: "expired".into(),
                who: "vantage".into(),
                endpoint: o.endpoint,
                action: o.action,
                reason: o.reason,
                expires_unix_ms: o.expires_unix_ms,
            });
        }
        active
    }

    /// The latest audit entries, newest first.
    pub fn recent(&self) -> Vec<AuditEntry> {
        self.recent
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .cloned()
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn drain(endpoint: &str, expires: u64) -> Override {
        Override {
            endpoint: EndpointId::new(endpoint),
            action: Action::Drain,
            reason: "maintenance".into(),
            by: "alice".into(),
            created_unix_ms: 1_000,
            expires_unix_ms: expires,
        }
    }

    #[test]
    fn overrides_survive_a_restart_expire_and_are_audited() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = OverrideStore::open(dir.path()).expect("open");
        store.set(drain("use1", 10_000)).expect("set");
        store.set(drain("euw1", 2_000)).expect("set");
        let reopened = OverrideStore::open(dir.path()).expect("reopen");
        assert_eq!(reopened.active(1_500).len(), 2, "persisted");
        assert_eq!(reopened.active(5_000).len(), 1, "euw1 expired");
        assert_eq!(
            OverrideStore::open(dir.path())
                .expect("again")
                .active(5_000)
                .len(),
            1,
            "expiry persisted"
        );
        let removed = reopened
            .clear(&EndpointId::new("use1"), "bob", "done", 6_000)
            .expect("clear");
        assert!(removed.is_some());
        assert!(reopened.active(6_000).is_empty());
        let log = std::fs::read_to_string(dir.path().join("audit.log")).expect("audit log");
        let whats: Vec<String> = log
            .lines()
            .map(|l| serde_json::from_str::<AuditEntry>(l).expect("entry").what)
            .collect();
        assert_eq!(whats, vec!["set", "set", "expired", "clear"]);
        assert!(log.contains("\"who\":\"bob\""));
    }

    #[test]
    fn a_corrupt_file_is_an_error_naming_it() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("overrides.json"), "{not json").expect("write");
        let err = OverrideStore::open(dir.path()).err().expect("error");
        assert!(err.to_string().contains("overrides.json"), "{err}");
    }
}
