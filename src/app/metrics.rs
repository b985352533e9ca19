//! Every metric of a process: one registry, and each subsystem's metrics registered on it.
//! Each role hands every part only its own metrics.

use prometheus::{IntCounterVec, IntGauge};

use crate::{
    aggregator::AggregatorMetrics, dns::DnsMetrics, exchange::ExchangeMetrics,
    limits::ListenerMetrics, metrics::Registry, probe::ProbeMetrics,
    route53::metrics::Route53Metrics, state::StateMetrics,
};

#[derive(Clone)]
pub struct Metrics {
    pub registry: Registry,
    pub probe: ProbeMetrics,
    pub exchange: ExchangeMetrics,
    pub aggregator: AggregatorMetrics,
    pub state: StateMetrics,
    pub dns: DnsMetrics,
    pub route53: Route53Metrics,
    pub listeners: ListenerMetrics,
    pub reloads: ReloadMetrics,
}

impl Metrics {
    pub fn new() -> Self {
        let registry = Registry::new();
        let listeners = ListenerMetrics::new(&registry);
        Self {
            probe: ProbeMetrics::new(&registry),
            exchange: ExchangeMetrics::new(&registry),
            aggregator: AggregatorMetrics::new(&registry),
            state: StateMetrics::new(&registry),
            dns: DnsMetrics::new(&registry, listeners.refused("dns")),
            route53: Route53Metrics::new(&registry),
            reloads: ReloadMetrics::new(&registry),
            listeners,
            registry,
        }
    }
}

/// Configuration reloads (the composition root does them).
#[derive(Clone)]
pub struct ReloadMetrics {
    reloads: IntCounterVec,
    last_ok: IntGauge,
}

impl ReloadMetrics {
    fn new(registry: &Registry) -> Self {
        let last_ok = registry.int_gauge(
            "vantage_config_last_reload_successful",
            "0 when the last reload failed (the previous configuration is still in service), else 1.",
        );
        last_ok.set(1);
        Self {
            reloads: registry.int_counter_vec(
                "vantage_config_reloads_total",
                "Configuration and zone reloads (SIGHUP or POST /v1/reload), by result (success, failure).",
                &["result"],
            ),
            last_ok,
        }
    }

    /// A configuration reload finished.
    pub fn reloaded(&self, ok: bool) {
        self.reloads
            .with_label_values(&[if ok { "success" } else { "failure" }])
            .inc();
        self.last_ok.set(i64::from(ok));
    }
}
