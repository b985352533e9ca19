//! `vantage drill`: fail one endpoint of a record on purpose (a force_down override on every
//! serving process, or the operator with `--real`), time how the fleet detects, responds and
//! recovers, fail back the same way, and report the RTO against the record's `rto` target.
//!
//! The drill refuses to start when it would cause an outage, and it always clears what it set,
//! also when it fails or is interrupted; the overrides carry a short expiry as a safety net.

pub mod observe;
pub mod report;

use std::{
    net::{IpAddr, SocketAddr},
    sync::{Arc, Mutex, PoisonError},
    time::Duration,
};

use tokio::{task::JoinSet, time::Instant};

use self::{
    observe::{Half, Mode, ServerView},
    report::{Phases, Report, ServerResult},
};
use crate::{
    adminctl::{Session, Target},
    config::{FleetServer, RecordKind, RecordSpec, ServerRole, Settings},
    dns::query::{self, Reply},
    route53::{api::Api, client::Route53Client},
};

/// What to drill, from the command line.
#[derive(Debug, Clone)]
pub struct Options {
    pub record: String,
    pub kind: Option<RecordKind>,
    /// The endpoint to fail; default: the one the record answers now.
    pub endpoint: Option<String>,
    pub mode: Mode,
    /// How long to keep the failure in place once every server has recovered.
    pub hold: Duration,
    /// Who runs the drill (audit log).
    pub by: String,
}

/// How a drill ended.
#[derive(Debug)]
pub enum Outcome {
    /// Not started: these preconditions failed.
    Refused(Vec<String>),
    Finished(Box<Report>),
    /// Interrupted (Ctrl-C); whether the overrides were cleared.
    Interrupted {
        restored: bool,
    },
}

#[derive(Debug, thiserror::Error)]
pub enum DrillError {
    #[error("{0}")]
    Usage(String),
    #[error("{0} (the drill's overrides were cleared)")]
    Failed(String),
    #[error(
        "{0}; the drill's overrides could NOT all be cleared: clear them with `vantage override clear`"
    )]
    NotRestored(String),
    /// Route53 cannot be read with these credentials: nothing was set.
    #[error("{0}")]
    Route53(String),
}

/// How many times Route53 is read per second at most while waiting.
const ROUTE53_READ_EVERY: Duration = Duration::from_secs(1);
/// Admin API requests and DNS queries give up after this.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(2);
/// Reading a hosted zone gives up after this.
const ROUTE53_TIMEOUT: Duration = Duration::from_secs(10);

/// The processes a drill acts on: `[[server]]`, or this host's DNS and admin listeners.
pub fn fleet(settings: &Settings) -> Vec<FleetServer> {
    if !settings.servers.is_empty() {
        return settings.servers.clone();
    }
    let loopback = |mut addr: SocketAddr| {
        if addr.ip().is_unspecified() {
            addr.set_ip(if addr.is_ipv4() {
                IpAddr::from([127, 0, 0, 1])
            } else {
                IpAddr::from(std::net::Ipv6Addr::LOCALHOST)
            });
        }
        addr
    };
    let admin = loopback(settings.admin.listen);
    match url::Url::parse(&format!("http://{admin}/")) {
        Ok(admin) => vec![FleetServer {
            name: "local".into(),
            role: ServerRole::Dns,
            dns: settings.dns.listen.first().copied().map(loopback),
            admin,
        }],
        Err(_) => Vec::new(),
    }
}

/// One server taking part in the drill.
#[derive(Clone)]
struct Member {
    server: FleetServer,
    target: Target,
}

/// Everything the watching needs.
struct Drill {
    settings: Settings,
    record: RecordSpec,
    endpoint: String,
    address: IpAddr,
    members: Vec<Member>,
    session: Session,
    route53: Option<Route53Client>,
    mode: Mode,
    /// The reason of the drill's overrides, unique to this drill: only those are cleared.
    reason: String,
}

