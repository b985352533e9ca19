//! Where DNS is served: binding the listen addresses (UDP sockets sharing each port, a TCP
//! listener beside them) and starting the UDP threads, the TCP tasks and the AF_XDP path.

use std::{io, net::SocketAddr};

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use super::server::Frontend;

/// Bound DNS sockets: for each listen address, UDP sockets sharing the port (SO_REUSEPORT,
/// one per serving thread) and a TCP listener on the same port.
pub struct Bound {
    pub sockets: Vec<(Vec<std::net::UdpSocket>, TcpListener)>,
}

impl Bound {
    pub fn addresses(&self) -> Vec<SocketAddr> {
        self.sockets
            .iter()
            .filter_map(|(udp, _)| udp.first()?.local_addr().ok())
            .collect()
    }
}

/// How many UDP sockets (and serving threads) each listen address gets: one per CPU this
/// process may run on, at most 8.
pub fn udp_threads() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get().min(8))
}

/// Binds every listen address; port 0 picks a free port shared by UDP and TCP.
/// IPv6 sockets are IPv6-only, so that `0.0.0.0:53` and `[::]:53` can be listed together.
pub async fn bind(listen: &[SocketAddr], udp_per_address: usize) -> io::Result<Bound> {
    let mut sockets = Vec::new();
    for addr in listen {
        let mut attempts = 0;
        loop {
            let first = udp_socket(*addr).map_err(|e| annotate(e, "UDP", addr))?;
            let port = first.local_addr()?.port();
            let at = SocketAddr::new(addr.ip(), port);
            let mut udp = vec![first];
            for _ in 1..udp_per_address.max(1) {
                udp.push(udp_socket(at).map_err(|e| annotate(e, "UDP", addr))?);
            }
            match tcp_listener(at) {
                Ok(tcp) => {
                    sockets.push((udp, tcp));
                    break;
                }
                // With port 0 the UDP port may be taken on TCP; try another.
                Err(e) if addr.port() == 0 && attempts < 20 => {
                    attempts += 1;
                    tracing::debug!(error = %e, port, "TCP port taken, retrying");
                }
                Err(e) => return Err(annotate(e, "TCP", addr)),
            }
        }
    }
    Ok(Bound { sockets })
}

fn socket(
    addr: SocketAddr,
    kind: socket2::Type,
    protocol: socket2::Protocol,
) -> io::Result<socket2::Socket> {
    let socket = socket2::Socket::new(socket2::Domain::for_address(addr), kind, Some(protocol))?;
    if addr.is_ipv6() {
        socket.set_only_v6(true)?;
    }
    Ok(socket)
}

/// A blocking UDP socket with SO_REUSEPORT, so that several can share the address.
fn udp_socket(addr: SocketAddr) -> io::Result<std::net::UdpSocket> {
    let socket = socket(addr, socket2::Type::DGRAM, socket2::Protocol::UDP)?;
    socket.set_reuse_port(true)?;
    socket.bind(&addr.into())?;
    Ok(socket.into())
}

fn tcp_listener(addr: SocketAddr) -> io::Result<TcpListener> {
    let socket = socket(addr, socket2::Type::STREAM, socket2::Protocol::TCP)?;
    socket.set_nonblocking(true)?;
    socket.set_reuse_address(true)?;
    socket.bind(&addr.into())?;
    socket.listen(1024)?;
    TcpListener::from_std(socket.into())
}

fn annotate(e: io::Error, proto: &str, addr: &SocketAddr) -> io::Error {
    io::Error::new(e.kind(), format!("cannot bind DNS {proto} {addr}: {e}"))
}

/// The running DNS server: our threads for UDP (sockets, and AF_XDP on the interfaces
/// `dns.xdp` lists), a task per listener for TCP.
pub struct DnsServer {
    tcp: Vec<tokio::task::JoinHandle<()>>,
    stop: CancellationToken,
    udp: super::udp::UdpServer,
    #[cfg(target_os = "linux")]
    xdp: Option<super::xdp::XdpServer>,
}

impl DnsServer {
    /// Stops accepting and stops the UDP threads; TCP exchanges in progress finish.
    pub async fn shutdown(mut self) {
        self.stop.cancel();
        for task in self.tcp.drain(..) {
            let _ = task.await;
        }
        #[cfg(target_os = "linux")]
        let xdp = self.xdp.take();
        let udp = self.udp;
        let _ = tokio::task::spawn_blocking(move || {
            #[cfg(target_os = "linux")]
            drop(xdp);
            udp.stop();
        })
        .await;
    }
}

/// Starts serving (from within a runtime); UDP to the bound addresses arriving on the
/// interfaces in `xdp` is served over AF_XDP (Linux).
pub fn serve(frontend: Frontend, bound: Bound, xdp: &[String]) -> io::Result<DnsServer> {
    let stop = CancellationToken::new();
    let mut tcp = Vec::new();
    let mut udp_sockets = Vec::new();
    let mut first_sockets = Vec::new();
    for (udp, listener) in bound.sockets {
        if let Some(first) = udp.first() {
            first_sockets.push(first.try_clone()?);
        }
        udp_sockets.extend(udp);
        tcp.push(tokio::spawn(super::tcp::serve(
            listener,
            frontend.clone(),
            stop.clone(),
        )));
    }
    let answerer = super::udp::UdpAnswerer::new(frontend);
    let udp = super::udp::UdpServer::start(udp_sockets, answerer.clone())?;
    #[cfg(target_os = "linux")]
    let xdp = match xdp {
        [] => None,
        interfaces => Some(super::xdp::XdpServer::start(
            interfaces,
            &first_sockets,
            &answerer,
        )?),
    };
    #[cfg(not(target_os = "linux"))]
    if !xdp.is_empty() {
        return Err(io::Error::new(
            io::ErrorKind::Unsupported,
            "dns.xdp: AF_XDP is only available on Linux",
        ));
    }
    Ok(DnsServer {
        tcp,
        stop,
        udp,
        #[cfg(target_os = "linux")]
        xdp,
    })
}
