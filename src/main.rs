//! The `vantage` command line: parse arguments, set up logging, run a role, map errors to exit codes.

use std::{net::SocketAddr, path::PathBuf, process::ExitCode, time::Duration};

use clap::{Parser, Subcommand};
use vantage::{app, demo};

#[derive(Parser)]
#[command(
    name = "vantage",
    version,
    about = "Global health-checking DNS failover controller",
    after_help = "Examples:\n  vantage demo\n  vantage check-config /etc/vantage/fleet.toml\n  vantage dns --config /etc/vantage/fleet.toml\n  vantage probe --region us-east --config /etc/vantage/fleet.toml\n  vantage status --config /etc/vantage/fleet.toml"
)]
struct Cli {
    /// Log format on stderr: text (coloured only on a terminal, never with NO_COLOR set) or
    /// json (one object per line, for journald, Loki or kubectl logs).
    #[arg(
        long,
        global = true,
        value_enum,
        env = "VANTAGE_LOG_FORMAT",
        default_value = "text"
    )]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

/// Logs to stderr at `RUST_LOG` (default info) in `format`.
fn init_logging(format: LogFormat) {
    use std::io::IsTerminal;
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Json => logs.json().flatten_event(true).init(),
        LogFormat::Text => logs
            .with_ansi(std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none())
            .init(),
    }
}

