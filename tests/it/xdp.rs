//! UDP over AF_XDP (`dns.xdp`) on the loopback interface: the same replies as the socket
//! path, byte for byte, over IPv6 (IPv4 replies injected on lo need two sysctls, see README).

use std::{net::SocketAddr, path::Path, time::Duration};

use hickory_proto::{
    op::{Edns, Message},
    rr::RecordType,
    serialize::binary::BinEncodable,
};

use crate::support::*;

fn config(dir: &Path, name: &str, backend: SocketAddr, ip: std::net::Ipv4Addr, xdp: &str) {
    std::fs::write(
        dir.join(name),
        format!(
            r#"
[[prober]]
region = "a"
[check.web]
protocol = "tcp"
port = {port}
interval = "100ms"
rise = 1
[dns]
listen = ["[::1]:0"]
zones_dir = "{zones}"
{xdp}
[admin]
listen = "127.0.0.1:0"
state_dir = "{state}"
[[record]]
name = "www.example.com"
endpoints = [{{ address = "192.0.2.10", check_address = "{ip}" }}]
"#,
            port = backend.port(),
            zones = dir.join("zones").display(),
            state = dir.join(format!("state-{name}")).display(),
        ),
    )
    .expect("config");
}

fn query(name: &str, rtype: RecordType, edns: Option<u16>) -> Vec<u8> {
    let mut message: Message = query_message(name, rtype, false);
    if let Some(size) = edns {
        let mut e = Edns::new();
        e.set_max_payload(size);
        message.set_edns(e);
    }
    message.to_bytes().expect("encode")
}

fn lo_has_program() -> bool {
    let out = std::process::Command::new("ip")
        .args(["link", "show", "dev", "lo"])
        .output()
        .expect("ip link");
    String::from_utf8_lossy(&out.stdout).contains("vantage_dns")
}

#[tokio::test]
async fn xdp_path_replies_like_the_socket_path() {
    if needs_root("xdp_path_replies_like_the_socket_path (an XDP program and AF_XDP sockets)") {
        return;
    }
    init();
    let dir = workdir();
    let ips = loopback_block();
    // A TCP listener as the one endpoint's check target.
    let target = tokio::net::TcpListener::bind((ips[0], 0))
        .await
        .expect("bind");
    let backend = target.local_addr().expect("addr");
    tokio::spawn(async move {
        loop {
            let _ = target.accept().await;
        }
    });
    // A TXT that fits a frame (about 3 KB) and one that does not (about 6 KB).
    let strings = |n: usize| vec![format!("\"{}\"", "t".repeat(250)); n].join(" ");
    std::fs::write(
        dir.path().join("zones/example.com.zone"),
        format!(
            "{EXAMPLE_ZONE}big IN TXT {}\nhuge IN TXT {}\nalias IN CNAME static\n",
            strings(12),
            strings(24)
        ),
    )
    .expect("zone");
    // A server maximum above the 1232-byte default, so that replies too big for a frame exist.
    let big = "max_udp_payload = 65535";
    config(dir.path(), "sockets.toml", backend, ips[0], big);
    config(
        dir.path(),
        "xdp.toml",
        backend,
        ips[0],
        &format!("xdp = [\"lo\"]\n{big}"),
    );
    let plain = Vantage::dns(&dir.path().join("sockets.toml"), dir.path());
    let fast = Vantage::dns(&dir.path().join("xdp.toml"), dir.path());
    plain.wait_ready().await;
    fast.wait_ready().await;
    assert!(lo_has_program(), "the XDP program is attached to lo");

    let queries = [
        query("static.example.com", RecordType::A, None),
        query("StAtIc.ExAmPlE.cOm", RecordType::A, Some(1232)),
        query("www.example.com", RecordType::A, None),
        query("www.example.com", RecordType::A, None), // from the answer cache
        query("www.example.com", RecordType::AAAA, Some(1232)),
        query("alias.example.com", RecordType::A, None),
        query("nothing.example.com", RecordType::A, None),
        query("example.org", RecordType::A, None),
        query("big.example.com", RecordType::TXT, None), // truncated to 512
        query("big.example.com", RecordType::TXT, Some(4096)),
        query("huge.example.com", RecordType::TXT, Some(65000)), // too big for a frame
    ];
    let timeout = Duration::from_secs(3);
    for (i, bytes) in queries.iter().enumerate() {
        let by_socket = udp_exchange(plain.dns, bytes, timeout)
            .await
            .unwrap_or_else(|| panic!("query {i}: no reply from the socket path"));
        let by_xdp = udp_exchange(fast.dns, bytes, timeout)
            .await
            .unwrap_or_else(|| panic!("query {i}: no reply from the XDP path"));
        assert_eq!(by_xdp, by_socket, "query {i}: replies differ");
    }
    // Not queries: a runt, and a response. No reply, and the path keeps serving.
    assert_eq!(
        udp_exchange(fast.dns, &[1, 2, 3], Duration::from_millis(300)).await,
        None
    );
    let mut response = queries[0].clone();
    response[2] |= 0x80;
    assert_eq!(
        udp_exchange(fast.dns, &response, Duration::from_millis(300)).await,
        None
    );
    assert!(udp_exchange(fast.dns, &queries[0], timeout).await.is_some());

    let (_, text) = fast.get("/metrics").await;
    let metrics = Exposition::parse(&text);
    let count = |outcome: &str| {
        metrics
            .value(
                "vantage_dns_xdp_packets_total",
                &[("interface", "lo"), ("outcome", outcome)],
            )
            .unwrap_or(0.0)
    };
    assert_eq!(count("replied"), queries.len() as f64, "{text}");
    assert_eq!(count("replied_by_socket"), 1.0);
    assert_eq!(count("no_reply"), 2.0);

    // Stopping detaches the program: lo is left as it was.
    let mut fast = fast;
    assert!(fast.terminate().success(), "{}", fast.stderr());
    assert!(!lo_has_program(), "the XDP program is detached at exit");
}

#[test]
fn xdp_on_a_missing_interface_is_a_clear_startup_error() {
    init();
    let dir = workdir();
    let path = dir.path().join("bad.toml");
    std::fs::write(
        &path,
        format!(
            "[[prober]]\nregion = \"a\"\n[check.web]\nprotocol = \"tcp\"\nport = 9\n\
             [dns]\nlisten = [\"[::1]:0\"]\nzones_dir = \"{}\"\nxdp = [\"nosuch0\"]\n\
             [admin]\nlisten = \"127.0.0.1:0\"\nstate_dir = \"{}\"\n",
            dir.path().join("zones").display(),
            dir.path().join("state").display(),
        ),
    )
    .expect("config");
    let (code, _, stderr) = run_vantage(&["dns", "--config", path.to_str().expect("path")], &[]);
    assert_ne!(code, 0);
    assert!(
        stderr.contains("dns.xdp: cannot use on interface \"nosuch0\": no such network interface"),
        "{stderr}"
    );
    let (code, _, stderr) = run_vantage(&["check-config", path.to_str().expect("path")], &[]);
    assert_eq!(
        code, 0,
        "the name is valid; the interface is looked up at start: {stderr}"
    );
    std::fs::write(
        &path,
        std::fs::read_to_string(&path)
            .expect("read")
            .replace("nosuch0", "eth 0"),
    )
    .expect("write");
    let (code, _, stderr) = run_vantage(&["check-config", path.to_str().expect("path")], &[]);
    assert_ne!(code, 0);
    assert!(
        stderr.contains("dns.xdp[0]: \"eth 0\" is not a network interface name"),
        "{stderr}"
    );
}
