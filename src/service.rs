//! The process and its service manager: the notification socket (systemd's `sd_notify`
//! protocol: `READY=1` once the listeners are bound, so that `Type=notify` units are "started"
//! only when they serve, `STOPPING=1` at shutdown) and the signals that stop the process.

/// Which signals stop the process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopOn {
    /// Serving processes: SIGINT and SIGTERM (SIGHUP reloads them).
    Terminate,
    /// Commands that hold something in place (a drill's failure): SIGHUP too, so that a lost
    /// terminal cannot leave it behind.
    TerminateOrHangup,
}

/// A future that resolves when one of the signals of `on` arrives. The signals are registered
/// when this is called, not when the future is first polled: from then on a stop signal is
/// never lost, and never kills the process before it can drain.
pub fn stop_signal(on: StopOn) -> impl std::future::Future<Output = ()> + Send + 'static {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let term = signal(SignalKind::terminate());
        let int = signal(SignalKind::interrupt());
        let hup = match on {
            StopOn::Terminate => None,
            StopOn::TerminateOrHangup => signal(SignalKind::hangup()).ok(),
        };
        async move {
            let next = |s: Option<tokio::signal::unix::Signal>| async move {
                match s {
                    Some(mut s) => {
                        s.recv().await;
                    }
                    None => std::future::pending::<()>().await,
                }
            };
            if let Err(error) = &term {
                tracing::warn!(%error, "cannot listen for SIGTERM; only SIGINT stops vantage");
            }
            tokio::select! {
                () = next(int.ok()) => {}
                () = next(term.ok()) => {}
                () = next(hup) => {}
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = on;
        async {
            if let Err(error) = tokio::signal::ctrl_c().await {
                tracing::error!(%error, "cannot listen for SIGINT; stopping");
            }
        }
    }
}

/// The signals of a serving process: stop (SIGINT, SIGTERM) and reload (SIGHUP), registered
/// before it says it is listening.
pub struct Signals {
    pub stop: std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>,
    pub hangup: Hangup,
}

impl Signals {
    pub fn register() -> Self {
        Self {
            stop: Box::pin(stop_signal(StopOn::Terminate)),
            hangup: Hangup {
                #[cfg(unix)]
                signal: tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok(),
            },
        }
    }
}

/// SIGHUP: reload.
pub struct Hangup {
    #[cfg(unix)]
    signal: Option<tokio::signal::unix::Signal>,
}

impl Hangup {
    /// Resolves at the next SIGHUP (never, where there is none).
    pub async fn next(&mut self) {
        #[cfg(unix)]
        if let Some(signal) = self.signal.as_mut() {
            if signal.recv().await.is_some() {
                return;
            }
            // The stream ended: no more SIGHUPs will come.
            self.signal = None;
        }
        std::future::pending::<()>().await;
    }
}

/// Sends `state` to `$NOTIFY_SOCKET` if the service manager gave one; does nothing otherwise.
pub fn notify(state: &str) {
    let Some(path) = std::env::var_os("NOTIFY_SOCKET") else {
        return;
    };
    if let Err(error) = send(&path, state) {
        tracing::warn!(%error, "cannot notify the service manager ({state})");
    }
}

#[cfg(target_os = "linux")]
fn send(path: &std::ffi::OsStr, state: &str) -> std::io::Result<()> {
    use std::os::{linux::net::SocketAddrExt, unix::ffi::OsStrExt, unix::net::UnixDatagram};
    let socket = UnixDatagram::unbound()?;
    let bytes = path.as_bytes();
    // A leading '@' names an abstract socket.
    let addr = match bytes.strip_prefix(b"@") {
        Some(name) => std::os::unix::net::SocketAddr::from_abstract_name(name)?,
        None => std::os::unix::net::SocketAddr::from_pathname(path)?,
    };
    socket.send_to_addr(state.as_bytes(), &addr)?;
    Ok(())
}

#[cfg(not(target_os = "linux"))]
fn send(_path: &std::ffi::OsStr, _state: &str) -> std::io::Result<()> {
    Ok(())
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    #[test]
    fn ready_reaches_the_notification_socket() {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("notify");
        let socket = std::os::unix::net::UnixDatagram::bind(&path).expect("bind");
        super::send(path.as_os_str(), "READY=1").expect("send");
        let mut buf = [0u8; 64];
        let n = socket.recv(&mut buf).expect("recv");
        assert_eq!(&buf[..n], b"READY=1");
    }
}
