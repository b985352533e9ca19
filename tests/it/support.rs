//! Test support: generated certificates, HTTPS backends, the vantage binary as a child process,
//! DNS over real UDP/TCP sockets, Prometheus text parsing, polling with a deadline.

use std::{
    collections::BTreeMap,
    io::{BufRead, BufReader},
    net::{IpAddr, Ipv4Addr, SocketAddr},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::{
        Arc, Mutex,
        atomic::{AtomicU16, Ordering},
    },
    time::Duration,
};

use hickory_proto::{
    op::{Edns, Message, MessageType, OpCode, Query},
    rr::{Name, RecordType},
};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream, UdpSocket},
    task::JoinHandle,
    time::Instant,
};
use tokio_rustls::{TlsAcceptor, rustls};

pub fn init() {
    vantage::install_crypto_provider();
}

/// Polls `probe` until it returns Some, or panics with `what` after `timeout`.
pub async fn eventually<T, F, Fut>(timeout: Duration, what: &str, mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = probe().await {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// A private CA and certificates it signs.
pub struct Pki {
    ca: rcgen::CertifiedIssuer<'static, rcgen::KeyPair>,
    pub ca_file: PathBuf,
}

pub struct ServerCert {
    pub chain: Vec<rustls::pki_types::CertificateDer<'static>>,
    pub key: rustls::pki_types::PrivateKeyDer<'static>,
}

impl Pki {
    pub fn new(dir: &Path) -> Self {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "vantage test CA");
        let key = rcgen::KeyPair::generate().expect("key");
        let ca = rcgen::CertifiedIssuer::self_signed(params, key).expect("CA");
        let ca_file = dir.join("ca.pem");
        std::fs::write(&ca_file, ca.pem()).expect("write CA");
        Self { ca, ca_file }
    }

    /// A certificate for `names`, signed by this CA.
    pub fn issue(&self, names: &[&str]) -> ServerCert {
        let params =
            rcgen::CertificateParams::new(names.iter().map(|s| s.to_string()).collect::<Vec<_>>())
                .expect("params");
        let key = rcgen::KeyPair::generate().expect("key");
        let cert = params.signed_by(&key, &self.ca).expect("sign");
        ServerCert {
            chain: vec![cert.der().clone()],
            key: rustls::pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into()),
        }
    }

    /// A client certificate for `names` with no subject name (etcd's gateway refuses client
    /// certificates with a CommonName when it authenticates users).
    pub fn issue_client(&self, names: &[&str]) -> ServerCert {
        let mut params =
            rcgen::CertificateParams::new(names.iter().map(|s| s.to_string()).collect::<Vec<_>>())
                .expect("params");
        params.distinguished_name = rcgen::DistinguishedName::new();
        let key = rcgen::KeyPair::generate().expect("key");
        let cert = params.signed_by(&key, &self.ca).expect("sign");
        ServerCert {
            chain: vec![cert.der().clone()],
            key: rustls::pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into()),
        }
    }

    /// A certificate for `names` that stops being valid `seconds` from now.
    pub fn issue_expiring(&self, names: &[&str], seconds: i64) -> ServerCert {
        let mut params =
            rcgen::CertificateParams::new(names.iter().map(|s| s.to_string()).collect::<Vec<_>>())
                .expect("params");
        let now = time::OffsetDateTime::now_utc();
        params.not_before = now - time::Duration::hours(1);
        params.not_after = now + time::Duration::seconds(seconds);
        let key = rcgen::KeyPair::generate().expect("key");
        let cert = params.signed_by(&key, &self.ca).expect("sign");
        ServerCert {
            chain: vec![cert.der().clone()],
            key: rustls::pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into()),
        }
    }

    /// A self-signed certificate that this CA does not vouch for.
    pub fn self_signed(names: &[&str]) -> ServerCert {
        let params =
            rcgen::CertificateParams::new(names.iter().map(|s| s.to_string()).collect::<Vec<_>>())
                .expect("params");
        let key = rcgen::KeyPair::generate().expect("key");
        let cert = params.self_signed(&key).expect("self-sign");
        ServerCert {
            chain: vec![cert.der().clone()],
            key: rustls::pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into()),
        }
    }
}

