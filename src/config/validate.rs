//! Raw configuration -> validated settings, collecting every problem with its path.

use std::{
    collections::{BTreeMap, HashMap, HashSet},
    net::{IpAddr, SocketAddr},
    path::Path,
    sync::Arc,
    time::Duration,
};

use super::{
    AdminSettings, CheckSpec, Cluster, DnsSettings, EndpointSpec, Policy, Problem, Protocol,
    QuorumRule, RecordEndpoint, RecordKind, RecordSpec, Settings, WhenAllDown, defaults,
    raw::{RawCheck, RawConfig, RawEndpoint, RawQuorum, RawRecord},
};
use crate::model::{EndpointId, Region};

/// Parses a duration written with its unit (`"800ms"`, `"5s"`, `"1m"`).
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    humantime::parse_duration(text.trim()).map_err(|e| {
        format!("not a duration ({e}); write it with a unit, e.g. \"500ms\" or \"5s\"")
    })
}

#[derive(Default)]
struct Problems(Vec<Problem>);

impl Problems {
    fn add(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.0.push(Problem {
            path: path.into(),
            message: message.into(),
        });
    }

    fn duration(&mut self, path: &str, value: Option<&String>, default: Duration) -> Duration {
        let Some(text) = value else { return default };
        match parse_duration(text) {
            Ok(d) if d.is_zero() => {
                self.add(path, "must be greater than zero");
                default
            }
            Ok(d) => d,
            Err(e) => {
                self.add(path, e);
                default
            }
        }
    }

    fn ranged(&mut self, path: &str, value: Option<i64>, default: u32, min: i64, max: i64) -> u32 {
        match value {
            None => default,
            Some(v) if (min..=max).contains(&v) => v as u32,
            Some(v) => {
                self.add(path, format!("{v} is out of range; use {min}..={max}"));
                default
            }
        }
    }
}

pub(super) fn validate(raw: RawConfig, base: &Path) -> Result<Settings, Vec<Problem>> {
    let mut p = Problems::default();

    let regions = validate_probers(&raw, &mut p);
    let cluster = validate_cluster(&raw, regions.len(), &mut p);
    let checks: BTreeMap<String, Arc<CheckSpec>> = raw
        .check
        .iter()
        .map(|(name, check)| {
            let spec = validate_check(name, check, base, &mut p);
            (name.clone(), Arc::new(spec))
        })
        .collect();

    let mut endpoints: Vec<Arc<EndpointSpec>> = Vec::new();
    let mut endpoint_paths: HashMap<EndpointId, String> = HashMap::new();
    let mut records = Vec::new();
    let mut seen_records: HashMap<(String, RecordKind), usize> = HashMap::new();
    for (i, record) in raw.record.iter().enumerate() {
        let path = format!("record[{i}]");
        let Some(spec) = validate_record(&path, record, &checks, &mut endpoints, &mut p) else {
            continue;
        };
        if let Some(first) = seen_records.insert((spec.name.clone(), spec.kind), i) {
            p.add(
                format!("{path}.name"),
                format!(
                    "{} {} is already defined by record[{first}]",
                    spec.name,
                    spec.kind.as_str()
                ),
            );
        }
        for (j, e) in record.endpoints.iter().enumerate() {
            let id = endpoint_id(e);
            endpoint_paths
                .entry(id)
                .or_insert_with(|| format!("{path}.endpoints[{j}]"));
        }
        records.push(spec);
    }
    // An endpoint id names one probe target; the same id with different settings is ambiguous.
    let mut by_id: HashMap<&EndpointId, &Arc<EndpointSpec>> = HashMap::new();
    let mut conflicts = HashSet::new();
    for e in &endpoints {
        if let Some(first) = by_id.get(&e.id) {
            if *first != e && conflicts.insert(e.id.clone()) {
                p.add(
                    endpoint_paths.get(&e.id).cloned().unwrap_or_default(),
                    format!(
                        "endpoint {} appears in several records with different addresses, \
                         checks or check hosts; give each a distinct `name`",
                        e.id
                    ),
                );
            }
        } else {
            by_id.insert(&e.id, e);
        }
    }
    let mut unique: Vec<Arc<EndpointSpec>> = Vec::new();
    for e in endpoints {
        if !unique.iter().any(|u| u.id == e.id) {
            unique.push(e);
        }
    }

    let dns = validate_dns(&raw, base, &mut p);
    let admin = AdminSettings {
        listen: match &raw.admin.listen {
            None => parse_socket(defaults::ADMIN_LISTEN)
                .unwrap_or(SocketAddr::from(([127, 0, 0, 1], 8053))),
            Some(text) => parse_socket(text).unwrap_or_else(|e| {
                p.add("admin.listen", e);
                SocketAddr::from(([127, 0, 0, 1], 8053))
            }),
        },
    };

    if p.0.is_empty() {
        Ok(Settings {
            cluster,
            regions,
            endpoints: unique,
            records,
            dns,
            admin,
        })
    } else {
        Err(p.0)
    }
}

