//! Validation tests: good configurations, every problem reported with its path.

use std::{path::Path, time::Duration};

use super::{ConfigError, Settings, defaults};

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
    assert_eq!(s.endpoints[0].check.rise, defaults::RISE);
    assert_eq!(s.cluster.quorum.required(s.regions.len()), 2);
}

#[test]
fn the_suspect_interval_is_a_tenth_of_the_interval_by_default() {
    let ms = Duration::from_millis;
    for (interval, timeout, expected) in [
        ("1s", "500ms", ms(100)),
        ("3s", "1s", ms(300)),
        ("500ms", "300ms", ms(100)),
        // Never below the shortest allowed, never above the interval.
        ("100ms", "50ms", ms(100)),
        ("60ms", "50ms", ms(60)),
    ] {
        let text = GOOD
            .replace("interval = \"1s\"", &format!("interval = \"{interval}\""))
            .replace("timeout = \"500ms\"", &format!("timeout = \"{timeout}\""));
        let s = Settings::from_toml(&text, "t.toml", Path::new(".")).expect("valid");
        assert_eq!(
            s.endpoints[0].check.suspect_interval, expected,
            "{interval}"
        );
    }
    // Set, it is kept; set to the interval, the fast path is off.
    let text = GOOD.replace(
        "interval = \"1s\"",
        "interval = \"1s\"\n    suspect_interval = \"1s\"",
    );
    let s = Settings::from_toml(&text, "t.toml", Path::new(".")).expect("valid");
    assert_eq!(s.endpoints[0].check.suspect_interval, ms(1000));
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
fn every_structural_problem_is_reported() {
    let text = "[[prober]]\nregion = \"a\"\nzone = 1\n[[prober]]\nregion = 5\n[check.web]\nrise = \"two\"\n[extra]\n";
    let found = problems(text);
    for expected in [
        "prober[0].zone: unknown key",
        "prober[1].region: invalid type: integer `5`, expected a string",
        "check.web.rise: invalid type: string \"two\", expected i64",
        "extra: unknown section",
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
fn one_address_probed_differently_gets_one_endpoint_per_variant() {
    let text = format!(
        "{GOOD}\n[check.other]\nprotocol = \"tcp\"\nport = 22\n\
         [[record]]\nname = \"x.example.com\"\ncheck = \"other\"\nendpoints = [{{ address = \"192.0.2.1\" }}]\n\
         [[record]]\nname = \"y.example.com\"\ncheck = \"web\"\nendpoints = [{{ address = \"192.0.2.2\" }}]\n"
    );
    let s = Settings::from_toml(&text, "t.toml", Path::new(".")).expect("valid");
    let ids: Vec<&str> = s.endpoints.iter().map(|e| e.id.as_str()).collect();
    // 192.0.2.1 is checked by web (host www) and by other (tcp, host x): two endpoints.
    // 192.0.2.2 is checked by web with host www and host y: two endpoints as well.
    assert_eq!(
        ids,
        vec![
            "192.0.2.1/www.example.com",
            "192.0.2.2/www.example.com",
            "192.0.2.1/x.example.com",
            "192.0.2.2/y.example.com"
        ]
    );
    assert_eq!(
        s.records[1].endpoints[0].id.as_str(),
        "192.0.2.1/x.example.com"
    );
}

#[test]
fn a_name_used_for_two_probe_targets_is_ambiguous() {
    let text = format!(
        "{GOOD}\n[[record]]\nname = \"x.example.com\"\ncheck = \"web\"\n\
         endpoints = [{{ name = \"a\", address = \"192.0.2.7\" }}]\n\
         [[record]]\nname = \"y.example.com\"\ncheck = \"web\"\n\
         endpoints = [{{ name = \"a\", address = \"192.0.2.8\" }}]\n"
    );
    let found = problems(&text);
    assert!(
        found
            .iter()
            .any(|f| f.contains("give each variant a distinct `name`")),
        "{found:#?}"
    );
}

#[test]
fn stale_after_must_cover_the_reporting_gap() {
    let text = GOOD.replace("interval = \"1s\"", "interval = \"5s\"");
    let found = problems(&text);
    assert!(
        found
            .iter()
            .any(|f| f.starts_with("cluster.stale_after: 5s is shorter than check web")),
        "{found:#?}"
    );
}

#[test]
fn fleet_servers_drill_settings_and_rto_are_validated() {
    let good = format!(
        "{GOOD}\n[[server]]\nname = \"ns1\"\ndns = \"192.0.2.53:53\"\nadmin = \"http://10.0.0.1:8053\"\n\
         [[server]]\nname = \"r53\"\nrole = \"route53\"\nadmin = \"http://10.0.0.2:8053\"\n\
         [drill]\ntimeout = \"90s\"\n"
    )
    .replace("check = \"web\"\n", "check = \"web\"\n    rto = \"45s\"\n");
    let s = Settings::from_toml(&good, "t.toml", Path::new(".")).expect("valid");
    assert_eq!(s.servers.len(), 2);
    assert_eq!(s.servers[1].role, super::ServerRole::Route53);
    assert_eq!(s.servers[1].dns, None);
    assert_eq!(s.drill.timeout, std::time::Duration::from_secs(90));
    assert_eq!(s.records[0].rto, Some(std::time::Duration::from_secs(45)));

    let bad = format!(
        "{GOOD}\n[[server]]\nname = \"ns1\"\nadmin = \"http://10.0.0.1:8053\"\n\
         [[server]]\nname = \"ns1\"\nrole = \"primary\"\nadmin = \"x\"\n\
         [[server]]\nname = \"ns3\"\ndns = \"10.0.0.3\"\nadmin = \"ftp://x\"\n\
         [drill]\npoll_interval = \"often\"\nroute53_nameservers = [\"ns-1.awsdns\"]\n"
    )
    .replace("check = \"web\"\n", "check = \"web\"\n    rto = \"fast\"\n");
    let p = problems(&bad);
    for want in [
        "server[0].dns: missing",
        "server[1].name: \"ns1\" is listed twice",
        "server[1].role: \"primary\" is not a role",
        "server[1].admin: \"x\" is not an http(s) URL",
        "server[2].admin: \"ftp://x\" is not an http(s) URL",
        "server[2].dns: \"10.0.0.3\" is not an address:port",
        "drill.poll_interval: not a duration",
        "drill.route53_nameservers[0]:",
        "record[0].rto: not a duration",
    ] {
        assert!(p.iter().any(|x| x.starts_with(want)), "{want} in {p:#?}");
    }
    let transfer = problems(&format!(
        "{GOOD}\n[dns]\nallow_transfer = [\"192.0.2.0/24\", \"secondary\"]\n"
    ));
    assert_eq!(transfer.len(), 1, "{transfer:?}");
    assert!(transfer[0].starts_with("dns.allow_transfer[1]: \"secondary\" is not a network"));
    let unknown = problems(&format!("{GOOD}\n[drill]\nwait = \"1s\"\n"));
    assert!(
        unknown.iter().any(|x| x.starts_with("drill")),
        "{unknown:?}"
    );
}

#[test]
fn an_admin_token_must_be_visible_ascii() {
    let dir = tempfile::tempdir().expect("dir");
    let config = |token: &str| {
        std::fs::write(dir.path().join("token"), token).expect("token");
        let text = format!("{GOOD}\n[admin]\ntoken_file = \"token\"\n");
        match Settings::from_toml(&text, "t.toml", dir.path()) {
            Err(ConfigError::Invalid { problems, .. }) => {
                problems.iter().map(|p| p.to_string()).collect::<Vec<_>>()
            }
            Err(e) => panic!("unexpected error kind: {e}"),
            Ok(_) => Vec::new(),
        }
    };
    assert!(config("0123456789abcdef0123456789abcdef\n").is_empty());
    for bad in [
        "0123456789abcdéf0123456789abcdef",
        "0123456789abcdef 0123456789abcdef",
    ] {
        let found = config(bad);
        assert!(
            found
                .iter()
                .any(|p| p.starts_with("admin.token_file:") && p.contains("visible ASCII")),
            "{bad:?}: {found:?}"
        );
    }
}

#[test]
fn latency_records_go_to_route53_with_an_aws_region_per_endpoint() {
    let record = |extra_a: &str, extra_b: &str, policy: &str| {
        format!(
            "{GOOD}\n    [[record]]\n    name = \"lat.example.com\"\n    policy = \"{policy}\"\n    check = \"web\"\n    \
             endpoints = [{{ address = \"192.0.2.1\"{extra_a} }}, {{ address = \"192.0.2.2\"{extra_b} }}]\n    \
             route53 = {{ zone_id = \"Z1\", owner = \"o\" }}\n"
        )
    };
    let ok = record(
        ", aws_region = \"us-east-1\"",
        ", aws_region = \"eu-west-1\"",
        "latency",
    );
    let s = Settings::from_toml(&ok, "t.toml", Path::new(".")).expect("valid");
    assert_eq!(
        s.records[1].endpoints[1].aws_region.as_deref(),
        Some("eu-west-1")
    );
    let missing = problems(&record(", aws_region = \"us-east-1\"", "", "latency"));
    assert!(
        missing
            .iter()
            .any(|p| p.contains("record[1].endpoints[1].aws_region")),
        "{missing:?}"
    );
    let wrong = problems(&record(
        ", aws_region = \"US East\"",
        ", aws_region = \"eu-west-1\"",
        "latency",
    ));
    assert!(
        wrong.iter().any(|p| p.contains("is not an AWS Region")),
        "{wrong:?}"
    );
    let misplaced = problems(&record(", aws_region = \"us-east-1\"", "", "failover"));
    assert!(
        misplaced
            .iter()
            .any(|p| p.contains("aws_region is for latency records")),
        "{misplaced:?}"
    );
}

#[test]
fn records_sharing_an_endpoint_checked_over_tcp_share_its_probe() {
    // The host defaults to each record's name, but a TCP check sends none.
    let text = r#"
        [[prober]]
        region = "a"
        [check.t]
        protocol = "tcp"
        port = 9
        [[record]]
        name = "one.example.com"
        check = "t"
        endpoints = [{ name = "a", address = "192.0.2.1" }]
        [[record]]
        name = "two.example.com"
        check = "t"
        endpoints = [{ name = "a", address = "192.0.2.1" }]
    "#;
    let s = Settings::from_toml(text, "t.toml", Path::new(".")).expect("valid");
    assert_eq!(s.endpoints.len(), 1, "one probe for both records");
}

#[test]
fn an_unprotected_etcd_is_warned_about() {
    let text = format!(
        "{GOOD}\n    [state]\n    backend = \"etcd\"\n    endpoints = [\"http://127.0.0.1:2379\"]\n"
    );
    let s = Settings::from_toml(&text, "t.toml", Path::new(".")).expect("valid");
    let warnings = s.warnings().join("\n");
    assert!(warnings.contains("plain http"), "{warnings}");
    assert!(warnings.contains("whoever reaches it"), "{warnings}");
}