#[derive(Subcommand)]
enum Command {
    /// Run a complete local demonstration: three toy backends, three probing regions, DNS and admin.
    #[command(
        after_help = "Examples:\n  vantage demo\n  vantage demo --dns-listen 127.0.0.1:5354 --admin-listen 127.0.0.1:8054"
    )]
    Demo {
        /// DNS listen address (UDP and TCP).
        #[arg(long, default_value = "127.0.0.1:5353")]
        dns_listen: SocketAddr,
        /// Admin HTTP listen address (metrics, status, demo controls).
        #[arg(long, default_value = "127.0.0.1:8053")]
        admin_listen: SocketAddr,
    },
    /// Serve authoritative DNS for the configured zones: decide by quorum from the probers'
    /// reports (pulled from each [[prober]] url, or from probers run in this process when no
    /// prober has a url), answer, and serve the admin API.
    #[command(
        after_help = "Examples:\n  vantage dns --config /etc/vantage/fleet.toml\n  vantage --log-format json dns -c fleet.toml"
    )]
    Dns {
        /// The fleet configuration file.
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Run the prober of one region: every check, and the signed report for aggregators.
    #[command(
        after_help = "Example:\n  vantage probe --region eu-west --config /etc/vantage/fleet.toml"
    )]
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
    #[command(
        after_help = "Examples:\n  vantage route53 --config /etc/vantage/fleet.toml\n  vantage route53 --config fleet.toml --force   # approve config-driven changes the change cap holds"
    )]
    Route53 {
        /// The fleet configuration file.
        #[arg(long, short)]
        config: PathBuf,
        /// Approve this configuration's config-driven changes even when they update or delete more
        /// than max_change_fraction of the owned records (health-driven changes are never capped);
        /// the approval is kept in route53.state_dir until the configuration changes.
        #[arg(long)]
        force: bool,
    },
    /// Dry run of the Route53 reconciler: print the changes it would make. Exit 0: none, 3:
    /// changes pending, 4: some records undecided (probers unreachable; plan incomplete),
    /// 2: invalid configuration, 1: error (Route53 unreachable, no credentials, access denied).
    #[command(
        after_help = "Examples:\n  vantage plan --config fleet.toml\n  vantage plan --config fleet.toml --json | jq .zones"
    )]
    Plan {
        /// The fleet configuration file.
        #[arg(long, short)]
        config: PathBuf,
        /// Print the plan as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Force an endpoint Up or Down, or drain it, through a running vantage's admin API.
    #[command(
        after_help = "Examples:\n  vantage override --config fleet.toml drain use1 --reason \"kernel upgrade\" --for 30m\n  vantage override --admin http://10.0.0.53:8053 --token-file admin-token list --json\n  vantage override --config fleet.toml clear use1"
    )]
    Override {
        #[command(flatten)]
        admin: AdminArgs,
        #[command(subcommand)]
        command: OverrideCommand,
    },
    /// Show what every record answers and why, every endpoint's verdict and each region's
    /// vote, from a running vantage.
    #[command(
        after_help = "Examples:\n  vantage status --config fleet.toml\n  vantage status --admin http://127.0.0.1:8053 --json\n  vantage status --fleet --config fleet.toml   # every registered server side by side; exit 3 when DNS servers disagree"
    )]
    Status {
        #[command(flatten)]
        admin: AdminArgs,
        /// Print the status document (/v1/status) as JSON.
        #[arg(long)]
        json: bool,
        /// Every server registered in the fleet's etcd ([state] backend = "etcd"), side by side:
        /// reachable, ready, quorum, snapshot generation, each record's answer. Exit 3 when the
        /// DNS servers disagree on an answer.
        #[arg(long, requires = "config")]
        fleet: bool,
    },
    /// Make a running vantage re-read its configuration and zones (like SIGHUP); exit 1 if
    /// they are invalid (the running process keeps its previous configuration).
    #[command(
        after_help = "Examples:\n  vantage reload --config /etc/vantage/fleet.toml\n  vantage reload --admin http://127.0.0.1:8053 --token-file admin-token"
    )]
    Reload {
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// Fail one endpoint of a record on purpose and time detection, response and recovery on
    /// every server, then the failback; compare the RTO with the record's rto target.
    /// Exit 0: done (target met or none), 3: target missed or not recovered in time,
    /// 4: refused (the drill would cause an outage), 5: an override could not be cleared,
    /// 130: interrupted (restored), 2: bad arguments, 1: error.
    #[command(
        after_help = "Examples:\n  vantage drill --config fleet.toml --record www.example.com\n  vantage drill --config fleet.toml --record www.example.com --endpoint use1 --hold 5m --json"
    )]
    Drill {
        /// The fleet configuration file ([[server]] lists the fleet's DNS servers and reconciler).
        #[arg(long, short)]
        config: PathBuf,
        /// The managed record, e.g. www.example.com.
        #[arg(long)]
        record: String,
        /// A or AAAA, when the name has both.
        #[arg(long = "type", value_parser = ["A", "AAAA", "a", "aaaa"])]
        kind: Option<String>,
        /// The endpoint to fail (default: the one the record answers now).
        #[arg(long)]
        endpoint: Option<String>,
        /// Do not inject anything: wait for the operator to break the endpoint, then to repair it.
        #[arg(long)]
        real: bool,
        /// Keep the failure in place this long after every server has recovered, e.g. 5m.
        #[arg(long, default_value = "0s")]
        hold: String,
        /// How long to wait for each half of the drill (default: drill.timeout, 2m).
        #[arg(long)]
        timeout: Option<String>,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
        /// Who runs the drill (default: $USER).
        #[arg(long)]
        by: Option<String>,
    },
    /// Write a prober's identity: the Ed25519 key that signs its reports and, with --tls-name,
    /// a self-signed TLS certificate and key for its listener; print the [[prober]] lines.
    #[command(
        after_help = "Example:\n  vantage keygen --region eu-west --out-dir /etc/vantage/keys --tls-name 10.20.0.5"
    )]
    Keygen {
        /// The prober's region (names the files).
        #[arg(long)]
        region: String,
        /// Where to write the files (created if missing; existing files are never replaced).
        #[arg(long)]
        out_dir: PathBuf,
        /// A host name or IP address of the prober's url, for its TLS certificate (repeat for
        /// several).
        #[arg(long)]
        tls_name: Vec<String>,
    },
    /// DNSSEC keys: make one, or print the DS records a signed zone's parent needs.
    #[command(
        after_help = "Examples:\n  vantage dnssec keygen --out /etc/vantage/keys/example.com.pem\n  vantage dnssec ds --config /etc/vantage/fleet.toml example.com"
    )]
    Dnssec {
        #[command(subcommand)]
        command: DnssecCommand,
    },
    /// Validate a configuration file and the zone files it names; exit non-zero on any problem.
    #[command(
        after_help = "Examples:\n  vantage check-config --config /etc/vantage/fleet.toml\n  vantage check-config fleet.toml\n  vantage check-config --online fleet.toml   # also reach the fleet's etcd\n  vantage check-config --region us-east fleet.toml   # on us-east's prober host"
    )]
    CheckConfig {
        /// Also reach what the configuration points to: the fleet's etcd ([state]).
        #[arg(long)]
        online: bool,
        /// Also check as `vantage probe --region REGION` would start: its key and certificate
        /// must be on this host (without it, a prober's files are checked where present).
        #[arg(long)]
        region: Option<String>,
        /// The fleet configuration file (also as --config, like every other command).
        #[arg(
            required_unless_present = "config_flag",
            conflicts_with = "config_flag"
        )]
        config: Option<PathBuf>,
        /// The fleet configuration file.
        #[arg(long = "config", short = 'c', value_name = "CONFIG")]
        config_flag: Option<PathBuf>,
    },
}