/// (SNI, Host header) of each request a backend saw.
pub type Seen = Arc<Mutex<Vec<(Option<String>, Option<String>)>>>;

/// What a backend answers.
#[derive(Clone, Copy)]
pub enum Mode {
    Healthy,
    Status(u16),
    /// 200 with this body.
    Body(&'static str),
    /// Completes the TLS handshake, then never answers.
    Hang,
}

/// An HTTPS health endpoint on a loopback address; `stop` closes it (connection refused).
pub struct Backend {
    pub addr: SocketAddr,
    mode: Arc<Mutex<Mode>>,
    /// (SNI, Host header) of the requests seen.
    pub seen: Seen,
    task: JoinHandle<()>,
}

impl Backend {
    pub fn set(&self, mode: Mode) {
        *self.mode.lock().expect("lock") = mode;
    }

    pub fn stop(&self) {
        self.task.abort();
    }
}

impl Drop for Backend {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Starts HTTPS backends on exactly these socket addresses.
pub async fn start_backends_on(addrs: &[SocketAddr], certs: Vec<ServerCert>) -> Vec<Backend> {
    let mut listeners = Vec::new();
    for addr in addrs {
        let listener = eventually(
            Duration::from_secs(5),
            "the backend address to be free again",
            || async { TcpListener::bind(addr).await.ok() },
        )
        .await;
        listeners.push(listener);
    }
    serve_all(listeners, certs)
}

/// A private CA in `dir`, a block of loopback addresses, and HTTPS backends for `app.test` on
/// its first two (primary, secondary), on one port.
pub async fn app_backends(dir: &Path) -> (Pki, [Ipv4Addr; 4], Vec<Backend>) {
    let pki = Pki::new(dir);
    let ips = loopback_block();
    let backends = start_backends(
        &ips[..2],
        vec![pki.issue(&["app.test"]), pki.issue(&["app.test"])],
    )
    .await;
    (pki, ips, backends)
}

/// Starts one HTTPS backend per address, all on the same port (a check has one port).
pub async fn start_backends(ips: &[Ipv4Addr], certs: Vec<ServerCert>) -> Vec<Backend> {
    assert_eq!(ips.len(), certs.len());
    let listeners = 'retry: loop {
        let first = TcpListener::bind((ips[0], 0)).await.expect("bind backend");
        let port = first.local_addr().expect("addr").port();
        let mut listeners = vec![first];
        for ip in &ips[1..] {
            match TcpListener::bind((*ip, port)).await {
                Ok(l) => listeners.push(l),
                Err(_) => continue 'retry,
            }
        }
        break listeners;
    };
    serve_all(listeners, certs)
}

fn serve_all(listeners: Vec<TcpListener>, certs: Vec<ServerCert>) -> Vec<Backend> {
    listeners
        .into_iter()
        .zip(certs)
        .map(|(listener, cert)| {
            let config = rustls::ServerConfig::builder()
                .with_no_client_auth()
                .with_single_cert(cert.chain, cert.key)
                .expect("server config");
            let acceptor = TlsAcceptor::from(Arc::new(config));
            let mode = Arc::new(Mutex::new(Mode::Healthy));
            let seen = Arc::new(Mutex::new(Vec::new()));
            let addr = listener.local_addr().expect("addr");
            let task = tokio::spawn(serve_https(listener, acceptor, mode.clone(), seen.clone()));
            Backend {
                addr,
                mode,
                seen,
                task,
            }
        })
        .collect()
}

async fn serve_https(
    listener: TcpListener,
    acceptor: TlsAcceptor,
    mode: Arc<Mutex<Mode>>,
    seen: Seen,
) {
    loop {
        let Ok((tcp, _)) = listener.accept().await else {
            continue;
        };
        let acceptor = acceptor.clone();
        let mode = mode.clone();
        let seen = seen.clone();
        tokio::spawn(async move {
            let Ok(mut tls) = acceptor.accept(tcp).await else {
                return;
            };
            let sni = tls.get_ref().1.server_name().map(str::to_string);
            let mut request = Vec::new();
            let mut buf = [0u8; 1024];
            while !request.windows(4).any(|w| w == b"\r\n\r\n") && request.len() < 8192 {
                match tls.read(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => request.extend_from_slice(&buf[..n]),
                }
            }
            let text = String::from_utf8_lossy(&request);
            let host = text
                .lines()
                .find_map(|l| {
                    l.strip_prefix("host: ")
                        .or_else(|| l.strip_prefix("Host: "))
                })
                .map(str::to_string);
            seen.lock().expect("lock").push((sni, host));
            let current = *mode.lock().expect("lock");
            let (code, body) = match current {
                Mode::Healthy => (200, "ok"),
                Mode::Status(code) => (code, "failing"),
                Mode::Body(body) => (200, body),
                Mode::Hang => {
                    tokio::time::sleep(Duration::from_secs(30)).await;
                    return;
                }
            };
            let response = format!(
                "HTTP/1.1 {code} X\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
            if tls.write_all(response.as_bytes()).await.is_ok() {
                let _ = tls.shutdown().await;
            }
        });
    }
}

/// Loopback addresses unique to one test, so that parallel tests do not share endpoints.
pub fn loopback_block() -> [Ipv4Addr; 4] {
    static NEXT: AtomicU16 = AtomicU16::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let pid_part = (std::process::id() % 200) as u8 + 20;
    let b = 10 + n as u8;
    [1, 2, 3, 4].map(|i| Ipv4Addr::new(127, pid_part, b, i))
}

/// The vantage binary running as a child process; killed on drop.
pub struct Vantage {
    child: Child,
    pub dns: SocketAddr,
    /// Every DNS address, in configuration order.
    pub dns_all: Vec<SocketAddr>,
    pub admin: SocketAddr,
    /// The machine-readable listening line it printed.
    pub listening: serde_json::Value,
    pub stdout_rest: Arc<Mutex<Vec<String>>>,
    stderr: PathBuf,
}

impl Vantage {
    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Starts `vantage demo` on ephemeral loopback ports, its files under `dir` (a test ends
    /// it with SIGKILL, which leaves them behind).
    pub fn demo(dir: &Path) -> Vantage {
        Self::start_with_env(
            &[
                "demo",
                "--dns-listen",
                "127.0.0.1:0",
                "--admin-listen",
                "127.0.0.1:0",
            ],
            dir,
            &[("TMPDIR", dir.to_str().expect("path"))],
        )
    }

    /// Starts `vantage probe --region <region> --config <config> [--listen <listen>]`.
    pub fn probe(region: &str, config: &Path, listen: Option<&str>, dir: &Path) -> Vantage {
        let mut args = vec![
            "probe",
            "--region",
            region,
            "--config",
            config.to_str().expect("path"),
        ];
        if let Some(listen) = listen {
            args.extend(["--listen", listen]);
        }
        Self::start(&args, dir)
    }

    /// Starts `vantage dns --config <config>`.
    pub fn dns(config: &Path, dir: &Path) -> Vantage {
        Self::start(&["dns", "--config", config.to_str().expect("path")], dir)
    }

    /// Starts `vantage <args>` and waits for its machine-readable listening line.
    pub fn start(args: &[&str], dir: &Path) -> Vantage {
        Self::start_with_env(args, dir, &[])
    }

    /// The same, with extra environment variables.
    pub fn start_with_env(args: &[&str], dir: &Path, env: &[(&str, &str)]) -> Vantage {
        Self::start_as(Command::new(env!("CARGO_BIN_EXE_vantage")), args, dir, env)
    }

    /// `vantage dns --config CONFIG` with at most `files` open files (soft and hard limit, as
    /// a service manager would set them; util-linux's prlimit execs it in place).
    pub fn dns_with_file_limit(config: &Path, dir: &Path, files: u64) -> Vantage {
        Self::start_with_file_limit(
            &["dns", "--config", config.to_str().expect("utf-8 path")],
            dir,
            files,
        )
    }

    /// `vantage <args>` with at most `files` open files.
    pub fn start_with_file_limit(args: &[&str], dir: &Path, files: u64) -> Vantage {
        let mut command = Command::new("prlimit");
        command
            .arg(format!("--nofile={files}:{files}"))
            .arg("--")
            .arg(env!("CARGO_BIN_EXE_vantage"));
        Self::start_as(command, args, dir, &[])
    }

    pub fn start_as(
        mut command: Command,
        args: &[&str],
        dir: &Path,
        env: &[(&str, &str)],
    ) -> Vantage {
        static NEXT: AtomicU16 = AtomicU16::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let stderr = dir.join(format!("vantage-{}-{n}.stderr", args[0]));
        let mut child = command
            .args(args)
            .envs(env.iter().copied())
            .env("RUST_LOG", "info,vantage=debug")
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&stderr).expect("stderr file"))
            .spawn()
            .expect("start vantage");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = std::sync::mpsc::channel();
        let rest = Arc::new(Mutex::new(Vec::new()));
        let rest2 = rest.clone();
        std::thread::spawn(move || {
            let mut sent = false;
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if !sent && line.starts_with("{\"listening\"") {
                    sent = true;
                    let _ = tx.send(line);
                } else {
                    rest2.lock().expect("lock").push(line);
                }
            }
        });
        let line = match rx.recv_timeout(Duration::from_secs(30)) {
            Ok(line) => line,
            Err(_) => {
                let _ = child.kill();
                panic!(
                    "vantage did not print its listening line; stderr:\n{}",
                    std::fs::read_to_string(&stderr).unwrap_or_default()
                );
            }
        };
        let v: serde_json::Value = serde_json::from_str(&line).expect("listening JSON");
        let dns_all: Vec<SocketAddr> = v["listening"]["dns"]
            .as_array()
            .expect("dns list")
            .iter()
            .map(|a| a.as_str().expect("dns").parse().expect("dns addr"))
            .collect();
        let dns = dns_all
            .first()
            .copied()
            .unwrap_or(SocketAddr::from(([127, 0, 0, 1], 0)));
        // A prober names its listener "prober"; every other role "admin".
        let admin = v["listening"]["admin"]
            .as_str()
            .or_else(|| v["listening"]["prober"].as_str())
            .expect("admin")
            .parse()
            .expect("admin addr");
        Vantage {
            child,
            dns,
            dns_all,
            admin,
            listening: v.clone(),
            stdout_rest: rest,
            stderr,
        }
    }

