//! Several `vantage probe` processes and one `vantage dns`, with faults injected by TCP
//! proxies: between each prober and each backend (the prober's view), and between the DNS
//! process and each prober (the exchange).

use std::{
    net::{IpAddr, Ipv4Addr, SocketAddr},
    path::Path,
    time::Duration,
};

use hickory_proto::{
    op::Edns,
    rr::{
        RecordType,
        rdata::opt::{ClientSubnet, EdnsCode, EdnsOption},
    },
};
use tokio::time::Instant;

use crate::support::*;

const REGIONS: [&str; 3] = ["r1", "r2", "r3"];
const TOKEN: &str = "fleet-secret-for-tests-0123456789";

struct Timing {
    interval_ms: u64,
    timeout_ms: u64,
    fall: u64,
    poll_ms: u64,
}

const FAST: Timing = Timing {
    interval_ms: 200,
    timeout_ms: 150,
    fall: 2,
    poll_ms: 200,
};

struct Fleet {
    _dir: tempfile::TempDir,
    backend_ips: [Ipv4Addr; 2],
    _backends: Vec<Backend>,
    /// [region][backend]: the proxy each region's prober dials for each backend.
    views: Vec<Vec<Proxy>>,
    _probers: Vec<Vantage>,
    /// The DNS process's link to each prober.
    links: Vec<Proxy>,
    dns: Vantage,
}

fn config(
    dir: &Path,
    timing: &Timing,
    port: u16,
    urls: &[String],
    check_addresses: [IpAddr; 2],
    backend_ips: [Ipv4Addr; 2],
    extra: &str,
) -> String {
    // Every prober signs with its own key and serves over TLS (keys written beside the
    // configuration by `fleet`).
    let probers: String = REGIONS
        .iter()
        .zip(urls)
        .map(|(r, u)| {
            let identity = std::fs::read_to_string(dir.join(format!("{r}.identity")))
                .expect("prober identity");
            format!("[[prober]]\nregion = \"{r}\"\nurl = \"{u}\"\n{identity}")
        })
        .collect();
    format!(
        r#"
[cluster]
stale_after = "2s"
token_file = "token"
poll_interval = "{poll}ms"
poll_timeout = "500ms"

{probers}
[check.web]
port = {port}
path = "/healthz"
host = "app.test"
interval = "{interval}ms"
timeout = "{timeout}ms"
rise = 2
fall = {fall}
ca_file = "ca.pem"

[dns]
listen = ["127.0.0.1:0"]
zones_dir = "{zones}"
client_regions = {{ "198.51.100.0/24" = "r1", "203.0.113.0/24" = "r2" }}

[admin]
listen = "127.0.0.1:0"

[[record]]
name = "www.example.com"
policy = "failover"
endpoints = [
  {{ name = "a", address = "{a}", site = "r1", check_address = "{ca}" }},
  {{ name = "b", address = "{b}", site = "r2", check_address = "{cb}" }},
]
{extra}
"#,
        extra = extra
            .replace("{A}", &backend_ips[0].to_string())
            .replace("{B}", &backend_ips[1].to_string())
            .replace("{CA}", &check_addresses[0].to_string())
            .replace("{CB}", &check_addresses[1].to_string()),
        poll = timing.poll_ms,
        interval = timing.interval_ms,
        timeout = timing.timeout_ms,
        fall = timing.fall,
        zones = dir.join("zones").display(),
        a = backend_ips[0],
        b = backend_ips[1],
        ca = check_addresses[0],
        cb = check_addresses[1],
    )
}

async fn fleet(timing: &Timing, extra: &str) -> Fleet {
    init();
    let dir = workdir();
    let pki = Pki::new(dir.path());
    std::fs::write(dir.path().join("token"), TOKEN).expect("token");
    let ips = loopback_block();
    let backend_ips = [ips[0], ips[1]];
    let backends = start_backends(
        &backend_ips,
        vec![pki.issue(&["app.test"]), pki.issue(&["app.test"])],
    )
    .await;
    let port = backends[0].addr.port();

    // Where the DNS server reaches each prober (through a proxy the tests can cut): each
    // prober's TLS certificate names that address.
    let link_ips: Vec<Ipv4Addr> = REGIONS.iter().map(|_| loopback_block()[0]).collect();
    for (region, ip) in REGIONS.iter().zip(&link_ips) {
        let identity = keygen(&dir.path().join("keys"), region, Some(&ip.to_string()));
        std::fs::write(dir.path().join(format!("{region}.identity")), identity).expect("identity");
    }
    let mut views = Vec::new();
    let mut probers = Vec::new();
    let placeholder: Vec<String> = link_ips
        .iter()
        .map(|ip| format!("https://{ip}:9/"))
        .collect();
    for region in REGIONS {
        let block = loopback_block();
        let mut view = Vec::new();
        for (i, backend) in backends.iter().enumerate() {
            view.push(
                Proxy::start(SocketAddr::new(IpAddr::V4(block[i]), port), backend.addr).await,
            );
        }
        let path = dir.path().join(format!("{region}.toml"));
        let addresses = [view[0].addr.ip(), view[1].addr.ip()];
        std::fs::write(
            &path,
            config(
                dir.path(),
                timing,
                port,
                &placeholder,
                addresses,
                backend_ips,
                extra,
            ),
        )
        .expect("prober config");
        probers.push(Vantage::start(
            &[
                "probe",
                "--region",
                region,
                "--config",
                path.to_str().expect("path"),
                "--listen",
                &format!("{}:0", block[3]),
            ],
            dir.path(),
        ));
        views.push(view);
    }
    let mut links = Vec::new();
    for (prober, ip) in probers.iter().zip(&link_ips) {
        links.push(Proxy::start(SocketAddr::new(IpAddr::V4(*ip), 0), prober.admin).await);
    }
    let urls: Vec<String> = links
        .iter()
        .map(|l| format!("https://{}/", l.addr))
        .collect();
    let path = dir.path().join("dns.toml");
    let direct = [IpAddr::V4(backend_ips[0]), IpAddr::V4(backend_ips[1])];
    std::fs::write(
        &path,
        config(dir.path(), timing, port, &urls, direct, backend_ips, extra),
    )
    .expect("dns config");
    let dns = Vantage::dns(&path, dir.path());
    dns.wait_ready().await;
    Fleet {
        _dir: dir,
        backend_ips,
        _backends: backends,
        views,
        _probers: probers,
        links,
        dns,
    }
}

