//! A zone held for answering: nodes by lower-case wire name (empty non-terminals included),
//! each with its RRsets as wire-format RDATA. Built once per load by [`ZoneBuilder`], which
//! enforces the rules a zone must meet; never modified afterwards.

use std::collections::HashMap;

use super::wire::{
    self, TYPE_CNAME, TYPE_DNAME, TYPE_DS, TYPE_NS, TYPE_NSEC, TYPE_RRSIG, TYPE_SOA,
};

/// One RRset: its type, TTL and every RDATA, each preceded by its 16-bit length.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RRset {
    pub rtype: u16,
    pub ttl: u32,
    data: Box<[u8]>,
}

impl RRset {
    /// The RDATAs, in zone-file order.
    pub fn rdatas(&self) -> impl Iterator<Item = &[u8]> + '_ {
        let mut at = 0;
        std::iter::from_fn(move || {
            let len = usize::from(u16::from_be_bytes([*self.data.get(at)?, self.data[at + 1]]));
            let rdata = &self.data[at + 2..at + 2 + len];
            at += 2 + len;
            Some(rdata)
        })
    }

    pub fn first(&self) -> Option<&[u8]> {
        self.rdatas().next()
    }
}

/// A name in the zone; no RRsets for an empty non-terminal.
#[derive(Debug, Default, Clone)]
pub struct Node {
    sets: Box<[RRset]>,
}

impl Node {
    pub fn get(&self, rtype: u16) -> Option<&RRset> {
        self.sets.iter().find(|s| s.rtype == rtype)
    }

    pub fn sets(&self) -> &[RRset] {
        &self.sets
    }

    pub fn is_empty(&self) -> bool {
        self.sets.is_empty()
    }
}

#[derive(Debug)]
pub struct Zone {
    /// Lower case, wire form.
    origin: Box<[u8]>,
    /// Every name (lower case, wire form) -> its node in `nodes`.
    index: HashMap<Box<[u8]>, u32, NameHasher>,
    nodes: Vec<Node>,
}

impl Zone {
    pub fn origin(&self) -> &[u8] {
        &self.origin
    }

    /// The node at `name` (lower case) and its stored name.
    pub fn node(&self, name: &[u8]) -> Option<(&[u8], &Node)> {
        self.index
            .get_key_value(name)
            .map(|(k, &i)| (&**k, &self.nodes[i as usize]))
    }

    pub fn apex(&self) -> &Node {
        &self.nodes[self.index[&self.origin] as usize]
    }

    /// The SOA, with the TTL of a negative answer: min(TTL, MINIMUM) (RFC 2308 section 5).
    pub fn negative_soa(&self) -> (u32, &[u8]) {
        let soa = self.apex().get(TYPE_SOA).expect("checked when built");
        let rdata = soa.first().expect("checked when built");
        let minimum = rdata
            .get(rdata.len() - 4..)
            .map_or(0, |m| u32::from_be_bytes(m.try_into().expect("4 bytes")));
        (soa.ttl.min(minimum), rdata)
    }

    /// Every RRset with its owner: the apex first (for transfers).
    pub fn rrsets(&self) -> impl Iterator<Item = (&[u8], &RRset)> + '_ {
        let apex = self.apex().sets.iter().map(|s| (&*self.origin, s));
        let rest = self
            .index
            .iter()
            .filter(|(k, _)| **k != self.origin)
            .flat_map(|(k, &i)| self.nodes[i as usize].sets.iter().map(move |s| (&**k, s)));
        apex.chain(rest)
    }

    /// How many records the zone holds.
    pub fn record_count(&self) -> usize {
        self.nodes
            .iter()
            .flat_map(|n| &n.sets)
            .map(|s| s.rdatas().count())
            .sum()
    }

    /// The zone cut at or above `name` (strictly below the apex), if any.
    pub fn cut_above(&self, name: &[u8]) -> Option<&[u8]> {
        let mut at = name;
        let mut cut = None;
        while at.len() > self.origin.len() {
            if let Some((key, node)) = self.node(at)
                && node.get(TYPE_NS).is_some()
            {
                cut = Some(key);
            }
            at = wire::parent(at)?;
        }
        cut
    }
}

