//! The aggregator: latest observations -> quorum verdicts -> a new answer snapshot, published
//! with one atomic swap. Wakes on every report and on a tick (so that stale reports stop voting).
//!
//! This is the thin shell around the pure `quorum` and `snapshot` modules; it owns the previous
//! verdicts and logs transitions (not individual probes).

use std::{
    collections::{BTreeMap, BTreeSet},
    sync::Arc,
    time::Duration,
};

use arc_swap::ArcSwap;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::{
    config::Settings,
    exchange::ObservationBoard,
    metrics::Metrics,
    model::{EndpointId, Health, Region},
    overrides::OverrideStore,
    quorum::{self, Verdict},
    snapshot::{self, Answer, QuorumState, Snapshot},
    verdict_store::VerdictStore,
};

/// How long to gather reports after the first one of a burst.
const COALESCE: Duration = Duration::from_millis(20);

pub struct Aggregator {
    settings: Arc<Settings>,
    board: Arc<ObservationBoard>,
    published: Arc<ArcSwap<Snapshot>>,
    metrics: Arc<Metrics>,
    overrides: Option<Arc<OverrideStore>>,
    history: Arc<History>,
    /// Where verdicts are saved for the next start (serving roles).
    saved: Option<Arc<VerdictStore>>,
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
        metrics: Arc<Metrics>,
        overrides: Option<Arc<OverrideStore>>,
        history: Arc<History>,
        saved: Option<Arc<VerdictStore>>,
    ) -> Self {
        Self {
            settings,
            board,
            published,
            metrics,
            overrides,
            history,
            saved,
        }
    }

    /// The snapshot to serve before the first round: the verdicts saved by the previous run
    /// (held, without quorum, until probers decide) under the overrides in force, every other
    /// endpoint undecided.
    pub fn initial(
        settings: &Settings,
        restored: &BTreeMap<EndpointId, Health>,
        overrides: BTreeMap<EndpointId, crate::overrides::Override>,
    ) -> Snapshot {
        let required = settings.cluster.quorum.required(settings.regions.len());
        let verdicts = restored
            .iter()
            .map(|(id, health)| {
                (
                    id.clone(),
                    Verdict {
                        health: *health,
                        ..Verdict::unknown(required)
                    },
                )
            })
            .collect();
        snapshot::build(
            settings,
            verdicts,
            overrides,
            &Snapshot::default(),
            0,
            false,
        )
    }

    pub async fn run(self, shutdown: CancellationToken) {
        let started = Instant::now();
        let cluster = &self.settings.cluster;
        let tick =
            (cluster.stale_after / 4).clamp(Duration::from_millis(100), Duration::from_secs(1));
        let required = cluster.quorum.required(self.settings.regions.len());
        let mut previous = self.published.load_full();
        // After a reload, verdicts carry over: they are not re-decided from scratch.
        let mut verdicts: BTreeMap<EndpointId, Verdict> = previous.verdicts.clone();
        let mut grace_reported = false;
        let endpoint_ids: Vec<EndpointId> = self
            .settings
            .endpoints
            .iter()
            .map(|e| e.id.clone())
            .collect();
        let mut last_impaired: BTreeSet<Region> = BTreeSet::new();
        // Before the first reports there is no quorum; the first one reached is logged.
        let mut quorum_state = false;
        let mut expired_seen = 0u64;
        for generation in (previous.generation + 1).. {
            tokio::select! {
                () = self.board.changed() => {
                    // Let the reports of one burst (every prober checking at once) arrive
                    // before deciding, instead of rebuilding once per report.
                    tokio::select! {
                        () = tokio::time::sleep(COALESCE) => {}
                        () = shutdown.cancelled() => return,
                    }
                }
                () = tokio::time::sleep(tick) => {}
                () = shutdown.cancelled() => return,
            }
            let now = Instant::now();
            let latest = self.board.latest();
            let impaired = if cluster.impaired_detection {
                quorum::impaired_regions(
                    &self.settings.regions,
                    &endpoint_ids,
                    &latest,
                    cluster.stale_after,
                    now,
                )
            } else {
                Default::default()
            };
            if impaired != last_impaired {
                for region in impaired.difference(&last_impaired) {
                    tracing::warn!(%region, "prober {region} is impaired: it sees every endpoint Down while other probers see some Up; its Down votes are ignored");
                }
                for region in last_impaired.difference(&impaired) {
                    tracing::info!(%region, "prober {region} is no longer impaired");
                }
                last_impaired = impaired.clone();
            }
            let fresh: Vec<&Region> = self
                .settings
                .regions
                .iter()
                .filter(|r| {
                    latest.iter().any(|((region, _), o)| {
                        region == *r
                            && now.saturating_duration_since(o.observed_at) <= cluster.stale_after
                    })
                })
                .collect();
            let has_quorum = fresh.len() >= required;
            if has_quorum != quorum_state {
                if has_quorum {
                    tracing::info!(
                        "quorum: {} of {} probers fresh",
                        fresh.len(),
                        self.settings.regions.len()
                    );
                } else {
                    let missing: Vec<&str> = self
                        .settings
                        .regions
                        .iter()
                        .filter(|r| !fresh.contains(r))
                        .map(Region::as_str)
                        .collect();
                    tracing::warn!(missing = ?missing,
                        "no quorum: only {} of {} probers fresh ({} needed), missing {}; verdicts hold their last value",
                        fresh.len(), self.settings.regions.len(), required, missing.join(", "));
                }
                quorum_state = has_quorum;
            }
            self.metrics
                .quorum(has_quorum, fresh.len(), &self.settings.regions, &impaired);
            let next = quorum::decide_all(
                &verdicts,
                endpoint_ids.iter(),
                &self.settings.regions,
                &latest,
                &impaired,
                required,
                cluster.stale_after,
                now,
            );
            let mut changed = false;
            for (id, verdict) in &next {
                let before = verdicts.get(id).map(|v| v.health).unwrap_or_default();
                if verdict.health != before {
                    changed = true;
                    tracing::info!(endpoint = %id, from = %before, to = %verdict.health,
                        "endpoint {id} becomes {}: {}", verdict.health, verdict.explain());
                    self.metrics.verdict_changed(id, verdict.health);
                    self.history.push(Transition {
                        at_unix_ms: crate::clock::unix_ms(),
                        endpoint: id.clone(),
                        from: before,
                        to: verdict.health,
                        why: verdict.explain(),
                    });
                }
                let was_reached = verdicts.get(id).is_none_or(|v| v.quorum_reached);
                if was_reached
                    && !verdict.quorum_reached
                    && verdict.health != crate::model::Health::Unknown
                {
                    tracing::warn!(endpoint = %id, "endpoint {id}: {}", verdict.explain());
                }
                self.metrics
                    .verdict(id, verdict.health, verdict.up, verdict.down);
            }
            if changed && let Some(saved) = &self.saved {
                saved.save(&next, crate::clock::unix_ms());
            }
            let quorum = QuorumState {
                reached: has_quorum,
                fresh: fresh.iter().map(|r| (*r).clone()).collect(),
                impaired: impaired.clone(),
            };
            let grace_over = now.duration_since(started) >= cluster.startup_grace;
            let active = self
                .overrides
                .as_ref()
                .map(|o| o.active(crate::clock::unix_ms()))
                .unwrap_or_default();
            self.metrics.overrides(&endpoint_ids, &active);
            if let Some(store) = &self.overrides {
                let total = store
                    .expired_total
                    .load(std::sync::atomic::Ordering::Relaxed);
                for _ in expired_seen..total {
                    self.metrics.override_changed("expired");
                }
                expired_seen = total;
            }
            let mut snap = snapshot::build(
                &self.settings,
                next.clone(),
                active,
                &previous,
                generation,
                grace_over,
            );
            snap.quorum = quorum;
            if grace_over && !grace_reported {
                grace_reported = true;
                if previous
                    .records
                    .values()
                    .any(|r| r.answer == Answer::NotReady)
                {
                    tracing::warn!(
                        "startup grace ({:?}) is over with undecided endpoints; they now count as not Up",
                        cluster.startup_grace
                    );
                }
            }
            for (key, answer) in &snap.records {
                let before = previous.records.get(key);
                let still_waiting = answer.answer == Answer::NotReady
                    && before.is_some_and(|b| b.answer == Answer::NotReady);
                if !still_waiting
                    && before.map(|a| (&a.answer, &a.reason))
                        != Some((&answer.answer, &answer.reason))
                {
                    let answers = match answer.answer {
                        Answer::NotReady => "SERVFAIL".to_string(),
                        _ => format!("{:?}", answer.answer.addresses()),
                    };
                    tracing::info!(record = %key.0, rtype = key.1.as_str(),
                        "record {} {} answers {answers}: {}", key.0, key.1.as_str(), answer.reason.describe());
                }
            }
            if snap.ready && !previous.ready {
                tracing::info!("ready: every managed record has a decided answer");
            }
            self.metrics
                .record_answers(snap.records.iter().map(|((name, kind), a)| {
                    (
                        name.as_str(),
                        kind.as_str(),
                        a.reason.code(),
                        a.answer.addresses().len(),
                    )
                }));
            self.metrics.published(generation, snap.ready);
            let snap = Arc::new(snap);
            if shutdown.is_cancelled() {
                // Replaced by a reload: the new generation publishes from now on.
                return;
            }
            self.published.store(snap.clone());
            previous = snap;
            verdicts = next;
        }
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

    fn report(board: &ObservationBoard, region: &str, endpoint: &str, health: Health, seq: u64) {
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
            seq,
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
        let aggregator = Aggregator::new(
            settings.clone(),
            board.clone(),
            published.clone(),
            Arc::new(Metrics::new()),
            None,
            Arc::default(),
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
            report(&board, region, "one", Health::Up, 1);
            report(&board, region, "two", Health::Up, 1);
        }
        until(Duration::from_secs(1), || published.load().ready).await;
        assert_eq!(
            www(),
            Some(Answer::Fixed(vec!["192.0.2.1".parse().expect("ip")]))
        );

        // Every report goes stale: no quorum, the verdicts hold (fail static).
        tokio::time::sleep(Duration::from_secs(6)).await;
        let one = verdict("one").expect("verdict");
        assert_eq!(one.health, Health::Up);
        assert!(!one.quorum_reached);
        assert!(one.votes.iter().all(|v| !v.fresh));
        assert_eq!(
            www(),
            Some(Answer::Fixed(vec!["192.0.2.1".parse().expect("ip")]))
        );

        // One fresh Down report is not a quorum; two are.
        report(&board, "a", "one", Health::Down, 2);
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(verdict("one").expect("verdict").health, Health::Up);
        report(&board, "b", "one", Health::Down, 2);
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
