//! One health check against one endpoint: https, http or tcp. The only user of reqwest.
//!
//! Every run opens a fresh connection (no pooling: a pooled connection would hide firewall and
//! load-balancer failures) and makes a full TLS handshake (no session resumption: a resumed
//! session skips the certificate, so an expired or replaced certificate would keep passing).
//! A failed check is data: `ProbeOutcome::Fail` with a specific kind.

use std::{error::Error as StdError, net::SocketAddr, time::Duration};

use tokio::{net::TcpStream, time::Instant};

use crate::{
    config::{EndpointSpec, Protocol},
    model::{FailureKind, ProbeOutcome, Region},
};

/// At most this much of a response body is read when looking for `expect_body`.
pub const MAX_BODY_BYTES: usize = 64 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum CheckSetupError {
    #[error("check {check}: cannot read ca_file {path}: {source}")]
    CaFile {
        check: String,
        path: String,
        source: std::io::Error,
    },
    #[error("check {check}: ca_file {path} holds no usable PEM certificate: {message}")]
    CaPem {
        check: String,
        path: String,
        message: String,
    },
    #[error("check {check}: cannot build the HTTP client: {message}")]
    Client { check: String, message: String },
}

/// A ready-to-run check for one endpoint, as seen from one region.
pub struct Checker {
    kind: CheckerKind,
    /// `notAfter` of the certificate the last https check was shown (Unix seconds; 0: none).
    cert_expiry: std::sync::atomic::AtomicI64,
}

enum CheckerKind {
    Http {
        client: reqwest::Client,
        url: String,
        expect_status: Vec<u16>,
        expect_body: Option<String>,
    },
    Tcp {
        addr: SocketAddr,
        connect_timeout: Duration,
    },
}

/// The TLS client configuration of each https check, built once (its CA file read once, its
/// verifier shared) for all the endpoints that use the check.
#[derive(Default)]
pub struct TlsConfigs(std::collections::HashMap<String, rustls::ClientConfig>);

impl TlsConfigs {
    fn get(
        &mut self,
        check: &crate::config::CheckSpec,
    ) -> Result<rustls::ClientConfig, CheckSetupError> {
        if let Some(config) = self.0.get(&check.name) {
            return Ok(config.clone());
        }
        let config = tls_config(check)?;
        self.0.insert(check.name.clone(), config.clone());
        Ok(config)
    }
}

