//! The DNS front end: UDP and TCP listeners, the not-ready gate, and response metrics,
//! around hickory's `Catalog` of our zones.

use std::{io, net::SocketAddr, sync::Arc, time::Duration};

use arc_swap::ArcSwap;
use hickory_proto::op::{Header, HeaderCounts, MessageType, Metadata, OpCode, ResponseCode};
use hickory_proto::rr::{
    LowerName, Record, RecordType,
    rdata::opt::{ClientSubnet, EdnsOption},
};
use hickory_proto::serialize::binary::BinDecoder;
use hickory_server::{
    Server,
    net::{NetError, runtime::Time},
    server::{Request, RequestHandler, ResponseHandler, ResponseInfo},
    zone_handler::{Catalog, MessageResponse, MessageResponseBuilder, Queries},
};
use tokio::net::TcpListener;

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
    /// Networks allowed to transfer the zones over TCP.
    allow_transfer: Vec<ipnet::IpNet>,
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

/// What the front end needs to know of a query, worked out once per request.
struct Query {
    /// Lower-case, fully qualified; empty when the request has no single question.
    name: String,
    lower: Option<LowerName>,
    rtype: RecordType,
    /// A plain EDNS-0 query; anything else goes through the catalog's protocol checks.
    plain: bool,
}

impl Query {
    fn of(request: &Request) -> Self {
        let info = request.request_info().ok();
        Self {
            name: info
                .as_ref()
                .map(|i| i.query.name().to_string())
                .unwrap_or_default(),
            lower: info.as_ref().map(|i| i.query.name().clone()),
            rtype: info
                .as_ref()
                .map_or(RecordType::NULL, |i| i.query.query_type()),
            plain: info.is_some()
                && request.metadata.message_type == MessageType::Query
                && request.metadata.op_code == OpCode::Query
                && request.edns.as_ref().is_none_or(|e| e.version() == 0),
        }
    }
}

impl DnsState {
    /// A zone transfer (AXFR, IXFR) this client may not have: only over TCP, only from
    /// `dns.allow_transfer`.
    fn transfer_refused(&self, request: &Request, query: &Query) -> bool {
        matches!(query.rtype, RecordType::AXFR | RecordType::IXFR)
            && (request.protocol() != hickory_server::net::xfer::Protocol::Tcp
                || !self
                    .allow_transfer
                    .iter()
                    .any(|net| net.contains(&request.src().ip())))
    }

    /// The delegation covering a query, if the name is at or below a zone cut (DS queries
    /// are answered by the parent, i.e. us).
    fn referral(&self, query: &Query) -> Option<&Delegation> {
        let name = query.lower.as_ref()?;
        if !query.plain || query.rtype == RecordType::DS {
            return None;
        }
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
            allow_transfer: settings.dns.allow_transfer.clone(),
        })
    }
}

