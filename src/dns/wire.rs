//! DNS wire format: names, a query as received (RFC 1035 section 4, EDNS per RFC 6891, Client
//! Subnet per RFC 7871), and responses written with name compression and a size limit.
//!
//! Pure and allocation-light: the request path parses each packet once into a [`Query`] and
//! writes its response once with a [`Writer`].

use std::net::IpAddr;

pub const TYPE_A: u16 = 1;
pub const TYPE_NS: u16 = 2;
pub const TYPE_MD: u16 = 3;
pub const TYPE_MF: u16 = 4;
pub const TYPE_CNAME: u16 = 5;
pub const TYPE_SOA: u16 = 6;
pub const TYPE_MB: u16 = 7;
pub const TYPE_MG: u16 = 8;
pub const TYPE_MR: u16 = 9;
pub const TYPE_PTR: u16 = 12;
pub const TYPE_MINFO: u16 = 14;
pub const TYPE_MX: u16 = 15;
pub const TYPE_TXT: u16 = 16;
pub const TYPE_AAAA: u16 = 28;
pub const TYPE_SRV: u16 = 33;
pub const TYPE_DNAME: u16 = 39;
pub const TYPE_OPT: u16 = 41;
pub const TYPE_DS: u16 = 43;
pub const TYPE_RRSIG: u16 = 46;
pub const TYPE_NSEC: u16 = 47;
pub const TYPE_IXFR: u16 = 251;
pub const TYPE_AXFR: u16 = 252;
pub const TYPE_ANY: u16 = 255;

pub const CLASS_IN: u16 = 1;

pub const OPCODE_QUERY: u8 = 0;

pub const RCODE_NOERROR: u16 = 0;
pub const RCODE_FORMERR: u16 = 1;
pub const RCODE_SERVFAIL: u16 = 2;
pub const RCODE_NXDOMAIN: u16 = 3;
pub const RCODE_NOTIMP: u16 = 4;
pub const RCODE_REFUSED: u16 = 5;
pub const RCODE_YXDOMAIN: u16 = 6;
pub const RCODE_NOTAUTH: u16 = 9;
/// Extended (12 bits, the upper 8 in the OPT record): RFC 6891 section 6.1.3.
pub const RCODE_BADVERS: u16 = 16;

const OPTION_ECS: u16 = 8;
const OPTION_COOKIE: u16 = 10;
/// Extended DNS Errors (RFC 8914).
const OPTION_EDE: u16 = 15;

/// The longest name in wire form (RFC 1035 section 3.1).
pub const MAX_NAME: usize = 255;

// ---------------------------------------------------------------------------------------------
// Names: uncompressed wire form, a sequence of length-prefixed labels ending with the root.

/// The offsets of every label of `name`, the root last.
pub fn label_starts(name: &[u8]) -> impl Iterator<Item = usize> + '_ {
    let mut at = Some(0usize);
    std::iter::from_fn(move || {
        let here = at?;
        let len = usize::from(*name.get(here)?);
        at = (len != 0).then_some(here + 1 + len);
        Some(here)
    })
}

/// The number of labels, the root not counted.
pub fn label_count(name: &[u8]) -> usize {
    label_starts(name).count().saturating_sub(1)
}

/// The name without its first label; None for the root.
pub fn parent(name: &[u8]) -> Option<&[u8]> {
    let len = usize::from(*name.first()?);
    (len != 0).then(|| &name[1 + len..])
}

/// `name` in lower case (ASCII letters only, as DNS compares names).
pub fn lower(name: &[u8]) -> Vec<u8> {
    let mut out = name.to_vec();
    lower_in_place(&mut out);
    out
}

/// Lowers the letters of a wire name in place (length bytes are below 64, never letters).
pub fn lower_in_place(name: &mut [u8]) {
    name.make_ascii_lowercase();
}

/// True if `name` is `zone` or below it (both lower case, uncompressed).
pub fn is_at_or_below(name: &[u8], zone: &[u8]) -> bool {
    name.len() >= zone.len()
        && name.ends_with(zone)
        && label_starts(name).any(|at| at == name.len() - zone.len())
}

