//! DNS over UDP: several sockets per address (SO_REUSEPORT), each read by its own thread.
//! A repeated question is answered from the thread's answer cache; anything else goes through
//! the full request path (the front end), and its response is cached when it may be replayed.

use std::{
    io,
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    thread::JoinHandle,
    time::Duration,
};

use super::{
    answer_cache::AnswerCache,
    rrl::{self, Decision},
    server::{DnsState, Frontend, FullAnswer},
};

/// Bytes of cached responses (and their keys) per serving thread.
const CACHE_BYTES: usize = 4 << 20;
/// How often an idle serving thread checks whether it should stop.
const STOP_CHECK: Duration = Duration::from_millis(100);

/// Answers UDP packets: from the cache, or through the full request path.
#[derive(Clone)]
pub struct UdpAnswerer {
    frontend: Frontend,
}

impl UdpAnswerer {
    pub fn new(frontend: Frontend) -> Self {
        Self { frontend }
    }

    pub fn metrics(&self) -> &super::DnsMetrics {
        self.frontend.metrics()
    }

    /// The full request path for one packet from `src`: no reply to fewer than 12 bytes or to
    /// a response, FORMERR to a malformed request.
    pub fn full(&self, packet: &[u8], src: SocketAddr) -> Option<FullAnswer> {
        self.frontend.respond_udp(packet, src)
    }

    /// Caches a full-path answer that may be replayed; returns the response.
    pub fn remember(&self, cache: &mut ThreadCache, packet: &[u8], full: FullAnswer) -> Vec<u8> {
        if let Some(counters) = full.replay {
            cache.answers.insert(packet, &full.response, counters);
        }
        full.response
    }

    /// Writes the response to one query from `src` into `out`: from the cache, else through
    /// the full path (and cached when it may be replayed). False: no reply.
    pub fn respond(
        &self,
        cache: &mut ThreadCache,
        packet: &[u8],
        src: SocketAddr,
        out: &mut Vec<u8>,
    ) -> bool {
        let state = self.frontend.sources().0.load();
        let verified = if self.cached_in(&state, cache, packet, out) {
            false
        } else {
            // A panic in the request path must not stop the serving thread: the kernel keeps
            // sending it its share of the clients.
            let full =
                std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| self.full(packet, src)));
            match full {
                Ok(Some(full)) => {
                    let verified = full.verified;
                    *out = self.remember(cache, packet, full);
                    verified
                }
                Ok(None) => return false,
                Err(_) => {
                    tracing::error!(%src, "the request path panicked; no reply");
                    *cache = ThreadCache::default();
                    return false;
                }
            }
        };
        verified || !state.rrl.enabled() || self.rate_limit(&state.rrl, src, out)
    }

    /// Applies response rate limiting to `out`: true to send it (possibly truncated).
    fn rate_limit(&self, rrl: &rrl::RateLimiter, src: SocketAddr, out: &mut Vec<u8>) -> bool {
        match rrl.decide(src.ip(), out, rrl::second()) {
            Decision::Send => true,
            Decision::Slip => {
                *out = rrl::slipped(out);
                self.metrics().rrl("slipped");
                true
            }
            Decision::Drop => {
                self.metrics().rrl("dropped");
                false
            }
        }
    }

    /// Writes the cached response into `out`; false on a miss. Empties the cache first when
    /// the zones or the snapshot changed since it was filled.
    pub fn cached(&self, cache: &mut ThreadCache, packet: &[u8], out: &mut Vec<u8>) -> bool {
        self.cached_in(&self.frontend.sources().0.load(), cache, packet, out)
    }

    fn cached_in(
        &self,
        state: &DnsState,
        cache: &mut ThreadCache,
        packet: &[u8],
        out: &mut Vec<u8>,
    ) -> bool {
        let answers = self.frontend.sources().1.load().answers_generation;
        // With signed zones, emptied every hour too: signed responses must not be replayed for
        // ever (their signatures are made again long before they expire, but only on the full
        // path). Without, the clock is not read.
        let hour = if state.signs() {
            crate::clock::unix_ms() / 3_600_000
        } else {
            0
        };
        let now = (state.generation(), answers, hour);
        if cache.built_from != Some(now) {
            cache.answers.clear();
            cache.built_from = Some(now);
        }
        cache.answers.answer(packet, out)
    }
}