/// The state of one member between polls.
#[derive(Clone, Default)]
struct Seen {
    baseline: Vec<IpAddr>,
    during: Option<Vec<IpAddr>>,
    /// Route53 members: when the change in place before this half started was submitted.
    change_before: Option<u64>,
    phases: Phases,
    failback: Phases,
    last_error: Option<String>,
}

/// Runs a drill; `interrupt` resolves when the operator asks to stop (Ctrl-C).
pub async fn run(
    settings: Settings,
    options: Options,
    interrupt: impl std::future::Future<Output = ()>,
    progress: impl Fn(&str),
) -> Result<Outcome, DrillError> {
    let record = find_record(&settings, &options)?;
    let token = settings
        .admin
        .token
        .as_ref()
        .map(|t| String::from_utf8_lossy(t.bytes()).trim().to_string());
    let route53_involved = record.route53.is_some();
    let members: Vec<Member> = fleet(&settings)
        .into_iter()
        .filter(|s| s.role == ServerRole::Dns || route53_involved)
        .map(|server| Member {
            target: Target {
                base: server.admin.clone(),
                token: token.clone(),
            },
            server,
        })
        .collect();
    if members.iter().all(|m| m.server.role != ServerRole::Dns) {
        return Err(DrillError::Usage(
            "no DNS server to drill: list the fleet's servers as [[server]] in the configuration"
                .into(),
        ));
    }
    if options.mode == Mode::Override && token.is_none() {
        return Err(DrillError::Usage(
            "an override drill needs the admin token: set admin.token_file in the configuration"
                .into(),
        ));
    }
    let session = Session::new(REQUEST_TIMEOUT).map_err(DrillError::Usage)?;
    let route53 = match &record.route53 {
        Some(_) => Some(Route53Client::new(&settings.route53).await),
        None => None,
    };
    // Credentials that cannot read Route53 are an error of this run, not a reason to refuse
    // the drill: say so plainly before anything else.
    if let (Some(api), Some(target)) = (&route53, &record.route53)
        && let Ok(Err(
            e @ (crate::route53::api::ApiError::Credentials(_)
            | crate::route53::api::ApiError::Denied(_)),
        )) = tokio::time::timeout(
            ROUTE53_TIMEOUT,
            crate::route53::api::list_all(api as &dyn Api, &target.zone_id),
        )
        .await
    {
        return Err(DrillError::Route53(format!(
            "cannot read hosted zone {}: {e}",
            target.zone_id
        )));
    }

    // Preconditions: every server's status, every DNS answer, Route53.
    let mut problems = Vec::new();
    if route53_involved && !members.iter().any(|m| m.server.role == ServerRole::Route53) {
        problems.push(format!(
            "{} is pushed to Route53, but no [[server]] with role = \"route53\" is listed: the drill cannot reach the reconciler",
            record.name
        ));
    }
    let mut views = Vec::new();
    for m in &members {
        match session.status(&m.target).await {
            Ok(doc) => views.push(Some(observe::view(&doc, &record))),
            Err(e) => {
                problems.push(format!(
                    "{} ({}): cannot read its status: {e}",
                    m.server.name, m.target.base
                ));
                views.push(None);
            }
        }
    }
    if !problems.is_empty() {
        return Ok(Outcome::Refused(problems));
    }
    let views: Vec<ServerView> = views.into_iter().flatten().collect();
    let first_dns = members
        .iter()
        .position(|m| m.server.role == ServerRole::Dns)
        .unwrap_or(0);
    let (endpoint, address) = choose_endpoint(&record, &options, &views[first_dns])?;
    let drill = Drill {
        settings,
        record: record.clone(),
        endpoint,
        address,
        members,
        session,
        reason: format!(
            "failover drill of {} ({:08x})",
            record.name,
            rand::random::<u32>()
        ),
        route53,
        mode: options.mode,
    };
    let mut seen = vec![Seen::default(); drill.members.len()];
    for (i, (m, view)) in drill.members.iter().zip(&views).enumerate() {
        problems.extend(observe::refusals(
            &m.server.name,
            view,
            &drill.record,
            &drill.endpoint,
            drill.address,
        ));
        // The override applies to the endpoint, so to every record that answers it.
        for other in drill.settings.records.iter().filter(|r| {
            (r.name != drill.record.name || r.kind != drill.record.kind)
                && r.endpoints.iter().any(|e| e.id.as_str() == drill.endpoint)
        }) {
            let key = format!("{} {}", other.name, other.kind.as_str());
            if view
                .answers
                .get(&key)
                .is_some_and(|a| a.contains(&drill.address))
            {
                problems.extend(observe::outage(
                    &m.server.name,
                    view,
                    other,
                    &drill.endpoint,
                    drill.address,
                ));
            }
        }
        match baseline(&drill, m, view).await {
            Ok(values) => seen[i].baseline = values,
            Err(problem) => problems.push(problem),
        }
        seen[i].change_before = view.last_change.as_ref().map(|c| c.submitted_unix_ms);
        // A real drill starts its clock at the first failed check: none may be failing yet.
        if options.mode == Mode::Real
            && view
                .endpoints
                .get(&drill.endpoint)
                .is_some_and(|e| e.failing)
        {
            problems.push(format!(
                "{}: a check of {} is failing already; start the drill when it passes",
                m.server.name, drill.endpoint
            ));
        }
    }
    if !problems.is_empty() {
        return Ok(Outcome::Refused(problems));
    }

    // From here on, whatever happens, the overrides set are cleared.
    let set_on: Arc<Mutex<Vec<Target>>> = Arc::default();
    let body = drill.execute(&options, seen, &set_on, &progress);
    let outcome = tokio::select! {
        result = body => Some(result),
        () = interrupt => None,
    };
    let pending: Vec<Target> = set_on
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .clone();
    let mut restored = true;
    for target in &pending {
        if let Err(e) = drill
            .clear_ours(target, "drill ended", &options.by, &progress)
            .await
        {
            progress(&format!(
                "cannot clear the drill's override at {}: {e}",
                target.base
            ));
            restored = false;
        }
    }
    match outcome {
        None => Ok(Outcome::Interrupted { restored }),
        Some(Err(e)) if restored => Err(DrillError::Failed(e)),
        Some(Err(e)) => Err(DrillError::NotRestored(e)),
        Some(Ok(mut report)) => {
            report.restored = restored;
            for m in &drill.members {
                if let Err(e) = drill.session.post_drill(&m.target, &report.result()).await {
                    progress(&format!("{}: cannot record the result: {e}", m.server.name));
                }
            }
            Ok(Outcome::Finished(Box::new(report)))
        }
    }
}

