//! Fleet configuration: one TOML file read into validated, typed settings.
//!
//! `load` reports every problem at once, each with its path (`record[2].endpoints[0].address`).
//! Relative paths in the file (`zones_dir`, `ca_file`) are relative to the file's directory.

mod checks;
mod locate;
mod problems;
mod raw;
mod records;
mod shape;
#[cfg(test)]
mod tests;
mod validate;

use std::{
    collections::BTreeMap,
    fmt,
    net::{IpAddr, SocketAddr},
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

use crate::model::{EndpointId, Region};

pub use problems::parse_duration;

/// Named defaults, documented in README.md.
pub mod defaults {
    use std::time::Duration;

    pub const STALE_AFTER: Duration = Duration::from_secs(5);
    pub const STARTUP_GRACE: Duration = Duration::from_secs(60);
    pub const INTERVAL: Duration = Duration::from_secs(1);
    /// The shortest `suspect_interval`.
    pub const SUSPECT_INTERVAL_MIN: Duration = Duration::from_millis(100);
    pub const TIMEOUT: Duration = Duration::from_millis(800);
    pub const RISE: u32 = 2;
    pub const FALL: u32 = 3;
    pub const TTL: u32 = 30;
    pub const HTTP_PATH: &str = "/";
    pub const EXPECT_STATUS: [u16; 1] = [200];
    pub const DNS_LISTEN: &str = "0.0.0.0:53";
    /// The largest UDP response (RFC 6891 section 6.2.5; Knot and NSD use 1232 too).
    pub const MAX_UDP_PAYLOAD: u16 = 1232;
    pub const ZONES_DIR: &str = "zones";
    pub const ADMIN_LISTEN: &str = "127.0.0.1:8053";
    pub const STATE_DIR: &str = "state";
    pub const POLL_INTERVAL: Duration = Duration::from_millis(500);
    pub const POLL_TIMEOUT: Duration = Duration::from_secs(1);
    pub const ROUTE53_REGION: &str = "us-east-1";
    pub const ROUTE53_INTERVAL: Duration = Duration::from_secs(30);
    pub const ROUTE53_MAX_CHANGE_FRACTION: f64 = 0.5;
    pub const ROUTE53_MIN_CHANGE_CAP: u32 = 10;
    pub const ROUTE53_INSYNC_TIMEOUT: Duration = Duration::from_secs(120);
    pub const ROUTE53_REQUESTS_PER_SECOND: f64 = 5.0;
    /// How long a drill waits for each phase before it counts the target as missed.
    pub const DRILL_TIMEOUT: Duration = Duration::from_secs(120);
    /// How often a drill looks at every server while it waits.
    pub const DRILL_POLL_INTERVAL: Duration = Duration::from_millis(50);
    /// The shortest fleet secret accepted.
    pub const MIN_TOKEN_BYTES: usize = 16;
}

/// The validated configuration of a whole fleet.
#[derive(Debug, Clone)]
pub struct Settings {
    pub cluster: Cluster,
    /// One prober per region, in configuration order.
    pub regions: Vec<Region>,
    /// Where each region's prober serves its observations; empty when every prober runs
    /// inside the aggregating process.
    pub prober_urls: BTreeMap<Region, url::Url>,
    /// How each remote prober proves its reports and its TLS listener (regions with a url).
    pub prober_identities: BTreeMap<Region, ProberIdentity>,
    /// Every distinct endpoint, in first-seen order.
    pub endpoints: Vec<Arc<EndpointSpec>>,
    pub records: Vec<RecordSpec>,
    pub dns: DnsSettings,
    pub admin: AdminSettings,
    pub route53: Route53Settings,
    /// The fleet's serving processes as listed in `[[server]]` (empty: only this host's).
    pub servers: Vec<FleetServer>,
    pub drill: DrillSettings,
    pub state: StateSettings,
}

/// A serving process of the fleet: where `vantage drill` queries its DNS and reaches its
/// admin API.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FleetServer {
    pub name: String,
    pub role: ServerRole,
    /// Where it answers DNS (role `dns`).
    pub dns: Option<SocketAddr>,
    pub admin: url::Url,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServerRole {
    /// `vantage dns`: answers DNS from its snapshot.
    Dns,
    /// `vantage route53`: pushes answers to Route53.
    Route53,
}

impl ServerRole {
    pub fn as_str(self) -> &'static str {
        match self {
            ServerRole::Dns => "dns",
            ServerRole::Route53 => "route53",
        }
    }
}

