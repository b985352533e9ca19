//! Fleet membership on etcd: every serving process registers itself under
//! `<prefix>members/<name>` (role, DNS and admin addresses) on a lease it keeps alive, so the
//! key disappears with the process; `vantage status --fleet` and `vantage drill` list them
//! instead of a `[[server]]` list.

use std::{net::SocketAddr, time::Duration};

use serde::{Deserialize, Serialize};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::etcd::{Etcd, EtcdError};

const MEMBERS: &str = "members/";
/// A member's key outlives a stopped process by at most this much.
const TTL: Duration = Duration::from_secs(10);

/// One serving process, as it registers itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Member {
    pub name: String,
    /// `dns` or `route53`.
    pub role: String,
    pub dns: Vec<SocketAddr>,
    /// The admin API's URL (`http://host:port/`).
    pub admin: String,
    pub version: String,
    pub started_unix_ms: u64,
}

/// The address others reach a listener at: its own, or, when it listens on every address,
/// this host's address on its default route (a pod's IP, a machine's primary address: found
/// by a route lookup, as connecting a UDP socket sends nothing); None without such a route.
pub fn advertised(addr: SocketAddr) -> Option<SocketAddr> {
    if !addr.ip().is_unspecified() {
        return Some(addr);
    }
    // Documentation addresses (RFC 5737, RFC 3849): only the route to them is looked up.
    let somewhere: SocketAddr = if addr.is_ipv4() {
        SocketAddr::from(([192, 0, 2, 1], 9))
    } else {
        SocketAddr::from(([0x2001, 0xdb8, 0, 0, 0, 0, 0, 1], 9))
    };
    let socket = std::net::UdpSocket::bind(SocketAddr::new(addr.ip(), 0)).ok()?;
    socket.connect(somewhere).ok()?;
    let ip = socket.local_addr().ok()?.ip();
    (!ip.is_unspecified()).then_some(SocketAddr::new(ip, addr.port()))
}

/// `advertised`, or this host's name with the port when it has no route.
pub fn reachable(addr: SocketAddr) -> String {
    advertised(addr).map_or_else(
        || format!("{}:{}", host_name(), addr.port()),
        |a| a.to_string(),
    )
}

/// This host's name (the kernel's), or "localhost" when it cannot be read.
pub fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "localhost".into())
}

/// Keeps `member` registered until `shutdown` (registering again after etcd comes back).
pub fn register(etcd: Etcd, member: Member, shutdown: &CancellationToken, tasks: &mut JoinSet<()>) {
    let shutdown = shutdown.clone();
    tasks.spawn(async move {
        let key = format!("{MEMBERS}{}", member.name);
        let body = serde_json::to_vec(&member).unwrap_or_default();
        loop {
            let registered = async {
                let lease = etcd.grant(TTL).await?;
                etcd.put(&key, &body, Some(lease)).await?;
                Ok::<_, EtcdError>(lease)
            };
            let lease = tokio::select! {
                r = registered => r,
                () = shutdown.cancelled() => return,
            };
            if let Ok(lease) = lease {
                loop {
                    tokio::select! {
                        () = tokio::time::sleep(TTL / 3) => {}
                        () = shutdown.cancelled() => {
                            // Leave the fleet now rather than when the lease ends.
                            let _ = etcd.revoke(lease).await;
                            return;
                        }
                    }
                    if !matches!(etcd.keepalive(lease).await, Ok(true)) {
                        break;
                    }
                }
            }
            tokio::select! {
                () = tokio::time::sleep(Duration::from_secs(1)) => {}
                () = shutdown.cancelled() => return,
            }
        }
    });
}

/// Every registered member, by name.
pub async fn list(etcd: &Etcd) -> Result<Vec<Member>, EtcdError> {
    let (kvs, _) = etcd.list(MEMBERS).await?;
    let mut members: Vec<Member> = kvs
        .into_iter()
        .filter_map(|(_, value)| serde_json::from_slice(&value).ok())
        .collect();
    members.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(members)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_listener_on_every_address_is_advertised_at_a_real_one() {
        let own: SocketAddr = "127.0.0.7:5353".parse().expect("addr");
        assert_eq!(advertised(own), Some(own));
        for any in ["0.0.0.0:5353", "[::]:5353"] {
            let any: SocketAddr = any.parse().expect("addr");
            // Without a default route there is nothing to advertise; with one, an address of
            // this host (it can be bound), with the listener's port.
            if let Some(found) = advertised(any) {
                assert!(
                    !found.ip().is_unspecified() && found.port() == 5353,
                    "{found}"
                );
                std::net::UdpSocket::bind(SocketAddr::new(found.ip(), 0))
                    .unwrap_or_else(|e| panic!("{found} is not this host's: {e}"));
                assert_eq!(reachable(any), found.to_string());
            } else {
                assert!(reachable(any).ends_with(":5353"));
            }
        }
    }
}
