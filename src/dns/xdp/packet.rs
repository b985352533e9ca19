//! Ethernet/IP/UDP framing for the AF_XDP path: where a query's DNS message is in a received
//! frame, and the frame rewritten in place into the reply (addresses and ports swapped,
//! lengths and checksums set).

use std::{
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
    ops::Range,
};

const ETH: usize = 14;
const IP4: usize = 20;
const IP6: usize = 40;
const UDP: usize = 8;
const PROTO_UDP: u8 = 17;
const TTL: u8 = 64;

/// A UDP datagram found in a frame.
#[derive(Debug, PartialEq, Eq)]
pub struct Datagram {
    pub source: SocketAddr,
    pub destination: SocketAddr,
    /// Where the UDP payload (the DNS message) is in the frame.
    pub payload: Range<usize>,
}

fn u16_at(frame: &[u8], at: usize) -> usize {
    usize::from(u16::from_be_bytes([frame[at], frame[at + 1]]))
}

/// The UDP datagram in `frame` (IPv4 without options and not fragmented, or IPv6 with UDP
/// right after the fixed header), if it is one and its lengths agree with the frame.
pub fn parse(frame: &[u8]) -> Option<Datagram> {
    if frame.len() < ETH {
        return None;
    }
    match [frame[12], frame[13]] {
        [0x08, 0x00] => {
            let ip = frame.get(ETH..ETH + IP4)?;
            if ip[0] != 0x45 || ip[9] != PROTO_UDP || u16_at(ip, 6) & 0x3fff != 0 {
                return None;
            }
            let total = u16_at(ip, 2);
            // The UDP header must be in the frame before its length is read.
            let udp_len = u16_at(frame.get(ETH + IP4..ETH + IP4 + UDP)?, 4);
            if ETH + total > frame.len() || udp_len < UDP || IP4 + udp_len > total {
                return None;
            }
            let octets = |at: usize| -> [u8; 4] { ip[at..at + 4].try_into().expect("4 bytes") };
            let udp = ETH + IP4;
            Some(Datagram {
                source: SocketAddr::new(
                    Ipv4Addr::from(octets(12)).into(),
                    u16_at(frame, udp) as u16,
                ),
                destination: SocketAddr::new(
                    Ipv4Addr::from(octets(16)).into(),
                    u16_at(frame, udp + 2) as u16,
                ),
                payload: udp + UDP..udp + udp_len,
            })
        }
        [0x86, 0xdd] => {
            let ip = frame.get(ETH..ETH + IP6)?;
            if ip[6] != PROTO_UDP {
                return None;
            }
            let payload_len = u16_at(ip, 4);
            let udp_len = u16_at(frame.get(ETH + IP6..ETH + IP6 + UDP)?, 4);
            if ETH + IP6 + payload_len > frame.len() || udp_len < UDP || udp_len > payload_len {
                return None;
            }
            let octets = |at: usize| -> [u8; 16] { ip[at..at + 16].try_into().expect("16 bytes") };
            let udp = ETH + IP6;
            Some(Datagram {
                source: SocketAddr::new(
                    Ipv6Addr::from(octets(8)).into(),
                    u16_at(frame, udp) as u16,
                ),
                destination: SocketAddr::new(
                    Ipv6Addr::from(octets(24)).into(),
                    u16_at(frame, udp + 2) as u16,
                ),
                payload: udp + UDP..udp + udp_len,
            })
        }
        _ => None,
    }
}

/// The headers' length before the payload for a datagram of this address family.
pub fn headers(ip: IpAddr) -> usize {
    match ip {
        IpAddr::V4(_) => ETH + IP4 + UDP,
        IpAddr::V6(_) => ETH + IP6 + UDP,
    }
}

/// Ones' complement sum of `bytes` as 16-bit big-endian words, added to `sum`.
fn add_words(mut sum: u64, bytes: &[u8]) -> u64 {
    let mut chunks = bytes.chunks_exact(2);
    for word in &mut chunks {
        sum += u64::from(u16::from_be_bytes([word[0], word[1]]));
    }
    if let [last] = chunks.remainder() {
        sum += u64::from(*last) << 8;
    }
    sum
}

