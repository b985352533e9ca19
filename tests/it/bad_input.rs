//! Bad input gets clear errors naming the place; a malformed packet does not disturb the server.

use std::time::Duration;

use hickory_proto::{op::ResponseCode, rr::RecordType};

use crate::support::*;

fn check_config(path: &std::path::Path) -> (i32, String, String) {
    run_vantage(&["check-config", path.to_str().expect("path")], &[])
}

#[test]
fn check_config_reports_every_mistake_with_its_path() {
    let dir = workdir();
    let path = dir.path().join("fleet.toml");
    std::fs::write(
        &path,
        r#"
[cluster]
quorum = 4
stale_after = "five seconds"

[[prober]]
region = "us-east"
[[prober]]
region = "eu-west"

[check.web]
protocol = "htps"
interval = "1s"
timeout = "2s"

[[record]]
name = "www.example.com"
policy = "fastest"
check = "web"
endpoints = [{ address = "192.0.2.300" }, { address = "192.0.2.1", weight = 5 }]

[[record]]
name = "api.example.com"
check = "missing"
when_all_down = "fallback"
endpoints = [{ address = "192.0.2.2" }]
"#,
    )
    .expect("write");
    let (code, _, stderr) = check_config(&path);
    assert_eq!(code, 2, "{stderr}");
    for expected in [
        "cluster.quorum: 4 is out of range",
        "cluster.stale_after: not a duration",
        "check.web.protocol: \"htps\" is not a protocol",
        "check.web.timeout: 2s is longer than the interval",
        "record[0].policy: \"fastest\" is not a policy",
        "record[0].endpoints[0].address: \"192.0.2.300\" is not an IP address",
        "record[0].endpoints[1].weight: only used with policy = \"weighted\"",
        "record[1].check: no check named \"missing\"",
        "record[1].fallback: when_all_down = \"fallback\" needs a list",
    ] {
        assert!(
            stderr.contains(expected),
            "missing {expected:?} in:\n{stderr}"
        );
    }
    assert!(stderr.contains("fleet.toml"), "names the file:\n{stderr}");
}

#[test]
fn check_config_rejects_unknown_fields_and_records_outside_the_zones() {
    let dir = workdir();
    let path = dir.path().join("fleet.toml");
    std::fs::write(&path, "[[prober]]\nregion = \"a\"\nzone = \"x\"\n").expect("write");
    let (code, _, stderr) = check_config(&path);
    assert_eq!(code, 2);
    assert!(stderr.contains("prober[0].zone: unknown key"), "{stderr}");
    assert!(stderr.contains("line 3"), "names the line: {stderr}");

    std::fs::write(
        &path,
        "[[prober]]\nregion = \"a\"\n[check.t]\nprotocol = \"tcp\"\nport = 9\n\
         [[record]]\nname = \"www.example.org\"\nendpoints = [{ address = \"192.0.2.1\" }]\n",
    )
    .expect("write");
    let (code, _, stderr) = check_config(&path);
    assert_eq!(code, 2);
    assert!(
        stderr.contains("record[0].name: www.example.org. is not inside any zone"),
        "{stderr}"
    );
}

