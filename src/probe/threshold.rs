//! Rise/fall thresholds: consecutive check results -> one prober's view of an endpoint.
//!
//! Pure. The state starts `Unknown`; `rise` consecutive successes make it `Up`, `fall`
//! consecutive failures make it `Down`; anything shorter changes nothing.

use crate::model::Health;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Threshold {
    rise: u32,
    fall: u32,
    state: Health,
    successes: u32,
    failures: u32,
}

impl Threshold {
    /// `rise` and `fall` are at least 1 (validated configuration).
    pub fn new(rise: u32, fall: u32) -> Self {
        Self {
            rise: rise.max(1),
            fall: fall.max(1),
            state: Health::Unknown,
            successes: 0,
            failures: 0,
        }
    }

    pub fn state(&self) -> Health {
        self.state
    }

    /// Length of the current streak of identical results.
    pub fn streak(&self) -> u32 {
        self.successes.max(self.failures)
    }

    /// Consecutive successes and failures (one of them is 0).
    pub fn counts(&self) -> (u32, u32) {
        (self.successes, self.failures)
    }

    /// Whether a failure streak is under way that has not reached `fall`: the endpoint is
    /// suspected (checked again soon), not yet Down.
    pub fn suspect(&self) -> bool {
        self.state != Health::Down && self.failures > 0 && self.failures < self.fall
    }

    /// Records one check result; returns the new state if it changed.
    pub fn record(&mut self, success: bool) -> Option<Health> {
        let next = if success {
            self.successes = self.successes.saturating_add(1);
            self.failures = 0;
            (self.state != Health::Up && self.successes >= self.rise).then_some(Health::Up)
        } else {
            self.failures = self.failures.saturating_add(1);
            self.successes = 0;
            (self.state != Health::Down && self.failures >= self.fall).then_some(Health::Down)
        };
        if let Some(state) = next {
            self.state = state;
        }
        next
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn a_failure_short_of_fall_is_a_suspicion_until_it_flips_or_clears() {
        let mut t = Threshold::new(2, 3);
        t.record(true);
        t.record(true);
        assert!(!t.suspect());
        t.record(false);
        assert!(t.suspect(), "one failure of three");
        t.record(false);
        assert!(t.suspect());
        assert_eq!(t.record(false), Some(Health::Down));
        assert!(!t.suspect(), "Down: checks go back to the interval");
        t.record(true);
        t.record(false);
        assert!(!t.suspect(), "still Down");
        let mut t = Threshold::new(1, 1);
        assert_eq!(t.record(false), Some(Health::Down));
        assert!(!t.suspect(), "fall 1 flips at once");
        let mut t = Threshold::new(2, 3);
        t.record(false);
        t.record(true);
        assert!(!t.suspect(), "a success clears it");
    }

    #[test]
    fn table() {
        // (rise, fall, results, expected state after each result)
        let cases: &[(u32, u32, &str, &str)] = &[
            (2, 3, "++", "?U"),
            (2, 3, "+-+", "???"),
            (2, 3, "---", "??D"),
            (1, 1, "+-+", "UDU"),
            (2, 3, "++--+-", "?UUUUU"),
            (2, 3, "++---", "?UUUD"),
            (3, 2, "--+++", "?DDDU"),
        ];
        for (rise, fall, results, expected) in cases {
            let expected: Vec<char> = expected.chars().filter(|c| *c != ' ').collect();
            let mut t = Threshold::new(*rise, *fall);
            for (i, r) in results.chars().enumerate() {
                t.record(r == '+');
                let want = match expected[i] {
                    'U' => Health::Up,
                    'D' => Health::Down,
                    _ => Health::Unknown,
                };
                assert_eq!(t.state(), want, "rise={rise} fall={fall} {results} at {i}");
            }
        }
    }

    #[test]
    fn reports_only_transitions() {
        let mut t = Threshold::new(1, 2);
        assert_eq!(t.record(true), Some(Health::Up));
        assert_eq!(t.record(true), None);
        assert_eq!(t.record(false), None);
        assert_eq!(t.record(false), Some(Health::Down));
        assert_eq!(t.record(false), None);
    }

    proptest! {
        /// A threshold never flips before N consecutive opposite results.
        #[test]
        fn never_flips_early(rise in 1u32..6, fall in 1u32..6, results in prop::collection::vec(any::<bool>(), 0..60)) {
            let mut t = Threshold::new(rise, fall);
            let mut run_ok = 0u32;
            let mut run_fail = 0u32;
            for r in results {
                if r { run_ok += 1; run_fail = 0 } else { run_fail += 1; run_ok = 0 }
                if let Some(state) = t.record(r) {
                    match state {
                        Health::Up => prop_assert!(run_ok >= rise),
                        Health::Down => prop_assert!(run_fail >= fall),
                        Health::Unknown => prop_assert!(false, "never transitions to Unknown"),
                    }
                }
                if run_ok >= rise { prop_assert_eq!(t.state(), Health::Up); }
                if run_fail >= fall { prop_assert_eq!(t.state(), Health::Down); }
            }
        }
    }
}
