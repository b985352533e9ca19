//! The plan: a pure diff of what Route53 holds against what we want, for the record groups we
//! own. Pure; a plan is a plain value that can be printed (dry run) or applied.

use std::collections::{BTreeSet, HashMap};

use serde::Serialize;

use super::{
    Change, Key, RecordSet,
    ownership::{marker, marker_name, next_marker, owner_of},
};

/// One record group vantage should manage in a hosted zone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub key: Key,
    pub owner: String,
    /// Take over an existing group that has no marker (explicit opt-in).
    pub take_over: bool,
    /// The record sets the group should hold (empty: none).
    pub desired: Vec<RecordSet>,
    /// The set identifiers vantage writes for this record (its endpoints' names): a weighted
    /// set with any other identifier in the group is someone else's and is left alone.
    pub set_identifiers: Vec<String>,
    /// Every value the configuration allows in the group (its endpoints' addresses) and its
    /// TTL: changes within them are driven by health, others by the configuration.
    pub addresses: Vec<String>,
    pub ttl: u32,
}

/// The changes of one record group, applied together (record and marker in one batch).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Unit {
    pub key: Key,
    /// Deletes first, then creates.
    pub changes: Vec<Change>,
}

/// A group we did not change, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Conflict {
    pub key: Key,
    pub reason: String,
    pub kind: ConflictKind,
}

/// Why a group was left alone.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ConflictKind {
    /// It is not ours (no marker, another owner, routing we do not manage): never touched.
    Ownership,
    /// It is ours, but Route53 refuses the change (or it cannot fit a batch).
    Refused,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Plan {
    pub units: Vec<Unit>,
    pub conflicts: Vec<Conflict>,
}

/// A change as people read it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "action", rename_all = "lowercase")]
pub enum Step {
    Create { new: RecordSet },
    Update { old: RecordSet, new: RecordSet },
    Delete { old: RecordSet },
}

impl Plan {
    pub fn is_empty(&self) -> bool {
        self.units.is_empty()
    }

    /// Record sets created, updated or deleted, not counting ownership markers.
    pub fn record_changes(&self) -> usize {
        self.steps()
            .iter()
            .filter(|s| match s {
                Step::Create { new } | Step::Update { new, .. } => {
                    !super::ownership::is_marker(&new.name)
                }
                Step::Delete { old } => !super::ownership::is_marker(&old.name),
            })
            .count()
    }

    /// The changes as create / update (same set replaced) / delete.
    pub fn steps(&self) -> Vec<Step> {
        let mut steps = Vec::new();
        for unit in &self.units {
            let deletes: Vec<&RecordSet> = unit
                .changes
                .iter()
                .filter_map(|c| match c {
                    Change::Delete(s) => Some(s),
                    Change::Create(_) => None,
                })
                .collect();
            let mut paired = BTreeSet::new();
            for change in &unit.changes {
                let Change::Create(new) = change else {
                    continue;
                };
                let old = deletes.iter().position(|d| {
                    d.name == new.name
                        && d.rtype == new.rtype
                        && d.set_identifier == new.set_identifier
                });
                match old {
                    // Re-writing our own marker is the ownership guard, not a change.
                    Some(i)
                        if super::ownership::is_marker(&new.name)
                            && owner_of(deletes[i]).is_some()
                            && owner_of(deletes[i]) == owner_of(new) =>
                    {
                        paired.insert(i);
                    }
                    Some(i) => {
                        paired.insert(i);
                        steps.push(Step::Update {
                            old: deletes[i].clone(),
                            new: new.clone(),
                        });
                    }
                    None => steps.push(Step::Create { new: new.clone() }),
                }
            }
            for (i, d) in deletes.iter().enumerate() {
                if !paired.contains(&i) {
                    steps.push(Step::Delete { old: (*d).clone() });
                }
            }
        }
        steps
    }