/// A record being collected: its owner (an index into the names), type, TTL and where its
/// RDATA is in the arena.
struct Pending {
    name: u32,
    rtype: u16,
    ttl: u32,
    at: u32,
    len: u16,
}

/// Collects records, then checks and freezes them into a [`Zone`]. Records go into one flat
/// list and one byte arena, so that loading a large zone costs few allocations.
pub struct ZoneBuilder {
    origin: Vec<u8>,
    names: HashMap<Box<[u8]>, u32, NameHasher>,
    records: Vec<Pending>,
    arena: Vec<u8>,
    scratch: Vec<u8>,
}

/// Why a record or a zone was refused.
pub type Refusal = String;

impl ZoneBuilder {
    /// `origin` in wire form (any case).
    pub fn new(origin: &[u8]) -> Self {
        Self {
            origin: wire::lower(origin),
            names: HashMap::default(),
            records: Vec::new(),
            arena: Vec::new(),
            scratch: Vec::with_capacity(wire::MAX_NAME),
        }
    }

    /// Makes room for about `records` records (a large zone then loads without regrowing).
    pub fn reserve(&mut self, records: usize) {
        self.names.reserve(records);
        self.records.reserve(records);
        self.arena.reserve(records * 8);
    }

    /// Adds one record (owner in wire form, any case). A record repeated exactly is kept once
    /// (RFC 2181 section 5); a TTL above 2^31 - 1 is served as 0 (RFC 2181 section 8); a TTL
    /// differing within an RRset takes the first one's (RFC 2181 section 5.2).
    pub fn add(&mut self, owner: &[u8], rtype: u16, ttl: u32, rdata: &[u8]) -> Result<(), Refusal> {
        self.scratch.clear();
        self.scratch.extend_from_slice(owner);
        wire::lower_in_place(&mut self.scratch);
        if !wire::is_at_or_below(&self.scratch, &self.origin) {
            return Err(format!(
                "{} is outside the zone {}",
                wire::to_text(&self.scratch),
                wire::to_text(&self.origin)
            ));
        }
        let len = u16::try_from(rdata.len())
            .map_err(|_| "the record data is longer than 65535 bytes".to_string())?;
        let at = u32::try_from(self.arena.len())
            .map_err(|_| "the zone holds more than 4 GiB of record data".to_string())?;
        let next = self.names.len() as u32;
        let name = match self.names.get(self.scratch.as_slice()) {
            Some(&i) => i,
            None => {
                self.names.insert(self.scratch.as_slice().into(), next);
                next
            }
        };
        self.arena.extend_from_slice(rdata);
        self.records.push(Pending {
            name,
            rtype,
            ttl: if ttl > i32::MAX as u32 { 0 } else { ttl },
            at,
            len,
        });
        Ok(())
    }

    /// Checks the zone as a whole and freezes it: an SOA and NS at the apex, one SOA only, a
    /// CNAME alone at its name (RFC 1034 section 3.6.2, RFC 2181 section 10.1), one DNAME at
    /// most (RFC 6672 section 2.4) and no CNAME beside it. Empty non-terminals are added.
    pub fn finish(self) -> Result<Zone, Refusal> {
        let ZoneBuilder {
            origin,
            names,
            mut records,
            arena,
            ..
        } = self;
        let origin_text = wire::to_text(&origin);
        let mut index = names;
        // Group by name, then type; file order is kept inside a group (stable sort).
        records.sort_by_key(|r| (r.name, r.rtype));
        let mut nodes: Vec<Node> = vec![Node::default(); index.len()];
        // Ancestors up to the apex exist, as empty non-terminals if nothing else.
        let mut ents: std::collections::HashSet<Box<[u8]>, NameHasher> = Default::default();
        {
            let mut by_index: Vec<&[u8]> = vec![&[]; index.len()];
            for (name, &i) in &index {
                by_index[i as usize] = name;
            }
            let mut start = 0;
            while start < records.len() {
                let name_index = records[start].name as usize;
                let mut end = start;
                while end < records.len() && records[end].name as usize == name_index {
                    end += 1;
                }
                let name = by_index[name_index];
                nodes[name_index] =
                    node_of(name, &records[start..end], &arena, &origin, &origin_text)?;
                let mut up = wire::parent(name);
                while let Some(p) = up {
                    if p.len() < origin.len() || index.contains_key(p) || ents.contains(p) {
                        break;
                    }
                    ents.insert(p.into());
                    up = wire::parent(p);
                }
                start = end;
            }
        }
        for ent in ents {
            index.insert(ent, nodes.len() as u32);
            nodes.push(Node::default());
        }
        drop(records);
        drop(arena);
        let apex = index.get(origin.as_slice()).map(|&i| &nodes[i as usize]);
        let has = |t: u16| apex.is_some_and(|n| n.get(t).is_some());
        if !has(TYPE_SOA) {
            return Err(format!(
                "no SOA record at the zone apex {origin_text}; add one"
            ));
        }
        if !has(TYPE_NS) {
            return Err(format!(
                "no NS records at the zone apex {origin_text}; add the name servers"
            ));
        }
        // A DS belongs at a delegation (RFC 4035 section 2.4), never at the apex.
        if has(TYPE_DS) {
            return Err(format!(
                "{origin_text} has a DS record at the apex; DS records belong in the parent zone"
            ));
        }
        index.shrink_to_fit();
        nodes.shrink_to_fit();
        Ok(Zone {
            origin: origin.into_boxed_slice(),
            index,
            nodes,
        })
    }
}

