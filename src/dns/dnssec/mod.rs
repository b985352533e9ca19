//! Online DNSSEC signing: every answer to a DO query from a signed zone carries RRSIGs made
//! with the zone's keys when it is answered, denial of existence by compact answers (RFC 9824),
//! signatures cached per RRset and refreshed well before they expire.
//!
//! `keys` reads the key files; `canonical` is the form RRsets are signed in; `signer` makes and
//! caches signatures (one [`ZoneSigner`] per signed zone); `secure` adds what a reply needs to
//! validate.

pub mod canonical;
pub mod keys;
pub mod secure;
pub mod signer;

use std::{path::Path, sync::Arc};

pub use keys::{Algorithm, KeyState, Role, ZoneKey};
pub use signer::ZoneSigner;

use super::{
    wire::{self, TYPE_NSEC, TYPE_RRSIG},
    zone::ZoneBuilder,
    zones::ZoneFile,
};
use crate::config::DnssecSettings;

pub const TYPE_DNSKEY: u16 = 48;
pub const TYPE_CDS: u16 = 59;
pub const TYPE_CDNSKEY: u16 = 60;
pub const TYPE_NSEC3: u16 = 50;
pub const TYPE_NSEC3PARAM: u16 = 51;
/// RFC 9824: in the bitmap of a compact denial, the name does not exist.
pub const TYPE_NXNAME: u16 = 128;

/// True for the apex key sets, which key-signing keys sign.
pub fn apex_key_type(rtype: u16) -> bool {
    matches!(rtype, TYPE_DNSKEY | TYPE_CDS | TYPE_CDNSKEY)
}

/// `vantage dnssec keygen`: writes a new private key of `algorithm` to `out` (never replacing
/// a file; readable by its owner only); returns what to print.
pub fn keygen_file(algorithm: &str, out: &Path) -> Result<String, String> {
    let algorithm = Algorithm::parse(algorithm).ok_or_else(|| {
        format!(
            "{algorithm:?} is not an algorithm we sign with; use one of: {}",
            Algorithm::NAMES.join(", ")
        )
    })?;
    let pem = keys::generate(algorithm)?;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options
        .open(out)
        .map_err(|e| format!("cannot create {}: {e}", out.display()))?;
    std::io::Write::write_all(&mut file, pem.as_bytes())
        .map_err(|e| format!("cannot write {}: {e}", out.display()))?;
    let key = ZoneKey::load(out, Role::Csk, KeyState::Active, algorithm)?;
    Ok(format!(
        "# {} key, tag {} as a CSK or KSK ({} as a ZSK). Name it in the zone's settings:\n\
         #   [dns.dnssec.\"example.com\"]\n\
         #   algorithm = \"{}\"\n\
         #   keys = [{{ file = {:?} }}]   # role = \"csk\" (default), \"ksk\" or \"zsk\"\n\
         # then give the parent its DS: vantage dnssec ds --config FILE example.com\n\
         DNSKEY {}\n",
        algorithm.name(),
        key.tag,
        keys::key_tag(&[&[1, 0][..], &key.dnskey[2..]].concat()),
        algorithm.name(),
        out.display().to_string(),
        keys::dnskey_text(&key.dnskey),
    ))
}

/// `vantage dnssec ds`: the DS and DNSKEY records of `zone`'s key-signing keys, as the parent
/// (or the registrar) takes them.
pub fn ds_records(config: &Path, zone: &str) -> Result<String, String> {
    let settings = crate::config::Settings::load(config).map_err(|e| e.to_string())?;
    let wanted = wire::from_dotted(&zone.to_ascii_lowercase())
        .ok_or_else(|| format!("{zone:?} is not a DNS name"))?;
    let signed = settings
        .dns
        .dnssec
        .iter()
        .find(|s| s.origin == wanted)
        .ok_or_else(|| {
            let known: Vec<&str> = settings
                .dns
                .dnssec
                .iter()
                .map(|s| s.zone.as_str())
                .collect();
            format!(
                "{}: no [dns.dnssec.\"{zone}\"] (signed zones: {})",
                config.display(),
                if known.is_empty() {
                    "none".to_string()
                } else {
                    known.join(", ")
                }
            )
        })?;
    let name = wire::to_text(&signed.origin);
    let mut out = String::new();
    for key in &signed.keys {
        let key = ZoneKey::load(&key.file, key.role, key.state, signed.algorithm)?;
        if !key.role.entry_point() {
            continue;
        }
        out.push_str(&format!(
            "{name} IN DS {}\n",
            keys::ds_text(&keys::ds(&signed.origin, &key.dnskey, key.algorithm))
        ));
        out.push_str(&format!(
            "; from {name} IN DNSKEY {} ; key tag {}, {}\n",
            keys::dnskey_text(&key.dnskey),
            key.tag,
            key.file.display()
        ));
    }
    Ok(out)
}

