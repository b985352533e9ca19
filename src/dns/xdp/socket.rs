//! One AF_XDP socket: its packet memory (UMEM) and the four rings shared with the kernel
//! (fill, receive, transmit, completion). Frames go fill -> receive -> transmit ->
//! completion -> fill, or straight back to fill when a packet gets no reply on the ring.

use std::{
    io,
    mem::size_of,
    os::fd::{AsRawFd, FromRawFd, OwnedFd},
    ptr::NonNull,
    sync::atomic::{AtomicU32, Ordering},
};

/// Bytes per frame (one packet each; the kernel writes received packets after 256 bytes of
/// headroom, so a reply has 3840 bytes).
pub const FRAME: usize = 4096;
/// Frames per socket, and entries per ring.
const FRAMES: u32 = 1024;

/// A memory mapping, unmapped when dropped.
struct Mapping {
    addr: NonNull<u8>,
    len: usize,
}

impl Mapping {
    fn new(len: usize, fd: Option<(&OwnedFd, libc::off_t)>) -> io::Result<Self> {
        let (flags, raw, offset) = match fd {
            Some((fd, offset)) => (libc::MAP_SHARED, fd.as_raw_fd(), offset),
            None => (libc::MAP_PRIVATE | libc::MAP_ANONYMOUS, -1, 0),
        };
        // SAFETY: a fresh mapping at an address of the kernel's choosing.
        let addr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                flags | libc::MAP_POPULATE,
                raw,
                offset,
            )
        };
        if addr == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let addr = NonNull::new(addr.cast()).ok_or_else(io::Error::last_os_error)?;
        Ok(Self { addr, len })
    }
}

// SAFETY: a mapping is owned by one socket, used by one thread at a time.
unsafe impl Send for Mapping {}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: the mapping was made by `new` with this length and nothing refers to it now.
        unsafe { libc::munmap(self.addr.as_ptr().cast(), self.len) };
    }
}

/// A single-producer single-consumer ring mapped from the socket; we are one side of it.
struct Ring<T> {
    /// Kept mapped while the ring is in use.
    _mapping: Mapping,
    producer: *const AtomicU32,
    consumer: *const AtomicU32,
    descs: *mut T,
    mask: u32,
}

// SAFETY: the ring is used by the one thread that owns the socket.
unsafe impl<T> Send for Ring<T> {}

impl<T: Copy> Ring<T> {
    fn map(fd: &OwnedFd, offsets: &libc::xdp_ring_offset, page: libc::off_t) -> io::Result<Self> {
        let len = offsets.desc as usize + FRAMES as usize * size_of::<T>();
        let mapping = Mapping::new(len, Some((fd, page)))?;
        let base = mapping.addr.as_ptr();
        // SAFETY: the kernel's offsets lie inside the mapping it sized.
        unsafe {
            Ok(Self {
                producer: base.add(offsets.producer as usize).cast(),
                consumer: base.add(offsets.consumer as usize).cast(),
                descs: base.add(offsets.desc as usize).cast(),
                _mapping: mapping,
                mask: FRAMES - 1,
            })
        }
    }

    fn producer(&self) -> &AtomicU32 {
        // SAFETY: points into the live mapping; the kernel accesses it atomically too.
        unsafe { &*self.producer }
    }

    fn consumer(&self) -> &AtomicU32 {
        // SAFETY: as for `producer`.
        unsafe { &*self.consumer }
    }

    // As the producer (fill and transmit rings).

    /// Writes `value` at the next free slot, unpublished; false if the ring is full.
    fn put(&mut self, pending: &mut u32, value: T) -> bool {
        let head = self
            .producer()
            .load(Ordering::Relaxed)
            .wrapping_add(*pending);
        if head.wrapping_sub(self.consumer().load(Ordering::Acquire)) >= FRAMES {
            return false;
        }
        // SAFETY: the slot index is masked into the ring.
        unsafe { self.descs.add((head & self.mask) as usize).write(value) };
        *pending += 1;
        true
    }

    /// Publishes the values put so far.
    fn publish(&mut self, pending: &mut u32) {
        if *pending > 0 {
            let head = self.producer().load(Ordering::Relaxed);
            self.producer()
                .store(head.wrapping_add(*pending), Ordering::Release);
            *pending = 0;
        }
    }

