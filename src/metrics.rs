//! Prometheus metrics: one owned registry, passed to components, with event-style methods.
//!
//! Names follow `vantage_<name>_<unit>[_total]`; every metric has HELP; label sets are bounded
//! by the configuration (endpoints, regions, records) or by fixed enumerations.

use std::{
    collections::HashMap,
    sync::{Mutex, PoisonError},
};

use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry, TextEncoder,
};

use crate::model::{EndpointId, Health, ProbeOutcome, Region};

pub struct Metrics {
    registry: Registry,
    probes: IntCounterVec,
    probe_duration: HistogramVec,
    tls_cert_expiry: prometheus::GaugeVec,
    prober_state: IntGaugeVec,
    verdict_state: IntGaugeVec,
    votes: IntGaugeVec,
    transitions: IntCounterVec,
    dns_responses: IntCounterVec,
    dns_rrl: IntCounterVec,
    connections_refused: IntCounterVec,
    unknown_endpoints: IntCounterVec,
    state_problem: IntGaugeVec,
    record_answers: IntGaugeVec,
    /// The reason label currently set per (record, type).
    record_reasons: Mutex<HashMap<(String, String), String>>,
    ready: IntGauge,
    snapshot_generation: IntGauge,
    quorum_reached: IntGauge,
    fresh_probers: IntGauge,
    prober_impaired: IntGaugeVec,
    pub(crate) links: LinkMetrics,
    pub(crate) route53: Route53Metrics,
    overrides: IntGaugeVec,
    override_changes: IntCounterVec,
    reloads: IntCounterVec,
    reload_ok: IntGauge,
    dns_queries: IntCounterVec,
    xdp_packets: IntCounterVec,
    drills: DrillMetrics,
}

/// The last drill of every record (from `vantage drill`, kept by serving processes).
struct DrillMetrics {
    last: prometheus::GaugeVec,
    rto: prometheus::GaugeVec,
    target: prometheus::GaugeVec,
    met: IntGaugeVec,
}

/// Metrics of the Route53 reconciler.
pub(crate) struct Route53Metrics {
    pub records: IntGaugeVec,
    pub records_by_state: IntGaugeVec,
    pub calls: IntCounterVec,
    pub changes: IntCounterVec,
    pub conflicts: IntGaugeVec,
    pub pending: IntGauge,
    pub last_sync: prometheus::Gauge,
    pub refused: prometheus::IntCounter,
    pub insync_seconds: prometheus::Histogram,
}

/// Metrics of the links from an aggregator to remote probers.
pub(crate) struct LinkMetrics {
    pub polls: IntCounterVec,
    pub rejected: IntCounterVec,
    pub reachable: IntGaugeVec,
    pub report_age: prometheus::GaugeVec,
    pub requests_rejected: IntCounterVec,
}

const HEALTH: [Health; 3] = [Health::Up, Health::Down, Health::Unknown];

