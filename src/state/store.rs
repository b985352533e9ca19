//! Where a serving process keeps its overrides: the file store of its own state directory
//! (`overrides`), or the fleet's etcd (`fleet`); one interface for both.

use std::{collections::BTreeMap, path::Path};

use super::overrides::{AuditEntry, Backend, FileOverrides, Override, OverrideError};
use crate::model::EndpointId;

/// Where a serving process keeps its overrides: its own state directory, or etcd, shared by
/// the whole fleet (`[state] backend = "etcd"`).
pub enum OverrideStore {
    File(FileOverrides),
    Fleet(std::sync::Arc<super::fleet::FleetOverrides>),
}

impl OverrideStore {
    /// The file store in `dir`.
    pub fn open(dir: &Path) -> Self {
        Self::File(FileOverrides::open(dir))
    }

    /// What went wrong with the store at start, if anything.
    pub fn problem(&self) -> Option<String> {
        match self {
            Self::File(f) => f.problem().map(str::to_string),
            Self::Fleet(f) => f.problem(),
        }
    }

    /// Sets (or replaces) the override of an endpoint, with its audit entry.
    pub async fn set(&self, o: Override) -> Result<(), OverrideError> {
        match self {
            Self::File(f) => f.set(o),
            Self::Fleet(f) => f.set(o).await,
        }
    }

    /// Removes the override of an endpoint; returns it if there was one.
    pub async fn clear(
        &self,
        endpoint: &EndpointId,
        by: &str,
        reason: &str,
        now_ms: u64,
    ) -> Result<Option<Override>, OverrideError> {
        match self {
            Self::File(f) => f.clear(endpoint, by, reason, now_ms),
            Self::Fleet(f) => f.clear(endpoint, by, reason, now_ms).await,
        }
    }

    /// The overrides in force at `now_ms`.
    pub fn active(&self, now_ms: u64) -> BTreeMap<EndpointId, Override> {
        match self {
            Self::File(f) => f.active(now_ms),
            Self::Fleet(f) => f.active(now_ms),
        }
    }

    /// The latest audit entries, newest first.
    pub fn recent(&self) -> Vec<AuditEntry> {
        match self {
            Self::File(f) => f.recent(),
            Self::Fleet(f) => f.recent(),
        }
    }

    /// Shares a drill result with the fleet (etcd only; each process keeps its own anyway).
    pub async fn publish_drill(
        &self,
        result: &super::drills::DrillResult,
    ) -> Result<(), OverrideError> {
        match self {
            Self::File(_) => Ok(()),
            Self::Fleet(f) => f.publish_drill(result).await,
        }
    }

    /// Resolves when an override is set or cleared (here or, for the fleet's, anywhere).
    pub async fn changed(&self) {
        match self {
            Self::File(f) => f.changed.notified().await,
            Self::Fleet(f) => f.changed.notified().await,
        }
    }

    /// Overrides that expired so far.
    pub fn expired_total(&self) -> u64 {
        let counter = match self {
            Self::File(f) => &f.expired_total,
            Self::Fleet(f) => &f.expired_total,
        };
        counter.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Where the store is and whether it can be reached (for status and metrics).
    pub fn backend(&self) -> Backend {
        match self {
            Self::File(_) => Backend {
                kind: "file",
                reachable: true,
                error: None,
            },
            Self::Fleet(f) => f.backend(),
        }
    }
}