    /// How many published entries the other side has not taken yet.
    fn unconsumed(&self) -> u32 {
        let head = self.producer().load(Ordering::Relaxed);
        head.wrapping_sub(self.consumer().load(Ordering::Acquire))
    }

    // As the consumer (receive and completion rings).

    /// How many entries are ready.
    fn ready(&self) -> u32 {
        let tail = self.consumer().load(Ordering::Relaxed);
        self.producer().load(Ordering::Acquire).wrapping_sub(tail)
    }

    /// The `i`th ready entry.
    fn get(&self, i: u32) -> T {
        let tail = self.consumer().load(Ordering::Relaxed).wrapping_add(i);
        // SAFETY: the slot index is masked into the ring, and the kernel published it.
        unsafe { self.descs.add((tail & self.mask) as usize).read() }
    }

    /// Hands `n` consumed entries back.
    fn release(&mut self, n: u32) {
        let tail = self.consumer().load(Ordering::Relaxed);
        self.consumer()
            .store(tail.wrapping_add(n), Ordering::Release);
    }
}

/// An AF_XDP socket bound to one receive queue of one interface.
pub struct XskSocket {
    // Field order is drop order: rings, then the socket, then the memory it used.
    rx: Ring<libc::xdp_desc>,
    tx: Ring<libc::xdp_desc>,
    fill: Ring<u64>,
    completion: Ring<u64>,
    fd: OwnedFd,
    umem: Mapping,
    tx_pending: u32,
    fill_pending: u32,
}

/// A received packet: where its frame is, and its bytes' place in it.
#[derive(Clone, Copy)]
pub struct Received {
    pub addr: u64,
    pub len: usize,
}

fn setsockopt<T>(fd: &OwnedFd, name: libc::c_int, value: &T) -> io::Result<()> {
    // SAFETY: `value` is a live T of the size given.
    let ret = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            libc::SOL_XDP,
            name,
            (value as *const T).cast(),
            size_of::<T>() as libc::socklen_t,
        )
    };
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

impl XskSocket {
    /// Opens a socket on receive queue `queue` of interface `ifindex`, with every frame
    /// offered to the kernel for receiving.
    pub fn open(ifindex: u32, queue: u32) -> io::Result<Self> {
        // SAFETY: plain socket creation.
        let raw = unsafe { libc::socket(libc::AF_XDP, libc::SOCK_RAW | libc::SOCK_CLOEXEC, 0) };
        if raw < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: a new descriptor nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        let umem = Mapping::new(FRAME * FRAMES as usize, None)?;
        let registration = libc::xdp_umem_reg {
            addr: umem.addr.as_ptr() as u64,
            len: umem.len as u64,
            chunk_size: FRAME as u32,
            headroom: 0,
            flags: 0,
            tx_metadata_len: 0,
        };
        setsockopt(&fd, libc::XDP_UMEM_REG, &registration)?;
        for ring in [
            libc::XDP_UMEM_FILL_RING,
            libc::XDP_UMEM_COMPLETION_RING,
            libc::XDP_RX_RING,
            libc::XDP_TX_RING,
        ] {
            setsockopt(&fd, ring, &FRAMES)?;
        }
        // SAFETY: all-zero is a valid xdp_mmap_offsets.
        let mut offsets: libc::xdp_mmap_offsets = unsafe { std::mem::zeroed() };
        let mut len = size_of::<libc::xdp_mmap_offsets>() as libc::socklen_t;
        // SAFETY: the buffer is a live xdp_mmap_offsets of the length given.
        let ret = unsafe {
            libc::getsockopt(
                fd.as_raw_fd(),
                libc::SOL_XDP,
                libc::XDP_MMAP_OFFSETS,
                (&mut offsets as *mut libc::xdp_mmap_offsets).cast(),
                &mut len,
            )
        };
        if ret < 0 {
            return Err(io::Error::last_os_error());
        }
        let mut socket = Self {
            rx: Ring::map(&fd, &offsets.rx, libc::XDP_PGOFF_RX_RING)?,
            tx: Ring::map(&fd, &offsets.tx, libc::XDP_PGOFF_TX_RING)?,
            fill: Ring::map(
                &fd,
                &offsets.fr,
                libc::XDP_UMEM_PGOFF_FILL_RING as libc::off_t,
            )?,
            completion: Ring::map(
                &fd,
                &offsets.cr,
                libc::XDP_UMEM_PGOFF_COMPLETION_RING as libc::off_t,
            )?,
            fd,
            umem,
            tx_pending: 0,
            fill_pending: 0,
        };
        for frame in 0..u64::from(FRAMES) {
            socket.recycle(frame * FRAME as u64);
        }
        socket.fill.publish(&mut socket.fill_pending);
        let address = libc::sockaddr_xdp {
            sxdp_family: libc::AF_XDP as u16,
            sxdp_flags: 0,
            sxdp_ifindex: ifindex,
            sxdp_queue_id: queue,
            sxdp_shared_umem_fd: 0,
        };
        // SAFETY: the address is a live sockaddr_xdp of the length given.
        let ret = unsafe {
            libc::bind(
                socket.fd.as_raw_fd(),
                (&address as *const libc::sockaddr_xdp).cast(),
                size_of::<libc::sockaddr_xdp>() as libc::socklen_t,
            )
        };
        if ret < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(socket)
    }

