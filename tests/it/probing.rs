//! Probing under load: a prober that cannot keep up says so and no endpoint goes Down because
//! of it; the metrics stay bounded per endpoint.

use std::{net::IpAddr, time::Duration};

use hickory_proto::rr::RecordType;

use crate::support::*;

/// `good` endpoints answer at once, `stuck` ones complete TLS and never answer; with a budget
/// of 2 checks in flight the stuck checks hold both slots, so every check waits its turn.
fn overloaded_config(
    dir: &std::path::Path,
    ips: &[std::net::Ipv4Addr],
    port: u16,
    ca: &std::path::Path,
) -> String {
    let endpoints = |prefix: &str, base: u8, dial: std::net::Ipv4Addr| {
        (1..=6)
            .map(|i| {
                format!(
                    "{{ name = \"{prefix}{i}\", address = \"192.0.2.{}\", check_address = \"{dial}\" }}",
                    base + i
                )
            })
            .collect::<Vec<_>>()
            .join(", ")
    };
    format!(
        r#"
[cluster]
stale_after = "30s"
max_checks_in_flight = 2

[[prober]]
region = "a"

[check.web]
protocol = "https"
port = {port}
path = "/healthz"
host = "app.test"
interval = "1s"
timeout = "1s"
rise = 1
fall = 1
ca_file = "{ca}"

[dns]
listen = ["127.0.0.1:0"]
zones_dir = "{zones}"

[admin]
listen = "127.0.0.1:0"

[[record]]
name = "good.example.com"
policy = "all"
check = "web"
endpoints = [{good}]

[[record]]
name = "stuck.example.com"
policy = "all"
check = "web"
endpoints = [{stuck}]
"#,
        ca = ca.display(),
        zones = dir.join("zones").display(),
        good = endpoints("g", 0, ips[0]),
        stuck = endpoints("s", 10, ips[1]),
    )
}

