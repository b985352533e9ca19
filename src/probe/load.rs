//! Whether a prober keeps up: a budget of checks in flight, and the lateness of each check's
//! start against its schedule. A prober whose checks start late is overloaded: it says so, and
//! its Down votes stop counting (a late check says more about the prober than the endpoint).
//!
//! The budget adapts to the CPU: a governor measures how late the runtime wakes a timer; when
//! the process is saturated, fewer checks run at once (so that those running get the CPU and
//! finish within their timeout instead of all timing out together), and more again, up to the
//! configured ceiling, while checks wait for a slot and the runtime keeps time. A check that
//! timed out while the runtime stalled for a quarter of its timeout counts as local, not as the
//! endpoint's.

use std::{
    sync::{
        Mutex, PoisonError,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::Duration,
};

use tokio::{
    sync::{Semaphore, SemaphorePermit},
    time::Instant,
};

/// The lateness window: overload is judged over the last two buckets of this length.
const BUCKET: Duration = Duration::from_secs(5);
/// Enters overload when at least this share of the window's checks started late ...
const ENTER_SHARE: f64 = 0.05;
/// ... and at least this many did (a few late starts of a small fleet are a hiccup) ...
const ENTER_MIN: u64 = 5;
/// ... and leaves it when fewer than this share did.
const LEAVE_SHARE: f64 = 0.01;

/// A check is late when it starts this much after its due time, or half its interval if that
/// is longer (the ±10% jitter is part of the schedule, not lateness).
pub const LATE_AFTER: Duration = Duration::from_millis(250);

pub fn late_after(interval: Duration) -> Duration {
    (interval / 2).max(LATE_AFTER)
}

/// Each prober's budget of checks in flight: `cluster.max_checks_in_flight`, else half the
/// open-file limit shared by the `probers` of this process (the listeners keep 3/8 of it), at
/// least 16 and at most 4,096.
pub fn budget(cluster: &crate::config::Cluster, probers: usize) -> usize {
    cluster.max_checks_in_flight.unwrap_or_else(|| {
        let limit = crate::limits::file_limit().unwrap_or(1024) as usize;
        (limit / 2 / probers.max(1)).clamp(16, 4096)
    })
}

/// The governor looks at the runtime this often ...
pub const GOVERNOR_TICK: Duration = Duration::from_millis(100);
/// ... and calls the process saturated when a timer fires this late.
pub const SATURATED_LAG: Duration = Duration::from_millis(50);
/// The budget starts here (or at the ceiling, if lower) and never goes below `MIN_LIMIT`.
const START_LIMIT: usize = 64;
const MIN_LIMIT: usize = 8;

/// The checks in flight of one prober, and its lateness over the last 5–10 s.
pub struct Load {
    permits: Semaphore,
    /// The ceiling (`cluster.max_checks_in_flight` or from the open-file limit).
    max: usize,
    budget: Mutex<Budget>,
    window: Mutex<Window>,
    overloaded: AtomicBool,
    /// How long the runtime has stalled in all (the governor's timer lag, summed; µs): a
    /// check's share of it says whether its timeout was the prober's doing.
    stalled_us: AtomicU64,
}

struct Budget {
    limit: usize,
    /// Permits to retire as they come back (the limit went down while they were in use).
    debt: usize,
}

/// A check's slot: returned when dropped (or retired, if the budget shrank meanwhile).
pub struct Slot<'a> {
    load: &'a Load,
    permit: Option<SemaphorePermit<'a>>,
}

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        let mut budget = self
            .load
            .budget
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if budget.debt > 0
            && let Some(permit) = self.permit.take()
        {
            budget.debt -= 1;
            permit.forget();
        }
    }
}

#[derive(Default)]
struct Window {
    /// Start of the current bucket.
    since: Option<Instant>,
    current: Counts,
    previous: Counts,
}

#[derive(Default, Clone, Copy)]
struct Counts {
    started: u64,
    late: u64,
}

