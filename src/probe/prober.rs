//! The prober of one region: one task per endpoint, checking at its interval with jitter.

use std::{sync::Arc, time::Duration};

use rand::Rng;
use tokio::{task::JoinSet, time::Instant};
use tokio_util::sync::CancellationToken;

use super::{
    ProbeMetrics,
    check::{CheckSetupError, Checker, TlsConfigs},
    threshold::Threshold,
};
use crate::{
    config::EndpointSpec,
    exchange::ObservationBoard,
    model::{FailureKind, Observation, ProbeOutcome, Region},
};

/// Starts checking every endpoint from `region`; tasks end when `shutdown` is cancelled.
pub fn spawn(
    region: &Region,
    endpoints: &[Arc<EndpointSpec>],
    board: &Arc<ObservationBoard>,
    metrics: &ProbeMetrics,
    shutdown: &CancellationToken,
    tasks: &mut JoinSet<()>,
) -> Result<(), CheckSetupError> {
    let mut checkers = Vec::new();
    let mut tls = TlsConfigs::default();
    for endpoint in endpoints {
        checkers.push((endpoint.clone(), Checker::new(endpoint, region, &mut tls)?));
    }
    for (endpoint, checker) in checkers {
        tasks.spawn(run_endpoint(
            region.clone(),
            endpoint,
            checker,
            board.clone(),
            metrics.clone(),
            shutdown.clone(),
        ));
    }
    Ok(())
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
    region: Region,
    endpoint: Arc<EndpointSpec>,
    checker: Checker,
    board: Arc<ObservationBoard>,
    metrics: ProbeMetrics,
    shutdown: CancellationToken,
) {
    let check = &endpoint.check;
    let mut threshold = Threshold::new(check.rise, check.fall);
    let mut last_failure = None;
    let mut last_rtt = None;
    let mut smoothed_rtt: Option<Duration> = None;
    // When the last check that ran finished (a check that fails locally did not run).
    let mut observed_at: Option<Instant> = None;
    metrics.state(&endpoint.id, &region, threshold.state());
    // Spread the first checks over one interval so that all probers do not fire at once.
    let offset = check.interval.mul_f64(rand::rng().random_range(0.0..1.0));
    tokio::select! {
        () = tokio::time::sleep(offset) => {}
        () = shutdown.cancelled() => return,
    }
    loop {
        let started = Instant::now();
        let outcome = tokio::select! {
            outcome = checker.run() => outcome,
            () = shutdown.cancelled() => return,
        };
        metrics.completed(
            &endpoint.id,
            &region,
            &outcome,
            started.elapsed().as_secs_f64(),
        );
        if let Some(expiry) = checker.cert_expiry() {
            metrics.cert_expiry(&endpoint.id, &region, expiry);
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
            metrics.suspicion_ended(&endpoint.id, &region, confirmed);
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
            metrics.state(&endpoint.id, &region, state);
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
        let wait = period.saturating_sub(started.elapsed());
        tokio::select! {
            () = tokio::time::sleep(wait) => {}
            () = shutdown.cancelled() => return,
        }
    }
}
