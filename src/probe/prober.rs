//! The prober of one region: one task per endpoint, checking at its interval with jitter,
//! within the prober's budget of checks in flight (`load`); a check that starts late is
//! counted as late and the prober reports itself overloaded when many do.

use std::{sync::Arc, time::Duration};

use rand::Rng;
use tokio::{task::JoinSet, time::Instant};
use tokio_util::sync::CancellationToken;

use super::{
    ProbeMetrics,
    check::{CheckCache, CheckSetupError, Checker},
    load::{self, Load},
    threshold::Threshold,
};
use crate::{
    config::EndpointSpec,
    exchange::ObservationBoard,
    model::{FailureKind, Observation, ProbeOutcome, Region},
};

/// Starts checking every endpoint from `region`, at most `max_in_flight` checks at a time;
/// tasks end when `shutdown` is cancelled.
pub fn spawn(
    region: &Region,
    endpoints: &[Arc<EndpointSpec>],
    max_in_flight: usize,
    board: &Arc<ObservationBoard>,
    metrics: &ProbeMetrics,
    shutdown: &CancellationToken,
    tasks: &mut JoinSet<()>,
) -> Result<(), CheckSetupError> {
    let mut checkers = Vec::new();
    let mut cache = CheckCache::default();
    for endpoint in endpoints {
        checkers.push((
            endpoint.clone(),
            Checker::new(endpoint, region, &mut cache)?,
        ));
    }
    let load = Arc::new(Load::new(max_in_flight));
    board.set_overloaded(region, false);
    metrics.load(region, &load);
    for (endpoint, checker) in checkers {
        tasks.spawn(run_endpoint(
            Shared {
                region: region.clone(),
                board: board.clone(),
                metrics: metrics.clone(),
                load: load.clone(),
            },
            endpoint,
            checker,
            shutdown.clone(),
        ));
    }
    Ok(())
}

/// What every endpoint task of one prober shares.
struct Shared {
    region: Region,
    board: Arc<ObservationBoard>,
    metrics: ProbeMetrics,
    load: Arc<Load>,
}

impl Shared {
    /// Counts a check start; logs and publishes the prober entering or leaving overload.
    fn started(&self, lateness: Duration, late: bool, now: Instant) {
        self.metrics
            .started(&self.region, lateness, late, &self.load);
        let region = &self.region;
        match self.load.started(late, now) {
            Some(load::Change::Entered) => {
                tracing::warn!(%region, in_flight = self.load.in_flight(), max_in_flight = self.load.max_in_flight(),
                    "prober {region} is overloaded: its checks start late (more than {:?} after they are due); its Down votes do not count until it keeps up again", load::LATE_AFTER);
                self.board.set_overloaded(region, true);
            }
            Some(load::Change::Left) => {
                tracing::info!(%region, "prober {region} keeps up again: its checks start on time");
                self.board.set_overloaded(region, false);
            }
            None => {}
        }
    }
}

/// Weight of the newest sample in the smoothed RTT (EWMA).
const RTT_ALPHA: f64 = 0.3;

fn smooth(previous: Option<Duration>, sample: Duration) -> Duration {
    match previous {
        None => sample,
        Some(p) => p.mul_f64(1.0 - RTT_ALPHA) + sample.mul_f64(RTT_ALPHA),
    }
}

/// Interval with ±10% jitter, so that checks from many probers do not synchronise.
fn jittered(interval: Duration) -> Duration {
    let factor = rand::rng().random_range(0.9..=1.1);
    interval.mul_f64(factor)
}

