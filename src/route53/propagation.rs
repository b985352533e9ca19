//! Following applied changes until Route53 says INSYNC, apart from applying them: one
//! GetChange per batch, oldest first, on its own timer, so that no propagation check ever
//! delays the next change.

use std::{
    collections::{BTreeMap, VecDeque},
    sync::{Arc, Mutex, PoisonError},
    time::Duration,
};

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::{api::Api, metrics::Route53Metrics, reconcile::Reports};

/// A change is first asked about this long after it was submitted ...
pub const POLL: Duration = Duration::from_secs(2);
/// ... then at doubling intervals up to this.
pub const POLL_MAX: Duration = Duration::from_secs(30);
/// How often the tracker looks for changes whose time has come.
const TICK: Duration = Duration::from_millis(250);

/// Changes applied to each zone and not INSYNC yet.
#[derive(Debug, Default)]
pub struct Tracker {
    zones: BTreeMap<String, VecDeque<Submitted>>,
}

#[derive(Debug, Clone)]
struct Submitted {
    id: String,
    at: Instant,
    /// When to ask about it (first a poll after submission, then further apart while PENDING).
    next: Instant,
    wait: Duration,
    /// When the answer changed (for the verdict-to-INSYNC histogram).
    changed_at: Option<Instant>,
}

/// What a check found about one zone's oldest pending change.
#[derive(Debug, PartialEq)]
pub enum Found {
    /// INSYNC, after this long since the answer changed (or since it was submitted).
    InSync {
        after: Duration,
        last: bool,
    },
    /// Not INSYNC within the timeout: no longer followed.
    TimedOut {
        last: bool,
    },
    Pending,
}

impl Tracker {
    /// Batches applied to `zone` in one cycle.
    pub fn submitted(
        &mut self,
        zone: &str,
        ids: &[String],
        changed_at: Option<Instant>,
        now: Instant,
    ) {
        let queue = self.zones.entry(zone.to_string()).or_default();
        queue.extend(ids.iter().map(|id| Submitted {
            id: id.clone(),
            at: now,
            next: now + POLL,
            wait: POLL,
            changed_at,
        }));
    }

    /// The change to check next in each zone (the oldest pending one).
    /// (zone, change) to ask about at `now`: each zone's oldest pending change, once its
    /// time has come.
    pub fn due(&self, now: Instant) -> Vec<(String, String)> {
        self.zones
            .iter()
            .filter_map(|(zone, q)| {
                q.front()
                    .filter(|s| s.next <= now)
                    .map(|s| (zone.clone(), s.id.clone()))
            })
            .collect()
    }

    /// Records what GetChange said about `id` (None: the call failed).
    pub fn checked(
        &mut self,
        zone: &str,
        id: &str,
        insync: Option<bool>,
        timeout: Duration,
        now: Instant,
    ) -> Found {
        let Some(queue) = self.zones.get_mut(zone) else {
            return Found::Pending;
        };
        let Some(front) = queue.front().filter(|s| s.id == id).cloned() else {
            return Found::Pending;
        };
        let found = if insync == Some(true) {
            Found::InSync {
                after: now.duration_since(front.changed_at.unwrap_or(front.at)),
                last: queue.len() == 1,
            }
        } else if now.duration_since(front.at) >= timeout {
            Found::TimedOut {
                last: queue.len() == 1,
            }
        } else {
            // Still PENDING: ask again later, further apart each time (Route53 takes from
            // seconds to a minute or two), so that a slow propagation costs few calls.
            if let Some(first) = queue.front_mut() {
                first.wait = (first.wait * 2).min(POLL_MAX);
                first.next = now + first.wait;
            }
            return Found::Pending;
        };
        queue.pop_front();
        if queue.is_empty() {
            self.zones.remove(zone);
        }
        found
    }

    pub fn is_empty(&self) -> bool {
        self.zones.is_empty()
    }
}

/// Follows `tracker`'s changes until shutdown: one GetChange per pending batch (oldest first;
/// the next one at once when a change is INSYNC), every `POLL`.
pub async fn follow<A: Api + ?Sized>(
    api: Arc<A>,
    tracker: Arc<Mutex<Tracker>>,
    reports: Reports,
    metrics: Route53Metrics,
    timeout: impl Fn() -> Duration,
    shutdown: CancellationToken,
) {
    loop {
        tokio::select! {
            () = tokio::time::sleep(TICK) => {}
            () = shutdown.cancelled() => return,
        }
        let lock = || tracker.lock().unwrap_or_else(PoisonError::into_inner);
        let mut due = lock().due(Instant::now());
        while let Some((zone, id)) = due.pop() {
            let insync = match api.is_insync(&id).await {
                Ok(done) => Some(done),
                Err(e) => {
                    tracing::debug!(change = %id, error = %e, "GetChange failed");
                    None
                }
            };
            let found = lock().checked(&zone, &id, insync, timeout(), Instant::now());
            let (done, last) = match found {
                Found::Pending => continue,
                Found::InSync { after, last } => {
                    metrics.insync_after(after.as_secs_f64());
                    (true, last)
                }
                Found::TimedOut { last } => {
                    tracing::warn!(zone, change = %id, timeout = ?timeout(), "change not INSYNC within the timeout");
                    (false, last)
                }
            };
            if last {
                if let Some(r) = reports
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .get_mut(&zone)
                {
                    r.insync = Some(done);
                    if let Some(change) = r.last_change.as_mut().filter(|c| c.ids.contains(&id)) {
                        change.insync_unix_ms = done.then(crate::clock::unix_ms);
                    }
                }
            } else if let Some(next) = lock()
                .due(Instant::now())
                .into_iter()
                .find(|(z, _)| *z == zone)
            {
                // The next batch of this zone, at once (it is most likely INSYNC too).
                due.push(next);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_check_per_batch_oldest_first_and_the_last_one_closes_the_zone() {
        let t0 = Instant::now();
        let mut tracker = Tracker::default();
        tracker.submitted("Z1", &["c1".into(), "c2".into()], Some(t0), t0);
        tracker.submitted("Z2", &["d1".into()], None, t0);
        assert!(tracker.due(t0).is_empty(), "not asked before a poll's time");
        assert_eq!(
            tracker.due(t0 + POLL),
            vec![("Z1".into(), "c1".into()), ("Z2".into(), "d1".into())]
        );
        let later = t0 + Duration::from_secs(3);
        let timeout = Duration::from_secs(60);
        assert_eq!(
            tracker.checked("Z1", "c1", Some(false), timeout, later),
            Found::Pending
        );
        // Still PENDING: asked again only after twice the wait.
        assert!(!tracker.due(later + POLL).iter().any(|(z, _)| z == "Z1"));
        assert!(tracker.due(later + POLL * 2).iter().any(|(z, _)| z == "Z1"));
        assert_eq!(
            tracker.checked("Z1", "c1", Some(true), timeout, later),
            Found::InSync {
                after: Duration::from_secs(3),
                last: false
            }
        );
        assert_eq!(tracker.due(later)[0], ("Z1".into(), "c2".into()));
        assert_eq!(
            tracker.checked("Z1", "c2", Some(true), timeout, later),
            Found::InSync {
                after: Duration::from_secs(3),
                last: true
            }
        );
        // A failed call is not INSYNC; past the timeout the change is given up.
        assert_eq!(
            tracker.checked("Z2", "d1", None, timeout, t0 + timeout),
            Found::TimedOut { last: true }
        );
        assert!(tracker.is_empty());
    }
}
