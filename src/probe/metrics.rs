//! The prober's metrics: checks run and their duration, the load (checks in flight, late
//! starts, overload), certificate expiry, the state each prober sees after its thresholds.
//!
//! Bounded by default: per region (results, durations, endpoints per state, suspicions) and one
//! certificate-expiry series per https endpoint. Series per endpoint *and* region (what each
//! prober sees of each endpoint) are opt-in (`admin.endpoint_region_metrics`): at 10,000
//! endpoints × 3 regions they are ~900,000 series.

use std::sync::{
    Arc,
    atomic::{AtomicBool, Ordering},
};

use prometheus::{HistogramVec, IntCounterVec, IntGaugeVec};

use super::load::Load;
use crate::{
    metrics::{
        Registry,
        endpoints::{EndpointFamily, Kind},
        one_hot,
    },
    model::{EndpointId, Health, ProbeOutcome, Region},
};

/// Cheap to clone (one pointer): every endpoint's state holds one.
#[derive(Clone)]
pub struct ProbeMetrics(Arc<Inner>);

pub struct Inner {
    probes: IntCounterVec,
    duration: HistogramVec,
    endpoints: IntGaugeVec,
    suspicions: IntCounterVec,
    asked: IntCounterVec,
    overdue: IntCounterVec,
    cert_expiry: EndpointFamily,
    in_flight: IntGaugeVec,
    max_in_flight: IntGaugeVec,
    limit: IntGaugeVec,
    late: IntCounterVec,
    lateness: HistogramVec,
    overloaded: IntGaugeVec,
    detail: Detail,
}

/// The opt-in series per endpoint and region.
#[derive(Clone)]
struct Detail {
    on: Arc<AtomicBool>,
    probes: IntCounterVec,
    duration: HistogramVec,
    state: IntGaugeVec,
    suspicions: IntCounterVec,
}

const DURATION_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
];

impl std::ops::Deref for ProbeMetrics {
    type Target = Inner;

    fn deref(&self) -> &Inner {
        &self.0
    }
}

impl ProbeMetrics {
    pub fn new(registry: &Registry) -> Self {
        Self(Arc::new(Inner {
            probes: registry.int_counter_vec(
                "vantage_probes_total",
                "Health checks run, by prober region and result (success or failure kind; local: the check could not run here or timed out after starting late).",
                &["region", "result"],
            ),
            duration: registry.histogram_vec(
                "vantage_probe_duration_seconds",
                "Duration of health checks (connect, TLS, request and body), by prober region.",
                DURATION_BUCKETS,
                &["region"],
            ),
            endpoints: registry.int_gauge_vec(
                "vantage_prober_endpoints",
                "Endpoints in each state as each prober region sees them after rise/fall thresholds.",
                &["region", "state"],
            ),
            suspicions: registry.int_counter_vec(
                "vantage_probe_suspicions_total",
                "Failure streaks shorter than fall that ended, by prober region and outcome: confirmed (the endpoint went Down) or cleared (a check succeeded first: a false alarm).",
                &["region", "outcome"],
            ),
            overdue: registry.int_counter_vec(
                "vantage_probe_overdue_total",
                "Checks said overdue (running 4 typical round trips without an answer, so the aggregators asked the other probers to check), by prober region: with vantage_quorum_suspicions_total{outcome=\"unconfirmed\"}, how often a slow answer raised a false alarm.",
                &["region"],
            ),
            asked: registry.int_counter_vec(
                "vantage_probe_checks_asked_total",
                "Checks started at once because an aggregator asked (to confirm another prober's suspicion), by prober region.",
                &["region"],
            ),
            cert_expiry: registry.per_endpoint(
                "vantage_probe_tls_cert_expiry_timestamp_seconds",
                "When the earliest-expiring certificate of the chain an endpoint showed to the last https check expires (Unix seconds), by endpoint (as blackbox_exporter's probe_ssl_earliest_cert_expiry).",
                Kind::Gauge,
                None,
            ),
            in_flight: registry.int_gauge_vec(
                "vantage_probe_checks_in_flight",
                "Checks running now, by prober region.",
                &["region"],
            ),
            max_in_flight: registry.int_gauge_vec(
                "vantage_probe_checks_in_flight_max",
                "The ceiling of the prober's checks in flight (cluster.max_checks_in_flight), by region.",
                &["region"],
            ),
            limit: registry.int_gauge_vec(
                "vantage_probe_checks_in_flight_limit",
                "The prober's current budget of checks in flight (lowered while the process is saturated), by region.",
                &["region"],
            ),
            late: registry.int_counter_vec(
                "vantage_probe_late_starts_total",
                "Checks that started late (more than half their interval, and at least 250 ms, after they were due), by prober region.",
                &["region"],
            ),
            lateness: registry.histogram_vec(
                "vantage_probe_start_lateness_seconds",
                "How long after it was due each check started, by prober region.",
                &[0.001, 0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0],
                &["region"],
            ),
            overloaded: registry.int_gauge_vec(
                "vantage_probe_overloaded",
                "1 while the prober of a region is overloaded (5% of its checks over the last 5-10 s started late): its Down votes do not count.",
                &["region"],
            ),
            detail: Detail {
                on: Arc::new(AtomicBool::new(false)),
                probes: registry.int_counter_vec(
                    "vantage_endpoint_probes_total",
                    "Health checks run, by endpoint, prober region and result (admin.endpoint_region_metrics).",
                    &["endpoint", "region", "result"],
                ),
                duration: registry.histogram_vec(
                    "vantage_endpoint_probe_duration_seconds",
                    "Duration of health checks by endpoint and prober region (admin.endpoint_region_metrics).",
                    DURATION_BUCKETS,
                    &["endpoint", "region"],
                ),
                state: registry.int_gauge_vec(
                    "vantage_prober_endpoint_state",
                    "1 for the state each prober region currently sees for an endpoint after rise/fall thresholds (admin.endpoint_region_metrics).",
                    &["endpoint", "region", "state"],
                ),
                suspicions: registry.int_counter_vec(
                    "vantage_endpoint_probe_suspicions_total",
                    "Suspicions that ended, by endpoint, prober region and outcome (admin.endpoint_region_metrics).",
                    &["endpoint", "region", "outcome"],
                ),
            },
        }))
    }

