//! The DNS front end: UDP and TCP listeners, the not-ready gate, and response metrics,
//! around hickory's `Catalog` of our zones.

use std::{io, net::SocketAddr, sync::Arc, time::Duration};

use arc_swap::ArcSwap;
use hickory_proto::op::{Header, HeaderCounts, MessageType, Metadata, OpCode, ResponseCode};
use hickory_proto::rr::{
    LowerName, Record, RecordType,
    rdata::opt::{ClientSubnet, EdnsOption},
};
use hickory_server::{
    Server,
    net::{NetError, runtime::Time},
    server::{Request, RequestHandler, ResponseHandler, ResponseInfo},
    zone_handler::{Catalog, MessageResponse, MessageResponseBuilder},
};
use tokio::net::{TcpListener, UdpSocket};

use super::client::ClientRegions;
use crate::{
    config::RecordKind,
    metrics::Metrics,
    snapshot::{Answer, Snapshot},
};

/// Idle TCP connections are closed after this long.
const TCP_IDLE_TIMEOUT: Duration = Duration::from_secs(10);
const TCP_RESPONSE_BUFFER: usize = 64;

/// What the DNS server answers from, replaced whole on reload: the catalog of zones and the
/// client-region table.
pub struct DnsState {
    pub catalog: Catalog,
    pub clients: Arc<ClientRegions>,
    /// Zone cuts below our zones (NS records not at an apex), answered with referrals.
    delegations: Vec<Delegation>,
}

/// A zone cut: the delegated name, its NS records and the glue we hold for them.
struct Delegation {
    cut: LowerName,
    ns: Vec<Record>,
    glue: Vec<Record>,
}

fn delegations(zones: &[super::ZoneFile]) -> Vec<Delegation> {
    let mut out = Vec::new();
    for zone in zones {
        let apex = LowerName::new(&zone.origin);
        for (key, set) in &zone.records {
            if key.record_type != RecordType::NS || key.name == apex {
                continue;
            }
            let ns: Vec<Record> = set.records_without_rrsigs().cloned().collect();
            let glue: Vec<Record> = ns
                .iter()
                .filter_map(|r| match &r.data {
                    hickory_proto::rr::RData::NS(target) => Some(LowerName::new(&target.0)),
                    _ => None,
                })
                .flat_map(|target| {
                    zone.records
                        .iter()
                        .filter(move |(k, _)| {
                            k.name == target
                                && matches!(k.record_type, RecordType::A | RecordType::AAAA)
                        })
                        .flat_map(|(_, s)| s.records_without_rrsigs().cloned().collect::<Vec<_>>())
                })
                .collect();
            out.push(Delegation {
                cut: key.name.clone(),
                ns,
                glue,
            });
        }
    }
    out
}

impl DnsState {
    /// The delegation covering a query, if the name is at or below a zone cut (DS queries
    /// are answered by the parent, i.e. us).
    fn referral(&self, request: &Request) -> Option<&Delegation> {
        if request.metadata.message_type != MessageType::Query
            || request.metadata.op_code != OpCode::Query
            || request.edns.as_ref().is_some_and(|e| e.version() != 0)
        {
            return None;
        }
        let info = request.request_info().ok()?;
        if info.query.query_type() == RecordType::DS {
            return None;
        }
        let name = info.query.name();
        self.delegations
            .iter()
            .filter(|d| d.cut.zone_of(name))
            .max_by_key(|d| d.cut.num_labels())
    }
}

impl DnsState {
    pub fn new(
        settings: &crate::config::Settings,
        zones: Vec<super::ZoneFile>,
        snapshot: &Arc<ArcSwap<Snapshot>>,
    ) -> Result<Self, super::ZoneError> {
        let clients = Arc::new(ClientRegions::new(settings.dns.client_regions.clone()));
        let delegations = delegations(&zones);
        let catalog = super::catalog(zones, snapshot, &clients)?;
        Ok(Self {
            catalog,
            clients,
            delegations,
        })
    }
}

pub struct Frontend {
    state: Arc<ArcSwap<DnsState>>,
    snapshot: Arc<ArcSwap<Snapshot>>,
    metrics: Arc<Metrics>,
}

impl Frontend {
    pub fn new(
        state: Arc<ArcSwap<DnsState>>,
        snapshot: Arc<ArcSwap<Snapshot>>,
        metrics: Arc<Metrics>,
    ) -> Self {
        Self {
            state,
            snapshot,
            metrics,
        }
    }

    /// The ECS option to echo (RFC 7871): the query's, with the scope actually used: the
    /// matched client network for region-dependent answers, 0 for answers that are the same
    /// for every client.
    fn ecs_echo(&self, request: &Request, clients: &ClientRegions) -> Option<ClientSubnet> {
        let located = clients.locate(request);
        let mut subnet = located.subnet?;
        let region_dependent = request.request_info().ok().is_some_and(|info| {
            let name = info.query.name().to_string();
            let snapshot = self.snapshot.load();
            [RecordKind::A, RecordKind::Aaaa].iter().any(|k| {
                snapshot
                    .records
                    .get(&(name.clone(), *k))
                    .is_some_and(|r| matches!(r.answer, Answer::ByRegion { .. }))
            })
        });
        subnet.set_scope_prefix(if region_dependent { located.scope } else { 0 });
        Some(subnet)
    }

