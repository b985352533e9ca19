//! Online DNSSEC signing, end to end: answers of a signed zone validated by real validators
//! (unbound as a validating resolver stubbed to vantage, BIND's delv) for static and managed
//! names, negative answers, wildcards, CNAME and DNAME chains, secure and insecure delegations;
//! a failover's new answer validating within its TTL; bogus data caught; ZSK pre-publish and
//! CSK double-signature rollovers; the structure of signed answers against Knot's online
//! signing; key and configuration errors; the signing metrics.

use std::{net::SocketAddr, path::Path, process::Command, time::Duration};

use hickory_proto::{
    op::{Message, ResponseCode},
    rr::RecordType,
};

use crate::{
    references::{knot_onlinesign, nsd, unbound},
    support::*,
};

/// The signed parent zone of these tests: every kind of name a validator must handle.
const PARENT_ZONE: &str = "$TTL 3600
@   IN SOA ns1.example.com. hostmaster.example.com. ( 7 3600 600 604800 60 )
@   IN NS  ns1.example.com.
ns1 IN A   127.0.0.1
static IN A 192.0.2.80
Mail IN MX 10 Static.example.com.
alias IN CNAME static.example.com.
chain IN CNAME alias.example.com.
*.wild IN A 192.0.2.99
deep.ent.example.com. IN A 192.0.2.7
dn IN DNAME wild.example.com.
sub IN NS ns.sub.example.com.
ns.sub IN A 192.0.2.53
";

/// A query with the DO bit; RD when asking a resolver.
fn do_query(name: &str, rtype: RecordType, recursive: bool) -> Message {
    let mut m = query_message(name, rtype, true);
    m.edns.as_mut().expect("edns").set_dnssec_ok(true);
    m.metadata.recursion_desired = recursive;
    m
}

/// Records as (owner in lower case, type, rest of the presentation form).
fn records(section: &[hickory_proto::rr::Record]) -> Vec<(String, String, String)> {
    section
        .iter()
        .map(|r| {
            let text = r.to_string();
            let mut parts = text.split_whitespace();
            let owner = parts.next().unwrap_or_default().to_ascii_lowercase();
            let _ttl = parts.next();
            let _class = parts.next();
            let rtype = parts.next().unwrap_or_default().to_string();
            let mut data = parts.collect::<Vec<_>>().join(" ");
            // Bitmaps as type numbers: hickory writes types it does not know as "Unknown".
            if let hickory_proto::rr::RData::DNSSEC(
                hickory_proto::dnssec::rdata::DNSSECRData::NSEC(nsec),
            ) = &r.data
            {
                data = std::iter::once(nsec.next_domain_name().to_string())
                    .chain(nsec.type_bit_maps().map(|t| match t.to_string().as_str() {
                        "Unknown" => format!("TYPE{}", u16::from(t)),
                        known => known.to_string(),
                    }))
                    .collect::<Vec<_>>()
                    .join(" ");
            }
            (owner, rtype, data)
        })
        .collect()
}

/// What a validating resolver says about a question.
async fn validate(resolver: SocketAddr, name: &str, rtype: RecordType) -> Message {
    tcp_query(resolver, &do_query(name, rtype, true)).await
}

/// Asserts that the resolver validated the answer (AD) with `rcode`; returns the answer's
/// data of type `rtype`.
async fn secure(
    resolver: SocketAddr,
    name: &str,
    rtype: RecordType,
    rcode: ResponseCode,
) -> Vec<String> {
    let m = validate(resolver, name, rtype).await;
    assert_eq!(
        (m.metadata.response_code, m.metadata.authentic_data),
        (rcode, true),
        "{name} {rtype}: not validated as secure: {m:?}"
    );
    records(&m.answers)
        .into_iter()
        .filter(|(_, t, _)| *t == rtype.to_string())
        .map(|(_, _, data)| data)
        .collect()
}

/// `vantage dnssec keygen` into `dir/name`.
fn keygen(dir: &Path, name: &str, algorithm: &str) -> String {
    let file = dir.join(name);
    let (code, out, err) = run_vantage(
        &[
            "dnssec",
            "keygen",
            "--algorithm",
            algorithm,
            "--out",
            file.to_str().expect("path"),
        ],
        &[],
    );
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("DNSKEY 257 3 "), "{out}");
    file.display().to_string()
}

/// The DS records `vantage dnssec ds` prints for `zone`, as "zone. DS ..." lines.
fn ds_records(config: &Path, zone: &str) -> Vec<String> {
    let (code, out, err) = run_vantage(
        &[
            "dnssec",
            "ds",
            "--config",
            config.to_str().expect("path"),
            zone,
        ],
        &[],
    );
    assert_eq!(code, 0, "{out}{err}");
    out.lines()
        .filter(|l| !l.starts_with(';'))
        .map(|l| l.replace(" IN DS ", " DS "))
        .collect()
}

