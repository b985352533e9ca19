//! Certificate verification for checks: every check verifies the chain it is shown, but the
//! signatures of a chain already verified (the same bytes, for the same name) are not checked
//! again for up to [`REUSE_FOR`]; its validity period is checked against the current time on
//! every check, and the handshake signature (the server holds the key) always is.
//!
//! So an expired, not-yet-valid or replaced certificate fails the very next check, while the
//! steady state costs one signature verification per check instead of two.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex, PoisonError},
};

use rustls::{
    DigitallySignedStruct, SignatureScheme,
    client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier},
    pki_types::{CertificateDer, ServerName, UnixTime},
};

/// A verified chain is trusted again, without its signatures checked, for this long (seconds):
/// short enough that a change of trust (a CA removed from the file, a revocation the platform
/// verifier knows about) applies within minutes.
pub const REUSE_FOR: u64 = 300;
/// At most this many chains are remembered (one per endpoint in the worst case); when full,
/// the oldest half is forgotten.
const CAPACITY: usize = 16_384;

#[derive(Debug)]
pub struct CachingVerifier {
    inner: Arc<dyn ServerCertVerifier>,
    verified: Mutex<HashMap<[u8; 32], Verified>>,
}

#[derive(Debug, Clone, Copy)]
struct Verified {
    /// When the chain's signatures were checked (Unix seconds).
    at: u64,
    /// The chain's validity: the latest notBefore and the earliest notAfter (Unix seconds).
    not_before: i64,
    not_after: i64,
}

impl CachingVerifier {
    pub fn new(inner: Arc<dyn ServerCertVerifier>) -> Self {
        Self {
            inner,
            verified: Mutex::new(HashMap::new()),
        }
    }

    /// A digest of what was verified: the name and every certificate of the chain.
    fn key(
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
    ) -> [u8; 32] {
        let mut ctx = aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA256);
        let name = server_name.to_str();
        ctx.update(&(name.len() as u64).to_be_bytes());
        ctx.update(name.as_bytes());
        for cert in std::iter::once(end_entity).chain(intermediates) {
            ctx.update(&(cert.len() as u64).to_be_bytes());
            ctx.update(cert);
        }
        let mut key = [0; 32];
        key.copy_from_slice(ctx.finish().as_ref());
        key
    }

    /// The chain's validity window, if every certificate's can be read.
    fn window(
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
    ) -> Option<(i64, i64)> {
        let mut window = (i64::MIN, i64::MAX);
        for cert in std::iter::once(end_entity).chain(intermediates) {
            let (not_before, not_after) = super::cert::validity(cert)?;
            window = (window.0.max(not_before), window.1.min(not_after));
        }
        Some(window)
    }
}

impl ServerCertVerifier for CachingVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let key = Self::key(end_entity, intermediates, server_name);
        let seconds = now.as_secs();
        let within = |v: &Verified| {
            let t = seconds as i64;
            seconds.saturating_sub(v.at) < REUSE_FOR && v.not_before <= t && t < v.not_after
        };
        let cached = self
            .verified
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&key)
            .copied();
        if cached.as_ref().is_some_and(within) {
            return Ok(ServerCertVerified::assertion());
        }
        let verified = self.inner.verify_server_cert(
            end_entity,
            intermediates,
            server_name,
            ocsp_response,
            now,
        )?;
        if let Some((not_before, not_after)) = Self::window(end_entity, intermediates) {
            let mut map = self.verified.lock().unwrap_or_else(PoisonError::into_inner);
            if map.len() >= CAPACITY {
                let mut ages: Vec<u64> = map.values().map(|v| v.at).collect();
                ages.sort_unstable();
                let median = ages[ages.len() / 2];
                map.retain(|_, v| v.at > median);
            }
            map.insert(
                key,
                Verified {
                    at: seconds,
                    not_before,
                    not_after,
                },
            );
        }
        Ok(verified)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }

    fn requires_raw_public_keys(&self) -> bool {
        self.inner.requires_raw_public_keys()
    }

    fn root_hint_subjects(&self) -> Option<&[rustls::DistinguishedName]> {
        self.inner.root_hint_subjects()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    /// Counts the chain verifications it is asked for, accepting every chain.
    #[derive(Debug, Default)]
    struct Counting(std::sync::atomic::AtomicUsize);

    impl ServerCertVerifier for Counting {
        fn verify_server_cert(
            &self,
            _: &CertificateDer<'_>,
            _: &[CertificateDer<'_>],
            _: &ServerName<'_>,
            _: &[u8],
            _: UnixTime,
        ) -> Result<ServerCertVerified, rustls::Error> {
            self.0.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            Ok(ServerCertVerified::assertion())
        }
        fn verify_tls12_signature(
            &self,
            _: &[u8],
            _: &CertificateDer<'_>,
            _: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, rustls::Error> {
            Err(rustls::Error::General("unused".into()))
        }
        fn verify_tls13_signature(
            &self,
            _: &[u8],
            _: &CertificateDer<'_>,
            _: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, rustls::Error> {
            Err(rustls::Error::General("unused".into()))
        }
        fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
            Vec::new()
        }
    }

    fn certificate(name: &str, not_before: i64, not_after: i64) -> CertificateDer<'static> {
        let mut params = rcgen::CertificateParams::new(vec![name.to_string()]).expect("params");
        params.not_before =
            rcgen::date_time_ymd(1970, 1, 1) + Duration::from_secs(not_before as u64);
        params.not_after = rcgen::date_time_ymd(1970, 1, 1) + Duration::from_secs(not_after as u64);
        let key = rcgen::KeyPair::generate().expect("key");
        params.self_signed(&key).expect("cert").der().clone()
    }

    #[test]
    fn a_chain_is_verified_again_when_it_changes_expires_or_is_old() {
        let counting = Arc::new(Counting::default());
        let verifier = CachingVerifier::new(counting.clone());
        let calls = || counting.0.load(std::sync::atomic::Ordering::Relaxed);
        let t0 = 1_800_000_000;
        let cert = certificate("app.test", t0 - 100, t0 + 1000);
        let name = ServerName::try_from("app.test").expect("name");
        let at = |t: i64| UnixTime::since_unix_epoch(Duration::from_secs(t as u64));
        let verify = |cert: &CertificateDer<'_>, name: &ServerName<'_>, t| {
            verifier.verify_server_cert(cert, &[], name, &[], at(t))
        };
        verify(&cert, &name, t0).expect("first");
        assert_eq!(calls(), 1);
        // The same chain and name soon after: its signatures are not checked again.
        verify(&cert, &name, t0 + 10).expect("again");
        assert_eq!(calls(), 1);
        // Another name, another certificate: verified.
        let other = ServerName::try_from("other.test").expect("name");
        verify(&cert, &other, t0 + 10).expect("other name");
        assert_eq!(calls(), 2);
        let replaced = certificate("app.test", t0 - 100, t0 + 1000);
        verify(&replaced, &name, t0 + 10).expect("replaced");
        assert_eq!(calls(), 3);
        // After REUSE_FOR: verified again.
        verify(&cert, &name, t0 + REUSE_FOR as i64 + 1).expect("old");
        assert_eq!(calls(), 4);
        // Expired (or not yet valid): never accepted from memory.
        verify(&cert, &name, t0 + 1000).expect("the inner verifier accepts all");
        assert_eq!(calls(), 5);
        verify(&cert, &name, t0 - 200).expect("the inner verifier accepts all");
        assert_eq!(calls(), 6);
    }
}
