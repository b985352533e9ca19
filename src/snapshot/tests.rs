//! Answer selection tables and properties.

use proptest::prelude::*;

use super::*;
use crate::config::RecordEndpoint;

fn record(policy: Policy, when_all_down: WhenAllDown, n: u8) -> RecordSpec {
    RecordSpec {
        name: "www.example.com.".into(),
        kind: RecordKind::A,
        ttl: 30,
        policy,
        when_all_down,
        endpoints: (1..=n)
            .map(|i| RecordEndpoint {
                id: EndpointId::new(format!("e{i}")),
                address: IpAddr::from([192, 0, 2, i]),
                weight: u32::from(i),
                aws_region: None,
            })
            .collect(),
        route53: None,
        rto: None,
    }
}

fn states(s: &str) -> impl Fn(&EndpointId) -> Health + '_ {
    move |id: &EndpointId| {
        let i: usize = id.as_str()[1..].parse().expect("e<N>");
        match s.as_bytes()[i - 1] {
            b'U' => Health::Up,
            b'D' => Health::Down,
            _ => Health::Unknown,
        }
    }
}

fn no_rtt(_: &EndpointId) -> Vec<(Region, Duration)> {
    Vec::new()
}

fn ips(last: &[u8]) -> Vec<IpAddr> {
    last.iter().map(|i| IpAddr::from([192, 0, 2, *i])).collect()
}

#[test]
fn failover_table() {
    let fallback = WhenAllDown::Fallback(vec![IpAddr::from([203, 0, 113, 1])]);
    let cases: Vec<(WhenAllDown, &str, Answer, &str)> = vec![
        (WhenAllDown::All, "UUU", Answer::Fixed(ips(&[1])), "primary"),
        (
            WhenAllDown::All,
            "DUU",
            Answer::Fixed(ips(&[2])),
            "failover",
        ),
        (
            WhenAllDown::All,
            "DDU",
            Answer::Fixed(ips(&[3])),
            "failover",
        ),
        (WhenAllDown::All, "U??", Answer::Fixed(ips(&[1])), "primary"),
        (WhenAllDown::All, "?UU", Answer::NotReady, "undecided"),
        (WhenAllDown::All, "D?U", Answer::NotReady, "undecided"),
        (
            WhenAllDown::All,
            "DDD",
            Answer::Fixed(ips(&[1, 2, 3])),
            "all_down_fail_open",
        ),
        (
            WhenAllDown::None,
            "DDD",
            Answer::Fixed(vec![]),
            "all_down_empty",
        ),
        (
            fallback,
            "DDD",
            Answer::Fixed(vec![IpAddr::from([203, 0, 113, 1])]),
            "all_down_fallback",
        ),
    ];
    for (when, s, want, code) in cases {
        let r = answer_for(&record(Policy::Failover, when, 3), states(s), no_rtt, false);
        assert_eq!(r.answer, want, "{s}");
        assert_eq!(r.reason.code(), code, "{s}");
    }
}

#[test]
fn all_and_weighted_table() {
    let r = answer_for(
        &record(Policy::All, WhenAllDown::All, 3),
        states("UDU"),
        no_rtt,
        false,
    );
    assert_eq!(r.answer, Answer::Fixed(ips(&[1, 3])));
    assert_eq!(r.reason, Reason::Healthy { up: 2, of: 3 });
    let r = answer_for(
        &record(Policy::All, WhenAllDown::All, 3),
        states("UU?"),
        no_rtt,
        false,
    );
    assert_eq!(r.answer, Answer::NotReady, "all needs every verdict");
    let r = answer_for(
        &record(Policy::All, WhenAllDown::All, 3),
        states("UU?"),
        no_rtt,
        true,
    );
    assert_eq!(
        r.answer,
        Answer::Fixed(ips(&[1, 2])),
        "after the grace, Unknown is not Up"
    );
    let r = answer_for(
        &record(Policy::Weighted, WhenAllDown::All, 3),
        states("DUU"),
        no_rtt,
        false,
    );
    assert_eq!(
        r.answer,
        Answer::Weighted(vec![
            (IpAddr::from([192, 0, 2, 2]), 2),
            (IpAddr::from([192, 0, 2, 3]), 3)
        ])
    );
}