#[derive(Clone)]
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

    /// Where the answer state lives (the answer cache compares it to what it was built from).
    pub fn sources(&self) -> (&ArcSwap<DnsState>, &ArcSwap<Snapshot>) {
        (&self.state, &self.snapshot)
    }

    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// What the full path counted for the response to `request`, when that response may be
    /// replayed from the answer cache: not for answers that vary from query to query
    /// (weighted) or by client (latency), nor for SERVFAIL.
    pub fn replay_counters(
        &self,
        request: &Request,
        rcode: ResponseCode,
    ) -> Option<Vec<prometheus::IntCounter>> {
        let query = Query::of(request);
        let snapshot = self.snapshot.load();
        let varies = super::managed_kinds(query.rtype).iter().any(|k| {
            snapshot
                .records
                .get(&(query.name.clone(), *k))
                .is_some_and(|r| matches!(r.answer, Answer::Weighted(_) | Answer::ByRegion { .. }))
        });
        if !query.plain || varies || rcode == ResponseCode::ServFail {
            return None;
        }
        let mut counters = vec![self.metrics.dns_response_counter(
            protocol_name(request.protocol()),
            qtype_name(query.rtype),
            rcode_name(rcode),
        )];
        counters.extend(self.managed_counter(&query, &snapshot));
        Some(counters)
    }

    /// The counter of answers for the managed record a query asks for, if it asks for one.
    fn managed_counter(
        &self,
        query: &Query,
        snapshot: &Snapshot,
    ) -> Option<prometheus::IntCounter> {
        let (kind, qtype) = match query.rtype {
            RecordType::A => (RecordKind::A, "A"),
            RecordType::AAAA => (RecordKind::Aaaa, "AAAA"),
            _ => return None,
        };
        let answer = snapshot.records.get(&(query.name.clone(), kind))?;
        Some(
            self.metrics
                .managed_answer_counter(&query.name, qtype, answer.reason.code()),
        )
    }

    /// The ECS option to echo (RFC 7871): the query's, with the scope actually used: the
    /// matched client network for region-dependent answers, 0 for answers that are the same
    /// for every client.
    fn ecs_echo(
        request: &Request,
        query: &Query,
        snapshot: &Snapshot,
        clients: &ClientRegions,
    ) -> Option<ClientSubnet> {
        let located = clients.locate(request);
        let mut subnet = located.subnet?;
        let region_dependent = [RecordKind::A, RecordKind::Aaaa].iter().any(|k| {
            snapshot
                .records
                .get(&(query.name.clone(), *k))
                .is_some_and(|r| matches!(r.answer, Answer::ByRegion { .. }))
        });
        subnet.set_scope_prefix(if region_dependent { located.scope } else { 0 });
        Some(subnet)
    }

    /// Counts an answer for a managed record by the reason behind it.
    fn count_managed(&self, query: &Query, snapshot: &Snapshot) {
        if let Some(counter) = self.managed_counter(query, snapshot) {
            counter.inc();
        }
    }

    /// True when the query asks for a managed record whose answer is not decided yet.
    fn undecided(query: &Query, snapshot: &Snapshot) -> bool {
        query.plain
            && snapshot.names.contains(&query.name)
            && super::managed_kinds(query.rtype).iter().any(|k| {
                snapshot
                    .records
                    .get(&(query.name.clone(), *k))
                    .is_some_and(|r| r.answer == Answer::NotReady)
            })
    }
}

/// A question name with a compression pointer or an extended label type: in a question it can
/// only point back into the header, and hickory would echo it verbatim, making the response
/// unreadable.
fn malformed_question(request: &Request) -> bool {
    let bytes = request.queries.as_bytes();
    let mut at = 0;
    for _ in 0..request.queries.len() {
        loop {
            let Some(&len) = bytes.get(at) else {
                return true;
            };
            if len == 0 {
                at += 1;
                break;
            }
            if len & 0xc0 != 0 {
                return true;
            }
            at += 1 + usize::from(len);
        }
        at += 4;
    }
    false
}

/// FORMERR without the question (echoing a malformed one would make the reply unreadable).
async fn send_formerr<R: ResponseHandler>(
    request: &Request,
    mut response_handle: R,
    metadata: Metadata,
) -> ResponseInfo {
    let header_only = ResponseInfo::from(Header {
        metadata,
        counts: HeaderCounts::default(),
    });
    let Ok(no_question) = Queries::read(&mut BinDecoder::new(&[]), 0) else {
        return header_only;
    };
    let response = MessageResponseBuilder::new(&no_question, None)
        .error_msg(&request.metadata, ResponseCode::FormErr);
    response_handle
        .send_response(response)
        .await
        .unwrap_or(header_only)
}

/// Sends a response the front end builds itself (referral, SERVFAIL): a fresh EDNS if the
/// request had one, and a header for the metrics even if the send fails.
async fn send_own<'a, R: ResponseHandler>(
    request: &Request,
    mut response_handle: R,
    metadata: Metadata,
    authorities: impl Iterator<Item = &'a Record> + Send + 'a,
    additionals: impl Iterator<Item = &'a Record> + Send + 'a,
) -> ResponseInfo {
    let edns = request.edns.as_ref().map(|req| {
        let mut edns = hickory_proto::op::Edns::new();
        edns.set_max_payload(req.max_payload().max(512));
        edns
    });
    let response = MessageResponseBuilder::new(&request.queries, edns.as_ref()).build(
        metadata,
        std::iter::empty(),
        authorities,
        std::iter::empty(),
        additionals,
    );
    match response_handle.send_response(response).await {
        Ok(info) => info,
        Err(error) => {
            tracing::debug!(%error, rcode = ?metadata.response_code, "cannot send a response");
            ResponseInfo::from(Header {
                metadata,
                counts: HeaderCounts::default(),
            })
        }
    }
}

