//! RFC conformance, differential: one zone holding every common construct (wildcards, empty
//! non-terminals, CNAME chains into NXDOMAIN, NODATA, delegations and managed names, loops,
//! DNAME-free redirections, big RRsets) served by vantage, Knot DNS and NSD; several hundred
//! queries (names x types, EDNS sizes, DO, options, classes, opcodes, malformed packets), each
//! over UDP and TCP. vantage must answer as the references do. Where Knot and NSD differ from
//! each other, vantage must answer as one of them; any other difference must be in
//! `ACCEPTED`, with the RFC clause that allows it.

use std::{net::SocketAddr, time::Duration};

use hickory_proto::op::Message;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};

use crate::{
    references::{Reference, knot, nsd},
    support::*,
};

const ZONE: &str = r#"$ORIGIN example.com.
$TTL 3600
@           SOA   ns1 hostmaster 2024010101 3600 600 604800 300
@           NS    ns1
@           NS    ns2.example.net.
@           MX    10 mail
@           MX    20 mail2
@           TXT   "v=spf1 -all"
@           CAA   0 issue "letsencrypt.org"
ns1         A     192.0.2.53
ns1         AAAA  2001:db8::53
mail        A     192.0.2.25
mail        AAAA  2001:db8::25
mail2       A     192.0.2.26
static      A     192.0.2.80
static      AAAA  2001:db8::80
txt         TXT   "hello world" "second string"
alias       CNAME static
chain       CNAME alias
long        CNAME chain
ext         CNAME www.example.org.
dangling    CNAME missing
loop1       CNAME loop2
loop2       CNAME loop1
self        CNAME self
to-deleg    CNAME host.sub
to-cut      CNAME sub
to-managed  CNAME www
to-ent      CNAME ent
to-wild     CNAME foo.wild
*.wild      A     192.0.2.99
*.wild      TXT   "wild"
exists.wild A     192.0.2.98
deep.ent2.wild A  192.0.2.97
*.cwild     CNAME static
*.dwild     CNAME nowhere
deep.ent    A     192.0.2.7
a.b.c.d.ent3 TXT  "deep"
sub         NS    ns.sub
sub         NS    ns.other.example.net.
sub         DS    12345 13 2 0123456789ABCDEF0123456789ABCDEF0123456789ABCDEF0123456789ABCDEF
ns.sub      A     192.0.2.54
ns.sub      AAAA  2001:db8::54
deleg2      NS    ns1
_sip._tcp   SRV   10 60 5060 static
_sip._tcp   SRV   20 60 5060 mail
_dmarc      TXT   "v=DMARC1; p=none"
dname       DNAME dtarget
dtarget     A     192.0.2.60
x.dtarget   A     192.0.2.61
x.dtarget   TXT   "via dname"
outdname    DNAME example.net.
dnself      DNAME sub.dnself
dnlong      DNAME aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa.bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb.cccccccccccccccccccccccccccccccccccccccccccccccccccccccccccc.example.net.
to-dname    CNAME x.dname
loc         LOC   42 21 54 N 71 06 18 W -24m 30m
_443._tcp.tlsa TLSA 3 1 1 0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef
naptr       NAPTR 100 10 "S" "SIP+D2U" "" _sip._udp
uri         URI   10 1 "https://example.com/"
https       HTTPS 1 . alpn=h2,h3 port=443
-lead       A     192.0.2.62
under_score A     192.0.2.63
esc\.dot   TXT   "\195\169" "quote\"d" "semi;colon"
gen         TYPE65534 \# 4 0a000001
highttl 2147483648 A 192.0.2.5
ptr         PTR   static
hinfo       HINFO "PC" "Linux"
sshfp       SSHFP 1 1 0123456789abcdef0123456789abcdef01234567
big         TXT   "0000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000"
big         TXT   "1111111111111111111111111111111111111111111111111111111111111111111111111111111111111111111111111111"
big         TXT   "2222222222222222222222222222222222222222222222222222222222222222222222222222222222222222222222222222"
big         TXT   "3333333333333333333333333333333333333333333333333333333333333333333333333333333333333333333333333333"
big         TXT   "4444444444444444444444444444444444444444444444444444444444444444444444444444444444444444444444444444"
big         TXT   "5555555555555555555555555555555555555555555555555555555555555555555555555555555555555555555555555555"
"#;

