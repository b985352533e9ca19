//! Whether a prober keeps up: a budget of checks in flight, and the lateness of each check's
//! start against its schedule. A prober whose checks start late is overloaded: it says so, and
//! its Down votes stop counting (a late check says more about the prober than the endpoint).

use std::{
    sync::{
        Mutex, PoisonError,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use tokio::{sync::Semaphore, time::Instant};

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

/// The checks in flight of one prober, and its lateness over the last 5–10 s.
pub struct Load {
    permits: Semaphore,
    max: usize,
    window: Mutex<Window>,
    overloaded: AtomicBool,
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
        Self {
            permits: Semaphore::new(max),
            max,
            window: Mutex::new(Window::default()),
            overloaded: AtomicBool::new(false),
        }
    }

    /// Waits for a free slot among the checks in flight.
    pub async fn slot(&self) -> tokio::sync::SemaphorePermit<'_> {
        // Never closed, so acquire cannot fail.
        self.permits
            .acquire()
            .await
            .unwrap_or_else(|_| unreachable!("the check budget is never closed"))
    }

    pub fn in_flight(&self) -> usize {
        self.max - self.permits.available_permits()
    }

    pub fn max_in_flight(&self) -> usize {
        self.max
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

    #[test]
    fn late_means_half_the_interval_and_at_least_a_quarter_second() {
        assert_eq!(late_after(Duration::from_millis(100)), LATE_AFTER);
        assert_eq!(
            late_after(Duration::from_secs(5)),
            Duration::from_millis(2500)
        );
    }
}
