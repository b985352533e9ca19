//! A prober asked for more checks than the CPU can run: it says it is overloaded, and no
//! endpoint goes Down because of it.

use std::{net::IpAddr, path::Path, time::Duration};

use hickory_proto::rr::RecordType;

use crate::support::*;

const RECORDS: usize = 300;
const PER_RECORD: usize = 10;

/// 3,000 endpoints on two healthy backends, checked every `interval` ms over https.
fn config(dir: &Path, ips: &[std::net::Ipv4Addr], port: u16, ca: &Path, interval: u64) -> String {
    let mut text = format!(
        r#"
[cluster]
stale_after = "30s"

[[prober]]
region = "a"

[check.web]
protocol = "https"
port = {port}
path = "/healthz"
host = "app.test"
interval = "{interval}ms"
timeout = "{timeout}ms"
rise = 1
fall = 2
ca_file = "{ca}"

[dns]
listen = ["127.0.0.1:0"]
zones_dir = "{zones}"

[admin]
listen = "127.0.0.1:0"
"#,
        timeout = interval.min(1000),
        ca = ca.display(),
        zones = dir.join("zones").display(),
    );
    for r in 0..RECORDS {
        let endpoints: Vec<String> = (0..PER_RECORD)
            .map(|e| {
                format!(
                    "{{ name = \"e{r}-{e}\", address = \"10.{}.{}.{}\", check_address = \"{}\" }}",
                    r / 250,
                    r % 250,
                    e + 1,
                    ips[e % 2]
                )
            })
            .collect();
        text.push_str(&format!(
            "[[record]]\nname = \"r{r}.example.com\"\npolicy = \"all\"\ncheck = \"web\"\nendpoints = [{}]\n",
            endpoints.join(", ")
        ));
    }
    text
}

fn not_up(status: &serde_json::Value) -> Vec<String> {
    status["endpoints"]
        .as_array()
        .expect("endpoints")
        .iter()
        .filter(|e| e["verdict"] != "up")
        .map(|e| format!("{} {}", e["id"], e["verdict"]))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_prober_short_of_cpu_says_it_is_overloaded_and_no_endpoint_goes_down() {
    init();
    let dir = workdir();
    let pki = Pki::new(dir.path());
    let ips = loopback_block();
    let backends = start_backends(
        &ips[..2],
        vec![pki.issue(&["app.test"]), pki.issue(&["app.test"])],
    )
    .await;
    let port = backends[0].addr.port();
    let path = dir.path().join("fleet.toml");
    // First at a rate this machine keeps up with: every endpoint Up.
    std::fs::write(&path, config(dir.path(), &ips, port, &pki.ca_file, 10_000)).expect("config");
    let vantage = Vantage::dns(&path, dir.path());
    eventually(
        Duration::from_secs(60),
        "every endpoint Up at a 10 s interval",
        || async {
            let status = vantage.status().await;
            not_up(&status).is_empty().then_some(())
        },
    )
    .await;
    let metrics = || async { Exposition::parse(&vantage.get("/metrics").await.1) };
    assert_eq!(
        metrics()
            .await
            .value("vantage_probe_overloaded", &[("region", "a")]),
        Some(0.0)
    );

    // Then 3,000 endpoints every 250 ms (12,000 checks/s): more than two cores can check.
    std::fs::write(&path, config(dir.path(), &ips, port, &pki.ca_file, 250)).expect("config");
    vantage.signal("HUP");
    eventually(
        Duration::from_secs(60),
        "the prober to say it is overloaded",
        || async {
            let status = vantage.status().await;
            (status["probers"][0]["overloaded"] == true).then_some(())
        },
    )
    .await;
    let m = metrics().await;
    assert_eq!(
        m.value("vantage_prober_overloaded", &[("region", "a")]),
        Some(1.0)
    );
    assert!(
        m.value("vantage_probe_late_starts_total", &[("region", "a")])
            .unwrap_or(0.0)
            >= 100.0
    );

    // While it lasts, every endpoint stays Up and answered (sampled over 10 s).
    let expected: Vec<IpAddr> = (1..=PER_RECORD as u8)
        .map(|e| IpAddr::from([10, 0, 7, e]))
        .collect();
    let until = tokio::time::Instant::now() + Duration::from_secs(10);
    while tokio::time::Instant::now() < until {
        let status = vantage.status().await;
        assert_eq!(
            status["probers"][0]["overloaded"], true,
            "the overload ended by itself: the test needs a slower machine or more checks"
        );
        let down = not_up(&status);
        assert!(
            down.is_empty(),
            "endpoints left Up during the overload: {down:?}"
        );
        let answer = tcp_query(
            vantage.dns,
            &query_message("r7.example.com.", RecordType::A, false),
        )
        .await;
        let mut got = addresses(&answer);
        got.sort();
        assert_eq!(got, expected);
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let m = metrics().await;
    eprintln!(
        "checks: success {:?}, local {:?}, late starts {:?}, budget {:?}",
        m.value(
            "vantage_probes_total",
            &[("region", "a"), ("result", "success")]
        ),
        m.value(
            "vantage_probes_total",
            &[("region", "a"), ("result", "local")]
        ),
        m.value("vantage_probe_late_starts_total", &[("region", "a")]),
        m.value("vantage_probe_checks_in_flight_limit", &[("region", "a")]),
    );
    assert_eq!(
        m.value(
            "vantage_prober_endpoints",
            &[("region", "a"), ("state", "down")]
        )
        .unwrap_or(0.0),
        0.0,
        "the prober itself saw an endpoint Down"
    );
    // (Some may still be Unknown in the prober's own view: the reload restarted its
    // thresholds and their first check since may not have run yet. Unknown is not Down.)
}
