//! The prober of one region: one loop that starts every endpoint's check when it is due
//! (interval with jitter), within the prober's budget of checks in flight (`load`), and turns
//! each result into an observation; a check that starts late is counted as late and the
//! prober reports itself overloaded when many do.
//!
//! One loop and a queue of due times, not a task per endpoint: an endpoint costs its state
//! (a few hundred bytes), and a check's task and connection exist only while it runs.

use std::{cmp::Reverse, collections::BinaryHeap, sync::Arc, time::Duration};

use tokio::{task::JoinSet, time::Instant};
use tokio_util::sync::CancellationToken;

use super::{
    ProbeMetrics,
    check::{CheckCache, CheckSetupError, Checker},
    load::{self, Load},
    metrics::SeenState,
    schedule::{self, Stagger},
    threshold::Threshold,
};
use crate::{
    config::EndpointSpec,
    exchange::{ObservationBoard, asks::AskReceiver},
    model::{EndpointId, FailureKind, Health, Observation, ProbeOutcome, Region},
};

/// An endpoint is checked on request ("check it now", from an aggregator confirming another
/// prober's suspicion) at most once per this period.
pub const ASKED_AT_MOST_EVERY: Duration = Duration::from_secs(1);

/// A check running this many typical round trips (the median of the endpoint's last
/// `RECENT_RTTS` successful checks), and at least `OVERDUE_FLOOR`, is overdue: the prober says
/// so at once, so that the others are asked to check before it times out. Being overdue is
/// not a vote: a false alarm costs the other probers one check each (rate-limited).
const OVERDUE_RTTS: u32 = 4;
const OVERDUE_FLOOR: Duration = Duration::from_millis(10);
const RECENT_RTTS: usize = 8;

/// When to start a re-check beside the overdue check `number`: only for the newest check of
/// an endpoint not yet Down, with a suspect interval shorter than its interval (the operator's
/// choice of fast re-checks), while fewer than `fall` checks run; at least suspect_interval
/// after the newest started.
fn overlapping_recheck(state: &EndpointState, number: u64, now: Instant) -> Option<Instant> {
    let check = &state.endpoint.check;
    let newest = state.running.back() == Some(&number);
    let fast = check.suspect_interval < check.interval;
    let room = state.running.len() < check.fall as usize;
    (newest && fast && room && state.threshold.state() != Health::Down).then(|| {
        state
            .newest_start
            .map_or(now, |s| s + check.suspect_interval)
            .max(now)
    })
}

/// When a check that starts now is overdue: `OVERDUE_RTTS` typical round trips, at least
/// `OVERDUE_FLOOR` and at most half the timeout; None until a check has succeeded (no round
/// trip to compare with) or when half the timeout is below the floor.
fn overdue_after(typical_rtt: Option<Duration>, timeout: Duration) -> Option<Duration> {
    let most = timeout / 2;
    let rtts = typical_rtt? * OVERDUE_RTTS;
    (most >= OVERDUE_FLOOR).then(|| rtts.clamp(OVERDUE_FLOOR, most))
}

/// Starts checking every endpoint from `region`, at most `max_in_flight` checks at a time,
/// and at once those `asks` name (rate-limited); tasks end when `shutdown` is cancelled.
#[allow(clippy::too_many_arguments)]
pub fn spawn(
    region: &Region,
    stagger: Stagger,
    endpoints: &[Arc<EndpointSpec>],
    max_in_flight: usize,
    asks: AskReceiver,
    board: &Arc<ObservationBoard>,
    metrics: &ProbeMetrics,
    shutdown: &CancellationToken,
    tasks: &mut JoinSet<()>,
) -> Result<(), CheckSetupError> {
    let mut cache = CheckCache::default();
    let mut states = Vec::with_capacity(endpoints.len());
    for endpoint in endpoints {
        let checker = Arc::new(Checker::new(endpoint, region, &mut cache)?);
        states.push(EndpointState::new(
            endpoint.clone(),
            checker,
            region,
            schedule::phase(endpoint.id.as_str(), stagger),
            metrics,
        ));
    }
    let load = Arc::new(Load::new(max_in_flight));
    board.set_overloaded(region, false);
    metrics.load(region, &load);
    tasks.spawn(govern(
        region.clone(),
        load.clone(),
        metrics.clone(),
        shutdown.clone(),
    ));
    let (starts, started) = tokio::sync::mpsc::unbounded_channel();
    let shared = Arc::new(Shared {
        region: region.clone(),
        board: board.clone(),
        metrics: metrics.clone(),
        load,
        starts,
    });
    tasks.spawn(run(shared, states, asks, started, shutdown.clone()));
    Ok(())
}