#[test]
fn a_bad_zone_file_is_named_with_its_line() {
    let dir = workdir();
    std::fs::write(
        dir.path().join("zones/example.com.zone"),
        format!("{EXAMPLE_ZONE}mail IN MX 10 mail.example.com.\nbroken IN A 10.0.0.256\n"),
    )
    .expect("zone");
    let path = dir.path().join("fleet.toml");
    std::fs::write(&path, "[[prober]]\nregion = \"a\"\n").expect("write");
    let (code, _, stderr) = check_config(&path);
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("example.com.zone:7: "), "{stderr}");

    // The good version passes.
    std::fs::write(dir.path().join("zones/example.com.zone"), EXAMPLE_ZONE).expect("zone");
    let (code, stdout, stderr) = check_config(&path);
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains("ok"), "{stdout}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_packets_do_not_disturb_the_server() {
    init();
    let dir = workdir();
    let path = dir.path().join("fleet.toml");
    std::fs::write(
        &path,
        format!(
            "[[prober]]\nregion = \"a\"\n[dns]\nlisten = [\"127.0.0.1:0\"]\nzones_dir = \"{}\"\n[admin]\nlisten = \"127.0.0.1:0\"\n",
            dir.path().join("zones").display()
        ),
    )
    .expect("write");
    let vantage = Vantage::dns(&path, dir.path());
    let valid = query_message("static.example.com.", RecordType::A, false);
    let good = valid.to_vec().expect("encode");
    let garbage: Vec<Vec<u8>> = vec![
        vec![],
        vec![0xff],
        vec![0u8; 11],
        good[..good.len() - 3].to_vec(),
        {
            // A header claiming 50 questions with none present.
            let mut p = good.clone();
            p[5] = 50;
            p
        },
        {
            // A label pointer loop.
            let mut p = good[..12].to_vec();
            p.extend_from_slice(&[0xc0, 0x0c, 0, 1, 0, 1]);
            p
        },
        (0..600).map(|i| (i * 7 % 256) as u8).collect(),
    ];
    for packet in &garbage {
        // FORMERR or no answer at all are both fine; a reply must be a well-formed message.
        if let Some(reply) = udp_exchange(vantage.dns, packet, Duration::from_millis(300)).await {
            let parsed = hickory_proto::op::Message::from_vec(&reply);
            assert!(parsed.is_ok(), "garbage {packet:?} got an unparsable reply");
        }
    }
    // Garbage over TCP: a length prefix and junk.
    {
        use tokio::io::AsyncWriteExt;
        let mut s = tokio::net::TcpStream::connect(vantage.dns)
            .await
            .expect("tcp");
        s.write_all(&[0, 5, 1, 2, 3, 4, 5]).await.expect("write");
        s.write_all(&[0xff, 0xff, 1, 2]).await.expect("write");
    }
    // The server still answers.
    let reply = udp_query(vantage.dns, &valid).await;
    assert_eq!(reply.metadata.response_code, ResponseCode::NoError);
    assert_eq!(addresses(&reply).len(), 1);
    let reply = tcp_query(vantage.dns, &valid).await;
    assert_eq!(reply.metadata.response_code, ResponseCode::NoError);
}

#[test]
fn the_shipped_example_config_and_zone_are_valid() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/fleet.toml");
    let (code, stdout, stderr) = check_config(&path);
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains("3 probers"), "{stdout}");
}

#[test]
fn check_config_reads_the_ca_file() {
    let dir = workdir();
    std::fs::write(dir.path().join("ca.pem"), "not a certificate\n").expect("ca");
    let path = dir.path().join("fleet.toml");
    std::fs::write(
        &path,
        "[[prober]]\nregion = \"a\"\n[check.web]\nca_file = \"ca.pem\"\n\
         [[record]]\nname = \"www.example.com\"\nendpoints = [{ address = \"192.0.2.1\" }]\n",
    )
    .expect("write");
    let (code, _, stderr) = check_config(&path);
    assert_eq!(code, 2, "{stderr}");
    assert!(
        stderr.contains("ca_file") && stderr.contains("ca.pem"),
        "{stderr}"
    );
}

#[test]
fn the_shipped_three_region_example_is_valid() {
    let dir = workdir();
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut text =
        std::fs::read_to_string(root.join("deploy/fleet-3-regions.toml")).expect("example");
    // Every prober's identity as its comment says to write it: `vantage keygen` with the
    // address of its url; the printed public key replaces the example's.
    let keys = dir.path().join("keys");
    let example_keys: Vec<String> = text
        .lines()
        .filter_map(|l| l.strip_prefix("public_key = "))
        .map(str::to_string)
        .collect();
    assert_eq!(example_keys.len(), 3, "one key per prober");
    for (region, ip, example_key) in [
        ("us-east", "10.10.0.5"),
        ("eu-west", "10.20.0.5"),
        ("ap-south", "10.30.0.5"),
    ]
    .iter()
    .zip(&example_keys)
    .map(|((r, ip), k)| (r, ip, k))
    {
        let key = keygen_public_key(&keys, region, ip);
        text = text.replace(example_key, &key);
    }
    // The etcd client's files, as an operator puts them there.
    let etcd = dir.path().join("etcd");
    std::fs::create_dir_all(&etcd).expect("dir");
    for file in ["ca.pem", "client.pem", "client.key"] {
        std::fs::write(etcd.join(file), "PEM").expect("etcd file");
    }
    let text = text
        .replace("/etc/vantage/etcd", etcd.to_str().expect("path"))
        .replace("/etc/vantage/keys", keys.to_str().expect("path"))
        .replace(
            "/etc/vantage/token",
            dir.path().join("token").to_str().expect("path"),
        )
        .replace(
            "/etc/vantage/zones",
            root.join("zones").to_str().expect("path"),
        );
    std::fs::write(
        dir.path().join("token"),
        "0123456789abcdef0123456789abcdef\n",
    )
    .expect("token");
    let path = dir.path().join("fleet.toml");
    std::fs::write(&path, text).expect("config");
    let (code, stdout, stderr) = check_config(&path);
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains("3 probers"), "{stdout}");
    assert!(!stderr.contains("warning"), "{stderr}");
}

