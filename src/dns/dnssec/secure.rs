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
        self, RCODE_NOERROR, RCODE_NXDOMAIN, RCODE_REFUSED, TYPE_DS, TYPE_NS, TYPE_NSEC,
        TYPE_RRSIG, TYPE_SOA,
    },
    zone::Zone,
};

/// Signs `reply` to `qname` (lower case) / `qtype` at unix second `now`. `compact_ok`: the
/// query set the CO flag (RFC 9824 section 4), so a name that does not exist keeps its
/// NXDOMAIN. A question for the RRSIG type is refused (as Knot does: signatures travel with
/// what they cover); one for NSEC gets the NSEC at the name as its answer.
pub fn secure<'a>(
    zone: &'a Zone,
    signer: &ZoneSigner,
    reply: &mut Reply<'a>,
    (qname, qtype): (&[u8], u16),
    compact_ok: bool,
    now: u64,
) -> Work {
    if qtype == TYPE_RRSIG {
        *reply = Reply {
            rcode: RCODE_REFUSED,
            ..Reply::default()
        };
        return Work::default();
    }
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
        let nsec = signing.nsec(&denial.name, &denial.types, denial.nxdomain, negative_ttl);
        if qtype == TYPE_NSEC && denial.name == qname {
            // The NSEC asked for: the answer, without the SOA.
            reply.authority.clear();
            reply.answer.extend(nsec);
            reply.rcode = RCODE_NOERROR;
        } else {
            reply.authority.extend(nsec);
            if denial.nxdomain && reply.rcode == RCODE_NXDOMAIN && !compact_ok {
                reply.rcode = RCODE_NOERROR;
            }
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
                rdatas,
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
            vec![rdata.clone()],
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

#[cfg(test)]
mod tests {
    use std::{path::Path, sync::Arc};

    use super::*;
    use crate::{
        config::DnssecSettings,
        dns::{
            answer::{Catalog, Question},
            dnssec::{Algorithm, KeyState, Role, ZoneKey, keys},
            wire::{RCODE_NXDOMAIN, from_dotted},
            zones::parse_zone,
        },
        snapshot::Snapshot,
    };

    const PARENT: &str = "$TTL 300\n@ SOA ns h 1 2 3 4 60\n@ NS ns\nns A 192.0.2.1\nchild NS ns.child\nns.child A 192.0.2.2\n*.w A 192.0.2.3\n";
    const CHILD: &str = "$TTL 300\n@ SOA ns h 1 2 3 4 60\n@ NS ns\nns A 192.0.2.2\n";

    fn signed(
        origin: &str,
        text: &str,
        dir: &Path,
    ) -> (crate::dns::zone::Zone, Option<Arc<ZoneSigner>>) {
        let file = dir.join(format!("{origin}.pem"));
        std::fs::write(&file, keys::generate(Algorithm::Ed25519).expect("key")).expect("write");
        let key =
            ZoneKey::load(&file, Role::Csk, KeyState::Active, Algorithm::Ed25519).expect("key");
        let zone = parse_zone(Path::new(&format!("{origin}.zone")), text).expect("zone");
        let settings = DnssecSettings {
            zone: origin.to_string(),
            origin: from_dotted(origin).expect("name"),
            algorithm: Algorithm::Ed25519,
            keys: vec![crate::config::DnssecKeySettings {
                role: key.role,
                state: key.state,
                file,
                key: Some(Arc::new(key)),
            }],
            signature_validity: std::time::Duration::from_secs(14 * 86_400),
            signature_refresh: std::time::Duration::from_secs(7 * 86_400),
        };
        (zone.zone, Some(Arc::new(ZoneSigner::new(&settings))))
    }

    fn ask<'a>(
        catalog: &'a Catalog,
        snapshot: &'a Snapshot,
        name: &'a [u8],
        qtype: u16,
    ) -> (Reply<'a>, Work) {
        let q = Question {
            name,
            qtype,
            region: None,
            roll: 0,
            minimal: true,
            dnssec: true,
        };
        let mut reply = catalog.answer(snapshot, &q);
        let (zone, signer) = catalog.signed_zone_for(name, qtype).expect("signed");
        let work = secure(
            zone,
            signer,
            &mut reply,
            (name, qtype),
            false,
            1_800_000_000,
        );
        (reply, work)
    }

    fn types(sets: &[Set<'_>]) -> Vec<u16> {
        sets.iter().map(|s| s.rtype).collect()
    }

    #[test]
    fn signed_replies_carry_what_validation_needs() {
        let dir = tempfile::tempdir().expect("tempdir");
        let catalog = Catalog::new(
            vec![
                signed("example.com", PARENT, dir.path()),
                signed("child.example.com", CHILD, dir.path()),
            ],
            &[],
        );
        let snapshot = Snapshot::default();
        let name = |text: &str| from_dotted(text).expect("name");

        // A name that does not exist: NOERROR, SOA + NSEC (NXNAME), each signed.
        let nope = name("nope.example.com");
        let (reply, work) = ask(&catalog, &snapshot, &nope, wire::TYPE_A);
        assert_eq!(reply.rcode, RCODE_NOERROR);
        assert_eq!(
            types(&reply.authority),
            [TYPE_SOA, TYPE_RRSIG, TYPE_NSEC, TYPE_RRSIG]
        );
        let Data::One(nsec) = &reply.authority[2].data else {
            panic!("NSEC data")
        };
        let mut expected = vec![1, 0];
        expected.extend_from_slice(&nope);
        expected.extend(type_bitmap(&[TYPE_RRSIG, TYPE_NSEC, TYPE_NXNAME]));
        assert_eq!(*nsec, expected);
        assert_eq!(work.signed, 2);

        // Asked again: the SOA's signature comes from the cache, the denial is made again.
        let (_, work) = ask(&catalog, &snapshot, &nope, wire::TYPE_A);
        assert_eq!((work.signed, work.hits), (1, 1));

        // A wildcard's missing type: the NSEC lists the wildcard's types.
        let wild = name("x.w.example.com");
        let (reply, _) = ask(&catalog, &snapshot, &wild, wire::TYPE_MX);
        let Data::One(nsec) = &reply.authority[2].data else {
            panic!("NSEC data")
        };
        assert!(nsec.ends_with(&type_bitmap(&[wire::TYPE_A, TYPE_RRSIG, TYPE_NSEC])));

        // The DS of a child we also serve is the parent's: a signed NODATA from the parent.
        let child = name("child.example.com");
        let (reply, _) = ask(&catalog, &snapshot, &child, TYPE_DS);
        assert_eq!(reply.rcode, RCODE_NOERROR);
        assert!(reply.aa);
        let Data::One(nsec) = &reply.authority[2].data else {
            panic!("NSEC data")
        };
        assert!(nsec.ends_with(&type_bitmap(&[TYPE_NS, TYPE_RRSIG, TYPE_NSEC])));
        let Data::Signatures(rrsigs) = &reply.authority[3].data else {
            panic!("RRSIG data")
        };
        // Signed by the parent (signer name at offset 18).
        assert_eq!(&rrsigs[0][18..18 + 13], name("example.com").as_slice());
        // Any other question at the child's apex is the child's.
        let (reply, _) = ask(&catalog, &snapshot, &child, wire::TYPE_SOA);
        assert_eq!(types(&reply.answer), [TYPE_SOA, TYPE_RRSIG]);
    }

    #[test]
    fn compact_ok_keeps_nxdomain() {
        let dir = tempfile::tempdir().expect("tempdir");
        let catalog = Catalog::new(vec![signed("example.com", PARENT, dir.path())], &[]);
        let snapshot = Snapshot::default();
        let nope = from_dotted("nope.example.com").expect("name");
        let q = Question {
            name: &nope,
            qtype: wire::TYPE_A,
            region: None,
            roll: 0,
            minimal: true,
            dnssec: true,
        };
        let mut reply = catalog.answer(&snapshot, &q);
        let (zone, signer) = catalog
            .signed_zone_for(&nope, wire::TYPE_A)
            .expect("signed");
        secure(
            zone,
            signer,
            &mut reply,
            (&nope, wire::TYPE_A),
            true,
            1_800_000_000,
        );
        assert_eq!(reply.rcode, RCODE_NXDOMAIN);
        assert!(types(&reply.authority).contains(&TYPE_NSEC));
    }
}
