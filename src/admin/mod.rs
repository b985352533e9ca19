//! The admin HTTP listener: the status page (`/`), `/metrics`, `/livez`, `/readyz`, the
//! `/v1/status` JSON that explains every answer, and the authenticated override API.

mod guard;
mod overrides;
mod status;

use std::sync::Arc;

use arc_swap::ArcSwap;
use axum::{
    Json, Router,
    extract::State,
    http::{StatusCode, header},
    response::{Html, IntoResponse},
    routing::{delete, get},
};
use serde_json::{Value, json};
use tokio::time::Instant;

pub use status::status_json;

use crate::{
    aggregator::History,
    config::Settings,
    exchange::pull::ProberLink,
    metrics::Registry,
    route53::reconcile::Reports,
    snapshot::{Answer, Snapshot},
    state::drills::{DrillResult, DrillResults},
    state::store::OverrideStore,
};

#[derive(Clone)]
pub struct AdminState {
    /// The settings in force (replaced on reload).
    pub settings: Arc<ArcSwap<Settings>>,
    pub snapshot: Arc<ArcSwap<Snapshot>>,
    /// What `/metrics` renders.
    pub registry: Registry,
    pub state_metrics: crate::state::StateMetrics,
    /// Links to remote probers (empty when probers run in this process).
    pub links: Arc<ArcSwap<Vec<Arc<ProberLink>>>>,
    /// The Route53 reconciler's latest report per hosted zone (route53 role only).
    pub route53: Option<Reports>,
    /// Whether this reconciler replica writes to Route53 (route53 role only).
    pub leadership: Option<Arc<crate::state::leader::Leadership>>,
    /// Operator overrides (serving roles only).
    pub overrides: Option<Arc<OverrideStore>>,
    /// The last drill result per record (serving roles only).
    pub drills: Option<Arc<DrillResults>>,
    /// Verdicts saved for the next start (serving roles only).
    pub verdicts: Option<Arc<crate::state::verdicts::VerdictStore>>,
    pub history: Arc<History>,
    /// Where reload requests go (roles that can reload).
    pub reload: Option<ReloadRequests>,
}

/// Requests to reload (`POST /v1/reload`), served by the process's reload loop; each gets the
/// outcome back: a summary, or every problem found.
pub type ReloadRequests =
    tokio::sync::mpsc::Sender<tokio::sync::oneshot::Sender<Result<String, Vec<String>>>>;

/// The status page: one self-contained HTML file (no external assets) that renders
/// `/v1/status` and refreshes itself.
const PAGE: &str = include_str!("page.html");

pub fn router(state: AdminState) -> Router {
    Router::new()
        .route("/", get(|| async { Html(PAGE) }))
        .route("/metrics", get(metrics))
        .route("/livez", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/v1/status", get(status))
        .route("/v1/overrides", get(overrides::list).post(overrides::set))
        .route("/v1/overrides/{endpoint}", delete(overrides::clear))
        .route("/v1/reload", axum::routing::post(reload))
        .route("/v1/drills", get(drills).post(record_drill))
        .with_state(state)
}

/// `router` behind the admin guard (host names, cross-site writes, the read token).
pub fn guarded(router: Router, state: AdminState) -> Router {
    router.layer(axum::middleware::from_fn_with_state(state, guard::guard))
}

/// `POST /v1/reload`: re-read the configuration and zones; 200 with a summary, or 422 with
/// every problem (the previous configuration stays in service).
async fn reload(
    State(state): State<AdminState>,
    headers: axum::http::HeaderMap,
) -> (StatusCode, Json<Value>) {
    if let Err(reply) = overrides::authorize(&state, &headers) {
        return reply;
    }
    let Some(requests) = &state.reload else {
        return (
            StatusCode::NOT_FOUND,
            Json(json!({"error": "this process cannot reload (no configuration file)"})),
        );
    };
    let (tx, rx) = tokio::sync::oneshot::channel();
    if requests.send(tx).await.is_err() {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({"error": "shutting down"})),
        );
    }
    match rx.await {
        Ok(Ok(summary)) => (StatusCode::OK, Json(json!({"reloaded": summary}))),
        Ok(Err(problems)) => (
            StatusCode::UNPROCESSABLE_ENTITY,
            Json(
                json!({"error": "reload failed; the previous configuration stays in service", "problems": problems}),
            ),
        ),
        Err(_) => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({"error": "shutting down"})),
        ),
    }
}