/// The node of one name from its records (sorted by type), with the checks that concern one
/// name.
fn node_of(
    name: &[u8],
    records: &[Pending],
    arena: &[u8],
    origin: &[u8],
    origin_text: &str,
) -> Result<Node, Refusal> {
    let text = || wire::to_text(name);
    let mut sets: Vec<RRset> = Vec::with_capacity(1);
    let mut start = 0;
    while start < records.len() {
        let rtype = records[start].rtype;
        let mut end = start;
        while end < records.len() && records[end].rtype == rtype {
            end += 1;
        }
        let mut rdatas: Vec<&[u8]> = Vec::with_capacity(end - start);
        for r in &records[start..end] {
            let rdata = &arena[r.at as usize..r.at as usize + usize::from(r.len)];
            if !rdatas.contains(&rdata) {
                rdatas.push(rdata);
            }
        }
        if rtype == TYPE_SOA && (name != origin || rdatas.len() > 1) {
            return Err(format!(
                "{}: an SOA record is allowed only once, at the apex {origin_text}",
                text()
            ));
        }
        if matches!(rtype, TYPE_CNAME | TYPE_DNAME) && rdatas.len() > 1 {
            return Err(format!(
                "{} has more than one {} record (RFC 2181 section 10.1, RFC 6672 section 2.4)",
                text(),
                if rtype == TYPE_CNAME {
                    "CNAME"
                } else {
                    "DNAME"
                }
            ));
        }
        let mut data = Vec::with_capacity(rdatas.iter().map(|r| r.len() + 2).sum());
        for r in rdatas {
            data.extend_from_slice(&(r.len() as u16).to_be_bytes());
            data.extend_from_slice(r);
        }
        sets.push(RRset {
            rtype,
            ttl: records[start].ttl,
            data: data.into_boxed_slice(),
        });
        start = end;
    }
    let cname = sets.iter().any(|s| s.rtype == TYPE_CNAME);
    // RFC 4035 section 2.5: RRSIG and NSEC may sit beside a CNAME.
    if cname
        && sets
            .iter()
            .any(|s| !matches!(s.rtype, TYPE_CNAME | TYPE_RRSIG | TYPE_NSEC))
    {
        return Err(format!(
            "{} has a CNAME and other data (RFC 1034 section 3.6.2)",
            text()
        ));
    }
    if cname && name == origin {
        return Err(format!(
            "{} has a CNAME at the zone apex (the apex needs SOA and NS)",
            text()
        ));
    }
    Ok(Node {
        sets: sets.into_boxed_slice(),
    })
}

/// A fast hash for the names of our own zones (FxHash's mixing; zone data is the operator's,
/// so flooding the table with collisions is not a stranger's option).
#[derive(Debug, Default, Clone, Copy)]
pub struct NameHasher;

impl std::hash::BuildHasher for NameHasher {
    type Hasher = FxHasher;

    fn build_hasher(&self) -> FxHasher {
        FxHasher(0)
    }
}

pub struct FxHasher(u64);

