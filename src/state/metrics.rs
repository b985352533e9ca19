//! The state's metrics: problems of the stores at start, the overrides in force and their
//! changes, the last drill of every record.

use std::collections::BTreeMap;

use prometheus::{GaugeVec, IntCounterVec, IntGaugeVec};

use super::{
    drills::DrillResult,
    overrides::{Action, Override},
};
use crate::{config::RecordSpec, metrics::Registry, model::EndpointId};

#[derive(Clone)]
pub struct StateMetrics {
    problem: IntGaugeVec,
    backend_reachable: IntGaugeVec,
    overrides: IntGaugeVec,
    /// The override series exported, to remove those that ended.
    exported: std::sync::Arc<std::sync::Mutex<BTreeMap<EndpointId, Action>>>,
    override_changes: IntCounterVec,
    drill_last: GaugeVec,
    drill_rto: GaugeVec,
    drill_target: GaugeVec,
    drill_met: IntGaugeVec,
}

impl StateMetrics {
    pub fn new(registry: &Registry) -> Self {
        let drill = |name: &str, help: &str| registry.gauge_vec(name, help, &["record", "type"]);
        Self {
            problem: registry.int_gauge_vec(
                "vantage_state_problem",
                "1 when the state kept in admin.state_dir had a problem at start (a corrupt file moved aside, a directory that cannot be written; see /v1/status), by store.",
                &["store"],
            ),
            backend_reachable: registry.int_gauge_vec(
                "vantage_state_backend_reachable",
                "1 when the state backend (file, or etcd for the fleet) can be reached; 0: answers keep the last overrides seen and override changes fail.",
                &["backend"],
            ),
            overrides: registry.int_gauge_vec(
                "vantage_endpoint_override",
                "1 for the operator override in force on an endpoint (action = force_up, force_down or drain); no series for an endpoint without one.",
                &["endpoint", "action"],
            ),
            exported: Default::default(),
            override_changes: registry.int_counter_vec(
                "vantage_override_changes_total",
                "Override changes, by what happened (set, clear, expired).",
                &["what"],
            ),
            drill_last: drill(
                "vantage_drill_last_timestamp_seconds",
                "Unix time of the record's last failover drill; 0 for a record with an rto target that was never drilled.",
            ),
            drill_rto: drill(
                "vantage_drill_rto_seconds",
                "Recovery time measured by the record's last drill (absent when it did not recover within the drill's timeout).",
            ),
            drill_target: drill(
                "vantage_drill_rto_target_seconds",
                "The record's rto target from the configuration.",
            ),
            drill_met: registry.int_gauge_vec(
                "vantage_drill_target_met",
                "1 when the record's last drill met its rto target, 0 when it missed it.",
                &["record", "type"],
            ),
        }
    }

    /// Whether a store (`overrides`, `drills`, `verdicts`) had a problem at start.
    pub fn problem(&self, store: &str, problem: bool) {
        self.problem
            .with_label_values(&[store])
            .set(i64::from(problem));
    }

    /// Whether the state backend can be reached.
    pub fn backend(&self, backend: &super::overrides::Backend) {
        self.backend_reachable
            .with_label_values(&[backend.kind])
            .set(i64::from(backend.reachable));
    }

    /// Overrides in force: 1 for each endpoint's current override action.
    /// The overrides in force: one series per endpoint with an override (none for the others,
    /// so that the series stay few at 10,000 endpoints).
    pub fn overrides(&self, active: &BTreeMap<EndpointId, Override>) {
        let mut exported = self
            .exported
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let now: BTreeMap<EndpointId, Action> = active
            .iter()
            .map(|(id, o)| (id.clone(), o.action))
            .collect();
        for (id, action) in exported.iter() {
            if now.get(id) != Some(action) {
                let _ = self
                    .overrides
                    .remove_label_values(&[id.as_str(), action.as_str()]);
            }
        }
        for (id, action) in &now {
            self.overrides
                .with_label_values(&[id.as_str(), action.as_str()])
                .set(1);
        }
        *exported = now;
    }

    /// An override was set, cleared or expired.
    pub fn override_changed(&self, what: &str) {
        self.override_changes.with_label_values(&[what]).inc();
    }

    /// The drill gauges from the latest results and the records' targets (set at scrape time,
    /// so that they follow reloads).
    pub fn drills(&self, records: &[RecordSpec], results: &[DrillResult]) {
        for g in [&self.drill_last, &self.drill_rto, &self.drill_target] {
            g.reset();
        }
        self.drill_met.reset();
        for r in records {
            let labels = [r.name.as_str(), r.kind.as_str()];
            if let Some(rto) = r.rto {
                self.drill_target
                    .with_label_values(&labels)
                    .set(rto.as_secs_f64());
                self.drill_last.with_label_values(&labels).set(0.0);
            }
        }
        for r in results {
            let labels = [r.record.as_str(), r.kind.as_str()];
            self.drill_last
                .with_label_values(&labels)
                .set(r.finished_unix_ms as f64 / 1000.0);
            if let Some(ms) = r.rto_ms {
                self.drill_rto
                    .with_label_values(&labels)
                    .set(ms as f64 / 1000.0);
            }
            if let Some(met) = r.met {
                self.drill_met
                    .with_label_values(&labels)
                    .set(i64::from(met));
            }
        }
    }
}
