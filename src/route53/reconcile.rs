//! The reconcile cycle: read each hosted zone, plan against the desired state, refuse plans
//! that would change too much of what we own, apply the batches, wait for INSYNC. A batch that
//! Route53 refuses (someone changed the records since we read them) makes the cycle re-read
//! and re-plan: DELETE of the exact old set + CREATE is a compare-and-swap.
//!
//! Nothing here deletes on shutdown, on loss of quorum (verdicts hold, so desired state holds)
//! or for records that are not decided yet (they yield no target).

use std::{
    collections::BTreeMap,
    sync::{Arc, Mutex},
    time::Duration,
};

use serde::Serialize;

use super::{
    api::{Api, ApiError, list_all},
    batch::{self, Limits},
    plan::{self, Conflict, ConflictKind, Plan, Step, Target, Unit},
};

/// How many times a cycle re-reads after a refused batch before giving up until next time.
const CAS_ATTEMPTS: usize = 4;

#[derive(Debug, Clone, Copy)]
pub struct CycleLimits {
    pub max_change_fraction: f64,
    /// A cycle may always update or delete this many record sets, whatever the fraction.
    pub min_change_cap: usize,
    pub insync_timeout: Duration,
    /// Apply even above the change cap.
    pub force: bool,
}

/// The outcome of one zone's cycle.
#[derive(Debug, Clone, Serialize)]
pub struct ZoneReport {
    pub zone: String,
    /// The steps of the last plan (applied, refused or failed).
    pub steps: Vec<Step>,
    pub conflicts: Vec<Conflict>,
    pub applied: bool,
    /// Why the plan was not applied, if it was not.
    pub error: Option<String>,
    /// Change ids of the batches applied in this cycle.
    pub changes: Vec<String>,
    /// Whether those changes have propagated (updated by later polls).
    pub insync: Option<bool>,
    /// The latest cycle that applied changes to this zone (kept by later cycles that did not).
    pub last_change: Option<AppliedChange>,
    /// The plan was refused by the change cap.
    #[serde(skip)]
    pub capped: bool,
    /// Changes Route53 took in this cycle (over every attempt).
    #[serde(skip)]
    pub made: Vec<Step>,
}

impl ZoneReport {
    /// Whether Route53 refused the change of `step`'s group in this cycle.
    fn refused(&self, step: &Step) -> bool {
        let set = match step {
            Step::Create { new } | Step::Update { new, .. } => new,
            Step::Delete { old } => old,
        };
        // The group's record sets, and its ownership marker, went in one batch.
        self.conflicts.iter().any(|c| {
            c.kind == ConflictKind::Refused
                && ((c.key.name == set.name && c.key.rtype == set.rtype)
                    || super::ownership::marker_name(&c.key) == set.name)
        })
    }

