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
    Change, Key, RecordSet,
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
    /// What the zone holds after the cycle (unless a call failed), for the next cycle to plan
    /// on without reading the zone again.
    #[serde(skip)]
    pub state: Option<Vec<RecordSet>>,
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
            state: None,
        }
    }

    /// Planned changes not applied (held, refused or failed).
    pub fn unapplied_steps(&self) -> usize {
        self.pending
    }

    /// Whether something failed that a cycle soon may fix (an error, a group not applied);
    /// held and refused groups wait for their own time (the cap's approval, their backoff).
    pub fn retry_soon(&self) -> bool {
        let waits = |k: &Key| {
            self.held.iter().any(|h| &h.key == k)
                || self
                    .conflicts
                    .iter()
                    .any(|c| c.kind == ConflictKind::Refused && &c.key == k)
        };
        self.error.is_some() || self.unapplied.iter().any(|k| !waits(k))
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
    known: Option<&[RecordSet]>,
    cap: Cap,
    refused: &mut RefusedGroups,
    now: Instant,
) -> ZoneReport {
    let mut run = Applier {
        api,
        zone,
        report: ZoneReport::new(zone),
        applied: Vec::new(),
        backoff: refused,
        now,
    };
    let mut last_plan = Plan::default();
    // Units of batches Route53 refused in the previous attempt.
    let mut suspects: Vec<Unit> = Vec::new();
    let mut state: Option<Vec<RecordSet>> = None;
    for attempt in 1..=CAS_ATTEMPTS {
        let read = match known {
            // What the zone held after our last cycle: a change on it that lost the
            // compare-and-swap is refused, and the next attempt reads the zone.
            Some(known) if attempt == 1 => Ok((known.to_vec(), plan::plan(known, targets))),
            _ => plan_zone(api, zone, targets).await,
        };
        let (current, plan) = match read {
            Ok(p) => p,
            Err(e) => {
                run.report.error = Some(format!("cannot read zone {zone}: {e}"));
                state = None;
                break;
            }
        };
        let applied_before = run.applied.len();
        for t in targets {
            if !plan.units.iter().any(|u| u.key == t.key) {
                run.backoff.forget(&t.key);
            }
        }
        let decision = policy::decide(&plan, targets, &current, cap, run.backoff, now);
        run.report.steps = plan.steps();
        run.report.conflicts = plan.conflicts.clone();
        run.report.held = decision.held;
        last_plan = plan;
        let mut fit = Vec::new();
        for unit in decision.apply {
            match batch::pack(std::slice::from_ref(&unit), Limits::default()) {
                Ok(_) => fit.push(unit),
                Err(e) => run.report.conflicts.push(Conflict {
                    key: unit.key.clone(),
                    reason: e.to_string(),
                    kind: ConflictKind::Refused,
                }),
            }
        }
        // Refused again, unchanged, after a re-read: no race; find the culprits.
        let suspected: BTreeMap<&Key, &Unit> = suspects.iter().map(|u| (&u.key, u)).collect();
        let (known, fresh): (Vec<Unit>, Vec<Unit>) = fit
            .into_iter()
            .partition(|u| suspected.get(&u.key).is_some_and(|s| *s == u));
        let mut next = Vec::new();
        let outcome = match run.submit(&fresh, &mut next).await {
            Ok(()) => run.bisect(known).await,
            Err(e) => Err(e),
        };
        state = Some(plan::apply(
            &current,
            &Plan {
                units: run.applied[applied_before..].to_vec(),
                conflicts: Vec::new(),
            },
        ));
        if let Err(e) = outcome {
            run.report.error = Some(format!("change failed: {e}"));
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
            run.report.error = Some(format!(
                "gave up after {CAS_ATTEMPTS} attempts: Route53 kept changing under us"
            ));
        }
    }
    let Applier {
        mut report,
        applied,
        backoff,
        ..
    } = run;
    for unit in &applied {
        backoff.forget(&unit.key);
    }
    report.made = Plan {
        units: applied.clone(),
        conflicts: Vec::new(),
    }
    .steps();
    let done: BTreeSet<&Key> = applied.iter().map(|u| &u.key).collect();
    let unapplied: Vec<Unit> = last_plan
        .units
        .into_iter()
        .filter(|u| !done.contains(&u.key))
        .collect();
    report.unapplied = unapplied.iter().map(|u| u.key.clone()).collect();
    report.pending = Plan {
        units: unapplied,
        conflicts: Vec::new(),
    }
    .steps()
    .len();
    report.applied = report.unapplied.is_empty() && report.error.is_none();
    // Batches are atomic: what was refused did not change anything, so the zone is as read
    // plus what was applied; after a failed call it is unknown, and the next cycle reads it.
    report.state = state.filter(|_| report.error.is_none());
    if report.error.is_none() && !report.unapplied.is_empty() && report.held.is_empty() {
        report.error = Some("some groups could not be applied; see conflicts".into());
    }
    report
}

