//! The aggregator's metrics: quorum state and verdicts of the latest round, verdict
//! transitions, what each managed record answers, the published snapshot.

use std::{
    collections::{BTreeSet, HashMap},
    sync::{Arc, Mutex, PoisonError},
};

use prometheus::{IntCounterVec, IntGauge, IntGaugeVec};

use crate::{
    metrics::{
        Registry,
        endpoints::{EndpointFamily, Kind},
    },
    model::{EndpointId, Health, Region},
};

/// The label values of a verdict's state, in `Health::ALL`'s order.
const STATES: [&str; 3] = ["up", "down", "unknown"];

fn column(state: Health) -> usize {
    Health::ALL
        .iter()
        .position(|&h| h == state)
        .expect("every state is in Health::ALL")
}

#[derive(Clone)]
pub struct AggregatorMetrics {
    verdict: EndpointFamily,
    votes: EndpointFamily,
    transitions: EndpointFamily,
    record_answers: IntGaugeVec,
    /// The reason label currently set per (record, type).
    record_reasons: Arc<Mutex<HashMap<(String, String), String>>>,
    ready: IntGauge,
    generation: IntGauge,
    quorum_reached: IntGauge,
    fresh_probers: IntGauge,
    impaired: IntGaugeVec,
    overloaded: IntGaugeVec,
    confirmations: IntCounterVec,
    suspicions: IntCounterVec,
}

impl AggregatorMetrics {
    pub fn new(registry: &Registry) -> Self {
        Self {
            verdict: registry.per_endpoint(
                "vantage_endpoint_verdict",
                "1 for the current quorum verdict of an endpoint (state = up, down or unknown).",
                Kind::Gauge,
                Some(("state", &STATES)),
            ),
            votes: registry.per_endpoint(
                "vantage_endpoint_votes",
                "Fresh prober votes for an endpoint in the latest quorum round, by reported state.",
                Kind::Gauge,
                Some(("state", &STATES[..2])),
            ),
            transitions: registry.per_endpoint(
                "vantage_verdict_transitions_total",
                "Changes of an endpoint's quorum verdict, by the state it changed to.",
                Kind::Counter,
                Some(("to", &STATES)),
            ),
            record_answers: registry.int_gauge_vec(
                "vantage_record_answer_endpoints",
                "Number of addresses a managed record currently answers, with the reason for the answer.",
                &["record", "type", "reason"],
            ),
            record_reasons: Arc::default(),
            ready: registry.int_gauge(
                "vantage_ready",
                "1 when every managed record has a decided answer (the first quorum round completed).",
            ),
            generation: registry.int_gauge(
                "vantage_snapshot_generation",
                "Generation number of the answer snapshot currently published to the DNS server.",
            ),
            quorum_reached: registry.int_gauge(
                "vantage_quorum_reached",
                "1 when at least a quorum of probers have fresh reports; 0 means verdicts hold their last value (fail static).",
            ),
            fresh_probers: registry.int_gauge(
                "vantage_probers_fresh",
                "Probers whose latest report is younger than stale_after.",
            ),
            impaired: registry.int_gauge_vec(
                "vantage_prober_impaired",
                "1 when a prober sees every endpoint Down while others see some Up; its Down votes are ignored.",
                &["region"],
            ),
            confirmations: registry.int_counter_vec(
                "vantage_confirmations_asked_total",
                "Requests to a prober to check an endpoint now, because another prober suspects it (confirmation on demand), by the region asked.",
                &["region"],
            ),
            suspicions: registry.int_counter_vec(
                "vantage_quorum_suspicions_total",
                "Suspicions (a prober's failed check while the verdict was not Down) that ended: confirmed (the verdict went Down) or unconfirmed (every prober saw it succeed first: a false alarm).",
                &["outcome"],
            ),
            overloaded: registry.int_gauge_vec(
                "vantage_prober_overloaded",
                "1 while a prober says it is overloaded (its checks start late): its Down votes are ignored.",
                &["region"],
            ),
        }
    }

    /// An endpoint's verdict and the fresh votes behind it.
    pub fn verdict(
        &self,
        endpoint: &EndpointId,
        state: Health,
        up_votes: usize,
        down_votes: usize,
    ) {
        self.verdict.one_hot(endpoint, column(state));
        self.votes
            .set(endpoint, column(Health::Up), up_votes as i64);
        self.votes
            .set(endpoint, column(Health::Down), down_votes as i64);
    }

    pub fn confirmation_asked(&self, region: &Region) {
        self.confirmations
            .with_label_values(&[region.as_str()])
            .inc();
    }

    pub fn suspicion_ended(&self, confirmed: bool) {
        let outcome = if confirmed {
            "confirmed"
        } else {
            "unconfirmed"
        };
        self.suspicions.with_label_values(&[outcome]).inc();
    }

    pub fn verdict_changed(&self, endpoint: &EndpointId, to: Health) {
        self.transitions.inc(endpoint, column(to));
    }

    /// Drops the series of endpoints that are no longer configured (after a reload).
    pub fn keep_endpoints(&self, keep: impl Fn(&EndpointId) -> bool) {
        self.verdict.retain(&keep);
        self.votes.retain(&keep);
        self.transitions.retain(&keep);
    }

    /// Quorum state of the latest round: probers with fresh reports, impaired probers.
    pub fn quorum(
        &self,
        reached: bool,
        fresh: usize,
        regions: &[Region],
        impaired: &BTreeSet<Region>,
        overloaded: &BTreeSet<Region>,
    ) {
        self.quorum_reached.set(i64::from(reached));
        self.fresh_probers.set(fresh as i64);
        for outcome in ["confirmed", "unconfirmed"] {
            self.suspicions.with_label_values(&[outcome]).inc_by(0);
        }
        for region in regions {
            self.confirmations
                .with_label_values(&[region.as_str()])
                .inc_by(0);
            self.impaired
                .with_label_values(&[region.as_str()])
                .set(i64::from(impaired.contains(region)));
            self.overloaded
                .with_label_values(&[region.as_str()])
                .set(i64::from(overloaded.contains(region)));
        }
    }

    /// Sets the per-record answer gauge; a record's series with its previous reason is removed
    /// (never the whole family, so a scrape always sees every record).
    pub fn record_answers<'a>(
        &self,
        answers: impl Iterator<Item = (&'a str, &'a str, &'a str, usize)>,
    ) {
        let mut reasons = self
            .record_reasons
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        for (record, kind, reason, count) in answers {
            self.record_answers
                .with_label_values(&[record, kind, reason])
                .set(count as i64);
            let key = (record.to_string(), kind.to_string());
            if let Some(old) = reasons.insert(key, reason.to_string())
                && old != reason
            {
                // The series may not exist (first round); nothing to remove then.
                if self
                    .record_answers
                    .remove_label_values(&[record, kind, &old])
                    .is_err()
                {
                    tracing::debug!(record, kind, reason = %old, "no series to remove");
                }
            }
        }
    }

    pub fn published(&self, generation: u64, ready: bool) {
        self.generation.set(generation as i64);
        self.ready.set(i64::from(ready));
    }
}
