//! Differential testing: the same zone served by vantage and by Knot DNS (installed by
//! tests/run), the same queries over UDP, the responses compared section by section.
//! A managed record is compared with Knot serving the same data statically.

use hickory_proto::{
    op::Message,
    rr::{Record, RecordType},
};

use crate::{references::knot, support::*};

const BASE_ZONE: &str = r#"$TTL 3600
@   IN SOA ns1.example.com. hostmaster.example.com. ( 7 3600 600 604800 60 )
@   IN NS  ns1.example.com.
ns1 IN A   127.0.0.1
static IN A 192.0.2.80
static IN AAAA 2001:db8::80
mail IN MX 10 static.example.com.
txt IN TXT "hello world" "second string"
alias IN CNAME static.example.com.
chain IN CNAME alias.example.com.
ext IN CNAME www.example.org.
*.wild IN A 192.0.2.99
deep.ent.example.com. IN A 192.0.2.7
sub IN NS ns.sub.example.com.
ns.sub IN A 192.0.2.53
_sip._tcp IN SRV 10 60 5060 static.example.com.
@ IN CAA 0 issue "letsencrypt.org"
big IN TXT "0000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000"
big IN TXT "1111111111111111111111111111111111111111111111111111111111111111111111111111111111111111111111111111"
big IN TXT "2222222222222222222222222222222222222222222222222222222222222222222222222222222222222222222222222222"
big IN TXT "3333333333333333333333333333333333333333333333333333333333333333333333333333333333333333333333333333"
big IN TXT "4444444444444444444444444444444444444444444444444444444444444444444444444444444444444444444444444444"
big IN TXT "5555555555555555555555555555555555555555555555555555555555555555555555555555555555555555555555555555"
big IN TXT "6666666666666666666666666666666666666666666666666666666666666666666666666666666666666666666666666666"
"#;

/// A response reduced to what must match: rcode, AA, TC, EDNS presence, and each section as a
/// sorted list of records in presentation form (owner case included).
fn shape(m: &Message) -> String {
    let section = |records: &[Record]| {
        let mut v: Vec<String> = records.iter().map(|r| r.to_string()).collect();
        v.sort();
        v.join("\n    ")
    };
    format!(
        "rcode={:?} aa={} tc={} edns={}\n  answer:\n    {}\n  authority:\n    {}\n  additional:\n    {}",
        m.metadata.response_code,
        m.metadata.authoritative,
        m.metadata.truncation,
        m.edns.is_some(),
        section(&m.answers),
        section(&m.authorities),
        section(&m.additionals)
    )
}

