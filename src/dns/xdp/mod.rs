//! UDP queries over AF_XDP (Linux, `dns.xdp`): an XDP program on each listed interface takes
//! the UDP packets for the DNS listen addresses away from the kernel's UDP stack and hands
//! them to our sockets, one per receive queue, each served by its own thread through the same
//! answer cache and full request path as the socket threads. TCP and all other traffic are
//! left to the kernel; the program is detached when the server stops or the process ends.

mod packet;
mod program;
mod socket;

use std::{
    io,
    net::{SocketAddr, UdpSocket},
    os::fd::{AsRawFd, OwnedFd},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    thread::JoinHandle,
};

use prometheus::IntCounter;

use super::udp::{ThreadCache, UdpAnswerer};
use socket::XskSocket;

/// How long an idle serving thread waits before checking whether it should stop.
const STOP_CHECK_MS: i32 = 100;
/// Packets taken from the receive ring before the replies are sent.
const BATCH: u32 = 64;

/// The AF_XDP serving threads and the attached programs; dropping it detaches them.
pub struct XdpServer {
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
    /// Open links keep the programs attached.
    links: Vec<OwnedFd>,
}

/// An interface as the AF_XDP path sees it.
struct Interface {
    name: String,
    index: u32,
    queues: u32,
    /// The largest frame it sends (MTU plus the Ethernet header).
    max_frame: usize,
    loopback: bool,
}

impl Interface {
    fn find(name: &str) -> io::Result<Self> {
        let c_name = std::ffi::CString::new(name)
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "NUL in the name"))?;
        // SAFETY: a NUL-terminated string that outlives the call.
        let index = unsafe { libc::if_nametoindex(c_name.as_ptr()) };
        if index == 0 {
            return Err(io::Error::new(
                io::ErrorKind::NotFound,
                "no such network interface (see `ip link`)",
            ));
        }
        let sys = std::path::Path::new("/sys/class/net").join(name);
        let queues = std::fs::read_dir(sys.join("queues"))
            .map(|entries| {
                entries
                    .filter_map(Result::ok)
                    .filter(|e| e.file_name().to_string_lossy().starts_with("rx-"))
                    .count()
            })
            .unwrap_or(1)
            .max(1) as u32;
        let mtu: usize = std::fs::read_to_string(sys.join("mtu"))
            .ok()
            .and_then(|m| m.trim().parse().ok())
            .unwrap_or(1500);
        let flags = std::fs::read_to_string(sys.join("flags")).unwrap_or_default();
        let flags = u32::from_str_radix(flags.trim().trim_start_matches("0x"), 16).unwrap_or(0);
        Ok(Self {
            loopback: flags & libc::IFF_LOOPBACK as u32 != 0,
            name: name.to_string(),
            index,
            queues,
            max_frame: mtu + 14,
        })
    }
}

impl Interface {
    /// Whether the kernel drops the IPv4 packets we send on it: on a loopback interface, a
    /// packet from 127.0.0.0/8 that did not come from the kernel's own output path is a
    /// martian unless both sysctls allow it.
    fn drops_ipv4_replies(&self) -> bool {
        let set = |key: &str| {
            std::fs::read_to_string(format!("/proc/sys/net/ipv4/conf/{}/{key}", self.name))
                .is_ok_and(|v| v.trim() == "1")
        };
        self.loopback && !(set("route_localnet") && set("accept_local"))
    }
}

/// What a serving thread needs besides its socket.
struct Serving {
    interface: String,
    max_frame: usize,
    /// The UDP socket of each listen address, for replies too big for a frame or the link.
    sockets: Vec<(SocketAddr, UdpSocket)>,
    answerer: UdpAnswerer,
    stop: Arc<AtomicBool>,
}