#[async_trait::async_trait]
impl RequestHandler for Frontend {
    async fn handle_request<R: ResponseHandler, T: Time>(
        &self,
        request: &Request,
        response_handle: R,
    ) -> ResponseInfo {
        let query = Query::of(request);
        let state = self.state.load_full();
        let snapshot = self.snapshot.load();
        let mut metadata = Metadata::response_from_request(&request.metadata);
        // A transfer this client may not have; a managed record not decided yet.
        let refusal = if state.transfer_refused(request, &query) {
            Some(ResponseCode::Refused)
        } else if Self::undecided(&query, &snapshot) {
            Some(ResponseCode::ServFail)
        } else {
            None
        };
        let info = if malformed_question(request) {
            metadata.response_code = ResponseCode::FormErr;
            send_formerr(request, response_handle, metadata).await
        } else if let Some(delegation) = state.referral(&query) {
            // A referral: the delegated zone's NS in authority, glue in additional, no AA.
            metadata.authoritative = false;
            metadata.response_code = ResponseCode::NoError;
            send_own(
                request,
                response_handle,
                metadata,
                delegation.ns.iter(),
                delegation.glue.iter(),
            )
            .await
        } else if let Some(rcode) = refusal {
            metadata.response_code = rcode;
            send_own(
                request,
                response_handle,
                metadata,
                std::iter::empty(),
                std::iter::empty(),
            )
            .await
        } else if let Some(subnet) = Self::ecs_echo(request, &query, &snapshot, &state.clients) {
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
            protocol_name(request.protocol()),
            qtype_name(query.rtype),
            rcode_name(info.response_code),
        );
        self.count_managed(&query, &snapshot);
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

/// The transport, for metric labels.
fn protocol_name(protocol: hickory_server::net::xfer::Protocol) -> &'static str {
    use hickory_server::net::xfer::Protocol as P;
    match protocol {
        P::Udp => "udp",
        P::Tcp => "tcp",
        _ => "other",
    }
}

/// The query type, from a fixed set (others are "OTHER"), for metric labels.
fn qtype_name(rtype: RecordType) -> &'static str {
    use RecordType as T;
    match rtype {
        T::A => "A",
        T::AAAA => "AAAA",
        T::CNAME => "CNAME",
        T::MX => "MX",
        T::TXT => "TXT",
        T::NS => "NS",
        T::SOA => "SOA",
        T::SRV => "SRV",
        T::CAA => "CAA",
        T::PTR => "PTR",
        T::ANY => "ANY",
        T::AXFR => "AXFR",
        T::NULL => "NONE",
        _ => "OTHER",
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

/// Bound DNS sockets: for each listen address, UDP sockets sharing the port (SO_REUSEPORT,
/// one per serving thread) and a TCP listener on the same port.
pub struct Bound {
    pub sockets: Vec<(Vec<std::net::UdpSocket>, TcpListener)>,
}

impl Bound {
    pub fn addresses(&self) -> Vec<SocketAddr> {
        self.sockets
            .iter()
            .filter_map(|(udp, _)| udp.first()?.local_addr().ok())
            .collect()
    }
}

/// How many UDP sockets (and serving threads) each listen address gets: one per CPU this
/// process may run on, at most 8.
pub fn udp_threads() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get().min(8))
}