/// Reads the keys of every zone `settings` signs, adds their DNSKEY, CDS and CDNSKEY sets to
/// the zone and gives it its signer. Every problem names the zone, the file or the key.
pub fn attach(settings: &[DnssecSettings], zones: &mut [ZoneFile]) -> Result<(), Vec<String>> {
    let mut problems = Vec::new();
    for signed in settings {
        let Some(zone) = zones
            .iter_mut()
            .find(|z| z.zone.origin() == signed.origin.as_slice())
        else {
            problems.push(format!(
                "dns.dnssec.\"{}\": there is no zone file for this zone in the zones directory",
                signed.zone
            ));
            continue;
        };
        match sign_zone(signed, zone) {
            Ok(()) => {}
            Err(mut more) => problems.append(&mut more),
        }
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(problems)
    }
}

fn sign_zone(signed: &DnssecSettings, file: &mut ZoneFile) -> Result<(), Vec<String>> {
    let mut problems = Vec::new();
    let mut keys = Vec::new();
    for (i, key) in signed.keys.iter().enumerate() {
        match ZoneKey::load(&key.file, key.role, key.state, signed.algorithm) {
            Ok(k) => keys.push(k),
            Err(e) => problems.push(format!("dns.dnssec.\"{}\".keys[{i}]: {e}", signed.zone)),
        }
    }
    for (owner, set) in file.zone.rrsets() {
        if matches!(
            set.rtype,
            TYPE_RRSIG
                | TYPE_NSEC
                | TYPE_NSEC3
                | TYPE_NSEC3PARAM
                | TYPE_DNSKEY
                | TYPE_CDS
                | TYPE_CDNSKEY
        ) {
            problems.push(format!(
                "{}: {} has a {} record, but vantage signs this zone online (dns.dnssec.\"{}\") and \
                 makes those itself; remove it from the file",
                file.path.display(),
                wire::to_text(owner),
                super::zonefile::type_name(set.rtype),
                signed.zone
            ));
        }
    }
    if !problems.is_empty() {
        return Err(problems);
    }
    let origin = file.zone.origin().to_vec();
    let ttl = file
        .zone
        .apex()
        .get(wire::TYPE_SOA)
        .map_or(3600, |soa| soa.ttl);
    let mut builder = ZoneBuilder::new(&origin);
    builder.reserve(file.zone.record_count() + 3 * keys.len());
    let mut add = |owner: &[u8], rtype: u16, ttl: u32, rdata: &[u8]| {
        if let Err(e) = builder.add(owner, rtype, ttl, rdata) {
            problems.push(format!("{}: {e}", file.path.display()));
        }
    };
    for (owner, set) in file.zone.rrsets() {
        for rdata in set.rdatas() {
            add(owner, set.rtype, set.ttl, rdata);
        }
    }
    for key in &keys {
        add(&origin, TYPE_DNSKEY, ttl, &key.dnskey);
        // The DS set the parent should hold (RFC 7344): every key-signing key listed.
        if key.role.entry_point() {
            add(&origin, TYPE_CDNSKEY, ttl, &key.dnskey);
            add(
                &origin,
                TYPE_CDS,
                ttl,
                &keys::ds(&origin, &key.dnskey, key.algorithm),
            );
        }
    }
    let zone = builder
        .finish()
        .map_err(|e| vec![format!("{}: {e}", file.path.display())])?;
    if !problems.is_empty() {
        return Err(problems);
    }
    file.zone = zone;
    file.signer = Some(Arc::new(ZoneSigner::new(signed, keys)));
    Ok(())
}
