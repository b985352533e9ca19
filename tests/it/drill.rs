//! `vantage drill` against a fleet on loopback: three `vantage probe` processes, two
//! `vantage dns` processes (each with its own state directory, as on two hosts), HTTPS backends.

use std::{
    io::{BufRead, BufReader},
    net::{IpAddr, Ipv4Addr},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::{Arc, Mutex},
    time::Duration,
};

use hickory_proto::rr::RecordType;
use serde_json::Value;

use crate::support::*;

const REGIONS: [&str; 3] = ["r1", "r2", "r3"];
const TOKEN: &str = "fleet-secret-for-drill-tests-0123";
const ADMIN_TOKEN: &str = "admin-token-for-drill-tests";
const INTERVAL_MS: u64 = 400;
const FALL: u64 = 3;
const POLL_MS: u64 = 100;
/// suspect_interval is the interval: failures are re-checked at the interval (no fast path).
const SUSPECT_MS: u64 = INTERVAL_MS;

struct Fleet {
    dir: tempfile::TempDir,
    ips: [Ipv4Addr; 2],
    backends: Vec<Backend>,
    _probers: Vec<Vantage>,
    ns: Vec<Vantage>,
    /// The fleet file the drill reads: the DNS servers' file plus `[[server]]`.
    drill_config: PathBuf,
}

fn config(port: u16, ips: [Ipv4Addr; 2], urls: &[String], state: &str, zones: &Path) -> String {
    let probers: String = REGIONS
        .iter()
        .zip(urls)
        .map(|(r, u)| format!("[[prober]]\nregion = \"{r}\"\nurl = \"{u}\"\n"))
        .collect();
    format!(
        r#"
[cluster]
stale_after = "3s"
token_file = "token"
poll_interval = "{POLL_MS}ms"
poll_timeout = "500ms"

{probers}
[check.web]
port = {port}
path = "/healthz"
host = "app.test"
interval = "{INTERVAL_MS}ms"
suspect_interval = "{SUSPECT_MS}ms"
timeout = "300ms"
rise = 2
fall = {FALL}
ca_file = "ca.pem"

[dns]
listen = ["127.0.0.1:0"]
zones_dir = "{zones}"

[admin]
listen = "127.0.0.1:0"
token_file = "admin-token"
state_dir = "{state}"

[drill]
timeout = "20s"

[[record]]
name = "www.example.com"
policy = "failover"
rto = "30s"
endpoints = [
  {{ name = "a", address = "{a}", site = "r1" }},
  {{ name = "b", address = "{b}", site = "r2" }},
]

[[record]]
name = "api.example.com"
policy = "all"
rto = "1s"
endpoints = [
  {{ name = "a", address = "{a}", site = "r1" }},
  {{ name = "b", address = "{b}", site = "r2" }},
]
"#,
        zones = zones.display(),
        a = ips[0],
        b = ips[1],
    )
}

