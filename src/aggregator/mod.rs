//! The aggregator: latest observations -> quorum verdicts -> a new answer snapshot, published
//! with one atomic swap. Wakes on every report and on a tick (so that stale reports stop voting).
//!
//! Each turn of the loop decides a round (`quorum::round`, pure), builds the snapshot
//! (`snapshot::build`, pure) and publishes it; a `Reporter` turns what changed into logs
//! (transitions, not probes) and metrics (`metrics`).

pub mod confirm;
pub mod metrics;

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    sync::Arc,
    time::Duration,
};

use arc_swap::ArcSwap;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::{
    config::Settings,
    exchange::ObservationBoard,
    model::{EndpointId, Health, Region},
    quorum::{self, Verdict},
    snapshot::{self, Answer, QuorumState, Snapshot},
    state::{StateMetrics, store::OverrideStore, verdicts::VerdictStore},
};
pub use metrics::AggregatorMetrics;

/// After a round that built and published answers, reports wait this many times as long as
/// that round took before the next is decided: rebuilding spends at most a fifth of a core
/// however fast reports come, and a report after a quiet spell is decided at once.
const REBUILD_SPACING: u32 = 4;

pub struct Aggregator {
    settings: Arc<Settings>,
    board: Arc<ObservationBoard>,
    published: Arc<ArcSwap<Snapshot>>,
    reporter: Reporter,
    overrides: Option<Arc<OverrideStore>>,
    /// Where verdicts are saved for the next start (serving roles).
    saved: Option<Arc<VerdictStore>>,
    /// Asks probers to confirm another's suspicion at once.
    confirmer: confirm::Confirmer,
}

/// One verdict change, for the status page.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Transition {
    pub at_unix_ms: u64,
    pub endpoint: EndpointId,
    pub from: crate::model::Health,
    pub to: crate::model::Health,
    pub why: String,
}

/// The latest verdict transitions, newest first.
#[derive(Default)]
pub struct History(std::sync::Mutex<std::collections::VecDeque<Transition>>);

impl History {
    const KEEP: usize = 50;

    fn push(&self, t: Transition) {
        let mut list = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        list.push_front(t);
        list.truncate(Self::KEEP);
    }

    pub fn recent(&self) -> Vec<Transition> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .iter()
            .cloned()
            .collect()
    }
}

impl Aggregator {
    pub fn new(
        settings: Arc<Settings>,
        board: Arc<ObservationBoard>,
        published: Arc<ArcSwap<Snapshot>>,
        reporter: Reporter,
        overrides: Option<Arc<OverrideStore>>,
        saved: Option<Arc<VerdictStore>>,
    ) -> Self {
        Self {
            settings,
            board,
            published,
            reporter,
            overrides,
            saved,
            confirmer: confirm::Confirmer::default(),
        }
    }

    /// Asks the probers behind `asks` to check a suspected endpoint at once
    /// (`cluster.confirm_suspicions`, on by default).
    pub fn confirming(mut self, asks: crate::exchange::asks::Asks) -> Self {
        if self.settings.cluster.confirm_suspicions {
            self.confirmer = confirm::Confirmer::new(asks);
        }
        self
    }

    /// The snapshot to serve before the first round: the verdicts saved by the previous run
    /// (held, without quorum, until probers decide) under the overrides in force, every other
    /// endpoint undecided.
    pub fn initial(
        settings: &Settings,
        restored: &BTreeMap<EndpointId, Health>,
        overrides: BTreeMap<EndpointId, crate::state::overrides::Override>,
    ) -> Snapshot {
        let required = settings.cluster.quorum.required(settings.regions.len());
        let verdicts = restored
            .iter()
            .map(|(id, health)| {
                (
                    id.clone(),
                    Arc::new(Verdict {
                        health: *health,
                        ..Verdict::unknown(required)
                    }),
                )
            })
            .collect();
        snapshot::build(
            settings,
            snapshot::Decided::held(verdicts, QuorumState::default()),
            overrides,
            &Snapshot::default(),
            0,
            crate::snapshot::Undecided::Wait,
        )
    }

