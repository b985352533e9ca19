//! Zone-file parity: every construct of the zone-file format loaded by vantage and checked by
//! Knot's `kzonecheck` and NSD's `nsd-checkzone`, with the same accepted/rejected verdicts;
//! then every accepted construct served by vantage and by Knot and transferred (AXFR) from
//! both: the records must be identical, byte for byte.

use std::{collections::BTreeSet, net::SocketAddr, path::Path, process::Command, time::Duration};

use hickory_proto::rr::RecordType;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};

use crate::{references::knot_with, support::*};

const BASE: &str = "$ORIGIN example.com.\n$TTL 3600\n@ SOA ns1 hostmaster 1 3600 600 604800 300\n@ NS ns1\nns1 A 192.0.2.53\n";

/// (label, the lines added to the base zone). Each is loaded on its own.
const SNIPPETS: &[(&str, &str)] = &[
    ("plain A", "www A 192.0.2.1"),
    (
        "TTL and class in either order",
        "a 60 IN A 192.0.2.1\nb IN 60 A 192.0.2.2",
    ),
    ("TTL units", "a 1h30m A 192.0.2.1"),
    ("multi-line entry", "a TXT ( \"one\" ; comment\n  \"two\" )"),
    (
        "owner continued by blank",
        "a A 192.0.2.1\n  AAAA 2001:db8::1",
    ),
    ("escaped dot in a label", "a\\.b TXT x"),
    ("\\DDD in an owner", "\\065bc A 192.0.2.1"),
    ("high octet in an owner", "caf\\195\\169 A 192.0.2.1"),
    ("space in an owner", "a\\032b A 192.0.2.1"),
    ("underscore anywhere", "_dmarc.x_y._z TXT \"v=DMARC1\""),
    ("leading hyphen", "-lead A 192.0.2.1"),
    ("specials escaped", "\\@\\(\\)\\;\\\" TXT x"),
    (
        "TXT escapes",
        "t TXT \"\\195\\169\" \"quote\\\"d\" \"semi;colon\" back\\\\slash",
    ),
    (
        "TXT of 255 bytes",
        "t TXT \"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\"",
    ),
    ("empty TXT string", "t TXT \"\""),
    ("generic type", "g TYPE65534 \\# 4 0a000001"),
    ("generic form of a known type", "g A \\# 4 0a000001"),
    ("empty generic", "g TYPE65534 \\# 0"),
    ("DNAME", "d DNAME example.net."),
    (
        "LOC",
        "l LOC 52 22 23.000 N 4 53 32.000 E -2.00m 0.00m 10000m 10m",
    ),
    (
        "DS",
        "sub NS ns.sub\nns.sub A 192.0.2.9\nsub DS 12345 13 2 0123456789ABCDEF0123456789ABCDEF0123456789ABCDEF0123456789ABCDEF",
    ),
    (
        "TLSA",
        "_443._tcp TLSA 3 1 1 0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
    ),
    (
        "SSHFP",
        "s SSHFP 4 2 0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
    ),
    ("NAPTR", "n NAPTR 100 10 \"S\" \"SIP+D2U\" \"\" _sip._udp"),
    ("URI", "_http._tcp URI 10 1 \"https://example.com/\""),
    ("CAA", "@ CAA 128 issue \"ca.example.net; account=1\""),
    ("SRV", "_sip._tcp SRV 10 60 5060 ns1"),
    ("MX", "@ MX 10 ns1"),
    ("PTR", "p PTR ns1"),
    ("HINFO", "h HINFO \"PC\" \"Linux\""),
    ("RP", "r RP admin.example.com. t.example.com."),
    ("AFSDB", "a AFSDB 1 ns1"),
    ("SPF", "@ SPF \"v=spf1 -all\""),
    (
        "HTTPS",
        "h HTTPS 1 . alpn=h2,h3 port=443 ipv4hint=192.0.2.1",
    ),
    ("SVCB", "_dns.s SVCB 1 ns1 alpn=dot port=853"),
    (
        "DNSKEY",
        "@ DNSKEY 257 3 13 mdsswUyr3DPW132mOi8V9xESWE8jTo0dxCjjnopKl+GqJxpVXckHAeF+KkxLbxILfDLUT0rAK9iUzy1L53eKGQ==",
    ),
    (
        "CDS",
        "@ CDS 12345 13 2 0123456789ABCDEF0123456789ABCDEF0123456789ABCDEF0123456789ABCDEF",
    ),
    ("OPENPGPKEY", "o OPENPGPKEY AQID"),
    ("EUI48", "e EUI48 00-00-5e-00-53-2a"),
    ("CERT", "c CERT 1 0 0 AQID"),
    ("TTL with the top bit", "a 2147483648 A 192.0.2.1"),
    (
        "$INCLUDE of a file in the zones directory",
        "$INCLUDE part.inc",
    ),
    // Refused by everyone.
    (
        "TXT of 256 bytes",
        "t TXT \"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\"",
    ),
    (
        "label of 64 bytes",
        "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa A 192.0.2.1",
    ),
    ("bad IPv4", "a A 192.0.2.300"),
    ("CNAME beside other data", "c CNAME ns1\nc A 192.0.2.1"),
    ("unknown type mnemonic", "a BOGUS 1"),
    ("generic length mismatch", "g TYPE65534 \\# 3 0a000001"),
    ("unclosed parenthesis", "a TXT ( x"),
    ("unclosed quote", "a TXT \"x"),
    ("bad escape", "a TXT \\300"),
    ("empty label", "a..b A 192.0.2.1"),
    ("record outside the zone", "www.example.org. A 192.0.2.1"),
    ("extra data", "a A 192.0.2.1 192.0.2.2"),
    ("MX without target", "@ MX 10"),
    ("bad base64", "@ DNSKEY 257 3 13 !!!!"),
    ("odd hex", "s SSHFP 1 1 abc"),
];

