//! Composition root of the roles (`dns`, `probe`, `route53`, `plan`): load and cross-check the
//! configuration, bind listeners, spawn the parts, drain on SIGINT/SIGTERM.

mod dns_role;
mod metrics;
mod probe_role;
mod route53_role;

use std::{net::SocketAddr, path::Path, sync::Arc, time::Duration};

use anyhow::{Context, anyhow};
use arc_swap::ArcSwap;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

pub use dns_role::run;
pub use probe_role::{check_probe, run_probe};
pub use route53_role::{plan, run_route53};

use metrics::Metrics;

use crate::{
    admin::{self, AdminState},
    aggregator::{Aggregator, History},
    config::{Problem, Settings},
    dns::{self, ZoneFile},
    exchange::{self, ObservationBoard, auth::FleetKey, pull::ProberLink},
    model::EndpointId,
    probe,
    route53::reconcile::Reports,
    snapshot::Snapshot,
    state::drills::DrillResults,
    state::store::OverrideStore,
    state::verdicts::VerdictStore,
};

/// Where the process actually listens (ports resolved), printed as one JSON line on stdout:
/// `{"dns": [...], "admin": ...}`, or for a prober `{"dns": [], "prober": ...}` (its listener
/// serves reports, not the admin API).
#[derive(Debug, Clone)]
pub struct Listening {
    pub dns: Vec<SocketAddr>,
    /// The admin listener (the prober's report listener for `vantage probe`).
    pub admin: SocketAddr,
    pub prober: bool,
}

impl serde::Serialize for Listening {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut map = s.serialize_map(Some(2))?;
        map.serialize_entry("dns", &self.dns)?;
        map.serialize_entry(if self.prober { "prober" } else { "admin" }, &self.admin)?;
        map.end()
    }
}

/// Validates a configuration and every file it names, the zones and their records: every
/// problem in one pass. Problems of the configuration (also those found in the files it
/// names) are listed at their lines; a zone file's own problems at its lines.
pub fn check(config: &Path) -> Result<(Settings, Vec<ZoneFile>), Vec<String>> {
    check_for(config, false)
}

/// As [`check`], and the files of every prober's identity found on this host (its key
/// matching its public key, its certificate and key a pair): `check-config`, not `vantage
/// dns`, which uses neither.
pub fn check_all(config: &Path) -> Result<(Settings, Vec<ZoneFile>), Vec<String>> {
    check_for(config, true)
}

fn check_for(config: &Path, identities: bool) -> Result<(Settings, Vec<ZoneFile>), Vec<String>> {
    use crate::config::ConfigError;
    // Read once: validated, and then for the lines of the problems found in what it names.
    let file = config.display().to_string();
    let text = std::fs::read_to_string(config).map_err(|source| {
        vec![
            ConfigError::Read {
                file: file.clone(),
                source,
            }
            .to_string(),
        ]
    })?;
    let base = config.parent().unwrap_or(Path::new("."));
    let settings = match Settings::from_toml(&text, &file, base) {
        Ok(settings) => settings,
        // The zone files too, wherever the configuration says they are.
        Err(ConfigError::Invalid { mut problems, .. }) => {
            let zone_files = crate::config::zones_dir_of(&text, base)
                .map(|dir| load_zones(&dir, &mut problems).1)
                .unwrap_or_default();
            let mut out = vec![crate::config::located(&file, &text, problems).to_string()];
            out.extend(zone_files);
            return Err(out);
        }
        Err(e) => return Err(vec![e.to_string()]),
    };
    let mut problems: Vec<Problem> = Vec::new();
    if let Some(region) = settings.regions.first() {
        problems.extend(check_setups(&settings, region));
    }
    // A prober's key and certificate live on its own host: checked where they are.
    if identities {
        for (i, region) in settings.regions.iter().enumerate() {
            let Some(identity) = settings.prober_identities.get(region) else {
                continue;
            };
            problems.extend(
                probe_role::identity_problems(identity, probe_role::Present::IfHere)
                    .into_iter()
                    .map(|(setting, message)| {
                        Problem::new(format!("prober[{i}].{setting}"), message)
                    }),
            );
        }
    }
    let (mut zones, zone_files) = load_zones(&settings.dns.zones_dir, &mut problems);
    // Keys and records against the zones, once every zone loaded.
    let mut signing = Vec::new();
    if let Some(zones) = &mut zones {
        if let Err(more) = dns::zones::sign(&settings.dns.dnssec, zones) {
            signing.extend(more.into_iter().map(|p| format!("{file}: {p}")));
        }
        problems.extend(dns::check_records(&settings, zones));
    }
    if problems.is_empty() && zone_files.is_empty() && signing.is_empty() {
        return Ok((settings, zones.unwrap_or_default()));
    }
    let mut out = Vec::new();
    if !problems.is_empty() {
        out.push(crate::config::located(&file, &text, problems).to_string());
    }
    out.extend(zone_files);
    out.extend(signing);
    Err(out)
}

