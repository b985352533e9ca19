//! One health check against one endpoint: https, http or tcp (tokio, rustls, hyper's HTTP/1.1
//! client on a connection we open ourselves).
//!
//! Every run opens a fresh connection (no pooling: a pooled connection would hide firewall and
//! load-balancer failures) and makes a full TLS handshake (no session resumption: a resumed
//! session skips the certificate, so an expired or replaced certificate would keep passing).
//! The request says `Connection: close` and the answer is read to its end, so the server
//! closes first and keeps the TIME_WAIT; a TCP check closes with a reset.
//! A failed check is data: `ProbeOutcome::Fail` with a specific kind.

use std::{error::Error as StdError, net::SocketAddr, sync::Arc, time::Duration};

use rustls::pki_types::ServerName;

use super::verify::CachingVerifier;

use tokio::{net::TcpStream, time::Instant};

use crate::{
    config::{EndpointSpec, Protocol},
    model::{FailureKind, ProbeOutcome, Region},
};

/// At most this much of a response body is read when looking for `expect_body`.
pub const MAX_BODY_BYTES: usize = 64 * 1024;

/// Why a check cannot be set up; shown as `check.<name>.ca_file: <reason>`.
#[derive(Debug)]
pub enum CheckSetupError {
    CaFile {
        check: String,
        path: String,
        source: std::io::Error,
    },
    CaPem {
        check: String,
        path: String,
        message: String,
    },
    Client {
        check: String,
        message: String,
    },
}

impl CheckSetupError {
    /// The setting at fault (`check.<name>.ca_file`, or the check).
    pub fn setting(&self) -> String {
        match self {
            Self::CaFile { check, .. } | Self::CaPem { check, .. } => {
                format!("check.{check}.ca_file")
            }
            Self::Client { check, .. } => format!("check.{check}"),
        }
    }

    /// What is wrong with it.
    pub fn reason(&self) -> String {
        match self {
            Self::CaFile { path, source, .. } => format!("cannot read {path}: {source}"),
            Self::CaPem { path, message, .. } => {
                format!("{path} holds no usable PEM certificate: {message}")
            }
            Self::Client { message, .. } => format!("cannot build the HTTP client: {message}"),
        }
    }
}

impl std::fmt::Display for CheckSetupError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.setting(), self.reason())
    }
}

impl std::error::Error for CheckSetupError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::CaFile { source, .. } => Some(source),
            _ => None,
        }
    }
}

/// A ready-to-run check for one endpoint, as seen from one region. Small: what every endpoint
/// of a check shares (TLS configuration, request, expectations) is one [`CheckShared`].
pub struct Checker {
    kind: CheckerKind,
    /// The earliest `notAfter` of the chain the last https check was shown (Unix seconds; 0:
    /// none).
    cert_expiry: std::sync::atomic::AtomicI64,
}

enum CheckerKind {
    Http {
        check: Arc<CheckShared>,
        addr: SocketAddr,
        /// The Host header (with the port when it is not the scheme's default).
        authority: hyper::header::HeaderValue,
        /// The TLS server name (SNI and certificate name), https only.
        server_name: Option<ServerName<'static>>,
    },
    Tcp {
        addr: SocketAddr,
        connect_timeout: Duration,
    },
}

/// What every endpoint of one http(s) check shares, built once per check and region.
pub struct CheckShared {
    /// The TLS client (https only): the CA file read once, the verifier shared.
    tls: Option<tokio_rustls::TlsConnector>,
    path: hyper::Uri,
    user_agent: hyper::header::HeaderValue,
    region: Option<hyper::header::HeaderValue>,
    expect_status: Vec<u16>,
    expect_body: Option<String>,
    connect_timeout: Duration,
    timeout: Duration,
}

/// The shared part of each check, built once (its CA file read once, its verifier shared) for
/// all the endpoints that use the check.
#[derive(Default)]
pub struct CheckCache(std::collections::HashMap<String, Arc<CheckShared>>);

