//! DNS over TCP (RFC 1035 section 4.2.2, RFC 7766): a task per connection, length-prefixed
//! messages answered in order through the front end, with caps on clients (in all and per
//! address) and timeouts that shorten when the server is nearly full.

use std::{
    collections::HashMap,
    net::{IpAddr, SocketAddr},
    sync::{Arc, Mutex, PoisonError},
    time::Duration,
};

use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpListener,
};
use tokio_util::sync::CancellationToken;

use super::server::Frontend;

/// Idle TCP connections are closed after this long.
const TCP_IDLE_TIMEOUT: Duration = Duration::from_secs(10);
/// A started TCP message must be read, or a response written, within this long.
const TCP_IO_TIMEOUT: Duration = Duration::from_secs(2);
/// TCP connections served at once (at most a quarter of the open-file limit, so that health
/// checks and everything else keep the rest); more are closed at accept.
const TCP_MAX_CLIENTS: usize = 256;
/// Connections from one address at once (one client cannot take every slot).
const TCP_MAX_PER_SOURCE: usize = 16;
/// When fewer than a quarter of the slots are free, idle connections get
/// `TCP_BUSY_IDLE_TIMEOUT`: holding a connection open with a query now and then cannot keep a
/// slot for long.
const TCP_BUSY_IDLE_TIMEOUT: Duration = Duration::from_millis(500);

/// The connections in service: how many per source address, and the free slots.
struct Clients {
    per_source: Mutex<HashMap<IpAddr, usize>>,
    slots: Arc<tokio::sync::Semaphore>,
    max: usize,
}

impl Clients {
    /// A slot for a client at `source`, or None when the server or this source is full.
    fn admit(self: &Arc<Self>, source: IpAddr) -> Option<Admitted> {
        let slot = self.slots.clone().try_acquire_owned().ok()?;
        let mut per_source = self
            .per_source
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let count = per_source.entry(source).or_default();
        if *count >= TCP_MAX_PER_SOURCE {
            return None;
        }
        *count += 1;
        Some(Admitted {
            clients: self.clone(),
            source,
            _slot: slot,
        })
    }

    /// The idle timeout now: shorter when the server is nearly full.
    fn idle_timeout(&self) -> Duration {
        if self.slots.available_permits() < self.max / 4 {
            TCP_BUSY_IDLE_TIMEOUT
        } else {
            TCP_IDLE_TIMEOUT
        }
    }
}

/// A connection's place; given back when dropped.
struct Admitted {
    clients: Arc<Clients>,
    source: IpAddr,
    _slot: tokio::sync::OwnedSemaphorePermit,
}

impl Drop for Admitted {
    fn drop(&mut self) {
        let mut per_source = self
            .clients
            .per_source
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(count) = per_source.get_mut(&self.source) {
            *count -= 1;
            if *count == 0 {
                per_source.remove(&self.source);
            }
        }
    }
}

/// Accepts TCP clients (at most `TCP_MAX_CLIENTS` at once, `TCP_MAX_PER_SOURCE` per address)
/// until `stop`.
pub async fn serve(listener: TcpListener, frontend: Frontend, stop: CancellationToken) {
    let max = crate::limits::file_limit()
        .map_or(TCP_MAX_CLIENTS, |limit| (limit / 4) as usize)
        .clamp(4, TCP_MAX_CLIENTS);
    let clients = Arc::new(Clients {
        per_source: Mutex::new(HashMap::new()),
        slots: Arc::new(tokio::sync::Semaphore::new(max)),
        max,
    });
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            () = stop.cancelled() => return,
        };
        match accepted {
            Ok((stream, peer)) => {
                let Some(admitted) = clients.admit(peer.ip()) else {
                    // Full: the client retries later; serving it would starve the others.
                    continue;
                };
                let frontend = frontend.clone();
                let stop = stop.clone();
                let clients = clients.clone();
                tokio::spawn(async move {
                    tcp_connection(stream, peer, &frontend, &clients, &stop).await;
                    drop(admitted);
                });
            }
            Err(error) => {
                // Out of descriptors or similar: back off instead of spinning.
                tracing::debug!(%error, "DNS TCP accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

/// One TCP client: length-prefixed messages (RFC 1035 section 4.2.2), answered in order,
/// until it goes idle, is too slow or sends something unreadable.
async fn tcp_connection(
    mut stream: tokio::net::TcpStream,
    peer: SocketAddr,
    frontend: &Frontend,
    clients: &Clients,
    stop: &CancellationToken,
) {
    let _ = stream.set_nodelay(true);
    let mut message = Vec::new();
    loop {
        let mut len = [0u8; 2];
        let read = tokio::select! {
            read = tokio::time::timeout(clients.idle_timeout(), stream.read_exact(&mut len)) => read,
            () = stop.cancelled() => return,
        };
        if !matches!(read, Ok(Ok(_))) {
            return;
        }
        message.resize(usize::from(u16::from_be_bytes(len)), 0);
        if !matches!(
            tokio::time::timeout(TCP_IO_TIMEOUT, stream.read_exact(&mut message)).await,
            Ok(Ok(_))
        ) {
            return;
        }
        for response in frontend.respond_tcp(&message, peer) {
            let mut out = Vec::with_capacity(response.len() + 2);
            out.extend_from_slice(&(response.len() as u16).to_be_bytes());
            out.extend_from_slice(&response);
            if !matches!(
                tokio::time::timeout(TCP_IO_TIMEOUT, stream.write_all(&out)).await,
                Ok(Ok(()))
            ) {
                return;
            }
        }
    }
}