/// Presentation form of a wire name ("www.example.com.", "." for the root), with RFC 1035
/// escapes for dots, backslashes and bytes that are not printable.
pub fn to_text(name: &[u8]) -> String {
    let mut out = String::new();
    for at in label_starts(name) {
        let len = usize::from(name[at]);
        if len == 0 {
            break;
        }
        for &b in &name[at + 1..at + 1 + len] {
            match b {
                b'.' | b'\\' | b'"' | b'(' | b')' | b';' | b'@' | b'$' => {
                    out.push('\\');
                    out.push(char::from(b));
                }
                0x21..=0x7e => out.push(char::from(b)),
                _ => out.push_str(&format!("\\{b:03}")),
            }
        }
        out.push('.');
    }
    if out.is_empty() {
        out.push('.');
    }
    out
}

/// The wire form of a dotted name without escapes ("www.example.com", trailing dot optional);
/// None if a label is empty or too long, or the name too long.
pub fn from_dotted(text: &str) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(text.len() + 2);
    let trimmed = text.strip_suffix('.').unwrap_or(text);
    if !trimmed.is_empty() {
        for label in trimmed.split('.') {
            if label.is_empty() || label.len() > 63 {
                return None;
            }
            out.push(label.len() as u8);
            out.extend_from_slice(label.as_bytes());
        }
    }
    out.push(0);
    (out.len() <= MAX_NAME).then_some(out)
}

/// Reads an uncompressed name at `at` (no pointers: a question never needs one); returns the
/// offset after it. None if malformed or longer than 255 bytes.
fn read_plain_name(packet: &[u8], mut at: usize) -> Option<usize> {
    let start = at;
    loop {
        let len = usize::from(*packet.get(at)?);
        if len & 0xc0 != 0 {
            return None;
        }
        at += 1 + len;
        if at - start > MAX_NAME {
            return None;
        }
        if len == 0 {
            return Some(at);
        }
    }
}

/// Skips a possibly compressed name at `at` (in a record of the additional section); returns
/// the offset after it in the packet and whether it is the root.
fn skip_name(packet: &[u8], mut at: usize) -> Option<(usize, bool)> {
    let mut root = true;
    loop {
        let len = *packet.get(at)?;
        match len & 0xc0 {
            0xc0 => {
                packet.get(at + 1)?;
                return Some((at + 2, false));
            }
            0 if len == 0 => return Some((at + 1, root)),
            0 => {
                root = false;
                at += 1 + usize::from(len);
            }
            _ => return None,
        }
    }
}

fn u16_at(p: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_be_bytes([*p.get(at)?, *p.get(at + 1)?]))
}

fn u32_at(p: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_be_bytes(p.get(at..at + 4)?.try_into().ok()?))
}

// ---------------------------------------------------------------------------------------------
// Queries.

/// EDNS Client Subnet (RFC 7871 section 6).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientSubnet {
    pub addr: IpAddr,
    pub source_prefix: u8,
    pub scope_prefix: u8,
}

impl ClientSubnet {
    /// The option's data as it travels (family, prefixes, address cut to the source prefix).
    fn emit(&self, out: &mut Vec<u8>) {
        let (family, bytes): (u16, Vec<u8>) = match self.addr {
            IpAddr::V4(a) => (1, a.octets().to_vec()),
            IpAddr::V6(a) => (2, a.octets().to_vec()),
        };
        let len = usize::from(self.source_prefix).div_ceil(8);
        out.extend_from_slice(&OPTION_ECS.to_be_bytes());
        out.extend_from_slice(&((4 + len) as u16).to_be_bytes());
        out.extend_from_slice(&family.to_be_bytes());
        out.push(self.source_prefix);
        out.push(self.scope_prefix);
        out.extend_from_slice(&bytes[..len]);
    }