#[test]
fn a_quorum_that_cannot_lose_a_prober_is_warned_about() {
    let dir = workdir();
    let path = dir.path().join("fleet.toml");
    for (probers, warned) in [(2, true), (3, false), (1, false)] {
        let text: String = (0..probers)
            .map(|i| format!("[[prober]]\nregion = \"r{i}\"\n"))
            .collect();
        std::fs::write(&path, text).expect("config");
        let (code, _, stderr) = check_config(&path);
        assert_eq!(code, 0, "{stderr}");
        assert_eq!(
            stderr.contains("losing any one prober freezes every verdict"),
            warned,
            "{probers} probers: {stderr}"
        );
    }
}

#[test]
fn probers_without_their_own_key_or_tls_are_warned_about() {
    let dir = workdir();
    std::fs::write(
        dir.path().join("token"),
        "0123456789abcdef0123456789abcdef\n",
    )
    .expect("token");
    let path = dir.path().join("fleet.toml");
    std::fs::write(
        &path,
        "[cluster]\ntoken_file = \"token\"\n[[prober]]\nregion = \"r1\"\nurl = \"http://127.0.0.1:9443\"\n",
    )
    .expect("config");
    let (code, _, stderr) = check_config(&path);
    assert_eq!(code, 0, "{stderr}");
    assert!(
        stderr.contains("warning: prober r1 has no public_key"),
        "{stderr}"
    );
    assert!(
        stderr.contains("warning: prober r1 is reached over plain http"),
        "{stderr}"
    );
    // An https url needs something to trust; a malformed key is refused.
    std::fs::write(
        &path,
        "[cluster]\ntoken_file = \"token\"\n[[prober]]\nregion = \"r1\"\nurl = \"https://127.0.0.1:9443\"\nkey_file = \"r1.key\"\npublic_key = \"ed25519:00\"\n",
    )
    .expect("config");
    let (code, _, stderr) = check_config(&path);
    assert_eq!(code, 2, "{stderr}");
    for expected in [
        "prober[0].url: an https url needs something to trust",
        "prober[0].public_key: \"ed25519:00\" is not a public key",
        "prober[0].tls_cert_file",
    ] {
        assert!(stderr.contains(expected), "{expected}: {stderr}");
    }
}

#[test]
fn check_config_reports_every_problem_in_one_pass_with_lines_and_suggestions() {
    let dir = workdir();
    let path = dir.path().join("fleet.toml");
    std::fs::write(
        &path,
        "[[prober]]\nregion = \"a\"\n[check.web]\nprotocol = \"https\"\ntimout = \"1s\"\nrise = \"two\"\n\
         [[record]]\nname = \"www.example.com\"\npolicy = \"random\"\nendpoints = [\n  { address = \"192.0.2.1\" },\n  { adress = \"192.0.2.2\" },\n  { address = \"1.2.3\" },\n]\n",
    )
    .expect("config");
    let (code, _, stderr) = check_config(&path);
    assert_eq!(code, 2, "{stderr}");
    for expected in [
        "line 5: check.web.timout: unknown key; did you mean `timeout`?",
        "line 6: check.web.rise: invalid type: string \"two\", expected i64",
        "line 9: record[0].policy: \"random\" is not a policy",
        "line 12: record[0].endpoints[1].adress: unknown key; did you mean `address`?",
        "line 12: record[0].endpoints[1].address: missing: this key is required",
        "line 13: record[0].endpoints[2].address: \"1.2.3\" is not an IP address",
    ] {
        assert!(
            stderr.contains(expected),
            "missing {expected:?} in\n{stderr}"
        );
    }
    // Each problem once, never at the whole record.
    assert_eq!(stderr.matches("adress").count(), 1, "{stderr}");
    assert!(!stderr.contains(" record[0]: "), "{stderr}");
}