/// Binds every listen address; port 0 picks a free port shared by UDP and TCP.
/// IPv6 sockets are IPv6-only, so that `0.0.0.0:53` and `[::]:53` can be listed together.
pub async fn bind(listen: &[SocketAddr], udp_per_address: usize) -> io::Result<Bound> {
    let mut sockets = Vec::new();
    for addr in listen {
        let mut attempts = 0;
        loop {
            let first = udp_socket(*addr).map_err(|e| annotate(e, "UDP", addr))?;
            let port = first.local_addr()?.port();
            let at = SocketAddr::new(addr.ip(), port);
            let mut udp = vec![first];
            for _ in 1..udp_per_address.max(1) {
                udp.push(udp_socket(at).map_err(|e| annotate(e, "UDP", addr))?);
            }
            match tcp_listener(at) {
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
    Ok(socket)
}

/// A blocking UDP socket with SO_REUSEPORT, so that several can share the address.
fn udp_socket(addr: SocketAddr) -> io::Result<std::net::UdpSocket> {
    let socket = socket(addr, socket2::Type::DGRAM, socket2::Protocol::UDP)?;
    socket.set_reuse_port(true)?;
    socket.bind(&addr.into())?;
    Ok(socket.into())
}

fn tcp_listener(addr: SocketAddr) -> io::Result<TcpListener> {
    let socket = socket(addr, socket2::Type::STREAM, socket2::Protocol::TCP)?;
    socket.set_nonblocking(true)?;
    socket.set_reuse_address(true)?;
    socket.bind(&addr.into())?;
    socket.listen(1024)?;
    TcpListener::from_std(socket.into())
}

fn annotate(e: io::Error, proto: &str, addr: &SocketAddr) -> io::Error {
    io::Error::new(e.kind(), format!("cannot bind DNS {proto} {addr}: {e}"))
}

/// The running DNS server: hickory's for TCP, our threads for UDP (sockets, and AF_XDP on
/// the interfaces `dns.xdp` lists).
pub struct DnsServer {
    tcp: Server<Frontend>,
    udp: super::udp::UdpServer,
    #[cfg(target_os = "linux")]
    xdp: Option<super::xdp::XdpServer>,
}

impl DnsServer {
    /// Stops both, letting requests in progress finish.
    pub async fn shutdown(mut self) {
        if let Err(error) = self.tcp.shutdown_gracefully().await {
            tracing::warn!(%error, "DNS TCP server stopped with an error");
        }
        #[cfg(target_os = "linux")]
        let xdp = self.xdp.take();
        let udp = self.udp;
        let _ = tokio::task::spawn_blocking(move || {
            #[cfg(target_os = "linux")]
            drop(xdp);
            udp.stop();
        })
        .await;
    }
}

/// Starts serving (from within the runtime that runs the full request path); UDP to the
/// bound addresses arriving on the interfaces in `xdp` is served over AF_XDP (Linux).
pub fn serve(frontend: Frontend, bound: Bound, xdp: &[String]) -> io::Result<DnsServer> {
    let mut tcp = Server::new(frontend.clone());
    let mut udp_sockets = Vec::new();
    let mut first_sockets = Vec::new();
    for (udp, listener) in bound.sockets {
        if let Some(first) = udp.first() {
            first_sockets.push(first.try_clone()?);
        }
        udp_sockets.extend(udp);
        tcp.register_listener(listener, TCP_IDLE_TIMEOUT, TCP_RESPONSE_BUFFER);
    }
    let answerer = super::udp::UdpAnswerer::new(frontend);
    let runtime = tokio::runtime::Handle::current();
    let udp = super::udp::UdpServer::start(udp_sockets, answerer.clone(), runtime.clone())?;
    #[cfg(target_os = "linux")]
    let xdp = match xdp {
        [] => None,
        interfaces => Some(super::xdp::XdpServer::start(
            interfaces,
            &first_sockets,
            &answerer,
            &runtime,
        )?),
    };
    #[cfg(not(target_os = "linux"))]
    if !xdp.is_empty() {
        return Err(io::Error::new(
            io::ErrorKind::Unsupported,
            "dns.xdp: AF_XDP is only available on Linux",
        ));
    }
    Ok(DnsServer {
        tcp,
        udp,
        #[cfg(target_os = "linux")]
        xdp,
    })
}
