//! What a drill reads off one server's `/v1/status` and DNS answers, and the pure decisions on
//! it: whether the drill is safe to start, and which phase each server has reached.

use std::{collections::BTreeMap, net::IpAddr};

use serde_json::Value;

use crate::{
    config::{Policy, RecordSpec},
    dns::query::Reply,
};

/// One endpoint as a server sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EndpointView {
    pub id: String,
    pub address: Option<IpAddr>,
    /// `up`, `down` or `unknown`.
    pub verdict: String,
    pub quorum_reached: bool,
    /// Some prober's latest check of it failed (fresh votes only).
    pub failing: bool,
    /// Some prober's latest check of it succeeded (fresh votes only).
    pub passing: bool,
}

/// What the drill needs from one server's status document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerView {
    pub ready: bool,
    pub quorum: bool,
    /// The record's answer in the server's snapshot (`None`: the server does not have it).
    pub answer: Option<Vec<IpAddr>>,
    /// Every record's answer, by "name type".
    pub answers: BTreeMap<String, Vec<IpAddr>>,
    pub endpoints: BTreeMap<String, EndpointView>,
    /// Overrides in force: endpoint -> action.
    pub overrides: BTreeMap<String, String>,
    /// Route53 reconciler: the latest change applied to the record's hosted zone.
    pub last_change: Option<Change>,
    /// Route53 reconciler: the record's state and why ("refused: ..."), when not in sync.
    pub route53_trouble: Option<String>,
}

/// A change the Route53 reconciler applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    /// When the reconciler submitted it (its own clock): tells changes apart.
    pub submitted_unix_ms: u64,
    pub ids: Vec<String>,
    pub records: Vec<String>,
    pub insync: bool,
}

/// Reads a `/v1/status` document.
pub fn view(doc: &Value, record: &RecordSpec) -> ServerView {
    let answers: BTreeMap<String, Vec<IpAddr>> = doc["records"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|r| r["state"].as_str() == Some("answer"))
        .filter_map(|r| {
            Some((
                format!("{} {}", r["name"].as_str()?, r["type"].as_str()?),
                sorted(addresses(&r["answer"])),
            ))
        })
        .collect();
    let answer = answers
        .get(&format!("{} {}", record.name, record.kind.as_str()))
        .cloned();
    let endpoints = doc["endpoints"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|e| {
            let id = e["id"].as_str()?.to_string();
            let fresh = |want_failing: bool| {
                e["votes"].as_array().into_iter().flatten().any(|v| {
                    v["fresh"].as_bool() == Some(true)
                        && v["state"].as_str() != Some("unknown")
                        && (v["consecutive_failures"].as_u64().unwrap_or(0) > 0) == want_failing
                })
            };
            Some((
                id.clone(),
                EndpointView {
                    id,
                    address: e["address"].as_str().and_then(|a| a.parse().ok()),
                    verdict: e["verdict"].as_str().unwrap_or("unknown").to_string(),
                    quorum_reached: e["quorum_reached"].as_bool().unwrap_or(false),
                    failing: fresh(true),
                    passing: fresh(false),
                },
            ))
        })
        .collect();
    let overrides = doc["overrides"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|o| {
            Some((
                o["endpoint"].as_str()?.to_string(),
                o["action"].as_str()?.to_string(),
            ))
        })
        .collect();
    let last_change = record.route53.as_ref().and_then(|target| {
        let change = &doc["route53"][target.zone_id.as_str()]["last_change"];
        change.is_object().then(|| Change {
            submitted_unix_ms: change["submitted_unix_ms"].as_u64().unwrap_or(0),
            ids: strings(&change["ids"]),
            records: strings(&change["records"]),
            insync: change["insync_unix_ms"].is_u64(),
        })
    });
    let route53_trouble = doc["records"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|r| r["name"] == record.name.as_str() && r["type"] == record.kind.as_str())
        .map(|r| &r["route53"])
        .filter(|sync| sync["state"].is_string() && sync["state"] != "in_sync")
        .map(|sync| {
            format!(
                "{}: {}",
                sync["state"].as_str().unwrap_or_default(),
                sync["reason"].as_str().unwrap_or_default()
            )
        });
    ServerView {
        route53_trouble,
        ready: doc["ready"].as_bool().unwrap_or(false),
        quorum: doc["quorum"]["state"].as_str() == Some("quorum"),
        answer,
        answers,
        endpoints,
        overrides,
        last_change,
    }
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .into_iter()
        .flatten()
        .filter_map(|s| s.as_str().map(str::to_string))
        .collect()
}

