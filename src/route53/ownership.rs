//! Ownership markers: a companion TXT record for every (name, type) vantage manages,
//! `_vantage.<type>.<name>` holding `"heritage=vantage,owner=<id>"`. A record group without
//! our marker is never modified or deleted; the marker changes in the same batch as the record.

use super::{Key, RecordSet};

/// TTL of marker records.
pub const MARKER_TTL: u32 = 300;

/// The name of the marker for `key`.
/// Whether a record set name is one of our ownership markers (not a record we answer).
pub fn is_marker(name: &str) -> bool {
    name.starts_with("_vantage.")
}

pub fn marker_name(key: &Key) -> String {
    format!("_vantage.{}.{}", key.rtype.to_ascii_lowercase(), key.name)
}

/// The marker record for `key`, owned by `owner`.
pub fn marker(key: &Key, owner: &str) -> RecordSet {
    RecordSet::new(
        &marker_name(key),
        "TXT",
        MARKER_TTL,
        vec![format!("\"heritage=vantage,owner={owner}\"")],
    )
}

/// The marker that replaces `current` in a change batch: same owner, next revision. Deleting
/// the exact marker read and creating its successor makes ownership part of the batch's
/// compare-and-swap.
pub fn next_marker(current: &RecordSet, owner: &str) -> RecordSet {
    let rev = current
        .values
        .iter()
        .find_map(|v| {
            v.trim_matches('"')
                .split(',')
                .find_map(|f| f.strip_prefix("rev=").and_then(|r| r.parse::<u64>().ok()))
        })
        .unwrap_or(0);
    RecordSet::new(
        &current.name,
        "TXT",
        MARKER_TTL,
        vec![format!(
            "\"heritage=vantage,owner={owner},rev={}\"",
            rev + 1
        )],
    )
}

/// The owner named by a marker record, if it is one of ours.
pub fn owner_of(set: &RecordSet) -> Option<String> {
    if set.rtype != "TXT" {
        return None;
    }
    set.values.iter().find_map(|v| {
        let text = v.trim_matches('"');
        let mut fields = text.split(',');
        if fields.next()? != "heritage=vantage" {
            return None;
        }
        fields.find_map(|f| f.strip_prefix("owner=").map(str::to_string))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_marker_names_its_owner() {
        let key = Key {
            name: "www.example.com.".into(),
            rtype: "A".into(),
        };
        let m = marker(&key, "prod");
        assert_eq!(m.name, "_vantage.a.www.example.com.");
        assert_eq!(owner_of(&m), Some("prod".into()));
        let foreign = RecordSet::new(&m.name, "TXT", 300, vec!["\"v=spf1 -all\"".into()]);
        assert_eq!(owner_of(&foreign), None);
    }
}
