//! The override API: `GET /v1/overrides`, `POST /v1/overrides` and
//! `DELETE /v1/overrides/{endpoint}`; writes need `Authorization: Bearer <admin token>`.

use std::time::Duration;

use axum::{
    Json,
    extract::{Path, Query, State},
    http::{HeaderMap, StatusCode, header},
};
use serde::Deserialize;
use serde_json::{Value, json};

use super::AdminState;
use crate::{
    clock::unix_ms,
    config::parse_duration,
    model::EndpointId,
    state::overrides::{Action, Override},
};

/// The longest an override may last.
const MAX_DURATION: Duration = Duration::from_secs(30 * 24 * 3600);
const DEFAULT_DURATION: Duration = Duration::from_secs(3600);

type Reply = (StatusCode, Json<Value>);

fn error(code: StatusCode, message: impl Into<String>) -> Reply {
    (code, Json(json!({"error": message.into()})))
}

/// Checks the bearer token in constant time.
pub(super) fn authorize(state: &AdminState, headers: &HeaderMap) -> Result<(), Reply> {
    let settings = state.settings.load();
    let Some(token) = &settings.admin.token else {
        return Err(error(
            StatusCode::FORBIDDEN,
            "overrides are disabled: set admin.token_file to a file holding the admin token",
        ));
    };
    let presented = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("");
    let same =
        aws_lc_rs::constant_time::verify_slices_are_equal(presented.as_bytes(), token.bytes())
            .is_ok();
    if same {
        Ok(())
    } else {
        Err(error(
            StatusCode::UNAUTHORIZED,
            "missing or wrong admin token (Authorization: Bearer ...)",
        ))
    }
}

pub async fn list(State(state): State<AdminState>) -> Reply {
    let active = state
        .overrides
        .as_ref()
        .map(|o| o.active(unix_ms()))
        .unwrap_or_default();
    (
        StatusCode::OK,
        Json(json!({"overrides": active.values().collect::<Vec<_>>()})),
    )
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SetRequest {
    endpoint: String,
    action: Action,
    reason: String,
    /// How long, e.g. "30m" (default 1h, at most 30 days).
    #[serde(rename = "for")]
    duration: Option<String>,
    by: Option<String>,
}

pub async fn set(
    State(state): State<AdminState>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Reply {
    if let Err(reply) = authorize(&state, &headers) {
        return reply;
    }
    let Some(store) = &state.overrides else {
        return error(
            StatusCode::NOT_FOUND,
            "this process does not serve answers; no overrides here",
        );
    };
    let request: SetRequest = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => {
            return error(
                StatusCode::BAD_REQUEST,
                format!(
                    "{e}; expected {{\"endpoint\", \"action\": force_up|force_down|drain, \"reason\", \"for\": \"30m\", \"by\"}}"
                ),
            );
        }
    };
    let endpoint = EndpointId::new(request.endpoint.as_str());
    let settings = state.settings.load();
    if settings.endpoint(&endpoint).is_none() {
        let known: Vec<&str> = settings.endpoints.iter().map(|e| e.id.as_str()).collect();
        return error(
            StatusCode::NOT_FOUND,
            format!(
                "no endpoint {:?}; configured: {}",
                request.endpoint,
                known.join(", ")
            ),
        );
    }
    if request.reason.trim().is_empty() {
        return error(
            StatusCode::BAD_REQUEST,
            "reason: say why (it goes to the audit log)",
        );
    }
    let duration = match request.duration.as_deref().map(parse_duration) {
        None => DEFAULT_DURATION,
        Some(Ok(d)) if !d.is_zero() && d <= MAX_DURATION => d,
        Some(Ok(d)) => {
            return error(
                StatusCode::BAD_REQUEST,
                format!("for: {d:?} is out of range (up to 30 days)"),
            );
        }
        Some(Err(e)) => return error(StatusCode::BAD_REQUEST, format!("for: {e}")),
    };
    let now = unix_ms();
    let o = Override {
        endpoint,
        action: request.action,
        reason: request.reason.trim().to_string(),
        by: request.by.unwrap_or_else(|| "unknown".into()),
        created_unix_ms: now,
        expires_unix_ms: now + duration.as_millis() as u64,
    };
    match store.set(o.clone()).await {
        Ok(()) => {
            state.state_metrics.override_changed("set");
            (StatusCode::OK, Json(json!({"override": o})))
        }
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}

#[derive(Deserialize)]
pub struct ClearQuery {
    by: Option<String>,
    reason: Option<String>,
}

pub async fn clear(
    State(state): State<AdminState>,
    headers: HeaderMap,
    Path(endpoint): Path<String>,
    Query(query): Query<ClearQuery>,
) -> Reply {
    if let Err(reply) = authorize(&state, &headers) {
        return reply;
    }
    let Some(store) = &state.overrides else {
        return error(
            StatusCode::NOT_FOUND,
            "this process does not serve answers; no overrides here",
        );
    };
    let by = query.by.unwrap_or_else(|| "unknown".into());
    let reason = query.reason.unwrap_or_default();
    match store
        .clear(&EndpointId::new(endpoint.as_str()), &by, &reason, unix_ms())
        .await
    {
        Ok(Some(o)) => {
            state.state_metrics.override_changed("clear");
            (StatusCode::OK, Json(json!({"cleared": o})))
        }
        Ok(None) => error(
            StatusCode::NOT_FOUND,
            format!("no override on {endpoint:?}"),
        ),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}