fn validate_probers(raw: &RawConfig, p: &mut Problems) -> Vec<Region> {
    if raw.prober.is_empty() {
        p.add(
            "prober",
            "no prober configured; add at least one [[prober]] with a region",
        );
    }
    let mut regions: Vec<Region> = Vec::new();
    for (i, prober) in raw.prober.iter().enumerate() {
        let name = prober.region.trim();
        if name.is_empty()
            || !name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
        {
            p.add(
                format!("prober[{i}].region"),
                format!(
                    "{:?} is not a region name (letters, digits, '-', '_', '.')",
                    prober.region
                ),
            );
        } else if regions.iter().any(|r| r.as_str() == name) {
            p.add(
                format!("prober[{i}].region"),
                format!("region {name} is listed twice"),
            );
        } else {
            regions.push(Region::new(name));
        }
    }
    regions
}

fn validate_cluster(raw: &RawConfig, probers: usize, p: &mut Problems) -> Cluster {
    let quorum = match &raw.cluster.quorum {
        None => QuorumRule::Majority,
        Some(RawQuorum::Word(w)) if w == "majority" => QuorumRule::Majority,
        Some(RawQuorum::Word(w)) => {
            p.add(
                "cluster.quorum",
                format!("{w:?} is not a quorum; use \"majority\" or a number of probers"),
            );
            QuorumRule::Majority
        }
        Some(RawQuorum::Count(k)) if *k >= 1 && (*k as usize) <= probers.max(1) => {
            QuorumRule::AtLeast(*k as usize)
        }
        Some(RawQuorum::Count(k)) => {
            p.add(
                "cluster.quorum",
                format!(
                    "{k} is out of range; use 1..={} (the number of probers)",
                    probers.max(1)
                ),
            );
            QuorumRule::Majority
        }
    };
    Cluster {
        quorum,
        stale_after: p.duration(
            "cluster.stale_after",
            raw.cluster.stale_after.as_ref(),
            defaults::STALE_AFTER,
        ),
        startup_grace: p.duration(
            "cluster.startup_grace",
            raw.cluster.startup_grace.as_ref(),
            defaults::STARTUP_GRACE,
        ),
    }
}