impl CheckCache {
    fn get(
        &mut self,
        check: &crate::config::CheckSpec,
        region: &Region,
    ) -> Result<Arc<CheckShared>, CheckSetupError> {
        if let Some(shared) = self.0.get(&check.name) {
            return Ok(shared.clone());
        }
        let tls = match check.protocol {
            Protocol::Https => Some(tokio_rustls::TlsConnector::from(Arc::new(tls_config(
                check,
            )?))),
            _ => None,
        };
        let invalid = |what: &str| CheckSetupError::Client {
            check: check.name.clone(),
            message: format!("invalid {what}"),
        };
        let shared = Arc::new(CheckShared {
            tls,
            path: check.path.parse().map_err(|_| invalid("path"))?,
            user_agent: hyper::header::HeaderValue::from_str(&format!(
                "vantage-probe/{} (region={region})",
                env!("CARGO_PKG_VERSION")
            ))
            .map_err(|_| invalid("region name"))?,
            region: hyper::header::HeaderValue::from_str(region.as_str()).ok(),
            expect_status: check.expect_status.clone(),
            expect_body: check.expect_body.clone(),
            connect_timeout: check.connect_timeout,
            timeout: check.timeout,
        });
        self.0.insert(check.name.clone(), shared.clone());
        Ok(shared)
    }
}

/// How long a finished check's connection waits for the server to close it first (its
/// `Connection: close` answer), so that TIME_WAIT stays on the server, not on the prober.
const SERVER_CLOSES_WITHIN: Duration = Duration::from_secs(2);

impl Checker {
    pub fn new(
        endpoint: &EndpointSpec,
        region: &Region,
        cache: &mut CheckCache,
    ) -> Result<Self, CheckSetupError> {
        let check = &endpoint.check;
        let addr = SocketAddr::new(endpoint.dial, check.port);
        let kind = match check.protocol {
            Protocol::Tcp => CheckerKind::Tcp {
                addr,
                connect_timeout: check.connect_timeout,
            },
            Protocol::Http | Protocol::Https => {
                let https = check.protocol == Protocol::Https;
                let default_port = if https { 443 } else { 80 };
                let host = if endpoint.host.contains(':') {
                    format!("[{}]", endpoint.host)
                } else {
                    endpoint.host.clone()
                };
                let authority = if check.port == default_port {
                    host
                } else {
                    format!("{host}:{}", check.port)
                };
                let setup = |message: String| CheckSetupError::Client {
                    check: check.name.clone(),
                    message,
                };
                CheckerKind::Http {
                    check: cache.get(check, region)?,
                    addr,
                    authority: hyper::header::HeaderValue::from_str(&authority)
                        .map_err(|_| setup(format!("invalid host {:?}", endpoint.host)))?,
                    server_name: if https {
                        Some(
                            ServerName::try_from(endpoint.host.clone())
                                .map_err(|e| setup(format!("host {:?}: {e}", endpoint.host)))?,
                        )
                    } else {
                        None
                    },
                }
            }
        };
        Ok(Self {
            kind,
            cert_expiry: std::sync::atomic::AtomicI64::new(0),
        })
    }

    /// When the certificate the last https check was shown expires (Unix seconds).
    pub fn cert_expiry(&self) -> Option<i64> {
        let at = self.cert_expiry.load(std::sync::atomic::Ordering::Relaxed);
        (at != 0).then_some(at)
    }

