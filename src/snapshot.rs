//! The answer snapshot: configuration + verdicts -> what every managed record answers, and why.
//!
//! Pure; built whole on every quorum round and published with one atomic swap, so the DNS read
//! path never waits on a lock and never sees half an update. Endpoints whose verdict is still
//! `Unknown` are never treated as Up; a record whose answer depends on them is not answered from
//! guesses (SERVFAIL) until they are decided or the startup grace has passed.

use std::{
    collections::{BTreeMap, HashSet},
    net::IpAddr,
    time::Duration,
};

use serde::Serialize;

use crate::{
    config::{Policy, RecordKind, RecordSpec, Settings, WhenAllDown},
    model::{EndpointId, Health, Region},
    overrides::Override,
    quorum::Verdict,
};

/// Every managed answer, built from one set of verdicts.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    pub generation: u64,
    /// True when every record has a decided answer.
    pub ready: bool,
    pub records: BTreeMap<(String, RecordKind), RecordAnswer>,
    /// Lower-case names with at least one managed record (of any type).
    pub names: HashSet<String>,
    /// Lower-case names strictly above a managed name (they exist, as empty non-terminals
    /// if nothing else: RFC 8020 forbids NXDOMAIN for them).
    pub ancestors: HashSet<String>,
    pub verdicts: BTreeMap<EndpointId, Verdict>,
    /// Operator overrides in force for this snapshot.
    pub overrides: BTreeMap<EndpointId, Override>,
    /// Which probers voted in the round that built this snapshot.
    pub quorum: QuorumState,
}

/// The probers behind one round of verdicts.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct QuorumState {
    /// At least the required number of probers had fresh reports.
    pub reached: bool,
    /// Probers with at least one fresh report.
    pub fresh: Vec<Region>,
    /// Probers presumed cut off (their Down votes were ignored).
    pub impaired: std::collections::BTreeSet<Region>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct RecordAnswer {
    pub ttl: u32,
    pub policy: Policy,
    pub answer: Answer,
    pub reason: Reason,
}

/// The data a managed record answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// Not decided yet: answered with SERVFAIL.
    NotReady,
    /// These addresses, all of them (possibly none: NODATA).
    Fixed(Vec<IpAddr>),
    /// One address per response, chosen with probability proportional to its weight.
    Weighted(Vec<(IpAddr, u32)>),
    /// Depends on the client's region; `default` for clients of other regions.
    ByRegion {
        regions: BTreeMap<Region, Vec<IpAddr>>,
        default: Vec<IpAddr>,
    },
}

impl Answer {
    pub fn addresses(&self) -> Vec<IpAddr> {
        match self {
            Answer::NotReady => Vec::new(),
            Answer::Fixed(ips) => ips.clone(),
            Answer::Weighted(choices) => choices.iter().map(|(ip, _)| *ip).collect(),
            Answer::ByRegion { regions, default } => {
                let mut ips: Vec<IpAddr> = default.clone();
                for ip in regions.values().flatten() {
                    if !ips.contains(ip) {
                        ips.push(*ip);
                    }
                }
                ips
            }
        }
    }
}

/// Why a record answers what it answers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Reason {
    /// Waiting for the first verdicts of these endpoints.
    Undecided { endpoints: Vec<EndpointId> },
    /// Failover: the first Up endpoint in order; the ones before it are not Up.
    Active {
        endpoint: EndpointId,
        skipped: Vec<EndpointId>,
    },
    /// All / weighted: the Up endpoints.
    Healthy { up: usize, of: usize },
    /// Latency: the nearest Up endpoint per client region.
    Nearest {
        default: EndpointId,
        by_region: BTreeMap<Region, EndpointId>,
    },
    /// No endpoint is Up; the `when_all_down` action applied.
    AllDown { action: AllDownAction },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AllDownAction {
    FailOpen,
    Empty,
    Fallback,
}