fn fold(mut sum: u64) -> u16 {
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// Rewrites the frame holding `query` into its reply carrying `payload`; returns the reply's
/// length, or None when it does not fit in the frame.
pub fn reply(frame: &mut [u8], query: &Datagram, payload: &[u8]) -> Option<usize> {
    let start = headers(query.source.ip());
    let len = start + payload.len();
    if len > frame.len() {
        return None;
    }
    frame[start..len].copy_from_slice(payload);
    // Ethernet: back to where it came from.
    let (destination, source) = frame[..12].split_at_mut(6);
    destination.swap_with_slice(source);
    let udp_len = UDP + payload.len();
    let pseudo = match (query.source.ip(), query.destination.ip()) {
        (IpAddr::V4(client), IpAddr::V4(server)) => {
            let ip = &mut frame[ETH..ETH + IP4];
            ip[1] = 0; // DSCP/ECN
            ip[2..4].copy_from_slice(&((IP4 + udp_len) as u16).to_be_bytes());
            ip[4..6].copy_from_slice(&[0, 0]); // identification
            ip[6..8].copy_from_slice(&[0x40, 0]); // don't fragment
            ip[8] = TTL;
            ip[10..12].copy_from_slice(&[0, 0]);
            ip[12..16].copy_from_slice(&server.octets());
            ip[16..20].copy_from_slice(&client.octets());
            let checksum = fold(add_words(0, ip));
            ip[10..12].copy_from_slice(&checksum.to_be_bytes());
            add_words(add_words(0, &ip[12..20]), &[0, PROTO_UDP])
        }
        (IpAddr::V6(client), IpAddr::V6(server)) => {
            let ip = &mut frame[ETH..ETH + IP6];
            ip[0..4].copy_from_slice(&[0x60, 0, 0, 0]); // version, no class or flow label
            ip[4..6].copy_from_slice(&(udp_len as u16).to_be_bytes());
            ip[7] = TTL;
            ip[8..24].copy_from_slice(&server.octets());
            ip[24..40].copy_from_slice(&client.octets());
            add_words(add_words(0, &ip[8..40]), &[0, PROTO_UDP])
        }
        _ => return None,
    };
    let udp = start - UDP;
    let header = &mut frame[udp..start];
    header[0..2].copy_from_slice(&query.destination.port().to_be_bytes());
    header[2..4].copy_from_slice(&query.source.port().to_be_bytes());
    header[4..6].copy_from_slice(&(udp_len as u16).to_be_bytes());
    header[6..8].copy_from_slice(&[0, 0]);
    let sum = add_words(pseudo + udp_len as u64, &frame[udp..len]);
    // A computed zero is sent as all ones (zero means "no checksum" in IPv4, RFC 768).
    let checksum = match fold(sum) {
        0 => 0xffff,
        c => c,
    };
    frame[udp + 6..udp + 8].copy_from_slice(&checksum.to_be_bytes());
    Some(len)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A frame as a client would send it (checksums are not checked on the way in).
    fn frame(source: SocketAddr, destination: SocketAddr, payload: &[u8]) -> Vec<u8> {
        let mut f = vec![0xaa; 6];
        f.extend([0xbb; 6]);
        let udp_len = (UDP + payload.len()) as u16;
        match (source.ip(), destination.ip()) {
            (IpAddr::V4(s), IpAddr::V4(d)) => {
                f.extend([0x08, 0x00, 0x45, 0]);
                f.extend((IP4 as u16 + udp_len).to_be_bytes());
                f.extend([0, 1, 0, 0, 64, PROTO_UDP, 0, 0]);
                f.extend(s.octets());
                f.extend(d.octets());
            }
            (IpAddr::V6(s), IpAddr::V6(d)) => {
                f.extend([0x86, 0xdd, 0x60, 0, 0, 0]);
                f.extend(udp_len.to_be_bytes());
                f.extend([PROTO_UDP, 64]);
                f.extend(s.octets());
                f.extend(d.octets());
            }
            _ => unreachable!(),
        }
        f.extend(source.port().to_be_bytes());
        f.extend(destination.port().to_be_bytes());
        f.extend(udp_len.to_be_bytes());
        f.extend([0, 0]);
        f.extend(payload);
        f
    }

    /// The UDP checksum over the pseudo header verifies to zero (RFC 768 / RFC 8200 8.1).
    fn verifies(frame: &[u8], datagram: &Datagram) -> bool {
        let udp = datagram.payload.start - UDP;
        let pseudo = match (datagram.source.ip(), datagram.destination.ip()) {
            (IpAddr::V4(s), IpAddr::V4(d)) => add_words(add_words(0, &s.octets()), &d.octets()),
            (IpAddr::V6(s), IpAddr::V6(d)) => add_words(add_words(0, &s.octets()), &d.octets()),
            _ => unreachable!(),
        };
        let len = datagram.payload.end - udp;
        fold(add_words(
            pseudo + 17 + len as u64,
            &frame[udp..datagram.payload.end],
        )) == 0
    }

    #[test]
    fn replies_swap_ends_and_carry_valid_checksums() {
        for (client, server) in [
            ("192.0.2.7:40000", "127.0.0.1:53"),
            ("[2001:db8::7]:40000", "[::1]:5353"),
        ] {
            let client: SocketAddr = client.parse().unwrap();
            let server: SocketAddr = server.parse().unwrap();
            let mut f = frame(client, server, b"query");
            let query = parse(&f).expect("a UDP datagram");
            assert_eq!((query.source, query.destination), (client, server));
            assert_eq!(&f[query.payload.clone()], b"query");
            f.resize(512, 0);
            let answer = b"a longer answer, odd length";
            let len = reply(&mut f, &query, answer).expect("fits");
            let back = parse(&f[..len]).expect("the reply parses");
            assert_eq!((back.source, back.destination), (server, client));
            assert_eq!(&f[back.payload.clone()], answer);
            assert_eq!(&f[..6], &[0xbb; 6]);
            assert!(verifies(&f[..len], &back));
            if client.is_ipv4() {
                assert_eq!(
                    fold(add_words(0, &f[ETH..ETH + IP4])),
                    0,
                    "IPv4 header checksum"
                );
            }
            // Too big for the frame: no reply written.
            assert_eq!(reply(&mut f, &query, &[0; 600]), None);
        }
    }

    proptest::proptest! {
        /// Any bytes: parsing never panics, and a parsed datagram's reply parses back to the
        /// same ends, swapped, with a valid checksum.
        #[test]
        fn any_frame_parses_or_is_refused(
            mut bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..200),
            v6 in proptest::bool::ANY,
            payload in proptest::collection::vec(proptest::num::u8::ANY, 0..100),
        ) {
            // Half the cases start as a plausible header, so that the checks past it run.
            if bytes.len() > 14 && bytes[0] & 1 == 0 {
                bytes[12..14].copy_from_slice(if v6 { &[0x86, 0xdd] } else { &[0x08, 0x00] });
                if !v6 {
                    bytes[14] = 0x45;
                }
            }
            if let Some(query) = parse(&bytes) {
                let mut frame = bytes.clone();
                frame.resize(headers(query.source.ip()) + payload.len(), 0);
                let len = reply(&mut frame, &query, &payload).expect("sized to fit");
                let back = parse(&frame[..len]).expect("the reply parses");
                proptest::prop_assert_eq!((back.source, back.destination), (query.destination, query.source));
                proptest::prop_assert!(verifies(&frame[..len], &back));
            }
        }
    }

    #[test]
    fn a_frame_cut_inside_the_udp_header_is_refused() {
        for (ethertype, ip_len, v6) in [([0x08, 0x00], IP4, false), ([0x86, 0xdd], IP6, true)] {
            for cut in 0..UDP {
                let mut frame = vec![0u8; ETH + ip_len + cut];
                frame[12..14].copy_from_slice(&ethertype);
                if v6 {
                    frame[ETH + 6] = PROTO_UDP;
                } else {
                    frame[ETH] = 0x45;
                    frame[ETH + 9] = PROTO_UDP;
                }
                assert_eq!(parse(&frame), None, "v6 {v6}, {cut} bytes of UDP header");
            }
        }
    }

    #[test]
    fn refuses_what_is_not_a_plain_udp_datagram() {
        let client: SocketAddr = "192.0.2.7:40000".parse().unwrap();
        let server: SocketAddr = "127.0.0.1:53".parse().unwrap();
        let good = frame(client, server, b"query");
        assert!(parse(&good).is_some());
        let mut fragment = good.clone();
        fragment[ETH + 6] = 0x20; // more fragments
        assert_eq!(parse(&fragment), None);
        let mut options = good.clone();
        options[ETH] = 0x46;
        assert_eq!(parse(&options), None);
        let mut long = good.clone();
        long[ETH + IP4 + 5] += 1; // UDP length past the IP packet
        assert_eq!(parse(&long), None);
        assert_eq!(parse(&good[..good.len() - 1]), None, "cut short");
        assert_eq!(parse(&good[..20]), None);
    }
}