fn addresses(v: &Value) -> Vec<IpAddr> {
    v.as_array()
        .into_iter()
        .flatten()
        .filter_map(|a| a.as_str()?.parse().ok())
        .collect()
}

fn sorted(mut v: Vec<IpAddr>) -> Vec<IpAddr> {
    v.sort();
    v.dedup();
    v
}

/// Whether every answer for the record is the same set of addresses (then DNS answers can be
/// compared whole); weighted and latency answers vary by query or by client.
pub fn deterministic(record: &RecordSpec) -> bool {
    matches!(record.policy, Policy::Failover | Policy::All)
}

/// Why a drill of `endpoint` (at `address`) must not start, judged on one server; empty when
/// it may. `name` names the server in the messages.
pub fn refusals(
    name: &str,
    view: &ServerView,
    record: &RecordSpec,
    endpoint: &str,
    address: IpAddr,
) -> Vec<String> {
    let mut problems = Vec::new();
    if !view.ready {
        problems.push(format!(
            "{name} is not ready (it has not decided every record yet)"
        ));
    }
    if !view.quorum {
        problems.push(format!(
            "{name} has no quorum of probers: verdicts are frozen, a failover cannot happen"
        ));
    }
    if let Some(action) = view.overrides.get(endpoint) {
        problems.push(format!(
            "{name} has a {action} override on {endpoint}; clear it before drilling"
        ));
    }
    match &view.answer {
        None => problems.push(format!(
            "{name} does not answer {} {} (not configured there, or not decided)",
            record.name,
            record.kind.as_str()
        )),
        Some(answer) if !answer.contains(&address) => problems.push(format!(
            "{name} answers {} for {}, not {endpoint} ({address}): the drill would fail nothing over",
            list(answer),
            record.name
        )),
        Some(_) => {}
    }
    problems.extend(outage(name, view, record, endpoint, address));
    problems
}

/// Why failing `endpoint` would leave `record` without an answer on this server: no other
/// endpoint (with another address) is Up by quorum and free of a down or drain override.
pub fn outage(
    name: &str,
    view: &ServerView,
    record: &RecordSpec,
    endpoint: &str,
    address: IpAddr,
) -> Option<String> {
    let targets: Vec<&str> = record
        .endpoints
        .iter()
        .filter(|e| e.address != address && e.id.as_str() != endpoint)
        .filter(|e| {
            view.endpoints.get(e.id.as_str()).is_some_and(|v| {
                v.verdict == "up"
                    && v.quorum_reached
                    && !matches!(
                        view.overrides.get(e.id.as_str()).map(String::as_str),
                        Some("force_down" | "drain")
                    )
            })
        })
        .map(|e| e.id.as_str())
        .collect();
    if targets.is_empty() {
        let others: Vec<String> = record
            .endpoints
            .iter()
            .filter(|e| e.address != address)
            .map(|e| {
                let state = view
                    .endpoints
                    .get(e.id.as_str())
                    .map_or("unknown", |v| v.verdict.as_str());
                match view.overrides.get(e.id.as_str()) {
                    Some(action) => format!("{} is {state} ({action})", e.id),
                    None => format!("{} is {state}", e.id),
                }
            })
            .collect();
        return Some(format!(
            "{name}: {} {} has no failover target Up by quorum ({}); failing {endpoint} would cause an outage",
            record.name,
            record.kind.as_str(),
            if others.is_empty() {
                "the record has no other endpoint".to_string()
            } else {
                others.join(", ")
            }
        ));
    }
    None
}

