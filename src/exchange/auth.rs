//! Fleet authentication: HMAC-SHA256 with the shared secret over a timestamp, a context
//! (what is being signed) and the body. Only holders of the secret can sign; a signature is
//! checked in constant time, and one older than the allowed age is refused (replay window).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aws_lc_rs::hmac;

use crate::config::Secret;

/// Header carrying a signed report (prober -> aggregator).
pub const REPORT_HEADER: &str = "x-vantage-signature";
/// Header carrying a signed request (aggregator -> prober).
pub const REQUEST_HEADER: &str = "x-vantage-auth";
/// What a report signature covers besides the body.
pub const REPORT_CONTEXT: &str = "vantage report v1";
/// What a request signature covers.
pub const REQUEST_CONTEXT: &str = "GET /v1/observations";

/// Why a report or request was not believed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Rejection {
    #[error("not signed")]
    Unauthenticated,
    #[error("malformed signature header")]
    Malformed,
    #[error("signature does not verify (wrong fleet secret or altered content)")]
    BadSignature,
    #[error("signed too long ago or in the future")]
    Stale,
    #[error("replayed: not newer than the last report accepted from this prober")]
    Replayed,
    #[error("reports a different region than the one configured for this URL")]
    WrongRegion,
    #[error("not a valid report")]
    MalformedReport,
}

impl Rejection {
    /// A stable label for metrics.
    pub fn label(self) -> &'static str {
        match self {
            Rejection::Unauthenticated => "unauthenticated",
            Rejection::Malformed => "malformed_signature",
            Rejection::BadSignature => "bad_signature",
            Rejection::Stale => "stale",
            Rejection::Replayed => "replayed",
            Rejection::WrongRegion => "wrong_region",
            Rejection::MalformedReport => "malformed",
        }
    }
}

/// Milliseconds since the Unix epoch (wall clock; only used inside signatures).
pub fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

pub struct FleetKey {
    key: hmac::Key,
}

impl FleetKey {
    pub fn new(secret: &Secret) -> Self {
        Self {
            key: hmac::Key::new(hmac::HMAC_SHA256, secret.bytes()),
        }
    }

    fn message(at_ms: u64, context: &str, body: &[u8]) -> Vec<u8> {
        let mut m = format!("{at_ms}\n{context}\n").into_bytes();
        m.extend_from_slice(body);
        m
    }

    /// The header value `t=<unix ms>,sig=<hex>` for `body` signed at `at_ms`.
    pub fn sign(&self, at_ms: u64, context: &str, body: &[u8]) -> String {
        let tag = hmac::sign(&self.key, &Self::message(at_ms, context, body));
        format!("t={at_ms},sig={}", hex(tag.as_ref()))
    }

    /// Checks a header value; returns the signing time.
    pub fn verify(
        &self,
        header: Option<&str>,
        context: &str,
        body: &[u8],
        now_ms: u64,
        max_age: Duration,
    ) -> Result<u64, Rejection> {
        let header = header.ok_or(Rejection::Unauthenticated)?;
        let (at_ms, sig) = parse(header).ok_or(Rejection::Malformed)?;
        hmac::verify(&self.key, &Self::message(at_ms, context, body), &sig)
            .map_err(|_| Rejection::BadSignature)?;
        let max = max_age.as_millis() as u64;
        // Allow the same skew into the future as into the past.
        if at_ms + max < now_ms || at_ms > now_ms + max {
            return Err(Rejection::Stale);
        }
        Ok(at_ms)
    }
}

fn parse(header: &str) -> Option<(u64, Vec<u8>)> {
    let mut at = None;
    let mut sig = None;
    for part in header.split(',') {
        match part.trim().split_once('=') {
            Some(("t", v)) => at = v.parse().ok(),
            Some(("sig", v)) => sig = unhex(v),
            _ => return None,
        }
    }
    Some((at?, sig?))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(s: &str) -> FleetKey {
        FleetKey::new(&Secret::new(s.as_bytes()))
    }

    #[test]
    fn a_signature_verifies_only_with_the_same_secret_body_and_context() {
        let k = key("0123456789abcdef0123");
        let max = Duration::from_secs(5);
        let header = k.sign(1_000_000, REPORT_CONTEXT, b"body");
        assert_eq!(
            k.verify(Some(&header), REPORT_CONTEXT, b"body", 1_000_100, max),
            Ok(1_000_000)
        );
        assert_eq!(
            key("another secret of 20b").verify(
                Some(&header),
                REPORT_CONTEXT,
                b"body",
                1_000_100,
                max
            ),
            Err(Rejection::BadSignature)
        );
        assert_eq!(
            k.verify(Some(&header), REPORT_CONTEXT, b"bodY", 1_000_100, max),
            Err(Rejection::BadSignature)
        );
        assert_eq!(
            k.verify(Some(&header), REQUEST_CONTEXT, b"body", 1_000_100, max),
            Err(Rejection::BadSignature)
        );
        // Changing the timestamp breaks the signature too.
        let forged = header.replace("t=1000000", "t=1000900");
        assert_eq!(
            k.verify(Some(&forged), REPORT_CONTEXT, b"body", 1_000_100, max),
            Err(Rejection::BadSignature)
        );
    }

    #[test]
    fn old_missing_or_malformed_signatures_are_refused() {
        let k = key("0123456789abcdef0123");
        let max = Duration::from_secs(5);
        let header = k.sign(1_000_000, REPORT_CONTEXT, b"x");
        assert_eq!(
            k.verify(Some(&header), REPORT_CONTEXT, b"x", 1_006_000, max),
            Err(Rejection::Stale)
        );
        assert_eq!(
            k.verify(Some(&header), REPORT_CONTEXT, b"x", 994_000, max),
            Err(Rejection::Stale)
        );
        assert_eq!(
            k.verify(None, REPORT_CONTEXT, b"x", 1_000_000, max),
            Err(Rejection::Unauthenticated)
        );
        for bad in [
            "",
            "t=1",
            "sig=00",
            "t=x,sig=00",
            "t=1,sig=0g",
            "t=1,sig=abc",
            "t=1,sig=00,x=1",
        ] {
            assert_eq!(
                k.verify(Some(bad), REPORT_CONTEXT, b"x", 1, max),
                Err(Rejection::Malformed),
                "{bad:?}"
            );
        }
    }
}
