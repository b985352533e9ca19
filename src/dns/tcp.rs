//! DNS over TCP (RFC 1035 section 4.2.2, RFC 7766): a task per connection, length-prefixed
//! messages answered in order through the front end, with caps on clients (in all and per
//! address) and timeouts that shorten when the server is nearly full.

use std::{net::SocketAddr, time::Duration};

use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpListener,
};
use tokio_util::sync::CancellationToken;

use super::server::Frontend;
use crate::limits::Slots;

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

/// The idle timeout now: shorter when the listener is nearly full.
fn idle_timeout(slots: &Slots) -> Duration {
    if slots.busy() {
        TCP_BUSY_IDLE_TIMEOUT
    } else {
        TCP_IDLE_TIMEOUT
    }
}

/// Accepts TCP clients (at most `TCP_MAX_CLIENTS` at once, `TCP_MAX_PER_SOURCE` per address)
/// until `stop`.
pub async fn serve(listener: TcpListener, frontend: Frontend, stop: CancellationToken) {
    let max = crate::limits::file_limit()
        .map_or(TCP_MAX_CLIENTS, |limit| (limit / 4) as usize)
        .clamp(4, TCP_MAX_CLIENTS);
    let slots = Slots::new(max, TCP_MAX_PER_SOURCE);
    let refused = frontend.refused_counter();
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            () = stop.cancelled() => return,
        };
        match accepted {
            Ok((stream, peer)) => {
                let Some(slot) = slots.admit(peer.ip()) else {
                    // Full: the client retries later; serving it would starve the others.
                    refused.inc();
                    continue;
                };
                let frontend = frontend.clone();
                let stop = stop.clone();
                tokio::spawn(async move {
                    tcp_connection(stream, peer, &frontend, slot.slots(), &stop).await;
                    drop(slot);
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
    slots: &Slots,
    stop: &CancellationToken,
) {
    let _ = stream.set_nodelay(true);
    let mut message = Vec::new();
    loop {
        let mut len = [0u8; 2];
        let read = tokio::select! {
            read = tokio::time::timeout(idle_timeout(slots), stream.read_exact(&mut len)) => read,
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
