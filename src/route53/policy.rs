//! What a cycle may apply of a plan (pure, `now` given): the change cap holds back
//! configuration-driven changes that would rewrite too much of what we own, never a change
//! the quorum's verdicts drive; a group Route53 refused waits with exponential backoff.
//!
//! A change is **verdict-driven** when the group is ours and every set it replaces holds only
//! what the configuration allows for the record (its endpoints' addresses, its TTL, its
//! endpoints' set identifiers): moving between such states is what health does. Anything else
//! (addresses or TTL changed in the configuration, a group taken over) is **config-driven**.

use std::{
    collections::{BTreeMap, BTreeSet},
    time::Duration,
};

use serde::Serialize;
use tokio::time::Instant;

use super::{
    Change, Key, RecordSet, ownership,
    plan::{Plan, Target, Unit},
};

/// What drives a group's change.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Driver {
    Verdict,
    Config,
}

/// Whether `unit` only moves `target`'s group between states its configuration allows.
pub fn driver(unit: &Unit, target: &Target) -> Driver {
    let allowed = |set: &RecordSet| {
        set.ttl == target.ttl
            && set.values.iter().all(|v| target.addresses.contains(v))
            && set
                .set_identifier
                .as_ref()
                .is_none_or(|id| target.set_identifiers.contains(id))
    };
    let mut has_marker = false;
    for change in &unit.changes {
        match change {
            Change::Delete(set) if ownership::is_marker(&set.name) => has_marker = true,
            Change::Delete(set) if !allowed(set) => return Driver::Config,
            Change::Create(set) if !ownership::is_marker(&set.name) && !allowed(set) => {
                return Driver::Config;
            }
            _ => {}
        }
    }
    // Without our marker in the batch the group is new to us (created or taken over).
    if has_marker {
        Driver::Verdict
    } else {
        Driver::Config
    }
}

/// Updates and deletes of record sets in `unit` (creations destroy nothing).
fn destructive(unit: &Unit) -> usize {
    unit.changes
        .iter()
        .filter(|c| matches!(c, Change::Delete(s) if !ownership::is_marker(&s.name)))
        .count()
}

/// The change cap.
#[derive(Debug, Clone, Copy)]
pub struct Cap {
    pub max_change_fraction: f64,
    /// A cycle may always update or delete this many record sets, whatever the fraction.
    pub min_change_cap: usize,
    /// The configuration's config-driven changes were approved (`--force`, or earlier for
    /// this same configuration): no cap.
    pub approved: bool,
}

/// Why a group's change waits.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Held {
    pub key: Key,
    pub why: HeldBy,
    pub reason: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum HeldBy {
    /// Config-driven changes above the change cap, until approved with `--force`.
    ChangeCap,
    /// Route53 refused the group's change; it is tried again after a backoff.
    Backoff,
}

/// What a cycle applies now, and what waits.
#[derive(Debug, Default)]
pub struct Decision {
    pub apply: Vec<Unit>,
    pub held: Vec<Held>,
}

/// Splits `plan` into what applies now and what waits: groups in backoff wait; config-driven
/// destructive changes above the cap wait (all of them: a configuration is applied whole or
/// not at all); verdict-driven changes and creations always go.
pub fn decide(
    plan: &Plan,
    targets: &[Target],
    current: &[RecordSet],
    cap: Cap,
    refused: &RefusedGroups,
    now: Instant,
) -> Decision {
    let by_key: BTreeMap<&Key, &Target> = targets.iter().map(|t| (&t.key, t)).collect();
    let mut decision = Decision::default();
    let mut config_driven = Vec::new();
    for unit in &plan.units {
        if let Some((until, attempts)) = refused.holds(unit, now) {
            decision.held.push(Held {
                key: unit.key.clone(),
                why: HeldBy::Backoff,
                reason: format!(
                    "Route53 refused this change {attempts} time(s); next try in {}s",
                    until.saturating_duration_since(now).as_secs().max(1)
                ),
            });
            continue;
        }
        match by_key.get(&unit.key).map(|t| driver(unit, t)) {
            Some(Driver::Verdict) => decision.apply.push(unit.clone()),
            _ if destructive(unit) == 0 => decision.apply.push(unit.clone()),
            _ => config_driven.push(unit),
        }
    }
    let destructive_total: usize = config_driven.iter().map(|u| destructive(u)).sum();
    let mut sets_of: BTreeMap<Key, usize> = BTreeMap::new();
    for set in current {
        *sets_of.entry(set.key()).or_default() += 1;
    }
    let conflicted: BTreeSet<&Key> = plan.conflicts.iter().map(|c| &c.key).collect();
    let owned: usize = targets
        .iter()
        .filter(|t| !conflicted.contains(&t.key))
        .map(|t| sets_of.get(&t.key).copied().unwrap_or(0))
        .sum();
    let allowed =
        (((owned as f64) * cap.max_change_fraction).floor() as usize).max(cap.min_change_cap);
    if cap.approved || destructive_total <= allowed {
        decision.apply.extend(config_driven.into_iter().cloned());
    } else {
        let reason = format!(
            "held by the change cap: the configuration would update or delete {destructive_total} of {owned} owned record sets, \
             more than allowed ({allowed}: max_change_fraction {} or min_change_cap {}); health-driven changes still apply; \
             run the reconciler once with --force to approve this configuration",
            cap.max_change_fraction, cap.min_change_cap
        );
        for unit in config_driven {
            decision.held.push(Held {
                key: unit.key.clone(),
                why: HeldBy::ChangeCap,
                reason: reason.clone(),
            });
        }
    }
    decision
}