    /// Series per endpoint and region on or off (`admin.endpoint_region_metrics`); turned
    /// off, the ones already exported are removed.
    pub fn per_endpoint_region(&self, on: bool) {
        if !self.detail.on.swap(on, Ordering::Relaxed) || on {
            return;
        }
        self.detail.probes.reset();
        self.detail.duration.reset();
        self.detail.state.reset();
        self.detail.suspicions.reset();
    }

    fn detailed(&self) -> bool {
        self.detail.on.load(Ordering::Relaxed)
    }

    pub fn completed(
        &self,
        endpoint: &EndpointId,
        region: &Region,
        outcome: &ProbeOutcome,
        seconds: f64,
    ) {
        let result = match outcome {
            ProbeOutcome::Success { .. } => "success",
            ProbeOutcome::Fail { kind, .. } => kind.as_str(),
        };
        self.probes
            .with_label_values(&[region.as_str(), result])
            .inc();
        self.duration
            .with_label_values(&[region.as_str()])
            .observe(seconds);
        if self.detailed() {
            self.detail
                .probes
                .with_label_values(&[endpoint.as_str(), region.as_str(), result])
                .inc();
            self.detail
                .duration
                .with_label_values(&[endpoint.as_str(), region.as_str()])
                .observe(seconds);
        }
    }

    /// The state `region` sees for `endpoint`, counted while the returned guard lives.
    pub fn endpoint_state(
        &self,
        endpoint: &EndpointId,
        region: &Region,
        state: Health,
    ) -> SeenState {
        let seen = SeenState {
            metrics: self.clone(),
            endpoint: endpoint.clone(),
            region: region.clone(),
            state,
        };
        seen.count(state, 1);
        seen
    }

    /// Checks running now (after one ended).
    pub fn in_flight(&self, region: &Region, load: &Load) {
        self.in_flight
            .with_label_values(&[region.as_str()])
            .set(load.in_flight() as i64);
    }

    /// A suspicion (a failure streak short of `fall`) ended: confirmed or cleared.
    pub fn suspicion_ended(&self, endpoint: &EndpointId, region: &Region, confirmed: bool) {
        let outcome = if confirmed { "confirmed" } else { "cleared" };
        self.suspicions
            .with_label_values(&[region.as_str(), outcome])
            .inc();
        if self.detailed() {
            self.detail
                .suspicions
                .with_label_values(&[endpoint.as_str(), region.as_str(), outcome])
                .inc();
        }
    }

    /// A check started at once because an aggregator asked.
    pub fn asked(&self, region: &Region) {
        self.asked.with_label_values(&[region.as_str()]).inc();
    }

    /// A check said overdue.
    pub fn overdue(&self, region: &Region) {
        self.overdue.with_label_values(&[region.as_str()]).inc();
    }

    /// When the earliest certificate `endpoint` showed to the last https check expires.
    pub fn cert_expiry(&self, endpoint: &EndpointId, unix_s: i64) {
        self.cert_expiry.set(endpoint, 0, unix_s);
    }

    /// The governor's latest budget.
    pub fn budget(&self, region: &Region, load: &Load) {
        self.limit
            .with_label_values(&[region.as_str()])
            .set(load.limit() as i64);
    }

    /// A prober's load starts being watched.
    pub fn load(&self, region: &Region, load: &Load) {
        self.budget(region, load);
        self.max_in_flight
            .with_label_values(&[region.as_str()])
            .set(load.max_in_flight() as i64);
        self.overloaded.with_label_values(&[region.as_str()]).set(0);
        self.late.with_label_values(&[region.as_str()]).inc_by(0);
        self.asked.with_label_values(&[region.as_str()]).inc_by(0);
    }

    /// A check started, `lateness` after it was due.
    pub fn started(&self, region: &Region, lateness: std::time::Duration, late: bool, load: &Load) {
        let labels = [region.as_str()];
        self.lateness
            .with_label_values(&labels)
            .observe(lateness.as_secs_f64());
        if late {
            self.late.with_label_values(&labels).inc();
        }
        self.in_flight
            .with_label_values(&labels)
            .set(load.in_flight() as i64);
        self.overloaded
            .with_label_values(&labels)
            .set(i64::from(load.overloaded()));
    }
}

/// One endpoint's state as one prober sees it, counted in `vantage_prober_endpoints` until
/// dropped (a reload's new prober counts afresh).
pub struct SeenState {
    metrics: ProbeMetrics,
    endpoint: EndpointId,
    region: Region,
    state: Health,
}

impl SeenState {
    pub fn set(&mut self, state: Health) {
        self.count(self.state, -1);
        self.state = state;
        self.count(state, 1);
    }

    fn count(&self, state: Health, by: i64) {
        let m = &self.metrics;
        m.endpoints
            .with_label_values(&[self.region.as_str(), state.as_str()])
            .add(by);
        if m.detailed() && by > 0 {
            one_hot(
                &m.detail.state,
                &[self.endpoint.as_str(), self.region.as_str()],
                &Health::ALL,
                Some(state),
                Health::as_str,
            );
        }
    }
}

impl Drop for SeenState {
    fn drop(&mut self) {
        self.count(self.state, -1);
    }
}
