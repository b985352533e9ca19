//! Watching a drill: every member's status and DNS answer (and Route53) polled together until
//! each has detected, responded and recovered, with the time of each phase.

use std::{net::IpAddr, time::Duration};

use tokio::{task::JoinSet, time::Instant};

use super::{
    Member, REQUEST_TIMEOUT, ROUTE53_READ_EVERY, ROUTE53_TIMEOUT, StepError,
    observe::{self, Half, Mode, ServerView},
    report::Phases,
};
use crate::{
    adminctl::Session,
    config::{RecordSpec, ServerRole, Settings},
    dns::query::{self, Reply},
    route53::{api::Api, client::Route53Client},
};

/// What a look asks each member.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Ask {
    /// Its status document.
    Status,
    /// Its status, and its DNS answer (DNS servers).
    StatusAndDns,
}

/// Everything the watching needs.
pub(super) struct Drill {
    pub settings: Settings,
    pub record: RecordSpec,
    pub endpoint: String,
    pub address: IpAddr,
    pub members: Vec<Member>,
    pub session: Session,
    pub route53: Option<Route53Client>,
    pub mode: Mode,
    /// The reason of the drill's overrides, unique to this drill: only those are cleared.
    pub reason: String,
}

/// The state of one member between polls.
#[derive(Clone, Default)]
pub(super) struct Seen {
    pub baseline: Vec<IpAddr>,
    pub during: Option<Vec<IpAddr>>,
    /// Route53 members: when the change in place before this half started was submitted.
    pub change_before: Option<u64>,
    pub phases: Phases,
    pub failback: Phases,
    pub last_error: Option<String>,
}

/// One look at one member.
pub(super) struct Look {
    pub at: Instant,
    pub view: Result<ServerView, String>,
    pub dns: Option<Result<Reply, String>>,
}

impl Drill {
    pub async fn route53_values(&self) -> Result<Vec<IpAddr>, String> {
        let (Some(api), Some(target)) = (&self.route53, &self.record.route53) else {
            return Ok(Vec::new());
        };
        let sets = tokio::time::timeout(
            ROUTE53_TIMEOUT,
            crate::route53::api::list_all(api as &dyn Api, &target.zone_id),
        )
        .await
        .map_err(|_| {
            format!(
                "Route53 {}: no answer within {ROUTE53_TIMEOUT:?}",
                target.zone_id
            )
        })?
        .map_err(|e| format!("Route53 {}: {e}", target.zone_id))?;
        Ok(observe::route53_values(&sets, &self.record))
    }

    /// How long checks take to notice a real failure of the endpoint: an interval and (fall - 1)
    /// suspect intervals, plus
    /// one pull when probers are remote.
    pub fn detection_budget(&self) -> Duration {
        let check = self
            .record
            .endpoints
            .iter()
            .find(|e| e.id.as_str() == self.endpoint)
            .and_then(|e| self.settings.endpoint(&e.id))
            // The first failed check comes within an interval; the suspicion is confirmed by
            // (fall - 1) more, one suspect_interval apart.
            .map(|spec| spec.check.interval + spec.check.suspect_interval * (spec.check.fall - 1))
            .unwrap_or_default();
        let pull = if self.settings.prober_urls.is_empty() {
            Duration::ZERO
        } else {
            self.settings.cluster.poll_interval
        };
        check + pull
    }

    /// Real mode: waits until some prober's latest check of the endpoint fails (the failure
    /// half) or succeeds again (the failback); that instant starts the clock.
    pub async fn wait_for_checks(
        &self,
        half: Half,
        timeout: Duration,
    ) -> Result<Instant, StepError> {
        let failing = half == Half::Failure;
        let deadline = Instant::now() + timeout;
        loop {
            for look in self.look_all(Ask::Status).await {
                if let Ok(view) = &look.view
                    && let Some(e) = view.endpoints.get(&self.endpoint)
                    && (if failing {
                        e.failing
                    } else {
                        e.passing && !e.failing
                    })
                {
                    return Ok(look.at);
                }
            }
            if Instant::now() >= deadline {
                return Err(StepError::NoCheck {
                    endpoint: self.endpoint.clone(),
                    half,
                    within: timeout,
                });
            }
            tokio::time::sleep(self.settings.drill.poll_interval).await;
        }
    }

    /// Looks at every member at once.
    pub async fn look_all(&self, ask: Ask) -> Vec<Look> {
        let mut tasks = JoinSet::new();
        for (i, m) in self.members.iter().enumerate() {
            let session = self.session.clone();
            let target = m.target.clone();
            let record = self.record.clone();
            let dns_addr = m
                .server
                .dns
                .filter(|_| ask == Ask::StatusAndDns && m.server.role == ServerRole::Dns);
            tasks.spawn(async move {
                let (view, reply) = tokio::join!(
                    async {
                        session
                            .status(&target)
                            .await
                            .map(|doc| observe::view(&doc, &record))
                            .map_err(|e| e.to_string())
                    },
                    async {
                        match dns_addr {
                            Some(addr) => Some(
                                query::addresses(addr, &record.name, record.kind, REQUEST_TIMEOUT)
                                    .await,
                            ),
                            None => None,
                        }
                    }
                );
                (
                    i,
                    Look {
                        at: Instant::now(),
                        view,
                        dns: reply,
                    },
                )
            });
        }
        let mut looks: Vec<Option<Look>> = (0..self.members.len()).map(|_| None).collect();
        while let Some(joined) = tasks.join_next().await {
            if let Ok((i, look)) = joined {
                looks[i] = Some(look);
            }
        }
        looks
            .into_iter()
            .map(|look| {
                look.unwrap_or_else(|| Look {
                    at: Instant::now(),
                    view: Err("the look at this server failed".into()),
                    dns: None,
                })
            })
            .collect()
    }