    /// The plan for people: one line per step, then the conflicts.
    pub fn render(&self) -> String {
        let mut out = String::new();
        for step in self.steps() {
            match step {
                Step::Create { new } => out.push_str(&format!("+ create {new}\n")),
                Step::Update { old, new } => {
                    out.push_str(&format!("~ update {old}\n      -> {new}\n"))
                }
                Step::Delete { old } => out.push_str(&format!("- delete {old}\n")),
            }
        }
        // Every change of a group we own also rewrites its marker with the next revision (the
        // ownership guard of the compare-and-swap): said once, not as a change of its own.
        let guarded = self
            .units
            .iter()
            .filter(|u| {
                u.changes
                    .iter()
                    .any(|c| matches!(c, Change::Delete(s) if super::ownership::is_marker(&s.name)))
            })
            .count();
        if guarded > 0 {
            out.push_str(&format!(
                "= {guarded} ownership marker(s) rewritten with their next revision, in the same batch as their group\n"
            ));
        }
        for c in &self.conflicts {
            out.push_str(&format!("! conflict {}: {}\n", c.key, c.reason));
        }
        if out.is_empty() {
            out.push_str("no changes\n");
        }
        out
    }
}

/// Diffs `current` (everything Route53 holds in the zone) against `targets`.
pub fn plan(current: &[RecordSet], targets: &[Target]) -> Plan {
    let mut result = Plan::default();
    let mut by_group: HashMap<(&str, &str), Vec<&RecordSet>> = HashMap::new();
    for set in current {
        by_group
            .entry((set.name.as_str(), set.rtype.as_str()))
            .or_default()
            .push(set);
    }
    for target in targets {
        let key = &target.key;
        let have: Vec<&RecordSet> = by_group
            .get(&(key.name.as_str(), key.rtype.as_str()))
            .cloned()
            .unwrap_or_default();
        let marker_set = by_group
            .get(&(marker_name(key).as_str(), "TXT"))
            .and_then(|sets| sets.first().copied());
        let mut changes = Vec::new();
        if have.iter().any(|s| s.opaque) {
            result.conflicts.push(Conflict {
                key: key.clone(),
                kind: ConflictKind::Ownership,
                reason: "holds record sets with routing vantage does not manage (alias, geolocation, failover, ...)".into(),
            });
            continue;
        }
        match marker_set.map(owner_of) {
            Some(Some(owner)) if owner == target.owner => {}
            Some(Some(owner)) => {
                result.conflicts.push(Conflict {
                    key: key.clone(),
                    kind: ConflictKind::Ownership,
                    reason: format!("owned by another vantage (owner {owner:?})"),
                });
                continue;
            }
            Some(None) => {
                result.conflicts.push(Conflict {
                    key: key.clone(),
                    kind: ConflictKind::Ownership,
                    reason: format!(
                        "{} holds a TXT record that is not our marker",
                        marker_name(key)
                    ),
                });
                continue;
            }
            None if !have.is_empty() && !target.take_over => {
                result.conflicts.push(Conflict {
                    key: key.clone(),
                    kind: ConflictKind::Ownership,
                    reason:
                        "exists without our ownership marker; set take_over = true to manage it"
                            .into(),
                });
                continue;
            }
            None => changes.push(Change::Create(marker(key, &target.owner))),
        }
        let foreign: Vec<&&RecordSet> = have
            .iter()
            .filter(|s| {
                s.set_identifier
                    .as_ref()
                    .is_some_and(|id| !target.set_identifiers.contains(id))
            })
            .collect();
        if !foreign.is_empty() {
            // Our marker, but a set we never wrote: report it, never delete it.
            let ids: Vec<&str> = foreign
                .iter()
                .filter_map(|s| s.set_identifier.as_deref())
                .collect();
            result.conflicts.push(Conflict {
                key: key.clone(),
                kind: ConflictKind::Ownership,
                reason: format!(
                    "holds weighted sets vantage did not write (set identifiers {}); they are left alone",
                    ids.join(", ")
                ),
            });
        }
        for old in &have {
            if !target.desired.contains(old) && !foreign.contains(&old) {
                changes.push(Change::Delete((*old).clone()));
            }
        }
        for new in &target.desired {
            if !have.contains(&new) {
                changes.push(Change::Create(new.clone()));
            }
        }
        // Ownership is part of the compare-and-swap: the batch also deletes and re-creates the
        // exact marker we read, so it fails whole if the group changed hands since.
        if let (Some(m), false) = (marker_set, changes.is_empty()) {
            changes.push(Change::Delete(m.clone()));
            changes.push(Change::Create(next_marker(m, &target.owner)));
        }
        // Deletes before creates: Route53 applies a batch in order.
        changes.sort_by_key(|c| matches!(c, Change::Create(_)));
        if !changes.is_empty() {
            result.units.push(Unit {
                key: key.clone(),
                changes,
            });
        }
    }
    result
}

