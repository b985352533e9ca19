//! The `vantage` command line: parse arguments, set up logging, run a role, map errors to exit codes.

use std::{net::SocketAddr, path::PathBuf, process::ExitCode};

use clap::{Parser, Subcommand};
use vantage::{app, demo};

#[derive(Parser)]
#[command(
    name = "vantage",
    version,
    about = "Global health-checking DNS failover controller"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a complete local demonstration: three toy backends, three probing regions, DNS and admin.
    Demo {
        /// DNS listen address (UDP and TCP).
        #[arg(long, default_value = "127.0.0.1:5353")]
        dns_listen: SocketAddr,
        /// Admin HTTP listen address (metrics, status, demo controls).
        #[arg(long, default_value = "127.0.0.1:8053")]
        admin_listen: SocketAddr,
    },
    /// Serve authoritative DNS for the configured zones, with one in-process prober per region.
    Dns {
        /// The fleet configuration file.
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Run the prober of one region: every check, and the signed report for aggregators.
    Probe {
        /// The region this prober reports as (one of the configured [[prober]] regions).
        #[arg(long)]
        region: String,
        /// The fleet configuration file.
        #[arg(long, short)]
        config: PathBuf,
        /// Listen address (default: the host and port of this region's prober url).
        #[arg(long)]
        listen: Option<SocketAddr>,
    },
    /// Push the answers of records with a route53 section to Route53 (only records it owns).
    Route53 {
        /// The fleet configuration file.
        #[arg(long, short)]
        config: PathBuf,
        /// Apply plans even when they change more than max_change_fraction of the owned records.
        #[arg(long)]
        force: bool,
    },
    /// Dry run of the Route53 reconciler: print the changes it would make; exit 3 if any.
    Plan {
        /// The fleet configuration file.
        #[arg(long, short)]
        config: PathBuf,
        /// Print the plan as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Validate a configuration file and the zone files it names; exit non-zero on any problem.
    CheckConfig {
        /// The fleet configuration file.
        config: PathBuf,
    },
}

fn main() -> ExitCode {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
    vantage::install_crypto_provider();
    let cli = Cli::parse();

    match cli.command {
        Command::CheckConfig { config } => match app::check(&config) {
            Ok((settings, zones)) => {
                println!(
                    "{}: ok ({} probers, {} endpoints, {} records, {} zones)",
                    config.display(),
                    settings.regions.len(),
                    settings.endpoints.len(),
                    settings.records.len(),
                    zones.len()
                );
                ExitCode::SUCCESS
            }
            Err(problems) => {
                for p in problems {
                    eprintln!("{p}");
                }
                ExitCode::from(2)
            }
        },
        Command::Dns { config } => {
            let (settings, zones) = match app::check(&config) {
                Ok(loaded) => loaded,
                Err(problems) => {
                    for p in problems {
                        eprintln!("{p}");
                    }
                    return ExitCode::from(2);
                }
            };
            run(async move { app::run(settings, zones, None, announce).await })
        }
        Command::Probe {
            region,
            config,
            listen,
        } => {
            let (settings, region) = match app::check_probe(&config, &region) {
                Ok(loaded) => loaded,
                Err(problems) => {
                    for p in problems {
                        eprintln!("{p}");
                    }
                    return ExitCode::from(2);
                }
            };
            run(async move { app::run_probe(settings, region, listen, announce).await })
        }
        Command::Route53 { config, force } => {
            let settings = match vantage::config::Settings::load(&config) {
                Ok(s) => s,
                Err(e) => {
                    eprintln!("{e}");
                    return ExitCode::from(2);
                }
            };
            run(async move { app::run_route53(settings, force, announce).await })
        }
        Command::Plan { config, json } => {
            let settings = match vantage::config::Settings::load(&config) {
                Ok(s) => s,
                Err(e) => {
                    eprintln!("{e}");
                    return ExitCode::from(2);
                }
            };
            let runtime = match tokio::runtime::Runtime::new() {
                Ok(rt) => rt,
                Err(error) => {
                    eprintln!("vantage: cannot start the runtime: {error}");
                    return ExitCode::FAILURE;
                }
            };
            match runtime.block_on(app::plan(settings)) {
                Ok(outcome) => {
                    if json {
                        println!("{}", outcome.json);
                    } else {
                        print!("{}", outcome.text);
                    }
                    if outcome.pending {
                        ExitCode::from(3)
                    } else {
                        ExitCode::SUCCESS
                    }
                }
                Err(error) => {
                    eprintln!("vantage: {error:#}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Demo {
            dns_listen,
            admin_listen,
        } => run(async move {
            let backends_stop = tokio_util::sync::CancellationToken::new();
            let backends = demo::start_backends(&backends_stop).await?;
            let (settings, zones) = demo::settings(backends.port, dns_listen, admin_listen)?;
            let port = backends.port;
            let result = app::run(
                settings,
                zones,
                Some(demo::routes(backends.faults)),
                |listening| {
                    announce(listening);
                    println!(
                        "{}",
                        demo::instructions(port, &listening.dns, listening.admin)
                    );
                },
            )
            .await;
            backends_stop.cancel();
            result
        }),
    }
}

/// Prints where we listen as one machine-readable JSON line on stdout.
fn announce(listening: &app::Listening) {
    match serde_json::to_string(listening) {
        Ok(line) => println!("{{\"listening\":{line}}}"),
        Err(error) => tracing::error!(%error, "cannot encode the listening line"),
    }
}

fn run(main: impl std::future::Future<Output = anyhow::Result<()>>) -> ExitCode {
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(error) => {
            eprintln!("vantage: cannot start the runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(main) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("vantage: {error:#}");
            ExitCode::FAILURE
        }
    }
}
