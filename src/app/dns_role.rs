//! `vantage dns` (and the demo): aggregation, the DNS server and the admin listener; reloads
//! the configuration and zones on SIGHUP or `POST /v1/reload`.

use std::{path::PathBuf, sync::Arc};

use anyhow::Context;
use arc_swap::ArcSwap;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::{
    Listening, admin_state, bind_admin, check, drain, metrics::Metrics, serve_admin,
    serve_until_shutdown, start_aggregation,
};
use crate::{
    config::Settings,
    dns::{self, ZoneFile, server::DnsState},
};

/// Serves DNS until SIGINT/SIGTERM. `config` is the file to re-read on reload (none for the
/// demo); `extra` adds routes to the admin listener (the demo's controls).
pub async fn run(
    settings: Settings,
    zones: Vec<ZoneFile>,
    config: Option<PathBuf>,
    extra: Option<axum::Router>,
    on_listening: impl FnOnce(&Listening),
) -> anyhow::Result<()> {
    // Before anything says it is listening: a stop sent right after is never lost.
    let signals = crate::service::Signals::register();
    let settings = Arc::new(settings);
    let metrics = Metrics::new();
    let shutdown = CancellationToken::new();
    let mut tasks = JoinSet::new();

    let bound = dns::listen::bind(&settings.dns.listen, dns::listen::udp_threads())
        .await
        .context("choose another DNS address (dns.listen, or --dns-listen for the demo)")?;
    let admin_listener = bind_admin(
        settings.admin.listen,
        "admin.listen, or --admin-listen for the demo",
    )
    .await?;
    let listening = Listening {
        dns: bound.addresses(),
        admin: admin_listener.local_addr()?,
        prober: false,
    };

    let mut aggregation = start_aggregation(
        &settings,
        &metrics,
        Some(&settings.admin.state_dir),
        &shutdown,
        &mut tasks,
    )?;
    let state = Arc::new(ArcSwap::from_pointee(DnsState::new(&settings, zones)));
    let (reload_tx, reload_rx) = tokio::sync::mpsc::channel(4);
    serve_admin(
        admin_listener,
        admin_state(
            &aggregation,
            &metrics,
            None,
            config.as_ref().map(|_| reload_tx),
        ),
        metrics.listeners.refused("admin"),
        extra,
        &shutdown,
        &mut tasks,
    );
    let frontend = dns::server::Frontend::new(
        state.clone(),
        aggregation.published.clone(),
        metrics.dns.clone(),
    );
    let server = dns::listen::serve(frontend, bound, &settings.dns.xdp)
        .context("cannot start the DNS server")?;
    tasks.spawn(sweep_signatures(
        state.clone(),
        metrics.dns.clone(),
        shutdown.clone(),
    ));

    tracing::info!(dns = ?listening.dns, admin = %listening.admin, probers = settings.regions.len(),
        endpoints = settings.endpoints.len(), records = settings.records.len(), "vantage is serving");
    super::join_fleet(&settings, "dns", &listening, &shutdown, &mut tasks)?;
    on_listening(&listening);

    serve_until_shutdown(signals, reload_rx, &metrics, || {
        let outcome = match &config {
            None => Err(vec![
                "this process has no configuration file to reload (the demo)".to_string(),
            ]),
            Some(path) => reload(
                path,
                &settings,
                &mut aggregation,
                &state,
                &metrics,
                &shutdown,
                &mut tasks,
            ),
        };
        async move { outcome }
    })
    .await;
    tracing::info!("shutting down: draining DNS and admin listeners");
    drain(shutdown, tasks, Some(server)).await;
    Ok(())
}

/// Every 10 s: drops the cached signatures due for refresh from each signed zone's cache and
/// exports what is left (`vantage_dnssec_signature_*`).
async fn sweep_signatures(
    state: Arc<ArcSwap<DnsState>>,
    metrics: dns::DnsMetrics,
    shutdown: CancellationToken,
) {
    let mut every = tokio::time::interval(std::time::Duration::from_secs(10));
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = every.tick() => {}
        }
        let now = crate::clock::unix_ms() / 1000;
        let current = state.load();
        let swept: Vec<_> = current
            .catalog
            .signers()
            .map(|s| {
                let (entries, earliest) = s.sweep(now);
                (s.zone.as_str(), entries, earliest, s.refresh())
            })
            .collect();
        metrics.signature_cache(&swept);
    }
}

/// Re-reads and validates everything first; swaps only if all of it is good.
fn reload(
    path: &std::path::Path,
    first: &Settings,
    aggregation: &mut super::Aggregation,
    state: &Arc<ArcSwap<DnsState>>,
    metrics: &Metrics,
    shutdown: &CancellationToken,
    tasks: &mut JoinSet<()>,
) -> Result<String, Vec<String>> {
    let (settings, zones) = check(path)?;
    let mut notes = Vec::new();
    if settings.dns.listen != first.dns.listen || settings.admin.listen != first.admin.listen {
        notes.push("listen addresses changed: they take effect at the next restart".to_string());
    }
    if settings.dns.xdp != first.dns.xdp {
        notes.push("dns.xdp changed: it takes effect at the next restart".to_string());
    }
    if settings.admin.state_dir != first.admin.state_dir {
        notes.push("admin.state_dir changed: it takes effect at the next restart".to_string());
    }
    let summary = format!(
        "{} records, {} endpoints, {} zones, {} probers{}",
        settings.records.len(),
        settings.endpoints.len(),
        zones.len(),
        settings.regions.len(),
        if notes.is_empty() {
            String::new()
        } else {
            format!(" ({})", notes.join("; "))
        }
    );
    let settings = Arc::new(settings);
    let next = DnsState::new(&settings, zones);
    aggregation
        .replace(settings, metrics, shutdown, tasks)
        .map_err(|e| vec![format!("{e:#}")])?;
    let old = state.swap(Arc::new(next));
    // The old zones are freed away from the request path, once nothing reads them.
    tokio::task::spawn_blocking(move || dns::server::release(old));
    Ok(summary)
}