    /// Runs the check once.
    pub async fn run(&self) -> ProbeOutcome {
        let started = Instant::now();
        match &self.kind {
            CheckerKind::Tcp {
                addr,
                connect_timeout,
            } => match tokio::time::timeout(*connect_timeout, TcpStream::connect(addr)).await {
                Err(_) => ProbeOutcome::fail(
                    FailureKind::Timeout,
                    format!("no connection within {connect_timeout:?}"),
                ),
                Ok(Err(e)) => ProbeOutcome::fail(io_kind(&e), e.to_string()),
                Ok(Ok(stream)) => {
                    // Close with a reset: a TCP check leaves no TIME_WAIT behind on the prober.
                    let _ = socket2::SockRef::from(&stream).set_linger(Some(Duration::ZERO));
                    ProbeOutcome::Success {
                        rtt: started.elapsed(),
                    }
                }
            },
            CheckerKind::Http {
                check,
                addr,
                authority,
                server_name,
            } => {
                let exchange = self.http(check, *addr, authority, server_name.as_ref(), started);
                match tokio::time::timeout(check.timeout, exchange).await {
                    Ok(outcome) => outcome,
                    Err(_) => ProbeOutcome::fail(
                        FailureKind::Timeout,
                        format!("no complete response within {:?}", check.timeout),
                    ),
                }
            }
        }
    }

    /// Connect, TLS handshake (https: the chain and its validity verified, every time), one
    /// `GET` with `Connection: close`, status and body checked.
    async fn http(
        &self,
        check: &CheckShared,
        addr: SocketAddr,
        authority: &hyper::header::HeaderValue,
        server_name: Option<&ServerName<'static>>,
        started: Instant,
    ) -> ProbeOutcome {
        let connect_by = started + check.connect_timeout;
        let no_connection = || {
            ProbeOutcome::fail(
                FailureKind::Timeout,
                format!("no connection within {:?}", check.connect_timeout),
            )
        };
        let tcp = match tokio::time::timeout_at(connect_by, TcpStream::connect(addr)).await {
            Err(_) => return no_connection(),
            Ok(Err(e)) => return ProbeOutcome::fail(io_kind(&e), e.to_string()),
            Ok(Ok(tcp)) => tcp,
        };
        let _ = tcp.set_nodelay(true);
        match (&check.tls, server_name) {
            (Some(tls), Some(name)) => {
                let stream =
                    match tokio::time::timeout_at(connect_by, tls.connect(name.clone(), tcp)).await
                    {
                        Err(_) => return no_connection(),
                        Ok(Err(e)) => return handshake_failure(&e),
                        Ok(Ok(stream)) => stream,
                    };
                // The earliest expiry of the chain shown (an intermediate can expire first).
                if let Some(expiry) =
                    stream.get_ref().1.peer_certificates().and_then(|chain| {
                        chain.iter().filter_map(|c| super::cert::not_after(c)).min()
                    })
                {
                    self.cert_expiry
                        .store(expiry, std::sync::atomic::Ordering::Relaxed);
                }
                request(check, stream, authority, started).await
            }
            _ => request(check, tcp, authority, started).await,
        }
    }
}

/// Aborts the connection's task when the check ends before the answer was read (a timeout,
/// an early failure): then the prober closes.
struct AbortOnDrop(Option<tokio::task::JoinHandle<()>>);

impl AbortOnDrop {
    /// Lets the task end on its own.
    fn detach(mut self) {
        self.0.take();
    }
}

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        if let Some(task) = self.0.take() {
            task.abort();
        }
    }
}