    fn parse(data: &[u8]) -> Option<Self> {
        let family = u16_at(data, 0)?;
        let source = *data.get(2)?;
        let scope = *data.get(3)?;
        let address = &data[4..];
        let max = match family {
            1 => 32,
            2 => 128,
            _ => return None,
        };
        // RFC 7871 section 6: the address is cut to the source prefix, with zero padding bits;
        // the scope is 0 in a query.
        if source > max || scope != 0 || address.len() != usize::from(source).div_ceil(8) {
            return None;
        }
        if source % 8 != 0
            && address
                .last()
                .is_some_and(|b| b & (0xff >> (source % 8)) != 0)
        {
            return None;
        }
        let addr = if family == 1 {
            let mut b = [0u8; 4];
            b[..address.len()].copy_from_slice(address);
            IpAddr::from(b)
        } else {
            let mut b = [0u8; 16];
            b[..address.len()].copy_from_slice(address);
            IpAddr::from(b)
        };
        Some(Self {
            addr,
            source_prefix: source,
            scope_prefix: 0,
        })
    }
}

/// The query's OPT record (RFC 6891 section 6.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Edns {
    /// The requestor's UDP payload size, as sent.
    pub payload: u16,
    pub version: u8,
    /// The DO bit (RFC 3225): copied into the response's OPT.
    pub dnssec_ok: bool,
    /// The CO bit (RFC 9824 section 4): the client takes NXDOMAIN with a compact denial.
    pub compact_ok: bool,
    pub client_subnet: Option<ClientSubnet>,
    pub cookie: Option<Cookie>,
}

/// A DNS Cookie option (RFC 7873 section 4): the client cookie and, once the client has
/// one, the server cookie it was given (8 to 32 bytes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cookie {
    pub client: [u8; 8],
    server: [u8; 32],
    server_len: u8,
}

impl Cookie {
    pub fn server(&self) -> Option<&[u8]> {
        (self.server_len > 0).then(|| &self.server[..usize::from(self.server_len)])
    }

    /// RFC 7873 section 5.2.2: 8 bytes (client only) or 16 to 40; anything else is FORMERR.
    fn parse(data: &[u8]) -> Option<Self> {
        if data.len() != 8 && !(16..=40).contains(&data.len()) {
            return None;
        }
        let mut server = [0u8; 32];
        server[..data.len() - 8].copy_from_slice(&data[8..]);
        Some(Self {
            client: data[..8].try_into().ok()?,
            server,
            server_len: (data.len() - 8) as u8,
        })
    }
}

/// A request that parsed as one question.
#[derive(Debug, Clone)]
pub struct Query<'a> {
    pub packet: &'a [u8],
    pub id: u16,
    pub opcode: u8,
    pub rd: bool,
    pub cd: bool,
    /// The question name as written (its case is echoed).
    pub qname: &'a [u8],
    /// The question name in lower case.
    pub lower: Vec<u8>,
    pub qtype: u16,
    pub qclass: u16,
    pub edns: Option<Edns>,
}

impl Query<'_> {
    /// The question section as received (name, type, class).
    pub fn question(&self) -> &[u8] {
        &self.packet[12..12 + self.qname.len() + 4]
    }
}

/// What a packet is.
#[derive(Debug)]
pub enum Parsed<'a> {
    /// Not answered at all: shorter than a header, or a response.
    Drop,
    /// Answered FORMERR: the header could be read, the rest is malformed. The question is
    /// echoed only when it could be read; the OPT only when it could be read.
    FormErr {
        id: u16,
        flags: u16,
        question: Option<&'a [u8]>,
        edns: Option<Edns>,
    },
    Query(Query<'a>),
}

