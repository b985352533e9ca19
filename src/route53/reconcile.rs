//! The reconcile cycle: read each hosted zone, plan against the desired state, refuse plans
//! that would change too much of what we own, apply the batches, wait for INSYNC. A batch that
//! Route53 refuses (someone changed the records since we read them) makes the cycle re-read
//! and re-plan: DELETE of the exact old set + CREATE is a compare-and-swap.
//!
//! Nothing here deletes on shutdown, on loss of quorum (verdicts hold, so desired state holds)
//! or for records that are not decided yet (they yield no target).

use std::{
    collections::{BTreeMap, BTreeSet},
    sync::{Arc, Mutex},
};

use serde::Serialize;

use tokio::time::Instant;

use super::{
    Change, Key,
    api::{Api, ApiError, list_all},
    batch::{self, Limits},
    plan::{self, Conflict, ConflictKind, Plan, Step, Target, Unit},
    policy::{self, Cap, Held, HeldBy, RefusedGroups},
};

/// How many times a cycle re-reads after a refused batch before giving up until next time.
const CAS_ATTEMPTS: usize = 4;

/// The outcome of one zone's cycle.
#[derive(Debug, Clone, Serialize)]
pub struct ZoneReport {
    pub zone: String,
    /// The steps of the last plan (applied, held, refused or failed).
    pub steps: Vec<Step>,
    pub conflicts: Vec<Conflict>,
    /// Every change of the plan was applied.
    pub applied: bool,
    /// Why the plan was not applied whole, if it was not.
    pub error: Option<String>,
    /// Change ids of the batches applied in this cycle.
    pub changes: Vec<String>,
    /// Whether those changes have propagated (updated by later polls).
    pub insync: Option<bool>,
    /// The latest cycle that applied changes to this zone (kept by later cycles that did not).
    pub last_change: Option<AppliedChange>,
    /// Groups whose change waits (the change cap, a refusal's backoff).
    pub held: Vec<Held>,
    /// Groups planned but not applied (held, refused, failed).
    #[serde(skip)]
    pub unapplied: BTreeSet<Key>,
    /// Steps planned but not applied.
    #[serde(skip)]
    pub pending: usize,
    /// Changes Route53 took in this cycle (over every attempt).
    #[serde(skip)]
    pub made: Vec<Step>,
}

impl ZoneReport {
    fn new(zone: &str) -> Self {
        Self {
            zone: zone.to_string(),
            steps: Vec::new(),
            conflicts: Vec::new(),
            applied: false,
            error: None,
            changes: Vec::new(),
            insync: None,
            last_change: None,
            held: Vec::new(),
            unapplied: BTreeSet::new(),
            pending: 0,
            made: Vec::new(),
        }
    }

    /// Planned changes not applied (held, refused or failed).
    pub fn unapplied_steps(&self) -> usize {
        self.pending
    }

    /// Whether the change cap held back some of the plan.
    pub fn capped(&self) -> bool {
        self.held.iter().any(|h| h.why == HeldBy::ChangeCap)
    }
}

/// Changes applied to a zone in one cycle, and when they were submitted and became INSYNC.
#[derive(Debug, Clone, Serialize)]
pub struct AppliedChange {
    pub ids: Vec<String>,
    /// The record names the changes touched (not the ownership markers).
    pub records: Vec<String>,
    pub submitted_unix_ms: u64,
    pub insync_unix_ms: Option<u64>,
}

impl AppliedChange {
    /// The change applied by this cycle's report, if it applied any.
    pub fn of(report: &ZoneReport) -> Option<AppliedChange> {
        if report.changes.is_empty() {
            return None;
        }
        let mut records: Vec<String> = report
            .steps
            .iter()
            .map(|s| match s {
                Step::Create { new } | Step::Update { new, .. } => new.name.clone(),
                Step::Delete { old } => old.name.clone(),
            })
            .filter(|name| !super::ownership::is_marker(name))
            .collect();
        records.sort();
        records.dedup();
        Some(AppliedChange {
            ids: report.changes.clone(),
            records,
            submitted_unix_ms: crate::clock::unix_ms(),
            insync_unix_ms: None,
        })
    }
}