/// How `vantage drill` waits and what else it asks.
#[derive(Debug, Clone)]
pub struct DrillSettings {
    pub timeout: Duration,
    pub poll_interval: Duration,
    /// Name servers of the Route53 hosted zones, asked over DNS once a change is INSYNC.
    pub route53_nameservers: Vec<SocketAddr>,
}

/// How the Route53 reconciler talks to Route53.
#[derive(Debug, Clone)]
pub struct Route53Settings {
    /// Override of the API endpoint (an emulator); default: AWS.
    pub endpoint_url: Option<url::Url>,
    pub region: String,
    /// Time between reconcile cycles (a verdict change also starts one).
    pub interval: Duration,
    /// A cycle that would change more than this fraction of the owned record sets is refused.
    pub max_change_fraction: f64,
    /// ...but a cycle may always change this many.
    pub min_change_cap: usize,
    pub insync_timeout: Duration,
    pub requests_per_second: f64,
    /// The admin listener of `vantage route53` (default: admin.listen), so that one file
    /// serves a reconciler beside a DNS server on the same host.
    pub admin_listen: Option<SocketAddr>,
    /// Where `vantage route53` keeps its overrides, drill results and verdicts (default:
    /// `route53` inside admin.state_dir), apart from a DNS server's run from the same file.
    pub state_dir: PathBuf,
}

/// Where a record is pushed in Route53.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route53Target {
    pub zone_id: String,
    pub owner: String,
    pub take_over: bool,
}

#[derive(Debug, Clone)]
pub struct Cluster {
    pub quorum: QuorumRule,
    /// An observation older than this does not vote.
    pub stale_after: Duration,
    /// After this long, records whose endpoints are still undecided are answered anyway.
    pub startup_grace: Duration,
    /// The shared fleet secret that authenticates probers and aggregators.
    pub token: Option<Secret>,
    /// How often an aggregator pulls every prober, and how long it waits for one.
    pub poll_interval: Duration,
    pub poll_timeout: Duration,
    /// Whether a prober that sees every endpoint Down while others see some Up is presumed
    /// cut off (its Down votes do not count).
    pub impaired_detection: bool,
    /// When a prober suspects an endpoint, ask the others to check it now.
    pub confirm_suspicions: bool,
    /// Aggregators long-poll remote probers, which answer as soon as a vote may change.
    pub push: bool,
    /// Each prober's budget of checks in flight; None: from the open-file limit.
    pub max_checks_in_flight: Option<usize>,
}

/// How a remote prober signs its reports and serves them.
#[derive(Debug, Clone, Default)]
pub struct ProberIdentity {
    /// Ed25519 public keys its reports may be signed with (two during a rotation); empty: the
    /// fleet secret signs them (every holder of the secret could forge them).
    pub public_keys: Vec<crate::exchange::auth::PublicKey>,
    /// Its Ed25519 private key (read by `vantage probe` of this region only).
    pub key_file: Option<PathBuf>,
    /// The certificates an aggregator trusts for its TLS listener: the prober's own (pinned) or
    /// the private CA of cluster.prober_ca_file (https urls only).
    pub tls_roots: Vec<rustls::pki_types::CertificateDer<'static>>,
    /// Its TLS certificate chain and private key, PEM (read by `vantage probe` of this region).
    pub tls_cert_file: Option<PathBuf>,
    pub tls_key_file: Option<PathBuf>,
}

/// A secret read from a file; never printed.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(Arc<[u8]>);

impl Secret {
    pub fn new(bytes: &[u8]) -> Self {
        Self(bytes.into())
    }

