//! The shipped systemd units: valid for systemd (`systemd-analyze verify`), and their command
//! line runs as the unit would run it: an unprivileged user, a read-only configuration
//! directory, the unit's state directory and file limit, readiness over the notify socket,
//! reload on SIGHUP, and a stop within its timeout.

use std::{os::unix::fs::PermissionsExt, path::Path, process::Command, time::Duration};

use crate::support::*;

const UNITS: [&str; 2] = ["vantage-dns.service", "vantage-probe@.service"];

/// The value of `key=` in a unit (the last one).
fn directive<'a>(unit: &'a str, key: &str) -> Option<&'a str> {
    unit.lines()
        .rev()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix('='))
}

fn unit_text(name: &str) -> String {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    std::fs::read_to_string(root.join("deploy/systemd").join(name)).expect("unit")
}

#[test]
fn the_systemd_units_verify() {
    let dir = workdir();
    for name in UNITS {
        // The unit as installed: the binary where ExecStart says (here, the one under test).
        let text = unit_text(name).replace("/usr/local/bin/vantage", env!("CARGO_BIN_EXE_vantage"));
        std::fs::write(dir.path().join(name), text).expect("write");
    }
    let out = Command::new("systemd-analyze")
        .current_dir(dir.path())
        .args([
            "verify",
            "--man=no",
            "./vantage-dns.service",
            "./vantage-probe@us-east.service",
        ])
        .output()
        .expect("systemd-analyze (Debian's systemd package)");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    // Unknown or misspelt directives are only warnings for systemd: none is accepted here.
    assert!(stderr.trim().is_empty(), "{stderr}");
    for name in UNITS {
        let unit = unit_text(name);
        for (key, expected) in [
            ("Type", Some("notify")),
            ("User", Some("vantage")),
            ("ProtectSystem", Some("strict")),
            ("ReadOnlyPaths", Some("/etc/vantage")),
        ] {
            assert_eq!(directive(&unit, key), expected, "{name}: {key}");
        }
        let files: u64 = directive(&unit, "LimitNOFILE")
            .expect("LimitNOFILE")
            .parse()
            .expect("number");
        assert!(files >= 65536, "{name}: LimitNOFILE {files}");
        assert!(
            directive(&unit, "ExecStartPre").is_none(),
            "{name}: the start validates by itself"
        );
    }
    let dns = unit_text("vantage-dns.service");
    assert_eq!(directive(&dns, "StateDirectory"), Some("vantage"));
    assert_eq!(
        directive(&dns, "ExecReload"),
        Some("/bin/kill -HUP $MAINPID")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dns_unit_s_command_runs_as_the_unit_would_run_it() {
    if needs_root("the_dns_unit_s_command_runs_as_the_unit_would_run_it (runs it as nobody)") {
        return;
    }
    init();
    let dir = workdir();
    let unit = unit_text("vantage-dns.service");
    // /etc/vantage: owned by root, read-only for the service user.
    let etc = dir.path().join("etc-vantage");
    std::fs::create_dir(&etc).expect("etc");
    std::fs::write(etc.join("token"), "admin-token-for-tests-0123456789\n").expect("token");
    std::fs::write(
        etc.join("fleet.toml"),
        "[[prober]]\nregion = \"a\"\n[check.t]\nprotocol = \"tcp\"\nport = 9\ninterval = \"200ms\"\ntimeout = \"100ms\"\n\
         [dns]\nlisten = [\"127.0.0.1:0\"]\n[admin]\nlisten = \"127.0.0.1:0\"\ntoken_file = \"token\"\n\
         [[record]]\nname = \"www.example.com\"\nwhen_all_down = \"none\"\nendpoints = [{ name = \"e1\", address = \"192.0.2.10\", check_address = \"127.0.0.1\" }]\n",
    )
    .expect("config");
    let zones = etc.join("zones");
    std::fs::create_dir(&zones).expect("zones");
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    std::fs::copy(
        root.join("zones/example.com.zone"),
        zones.join("example.com.zone"),
    )
    .expect("zone");
    for path in [
        &etc,
        &zones,
        &zones.join("example.com.zone"),
        &etc.join("token"),
        &etc.join("fleet.toml"),
    ] {
        let mode = if path.is_dir() { 0o755 } else { 0o644 };
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).expect("chmod");
    }
    // /var/lib/vantage as StateDirectory= makes it: owned by the service user.
    let state = dir.path().join("var-lib-vantage");
    std::fs::create_dir(&state).expect("state");
    let nobody = "65534";
    assert!(
        Command::new("chown")
            .args([&format!("{nobody}:{nobody}"), state.to_str().expect("path")])
            .status()
            .expect("chown")
            .success()
    );
    std::fs::set_permissions(&state, std::fs::Permissions::from_mode(0o750)).expect("chmod");
    // The binary where the service user can run it.
    let bin = dir.path().join("vantage");
    std::fs::copy(env!("CARGO_BIN_EXE_vantage"), &bin).expect("copy");
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).expect("chmod");
    // The notify socket systemd would give.
    let notify_path = dir.path().join("notify");
    let notify = std::os::unix::net::UnixDatagram::bind(&notify_path).expect("notify socket");
    std::fs::set_permissions(&notify_path, std::fs::Permissions::from_mode(0o666)).expect("chmod");
    notify
        .set_read_timeout(Some(Duration::from_secs(20)))
        .expect("timeout");

    // ExecStart, with the installed paths mapped to this test's.
    let exec = directive(&unit, "ExecStart").expect("ExecStart");
    let exec = exec
        .replace("/usr/local/bin/vantage", bin.to_str().expect("path"))
        .replace("/etc/vantage", etc.to_str().expect("path"));
    let mut argv = exec.split_whitespace();
    let program = argv.next().expect("program").to_string();
    let args: Vec<&str> = argv.collect();
    // LimitNOFILE, or this machine's hard limit if that is lower (raising it needs a
    // privilege the test may not have).
    let wanted: u64 = directive(&unit, "LimitNOFILE")
        .expect("LimitNOFILE")
        .parse()
        .expect("number");
    let hard: u64 = String::from_utf8(
        Command::new("sh")
            .args(["-c", "ulimit -Hn"])
            .output()
            .expect("ulimit")
            .stdout,
    )
    .expect("utf-8")
    .trim()
    .parse()
    .unwrap_or(wanted);
    let files = wanted.min(hard).to_string();
    let files = files.as_str();
    let mut command = Command::new("prlimit");
    command
        .arg(format!("--nofile={files}:{files}"))
        .args([
            "--",
            "setpriv",
            "--reuid",
            nobody,
            "--regid",
            nobody,
            "--clear-groups",
            "--",
        ])
        .arg(program);
    let env: Vec<(&str, &str)> = vec![
        ("STATE_DIRECTORY", state.to_str().expect("path")),
        ("NOTIFY_SOCKET", notify_path.to_str().expect("path")),
    ];
    let mut vantage = Vantage::start_as(command, &args, dir.path(), &env);
    let mut buf = [0u8; 256];
    let n = tokio::task::spawn_blocking(move || notify.recv(&mut buf).map(|n| buf[..n].to_vec()))
        .await
        .expect("join")
        .expect("READY=1 on the notify socket");
    assert_eq!(n, b"READY=1");
    vantage.wait_ready().await;
    // It runs as the service user with the unit's limit, and keeps its state in the
    // StateDirectory: an override is accepted and saved there.
    let status = std::fs::read_to_string(format!("/proc/{}/status", vantage.pid())).expect("proc");
    assert!(
        status
            .lines()
            .any(|l| l.starts_with("Uid:") && l.contains(nobody)),
        "{status}"
    );
    let limits = std::fs::read_to_string(format!("/proc/{}/limits", vantage.pid())).expect("proc");
    assert!(
        limits
            .lines()
            .any(|l| l.starts_with("Max open files") && l.contains(files)),
        "{limits}"
    );
    let (code, out, err) = run_vantage(
        &[
            "override",
            "--admin",
            &format!("http://{}", vantage.admin),
            "--token-file",
            etc.join("token").to_str().expect("path"),
            "drain",
            "e1",
            "--reason",
            "unit test",
            "--for",
            "5m",
        ],
        &[],
    );
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        state.join("overrides.json").exists(),
        "overrides kept in the state directory"
    );
    // ExecReload: SIGHUP reloads.
    let reload = directive(&unit, "ExecReload")
        .expect("ExecReload")
        .replace("$MAINPID", &vantage.pid().to_string());
    let mut reload = reload.split_whitespace();
    assert!(
        Command::new(reload.next().expect("kill"))
            .args(reload)
            .status()
            .expect("kill")
            .success()
    );
    eventually(Duration::from_secs(10), "the reload", || async {
        vantage.stderr().contains("reloaded").then_some(())
    })
    .await;
    // A stop within TimeoutStopSec.
    let stop: u64 = directive(&unit, "TimeoutStopSec")
        .expect("TimeoutStopSec")
        .trim_end_matches('s')
        .parse()
        .expect("seconds");
    let started = tokio::time::Instant::now();
    assert!(vantage.terminate().success());
    assert!(started.elapsed() < Duration::from_secs(stop));
}