fn verdicts(status: &serde_json::Value, prefix: &str) -> Vec<String> {
    status["endpoints"]
        .as_array()
        .expect("endpoints")
        .iter()
        .filter(|e| e["id"].as_str().is_some_and(|id| id.starts_with(prefix)))
        .map(|e| e["verdict"].as_str().unwrap_or("?").to_string())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_overloaded_prober_says_so_and_no_endpoint_goes_down_because_of_it() {
    init();
    let dir = workdir();
    let (pki, ips, backends) = app_backends(dir.path()).await;
    let config_path = dir.path().join("fleet.toml");
    std::fs::write(
        &config_path,
        overloaded_config(dir.path(), &ips, backends[0].addr.port(), &pki.ca_file),
    )
    .expect("config");
    let vantage = Vantage::dns(&config_path, dir.path());
    vantage.wait_ready().await;
    let good: Vec<IpAddr> = (1..=6).map(|i| IpAddr::from([192, 0, 2, i])).collect();

    // The stuck checks take both slots: checks start late and the prober says it is overloaded.
    backends[1].set(Mode::Hang);
    let metric = |name: &'static str, labels: &'static [(&'static str, &'static str)]| {
        let vantage = &vantage;
        async move {
            let (_, text) = vantage.get("/metrics").await;
            Exposition::parse(&text).value(name, labels).unwrap_or(0.0)
        }
    };
    eventually(
        Duration::from_secs(20),
        "the prober to say it is overloaded",
        || async {
            let status = vantage.status().await;
            (status["probers"][0]["overloaded"] == true && status["quorum"]["overloaded"][0] == "a")
                .then_some(())
        },
    )
    .await;
    assert_eq!(
        metric("vantage_probe_overloaded", &[("region", "a")]).await,
        1.0
    );
    assert_eq!(
        metric("vantage_prober_overloaded", &[("region", "a")]).await,
        1.0
    );
    assert!(metric("vantage_probe_late_starts_total", &[("region", "a")]).await >= 5.0);
    assert_eq!(
        metric("vantage_probe_checks_in_flight_max", &[("region", "a")]).await,
        2.0
    );

    // While it lasts (4 s, 4 intervals), every good endpoint stays Up and answered, and the
    // stuck checks that timed out after a late start count as local, not as the endpoint's.
    let until = tokio::time::Instant::now() + Duration::from_secs(4);
    while tokio::time::Instant::now() < until {
        let status = vantage.status().await;
        assert!(
            verdicts(&status, "g").iter().all(|v| v == "up"),
            "a good endpoint left Up during the overload: {:?}",
            status["endpoints"]
        );
        let answer = udp_query(
            vantage.dns,
            &query_message("good.example.com.", RecordType::A, false),
        )
        .await;
        assert_eq!(addresses(&answer), good);
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let local = eventually(
        Duration::from_secs(10),
        "a late stuck check counted as local",
        || async {
            let v = metric(
                "vantage_probes_total",
                &[("region", "a"), ("result", "local")],
            )
            .await;
            (v >= 1.0).then_some(v)
        },
    )
    .await;
    assert!(local >= 1.0);
    let status = vantage.status().await;
    let overloaded_vote = status["endpoints"]
        .as_array()
        .expect("endpoints")
        .iter()
        .flat_map(|e| e["votes"].as_array().cloned().unwrap_or_default())
        .any(|v| v["overloaded"] == true);
    assert!(overloaded_vote, "no vote marked overloaded: {status}");

    // The stuck backend answers again: the checks catch up, the prober leaves overload and
    // every endpoint is Up.
    backends[1].set(Mode::Healthy);
    eventually(
        Duration::from_secs(30),
        "the prober to keep up again",
        || async {
            let status = vantage.status().await;
            (status["probers"][0]["overloaded"] == false
                && verdicts(&status, "s").iter().all(|v| v == "up")
                && verdicts(&status, "g").iter().all(|v| v == "up"))
            .then_some(())
        },
    )
    .await;
    assert_eq!(
        metric("vantage_probe_overloaded", &[("region", "a")]).await,
        0.0
    );
}

/// Series exported per 1,000 endpoints checked from 3 regions, by default: per region, and a
/// few per endpoint (its verdict and votes), none per endpoint *and* region.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_stay_bounded_per_endpoint_whatever_the_number_of_regions() {
    init();
    let dir = workdir();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let port = listener.local_addr().expect("addr").port();
    tokio::spawn(async move {
        while let Ok((socket, _)) = listener.accept().await {
            drop(socket);
        }
    });
    let records: String = (0..100)
        .map(|r| {
            let endpoints: Vec<String> = (0..10)
                .map(|e| {
                    format!(
                        "{{ name = \"e{r}-{e}\", address = \"10.0.{r}.{}\", check_address = \"127.0.0.1\" }}",
                        e + 1
                    )
                })
                .collect();
            format!(
                "[[record]]\nname = \"r{r}.example.com\"\npolicy = \"all\"\ncheck = \"t\"\nendpoints = [{}]\n",
                endpoints.join(", ")
            )
        })
        .collect();
    let config = format!(
        "[cluster]\nstale_after = \"10s\"\n[[prober]]\nregion = \"a\"\n[[prober]]\nregion = \"b\"\n[[prober]]\nregion = \"c\"\n\
         [check.t]\nprotocol = \"tcp\"\nport = {port}\ninterval = \"5s\"\ntimeout = \"1s\"\nrise = 1\nfall = 1\n\
         [dns]\nlisten = [\"127.0.0.1:0\"]\nzones_dir = \"{}\"\n[admin]\nlisten = \"127.0.0.1:0\"\n{records}",
        dir.path().join("zones").display()
    );
    let config_path = dir.path().join("fleet.toml");
    std::fs::write(&config_path, config).expect("config");
    let vantage = Vantage::dns(&config_path, dir.path());
    vantage.wait_ready().await;
    let text = eventually(
        Duration::from_secs(20),
        "every endpoint checked by every region",
        || async {
            let (_, text) = vantage.get("/metrics").await;
            let metrics = Exposition::parse(&text);
            let checked = ["a", "b", "c"].iter().all(|r| {
                metrics.value(
                    "vantage_prober_endpoints",
                    &[("region", r), ("state", "up")],
                ) == Some(1000.0)
            });
            checked.then_some(text)
        },
    )
    .await;
    let series: Vec<&str> = text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .collect();
    let per_endpoint = series.iter().filter(|l| l.contains("endpoint=\"")).count();
    let per_endpoint_region = series
        .iter()
        .filter(|l| l.contains("endpoint=\"") && l.contains("region=\""))
        .count();
    println!(
        "series: {} in all, {per_endpoint} with an endpoint label, {} bytes, for 1,000 endpoints x 3 regions",
        series.len(),
        text.len()
    );
    assert_eq!(
        per_endpoint_region, 0,
        "series per endpoint and region exported by default"
    );
    assert!(
        per_endpoint <= 8 * 1000,
        "{per_endpoint} series per 1,000 endpoints"
    );
    assert!(series.len() <= 7 * 1000 + 1000, "{} series", series.len());
}