/// The latest report per zone, for the status API.
pub type Reports = Arc<Mutex<BTreeMap<String, ZoneReport>>>;

/// Plans one zone (read only).
pub async fn plan_zone<A: Api + ?Sized>(
    api: &A,
    zone: &str,
    targets: &[Target],
) -> Result<(Vec<super::RecordSet>, Plan), ApiError> {
    let current = list_all(api, zone).await?;
    let plan = plan::plan(&current, targets);
    Ok((current, plan))
}

/// Runs one cycle for one zone: read, plan, keep what the policy holds back, apply the rest in
/// as few batches as fit. A refused batch makes the cycle re-read (someone may have changed
/// the records since: DELETE of the exact old set is a compare-and-swap); groups refused again
/// unchanged are bisected, so that a group Route53 will not take costs O(log n) calls and
/// holds back nothing else. A refused group waits with backoff (`refused`).
pub async fn reconcile_zone<A: Api + ?Sized>(
    api: &A,
    zone: &str,
    targets: &[Target],
    cap: Cap,
    refused: &mut RefusedGroups,
    now: Instant,
) -> ZoneReport {
    let mut report = ZoneReport::new(zone);
    let mut applied: Vec<Unit> = Vec::new();
    let mut last_plan = Plan::default();
    // Units of batches Route53 refused in the previous attempt.
    let mut suspects: Vec<Unit> = Vec::new();
    for attempt in 1..=CAS_ATTEMPTS {
        let (current, plan) = match plan_zone(api, zone, targets).await {
            Ok(p) => p,
            Err(e) => {
                report.error = Some(format!("cannot read zone {zone}: {e}"));
                break;
            }
        };
        for t in targets {
            if !plan.units.iter().any(|u| u.key == t.key) {
                refused.forget(&t.key);
            }
        }
        let decision = policy::decide(&plan, targets, &current, cap, refused, now);
        report.steps = plan.steps();
        report.conflicts = plan.conflicts.clone();
        report.held = decision.held;
        last_plan = plan;
        let mut fit = Vec::new();
        for unit in decision.apply {
            match batch::pack(std::slice::from_ref(&unit), Limits::default()) {
                Ok(_) => fit.push(unit),
                Err(e) => report.conflicts.push(Conflict {
                    key: unit.key.clone(),
                    reason: e.to_string(),
                    kind: ConflictKind::Refused,
                }),
            }
        }
        // Refused again, unchanged, after a re-read: no race; find the culprits.
        let (known, fresh): (Vec<Unit>, Vec<Unit>) =
            fit.into_iter().partition(|u| suspects.contains(u));
        let mut next = Vec::new();
        let outcome = async {
            submit(api, zone, &fresh, &mut report, &mut applied, &mut next).await?;
            bisect(api, zone, known, &mut report, &mut applied, refused, now).await
        }
        .await;
        if let Err(e) = outcome {
            report.error = Some(format!("change failed: {e}"));
            break;
        }
        if next.is_empty() {
            break;
        }
        tracing::info!(
            zone,
            attempt,
            groups = next.len(),
            "Route53 refused a batch (records changed since we read them?); re-reading"
        );
        suspects = next;
        if attempt == CAS_ATTEMPTS {
            report.error = Some(format!(
                "gave up after {CAS_ATTEMPTS} attempts: Route53 kept changing under us"
            ));
        }
    }
    for unit in &applied {
        refused.forget(&unit.key);
    }
    report.made = Plan {
        units: applied.clone(),
        conflicts: Vec::new(),
    }
    .steps();
    let unapplied: Vec<Unit> = last_plan
        .units
        .into_iter()
        .filter(|u| !applied.iter().any(|a| a.key == u.key))
        .collect();
    report.unapplied = unapplied.iter().map(|u| u.key.clone()).collect();
    report.pending = Plan {
        units: unapplied,
        conflicts: Vec::new(),
    }
    .steps()
    .len();
    report.applied = report.unapplied.is_empty() && report.error.is_none();
    if report.error.is_none() && !report.unapplied.is_empty() && report.held.is_empty() {
        report.error = Some("some groups could not be applied; see conflicts".into());
    }
    report
}