impl Metrics {
    /// Metric names and label sets are static and distinct, so their construction and
    /// registration cannot fail: the `expect`s below document that invariant.
    pub fn new() -> Self {
        let registry = Registry::new();
        let probes = IntCounterVec::new(
            Opts::new(
                "vantage_probes_total",
                "Health checks run, by endpoint, prober region and result (success or failure kind).",
            ),
            &["endpoint", "region", "result"],
        )
        .expect("valid metric");
        let probe_duration = HistogramVec::new(
            HistogramOpts::new(
                "vantage_probe_duration_seconds",
                "Duration of health checks (connect, TLS, request and body), by endpoint and prober region.",
            )
            .buckets(vec![
                0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
            ]),
            &["endpoint", "region"],
        )
        .expect("valid metric");
        let tls_cert_expiry = prometheus::GaugeVec::new(
            Opts::new(
                "vantage_probe_tls_cert_expiry_timestamp_seconds",
                "When the certificate an endpoint showed to the last https check expires (Unix seconds), by endpoint and prober region (as blackbox_exporter's probe_ssl_earliest_cert_expiry).",
            ),
            &["endpoint", "region"],
        )
        .expect("valid metric");
        let prober_state = IntGaugeVec::new(
            Opts::new(
                "vantage_prober_endpoint_state",
                "1 for the state each prober region currently sees for an endpoint after rise/fall thresholds.",
            ),
            &["endpoint", "region", "state"],
        )
        .expect("valid metric");
        let verdict_state = IntGaugeVec::new(
            Opts::new(
                "vantage_endpoint_verdict",
                "1 for the current quorum verdict of an endpoint (state = up, down or unknown).",
            ),
            &["endpoint", "state"],
        )
        .expect("valid metric");
        let votes = IntGaugeVec::new(
            Opts::new(
                "vantage_endpoint_votes",
                "Fresh prober votes for an endpoint in the latest quorum round, by reported state.",
            ),
            &["endpoint", "state"],
        )
        .expect("valid metric");
        let transitions = IntCounterVec::new(
            Opts::new(
                "vantage_verdict_transitions_total",
                "Changes of an endpoint's quorum verdict, by the state it changed to.",
            ),
            &["endpoint", "to"],
        )
        .expect("valid metric");
        let dns_responses = IntCounterVec::new(
            Opts::new(
                "vantage_dns_responses_total",
                "DNS responses sent, by transport protocol, query type and response code.",
            ),
            &["protocol", "qtype", "rcode"],
        )
        .expect("valid metric");
        let connections_refused = IntCounterVec::new(
            Opts::new(
                "vantage_connections_refused_total",
                "TCP connections closed at accept because the listener (dns, admin or prober) or the client's address had no free slot.",
            ),
            &["listener"],
        )
        .expect("valid metric");
        let dns_rrl = IntCounterVec::new(
            Opts::new(
                "vantage_dns_rrl_total",
                "UDP responses held back by response rate limiting: dropped, or slipped (sent truncated).",
            ),
            &["action"],
        )
        .expect("valid metric");
        for action in ["dropped", "slipped"] {
            dns_rrl.with_label_values(&[action]);
        }
        let unknown_endpoints = IntCounterVec::new(
            Opts::new(
                "vantage_prober_report_unknown_endpoints_total",
                "Observations in prober reports for endpoints this configuration does not have, dropped.",
            ),
            &["region"],
        )
        .expect("valid metric");
        let state_problem = IntGaugeVec::new(
            Opts::new(
                "vantage_state_problem",
                "1 when the state kept in admin.state_dir had a problem at start (a corrupt file moved aside, a directory that cannot be written; see /v1/status), by store.",
            ),
            &["store"],
        )
        .expect("valid metric");
        let record_answers = IntGaugeVec::new(
            Opts::new(
                "vantage_record_answer_endpoints",
                "Number of addresses a managed record currently answers, with the reason for the answer.",
            ),
            &["record", "type", "reason"],
        )
        .expect("valid metric");
        let ready = IntGauge::new(
            "vantage_ready",
            "1 when every managed record has a decided answer (the first quorum round completed).",
        )
        .expect("valid metric");
        let snapshot_generation = IntGauge::new(
            "vantage_snapshot_generation",
            "Generation number of the answer snapshot currently published to the DNS server.",
        )
        .expect("valid metric");
        let quorum_reached = IntGauge::new(
            "vantage_quorum_reached",
            "1 when at least a quorum of probers have fresh reports; 0 means verdicts hold their last value (fail static).",
        )
        .expect("valid metric");
        let fresh_probers = IntGauge::new(
            "vantage_probers_fresh",
            "Probers whose latest report is younger than stale_after.",
        )
        .expect("valid metric");
        let prober_impaired = IntGaugeVec::new(
            Opts::new(
                "vantage_prober_impaired",
                "1 when a prober sees every endpoint Down while others see some Up; its Down votes are ignored.",
            ),
            &["region"],
        )
        .expect("valid metric");
        let links = LinkMetrics {
            polls: IntCounterVec::new(
                Opts::new(
                    "vantage_prober_polls_total",
                    "Pulls of a remote prober's observations, by region and result (ok, unreachable, rejected).",
                ),
                &["region", "result"],
            )
            .expect("valid metric"),
            rejected: IntCounterVec::new(
                Opts::new(
                    "vantage_prober_reports_rejected_total",
                    "Prober reports rejected, by region and reason (unauthenticated, bad_signature, replayed, stale, wrong_region, malformed; refused_by_prober_stale and refused_by_prober_signature when the prober refused our request: clock skew or another fleet secret).",
                ),
                &["region", "reason"],
            )
            .expect("valid metric"),
            reachable: IntGaugeVec::new(
                Opts::new(
                    "vantage_prober_reachable",
                    "1 when the latest pull of a remote prober returned an accepted report.",
                ),
                &["region"],
            )
            .expect("valid metric"),
            report_age: prometheus::GaugeVec::new(
                Opts::new(
                    "vantage_prober_report_age_seconds",
                    "Age of the latest accepted report from a remote prober.",
                ),
                &["region"],
            )
            .expect("valid metric"),
            requests_rejected: IntCounterVec::new(
                Opts::new(
                    "vantage_observation_requests_rejected_total",
                    "Requests for this prober's observations that were refused, by reason.",
                ),
                &["reason"],
            )
            .expect("valid metric"),
        };
        let route53 = Route53Metrics {
            calls: IntCounterVec::new(
                Opts::new(
                    "vantage_route53_api_calls_total",
                    "Route53 API calls (every attempt), by operation and result (ok, throttled, prior_request_not_complete, invalid_change_batch, server_error, transport_error, error).",
                ),
                &["operation", "result"],
            )
            .expect("valid metric"),
            changes: IntCounterVec::new(
                Opts::new(
                    "vantage_route53_changes_total",
                    "Record set changes applied to Route53, by action (create, update, delete).",
                ),
                &["action"],
            )
            .expect("valid metric"),
            records: IntGaugeVec::new(
                Opts::new(
                    "vantage_route53_record_state",
                    "1 for the state of each record pushed to Route53 (in_sync, propagating, pending, refused, conflict, undecided, unknown); /v1/status says why.",
                ),
                &["record", "type", "state"],
            )
            .expect("valid metric"),
            records_by_state: {
                let gauge = IntGaugeVec::new(
                    Opts::new(
                        "vantage_route53_records",
                        "Records pushed to Route53, by state (0 in processes that push none).",
                    ),
                    &["state"],
                )
                .expect("valid metric");
                for state in crate::route53::status::SyncState::ALL {
                    gauge.with_label_values(&[state.as_str()]);
                }
                gauge
            },
            conflicts: IntGaugeVec::new(
                Opts::new(
                    "vantage_route53_ownership_conflicts",
                    "1 for a configured record that vantage does not own in Route53 and therefore leaves alone.",
                ),
                &["record"],
            )
            .expect("valid metric"),
            pending: IntGauge::new(
                "vantage_route53_pending_changes",
                "Record set changes planned but not applied (refused by the change cap, or failed).",
            )
            .expect("valid metric"),
            last_sync: prometheus::Gauge::new(
                "vantage_route53_last_sync_timestamp_seconds",
                "Unix time of the last reconcile cycle that left Route53 as desired.",
            )
            .expect("valid metric"),
            refused: prometheus::IntCounter::new(
                "vantage_route53_cycles_refused_total",
                "Reconcile cycles refused because they would change more than max_change_fraction of the owned records.",
            )
            .expect("valid metric"),
            insync_seconds: prometheus::Histogram::with_opts(
                HistogramOpts::new(
                    "vantage_route53_verdict_to_insync_seconds",
                    "Time from an answer change to Route53 reporting the change INSYNC.",
                )
                .buckets(vec![1.0, 2.0, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0, 300.0]),
            )
            .expect("valid metric"),
        };
        let overrides = IntGaugeVec::new(
            Opts::new(
                "vantage_endpoint_override",
                "1 for the operator override in force on an endpoint (action = force_up, force_down or drain).",
            ),
            &["endpoint", "action"],
        )
        .expect("valid metric");
        let override_changes = IntCounterVec::new(
            Opts::new(
                "vantage_override_changes_total",
                "Override changes, by what happened (set, clear, expired).",
            ),
            &["what"],
        )
        .expect("valid metric");
        let dns_queries = IntCounterVec::new(
            Opts::new(
                "vantage_dns_managed_answers_total",
                "Answers for managed records, by record, query type and the reason behind the answer.",
            ),
            &["record", "qtype", "reason"],
        )
        .expect("valid metric");
        let xdp_packets = IntCounterVec::new(
            Opts::new(
                "vantage_dns_xdp_packets_total",
                "UDP packets taken by the AF_XDP path (dns.xdp), by interface and outcome: replied (on the XDP ring), replied_by_socket (too big for a frame or the link), no_reply.",
            ),
            &["interface", "outcome"],
        )
        .expect("valid metric");
        let reloads = IntCounterVec::new(
            Opts::new(
                "vantage_config_reloads_total",
                "Configuration and zone reloads (SIGHUP or POST /v1/reload), by result (success, failure).",
            ),
            &["result"],
        )
        .expect("valid metric");
        let reload_ok = IntGauge::new(
            "vantage_config_last_reload_successful",
            "0 when the last reload failed (the previous configuration is still in service), else 1.",
        )
        .expect("valid metric");
        reload_ok.set(1);
        let gauge = |name: &str, help: &str| {
            prometheus::GaugeVec::new(Opts::new(name, help), &["record", "type"])
                .expect("valid metric")
        };
        let drills = DrillMetrics {
            last: gauge(
                "vantage_drill_last_timestamp_seconds",
                "Unix time of the record's last failover drill; 0 for a record with an rto target that was never drilled.",
            ),
            rto: gauge(
                "vantage_drill_rto_seconds",
                "Recovery time measured by the record's last drill (absent when it did not recover within the drill's timeout).",
            ),
            target: gauge(
                "vantage_drill_rto_target_seconds",
                "The record's rto target from the configuration.",
            ),
            met: IntGaugeVec::new(
                Opts::new(
                    "vantage_drill_target_met",
                    "1 when the record's last drill met its rto target, 0 when it missed it.",
                ),
                &["record", "type"],
            )
            .expect("valid metric"),
        };
        let build_info = IntGaugeVec::new(
            Opts::new(
                "vantage_build_info",
                "Always 1; the version of this vantage binary.",
            ),
            &["version"],
        )
        .expect("valid metric");
        build_info
            .with_label_values(&[env!("CARGO_PKG_VERSION")])
            .set(1);

        for c in [
            Box::new(probes.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(probe_duration.clone()),
            Box::new(prober_state.clone()),
            Box::new(verdict_state.clone()),
            Box::new(votes.clone()),
            Box::new(transitions.clone()),
            Box::new(dns_responses.clone()),
            Box::new(dns_rrl.clone()),
            Box::new(tls_cert_expiry.clone()),
            Box::new(connections_refused.clone()),
            Box::new(unknown_endpoints.clone()),
            Box::new(state_problem.clone()),
            Box::new(record_answers.clone()),
            Box::new(ready.clone()),
            Box::new(snapshot_generation.clone()),
            Box::new(quorum_reached.clone()),
            Box::new(fresh_probers.clone()),
            Box::new(prober_impaired.clone()),
            Box::new(links.polls.clone()),
            Box::new(links.rejected.clone()),
            Box::new(links.reachable.clone()),
            Box::new(links.report_age.clone()),
            Box::new(links.requests_rejected.clone()),
            Box::new(route53.records.clone()),
            Box::new(route53.records_by_state.clone()),
            Box::new(route53.calls.clone()),
            Box::new(route53.changes.clone()),
            Box::new(route53.conflicts.clone()),
            Box::new(route53.pending.clone()),
            Box::new(route53.last_sync.clone()),
            Box::new(route53.refused.clone()),
            Box::new(route53.insync_seconds.clone()),
            Box::new(overrides.clone()),
            Box::new(override_changes.clone()),
            Box::new(dns_queries.clone()),
            Box::new(xdp_packets.clone()),
            Box::new(reloads.clone()),
            Box::new(reload_ok.clone()),
            Box::new(build_info),
            Box::new(drills.last.clone()),
            Box::new(drills.rto.clone()),
            Box::new(drills.target.clone()),
            Box::new(drills.met.clone()),
        ] {
            registry.register(c).expect("metric names are unique");
        }
        Self {
            registry,
            probes,
            probe_duration,
            tls_cert_expiry,
            prober_state,
            verdict_state,
            votes,
            transitions,
            dns_responses,
            dns_rrl,
            connections_refused,
            unknown_endpoints,
            state_problem,
            record_answers,
            record_reasons: Mutex::new(HashMap::new()),
            ready,
            snapshot_generation,
            quorum_reached,
            fresh_probers,
            prober_impaired,
            links,
            route53,
            overrides,
            override_changes,
            dns_queries,
            xdp_packets,
            reloads,
            reload_ok,
            drills,
        }
    }

    /// The drill gauges from the latest results and the records' targets (set at scrape time,
    /// so that they follow reloads).
    pub fn drills(
        &self,
        records: &[crate::config::RecordSpec],
        results: &[crate::state::drills::DrillResult],
    ) {
        let d = &self.drills;
        for g in [&d.last, &d.rto, &d.target] {
            g.reset();
        }
        d.met.reset();
        for r in records {
            let labels = [r.name.as_str(), r.kind.as_str()];
            if let Some(rto) = r.rto {
                d.target.with_label_values(&labels).set(rto.as_secs_f64());
                d.last.with_label_values(&labels).set(0.0);
            }
        }
        for r in results {
            let labels = [r.record.as_str(), r.kind.as_str()];
            d.last
                .with_label_values(&labels)
                .set(r.finished_unix_ms as f64 / 1000.0);
            if let Some(ms) = r.rto_ms {
                d.rto.with_label_values(&labels).set(ms as f64 / 1000.0);
            }
            if let Some(met) = r.met {
                d.met.with_label_values(&labels).set(i64::from(met));
            }
        }
    }

    pub fn probe_completed(
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
        self.probe_duration
            .with_label_values(&[endpoint.as_str(), region.as_str()])
            .observe(seconds);
    }

    pub fn prober_state(&self, endpoint: &EndpointId, region: &Region, state: Health) {
        for h in HEALTH {
            self.prober_state
                .with_label_values(&[endpoint.as_str(), region.as_str(), h.as_str()])
                .set(i64::from(h == state));
        }
    }

    pub fn verdict(
        &self,
        endpoint: &EndpointId,
        state: Health,
        up_votes: usize,
        down_votes: usize,
    ) {
        for h in HEALTH {
            self.verdict_state
                .with_label_values(&[endpoint.as_str(), h.as_str()])
                .set(i64::from(h == state));
        }
        self.votes
            .with_label_values(&[endpoint.as_str(), "up"])
            .set(up_votes as i64);
        self.votes
            .with_label_values(&[endpoint.as_str(), "down"])
            .set(down_votes as i64);
    }

    pub fn verdict_changed(&self, endpoint: &EndpointId, to: Health) {
        self.transitions
            .with_label_values(&[endpoint.as_str(), to.as_str()])
            .inc();
    }

    pub fn dns_response(&self, protocol: &str, qtype: &str, rcode: &str) {
        self.dns_response_counter(protocol, qtype, rcode).inc();
    }

    /// Whether a state store (`overrides`, `drills`) had a problem at start.
    pub fn state_problem(&self, store: &str, problem: bool) {
        self.state_problem
            .with_label_values(&[store])
            .set(i64::from(problem));
    }

    /// Observations of endpoints we do not have, dropped from a prober's report.
    pub fn prober_unknown_endpoints(&self, region: &Region, count: u64) {
        self.unknown_endpoints
            .with_label_values(&[region.as_str()])
            .inc_by(count);
    }

    /// A UDP response held back by rate limiting (`dropped` or `slipped`).
    pub fn dns_rrl(&self, action: &str) {
        self.dns_rrl.with_label_values(&[action]).inc();
    }

    /// When the certificate `endpoint` showed to `region`'s last https check expires.
    pub fn tls_cert_expiry(&self, endpoint: &EndpointId, region: &Region, unix_s: i64) {
        self.tls_cert_expiry
            .with_label_values(&[endpoint.as_str(), region.as_str()])
            .set(unix_s as f64);
    }

    /// The counter of connections a listener (`dns`, `admin`, `prober`) refused when full.
    pub fn connections_refused_counter(&self, listener: &str) -> IntCounter {
        self.connections_refused.with_label_values(&[listener])
    }

    /// The counter `dns_response` increments, for callers that count the same answer again.
    pub fn dns_response_counter(&self, protocol: &str, qtype: &str, rcode: &str) -> IntCounter {
        self.dns_responses
            .with_label_values(&[protocol, qtype, rcode])
    }

    /// Packets of the AF_XDP path on `interface` with this outcome.
    pub fn xdp_packet_counter(&self, interface: &str, outcome: &str) -> IntCounter {
        self.xdp_packets.with_label_values(&[interface, outcome])
    }

    /// Answers for a managed record by the reason behind them.
    pub fn managed_answer_counter(&self, record: &str, qtype: &str, reason: &str) -> IntCounter {
        self.dns_queries.with_label_values(&[record, qtype, reason])
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

    /// One pull of a remote prober: `result` is ok, unreachable or rejected.
    pub fn prober_poll(
        &self,
        region: &Region,
        result: &str,
        rejection: Option<crate::exchange::auth::Rejection>,
    ) {
        self.links
            .polls
            .with_label_values(&[region.as_str(), result])
            .inc();
        if let Some(r) = rejection {
            self.links
                .rejected
                .with_label_values(&[region.as_str(), r.label()])
                .inc();
        }
    }

    /// Reachability and report age of a prober; the first call for a region also starts its
    /// rejection counters at 0 (so that the first rejection shows in `increase()`).
    pub fn prober_link(
        &self,
        region: &Region,
        reachable: bool,
        report_age: Option<std::time::Duration>,
    ) {
        for rejection in crate::exchange::auth::Rejection::ALL {
            self.links
                .rejected
                .with_label_values(&[region.as_str(), rejection.label()]);
        }
        self.links
            .reachable
            .with_label_values(&[region.as_str()])
            .set(i64::from(reachable));
        if let Some(age) = report_age {
            self.links
                .report_age
                .with_label_values(&[region.as_str()])
                .set(age.as_secs_f64());
        }
    }

    /// A prober refused a request for its observations.
    pub fn request_rejected(&self, rejection: crate::exchange::auth::Rejection) {
        self.links
            .requests_rejected
            .with_label_values(&[rejection.label()])
            .inc();
    }

    /// One Route53 API call (each attempt), by operation and result.
    pub fn route53_call(&self, operation: &str, result: &str) {
        self.route53
            .calls
            .with_label_values(&[operation, result])
            .inc();
    }

    /// A reconcile cycle refused by the change cap.
    pub fn route53_refused(&self) {
        self.route53.refused.inc();
    }

    /// One applied change.
    pub fn route53_change(&self, step: &crate::route53::plan::Step) {
        use crate::route53::plan::Step;
        let action = match step {
            Step::Create { .. } => "create",
            Step::Update { .. } => "update",
            Step::Delete { .. } => "delete",
        };
        self.route53.changes.with_label_values(&[action]).inc();
    }

    /// The state after a reconcile pass: conflicts per record, pending changes, last sync.
    pub fn route53_state(&self, conflicts: &[String], pending: usize, synced: bool) {
        self.route53.conflicts.reset();
        for record in conflicts {
            self.route53.conflicts.with_label_values(&[record]).set(1);
        }
        self.route53.pending.set(pending as i64);
        if synced {
            self.route53
                .last_sync
                .set(crate::clock::unix_ms() as f64 / 1000.0);
        }
    }

    /// The state of each record pushed to Route53 (1 for the current state, 0 for the others).
    pub fn route53_records(&self, states: &[crate::route53::status::RecordSync]) {
        for state in crate::route53::status::SyncState::ALL {
            let count = states.iter().filter(|r| r.state == state).count();
            self.route53
                .records_by_state
                .with_label_values(&[state.as_str()])
                .set(count as i64);
        }
        for record in states {
            for state in crate::route53::status::SyncState::ALL {
                self.route53
                    .records
                    .with_label_values(&[&record.record, &record.rtype, state.as_str()])
                    .set(i64::from(state == record.state));
            }
        }
    }

    /// Time from an answer change to INSYNC.
    pub fn route53_insync_after(&self, seconds: f64) {
        self.route53.insync_seconds.observe(seconds);
    }

    /// Overrides in force: 1 for each endpoint's current override action.
    pub fn overrides(
        &self,
        endpoints: &[EndpointId],
        active: &std::collections::BTreeMap<EndpointId, crate::state::overrides::Override>,
    ) {
        for id in endpoints {
            let current = active.get(id).map(|o| o.action);
            for action in crate::state::overrides::Action::ALL {
                self.overrides
                    .with_label_values(&[id.as_str(), action.as_str()])
                    .set(i64::from(current == Some(action)));
            }
        }
    }

    /// A configuration reload finished.
    pub fn config_reloaded(&self, ok: bool) {
        self.reloads
            .with_label_values(&[if ok { "success" } else { "failure" }])
            .inc();
        self.reload_ok.set(i64::from(ok));
    }

    /// An override was set, cleared or expired.
    pub fn override_changed(&self, what: &str) {
        self.override_changes.with_label_values(&[what]).inc();
    }

    /// Quorum state of the latest round: probers with fresh reports, impaired probers.
    pub fn quorum(
        &self,
        reached: bool,
        fresh: usize,
        regions: &[Region],
        impaired: &std::collections::BTreeSet<Region>,
    ) {
        self.quorum_reached.set(i64::from(reached));
        self.fresh_probers.set(fresh as i64);
        for region in regions {
            self.prober_impaired
                .with_label_values(&[region.as_str()])
                .set(i64::from(impaired.contains(region)));
        }
    }

    pub fn published(&self, generation: u64, ready: bool) {
        self.snapshot_generation.set(generation as i64);
        self.ready.set(i64::from(ready));
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        let encoder = TextEncoder::new();
        if let Err(e) = encoder.encode(&self.registry.gather(), &mut buf) {
            tracing::error!(error = %e, "cannot encode metrics");
        }
        String::from_utf8(buf).unwrap_or_default()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}
