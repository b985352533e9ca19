//! A zone of ours: managed records answered from the published snapshot, in front of the
//! static records of the zone file. The query path loads the snapshot without taking a lock.

use std::{collections::HashSet, net::IpAddr, sync::Arc};

use arc_swap::ArcSwap;
use hickory_proto::rr::{
    LowerName, Name, RData, Record, RecordType, TSigResponseContext,
    rdata::{A, AAAA},
};
use hickory_server::{
    server::{Request, RequestInfo},
    store::in_memory::InMemoryZoneHandler,
    zone_handler::{
        AuthLookup, AxfrPolicy, LookupControlFlow, LookupError, LookupOptions, LookupRecords,
        ZoneHandler, ZoneTransfer, ZoneType,
    },
};
use rand::Rng;

use super::client::ClientRegions;
use crate::{
    model::Region,
    snapshot::{Answer, Snapshot, pick_weighted},
};

pub struct ManagedZone {
    origin: LowerName,
    file: InMemoryZoneHandler,
    /// Names that own records in the zone file.
    static_names: HashSet<LowerName>,
    /// Every node of the zone file's tree: its names and their ancestors (empty non-terminals).
    static_nodes: HashSet<LowerName>,
    snapshot: Arc<ArcSwap<Snapshot>>,
    clients: Arc<ClientRegions>,
}

impl ManagedZone {
    pub fn new(
        file: InMemoryZoneHandler,
        static_names: HashSet<LowerName>,
        snapshot: Arc<ArcSwap<Snapshot>>,
        clients: Arc<ClientRegions>,
    ) -> Self {
        let origin = file.origin().clone();
        let mut static_nodes = HashSet::new();
        for name in &static_names {
            let mut node: LowerName = name.clone();
            while origin.zone_of(&node) && static_nodes.insert(node.clone()) && node != origin {
                node = node.base_name();
            }
        }
        Self {
            origin,
            file,
            static_names,
            static_nodes,
            snapshot,
            clients,
        }
    }

    /// True if a wildcard of the zone file covers `name` (RFC 4592 section 3.3.1): the source of
    /// synthesis `*.<closest encloser>` exists.
    fn wildcard_covers(&self, name: &LowerName) -> bool {
        let mut ancestor = name.base_name();
        loop {
            if self.static_nodes.contains(&ancestor) {
                return Name::from(&ancestor)
                    .prepend_label("*")
                    .is_ok_and(|w| self.static_names.contains(&LowerName::new(&w)));
            }
            if ancestor == self.origin || ancestor.is_root() {
                return false;
            }
            ancestor = ancestor.base_name();
        }
    }

    /// The zone file's answer for a name that exists because of managed records: the file's
    /// own data if it has the name, otherwise NODATA (never NXDOMAIN, never a wildcard: RFC 4592
    /// wildcards do not apply to names that exist).
    async fn static_at_existing(
        &self,
        name: &LowerName,
        rtype: RecordType,
        request_info: Option<&RequestInfo<'_>>,
        options: LookupOptions,
    ) -> LookupControlFlow<AuthLookup> {
        if !self.static_names.contains(name) {
            return LookupControlFlow::Continue(Err(LookupError::NameExists));
        }
        match self.file.lookup(name, rtype, request_info, options).await {
            LookupControlFlow::Continue(Err(e)) if e.is_nx_domain() => {
                LookupControlFlow::Continue(Err(LookupError::NameExists))
            }
            other => other,
        }
    }

    /// The answer for a managed name, or None when `name` is not managed (static data applies).
    /// `client` is the client's region, for latency-steered records.
    async fn managed(
        &self,
        name: &LowerName,
        owner: &Name,
        rtype: RecordType,
        client: Option<&Region>,
        request_info: Option<&RequestInfo<'_>>,
        options: LookupOptions,
    ) -> Option<LookupControlFlow<AuthLookup>> {
        let snapshot = self.snapshot.load();
        let key = name.to_string();
        if !snapshot.names.contains(&key) {
            if snapshot.ancestors.contains(&key) {
                // An empty non-terminal (or a static name) above a managed name.
                return Some(
                    self.static_at_existing(name, rtype, request_info, options)
                        .await,
                );
            }
            return None;
        }
        let kinds = super::managed_kinds(rtype);
        let mut records = Vec::new();
        let mut found = false;
        for kind in kinds {
            let Some(answer) = snapshot.records.get(&(key.clone(), *kind)) else {
                continue;
            };
            found = true;
            let ips = match &answer.answer {
                // The front end answers SERVFAIL before we get here; never guess.
                Answer::NotReady => {
                    return Some(LookupControlFlow::Break(Err(LookupError::from(
                        hickory_proto::op::ResponseCode::ServFail,
                    ))));
                }
                Answer::Fixed(ips) => ips.clone(),
                Answer::Weighted(choices) => pick_weighted(choices, rand::rng().random())
                    .into_iter()
                    .collect(),
                Answer::ByRegion { regions, default } => client
                    .and_then(|r| regions.get(r))
                    .unwrap_or(default)
                    .clone(),
            };
            records.extend(
                ips.into_iter()
                    .map(|ip| address_record(owner, answer.ttl, ip)),
            );
        }
        if found && !records.is_empty() {
            return Some(LookupControlFlow::Continue(Ok(AuthLookup::answers(
                LookupRecords::Section(records),
                None,
            ))));
        }
        if found || rtype == RecordType::ANY {
            // The name exists; no address to give (NODATA, with the SOA added by the catalog).
            return Some(LookupControlFlow::Continue(Err(LookupError::NameExists)));
        }
        // Another type at a managed name: static data of that type, else NODATA.
        Some(
            self.static_at_existing(name, rtype, request_info, options)
                .await,
        )
    }
}