impl Fleet {
    async fn www(&self) -> Vec<IpAddr> {
        addresses(
            &udp_query(
                self.dns.dns,
                &query_message("www.example.com.", RecordType::A, false),
            )
            .await,
        )
    }

    fn a(&self) -> IpAddr {
        IpAddr::V4(self.backend_ips[0])
    }

    fn b(&self) -> IpAddr {
        IpAddr::V4(self.backend_ips[1])
    }

    async fn endpoint(&self, id: &str) -> serde_json::Value {
        let status = self.dns.status().await;
        status["endpoints"]
            .as_array()
            .expect("endpoints")
            .iter()
            .find(|e| e["id"] == id)
            .expect("endpoint")
            .clone()
    }

    /// Waits until `region`'s vote on endpoint `id` is fresh and in `state`.
    async fn vote(&self, id: &str, region: &str, state: &str) {
        eventually(
            Duration::from_secs(8),
            &format!("{region} to vote {state} on {id}"),
            || async {
                let e = self.endpoint(id).await;
                e["votes"]
                    .as_array()?
                    .iter()
                    .any(|v| v["region"] == region && v["state"] == state && v["fresh"] == true)
                    .then_some(())
            },
        )
        .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quorum_across_prober_processes_fails_over_only_on_a_quorum_and_fails_static() {
    let fleet = fleet(&FAST, "").await;
    assert_eq!(fleet.www().await, vec![fleet.a()]);
    let status = fleet.dns.status().await;
    assert_eq!(status["quorum"]["state"], "quorum", "{status}");
    assert!(
        status["probers"]
            .as_array()
            .expect("probers")
            .iter()
            .all(|p| p["mode"] == "remote" && p["reachable"] == true)
    );

    // One region loses sight of a: its vote turns Down, the answer stays.
    fleet.views[0][0].set(Link::Cut);
    fleet.vote("a", "r1", "down").await;
    assert_eq!(fleet.endpoint("a").await["verdict"], "up");
    assert_eq!(fleet.www().await, vec![fleet.a()]);
    // r1's suspicion made the DNS server ask the other two prober processes to check a now:
    // a signed `POST /v1/check` each took (at a 200 ms interval their next regular check is
    // about due, so they need not check sooner).
    let (_, dns_metrics) = fleet.dns.get("/metrics").await;
    let sent = Exposition::parse(&dns_metrics);
    for region in ["r2", "r3"] {
        assert!(
            sent.value("vantage_confirmations_asked_total", &[("region", region)])
                .unwrap_or(0.0)
                >= 1.0,
            "{region} asked"
        );
    }
    for i in [1, 2] {
        eventually(
            Duration::from_secs(5),
            "the other probers to take a request to check a now",
            || async {
                // The prober serves TLS with its own certificate (trusted by the DNS server
                // only); this test reads its metrics without checking it.
                let text = reqwest::Client::builder()
                    .danger_accept_invalid_certs(true)
                    .build()
                    .ok()?
                    .get(format!("https://{}/metrics", fleet._probers[i].admin))
                    .send()
                    .await
                    .ok()?
                    .text()
                    .await
                    .ok()?;
                (Exposition::parse(&text)
                    .value("vantage_check_requests_total", &[("result", "queued")])
                    .unwrap_or(0.0)
                    >= 1.0)
                    .then_some(())
            },
        )
        .await;
    }

    // A second region loses sight of it: failover within fall x interval + poll + margin.
    let cut = Instant::now();
    fleet.views[1][0].set(Link::Cut);
    let bound = Duration::from_millis(FAST.fall * FAST.interval_ms + FAST.poll_ms + 1500);
    eventually(bound, "www to fail over to b", || async {
        (fleet.www().await == vec![fleet.b()]).then_some(())
    })
    .await;
    let took = cut.elapsed();
    eprintln!("failover after the second region lost sight: {took:?} (bound {bound:?})");
    let a = fleet.endpoint("a").await;
    assert_eq!(a["verdict"], "down", "{a}");
    assert!(
        a["why"]
            .as_str()
            .expect("why")
            .starts_with("2 of 3 probers report Down"),
        "{a}"
    );

    // Heal: back to a.
    fleet.views[0][0].set(Link::Pass);
    fleet.views[1][0].set(Link::Pass);
    eventually(Duration::from_secs(8), "www to return to a", || async {
        (fleet.www().await == vec![fleet.a()]).then_some(())
    })
    .await;

    // The DNS process loses two of three probers: no quorum, answers do not change, even when
    // the only prober left sees a go Down.
    fleet.links[1].set(Link::Cut);
    fleet.links[2].set(Link::Cut);
    let status = eventually(Duration::from_secs(8), "no quorum", || async {
        let s = fleet.dns.status().await;
        (s["quorum"]["state"] == "no quorum").then_some(s)
    })
    .await;
    assert_eq!(
        status["quorum"]["missing"],
        serde_json::json!(["r2", "r3"]),
        "{status}"
    );
    let r2 = status["probers"]
        .as_array()
        .expect("probers")
        .iter()
        .find(|p| p["region"] == "r2")
        .expect("r2")
        .clone();
    assert_eq!(r2["reachable"], false, "{r2}");
    fleet.views[0][0].set(Link::Cut);
    fleet.vote("a", "r1", "down").await;
    let a = fleet.endpoint("a").await;
    assert_eq!(a["verdict"], "up", "fail static: {a}");
    assert!(
        a["why"].as_str().expect("why").starts_with("no quorum"),
        "{a}"
    );
    assert_eq!(fleet.www().await, vec![fleet.a()]);
    let (_, text) = fleet.dns.get("/metrics").await;
    let metrics = Exposition::parse(&text);
    assert_eq!(metrics.value("vantage_quorum_reached", &[]), Some(0.0));
    assert_eq!(
        metrics.value("vantage_prober_reachable", &[("region", "r2")]),
        Some(0.0)
    );
    assert!(
        metrics
            .value(
                "vantage_prober_polls_total",
                &[("region", "r3"), ("result", "unreachable")]
            )
            .unwrap_or(0.0)
            >= 1.0
    );
    assert!(fleet.dns.stderr().contains("no quorum"), "logged");

    // Heal, then cut one prober off from everything: it is flagged impaired, no failover.
    fleet.views[0][0].set(Link::Pass);
    fleet.links[1].set(Link::Pass);
    fleet.links[2].set(Link::Pass);
    eventually(Duration::from_secs(8), "quorum again", || async {
        (fleet.dns.status().await["quorum"]["state"] == "quorum").then_some(())
    })
    .await;
    fleet.views[2][0].set(Link::Cut);
    fleet.views[2][1].set(Link::Cut);
    let status = eventually(
        Duration::from_secs(8),
        "r3 to be flagged impaired",
        || async {
            let s = fleet.dns.status().await;
            let r3 = s["probers"]
                .as_array()?
                .iter()
                .find(|p| p["region"] == "r3")?
                .clone();
            (r3["impaired"] == true).then_some(s)
        },
    )
    .await;
    assert_eq!(status["quorum"]["impaired"], serde_json::json!(["r3"]));
    assert_eq!(fleet.endpoint("a").await["verdict"], "up");
    assert_eq!(fleet.www().await, vec![fleet.a()]);
    let (_, text) = fleet.dns.get("/metrics").await;
    assert_eq!(
        Exposition::parse(&text).value("vantage_prober_impaired", &[("region", "r3")]),
        Some(1.0)
    );
    assert!(fleet.dns.stderr().contains("prober r3 is impaired"));
}

fn ecs_query(name: &str, subnet: &str) -> hickory_proto::op::Message {
    let mut q = query_message(name, RecordType::A, false);
    let mut edns = Edns::new();
    edns.set_max_payload(1232);
    edns.options_mut()
        .insert(EdnsOption::Subnet(ClientSubnet::new(
            subnet.parse().expect("ip"),
            24,
            0,
        )));
    q.set_edns(edns);
    q
}

fn echoed_scope(reply: &hickory_proto::op::Message) -> Option<u8> {
    match reply.edns.as_ref()?.option(EdnsCode::Subnet)? {
        EdnsOption::Subnet(s) => Some(s.scope_prefix()),
        _ => None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn latency_steering_follows_the_rtt_each_region_measures() {
    let slow = Timing {
        interval_ms: 500,
        timeout_ms: 400,
        fall: 2,
        poll_ms: 200,
    };
    let fleet = fleet(
        &slow,
        r#"
[[record]]
name = "near.example.com"
policy = "latency"
endpoints = [
  { name = "a", address = "{A}", site = "r1", check_address = "{CA}" },
  { name = "b", address = "{B}", site = "r2", check_address = "{CB}" },
]
"#,
    )
    .await;
    let ms = Duration::from_millis;
    // r1 is near a, r2 near b; r3 (no clients mapped to it) makes b the best median.
    fleet.views[0][1].set(Link::Delay(ms(150)));
    fleet.views[1][0].set(Link::Delay(ms(150)));
    fleet.views[2][0].set(Link::Delay(ms(200)));
    fleet.views[2][1].set(Link::Delay(ms(50)));
    let near = |subnet: &'static str| {
        let dns = fleet.dns.dns;
        async move { udp_query(dns, &ecs_query("near.example.com.", subnet)).await }
    };
    eventually(
        Duration::from_secs(15),
        "the latency table to reflect the delays",
        || async {
            let s = fleet.dns.status().await;
            let t = &s["latency_ms"];
            let rtt = |r: &str, e: &str| t[r][e].as_f64();
            let ok = rtt("r1", "a")? + 100.0 < rtt("r1", "b")?
                && rtt("r2", "b")? + 100.0 < rtt("r2", "a")?
                && rtt("r3", "b")? + 100.0 < rtt("r3", "a")?;
            ok.then_some(())
        },
    )
    .await;

    let r1 = near("198.51.100.0").await;
    assert_eq!(addresses(&r1), vec![fleet.a()], "r1 clients get a");
    assert_eq!(
        echoed_scope(&r1),
        Some(24),
        "ECS echoed with the scope used: {r1:?}"
    );
    let r2 = near("203.0.113.0").await;
    assert_eq!(addresses(&r2), vec![fleet.b()], "r2 clients get b");
    assert_eq!(echoed_scope(&r2), Some(24));
    // A client of no known region gets the lowest median RTT across regions: b.
    let other = near("192.0.2.0").await;
    assert_eq!(addresses(&other), vec![fleet.b()]);
    assert_eq!(echoed_scope(&other), Some(24));
    // Without ECS the resolver's address (127.0.0.1, unmapped) decides: also b.
    let plain = udp_query(
        fleet.dns.dns,
        &query_message("near.example.com.", RecordType::A, true),
    )
    .await;
    assert_eq!(addresses(&plain), vec![fleet.b()]);
    assert_eq!(echoed_scope(&plain), None, "no ECS in, none out");
    // An answer that is the same for every client is echoed with scope 0.
    let www = udp_query(
        fleet.dns.dns,
        &ecs_query("www.example.com.", "198.51.100.0"),
    )
    .await;
    assert_eq!(echoed_scope(&www), Some(0));

    // b goes down everywhere: r2 clients move to a.
    for view in &fleet.views {
        view[1].set(Link::Cut);
    }
    eventually(
        Duration::from_secs(8),
        "r2 clients to move to a",
        || async { (addresses(&near("203.0.113.0").await) == vec![fleet.a()]).then_some(()) },
    )
    .await;
}

type FakeResponse = (Option<String>, Vec<u8>, Option<&'static str>);

/// A stand-in for a prober that serves whatever response the test sets.
struct FakeProber {
    addr: SocketAddr,
    /// (signature, body, refusal): with a refusal label, 401 and `x-vantage-refused`.
    response: std::sync::Arc<std::sync::Mutex<FakeResponse>>,
    task: tokio::task::JoinHandle<()>,
}

impl FakeProber {
    async fn start() -> FakeProber {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind((loopback_block()[0], 0))
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let response = std::sync::Arc::new(std::sync::Mutex::new((None, Vec::new(), None)));
        let current = response.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((mut stream, _)) = listener.accept().await else {
                    continue;
                };
                let current = current.clone();
                tokio::spawn(async move {
                    let mut request = Vec::new();
                    let mut buf = [0u8; 1024];
                    while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                        match stream.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => request.extend_from_slice(&buf[..n]),
                        }
                    }
                    let (signature, body, refusal): FakeResponse =
                        current.lock().expect("lock").clone();
                    let status = if refusal.is_some() {
                        "401 Unauthorized"
                    } else {
                        "200 OK"
                    };
                    let mut head = format!(
                        "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n",
                        body.len()
                    );
                    if let Some(label) = refusal {
                        head.push_str(&format!("x-vantage-refused: {label}\r\n"));
                    }
                    if let Some(sig) = signature {
                        head.push_str(&format!("x-vantage-signature: {sig}\r\n"));
                    }
                    head.push_str("\r\n");
                    let _ = stream.write_all(head.as_bytes()).await;
                    let _ = stream.write_all(&body).await;
                });
            }
        });
        FakeProber {
            addr,
            response,
            task,
        }
    }

    fn serve(&self, signature: Option<String>, body: Vec<u8>) {
        *self.response.lock().expect("lock") = (signature, body, None);
    }

    /// Refuses our requests as a prober does, with `label` as the reason.
    fn refuse(&self, label: &'static str) {
        *self.response.lock().expect("lock") = (None, b"refused\n".to_vec(), Some(label));
    }
}

