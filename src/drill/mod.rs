//! `vantage drill`: fail one endpoint of a record on purpose (a force_down override on every
//! serving process, or the operator with `--real`), time how the fleet detects, responds and
//! recovers, fail back the same way, and report the RTO against the record's `rto` target.
//!
//! The drill refuses to start when it would cause an outage, and it always clears what it set,
//! also when it fails or is interrupted; the overrides carry a short expiry as a safety net.

mod inject;
pub mod observe;
mod preflight;
pub mod report;
mod watch;

use std::{
    net::{IpAddr, SocketAddr},
    time::Duration,
};

use tokio::time::Instant;

use self::{
    inject::Restore,
    observe::{Half, Mode, ServerView},
    report::{Phases, Report, ServerResult},
    watch::{Ask, Drill, Seen},
};
use crate::{
    adminctl::{AdminError, Session, Target},
    config::{FleetServer, RecordKind, ServerRole, Settings},
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

/// Why a drill that started stopped short (its report says so).
#[derive(Debug, thiserror::Error)]
pub enum StepError {
    #[error("{server}: cannot set the override: {source}")]
    Inject { server: String, source: AdminError },
    #[error("failback: cannot clear the override at {base}: {source}")]
    Restore { base: String, source: AdminError },
    #[error("no check of {endpoint} {} within {}s", match half { Half::Failure => "failed", Half::Failback => "succeeded" }, within.as_secs())]
    NoCheck {
        endpoint: String,
        half: Half,
        within: Duration,
    },
    #[error("{} not complete within {}s on {late}", match half { Half::Failure => "failover", Half::Failback => "failback" }, within.as_secs())]
    Incomplete {
        half: Half,
        within: Duration,
        late: String,
    },
}

#[derive(Debug, thiserror::Error)]
pub enum DrillError {
    #[error("{0}")]
    Usage(String),
    #[error("{0} (the drill's overrides were cleared)")]
    Failed(StepError),
    #[error(
        "{0}; the drill's overrides could NOT all be cleared: clear them with `vantage override clear`"
    )]
    NotRestored(StepError),
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

/// The processes a drill acts on: `[[server]]`, else the servers registered in the fleet's
/// etcd (`[state] backend = "etcd"`), else this host's listeners.
pub async fn fleet_of(settings: &Settings) -> Vec<FleetServer> {
    if settings.servers.is_empty()
        && let crate::config::StateSettings::Etcd(etcd) = &settings.state
        && let Ok(client) = crate::state::etcd::Etcd::from_settings(etcd)
        && let Ok(members) = crate::state::members::list(&client).await
        && !members.is_empty()
    {
        return members
            .into_iter()
            .filter_map(|m| {
                Some(FleetServer {
                    role: match m.role.as_str() {
                        "route53" => ServerRole::Route53,
                        _ => ServerRole::Dns,
                    },
                    dns: m.dns.first().copied(),
                    admin: url::Url::parse(&m.admin).ok()?,
                    name: m.name,
                })
            })
            .collect();
    }
    fleet(settings)
}

/// The processes a drill acts on: `[[server]]`, or this host's: the DNS server
/// (`admin.listen`) and, when the file gives it a listener of its own
/// (`route53.admin_listen`), the Route53 reconciler beside it.
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
    let url = |addr: SocketAddr| url::Url::parse(&format!("http://{}/", loopback(addr))).ok();
    let mut local: Vec<FleetServer> = url(settings.admin.listen)
        .map(|admin| FleetServer {
            name: "local".into(),
            role: ServerRole::Dns,
            dns: settings.dns.listen.first().copied().map(loopback),
            admin,
        })
        .into_iter()
        .collect();
    if let Some(admin) = settings.route53.admin_listen.and_then(url) {
        local.push(FleetServer {
            name: "local-route53".into(),
            role: ServerRole::Route53,
            dns: None,
            admin,
        });
    }
    local
}

/// One server taking part in the drill.
#[derive(Clone)]
struct Member {
    server: FleetServer,
    target: Target,
}