impl Reason {
    /// A short, stable code (for metrics labels).
    pub fn code(&self) -> &'static str {
        match self {
            Reason::Undecided { .. } => "undecided",
            Reason::Active { skipped, .. } if skipped.is_empty() => "primary",
            Reason::Active { .. } => "failover",
            Reason::Healthy { up, of } if up == of => "all_up",
            Reason::Healthy { .. } => "some_down",
            Reason::Nearest { .. } => "nearest",
            Reason::AllDown {
                action: AllDownAction::FailOpen,
            } => "all_down_fail_open",
            Reason::AllDown {
                action: AllDownAction::Empty,
            } => "all_down_empty",
            Reason::AllDown {
                action: AllDownAction::Fallback,
            } => "all_down_fallback",
        }
    }

    /// A sentence for people.
    pub fn describe(&self) -> String {
        let list = |ids: &[EndpointId]| {
            ids.iter()
                .map(|i| i.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        };
        match self {
            Reason::Undecided { endpoints } => format!(
                "waiting for the first quorum verdict of {}; answering SERVFAIL",
                list(endpoints)
            ),
            Reason::Active { endpoint, skipped } if skipped.is_empty() => {
                format!("primary {endpoint} is Up")
            }
            Reason::Active { endpoint, skipped } => {
                format!("{} not Up; failed over to {endpoint}", list(skipped))
            }
            Reason::Healthy { up, of } => format!("{up} of {of} endpoints Up"),
            Reason::Nearest { default, by_region } => {
                let per: Vec<String> = by_region
                    .iter()
                    .map(|(r, e)| format!("{r} -> {e}"))
                    .collect();
                format!(
                    "nearest Up endpoint by measured RTT: {}; other clients -> {default}",
                    if per.is_empty() {
                        "no region measured yet".to_string()
                    } else {
                        per.join(", ")
                    }
                )
            }
            Reason::AllDown { action } => match action {
                AllDownAction::FailOpen => {
                    "no endpoint Up; failing open with every endpoint".into()
                }
                AllDownAction::Empty => {
                    "no endpoint Up; answering no address (when_all_down = none)".into()
                }
                AllDownAction::Fallback => {
                    "no endpoint Up; answering the fallback addresses".into()
                }
            },
        }
    }
}

/// Builds the snapshot for `verdicts`. After `grace_over`, undecided endpoints count as not Up.
/// A record that was decided in `previous` stays decided (readiness never goes back).
pub fn build(
    settings: &Settings,
    verdicts: BTreeMap<EndpointId, Verdict>,
    overrides: BTreeMap<EndpointId, Override>,
    previous: &Snapshot,
    generation: u64,
    grace_over: bool,
) -> Snapshot {
    let mut records = BTreeMap::new();
    let mut names = HashSet::new();
    let mut ancestors = HashSet::new();
    for record in &settings.records {
        // Overrides decide before verdicts: forced Up/Down, drained = not Up.
        let health = |id: &EndpointId| {
            let verdict = verdicts.get(id).map_or(Health::Unknown, |v| v.health);
            overrides
                .get(id)
                .map_or(verdict, |o| o.action.effective(verdict))
        };
        let rtts = |id: &EndpointId| {
            verdicts.get(id).map_or_else(Vec::new, |v| {
                v.votes
                    .iter()
                    .filter(|vote| vote.fresh && vote.health == Health::Up)
                    .filter_map(|vote| vote.smoothed_rtt.map(|rtt| (vote.region.clone(), rtt)))
                    .collect()
            })
        };
        let key = (record.name.clone(), record.kind);
        let was_decided = previous
            .records
            .get(&key)
            .is_some_and(|r| r.answer != Answer::NotReady);
        records.insert(
            key,
            answer_for(record, health, rtts, grace_over || was_decided),
        );
        names.insert(record.name.clone());
        let mut rest = record.name.as_str();
        while let Some((_, parent)) = rest.split_once('.') {
            if parent.is_empty() {
                break;
            }
            ancestors.insert(parent.to_string());
            rest = parent;
        }
    }
    // Readiness latches: once every record was decided, a record added by a reload does not
    // take a serving process out of rotation (it answers SERVFAIL until decided).
    let ready = previous.ready || records.values().all(|r| r.answer != Answer::NotReady);
    Snapshot {
        generation,
        ready,
        records,
        names,
        ancestors,
        verdicts,
        overrides,
        quorum: QuorumState::default(),
    }
}

