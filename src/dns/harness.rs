//! The UDP request path without sockets: the answer cache, then the front end (parse,
//! answer, write). Used by the fuzz target (`fuzz/`) and by the
//! property tests that feed it random packets and check the cache against the full path.

use std::{
    net::SocketAddr,
    path::Path,
    sync::{Arc, Mutex, PoisonError},
};

use arc_swap::ArcSwap;

use super::{
    server::{DnsState, Frontend},
    udp::{ThreadCache, UdpAnswerer},
    zones,
};
use crate::{
    config::Settings,
    model::Health,
    quorum::Verdict,
    snapshot::{self, Snapshot},
};

const FLEET: &str = r#"
[[prober]]
region = "a"
[check.t]
protocol = "tcp"
port = 9
[[record]]
name = "www.example.com"
policy = "failover"
endpoints = [{ name = "one", address = "192.0.2.1" }, { name = "two", address = "192.0.2.2" }]
[[record]]
name = "api.example.com"
type = "AAAA"
policy = "all"
endpoints = [{ name = "six", address = "2001:db8::6" }]
[[record]]
name = "img.example.com"
policy = "weighted"
endpoints = [{ name = "w1", address = "192.0.2.11" }, { name = "w2", address = "192.0.2.12" }]
"#;

const ZONE: &str = include_str!("../../zones/example.com.zone");

pub struct Harness {
    answerer: UdpAnswerer,
    cache: Mutex<ThreadCache>,
}

impl Harness {
    /// The example zone plus two managed records, every endpoint Up.
    pub fn new() -> Result<Self, String> {
        let settings =
            Settings::from_toml(FLEET, "harness", Path::new(".")).map_err(|e| e.to_string())?;
        let zone =
            zones::parse_zone(Path::new("example.com.zone"), ZONE).map_err(|e| e.to_string())?;
        let verdicts = settings
            .endpoints
            .iter()
            .map(|e| {
                let mut v = Verdict::unknown(1);
                v.health = Health::Up;
                (e.id.clone(), std::sync::Arc::new(v))
            })
            .collect();
        let snap = snapshot::build(
            &settings,
            snapshot::Decided::held(verdicts, Default::default()),
            Default::default(),
            &Snapshot::default(),
            1,
            crate::snapshot::Undecided::Wait,
        );
        let published = Arc::new(ArcSwap::from_pointee(snap));
        let state = DnsState::new(&settings, vec![zone]);
        Ok(Self {
            answerer: UdpAnswerer::new(Frontend::new(
                Arc::new(ArcSwap::from_pointee(state)),
                published,
                super::DnsMetrics::new(
                    &crate::metrics::Registry::new(),
                    prometheus::IntCounter::new("refused", "refused").expect("valid metric"),
                ),
            )),
            cache: Mutex::new(ThreadCache::default()),
        })
    }

    /// Handles one packet as the UDP server does (the answer cache first, then the full
    /// path); None when the server would not reply.
    pub async fn handle(&self, packet: &[u8]) -> Option<Vec<u8>> {
        let mut out = Vec::new();
        if self.answerer.cached(&mut self.lock(), packet, &mut out) {
            return Some(out);
        }
        let full = self.answerer.full(packet, source())?;
        Some(self.answerer.remember(&mut self.lock(), packet, full))
    }

    /// Handles one packet with the full path only (what the cache must reproduce).
    pub async fn handle_uncached(&self, packet: &[u8]) -> Option<Vec<u8>> {
        Some(self.answerer.full(packet, source())?.response)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, ThreadCache> {
        self.cache.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

fn source() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 5353))
}

#[cfg(test)]
mod tests {
    use hickory_proto::op::Message;
    use proptest::prelude::*;

    use super::*;

    fn query(name: &str, rtype: hickory_proto::rr::RecordType) -> Vec<u8> {
        let mut m = Message::new(
            7,
            hickory_proto::op::MessageType::Query,
            hickory_proto::op::OpCode::Query,
        );
        m.add_query(hickory_proto::op::Query::query(
            hickory_proto::rr::Name::from_ascii(name).expect("name"),
            rtype,
        ));
        m.to_vec().expect("encode")
    }

    #[tokio::test]
    async fn answers_a_managed_record_without_sockets() {
        let h = Harness::new().expect("harness");
        let reply = h
            .handle(&query("www.example.com.", hickory_proto::rr::RecordType::A))
            .await
            .expect("reply");
        let m = Message::from_vec(&reply).expect("decode");
        assert_eq!(m.answers.len(), 1);
    }

    /// A query with every knob the cache key has: ID, name case, type, RD, EDNS size and DO.
    fn shaped(id: u16, name: &str, rtype: u16, rd: bool, edns: Option<(u16, bool)>) -> Vec<u8> {
        let mut p = id.to_be_bytes().to_vec();
        p.extend_from_slice(&[
            u8::from(rd),
            0,
            0,
            1,
            0,
            0,
            0,
            0,
            0,
            u8::from(edns.is_some()),
        ]);
        for label in name.trim_end_matches('.').split('.') {
            p.push(label.len() as u8);
            p.extend_from_slice(label.as_bytes());
        }
        p.push(0);
        p.extend_from_slice(&rtype.to_be_bytes());
        p.extend_from_slice(&[0, 1]);
        if let Some((size, dnssec_ok)) = edns {
            p.extend_from_slice(&[0, 0, 41]);
            p.extend_from_slice(&size.to_be_bytes());
            p.extend_from_slice(&[0, 0, if dnssec_ok { 0x80 } else { 0 }, 0, 0, 0]);
        }
        p
    }