    pub fn bytes(&self) -> &[u8] {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Secret({} bytes)", self.0.len())
    }
}

/// How many probers must agree for a verdict to change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QuorumRule {
    /// More than half of the configured probers.
    Majority,
    /// At least this many probers.
    AtLeast(usize),
}

impl QuorumRule {
    pub fn required(self, probers: usize) -> usize {
        match self {
            QuorumRule::Majority => probers / 2 + 1,
            QuorumRule::AtLeast(k) => k,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    Https,
    Http,
    Tcp,
}

/// How one endpoint is probed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckSpec {
    pub name: String,
    pub protocol: Protocol,
    pub port: u16,
    pub path: String,
    pub interval: Duration,
    /// After a failure that has not reached `fall` yet, the next check comes this soon (the
    /// suspicion is confirmed or cleared quickly; `fall` keeps meaning consecutive failures).
    pub suspect_interval: Duration,
    /// Whole check: connect, TLS, request and body.
    pub timeout: Duration,
    /// TCP connect plus TLS handshake.
    pub connect_timeout: Duration,
    pub rise: u32,
    pub fall: u32,
    pub expect_status: Vec<u16>,
    pub expect_body: Option<String>,
    /// Host header and TLS SNI; when unset, the name of the record the endpoint belongs to.
    pub host: Option<String>,
    pub tls_verify: bool,
    pub ca_file: Option<PathBuf>,
}

/// An address that can appear in answers, with the check that decides its health.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EndpointSpec {
    pub id: EndpointId,
    pub address: IpAddr,
    /// Where the endpoint lives.
    pub site: Option<Region>,
    pub check: Arc<CheckSpec>,
    /// The address the check dials (defaults to `address`; differs behind NAT).
    pub dial: IpAddr,
    /// Host header and SNI used by the check.
    pub host: String,
}

