//! What a stranger can do to the DNS server: a flood from one network is rate limited (dropped,
//! and every second limited response sent truncated) while other clients are answered; a
//! client that proves its address with a DNS Cookie is never limited; the server raises its
//! open-file limit at start.

use std::{net::SocketAddr, time::Duration};

use tokio::{net::UdpSocket, time::Instant};

use crate::support::*;

/// A query for static.example.com A with an ID, and EDNS with a COOKIE option if given.
fn query(id: u16, cookie: Option<&[u8]>) -> Vec<u8> {
    let mut p = id.to_be_bytes().to_vec();
    p.extend_from_slice(&[1, 0, 0, 1, 0, 0, 0, 0, 0, u8::from(cookie.is_some())]);
    for label in ["static", "example", "com"] {
        p.push(label.len() as u8);
        p.extend_from_slice(label.as_bytes());
    }
    p.extend_from_slice(&[0, 0, 1, 0, 1]);
    if let Some(cookie) = cookie {
        p.extend_from_slice(&[0, 0, 41, 4, 208, 0, 0, 0, 0]);
        p.extend_from_slice(&((cookie.len() + 4) as u16).to_be_bytes());
        p.extend_from_slice(&[0, 10]);
        p.extend_from_slice(&(cookie.len() as u16).to_be_bytes());
        p.extend_from_slice(cookie);
    }
    p
}

/// The COOKIE option's data in a reply, if any.
fn reply_cookie(reply: &[u8]) -> Option<Vec<u8>> {
    let at = reply.windows(2).rposition(|w| w == [0, 10])?;
    let len = usize::from(u16::from_be_bytes([reply[at + 2], reply[at + 3]]));
    reply.get(at + 4..at + 4 + len).map(<[u8]>::to_vec)
}

