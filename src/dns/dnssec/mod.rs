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

use std::path::Path;

pub use keys::{Algorithm, KeyState, Role, ZoneKey};
pub use signer::ZoneSigner;

use super::wire;

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
    // Every key was read (and checked) with the configuration.
    for key in signed.keys.iter().filter_map(|k| k.key.as_deref()) {
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
