//! The process's Prometheus registry: registration helpers and the text exposition.
//!
//! Every subsystem owns its metrics (a struct next to the code that emits them, registered on
//! this shared registry when the process starts: `probe::ProbeMetrics`, `dns::DnsMetrics`,
//! ...); `app::metrics` composes them. Names follow `vantage_<name>_<unit>[_total]`; every
//! metric has HELP; label sets are bounded by the configuration (endpoints, regions,
//! records) or by fixed enumerations. Families with a series per endpoint are kept compactly
//! outside the `prometheus` crate (`endpoints`) and written after its families.

pub mod endpoints;

use std::sync::{Arc, Mutex, PoisonError};

use prometheus::{
    Encoder, Gauge, GaugeVec, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec,
    IntGauge, IntGaugeVec, Opts, TextEncoder, core::Collector,
};

/// One process's registry (cheap to clone: clones share it).
///
/// Metric names and label sets are static, and each subsystem registers its metrics once per
/// registry, so construction and registration cannot fail: the `expect`s document that.
#[derive(Clone)]
pub struct Registry {
    inner: prometheus::Registry,
    per_endpoint: Arc<Mutex<Vec<Arc<endpoints::Family>>>>,
}

impl Registry {
    /// A registry holding `vantage_build_info`.
    pub fn new() -> Self {
        let registry = Self {
            inner: prometheus::Registry::new(),
            per_endpoint: Arc::default(),
        };
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
        self.inner
            .register(Box::new(c.clone()))
            .expect("metric names are unique");
        c
    }

    /// A family with one series per endpoint (times the values of `label`, if any), kept
    /// compactly: see [`endpoints`].
    pub fn per_endpoint(
        &self,
        name: &'static str,
        help: &'static str,
        kind: endpoints::Kind,
        label: Option<(&'static str, &[&'static str])>,
    ) -> endpoints::EndpointFamily {
        let family = endpoints::EndpointFamily::new(name, help, kind, label);
        let mut all = self
            .per_endpoint
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        assert!(
            all.iter().all(|f| f.name != name),
            "metric names are unique"
        );
        all.push(family.family().clone());
        family
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
        let per_endpoint = self
            .per_endpoint
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        let families = self.inner.gather();
        let mut buf = Vec::with_capacity(
            64 * 1024 + per_endpoint.iter().map(|f| f.size_hint()).sum::<usize>(),
        );
        if let Err(e) = TextEncoder::new().encode(&families, &mut buf) {
            tracing::error!(error = %e, "cannot encode metrics");
        }
        drop(families);
        let mut out = String::from_utf8(buf).unwrap_or_default();
        for family in &per_endpoint {
            family.render(&mut out);
        }
        out
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
