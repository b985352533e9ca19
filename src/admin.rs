//! The admin HTTP listener: `/metrics`, `/livez`, `/readyz` and the `/v1/status` JSON API that
//! explains every answer.

use std::{
    sync::Arc,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use arc_swap::ArcSwap;
use axum::{
    Json, Router,
    extract::State,
    http::{StatusCode, header},
    response::IntoResponse,
    routing::get,
};
use serde_json::{Value, json};
use tokio::time::Instant;

use crate::{
    config::{QuorumRule, Settings},
    exchange::pull::ProberLink,
    metrics::Metrics,
    route53::reconcile::Reports,
    snapshot::{Answer, Snapshot},
};

#[derive(Clone)]
pub struct AdminState {
    pub settings: Arc<Settings>,
    pub snapshot: Arc<ArcSwap<Snapshot>>,
    pub metrics: Arc<Metrics>,
    /// Links to remote probers (empty when probers run in this process).
    pub links: Arc<Vec<Arc<ProberLink>>>,
    /// The Route53 reconciler's latest report per hosted zone (route53 role only).
    pub route53: Option<Reports>,
}

pub fn router(state: AdminState) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/livez", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/v1/status", get(status))
        .with_state(state)
}

async fn metrics(State(state): State<AdminState>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        state.metrics.render(),
    )
}

async fn readyz(State(state): State<AdminState>) -> impl IntoResponse {
    let snapshot = state.snapshot.load();
    if snapshot.ready {
        (StatusCode::OK, "ready\n".to_string())
    } else {
        let waiting: Vec<String> = snapshot
            .records
            .iter()
            .filter(|(_, a)| a.answer == Answer::NotReady)
            .map(|((name, kind), a)| format!("{name} {}: {}", kind.as_str(), a.reason.describe()))
            .collect();
        (
            StatusCode::SERVICE_UNAVAILABLE,
            format!(
                "not ready: waiting for the first quorum round\n{}\n",
                waiting.join("\n")
            ),
        )
    }
}

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
                                "last_failure": vote.last_failure.as_ref().map(|(k, d)| json!({"kind": k, "detail": d})),
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
            "rule": match settings.cluster.quorum { QuorumRule::Majority => "majority".to_string(), QuorumRule::AtLeast(k) => k.to_string() },
            "required": settings.cluster.quorum.required(probers),
            "probers": settings.regions,
            "stale_after_ms": millis(settings.cluster.stale_after),
        },
        "records": records,
        "endpoints": endpoints,
    })
}

async fn status(State(state): State<AdminState>) -> Json<Value> {
    let snapshot = state.snapshot.load();
    let mut doc = status_json(&state.settings, &snapshot, &state.links, Instant::now());
    if let Some(reports) = &state.route53 {
        let reports = reports
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone();
        doc["route53"] = serde_json::to_value(reports).unwrap_or(Value::Null);
    }
    Json(doc)
}