    pub fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }

    pub async fn get(&self, path: &str) -> (u16, String) {
        http_get(self.admin, path).await
    }

    pub async fn status(&self) -> serde_json::Value {
        let (code, body) = self.get("/v1/status").await;
        assert_eq!(code, 200, "{body}");
        serde_json::from_str(&body).expect("status JSON")
    }

    pub async fn wait_ready(&self) {
        eventually(Duration::from_secs(20), "/readyz to say ready", || async {
            (self.get("/readyz").await.0 == 200).then_some(())
        })
        .await;
    }

    /// Sends a signal (e.g. "HUP").
    pub fn signal(&self, name: &str) {
        let pid = self.child.id().to_string();
        let status = Command::new("kill")
            .args([&format!("-{name}"), &pid])
            .status()
            .expect("kill");
        assert!(status.success());
    }

    /// Sends SIGTERM and waits for the exit status.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        let pid = self.child.id().to_string();
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .expect("kill");
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "vantage did not exit after SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Vantage {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!("---- vantage stderr ----\n{}", self.stderr());
        }
    }
}

/// Runs the vantage binary to completion: (exit code, stdout, stderr).
pub fn run_vantage(args: &[&str], env: &[(&str, &str)]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_vantage"))
        .args(args)
        .envs(env.iter().copied())
        .output()
        .expect("run vantage");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).to_string(),
        String::from_utf8_lossy(&out.stderr).to_string(),
    )
}