/// The answer of one record given each endpoint's verdict. With `settled`, undecided endpoints
/// count as not Up instead of holding the answer back.
///
/// `rtts` gives, for an endpoint, the smoothed round-trip time each region's prober measures
/// (fresh reports only); only the `latency` policy uses it.
pub fn answer_for(
    record: &RecordSpec,
    health: impl Fn(&EndpointId) -> Health,
    rtts: impl Fn(&EndpointId) -> Vec<(Region, Duration)>,
    settled: bool,
) -> RecordAnswer {
    let states: Vec<Health> = record.endpoints.iter().map(|e| health(&e.id)).collect();
    let undecided: Vec<EndpointId> = record
        .endpoints
        .iter()
        .zip(&states)
        .filter(|(_, h)| **h == Health::Unknown)
        .map(|(e, _)| e.id.clone())
        .collect();
    let make = |answer, reason| RecordAnswer {
        ttl: record.ttl,
        policy: record.policy,
        answer,
        reason,
    };
    let up: Vec<usize> = (0..states.len())
        .filter(|i| states[*i] == Health::Up)
        .collect();

    // Failover is decided as soon as an endpoint is Up and every one before it is decided.
    let decided = settled
        || undecided.is_empty()
        || (record.policy == Policy::Failover
            && states
                .iter()
                .take_while(|h| **h != Health::Unknown)
                .any(|h| *h == Health::Up));
    if !decided {
        return make(
            Answer::NotReady,
            Reason::Undecided {
                endpoints: undecided,
            },
        );
    }

    if up.is_empty() {
        let (answer, action) = match &record.when_all_down {
            WhenAllDown::All => (
                match record.policy {
                    Policy::Weighted => Answer::Weighted(
                        record
                            .endpoints
                            .iter()
                            .map(|e| (e.address, e.weight))
                            .collect(),
                    ),
                    _ => Answer::Fixed(record.endpoints.iter().map(|e| e.address).collect()),
                },
                AllDownAction::FailOpen,
            ),
            WhenAllDown::None => (Answer::Fixed(Vec::new()), AllDownAction::Empty),
            WhenAllDown::Fallback(ips) => (Answer::Fixed(ips.clone()), AllDownAction::Fallback),
        };
        return make(answer, Reason::AllDown { action });
    }

    match record.policy {
        Policy::Latency => {
            let (answer, reason) = nearest(record, &up, rtts);
            make(answer, reason)
        }
        Policy::Failover => {
            let first = up[0];
            let chosen = &record.endpoints[first];
            make(
                Answer::Fixed(vec![chosen.address]),
                Reason::Active {
                    endpoint: chosen.id.clone(),
                    skipped: record.endpoints[..first]
                        .iter()
                        .map(|e| e.id.clone())
                        .collect(),
                },
            )
        }
        Policy::All => make(
            Answer::Fixed(up.iter().map(|i| record.endpoints[*i].address).collect()),
            Reason::Healthy {
                up: up.len(),
                of: states.len(),
            },
        ),
        Policy::Weighted => make(
            Answer::Weighted(
                up.iter()
                    .map(|i| (record.endpoints[*i].address, record.endpoints[*i].weight))
                    .collect(),
            ),
            Reason::Healthy {
                up: up.len(),
                of: states.len(),
            },
        ),
    }
}

/// Latency steering among the Up endpoints (indices into `record.endpoints`): for each region,
/// the endpoint its prober measures closest; for clients of other regions (or regions without
/// fresh measurements), the endpoint with the lowest median across regions; with no
/// measurement at all, the first Up endpoint.
fn nearest(
    record: &RecordSpec,
    up: &[usize],
    rtts: impl Fn(&EndpointId) -> Vec<(Region, Duration)>,
) -> (Answer, Reason) {
    let mut best: BTreeMap<Region, (Duration, usize)> = BTreeMap::new();
    let mut default: Option<(Duration, usize)> = None;
    for &i in up {
        let mut samples = rtts(&record.endpoints[i].id);
        for (region, rtt) in &samples {
            let entry = best.entry(region.clone()).or_insert((*rtt, i));
            if *rtt < entry.0 {
                *entry = (*rtt, i);
            }
        }
        samples.sort_by_key(|(_, rtt)| *rtt);
        if let Some((_, median)) = samples.get(samples.len().saturating_sub(1) / 2) {
            if default.is_none_or(|(d, _)| *median < d) {
                default = Some((*median, i));
            }
        }
    }
    let default = default.map_or(up[0], |(_, i)| i);
    let endpoint = |i: usize| &record.endpoints[i];
    (
        Answer::ByRegion {
            regions: best
                .iter()
                .map(|(r, (_, i))| (r.clone(), vec![endpoint(*i).address]))
                .collect(),
            default: vec![endpoint(default).address],
        },
        Reason::Nearest {
            default: endpoint(default).id.clone(),
            by_region: best
                .into_iter()
                .map(|(r, (_, i))| (r, endpoint(i).id.clone()))
                .collect(),
        },
    )
}

