//! Where each record pushed to Route53 stands, from the latest report of its zone: in sync,
//! propagating, pending (and why), refused by Route53 (and why), in conflict with another
//! owner, or waiting for a verdict. What `/v1/status`, `vantage status`, the status page and
//! `vantage_route53_record_state` show.

use std::collections::BTreeMap;

use serde::Serialize;

use super::{
    desired,
    plan::{ConflictKind, Step},
    policy::HeldBy,
    reconcile::ZoneReport,
};
use crate::{config::Settings, snapshot::Snapshot};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SyncState {
    /// Route53 holds what vantage answers.
    InSync,
    /// Changed; Route53 has not reported the change INSYNC yet.
    Propagating,
    /// A change is planned but was not applied (throttled, the change cap, a failed call).
    Pending,
    /// Route53 refuses the change to this record.
    Refused,
    /// The group is not ours (no marker, another owner): never touched.
    Conflict,
    /// An endpoint of the record has no quorum verdict yet: Route53 is left as it is.
    Undecided,
    /// No reconcile cycle has covered its zone yet.
    Unknown,
}

impl SyncState {
    pub const ALL: [SyncState; 7] = [
        SyncState::InSync,
        SyncState::Propagating,
        SyncState::Pending,
        SyncState::Refused,
        SyncState::Conflict,
        SyncState::Undecided,
        SyncState::Unknown,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            SyncState::InSync => "in_sync",
            SyncState::Propagating => "propagating",
            SyncState::Pending => "pending",
            SyncState::Refused => "refused",
            SyncState::Conflict => "conflict",
            SyncState::Undecided => "undecided",
            SyncState::Unknown => "unknown",
        }
    }
}

/// One record's Route53 state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RecordSync {
    pub record: String,
    #[serde(rename = "type")]
    pub rtype: String,
    pub zone: String,
    pub state: SyncState,
    /// Why, for every state but `in_sync`.
    pub reason: Option<String>,
}

/// The state of every record with a `route53` section.
pub fn record_states(
    settings: &Settings,
    snapshot: &Snapshot,
    reports: &BTreeMap<String, ZoneReport>,
) -> Vec<RecordSync> {
    settings
        .records
        .iter()
        .filter_map(|record| {
            let target = record.route53.as_ref()?;
            let rtype = record.kind.as_str();
            let is_this = |name: &str, t: &str| name == record.name && t == rtype;
            let (state, reason) =
                state_of(record, snapshot, reports.get(&target.zone_id), &is_this);
            Some(RecordSync {
                record: record.name.clone(),
                rtype: rtype.to_string(),
                zone: target.zone_id.clone(),
                state,
                reason,
            })
        })
        .collect()
}