    pub fn fd(&self) -> &OwnedFd {
        &self.fd
    }

    /// Waits up to `timeout_ms` for received packets; returns how many are ready.
    pub fn wait(&mut self, timeout_ms: i32) -> u32 {
        let ready = self.rx.ready();
        if ready > 0 {
            return ready;
        }
        let mut poll = libc::pollfd {
            fd: self.fd.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one live pollfd.
        unsafe { libc::poll(&mut poll, 1, timeout_ms) };
        self.rx.ready()
    }

    /// The `i`th ready packet.
    pub fn received(&self, i: u32) -> Received {
        let desc = self.rx.get(i);
        Received {
            addr: desc.addr,
            len: desc.len as usize,
        }
    }

    /// The frame a received packet is in, from the packet's first byte to the frame's end.
    pub fn frame(&mut self, packet: Received) -> &mut [u8] {
        let start = packet.addr as usize;
        let end = (start / FRAME + 1) * FRAME;
        assert!(
            end <= self.umem.len,
            "the kernel gave an address outside the UMEM"
        );
        // SAFETY: inside the UMEM, which lives as long as self; the kernel does not write a
        // frame while we hold it (it is in neither the fill nor the transmit ring).
        unsafe { std::slice::from_raw_parts_mut(self.umem.addr.as_ptr().add(start), end - start) }
    }

    /// Hands `n` received packets' ring slots back (their frames are transmitted or recycled).
    pub fn consumed(&mut self, n: u32) {
        self.rx.release(n);
    }

    /// Queues the frame at `addr` for transmission with `len` bytes.
    pub fn transmit(&mut self, addr: u64, len: usize) {
        let desc = libc::xdp_desc {
            addr,
            len: len as u32,
            options: 0,
        };
        // The ring has a slot for every frame, so it is never full.
        if !self.tx.put(&mut self.tx_pending, desc) {
            self.recycle(addr);
        }
    }

    /// Offers a frame to the kernel again for receiving.
    pub fn recycle(&mut self, addr: u64) {
        let frame = addr - addr % FRAME as u64;
        // The ring has a slot for every frame, so it is never full.
        let _ = self.fill.put(&mut self.fill_pending, frame);
    }

    /// Publishes the frames queued for transmission and recycled, asks the kernel to send
    /// them all, and recycles the frames it has finished sending.
    pub fn flush(&mut self) {
        self.tx.publish(&mut self.tx_pending);
        // The kernel sends a bounded batch per call (and says EAGAIN): call until it has taken
        // every frame, so that no reply waits for the next query to be sent.
        for _ in 0..FRAMES {
            if self.tx.unconsumed() == 0 {
                break;
            }
            // SAFETY: a zero-length send on our socket only kicks transmission.
            let ret = unsafe {
                libc::sendto(
                    self.fd.as_raw_fd(),
                    std::ptr::null(),
                    0,
                    libc::MSG_DONTWAIT,
                    std::ptr::null(),
                    0,
                )
            };
            if ret < 0 {
                let error = io::Error::last_os_error();
                if !matches!(
                    error.raw_os_error(),
                    Some(libc::EAGAIN | libc::EBUSY | libc::EINTR)
                ) {
                    tracing::debug!(%error, "AF_XDP transmit failed");
                    break;
                }
            }
        }
        let done = self.completion.ready();
        for i in 0..done {
            let addr = self.completion.get(i);
            self.recycle(addr);
        }
        self.completion.release(done);
        self.fill.publish(&mut self.fill_pending);
    }
}
