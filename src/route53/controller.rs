//! The reconciler's loop: watches the published snapshot, and when the desired record sets
//! change (or the interval passes) runs one cycle per hosted zone (`reconcile`), under the
//! change policy (`policy`); hands applied batches to the propagation tracker
//! (`propagation`), which follows them on its own; keeps the latest report per zone and the
//! metrics.
//!
//! `--force` approves the configuration's config-driven changes; the approval is saved in the
//! state directory, so a restart with the same configuration finishes what it started.

use std::{
    collections::{BTreeMap, BTreeSet},
    path::PathBuf,
    sync::{Arc, Mutex, PoisonError},
    time::Duration,
};

use arc_swap::ArcSwap;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::{
    Key, RecordSet,
    api::Api,
    desired,
    metrics::Route53Metrics,
    plan::{ConflictKind, Target},
    policy::{self, Cap, RefusedGroups},
    propagation::{self, Tracker},
    reconcile::{self, AppliedChange, Reports},
    status::{self, RecordSync},
};
use crate::{config::Settings, snapshot::Snapshot};

/// How often the controller looks at the snapshot for changed answers.
const WATCH: Duration = Duration::from_millis(200);

/// After a cycle that left something undone, the next one comes at most this soon.
const RETRY: Duration = Duration::from_secs(5);

/// Config-driven changes approved with `--force`, remembered across restarts.
pub struct Approval {
    force: bool,
    file: Option<PathBuf>,
    approved: Option<String>,
}

impl Approval {
    /// `state_dir`: where the approval is kept (None: not kept, as in a dry run).
    pub fn new(force: bool, state_dir: Option<&std::path::Path>) -> Self {
        let file = state_dir.map(|d| d.join("route53-approved"));
        let approved = file
            .as_ref()
            .and_then(|f| std::fs::read_to_string(f).ok())
            .map(|s| s.trim().to_string());
        Self {
            force,
            file,
            approved,
        }
    }

    /// Whether the configuration with this fingerprint is approved (with `--force`, it is,
    /// and it is saved).
    fn approves(&mut self, fingerprint: &str) -> bool {
        if self.force && self.approved.as_deref() != Some(fingerprint) {
            if let Some(file) = &self.file
                && let Err(error) = crate::write_atomically(file, fingerprint.as_bytes())
            {
                tracing::warn!(file = %file.display(), %error, "cannot save the --force approval; a restart without --force will hold config-driven changes again");
            }
            self.approved = Some(fingerprint.to_string());
        }
        self.approved.as_deref() == Some(fingerprint)
    }
}

pub struct Controller<A: Api + ?Sized> {
    api: Arc<A>,
    settings: Arc<ArcSwap<Settings>>,
    published: Arc<ArcSwap<Snapshot>>,
    reports: Reports,
    metrics: Route53Metrics,
    tracker: Arc<Mutex<Tracker>>,
    refused: RefusedGroups,
    approval: Approval,
    /// Only the leading replica writes.
    leadership: Arc<crate::state::leader::Leadership>,
    leading: bool,
    term: u64,
    /// The targets of the last cycle.
    last: Option<BTreeMap<String, Vec<Target>>>,
    next_cycle: Instant,
    /// When the answers changed, if a cycle has not pushed the change yet.
    changed_at: Option<Instant>,
    /// What each zone held after the last cycle (unless a call failed): a change of the
    /// answers between full cycles is planned on it, without reading the zone (a change that
    /// loses the compare-and-swap is refused, and the zone is read).
    known: BTreeMap<String, Vec<RecordSet>>,
    /// Errors and conflicts are logged when they appear, not every cycle.
    logged: BTreeMap<String, String>,
    exported: Vec<RecordSync>,
}