/// Submits `units` in as few batches as fit; the units of refused batches go to `refused`.
async fn submit<A: Api + ?Sized>(
    api: &A,
    zone: &str,
    units: &[Unit],
    report: &mut ZoneReport,
    applied: &mut Vec<Unit>,
    refused: &mut Vec<Unit>,
) -> Result<(), ApiError> {
    for group in batch::pack(units, Limits::default()).unwrap_or_default() {
        let changes: Vec<Change> = group.iter().flat_map(|u| u.changes.clone()).collect();
        match api.change(zone, &changes, COMMENT).await {
            Ok(id) => {
                report.changes.push(id);
                applied.extend(group.into_iter().cloned());
            }
            Err(ApiError::InvalidChangeBatch(_)) => refused.extend(group.into_iter().cloned()),
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Applies `units` that Route53 refused together: halves that are refused are halved again,
/// down to the groups Route53 refuses alone, which are reported and put in backoff.
async fn bisect<A: Api + ?Sized>(
    api: &A,
    zone: &str,
    units: Vec<Unit>,
    report: &mut ZoneReport,
    applied: &mut Vec<Unit>,
    backoff: &mut RefusedGroups,
    now: Instant,
) -> Result<(), ApiError> {
    let mut stack = vec![units];
    while let Some(mut units) = stack.pop() {
        if units.len() > 1 {
            let second = units.split_off(units.len() / 2);
            for half in [second, units] {
                let mut refused = Vec::new();
                submit(api, zone, &half, report, applied, &mut refused).await?;
                if !refused.is_empty() {
                    stack.push(refused);
                }
            }
            continue;
        }
        let Some(unit) = units.pop() else { continue };
        // Alone (a half of one was already refused; once more to learn why).
        let changes = unit.changes.clone();
        match api.change(zone, &changes, COMMENT).await {
            Ok(id) => {
                report.changes.push(id);
                applied.push(unit);
            }
            Err(ApiError::InvalidChangeBatch(message)) => {
                backoff.refused(&unit, now);
                report.conflicts.push(Conflict {
                    key: unit.key.clone(),
                    reason: format!("Route53 refuses this change: {message}"),
                    kind: ConflictKind::Refused,
                });
            }
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

const COMMENT: &str = "vantage: health-checked failover";

/// Whether every change has propagated (one GetChange each; no waiting).
pub async fn all_insync<A: Api + ?Sized>(api: &A, ids: &[String]) -> bool {
    for id in ids {
        match api.is_insync(id).await {
            Ok(true) => {}
            Ok(false) => return false,
            Err(e) => {
                tracing::debug!(change = %id, error = %e, "GetChange failed");
                return false;
            }
        }
    }
    true
}

#[cfg(test)]
mod tests {
    //! Reconciler semantics against a stateful fake that enforces Route53's rules: batches are
    //! atomic, a DELETE must match the existing set exactly, a CREATE of an existing set fails.

    use std::sync::Mutex;

    use super::*;
    use crate::route53::{
        Change, Key, RecordSet,
        api::{Page, PageStart},
        ownership::marker,
    };

    #[derive(Default)]
    struct FakeRoute53 {
        sets: Mutex<Vec<RecordSet>>,
        calls: Mutex<Vec<&'static str>>,
        /// Runs after a list and before the next change: lets a second reconciler act in between.
        page_size: usize,
    }

    impl FakeRoute53 {
        fn with(sets: Vec<RecordSet>) -> Self {
            Self {
                sets: Mutex::new(sets),
                page_size: 2,
                ..Default::default()
            }
        }

        fn state(&self) -> Vec<RecordSet> {
            let mut s = self.sets.lock().expect("lock").clone();
            s.sort();
            s
        }
    }

    #[async_trait::async_trait]
    impl Api for FakeRoute53 {
        async fn list_page(
            &self,
            _zone: &str,
            start: Option<&PageStart>,
        ) -> Result<Page, ApiError> {
            self.calls.lock().expect("lock").push("list");
            let sets = self.state();
            let from = match start {
                None => 0,
                Some(s) => sets
                    .iter()
                    .position(|x| {
                        x.name == s.name && x.rtype == s.rtype && x.set_identifier == s.identifier
                    })
                    .unwrap_or(sets.len()),
            };
            let page: Vec<RecordSet> = sets
                .iter()
                .skip(from)
                .take(self.page_size)
                .cloned()
                .collect();
            let next = sets.get(from + self.page_size).map(|n| PageStart {
                name: n.name.clone(),
                rtype: n.rtype.clone(),
                identifier: n.set_identifier.clone(),
            });
            Ok(Page { sets: page, next })
        }

        async fn change(
            &self,
            _zone: &str,
            changes: &[Change],
            _comment: &str,
        ) -> Result<String, ApiError> {
            self.calls.lock().expect("lock").push("change");
            let mut sets = self.sets.lock().expect("lock");
            let mut next = sets.clone();
            for change in changes {
                match change {
                    Change::Delete(s) => {
                        let before = next.len();
                        next.retain(|x| x != s);
                        if next.len() == before {
                            return Err(ApiError::InvalidChangeBatch(format!(
                                "Tried to delete {s} but it was not found"
                            )));
                        }
                    }
                    Change::Create(s) => {
                        if next
                            .iter()
                            .any(|x| x.key() == s.key() && x.set_identifier == s.set_identifier)
                        {
                            return Err(ApiError::InvalidChangeBatch(format!(
                                "Tried to create {s} but it already exists"
                            )));
                        }
                        next.push(s.clone());
                    }
                }
            }
            *sets = next;
            Ok("C1".into())
        }

        async fn is_insync(&self, _id: &str) -> Result<bool, ApiError> {
            Ok(true)
        }
    }

    fn a(name: &str, ip: &str) -> RecordSet {
        RecordSet::new(name, "A", 30, vec![ip.into()])
    }

    fn target(name: &str, ip: &str) -> Target {
        Target {
            key: Key {
                name: name.into(),
                rtype: "A".into(),
            },
            owner: "prod".into(),
            take_over: false,
            desired: vec![a(name, ip)],
            set_identifiers: Vec::new(),
            addresses: ["192.0.2.1", "192.0.2.2", "192.0.2.3"]
                .map(String::from)
                .to_vec(),
            ttl: 30,
        }
    }

    fn limits() -> Cap {
        Cap {
            max_change_fraction: 0.5,
            min_change_cap: 1,
            approved: false,
        }
    }

    #[tokio::test]
    async fn creates_then_flips_and_leaves_foreign_records_alone() {
        let foreign = a("mail.example.com.", "192.0.2.25");
        let fake = FakeRoute53::with(vec![foreign.clone()]);
        let r = reconcile_zone(
            &fake,
            "Z1",
            &[target("www.example.com.", "192.0.2.1")],
            limits(),
            &mut RefusedGroups::default(),
            Instant::now(),
        )
        .await;
        assert!(r.applied && r.error.is_none(), "{r:?}");
        assert!(fake.state().contains(&a("www.example.com.", "192.0.2.1")));
        let r = reconcile_zone(
            &fake,
            "Z1",
            &[target("www.example.com.", "192.0.2.2")],
            limits(),
            &mut RefusedGroups::default(),
            Instant::now(),
        )
        .await;
        assert!(r.applied, "{r:?}");
        let state = fake.state();
        assert!(state.contains(&a("www.example.com.", "192.0.2.2")));
        assert!(!state.contains(&a("www.example.com.", "192.0.2.1")));
        assert!(state.contains(&foreign));
    }

    #[tokio::test]
    async fn two_racing_reconcilers_converge_and_the_loser_rereads() {
        let fake = FakeRoute53::with(Vec::new());
        let t1 = [target("www.example.com.", "192.0.2.1")];
        reconcile_zone(
            &fake,
            "Z1",
            &t1,
            limits(),
            &mut RefusedGroups::default(),
            Instant::now(),
        )
        .await;
        // Both replicas read the same state and plan the same flip.
        let t2 = [target("www.example.com.", "192.0.2.2")];
        let (_, plan_a) = plan_zone(&fake, "Z1", &t2).await.expect("plan");
        let (_, plan_b) = plan_zone(&fake, "Z1", &t2).await.expect("plan");
        let batch_a = batch::batches(&plan_a.units, Limits::default()).expect("fits");
        let batch_b = batch::batches(&plan_b.units, Limits::default()).expect("fits");
        fake.change("Z1", &batch_a[0], "a")
            .await
            .expect("first writer wins");
        let lost = fake.change("Z1", &batch_b[0], "b").await;
        assert!(
            matches!(lost, Err(ApiError::InvalidChangeBatch(_))),
            "{lost:?}"
        );
        // The loser's next cycle re-reads and finds nothing to do.
        let r = reconcile_zone(
            &fake,
            "Z1",
            &t2,
            limits(),
            &mut RefusedGroups::default(),
            Instant::now(),
        )
        .await;
        assert!(r.applied && r.steps.is_empty(), "{r:?}");
        // Racing replicas wanting different values: each cycle re-reads, the last one wins
        // cleanly, and no batch ever applies halfway.
        let t3 = [target("www.example.com.", "192.0.2.3")];
        let r = reconcile_zone(
            &fake,
            "Z1",
            &t3,
            limits(),
            &mut RefusedGroups::default(),
            Instant::now(),
        )
        .await;
        assert!(r.applied, "{r:?}");
        let www: Vec<RecordSet> = fake
            .state()
            .into_iter()
            .filter(|s| s.name == "www.example.com.")
            .collect();
        assert_eq!(www, vec![a("www.example.com.", "192.0.2.3")]);
    }

    #[tokio::test]
    async fn a_plan_that_changes_too_much_is_refused_unless_forced() {
        let names: Vec<String> = (0..4).map(|i| format!("n{i}.example.com.")).collect();
        let first: Vec<Target> = names.iter().map(|n| target(n, "192.0.2.1")).collect();
        let mut owned: Vec<RecordSet> = first.iter().map(|t| marker(&t.key, "prod")).collect();
        owned.extend(first.iter().flat_map(|t| t.desired.clone()));
        let fake = FakeRoute53::with(owned.clone());
        let all_flip: Vec<Target> = names.iter().map(|n| target(n, "192.0.2.9")).collect();
        let r = reconcile_zone(
            &fake,
            "Z1",
            &all_flip,
            limits(),
            &mut RefusedGroups::default(),
            Instant::now(),
        )
        .await;
        // 192.0.2.9 is no address of the records' endpoints: the configuration changed.
        assert!(!r.applied);
        assert!(r.capped(), "{r:?}");
        assert!(
            r.held.iter().all(|h| h.reason.contains("change cap")),
            "{r:?}"
        );
        assert_eq!(r.unapplied_steps(), 4);
        let mut before = owned.clone();
        before.sort();
        assert_eq!(fake.state(), before, "nothing changed");
        // A failover of every record (to another configured address) is health: never capped.
        let failover: Vec<Target> = names.iter().map(|n| target(n, "192.0.2.2")).collect();
        let r = reconcile_zone(
            &fake,
            "Z1",
            &failover,
            limits(),
            &mut RefusedGroups::default(),
            Instant::now(),
        )
        .await;
        assert!(r.applied && !r.capped(), "{r:?}");
        assert_eq!(r.made.len(), 4);
        let forced = Cap {
            approved: true,
            ..limits()
        };
        let r = reconcile_zone(
            &fake,
            "Z1",
            &all_flip,
            forced,
            &mut RefusedGroups::default(),
            Instant::now(),
        )
        .await;
        assert!(r.applied, "{r:?}");
        // Two of four is within the cap.
        let two: Vec<Target> = names
            .iter()
            .enumerate()
            .map(|(i, n)| target(n, if i < 2 { "192.0.2.3" } else { "192.0.2.9" }))
            .collect();
        let r = reconcile_zone(
            &fake,
            "Z1",
            &two,
            limits(),
            &mut RefusedGroups::default(),
            Instant::now(),
        )
        .await;
        assert!(r.applied, "{r:?}");
    }

    /// Refuses every batch that touches `bad`; counts calls.
    struct Picky {
        inner: FakeRoute53,
        bad: String,
        changes: std::sync::atomic::AtomicUsize,
        lists: std::sync::atomic::AtomicUsize,
    }

    impl Picky {
        fn new(bad: &str) -> Self {
            let mut inner = FakeRoute53::with(Vec::new());
            // Route53's own page size.
            inner.page_size = 300;
            Self {
                inner,
                bad: bad.into(),
                changes: Default::default(),
                lists: Default::default(),
            }
        }

        fn calls(&self) -> (usize, usize) {
            use std::sync::atomic::Ordering::Relaxed;
            (self.changes.load(Relaxed), self.lists.load(Relaxed))
        }
    }

    #[async_trait::async_trait]
    impl Api for Picky {
        async fn list_page(&self, zone: &str, start: Option<&PageStart>) -> Result<Page, ApiError> {
            // Counts reads of the zone (first pages).
            if start.is_none() {
                self.lists
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
            self.inner.list_page(zone, start).await
        }
        async fn change(
            &self,
            zone: &str,
            changes: &[Change],
            comment: &str,
        ) -> Result<String, ApiError> {
            self.changes
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            if changes.iter().any(|c| c.set().name == self.bad) {
                return Err(ApiError::InvalidChangeBatch(format!(
                    "RRSet of type A with DNS name {} is not permitted",
                    self.bad
                )));
            }
            self.inner.change(zone, changes, comment).await
        }
        async fn is_insync(&self, id: &str) -> Result<bool, ApiError> {
            self.inner.is_insync(id).await
        }
    }

    #[tokio::test]
    async fn a_group_route53_refuses_does_not_hold_back_the_others() {
        let api = Picky::new("bad.example.com.");
        let targets = [
            target("bad.example.com.", "192.0.2.1"),
            target("www.example.com.", "192.0.2.2"),
        ];
        let r = reconcile_zone(
            &api,
            "Z1",
            &targets,
            limits(),
            &mut RefusedGroups::default(),
            Instant::now(),
        )
        .await;
        assert!(
            api.inner
                .state()
                .contains(&a("www.example.com.", "192.0.2.2")),
            "the good group is applied"
        );
        assert!(
            r.conflicts
                .iter()
                .any(|c| c.key.name == "bad.example.com." && c.reason.contains("not permitted")),
            "{r:?}"
        );
        // Counted as made: only the good group (its record and marker); pending: the bad one's.
        let registry = crate::metrics::Registry::new();
        super::super::metrics::Route53Metrics::new(&registry).changes_made(r.made.iter());
        let text = registry.render();
        let created = text
            .lines()
            .find(|l| l.starts_with("vantage_route53_changes_total{action=\"create\"}"))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse::<f64>().ok());
        assert_eq!(created, Some(2.0), "{text}");
        assert_eq!(r.unapplied_steps(), 2, "{r:?}");
    }

    #[tokio::test]
    async fn one_refused_group_among_a_thousand_costs_a_logarithm_of_calls_then_backs_off() {
        let api = Picky::new("n500.example.com.");
        let names: Vec<String> = (0..1000).map(|i| format!("n{i}.example.com.")).collect();
        let up: Vec<Target> = names.iter().map(|n| target(n, "192.0.2.1")).collect();
        let mut refused = RefusedGroups::default();
        let t0 = Instant::now();
        let r = reconcile_zone(&api, "Z1", &up, limits(), &mut refused, t0).await;
        assert_eq!(r.made.len(), 2 * 999, "every other record and its marker");
        assert_eq!(r.unapplied.len(), 1);
        assert!(
            r.conflicts
                .iter()
                .any(|c| c.key.name == "n500.example.com." && c.kind == ConflictKind::Refused)
        );
        let (changes, lists) = api.calls();
        // 2 batches of 500 groups (4 records each, at most 1,000 per call; one refused), then
        // a re-read, then halving the refused batch down to the group: 2 + 2 * log2(500) + 1.
        assert!(changes <= 2 + 2 * 9 + 1, "{changes} change calls");
        assert_eq!(lists, 2, "one read, and one re-read after the refusal");
        // The next cycle does not retry the refused group before its backoff ends...
        let before = api.calls().0;
        let r = reconcile_zone(&api, "Z1", &up, limits(), &mut refused, t0).await;
        assert_eq!(api.calls().0, before, "no change call during the backoff");
        assert_eq!(r.held.len(), 1);
        assert_eq!(r.held[0].why, HeldBy::Backoff);
        // ... and a failover of every record still goes at once, around it.
        let down: Vec<Target> = names.iter().map(|n| target(n, "192.0.2.2")).collect();
        let r = reconcile_zone(&api, "Z1", &down, limits(), &mut refused, t0).await;
        // (our markers are rewritten too, but that is the ownership guard, not a step)
        assert_eq!(r.made.len(), 999, "{:?}", r.error);
        let www = |n: &str| {
            api.inner
                .state()
                .into_iter()
                .filter(|s| s.name == n)
                .collect::<Vec<_>>()
        };
        assert_eq!(
            www("n0.example.com."),
            vec![a("n0.example.com.", "192.0.2.2")]
        );
        assert_eq!(
            www("n999.example.com."),
            vec![a("n999.example.com.", "192.0.2.2")]
        );
    }

    #[tokio::test]
    async fn ownership_is_part_of_the_compare_and_swap() {
        let fake = FakeRoute53::with(Vec::new());
        reconcile_zone(
            &fake,
            "Z1",
            &[target("www.example.com.", "192.0.2.1")],
            limits(),
            &mut RefusedGroups::default(),
            Instant::now(),
        )
        .await;
        let (_, plan) = plan_zone(&fake, "Z1", &[target("www.example.com.", "192.0.2.2")])
            .await
            .expect("plan");
        // Someone hands the group to another owner between our read and our write.
        let key = Key {
            name: "www.example.com.".into(),
            rtype: "A".into(),
        };
        fake.change(
            "Z1",
            &[
                Change::Delete(marker(&key, "prod")),
                Change::Create(marker(&key, "other")),
            ],
            "handover",
        )
        .await
        .expect("handover");
        let batches = batch::batches(&plan.units, Limits::default()).expect("fits");
        let r = fake.change("Z1", &batches[0], "stale").await;
        assert!(
            matches!(r, Err(ApiError::InvalidChangeBatch(_))),
            "the stale batch fails whole: {r:?}"
        );
        assert!(fake.state().contains(&a("www.example.com.", "192.0.2.1")));
    }

    #[tokio::test]
    async fn listing_that_never_advances_is_an_error_not_a_loop() {
        struct Stuck;
        #[async_trait::async_trait]
        impl Api for Stuck {
            async fn list_page(&self, _: &str, _: Option<&PageStart>) -> Result<Page, ApiError> {
                Ok(Page {
                    sets: vec![a("x.example.com.", "192.0.2.1")],
                    next: Some(PageStart {
                        name: "x.example.com.".into(),
                        rtype: "A".into(),
                        identifier: None,
                    }),
                })
            }
            async fn change(&self, _: &str, _: &[Change], _: &str) -> Result<String, ApiError> {
                Ok(String::new())
            }
            async fn is_insync(&self, _: &str) -> Result<bool, ApiError> {
                Ok(true)
            }
        }
        let err = list_all(&Stuck, "Z1").await.expect_err("loop guard");
        assert!(err.to_string().contains("does not advance"), "{err}");
    }
}
