//! A zone held for answering: nodes by lower-case wire name (empty non-terminals included),
//! each with its RRsets as wire-format RDATA. Built once per load by [`ZoneBuilder`], which
//! enforces the rules a zone must meet; never modified afterwards.

use std::collections::{HashMap, hash_map::Entry};

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
    sets: Vec<RRset>,
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
    nodes: HashMap<Box<[u8]>, Node>,
}

impl Zone {
    pub fn origin(&self) -> &[u8] {
        &self.origin
    }

    /// The node at `name` (lower case) and its stored name.
    pub fn node(&self, name: &[u8]) -> Option<(&[u8], &Node)> {
        self.nodes.get_key_value(name).map(|(k, v)| (&**k, v))
    }

    pub fn apex(&self) -> &Node {
        &self.nodes[&self.origin]
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
            .nodes
            .iter()
            .filter(|(k, _)| **k != self.origin)
            .flat_map(|(k, n)| n.sets.iter().map(move |s| (&**k, s)));
        apex.chain(rest)
    }

    /// How many records the zone holds.
    pub fn record_count(&self) -> usize {
        self.nodes
            .values()
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

/// An RRset being collected: (type, TTL, RDATAs).
type PendingSet = (u16, u32, Vec<Vec<u8>>);

/// Collects records, then checks and freezes them into a [`Zone`].
pub struct ZoneBuilder {
    origin: Vec<u8>,
    nodes: HashMap<Box<[u8]>, Vec<PendingSet>>,
}

/// Why a record or a zone was refused.
pub type Refusal = String;

impl ZoneBuilder {
    /// `origin` in wire form (any case).
    pub fn new(origin: &[u8]) -> Self {
        Self {
            origin: wire::lower(origin),
            nodes: HashMap::new(),
        }
    }

    /// Adds one record (owner in wire form, any case). A record repeated exactly is kept once
    /// (RFC 2181 section 5); a TTL above 2^31 - 1 is served as 0 (RFC 2181 section 8); a TTL
    /// differing within an RRset takes the first one's (RFC 2181 section 5.2).
    pub fn add(&mut self, owner: &[u8], rtype: u16, ttl: u32, rdata: &[u8]) -> Result<(), Refusal> {
        let owner = wire::lower(owner);
        if !wire::is_at_or_below(&owner, &self.origin) {
            return Err(format!(
                "{} is outside the zone {}",
                wire::to_text(&owner),
                wire::to_text(&self.origin)
            ));
        }
        if rdata.len() > usize::from(u16::MAX) {
            return Err("the record data is longer than 65535 bytes".into());
        }
        let ttl = if ttl > i32::MAX as u32 { 0 } else { ttl };
        let sets = match self.nodes.entry(owner.into_boxed_slice()) {
            Entry::Occupied(e) => e.into_mut(),
            Entry::Vacant(e) => e.insert(Vec::with_capacity(1)),
        };
        match sets.iter_mut().find(|(t, _, _)| *t == rtype) {
            Some((_, _, rdatas)) => {
                if !rdatas.iter().any(|r| r == rdata) {
                    rdatas.push(rdata.to_vec());
                }
            }
            None => sets.push((rtype, ttl, vec![rdata.to_vec()])),
        }
        Ok(())
    }

    /// Checks the zone as a whole and freezes it: an SOA and NS at the apex, one SOA only, a
    /// CNAME alone at its name (RFC 1034 section 3.6.2, RFC 2181 section 10.1), one DNAME at
    /// most (RFC 6672 section 2.4) and no CNAME beside it. Empty non-terminals are added.
    pub fn finish(self) -> Result<Zone, Refusal> {
        let origin_text = wire::to_text(&self.origin);
        let apex = self.nodes.get(self.origin.as_slice());
        let has = |t: u16| apex.is_some_and(|s| s.iter().any(|(x, _, _)| *x == t));
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
        let mut nodes: HashMap<Box<[u8]>, Node> = HashMap::with_capacity(self.nodes.len() * 2);
        for (name, sets) in self.nodes {
            let text = || wire::to_text(&name);
            for (rtype, _, rdatas) in &sets {
                if *rtype == TYPE_SOA && (*name != *self.origin || rdatas.len() > 1) {
                    return Err(format!(
                        "{}: an SOA record is allowed only once, at the apex {origin_text}",
                        text()
                    ));
                }
                if matches!(*rtype, TYPE_CNAME | TYPE_DNAME) && rdatas.len() > 1 {
                    return Err(format!(
                        "{} has more than one {} record (RFC 2181 section 10.1, RFC 6672 section 2.4)",
                        text(),
                        if *rtype == TYPE_CNAME {
                            "CNAME"
                        } else {
                            "DNAME"
                        }
                    ));
                }
            }
            let cname = sets.iter().any(|(t, _, _)| *t == TYPE_CNAME);
            // RFC 4035 section 2.5: RRSIG and NSEC may sit beside a CNAME.
            if cname
                && sets
                    .iter()
                    .any(|(t, _, _)| !matches!(*t, TYPE_CNAME | TYPE_RRSIG | TYPE_NSEC))
            {
                return Err(format!(
                    "{} has a CNAME and other data (RFC 1034 section 3.6.2)",
                    text()
                ));
            }
            if cname && *name == *self.origin {
                return Err(format!(
                    "{} has a CNAME at the zone apex (the apex needs SOA and NS)",
                    text()
                ));
            }
            let node = Node {
                sets: sets
                    .into_iter()
                    .map(|(rtype, ttl, rdatas)| {
                        let mut data =
                            Vec::with_capacity(rdatas.iter().map(|r| r.len() + 2).sum::<usize>());
                        for r in rdatas {
                            data.extend_from_slice(&(r.len() as u16).to_be_bytes());
                            data.extend_from_slice(&r);
                        }
                        RRset {
                            rtype,
                            ttl,
                            data: data.into_boxed_slice(),
                        }
                    })
                    .collect(),
            };
            // Ancestors up to the apex exist, as empty non-terminals if nothing else.
            let mut up = wire::parent(&name);
            while let Some(p) = up {
                if p.len() < self.origin.len() || nodes.contains_key(p) {
                    break;
                }
                nodes.insert(p.into(), Node::default());
                up = wire::parent(p);
            }
            match nodes.entry(name) {
                Entry::Occupied(mut e) => *e.get_mut() = node,
                Entry::Vacant(e) => {
                    e.insert(node);
                }
            }
        }
        nodes.shrink_to_fit();
        // A DS belongs at a delegation (RFC 4035 section 2.4), never at the apex.
        if nodes[self.origin.as_slice()].get(TYPE_DS).is_some() {
            return Err(format!(
                "{origin_text} has a DS record at the apex; DS records belong in the parent zone"
            ));
        }
        Ok(Zone {
            origin: self.origin.into_boxed_slice(),
            nodes,
        })
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