/// The first wait after Route53 refuses a group, doubled at every refusal up to `MAX`.
pub const BACKOFF_FIRST: Duration = Duration::from_secs(5);
pub const BACKOFF_MAX: Duration = Duration::from_secs(600);

/// Groups Route53 refused, each waiting before its change is tried again. A group whose
/// change differs from the refused one (the desired state moved) is tried at once.
#[derive(Debug, Default)]
pub struct RefusedGroups {
    groups: BTreeMap<Key, Refusal>,
}

#[derive(Debug)]
struct Refusal {
    changes: Vec<Change>,
    attempts: u32,
    until: Instant,
}

impl RefusedGroups {
    /// When `unit` may be tried again and how often it was refused, if it must wait.
    pub fn holds(&self, unit: &Unit, now: Instant) -> Option<(Instant, u32)> {
        let r = self.groups.get(&unit.key)?;
        (r.changes == unit.changes && now < r.until).then_some((r.until, r.attempts))
    }

    /// Route53 refused `unit`'s change.
    pub fn refused(&mut self, unit: &Unit, now: Instant) {
        let attempts = match self.groups.get(&unit.key) {
            Some(r) if r.changes == unit.changes => r.attempts + 1,
            _ => 1,
        };
        let wait = BACKOFF_FIRST
            .saturating_mul(2u32.saturating_pow(attempts - 1))
            .min(BACKOFF_MAX);
        self.groups.insert(
            unit.key.clone(),
            Refusal {
                changes: unit.changes.clone(),
                attempts,
                until: now + wait,
            },
        );
    }

    /// When the first group still waiting at `now` may be tried again.
    pub fn next_due(&self, now: Instant) -> Option<Instant> {
        self.groups
            .values()
            .map(|r| r.until)
            .filter(|until| *until > now)
            .min()
    }

    /// Route53 took the group's change, or it has nothing to change any more.
    pub fn forget(&mut self, key: &Key) {
        self.groups.remove(key);
    }

    /// Forgets groups not in `keys` (records removed from the configuration).
    pub fn retain(&mut self, keys: &BTreeSet<&Key>) {
        self.groups.retain(|k, _| keys.contains(k));
    }
}

