//! DNS protocol behaviour over real sockets, for managed and static names.

use std::net::IpAddr;

use hickory_proto::{
    op::{Edns, ResponseCode},
    rr::{RData, RecordType},
};

use crate::support::*;

/// A running vantage with one managed record (`www`, failover over one HTTPS backend).
async fn serve() -> (tempfile::TempDir, Vec<Backend>, Vantage, IpAddr) {
    init();
    let dir = workdir();
    let pki = Pki::new(dir.path());
    let ips = loopback_block();
    let backends = start_backends(&ips[..1], vec![pki.issue(&["www.example.com"])]).await;
    // A wildcard next to a managed name (RFC 4592 cases).
    std::fs::write(
        dir.path().join("zones/example.com.zone"),
        format!("{EXAMPLE_ZONE}*.w IN TXT \"wild\"\n"),
    )
    .expect("zone");
    let path = dir.path().join("fleet.toml");
    std::fs::write(
        &path,
        format!(
            r#"
[[prober]]
region = "a"
[check.web]
port = {port}
interval = "100ms"
timeout = "90ms"
rise = 1
ca_file = "{ca}"
[dns]
listen = ["127.0.0.1:0", "[::1]:0"]
zones_dir = "{zones}"
allow_transfer = ["::1"]
[admin]
listen = "127.0.0.1:0"
[[record]]
name = "www.example.com"
ttl = 20
endpoints = [{{ address = "{ip}" }}]
[[record]]
name = "x.w.example.com"
endpoints = [{{ address = "{ip}" }}]
[[record]]
name = "api.eu.example.com"
endpoints = [{{ address = "{ip}" }}]
"#,
            port = backends[0].addr.port(),
            ca = pki.ca_file.display(),
            zones = dir.path().join("zones").display(),
            ip = ips[0],
        ),
    )
    .expect("config");
    let vantage = Vantage::dns(&path, dir.path());
    vantage.wait_ready().await;
    (dir, backends, vantage, IpAddr::V4(ips[0]))
}

