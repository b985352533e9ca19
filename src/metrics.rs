//! The process's Prometheus registry: registration helpers and the text exposition.
//!
//! Every subsystem owns its metrics (a struct next to the code that emits them, registered on
//! this shared registry when the process starts: `probe::ProbeMetrics`, `dns::DnsMetrics`,
//! ...); `app::metrics` composes them. Names follow `vantage_<name>_<unit>[_total]`; every
//! metric has HELP; label sets are bounded by the configuration (endpoints, regions,
//! records) or by fixed enumerations.

use prometheus::{
    Encoder, Gauge, GaugeVec, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec,
    IntGauge, IntGaugeVec, Opts, TextEncoder, core::Collector,
};

/// One process's registry (cheap to clone: clones share it).
///
/// Metric names and label sets are static, and each subsystem registers its metrics once per
/// registry, so construction and registration cannot fail: the `expect`s document that.
#[derive(Clone)]
pub struct Registry(prometheus::Registry);

impl Registry {
    /// A registry holding `vantage_build_info`.
    pub fn new() -> Self {
        let registry = Self(prometheus::Registry::new());
        registry
            .int_gauge_vec(
                "vantage_build_info",
                "Always 1; the version of this vantage binary.",
                &["version"],
            )
            .with_label_values(&[env!("CARGO_PKG_VERSION")])
            .set(1);
        registry
    }

    fn add<C: Collector + Clone + 'static>(&self, c: C) -> C {
        self.0
            .register(Box::new(c.clone()))
            .expect("metric names are unique");
        c
    }

    pub fn int_counter(&self, name: &str, help: &str) -> IntCounter {
        self.add(IntCounter::new(name, help).expect("valid metric"))
    }

    pub fn int_counter_vec(&self, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
        self.add(IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric"))
    }

    pub fn int_gauge(&self, name: &str, help: &str) -> IntGauge {
        self.add(IntGauge::new(name, help).expect("valid metric"))
    }

    pub fn int_gauge_vec(&self, name: &str, help: &str, labels: &[&str]) -> IntGaugeVec {
        self.add(IntGaugeVec::new(Opts::new(name, help), labels).expect("valid metric"))
    }

    pub fn gauge(&self, name: &str, help: &str) -> Gauge {
        self.add(Gauge::new(name, help).expect("valid metric"))
    }

    pub fn gauge_vec(&self, name: &str, help: &str, labels: &[&str]) -> GaugeVec {
        self.add(GaugeVec::new(Opts::new(name, help), labels).expect("valid metric"))
    }

    pub fn histogram(&self, name: &str, help: &str, buckets: &[f64]) -> Histogram {
        let opts = HistogramOpts::new(name, help).buckets(buckets.to_vec());
        self.add(Histogram::with_opts(opts).expect("valid metric"))
    }

    pub fn histogram_vec(
        &self,
        name: &str,
        help: &str,
        buckets: &[f64],
        labels: &[&str],
    ) -> HistogramVec {
        let opts = HistogramOpts::new(name, help).buckets(buckets.to_vec());
        self.add(HistogramVec::new(opts, labels).expect("valid metric"))
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        if let Err(e) = TextEncoder::new().encode(&self.0.gather(), &mut buf) {
            tracing::error!(error = %e, "cannot encode metrics");
        }
        String::from_utf8(buf).unwrap_or_default()
    }
}

impl Default for Registry {
    fn default() -> Self {
        Self::new()
    }
}

/// Sets a one-hot gauge family: 1 for `current`'s label, 0 for every other of `all`.
pub fn one_hot<T: PartialEq + Copy>(
    gauge: &IntGaugeVec,
    prefix: &[&str],
    all: &[T],
    current: Option<T>,
    label: impl Fn(T) -> &'static str,
) {
    for &v in all {
        let mut labels = prefix.to_vec();
        labels.push(label(v));
        gauge
            .with_label_values(&labels)
            .set(i64::from(current == Some(v)));
    }
}
