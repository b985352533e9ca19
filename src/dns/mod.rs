//! Authoritative DNS: static zones from files plus managed records from the snapshot.
//!
//! `zonefile` reads zone files and `zones` loads them into `zone` stores; `answer` decides what
//! a question gets (pure); `wire` parses queries and writes responses; `server` is the one
//! request path that UDP (`udp`, with its `answer_cache`), AF_XDP (`xdp`), TCP (`tcp`) and
//! the `harness` call; `listen` binds the addresses and starts the transports; `metrics`
//! counts responses; `dnssec` signs the answers of signed zones.

pub mod answer;
pub mod answer_cache;
pub mod client;
pub mod cookie;
pub mod dnssec;
pub mod harness;
pub mod listen;
pub mod metrics;
pub mod query;
pub mod rrl;
pub mod server;
pub mod tcp;
pub mod udp;
pub mod wire;
#[cfg(target_os = "linux")]
#[allow(unsafe_code)] // AF_XDP sockets, rings and the BPF program: raw system calls.
pub mod xdp;
pub mod zone;
pub mod zonefile;
pub mod zones;

use crate::{config::Problem, config::Settings};
pub use metrics::DnsMetrics;
pub use zones::{ZoneError, ZoneFile};

/// Problems between managed records and zone files: a record outside every zone, below a
/// delegation, or at a name that holds a static CNAME.
pub fn check_records(settings: &Settings, zones: &[ZoneFile]) -> Vec<Problem> {
    let mut problems = Vec::new();
    for (i, record) in settings.records.iter().enumerate() {
        let path = format!("record[{i}].name");
        let Some(lower) = wire::from_dotted(&record.name.to_ascii_lowercase()) else {
            problems.push(Problem {
                line: None,
                path,
                message: format!("{} is not a DNS name", record.name),
            });
            continue;
        };
        // The most specific zone containing the name.
        let Some(zone) = zones
            .iter()
            .filter(|z| z.contains(&lower))
            .max_by_key(|z| z.zone.origin().len())
        else {
            let known: Vec<String> = zones.iter().map(|z| z.origin.clone()).collect();
            problems.push(Problem {
                line: None,
                path,
                message: format!(
                    "{} is not inside any zone in the zones directory (zones: {})",
                    record.name,
                    if known.is_empty() {
                        "none".into()
                    } else {
                        known.join(", ")
                    }
                ),
            });
            continue;
        };
        if zone.types_at(&lower).contains(&wire::TYPE_CNAME) {
            problems.push(Problem {
                line: None,
                path: path.clone(),
                message: format!(
                    "{} has a CNAME in {}; a managed record cannot share its name",
                    record.name,
                    zone.path.display()
                ),
            });
        }
        let static_type = match record.kind {
            crate::config::RecordKind::A => wire::TYPE_A,
            crate::config::RecordKind::Aaaa => wire::TYPE_AAAA,
        };
        if zone.types_at(&lower).contains(&static_type) {
            problems.push(Problem {
                line: None,
                path: path.clone(),
                message: format!(
                    "{} already has {} records in {}; remove them there or from the configuration",
                    record.name,
                    record.kind.as_str(),
                    zone.path.display()
                ),
            });
        }
        if let Some(cut) = zone.zone.cut_above(&lower) {
            problems.push(Problem {
                line: None,
                path: path.clone(),
                message: format!(
                    "{} is below the delegation {} in {}",
                    record.name,
                    wire::to_text(cut),
                    zone.path.display()
                ),
            });
        }
    }
    problems
}
