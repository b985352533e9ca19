//! `vantage route53` (the reconciler) and `vantage plan` (its dry run).

use std::{sync::Arc, time::Duration};

use anyhow::anyhow;
use serde_json::json;
use tokio::{task::JoinSet, time::Instant};
use tokio_util::sync::CancellationToken;

use super::{
    Listening, admin_state, bind_admin, drain, metrics::Metrics, serve_admin, serve_until_shutdown,
    start_aggregation,
};
use crate::{
    config::Settings,
    route53::{
        client::Route53Client,
        controller::{Approval, Controller},
        desired,
        reconcile::{self, Reports},
        retry::{Backoff, Paced},
    },
    state::leader::Leadership,
};

fn require_targets(settings: &Settings) -> anyhow::Result<()> {
    if settings.records.iter().any(|r| r.route53.is_some()) {
        Ok(())
    } else {
        Err(anyhow!(
            "no [[record]] has a route53 section; nothing to push to Route53"
        ))
    }
}

async fn api(settings: &Settings, metrics: &Metrics) -> Paced<Route53Client> {
    Paced::new(
        Route53Client::new(&settings.route53).await,
        settings.route53.requests_per_second,
        Backoff::default(),
        metrics.route53.clone(),
    )
}

/// How long a reconciler leads without renewing its lease: a standby takes over within it.
const LEADER_TTL: std::time::Duration = std::time::Duration::from_secs(5);

/// Runs the Route53 reconciler until SIGINT/SIGTERM; reloads the configuration on SIGHUP or
/// `POST /v1/reload` (the Route53 endpoint and pacing take effect at the next restart).
pub async fn run_route53(
    settings: Settings,
    config: std::path::PathBuf,
    force: bool,
    on_listening: impl FnOnce(&Listening),
) -> anyhow::Result<()> {
    require_targets(&settings)?;
    // Before anything says it is listening: a stop sent right after is never lost.
    let signals = crate::service::Signals::register();
    let settings = Arc::new(settings);
    let metrics = Metrics::new();
    let shutdown = CancellationToken::new();
    let mut tasks = JoinSet::new();
    let admin_listener = match settings.route53.admin_listen {
        Some(listen) => bind_admin(listen, "route53.admin_listen").await?,
        None => {
            bind_admin(
                settings.admin.listen,
                "admin.listen; set route53.admin_listen to run beside a DNS server",
            )
            .await?
        }
    };
    let listening = Listening {
        dns: Vec::new(),
        admin: admin_listener.local_addr()?,
        prober: false,
    };
    let mut aggregation = start_aggregation(
        &settings,
        &metrics,
        Some(&settings.route53.state_dir),
        &shutdown,
        &mut tasks,
    )?;
    let reports: Reports = Arc::default();
    // Replicas sharing the fleet's etcd elect one writer; alone, this one writes.
    let name = super::replica_name(listening.admin);
    let leadership = match &settings.state {
        crate::config::StateSettings::Etcd(etcd) => Leadership::campaign(
            super::etcd_client(etcd)?,
            "route53",
            &name,
            LEADER_TTL,
            &shutdown,
            &mut tasks,
        ),
        crate::config::StateSettings::File => Leadership::alone(&name),
    };
    let (reload_tx, reload_rx) = tokio::sync::mpsc::channel(4);
    serve_admin(
        admin_listener,
        admin_state(
            &aggregation,
            &metrics,
            Some((reports.clone(), leadership.clone())),
            Some(reload_tx),
        ),
        metrics.listeners.refused("admin"),
        None,
        &shutdown,
        &mut tasks,
    );
    let controller = Controller::new(
        Arc::new(api(&settings, &metrics).await),
        aggregation.settings.clone(),
        aggregation.published.clone(),
        reports,
        metrics.route53.clone(),
        Approval::new(force, Some(&settings.route53.state_dir)),
        leadership,
    );
    tasks.spawn(controller.run(shutdown.clone()));
    tracing::info!(admin = %listening.admin, force, "Route53 reconciler is running");
    super::join_fleet(&settings, "route53", &listening, &shutdown, &mut tasks)?;
    on_listening(&listening);
    serve_until_shutdown(signals, reload_rx, &metrics, || {
        let outcome = Settings::load_for(&config, crate::config::Files::ROUTE53)
            .map_err(|e| vec![e.to_string()])
            .and_then(|next| {
                require_targets(&next).map_err(|e| vec![e.to_string()])?;
                let summary = format!(
                    "{} records, {} endpoints",
                    next.records.len(),
                    next.endpoints.len()
                );
                aggregation
                    .replace(Arc::new(next), &metrics, &shutdown, &mut tasks)
                    .map_err(|e| vec![format!("{e:#}")])?;
                Ok(summary)
            });
        async move { outcome }
    })
    .await;
    tracing::info!("shutting down the reconciler (nothing is deleted on shutdown)");
    drain(shutdown, tasks, None).await;
    Ok(())
}

/// What `vantage plan` found.
pub struct PlanOutcome {
    pub pending: bool,
    pub text: String,
    pub json: serde_json::Value,
    /// Some records could not be decided (probers unreachable): the plan is incomplete.
    pub undecided: bool,
}

/// Dry run: decide (probers or pullers, until the first quorum round or the startup grace),
/// read Route53 and print what the reconciler would change.
pub async fn plan(settings: Settings) -> anyhow::Result<PlanOutcome> {
    require_targets(&settings)?;
    let settings = Arc::new(settings);
    let metrics = Metrics::new();
    let shutdown = CancellationToken::new();
    let mut tasks = JoinSet::new();
    let aggregation = start_aggregation(&settings, &metrics, None, &shutdown, &mut tasks)?;
    // Every endpoint of every record pushed to Route53 must be decided, not just every DNS
    // answer (a failover record answers as soon as its primary is Up).
    let deadline = Instant::now() + settings.cluster.startup_grace;
    while !desired::undecided(&settings, &aggregation.published.load()).is_empty()
        && Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let snapshot = aggregation.published.load_full();
    shutdown.cancel();
    while tasks.join_next().await.is_some() {}
    let undecided = desired::undecided(&settings, &snapshot);
    for record in &undecided {
        tracing::warn!("left out of the plan: {record}");
    }
    let api = api(&settings, &metrics).await;
    let mut text = String::new();
    let mut zones = Vec::new();
    let mut pending = false;
    for (zone, targets) in desired::targets(&settings, &snapshot) {
        let (_, plan) = reconcile::plan_zone(&api, &zone, &targets)
            .await
            .map_err(|e| anyhow!("cannot read hosted zone {zone}: {e}"))?;
        pending |= !plan.is_empty();
        text.push_str(&format!("zone {zone}:\n{}", plan.render()));
        zones.push(json!({"zone": zone, "changes": plan.steps(), "conflicts": plan.conflicts}));
    }
    if !undecided.is_empty() {
        text.push_str(&format!(
            "undecided after {:?} (cluster.startup_grace), not planned:\n",
            settings.cluster.startup_grace
        ));
        for record in &undecided {
            text.push_str(&format!("  {record}\n"));
        }
    }
    Ok(PlanOutcome {
        pending,
        text,
        json: json!({"pending": pending, "zones": zones, "undecided": undecided}),
        undecided: !undecided.is_empty(),
    })
}
