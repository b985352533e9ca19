//! Fleet authentication. Requests for reports carry HMAC-SHA256 with the shared fleet secret;
//! reports are signed by each prober with its own Ed25519 key (or, in a fleet without prober
//! keys, with the fleet secret too). A signature covers a timestamp, a context (what is being
//! signed) and the body; one older than the allowed age is refused (replay window). With
//! prober keys, a stolen key is one region's vote and the fleet secret is none.

use std::time::Duration;

use aws_lc_rs::{
    hmac,
    signature::{self, Ed25519KeyPair, KeyPair},
};

use crate::config::Secret;

/// Header carrying a signed report (prober -> aggregator).
pub const REPORT_HEADER: &str = "x-vantage-signature";
/// Header carrying a signed request (aggregator -> prober).
pub const REQUEST_HEADER: &str = "x-vantage-auth";
/// Header on a refused observations request: why (a `Rejection` label).
pub const REFUSED_HEADER: &str = "x-vantage-refused";
/// What a report signature covers besides the body.
pub const REPORT_CONTEXT: &str = "vantage report v1";
/// What a request signature covers.
pub const REQUEST_CONTEXT: &str = "GET /v1/observations";
/// What an aggregator signs to ask for observations: the path, and the query when there is
/// one (a long poll's `wait`, `after` and `boot`).
pub fn request_context(query: Option<&str>) -> String {
    match query {
        Some(q) => format!("{REQUEST_CONTEXT}?{q}"),
        None => REQUEST_CONTEXT.to_string(),
    }
}

/// What an aggregator signs to ask a prober to check endpoints now (with the request body).
pub const ASK_CONTEXT: &str = "POST /v1/check";

/// Why a report or request was not believed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Rejection {
    #[error("not signed")]
    Unauthenticated,
    #[error("malformed signature header")]
    Malformed,
    #[error("signature does not verify (wrong fleet secret or prober key, or altered content)")]
    BadSignature,
    #[error("signed too long ago or in the future")]
    Stale,
    #[error("replayed: not newer than the last report accepted from this prober")]
    Replayed,
    #[error("reports a different region than the one configured for this URL")]
    WrongRegion,
    #[error("not a valid report")]
    MalformedReport,
    #[error(
        "the prober refused our request as signed too long ago or in the future: the clocks of this server and the prober differ by more than stale_after"
    )]
    RefusedStale,
    #[error(
        "the prober refused our request: it does not hold the same fleet secret (cluster.token_file)"
    )]
    RefusedSignature,
}

impl Rejection {
    pub const ALL: [Rejection; 9] = [
        Rejection::Unauthenticated,
        Rejection::Malformed,
        Rejection::BadSignature,
        Rejection::Stale,
        Rejection::Replayed,
        Rejection::WrongRegion,
        Rejection::MalformedReport,
        Rejection::RefusedStale,
        Rejection::RefusedSignature,
    ];

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
            Rejection::RefusedStale => "refused_by_prober_stale",
            Rejection::RefusedSignature => "refused_by_prober_signature",
        }
    }

    /// The prober's side of a refused request, from the label it sends back
    /// (`REFUSED_HEADER`), so that a skewed clock shows as such on the aggregator.
    pub fn refused_by_prober(label: Option<&str>) -> Rejection {
        match label {
            Some("stale") => Rejection::RefusedStale,
            _ => Rejection::RefusedSignature,
        }
    }
}

/// The wall clock signatures carry (see `crate::clock`).
pub use crate::clock::unix_ms;

pub struct FleetKey {
    key: hmac::Key,
}

impl FleetKey {
    pub fn new(secret: &Secret) -> Self {
        Self {
            key: hmac::Key::new(hmac::HMAC_SHA256, secret.bytes()),
        }
    }

    /// The header value `t=<unix ms>,sig=<hex>` for `body` signed at `at_ms`.
    pub fn sign(&self, at_ms: u64, context: &str, body: &[u8]) -> String {
        let tag = hmac::sign(&self.key, &message(at_ms, context, body));
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
        let (at_ms, sig) = parse(header, "sig").ok_or(Rejection::Malformed)?;
        hmac::verify(&self.key, &message(at_ms, context, body), &sig)
            .map_err(|_| Rejection::BadSignature)?;
        fresh(at_ms, now_ms, max_age)
    }
}