impl EndpointSpec {
    /// Whether `other` probes the same thing (address dialled, protocol, port, path, host,
    /// what a success is, how the certificate is verified): what was seen of one holds for the
    /// other. How often and how patiently it is checked (interval, timeouts, rise, fall) and
    /// the address answered do not change what a check finds.
    pub fn same_target(&self, other: &EndpointSpec) -> bool {
        let (a, b) = (&*self.check, &*other.check);
        self.id == other.id
            && self.dial == other.dial
            && self.host == other.host
            && a.protocol == b.protocol
            && a.port == b.port
            && a.path == b.path
            && a.expect_status == b.expect_status
            && a.expect_body == b.expect_body
            && a.tls_verify == b.tls_verify
            && a.ca_file == b.ca_file
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum RecordKind {
    A,
    Aaaa,
}

impl RecordKind {
    pub fn as_str(self) -> &'static str {
        match self {
            RecordKind::A => "A",
            RecordKind::Aaaa => "AAAA",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Policy {
    /// Active-passive: the first Up endpoint in configuration order.
    Failover,
    /// The Up endpoint with the lowest round-trip time measured from the client's region.
    Latency,
    /// Active-active: every Up endpoint.
    All,
    /// One Up endpoint per answer, chosen with probability proportional to its weight.
    Weighted,
}

impl Policy {
    pub fn as_str(self) -> &'static str {
        match self {
            Policy::Failover => "failover",
            Policy::Latency => "latency",
            Policy::All => "all",
            Policy::Weighted => "weighted",
        }
    }
}

/// What a record answers when no endpoint is Up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WhenAllDown {
    /// Fail open: answer every endpoint.
    All,
    /// An empty answer (NODATA).
    None,
    /// These static values.
    Fallback(Vec<IpAddr>),
}

/// A managed DNS record: name + type, answered from verdicts under a policy.
#[derive(Debug, Clone)]
pub struct RecordSpec {
    /// Lower-case, fully qualified (`www.example.com.`).
    pub name: String,
    pub kind: RecordKind,
    pub ttl: u32,
    pub policy: Policy,
    pub when_all_down: WhenAllDown,
    pub endpoints: Vec<RecordEndpoint>,
    pub route53: Option<Route53Target>,
    /// The recovery time objective: how long a failover may take, end to end (drills).
    pub rto: Option<Duration>,
}

#[derive(Debug, Clone)]
pub struct RecordEndpoint {
    pub id: EndpointId,
    pub address: IpAddr,
    pub weight: u32,
    /// The AWS Region of the endpoint, for Route53 latency records (`aws_region`).
    pub aws_region: Option<String>,
}

/// One signed zone (`[dns.dnssec."example.com"]`).
#[derive(Debug, Clone)]
pub struct DnssecSettings {
    /// The zone's name as written.
    pub zone: String,
    /// Lower-case wire form.
    pub origin: Vec<u8>,
    pub algorithm: crate::dns::dnssec::Algorithm,
    pub keys: Vec<DnssecKeySettings>,
    /// How long a signature is valid from when it is made.
    pub signature_validity: Duration,
    /// Signatures are made again this long (plus up to a tenth of it) before they expire.
    pub signature_refresh: Duration,
}

#[derive(Debug, Clone)]
pub struct DnssecKeySettings {
    pub file: PathBuf,
    pub role: crate::dns::dnssec::Role,
    pub state: crate::dns::dnssec::KeyState,
    /// The key read from `file` when the configuration was checked (None: it could not be,
    /// and validation said why).
    pub key: Option<std::sync::Arc<crate::dns::dnssec::ZoneKey>>,
}

#[derive(Debug, Clone)]
pub struct DnsSettings {
    pub listen: Vec<SocketAddr>,
    pub zones_dir: PathBuf,
    /// Client networks -> region, most specific first (latency steering).
    pub client_regions: Vec<(ipnet::IpNet, Region)>,
    /// Networks allowed to transfer the zones (AXFR/IXFR over TCP); empty: nobody.
    pub allow_transfer: Vec<ipnet::IpNet>,
    /// Interfaces whose UDP queries are served over AF_XDP (Linux); empty: sockets only.
    pub xdp: Vec<String>,
    /// The largest UDP response, whatever the client offers (RFC 6891 section 6.2.5; 1232
    /// like Knot and NSD, to avoid IP fragmentation).
    pub max_udp_payload: u16,
    /// Leave out the optional additional records (addresses of NS, MX, SRV targets).
    pub minimal_responses: bool,
    /// Response rate limiting over UDP.
    pub rrl: RrlSettings,
    /// The zones signed online.
    pub dnssec: Vec<DnssecSettings>,
}

/// The limiter's settings (`[dns.rrl]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RrlSettings {
    /// Responses per second per bucket; 0 turns limiting off.
    pub responses_per_second: u32,
    /// Every this many limited responses, one is sent truncated instead of dropped (0: none).
    pub slip: u32,
    pub ipv4_prefix: u8,
    pub ipv6_prefix: u8,
    /// Networks never limited.
    pub exempt: Vec<ipnet::IpNet>,
    /// Buckets in the table.
    pub table_size: usize,
}

impl Default for RrlSettings {
    fn default() -> Self {
        Self {
            responses_per_second: 200,
            slip: 2,
            ipv4_prefix: 24,
            ipv6_prefix: 56,
            exempt: Vec::new(),
            table_size: 65_536,
        }
    }
}

#[derive(Debug, Clone)]
pub struct AdminSettings {
    pub listen: SocketAddr,
    /// Bearer token required by the admin write API (overrides); none: writes are refused.
    pub token: Option<Secret>,
    /// Bearer token required to read status and metrics (the admin token works too); none:
    /// reads are open to whoever reaches the listener.
    pub read_token: Option<Secret>,
    /// Host names (lower case, without port) requests may be addressed to, besides IP
    /// addresses, `localhost` and the hosts of `[[server]] admin` URLs (DNS rebinding).
    pub hosts: Vec<String>,
    /// Where overrides and their audit log are kept.
    pub state_dir: PathBuf,
    /// Export the series per endpoint and prober region (off: per region, per endpoint).
    pub endpoint_region_metrics: bool,
}

/// Where serving processes keep overrides (`[state]`).
#[derive(Debug, Clone, Default)]
pub enum StateSettings {
    /// Each process in its own state directory.
    #[default]
    File,
    /// The whole fleet on etcd.
    Etcd(EtcdSettings),
}

#[derive(Debug, Clone)]
pub struct EtcdSettings {
    pub endpoints: Vec<url::Url>,
    /// Every key starts with it: one fleet per prefix.
    pub prefix: String,
    /// PEM: the CA of the etcd servers; the client certificate and key, when required.
    pub ca: Option<Vec<u8>>,
    pub identity: Option<Vec<u8>>,
    /// User name and password, when etcd has authentication enabled.
    pub auth: Option<(String, Secret)>,
}

/// One thing wrong with the configuration, at a path inside it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub path: String,
    pub message: String,
    /// The line of the configuration file where `path` is written, when it is.
    pub line: Option<usize>,
}