fn find_record(settings: &Settings, options: &Options) -> Result<RecordSpec, DrillError> {
    let mut name = options.record.trim().to_ascii_lowercase();
    if !name.ends_with('.') {
        name.push('.');
    }
    let matching: Vec<&RecordSpec> = settings
        .records
        .iter()
        .filter(|r| r.name == name && options.kind.is_none_or(|k| r.kind == k))
        .collect();
    match matching.as_slice() {
        [one] => Ok((*one).clone()),
        [] => Err(DrillError::Usage(format!(
            "no managed record {name}{} in the configuration; records: {}",
            options
                .kind
                .map(|k| format!(" {}", k.as_str()))
                .unwrap_or_default(),
            settings
                .records
                .iter()
                .map(|r| format!("{} {}", r.name, r.kind.as_str()))
                .collect::<Vec<_>>()
                .join(", ")
        ))),
        _ => Err(DrillError::Usage(format!(
            "{name} has several managed types; choose one with --type"
        ))),
    }
}

/// The endpoint under test: the one named, or the first of the record's endpoints that the
/// first server answers now.
fn choose_endpoint(
    record: &RecordSpec,
    options: &Options,
    view: &ServerView,
) -> Result<(String, IpAddr), DrillError> {
    let names = || {
        record
            .endpoints
            .iter()
            .map(|e| e.id.to_string())
            .collect::<Vec<_>>()
            .join(", ")
    };
    match &options.endpoint {
        Some(wanted) => record
            .endpoints
            .iter()
            .find(|e| e.id.as_str() == wanted)
            .map(|e| (e.id.to_string(), e.address))
            .ok_or_else(|| {
                DrillError::Usage(format!(
                    "{wanted} is not an endpoint of {}; its endpoints: {}",
                    record.name,
                    names()
                ))
            }),
        None => {
            let answer = view.answer.clone().unwrap_or_default();
            record
                .endpoints
                .iter()
                .find(|e| answer.contains(&e.address))
                .map(|e| (e.id.to_string(), e.address))
                .ok_or_else(|| {
                    DrillError::Usage(format!(
                        "{} answers none of its endpoints now ({}); name one with --endpoint ({})",
                        record.name,
                        observe::list(&answer),
                        names()
                    ))
                })
        }
    }
}