/// Names queried (relative to example.com, "@" the apex).
const NAMES: &[&str] = &[
    "@",
    "ns1",
    "mail",
    "static",
    "StAtIc",
    "txt",
    "alias",
    "chain",
    "long",
    "ext",
    "dangling",
    "loop1",
    "self",
    "to-deleg",
    "to-cut",
    "to-managed",
    "to-ent",
    "to-wild",
    "x.wild",
    "y.x.wild",
    "wild",
    "*.wild",
    "exists.wild",
    "x.exists.wild",
    "ent2.wild",
    "z.ent2.wild",
    "a.cwild",
    "a.dwild",
    "ent",
    "deep.ent",
    "x.ent",
    "c.d.ent3",
    "x.c.d.ent3",
    "sub",
    "host.sub",
    "ns.sub",
    "deleg2",
    "a.deleg2",
    "_sip._tcp",
    "_tcp",
    "_dmarc",
    "ptr",
    "hinfo",
    "sshfp",
    "highttl",
    "dname",
    "x.dname",
    "y.x.dname",
    "nope.dname",
    "z.outdname",
    // A DNAME that maps below itself: given once (RFC 2181 section 5, RFC 6672 section 3.2).
    "x.dnself",
    // A substitution longer than 255 bytes: the DNAME, then YXDOMAIN (RFC 6672 section 3.2).
    "ddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddd.eeeeeeeeeeeeeeeeeeeeeeeeeeeeee.dnlong",
    "short.dnlong",
    "to-dname",
    "loc",
    "_443._tcp.tlsa",
    "naptr",
    "uri",
    "https",
    "-lead",
    "under_score",
    "esc\\.dot",
    "gen",
    "www",
    "WwW",
    "v6",
    "a.b.managed",
    "b.managed",
    "managed",
    "x.www",
    "nope",
    "x.nope",
];

/// Types asked of every name.
const TYPES: &[u16] = &[1, 28, 2, 5, 6, 15, 16, 33, 43, 255, 12, 257, 39, 29, 65534];

/// Managed records of vantage's configuration, and the same data as static records for the
/// references.
const MANAGED_STATIC: &str = "www A 192.0.2.10\nv6 AAAA 2001:db8::10\na.b.managed A 192.0.2.11\n";

/// Differences from both references that are allowed, each with the clause that allows it:
/// (case label prefix, reason).
const ACCEPTED: &[(&str, &str)] = &[
    (
        "static A class 255",
        "QCLASS * (RFC 1035 section 3.2.5) is refused: vantage holds class IN data only and \
         answers no class but IN (Knot and NSD answer IN data)",
    ),
    ("nope A class 255", "as above"),
    (
        "highttl ",
        "a TTL with the top bit set is sent as 0 (RFC 2181 section 8); Knot sends it as \
         written, NSD replaces it with $TTL",
    ),
];

fn wire_name(name: &str) -> Vec<u8> {
    let mut out = Vec::new();
    let full = if name == "@" {
        "example.com".to_string()
    } else {
        format!("{name}.example.com")
    };
    // Labels split at dots that are not escaped ("esc\\.dot" is one label).
    let mut label = Vec::new();
    let mut chars = full.bytes();
    while let Some(c) = chars.next() {
        match c {
            b'\\' => label.extend(chars.next()),
            b'.' => {
                out.push(label.len() as u8);
                out.append(&mut label);
            }
            _ => label.push(c),
        }
    }
    out.push(label.len() as u8);
    out.append(&mut label);
    out.push(0);
    out
}

/// How a query is sent.
#[derive(Clone, Copy)]
struct Shape {
    /// EDNS payload size, or None for no OPT.
    edns: Option<u16>,
    dnssec_ok: bool,
    class: u16,
    opcode: u8,
}

const PLAIN: Shape = Shape {
    edns: None,
    dnssec_ok: false,
    class: 1,
    opcode: 0,
};