fn validate_check(name: &str, raw: &RawCheck, base: &Path, p: &mut Problems) -> CheckSpec {
    let path = format!("check.{name}");
    let protocol = match raw.protocol.as_deref() {
        None | Some("https") => Protocol::Https,
        Some("http") => Protocol::Http,
        Some("tcp") => Protocol::Tcp,
        Some(other) => {
            p.add(
                format!("{path}.protocol"),
                format!("{other:?} is not a protocol; use https, http or tcp"),
            );
            Protocol::Https
        }
    };
    let default_port = match protocol {
        Protocol::Https => 443,
        Protocol::Http => 80,
        Protocol::Tcp => {
            if raw.port.is_none() {
                p.add(format!("{path}.port"), "a tcp check needs a port");
            }
            1
        }
    };
    let port = p.ranged(&format!("{path}.port"), raw.port, default_port, 1, 65535) as u16;
    let check_path = raw
        .path
        .clone()
        .unwrap_or_else(|| defaults::HTTP_PATH.to_string());
    if !check_path.starts_with('/') {
        p.add(
            format!("{path}.path"),
            format!("{check_path:?} must start with '/'"),
        );
    }
    let interval = p.duration(
        &format!("{path}.interval"),
        raw.interval.as_ref(),
        defaults::INTERVAL,
    );
    let timeout = p.duration(
        &format!("{path}.timeout"),
        raw.timeout.as_ref(),
        defaults::TIMEOUT.min(interval),
    );
    if timeout > interval {
        p.add(
            format!("{path}.timeout"),
            format!("{timeout:?} is longer than the interval ({interval:?}); checks would overlap"),
        );
    }
    let connect_timeout = p.duration(
        &format!("{path}.connect_timeout"),
        raw.connect_timeout.as_ref(),
        timeout,
    );
    if connect_timeout > timeout {
        p.add(
            format!("{path}.connect_timeout"),
            format!("{connect_timeout:?} is longer than the timeout ({timeout:?})"),
        );
    }
    let rise = p.ranged(&format!("{path}.rise"), raw.rise, defaults::RISE, 1, 100);
    let fall = p.ranged(&format!("{path}.fall"), raw.fall, defaults::FALL, 1, 100);
    let expect_status = match &raw.expect_status {
        None => defaults::EXPECT_STATUS.to_vec(),
        Some(codes) if codes.is_empty() => {
            p.add(
                format!("{path}.expect_status"),
                "must list at least one status code",
            );
            defaults::EXPECT_STATUS.to_vec()
        }
        Some(codes) => codes
            .iter()
            .enumerate()
            .filter_map(|(i, c)| {
                if (100..=599).contains(c) {
                    Some(*c as u16)
                } else {
                    p.add(
                        format!("{path}.expect_status[{i}]"),
                        format!("{c} is not an HTTP status"),
                    );
                    None
                }
            })
            .collect(),
    };
    let is_http = protocol != Protocol::Tcp;
    for (field, set) in [
        ("path", raw.path.is_some()),
        ("expect_status", raw.expect_status.is_some()),
        ("expect_body", raw.expect_body.is_some()),
        ("host", raw.host.is_some()),
    ] {
        if set && !is_http {
            p.add(
                format!("{path}.{field}"),
                "only applies to http and https checks",
            );
        }
    }
    for (field, set) in [
        ("tls_verify", raw.tls_verify.is_some()),
        ("ca_file", raw.ca_file.is_some()),
    ] {
        if set && protocol != Protocol::Https {
            p.add(format!("{path}.{field}"), "only applies to https checks");
        }
    }
    if let Some(host) = &raw.host {
        if let Err(e) = check_dns_name(host) {
            p.add(format!("{path}.host"), e);
        }
    }
    let ca_file = raw.ca_file.as_ref().map(|f| base.join(f));
    if let Some(f) = &ca_file {
        if !f.is_file() {
            p.add(
                format!("{path}.ca_file"),
                format!("{} does not exist", f.display()),
            );
        }
    }
    CheckSpec {
        name: name.to_string(),
        protocol,
        port,
        path: check_path,
        interval,
        timeout,
        connect_timeout,
        rise,
        fall,
        expect_status,
        expect_body: raw.expect_body.clone(),
        host: raw
            .host
            .as_ref()
            .map(|h| h.trim_end_matches('.').to_ascii_lowercase()),
        tls_verify: raw.tls_verify.unwrap_or(true),
        ca_file,
    }
}

fn endpoint_id(e: &RawEndpoint) -> EndpointId {
    EndpointId::new(
        e.name
            .clone()
            .unwrap_or_else(|| e.address.trim().to_string()),
    )
}