/// `check-config` lists every problem at once: the configuration's values, the zone files
/// (every bad line, and the zone's own rules), a missing zones directory at its setting's
/// line, and the prober files found on this host; `--region` checks as that prober starts.
#[test]
fn check_config_checks_zones_and_prober_files_in_the_same_pass() {
    let dir = workdir();
    let path = dir.path().join("fleet.toml");
    // A bad value, and a zone file with two bad records and a CNAME beside other data.
    std::fs::write(
        dir.path().join("zones/example.com.zone"),
        format!(
            "{EXAMPLE_ZONE}bad IN A 1.2.3\nworse IN A 1.2.3.4.5\nstatic IN CNAME ns1\nlast IN A 192.0.2.9\n"
        ),
    )
    .expect("zone");
    let config = "[[prober]]\nregion = \"us.east-1\"\n[check.web]\nprotocol = \"tcp\"\nport = 9\nrise = 0\n\
                  [[record]]\nname = \"www.example.com\"\nendpoints = [{ address = \"192.0.2.1\" }]\n";
    std::fs::write(&path, config).expect("config");
    let (code, _, stderr) = check_config(&path);
    assert_eq!(code, 2, "{stderr}");
    for expected in [
        "line 6: check.web.rise: 0 is out of range",
        "example.com.zone:6: A: \"1.2.3\" is not an IPv4 address",
        "example.com.zone:7: A: \"1.2.3.4.5\" is not an IPv4 address",
        "static.example.com. has a CNAME and other data",
    ] {
        assert!(
            stderr.contains(expected),
            "missing {expected:?} in\n{stderr}"
        );
    }
    // A zones directory that is not there: at its setting, beside the other problem.
    std::fs::write(&path, format!("{config}[dns]\nzones_dir = \"nowhere\"\n")).expect("config");
    let (code, _, stderr) = check_config(&path);
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("line 6: check.web.rise"), "{stderr}");
    assert!(
        stderr.contains("line 11: dns.zones_dir: cannot read the zones directory"),
        "{stderr}"
    );

    // A prober's key: checked where it is, against its public key; a region's name with a
    // dot gets its key like any other.
    std::fs::write(dir.path().join("zones/example.com.zone"), EXAMPLE_ZONE).expect("zone");
    std::fs::write(
        dir.path().join("token"),
        "0123456789abcdef0123456789abcdef\n",
    )
    .expect("token");
    let keys = dir.path().join("keys");
    let ours = keygen_public_key(&keys, "us.east-1", "127.0.0.1");
    let theirs = keygen_public_key(&dir.path().join("other"), "us.east-1", "127.0.0.1");
    let prober = |public: &str| {
        format!(
            "[cluster]\ntoken_file = \"token\"\n\
             [[prober]]\nregion = \"us.east-1\"\nurl = \"http://127.0.0.1:9443\"\nkey_file = \"keys/us.east-1.key\"\npublic_key = {public}\n\
             [check.web]\nprotocol = \"tcp\"\nport = 9\n\
             [[record]]\nname = \"www.example.com\"\nendpoints = [{{ address = \"192.0.2.1\" }}]\n"
        )
    };
    std::fs::write(&path, prober(&ours)).expect("config");
    let (code, _, stderr) = check_config(&path);
    assert_eq!(code, 0, "{stderr}");
    std::fs::write(&path, prober(&theirs)).expect("config");
    let (code, _, stderr) = check_config(&path);
    assert_eq!(code, 2, "{stderr}");
    assert!(
        stderr.contains("line 6: prober[0].key_file:")
            && stderr.contains("is not among this prober's public_key values"),
        "{stderr}"
    );
    // Elsewhere in the fleet the key is not on the host: fine, unless checking as that prober.
    std::fs::write(&path, prober(&ours)).expect("config");
    std::fs::remove_file(keys.join("us.east-1.key")).expect("remove");
    let (code, _, stderr) = check_config(&path);
    assert_eq!(code, 0, "{stderr}");
    let (code, _, stderr) = run_vantage(
        &[
            "check-config",
            "--region",
            "us.east-1",
            path.to_str().expect("path"),
        ],
        &[],
    );
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("key_file"), "{stderr}");
}

/// Probers in this process report as they check: the pull's timing does not bound stale_after.
#[test]
fn fast_checks_without_remote_probers_need_no_poll_settings() {
    let dir = workdir();
    let path = dir.path().join("fleet.toml");
    let config = "[cluster]\nstale_after = \"1s\"\n[[prober]]\nregion = \"a\"\n\
                  [check.web]\nprotocol = \"tcp\"\nport = 9\ninterval = \"200ms\"\ntimeout = \"100ms\"\n\
                  [[record]]\nname = \"www.example.com\"\nendpoints = [{ address = \"192.0.2.1\" }]\n";
    std::fs::write(&path, config).expect("config");
    let (code, _, stderr) = check_config(&path);
    assert_eq!(code, 0, "{stderr}");
    // Pulled from a url, the same stale_after is too short for the default pull.
    std::fs::write(
        &path,
        config.replace(
            "region = \"a\"\n",
            "region = \"a\"\nurl = \"http://127.0.0.1:9443\"\n",
        ),
    )
    .expect("config");
    let (code, _, stderr) = check_config(&path);
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("cluster.poll_interval"), "{stderr}");
}