/// BIND's delv asking `server` directly, with `anchor` (a DS line) as its only trust anchor.
fn delv(dir: &Path, server: SocketAddr, anchor: &str, name: &str, rtype: &str) -> String {
    let parts: Vec<&str> = anchor.split_whitespace().collect();
    let file = dir.join("delv-anchor.conf");
    std::fs::write(
        &file,
        format!(
            "trust-anchors {{ {} static-ds {} {} {} \"{}\"; }};\n",
            parts[0],
            parts[2],
            parts[3],
            parts[4],
            parts[5..].concat()
        ),
    )
    .expect("anchor file");
    let out = Command::new("delv")
        .args([
            &format!("@{}", server.ip()),
            "-p",
            &server.port().to_string(),
            "-a",
            file.to_str().expect("path"),
            &format!("+root={}", parts[0]),
            name,
            rtype,
        ])
        .output()
        .expect("run delv (tests/run installs bind9-dnsutils)");
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn fleet(dir: &Path, ca: &Path, port: u16, a: &str, b: &str, signing: &str) -> String {
    format!(
        r#"[[prober]]
region = "r1"
[check.web]
port = {port}
path = "/healthz"
host = "app.test"
ca_file = "{ca}"
interval = "200ms"
timeout = "150ms"
rise = 1
fall = 1
[dns]
listen = ["127.0.0.1:0"]
zones_dir = "{zones}"
client_regions = {{ "127.0.0.0/8" = "r1" }}
[admin]
listen = "127.0.0.1:0"
{signing}
[[record]]
name = "www.example.com"
ttl = 2
policy = "failover"
check = "web"
endpoints = [{{ name = "primary", address = "{a}" }}, {{ name = "secondary", address = "{b}" }}]
[[record]]
name = "weighted.example.com"
policy = "weighted"
check = "web"
endpoints = [{{ name = "w1", address = "{a}", weight = 1 }}, {{ name = "w2", address = "{b}", weight = 1 }}]
[[record]]
name = "near.example.com"
policy = "latency"
check = "web"
endpoints = [{{ name = "n1", address = "{a}" }}, {{ name = "n2", address = "{b}" }}]
[[record]]
name = "every.example.com"
policy = "all"
check = "web"
endpoints = [{{ name = "e1", address = "{a}" }}, {{ name = "e2", address = "{b}" }}]
"#,
        ca = ca.display(),
        zones = dir.join("zones").display(),
    )
}

/// Every kind of answer from a signed zone validates in unbound and delv; a secure delegation
/// (a child signed by another vantage with Ed25519) and an insecure one (NSD) are followed; a
/// failover's new answer validates within the record's TTL; a wrong trust anchor is caught.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signed_answers_validate_in_unbound_and_delv() {
    init();
    let dir = workdir();
    let (pki, ips, backends) = app_backends(dir.path()).await;

    // The secure child: sec.example.com, signed by its own vantage with an Ed25519 CSK.
    let child_dir = dir.path().join("child");
    std::fs::create_dir_all(child_dir.join("zones")).expect("dir");
    std::fs::write(
        child_dir.join("zones/sec.example.com.zone"),
        "$TTL 3600\n@ IN SOA ns.sec.example.com. h.example.com. 1 3600 600 604800 60\n@ IN NS ns.sec.example.com.\nns IN A 192.0.2.54\nhost IN A 192.0.2.55\n",
    )
    .expect("zone");
    let child_key = keygen(&child_dir, "sec.pem", "ed25519");
    let child_config = child_dir.join("fleet.toml");
    std::fs::write(
        &child_config,
        format!(
            "[[prober]]\nregion = \"r1\"\n[dns]\nlisten = [\"127.0.0.1:0\"]\nzones_dir = \"{}\"\n[admin]\nlisten = \"127.0.0.1:0\"\nstate_dir = \"{}\"\n[dns.dnssec.\"sec.example.com\"]\nalgorithm = \"ed25519\"\nkeys = [{{ file = \"{child_key}\" }}]\n",
            child_dir.join("zones").display(),
            child_dir.join("state").display()
        ),
    )
    .expect("config");
    let child_ds = ds_records(&child_config, "sec.example.com");
    assert_eq!(child_ds.len(), 1, "{child_ds:?}");
    let child = Vantage::dns(&child_config, &child_dir);
    child.wait_ready().await;

    // The insecure child: sub.example.com on NSD, unsigned.
    let insecure = nsd(
        dir.path(),
        "sub.example.com",
        "$TTL 3600\n@ IN SOA ns.sub.example.com. h.example.com. 1 3600 600 604800 60\n@ IN NS ns.sub.example.com.\nns IN A 192.0.2.53\nhost IN A 192.0.2.56\n",
    )
    .await;

    // The parent, with the DS of the secure child.
    let child_ds_rdata = child_ds[0].split(" DS ").nth(1).expect("DS").to_string();
    std::fs::write(
        dir.path().join("zones/example.com.zone"),
        format!(
            "{PARENT_ZONE}sec IN NS ns.sec.example.com.\nsec IN DS {child_ds_rdata}\nns.sec IN A 192.0.2.54\n"
        ),
    )
    .expect("zone");
    let key = keygen(dir.path(), "example.com.pem", "ecdsap256sha256");
    let path = dir.path().join("fleet.toml");
    std::fs::write(
        &path,
        fleet(
            dir.path(),
            &pki.ca_file,
            backends[0].addr.port(),
            &ips[0].to_string(),
            &ips[1].to_string(),
            &format!("[dns.dnssec.\"example.com\"]\nkeys = [{{ file = \"{key}\" }}]\n"),
        ),
    )
    .expect("config");
    let (code, out, err) = run_vantage(&["check-config", path.to_str().expect("path")], &[]);
    assert_eq!(code, 0, "{out}{err}");
    let anchors = ds_records(&path, "example.com");
    assert_eq!(anchors.len(), 1, "{anchors:?}");
    let vantage = Vantage::dns(&path, dir.path());
    vantage.wait_ready().await;
    // A second server of the fleet, with the same keys (and a state directory of its own).
    let second_dir = dir.path().join("second");
    std::fs::create_dir_all(&second_dir).expect("dir");
    let second_path = second_dir.join("fleet.toml");
    std::fs::copy(&path, &second_path).expect("config");
    let second = Vantage::dns(&second_path, &second_dir);
    second.wait_ready().await;

    let resolver = unbound(
        dir.path(),
        &anchors,
        &[
            ("example.com", vantage.dns),
            ("example.com", second.dns),
            ("sec.example.com", child.dns),
            ("sub.example.com", insecure.addr),
        ],
    )
    .await;
    let r = resolver.addr;
    use ResponseCode::NoError;
    assert_eq!(
        secure(r, "static.example.com.", RecordType::A, NoError).await,
        ["192.0.2.80"]
    );
    assert_eq!(
        secure(r, "www.example.com.", RecordType::A, NoError).await,
        [ips[0].to_string()]
    );
    assert_eq!(
        secure(r, "mail.example.com.", RecordType::MX, NoError).await,
        ["10 Static.example.com."]
    );
    // Managed answers of every policy: each variant is signed as it is served.
    assert_eq!(
        secure(r, "every.example.com.", RecordType::A, NoError)
            .await
            .len(),
        2
    );
    assert_eq!(
        secure(r, "near.example.com.", RecordType::A, NoError)
            .await
            .len(),
        1
    );
    assert_eq!(
        secure(r, "weighted.example.com.", RecordType::A, NoError)
            .await
            .len(),
        1
    );
    // A CNAME chain and a DNAME into a wildcard.
    assert_eq!(
        secure(r, "chain.example.com.", RecordType::A, NoError).await,
        ["192.0.2.80"]
    );
    assert_eq!(
        secure(r, "x.wild.example.com.", RecordType::A, NoError).await,
        ["192.0.2.99"]
    );
    assert_eq!(
        secure(r, "y.dn.example.com.", RecordType::A, NoError).await,
        ["192.0.2.99"]
    );
    // Denials: a name that does not exist (a compact answer: NOERROR, RFC 9824), a type that
    // does not, a wildcard's missing type, an empty non-terminal, the DS of an insecure child.
    for (name, rtype) in [
        ("nope.example.com.", RecordType::A),
        ("a.b.nope.example.com.", RecordType::TXT),
        ("static.example.com.", RecordType::TXT),
        ("www.example.com.", RecordType::TXT),
        ("x.wild.example.com.", RecordType::MX),
        ("ent.example.com.", RecordType::A),
        ("sub.example.com.", RecordType::DS),
    ] {
        assert!(
            secure(r, name, rtype, NoError).await.is_empty(),
            "{name} {rtype}"
        );
    }
    // The apex key sets, and the DS of the secure child.
    assert_eq!(
        secure(r, "example.com.", RecordType::DNSKEY, NoError)
            .await
            .len(),
        1
    );
    for rtype in [RecordType::CDS, RecordType::CDNSKEY] {
        assert_eq!(secure(r, "example.com.", rtype, NoError).await.len(), 1);
    }
    assert_eq!(
        secure(r, "sec.example.com.", RecordType::DS, NoError).await,
        std::slice::from_ref(&child_ds_rdata)
    );
    // Through the delegations: the secure child validates, the insecure one is not bogus.
    assert_eq!(
        secure(r, "host.sec.example.com.", RecordType::A, NoError).await,
        ["192.0.2.55"]
    );
    let m = validate(r, "host.sub.example.com.", RecordType::A).await;
    assert_eq!(
        (m.metadata.response_code, m.metadata.authentic_data),
        (NoError, false),
        "{m:?}"
    );
    assert_eq!(addresses(&m), [std::net::IpAddr::from([192, 0, 2, 56])]);

    // delv, asking vantage itself.
    // A weighted answer differs from query to query: each delv run asks afresh.
    let mut weighted = std::collections::BTreeSet::new();
    for _ in 0..8 {
        let out = delv(
            dir.path(),
            vantage.dns,
            &anchors[0],
            "weighted.example.com",
            "A",
        );
        assert!(out.contains("; fully validated"), "delv weighted:\n{out}");
        weighted.extend(
            out.lines()
                .filter(|l| l.starts_with("weighted.example.com.") && l.contains("\tA\t"))
                .map(str::to_string),
        );
    }
    assert!(!weighted.is_empty());
    for (name, rtype, expect) in [
        ("near.example.com", "A", "; fully validated"),
        ("every.example.com", "A", "; fully validated"),
        ("static.example.com", "A", "; fully validated"),
        ("www.example.com", "A", "; fully validated"),
        ("x.wild.example.com", "A", "; fully validated"),
        ("example.com", "DNSKEY", "; fully validated"),
        (
            "nope.example.com",
            "A",
            "; negative response, fully validated",
        ),
        (
            "static.example.com",
            "TXT",
            "; negative response, fully validated",
        ),
        (
            "sub.example.com",
            "DS",
            "; negative response, fully validated",
        ),
    ] {
        for server in [vantage.dns, second.dns] {
            let out = delv(dir.path(), server, &anchors[0], name, rtype);
            assert!(
                out.contains(expect),
                "delv {name} {rtype} at {server}:\n{out}"
            );
        }
    }

    // A failover: the new answer validates within the record's TTL (2 s).
    backends[0].set(Mode::Status(503));
    let failed = tokio::time::Instant::now();
    eventually(
        Duration::from_secs(10),
        "vantage to answer secondary",
        || async {
            let m = udp_query(
                vantage.dns,
                &do_query("www.example.com.", RecordType::A, false),
            )
            .await;
            (addresses(&m) == [std::net::IpAddr::V4(ips[1])]).then_some(())
        },
    )
    .await;
    let switched = failed.elapsed();
    eventually(
        Duration::from_secs(6),
        "unbound to validate the new answer",
        || async {
            let answer = secure(r, "www.example.com.", RecordType::A, NoError).await;
            (answer == [ips[1].to_string()]).then_some(())
        },
    )
    .await;
    assert!(
        failed.elapsed() < switched + Duration::from_secs(4),
        "validated {:?} after the failure, vantage switched at {switched:?}",
        failed.elapsed()
    );

    // Bogus: a trust anchor that is not our key's (one digit of the digest changed).
    let mut wrong = anchors[0].clone();
    let last = wrong.pop().expect("digit");
    wrong.push(if last == '0' { '1' } else { '0' });
    let bogus = unbound(
        dir.path(),
        &[wrong.clone()],
        &[("example.com", vantage.dns)],
    )
    .await;
    let m = validate(bogus.addr, "static.example.com.", RecordType::A).await;
    assert_eq!(m.metadata.response_code, ResponseCode::ServFail, "{m:?}");
    let out = delv(dir.path(), vantage.dns, &wrong, "static.example.com", "A");
    assert!(!out.contains("fully validated"), "{out}");
}