/// A serving thread's cache, and the answer state it was filled from.
pub struct ThreadCache {
    answers: AnswerCache,
    /// The zones and the snapshot's answers generation the entries were made from.
    /// (zones generation, snapshot answers generation, hour).
    built_from: Option<(u64, u64, u64)>,
}

impl ThreadCache {
    pub fn answers(&mut self) -> &mut AnswerCache {
        &mut self.answers
    }
}

impl Default for ThreadCache {
    fn default() -> Self {
        Self {
            answers: AnswerCache::new(CACHE_BYTES),
            built_from: None,
        }
    }
}

/// The UDP serving threads; `stop` ends them.
pub struct UdpServer {
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
}

impl UdpServer {
    /// One thread per socket.
    pub fn start(
        sockets: Vec<std::net::UdpSocket>,
        answerer: UdpAnswerer,
    ) -> io::Result<UdpServer> {
        // Built first, so that the threads started so far stop if a later one fails.
        let mut server = UdpServer {
            stop: Arc::new(AtomicBool::new(false)),
            threads: Vec::new(),
        };
        for (i, socket) in sockets.into_iter().enumerate() {
            socket.set_read_timeout(Some(STOP_CHECK))?;
            let answerer = answerer.clone();
            let stop = server.stop.clone();
            server.threads.push(
                std::thread::Builder::new()
                    .name(format!("dns-udp-{i}"))
                    .spawn(move || serve(&socket, &answerer, &stop))?,
            );
        }
        Ok(server)
    }

    /// Stops every thread (each notices within `STOP_CHECK`) and waits for them.
    pub fn stop(mut self) {
        self.halt();
    }

    fn halt(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
    }
}

impl Drop for UdpServer {
    /// Threads never outlive their server (they would keep the sockets and an old state).
    fn drop(&mut self) {
        self.halt();
    }
}

/// One serving thread: receives up to `BATCH` queries at once, answers each (cache, else the
/// full path), sends the answers at once.
fn serve(socket: &std::net::UdpSocket, answerer: &UdpAnswerer, stop: &AtomicBool) {
    let mut cache = ThreadCache::default();
    let mut receiver = mmsg::Receiver::new();
    let mut sender = mmsg::Sender::new();
    let mut answers: Vec<Vec<u8>> = (0..mmsg::BATCH).map(|_| Vec::with_capacity(512)).collect();
    let mut replies: Vec<(usize, SocketAddr)> = Vec::with_capacity(mmsg::BATCH);
    while !stop.load(Ordering::Relaxed) {
        let received = match receiver.receive(socket) {
            Ok(received) => received,
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock
                        | io::ErrorKind::TimedOut
                        | io::ErrorKind::Interrupted
                ) =>
            {
                continue;
            }
            Err(error) => {
                // Not a timeout: do not spin on an error that persists.
                tracing::debug!(%error, "UDP receive failed");
                std::thread::sleep(std::time::Duration::from_millis(10));
                continue;
            }
        };
        replies.clear();
        for (i, (packet, src)) in received.into_iter().enumerate() {
            // Never answer to a source that cannot be a client (reflection).
            if src.port() == 0 || src.ip().is_unspecified() {
                continue;
            }
            if answerer.respond(&mut cache, packet, src, &mut answers[i]) {
                replies.push((i, src));
            }
        }
        sender.send(socket, &answers, &replies);
    }
}

/// Batched receive and send: `recvmmsg`/`sendmmsg` on Linux, one datagram at a time elsewhere.
mod mmsg {
    use std::{io, net::SocketAddr};

    /// Datagrams per system call.
    pub const BATCH: usize = 32;
    /// The largest query read (as hickory's UDP server reads).
    const MAX_QUERY: usize = 4096;

    pub struct Receiver {
        buffers: Vec<[u8; MAX_QUERY]>,
        /// (buffer, length, source) of each datagram of the last receive.
        received: Vec<(usize, usize, SocketAddr)>,
        #[cfg(target_os = "linux")]
        headers: nix::sys::socket::MultiHeaders<nix::sys::socket::SockaddrStorage>,
    }

    impl Receiver {
        pub fn new() -> Self {
            Self {
                buffers: vec![[0; MAX_QUERY]; BATCH],
                received: Vec::with_capacity(BATCH),
                #[cfg(target_os = "linux")]
                headers: nix::sys::socket::MultiHeaders::preallocate(BATCH, None),
            }
        }

