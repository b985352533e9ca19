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

/// The address others reach a listener at: its own, or this host's name when it listens on
/// every address.
pub fn reachable(addr: SocketAddr) -> String {
    if addr.ip().is_unspecified() {
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_string())
            .unwrap_or_else(|_| "localhost".into());
        format!("{host}:{}", addr.port())
    } else {
        addr.to_string()
    }
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