/// Answers keep the query's spelling of the name (0x20): records owned by the queried name are
/// renamed to the query's original case.
fn with_query_case(
    found: LookupControlFlow<AuthLookup>,
    name: &LowerName,
    owner: &Name,
) -> LookupControlFlow<AuthLookup> {
    let rename = |mut found: AuthLookup| {
        let additionals = found.take_additionals();
        let records: Vec<Record> = found
            .iter()
            .map(|r| {
                let mut r = r.clone();
                if LowerName::new(&r.name) == *name {
                    r.name = owner.clone();
                }
                r
            })
            .collect();
        AuthLookup::answers(LookupRecords::Section(records), additionals)
    };
    match found {
        LookupControlFlow::Continue(Ok(f)) if !f.is_empty() => {
            LookupControlFlow::Continue(Ok(rename(f)))
        }
        LookupControlFlow::Break(Ok(f)) if !f.is_empty() => LookupControlFlow::Break(Ok(rename(f))),
        other => other,
    }
}

fn address_record(owner: &Name, ttl: u32, ip: IpAddr) -> Record {
    let rdata = match ip {
        IpAddr::V4(v4) => RData::A(A(v4)),
        IpAddr::V6(v6) => RData::AAAA(AAAA(v6)),
    };
    Record::from_rdata(owner.clone(), ttl, rdata)
}

#[async_trait::async_trait]
impl ZoneHandler for ManagedZone {
    fn zone_type(&self) -> ZoneType {
        ZoneType::Primary
    }

    fn axfr_policy(&self) -> AxfrPolicy {
        self.file.axfr_policy()
    }

    fn origin(&self) -> &LowerName {
        &self.origin
    }

    async fn lookup(
        &self,
        name: &LowerName,
        rtype: RecordType,
        request_info: Option<&RequestInfo<'_>>,
        options: LookupOptions,
    ) -> LookupControlFlow<AuthLookup> {
        // The catalog asks for the SOA without a request only to put it in the authority
        // section of a negative answer: its TTL is then min(TTL, MINIMUM) (RFC 2308 section 3).
        if rtype == RecordType::SOA && name == &self.origin && request_info.is_none() {
            return match self.file.lookup(name, rtype, None, options).await {
                LookupControlFlow::Continue(Ok(found)) => {
                    let records = found
                        .iter()
                        .map(|r| {
                            let mut r = r.clone();
                            if let RData::SOA(soa) = &r.data {
                                r.ttl = r.ttl.min(soa.minimum);
                            }
                            r
                        })
                        .collect();
                    LookupControlFlow::Continue(Ok(AuthLookup::answers(
                        LookupRecords::Section(records),
                        None,
                    )))
                }
                other => other,
            };
        }
        let owner = Name::from(name);
        if let Some(answer) = self
            .managed(name, &owner, rtype, None, request_info, options)
            .await
        {
            return answer;
        }
        self.file.lookup(name, rtype, request_info, options).await
    }

    async fn search(
        &self,
        request: &Request,
        options: LookupOptions,
    ) -> (LookupControlFlow<AuthLookup>, Option<TSigResponseContext>) {
        let info = match request.request_info() {
            Ok(info) => info,
            Err(e) => return (LookupControlFlow::Break(Err(e)), None),
        };
        let query = info.query;
        // Keep the query's spelling of the name (0x20 case randomisation) in managed answers.
        let owner = query.original().name().clone();
        let client = self.clients.locate(request).region;
        match self
            .managed(
                query.name(),
                &owner,
                query.query_type(),
                client.as_ref(),
                Some(&info),
                options,
            )
            .await
        {
            Some(answer) => (answer, None),
            None => {
                let (found, signer) = self.file.search(request, options).await;
                let found = match found {
                    // RFC 4592: a name covered by a wildcard exists; another type is NODATA.
                    LookupControlFlow::Continue(Err(e))
                        if e.is_nx_domain() && self.wildcard_covers(query.name()) =>
                    {
                        LookupControlFlow::Continue(Err(LookupError::NameExists))
                    }
                    other => other,
                };
                (with_query_case(found, query.name(), &owner), signer)
            }
        }
    }

    async fn nsec_records(
        &self,
        name: &LowerName,
        options: LookupOptions,
    ) -> LookupControlFlow<AuthLookup> {
        self.file.nsec_records(name, options).await
    }

    async fn zone_transfer(
        &self,
        request: &Request,
        options: LookupOptions,
        now: u64,
    ) -> Option<(
        Result<ZoneTransfer, LookupError>,
        Option<TSigResponseContext>,
    )> {
        self.file.zone_transfer(request, options, now).await
    }
}
