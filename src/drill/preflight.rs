//! Before a drill: the record and the endpoint under test, and every reason to refuse it
//! (a server that cannot be read, an answer that would go away, a check failing already);
//! what each member serves before it.

use std::net::IpAddr;

use super::{
    DrillError, Member, Options, REQUEST_TIMEOUT,
    observe::{self, Mode, ServerView},
    watch::{Drill, Seen},
};
use crate::{
    config::{RecordSpec, ServerRole, Settings},
    dns::query,
};

/// Every reason not to start, from the status each member shows (`views`, one per member)
/// and what each serves now; the members' starting state when there is none.
pub(super) async fn refusals(
    drill: &Drill,
    views: &[ServerView],
    mode: Mode,
) -> Result<Vec<Seen>, Vec<String>> {
    let mut problems = Vec::new();
    let mut seen = vec![Seen::default(); drill.members.len()];
    for (i, (m, view)) in drill.members.iter().zip(views).enumerate() {
        problems.extend(observe::refusals(
            &m.server.name,
            view,
            &drill.record,
            &drill.endpoint,
            drill.address,
        ));
        // The override applies to the endpoint, so to every record that answers it.
        for other in drill.settings.records.iter().filter(|r| {
            (r.name != drill.record.name || r.kind != drill.record.kind)
                && r.endpoints.iter().any(|e| e.id.as_str() == drill.endpoint)
        }) {
            let key = format!("{} {}", other.name, other.kind.as_str());
            if view
                .answers
                .get(&key)
                .is_some_and(|a| a.contains(&drill.address))
            {
                problems.extend(observe::outage(
                    &m.server.name,
                    view,
                    other,
                    &drill.endpoint,
                    drill.address,
                ));
            }
        }
        match baseline(drill, m, view).await {
            Ok(values) => seen[i].baseline = values,
            Err(problem) => problems.push(problem),
        }
        seen[i].change_before = view.last_change.as_ref().map(|c| c.submitted_unix_ms);
        // A real drill starts its clock at the first failed check: none may be failing yet.
        if mode == Mode::Real
            && view
                .endpoints
                .get(&drill.endpoint)
                .is_some_and(|e| e.failing)
        {
            problems.push(format!(
                "{}: a check of {} is failing already; start the drill when it passes",
                m.server.name, drill.endpoint
            ));
        }
    }
    if problems.is_empty() {
        Ok(seen)
    } else {
        Err(problems)
    }
}

pub(super) fn find_record(
    settings: &Settings,
    options: &Options,
) -> Result<RecordSpec, DrillError> {
    let mut name = options.record.trim().to_ascii_lowercase();
    if !name.ends_with('.') {
        name.push('.');
    }
    let matching: Vec<&RecordSpec> = settings
        .records
        .iter()
        .filter(|r| r.name == name && options.kind.is_none_or(|k| r.kind == k))
        .collect();
    match matching.as_slice() {
        [one] => Ok((*one).clone()),
        [] => Err(DrillError::Usage(format!(
            "no managed record {name}{} in the configuration; records: {}",
            options
                .kind
                .map(|k| format!(" {}", k.as_str()))
                .unwrap_or_default(),
            settings
                .records
                .iter()
                .map(|r| format!("{} {}", r.name, r.kind.as_str()))
                .collect::<Vec<_>>()
                .join(", ")
        ))),
        _ => Err(DrillError::Usage(format!(
            "{name} has several managed types; choose one with --type"
        ))),
    }
}

/// The endpoint under test: the one named, or the first of the record's endpoints that the
/// first server answers now.
pub(super) fn choose_endpoint(
    record: &RecordSpec,
    options: &Options,
    view: &ServerView,
) -> Result<(String, IpAddr), DrillError> {
    let names = || {
        record
            .endpoints
            .iter()
            .map(|e| e.id.to_string())
            .collect::<Vec<_>>()
            .join(", ")
    };
    match &options.endpoint {
        Some(wanted) => record
            .endpoints
            .iter()
            .find(|e| e.id.as_str() == wanted)
            .map(|e| (e.id.to_string(), e.address))
            .ok_or_else(|| {
                DrillError::Usage(format!(
                    "{wanted} is not an endpoint of {}; its endpoints: {}",
                    record.name,
                    names()
                ))
            }),
        None => {
            let answer = view.answer.clone().unwrap_or_default();
            record
                .endpoints
                .iter()
                .find(|e| answer.contains(&e.address))
                .map(|e| (e.id.to_string(), e.address))
                .ok_or_else(|| {
                    DrillError::Usage(format!(
                        "{} answers none of its endpoints now ({}); name one with --endpoint ({})",
                        record.name,
                        observe::list(&answer),
                        names()
                    ))
                })
        }
    }
}

/// What a member serves before the drill: its DNS answer (DNS servers) or the Route53 values
/// (the reconciler); an error is a refusal.
async fn baseline(
    drill: &Drill,
    member: &Member,
    view: &ServerView,
) -> Result<Vec<IpAddr>, String> {
    let name = &member.server.name;
    match (member.server.role, member.server.dns) {
        (ServerRole::Dns, Some(dns)) => {
            let reply =
                query::addresses(dns, &drill.record.name, drill.record.kind, REQUEST_TIMEOUT)
                    .await
                    .map_err(|e| format!("{name}: DNS query to {dns} failed: {e}"))?;
            if !reply.is_noerror() || reply.addresses.is_empty() {
                return Err(format!(
                    "{name} ({dns}) answers {} with {} and no address",
                    drill.record.name, reply.rcode
                ));
            }
            if !observe::deterministic(&drill.record) {
                // Weighted and latency answers vary: the snapshot's answer is the baseline.
                return Ok(view.answer.clone().unwrap_or(reply.addresses));
            }
            if !reply.addresses.contains(&drill.address) {
                return Err(format!(
                    "{name} ({dns}) answers {} for {}, not {} ({})",
                    observe::list(&reply.addresses),
                    drill.record.name,
                    drill.endpoint,
                    drill.address
                ));
            }
            if view.answer.as_ref() != Some(&reply.addresses) {
                return Err(format!(
                    "{name} ({dns}) answers {} over DNS while its status says {}: it is changing, try again",
                    observe::list(&reply.addresses),
                    observe::list(view.answer.as_deref().unwrap_or_default()),
                ));
            }
            Ok(reply.addresses)
        }
        (ServerRole::Dns, None) => Err(format!("{name} has no DNS address")),
        (ServerRole::Route53, _) => {
            let values = drill.route53_values().await?;
            if !values.contains(&drill.address) {
                // A reconciler that cannot apply the record will not catch up: say why.
                let why = match &view.route53_trouble {
                    Some(trouble) => format!("the reconciler cannot apply it ({trouble})"),
                    None => "let the reconciler catch up first".to_string(),
                };
                return Err(format!(
                    "Route53 holds {} for {}, not {} ({}): {why}",
                    observe::list(&values),
                    drill.record.name,
                    drill.endpoint,
                    drill.address
                ));
            }
            Ok(values)
        }
    }
}
