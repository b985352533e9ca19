//! `vantage probe`: the checks of one region and the signed report for aggregators.

use std::{net::SocketAddr, path::Path, sync::Arc};

use anyhow::{Context, anyhow};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::{Listening, drain, shutdown_signal};
use crate::{
    config::Settings,
    exchange::{self, ObservationBoard, auth::FleetKey, serve::ProberState},
    metrics::Metrics,
    model::Region,
    probe,
};

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
    problems.extend(super::check_setups(&settings, &region));
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