async fn fleet() -> Fleet {
    init();
    let dir = workdir();
    let pki = Pki::new(dir.path());
    std::fs::write(dir.path().join("token"), TOKEN).expect("token");
    std::fs::write(dir.path().join("admin-token"), ADMIN_TOKEN).expect("admin token");
    let block = loopback_block();
    let ips = [block[0], block[1]];
    let backends = start_backends(
        &ips,
        vec![pki.issue(&["app.test"]), pki.issue(&["app.test"])],
    )
    .await;
    let port = backends[0].addr.port();
    let zones = dir.path().join("zones");
    let placeholder = vec!["http://127.0.0.1:9/".to_string(); 3];
    let prober_file = dir.path().join("prober.toml");
    std::fs::write(
        &prober_file,
        config(port, ips, &placeholder, "prober-state", &zones),
    )
    .expect("prober config");
    let probers: Vec<Vantage> = REGIONS
        .iter()
        .map(|region| {
            Vantage::start(
                &[
                    "probe",
                    "--region",
                    region,
                    "--config",
                    prober_file.to_str().expect("path"),
                    "--listen",
                    &format!("{}:0", loopback_block()[3]),
                ],
                dir.path(),
            )
        })
        .collect();
    let urls: Vec<String> = probers
        .iter()
        .map(|p| format!("http://{}/", p.admin))
        .collect();
    let mut ns = Vec::new();
    for name in ["ns1", "ns2"] {
        let file = dir.path().join(format!("{name}.toml"));
        std::fs::write(
            &file,
            config(port, ips, &urls, &format!("{name}-state"), &zones),
        )
        .expect("dns config");
        ns.push(Vantage::dns(&file, dir.path()));
    }
    for server in &ns {
        server.wait_ready().await;
    }
    let servers: String = ns
        .iter()
        .zip(["ns1", "ns2"])
        .map(|(s, name)| {
            format!(
                "[[server]]\nname = \"{name}\"\ndns = \"{}\"\nadmin = \"http://{}/\"\n",
                s.dns, s.admin
            )
        })
        .collect();
    let drill_config = dir.path().join("fleet.toml");
    std::fs::write(
        &drill_config,
        config(port, ips, &urls, "drill-state", &zones) + &servers,
    )
    .expect("drill config");
    let fleet = Fleet {
        dir,
        ips,
        backends,
        _probers: probers,
        ns,
        drill_config,
    };
    for server in &fleet.ns {
        fleet
            .wait_answer(server, "www.example.com.", &[fleet.a()])
            .await;
        fleet.wait_verdict(server, "b", "up").await;
    }
    fleet
}

impl Fleet {
    fn a(&self) -> IpAddr {
        IpAddr::V4(self.ips[0])
    }

    fn b(&self) -> IpAddr {
        IpAddr::V4(self.ips[1])
    }

    async fn answer(server: &Vantage, name: &str) -> Vec<IpAddr> {
        addresses(&udp_query(server.dns, &query_message(name, RecordType::A, false)).await)
    }

    async fn wait_answer(&self, server: &Vantage, name: &str, want: &[IpAddr]) {
        eventually(
            Duration::from_secs(15),
            &format!("{name} to answer {want:?}"),
            || async { (Self::answer(server, name).await == want).then_some(()) },
        )
        .await;
    }

    async fn wait_verdict(&self, server: &Vantage, id: &str, verdict: &str) {
        eventually(
            Duration::from_secs(15),
            &format!("{id} to be {verdict}"),
            || async {
                let status = server.status().await;
                status["endpoints"]
                    .as_array()?
                    .iter()
                    .any(|e| {
                        e["id"] == id && e["verdict"] == verdict && e["quorum_reached"] == true
                    })
                    .then_some(())
            },
        )
        .await;
    }

    /// `vantage override --admin ... ARGS` against one server, as an operator runs it.
    fn override_cli(
        &self,
        server: &Vantage,
        args: &[&str],
    ) -> impl FnOnce() -> (i32, String, String) + Send + 'static {
        let mut all: Vec<String> = vec![
            "override".into(),
            "--admin".into(),
            format!("http://{}/", server.admin),
            "--token-file".into(),
            self.dir.path().join("admin-token").display().to_string(),
        ];
        all.extend(args.iter().map(|a| a.to_string()));
        move || {
            let refs: Vec<&str> = all.iter().map(String::as_str).collect();
            run_vantage(&refs, &[])
        }
    }

    fn drill(&self, args: &[&str]) -> DrillRun {
        let mut all = vec![
            "drill",
            "--config",
            self.drill_config.to_str().expect("path"),
        ];
        all.extend_from_slice(args);
        DrillRun::start(&all, self.dir.path())
    }
}

/// A running `vantage drill`, its stderr read line by line.
struct DrillRun {
    child: Child,
    stderr: Arc<Mutex<Vec<String>>>,
}