/// What the prober knows of one endpoint between checks.
struct EndpointState {
    endpoint: Arc<EndpointSpec>,
    checker: Arc<Checker>,
    threshold: Threshold,
    last_failure: Option<(FailureKind, String)>,
    last_rtt: Option<Duration>,
    smoothed_rtt: Option<Duration>,
    recent_rtts: RecentRtts,
    /// When the last check that ran finished (a check that fails locally did not run).
    observed_at: Option<Instant>,
    seen: SeenState,
    /// When the next check is due (None while one runs): a queued due time that differs was
    /// superseded by a request to check now.
    due: Option<Instant>,
    /// When a check was last started on request.
    asked: Option<Instant>,
    /// Where in each interval this region checks the endpoint (`schedule`).
    phase: f64,
    /// Checks started so far; the numbers of those running, oldest first, and when the newest
    /// started.
    started: u64,
    running: std::collections::VecDeque<u64>,
    newest_start: Option<Instant>,
    /// Results of checks that ended before an older one still running: taken in start order.
    held: Vec<Done>,
}

impl EndpointState {
    fn new(
        endpoint: Arc<EndpointSpec>,
        checker: Arc<Checker>,
        region: &Region,
        phase: f64,
        metrics: &ProbeMetrics,
    ) -> Self {
        let threshold = Threshold::new(endpoint.check.rise, endpoint.check.fall);
        Self {
            seen: metrics.endpoint_state(&endpoint.id, region, threshold.state()),
            endpoint,
            checker,
            threshold,
            last_failure: None,
            last_rtt: None,
            smoothed_rtt: None,
            recent_rtts: RecentRtts::default(),
            observed_at: None,
            due: None,
            asked: None,
            phase,
            started: 0,
            running: std::collections::VecDeque::new(),
            newest_start: None,
            held: Vec::new(),
        }
    }
}

/// One check that ran: which endpoint, its number, when it was due and started, what it found.
struct Done {
    index: usize,
    number: u64,
    started: Instant,
    /// How long the runtime stalled while the check ran.
    stalled: Duration,
    lateness: Duration,
    late: bool,
    outcome: ProbeOutcome,
}