pub fn list(addresses: &[IpAddr]) -> String {
    if addresses.is_empty() {
        "nothing".into()
    } else {
        addresses
            .iter()
            .map(IpAddr::to_string)
            .collect::<Vec<_>>()
            .join(" ")
    }
}

/// The two halves of a drill.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Half {
    /// The endpoint goes down; answers move away from it.
    Failure,
    /// The endpoint comes back; answers return to the baseline.
    Failback,
}

/// How the failure is caused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// A force_down override.
    Override,
    /// The operator breaks (and then repairs) the endpoint.
    Real,
}

/// Whether the server's verdict (or override) already reflects the failure or its end.
pub fn detected(view: &ServerView, endpoint: &str, half: Half, mode: Mode) -> bool {
    match (mode, half) {
        (Mode::Override, Half::Failure) => {
            view.overrides.get(endpoint).map(String::as_str) == Some("force_down")
        }
        (Mode::Override, Half::Failback) => !view.overrides.contains_key(endpoint),
        (Mode::Real, Half::Failure) => view
            .endpoints
            .get(endpoint)
            .is_some_and(|e| e.verdict == "down"),
        (Mode::Real, Half::Failback) => view
            .endpoints
            .get(endpoint)
            .is_some_and(|e| e.verdict == "up"),
    }
}

/// Whether the server's snapshot answer has moved: away from `address` (failure), back to
/// `baseline` (failback).
pub fn responded(
    view: &ServerView,
    record: &RecordSpec,
    address: IpAddr,
    baseline: &[IpAddr],
    half: Half,
) -> bool {
    let Some(answer) = &view.answer else {
        return false;
    };
    match half {
        Half::Failure => !answer.is_empty() && !answer.contains(&address),
        Half::Failback if deterministic(record) => answer == baseline,
        Half::Failback => answer.contains(&address),
    }
}

/// Whether a DNS reply shows the new state.
pub fn recovered(
    reply: &Reply,
    record: &RecordSpec,
    address: IpAddr,
    baseline: &[IpAddr],
    half: Half,
) -> bool {
    if !reply.is_noerror() || reply.addresses.is_empty() {
        return false;
    }
    match half {
        Half::Failure => !reply.addresses.contains(&address),
        Half::Failback if deterministic(record) => reply.addresses == baseline,
        Half::Failback => true,
    }
}

