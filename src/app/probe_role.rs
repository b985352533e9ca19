//! `vantage probe`: the checks of one region and the signed report for aggregators.

use std::{net::SocketAddr, path::Path, sync::Arc};

use anyhow::{Context, anyhow};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::{Listening, drain, metrics::Metrics};
use crate::{
    config::{ProberIdentity, Settings},
    exchange::{
        self, ObservationBoard,
        auth::{self, FleetKey, ReportSigner},
        serve::ProberState,
    },
    model::Region,
    probe,
};

/// Validates what a prober needs: the configuration, its region, the fleet secret, the checks.
pub fn check_probe(config: &Path, region: &str) -> Result<(Settings, Region), Vec<String>> {
    let settings = Settings::load_for(config, crate::config::Files::PROBER)
        .map_err(|e| vec![e.to_string()])?;
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
    if let Some(identity) = settings.prober_identities.get(&region) {
        problems.extend(
            identity_problems(identity, Present::Required)
                .into_iter()
                .map(|(setting, e)| format!("prober {region}: {setting}: {e}")),
        );
        if !identity.public_keys.is_empty() && identity.key_file.is_none() {
            problems.push(format!(
                "prober {region}: public_key is set but not key_file: this prober could not sign its reports"
            ));
        }
    }
    problems.extend(
        super::check_setups(&settings, &region)
            .iter()
            .map(ToString::to_string),
    );
    if problems.is_empty() {
        Ok((settings, region))
    } else {
        Err(problems)
    }
}

/// Whether a prober's own files must be on this host (`vantage probe` of that region), or
/// are checked where they are (`check-config` on any host of the fleet).
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Present {
    Required,
    IfHere,
}

/// What is wrong with the files of a prober's identity, by setting: the signing key
/// (readable, and one of the configured public keys) and the listener's certificate and key
/// (a pair).
pub fn identity_problems(
    identity: &ProberIdentity,
    present: Present,
) -> Vec<(&'static str, String)> {
    let here = |file: &Path| present == Present::Required || file.exists();
    let mut problems = Vec::new();
    if let Some(file) = identity.key_file.as_deref().filter(|f| here(f))
        && let Err(e) = signer(file, identity)
    {
        problems.push(("key_file", e));
    }
    // Aggregators hold the certificate alone (to pin it): the pair is checked where the key is.
    let tls_here = identity.tls_key_file.as_deref().is_some_and(here);
    if tls_here && let Err(e) = tls_config(identity) {
        problems.push(e);
    }
    problems
}

/// The prober's signing key, which must match a configured public key.
fn signer(file: &Path, identity: &ProberIdentity) -> Result<ReportSigner, String> {
    let signer = ReportSigner::from_pem_file(file)?;
    let public = signer.public_key();
    if !identity
        .public_keys
        .iter()
        .any(|k| Some(auth::public_key_text(&k.0)) == public)
    {
        return Err(format!(
            "{}: its public key {} is not among this prober's public_key values; aggregators would refuse every report",
            file.display(),
            public.unwrap_or_default()
        ));
    }
    Ok(signer)
}

/// The TLS server configuration of the prober listener (None: plain HTTP); an error names the
/// setting at fault.
fn tls_config(
    identity: &ProberIdentity,
) -> Result<Option<Arc<rustls::ServerConfig>>, (&'static str, String)> {
    use rustls::pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject};
    let (Some(cert), Some(key)) = (&identity.tls_cert_file, &identity.tls_key_file) else {
        return Ok(None);
    };
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .and_then(Iterator::collect)
        .map_err(|e| {
            (
                "tls_cert_file",
                format!("cannot read {}: {e}", cert.display()),
            )
        })?;
    let key = PrivateKeyDer::from_pem_file(key).map_err(|e| {
        (
            "tls_key_file",
            format!("cannot read {}: {e}", key.display()),
        )
    })?;
    let config = rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .map_err(|e| {
            let message = format!(
                "{} and tls_key_file do not make a certificate and its key: {e}",
                cert.display()
            );
            ("tls_cert_file", message)
        })?;
    Ok(Some(Arc::new(config)))
}

/// Runs the prober of one region: every check, and the signed report on its listener.
pub async fn run_probe(
    settings: Settings,
    region: Region,
    listen: Option<SocketAddr>,
    on_listening: impl FnOnce(&Listening),
) -> anyhow::Result<()> {
    // Before anything says it is listening: a stop sent right after is never lost.
    let stop = crate::service::stop_signal(crate::service::StopOn::Terminate);
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
    let identity = settings
        .prober_identities
        .get(&region)
        .cloned()
        .unwrap_or_default();
    let fleet_key = Arc::new(FleetKey::new(&secret));
    let report_signer = match &identity.key_file {
        Some(file) => signer(file, &identity).map_err(|e| anyhow!("key_file: {e}"))?,
        None => ReportSigner::Fleet(fleet_key.clone()),
    };
    let tls =
        tls_config(&identity).map_err(|(setting, e)| anyhow!("prober {region}: {setting}: {e}"))?;
    let metrics = Metrics::new();
    let board = Arc::new(ObservationBoard::new());
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("cannot bind the prober listener {listen}"))?;
    let listening = Listening {
        dns: Vec::new(),
        admin: listener.local_addr()?,
        prober: true,
    };
    let shutdown = CancellationToken::new();
    let mut tasks = JoinSet::new();
    metrics
        .probe
        .per_endpoint_region(settings.admin.endpoint_region_metrics);
    let (asks, asked) = crate::exchange::asks::channel();
    let stagger = probe::schedule::Stagger {
        index: settings
            .regions
            .iter()
            .position(|r| *r == region)
            .unwrap_or(0),
        of: settings.regions.len(),
    };
    probe::prober::spawn(
        &region,
        stagger,
        &settings.endpoints,
        probe::load::budget(&settings.cluster, 1),
        asked,
        &board,
        &metrics.probe,
        &shutdown,
        &mut tasks,
    )?;
    let refused = metrics.listeners.refused("prober");
    let mut state = ProberState::new(
        region.clone(),
        board,
        fleet_key,
        Arc::new(report_signer),
        metrics.exchange,
        metrics.registry,
        settings.cluster.stale_after,
    );
    state.asks = Some(asks);
    let tls_on = tls.is_some();
    let http = crate::http::Listener {
        name: "prober",
        router: exchange::serve::router(state),
        tls,
        budget: crate::http::Budget::http(),
        refused,
    };
    tasks.spawn(crate::http::serve(listener, http, shutdown.clone()));
    tracing::info!(%region, listen = %listening.admin, tls = tls_on, own_key = identity.key_file.is_some(),
        endpoints = settings.endpoints.len(), "prober is running");
    on_listening(&listening);
    stop.await;
    tracing::info!("shutting down the prober");
    drain(shutdown, tasks, None).await;
    Ok(())
}
