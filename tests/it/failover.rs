//! End to end: HTTPS checks with a private CA decide what DNS answers, and the answer follows
//! the backends.

use std::{net::IpAddr, time::Duration};

use hickory_proto::{op::ResponseCode, rr::RecordType};

use crate::support::*;

const INTERVAL_MS: u64 = 200;
const FALL: u64 = 2;

fn config(
    dir: &std::path::Path,
    ips: &[std::net::Ipv4Addr],
    port: u16,
    ca_file: &std::path::Path,
) -> String {
    format!(
        r#"
[cluster]
stale_after = "2s"

[[prober]]
region = "r1"
[[prober]]
region = "r2"
[[prober]]
region = "r3"

[check.web]
protocol = "https"
port = {port}
path = "/healthz"
host = "app.test"
interval = "{INTERVAL_MS}ms"
timeout = "150ms"
rise = 2
fall = {FALL}
expect_body = "ok"
ca_file = "{ca}"

[dns]
listen = ["127.0.0.1:0"]
zones_dir = "{zones}"

[admin]
listen = "127.0.0.1:0"
endpoint_region_metrics = true

[[record]]
name = "www.example.com"
policy = "failover"
check = "web"
endpoints = [
  {{ name = "primary", address = "{a}" }},
  {{ name = "secondary", address = "{b}" }},
]

[[record]]
name = "all.example.com"
policy = "all"
when_all_down = "none"
check = "web"
endpoints = [{{ name = "primary", address = "{a}" }}, {{ name = "secondary", address = "{b}" }}, {{ name = "untrusted", address = "{c}" }}]
"#,
        ca = ca_file.display(),
        zones = dir.join("zones").display(),
        a = ips[0],
        b = ips[1],
        c = ips[2],
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answer_fails_over_when_the_primary_stops_and_returns_when_it_is_back() {
    init();
    let dir = workdir();
    let pki = Pki::new(dir.path());
    let ips = loopback_block();
    let backends = start_backends(
        &ips[..3],
        vec![
            pki.issue(&["app.test"]),
            pki.issue(&["app.test"]),
            Pki::self_signed(&["app.test"]),
        ],
    )
    .await;
    let port = backends[0].addr.port();
    let config_path = dir.path().join("fleet.toml");
    std::fs::write(&config_path, config(dir.path(), &ips, port, &pki.ca_file)).expect("config");
    let vantage = Vantage::dns(&config_path, dir.path());
    vantage.wait_ready().await;

    let primary = IpAddr::V4(ips[0]);
    let secondary = IpAddr::V4(ips[1]);
    for reply in [
        udp_query(
            vantage.dns,
            &query_message("www.example.com.", RecordType::A, true),
        )
        .await,
        tcp_query(
            vantage.dns,
            &query_message("www.example.com.", RecordType::A, false),
        )
        .await,
    ] {
        assert_eq!(reply.metadata.response_code, ResponseCode::NoError);
        assert!(reply.metadata.authoritative, "answers in our zone carry AA");
        assert_eq!(addresses(&reply), vec![primary]);
    }
    // The check dialled the address but sent the configured name as SNI and Host.
    let seen = backends[0].seen.lock().expect("lock").clone();
    assert!(!seen.is_empty());
    assert!(
        seen.iter()
            .all(|(sni, host)| sni.as_deref() == Some("app.test")
                && host.as_deref().is_some_and(|h| h.starts_with("app.test"))),
        "{seen:?}"
    );

    // The untrusted backend fails certificate verification: never in the answer.
    let all = udp_query(
        vantage.dns,
        &query_message("all.example.com.", RecordType::A, false),
    )
    .await;
    assert_eq!(addresses(&all), vec![primary, secondary]);
    let status = vantage.status().await;
    let untrusted = status["endpoints"]
        .as_array()
        .expect("endpoints")
        .iter()
        .find(|e| e["id"] == "untrusted")
        .expect("untrusted endpoint")
        .clone();
    assert_eq!(untrusted["verdict"], "down", "{untrusted}");
    assert!(
        untrusted["votes"]
            .as_array()
            .expect("votes")
            .iter()
            .all(|v| v["last_failure"]["kind"] == "certificate"),
        "{untrusted}"
    );

    // Stop the primary: the answer moves to the secondary within fall x interval + margin.
    backends[0].stop();
    let stopped = tokio::time::Instant::now();
    let bound = Duration::from_millis(FALL * INTERVAL_MS) + Duration::from_millis(1500);
    eventually(bound, "www to fail over to the secondary", || async {
        let r = udp_query(
            vantage.dns,
            &query_message("www.example.com.", RecordType::A, false),
        )
        .await;
        (addresses(&r) == vec![secondary]).then_some(())
    })
    .await;
    let took = stopped.elapsed();
    assert!(
        // FALL consecutive failures take at least FALL - 1 intervals (less 10% jitter).
        took >= Duration::from_millis((FALL - 1) * INTERVAL_MS * 8 / 10),
        "failed over too early ({took:?}): thresholds ignored?"
    );

    let status = vantage.status().await;
    let www = status["records"]
        .as_array()
        .expect("records")
        .iter()
        .find(|r| r["name"] == "www.example.com.")
        .expect("www")
        .clone();
    assert_eq!(www["reason"]["kind"], "active", "{www}");
    assert_eq!(www["reason"]["endpoint"], "secondary", "{www}");
    let primary_status = status["endpoints"]
        .as_array()
        .expect("endpoints")
        .iter()
        .find(|e| e["id"] == "primary")
        .expect("primary")
        .clone();
    assert_eq!(primary_status["verdict"], "down");
    assert!(
        primary_status["why"]
            .as_str()
            .expect("why")
            .contains("refused"),
        "{primary_status}"
    );
    assert!(
        vantage.stderr().contains("endpoint primary becomes Down"),
        "transition is logged"
    );

    // Metrics: the transition and the probe failures are counted, every metric has HELP.
    let (_, text) = vantage.get("/metrics").await;
    let metrics = Exposition::parse(&text);
    assert_eq!(
        metrics.value(
            "vantage_verdict_transitions_total",
            &[("endpoint", "primary"), ("to", "down")]
        ),
        Some(1.0)
    );
    assert!(
        metrics
            .value(
                "vantage_endpoint_probes_total",
                &[
                    ("endpoint", "primary"),
                    ("region", "r2"),
                    ("result", "refused")
                ]
            )
            .unwrap_or(0.0)
            >= 1.0
    );
    assert!(
        metrics
            .value(
                "vantage_endpoint_probes_total",
                &[("endpoint", "untrusted"), ("result", "certificate")]
            )
            .unwrap_or(0.0)
            >= 1.0
    );
    assert_eq!(
        metrics.value(
            "vantage_endpoint_verdict",
            &[("endpoint", "secondary"), ("state", "up")]
        ),
        Some(1.0)
    );
    assert!(
        metrics
            .value(
                "vantage_dns_responses_total",
                &[("protocol", "udp"), ("rcode", "NOERROR")]
            )
            .unwrap_or(0.0)
            >= 3.0
    );
    assert_eq!(metrics.value("vantage_ready", &[]), Some(1.0));
    for name in metrics.types.keys() {
        assert!(
            metrics.help.get(name).is_some_and(|h| !h.is_empty()),
            "{name} has no HELP"
        );
        assert!(name.starts_with("vantage_"), "{name}");
    }
    drop(metrics);

    // Bring a primary back on the same address and port: the answer returns to it.
    let revived = start_backends_on(&[backends[0].addr], vec![pki.issue(&["app.test"])]).await;
    eventually(
        Duration::from_secs(5),
        "www to return to the primary",
        || async {
            let r = udp_query(
                vantage.dns,
                &query_message("www.example.com.", RecordType::A, false),
            )
            .await;
            (addresses(&r) == vec![primary]).then_some(())
        },
    )
    .await;
    drop(revived);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn managed_names_are_not_answered_from_guesses_before_the_first_quorum_round() {
    init();
    let dir = workdir();
    let (pki, ips, backends) = app_backends(dir.path()).await;
    // rise = 50 at 100ms: nothing can be decided for at least five seconds.
    let text = config(dir.path(), &ips, backends[0].addr.port(), &pki.ca_file)
        .replace("rise = 2", "rise = 50")
        .replace(
            &format!("interval = \"{INTERVAL_MS}ms\""),
            "interval = \"100ms\"",
        )
        .replace("timeout = \"150ms\"", "timeout = \"90ms\"");
    let config_path = dir.path().join("fleet.toml");
    std::fs::write(&config_path, text).expect("config");
    let mut vantage = Vantage::dns(&config_path, dir.path());

    let reply = udp_query(
        vantage.dns,
        &query_message("www.example.com.", RecordType::A, true),
    )
    .await;
    assert_eq!(reply.metadata.response_code, ResponseCode::ServFail);
    assert!(reply.answers.is_empty());
    let (code, body) = vantage.get("/readyz").await;
    assert_eq!(code, 503, "{body}");
    assert!(body.contains("www.example.com."), "{body}");
    // Static data is served meanwhile.
    let reply = udp_query(
        vantage.dns,
        &query_message("static.example.com.", RecordType::A, false),
    )
    .await;
    assert_eq!(reply.metadata.response_code, ResponseCode::NoError);
    assert_eq!(
        addresses(&reply),
        vec!["192.0.2.80".parse::<IpAddr>().expect("ip")]
    );
    let (code, _) = vantage.get("/livez").await;
    assert_eq!(code, 200);

    // SIGTERM drains and exits cleanly.
    let status = vantage.terminate();
    assert!(status.success(), "exit status {status:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_failed_check_reports_its_failure_kind() {
    init();
    let dir = workdir();
    let pki = Pki::new(dir.path());
    let ips = loopback_block();
    let backends = start_backends(
        &ips,
        vec![
            pki.issue(&["app.test"]),
            pki.issue(&["app.test"]),
            pki.issue(&["app.test"]),
            pki.issue(&["other.test"]),
        ],
    )
    .await;
    backends[0].set(Mode::Status(503));
    backends[1].set(Mode::Body("maintenance"));
    backends[2].set(Mode::Hang);
    let fallback_record = format!(
        "[[record]]\nname = \"fb.example.com\"\npolicy = \"weighted\"\nwhen_all_down = \"fallback\"\n\
         fallback = [\"192.0.2.99\"]\ncheck = \"web\"\nendpoints = [{{ name = \"primary\", address = \"{}\", weight = 2 }}]\n",
        ips[0]
    );
    let text = (config(dir.path(), &ips, backends[0].addr.port(), &pki.ca_file) + &fallback_record)
        .replace(
            &format!(r#"{{ name = "untrusted", address = "{}" }}"#, ips[2]),
            &format!(
                r#"{{ name = "hang", address = "{}" }}, {{ name = "wrongname", address = "{}" }}"#,
                ips[2], ips[3]
            ),
        );
    let config_path = dir.path().join("fleet.toml");
    std::fs::write(&config_path, text).expect("config");
    let vantage = Vantage::dns(&config_path, dir.path());
    vantage.wait_ready().await;
    let status = vantage.status().await;
    let kind_of = |id: &str| {
        let e = status["endpoints"]
            .as_array()
            .expect("endpoints")
            .iter()
            .find(|e| e["id"] == id)
            .expect("endpoint")
            .clone();
        assert_eq!(e["verdict"], "down", "{e}");
        e["votes"][0]["last_failure"]["kind"]
            .as_str()
            .expect("kind")
            .to_string()
    };
    assert_eq!(kind_of("primary"), "status");
    assert_eq!(kind_of("secondary"), "body");
    assert_eq!(kind_of("hang"), "timeout");
    assert_eq!(kind_of("wrongname"), "certificate");
    // Every endpoint is down; the all-policy record with when_all_down = none answers nothing,
    // the failover record fails open with every endpoint.
    let all = udp_query(
        vantage.dns,
        &query_message("all.example.com.", RecordType::A, false),
    )
    .await;
    assert_eq!(all.metadata.response_code, ResponseCode::NoError);
    assert!(all.answers.is_empty());
    let www = udp_query(
        vantage.dns,
        &query_message("www.example.com.", RecordType::A, false),
    )
    .await;
    assert_eq!(
        addresses(&www),
        vec![IpAddr::V4(ips[0]), IpAddr::V4(ips[1])]
    );
    let fb = udp_query(
        vantage.dns,
        &query_message("fb.example.com.", RecordType::A, false),
    )
    .await;
    assert_eq!(
        addresses(&fb),
        vec!["192.0.2.99".parse::<IpAddr>().expect("ip")]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_verification_can_be_turned_off_and_checks_can_dial_another_address() {
    init();
    let dir = workdir();
    let pki = Pki::new(dir.path());
    let ips = loopback_block();
    let backends = start_backends(
        &ips[..2],
        vec![Pki::self_signed(&["app.test"]), pki.issue(&["app.test"])],
    )
    .await;
    let port = backends[0].addr.port();
    let text = format!(
        r#"
[[prober]]
region = "r1"
[check.insecure]
port = {port}
host = "app.test"
interval = "100ms"
timeout = "90ms"
rise = 1
tls_verify = false
[check.verified]
port = {port}
host = "app.test"
interval = "100ms"
timeout = "90ms"
rise = 1
ca_file = "{ca}"
[dns]
listen = ["127.0.0.1:0"]
zones_dir = "{zones}"
[admin]
listen = "127.0.0.1:0"
[[record]]
name = "insecure.example.com"
check = "insecure"
endpoints = [{{ address = "{a}" }}]
[[record]]
name = "nat.example.com"
check = "verified"
# The published address is never dialled; the check goes to check_address.
endpoints = [{{ address = "192.0.2.50", check_address = "{b}" }}]
"#,
        ca = pki.ca_file.display(),
        zones = dir.path().join("zones").display(),
        a = ips[0],
        b = ips[1],
    );
    let config_path = dir.path().join("fleet.toml");
    std::fs::write(&config_path, text).expect("config");
    let vantage = Vantage::dns(&config_path, dir.path());
    vantage.wait_ready().await;
    let status = vantage.status().await;
    for e in status["endpoints"].as_array().expect("endpoints") {
        assert_eq!(e["verdict"], "up", "{e}");
    }
    let r = udp_query(
        vantage.dns,
        &query_message("insecure.example.com.", RecordType::A, false),
    )
    .await;
    assert_eq!(addresses(&r), vec![IpAddr::V4(ips[0])]);
    let r = udp_query(
        vantage.dns,
        &query_message("nat.example.com.", RecordType::A, false),
    )
    .await;
    assert_eq!(
        addresses(&r),
        vec!["192.0.2.50".parse::<IpAddr>().expect("ip")]
    );
    assert!(
        !backends[1].seen.lock().expect("lock").is_empty(),
        "the check went to check_address"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_certificate_that_expires_fails_the_next_check() {
    init();
    let dir = workdir();
    let pki = Pki::new(dir.path());
    let ips = loopback_block();
    // Valid for 4 more seconds; the backend resumes TLS sessions (rustls' default), so a
    // client that resumed would never see the certificate again.
    let backends = start_backends(&ips[..1], vec![pki.issue_expiring(&["app.test"], 4)]).await;
    let path = dir.path().join("fleet.toml");
    std::fs::write(
        &path,
        format!(
            "[[prober]]\nregion = \"r1\"\n[check.web]\nport = {port}\npath = \"/healthz\"\nhost = \"app.test\"\n\
             interval = \"200ms\"\ntimeout = \"150ms\"\nrise = 1\nfall = 2\nca_file = \"{ca}\"\n\
             [dns]\nlisten = [\"127.0.0.1:0\"]\nzones_dir = \"{zones}\"\n[admin]\nlisten = \"127.0.0.1:0\"\n\
             [[record]]\nname = \"www.example.com\"\ncheck = \"web\"\nwhen_all_down = \"none\"\nendpoints = [{{ name = \"one\", address = \"{a}\" }}]\n",
            port = backends[0].addr.port(),
            ca = pki.ca_file.display(),
            zones = dir.path().join("zones").display(),
            a = ips[0],
        ),
    )
    .expect("config");
    let vantage = Vantage::dns(&path, dir.path());
    vantage.wait_ready().await;
    let endpoint = |status: &serde_json::Value| status["endpoints"][0].clone();
    let up = endpoint(&vantage.status().await);
    assert_eq!(up["verdict"], "up");
    // Its expiry is known (status and the metric blackbox users alert on), to the second.
    let expires = up["votes"][0]["cert_expires_unix_s"]
        .as_i64()
        .unwrap_or_else(|| panic!("no expiry in {up}"));
    let now = vantage::clock::unix_ms() as i64 / 1000;
    assert!(
        (now..=now + 5).contains(&expires),
        "expires {expires}, now {now}"
    );
    let (_, text) = vantage.get("/metrics").await;
    assert_eq!(
        Exposition::parse(&text).value(
            "vantage_probe_tls_cert_expiry_timestamp_seconds",
            &[("endpoint", "one")]
        ),
        Some(expires as f64)
    );
    // Once it expires, the next checks fail the handshake and the endpoint goes Down.
    let down = eventually(
        Duration::from_secs(15),
        "the expired endpoint Down",
        || async {
            let e = endpoint(&vantage.status().await);
            (e["verdict"] == "down").then_some(e)
        },
    )
    .await;
    let vote = &down["votes"][0];
    assert_eq!(vote["last_failure"]["kind"], "certificate", "{down}");
    assert!(
        vote["last_failure"]["detail"]
            .as_str()
            .is_some_and(|d| d.to_lowercase().contains("expired")),
        "{down}"
    );
}

/// One prober; `primary` is checked every 4 s with fall 3, suspected failures re-checked every
/// 100 ms; `flaky` has a fall no short failure reaches.
fn suspicion_config(
    dir: &std::path::Path,
    ips: &[std::net::Ipv4Addr],
    port: u16,
    ca: &std::path::Path,
) -> String {
    format!(
        r#"
[[prober]]
region = "r1"
[check.slow]
port = {port}
path = "/healthz"
host = "app.test"
interval = "4s"
suspect_interval = "100ms"
timeout = "150ms"
rise = 1
fall = 3
ca_file = "{ca}"
[check.patient]
port = {port}
path = "/healthz"
host = "app.test"
interval = "500ms"
suspect_interval = "100ms"
timeout = "150ms"
rise = 1
fall = 100
ca_file = "{ca}"
[dns]
listen = ["127.0.0.1:0"]
zones_dir = "{zones}"
[admin]
listen = "127.0.0.1:0"
endpoint_region_metrics = true
[[record]]
name = "www.example.com"
policy = "failover"
check = "slow"
endpoints = [{{ name = "primary", address = "{a}" }}, {{ name = "secondary", address = "{b}" }}]
[[record]]
name = "api.example.com"
policy = "all"
check = "patient"
endpoints = [{{ name = "flaky", address = "{c}" }}]
"#,
        ca = ca.display(),
        zones = dir.join("zones").display(),
        a = ips[0],
        b = ips[1],
        c = ips[2],
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_suspected_failure_is_confirmed_at_the_suspect_interval_not_the_interval() {
    init();
    let dir = workdir();
    let pki = Pki::new(dir.path());
    let ips = loopback_block();
    let backends = start_backends(
        &ips[..3],
        vec![
            pki.issue(&["app.test"]),
            pki.issue(&["app.test"]),
            pki.issue(&["app.test"]),
        ],
    )
    .await;
    let path = dir.path().join("fleet.toml");
    std::fs::write(
        &path,
        suspicion_config(dir.path(), &ips, backends[0].addr.port(), &pki.ca_file),
    )
    .expect("config");
    let vantage = Vantage::dns(&path, dir.path());
    vantage.wait_ready().await;
    let www = || async {
        addresses(
            &udp_query(
                vantage.dns,
                &query_message("www.example.com.", RecordType::A, false),
            )
            .await,
        )
    };
    assert_eq!(www().await, vec![IpAddr::V4(ips[0])]);
    let vantage = &vantage;
    let metric = |endpoint: &'static str, outcome: &'static str| async move {
        let (_, text) = vantage.get("/metrics").await;
        Exposition::parse(&text)
            .value(
                "vantage_endpoint_probe_suspicions_total",
                &[
                    ("endpoint", endpoint),
                    ("region", "r1"),
                    ("outcome", outcome),
                ],
            )
            .unwrap_or(0.0)
    };

    // fall = 3 at a 4 s interval: the first failure comes within 4 s, and the two that
    // confirm it 100 ms apart, not 8 s later.
    backends[0].set(Mode::Status(503));
    eventually(
        Duration::from_secs(6),
        "www to fail over within one interval and two suspect intervals",
        || async { (www().await == vec![IpAddr::V4(ips[1])]).then_some(()) },
    )
    .await;
    assert_eq!(metric("primary", "confirmed").await, 1.0);

    // A short failure of an endpoint whose fall it cannot reach: a suspicion, cleared.
    backends[2].set(Mode::Status(503));
    eventually(
        Duration::from_secs(5),
        "a failed check of flaky",
        || async {
            let (_, text) = vantage.get("/metrics").await;
            let failed = Exposition::parse(&text)
                .value(
                    "vantage_endpoint_probes_total",
                    &[
                        ("endpoint", "flaky"),
                        ("region", "r1"),
                        ("result", "status"),
                    ],
                )
                .unwrap_or(0.0);
            (failed >= 1.0).then_some(())
        },
    )
    .await;
    backends[2].set(Mode::Healthy);
    eventually(
        Duration::from_secs(5),
        "the suspicion of flaky cleared",
        || async { (metric("flaky", "cleared").await >= 1.0).then_some(()) },
    )
    .await;
    assert_eq!(metric("flaky", "confirmed").await, 0.0);
    let api = udp_query(
        vantage.dns,
        &query_message("api.example.com.", RecordType::A, false),
    )
    .await;
    assert_eq!(
        addresses(&api),
        vec![IpAddr::V4(ips[2])],
        "never failed over"
    );
}

/// A failover record over two endpoints (primary, secondary on `ips[0]`, `ips[1]`) with one
/// https check timed by `timing`, probed by the probers (and cluster settings) in `head`.
fn primary_secondary(
    dir: &std::path::Path,
    ips: &[std::net::Ipv4Addr],
    port: u16,
    ca: &std::path::Path,
    head: &str,
    timing: &str,
) -> String {
    format!(
        r#"{head}
[check.web]
port = {port}
path = "/healthz"
host = "app.test"
ca_file = "{ca}"
{timing}
[dns]
listen = ["127.0.0.1:0"]
zones_dir = "{zones}"
[admin]
listen = "127.0.0.1:0"
[[record]]
name = "www.example.com"
policy = "failover"
check = "web"
endpoints = [{{ name = "primary", address = "{a}" }}, {{ name = "secondary", address = "{b}" }}]
"#,
        ca = ca.display(),
        zones = dir.join("zones").display(),
        a = ips[0],
        b = ips[1],
    )
}

/// Three in-process probers (r1, r2, r3) checking a primary and a secondary with `timing`, and
/// the DNS server answering `www` from them.
struct ThreeProbers {
    _dir: tempfile::TempDir,
    ips: [std::net::Ipv4Addr; 4],
    backends: Vec<Backend>,
    vantage: Vantage,
}

impl ThreeProbers {
    async fn start(timing: &str) -> ThreeProbers {
        let dir = workdir();
        let (pki, ips, backends) = app_backends(dir.path()).await;
        let path = dir.path().join("fleet.toml");
        std::fs::write(
            &path,
            primary_secondary(
                dir.path(),
                &ips,
                backends[0].addr.port(),
                &pki.ca_file,
                "[cluster]\nstale_after = \"15s\"\n[[prober]]\nregion = \"r1\"\n[[prober]]\nregion = \"r2\"\n[[prober]]\nregion = \"r3\"\n",
                timing,
            ),
        )
        .expect("config");
        let vantage = Vantage::dns(&path, dir.path());
        vantage.wait_ready().await;
        ThreeProbers {
            _dir: dir,
            ips,
            backends,
            vantage,
        }
    }

    async fn www(&self) -> Vec<IpAddr> {
        addresses(
            &udp_query(
                self.vantage.dns,
                &query_message("www.example.com.", RecordType::A, false),
            )
            .await,
        )
    }

    /// When status first shows a failed check of primary by any prober (polled every 10 ms).
    async fn first_failure(&self) -> tokio::time::Instant {
        eventually(
            Duration::from_secs(20),
            "a failed check of primary",
            || async {
                let status = self.vantage.status().await;
                status["endpoints"]
                    .as_array()?
                    .iter()
                    .find(|e| e["id"] == "primary")?["votes"]
                    .as_array()?
                    .iter()
                    .any(|v| v["consecutive_failures"].as_u64().unwrap_or(0) > 0)
                    .then(tokio::time::Instant::now)
            },
        )
        .await
    }
}

/// Three in-process probers, a 10 s interval: a suspicion is confirmed on demand by the
/// others (asked to check now), not at their next interval; a one-off failure is asked about,
/// not confirmed, and counted as such.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_suspicion_is_confirmed_on_demand_by_the_other_probers() {
    init();
    let fleet = ThreeProbers::start(
        "interval = \"10s\"\nsuspect_interval = \"100ms\"\ntimeout = \"150ms\"\nrise = 1\nfall = 3\n",
    )
    .await;
    let (vantage, ips, backends) = (&fleet.vantage, fleet.ips, &fleet.backends);
    let www = || fleet.www();
    let first_failure = || fleet.first_failure();
    assert_eq!(www().await, vec![IpAddr::V4(ips[0])]);
    let metric = |name: &'static str, labels: &'static [(&'static str, &'static str)]| async move {
        let (_, text) = vantage.get("/metrics").await;
        Exposition::parse(&text).value(name, labels).unwrap_or(0.0)
    };

    // A one-off failure: whoever sees it asks the others; they see it Up, nobody reaches
    // fall, the answer never moves, and the suspicion ends unconfirmed.
    backends[0].set(Mode::Status(503));
    first_failure().await;
    backends[0].set(Mode::Healthy);
    eventually(
        Duration::from_secs(5),
        "the suspicion to end unconfirmed",
        || async {
            (metric(
                "vantage_quorum_suspicions_total",
                &[("outcome", "unconfirmed")],
            )
            .await
                >= 1.0)
                .then_some(())
        },
    )
    .await;
    assert_eq!(www().await, vec![IpAddr::V4(ips[0])]);
    let asked: f64 = futures_sum(["r1", "r2", "r3"].map(|r| async move {
        let (_, text) = vantage.get("/metrics").await;
        Exposition::parse(&text)
            .value("vantage_confirmations_asked_total", &[("region", r)])
            .unwrap_or(0.0)
    }))
    .await;
    assert!(asked >= 2.0, "the two other probers asked: {asked}");

    // A real failure: confirmed by the others within a few suspect intervals of the first
    // failed check, not at their next 10 s interval.
    backends[0].set(Mode::Status(503));
    let suspected = first_failure().await;
    let failed_over = eventually(Duration::from_secs(15), "www to fail over", || async {
        (www().await == vec![IpAddr::V4(ips[1])]).then(tokio::time::Instant::now)
    })
    .await;
    let took = failed_over.duration_since(suspected);
    assert!(
        took < Duration::from_millis(1500),
        "{took:?} from the first failed check to the failover (interval 10 s, fall 3, suspect_interval 100 ms)"
    );
    assert!(
        metric(
            "vantage_quorum_suspicions_total",
            &[("outcome", "confirmed")]
        )
        .await
            >= 1.0
    );
    let status = vantage.status().await;
    let explained = status["transitions"]
        .as_array()
        .expect("transitions")
        .iter()
        .any(|t| {
            t["endpoint"] == "primary"
                && t["to"] == "down"
                && t["why"]
                    .as_str()
                    .is_some_and(|w| w.contains("first suspected by r"))
        });
    assert!(
        explained,
        "the transition names who suspected: {}",
        status["transitions"]
    );
}

async fn futures_sum<F: std::future::Future<Output = f64>>(futures: [F; 3]) -> f64 {
    let mut sum = 0.0;
    for f in futures {
        sum += f.await;
    }
    sum
}

/// A suspected endpoint whose checks time out (timeout longer than suspect_interval): each
/// next check is due when the previous one ends, not "late", so its timeout counts and `fall`
/// is reached (a late start's timeout would count as the prober's own problem).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn checks_that_outlast_the_suspect_interval_still_reach_fall() {
    init();
    let dir = workdir();
    let (pki, ips, backends) = app_backends(dir.path()).await;
    let path = dir.path().join("fleet.toml");
    std::fs::write(
        &path,
        primary_secondary(
            dir.path(),
            &ips,
            backends[0].addr.port(),
            &pki.ca_file,
            "[[prober]]\nregion = \"r1\"\n",
            "interval = \"1s\"\nsuspect_interval = \"100ms\"\ntimeout = \"800ms\"\nconnect_timeout = \"800ms\"\nrise = 1\nfall = 3\n",
        ),
    )
    .expect("config");
    let vantage = Vantage::dns(&path, dir.path());
    vantage.wait_ready().await;
    let www = || async {
        addresses(
            &udp_query(
                vantage.dns,
                &query_message("www.example.com.", RecordType::A, false),
            )
            .await,
        )
    };
    assert_eq!(www().await, vec![IpAddr::V4(ips[0])]);
    // Hangs: three timeouts of 800 ms in a row, each check starting when the last ended.
    backends[0].set(Mode::Hang);
    eventually(
        Duration::from_secs(6),
        "www to fail over after three timeouts (1 s + 3 x 0.8 s)",
        || async { (www().await == vec![IpAddr::V4(ips[1])]).then_some(()) },
    )
    .await;
    let (_, text) = vantage.get("/metrics").await;
    assert_eq!(
        Exposition::parse(&text)
            .value(
                "vantage_probes_total",
                &[("region", "r1"), ("result", "local")]
            )
            .unwrap_or(0.0),
        0.0,
        "a timeout counted as the prober's own problem"
    );
}

/// Flapping every 2 s, seen by three probers (interval 200 ms) through a majority quorum:
/// with rise 2 and fall 2 the verdict follows each flap once and never more; with rise 15
/// (3 s of good checks, longer than an Up phase) it goes Down once and stays Down until the
/// flapping stops. And what an outage costs the endpoint: with interval 1 s, suspect 100 ms and
/// fall 3, three probers check it at most 45 times in 10 s of outage (README states the
/// measured rate).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flapping_and_outages_cost_what_rise_fall_and_quorum_allow() {
    init();
    let dir = workdir();
    let pki = Pki::new(dir.path());
    let ips = loopback_block();
    let backends = start_backends(
        &ips[..3],
        vec![
            pki.issue(&["app.test"]),
            pki.issue(&["app.test"]),
            pki.issue(&["app.test"]),
        ],
    )
    .await;
    let port = backends[0].addr.port();
    let ca = pki.ca_file.display();
    let check = |name: &str, timing: &str| {
        format!(
            "[check.{name}]\nport = {port}\npath = \"/healthz\"\nhost = \"app.test\"\nca_file = \"{ca}\"\ntimeout = \"150ms\"\n{timing}\n"
        )
    };
    let record = |name: &str, check: &str, ip: std::net::Ipv4Addr| {
        format!(
            "[[record]]\nname = \"{name}.example.com\"\npolicy = \"all\"\ncheck = \"{check}\"\nendpoints = [{{ name = \"{name}\", address = \"{ip}\" }}]\n"
        )
    };
    let path = dir.path().join("fleet.toml");
    std::fs::write(
        &path,
        format!(
            "[cluster]\nstale_after = \"5s\"\n[[prober]]\nregion = \"r1\"\n[[prober]]\nregion = \"r2\"\n[[prober]]\nregion = \"r3\"\n{}{}{}[dns]\nlisten = [\"127.0.0.1:0\"]\n[admin]\nlisten = \"127.0.0.1:0\"\n{}{}{}",
            check("quick", "interval = \"200ms\"\nrise = 2\nfall = 2"),
            check("slow", "interval = \"200ms\"\nrise = 15\nfall = 2"),
            check("outage", "interval = \"1s\"\nsuspect_interval = \"100ms\"\nrise = 1\nfall = 3"),
            record("quick", "quick", ips[0]),
            record("slow", "slow", ips[1]),
            record("outage", "outage", ips[2]),
        ),
    )
    .expect("config");
    let vantage = Vantage::dns(&path, dir.path());
    vantage.wait_ready().await;
    let transitions = |endpoint: &'static str, to: &'static str| {
        let vantage = &vantage;
        async move {
            let (_, text) = vantage.get("/metrics").await;
            Exposition::parse(&text)
                .value(
                    "vantage_verdict_transitions_total",
                    &[("endpoint", endpoint), ("to", to)],
                )
                .unwrap_or(0.0) as u32
        }
    };
    let up = |endpoint: &'static str| async move {
        eventually(Duration::from_secs(10), "the endpoint to be Up", || async {
            (transitions(endpoint, "up").await >= 1).then_some(())
        })
        .await;
    };
    up("quick").await;
    up("slow").await;
    up("outage").await;
    let (quick_up, slow_up) = (
        transitions("quick", "up").await,
        transitions("slow", "up").await,
    );

    // The outage: 10 s of 503 for one endpoint, every request counted at the backend.
    let before = backends[2].seen.lock().expect("lock").len();
    backends[2].set(Mode::Status(503));
    let outage_started = tokio::time::Instant::now();
    // Meanwhile, six flaps of 2 s for the other two: Down, Up, Down, Up, Down, Up.
    let mut flaps = tokio::time::interval(Duration::from_secs(2));
    flaps.tick().await;
    let mut outage = None;
    for flap in 0..6 {
        let mode = if flap % 2 == 0 {
            Mode::Status(503)
        } else {
            Mode::Healthy
        };
        backends[0].set(mode);
        backends[1].set(mode);
        flaps.tick().await;
        if outage.is_none() && outage_started.elapsed() >= Duration::from_secs(10) {
            backends[2].set(Mode::Healthy);
            let checks = backends[2].seen.lock().expect("lock").len() - before;
            outage = Some((checks, outage_started.elapsed()));
        }
    }
    let (outage_checks, outage_lasted) = outage.expect("the outage ended");
    eprintln!(
        "checks of one endpoint in {outage_lasted:?} of outage, 3 probers, interval 1 s, suspect 100 ms, fall 3: {outage_checks}"
    );
    assert_eq!(transitions("outage", "down").await, 1);
    assert!(
        outage_checks <= 45,
        "an outage cost {outage_checks} checks in {outage_lasted:?}"
    );

    // Quick: one Down per 503 phase and one Up per healthy phase, no more.
    eventually(
        Duration::from_secs(5),
        "quick to follow the last flap",
        || async { (transitions("quick", "up").await == quick_up + 3).then_some(()) },
    )
    .await;
    assert_eq!(transitions("quick", "down").await, 3);
    // Slow: Down once; its Up phases are shorter than rise; Up again once the flapping stops.
    assert_eq!(transitions("slow", "down").await, 1);
    assert_eq!(transitions("slow", "up").await, slow_up);
    eventually(
        Duration::from_secs(8),
        "slow to rise after the flapping",
        || async { (transitions("slow", "up").await == slow_up + 1).then_some(()) },
    )
    .await;
    assert_eq!(transitions("quick", "down").await, 3);
    assert_eq!(transitions("quick", "up").await, quick_up + 3);
}

/// Packets dropped (a check that hangs until its 1 s timeout), three probers every 10 s: the
/// first prober whose check runs far past the endpoint's usual round trip says so at once
/// (`overdue`), the others are asked to check then, and their timeouts come right after the
/// first one's, not a whole timeout later. With `fall = 3` and a 100 ms suspect interval,
/// re-checks start beside the hanging ones, so three timeouts take one timeout and 0.2 s, not
/// three timeouts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hanging_check_is_confirmed_before_it_times_out() {
    init();
    let fall_1 =
        hang_to_failover("interval = \"10s\"\ntimeout = \"1s\"\nrise = 1\nfall = 1\n").await;
    assert!(
        fall_1 < Duration::from_millis(700),
        "fall 1: {fall_1:?} from the first timeout to the failover: the others were not asked before it"
    );
    let fall_3 = hang_to_failover(
        "interval = \"10s\"\nsuspect_interval = \"100ms\"\ntimeout = \"1s\"\nrise = 1\nfall = 3\n",
    )
    .await;
    assert!(
        fall_3 < Duration::from_millis(900),
        "fall 3: {fall_3:?} from the first timeout to the failover: the timeouts came one after another"
    );
}

/// How long after the first timed-out check the answer moves, when primary starts hanging.
async fn hang_to_failover(timing: &str) -> Duration {
    let fleet = ThreeProbers::start(timing).await;
    let (vantage, ips, backends) = (&fleet.vantage, fleet.ips, &fleet.backends);
    assert_eq!(fleet.www().await, vec![IpAddr::V4(ips[0])]);
    // Every prober has a round trip to compare with: each has seen primary Up.
    eventually(
        Duration::from_secs(15),
        "three Up votes for primary",
        || async {
            let status = vantage.status().await;
            let up = status["endpoints"]
                .as_array()?
                .iter()
                .find(|e| e["id"] == "primary")?["votes"]
                .as_array()?
                .iter()
                .filter(|v| v["state"] == "up")
                .count();
            (up == 3).then_some(())
        },
    )
    .await;
    backends[0].set(Mode::Hang);
    let first_timeout = fleet.first_failure().await;
    let failed_over = eventually(Duration::from_secs(8), "www to fail over", || async {
        (fleet.www().await == vec![IpAddr::V4(ips[1])]).then(tokio::time::Instant::now)
    })
    .await;
    let took = failed_over.duration_since(first_timeout);
    eprintln!("{timing:?}: failover {took:?} after the first timeout");
    let (_, text) = vantage.get("/metrics").await;
    let metrics = Exposition::parse(&text);
    let overdue: f64 = ["r1", "r2", "r3"]
        .iter()
        .map(|r| {
            metrics
                .value("vantage_probe_overdue_total", &[("region", r)])
                .unwrap_or(0.0)
        })
        .sum();
    assert!(
        overdue >= 1.0,
        "the hanging checks were said overdue: {overdue}"
    );
    took
}

/// A check that runs a whole interval (a hang with timeout = interval) is followed by the next
/// at once, not at the endpoint's next place on the grid: a hanging endpoint is still checked
/// every interval by every prober, and its recovery is seen within one timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hanging_endpoint_is_checked_every_interval_and_seen_recovering() {
    init();
    let fleet =
        ThreeProbers::start("interval = \"1s\"\ntimeout = \"1s\"\nrise = 1\nfall = 1\n").await;
    let (vantage, ips, backends) = (&fleet.vantage, fleet.ips, &fleet.backends);
    assert_eq!(fleet.www().await, vec![IpAddr::V4(ips[0])]);
    let timeouts = || async {
        let (_, text) = vantage.get("/metrics").await;
        let metrics = Exposition::parse(&text);
        ["r1", "r2", "r3"].map(|region| {
            metrics
                .value(
                    "vantage_probes_total",
                    &[("region", region), ("result", "timeout")],
                )
                .unwrap_or(0.0)
        })
    };
    backends[0].set(Mode::Hang);
    eventually(Duration::from_secs(10), "www to fail over", || async {
        (fleet.www().await == vec![IpAddr::V4(ips[1])]).then_some(())
    })
    .await;
    // Four more timeouts per prober take about four intervals (the checks run back to back);
    // with the grid's next place after each, they would take eight.
    let before = timeouts().await;
    let from = tokio::time::Instant::now();
    eventually(
        Duration::from_secs(10),
        "four more timeouts per prober",
        || async {
            let now = timeouts().await;
            (0..3).all(|r| now[r] >= before[r] + 4.0).then_some(())
        },
    )
    .await;
    let took = from.elapsed();
    assert!(
        took < Duration::from_millis(6000),
        "four timeouts per prober took {took:?}: a hanging endpoint is not checked every interval"
    );
    // Each prober's hanging check ends within a timeout, and the next one, at once, succeeds.
    backends[0].set(Mode::Healthy);
    let healed = tokio::time::Instant::now();
    eventually(Duration::from_secs(5), "www to fail back", || async {
        (fleet.www().await == vec![IpAddr::V4(ips[0])]).then_some(())
    })
    .await;
    let took = healed.elapsed();
    assert!(
        took < Duration::from_millis(1800),
        "failback {took:?} after the recovery: more than a timeout and a check"
    );
}