    const NAMES: [&str; 12] = [
        "example.com.",
        "www.example.com.",
        "api.example.com.",
        "mail.example.com.",
        "ns1.example.com.",
        "docs.example.com.",
        "_sip._tcp.example.com.",
        "nothing.example.com.",
        "a.b.www.example.com.",
        "_tcp.example.com.",
        "example.org.",
        "com.",
    ];
    // A, NS, CNAME, SOA, MX, TXT, AAAA, SRV, DS, ANY, CAA, AXFR, TYPE65280
    const TYPES: [u16; 13] = [1, 2, 5, 6, 15, 16, 28, 33, 43, 255, 257, 252, 65280];

    fn recase(name: &str, mask: u64) -> String {
        name.chars()
            .enumerate()
            .map(|(i, c)| {
                if mask >> (i % 64) & 1 == 1 {
                    c.to_ascii_uppercase()
                } else {
                    c
                }
            })
            .collect()
    }

    /// Found by the fuzzer: a question name with a compression pointer into the header was
    /// echoed verbatim, making the response unreadable. It gets FORMERR, without the question.
    #[tokio::test]
    async fn a_question_with_a_compression_pointer_gets_formerr() {
        let h = Harness::new().expect("harness");
        let mut packet = vec![0, 9, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0];
        packet.extend_from_slice(&[3, b'w', b'w', b'w', 0xc0, 2, 0, 1, 0, 1]);
        for reply in [h.handle(&packet).await, h.handle_uncached(&packet).await] {
            let reply = Message::from_vec(&reply.expect("a reply")).expect("readable");
            assert_eq!(
                reply.metadata.response_code,
                hickory_proto::op::ResponseCode::FormErr
            );
            assert_eq!(reply.metadata.id, 9);
            assert!(reply.queries.is_empty());
        }
    }

    #[test]
    fn weighted_answers_are_never_replayed_from_the_cache() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let h = Harness::new().expect("harness");
        for id in 0..50 {
            rt.block_on(h.handle(&shaped(id, "img.example.com.", 1, true, None)))
                .expect("reply");
        }
        assert_eq!(
            h.lock().answers().len(),
            0,
            "a weighted answer varies by query"
        );
        rt.block_on(h.handle(&shaped(1, "www.example.com.", 1, true, None)))
            .expect("reply");
        assert_eq!(
            h.lock().answers().len(),
            1,
            "a failover answer is the same for everyone"
        );
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 1_000, ..ProptestConfig::default() })]
        /// Whatever was cached first, a replayed answer is byte for byte what the full path
        /// gives the second asker (its ID, its letter case, its EDNS).
        #[test]
        fn cached_answers_equal_the_full_path(
            name in 0usize..NAMES.len(),
            rtype in 0usize..TYPES.len(),
            (first_id, second_id) in (any::<u16>(), any::<u16>()),
            (first_case, second_case) in (any::<u64>(), any::<u64>()),
            rd in any::<bool>(),
            edns in prop::option::of((prop::sample::select(vec![0u16, 512, 1232, 4096]), any::<bool>())),
        ) {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
            let h = Harness::new().expect("harness");
            let (name, rtype) = (NAMES[name], TYPES[rtype]);
            let first = shaped(first_id, &recase(name, first_case), rtype, rd, edns);
            let second = shaped(second_id, &recase(name, second_case), rtype, rd, edns);
            let primed = rt.block_on(h.handle(&first));
            let replayed = rt.block_on(h.handle(&second));
            let expected = rt.block_on(h.handle_uncached(&second));
            prop_assert_eq!(primed.is_some(), expected.is_some());
            prop_assert_eq!(&replayed, &expected, "{} type {}", name, rtype);
            // The same question again (another ID): from the cache when it may be.
            let mut again = second.clone();
            again[..2].copy_from_slice(&first_id.wrapping_add(1).to_be_bytes());
            let replayed = rt.block_on(h.handle(&again));
            let expected = rt.block_on(h.handle_uncached(&again));
            prop_assert_eq!(&replayed, &expected, "{} type {} (repeated)", name, rtype);
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 2_000, ..ProptestConfig::default() })]
        /// Random packets and mutated queries never crash the request path, and every reply
        /// is a well-formed DNS message.
        #[test]
        fn random_packets_get_well_formed_replies_or_none(
            noise in prop::collection::vec(any::<u8>(), 0..600),
            flips in prop::collection::vec((0usize..64, any::<u8>()), 0..8),
            which in 0usize..3,
        ) {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
            let h = Harness::new().expect("harness");
            let mut packet = match which {
                0 => noise,
                1 => query("www.example.com.", hickory_proto::rr::RecordType::A),
                _ => query("mail.example.com.", hickory_proto::rr::RecordType::MX),
            };
            for (at, value) in flips {
                if !packet.is_empty() {
                    let i = at % packet.len();
                    packet[i] = value;
                }
            }
            if let Some(reply) = rt.block_on(h.handle(&packet)) {
                prop_assert!(Message::from_vec(&reply).is_ok(), "unparsable reply to {packet:?}");
            }
        }
    }
}
