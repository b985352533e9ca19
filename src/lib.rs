//! vantage: a global health-checking DNS failover controller.
//!
//! Data flow: check result -> threshold -> observation -> exchange -> quorum -> verdicts ->
//! snapshot -> atomic swap -> DNS answers. See ARCHITECTURE.md for the map.

// Unsafe code only where the platform offers no safe API, each place allowed by name: the
// AF_XDP path (`dns::xdp`), open-file limits (`limits`), and returning freed memory
// (`dns::server::release`).
#![deny(unsafe_code)]

pub mod admin;
pub mod adminctl;
pub mod aggregator;
pub mod app;
pub mod clock;
pub mod config;
pub mod demo;
pub mod dns;
pub mod drill;
pub mod exchange;
pub mod http;
pub mod keygen;
pub mod limits;
pub mod metrics;
pub mod model;
pub mod probe;
pub mod quorum;
pub mod route53;
pub mod service;
pub mod snapshot;
pub mod state;

/// Installs the process-wide TLS crypto provider (aws-lc-rs). Call once at start.
pub fn install_crypto_provider() {
    // Err means a provider is already installed, which is what we want.
    if rustls::crypto::aws_lc_rs::default_provider()
        .install_default()
        .is_err()
    {
        tracing::debug!("a TLS crypto provider was already installed");
    }
}

/// An error and its causes on one line ("a: b: c"), skipping causes already in the text.
pub fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(e) = source {
        let s = e.to_string();
        if !text.contains(&s) {
            text.push_str(": ");
            text.push_str(&s);
        }
        source = e.source();
    }
    text
}

/// Replaces `file` with `bytes` all at once: written beside it, flushed to disk, renamed over
/// it (a crash leaves the old file or the new one, never half of one).
pub(crate) fn write_atomically(file: &std::path::Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let mut tmp = file.as_os_str().to_owned();
    tmp.push(".tmp");
    let mut f = std::fs::File::create(&tmp)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    std::fs::rename(&tmp, file)
}
