//! The DNS front end: one transport-neutral request path (parse, protocol checks, answer,
//! write with truncation) that the UDP threads, the AF_XDP path, the TCP tasks and the harness
//! all call, with zone transfers, EDNS and response metrics.

use std::{net::SocketAddr, sync::Arc, time::Duration};

use arc_swap::ArcSwap;

use super::DnsMetrics;
use super::{
    answer::{Catalog, Question, Reply, Set},
    client::ClientRegions,
    cookie, dnssec,
    rrl::RateLimiter,
    wire::{self, OptOut, Parsed, Section, Writer},
};
use crate::{config::RecordKind, snapshot::Snapshot};

/// The largest message over TCP (RFC 1035 section 4.2.2).
const TCP_MAX_MESSAGE: usize = 65_535;
/// Bytes of records per message of a zone transfer.
const TRANSFER_MESSAGE: usize = 16_384;

/// The transport a request came over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    Udp,
    Tcp,
}

impl Transport {
    fn name(self) -> &'static str {
        match self {
            Transport::Udp => "udp",
            Transport::Tcp => "tcp",
        }
    }
}

/// What the DNS server answers from, replaced whole on reload: the zones with their managed
/// names, the client-region table and the answering options.
pub struct DnsState {
    pub catalog: Catalog,
    pub clients: Arc<ClientRegions>,
    /// Networks allowed to transfer the zones over TCP.
    allow_transfer: Vec<ipnet::IpNet>,
    max_udp_payload: u16,
    minimal: bool,
    /// Response rate limiting over UDP.
    pub rrl: RateLimiter,
    /// Different for every state built (answer caches compare it).
    generation: u64,
    /// A zone is signed online.
    signs: bool,
}

impl DnsState {
    pub fn new(settings: &crate::config::Settings, zones: Vec<super::ZoneFile>) -> Self {
        static GENERATIONS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
        let signs = zones.iter().any(|z| z.signer.is_some());
        Self {
            signs,
            generation: GENERATIONS.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
            catalog: Catalog::new(
                zones.into_iter().map(|z| (z.zone, z.signer)).collect(),
                &settings.records,
            ),
            clients: Arc::new(ClientRegions::new(settings.dns.client_regions.clone())),
            allow_transfer: settings.dns.allow_transfer.clone(),
            max_udp_payload: settings.dns.max_udp_payload,
            minimal: settings.dns.minimal_responses,
            rrl: RateLimiter::new(settings.dns.rrl.clone()),
        }
    }

    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// True when a zone is signed online (`dns.dnssec`).
    pub fn signs(&self) -> bool {
        self.signs
    }

    /// A zone transfer this client may have: over TCP, from `dns.allow_transfer`.
    fn transfer_allowed(&self, transport: Transport, src: SocketAddr) -> bool {
        transport == Transport::Tcp && self.allow_transfer.iter().any(|n| n.contains(&src.ip()))
    }
}