/// What one check start changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    Entered,
    Left,
}

impl Load {
    pub fn new(max_in_flight: usize) -> Self {
        let max = max_in_flight.max(1);
        let limit = max.min(START_LIMIT);
        Self {
            permits: Semaphore::new(limit),
            max,
            budget: Mutex::new(Budget { limit, debt: 0 }),
            window: Mutex::new(Window::default()),
            overloaded: AtomicBool::new(false),
            stalled_us: AtomicU64::new(0),
        }
    }

    /// Waits for a free slot among the checks in flight.
    pub async fn slot(&self) -> Slot<'_> {
        // Never closed, so acquire cannot fail.
        let permit = self
            .permits
            .acquire()
            .await
            .unwrap_or_else(|_| unreachable!("the check budget is never closed"));
        Slot {
            load: self,
            permit: Some(permit),
        }
    }

    fn lock_budget(&self) -> std::sync::MutexGuard<'_, Budget> {
        self.budget.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub fn in_flight(&self) -> usize {
        let budget = self.lock_budget();
        (budget.limit + budget.debt).saturating_sub(self.permits.available_permits())
    }

    /// The ceiling of checks in flight.
    pub fn max_in_flight(&self) -> usize {
        self.max
    }

    /// The current budget (at most the ceiling).
    pub fn limit(&self) -> usize {
        self.lock_budget().limit
    }

    /// The governor's step: `lag` is how late its timer fired at `now`. Saturated: a quarter
    /// fewer checks at once; keeping time while every slot is taken: an eighth more.
    pub fn govern(&self, lag: Duration) {
        self.stalled_us
            .fetch_add(lag.as_micros() as u64, Ordering::Relaxed);
        let mut budget = self.lock_budget();
        let in_use = (budget.limit + budget.debt).saturating_sub(self.permits.available_permits());
        if lag >= SATURATED_LAG {
            let lower = (budget.limit * 3 / 4).max(MIN_LIMIT.min(self.max));
            let cut = budget.limit - lower;
            budget.limit = lower;
            let forgotten = self.permits.forget_permits(cut);
            budget.debt += cut - forgotten;
        } else if lag < SATURATED_LAG / 5 && in_use >= budget.limit && budget.limit < self.max {
            let higher = (budget.limit + (budget.limit / 8).max(1)).min(self.max);
            let mut add = higher - budget.limit;
            budget.limit = higher;
            let repaid = add.min(budget.debt);
            budget.debt -= repaid;
            add -= repaid;
            self.permits.add_permits(add);
        }
    }

    /// How long the runtime has stalled in all: the difference between two readings is how
    /// long it stalled in between (to within one governor tick).
    pub fn stalled(&self) -> Duration {
        Duration::from_micros(self.stalled_us.load(Ordering::Relaxed))
    }

    pub fn overloaded(&self) -> bool {
        self.overloaded.load(Ordering::Relaxed)
    }

    /// Records a check start (late or not) at `now`; says whether the prober entered or left
    /// overload.
    pub fn started(&self, late: bool, now: Instant) -> Option<Change> {
        let mut w = self.window.lock().unwrap_or_else(PoisonError::into_inner);
        let since = *w.since.get_or_insert(now);
        let elapsed = now.saturating_duration_since(since);
        if elapsed >= BUCKET {
            // Roll: after two buckets or more without a start, nothing of the past is left.
            w.previous = if elapsed >= BUCKET * 2 {
                Counts::default()
            } else {
                w.current
            };
            w.current = Counts::default();
            w.since = Some(now);
        }
        w.current.started += 1;
        w.current.late += u64::from(late);
        let started = w.current.started + w.previous.started;
        let late = w.current.late + w.previous.late;
        let share = late as f64 / started as f64;
        let was = self.overloaded();
        let is = if was {
            // Leave only once a whole bucket has been seen since it began.
            !(share < LEAVE_SHARE && w.previous.started > 0)
        } else {
            late >= ENTER_MIN && share >= ENTER_SHARE
        };
        drop(w);
        if is == was {
            return None;
        }
        self.overloaded.store(is, Ordering::Relaxed);
        Some(if is { Change::Entered } else { Change::Left })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_few_late_starts_are_a_hiccup_a_late_share_is_overload_and_it_ends() {
        let load = Load::new(4);
        let t0 = Instant::now();
        // 1 late start in 100: not overloaded.
        for i in 0..100 {
            assert_eq!(
                load.started(i == 50, t0 + Duration::from_millis(i * 10)),
                None
            );
        }
        // 4 late of 3 (too few, even at 100%).
        let small = Load::new(4);
        for i in 0..4 {
            assert_eq!(small.started(true, t0 + Duration::from_millis(i)), None);
        }
        assert_eq!(small.started(true, t0), Some(Change::Entered));
        assert!(small.overloaded());
        // 10% late over the window: overloaded.
        let mut entered = None;
        for i in 0..200u64 {
            let change = load.started(
                i % 10 == 0,
                t0 + Duration::from_secs(1) + Duration::from_millis(i),
            );
            entered = entered.or(change);
        }
        assert_eq!(entered, Some(Change::Entered));
        assert!(load.overloaded());
        // On time again: it stays overloaded while the late starts are in the window, then
        // leaves.
        let mut t = t0 + Duration::from_secs(2);
        let mut left_at = None;
        while left_at.is_none() {
            t += Duration::from_millis(10);
            if load.started(false, t) == Some(Change::Left) {
                left_at = Some(t);
            }
            assert!(t < t0 + Duration::from_secs(30), "never left");
        }
        let left_after = left_at
            .expect("left")
            .duration_since(t0 + Duration::from_secs(2));
        assert!(left_after >= BUCKET, "{left_after:?}");
        assert!(!load.overloaded());
    }

    #[tokio::test]
    async fn the_budget_shrinks_when_the_process_is_saturated_and_grows_back_while_checks_wait() {
        let load = Load::new(1000);
        assert_eq!(load.limit(), START_LIMIT);
        // Slots taken: a saturated tick cuts the budget by a quarter; the excess slots in use
        // are retired as they come back.
        let slots: Vec<Slot<'_>> = {
            let mut v = Vec::new();
            for _ in 0..START_LIMIT {
                v.push(load.slot().await);
            }
            v
        };
        assert_eq!(load.in_flight(), START_LIMIT);
        assert_eq!(load.stalled(), Duration::ZERO);
        load.govern(SATURATED_LAG);
        assert_eq!(load.limit(), 48);
        assert_eq!(load.stalled(), SATURATED_LAG);
        drop(slots);
        assert_eq!(load.in_flight(), 0);
        assert_eq!(load.permits.available_permits(), 48);
        // Saturated ticks never take it below the minimum.
        for _ in 0..50 {
            load.govern(Duration::from_secs(1));
        }
        assert_eq!(load.limit(), MIN_LIMIT);
        // Keeping time with every slot taken: it grows back, up to the ceiling.
        let mut held = Vec::new();
        for _ in 0..200 {
            while load.permits.available_permits() > 0 {
                held.push(load.slot().await);
            }
            load.govern(Duration::ZERO);
        }
        assert_eq!(load.limit(), 1000);
        // Keeping time with free slots: no growth needed, none made.
        let idle = Load::new(1000);
        idle.govern(Duration::ZERO);
        assert_eq!(idle.limit(), START_LIMIT);
    }

    #[test]
    fn late_means_half_the_interval_and_at_least_a_quarter_second() {
        assert_eq!(late_after(Duration::from_millis(100)), LATE_AFTER);
        assert_eq!(
            late_after(Duration::from_secs(5)),
            Duration::from_millis(2500)
        );
    }
}
