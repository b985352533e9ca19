//! Confirmation on demand: when a prober suspects an endpoint (a failed check while the
//! verdict is not Down, or a check running far longer than it should: `overdue`), the probers that have not seen it fail are asked to check it now, so
//! that a quorum of fresh observations exists within about one check of the first failure,
//! not one interval. Each suspicion ends confirmed (the verdict went Down) or unconfirmed
//! (every prober sees it succeed again first: a false alarm), counted and explained.

use std::collections::HashMap;

use tokio::time::Instant;

use crate::{
    exchange::{ObservationBoard, asks::Asks},
    model::{EndpointId, Health, Latest, Region},
    quorum::Verdicts,
};

/// A suspicion is asked about again (when another prober starts failing too) at most this
/// often; probers also check on request at most once per second per endpoint. A minority that
/// keeps failing is asked about once, so the others' extra checks stay bounded however long
/// it lasts.
const ASK_AGAIN_AFTER: std::time::Duration = std::time::Duration::from_secs(1);

/// One open suspicion: who failed first, when, and who was asked to confirm.
#[derive(Debug, Clone)]
struct Suspicion {
    by: Region,
    since: Instant,
    asked_at: Instant,
    asked: Vec<Region>,
    /// How many probers were failing when it was last asked about.
    failing: usize,
}

/// How a suspicion ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The verdict went Down: the explanation names who suspected and who confirmed.
    Confirmed(String),
    /// Every prober sees the endpoint succeed again, the verdict never went Down.
    Unconfirmed(String),
}

/// What one look at the suspicions did.
#[derive(Debug, Default)]
pub struct Looked {
    /// Regions asked to check an endpoint now.
    pub asked: Vec<(Region, EndpointId)>,
    /// Suspicions that ended.
    pub ended: Vec<(EndpointId, Outcome)>,
}

#[derive(Default)]
pub struct Confirmer {
    asks: Asks,
    open: HashMap<EndpointId, Suspicion>,
}

impl Confirmer {
    pub fn new(asks: Asks) -> Self {
        Self {
            asks,
            open: HashMap::new(),
        }
    }

    /// [`Confirmer::look`] at what `board` holds now.
    pub fn look_on(
        &mut self,
        board: &ObservationBoard,
        endpoints: Option<&[EndpointId]>,
        verdicts: &Verdicts,
        regions: &[Region],
        now: Instant,
    ) -> Looked {
        board.with_latest(|latest| self.look(endpoints, verdicts, latest, regions, now))
    }

    /// Looks at `endpoints` (all of `verdicts` when None) after a round: opens a suspicion
    /// where a prober fails a check while the verdict is not Down and asks the others to
    /// check now; ends the suspicions whose verdict went Down or that every prober cleared.
    pub fn look(
        &mut self,
        endpoints: Option<&[EndpointId]>,
        verdicts: &Verdicts,
        latest: &Latest,
        regions: &[Region],
        now: Instant,
    ) -> Looked {
        let mut looked = Looked::default();
        let all: Vec<&EndpointId>;
        let ids: Vec<&EndpointId> = match endpoints {
            Some(ids) => ids.iter().collect(),
            None => {
                all = verdicts.keys().collect();
                all
            }
        };
        for id in ids {
            let Some(verdict) = verdicts.get(id) else {
                continue;
            };
            let failing: Vec<&Region> = latest
                .of(id)
                .iter()
                .filter(|o| (o.failures > 0 || o.overdue) && o.local_error.is_none())
                .map(|o| &o.region)
                .collect();
            if verdict.health == Health::Down {
                if let Some(s) = self.open.remove(id) {
                    let confirmed: Vec<&str> = failing
                        .iter()
                        .filter(|r| ***r != s.by)
                        .map(|r| r.as_str())
                        .collect();
                    looked.ended.push((
                        id.clone(),
                        Outcome::Confirmed(format!(
                            "first suspected by {} {} ms before, confirmed by {}",
                            s.by,
                            now.duration_since(s.since).as_millis(),
                            if confirmed.is_empty() {
                                "nobody else".to_string()
                            } else {
                                confirmed.join(", ")
                            }
                        )),
                    ));
                }
                continue;
            }
            if failing.is_empty() {
                if let Some(s) = self.open.remove(id) {
                    looked.ended.push((
                        id.clone(),
                        Outcome::Unconfirmed(format!(
                            "suspected by {} and not confirmed (asked: {}); cleared after {} ms",
                            s.by,
                            s.asked
                                .iter()
                                .map(Region::as_str)
                                .collect::<Vec<_>>()
                                .join(", "),
                            now.duration_since(s.since).as_millis()
                        )),
                    ));
                }
                continue;
            }
            let ask_now = match self.open.get(id) {
                None => true,
                Some(s) => {
                    failing.len() > s.failing && now.duration_since(s.asked_at) >= ASK_AGAIN_AFTER
                }
            };
            if !ask_now {
                continue;
            }
            let others: Vec<Region> = regions
                .iter()
                .filter(|r| !failing.contains(r))
                .cloned()
                .collect();
            let mut asked = Vec::new();
            for region in &others {
                if self.asks.ask(region, id) {
                    looked.asked.push((region.clone(), id.clone()));
                    asked.push(region.clone());
                }
            }
            let s = self.open.entry(id.clone()).or_insert_with(|| Suspicion {
                by: failing[0].clone(),
                since: now,
                asked_at: now,
                asked: Vec::new(),
                failing: 0,
            });
            s.asked_at = now;
            s.failing = failing.len();
            for region in asked {
                if !s.asked.contains(&region) {
                    s.asked.push(region);
                }
            }
        }
        // Endpoints gone from the configuration.
        self.open.retain(|id, _| verdicts.contains_key(id));
        looked
    }
}