    /// Planned changes not applied: all of them when nothing was applied (the change cap, a
    /// failed call), else those of the groups Route53 refused.
    pub fn unapplied_steps(&self) -> usize {
        if self.applied {
            0
        } else if self.changes.is_empty() {
            self.steps.len()
        } else {
            self.steps.iter().filter(|s| self.refused(s)).count()
        }
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

/// Record sets (not markers) in groups we own, from a plan's point of view.
fn owned_sets(current: &[super::RecordSet], targets: &[Target], conflicts: &[Conflict]) -> usize {
    targets
        .iter()
        .filter(|t| !conflicts.iter().any(|c| c.key == t.key))
        .map(|t| current.iter().filter(|s| s.key() == t.key).count())
        .sum()
}

/// Updates and deletes of record sets (creations are not destructive).
fn destructive(plan: &Plan) -> usize {
    plan.steps()
        .iter()
        .filter(|s| match s {
            Step::Update { new, .. } => !super::ownership::is_marker(&new.name),
            Step::Delete { old } => !super::ownership::is_marker(&old.name),
            Step::Create { .. } => false,
        })
        .count()
}

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

/// Runs one cycle for one zone.
pub async fn reconcile_zone<A: Api + ?Sized>(
    api: &A,
    zone: &str,
    targets: &[Target],
    limits: CycleLimits,
) -> ZoneReport {
    let mut report = ZoneReport {
        zone: zone.to_string(),
        steps: Vec::new(),
        conflicts: Vec::new(),
        applied: false,
        error: None,
        changes: Vec::new(),
        insync: None,
        last_change: None,
        capped: false,
        made: Vec::new(),
    };
    let mut last_units = None;
    for attempt in 1..=CAS_ATTEMPTS {
        let (current, plan) = match plan_zone(api, zone, targets).await {
            Ok(p) => p,
            Err(e) => {
                report.error = Some(format!("cannot read zone {zone}: {e}"));
                return report;
            }
        };
        report.steps = plan.steps();
        report.conflicts = plan.conflicts.clone();
        if plan.is_empty() {
            report.applied = true;
            return report;
        }
        let owned = owned_sets(&current, targets, &plan.conflicts);
        let allowed = (((owned as f64) * limits.max_change_fraction).floor() as usize)
            .max(limits.min_change_cap);
        let destructive = destructive(&plan);
        if destructive > allowed && !limits.force {
            report.error = Some(format!(
                "refused: the plan would update or delete {destructive} of {owned} owned record sets, \
                 more than allowed ({allowed}: max_change_fraction {} or min_change_cap {}); apply with --force if intended",
                limits.max_change_fraction, limits.min_change_cap
            ));
            report.capped = true;
            return report;
        }
        // The same plan refused twice is not a race: some group cannot be applied. Apply the
        // groups one by one so that one bad group does not hold back the others.
        let isolate = last_units.as_ref() == Some(&plan.units);
        last_units = Some(plan.units.clone());
        let mut units: Vec<&Unit> = Vec::new();
        for unit in &plan.units {
            match batch::batches(std::slice::from_ref(unit), Limits::default()) {
                Ok(_) => units.push(unit),
                Err(e) => report.conflicts.push(Conflict {
                    key: unit.key.clone(),
                    reason: e.to_string(),
                    kind: ConflictKind::Refused,
                }),
            }
        }
        let groups: Vec<Vec<Unit>> = if isolate {
            units.iter().map(|u| vec![(*u).clone()]).collect()
        } else {
            vec![units.iter().map(|u| (*u).clone()).collect()]
        };
        let mut raced = false;
        let mut failed = false;
        for group in &groups {
            let batches = match batch::batches(group, Limits::default()) {
                Ok(b) => b,
                Err(e) => {
                    report.error = Some(e.to_string());
                    return report;
                }
            };
            for b in &batches {
                match api
                    .change(zone, b, "vantage: health-checked failover")
                    .await
                {
                    Ok(id) => report.changes.push(id),
                    Err(ApiError::InvalidChangeBatch(message)) if isolate => {
                        for unit in group {
                            report.conflicts.push(Conflict {
                                key: unit.key.clone(),
                                reason: format!("Route53 refuses this change: {message}"),
                                kind: ConflictKind::Refused,
                            });
                        }
                        failed = true;
                    }
                    Err(ApiError::InvalidChangeBatch(message)) => {
                        tracing::info!(zone, attempt, %message, "Route53 refused a batch (records changed since we read them?); re-reading");
                        raced = true;
                        break;
                    }
                    Err(e) => {
                        report.error = Some(format!("change failed: {e}"));
                        return report;
                    }
                }
            }
            if raced {
                break;
            }
        }
        if raced {
            continue;
        }
        // Only what Route53 took is counted as made.
        let made: Vec<Step> = report
            .steps
            .iter()
            .filter(|s| !report.refused(s))
            .cloned()
            .collect();
        report.made.extend(made);
        report.applied = !failed;
        if failed {
            report.error = Some("some groups could not be applied; see conflicts".into());
            return report;
        }
        // Applied; one more pass confirms (and catches a partly applied multi-batch plan).
        let (_, after) = match plan_zone(api, zone, targets).await {
            Ok(p) => p,
            Err(_) => return report,
        };
        if after.is_empty() {
            return report;
        }
    }
    report.error = Some(format!(
        "gave up after {CAS_ATTEMPTS} attempts: Route53 kept changing under us"
    ));
    report
}

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
        }
    }

    fn limits() -> CycleLimits {
        CycleLimits {
            max_change_fraction: 0.5,
            min_change_cap: 1,
            insync_timeout: Duration::from_secs(1),
            force: false,
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
        )
        .await;
        assert!(r.applied && r.error.is_none(), "{r:?}");
        assert!(fake.state().contains(&a("www.example.com.", "192.0.2.1")));
        let r = reconcile_zone(
            &fake,
            "Z1",
            &[target("www.example.com.", "192.0.2.2")],
            limits(),
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
        reconcile_zone(&fake, "Z1", &t1, limits()).await;
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
        let r = reconcile_zone(&fake, "Z1", &t2, limits()).await;
        assert!(r.applied && r.steps.is_empty(), "{r:?}");
        // Racing replicas wanting different values: each cycle re-reads, the last one wins
        // cleanly, and no batch ever applies halfway.
        let t3 = [target("www.example.com.", "192.0.2.3")];
        let r = reconcile_zone(&fake, "Z1", &t3, limits()).await;
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
        let r = reconcile_zone(&fake, "Z1", &all_flip, limits()).await;
        assert!(!r.applied);
        assert!(
            r.error.as_deref().is_some_and(|e| e.contains("refused")),
            "{r:?}"
        );
        let mut before = owned.clone();
        before.sort();
        assert_eq!(fake.state(), before, "nothing changed");
        let forced = CycleLimits {
            force: true,
            ..limits()
        };
        let r = reconcile_zone(&fake, "Z1", &all_flip, forced).await;
        assert!(r.applied, "{r:?}");
        // Two of four is within the cap.
        let two: Vec<Target> = names
            .iter()
            .enumerate()
            .map(|(i, n)| target(n, if i < 2 { "192.0.2.1" } else { "192.0.2.9" }))
            .collect();
        let r = reconcile_zone(&fake, "Z1", &two, limits()).await;
        assert!(r.applied, "{r:?}");
    }

    #[tokio::test]
    async fn a_group_route53_refuses_does_not_hold_back_the_others() {
        struct Picky(FakeRoute53);
        #[async_trait::async_trait]
        impl Api for Picky {
            async fn list_page(
                &self,
                zone: &str,
                start: Option<&PageStart>,
            ) -> Result<Page, ApiError> {
                self.0.list_page(zone, start).await
            }
            async fn change(
                &self,
                zone: &str,
                changes: &[Change],
                comment: &str,
            ) -> Result<String, ApiError> {
                if changes.iter().any(|c| c.set().name == "bad.example.com.") {
                    return Err(ApiError::InvalidChangeBatch(
                        "RRSet of type A with DNS name bad.example.com. is not permitted".into(),
                    ));
                }
                self.0.change(zone, changes, comment).await
            }
            async fn is_insync(&self, id: &str) -> Result<bool, ApiError> {
                self.0.is_insync(id).await
            }
        }
        let api = Picky(FakeRoute53::with(Vec::new()));
        let targets = [
            target("bad.example.com.", "192.0.2.1"),
            target("www.example.com.", "192.0.2.2"),
        ];
        let r = reconcile_zone(&api, "Z1", &targets, limits()).await;
        assert!(
            api.0.state().contains(&a("www.example.com.", "192.0.2.2")),
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
    async fn ownership_is_part_of_the_compare_and_swap() {
        let fake = FakeRoute53::with(Vec::new());
        reconcile_zone(
            &fake,
            "Z1",
            &[target("www.example.com.", "192.0.2.1")],
            limits(),
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
