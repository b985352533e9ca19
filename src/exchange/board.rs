//! The latest observation per (region, endpoint), shared by probers and the aggregator.
//!
//! In-process probers write to it directly, pullers write the observations of remote probers;
//! the aggregator wakes when a vote may have changed (a new state) and takes the endpoints
//! concerned, so that its round costs what changed, not the whole fleet. Reports are kept by
//! sequence number, so a late, older report never replaces a newer one. It also holds which
//! probers say they are overloaded.

use std::{
    collections::{BTreeSet, HashMap, HashSet},
    sync::{Mutex, PoisonError},
};

use tokio::sync::Notify;

use crate::model::{EndpointId, Latest, Observation, Region};

/// A process-wide increasing sequence for observations written to a board, so that probers and
/// pullers restarted by a reload never write with a number lower than before.
pub fn next_seq() -> u64 {
    static SEQ: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
    SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
}

pub struct ObservationBoard {
    inner: Mutex<Inner>,
    changed: Notify,
    /// The sequence of the latest observation that may change a vote (or of the latest change
    /// of overload): what a prober's long-polling aggregators wait for.
    pushed: tokio::sync::watch::Sender<u64>,
}

impl Default for ObservationBoard {
    fn default() -> Self {
        Self {
            inner: Mutex::default(),
            changed: Notify::new(),
            pushed: tokio::sync::watch::Sender::new(0),
        }
    }
}

#[derive(Default)]
struct Inner {
    latest: Latest,
    /// Endpoints whose vote may have changed since the aggregator last looked (a new state, a
    /// first observation, a first failure or the end of a failing streak, a check that could
    /// not run or could again).
    dirty: HashSet<EndpointId>,
    /// Every endpoint needs deciding again (a prober entered or left overload, observations
    /// were forgotten).
    all_dirty: bool,
    /// Probers that say their checks start late.
    overloaded: BTreeSet<Region>,
    /// Per region, its latest observations that are Up and Down (kept as they change).
    counts: HashMap<Region, (usize, usize)>,
    /// The sequence of the latest observation kept (observations are numbered under the lock,
    /// so every observation kept later has a higher one: a reader can ask for what is newer).
    through: u64,
}

impl Inner {
    fn count(&mut self, region: &Region, health: crate::model::Health, by: isize) {
        let c = self.counts.entry(region.clone()).or_default();
        let slot = match health {
            crate::model::Health::Up => &mut c.0,
            crate::model::Health::Down => &mut c.1,
            crate::model::Health::Unknown => return,
        };
        *slot = slot.saturating_add_signed(by);
    }
}

/// What changed on the board since the last [`ObservationBoard::take_changes`].
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Changes {
    pub endpoints: Vec<EndpointId>,
    /// Every endpoint may have changed.
    pub all: bool,
}

impl ObservationBoard {
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Keeps `observation` unless a newer one (by sequence) is already there; wakes the
    /// aggregator when the endpoint's vote may have changed.
    pub fn report(&self, observation: Observation) {
        if let Some(seq) = self.report_quietly(observation) {
            self.changed.notify_one();
            self.pushed.send_replace(seq);
        }
    }

    /// Several observations at once (a pulled report): one wake-up at most.
    pub fn report_all(&self, observations: impl IntoIterator<Item = Observation>) {
        let mut woke = None;
        for observation in observations {
            woke = self.report_quietly(observation).or(woke);
        }
        if let Some(seq) = woke {
            self.changed.notify_one();
            self.pushed.send_replace(seq);
        }
    }

    /// The observation's new sequence when the endpoint's vote may have changed.
    fn report_quietly(&self, mut observation: Observation) -> Option<u64> {
        let mut inner = self.lock();
        let vote_changed = match inner.latest.get(&observation.region, &observation.endpoint) {
            Some(old) if old.seq >= observation.seq => return None,
            Some(old) => {
                old.health != observation.health
                    || old.local_error.is_some() != observation.local_error.is_some()
                    || (old.failures > 0) != (observation.failures > 0)
                    || old.overdue != observation.overdue
            }
            None => true,
        };
        if vote_changed {
            inner.dirty.insert(observation.endpoint.clone());
        }
        // Numbered again under the lock: what is kept later is numbered higher.
        observation.seq = next_seq();
        let seq = observation.seq;
        inner.through = seq;
        inner.count(&observation.region, observation.health, 1);
        if let Some(old) = inner.latest.insert(observation) {
            inner.count(&old.region, old.health, -1);
        }
        vote_changed.then_some(seq)
    }

    /// Resolves once an observation numbered above `after` that may change a vote was kept
    /// (at once if one already was), or a prober's overload changed.
    pub async fn pushed_after(&self, after: u64) {
        let mut rx = self.pushed.subscribe();
        // Resolves only when the board is gone, which it is not while `self` lives.
        let _ = rx.wait_for(|&seq| seq > after).await;
    }

    /// Forgets every observation of an endpoint (its probe target changed).
    pub fn forget(&self, endpoint: &EndpointId) {
        let mut inner = self.lock();
        for gone in inner.latest.remove(endpoint) {
            inner.count(&gone.region, gone.health, -1);
        }
        inner.all_dirty = true;
    }

