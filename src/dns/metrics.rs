//! The DNS server's metrics: responses by transport, type and code; answers of managed
//! records by reason; rate limiting; the AF_XDP path; TCP connections refused; online signing.

use prometheus::{IntCounter, IntCounterVec, IntGaugeVec};

use crate::metrics::Registry;

#[derive(Clone)]
pub struct DnsMetrics {
    responses: IntCounterVec,
    managed_answers: IntCounterVec,
    rrl: IntCounterVec,
    xdp_packets: IntCounterVec,
    /// TCP connections refused at accept (`vantage_connections_refused_total{listener="dns"}`).
    refused: IntCounter,
    signatures: IntCounterVec,
    signature_hits: IntCounterVec,
    signature_failures: IntCounterVec,
    signature_expiry: IntGaugeVec,
    signature_entries: IntGaugeVec,
    signature_refresh: IntGaugeVec,
}

impl DnsMetrics {
    /// `refused` counts TCP connections refused at accept (see `limits::ListenerMetrics`).
    pub fn new(registry: &Registry, refused: IntCounter) -> Self {
        let rrl = registry.int_counter_vec(
            "vantage_dns_rrl_total",
            "UDP responses held back by response rate limiting: dropped, or slipped (sent truncated).",
            &["action"],
        );
        for action in ["dropped", "slipped"] {
            rrl.with_label_values(&[action]);
        }
        Self {
            responses: registry.int_counter_vec(
                "vantage_dns_responses_total",
                "DNS responses sent, by transport protocol, query type and response code.",
                &["protocol", "qtype", "rcode"],
            ),
            managed_answers: registry.int_counter_vec(
                "vantage_dns_managed_answers_total",
                "Answers for managed records, by record, query type and the reason behind the answer.",
                &["record", "qtype", "reason"],
            ),
            rrl,
            xdp_packets: registry.int_counter_vec(
                "vantage_dns_xdp_packets_total",
                "UDP packets taken by the AF_XDP path (dns.xdp), by interface and outcome: replied (on the XDP ring), replied_by_socket (too big for a frame or the link), no_reply.",
                &["interface", "outcome"],
            ),
            refused,
            signatures: registry.int_counter_vec(
                "vantage_dnssec_signatures_total",
                "RRSIGs made, by signed zone.",
                &["zone"],
            ),
            signature_hits: registry.int_counter_vec(
                "vantage_dnssec_signature_cache_hits_total",
                "RRsets of signed answers whose signatures came from the signature cache, by zone.",
                &["zone"],
            ),
            signature_failures: registry.int_counter_vec(
                "vantage_dnssec_signing_failures_total",
                "RRSIGs that could not be made (the answer went out without them), by zone.",
                &["zone"],
            ),
            signature_expiry: registry.int_gauge_vec(
                "vantage_dnssec_signature_expiry_earliest_timestamp_seconds",
                "When the first of the signatures this server may still send expires (Unix seconds), by zone.",
                &["zone"],
            ),
            signature_entries: registry.int_gauge_vec(
                "vantage_dnssec_signature_cache_entries",
                "RRsets whose signatures are cached, by zone.",
                &["zone"],
            ),
            signature_refresh: registry.int_gauge_vec(
                "vantage_dnssec_signature_refresh_seconds",
                "How long before they expire signatures are made again (signature_refresh), by zone.",
                &["zone"],
            ),
        }
    }

    /// What signing one reply of `zone` did.
    pub fn signed(&self, zone: &str, work: &crate::dns::dnssec::signer::Work) {
        for (counter, n) in [
            (&self.signatures, work.signed),
            (&self.signature_hits, work.hits),
            (&self.signature_failures, work.failed),
        ] {
            if n > 0 {
                counter.with_label_values(&[zone]).inc_by(n);
            }
        }
    }

    /// The signature cache of `zone` after a sweep: entries kept, the earliest expiry among
    /// them, the refresh period. `zones`: every zone signed now (the others lose their series).
    pub fn signature_cache(&self, zones: &[(&str, usize, Option<u64>, u64)]) {
        for gauge in [
            &self.signature_expiry,
            &self.signature_entries,
            &self.signature_refresh,
        ] {
            gauge.reset();
        }
        for (zone, entries, earliest, refresh) in zones {
            self.signatures.with_label_values(&[zone]);
            self.signature_hits.with_label_values(&[zone]);
            self.signature_failures.with_label_values(&[zone]);
            self.signature_entries
                .with_label_values(&[zone])
                .set(*entries as i64);
            self.signature_refresh
                .with_label_values(&[zone])
                .set(*refresh as i64);
            if let Some(at) = earliest {
                self.signature_expiry
                    .with_label_values(&[zone])
                    .set(*at as i64);
            }
        }
    }

    pub fn response(&self, protocol: &str, qtype: &str, rcode: &str) {
        self.response_counter(protocol, qtype, rcode).inc();
    }

    /// The counter `response` increments, for callers that count the same answer again.
    pub fn response_counter(&self, protocol: &str, qtype: &str, rcode: &str) -> IntCounter {
        self.responses.with_label_values(&[protocol, qtype, rcode])
    }

    /// Answers for a managed record by the reason behind them.
    pub fn managed_answer_counter(&self, record: &str, qtype: &str, reason: &str) -> IntCounter {
        self.managed_answers
            .with_label_values(&[record, qtype, reason])
    }

    /// A UDP response held back by rate limiting (`dropped` or `slipped`).
    pub fn rrl(&self, action: &str) {
        self.rrl.with_label_values(&[action]).inc();
    }

    /// Packets of the AF_XDP path on `interface` with this outcome.
    pub fn xdp_packet_counter(&self, interface: &str, outcome: &str) -> IntCounter {
        self.xdp_packets.with_label_values(&[interface, outcome])
    }

    /// TCP connections refused at accept (the listener or the source was full).
    pub fn refused_counter(&self) -> IntCounter {
        self.refused.clone()
    }
}
