//! The prober side: serves the region's latest observations as a report signed with the
//! prober's own key to aggregators that prove they hold the fleet secret.

use std::sync::{
    Arc,
    atomic::{AtomicU64, Ordering},
};

use axum::{
    Router,
    extract::State,
    http::{HeaderMap, StatusCode, header},
    response::{IntoResponse, Response},
    routing::get,
};
use tokio::time::Instant;

use super::ExchangeMetrics;
use super::{
    ObservationBoard,
    auth::{self, FleetKey, ReportSigner},
    wire::Report,
};
use crate::{metrics::Registry, model::Region};

#[derive(Clone)]
pub struct ProberState {
    pub region: Region,
    pub board: Arc<ObservationBoard>,
    /// Checks aggregators' requests.
    pub key: Arc<FleetKey>,
    /// Signs reports.
    pub signer: Arc<ReportSigner>,
    pub metrics: ExchangeMetrics,
    /// What `/metrics` renders.
    pub registry: Registry,
    /// How old a request signature may be.
    pub max_age: std::time::Duration,
    boot_id: u64,
    seq: Arc<AtomicU64>,
}

impl ProberState {
    pub fn new(
        region: Region,
        board: Arc<ObservationBoard>,
        key: Arc<FleetKey>,
        signer: Arc<ReportSigner>,
        metrics: ExchangeMetrics,
        registry: Registry,
        max_age: std::time::Duration,
    ) -> Self {
        Self {
            region,
            board,
            key,
            signer,
            metrics,
            registry,
            max_age,
            boot_id: rand::random(),
            seq: Arc::new(AtomicU64::new(0)),
        }
    }
}

/// `/v1/observations` (signed), `/metrics`, `/livez`.
pub fn router(state: ProberState) -> Router {
    Router::new()
        .route("/v1/observations", get(observations))
        .route("/metrics", get(metrics))
        .route("/livez", get(|| async { "ok\n" }))
        .with_state(state)
}

async fn metrics(State(state): State<ProberState>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        state.registry.render(),
    )
}

async fn observations(State(state): State<ProberState>, headers: HeaderMap) -> Response {
    let presented = headers
        .get(auth::REQUEST_HEADER)
        .and_then(|v| v.to_str().ok());
    if let Err(rejection) = state.key.verify(
        presented,
        auth::REQUEST_CONTEXT,
        b"",
        auth::unix_ms(),
        state.max_age,
    ) {
        state.metrics.request_rejected(rejection);
        tracing::warn!(
            reason = rejection.label(),
            "refused an observations request: {rejection}"
        );
        return (
            StatusCode::UNAUTHORIZED,
            [(auth::REFUSED_HEADER, rejection.label())],
            format!("{rejection}\n"),
        )
            .into_response();
    }
    let seq = state.seq.fetch_add(1, Ordering::Relaxed) + 1;
    // Built under the board's lock: no copy of every observation per request.
    let mut report = state.board.with_latest(|latest| {
        Report::new(&state.region, state.boot_id, seq, latest, Instant::now())
    });
    report.overloaded = state.board.is_overloaded(&state.region);
    let body = match serde_json::to_vec(&report) {
        Ok(body) => body,
        Err(error) => {
            tracing::error!(%error, "cannot encode a report");
            return StatusCode::INTERNAL_SERVER_ERROR.into_response();
        }
    };
    let signature = state.signer.sign(auth::unix_ms(), &body);
    (
        [
            (
                header::CONTENT_TYPE.as_str(),
                "application/json".to_string(),
            ),
            (auth::REPORT_HEADER, signature),
        ],
        body,
    )
        .into_response()
}