/// A fingerprint of what the configuration says about every group (not what verdicts say):
/// `--force` approves one configuration, and the approval lasts until it changes.
pub fn config_fingerprint(targets: &BTreeMap<String, Vec<Target>>) -> String {
    let mut hasher = aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA256);
    for (zone, targets) in targets {
        hasher.update(zone.as_bytes());
        for t in targets {
            let mut addresses = t.addresses.clone();
            addresses.sort();
            let mut ids = t.set_identifiers.clone();
            ids.sort();
            hasher.update(
                format!(
                    "\n{} {} {} {} {} {} {}",
                    t.key.name,
                    t.key.rtype,
                    t.owner,
                    t.take_over,
                    t.ttl,
                    addresses.join(","),
                    ids.join(",")
                )
                .as_bytes(),
            );
        }
    }
    hasher
        .finish()
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::route53::plan::plan;

    fn a(name: &str, ttl: u32, ips: &[&str]) -> RecordSet {
        RecordSet::new(name, "A", ttl, ips.iter().map(|s| s.to_string()).collect())
    }

    fn target(i: usize, ip: &str) -> Target {
        let name = format!("n{i}.example.com.");
        Target {
            key: Key {
                name: name.clone(),
                rtype: "A".into(),
            },
            owner: "prod".into(),
            take_over: false,
            desired: vec![a(&name, 30, &[ip])],
            set_identifiers: vec!["p".into(), "s".into()],
            addresses: vec!["192.0.2.1".into(), "192.0.2.2".into()],
            ttl: 30,
        }
    }

    /// Route53 after applying `targets` from nothing.
    fn holding(targets: &[Target]) -> Vec<RecordSet> {
        crate::route53::plan::apply(&[], &plan(&[], targets))
    }

    /// The decision for a plan with no group in backoff.
    fn fresh(p: &Plan, targets: &[Target], current: &[RecordSet], cap: Cap) -> Decision {
        decide(
            p,
            targets,
            current,
            cap,
            &RefusedGroups::default(),
            Instant::now(),
        )
    }

    fn cap() -> Cap {
        Cap {
            max_change_fraction: 0.5,
            min_change_cap: 1,
            approved: false,
        }
    }

    #[test]
    fn a_failover_of_every_record_is_verdict_driven_and_never_capped() {
        let before: Vec<Target> = (0..1000).map(|i| target(i, "192.0.2.1")).collect();
        let current = holding(&before);
        let after: Vec<Target> = (0..1000).map(|i| target(i, "192.0.2.2")).collect();
        let p = plan(&current, &after);
        assert_eq!(p.units.len(), 1000);
        assert!(
            p.units
                .iter()
                .zip(&after)
                .all(|(u, t)| driver(u, t) == Driver::Verdict)
        );
        let d = fresh(&p, &after, &current, cap());
        assert_eq!((d.apply.len(), d.held.len()), (1000, 0));
    }

    #[test]
    fn a_configuration_that_rewrites_most_records_is_held_whole_unless_approved() {
        let before: Vec<Target> = (0..10).map(|i| target(i, "192.0.2.1")).collect();
        let current = holding(&before);
        // Renumbered in the configuration: 198.51.100.1 was never allowed before.
        let mut after: Vec<Target> = (0..10).map(|i| target(i, "198.51.100.1")).collect();
        for t in &mut after {
            t.addresses = vec!["198.51.100.1".into()];
        }
        // ... while one record also fails over the way health does (still allowed).
        after[0] = target(0, "192.0.2.2");
        let p = plan(&current, &after);
        let d = fresh(&p, &after, &current, cap());
        assert_eq!(d.apply.len(), 1, "the health-driven change goes: {d:?}");
        assert_eq!(d.apply[0].key.name, "n0.example.com.");
        assert_eq!(d.held.len(), 9);
        assert!(d.held.iter().all(|h| h.why == HeldBy::ChangeCap));
        assert!(d.held[0].reason.contains("9 of 10"), "{}", d.held[0].reason);
        let approved = Cap {
            approved: true,
            ..cap()
        };
        let d = fresh(&p, &after, &current, approved);
        assert_eq!((d.apply.len(), d.held.len()), (10, 0));
    }

    #[test]
    fn a_ttl_change_is_config_driven_and_small_ones_pass_the_cap() {
        let before: Vec<Target> = (0..10).map(|i| target(i, "192.0.2.1")).collect();
        let current = holding(&before);
        let mut after = before.clone();
        after[3].ttl = 60;
        after[3].desired = vec![a("n3.example.com.", 60, &["192.0.2.1"])];
        let p = plan(&current, &after);
        assert_eq!(driver(&p.units[0], &after[3]), Driver::Config);
        let d = fresh(&p, &after, &current, cap());
        assert_eq!((d.apply.len(), d.held.len()), (1, 0));
    }

    #[test]
    fn creations_are_never_capped() {
        let targets: Vec<Target> = (0..100).map(|i| target(i, "192.0.2.1")).collect();
        let p = plan(&[], &targets);
        let d = fresh(&p, &targets, &[], cap());
        assert_eq!((d.apply.len(), d.held.len()), (100, 0));
    }

    #[test]
    fn a_refused_group_backs_off_exponentially_and_a_new_change_goes_at_once() {
        let targets = vec![target(0, "192.0.2.1")];
        let p = plan(&[], &targets);
        let unit = &p.units[0];
        let mut refused = RefusedGroups::default();
        let t0 = Instant::now();
        let mut waits = Vec::new();
        let mut now = t0;
        for _ in 0..10 {
            refused.refused(unit, now);
            let (until, _) = refused.holds(unit, now).expect("held");
            waits.push(until - now);
            now = until;
            assert!(
                refused.holds(unit, now).is_none(),
                "due again at the deadline"
            );
        }
        assert_eq!(waits[0], BACKOFF_FIRST);
        assert_eq!(waits[1], BACKOFF_FIRST * 2);
        assert_eq!(waits[9], BACKOFF_MAX);
        // Another change of the same group (the verdicts moved) is tried at once.
        let other = plan(&[], &[target(0, "192.0.2.2")]);
        refused.refused(unit, now);
        assert!(refused.holds(&other.units[0], now).is_none());
        let d = decide(&p, &targets, &[], cap(), &refused, now);
        assert_eq!(d.held.len(), 1);
        assert_eq!(d.held[0].why, HeldBy::Backoff);
        // A backoff that is over does not call for another cycle.
        let (until, _) = refused.holds(unit, now).expect("held");
        assert_eq!(refused.next_due(now), Some(until));
        assert_eq!(refused.next_due(until), None);
        refused.forget(&unit.key);
        assert!(refused.holds(unit, now).is_none());
    }

    #[test]
    fn the_fingerprint_follows_the_configuration_not_the_verdicts() {
        let zone = |ts: Vec<Target>| BTreeMap::from([("Z".to_string(), ts)]);
        let up = config_fingerprint(&zone(vec![target(0, "192.0.2.1")]));
        let failed_over = config_fingerprint(&zone(vec![target(0, "192.0.2.2")]));
        assert_eq!(up, failed_over);
        let mut renumbered = target(0, "192.0.2.1");
        renumbered.addresses.push("192.0.2.3".into());
        assert_ne!(up, config_fingerprint(&zone(vec![renumbered])));
    }
}
