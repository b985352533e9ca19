//! The XDP program that hands UDP packets for our DNS listen addresses to our AF_XDP sockets
//! (every other packet goes on to the kernel's stack): assembled here, a few dozen eBPF
//! instructions, then loaded and attached with the bpf(2) system call.

use std::{
    io,
    net::{IpAddr, SocketAddr},
    os::fd::{AsRawFd, FromRawFd, OwnedFd},
};

/// One eBPF instruction (struct bpf_insn).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Insn {
    code: u8,
    dst: u8,
    src: u8,
    off: i16,
    imm: i32,
}

impl Insn {
    const fn new(code: u8, dst: u8, src: u8, off: i16, imm: i32) -> Self {
        Self {
            code,
            dst,
            src,
            off,
            imm,
        }
    }

    fn encode(self) -> [u8; 8] {
        let mut bytes = [0; 8];
        bytes[0] = self.code;
        bytes[1] = (self.src << 4) | (self.dst & 0x0f);
        bytes[2..4].copy_from_slice(&self.off.to_ne_bytes());
        bytes[4..8].copy_from_slice(&self.imm.to_ne_bytes());
        bytes
    }
}

// Registers.
const R0: u8 = 0;
const R1: u8 = 1;
const R2: u8 = 2;
const R3: u8 = 3;
const R4: u8 = 4;
const R5: u8 = 5;
const R6: u8 = 6;
const R7: u8 = 7;
const R8: u8 = 8;

// Opcodes (class | operation | source).
const LDX_W: u8 = 0x61;
const LDX_H: u8 = 0x69;
const LDX_B: u8 = 0x71;
const MOV64_IMM: u8 = 0xb7;
const MOV64_REG: u8 = 0xbf;
const ADD64_IMM: u8 = 0x07;
const AND64_IMM: u8 = 0x57;
const LD_IMM64: u8 = 0x18;
const JA: u8 = 0x05;
const JGT_REG: u8 = 0x2d;
const JEQ32_IMM: u8 = 0x16;
const JNE32_IMM: u8 = 0x56;
const CALL: u8 = 0x85;
const EXIT: u8 = 0x95;

const BPF_PSEUDO_MAP_FD: u8 = 1;
const BPF_FUNC_REDIRECT_MAP: i32 = 51;
const XDP_PASS: i32 = 2;

// Offsets in struct xdp_md and in the frame.
const MD_DATA: i16 = 0;
const MD_DATA_END: i16 = 4;
const MD_RX_QUEUE: i16 = 16;
const ETH_TYPE: i16 = 12;
const ETH_LEN: i32 = 14;
const IP4_LEN: i32 = 20;
const IP6_LEN: i32 = 40;
const UDP_LEN: i32 = 8;

/// A jump target, bound to an instruction index once known.
#[derive(Clone, Copy)]
struct Label(usize);

#[derive(Default)]
struct Assembler {
    insns: Vec<Insn>,
    targets: Vec<Option<usize>>,
    jumps: Vec<(usize, Label)>,
}

impl Assembler {
    fn op(&mut self, code: u8, dst: u8, src: u8, off: i16, imm: i32) {
        self.insns.push(Insn::new(code, dst, src, off, imm));
    }

    fn label(&mut self) -> Label {
        self.targets.push(None);
        Label(self.targets.len() - 1)
    }

    fn bind(&mut self, label: Label) {
        self.targets[label.0] = Some(self.insns.len());
    }

    fn jump(&mut self, code: u8, dst: u8, src: u8, imm: i32, to: Label) {
        self.jumps.push((self.insns.len(), to));
        self.op(code, dst, src, 0, imm);
    }

    /// Fails packets shorter than `len` bytes over to the kernel (r2 = data, r3 = data_end);
    /// after it the verifier allows reads below `len`.
    fn need(&mut self, len: i32, pass: Label) {
        self.op(MOV64_REG, R4, R2, 0, 0);
        self.op(ADD64_IMM, R4, 0, 0, len);
        self.jump(JGT_REG, R4, R3, 0, pass);
    }

    fn finish(mut self) -> Vec<Insn> {
        for (at, label) in self.jumps {
            let target = self.targets[label.0].expect("every label is bound");
            self.insns[at].off =
                i16::try_from(target as isize - at as isize - 1).expect("the program is short");
        }
        self.insns
    }
}

/// The value a 16-bit load of these network-order bytes gives (loads are host-endian).
fn wire16(bytes: [u8; 2]) -> i32 {
    i32::from(u16::from_ne_bytes(bytes))
}

/// The value a 32-bit load of these network-order bytes gives, as the immediate of a 32-bit
/// comparison.
fn wire32(bytes: [u8; 4]) -> i32 {
    i32::from_ne_bytes(bytes)
}