/// What a member serves before the drill: its DNS answer (DNS servers) or the Route53 values
/// (the reconciler); an error is a refusal.
async fn baseline(
    drill: &Drill,
    member: &Member,
    view: &ServerView,
) -> Result<Vec<IpAddr>, String> {
    let name = &member.server.name;
    match (member.server.role, member.server.dns) {
        (ServerRole::Dns, Some(dns)) => {
            let reply =
                query::addresses(dns, &drill.record.name, drill.record.kind, REQUEST_TIMEOUT)
                    .await
                    .map_err(|e| format!("{name}: DNS query to {dns} failed: {e}"))?;
            if !reply.is_noerror() || reply.addresses.is_empty() {
                return Err(format!(
                    "{name} ({dns}) answers {} with {} and no address",
                    drill.record.name, reply.rcode
                ));
            }
            if !observe::deterministic(&drill.record) {
                // Weighted and latency answers vary: the snapshot's answer is the baseline.
                return Ok(view.answer.clone().unwrap_or(reply.addresses));
            }
            if !reply.addresses.contains(&drill.address) {
                return Err(format!(
                    "{name} ({dns}) answers {} for {}, not {} ({})",
                    observe::list(&reply.addresses),
                    drill.record.name,
                    drill.endpoint,
                    drill.address
                ));
            }
            if view.answer.as_ref() != Some(&reply.addresses) {
                return Err(format!(
                    "{name} ({dns}) answers {} over DNS while its status says {}: it is changing, try again",
                    observe::list(&reply.addresses),
                    observe::list(view.answer.as_deref().unwrap_or_default()),
                ));
            }
            Ok(reply.addresses)
        }
        (ServerRole::Dns, None) => Err(format!("{name} has no DNS address")),
        (ServerRole::Route53, _) => {
            let values = drill.route53_values().await?;
            if !values.contains(&drill.address) {
                // A reconciler that cannot apply the record will not catch up: say why.
                let why = match &view.route53_trouble {
                    Some(trouble) => format!("the reconciler cannot apply it ({trouble})"),
                    None => "let the reconciler catch up first".to_string(),
                };
                return Err(format!(
                    "Route53 holds {} for {}, not {} ({}): {why}",
                    observe::list(&values),
                    drill.record.name,
                    drill.endpoint,
                    drill.address
                ));
            }
            Ok(values)
        }
    }
}

/// One look at one member.
struct Look {
    at: Instant,
    view: Result<ServerView, String>,
    dns: Option<Result<Reply, String>>,
}

