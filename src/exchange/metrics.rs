//! The exchange's metrics: pulls of each remote prober and why reports were refused (the
//! aggregator's side), requests a prober refused (the prober's side).

use std::time::Duration;

use prometheus::{GaugeVec, IntCounterVec, IntGaugeVec};

use super::auth::Rejection;
use crate::{metrics::Registry, model::Region};

#[derive(Clone)]
pub struct ExchangeMetrics {
    polls: IntCounterVec,
    rejected: IntCounterVec,
    reachable: IntGaugeVec,
    report_age: GaugeVec,
    unknown_endpoints: IntCounterVec,
    requests_rejected: IntCounterVec,
    asked: IntCounterVec,
}

impl ExchangeMetrics {
    pub fn new(registry: &Registry) -> Self {
        Self {
            polls: registry.int_counter_vec(
                "vantage_prober_polls_total",
                "Pulls of a remote prober's observations, by region and result (ok, unreachable, rejected).",
                &["region", "result"],
            ),
            rejected: registry.int_counter_vec(
                "vantage_prober_reports_rejected_total",
                "Prober reports rejected, by region and reason (unauthenticated, bad_signature, replayed, stale, wrong_region, malformed; refused_by_prober_stale and refused_by_prober_signature when the prober refused our request: clock skew or another fleet secret).",
                &["region", "reason"],
            ),
            reachable: registry.int_gauge_vec(
                "vantage_prober_reachable",
                "1 when the latest pull of a remote prober returned an accepted report.",
                &["region"],
            ),
            report_age: registry.gauge_vec(
                "vantage_prober_report_age_seconds",
                "Age of the latest accepted report from a remote prober.",
                &["region"],
            ),
            unknown_endpoints: registry.int_counter_vec(
                "vantage_prober_report_unknown_endpoints_total",
                "Observations in prober reports for endpoints this configuration does not have, dropped.",
                &["region"],
            ),
            requests_rejected: registry.int_counter_vec(
                "vantage_observation_requests_rejected_total",
                "Requests for this prober's observations that were refused, by reason.",
                &["reason"],
            ),
            asked: registry.int_counter_vec(
                "vantage_check_requests_total",
                "Endpoints aggregators asked this prober to check now (signed POST /v1/check), by what became of each: queued (checked now unless checked very recently or about due) or dropped (queue full).",
                &["result"],
            ),
        }
    }

    /// One pull of a remote prober: `result` is ok, unreachable or rejected.
    pub fn poll(&self, region: &Region, result: &str, rejection: Option<Rejection>) {
        self.polls
            .with_label_values(&[region.as_str(), result])
            .inc();
        if let Some(r) = rejection {
            self.rejected
                .with_label_values(&[region.as_str(), r.label()])
                .inc();
        }
    }

    /// Reachability and report age of a prober; the first call for a region also starts its
    /// rejection counters at 0 (so that the first rejection shows in `increase()`).
    pub fn link(&self, region: &Region, reachable: bool, report_age: Option<Duration>) {
        for rejection in Rejection::ALL {
            self.rejected
                .with_label_values(&[region.as_str(), rejection.label()]);
        }
        self.reachable
            .with_label_values(&[region.as_str()])
            .set(i64::from(reachable));
        if let Some(age) = report_age {
            self.report_age
                .with_label_values(&[region.as_str()])
                .set(age.as_secs_f64());
        }
    }

    /// Observations of endpoints we do not have, dropped from a prober's report.
    pub fn unknown_endpoints(&self, region: &Region, count: u64) {
        self.unknown_endpoints
            .with_label_values(&[region.as_str()])
            .inc_by(count);
    }

    /// Endpoints an aggregator asked this prober to check now.
    pub fn asked(&self, queued: usize, dropped: usize) {
        self.asked
            .with_label_values(&["queued"])
            .inc_by(queued as u64);
        self.asked
            .with_label_values(&["dropped"])
            .inc_by(dropped as u64);
    }

    /// A prober refused a request for its observations.
    pub fn request_rejected(&self, rejection: Rejection) {
        self.requests_rejected
            .with_label_values(&[rejection.label()])
            .inc();
    }
}
