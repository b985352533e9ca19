//! One signed zone's signer: RRSIGs (RFC 4034 section 3) made with the zone's active keys,
//! kept in a cache keyed by the canonical RRset, so that an RRset is signed once per validity
//! period whatever answers it; entries are made again a jittered while before they expire.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
};

use super::{canonical, keys::ZoneKey};
use crate::{config::DnssecSettings, dns::wire};

/// Signatures are dated this much before now (resolvers whose clock is behind ours).
const INCEPTION_BACKDATE: u64 = 3600;
/// The most RRsets whose signatures are kept; a full cache is emptied (wildcard expansions of
/// random names must not grow it without bound).
const MAX_CACHED: usize = 200_000;

/// The RRSIG RDATAs of one RRset, one per signing key.
pub type Signatures = Arc<[Box<[u8]>]>;

struct Cached {
    signatures: Signatures,
    /// Unix seconds after which the signatures are made again.
    refresh_at: u64,
    /// Unix seconds when the first of them expires.
    expires: u64,
}

/// Signing one reply: when (Unix seconds), and what it did, for the metrics.
#[derive(Debug, Default, Clone, Copy)]
pub struct Work {
    pub now: u64,
    /// Signatures made.
    pub signed: u64,
    /// RRsets whose signatures came from the cache.
    pub hits: u64,
    /// Signatures that could not be made (the answer goes out without them).
    pub failed: u64,
}

/// The signer of one zone.
pub struct ZoneSigner {
    /// The zone's name, presentation form, for metrics and logs.
    pub zone: String,
    /// Lower-case wire form: the RRSIGs' signer name.
    origin: Vec<u8>,
    keys: Vec<Arc<ZoneKey>>,
    validity: u64,
    refresh: u64,
    cache: Mutex<HashMap<Box<[u8]>, Cached>>,
}

impl ZoneSigner {
    /// The signer of the zone `settings` describes, with the keys read when they were checked.
    pub fn new(settings: &DnssecSettings) -> Self {
        Self {
            zone: settings.zone.clone(),
            origin: settings.origin.clone(),
            keys: settings.keys.iter().filter_map(|k| k.key.clone()).collect(),
            validity: settings.signature_validity.as_secs().max(3600),
            refresh: settings.signature_refresh.as_secs(),
            cache: Mutex::new(HashMap::new()),
        }
    }

    /// How long before they expire signatures are made again.
    pub fn refresh(&self) -> u64 {
        self.refresh
    }

    /// The RRSIGs of the RRset `owner` (lower case) / `rtype`, with `ttl` as its original TTL;
    /// from the cache when `cache`, else made now (names asked only once, such as the owners
    /// of compact denials).
    pub fn sign(
        &self,
        owner: &[u8],
        rtype: u16,
        ttl: u32,
        rdatas: Vec<Vec<u8>>,
        cache: bool,
        work: &mut Work,
    ) -> Signatures {
        let now = work.now;
        let tail = canonical::rrset(owner, rtype, ttl, rdatas);
        if cache {
            let cached = self.cache.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(hit) = cached.get(tail.as_slice())
                && now < hit.refresh_at
            {
                work.hits += 1;
                return hit.signatures.clone();
            }
        }
        let failed = work.failed;
        let (signatures, expires) = self.make(owner, rtype, ttl, &tail, now, work);
        // What failed is tried again at the next answer.
        if cache && work.failed == failed {
            // Spread the refreshes: up to a tenth of the refresh period earlier.
            let jitter = rand::random_range(0..=self.refresh / 10);
            let refresh_at = expires.saturating_sub(self.refresh + jitter);
            let mut cached = self.cache.lock().unwrap_or_else(|e| e.into_inner());
            if cached.len() >= MAX_CACHED {
                cached.clear();
            }
            cached.insert(
                tail.into_boxed_slice(),
                Cached {
                    signatures: signatures.clone(),
                    refresh_at,
                    expires,
                },
            );
        }
        signatures
    }

    fn make(
        &self,
        owner: &[u8],
        rtype: u16,
        ttl: u32,
        tail: &[u8],
        now: u64,
        work: &mut Work,
    ) -> (Signatures, u64) {
        let inception = now.saturating_sub(INCEPTION_BACKDATE);
        let expires = now + self.validity;
        // A wildcard owner's labels do not count its "*" (RFC 4034 section 3.1.3).
        let mut labels = wire::label_count(owner);
        if owner.starts_with(&[1, b'*']) {
            labels -= 1;
        }
        let mut out: Vec<Box<[u8]>> = Vec::with_capacity(self.keys.len());
        let mut data = Vec::with_capacity(18 + self.origin.len() + tail.len());
        for key in self.keys.iter().filter(|k| k.signs(rtype)) {
            data.clear();
            data.extend_from_slice(&rtype.to_be_bytes());
            data.push(key.algorithm.number());
            data.push(labels as u8);
            data.extend_from_slice(&ttl.to_be_bytes());
            // Serial number arithmetic (RFC 4034 section 3.1.5): seconds modulo 2^32.
            data.extend_from_slice(&(expires as u32).to_be_bytes());
            data.extend_from_slice(&(inception as u32).to_be_bytes());
            data.extend_from_slice(&key.tag.to_be_bytes());
            data.extend_from_slice(&self.origin);
            let header = data.len();
            data.extend_from_slice(tail);
            match key.sign(&data) {
                Ok(signature) => {
                    data.truncate(header);
                    data.extend_from_slice(&signature);
                    out.push(data.as_slice().into());
                    work.signed += 1;
                }
                Err(e) => {
                    work.failed += 1;
                    tracing::error!(zone = %self.zone, key = key.tag, "cannot sign: {e}");
                }
            }
        }
        (out.into(), expires)
    }

    /// Drops the entries due for refresh (they would be made again when next asked for);
    /// returns how many are kept and the earliest expiry among them (unix seconds).
    pub fn sweep(&self, now: u64) -> (usize, Option<u64>) {
        let mut cached = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        cached.retain(|_, c| now < c.refresh_at);
        (cached.len(), cached.values().map(|c| c.expires).min())
    }
}
