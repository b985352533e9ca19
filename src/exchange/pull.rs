//! The aggregator side: pulls every remote prober's report concurrently, every poll interval,
//! with a timeout, over TLS to https probers (trusting only that prober's pinned certificate or
//! the fleet's CA); believes only reports signed with that prober's key (or the fleet secret
//! in a fleet without prober keys), recent, from the region configured for that URL, and newer
//! than the last one accepted; writes their observations to the local board.

use std::{
    collections::HashSet,
    sync::{Arc, Mutex, PoisonError},
    time::Duration,
};

use serde::Serialize;
use tokio::{task::JoinSet, time::Instant};
use tokio_util::sync::CancellationToken;

use super::{
    ExchangeMetrics, ObservationBoard,
    asks::{self, AskReceiver, Asks},
    auth::{self, FleetKey, Rejection, ReportVerifier},
    wire::{AskRequest, Report},
};
use crate::{
    config::ProberIdentity,
    model::{EndpointId, Region},
};

/// The largest report accepted (a report is a few hundred bytes per endpoint).
const MAX_REPORT_BYTES: usize = 16 * 1024 * 1024;

/// What an aggregator knows about its link to one prober.
#[derive(Debug, Clone, Default, Serialize)]
pub struct LinkStatus {
    /// The latest pull returned an accepted report.
    pub reachable: bool,
    /// Wall-clock time of the latest accepted report.
    pub last_report_unix_ms: Option<u64>,
    pub last_error: Option<String>,
    pub reports_accepted: u64,
    pub reports_rejected: u64,
    #[serde(skip)]
    last_accepted: Option<(u64, u64, u64)>, // (boot_id, seq, signed at)
    #[serde(skip)]
    pub last_report_at: Option<Instant>,
}

pub struct ProberLink {
    pub region: Region,
    pub url: url::Url,
    status: Mutex<LinkStatus>,
}