/// The zones of `dir` (None when any is bad); an unreadable directory is a problem of the
/// configuration's `dns.zones_dir`, a zone file's problems are its own (file and line).
fn load_zones(dir: &Path, problems: &mut Vec<Problem>) -> (Option<Vec<ZoneFile>>, Vec<String>) {
    match dns::zones::load_dir(dir) {
        Ok(zones) => (Some(zones), Vec::new()),
        Err(errors) => {
            let mut own = Vec::new();
            for error in errors {
                match error {
                    dns::zones::ZoneError::Dir { source, .. } => problems.push(Problem::new(
                        "dns.zones_dir",
                        format!(
                            "cannot read the zones directory {}: {source}",
                            dir.display()
                        ),
                    )),
                    other => own.push(other.to_string()),
                }
            }
            (None, own)
        }
    }
}

/// Builds one check per configured check (which reads its CA file), so that a bad PEM is
/// reported by `check-config` rather than at start.
fn check_setups(settings: &Settings, region: &crate::model::Region) -> Vec<Problem> {
    let mut seen = std::collections::HashSet::new();
    let mut cache = probe::check::CheckCache::default();
    settings
        .endpoints
        .iter()
        .filter(|e| seen.insert(e.check.name.clone()))
        .filter_map(|e| probe::check::Checker::new(e, region, &mut cache).err())
        .map(|e| Problem::new(e.setting(), e.reason()))
        .collect()
}

/// The deciding side of the serving roles. What survives a reload: the published snapshot (and
/// with it the verdicts), the observation board, overrides, history. What a reload replaces:
/// the settings and one generation of probers (or pullers) and aggregator.
struct Aggregation {
    published: Arc<ArcSwap<Snapshot>>,
    board: Arc<ObservationBoard>,
    settings: Arc<ArcSwap<Settings>>,
    links: Arc<ArcSwap<Vec<Arc<ProberLink>>>>,
    overrides: Option<Arc<OverrideStore>>,
    drills: Option<Arc<DrillResults>>,
    /// Verdicts saved for the next start (serving roles).
    verdicts: Option<Arc<VerdictStore>>,
    history: Arc<History>,
    generation: CancellationToken,
}