fn validate_record(
    path: &str,
    raw: &RawRecord,
    checks: &BTreeMap<String, Arc<CheckSpec>>,
    endpoints: &mut Vec<Arc<EndpointSpec>>,
    p: &mut Problems,
) -> Option<RecordSpec> {
    let name = match check_dns_name(&raw.name) {
        Ok(()) => {
            let mut n = raw.name.trim().to_ascii_lowercase();
            if !n.ends_with('.') {
                n.push('.');
            }
            Some(n)
        }
        Err(e) => {
            p.add(format!("{path}.name"), e);
            None
        }
    };
    let kind = match raw.rtype.as_deref().map(str::to_ascii_uppercase).as_deref() {
        None | Some("A") => RecordKind::A,
        Some("AAAA") => RecordKind::Aaaa,
        Some(other) => {
            p.add(
                format!("{path}.type"),
                format!("{other:?} is not supported; use A or AAAA"),
            );
            RecordKind::A
        }
    };
    let ttl = p.ranged(
        &format!("{path}.ttl"),
        raw.ttl,
        defaults::TTL,
        0,
        i32::MAX as i64,
    );
    let policy = match raw.policy.as_deref() {
        None | Some("failover") => Policy::Failover,
        Some("all") => Policy::All,
        Some("weighted") => Policy::Weighted,
        Some(other) => {
            p.add(
                format!("{path}.policy"),
                format!("{other:?} is not a policy; use failover, all or weighted"),
            );
            Policy::Failover
        }
    };
    let family_ok = |ip: &IpAddr| match kind {
        RecordKind::A => ip.is_ipv4(),
        RecordKind::Aaaa => ip.is_ipv6(),
    };
    let when_all_down = match raw.when_all_down.as_deref() {
        None | Some("all") => WhenAllDown::All,
        Some("none") => WhenAllDown::None,
        Some("fallback") => {
            let values = raw.fallback.clone().unwrap_or_default();
            if values.is_empty() {
                p.add(
                    format!("{path}.fallback"),
                    "when_all_down = \"fallback\" needs a list of fallback addresses",
                );
            }
            let mut ips = Vec::new();
            for (i, v) in values.iter().enumerate() {
                match v.trim().parse::<IpAddr>() {
                    Ok(ip) if family_ok(&ip) => ips.push(ip),
                    Ok(ip) => p.add(
                        format!("{path}.fallback[{i}]"),
                        format!("{ip} does not fit a {} record", kind.as_str()),
                    ),
                    Err(_) => p.add(
                        format!("{path}.fallback[{i}]"),
                        format!("{v:?} is not an IP address"),
                    ),
                }
            }
            WhenAllDown::Fallback(ips)
        }
        Some(other) => {
            p.add(
                format!("{path}.when_all_down"),
                format!("{other:?} is not valid; use all, none or fallback"),
            );
            WhenAllDown::All
        }
    };
    if raw.fallback.is_some() && !matches!(when_all_down, WhenAllDown::Fallback(_)) {
        p.add(
            format!("{path}.fallback"),
            "only used with when_all_down = \"fallback\"",
        );
    }
    if raw.endpoints.is_empty() {
        p.add(
            format!("{path}.endpoints"),
            "a record needs at least one endpoint",
        );
    }

    let mut record_endpoints = Vec::new();
    for (j, e) in raw.endpoints.iter().enumerate() {
        let epath = format!("{path}.endpoints[{j}]");
        let address = match e.address.trim().parse::<IpAddr>() {
            Ok(ip) if family_ok(&ip) => Some(ip),
            Ok(ip) => {
                p.add(
                    format!("{epath}.address"),
                    format!("{ip} does not fit a {} record", kind.as_str()),
                );
                None
            }
            Err(_) => {
                p.add(
                    format!("{epath}.address"),
                    format!("{:?} is not an IP address", e.address),
                );
                None
            }
        };
        let dial = match &e.check_address {
            None => address,
            Some(text) => match text.trim().parse::<IpAddr>() {
                Ok(ip) => Some(ip),
                Err(_) => {
                    p.add(
                        format!("{epath}.check_address"),
                        format!("{text:?} is not an IP address"),
                    );
                    None
                }
            },
        };
        let check_name = e.check.as_ref().or(raw.check.as_ref());
        let check = match check_name {
            Some(c) => match checks.get(c) {
                Some(spec) => Some(spec.clone()),
                None => {
                    let field = if e.check.is_some() {
                        format!("{epath}.check")
                    } else {
                        format!("{path}.check")
                    };
                    p.add(
                        field,
                        format!("no check named {c:?}; define it as [check.{c}]"),
                    );
                    None
                }
            },
            None if checks.len() == 1 => checks.values().next().cloned(),
            None => {
                p.add(
                    format!("{path}.check"),
                    format!(
                        "missing; name one of the configured checks ({})",
                        checks.keys().cloned().collect::<Vec<_>>().join(", ")
                    ),
                );
                None
            }
        };
        let weight = p.ranged(&format!("{epath}.weight"), e.weight, 1, 0, 255);
        if e.weight.is_some() && policy != Policy::Weighted {
            p.add(
                format!("{epath}.weight"),
                "only used with policy = \"weighted\"",
            );
        }
        let site = match &e.site {
            Some(s) if s.trim().is_empty() => {
                p.add(format!("{epath}.site"), "must not be empty");
                None
            }
            Some(s) => Some(Region::new(s.trim())),
            None => None,
        };
        if let Some(name) = &e.name {
            if name.trim().is_empty() || name.chars().any(|c| c.is_whitespace() || c.is_control()) {
                p.add(
                    format!("{epath}.name"),
                    format!("{name:?} is not a usable endpoint name"),
                );
            }
        }
        let (Some(address), Some(dial), Some(check), Some(rname)) =
            (address, dial, check, name.as_ref())
        else {
            continue;
        };
        if record_endpoints
            .iter()
            .any(|r: &RecordEndpoint| r.address == address)
        {
            p.add(
                format!("{epath}.address"),
                format!("{address} is listed twice in this record"),
            );
            continue;
        }
        let id = endpoint_id(e);
        let host = check
            .host
            .clone()
            .unwrap_or_else(|| rname.trim_end_matches('.').to_string());
        endpoints.push(Arc::new(EndpointSpec {
            id: id.clone(),
            address,
            site,
            check,
            dial,
            host,
        }));
        record_endpoints.push(RecordEndpoint {
            id,
            address,
            weight,
        });
    }
    if policy == Policy::Weighted
        && !record_endpoints.is_empty()
        && record_endpoints.iter().all(|e| e.weight == 0)
    {
        p.add(
            format!("{path}.endpoints"),
            "every weight is 0; give at least one endpoint a weight",
        );
    }

    Some(RecordSpec {
        name: name?,
        kind,
        ttl,
        policy,
        when_all_down,
        endpoints: record_endpoints,
    })
}

