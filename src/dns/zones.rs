//! Static zones: RFC 1035 zone files from the zones directory, read by `zonefile` into
//! `zone` stores; a zone signed online (`dns.dnssec`) gets its keys, its DNSKEY, CDS and CDNSKEY
//! sets and its signer here.
//!
//! A file named `<origin>.zone` holds the zone `<origin>.`. Errors name the file and the line.

use std::path::{Path, PathBuf};

use super::{
    dnssec, wire,
    zone::{Zone, ZoneBuilder},
    zonefile,
};

/// A loaded zone file.
pub struct ZoneFile {
    /// The zone's name in presentation form ("example.com.").
    pub origin: String,
    pub path: PathBuf,
    pub zone: Zone,
    /// Its signer, once `sign` gave it one (`dns.dnssec`).
    pub signer: Option<std::sync::Arc<super::dnssec::ZoneSigner>>,
}

impl ZoneFile {
    /// True if `name` (lower case wire form) is at or below this zone's origin.
    pub fn contains(&self, name: &[u8]) -> bool {
        wire::is_at_or_below(name, self.zone.origin())
    }

    /// Record types present at `name` (lower case wire form) in this file.
    pub fn types_at(&self, name: &[u8]) -> Vec<u16> {
        self.zone
            .node(name)
            .map(|(_, n)| n.sets().iter().map(|s| s.rtype).collect())
            .unwrap_or_default()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ZoneError {
    #[error("{dir}: cannot read zones directory: {source}")]
    Dir { dir: String, source: std::io::Error },
    #[error("{file}: cannot read: {source}")]
    Read {
        file: String,
        source: std::io::Error,
    },
    #[error("{file}: the file name must be <zone name>.zone (e.g. example.com.zone)")]
    Name { file: String },
    #[error("{file}:{line}: {message}")]
    Parse {
        file: String,
        line: usize,
        message: String,
    },
    #[error("{file}: {message}")]
    Content { file: String, message: String },
}

/// Loads every `*.zone` file in `dir`, reporting every bad file.
pub fn load_dir(dir: &Path) -> Result<Vec<ZoneFile>, Vec<ZoneError>> {
    let entries = std::fs::read_dir(dir).map_err(|source| {
        vec![ZoneError::Dir {
            dir: dir.display().to_string(),
            source,
        }]
    })?;
    let mut paths: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "zone"))
        .collect();
    paths.sort();
    let mut zones = Vec::new();
    let mut errors = Vec::new();
    for path in paths {
        // The file's text is dropped before the zone is built (a large zone's peak memory).
        let loaded = std::fs::read(&path)
            .map_err(|source| {
                vec![ZoneError::Read {
                    file: path.display().to_string(),
                    source,
                }]
            })
            .and_then(|text| {
                let (builder, mut problems) = read_zone(&path, &text);
                // The zone's own rules too (a CNAME beside other data, no SOA), also when
                // some records could not be read: every problem of the file in one pass.
                match builder.map(|b| build_zone(&path, b)) {
                    Some(Ok(zone)) if problems.is_empty() => return Ok(zone),
                    Some(Err(e)) => problems.push(e),
                    _ => {}
                }
                Err(problems)
            });
        match loaded {
            Ok(zone) => {
                if let Some(other) = zones.iter().find(|z: &&ZoneFile| z.origin == zone.origin) {
                    errors.push(ZoneError::Content {
                        file: zone.path.display().to_string(),
                        message: format!(
                            "zone {} is already loaded from {}",
                            zone.origin,
                            other.path.display()
                        ),
                    });
                } else {
                    zones.push(zone);
                }
            }
            Err(e) => errors.extend(e),
        }
    }
    if errors.is_empty() {
        Ok(zones)
    } else {
        Err(errors)
    }
}

/// Parses one zone file's text; the origin comes from the file name. `$INCLUDE` may read
/// files of the file's own directory (the zones directory) only.
pub fn parse_zone(path: &Path, text: &str) -> Result<ZoneFile, ZoneError> {
    parse_zone_bytes(path, text.as_bytes())
}

/// As [`parse_zone`], for text that need not be UTF-8 (zone files may hold any byte).
pub fn parse_zone_bytes(path: &Path, text: &[u8]) -> Result<ZoneFile, ZoneError> {
    match read_zone(path, text) {
        (Some(builder), problems) if problems.is_empty() => build_zone(path, builder),
        (_, mut problems) => Err(problems.swap_remove(0)),
    }
}

/// Reads every record of a zone file it can, and every problem in it (no builder: the file's
/// name names no zone).
fn read_zone(path: &Path, text: &[u8]) -> (Option<ZoneBuilder>, Vec<ZoneError>) {
    let file = path.display().to_string();
    let origin = path
        .file_stem()
        .and_then(|s| s.to_str())
        .map(|s| s.trim_end_matches('.'))
        .filter(|s| !s.is_empty())
        .and_then(|s| zonefile_name(s.as_bytes()))
        .ok_or_else(|| ZoneError::Name { file: file.clone() });
    let origin = match origin {
        Ok(origin) => origin,
        Err(e) => return (None, vec![e]),
    };
    let root = path.parent().unwrap_or(Path::new("."));
    let mut builder = ZoneBuilder::new(&origin);
    // About one record per line.
    builder.reserve(text.iter().filter(|&&b| b == b'\n').count());
    let problems = zonefile::read(path, text, &origin, root, &mut |record| {
        builder.add(record.owner, record.rtype, record.ttl, record.rdata)
    })
    .err()
    .unwrap_or_default()
    .into_iter()
    .map(|e| ZoneError::Parse {
        file: e.file.display().to_string(),
        line: e.line,
        message: e.message,
    })
    .collect();
    (Some(builder), problems)
}

