//! The drill report: each server's phase timings for the failure and the failback, the RTO
//! against the record's target, as a table for people and JSON for machines.

use std::{fmt::Write, net::IpAddr, time::Duration};

use serde_json::{Value, json};

use super::observe::{Mode, list};
use crate::{config::ServerRole, state::drills::DrillResult};

/// Time from the start of a half (injection or repair) to each phase on one server.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Phases {
    /// The verdict (or override) changed.
    pub detection: Option<Duration>,
    /// The server published the new answer (Route53: the change was submitted).
    pub response: Option<Duration>,
    /// The server answers the new value over DNS (Route53: INSYNC and the API and name
    /// servers show the new value).
    pub recovery: Option<Duration>,
}

impl Phases {
    pub fn complete(&self) -> bool {
        self.detection.is_some() && self.response.is_some() && self.recovery.is_some()
    }
}

#[derive(Debug, Clone)]
pub struct ServerResult {
    pub name: String,
    pub role: ServerRole,
    pub baseline: Vec<IpAddr>,
    /// What it answered once the failure was in place.
    pub during: Option<Vec<IpAddr>>,
    pub failure: Phases,
    pub failback: Phases,
}

#[derive(Debug, Clone)]
pub struct Report {
    pub record: String,
    pub kind: String,
    pub endpoint: String,
    pub address: IpAddr,
    pub mode: Mode,
    pub servers: Vec<ServerResult>,
    pub target: Option<Duration>,
    /// How long the checks take to notice a real failure (an interval and fall - 1 suspect intervals, plus the pull
    /// interval when probers are remote); added to the RTO in override mode.
    pub detection_budget: Duration,
    pub finished_unix_ms: u64,
    /// Why the drill stopped early, if it did.
    pub aborted: Option<String>,
    /// Whether every override the drill set was cleared.
    pub restored: bool,
}

impl Report {
    /// Time until every server (and Route53) serves the new value; none if one never did.
    pub fn rto(&self) -> Option<Duration> {
        self.slowest(|s| s.failure.recovery)
    }

    pub fn failback(&self) -> Option<Duration> {
        self.slowest(|s| s.failback.recovery)
    }

    /// The latest of one phase across servers; none if a server never reached it.
    fn slowest(&self, phase: impl Fn(&ServerResult) -> Option<Duration>) -> Option<Duration> {
        self.servers
            .iter()
            .map(phase)
            .try_fold(Duration::ZERO, |max, r| r.map(|r| max.max(r)))
    }

    /// What is compared with the target: the measured RTO, plus the detection budget when
    /// the failure was injected (an override skips the checks a real failure goes through).
    pub fn compared(&self) -> Option<Duration> {
        self.rto().map(|rto| match self.mode {
            Mode::Override => rto + self.detection_budget,
            Mode::Real => rto,
        })
    }

    /// Whether the target was met (none without a target), judged on the failover: a drill
    /// that did not recover missed it; a failback problem is reported, not counted here.
    pub fn met(&self) -> Option<bool> {
        self.target
            .map(|target| self.compared().is_some_and(|c| c <= target))
    }

