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
    state::overrides::Override,
};

/// Every managed answer, built from one set of verdicts.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    pub generation: u64,
    /// Changes only when what DNS answers changes (records, names, readiness): caches of
    /// answers stay valid while it stays the same.
    pub answers_generation: u64,
    /// True when every record has a decided answer.
    pub ready: bool,
    pub records: BTreeMap<(String, RecordKind), RecordAnswer>,
    /// Lower-case names with at least one managed record (of any type).
    pub names: HashSet<String>,
    /// Lower-case names strictly above a managed name (they exist, as empty non-terminals
    /// if nothing else: RFC 8020 forbids NXDOMAIN for them).
    pub ancestors: HashSet<String>,
    pub verdicts: crate::quorum::Verdicts,
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
    /// Probers that said they were overloaded (their Down votes were ignored).
    pub overloaded: std::collections::BTreeSet<Region>,
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
        /// Those of `skipped` that an operator drained (the others are not Up by verdict or
        /// forced Down).
        #[serde(skip_serializing_if = "Vec::is_empty")]
        drained: Vec<EndpointId>,
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
            Reason::Active {
                endpoint, skipped, ..
            } if skipped.is_empty() => {
                format!("primary {endpoint} is Up")
            }
            Reason::Active {
                endpoint,
                skipped,
                drained,
            } => {
                let (drained_ones, down): (Vec<EndpointId>, Vec<EndpointId>) =
                    skipped.iter().cloned().partition(|e| drained.contains(e));
                let mut why = Vec::new();
                if !down.is_empty() {
                    why.push(format!("{} not Up", list(&down)));
                }
                if !drained_ones.is_empty() {
                    why.push(format!("{} drained", list(&drained_ones)));
                }
                format!("{}; failed over to {endpoint}", why.join(", "))
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

/// What a snapshot is built from: each endpoint's verdict, and the probers behind them.
pub struct Decided {
    pub verdicts: crate::quorum::Verdicts,
    pub quorum: QuorumState,
}

impl Decided {
    /// The outcome of a quorum round.
    pub fn round(round: crate::quorum::Round) -> Self {
        Self {
            quorum: QuorumState {
                reached: round.reached,
                fresh: round.fresh,
                impaired: round.impaired,
                overloaded: round.overloaded,
            },
            verdicts: round.verdicts,
        }
    }

    /// Verdicts no round of this process voted on (saved, carried over by a reload, given),
    /// with the quorum state they come with.
    pub fn held(verdicts: crate::quorum::Verdicts, quorum: QuorumState) -> Self {
        Self { verdicts, quorum }
    }
}

/// What an endpoint no quorum has decided yet means for answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Undecided {
    /// During the startup grace: records that depend on it wait (SERVFAIL).
    Wait,
    /// After the grace: it counts as not Up.
    NotUp,
}

/// Builds the snapshot for what was `decided`; `undecided` says what endpoints without a
/// verdict mean. A record that was decided in `previous` stays decided (readiness never goes
/// back).
pub fn build(
    settings: &Settings,
    decided: Decided,
    overrides: BTreeMap<EndpointId, Override>,
    previous: &Snapshot,
    generation: u64,
    undecided: Undecided,
) -> Snapshot {
    let Decided { verdicts, quorum } = decided;
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
        let mut answer = answer_for(
            record,
            health,
            rtts,
            undecided == Undecided::NotUp || was_decided,
        );
        if let Reason::Active {
            skipped, drained, ..
        } = &mut answer.reason
        {
            drained.extend(
                skipped
                    .iter()
                    .filter(|e| {
                        overrides
                            .get(*e)
                            .is_some_and(|o| o.action == crate::state::overrides::Action::Drain)
                    })
                    .cloned(),
            );
        }
        records.insert(key, answer);
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
    let same_answers =
        previous.records == records && previous.names == names && previous.ready == ready;
    Snapshot {
        generation,
        answers_generation: previous.answers_generation + u64::from(!same_answers),
        ready,
        records,
        names,
        ancestors,
        verdicts,
        overrides,
        quorum,
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
                    drained: Vec::new(),
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
        if let Some((_, median)) = samples.get(samples.len().saturating_sub(1) / 2)
            && default.is_none_or(|(d, _)| *median < d)
        {
            default = Some((*median, i));
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
mod tests;