/// The program: IPv4 (no options, not a fragment) or IPv6 (UDP directly after the fixed
/// header) UDP to one of `listen` (an unspecified address matches any) is redirected to the
/// AF_XDP socket of its receive queue in `map_fd`, or passed on when that queue has none.
pub fn assemble(listen: &[SocketAddr], map_fd: i32) -> Vec<Insn> {
    let mut a = Assembler::default();
    let pass = a.label();
    let redirect = a.label();
    let v4 = a.label();
    let v6 = a.label();

    a.op(MOV64_REG, R6, R1, 0, 0);
    a.op(LDX_W, R2, R6, MD_DATA, 0);
    a.op(LDX_W, R3, R6, MD_DATA_END, 0);
    a.need(ETH_LEN, pass);
    a.op(LDX_H, R5, R2, ETH_TYPE, 0);
    a.jump(JEQ32_IMM, R5, 0, wire16([0x08, 0x00]), v4);
    a.jump(JEQ32_IMM, R5, 0, wire16([0x86, 0xdd]), v6);
    a.jump(JA, 0, 0, 0, pass);

    a.bind(v4);
    a.need(ETH_LEN + IP4_LEN + UDP_LEN, pass);
    a.op(LDX_B, R5, R2, 14, 0); // version and header length
    a.jump(JNE32_IMM, R5, 0, 0x45, pass);
    a.op(LDX_B, R5, R2, 14 + 9, 0); // protocol
    a.jump(JNE32_IMM, R5, 0, 17, pass);
    a.op(LDX_H, R5, R2, 14 + 6, 0); // more fragments, fragment offset
    a.op(AND64_IMM, R5, 0, 0, wire16([0x3f, 0xff]));
    a.jump(JNE32_IMM, R5, 0, 0, pass);
    a.op(LDX_W, R7, R2, 14 + 16, 0); // destination address
    a.op(LDX_H, R8, R2, 14 + 20 + 2, 0); // destination port
    for addr in listen {
        let IpAddr::V4(ip) = addr.ip() else { continue };
        let next = a.label();
        a.jump(JNE32_IMM, R8, 0, wire16(addr.port().to_be_bytes()), next);
        if !ip.is_unspecified() {
            a.jump(JNE32_IMM, R7, 0, wire32(ip.octets()), next);
        }
        a.jump(JA, 0, 0, 0, redirect);
        a.bind(next);
    }
    a.jump(JA, 0, 0, 0, pass);

    a.bind(v6);
    a.need(ETH_LEN + IP6_LEN + UDP_LEN, pass);
    a.op(LDX_B, R5, R2, 14 + 6, 0); // next header
    a.jump(JNE32_IMM, R5, 0, 17, pass);
    a.op(LDX_H, R8, R2, 14 + 40 + 2, 0); // destination port
    for addr in listen {
        let IpAddr::V6(ip) = addr.ip() else { continue };
        let next = a.label();
        a.jump(JNE32_IMM, R8, 0, wire16(addr.port().to_be_bytes()), next);
        if !ip.is_unspecified() {
            let octets = ip.octets();
            for (i, word) in octets.chunks_exact(4).enumerate() {
                let word: [u8; 4] = word.try_into().expect("four bytes");
                a.op(LDX_W, R5, R2, 14 + 24 + 4 * i as i16, 0);
                a.jump(JNE32_IMM, R5, 0, wire32(word), next);
            }
        }
        a.jump(JA, 0, 0, 0, redirect);
        a.bind(next);
    }
    a.jump(JA, 0, 0, 0, pass);

    a.bind(redirect);
    a.op(LDX_W, R2, R6, MD_RX_QUEUE, 0);
    a.op(LD_IMM64, R1, BPF_PSEUDO_MAP_FD, 0, map_fd);
    a.op(0, 0, 0, 0, 0);
    a.op(MOV64_IMM, R3, 0, 0, XDP_PASS);
    a.op(CALL, 0, 0, 0, BPF_FUNC_REDIRECT_MAP);
    a.op(EXIT, 0, 0, 0, 0);

    a.bind(pass);
    a.op(MOV64_IMM, R0, 0, 0, XDP_PASS);
    a.op(EXIT, 0, 0, 0, 0);
    a.finish()
}

// bpf(2) commands and constants.
const BPF_MAP_CREATE: i32 = 0;
const BPF_MAP_UPDATE_ELEM: i32 = 2;
const BPF_PROG_LOAD: i32 = 5;
const BPF_LINK_CREATE: i32 = 28;
const BPF_MAP_TYPE_XSKMAP: u32 = 17;
const BPF_PROG_TYPE_XDP: u32 = 6;
const BPF_XDP: u32 = 37;

/// A union bpf_attr being filled in.
struct Attr([u8; 128]);

impl Attr {
    fn new() -> Self {
        Self([0; 128])
    }

    fn u32(mut self, at: usize, value: u32) -> Self {
        self.0[at..at + 4].copy_from_slice(&value.to_ne_bytes());
        self
    }

    fn u64(mut self, at: usize, value: u64) -> Self {
        self.0[at..at + 8].copy_from_slice(&value.to_ne_bytes());
        self
    }