    pub async fn run(mut self, shutdown: CancellationToken) {
        let started = Instant::now();
        let cluster = &self.settings.cluster;
        // The sweep: every endpoint decided again (observations that went stale stop voting),
        // within a quarter of stale_after.
        let tick =
            (cluster.stale_after / 4).clamp(Duration::from_millis(100), Duration::from_secs(5));
        let required = cluster.quorum.required(self.settings.regions.len());
        let mut previous = self.published.load_full();
        // After a reload (or a restart with saved verdicts), verdicts carry over: they are not
        // re-decided from scratch.
        let mut verdicts: crate::quorum::Verdicts = previous.verdicts.clone();
        let endpoint_ids: Vec<EndpointId> = self
            .settings
            .endpoints
            .iter()
            .map(|e| e.id.clone())
            .collect();
        // The last full round: which probers are fresh and impaired, between two of them.
        let mut last_full: Option<quorum::Round> = None;
        let mut next_sweep = Instant::now();
        let mut generation = previous.generation;
        // Reports that come before this wait (with those that come meanwhile) for it.
        let mut quiet_until = Instant::now();
        loop {
            let board_woke = tokio::select! {
                () = self.board.changed() => {
                    tokio::select! {
                        () = tokio::time::sleep_until(quiet_until) => {}
                        () = shutdown.cancelled() => return,
                    }
                    true
                }
                () = tokio::time::sleep_until(next_sweep) => false,
                // An override set or cleared (here, or anywhere in the fleet) applies at once.
                () = overrides_changed(self.overrides.as_deref()) => false,
                () = shutdown.cancelled() => return,
            };
            let now = Instant::now();
            let changes = self.board.take_changes();
            let overloaded = self.board.overloaded();
            // Decide (pure) ... every endpoint on the sweep (staleness, the status's details),
            // only those whose votes changed in between.
            // The endpoints this round decided (None: all of them).
            let mut decided: Option<Vec<EndpointId>> = None;
            let round = match &mut last_full {
                Some(last) if board_woke && !changes.all => {
                    let round = quorum::partial_round(
                        &quorum::RoundInputs {
                            regions: &self.settings.regions,
                            endpoints: &changes.endpoints,
                            latest: &self.board.latest_of(&changes.endpoints),
                            previous: &verdicts,
                            required,
                            stale_after: cluster.stale_after,
                            impaired_detection: cluster.impaired_detection,
                            overloaded: &overloaded,
                        },
                        last,
                        &if cluster.impaired_detection {
                            self.board.region_counts()
                        } else {
                            Default::default()
                        },
                        endpoint_ids.len(),
                        now,
                    );
                    if round.impaired == last.impaired
                        && round.reached == last.reached
                        && round
                            .verdicts
                            .iter()
                            .all(|(id, v)| verdicts.get(id).is_some_and(|p| p.same_as_shown(v)))
                    {
                        // Nothing an answer (or a drill watching the status) depends on
                        // changed; the next sweep shows the rest. A suspicion that does not
                        // change a vote (a check running overdue) is still asked about now.
                        let looked = self.confirmer.look_on(
                            &self.board,
                            Some(&changes.endpoints),
                            &verdicts,
                            &self.settings.regions,
                            now,
                        );
                        self.reporter.suspicions(looked);
                        continue;
                    }
                    last.fresh.clone_from(&round.fresh);
                    last.impaired.clone_from(&round.impaired);
                    last.reached = round.reached;
                    decided = Some(round.verdicts.keys().cloned().collect());
                    let mut all = verdicts.clone();
                    all.extend(round.verdicts);
                    quorum::Round {
                        verdicts: all,
                        ..round
                    }
                }
                _ => {
                    next_sweep = now + tick;
                    let round = self.board.with_latest(|latest| {
                        quorum::round(
                            &quorum::RoundInputs {
                                regions: &self.settings.regions,
                                endpoints: &endpoint_ids,
                                latest,
                                previous: &verdicts,
                                required,
                                stale_after: cluster.stale_after,
                                impaired_detection: cluster.impaired_detection,
                                overloaded: &overloaded,
                            },
                            now,
                        )
                    });
                    last_full = Some(quorum::Round {
                        verdicts: BTreeMap::new(),
                        fresh: round.fresh.clone(),
                        impaired: round.impaired.clone(),
                        overloaded: round.overloaded.clone(),
                        reached: round.reached,
                    });
                    round
                }
            };
            generation += 1;
            // Suspicions: the other probers are asked to check now; those that ended are
            // explained.
            let looked = self.confirmer.look_on(
                &self.board,
                decided.as_deref(),
                &round.verdicts,
                &self.settings.regions,
                now,
            );
            self.reporter.suspicions(looked);
            // ... say what changed ...
            let changed =
                self.reporter
                    .round(&self.settings, &verdicts, &round, decided.as_deref());
            let active = self
                .overrides
                .as_ref()
                .map(|o| o.active(crate::clock::unix_ms()))
                .unwrap_or_default();
            self.reporter.overrides(&active, self.overrides.as_deref());
            // ... build the answers ...
            let grace_over = now.duration_since(started) >= cluster.startup_grace;
            let building = Instant::now();
            let snap = snapshot::build(
                &self.settings,
                snapshot::Decided::round(round),
                active,
                &previous,
                generation,
                if grace_over {
                    snapshot::Undecided::NotUp
                } else {
                    snapshot::Undecided::Wait
                },
            );
            self.reporter
                .snapshot(&previous, &snap, grace_over, cluster.startup_grace);
            // ... and publish them whole.
            let snap = Arc::new(snap);
            if shutdown.is_cancelled() {
                // Replaced by a reload: the new generation publishes from now on.
                return;
            }
            self.published.store(snap.clone());
            let built = Instant::now();
            quiet_until = built + built.duration_since(building) * REBUILD_SPACING;
            // Saved after the answers are out: a slow disk never delays a failover.
            if changed && let Some(saved) = &self.saved {
                saved.save(&snap.verdicts, crate::clock::unix_ms());
            }
            verdicts = snap.verdicts.clone();
            previous = snap;
        }
    }
}

