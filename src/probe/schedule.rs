//! When checks are due: every prober process puts an endpoint's checks on the same grid of
//! wall-clock time, at the endpoint's own phase (from its name, so a fleet's endpoints spread
//! over the interval), shifted by i/n of an interval for the i-th of n regions. The probers of a
//! fleet take turns: after a failure, the first of them checks within interval/n, not within
//! an interval as when every prober's phase is random (and, drifting, often close together).

use std::time::Duration;

/// This prober's place among the fleet's regions (their order in the configuration).
#[derive(Clone, Copy, Debug)]
pub struct Stagger {
    pub index: usize,
    pub of: usize,
}

/// Where in each interval [0, 1) this region checks `endpoint`.
pub fn phase(endpoint: &str, stagger: Stagger) -> f64 {
    // FNV-1a: the same in every process, host and version.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in endpoint.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    let own = (h >> 11) as f64 / (1u64 << 53) as f64;
    (own + stagger.index as f64 / stagger.of.max(1) as f64).fract()
}

/// How long after the wall-clock time `from_unix_ms` the grid's next point (at or after it)
/// comes for `phase`.
pub fn until_next(from_unix_ms: f64, interval: Duration, phase: f64) -> Duration {
    let i = interval.as_secs_f64() * 1000.0;
    if i <= 0.0 {
        return Duration::ZERO;
    }
    let p = phase * i;
    let t = ((from_unix_ms - p) / i).ceil() * i + p;
    Duration::from_secs_f64((t - from_unix_ms).max(0.0) / 1000.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn regions_take_turns_on_a_shared_grid() {
        let of = 3;
        let phases: Vec<f64> = (0..of)
            .map(|index| phase("www-primary", Stagger { index, of }))
            .collect();
        for pair in [(0, 1), (1, 2), (2, 0)] {
            let gap = (phases[pair.1] - phases[pair.0]).rem_euclid(1.0);
            assert!((gap - 1.0 / 3.0).abs() < 1e-9, "{phases:?}");
        }
        // Endpoints spread: two names, two phases.
        assert_ne!(
            phase("a", Stagger { index: 0, of }),
            phase("b", Stagger { index: 0, of })
        );
        // The next point is on the grid, within one interval, never before `from`.
        let interval = Duration::from_secs(1);
        for from in [0.0, 1_700_000_000_123.0, 1_700_000_000_999.5] {
            for &p in &phases {
                let wait = until_next(from, interval, p);
                assert!(wait <= interval);
                let at = from + wait.as_secs_f64() * 1000.0;
                let off = (at - p * 1000.0).rem_euclid(1000.0);
                assert!(!(1e-3..=1000.0 - 1e-3).contains(&off), "{from} {p} {at}");
            }
        }
    }
}
