//! Desired Route53 state from the answer snapshot: for each record with a `route53` target,
//! the record sets its group should hold. Pure. A record that is not decided yet (or whose
//! snapshot is missing) yields no target at all, so that it is left as it is.

use std::collections::BTreeMap;

use super::{Key, RecordSet, plan::Target};
use crate::{
    config::Settings,
    snapshot::{Answer, Snapshot},
};

/// Targets per hosted zone id.
pub fn targets(settings: &Settings, snapshot: &Snapshot) -> BTreeMap<String, Vec<Target>> {
    let mut zones: BTreeMap<String, Vec<Target>> = BTreeMap::new();
    for record in &settings.records {
        let Some(route53) = &record.route53 else {
            continue;
        };
        let Some(answer) = snapshot.records.get(&(record.name.clone(), record.kind)) else {
            continue;
        };
        // Route53 is only written from real verdicts: a record with an endpoint that has never
        // been decided by quorum (and is not overridden) is left as it is, even after the
        // startup grace lets DNS answer it.
        let undecided = record.endpoints.iter().any(|e| {
            !snapshot.overrides.contains_key(&e.id)
                && snapshot
                    .verdicts
                    .get(&e.id)
                    .is_none_or(|v| v.health == crate::model::Health::Unknown)
        });
        if undecided {
            continue;
        }
        let rtype = record.kind.as_str();
        let simple = |ips: &[std::net::IpAddr]| {
            if ips.is_empty() {
                Vec::new()
            } else {
                vec![RecordSet::new(
                    &record.name,
                    rtype,
                    answer.ttl,
                    ips.iter().map(ToString::to_string).collect(),
                )]
            }
        };
        let desired = match &answer.answer {
            Answer::NotReady => continue,
            Answer::Fixed(ips) => simple(ips),
            Answer::ByRegion { default, .. } => simple(default),
            // Weighted: one set per endpoint, named by the endpoint id.
            Answer::Weighted(choices) => choices
                .iter()
                .filter_map(|(ip, weight)| {
                    let endpoint = record.endpoints.iter().find(|e| e.address == *ip)?;
                    Some(
                        RecordSet::new(&record.name, rtype, answer.ttl, vec![ip.to_string()])
                            .weighted(endpoint.id.as_str(), (*weight).min(255) as u8),
                    )
                })
                .collect(),
        };
        zones
            .entry(route53.zone_id.clone())
            .or_default()
            .push(Target {
                key: Key {
                    name: record.name.clone(),
                    rtype: rtype.to_string(),
                },
                owner: route53.owner.clone(),
                take_over: route53.take_over,
                desired,
            });
    }
    zones
}