/// The structure of a signed response: rcode, AA, and per section the (owner, type) of each
/// record, with the covered type, algorithm and label count of each RRSIG and the next name of
/// each NSEC. Bitmaps are returned apart.
type Shape = (String, Vec<String>, Vec<String>);

/// An NSEC's owner and the types of its bitmap.
type Bitmap = (String, Vec<String>);

fn signed_shape(m: &Message, skip_rrsig_of: &[(String, String)]) -> (Shape, Vec<Bitmap>) {
    let mut bitmaps = Vec::new();
    let mut section = |records: Vec<(String, String, String)>| {
        let mut out: Vec<String> = records
            .into_iter()
            .filter_map(|(owner, rtype, data)| {
                let fields: Vec<&str> = data.split_whitespace().collect();
                match rtype.as_str() {
                    "RRSIG" => {
                        if skip_rrsig_of.contains(&(owner.clone(), fields[0].to_string())) {
                            return None;
                        }
                        Some(format!(
                            "{owner} RRSIG {} alg={} labels={}",
                            fields[0], fields[1], fields[2]
                        ))
                    }
                    "NSEC" => {
                        bitmaps.push((
                            owner.clone(),
                            fields[1..].iter().map(|s| s.to_string()).collect(),
                        ));
                        Some(format!(
                            "{owner} NSEC next={}",
                            fields[0].to_ascii_lowercase()
                        ))
                    }
                    _ => Some(format!("{owner} {rtype}")),
                }
            })
            .collect();
        out.sort();
        out.dedup();
        out
    };
    let answer = section(records(&m.answers));
    let authority = section(records(&m.authorities));
    (
        (
            format!(
                "rcode={:?} aa={}",
                m.metadata.response_code, m.metadata.authoritative
            ),
            answer,
            authority,
        ),
        bitmaps,
    )
}

