//! Composition root of the roles (`dns`, `probe`, `route53`, `plan`): load and cross-check the
//! configuration, bind listeners, spawn the parts, drain on SIGINT/SIGTERM.

mod dns_role;
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

use crate::{
    admin::{self, AdminState},
    aggregator::{Aggregator, History},
    config::Settings,
    dns::{self, ZoneFile},
    exchange::{self, ObservationBoard, auth::FleetKey, pull::ProberLink},
    metrics::Metrics,
    overrides::OverrideStore,
    probe,
    route53::reconcile::Reports,
    snapshot::Snapshot,
};

/// Where the process actually listens (ports resolved), printed as one JSON line on stdout.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Listening {
    pub dns: Vec<SocketAddr>,
    pub admin: SocketAddr,
}

/// Every problem with a configuration file and the zones it names, each on its own line.
pub fn check(config: &Path) -> Result<(Settings, Vec<ZoneFile>), Vec<String>> {
    let settings = Settings::load(config).map_err(|e| vec![e.to_string()])?;
    let mut problems = Vec::new();
    // Building each check reads its CA file, so a bad PEM is caught here, not at start.
    for endpoint in &settings.endpoints {
        if let Some(region) = settings.regions.first() {
            if let Err(e) = probe::check::Checker::new(endpoint, region) {
                let text = e.to_string();
                if !problems.contains(&text) {
                    problems.push(text);
                }
            }
        }
    }
    let zones = match dns::zones::load_dir(&settings.dns.zones_dir) {
        Ok(zones) => zones,
        Err(errors) => {
            problems.extend(errors.iter().map(ToString::to_string));
            return Err(problems);
        }
    };
    if let Err(more) = check_zones(&settings, &zones, &config.display().to_string()) {
        problems.extend(more);
    }
    if problems.is_empty() {
        Ok((settings, zones))
    } else {
        Err(problems)
    }
}

/// Cross-checks managed records against the zone files.
pub fn check_zones(settings: &Settings, zones: &[ZoneFile], file: &str) -> Result<(), Vec<String>> {
    let problems = dns::check_records(settings, zones);
    if problems.is_empty() {
        Ok(())
    } else {
        Err(problems.iter().map(|p| format!("{file}: {p}")).collect())
    }
}

/// The observation side shared by the roles that decide: probers in this process (or pullers
/// of remote probers) and the aggregator publishing snapshots.
struct Aggregation {
    published: Arc<ArcSwap<Snapshot>>,
    links: Vec<Arc<ProberLink>>,
    overrides: Option<Arc<OverrideStore>>,
    history: Arc<History>,
}

/// `with_overrides`: open the override store of `admin.state_dir` (the serving roles).
fn start_aggregation(
    settings: &Arc<Settings>,
    metrics: &Arc<Metrics>,
    with_overrides: bool,
    shutdown: &CancellationToken,
    tasks: &mut JoinSet<()>,
) -> anyhow::Result<Aggregation> {
    let overrides = if with_overrides {
        Some(Arc::new(
            OverrideStore::open(&settings.admin.state_dir)
                .map_err(|e| anyhow!("cannot open the override store (admin.state_dir): {e}"))?,
        ))
    } else {
        None
    };
    let history = Arc::new(History::default());
    let board = Arc::new(ObservationBoard::new());
    let published = Arc::new(ArcSwap::from_pointee(Aggregator::initial(settings)));
    let links = if settings.prober_urls.is_empty() {
        for region in &settings.regions {
            probe::prober::spawn(
                region,
                &settings.endpoints,
                &board,
                metrics,
                shutdown,
                tasks,
            )?;
            // An in-process prober is always reachable.
            metrics.prober_link(region, true, None);
        }
        Vec::new()
    } else {
        let secret = settings
            .cluster
            .token
            .as_ref()
            .ok_or_else(|| anyhow!("remote probers need cluster.token_file"))?;
        let cluster = &settings.cluster;
        exchange::pull::spawn(
            settings
                .prober_urls
                .iter()
                .map(|(r, u)| (r.clone(), u.clone())),
            Arc::new(FleetKey::new(secret)),
            &board,
            metrics,
            cluster.poll_interval,
            cluster.poll_timeout,
            cluster.stale_after,
            shutdown,
            tasks,
        )?
    };
    let aggregator = Aggregator::new(
        settings.clone(),
        board,
        published.clone(),
        metrics.clone(),
        overrides.clone(),
        history.clone(),
    );
    tasks.spawn(aggregator.run(shutdown.clone()));
    Ok(Aggregation {
        published,
        links,
        overrides,
        history,
    })
}

/// Binds the admin listener.
async fn bind_admin(settings: &Settings) -> anyhow::Result<tokio::net::TcpListener> {
    tokio::net::TcpListener::bind(settings.admin.listen)
        .await
        .with_context(|| {
            format!(
                "cannot bind the admin listener {} (admin.listen, or --admin-listen for the demo)",
                settings.admin.listen
            )
        })
}

/// Serves the admin API (plus `extra` routes) until shutdown.
fn serve_admin(
    listener: tokio::net::TcpListener,
    state: AdminState,
    extra: Option<axum::Router>,
    shutdown: &CancellationToken,
    tasks: &mut JoinSet<()>,
) {
    let mut router = admin::router(state);
    if let Some(extra) = extra {
        router = router.merge(extra);
    }
    let stop = shutdown.clone();
    tasks.spawn(async move {
        let serve = axum::serve(listener, router)
            .with_graceful_shutdown(async move { stop.cancelled().await });
        if let Err(error) = serve.await {
            tracing::error!(%error, "admin listener failed");
        }
    });
}

fn admin_state(
    settings: &Arc<Settings>,
    aggregation: &Aggregation,
    metrics: &Arc<Metrics>,
    route53: Option<Reports>,
) -> AdminState {
    AdminState {
        settings: settings.clone(),
        snapshot: aggregation.published.clone(),
        metrics: metrics.clone(),
        links: Arc::new(aggregation.links.clone()),
        route53,
        overrides: aggregation.overrides.clone(),
        history: aggregation.history.clone(),
    }
}

/// Stops every task (and the DNS server), waiting at most 5 s.
async fn drain(
    shutdown: CancellationToken,
    mut tasks: JoinSet<()>,
    server: Option<hickory_server::Server<dns::server::Frontend>>,
) {
    shutdown.cancel();
    let drained = tokio::time::timeout(Duration::from_secs(5), async {
        if let Some(mut server) = server {
            if let Err(error) = server.shutdown_gracefully().await {
                tracing::warn!(%error, "DNS server stopped with an error");
            }
        }
        while tasks.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        tracing::warn!("some tasks did not stop within 5s; exiting anyway");
    }
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = ctrl_c => {}
                    _ = term.recv() => {}
                }
            }
            Err(error) => {
                tracing::warn!(%error, "cannot listen for SIGTERM; only SIGINT stops vantage");
                if let Err(error) = ctrl_c.await {
                    tracing::error!(%error, "cannot listen for SIGINT either; stopping");
                }
            }
        }
    }
    #[cfg(not(unix))]
    if let Err(error) = ctrl_c.await {
        tracing::error!(%error, "cannot listen for SIGINT; stopping");
    }
}
