//! The latest observation per (region, endpoint), shared by probers and the aggregator.
//!
//! In-process probers write to it directly, pullers write the observations of remote probers;
//! the aggregator wakes on every report. Reports are kept by sequence number, so a late,
//! older report never replaces a newer one.

use std::{
    collections::HashMap,
    sync::{Mutex, PoisonError},
};

use tokio::sync::Notify;

use crate::model::{EndpointId, Observation, Region};

/// A process-wide increasing sequence for observations written to a board, so that probers and
/// pullers restarted by a reload never write with a number lower than before.
pub fn next_seq() -> u64 {
    static SEQ: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
    SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
}

#[derive(Default)]
pub struct ObservationBoard {
    latest: Mutex<HashMap<(Region, EndpointId), Observation>>,
    changed: Notify,
}

impl ObservationBoard {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn report(&self, observation: Observation) {
        let key = (observation.region.clone(), observation.endpoint.clone());
        {
            let mut latest = self.latest.lock().unwrap_or_else(PoisonError::into_inner);
            match latest.get(&key) {
                Some(old) if old.seq >= observation.seq => return,
                _ => {
                    latest.insert(key, observation);
                }
            }
        }
        self.changed.notify_one();
    }

    /// Forgets every observation of an endpoint (its probe target changed).
    pub fn forget(&self, endpoint: &EndpointId) {
        self.latest
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .retain(|(_, e), _| e != endpoint);
    }

    /// A copy of the latest observation per (region, endpoint).
    pub fn latest(&self) -> HashMap<(Region, EndpointId), Observation> {
        self.latest
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Resolves after the next report (or immediately if one arrived since the last call).
    pub async fn changed(&self) {
        self.changed.notified().await;
    }
}
