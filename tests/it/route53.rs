//! Route53 automation end to end: the real binary and the real AWS SDK against a Route53
//! emulator started by the test: the strict one the tests own (tests/route53/emulator.py),
//! and stock moto (installed by tests/run) for a compatibility run.

use std::{
    net::{IpAddr, SocketAddr},
    process::{Child, Command, Stdio},
    time::Duration,
};

use aws_sdk_route53::{
    Client,
    config::{BehaviorVersion, Credentials, Region},
    types::{Change, ChangeAction, ChangeBatch, ResourceRecord, ResourceRecordSet, RrType},
};

use crate::support::*;

/// A Route53 emulator on a free loopback port, killed on drop: the strict one the tests own
/// (tests/route53/emulator.py: the API reference's batch rules, each with its source), or stock
/// moto for a compatibility run.
pub(crate) struct Emulator {
    child: Child,
    pub url: String,
    pub addr: SocketAddr,
}

impl Emulator {
    /// The strict emulator; changes stay PENDING for `pending`.
    pub(crate) async fn strict() -> Emulator {
        Self::start_with(&["--pending", "1"]).await
    }

    async fn start_with(options: &[&str]) -> Emulator {
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/route53/emulator.py");
        Self::spawn(|python, port| {
            let mut command = Command::new(python);
            command
                .args([script, "--port", &port.to_string()])
                .args(options);
            command
        })
        .await
    }

    /// Stock moto (it does not enforce every rule: see README, Route53).
    async fn moto() -> Emulator {
        Self::spawn(|python, port| {
            let mut command = Command::new(python);
            command.args([
                "-m",
                "moto.server",
                "-H",
                "127.0.0.1",
                "-p",
                &port.to_string(),
            ]);
            command
        })
        .await
    }

    async fn spawn(command: impl Fn(&str, u16) -> Command) -> Emulator {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("free port")
            .port();
        // tests/run installs moto into a virtual environment and names its Python here.
        let python = std::env::var("VANTAGE_TEST_PYTHON").unwrap_or_else(|_| "python3".into());
        let child = command(&python, port)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start the Route53 emulator (tests/run installs moto; or set VANTAGE_TEST_PYTHON to a Python with moto[server])");
        let url = format!("http://127.0.0.1:{port}");
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().expect("addr");
        eventually(
            Duration::from_secs(30),
            "the Route53 emulator to listen",
            || async { tokio::net::TcpStream::connect(addr).await.ok().map(|_| ()) },
        )
        .await;
        Emulator { child, url, addr }
    }

    /// Batches that touch these names are refused (InvalidChangeBatch), as Route53 refuses
    /// a change it will not take (strict emulator only).
    async fn refuse(&self, names: &[&str]) {
        let body = serde_json::json!({ "names": names }).to_string();
        let (code, _) = http_request_with(
            self.addr,
            "POST",
            "/_emulator/refuse",
            &[
                ("host", &self.addr.to_string()),
                ("content-type", "application/json"),
            ],
            &body,
        )
        .await;
        assert_eq!(code, 200);
    }

    /// Which of the records `r0..r{n}` hold exactly `ip` in `zone`.
    pub(crate) async fn holding(&self, zone: &str, n: usize, ip: &str) -> Vec<usize> {
        let (_, body) = http_get(self.addr, "/_emulator/state").await;
        let state: serde_json::Value = serde_json::from_str(&body).expect("state JSON");
        let mut found: Vec<usize> = state[zone]
            .as_array()
            .expect("the zone")
            .iter()
            .filter(|s| s["type"] == "A" && s["values"] == serde_json::json!([ip]))
            .filter_map(|s| {
                s["name"]
                    .as_str()?
                    .strip_prefix('r')?
                    .strip_suffix(".example.com.")?
                    .parse::<usize>()
                    .ok()
            })
            .filter(|i| *i < n)
            .collect();
        found.sort_unstable();
        found
    }

    /// Every API call so far: operation, wall-clock time (Unix seconds), HTTP status.
    pub(crate) async fn calls(&self) -> Vec<(String, f64, u16)> {
        let (_, body) = http_get(self.addr, "/_emulator/calls").await;
        let calls: serde_json::Value = serde_json::from_str(&body).expect("calls JSON");
        calls
            .as_array()
            .expect("calls")
            .iter()
            .map(|c| {
                (
                    c["op"].as_str().unwrap_or("").to_string(),
                    c["unix"].as_f64().unwrap_or(0.0),
                    c["status"].as_u64().unwrap_or(0) as u16,
                )
            })
            .collect()
    }
}

impl Drop for Emulator {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub(crate) fn client(url: &str) -> Client {
    let config = aws_sdk_route53::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new("us-east-1"))
        .endpoint_url(url)
        .credentials_provider(Credentials::new("test", "test", None, None, "test"))
        .build();
    Client::from_conf(config)
}

pub(crate) async fn create_zone(client: &Client, name: &str) -> String {
    let out = client
        .create_hosted_zone()
        .name(name)
        .caller_reference(format!("vantage-test-{}", std::process::id()))
        .send()
        .await
        .expect("create zone");
    out.hosted_zone()
        .expect("zone")
        .id()
        .trim_start_matches("/hostedzone/")
        .to_string()
}

async fn put(client: &Client, zone: &str, name: &str, rtype: RrType, value: &str) {
    put_values(client, zone, name, rtype, &[value], 300).await;
}