    /// Counts an answer for a managed record by the reason behind it.
    fn count_managed(&self, request: &Request) {
        let Ok(info) = request.request_info() else {
            return;
        };
        let (kind, qtype) = match info.query.query_type() {
            hickory_proto::rr::RecordType::A => (RecordKind::A, "A"),
            hickory_proto::rr::RecordType::AAAA => (RecordKind::Aaaa, "AAAA"),
            _ => return,
        };
        let name = info.query.name().to_string();
        let snapshot = self.snapshot.load();
        if let Some(answer) = snapshot.records.get(&(name.clone(), kind)) {
            self.metrics
                .managed_answer(&name, qtype, answer.reason.code());
        }
    }

    /// True when the query asks for a managed record whose answer is not decided yet.
    fn undecided(&self, request: &Request) -> bool {
        // Anything but a plain EDNS-0 query goes through the catalog's protocol checks.
        if request.metadata.message_type != MessageType::Query
            || request.metadata.op_code != OpCode::Query
            || request.edns.as_ref().is_some_and(|e| e.version() != 0)
        {
            return false;
        }
        let Ok(info) = request.request_info() else {
            return false;
        };
        let snapshot = self.snapshot.load();
        if snapshot.names.is_empty() {
            return false;
        }
        let name = info.query.name().to_string();
        if !snapshot.names.contains(&name) {
            return false;
        }
        let kinds: &[RecordKind] = match info.query.query_type() {
            hickory_proto::rr::RecordType::A => &[RecordKind::A],
            hickory_proto::rr::RecordType::AAAA => &[RecordKind::Aaaa],
            hickory_proto::rr::RecordType::ANY => &[RecordKind::A, RecordKind::Aaaa],
            _ => &[],
        };
        kinds.iter().any(|k| {
            snapshot
                .records
                .get(&(name.clone(), *k))
                .is_some_and(|r| r.answer == Answer::NotReady)
        })
    }
}

#[async_trait::async_trait]
impl RequestHandler for Frontend {
    async fn handle_request<R: ResponseHandler, T: Time>(
        &self,
        request: &Request,
        mut response_handle: R,
    ) -> ResponseInfo {
        let protocol = request.protocol().to_string();
        let state = self.state.load_full();
        let info = if let Some(delegation) = state.referral(request) {
            // A referral: the delegated zone's NS in authority, glue in additional, no AA.
            let edns = request.edns.as_ref().map(|req| {
                let mut edns = hickory_proto::op::Edns::new();
                edns.set_max_payload(req.max_payload().max(512));
                edns
            });
            let mut metadata = Metadata::response_from_request(&request.metadata);
            metadata.authoritative = false;
            metadata.response_code = ResponseCode::NoError;
            let response = MessageResponseBuilder::new(&request.queries, edns.as_ref()).build(
                metadata,
                std::iter::empty(),
                delegation.ns.iter(),
                std::iter::empty(),
                delegation.glue.iter(),
            );
            match response_handle.send_response(response).await {
                Ok(info) => info,
                Err(error) => {
                    tracing::debug!(%error, "cannot send a referral");
                    ResponseInfo::from(Header {
                        metadata,
                        counts: HeaderCounts::default(),
                    })
                }
            }
        } else if self.undecided(request) {
            let edns = request.edns.as_ref().map(|req| {
                let mut edns = hickory_proto::op::Edns::new();
                edns.set_max_payload(req.max_payload().max(512));
                edns
            });
            let response = MessageResponseBuilder::new(&request.queries, edns.as_ref())
                .error_msg(&request.metadata, ResponseCode::ServFail);
            match response_handle.send_response(response).await {
                Ok(info) => info,
                Err(error) => {
                    tracing::debug!(%error, "cannot send SERVFAIL");
                    let mut metadata = Metadata::response_from_request(&request.metadata);
                    metadata.response_code = ResponseCode::ServFail;
                    ResponseInfo::from(Header {
                        metadata,
                        counts: HeaderCounts::default(),
                    })
                }
            }
        } else if let Some(subnet) = self.ecs_echo(request, &state.clients) {
            let echo = EcsEcho {
                inner: response_handle,
                subnet,
            };
            state
                .catalog
                .handle_request::<EcsEcho<R>, T>(request, echo)
                .await
        } else {
            state
                .catalog
                .handle_request::<R, T>(request, response_handle)
                .await
        };
        self.metrics.dns_response(
            &protocol,
            qtype_name(request),
            rcode_name(info.response_code),
        );
        self.count_managed(request);
        info
    }
}

/// Adds the client subnet option, with its scope, to the response's EDNS (hickory's catalog
/// builds a fresh EDNS without it).
#[derive(Clone)]
struct EcsEcho<R> {
    inner: R,
    subnet: ClientSubnet,
}

