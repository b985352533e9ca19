//! Authoritative DNS: static zones from files plus managed records from the snapshot.
//!
//! hickory types stay inside this module. `zones` loads files, `handler` answers one zone,
//! `server` is the UDP/TCP front end.

pub mod answer_cache;
pub mod client;
pub mod handler;
pub mod harness;
pub mod query;
pub mod server;
pub mod udp;
#[cfg(target_os = "linux")]
pub mod xdp;
pub mod zones;

use std::sync::Arc;

use arc_swap::ArcSwap;
use hickory_proto::rr::{LowerName, Name, RecordType};
use hickory_server::{
    store::in_memory::InMemoryZoneHandler,
    zone_handler::{AxfrPolicy, Catalog, ZoneType},
};

use crate::{config::Problem, config::Settings, snapshot::Snapshot};
pub use zones::{ZoneError, ZoneFile};

/// The managed record kinds a query type asks for (RFC 8482: ANY gets the addresses).
pub(crate) fn managed_kinds(rtype: RecordType) -> &'static [crate::config::RecordKind] {
    use crate::config::RecordKind;
    match rtype {
        RecordType::A => &[RecordKind::A],
        RecordType::AAAA => &[RecordKind::Aaaa],
        RecordType::ANY => &[RecordKind::A, RecordKind::Aaaa],
        _ => &[],
    }
}

/// Builds the catalog of every zone, each answering its managed names from `snapshot`.
pub fn catalog(
    zones: Vec<ZoneFile>,
    snapshot: &Arc<ArcSwap<Snapshot>>,
    clients: &Arc<client::ClientRegions>,
) -> Result<Catalog, ZoneError> {
    let mut catalog = Catalog::new();
    for zone in zones {
        let file = zone.path.display().to_string();
        let origin = LowerName::new(&zone.origin);
        let static_names = zone.records.keys().map(|k| k.name.clone()).collect();
        let handler = InMemoryZoneHandler::new(
            zone.origin,
            zone.records,
            ZoneType::Primary,
            // Who may transfer is decided by the front end (dns.allow_transfer).
            AxfrPolicy::AllowAll,
        )
        .map_err(|message| ZoneError::Content { file, message })?;
        catalog.upsert(
            origin,
            vec![Arc::new(handler::ManagedZone::new(
                handler,
                static_names,
                snapshot.clone(),
                clients.clone(),
            ))],
        );
    }
    Ok(catalog)
}

/// Problems between managed records and zone files: a record outside every zone, below a
/// delegation, or at a name that holds a static CNAME.
pub fn check_records(settings: &Settings, zones: &[ZoneFile]) -> Vec<Problem> {
    let mut problems = Vec::new();
    for (i, record) in settings.records.iter().enumerate() {
        let path = format!("record[{i}].name");
        let Ok(name) = Name::from_ascii(&record.name) else {
            problems.push(Problem {
                path,
                message: format!("{} is not a DNS name", record.name),
            });
            continue;
        };
        let lower = LowerName::new(&name);
        // The most specific zone containing the name.
        let Some(zone) = zones
            .iter()
            .filter(|z| z.contains(&lower))
            .max_by_key(|z| z.origin.num_labels())
        else {
            let known: Vec<String> = zones.iter().map(|z| z.origin.to_string()).collect();
            problems.push(Problem {
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
        if zone.types_at(&lower).contains(&RecordType::CNAME) {
            problems.push(Problem {
                path: path.clone(),
                message: format!(
                    "{} has a CNAME in {}; a managed record cannot share its name",
                    record.name,
                    zone.path.display()
                ),
            });
        }
        let static_type = match record.kind {
            crate::config::RecordKind::A => RecordType::A,
            crate::config::RecordKind::Aaaa => RecordType::AAAA,
        };
        if zone.types_at(&lower).contains(&static_type) {
            problems.push(Problem {
                path: path.clone(),
                message: format!(
                    "{} already has {} records in {}; remove them there or from the configuration",
                    record.name,
                    record.kind.as_str(),
                    zone.path.display()
                ),
            });
        }
        let apex = LowerName::new(&zone.origin);
        let mut ancestor = lower.clone();
        while ancestor != apex && !ancestor.is_root() {
            if zone.types_at(&ancestor).contains(&RecordType::NS) {
                problems.push(Problem {
                    path: path.clone(),
                    message: format!(
                        "{} is below the delegation {ancestor} in {}",
                        record.name,
                        zone.path.display()
                    ),
                });
                break;
            }
            ancestor = ancestor.base_name();
        }
    }
    problems
}