impl Problem {
    /// A problem of the setting at `path` (its line is found from the path).
    pub fn new(path: impl Into<String>, message: impl Into<String>) -> Self {
        Problem {
            path: path.into(),
            message: message.into(),
            line: None,
        }
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path, self.message)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{file}: cannot read: {source}")]
    Read {
        file: String,
        source: std::io::Error,
    },
    #[error("{file}: {message}")]
    Syntax { file: String, message: String },
    #[error("{file}: {} problem(s):\n{}", problems.len(), list(problems))]
    Invalid {
        file: String,
        problems: Vec<Problem>,
    },
}

/// `problems` of the configuration `file` (its `text`), each at the line where its setting
/// is written, in the order of the file: those validation finds, and those found later in the
/// files it names (records against the zones, CA files, prober keys).
pub fn located(file: &str, text: &str, mut problems: Vec<Problem>) -> ConfigError {
    let at = locate::Locator::new(text);
    for problem in &mut problems {
        problem.line = problem.line.or_else(|| at.line(&problem.path));
    }
    // In the order of the file (stable: problems of one line keep theirs).
    problems.sort_by_key(|p| p.line.unwrap_or(usize::MAX));
    ConfigError::Invalid {
        file: file.to_string(),
        problems,
    }
}

/// The zones directory a configuration's `text` names (or the default), under `base`, read
/// from the TOML alone: so that a configuration with problems still has its zone files
/// checked.
pub fn zones_dir_of(text: &str, base: &Path) -> Option<PathBuf> {
    let table: toml::Table = toml::from_str(text).ok()?;
    let dir = match table.get("dns").and_then(|d| d.get("zones_dir")) {
        Some(dir) => dir.as_str()?,
        None => defaults::ZONES_DIR,
    };
    Some(base.join(dir))
}