/// Where vantage's verdict may differ from both references, and why.
const EXCEPTIONS: &[(&str, &str)] = &[];

fn ours(dir: &Path, zone: &str) -> Result<(), String> {
    let path = dir.join("example.com.zone");
    std::fs::write(&path, zone).expect("zone");
    vantage::dns::zones::parse_zone(&path, zone)
        .map(|_| ())
        .map_err(|e| e.to_string())
}

fn checker(dir: &Path, zone: &str, command: &str, args: &[&str]) -> Result<(), String> {
    let path = dir.join("example.com.zone");
    std::fs::write(&path, zone).expect("zone");
    let out = Command::new(command)
        .args(args)
        .arg(&path)
        .output()
        .unwrap_or_else(|e| panic!("run {command} (tests/run installs it): {e}"));
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

#[test]
fn zone_files_load_as_knot_and_nsd_load_them() {
    let dir = tempfile::tempdir().expect("dir");
    std::fs::write(dir.path().join("part.inc"), "inc A 192.0.2.77\n").expect("include");
    let mut problems = Vec::new();
    let mut accepted = Vec::new();
    for (label, lines) in SNIPPETS {
        let zone = format!("{BASE}{lines}\n");
        let vantage = ours(dir.path(), &zone);
        let knot = checker(dir.path(), &zone, "kzonecheck", &["-o", "example.com."]);
        let nsd = checker(dir.path(), &zone, "nsd-checkzone", &["example.com"]);
        let agree = knot.is_ok() == nsd.is_ok();
        let matches = vantage.is_ok() == knot.is_ok() || vantage.is_ok() == nsd.is_ok();
        // Where the references agree, vantage must agree; where they differ, either will do.
        let fine = if agree {
            vantage.is_ok() == knot.is_ok()
        } else {
            matches
        };
        if !fine && !EXCEPTIONS.iter().any(|(l, _)| l == label) {
            problems.push(format!(
                "{label}: vantage {vantage:?}\n  kzonecheck {knot:?}\n  nsd-checkzone {nsd:?}"
            ));
        }
        if vantage.is_ok() && knot.is_ok() {
            accepted.push(*lines);
        } else if let Err(e) = &vantage {
            // A refusal names the file and the line.
            assert!(e.contains("example.com.zone"), "{label}: {e}");
        }
    }
    assert!(
        problems.is_empty(),
        "verdicts differ:\n{}",
        problems.join("\n")
    );
    assert!(accepted.len() >= 35, "{} accepted", accepted.len());
}

/// Reads a possibly compressed name at `at`: its lower-case presentation form and the offset
/// after it.
fn read_name(m: &[u8], mut at: usize) -> (String, usize) {
    let mut out = String::new();
    let mut end = None;
    loop {
        let len = m[at];
        if len & 0xc0 == 0xc0 {
            end.get_or_insert(at + 2);
            at = usize::from(u16::from_be_bytes([len & 0x3f, m[at + 1]]));
            continue;
        }
        if len == 0 {
            return (out, end.unwrap_or(at + 1));
        }
        for &b in &m[at + 1..at + 1 + usize::from(len)] {
            out.push_str(&format!("\\{:03}", b.to_ascii_lowercase()));
        }
        out.push('.');
        at += 1 + usize::from(len);
    }
}

/// Types whose RDATA is exactly one domain name, possibly compressed (RFC 3597 section 4).
fn rdata_bytes(m: &[u8], rtype: u16, at: usize, len: usize) -> Vec<u8> {
    match rtype {
        2 | 5 | 12 => read_name(m, at).0.into_bytes(),
        15 => [&m[at..at + 2], read_name(m, at + 2).0.as_bytes()].concat(),
        6 => {
            let (mname, next) = read_name(m, at);
            let (rname, next) = read_name(m, next);
            [mname.as_bytes(), rname.as_bytes(), &m[next..next + 20]].concat()
        }
        _ => m[at..at + len].to_vec(),
    }
}

/// The answer records of a message: (owner, type, TTL, RDATA with names decompressed).
fn answers(m: &[u8]) -> Vec<(String, u16, u32, Vec<u8>)> {
    let count = |at: usize| usize::from(u16::from_be_bytes([m[at], m[at + 1]]));
    let mut at = 12;
    for _ in 0..count(4) {
        at = read_name(m, at).1 + 4;
    }
    let mut out = Vec::new();
    for _ in 0..count(6) {
        let (owner, next) = read_name(m, at);
        let rtype = u16::from_be_bytes([m[next], m[next + 1]]);
        let ttl = u32::from_be_bytes(m[next + 4..next + 8].try_into().expect("4 bytes"));
        let len = count(next + 8);
        out.push((owner, rtype, ttl, rdata_bytes(m, rtype, next + 10, len)));
        at = next + 10 + len;
    }
    out
}

/// Every record of an AXFR from `server`, as (owner lower case, type, TTL, RDATA bytes).
async fn transfer(server: SocketAddr) -> BTreeSet<(String, u16, u32, Vec<u8>)> {
    let query = query_message("example.com.", RecordType::AXFR, false)
        .to_vec()
        .expect("encode");
    let mut stream = TcpStream::connect(server).await.expect("connect");
    let mut out = (query.len() as u16).to_be_bytes().to_vec();
    out.extend(query);
    stream.write_all(&out).await.expect("send");
    let mut records = BTreeSet::new();
    let mut soas = 0;
    while soas < 2 {
        let mut len = [0u8; 2];
        tokio::time::timeout(Duration::from_secs(5), stream.read_exact(&mut len))
            .await
            .expect("a transfer message in time")
            .expect("read");
        let mut body = vec![0u8; usize::from(u16::from_be_bytes(len))];
        stream.read_exact(&mut body).await.expect("read");
        assert_eq!(body[3] & 0x0f, 0, "{server} refused the transfer");
        for (owner, rtype, ttl, rdata) in answers(&body) {
            if rtype == 6 {
                soas += 1;
                if soas == 2 {
                    break;
                }
            }
            records.insert((owner, rtype, ttl, rdata));
        }
    }
    records
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn accepted_records_are_served_byte_for_byte_as_written() {
    init();
    let dir = workdir();
    std::fs::write(dir.path().join("zones/part.inc"), "inc A 192.0.2.77\n").expect("include");
    // Every snippet that everyone accepts (with distinct owners where two would clash).
    let mut zone = BASE.to_string();
    for (i, (label, lines)) in SNIPPETS.iter().enumerate() {
        let single = format!("{BASE}{lines}\n");
        let knot_ok = checker(dir.path(), &single, "kzonecheck", &["-o", "example.com."]).is_ok();
        if !knot_ok || label.starts_with("$INCLUDE") || label.starts_with("TTL with the top") {
            continue;
        }
        zone.push_str(&format!("$ORIGIN s{i}.example.com.\n"));
        zone.push_str(&lines.replace("@ ", "x ").replace("www.example.org.", "www"));
        zone.push_str("\n$ORIGIN example.com.\n");
    }
    std::fs::write(dir.path().join("zones/example.com.zone"), &zone).expect("zone");
    let path = dir.path().join("fleet.toml");
    std::fs::write(
        &path,
        "[[prober]]\nregion = \"a\"\n[dns]\nlisten = [\"127.0.0.1:0\"]\nallow_transfer = [\"127.0.0.1/32\"]\n[admin]\nlisten = \"127.0.0.1:0\"\n",
    )
    .expect("config");
    let vantage = Vantage::dns(&path, dir.path());
    vantage.wait_ready().await;
    let knot = knot_with(dir.path(), "example.com", &zone, true).await;
    let ours = transfer(vantage.dns).await;
    let theirs = transfer(knot.addr).await;
    assert!(ours.len() >= 40, "{} records", ours.len());
    let only_ours: Vec<_> = ours.difference(&theirs).collect();
    let only_theirs: Vec<_> = theirs.difference(&ours).collect();
    assert!(
        only_ours.is_empty() && only_theirs.is_empty(),
        "served differently:\n only vantage: {only_ours:#?}\n only knot: {only_theirs:#?}"
    );
}