/// A minimal HTTP/1.1 client for the admin API (GET or POST, no body).
pub async fn http_request(addr: SocketAddr, method: &str, path: &str) -> (u16, String) {
    http_request_with(addr, method, path, &[("host", &addr.to_string())], "").await
}

/// A request with exactly these headers (and content-length, connection: close) and body.
pub async fn http_request_with(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> (u16, String) {
    let mut stream = TcpStream::connect(addr).await.expect("connect admin");
    let headers: String = headers
        .iter()
        .map(|(k, v)| format!("{k}: {v}\r\n"))
        .collect();
    let request = format!(
        "{method} {path} HTTP/1.1\r\n{headers}content-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).await.expect("write");
    let mut response = Vec::new();
    stream.read_to_end(&mut response).await.expect("read");
    let text = String::from_utf8_lossy(&response).to_string();
    let code = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (code, body)
}

/// Whether the tests run as root. The few tests that truly need it (AF_XDP, running a command
/// as another user) print why they skip otherwise: `tests/run` runs as root in CI.
pub fn needs_root(test: &str) -> bool {
    let root = std::fs::read_to_string("/proc/self/status").is_ok_and(|s| {
        s.lines()
            .any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(2) == Some("0"))
    });
    if !root {
        eprintln!("SKIPPED {test}: needs root");
    }
    !root
}

/// A TCP check target on 127.0.0.1 that accepts connections and closes them (a TCP check only
/// needs the connection to be made); returns its port.
pub async fn tcp_check_target() -> u16 {
    let backend = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("backend");
    let port = backend.local_addr().expect("addr").port();
    tokio::spawn(async move {
        while let Ok((stream, _)) = backend.accept().await {
            drop(stream);
        }
    });
    port
}

/// `GET path`, or None if the connection is refused, reset or cut (a full listener).
pub async fn try_http_get(addr: SocketAddr, path: &str) -> Option<(u16, String)> {
    let mut stream = TcpStream::connect(addr).await.ok()?;
    let request = format!("GET {path} HTTP/1.1\r\nhost: {addr}\r\nconnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.ok()?;
    let mut response = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut response))
        .await
        .ok()?
        .ok()?;
    let text = String::from_utf8_lossy(&response).to_string();
    let code = text.split_whitespace().nth(1)?.parse().ok()?;
    let (_, body) = text.split_once("\r\n\r\n")?;
    Some((code, body.to_string()))
}