/// Writes a record set as an operator would, with UPSERT (moto remembers every CREATE and
/// refuses a later CREATE equal to one of them even after the batch deleted the set).
async fn put_values(
    client: &Client,
    zone: &str,
    name: &str,
    rtype: RrType,
    values: &[&str],
    ttl: i64,
) {
    let mut set = ResourceRecordSet::builder()
        .name(name)
        .r#type(rtype)
        .ttl(ttl);
    for value in values {
        set = set.resource_records(ResourceRecord::builder().value(*value).build().expect("rr"));
    }
    let set = set.build().expect("set");
    client
        .change_resource_record_sets()
        .hosted_zone_id(zone)
        .change_batch(
            ChangeBatch::builder()
                .changes(
                    Change::builder()
                        .action(ChangeAction::Upsert)
                        .resource_record_set(set)
                        .build()
                        .expect("change"),
                )
                .build()
                .expect("batch"),
        )
        .send()
        .await
        .expect("put record");
}

/// (name, type) -> sorted values, for every record set of the zone.
async fn records(client: &Client, zone: &str) -> Vec<(String, String, Vec<String>)> {
    let out = client
        .list_resource_record_sets()
        .hosted_zone_id(zone)
        .send()
        .await
        .expect("list");
    let mut v: Vec<(String, String, Vec<String>)> = out
        .resource_record_sets()
        .iter()
        .map(|s| {
            let mut values: Vec<String> = s
                .resource_records()
                .iter()
                .map(|r| r.value().to_string())
                .collect();
            values.sort();
            (
                s.name().to_string(),
                s.r#type().as_str().to_string(),
                values,
            )
        })
        .collect();
    v.sort();
    v
}

fn values_of(
    records: &[(String, String, Vec<String>)],
    name: &str,
    rtype: &str,
) -> Option<Vec<String>> {
    records
        .iter()
        .find(|(n, t, _)| n == name && t == rtype)
        .map(|(_, _, v)| v.clone())
}

fn config(
    dir: &std::path::Path,
    zone: &str,
    endpoint: &str,
    ips: &[std::net::Ipv4Addr],
    port: u16,
    ca: &std::path::Path,
) -> String {
    format!(
        r#"
[[prober]]
region = "r1"
[check.web]
port = {port}
host = "app.test"
path = "/healthz"
interval = "200ms"
timeout = "150ms"
rise = 1
fall = 2
ca_file = "{ca}"
[admin]
listen = "127.0.0.1:0"
[dns]
zones_dir = "{zones}"
[route53]
endpoint_url = "{endpoint}"
interval = "1s"
insync_timeout = "5s"

[[record]]
name = "www.example.com"
policy = "failover"
endpoints = [{{ name = "a", address = "{a}" }}, {{ name = "b", address = "{b}" }}]
route53 = {{ zone_id = "{zone}", owner = "test" }}

[[record]]
name = "api.example.com"
policy = "all"
endpoints = [{{ name = "a", address = "{a}" }}, {{ name = "b", address = "{b}" }}]
route53 = {{ zone_id = "{zone}", owner = "test" }}

[[record]]
name = "taken.example.com"
endpoints = [{{ name = "a", address = "{a}" }}]
route53 = {{ zone_id = "{zone}", owner = "test" }}
"#,
        ca = ca.display(),
        zones = dir.join("zones").display(),
        a = ips[0],
        b = ips[1],
    )
}

pub(crate) fn vantage_env() -> [(&'static str, &'static str); 3] {
    [
        ("AWS_ACCESS_KEY_ID", "test"),
        ("AWS_SECRET_ACCESS_KEY", "test"),
        ("AWS_EC2_METADATA_DISABLED", "true"),
    ]
}

fn plan(path: &std::path::Path, json: bool) -> (i32, String, String) {
    let mut args = vec!["plan", "--config", path.to_str().expect("path")];
    if json {
        args.push("--json");
    }
    run_vantage(&args, &vantage_env())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failover_is_pushed_to_route53_touching_only_owned_records() {
    failover_scenario(Emulator::strict().await, true).await;
}

/// The same against stock moto, which refuses a failback (a CREATE equal to an earlier one).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failover_on_stock_moto() {
    failover_scenario(Emulator::moto().await, false).await;
}

