//! The UDP answer cache: responses produced by the full request path, replayed to the same
//! query with only the ID patched. Pure (no I/O); one cache per serving thread, emptied
//! whenever the answers may have changed.
//!
//! Only the common shape is cached: a standard query with one question of class IN, no answer
//! or authority records, and at most an OPT record without options (EDNS version 0). The key is
//! the query itself without its ID, so the flags, the name as written (its letter case shapes
//! the response: it is echoed, and it decides which names compress), the type, the EDNS buffer
//! size and the DO bit all select their own entry; the same key always gets the same response
//! from the full path, as long as the answer state is the same.

use std::collections::HashMap;

use prometheus::IntCounter;

/// The longest query in the cacheable shape (header, a 255-byte name, type and class, OPT).
const MAX_QUERY: usize = 12 + 255 + 4 + 11;
const CLASS_IN: [u8; 2] = [0, 1];
const TYPE_OPT: [u8; 2] = [0, 41];

/// Writes the key of `packet` into `key`; the length of the question name (at offset 12), or
/// None when the query is not in the cacheable shape.
pub fn key_of(packet: &[u8], key: &mut Vec<u8>) -> Option<usize> {
    if packet.len() < 12 + 1 + 4 || packet.len() > MAX_QUERY {
        return None;
    }
    let count = |at: usize| u16::from_be_bytes([packet[at], packet[at + 1]]);
    let query = packet[2] & 0x80 == 0 && (packet[2] >> 3) & 0x0f == 0;
    let (questions, answers, authorities, additionals) = (count(4), count(6), count(8), count(10));
    if !query || questions != 1 || answers != 0 || authorities != 0 || additionals > 1 {
        return None;
    }
    key.clear();
    key.extend_from_slice(&packet[2..4]);
    let mut at = 12;
    loop {
        let len = usize::from(*packet.get(at)?);
        if len == 0 {
            key.push(0);
            at += 1;
            break;
        }
        // Compression pointers and extended label types are not in a plain query.
        if len & 0xc0 != 0 {
            return None;
        }
        key.extend_from_slice(packet.get(at..at + 1 + len)?);
        at += 1 + len;
    }
    let name_len = at - 12;
    let type_class = packet.get(at..at + 4)?;
    if type_class[2..4] != CLASS_IN {
        return None;
    }
    key.extend_from_slice(type_class);
    at += 4;
    if additionals == 1 {
        // OPT: root name, type 41, class = payload size, TTL = extended rcode, version,
        // flags; no options.
        let opt = packet.get(at..at + 11)?;
        if opt[0] != 0 || opt[1..3] != TYPE_OPT || opt[6] != 0 || opt[9..11] != [0, 0] {
            return None;
        }
        key.extend_from_slice(opt);
        at += 11;
    }
    (at == packet.len()).then_some(name_len)
}

struct Entry {
    response: Box<[u8]>,
    /// What the full path counts for this answer, counted again on every replay.
    counters: Vec<IntCounter>,
}

/// Responses larger than this are not kept (they are rare, and would let a client fill the
/// cache with few queries).
const MAX_RESPONSE: usize = 1232;

/// One serving thread's cache.
pub struct AnswerCache {
    entries: HashMap<Box<[u8]>, Entry>,
    key: Vec<u8>,
    /// Bytes held (keys and responses), at most `budget`; it starts over when full.
    held: usize,
    budget: usize,
}

impl AnswerCache {
    /// A cache holding at most `budget` bytes of keys and responses.
    pub fn new(budget: usize) -> Self {
        Self {
            entries: HashMap::new(),
            key: Vec::with_capacity(MAX_QUERY),
            held: 0,
            budget,
        }
    }