/// Parses a request: header, exactly one question (no compression), no answer or authority
/// records, and in the additional section at most one OPT (others, such as TSIG, are
/// skipped over).
pub fn parse(packet: &[u8]) -> Parsed<'_> {
    if packet.len() < 12 || packet[2] & 0x80 != 0 {
        return Parsed::Drop;
    }
    let id = u16::from_be_bytes([packet[0], packet[1]]);
    let flags = u16::from_be_bytes([packet[2], packet[3]]);
    let count = |at| u16::from_be_bytes([packet[at], packet[at + 1]]);
    let (qd, an, ns, ar) = (count(4), count(6), count(8), count(10));
    let question_end = if qd == 1 {
        read_plain_name(packet, 12).and_then(|end| (end + 4 <= packet.len()).then_some(end + 4))
    } else {
        None
    };
    let question = question_end.map(|end| &packet[12..end]);
    // The additional section, for the OPT (also wanted for a FORMERR reply, and for a query
    // of a COOKIE alone, with no question: RFC 7873 section 5.4).
    let additional_at = match (question_end, qd) {
        (Some(end), _) => Some(end),
        (None, 0) => Some(12),
        (None, _) => None,
    };
    let (edns, additional) = match additional_at {
        Some(at) if an == 0 && ns == 0 => parse_additional(packet, at, ar),
        _ => (None, Additional::Malformed),
    };
    let Some(end) = question_end.filter(|_| additional == Additional::WellFormed) else {
        return Parsed::FormErr {
            id,
            flags,
            question,
            // The OPT is echoed when it could be read (an option in it may be malformed: the
            // client still learns that EDNS is spoken, RFC 6891 section 7), not when the
            // section around it is broken (as Knot and NSD answer).
            edns: edns.filter(|_| additional != Additional::Malformed),
        };
    };
    let qname = &packet[12..end - 4];
    Parsed::Query(Query {
        packet,
        id,
        opcode: ((flags >> 11) & 0x0f) as u8,
        rd: flags & 0x0100 != 0,
        cd: flags & 0x0010 != 0,
        qname,
        lower: lower(qname),
        qtype: u16::from_be_bytes([packet[end - 4], packet[end - 3]]),
        qclass: u16::from_be_bytes([packet[end - 2], packet[end - 1]]),
        edns,
    })
}

/// How an additional section reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Additional {
    WellFormed,
    /// The records are whole, but an option of the OPT (a COOKIE, an ECS) is malformed.
    BadOption,
    /// A record is cut short, bytes trail, or the OPT is not one, at the root.
    Malformed,
}

/// The OPT of the additional section, and how the section reads (every record complete, no
/// trailing bytes, at most one OPT, at the root, with well-formed options).
fn parse_additional(packet: &[u8], mut at: usize, count: u16) -> (Option<Edns>, Additional) {
    let mut edns = None;
    let mut opts = 0;
    let mut ok = true;
    let mut options_ok = true;
    for _ in 0..count {
        let Some((after, root)) = skip_name(packet, at) else {
            return (edns, Additional::Malformed);
        };
        let (Some(rtype), Some(class), Some(ttl), Some(rdlen)) = (
            u16_at(packet, after),
            u16_at(packet, after + 2),
            u32_at(packet, after + 4),
            u16_at(packet, after + 8),
        ) else {
            return (edns, Additional::Malformed);
        };
        let data_at = after + 10;
        let Some(data) = packet.get(data_at..data_at + usize::from(rdlen)) else {
            return (edns, Additional::Malformed);
        };
        if rtype == TYPE_OPT {
            opts += 1;
            let mut parsed = Edns {
                payload: class,
                version: (ttl >> 16) as u8,
                dnssec_ok: ttl & 0x8000 != 0,
                compact_ok: ttl & 0x4000 != 0,
                client_subnet: None,
                cookie: None,
            };
            let mut o = 0;
            while o < data.len() {
                let (Some(code), Some(len)) = (u16_at(data, o), u16_at(data, o + 2)) else {
                    ok = false;
                    break;
                };
                let Some(value) = data.get(o + 4..o + 4 + usize::from(len)) else {
                    ok = false;
                    break;
                };
                if code == OPTION_ECS {
                    match ClientSubnet::parse(value) {
                        Some(ecs) if parsed.client_subnet.is_none() => {
                            parsed.client_subnet = Some(ecs)
                        }
                        _ => options_ok = false,
                    }
                } else if code == OPTION_COOKIE {
                    match Cookie::parse(value) {
                        Some(cookie) if parsed.cookie.is_none() => parsed.cookie = Some(cookie),
                        _ => options_ok = false,
                    }
                }
                o += 4 + usize::from(len);
            }
            if !root || opts > 1 {
                ok = false;
            }
            if edns.is_none() {
                edns = Some(parsed);
            }
        }
        at = data_at + usize::from(rdlen);
    }
    let read = match (ok && at == packet.len(), options_ok) {
        (false, _) => Additional::Malformed,
        (true, false) => Additional::BadOption,
        (true, true) => Additional::WellFormed,
    };
    (edns, read)
}

