//! `vantage dns` (and the demo): aggregation, the DNS server and the admin listener.

use std::sync::Arc;

use anyhow::{Context, anyhow};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::{
    Listening, admin_state, bind_admin, drain, serve_admin, shutdown_signal, start_aggregation,
};
use crate::{
    config::Settings,
    dns::{self, ZoneFile},
    metrics::Metrics,
};

/// Serves DNS until SIGINT/SIGTERM. `extra` adds routes to the admin listener (the demo's
/// controls).
pub async fn run(
    settings: Settings,
    zones: Vec<ZoneFile>,
    extra: Option<axum::Router>,
    on_listening: impl FnOnce(&Listening),
) -> anyhow::Result<()> {
    let settings = Arc::new(settings);
    let metrics = Arc::new(Metrics::new());
    let shutdown = CancellationToken::new();
    let mut tasks = JoinSet::new();

    let bound = dns::server::bind(&settings.dns.listen)
        .await
        .context("choose another DNS address (dns.listen, or --dns-listen for the demo)")?;
    let admin_listener = bind_admin(&settings).await?;
    let listening = Listening {
        dns: bound.addresses(),
        admin: admin_listener.local_addr()?,
    };

    let aggregation = start_aggregation(&settings, &metrics, true, &shutdown, &mut tasks)?;
    let clients = Arc::new(dns::client::ClientRegions::new(
        settings.dns.client_regions.clone(),
    ));
    let catalog =
        dns::catalog(zones, &aggregation.published, &clients).map_err(|e| anyhow!("{e}"))?;
    serve_admin(
        admin_listener,
        admin_state(&settings, &aggregation, &metrics, None),
        extra,
        &shutdown,
        &mut tasks,
    );
    let frontend = dns::server::Frontend::new(
        catalog,
        aggregation.published.clone(),
        clients,
        metrics.clone(),
    );
    let server = dns::server::serve(frontend, bound);

    tracing::info!(dns = ?listening.dns, admin = %listening.admin, probers = settings.regions.len(),
        endpoints = settings.endpoints.len(), records = settings.records.len(), "vantage is serving");
    on_listening(&listening);

    shutdown_signal().await;
    tracing::info!("shutting down: draining DNS and admin listeners");
    drain(shutdown, tasks, Some(server)).await;
    Ok(())
}