impl DrillRun {
    fn start(args: &[&str], dir: &Path) -> DrillRun {
        let mut child = Command::new(env!("CARGO_BIN_EXE_vantage"))
            .args(args)
            .current_dir(dir)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start vantage drill");
        let stderr = Arc::new(Mutex::new(Vec::new()));
        let lines = stderr.clone();
        let pipe = child.stderr.take().expect("stderr");
        std::thread::spawn(move || {
            for line in BufReader::new(pipe).lines() {
                let Ok(line) = line else { break };
                lines.lock().expect("lock").push(line);
            }
        });
        DrillRun { child, stderr }
    }

    fn stderr(&self) -> String {
        self.stderr.lock().expect("lock").join("\n")
    }

    async fn wait_line(&self, text: &str) {
        eventually(
            Duration::from_secs(20),
            &format!("the drill to say {text:?}"),
            || async { self.stderr().contains(text).then_some(()) },
        )
        .await;
    }

    fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .args([&format!("-{name}"), &self.child.id().to_string()])
            .status()
            .expect("kill");
        assert!(status.success());
    }

    /// Waits for the exit: (code, stdout, stderr).
    async fn finish(mut self) -> (i32, String, String) {
        let code = eventually(Duration::from_secs(60), "the drill to exit", || {
            let status = self.child.try_wait().expect("wait");
            async move { status }
        })
        .await
        .code()
        .unwrap_or(-1);
        let mut stdout = String::new();
        if let Some(mut out) = self.child.stdout.take() {
            std::io::Read::read_to_string(&mut out, &mut stdout).expect("stdout");
        }
        // The stderr thread ends with the pipe.
        let stderr = eventually(Duration::from_secs(5), "the drill's stderr", || async {
            Some(self.stderr())
        })
        .await;
        (code, stdout, stderr)
    }
}

fn ms(v: &Value) -> u64 {
    v.as_u64()
        .unwrap_or_else(|| panic!("a duration in ms, got {v}"))
}

async fn overrides(server: &Vantage) -> Vec<Value> {
    server.status().await["overrides"]
        .as_array()
        .expect("overrides")
        .clone()
}