/// A truncated response's sections are the server's choice (RFC 2181 9: the client retries
/// over TCP); what must match is everything else, and the sections when not truncated.
fn shape_tc(m: &Message) -> String {
    if m.metadata.truncation {
        format!(
            "rcode={:?} aa={} tc=true edns={}",
            m.metadata.response_code,
            m.metadata.authoritative,
            m.edns.is_some()
        )
    } else {
        shape(m)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vantage_answers_like_knot() {
    init();
    let dir = workdir();
    // vantage: the base zone plus a managed www (one endpoint, checked over TCP and Up).
    std::fs::write(dir.path().join("zones/example.com.zone"), BASE_ZONE).expect("zone");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("check target");
    let check_port = listener.local_addr().expect("addr").port();
    let path = dir.path().join("fleet.toml");
    std::fs::write(
        &path,
        format!(
            "[[prober]]\nregion = \"a\"\n[check.t]\nprotocol = \"tcp\"\nport = {check_port}\ninterval = \"200ms\"\ntimeout = \"150ms\"\nrise = 1\n\
             [dns]\nlisten = [\"127.0.0.1:0\"]\n[admin]\nlisten = \"127.0.0.1:0\"\n\
             [[record]]\nname = \"www.example.com\"\nttl = 3600\nendpoints = [{{ address = \"192.0.2.10\", check_address = \"127.0.0.1\" }}]\n"
        ),
    )
    .expect("config");
    let vantage = Vantage::dns(&path, dir.path());
    vantage.wait_ready().await;
    // Knot: the same data, www static.
    let knot = knot(
        dir.path(),
        "example.com",
        &format!("{BASE_ZONE}www IN A 192.0.2.10\n"),
    )
    .await;

    let queries: &[(&str, RecordType, bool)] = &[
        ("static.example.com.", RecordType::A, false),
        ("static.example.com.", RecordType::AAAA, true),
        ("static.example.com.", RecordType::MX, false),
        ("mail.example.com.", RecordType::MX, true),
        ("txt.example.com.", RecordType::TXT, false),
        ("_sip._tcp.example.com.", RecordType::SRV, false),
        ("example.com.", RecordType::CAA, false),
        ("example.com.", RecordType::NS, false),
        ("nope.example.com.", RecordType::A, true),
        ("alias.example.com.", RecordType::A, false),
        ("chain.example.com.", RecordType::A, false),
        ("ext.example.com.", RecordType::A, false),
        ("x.wild.example.com.", RecordType::A, false),
        ("x.wild.example.com.", RecordType::MX, false),
        ("wild.example.com.", RecordType::A, false),
        ("ent.example.com.", RecordType::A, false),
        ("host.sub.example.com.", RecordType::A, true),
        ("sub.example.com.", RecordType::NS, false),
        ("StAtIc.ExAmPlE.cOm.", RecordType::A, false),
        ("AlIaS.example.com.", RecordType::A, false),
        ("www.example.com.", RecordType::A, true),
        ("www.example.com.", RecordType::AAAA, false),
        ("wWw.example.com.", RecordType::A, false),
        ("www.example.org.", RecordType::A, false),
        ("static.example.com.", RecordType::ANY, false),
        ("www.example.com.", RecordType::ANY, true),
    ];
    let mut differences = Vec::new();
    let mut compare = |what: String, ours: String, theirs: String| {
        if ours != theirs {
            differences.push(format!("{what}:\n vantage {ours}\n knot    {theirs}"));
        }
    };
    for (name, rtype, edns) in queries {
        let q = query_message(name, *rtype, *edns);
        compare(
            format!("{name} {rtype}"),
            shape(&udp_query(vantage.dns, &q).await),
            shape(&udp_query(knot.addr, &q).await),
        );
    }

    // Protocol cases: each query as raw bytes, compared over UDP (and TCP where it says so).
    let unknown_option = {
        let mut q = query_message("static.example.com.", RecordType::A, true);
        if let Some(edns) = q.edns.as_mut() {
            edns.options_mut()
                .insert(hickory_proto::rr::rdata::opt::EdnsOption::Unknown(
                    65001,
                    vec![1, 2, 3],
                ));
        }
        q
    };
    let version_1 = {
        let mut q = query_message("static.example.com.", RecordType::A, true);
        if let Some(edns) = q.edns.as_mut() {
            edns.set_version(1);
        }
        q
    };
    let small_buffer = {
        let mut q = query_message("big.example.com.", RecordType::TXT, true);
        if let Some(edns) = q.edns.as_mut() {
            edns.set_max_payload(512);
        }
        q
    };
    let mut cases: Vec<(&str, Message, bool)> = vec![
        (
            "big TXT without EDNS (truncated over UDP)",
            query_message("big.example.com.", RecordType::TXT, false),
            true,
        ),
        ("big TXT with a 512-byte EDNS buffer", small_buffer, true),
        (
            "big TXT with EDNS 1232",
            query_message("big.example.com.", RecordType::TXT, true),
            true,
        ),
        ("unknown EDNS option", unknown_option, false),
        ("EDNS version 1 (BADVERS)", version_1, false),
        (
            "managed name, other type (NODATA)",
            query_message("www.example.com.", RecordType::TXT, true),
            false,
        ),
        (
            "managed name, MX (NODATA)",
            query_message("www.example.com.", RecordType::MX, false),
            false,
        ),
    ];
    for opcode in [
        hickory_proto::op::OpCode::Status,
        hickory_proto::op::OpCode::Unknown(7),
    ] {
        let mut q = query_message("static.example.com.", RecordType::A, false);
        q.metadata.op_code = opcode;
        cases.push(("unknown opcode (NOTIMP)", q, false));
    }
    for (what, q, tcp_too) in cases {
        compare(
            format!("{what} over UDP"),
            shape_tc(&udp_query(vantage.dns, &q).await),
            shape_tc(&udp_query(knot.addr, &q).await),
        );
        if tcp_too {
            compare(
                format!("{what} over TCP"),
                shape(&tcp_query(vantage.dns, &q).await),
                shape(&tcp_query(knot.addr, &q).await),
            );
        }
    }
    // Transfers are refused by both (Knot says NOTAUTH, vantage REFUSED like BIND and NSD):
    // nobody is in dns.allow_transfer here.
    for rtype in [RecordType::AXFR, RecordType::IXFR] {
        let xfr = query_message("example.com.", rtype, false);
        let ours = tcp_query(vantage.dns, &xfr).await;
        let theirs = tcp_query(knot.addr, &xfr).await;
        assert_eq!(
            ours.metadata.response_code,
            hickory_proto::op::ResponseCode::Refused
        );
        assert!(ours.answers.is_empty(), "{rtype} refused without data");
        assert!(
            matches!(
                theirs.metadata.response_code,
                hickory_proto::op::ResponseCode::Refused | hickory_proto::op::ResponseCode::NotAuth
            ),
            "knot refuses {rtype} too"
        );
    }
    // A name that is no zone's apex: no zone to transfer (NOTAUTH, as Knot; NSD too).
    let xfr = query_message("static.example.com.", RecordType::AXFR, false);
    for server in [vantage.dns, knot.addr] {
        assert_eq!(
            tcp_query(server, &xfr).await.metadata.response_code,
            hickory_proto::op::ResponseCode::NotAuth,
            "{server}"
        );
    }
    assert!(
        differences.is_empty(),
        "responses differ from Knot:\n{}",
        differences.join("\n\n")
    );
    drop(listener);
}
