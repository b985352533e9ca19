//! DNS Cookies (RFC 7873) with interoperable server cookies (RFC 9018): version 1, a
//! timestamp and SipHash-2-4 over the client cookie, the version, the timestamp and the
//! client's address, keyed with a secret of this process. A client that returns a valid
//! server cookie has proven it receives our replies at its address, so it is exempt from
//! response rate limiting. Pure: the time and the secret are arguments.

use std::net::IpAddr;

/// A server cookie is valid this long after it was made (RFC 9018 section 4.3: one hour)...
const MAX_AGE: u32 = 3600;
/// ...and may come from this far in the future (clock differences between servers).
const MAX_AHEAD: u32 = 300;

/// The server cookie (16 bytes) for a client cookie from `client` at `now` (Unix seconds).
pub fn server_cookie(
    secret: &[u8; 16],
    client_cookie: &[u8; 8],
    client: IpAddr,
    now: u32,
) -> [u8; 16] {
    let mut out = [0u8; 16];
    out[0] = 1; // version
    out[4..8].copy_from_slice(&now.to_be_bytes());
    let hash = siphash24(secret, &hash_input(client_cookie, &out[..8], client));
    out[8..].copy_from_slice(&hash.to_le_bytes());
    out
}

/// True if `server` is a cookie we made for this client cookie and address, not expired.
pub fn verify(
    secret: &[u8; 16],
    client_cookie: &[u8; 8],
    server: &[u8],
    client: IpAddr,
    now: u32,
) -> bool {
    let Ok(server) = <[u8; 16]>::try_from(server) else {
        return false;
    };
    if server[0] != 1 {
        return false;
    }
    let made = u32::from_be_bytes(server[4..8].try_into().expect("4 bytes"));
    // Serial-number arithmetic on the timestamp (RFC 9018 section 4.3).
    let age = now.wrapping_sub(made);
    let fresh = age <= MAX_AGE || made.wrapping_sub(now) <= MAX_AHEAD;
    let hash = siphash24(secret, &hash_input(client_cookie, &server[..8], client));
    fresh
        && aws_lc_rs::constant_time::verify_slices_are_equal(&hash.to_le_bytes(), &server[8..])
            .is_ok()
}

fn hash_input(client_cookie: &[u8; 8], head: &[u8], client: IpAddr) -> Vec<u8> {
    let mut input = Vec::with_capacity(8 + 8 + 16);
    input.extend_from_slice(client_cookie);
    input.extend_from_slice(head);
    match client {
        IpAddr::V4(v4) => input.extend_from_slice(&v4.octets()),
        IpAddr::V6(v6) => input.extend_from_slice(&v6.octets()),
    }
    input
}

/// SipHash-2-4 (Aumasson and Bernstein), the hash RFC 9018 names.
pub fn siphash24(key: &[u8; 16], data: &[u8]) -> u64 {
    let k0 = u64::from_le_bytes(key[..8].try_into().expect("8 bytes"));
    let k1 = u64::from_le_bytes(key[8..].try_into().expect("8 bytes"));
    let mut v = [
        k0 ^ 0x736f_6d65_7073_6575,
        k1 ^ 0x646f_7261_6e64_6f6d,
        k0 ^ 0x6c79_6765_6e65_7261,
        k1 ^ 0x7465_6462_7974_6573,
    ];
    let round = |v: &mut [u64; 4]| {
        v[0] = v[0].wrapping_add(v[1]);
        v[1] = v[1].rotate_left(13) ^ v[0];
        v[0] = v[0].rotate_left(32);
        v[2] = v[2].wrapping_add(v[3]);
        v[3] = v[3].rotate_left(16) ^ v[2];
        v[0] = v[0].wrapping_add(v[3]);
        v[3] = v[3].rotate_left(21) ^ v[0];
        v[2] = v[2].wrapping_add(v[1]);
        v[1] = v[1].rotate_left(17) ^ v[2];
        v[2] = v[2].rotate_left(32);
    };
    let mut chunks = data.chunks_exact(8);
    for chunk in &mut chunks {
        let m = u64::from_le_bytes(chunk.try_into().expect("8 bytes"));
        v[3] ^= m;
        round(&mut v);
        round(&mut v);
        v[0] ^= m;
    }
    let mut last = [0u8; 8];
    last[..chunks.remainder().len()].copy_from_slice(chunks.remainder());
    last[7] = data.len() as u8;
    let m = u64::from_le_bytes(last);
    v[3] ^= m;
    round(&mut v);
    round(&mut v);
    v[0] ^= m;
    v[2] ^= 0xff;
    for _ in 0..4 {
        round(&mut v);
    }
    v[0] ^ v[1] ^ v[2] ^ v[3]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn siphash_matches_the_reference_vectors() {
        // The reference implementation's vectors: key 00..0f, messages 00..(n-1).
        let key: [u8; 16] = std::array::from_fn(|i| i as u8);
        let message: Vec<u8> = (0..64u8).collect();
        assert_eq!(siphash24(&key, &message[..0]), 0x726f_db47_dd0e_0e31);
        assert_eq!(siphash24(&key, &message[..1]), 0x74f8_39c5_93dc_67fd);
        assert_eq!(siphash24(&key, &message[..8]), 0x93f5_f579_9a93_2462);
        assert_eq!(siphash24(&key, &message[..15]), 0xa129_ca61_49be_45e5);
    }

    #[test]
    fn rfc9018_example_server_cookie() {
        // RFC 9018 appendix A.1: client 2464c4abcf10c957, address 198.51.100.100, time
        // 1559731985, secret e5e973e5a6b2a43f48e7dc849e37bfcf.
        let secret: [u8; 16] = [
            0xe5, 0xe9, 0x73, 0xe5, 0xa6, 0xb2, 0xa4, 0x3f, 0x48, 0xe7, 0xdc, 0x84, 0x9e, 0x37,
            0xbf, 0xcf,
        ];
        let client = [0x24, 0x64, 0xc4, 0xab, 0xcf, 0x10, 0xc9, 0x57];
        let cookie = server_cookie(
            &secret,
            &client,
            IpAddr::from([198, 51, 100, 100]),
            1_559_731_985,
        );
        assert_eq!(
            cookie,
            [
                0x01, 0, 0, 0, 0x5c, 0xf7, 0x9f, 0x11, 0x1f, 0x81, 0x30, 0xc3, 0xee, 0xe2, 0x94,
                0x80
            ]
        );
    }

    #[test]
    fn cookies_verify_for_their_client_and_time_only() {
        let secret = [7u8; 16];
        let client = [1u8; 8];
        let me = IpAddr::from([192, 0, 2, 1]);
        let cookie = server_cookie(&secret, &client, me, 1000);
        assert!(verify(&secret, &client, &cookie, me, 1000));
        assert!(verify(&secret, &client, &cookie, me, 1000 + 3600));
        assert!(
            !verify(&secret, &client, &cookie, me, 1000 + 3601),
            "expired"
        );
        assert!(verify(&secret, &client, &cookie, me, 800), "a little ahead");
        assert!(!verify(
            &secret,
            &client,
            &cookie,
            IpAddr::from([192, 0, 2, 2]),
            1000
        ));
        assert!(!verify(&secret, &[2u8; 8], &cookie, me, 1000));
        assert!(!verify(&[8u8; 16], &client, &cookie, me, 1000));
        assert!(!verify(&secret, &client, &cookie[..15], me, 1000));
    }
}