        /// Waits for a datagram (up to the socket's read timeout) and returns it with every
        /// other one already waiting, up to `BATCH`, each with its source.
        pub fn receive(
            &mut self,
            socket: &std::net::UdpSocket,
        ) -> io::Result<Vec<(&[u8], SocketAddr)>> {
            self.fill(socket)?;
            Ok(self
                .received
                .iter()
                .map(|&(i, len, source)| (&self.buffers[i][..len], source))
                .collect())
        }

        #[cfg(target_os = "linux")]
        fn fill(&mut self, socket: &std::net::UdpSocket) -> io::Result<()> {
            use std::{io::IoSliceMut, os::fd::AsRawFd};

            use nix::sys::socket::{MsgFlags, recvmmsg};
            self.received.clear();
            let mut slices: Vec<[IoSliceMut<'_>; 1]> = self
                .buffers
                .iter_mut()
                .map(|b| [IoSliceMut::new(&mut b[..])])
                .collect();
            let messages = recvmmsg(
                socket.as_raw_fd(),
                &mut self.headers,
                slices.iter_mut(),
                MsgFlags::MSG_WAITFORONE,
                None,
            )
            .map_err(io::Error::from)?;
            for (i, message) in messages.enumerate() {
                // A datagram longer than the buffer was cut: not a query we serve.
                if message.flags.contains(MsgFlags::MSG_TRUNC) {
                    continue;
                }
                if let Some(source) = message.address.as_ref().and_then(std_address) {
                    self.received.push((i, message.bytes, source));
                }
            }
            Ok(())
        }

        #[cfg(not(target_os = "linux"))]
        fn fill(&mut self, socket: &std::net::UdpSocket) -> io::Result<()> {
            self.received.clear();
            let (len, source) = socket.recv_from(&mut self.buffers[0])?;
            self.received.push((0, len, source));
            Ok(())
        }
    }

    #[cfg(target_os = "linux")]
    fn std_address(address: &nix::sys::socket::SockaddrStorage) -> Option<SocketAddr> {
        address
            .as_sockaddr_in()
            .map(|v4| SocketAddr::V4((*v4).into()))
            .or_else(|| {
                address
                    .as_sockaddr_in6()
                    .map(|v6| SocketAddr::V6((*v6).into()))
            })
    }

    pub struct Sender {
        #[cfg(target_os = "linux")]
        headers: nix::sys::socket::MultiHeaders<nix::sys::socket::SockaddrStorage>,
    }

    impl Sender {
        pub fn new() -> Self {
            Self {
                #[cfg(target_os = "linux")]
                headers: nix::sys::socket::MultiHeaders::preallocate(BATCH, None),
            }
        }

        /// Sends `answers[i]` to each (i, destination); a destination that fails is skipped.
        #[cfg(target_os = "linux")]
        pub fn send(
            &mut self,
            socket: &std::net::UdpSocket,
            answers: &[Vec<u8>],
            replies: &[(usize, SocketAddr)],
        ) {
            use std::{io::IoSlice, os::fd::AsRawFd};

            use nix::{
                errno::Errno,
                sys::socket::{ControlMessage, MsgFlags, SockaddrStorage, sendmmsg},
            };
            let mut start = 0;
            while start < replies.len() {
                let pending = &replies[start..];
                let slices: Vec<[IoSlice<'_>; 1]> = pending
                    .iter()
                    .map(|(i, _)| [IoSlice::new(&answers[*i])])
                    .collect();
                let destinations: Vec<Option<SockaddrStorage>> = pending
                    .iter()
                    .map(|(_, to)| Some(SockaddrStorage::from(*to)))
                    .collect();
                let no_control: [ControlMessage<'_>; 0] = [];
                match sendmmsg(
                    socket.as_raw_fd(),
                    &mut self.headers,
                    &slices,
                    &destinations,
                    no_control,
                    MsgFlags::empty(),
                ) {
                    Ok(sent) => match sent.count() {
                        0 => break,
                        n => start += n,
                    },
                    Err(Errno::EINTR) => {}
                    Err(error) => {
                        tracing::debug!(%error, to = %pending[0].1, "UDP send failed");
                        start += 1;
                    }
                }
            }
        }

        #[cfg(not(target_os = "linux"))]
        pub fn send(
            &mut self,
            socket: &std::net::UdpSocket,
            answers: &[Vec<u8>],
            replies: &[(usize, SocketAddr)],
        ) {
            for (i, to) in replies {
                if let Err(error) = socket.send_to(&answers[*i], to) {
                    tracing::debug!(%error, %to, "UDP send failed");
                }
            }
        }
    }
}