/// Resolves when the overrides change; never without a store.
async fn overrides_changed(store: Option<&OverrideStore>) {
    match store {
        Some(store) => store.changed().await,
        None => std::future::pending().await,
    }
}

/// What a reload keeps of the verdicts.
pub struct CarryOver {
    /// Verdicts of endpoints that exist before and after, probed the same way.
    pub verdicts: crate::quorum::Verdicts,
    /// Endpoints whose probe target changed: what was seen of the old target (verdict,
    /// observations) says nothing about the new one, so they start over.
    pub start_over: Vec<EndpointId>,
}

/// The reload rule (pure): verdicts carry over from `old` to `new` settings, except for
/// endpoints removed and endpoints whose check now targets something else (dialled address,
/// protocol, port, path, host, expectations: `EndpointSpec::same_target`). A new interval,
/// timeout, rise or fall keeps what was seen.
pub fn carry_over(old: &Settings, new: &Settings, verdicts: &crate::quorum::Verdicts) -> CarryOver {
    let start_over: Vec<EndpointId> = new
        .endpoints
        .iter()
        .filter(|e| {
            old.endpoint(&e.id)
                .is_some_and(|before| !before.same_target(e))
        })
        .map(|e| e.id.clone())
        .collect();
    let verdicts = verdicts
        .iter()
        .filter(|(id, _)| !start_over.contains(id) && new.endpoint(id).is_some())
        .map(|(id, v)| (id.clone(), v.clone()))
        .collect();
    CarryOver {
        verdicts,
        start_over,
    }
}

/// Turns what changed between rounds into logs (transitions only) and metrics, so that the
/// loop only decides and publishes.
pub struct Reporter {
    metrics: AggregatorMetrics,
    state_metrics: StateMetrics,
    history: Arc<History>,
    impaired: BTreeSet<Region>,
    overloaded: BTreeSet<Region>,
    /// Whether every endpoint's verdict series were set once (later rounds set only changes).
    exported: bool,
    /// Whether the last round had a quorum of fresh probers (the first one reached is logged).
    quorum: bool,
    expired_seen: u64,
    grace_reported: bool,
    /// Who suspected and who confirmed, for the transitions of the next round.
    attribution: HashMap<EndpointId, String>,
}

impl Reporter {
    pub fn new(
        metrics: AggregatorMetrics,
        state_metrics: StateMetrics,
        history: Arc<History>,
    ) -> Self {
        Self {
            metrics,
            state_metrics,
            history,
            impaired: BTreeSet::new(),
            overloaded: BTreeSet::new(),
            exported: false,
            quorum: false,
            expired_seen: 0,
            grace_reported: false,
            attribution: HashMap::new(),
        }
    }

