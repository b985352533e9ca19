//! One writer among replicas: a replica leads while it holds `<prefix>leader/<role>`, a key on
//! a lease it keeps alive; the others stand by and try again while the key is held. A leader
//! that cannot renew its lease steps down at once (it cannot know it still leads); on
//! shutdown it revokes the lease, so that a standby takes over without waiting for the TTL.
//! Without etcd there is one replica, and it leads.

use std::{
    sync::{
        Arc, Mutex, PoisonError,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use serde::Serialize;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::etcd::Etcd;

/// Whether this replica leads, and who does.
pub struct Leadership {
    leader: AtomicBool,
    /// Until when the lease is surely held (from the last renewal sent, a TTL minus a margin):
    /// past it this replica does not lead, whatever the renewal task is doing.
    valid_until: Mutex<Option<tokio::time::Instant>>,
    /// Counts the times this replica started leading (a new term needs a fresh look at
    /// Route53).
    term: std::sync::atomic::AtomicU64,
    name: String,
    holder: Mutex<Option<String>>,
    /// Wakes whoever waits to lead.
    pub changed: tokio::sync::Notify,
}

/// What status shows.
#[derive(Debug, Clone, Serialize)]
pub struct LeaderState {
    pub leader: bool,
    /// This replica's name.
    pub name: String,
    /// The replica that leads, when known.
    pub holder: Option<String>,
}

impl Leadership {
    /// A replica without a shared state backend: it alone writes.
    pub fn alone(name: &str) -> Arc<Self> {
        Arc::new(Self {
            leader: AtomicBool::new(true),
            valid_until: Mutex::new(None),
            term: std::sync::atomic::AtomicU64::new(1),
            name: name.to_string(),
            holder: Mutex::new(Some(name.to_string())),
            changed: tokio::sync::Notify::new(),
        })
    }

    /// Campaigns for `role` on etcd until `shutdown`; leases last `ttl`.
    pub fn campaign(
        etcd: Etcd,
        role: &str,
        name: &str,
        ttl: Duration,
        shutdown: &CancellationToken,
        tasks: &mut JoinSet<()>,
    ) -> Arc<Self> {
        let me = Arc::new(Self {
            leader: AtomicBool::new(false),
            valid_until: Mutex::new(Some(tokio::time::Instant::now())),
            term: std::sync::atomic::AtomicU64::new(0),
            name: name.to_string(),
            holder: Mutex::new(None),
            changed: tokio::sync::Notify::new(),
        });
        tasks.spawn(
            me.clone()
                .run(etcd, format!("leader/{role}"), ttl, shutdown.clone()),
        );
        me
    }

    /// Whether this replica leads now: it won the key and its lease is surely still alive.
    pub fn is_leader(&self) -> bool {
        self.leader.load(Ordering::Relaxed)
            && self
                .valid_until
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .is_none_or(|until| tokio::time::Instant::now() < until)
    }

    /// Which term of leadership this is (changes every time this replica starts leading).
    pub fn term(&self) -> u64 {
        self.term.load(Ordering::Relaxed)
    }

    /// The lease was renewed at `sent` for `ttl`.
    fn renewed(&self, sent: tokio::time::Instant, ttl: Duration) {
        *self
            .valid_until
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some(sent + ttl.mul_f64(0.8));
    }

    pub fn state(&self) -> LeaderState {
        LeaderState {
            leader: self.is_leader(),
            name: self.name.clone(),
            holder: self
                .holder
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .clone(),
        }
    }

    fn set(&self, leader: bool, holder: Option<String>) {
        let was = self.leader.swap(leader, Ordering::Relaxed);
        if leader && !was {
            self.term.fetch_add(1, Ordering::Relaxed);
        }
        *self.holder.lock().unwrap_or_else(PoisonError::into_inner) = holder.clone();
        if was != leader {
            if leader {
                tracing::info!(name = %self.name, "this replica leads: it writes");
            } else {
                tracing::warn!(name = %self.name, leader = ?holder, "this replica stands by: another one writes, or the lease could not be renewed");
            }
            self.changed.notify_waiters();
        }
    }

    async fn run(
        self: Arc<Self>,
        etcd: Etcd,
        key: String,
        ttl: Duration,
        shutdown: CancellationToken,
    ) {
        // Renew at a third of the TTL; look for a free key ten times per TTL.
        let every = ttl / 3;
        let look = ttl / 10;
        loop {
            // Try to take the key; while someone holds it, look again soon.
            let granted_at = tokio::time::Instant::now();
            let attempt = async {
                let lease = etcd.grant(ttl).await?;
                match etcd.create(&key, self.name.as_bytes(), lease).await? {
                    None => Ok::<_, super::etcd::EtcdError>(Some(lease)),
                    Some(holder) => {
                        let _ = etcd.revoke(lease).await;
                        self.set(false, Some(String::from_utf8_lossy(&holder).to_string()));
                        Ok(None)
                    }
                }
            };
            let lease = tokio::select! {
                r = attempt => r,
                () = shutdown.cancelled() => return,
            };
            match lease {
                Ok(Some(lease)) => {
                    self.renewed(granted_at, ttl);
                    self.set(true, Some(self.name.clone()));
                    // Lead while the lease is renewed.
                    loop {
                        tokio::select! {
                            () = tokio::time::sleep(every) => {}
                            () = shutdown.cancelled() => {
                                self.set(false, None);
                                if let Err(error) = etcd.revoke(lease).await {
                                    tracing::debug!(%error, "cannot hand over the leadership; it ends with the lease");
                                }
                                return;
                            }
                        }
                        // A renewal that takes longer than a third of the TTL is a failed one.
                        let sent = tokio::time::Instant::now();
                        match tokio::time::timeout(every, etcd.keepalive(lease)).await {
                            Ok(Ok(true)) => self.renewed(sent, ttl),
                            Ok(Ok(false)) => {
                                self.set(false, None);
                                break;
                            }
                            Ok(Err(error)) => {
                                tracing::error!(%error, "cannot renew the leadership lease; stepping down");
                                self.set(false, None);
                                break;
                            }
                            Err(_) => {
                                tracing::error!(
                                    "renewing the leadership lease takes too long; stepping down"
                                );
                                self.set(false, None);
                                break;
                            }
                        }
                    }
                }
                Ok(None) => {}
                Err(error) => {
                    tracing::debug!(%error, "cannot campaign for the leadership");
                    self.set(false, None);
                }
            }
            tokio::select! {
                () = tokio::time::sleep(look) => {}
                () = shutdown.cancelled() => return,
            }
        }
    }
}