impl Checker {
    pub fn new(
        endpoint: &EndpointSpec,
        region: &Region,
        tls: &mut TlsConfigs,
    ) -> Result<Self, CheckSetupError> {
        let check = &endpoint.check;
        let addr = SocketAddr::new(endpoint.dial, check.port);
        let kind = match check.protocol {
            Protocol::Tcp => CheckerKind::Tcp {
                addr,
                connect_timeout: check.connect_timeout,
            },
            Protocol::Http | Protocol::Https => {
                let scheme = if check.protocol == Protocol::Https {
                    "https"
                } else {
                    "http"
                };
                let mut builder = reqwest::Client::builder()
                    .http1_only()
                    .no_proxy()
                    .pool_max_idle_per_host(0)
                    .redirect(reqwest::redirect::Policy::none())
                    .connect_timeout(check.connect_timeout)
                    .timeout(check.timeout)
                    .user_agent(format!(
                        "vantage-probe/{} (region={region})",
                        env!("CARGO_PKG_VERSION")
                    ))
                    .default_headers(region_header(region))
                    // Dial the endpoint's address while Host and SNI carry the configured name.
                    .resolve(&endpoint.host, addr);
                if check.protocol == Protocol::Https {
                    builder = builder
                        .tls_backend_preconfigured(tls.get(check)?)
                        .tls_info(true);
                }
                let client = builder.build().map_err(|e| CheckSetupError::Client {
                    check: check.name.clone(),
                    message: e.to_string(),
                })?;
                CheckerKind::Http {
                    client,
                    url: format!("{scheme}://{}:{}{}", endpoint.host, check.port, check.path),
                    expect_status: check.expect_status.clone(),
                    expect_body: check.expect_body.clone(),
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
                Ok(Ok(_stream)) => ProbeOutcome::Success {
                    rtt: started.elapsed(),
                },
            },
            CheckerKind::Http {
                client,
                url,
                expect_status,
                expect_body,
            } => {
                let mut response = match client.get(url).send().await {
                    Ok(r) => r,
                    Err(e) => return classify(&e),
                };
                if let Some(expiry) = response
                    .extensions()
                    .get::<reqwest::tls::TlsInfo>()
                    .and_then(|info| info.peer_certificate())
                    .and_then(super::cert::not_after)
                {
                    self.cert_expiry
                        .store(expiry, std::sync::atomic::Ordering::Relaxed);
                }
                let status = response.status().as_u16();
                if !expect_status.contains(&status) {
                    return ProbeOutcome::fail(
                        FailureKind::Status,
                        format!("status {status}, expected {expect_status:?}"),
                    );
                }
                if let Some(needle) = expect_body {
                    let mut body = Vec::new();
                    loop {
                        match response.chunk().await {
                            Ok(Some(chunk)) => {
                                let room = MAX_BODY_BYTES - body.len();
                                body.extend_from_slice(&chunk[..chunk.len().min(room)]);
                                if body.len() >= MAX_BODY_BYTES {
                                    break;
                                }
                            }
                            Ok(None) => break,
                            Err(e) => return classify(&e),
                        }
                    }
                    if !contains(&body, needle.as_bytes()) {
                        return ProbeOutcome::fail(
                            FailureKind::Body,
                            format!(
                                "body (first {} bytes) does not contain {needle:?}",
                                body.len()
                            ),
                        );
                    }
                }
                ProbeOutcome::Success {
                    rtt: started.elapsed(),
                }
            }
        }
    }
}

/// The TLS client of an https check: the check's CA (`ca_file`) or the system's roots, every
/// check a full handshake that verifies the chain and its validity now (resumption disabled),
/// HTTP/1.1 by ALPN. `tls_verify = false` accepts any certificate (the explicit opt-out).
fn tls_config(check: &crate::config::CheckSpec) -> Result<rustls::ClientConfig, CheckSetupError> {
    use std::sync::Arc;
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
        builder.with_root_certificates(roots).with_no_client_auth()
    } else {
        let verifier = rustls_platform_verifier::Verifier::new(provider)
            .map_err(|e| setup(format!("system certificate roots: {e}")))?;
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(verifier))
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

fn region_header(region: &Region) -> reqwest::header::HeaderMap {
    let mut headers = reqwest::header::HeaderMap::new();
    if let Ok(value) = reqwest::header::HeaderValue::from_str(region.as_str()) {
        headers.insert("x-vantage-region", value);
    }
    headers
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

/// Turns a reqwest error into a failure kind by walking its chain of causes.
fn classify(error: &reqwest::Error) -> ProbeOutcome {
    let mut source: Option<&(dyn StdError + 'static)> = Some(error);
    let mut kind = None;
    while let Some(e) = source {
        if let Some(found) = tls_kind(e) {
            kind = Some(found);
            break;
        }
        if let Some(io) = e.downcast_ref::<std::io::Error>() {
            // io::Error::source skips the wrapped error, so look inside explicitly.
            let mut inner = io.get_ref();
            while let Some(i) = inner {
                if let Some(found) = tls_kind(i) {
                    kind = Some(found);
                    break;
                }
                inner = i
                    .downcast_ref::<std::io::Error>()
                    .and_then(|io| io.get_ref());
            }
            if kind.is_some() {
                break;
            }
            if is_local(io) {
                kind = Some(FailureKind::Local);
                break;
            }
            if io.kind() == std::io::ErrorKind::ConnectionRefused {
                kind = Some(FailureKind::Refused);
                break;
            }
        }
        source = e.source();
    }
    let kind = kind.unwrap_or(if error.is_timeout() {
        FailureKind::Timeout
    } else if error.is_connect() {
        FailureKind::Connect
    } else {
        FailureKind::Protocol
    });
    ProbeOutcome::fail(kind, crate::error_chain(error))
}

fn tls_kind(e: &(dyn StdError + 'static)) -> Option<FailureKind> {
    e.downcast_ref::<rustls::Error>().map(|tls| match tls {
        rustls::Error::InvalidCertificate(_) => FailureKind::Certificate,
        _ => FailureKind::TlsHandshake,
    })
}