fn list(problems: &[Problem]) -> String {
    problems
        .iter()
        .map(|p| match p.line {
            Some(line) => format!("  line {line}: {p}"),
            None => format!("  {p}"),
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Which of the files a configuration names a process reads and checks as it loads it: a
/// prober host holds neither the fleet's etcd credentials nor the zones' signing keys, and a
/// Route53 reconciler's host no signing keys; each role is asked only for its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Files {
    /// `[state]`: etcd's CA, client certificate and key, password.
    pub state: bool,
    /// `[dns.dnssec]`: the signing keys.
    pub dnssec_keys: bool,
}

impl Files {
    /// Every file (the DNS server, `check-config`, the commands).
    pub const ALL: Files = Files {
        state: true,
        dnssec_keys: true,
    };
    /// `vantage probe`.
    pub const PROBER: Files = Files {
        state: false,
        dnssec_keys: false,
    };
    /// `vantage route53`.
    pub const ROUTE53: Files = Files {
        state: true,
        dnssec_keys: false,
    };
}

impl Settings {
    /// What is valid but weaker than it should be (check-config prints these; servers log
    /// them at start).
    pub fn warnings(&self) -> Vec<String> {
        let mut warnings = Vec::new();
        let probers = self.regions.len();
        let required = self.cluster.quorum.required(probers);
        if probers >= 2 && required >= probers {
            warnings.push(format!(
                "cluster.quorum: {required} of {probers} probers must agree, so losing any one prober freezes every verdict (fail static: no failover until it is back); use an odd number of probers with quorum = \"majority\" (3 tolerate the loss of one, 5 of two), or a lower quorum"
            ));
        }
        for (region, url) in &self.prober_urls {
            let identity = self.prober_identities.get(region);
            if identity.is_none_or(|i| i.public_keys.is_empty()) {
                warnings.push(format!(
                    "prober {region} has no public_key: its reports are signed with the fleet secret, which every DNS server holds, so whoever steals it can forge every region's vote; give each prober its own key (`vantage keygen`)"
                ));
            }
            if url.scheme() == "http" {
                warnings.push(format!(
                    "prober {region} is reached over plain http ({url}): its reports can be read on the way; serve them over https (tls_cert_file, tls_key_file; `vantage keygen --tls-name`)"
                ));
            }
        }
        if let StateSettings::Etcd(etcd) = &self.state {
            // Whoever can write to the fleet's etcd can drain or force any endpoint.
            if etcd.endpoints.iter().any(|u| u.scheme() == "http") {
                warnings.push(
                    "state.endpoints: etcd is reached over plain http: overrides (which change answers) travel unprotected; use https with ca_file".to_string(),
                );
            }
            if etcd.identity.is_none() && etcd.auth.is_none() {
                warnings.push(
                    "state: etcd is used without a client certificate or a user: whoever reaches it can set overrides for the whole fleet; set cert_file/key_file or username/password_file".to_string(),
                );
            }
        }
        warnings
    }

    /// Reads and validates a configuration file, and every file it names.
    pub fn load(path: &Path) -> Result<Settings, ConfigError> {
        Settings::load_for(path, Files::ALL)
    }

    /// Reads and validates a configuration file, and the files it names that `files` says
    /// this process reads.
    pub fn load_for(path: &Path, files: Files) -> Result<Settings, ConfigError> {
        let file = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            file: file.clone(),
            source,
        })?;
        let base = path.parent().unwrap_or(Path::new("."));
        Settings::from_toml_for(&text, &file, base, files)
    }

    /// Parses and validates configuration text; `file` names it in errors, `base` anchors
    /// relative paths.
    pub fn from_toml(text: &str, file: &str, base: &Path) -> Result<Settings, ConfigError> {
        Settings::from_toml_for(text, file, base, Files::ALL)
    }

    fn from_toml_for(
        text: &str,
        file: &str,
        base: &Path,
        files: Files,
    ) -> Result<Settings, ConfigError> {
        let invalid = |problems: Vec<Problem>| located(file, text, problems);
        // The common case: the file fits; validation lists every problem in its values.
        if let Ok(raw) = toml::from_str::<raw::RawConfig>(text) {
            return validate::validate(raw, base, files).map_err(invalid);
        }
        // Valid TOML that does not fit: every misfit (unknown keys, wrong types, missing
        // keys) at its path, and, in the same pass, every problem in the values that fit.
        let mut table: toml::Table = toml::from_str(text).map_err(|e| ConfigError::Syntax {
            file: file.to_string(),
            message: e.to_string(),
        })?;
        let shape = shape::check(&mut table);
        let mut problems = shape.problems;
        match toml::Value::Table(table).try_into::<raw::RawConfig>() {
            Ok(raw) => {
                if let Err(more) = validate::validate(raw, base, files) {
                    problems.extend(more.into_iter().filter(|p| {
                        !shape
                            .placeholders
                            .iter()
                            .any(|missing| p.path.starts_with(missing.as_str()))
                    }));
                }
            }
            Err(e) => problems.push(Problem {
                path: "(file)".into(),
                message: e.message().to_string(),
                line: None,
            }),
        }
        Err(invalid(problems))
    }

    pub fn endpoint(&self, id: &EndpointId) -> Option<&Arc<EndpointSpec>> {
        self.endpoints.iter().find(|e| &e.id == id)
    }
}