/// `state`: where a serving role keeps its overrides, drill results and verdicts (each role
/// its own directory); None for a dry run, which keeps nothing.
fn start_aggregation(
    settings: &Arc<Settings>,
    metrics: &Metrics,
    state: Option<&Path>,
    shutdown: &CancellationToken,
    tasks: &mut JoinSet<()>,
) -> anyhow::Result<Aggregation> {
    let drills = state.map(|dir| {
        let store = DrillResults::open(dir);
        metrics.state.problem("drills", store.problem().is_some());
        Arc::new(store)
    });
    let overrides = match (state, &settings.state) {
        (None, _) => None,
        (Some(dir), crate::config::StateSettings::File) => {
            let store = OverrideStore::open(dir);
            metrics
                .state
                .problem("overrides", store.problem().is_some());
            Some(Arc::new(store))
        }
        // The fleet's overrides, followed from etcd (a copy kept in the state directory).
        (Some(dir), crate::config::StateSettings::Etcd(etcd)) => {
            let client = etcd_client(etcd)?;
            if let Err(error) = std::fs::create_dir_all(dir) {
                tracing::warn!(dir = %dir.display(), %error, "cannot create the state directory; the fleet's overrides are not kept locally");
            }
            Some(Arc::new(OverrideStore::Fleet(
                crate::state::fleet::FleetOverrides::start(
                    client,
                    dir,
                    drills.clone(),
                    shutdown,
                    tasks,
                ),
            )))
        }
    };
    if state.is_some() {
        for warning in settings.warnings() {
            tracing::warn!("{warning}");
        }
    }
    let (verdicts, restored) = if let Some(dir) = state {
        let ids: std::collections::HashSet<&EndpointId> =
            settings.endpoints.iter().map(|e| &e.id).collect();
        let (store, restored) = VerdictStore::open(dir, |id| ids.contains(id));
        metrics.state.problem("verdicts", store.problem().is_some());
        if let Some(at) = store.restored().saved_unix_ms {
            let age = Duration::from_millis(crate::clock::unix_ms().saturating_sub(at));
            tracing::info!(
                endpoints = restored.len(),
                "holding {} verdicts saved {} ago until probers decide (fail static across the restart)",
                restored.len(),
                humantime::format_duration(Duration::from_secs(age.as_secs()))
            );
        }
        (Some(Arc::new(store)), restored)
    } else {
        (None, Default::default())
    };
    let mut aggregation = Aggregation {
        published: Arc::new(ArcSwap::from_pointee(Aggregator::initial(
            settings,
            &restored,
            overrides
                .as_ref()
                .map(|o| o.active(crate::clock::unix_ms()))
                .unwrap_or_default(),
        ))),
        board: Arc::new(ObservationBoard::new()),
        settings: Arc::new(ArcSwap::new(settings.clone())),
        links: Arc::new(ArcSwap::from_pointee(Vec::new())),
        overrides,
        drills,
        verdicts,
        history: Arc::new(History::default()),
        generation: shutdown.child_token(),
    };
    let generation = aggregation.generation.clone();
    aggregation.spawn_generation(settings, metrics, &generation, tasks)?;
    Ok(aggregation)
}

impl Aggregation {
    /// Starts probers (or pullers) and the aggregator for `settings`, stopped by `token`.
    fn spawn_generation(
        &mut self,
        settings: &Arc<Settings>,
        metrics: &Metrics,
        token: &CancellationToken,
        tasks: &mut JoinSet<()>,
    ) -> anyhow::Result<()> {
        metrics
            .probe
            .per_endpoint_region(settings.admin.endpoint_region_metrics);
        let (links, asks) = if settings.prober_urls.is_empty() {
            let budget = probe::load::budget(&settings.cluster, settings.regions.len());
            let mut asks = exchange::asks::Asks::default();
            for (index, region) in settings.regions.iter().enumerate() {
                let (sender, receiver) = exchange::asks::channel();
                asks.insert(region.clone(), sender);
                probe::prober::spawn(
                    region,
                    probe::schedule::Stagger {
                        index,
                        of: settings.regions.len(),
                    },
                    &settings.endpoints,
                    budget,
                    receiver,
                    &self.board,
                    &metrics.probe,
                    token,
                    tasks,
                )?;
                // An in-process prober is always reachable.
                metrics.exchange.link(region, true, None);
            }
            (Vec::new(), asks)
        } else {
            let secret = settings
                .cluster
                .token
                .as_ref()
                .ok_or_else(|| anyhow!("remote probers need cluster.token_file"))?;
            let cluster = &settings.cluster;
            exchange::pull::spawn(
                settings.prober_urls.iter().map(|(r, u)| {
                    (
                        r.clone(),
                        u.clone(),
                        settings.prober_identities.get(r).unwrap_or(&NO_IDENTITY),
                    )
                }),
                Arc::new(FleetKey::new(secret)),
                &self.board,
                &metrics.exchange,
                &exchange::pull::PullSettings {
                    poll_interval: cluster.poll_interval,
                    poll_timeout: cluster.poll_timeout,
                    push: cluster.push,
                    stale_after: cluster.stale_after,
                    endpoints: Arc::new(settings.endpoints.iter().map(|e| e.id.clone()).collect()),
                },
                token,
                tasks,
            )?
        };
        let aggregator = Aggregator::new(
            settings.clone(),
            self.board.clone(),
            self.published.clone(),
            crate::aggregator::Reporter::new(
                metrics.aggregator.clone(),
                metrics.state.clone(),
                self.history.clone(),
            ),
            self.overrides.clone(),
            self.verdicts.clone(),
        )
        .confirming(asks);
        tasks.spawn(aggregator.run(token.clone()));
        self.links.store(Arc::new(links));
        Ok(())
    }

