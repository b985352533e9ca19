//! The prober's metrics: checks run and their duration, certificate expiry, the state each
//! prober sees after its thresholds.

use prometheus::{GaugeVec, HistogramVec, IntCounterVec, IntGaugeVec};

use crate::{
    metrics::{Registry, one_hot},
    model::{EndpointId, Health, ProbeOutcome, Region},
};

#[derive(Clone)]
pub struct ProbeMetrics {
    probes: IntCounterVec,
    duration: HistogramVec,
    cert_expiry: GaugeVec,
    state: IntGaugeVec,
    suspicions: IntCounterVec,
}

impl ProbeMetrics {
    pub fn new(registry: &Registry) -> Self {
        Self {
            probes: registry.int_counter_vec(
                "vantage_probes_total",
                "Health checks run, by endpoint, prober region and result (success or failure kind).",
                &["endpoint", "region", "result"],
            ),
            duration: registry.histogram_vec(
                "vantage_probe_duration_seconds",
                "Duration of health checks (connect, TLS, request and body), by endpoint and prober region.",
                &[
                    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                ],
                &["endpoint", "region"],
            ),
            cert_expiry: registry.gauge_vec(
                "vantage_probe_tls_cert_expiry_timestamp_seconds",
                "When the certificate an endpoint showed to the last https check expires (Unix seconds), by endpoint and prober region (as blackbox_exporter's probe_ssl_earliest_cert_expiry).",
                &["endpoint", "region"],
            ),
            suspicions: registry.int_counter_vec(
                "vantage_probe_suspicions_total",
                "Failure streaks shorter than fall that ended, by endpoint, prober region and outcome: confirmed (the endpoint went Down) or cleared (a check succeeded first: a false alarm).",
                &["endpoint", "region", "outcome"],
            ),
            state: registry.int_gauge_vec(
                "vantage_prober_endpoint_state",
                "1 for the state each prober region currently sees for an endpoint after rise/fall thresholds.",
                &["endpoint", "region", "state"],
            ),
        }
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
            .with_label_values(&[endpoint.as_str(), region.as_str(), result])
            .inc();
        self.duration
            .with_label_values(&[endpoint.as_str(), region.as_str()])
            .observe(seconds);
    }

    /// The state `region` sees for `endpoint` after its thresholds.
    pub fn state(&self, endpoint: &EndpointId, region: &Region, state: Health) {
        one_hot(
            &self.state,
            &[endpoint.as_str(), region.as_str()],
            &Health::ALL,
            Some(state),
            Health::as_str,
        );
    }

    /// A suspicion (a failure streak short of `fall`) ended: confirmed or cleared.
    pub fn suspicion_ended(&self, endpoint: &EndpointId, region: &Region, confirmed: bool) {
        self.suspicions
            .with_label_values(&[
                endpoint.as_str(),
                region.as_str(),
                if confirmed { "confirmed" } else { "cleared" },
            ])
            .inc();
    }

    /// When the certificate `endpoint` showed to `region`'s last https check expires.
    pub fn cert_expiry(&self, endpoint: &EndpointId, region: &Region, unix_s: i64) {
        self.cert_expiry
            .with_label_values(&[endpoint.as_str(), region.as_str()])
            .set(unix_s as f64);
    }
}