impl Drill {
    async fn route53_values(&self) -> Result<Vec<IpAddr>, String> {
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

    /// Injects the failure, watches, holds, fails back, watches: the report.
    async fn execute(
        &self,
        options: &Options,
        mut seen: Vec<Seen>,
        set_on: &Mutex<Vec<Target>>,
        progress: &impl Fn(&str),
    ) -> Result<Report, String> {
        let timeout = self.settings.drill.timeout;
        let start = match self.mode {
            Mode::Override => {
                let expiry = timeout + options.hold + Duration::from_secs(60);
                progress(&format!(
                    "failing {} ({}) with a force_down override on {} server(s), expiring in {}s",
                    self.endpoint,
                    self.address,
                    self.members.len(),
                    expiry.as_secs()
                ));
                let start = Instant::now();
                for m in &self.members {
                    // Listed before the request: it may take effect even if the reply is lost.
                    set_on
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .push(m.target.clone());
                    self.session
                        .set_override(
                            &m.target,
                            &self.endpoint,
                            "force_down",
                            &self.reason,
                            &format!("{}s", expiry.as_secs()),
                            &options.by,
                        )
                        .await
                        .map_err(|e| format!("{}: cannot set the override: {e}", m.server.name))?;
                }
                start
            }
            Mode::Real => {
                progress(&format!(
                    "waiting up to {}s for {} ({}) to fail: cause the failure now (e.g. stop it)",
                    timeout.as_secs(),
                    self.endpoint,
                    self.address
                ));
                self.wait_for_checks(true, timeout).await?
            }
        };
        let mut aborted = None;
        if let Err(e) = self.watch(Half::Failure, start, &mut seen).await {
            aborted = Some(e);
        }
        progress("failure phase measured");
        if aborted.is_none() && !options.hold.is_zero() {
            progress(&format!(
                "holding the failure for {}s",
                options.hold.as_secs()
            ));
            tokio::time::sleep(options.hold).await;
        }
        let looks = self.look_all(true).await;
        for (s, look) in seen.iter_mut().zip(&looks) {
            if let Ok(view) = &look.view {
                s.change_before = view.last_change.as_ref().map(|c| c.submitted_unix_ms);
            }
        }
        let restart = match self.mode {
            Mode::Override => {
                progress(&format!("restoring {}", self.endpoint));
                let restart = Instant::now();
                let targets: Vec<Target> = set_on
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .clone();
                let mut cleared = true;
                for target in targets {
                    match self
                        .clear_ours(&target, "drill failback", &options.by, progress)
                        .await
                    {
                        Ok(()) => set_on
                            .lock()
                            .unwrap_or_else(PoisonError::into_inner)
                            .retain(|t| t.base != target.base),
                        Err(e) => {
                            aborted.get_or_insert(format!(
                                "failback: cannot clear the override at {}: {e}",
                                target.base
                            ));
                            cleared = false;
                        }
                    }
                }
                cleared.then_some(restart)
            }
            Mode::Real if aborted.is_none() => {
                progress(&format!(
                    "waiting up to {}s for {} to come back: repair it now",
                    timeout.as_secs(),
                    self.endpoint
                ));
                match self.wait_for_checks(false, timeout).await {
                    Ok(restart) => Some(restart),
                    Err(e) => {
                        aborted = Some(format!("failback: {e}"));
                        None
                    }
                }
            }
            Mode::Real => None,
        };
        if let Some(restart) = restart {
            let mut failback = seen.clone();
            for s in &mut failback {
                s.phases = Phases::default();
            }
            if let Err(e) = self.watch(Half::Failback, restart, &mut failback).await {
                aborted.get_or_insert(e);
            }
            for (s, f) in seen.iter_mut().zip(failback) {
                s.failback = f.phases;
            }
        }
        Ok(Report {
            record: self.record.name.clone(),
            kind: self.record.kind.as_str().to_string(),
            endpoint: self.endpoint.clone(),
            address: self.address,
            mode: self.mode,
            servers: self
                .members
                .iter()
                .zip(seen)
                .map(|(m, s)| ServerResult {
                    name: m.server.name.clone(),
                    role: m.server.role,
                    baseline: s.baseline,
                    during: s.during,
                    failure: s.phases,
                    failback: s.failback,
                })
                .collect(),
            target: self.record.rto,
            detection_budget: self.detection_budget(),
            finished_unix_ms: crate::clock::unix_ms(),
            aborted,
            restored: true,
        })
    }

    /// Clears the drill's override on one server: only if the override in force there is
    /// this drill's (an operator's override is left alone, and said so); gone already is fine.
    async fn clear_ours(
        &self,
        target: &Target,
        why: &str,
        by: &str,
        progress: &impl Fn(&str),
    ) -> Result<(), String> {
        let doc = self.session.overrides(target).await?;
        let current = doc["overrides"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|o| o["endpoint"].as_str() == Some(self.endpoint.as_str()));
        match current {
            None => Ok(()),
            Some(o) if o["reason"].as_str() == Some(self.reason.as_str()) => {
                match self
                    .session
                    .clear_override(target, &self.endpoint, why, by)
                    .await
                {
                    Err(e) if e.starts_with("HTTP 404") => Ok(()),
                    other => other,
                }
            }
            Some(o) => {
                progress(&format!(
                    "{}: left the {} override on {} in force: it is not the drill's ({})",
                    target.base,
                    o["action"].as_str().unwrap_or("?"),
                    self.endpoint,
                    o["reason"].as_str().unwrap_or("")
                ));
                Ok(())
            }
        }
    }

    /// How long checks take to notice a real failure of the endpoint: fall x interval, plus
    /// one pull when probers are remote.
    fn detection_budget(&self) -> Duration {
        let check = self
            .record
            .endpoints
            .iter()
            .find(|e| e.id.as_str() == self.endpoint)
            .and_then(|e| self.settings.endpoint(&e.id))
            .map(|spec| spec.check.interval * spec.check.fall)
            .unwrap_or_default();
        let pull = if self.settings.prober_urls.is_empty() {
            Duration::ZERO
        } else {
            self.settings.cluster.poll_interval
        };
        check + pull
    }

    /// Real mode: waits until some prober's latest check of the endpoint fails (`failing`) or
    /// succeeds again; that instant starts the clock.
    async fn wait_for_checks(&self, failing: bool, timeout: Duration) -> Result<Instant, String> {
        let deadline = Instant::now() + timeout;
        loop {
            for look in self.look_all(false).await {
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
                return Err(format!(
                    "no check of {} {} within {}s",
                    self.endpoint,
                    if failing { "failed" } else { "succeeded" },
                    timeout.as_secs()
                ));
            }
            tokio::time::sleep(self.settings.drill.poll_interval).await;
        }
    }

    /// Looks at every member at once (status, and DNS when `dns`).
    async fn look_all(&self, dns: bool) -> Vec<Look> {
        let mut tasks = JoinSet::new();
        for (i, m) in self.members.iter().enumerate() {
            let session = self.session.clone();
            let target = m.target.clone();
            let record = self.record.clone();
            let dns_addr = m
                .server
                .dns
                .filter(|_| dns && m.server.role == ServerRole::Dns);
            tasks.spawn(async move {
                let (view, reply) = tokio::join!(
                    async {
                        session
                            .status(&target)
                            .await
                            .map(|doc| observe::view(&doc, &record))
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
    async fn watch(&self, half: Half, start: Instant, seen: &mut [Seen]) -> Result<(), String> {
        let deadline = start + self.settings.drill.timeout;
        let mut route53_read: Option<(Instant, Result<Vec<IpAddr>, String>)> = None;
        loop {
            let looks = self.look_all(true).await;
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
                return Err(format!(
                    "{} not complete within {}s on {}",
                    match half {
                        Half::Failure => "failover",
                        Half::Failback => "failback",
                    },
                    self.settings.drill.timeout.as_secs(),
                    late.join(", ")
                ));
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