/// The same signed zone served by vantage and by Knot with `mod-onlinesign`: every response to
/// a DO query has the same structure (records, RRSIGs with their algorithm and labels, NSEC
/// owners and next names). Allowed differences, each by the RFC named: the CNAME synthesized
/// from a DNAME is not signed by vantage (RFC 6672 section 5.3.2: validators synthesize it from
/// the signed DNAME); NSEC bitmaps of vantage list exactly the name's types, with NXNAME for a
/// name that does not exist (RFC 9824 sections 3.1 and 3.2), where Knot 3.2, older than RFC
/// 9824, lists a fixed set of types; both leave the type asked out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signed_answers_have_the_structure_of_knots_online_signing() {
    init();
    let dir = workdir();
    std::fs::write(dir.path().join("zones/example.com.zone"), PARENT_ZONE).expect("zone");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("check target");
    let check_port = listener.local_addr().expect("addr").port();
    let key = keygen(dir.path(), "example.com.pem", "ecdsap256sha256");
    let path = dir.path().join("fleet.toml");
    std::fs::write(
        &path,
        format!(
            "[[prober]]\nregion = \"a\"\n[check.t]\nprotocol = \"tcp\"\nport = {check_port}\ninterval = \"200ms\"\ntimeout = \"150ms\"\nrise = 1\n\
             [dns]\nlisten = [\"127.0.0.1:0\"]\n[admin]\nlisten = \"127.0.0.1:0\"\n\
             [dns.dnssec.\"example.com\"]\nkeys = [{{ file = \"{key}\" }}]\n\
             [[record]]\nname = \"www.example.com\"\nttl = 3600\nendpoints = [{{ address = \"192.0.2.10\", check_address = \"127.0.0.1\" }}]\n"
        ),
    )
    .expect("config");
    let vantage = Vantage::dns(&path, dir.path());
    vantage.wait_ready().await;
    let knot = knot_onlinesign(
        dir.path(),
        "example.com",
        &format!("{PARENT_ZONE}www IN A 192.0.2.10\n"),
    )
    .await;
    // The types each name has, for the bitmaps.
    let truth: &[(&str, &[&str])] = &[
        ("static.example.com.", &["A"]),
        ("www.example.com.", &["A"]),
        ("x.wild.example.com.", &["A"]),
        ("ent.example.com.", &[]),
        ("sub.example.com.", &["NS"]),
        ("example.com.", &["SOA", "NS", "DNSKEY", "CDS", "CDNSKEY"]),
    ];
    let queries: &[(&str, RecordType)] = &[
        ("static.example.com.", RecordType::A),
        ("StAtIc.example.com.", RecordType::A),
        ("www.example.com.", RecordType::A),
        ("mail.example.com.", RecordType::MX),
        ("alias.example.com.", RecordType::A),
        ("chain.example.com.", RecordType::A),
        ("x.wild.example.com.", RecordType::A),
        ("y.dn.example.com.", RecordType::A),
        ("example.com.", RecordType::SOA),
        ("example.com.", RecordType::NS),
        ("example.com.", RecordType::DNSKEY),
        ("nope.example.com.", RecordType::A),
        ("a.b.nope.example.com.", RecordType::MX),
        ("x.nope.dn.example.com.", RecordType::A),
        ("static.example.com.", RecordType::TXT),
        ("www.example.com.", RecordType::AAAA),
        ("x.wild.example.com.", RecordType::MX),
        ("ent.example.com.", RecordType::A),
        ("example.com.", RecordType::TXT),
        ("sub.example.com.", RecordType::A),
        ("host.sub.example.com.", RecordType::A),
        ("sub.example.com.", RecordType::DS),
        ("static.example.com.", RecordType::NSEC),
        ("ent.example.com.", RecordType::NSEC),
        ("static.example.com.", RecordType::RRSIG),
    ];
    let mut compared = 0;
    for (name, rtype) in queries {
        let query = do_query(name, *rtype, false);
        let ours = tcp_query(vantage.dns, &query).await;
        let theirs = tcp_query(knot.addr, &query).await;
        // The RRSIGs Knot makes for the CNAMEs it synthesizes from DNAMEs.
        let synthesized: Vec<(String, String)> = records(&theirs.answers)
            .into_iter()
            .filter(|(owner, rtype, _)| {
                rtype == "CNAME"
                    && records(&theirs.answers)
                        .iter()
                        .any(|(o, t, _)| t == "DNAME" && owner.ends_with(&format!(".{o}")))
            })
            .map(|(owner, _, _)| (owner, "CNAME".to_string()))
            .collect();
        let (our_shape, our_bitmaps) = signed_shape(&ours, &[]);
        let (their_shape, their_bitmaps) = signed_shape(&theirs, &synthesized);
        assert_eq!(our_shape, their_shape, "{name} {rtype}");
        assert_eq!(our_bitmaps.len(), their_bitmaps.len(), "{name} {rtype}");
        for ((owner, ours), (their_owner, theirs)) in our_bitmaps.iter().zip(&their_bitmaps) {
            assert_eq!(owner, their_owner, "{name} {rtype}");
            for bitmap in [ours, theirs] {
                assert!(
                    bitmap.iter().any(|t| t == "RRSIG") && bitmap.iter().any(|t| t == "NSEC"),
                    "{name} {rtype}: {bitmap:?}"
                );
                // A NODATA proof leaves out the type asked (the NSEC asked for lists itself).
                assert!(
                    *rtype == RecordType::NSEC || !bitmap.contains(&rtype.to_string()),
                    "{name} {rtype}: {bitmap:?}"
                );
            }
            // Ours: exactly the name's types, or NXNAME where it does not exist.
            let mut expected: Vec<String> = match truth.iter().find(|(n, _)| n == owner) {
                Some((_, types)) => types
                    .iter()
                    .filter(|t| **t != rtype.to_string())
                    .map(|t| t.to_string())
                    .collect(),
                None => vec!["TYPE128".to_string()],
            };
            expected.extend(["RRSIG".to_string(), "NSEC".to_string()]);
            let mut got = ours.clone();
            got.sort();
            expected.sort();
            assert_eq!(got, expected, "{name} {rtype}: the bitmap of {owner}");
        }
        compared += 1;
    }
    assert_eq!(compared, queries.len());
}