// ---------------------------------------------------------------------------------------------
// Responses.

/// Where a record goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Section {
    Answer = 0,
    Authority = 1,
    Additional = 2,
}

/// Types whose RDATA names may be compressed (RFC 3597 section 4: the RFC 1035 types only).
fn compressed_rdata(rtype: u16) -> bool {
    matches!(
        rtype,
        TYPE_NS
            | TYPE_MD
            | TYPE_MF
            | TYPE_CNAME
            | TYPE_SOA
            | TYPE_MB
            | TYPE_MG
            | TYPE_MR
            | TYPE_PTR
            | TYPE_MINFO
            | TYPE_MX
    )
}

/// A position in a response being written, to go back to when what follows does not fit.
#[derive(Debug, Clone, Copy)]
pub struct Mark {
    len: usize,
    names: usize,
    counts: [u16; 3],
}

/// Writes one response: header, the question echoed, records with name compression, the OPT.
/// Records never go past `limit` bytes (the OPT's room is kept apart).
pub struct Writer {
    buf: Vec<u8>,
    limit: usize,
    /// Offsets of every uncompressed label written, as compression targets.
    names: Vec<u16>,
    counts: [u16; 3],
    question_end: usize,
}

impl Writer {
    /// A response to `id` with `question` echoed (if any); records may use `limit` bytes
    /// in all.
    pub fn new(mut buf: Vec<u8>, id: u16, question: Option<&[u8]>, limit: usize) -> Self {
        buf.clear();
        buf.extend_from_slice(&id.to_be_bytes());
        buf.extend_from_slice(&[0; 10]);
        let mut names = Vec::new();
        if let Some(q) = question {
            buf[5] = 1;
            buf.extend_from_slice(q);
            // The question's labels (never the type and class) are compression targets.
            let name_len = q.len().saturating_sub(4);
            names.extend(
                label_starts(&q[..name_len])
                    .filter(|&at| q[at] != 0)
                    .map(|at| (12 + at) as u16),
            );
        }
        let question_end = buf.len();
        Self {
            buf,
            limit: limit.max(question_end),
            names,
            counts: [0; 3],
            question_end,
        }
    }

    pub fn mark(&self) -> Mark {
        Mark {
            len: self.buf.len(),
            names: self.names.len(),
            counts: self.counts,
        }
    }

    pub fn rollback(&mut self, mark: Mark) {
        self.buf.truncate(mark.len);
        self.names.truncate(mark.names);
        self.counts = mark.counts;
    }

    /// Drops every record (a truncated response keeps only the header and question).
    pub fn clear_records(&mut self) {
        self.buf.truncate(self.question_end);
        self.names.retain(|&o| usize::from(o) < self.question_end);
        self.counts = [0; 3];
    }

    #[cfg(test)]
    pub fn count(&self, section: Section) -> u16 {
        self.counts[section as usize]
    }

    /// True if `name` (lower case) at `at` in the buffer equals `suffix`, ignoring case.
    fn same_name_at(&self, mut at: usize, suffix: &[u8]) -> bool {
        let mut j = 0;
        loop {
            let Some(&len) = self.buf.get(at) else {
                return false;
            };
            if len & 0xc0 == 0xc0 {
                at = usize::from(u16::from_be_bytes([len & 0x3f, self.buf[at + 1]]));
                continue;
            }
            if Some(&len) != suffix.get(j) {
                return false;
            }
            if len == 0 {
                return true;
            }
            let n = usize::from(len);
            let (Some(a), Some(b)) = (
                self.buf.get(at + 1..at + 1 + n),
                suffix.get(j + 1..j + 1 + n),
            ) else {
                return false;
            };
            if !a.eq_ignore_ascii_case(b) {
                return false;
            }
            at += 1 + n;
            j += 1 + n;
        }
    }

