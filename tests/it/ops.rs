//! Operations: the status page in a real browser (headless Chromium), overrides through the
//! CLI, `vantage status`, and the deployment files checked against a running vantage.

use std::{path::Path, process::Command, time::Duration};

use hickory_proto::rr::RecordType;

use crate::support::*;

/// The text of the row of `endpoint` in the rendered matrix.
fn matrix_row(dom: &str, endpoint: &str) -> String {
    let start = dom
        .find(&format!("data-endpoint=\"{endpoint}\""))
        .unwrap_or_else(|| panic!("no row for {endpoint} in the page"));
    let end = dom[start..].find("</tr>").map_or(dom.len(), |e| start + e);
    dom[start..end].to_string()
}

fn vantage_cli(args: &[&str]) -> (i32, String, String) {
    run_vantage(args, &[])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_page_shows_a_failure_and_a_drain_in_a_real_browser() {
    init();
    let dir = tempfile::tempdir().expect("tempdir");
    let demo = Vantage::demo(dir.path());
    demo.wait_ready().await;
    let admin = format!("http://{}", demo.admin);
    let www = || async {
        addresses(
            &udp_query(
                demo.dns,
                &query_message("www.example.com.", RecordType::A, false),
            )
            .await,
        )
    };

    let dom = rendered(demo.admin);
    assert!(dom.contains("www.example.com. A"), "records table rendered");
    assert!(
        matrix_row(&dom, "use1").contains("class=\"verdict\"><span class=\"up\">up</span>"),
        "{}",
        matrix_row(&dom, "use1")
    );
    assert!(
        dom.contains("data-region=\"ap-south\""),
        "endpoint x region matrix"
    );
    assert!(dom.contains("quorum 3 of 3"), "quorum state");
    // The header speaks of the service: every record on its primary (or all endpoints).
    assert!(
        dom.contains("every record answers its primary or all its endpoints"),
        "service header"
    );

    // A backend fails: the matrix follows.
    http_request(demo.admin, "POST", "/demo/backends/use1/fail").await;
    eventually(Duration::from_secs(8), "use1 Down", || async {
        let s = demo.status().await;
        s["endpoints"]
            .as_array()?
            .iter()
            .any(|e| e["id"] == "use1" && e["verdict"] == "down")
            .then_some(())
    })
    .await;
    let dom = rendered(demo.admin);
    let row = matrix_row(&dom, "use1");
    assert!(row.contains("<span class=\"down\">down</span>"), "{row}");
    assert!(row.contains("status"), "the failure kind is shown: {row}");
    // Now the header says the service is failed over, and names the record; its row is amber.
    let service = dom
        .split("id=\"service\">")
        .nth(1)
        .and_then(|rest| rest.split("</div>").next())
        .expect("service header");
    assert!(
        service.contains("failed over or degraded") && service.contains("www.example.com."),
        "service header after a failure: {service}"
    );
    assert!(
        dom.contains("data-record=\"www.example.com.\" class=\"row-warn\""),
        "the failed-over record is marked"
    );
    assert!(
        dom.contains("up</span> → <span class=\"down\">down"),
        "the transition is listed"
    );

    // Drain euw1 from the CLI: it leaves the DNS answer while still probed.
    let token = demo
        .stdout_rest
        .lock()
        .expect("lock")
        .iter()
        .find_map(|l| {
            l.split_whitespace()
                .skip_while(|w| *w != "--token-file")
                .nth(1)
                .map(str::to_string)
        })
        .expect("the demo prints the token file");
    let (code, out, err) = vantage_cli(&[
        "override",
        "--admin",
        &admin,
        "--token-file",
        &token,
        "drain",
        "euw1",
        "--reason",
        "maintenance",
        "--for",
        "10m",
        "--by",
        "alice",
    ]);
    assert_eq!(code, 0, "{out}{err}");
    eventually(
        Duration::from_secs(5),
        "www to skip the drained euw1",
        || async {
            (www().await == vec!["127.0.0.4".parse::<std::net::IpAddr>().expect("ip")])
                .then_some(())
        },
    )
    .await;
    let dom = rendered(demo.admin);
    assert!(
        matrix_row(&dom, "euw1").contains("drain: maintenance"),
        "{}",
        matrix_row(&dom, "euw1")
    );
    assert!(dom.contains("alice"), "the audit shows who");
    let shots = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/artifacts");
    std::fs::create_dir_all(&shots).expect("artifacts dir");
    let shot = shots.join("status-page.png");
    chromium(
        &format!("{admin}/"),
        &[
            "--window-size=1400,1400",
            &format!("--screenshot={}", shot.display()),
        ],
    );
    assert!(std::fs::metadata(&shot).expect("screenshot").len() > 10_000);

    // The terminal view says the same.
    let (code, out, _) = vantage_cli(&["status", "--admin", &admin]);
    assert_eq!(code, 0);
    assert!(
        out.contains("www.example.com. A  failover  127.0.0.4"),
        "{out}"
    );
    assert!(out.contains("(drain by override)"), "{out}");
    let (_, text) = demo.get("/metrics").await;
    let metrics = Exposition::parse(&text);
    assert_eq!(
        metrics.value(
            "vantage_endpoint_override",
            &[("endpoint", "euw1"), ("action", "drain")]
        ),
        Some(1.0)
    );
    assert!(
        metrics
            .value(
                "vantage_dns_managed_answers_total",
                &[("record", "www.example.com."), ("qtype", "A")]
            )
            .is_some()
    );

    // A wrong token is refused.
    let bad = dir.path().join("bad-token");
    std::fs::write(&bad, "nope").expect("write");
    let (code, _, err) = vantage_cli(&[
        "override",
        "--admin",
        &admin,
        "--token-file",
        bad.to_str().expect("path"),
        "clear",
        "euw1",
    ]);
    assert_eq!(code, 1);
    assert!(err.contains("401"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overrides_survive_a_restart_and_expire_by_themselves() {
    init();
    let dir = workdir();
    let (_pki, ips, backends) = app_backends(dir.path()).await;
    std::fs::write(
        dir.path().join("admin-token"),
        "admin-token-for-tests-0123456789\n",
    )
    .expect("token");
    let path = dir.path().join("fleet.toml");
    std::fs::write(
        &path,
        format!(
            r#"
[[prober]]
region = "r1"
[check.web]
port = {port}
host = "app.test"
interval = "200ms"
timeout = "150ms"
rise = 1
ca_file = "ca.pem"
[dns]
listen = ["127.0.0.1:0"]
[admin]
listen = "127.0.0.1:0"
token_file = "admin-token"
state_dir = "state"
[[record]]
name = "www.example.com"
endpoints = [{{ name = "a", address = "{a}" }}, {{ name = "b", address = "{b}" }}]
"#,
            port = backends[0].addr.port(),
            a = ips[0],
            b = ips[1],
        ),
    )
    .expect("config");
    let config = path.to_str().expect("path");
    let start = || Vantage::start(&["dns", "--config", config], dir.path());
    let mut dns = start();
    dns.wait_ready().await;
    let admin = format!("http://{}", dns.admin);
    let (code, out, err) = vantage_cli(&[
        "override",
        "--config",
        config,
        "--admin",
        &admin,
        "down",
        "a",
        "--reason",
        "failover drill",
        "--for",
        "1h",
    ]);
    assert_eq!(code, 0, "{out}{err}");
    let www = |dns: &Vantage| {
        let addr = dns.dns;
        async move {
            addresses(
                &udp_query(
                    addr,
                    &query_message("www.example.com.", RecordType::A, false),
                )
                .await,
            )
        }
    };
    eventually(
        Duration::from_secs(5),
        "www to move off the forced-down endpoint",
        || async { (www(&dns).await == vec![std::net::IpAddr::V4(ips[1])]).then_some(()) },
    )
    .await;

    // Restart: the override is still in force.
    assert!(dns.terminate().success());
    let dns = start();
    dns.wait_ready().await;
    let admin = format!("http://{}", dns.admin);
    assert_eq!(
        www(&dns).await,
        vec![std::net::IpAddr::V4(ips[1])],
        "the override survived the restart"
    );
    let (code, out, _) = vantage_cli(&["override", "--admin", &admin, "list"]);
    assert_eq!(code, 0);
    assert!(
        out.contains("force_down") && out.contains("failover drill"),
        "{out}"
    );

    // A short override expires by itself, and the audit log records everything.
    let (code, _, err) = vantage_cli(&[
        "override",
        "--config",
        config,
        "--admin",
        &admin,
        "clear",
        "a",
        "--reason",
        "drill over",
    ]);
    assert_eq!(code, 0, "{err}");
    let (code, _, err) = vantage_cli(&[
        "override", "--config", config, "--admin", &admin, "drain", "b", "--reason", "blip",
        "--for", "1s",
    ]);
    assert_eq!(code, 0, "{err}");
    eventually(
        Duration::from_secs(8),
        "the 1s override to expire",
        || async {
            let s = dns.status().await;
            (s["overrides"].as_array()?.is_empty()
                && s["audit"]
                    .as_array()?
                    .iter()
                    .any(|a| a["what"] == "expired"))
            .then_some(())
        },
    )
    .await;
    let log = std::fs::read_to_string(dir.path().join("state/audit.log")).expect("audit log");
    let whats: Vec<String> = log
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).expect("JSON line")["what"]
                .as_str()
                .unwrap_or("")
                .to_string()
        })
        .collect();
    assert_eq!(whats, vec!["set", "clear", "set", "expired"], "{log}");
    // Unknown endpoints and missing reasons are refused with a clear error.
    let (code, _, err) = vantage_cli(&[
        "override", "--config", config, "--admin", &admin, "drain", "nope", "--reason", "x",
    ]);
    assert_eq!(code, 1);
    assert!(err.contains("no endpoint \"nope\""), "{err}");
}

/// `vantage_*` metric names used in a text (rules, dashboard), without histogram suffixes.
fn metric_names(text: &str) -> Vec<String> {
    let mut names: Vec<String> = Vec::new();
    let bytes = text.as_bytes();
    let mut i = 0;
    while let Some(pos) = text[i..].find("vantage_") {
        let start = i + pos;
        let mut end = start;
        while end < bytes.len() && (bytes[end].is_ascii_alphanumeric() || bytes[end] == b'_') {
            end += 1;
        }
        let mut name = text[start..end].to_string();
        for suffix in ["_bucket", "_sum", "_count"] {
            if let Some(base) = name.strip_suffix(suffix) {
                name = base.to_string();
            }
        }
        if !names.contains(&name) {
            names.push(name);
        }
        i = end;
    }
    names
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deployment_files_are_valid_and_use_metrics_that_exist() {
    init();
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy");
    let dashboard =
        std::fs::read_to_string(root.join("grafana/vantage-dashboard.json")).expect("dashboard");
    let _: serde_json::Value = serde_json::from_str(&dashboard).expect("dashboard JSON");
    for args in [
        vec!["check", "rules", "deploy/prometheus/alerts.yml"],
        vec!["check", "config", "deploy/prometheus/prometheus.yml"],
    ] {
        let out = Command::new("promtool")
            .args(&args)
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .output()
            .expect("promtool (tests/run installs the prometheus package)");
        assert!(
            out.status.success(),
            "promtool {args:?}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    // Every metric the rules and the dashboard use exists in a running vantage's exposition.
    let demo_dir = tempfile::tempdir().expect("tempdir");
    let demo = Vantage::demo(demo_dir.path());
    demo.wait_ready().await;
    udp_query(
        demo.dns,
        &query_message("www.example.com.", RecordType::A, false),
    )
    .await;
    // The drill refuses to start while anything is unsettled (a quorum, every endpoint Up):
    // wait for that first, as an operator would.
    eventually(
        Duration::from_secs(30),
        "the demo's quorum and every endpoint Up",
        || async {
            let status = demo.status().await;
            (status["quorum"]["state"] == "quorum"
                && status["endpoints"]
                    .as_array()?
                    .iter()
                    .all(|e| e["verdict"] == "up"))
            .then_some(())
        },
    )
    .await;
    // The drill README shows, against the demo (its result feeds the drill metrics).
    let instructions = demo.stdout_rest.lock().expect("lock").join("\n");
    let fleet = instructions
        .split("vantage drill --config ")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap_or_else(|| panic!("the demo names its fleet file for drills:\n{instructions}"))
        .to_string();
    let (code, stdout, stderr) = tokio::task::spawn_blocking(move || {
        run_vantage(
            &["drill", "--config", &fleet, "--record", "www.example.com"],
            &[],
        )
    })
    .await
    .expect("drill");
    assert_eq!(code, 0, "stdout:\n{stdout}\nstderr:\n{stderr}");
    assert!(stdout.contains("target 10.00 s: met"), "{stdout}");
    assert!(stdout.contains("127.0.0.3"), "fails over to euw1: {stdout}");
    let (_, text) = demo.get("/metrics").await;
    // The exposition parses and lints clean for Prometheus itself (the families kept per
    // endpoint are written by vantage, not by the prometheus crate).
    let mut promtool = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("promtool");
    {
        use std::io::Write;
        promtool
            .stdin
            .take()
            .expect("stdin")
            .write_all(text.as_bytes())
            .expect("write the exposition to promtool");
    }
    let out = promtool.wait_with_output().expect("promtool");
    assert!(
        out.status.success(),
        "promtool check metrics: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains("vantage_endpoint_verdict{endpoint=")
            && text.contains("vantage_verdict_transitions_total{endpoint="),
        "per-endpoint families exported"
    );
    let exposition = Exposition::parse(&text);
    let rules = std::fs::read_to_string(root.join("prometheus/alerts.yml")).expect("rules");
    // Series of https checks only (the demo checks over http): failover.rs checks them; and
    // series that exist only while an override is set: the overrides test checks them.
    // And series of signed zones (the demo's is not): dnssec.rs checks them.
    let https_only = [
        "vantage_probe_tls_cert_expiry_timestamp_seconds",
        "vantage_endpoint_override",
        "vantage_dnssec_signing_failures_total",
        "vantage_dnssec_signature_expiry_earliest_timestamp_seconds",
        "vantage_dnssec_signature_refresh_seconds",
    ];
    for name in metric_names(&rules)
        .into_iter()
        .chain(metric_names(&dashboard))
        .filter(|name| !https_only.contains(&name.as_str()))
    {
        assert!(
            exposition.types.contains_key(&name),
            "{name} is used by the rules or the dashboard but not exported"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_applies_a_good_configuration_and_keeps_the_old_one_on_a_bad_one() {
    init();
    let dir = workdir();
    let (_pki, ips, backends) = app_backends(dir.path()).await;
    std::fs::write(
        dir.path().join("admin-token"),
        "admin-token-for-tests-0123456789\n",
    )
    .expect("token");
    let path = dir.path().join("fleet.toml");
    let config = |records: &str| {
        format!(
            r#"
[[prober]]
region = "r1"
[check.web]
port = {port}
host = "app.test"
interval = "200ms"
timeout = "150ms"
rise = 1
ca_file = "ca.pem"
[dns]
listen = ["127.0.0.1:0"]
[admin]
listen = "127.0.0.1:0"
token_file = "admin-token"
[[record]]
name = "www.example.com"
endpoints = [{{ name = "a", address = "{a}" }}]
{records}
"#,
            port = backends[0].addr.port(),
            a = ips[0],
        )
    };
    std::fs::write(&path, config("")).expect("config");
    let cfg = path.to_str().expect("path");
    let dns = Vantage::start(&["dns", "--config", cfg], dir.path());
    dns.wait_ready().await;
    let admin = format!("http://{}", dns.admin);
    let ask = |name: &'static str| {
        let addr = dns.dns;
        async move { udp_query(addr, &query_message(name, RecordType::A, false)).await }
    };

    // A good change: a new managed record and a new static record.
    std::fs::write(&path, config(&format!("[[record]]\nname = \"api.example.com\"\nendpoints = [{{ name = \"b\", address = \"{}\" }}]\n", ips[1])))
        .expect("config");
    std::fs::write(
        dir.path().join("zones/example.com.zone"),
        format!("{EXAMPLE_ZONE}new IN A 192.0.2.77\n"),
    )
    .expect("zone");
    let (code, out, err) = vantage_cli(&["reload", "--config", cfg, "--admin", &admin]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("reloaded: 2 records"), "{out}");
    // The verdicts carried over: www never stops answering.
    let www = ask("www.example.com.").await;
    assert_eq!(
        addresses(&www),
        vec![std::net::IpAddr::V4(ips[0])],
        "{www:?}"
    );
    assert_eq!(
        addresses(&ask("new.example.com.").await),
        vec!["192.0.2.77".parse::<std::net::IpAddr>().expect("ip")]
    );
    eventually(
        Duration::from_secs(5),
        "the new record to answer",
        || async {
            (addresses(&ask("api.example.com.").await) == vec![std::net::IpAddr::V4(ips[1])])
                .then_some(())
        },
    )
    .await;

    // A bad change is refused with every problem; the previous configuration stays in service.
    std::fs::write(
        &path,
        config(
            "[[record]]\nname = \"bad.example.com\"\nendpoints = [{ address = \"300.1.1.1\" }]\n",
        ),
    )
    .expect("config");
    let (code, _, err) = vantage_cli(&["reload", "--config", cfg, "--admin", &admin]);
    assert_eq!(code, 1);
    assert!(
        err.contains("record[1].endpoints[0].address: \"300.1.1.1\" is not an IP address"),
        "{err}"
    );
    assert_eq!(
        addresses(&ask("api.example.com.").await),
        vec![std::net::IpAddr::V4(ips[1])],
        "still the previous configuration"
    );
    let (_, text) = dns.get("/metrics").await;
    let metrics = Exposition::parse(&text);
    assert_eq!(
        metrics.value("vantage_config_last_reload_successful", &[]),
        Some(0.0)
    );
    assert_eq!(
        metrics.value("vantage_config_reloads_total", &[("result", "failure")]),
        Some(1.0)
    );

    // SIGHUP reloads too: api goes away again.
    std::fs::write(&path, config("")).expect("config");
    dns.signal("HUP");
    eventually(
        Duration::from_secs(5),
        "api to be gone after SIGHUP",
        || async {
            (ask("api.example.com.").await.metadata.response_code
                == hickory_proto::op::ResponseCode::NXDomain)
                .then_some(())
        },
    )
    .await;
    let (_, text) = dns.get("/metrics").await;
    let metrics = Exposition::parse(&text);
    assert_eq!(
        metrics.value("vantage_config_reloads_total", &[("result", "success")]),
        Some(2.0)
    );
    assert_eq!(
        metrics.value("vantage_config_last_reload_successful", &[]),
        Some(1.0)
    );
}

#[test]
fn logs_carry_no_colour_off_a_terminal_and_can_be_json() {
    use std::io::BufRead;
    let dir = workdir();
    let path = dir.path().join("fleet.toml");
    std::fs::write(
        &path,
        "[[prober]]\nregion = \"a\"\n[dns]\nlisten = [\"127.0.0.1:0\"]\n[admin]\nlisten = \"127.0.0.1:0\"\n",
    )
    .expect("config");
    for format in ["text", "json"] {
        let stderr = dir.path().join(format!("{format}.log"));
        let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_vantage"))
            .args([
                "--log-format",
                format,
                "dns",
                "--config",
                path.to_str().expect("path"),
            ])
            .env_remove("NO_COLOR")
            .env("RUST_LOG", "info")
            .stdout(std::process::Stdio::piped())
            .stderr(std::fs::File::create(&stderr).expect("log file"))
            .spawn()
            .expect("vantage");
        // Serving once it prints where it listens; its start-up lines are logged by then.
        let mut line = String::new();
        std::io::BufReader::new(child.stdout.take().expect("stdout"))
            .read_line(&mut line)
            .expect("listening line");
        assert!(line.contains("listening"), "{line}");
        let _ = child.kill();
        let _ = child.wait();
        let log = std::fs::read_to_string(&stderr).expect("log");
        assert!(!log.trim().is_empty(), "nothing logged");
        assert!(
            !log.contains('\u{1b}'),
            "colour codes in a log file:\n{log}"
        );
        if format == "json" {
            for line in log.lines().filter(|l| !l.trim().is_empty()) {
                let event: serde_json::Value =
                    serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
                assert!(
                    event["level"].is_string() && event["message"].is_string(),
                    "{line}"
                );
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_file_runs_a_dns_server_and_a_reconciler_side_by_side() {
    init();
    let dir = workdir();
    let free_port = || {
        std::net::TcpListener::bind("127.0.0.1:0")
            .expect("bind")
            .local_addr()
            .expect("addr")
            .port()
    };
    let (dns_admin, route53_admin) = (free_port(), free_port());
    let path = dir.path().join("fleet.toml");
    std::fs::write(
        &path,
        format!(
            "[[prober]]\nregion = \"a\"\n[check.t]\nprotocol = \"tcp\"\nport = 9\n[dns]\nlisten = [\"127.0.0.1:0\"]\nzones_dir = \"{zones}\"\n\
             [admin]\nlisten = \"127.0.0.1:{dns_admin}\"\ntoken_file = \"admin-token\"\n\
             [route53]\nendpoint_url = \"http://127.0.0.1:9\"\nadmin_listen = \"127.0.0.1:{route53_admin}\"\n\
             [[record]]\nname = \"www.example.com\"\nendpoints = [{{ address = \"192.0.2.10\", check_address = \"127.0.0.1\" }}]\n\
             route53 = {{ zone_id = \"Z1\", owner = \"test\" }}\n",
            zones = dir.path().join("zones").display()
        ),
    )
    .expect("config");
    std::fs::write(
        dir.path().join("admin-token"),
        "admin-token-for-tests-0123456789\n",
    )
    .expect("token");
    let dns = Vantage::dns(&path, dir.path());
    let mut reconciler = Vantage::start_with_env(
        &["route53", "--config", path.to_str().expect("path")],
        dir.path(),
        &[
            ("AWS_ACCESS_KEY_ID", "test"),
            ("AWS_SECRET_ACCESS_KEY", "test"),
            ("AWS_EC2_METADATA_DISABLED", "true"),
        ],
    );
    assert_eq!(dns.admin.port(), dns_admin);
    assert_eq!(reconciler.admin.port(), route53_admin);
    assert_eq!(reconciler.get("/livez").await.0, 200);
    assert_eq!(dns.get("/livez").await.0, 200);
    // Each keeps its own state: the reconciler in state/route53, the DNS server in state.
    let state = dir.path().join("state");
    assert!(
        state.join("route53").is_dir(),
        "the reconciler's state directory"
    );

    // Each keeps its own overrides (file backend), so an override given with the file reaches
    // both: the DNS server and Route53 never disagree because of one.
    let config = path.to_str().expect("path");
    async fn drained(vantage: &Vantage) -> bool {
        let (_, body) = vantage.get("/v1/overrides").await;
        body.contains("192.0.2.10")
    }
    let drain = || {
        let (code, out, err) = run_vantage(
            &[
                "override",
                "--config",
                config,
                "drain",
                "192.0.2.10",
                "--reason",
                "test",
                "--for",
                "10m",
            ],
            &[],
        );
        assert_eq!(code, 0, "{out}{err}");
        out
    };
    let out = drain();
    assert!(
        out.contains("also applied to the Route53 reconciler"),
        "{out}"
    );
    assert!(drained(&dns).await && drained(&reconciler).await);
    let (code, out, err) = run_vantage(
        &["override", "--config", config, "clear", "192.0.2.10"],
        &[],
    );
    assert_eq!(code, 0, "{out}{err}");
    assert!(!drained(&dns).await && !drained(&reconciler).await, "{out}");
    // On a host where no reconciler runs, the DNS server takes it and the command says so.
    assert!(reconciler.terminate().success());
    let out = drain();
    assert!(out.contains("no Route53 reconciler answers"), "{out}");
    assert!(drained(&dns).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_command_line_helps_reads_as_json_and_survives_closed_pipes() {
    init();
    let dir = workdir();
    let port = tcp_check_target().await;
    let path = dir.path().join("fleet.toml");
    std::fs::write(
        &path,
        format!(
            "[[prober]]\nregion = \"a\"\n[check.t]\nprotocol = \"tcp\"\nport = {port}\ninterval = \"200ms\"\ntimeout = \"100ms\"\nrise = 1\n\
             [dns]\nlisten = [\"127.0.0.1:0\"]\nzones_dir = \"{}\"\n[admin]\nlisten = \"127.0.0.1:0\"\n\
             [[record]]\nname = \"www.example.com\"\nendpoints = [{{ name = \"one\", address = \"192.0.2.10\", check_address = \"127.0.0.1\" }}]\n",
            dir.path().join("zones").display()
        ),
    )
    .expect("config");
    let config = path.to_str().expect("path");
    // Every command and subcommand shows examples (found from the help itself, so a new one
    // without is caught); `check-config` takes --config like every other command.
    fn commands(help: &str) -> Vec<String> {
        help.lines()
            .skip_while(|l| !l.starts_with("Commands:"))
            .skip(1)
            .take_while(|l| l.starts_with("  "))
            .filter_map(|l| l.split_whitespace().next())
            .filter(|c| *c != "help")
            .map(str::to_string)
            .collect()
    }
    let (code, top, _) = run_vantage(&["--help"], &[]);
    assert_eq!(code, 0);
    assert!(top.contains("Example"), "vantage --help:\n{top}");
    let mut seen = 0;
    for command in commands(&top) {
        let (code, out, _) = run_vantage(&[&command, "--help"], &[]);
        assert_eq!(code, 0);
        assert!(out.contains("Example"), "vantage {command} --help:\n{out}");
        seen += 1;
        for sub in commands(&out) {
            let (code, out, _) = run_vantage(&[&command, &sub, "--help"], &[]);
            assert_eq!(code, 0);
            assert!(
                out.contains("Example"),
                "vantage {command} {sub} --help:\n{out}"
            );
            seen += 1;
        }
    }
    assert!(seen >= 18, "{seen} commands found in:\n{top}");
    let (code, out, err) = run_vantage(&["check-config", "--config", config], &[]);
    assert_eq!(code, 0, "{out}{err}");
    let (code, out, err) = run_vantage(&["check-config", config], &[]);
    assert_eq!(code, 0, "{out}{err}");

    let vantage = Vantage::dns(&path, dir.path());
    vantage.wait_ready().await;
    let admin = vantage.admin.to_string(); // without a scheme, as people type it
    let (code, out, err) = run_vantage(&["status", "--admin", &admin], &[]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("VOTES") && out.contains("a:up"), "{out}");
    let (code, out, err) = run_vantage(&["status", "--admin", &admin, "--json"], &[]);
    assert_eq!(code, 0, "{err}");
    let doc: serde_json::Value = serde_json::from_str(&out).expect("status --json is JSON");
    assert_eq!(doc["endpoints"][0]["id"], "one");
    let (code, out, err) = run_vantage(&["override", "--admin", &admin, "list", "--json"], &[]);
    assert_eq!(code, 0, "{err}");
    let doc: serde_json::Value = serde_json::from_str(&out).expect("list --json is JSON");
    assert!(doc["overrides"].is_array(), "{doc}");
    // A reader that goes away (`vantage status | head -1`) is not a crash.
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_vantage"))
        .args(["status", "--admin", &admin])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("vantage");
    drop(child.stdout.take());
    let out = child.wait_with_output().expect("wait");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(!err.contains("panicked"), "{err}");
    // Nothing listening: a sentence, not a library's error.
    let (code, _, err) = run_vantage(&["status", "--admin", "127.0.0.1:1"], &[]);
    assert_eq!(code, 1);
    assert!(
        err.contains("cannot reach the admin API at http://127.0.0.1:1/: nothing answers there"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_keeps_its_token_private_and_leaves_nothing_behind() {
    use std::os::unix::fs::PermissionsExt;
    init();
    let dir = workdir();
    let mut demo = Vantage::demo(dir.path());
    // Its files go to $TMPDIR, which the test points at its own directory.
    let state = dir.path().join(format!("vantage-demo-{}", demo.pid()));
    let token = state.join("admin-token");
    let mode = std::fs::metadata(&token)
        .expect("token")
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode, 0o600, "the admin token is readable by others");
    let mode = std::fs::metadata(&state)
        .expect("state")
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode, 0o700);
    assert!(demo.terminate().success());
    assert!(!state.exists(), "{} left behind", state.display());
    // A demo that cannot start (its admin port is taken) leaves nothing either.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = taken.local_addr().expect("addr").to_string();
    let child = std::process::Command::new(env!("CARGO_BIN_EXE_vantage"))
        .args([
            "demo",
            "--dns-listen",
            "127.0.0.1:0",
            "--admin-listen",
            &addr,
        ])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("vantage demo");
    let state = std::env::temp_dir().join(format!("vantage-demo-{}", child.id()));
    let out = child.wait_with_output().expect("wait");
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!state.exists(), "{} left behind", state.display());
}