    /// Replaces the generation with one for `settings`: the new one starts before the old one
    /// stops, and verdicts carry over through the published snapshot.
    fn replace(
        &mut self,
        settings: Arc<Settings>,
        metrics: &Metrics,
        shutdown: &CancellationToken,
        tasks: &mut JoinSet<()>,
    ) -> anyhow::Result<()> {
        let old_settings = self.settings.load_full();
        let previous = self.published.load_full();
        let carried = crate::aggregator::carry_over(&old_settings, &settings, &previous.verdicts);
        for id in &carried.start_over {
            self.board.forget(id);
        }
        // Stop the old generation first, so that it cannot publish over what follows.
        self.generation.cancel();
        // Publish the new records at once (a new name must not fall through to the zone file
        // and answer NXDOMAIN), deciding from the verdicts that carry over.
        let snapshot = crate::snapshot::build(
            &settings,
            crate::snapshot::Decided::held(carried.verdicts, previous.quorum.clone()),
            previous.overrides.clone(),
            &previous,
            previous.generation + 1,
            crate::snapshot::Undecided::Wait,
        );
        self.published.store(Arc::new(snapshot));
        let next = shutdown.child_token();
        match self.spawn_generation(&settings, metrics, &next, tasks) {
            Ok(()) => {
                self.generation = next;
                self.settings.store(settings);
                Ok(())
            }
            Err(e) => {
                next.cancel();
                // Keep serving with the previous configuration.
                let again = shutdown.child_token();
                if let Err(error) = self.spawn_generation(&old_settings, metrics, &again, tasks) {
                    tracing::error!(%error, "cannot restart the previous generation after a failed reload");
                }
                self.generation = again;
                Err(e)
            }
        }
    }
}

pub use crate::admin::ReloadRequests;

/// Waits for SIGINT/SIGTERM, reloading on SIGHUP or an admin request with `reload`.
async fn serve_until_shutdown<F, Fut>(
    signals: crate::service::Signals,
    mut requests: tokio::sync::mpsc::Receiver<
        tokio::sync::oneshot::Sender<Result<String, Vec<String>>>,
    >,
    metrics: &Metrics,
    mut reload: F,
) where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<String, Vec<String>>>,
{
    let crate::service::Signals {
        mut stop,
        mut hangup,
    } = signals;
    let mut requests_open = true;
    loop {
        let reply = tokio::select! {
            () = &mut stop => return,
            () = hangup.next() => None,
            request = requests.recv(), if requests_open => match request {
                Some(reply) => Some(reply),
                None => {
                    requests_open = false;
                    continue;
                }
            },
        };
        let outcome = reload().await;
        match &outcome {
            Ok(summary) => {
                metrics.reloads.reloaded(true);
                tracing::info!("configuration reloaded: {summary}");
            }
            Err(problems) => {
                metrics.reloads.reloaded(false);
                tracing::error!(
                    "configuration reload failed; still serving the previous configuration:\n{}",
                    problems.join("\n")
                );
            }
        }
        if let Some(reply) = reply
            && reply.send(outcome).is_err()
        {
            tracing::debug!("the reload requester went away");
        }
    }
}

/// The client of the fleet's etcd (`[state]`).
fn etcd_client(etcd: &crate::config::EtcdSettings) -> anyhow::Result<crate::state::etcd::Etcd> {
    crate::state::etcd::Etcd::from_settings(etcd).context("[state] etcd client")
}