/// The prober's loop: starts the checks that are due (or asked for), takes the results of
/// those that ended.
async fn run(
    shared: Arc<Shared>,
    mut states: Vec<EndpointState>,
    mut asks: AskReceiver,
    mut started: tokio::sync::mpsc::UnboundedReceiver<(usize, u64, Instant)>,
    shutdown: CancellationToken,
) {
    // The first checks at each endpoint's place on the grid: spread over one interval.
    let now = Instant::now();
    for s in &mut states {
        s.due = Some(now + on_grid(Duration::ZERO, s.endpoint.check.interval, s.phase));
    }
    let mut due: BinaryHeap<Reverse<(Instant, usize)>> = states
        .iter()
        .enumerate()
        .filter_map(|(i, s)| s.due.map(|at| Reverse((at, i))))
        .collect();
    let index: std::collections::HashMap<EndpointId, usize> = states
        .iter()
        .enumerate()
        .map(|(i, s)| (s.endpoint.id.clone(), i))
        .collect();
    // Checks that become overdue: (when, endpoint, check number).
    let mut overdue: BinaryHeap<Reverse<(Instant, usize, u64)>> = BinaryHeap::new();
    let mut asks_open = true;
    // Dropped with the loop: a reload or a stop aborts the checks in flight.
    let mut running: JoinSet<Done> = JoinSet::new();
    let timer = tokio::time::sleep_until(now);
    tokio::pin!(timer);
    loop {
        let next_due = due.peek().map(|Reverse((at, _))| *at);
        let next_overdue = overdue.peek().map(|Reverse((at, _, _))| *at);
        if let Some(at) = next_due.into_iter().chain(next_overdue).min() {
            timer.as_mut().reset(at);
        }
        tokio::select! {
            () = shutdown.cancelled() => return,
            Some(done) = running.join_next(), if !running.is_empty() => {
                match done {
                    Ok(done) => {
                        let index = done.index;
                        let state = &mut states[index];
                        state.held.push(done);
                        // Results are taken in the order the checks started (overlapping
                        // re-checks of a hanging endpoint can end out of order).
                        let mut next = None;
                        while let Some(at) = state
                            .running
                            .front()
                            .and_then(|n| state.held.iter().position(|d| d.number == *n))
                        {
                            let done = state.held.swap_remove(at);
                            state.running.pop_front();
                            next = Some(shared.finished(state, done));
                        }
                        if let Some(next) = next.filter(|_| state.running.is_empty()) {
                            state.due = Some(next);
                            due.push(Reverse((next, index)));
                        }
                    }
                    // A check's task only ends without a result when aborted (shutdown).
                    Err(e) => tracing::debug!(error = %e, "a check ended without a result"),
                }
            }
            // A check got its slot and runs: its overdue clock starts now, not while it waited.
            Some((index, number, at)) = started.recv() => {
                let state = &states[index];
                if state.running.contains(&number)
                    && state.threshold.state() != Health::Down
                    && let Some(after) =
                        overdue_after(state.recent_rtts.median(), state.endpoint.check.timeout)
                {
                    overdue.push(Reverse((at + after, index, number)));
                }
            }
            asked = asks.recv(), if asks_open => {
                let Some(endpoint) = asked else {
                    asks_open = false;
                    continue;
                };
                let now = Instant::now();
                let Some(&i) = index.get(&endpoint) else {
                    continue;
                };
                let state = &mut states[i];
                // Not while a check of it runs or is about due, at most once per period.
                let soon = state.due.is_none_or(|at| at <= now + ASKED_AT_MOST_EVERY / 4);
                let recent = state.asked.is_some_and(|at| now.duration_since(at) < ASKED_AT_MOST_EVERY);
                if soon || recent {
                    continue;
                }
                state.asked = Some(now);
                state.due = Some(now);
                due.push(Reverse((now, i)));
                shared.metrics.asked(&shared.region);
                tracing::debug!(endpoint = %endpoint, region = %shared.region, "checking now, as asked");
            }
            () = &mut timer, if !due.is_empty() || !overdue.is_empty() => {
                let now = Instant::now();
                while let Some(Reverse((at, index, number))) = overdue.peek().copied() {
                    if at > now {
                        break;
                    }
                    overdue.pop();
                    let state = &mut states[index];
                    // A prober too loaded to keep its timers says nothing of the endpoint.
                    if !state.running.contains(&number) || shared.load.overloaded() {
                        continue;
                    }
                    shared.overdue(state);
                    // A hanging check does not hold up the next: re-checks start beside it
                    // (every suspect_interval, as each becomes overdue, up to `fall` at once),
                    // so `fall` timeouts take one timeout plus about (fall - 1) x 100 ms.
                    if let Some(at) = overlapping_recheck(state, number, now) {
                        state.due = Some(at);
                        due.push(Reverse((at, index)));
                    }
                }
                while let Some(Reverse((at, index))) = due.peek().copied() {
                    if at > now {
                        break;
                    }
                    due.pop();
                    // Superseded: the endpoint was checked on request since this was queued.
                    if states[index].due != Some(at) {
                        continue;
                    }
                    states[index].due = None;
                    let state = &mut states[index];
                    state.started += 1;
                    state.running.push_back(state.started);
                    state.newest_start = Some(now);
                    running.spawn(check(
                        shared.clone(),
                        state.checker.clone(),
                        (index, state.started),
                        at,
                        load::late_after(state.endpoint.check.interval),
                    ));
                }
            }
        }
    }
}