    fn name(mut self, at: usize, name: &str) -> Self {
        let n = name.len().min(15);
        self.0[at..at + n].copy_from_slice(&name.as_bytes()[..n]);
        self
    }

    /// Runs the command; returns the file descriptor (or 0) it gives.
    fn call(mut self, cmd: i32) -> io::Result<i32> {
        // SAFETY: the attribute is a zeroed union bpf_attr of the size given; the pointers in
        // it point to memory that outlives the call.
        let ret = unsafe {
            libc::syscall(
                libc::SYS_bpf,
                cmd,
                self.0.as_mut_ptr(),
                self.0.len() as libc::c_uint,
            )
        };
        if ret < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(ret as i32)
        }
    }

    fn fd(self, cmd: i32) -> io::Result<OwnedFd> {
        let fd = self.call(cmd)?;
        // SAFETY: the command returned a new file descriptor that nothing else owns.
        Ok(unsafe { OwnedFd::from_raw_fd(fd) })
    }
}

/// The XSKMAP: receive queue -> AF_XDP socket.
pub fn socket_map(queues: u32) -> io::Result<OwnedFd> {
    Attr::new()
        .u32(0, BPF_MAP_TYPE_XSKMAP)
        .u32(4, 4)
        .u32(8, 4)
        .u32(12, queues)
        .name(28, "vantage_xsks")
        .fd(BPF_MAP_CREATE)
}

/// Puts the AF_XDP socket of receive queue `queue` into the map.
pub fn insert_socket(map: &OwnedFd, queue: u32, socket: &OwnedFd) -> io::Result<()> {
    let key = queue;
    let value = socket.as_raw_fd() as u32;
    Attr::new()
        .u32(0, map.as_raw_fd() as u32)
        .u64(8, &key as *const u32 as u64)
        .u64(16, &value as *const u32 as u64)
        .call(BPF_MAP_UPDATE_ELEM)
        .map(|_| ())
}

/// Loads the program; a refusal carries the verifier's log.
pub fn load(insns: &[Insn]) -> io::Result<OwnedFd> {
    let code: Vec<u8> = insns.iter().flat_map(|i| i.encode()).collect();
    let license = c"Apache-2.0";
    let attempt = |log: &mut [u8]| {
        Attr::new()
            .u32(0, BPF_PROG_TYPE_XDP)
            .u32(4, insns.len() as u32)
            .u64(8, code.as_ptr() as u64)
            .u64(16, license.as_ptr() as u64)
            .u32(24, u32::from(!log.is_empty()))
            .u32(28, log.len() as u32)
            .u64(
                32,
                if log.is_empty() {
                    0
                } else {
                    log.as_mut_ptr() as u64
                },
            )
            .name(48, "vantage_dns")
            .fd(BPF_PROG_LOAD)
    };
    match attempt(&mut []) {
        Ok(fd) => Ok(fd),
        Err(error) if error.raw_os_error() == Some(libc::EPERM) => Err(error),
        Err(error) => {
            let mut log = vec![0u8; 1 << 16];
            let _ = attempt(&mut log);
            let end = log.iter().position(|&b| b == 0).unwrap_or(log.len());
            let log = String::from_utf8_lossy(&log[..end]);
            Err(io::Error::new(
                error.kind(),
                format!("{error}; verifier: {}", log.trim()),
            ))
        }
    }
}

/// Attaches the program to the interface (native XDP where the driver has it, else generic);
/// it stays attached while the returned link is open.
pub fn attach(program: &OwnedFd, ifindex: u32) -> io::Result<OwnedFd> {
    Attr::new()
        .u32(0, program.as_raw_fd() as u32)
        .u32(4, ifindex)
        .u32(8, BPF_XDP)
        .fd(BPF_LINK_CREATE)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jumps_land_on_their_labels() {
        let listen: Vec<SocketAddr> = vec![
            "127.0.0.1:53".parse().unwrap(),
            "[::]:5353".parse().unwrap(),
        ];
        let insns = assemble(&listen, 7);
        // The program ends with the pass branch; every jump lands inside the program.
        assert_eq!(
            insns[insns.len() - 2],
            Insn::new(MOV64_IMM, R0, 0, 0, XDP_PASS)
        );
        for (at, insn) in insns.iter().enumerate() {
            if insn.code & 0x07 == 0x05 || insn.code & 0x07 == 0x06 {
                if insn.code == CALL || insn.code == EXIT {
                    continue;
                }
                let target = at as isize + 1 + insn.off as isize;
                assert!(target > at as isize && (target as usize) < insns.len());
            }
        }
        // The map is referenced by a two-slot load with the map fd.
        assert!(insns.iter().any(|i| i.code == LD_IMM64 && i.imm == 7));
        // Port 53 in network order as a host-endian load sees it.
        let port = i32::from(u16::from_ne_bytes([0, 53]));
        assert!(insns.iter().any(|i| i.code == JNE32_IMM && i.imm == port));
    }
}