impl ProberLink {
    pub fn status(&self) -> LinkStatus {
        self.status
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

/// How the pullers poll, and what they accept.
pub struct PullSettings {
    pub poll_interval: Duration,
    pub poll_timeout: Duration,
    /// Long polls: the prober answers as soon as a vote may change.
    pub push: bool,
    pub stale_after: Duration,
    /// The configured endpoints: observations of any other are dropped (and counted), so a
    /// report cannot grow the board.
    pub endpoints: Arc<HashSet<EndpointId>>,
}

/// A report's sequence may move ahead of the last accepted one by at most this much (a prober
/// numbers one report per request: 2^32 is over a century of polls); a larger jump is refused,
/// so that no report can wedge its region by taking the sequence to its end.
const MAX_SEQ_JUMP: u64 = 1 << 32;

/// Starts one pulling task per prober, and one that forwards the aggregator's "check it now"
/// requests to it; returns the links for status reporting and where to send those requests.
/// `key` (the fleet secret) signs requests, and checks reports of probers without keys of
/// their own.
pub fn spawn<'a>(
    probers: impl Iterator<Item = (Region, url::Url, &'a ProberIdentity)>,
    key: Arc<FleetKey>,
    board: &Arc<ObservationBoard>,
    metrics: &ExchangeMetrics,
    pull: &PullSettings,
    shutdown: &CancellationToken,
    tasks: &mut JoinSet<()>,
) -> Result<(Vec<Arc<ProberLink>>, Asks), reqwest::Error> {
    let poll_interval = pull.poll_interval;
    let mut links = Vec::new();
    let mut to_probers = Asks::default();
    for (region, url, identity) in probers {
        let mut client = reqwest::Client::builder()
            .no_proxy()
            .timeout(pull.poll_timeout)
            .connect_timeout(pull.poll_timeout)
            .user_agent(concat!("vantage-aggregator/", env!("CARGO_PKG_VERSION")));
        if url.scheme() == "https" {
            // Only this prober's certificate (or the fleet CA) is trusted, not the system's.
            let roots = identity
                .tls_roots
                .iter()
                .map(|der| reqwest::Certificate::from_der(der))
                .collect::<Result<Vec<_>, _>>()?;
            client = client.tls_certs_only(roots).https_only(true);
        }
        let client = client.build()?;
        let verifier = if identity.public_keys.is_empty() {
            ReportVerifier::Fleet(key.clone())
        } else {
            ReportVerifier::Keys(identity.public_keys.clone())
        };
        let link = Arc::new(ProberLink {
            region,
            url,
            status: Mutex::new(LinkStatus::default()),
        });
        links.push(link.clone());
        let puller = Puller {
            link,
            client,
            push: pull.push,
            poll_timeout: pull.poll_timeout,
            key: key.clone(),
            verifier,
            board: board.clone(),
            metrics: metrics.clone(),
            stale_after: pull.stale_after,
            endpoints: pull.endpoints.clone(),
        };
        let (sender, receiver) = asks::channel();
        to_probers.insert(puller.link.region.clone(), sender);
        tasks.spawn(forward_asks(
            puller.link.clone(),
            puller.client.clone(),
            key.clone(),
            receiver,
            shutdown.clone(),
        ));
        let shutdown = shutdown.clone();
        tasks.spawn(async move { puller.run(poll_interval, shutdown).await });
    }
    Ok((links, to_probers))
}

/// Sends the aggregator's "check it now" requests to one remote prober, the ones waiting
/// together in one signed `POST /v1/check`. A request that fails is dropped (the prober's
/// regular checks go on; a suspicion asks again).
async fn forward_asks(
    link: Arc<ProberLink>,
    client: reqwest::Client,
    key: Arc<FleetKey>,
    mut receiver: AskReceiver,
    shutdown: CancellationToken,
) {
    let Ok(url) = link.url.join("v1/check") else {
        return;
    };
    loop {
        let first = tokio::select! {
            e = receiver.recv() => match e {
                Some(e) => e,
                None => return,
            },
            () = shutdown.cancelled() => return,
        };
        let mut endpoints = vec![first];
        while let Ok(e) = receiver.try_recv() {
            endpoints.push(e);
        }
        let body = match serde_json::to_vec(&AskRequest { endpoints }) {
            Ok(body) => body,
            Err(_) => continue,
        };
        let signature = key.sign(auth::unix_ms(), auth::ASK_CONTEXT, &body);
        let sent = client
            .post(url.clone())
            .header(auth::REQUEST_HEADER, signature)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(body)
            .send()
            .await;
        match sent {
            Ok(r) if r.status().is_success() => {}
            Ok(r) => {
                tracing::debug!(region = %link.region, status = %r.status(), "prober refused a request to check now")
            }
            Err(e) => {
                tracing::debug!(region = %link.region, error = %crate::error_chain(&e), "cannot ask prober to check now")
            }
        }
    }
}

struct Puller {
    link: Arc<ProberLink>,
    client: reqwest::Client,
    /// Long polls (`cluster.push`) rather than pulls every poll interval.
    push: bool,
    poll_timeout: Duration,
    key: Arc<FleetKey>,
    verifier: ReportVerifier,
    board: Arc<ObservationBoard>,
    metrics: ExchangeMetrics,
    stale_after: Duration,
    endpoints: Arc<HashSet<EndpointId>>,
}

enum PollError {
    Unreachable(String),
    Rejected(Rejection),
}

/// While a prober keeps failing, its failures are logged at the first one and then at most
/// once per `FAILURE_LOG_EVERY`, with how many were not logged.
const FAILURE_LOG_EVERY: Duration = Duration::from_secs(60);

#[derive(Default)]
struct FailureLog {
    last: Option<Instant>,
    unlogged: u64,
}

impl FailureLog {
    /// Whether to log this failure now; and how many failures were not logged since the last.
    fn due(&mut self, now: Instant) -> Option<u64> {
        if self
            .last
            .is_some_and(|last| now.duration_since(last) < FAILURE_LOG_EVERY)
        {
            self.unlogged += 1;
            return None;
        }
        self.last = Some(now);
        Some(std::mem::take(&mut self.unlogged))
    }

    fn reset(&mut self) {
        *self = FailureLog::default();
    }
}

impl Puller {
    async fn run(self, poll_interval: Duration, shutdown: CancellationToken) {
        let region = self.link.region.clone();
        let mut failures = FailureLog::default();
        // Where the prober's numbering stood at its last report: while known (and pushing
        // is on), the next pull is a long poll for what is newer.
        let mut cursor: Option<(u64, u64)> = None;
        loop {
            let started = Instant::now();
            let asked = cursor.filter(|_| self.push);
            let result = tokio::select! {
                r = self.poll(asked, poll_interval) => r,
                () = shutdown.cancelled() => return,
            };
            // A long poll's report was made when it was answered, not when it was asked for.
            let made = if asked.is_some() {
                Instant::now()
            } else {
                started
            };
            let was_reachable = self.record(&result, made);
            let mut pushed = false;
            match result {
                Ok((report, _)) => {
                    cursor = report.through.map(|through| (report.boot_id, through));
                    pushed = asked.is_some() && cursor.is_some();
                    let seq = super::board::next_seq();
                    let mut unknown = 0;
                    self.board.set_overloaded(&region, report.overloaded);
                    let known: Vec<_> = report
                        .into_observations(made, seq)
                        .into_iter()
                        .filter(|o| {
                            let known = self.endpoints.contains(&o.endpoint);
                            unknown += u64::from(!known);
                            known
                        })
                        .collect();
                    self.board.report_all(known);
                    if unknown > 0 {
                        self.metrics.unknown_endpoints(&region, unknown);
                    }
                    self.metrics.poll(&region, "ok", None);
                    if !was_reachable {
                        tracing::info!(%region, url = %self.link.url, "prober {region} is reachable");
                    }
                    failures.reset();
                }
                Err(PollError::Unreachable(error)) => {
                    cursor = None;
                    self.metrics.poll(&region, "unreachable", None);
                    if let Some(unlogged) = failures.due(started) {
                        tracing::warn!(%region, url = %self.link.url, %error, unlogged,
                            "prober {region} is unreachable ({unlogged} more failed polls since the last line)");
                    }
                }
                Err(PollError::Rejected(rejection)) => {
                    cursor = None;
                    self.metrics.poll(&region, "rejected", Some(rejection));
                    if let Some(unlogged) = failures.due(started) {
                        tracing::warn!(%region, url = %self.link.url, reason = rejection.label(), unlogged,
                            "rejected a report from prober {region}: {rejection} ({unlogged} more failed polls since the last line)");
                    }
                }
            }
            let age = self.link.status().last_report_at.map(|t| t.elapsed());
            self.metrics
                .link(&region, self.link.status().reachable, age);
            // A long poll that was answered is asked again at once (it waited at the prober);
            // a plain pull, or a failure, waits for the next poll interval.
            let wait = if pushed {
                Duration::ZERO
            } else {
                poll_interval.saturating_sub(started.elapsed())
            };
            tokio::select! {
                () = tokio::time::sleep(wait) => {}
                () = shutdown.cancelled() => return,
            }
        }
    }

    /// Updates the link status with one poll's result; returns whether it was reachable before.
    fn record(&self, result: &Result<(Report, u64), PollError>, started: Instant) -> bool {
        let mut status = self
            .link
            .status
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let was_reachable = status.reachable;
        match result {
            Ok((report, signed_at)) => {
                status.reachable = true;
                status.last_error = None;
                status.reports_accepted += 1;
                status.last_report_unix_ms = Some(*signed_at);
                status.last_report_at = Some(started);
                status.last_accepted = Some((report.boot_id, report.seq, *signed_at));
            }
            Err(PollError::Unreachable(error)) => {
                status.reachable = false;
                status.last_error = Some(error.clone());
            }
            Err(PollError::Rejected(rejection)) => {
                status.reachable = false;
                status.reports_rejected += 1;
                status.last_error = Some(format!("report rejected: {rejection}"));
            }
        }
        was_reachable
    }

    /// One pull; with a `cursor` (the prober's boot id and the `through` of its last report),
    /// a long poll held by the prober until a vote may change or `wait` passes, answered with
    /// what is newer only.
    async fn poll(
        &self,
        cursor: Option<(u64, u64)>,
        wait: Duration,
    ) -> Result<(Report, u64), PollError> {
        let mut url = self
            .link
            .url
            .join("v1/observations")
            .map_err(|e| PollError::Unreachable(e.to_string()))?;
        let mut request = self.client.get(url.clone());
        let context = match cursor {
            Some((boot, after)) => {
                let query = format!("wait={}&after={after}&boot={boot}", wait.as_millis());
                url.set_query(Some(&query));
                request = self.client.get(url).timeout(wait + self.poll_timeout);
                format!("{}?{query}", auth::REQUEST_CONTEXT)
            }
            None => auth::REQUEST_CONTEXT.to_string(),
        };
        let request_auth = self.key.sign(auth::unix_ms(), &context, b"");
        let response = request
            .header(auth::REQUEST_HEADER, request_auth)
            .send()
            .await
            .map_err(|e| PollError::Unreachable(crate::error_chain(&e)))?;
        let status = response.status();
        if status == reqwest::StatusCode::UNAUTHORIZED {
            // The prober did not believe our request: say why (a skewed clock is not an
            // unreachable prober).
            let label = response
                .headers()
                .get(auth::REFUSED_HEADER)
                .and_then(|v| v.to_str().ok());
            return Err(PollError::Rejected(Rejection::refused_by_prober(label)));
        }
        let signature = response
            .headers()
            .get(auth::REPORT_HEADER)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        // Read at most MAX_REPORT_BYTES: the body is not trusted until its signature checks.
        if response
            .content_length()
            .is_some_and(|n| n > MAX_REPORT_BYTES as u64)
        {
            return Err(PollError::Rejected(Rejection::MalformedReport));
        }
        let mut response = response;
        let mut body = Vec::new();
        while let Some(chunk) = response
            .chunk()
            .await
            .map_err(|e| PollError::Unreachable(crate::error_chain(&e)))?
        {
            if body.len() + chunk.len() > MAX_REPORT_BYTES {
                return Err(PollError::Rejected(Rejection::MalformedReport));
            }
            body.extend_from_slice(&chunk);
        }
        if !status.is_success() {
            return Err(PollError::Unreachable(format!(
                "HTTP {status}: {}",
                String::from_utf8_lossy(&body[..body.len().min(200)]).trim()
            )));
        }
        let signed_at = self
            .verifier
            .verify(
                signature.as_deref(),
                &body,
                auth::unix_ms(),
                self.stale_after,
            )
            .map_err(PollError::Rejected)?;
        let report: Report = serde_json::from_slice(&body)
            .map_err(|_| PollError::Rejected(Rejection::MalformedReport))?;
        if report.region != self.link.region {
            return Err(PollError::Rejected(Rejection::WrongRegion));
        }
        let last = self.link.status().last_accepted;
        if let Some((boot_id, seq, last_signed)) = last {
            let newer = if boot_id == report.boot_id {
                report.seq > seq && report.seq - seq <= MAX_SEQ_JUMP
            } else {
                signed_at > last_signed && report.seq <= MAX_SEQ_JUMP
            };
            if !newer {
                return Err(PollError::Rejected(Rejection::Replayed));
            }
        } else if report.seq > MAX_SEQ_JUMP {
            return Err(PollError::Rejected(Rejection::Replayed));
        }
        Ok((report, signed_at))
    }
}