/// A signed zone whose keys a test changes: the zone file, the configuration and the server.
struct Rolling {
    dir: tempfile::TempDir,
    path: std::path::PathBuf,
    vantage: Vantage,
}

impl Rolling {
    /// Serves `example.com` (every TTL `ttl` seconds) signed with `keys` (TOML inline tables).
    async fn start(ttl: u32, keys: &[String]) -> Rolling {
        let dir = workdir();
        std::fs::write(
            dir.path().join("zones/example.com.zone"),
            PARENT_ZONE
                .replace("$TTL 3600", &format!("$TTL {ttl}"))
                .replace(
                    "( 7 3600 600 604800 60 )",
                    &format!("( 7 {ttl} 600 604800 {ttl} )"),
                ),
        )
        .expect("zone");
        let path = dir.path().join("fleet.toml");
        Self::write(&path, dir.path(), keys);
        let vantage = Vantage::dns(&path, dir.path());
        vantage.wait_ready().await;
        Rolling { dir, path, vantage }
    }

    fn write(path: &Path, dir: &Path, keys: &[String]) {
        std::fs::write(
            path,
            format!(
                "[[prober]]\nregion = \"a\"\n[dns]\nlisten = [\"127.0.0.1:0\"]\nzones_dir = \"{}\"\n[admin]\nlisten = \"127.0.0.1:0\"\n[dns.dnssec.\"example.com\"]\nkeys = [{}]\n",
                dir.join("zones").display(),
                keys.join(", ")
            ),
        )
        .expect("config");
    }

