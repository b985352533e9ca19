//! Quorum: the latest observations of the configured probers -> one verdict per endpoint.
//!
//! Pure; `now` is an argument. A verdict becomes Up when at least `required` fresh probers
//! report Up, Down when at least `required` report Down; otherwise it holds its previous value
//! (fail static), which is `Unknown` at start. Observations older than `stale_after` do not vote.
//! If both sides reach the quorum (possible when it is below a majority), the larger side wins
//! and a tie holds the previous value.

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    time::Duration,
};

use tokio::time::Instant;

use crate::model::{EndpointId, FailureKind, Health, Latest, Region};

/// Verdicts by endpoint; shared, so that a round or a snapshot copies pointers, not votes.
pub type Verdicts = BTreeMap<EndpointId, std::sync::Arc<Verdict>>;

/// One configured prober's contribution to a verdict.
#[derive(Debug, Clone, PartialEq)]
pub struct Vote {
    pub region: Region,
    /// The state the prober reports (Unknown when it has reported nothing yet).
    pub health: Health,
    /// False when the report is older than `stale_after` (or missing): it does not count.
    pub fresh: bool,
    pub age: Option<Duration>,
    pub last_rtt: Option<Duration>,
    pub smoothed_rtt: Option<Duration>,
    pub last_failure: Option<(FailureKind, String)>,
    /// Why the prober's latest check could not run (local error), if it could not.
    pub local_error: Option<String>,
    /// When the certificate the prober's last https check was shown expires (Unix seconds).
    pub cert_expiry: Option<i64>,
    /// Consecutive failed checks (0 after a success).
    pub failures: u32,
    /// The prober is presumed cut off (it sees every endpoint Down while others see some Up):
    /// its Down vote does not count.
    pub impaired: bool,
    /// The prober says it is overloaded (its checks start late): its Down vote does not count.
    pub overloaded: bool,
}

impl Vote {
    /// A Down vote of an impaired or overloaded prober does not count.
    fn discounted(&self) -> bool {
        self.impaired || self.overloaded
    }
}

/// The quorum decision for one endpoint, with its votes.
#[derive(Debug, Clone, PartialEq)]
pub struct Verdict {
    pub health: Health,
    pub votes: Vec<Vote>,
    /// Fresh Up and Down votes.
    pub up: usize,
    pub down: usize,
    pub required: usize,
    /// False when no side reached the quorum and the previous value was held.
    pub quorum_reached: bool,
    /// When `health` last changed (None while it has never been decided).
    pub changed_at: Option<Instant>,
}

impl Verdict {
    pub fn unknown(required: usize) -> Self {
        Verdict {
            health: Health::Unknown,
            votes: Vec::new(),
            up: 0,
            down: 0,
            required,
            quorum_reached: false,
            changed_at: None,
        }
    }

    /// What an answer or an observer of the status depends on: the decision and each vote's
    /// state, freshness, whether it is failing, could not check, or is discounted (not ages or
    /// round-trip times, which change with every check).
    pub fn same_as_shown(&self, other: &Verdict) -> bool {
        let votes = |v: &Verdict| {
            v.votes
                .iter()
                .map(|v| {
                    (
                        v.health,
                        v.fresh,
                        v.failures > 0,
                        v.local_error.is_some(),
                        v.impaired,
                        v.overloaded,
                    )
                })
                .collect::<Vec<_>>()
        };
        (self.health, self.up, self.down, self.quorum_reached)
            == (other.health, other.up, other.down, other.quorum_reached)
            && votes(self) == votes(other)
    }

