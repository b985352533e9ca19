//! The HTTP listeners (admin API, prober reports): a bounded number of connections in all and
//! per source address, deadlines on every phase of a connection and, for probers, TLS.
//!
//! Whoever reaches an HTTP port can open connections without credentials, so each listener
//! owns a small, fixed share of the open-file limit (`Budget`): together with the DNS TCP
//! listener they take at most 3/8 of it, and health checks and report pulls keep the rest
//! whatever clients do. A connection is closed when its headers are slow (slowloris), when it
//! has lived too long, or at once when idle while the listener is nearly full.

use std::{net::SocketAddr, sync::Arc, time::Duration};

use axum::Router;
use hyper_util::{
    rt::{TokioIo, TokioTimer},
    service::TowerToHyperService,
};
use tokio::{
    io::{AsyncRead, AsyncWrite},
    net::TcpListener,
    time::Instant,
};
use tokio_util::sync::CancellationToken;

use crate::limits::{Slot, Slots};

/// A request's headers must arrive within this long after the connection is made or after the
/// previous response.
const HEADER_TIMEOUT: Duration = Duration::from_secs(5);
/// A TLS handshake must finish within this long.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);
/// A connection is closed (after its request in flight, if any) when it has lived this long.
const MAX_LIFETIME: Duration = Duration::from_secs(60);
/// ... or this long, while fewer than a quarter of the listener's slots are free.
const BUSY_LIFETIME: Duration = Duration::from_millis(500);
/// A request in flight when its connection is closed gets this long to finish.
const CLOSE_GRACE: Duration = Duration::from_secs(10);
/// How often a connection looks at its age and at the listener's load.
const AGE_CHECK: Duration = Duration::from_millis(250);

/// How many connections a listener serves at once: in all, and from one address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Budget {
    pub max_clients: usize,
    pub per_source: usize,
}

impl Budget {
    /// The share of an HTTP listener: 1/16 of the open-file limit, between 8 and 64
    /// connections, 16 from one address (the DNS TCP listener takes 1/4; the rest stays for
    /// checks, pulls, zone files and the process itself).
    pub fn http() -> Self {
        Self::of_file_limit(crate::limits::file_limit())
    }

    fn of_file_limit(limit: Option<u64>) -> Self {
        let max_clients = limit.map_or(64, |l| (l / 16) as usize).clamp(8, 64);
        Self {
            max_clients,
            per_source: 16.min(max_clients),
        }
    }
}

/// One HTTP listener: its name (in logs), its router, TLS if any, its budget and the counter
/// of connections it refused.
pub struct Listener {
    pub name: &'static str,
    pub router: Router,
    pub tls: Option<Arc<rustls::ServerConfig>>,
    pub budget: Budget,
    pub refused: prometheus::IntCounter,
}

/// Serves `http` on `listener` until `stop`.
pub async fn serve(listener: TcpListener, http: Listener, stop: CancellationToken) {
    let Listener {
        name,
        router,
        tls,
        budget,
        refused,
    } = http;
    let slots = Slots::new(budget.max_clients, budget.per_source);
    let tls = tls.map(tokio_rustls::TlsAcceptor::from);
    let mut connections = tokio::task::JoinSet::new();
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            Some(_) = connections.join_next(), if !connections.is_empty() => continue,
            () = stop.cancelled() => break,
        };
        let (stream, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(error) => {
                // Out of descriptors or similar: back off instead of spinning.
                tracing::debug!(listener = name, %error, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let Some(slot) = slots.admit(peer.ip()) else {
            // Full: closing at once frees the descriptor; the client retries later.
            refused.inc();
            log_refused(name);
            continue;
        };
        let _ = stream.set_nodelay(true);
        let router = router.clone();
        let tls = tls.clone();
        let stop = stop.clone();
        connections.spawn(async move {
            match tls {
                None => connection(stream, peer, router, &slot, &stop).await,
                Some(acceptor) => {
                    match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                        Ok(Ok(stream)) => {
                            connection(stream, peer, router, &slot, &stop).await;
                        }
                        Ok(Err(error)) => {
                            tracing::debug!(listener = name, %peer, %error, "TLS handshake failed");
                        }
                        Err(_) => {
                            tracing::debug!(listener = name, %peer, "TLS handshake timed out");
                        }
                    }
                }
            }
        });
    }
    // Shutdown: connections finish their requests in flight (each closes itself on `stop`).
    while connections.join_next().await.is_some() {}
}