/// Registers this serving process in the fleet's membership (etcd backend only).
fn join_fleet(
    settings: &Settings,
    role: &str,
    listening: &Listening,
    shutdown: &CancellationToken,
    tasks: &mut JoinSet<()>,
) -> anyhow::Result<()> {
    let crate::config::StateSettings::Etcd(etcd) = &settings.state else {
        return Ok(());
    };
    let admin = format!(
        "http://{}/",
        crate::state::members::reachable(listening.admin)
    );
    let member = crate::state::members::Member {
        name: replica_name(listening.admin),
        role: role.to_string(),
        dns: listening
            .dns
            .iter()
            .map(|&a| crate::state::members::advertised(a).unwrap_or(a))
            .collect(),
        admin,
        version: env!("CARGO_PKG_VERSION").to_string(),
        started_unix_ms: crate::clock::unix_ms(),
    };
    crate::state::members::register(etcd_client(etcd)?, member, shutdown, tasks);
    Ok(())
}

/// This replica's name among its peers: the host name and the admin address.
fn replica_name(admin: SocketAddr) -> String {
    format!("{}/{admin}", crate::state::members::host_name())
}

/// The identity of a prober configured without keys or TLS.
static NO_IDENTITY: crate::config::ProberIdentity = crate::config::ProberIdentity {
    public_keys: Vec::new(),
    key_file: None,
    tls_roots: Vec::new(),
    tls_cert_file: None,
    tls_key_file: None,
};

/// Binds the admin listener.
/// Binds the admin listener at `listen`; `setting` names where it was configured.
async fn bind_admin(listen: SocketAddr, setting: &str) -> anyhow::Result<tokio::net::TcpListener> {
    tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("cannot bind the admin listener {listen} ({setting})"))
}

/// Serves the admin API (plus `extra` routes) until shutdown, within the HTTP budget.
fn serve_admin(
    listener: tokio::net::TcpListener,
    state: AdminState,
    refused: prometheus::IntCounter,
    extra: Option<axum::Router>,
    shutdown: &CancellationToken,
    tasks: &mut JoinSet<()>,
) {
    let mut router = admin::router(state.clone());
    if let Some(extra) = extra {
        router = router.merge(extra);
    }
    // Every route, the demo's included, behind the same guard.
    let router = admin::guarded(router, state);
    let http = crate::http::Listener {
        name: "admin",
        router,
        tls: None,
        budget: crate::http::Budget::http(),
        refused,
    };
    tasks.spawn(crate::http::serve(listener, http, shutdown.clone()));
}

fn admin_state(
    aggregation: &Aggregation,
    metrics: &Metrics,
    route53: Option<(Reports, Arc<crate::state::leader::Leadership>)>,
    reload: Option<ReloadRequests>,
) -> AdminState {
    let (route53, leadership) = match route53 {
        Some((reports, leadership)) => (Some(reports), Some(leadership)),
        None => (None, None),
    };
    AdminState {
        settings: aggregation.settings.clone(),
        snapshot: aggregation.published.clone(),
        registry: metrics.registry.clone(),
        state_metrics: metrics.state.clone(),
        links: aggregation.links.clone(),
        route53,
        leadership,
        overrides: aggregation.overrides.clone(),
        drills: aggregation.drills.clone(),
        verdicts: aggregation.verdicts.clone(),
        history: aggregation.history.clone(),
        reload,
    }
}

/// Stops every task (and the DNS server), waiting at most 5 s.
async fn drain(
    shutdown: CancellationToken,
    mut tasks: JoinSet<()>,
    server: Option<dns::listen::DnsServer>,
) {
    crate::service::notify("STOPPING=1");
    shutdown.cancel();
    let drained = tokio::time::timeout(Duration::from_secs(5), async {
        if let Some(server) = server {
            server.shutdown().await;
        }
        while tasks.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        tracing::warn!("some tasks did not stop within 5s; exiting anyway");
    }
}