impl std::hash::Hasher for FxHasher {
    fn write(&mut self, bytes: &[u8]) {
        const K: u64 = 0x517c_c1b7_2722_0a95;
        let mut chunks = bytes.chunks_exact(8);
        for chunk in &mut chunks {
            let word = u64::from_le_bytes(chunk.try_into().expect("8 bytes"));
            self.0 = (self.0.rotate_left(5) ^ word).wrapping_mul(K);
        }
        for &b in chunks.remainder() {
            self.0 = (self.0.rotate_left(5) ^ u64::from(b)).wrapping_mul(K);
        }
    }

    fn write_usize(&mut self, n: usize) {
        self.write(&n.to_le_bytes());
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn w(text: &str) -> Vec<u8> {
        wire::from_dotted(text).expect("name")
    }

    fn soa() -> Vec<u8> {
        [
            w("ns.example"),
            w("h.example"),
            vec![0; 16],
            vec![0, 0, 0, 60],
        ]
        .concat()
    }

    fn base() -> ZoneBuilder {
        let mut b = ZoneBuilder::new(&w("Example"));
        b.add(&w("example"), TYPE_SOA, 300, &soa()).expect("soa");
        b.add(&w("example"), TYPE_NS, 300, &w("ns.example"))
            .expect("ns");
        b
    }

    #[test]
    fn builds_nodes_with_empty_non_terminals_and_dedups() {
        let mut b = base();
        b.add(&w("A.b.c.example"), 1, 60, &[192, 0, 2, 1])
            .expect("a");
        b.add(&w("a.b.c.example"), 1, 99, &[192, 0, 2, 1])
            .expect("dup");
        b.add(&w("a.b.c.example"), 1, 99, &[192, 0, 2, 2])
            .expect("second");
        b.add(&w("x.example"), 1, u32::MAX, &[192, 0, 2, 3])
            .expect("big ttl");
        let z = b.finish().expect("zone");
        let (_, node) = z.node(&w("a.b.c.example")).expect("node");
        let set = node.get(1).expect("A");
        assert_eq!(set.ttl, 60);
        assert_eq!(set.rdatas().count(), 2);
        assert!(z.node(&w("b.c.example")).expect("ent").1.is_empty());
        assert!(z.node(&w("c.example")).is_some());
        assert_eq!(
            z.node(&w("x.example")).expect("x").1.get(1).expect("A").ttl,
            0
        );
        assert_eq!(z.negative_soa().0, 60);
        assert_eq!(z.record_count(), 5);
        assert_eq!(
            z.rrsets().next().map(|(o, _)| o.to_vec()),
            Some(w("example"))
        );
    }

    #[test]
    fn refuses_what_a_zone_may_not_hold() {
        let mut b = base();
        b.add(&w("c.example"), TYPE_CNAME, 60, &w("x.example"))
            .expect("cname");
        b.add(&w("c.example"), 1, 60, &[1, 2, 3, 4]).expect("a");
        assert!(b.finish().unwrap_err().contains("CNAME and other data"));
        let mut b = base();
        assert!(
            b.add(&w("example.org"), 1, 1, &[1, 2, 3, 4])
                .unwrap_err()
                .contains("outside")
        );
        let b = ZoneBuilder::new(&w("example"));
        assert!(b.finish().unwrap_err().contains("no SOA"));
        let mut b = base();
        b.add(&w("d.example"), TYPE_DNAME, 60, &w("x.example"))
            .expect("dname");
        b.add(&w("d.example"), TYPE_DNAME, 60, &w("y.example"))
            .expect("dname");
        assert!(b.finish().unwrap_err().contains("more than one DNAME"));
    }

    #[test]
    fn finds_the_cut_above_a_name() {
        let mut b = base();
        b.add(&w("sub.example"), TYPE_NS, 60, &w("ns.sub.example"))
            .expect("ns");
        let z = b.finish().expect("zone");
        assert_eq!(
            z.cut_above(&w("a.b.sub.example")),
            Some(&w("sub.example")[..])
        );
        assert_eq!(z.cut_above(&w("sub.example")), Some(&w("sub.example")[..]));
        assert_eq!(z.cut_above(&w("other.example")), None);
        assert_eq!(z.cut_above(&w("example")), None);
    }
}