fn packet(id: u16, name: &str, qtype: u16, shape: Shape, option: Option<(u16, &[u8])>) -> Vec<u8> {
    let mut p = id.to_be_bytes().to_vec();
    p.push((shape.opcode << 3) | 0x01);
    p.push(0);
    p.extend_from_slice(&[0, 1, 0, 0, 0, 0, 0, u8::from(shape.edns.is_some())]);
    p.extend(wire_name(name));
    p.extend_from_slice(&qtype.to_be_bytes());
    p.extend_from_slice(&shape.class.to_be_bytes());
    if let Some(size) = shape.edns {
        p.extend_from_slice(&[0, 0, 41]);
        p.extend_from_slice(&size.to_be_bytes());
        p.extend_from_slice(&[0, 0, if shape.dnssec_ok { 0x80 } else { 0 }, 0]);
        let opt: Vec<u8> = option
            .map(|(code, data)| {
                [
                    &code.to_be_bytes()[..],
                    &(data.len() as u16).to_be_bytes(),
                    data,
                ]
                .concat()
            })
            .unwrap_or_default();
        p.extend_from_slice(&(opt.len() as u16).to_be_bytes());
        p.extend(opt);
    }
    p
}

async fn tcp_exchange(server: SocketAddr, bytes: &[u8]) -> Option<Vec<u8>> {
    let exchange = async {
        let mut stream = TcpStream::connect(server).await.ok()?;
        let mut out = (bytes.len() as u16).to_be_bytes().to_vec();
        out.extend_from_slice(bytes);
        stream.write_all(&out).await.ok()?;
        let mut len = [0u8; 2];
        stream.read_exact(&mut len).await.ok()?;
        let mut reply = vec![0u8; usize::from(u16::from_be_bytes(len))];
        stream.read_exact(&mut reply).await.ok()?;
        Some(reply)
    };
    tokio::time::timeout(Duration::from_secs(3), exchange)
        .await
        .ok()
        .flatten()
}

/// What must match in a reply: rcode, flags, the OPT and its DO bit, and each section as a
/// sorted list of records (names compared without case, except the question's owner case is
/// not checked here), or "no reply".
fn shape(reply: Option<Vec<u8>>) -> String {
    let Some(bytes) = reply else {
        return "no reply".into();
    };
    let Ok(m) = Message::from_vec(&bytes) else {
        return format!("unparsable reply of {} bytes", bytes.len());
    };
    let section = |records: &[hickory_proto::rr::Record]| {
        let mut v: Vec<String> = records
            .iter()
            .map(|r| r.to_string().to_ascii_lowercase())
            .collect();
        v.sort();
        v.join(" | ")
    };
    let truncated = m.metadata.truncation;
    format!(
        "rcode={:?} aa={} tc={} rd={} opt={} do={}{}",
        m.metadata.response_code,
        m.metadata.authoritative,
        truncated,
        m.metadata.recursion_desired,
        m.edns.is_some(),
        m.edns.as_ref().is_some_and(|e| e.flags().dnssec_ok),
        if truncated {
            // A truncated reply's sections are the server's choice (RFC 2181 section 9).
            String::new()
        } else {
            format!(
                "\n   answer: {}\n   authority: {}\n   additional: {}",
                section(&m.answers),
                section(&m.authorities),
                section(&m.additionals)
            )
        }
    )
}

struct Case {
    label: String,
    packet: Vec<u8>,
}

