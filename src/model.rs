//! The vocabulary of vantage: endpoints, regions, health, probe outcomes, observations.
//!
//! Plain data only; no I/O. Times are tokio `Instant`s so that timing logic can run on paused time.

use std::{collections::HashMap, fmt, sync::Arc, time::Duration};

use serde::{Deserialize, Serialize};
use tokio::time::Instant;

/// Stable identity of an endpoint (its configured `name`, or its address).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct EndpointId(Arc<str>);

impl EndpointId {
    pub fn new(id: impl Into<Arc<str>>) -> Self {
        Self(id.into())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for EndpointId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A region: where a prober runs, or where an endpoint lives (its site).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Region(Arc<str>);

impl Region {
    pub fn new(name: impl Into<Arc<str>>) -> Self {
        Self(name.into())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether `name` can name a region: letters, digits, '-', '_' and '.', not only dots
    /// (it also names the region's key files).
    pub fn valid_name(name: &str) -> bool {
        !name.is_empty()
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
            && !name.chars().all(|c| c == '.')
    }
}

impl fmt::Display for Region {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Health as seen by one prober (after thresholds) or decided by quorum (a verdict).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Health {
    /// Not yet decided: the starting state, never treated as Up.
    #[default]
    Unknown,
    Up,
    Down,
}

impl Health {
    pub const ALL: [Health; 3] = [Health::Up, Health::Down, Health::Unknown];

    pub fn as_str(self) -> &'static str {
        match self {
            Health::Unknown => "unknown",
            Health::Up => "up",
            Health::Down => "down",
        }
    }
}

impl fmt::Display for Health {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Health::Unknown => "Unknown",
            Health::Up => "Up",
            Health::Down => "Down",
        })
    }
}

/// Why a single check failed. A failed check is data, not an error.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FailureKind {
    /// The connection was actively refused (RST).
    Refused,
    /// No connection, handshake or response within the configured timeout.
    Timeout,
    /// The connection failed for another reason (unreachable, reset).
    Connect,
    /// The TLS handshake failed for a reason other than the certificate.
    TlsHandshake,
    /// The server's certificate did not verify (unknown issuer, wrong name, expired).
    Certificate,
    /// The HTTP status was not one of the expected codes.
    Status,
    /// The body did not contain the expected text.
    Body,
    /// The peer spoke something that is not valid HTTP.
    Protocol,
    /// The check could not run here (no file descriptor, no local port, no memory): says
    /// nothing about the endpoint, so it never counts as a failure of it.
    Local,
}

impl FailureKind {
    pub const ALL: [FailureKind; 9] = [
        FailureKind::Refused,
        FailureKind::Timeout,
        FailureKind::Connect,
        FailureKind::TlsHandshake,
        FailureKind::Certificate,
        FailureKind::Status,
        FailureKind::Body,
        FailureKind::Protocol,
        FailureKind::Local,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            FailureKind::Refused => "refused",
            FailureKind::Timeout => "timeout",
            FailureKind::Connect => "connect",
            FailureKind::TlsHandshake => "tls_handshake",
            FailureKind::Certificate => "certificate",
            FailureKind::Status => "status",
            FailureKind::Body => "body",
            FailureKind::Protocol => "protocol",
            FailureKind::Local => "local",
        }
    }
}

impl fmt::Display for FailureKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The result of one check.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ProbeOutcome {
    Success { rtt: Duration },
    Fail { kind: FailureKind, detail: String },
}

impl ProbeOutcome {
    pub fn fail(kind: FailureKind, detail: impl Into<String>) -> Self {
        ProbeOutcome::Fail {
            kind,
            detail: detail.into(),
        }
    }

    pub fn is_success(&self) -> bool {
        matches!(self, ProbeOutcome::Success { .. })
    }
}

/// One prober's report for one endpoint at a point in time.
#[derive(Clone, Debug)]
pub struct Observation {
    pub endpoint: EndpointId,
    pub region: Region,
    /// State after the rise/fall thresholds.
    pub health: Health,
    /// Consecutive successes and failures (one of them is 0).
    pub successes: u32,
    pub failures: u32,
    pub last_rtt: Option<Duration>,
    /// Exponentially weighted moving average of the round-trip time (latency steering).
    pub smoothed_rtt: Option<Duration>,
    pub last_failure: Option<(FailureKind, String)>,
    /// Why the latest check could not run here (a local error such as no file descriptor
    /// left): it is neither a success nor a failure of the endpoint, and `observed_at` stays
    /// the time of the last check that ran.
    pub local_error: Option<String>,
    /// When the certificate the last https check was shown expires (Unix seconds).
    pub cert_expiry: Option<i64>,
    pub observed_at: Instant,
    /// A check of the endpoint has been running far longer than its checks take (several
    /// smoothed round trips): it may be about to time out. Not a vote; a reason for the other
    /// probers to check now (confirmation on demand).
    pub overdue: bool,
    /// Increases by one with every check the prober runs for this endpoint.
    pub seq: u64,
}

/// The latest observation of each endpoint by each region: per endpoint, one entry per region
/// that observed it (a short list, searched by region), so that 10,000 endpoints × 3 regions
/// cost 10,000 small lists rather than a 30,000-entry table keyed by pairs.
#[derive(Clone, Debug, Default)]
pub struct Latest(HashMap<EndpointId, Vec<Observation>>);

impl Latest {
    pub fn get(&self, region: &Region, endpoint: &EndpointId) -> Option<&Observation> {
        self.0.get(endpoint)?.iter().find(|o| &o.region == region)
    }

    /// Every region's latest observation of `endpoint`.
    pub fn of(&self, endpoint: &EndpointId) -> &[Observation] {
        self.0.get(endpoint).map_or(&[], Vec::as_slice)
    }

    /// Keeps `observation` as its region's latest of its endpoint; returns the one it replaced.
    pub fn insert(&mut self, observation: Observation) -> Option<Observation> {
        let list = self.0.entry(observation.endpoint.clone()).or_default();
        match list.iter_mut().find(|o| o.region == observation.region) {
            Some(slot) => Some(std::mem::replace(slot, observation)),
            None => {
                list.reserve_exact(1);
                list.push(observation);
                None
            }
        }
    }

    /// Forgets every observation of `endpoint`, returning them.
    pub fn remove(&mut self, endpoint: &EndpointId) -> Vec<Observation> {
        self.0.remove(endpoint).unwrap_or_default()
    }

    pub fn iter(&self) -> impl Iterator<Item = &Observation> {
        self.0.values().flatten()
    }

    /// The number of observations (endpoints × the regions that observed them).
    pub fn len(&self) -> usize {
        self.0.values().map(Vec::len).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl FromIterator<Observation> for Latest {
    fn from_iter<I: IntoIterator<Item = Observation>>(iter: I) -> Self {
        let mut latest = Latest::default();
        for observation in iter {
            latest.insert(observation);
        }
        latest
    }
}