/// What Route53 would hold after applying `plan` to `current` (for tests and dry runs).
pub fn apply(current: &[RecordSet], plan: &Plan) -> Vec<RecordSet> {
    let mut state: BTreeSet<RecordSet> = current.iter().cloned().collect();
    for unit in &plan.units {
        for change in &unit.changes {
            match change {
                Change::Delete(s) => {
                    state.remove(s);
                }
                Change::Create(s) => {
                    state.insert(s.clone());
                }
            }
        }
    }
    state.into_iter().collect()
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn a(name: &str, ips: &[&str]) -> RecordSet {
        RecordSet::new(name, "A", 30, ips.iter().map(|s| s.to_string()).collect())
    }

    fn target(name: &str, desired: Vec<RecordSet>) -> Target {
        Target {
            key: Key {
                name: name.into(),
                rtype: "A".into(),
            },
            owner: "prod".into(),
            take_over: false,
            desired,
            // The identifiers the tests' weighted sets use.
            set_identifiers: ["e1", "e2", "s0", "s1", "s2"].map(String::from).to_vec(),
            addresses: Vec::new(),
            ttl: 30,
        }
    }

    #[test]
    fn first_round_creates_record_and_marker_second_round_is_a_no_op() {
        let targets = vec![target(
            "www.example.com.",
            vec![a("www.example.com.", &["192.0.2.1"])],
        )];
        let first = plan(&[], &targets);
        let steps = first.steps();
        assert_eq!(steps.len(), 2, "{steps:?}");
        assert_eq!(first.record_changes(), 1);
        let state = apply(&[], &first);
        assert!(plan(&state, &targets).is_empty(), "idempotent");
    }

    #[test]
    fn a_failover_flip_changes_only_the_flipped_record() {
        let targets = vec![
            target(
                "www.example.com.",
                vec![a("www.example.com.", &["192.0.2.1"])],
            ),
            target(
                "api.example.com.",
                vec![a("api.example.com.", &["192.0.2.5"])],
            ),
        ];
        let state = apply(&[], &plan(&[], &targets));
        let flipped = vec![
            target(
                "www.example.com.",
                vec![a("www.example.com.", &["192.0.2.2"])],
            ),
            targets[1].clone(),
        ];
        let p = plan(&state, &flipped);
        assert_eq!(p.units.len(), 1);
        assert_eq!(
            p.steps(),
            vec![Step::Update {
                old: a("www.example.com.", &["192.0.2.1"]),
                new: a("www.example.com.", &["192.0.2.2"])
            }]
        );
        assert!(
            p.render()
                .contains("~ update www.example.com. 30 A 192.0.2.1")
        );
        // The marker's next revision goes in the same batch, and the plan says so once.
        assert!(
            p.render()
                .contains("= 1 ownership marker(s) rewritten with their next revision"),
            "{}",
            p.render()
        );
    }

    #[test]
    fn foreign_records_are_never_touched() {
        let foreign = a("www.example.com.", &["198.51.100.7"]);
        let other = a("mail.example.com.", &["192.0.2.25"]);
        let current = vec![foreign.clone(), other.clone()];
        let targets = vec![target(
            "www.example.com.",
            vec![a("www.example.com.", &["192.0.2.1"])],
        )];
        let p = plan(&current, &targets);
        assert!(p.is_empty());
        assert_eq!(p.conflicts.len(), 1);
        assert!(p.conflicts[0].reason.contains("take_over"));
        // Another owner's marker is a conflict too.
        let theirs = marker(&targets[0].key, "staging");
        let p = plan(&[foreign.clone(), theirs], &targets);
        assert!(p.is_empty());
        assert!(p.conflicts[0].reason.contains("staging"));
        // With take_over, the group becomes ours in one unit: marker + replace.
        let mut take = targets.clone();
        take[0].take_over = true;
        let p = plan(&current, &take);
        let state = apply(&current, &p);
        assert!(state.contains(&other), "unrelated records stay");
        assert!(!state.contains(&foreign));
        assert!(plan(&state, &targets).is_empty());
    }

    #[test]
    fn weighted_sets_are_withdrawn_and_restored_individually() {
        let w = |id: &str, ip: &str, weight: u8| a("img.example.com.", &[ip]).weighted(id, weight);
        let all = vec![target(
            "img.example.com.",
            vec![w("e1", "192.0.2.1", 3), w("e2", "192.0.2.2", 1)],
        )];
        let state = apply(&[], &plan(&[], &all));
        let one_down = vec![target("img.example.com.", vec![w("e1", "192.0.2.1", 3)])];
        let p = plan(&state, &one_down);
        assert_eq!(
            p.steps(),
            vec![Step::Delete {
                old: w("e2", "192.0.2.2", 1)
            }]
        );
    }

    #[test]
    fn a_weighted_set_someone_else_adds_to_our_group_is_reported_and_left_alone() {
        let w = |id: &str, ip: &str, weight: u8| a("img.example.com.", &[ip]).weighted(id, weight);
        let all = vec![target(
            "img.example.com.",
            vec![w("e1", "192.0.2.1", 3), w("e2", "192.0.2.2", 1)],
        )];
        let mut state = apply(&[], &plan(&[], &all));
        state.push(w("canary", "198.51.100.7", 5));
        // e2 goes Down: its set is withdrawn; the canary set is not ours and stays.
        let one_down = vec![target("img.example.com.", vec![w("e1", "192.0.2.1", 3)])];
        let p = plan(&state, &one_down);
        assert_eq!(
            p.steps(),
            vec![Step::Delete {
                old: w("e2", "192.0.2.2", 1)
            }]
        );
        assert_eq!(p.conflicts.len(), 1, "{:?}", p.conflicts);
        assert!(
            p.conflicts[0].reason.contains("canary"),
            "{:?}",
            p.conflicts
        );
        assert!(apply(&state, &p).contains(&w("canary", "198.51.100.7", 5)));
    }

    fn arb_set() -> impl Strategy<Value = RecordSet> {
        (
            0u8..4,
            prop::collection::vec(0u8..6, 0..3),
            prop::option::of((0u8..3, 0u8..4)),
        )
            .prop_map(|(n, ips, w)| {
                let name = format!("n{n}.example.com.");
                let mut set = a(
                    &name,
                    &ips.iter()
                        .map(|i| format!("192.0.2.{i}"))
                        .collect::<Vec<_>>()
                        .iter()
                        .map(String::as_str)
                        .collect::<Vec<_>>(),
                );
                if set.values.is_empty() {
                    set.values.push("192.0.2.99".into());
                }
                if let Some((id, weight)) = w {
                    set = set.weighted(&format!("s{id}"), weight);
                }
                set
            })
    }

    fn targets_of(sets: &[RecordSet]) -> Vec<Target> {
        let mut names: Vec<String> = sets.iter().map(|s| s.name.clone()).collect();
        names.sort();
        names.dedup();
        names
            .iter()
            .map(|n| {
                let mut desired: Vec<RecordSet> =
                    sets.iter().filter(|s| &s.name == n).cloned().collect();
                desired.sort();
                desired.dedup_by(|x, y| x.set_identifier == y.set_identifier);
                target(n, desired)
            })
            .collect()
    }

    proptest! {
        /// plan(x, x) is empty: what we own and want is left alone.
        #[test]
        fn plan_of_the_desired_state_is_empty(sets in prop::collection::vec(arb_set(), 0..6)) {
            let targets = targets_of(&sets);
            let state = apply(&[], &plan(&[], &targets));
            prop_assert!(plan(&state, &targets).is_empty());
        }

        /// Applying the plan reaches the desired state for owned groups and leaves every other
        /// record untouched.
        #[test]
        fn applying_the_plan_reaches_the_desired_state(
            before in prop::collection::vec(arb_set(), 0..6),
            after in prop::collection::vec(arb_set(), 0..6),
            foreign in prop::collection::vec(arb_set(), 0..3),
        ) {
            let foreign: Vec<RecordSet> = foreign.into_iter().map(|mut s| { s.name = format!("f.{}", s.name); s }).collect();
            let old = targets_of(&before);
            let mut current = apply(&[], &plan(&[], &old));
            current.extend(foreign.iter().cloned());
            let new: Vec<Target> = targets_of(&after);
            let p = plan(&current, &new);
            let state = apply(&current, &p);
            for t in &new {
                if p.conflicts.iter().any(|c| c.key == t.key) { continue; }
                let mut have: Vec<RecordSet> = state.iter().filter(|s| s.key() == t.key).cloned().collect();
                have.sort();
                let mut want = t.desired.clone();
                want.sort();
                prop_assert_eq!(have, want);
            }
            for f in &foreign {
                prop_assert!(state.contains(f), "foreign record {} was touched", f);
            }
        }
    }
}
