//! The report a prober serves: its latest observation of every endpoint, as JSON.
//!
//! Times travel as ages (milliseconds before the report was generated), so that staleness is
//! judged on each side's own monotonic clock and needs no clock synchronisation.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::time::Instant;

use crate::model::{EndpointId, FailureKind, Health, Latest, Observation, Region};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Report {
    pub region: Region,
    /// Random per prober process: a restart starts a new sequence.
    pub boot_id: u64,
    /// Increases with every report this process serves.
    pub seq: u64,
    /// The prober's checks start late: its Down votes should not count.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub overloaded: bool,
    /// The sequence of the newest observation the prober had kept when it made the report: an
    /// aggregator asks for what is newer (`?after=`) and is answered as soon as a vote may
    /// change (push by long poll). Absent from probers that only answer plain pulls.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub through: Option<u64>,
    /// Only the observations newer than the request's `after` (a delta), not every endpoint.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub delta: bool,
    pub observations: Vec<WireObservation>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WireObservation {
    pub endpoint: EndpointId,
    pub state: Health,
    pub successes: u32,
    pub failures: u32,
    pub last_rtt_ms: Option<f64>,
    pub smoothed_rtt_ms: Option<f64>,
    pub last_failure: Option<WireFailure>,
    /// Why the latest check could not run at the prober (a local error), if it could not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub local_error: Option<String>,
    /// When the certificate the last https check was shown expires (Unix seconds).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cert_expiry_unix_s: Option<i64>,
    /// How long before the report was generated the observation was made.
    pub age_ms: u64,
    /// A check has been running far longer than the endpoint's checks take (not a vote).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub overdue: bool,
    /// The prober process's check sequence at this observation (grows with every check of any
    /// endpoint; orders observations, does not count this endpoint's checks).
    pub checks: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WireFailure {
    pub kind: FailureKind,
    pub detail: String,
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn from_ms(ms: f64) -> Option<Duration> {
    (ms.is_finite() && ms >= 0.0).then(|| Duration::from_secs_f64(ms / 1e3))
}

impl Report {
    /// The report of `region`'s latest observations, as of `now`.
    pub fn new(region: &Region, boot_id: u64, seq: u64, latest: &Latest, now: Instant) -> Report {
        Report::newer_than(region, boot_id, seq, latest, None, now)
    }

    /// The report of `region`'s observations numbered above `after` (all of them when None).
    pub fn newer_than(
        region: &Region,
        boot_id: u64,
        seq: u64,
        latest: &Latest,
        after: Option<u64>,
        now: Instant,
    ) -> Report {
        let mut observations: Vec<WireObservation> = latest
            .iter()
            .filter(|o| &o.region == region && after.is_none_or(|after| o.seq > after))
            .map(|o| WireObservation {
                endpoint: o.endpoint.clone(),
                state: o.health,
                successes: o.successes,
                failures: o.failures,
                last_rtt_ms: o.last_rtt.map(ms),
                smoothed_rtt_ms: o.smoothed_rtt.map(ms),
                last_failure: o.last_failure.as_ref().map(|(kind, detail)| WireFailure {
                    kind: *kind,
                    detail: detail.clone(),
                }),
                local_error: o.local_error.clone(),
                cert_expiry_unix_s: o.cert_expiry,
                age_ms: now.saturating_duration_since(o.observed_at).as_millis() as u64,
                overdue: o.overdue,
                checks: o.seq,
            })
            .collect();
        observations.sort_by(|a, b| a.endpoint.cmp(&b.endpoint));
        Report {
            region: region.clone(),
            boot_id,
            seq,
            overloaded: false,
            through: None,
            delta: after.is_some(),
            observations,
        }
    }

    /// The observations as seen by a receiver that asked for the report at `asked_at` (ages
    /// count from then, which errs on the side of staleness); `seq` orders them on its board.
    pub fn into_observations(self, asked_at: Instant, seq: u64) -> Vec<Observation> {
        let region = self.region;
        self.observations
            .into_iter()
            .map(|w| Observation {
                endpoint: w.endpoint,
                region: region.clone(),
                health: w.state,
                successes: w.successes,
                failures: w.failures,
                last_rtt: w.last_rtt_ms.and_then(from_ms),
                smoothed_rtt: w.smoothed_rtt_ms.and_then(from_ms),
                last_failure: w.last_failure.map(|f| (f.kind, f.detail)),
                local_error: w.local_error,
                cert_expiry: w.cert_expiry_unix_s,
                observed_at: asked_at
                    .checked_sub(Duration::from_millis(w.age_ms))
                    .unwrap_or(asked_at),
                overdue: w.overdue,
                seq,
            })
            .collect()
    }
}

/// An aggregator's request to check endpoints now (`POST /v1/check`).
#[derive(Debug, Serialize, Deserialize)]
pub struct AskRequest {
    pub endpoints: Vec<EndpointId>,
}
