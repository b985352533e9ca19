//! The canonical form of an RRset (RFC 4034 section 6, with RFC 6840 section 5.1): lower-case
//! owner and embedded names, RDATAs sorted and unique; and NSEC type bitmaps (RFC 4034
//! section 4.1.2).

use super::super::wire::{
    TYPE_CNAME, TYPE_DNAME, TYPE_MB, TYPE_MD, TYPE_MF, TYPE_MG, TYPE_MINFO, TYPE_MR, TYPE_MX,
    TYPE_NS, TYPE_PTR, TYPE_SOA, TYPE_SRV,
};

const TYPE_RP: u16 = 17;
const TYPE_AFSDB: u16 = 18;
const TYPE_RT: u16 = 21;
const TYPE_PX: u16 = 26;
const TYPE_NAPTR: u16 = 35;
const TYPE_KX: u16 = 36;

/// The end of the uncompressed name starting at `at`, if there is one.
fn name_end(rdata: &[u8], mut at: usize) -> Option<usize> {
    loop {
        let len = usize::from(*rdata.get(at)?);
        if len == 0 {
            return Some(at + 1);
        }
        if len > 63 {
            return None;
        }
        at += 1 + len;
    }
}

/// Lower-cases the name at `at`; the offset after it.
fn lower_name(rdata: &mut [u8], at: usize) -> Option<usize> {
    let end = name_end(rdata, at)?;
    // Label lengths are below 64, so only the letters change.
    rdata[at..end].make_ascii_lowercase();
    Some(end)
}

/// Skips a <character-string> at `at`.
fn string_end(rdata: &[u8], at: usize) -> Option<usize> {
    Some(at + 1 + usize::from(*rdata.get(at)?))
}

/// Lower-cases, in place, the names inside RDATA of the types RFC 4034 section 6.2 lists (as
/// RFC 6840 section 5.1 corrects it). RDATA that does not parse is left as it is (it was
/// checked when the zone was read).
fn lower_names(rtype: u16, r: &mut [u8]) -> Option<()> {
    match rtype {
        TYPE_NS | TYPE_MD | TYPE_MF | TYPE_CNAME | TYPE_MB | TYPE_MG | TYPE_MR | TYPE_PTR
        | TYPE_DNAME => {
            lower_name(r, 0)?;
        }
        TYPE_SOA | TYPE_MINFO | TYPE_RP => {
            let end = lower_name(r, 0)?;
            lower_name(r, end)?;
        }
        TYPE_MX | TYPE_AFSDB | TYPE_RT | TYPE_KX => {
            lower_name(r, 2)?;
        }
        TYPE_PX => {
            let end = lower_name(r, 2)?;
            lower_name(r, end)?;
        }
        TYPE_SRV => {
            lower_name(r, 6)?;
        }
        TYPE_NAPTR => {
            let mut at = 4;
            for _ in 0..3 {
                at = string_end(r, at)?;
            }
            lower_name(r, at)?;
        }
        _ => {}
    }
    Some(())
}

/// The RRset of `rdatas` in canonical form and order (RFC 4034 section 6.3), as it is signed:
/// for each RDATA, owner | type | class IN | original TTL | RDLENGTH | RDATA. `owner` is lower
/// case.
pub fn rrset(owner: &[u8], rtype: u16, ttl: u32, mut sorted: Vec<Vec<u8>>) -> Vec<u8> {
    for r in &mut sorted {
        let _ = lower_names(rtype, r);
    }
    sorted.sort();
    sorted.dedup();
    let mut out = Vec::with_capacity(sorted.iter().map(|r| owner.len() + 10 + r.len()).sum());
    for r in &sorted {
        out.extend_from_slice(owner);
        out.extend_from_slice(&rtype.to_be_bytes());
        out.extend_from_slice(&1u16.to_be_bytes());
        out.extend_from_slice(&ttl.to_be_bytes());
        out.extend_from_slice(&(r.len() as u16).to_be_bytes());
        out.extend_from_slice(r);
    }
    out
}

/// The NSEC type bitmap of `types` (any order, duplicates allowed).
pub fn type_bitmap(types: &[u16]) -> Vec<u8> {
    super::super::zonefile::type_bitmap(&mut types.to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dns::wire::from_dotted;

    /// `rdata` of `rtype` in canonical form.
    fn rdata(rtype: u16, rdata: &[u8]) -> Vec<u8> {
        let mut out = rdata.to_vec();
        let _ = lower_names(rtype, &mut out);
        out
    }

    #[test]
    fn names_inside_rdata_are_lower_cased_for_the_listed_types_only() {
        let mut mx = vec![0, 10];
        mx.extend(from_dotted("Mail.Example.COM").expect("name"));
        assert_eq!(
            rdata(TYPE_MX, &mx)[2..],
            from_dotted("mail.example.com").expect("name")[..]
        );
        // TXT is not a name: left alone.
        assert_eq!(rdata(16, b"\x03ABC"), b"\x03ABC");
        // NSEC's next name is not lowered (RFC 6840 section 5.1).
        let nsec = from_dotted("A.example").expect("name");
        assert_eq!(rdata(47, &nsec), nsec);
        // Malformed RDATA comes back as it was.
        assert_eq!(rdata(TYPE_SRV, b"\x00\x01"), b"\x00\x01");
    }

    #[test]
    fn rrsets_are_sorted_and_unique() {
        let owner = from_dotted("x.example").expect("name");
        let a = rrset(
            &owner,
            1,
            60,
            vec![vec![2u8, 0, 0, 1], vec![1, 0, 0, 1], vec![2, 0, 0, 1]],
        );
        let one = owner.len() + 10 + 4;
        assert_eq!(a.len(), 2 * one);
        assert_eq!(&a[one - 4..one], &[1, 0, 0, 1]);
    }

    #[test]
    fn type_bitmaps_match_rfc_4034_section_4_3() {
        // A MX RRSIG NSEC TYPE1234 (the RFC's example).
        let bitmap = type_bitmap(&[1, 15, 46, 47, 1234]);
        let expected: Vec<u8> = [
            &[0x00, 0x06, 0x40, 0x01, 0x00, 0x00, 0x00, 0x03][..],
            &[0x04, 0x1b],
            &[0; 26],
            &[0x20],
        ]
        .concat();
        assert_eq!(bitmap, expected);
    }
}