#[test]
fn weighted_pick_follows_weights() {
    let a = IpAddr::from([192, 0, 2, 1]);
    let b = IpAddr::from([192, 0, 2, 2]);
    let choices = [(a, 1), (b, 3)];
    let mut count_a = 0;
    for i in 0..4000u32 {
        let roll = (u64::from(i) * u64::from(u32::MAX) / 4000) as u32; // evenly spread
        if pick_weighted(&choices, roll) == Some(a) {
            count_a += 1;
        }
    }
    assert!(
        (990..=1010).contains(&count_a),
        "a chosen {count_a} of 4000 times, expected 1000"
    );
    assert_eq!(pick_weighted(&[(a, 0), (b, 5)], 0), Some(b));
    assert_eq!(pick_weighted(&[], 7), None);
}

#[test]
fn a_decided_record_never_goes_back_to_undecided() {
    let rec = record(Policy::Failover, WhenAllDown::All, 3);
    let first = answer_for(&rec, states("U??"), no_rtt, false);
    assert_eq!(first.answer, Answer::Fixed(ips(&[1])));
    // The primary goes Down while the others are still undecided: without the latch this
    // would be NotReady again; a settled record treats undecided as not Up.
    let again = answer_for(&rec, states("D??"), no_rtt, true);
    assert_eq!(
        again.answer,
        Answer::Fixed(ips(&[1, 2, 3])),
        "fail open, not SERVFAIL"
    );
}

#[test]
fn latency_picks_the_nearest_up_endpoint_per_region() {
    let rec = record(Policy::Latency, WhenAllDown::All, 3);
    let ms = Duration::from_millis;
    // e1 is near region a, e2 near region b, e3 is Down (and would be nearest for c).
    let rtts = |id: &EndpointId| -> Vec<(Region, Duration)> {
        let table: &[(&str, u64)] = match id.as_str() {
            "e1" => &[("a", 5), ("b", 80), ("c", 50)],
            "e2" => &[("a", 90), ("b", 4), ("c", 60)],
            _ => &[("a", 1), ("b", 1), ("c", 1)],
        };
        table
            .iter()
            .map(|(r, v)| (Region::new(*r), ms(*v)))
            .collect()
    };
    let r = answer_for(&rec, states("UUD"), rtts, false);
    let Answer::ByRegion { regions, default } = &r.answer else {
        panic!("expected a per-region answer, got {:?}", r.answer)
    };
    assert_eq!(regions[&Region::new("a")], ips(&[1]));
    assert_eq!(regions[&Region::new("b")], ips(&[2]));
    assert_eq!(regions[&Region::new("c")], ips(&[1]));
    // Medians: e1 = 50, e2 = 60.
    assert_eq!(default, &ips(&[1]));
    // No measurement at all: the first Up endpoint.
    let r = answer_for(&rec, states("DUU"), no_rtt, false);
    assert_eq!(
        r.answer,
        Answer::ByRegion {
            regions: BTreeMap::new(),
            default: ips(&[2])
        }
    );
    // Nothing Up: the all-down policy, as for the other policies.
    let r = answer_for(&rec, states("DDD"), rtts, false);
    assert_eq!(r.answer, Answer::Fixed(ips(&[1, 2, 3])));
}

proptest! {
    #[test]
    fn weighted_pick_never_returns_zero_weight_when_others_are_positive(
        weights in prop::collection::vec(0u32..5, 1..6), roll in any::<u32>()
    ) {
        let choices: Vec<(IpAddr, u32)> = weights.iter().enumerate()
            .map(|(i, w)| (IpAddr::from([10, 0, 0, i as u8]), *w)).collect();
        let picked = pick_weighted(&choices, roll).expect("non-empty");
        let w = choices.iter().find(|(ip, _)| *ip == picked).map(|(_, w)| *w).unwrap_or(0);
        prop_assert!(w > 0 || weights.iter().all(|w| *w == 0));
    }

    /// An answer only ever contains configured or fallback addresses, and never a Down
    /// endpoint while some endpoint is Up.
    #[test]
    fn answers_prefer_up_endpoints(s in "[UD]{1,5}", policy in 0u8..3) {
        let policy = [Policy::Failover, Policy::All, Policy::Weighted][policy as usize];
        let rec = record(policy, WhenAllDown::None, s.len() as u8);
        let r = answer_for(&rec, states(&s), no_rtt, false);
        let up: Vec<IpAddr> = rec.endpoints.iter().zip(s.chars())
            .filter(|(_, c)| *c == 'U').map(|(e, _)| e.address).collect();
        for ip in r.answer.addresses() {
            prop_assert!(up.contains(&ip));
        }
        prop_assert_eq!(r.answer.addresses().is_empty(), up.is_empty());
    }
}