    fn key(&self, name: &str) -> String {
        keygen(self.dir.path(), name, "ecdsap256sha256")
    }

    /// Writes the new key list, reloads (SIGHUP) and waits until vantage serves `dnskeys` keys.
    async fn roll(&self, keys: &[String], dnskeys: usize) {
        Self::write(&self.path, self.dir.path(), keys);
        let (code, out, err) =
            run_vantage(&["check-config", self.path.to_str().expect("path")], &[]);
        assert_eq!(code, 0, "{out}{err}");
        let reloads = || async {
            let (_, text) = self.vantage.get("/metrics").await;
            Exposition::parse(&text)
                .value("vantage_config_reloads_total", &[("result", "success")])
                .unwrap_or(0.0)
        };
        let before = reloads().await;
        self.vantage.signal("HUP");
        eventually(Duration::from_secs(10), "the reload", || async {
            (reloads().await > before).then_some(())
        })
        .await;
        assert_eq!(self.served(RecordType::DNSKEY).await.len(), dnskeys);
    }

    /// What vantage itself serves for example.com/`rtype`.
    async fn served(&self, rtype: RecordType) -> Vec<String> {
        let m = tcp_query(self.vantage.dns, &do_query("example.com.", rtype, false)).await;
        records(&m.answers)
            .into_iter()
            .filter(|(_, t, _)| *t == rtype.to_string())
            .map(|(_, _, d)| d)
            .collect()
    }

    /// The key tags of the RRSIGs vantage serves with static.example.com/A.
    async fn signing_tags(&self) -> Vec<String> {
        let m = tcp_query(
            self.vantage.dns,
            &do_query("static.example.com.", RecordType::A, false),
        )
        .await;
        let mut tags: Vec<String> = records(&m.answers)
            .into_iter()
            .filter(|(_, t, _)| t == "RRSIG")
            .map(|(_, _, d)| d.split_whitespace().nth(6).unwrap_or_default().to_string())
            .collect();
        tags.sort();
        tags
    }
}

/// The key tag `vantage dnssec keygen` printed into a DS line (its first field).
fn tag_of(ds: &str) -> String {
    ds.split(" DS ")
        .nth(1)
        .expect("DS")
        .split_whitespace()
        .next()
        .expect("tag")
        .to_string()
}

/// Validates a name unbound cannot have cached (a new wildcard expansion each time).
async fn fresh_name_validates(resolver: SocketAddr, n: &mut u32) -> bool {
    *n += 1;
    let m = validate(resolver, &format!("n{n}.wild.example.com."), RecordType::A).await;
    m.metadata.response_code == ResponseCode::NoError && m.metadata.authentic_data
}

/// Polls until unbound's own view of the DNSKEY set has `count` keys, checking at every poll
/// that answers still validate (a rollover must never break validation).
async fn resolver_sees_keys(resolver: SocketAddr, count: usize, n: &mut u32) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        assert!(fresh_name_validates(resolver, n).await, "validation broke");
        let keys = secure(
            resolver,
            "example.com.",
            RecordType::DNSKEY,
            ResponseCode::NoError,
        )
        .await;
        if keys.len() == count {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "unbound still sees {} keys",
            keys.len()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// A ZSK rollover by pre-publication, step by step as README describes it, through reloads,
/// with a validating resolver that caches the DNSKEY set: validation never breaks, and at each
/// step the resolver's own view of the keys is the one the step publishes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_zsk_rollover_by_pre_publication_keeps_validating() {
    init();
    let ttl = 4;
    let keygen_in = tempfile::tempdir().expect("tempdir");
    let ksk = keygen(keygen_in.path(), "ksk.pem", "ecdsap256sha256");
    let zsk1 = keygen(keygen_in.path(), "zsk1.pem", "ecdsap256sha256");
    let entry = |file: &str, role: &str, state: &str| {
        format!("{{ file = \"{file}\", role = \"{role}\", state = \"{state}\" }}")
    };
    let ksk_entry = entry(&ksk, "ksk", "active");
    let zone = Rolling::start(ttl, &[ksk_entry.clone(), entry(&zsk1, "zsk", "active")]).await;
    let zsk2 = zone.key("zsk2.pem");
    let anchors = ds_records(&zone.path, "example.com");
    assert_eq!(anchors.len(), 1, "only the KSK has a DS: {anchors:?}");
    let resolver = unbound(
        zone.dir.path(),
        &anchors,
        &[("example.com", zone.vantage.dns)],
    )
    .await;
    let r = resolver.addr;
    let mut n = 0;
    resolver_sees_keys(r, 2, &mut n).await;
    let before = zone.signing_tags().await;
    assert_eq!(before.len(), 1, "{before:?}");

    // 1. Publish the new ZSK; the old one still signs. Wait until resolvers have it (the
    //    DNSKEY TTL): here, until unbound's answer shows it.
    zone.roll(
        &[
            ksk_entry.clone(),
            entry(&zsk1, "zsk", "active"),
            entry(&zsk2, "zsk", "published"),
        ],
        3,
    )
    .await;
    assert_eq!(zone.signing_tags().await, before);
    resolver_sees_keys(r, 3, &mut n).await;
    // 2. The new ZSK signs; the old one stays published until its signatures expire from
    //    caches (the largest TTL of the zone).
    zone.roll(
        &[
            ksk_entry.clone(),
            entry(&zsk1, "zsk", "published"),
            entry(&zsk2, "zsk", "active"),
        ],
        3,
    )
    .await;
    let after = zone.signing_tags().await;
    assert_eq!(after.len(), 1);
    assert_ne!(after, before, "the new ZSK signs");
    for _ in 0..5 {
        assert!(fresh_name_validates(r, &mut n).await, "validation broke");
    }
    // 3. The old ZSK goes.
    zone.roll(&[ksk_entry.clone(), entry(&zsk2, "zsk", "active")], 2)
        .await;
    resolver_sees_keys(r, 2, &mut n).await;
}