/// One HTTP/1.1 exchange on an open connection.
async fn request<S>(
    check: &CheckShared,
    stream: S,
    authority: &hyper::header::HeaderValue,
    started: Instant,
) -> ProbeOutcome
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    use http_body_util::BodyExt;
    use hyper::header;
    let (mut sender, connection) =
        match hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await {
            Ok(pair) => pair,
            Err(e) => return classify(&e),
        };
    // The connection runs beside the request; after the answer it waits (bounded) for the
    // server to close first.
    let linger = check.timeout + SERVER_CLOSES_WITHIN;
    let connection = AbortOnDrop(Some(tokio::spawn(async move {
        let _ = tokio::time::timeout(linger, connection).await;
    })));
    let mut request = hyper::Request::new(http_body_util::Empty::<hyper::body::Bytes>::new());
    *request.uri_mut() = check.path.clone();
    let headers = request.headers_mut();
    headers.insert(header::HOST, authority.clone());
    headers.insert(header::USER_AGENT, check.user_agent.clone());
    headers.insert(
        header::CONNECTION,
        header::HeaderValue::from_static("close"),
    );
    headers.insert(header::ACCEPT, header::HeaderValue::from_static("*/*"));
    if let Some(region) = &check.region {
        headers.insert("x-vantage-region", region.clone());
    }
    let response = match sender.send_request(request).await {
        Ok(response) => response,
        Err(e) => return classify(&e),
    };
    let status = response.status().as_u16();
    let mut body = response.into_body();
    let mut seen = Vec::new();
    let mut read = 0;
    let mut outcome = None;
    if !check.expect_status.contains(&status) {
        outcome = Some(ProbeOutcome::fail(
            FailureKind::Status,
            format!("status {status}, expected {:?}", check.expect_status),
        ));
    }
    // The body is read (up to MAX_BODY_BYTES) whether or not it is looked at: the server then
    // closes first.
    let mut complete = false;
    while read < MAX_BODY_BYTES {
        match body.frame().await {
            Some(Ok(frame)) => {
                if let Ok(chunk) = frame.into_data() {
                    let take = chunk.len().min(MAX_BODY_BYTES - read);
                    read += take;
                    if check.expect_body.is_some() {
                        seen.extend_from_slice(&chunk[..take]);
                    }
                }
            }
            Some(Err(e)) => {
                if outcome.is_none() && check.expect_body.is_some() {
                    return classify(&e);
                }
                break;
            }
            None => {
                complete = true;
                break;
            }
        }
    }
    let rtt = started.elapsed();
    if complete {
        // The connection closes on its own (the server first), bounded by `linger`.
        connection.detach();
    }
    if let Some(outcome) = outcome {
        return outcome;
    }
    if let Some(needle) = &check.expect_body
        && !contains(&seen, needle.as_bytes())
    {
        return ProbeOutcome::fail(
            FailureKind::Body,
            format!(
                "body (first {} bytes) does not contain {needle:?}",
                seen.len()
            ),
        );
    }
    ProbeOutcome::Success { rtt }
}

fn handshake_failure(e: &std::io::Error) -> ProbeOutcome {
    if let Some(kind) = wrapped_tls_kind(e) {
        return ProbeOutcome::fail(kind, e.to_string());
    }
    let kind = match e.kind() {
        std::io::ErrorKind::UnexpectedEof => FailureKind::TlsHandshake,
        _ => io_kind(e),
    };
    ProbeOutcome::fail(kind, format!("TLS handshake: {e}"))
}

/// The TLS client of an https check: the check's CA (`ca_file`) or the system's roots, every
/// check a full handshake that verifies the chain and its validity now (resumption disabled;
/// a chain verified in the last minutes has its signatures taken from `verify`'s memory),
/// HTTP/1.1 by ALPN. `tls_verify = false` accepts any certificate (the explicit opt-out).
fn tls_config(check: &crate::config::CheckSpec) -> Result<rustls::ClientConfig, CheckSetupError> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let setup = |message: String| CheckSetupError::Client {
        check: check.name.clone(),
        message,
    };
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| setup(e.to_string()))?;
    let mut config = if !check.tls_verify {
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AcceptAny(provider)))
            .with_no_client_auth()
    } else if let Some(path) = &check.ca_file {
        use rustls::pki_types::{CertificateDer, pem::PemObject};
        let pem = std::fs::read(path).map_err(|source| CheckSetupError::CaFile {
            check: check.name.clone(),
            path: path.display().to_string(),
            source,
        })?;
        let ca_pem = |message: String| CheckSetupError::CaPem {
            check: check.name.clone(),
            path: path.display().to_string(),
            message,
        };
        let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&pem)
            .collect::<Result<_, _>>()
            .map_err(|e| ca_pem(e.to_string()))?;
        if certs.is_empty() {
            return Err(ca_pem("no certificate found".into()));
        }
        let mut roots = rustls::RootCertStore::empty();
        for cert in certs {
            roots.add(cert).map_err(|e| ca_pem(e.to_string()))?;
        }
        let verifier =
            rustls::client::WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .map_err(|e| ca_pem(e.to_string()))?;
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(CachingVerifier::new(verifier)))
            .with_no_client_auth()
    } else {
        let verifier = rustls_platform_verifier::Verifier::new(provider)
            .map_err(|e| setup(format!("system certificate roots: {e}")))?;
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(CachingVerifier::new(Arc::new(verifier))))
            .with_no_client_auth()
    };
    config.resumption = rustls::client::Resumption::disabled();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