#[derive(Subcommand)]
enum DnssecCommand {
    /// Write a new private key (PKCS#8 PEM, readable by its owner only) and print its DNSKEY.
    #[command(
        after_help = "Examples:\n  vantage dnssec keygen --out /etc/vantage/keys/example.com.pem\n  vantage dnssec keygen --algorithm ed25519 --out keys/example.com-ksk.pem"
    )]
    Keygen {
        /// ecdsap256sha256 (13, the default) or ed25519 (15).
        #[arg(long, default_value = "ecdsap256sha256")]
        algorithm: String,
        /// The file to write (never replaced).
        #[arg(long)]
        out: PathBuf,
    },
    /// Print the DS records (SHA-256) of a signed zone's key-signing keys, for its parent.
    #[command(
        after_help = "Example:\n  vantage dnssec ds --config /etc/vantage/fleet.toml example.com"
    )]
    Ds {
        /// The fleet configuration file.
        #[arg(long, short)]
        config: PathBuf,
        /// The zone, as written in [dns.dnssec."ZONE"].
        zone: String,
    },
}

/// How to reach a running vantage's admin API.
#[derive(clap::Args)]
struct AdminArgs {
    /// The fleet configuration (gives the admin address and token).
    #[arg(long, short)]
    config: Option<PathBuf>,
    /// The admin URL instead, e.g. http://127.0.0.1:8053.
    #[arg(long)]
    admin: Option<String>,
    /// A file holding the admin token (default: admin.token_file of the configuration).
    #[arg(long)]
    token_file: Option<PathBuf>,
}

#[derive(Subcommand)]
enum OverrideCommand {
    /// Withdraw an endpoint from answers while it is still probed.
    #[command(
        after_help = "Example:\n  vantage override --config fleet.toml drain use1 --reason \"kernel upgrade\" --for 30m"
    )]
    Drain(OverrideArgs),
    /// Force an endpoint Up.
    #[command(
        after_help = "Example:\n  vantage override --config fleet.toml up use1 --reason \"checks blocked by a firewall change\" --for 2h"
    )]
    Up(OverrideArgs),
    /// Force an endpoint Down.
    #[command(
        after_help = "Example:\n  vantage override --config fleet.toml down use1 --reason \"bad deploy\" --for 15m"
    )]
    Down(OverrideArgs),
    /// Remove an endpoint's override.
    #[command(
        after_help = "Example:\n  vantage override --config fleet.toml clear use1 --reason \"upgrade done\""
    )]
    Clear {
        /// The endpoint's name.
        endpoint: String,
        /// Why (kept in the audit trail).
        #[arg(long, default_value = "")]
        reason: String,
        /// Who (default: $USER).
        #[arg(long)]
        by: Option<String>,
    },
    /// List the overrides in force.
    #[command(after_help = "Example:\n  vantage override --config fleet.toml list --json")]
    List {
        /// Print them as JSON.
        #[arg(long)]
        json: bool,
    },
}

#[derive(clap::Args, Clone)]
struct OverrideArgs {
    /// The endpoint's name (as in /v1/status).
    endpoint: String,
    /// Why (recorded in the audit log).
    #[arg(long)]
    reason: String,
    /// How long it lasts, e.g. 30m (default 1h).
    #[arg(long = "for", default_value = "1h")]
    duration: String,
    /// Who (default: $USER).
    #[arg(long)]
    by: Option<String>,
}