/// Picks one weighted choice; `roll` is uniform in `0..u32::MAX`. Weights of zero are chosen
/// only when every weight is zero (then uniformly).
pub fn pick_weighted(choices: &[(IpAddr, u32)], roll: u32) -> Option<IpAddr> {
    let total: u64 = choices.iter().map(|(_, w)| u64::from(*w)).sum();
    if choices.is_empty() {
        return None;
    }
    if total == 0 {
        let i = ((u64::from(roll) * choices.len() as u64) >> 32) as usize;
        return choices.get(i).map(|(ip, _)| *ip);
    }
    let mut point = (u64::from(roll) * total) >> 32;
    for (ip, w) in choices {
        if point < u64::from(*w) {
            return Some(*ip);
        }
        point -= u64::from(*w);
    }
    choices.last().map(|(ip, _)| *ip)
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::config::RecordEndpoint;

    fn record(policy: Policy, when_all_down: WhenAllDown, n: u8) -> RecordSpec {
        RecordSpec {
            name: "www.example.com.".into(),
            kind: RecordKind::A,
            ttl: 30,
            policy,
            when_all_down,
            endpoints: (1..=n)
                .map(|i| RecordEndpoint {
                    id: EndpointId::new(format!("e{i}")),
                    address: IpAddr::from([192, 0, 2, i]),
                    weight: u32::from(i),
                })
                .collect(),
            route53: None,
        }
    }

    fn states(s: &str) -> impl Fn(&EndpointId) -> Health + '_ {
        move |id: &EndpointId| {
            let i: usize = id.as_str()[1..].parse().expect("e<N>");
            match s.as_bytes()[i - 1] {
                b'U' => Health::Up,
                b'D' => Health::Down,
                _ => Health::Unknown,
            }
        }
    }

    fn no_rtt(_: &EndpointId) -> Vec<(Region, Duration)> {
        Vec::new()
    }

    fn ips(last: &[u8]) -> Vec<IpAddr> {
        last.iter().map(|i| IpAddr::from([192, 0, 2, *i])).collect()
    }

    #[test]
    fn failover_table() {
        let fallback = WhenAllDown::Fallback(vec![IpAddr::from([203, 0, 113, 1])]);
        let cases: Vec<(WhenAllDown, &str, Answer, &str)> = vec![
            (WhenAllDown::All, "UUU", Answer::Fixed(ips(&[1])), "primary"),
            (
                WhenAllDown::All,
                "DUU",
                Answer::Fixed(ips(&[2])),
                "failover",
            ),
            (
                WhenAllDown::All,
                "DDU",
                Answer::Fixed(ips(&[3])),
                "failover",
            ),
            (WhenAllDown::All, "U??", Answer::Fixed(ips(&[1])), "primary"),
            (WhenAllDown::All, "?UU", Answer::NotReady, "undecided"),
            (WhenAllDown::All, "D?U", Answer::NotReady, "undecided"),
            (
                WhenAllDown::All,
                "DDD",
                Answer::Fixed(ips(&[1, 2, 3])),
                "all_down_fail_open",
            ),
            (
                WhenAllDown::None,
                "DDD",
                Answer::Fixed(vec![]),
                "all_down_empty",
            ),
            (
                fallback,
                "DDD",
                Answer::Fixed(vec![IpAddr::from([203, 0, 113, 1])]),
                "all_down_fallback",
            ),
        ];
        for (when, s, want, code) in cases {
            let r = answer_for(&record(Policy::Failover, when, 3), states(s), no_rtt, false);
            assert_eq!(r.answer, want, "{s}");
            assert_eq!(r.reason.code(), code, "{s}");
        }
    }

    #[test]
    fn all_and_weighted_table() {
        let r = answer_for(
            &record(Policy::All, WhenAllDown::All, 3),
            states("UDU"),
            no_rtt,
            false,
        );
        assert_eq!(r.answer, Answer::Fixed(ips(&[1, 3])));
        assert_eq!(r.reason, Reason::Healthy { up: 2, of: 3 });
        let r = answer_for(
            &record(Policy::All, WhenAllDown::All, 3),
            states("UU?"),
            no_rtt,
            false,
        );
        assert_eq!(r.answer, Answer::NotReady, "all needs every verdict");
        let r = answer_for(
            &record(Policy::All, WhenAllDown::All, 3),
            states("UU?"),
            no_rtt,
            true,
        );
        assert_eq!(
            r.answer,
            Answer::Fixed(ips(&[1, 2])),
            "after the grace, Unknown is not Up"
        );
        let r = answer_for(
            &record(Policy::Weighted, WhenAllDown::All, 3),
            states("DUU"),
            no_rtt,
            false,
        );
        assert_eq!(
            r.answer,
            Answer::Weighted(vec![
                (IpAddr::from([192, 0, 2, 2]), 2),
                (IpAddr::from([192, 0, 2, 3]), 3)
            ])
        );
    }

    #[test]
    fn weighted_pick_follows_weights() {
        let a = IpAddr::from([192, 0, 2, 1]);
        let b = IpAddr::from([192, 0, 2, 2]);
        let choices = [(a, 1), (b, 3)];
        let mut count_a = 0;
        for i in 0..4000u32 {
            let roll = (u64::from(i) * u64::from(u32::MAX) / 4000) as u32; // evenly spread
            if pick_weighted(&choices, roll) == Some(a) {
                count_a += 1;
            }
        }
        assert!(
            (990..=1010).contains(&count_a),
            "a chosen {count_a} of 4000 times, expected 1000"
        );
        assert_eq!(pick_weighted(&[(a, 0), (b, 5)], 0), Some(b));
        assert_eq!(pick_weighted(&[], 7), None);
    }

    #[test]
    fn a_decided_record_never_goes_back_to_undecided() {
        let rec = record(Policy::Failover, WhenAllDown::All, 3);
        let first = answer_for(&rec, states("U??"), no_rtt, false);
        assert_eq!(first.answer, Answer::Fixed(ips(&[1])));
        // The primary goes Down while the others are still undecided: without the latch this
        // would be NotReady again; a settled record treats undecided as not Up.
        let again = answer_for(&rec, states("D??"), no_rtt, true);
        assert_eq!(
            again.answer,
            Answer::Fixed(ips(&[1, 2, 3])),
            "fail open, not SERVFAIL"
        );
    }

    #[test]
    fn latency_picks_the_nearest_up_endpoint_per_region() {
        let rec = record(Policy::Latency, WhenAllDown::All, 3);
        let ms = Duration::from_millis;
        // e1 is near region a, e2 near region b, e3 is Down (and would be nearest for c).
        let rtts = |id: &EndpointId| -> Vec<(Region, Duration)> {
            let table: &[(&str, u64)] = match id.as_str() {
                "e1" => &[("a", 5), ("b", 80), ("c", 50)],
                "e2" => &[("a", 90), ("b", 4), ("c", 60)],
                _ => &[("a", 1), ("b", 1), ("c", 1)],
            };
            table
                .iter()
                .map(|(r, v)| (Region::new(*r), ms(*v)))
                .collect()
        };
        let r = answer_for(&rec, states("UUD"), rtts, false);
        let Answer::ByRegion { regions, default } = &r.answer else {
            panic!("expected a per-region answer, got {:?}", r.answer)
        };
        assert_eq!(regions[&Region::new("a")], ips(&[1]));
        assert_eq!(regions[&Region::new("b")], ips(&[2]));
        assert_eq!(regions[&Region::new("c")], ips(&[1]));
        // Medians: e1 = 50, e2 = 60.
        assert_eq!(default, &ips(&[1]));
        // No measurement at all: the first Up endpoint.
        let r = answer_for(&rec, states("DUU"), no_rtt, false);
        assert_eq!(
            r.answer,
            Answer::ByRegion {
                regions: BTreeMap::new(),
                default: ips(&[2])
            }
        );
        // Nothing Up: the all-down policy, as for the other policies.
        let r = answer_for(&rec, states("DDD"), rtts, false);
        assert_eq!(r.answer, Answer::Fixed(ips(&[1, 2, 3])));
    }

    proptest! {
        #[test]
        fn weighted_pick_never_returns_zero_weight_when_others_are_positive(
            weights in prop::collection::vec(0u32..5, 1..6), roll in any::<u32>()
        ) {
            let choices: Vec<(IpAddr, u32)> = weights.iter().enumerate()
                .map(|(i, w)| (IpAddr::from([10, 0, 0, i as u8]), *w)).collect();
            let picked = pick_weighted(&choices, roll).expect("non-empty");
            let w = choices.iter().find(|(ip, _)| *ip == picked).map(|(_, w)| *w).unwrap_or(0);
            prop_assert!(w > 0 || weights.iter().all(|w| *w == 0));
        }

        /// An answer only ever contains configured or fallback addresses, and never a Down
        /// endpoint while some endpoint is Up.
        #[test]
        fn answers_prefer_up_endpoints(s in "[UD]{1,5}", policy in 0u8..3) {
            let policy = [Policy::Failover, Policy::All, Policy::Weighted][policy as usize];
            let rec = record(policy, WhenAllDown::None, s.len() as u8);
            let r = answer_for(&rec, states(&s), no_rtt, false);
            let up: Vec<IpAddr> = rec.endpoints.iter().zip(s.chars())
                .filter(|(_, c)| *c == 'U').map(|(e, _)| e.address).collect();
            for ip in r.answer.addresses() {
                prop_assert!(up.contains(&ip));
            }
            prop_assert_eq!(r.answer.addresses().is_empty(), up.is_empty());
        }
    }
}