    /// Counts the confirmations asked for and the suspicions that ended; keeps who suspected
    /// and confirmed for the transitions they explain.
    fn suspicions(&mut self, looked: confirm::Looked) {
        for (region, endpoint) in &looked.asked {
            self.metrics.confirmation_asked(region);
            tracing::debug!(%region, %endpoint, "asked prober {region} to check {endpoint} now");
        }
        for (endpoint, outcome) in looked.ended {
            match outcome {
                confirm::Outcome::Confirmed(why) => {
                    self.metrics.suspicion_ended(true);
                    self.attribution.insert(endpoint, why);
                }
                confirm::Outcome::Unconfirmed(why) => {
                    self.metrics.suspicion_ended(false);
                    tracing::info!(%endpoint, "endpoint {endpoint}: {why}");
                }
            }
        }
    }

    /// Logs and counts a round against the previous verdicts; true if a verdict changed.
    /// `only`: the endpoints the round decided again (None: every endpoint).
    fn round(
        &mut self,
        settings: &Settings,
        before: &crate::quorum::Verdicts,
        round: &quorum::Round,
        only: Option<&[EndpointId]>,
    ) -> bool {
        if round.impaired != self.impaired {
            for region in round.impaired.difference(&self.impaired) {
                tracing::warn!(%region, "prober {region} is impaired: it sees every endpoint Down while other probers see some Up; its Down votes are ignored");
            }
            for region in self.impaired.difference(&round.impaired) {
                tracing::info!(%region, "prober {region} is no longer impaired");
            }
            self.impaired = round.impaired.clone();
        }
        if round.overloaded != self.overloaded {
            for region in round.overloaded.difference(&self.overloaded) {
                tracing::warn!(%region, "prober {region} says it is overloaded (its checks start late); its Down votes are ignored until it keeps up");
            }
            for region in self.overloaded.difference(&round.overloaded) {
                tracing::info!(%region, "prober {region} keeps up again; its Down votes count");
            }
            self.overloaded = round.overloaded.clone();
        }
        let probers = settings.regions.len();
        let required = settings.cluster.quorum.required(probers);
        if round.reached != self.quorum {
            if round.reached {
                tracing::info!("quorum: {} of {probers} probers fresh", round.fresh.len());
            } else {
                let missing: Vec<&str> = settings
                    .regions
                    .iter()
                    .filter(|r| !round.fresh.contains(r))
                    .map(Region::as_str)
                    .collect();
                tracing::warn!(missing = ?missing,
                    "no quorum: only {} of {probers} probers fresh ({required} needed), missing {}; verdicts hold their last value",
                    round.fresh.len(), missing.join(", "));
            }
            self.quorum = round.reached;
        }
        self.metrics.quorum(
            round.reached,
            round.fresh.len(),
            &settings.regions,
            &round.impaired,
            &round.overloaded,
        );
        let mut changed = false;
        if !self.exported && only.is_none() {
            // A new configuration: endpoints it no longer has lose their series.
            self.metrics
                .keep_endpoints(|id| round.verdicts.contains_key(id));
        }
        let decided: Box<dyn Iterator<Item = (&EndpointId, &Arc<Verdict>)>> = match only {
            Some(ids) => Box::new(ids.iter().filter_map(|id| round.verdicts.get_key_value(id))),
            None => Box::new(round.verdicts.iter()),
        };
        for (id, verdict) in decided {
            let was = before.get(id).map(|v| v.health).unwrap_or_default();
            if verdict.health != was {
                changed = true;
                let why = match self.attribution.remove(id) {
                    Some(who) => format!("{}; {who}", verdict.explain()),
                    None => verdict.explain(),
                };
                tracing::info!(endpoint = %id, from = %was, to = %verdict.health,
                    "endpoint {id} becomes {}: {why}", verdict.health);
                self.metrics.verdict_changed(id, verdict.health);
                self.history.push(Transition {
                    at_unix_ms: crate::clock::unix_ms(),
                    endpoint: id.clone(),
                    from: was,
                    to: verdict.health,
                    why,
                });
            }
            let was_reached = before.get(id).is_none_or(|v| v.quorum_reached);
            if was_reached
                && !verdict.quorum_reached
                && verdict.health != crate::model::Health::Unknown
            {
                tracing::warn!(endpoint = %id, "endpoint {id}: {}", verdict.explain());
            }
            // Only what changed: at 10,000 endpoints, setting every series every round was
            // most of a round's cost.
            let counted = before.get(id).map(|v| (v.health, v.up, v.down));
            if counted != Some((verdict.health, verdict.up, verdict.down)) || !self.exported {
                self.metrics
                    .verdict(id, verdict.health, verdict.up, verdict.down);
            }
        }
        self.exported = true;
        changed
    }