    /// Polls every member until each has reached every phase of `half`, or the timeout.
    pub async fn watch(
        &self,
        half: Half,
        start: Instant,
        seen: &mut [Seen],
    ) -> Result<(), StepError> {
        let deadline = start + self.settings.drill.timeout;
        let mut route53_read: Option<(Instant, Result<Vec<IpAddr>, String>)> = None;
        loop {
            let looks = self.look_all(Ask::StatusAndDns).await;
            let route53_due = route53_read
                .as_ref()
                .is_none_or(|(at, _)| at.elapsed() >= ROUTE53_READ_EVERY);
            let needs_route53 =
                self.members.iter().zip(seen.iter()).any(|(m, s)| {
                    m.server.role == ServerRole::Route53 && s.phases.recovery.is_none()
                });
            if needs_route53 && route53_due {
                route53_read = Some((Instant::now(), self.route53_values().await));
            }
            for ((m, s), look) in self.members.iter().zip(seen.iter_mut()).zip(looks) {
                let view = match look.view {
                    Ok(v) => v,
                    Err(e) => {
                        s.last_error = Some(e);
                        continue;
                    }
                };
                let route53 = route53_read.as_ref().and_then(|(_, r)| r.as_ref().ok());
                let reached = self
                    .phases_reached(m, s, &view, look.dns.as_ref(), route53, half)
                    .await;
                // The Route53 checks may have asked name servers since the look.
                let seen_at = match m.server.role {
                    ServerRole::Route53 => Instant::now(),
                    ServerRole::Dns => look.at,
                };
                let at = seen_at.saturating_duration_since(start);
                let p = &mut s.phases;
                // Phases are ordered: a later one seen first implies the earlier ones.
                if reached.2 && p.recovery.is_none() {
                    p.recovery = Some(at);
                    if half == Half::Failure {
                        s.during = match (&look.dns, m.server.role) {
                            (Some(Ok(reply)), _) => Some(reply.addresses.clone()),
                            _ => route53.cloned(),
                        };
                    }
                }
                if (reached.1 || p.recovery.is_some()) && p.response.is_none() {
                    p.response = Some(p.recovery.unwrap_or(at).min(at));
                }
                if (reached.0 || p.response.is_some()) && p.detection.is_none() {
                    p.detection = Some(p.response.unwrap_or(at).min(at));
                }
            }
            if seen.iter().all(|s| s.phases.complete()) {
                return Ok(());
            }
            if Instant::now() >= deadline {
                let late: Vec<String> = self
                    .members
                    .iter()
                    .zip(seen.iter())
                    .filter(|(_, s)| !s.phases.complete())
                    .map(|(m, s)| match &s.last_error {
                        Some(e) => format!("{} (last error: {e})", m.server.name),
                        None => m.server.name.clone(),
                    })
                    .collect();
                return Err(StepError::Incomplete {
                    half,
                    within: self.settings.drill.timeout,
                    late: late.join(", "),
                });
            }
            tokio::time::sleep(self.settings.drill.poll_interval).await;
        }
    }

    /// (detected, responded, recovered) for one member's latest look.
    async fn phases_reached(
        &self,
        member: &Member,
        seen: &Seen,
        view: &ServerView,
        dns: Option<&Result<Reply, String>>,
        route53: Option<&Vec<IpAddr>>,
        half: Half,
    ) -> (bool, bool, bool) {
        let detected = observe::detected(view, &self.endpoint, half, self.mode);
        match member.server.role {
            ServerRole::Dns => {
                let responded =
                    observe::responded(view, &self.record, self.address, &seen.baseline, half);
                let recovered = match dns {
                    Some(Ok(reply)) => {
                        observe::recovered(reply, &self.record, self.address, &seen.baseline, half)
                    }
                    _ => false,
                };
                (detected, responded, responded && recovered)
            }
            ServerRole::Route53 => {
                let change = view.last_change.as_ref().filter(|c| {
                    Some(c.submitted_unix_ms) != seen.change_before
                        && c.records
                            .iter()
                            .any(|r| r.eq_ignore_ascii_case(&self.record.name))
                });
                let submitted = change.is_some();
                let values_ok = route53.is_some_and(|values| {
                    let reply = Reply {
                        rcode: "NOERROR".into(),
                        addresses: values.clone(),
                    };
                    observe::recovered(&reply, &self.record, self.address, &seen.baseline, half)
                });
                let insync = change.is_some_and(|c| c.insync) && values_ok;
                let nameservers_ok = insync && self.nameservers_answer(&seen.baseline, half).await;
                (detected, submitted, insync && nameservers_ok)
            }
        }
    }

    /// Route53's name servers (`drill.route53_nameservers`) answer the new value.
    async fn nameservers_answer(&self, baseline: &[IpAddr], half: Half) -> bool {
        for ns in &self.settings.drill.route53_nameservers {
            match query::addresses(*ns, &self.record.name, self.record.kind, REQUEST_TIMEOUT).await
            {
                Ok(reply)
                    if observe::recovered(&reply, &self.record, self.address, baseline, half) => {}
                _ => return false,
            }
        }
        true
    }
}