/// Frees a replaced state once nothing else holds it (waiting up to 10 s for requests in
/// progress), and gives the memory back to the system: a reloaded large zone must not leave
/// the process at twice its size.
#[allow(unsafe_code)] // malloc_trim
pub fn release(old: Arc<DnsState>) {
    for _ in 0..1000 {
        if Arc::strong_count(&old) == 1 {
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    drop(old);
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only returns free heap memory to the kernel; it has no
    // preconditions.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// The response of the full path to one packet, and what replaying it counts (None: not to
/// be replayed from a cache).
pub struct FullAnswer {
    pub response: Vec<u8>,
    pub replay: Option<Vec<prometheus::IntCounter>>,
    /// The client returned a valid server cookie (RFC 7873): it is not spoofed.
    pub verified: bool,
}

/// What answering one request did besides sending.
struct Outcome {
    replay: Option<Vec<prometheus::IntCounter>>,
    verified: bool,
}

#[derive(Clone)]
pub struct Frontend {
    state: Arc<ArcSwap<DnsState>>,
    snapshot: Arc<ArcSwap<Snapshot>>,
    metrics: DnsMetrics,
    /// The key of our server cookies (RFC 9018), random for each process.
    cookie_secret: [u8; 16],
}

/// Header flags of a response to `q`: QR, the opcode, RD and CD copied.
fn response_flags(opcode: u8, rd: bool, cd: bool) -> u16 {
    0x8000 | (u16::from(opcode & 0x0f) << 11) | (u16::from(rd) << 8) | (u16::from(cd) << 4)
}

impl Frontend {
    pub fn new(
        state: Arc<ArcSwap<DnsState>>,
        snapshot: Arc<ArcSwap<Snapshot>>,
        metrics: DnsMetrics,
    ) -> Self {
        Self {
            state,
            snapshot,
            metrics,
            cookie_secret: rand::random(),
        }
    }

    /// Counts TCP connections refused at accept (the listener or the source was full).
    pub fn refused_counter(&self) -> prometheus::IntCounter {
        self.metrics.refused_counter()
    }

    /// Where the answer state lives (the answer cache compares it to what it was built from).
    pub fn sources(&self) -> (&ArcSwap<DnsState>, &ArcSwap<Snapshot>) {
        (&self.state, &self.snapshot)
    }

    pub fn metrics(&self) -> &DnsMetrics {
        &self.metrics
    }

    /// The full path for one UDP packet from `src`; None: no reply (too short, a response).
    pub fn respond_udp(&self, packet: &[u8], src: SocketAddr) -> Option<FullAnswer> {
        let mut out = Vec::new();
        let outcome = self.respond(packet, src, Transport::Udp, &mut |m| out.push(m))?;
        out.pop().map(|response| FullAnswer {
            response,
            replay: outcome.replay,
            verified: outcome.verified,
        })
    }

    /// The full path for one TCP message from `src`: every message to send back (several
    /// for a zone transfer).
    pub fn respond_tcp(&self, packet: &[u8], src: SocketAddr) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        self.respond(packet, src, Transport::Tcp, &mut |m| out.push(m));
        out
    }

    /// The COOKIE of a reply: the client's cookie and a fresh server cookie (RFC 9018).
    fn cookies(&self, client: &[u8; 8], ip: std::net::IpAddr, now: u32) -> [u8; 24] {
        let mut both = [0u8; 24];
        both[..8].copy_from_slice(client);
        both[8..].copy_from_slice(&cookie::server_cookie(&self.cookie_secret, client, ip, now));
        both
    }

    /// Answers one request, handing each response message to `send`; None when nothing was
    /// sent.
    fn respond(
        &self,
        packet: &[u8],
        src: SocketAddr,
        transport: Transport,
        send: &mut dyn FnMut(Vec<u8>),
    ) -> Option<Outcome> {
        let q = match wire::parse(packet) {
            Parsed::Drop => return None,
            Parsed::FormErr {
                id,
                flags,
                question,
                edns,
            } => {
                let state = self.state.load();
                // RFC 7873 section 5.4: a COOKIE alone, with no question, asks for a server
                // cookie: NOERROR with the client's and a fresh server cookie.
                let qdcount = u16::from_be_bytes([packet[4], packet[5]]);
                let cookie = edns.and_then(|e| e.cookie).filter(|_| qdcount == 0);
                let opt = edns.map(|e| OptOut {
                    payload: state.max_udp_payload,
                    dnssec_ok: e.dnssec_ok,
                    compact_ok: false,
                    client_subnet: None,
                    cookie: cookie.map(|c| self.cookies(&c.client, src.ip(), unix_seconds())),
                    extended_error: None,
                });
                let rcode = if cookie.is_some() {
                    wire::RCODE_NOERROR
                } else {
                    wire::RCODE_FORMERR
                };
                let opcode = ((flags >> 11) & 0x0f) as u8;
                let w = Writer::new(Vec::with_capacity(64), id, question, TCP_MAX_MESSAGE);
                // RD and CD are copied (RFC 1035 section 4.1.1), except for a request with
                // several questions, whose header we do not trust (as NSD).
                let trusted = u16::from_be_bytes([packet[4], packet[5]]) <= 1;
                send(w.finish(
                    response_flags(
                        opcode,
                        trusted && flags & 0x0100 != 0,
                        trusted && flags & 0x0010 != 0,
                    ),
                    rcode,
                    opt.as_ref(),
                ));
                self.metrics
                    .response(transport.name(), "NONE", rcode_name(rcode));
                return Some(Outcome {
                    replay: None,
                    verified: false,
                });
            }
            Parsed::Query(q) => q,
        };
        let state = self.state.load();
        let snapshot = self.snapshot.load();
        let located = state
            .clients
            .locate(src.ip(), q.edns.and_then(|e| e.client_subnet));
        // DNS Cookies (RFC 7873): a valid server cookie proves the address; every reply to a
        // cookie-bearing query carries a fresh server cookie (RFC 9018).
        let cookie = q.edns.and_then(|e| e.cookie);
        // Unix seconds modulo 2^32 (cookie timestamps), read only for cookie-bearing queries.
        let now = if cookie.is_some() { unix_seconds() } else { 0 };
        let verified = cookie.is_some_and(|c| {
            c.server().is_some_and(|server| {
                cookie::verify(&self.cookie_secret, &c.client, server, src.ip(), now)
            })
        });
        let mut opt = q.edns.map(|e| OptOut {
            payload: state.max_udp_payload,
            dnssec_ok: e.dnssec_ok,
            compact_ok: false,
            client_subnet: None,
            cookie: cookie.map(|c| self.cookies(&c.client, src.ip(), now)),
            extended_error: None,
        });
        let limit = match (transport, q.edns) {
            (Transport::Tcp, _) => TCP_MAX_MESSAGE,
            (Transport::Udp, None) => 512,
            (Transport::Udp, Some(e)) => usize::from(e.payload.clamp(512, state.max_udp_payload)),
        };
        let flags = response_flags(q.opcode, q.rd, q.cd);
        let plain = q.opcode == wire::OPCODE_QUERY
            && q.edns.is_none_or(|e| e.version == 0)
            && q.qclass == wire::CLASS_IN;
        let rcode_only = if q.edns.is_some_and(|e| e.version != 0) {
            Some(wire::RCODE_BADVERS)
        } else if q.opcode != wire::OPCODE_QUERY {
            Some(wire::RCODE_NOTIMP)
        } else if q.qclass != wire::CLASS_IN {
            // We hold class IN data only: any other class is refused, as Knot and NSD do.
            Some(wire::RCODE_REFUSED)
        } else {
            None
        };
        let qtype = qtype_name(q.qtype);
        if let Some(rcode) = rcode_only {
            let w = Writer::new(Vec::with_capacity(64), q.id, Some(q.question()), limit);
            send(w.finish(flags, rcode, opt.as_ref()));
            self.metrics
                .response(transport.name(), qtype, rcode_name(rcode));
            return Some(Outcome {
                replay: None,
                verified,
            });
        }
        if matches!(q.qtype, wire::TYPE_AXFR | wire::TYPE_IXFR) {
            let rcode = self.transfer(&state, &q, transport, src, flags, opt.as_ref(), send);
            self.metrics
                .response(transport.name(), qtype, rcode_name(rcode));
            return Some(Outcome {
                replay: None,
                verified,
            });
        }
        let signed = q
            .edns
            .filter(|e| e.dnssec_ok)
            .and_then(|e| Some((e, state.catalog.signed_zone_for(&q.lower, q.qtype)?)));
        let question = Question {
            name: &q.lower,
            qtype: q.qtype,
            region: located.region.as_ref(),
            roll: rand::random(),
            minimal: state.minimal,
            dnssec: signed.is_some(),
        };
        let mut reply = state.catalog.answer(&snapshot, &question);
        if reply.rcode == wire::RCODE_REFUSED
            && let Some(opt) = opt.as_mut()
        {
            // A name outside our zones: Not Authoritative (RFC 8914 section 4.21), as Knot and
            // NSD say.
            opt.extended_error = Some(EDE_NOT_AUTHORITATIVE);
        }
        if let Some((edns, (zone, signer))) = signed {
            let now = crate::clock::unix_ms() / 1000;
            let work = dnssec::secure::secure(
                zone,
                signer,
                &mut reply,
                (&q.lower, q.qtype),
                edns.compact_ok,
                now,
            );
            self.metrics.signed(&signer.zone, &work);
            if let Some(opt) = opt.as_mut() {
                opt.compact_ok = edns.compact_ok;
            }
        }
        if let (Some(opt), Some(mut subnet)) = (opt.as_mut(), located.subnet) {
            // RFC 7871 section 7.2.1: the scope is the prefix the answer actually depends on.
            subnet.scope_prefix = if reply.region_dependent {
                located.scope
            } else {
                0
            };
            opt.client_subnet = Some(subnet);
        }
        let room = limit.saturating_sub(opt.as_ref().map_or(0, OptOut::len));
        let (response, rcode) = write_reply(&q, &reply, flags, room, opt.as_ref());
        send(response);
        let counter = self
            .metrics
            .response_counter(transport.name(), qtype, rcode_name(rcode));
        counter.inc();
        let managed = self.managed_counter(&state, &snapshot, &q.lower, q.qtype);
        if let Some(c) = &managed {
            c.inc();
        }
        let replayable = plain && !reply.varies && rcode != wire::RCODE_SERVFAIL;
        Some(Outcome {
            replay: replayable.then(|| std::iter::once(counter).chain(managed).collect()),
            verified,
        })
    }

    /// The counter of answers for the managed record a query asks for, if it asks for one.
    fn managed_counter(
        &self,
        state: &DnsState,
        snapshot: &Snapshot,
        name: &[u8],
        qtype: u16,
    ) -> Option<prometheus::IntCounter> {
        let (kind, qtype) = match qtype {
            wire::TYPE_A => (RecordKind::A, "A"),
            wire::TYPE_AAAA => (RecordKind::Aaaa, "AAAA"),
            _ => return None,
        };
        let key = state.catalog.managed_key(name, kind)?;
        let answer = snapshot.records.get(key)?;
        Some(
            self.metrics
                .managed_answer_counter(&key.0, qtype, answer.reason.code()),
        )
    }

    /// A zone transfer (AXFR; IXFR is answered with the whole zone, RFC 1995 section 4):
    /// SOA, every other RRset, SOA again, in as many messages as needed. The zone files' data
    /// only: managed answers change with health and are not transferred.
    #[allow(clippy::too_many_arguments)]
    fn transfer(
        &self,
        state: &DnsState,
        q: &wire::Query<'_>,
        transport: Transport,
        src: SocketAddr,
        flags: u16,
        opt: Option<&OptOut>,
        send: &mut dyn FnMut(Vec<u8>),
    ) -> u16 {
        let refuse = |rcode: u16, send: &mut dyn FnMut(Vec<u8>)| {
            let w = Writer::new(Vec::new(), q.id, Some(q.question()), TCP_MAX_MESSAGE);
            send(w.finish(flags, rcode, opt));
            rcode
        };
        if q.qtype == wire::TYPE_AXFR && transport == Transport::Udp {
            // AXFR is a TCP exchange (RFC 5936 section 4.2); Knot and NSD say NOTIMP.
            return refuse(wire::RCODE_NOTIMP, send);
        }
        // A name that is no zone's apex is not a zone we are authoritative for (NOTAUTH, as
        // Knot and NSD answer), whoever asks; a zone's transfer is then for allowed clients.
        let Some(zone) = state
            .catalog
            .zone_for(&q.lower)
            .filter(|z| z.origin() == q.lower.as_slice())
        else {
            return refuse(wire::RCODE_NOTAUTH, send);
        };
        if !state.transfer_allowed(transport, src) {
            return refuse(wire::RCODE_REFUSED, send);
        }
        let Some(soa) = zone.apex().get(wire::TYPE_SOA) else {
            return refuse(wire::RCODE_SERVFAIL, send);
        };
        let flags = flags | 0x0400;
        let new_message = || {
            Writer::new(
                Vec::with_capacity(4096),
                q.id,
                Some(q.question()),
                TRANSFER_MESSAGE,
            )
        };
        let mut w = new_message();
        let records = zone
            .rrsets()
            .filter(|(_, s)| s.rtype != wire::TYPE_SOA)
            .flat_map(|(owner, s)| s.rdatas().map(move |r| (owner, s.rtype, s.ttl, r)));
        let soa_rdata = soa.first().unwrap_or_default();
        let all = std::iter::once((zone.origin(), wire::TYPE_SOA, soa.ttl, soa_rdata))
            .chain(records)
            .chain(std::iter::once((
                zone.origin(),
                wire::TYPE_SOA,
                soa.ttl,
                soa_rdata,
            )));
        for (owner, rtype, ttl, rdata) in all {
            if !w.record(Section::Answer, Some(owner), rtype, ttl, rdata) {
                send(std::mem::replace(&mut w, new_message()).finish(flags, 0, opt));
                w.record(Section::Answer, Some(owner), rtype, ttl, rdata);
            }
        }
        send(w.finish(flags, 0, opt));
        wire::RCODE_NOERROR
    }
}

/// Writes one RRset whole; false (nothing written) if it does not fit.
fn write_set(w: &mut Writer, section: Section, set: &Set<'_>) -> bool {
    let mark = w.mark();
    let owner = set.owner.as_deref();
    let fits = set
        .data
        .each(|rdata| w.record(section, owner, set.rtype, set.ttl, rdata));
    if !fits {
        w.rollback(mark);
    }
    fits
}

/// Writes the reply within `room` bytes (the OPT's room kept apart). A reply whose answer,
/// authority or required glue does not fit is truncated to the header, question and OPT
/// (RFC 2181 section 9); optional additional records are left out whole RRsets at a time.
/// Returns the message and its rcode.
fn write_reply(
    q: &wire::Query<'_>,
    reply: &Reply<'_>,
    flags: u16,
    room: usize,
    opt: Option<&OptOut>,
) -> (Vec<u8>, u16) {
    let mut w = Writer::new(Vec::with_capacity(512), q.id, Some(q.question()), room);
    let mut flags = flags;
    if reply.aa {
        flags |= 0x0400;
    }
    let required = reply
        .answer
        .iter()
        .map(|s| (Section::Answer, s))
        .chain(reply.authority.iter().map(|s| (Section::Authority, s)))
        .chain(
            reply.additional[..reply.required_additional]
                .iter()
                .map(|s| (Section::Additional, s)),
        );
    let mut truncated = false;
    for (section, set) in required {
        if !write_set(&mut w, section, set) {
            truncated = true;
            break;
        }
    }
    if truncated {
        w.clear_records();
        flags |= 0x0200;
    } else {
        for set in &reply.additional[reply.required_additional..] {
            if !write_set(&mut w, Section::Additional, set) {
                break;
            }
        }
    }
    (w.finish(flags, reply.rcode, opt), reply.rcode)
}

/// The query type, from a fixed set (others are "OTHER"), for metric labels.
fn qtype_name(rtype: u16) -> &'static str {
    match rtype {
        wire::TYPE_A => "A",
        wire::TYPE_AAAA => "AAAA",
        wire::TYPE_CNAME => "CNAME",
        wire::TYPE_MX => "MX",
        wire::TYPE_TXT => "TXT",
        wire::TYPE_NS => "NS",
        wire::TYPE_SOA => "SOA",
        wire::TYPE_SRV => "SRV",
        257 => "CAA",
        wire::TYPE_PTR => "PTR",
        wire::TYPE_ANY => "ANY",
        wire::TYPE_AXFR => "AXFR",
        _ => "OTHER",
    }
}

/// The conventional mnemonic of a response code (RFC 6895 registry), for metric labels.
pub fn rcode_name(code: u16) -> &'static str {
    match code {
        0 => "NOERROR",
        1 => "FORMERR",
        2 => "SERVFAIL",
        3 => "NXDOMAIN",
        4 => "NOTIMP",
        5 => "REFUSED",
        6 => "YXDOMAIN",
        9 => "NOTAUTH",
        16 => "BADVERS",
        _ => "OTHER",
    }
}

/// Unix seconds modulo 2^32 (cookie timestamps).
fn unix_seconds() -> u32 {
    (crate::clock::unix_ms() / 1000) as u32
}

/// RFC 8914's INFO-CODE for a question outside the server's zones.
const EDE_NOT_AUTHORITATIVE: u16 = 20;