fn validate_dns(raw: &RawConfig, base: &Path, p: &mut Problems) -> DnsSettings {
    let listen = match &raw.dns.listen {
        None => {
            vec![parse_socket(defaults::DNS_LISTEN).unwrap_or(SocketAddr::from(([0, 0, 0, 0], 53)))]
        }
        Some(list) => {
            if list.is_empty() {
                p.add("dns.listen", "must list at least one address:port");
            }
            list.iter()
                .enumerate()
                .filter_map(|(i, s)| {
                    parse_socket(s)
                        .map_err(|e| p.add(format!("dns.listen[{i}]"), e))
                        .ok()
                })
                .collect()
        }
    };
    let zones_dir = base.join(raw.dns.zones_dir.as_deref().unwrap_or(defaults::ZONES_DIR));
    DnsSettings { listen, zones_dir }
}

fn parse_socket(text: &str) -> Result<SocketAddr, String> {
    text.trim().parse().map_err(|_| {
        format!("{text:?} is not an address:port (e.g. \"127.0.0.1:53\" or \"[::1]:53\")")
    })
}

/// Checks a DNS name as written in the configuration (trailing dot optional).
fn check_dns_name(name: &str) -> Result<(), String> {
    let trimmed = name.trim().trim_end_matches('.');
    if trimmed.is_empty() {
        return Err("empty name".into());
    }
    if trimmed.len() > 253 {
        return Err(format!("{name:?} is longer than 253 characters"));
    }
    for label in trimmed.split('.') {
        if label.is_empty() || label.len() > 63 {
            return Err(format!(
                "{name:?} is not a DNS name (empty label or label over 63 characters)"
            ));
        }
        if !label
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        {
            return Err(format!(
                "{name:?} is not a DNS name (use letters, digits, '-', '_')"
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::super::{ConfigError, Settings};

    fn problems(text: &str) -> Vec<String> {
        match Settings::from_toml(text, "t.toml", Path::new(".")) {
            Err(ConfigError::Invalid { problems, .. }) => {
                problems.iter().map(|p| p.to_string()).collect()
            }
            Err(e) => panic!("unexpected error kind: {e}"),
            Ok(_) => Vec::new(),
        }
    }

    const GOOD: &str = r#"
        [[prober]]
        region = "a"
        [[prober]]
        region = "b"
        [[prober]]
        region = "c"
        [check.web]
        protocol = "http"
        port = 8080
        interval = "1s"
        timeout = "500ms"
        [[record]]
        name = "www.example.com"
        check = "web"
        endpoints = [{ address = "192.0.2.1" }, { address = "192.0.2.2", site = "b" }]
    "#;

    #[test]
    fn a_good_config_validates_with_defaults() {
        let s = Settings::from_toml(GOOD, "t.toml", Path::new(".")).expect("valid");
        assert_eq!(s.regions.len(), 3);
        assert_eq!(s.records[0].name, "www.example.com.");
        assert_eq!(s.endpoints.len(), 2);
        assert_eq!(s.endpoints[0].host, "www.example.com");
        assert_eq!(s.endpoints[0].check.rise, super::defaults::RISE);
        assert_eq!(s.cluster.quorum.required(s.regions.len()), 2);
    }

    #[test]
    fn every_problem_is_reported_with_its_path() {
        let text = r#"
            [cluster]
            quorum = 5
            stale_after = "soon"
            [[prober]]
            region = "a"
            [check.web]
            protocol = "gopher"
            rise = 0
            [[record]]
            name = "www.example.com"
            policy = "random"
            endpoints = [{ address = "1.2.3" }, { address = "2001:db8::1" }]
            [[record]]
            name = "api..example.com"
            check = "nope"
            endpoints = [{ address = "192.0.2.1" }]
        "#;
        let found = problems(text);
        for expected in [
            "cluster.quorum: 5 is out of range",
            "cluster.stale_after: not a duration",
            "check.web.protocol: \"gopher\" is not a protocol",
            "check.web.rise: 0 is out of range",
            "record[0].policy: \"random\" is not a policy",
            "record[0].endpoints[0].address: \"1.2.3\" is not an IP address",
            "record[0].endpoints[1].address: 2001:db8::1 does not fit a A record",
            "record[1].name: \"api..example.com\" is not a DNS name",
            "record[1].check: no check named \"nope\"",
        ] {
            assert!(
                found.iter().any(|f| f.starts_with(expected)),
                "missing {expected:?} in {found:#?}"
            );
        }
    }

    #[test]
    fn unknown_fields_are_rejected() {
        let err = Settings::from_toml("[dns]\nlisten = []\nlisen = 1\n", "t.toml", Path::new("."))
            .expect_err("unknown field");
        assert!(err.to_string().contains("lisen"), "{err}");
    }

    #[test]
    fn same_endpoint_with_different_checks_is_ambiguous() {
        let text = format!(
            "{GOOD}\n[check.other]\nprotocol = \"tcp\"\nport = 22\n[[record]]\nname = \"x.example.com\"\ncheck = \"other\"\nendpoints = [{{ address = \"192.0.2.1\" }}]\n"
        );
        let found = problems(&text);
        assert!(
            found
                .iter()
                .any(|f| f.contains("give each a distinct `name`")),
            "{found:#?}"
        );
    }
}
