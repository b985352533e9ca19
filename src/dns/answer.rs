//! What we answer for one question: RFC 1034 section 4.3.2 over our zones, with wildcards as
//! RFC 4592 section 3.3.1 says, DNAME substitution (RFC 6672), CNAME chains whose rcode is
//! that of the last name (RFC 6604), negative answers with the SOA (RFC 2308) and referrals
//! at zone cuts. Managed names answer A/AAAA from the snapshot and exist like static names.
//! Pure: the same catalog, snapshot and question give the same reply.

use std::{borrow::Cow, collections::HashMap, net::IpAddr, sync::Arc};

use super::{
    dnssec::{ZoneSigner, signer::Signatures},
    wire::{
        self, RCODE_NOERROR, RCODE_NXDOMAIN, RCODE_REFUSED, RCODE_SERVFAIL, RCODE_YXDOMAIN, TYPE_A,
        TYPE_AAAA, TYPE_ANY, TYPE_CNAME, TYPE_DNAME, TYPE_DS, TYPE_MX, TYPE_NS, TYPE_SOA, TYPE_SRV,
    },
    zone::{Node, RRset, Zone},
};
use crate::{
    config::{RecordKind, RecordSpec},
    model::Region,
    snapshot::{Answer, Snapshot, pick_weighted},
};

/// The longest CNAME/DNAME chain followed inside one zone.
const MAX_CHAIN: usize = 16;

/// The snapshot key of a managed record.
pub type ManagedKey = (String, RecordKind);

/// A managed name's records (none: it only exists as an ancestor of managed names).
#[derive(Debug, Default)]
struct Managed {
    a: Option<ManagedKey>,
    aaaa: Option<ManagedKey>,
}

struct ZoneEntry {
    zone: Zone,
    /// The zone's signer, when it is signed.
    signer: Option<Arc<ZoneSigner>>,
    /// Managed names of this zone and their ancestors, lower-case wire form.
    managed: HashMap<Box<[u8]>, Managed>,
}

/// Every zone we serve, with the managed names inside each.
pub struct Catalog {
    zones: HashMap<Box<[u8]>, ZoneEntry>,
}

/// One question, as the answerer needs it.
#[derive(Debug, Clone, Copy)]
pub struct Question<'q> {
    /// Lower case, wire form.
    pub name: &'q [u8],
    pub qtype: u16,
    /// The client's region, for latency-steered records.
    pub region: Option<&'q Region>,
    /// A random number, for weighted records.
    pub roll: u32,
    /// Leave out the optional additional records (addresses of NS/MX/SRV targets).
    pub minimal: bool,
    /// The reply will be signed: say what a denial of existence must prove.
    pub dnssec: bool,
}

/// RDATA to send.
#[derive(Debug, Clone)]
pub enum Data<'a> {
    Stored(&'a RRset),
    Addresses(Vec<IpAddr>),
    One(Vec<u8>),
    /// A CNAME synthesized from a DNAME (RFC 6672 section 3.3): never signed.
    Synthesized(Vec<u8>),
    /// RRSIG RDATAs.
    Signatures(Signatures),
}

impl Data<'_> {
    /// Calls `f` with each RDATA in wire form.
    pub fn each(&self, mut f: impl FnMut(&[u8]) -> bool) -> bool {
        match self {
            Data::Stored(set) => set.rdatas().all(f),
            Data::Addresses(ips) => ips.iter().all(|ip| match ip {
                IpAddr::V4(v4) => f(&v4.octets()),
                IpAddr::V6(v6) => f(&v6.octets()),
            }),
            Data::One(rdata) | Data::Synthesized(rdata) => f(rdata),
            Data::Signatures(all) => all.iter().all(|r| f(r)),
        }
    }
}

/// One RRset of the reply.
#[derive(Debug, Clone)]
pub struct Set<'a> {
    /// None: the question's name, as asked.
    pub owner: Option<Cow<'a, [u8]>>,
    pub rtype: u16,
    pub ttl: u32,
    pub data: Data<'a>,
}