/// A CSK rollover by double signature: the new CSK signs beside the old one, the parent's DS
/// moves to it (here: a resolver trusting only the new DS), then the old CSK goes. Resolvers
/// trusting either DS validate while both sign; CDS follows the keys.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_csk_rollover_by_double_signature_keeps_validating() {
    init();
    let keygen_in = tempfile::tempdir().expect("tempdir");
    let csk1 = keygen(keygen_in.path(), "csk1.pem", "ecdsap256sha256");
    let entry = |file: &str| format!("{{ file = \"{file}\" }}");
    let zone = Rolling::start(4, &[entry(&csk1)]).await;
    let old_ds = ds_records(&zone.path, "example.com");
    assert_eq!(old_ds.len(), 1);
    let old = unbound(
        zone.dir.path(),
        &old_ds,
        &[("example.com", zone.vantage.dns)],
    )
    .await;
    let mut n = 0;
    resolver_sees_keys(old.addr, 1, &mut n).await;

    // 1. The new CSK signs too: two RRSIGs per RRset, two CDS.
    let csk2 = zone.key("csk2.pem");
    zone.roll(&[entry(&csk1), entry(&csk2)], 2).await;
    assert_eq!(zone.signing_tags().await.len(), 2);
    let both = ds_records(&zone.path, "example.com");
    assert_eq!(both.len(), 2);
    let new_ds: Vec<String> = both.into_iter().filter(|d| *d != old_ds[0]).collect();
    assert_eq!(new_ds.len(), 1);
    assert_eq!(zone.served(RecordType::CDS).await.len(), 2);
    resolver_sees_keys(old.addr, 2, &mut n).await;
    // 2. The parent's DS is the new one: resolvers that trust it validate.
    let new = unbound(
        zone.dir.path(),
        &new_ds,
        &[("example.com", zone.vantage.dns)],
    )
    .await;
    resolver_sees_keys(new.addr, 2, &mut n).await;
    // 3. The old CSK goes.
    zone.roll(&[entry(&csk2)], 1).await;
    let tags = zone.signing_tags().await;
    assert_eq!(tags, [tag_of(&new_ds[0])]);
    assert_eq!(zone.served(RecordType::CDS).await.len(), 1);
    resolver_sees_keys(new.addr, 1, &mut n).await;
}