    /// Whether `region`'s prober says it is overloaded (its checks start late).
    pub fn set_overloaded(&self, region: &Region, overloaded: bool) {
        let mut inner = self.lock();
        let changed = if overloaded {
            inner.overloaded.insert(region.clone())
        } else {
            inner.overloaded.remove(region)
        };
        if changed {
            inner.all_dirty = true;
            let seq = next_seq();
            inner.through = seq;
            drop(inner);
            self.changed.notify_one();
            self.pushed.send_replace(seq);
        }
    }

    pub fn overloaded(&self) -> BTreeSet<Region> {
        self.lock().overloaded.clone()
    }

    pub fn is_overloaded(&self, region: &Region) -> bool {
        self.lock().overloaded.contains(region)
    }

    /// `f` over the latest observation per (region, endpoint), without copying them (reports
    /// wait meanwhile: keep `f` short).
    pub fn with_latest<T>(&self, f: impl FnOnce(&Latest) -> T) -> T {
        f(&self.lock().latest)
    }

    /// `f` over the latest observations and the sequence of the newest one kept.
    pub fn with_latest_through<T>(&self, f: impl FnOnce(&Latest, u64) -> T) -> T {
        let inner = self.lock();
        f(&inner.latest, inner.through)
    }

    /// A copy of the latest observations of some endpoints, from every region.
    pub fn latest_of(&self, endpoints: &[EndpointId]) -> Latest {
        let inner = self.lock();
        endpoints
            .iter()
            .flat_map(|endpoint| inner.latest.of(endpoint))
            .cloned()
            .collect()
    }

    /// Per region, how many of its latest observations are Up and how many Down (fresh or
    /// not): enough to tell an impaired prober between two full rounds.
    pub fn region_counts(&self) -> HashMap<Region, (usize, usize)> {
        self.lock().counts.clone()
    }

    /// What changed since the last call (and forgets it).
    pub fn take_changes(&self) -> Changes {
        let mut inner = self.lock();
        let all = std::mem::take(&mut inner.all_dirty);
        let dirty = std::mem::take(&mut inner.dirty);
        Changes {
            endpoints: if all {
                Vec::new()
            } else {
                dirty.into_iter().collect()
            },
            all,
        }
    }

    /// Resolves after the next report that may change a vote (or immediately if one arrived
    /// since the last call).
    pub async fn changed(&self) {
        self.changed.notified().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Health;

    fn observation(endpoint: &str, health: Health, seq: u64) -> Observation {
        Observation {
            endpoint: EndpointId::new(endpoint),
            region: Region::new("a"),
            health,
            successes: 1,
            failures: 0,
            last_rtt: None,
            smoothed_rtt: None,
            last_failure: None,
            local_error: None,
            cert_expiry: None,
            observed_at: tokio::time::Instant::now(),
            overdue: false,
            seq,
        }
    }

    #[test]
    fn only_a_vote_that_may_have_changed_marks_its_endpoint() {
        let board = ObservationBoard::new();
        board.report_all([
            observation("x", Health::Up, 1),
            observation("y", Health::Up, 2),
        ]);
        let mut first = board.take_changes();
        first.endpoints.sort();
        assert_eq!(first.endpoints, ["x", "y"].map(EndpointId::new));
        // The same state again: kept (newer, numbered above everything kept before),
        // nothing to decide.
        let seq_of = |id: &str| {
            board.with_latest(|l| {
                l.get(&Region::new("a"), &EndpointId::new(id))
                    .map(|o| o.seq)
            })
        };
        let before = seq_of("y").expect("y");
        board.report(observation("x", Health::Up, next_seq()));
        assert_eq!(board.take_changes(), Changes::default());
        assert!(seq_of("x").expect("x") > before);
        assert_eq!(
            board.with_latest_through(|_, through| through),
            seq_of("x").expect("x")
        );
        // An older report is ignored; a new state marks the endpoint.
        board.report(observation("y", Health::Down, 1));
        assert_eq!(board.take_changes(), Changes::default());
        board.report(observation("y", Health::Down, next_seq()));
        assert_eq!(board.take_changes().endpoints, [EndpointId::new("y")]);
        // A prober entering overload changes every vote it casts.
        board.set_overloaded(&Region::new("a"), true);
        board.set_overloaded(&Region::new("a"), true);
        assert!(board.take_changes().all);
        assert_eq!(board.take_changes(), Changes::default());
        assert!(board.is_overloaded(&Region::new("a")));
        assert_eq!(board.region_counts()[&Region::new("a")], (1, 1));
        board.forget(&EndpointId::new("y"));
        assert_eq!(board.region_counts()[&Region::new("a")], (1, 0));
    }

    #[tokio::test(start_paused = true)]
    async fn a_long_poll_wakes_on_a_vote_change_only() {
        let board = std::sync::Arc::new(ObservationBoard::new());
        board.report(observation("x", Health::Up, next_seq()));
        let through = board.with_latest_through(|_, through| through);
        let waiting = {
            let board = board.clone();
            tokio::spawn(async move { board.pushed_after(through).await })
        };
        // The same state again: no reason to answer early.
        board.report(observation("x", Health::Up, next_seq()));
        tokio::time::sleep(std::time::Duration::from_secs(1)).await;
        assert!(!waiting.is_finished());
        board.report(observation("x", Health::Down, next_seq()));
        tokio::time::timeout(std::time::Duration::from_secs(1), waiting)
            .await
            .expect("woken by the change")
            .expect("task");
        // Asked again after it: the change is already there, no wait.
        tokio::time::timeout(std::time::Duration::ZERO, board.pushed_after(through))
            .await
            .expect("at once");
    }
}