    pub fn mode_name(&self) -> &'static str {
        match self.mode {
            Mode::Override => "override",
            Mode::Real => "real",
        }
    }

    /// The result kept by the serving processes (`state::drills`), posted as that type.
    pub fn result(&self) -> DrillResult {
        DrillResult {
            record: self.record.clone(),
            kind: self.kind.clone(),
            endpoint: self.endpoint.clone(),
            mode: self.mode_name().to_string(),
            finished_unix_ms: self.finished_unix_ms,
            rto_ms: self.rto().map(ms),
            compared_ms: self.compared().map(ms),
            target_ms: self.target.map(ms),
            met: self.met(),
        }
    }

    pub fn json(&self) -> Value {
        let phases = |p: &Phases| {
            json!({
                "detection_ms": p.detection.map(ms),
                "response_ms": p.response.map(ms),
                "recovery_ms": p.recovery.map(ms),
            })
        };
        json!({
            "record": self.record,
            "type": self.kind,
            "endpoint": self.endpoint,
            "address": self.address,
            "mode": self.mode_name(),
            "servers": self.servers.iter().map(|s| json!({
                "name": s.name,
                "role": s.role.as_str(),
                "baseline": s.baseline,
                "during": s.during,
                "failure": phases(&s.failure),
                "failback": phases(&s.failback),
            })).collect::<Vec<_>>(),
            "rto_ms": self.rto().map(ms),
            "failback_ms": self.failback().map(ms),
            "detection_budget_ms": ms(self.detection_budget),
            "compared_ms": self.compared().map(ms),
            "target_ms": self.target.map(ms),
            "met": self.met(),
            "aborted": self.aborted,
            "restored": self.restored,
            "finished_unix_ms": self.finished_unix_ms,
        })
    }

    pub fn table(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "drill of {} {}: {} ({}) failed by {}",
            self.record,
            self.kind,
            self.endpoint,
            self.address,
            match self.mode {
                Mode::Override => "a force_down override",
                Mode::Real => "the operator",
            }
        );
        let _ = writeln!(
            out,
            "{:<14} {:<8} {:<18} {:<18} {:>9} {:>9} {:>9} {:>9}",
            "server", "role", "before", "during", "detect", "respond", "recover", "failback"
        );
        for s in &self.servers {
            let _ = writeln!(
                out,
                "{:<14} {:<8} {:<18} {:<18} {:>9} {:>9} {:>9} {:>9}",
                s.name,
                s.role.as_str(),
                list(&s.baseline),
                s.during.as_deref().map_or_else(|| "-".to_string(), list),
                human(s.failure.detection),
                human(s.failure.response),
                human(s.failure.recovery),
                human(s.failback.recovery),
            );
        }
        let _ = writeln!(
            out,
            "RTO {} (every server answers without {}); failback {}",
            human(self.rto()),
            self.endpoint,
            human(self.failback()),
        );
        if self.mode == Mode::Override {
            let _ = writeln!(
                out,
                "a real failure also needs the checks to notice it: about {} (interval + (fall - 1) x suspect_interval); RTO with detection {}",
                human(Some(self.detection_budget)),
                human(self.compared()),
            );
        }
        let verdict = match (self.target, self.met()) {
            (Some(target), Some(true)) => format!("target {}: met", human(Some(target))),
            (Some(target), _) => format!("target {}: MISSED", human(Some(target))),
            (None, _) => "no rto target configured for this record".to_string(),
        };
        let _ = writeln!(out, "{verdict}");
        if let Some(why) = &self.aborted {
            let _ = writeln!(out, "stopped early: {why}");
        }
        let restored = match (self.mode, self.restored) {
            (Mode::Override, true) => "restored: the drill's overrides are cleared",
            (Mode::Override, false) => {
                "NOT RESTORED: clear the drill's override by hand (vantage override clear)"
            }
            (Mode::Real, _) if self.failback().is_some() => "the endpoint is back in every answer",
            (Mode::Real, _) => {
                "the endpoint is not back in every answer yet: check that it was repaired"
            }
        };
        let _ = writeln!(out, "{restored}");
        out
    }
}

fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// `850 ms`, `2.31 s`, `-` for a phase not reached.
fn human(d: Option<Duration>) -> String {
    match d {
        None => "-".into(),
        Some(d) if d < Duration::from_secs(1) => format!("{} ms", d.as_millis()),
        Some(d) => format!("{:.2} s", d.as_secs_f64()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn phases(recovery: Option<u64>) -> Phases {
        Phases {
            detection: Some(Duration::from_millis(5)),
            response: Some(Duration::from_millis(10)),
            recovery: recovery.map(Duration::from_millis),
        }
    }

    fn report(mode: Mode, recoveries: &[Option<u64>], target_ms: Option<u64>) -> Report {
        Report {
            record: "www.example.com.".into(),
            kind: "A".into(),
            endpoint: "use1".into(),
            address: "127.0.0.2".parse().expect("ip"),
            mode,
            servers: recoveries
                .iter()
                .enumerate()
                .map(|(i, r)| ServerResult {
                    name: format!("ns{i}"),
                    role: ServerRole::Dns,
                    baseline: vec!["127.0.0.2".parse().expect("ip")],
                    during: None,
                    failure: phases(*r),
                    failback: phases(Some(20)),
                })
                .collect(),
            target: target_ms.map(Duration::from_millis),
            detection_budget: Duration::from_secs(2),
            finished_unix_ms: 1,
            aborted: None,
            restored: true,
        }
    }

    #[test]
    fn the_rto_is_the_slowest_server_and_override_drills_add_the_detection_budget() {
        let r = report(Mode::Override, &[Some(40), Some(300)], Some(2_200));
        assert_eq!(r.rto(), Some(Duration::from_millis(300)));
        assert_eq!(r.compared(), Some(Duration::from_millis(2_300)));
        assert_eq!(r.met(), Some(false));
        let r = report(Mode::Real, &[Some(40), Some(300)], Some(2_200));
        assert_eq!(r.met(), Some(true));
        assert!(r.table().contains("met"), "{}", r.table());
    }

    #[test]
    fn a_server_that_never_recovered_misses_the_target() {
        let r = report(Mode::Real, &[Some(40), None], Some(60_000));
        assert_eq!(r.rto(), None);
        assert_eq!(r.met(), Some(false));
        assert!(r.table().contains("MISSED"));
        assert_eq!(r.result().rto_ms, None);
        assert_eq!(report(Mode::Real, &[Some(1)], None).met(), None);
    }
}