impl<A: Api + ?Sized + 'static> Controller<A> {
    pub fn new(
        api: Arc<A>,
        settings: Arc<ArcSwap<Settings>>,
        published: Arc<ArcSwap<Snapshot>>,
        reports: Reports,
        metrics: Route53Metrics,
        approval: Approval,
        leadership: Arc<crate::state::leader::Leadership>,
    ) -> Self {
        Self {
            api,
            settings,
            published,
            reports,
            metrics,
            tracker: Arc::default(),
            refused: RefusedGroups::default(),
            approval,
            leadership,
            leading: false,
            term: 0,
            last: None,
            next_cycle: Instant::now(),
            changed_at: None,
            known: BTreeMap::new(),
            logged: BTreeMap::new(),
            exported: Vec::new(),
        }
    }

    /// Runs until `shutdown`, with the propagation tracker beside it. Nothing is deleted on
    /// shutdown.
    pub async fn run(mut self, shutdown: CancellationToken) {
        let settings = self.settings.clone();
        let follower = tokio::spawn(propagation::follow(
            self.api.clone(),
            self.tracker.clone(),
            self.reports.clone(),
            self.metrics.clone(),
            move || settings.load().route53.insync_timeout,
            shutdown.clone(),
        ));
        loop {
            tokio::select! {
                () = tokio::time::sleep(WATCH) => {}
                () = shutdown.cancelled() => break,
            }
            self.run_once(Instant::now()).await;
        }
        if let Err(error) = follower.await {
            tracing::debug!(%error, "the propagation tracker ended abnormally");
        }
    }

    /// One look at the snapshot: exports every record's state, and runs a cycle when the
    /// desired state changed or the next cycle is due.
    pub async fn run_once(&mut self, now: Instant) {
        let snapshot = self.published.load_full();
        let settings = self.settings.load_full();
        self.export_states(&settings, &snapshot);
        // A standby writes nothing; a new leader starts with a full cycle (reading every zone).
        let leading = self.leadership.is_leader();
        let term = self.leadership.term();
        if leading != self.leading || term != self.term {
            self.leading = leading;
            self.term = term;
            self.known.clear();
            self.last = None;
            self.next_cycle = now;
        }
        if !leading {
            return;
        }
        let targets = desired::targets(&settings, &snapshot);
        let changed = self.last.as_ref() != Some(&targets);
        // A full cycle (every interval, and soon after one that left something undone) reads
        // every zone; a change of the answers in between plans on what the last one left.
        let full = now >= self.next_cycle;
        if !changed && !full {
            return;
        }
        if full {
            self.known.clear();
        }
        if changed && self.last.is_some() {
            self.changed_at = Some(now);
        }
        let cap = Cap {
            max_change_fraction: settings.route53.max_change_fraction,
            min_change_cap: settings.route53.min_change_cap,
            approved: self
                .approval
                .approves(&policy::config_fingerprint(&targets)),
        };
        let keys: BTreeSet<&Key> = targets.values().flatten().map(|t| &t.key).collect();
        self.refused.retain(&keys);
        let mut all_synced = true;
        let mut retry_soon = false;
        let mut conflicts = Vec::new();
        let mut pending = 0;
        for (zone, zone_targets) in &targets {
            let api = LeaderOnly {
                inner: self.api.as_ref(),
                leadership: &self.leadership,
            };
            let mut report = reconcile::reconcile_zone(
                &api,
                zone,
                zone_targets,
                self.known.get(zone).map(Vec::as_slice),
                cap,
                &mut self.refused,
                now,
            )
            .await;
            if report.capped() {
                self.metrics.cycle_refused();
            }
            match report.state.take() {
                Some(state) => self.known.insert(zone.clone(), state),
                None => self.known.remove(zone),
            };
            self.metrics.changes_made(report.made.iter());
            conflicts.extend(
                report
                    .conflicts
                    .iter()
                    .filter(|c| c.kind == ConflictKind::Ownership)
                    .map(|c| c.key.name.clone()),
            );
            self.log(zone, &report);
            if !report.applied {
                all_synced = false;
                pending += report.unapplied_steps();
            }
            retry_soon |= report.retry_soon();
            if !report.made.is_empty() {
                tracing::info!(
                    zone,
                    changes = report.made.len(),
                    batches = report.changes.len(),
                    "Route53 updated"
                );
            }
            if !report.changes.is_empty() {
                self.tracker
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .submitted(zone, &report.changes, self.changed_at, Instant::now());
            }
            let mut reports = self.reports.lock().unwrap_or_else(PoisonError::into_inner);
            report.last_change = AppliedChange::of(&report)
                .or_else(|| reports.get(zone).and_then(|r| r.last_change.clone()));
            reports.insert(zone.clone(), report);
        }
        self.metrics.state(&conflicts, pending, all_synced);
        self.changed_at = None;
        self.last = Some(targets);
        if retry_soon {
            // Try again soon (reading the zones), but not in a tight loop.
            self.next_cycle = now + settings.route53.interval.min(RETRY);
        } else if full {
            self.next_cycle = now + settings.route53.interval;
        }
        // A refused group is tried again when its backoff ends, not before.
        if let Some(due) = self.refused.next_due(now) {
            self.next_cycle = self.next_cycle.min(due.max(now + RETRY));
        }
    }

    /// Every record's state as of the latest reports (set when it changes).
    fn export_states(&mut self, settings: &Settings, snapshot: &Snapshot) {
        let states = {
            let reports = self.reports.lock().unwrap_or_else(PoisonError::into_inner);
            status::record_states(settings, snapshot, &reports)
        };
        if states != self.exported {
            self.metrics.records(&states);
            self.exported = states;
        }
    }

    /// Logs a zone's error, conflicts and held changes when they differ from the last ones.
    fn log(&mut self, zone: &str, report: &reconcile::ZoneReport) {
        let mut summary = report.error.clone().unwrap_or_default();
        for h in &report.held {
            summary.push_str(&format!("\n{}: {}", h.key, h.reason));
        }
        if self.logged.get(zone) == Some(&summary) {
            return;
        }
        if let Some(error) = &report.error {
            tracing::error!(zone, %error, "Route53 not reconciled");
        }
        for c in &report.conflicts {
            match c.kind {
                ConflictKind::Ownership => {
                    tracing::warn!(zone, record = %c.key, "Route53 ownership conflict: {}", c.reason);
                }
                ConflictKind::Refused => {
                    tracing::warn!(zone, record = %c.key, "Route53 refused the change: {}", c.reason);
                }
            }
        }
        let capped: Vec<String> = report
            .held
            .iter()
            .filter(|h| h.why == policy::HeldBy::ChangeCap)
            .map(|h| h.key.to_string())
            .collect();
        if let Some(first) = report
            .held
            .iter()
            .find(|h| h.why == policy::HeldBy::ChangeCap)
        {
            tracing::error!(
                zone,
                records = capped.len(),
                "{} ({})",
                first.reason,
                capped.join(", ")
            );
        }
        self.logged.insert(zone.to_string(), summary);
    }
}

/// The API as a leader may use it: a change is refused once this replica no longer surely
/// leads (its lease may have passed to a standby in the middle of a cycle).
struct LeaderOnly<'a, A: ?Sized> {
    inner: &'a A,
    leadership: &'a crate::state::leader::Leadership,
}

#[async_trait::async_trait]
impl<A: Api + ?Sized> Api for LeaderOnly<'_, A> {
    async fn list_page(
        &self,
        zone: &str,
        start: Option<&super::api::PageStart>,
    ) -> Result<super::api::Page, super::api::ApiError> {
        self.inner.list_page(zone, start).await
    }

    async fn change(
        &self,
        zone: &str,
        changes: &[super::Change],
        comment: &str,
    ) -> Result<String, super::api::ApiError> {
        if !self.leadership.is_leader() {
            return Err(super::api::ApiError::Other(
                "this replica no longer leads; the new leader writes".into(),
            ));
        }
        self.inner.change(zone, changes, comment).await
    }

    async fn is_insync(&self, id: &str) -> Result<bool, super::api::ApiError> {
        self.inner.is_insync(id).await
    }
}