/// Runs a drill; `interrupt` resolves when the operator asks to stop (Ctrl-C).
pub async fn run(
    settings: Settings,
    options: Options,
    interrupt: impl std::future::Future<Output = ()>,
    progress: impl Fn(&str),
) -> Result<Outcome, DrillError> {
    let record = preflight::find_record(&settings, &options)?;
    let token = settings
        .admin
        .token
        .as_ref()
        .map(|t| String::from_utf8_lossy(t.bytes()).trim().to_string());
    let route53_involved = record.route53.is_some();
    let members: Vec<Member> = fleet_of(&settings)
        .await
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
    let session = Session::new(REQUEST_TIMEOUT).map_err(|e| DrillError::Usage(e.to_string()))?;
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
    let (endpoint, address) = preflight::choose_endpoint(&record, &options, &views[first_dns])?;
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
    let seen = match preflight::refusals(&drill, &views, options.mode).await {
        Ok(seen) => seen,
        Err(problems) => return Ok(Outcome::Refused(problems)),
    };

    // From here on, whatever happens, the overrides set are cleared: `restore.finish` is the
    // only way out (and dropping it clears too).
    let mut restore = Restore::new(
        drill.session.clone(),
        &drill.endpoint,
        &drill.reason,
        &options.by,
    );
    let outcome = tokio::select! {
        result = execute(&drill, &mut restore, &options, seen, &progress) => Some(result),
        () = interrupt => None,
    };
    let restored = restore.finish(&progress).await;
    match outcome {
        None => Ok(Outcome::Interrupted { restored }),
        Some(Err(e)) if restored => Err(DrillError::Failed(e)),
        Some(Err(e)) => Err(DrillError::NotRestored(e)),
        Some(Ok(mut report)) => {
            report.restored = restored;
            let result = report.result();
            for m in &drill.members {
                if let Err(e) = drill.session.post_drill(&m.target, &result).await {
                    progress(&format!("{}: cannot record the result: {e}", m.server.name));
                }
            }
            Ok(Outcome::Finished(Box::new(report)))
        }
    }
}

/// Injects the failure, watches, holds, fails back, watches: the report.
async fn execute(
    drill: &Drill,
    restore: &mut Restore,
    options: &Options,
    mut seen: Vec<Seen>,
    progress: &impl Fn(&str),
) -> Result<Report, StepError> {
    let timeout = drill.settings.drill.timeout;
    let start = match drill.mode {
        Mode::Override => {
            let expiry = timeout + options.hold + Duration::from_secs(60);
            progress(&format!(
                "failing {} ({}) with a force_down override on {} server(s), expiring in {}s",
                drill.endpoint,
                drill.address,
                drill.members.len(),
                expiry.as_secs()
            ));
            let start = Instant::now();
            for m in &drill.members {
                restore.inject(&m.server.name, &m.target, expiry).await?;
            }
            start
        }
        Mode::Real => {
            progress(&format!(
                "waiting up to {}s for {} ({}) to fail: cause the failure now (e.g. stop it)",
                timeout.as_secs(),
                drill.endpoint,
                drill.address
            ));
            drill.wait_for_checks(Half::Failure, timeout).await?
        }
    };
    let mut aborted = None;
    if let Err(e) = drill.watch(Half::Failure, start, &mut seen).await {
        aborted = Some(e.to_string());
    }
    progress("failure phase measured");
    if aborted.is_none() && !options.hold.is_zero() {
        progress(&format!(
            "holding the failure for {}s",
            options.hold.as_secs()
        ));
        tokio::time::sleep(options.hold).await;
    }
    let looks = drill.look_all(Ask::StatusAndDns).await;
    for (s, look) in seen.iter_mut().zip(&looks) {
        if let Ok(view) = &look.view {
            s.change_before = view.last_change.as_ref().map(|c| c.submitted_unix_ms);
        }
    }
    let restart = match drill.mode {
        Mode::Override => {
            progress(&format!("restoring {}", drill.endpoint));
            let restart = Instant::now();
            match restore.clear_all("drill failback", progress).await {
                Ok(()) => Some(restart),
                Err(e) => {
                    aborted.get_or_insert(e.to_string());
                    None
                }
            }
        }
        Mode::Real if aborted.is_none() => {
            progress(&format!(
                "waiting up to {}s for {} to come back: repair it now",
                timeout.as_secs(),
                drill.endpoint
            ));
            match drill.wait_for_checks(Half::Failback, timeout).await {
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
        if let Err(e) = drill.watch(Half::Failback, restart, &mut failback).await {
            aborted.get_or_insert(e.to_string());
        }
        for (s, f) in seen.iter_mut().zip(failback) {
            s.failback = f.phases;
        }
    }
    Ok(Report {
        record: drill.record.name.clone(),
        kind: drill.record.kind.as_str().to_string(),
        endpoint: drill.endpoint.clone(),
        address: drill.address,
        mode: drill.mode,
        servers: drill
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
        target: drill.record.rto,
        detection_budget: drill.detection_budget(),
        finished_unix_ms: crate::clock::unix_ms(),
        aborted,
        restored: true,
    })
}