/// `GET /v1/drills`: the last drill result per record.
async fn drills(State(state): State<AdminState>) -> Json<Value> {
    let latest = state
        .drills
        .as_ref()
        .map(|d| d.latest())
        .unwrap_or_default();
    Json(json!({"drills": latest}))
}

/// `POST /v1/drills`: `vantage drill` reports a result (admin token required).
async fn record_drill(
    State(state): State<AdminState>,
    headers: axum::http::HeaderMap,
    body: axum::body::Bytes,
) -> (StatusCode, Json<Value>) {
    if let Err(reply) = overrides::authorize(&state, &headers) {
        return reply;
    }
    let Some(store) = &state.drills else {
        return (
            StatusCode::NOT_FOUND,
            Json(json!({"error": "this process keeps no drill results"})),
        );
    };
    let result: DrillResult = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => {
            return (
                StatusCode::BAD_REQUEST,
                Json(json!({"error": format!("not a drill result: {e}")})),
            );
        }
    };
    if let Some(overrides) = &state.overrides
        && let Err(error) = overrides.publish_drill(&result).await
    {
        tracing::warn!(%error, "cannot share the drill result with the fleet; kept here");
    }
    match store.record(result) {
        Ok(()) => (StatusCode::OK, Json(json!({"recorded": true}))),
        Err(e) => {
            tracing::error!(error = %e, "cannot keep a drill result");
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                Json(json!({"error": e.to_string()})),
            )
        }
    }
}

async fn metrics(State(state): State<AdminState>) -> impl IntoResponse {
    if let Some(drills) = &state.drills {
        state
            .state_metrics
            .drills(&state.settings.load().records, &drills.latest());
    }
    if let Some(overrides) = &state.overrides {
        state.state_metrics.backend(&overrides.backend());
    }
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        state.registry.render(),
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

async fn status(State(state): State<AdminState>) -> Json<Value> {
    let snapshot = state.snapshot.load();
    let mut doc = status_json(
        &state.settings.load(),
        &snapshot,
        &state.links.load(),
        Instant::now(),
    );
    if let Some(reports) = &state.route53 {
        let reports = reports
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone();
        // Each record's Route53 state beside its answer.
        let states =
            crate::route53::status::record_states(&state.settings.load(), &snapshot, &reports);
        if let Some(records) = doc["records"].as_array_mut() {
            for record in records {
                if let Some(sync) = states.iter().find(|s| {
                    record["name"] == s.record.as_str() && record["type"] == s.rtype.as_str()
                }) {
                    record["route53"] = json!(sync);
                }
            }
        }
        doc["route53"] = serde_json::to_value(reports).unwrap_or(Value::Null);
    }
    doc["overrides"] = json!(snapshot.overrides.values().collect::<Vec<_>>());
    // Problems with the state kept in admin.state_dir (a corrupt file moved aside, a directory
    // that cannot be written): the server runs, and says so.
    if let Some(leadership) = &state.leadership {
        doc["route53_leadership"] = json!(leadership.state());
    }
    // Where overrides live, and whether it can be reached (etcd for the whole fleet).
    if let Some(overrides) = &state.overrides {
        doc["state_backend"] = json!(overrides.backend());
    }
    doc["state_problems"] = json!(
        [
            state.overrides.as_ref().and_then(|o| o.problem()),
            state
                .drills
                .as_ref()
                .and_then(|d| d.problem().map(str::to_string)),
            state
                .verdicts
                .as_ref()
                .and_then(|v| v.problem().map(str::to_string)),
        ]
        .into_iter()
        .flatten()
        .collect::<Vec<_>>()
    );
    // Verdicts taken over from the previous run at start (held until probers decide).
    doc["restored_verdicts"] = json!(state.verdicts.as_ref().map(|v| v.restored()));
    doc["transitions"] = json!(state.history.recent());
    doc["drills"] = json!(
        state
            .drills
            .as_ref()
            .map(|d| d.latest())
            .unwrap_or_default()
    );
    doc["audit"] = json!(
        state
            .overrides
            .as_ref()
            .map(|o| o.recent())
            .unwrap_or_default()
    );
    Json(doc)
}
