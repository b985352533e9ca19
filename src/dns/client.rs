//! Where a DNS client is: the EDNS Client Subnet option (RFC 7871) if the query carries one,
//! else the resolver's source address, mapped to a region by the `client_regions` table.

use std::net::IpAddr;

use ipnet::IpNet;

use super::wire::ClientSubnet;

use crate::model::Region;

/// The `client_regions` table, most specific network first.
#[derive(Debug, Default)]
pub struct ClientRegions {
    table: Vec<(IpNet, Region)>,
}

/// The outcome of locating one query's client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Located {
    pub region: Option<Region>,
    /// The query's ECS option, if any (to be echoed with a scope).
    pub subnet: Option<ClientSubnet>,
    /// The scope prefix to echo when the answer depends on the region (RFC 7871 section 7.2.1).
    pub scope: u8,
}

impl ClientRegions {
    pub fn new(table: Vec<(IpNet, Region)>) -> Self {
        Self { table }
    }

    /// The region of a client at `source` that sent `ecs`, if any.
    pub fn locate(&self, source: IpAddr, ecs: Option<ClientSubnet>) -> Located {
        match ecs {
            Some(ecs) => self.locate_subnet(ecs),
            None => Located {
                region: self.region_of(IpNet::from(source)),
                subnet: None,
                scope: 0,
            },
        }
    }

    fn locate_subnet(&self, ecs: ClientSubnet) -> Located {
        let source = ecs.source_prefix;
        // A source prefix of 0 asks us not to use the client's address.
        let network = (source > 0)
            .then(|| IpNet::new(ecs.addr, source).ok().map(|n| n.trunc()))
            .flatten();
        let Some(network) = network else {
            return Located {
                region: None,
                subnet: Some(ecs),
                scope: 0,
            };
        };
        let matched = self
            .table
            .iter()
            .find(|(net, _)| net.prefix_len() <= network.prefix_len() && net.contains(&network));
        // The answer holds for the whole matched network, unless a more specific entry lies
        // inside the client's own network; then only for the client's network.
        let nested = self
            .table
            .iter()
            .any(|(net, _)| net.prefix_len() > network.prefix_len() && network.contains(net));
        let scope = match matched {
            Some((net, _)) if !nested => net.prefix_len(),
            _ => source,
        };
        Located {
            region: matched.map(|(_, r)| r.clone()),
            subnet: Some(ecs),
            scope,
        }
    }

    fn region_of(&self, network: IpNet) -> Option<Region> {
        let network = match network.addr() {
            // A v4-mapped v6 source address is looked up as IPv4.
            IpAddr::V6(v6) => v6
                .to_ipv4_mapped()
                .map_or(network, |v4| IpNet::from(IpAddr::V4(v4))),
            IpAddr::V4(_) => network,
        };
        self.table
            .iter()
            .find(|(net, _)| net.contains(&network))
            .map(|(_, r)| r.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table() -> ClientRegions {
        let mut t: Vec<(IpNet, Region)> = [
            ("198.51.100.0/24", "eu-west"),
            ("203.0.113.0/24", "us-east"),
            ("203.0.0.0/16", "ap-south"),
            ("2001:db8::/32", "us-east"),
        ]
        .iter()
        .map(|(n, r)| (n.parse().expect("net"), Region::new(*r)))
        .collect();
        t.sort_by_key(|entry| std::cmp::Reverse(entry.0.prefix_len()));
        ClientRegions::new(t)
    }

    fn ecs(addr: &str, prefix: u8) -> Located {
        table().locate_subnet(ClientSubnet {
            addr: addr.parse().expect("ip"),
            source_prefix: prefix,
            scope_prefix: 0,
        })
    }

    #[test]
    fn rfc7871_scope_is_the_prefix_actually_used() {
        let l = ecs("198.51.100.0", 24);
        assert_eq!(l.region, Some(Region::new("eu-west")));
        assert_eq!(l.scope, 24);
        // A /24 inside a /16 entry: the answer holds for the /16.
        let l = ecs("203.0.7.0", 24);
        assert_eq!(l.region, Some(Region::new("ap-south")));
        assert_eq!(l.scope, 16);
        // The most specific entry wins.
        let l = ecs("203.0.113.0", 24);
        assert_eq!(l.region, Some(Region::new("us-east")));
        // A client /16 that contains a more specific entry: scope is the client's /16.
        let l = ecs("203.0.0.0", 16);
        assert_eq!(l.region, Some(Region::new("ap-south")));
        assert_eq!(l.scope, 16);
        // Unknown network: no region, scope = source prefix.
        let l = ecs("192.0.2.0", 24);
        assert_eq!(l.region, None);
        assert_eq!(l.scope, 24);
        // Source prefix 0: the client's address is not to be used.
        let l = ecs("198.51.100.0", 0);
        assert_eq!((l.region, l.scope), (None, 0));
        let l = ecs("2001:db8:1::", 48);
        assert_eq!(l.region, Some(Region::new("us-east")));
        assert_eq!(l.scope, 32);
    }

    #[test]
    fn without_ecs_the_source_address_decides() {
        let t = table();
        assert_eq!(
            t.region_of(IpNet::from("198.51.100.7".parse::<IpAddr>().expect("ip"))),
            Some(Region::new("eu-west"))
        );
        assert_eq!(
            t.region_of(IpNet::from(
                "::ffff:198.51.100.7".parse::<IpAddr>().expect("ip")
            )),
            Some(Region::new("eu-west"))
        );
        assert_eq!(
            t.region_of(IpNet::from("192.0.2.1".parse::<IpAddr>().expect("ip"))),
            None
        );
    }
}