impl XdpServer {
    /// Attaches to every interface in `interfaces`, taking the UDP packets for the addresses
    /// `sockets` (one bound UDP socket per listen address) are bound to.
    pub fn start(
        interfaces: &[String],
        sockets: &[UdpSocket],
        answerer: &UdpAnswerer,
    ) -> io::Result<Self> {
        let listen: Vec<SocketAddr> = sockets
            .iter()
            .map(UdpSocket::local_addr)
            .collect::<io::Result<_>>()?;
        // Built first, so that what was started so far stops if a later step fails.
        let mut server = Self {
            stop: Arc::new(AtomicBool::new(false)),
            threads: Vec::new(),
            links: Vec::new(),
        };
        for name in interfaces {
            let context = |step: &str, error: io::Error| {
                let hint = match error.raw_os_error() {
                    Some(libc::EPERM) => {
                        " (AF_XDP needs root, or the capabilities CAP_NET_ADMIN, CAP_NET_RAW and CAP_BPF)"
                    }
                    Some(libc::EBUSY) | Some(libc::EEXIST) => {
                        " (another XDP program is attached to this interface)"
                    }
                    _ => "",
                };
                io::Error::new(
                    error.kind(),
                    format!("dns.xdp: {step} on interface {name:?}: {error}{hint}"),
                )
            };
            let interface = Interface::find(name).map_err(|e| context("cannot use", e))?;
            let map = program::socket_map(interface.queues)
                .map_err(|e| context("cannot create the socket map", e))?;
            for queue in 0..interface.queues {
                let socket = XskSocket::open(interface.index, queue).map_err(|e| {
                    context(&format!("cannot open an AF_XDP socket (queue {queue})"), e)
                })?;
                program::insert_socket(&map, queue, socket.fd())
                    .map_err(|e| context("cannot register the AF_XDP socket", e))?;
                let serving = Serving {
                    interface: interface.name.clone(),
                    max_frame: interface.max_frame,
                    sockets: listen
                        .iter()
                        .zip(sockets)
                        .map(|(a, s)| Ok((*a, s.try_clone()?)))
                        .collect::<io::Result<_>>()?,
                    answerer: answerer.clone(),
                    stop: server.stop.clone(),
                };
                server.threads.push(
                    std::thread::Builder::new()
                        .name(format!("dns-xdp-{name}-{queue}"))
                        .spawn(move || serving.serve(socket))?,
                );
            }
            let program = program::load(&program::assemble(&listen, map.as_raw_fd()))
                .map_err(|e| context("cannot load the XDP program", e))?;
            let link = program::attach(&program, interface.index)
                .map_err(|e| context("cannot attach the XDP program", e))?;
            server.links.push(link);
            tracing::info!(interface = %name, queues = interface.queues, "serving UDP over AF_XDP");
            if interface.drops_ipv4_replies() && listen.iter().any(SocketAddr::is_ipv4) {
                tracing::warn!(interface = %name, "IPv4 replies sent on a loopback interface are \
                    dropped as martians unless net.ipv4.conf.{name}.route_localnet=1 and \
                    net.ipv4.conf.{name}.accept_local=1; IPv6 is not affected");
            }
        }
        Ok(server)
    }

    /// Detaches the programs (the kernel's UDP sockets get the traffic again), then stops the
    /// threads and waits for them.
    pub fn stop(mut self) {
        self.halt();
    }

    fn halt(&mut self) {
        self.links.clear();
        self.stop.store(true, Ordering::Relaxed);
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
    }
}

impl Drop for XdpServer {
    fn drop(&mut self) {
        self.halt();
    }
}

/// What became of one packet.
struct Counters {
    replied: IntCounter,
    replied_by_socket: IntCounter,
    no_reply: IntCounter,
}

impl Serving {
    fn serve(self, mut socket: XskSocket) {
        let metrics = self.answerer.metrics();
        let counters = Counters {
            replied: metrics.xdp_packet_counter(&self.interface, "replied"),
            replied_by_socket: metrics.xdp_packet_counter(&self.interface, "replied_by_socket"),
            no_reply: metrics.xdp_packet_counter(&self.interface, "no_reply"),
        };
        let mut cache = ThreadCache::default();
        let mut answer = Vec::with_capacity(512);
        while !self.stop.load(Ordering::Relaxed) {
            let ready = socket.wait(STOP_CHECK_MS).min(BATCH);
            for i in 0..ready {
                let received = socket.received(i);
                let outcome = self.answer(&mut socket, received, &mut cache, &mut answer);
                match outcome {
                    Outcome::Replied => counters.replied.inc(),
                    Outcome::RepliedBySocket => counters.replied_by_socket.inc(),
                    Outcome::NoReply => counters.no_reply.inc(),
                }
            }
            socket.consumed(ready);
            socket.flush();
        }
    }

    /// Answers one received packet: in its own frame on the ring, or through the listen
    /// address's socket when the reply does not fit; a frame not transmitted is recycled.
    fn answer(
        &self,
        socket: &mut XskSocket,
        received: socket::Received,
        cache: &mut ThreadCache,
        answer: &mut Vec<u8>,
    ) -> Outcome {
        let frame = socket.frame(received);
        let Some(datagram) = frame.get(..received.len).and_then(packet::parse) else {
            socket.recycle(received.addr);
            return Outcome::NoReply;
        };
        let client = datagram.source;
        // Never answer to a source that cannot be a client (reflection).
        let replying = client.port() != 0
            && !client.ip().is_unspecified()
            && self
                .answerer
                .respond(cache, &frame[datagram.payload.clone()], client, answer);
        if !replying {
            socket.recycle(received.addr);
            return Outcome::NoReply;
        }
        let fits = packet::headers(client.ip()) + answer.len() <= self.max_frame;
        if fits && let Some(len) = packet::reply(frame, &datagram, answer) {
            socket.transmit(received.addr, len);
            return Outcome::Replied;
        }
        socket.recycle(received.addr);
        let local = datagram.destination;
        let by = self.sockets.iter().find_map(|(a, s)| {
            (*a == local || (a.port() == local.port() && a.ip().is_unspecified())).then_some(s)
        });
        match by.map(|s| s.send_to(answer, client)) {
            Some(Ok(_)) => Outcome::RepliedBySocket,
            Some(Err(error)) => {
                tracing::debug!(%error, %client, "UDP send failed");
                Outcome::NoReply
            }
            None => Outcome::NoReply,
        }
    }
}

enum Outcome {
    Replied,
    RepliedBySocket,
    NoReply,
}