/// Checks and freezes the records read from `path`.
fn build_zone(path: &Path, builder: ZoneBuilder) -> Result<ZoneFile, ZoneError> {
    let zone = builder.finish().map_err(|message| ZoneError::Content {
        file: path.display().to_string(),
        message,
    })?;
    Ok(ZoneFile {
        origin: wire::to_text(zone.origin()),
        path: path.to_path_buf(),
        zone,
        signer: None,
    })
}

/// The zone named by a file name ("example.com" from "example.com.zone"), escapes allowed.
fn zonefile_name(stem: &[u8]) -> Option<Vec<u8>> {
    let mut text = stem.to_vec();
    text.push(b'.');
    zonefile::absolute_name(&text)
}

/// Reads the keys of every zone `settings` signs, adds their DNSKEY, CDS and CDNSKEY sets to
/// the zone and gives it its signer. Every problem names the zone, the file or the key.
pub fn sign(
    settings: &[crate::config::DnssecSettings],
    zones: &mut [ZoneFile],
) -> Result<(), Vec<String>> {
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

fn sign_zone(
    signed: &crate::config::DnssecSettings,
    file: &mut ZoneFile,
) -> Result<(), Vec<String>> {
    let mut problems = Vec::new();
    // Read and checked with the configuration.
    let keys: Vec<&dnssec::ZoneKey> = signed
        .keys
        .iter()
        .filter_map(|k| k.key.as_deref())
        .collect();
    for (owner, set) in file.zone.rrsets() {
        if matches!(
            set.rtype,
            wire::TYPE_RRSIG
                | wire::TYPE_NSEC
                | dnssec::TYPE_NSEC3
                | dnssec::TYPE_NSEC3PARAM
                | dnssec::TYPE_DNSKEY
                | dnssec::TYPE_CDS
                | dnssec::TYPE_CDNSKEY
        ) {
            problems.push(format!(
                "{}: {} has a {} record, but vantage signs this zone online (dns.dnssec.\"{}\") and \
                 makes those itself; remove it from the file",
                file.path.display(),
                wire::to_text(owner),
                zonefile::type_name(set.rtype),
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
        add(&origin, dnssec::TYPE_DNSKEY, ttl, &key.dnskey);
        // The DS set the parent should hold (RFC 7344): every key-signing key listed.
        if key.role.entry_point() {
            add(&origin, dnssec::TYPE_CDNSKEY, ttl, &key.dnskey);
            add(
                &origin,
                dnssec::TYPE_CDS,
                ttl,
                &dnssec::keys::ds(&origin, &key.dnskey, key.algorithm),
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
    file.signer = Some(std::sync::Arc::new(dnssec::ZoneSigner::new(signed)));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const ZONE: &str = "$TTL 300\n\
@ IN SOA ns1.example.com. admin.example.com. (\n  1 ; serial\n  3600 600 86400 60 )\n\
@ IN NS ns1.example.com.\n\
ns1 IN A 192.0.2.53\n\
www IN A 192.0.2.1\n";

    #[test]
    fn parses_a_good_zone() {
        let z = parse_zone(Path::new("zones/example.com.zone"), ZONE).expect("valid");
        assert_eq!(z.origin, "example.com.");
        assert!(z.contains(&wire::from_dotted("www.example.com.").expect("name")));
    }

    #[test]
    fn a_bad_line_is_named() {
        let bad = format!("{ZONE}mail IN MX ten mail.example.com.\nother IN A 192.0.2.9\n");
        let err = parse_zone(Path::new("zones/example.com.zone"), &bad)
            .err()
            .expect("error");
        let text = err.to_string();
        assert!(text.starts_with("zones/example.com.zone:8: "), "{text}");
    }

    #[test]
    fn a_bad_line_after_a_multiline_entry_is_named() {
        let bad = "$TTL 60\n@ IN SOA ns1.example.com. admin.example.com. (\n 1\n 3600\n 600\n 86400\n 60 )\nwww IN A 300.1.1.1\n";
        let err = parse_zone(Path::new("example.com.zone"), bad)
            .err()
            .expect("error");
        assert!(err.to_string().starts_with("example.com.zone:8: "), "{err}");
    }

    #[test]
    fn a_file_holding_another_zone_is_rejected() {
        let text = ZONE.replace("$TTL 300", "$TTL 300\n$ORIGIN example.org.");
        let err = parse_zone(Path::new("example.com.zone"), &text)
            .err()
            .expect("error");
        assert!(
            err.to_string().contains("outside the zone")
                || err.to_string().contains("its name says"),
            "{err}"
        );
    }

    #[test]
    fn missing_soa_is_reported() {
        let err = parse_zone(
            Path::new("example.com.zone"),
            "$TTL 60\nwww IN A 192.0.2.1\n",
        )
        .err()
        .expect("error");
        assert!(err.to_string().contains("no SOA record"), "{err}");
    }
}
