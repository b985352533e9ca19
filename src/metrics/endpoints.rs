//! Families with one series per endpoint (times a few fixed label values), kept as one compact
//! table per family and written straight into the text exposition.
//!
//! A labelled series of the `prometheus` crate costs a few hundred bytes to keep and as much
//! again, copied, at every scrape; at 10,000 endpoints the per-endpoint families cost tens of
//! megabytes that way. Here an endpoint costs its id and a few integers, and a scrape writes
//! the lines without copying the table.

use std::{
    collections::BTreeMap,
    fmt::Write,
    sync::{Arc, Mutex, PoisonError},
};

use crate::model::EndpointId;

/// What a family's values are, as Prometheus types them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Gauge,
    /// Only increases; a zero count is not exported (as a labelled counter that was never
    /// incremented has no series).
    Counter,
}

/// One family: `name{endpoint="…"} v`, or `name{endpoint="…",label="…"} v` for each value of
/// its second label (a column each). Cheap to clone: clones share the table.
#[derive(Clone)]
pub struct EndpointFamily(Arc<Family>);

pub(super) struct Family {
    pub(super) name: &'static str,
    help: &'static str,
    kind: Kind,
    /// The second label's name and values (one column each); none: one column.
    label: Option<(&'static str, Box<[&'static str]>)>,
    rows: Mutex<BTreeMap<EndpointId, Box<[i64]>>>,
}

impl EndpointFamily {
    pub(super) fn new(
        name: &'static str,
        help: &'static str,
        kind: Kind,
        label: Option<(&'static str, &[&'static str])>,
    ) -> Self {
        Self(Arc::new(Family {
            name,
            help,
            kind,
            label: label.map(|(name, values)| (name, values.into())),
            rows: Mutex::default(),
        }))
    }

    pub(super) fn family(&self) -> &Arc<Family> {
        &self.0
    }

    fn columns(&self) -> usize {
        self.0.label.as_ref().map_or(1, |(_, values)| values.len())
    }

    fn with_row(&self, endpoint: &EndpointId, f: impl FnOnce(&mut [i64])) {
        let columns = self.columns();
        let mut rows = self.0.rows.lock().unwrap_or_else(PoisonError::into_inner);
        match rows.get_mut(endpoint) {
            Some(row) => f(row),
            None => {
                let mut row = vec![0; columns].into_boxed_slice();
                f(&mut row);
                rows.insert(endpoint.clone(), row);
            }
        }
    }

    /// Sets the value of one column (0 for a family without a second label).
    pub fn set(&self, endpoint: &EndpointId, column: usize, value: i64) {
        self.with_row(endpoint, |row| row[column] = value);
    }

    /// 1 in `column`, 0 in every other (a one-hot state).
    pub fn one_hot(&self, endpoint: &EndpointId, column: usize) {
        self.with_row(endpoint, |row| {
            for (i, v) in row.iter_mut().enumerate() {
                *v = i64::from(i == column);
            }
        });
    }

    /// Adds to one column (a counter).
    pub fn inc(&self, endpoint: &EndpointId, column: usize) {
        self.with_row(endpoint, |row| row[column] = row[column].saturating_add(1));
    }

    /// Drops the series of every endpoint `keep` refuses (endpoints gone from the config).
    pub fn retain(&self, mut keep: impl FnMut(&EndpointId) -> bool) {
        self.0
            .rows
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .retain(|endpoint, _| keep(endpoint));
    }

    /// The value of one series, if it exists (tests, status).
    pub fn get(&self, endpoint: &EndpointId, column: usize) -> Option<i64> {
        self.0
            .rows
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(endpoint)
            .map(|row| row[column])
    }
}

impl Family {
    /// Roughly how many bytes [`Family::render`] writes (to size the buffer once).
    pub(super) fn size_hint(&self) -> usize {
        let rows = self.rows.lock().unwrap_or_else(PoisonError::into_inner);
        let columns = self.label.as_ref().map_or(1, |(_, values)| values.len());
        rows.len() * columns * (self.name.len() + 48)
    }

    /// The family in the text exposition format (nothing while it has no series).
    pub(super) fn render(&self, out: &mut String) {
        let rows = self.rows.lock().unwrap_or_else(PoisonError::into_inner);
        let mut header = false;
        for (endpoint, row) in rows.iter() {
            for (column, &value) in row.iter().enumerate() {
                if self.kind == Kind::Counter && value == 0 {
                    continue;
                }
                if !header {
                    header = true;
                    let kind = match self.kind {
                        Kind::Gauge => "gauge",
                        Kind::Counter => "counter",
                    };
                    let help = self.help.replace('\\', "\\\\").replace('\n', "\\n");
                    let _ = writeln!(out, "# HELP {} {help}", self.name);
                    let _ = writeln!(out, "# TYPE {} {kind}", self.name);
                }
                out.push_str(self.name);
                out.push_str("{endpoint=\"");
                escape_label(out, endpoint.as_str());
                if let Some((label, values)) = &self.label {
                    let _ = write!(out, "\",{label}=\"");
                    escape_label(out, values[column]);
                }
                let _ = writeln!(out, "\"}} {value}");
            }
        }
    }
}

/// A label value as the text format wants it: backslash, double quote and line feed escaped.
fn escape_label(out: &mut String, value: &str) {
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_family_writes_each_endpoint_and_column_in_the_text_format() {
        let verdict = EndpointFamily::new(
            "t_verdict",
            "A verdict.\nOne-hot.",
            Kind::Gauge,
            Some(("state", &["up", "down"])),
        );
        let mut out = String::new();
        verdict.family().render(&mut out);
        assert_eq!(out, "", "no series, no family");
        verdict.one_hot(&EndpointId::new("b"), 1);
        verdict.one_hot(&EndpointId::new("a\"\\\n"), 0);
        verdict.family().render(&mut out);
        assert_eq!(
            out,
            "# HELP t_verdict A verdict.\\nOne-hot.\n# TYPE t_verdict gauge\n\
             t_verdict{endpoint=\"a\\\"\\\\\\n\",state=\"up\"} 1\n\
             t_verdict{endpoint=\"a\\\"\\\\\\n\",state=\"down\"} 0\n\
             t_verdict{endpoint=\"b\",state=\"up\"} 0\n\
             t_verdict{endpoint=\"b\",state=\"down\"} 1\n"
        );
        assert!(verdict.family().size_hint() >= out.len() / 2);
        verdict.retain(|e| e.as_str() == "b");
        assert_eq!(verdict.get(&EndpointId::new("b"), 1), Some(1));
        assert_eq!(verdict.get(&EndpointId::new("a\"\\\n"), 0), None);
    }

    #[test]
    fn a_counter_shows_only_what_was_counted() {
        let changes = EndpointFamily::new(
            "t_changes_total",
            "Changes.",
            Kind::Counter,
            Some(("to", &["up", "down"])),
        );
        changes.inc(&EndpointId::new("x"), 1);
        changes.inc(&EndpointId::new("x"), 1);
        let expiry = EndpointFamily::new("t_expiry", "Expiry.", Kind::Gauge, None);
        expiry.set(&EndpointId::new("x"), 0, 1_700_000_000);
        let mut out = String::new();
        changes.family().render(&mut out);
        expiry.family().render(&mut out);
        assert_eq!(
            out,
            "# HELP t_changes_total Changes.\n# TYPE t_changes_total counter\n\
             t_changes_total{endpoint=\"x\",to=\"down\"} 2\n\
             # HELP t_expiry Expiry.\n# TYPE t_expiry gauge\n\
             t_expiry{endpoint=\"x\"} 1700000000\n"
        );
    }
}