/// What a signature covers.
fn message(at_ms: u64, context: &str, body: &[u8]) -> Vec<u8> {
    let mut m = format!("{at_ms}\n{context}\n").into_bytes();
    m.extend_from_slice(body);
    m
}

/// `at_ms` if it is within `max_age` of `now_ms`, either way (the same skew into the future
/// as into the past).
fn fresh(at_ms: u64, now_ms: u64, max_age: Duration) -> Result<u64, Rejection> {
    let max = max_age.as_millis() as u64;
    if at_ms.saturating_add(max) < now_ms || at_ms > now_ms.saturating_add(max) {
        return Err(Rejection::Stale);
    }
    Ok(at_ms)
}

/// How a prober signs its reports: with its own Ed25519 key, or with the fleet secret in a
/// fleet without prober keys.
pub enum ReportSigner {
    Own(Ed25519KeyPair),
    Fleet(std::sync::Arc<FleetKey>),
}

impl ReportSigner {
    /// Reads a PKCS#8 PEM Ed25519 private key (as written by `vantage keygen`).
    pub fn from_pem_file(path: &std::path::Path) -> Result<Self, String> {
        let pem =
            std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        use rustls::pki_types::{PrivatePkcs8KeyDer, pem::PemObject};
        let der = PrivatePkcs8KeyDer::from_pem_slice(&pem).map_err(|_| {
            format!(
                "{}: not a PEM private key (-----BEGIN PRIVATE KEY-----); write one with `vantage keygen`",
                path.display()
            )
        })?;
        let der = der.secret_pkcs8_der();
        Ed25519KeyPair::from_pkcs8(der)
            .or_else(|_| Ed25519KeyPair::from_pkcs8_maybe_unchecked(der))
            .map(ReportSigner::Own)
            .map_err(|e| format!("{}: not an Ed25519 private key: {e}", path.display()))
    }

    /// The header value for `body` signed at `at_ms`: `t=<ms>,ed25519=<hex>` or `t=<ms>,sig=<hex>`.
    pub fn sign(&self, at_ms: u64, body: &[u8]) -> String {
        match self {
            ReportSigner::Own(pair) => {
                let sig = pair.sign(&message(at_ms, REPORT_CONTEXT, body));
                format!("t={at_ms},ed25519={}", hex(sig.as_ref()))
            }
            ReportSigner::Fleet(key) => key.sign(at_ms, REPORT_CONTEXT, body),
        }
    }

    /// The public key (Ed25519 signers only), in the configuration's text form.
    pub fn public_key(&self) -> Option<String> {
        match self {
            ReportSigner::Own(pair) => Some(public_key_text(pair.public_key().as_ref())),
            ReportSigner::Fleet(_) => None,
        }
    }
}

/// How an aggregator checks one region's reports: against that prober's public keys (several
/// during a key rotation), or the fleet secret in a fleet without prober keys.
pub enum ReportVerifier {
    Keys(Vec<PublicKey>),
    Fleet(std::sync::Arc<FleetKey>),
}

impl ReportVerifier {
    /// Checks a report's signature header; returns the signing time.
    pub fn verify(
        &self,
        header: Option<&str>,
        body: &[u8],
        now_ms: u64,
        max_age: Duration,
    ) -> Result<u64, Rejection> {
        match self {
            ReportVerifier::Fleet(key) => key.verify(header, REPORT_CONTEXT, body, now_ms, max_age),
            ReportVerifier::Keys(keys) => {
                let header = header.ok_or(Rejection::Unauthenticated)?;
                let (at_ms, sig) = parse(header, "ed25519").ok_or(Rejection::Malformed)?;
                let signed = message(at_ms, REPORT_CONTEXT, body);
                if !keys.iter().any(|k| {
                    signature::UnparsedPublicKey::new(&signature::ED25519, &k.0)
                        .verify(&signed, &sig)
                        .is_ok()
                }) {
                    return Err(Rejection::BadSignature);
                }
                fresh(at_ms, now_ms, max_age)
            }
        }
    }
}

/// A prober's Ed25519 public key.
#[derive(Clone, PartialEq, Eq)]
pub struct PublicKey(pub [u8; 32]);

impl std::fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&public_key_text(&self.0))
    }
}

const PUBLIC_KEY_PREFIX: &str = "ed25519:";

