//! Route53 automation: verdicts -> desired record sets -> plan (pure diff against what Route53
//! holds, touching only what we own) -> atomic change batches -> Route53.
//!
//! `desired`, `ownership`, `plan` and `batch` are pure; `retry` adds rate limiting and backoff
//! around any `Api`; `client` is the only user of the AWS SDK; `reconcile` runs the cycle; `metrics` counts
//! calls and changes and exports each record's sync state (`status`).

pub mod api;
pub mod batch;
pub mod client;
pub mod controller;
pub mod desired;
pub mod metrics;
pub mod ownership;
pub mod plan;
pub mod policy;
pub mod propagation;
pub mod reconcile;
pub mod retry;
pub mod status;

use std::fmt;

use serde::Serialize;

/// A record set as Route53 holds it (names lower-case and fully qualified).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct RecordSet {
    pub name: String,
    /// `A`, `AAAA` or `TXT`.
    pub rtype: String,
    pub ttl: u32,
    /// Weighted routing: the set identifier and weight; latency routing: the set identifier
    /// and the AWS Region.
    pub set_identifier: Option<String>,
    pub weight: Option<u8>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    /// Values as Route53 writes them (TXT values include their quotes), sorted.
    pub values: Vec<String>,
    /// Uses routing features vantage does not manage (alias, geolocation, failover, ...):
    /// a group holding such a set is never touched.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub opaque: bool,
}

impl RecordSet {
    pub fn new(name: &str, rtype: &str, ttl: u32, mut values: Vec<String>) -> Self {
        values.sort();
        values.dedup();
        Self {
            name: name.to_ascii_lowercase(),
            rtype: rtype.to_string(),
            ttl,
            set_identifier: None,
            weight: None,
            region: None,
            values,
            opaque: false,
        }
    }

    pub fn weighted(mut self, set_identifier: &str, weight: u8) -> Self {
        self.set_identifier = Some(set_identifier.to_string());
        self.weight = Some(weight);
        self
    }

    /// A latency record set: Route53 answers it to resolvers closest to `region`.
    pub fn latency(mut self, set_identifier: &str, region: &str) -> Self {
        self.set_identifier = Some(set_identifier.to_string());
        self.region = Some(region.to_string());
        self
    }

    /// The (name, type) group this set belongs to.
    pub fn key(&self) -> Key {
        Key {
            name: self.name.clone(),
            rtype: self.rtype.clone(),
        }
    }

    /// Characters of values, as Route53 counts them against the batch limit.
    pub fn value_chars(&self) -> usize {
        self.values.iter().map(String::len).sum()
    }
}

impl fmt::Display for RecordSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {} {}", self.name, self.ttl, self.rtype)?;
        if let (Some(id), Some(w)) = (&self.set_identifier, self.weight) {
            write!(f, " [set {id} weight {w}]")?;
        }
        if let (Some(id), Some(region)) = (&self.set_identifier, &self.region) {
            write!(f, " [set {id} region {region}]")?;
        }
        write!(f, " {}", self.values.join(" "))
    }
}

/// A record name and type.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct Key {
    pub name: String,
    pub rtype: String,
}

impl fmt::Display for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.name, self.rtype)
    }
}

/// One change in a batch. Updates are a DELETE of the exact old set plus a CREATE, so that a
/// batch fails whole when Route53 no longer holds what we read (compare-and-swap).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "action", content = "record_set", rename_all = "UPPERCASE")]
pub enum Change {
    Create(RecordSet),
    Delete(RecordSet),
}

impl Change {
    pub fn set(&self) -> &RecordSet {
        match self {
            Change::Create(s) | Change::Delete(s) => s,
        }
    }
}
