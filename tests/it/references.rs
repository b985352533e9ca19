//! The reference servers of the differential tests, Knot DNS and NSD (both installed by
//! tests/run), each serving one zone on a free loopback port and stopped when dropped.

use std::{
    net::SocketAddr,
    path::Path,
    process::{Child, Command, Stdio},
    time::Duration,
};

use hickory_proto::rr::RecordType;

use crate::support::*;

pub struct Reference {
    child: Child,
    pub addr: SocketAddr,
}

impl Drop for Reference {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A port free on loopback for both UDP and TCP.
fn free_port() -> u16 {
    loop {
        let udp = std::net::UdpSocket::bind("127.0.0.1:0").expect("free port");
        let port = udp.local_addr().expect("addr").port();
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

async fn started(name: &'static str, child: Child, port: u16, probe: &str) -> Reference {
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().expect("addr");
    let reference = Reference { child, addr };
    let query = query_message(probe, RecordType::SOA, false)
        .to_vec()
        .expect("encode");
    eventually(
        Duration::from_secs(15),
        &format!("{name} to answer"),
        || {
            let query = query.clone();
            async move {
                udp_exchange(addr, &query, Duration::from_millis(200))
                    .await
                    .map(|_| ())
            }
        },
    )
    .await;
    reference
}

/// Knot DNS serving `zone` as `origin` (no trailing dot), with its default settings.
pub async fn knot(dir: &Path, origin: &str, zone: &str) -> Reference {
    knot_with(dir, origin, zone, false).await
}

/// Knot DNS as [`knot`], letting 127.0.0.1 transfer the zone if `transfers`.
pub async fn knot_with(dir: &Path, origin: &str, zone: &str, transfers: bool) -> Reference {
    if transfers {
        knot_configured(
            dir,
            "knot",
            origin,
            zone,
            "acl:\n  - id: xfr\n    address: 127.0.0.1\n    action: transfer\n",
            "    acl: xfr\n",
        )
        .await
    } else {
        knot_configured(dir, "knot", origin, zone, "", "").await
    }
}

/// Knot DNS serving `zone` as `origin` (no trailing dot) from `dir/run`, with `sections`
/// added to its configuration and `zone_options` to the zone's.
async fn knot_configured(
    dir: &Path,
    run: &str,
    origin: &str,
    zone: &str,
    sections: &str,
    zone_options: &str,
) -> Reference {
    let port = free_port();
    let run = dir.join(run);
    std::fs::create_dir_all(run.join("zones")).expect("dir");
    std::fs::write(run.join(format!("zones/{origin}.zone")), zone).expect("zone");
    let conf = format!(
        "server:\n    rundir: \"{run}\"\n    listen: 127.0.0.1@{port}\ndatabase:\n    storage: \"{run}\"\n{sections}zone:\n  - domain: {origin}\n    storage: \"{run}/zones\"\n    file: \"{origin}.zone\"\n{zone_options}",
        run = run.display()
    );
    std::fs::write(run.join("knot.conf"), conf).expect("conf");
    let child = Command::new("/usr/sbin/knotd")
        .args(["-c", run.join("knot.conf").to_str().expect("path")])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start knotd (tests/run installs the knot package)");
    started("knot", child, port, &format!("{origin}.")).await
}

/// NSD serving `zone` as `origin` (no trailing dot), in the foreground, rate limiting off.
pub async fn nsd(dir: &Path, origin: &str, zone: &str) -> Reference {
    let port = free_port();
    let run = dir.join("nsd");
    std::fs::create_dir_all(&run).expect("dir");
    std::fs::write(run.join(format!("{origin}.zone")), zone).expect("zone");
    let conf = format!(
        "server:\n  ip-address: 127.0.0.1@{port}\n  port: {port}\n  zonesdir: \"{run}\"\n  username: \"\"\n  chroot: \"\"\n  pidfile: \"{run}/nsd.pid\"\n  database: \"\"\n  xfrdfile: \"{run}/xfrd.state\"\n  zonelistfile: \"{run}/zone.list\"\n  xfrdir: \"{run}\"\n  logfile: \"{run}/nsd.log\"\n  server-count: 1\n  rrl-ratelimit: 0\n  hide-version: yes\nremote-control:\n  control-enable: no\nzone:\n  name: {origin}\n  zonefile: \"{origin}.zone\"\n",
        run = run.display()
    );
    std::fs::write(run.join("nsd.conf"), conf).expect("conf");
    let child = Command::new("/usr/sbin/nsd")
        .args(["-d", "-c", run.join("nsd.conf").to_str().expect("path")])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start nsd (tests/run installs the nsd package)");
    started("nsd", child, port, &format!("{origin}.")).await
}

/// Knot DNS serving `zone` as `origin` with online signing (`mod-onlinesign`, ECDSA P-256,
/// keys of its own), for the structure of signed answers.
pub async fn knot_onlinesign(dir: &Path, origin: &str, zone: &str) -> Reference {
    knot_configured(
        dir,
        "knot-onlinesign",
        origin,
        zone,
        "policy:\n  - id: p\n    algorithm: ecdsap256sha256\n    single-type-signing: on\nmod-onlinesign:\n  - id: s\n    policy: p\n",
        "    module: mod-onlinesign/s\n",
    )
    .await
}

/// unbound as a validating resolver (installed by tests/run): `anchors` are its trust anchors
/// (DS records in presentation form), `stubs` the zones it asks a given server for (a zone
/// listed several times, one after the other, has several servers). Nothing
/// else is reachable: every query it cannot send to a stub fails.
pub async fn unbound(dir: &Path, anchors: &[String], stubs: &[(&str, SocketAddr)]) -> Reference {
    let port = free_port();
    let run = dir.join(format!("unbound-{port}"));
    std::fs::create_dir_all(&run).expect("dir");
    let mut conf = format!(
        "server:\n  interface: 127.0.0.1\n  port: {port}\n  do-ip6: no\n  do-not-query-localhost: no\n  username: \"\"\n  chroot: \"\"\n  directory: \"{run}\"\n  pidfile: \"{run}/unbound.pid\"\n  use-syslog: no\n  logfile: \"{run}/unbound.log\"\n  verbosity: 1\n  val-log-level: 2\n  num-threads: 1\n  so-reuseport: no\n  module-config: \"validator iterator\"\n  qname-minimisation: no\n  prefetch: no\n  cache-min-ttl: 0\n  val-bogus-ttl: 1\n  infra-host-ttl: 1\n  access-control: 127.0.0.0/8 allow\n",
        run = run.display()
    );
    for anchor in anchors {
        conf.push_str(&format!("  trust-anchor: \"{anchor}\"\n"));
    }
    conf.push_str("remote-control:\n  control-enable: no\n");
    // A zone listed several times has several servers.
    let mut zones: Vec<&str> = stubs.iter().map(|(zone, _)| *zone).collect();
    zones.dedup();
    for zone in zones {
        conf.push_str(&format!("stub-zone:\n  name: \"{zone}\"\n"));
        for (_, addr) in stubs.iter().filter(|(z, _)| *z == zone) {
            conf.push_str(&format!("  stub-addr: {}@{}\n", addr.ip(), addr.port()));
        }
    }
    std::fs::write(run.join("unbound.conf"), conf).expect("conf");
    let child = Command::new("/usr/sbin/unbound")
        .args(["-d", "-c", run.join("unbound.conf").to_str().expect("path")])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start unbound (tests/run installs the unbound package)");
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().expect("addr");
    let reference = Reference { child, addr };
    // Any answer, even SERVFAIL, says it listens.
    let query = query_message(".", RecordType::NS, false)
        .to_vec()
        .expect("encode");
    eventually(Duration::from_secs(15), "unbound to answer", || {
        let query = query.clone();
        async move {
            udp_exchange(addr, &query, Duration::from_millis(200))
                .await
                .map(|_| ())
        }
    })
    .await;
    reference
}
