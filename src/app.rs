//! Composition root: load and cross-check configuration and zones, bind listeners, spawn the
//! probers, the aggregator, the DNS server and the admin listener, and drain on SIGINT/SIGTERM.

use std::{net::SocketAddr, path::Path, sync::Arc, time::Duration};

use anyhow::{Context, anyhow};
use arc_swap::ArcSwap;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::{
    admin::{self, AdminState},
    aggregator::Aggregator,
    config::Settings,
    dns::{self, ZoneFile},
    exchange::{self, ObservationBoard, auth::FleetKey, serve::ProberState},
    metrics::Metrics,
    model::Region,
    probe,
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

/// Runs DNS with in-process probers (one per configured region) until SIGINT/SIGTERM.
/// `extra` adds routes to the admin listener (the demo's controls).
pub async fn run(
    settings: Settings,
    zones: Vec<ZoneFile>,
    extra: Option<axum::Router>,
    on_listening: impl FnOnce(&Listening),
) -> anyhow::Result<()> {
    let settings = Arc::new(settings);
    let metrics = Arc::new(Metrics::new());
    let board = Arc::new(ObservationBoard::new());
    let published = Arc::new(ArcSwap::from_pointee(Aggregator::initial(&settings)));

    let clients = Arc::new(dns::client::ClientRegions::new(
        settings.dns.client_regions.clone(),
    ));
    let catalog = dns::catalog(zones, &published, &clients).map_err(|e| anyhow!("{e}"))?;
    let bound = dns::server::bind(&settings.dns.listen)
        .await
        .context("choose another DNS address (dns.listen, or --dns-listen for the demo)")?;
    let admin_listener = tokio::net::TcpListener::bind(settings.admin.listen)
        .await
        .with_context(|| {
            format!(
                "cannot bind the admin listener {} (admin.listen, or --admin-listen for the demo)",
                settings.admin.listen
            )
        })?;
    let listening = Listening {
        dns: bound.addresses(),
        admin: admin_listener.local_addr()?,
    };

    let shutdown = CancellationToken::new();
    let mut tasks = JoinSet::new();
    let links = if settings.prober_urls.is_empty() {
        for region in &settings.regions {
            probe::prober::spawn(
                region,
                &settings.endpoints,
                &board,
                &metrics,
                &shutdown,
                &mut tasks,
            )?;
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
            &metrics,
            cluster.poll_interval,
            cluster.poll_timeout,
            cluster.stale_after,
            &shutdown,
            &mut tasks,
        )?
    };
    let aggregator = Aggregator::new(
        settings.clone(),
        board.clone(),
        published.clone(),
        metrics.clone(),
    );
    tasks.spawn(aggregator.run(shutdown.clone()));

    let mut router = admin::router(AdminState {
        settings: settings.clone(),
        snapshot: published.clone(),
        metrics: metrics.clone(),
        links: Arc::new(links),
    });
    if let Some(extra) = extra {
        router = router.merge(extra);
    }
    let admin_shutdown = shutdown.clone();
    tasks.spawn(async move {
        let serve = axum::serve(admin_listener, router)
            .with_graceful_shutdown(async move { admin_shutdown.cancelled().await });
        if let Err(error) = serve.await {
            tracing::error!(%error, "admin listener failed");
        }
    });

    let frontend = dns::server::Frontend::new(catalog, published.clone(), clients, metrics.clone());
    let server = dns::server::serve(frontend, bound);

    tracing::info!(dns = ?listening.dns, admin = %listening.admin, probers = settings.regions.len(),
        endpoints = settings.endpoints.len(), records = settings.records.len(), "vantage is serving");
    on_listening(&listening);

    shutdown_signal().await;
    tracing::info!("shutting down: draining DNS and admin listeners");
    drain(shutdown, tasks, Some(server)).await;
    Ok(())
}

/// Validates what a prober needs: the configuration, its region, the fleet secret, the checks.
pub fn check_probe(config: &Path, region: &str) -> Result<(Settings, Region), Vec<String>> {
    let settings = Settings::load(config).map_err(|e| vec![e.to_string()])?;
    let mut problems = Vec::new();
    let region = settings
        .regions
        .iter()
        .find(|r| r.as_str() == region)
        .cloned();
    let Some(region) = region else {
        let known: Vec<&str> = settings.regions.iter().map(Region::as_str).collect();
        return Err(vec![format!(
            "{}: no [[prober]] with region {region:?} (configured: {})",
            config.display(),
            known.join(", ")
        )]);
    };
    if settings.cluster.token.is_none() {
        problems.push(format!(
            "{}: cluster.token_file: vantage probe needs the fleet secret to sign its reports",
            config.display()
        ));
    }
    for endpoint in &settings.endpoints {
        if let Err(e) = probe::check::Checker::new(endpoint, &region) {
            problems.push(e.to_string());
        }
    }
    if problems.is_empty() {
        Ok((settings, region))
    } else {
        Err(problems)
    }
}

/// Runs the prober of one region: every check, and the signed report on its listener.
pub async fn run_probe(
    settings: Settings,
    region: Region,
    listen: Option<SocketAddr>,
    on_listening: impl FnOnce(&Listening),
) -> anyhow::Result<()> {
    let secret = settings
        .cluster
        .token
        .clone()
        .ok_or_else(|| anyhow!("vantage probe needs cluster.token_file"))?;
    let listen = match listen {
        Some(addr) => addr,
        None => settings
            .prober_urls
            .get(&region)
            .and_then(|u| u.socket_addrs(|| None).ok())
            .and_then(|addrs| addrs.into_iter().next())
            .ok_or_else(|| {
                anyhow!("give --listen, or a url for the {region} prober in the configuration")
            })?,
    };
    let metrics = Arc::new(Metrics::new());
    let board = Arc::new(ObservationBoard::new());
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("cannot bind the prober listener {listen}"))?;
    let listening = Listening {
        dns: Vec::new(),
        admin: listener.local_addr()?,
    };
    let shutdown = CancellationToken::new();
    let mut tasks = JoinSet::new();
    probe::prober::spawn(
        &region,
        &settings.endpoints,
        &board,
        &metrics,
        &shutdown,
        &mut tasks,
    )?;
    let state = ProberState::new(
        region.clone(),
        board,
        Arc::new(FleetKey::new(&secret)),
        metrics,
        settings.cluster.stale_after,
    );
    let stop = shutdown.clone();
    tasks.spawn(async move {
        let serve = axum::serve(listener, exchange::serve::router(state))
            .with_graceful_shutdown(async move { stop.cancelled().await });
        if let Err(error) = serve.await {
            tracing::error!(%error, "prober listener failed");
        }
    });
    tracing::info!(%region, listen = %listening.admin, endpoints = settings.endpoints.len(), "prober is running");
    on_listening(&listening);
    shutdown_signal().await;
    tracing::info!("shutting down the prober");
    drain(shutdown, tasks, None).await;
    Ok(())
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