fn cases() -> Vec<Case> {
    let mut cases = Vec::new();
    let mut id = 1u16;
    let mut add = |label: String, packet: Vec<u8>| {
        cases.push(Case { label, packet });
    };
    let mut next_id = || {
        id = id.wrapping_add(1);
        id
    };
    let edns = Shape {
        edns: Some(1232),
        ..PLAIN
    };
    for name in NAMES {
        for &qtype in TYPES {
            add(
                format!("{name} type {qtype}"),
                packet(next_id(), name, qtype, PLAIN, None),
            );
        }
        // EDNS with DO on the address types.
        add(
            format!("{name} A, EDNS DO"),
            packet(
                next_id(),
                name,
                1,
                Shape {
                    dnssec_ok: true,
                    ..edns
                },
                None,
            ),
        );
    }
    // EDNS sizes against a big RRset and a big referral.
    for size in [512u16, 1232, 4096, 65535] {
        for (name, qtype) in [("big", 16u16), ("@", 255), ("@", 15)] {
            add(
                format!("{name} type {qtype}, EDNS {size}"),
                packet(
                    next_id(),
                    name,
                    qtype,
                    Shape {
                        edns: Some(size),
                        dnssec_ok: true,
                        ..PLAIN
                    },
                    None,
                ),
            );
        }
    }
    add(
        "big TXT without EDNS".into(),
        packet(next_id(), "big", 16, PLAIN, None),
    );
    // Unknown option, EDNS version 1 (BADVERS), a payload below 512.
    add(
        "unknown EDNS option".into(),
        packet(next_id(), "static", 1, edns, Some((65001, &[1, 2, 3]))),
    );
    let mut badvers = packet(
        next_id(),
        "static",
        1,
        Shape {
            dnssec_ok: true,
            ..edns
        },
        None,
    );
    let at = badvers.len() - 6;
    badvers[at] = 1;
    add("EDNS version 1".into(), badvers);
    add(
        "EDNS payload 100".into(),
        packet(
            next_id(),
            "big",
            16,
            Shape {
                edns: Some(100),
                ..PLAIN
            },
            None,
        ),
    );
    // Classes other than IN: CH, HS, NONE, ANY, 0; with and without EDNS and DO (the DO bit
    // is copied into error replies too, RFC 3225 section 3).
    let with_do = Shape {
        edns: Some(1232),
        dnssec_ok: true,
        ..PLAIN
    };
    for class in [3u16, 4, 254, 255, 0] {
        for name in ["static", "nope"] {
            add(
                format!("{name} A class {class}"),
                packet(next_id(), name, 1, Shape { class, ..PLAIN }, None),
            );
            add(
                format!("{name} A class {class}, EDNS DO"),
                packet(next_id(), name, 1, Shape { class, ..with_do }, None),
            );
        }
    }
    // Opcodes other than QUERY: IQUERY, STATUS, 3, 6, 7, 15.
    for opcode in [1u8, 2, 3, 6, 7, 15] {
        add(
            format!("opcode {opcode}"),
            packet(next_id(), "static", 1, Shape { opcode, ..PLAIN }, None),
        );
        add(
            format!("opcode {opcode}, EDNS DO"),
            packet(next_id(), "static", 1, Shape { opcode, ..with_do }, None),
        );
    }
    // Names outside the zone, with and without DO.
    for shape in [PLAIN, with_do] {
        let mut outside = packet(next_id(), "static", 1, shape, None);
        // "static.example.com" -> "static.example.org"
        let at = 12 + 7 + 8 + 1;
        outside[at..at + 3].copy_from_slice(b"org");
        add(format!("outside the zone, EDNS {:?}", shape.edns), outside);
    }
    // Meta types.
    for qtype in [41u16, 250, 249, 253, 254, 0] {
        add(
            format!("static type {qtype}"),
            packet(next_id(), "static", qtype, PLAIN, None),
        );
    }
    // Malformed: two questions, no question, a truncated question, an answer record in a
    // query, trailing garbage, a pointer in the question, a response.
    let good = packet(next_id(), "static", 1, PLAIN, None);
    let mut two = good.clone();
    two[5] = 2;
    add("QDCOUNT 2 with one question".into(), two);
    let mut none = good[..12].to_vec();
    none[5] = 0;
    add("no question".into(), none);
    add("question cut short".into(), good[..20].to_vec());
    let mut answer_in_query = good.clone();
    answer_in_query[7] = 1;
    answer_in_query.extend_from_slice(&[0xc0, 12, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4, 192, 0, 2, 1]);
    add("an answer record in the query".into(), answer_in_query);
    let mut pointer = good[..12].to_vec();
    pointer.extend_from_slice(&[0xc0, 12, 0, 1, 0, 1]);
    add("pointer in the question".into(), pointer);
    let mut response = good.clone();
    response[2] |= 0x80;
    add("a response".into(), response);
    let mut trailing = good.clone();
    trailing.extend_from_slice(&[0xde, 0xad]);
    add("trailing bytes".into(), trailing);
    // Header bits a query should not carry: AA, TC, Z (RFC 1035 section 4.1.1), AD.
    for (bit_at, bit, what) in [
        (2, 0x04, "AA"),
        (2, 0x02, "TC"),
        (3, 0x40, "Z"),
        (3, 0x20, "AD"),
    ] {
        let mut flagged = good.clone();
        flagged[bit_at] |= bit;
        add(format!("query with {what} set"), flagged);
    }
    // OPT problems: two OPT records, an OPT not owned by the root, a truncated option, an
    // ECS option with bits past its prefix, a well-formed ECS option.
    let with_opt = packet(next_id(), "static", 1, edns, None);
    let mut two_opts = with_opt.clone();
    two_opts[11] = 2;
    two_opts.extend_from_slice(&with_opt[with_opt.len() - 11..]);
    add("two OPT records".into(), two_opts);
    let mut named_opt = with_opt[..with_opt.len() - 11].to_vec();
    named_opt.extend_from_slice(&[1, b'x', 0, 0, 41, 4, 208, 0, 0, 0, 0, 0, 0]);
    add("OPT not at the root".into(), named_opt);
    add(
        "truncated EDNS option".into(),
        packet(next_id(), "static", 1, edns, Some((10, &[1, 2, 3])))
            .into_iter()
            .rev()
            .skip(1)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect(),
    );
    add(
        "ECS for 192.0.2.0/24".into(),
        packet(
            next_id(),
            "static",
            1,
            edns,
            Some((8, &[0, 1, 24, 0, 192, 0, 2])),
        ),
    );
    add(
        "ECS with a cookie too".into(),
        packet(
            next_id(),
            "static",
            1,
            edns,
            Some((10, &[1, 2, 3, 4, 5, 6, 7, 8])),
        ),
    );
    // Zone transfers from a client that may not have them, over UDP and TCP.
    for qtype in [252u16, 251] {
        add(
            format!("zone transfer type {qtype}"),
            packet(next_id(), "@", qtype, PLAIN, None),
        );
    }
    cases
}

