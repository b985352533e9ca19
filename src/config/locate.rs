//! Where a configuration path (`record[0].endpoints[1].address`) is written: its line in the
//! file, so that every problem can be found where it is.

use toml::{
    Spanned,
    de::{DeTable, DeValue},
};

pub struct Locator<'a> {
    text: &'a str,
    root: Option<Spanned<DeTable<'a>>>,
}

impl<'a> Locator<'a> {
    pub fn new(text: &'a str) -> Self {
        Self {
            text,
            root: DeTable::parse(text).ok(),
        }
    }

    /// The line (from 1) of the deepest part of `path` the file writes, if any.
    pub fn line(&self, path: &str) -> Option<usize> {
        let root = self.root.as_ref()?;
        let mut table = Some(root.get_ref());
        let mut found: Option<usize> = None;
        for segment in segments(path) {
            let (name, indices) = split_indices(&segment);
            let name = name.trim_matches('"');
            let Some((key, value)) = table?
                .iter()
                .find(|(key, _)| key.get_ref().as_ref() == name)
            else {
                break;
            };
            found = Some(key.span().start);
            let mut value = value;
            for index in indices {
                let DeValue::Array(items) = value.get_ref() else {
                    return found.map(|at| self.line_at(at));
                };
                let Some(item) = items.get(index) else {
                    return found.map(|at| self.line_at(at));
                };
                found = Some(item.span().start);
                value = item;
            }
            table = match value.get_ref() {
                DeValue::Table(inner) => Some(inner),
                _ => None,
            };
        }
        found.map(|at| self.line_at(at))
    }

    fn line_at(&self, offset: usize) -> usize {
        self.text[..offset.min(self.text.len())]
            .bytes()
            .filter(|b| *b == b'\n')
            .count()
            + 1
    }
}

/// The dot-separated parts of a path; a quoted part (`dnssec."example.com"`) keeps its dots.
fn segments(path: &str) -> Vec<String> {
    let mut out = vec![String::new()];
    let mut quoted = false;
    for c in path.chars() {
        match c {
            '"' => {
                quoted = !quoted;
                out.last_mut().expect("one").push(c);
            }
            '.' if !quoted => out.push(String::new()),
            _ => out.last_mut().expect("one").push(c),
        }
    }
    out
}

/// `endpoints[1]` -> ("endpoints", [1]).
fn split_indices(segment: &str) -> (&str, Vec<usize>) {
    let name_end = segment.find('[').unwrap_or(segment.len());
    let indices = segment[name_end..]
        .split(['[', ']'])
        .filter_map(|i| i.parse().ok())
        .collect();
    (&segment[..name_end], indices)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_found_at_their_lines() {
        let text = "[cluster]\nstale_after = \"5s\"\n\n[[record]]\nname = \"a\"\n\n[[record]]\nname = \"b\"\nendpoints = [\n  { address = \"x\" },\n  { address = \"y\" },\n]\n[check.web]\ntimeout = \"1\"\n";
        let at = Locator::new(text);
        assert_eq!(at.line("cluster.stale_after"), Some(2));
        assert_eq!(at.line("record[1].name"), Some(8));
        assert_eq!(at.line("record[1].endpoints[1].address"), Some(11));
        assert_eq!(at.line("record[1].endpoints[1]"), Some(11));
        assert_eq!(at.line("check.web.timeout"), Some(14));
        // A key the file does not write: the deepest part that it does.
        assert_eq!(at.line("record[0].ttl"), Some(4).max(at.line("record[0]")));
        assert_eq!(at.line("nowhere"), None);
        // A quoted key keeps its dots.
        let text = "[dns]\nlisten = []\n[dns.dnssec.\"example.com\"]\nalgorithm = \"x\"\nkeys = [\n  { file = \"a\" },\n  { file = \"b\", role = \"r\" },\n]\n";
        let at = Locator::new(text);
        assert_eq!(at.line("dns.dnssec.\"example.com\".algorithm"), Some(4));
        assert_eq!(at.line("dns.dnssec.\"example.com\".keys[1].role"), Some(7));
    }
}
