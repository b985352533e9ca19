//! Operator overrides: force an endpoint Up or Down, or drain it (withdraw it from answers while
//! it is still probed), each with a reason, an author and an expiry. Overrides are kept in
//! `<state_dir>/overrides.json` (rewritten atomically) so they survive a restart, expire by
//! themselves, and every change is appended to `<state_dir>/audit.log` (JSON lines).

use std::{
    collections::{BTreeMap, VecDeque},
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

impl AuditEntry {
    /// What happened to override `o` (`set`, `clear`, `expired`), by whom, why, when.
    pub fn of(o: &Override, what: &str, who: &str, reason: &str, at_unix_ms: u64) -> Self {
        Self {
            at_unix_ms,
            what: what.to_string(),
            who: who.to_string(),
            endpoint: o.endpoint.clone(),
            action: o.action,
            reason: reason.to_string(),
            expires_unix_ms: o.expires_unix_ms,
        }
    }
}

/// The latest audit entries, newest first, for the status page; each is logged as it comes.
#[derive(Default)]
pub struct Recent(Mutex<VecDeque<AuditEntry>>);

impl Recent {
    pub fn remember(&self, entry: AuditEntry) {
        tracing::info!(what = %entry.what, who = %entry.who, endpoint = %entry.endpoint,
            action = entry.action.as_str(), reason = %entry.reason, "override {}", entry.what);
        let mut recent = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        recent.push_front(entry);
        recent.truncate(RECENT);
    }

    /// Replaces the entries (newest first) without logging them (history read at start).
    pub fn replace(&self, entries: VecDeque<AuditEntry>) {
        *self.0.lock().unwrap_or_else(PoisonError::into_inner) = entries;
    }

    pub fn list(&self) -> Vec<AuditEntry> {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .cloned()
            .collect()
    }
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
    #[error("overrides cannot be kept: {0}")]
    Unavailable(String),
}

/// How many audit entries are kept in memory for the status page.
pub const RECENT: usize = 50;

/// Overrides kept in this process's state directory (`overrides.json`, `audit.log`).
pub struct FileOverrides {
    /// Overrides that expired so far (for the metric).
    pub expired_total: std::sync::atomic::AtomicU64,
    dir: PathBuf,
    entries: Mutex<BTreeMap<EndpointId, Override>>,
    recent: Recent,
    problem: Option<String>,
    writable: bool,
    /// Wakes whoever waits for the overrides to change (the aggregator).
    pub changed: tokio::sync::Notify,
}

impl FileOverrides {
    /// Opens (creating the directory) and loads the persisted overrides. Never fails: a
    /// corrupt file is moved aside and an unusable directory leaves the store read-only, each
    /// reported by [`FileOverrides::problem`].
    pub fn open(dir: &Path) -> Self {
        let loaded = super::file::load::<Override>(dir, "overrides.json", "overrides");
        Self {
            expired_total: std::sync::atomic::AtomicU64::new(0),
            dir: dir.to_path_buf(),
            entries: Mutex::new(
                loaded
                    .items
                    .into_iter()
                    .map(|o| (o.endpoint.clone(), o))
                    .collect(),
            ),
            recent: Recent::default(),
            problem: loaded.problem,
            writable: loaded.writable,
            changed: tokio::sync::Notify::new(),
        }
    }

    /// What went wrong with the persisted state at start, if anything.
    pub fn problem(&self) -> Option<&str> {
        self.problem.as_deref()
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

    /// Appends `entry` to the audit log (one write, so concurrent entries never interleave),
    /// logs it and keeps it for the status page; an error when the log cannot be written.
    fn audit(&self, entry: AuditEntry) -> Result<(), OverrideError> {
        let path = self.dir.join("audit.log");
        let line = serde_json::to_string(&entry).unwrap_or_default();
        super::file::append_line(&path, &line).map_err(|source| {
            tracing::error!(path = %path.display(), error = %source, "cannot append to the audit log");
            OverrideError::Io {
                path: path.display().to_string(),
                source,
            }
        })?;
        self.remember(entry);
        Ok(())
    }

    fn remember(&self, entry: AuditEntry) {
        self.recent.remember(entry);
    }

    fn writable(&self) -> Result<(), OverrideError> {
        if self.writable {
            Ok(())
        } else {
            Err(OverrideError::Unavailable(
                self.problem.clone().unwrap_or_default(),
            ))
        }
    }

    /// Sets (or replaces) the override of an endpoint.
    /// An override whose audit entry cannot be written is refused (nothing changes).
    pub fn set(&self, o: Override) -> Result<(), OverrideError> {
        self.writable()?;
        let mut entries = self.entries.lock().unwrap_or_else(PoisonError::into_inner);
        let mut next = entries.clone();
        next.insert(o.endpoint.clone(), o.clone());
        let entry = AuditEntry::of(&o, "set", &o.by, &o.reason, o.created_unix_ms);
        self.audit(entry.clone())?;
        if let Err(e) = self.persist(&next) {
            let _ = self.audit(AuditEntry {
                what: "set failed".into(),
                ..entry
            });
            return Err(e);
        }
        *entries = next;
        self.changed.notify_waiters();
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
        self.writable()?;
        let mut entries = self.entries.lock().unwrap_or_else(PoisonError::into_inner);
        let mut next = entries.clone();
        let Some(o) = next.remove(endpoint) else {
            return Ok(None);
        };
        let entry = AuditEntry::of(&o, "clear", by, reason, now_ms);
        self.audit(entry.clone())?;
        if let Err(e) = self.persist(&next) {
            let _ = self.audit(AuditEntry {
                what: "clear failed".into(),
                ..entry
            });
            return Err(e);
        }
        *entries = next;
        self.changed.notify_waiters();
        Ok(Some(o))
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
            let entry = AuditEntry::of(&o, "expired", "vantage", &o.reason, now_ms);
            // An expiry happens whether or not it can be written down.
            if self.audit(entry.clone()).is_err() {
                self.remember(entry);
            }
        }
        active
    }

    /// The latest audit entries, newest first.
    pub fn recent(&self) -> Vec<AuditEntry> {
        self.recent.list()
    }
}

/// The state backend as status shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Backend {
    pub kind: &'static str,
    pub reachable: bool,
    pub error: Option<String>,
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
        let store = FileOverrides::open(dir.path());
        store.set(drain("use1", 10_000)).expect("set");
        store.set(drain("euw1", 2_000)).expect("set");
        let reopened = FileOverrides::open(dir.path());
        assert_eq!(reopened.active(1_500).len(), 2, "persisted");
        assert_eq!(reopened.active(5_000).len(), 1, "euw1 expired");
        assert_eq!(
            FileOverrides::open(dir.path()).active(5_000).len(),
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
    fn a_corrupt_file_is_moved_aside_and_named() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("overrides.json"), "{not json").expect("write");
        let store = FileOverrides::open(dir.path());
        assert!(store.active(0).is_empty());
        let problem = store.problem().expect("a problem");
        assert!(
            problem.contains("overrides.json") && problem.contains("moved aside"),
            "{problem}"
        );
        store
            .set(drain("use1", 10_000))
            .expect("a fresh file is written");
    }

    #[test]
    fn without_a_state_directory_overrides_are_refused_with_the_reason() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("file"), "x").expect("write");
        let store = FileOverrides::open(&dir.path().join("file/state"));
        let err = store.set(drain("use1", 10_000)).expect_err("refused");
        assert!(err.to_string().contains("admin.state_dir"), "{err}");
        assert!(store.active(0).is_empty());
    }

    #[test]
    fn an_override_whose_audit_entry_cannot_be_written_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = FileOverrides::open(dir.path());
        // A directory where the audit log should be: appending fails.
        std::fs::create_dir(dir.path().join("audit.log")).expect("dir");
        assert!(store.set(drain("use1", 10_000)).is_err());
        assert!(
            store.active(0).is_empty(),
            "nothing set without its audit entry"
        );
        assert!(!dir.path().join("overrides.json").exists());
    }
}