pub async fn http_get(addr: SocketAddr, path: &str) -> (u16, String) {
    http_request(addr, "GET", path).await
}

pub fn query_message(name: &str, rtype: RecordType, edns: bool) -> Message {
    let mut m = Message::new(rand_id(), MessageType::Query, OpCode::Query);
    m.add_query(Query::query(Name::from_ascii(name).expect("name"), rtype));
    if edns {
        let mut e = Edns::new();
        e.set_max_payload(1232);
        m.set_edns(e);
    }
    m
}

fn rand_id() -> u16 {
    static NEXT: AtomicU16 = AtomicU16::new(4242);
    NEXT.fetch_add(7, Ordering::Relaxed)
}

/// Sends raw bytes over UDP and returns the raw reply (None on timeout).
pub async fn udp_exchange(server: SocketAddr, bytes: &[u8], timeout: Duration) -> Option<Vec<u8>> {
    let local = if server.is_ipv6() {
        "[::1]:0"
    } else {
        "127.0.0.1:0"
    };
    let socket = UdpSocket::bind(local).await.expect("bind");
    socket.send_to(bytes, server).await.expect("send");
    let mut buf = vec![0u8; 65535];
    match tokio::time::timeout(timeout, socket.recv_from(&mut buf)).await {
        Ok(Ok((n, _))) => Some(buf[..n].to_vec()),
        _ => None,
    }
}

pub async fn udp_query(server: SocketAddr, message: &Message) -> Message {
    let reply = udp_exchange(
        server,
        &message.to_vec().expect("encode"),
        Duration::from_secs(3),
    )
    .await
    .expect("a UDP reply");
    let reply = Message::from_vec(&reply).expect("decode reply");
    assert_eq!(reply.metadata.id, message.metadata.id, "reply id");
    reply
}

