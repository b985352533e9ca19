//! `vantage demo`: three toy HTTP backends on loopback that can be failed and restored (for
//! every region or for one region's prober only), plus the embedded fleet config and zone.
//!
//! Everything else the demo runs (probers, quorum, snapshot, DNS, admin API) is the real code.

use std::{
    collections::{BTreeMap, BTreeSet},
    net::{IpAddr, Ipv4Addr, SocketAddr},
    path::Path,
    sync::{Arc, Mutex, PoisonError},
};

use axum::{
    Json, Router,
    extract::{Path as UrlPath, Query, State},
    http::{HeaderMap, StatusCode},
    routing::{get, post},
};
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::{
    config::{ConfigError, Settings},
    dns::zones,
};

#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    #[error("cannot bind the demo backends on 127.0.0.2-4: {0}")]
    Bind(#[from] std::io::Error),
    #[error("the embedded demo configuration is invalid: {0}")]
    Config(#[from] ConfigError),
    #[error("the embedded demo zone is invalid: {0}")]
    Zone(#[from] zones::ZoneError),
    #[error("cannot sign the demo zone: {0}")]
    Signing(String),
}

const FLEET: &str = include_str!("fleet.toml");
const ZONE: &str = include_str!("../../zones/example.com.zone");

/// The demo backends: name, address, site.
pub const BACKENDS: [(&str, Ipv4Addr, &str); 3] = [
    ("use1", Ipv4Addr::new(127, 0, 0, 2), "us-east"),
    ("euw1", Ipv4Addr::new(127, 0, 0, 3), "eu-west"),
    ("aps1", Ipv4Addr::new(127, 0, 0, 4), "ap-south"),
];

/// How a backend is failed.
enum Fault {
    /// 503 to every prober.
    Everywhere,
    /// 503 to the probers of these regions only.
    Regions(BTreeSet<String>),
}

/// Which backends are failed.
#[derive(Default)]
pub struct Faults {
    failed: Mutex<BTreeMap<String, Fault>>,
}

impl Faults {
    fn fails_for(&self, backend: &str, region: Option<&str>) -> bool {
        let failed = self.failed.lock().unwrap_or_else(PoisonError::into_inner);
        match failed.get(backend) {
            None => false,
            Some(Fault::Everywhere) => true,
            Some(Fault::Regions(regions)) => region.is_some_and(|r| regions.contains(r)),
        }
    }

    fn describe(&self) -> Value {
        let failed = self.failed.lock().unwrap_or_else(PoisonError::into_inner);
        let list: Vec<Value> = BACKENDS
            .iter()
            .map(|(name, ip, site)| {
                let state = match failed.get(*name) {
                    None => json!("healthy"),
                    Some(Fault::Everywhere) => json!("failed for every region"),
                    Some(Fault::Regions(r)) => json!(format!(
                        "failed for {}",
                        r.iter().cloned().collect::<Vec<_>>().join(", ")
                    )),
                };
                json!({"name": name, "address": ip, "site": site, "state": state})
            })
            .collect();
        json!({"backends": list})
    }
}

/// The running demo backends.
pub struct Backends {
    pub port: u16,
    pub faults: Arc<Faults>,
}

/// Starts the three backends on 127.0.0.2-4, all on one free port.
pub async fn start_backends(shutdown: &CancellationToken) -> Result<Backends, DemoError> {
    let faults = Arc::new(Faults::default());
    let mut attempt = 0;
    let (port, listeners) = loop {
        attempt += 1;
        let first = TcpListener::bind(SocketAddr::new(IpAddr::V4(BACKENDS[0].1), 0)).await?;
        let port = first.local_addr()?.port();
        let mut listeners = vec![first];
        for (_, ip, _) in &BACKENDS[1..] {
            match TcpListener::bind(SocketAddr::new(IpAddr::V4(*ip), port)).await {
                Ok(l) => listeners.push(l),
                Err(e) if attempt < 20 => {
                    tracing::debug!(error = %e, port, "demo port taken on another address, retrying");
                    break;
                }
                Err(e) => return Err(DemoError::Bind(e)),
            }
        }
        if listeners.len() == BACKENDS.len() {
            break (port, listeners);
        }
    };
    for ((name, _, _), listener) in BACKENDS.iter().zip(listeners) {
        let app = Router::new()
            .route("/healthz", get(healthz))
            .with_state((name.to_string(), faults.clone()));
        let stop = shutdown.clone();
        tokio::spawn(async move {
            let serve = axum::serve(listener, app)
                .with_graceful_shutdown(async move { stop.cancelled().await });
            if let Err(error) = serve.await {
                tracing::error!(%error, "demo backend stopped");
            }
        });
    }
    Ok(Backends { port, faults })
}

async fn healthz(
    State((name, faults)): State<(String, Arc<Faults>)>,
    headers: HeaderMap,
) -> (StatusCode, String) {
    let region = headers
        .get("x-vantage-region")
        .and_then(|v| v.to_str().ok());
    if faults.fails_for(&name, region) {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("{name}: failed (demo)\n"),
        )
    } else {
        (StatusCode::OK, format!("{name}: ok\n"))
    }
}

#[derive(Deserialize)]
struct RegionQuery {
    region: Option<String>,
}

/// Admin routes that fail and restore backends: `POST /demo/backends/{name}/fail[?region=R]`.
pub fn routes(faults: Arc<Faults>) -> Router {
    Router::new()
        .route(
            "/demo/backends",
            get(|State(f): State<Arc<Faults>>| async move { Json(f.describe()) }),
        )
        .route("/demo/backends/{name}/{action}", post(control))
        .with_state(faults)
}

async fn control(
    State(faults): State<Arc<Faults>>,
    UrlPath((name, action)): UrlPath<(String, String)>,
    Query(query): Query<RegionQuery>,
) -> (StatusCode, Json<Value>) {
    if !BACKENDS.iter().any(|(n, _, _)| *n == name) {
        let names: Vec<&str> = BACKENDS.iter().map(|(n, _, _)| *n).collect();
        return (
            StatusCode::NOT_FOUND,
            Json(json!({"error": format!("no demo backend {name:?}; use one of {names:?}")})),
        );
    }
    {
        let mut failed = faults.failed.lock().unwrap_or_else(PoisonError::into_inner);
        match (action.as_str(), query.region) {
            ("fail", None) => {
                failed.insert(name.clone(), Fault::Everywhere);
            }
            ("fail", Some(region)) => match failed.get_mut(&name) {
                Some(Fault::Everywhere) => {}
                Some(Fault::Regions(regions)) => {
                    regions.insert(region);
                }
                None => {
                    failed.insert(name.clone(), Fault::Regions(BTreeSet::from([region])));
                }
            },
            ("restore", None) => {
                failed.remove(&name);
            }
            ("restore", Some(region)) => match failed.get_mut(&name) {
                Some(Fault::Everywhere) => {
                    return (
                        StatusCode::CONFLICT,
                        Json(json!({"error": format!(
                            "{name} is failed for every region; restore it without ?region first"
                        )})),
                    );
                }
                Some(Fault::Regions(regions)) => {
                    regions.remove(&region);
                    if regions.is_empty() {
                        failed.remove(&name);
                    }
                }
                None => {}
            },
            (other, _) => {
                return (
                    StatusCode::NOT_FOUND,
                    Json(
                        json!({"error": format!("unknown action {other:?}; use fail or restore")}),
                    ),
                );
            }
        }
    }
    tracing::info!(backend = %name, %action, "demo backend changed");
    (StatusCode::OK, Json(faults.describe()))
}

/// A fresh directory for the demo's state (overrides, audit log, admin token).
/// Only its owner can read it (it holds the admin token); the caller removes it at exit.
pub fn state_dir() -> Result<std::path::PathBuf, DemoError> {
    use std::io::Write;
    let dir = std::env::temp_dir().join(format!("vantage-demo-{}", std::process::id()));
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder.create(&dir)?;
    let token: String = (0..32)
        .map(|_| format!("{:x}", rand::random::<u8>() % 16))
        .collect();
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    options
        .open(dir.join("admin-token"))?
        .write_all(format!("{token}\n").as_bytes())?;
    // The zone is signed online with a key made for this run.
    let key = crate::dns::dnssec::keys::generate(crate::dns::dnssec::Algorithm::EcdsaP256Sha256)
        .map_err(std::io::Error::other)?;
    options
        .open(dir.join(DEMO_KEY))?
        .write_all(key.as_bytes())?;
    Ok(dir)
}

/// The demo zone's signing key, in the state directory.
const DEMO_KEY: &str = "example.com.pem";

/// The demo's fleet settings and zone, with the backends' port, the requested listeners and
/// the state directory (overrides, audit log, admin token).
pub fn settings(
    port: u16,
    dns: SocketAddr,
    admin: SocketAddr,
    state: &Path,
) -> Result<(Settings, Vec<zones::ZoneFile>), DemoError> {
    let text = fleet_text(port, dns, admin);
    let settings = Settings::from_toml(&text, "demo fleet (embedded)", state)?;
    let mut zones = vec![zones::parse_zone(Path::new("example.com.zone"), ZONE)?];
    zones::sign(&settings.dns.dnssec, &mut zones).map_err(|e| DemoError::Signing(e.join("; ")))?;
    Ok((settings, zones))
}

/// The demo's fleet configuration with the backends' port and the listen addresses.
fn fleet_text(port: u16, dns: SocketAddr, admin: SocketAddr) -> String {
    FLEET
        .replace("port = PORT", &format!("port = {port}"))
        .replace(
            "listen = [\"127.0.0.1:5353\"]",
            &format!("listen = [\"{dns}\"]"),
        )
        .replace(
            "listen = \"127.0.0.1:8053\"",
            &format!("listen = \"{admin}\"\ntoken_file = \"admin-token\"\nstate_dir = \".\""),
        )
        .replace("DEMO_KEY", DEMO_KEY)
}

/// Writes the running demo's fleet (with the addresses it bound) and zone into its state
/// directory, for the client commands (`vantage drill --config`).
pub fn write_fleet_file(
    port: u16,
    dns: &[SocketAddr],
    admin: SocketAddr,
    state: &Path,
) -> Result<std::path::PathBuf, DemoError> {
    let dns = dns
        .first()
        .copied()
        .unwrap_or(SocketAddr::from(([127, 0, 0, 1], 5353)));
    std::fs::create_dir_all(state.join("zones"))?;
    std::fs::write(state.join("zones").join("example.com.zone"), ZONE)?;
    let file = state.join("fleet.toml");
    std::fs::write(&file, fleet_text(port, dns, admin))?;
    Ok(file)
}

/// What to try, printed when the demo starts.
pub fn instructions(port: u16, dns: &[SocketAddr], admin: SocketAddr, state: &Path) -> String {
    let d = dns
        .first()
        .copied()
        .unwrap_or(SocketAddr::from(([127, 0, 0, 1], 5353)));
    let dig = format!("dig @{} -p {} +short", d.ip(), d.port());
    let a = format!("http://{admin}");
    [
        String::new(),
        "vantage demo: three regions (us-east, eu-west, ap-south) probe three backends; quorum is 2 of 3.".into(),
        "Everything is real vantage code except the backends, which are toys:".into(),
        format!("  use1 127.0.0.2:{port} (site us-east)   euw1 127.0.0.3:{port} (eu-west)   aps1 127.0.0.4:{port} (ap-south)"),
        format!("DNS on {d} (UDP and TCP), admin on {a}"),
        String::new(),
        "Try:".into(),
        format!("  {dig} www.example.com     # failover: use1 (127.0.0.2) while it is Up"),
        format!("  {dig} api.example.com     # all: every Up backend"),
        format!("  {dig} img.example.com     # weighted 3:1:1"),
        format!(
            "  dig @{} -p {} +dnssec www.example.com   # signed online: an RRSIG with every answer",
            d.ip(),
            d.port()
        ),
        format!("  curl -s {a}/v1/status     # every answer and why, every vote"),
        String::new(),
        format!("  curl -X POST {a}/demo/backends/use1/fail      # fail use1 for every region"),
        format!("  {dig} www.example.com     # under a second later: 127.0.0.3 (euw1)"),
        format!("  curl -X POST '{a}/demo/backends/euw1/fail?region=us-east'   # one region loses sight of euw1"),
        format!("  {dig} www.example.com     # still 127.0.0.3: one region of three is no quorum"),
        format!("  curl -X POST {a}/demo/backends/use1/restore   # use1 is back after 2 good checks"),
        String::new(),
        String::new(),
        format!("Status page: {a}/     In a terminal: vantage status --admin {a}"),
        format!(
            "Drain an endpoint: vantage override --admin {a} --token-file {} drain euw1 --reason maintenance --for 10m",
            state.join("admin-token").display()
        ),
        format!(
            "Failover drill (RTO of www): vantage drill --config {} --record www.example.com",
            state.join("fleet.toml").display()
        ),
        format!(
            "DNSSEC: vantage dnssec ds --config {} example.com   # the DS a parent would hold",
            state.join("fleet.toml").display()
        ),
        format!("Metrics: curl -s {a}/metrics      Stop: Ctrl-C"),
    ]
    .join("\n")
}
