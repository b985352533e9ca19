//! The request path without sockets: decode a packet, run it through the front end (catalog,
//! zone handlers, managed answers), return the encoded response. Used by the fuzz target
//! (`fuzz/`) and by the property test that feeds it random packets.

use std::{
    net::SocketAddr,
    path::Path,
    sync::{Arc, Mutex, PoisonError},
};

use arc_swap::ArcSwap;
use hickory_proto::{
    op::{Header, HeaderCounts, Message},
    rr::Record,
    serialize::binary::BinEncoder,
};
use hickory_server::{
    net::{NetError, runtime::TokioTime, xfer::Protocol},
    server::{Request, RequestHandler, ResponseHandler, ResponseInfo},
    zone_handler::MessageResponse,
};

use super::{
    server::{DnsState, Frontend},
    zones,
};
use crate::{
    config::Settings,
    metrics::Metrics,
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
"#;

const ZONE: &str = include_str!("../../zones/example.com.zone");

/// Collects the encoded response instead of sending it.
#[derive(Clone, Default)]
struct Sink(Arc<Mutex<Option<Vec<u8>>>>);

#[async_trait::async_trait]
impl ResponseHandler for Sink {
    async fn send_response<'a>(
        &mut self,
        response: MessageResponse<
            '_,
            'a,
            impl Iterator<Item = &'a Record> + Send + 'a,
            impl Iterator<Item = &'a Record> + Send + 'a,
            impl Iterator<Item = &'a Record> + Send + 'a,
            impl Iterator<Item = &'a Record> + Send + 'a,
        >,
    ) -> Result<ResponseInfo, NetError> {
        let mut bytes = Vec::with_capacity(512);
        let mut encoder = BinEncoder::new(&mut bytes);
        response.destructive_emit(&mut encoder)?;
        let metadata = Message::from_vec(&bytes)
            .map_err(|e| NetError::from(e.to_string()))?
            .metadata;
        *self.0.lock().unwrap_or_else(PoisonError::into_inner) = Some(bytes);
        Ok(ResponseInfo::from(Header {
            metadata,
            counts: HeaderCounts::default(),
        }))
    }
}

pub struct Harness {
    frontend: Frontend,
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
                (e.id.clone(), v)
            })
            .collect();
        let snap = snapshot::build(
            &settings,
            verdicts,
            Default::default(),
            &Snapshot::default(),
            1,
            false,
        );
        let published = Arc::new(ArcSwap::from_pointee(snap));
        let state = DnsState::new(&settings, vec![zone], &published).map_err(|e| e.to_string())?;
        Ok(Self {
            frontend: Frontend::new(
                Arc::new(ArcSwap::from_pointee(state)),
                published,
                Arc::new(Metrics::new()),
            ),
        })
    }

    /// Handles one packet as if it came over UDP; None when it is not a decodable request
    /// (the server drops those).
    pub async fn handle(&self, packet: &[u8]) -> Option<Vec<u8>> {
        let source: SocketAddr = SocketAddr::from(([127, 0, 0, 1], 5353));
        let request = Request::from_bytes(packet.to_vec(), source, Protocol::Udp).ok()?;
        let sink = Sink::default();
        self.frontend
            .handle_request::<Sink, TokioTime>(&request, sink.clone())
            .await;
        sink.0.lock().unwrap_or_else(PoisonError::into_inner).take()
    }
}

#[cfg(test)]
mod tests {
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