#[cfg(test)]
mod tests {
    use std::{sync::Arc, time::Duration};

    use super::*;
    use crate::{exchange::asks, model::Observation, quorum::Verdict};

    fn observation(region: &str, failures: u32) -> Observation {
        Observation {
            endpoint: EndpointId::new("e"),
            region: Region::new(region),
            health: Health::Up,
            successes: u32::from(failures == 0),
            failures,
            last_rtt: None,
            smoothed_rtt: None,
            last_failure: None,
            local_error: None,
            cert_expiry: None,
            observed_at: Instant::now(),
            overdue: false,
            seq: 1,
        }
    }

    fn verdicts(health: Health) -> Verdicts {
        [(
            EndpointId::new("e"),
            Arc::new(Verdict {
                health,
                ..Verdict::unknown(2)
            }),
        )]
        .into()
    }

    #[tokio::test(start_paused = true)]
    async fn a_suspicion_asks_the_others_once_a_second_and_ends_confirmed_or_not() {
        let regions: Vec<Region> = ["a", "b", "c"].map(Region::new).to_vec();
        let mut to = Asks::default();
        let mut inboxes = Vec::new();
        for r in &regions {
            let (tx, rx) = asks::channel();
            to.insert(r.clone(), tx);
            inboxes.push(rx);
        }
        let mut confirmer = Confirmer::new(to);
        let e = [EndpointId::new("e")];
        let t0 = Instant::now();

        // a fails once: b and c are asked, a is not.
        let latest: Latest = [
            observation("a", 1),
            observation("b", 0),
            observation("c", 0),
        ]
        .into_iter()
        .collect();
        let looked = confirmer.look(Some(&e), &verdicts(Health::Up), &latest, &regions, t0);
        let asked: Vec<&str> = looked.asked.iter().map(|(r, _)| r.as_str()).collect();
        assert_eq!(asked, ["b", "c"]);
        assert!(inboxes[0].try_recv().is_err());
        assert_eq!(inboxes[1].try_recv().ok(), Some(EndpointId::new("e")));
        // Not again while only a fails, however long; again (after a second) when b fails
        // too: c is asked once more.
        let t1 = t0 + Duration::from_secs(10);
        let looked = confirmer.look(Some(&e), &verdicts(Health::Up), &latest, &regions, t1);
        assert!(looked.asked.is_empty());
        let two: Latest = [
            observation("a", 2),
            observation("b", 1),
            observation("c", 0),
        ]
        .into_iter()
        .collect();
        let looked = confirmer.look(Some(&e), &verdicts(Health::Up), &two, &regions, t1);
        let asked: Vec<&str> = looked.asked.iter().map(|(r, _)| r.as_str()).collect();
        assert_eq!(asked, ["c"]);

        // Nobody else fails and a recovers: unconfirmed (a false alarm).
        let clear: Latest = [
            observation("a", 0),
            observation("b", 0),
            observation("c", 0),
        ]
        .into_iter()
        .collect();
        let looked = confirmer.look(Some(&e), &verdicts(Health::Up), &clear, &regions, t1);
        assert!(
            matches!(&looked.ended[..], [(_, Outcome::Unconfirmed(why))] if why.starts_with("suspected by a and not confirmed (asked: b, c)")),
            "{:?}",
            looked.ended
        );

        // a fails, then b too and the verdict goes Down: confirmed by b.
        confirmer.look(Some(&e), &verdicts(Health::Up), &latest, &regions, t1);
        let down: Latest = [
            observation("a", 2),
            observation("b", 1),
            observation("c", 0),
        ]
        .into_iter()
        .collect();
        let t2 = t1 + Duration::from_millis(300);
        let looked = confirmer.look(None, &verdicts(Health::Down), &down, &regions, t2);
        assert_eq!(
            looked.ended,
            [(
                EndpointId::new("e"),
                Outcome::Confirmed("first suspected by a 300 ms before, confirmed by b".into())
            )]
        );
        // Down and failing: nothing to ask, nothing open.
        let looked = confirmer.look(None, &verdicts(Health::Down), &down, &regions, t2);
        assert!(looked.asked.is_empty() && looked.ended.is_empty());
    }
}
