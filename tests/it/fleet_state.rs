//! Fleet-wide overrides on a real etcd (Debian's etcd-server, started by the test on
//! loopback): one command drains an endpoint on every DNS server, a server started later has
//! it at once, and losing etcd changes no answer.

use std::{
    net::{IpAddr, SocketAddr},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::Duration,
};

use hickory_proto::rr::RecordType;
use tokio::time::Instant;

use crate::support::*;

/// An etcd server on free loopback ports, its data in `dir`; killed on drop.
struct Etcd {
    child: Child,
    client: SocketAddr,
    peer: SocketAddr,
    dir: PathBuf,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port()
}

impl Etcd {
    async fn start(dir: &Path) -> Etcd {
        let client: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().expect("addr");
        let peer: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().expect("addr");
        Self::start_on(dir, client, peer).await
    }

    async fn start_on(dir: &Path, client: SocketAddr, peer: SocketAddr) -> Etcd {
        let child = Command::new("etcd")
            .args([
                "--name",
                "t",
                "--data-dir",
                dir.to_str().expect("path"),
                "--listen-client-urls",
                &format!("http://{client}"),
                "--advertise-client-urls",
                &format!("http://{client}"),
                "--listen-peer-urls",
                &format!("http://{peer}"),
                "--initial-advertise-peer-urls",
                &format!("http://{peer}"),
                "--initial-cluster",
                &format!("t=http://{peer}"),
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start etcd (tests/run installs Debian's etcd-server)");
        eventually(Duration::from_secs(20), "etcd to be healthy", || async {
            let (code, body) = try_http_get(client, "/health").await?;
            (code == 200 && body.contains("true")).then_some(())
        })
        .await;
        Etcd {
            child,
            client,
            peer,
            dir: dir.to_path_buf(),
        }
    }

    fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    async fn restart(&mut self) {
        self.stop();
        *self = Self::start_on(&self.dir.clone(), self.client, self.peer).await;
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        self.stop();
    }
}

fn config(
    dir: &Path,
    n: usize,
    etcd: SocketAddr,
    ips: &[std::net::Ipv4Addr],
    port: u16,
) -> PathBuf {
    config_ordered(dir, n, etcd, [ips[0], ips[1]], port)
}

/// The same, with `order` as the failover order of www's two endpoints.
fn config_ordered(
    dir: &Path,
    n: usize,
    etcd: SocketAddr,
    order: [std::net::Ipv4Addr; 2],
    port: u16,
) -> PathBuf {
    let (a_ip, b_ip) = (order[0], order[1]);
    let first = if a_ip < b_ip { "a" } else { "b" };
    let second = if first == "a" { "b" } else { "a" };
    let path = dir.join(format!("ns{n}.toml"));
    std::fs::write(
        &path,
        format!(
            r#"
[[prober]]
region = "r1"
[check.t]
protocol = "tcp"
port = {port}
interval = "200ms"
timeout = "150ms"
rise = 1
fall = 1
[dns]
listen = ["127.0.0.1:0"]
zones_dir = "{zones}"
[admin]
listen = "127.0.0.1:0"
token_file = "token"
state_dir = "state-{n}"
[state]
backend = "etcd"
endpoints = ["http://{etcd}"]
prefix = "/vantage/test/"
[[record]]
name = "www.example.com"
policy = "failover"
check = "t"
endpoints = [{{ name = "{first}", address = "{a}" }}, {{ name = "{second}", address = "{b}" }}]
"#,
            zones = dir.join("zones").display(),
            a = a_ip,
            b = b_ip,
        ),
    )
    .expect("config");
    path
}

/// TCP check targets that accept and close on ips[0] and ips[1], on one port (a check has
/// one port); the port.
async fn tcp_targets(ips: &[std::net::Ipv4Addr]) -> u16 {
    let first = tokio::net::TcpListener::bind((ips[0], 0))
        .await
        .expect("bind");
    let port = first.local_addr().expect("addr").port();
    let second = tokio::net::TcpListener::bind((ips[1], port))
        .await
        .expect("bind");
    for l in [first, second] {
        tokio::spawn(async move {
            while let Ok((s, _)) = l.accept().await {
                drop(s);
            }
        });
    }
    port
}

async fn www(server: &Vantage) -> Vec<IpAddr> {
    addresses(
        &udp_query(
            server.dns,
            &query_message("www.example.com.", RecordType::A, false),
        )
        .await,
    )
}

fn override_cli(server: &Vantage, dir: &Path, args: &[&str]) -> (i32, String, String) {
    let admin = format!("http://{}", server.admin);
    let token = dir.join("token");
    let mut all = vec![
        "override",
        "--admin",
        &admin,
        "--token-file",
        token.to_str().expect("path"),
    ];
    all.extend_from_slice(args);
    run_vantage(&all, &[])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_drain_reaches_every_server_and_losing_etcd_changes_no_answer() {
    init();
    let dir = workdir();
    std::fs::write(dir.path().join("token"), "fleet-admin-token").expect("token");
    let mut etcd = Etcd::start(&dir.path().join("etcd")).await;
    // Both endpoints are checked over TCP on 127.0.0.1 (check_address not needed: the
    // addresses are the listeners' own).
    let ips = loopback_block();
    let port = tcp_targets(&ips).await;
    let servers: Vec<Vantage> = (0..2)
        .map(|n| Vantage::dns(&config(dir.path(), n, etcd.client, &ips, port), dir.path()))
        .collect();
    for s in &servers {
        s.wait_ready().await;
        assert_eq!(www(s).await, vec![IpAddr::V4(ips[0])]);
    }

    // A drain through server 0 changes the answer of both.
    let (code, out, err) = override_cli(
        &servers[0],
        dir.path(),
        &["drain", "a", "--reason", "maintenance", "--for", "10m"],
    );
    assert_eq!(code, 0, "{out}{err}");
    let set_at = Instant::now();
    let mut took = Vec::new();
    for s in &servers {
        eventually(
            Duration::from_secs(5),
            "the drain on every server",
            || async { (www(s).await == vec![IpAddr::V4(ips[1])]).then_some(()) },
        )
        .await;
        took.push(set_at.elapsed());
    }
    eprintln!("drain answered by every server after {took:?}");
    assert!(
        took.iter().all(|t| *t < Duration::from_secs(1)),
        "within 1 s: {took:?}"
    );
    // Both show it, and the audit entry, with who and why.
    for s in &servers {
        let status = s.status().await;
        assert_eq!(status["state_backend"]["kind"], "etcd", "{status}");
        assert_eq!(status["state_backend"]["reachable"], true);
        assert!(
            status["audit"].as_array().is_some_and(|a| a
                .iter()
                .any(|e| e["what"] == "set" && e["reason"] == "maintenance")),
            "{}",
            status["audit"]
        );
    }

    // Every registered server side by side: they agree.
    let ns0 = dir.path().join("ns0.toml");
    let (code, out, err) = run_vantage(
        &["status", "--fleet", "--config", ns0.to_str().expect("path")],
        &[],
    );
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.matches(" dns ").count() >= 2 && out.contains("every DNS server answers the same"),
        "{out}"
    );

    // A drill result handed to one server is the fleet's.
    let result = r#"{"record":"www.example.com.","type":"A","endpoint":"a","mode":"override","finished_unix_ms":1700000000000,"rto_ms":1200,"compared_ms":2000,"target_ms":30000,"met":true}"#;
    let (code, body) = http_request_with(
        servers[0].admin,
        "POST",
        "/v1/drills",
        &[
            ("host", &servers[0].admin.to_string()),
            ("authorization", "Bearer fleet-admin-token"),
            ("content-type", "application/json"),
        ],
        result,
    )
    .await;
    assert_eq!(code, 200, "{body}");

    // A server started later answers from the fleet's state at once, and knows the drill.
    let late = Vantage::dns(&config(dir.path(), 2, etcd.client, &ips, port), dir.path());
    late.wait_ready().await;
    assert_eq!(www(&late).await, vec![IpAddr::V4(ips[1])]);
    let (code, body) = late.get("/v1/drills").await;
    assert_eq!(code, 200);
    assert!(body.contains("\"rto_ms\":1200"), "{body}");
    let all = [&servers[0], &servers[1], &late];

    // How long a change takes to be answered by all three: clear and drain again, through
    // each server in turn.
    let mut samples = Vec::new();
    for round in 0..10 {
        for (args, expect) in [
            (vec!["clear", "a"], ips[0]),
            (
                vec!["drain", "a", "--reason", "again", "--for", "10m"],
                ips[1],
            ),
        ] {
            let (code, out, err) = override_cli(all[round % 3], dir.path(), &args);
            assert_eq!(code, 0, "{out}{err}");
            let since = Instant::now();
            for s in all {
                eventually(Duration::from_secs(5), "every server to follow", || async {
                    (www(s).await == vec![IpAddr::V4(expect)]).then_some(())
                })
                .await;
            }
            samples.push(since.elapsed());
        }
    }
    samples.sort();
    let (p50, p99) = (samples[samples.len() / 2], samples[samples.len() - 1]);
    eprintln!("a change answered by all 3 servers: p50 {p50:?}, p99 (max of 20) {p99:?}");
    assert!(p99 < Duration::from_secs(1), "{samples:?}");

    let online = |path: &Path| {
        run_vantage(
            &["check-config", "--online", path.to_str().expect("path")],
            &[],
        )
    };
    let (code, out, err) = online(&ns0);
    assert_eq!(code, 0, "{out}{err}");

    // etcd goes away: answers stay, changes fail and say why, status and metrics say so.
    etcd.stop();
    let (code, _, err) = online(&ns0);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("etcd is unreachable"), "{err}");
    let (code, _, err) = override_cli(&servers[1], dir.path(), &["clear", "a"]);
    assert_ne!(code, 0);
    assert!(err.contains("etcd"), "{err}");
    for s in &servers {
        eventually(
            Duration::from_secs(10),
            "etcd seen as unreachable",
            || async {
                let status = s.status().await;
                (status["state_backend"]["reachable"] == false).then_some(())
            },
        )
        .await;
        assert_eq!(www(s).await, vec![IpAddr::V4(ips[1])], "fail static");
        let (_, text) = s.get("/metrics").await;
        assert_eq!(
            Exposition::parse(&text)
                .value("vantage_state_backend_reachable", &[("backend", "etcd")]),
            Some(0.0)
        );
    }

    // etcd is back: everyone follows again, and a clear reaches all.
    etcd.restart().await;
    for s in &servers {
        eventually(Duration::from_secs(15), "etcd followed again", || async {
            (s.status().await["state_backend"]["reachable"] == true).then_some(())
        })
        .await;
    }
    let (code, out, err) = override_cli(&servers[1], dir.path(), &["clear", "a"]);
    assert_eq!(code, 0, "{out}{err}");
    for s in servers.iter().chain([&late]) {
        eventually(
            Duration::from_secs(5),
            "the clear on every server",
            || async { (www(s).await == vec![IpAddr::V4(ips[0])]).then_some(()) },
        )
        .await;
    }
    // A server whose configuration differs (it lists b first): the fleet's status flags it.
    let odd = Vantage::dns(
        &config_ordered(dir.path(), 3, etcd.client, [ips[1], ips[0]], port),
        dir.path(),
    );
    odd.wait_ready().await;
    assert_eq!(www(&odd).await, vec![IpAddr::V4(ips[1])]);
    let (code, out, err) = run_vantage(
        &[
            "status",
            "--fleet",
            "--json",
            "--config",
            ns0.to_str().expect("path"),
        ],
        &[],
    );
    assert_eq!(code, 3, "{out}{err}");
    let doc: serde_json::Value = serde_json::from_str(out.trim()).expect("JSON");
    assert_eq!(
        doc["disagree"],
        serde_json::json!(["www.example.com. A"]),
        "{doc}"
    );
    assert_eq!(doc["servers"].as_array().map(Vec::len), Some(4), "{doc}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_reconcilers_elect_one_writer_and_a_standby_takes_over() {
    use crate::route53::{Emulator, Many, many, vantage_env};
    init();
    const N: usize = 20;
    let Many {
        emulator,
        zone,
        dir,
        pki,
        ips,
        backends,
        path,
    } = many(Emulator::strict().await, N).await;
    let etcd = Etcd::start(&dir.path().join("etcd")).await;
    let shared = std::fs::read_to_string(&path).expect("config");
    let replica = |n: usize| {
        let text = shared.replace(
            &format!("state_dir = \"{}\"", dir.path().join("state").display()),
            &format!(
                "state_dir = \"{}\"",
                dir.path().join(format!("state-{n}")).display()
            ),
        ) + &format!(
            "\n[state]\nbackend = \"etcd\"\nendpoints = [\"http://{}\"]\nprefix = \"/vantage/r53/\"\n",
            etcd.client
        );
        let path = dir.path().join(format!("r{n}.toml"));
        std::fs::write(&path, text).expect("config");
        Vantage::start_with_env(
            &["route53", "--config", path.to_str().expect("path")],
            dir.path(),
            &vantage_env(),
        )
    };
    let mut replicas = [Some(replica(0)), Some(replica(1))];
    let holding = |ip: std::net::Ipv4Addr| {
        let emulator = &emulator;
        let zone = zone.clone();
        async move { (emulator.holding(&zone, N, &ip.to_string()).await.len() == N).then_some(()) }
    };
    eventually(Duration::from_secs(30), "every record created", || {
        holding(ips[0])
    })
    .await;
    // Exactly one replica leads, and the other names it.
    let leader = eventually(Duration::from_secs(10), "one leader", || async {
        let mut states = Vec::new();
        for r in replicas.iter().flatten() {
            states.push(r.status().await["route53_leadership"].clone());
        }
        let leaders: Vec<usize> = (0..states.len())
            .filter(|i| states[*i]["leader"] == true)
            .collect();
        (leaders.len() == 1
            && states
                .iter()
                .all(|s| s["holder"] == states[leaders[0]]["name"]))
        .then_some(leaders[0])
    })
    .await;
    // One writer: the creation and a failover cost one batch each, and no batch of a second
    // replica ever races (a refused compare-and-swap would show as a 400).
    backends[0].stop();
    eventually(Duration::from_secs(20), "every record failed over", || {
        holding(ips[1])
    })
    .await;
    let writes = |calls: &[(String, f64, u16)], code: u16| {
        calls
            .iter()
            .filter(|(op, _, c)| op == "ChangeResourceRecordSets" && *c == code)
            .count()
    };
    let calls = emulator.calls().await;
    assert_eq!(
        (writes(&calls, 200), writes(&calls, 400)),
        (2, 0),
        "{calls:?}"
    );

    // The leader dies (kill -9): the standby leads within the lease's TTL and fails back.
    let standby = 1 - leader;
    drop(replicas[leader].take());
    let took = Instant::now();
    let survivor = replicas[standby].as_ref().expect("standby");
    eventually(Duration::from_secs(15), "the standby to lead", || async {
        (survivor.status().await["route53_leadership"]["leader"] == true).then_some(())
    })
    .await;
    eprintln!(
        "the standby leads {:?} after the leader was killed",
        took.elapsed()
    );
    let _back = start_backends_on(&[backends[0].addr], vec![pki.issue(&["app.test"])]).await;
    eventually(
        Duration::from_secs(30),
        "the failback by the new leader",
        || holding(ips[0]),
    )
    .await;
}

/// PEM text of DER blocks.
fn pem(label: &str, der: &[u8]) -> String {
    use base64::Engine;
    let text = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for line in text.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(line).expect("base64"));
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

/// Writes a certificate (chain) and key as PEM files; their paths.
fn write_pem(dir: &Path, name: &str, cert: &ServerCert) -> (PathBuf, PathBuf) {
    let chain: String = cert.chain.iter().map(|c| pem("CERTIFICATE", c)).collect();
    let key = pem("PRIVATE KEY", cert.key.secret_der());
    let (c, k) = (
        dir.join(format!("{name}.pem")),
        dir.join(format!("{name}.key")),
    );
    std::fs::write(&c, chain).expect("cert");
    std::fs::write(&k, key).expect("key");
    (c, k)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_over_tls_with_client_certificates_and_authentication() {
    init();
    let dir = workdir();
    std::fs::write(dir.path().join("token"), "fleet-admin-token").expect("token");
    let pki = Pki::new(dir.path());
    let (server_cert, server_key) = write_pem(dir.path(), "etcd", &pki.issue(&["127.0.0.1"]));
    let (client_cert, client_key) =
        write_pem(dir.path(), "client", &pki.issue_client(&["vantage"]));
    let client: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().expect("addr");
    let peer: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().expect("addr");
    let mut child = Command::new("etcd")
        .args([
            "--name",
            "t",
            "--data-dir",
            dir.path().join("etcd").to_str().expect("path"),
            "--listen-client-urls",
            &format!("https://{client}"),
            "--advertise-client-urls",
            &format!("https://{client}"),
            "--listen-peer-urls",
            &format!("http://{peer}"),
            "--initial-advertise-peer-urls",
            &format!("http://{peer}"),
            "--initial-cluster",
            &format!("t=http://{peer}"),
            "--cert-file",
            server_cert.to_str().expect("path"),
            "--key-file",
            server_key.to_str().expect("path"),
            "--client-cert-auth",
            "--trusted-ca-file",
            pki.ca_file.to_str().expect("path"),
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start etcd");
    // The test's own client: the CA and the client certificate.
    let mut identity = std::fs::read(&client_cert).expect("cert");
    identity.extend(std::fs::read(&client_key).expect("key"));
    let http = reqwest::Client::builder()
        .no_proxy()
        .tls_certs_only(
            reqwest::Certificate::from_pem_bundle(&std::fs::read(&pki.ca_file).expect("ca"))
                .expect("ca"),
        )
        .identity(reqwest::Identity::from_pem(&identity).expect("identity"))
        .build()
        .expect("client");
    let call = |path: &'static str, body: &'static str| {
        let http = http.clone();
        async move {
            http.post(format!("https://{client}{path}"))
                .body(body)
                .send()
                .await
                .ok()?
                .text()
                .await
                .ok()
        }
    };
    eventually(Duration::from_secs(20), "etcd over TLS", || async {
        call("/v3/kv/range", r#"{"key":"eA=="}"#)
            .await
            .filter(|b| b.contains("header"))
    })
    .await;
    // Authentication on, with a root user.
    for (path, body) in [
        ("/v3/auth/role/add", r#"{"name":"root"}"#),
        (
            "/v3/auth/user/add",
            r#"{"name":"root","password":"a-long-etcd-password-1234"}"#,
        ),
        ("/v3/auth/user/grant", r#"{"user":"root","role":"root"}"#),
        ("/v3/auth/enable", "{}"),
    ] {
        let reply = call(path, body).await.expect("auth setup");
        assert!(reply.contains("header"), "{path}: {reply}");
    }
    std::fs::write(
        dir.path().join("etcd-password"),
        "a-long-etcd-password-1234",
    )
    .expect("password");
    let ips = loopback_block();
    let port = tcp_check_target().await;
    let path = config(dir.path(), 0, client, &ips, port);
    let text = std::fs::read_to_string(&path).expect("config").replace(
        &format!("endpoints = [\"http://{client}\"]"),
        &format!(
            "endpoints = [\"https://{client}\"]\nca_file = \"{}\"\ncert_file = \"{}\"\nkey_file = \"{}\"\nusername = \"root\"\npassword_file = \"etcd-password\"",
            pki.ca_file.display(),
            client_cert.display(),
            client_key.display()
        ),
    );
    std::fs::write(&path, &text).expect("config");
    let (code, out, err) = run_vantage(
        &["check-config", "--online", path.to_str().expect("path")],
        &[],
    );
    assert_eq!(code, 0, "{out}{err}");
    // A wrong password is named.
    let wrong = dir.path().join("wrong.toml");
    std::fs::write(
        dir.path().join("wrong-password"),
        "not-the-etcd-password-0000",
    )
    .expect("pw");
    std::fs::write(
        &wrong,
        text.replace("\"etcd-password\"", "\"wrong-password\""),
    )
    .expect("config");
    let (code, _, err) = run_vantage(
        &["check-config", "--online", wrong.to_str().expect("path")],
        &[],
    );
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("authentication failed"), "{err}");

    let server = Vantage::dns(&path, dir.path());
    server.wait_ready().await;
    let (code, out, err) = override_cli(
        &server,
        dir.path(),
        &["drain", "a", "--reason", "tls", "--for", "5m"],
    );
    assert_eq!(code, 0, "{out}{err}");
    let status = server.status().await;
    assert_eq!(status["state_backend"]["reachable"], true, "{status}");
    assert!(
        call("/v3/kv/range", r#"{"key":"eA=="}"#)
            .await
            .is_some_and(|b| b.contains("user name is empty")),
        "etcd refuses requests without a user"
    );
    let _ = child.kill();
    let _ = child.wait();
}

/// A 3-member etcd cluster on loopback; members can be stopped and started again.
struct EtcdCluster {
    dir: PathBuf,
    clients: Vec<SocketAddr>,
    peers: Vec<SocketAddr>,
    members: Vec<Option<Child>>,
}

impl EtcdCluster {
    async fn start(dir: &Path) -> EtcdCluster {
        let addr = || -> SocketAddr { format!("127.0.0.1:{}", free_port()).parse().expect("addr") };
        let mut cluster = EtcdCluster {
            dir: dir.to_path_buf(),
            clients: (0..3).map(|_| addr()).collect(),
            peers: (0..3).map(|_| addr()).collect(),
            members: (0..3).map(|_| None).collect(),
        };
        for i in 0..3 {
            cluster.spawn(i, "new");
        }
        for i in 0..3 {
            cluster.healthy(i).await;
        }
        cluster
    }

    fn spawn(&mut self, i: usize, state: &str) {
        let initial: Vec<String> = self
            .peers
            .iter()
            .enumerate()
            .map(|(j, p)| format!("e{j}=http://{p}"))
            .collect();
        let child = Command::new("etcd")
            .args([
                "--name",
                &format!("e{i}"),
                "--data-dir",
                self.dir.join(format!("e{i}")).to_str().expect("path"),
                "--listen-client-urls",
                &format!("http://{}", self.clients[i]),
                "--advertise-client-urls",
                &format!("http://{}", self.clients[i]),
                "--listen-peer-urls",
                &format!("http://{}", self.peers[i]),
                "--initial-advertise-peer-urls",
                &format!("http://{}", self.peers[i]),
                "--initial-cluster",
                &initial.join(","),
                "--initial-cluster-state",
                state,
                "--initial-cluster-token",
                "vantage-test",
                // Elections as slow as a cluster spread over regions: a request sent while
                // the members elect a leader waits longer than one attempt.
                "--heartbeat-interval",
                "300",
                "--election-timeout",
                "3000",
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start etcd");
        self.members[i] = Some(child);
    }

    async fn healthy(&self, i: usize) {
        let client = self.clients[i];
        eventually(
            Duration::from_secs(30),
            "an etcd member to be healthy",
            || async {
                let (code, body) = try_http_get(client, "/health").await?;
                (code == 200 && body.contains("true")).then_some(())
            },
        )
        .await;
    }

    /// The member that leads the cluster now (each member's view, polled until one is
    /// named by a running member).
    async fn leader(&self) -> usize {
        let http = reqwest::Client::builder()
            .no_proxy()
            .build()
            .expect("client");
        eventually(Duration::from_secs(15), "an etcd leader", || async {
            for (i, client) in self.clients.iter().enumerate() {
                if self.members[i].is_none() {
                    continue;
                }
                let status: serde_json::Value = http
                    .post(format!("http://{client}/v3/maintenance/status"))
                    .body("{}")
                    .send()
                    .await
                    .ok()?
                    .text()
                    .await
                    .ok()
                    .and_then(|t| serde_json::from_str(&t).ok())?;
                if status["leader"].is_string() && status["leader"] == status["header"]["member_id"]
                {
                    return Some(i);
                }
            }
            None
        })
        .await
    }

    fn kill(&mut self, i: usize) {
        if let Some(mut child) = self.members[i].take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    async fn restart(&mut self, i: usize) {
        self.spawn(i, "existing");
        self.healthy(i).await;
    }

    /// `[state]` for these endpoints.
    fn state(&self) -> String {
        let list: Vec<String> = self
            .clients
            .iter()
            .map(|c| format!("\"http://{c}\""))
            .collect();
        format!("endpoints = [{}]", list.join(", "))
    }
}

impl Drop for EtcdCluster {
    fn drop(&mut self) {
        for i in 0..3 {
            self.kill(i);
        }
    }
}

/// Every server that runs.
fn all(servers: &[Option<Vantage>]) -> Vec<&Vantage> {
    servers.iter().flatten().collect()
}

/// Every server answers `ip` for www within 1 s.
async fn answers(ip: std::net::Ipv4Addr, servers: &[&Vantage]) {
    for s in servers {
        eventually(
            Duration::from_secs(1),
            "every server within 1 s",
            || async { (www(s).await == vec![IpAddr::V4(ip)]).then_some(()) },
        )
        .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_three_member_etcd_survives_a_lost_member_and_without_quorum_nothing_changes() {
    init();
    let dir = workdir();
    std::fs::write(dir.path().join("token"), "fleet-admin-token").expect("token");
    let mut etcd = EtcdCluster::start(&dir.path().join("etcd")).await;
    let ips = loopback_block();
    let port = tcp_targets(&ips).await;
    let (first, endpoints) = (etcd.clients[0], etcd.state());
    let start = |n: usize| {
        let path = config(dir.path(), n, first, &ips, port);
        let text = std::fs::read_to_string(&path)
            .expect("config")
            .replace(&format!("endpoints = [\"http://{first}\"]"), &endpoints);
        std::fs::write(&path, text).expect("config");
        Vantage::dns(&path, dir.path())
    };
    let mut servers: Vec<Option<Vantage>> = (0..3).map(|n| Some(start(n))).collect();
    for s in servers.iter().flatten() {
        s.wait_ready().await;
    }
    // A Route53 reconciler of the same fleet (against the strict emulator).
    let emulator = crate::route53::Emulator::strict().await;
    let zone =
        crate::route53::create_zone(&crate::route53::client(&emulator.url), "example.com.").await;
    let r53_config = {
        let text = std::fs::read_to_string(dir.path().join("ns0.toml"))
            .expect("config")
            .replace("state_dir = \"state-0\"", "state_dir = \"state-r53\"")
            .replace(
                "endpoints = [{ name = \"a\"",
                &format!("route53 = {{ zone_id = \"{zone}\", owner = \"t\" }}\nendpoints = [{{ name = \"a\""),
            )
            + &format!("\n[route53]\nendpoint_url = \"{}\"\ninterval = \"1s\"\n", emulator.url);
        let path = dir.path().join("r53.toml");
        std::fs::write(&path, text).expect("config");
        path
    };
    let reconciler = Vantage::start_with_env(
        &["route53", "--config", r53_config.to_str().expect("path")],
        dir.path(),
        &crate::route53::vantage_env(),
    );
    reconciler.wait_ready().await;
    let reconciler_answers = |ip: std::net::Ipv4Addr| {
        let reconciler = &reconciler;
        async move {
            eventually(
                Duration::from_secs(1),
                "the reconciler within 1 s",
                || async {
                    let status = reconciler.status().await;
                    let www = status["records"]
                        .as_array()?
                        .iter()
                        .find(|r| r["name"] == "www.example.com.")?
                        .clone();
                    (www["answer"] == serde_json::json!([ip.to_string()])).then_some(())
                },
            )
            .await;
        }
    };
    reconciler_answers(ips[0]).await;
    let cli = |s: &Vantage, args: &[&str]| override_cli(s, dir.path(), args);

    // A drain through any server: all three answer without the endpoint within 1 s.
    let s = all(&servers);
    let (code, out, err) = cli(s[1], &["drain", "a", "--reason", "one", "--for", "10m"]);
    assert_eq!(code, 0, "{out}{err}");
    answers(ips[1], &all(&servers)).await;
    reconciler_answers(ips[1]).await;

    // The leader lost: everything still works, the change made during the election too.
    let leader = etcd.leader().await;
    etcd.kill(leader);
    let (code, out, err) = cli(all(&servers)[2], &["clear", "a", "--reason", "two"]);
    assert_eq!(code, 0, "{out}{err}");
    answers(ips[0], &all(&servers)).await;

    // Two lost: no quorum. Answers do not change, changes are refused saying why, and every
    // server says so.
    let second = (0..3).find(|&i| i != leader).expect("another member");
    etcd.kill(second);
    let (code, _, err) = cli(
        all(&servers)[0],
        &["drain", "a", "--reason", "three", "--for", "10m"],
    );
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("etcd"), "{err}");
    for s in all(&servers) {
        eventually(
            Duration::from_secs(15),
            "the lost quorum to show",
            || async {
                let (_, text) = s.get("/metrics").await;
                (Exposition::parse(&text)
                    .value("vantage_state_backend_reachable", &[("backend", "etcd")])
                    == Some(0.0))
                .then_some(())
            },
        )
        .await;
        assert_eq!(www(s).await, vec![IpAddr::V4(ips[0])], "fail static");
    }

    // Back: everyone converges and follows again.
    etcd.restart(leader).await;
    etcd.restart(second).await;
    for s in all(&servers) {
        eventually(Duration::from_secs(20), "etcd followed again", || async {
            (s.status().await["state_backend"]["reachable"] == true).then_some(())
        })
        .await;
    }

    // An override that expires while a server is down is not in its answers when it returns.
    let (code, out, err) = cli(
        all(&servers)[0],
        &["drain", "a", "--reason", "short", "--for", "2s"],
    );
    assert_eq!(code, 0, "{out}{err}");
    answers(ips[1], &all(&servers)).await;
    let mut down = servers[2].take().expect("server 2");
    assert!(down.terminate().success());
    drop(down);
    for s in all(&servers) {
        eventually(
            Duration::from_secs(10),
            "the override to expire",
            || async { (www(s).await == vec![IpAddr::V4(ips[0])]).then_some(()) },
        )
        .await;
    }
    let back = start(2);
    back.wait_ready().await;
    assert_eq!(www(&back).await, vec![IpAddr::V4(ips[0])]);
    // One ordered trail of what every server did, on the server that was away (once it has
    // read the fleet's state: it serves from its own copy until etcd answers).
    let trail: Vec<String> = eventually(
        Duration::from_secs(10),
        "the returning server to read the fleet's trail",
        || async {
            let trail: Vec<String> = back.status().await["audit"]
                .as_array()?
                .iter()
                .rev()
                .filter(|e| e["what"] != "expired")
                .map(|e| {
                    format!(
                        "{} {}",
                        e["what"].as_str().unwrap_or(""),
                        e["reason"].as_str().unwrap_or("")
                    )
                })
                .collect();
            (!trail.is_empty()).then_some(trail)
        },
    )
    .await;
    assert_eq!(
        trail,
        vec!["set one", "clear two", "set short"],
        "{trail:?}"
    );
}