async fn failover_scenario(moto: Emulator, failback: bool) {
    init();
    let r53 = client(&moto.url);
    let zone = create_zone(&r53, "example.com.").await;
    put(&r53, &zone, "mail.example.com.", RrType::A, "192.0.2.25").await;
    put(
        &r53,
        &zone,
        "taken.example.com.",
        RrType::A,
        "198.51.100.77",
    )
    .await;
    let before = records(&r53, &zone).await;

    let dir = workdir();
    let (pki, ips, backends) = app_backends(dir.path()).await;
    let path = dir.path().join("fleet.toml");
    std::fs::write(
        &path,
        config(
            dir.path(),
            &zone,
            &moto.url,
            &ips,
            backends[0].addr.port(),
            &pki.ca_file,
        ),
    )
    .expect("config");

    // Dry run first: changes are pending (exit 3), readable and as JSON; nothing is written.
    let (code, stdout, stderr) = plan(&path, false);
    assert_eq!(code, 3, "{stdout}\n{stderr}");
    assert!(
        stdout.contains(&format!("+ create www.example.com. 30 A {}", ips[0])),
        "{stdout}"
    );
    assert!(
        stdout.contains("! conflict taken.example.com. A"),
        "{stdout}"
    );
    let (code, stdout, _) = plan(&path, true);
    assert_eq!(code, 3);
    let doc: serde_json::Value = serde_json::from_str(stdout.trim()).expect("plan JSON");
    assert_eq!(doc["pending"], true);
    assert_eq!(
        records(&r53, &zone).await,
        before,
        "a dry run writes nothing"
    );

    let mut reconciler = Vantage::start_with_env(
        &["route53", "--config", path.to_str().expect("path")],
        dir.path(),
        &vantage_env(),
    );
    let www = |ip: IpAddr| vec![ip.to_string()];
    eventually(
        Duration::from_secs(20),
        "www and api to be created in Route53",
        || async {
            let now = records(&r53, &zone).await;
            (values_of(&now, "www.example.com.", "A") == Some(www(IpAddr::V4(ips[0])))
                && values_of(&now, "api.example.com.", "A").is_some_and(|v| v.len() == 2)
                && values_of(&now, "_vantage.a.www.example.com.", "TXT").is_some())
            .then_some(())
        },
    )
    .await;
    let (code, stdout, _) = plan(&path, false);
    assert_eq!(code, 0, "converged: {stdout}");

    // The primary fails: the record flips, the active-active record drops it.
    backends[0].stop();
    eventually(
        Duration::from_secs(20),
        "www to fail over in Route53",
        || async {
            let now = records(&r53, &zone).await;
            (values_of(&now, "www.example.com.", "A") == Some(www(IpAddr::V4(ips[1])))
                && values_of(&now, "api.example.com.", "A") == Some(www(IpAddr::V4(ips[1]))))
            .then_some(())
        },
    )
    .await;

    // Foreign records are untouched; the unowned one is reported as a conflict.
    let now = records(&r53, &zone).await;
    assert_eq!(
        values_of(&now, "mail.example.com.", "A"),
        values_of(&before, "mail.example.com.", "A")
    );
    assert_eq!(
        values_of(&now, "taken.example.com.", "A"),
        Some(vec!["198.51.100.77".to_string()])
    );
    assert_eq!(
        values_of(&now, "_vantage.a.taken.example.com.", "TXT"),
        None
    );
    let status = reconciler.status().await;
    let conflicts = status["route53"][&zone]["conflicts"]
        .as_array()
        .unwrap_or_else(|| panic!("conflicts in {status}"))
        .clone();
    assert!(
        conflicts
            .iter()
            .any(|c| c["key"]["name"] == "taken.example.com."),
        "{status}"
    );
    let (_, text) = reconciler.get("/metrics").await;
    let metrics = Exposition::parse(&text);
    assert_eq!(
        metrics.value(
            "vantage_route53_ownership_conflicts",
            &[("record", "taken.example.com.")]
        ),
        Some(1.0)
    );
    assert!(
        metrics
            .value("vantage_route53_changes_total", &[("action", "update")])
            .unwrap_or(0.0)
            >= 2.0
    );
    assert!(
        metrics
            .value(
                "vantage_route53_api_calls_total",
                &[("operation", "ChangeResourceRecordSets"), ("result", "ok")]
            )
            .unwrap_or(0.0)
            >= 2.0
    );
    assert!(
        metrics
            .value("vantage_route53_last_sync_timestamp_seconds", &[])
            .unwrap_or(0.0)
            > 0.0
    );

    // Each record's Route53 state, everywhere an operator looks: the status document, the
    // metrics, `vantage status` and the status page (its header and Route53 column).
    let status = eventually(Duration::from_secs(10), "www in sync", || async {
        let status = reconciler.status().await;
        let www = status["records"]
            .as_array()?
            .iter()
            .find(|r| r["name"] == "www.example.com.")?
            .clone();
        (www["route53"]["state"] == "in_sync").then_some(status)
    })
    .await;
    let taken = status["records"]
        .as_array()
        .expect("records")
        .iter()
        .find(|r| r["name"] == "taken.example.com.")
        .expect("taken")
        .clone();
    assert_eq!(taken["route53"]["state"], "conflict", "{taken}");
    assert!(
        taken["route53"]["reason"]
            .as_str()
            .is_some_and(|r| r.contains("ownership marker")),
        "{taken}"
    );
    // The metrics follow within one reconciler tick.
    eventually(
        Duration::from_secs(5),
        "the record states in the metrics",
        || async {
            let (_, text) = reconciler.get("/metrics").await;
            let metrics = Exposition::parse(&text);
            [
                ("taken.example.com.", "conflict"),
                ("www.example.com.", "in_sync"),
            ]
            .iter()
            .all(|(record, state)| {
                metrics.value(
                    "vantage_route53_record_state",
                    &[("record", record), ("type", "A"), ("state", state)],
                ) == Some(1.0)
            })
            .then_some(())
        },
    )
    .await;
    let (code, out, err) = run_vantage(
        &["status", "--admin", &format!("http://{}", reconciler.admin)],
        &[],
    );
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("ROUTE53") && out.contains("conflict: exists without our ownership marker"),
        "{out}"
    );
    let dom = rendered(reconciler.admin);
    assert!(dom.contains("<th>Route53</th>"), "the Route53 column");
    let row = |name: &str| {
        let start = dom
            .find(&format!("data-record=\"{name}\""))
            .unwrap_or_else(|| panic!("no row for {name}"));
        let end = dom[start..].find("</tr>").map_or(dom.len(), |e| start + e);
        dom[start..end].to_string()
    };
    assert!(
        row("taken.example.com.").contains("badge bad\">conflict"),
        "{}",
        row("taken.example.com.")
    );
    assert!(
        row("www.example.com.").contains("badge ok\">in_sync"),
        "{}",
        row("www.example.com.")
    );
    assert!(
        row("www.example.com.").contains("row-warn"),
        "failed over: {}",
        row("www.example.com.")
    );
    assert!(
        dom.contains("Route53 not in sync for 1 record"),
        "the header counts Route53 trouble"
    );
    assert!(
        dom.contains("failed over or degraded"),
        "the header says the service is failed over"
    );

    // Failback: the primary returns and the record goes back to the address it held before
    // (a CREATE equal to an earlier one, which Route53 accepts after the DELETE).
    let mut expected = ips[1];
    if failback {
        let _back = start_backends_on(&[backends[0].addr], vec![pki.issue(&["app.test"])]).await;
        eventually(Duration::from_secs(20), "www to fail back", || async {
            let now = records(&r53, &zone).await;
            (values_of(&now, "www.example.com.", "A") == Some(www(IpAddr::V4(ips[0])))
                && values_of(&now, "api.example.com.", "A").is_some_and(|v| v.len() == 2))
            .then_some(())
        })
        .await;
        expected = ips[0];
        // Shutdown deletes nothing.
        let status = reconciler.terminate();
        assert!(status.success());
    } else {
        let status = reconciler.terminate();
        assert!(status.success());
    }
    let after = records(&r53, &zone).await;
    assert_eq!(
        values_of(&after, "www.example.com.", "A"),
        Some(www(IpAddr::V4(expected)))
    );
}