/// One check: waits for a slot, runs, says how late it started.
async fn check(
    shared: Arc<Shared>,
    checker: Arc<Checker>,
    (index, number): (usize, u64),
    due: Instant,
    late_after: Duration,
) -> Done {
    let slot = shared.load.slot().await;
    let started = Instant::now();
    // The loop may be gone (a reload): then nobody waits for this check.
    let _ = shared.starts.send((index, number, started));
    let stalled_before = shared.load.stalled();
    let lateness = started.saturating_duration_since(due);
    let late = lateness > late_after;
    shared.started(lateness, late, started);
    // Boxed, so that a check waiting for its slot holds a few bytes, not a connection's state.
    let outcome = Box::pin(checker.run()).await;
    drop(slot);
    shared.metrics.in_flight(&shared.region, &shared.load);
    Done {
        index,
        number,
        started,
        stalled: shared.load.stalled().saturating_sub(stalled_before),
        lateness,
        late,
        outcome,
    }
}

/// Adapts the prober's budget of checks in flight to how late the runtime keeps its timers.
async fn govern(
    region: Region,
    load: Arc<Load>,
    metrics: ProbeMetrics,
    shutdown: CancellationToken,
) {
    loop {
        let before = Instant::now();
        tokio::select! {
            () = tokio::time::sleep(load::GOVERNOR_TICK) => {}
            () = shutdown.cancelled() => return,
        }
        let now = Instant::now();
        let lag = now
            .duration_since(before)
            .saturating_sub(load::GOVERNOR_TICK);
        let limit = load.limit();
        load.govern(lag);
        if load.limit() < limit {
            tracing::debug!(%region, ?lag, limit = load.limit(), "the process is saturated: fewer checks at once");
        }
        metrics.budget(&region, &load);
    }
}

/// What every endpoint task of one prober shares.
struct Shared {
    region: Region,
    board: Arc<ObservationBoard>,
    metrics: ProbeMetrics,
    load: Arc<Load>,
    /// Each check as it starts (endpoint index, check number, when).
    starts: tokio::sync::mpsc::UnboundedSender<(usize, u64, Instant)>,
}