/// The reply to one question, before it is written.
#[derive(Debug, Default)]
pub struct Reply<'a> {
    pub rcode: u16,
    pub aa: bool,
    pub answer: Vec<Set<'a>>,
    pub authority: Vec<Set<'a>>,
    pub additional: Vec<Set<'a>>,
    /// The first this many additional sets must fit (glue of a referral), else TC.
    pub required_additional: usize,
    /// The managed record answered for the question's own name.
    pub managed: Option<&'a ManagedKey>,
    /// The reply depends on the client or on chance (latency, weighted): not to be replayed.
    pub varies: bool,
    /// The reply depends on the client's region (the ECS scope must say so).
    pub region_dependent: bool,
    /// What a signed reply must prove does not exist (with `Question::dnssec`).
    pub denial: Option<Denial>,
    /// The zone cut of a referral (lower case).
    pub referral: Option<&'a [u8]>,
}

/// A name, or a type at a name, that does not exist.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Denial {
    /// Lower case, wire form.
    pub name: Vec<u8>,
    /// The name does not exist at all (else: not with the type asked).
    pub nxdomain: bool,
    /// The types the name has (NODATA only).
    pub types: Vec<u16>,
}

impl Reply<'_> {
    fn with_rcode(rcode: u16, aa: bool) -> Self {
        Self {
            rcode,
            aa,
            ..Default::default()
        }
    }
}

/// The outcome of looking up one name of a chain.
enum Step<'a> {
    Found(Vec<Set<'a>>),
    Alias {
        cname: &'a RRset,
        target: &'a [u8],
    },
    Dname {
        owner: &'a [u8],
        dname: &'a RRset,
        target: Vec<u8>,
    },
    NoData,
    NxDomain,
    Referral {
        cut: &'a [u8],
        ns: &'a RRset,
    },
    NotReady,
    /// The DNAME's substitution would make a name longer than 255 bytes.
    TooLong {
        owner: &'a [u8],
        dname: &'a RRset,
    },
}

impl Catalog {
    /// The catalog of `zones` (each with its signer if signed), with the managed names of
    /// `records` (records outside every zone are left out: the configuration check reports
    /// them).
    pub fn new(zones: Vec<(Zone, Option<Arc<ZoneSigner>>)>, records: &[RecordSpec]) -> Self {
        let mut map: HashMap<Box<[u8]>, ZoneEntry> = zones
            .into_iter()
            .map(|(zone, signer)| {
                (
                    Box::from(zone.origin()),
                    ZoneEntry {
                        zone,
                        signer,
                        managed: HashMap::new(),
                    },
                )
            })
            .collect();
        for record in records {
            let Some(name) = wire::from_dotted(&record.name.to_ascii_lowercase()) else {
                continue;
            };
            let Some(origin) = Self::origin_for(&map, &name).map(Box::<[u8]>::from) else {
                continue;
            };
            let entry = map.get_mut(&origin).expect("found above");
            let managed = entry
                .managed
                .entry(name.clone().into_boxed_slice())
                .or_default();
            let key = Some((record.name.clone(), record.kind));
            match record.kind {
                RecordKind::A => managed.a = key,
                RecordKind::Aaaa => managed.aaaa = key,
            }
            let mut up = wire::parent(&name);
            while let Some(p) = up.filter(|p| p.len() > origin.len()) {
                entry.managed.entry(p.into()).or_default();
                up = wire::parent(p);
            }
        }
        Self { zones: map }
    }