/// Answers the first `n` HTTP requests with Route53's Throttling error, then forwards.
async fn throttling_proxy(
    target: SocketAddr,
    n: usize,
) -> (SocketAddr, tokio::task::JoinHandle<()>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind((loopback_block()[0], 0))
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let task = tokio::spawn(async move {
        let mut throttled = 0;
        loop {
            let Ok((mut inbound, _)) = listener.accept().await else {
                continue;
            };
            if throttled < n {
                throttled += 1;
                let mut request = Vec::new();
                let mut buf = [0u8; 4096];
                // Read the head and the body (content-length) before answering.
                loop {
                    match inbound.read(&mut buf).await {
                        Ok(0) | Err(_) => break,
                        Ok(k) => request.extend_from_slice(&buf[..k]),
                    }
                    if let Some(end) = request.windows(4).position(|w| w == b"\r\n\r\n") {
                        let head = String::from_utf8_lossy(&request[..end]).to_ascii_lowercase();
                        let length: usize = head
                            .lines()
                            .find_map(|l| {
                                l.strip_prefix("content-length:")
                                    .map(|v| v.trim().parse().unwrap_or(0))
                            })
                            .unwrap_or(0);
                        if request.len() >= end + 4 + length {
                            break;
                        }
                    }
                }
                let body = "<?xml version=\"1.0\"?><ErrorResponse xmlns=\"https://route53.amazonaws.com/doc/2013-04-01/\"><Error><Type>Sender</Type><Code>Throttling</Code><Message>Rate exceeded</Message></Error><RequestId>test</RequestId></ErrorResponse>";
                let response = format!(
                    "HTTP/1.1 400 Bad Request\r\ncontent-type: text/xml\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = inbound.write_all(response.as_bytes()).await;
                continue;
            }
            tokio::spawn(async move {
                if let Ok(mut outbound) = tokio::net::TcpStream::connect(target).await {
                    let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                }
            });
        }
    });
    (addr, task)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn throttling_is_retried_with_backoff() {
    init();
    let moto = Emulator::strict().await;
    let r53 = client(&moto.url);
    let zone = create_zone(&r53, "example.com.").await;
    let moto_addr: SocketAddr = moto
        .url
        .trim_start_matches("http://")
        .parse()
        .expect("addr");
    let (proxy, task) = throttling_proxy(moto_addr, 3).await;

    let dir = workdir();
    let (pki, ips, backends) = app_backends(dir.path()).await;
    let path = dir.path().join("fleet.toml");
    let text = config(
        dir.path(),
        &zone,
        &format!("http://{proxy}"),
        &ips,
        backends[0].addr.port(),
        &pki.ca_file,
    );
    std::fs::write(&path, text).expect("config");
    let reconciler = Vantage::start_with_env(
        &["route53", "--config", path.to_str().expect("path")],
        dir.path(),
        &vantage_env(),
    );
    eventually(
        Duration::from_secs(30),
        "www to be created despite throttling",
        || async {
            let now = records(&r53, &zone).await;
            (values_of(&now, "www.example.com.", "A") == Some(vec![ips[0].to_string()]))
                .then_some(())
        },
    )
    .await;
    let (_, text) = reconciler.get("/metrics").await;
    let metrics = Exposition::parse(&text);
    let throttled: f64 = metrics
        .samples
        .iter()
        .filter(|((n, l), _)| {
            n == "vantage_route53_api_calls_total"
                && l.get("result").map(String::as_str) == Some("throttled")
        })
        .map(|(_, v)| *v)
        .sum();
    assert_eq!(
        throttled, 3.0,
        "every throttled attempt is counted and retried"
    );
    assert!(reconciler.stderr().contains("retrying"));
    task.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drill_times_the_route53_change_until_it_is_insync_and_fails_back() {
    init();
    let moto = Emulator::strict().await;
    let r53 = client(&moto.url);
    let zone = create_zone(&r53, "example.com.").await;
    let dir = workdir();
    let pki = Pki::new(dir.path());
    std::fs::write(dir.path().join("admin-token"), "drill-admin-token").expect("token");
    let ips = loopback_block();
    let backends = start_backends(
        &ips[..2],
        vec![pki.issue(&["app.test"]), pki.issue(&["app.test"])],
    )
    .await;
    let base = config(
        dir.path(),
        &zone,
        &moto.url,
        &ips,
        backends[0].addr.port(),
        &pki.ca_file,
    )
    // One active-active record (see below for why it is pre-created).
    .split("[[record]]")
    .next()
    .expect("config")
    .replace("[dns]\n", "[dns]\nlisten = [\"127.0.0.1:0\"]\n")
        + &format!(
            r#"
[[record]]
name = "api.example.com"
policy = "all"
rto = "2m"
endpoints = [{{ name = "a", address = "{a}" }}, {{ name = "b", address = "{b}" }}]
route53 = {{ zone_id = "{zone}", owner = "test" }}
"#,
            a = ips[0],
            b = ips[1]
        );
    let with_state = |state: &str| {
        base.replace(
            "[admin]\nlisten = \"127.0.0.1:0\"\n",
            &format!(
                "[admin]\nlisten = \"127.0.0.1:0\"\ntoken_file = \"admin-token\"\nstate_dir = \"{state}\"\n"
            ),
        )
    };
    // api already holds both addresses and our marker, written with UPSERT: moto refuses a
    // CREATE equal to an earlier CREATE of the zone even after the batch's DELETE (Route53
    // applies a batch in order), and the drill's failback re-creates the starting value.
    put_values(
        &r53,
        &zone,
        "api.example.com",
        RrType::A,
        &[&ips[0].to_string(), &ips[1].to_string()],
        30,
    )
    .await;
    put_values(
        &r53,
        &zone,
        "_vantage.a.api.example.com",
        RrType::Txt,
        &["\"heritage=vantage,owner=test\""],
        300,
    )
    .await;
    let dns_file = dir.path().join("dns.toml");
    std::fs::write(&dns_file, with_state("dns-state")).expect("config");
    let r53_file = dir.path().join("r53.toml");
    std::fs::write(&r53_file, with_state("r53-state")).expect("config");
    let dns = Vantage::dns(&dns_file, dir.path());
    let reconciler = Vantage::start_with_env(
        &["route53", "--config", r53_file.to_str().expect("path")],
        dir.path(),
        &vantage_env(),
    );
    let both = vec![ips[0].to_string(), ips[1].to_string()];
    dns.wait_ready().await;
    reconciler.wait_ready().await;

    let fleet = dir.path().join("fleet.toml");
    std::fs::write(
        &fleet,
        format!(
            "{}\n[[server]]\nname = \"ns1\"\ndns = \"{}\"\nadmin = \"http://{}/\"\n\n[[server]]\nname = \"r53\"\nrole = \"route53\"\nadmin = \"http://{}/\"\n",
            with_state("drill-state"),
            dns.dns,
            dns.admin,
            reconciler.admin
        ),
    )
    .expect("fleet");
    let fleet = fleet.to_str().expect("path").to_string();
    let (code, stdout, stderr) = tokio::task::spawn_blocking(move || {
        run_vantage(
            &[
                "drill",
                "--config",
                &fleet,
                "--record",
                "api.example.com",
                "--json",
                "--timeout",
                "30s",
            ],
            &vantage_env(),
        )
    })
    .await
    .expect("drill");
    assert_eq!(
        code,
        0,
        "stdout:\n{stdout}\nstderr:\n{stderr}\nreconciler: {}",
        reconciler.status().await["route53"]
    );
    let report: serde_json::Value = serde_json::from_str(&stdout).expect("JSON report");
    let servers = report["servers"].as_array().expect("servers");
    let route53 = servers
        .iter()
        .find(|s| s["role"] == "route53")
        .unwrap_or_else(|| panic!("a Route53 row: {report:#}"));
    assert_eq!(route53["baseline"], serde_json::json!([ips[0], ips[1]]));
    assert_eq!(route53["during"], serde_json::json!([ips[1]]), "{report:#}");
    for half in ["failure", "failback"] {
        let p = &route53[half];
        let submitted = p["response_ms"].as_u64().expect("change submitted");
        let insync = p["recovery_ms"].as_u64().expect("INSYNC");
        assert!(submitted <= insync, "{report:#}");
    }
    assert_eq!(
        report["rto_ms"], route53["failure"]["recovery_ms"],
        "Route53 is the slowest path here: {report:#}"
    );
    assert_eq!(report["met"], true);
    // Failed back: Route53 holds both again, and the reconciler kept the result.
    assert_eq!(
        values_of(&records(&r53, &zone).await, "api.example.com.", "A"),
        Some(both)
    );
    let (_, text) = reconciler.get("/metrics").await;
    assert_eq!(
        Exposition::parse(&text).value(
            "vantage_drill_target_met",
            &[("record", "api.example.com."), ("type", "A")]
        ),
        Some(1.0)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plan_never_says_no_changes_while_blind_and_names_credential_problems() {
    init();
    let dir = workdir();
    std::fs::write(dir.path().join("token"), "0123456789abcdef0123456789abcdef").expect("token");
    let port = tcp_check_target().await;
    let record = "[[record]]\nname = \"www.example.com\"\nendpoints = [{ name = \"a\", address = \"192.0.2.10\", check_address = \"127.0.0.1\" }]\n\
                  route53 = { zone_id = \"Z1\", owner = \"test\" }\n";
    // Probers nobody can reach: after the startup grace the record is still undecided.
    let blind = dir.path().join("blind.toml");
    std::fs::write(
        &blind,
        format!(
            "[cluster]\ntoken_file = \"token\"\nstartup_grace = \"2s\"\n\
             [[prober]]\nregion = \"r1\"\nurl = \"http://127.0.0.1:9/\"\n[[prober]]\nregion = \"r2\"\nurl = \"http://127.0.0.1:9/\"\n\
             [check.t]\nprotocol = \"tcp\"\nport = {port}\ninterval = \"200ms\"\ntimeout = \"100ms\"\n[route53]\nendpoint_url = \"http://127.0.0.1:9\"\n{record}"
        ),
    )
    .expect("config");
    let home = dir.path().to_str().expect("path").to_string();
    let no_credentials = [
        ("HOME", home),
        ("AWS_CONFIG_FILE", "/nonexistent".to_string()),
        ("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent".to_string()),
        ("AWS_EC2_METADATA_DISABLED", "true".to_string()),
    ];
    let (code, out, err) = tokio::task::spawn_blocking({
        let blind = blind.clone();
        move || {
            run_vantage(
                &["plan", "--config", blind.to_str().expect("path")],
                &vantage_env(),
            )
        }
    })
    .await
    .expect("join");
    assert_eq!(code, 4, "an undecided plan exits 4\n{out}\n{err}");
    assert!(
        out.contains("www.example.com. A: no quorum verdict yet for a"),
        "{out}"
    );
    // A prober that was never reachable (a wrong url) is logged from its first failure, and
    // not at every poll.
    let lines = err.matches("prober r1 is unreachable").count();
    assert!(lines == 1, "logged {lines} times:\n{err}");
    // Decided, but no credentials: one clear error at once, not retries called "cannot reach".
    let decided = dir.path().join("decided.toml");
    std::fs::write(
        &decided,
        format!(
            "[[prober]]\nregion = \"a\"\n[check.t]\nprotocol = \"tcp\"\nport = {port}\ninterval = \"100ms\"\ntimeout = \"80ms\"\nrise = 1\n\
             [route53]\nendpoint_url = \"http://127.0.0.1:9\"\n{record}"
        ),
    )
    .expect("config");
    let started = tokio::time::Instant::now();
    let (code, out, err) = tokio::task::spawn_blocking(move || {
        let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_vantage"));
        command.args(["plan", "--config", decided.to_str().expect("path")]);
        for key in [
            "AWS_ACCESS_KEY_ID",
            "AWS_SECRET_ACCESS_KEY",
            "AWS_SESSION_TOKEN",
            "AWS_PROFILE",
        ] {
            command.env_remove(key);
        }
        let out = command.envs(no_credentials).output().expect("vantage");
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).to_string(),
            String::from_utf8_lossy(&out.stderr).to_string(),
        )
    })
    .await
    .expect("join");
    assert_eq!(code, 1, "{out}\n{err}");
    assert!(err.contains("no AWS credentials"), "{err}");
    assert!(err.contains("route53:ChangeResourceRecordSets"), "{err}");
    assert!(
        !err.contains("retrying"),
        "a credential error is not retried: {err}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "took {:?}",
        started.elapsed()
    );
}

/// A reconciler's configuration with `n` failover records `r0..` on endpoints a (primary)
/// and b, checked on `port`.
#[allow(clippy::too_many_arguments)]
pub(crate) fn many_records(
    dir: &std::path::Path,
    zone: &str,
    endpoint: &str,
    a: std::net::Ipv4Addr,
    b: std::net::Ipv4Addr,
    port: u16,
    ca: &std::path::Path,
    n: usize,
) -> String {
    let mut text = format!(
        r#"
[[prober]]
region = "r1"
[check.web]
port = {port}
host = "app.test"
path = "/healthz"
interval = "200ms"
timeout = "150ms"
rise = 1
# Two failures in a row: one check that a loaded test machine stalls must not move b (the
# flip tests count every change call).
fall = 2
ca_file = "{ca}"
[admin]
listen = "127.0.0.1:0"
state_dir = "{state}"
[dns]
zones_dir = "{zones}"
[route53]
endpoint_url = "{endpoint}"
interval = "1s"
insync_timeout = "10s"
requests_per_second = 50
"#,
        ca = ca.display(),
        state = dir.join("state").display(),
        zones = dir.join("zones").display(),
    );
    for i in 0..n {
        text.push_str(&format!(
            "[[record]]\nname = \"r{i}.example.com\"\npolicy = \"failover\"\n\
             endpoints = [{{ name = \"a\", address = \"{a}\" }}, {{ name = \"b\", address = \"{b}\" }}]\n\
             route53 = {{ zone_id = \"{zone}\", owner = \"test\" }}\n"
        ));
    }
    text
}

/// What the many-record tests share: a hosted zone on `emulator`, two HTTPS backends (a on
/// ips[0], b on ips[1]) and a work directory holding `fleet.toml` with `n` failover records.
pub(crate) struct Many {
    pub emulator: Emulator,
    pub zone: String,
    pub dir: tempfile::TempDir,
    pub pki: Pki,
    pub ips: [std::net::Ipv4Addr; 4],
    pub backends: Vec<Backend>,
    pub path: std::path::PathBuf,
}

pub(crate) async fn many(emulator: Emulator, n: usize) -> Many {
    let zone = create_zone(&client(&emulator.url), "example.com.").await;
    let dir = workdir();
    let (pki, ips, backends) = app_backends(dir.path()).await;
    let path = dir.path().join("fleet.toml");
    std::fs::write(
        &path,
        many_records(
            dir.path(),
            &zone,
            &emulator.url,
            ips[0],
            ips[1],
            backends[0].addr.port(),
            &pki.ca_file,
            n,
        ),
    )
    .expect("config");
    Many {
        emulator,
        zone,
        dir,
        pki,
        ips,
        backends,
        path,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_refused_record_among_a_thousand_never_delays_a_failover_and_the_cap_never_blocks_it() {
    init();
    const N: usize = 1000;
    const BAD: usize = 500;
    let Many {
        emulator,
        zone,
        dir,
        ips,
        backends,
        path,
        ..
    } = many(Emulator::strict().await, N).await;
    emulator.refuse(&["r500.example.com."]).await;
    let reconciler = Vantage::start_with_env(
        &["route53", "--config", path.to_str().expect("path")],
        dir.path(),
        &vantage_env(),
    );
    let all_but_bad = |ip: std::net::Ipv4Addr| {
        let emulator = &emulator;
        let zone = zone.clone();
        async move {
            let found = emulator.holding(&zone, N, &ip.to_string()).await;
            (found.len() == N - 1 && !found.contains(&BAD)).then_some(())
        }
    };
    eventually(
        Duration::from_secs(60),
        "every record but the refused one to be created",
        || all_but_bad(ips[0]),
    )
    .await;
    let record_state = |status: &serde_json::Value, name: &str| {
        status["records"]
            .as_array()
            .and_then(|r| r.iter().find(|r| r["name"] == name))
            .map(|r| r["route53"].clone())
            .unwrap_or_default()
    };
    let bad = eventually(Duration::from_secs(10), "r500 to be refused", || async {
        let bad = record_state(&reconciler.status().await, "r500.example.com.");
        (bad["state"] == "refused").then_some(bad)
    })
    .await;
    assert!(
        bad["reason"]
            .as_str()
            .is_some_and(|r| r.contains("not permitted")),
        "{bad}"
    );

    // The primary fails: 999 records move in one go, around the refused one, and the change
    // cap (default: half of the owned sets) does not hold a failover.
    backends[0].stop();
    eventually(
        Duration::from_secs(30),
        "every record but the refused one to fail over",
        || all_but_bad(ips[1]),
    )
    .await;
    let status = reconciler.status().await;
    let verdict_ms = status["transitions"]
        .as_array()
        .and_then(|t| {
            t.iter()
                .find(|t| t["endpoint"] == "a" && t["to"] == "down")
                .and_then(|t| t["at_unix_ms"].as_u64())
        })
        .unwrap_or_else(|| panic!("a transition of a to down in {}", status["transitions"]));
    let verdict = verdict_ms as f64 / 1000.0;
    let calls = emulator.calls().await;
    let applied_after: Vec<f64> = calls
        .iter()
        .filter(|(op, t, code)| op == "ChangeResourceRecordSets" && *code == 200 && *t >= verdict)
        .map(|(_, t, _)| *t)
        .collect();
    let last = applied_after.iter().copied().fold(f64::NAN, f64::max);
    eprintln!(
        "failover of {} records: {} batches, the last {:.2} s after the verdict",
        N - 1,
        applied_after.len(),
        last - verdict
    );
    assert!(
        last - verdict <= 2.0,
        "the last batch of the failover was submitted {:.2} s after the verdict",
        last - verdict
    );
    // A refused group waits (5 s, doubling) instead of being retried at every cycle: the whole
    // run so far saw only the bisection's refusals and a few retries.
    let refusals = calls
        .iter()
        .filter(|(op, _, code)| op == "ChangeResourceRecordSets" && *code == 400)
        .count();
    assert!(refusals <= 25, "{refusals} refused change calls");
    let (_, text) = reconciler.get("/metrics").await;
    let metrics = Exposition::parse(&text);
    assert_eq!(
        metrics.value("vantage_route53_cycles_refused_total", &[]),
        Some(0.0),
        "a failover is never held by the change cap"
    );
    assert_eq!(
        metrics.value(
            "vantage_route53_record_state",
            &[
                ("record", "r500.example.com."),
                ("type", "A"),
                ("state", "refused")
            ]
        ),
        Some(1.0)
    );
    assert_eq!(
        record_state(&reconciler.status().await, "r500.example.com.")["state"],
        "refused"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_renumbering_waits_for_force_and_a_forced_change_finishes_after_a_kill() {
    init();
    const N: usize = 30;
    let emulator = Emulator::strict().await;
    let r53 = client(&emulator.url);
    let zone = create_zone(&r53, "example.com.").await;
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
    let path = dir.path().join("fleet.toml");
    let write = |primary: std::net::Ipv4Addr| {
        std::fs::write(
            &path,
            many_records(
                dir.path(),
                &zone,
                &emulator.url,
                primary,
                ips[1],
                port,
                &pki.ca_file,
                N,
            ),
        )
        .expect("config");
    };
    let start = |force: bool| {
        let mut args = vec!["route53", "--config", path.to_str().expect("path")];
        if force {
            args.push("--force");
        }
        Vantage::start_with_env(&args, dir.path(), &vantage_env())
    };
    write(ips[0]);
    let mut reconciler = start(false);
    eventually(Duration::from_secs(30), "every record created", || async {
        (emulator.holding(&zone, N, &ips[0].to_string()).await.len() == N).then_some(())
    })
    .await;
    assert!(reconciler.terminate().success());

    // The primary is renumbered in the configuration: every record would be rewritten, more
    // than the cap allows for a configuration change. It waits, and says why.
    write(ips[2]);
    let mut reconciler = start(false);
    let status = eventually(
        Duration::from_secs(20),
        "the renumbering to be held",
        || async {
            let status = reconciler.status().await;
            let r0 = status["records"]
                .as_array()?
                .iter()
                .find(|r| r["name"] == "r0.example.com.")?
                .clone();
            (r0["route53"]["state"] == "pending").then_some(r0)
        },
    )
    .await;
    assert!(
        status["route53"]["reason"]
            .as_str()
            .is_some_and(|r| r.contains("change cap") && r.contains("--force")),
        "{status}"
    );
    assert_eq!(
        emulator.holding(&zone, N, &ips[0].to_string()).await.len(),
        N,
        "nothing rewritten"
    );
    let (_, text) = reconciler.get("/metrics").await;
    assert!(
        Exposition::parse(&text)
            .value("vantage_route53_cycles_refused_total", &[])
            .is_some_and(|v| v >= 1.0)
    );
    assert!(reconciler.terminate().success());

    // Approved with --force, then killed (-9) as soon as the approval is on disk; a restart
    // without --force finishes the change for this configuration.
    let approval = dir.path().join("state/route53/route53-approved");
    let forced = start(true);
    eventually(
        Duration::from_secs(10),
        "the approval to be saved",
        || async { approval.exists().then_some(()) },
    )
    .await;
    drop(forced);
    let _reconciler = start(false);
    eventually(
        Duration::from_secs(30),
        "the approved renumbering to finish after the restart",
        || async {
            (emulator.holding(&zone, N, &ips[2].to_string()).await.len() == N).then_some(())
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_latency_record_is_pushed_as_route53_latency_sets_and_follows_health() {
    init();
    let emulator = Emulator::strict().await;
    let r53 = client(&emulator.url);
    let zone = create_zone(&r53, "example.com.").await;
    let dir = workdir();
    let (pki, ips, backends) = app_backends(dir.path()).await;
    let text = config(
        dir.path(),
        &zone,
        &emulator.url,
        &ips,
        backends[0].addr.port(),
        &pki.ca_file,
    )
    .split("[[record]]")
    .next()
    .expect("config")
    .to_string()
        + &format!(
            r#"
[[record]]
name = "lat.example.com"
policy = "latency"
endpoints = [{{ name = "a", address = "{a}", aws_region = "us-east-1" }}, {{ name = "b", address = "{b}", aws_region = "eu-west-1" }}]
route53 = {{ zone_id = "{zone}", owner = "test" }}
"#,
            a = ips[0],
            b = ips[1]
        );
    let path = dir.path().join("fleet.toml");
    std::fs::write(&path, &text).expect("config");
    // Without an AWS Region per endpoint, Route53 cannot steer: check-config says which.
    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, text.replace(", aws_region = \"eu-west-1\"", "")).expect("config");
    let (code, _, err) = run_vantage(&["check-config", bad.to_str().expect("path")], &[]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("record[0].endpoints[1].aws_region") && err.contains("latency"),
        "{err}"
    );

    let _reconciler = Vantage::start_with_env(
        &["route53", "--config", path.to_str().expect("path")],
        dir.path(),
        &vantage_env(),
    );
    // One latency set per endpoint, in its Region, named by the endpoint.
    let sets = || async {
        let (_, body) = http_get(emulator.addr, "/_emulator/state").await;
        let state: serde_json::Value = serde_json::from_str(&body).expect("state");
        let mut sets: Vec<(String, String, String)> = state[&zone]
            .as_array()
            .expect("zone")
            .iter()
            .filter(|s| s["name"] == "lat.example.com." && s["type"] == "A")
            .map(|s| {
                (
                    s["ident"].as_str().unwrap_or("").to_string(),
                    s["region"].as_str().unwrap_or("").to_string(),
                    s["values"][0].as_str().unwrap_or("").to_string(),
                )
            })
            .collect();
        sets.sort();
        sets
    };
    let both = vec![
        ("a".to_string(), "us-east-1".to_string(), ips[0].to_string()),
        ("b".to_string(), "eu-west-1".to_string(), ips[1].to_string()),
    ];
    eventually(Duration::from_secs(20), "both latency sets", || async {
        (sets().await == both).then_some(())
    })
    .await;
    // a fails: its set is withdrawn, b's stays; a returns: its set is back.
    backends[0].stop();
    eventually(
        Duration::from_secs(20),
        "a's latency set withdrawn",
        || async { (sets().await == both[1..]).then_some(()) },
    )
    .await;
    let _back = start_backends_on(&[backends[0].addr], vec![pki.issue(&["app.test"])]).await;
    eventually(
        Duration::from_secs(20),
        "a's latency set restored",
        || async { (sets().await == both).then_some(()) },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clean_flip_of_a_thousand_records_costs_eight_calls_within_the_rate() {
    init();
    const N: usize = 1000;
    // Like Route53: 5 calls per second (more are throttled), changes PENDING for 1 s.
    let Many {
        emulator,
        zone,
        dir,
        ips,
        backends,
        path,
        ..
    } = many(
        Emulator::start_with(&["--pending", "1", "--rate", "5"]).await,
        N,
    )
    .await;
    std::fs::write(
        &path,
        std::fs::read_to_string(&path)
            .expect("config")
            .replace("requests_per_second = 50", "requests_per_second = 5")
            // Full cycles (which read the zone) far apart: the flip plans on what the last left.
            .replace(
                "interval = \"1s\"\ninsync_timeout",
                "interval = \"5m\"\ninsync_timeout",
            ),
    )
    .expect("config");
    let reconciler = Vantage::start_with_env(
        &["route53", "--config", path.to_str().expect("path")],
        dir.path(),
        &vantage_env(),
    );
    let in_sync = || async {
        let status = reconciler.status().await;
        let states: Vec<serde_json::Value> = status["records"]
            .as_array()?
            .iter()
            .map(|r| r["route53"]["state"].clone())
            .collect();
        (states.len() == N && states.iter().all(|s| s == "in_sync")).then_some(())
    };
    eventually(
        Duration::from_secs(60),
        "every record created and INSYNC",
        in_sync,
    )
    .await;
    backends[0].stop();
    eventually(
        Duration::from_secs(30),
        "every record failed over",
        || async {
            (emulator.holding(&zone, N, &ips[1].to_string()).await.len() == N).then_some(())
        },
    )
    .await;
    eventually(Duration::from_secs(30), "the flip INSYNC", in_sync).await;
    let status = reconciler.status().await;
    let verdict = status["transitions"]
        .as_array()
        .and_then(|t| {
            t.iter()
                .find(|t| t["endpoint"] == "a" && t["to"] == "down")
                .and_then(|t| t["at_unix_ms"].as_u64())
        })
        .expect("a transition of a to down") as f64
        / 1000.0;
    let calls = emulator.calls().await;
    let flip: Vec<&(String, f64, u16)> = calls.iter().filter(|(_, t, _)| *t >= verdict).collect();
    let count = |op: &str| flip.iter().filter(|(o, _, _)| o == op).count();
    eprintln!(
        "flip of {N} records: {} calls ({} ChangeResourceRecordSets, {} ListResourceRecordSets, {} GetChange)",
        flip.len(),
        count("ChangeResourceRecordSets"),
        count("ListResourceRecordSets"),
        count("GetChange")
    );
    assert!(flip.len() <= 8, "{flip:?}");
    assert_eq!(
        count("ListResourceRecordSets"),
        0,
        "no read of the zone: {flip:?}"
    );
    assert!(
        calls
            .iter()
            .all(|(_, _, code)| *code == 200 || *code == 201),
        "nothing throttled or refused: {calls:?}"
    );
    let times: Vec<f64> = calls.iter().map(|(_, t, _)| *t).collect();
    let most = (0..times.len())
        .map(|i| {
            times[i..]
                .iter()
                .take_while(|u| **u < times[i] + 1.0)
                .count()
        })
        .max()
        .unwrap_or(0);
    assert!(most <= 5, "{most} calls within one second");
}
