//! Response rate limiting over UDP, in the manner of NSD and Knot: responses are counted per
//! second per client network (a /24 for IPv4, a /56 for IPv6 by default) and kind of answer
//! (the name asked for positive answers, one bucket for all NXDOMAIN and one for all errors,
//! so that random names cannot dodge the limit). Past the limit a response is dropped, except
//! every `slip`-th, which is sent truncated so that a real client behind the spoofed address
//! retries over TCP. Clients with a valid DNS Cookie and exempt networks are never limited.
//! The table has a fixed size, so a flood from many sources cannot grow it.

use std::{
    hash::{BuildHasher, Hash, Hasher},
    net::IpAddr,
    sync::{Mutex, PoisonError},
};

use ipnet::IpNet;

pub use crate::config::RrlSettings;

/// Seconds since the first call, for [`RateLimiter::decide`].
pub fn second() -> u32 {
    static START: std::sync::OnceLock<tokio::time::Instant> = std::sync::OnceLock::new();
    START
        .get_or_init(tokio::time::Instant::now)
        .elapsed()
        .as_secs() as u32
}

/// What to do with one response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    Send,
    /// Send it truncated (header and question, TC set).
    Slip,
    Drop,
}

#[derive(Debug, Clone, Copy, Default)]
struct Bucket {
    key: u64,
    second: u32,
    count: u32,
    limited: u32,
}

const SHARDS: usize = 32;

pub struct RateLimiter {
    settings: RrlSettings,
    shards: Vec<Mutex<Vec<Bucket>>>,
    hasher: std::collections::hash_map::RandomState,
}

impl RateLimiter {
    pub fn new(settings: RrlSettings) -> Self {
        let per_shard = settings.table_size.div_ceil(SHARDS).max(1);
        Self {
            shards: (0..SHARDS)
                .map(|_| Mutex::new(vec![Bucket::default(); per_shard]))
                .collect(),
            settings,
            hasher: std::collections::hash_map::RandomState::new(),
        }
    }

    pub fn enabled(&self) -> bool {
        self.settings.responses_per_second > 0
    }

    /// The decision for `response` (as it would be sent) to `source`, at `second` (any
    /// monotonic count of seconds).
    pub fn decide(&self, source: IpAddr, response: &[u8], second: u32) -> Decision {
        if !self.enabled() || self.settings.exempt.iter().any(|n| n.contains(&source)) {
            return Decision::Send;
        }
        let mut h = self.hasher.build_hasher();
        let network = match source {
            IpAddr::V4(v4) => IpNet::new(IpAddr::V4(v4), self.settings.ipv4_prefix),
            IpAddr::V6(v6) => IpNet::new(IpAddr::V6(v6), self.settings.ipv6_prefix),
        }
        .map(|n| n.trunc());
        network.ok().hash(&mut h);
        let rcode = response.get(3).map_or(0, |b| b & 0x0f);
        match rcode {
            0 => {
                0u8.hash(&mut h);
                // The name asked for, lower case, hashed in place (no copy per response).
                let end = question_end(response);
                for b in response.get(12..end).unwrap_or_default() {
                    h.write_u8(b.to_ascii_lowercase());
                }
            }
            3 => 1u8.hash(&mut h),
            _ => 2u8.hash(&mut h),
        }
        let key = h.finish();
        let shard = &self.shards[(key as usize) % SHARDS];
        let mut buckets = shard.lock().unwrap_or_else(PoisonError::into_inner);
        let slot = (key >> 8) as usize % buckets.len();
        let bucket = &mut buckets[slot];
        if bucket.key != key || bucket.second != second {
            let limited = if bucket.key == key { bucket.limited } else { 0 };
            *bucket = Bucket {
                key,
                second,
                count: 0,
                limited,
            };
        }
        bucket.count = bucket.count.saturating_add(1);
        if bucket.count <= self.settings.responses_per_second {
            return Decision::Send;
        }
        bucket.limited = bucket.limited.wrapping_add(1);
        if self.settings.slip > 0 && bucket.limited.is_multiple_of(self.settings.slip) {
            Decision::Slip
        } else {
            Decision::Drop
        }
    }
}