    fn origin_for<'m>(map: &'m HashMap<Box<[u8]>, ZoneEntry>, name: &[u8]) -> Option<&'m [u8]> {
        wire::label_starts(name).find_map(|at| map.get_key_value(&name[at..]).map(|(k, _)| &**k))
    }

    fn entry_for(&self, name: &[u8]) -> Option<&ZoneEntry> {
        wire::label_starts(name).find_map(|at| self.zones.get(&name[at..]))
    }

    /// The zone that answers `qtype` at `name`: the DS of a zone we also serve the parent of
    /// is the parent's (RFC 4035 section 3.1.4.1).
    fn answering(&self, name: &[u8], qtype: u16) -> Option<&ZoneEntry> {
        let entry = self.entry_for(name)?;
        if qtype == TYPE_DS
            && entry.zone.origin() == name
            && let Some(parent) = wire::parent(name).and_then(|p| self.entry_for(p))
        {
            return Some(parent);
        }
        Some(entry)
    }

    /// The zone `name` (lower case) belongs to.
    pub fn zone_for(&self, name: &[u8]) -> Option<&Zone> {
        self.entry_for(name).map(|e| &e.zone)
    }

    /// The zone that answers `qtype` at `name` (lower case) and its signer, if it is signed.
    pub fn signed_zone_for(&self, name: &[u8], qtype: u16) -> Option<(&Zone, &ZoneSigner)> {
        let entry = self.answering(name, qtype)?;
        Some((&entry.zone, entry.signer.as_deref()?))
    }

    /// Every signed zone's signer.
    pub fn signers(&self) -> impl Iterator<Item = &Arc<ZoneSigner>> {
        self.zones.values().filter_map(|e| e.signer.as_ref())
    }

    /// The managed record of `kind` at `name` (lower case), if any.
    pub fn managed_key(&self, name: &[u8], kind: RecordKind) -> Option<&ManagedKey> {
        let m = self.entry_for(name)?.managed.get(name)?;
        match kind {
            RecordKind::A => m.a.as_ref(),
            RecordKind::Aaaa => m.aaaa.as_ref(),
        }
    }

    /// The reply to `q`: REFUSED for a name outside our zones.
    pub fn answer<'a>(&'a self, snapshot: &'a Snapshot, q: &Question<'_>) -> Reply<'a> {
        let Some(entry) = self.answering(q.name, q.qtype) else {
            return Reply::with_rcode(RCODE_REFUSED, false);
        };
        let mut reply = Reply::with_rcode(RCODE_NOERROR, true);
        let origin = entry.zone.origin();
        // The name being looked up (lower case): the question's, then each chain target's.
        let mut name: Cow<'_, [u8]> = Cow::Borrowed(q.name);
        // The owner of what is found at `name`: None for the question's name as asked.
        let mut owner: Option<Cow<'a, [u8]>> = None;
        let mut visited: Vec<Vec<u8>> = Vec::new();
        for link in 0..MAX_CHAIN {
            let step = entry.resolve(snapshot, &name, q, &mut reply);
            let next: Vec<u8> = match step {
                Step::Found(sets) => {
                    if link == 0 {
                        reply.managed = entry.managed_key_for(&name, q.qtype);
                    }
                    reply.answer.extend(sets.into_iter().map(|mut s| {
                        s.owner = owner.clone();
                        s
                    }));
                    break;
                }
                Step::Alias { cname, target } => {
                    reply.answer.push(Set {
                        owner: owner.clone(),
                        rtype: TYPE_CNAME,
                        ttl: cname.ttl,
                        data: Data::Stored(cname),
                    });
                    owner = Some(Cow::Borrowed(target));
                    wire::lower(target)
                }
                Step::Dname {
                    owner: dname_owner,
                    dname,
                    target,
                } => {
                    // A DNAME that maps a name below itself would apply again to its own
                    // result: it is given once (no record twice, RFC 2181 section 5), and the
                    // CNAME synthesized from it ends the answer (the resolver goes on).
                    let given = |s: &Set<'_>| {
                        s.rtype == TYPE_DNAME && s.owner.as_deref() == Some(dname_owner)
                    };
                    if reply.answer.iter().any(given) {
                        break;
                    }
                    reply.answer.push(dname_set(dname_owner, dname));
                    // The synthesized CNAME has the DNAME's TTL (RFC 6672 section 3.3).
                    reply.answer.push(Set {
                        owner: owner.clone(),
                        rtype: TYPE_CNAME,
                        ttl: dname.ttl,
                        data: Data::Synthesized(target.clone()),
                    });
                    if q.qtype == TYPE_CNAME {
                        // The synthesized CNAME is what was asked for.
                        break;
                    }
                    owner = Some(Cow::Owned(target.clone()));
                    wire::lower(&target)
                }
                Step::NoData => {
                    reply.authority.push(entry.negative_soa());
                    if q.dnssec {
                        reply.denial = Some(Denial {
                            types: entry.types_at(&name, q.qtype),
                            name: name.into_owned(),
                            nxdomain: false,
                        });
                    }
                    break;
                }
                Step::NxDomain => {
                    reply.rcode = RCODE_NXDOMAIN;
                    reply.authority.push(entry.negative_soa());
                    if q.dnssec {
                        reply.denial = Some(Denial {
                            name: name.into_owned(),
                            nxdomain: true,
                            types: Vec::new(),
                        });
                    }
                    break;
                }
                Step::TooLong {
                    owner: dname_owner,
                    dname,
                } => {
                    // RFC 6672 section 3.2: the DNAME goes in the answer, then YXDOMAIN.
                    reply.answer.push(dname_set(dname_owner, dname));
                    reply.rcode = RCODE_YXDOMAIN;
                    break;
                }
                Step::Referral { cut, ns } => {
                    // Not authoritative below the cut: NS in authority, glue in additional.
                    reply.aa = !reply.answer.is_empty();
                    reply.referral = Some(cut);
                    reply.authority.push(Set {
                        owner: Some(Cow::Borrowed(cut)),
                        rtype: TYPE_NS,
                        ttl: ns.ttl,
                        data: Data::Stored(ns),
                    });
                    entry.glue(snapshot, cut, ns, q, &mut reply);
                    break;
                }
                Step::NotReady => {
                    return Reply {
                        managed: reply.managed,
                        ..Reply::with_rcode(RCODE_SERVFAIL, false)
                    };
                }
            };
            // Follow the chain inside this zone only; the resolver takes it from there.
            visited.push(name.into_owned());
            if !wire::is_at_or_below(&next, origin) || visited.iter().any(|v| *v == *next) {
                break;
            }
            name = Cow::Owned(next);
        }
        if !q.minimal {
            entry.additional(snapshot, q, &mut reply);
        }
        reply
    }
}

