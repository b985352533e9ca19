//! Raw configuration -> validated settings, collecting every problem with its path.

use std::{
    collections::{BTreeMap, HashMap},
    net::SocketAddr,
    path::Path,
    sync::Arc,
};

use super::{
    AdminSettings, CheckSpec, Cluster, DnsSettings, DrillSettings, EndpointSpec, EtcdSettings,
    FleetServer, ProberIdentity, Problem, QuorumRule, RecordKind, RecordSpec, Route53Settings,
    RrlSettings, Secret, ServerRole, Settings, StateSettings, checks, defaults,
    problems::Problems,
    raw::{RawConfig, RawOneOrMany, RawQuorum},
    records,
};
use crate::model::Region;

pub(super) fn validate(
    raw: RawConfig,
    base: &Path,
    files: super::Files,
) -> Result<Settings, Vec<Problem>> {
    let mut p = Problems::default();

    let regions = validate_probers(&raw, &mut p);
    let cluster = validate_cluster(&raw, regions.len(), base, &mut p);
    let prober_urls = validate_prober_urls(&raw, &regions, &mut p);
    let prober_identities = validate_prober_identities(&raw, base, &prober_urls, &mut p);
    let checks: BTreeMap<String, Arc<CheckSpec>> = raw
        .check
        .iter()
        .map(|(name, check)| {
            let spec = checks::validate_check(name, check, base, &mut p);
            (name.clone(), Arc::new(spec))
        })
        .collect();
    for check in checks.values() {
        checks::check_timing(&cluster, check, &mut p);
    }

    // Every record, with the probe target of each of its endpoints (same order).
    let mut records: Vec<(RecordSpec, Vec<Arc<EndpointSpec>>)> = Vec::new();
    let mut seen_records: HashMap<(String, RecordKind), usize> = HashMap::new();
    for (i, record) in raw.record.iter().enumerate() {
        let path = format!("record[{i}]");
        let Some((spec, targets)) = records::validate_record(&path, record, &checks, &mut p) else {
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
        records.push((spec, targets));
    }
    let endpoints = records::assign_endpoint_ids(&mut records, &mut p);
    let records = records.into_iter().map(|(spec, _)| spec).collect();

    let dns = validate_dns(&raw, base, &regions, files.dnssec_keys, &mut p);
    let admin = AdminSettings {
        listen: match &raw.admin.listen {
            None => parse_socket(defaults::ADMIN_LISTEN)
                .unwrap_or(SocketAddr::from(([127, 0, 0, 1], 8053))),
            Some(text) => parse_socket(text).unwrap_or_else(|e| {
                p.add("admin.listen", e);
                SocketAddr::from(([127, 0, 0, 1], 8053))
            }),
        },
        token: raw
            .admin
            .token_file
            .as_ref()
            .and_then(|f| read_secret("admin.token_file", &base.join(f), &mut p)),
        read_token: raw
            .admin
            .read_token_file
            .as_ref()
            .and_then(|f| read_secret("admin.read_token_file", &base.join(f), &mut p)),
        hosts: admin_hosts(&raw, &mut p),
        state_dir: state_dir(raw.admin.state_dir.as_deref(), base),
        endpoint_region_metrics: raw.admin.endpoint_region_metrics.unwrap_or(false),
    };

    let route53 = validate_route53(&raw, base, &admin.state_dir, &mut p);
    let servers = validate_servers(&raw, &mut p);
    let drill = validate_drill(&raw, &mut p);
    let state = validate_state(&raw, base, files.state, &mut p);
    if p.0.is_empty() {
        Ok(Settings {
            cluster,
            regions,
            prober_urls,
            prober_identities,
            endpoints,
            records,
            dns,
            admin,
            route53,
            servers,
            drill,
            state,
        })
    } else {
        Err(p.0)
    }
}

/// `read_files`: whether to read the TLS and password files (not on a prober's host).
fn validate_state(
    raw: &RawConfig,
    base: &Path,
    read_files: bool,
    p: &mut Problems,
) -> StateSettings {
    let s = &raw.state;
    let etcd_only = [
        ("endpoints", s.endpoints.is_some()),
        ("prefix", s.prefix.is_some()),
        ("ca_file", s.ca_file.is_some()),
        ("cert_file", s.cert_file.is_some()),
        ("key_file", s.key_file.is_some()),
        ("username", s.username.is_some()),
        ("password_file", s.password_file.is_some()),
    ];
    match s.backend.as_deref() {
        None | Some("file") => {
            for (field, set) in etcd_only {
                if set {
                    p.add(
                        format!("state.{field}"),
                        "only applies to backend = \"etcd\"",
                    );
                }
            }
            StateSettings::File
        }
        Some("etcd") => {
            let mut endpoints = Vec::new();
            match &s.endpoints {
                None => p.add(
                    "state.endpoints",
                    "the etcd endpoints, e.g. [\"https://10.0.0.1:2379\", \"https://10.0.0.2:2379\"]",
                ),
                Some(list) if list.is_empty() => {
                    p.add("state.endpoints", "list at least one etcd endpoint")
                }
                Some(list) => {
                    for (i, text) in list.iter().enumerate() {
                        match url::Url::parse(text) {
                            Ok(url) if matches!(url.scheme(), "http" | "https") => {
                                endpoints.push(url)
                            }
                            _ => p.add(
                                format!("state.endpoints[{i}]"),
                                format!("{text:?} is not an http(s) URL of an etcd server"),
                            ),
                        }
                    }
                }
            }
            let prefix = s.prefix.clone().unwrap_or_else(|| "/vantage/".into());
            if !prefix.starts_with('/') || !prefix.ends_with('/') {
                p.add(
                    "state.prefix",
                    format!("{prefix:?} must start and end with '/' (e.g. \"/vantage/prod/\")"),
                );
            }
            let read = |field: &str, file: &Option<String>, p: &mut Problems| {
                let path = base.join(file.as_ref()?);
                if !read_files {
                    return None;
                }
                match std::fs::read(&path) {
                    Ok(bytes) => Some(bytes),
                    Err(e) => {
                        p.add(format!("state.{field}"), format!("{}: {e}", path.display()));
                        None
                    }
                }
            };
            let ca = read("ca_file", &s.ca_file, p);
            let identity = match (
                read("cert_file", &s.cert_file, p),
                read("key_file", &s.key_file, p),
            ) {
                (Some(mut cert), Some(key)) => {
                    cert.extend_from_slice(&key);
                    Some(cert)
                }
                (None, None) => None,
                _ => {
                    p.add(
                        "state.cert_file",
                        "cert_file and key_file go together (the client certificate and its key)",
                    );
                    None
                }
            };
            let auth = match (&s.username, &s.password_file) {
                (Some(_), Some(_)) if !read_files => None,
                (Some(user), Some(file)) => read_secret("state.password_file", &base.join(file), p)
                    .map(|pw| (user.clone(), pw)),
                (None, None) => None,
                _ => {
                    p.add(
                        "state.username",
                        "username and password_file go together (etcd's authentication)",
                    );
                    None
                }
            };
            StateSettings::Etcd(EtcdSettings {
                endpoints,
                prefix,
                ca,
                identity,
                auth,
            })
        }
        Some(other) => {
            p.add(
                "state.backend",
                format!("{other:?} is not a state backend; use \"file\" or \"etcd\""),
            );
            StateSettings::File
        }
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
        if !Region::valid_name(name) {
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

fn validate_cluster(raw: &RawConfig, probers: usize, base: &Path, p: &mut Problems) -> Cluster {
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
    let stale_after = p.duration(
        "cluster.stale_after",
        raw.cluster.stale_after.as_ref(),
        defaults::STALE_AFTER,
    );
    let poll_interval = p.duration(
        "cluster.poll_interval",
        raw.cluster.poll_interval.as_ref(),
        defaults::POLL_INTERVAL,
    );
    let poll_timeout = p.duration(
        "cluster.poll_timeout",
        raw.cluster.poll_timeout.as_ref(),
        defaults::POLL_TIMEOUT,
    );
    // Only where reports are pulled: probers in this process report as they check.
    let pulled = raw.prober.iter().any(|pr| pr.url.is_some());
    if pulled && poll_interval + poll_timeout >= stale_after {
        p.add(
            "cluster.poll_interval",
            format!(
                "poll_interval + poll_timeout ({:?}) must be shorter than stale_after ({stale_after:?}), \
                 or pulled reports would go stale before the next pull",
                poll_interval + poll_timeout
            ),
        );
    }
    Cluster {
        quorum,
        stale_after,
        startup_grace: p.duration(
            "cluster.startup_grace",
            raw.cluster.startup_grace.as_ref(),
            defaults::STARTUP_GRACE,
        ),
        token: raw
            .cluster
            .token_file
            .as_ref()
            .and_then(|f| read_secret("cluster.token_file", &base.join(f), p)),
        poll_interval,
        poll_timeout,
        impaired_detection: raw.cluster.impaired_detection.unwrap_or(true),
        confirm_suspicions: raw.cluster.confirm_suspicions.unwrap_or(true),
        push: raw.cluster.push.unwrap_or(true),
        max_checks_in_flight: raw.cluster.max_checks_in_flight.and_then(|n| {
            if (1..=100_000).contains(&n) {
                Some(n as usize)
            } else {
                p.add(
                    "cluster.max_checks_in_flight",
                    format!("must be between 1 and 100000, not {n}"),
                );
                None
            }
        }),
    }
}

fn read_secret(field: &str, path: &Path, p: &mut Problems) -> Option<Secret> {
    match std::fs::read(path) {
        Err(e) => {
            p.add(field, format!("cannot read {}: {e}", path.display()));
            None
        }
        Ok(bytes) => {
            let text = String::from_utf8_lossy(&bytes);
            let token = text.trim();
            if token.len() < defaults::MIN_TOKEN_BYTES {
                p.add(
                    field,
                    format!(
                        "{} holds {} bytes; use a random secret of at least {} (e.g. `openssl rand -hex 32`)",
                        path.display(),
                        token.len(),
                        defaults::MIN_TOKEN_BYTES
                    ),
                );
                None
            } else if field.starts_with("admin.") && !token.bytes().all(|b| b.is_ascii_graphic()) {
                // It travels in an HTTP header (Authorization: Bearer), which only carries
                // visible ASCII: any other byte could never authenticate.
                p.add(
                    field,
                    format!(
                        "{} holds bytes other than visible ASCII (spaces, control characters or non-ASCII); the token is sent in an HTTP header, so use e.g. `openssl rand -hex 32`",
                        path.display()
                    ),
                );
                None
            } else {
                Some(Secret::new(token.as_bytes()))
            }
        }
    }
}

/// Prober URLs: all probers have one (remote probers) or none do (in-process probers).
fn validate_prober_urls(
    raw: &RawConfig,
    regions: &[Region],
    p: &mut Problems,
) -> BTreeMap<Region, url::Url> {
    let mut urls = BTreeMap::new();
    let with_url = raw.prober.iter().filter(|pr| pr.url.is_some()).count();
    if with_url != 0 && with_url != raw.prober.len() {
        p.add(
            "prober",
            "either every prober has a url (probers run as separate processes) or none has \
             (probers run inside vantage dns)",
        );
    }
    for (i, prober) in raw.prober.iter().enumerate() {
        let Some(text) = &prober.url else { continue };
        match url::Url::parse(text) {
            Ok(u) if (u.scheme() == "http" || u.scheme() == "https") && u.host().is_some() => {
                if let Some(region) = regions.iter().find(|r| r.as_str() == prober.region.trim()) {
                    urls.insert(region.clone(), u);
                }
            }
            _ => p.add(
                format!("prober[{i}].url"),
                format!("{text:?} is not an http(s) URL such as \"http://10.0.0.1:9443\""),
            ),
        }
    }
    if !urls.is_empty() && raw.cluster.token_file.is_none() {
        p.add(
            "cluster.token_file",
            "probers with a url need the fleet secret; set token_file to a file holding it",
        );
    }
    urls
}

/// Keys and TLS of every remote prober: public keys parse, an https url has something to trust
/// (the prober's pinned certificate or the fleet's private CA), and files that every host needs
/// (certificates) are readable; private keys are checked by `vantage probe` on its own host.
fn validate_prober_identities(
    raw: &RawConfig,
    base: &Path,
    urls: &BTreeMap<Region, url::Url>,
    p: &mut Problems,
) -> BTreeMap<Region, ProberIdentity> {
    let ca = raw
        .cluster
        .prober_ca_file
        .as_ref()
        .and_then(|f| read_certificates("cluster.prober_ca_file", &base.join(f), p));
    let mut identities = BTreeMap::new();
    for (i, prober) in raw.prober.iter().enumerate() {
        let path = format!("prober[{i}]");
        let Some((region, url)) = urls
            .iter()
            .find(|(r, _)| r.as_str() == prober.region.trim())
        else {
            for (field, set) in [
                ("public_key", prober.public_key.is_some()),
                ("key_file", prober.key_file.is_some()),
                ("tls_cert_file", prober.tls_cert_file.is_some()),
                ("tls_key_file", prober.tls_key_file.is_some()),
            ] {
                if set {
                    p.add(
                        format!("{path}.{field}"),
                        "only probers with a url (separate processes) sign and serve reports",
                    );
                }
            }
            continue;
        };
        let texts: Vec<&String> = match &prober.public_key {
            None => Vec::new(),
            Some(RawOneOrMany::One(key)) => vec![key],
            Some(RawOneOrMany::Many(keys)) => keys.iter().collect(),
        };
        let mut public_keys = Vec::new();
        for text in texts {
            match text.parse() {
                Ok(key) => public_keys.push(key),
                Err(e) => p.add(format!("{path}.public_key"), e),
            }
        }
        if matches!(&prober.public_key, Some(RawOneOrMany::Many(keys)) if keys.is_empty()) {
            p.add(
                format!("{path}.public_key"),
                "an empty list: give the prober's key (printed by `vantage keygen`)",
            );
        }
        if prober.key_file.is_some() && prober.public_key.is_none() {
            p.add(
                format!("{path}.public_key"),
                "key_file is set but not public_key: aggregators could not check the reports (`vantage keygen` prints it)",
            );
        }
        if prober.tls_cert_file.is_some() != prober.tls_key_file.is_some() {
            p.add(
                format!("{path}.tls_key_file"),
                "tls_cert_file and tls_key_file go together",
            );
        }
        let cert = prober.tls_cert_file.as_ref().map(|f| (f, base.join(f)));
        let https = url.scheme() == "https";
        let tls_roots = if !https {
            if cert.is_some() {
                p.add(
                    format!("{path}.url"),
                    "the prober has a TLS certificate but its url is http://; use https://",
                );
            }
            Vec::new()
        } else if let Some(ca) = &ca {
            ca.clone()
        } else if let Some((_, file)) = &cert {
            // The prober's own certificate, pinned.
            read_certificates(&format!("{path}.tls_cert_file"), file, p)
                .map(|chain| chain.into_iter().take(1).collect())
                .unwrap_or_default()
        } else {
            p.add(
                format!("{path}.url"),
                "an https url needs something to trust: the prober's tls_cert_file (pinned) or cluster.prober_ca_file",
            );
            Vec::new()
        };
        if https && cert.is_none() {
            p.add(
                format!("{path}.tls_cert_file"),
                "an https prober needs its certificate and key (tls_cert_file, tls_key_file; `vantage keygen --tls-name` writes them)",
            );
        }
        identities.insert(
            region.clone(),
            ProberIdentity {
                public_keys,
                key_file: prober.key_file.as_ref().map(|f| base.join(f)),
                tls_roots,
                tls_cert_file: cert.map(|(_, file)| file),
                tls_key_file: prober.tls_key_file.as_ref().map(|f| base.join(f)),
            },
        );
    }
    identities
}

/// The PEM certificates in `file` (at least one).
pub(crate) fn read_certificates(
    field: &str,
    file: &Path,
    p: &mut Problems,
) -> Option<Vec<rustls::pki_types::CertificateDer<'static>>> {
    use rustls::pki_types::{CertificateDer, pem::PemObject};
    let certs: Result<Vec<_>, _> = CertificateDer::pem_file_iter(file).and_then(Iterator::collect);
    match certs {
        Ok(certs) if !certs.is_empty() => Some(certs),
        Ok(_) => {
            p.add(
                field,
                format!("{}: no PEM certificate in it", file.display()),
            );
            None
        }
        Err(e) => {
            p.add(
                field,
                format!("cannot read certificates from {}: {e}", file.display()),
            );
            None
        }
    }
}

fn validate_dns(
    raw: &RawConfig,
    base: &Path,
    regions: &[Region],
    read_keys: bool,
    p: &mut Problems,
) -> DnsSettings {
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
    let mut client_regions = Vec::new();
    for (net, region) in raw.dns.client_regions.iter().flatten() {
        let path = format!("dns.client_regions.{net:?}");
        let Some(parsed) = parse_network(net) else {
            p.add(
                path,
                "not a network; write it as \"198.51.100.0/24\" or \"2001:db8::/32\"",
            );
            continue;
        };
        match regions.iter().find(|r| r.as_str() == region.trim()) {
            Some(r) => client_regions.push((parsed.trunc(), r.clone())),
            None => p.add(
                path,
                format!("{region:?} is not a configured prober region"),
            ),
        }
    }
    // Most specific network first, so that the first match is the longest prefix.
    client_regions.sort_by_key(|entry| std::cmp::Reverse(entry.0.prefix_len()));
    let mut allow_transfer = Vec::new();
    for (i, net) in raw.dns.allow_transfer.iter().flatten().enumerate() {
        match parse_network(net) {
            Some(net) => allow_transfer.push(net),
            None => p.add(
                format!("dns.allow_transfer[{i}]"),
                format!(
                    "{net:?} is not a network; write it as \"192.0.2.0/24\" or \"2001:db8::1\""
                ),
            ),
        }
    }
    let mut xdp = Vec::new();
    for (i, name) in raw.dns.xdp.iter().flatten().enumerate() {
        let path = format!("dns.xdp[{i}]");
        if !cfg!(target_os = "linux") {
            p.add(path, "AF_XDP is only available on Linux; remove dns.xdp");
        } else if name.is_empty()
            || name.len() > 15
            || name.contains(|c: char| c == '/' || c.is_whitespace())
        {
            p.add(
                path,
                format!("{name:?} is not a network interface name (as `ip link` lists them)"),
            );
        } else if xdp.contains(name) {
            p.add(path, format!("{name:?} is listed twice"));
        } else {
            xdp.push(name.clone());
        }
    }
    let max_udp_payload = raw.dns.max_udp_payload.unwrap_or(defaults::MAX_UDP_PAYLOAD);
    if max_udp_payload < 512 {
        p.add(
            "dns.max_udp_payload",
            format!("{max_udp_payload} is below 512, the size every DNS client accepts (RFC 1035)"),
        );
    }
    DnsSettings {
        listen,
        zones_dir,
        client_regions,
        allow_transfer,
        xdp,
        max_udp_payload: max_udp_payload.max(512),
        minimal_responses: raw.dns.minimal_responses.unwrap_or(false),
        rrl: validate_rrl(raw.dns.rrl.as_ref(), p),
        dnssec: validate_dnssec(raw.dns.dnssec.as_ref(), base, read_keys, p),
    }
}

/// `read_keys`: whether to read and check the key files (not where nothing signs).
fn validate_dnssec(
    raw: Option<&std::collections::BTreeMap<String, crate::config::raw::RawDnssec>>,
    base: &Path,
    read_keys: bool,
    p: &mut Problems,
) -> Vec<crate::config::DnssecSettings> {
    use crate::dns::dnssec::{Algorithm, KeyState, Role, ZoneKey};
    let mut out: Vec<crate::config::DnssecSettings> = Vec::new();
    for (zone, signed) in raw.into_iter().flatten() {
        let path = format!("dns.dnssec.{zone:?}");
        let Some(origin) = crate::dns::wire::from_dotted(&zone.to_ascii_lowercase()) else {
            p.add(&path, format!("{zone:?} is not a DNS name"));
            continue;
        };
        if out.iter().any(|o| o.origin == origin) {
            p.add(&path, format!("{zone:?} is listed twice"));
            continue;
        }
        let algorithm = match signed.algorithm.as_deref() {
            None => Algorithm::EcdsaP256Sha256,
            Some(text) => Algorithm::parse(text).unwrap_or_else(|| {
                p.add(
                    format!("{path}.algorithm"),
                    format!(
                        "{text:?} is not an algorithm we sign with; use one of: {}",
                        Algorithm::NAMES.join(", ")
                    ),
                );
                Algorithm::EcdsaP256Sha256
            }),
        };
        let mut keys = Vec::new();
        if signed.keys.is_empty() {
            p.add(
                format!("{path}.keys"),
                "must list at least one key, e.g. keys = [{ file = \"keys/example.com.pem\" }] \
                 (make one with `vantage dnssec keygen`)",
            );
        }
        for (i, key) in signed.keys.iter().enumerate() {
            let key_path = format!("{path}.keys[{i}]");
            let role = match key.role.as_deref() {
                None => Role::Csk,
                Some(text) => Role::parse(text).unwrap_or_else(|| {
                    p.add(
                        format!("{key_path}.role"),
                        format!(
                            "{text:?} is not a role; use one of: {}",
                            Role::NAMES.join(", ")
                        ),
                    );
                    Role::Csk
                }),
            };
            let state = match key.state.as_deref() {
                None => KeyState::Active,
                Some(text) => KeyState::parse(text).unwrap_or_else(|| {
                    p.add(
                        format!("{key_path}.state"),
                        format!(
                            "{text:?} is not a key state; use one of: {}",
                            KeyState::NAMES.join(", ")
                        ),
                    );
                    KeyState::Active
                }),
            };
            let file = base.join(&key.file);
            let loaded = read_keys
                .then(|| {
                    ZoneKey::load(&file, role, state, algorithm)
                        .map_err(|e| p.add(format!("{key_path}.file"), e))
                        .ok()
                })
                .flatten()
                .map(std::sync::Arc::new);
            keys.push(crate::config::DnssecKeySettings {
                file,
                role,
                state,
                key: loaded,
            });
        }
        let active = |wanted: fn(Role) -> bool| {
            keys.iter()
                .any(|k| k.state == KeyState::Active && wanted(k.role))
        };
        if !keys.is_empty() && !active(Role::entry_point) {
            p.add(
                format!("{path}.keys"),
                "no active key signs the DNSKEY set: make a csk or ksk active",
            );
        }
        if !keys.is_empty() && !active(Role::signs_zone) {
            p.add(
                format!("{path}.keys"),
                "no active key signs the zone's records: make a csk or zsk active",
            );
        }
        let day = std::time::Duration::from_secs(86_400);
        let signature_validity = p.duration(
            &format!("{path}.signature_validity"),
            signed.signature_validity.as_ref(),
            14 * day,
        );
        let signature_refresh = p.duration(
            &format!("{path}.signature_refresh"),
            signed.signature_refresh.as_ref(),
            7 * day,
        );
        if signature_validity < std::time::Duration::from_secs(2 * 3600) {
            p.add(
                format!("{path}.signature_validity"),
                "must be at least 2h: resolvers cache signatures, and our clock may be ahead of theirs",
            );
        } else if signature_refresh + signature_refresh / 10 + std::time::Duration::from_secs(3600)
            >= signature_validity
        {
            p.add(
                format!("{path}.signature_refresh"),
                "must leave signatures valid for a while: keep it (plus a tenth) at least 1h below signature_validity",
            );
        }
        out.push(crate::config::DnssecSettings {
            zone: zone.clone(),
            origin,
            algorithm,
            keys,
            signature_validity,
            signature_refresh,
        });
    }
    out
}

fn validate_rrl(raw: Option<&crate::config::raw::RawRrl>, p: &mut Problems) -> RrlSettings {
    let defaults = RrlSettings::default();
    let Some(raw) = raw else {
        return defaults;
    };
    let mut prefix = |key: &str, value: Option<u8>, max: u8, default: u8| {
        let v = value.unwrap_or(default);
        if v == 0 || v > max {
            p.add(
                format!("dns.rrl.{key}"),
                format!("{v} is not a prefix length; use 1..={max}"),
            );
        }
        v.clamp(1, max)
    };
    let ipv4_prefix = prefix("ipv4_prefix", raw.ipv4_prefix, 32, defaults.ipv4_prefix);
    let ipv6_prefix = prefix("ipv6_prefix", raw.ipv6_prefix, 128, defaults.ipv6_prefix);
    let mut exempt = Vec::new();
    for (i, net) in raw.exempt.iter().flatten().enumerate() {
        match parse_network(net) {
            Some(net) => exempt.push(net),
            None => p.add(
                format!("dns.rrl.exempt[{i}]"),
                format!("{net:?} is not a network (e.g. \"192.0.2.0/24\" or \"2001:db8::1\")"),
            ),
        }
    }
    let table_size = raw.table_size.unwrap_or(defaults.table_size);
    if !(1024..=16_777_216).contains(&table_size) {
        p.add(
            "dns.rrl.table_size",
            format!("{table_size} buckets; use 1024 to 16777216"),
        );
    }
    RrlSettings {
        responses_per_second: raw
            .responses_per_second
            .unwrap_or(defaults.responses_per_second),
        slip: raw.slip.unwrap_or(defaults.slip),
        ipv4_prefix,
        ipv6_prefix,
        exempt,
        table_size: table_size.clamp(1024, 16_777_216),
    }
}

fn validate_route53(
    raw: &RawConfig,
    base: &Path,
    admin_state_dir: &Path,
    p: &mut Problems,
) -> Route53Settings {
    let r = &raw.route53;
    let endpoint_url = r
        .endpoint_url
        .as_ref()
        .and_then(|u| match url::Url::parse(u) {
            Ok(url) if url.scheme() == "http" || url.scheme() == "https" => Some(url),
            _ => {
                p.add(
                    "route53.endpoint_url",
                    format!("{u:?} is not an http(s) URL"),
                );
                None
            }
        });
    let max_change_fraction = match r.max_change_fraction {
        None => defaults::ROUTE53_MAX_CHANGE_FRACTION,
        Some(f) if f > 0.0 && f <= 1.0 => f,
        Some(f) => {
            p.add(
                "route53.max_change_fraction",
                format!("{f} is out of range; use a fraction in (0, 1]"),
            );
            defaults::ROUTE53_MAX_CHANGE_FRACTION
        }
    };
    let requests_per_second = match r.requests_per_second {
        None => defaults::ROUTE53_REQUESTS_PER_SECOND,
        Some(f) if f > 0.0 && f <= 100.0 => f,
        Some(f) => {
            p.add(
                "route53.requests_per_second",
                format!("{f} is out of range; Route53 allows 5 per second per account"),
            );
            defaults::ROUTE53_REQUESTS_PER_SECOND
        }
    };
    Route53Settings {
        endpoint_url,
        region: r
            .region
            .clone()
            .unwrap_or_else(|| defaults::ROUTE53_REGION.to_string()),
        interval: p.duration(
            "route53.interval",
            r.interval.as_ref(),
            defaults::ROUTE53_INTERVAL,
        ),
        max_change_fraction,
        min_change_cap: p.ranged(
            "route53.min_change_cap",
            r.min_change_cap,
            defaults::ROUTE53_MIN_CHANGE_CAP,
            0,
            100_000,
        ) as usize,
        insync_timeout: p.duration(
            "route53.insync_timeout",
            r.insync_timeout.as_ref(),
            defaults::ROUTE53_INSYNC_TIMEOUT,
        ),
        requests_per_second,
        admin_listen: r.admin_listen.as_ref().and_then(|text| {
            parse_socket(text)
                .map_err(|e| p.add("route53.admin_listen", e))
                .ok()
        }),
        state_dir: r
            .state_dir
            .as_ref()
            .map_or_else(|| admin_state_dir.join("route53"), |dir| base.join(dir)),
    }
}

/// `admin.state_dir` relative to the configuration; by default the directory systemd made
/// for the unit (`StateDirectory=` sets `$STATE_DIRECTORY`, e.g. /var/lib/vantage), else
/// `state` beside the configuration.
fn state_dir(configured: Option<&str>, base: &Path) -> std::path::PathBuf {
    if let Some(dir) = configured {
        return base.join(dir);
    }
    match std::env::var_os("STATE_DIRECTORY") {
        // Several directories are separated by ':'; the first is ours.
        Some(dirs) if !dirs.is_empty() => std::env::split_paths(&dirs)
            .next()
            .unwrap_or_else(|| base.join(defaults::STATE_DIR)),
        _ => base.join(defaults::STATE_DIR),
    }
}

/// The names the admin listener answers to: `admin.hosts` and the hosts of `[[server]]` admin
/// URLs (the fleet's own tools address servers that way).
fn admin_hosts(raw: &RawConfig, p: &mut Problems) -> Vec<String> {
    let mut hosts = Vec::new();
    for (i, host) in raw.admin.hosts.iter().flatten().enumerate() {
        let name = host.trim().trim_end_matches('.').to_ascii_lowercase();
        if name.is_empty()
            || name.contains(':')
            || !name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.' || b == b'_')
        {
            p.add(
                format!("admin.hosts[{i}]"),
                format!("{host:?} is not a host name (write it without scheme or port, e.g. \"vantage-1.example.net\")"),
            );
        } else {
            hosts.push(name);
        }
    }
    for server in &raw.server {
        if let Ok(url) = url::Url::parse(&server.admin)
            && let Some(url::Host::Domain(name)) = url.host()
        {
            hosts.push(name.to_ascii_lowercase());
        }
    }
    hosts.sort();
    hosts.dedup();
    hosts
}

fn validate_servers(raw: &RawConfig, p: &mut Problems) -> Vec<FleetServer> {
    let mut servers = Vec::new();
    let mut names: Vec<&str> = Vec::new();
    for (i, s) in raw.server.iter().enumerate() {
        let path = format!("server[{i}]");
        if s.name.trim().is_empty() {
            p.add(format!("{path}.name"), "must not be empty");
        } else if names.contains(&s.name.as_str()) {
            p.add(
                format!("{path}.name"),
                format!("{:?} is listed twice", s.name),
            );
        }
        names.push(&s.name);
        let role = match s.role.as_deref().unwrap_or("dns") {
            "dns" => Some(ServerRole::Dns),
            "route53" => Some(ServerRole::Route53),
            other => {
                p.add(
                    format!("{path}.role"),
                    format!("{other:?} is not a role; use \"dns\" or \"route53\""),
                );
                None
            }
        };
        let dns = match &s.dns {
            Some(text) => parse_socket(text)
                .map_err(|e| p.add(format!("{path}.dns"), e))
                .ok(),
            None => {
                if role == Some(ServerRole::Dns) {
                    p.add(
                        format!("{path}.dns"),
                        "missing; give the address:port where this server answers DNS",
                    );
                }
                None
            }
        };
        let admin = match url::Url::parse(&s.admin) {
            Ok(url) if url.scheme() == "http" || url.scheme() == "https" => Some(url),
            _ => {
                p.add(
                    format!("{path}.admin"),
                    format!(
                        "{:?} is not an http(s) URL (e.g. \"http://10.0.0.1:8053\")",
                        s.admin
                    ),
                );
                None
            }
        };
        if let (Some(role), Some(admin)) = (role, admin) {
            servers.push(FleetServer {
                name: s.name.clone(),
                role,
                dns,
                admin,
            });
        }
    }
    servers
}

fn validate_drill(raw: &RawConfig, p: &mut Problems) -> DrillSettings {
    let d = &raw.drill;
    let mut route53_nameservers = Vec::new();
    for (i, text) in d.route53_nameservers.iter().flatten().enumerate() {
        match parse_socket(text) {
            Ok(addr) => route53_nameservers.push(addr),
            Err(e) => p.add(format!("drill.route53_nameservers[{i}]"), e),
        }
    }
    DrillSettings {
        timeout: p.duration("drill.timeout", d.timeout.as_ref(), defaults::DRILL_TIMEOUT),
        poll_interval: p.duration(
            "drill.poll_interval",
            d.poll_interval.as_ref(),
            defaults::DRILL_POLL_INTERVAL,
        ),
        route53_nameservers,
    }
}

/// A network (`198.51.100.0/24`) or a single address.
fn parse_network(text: &str) -> Option<ipnet::IpNet> {
    let text = text.trim();
    text.parse::<ipnet::IpNet>()
        .or_else(|_| text.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
        .ok()
}

fn parse_socket(text: &str) -> Result<SocketAddr, String> {
    text.trim().parse().map_err(|_| {
        format!("{text:?} is not an address:port (e.g. \"127.0.0.1:53\" or \"[::1]:53\")")
    })
}
