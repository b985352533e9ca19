//! `vantage route53` (the reconciler) and `vantage plan` (its dry run).

use std::{collections::BTreeMap, sync::Arc, time::Duration};

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
        api::Api,
        client::Route53Client,
        desired,
        plan::Target,
        reconcile::{self, AppliedChange, CycleLimits, Reports},
        retry::{Backoff, Paced},
    },
};

/// How often the reconciler looks at the snapshot for changed answers.
const WATCH: Duration = Duration::from_millis(200);

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
    };
    let mut aggregation = start_aggregation(
        &settings,
        &metrics,
        Some(&settings.route53.state_dir),
        &shutdown,
        &mut tasks,
    )?;
    let reports: Reports = Arc::default();
    let (reload_tx, reload_rx) = tokio::sync::mpsc::channel(4);
    serve_admin(
        admin_listener,
        admin_state(
            &aggregation,
            &metrics,
            Some(reports.clone()),
            Some(reload_tx),
        ),
        metrics.listeners.refused("admin"),
        None,
        &shutdown,
        &mut tasks,
    );
    let api = api(&settings, &metrics).await;
    let published = aggregation.published.clone();
    let stop = shutdown.clone();
    let loop_settings = aggregation.settings.clone();
    let loop_metrics = metrics.clone();
    tasks.spawn(async move {
        reconcile_loop(
            loop_settings,
            published,
            api,
            loop_metrics,
            reports,
            force,
            stop,
        )
        .await;
    });
    tracing::info!(admin = %listening.admin, force, "Route53 reconciler is running");
    on_listening(&listening);
    serve_until_shutdown(signals, reload_rx, &metrics, || {
        let outcome = Settings::load(&config)
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

async fn reconcile_loop(
    settings: Arc<arc_swap::ArcSwap<Settings>>,
    published: Arc<arc_swap::ArcSwap<crate::snapshot::Snapshot>>,
    api: impl Api,
    metrics: Metrics,
    reports: Reports,
    force: bool,
    shutdown: CancellationToken,
) {
    let limits = |settings: &Settings| CycleLimits {
        max_change_fraction: settings.route53.max_change_fraction,
        min_change_cap: settings.route53.min_change_cap,
        insync_timeout: settings.route53.insync_timeout,
        force,
    };
    let mut last: Option<BTreeMap<String, Vec<Target>>> = None;
    let mut next_cycle = Instant::now();
    let mut changed_at: Option<Instant> = None;
    let mut propagating: Vec<Propagating> = Vec::new();
    let mut last_insync_poll = Instant::now();
    // Conflicts and errors are logged when they appear, not every cycle.
    let mut logged: BTreeMap<String, String> = BTreeMap::new();
    let mut exported_states = Vec::new();
    loop {
        tokio::select! {
            () = tokio::time::sleep(WATCH) => {}
            () = shutdown.cancelled() => return,
        }
        let snapshot = published.load();
        let settings = settings.load_full();
        let limits = limits(&settings);
        // Every record's state as of the latest reports, for the metrics (set when it changes).
        let states = {
            let reports = reports
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            crate::route53::status::record_states(&settings, &snapshot, &reports)
        };
        if states != exported_states {
            metrics.route53.records(&states);
            exported_states = states;
        }
        // Propagation is followed without blocking new changes (every 2 s, one GetChange each).
        if !propagating.is_empty() && last_insync_poll.elapsed() >= INSYNC_POLL {
            last_insync_poll = Instant::now();
            let mut still = Vec::new();
            for p in propagating.drain(..) {
                let done = reconcile::all_insync(&api, &p.changes).await;
                let timed_out = p.since.elapsed() >= limits.insync_timeout;
                if done || timed_out {
                    if done {
                        metrics
                            .route53
                            .insync_after(p.changed_at.unwrap_or(p.since).elapsed().as_secs_f64());
                    } else {
                        tracing::warn!(zone = %p.zone, timeout = ?limits.insync_timeout, "changes not INSYNC within the timeout");
                    }
                    if let Some(r) = reports
                        .lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner)
                        .get_mut(&p.zone)
                    {
                        r.insync = Some(done);
                        if let Some(change) = r.last_change.as_mut().filter(|c| c.ids == p.changes)
                        {
                            change.insync_unix_ms = done.then(crate::clock::unix_ms);
                        }
                    }
                } else {
                    still.push(p);
                }
            }
            propagating = still;
        }
        let targets = desired::targets(&settings, &snapshot);
        let changed = last.as_ref() != Some(&targets);
        if !changed && Instant::now() < next_cycle {
            continue;
        }
        if changed && last.is_some() {
            changed_at = Some(Instant::now());
        }
        let mut all_synced = true;
        let mut conflicts = Vec::new();
        let mut pending = 0;
        for (zone, zone_targets) in &targets {
            let mut report = reconcile::reconcile_zone(&api, zone, zone_targets, limits).await;
            if report.capped {
                metrics.route53.cycle_refused();
            }
            metrics.route53.changes_made(report.made.iter());
            for c in &report.conflicts {
                if c.kind == crate::route53::plan::ConflictKind::Ownership {
                    conflicts.push(c.key.name.clone());
                }
            }
            let error = report.error.clone().unwrap_or_default();
            if logged.get(zone) != Some(&error) {
                if !error.is_empty() {
                    tracing::error!(zone, %error, "Route53 not reconciled");
                }
                for c in &report.conflicts {
                    match c.kind {
                        crate::route53::plan::ConflictKind::Ownership => {
                            tracing::warn!(zone, record = %c.key, "Route53 ownership conflict: {}", c.reason);
                        }
                        crate::route53::plan::ConflictKind::Refused => {
                            tracing::warn!(zone, record = %c.key, "Route53 refused the change: {}", c.reason);
                        }
                    }
                }
                logged.insert(zone.clone(), error);
            }
            if !report.applied {
                all_synced = false;
                pending += report.unapplied_steps();
            } else if !report.steps.is_empty() {
                tracing::info!(zone, changes = report.steps.len(), "Route53 updated");
            }
            if !report.changes.is_empty() {
                propagating.push(Propagating {
                    zone: zone.clone(),
                    changes: report.changes.clone(),
                    since: Instant::now(),
                    changed_at,
                });
            }
            let mut reports = reports
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            report.last_change = AppliedChange::of(&report)
                .or_else(|| reports.get(zone).and_then(|r| r.last_change.clone()));
            reports.insert(zone.clone(), report);
        }
        metrics.route53.state(&conflicts, pending, all_synced);
        changed_at = None;
        if all_synced {
            last = Some(targets);
            next_cycle = Instant::now() + settings.route53.interval;
        } else {
            // Try again soon, but not in a tight loop.
            last = Some(targets);
            next_cycle = Instant::now() + settings.route53.interval.min(Duration::from_secs(5));
        }
    }
}

/// How often applied changes are checked for INSYNC.
const INSYNC_POLL: Duration = Duration::from_secs(2);

/// Applied changes waiting to propagate.
struct Propagating {
    zone: String,
    changes: Vec<String>,
    since: Instant,
    /// When the answer changed (for the verdict-to-INSYNC histogram).
    changed_at: Option<Instant>,
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
