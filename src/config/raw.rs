//! The fleet configuration file as written (TOML, serde). Unknown fields are errors.
//!
//! Values that need checking (addresses, durations, policies) stay strings here so that
//! validation can report every problem at once with its path.

use std::collections::BTreeMap;

use serde::Deserialize;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    #[serde(default)]
    pub cluster: RawCluster,
    #[serde(default)]
    pub prober: Vec<RawProber>,
    #[serde(default)]
    pub check: BTreeMap<String, RawCheck>,
    #[serde(default)]
    pub dns: RawDns,
    #[serde(default)]
    pub admin: RawAdmin,
    #[serde(default)]
    pub record: Vec<RawRecord>,
    #[serde(default)]
    pub route53: RawRoute53,
    #[serde(default)]
    pub server: Vec<RawServer>,
    #[serde(default)]
    pub drill: RawDrill,
    #[serde(default)]
    pub state: RawState,
}

/// Where serving processes keep overrides: their state directory, or etcd.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawState {
    pub backend: Option<String>,
    pub endpoints: Option<Vec<String>>,
    pub prefix: Option<String>,
    pub ca_file: Option<String>,
    pub cert_file: Option<String>,
    pub key_file: Option<String>,
    pub username: Option<String>,
    pub password_file: Option<String>,
}

/// A serving process of the fleet (for `vantage drill`).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawServer {
    pub name: String,
    pub role: Option<String>,
    pub dns: Option<String>,
    pub admin: String,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawDrill {
    pub timeout: Option<String>,
    pub poll_interval: Option<String>,
    pub route53_nameservers: Option<Vec<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRoute53 {
    pub endpoint_url: Option<String>,
    pub region: Option<String>,
    pub interval: Option<String>,
    pub max_change_fraction: Option<f64>,
    pub min_change_cap: Option<i64>,
    pub insync_timeout: Option<String>,
    pub requests_per_second: Option<f64>,
    pub admin_listen: Option<String>,
    pub state_dir: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRoute53Target {
    pub zone_id: String,
    pub owner: String,
    pub take_over: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawCluster {
    pub quorum: Option<RawQuorum>,
    pub stale_after: Option<String>,
    pub startup_grace: Option<String>,
    pub token_file: Option<String>,
    pub prober_ca_file: Option<String>,
    pub poll_interval: Option<String>,
    pub poll_timeout: Option<String>,
    pub impaired_detection: Option<bool>,
    pub confirm_suspicions: Option<bool>,
    pub push: Option<bool>,
    pub max_checks_in_flight: Option<i64>,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum RawQuorum {
    Count(i64),
    Word(String),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawProber {
    pub region: String,
    pub url: Option<String>,
    /// Ed25519 public key(s) its reports are signed with (a list during a rotation).
    pub public_key: Option<RawOneOrMany>,
    /// Its Ed25519 private key (read only by `vantage probe` of this region).
    pub key_file: Option<String>,
    /// Its TLS certificate (PEM; pinned by aggregators unless cluster.prober_ca_file is set).
    pub tls_cert_file: Option<String>,
    /// Its TLS private key (PEM; read only by `vantage probe` of this region).
    pub tls_key_file: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum RawOneOrMany {
    One(String),
    Many(Vec<String>),
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawCheck {
    pub protocol: Option<String>,
    pub port: Option<i64>,
    pub path: Option<String>,
    pub interval: Option<String>,
    pub suspect_interval: Option<String>,
    pub timeout: Option<String>,
    pub connect_timeout: Option<String>,
    pub rise: Option<i64>,
    pub fall: Option<i64>,
    pub expect_status: Option<Vec<i64>>,
    pub expect_body: Option<String>,
    pub host: Option<String>,
    pub tls_verify: Option<bool>,
    pub ca_file: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawDns {
    pub listen: Option<Vec<String>>,
    pub zones_dir: Option<String>,
    pub client_regions: Option<BTreeMap<String, String>>,
    pub allow_transfer: Option<Vec<String>>,
    pub xdp: Option<Vec<String>>,
    pub max_udp_payload: Option<u16>,
    pub minimal_responses: Option<bool>,
    pub rrl: Option<RawRrl>,
    /// Signed zones, by zone name (`[dns.dnssec."example.com"]`).
    pub dnssec: Option<BTreeMap<String, RawDnssec>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawDnssec {
    pub algorithm: Option<String>,
    #[serde(default)]
    pub keys: Vec<RawDnssecKey>,
    pub signature_validity: Option<String>,
    pub signature_refresh: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawDnssecKey {
    pub file: String,
    pub role: Option<String>,
    pub state: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRrl {
    pub responses_per_second: Option<u32>,
    pub slip: Option<u32>,
    pub ipv4_prefix: Option<u8>,
    pub ipv6_prefix: Option<u8>,
    pub exempt: Option<Vec<String>>,
    pub table_size: Option<usize>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAdmin {
    pub listen: Option<String>,
    pub token_file: Option<String>,
    pub read_token_file: Option<String>,
    pub hosts: Option<Vec<String>>,
    pub state_dir: Option<String>,
    pub endpoint_region_metrics: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRecord {
    pub name: String,
    #[serde(rename = "type")]
    pub rtype: Option<String>,
    pub ttl: Option<i64>,
    pub policy: Option<String>,
    pub when_all_down: Option<String>,
    pub fallback: Option<Vec<String>>,
    pub check: Option<String>,
    #[serde(default)]
    pub endpoints: Vec<RawEndpoint>,
    pub route53: Option<RawRoute53Target>,
    pub rto: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawEndpoint {
    pub name: Option<String>,
    pub address: String,
    pub site: Option<String>,
    pub weight: Option<i64>,
    pub check: Option<String>,
    pub check_address: Option<String>,
    pub aws_region: Option<String>,
}
