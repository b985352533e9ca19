//! Desired Route53 state from the answer snapshot: for each record with a `route53` target,
//! the record sets its group should hold. Pure. A record that is not decided yet (or whose
//! snapshot is missing) yields no target at all, so that it is left as it is.

use std::collections::BTreeMap;

use super::{Key, RecordSet, plan::Target};
use crate::{
    config::Settings,
    snapshot::{Answer, Snapshot},
};

/// An endpoint's health as the answers use it: its verdict under the override in force.
fn effective(snapshot: &Snapshot, id: &crate::model::EndpointId) -> crate::model::Health {
    let verdict = snapshot
        .verdicts
        .get(id)
        .map_or(crate::model::Health::Unknown, |v| v.health);
    snapshot
        .overrides
        .get(id)
        .map_or(verdict, |o| o.action.effective(verdict))
}

/// The endpoints of `record` that no quorum has decided yet (and no override covers).
pub fn undecided_endpoints<'a>(
    record: &'a crate::config::RecordSpec,
    snapshot: &Snapshot,
) -> Vec<&'a crate::model::EndpointId> {
    record
        .endpoints
        .iter()
        .filter(|e| {
            !snapshot.overrides.contains_key(&e.id)
                && snapshot
                    .verdicts
                    .get(&e.id)
                    .is_none_or(|v| v.health == crate::model::Health::Unknown)
        })
        .map(|e| &e.id)
        .collect()
}

/// Records pushed to Route53 that cannot be planned yet: "name type (endpoints undecided)".
pub fn undecided(settings: &Settings, snapshot: &Snapshot) -> Vec<String> {
    settings
        .records
        .iter()
        .filter(|r| r.route53.is_some())
        .filter_map(|r| {
            let endpoints = undecided_endpoints(r, snapshot);
            (!endpoints.is_empty()).then(|| {
                let names: Vec<&str> = endpoints.iter().map(|e| e.as_str()).collect();
                format!(
                    "{} {}: no quorum verdict yet for {}",
                    r.name,
                    r.kind.as_str(),
                    names.join(", ")
                )
            })
        })
        .collect()
}

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
        if !undecided_endpoints(record, snapshot).is_empty() {
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
            // Route53's latency routing: one set per endpoint in its AWS Region, for every
            // endpoint that is Up (or, when none is, those `when_all_down` answers).
            Answer::ByRegion { .. } => {
                let up: Vec<&crate::config::RecordEndpoint> = record
                    .endpoints
                    .iter()
                    .filter(|e| effective(snapshot, &e.id) == crate::model::Health::Up)
                    .collect();
                let fallback = answer.answer.addresses();
                let serving: Vec<&crate::config::RecordEndpoint> = if up.is_empty() {
                    record
                        .endpoints
                        .iter()
                        .filter(|e| fallback.contains(&e.address))
                        .collect()
                } else {
                    up
                };
                serving
                    .iter()
                    .filter_map(|e| {
                        Some(
                            RecordSet::new(
                                &record.name,
                                rtype,
                                answer.ttl,
                                vec![e.address.to_string()],
                            )
                            .latency(e.id.as_str(), e.aws_region.as_deref()?),
                        )
                    })
                    .collect()
            }
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
                set_identifiers: record
                    .endpoints
                    .iter()
                    .map(|e| e.id.as_str().to_string())
                    .collect(),
                addresses: record
                    .endpoints
                    .iter()
                    .map(|e| e.address.to_string())
                    .collect(),
                ttl: record.ttl,
            });
    }
    zones
}
