//! Validation of `[check.NAME]` tables, and of check timing against the cluster settings.

use std::path::Path;

use super::{
    CheckSpec, Cluster, Protocol, defaults,
    problems::{Problems, check_dns_name},
    raw::RawCheck,
};

/// A prober reports once per interval (+10% jitter) after a check of up to `timeout`; a stale
/// limit shorter than that makes healthy probers drop out of the vote between reports.
pub(super) fn check_timing(cluster: &Cluster, check: &CheckSpec, p: &mut Problems) {
    let report_gap = check.interval.mul_f64(1.1) + check.timeout;
    if cluster.stale_after < report_gap {
        p.add(
            "cluster.stale_after",
            format!(
                "{:?} is shorter than check {}'s reporting gap (interval + 10% jitter + timeout = {:?}); \
                 fresh observations would go stale; raise stale_after or lower the interval",
                cluster.stale_after, check.name, report_gap
            ),
        );
    }
    let first_verdict = check.interval * check.rise.max(check.fall) + check.timeout;
    if cluster.startup_grace < first_verdict {
        p.add(
            "cluster.startup_grace",
            format!(
                "{:?} is shorter than check {}'s first verdict (max(rise, fall) x interval + timeout = {:?})",
                cluster.startup_grace, check.name, first_verdict
            ),
        );
    }
}

pub(super) fn validate_check(
    name: &str,
    raw: &RawCheck,
    base: &Path,
    p: &mut Problems,
) -> CheckSpec {
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
    // A tenth of the interval by default, at least the shortest allowed (the interval itself
    // when that is shorter): `fall` consecutive failures cost (fall - 1) tenths of an
    // interval. A prober's own hiccup (a loaded host timing out twice in a row) counts as
    // local, not against the endpoint, and one region's view alone moves no verdict.
    let suspect_interval = p.duration(
        &format!("{path}.suspect_interval"),
        raw.suspect_interval.as_ref(),
        (interval / 10)
            .max(defaults::SUSPECT_INTERVAL_MIN)
            .min(interval),
    );
    if suspect_interval > interval {
        p.add(
            format!("{path}.suspect_interval"),
            format!("{suspect_interval:?} is longer than the interval ({interval:?})"),
        );
    } else if raw.suspect_interval.is_some() && suspect_interval < defaults::SUSPECT_INTERVAL_MIN {
        p.add(
            format!("{path}.suspect_interval"),
            format!(
                "{suspect_interval:?} is shorter than {:?}: re-checks that fast would hammer a failing endpoint",
                defaults::SUSPECT_INTERVAL_MIN
            ),
        );
    }
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
    if let Some(host) = &raw.host
        && let Err(e) = check_dns_name(host)
    {
        p.add(format!("{path}.host"), e);
    }
    let ca_file = raw.ca_file.as_ref().map(|f| base.join(f));
    if let Some(f) = &ca_file
        && !f.is_file()
    {
        p.add(
            format!("{path}.ca_file"),
            format!("{} does not exist", f.display()),
        );
    }
    CheckSpec {
        name: name.to_string(),
        protocol,
        port,
        path: check_path,
        interval,
        suspect_interval,
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