pub async fn tcp_query(server: SocketAddr, message: &Message) -> Message {
    let mut stream = TcpStream::connect(server).await.expect("connect DNS TCP");
    let bytes = message.to_vec().expect("encode");
    stream
        .write_all(&(bytes.len() as u16).to_be_bytes())
        .await
        .expect("write");
    stream.write_all(&bytes).await.expect("write");
    let mut len = [0u8; 2];
    stream.read_exact(&mut len).await.expect("read length");
    let mut reply = vec![0u8; u16::from_be_bytes(len) as usize];
    stream.read_exact(&mut reply).await.expect("read reply");
    Message::from_vec(&reply).expect("decode reply")
}

/// The A/AAAA addresses in a reply's answer section, sorted.
pub fn addresses(reply: &Message) -> Vec<IpAddr> {
    vantage::dns::query::answer_addresses(reply)
}

/// A parsed Prometheus text exposition: samples by (name, sorted labels), plus HELP and TYPE.
pub struct Exposition {
    pub samples: BTreeMap<(String, BTreeMap<String, String>), f64>,
    pub help: BTreeMap<String, String>,
    pub types: BTreeMap<String, String>,
}

impl Exposition {
    pub fn parse(text: &str) -> Exposition {
        let mut samples = BTreeMap::new();
        let mut help = BTreeMap::new();
        let mut types = BTreeMap::new();
        for line in text.lines().filter(|l| !l.trim().is_empty()) {
            if let Some(rest) = line.strip_prefix("# HELP ") {
                let (name, text) = rest.split_once(' ').expect("HELP line");
                help.insert(name.to_string(), text.to_string());
            } else if let Some(rest) = line.strip_prefix("# TYPE ") {
                let (name, kind) = rest.split_once(' ').expect("TYPE line");
                types.insert(name.to_string(), kind.to_string());
            } else if line.starts_with('#') {
                continue;
            } else {
                let (series, value) = line.rsplit_once(' ').expect("sample line");
                let value: f64 = value
                    .parse()
                    .unwrap_or_else(|_| panic!("bad value in {line:?}"));
                let (name, labels) = match series.split_once('{') {
                    None => (series.to_string(), BTreeMap::new()),
                    Some((name, rest)) => {
                        let body = rest.strip_suffix('}').expect("closing brace");
                        let labels = body
                            .split("\",")
                            .filter(|p| !p.is_empty())
                            .map(|pair| {
                                let (k, v) = pair.split_once('=').expect("label pair");
                                (k.to_string(), v.trim_matches('"').to_string())
                            })
                            .collect();
                        (name.to_string(), labels)
                    }
                };
                samples.insert((name, labels), value);
            }
        }
        Exposition {
            samples,
            help,
            types,
        }
    }

    /// The value of the sample `name` whose labels include `labels`.
    pub fn value(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        self.samples
            .iter()
            .find(|((n, l), _)| {
                n == name
                    && labels
                        .iter()
                        .all(|(k, v)| l.get(*k).map(String::as_str) == Some(*v))
            })
            .map(|(_, v)| *v)
    }
}

/// A temporary directory with a zones/ subdirectory holding `example.com.zone`.
pub fn workdir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::create_dir(dir.path().join("zones")).expect("zones dir");
    std::fs::write(dir.path().join("zones/example.com.zone"), EXAMPLE_ZONE).expect("zone");
    dir
}

pub const EXAMPLE_ZONE: &str = "$TTL 3600
@   IN SOA ns1.example.com. hostmaster.example.com. ( 1 3600 600 604800 60 )
@   IN NS  ns1.example.com.
ns1 IN A   127.0.0.1
static IN A 192.0.2.80
";

/// What a fault-injection proxy does with new connections.
#[derive(Clone, Copy, Debug)]
pub enum Link {
    /// Forward at once.
    Pass,
    /// Forward after this delay (added to the round-trip time of a fresh connection).
    Delay(Duration),
    /// Close the connection at once (the link is cut).
    Cut,
}