    /// The overrides in force, and those that expired since the last round.
    fn overrides(
        &mut self,
        active: &BTreeMap<EndpointId, crate::state::overrides::Override>,
        store: Option<&OverrideStore>,
    ) {
        self.state_metrics.overrides(active);
        if let Some(store) = store {
            let total = store.expired_total();
            for _ in self.expired_seen..total {
                self.state_metrics.override_changed("expired");
            }
            self.expired_seen = total;
        }
    }

    /// Logs records whose answer changed, readiness and the end of the startup grace; exports
    /// the answers.
    fn snapshot(
        &mut self,
        previous: &Snapshot,
        next: &Snapshot,
        grace_over: bool,
        grace: Duration,
    ) {
        if grace_over && !self.grace_reported {
            self.grace_reported = true;
            if previous
                .records
                .values()
                .any(|r| r.answer == Answer::NotReady)
            {
                tracing::warn!(
                    "startup grace ({grace:?}) is over with undecided endpoints; they now count as not Up"
                );
            }
        }
        for (key, answer) in &next.records {
            let before = previous.records.get(key);
            let still_waiting = answer.answer == Answer::NotReady
                && before.is_some_and(|b| b.answer == Answer::NotReady);
            if !still_waiting
                && before.map(|a| (&a.answer, &a.reason)) != Some((&answer.answer, &answer.reason))
            {
                let answers = match answer.answer {
                    Answer::NotReady => "SERVFAIL".to_string(),
                    _ => format!("{:?}", answer.answer.addresses()),
                };
                tracing::info!(record = %key.0, rtype = key.1.as_str(),
                    "record {} {} answers {answers}: {}", key.0, key.1.as_str(), answer.reason.describe());
            }
        }
        if next.ready && !previous.ready {
            tracing::info!("ready: every managed record has a decided answer");
        }
        self.metrics
            .record_answers(next.records.iter().map(|((name, kind), a)| {
                (
                    name.as_str(),
                    kind.as_str(),
                    a.reason.code(),
                    a.answer.addresses().len(),
                )
            }));
        self.metrics.published(next.generation, next.ready);
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::{
        model::{Health, Observation, Region},
        snapshot::Answer,
    };

    const FLEET: &str = r#"
        [cluster]
        stale_after = "5s"
        [[prober]]
        region = "a"
        [[prober]]
        region = "b"
        [[prober]]
        region = "c"
        [check.t]
        protocol = "tcp"
        port = 9
        interval = "1s"
        timeout = "500ms"
        [[record]]
        name = "www.example.com"
        endpoints = [{ name = "one", address = "192.0.2.1" }, { name = "two", address = "192.0.2.2" }]
    "#;

    fn report(board: &ObservationBoard, region: &str, endpoint: &str, health: Health) {
        board.report(Observation {
            endpoint: EndpointId::new(endpoint),
            region: Region::new(region),
            health,
            successes: 3,
            failures: 0,
            last_rtt: None,
            smoothed_rtt: None,
            last_failure: None,
            local_error: None,
            cert_expiry: None,
            observed_at: Instant::now(),
            overdue: false,
            seq: crate::exchange::board::next_seq(),
        });
    }

    /// Advances paused time in small steps until `done` holds (at most `limit` of virtual time).
    async fn until(limit: Duration, done: impl Fn() -> bool) {
        let deadline = Instant::now() + limit;
        while !done() {
            assert!(
                Instant::now() < deadline,
                "condition not reached within {limit:?}"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    #[test]
    fn a_reload_keeps_verdicts_of_endpoints_probed_the_same_way_only() {
        let fleet_with = |second: &str, timing: &str| {
            Settings::from_toml(
                &format!(
                    "[[prober]]\nregion = \"a\"\n[check.t]\nprotocol = \"tcp\"\nport = 9\n{timing}\
                     [[record]]\nname = \"www.example.com\"\nendpoints = [{{ name = \"one\", address = \"192.0.2.1\" }}, {second}]\n"
                ),
                "t.toml",
                Path::new("."),
            )
            .expect("valid")
        };
        let fleet = |second: &str| fleet_with(second, "");
        let old = fleet(
            "{ name = \"two\", address = \"192.0.2.2\" }, { name = \"gone\", address = \"192.0.2.9\" }",
        );
        let new = fleet(
            "{ name = \"two\", address = \"192.0.2.3\" }, { name = \"fresh\", address = \"192.0.2.4\" }",
        );
        let up = Verdict {
            health: Health::Up,
            ..Verdict::unknown(1)
        };
        let verdicts: crate::quorum::Verdicts = ["one", "two", "gone"]
            .into_iter()
            .map(|id| (EndpointId::new(id), Arc::new(up.clone())))
            .collect();
        let carried = carry_over(&old, &new, &verdicts);
        // one: unchanged, kept; two: another address, starts over; gone: removed; fresh: new.
        assert_eq!(
            carried
                .verdicts
                .keys()
                .map(EndpointId::as_str)
                .collect::<Vec<_>>(),
            vec!["one"]
        );
        assert_eq!(carried.start_over, vec![EndpointId::new("two")]);
        // Checked more often, with other timeouts and thresholds: the same target, all kept.
        let retimed = fleet_with(
            "{ name = \"two\", address = \"192.0.2.2\" }, { name = \"gone\", address = \"192.0.2.9\" }",
            "interval = \"250ms\"\ntimeout = \"200ms\"\nrise = 3\nfall = 5\n",
        );
        let carried = carry_over(&old, &retimed, &verdicts);
        assert_eq!(carried.verdicts.len(), 3);
        assert!(carried.start_over.is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn verdicts_hold_when_reports_go_stale_and_follow_a_fresh_quorum() {
        let settings =
            Arc::new(Settings::from_toml(FLEET, "t.toml", Path::new(".")).expect("valid"));
        let board = Arc::new(ObservationBoard::new());
        let published = Arc::new(ArcSwap::from_pointee(Aggregator::initial(
            &settings,
            &BTreeMap::new(),
            BTreeMap::new(),
        )));
        let shutdown = CancellationToken::new();
        let registry = crate::metrics::Registry::new();
        let aggregator = Aggregator::new(
            settings.clone(),
            board.clone(),
            published.clone(),
            Reporter::new(
                AggregatorMetrics::new(&registry),
                StateMetrics::new(&registry),
                Arc::default(),
            ),
            None,
            None,
        );
        let task = tokio::spawn(aggregator.run(shutdown.clone()));
        let www = || {
            published
                .load()
                .records
                .get(&("www.example.com.".to_string(), crate::config::RecordKind::A))
                .map(|r| r.answer.clone())
        };
        let verdict = |id: &str| published.load().verdicts.get(&EndpointId::new(id)).cloned();

        assert_eq!(www(), Some(Answer::NotReady));
        for region in ["a", "b", "c"] {
            report(&board, region, "one", Health::Up);
            report(&board, region, "two", Health::Up);
        }
        until(Duration::from_secs(1), || published.load().ready).await;
        assert_eq!(
            www(),
            Some(Answer::Fixed(vec!["192.0.2.1".parse().expect("ip")]))
        );

        // Every report goes stale (after stale_after, 5 s, seen by the next sweep, at most
        // stale_after / 4 later): no quorum, the verdicts hold (fail static).
        tokio::time::sleep(Duration::from_secs(7)).await;
        let one = verdict("one").expect("verdict");
        assert_eq!(one.health, Health::Up);
        assert!(!one.quorum_reached);
        assert!(one.votes.iter().all(|v| !v.fresh));
        assert_eq!(
            www(),
            Some(Answer::Fixed(vec!["192.0.2.1".parse().expect("ip")]))
        );

        // One fresh Down report is not a quorum; two are.
        report(&board, "a", "one", Health::Down);
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(verdict("one").expect("verdict").health, Health::Up);
        report(&board, "b", "one", Health::Down);
        until(Duration::from_secs(1), || {
            verdict("one").is_some_and(|v| v.health == Health::Down)
        })
        .await;
        // "two" is still held Up without fresh reports, so the failover answer moves to it.
        assert_eq!(
            www(),
            Some(Answer::Fixed(vec!["192.0.2.2".parse().expect("ip")]))
        );

        shutdown.cancel();
        task.await.expect("aggregator stops on shutdown");
    }
}
