//! The prober side: serves the region's latest observations as a report signed with the
//! prober's own key to aggregators that prove they hold the fleet secret, and takes their
//! requests to check endpoints now (`POST /v1/check`, signed the same way).

use std::sync::{
    Arc,
    atomic::{AtomicU64, Ordering},
};

use axum::{
    Router,
    body::Bytes,
    extract::{RawQuery, State},
    http::{HeaderMap, StatusCode, header},
    response::{IntoResponse, Response},
    routing::{get, post},
};
use tokio::time::Instant;

use super::ExchangeMetrics;
use super::{
    ObservationBoard,
    asks::AskSender,
    auth::{self, FleetKey, ReportSigner},
    wire::{AskRequest, Report},
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
    /// This region's prober, for requests to check now.
    pub asks: Option<AskSender>,
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
            asks: None,
            boot_id: rand::random(),
            seq: Arc::new(AtomicU64::new(0)),
        }
    }
}

/// `/v1/observations` (signed), `/v1/check` (signed), `/metrics`, `/livez`.
pub fn router(state: ProberState) -> Router {
    Router::new()
        .route("/v1/observations", get(observations))
        .route("/v1/check", post(check_now))
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

/// Checks an aggregator's request signature (fleet secret, over `context` and `body`); a
/// refusal is counted, logged and returned as the 401 to answer, with the reason.
fn refusal(
    state: &ProberState,
    headers: &HeaderMap,
    context: &str,
    body: &[u8],
    what: &str,
) -> Option<Response> {
    let presented = headers
        .get(auth::REQUEST_HEADER)
        .and_then(|v| v.to_str().ok());
    state
        .key
        .verify(presented, context, body, auth::unix_ms(), state.max_age)
        .err()
        .map(|rejection| {
            state.metrics.request_rejected(rejection);
            tracing::warn!(
                reason = rejection.label(),
                "refused a {what} request: {rejection}"
            );
            (
                StatusCode::UNAUTHORIZED,
                [(auth::REFUSED_HEADER, rejection.label())],
                format!("{rejection}\n"),
            )
                .into_response()
        })
}

/// The most endpoints one request may name.
const MAX_ASKED: usize = 1000;

/// An aggregator asks for endpoints to be checked now (to confirm another prober's
/// suspicion): signed with the fleet secret over the body; the prober rate-limits per endpoint.
async fn check_now(State(state): State<ProberState>, headers: HeaderMap, body: Bytes) -> Response {
    if let Some(refused) = refusal(&state, &headers, auth::ASK_CONTEXT, &body, "check") {
        return refused;
    }
    let request: AskRequest = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => return (StatusCode::BAD_REQUEST, format!("{e}\n")).into_response(),
    };
    if request.endpoints.len() > MAX_ASKED {
        return (
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("at most {MAX_ASKED} endpoints per request\n"),
        )
            .into_response();
    }
    let Some(asks) = &state.asks else {
        return StatusCode::SERVICE_UNAVAILABLE.into_response();
    };
    let asked = request.endpoints.len();
    let taken = request
        .endpoints
        .into_iter()
        .filter(|e| asks.try_send(e.clone()).is_ok())
        .count();
    state.metrics.asked(taken, asked - taken);
    (StatusCode::ACCEPTED, format!("{taken}\n")).into_response()
}

/// How long a long-polling request may be held at most.
const MAX_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

/// A long poll: `?wait=<ms>&after=<through>&boot=<boot id>` holds the request until an
/// observation newer than `after` may change a vote (or `wait` passes), and answers with the
/// observations newer than `after` only (when `boot` is this process's: its numbering).
#[derive(Debug, Default)]
struct Push {
    wait: Option<u64>,
    after: Option<u64>,
    boot: Option<u64>,
}

impl Push {
    /// Unknown or malformed parameters are ignored (a plain pull).
    fn parse(query: Option<&str>) -> Push {
        let mut push = Push::default();
        for (key, value) in url::form_urlencoded::parse(query.unwrap_or("").as_bytes()) {
            let value = value.parse().ok();
            match &*key {
                "wait" => push.wait = value,
                "after" => push.after = value,
                "boot" => push.boot = value,
                _ => {}
            }
        }
        push
    }
}

async fn observations(
    State(state): State<ProberState>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Response {
    // The query is signed with the request (a plain pull has none).
    let context = auth::request_context(query.as_deref());
    if let Some(refused) = refusal(&state, &headers, &context, b"", "observations") {
        return refused;
    }
    let push = Push::parse(query.as_deref());
    let after = push.after.filter(|_| push.boot == Some(state.boot_id));
    if let (Some(wait), Some(after)) = (push.wait, after) {
        let wait = std::time::Duration::from_millis(wait).min(MAX_WAIT);
        let _ = tokio::time::timeout(wait, state.board.pushed_after(after)).await;
    }
    let seq = state.seq.fetch_add(1, Ordering::Relaxed) + 1;
    // Built under the board's lock: no copy of every observation per request.
    let mut report = state.board.with_latest_through(|latest, through| Report {
        through: Some(through),
        ..Report::newer_than(
            &state.region,
            state.boot_id,
            seq,
            latest,
            after,
            Instant::now(),
        )
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