/// A TCP proxy on a loopback address that can delay or cut the link to its target. Cutting
/// also closes the connections already open, as a real partition would break them.
pub struct Proxy {
    pub addr: SocketAddr,
    link: Arc<Mutex<Link>>,
    open: Arc<Mutex<Vec<tokio::task::AbortHandle>>>,
    task: JoinHandle<()>,
}

impl Proxy {
    pub async fn start(listen: SocketAddr, target: SocketAddr) -> Proxy {
        let listener = TcpListener::bind(listen).await.expect("bind proxy");
        let addr = listener.local_addr().expect("addr");
        let link = Arc::new(Mutex::new(Link::Pass));
        let open: Arc<Mutex<Vec<tokio::task::AbortHandle>>> = Arc::new(Mutex::new(Vec::new()));
        let mode = link.clone();
        let conns = open.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((mut inbound, _)) = listener.accept().await else {
                    continue;
                };
                let current = *mode.lock().expect("lock");
                let forward = tokio::spawn(async move {
                    match current {
                        Link::Cut => drop(inbound),
                        Link::Pass | Link::Delay(_) => {
                            if let Link::Delay(d) = current {
                                tokio::time::sleep(d).await;
                            }
                            if let Ok(mut outbound) = TcpStream::connect(target).await {
                                let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound)
                                    .await;
                            }
                        }
                    }
                });
                let mut conns = conns.lock().expect("lock");
                conns.retain(|c| !c.is_finished());
                conns.push(forward.abort_handle());
            }
        });
        Proxy {
            addr,
            link,
            open,
            task,
        }
    }

    pub fn set(&self, link: Link) {
        *self.link.lock().expect("lock") = link;
        if matches!(link, Link::Cut) {
            for conn in self.open.lock().expect("lock").drain(..) {
                conn.abort();
            }
        }
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.task.abort();
        for conn in self.open.lock().expect("lock").drain(..) {
            conn.abort();
        }
    }
}

pub const CHROMIUM: &str = "/usr/bin/chromium";

/// Runs headless Chromium on `url` with `extra` arguments; returns stdout.
pub fn chromium(url: &str, extra: &[&str]) -> String {
    let profile = tempfile::tempdir().expect("profile dir");
    let out = Command::new(CHROMIUM)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-dev-shm-usage",
            "--virtual-time-budget=4000",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .args(extra)
        .arg(url)
        .output()
        .expect("run chromium (tests/run installs it)");
    assert!(
        out.status.success(),
        "chromium failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).to_string()
}

/// The rendered page, after its script has fetched /v1/status.
pub fn rendered(admin: std::net::SocketAddr) -> String {
    chromium(&format!("http://{admin}/"), &["--dump-dom"])
}

/// `vantage keygen` for `region` into `dir` with a TLS certificate for `tls_name`: the lines
/// of its `[[prober]]` entry after the region (public key, key and certificate files).
pub fn keygen(dir: &Path, region: &str, tls_name: Option<&str>) -> String {
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_vantage"));
    command
        .args(["keygen", "--region", region, "--out-dir"])
        .arg(dir);
    if let Some(name) = tls_name {
        command.args(["--tls-name", name]);
    }
    let out = command.output().expect("vantage keygen");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).expect("utf-8");
    let lines: Vec<&str> = text
        .lines()
        .skip_while(|l| !l.starts_with("region = "))
        .skip(1)
        // The caller gives the url.
        .filter(|l| !l.starts_with("url = "))
        .collect();
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("public_key = \"ed25519:")),
        "{text}"
    );
    lines.join("\n") + "\n"
}

/// `vantage keygen` as an operator runs it; the public key it prints.
pub fn keygen_public_key(dir: &Path, region: &str, tls_name: &str) -> String {
    keygen(dir, region, Some(tls_name))
        .lines()
        .find_map(|l| l.strip_prefix("public_key = "))
        .expect("public key printed")
        .to_string()
}