/// `ed25519:<64 hex digits>`, the form of `public_key` in the configuration.
pub fn public_key_text(key: &[u8]) -> String {
    format!("{PUBLIC_KEY_PREFIX}{}", hex(key))
}

impl std::str::FromStr for PublicKey {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let digits = text.trim().strip_prefix(PUBLIC_KEY_PREFIX).ok_or_else(|| {
            format!("{text:?} is not a public key: expected \"ed25519:\" and 64 hex digits (printed by `vantage keygen`)")
        })?;
        unhex(digits)
            .and_then(|bytes| <[u8; 32]>::try_from(bytes).ok())
            .map(PublicKey)
            .ok_or_else(|| {
                format!("{text:?} is not a public key: expected \"ed25519:\" and 64 hex digits")
            })
    }
}

/// A new Ed25519 private key as PKCS#8 PEM, and its public key.
pub fn generate_key() -> Result<(String, PublicKey), String> {
    let pair = rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519).map_err(|e| e.to_string())?;
    let public = <[u8; 32]>::try_from(pair.public_key_raw())
        .map_err(|_| "unexpected Ed25519 public key length".to_string())?;
    Ok((pair.serialize_pem(), PublicKey(public)))
}

/// `t=<ms>,<name>=<hex>`.
fn parse(header: &str, name: &str) -> Option<(u64, Vec<u8>)> {
    let mut at = None;
    let mut sig = None;
    for part in header.split(',') {
        match part.trim().split_once('=') {
            Some(("t", v)) => at = v.parse().ok(),
            Some((n, v)) if n == name => sig = unhex(v),
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
    fn a_report_verifies_only_with_the_prober_s_own_key() {
        let max = Duration::from_secs(5);
        let (pem_a, public_a) = generate_key().expect("key");
        let (pem_b, public_b) = generate_key().expect("key");
        let dir = tempfile::tempdir().expect("dir");
        let (file_a, file_b) = (dir.path().join("a.key"), dir.path().join("b.key"));
        std::fs::write(&file_a, pem_a).expect("write");
        std::fs::write(&file_b, pem_b).expect("write");
        let a = ReportSigner::from_pem_file(&file_a).expect("a");
        let b = ReportSigner::from_pem_file(&file_b).expect("b");
        assert_eq!(a.public_key(), Some(public_key_text(&public_a.0)));
        let header = a.sign(1_000_000, b"body");
        let only_a = ReportVerifier::Keys(vec![public_a.clone()]);
        assert_eq!(
            only_a.verify(Some(&header), b"body", 1_000_100, max),
            Ok(1_000_000)
        );
        // Another prober's key, the fleet secret, an altered body or time: refused.
        assert_eq!(
            only_a.verify(Some(&b.sign(1_000_000, b"body")), b"body", 1_000_100, max),
            Err(Rejection::BadSignature)
        );
        let fleet = key("0123456789abcdef0123");
        assert_eq!(
            only_a.verify(
                Some(&fleet.sign(1_000_000, REPORT_CONTEXT, b"body")),
                b"body",
                1_000_100,
                max
            ),
            Err(Rejection::Malformed)
        );
        assert_eq!(
            only_a.verify(Some(&header), b"bodY", 1_000_100, max),
            Err(Rejection::BadSignature)
        );
        assert_eq!(
            only_a.verify(
                Some(&header.replace("t=1000000", "t=1000001")),
                b"body",
                1_000_100,
                max
            ),
            Err(Rejection::BadSignature)
        );
        assert_eq!(
            only_a.verify(Some(&header), b"body", 1_010_000, max),
            Err(Rejection::Stale)
        );
        // During a rotation both the old and the new key verify.
        let rotating = ReportVerifier::Keys(vec![public_b, public_a]);
        assert_eq!(
            rotating.verify(Some(&header), b"body", 1_000_100, max),
            Ok(1_000_000)
        );
    }

    #[test]
    fn public_keys_and_pem_round_trip() {
        let (pem, public) = generate_key().expect("key");
        assert!(pem.starts_with("-----BEGIN PRIVATE KEY-----\n"));
        let text = public_key_text(&public.0);
        assert_eq!(text.parse::<PublicKey>(), Ok(public));
        for bad in [
            "",
            "ed25519:",
            "ed25519:00",
            "rsa:00",
            &text[..text.len() - 1],
            &format!("{text}00"),
        ] {
            assert!(bad.parse::<PublicKey>().is_err(), "{bad:?}");
        }
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
