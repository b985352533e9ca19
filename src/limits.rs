//! Process limits: the soft limit of open files goes up to the hard limit at start (systemd's
//! default soft limit of 1,024 is far below what a server facing the internet needs, and running
//! out must never be what decides a health check), and the connection slots with which each
//! listener keeps to its share of them, and the counter of connections refused for want of one.

use std::{
    collections::HashMap,
    net::IpAddr,
    sync::{Arc, Mutex, PoisonError},
};

/// Connections refused at accept, by listener (`dns`, `admin`, `prober`).
#[derive(Clone)]
pub struct ListenerMetrics {
    refused: prometheus::IntCounterVec,
}

impl ListenerMetrics {
    pub fn new(registry: &crate::metrics::Registry) -> Self {
        Self {
            refused: registry.int_counter_vec(
                "vantage_connections_refused_total",
                "TCP connections closed at accept because the listener (dns, admin or prober) or the client's address had no free slot.",
                &["listener"],
            ),
        }
    }

    /// The counter of connections `listener` refused when full.
    pub fn refused(&self, listener: &str) -> prometheus::IntCounter {
        self.refused.with_label_values(&[listener])
    }
}

/// The connections a listener serves at once, in all and from one address.
pub struct Slots {
    per_source: Mutex<HashMap<IpAddr, usize>>,
    free: Arc<tokio::sync::Semaphore>,
    max: usize,
    max_per_source: usize,
}

impl Slots {
    pub fn new(max: usize, max_per_source: usize) -> Arc<Self> {
        Arc::new(Self {
            per_source: Mutex::new(HashMap::new()),
            free: Arc::new(tokio::sync::Semaphore::new(max)),
            max,
            max_per_source,
        })
    }

    /// A slot for a client at `source`, or None when the listener or this source is full.
    pub fn admit(self: &Arc<Self>, source: IpAddr) -> Option<Slot> {
        let permit = self.free.clone().try_acquire_owned().ok()?;
        let mut per_source = self
            .per_source
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let count = per_source.entry(source).or_default();
        if *count >= self.max_per_source {
            return None;
        }
        *count += 1;
        Some(Slot {
            slots: self.clone(),
            source,
            _permit: permit,
        })
    }

    /// Fewer than a quarter of the slots are free: connections should not linger.
    pub fn busy(&self) -> bool {
        self.free.available_permits() < self.max / 4
    }
}

/// A connection's place; given back when dropped.
pub struct Slot {
    slots: Arc<Slots>,
    source: IpAddr,
    _permit: tokio::sync::OwnedSemaphorePermit,
}

impl Slot {
    pub fn slots(&self) -> &Slots {
        &self.slots
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut per_source = self
            .slots
            .per_source
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(count) = per_source.get_mut(&self.source) {
            *count -= 1;
            if *count == 0 {
                per_source.remove(&self.source);
            }
        }
    }
}

/// Raises the soft limit of open files to the hard limit; returns (before, after).
#[cfg(target_os = "linux")]
#[allow(unsafe_code)] // getrlimit, setrlimit
pub fn raise_file_limit() -> std::io::Result<(u64, u64)> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit and setrlimit read and write the struct we pass, nothing else.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    let before = limit.rlim_cur;
    if limit.rlim_cur < limit.rlim_max {
        limit.rlim_cur = limit.rlim_max;
        // SAFETY: as above.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &limit) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok((before, limit.rlim_cur))
}

/// The current soft limit of open files (None if unknown).
#[cfg(target_os = "linux")]
#[allow(unsafe_code)] // getrlimit
pub fn file_limit() -> Option<u64> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes the struct we pass, nothing else.
    (unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } == 0).then_some(limit.rlim_cur)
}

#[cfg(not(target_os = "linux"))]
pub fn file_limit() -> Option<u64> {
    None
}

#[cfg(not(target_os = "linux"))]
pub fn raise_file_limit() -> std::io::Result<(u64, u64)> {
    Ok((0, 0))
}

#[cfg(all(test, target_os = "linux"))]
#[allow(unsafe_code)] // getrlimit
mod tests {
    use super::Slots;

    #[test]
    fn slots_are_capped_in_all_and_per_source_and_given_back() {
        let slots = Slots::new(4, 2);
        let (a, b) = (
            "192.0.2.1".parse().expect("ip"),
            "192.0.2.2".parse().expect("ip"),
        );
        let a1 = slots.admit(a).expect("a1");
        let _a2 = slots.admit(a).expect("a2");
        assert!(slots.admit(a).is_none(), "a third from one address");
        let _b1 = slots.admit(b).expect("b1");
        assert!(!slots.busy(), "one of four free");
        drop(a1);
        let _a3 = slots.admit(a).expect("a slot given back");
        let _b2 = slots.admit(b).expect("b2");
        assert!(slots.busy(), "none free");
        assert!(
            slots.admit("192.0.2.3".parse().expect("ip")).is_none(),
            "full"
        );
    }

    #[test]
    fn the_soft_limit_reaches_the_hard_limit() {
        let (before, after) = super::raise_file_limit().expect("rlimit");
        assert!(after >= before);
        let mut limit = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: reads into the struct.
        assert_eq!(
            unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) },
            0
        );
        assert_eq!(limit.rlim_cur, limit.rlim_max);
    }
}