/// Applies units to one zone and keeps what happened: change ids, applied units, refused
/// groups (reported, and put in backoff).
struct Applier<'a, A: ?Sized> {
    api: &'a A,
    zone: &'a str,
    report: ZoneReport,
    applied: Vec<Unit>,
    backoff: &'a mut RefusedGroups,
    now: Instant,
}

impl<A: Api + ?Sized> Applier<'_, A> {
    /// Submits `units` in as few batches as fit. When Route53 refuses a batch and names the
    /// records it will not take (not a lost compare-and-swap), those groups are refused at
    /// once and the rest of the batch goes again; other refused batches go to `suspects`
    /// (re-read, then bisected).
    async fn submit(&mut self, units: &[Unit], suspects: &mut Vec<Unit>) -> Result<(), ApiError> {
        let mut queue: Vec<Vec<Unit>> = batch::pack(units, Limits::default())
            .unwrap_or_default()
            .into_iter()
            .map(|g| g.into_iter().cloned().collect())
            .collect();
        while let Some(group) = queue.pop() {
            let changes: Vec<Change> = group.iter().flat_map(|u| u.changes.clone()).collect();
            match self.api.change(self.zone, &changes, COMMENT).await {
                Ok(id) => {
                    self.report.changes.push(id);
                    self.applied.extend(group);
                }
                Err(ApiError::InvalidChangeBatch(message)) => {
                    let refusal = Refusal::read(&message);
                    let (named, rest): (Vec<Unit>, Vec<Unit>) =
                        group.into_iter().partition(|u| refusal.names(u));
                    if refusal.attributable() && !named.is_empty() {
                        for unit in named {
                            self.refuse(unit, &message);
                        }
                        if !rest.is_empty() {
                            queue.push(rest);
                        }
                    } else {
                        suspects.extend(named.into_iter().chain(rest));
                    }
                }
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Applies `units` that Route53 refused together: halves that are refused are halved
    /// again, down to the groups Route53 refuses alone.
    async fn bisect(&mut self, units: Vec<Unit>) -> Result<(), ApiError> {
        let mut stack = vec![units];
        while let Some(mut units) = stack.pop() {
            if units.len() > 1 {
                let second = units.split_off(units.len() / 2);
                for half in [second, units] {
                    let mut refused = Vec::new();
                    self.submit(&half, &mut refused).await?;
                    if !refused.is_empty() {
                        stack.push(refused);
                    }
                }
                continue;
            }
            let Some(unit) = units.pop() else { continue };
            // Alone (a half of one was already refused; once more to learn why).
            match self.api.change(self.zone, &unit.changes, COMMENT).await {
                Ok(id) => {
                    self.report.changes.push(id);
                    self.applied.push(unit);
                }
                Err(ApiError::InvalidChangeBatch(message)) => self.refuse(unit, &message),
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// `unit` is one Route53 will not take: reported, and put in backoff.
    fn refuse(&mut self, unit: Unit, message: &str) {
        self.backoff.refused(&unit, self.now);
        self.report.conflicts.push(Conflict {
            key: unit.key,
            reason: format!("Route53 refuses this change: {message}"),
            kind: ConflictKind::Refused,
        });
    }
}

/// What Route53's InvalidChangeBatch messages say: which record names it refuses for what they
/// are, and whether some change lost the compare-and-swap (the records changed since we read
/// them: "... but it was not found", "... do not match the current values", "... but it
/// already exists").
#[derive(Debug, Default, PartialEq)]
pub struct Refusal {
    pub refused: BTreeSet<String>,
    pub raced: bool,
    /// A message that names no record.
    pub unexplained: bool,
}

impl Refusal {
    pub fn read(message: &str) -> Self {
        let body = message
            .strip_prefix("InvalidChangeBatch:")
            .unwrap_or(message);
        let mut out = Refusal::default();
        for part in body.split(';').map(str::trim).filter(|p| !p.is_empty()) {
            if [
                "was not found",
                "do not match the current values",
                "already exists",
            ]
            .iter()
            .any(|race| part.contains(race))
            {
                out.raced = true;
                continue;
            }
            let mut named = false;
            for (prefix, end) in [("DNS name ", ' '), ("name='", '\'')] {
                let mut rest = part;
                while let Some(i) = rest.find(prefix) {
                    rest = &rest[i + prefix.len()..];
                    let name: String = rest
                        .chars()
                        .take_while(|c| *c != end && *c != ',' && !c.is_whitespace())
                        .collect();
                    if !name.is_empty() {
                        let name = name.to_ascii_lowercase();
                        out.refused.insert(if name.ends_with('.') {
                            name
                        } else {
                            name + "."
                        });
                        named = true;
                    }
                }
            }
            out.unexplained |= !named;
        }
        out
    }

    /// Whether the named groups alone explain the refusal.
    fn attributable(&self) -> bool {
        !self.raced && !self.unexplained && !self.refused.is_empty()
    }

    /// Whether a refused name is `unit`'s record or its ownership marker.
    fn names(&self, unit: &Unit) -> bool {
        self.refused.contains(&unit.key.name)
            || self
                .refused
                .contains(&super::ownership::marker_name(&unit.key))
    }
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
            None,
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
            None,
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
            None,
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
            None,
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
            None,
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
            None,
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
            None,
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
            None,
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
            None,
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
        /// Whether the refusal names the record (as Route53's messages do).
        names: bool,
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
                names: true,
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
                return Err(ApiError::InvalidChangeBatch(if self.names {
                    format!(
                        "RRSet of type A with DNS name {} is not permitted",
                        self.bad
                    )
                } else {
                    "Invalid request".into()
                }));
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
            None,
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
        for names in [true, false] {
            one_refused_among_a_thousand(names).await;
        }
    }

    async fn one_refused_among_a_thousand(named: bool) {
        let mut api = Picky::new("n500.example.com.");
        api.names = named;
        let names: Vec<String> = (0..1000).map(|i| format!("n{i}.example.com.")).collect();
        let up: Vec<Target> = names.iter().map(|n| target(n, "192.0.2.1")).collect();
        let mut refused = RefusedGroups::default();
        let t0 = Instant::now();
        let r = reconcile_zone(&api, "Z1", &up, None, limits(), &mut refused, t0).await;
        assert_eq!(r.made.len(), 2 * 999, "every other record and its marker");
        assert_eq!(r.unapplied.len(), 1);
        assert!(
            r.conflicts
                .iter()
                .any(|c| c.key.name == "n500.example.com." && c.kind == ConflictKind::Refused)
        );
        let (changes, lists) = api.calls();
        if named {
            // 2 batches of 500 groups (a record and its marker each: at most 1,000 records per
            // call); Route53 names the group it refuses, so the rest of that batch goes again
            // at once, without a re-read.
            assert_eq!((changes, lists), (3, 1));
        } else {
            // A refusal that names nothing: a re-read (was it a race?), then halving the
            // refused batch down to the group: 2 + 2 * log2(500) + 1.
            assert!(changes <= 2 + 2 * 9 + 1, "{changes} change calls");
            assert_eq!(lists, 2, "one read, and one re-read after the refusal");
        }
        // The next cycle does not retry the refused group before its backoff ends...
        let before = api.calls().0;
        let r = reconcile_zone(&api, "Z1", &up, None, limits(), &mut refused, t0).await;
        assert_eq!(api.calls().0, before, "no change call during the backoff");
        assert_eq!(r.held.len(), 1);
        assert_eq!(r.held[0].why, HeldBy::Backoff);
        // ... and a failover of every record still goes at once, around it.
        let down: Vec<Target> = names.iter().map(|n| target(n, "192.0.2.2")).collect();
        let r = reconcile_zone(&api, "Z1", &down, None, limits(), &mut refused, t0).await;
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
    async fn a_change_between_full_cycles_is_planned_on_the_known_state_and_a_stale_one_rereads() {
        let api = Picky::new("none.example.com.");
        let mut backoff = RefusedGroups::default();
        let t = |ip: &str| [target("www.example.com.", ip)];
        let r = reconcile_zone(
            &api,
            "Z1",
            &t("192.0.2.1"),
            None,
            limits(),
            &mut backoff,
            Instant::now(),
        )
        .await;
        let known = r
            .state
            .expect("the state after a cycle that applied everything");
        assert_eq!(api.calls(), (1, 1));
        // The answer changes: planned on what the last cycle left, no read.
        let r = reconcile_zone(
            &api,
            "Z1",
            &t("192.0.2.2"),
            Some(&known),
            limits(),
            &mut backoff,
            Instant::now(),
        )
        .await;
        assert!(r.applied, "{r:?}");
        assert_eq!(api.calls(), (2, 1), "no read");
        // Someone changed the record meanwhile: our DELETE no longer matches, Route53 refuses
        // it as a lost race, the cycle reads the zone and converges.
        let stale = r.state.expect("state");
        api.inner
            .change(
                "Z1",
                &[
                    Change::Delete(a("www.example.com.", "192.0.2.2")),
                    Change::Create(a("www.example.com.", "192.0.2.9")),
                ],
                "someone",
            )
            .await
            .expect("a change behind our back");
        let r = reconcile_zone(
            &api,
            "Z1",
            &t("192.0.2.3"),
            Some(&stale),
            limits(),
            &mut backoff,
            Instant::now(),
        )
        .await;
        assert!(r.applied, "{r:?}");
        assert_eq!(api.calls().1, 2, "one read after the refusal");
        assert!(
            api.inner
                .state()
                .contains(&a("www.example.com.", "192.0.2.3"))
        );
    }

    #[test]
    fn refusals_say_which_records_route53_will_not_take_and_which_lost_a_race() {
        let r = Refusal::read(
            "InvalidChangeBatch: RRSet of type A with DNS name Bad.example.com is not permitted; \
             Tried to create resource record set [name='x.example.com.', type='A'] but it already exists",
        );
        assert_eq!(r.refused, BTreeSet::from(["bad.example.com.".to_string()]));
        assert!(r.raced && !r.attributable());
        let r = Refusal::read(
            "InvalidChangeBatch: [RRSet with DNS name www.example.com., type A cannot be created as a non-weighted set exists with the same name and type]",
        );
        assert!(r.attributable(), "{r:?}");
        assert!(!Refusal::read("InvalidChangeBatch: Invalid request").attributable());
    }

    #[tokio::test]
    async fn ownership_is_part_of_the_compare_and_swap() {
        let fake = FakeRoute53::with(Vec::new());
        reconcile_zone(
            &fake,
            "Z1",
            &[target("www.example.com.", "192.0.2.1")],
            None,
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