#[test]
fn the_answers_generation_moves_only_when_answers_change() {
    let settings = crate::config::Settings::from_toml(
        "[[prober]]\nregion = \"a\"\n[check.t]\nprotocol = \"tcp\"\nport = 9\n\
         [[record]]\nname = \"www.example.com\"\n\
         endpoints = [{ name = \"one\", address = \"192.0.2.1\" }, { name = \"two\", address = \"192.0.2.2\" }]\n",
        "t.toml",
        std::path::Path::new("."),
    )
    .expect("settings");
    let verdicts = |one: Health| -> crate::quorum::Verdicts {
        [("one", one), ("two", Health::Up)]
            .into_iter()
            .map(|(id, health)| {
                let mut v = crate::quorum::Verdict::unknown(1);
                v.health = health;
                (EndpointId::new(id), std::sync::Arc::new(v))
            })
            .collect()
    };
    let first = build(
        &settings,
        Decided::held(verdicts(Health::Up), QuorumState::default()),
        BTreeMap::new(),
        &Snapshot::default(),
        1,
        Undecided::Wait,
    );
    let same = build(
        &settings,
        Decided::held(verdicts(Health::Up), QuorumState::default()),
        BTreeMap::new(),
        &first,
        2,
        Undecided::Wait,
    );
    assert_eq!(
        same.answers_generation, first.answers_generation,
        "new votes, same answers"
    );
    let moved = build(
        &settings,
        Decided::held(verdicts(Health::Down), QuorumState::default()),
        BTreeMap::new(),
        &same,
        3,
        Undecided::Wait,
    );
    assert_eq!(
        moved.answers_generation,
        same.answers_generation + 1,
        "failed over"
    );
}

#[test]
fn a_drained_endpoint_is_called_drained_not_down() {
    let settings = crate::config::Settings::from_toml(
        "[[prober]]\nregion = \"a\"\n[check.t]\nprotocol = \"tcp\"\nport = 9\n\
         [[record]]\nname = \"www.example.com\"\n\
         endpoints = [{ name = \"one\", address = \"192.0.2.1\" }, { name = \"two\", address = \"192.0.2.2\" }, { name = \"three\", address = \"192.0.2.3\" }]\n",
        "t.toml",
        std::path::Path::new("."),
    )
    .expect("settings");
    let verdicts: crate::quorum::Verdicts = [
        ("one", Health::Up),
        ("two", Health::Down),
        ("three", Health::Up),
    ]
    .into_iter()
    .map(|(id, health)| {
        let mut v = crate::quorum::Verdict::unknown(1);
        v.health = health;
        (EndpointId::new(id), std::sync::Arc::new(v))
    })
    .collect();
    let drain = crate::state::overrides::Override {
        endpoint: EndpointId::new("one"),
        action: crate::state::overrides::Action::Drain,
        reason: "maintenance".into(),
        by: "test".into(),
        created_unix_ms: 0,
        expires_unix_ms: u64::MAX,
    };
    let snapshot = build(
        &settings,
        Decided::held(verdicts, QuorumState::default()),
        BTreeMap::from([(EndpointId::new("one"), drain)]),
        &Snapshot::default(),
        1,
        Undecided::Wait,
    );
    let www = &snapshot.records[&("www.example.com.".to_string(), RecordKind::A)];
    assert_eq!(www.answer, Answer::Fixed(ips(&[3])));
    assert_eq!(
        www.reason.describe(),
        "two not Up, one drained; failed over to three"
    );
}