    /// Writes a name, pointing at the longest suffix already written (case-insensitively).
    pub fn name(&mut self, name: &[u8]) {
        let mut i = 0;
        while let Some(&len) = name.get(i) {
            if len == 0 {
                break;
            }
            let suffix = &name[i..];
            if let Some(&at) = self
                .names
                .iter()
                .find(|&&at| self.same_name_at(usize::from(at), suffix))
            {
                self.buf.extend_from_slice(&(0xc000 | at).to_be_bytes());
                return;
            }
            if self.buf.len() < 0x3fff {
                self.names.push(self.buf.len() as u16);
            }
            let end = (i + 1 + usize::from(len)).min(name.len());
            self.buf.extend_from_slice(&name[i..end]);
            i = end;
        }
        self.buf.push(0);
    }

    /// Adds one record; false (and nothing written) when it does not fit. `owner` None means
    /// the question's name, as asked.
    pub fn record(
        &mut self,
        section: Section,
        owner: Option<&[u8]>,
        rtype: u16,
        ttl: u32,
        rdata: &[u8],
    ) -> bool {
        let mark = self.mark();
        match owner {
            Some(name) => self.name(name),
            None => self.buf.extend_from_slice(&[0xc0, 12]),
        }
        self.buf.extend_from_slice(&rtype.to_be_bytes());
        self.buf.extend_from_slice(&CLASS_IN.to_be_bytes());
        self.buf.extend_from_slice(&ttl.to_be_bytes());
        let len_at = self.buf.len();
        self.buf.extend_from_slice(&[0, 0]);
        if !(compressed_rdata(rtype) && self.compressed_rdata(rtype, rdata)) {
            self.buf.truncate(len_at + 2);
            self.buf.extend_from_slice(rdata);
        }
        let len = self.buf.len() - len_at - 2;
        if self.buf.len() > self.limit || len > usize::from(u16::MAX) {
            self.rollback(mark);
            return false;
        }
        self.buf[len_at..len_at + 2].copy_from_slice(&(len as u16).to_be_bytes());
        self.counts[section as usize] += 1;
        true
    }

    /// RDATA of an RFC 1035 type with its names compressed; false if it does not parse.
    fn compressed_rdata(&mut self, rtype: u16, rdata: &[u8]) -> bool {
        let name_end = |at: usize| read_plain_name(rdata, at);
        match rtype {
            TYPE_MX => {
                let Some(end) = name_end(2) else { return false };
                if end != rdata.len() {
                    return false;
                }
                self.buf.extend_from_slice(&rdata[..2]);
                self.name(&rdata[2..]);
            }
            TYPE_SOA | TYPE_MINFO => {
                let Some(first) = name_end(0) else {
                    return false;
                };
                let Some(second) = name_end(first) else {
                    return false;
                };
                let fixed = if rtype == TYPE_SOA { 20 } else { 0 };
                if second + fixed != rdata.len() {
                    return false;
                }
                self.name(&rdata[..first]);
                self.name(&rdata[first..second]);
                self.buf.extend_from_slice(&rdata[second..]);
            }
            _ => {
                if name_end(0) != Some(rdata.len()) {
                    return false;
                }
                self.name(rdata);
            }
        }
        true
    }