/// Route53 values (as addresses) of a record, from its record sets.
pub fn route53_values<'a>(
    sets: impl IntoIterator<Item = &'a crate::route53::RecordSet>,
    record: &RecordSpec,
) -> Vec<IpAddr> {
    sorted(
        sets.into_iter()
            .filter(|s| {
                s.name.eq_ignore_ascii_case(&record.name) && s.rtype == record.kind.as_str()
            })
            .flat_map(|s| s.values.iter().filter_map(|v| v.parse().ok()))
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::{
        config::{RecordEndpoint, RecordKind, WhenAllDown},
        model::EndpointId,
    };

    fn record() -> RecordSpec {
        RecordSpec {
            name: "www.example.com.".into(),
            kind: RecordKind::A,
            ttl: 30,
            policy: Policy::Failover,
            when_all_down: WhenAllDown::All,
            endpoints: ["use1", "euw1"]
                .iter()
                .zip(2u8..)
                .map(|(id, i)| RecordEndpoint {
                    id: EndpointId::new(*id),
                    address: IpAddr::from([127, 0, 0, i]),
                    weight: 1,
                    aws_region: None,
                })
                .collect(),
            route53: None,
            rto: None,
        }
    }

    fn doc(euw1: &str, answer: &str, overrides: Value) -> Value {
        json!({
            "ready": true,
            "quorum": {"state": "quorum"},
            "records": [{"name": "www.example.com.", "type": "A", "state": "answer", "answer": [answer]}],
            "endpoints": [
                {"id": "use1", "address": "127.0.0.2", "verdict": "up", "quorum_reached": true,
                 "votes": [{"fresh": true, "state": "up", "consecutive_failures": 1}]},
                {"id": "euw1", "address": "127.0.0.3", "verdict": euw1, "quorum_reached": true, "votes": []},
            ],
            "overrides": overrides,
        })
    }

    const USE1: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(127, 0, 0, 2));

    #[test]
    fn a_healthy_fleet_may_be_drilled() {
        let v = view(&doc("up", "127.0.0.2", json!([])), &record());
        assert_eq!(
            refusals("ns1", &v, &record(), "use1", USE1),
            Vec::<String>::new()
        );
        assert!(v.endpoints["use1"].failing);
    }

    #[test]
    fn no_failover_target_refuses() {
        let v = view(&doc("down", "127.0.0.2", json!([])), &record());
        let problems = refusals("ns1", &v, &record(), "use1", USE1);
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(
            problems[0].contains("euw1 is down") && problems[0].contains("outage"),
            "{problems:?}"
        );
        // A drained target is no target either.
        let v = view(
            &doc(
                "up",
                "127.0.0.2",
                json!([{"endpoint": "euw1", "action": "drain"}]),
            ),
            &record(),
        );
        assert!(refusals("ns1", &v, &record(), "use1", USE1)[0].contains("euw1 is up (drain)"));
    }

    #[test]
    fn an_endpoint_not_answered_or_already_overridden_refuses() {
        let v = view(&doc("up", "127.0.0.3", json!([])), &record());
        assert!(refusals("ns1", &v, &record(), "use1", USE1)[0].contains("answers 127.0.0.3"));
        let v = view(
            &doc(
                "up",
                "127.0.0.2",
                json!([{"endpoint": "use1", "action": "force_up"}]),
            ),
            &record(),
        );
        assert!(refusals("ns1", &v, &record(), "use1", USE1)[0].contains("force_up override"));
    }

    #[test]
    fn phases_follow_the_status_and_the_dns_answer() {
        let r = record();
        let baseline = vec![USE1];
        let before = view(&doc("up", "127.0.0.2", json!([])), &r);
        let after = view(
            &doc(
                "up",
                "127.0.0.3",
                json!([{"endpoint": "use1", "action": "force_down"}]),
            ),
            &r,
        );
        assert!(!detected(&before, "use1", Half::Failure, Mode::Override));
        assert!(detected(&after, "use1", Half::Failure, Mode::Override));
        assert!(!detected(&after, "use1", Half::Failure, Mode::Real));
        assert!(!responded(&before, &r, USE1, &baseline, Half::Failure));
        assert!(responded(&after, &r, USE1, &baseline, Half::Failure));
        assert!(responded(&before, &r, USE1, &baseline, Half::Failback));
        let reply = |rcode: &str, ips: &[IpAddr]| Reply {
            rcode: rcode.into(),
            addresses: ips.to_vec(),
        };
        let euw1: IpAddr = "127.0.0.3".parse().expect("ip");
        assert!(recovered(
            &reply("NOERROR", &[euw1]),
            &r,
            USE1,
            &baseline,
            Half::Failure
        ));
        assert!(!recovered(
            &reply("NOERROR", &[USE1]),
            &r,
            USE1,
            &baseline,
            Half::Failure
        ));
        assert!(!recovered(
            &reply("SERVFAIL", &[]),
            &r,
            USE1,
            &baseline,
            Half::Failure
        ));
        assert!(!recovered(
            &reply("NOERROR", &[]),
            &r,
            USE1,
            &baseline,
            Half::Failure
        ));
        assert!(recovered(
            &reply("NOERROR", &[USE1]),
            &r,
            USE1,
            &baseline,
            Half::Failback
        ));
        assert!(!recovered(
            &reply("NOERROR", &[USE1, euw1]),
            &r,
            USE1,
            &baseline,
            Half::Failback
        ));
    }
}