    pub fn clear(&mut self) {
        self.entries.clear();
        self.held = 0;
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Writes the cached response to `packet` into `out`, with the packet's ID; false on a
    /// miss.
    pub fn answer(&mut self, packet: &[u8], out: &mut Vec<u8>) -> bool {
        if key_of(packet, &mut self.key).is_none() {
            return false;
        }
        let Some(entry) = self.entries.get(self.key.as_slice()) else {
            return false;
        };
        out.clear();
        out.extend_from_slice(&entry.response);
        out[..2].copy_from_slice(&packet[..2]);
        for counter in &entry.counters {
            counter.inc();
        }
        true
    }

    /// Keeps the full path's `response` to `packet`, if the query has the cacheable shape and
    /// the response answers it (same ID, its question repeated as asked).
    pub fn insert(&mut self, packet: &[u8], response: &[u8], counters: Vec<IntCounter>) {
        let Some(name_len) = key_of(packet, &mut self.key) else {
            return;
        };
        let question = 12..12 + name_len + 4;
        let answers_it = response.len() >= question.end
            && response[..2] == packet[..2]
            && response[4..6] == [0, 1]
            && response[question.clone()] == packet[question];
        if !answers_it || response.len() > MAX_RESPONSE {
            return;
        }
        let size = self.key.len() + response.len();
        if self.held + size > self.budget {
            self.clear();
        }
        self.held += size;
        self.entries.insert(
            self.key.clone().into_boxed_slice(),
            Entry {
                response: response.into(),
                counters,
            },
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A query for `name` (dotted, no trailing dot) type A, with an optional OPT.
    fn query(id: u16, name: &str, opt: Option<u16>) -> Vec<u8> {
        let mut p = id.to_be_bytes().to_vec();
        p.extend_from_slice(&[0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, u8::from(opt.is_some())]);
        for label in name.split('.') {
            p.push(label.len() as u8);
            p.extend_from_slice(label.as_bytes());
        }
        p.extend_from_slice(&[0, 0, 1, 0, 1]);
        if let Some(size) = opt {
            p.extend_from_slice(&[0, 0, 41]);
            p.extend_from_slice(&size.to_be_bytes());
            p.extend_from_slice(&[0, 0, 0, 0, 0, 0]);
        }
        p
    }

    /// A fake response: the question copied, one byte of "answer".
    fn response_to(q: &[u8]) -> Vec<u8> {
        let mut r = q.to_vec();
        r[2] |= 0x80;
        r.push(0xaa);
        r
    }

    #[test]
    fn keys_ignore_the_id_but_not_case_type_flags_or_edns() {
        let mut a = Vec::new();
        let mut b = Vec::new();
        assert_eq!(key_of(&query(1, "www.example.com", None), &mut a), Some(17));
        key_of(&query(2, "www.example.com", None), &mut b);
        assert_eq!(a, b);
        key_of(&query(2, "WwW.ExAmPlE.cOm", None), &mut b);
        assert_ne!(a, b, "the case shapes the response (echo, compression)");
        key_of(&query(1, "www.example.com", Some(1232)), &mut b);
        assert_ne!(a, b, "EDNS selects its own entry");
        let mut other_flags = query(1, "www.example.com", None);
        other_flags[2] = 0;
        key_of(&other_flags, &mut b);
        assert_ne!(a, b, "RD selects its own entry");
    }

    #[test]
    fn only_the_plain_shape_is_cacheable() {
        let mut k = Vec::new();
        let plain = query(1, "www.example.com", Some(1232));
        assert!(key_of(&plain, &mut k).is_some());
        let mut with_option = plain.clone();
        with_option[plain.len() - 1] = 4; // rdlen 4, no data: malformed
        assert!(key_of(&with_option, &mut k).is_none());
        let mut trailing = plain.clone();
        trailing.push(0);
        assert!(key_of(&trailing, &mut k).is_none());
        let mut response = plain.clone();
        response[2] |= 0x80;
        assert!(key_of(&response, &mut k).is_none());
        let mut notify = plain.clone();
        notify[2] = 4 << 3;
        assert!(key_of(&notify, &mut k).is_none());
        let mut chaos = query(1, "version.bind", None);
        let n = chaos.len();
        chaos[n - 1] = 3;
        assert!(key_of(&chaos, &mut k).is_none());
        let mut edns1 = plain;
        let n = edns1.len();
        edns1[n - 5] = 1; // OPT version 1: BADVERS goes through the full path
        assert!(key_of(&edns1, &mut k).is_none());
        assert!(key_of(&[0u8; 11], &mut k).is_none());
    }

    #[test]
    fn a_hit_replays_the_response_with_the_askers_id() {
        let mut cache = AnswerCache::new(10);
        let first = query(7, "www.example.com", None);
        let counter = IntCounter::new("c", "c").expect("counter");
        cache.insert(&first, &response_to(&first), vec![counter.clone()]);
        let second = query(9, "www.example.com", None);
        let mut out = Vec::new();
        assert!(cache.answer(&second, &mut out));
        assert_eq!(out, response_to(&second));
        assert_eq!(counter.get(), 1);
        assert!(!cache.answer(&query(9, "mail.example.com", None), &mut out));
        assert!(!cache.answer(&query(9, "WWW.example.com", None), &mut out));
    }

    #[test]
    fn responses_that_do_not_echo_the_question_are_not_kept() {
        let mut cache = AnswerCache::new(10);
        let q = query(7, "www.example.com", None);
        let mut formerr = q[..12].to_vec();
        formerr[5] = 0; // no question
        cache.insert(&q, &formerr, Vec::new());
        let mut other_id = response_to(&q);
        other_id[1] ^= 1;
        cache.insert(&q, &other_id, Vec::new());
        let mut other_name = response_to(&q);
        other_name[13] = b'W';
        cache.insert(&q, &other_name, Vec::new());
        let mut large = response_to(&q);
        large.resize(MAX_RESPONSE + 1, 0);
        cache.insert(&q, &large, Vec::new());
        assert!(cache.is_empty());
    }

    #[test]
    fn a_full_cache_starts_over() {
        // Room for two entries of these sizes (a key of 27 bytes, a response of 34).
        let mut cache = AnswerCache::new(2 * (27 + 34));
        for name in ["a.example", "b.example", "c.example"] {
            let q = query(1, name, None);
            cache.insert(&q, &response_to(&q), Vec::new());
        }
        assert_eq!(cache.len(), 1);
    }
}