/// The metrics of signing (signatures made, cache hits, the earliest expiry and the refresh
/// period), answers to queries without DO left as they were (NXDOMAIN stays NXDOMAIN), the CO
/// flag (RFC 9824 section 4), and bad keys: check-config names the setting and its line, the
/// zone file's own DNSSEC records are refused by file and name, and a reload with a bad key
/// keeps signing with the last good one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signing_metrics_plain_answers_and_bad_keys() {
    init();
    let dir = workdir();
    std::fs::write(dir.path().join("zones/example.com.zone"), PARENT_ZONE).expect("zone");
    let key = keygen(dir.path(), "example.com.pem", "ecdsap256sha256");
    let path = dir.path().join("fleet.toml");
    let config = |key: &str| {
        format!(
            "[[prober]]\nregion = \"a\"\n[dns]\nlisten = [\"127.0.0.1:0\"]\n[admin]\nlisten = \"127.0.0.1:0\"\n\n[dns.dnssec.\"example.com\"]\nkeys = [{{ file = \"{key}\" }}]\n"
        )
    };
    std::fs::write(&path, config(&key)).expect("config");
    let vantage = Vantage::dns(&path, dir.path());
    vantage.wait_ready().await;

    // Without DO: unsigned, and a name that does not exist is NXDOMAIN.
    for edns in [false, true] {
        let m = udp_query(
            vantage.dns,
            &query_message("nope.example.com.", RecordType::A, edns),
        )
        .await;
        assert_eq!(m.metadata.response_code, ResponseCode::NXDomain);
        assert!(
            records(&m.authorities).iter().all(|(_, t, _)| t == "SOA"),
            "{m:?}"
        );
    }
    // With DO: a compact answer (NOERROR, NSEC with NXNAME); with DO and CO: NXDOMAIN, CO
    // echoed.
    let m = udp_query(
        vantage.dns,
        &do_query("nope.example.com.", RecordType::A, false),
    )
    .await;
    assert_eq!(m.metadata.response_code, ResponseCode::NoError);
    let nsec: Vec<_> = records(&m.authorities)
        .into_iter()
        .filter(|(_, t, _)| t == "NSEC")
        .collect();
    assert_eq!(
        nsec,
        [(
            "nope.example.com.".to_string(),
            "NSEC".to_string(),
            "\\000.nope.example.com. RRSIG NSEC TYPE128".to_string()
        )]
    );
    let mut with_co = do_query("nope.example.com.", RecordType::A, false);
    with_co.edns.as_mut().expect("edns").flags_mut().z = 0x4000;
    let m = udp_query(vantage.dns, &with_co).await;
    assert_eq!(m.metadata.response_code, ResponseCode::NXDomain);
    assert!(records(&m.authorities).iter().any(|(_, t, _)| t == "NSEC"));
    assert_eq!(m.edns.as_ref().expect("edns").flags().z & 0x4000, 0x4000);

    // Metrics: signatures made, then served from the cache (over TCP, no answer cache).
    for _ in 0..3 {
        tcp_query(
            vantage.dns,
            &do_query("static.example.com.", RecordType::A, false),
        )
        .await;
    }
    let zone = [("zone", "example.com")];
    let metrics = || async {
        let (_, text) = vantage.get("/metrics").await;
        Exposition::parse(&text)
    };
    let m = metrics().await;
    assert!(
        m.value("vantage_dnssec_signatures_total", &zone)
            .unwrap_or(0.0)
            >= 1.0
    );
    assert!(
        m.value("vantage_dnssec_signature_cache_hits_total", &zone)
            .unwrap_or(0.0)
            >= 2.0
    );
    let expiry = eventually(
        Duration::from_secs(15),
        "the signature cache's sweep",
        || async {
            metrics().await.value(
                "vantage_dnssec_signature_expiry_earliest_timestamp_seconds",
                &zone,
            )
        },
    )
    .await;
    let now = vantage::clock::unix_ms() as f64 / 1000.0;
    let day = 86_400.0;
    assert!(
        expiry > now + 7.0 * day && expiry < now + 14.0 * day + 60.0,
        "earliest expiry {expiry}, now {now}"
    );
    let m = metrics().await;
    assert_eq!(
        m.value("vantage_dnssec_signature_refresh_seconds", &zone),
        Some(7.0 * day)
    );
    assert_eq!(
        m.value("vantage_dnssec_signing_failures_total", &zone),
        Some(0.0)
    );
    assert!(
        m.value("vantage_dnssec_signature_cache_entries", &zone)
            .unwrap_or(0.0)
            >= 1.0
    );

    // A bad key: check-config names the setting and its line; a reload keeps the old key.
    let tags = || async {
        let m = tcp_query(
            vantage.dns,
            &do_query("static.example.com.", RecordType::A, false),
        )
        .await;
        records(&m.answers)
            .into_iter()
            .filter(|(_, t, _)| t == "RRSIG")
            .map(|(_, _, d)| d.split_whitespace().nth(6).unwrap_or_default().to_string())
            .collect::<Vec<_>>()
    };
    let before = tags().await;
    assert_eq!(before.len(), 1);
    let bad = dir.path().join("bad.pem");
    std::fs::write(
        &bad,
        "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
    )
    .expect("bad key");
    let ed25519 = keygen(dir.path(), "ed.pem", "ed25519");
    for (file, expect) in [
        (
            bad.display().to_string(),
            "not an ecdsap256sha256 or ed25519 private key",
        ),
        (
            dir.path().join("missing.pem").display().to_string(),
            "cannot read",
        ),
        (
            ed25519,
            "the key is ed25519, but the zone's algorithm is ecdsap256sha256",
        ),
    ] {
        std::fs::write(&path, config(&file)).expect("config");
        let (code, out, err) = run_vantage(&["check-config", path.to_str().expect("path")], &[]);
        assert_ne!(code, 0);
        let all = format!("{out}{err}");
        assert!(
            all.contains("line 9: dns.dnssec.\"example.com\".keys[0].file") && all.contains(expect),
            "{all}"
        );
    }
    let reloads = |result: &'static str| async move {
        metrics()
            .await
            .value("vantage_config_reloads_total", &[("result", result)])
            .unwrap_or(0.0)
    };
    let failures = reloads("failure").await;
    vantage.signal("HUP");
    eventually(Duration::from_secs(10), "the reload to fail", || async {
        (reloads("failure").await > failures).then_some(())
    })
    .await;
    assert_eq!(tags().await, before, "still signed with the last good key");

    // The zone file's own DNSSEC records, and a signed zone without a zone file.
    std::fs::write(&path, config(&key)).expect("config");
    std::fs::write(
        dir.path().join("zones/example.com.zone"),
        format!("{PARENT_ZONE}@ IN DNSKEY 257 3 13 AQID\n"),
    )
    .expect("zone");
    let (code, out, err) = run_vantage(&["check-config", path.to_str().expect("path")], &[]);
    assert_ne!(code, 0);
    assert!(
        format!("{out}{err}").contains(
            "example.com.zone: example.com. has a DNSKEY record, but vantage signs this zone online"
        ),
        "{out}{err}"
    );
    std::fs::write(
        &path,
        config(&key).replace("dnssec.\"example.com\"", "dnssec.\"example.org\""),
    )
    .expect("config");
    let (code, out, err) = run_vantage(&["check-config", path.to_str().expect("path")], &[]);
    assert_ne!(code, 0);
    assert!(
        format!("{out}{err}")
            .contains("dns.dnssec.\"example.org\": there is no zone file for this zone"),
        "{out}{err}"
    );
}
