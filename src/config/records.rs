//! Validation of `[[record]]` tables and their endpoints.

use std::{collections::BTreeMap, net::IpAddr, sync::Arc, time::Duration};

use super::{
    CheckSpec, EndpointSpec, Policy, RecordEndpoint, RecordKind, RecordSpec, Route53Target,
    WhenAllDown, defaults,
    problems::{Problems, check_dns_name},
    raw::{RawEndpoint, RawRecord},
};
use crate::model::{EndpointId, Region};

pub(super) fn endpoint_id(e: &RawEndpoint) -> EndpointId {
    EndpointId::new(
        e.name
            .clone()
            .unwrap_or_else(|| e.address.trim().to_string()),
    )
}

pub(super) fn validate_record(
    path: &str,
    raw: &RawRecord,
    checks: &BTreeMap<String, Arc<CheckSpec>>,
    p: &mut Problems,
) -> Option<(RecordSpec, Vec<Arc<EndpointSpec>>)> {
    let mut targets = Vec::new();
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
        Some("latency") => Policy::Latency,
        Some(other) => {
            p.add(
                format!("{path}.policy"),
                format!("{other:?} is not a policy; use failover, all, weighted or latency"),
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
        if let Some(name) = &e.name
            && (name.trim().is_empty() || name.chars().any(|c| c.is_whitespace() || c.is_control()))
        {
            p.add(
                format!("{epath}.name"),
                format!("{name:?} is not a usable endpoint name"),
            );
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
        targets.push(Arc::new(EndpointSpec {
            id: id.clone(),
            address,
            site,
            check,
            dial,
            host,
        }));
        if let Some(region) = &e.aws_region
            && !is_aws_region(region)
        {
            p.add(
                format!("{epath}.aws_region"),
                format!("{region:?} is not an AWS Region (e.g. \"us-east-1\", \"eu-west-1\")"),
            );
        }
        record_endpoints.push(RecordEndpoint {
            id,
            address,
            weight,
            aws_region: e.aws_region.clone(),
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

    let route53 = raw.route53.as_ref().and_then(|t| {
        let tpath = format!("{path}.route53");
        let mut ok = true;
        // As the API and the console print it (`/hostedzone/Z...`), or the bare id.
        let zone_id = t.zone_id.trim().trim_start_matches("/hostedzone/");
        if zone_id.is_empty() || !zone_id.chars().all(|c| c.is_ascii_alphanumeric()) {
            p.add(format!("{tpath}.zone_id"), format!("{:?} is not a hosted zone id (e.g. \"Z0123456789ABC\")", t.zone_id));
            ok = false;
        }
        if t.owner.is_empty() || !t.owner.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c)) {
            p.add(format!("{tpath}.owner"), format!("{:?} is not an owner id (letters, digits, '-', '_', '.')", t.owner));
            ok = false;
        }
        if policy == Policy::Latency {
            // Route53's own latency routing, one record set per endpoint in its AWS Region;
            // vantage's verdicts withdraw the unhealthy ones.
            for (i, e) in raw.endpoints.iter().enumerate() {
                if e.aws_region.is_none() {
                    p.add(
                        format!("{path}.endpoints[{i}].aws_region"),
                        "a latency record pushed to Route53 needs the AWS Region of each endpoint (Route53 steers by its own latency measurements to AWS Regions)",
                    );
                    ok = false;
                }
            }
        }
        ok.then(|| Route53Target {
            zone_id: zone_id.to_string(),
            owner: t.owner.clone(),
            take_over: t.take_over.unwrap_or(false),
        })
    });
    if policy != Policy::Latency || raw.route53.is_none() {
        for (i, e) in raw.endpoints.iter().enumerate() {
            if e.aws_region.is_some() {
                p.add(
                    format!("{path}.endpoints[{i}].aws_region"),
                    "aws_region is for latency records pushed to Route53 (policy = \"latency\" with a route53 section)",
                );
            }
        }
    }
    let rto = raw
        .rto
        .as_ref()
        .map(|text| p.duration(&format!("{path}.rto"), Some(text), Duration::ZERO));
    let spec = RecordSpec {
        name: name?,
        kind,
        ttl,
        policy,
        when_all_down,
        endpoints: record_endpoints,
        route53,
        rto,
    };
    Some((spec, targets))
}

/// Gives every endpoint its final id and returns the distinct endpoints.
///
/// An endpoint without a `name` is known by its address. When the same address is probed
/// differently by several records (another check, host or check address), each variant is
/// named `<address>/<host>` (then `<address>/<host>/<check>`), so that none hides another.
/// Named endpoints must be unambiguous: one name, one probe target.
pub(super) fn assign_endpoint_ids(
    records: &mut [(RecordSpec, Vec<Arc<EndpointSpec>>)],
    p: &mut Problems,
) -> Vec<Arc<EndpointSpec>> {
    // A TCP check sends no host name: records sharing an endpoint probe it the same way.
    let probe_key = |e: &EndpointSpec| {
        (
            e.address,
            e.dial,
            e.check.clone(),
            (e.check.protocol != super::Protocol::Tcp).then(|| e.host.clone()),
            e.site.clone(),
        )
    };
    let mut by_id: BTreeMap<EndpointId, Vec<Arc<EndpointSpec>>> = BTreeMap::new();
    for (_, targets) in records.iter() {
        for t in targets {
            let group = by_id.entry(t.id.clone()).or_default();
            if !group.iter().any(|g| probe_key(g) == probe_key(t)) {
                group.push(t.clone());
            }
        }
    }
    let mut renamed: BTreeMap<(EndpointId, usize), EndpointId> = BTreeMap::new();
    for (id, group) in &by_id {
        if group.len() < 2 {
            continue;
        }
        let is_default = id.as_str().parse::<IpAddr>().ok() == Some(group[0].address);
        let by_host: Vec<String> = group
            .iter()
            .map(|e| format!("{}/{}", e.address, e.host))
            .collect();
        let by_check: Vec<String> = group
            .iter()
            .map(|e| format!("{}/{}/{}", e.address, e.host, e.check.name))
            .collect();
        let distinct = |names: &[String]| {
            names.iter().collect::<std::collections::HashSet<_>>().len() == names.len()
        };
        let names = if !is_default {
            None
        } else if distinct(&by_host) {
            Some(by_host)
        } else if distinct(&by_check) {
            Some(by_check)
        } else {
            None
        };
        match names {
            Some(names) => {
                for (k, name) in names.into_iter().enumerate() {
                    renamed.insert((id.clone(), k), EndpointId::new(name));
                }
            }
            None => p.add(
                "record",
                format!(
                    "endpoint {id} is probed differently in several records (address, check, host, \
                     check_address or site); give each variant a distinct `name`"
                ),
            ),
        }
    }
    let mut distinct: Vec<Arc<EndpointSpec>> = Vec::new();
    for (spec, targets) in records.iter_mut() {
        for (j, t) in targets.iter_mut().enumerate() {
            if let Some(group) = by_id.get(&t.id) {
                let k = group
                    .iter()
                    .position(|g| probe_key(g) == probe_key(t))
                    .unwrap_or(0);
                if let Some(new_id) = renamed.get(&(t.id.clone(), k)) {
                    let mut e = EndpointSpec::clone(t);
                    e.id = new_id.clone();
                    *t = Arc::new(e);
                    spec.endpoints[j].id = new_id.clone();
                }
            }
            if !distinct.iter().any(|d| d.id == t.id) {
                distinct.push(t.clone());
            }
        }
    }
    distinct
}

/// An AWS Region name as Route53's latency records take it (`us-east-1`, `ap-southeast-2`).
fn is_aws_region(name: &str) -> bool {
    let parts: Vec<&str> = name.split('-').collect();
    parts.len() >= 3
        && parts.iter().all(|p| {
            !p.is_empty()
                && p.chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
        })
        && parts
            .last()
            .is_some_and(|p| p.chars().all(|c| c.is_ascii_digit()))
}