/// Where the question name of a response ends (before its root label); 12 if there is none.
fn question_end(response: &[u8]) -> usize {
    let mut at = 12;
    while let Some(&len) = response.get(at) {
        if len == 0 || len & 0xc0 != 0 {
            break;
        }
        at += 1 + usize::from(len);
    }
    at.min(response.len())
}

/// The truncated form of a response: its header with TC set and no records, its question.
pub fn slipped(response: &[u8]) -> Vec<u8> {
    let question_end = question_end(response).max(12) + 1 + 4;
    let qdcount = response
        .get(4..6)
        .map_or(0, |c| u16::from_be_bytes([c[0], c[1]]));
    let keep = if qdcount == 1 && response.len() >= question_end {
        question_end
    } else {
        12.min(response.len())
    };
    let mut out = response[..keep].to_vec();
    if out.len() >= 12 {
        out[2] |= 0x02;
        out[6..12].fill(0);
        if keep == 12 {
            out[4..6].fill(0);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn response(name: &str, rcode: u8) -> Vec<u8> {
        let mut r = vec![0, 1, 0x84, rcode, 0, 1, 0, 1, 0, 0, 0, 0];
        for label in name.split('.') {
            r.push(label.len() as u8);
            r.extend_from_slice(label.as_bytes());
        }
        r.extend_from_slice(&[0, 0, 1, 0, 1]);
        r.extend_from_slice(&[0xc0, 12, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4, 192, 0, 2, 1]);
        r
    }

    fn limiter(rate: u32, slip: u32) -> RateLimiter {
        RateLimiter::new(RrlSettings {
            responses_per_second: rate,
            slip,
            exempt: vec!["10.9.0.0/16".parse().expect("net")],
            ..RrlSettings::default()
        })
    }

    #[test]
    fn limits_per_network_and_name_per_second() {
        let rrl = limiter(5, 2);
        let www = response("www.example", 0);
        let me = IpAddr::from([192, 0, 2, 7]);
        let decisions: Vec<Decision> = (0..9).map(|_| rrl.decide(me, &www, 1)).collect();
        assert_eq!(&decisions[..5], &[Decision::Send; 5]);
        assert_eq!(
            &decisions[5..],
            &[
                Decision::Drop,
                Decision::Slip,
                Decision::Drop,
                Decision::Slip
            ]
        );
        // The same /24 shares the bucket; another network and another name do not.
        assert_eq!(
            rrl.decide(IpAddr::from([192, 0, 2, 200]), &www, 1),
            Decision::Drop
        );
        assert_eq!(
            rrl.decide(IpAddr::from([192, 0, 3, 7]), &www, 1),
            Decision::Send
        );
        assert_eq!(
            rrl.decide(me, &response("mail.example", 0), 1),
            Decision::Send
        );
        // The next second starts over; exempt networks are never limited.
        assert_eq!(rrl.decide(me, &www, 2), Decision::Send);
        let exempt = IpAddr::from([10, 9, 1, 1]);
        assert!((0..50).all(|_| rrl.decide(exempt, &www, 1) == Decision::Send));
    }

    #[test]
    fn random_names_share_the_nxdomain_bucket() {
        let rrl = limiter(3, 0);
        let me = IpAddr::from([0x2001u16, 0xdb8, 0, 0, 0, 0, 0, 1]);
        let sent = (0..10)
            .filter(|i| rrl.decide(me, &response(&format!("r{i}.example"), 3), 1) == Decision::Send)
            .count();
        assert_eq!(sent, 3);
        assert!(!limiter(0, 2).enabled());
    }

    #[test]
    fn a_slipped_response_is_truncated_to_its_question() {
        let r = response("www.example", 0);
        let s = slipped(&r);
        assert_eq!(s.len(), 12 + 13 + 4);
        assert_eq!(s[2] & 0x02, 0x02);
        assert_eq!(&s[4..12], &[0, 1, 0, 0, 0, 0, 0, 0]);
        assert_eq!(&s[12..], &r[12..12 + 17]);
    }
}