/// The DNAME RRset at `owner`, for the answer.
fn dname_set<'a>(owner: &'a [u8], dname: &'a RRset) -> Set<'a> {
    Set {
        owner: Some(Cow::Borrowed(owner)),
        rtype: TYPE_DNAME,
        ttl: dname.ttl,
        data: Data::Stored(dname),
    }
}

impl ZoneEntry {
    fn negative_soa(&self) -> Set<'_> {
        let (ttl, rdata) = self.zone.negative_soa();
        Set {
            owner: Some(Cow::Borrowed(self.zone.origin())),
            rtype: TYPE_SOA,
            ttl,
            data: Data::One(rdata.to_vec()),
        }
    }

    /// The types at `name` (lower case) other than `qtype`: its own, or, where it does not
    /// exist, those of the wildcard it was answered from (RFC 4592 section 3.3.1).
    fn types_at(&self, name: &[u8], qtype: u16) -> Vec<u16> {
        let origin_len = self.zone.origin().len();
        let mut closest = name;
        while self.zone.node(closest).is_none() && !self.managed.contains_key(closest) {
            match wire::parent(closest) {
                Some(p) if p.len() >= origin_len => closest = p,
                _ => break,
            }
        }
        let mut types = Vec::new();
        let node = if closest.len() == name.len() {
            if let Some(m) = self.managed.get(name) {
                types.extend(m.a.as_ref().map(|_| TYPE_A));
                types.extend(m.aaaa.as_ref().map(|_| TYPE_AAAA));
            }
            self.zone.node(name)
        } else {
            self.zone.node(&[&[1, b'*'][..], closest].concat())
        };
        if let Some((_, node)) = node {
            types.extend(node.sets().iter().map(|s| s.rtype));
        }
        types.retain(|&t| t != qtype);
        types
    }

    fn managed_key_for(&self, name: &[u8], qtype: u16) -> Option<&ManagedKey> {
        let m = self.managed.get(name)?;
        match qtype {
            TYPE_A => m.a.as_ref(),
            TYPE_AAAA => m.aaaa.as_ref(),
            _ => None,
        }
    }

    /// One name of a chain: walk down from the apex, stopping at a zone cut or a DNAME above
    /// the name, or where the name stops existing (then a wildcard may apply).
    fn resolve<'a>(
        &'a self,
        snapshot: &'a Snapshot,
        name: &[u8],
        q: &Question<'_>,
        reply: &mut Reply<'a>,
    ) -> Step<'a> {
        let origin_len = self.zone.origin().len();
        // The offsets of the name's labels down to the apex (a name has at most 127 labels).
        let mut starts = [0usize; 128];
        let mut count = 0;
        for at in wire::label_starts(name).take_while(|&at| name.len() - at >= origin_len) {
            starts[count] = at;
            count += 1;
        }
        let mut closest: &[u8] = self.zone.origin();
        for (i, &at) in starts[..count].iter().enumerate().rev() {
            let suffix = &name[at..];
            let here = self.zone.node(suffix);
            let managed = self.managed.get(suffix);
            if here.is_none() && managed.is_none() {
                return self.wildcard(snapshot, closest, q, reply);
            }
            let is_apex = suffix.len() == origin_len;
            if let Some((key, node)) = here {
                if !is_apex
                    && let Some(ns) = node.get(TYPE_NS)
                    && !(i == 0 && q.qtype == TYPE_DS)
                {
                    return Step::Referral { cut: key, ns };
                }
                if i > 0
                    && let Some(dname) = node.get(TYPE_DNAME)
                {
                    let Some(target) = dname.first() else {
                        return Step::NoData;
                    };
                    let synthesized = [&name[..at], target].concat();
                    if synthesized.len() > wire::MAX_NAME {
                        return Step::TooLong { owner: key, dname };
                    }
                    return Step::Dname {
                        owner: key,
                        dname,
                        target: synthesized,
                    };
                }
                closest = key;
            }
        }
        let node = self.zone.node(name).map(|(_, n)| n);
        self.at_name(snapshot, node, self.managed.get(name), q, reply)
    }

    /// RFC 4592 section 3.3.1: the source of synthesis is `*.<closest encloser>`.
    fn wildcard<'a>(
        &'a self,
        snapshot: &'a Snapshot,
        closest: &[u8],
        q: &Question<'_>,
        reply: &mut Reply<'a>,
    ) -> Step<'a> {
        let source = [&[1, b'*'][..], closest].concat();
        match self.zone.node(&source) {
            Some((_, node)) => self.at_name(snapshot, Some(node), None, q, reply),
            None => Step::NxDomain,
        }
    }

    /// The data at a name that exists: managed addresses, else the zone's RRsets.
    fn at_name<'a>(
        &'a self,
        snapshot: &'a Snapshot,
        node: Option<&'a Node>,
        managed: Option<&'a Managed>,
        q: &Question<'_>,
        reply: &mut Reply<'a>,
    ) -> Step<'a> {
        let mut sets = Vec::new();
        if let Some(m) = managed {
            let wanted: &[(u16, &Option<ManagedKey>)] = match q.qtype {
                TYPE_A => &[(TYPE_A, &m.a)],
                TYPE_AAAA => &[(TYPE_AAAA, &m.aaaa)],
                TYPE_ANY => &[(TYPE_A, &m.a), (TYPE_AAAA, &m.aaaa)],
                _ => &[],
            };
            let mut managed_type = false;
            for (rtype, key) in wanted {
                let Some(key) = key else { continue };
                managed_type = true;
                let Some(record) = snapshot.records.get(key) else {
                    return Step::NotReady;
                };
                let ips = match &record.answer {
                    Answer::NotReady => return Step::NotReady,
                    Answer::Fixed(ips) => ips.clone(),
                    Answer::Weighted(choices) => {
                        reply.varies = true;
                        pick_weighted(choices, q.roll).into_iter().collect()
                    }
                    Answer::ByRegion { regions, default } => {
                        reply.varies = true;
                        reply.region_dependent = true;
                        q.region
                            .and_then(|r| regions.get(r))
                            .unwrap_or(default)
                            .clone()
                    }
                };
                if !ips.is_empty() {
                    sets.push(Set {
                        owner: None,
                        rtype: *rtype,
                        ttl: record.ttl,
                        data: Data::Addresses(ips),
                    });
                }
            }
            if managed_type && q.qtype != TYPE_ANY {
                return if sets.is_empty() {
                    Step::NoData
                } else {
                    Step::Found(sets)
                };
            }
        }
        if let Some(node) = node {
            if q.qtype == TYPE_ANY {
                sets.extend(node.sets().iter().map(stored));
            } else if let Some(cname) = node.get(TYPE_CNAME).filter(|_| q.qtype != TYPE_CNAME) {
                if let Some(target) = cname.first() {
                    return Step::Alias { cname, target };
                }
            } else if let Some(set) = node.get(q.qtype) {
                sets.push(stored(set));
            }
        }
        if q.qtype == TYPE_ANY {
            // One RRset (RFC 8482 section 4.1, as Knot and NSD answer over UDP and TCP):
            // the lowest type, managed addresses first.
            let first = sets
                .iter()
                .enumerate()
                .min_by_key(|(i, s)| (matches!(s.data, Data::Stored(_)), s.rtype, *i))
                .map(|(i, _)| i);
            sets = first.map(|i| sets.swap_remove(i)).into_iter().collect();
        }
        if sets.is_empty() {
            Step::NoData
        } else {
            Step::Found(sets)
        }
    }

    /// Addresses for a referral's name servers: glue at or below the cut (required), and
    /// other in-zone addresses (optional).
    fn glue<'a>(
        &'a self,
        snapshot: &'a Snapshot,
        cut: &[u8],
        ns: &'a RRset,
        q: &Question<'_>,
        reply: &mut Reply<'a>,
    ) {
        let mut required = Vec::new();
        let mut optional = Vec::new();
        let mut seen: Vec<Vec<u8>> = Vec::new();
        for target in ns.rdatas() {
            let lower = wire::lower(target);
            if seen.contains(&lower) {
                continue;
            }
            if wire::is_at_or_below(&lower, cut) {
                required.extend(self.addresses_of(snapshot, &lower, true, q, reply));
            } else if !q.minimal {
                optional.extend(self.addresses_of(snapshot, &lower, false, q, reply));
            }
            seen.push(lower);
        }
        reply.required_additional += required.len();
        let at = reply.required_additional - required.len();
        reply.additional.splice(at..at, required);
        reply.additional.extend(optional);
    }

    /// Addresses of NS, MX and SRV targets in the answer (RFC 1034 section 4.3.2 step 6).
    fn additional<'a>(&'a self, snapshot: &'a Snapshot, q: &Question<'_>, reply: &mut Reply<'a>) {
        let mut targets: Vec<Vec<u8>> = Vec::new();
        for set in &reply.answer {
            let Data::Stored(stored) = set.data else {
                continue;
            };
            for rdata in stored.rdatas() {
                let target = match set.rtype {
                    TYPE_NS => rdata,
                    TYPE_MX => rdata.get(2..).unwrap_or_default(),
                    TYPE_SRV => rdata.get(6..).unwrap_or_default(),
                    _ => continue,
                };
                let lower = wire::lower(target);
                if lower.len() > 1 && !targets.contains(&lower) {
                    targets.push(lower);
                }
            }
        }
        let already: Vec<Vec<u8>> = reply
            .additional
            .iter()
            .filter_map(|s| s.owner.as_deref().map(wire::lower))
            .collect();
        for target in targets.iter().filter(|t| !already.contains(t)) {
            let found = self.addresses_of(snapshot, target, false, q, reply);
            reply.additional.extend(found);
        }
    }

    /// The A and AAAA RRsets at `target` (lower case) in this zone: static or managed (only
    /// when decided); below a zone cut only if `glue`.
    fn addresses_of<'a>(
        &'a self,
        snapshot: &'a Snapshot,
        target: &[u8],
        glue: bool,
        q: &Question<'_>,
        reply: &mut Reply<'a>,
    ) -> Vec<Set<'a>> {
        if !wire::is_at_or_below(target, self.zone.origin())
            || (!glue && self.zone.cut_above(target).is_some())
        {
            return Vec::new();
        }
        let mut out = Vec::new();
        let mut question = *q;
        for rtype in [TYPE_A, TYPE_AAAA] {
            question.qtype = rtype;
            let node = self.zone.node(target);
            let managed = self.managed.get(target);
            if managed.is_some_and(|m| m.a.is_some() || m.aaaa.is_some())
                && let Step::Found(sets) = self.at_name(snapshot, None, managed, &question, reply)
            {
                out.extend(sets.into_iter().map(|mut s| {
                    s.owner = Some(Cow::Owned(target.to_vec()));
                    s
                }));
            }
            if let Some((key, node)) = node
                && let Some(set) = node.get(rtype)
            {
                out.push(Set {
                    owner: Some(Cow::Borrowed(key)),
                    ..stored(set)
                });
            }
        }
        out
    }
}

fn stored(set: &RRset) -> Set<'_> {
    Set {
        owner: None,
        rtype: set.rtype,
        ttl: set.ttl,
        data: Data::Stored(set),
    }
}