    /// A one-line explanation: "2 of 3 probers report Down (timeout, refused)".
    pub fn explain(&self) -> String {
        let total = self.votes.len();
        let failures: Vec<&str> = self
            .votes
            .iter()
            .filter(|v| v.fresh && v.health == Health::Down && !v.discounted())
            .filter_map(|v| v.last_failure.as_ref().map(|(k, _)| k.as_str()))
            .collect();
        if self.quorum_reached {
            match self.health {
                Health::Up if self.votes.iter().any(Vote::discounted) => format!(
                    "{} of {total} probers report Up (impaired or overloaded, Down ignored: {})",
                    self.up,
                    self.votes
                        .iter()
                        .filter(|v| v.discounted())
                        .map(|v| v.region.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
                Health::Up => format!("{} of {total} probers report Up", self.up),
                Health::Down => format!(
                    "{} of {total} probers report Down ({})",
                    self.down,
                    failures.join(", ")
                ),
                Health::Unknown => "undecided".to_string(),
            }
        } else {
            let silent = total - self.up - self.down;
            format!(
                "no quorum ({} Up, {} Down, {silent} unknown or stale of {total}; {} needed): holding {}",
                self.up, self.down, self.required, self.health
            )
        }
    }
}

/// The votes of every configured region for one endpoint.
pub fn votes_for(
    endpoint: &EndpointId,
    regions: &[Region],
    latest: &Latest,
    stale_after: Duration,
    now: Instant,
) -> Vec<Vote> {
    regions
        .iter()
        .map(|region| match latest.get(region, endpoint) {
            None => Vote {
                region: region.clone(),
                health: Health::Unknown,
                fresh: false,
                age: None,
                last_rtt: None,
                smoothed_rtt: None,
                last_failure: None,
                local_error: None,
                cert_expiry: None,
                failures: 0,
                impaired: false,
                overloaded: false,
            },
            Some(obs) => {
                let age = now.saturating_duration_since(obs.observed_at);
                Vote {
                    region: region.clone(),
                    health: obs.health,
                    fresh: age <= stale_after,
                    age: Some(age),
                    last_rtt: obs.last_rtt,
                    smoothed_rtt: obs.smoothed_rtt,
                    last_failure: obs.last_failure.clone(),
                    local_error: obs.local_error.clone(),
                    cert_expiry: obs.cert_expiry,
                    failures: obs.failures,
                    impaired: false,
                    overloaded: false,
                }
            }
        })
        .collect()
}

/// Decides one endpoint's verdict from its votes and its previous verdict.
pub fn decide(previous: &Verdict, votes: Vec<Vote>, required: usize, now: Instant) -> Verdict {
    let count = |h: Health| {
        votes
            .iter()
            .filter(|v| v.fresh && v.health == h && !(v.discounted() && h == Health::Down))
            .count()
    };
    let (up, down) = (count(Health::Up), count(Health::Down));
    let required = required.max(1);
    let decided = match (up >= required, down >= required) {
        (true, false) => Some(Health::Up),
        (false, true) => Some(Health::Down),
        (true, true) if up > down => Some(Health::Up),
        (true, true) if down > up => Some(Health::Down),
        _ => None,
    };
    let health = decided.unwrap_or(previous.health);
    let changed_at = if health != previous.health {
        Some(now)
    } else {
        previous.changed_at
    };
    Verdict {
        health,
        votes,
        up,
        down,
        required,
        quorum_reached: decided.is_some(),
        changed_at,
    }
}

/// Regions whose prober is presumed cut off: with fresh reports for every endpoint (at least
/// two), all Down, while another prober freshly sees at least one of them Up. A prober that
/// cannot see anything is evidence about itself, not about the endpoints.
pub fn impaired_regions(
    regions: &[Region],
    endpoints: &[EndpointId],
    latest: &Latest,
    stale_after: Duration,
    now: Instant,
) -> BTreeSet<Region> {
    if endpoints.len() < 2 {
        return BTreeSet::new();
    }
    let fresh = |r: &Region, e: &EndpointId| {
        latest
            .get(r, e)
            .filter(|o| now.saturating_duration_since(o.observed_at) <= stale_after)
    };
    let all_down: Vec<&Region> = regions
        .iter()
        .filter(|r| {
            endpoints
                .iter()
                .all(|e| fresh(r, e).is_some_and(|o| o.health == Health::Down))
        })
        .collect();
    let sees_some_up = |r: &Region| {
        endpoints
            .iter()
            .any(|e| fresh(r, e).is_some_and(|o| o.health == Health::Up))
    };
    all_down
        .iter()
        .filter(|r| {
            regions
                .iter()
                .any(|other| other != **r && sees_some_up(other))
        })
        .map(|r| (*r).clone())
        .collect()
}

/// What a quorum round decides from.
pub struct RoundInputs<'a> {
    pub regions: &'a [Region],
    pub endpoints: &'a [EndpointId],
    pub latest: &'a Latest,
    /// The verdicts of the previous round (held where no side reaches the quorum).
    pub previous: &'a Verdicts,
    pub required: usize,
    pub stale_after: Duration,
    pub impaired_detection: bool,
    /// Probers that say they are overloaded.
    pub overloaded: &'a BTreeSet<Region>,
}

/// One quorum round: the verdicts, which probers are fresh and which impaired, and whether a
/// quorum of probers is fresh at all.
#[derive(Debug, Clone)]
pub struct Round {
    pub verdicts: Verdicts,
    /// Regions with at least one observation younger than `stale_after`.
    pub fresh: Vec<Region>,
    pub impaired: BTreeSet<Region>,
    pub overloaded: BTreeSet<Region>,
    /// At least `required` probers are fresh.
    pub reached: bool,
}

/// Decides a round over every endpoint (pure: `now` is given).
pub fn round(inputs: &RoundInputs<'_>, now: Instant) -> Round {
    let impaired = if inputs.impaired_detection {
        impaired_regions(
            inputs.regions,
            inputs.endpoints,
            inputs.latest,
            inputs.stale_after,
            now,
        )
    } else {
        BTreeSet::new()
    };
    let fresh: Vec<Region> = inputs
        .regions
        .iter()
        .filter(|r| {
            inputs.latest.iter().any(|o| {
                o.region == **r
                    && now.saturating_duration_since(o.observed_at) <= inputs.stale_after
            })
        })
        .cloned()
        .collect();
    Round {
        verdicts: decide_each(inputs, &impaired, now),
        reached: fresh.len() >= inputs.required,
        fresh,
        impaired,
        overloaded: inputs.overloaded.clone(),
    }
}

/// Decides again only `inputs.endpoints` (whose votes changed), between two full rounds: which
/// probers are fresh is `last`'s plus those reporting now, which are impaired is judged from each region's
/// counts of Up and Down observations (`counts`, freshness aside: the next full round looks at
/// it) and added to `last.impaired`. Pure.
pub fn partial_round(
    inputs: &RoundInputs<'_>,
    last: &Round,
    counts: &HashMap<Region, (usize, usize)>,
    endpoints_total: usize,
    now: Instant,
) -> Round {
    let impaired = if inputs.impaired_detection && endpoints_total >= 2 {
        let sees_up = |r: &Region| counts.get(r).is_some_and(|c| c.0 > 0);
        inputs
            .regions
            .iter()
            .filter(|r| counts.get(*r).is_some_and(|c| c.1 == endpoints_total))
            .filter(|r| inputs.regions.iter().any(|o| o != *r && sees_up(o)))
            .cloned()
            .collect()
    } else {
        BTreeSet::new()
    };
    // An impaired prober stays impaired, a fresh one fresh, until a full round says otherwise.
    let impaired: BTreeSet<Region> = impaired.union(&last.impaired).cloned().collect();
    let fresh: Vec<Region> = inputs
        .regions
        .iter()
        .filter(|r| {
            last.fresh.contains(r)
                || inputs.latest.iter().any(|o| {
                    o.region == **r
                        && now.saturating_duration_since(o.observed_at) <= inputs.stale_after
                })
        })
        .cloned()
        .collect();
    Round {
        verdicts: decide_each(inputs, &impaired, now),
        reached: fresh.len() >= inputs.required,
        fresh,
        impaired,
        overloaded: inputs.overloaded.clone(),
    }
}

fn decide_each(inputs: &RoundInputs<'_>, impaired: &BTreeSet<Region>, now: Instant) -> Verdicts {
    let unknown = Verdict::unknown(inputs.required);
    inputs
        .endpoints
        .iter()
        .map(|id| {
            let prev = inputs.previous.get(id).map_or(&unknown, |v| &**v);
            let mut votes = votes_for(id, inputs.regions, inputs.latest, inputs.stale_after, now);
            for vote in &mut votes {
                vote.impaired = impaired.contains(&vote.region);
                vote.overloaded = inputs.overloaded.contains(&vote.region);
            }
            (
                id.clone(),
                std::sync::Arc::new(decide(prev, votes, inputs.required, now)),
            )
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::model::Observation;

    fn vote(h: char) -> Vote {
        let (health, fresh) = match h {
            'U' => (Health::Up, true),
            'D' => (Health::Down, true),
            'u' => (Health::Up, false),
            'd' => (Health::Down, false),
            _ => (Health::Unknown, true),
        };
        Vote {
            region: Region::new(format!("r{h}")),
            health,
            fresh,
            age: None,
            last_rtt: None,
            smoothed_rtt: None,
            last_failure: None,
            local_error: None,
            cert_expiry: None,
            failures: 0,
            impaired: false,
            overloaded: false,
        }
    }

    fn run(prev: Health, votes: &str, required: usize) -> Verdict {
        let mut p = Verdict::unknown(required);
        p.health = prev;
        decide(
            &p,
            votes.chars().map(vote).collect(),
            required,
            Instant::now(),
        )
    }

    #[test]
    fn table() {
        // (previous, votes, required, expected, quorum reached)
        // U/D fresh Up/Down, u/d stale Up/Down, ? Unknown
        let cases = [
            (Health::Unknown, "UUU", 2, Health::Up, true),
            (Health::Unknown, "UU?", 2, Health::Up, true),
            (Health::Unknown, "U??", 2, Health::Unknown, false),
            (Health::Up, "UDD", 2, Health::Down, true),
            (Health::Up, "UUD", 2, Health::Up, true),
            (Health::Down, "UDd", 2, Health::Down, false),
            (Health::Up, "Ddd", 2, Health::Up, false),
            (Health::Up, "uuu", 2, Health::Up, false),
            (Health::Down, "uuu", 2, Health::Down, false),
            (Health::Unknown, "UD", 1, Health::Unknown, false),
            (Health::Up, "UDD", 1, Health::Down, true),
            (Health::Down, "UUD", 1, Health::Up, true),
            (Health::Up, "DDDDU", 3, Health::Down, true),
            (Health::Up, "DDUUU", 3, Health::Up, true),
        ];
        for (prev, votes, required, want, reached) in cases {
            let v = run(prev, votes, required);
            assert_eq!(
                v.health, want,
                "prev={prev} votes={votes} required={required}"
            );
            assert_eq!(
                v.quorum_reached, reached,
                "prev={prev} votes={votes} required={required}"
            );
        }
    }

    #[test]
    fn stale_observations_do_not_vote() {
        let now = Instant::now();
        let ep = EndpointId::new("e");
        let regions = vec![Region::new("a"), Region::new("b")];
        let mut latest = Latest::default();
        for (region, age) in [("a", 1), ("b", 10)] {
            latest.insert(Observation {
                endpoint: ep.clone(),
                region: Region::new(region),
                health: Health::Down,
                successes: 0,
                failures: 3,
                last_rtt: None,
                smoothed_rtt: None,
                last_failure: Some((FailureKind::Timeout, "t".into())),
                local_error: None,
                cert_expiry: None,
                observed_at: now - Duration::from_secs(age),
                overdue: false,
                seq: 1,
            });
        }
        let votes = votes_for(&ep, &regions, &latest, Duration::from_secs(5), now);
        assert!(votes[0].fresh);
        assert!(!votes[1].fresh);
        let mut prev = Verdict::unknown(2);
        prev.health = Health::Up;
        let v = decide(&prev, votes, 2, now);
        assert_eq!(
            v.health,
            Health::Up,
            "one fresh Down vote of two must not fail over"
        );
        assert!(v.explain().starts_with("no quorum"), "{}", v.explain());
    }

    #[test]
    fn explain_names_the_failure_kinds() {
        let now = Instant::now();
        let mut votes: Vec<Vote> = "DDU".chars().map(vote).collect();
        votes[0].last_failure = Some((FailureKind::Timeout, String::new()));
        votes[1].last_failure = Some((FailureKind::Refused, String::new()));
        let v = decide(&Verdict::unknown(2), votes, 2, now);
        assert_eq!(v.explain(), "2 of 3 probers report Down (timeout, refused)");
        assert_eq!(v.changed_at, Some(now));
    }

    fn observe(region: &str, endpoint: &str, health: Health, now: Instant) -> Observation {
        Observation {
            endpoint: EndpointId::new(endpoint),
            region: Region::new(region),
            health,
            successes: 0,
            failures: 0,
            last_rtt: None,
            smoothed_rtt: None,
            last_failure: None,
            local_error: None,
            cert_expiry: None,
            observed_at: now,
            overdue: false,
            seq: 1,
        }
    }

    #[test]
    fn a_prober_that_sees_everything_down_while_others_see_up_is_impaired() {
        let now = Instant::now();
        let regions: Vec<Region> = ["a", "b", "c"].map(Region::new).to_vec();
        let endpoints: Vec<EndpointId> = ["x", "y"].map(EndpointId::new).to_vec();
        let stale = Duration::from_secs(5);
        let mut latest: Latest = [
            observe("a", "x", Health::Down, now),
            observe("a", "y", Health::Down, now),
            observe("b", "x", Health::Up, now),
            observe("b", "y", Health::Down, now),
            observe("c", "x", Health::Up, now),
            observe("c", "y", Health::Down, now),
        ]
        .into_iter()
        .collect();
        let impaired = impaired_regions(&regions, &endpoints, &latest, stale, now);
        assert_eq!(impaired, BTreeSet::from([Region::new("a")]));
        // With k = 1, a's Down vote alone would flip x; as impaired it does not count.
        let verdicts = round(
            &RoundInputs {
                regions: &regions,
                endpoints: &endpoints,
                latest: &latest,
                previous: &BTreeMap::new(),
                required: 1,
                stale_after: stale,
                impaired_detection: true,
                overloaded: &BTreeSet::new(),
            },
            now,
        )
        .verdicts;
        assert_eq!(verdicts[&EndpointId::new("x")].health, Health::Up);
        assert!(verdicts[&EndpointId::new("x")].votes[0].impaired);
        // y: everyone sees it Down, so it is Down (b and c are not impaired).
        assert_eq!(verdicts[&EndpointId::new("y")].health, Health::Down);

        // When every prober sees everything Down, nobody is impaired: that is an outage.
        for r in ["b", "c"] {
            latest.insert(observe(r, "x", Health::Down, now));
        }
        assert!(impaired_regions(&regions, &endpoints, &latest, stale, now).is_empty());
        // A single endpoint never makes a prober impaired (disagreement is not impairment).
        assert!(impaired_regions(&regions, &endpoints[..1], &latest, stale, now).is_empty());
    }

    #[test]
    fn an_overloaded_probers_down_votes_do_not_count_and_a_partial_round_decides_only_what_changed()
    {
        let now = Instant::now();
        let regions: Vec<Region> = ["a", "b", "c"].map(Region::new).to_vec();
        let endpoints: Vec<EndpointId> = ["x", "y"].map(EndpointId::new).to_vec();
        let stale = Duration::from_secs(5);
        let latest: Latest = [
            observe("a", "x", Health::Down, now),
            observe("b", "x", Health::Down, now),
            observe("c", "x", Health::Up, now),
            observe("a", "y", Health::Up, now),
            observe("b", "y", Health::Up, now),
            observe("c", "y", Health::Up, now),
        ]
        .into_iter()
        .collect();
        let none: BTreeSet<Region> = BTreeSet::new();
        let b = BTreeSet::from([Region::new("b")]);
        let previous = BTreeMap::new();
        let inputs = |overloaded| RoundInputs {
            regions: &regions,
            endpoints: &endpoints,
            latest: &latest,
            previous: &previous,
            required: 2,
            stale_after: stale,
            impaired_detection: true,
            overloaded,
        };
        // a and b see x Down: Down, unless b is overloaded (then 1 Down, 1 Up: held).
        let plain = round(&inputs(&none), now);
        assert_eq!(plain.verdicts[&EndpointId::new("x")].health, Health::Down);
        let overloaded = round(&inputs(&b), now);
        let x = &overloaded.verdicts[&EndpointId::new("x")];
        assert_eq!(x.health, Health::Unknown);
        assert_eq!(x.down, 1);
        assert!(x.votes[1].overloaded && !x.votes[0].overloaded);
        // Its Up votes still count.
        assert_eq!(
            overloaded.verdicts[&EndpointId::new("y")].health,
            Health::Up
        );

        // A partial round decides only the endpoints given; fresh probers carry over.
        let last = Round {
            verdicts: BTreeMap::new(),
            fresh: vec![Region::new("a")],
            impaired: BTreeSet::new(),
            overloaded: BTreeSet::new(),
            reached: false,
        };
        let only_y = [EndpointId::new("y")];
        let partial = partial_round(
            &RoundInputs {
                endpoints: &only_y,
                ..inputs(&none)
            },
            &last,
            &HashMap::from([
                (Region::new("a"), (1, 1)),
                (Region::new("b"), (1, 1)),
                (Region::new("c"), (2, 0)),
            ]),
            2,
            now,
        );
        assert_eq!(partial.verdicts.len(), 1);
        assert_eq!(partial.verdicts[&EndpointId::new("y")].health, Health::Up);
        assert!(partial.reached, "b and c report now: {:?}", partial.fresh);
        assert!(partial.impaired.is_empty());
        // A region whose every observation is Down while another sees Up is impaired at once.
        let impaired = partial_round(
            &RoundInputs {
                endpoints: &only_y,
                ..inputs(&none)
            },
            &last,
            &HashMap::from([(Region::new("a"), (0, 2)), (Region::new("c"), (2, 0))]),
            2,
            now,
        );
        assert_eq!(impaired.impaired, BTreeSet::from([Region::new("a")]));
    }

    proptest! {
        /// A whole round without a quorum of fresh probers changes no verdict (fail static at
        /// the cluster level), whatever the stale or missing reports say; with a quorum of
        /// fresh probers all agreeing, every verdict follows them.
        #[test]
        fn a_round_without_a_quorum_of_fresh_probers_holds_every_verdict(
            ages in proptest::collection::vec(0u64..20, 3),
            states in proptest::collection::vec(0u8..2, 6),
            previous in proptest::collection::vec(0u8..3, 2),
        ) {
            let now = Instant::now() + Duration::from_secs(100);
            let regions: Vec<Region> = ["a", "b", "c"].map(Region::new).to_vec();
            let endpoints: Vec<EndpointId> = ["x", "y"].map(EndpointId::new).to_vec();
            let health = |n: u8| [Health::Up, Health::Down, Health::Unknown][n as usize];
            let mut latest = Latest::default();
            for (r, region) in regions.iter().enumerate() {
                for (e, endpoint) in endpoints.iter().enumerate() {
                    let mut obs = observe(region.as_str(), endpoint.as_str(), health(states[r * 2 + e]), now);
                    obs.observed_at = now - Duration::from_secs(ages[r]);
                    latest.insert(obs);
                }
            }
            let previous: Verdicts = endpoints
                .iter()
                .zip(&previous)
                .map(|(id, p)| (id.clone(), std::sync::Arc::new(Verdict { health: health(*p), ..Verdict::unknown(2) })))
                .collect();
            let stale_after = Duration::from_secs(5);
            let result = round(
                &RoundInputs {
                    regions: &regions,
                    endpoints: &endpoints,
                    latest: &latest,
                    previous: &previous,
                    required: 2,
                    stale_after,
                    impaired_detection: false,
                    overloaded: &BTreeSet::new(),
                },
                now,
            );
            let fresh = ages.iter().filter(|a| Duration::from_secs(**a) <= stale_after).count();
            prop_assert_eq!(result.reached, fresh >= 2);
            prop_assert_eq!(result.fresh.len(), fresh);
            if !result.reached {
                for (id, verdict) in &result.verdicts {
                    prop_assert_eq!(verdict.health, previous[id].health);
                }
            }
        }

        /// Without a quorum on either side the verdict never changes; with a clear majority it
        /// always follows the majority.
        #[test]
        fn quorum_rule(prev in 0u8..3, votes in "[UDud?]{1,7}", k in 1usize..5) {
            let prev = [Health::Unknown, Health::Up, Health::Down][prev as usize];
            let v = run(prev, &votes, k);
            let up = votes.chars().filter(|c| *c == 'U').count();
            let down = votes.chars().filter(|c| *c == 'D').count();
            if up < k && down < k {
                prop_assert_eq!(v.health, prev);
            }
            if up >= k && down < k {
                prop_assert_eq!(v.health, Health::Up);
            }
            if down >= k && up < k {
                prop_assert_eq!(v.health, Health::Down);
            }
            prop_assert!(v.health != Health::Unknown || prev == Health::Unknown);
        }
    }
}