async fn metric(server: &Vantage, name: &str, record: &str) -> Option<f64> {
    let (code, text) = server.get("/metrics").await;
    assert_eq!(code, 200);
    Exposition::parse(&text).value(name, &[("record", record), ("type", "A")])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drills_measure_failover_and_failback_on_every_server_and_export_the_result() {
    let fleet = fleet().await;

    // Never drilled: the timestamp is 0, so "no drill in 90 days" fires for it.
    assert_eq!(
        metric(
            &fleet.ns[0],
            "vantage_drill_last_timestamp_seconds",
            "www.example.com."
        )
        .await,
        Some(0.0)
    );

    // 1. An override drill: every server fails over to b and back to a.
    let run = fleet.drill(&["--record", "www.example.com", "--json"]);
    let (code, stdout, stderr) = run.finish().await;
    assert_eq!(code, 0, "stdout:\n{stdout}\nstderr:\n{stderr}");
    let report: Value = serde_json::from_str(&stdout).expect("JSON report");
    assert_eq!(report["endpoint"], "a");
    assert_eq!(report["mode"], "override");
    assert_eq!(report["met"], true, "{report:#}");
    assert_eq!(report["restored"], true);
    assert_eq!(
        ms(&report["detection_budget_ms"]),
        INTERVAL_MS + (FALL - 1) * SUSPECT_MS + POLL_MS,
        "an interval, fall - 1 suspect intervals and one pull"
    );
    let servers = report["servers"].as_array().expect("servers");
    assert_eq!(servers.len(), 2);
    for s in servers {
        assert_eq!(s["baseline"], serde_json::json!([fleet.a()]), "{s}");
        assert_eq!(s["during"], serde_json::json!([fleet.b()]), "{s}");
        for half in ["failure", "failback"] {
            let p = &s[half];
            let (d, r, rec) = (
                ms(&p["detection_ms"]),
                ms(&p["response_ms"]),
                ms(&p["recovery_ms"]),
            );
            assert!(d <= r && r <= rec, "phases in order: {s}");
            assert!(rec < 5_000, "an override takes effect at once: {s}");
        }
    }
    assert_eq!(
        ms(&report["rto_ms"]),
        servers
            .iter()
            .map(|s| ms(&s["failure"]["recovery_ms"]))
            .max()
            .expect("max")
    );
    for server in &fleet.ns {
        assert!(overrides(server).await.is_empty(), "restored");
        assert_eq!(
            Fleet::answer(server, "www.example.com.").await,
            vec![fleet.a()]
        );
        let last = metric(
            server,
            "vantage_drill_last_timestamp_seconds",
            "www.example.com.",
        )
        .await
        .expect("last drill");
        assert!(last > 1.7e9, "{last}");
        assert_eq!(
            metric(server, "vantage_drill_target_met", "www.example.com.").await,
            Some(1.0)
        );
        assert_eq!(
            metric(
                server,
                "vantage_drill_rto_target_seconds",
                "www.example.com."
            )
            .await,
            Some(30.0)
        );
        let audit = server.status().await["audit"].clone();
        assert!(
            audit
                .as_array()
                .expect("audit")
                .iter()
                .any(|e| e["what"] == "set" && e["endpoint"] == "a" && e["action"] == "force_down"),
            "the drill's override is audited: {audit}"
        );
    }

    // 2. A real failure caused by the operator: detection follows (fall - 1) x suspect_interval.
    let run = fleet.drill(&["--record", "www.example.com", "--real", "--json"]);
    run.wait_line("cause the failure now").await;
    fleet.backends[0].set(Mode::Status(503));
    run.wait_line("repair it now").await;
    fleet.backends[0].set(Mode::Healthy);
    let (code, stdout, stderr) = run.finish().await;
    assert_eq!(code, 0, "stdout:\n{stdout}\nstderr:\n{stderr}");
    let report: Value = serde_json::from_str(&stdout).expect("JSON report");
    assert_eq!(report["mode"], "real");
    for s in report["servers"].as_array().expect("servers") {
        let detection = ms(&s["failure"]["detection_ms"]);
        // The clock starts at the first failed check; a verdict needs `fall` of them from a
        // quorum of probers, so (fall - 1) more suspect intervals, give or take one pull.
        let low = (FALL - 1) * SUSPECT_MS / 2;
        let high = FALL * INTERVAL_MS + 3 * POLL_MS + 1_000;
        assert!(
            (low..=high).contains(&detection),
            "detection {detection} ms outside {low}..={high}: {s}"
        );
        assert_eq!(s["during"], serde_json::json!([fleet.b()]), "{s}");
        assert!(ms(&s["failback"]["recovery_ms"]) >= ms(&s["failback"]["detection_ms"]));
    }
    for server in &fleet.ns {
        fleet
            .wait_answer(server, "www.example.com.", &[fleet.a()])
            .await;
    }

    // 3. A target that cannot be met (1 s, while the checks alone need 1.3 s): exit 3.
    let run = fleet.drill(&["--record", "api.example.com"]);
    let (code, stdout, stderr) = run.finish().await;
    assert_eq!(code, 3, "stdout:\n{stdout}\nstderr:\n{stderr}");
    assert!(stdout.contains("MISSED"), "{stdout}");
    for server in &fleet.ns {
        assert_eq!(
            metric(server, "vantage_drill_target_met", "api.example.com.").await,
            Some(0.0)
        );
        assert!(
            overrides(server).await.is_empty(),
            "restored after a missed target"
        );
        let both = {
            let mut v = vec![fleet.a(), fleet.b()];
            v.sort();
            v
        };
        fleet.wait_answer(server, "api.example.com.", &both).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drills_refuse_to_cause_an_outage_and_restore_when_interrupted() {
    let fleet = fleet().await;

    // Interrupted while holding the failure: the overrides are cleared on every server.
    let run = fleet.drill(&["--record", "www.example.com", "--hold", "60s"]);
    run.wait_line("holding the failure").await;
    for server in &fleet.ns {
        assert_eq!(
            overrides(server).await.len(),
            1,
            "the drill's override is in force"
        );
        assert_eq!(
            Fleet::answer(server, "www.example.com.").await,
            vec![fleet.b()]
        );
    }
    // Meanwhile an operator drains a on ns1 (replacing the drill's override there): the drill
    // must leave that one alone.
    let operator = fleet.override_cli(&fleet.ns[0], &["drain", "a", "--reason", "maintenance"]);
    let (code, _, stderr) = tokio::task::spawn_blocking(operator)
        .await
        .expect("override");
    assert_eq!(code, 0, "{stderr}");
    eventually(
        Duration::from_secs(5),
        "the drain to be in force",
        || async {
            let o = overrides(&fleet.ns[0]).await;
            (o.len() == 1 && o[0]["action"] == "drain").then_some(())
        },
    )
    .await;
    run.signal("INT");
    let (code, _, stderr) = run.finish().await;
    assert_eq!(code, 130, "{stderr}");
    assert!(stderr.contains("overrides are cleared"), "{stderr}");
    assert!(stderr.contains("not the drill's (maintenance)"), "{stderr}");
    let kept = overrides(&fleet.ns[0]).await;
    assert!(
        kept.len() == 1 && kept[0]["action"] == "drain" && kept[0]["reason"] == "maintenance",
        "the operator's drain is kept: {kept:?}"
    );
    let operator = fleet.override_cli(&fleet.ns[0], &["clear", "a"]);
    let (code, _, stderr) = tokio::task::spawn_blocking(operator)
        .await
        .expect("override");
    assert_eq!(code, 0, "{stderr}");
    for server in &fleet.ns {
        eventually(
            Duration::from_secs(5),
            "the overrides to be gone",
            || async { overrides(server).await.is_empty().then_some(()) },
        )
        .await;
        fleet
            .wait_answer(server, "www.example.com.", &[fleet.a()])
            .await;
    }
    // On ns2 the drill's own override was in force, and the drill cleared it.
    {
        let audit = fleet.ns[1].status().await["audit"].clone();
        assert!(
            audit
                .as_array()
                .expect("audit")
                .iter()
                .any(|e| e["what"] == "clear"
                    && e["endpoint"] == "a"
                    && e["reason"] == "drill ended"),
            "the interrupted drill cleared its override: {audit}"
        );
    }

    // The failover target is down: refused, nothing changed.
    fleet.backends[1].stop();
    for server in &fleet.ns {
        fleet.wait_verdict(server, "b", "down").await;
    }
    let before: Vec<usize> = {
        let mut v = Vec::new();
        for server in &fleet.ns {
            v.push(
                server.status().await["audit"]
                    .as_array()
                    .expect("audit")
                    .len(),
            );
        }
        v
    };
    let (code, stdout, stderr) = fleet.drill(&["--record", "www.example.com"]).finish().await;
    assert_eq!(code, 4, "stdout:\n{stdout}\nstderr:\n{stderr}");
    assert!(stderr.contains("no failover target"), "{stderr}");
    assert!(stderr.contains("b is down"), "{stderr}");
    for (server, audit) in fleet.ns.iter().zip(before) {
        assert!(overrides(server).await.is_empty());
        assert_eq!(
            server.status().await["audit"]
                .as_array()
                .expect("audit")
                .len(),
            audit,
            "a refused drill sets nothing"
        );
        assert_eq!(
            Fleet::answer(server, "www.example.com.").await,
            vec![fleet.a()]
        );
    }

    // Bad arguments are usage errors naming what exists.
    let (code, _, stderr) = fleet
        .drill(&["--record", "nope.example.com"])
        .finish()
        .await;
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("www.example.com. A"), "{stderr}");
}