async fn ask(server: SocketAddr, packet: &[u8], tcp: bool) -> String {
    let reply = if tcp {
        tcp_exchange(server, packet).await
    } else {
        udp_exchange(server, packet, Duration::from_millis(1500)).await
    };
    shape(reply)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answers_as_knot_and_nsd_do() {
    init();
    let dir = workdir();
    std::fs::write(dir.path().join("zones/example.com.zone"), ZONE).expect("zone");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("check target");
    let check_port = listener.local_addr().expect("addr").port();
    let endpoint = |address: &str| {
        format!("endpoints = [{{ address = \"{address}\", check_address = \"127.0.0.1\" }}]")
    };
    let path = dir.path().join("fleet.toml");
    std::fs::write(
        &path,
        format!(
            "[[prober]]\nregion = \"a\"\n[check.t]\nprotocol = \"tcp\"\nport = {check_port}\ninterval = \"200ms\"\ntimeout = \"150ms\"\nrise = 1\n\
             [dns]\nlisten = [\"127.0.0.1:0\"]\n[admin]\nlisten = \"127.0.0.1:0\"\n\
             [[record]]\nname = \"www.example.com\"\nttl = 3600\n{}\n\
             [[record]]\nname = \"v6.example.com\"\ntype = \"AAAA\"\nttl = 3600\n{}\n\
             [[record]]\nname = \"a.b.managed.example.com\"\nttl = 3600\n{}\n",
            endpoint("192.0.2.10"),
            endpoint("2001:db8::10"),
            endpoint("192.0.2.11"),
        ),
    )
    .expect("config");
    let vantage = Vantage::dns(&path, dir.path());
    vantage.wait_ready().await;
    let reference_zone = format!("{ZONE}{MANAGED_STATIC}");
    let references: [Reference; 2] = [
        knot(dir.path(), "example.com", &reference_zone).await,
        nsd(dir.path(), "example.com", &reference_zone).await,
    ];

    let cases = cases();
    assert!(cases.len() >= 300, "{} cases", cases.len());
    let mut differences = Vec::new();
    let mut references_differ = 0;
    for case in &cases {
        for tcp in [false, true] {
            let label = format!("{} over {}", case.label, if tcp { "TCP" } else { "UDP" });
            let ours = ask(vantage.dns, &case.packet, tcp).await;
            let knot = ask(references[0].addr, &case.packet, tcp).await;
            let nsd = ask(references[1].addr, &case.packet, tcp).await;
            if knot != nsd {
                references_differ += 1;
            }
            if ours == knot || ours == nsd {
                continue;
            }
            if ACCEPTED
                .iter()
                .any(|(prefix, _)| case.label.starts_with(prefix))
            {
                continue;
            }
            differences.push(format!(
                "{label}:\n vantage {ours}\n knot    {knot}\n nsd     {nsd}"
            ));
        }
    }
    eprintln!(
        "{} cases x UDP and TCP; the references differ from each other in {references_differ}",
        cases.len()
    );
    assert!(
        differences.is_empty(),
        "{} replies differ from both references:\n{}",
        differences.len(),
        differences.join("\n\n")
    );
    drop(listener);
}
