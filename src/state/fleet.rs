//! Overrides shared by the whole fleet, on etcd: `<prefix>overrides/<endpoint>` holds each
//! override (JSON, attached to a lease that ends with it, so expiry does not depend on any
//! process), `<prefix>audit/<ms>-<n>` each audit entry. Every serving process watches the
//! prefix and answers from its own copy: a change made through one reaches all at once, a
//! process started later reads the current state first, and when etcd cannot be reached the
//! copy stays as it was (fail static; expiries still apply) while writes fail with the cause.
//! The copy is also kept in the state directory, for a restart while etcd is away.

use std::{
    collections::{BTreeMap, VecDeque},
    path::PathBuf,
    sync::{
        Arc, Mutex, PoisonError,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::Duration,
};

use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::{
    drills::{DrillResult, DrillResults},
    etcd::{Etcd, EtcdError, Event},
    overrides::{AuditEntry, Backend, Override, OverrideError, RECENT, Recent},
};
use crate::model::EndpointId;

const OVERRIDES: &str = "overrides/";
const AUDIT: &str = "audit/";
const DRILLS: &str = "drills/";
/// Audit entries live this long in etcd (the local audit log keeps them for good).
const AUDIT_TTL: Duration = Duration::from_secs(90 * 24 * 3600);
/// An override's lease outlives its expiry by this much: processes drop it at the expiry
/// time already; the lease only cleans up.
const LEASE_GRACE: Duration = Duration::from_secs(60);
/// How often the connection to etcd is checked with a read that needs its quorum.
const HEALTH_EVERY: Duration = Duration::from_secs(2);
/// What that read asks for (a key nobody writes).
const MEMBERS_PROBE: &str = "health/";

pub struct FleetOverrides {
    etcd: Etcd,
    entries: Mutex<BTreeMap<EndpointId, Override>>,
    recent: Recent,
    /// The last copy, for a restart while etcd cannot be reached.
    cache: PathBuf,
    reachable: AtomicBool,
    error: Mutex<Option<String>>,
    pub expired_total: AtomicU64,
    /// Wakes whoever waits for the copy to change (the aggregator).
    pub changed: tokio::sync::Notify,
    /// Where drill results seen in etcd go (the last one per record).
    drills: Option<Arc<DrillResults>>,
    /// The lease this process writes its audit entries on (one for all of them).
    audit_lease: Mutex<Option<i64>>,
}

impl FleetOverrides {
    /// Starts following the fleet's overrides (until `shutdown`), from the copy kept in
    /// `state_dir` until etcd answers.
    pub fn start(
        etcd: Etcd,
        state_dir: &std::path::Path,
        drills: Option<Arc<DrillResults>>,
        shutdown: &CancellationToken,
        tasks: &mut JoinSet<()>,
    ) -> Arc<Self> {
        let cache = state_dir.join("fleet-overrides.json");
        let loaded = super::file::load::<Override>(state_dir, "fleet-overrides.json", "overrides");
        let store = Arc::new(Self {
            etcd,
            entries: Mutex::new(
                loaded
                    .items
                    .into_iter()
                    .map(|o| (o.endpoint.clone(), o))
                    .collect(),
            ),
            recent: Recent::default(),
            cache,
            reachable: AtomicBool::new(false),
            error: Mutex::new(Some("not connected yet".into())),
            expired_total: AtomicU64::new(0),
            changed: tokio::sync::Notify::new(),
            drills,
            audit_lease: Mutex::new(None),
        });
        tasks.spawn(store.clone().follow(shutdown.clone()));
        store
    }

    pub fn problem(&self) -> Option<String> {
        None
    }

    pub fn backend(&self) -> Backend {
        Backend {
            kind: "etcd",
            reachable: self.reachable.load(Ordering::Relaxed),
            error: self
                .error
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .clone(),
        }
    }

    fn entries(&self) -> std::sync::MutexGuard<'_, BTreeMap<EndpointId, Override>> {
        self.entries.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn unavailable(&self, e: EtcdError) -> OverrideError {
        OverrideError::Unavailable(format!(
            "the fleet's state (etcd, {}) cannot take the change: {e}",
            self.etcd.prefix()
        ))
    }

    /// Sets an override fleet-wide: written to etcd with a lease that ends after it, then
    /// audited. Nothing changes when etcd refuses or cannot be reached.
    pub async fn set(&self, o: Override) -> Result<(), OverrideError> {
        let ttl = Duration::from_millis(o.expires_unix_ms.saturating_sub(o.created_unix_ms))
            + LEASE_GRACE;
        let lease = self
            .etcd
            .grant(ttl)
            .await
            .map_err(|e| self.unavailable(e))?;
        let body = serde_json::to_vec(&o).unwrap_or_default();
        // The copy follows etcd's order through the watch (a newer change made elsewhere
        // meanwhile is never overwritten by this one).
        self.etcd
            .put(&format!("{OVERRIDES}{}", o.endpoint), &body, Some(lease))
            .await
            .map_err(|e| self.unavailable(e))?;
        self.audit(AuditEntry::of(
            &o,
            "set",
            &o.by,
            &o.reason,
            o.created_unix_ms,
        ))
        .await;
        Ok(())
    }

    /// Clears an override fleet-wide; the override that was in force, if any.
    pub async fn clear(
        &self,
        endpoint: &EndpointId,
        by: &str,
        reason: &str,
        now_ms: u64,
    ) -> Result<Option<Override>, OverrideError> {
        let known = self.entries().get(endpoint).cloned();
        let existed = self
            .etcd
            .delete(&format!("{OVERRIDES}{endpoint}"))
            .await
            .map_err(|e| self.unavailable(e))?;
        let Some(o) = known.filter(|_| existed) else {
            return Ok(None);
        };
        self.audit(AuditEntry::of(&o, "clear", by, reason, now_ms))
            .await;
        Ok(Some(o))
    }

    /// Shares a drill result with the fleet (`drills/<record> <type>`): servers started later
    /// have it too.
    pub async fn publish_drill(&self, result: &DrillResult) -> Result<(), OverrideError> {
        let body = serde_json::to_vec(result).unwrap_or_default();
        self.etcd
            .put(
                &format!("{DRILLS}{} {}", result.record, result.kind),
                &body,
                None,
            )
            .await
            .map_err(|e| self.unavailable(e))
    }

    /// Keeps a drill result seen in etcd, unless a newer one is kept already.
    fn drill(&self, value: &[u8]) {
        let (Some(drills), Ok(result)) =
            (&self.drills, serde_json::from_slice::<DrillResult>(value))
        else {
            return;
        };
        let newer = drills.latest().iter().any(|d| {
            d.record == result.record
                && d.kind == result.kind
                && d.finished_unix_ms >= result.finished_unix_ms
        });
        if !newer && let Err(error) = drills.record(result) {
            tracing::warn!(%error, "cannot keep a drill result from the fleet");
        }
    }

    /// Writes an audit entry to etcd (every process sees it through its watch); kept
    /// locally when etcd cannot take it.
    async fn audit(&self, entry: AuditEntry) {
        let key = format!(
            "{AUDIT}{:016}-{:08x}",
            entry.at_unix_ms,
            rand::random::<u32>()
        );
        let body = serde_json::to_vec(&entry).unwrap_or_default();
        let written = async {
            let cached = *self
                .audit_lease
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            let lease = match cached {
                Some(lease) => lease,
                None => {
                    let lease = self.etcd.grant(AUDIT_TTL).await?;
                    *self
                        .audit_lease
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner) = Some(lease);
                    lease
                }
            };
            let put = self.etcd.put(&key, &body, Some(lease)).await;
            if put.is_err() {
                // Perhaps the lease ended: a new one next time.
                *self
                    .audit_lease
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner) = None;
            }
            put
        }
        .await;
        if let Err(error) = written {
            tracing::error!(%error, "cannot write the audit entry to etcd; kept in this process only");
            self.remember(entry);
        }
    }

    fn remember(&self, entry: AuditEntry) {
        self.recent.remember(entry);
    }

    /// The overrides in force at `now_ms` (an expired one never is, even before etcd's lease
    /// removes it).
    pub fn active(&self, now_ms: u64) -> BTreeMap<EndpointId, Override> {
        let mut entries = self.entries();
        let expired: Vec<Override> = entries
            .values()
            .filter(|o| o.expires_unix_ms <= now_ms)
            .cloned()
            .collect();
        for o in &expired {
            entries.remove(&o.endpoint);
        }
        let active = entries.clone();
        drop(entries);
        for o in expired {
            self.expired_total.fetch_add(1, Ordering::Relaxed);
            self.recent
                .remember(AuditEntry::of(&o, "expired", "vantage", &o.reason, now_ms));
        }
        active
    }

    pub fn recent(&self) -> Vec<AuditEntry> {
        self.recent.list()
    }

    /// One change from etcd into the copy.
    fn apply(&self, event: Event) {
        match event {
            Event::Put { key, value } => {
                if let Some(id) = key.strip_prefix(OVERRIDES) {
                    match serde_json::from_slice::<Override>(&value) {
                        Ok(o) => {
                            self.entries().insert(EndpointId::new(id), o);
                        }
                        Err(error) => {
                            tracing::warn!(key, %error, "ignoring an override in etcd that is not one");
                            return;
                        }
                    }
                } else if key.starts_with(DRILLS) {
                    self.drill(&value);
                    return;
                } else if key.starts_with(AUDIT) {
                    if let Ok(entry) = serde_json::from_slice::<AuditEntry>(&value) {
                        self.remember(entry);
                    }
                    return;
                } else {
                    return;
                }
            }
            Event::Delete { key } => match key.strip_prefix(OVERRIDES) {
                Some(id) => {
                    self.entries().remove(&EndpointId::new(id));
                }
                None => return,
            },
        }
        self.save();
        self.changed.notify_waiters();
    }

    /// Keeps the copy in the state directory.
    fn save(&self) {
        let list: Vec<Override> = self.entries().values().cloned().collect();
        let body = serde_json::to_vec_pretty(&list).unwrap_or_default();
        if let Err(error) = crate::write_atomically(&self.cache, &body) {
            tracing::warn!(file = %self.cache.display(), %error, "cannot keep the fleet's overrides locally");
        }
    }

    fn connected(&self, result: Result<(), &EtcdError>) {
        let now = result.is_ok();
        let was = self.reachable.swap(now, Ordering::Relaxed);
        let mut error = self.error.lock().unwrap_or_else(PoisonError::into_inner);
        match result {
            Ok(()) => {
                if !was {
                    tracing::info!(
                        prefix = self.etcd.prefix(),
                        "following the fleet's state on etcd"
                    );
                }
                *error = None;
            }
            Err(e) => {
                if was || error.as_deref() != Some(&e.to_string()) {
                    tracing::error!(error = %e, "the fleet's state on etcd cannot be followed; answers keep the last overrides seen");
                }
                *error = Some(e.to_string());
            }
        }
    }

    /// Reads the current overrides, then watches every change; on any failure keeps the copy
    /// and starts over after a backoff.
    async fn follow(self: Arc<Self>, shutdown: CancellationToken) {
        let mut backoff = Duration::from_millis(200);
        loop {
            let round = async {
                let (current, revision) = self.etcd.list(OVERRIDES).await?;
                let next: BTreeMap<EndpointId, Override> = current
                    .into_iter()
                    .filter_map(|(key, value)| {
                        let id = key.strip_prefix(OVERRIDES)?;
                        let o = serde_json::from_slice::<Override>(&value).ok()?;
                        Some((EndpointId::new(id), o))
                    })
                    .collect();
                let replaced = *self.entries() != next;
                *self.entries() = next;
                if replaced {
                    self.save();
                    self.changed.notify_waiters();
                }
                // The fleet's latest audit entries, oldest first, as the trail to show.
                let audit = self.etcd.list_latest(AUDIT, RECENT).await?;
                let history: VecDeque<AuditEntry> = audit
                    .iter()
                    .rev()
                    .filter_map(|(_, v)| serde_json::from_slice(v).ok())
                    .collect();
                self.recent.replace(history);
                let (drills, _) = self.etcd.list(DRILLS).await?;
                for (_, value) in drills {
                    self.drill(&value);
                }
                self.connected(Ok(()));
                let mut from = revision + 1;
                let watching = async {
                    loop {
                        from = self.etcd.watch("", from, |event| self.apply(event)).await?;
                    }
                };
                // A member that lost its cluster's quorum may keep a watch open with nothing
                // on it: a linearizable read every few seconds tells.
                let checking = async {
                    loop {
                        tokio::time::sleep(HEALTH_EVERY).await;
                        self.etcd.list(MEMBERS_PROBE).await?;
                    }
                };
                tokio::select! {
                    r = watching => r,
                    r = checking => r,
                }
            };
            let error = tokio::select! {
                result = round => match result {
                    Ok(()) => continue,
                    Err(e) => e,
                },
                () = shutdown.cancelled() => return,
            };
            if self.reachable.load(Ordering::Relaxed) {
                backoff = Duration::from_millis(200);
            }
            self.connected(Err(&error));
            tokio::select! {
                () = tokio::time::sleep(backoff) => {}
                () = shutdown.cancelled() => return,
            }
            backoff = (backoff * 2).min(Duration::from_secs(5));
        }
    }
}
