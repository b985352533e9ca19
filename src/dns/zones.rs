//! Static zones: RFC 1035 zone files from the zones directory, parsed by hickory.
//!
//! A file named `<origin>.zone` holds the zone `<origin>.`. Errors name the file and the line
//! of the entry that failed (hickory's parser does not report positions, so the failing entry is
//! located by parsing prefixes that end on entry boundaries).

use std::path::{Path, PathBuf};

use hickory_proto::{
    rr::{LowerName, Name},
    serialize::{
        binary::{BinEncodable, BinEncoder, NameEncoding},
        txt::Parser,
    },
};

use super::{
    wire,
    zone::{Zone, ZoneBuilder},
};

/// A loaded zone file.
pub struct ZoneFile {
    /// The zone's name in presentation form ("example.com.").
    pub origin: String,
    pub path: PathBuf,
    pub zone: Zone,
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
        let loaded = std::fs::read_to_string(&path)
            .map_err(|source| ZoneError::Read {
                file: path.display().to_string(),
                source,
            })
            .and_then(|text| parse_zone(&path, &text));
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
            Err(e) => errors.push(e),
        }
    }
    if errors.is_empty() {
        Ok(zones)
    } else {
        Err(errors)
    }
}

/// Parses one zone file's text; the origin comes from the file name.
pub fn parse_zone(path: &Path, text: &str) -> Result<ZoneFile, ZoneError> {
    let file = path.display().to_string();
    let origin = path
        .file_stem()
        .and_then(|s| s.to_str())
        .and_then(|s| Name::from_ascii(format!("{}.", s.trim_end_matches('.'))).ok())
        .filter(|n| n.num_labels() > 0)
        .ok_or_else(|| ZoneError::Name { file: file.clone() })?;
    let parse = |text: &str| {
        Parser::new(
            text.to_string(),
            Some(path.to_path_buf()),
            Some(origin.clone()),
        )
        .parse()
    };
    let (parsed_origin, records) = match parse(text) {
        Ok(ok) => ok,
        Err(e) => {
            return Err(ZoneError::Parse {
                line: failing_line(text, &parse),
                file,
                message: e.to_string(),
            });
        }
    };
    if LowerName::new(&parsed_origin) != LowerName::new(&origin) {
        return Err(ZoneError::Content {
            file,
            message: format!(
                "the file holds zone {parsed_origin} but its name says {origin}; rename the file or fix $ORIGIN"
            ),
        });
    }
    let content = |message: String| ZoneError::Content {
        file: file.clone(),
        message,
    };
    let origin_wire = parsed_origin
        .to_bytes()
        .map_err(|e| content(e.to_string()))?;
    let mut builder = ZoneBuilder::new(&origin_wire);
    for set in records.values() {
        for record in set.records_without_rrsigs() {
            let owner = record.name.to_bytes().map_err(|e| content(e.to_string()))?;
            let mut rdata = Vec::new();
            let mut encoder = BinEncoder::new(&mut rdata);
            encoder.set_name_encoding(NameEncoding::Uncompressed);
            record
                .data
                .emit(&mut encoder)
                .map_err(|e| content(format!("{}: {e}", record.name)))?;
            builder
                .add(&owner, u16::from(record.record_type()), record.ttl, &rdata)
                .map_err(content)?;
        }
    }
    let zone = builder.finish().map_err(content)?;
    Ok(ZoneFile {
        origin: wire::to_text(zone.origin()),
        path: path.to_path_buf(),
        zone,
    })
}

/// The 1-based line where the first failing entry starts: the shortest prefix of whole entries
/// that fails to parse ends with it.
fn failing_line<T, E>(text: &str, parse: &impl Fn(&str) -> Result<T, E>) -> usize {
    let ends = entry_ends(text);
    // Binary search for the smallest number of entries whose prefix fails.
    let (mut lo, mut hi) = (0usize, ends.len());
    while lo < hi {
        let mid = (lo + hi) / 2;
        let prefix = &text[..ends[mid].0];
        if parse(prefix).is_err() {
            hi = mid;
        } else {
            lo = mid + 1;
        }
    }
    ends.get(lo.min(ends.len().saturating_sub(1)))
        .map_or(1, |(_, start_line)| *start_line)
}

/// For every entry (a line, or lines joined by parentheses): (byte offset of its end, its first line).
fn entry_ends(text: &str) -> Vec<(usize, usize)> {
    let mut ends = Vec::new();
    let (mut depth, mut in_quote, mut in_comment, mut escaped) = (0i32, false, false, false);
    let mut line = 1;
    let mut entry_start_line = 1;
    for (i, c) in text.char_indices() {
        if in_comment {
            if c == '\n' {
                in_comment = false;
            } else {
                continue;
            }
        }
        if escaped {
            escaped = false;
            if c != '\n' {
                continue;
            }
        }
        match c {
            '\\' => escaped = true,
            '"' => in_quote = !in_quote,
            ';' if !in_quote => in_comment = true,
            '(' if !in_quote => depth += 1,
            ')' if !in_quote => depth -= 1,
            '\n' => {
                line += 1;
                if depth <= 0 && !in_quote {
                    ends.push((i + 1, entry_start_line));
                    entry_start_line = line;
                    depth = 0;
                }
            }
            _ => {}
        }
    }
    ends.push((text.len(), entry_start_line));
    ends
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
