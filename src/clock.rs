//! Wall-clock time for what leaves the process or outlives it (signatures, audit entries, saved
//! state, status times). Decisions use `tokio::time::Instant` with `now` passed in.

use std::time::{SystemTime, UNIX_EPOCH};

/// Milliseconds since the Unix epoch (0 if the clock is before it).
pub fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}