/// Logs a connection refused because the listener or its source was full, now and then.
fn log_refused(name: &'static str) {
    use std::sync::atomic::{AtomicU64, Ordering};
    static LOGGED: AtomicU64 = AtomicU64::new(0);
    // One line per 1,000 refusals: a flood must not flood the log too.
    if LOGGED.fetch_add(1, Ordering::Relaxed).is_multiple_of(1000) {
        tracing::warn!(
            listener = name,
            "{name} listener full: refusing connections (in all or from one address)"
        );
    }
}

/// One HTTP/1.1 connection with its deadlines.
async fn connection<S>(
    stream: S,
    peer: SocketAddr,
    router: Router,
    slot: &Slot,
    stop: &CancellationToken,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(HEADER_TIMEOUT)
        .max_buf_size(64 * 1024);
    let conn = http.serve_connection(TokioIo::new(stream), TowerToHyperService::new(router));
    tokio::pin!(conn);
    let started = Instant::now();
    let mut ticker = tokio::time::interval(AGE_CHECK);
    loop {
        tokio::select! {
            result = conn.as_mut() => {
                if let Err(error) = result {
                    tracing::debug!(%peer, %error, "HTTP connection ended");
                }
                return;
            }
            _ = ticker.tick() => {
                let age = started.elapsed();
                if age >= MAX_LIFETIME || (slot.slots().busy() && age >= BUSY_LIFETIME) {
                    break;
                }
            }
            () = stop.cancelled() => break,
        }
    }
    // Close: idle connections at once, a request in flight after its response.
    conn.as_mut().graceful_shutdown();
    let _ = tokio::time::timeout(CLOSE_GRACE, conn).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_http_listener_takes_a_sixteenth_of_the_file_limit_within_bounds() {
        assert_eq!(
            Budget::of_file_limit(Some(1024)),
            Budget {
                max_clients: 64,
                per_source: 16
            }
        );
        assert_eq!(Budget::of_file_limit(Some(256)).max_clients, 16);
        assert_eq!(
            Budget::of_file_limit(Some(64)),
            Budget {
                max_clients: 8,
                per_source: 8
            }
        );
        assert_eq!(Budget::of_file_limit(Some(1 << 20)).max_clients, 64);
        assert_eq!(Budget::of_file_limit(None).max_clients, 64);
    }

    #[tokio::test]
    async fn a_full_listener_refuses_and_an_idle_connection_is_closed_when_busy() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let stop = CancellationToken::new();
        let budget = Budget {
            max_clients: 4,
            per_source: 4,
        };
        let router = Router::new().route("/", axum::routing::get(|| async { "ok" }));
        let http = Listener {
            name: "test",
            router,
            tls: None,
            budget,
            refused: prometheus::IntCounter::new("refused", "refused").expect("counter"),
        };
        let server = tokio::spawn(serve(listener, http, stop.clone()));
        // Four idle connections fill the listener; the server closes them (busy) so a fifth
        // client is served within the deadline.
        let mut idle = Vec::new();
        for _ in 0..4 {
            idle.push(tokio::net::TcpStream::connect(addr).await.expect("connect"));
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        let served = loop {
            assert!(
                Instant::now() < deadline,
                "never served while idle clients held the slots"
            );
            let mut client = tokio::net::TcpStream::connect(addr).await.expect("connect");
            client
                .write_all(b"GET / HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
                .await
                .expect("write");
            let mut reply = Vec::new();
            let _ =
                tokio::time::timeout(Duration::from_secs(2), client.read_to_end(&mut reply)).await;
            if reply.starts_with(b"HTTP/1.1 200") {
                break reply;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        assert!(served.ends_with(b"ok"));
        // The idle connections were closed by the server (read returns end of file).
        for mut conn in idle {
            let mut buf = [0u8; 1];
            let read = tokio::time::timeout(Duration::from_secs(5), conn.read(&mut buf)).await;
            assert!(matches!(read, Ok(Ok(0)) | Ok(Err(_))), "{read:?}");
        }
        stop.cancel();
        tokio::time::timeout(Duration::from_secs(15), server)
            .await
            .expect("shut down")
            .expect("join");
    }
}