impl Drop for FakeProber {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn report(region: &str, seq: u64) -> Vec<u8> {
    let report = vantage::exchange::wire::Report {
        region: vantage::model::Region::new(region),
        boot_id: 42,
        seq,
        overloaded: false,
        through: None,
        delta: false,
        observations: Vec::new(),
    };
    serde_json::to_vec(&report).expect("encode")
}

fn key(secret: &str) -> vantage::exchange::auth::FleetKey {
    vantage::exchange::auth::FleetKey::new(&vantage::config::Secret::new(secret.as_bytes()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_old_replayed_and_misdirected_reports_are_rejected_and_counted() {
    use vantage::exchange::auth::{REPORT_CONTEXT, unix_ms};
    init();
    let dir = workdir();
    std::fs::write(dir.path().join("token"), TOKEN).expect("token");
    let fake = FakeProber::start().await;
    let path = dir.path().join("dns.toml");
    std::fs::write(
        &path,
        format!(
            "[cluster]\nstale_after = \"2s\"\ntoken_file = \"token\"\npoll_interval = \"100ms\"\npoll_timeout = \"500ms\"\n\
             [[prober]]\nregion = \"r1\"\nurl = \"http://{}/\"\n\
             [dns]\nlisten = [\"127.0.0.1:0\"]\nzones_dir = \"{}\"\n[admin]\nlisten = \"127.0.0.1:0\"\n",
            fake.addr,
            dir.path().join("zones").display()
        ),
    )
    .expect("config");
    let dns = Vantage::dns(&path, dir.path());
    let rejected = |reason: &'static str| {
        let dns = &dns;
        async move {
            let (_, text) = dns.get("/metrics").await;
            Exposition::parse(&text)
                .value(
                    "vantage_prober_reports_rejected_total",
                    &[("region", "r1"), ("reason", reason)],
                )
                .unwrap_or(0.0)
        }
    };
    let good = key(TOKEN);
    let cases: Vec<(&str, Option<String>, Vec<u8>)> = vec![
        ("unauthenticated", None, report("r1", 1)),
        (
            "bad_signature",
            Some(key("not-the-fleet-secret-000000").sign(
                unix_ms(),
                REPORT_CONTEXT,
                &report("r1", 2),
            )),
            report("r1", 2),
        ),
        (
            "bad_signature",
            Some(good.sign(unix_ms(), REPORT_CONTEXT, &report("r1", 3))),
            report("r1", 999),
        ),
        (
            "stale",
            Some(good.sign(unix_ms() - 60_000, REPORT_CONTEXT, &report("r1", 4))),
            report("r1", 4),
        ),
        (
            "wrong_region",
            Some(good.sign(unix_ms(), REPORT_CONTEXT, &report("r2", 5))),
            report("r2", 5),
        ),
    ];
    for (reason, signature, body) in cases {
        let before = rejected(reason).await;
        fake.serve(signature, body);
        eventually(
            Duration::from_secs(5),
            &format!("a report rejected as {reason}"),
            || async { (rejected(reason).await > before).then_some(()) },
        )
        .await;
    }
    // A prober that refuses our request because the clocks differ: counted as a rejection
    // with that reason, not as an unreachable prober.
    let before = rejected("refused_by_prober_stale").await;
    fake.refuse("stale");
    eventually(
        Duration::from_secs(5),
        "a refusal for clock skew counted",
        || async { (rejected("refused_by_prober_stale").await > before).then_some(()) },
    )
    .await;
    let status = dns.status().await;
    assert!(
        status["probers"][0]["last_error"]
            .as_str()
            .is_some_and(|e| e.contains("clocks")),
        "{status}"
    );
    assert!(
        status["probers"][0]["reports_rejected"].as_u64() > Some(5),
        "{status}"
    );
    assert_eq!(status["probers"][0]["reachable"], false, "{status}");
    assert_eq!(
        status["probers"][0]["reports_accepted"], 0,
        "nothing forged was believed: {status}"
    );

    // A genuine report is accepted once; the same report served again is a replay.
    let body = report("r1", 10);
    fake.serve(Some(good.sign(unix_ms(), REPORT_CONTEXT, &body)), body);
    eventually(
        Duration::from_secs(5),
        "the genuine report to be accepted and its replay rejected",
        || async {
            let s = dns.status().await;
            (s["probers"][0]["reports_accepted"] == 1 && rejected("replayed").await >= 1.0)
                .then_some(())
        },
    )
    .await;
    // An older report of the same prober process is a replay too.
    let body = report("r1", 9);
    let before = rejected("replayed").await;
    fake.serve(Some(good.sign(unix_ms(), REPORT_CONTEXT, &body)), body);
    eventually(
        Duration::from_secs(5),
        "an older report to be rejected",
        || async { (rejected("replayed").await > before).then_some(()) },
    )
    .await;
    assert_eq!(dns.status().await["probers"][0]["reports_accepted"], 1);

    // A report that jumps its sequence to the end cannot wedge the region: it is refused, and
    // the next genuine report is accepted.
    let body = report("r1", u64::MAX);
    let before = rejected("replayed").await;
    fake.serve(Some(good.sign(unix_ms(), REPORT_CONTEXT, &body)), body);
    eventually(
        Duration::from_secs(5),
        "a sequence jump to be rejected",
        || async { (rejected("replayed").await > before).then_some(()) },
    )
    .await;
    // Observations of endpoints the configuration does not have are dropped and counted, so
    // that a report cannot grow the board.
    let mut many = vantage::exchange::wire::Report {
        region: vantage::model::Region::new("r1"),
        boot_id: 42,
        seq: 11,
        overloaded: false,
        through: None,
        delta: false,
        observations: Vec::new(),
    };
    for i in 0..1000 {
        many.observations
            .push(vantage::exchange::wire::WireObservation {
                endpoint: vantage::model::EndpointId::new(format!("made-up-{i}")),
                state: vantage::model::Health::Down,
                successes: 0,
                failures: 3,
                last_rtt_ms: None,
                smoothed_rtt_ms: None,
                last_failure: None,
                local_error: None,
                cert_expiry_unix_s: None,
                age_ms: 0,
                overdue: false,
                checks: 1,
            });
    }
    let body = serde_json::to_vec(&many).expect("encode");
    fake.serve(Some(good.sign(unix_ms(), REPORT_CONTEXT, &body)), body);
    eventually(
        Duration::from_secs(5),
        "the next genuine report accepted, its unknown endpoints dropped",
        || async {
            let (_, text) = dns.get("/metrics").await;
            let dropped = Exposition::parse(&text)
                .value(
                    "vantage_prober_report_unknown_endpoints_total",
                    &[("region", "r1")],
                )
                .unwrap_or(0.0);
            (dns.status().await["probers"][0]["reports_accepted"] == 2 && dropped >= 1000.0)
                .then_some(())
        },
    )
    .await;
    assert!(
        !dns.status().await.to_string().contains("made-up-"),
        "unknown endpoints never reach the board"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_prober_serves_its_report_only_to_holders_of_the_fleet_secret() {
    use vantage::exchange::auth::{REPORT_CONTEXT, REQUEST_CONTEXT, unix_ms};
    init();
    let dir = workdir();
    std::fs::write(dir.path().join("token"), TOKEN).expect("token");
    let path = dir.path().join("probe.toml");
    std::fs::write(
        &path,
        "[cluster]\ntoken_file = \"token\"\n[[prober]]\nregion = \"r1\"\n[check.t]\nprotocol = \"tcp\"\nport = 9\n\
         [[record]]\nname = \"www.example.com\"\nendpoints = [{ address = \"127.0.0.1\" }]\n",
    )
    .expect("config");
    let prober = Vantage::probe("r1", &path, Some("127.0.0.1:0"), dir.path());
    // Its listening line names what it serves: reports, not the admin API.
    assert!(
        prober.listening["listening"]["prober"].is_string()
            && prober.listening["listening"]["admin"].is_null(),
        "{}",
        prober.listening
    );
    let get = |auth: Option<String>| {
        let addr = prober.admin;
        async move {
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
            let auth = auth
                .map(|a| format!("x-vantage-auth: {a}\r\n"))
                .unwrap_or_default();
            let req = format!(
                "GET /v1/observations HTTP/1.1\r\nhost: x\r\n{auth}connection: close\r\n\r\n"
            );
            s.write_all(req.as_bytes()).await.expect("write");
            let mut out = Vec::new();
            s.read_to_end(&mut out).await.expect("read");
            String::from_utf8_lossy(&out).to_string()
        }
    };
    assert!(get(None).await.starts_with("HTTP/1.1 401"));
    let wrong = key("not-the-fleet-secret-000000").sign(unix_ms(), REQUEST_CONTEXT, b"");
    assert!(get(Some(wrong)).await.starts_with("HTTP/1.1 401"));
    let old = key(TOKEN).sign(unix_ms() - 3_600_000, REQUEST_CONTEXT, b"");
    let refused = get(Some(old)).await;
    assert!(refused.starts_with("HTTP/1.1 401"), "{refused}");
    assert!(refused.contains("x-vantage-refused: stale"), "{refused}");

    let response = get(Some(key(TOKEN).sign(unix_ms(), REQUEST_CONTEXT, b""))).await;
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    let (head, body) = response.split_once("\r\n\r\n").expect("head and body");
    let signature = head
        .lines()
        .find_map(|l| l.strip_prefix("x-vantage-signature: "))
        .expect("signed report");
    key(TOKEN)
        .verify(
            Some(signature),
            REPORT_CONTEXT,
            body.as_bytes(),
            unix_ms(),
            Duration::from_secs(5),
        )
        .expect("the report verifies with the fleet secret");
    let report: vantage::exchange::wire::Report = serde_json::from_str(body).expect("report JSON");
    assert_eq!(report.region.as_str(), "r1");

    let (_, text) = http_get(prober.admin, "/metrics").await;
    let metrics = Exposition::parse(&text);
    for reason in ["unauthenticated", "bad_signature", "stale"] {
        assert_eq!(
            metrics.value(
                "vantage_observation_requests_rejected_total",
                &[("reason", reason)]
            ),
            Some(1.0),
            "{reason}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stolen_prober_key_moves_one_vote_and_the_fleet_secret_none() {
    use vantage::exchange::auth::{REPORT_CONTEXT, ReportSigner, unix_ms};
    init();
    let dir = workdir();
    std::fs::write(dir.path().join("token"), TOKEN).expect("token");
    let keys = dir.path().join("keys");
    let (f1, f2) = (FakeProber::start().await, FakeProber::start().await);
    let (id1, id2) = (keygen(&keys, "r1", None), keygen(&keys, "r2", None));
    let path = dir.path().join("dns.toml");
    std::fs::write(
        &path,
        format!(
            "[cluster]\nstale_after = \"2s\"\ntoken_file = \"token\"\npoll_interval = \"100ms\"\npoll_timeout = \"500ms\"\n\
             [[prober]]\nregion = \"r1\"\nurl = \"http://{}/\"\n{id1}\
             [[prober]]\nregion = \"r2\"\nurl = \"http://{}/\"\n{id2}\
             [dns]\nlisten = [\"127.0.0.1:0\"]\nzones_dir = \"{}\"\n[admin]\nlisten = \"127.0.0.1:0\"\n",
            f1.addr,
            f2.addr,
            dir.path().join("zones").display()
        ),
    )
    .expect("config");
    let dns = Vantage::dns(&path, dir.path());
    // The attacker holds r1's private key and the fleet secret.
    let stolen = ReportSigner::from_pem_file(&keys.join("r1.key")).expect("r1 key");
    let fleet = key(TOKEN);
    let accepted = |i: usize| {
        let dns = &dns;
        async move { dns.status().await["probers"][i]["reports_accepted"].clone() }
    };
    let rejected = |region: &'static str, reason: &'static str| {
        let dns = &dns;
        async move {
            let (_, text) = dns.get("/metrics").await;
            Exposition::parse(&text)
                .value(
                    "vantage_prober_reports_rejected_total",
                    &[("region", region), ("reason", reason)],
                )
                .unwrap_or(0.0)
        }
    };
    // r1's key speaks for r1: accepted.
    let body = report("r1", 1);
    f1.serve(Some(stolen.sign(unix_ms(), &body)), body);
    // r1's key cannot speak for r2, and neither can the fleet secret.
    let body = report("r2", 1);
    f2.serve(Some(stolen.sign(unix_ms(), &body)), body);
    eventually(
        Duration::from_secs(5),
        "r1's report accepted, r2's forgery with r1's key rejected",
        || async {
            (accepted(0).await == 1 && rejected("r2", "bad_signature").await >= 1.0).then_some(())
        },
    )
    .await;
    let body = report("r2", 2);
    f2.serve(Some(fleet.sign(unix_ms(), REPORT_CONTEXT, &body)), body);
    eventually(
        Duration::from_secs(5),
        "a report signed with the fleet secret rejected",
        || async { (rejected("r2", "malformed_signature").await >= 1.0).then_some(()) },
    )
    .await;
    let status = dns.status().await;
    assert_eq!(status["probers"][1]["reports_accepted"], 0, "{status}");
    assert_eq!(status["probers"][1]["reachable"], false, "{status}");
    // r1's own key signed with the fleet secret is refused too: keys replace the secret.
    let body = report("r1", 5);
    let before = rejected("r1", "malformed_signature").await;
    f1.serve(Some(fleet.sign(unix_ms(), REPORT_CONTEXT, &body)), body);
    eventually(
        Duration::from_secs(5),
        "r1's report signed with the fleet secret rejected",
        || async { (rejected("r1", "malformed_signature").await > before).then_some(()) },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_prober_listener_speaks_tls_and_aggregators_trust_only_its_pinned_certificate() {
    init();
    let dir = workdir();
    std::fs::write(dir.path().join("token"), TOKEN).expect("token");
    let keys = dir.path().join("keys");
    let identity = keygen(&keys, "r1", Some("127.0.0.1"));
    let probe = dir.path().join("probe.toml");
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("port");
    let port = listener.local_addr().expect("addr").port();
    drop(listener);
    let common = "[check.t]\nprotocol = \"tcp\"\nport = 9\ninterval = \"200ms\"\ntimeout = \"100ms\"\n\
                  [dns]\nlisten = [\"127.0.0.1:0\"]\n[admin]\nlisten = \"127.0.0.1:0\"\n\
                  [[record]]\nname = \"www.example.com\"\nendpoints = [{ address = \"127.0.0.1\" }]\n";
    std::fs::write(
        &probe,
        format!(
            "[cluster]\ntoken_file = \"token\"\nstale_after = \"2s\"\npoll_interval = \"100ms\"\npoll_timeout = \"500ms\"\n\
             [[prober]]\nregion = \"r1\"\nurl = \"https://127.0.0.1:{port}/\"\n{identity}{common}"
        ),
    )
    .expect("config");
    let prober = Vantage::probe("r1", &probe, None, dir.path());
    // Plain HTTP gets no report.
    let plain = reqwest::Client::new()
        .get(format!("http://{}/livez", prober.admin))
        .send()
        .await;
    assert!(
        plain.map_or(true, |r| !r.status().is_success()),
        "the prober answered plain HTTP"
    );
    // An aggregator that pins the prober's certificate pulls its reports...
    let dns = Vantage::dns(&probe, dir.path());
    eventually(
        Duration::from_secs(10),
        "reports pulled over TLS",
        || async {
            (dns.status().await["probers"][0]["reports_accepted"].as_u64()? >= 1).then_some(())
        },
    )
    .await;
    // ... one that pins another certificate (a man in the middle's) refuses the connection.
    let other = keygen(&dir.path().join("other"), "r1", Some("127.0.0.1"));
    let cert_line = |text: &str| {
        text.lines()
            .find(|l| l.starts_with("tls_cert_file"))
            .expect("cert line")
            .to_string()
    };
    let mitm = dir.path().join("mitm.toml");
    std::fs::write(
        &mitm,
        std::fs::read_to_string(&probe)
            .expect("read")
            .replace(&cert_line(&identity), &cert_line(&other)),
    )
    .expect("config");
    let wary = Vantage::dns(&mitm, dir.path());
    let error = eventually(Duration::from_secs(10), "the pull refused", || async {
        let status = wary.status().await;
        let error = status["probers"][0]["last_error"].as_str()?.to_string();
        assert_eq!(status["probers"][0]["reports_accepted"], 0, "{status}");
        Some(error)
    })
    .await;
    assert!(error.to_lowercase().contains("certificate"), "{error}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_into_a_partition_keeps_the_last_verdicts() {
    let mut fleet = fleet(&FAST, "").await;
    // Every region loses sight of a: the fleet fails over to b.
    for view in &fleet.views {
        view[0].set(Link::Cut);
    }
    eventually(Duration::from_secs(8), "www to fail over to b", || async {
        (fleet.www().await == vec![fleet.b()]).then_some(())
    })
    .await;
    // The DNS server is killed and comes back where it reaches only r1's prober (which sees a
    // Down, but one vote is no quorum): it must not start undecided (SERVFAIL for the startup
    // grace, then every address including the dead a), it holds its last verdicts.
    fleet.links[1].set(Link::Cut);
    fleet.links[2].set(Link::Cut);
    let path = fleet._dir.path().join("dns.toml");
    fleet.dns = Vantage::start(
        &["dns", "--config", path.to_str().expect("path")],
        fleet._dir.path(),
    );
    let deadline = Instant::now() + Duration::from_secs(4);
    while Instant::now() < deadline {
        assert_eq!(
            fleet.www().await,
            vec![fleet.b()],
            "the restarted server did not hold its last verdicts"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let status = fleet.dns.status().await;
    assert_eq!(status["quorum"]["state"], "no quorum", "{status}");
    assert_eq!(status["restored_verdicts"]["endpoints"], 2, "{status}");
    let a = fleet.endpoint("a").await;
    assert_eq!(a["verdict"], "down", "{a}");
    assert!(
        a["why"].as_str().expect("why").starts_with("no quorum"),
        "{a}"
    );
    assert!(fleet.dns.stderr().contains("holding 2 verdicts saved"));
    // With the partition healed and a repaired, the quorum decides again.
    fleet.links[1].set(Link::Pass);
    fleet.links[2].set(Link::Pass);
    for view in &fleet.views {
        view[0].set(Link::Pass);
    }
    eventually(Duration::from_secs(8), "www to return to a", || async {
        (fleet.www().await == vec![fleet.a()]).then_some(())
    })
    .await;
}

/// Probers push: a DNS server long-polls each prober, which answers as soon as a vote may
/// change, so a failover does not wait for the poll interval (here 1.2 s).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn probers_push_changes_without_waiting_for_the_poll_interval() {
    let slow_poll = Timing {
        interval_ms: 200,
        timeout_ms: 150,
        fall: 2,
        poll_ms: 1200,
    };
    let fleet = fleet(&slow_poll, "").await;
    assert_eq!(fleet.www().await, vec![fleet.a()]);
    // Let the long polls settle (the first pull of each prober is a plain one).
    eventually(
        Duration::from_secs(5),
        "every prober pulled twice",
        || async {
            let status = fleet.dns.status().await;
            status["probers"]
                .as_array()?
                .iter()
                .all(|p| p["reports_accepted"].as_u64().unwrap_or(0) >= 2)
                .then_some(())
        },
    )
    .await;
    for trial in 0..3 {
        let cut = Instant::now();
        fleet.views[0][0].set(Link::Cut);
        fleet.views[1][0].set(Link::Cut);
        eventually(Duration::from_secs(5), "www to fail over to b", || async {
            (fleet.www().await == vec![fleet.b()]).then_some(())
        })
        .await;
        let took = cut.elapsed();
        eprintln!("trial {trial}: failover {took:?} (fall x interval 400 ms, poll interval 1.2 s)");
        assert!(
            took < Duration::from_millis(1000),
            "failover took {took:?}: the DNS server waited for its poll interval"
        );
        fleet.views[0][0].set(Link::Pass);
        fleet.views[1][0].set(Link::Pass);
        eventually(Duration::from_secs(5), "www back on a", || async {
            (fleet.www().await == vec![fleet.a()]).then_some(())
        })
        .await;
    }
    // Fresh all along: the long polls are answered at least every poll interval.
    let status = fleet.dns.status().await;
    assert_eq!(status["quorum"]["state"], "quorum", "{status}");
}
