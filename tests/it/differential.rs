//! Differential testing: the same zone served by vantage and by Knot DNS (installed by
//! tests/run), the same queries over UDP, the responses compared section by section.
//! A managed record is compared with Knot serving the same data statically.

use std::{
    net::SocketAddr,
    process::{Child, Command, Stdio},
    time::Duration,
};

use hickory_proto::{
    op::Message,
    rr::{Record, RecordType},
};

use crate::support::*;

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
"#;

struct Knot {
    child: Child,
    addr: SocketAddr,
}

impl Drop for Knot {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn knot(dir: &std::path::Path, zone: &str) -> Knot {
    let port = std::net::UdpSocket::bind("127.0.0.1:0")
        .and_then(|s| s.local_addr())
        .expect("free port")
        .port();
    std::fs::create_dir_all(dir.join("knot/zones")).expect("dir");
    std::fs::write(dir.join("knot/zones/example.com.zone"), zone).expect("zone");
    let conf = format!(
        "server:\n    rundir: \"{run}\"\n    listen: 127.0.0.1@{port}\ndatabase:\n    storage: \"{run}\"\nzone:\n  - domain: example.com\n    storage: \"{run}/zones\"\n    file: \"example.com.zone\"\n",
        run = dir.join("knot").display()
    );
    std::fs::write(dir.join("knot/knot.conf"), conf).expect("conf");
    let child = Command::new("/usr/sbin/knotd")
        .args(["-c", dir.join("knot/knot.conf").to_str().expect("path")])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start knotd (tests/run installs the knot package)");
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().expect("addr");
    let probe = query_message("static.example.com.", RecordType::A, false);
    eventually(Duration::from_secs(15), "knotd to answer", || async {
        udp_exchange(
            addr,
            &probe.to_vec().expect("encode"),
            Duration::from_millis(200),
        )
        .await
        .map(|_| ())
    })
    .await;
    Knot { child, addr }
}

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
    let knot = knot(dir.path(), &format!("{BASE_ZONE}www IN A 192.0.2.10\n")).await;

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
    ];
    let mut differences = Vec::new();
    for (name, rtype, edns) in queries {
        let q = query_message(name, *rtype, *edns);
        let ours = shape(&udp_query(vantage.dns, &q).await);
        let theirs = shape(&udp_query(knot.addr, &q).await);
        if ours != theirs {
            differences.push(format!(
                "{name} {rtype}:\n vantage {ours}\n knot    {theirs}"
            ));
        }
    }
    assert!(
        differences.is_empty(),
        "responses differ from Knot:\n{}",
        differences.join("\n\n")
    );
    drop(listener);
}