/// One configuration for the whole fleet, but each host holds only its role's secrets: a
/// prober starts without the fleet's etcd credentials or the zones' signing keys, a Route53
/// reconciler without the signing keys, while the DNS server (and `check-config`) names
/// every file it cannot read.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_role_reads_only_the_files_it_uses() {
    init();
    let dir = workdir();
    std::fs::write(
        dir.path().join("token"),
        "fleet-secret-for-deploy-tests-0123\n",
    )
    .expect("token");
    let zones = dir.path().join("zones");
    std::fs::create_dir_all(&zones).expect("zones");
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    std::fs::copy(
        root.join("zones/example.com.zone"),
        zones.join("example.com.zone"),
    )
    .expect("zone");
    let path = dir.path().join("fleet.toml");
    std::fs::write(
        &path,
        "[cluster]\ntoken_file = \"token\"\n[[prober]]\nregion = \"r1\"\n\
         [check.t]\nprotocol = \"tcp\"\nport = 9\n\
         [dns]\nlisten = [\"127.0.0.1:0\"]\nzones_dir = \"zones\"\n\
         [dns.dnssec.\"example.com\"]\nkeys = [{ file = \"keys/example.com.pem\" }]\n\
         [admin]\nlisten = \"127.0.0.1:0\"\n\
         [state]\nbackend = \"etcd\"\nendpoints = [\"https://127.0.0.1:9\"]\n\
         ca_file = \"etcd/ca.crt\"\ncert_file = \"etcd/client.crt\"\nkey_file = \"etcd/client.key\"\n\
         [[record]]\nname = \"www.example.com\"\nendpoints = [{ name = \"e1\", address = \"127.0.0.1\" }]\n\
         route53 = { zone_id = \"Z0123456789ABC\", owner = \"vantage-test\" }\n",
    )
    .expect("config");
    let config = path.to_str().expect("path");

    // The prober: none of those files are here, and it starts and checks.
    let prober = Vantage::probe("r1", &path, Some("127.0.0.1:0"), dir.path());
    assert!(
        prober.listening["listening"]["prober"].is_string(),
        "{}",
        prober.listening
    );
    drop(prober);

    // The DNS server and check-config: every missing file, by setting.
    let aws = [
        ("AWS_ACCESS_KEY_ID", "AKIDEXAMPLE"),
        ("AWS_SECRET_ACCESS_KEY", "secret"),
        ("AWS_REGION", "us-east-1"),
        ("AWS_EC2_METADATA_DISABLED", "true"),
        ("AWS_ENDPOINT_URL", "http://127.0.0.1:9"),
    ];
    for args in [
        vec!["dns", "--config", config],
        vec!["check-config", config],
    ] {
        let (code, _, stderr) = run_vantage(&args, &aws);
        assert_eq!(code, 2, "{args:?}: {stderr}");
        for setting in [
            "state.ca_file",
            "state.cert_file",
            "state.key_file",
            "dns.dnssec.\"example.com\".keys[0].file",
        ] {
            assert!(
                stderr.contains(setting),
                "{args:?} names {setting}: {stderr}"
            );
        }
    }

    // The Route53 reconciler: etcd's files (its leader election), not the signing keys.
    let (code, _, stderr) = run_vantage(&["route53", "--config", config], &aws);
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("state.ca_file"), "{stderr}");
    assert!(
        !stderr.contains("dnssec"),
        "the reconciler signs nothing: {stderr}"
    );
}