/// Sends `count` queries from `socket` as fast as it can, then collects replies for a while:
/// (full answers, truncated answers).
async fn burst(
    socket: &UdpSocket,
    server: SocketAddr,
    count: u16,
    cookie: Option<&[u8]>,
) -> (usize, usize) {
    for id in 0..count {
        socket
            .send_to(&query(id, cookie), server)
            .await
            .expect("send");
    }
    let (mut full, mut truncated) = (0, 0);
    let mut buf = vec![0u8; 4096];
    while let Ok(Ok((n, _))) =
        tokio::time::timeout(Duration::from_millis(500), socket.recv_from(&mut buf)).await
    {
        if buf[2] & 0x02 != 0 {
            truncated += 1;
        } else if n > 12 && u16::from_be_bytes([buf[6], buf[7]]) == 1 {
            full += 1;
        }
    }
    (full, truncated)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_is_rate_limited_while_others_and_cookie_clients_are_answered() {
    init();
    let dir = workdir();
    let path = dir.path().join("fleet.toml");
    std::fs::write(
        &path,
        "[[prober]]\nregion = \"a\"\n[dns]\nlisten = [\"127.0.0.1:0\"]\n[dns.rrl]\nresponses_per_second = 20\nslip = 2\n[admin]\nlisten = \"127.0.0.1:0\"\n",
    )
    .expect("config");
    let vantage = Vantage::dns(&path, dir.path());
    vantage.wait_ready().await;
    let server = vantage.dns;

    // 400 queries from 127.0.0.1: at most the rate (twice, if the burst spans two seconds)
    // answered in full, about half of the rest truncated, the rest dropped.
    let flooder = UdpSocket::bind("127.0.0.1:0").await.expect("bind");
    let (full, truncated) = burst(&flooder, server, 400, None).await;
    assert!((20..=60).contains(&full), "{full} answered in full");
    assert!(truncated >= 100, "{truncated} truncated (slip 2)");
    assert!(full + truncated < 400, "some were dropped");

    // Another network (127.0.1.0/24) asking the same in the same second is answered.
    let other = UdpSocket::bind("127.0.1.1:0")
        .await
        .expect("bind 127.0.1.1");
    let (full, _) = burst(&other, server, 5, None).await;
    assert_eq!(full, 5, "another network is not limited");

    // A client with a cookie learns its server cookie, then is never limited, even from the
    // flooded network.
    let client_cookie = [7u8; 8];
    let learner = UdpSocket::bind("127.0.0.1:0").await.expect("bind");
    let reply = eventually(
        Duration::from_secs(10),
        "a reply with a server cookie",
        || async {
            udp_exchange(
                server,
                &query(1, Some(&client_cookie)),
                Duration::from_millis(300),
            )
            .await
            .filter(|r| reply_cookie(r).is_some_and(|c| c.len() == 24))
        },
    )
    .await;
    let cookie = reply_cookie(&reply).expect("cookie");
    assert_eq!(&cookie[..8], &client_cookie, "the client cookie is echoed");
    assert_eq!(cookie[8], 1, "an RFC 9018 server cookie (version 1)");
    let (flood_full, _) = burst(&flooder, server, 100, None).await;
    assert!(
        flood_full <= 60,
        "the flood is still limited ({flood_full})"
    );
    let (full, truncated) = burst(&learner, server, 100, Some(&cookie)).await;
    assert_eq!(
        (full, truncated),
        (100, 0),
        "a verified client is never limited"
    );
    // A forged server cookie proves nothing.
    let mut forged = cookie.clone();
    forged[20] ^= 0xff;
    let (full, _) = burst(&learner, server, 100, Some(&forged)).await;
    assert!(full <= 60, "a forged cookie is limited ({full})");

    let (status, text) = vantage.get("/metrics").await;
    assert_eq!(status, 200);
    let metrics = Exposition::parse(&text);
    let dropped = metrics
        .value("vantage_dns_rrl_total", &[("action", "dropped")])
        .expect("dropped counter");
    let slipped = metrics
        .value("vantage_dns_rrl_total", &[("action", "slipped")])
        .expect("slipped counter");
    assert!(
        dropped >= 100.0 && slipped >= 100.0,
        "dropped {dropped}, slipped {slipped}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_cookie_option_is_formerr() {
    init();
    let dir = workdir();
    let path = dir.path().join("fleet.toml");
    std::fs::write(
        &path,
        "[[prober]]\nregion = \"a\"\n[dns]\nlisten = [\"127.0.0.1:0\"]\n[admin]\nlisten = \"127.0.0.1:0\"\n",
    )
    .expect("config");
    let vantage = Vantage::dns(&path, dir.path());
    vantage.wait_ready().await;
    // RFC 7873 section 5.2.2: a COOKIE option of 9 to 15 or over 40 bytes is malformed.
    for len in [5usize, 9, 15, 41] {
        let reply = udp_exchange(
            vantage.dns,
            &query(9, Some(&vec![1; len])),
            Duration::from_secs(2),
        )
        .await
        .expect("a reply");
        assert_eq!(reply[3] & 0x0f, 1, "{len}-byte cookie: FORMERR");
        // With the OPT (RFC 6891 section 7): the client still sees that EDNS is spoken.
        assert_eq!(reply[11], 1, "{len}-byte cookie: an OPT in the FORMERR");
    }
    // A COOKIE alone, with no question, asks for a server cookie (RFC 7873 section 5.4).
    let mut bare = query(10, Some(&[7; 8]));
    let question_end = 12 + "static.example.com".len() + 2 + 4;
    bare.drain(12..question_end);
    bare[5] = 0;
    let reply = udp_exchange(vantage.dns, &bare, Duration::from_secs(2))
        .await
        .expect("a reply");
    assert_eq!(reply[3] & 0x0f, 0, "NOERROR: {reply:?}");
    let cookie = reply_cookie(&reply).expect("a cookie");
    assert_eq!(cookie.len(), 24, "client and server cookie");
    assert_eq!(&cookie[..8], &[7; 8]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_address_cannot_take_every_tcp_slot() {
    init();
    let dir = workdir();
    let path = dir.path().join("fleet.toml");
    std::fs::write(
        &path,
        "[[prober]]\nregion = \"a\"\n[dns]\nlisten = [\"127.0.0.1:0\"]\n[admin]\nlisten = \"127.0.0.1:0\"\n",
    )
    .expect("config");
    let vantage = Vantage::dns(&path, dir.path());
    vantage.wait_ready().await;
    let connect = |source: [u8; 4]| async move {
        let socket = tokio::net::TcpSocket::new_v4().expect("socket");
        socket
            .bind(SocketAddr::from((source, 0)))
            .expect("bind source");
        socket.connect(vantage.dns).await.expect("connect")
    };
    let mut held = Vec::new();
    for _ in 0..16 {
        let mut stream = connect([127, 0, 0, 1]).await;
        assert!(
            exchange(&mut stream).await.is_some(),
            "within the per-address cap"
        );
        held.push(stream);
    }
    let mut extra = connect([127, 0, 0, 1]).await;
    assert!(
        exchange(&mut extra).await.is_none(),
        "a 17th connection is closed"
    );
    let mut other = connect([127, 0, 1, 1]).await;
    assert!(
        exchange(&mut other).await.is_some(),
        "another address is served"
    );
    // The held connections still work.
    assert!(exchange(&mut held[0]).await.is_some());
}

/// One query on a TCP connection: Some(reply) or None if the server closed it.
async fn exchange(stream: &mut tokio::net::TcpStream) -> Option<Vec<u8>> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let q = query(3, None);
    let mut out = (q.len() as u16).to_be_bytes().to_vec();
    out.extend(q);
    stream.write_all(&out).await.ok()?;
    let mut len = [0u8; 2];
    tokio::time::timeout(Duration::from_secs(2), stream.read_exact(&mut len))
        .await
        .ok()?
        .ok()?;
    let mut reply = vec![0u8; usize::from(u16::from_be_bytes(len))];
    stream.read_exact(&mut reply).await.ok()?;
    Some(reply)
}

/// The A addresses of a reply to www.example.com A, sorted.
async fn www(server: SocketAddr) -> Option<Vec<std::net::IpAddr>> {
    let q = query_message("www.example.com.", hickory_proto::rr::RecordType::A, false);
    let reply = udp_exchange(
        server,
        &q.to_vec().expect("encode"),
        Duration::from_millis(500),
    )
    .await?;
    let message = hickory_proto::op::Message::from_vec(&reply).ok()?;
    Some(addresses(&message))
}

/// A DNS server whose two endpoints are checked over TCP every 100 ms with fall 1: if checks
/// failed, the answer would change (the primary Down: the secondary; both Down: both).
async fn checked_pair(dir: &std::path::Path) -> std::path::PathBuf {
    let port = tcp_check_target().await;
    let path = dir.join("fleet.toml");
    std::fs::write(
        &path,
        format!(
            "[[prober]]\nregion = \"a\"\n[check.t]\nprotocol = \"tcp\"\nport = {port}\ninterval = \"100ms\"\ntimeout = \"80ms\"\nrise = 1\nfall = 1\n\
             [dns]\nlisten = [\"127.0.0.1:0\"]\n[admin]\nlisten = \"127.0.0.1:0\"\n\
             [[record]]\nname = \"www.example.com\"\nendpoints = [{{ address = \"192.0.2.10\", check_address = \"127.0.0.1\" }}, {{ address = \"192.0.2.11\", check_address = \"127.0.0.1\" }}]\n"
        ),
    )
    .expect("config");
    path
}

/// `vantage_probes_total{result}` of region a (both endpoints).
async fn probes(vantage: &Vantage, result: &str) -> Option<f64> {
    let (status, text) = vantage.get("/metrics").await;
    (status == 200).then_some(())?;
    Some(
        Exposition::parse(&text)
            .value(
                "vantage_probes_total",
                &[("region", "a"), ("result", result)],
            )
            .unwrap_or(0.0),
    )
}

/// Asks www.example.com A over UDP every 100 ms for 3 s (30 check intervals with fall 1): the
/// answer must stay `expected` throughout.
async fn answer_holds(vantage: &Vantage, expected: &[std::net::IpAddr], when: &str) {
    let deadline = Instant::now() + Duration::from_secs(3);
    while Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(
            www(vantage.dns).await.as_deref(),
            Some(expected),
            "the answer changed (or UDP went unanswered) {when}"
        );
    }
}

/// A TCP connection to `to` from `source`, or None.
async fn connect_from(source: [u8; 4], to: SocketAddr) -> Option<tokio::net::TcpStream> {
    let socket = tokio::net::TcpSocket::new_v4().ok()?;
    socket.bind(SocketAddr::from((source, 0))).ok()?;
    tokio::time::timeout(Duration::from_millis(500), socket.connect(to))
        .await
        .ok()?
        .ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flooding_every_listener_leaves_the_checks_their_descriptors() {
    init();
    let dir = workdir();
    let path = checked_pair(dir.path()).await;
    // 128 open files, as a service manager with a low limit would give.
    let vantage = Vantage::dns_with_file_limit(&path, dir.path(), 128);
    vantage.wait_ready().await;
    let primary: Vec<std::net::IpAddr> = vec!["192.0.2.10".parse().expect("ip")];
    assert_eq!(www(vantage.dns).await, Some(primary.clone()));
    let local_before = probes(&vantage, "local").await.expect("metrics");

    // Idle connections from 20 addresses to the DNS and admin ports, 20 each: far more than
    // the process has descriptors for. The listeners take only their share.
    let mut flood = Vec::new();
    for i in 0..20u8 {
        for _ in 0..20 {
            for to in [vantage.dns, vantage.admin] {
                if let Some(stream) = connect_from([127, 0, 9, i + 1], to).await {
                    flood.push(stream);
                }
            }
        }
    }
    assert!(
        flood.len() > 128,
        "the flood opened {} connections",
        flood.len()
    );
    // Three seconds (30 check intervals with fall 1) under the flood: the answer holds, and
    // no check runs out of descriptors.
    answer_holds(&vantage, &primary, "under the flood").await;
    // New TCP clients are served (idle connections are closed early while the listener is
    // busy), and so is the admin API.
    let answered = eventually(
        Duration::from_secs(5),
        "a new TCP client answered",
        || async {
            let mut stream = connect_from([127, 0, 0, 1], vantage.dns).await?;
            exchange(&mut stream).await
        },
    )
    .await;
    assert!(answered.len() > 12);
    let local = eventually(Duration::from_secs(5), "the admin API answering", || {
        probes(&vantage, "local")
    })
    .await;
    assert_eq!(
        local, local_before,
        "checks ran out of descriptors: the listeners took the checks' share"
    );
    let (_, text) = vantage.get("/metrics").await;
    let metrics = Exposition::parse(&text);
    for listener in ["dns", "admin"] {
        let refused = metrics
            .value(
                "vantage_connections_refused_total",
                &[("listener", listener)],
            )
            .unwrap_or(0.0);
        assert!(refused > 0.0, "the {listener} listener refused nothing");
    }
    drop(flood);
    assert_eq!(www(vantage.dns).await, Some(primary));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn running_out_of_file_descriptors_never_changes_a_verdict() {
    init();
    let dir = workdir();
    let path = checked_pair(dir.path()).await;
    let vantage = Vantage::dns(&path, dir.path());
    vantage.wait_ready().await;
    let primary: Vec<std::net::IpAddr> = vec!["192.0.2.10".parse().expect("ip")];
    assert_eq!(www(vantage.dns).await, Some(primary.clone()));
    let ok_before = probes(&vantage, "success").await.expect("metrics");

    // Take the running process's soft limit of open files below what it has open (less the
    // sockets of checks in flight, which close): every new socket fails (EMFILE), as if
    // something else had taken them all.
    let pid = vantage.pid().to_string();
    let open = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .expect("/proc")
        .count();
    let limit = |soft: String| {
        let status = std::process::Command::new("prlimit")
            .args(["--pid", &pid, &format!("--nofile={soft}:")])
            .status()
            .expect("prlimit");
        assert!(status.success(), "prlimit failed");
    };
    limit(open.saturating_sub(4).to_string());
    // Checks cannot open sockets for 3 s (30 intervals with fall 1): the answer must hold.
    // (Queries over UDP need no new descriptor.)
    answer_holds(&vantage, &primary, "while descriptors ran out").await;
    limit("1024".into());
    // The outage did reach the checks: they failed for a local reason, counted as such, and
    // succeed again once descriptors are back.
    let local = eventually(
        Duration::from_secs(10),
        "checks succeeding again",
        || async {
            let ok = probes(&vantage, "success").await?;
            let local = probes(&vantage, "local").await?;
            (ok > ok_before + 2.0).then_some(local)
        },
    )
    .await;
    assert!(
        local > 0.0,
        "no check ran out of descriptors: the test did not bite"
    );
    assert_eq!(www(vantage.dns).await, Some(primary));
    let status = vantage.status().await;
    let endpoint = &status["endpoints"][0];
    assert_eq!(endpoint["verdict"], "up", "{status}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corrupt_or_unwritable_state_never_stops_a_server() {
    init();
    let dir = workdir();
    std::fs::write(
        dir.path().join("admin-token"),
        "admin-token-for-tests-0123456789\n",
    )
    .expect("token");
    let write_config = |state_dir: &str| {
        let path = dir.path().join("fleet.toml");
        std::fs::write(
            &path,
            format!(
                "[[prober]]\nregion = \"a\"\n[check.t]\nprotocol = \"tcp\"\nport = 9\ninterval = \"200ms\"\ntimeout = \"100ms\"\n[dns]\nlisten = [\"127.0.0.1:0\"]\n[admin]\nlisten = \"127.0.0.1:0\"\ntoken_file = \"admin-token\"\nstate_dir = \"{state_dir}\"\n[[record]]\nname = \"www.example.com\"\nendpoints = [{{ name = \"e1\", address = \"192.0.2.10\", check_address = \"127.0.0.1\" }}]\n"
            ),
        )
        .expect("config");
        path
    };
    // Corrupt, empty and truncated state files: moved aside, named, and the server serves.
    std::fs::create_dir(dir.path().join("state")).expect("state dir");
    std::fs::write(
        dir.path().join("state/overrides.json"),
        "[{\"endpoint\": \"a\", ",
    )
    .expect("truncated");
    std::fs::write(dir.path().join("state/drills.json"), "").expect("empty");
    let path = write_config("state");
    let vantage = Vantage::dns(&path, dir.path());
    vantage.wait_ready().await;
    let reply = udp_query(
        vantage.dns,
        &query_message(
            "static.example.com.",
            hickory_proto::rr::RecordType::A,
            false,
        ),
    )
    .await;
    assert_eq!(
        addresses(&reply),
        vec!["192.0.2.80".parse::<std::net::IpAddr>().expect("ip")]
    );
    let status = vantage.status().await;
    let problems = status["state_problems"]
        .as_array()
        .expect("state_problems")
        .clone();
    assert_eq!(problems.len(), 2, "{status}");
    assert!(
        problems[0]
            .as_str()
            .is_some_and(|p| p.contains("overrides.json") && p.contains("moved aside"))
    );
    let moved: Vec<String> = std::fs::read_dir(dir.path().join("state"))
        .expect("state")
        .filter_map(Result::ok)
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains(".corrupt-"))
        .collect();
    assert_eq!(moved.len(), 2, "{moved:?}");
    let (_, text) = vantage.get("/metrics").await;
    assert_eq!(
        Exposition::parse(&text).value("vantage_state_problem", &[("store", "overrides")]),
        Some(1.0)
    );
    drop(vantage);

    // A state directory that cannot be created: check-config warns, the server starts and
    // serves, and an override is refused with the reason.
    std::fs::write(dir.path().join("not-a-dir"), "x").expect("file");
    let path = write_config("not-a-dir/state");
    let (code, _, err) = run_vantage(&["check-config", path.to_str().expect("path")], &[]);
    assert_eq!(code, 0, "{err}");
    assert!(
        err.contains("warning:") && err.contains("admin.state_dir"),
        "{err}"
    );
    let vantage = Vantage::dns(&path, dir.path());
    vantage.wait_ready().await;
    let admin = format!("http://{}", vantage.admin);
    let (code, out, err) = run_vantage(
        &[
            "override",
            "--config",
            path.to_str().expect("path"),
            "--admin",
            &admin,
            "drain",
            "e1",
            "--reason",
            "test",
            "--for",
            "1h",
        ],
        &[],
    );
    assert_ne!(code, 0, "{out}");
    assert!(
        err.contains("admin.state_dir"),
        "the refusal names the cause: {err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_api_answers_only_its_own_names_own_pages_and_token_holders() {
    init();
    let dir = workdir();
    let admin_token = "admin-token-for-tests-0123456789";
    let read_token = "read-token-for-tests-0123456789";
    std::fs::write(dir.path().join("admin-token"), admin_token).expect("token");
    std::fs::write(dir.path().join("read-token"), read_token).expect("token");
    let path = dir.path().join("fleet.toml");
    std::fs::write(
        &path,
        "[[prober]]\nregion = \"a\"\n[check.t]\nprotocol = \"tcp\"\nport = 9\n[dns]\nlisten = [\"127.0.0.1:0\"]\n\
         [admin]\nlisten = \"127.0.0.1:0\"\ntoken_file = \"admin-token\"\nread_token_file = \"read-token\"\nhosts = [\"vantage-1.example.net\"]\n\
         [[record]]\nname = \"www.example.com\"\nendpoints = [{ name = \"e1\", address = \"192.0.2.10\", check_address = \"127.0.0.1\" }]\n",
    )
    .expect("config");
    let vantage = Vantage::dns(&path, dir.path());
    let addr = vantage.admin.to_string();
    let read = format!("Bearer {read_token}");
    let admin = format!("Bearer {admin_token}");
    let get = |host: &str, auth: Option<&str>, path: &'static str| {
        let mut headers = vec![("host", host.to_string())];
        if let Some(auth) = auth {
            headers.push(("authorization", auth.to_string()));
        }
        let target = vantage.admin;
        async move {
            let headers: Vec<(&str, &str)> =
                headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
            http_request_with(target, "GET", path, &headers, "").await.0
        }
    };
    // Probes are open to all; the status page holds no data.
    eventually(Duration::from_secs(20), "ready", || async {
        (get("evil.example", None, "/readyz").await == 200).then_some(())
    })
    .await;
    assert_eq!(get(&addr, None, "/livez").await, 200);
    assert_eq!(get(&addr, None, "/").await, 200);
    // DNS rebinding: a page of evil.example resolving to this address cannot read it.
    assert_eq!(get("evil.example", Some(&read), "/v1/status").await, 421);
    assert_eq!(get("evil.example:8053", Some(&read), "/metrics").await, 421);
    // Reads need the read token (or the admin token) by address, localhost or a configured name.
    assert_eq!(get(&addr, None, "/v1/status").await, 401);
    assert_eq!(get(&addr, Some("Bearer wrong"), "/metrics").await, 401);
    assert_eq!(get(&addr, Some(&read), "/v1/status").await, 200);
    assert_eq!(get(&addr, Some(&admin), "/metrics").await, 200);
    assert_eq!(
        get("localhost:8053", Some(&read), "/v1/overrides").await,
        200
    );
    assert_eq!(
        get("Vantage-1.example.net", Some(&read), "/v1/status").await,
        200
    );
    // The read token cannot write; a browser's cross-site write is refused even with the
    // admin token (a page cannot make the browser send it, but cookies-style trust is not
    // assumed either).
    let body = r#"{"endpoint":"e1","action":"drain","reason":"t","for":"1m"}"#;
    let post = |headers: Vec<(&'static str, String)>| {
        let target = vantage.admin;
        let mut all = vec![
            ("host", addr.clone()),
            ("content-type", "application/json".to_string()),
        ];
        all.extend(headers);
        async move {
            let headers: Vec<(&str, &str)> = all.iter().map(|(k, v)| (*k, v.as_str())).collect();
            http_request_with(target, "POST", "/v1/overrides", &headers, body)
                .await
                .0
        }
    };
    assert_eq!(post(vec![("authorization", read.clone())]).await, 401);
    assert_eq!(
        post(vec![
            ("authorization", admin.clone()),
            ("origin", "http://evil.example".into())
        ])
        .await,
        403
    );
    assert_eq!(
        post(vec![
            ("authorization", admin.clone()),
            ("sec-fetch-site", "cross-site".into())
        ])
        .await,
        403
    );
    assert_eq!(post(vec![("authorization", admin.clone())]).await, 200);
    // `vantage status` reads with the token of the configuration.
    let (code, out, err) = run_vantage(
        &[
            "status",
            "--config",
            path.to_str().expect("path"),
            "--admin",
            &format!("http://{addr}"),
        ],
        &[],
    );
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("www.example.com"), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flooded_prober_keeps_checking_and_reporting() {
    init();
    let dir = workdir();
    let port = tcp_check_target().await;
    std::fs::write(dir.path().join("token"), "0123456789abcdef0123456789abcdef").expect("token");
    let path = dir.path().join("probe.toml");
    std::fs::write(
        &path,
        format!(
            "[cluster]\ntoken_file = \"token\"\n[[prober]]\nregion = \"r1\"\nurl = \"http://127.0.0.1:9/\"\n\
             [check.t]\nprotocol = \"tcp\"\nport = {port}\ninterval = \"100ms\"\ntimeout = \"80ms\"\nrise = 1\nfall = 1\n\
             [[record]]\nname = \"www.example.com\"\nendpoints = [{{ address = \"192.0.2.10\", check_address = \"127.0.0.1\" }}]\n"
        ),
    )
    .expect("config");
    // No credentials are needed to open connections to a prober: 800 idle ones from 40
    // addresses, under a limit of 128 files, must leave its checks their descriptors.
    let prober = Vantage::start_with_file_limit(
        &[
            "probe",
            "--region",
            "r1",
            "--config",
            path.to_str().expect("path"),
            "--listen",
            "127.0.0.1:0",
        ],
        dir.path(),
        128,
    );
    let metric = |result: &'static str| {
        let addr = prober.admin;
        async move {
            let (status, text) = try_http_get(addr, "/metrics").await?;
            (status == 200).then_some(())?;
            Exposition::parse(&text).value(
                "vantage_probes_total",
                &[("region", "r1"), ("result", result)],
            )
        }
    };
    let ok_before = eventually(Duration::from_secs(10), "checks running", || async {
        metric("success").await.filter(|n| *n > 0.0)
    })
    .await;
    let mut flood = Vec::new();
    for i in 0..40u8 {
        for _ in 0..20 {
            if let Some(stream) = connect_from([127, 0, 8, i + 1], prober.admin).await {
                flood.push(stream);
            }
        }
    }
    assert!(
        flood.len() > 128,
        "the flood opened {} connections",
        flood.len()
    );
    // Checks go on succeeding under the flood (20 more at 100 ms), none for want of a
    // descriptor, and the metrics (a new connection) are served.
    let local = eventually(
        Duration::from_secs(10),
        "20 more successful checks under the flood",
        || async {
            let ok = metric("success").await?;
            let local = metric("local").await.unwrap_or(0.0);
            (ok >= ok_before + 20.0).then_some(local)
        },
    )
    .await;
    assert_eq!(local, 0.0, "checks ran out of descriptors");
    drop(flood);
    let (_, text) = eventually(Duration::from_secs(5), "the prober's metrics", || {
        try_http_get(prober.admin, "/metrics")
    })
    .await;
    assert!(
        Exposition::parse(&text)
            .value(
                "vantage_connections_refused_total",
                &[("listener", "prober")]
            )
            .unwrap_or(0.0)
            > 0.0
    );
}
