//! The service manager's notification socket (systemd's `sd_notify` protocol): a serving
//! process says `READY=1` once its listeners are bound, so that `Type=notify` units are
//! "started" only when they serve, and `STOPPING=1` when it shuts down.

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