    /// Finishes the response: flags and rcode (the upper bits of an extended rcode go into the
    /// OPT), the counts, and the OPT if `opt` is given.
    pub fn finish(mut self, flags: u16, rcode: u16, opt: Option<&OptOut>) -> Vec<u8> {
        let flags = (flags & !0x000f) | (rcode & 0x0f);
        self.buf[2..4].copy_from_slice(&flags.to_be_bytes());
        for (i, n) in self.counts.iter().enumerate() {
            self.buf[6 + 2 * i..8 + 2 * i].copy_from_slice(&n.to_be_bytes());
        }
        if let Some(opt) = opt {
            self.buf.push(0);
            self.buf.extend_from_slice(&TYPE_OPT.to_be_bytes());
            self.buf.extend_from_slice(&opt.payload.to_be_bytes());
            self.buf.push((rcode >> 4) as u8);
            self.buf.push(0);
            self.buf.extend_from_slice(
                &(u16::from(opt.dnssec_ok) << 15 | u16::from(opt.compact_ok) << 14).to_be_bytes(),
            );
            let mut options = Vec::new();
            if let Some(ecs) = &opt.client_subnet {
                ecs.emit(&mut options);
            }
            if let Some(cookie) = &opt.cookie {
                options.extend_from_slice(&OPTION_COOKIE.to_be_bytes());
                options.extend_from_slice(&(cookie.len() as u16).to_be_bytes());
                options.extend_from_slice(cookie);
            }
            if let Some(code) = opt.extended_error {
                options.extend_from_slice(&OPTION_EDE.to_be_bytes());
                options.extend_from_slice(&2u16.to_be_bytes());
                options.extend_from_slice(&code.to_be_bytes());
            }
            self.buf
                .extend_from_slice(&(options.len() as u16).to_be_bytes());
            self.buf.extend_from_slice(&options);
            self.buf[10..12].copy_from_slice(&(self.counts[2] + 1).to_be_bytes());
        }
        self.buf
    }
}

/// The OPT record of a response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OptOut {
    /// The payload size we advertise (our own maximum).
    pub payload: u16,
    pub dnssec_ok: bool,
    /// The CO bit, echoed to a DO query that set it (RFC 9824 section 4).
    pub compact_ok: bool,
    pub client_subnet: Option<ClientSubnet>,
    /// The client cookie followed by our server cookie.
    pub cookie: Option<[u8; 24]>,
    /// An Extended DNS Error's INFO-CODE (RFC 8914), e.g. 20, Not Authoritative.
    pub extended_error: Option<u16>,
}

impl OptOut {
    /// Its size in bytes.
    pub fn len(&self) -> usize {
        11 + self
            .client_subnet
            .map_or(0, |e| 4 + 4 + usize::from(e.source_prefix).div_ceil(8))
            + self.cookie.map_or(0, |c| 4 + c.len())
            + self.extended_error.map_or(0, |_| 6)
    }

