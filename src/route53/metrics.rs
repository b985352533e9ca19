//! The reconciler's metrics: API calls, changes made, each record's sync state, conflicts,
//! pending changes, refused cycles, time to INSYNC.

use prometheus::{Gauge, Histogram, IntCounter, IntCounterVec, IntGauge, IntGaugeVec};

use super::{
    plan::Step,
    status::{RecordSync, SyncState},
};
use crate::metrics::Registry;

#[derive(Clone)]
pub struct Route53Metrics {
    records: IntGaugeVec,
    records_by_state: IntGaugeVec,
    calls: IntCounterVec,
    changes: IntCounterVec,
    conflicts: IntGaugeVec,
    pending: IntGauge,
    last_sync: Gauge,
    refused: IntCounter,
    insync_seconds: Histogram,
}

impl Route53Metrics {
    pub fn new(registry: &Registry) -> Self {
        let records_by_state = registry.int_gauge_vec(
            "vantage_route53_records",
            "Records pushed to Route53, by state (0 in processes that push none).",
            &["state"],
        );
        for state in SyncState::ALL {
            records_by_state.with_label_values(&[state.as_str()]);
        }
        Self {
            calls: registry.int_counter_vec(
                "vantage_route53_api_calls_total",
                "Route53 API calls (every attempt), by operation and result (ok, throttled, prior_request_not_complete, invalid_change_batch, server_error, transport_error, no_credentials, access_denied, error).",
                &["operation", "result"],
            ),
            changes: registry.int_counter_vec(
                "vantage_route53_changes_total",
                "Record set changes applied to Route53, by action (create, update, delete).",
                &["action"],
            ),
            records: registry.int_gauge_vec(
                "vantage_route53_record_state",
                "1 for the state of each record pushed to Route53 (in_sync, propagating, pending, refused, conflict, undecided, unknown); /v1/status says why.",
                &["record", "type", "state"],
            ),
            records_by_state,
            conflicts: registry.int_gauge_vec(
                "vantage_route53_ownership_conflicts",
                "1 for a configured record that vantage does not own in Route53 and therefore leaves alone.",
                &["record"],
            ),
            pending: registry.int_gauge(
                "vantage_route53_pending_changes",
                "Record set changes planned but not applied (refused by the change cap, or failed).",
            ),
            last_sync: registry.gauge(
                "vantage_route53_last_sync_timestamp_seconds",
                "Unix time of the last reconcile cycle that left Route53 as desired.",
            ),
            refused: registry.int_counter(
                "vantage_route53_cycles_refused_total",
                "Reconcile cycles whose configuration-driven changes the change cap held (they would update or delete more than max_change_fraction of the owned records); health-driven changes are never held.",
            ),
            insync_seconds: registry.histogram(
                "vantage_route53_verdict_to_insync_seconds",
                "Time from an answer change to Route53 reporting the change INSYNC.",
                &[1.0, 2.0, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0, 300.0],
            ),
        }
    }

    /// One Route53 API call (each attempt), by operation and result.
    pub fn call(&self, operation: &str, result: &str) {
        self.calls.with_label_values(&[operation, result]).inc();
    }

    /// A reconcile cycle refused by the change cap.
    pub fn cycle_refused(&self) {
        self.refused.inc();
    }

    /// Changes Route53 took.
    pub fn changes_made<'a>(&self, steps: impl Iterator<Item = &'a Step>) {
        for step in steps {
            let action = match step {
                Step::Create { .. } => "create",
                Step::Update { .. } => "update",
                Step::Delete { .. } => "delete",
            };
            self.changes.with_label_values(&[action]).inc();
        }
    }

    /// The state after a reconcile pass: conflicts per record, pending changes, last sync.
    pub fn state(&self, conflicts: &[String], pending: usize, synced: bool) {
        self.conflicts.reset();
        for record in conflicts {
            self.conflicts.with_label_values(&[record]).set(1);
        }
        self.pending.set(pending as i64);
        if synced {
            self.last_sync.set(crate::clock::unix_ms() as f64 / 1000.0);
        }
    }

    /// The state of each record pushed to Route53 (1 for the current state, 0 for the others).
    pub fn records(&self, states: &[RecordSync]) {
        for state in SyncState::ALL {
            let count = states.iter().filter(|r| r.state == state).count();
            self.records_by_state
                .with_label_values(&[state.as_str()])
                .set(count as i64);
        }
        for record in states {
            crate::metrics::one_hot(
                &self.records,
                &[&record.record, &record.rtype],
                &SyncState::ALL,
                Some(record.state),
                SyncState::as_str,
            );
        }
    }

    /// Time from an answer change to INSYNC.
    pub fn insync_after(&self, seconds: f64) {
        self.insync_seconds.observe(seconds);
    }
}