/// The admin API a client command talks to; exit code 2 when it cannot be resolved.
fn admin_target(admin: &AdminArgs) -> Result<vantage::adminctl::Target, ExitCode> {
    vantage::adminctl::Target::resolve(
        admin.config.as_deref(),
        admin.admin.as_deref(),
        admin.token_file.as_deref(),
    )
    .map_err(|e| {
        eprintln!("vantage: {e}");
        ExitCode::from(2)
    })
}

/// Who acts: `--by`, else the login name ($USER, $LOGNAME), else the user id.
fn who(by: Option<String>) -> String {
    by.or_else(|| std::env::var("USER").ok())
        .or_else(|| std::env::var("LOGNAME").ok())
        .filter(|name| !name.is_empty())
        .unwrap_or_else(|| {
            std::fs::read_to_string("/proc/self/status")
                .ok()
                .and_then(|s| {
                    s.lines()
                        .find_map(|l| l.strip_prefix("Uid:"))
                        .and_then(|ids| ids.split_whitespace().next().map(str::to_string))
                })
                .map_or_else(|| "unknown".into(), |uid| format!("uid {uid}"))
        })
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.log_format);
    vantage::install_crypto_provider();

    match cli.command {
        Command::CheckConfig {
            config,
            config_flag,
            online,
            region,
        } => {
            let Some(config) = config.or(config_flag) else {
                return ExitCode::from(2);
            };
            check_config(&config, online, region.as_deref())
        }
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
            run(async move { app::run(settings, zones, Some(config), None, announce).await })
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
        Command::Keygen {
            region,
            out_dir,
            tls_name,
        } => match vantage::keygen::keygen(&out_dir, &region, &tls_name) {
            Ok(written) => {
                println!(
                    "# Add to this prober's entry in the fleet configuration; copy {} to the\n\
                     # prober's host only{}.\n{}",
                    written.key_file.display(),
                    if written.tls.is_some() {
                        ", with the TLS key; the certificate goes to every host"
                    } else {
                        ""
                    },
                    written.config_lines(&region)
                );
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("vantage keygen: {e}");
                ExitCode::FAILURE
            }
        },
        Command::Dnssec { command } => {
            let done = match command {
                DnssecCommand::Keygen { algorithm, out } => {
                    vantage::dns::dnssec::keygen_file(&algorithm, &out)
                }
                DnssecCommand::Ds { config, zone } => {
                    vantage::dns::dnssec::ds_records(&config, &zone)
                }
            };
            match done {
                Ok(text) => {
                    print!("{text}");
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("vantage dnssec: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Override { admin, command } => {
            let target = match admin_target(&admin) {
                Ok(t) => t,
                Err(code) => return code,
            };
            // Given the file (not --admin), a write also reaches the Route53 reconciler it runs.
            let beside = match (&admin.config, &admin.admin) {
                (Some(config), None) => {
                    vantage::adminctl::Target::reconciler_beside(config, &target)
                }
                _ => None,
            };
            client(async move {
                use vantage::adminctl;
                let target = &target;
                let beside = beside.as_ref();
                let set = |a: OverrideArgs, action: &'static str| async move {
                    let by = who(a.by.clone());
                    let write = |t: adminctl::Target| {
                        let (a, by) = (a.clone(), by.clone());
                        async move {
                            adminctl::set(&t, &a.endpoint, action, &a.reason, &a.duration, &by)
                                .await
                        }
                    };
                    let done = write(target.clone()).await?;
                    adminctl::also_beside(beside, done, write).await
                };
                match command {
                    OverrideCommand::Drain(a) => set(a, "drain").await,
                    OverrideCommand::Up(a) => set(a, "force_up").await,
                    OverrideCommand::Down(a) => set(a, "force_down").await,
                    OverrideCommand::Clear {
                        endpoint,
                        reason,
                        by,
                    } => {
                        let by = who(by);
                        let write = |t: adminctl::Target| {
                            let (endpoint, reason, by) =
                                (endpoint.clone(), reason.clone(), by.clone());
                            async move { adminctl::clear(&t, &endpoint, &reason, &by).await }
                        };
                        let done = write(target.clone()).await?;
                        adminctl::also_beside(beside, done, write).await
                    }
                    OverrideCommand::List { json } => adminctl::list(target, json).await,
                }
            })
        }
        Command::Reload { admin } => {
            let target = match admin_target(&admin) {
                Ok(t) => t,
                Err(code) => return code,
            };
            client(async move { vantage::adminctl::reload(&target).await })
        }
        Command::Status {
            admin,
            json,
            fleet: true,
        } => fleet_status(admin.config.as_deref(), json),
        Command::Status { admin, json, .. } => {
            let target = match admin_target(&admin) {
                Ok(t) => t,
                Err(code) => return code,
            };
            client(async move { vantage::adminctl::status(&target, json).await })
        }
        Command::Route53 { config, force } => {
            let files = vantage::config::Files::ROUTE53;
            let settings = match vantage::config::Settings::load_for(&config, files) {
                Ok(s) => s,
                Err(e) => {
                    eprintln!("{e}");
                    return ExitCode::from(2);
                }
            };
            run(async move { app::run_route53(settings, config, force, announce).await })
        }
        Command::Plan { config, json } => {
            let files = vantage::config::Files::ROUTE53;
            let settings = match vantage::config::Settings::load_for(&config, files) {
                Ok(s) => s,
                Err(e) => {
                    eprintln!("{e}");
                    return ExitCode::from(2);
                }
            };
            let Some(runtime) = runtime() else {
                return ExitCode::FAILURE;
            };
            match runtime.block_on(app::plan(settings)) {
                Ok(outcome) => {
                    if json {
                        print_out(&outcome.json.to_string());
                    } else {
                        print_out(outcome.text.trim_end());
                    }
                    // 4 first: an incomplete plan must never pass for "no changes".
                    if outcome.undecided {
                        ExitCode::from(4)
                    } else if outcome.pending {
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
        Command::Drill {
            config,
            record,
            kind,
            endpoint,
            real,
            hold,
            timeout,
            json,
            by,
        } => drill(
            &config,
            vantage::drill::Options {
                record,
                kind: kind.map(|k| {
                    if k.eq_ignore_ascii_case("AAAA") {
                        vantage::config::RecordKind::Aaaa
                    } else {
                        vantage::config::RecordKind::A
                    }
                }),
                endpoint,
                mode: if real {
                    vantage::drill::observe::Mode::Real
                } else {
                    vantage::drill::observe::Mode::Override
                },
                hold: Duration::ZERO,
                by: who(by),
            },
            &hold,
            timeout.as_deref(),
            json,
        ),
        Command::Demo {
            dns_listen,
            admin_listen,
        } => run(async move {
            let backends_stop = tokio_util::sync::CancellationToken::new();
            let backends = demo::start_backends(&backends_stop).await?;
            let state = demo::state_dir()?;
            let port = backends.port;
            let result = async {
                let (settings, zones) = demo::settings(port, dns_listen, admin_listen, &state)?;
                app::run(
                    settings,
                    zones,
                    None,
                    Some(demo::routes(backends.faults)),
                    |listening| {
                        announce(listening);
                        if let Err(error) =
                            demo::write_fleet_file(port, &listening.dns, listening.admin, &state)
                        {
                            tracing::warn!(%error, "cannot write the demo's fleet file (vantage drill)");
                        }
                        print_out(&demo::instructions(
                            port,
                            &listening.dns,
                            listening.admin,
                            &state,
                        ));
                    },
                )
                .await
            }
            .await;
            backends_stop.cancel();
            // The demo leaves nothing behind, whether it ran or failed to start.
            if let Err(error) = std::fs::remove_dir_all(&state) {
                tracing::warn!(%error, dir = %state.display(), "cannot remove the demo's state");
            }
            result
        }),
    }
}

/// `vantage drill`: see the command's help for the exit codes.
fn drill(
    config: &std::path::Path,
    mut options: vantage::drill::Options,
    hold: &str,
    timeout: Option<&str>,
    json: bool,
) -> ExitCode {
    use vantage::drill::{self, Outcome};
    let mut settings = match vantage::config::Settings::load(config) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    let duration = |flag: &str, text: &str| {
        vantage::config::parse_duration(text).map_err(|e| {
            eprintln!("vantage drill: {flag} {text:?}: {e}");
            ExitCode::from(2)
        })
    };
    options.hold = match duration("--hold", hold) {
        Ok(d) => d,
        Err(code) => return code,
    };
    if let Some(text) = timeout {
        match duration("--timeout", text) {
            Ok(d) if !d.is_zero() => settings.drill.timeout = d,
            Ok(_) => {
                eprintln!("vantage drill: --timeout must be greater than zero");
                return ExitCode::from(2);
            }
            Err(code) => return code,
        }
    }
    let Some(runtime) = runtime() else {
        return ExitCode::FAILURE;
    };
    // The signals are registered inside the runtime, before the drill starts.
    let outcome = runtime.block_on(async {
        let interrupt = vantage::service::stop_signal(vantage::service::StopOn::TerminateOrHangup);
        drill::run(settings, options, interrupt, |line| {
            // Never panic on a closed stderr: the drill must get to its cleanup.
            use std::io::Write as _;
            let _ = writeln!(std::io::stderr(), "vantage drill: {line}");
        })
        .await
    });
    match outcome {
        Ok(Outcome::Refused(problems)) => {
            eprintln!("vantage drill: refused, nothing was changed:");
            for p in problems {
                eprintln!("  {p}");
            }
            ExitCode::from(4)
        }
        Ok(Outcome::Interrupted { restored: true }) => {
            eprintln!("vantage drill: interrupted; the drill's overrides are cleared");
            ExitCode::from(130)
        }
        Ok(Outcome::Interrupted { restored: false }) => {
            eprintln!(
                "vantage drill: interrupted; some overrides could NOT be cleared: use vantage override clear"
            );
            ExitCode::from(5)
        }
        Ok(Outcome::Finished(report)) => {
            if json {
                println!("{}", report.json());
            } else {
                print!("{}", report.table());
            }
            if !report.restored {
                ExitCode::from(5)
            } else if report.aborted.is_some() || report.met() == Some(false) {
                ExitCode::from(3)
            } else {
                ExitCode::SUCCESS
            }
        }
        Err(e @ drill::DrillError::Usage(_)) => {
            eprintln!("vantage drill: {e}");
            ExitCode::from(2)
        }
        Err(e @ drill::DrillError::NotRestored(_)) => {
            eprintln!("vantage drill: {e}");
            ExitCode::from(5)
        }
        Err(e) => {
            eprintln!("vantage drill: {e}");
            ExitCode::FAILURE
        }
    }
}

/// The tokio runtime for a command; None (after saying why) if it cannot start.
fn runtime() -> Option<tokio::runtime::Runtime> {
    tokio::runtime::Runtime::new()
        .map_err(|error| eprintln!("vantage: cannot start the runtime: {error}"))
        .ok()
}

/// Runs a client command: prints its output, or the error with exit code 1.
/// `vantage check-config`: every problem (exit 2), warnings, or a one-line summary.
fn check_config(config: &std::path::Path, online: bool, region: Option<&str>) -> ExitCode {
    let checked = app::check_all(config);
    // As that region's prober would start (its own files required), beside the rest.
    let prober = region.map(|r| app::check_probe(config, r));
    let checked = match (checked, prober) {
        (Ok(loaded), None | Some(Ok(_))) => Ok(loaded),
        (Ok(_), Some(Err(problems))) => Err(problems),
        (Err(mut problems), Some(Err(more))) => {
            for p in more {
                if !problems.contains(&p) {
                    problems.push(p);
                }
            }
            Err(problems)
        }
        (Err(problems), _) => Err(problems),
    };
    match checked {
        Ok((settings, zones)) => {
            if online && let Err(problem) = reach_state(&settings) {
                eprintln!("{}: {problem}", config.display());
                return ExitCode::FAILURE;
            }
            // The server starts without a writable state directory (overrides are then
            // refused), so this is a warning, not a problem.
            if let Err(warning) = vantage::state::file::check_writable(&settings.admin.state_dir) {
                eprintln!("warning: {warning}");
            }
            for warning in settings.warnings() {
                eprintln!("warning: {warning}");
            }
            print_out(&format!(
                "{}: ok ({} probers, {} endpoints, {} records, {} zones)",
                config.display(),
                settings.regions.len(),
                settings.endpoints.len(),
                settings.records.len(),
                zones.len()
            ));
            ExitCode::SUCCESS
        }
        Err(problems) => {
            for p in problems {
                eprintln!("{p}");
            }
            ExitCode::from(2)
        }
    }
}

/// `check-config --online`: the fleet's etcd answers (and holds the prefix's keys).
fn reach_state(settings: &vantage::config::Settings) -> Result<(), String> {
    let vantage::config::StateSettings::Etcd(etcd) = &settings.state else {
        return Ok(());
    };
    let runtime = runtime().ok_or("cannot start the async runtime")?;
    runtime.block_on(async {
        let client =
            vantage::state::etcd::Etcd::from_settings(etcd).map_err(|e| format!("state: {e}"))?;
        client
            .list("members/")
            .await
            .map(drop)
            .map_err(|e| format!("state: {e}"))
    })
}

/// Writes `text` and a newline to stdout; a reader that went away (`vantage status | head -1`)
/// is not an error.
fn print_out(text: &str) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{text}").and_then(|()| out.flush());
}

/// `vantage status --fleet`: 0 when every DNS server answers the same, 3 when they disagree,
/// 2 for a bad configuration, 1 when etcd cannot be read.
fn fleet_status(config: Option<&std::path::Path>, json: bool) -> ExitCode {
    let Some(config) = config else {
        eprintln!("vantage status --fleet needs --config");
        return ExitCode::from(2);
    };
    let settings = match vantage::config::Settings::load(config) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    let vantage::config::StateSettings::Etcd(etcd) = &settings.state else {
        eprintln!(
            "vantage status --fleet: {} has no [state] backend = \"etcd\": servers register there",
            config.display()
        );
        return ExitCode::from(2);
    };
    let token = settings
        .admin
        .read_token
        .as_ref()
        .or(settings.admin.token.as_ref())
        .map(|t| String::from_utf8_lossy(t.bytes()).trim().to_string());
    let Some(runtime) = runtime() else {
        return ExitCode::FAILURE;
    };
    let outcome = runtime.block_on(async {
        let client = vantage::state::etcd::Etcd::from_settings(etcd).map_err(|e| e.to_string())?;
        let members = vantage::state::members::list(&client)
            .await
            .map_err(|e| e.to_string())?;
        if members.is_empty() {
            return Err(format!(
                "no server is registered under {} in etcd",
                etcd.prefix
            ));
        }
        vantage::adminctl::fleet_status(&members, token, json)
            .await
            .map_err(|e| e.to_string())
    });
    match outcome {
        Ok((text, disagree)) => {
            print_out(text.trim_end());
            if disagree {
                ExitCode::from(3)
            } else {
                ExitCode::SUCCESS
            }
        }
        Err(error) => {
            eprintln!("vantage: {error}");
            ExitCode::FAILURE
        }
    }
}

fn client<E: std::fmt::Display>(
    command: impl std::future::Future<Output = Result<String, E>>,
) -> ExitCode {
    let Some(runtime) = runtime() else {
        return ExitCode::FAILURE;
    };
    match runtime.block_on(command) {
        Ok(text) => {
            print_out(text.trim_end());
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("vantage: {error}");
            ExitCode::FAILURE
        }
    }
}

/// Prints where we listen as one machine-readable JSON line on stdout.
fn announce(listening: &app::Listening) {
    match serde_json::to_string(listening) {
        Ok(line) => println!("{{\"listening\":{line}}}"),
        Err(error) => tracing::error!(%error, "cannot encode the listening line"),
    }
    // A `Type=notify` systemd unit is started from here on.
    vantage::service::notify("READY=1");
}

fn run(main: impl std::future::Future<Output = anyhow::Result<()>>) -> ExitCode {
    match vantage::limits::raise_file_limit() {
        Ok((before, after)) if before != after => {
            tracing::info!(
                before,
                after,
                "raised the open-file limit to the hard limit"
            );
        }
        Ok((_, after)) => tracing::debug!(limit = after, "open-file limit"),
        Err(error) => tracing::warn!(%error, "cannot raise the open-file limit"),
    }
    let Some(runtime) = runtime() else {
        return ExitCode::FAILURE;
    };
    match runtime.block_on(main) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("vantage: {error:#}");
            ExitCode::FAILURE
        }
    }
}
