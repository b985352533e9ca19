//! What a reply from a signed zone needs to validate (RFC 4035 section 3.1): an RRSIG set after
//! every authoritative RRset, the DS (or the proof there is none) of a referral, and denial of
//! existence by compact answers (RFC 9824): one NSEC at the name itself, signed as answered.
//!
//! Why compact answers and not RFC 4470's minimally covering NSEC pairs: one NSEC and one
//! signature per negative answer instead of up to two of each, the same shape for NXDOMAIN,
//! NODATA, empty non-terminals and wildcards, and nothing to walk the zone with.

use std::borrow::Cow;

use super::{
    TYPE_NXNAME,
    canonical::type_bitmap,
    signer::{Work, ZoneSigner},
};
use crate::dns::{
    answer::{Data, Reply, Set},
    wire::{
        self, RCODE_NOERROR, RCODE_NXDOMAIN, TYPE_DS, TYPE_NS, TYPE_NSEC, TYPE_RRSIG, TYPE_SOA,
    },
    zone::Zone,
};

/// Signs `reply` for `qname` (lower case) at unix second `now`. `compact_ok`: the query set
/// the CO flag (RFC 9824 section 4), so a name that does not exist keeps its NXDOMAIN.
pub fn secure<'a>(
    zone: &'a Zone,
    signer: &ZoneSigner,
    reply: &mut Reply<'a>,
    qname: &[u8],
    compact_ok: bool,
    now: u64,
) -> Work {
    let mut signing = Signing {
        signer,
        qname,
        soa_ttl: zone.apex().get(TYPE_SOA).map_or(0, |s| s.ttl),
        work: Work {
            now,
            ..Work::default()
        },
    };
    signing.sets(&mut reply.answer, false);
    // The NS of a referral belongs to the child: not signed here.
    signing.sets(&mut reply.authority, reply.referral.is_some());
    let negative_ttl = zone.negative_soa().0;
    if let Some(cut) = reply.referral {
        let node = zone.node(cut).map(|(_, n)| n);
        match node.and_then(|n| n.get(TYPE_DS)) {
            Some(ds) => {
                let mut sets = vec![Set {
                    owner: Some(Cow::Owned(cut.to_vec())),
                    rtype: TYPE_DS,
                    ttl: ds.ttl,
                    data: Data::Stored(ds),
                }];
                signing.sets(&mut sets, false);
                reply.authority.append(&mut sets);
            }
            None => {
                // An insecure delegation: the NSEC at the cut says there is no DS.
                let types: Vec<u16> = node
                    .map(|n| n.sets().iter().map(|s| s.rtype).collect())
                    .unwrap_or_default();
                reply
                    .authority
                    .extend(signing.nsec(cut, &types, false, negative_ttl));
            }
        }
    }
    if let Some(denial) = &reply.denial {
        reply.authority.extend(signing.nsec(
            &denial.name,
            &denial.types,
            denial.nxdomain,
            negative_ttl,
        ));
        if denial.nxdomain && reply.rcode == RCODE_NXDOMAIN && !compact_ok {
            reply.rcode = RCODE_NOERROR;
        }
    }
    signing.work
}

struct Signing<'s> {
    signer: &'s ZoneSigner,
    qname: &'s [u8],
    /// The SOA's own TTL: the SOA of a negative answer is served with the negative TTL
    /// (RFC 2308), but signed with its own.
    soa_ttl: u32,
    work: Work,
}

impl Signing<'_> {
    /// Puts the RRSIG set after every RRset of `sets` that is ours to sign.
    fn sets<'a>(&mut self, sets: &mut Vec<Set<'a>>, skip_ns: bool) {
        let mut out = Vec::with_capacity(sets.len() * 2);
        for set in sets.drain(..) {
            let unsigned = matches!(set.data, Data::Synthesized(_) | Data::Signatures(_))
                || set.rtype == TYPE_RRSIG
                || (skip_ns && set.rtype == TYPE_NS);
            if unsigned {
                out.push(set);
                continue;
            }
            let owner = set
                .owner
                .as_deref()
                .map_or(Cow::Borrowed(self.qname), |o| Cow::Owned(wire::lower(o)));
            let original_ttl = if set.rtype == TYPE_SOA {
                self.soa_ttl
            } else {
                set.ttl
            };
            let mut rdatas = Vec::new();
            set.data.each(|r| {
                rdatas.push(r.to_vec());
                true
            });
            let signatures = self.signer.sign(
                &owner,
                set.rtype,
                original_ttl,
                rdatas.iter().map(Vec::as_slice),
                true,
                &mut self.work,
            );
            let rrsig = Set {
                owner: set.owner.clone(),
                rtype: TYPE_RRSIG,
                ttl: set.ttl,
                data: Data::Signatures(signatures),
            };
            out.push(set);
            out.push(rrsig);
        }
        *sets = out;
    }

    /// The compact-answer NSEC at `name` (RFC 9824 section 3): the next name is `\000.name`, so it
    /// covers no other name; the bitmap lists the name's types, or NXNAME when it does not exist.
    fn nsec(&mut self, name: &[u8], types: &[u16], nxdomain: bool, ttl: u32) -> [Set<'static>; 2] {
        let mut rdata = Vec::with_capacity(name.len() + 2 + 40);
        if name.len() + 2 <= wire::MAX_NAME {
            rdata.extend_from_slice(&[1, 0]);
        }
        rdata.extend_from_slice(name);
        let mut all: Vec<u16> = if nxdomain {
            vec![TYPE_NXNAME]
        } else {
            types.to_vec()
        };
        all.extend([TYPE_RRSIG, TYPE_NSEC]);
        rdata.extend_from_slice(&type_bitmap(&all));
        // A name that does not exist is asked about once; its signature is not worth keeping.
        let signatures = self.signer.sign(
            name,
            TYPE_NSEC,
            ttl,
            std::iter::once(rdata.as_slice()),
            !nxdomain,
            &mut self.work,
        );
        let owner = Some(Cow::Owned(name.to_vec()));
        [
            Set {
                owner: owner.clone(),
                rtype: TYPE_NSEC,
                ttl,
                data: Data::One(rdata),
            },
            Set {
                owner,
                rtype: TYPE_RRSIG,
                ttl,
                data: Data::Signatures(signatures),
            },
        ]
    }
}