async fn run_endpoint(
    shared: Shared,
    endpoint: Arc<EndpointSpec>,
    checker: Checker,
    shutdown: CancellationToken,
) {
    let Shared {
        region,
        board,
        metrics,
        ..
    } = &shared;
    let check = &endpoint.check;
    let late_after = load::late_after(check.interval);
    let mut threshold = Threshold::new(check.rise, check.fall);
    let mut last_failure = None;
    let mut last_rtt = None;
    let mut smoothed_rtt: Option<Duration> = None;
    // When the last check that ran finished (a check that fails locally did not run).
    let mut observed_at: Option<Instant> = None;
    let mut seen = metrics.endpoint_state(&endpoint.id, region, threshold.state());
    // Spread the first checks over one interval so that all probers do not fire at once.
    let mut due = Instant::now() + check.interval.mul_f64(rand::rng().random_range(0.0..1.0));
    loop {
        tokio::select! {
            () = tokio::time::sleep_until(due) => {}
            () = shutdown.cancelled() => return,
        }
        let slot = tokio::select! {
            slot = shared.load.slot() => slot,
            () = shutdown.cancelled() => return,
        };
        let started = Instant::now();
        let lateness = started.saturating_duration_since(due);
        let late = lateness > late_after;
        shared.started(lateness, late, started);
        // Boxed: an idle endpoint task holds only its own state, not a check's.
        let outcome = tokio::select! {
            outcome = Box::pin(checker.run()) => outcome,
            () = shutdown.cancelled() => return,
        };
        drop(slot);
        metrics.in_flight(region, &shared.load);
        // A check that timed out after starting late, or while the prober is overloaded, says
        // more about this prober than about the endpoint: it does not count.
        let outcome = match outcome {
            ProbeOutcome::Fail {
                kind: FailureKind::Timeout,
                detail,
            } if late || shared.load.overloaded() => ProbeOutcome::fail(
                FailureKind::Local,
                format!(
                    "{detail}, after starting {} ms late: the prober is overloaded",
                    lateness.as_millis()
                ),
            ),
            outcome => outcome,
        };
        metrics.completed(
            &endpoint.id,
            region,
            &outcome,
            started.elapsed().as_secs_f64(),
        );
        if let Some(expiry) = checker.cert_expiry() {
            metrics.cert_expiry(&endpoint.id, expiry);
        }
        let local = matches!(
            outcome,
            ProbeOutcome::Fail {
                kind: FailureKind::Local,
                ..
            }
        );
        match &outcome {
            ProbeOutcome::Success { rtt } => {
                last_rtt = Some(*rtt);
                smoothed_rtt = Some(smooth(smoothed_rtt, *rtt));
            }
            ProbeOutcome::Fail { kind, detail } if local => {
                // Counted by kind ("local") in the check metrics; the endpoint keeps its state.
                tracing::debug!(endpoint = %endpoint.id, %region, failure = %kind, %detail, "check could not run here");
            }
            ProbeOutcome::Fail { kind, detail } => {
                tracing::debug!(endpoint = %endpoint.id, %region, failure = %kind, %detail, "check failed");
                last_failure = Some((*kind, detail.clone()));
            }
        }
        let suspected = threshold.suspect();
        let change = if local {
            None
        } else {
            observed_at = Some(Instant::now());
            threshold.record(outcome.is_success())
        };
        // A suspicion ends Down (confirmed) or with a success (cleared).
        if suspected && !threshold.suspect() && !local {
            let confirmed = change == Some(crate::model::Health::Down);
            metrics.suspicion_ended(&endpoint.id, region, confirmed);
            if !confirmed {
                tracing::debug!(endpoint = %endpoint.id, %region, "suspicion cleared by a successful check");
            }
        } else if !suspected && threshold.suspect() {
            tracing::debug!(endpoint = %endpoint.id, %region, next = ?check.suspect_interval,
                "check failed; suspected, checking again soon");
        }
        if let Some(state) = change {
            let why = match &outcome {
                ProbeOutcome::Success { rtt } => {
                    format!("{} consecutive successes, rtt {rtt:?}", threshold.streak())
                }
                ProbeOutcome::Fail { kind, detail } => {
                    format!(
                        "{} consecutive failures, last: {kind} ({detail})",
                        threshold.streak()
                    )
                }
            };
            tracing::info!(endpoint = %endpoint.id, %region, %state, "prober {region} sees endpoint {} become {state}: {why}", endpoint.id);
            seen.set(state);
        }
        // A check that could not run refreshes nothing: the last real observation ages (and
        // goes stale if this lasts), with the local error shown beside it.
        if let Some(observed_at) = observed_at {
            board.report(Observation {
                endpoint: endpoint.id.clone(),
                region: region.clone(),
                health: threshold.state(),
                successes: threshold.counts().0,
                failures: threshold.counts().1,
                last_rtt,
                smoothed_rtt,
                last_failure: last_failure.clone(),
                cert_expiry: checker.cert_expiry(),
                local_error: match &outcome {
                    ProbeOutcome::Fail { detail, .. } if local => Some(detail.clone()),
                    _ => None,
                },
                observed_at,
                seq: crate::exchange::board::next_seq(),
            });
        }
        // While suspected, the next check comes after `suspect_interval`: `fall` consecutive
        // failures take (fall - 1) x suspect_interval, not (fall - 1) x interval.
        let period = if threshold.suspect() {
            check.suspect_interval
        } else {
            jittered(check.interval)
        };
        // The next check is due one period after this one started (a late start is not made
        // up with a burst).
        due = started + period;
    }
}