fn soa_in_authority(reply: &hickory_proto::op::Message) -> bool {
    reply
        .authorities
        .iter()
        .any(|r| matches!(r.data, RData::SOA(_)))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn protocol_rules_hold_for_managed_and_static_names() {
    let (_dir, _backends, vantage, ip) = serve().await;
    let dns = vantage.dns;

    // rfc1035: an authoritative answer for a managed name, with the configured TTL.
    let reply = udp_query(
        dns,
        &query_message("www.example.com.", RecordType::A, false),
    )
    .await;
    assert_eq!(reply.metadata.response_code, ResponseCode::NoError);
    assert!(reply.metadata.authoritative);
    assert_eq!(addresses(&reply), vec![ip]);
    assert_eq!(reply.answers[0].ttl, 20);

    // 0x20: the answer owner keeps the query's letter case.
    let reply = udp_query(
        dns,
        &query_message("wWw.ExAmPlE.cOm.", RecordType::A, false),
    )
    .await;
    assert_eq!(reply.answers[0].name.to_ascii(), "wWw.ExAmPlE.cOm.");

    // rfc2308: NODATA for a managed name and another type has the SOA in authority.
    let reply = udp_query(
        dns,
        &query_message("www.example.com.", RecordType::AAAA, false),
    )
    .await;
    assert_eq!(reply.metadata.response_code, ResponseCode::NoError);
    assert!(reply.answers.is_empty());
    assert!(soa_in_authority(&reply), "{reply:?}");

    // rfc2308: NXDOMAIN has the SOA in authority.
    let reply = udp_query(
        dns,
        &query_message("nope.example.com.", RecordType::A, false),
    )
    .await;
    assert_eq!(reply.metadata.response_code, ResponseCode::NXDomain);
    assert!(reply.metadata.authoritative);
    assert!(soa_in_authority(&reply));

    // rfc8020: a name above a managed name exists (empty non-terminal): NODATA, not NXDOMAIN.
    let reply = udp_query(dns, &query_message("eu.example.com.", RecordType::A, false)).await;
    assert_eq!(
        reply.metadata.response_code,
        ResponseCode::NoError,
        "{reply:?}"
    );
    assert!(reply.answers.is_empty());
    assert!(soa_in_authority(&reply));
    let reply = udp_query(
        dns,
        &query_message("api.eu.example.com.", RecordType::A, false),
    )
    .await;
    assert_eq!(addresses(&reply), vec![ip]);

    // rfc4592: a wildcard does not apply to a name that exists (here: a managed one)...
    let reply = udp_query(
        dns,
        &query_message("x.w.example.com.", RecordType::TXT, false),
    )
    .await;
    assert_eq!(reply.metadata.response_code, ResponseCode::NoError);
    assert!(reply.answers.is_empty(), "{reply:?}");
    // ...but does to its non-existent siblings.
    let reply = udp_query(
        dns,
        &query_message("y.w.example.com.", RecordType::TXT, false),
    )
    .await;
    assert_eq!(reply.answers.len(), 1, "{reply:?}");

    // Static NODATA, static answer.
    let reply = udp_query(
        dns,
        &query_message("static.example.com.", RecordType::MX, false),
    )
    .await;
    assert_eq!(reply.metadata.response_code, ResponseCode::NoError);
    assert!(soa_in_authority(&reply));

    // Out of zone: REFUSED.
    let reply = udp_query(
        dns,
        &query_message("www.example.org.", RecordType::A, false),
    )
    .await;
    assert_eq!(reply.metadata.response_code, ResponseCode::Refused);
    // rfc8914: with EDNS, the refusal says why: Not Authoritative (INFO-CODE 20), as Knot and
    // NSD say.
    let bytes = query_message("www.example.org.", RecordType::A, true)
        .to_vec()
        .expect("query");
    let raw = udp_exchange(dns, &bytes, std::time::Duration::from_secs(2))
        .await
        .expect("a reply");
    assert_eq!(raw[3] & 0x0f, 5, "REFUSED");
    assert!(
        raw.windows(6).any(|w| w == [0, 15, 0, 2, 0, 20]),
        "EDE 20 in the OPT: {raw:?}"
    );

    // rfc6891: EDNS in, EDNS out; version 1 gets BADVERS.
    let reply = udp_query(dns, &query_message("www.example.com.", RecordType::A, true)).await;
    assert!(reply.edns.is_some());
    let mut q = query_message("www.example.com.", RecordType::A, false);
    let mut e = Edns::new();
    e.set_version(1);
    q.set_edns(e);
    let reply = udp_query(dns, &q).await;
    assert_eq!(
        reply.metadata.response_code.high(),
        ResponseCode::BADVERS.high(),
        "{reply:?}"
    );

    // IPv6 listeners answer alike.
    let v6 = vantage.dns_all[1];
    assert!(v6.is_ipv6());
    let reply = udp_query(v6, &query_message("www.example.com.", RecordType::A, false)).await;
    assert_eq!(addresses(&reply), vec![ip]);
    let reply = tcp_query(v6, &query_message("www.example.com.", RecordType::A, false)).await;
    assert_eq!(addresses(&reply), vec![ip]);

    // TCP gives the same answers as UDP.
    let reply = tcp_query(
        dns,
        &query_message("www.example.com.", RecordType::A, false),
    )
    .await;
    assert_eq!(addresses(&reply), vec![ip]);

    // rfc5936: AXFR is refused unless allowed (dns.allow_transfer = ["::1"]): from
    // 127.0.0.1 refused, from ::1 over TCP the zone file's records between two SOAs, over UDP
    // refused.
    let axfr = query_message("example.com.", RecordType::AXFR, false);
    let reply = tcp_query(dns, &axfr).await;
    assert_eq!(reply.metadata.response_code, ResponseCode::Refused);
    let v6 = vantage.dns_all[1];
    let reply = tcp_query(v6, &axfr).await;
    assert_eq!(reply.metadata.response_code, ResponseCode::NoError);
    let types: Vec<RecordType> = reply.answers.iter().map(|r| r.record_type()).collect();
    assert_eq!(types.first(), Some(&RecordType::SOA), "{types:?}");
    assert_eq!(types.last(), Some(&RecordType::SOA), "{types:?}");
    assert!(
        reply
            .answers
            .iter()
            .any(|r| r.name.to_ascii() == "ns1.example.com." && r.record_type() == RecordType::A),
        "the zone's records are transferred"
    );
    // AXFR is a TCP exchange (RFC 5936 section 4.2): over UDP, NOTIMP as Knot and NSD say.
    let reply = udp_query(v6, &axfr).await;
    assert_eq!(reply.metadata.response_code, ResponseCode::NotImp);
    let ixfr = query_message("example.com.", RecordType::IXFR, false);
    let reply = tcp_query(dns, &ixfr).await;
    assert_eq!(
        reply.metadata.response_code,
        ResponseCode::Refused,
        "IXFR too"
    );

    // rfc1035: an unknown opcode gets NOTIMP.
    let mut q = query_message("www.example.com.", RecordType::A, false);
    q.metadata.op_code = hickory_proto::op::OpCode::Status;
    let reply = udp_query(dns, &q).await;
    assert_eq!(reply.metadata.response_code, ResponseCode::NotImp);
}