#[async_trait::async_trait]
impl<R: ResponseHandler> ResponseHandler for EcsEcho<R> {
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
        let mut response = response;
        let Some(edns) = response.edns() else {
            return self.inner.send_response(response).await;
        };
        let mut edns = edns.clone();
        edns.options_mut().insert(EdnsOption::Subnet(self.subnet));
        response.set_edns(&edns);
        self.inner.send_response(response).await
    }
}

/// The query type, from a fixed set (others are "OTHER"), for metric labels.
fn qtype_name(request: &Request) -> &'static str {
    use hickory_proto::rr::RecordType as T;
    match request.request_info().map(|i| i.query.query_type()) {
        Ok(T::A) => "A",
        Ok(T::AAAA) => "AAAA",
        Ok(T::CNAME) => "CNAME",
        Ok(T::MX) => "MX",
        Ok(T::TXT) => "TXT",
        Ok(T::NS) => "NS",
        Ok(T::SOA) => "SOA",
        Ok(T::SRV) => "SRV",
        Ok(T::CAA) => "CAA",
        Ok(T::PTR) => "PTR",
        Ok(T::ANY) => "ANY",
        Ok(T::AXFR) => "AXFR",
        Ok(_) => "OTHER",
        Err(_) => "NONE",
    }
}

/// The conventional mnemonic of a response code (RFC 6895 registry), for metric labels.
pub fn rcode_name(code: ResponseCode) -> &'static str {
    match code {
        ResponseCode::NoError => "NOERROR",
        ResponseCode::FormErr => "FORMERR",
        ResponseCode::ServFail => "SERVFAIL",
        ResponseCode::NXDomain => "NXDOMAIN",
        ResponseCode::NotImp => "NOTIMP",
        ResponseCode::Refused => "REFUSED",
        ResponseCode::NotAuth => "NOTAUTH",
        ResponseCode::BADVERS => "BADVERS",
        _ => "OTHER",
    }
}

/// Bound DNS sockets: for each listen address a UDP socket and a TCP listener on the same port.
pub struct Bound {
    pub sockets: Vec<(UdpSocket, TcpListener)>,
}

impl Bound {
    pub fn addresses(&self) -> Vec<SocketAddr> {
        self.sockets
            .iter()
            .filter_map(|(udp, _)| udp.local_addr().ok())
            .collect()
    }
}

/// Binds every listen address; port 0 picks a free port shared by UDP and TCP.
/// IPv6 sockets are IPv6-only, so that `0.0.0.0:53` and `[::]:53` can be listed together.
pub async fn bind(listen: &[SocketAddr]) -> io::Result<Bound> {
    let mut sockets = Vec::new();
    for addr in listen {
        let mut attempts = 0;
        loop {
            let udp = udp_socket(*addr).map_err(|e| annotate(e, "UDP", addr))?;
            let port = udp.local_addr()?.port();
            match tcp_listener(SocketAddr::new(addr.ip(), port)) {
                Ok(tcp) => {
                    sockets.push((udp, tcp));
                    break;
                }
                // With port 0 the UDP port may be taken on TCP; try another.
                Err(e) if addr.port() == 0 && attempts < 20 => {
                    attempts += 1;
                    tracing::debug!(error = %e, port, "TCP port taken, retrying");
                }
                Err(e) => return Err(annotate(e, "TCP", addr)),
            }
        }
    }
    Ok(Bound { sockets })
}

fn socket(
    addr: SocketAddr,
    kind: socket2::Type,
    protocol: socket2::Protocol,
) -> io::Result<socket2::Socket> {
    let socket = socket2::Socket::new(socket2::Domain::for_address(addr), kind, Some(protocol))?;
    if addr.is_ipv6() {
        socket.set_only_v6(true)?;
    }
    socket.set_nonblocking(true)?;
    Ok(socket)
}

fn udp_socket(addr: SocketAddr) -> io::Result<UdpSocket> {
    let socket = socket(addr, socket2::Type::DGRAM, socket2::Protocol::UDP)?;
    socket.bind(&addr.into())?;
    UdpSocket::from_std(socket.into())
}

fn tcp_listener(addr: SocketAddr) -> io::Result<TcpListener> {
    let socket = socket(addr, socket2::Type::STREAM, socket2::Protocol::TCP)?;
    socket.set_reuse_address(true)?;
    socket.bind(&addr.into())?;
    socket.listen(1024)?;
    TcpListener::from_std(socket.into())
}

fn annotate(e: io::Error, proto: &str, addr: &SocketAddr) -> io::Error {
    io::Error::new(e.kind(), format!("cannot bind DNS {proto} {addr}: {e}"))
}

/// Starts serving; the returned server is stopped with `shutdown_gracefully`.
pub fn serve(frontend: Frontend, bound: Bound) -> Server<Frontend> {
    let mut server = Server::new(frontend);
    for (udp, tcp) in bound.sockets {
        server.register_socket(udp);
        server.register_listener(tcp, TCP_IDLE_TIMEOUT, TCP_RESPONSE_BUFFER);
    }
    server
}