impl Shared {
    /// Counts a check start; logs and publishes the prober entering or leaving overload.
    fn started(&self, lateness: Duration, late: bool, now: Instant) {
        let change = self.load.started(late, now);
        // The metrics first: whoever sees the board (status) change sees them changed too.
        self.metrics
            .started(&self.region, lateness, late, &self.load);
        let region = &self.region;
        match change {
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

/// The round trips of an endpoint's last `RECENT_RTTS` successful checks.
#[derive(Default)]
struct RecentRtts {
    samples: [Duration; RECENT_RTTS],
    len: usize,
    next: usize,
}

impl RecentRtts {
    fn push(&mut self, rtt: Duration) {
        self.samples[self.next] = rtt;
        self.next = (self.next + 1) % RECENT_RTTS;
        self.len = (self.len + 1).min(RECENT_RTTS);
    }

    /// The median (the upper one of an even count): neither a slow first handshake nor a
    /// one-off spike moves it.
    fn median(&self) -> Option<Duration> {
        let mut samples = self.samples;
        let samples = &mut samples[..self.len];
        samples.sort_unstable();
        samples.get(self.len / 2).copied()
    }
}

/// How long from now until the endpoint's next place on the grid at least `after` from now.
fn on_grid(after: Duration, interval: Duration, phase: f64) -> Duration {
    let from = crate::clock::unix_ms() as f64 + after.as_secs_f64() * 1000.0;
    after + schedule::until_next(from, interval, phase)
}

impl Shared {
    /// Says that the check running at `state`'s endpoint is overdue: the latest observation
    /// again, marked (not a vote: the aggregators ask the other probers to check now).
    fn overdue(&self, state: &EndpointState) {
        let Some(observed_at) = state.observed_at else {
            return;
        };
        tracing::debug!(endpoint = %state.endpoint.id, region = %self.region,
            "a check has run {OVERDUE_RTTS} round trips without an answer; saying so");
        self.metrics.overdue(&self.region);
        self.board.report(Observation {
            overdue: true,
            ..observation(&self.region, state, None, observed_at)
        });
    }

    /// Takes a check's result: thresholds, metrics, logs, the observation; returns when the
    /// endpoint's next check is due.
    fn finished(&self, state: &mut EndpointState, done: Done) -> Instant {
        let Shared {
            region,
            board,
            metrics,
            load,
            ..
        } = self;
        let endpoint = &state.endpoint;
        let check = &endpoint.check;
        let Done {
            started,
            stalled,
            lateness,
            late,
            outcome,
            ..
        } = done;
        // A check that timed out after starting late, while the prober is overloaded or while
        // the runtime stalled for a quarter of the timeout, says more about this prober than
        // about the endpoint: it does not count.
        let outcome = match outcome {
            ProbeOutcome::Fail {
                kind: FailureKind::Timeout,
                detail,
            } if late || load.overloaded() || stalled >= check.timeout / 4 => ProbeOutcome::fail(
                FailureKind::Local,
                format!(
                    "{detail}, while the prober was overloaded (started {} ms late)",
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
        if let Some(expiry) = state.checker.cert_expiry() {
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
                state.last_rtt = Some(*rtt);
                state.smoothed_rtt = Some(smooth(state.smoothed_rtt, *rtt));
                state.recent_rtts.push(*rtt);
            }
            ProbeOutcome::Fail { kind, detail } if local => {
                // Counted by kind ("local") in the check metrics; the endpoint keeps its state.
                tracing::debug!(endpoint = %endpoint.id, %region, failure = %kind, %detail, "check could not run here");
            }
            ProbeOutcome::Fail { kind, detail } => {
                tracing::debug!(endpoint = %endpoint.id, %region, failure = %kind, %detail, "check failed");
                state.last_failure = Some((*kind, detail.clone()));
            }
        }
        let threshold = &mut state.threshold;
        let suspected = threshold.suspect();
        let change = if local {
            None
        } else {
            state.observed_at = Some(Instant::now());
            threshold.record(outcome.is_success())
        };
        // A suspicion ends Down (confirmed) or with a success (cleared).
        if suspected && !threshold.suspect() && !local {
            let confirmed = change == Some(Health::Down);
            metrics.suspicion_ended(&endpoint.id, region, confirmed);
            if !confirmed {
                tracing::debug!(endpoint = %endpoint.id, %region, "suspicion cleared by a successful check");
            }
        } else if !suspected && threshold.suspect() {
            tracing::debug!(endpoint = %endpoint.id, %region, next = ?check.suspect_interval,
                "check failed; suspected, checking again soon");
        }
        if let Some(health) = change {
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
            tracing::info!(endpoint = %endpoint.id, %region, state = %health, "prober {region} sees endpoint {} become {health}: {why}", endpoint.id);
            state.seen.set(health);
        }
        // A check that could not run refreshes nothing: the last real observation ages (and
        // goes stale if this lasts), with the local error shown beside it.
        if let Some(observed_at) = state.observed_at {
            let local_error = match &outcome {
                ProbeOutcome::Fail { detail, .. } if local => Some(detail.clone()),
                _ => None,
            };
            board.report(observation(region, state, local_error, observed_at));
        }
        // While suspected, the next check comes after `suspect_interval`: `fall` consecutive
        // failures take (fall - 1) x suspect_interval, not (fall - 1) x interval. The next check
        // is due one period after this one started (a late start is not made up with a burst),
        // and not before this one ended: a check that outlasted the period (a timeout longer
        // than suspect_interval) makes the next one due now, not late (a late start's timeout
        // would count as the prober's own problem, and `fall` would never be reached).
        // Otherwise it comes at the endpoint's next place on the grid, at least a tenth of an
        // interval after this one started (the grid resumes after a suspicion or a check on
        // request; two checks are at most 1.1 intervals apart, as `stale_after`'s rule
        // assumes). A check as long as the interval (a hang, with a timeout equal to it) ends
        // just after that place: the next starts now, on the grid, rather than an interval
        // later (a hanging endpoint is still checked every interval, and its recovery seen
        // within a timeout).
        let now = Instant::now();
        let next = if state.threshold.suspect() {
            started + check.suspect_interval
        } else {
            let earliest = started + check.interval / 10;
            let slot = now
                + on_grid(
                    earliest.saturating_duration_since(now),
                    check.interval,
                    state.phase,
                );
            let just_missed = slot.checked_sub(check.interval).is_some_and(|missed| {
                missed >= earliest && now.duration_since(missed) <= check.interval / 10
            });
            if just_missed && !local { now } else { slot }
        };
        next.max(now)
    }
}

/// The observation of `state`'s endpoint as it stands.
fn observation(
    region: &Region,
    state: &EndpointState,
    local_error: Option<String>,
    observed_at: Instant,
) -> Observation {
    let threshold = &state.threshold;
    Observation {
        endpoint: state.endpoint.id.clone(),
        region: region.clone(),
        health: threshold.state(),
        successes: threshold.counts().0,
        failures: threshold.counts().1,
        last_rtt: state.last_rtt,
        smoothed_rtt: state.smoothed_rtt,
        last_failure: state.last_failure.clone(),
        cert_expiry: state.checker.cert_expiry(),
        local_error,
        observed_at,
        overdue: false,
        seq: crate::exchange::board::next_seq(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_check_is_overdue_after_a_few_round_trips_within_half_its_timeout() {
        let ms = Duration::from_millis;
        let second = Duration::from_secs(1);
        assert_eq!(overdue_after(None, second), None);
        assert_eq!(overdue_after(Some(ms(1)), second), Some(ms(10)));
        assert_eq!(overdue_after(Some(ms(5)), second), Some(ms(20)));
        assert_eq!(overdue_after(Some(ms(50)), second), Some(ms(200)));
        assert_eq!(overdue_after(Some(ms(400)), second), Some(ms(500)));
        // A timeout too short to say anything before it.
        assert_eq!(overdue_after(Some(ms(5)), ms(15)), None);
    }

    #[test]
    fn the_typical_round_trip_ignores_a_slow_first_check_and_spikes() {
        let ms = Duration::from_millis;
        let mut recent = RecentRtts::default();
        assert_eq!(recent.median(), None);
        recent.push(ms(150));
        assert_eq!(recent.median(), Some(ms(150)));
        for _ in 0..3 {
            recent.push(ms(2));
        }
        assert_eq!(recent.median(), Some(ms(2)));
        recent.push(ms(900));
        assert_eq!(recent.median(), Some(ms(2)));
        // Only the last RECENT_RTTS count: an endpoint that became slower is judged as it is.
        for _ in 0..RECENT_RTTS {
            recent.push(ms(80));
        }
        assert_eq!(recent.median(), Some(ms(80)));
    }
}