fn state_of(
    record: &crate::config::RecordSpec,
    snapshot: &Snapshot,
    report: Option<&ZoneReport>,
    is_this: &dyn Fn(&str, &str) -> bool,
) -> (SyncState, Option<String>) {
    let undecided = desired::undecided_endpoints(record, snapshot);
    if !undecided.is_empty() {
        let names: Vec<&str> = undecided.iter().map(|e| e.as_str()).collect();
        return (
            SyncState::Undecided,
            Some(format!("no quorum verdict yet for {}", names.join(", "))),
        );
    }
    let Some(report) = report else {
        return (
            SyncState::Unknown,
            Some("no reconcile cycle has covered this zone yet".into()),
        );
    };
    if let Some(held) = report
        .held
        .iter()
        .find(|h| is_this(&h.key.name, &h.key.rtype))
    {
        let state = match held.why {
            HeldBy::ChangeCap => SyncState::Pending,
            HeldBy::Backoff => SyncState::Refused,
        };
        return (state, Some(held.reason.clone()));
    }
    if let Some(conflict) = report
        .conflicts
        .iter()
        .find(|c| is_this(&c.key.name, &c.key.rtype))
    {
        let state = match conflict.kind {
            ConflictKind::Ownership => SyncState::Conflict,
            ConflictKind::Refused => SyncState::Refused,
        };
        return (state, Some(conflict.reason.clone()));
    }
    let planned = report.steps.iter().any(|step| match step {
        Step::Create { new } | Step::Update { new, .. } => is_this(&new.name, &new.rtype),
        Step::Delete { old } => is_this(&old.name, &old.rtype),
    });
    let unapplied = report.unapplied.iter().any(|k| is_this(&k.name, &k.rtype));
    if planned && unapplied {
        return (
            SyncState::Pending,
            Some(
                report
                    .error
                    .clone()
                    .unwrap_or_else(|| "not applied yet".into()),
            ),
        );
    }
    if let Some(change) = &report.last_change
        && change.insync_unix_ms.is_none()
        && change.records.contains(&record.name)
    {
        return (
            SyncState::Propagating,
            Some(format!(
                "change {} submitted, not INSYNC yet",
                change.ids.join(", ")
            )),
        );
    }
    if let Some(error) = &report.error
        && planned
    {
        return (SyncState::Pending, Some(error.clone()));
    }
    (SyncState::InSync, None)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        model::{EndpointId, Health},
        route53::{Key, RecordSet, plan::Conflict, policy::Held, reconcile::AppliedChange},
    };

    fn settings() -> Settings {
        Settings::from_toml(
            "[[prober]]\nregion = \"a\"\n[check.t]\nprotocol = \"http\"\nhost = \"h.example\"\n\
             [[record]]\nname = \"www.example.com\"\nendpoints = [{ name = \"one\", address = \"192.0.2.1\" }]\nroute53 = { zone_id = \"Z\", owner = \"t\" }\n\
             [[record]]\nname = \"api.example.com\"\nendpoints = [{ name = \"one\", address = \"192.0.2.1\" }]\nroute53 = { zone_id = \"Z\", owner = \"t\" }\n",
            "t.toml",
            std::path::Path::new("."),
        )
        .expect("settings")
    }

    fn decided() -> Snapshot {
        let mut verdict = crate::quorum::Verdict::unknown(1);
        verdict.health = Health::Up;
        Snapshot {
            verdicts: BTreeMap::from([(EndpointId::new("one"), std::sync::Arc::new(verdict))]),
            ..Snapshot::default()
        }
    }

    fn report() -> ZoneReport {
        ZoneReport {
            zone: "Z".into(),
            steps: Vec::new(),
            conflicts: Vec::new(),
            applied: true,
            error: None,
            changes: Vec::new(),
            insync: None,
            last_change: None,
            held: Vec::new(),
            unapplied: Default::default(),
            pending: 0,
            made: Vec::new(),
            state: None,
        }
    }

    fn states(snapshot: &Snapshot, report: Option<ZoneReport>) -> Vec<(SyncState, Option<String>)> {
        let reports: BTreeMap<String, ZoneReport> =
            report.into_iter().map(|r| ("Z".to_string(), r)).collect();
        record_states(&settings(), snapshot, &reports)
            .into_iter()
            .map(|r| (r.state, r.reason))
            .collect()
    }

    #[test]
    fn each_record_gets_the_state_of_its_own_group() {
        // No verdict yet, then no cycle yet.
        assert_eq!(
            states(&Snapshot::default(), None)[0].0,
            SyncState::Undecided
        );
        assert_eq!(states(&decided(), None)[0].0, SyncState::Unknown);
        assert_eq!(
            states(&decided(), Some(report()))[0],
            (SyncState::InSync, None)
        );
        // www is refused by Route53, api is someone else's: two different states.
        let mut r = report();
        r.conflicts = vec![
            Conflict {
                key: Key {
                    name: "www.example.com.".into(),
                    rtype: "A".into(),
                },
                reason: "Route53 refuses this change: bad".into(),
                kind: ConflictKind::Refused,
            },
            Conflict {
                key: Key {
                    name: "api.example.com.".into(),
                    rtype: "A".into(),
                },
                reason: "owned by another vantage".into(),
                kind: ConflictKind::Ownership,
            },
        ];
        let got = states(&decided(), Some(r));
        assert_eq!(got[0].0, SyncState::Refused);
        assert_eq!(got[1].0, SyncState::Conflict);
        // A change not applied (a failed call): pending with the reason, for its record only.
        let www = Key {
            name: "www.example.com.".into(),
            rtype: "A".into(),
        };
        let mut r = report();
        r.applied = false;
        r.error = Some("change failed: timed out".into());
        r.unapplied = [www.clone()].into();
        r.steps = vec![Step::Create {
            new: RecordSet::new("www.example.com.", "A", 30, vec!["192.0.2.1".into()]),
        }];
        let got = states(&decided(), Some(r.clone()));
        assert_eq!(
            got[0],
            (SyncState::Pending, Some("change failed: timed out".into()))
        );
        assert_eq!(got[1].0, SyncState::InSync);
        // Held by the change cap: pending, saying so; in backoff after refusals: refused.
        for (why, state) in [
            (HeldBy::ChangeCap, SyncState::Pending),
            (HeldBy::Backoff, SyncState::Refused),
        ] {
            let mut r = r.clone();
            r.held = vec![Held {
                key: www.clone(),
                why,
                reason: "the reason".into(),
            }];
            assert_eq!(
                states(&decided(), Some(r))[0],
                (state, Some("the reason".into()))
            );
        }
        // Applied, not INSYNC yet.
        let mut r = report();
        r.last_change = Some(AppliedChange {
            ids: vec!["C1".into()],
            records: vec!["www.example.com.".into()],
            submitted_unix_ms: 1,
            insync_unix_ms: None,
        });
        assert_eq!(states(&decided(), Some(r))[0].0, SyncState::Propagating);
    }
}