    pub fn is_empty(&self) -> bool {
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wire(text: &str) -> Vec<u8> {
        from_dotted(text).expect("name")
    }

    #[test]
    fn names() {
        let n = wire("www.Example.com");
        assert_eq!(label_count(&n), 3);
        assert_eq!(parent(&n), Some(&wire("Example.com")[..]));
        assert_eq!(parent(&[0]), None);
        assert!(is_at_or_below(&lower(&n), &wire("example.com")));
        assert!(!is_at_or_below(
            &wire("wwwexample.com"),
            &wire("example.com")
        ));
        assert!(is_at_or_below(&wire("example.com"), &wire("example.com")));
        assert!(is_at_or_below(&wire("a"), &[0]));
        assert_eq!(to_text(&n), "www.Example.com.");
        assert_eq!(to_text(&[0]), ".");
        assert_eq!(to_text(&[3, b'a', b'.', 0xc3, 0]), "a\\.\\195.");
    }

    #[test]
    fn compression_points_at_the_longest_suffix_ignoring_case() {
        let q = [wire("WWW.example.com"), vec![0, 1, 0, 1]].concat();
        let mut w = Writer::new(Vec::new(), 7, Some(&q), 512);
        assert!(w.record(
            Section::Answer,
            None,
            TYPE_CNAME,
            60,
            &wire("mail.EXAMPLE.com")
        ));
        let out = w.finish(0x8400, 0, None);
        // Header 12, question 17+4, owner pointer 2, type/class/ttl/len 10, "mail" 5 + pointer 2.
        assert_eq!(out.len(), 12 + 21 + 2 + 10 + 7);
        assert_eq!(&out[out.len() - 2..], &[0xc0, 16]);
        assert_eq!(u16::from_be_bytes([out[6], out[7]]), 1);
    }

    #[test]
    fn a_record_that_does_not_fit_is_not_written() {
        let q = [wire("a.example"), vec![0, 16, 0, 1]].concat();
        let mut w = Writer::new(Vec::new(), 1, Some(&q), 60);
        assert!(w.record(Section::Answer, None, TYPE_TXT, 1, &[3, b'a', b'b', b'c']));
        let before = w.mark().len;
        assert!(!w.record(Section::Answer, None, TYPE_TXT, 1, &[40; 41]));
        assert_eq!(w.mark().len, before);
        assert_eq!(w.count(Section::Answer), 1);
    }

    #[test]
    fn queries_parse_with_edns_and_ecs() {
        let mut p = vec![0, 9, 1, 0, 0, 1, 0, 0, 0, 0, 0, 1];
        p.extend(wire("Www.example.com"));
        p.extend([0, 1, 0, 1]);
        // OPT, payload 4096, DO, one ECS option 192.0.2.0/24.
        p.extend([
            0, 0, 41, 16, 0, 0, 0, 0x80, 0, 0, 11, 0, 8, 0, 7, 0, 1, 24, 0, 192, 0, 2,
        ]);
        let Parsed::Query(q) = parse(&p) else {
            panic!("not a query")
        };
        assert_eq!(q.lower, wire("www.example.com"));
        assert_eq!((q.qtype, q.qclass, q.rd), (1, 1, true));
        let e = q.edns.expect("edns");
        assert!(e.dnssec_ok);
        assert_eq!(e.payload, 4096);
        assert_eq!(
            e.client_subnet.map(|c| (c.addr, c.source_prefix)),
            Some((IpAddr::from([192, 0, 2, 0]), 24))
        );
        // Two OPTs, trailing bytes, a pointer in the question, two questions: FORMERR.
        let mut two = p.clone();
        two[11] = 2;
        two.extend([0, 0, 41, 16, 0, 0, 0, 0, 0, 0, 0]);
        assert!(matches!(parse(&two), Parsed::FormErr { .. }));
        let mut trailing = p.clone();
        trailing.push(0);
        assert!(matches!(
            parse(&trailing),
            Parsed::FormErr {
                question: Some(_),
                ..
            }
        ));
        let mut pointer = vec![0, 9, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0xc0, 0, 0, 1, 0, 1];
        assert!(matches!(
            parse(&pointer),
            Parsed::FormErr { question: None, .. }
        ));
        pointer[5] = 2;
        assert!(matches!(parse(&pointer), Parsed::FormErr { .. }));
        assert!(matches!(parse(&p[..11]), Parsed::Drop));
    }

    #[test]
    fn bad_client_subnets_are_refused() {
        assert!(ClientSubnet::parse(&[0, 1, 24, 0, 192, 0, 2]).is_some());
        assert!(
            ClientSubnet::parse(&[0, 1, 24, 8, 192, 0, 2]).is_none(),
            "scope set"
        );
        assert!(
            ClientSubnet::parse(&[0, 1, 23, 0, 192, 0, 3]).is_none(),
            "bits past prefix"
        );
        assert!(ClientSubnet::parse(&[0, 1, 33, 0, 1, 2, 3, 4, 5]).is_none());
        assert!(ClientSubnet::parse(&[0, 3, 0, 0]).is_none());
    }

    #[test]
    fn cookies_parse_by_length() {
        let c = Cookie::parse(&[1; 8]).expect("client only");
        assert_eq!((c.client, c.server()), ([1; 8], None));
        let c = Cookie::parse(&[2; 24]).expect("with a server cookie");
        assert_eq!(c.server(), Some(&[2u8; 16][..]));
        for bad in [0, 7, 9, 15, 41] {
            assert!(Cookie::parse(&vec![0; bad]).is_none(), "{bad} bytes");
        }
    }
}