/// `tls_verify = false`: any certificate is accepted, but handshake signatures are still
/// checked (the connection is still TLS).
#[derive(Debug)]
struct AcceptAny(std::sync::Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for AcceptAny {
    fn verify_server_cert(
        &self,
        _end_entity: &rustls::pki_types::CertificateDer<'_>,
        _intermediates: &[rustls::pki_types::CertificateDer<'_>],
        _server_name: &rustls::pki_types::ServerName<'_>,
        _ocsp_response: &[u8],
        _now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    needle.is_empty() || haystack.windows(needle.len()).any(|w| w == needle)
}

/// True for errors of this host, not of the endpoint: out of file descriptors (EMFILE,
/// ENFILE), of local ports (EADDRNOTAVAIL), of buffers or memory (ENOBUFS, ENOMEM).
fn is_local(e: &std::io::Error) -> bool {
    matches!(e.raw_os_error(), Some(23 | 24 | 99 | 105 | 12))
        || e.kind() == std::io::ErrorKind::OutOfMemory
}

fn io_kind(e: &std::io::Error) -> FailureKind {
    if is_local(e) {
        return FailureKind::Local;
    }
    match e.kind() {
        std::io::ErrorKind::ConnectionRefused => FailureKind::Refused,
        std::io::ErrorKind::TimedOut => FailureKind::Timeout,
        _ => FailureKind::Connect,
    }
}

/// Turns an HTTP error into a failure kind by walking its chain of causes.
fn classify(error: &hyper::Error) -> ProbeOutcome {
    let mut source: Option<&(dyn StdError + 'static)> = Some(error);
    let mut kind = None;
    while let Some(e) = source {
        if let Some(found) = tls_kind(e) {
            kind = Some(found);
            break;
        }
        if let Some(io) = e.downcast_ref::<std::io::Error>() {
            kind = Some(wrapped_tls_kind(io).unwrap_or_else(|| io_kind(io)));
            break;
        }
        source = e.source();
    }
    let kind = kind.unwrap_or(if error.is_timeout() {
        FailureKind::Timeout
    } else if error.is_incomplete_message() || error.is_canceled() || error.is_closed() {
        FailureKind::Connect
    } else {
        FailureKind::Protocol
    });
    ProbeOutcome::fail(kind, crate::error_chain(error))
}

/// The TLS failure an I/O error wraps, if any (`io::Error::source` skips the wrapped error, so
/// look inside explicitly, through nested I/O errors).
fn wrapped_tls_kind(io: &std::io::Error) -> Option<FailureKind> {
    let mut inner = io.get_ref();
    while let Some(i) = inner {
        if let Some(kind) = tls_kind(i) {
            return Some(kind);
        }
        inner = i
            .downcast_ref::<std::io::Error>()
            .and_then(|io| io.get_ref());
    }
    None
}

fn tls_kind(e: &(dyn StdError + 'static)) -> Option<FailureKind> {
    e.downcast_ref::<rustls::Error>().map(|tls| match tls {
        rustls::Error::InvalidCertificate(_) => FailureKind::Certificate,
        _ => FailureKind::TlsHandshake,
    })
}
