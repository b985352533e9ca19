//! The status document: every record's answer and why, every endpoint's verdict and votes,
//! every prober's state, the latency table, overrides and recent transitions.

use std::{
    sync::Arc,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use serde_json::{Value, json};
use tokio::time::Instant;

use crate::{
    config::{QuorumRule, Settings},
    exchange::pull::ProberLink,
    snapshot::{Answer, Snapshot},
};

fn millis(d: Duration) -> f64 {
    (d.as_secs_f64() * 1e6).round() / 1e3
}

fn unix_millis(ago: Duration) -> u128 {
    SystemTime::now()
        .checked_sub(ago)
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_millis())
}

/// The status document: every record's answer and why; every endpoint's verdict and votes;
/// every prober's state; the latency table.
pub fn status_json(
    settings: &Settings,
    snapshot: &Snapshot,
    links: &[Arc<ProberLink>],
    now: Instant,
) -> Value {
    let records: Vec<Value> = snapshot
        .records
        .iter()
        .map(|((name, kind), a)| {
            let (state, weights) = match &a.answer {
                Answer::NotReady => ("servfail", None),
                Answer::Fixed(_) | Answer::ByRegion { .. } => ("answer", None),
                Answer::Weighted(w) => (
                    "answer",
                    Some(
                        w.iter()
                            .map(|(ip, w)| json!({"address": ip, "weight": w}))
                            .collect::<Vec<_>>(),
                    ),
                ),
            };
            json!({
                "name": name,
                "type": kind.as_str(),
                "policy": a.policy.as_str(),
                "ttl": a.ttl,
                "state": state,
                "answer": a.answer.addresses(),
                "weights": weights,
                "by_region": match &a.answer {
                    Answer::ByRegion { regions, default } => Some(json!({"regions": regions, "default": default})),
                    _ => None,
                },
                "reason": a.reason,
                "why": a.reason.describe(),
            })
        })
        .collect();
    let endpoints: Vec<Value> = settings
        .endpoints
        .iter()
        .map(|e| {
            let verdict = snapshot.verdicts.get(&e.id);
            let votes: Vec<Value> = verdict
                .map(|v| {
                    v.votes
                        .iter()
                        .map(|vote| {
                            json!({
                                "region": vote.region,
                                "state": vote.health,
                                "fresh": vote.fresh,
                                "age_ms": vote.age.map(millis),
                                "last_rtt_ms": vote.last_rtt.map(millis),
                                "smoothed_rtt_ms": vote.smoothed_rtt.map(millis),
                                "impaired": vote.impaired,
                                "overloaded": vote.overloaded,
                                "consecutive_failures": vote.failures,
                                "last_failure": vote.last_failure.as_ref().map(|(k, d)| json!({"kind": k, "detail": d})),
                                "local_error": vote.local_error,
                                "cert_expires_unix_s": vote.cert_expiry,
                            })
                        })
                        .collect()
                })
                .unwrap_or_default();
            let changed = verdict.and_then(|v| v.changed_at).map(|t| now.saturating_duration_since(t));
            json!({
                "id": e.id,
                "address": e.address,
                "site": e.site,
                "check": e.check.name,
                "verdict": verdict.map(|v| v.health).unwrap_or_default(),
                "quorum_reached": verdict.is_some_and(|v| v.quorum_reached),
                "why": verdict.map_or_else(|| "no observation yet".to_string(), |v| v.explain()),
                "up_votes": verdict.map_or(0, |v| v.up),
                "down_votes": verdict.map_or(0, |v| v.down),
                "last_transition_unix_ms": changed.map(unix_millis),
                "seconds_since_transition": changed.map(|d| d.as_secs_f64()),
                "votes": votes,
            })
        })
        .collect();
    let probers = settings.regions.len();
    let prober_list: Vec<Value> = settings
        .regions
        .iter()
        .map(|region| {
            let link = links.iter().find(|l| &l.region == region);
            let status = link.map(|l| l.status());
            json!({
                "region": region,
                "mode": if link.is_some() { "remote" } else { "in-process" },
                "url": link.map(|l| l.url.to_string()),
                "fresh": snapshot.quorum.fresh.contains(region),
                "impaired": snapshot.quorum.impaired.contains(region),
                "overloaded": snapshot.quorum.overloaded.contains(region),
                "reachable": status.as_ref().map(|s| s.reachable),
                "last_report_age_ms": status.as_ref().and_then(|s| s.last_report_at).map(|t| millis(now.saturating_duration_since(t))),
                "last_error": status.as_ref().and_then(|s| s.last_error.clone()),
                "reports_accepted": status.as_ref().map(|s| s.reports_accepted),
                "reports_rejected": status.as_ref().map(|s| s.reports_rejected),
            })
        })
        .collect();
    let missing: Vec<&str> = settings
        .regions
        .iter()
        .filter(|r| !snapshot.quorum.fresh.contains(r))
        .map(|r| r.as_str())
        .collect();
    // region -> endpoint -> smoothed RTT (ms), from fresh votes.
    let mut latency = serde_json::Map::new();
    for region in &settings.regions {
        let mut row = serde_json::Map::new();
        for (id, verdict) in &snapshot.verdicts {
            let rtt = verdict
                .votes
                .iter()
                .find(|v| &v.region == region && v.fresh)
                .and_then(|v| v.smoothed_rtt);
            row.insert(id.to_string(), json!(rtt.map(millis)));
        }
        latency.insert(region.to_string(), Value::Object(row));
    }
    json!({
        "ready": snapshot.ready,
        "generation": snapshot.generation,
        "probers": prober_list,
        "latency_ms": latency,
        "quorum": {
            "state": if snapshot.quorum.reached { "quorum" } else { "no quorum" },
            "fresh": snapshot.quorum.fresh,
            "missing": missing,
            "impaired": snapshot.quorum.impaired,
            "overloaded": snapshot.quorum.overloaded,
            "rule": match settings.cluster.quorum { QuorumRule::Majority => "majority".to_string(), QuorumRule::AtLeast(k) => k.to_string() },
            "required": settings.cluster.quorum.required(probers),
            "probers": settings.regions,
            "stale_after_ms": millis(settings.cluster.stale_after),
        },
        "records": records,
        "endpoints": endpoints,
    })
}
