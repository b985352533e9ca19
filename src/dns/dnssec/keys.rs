//! DNSSEC keys: PKCS#8 PEM files (ECDSA P-256/SHA-256 or Ed25519) read into signing keys,
//! with their DNSKEY, key tag (RFC 4034 appendix B) and DS (SHA-256, RFC 4509); new keys.

use std::path::{Path, PathBuf};

use base64::{Engine, engine::general_purpose::STANDARD};
use hickory_proto::dnssec::{
    Algorithm as HickoryAlgorithm, PublicKey, SigningKey,
    crypto::{EcdsaSigningKey, Ed25519SigningKey},
};
use rustls::pki_types::{PrivatePkcs8KeyDer, pem::PemObject};

/// The signing algorithms we offer (RFC 8624: both MUST be validated by resolvers).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Algorithm {
    EcdsaP256Sha256,
    Ed25519,
}

impl Algorithm {
    pub const NAMES: [&'static str; 2] = ["ecdsap256sha256", "ed25519"];

    pub fn parse(text: &str) -> Option<Self> {
        match text.trim().to_ascii_lowercase().as_str() {
            "ecdsap256sha256" | "13" => Some(Self::EcdsaP256Sha256),
            "ed25519" | "15" => Some(Self::Ed25519),
            _ => None,
        }
    }

    /// The DNSSEC algorithm number (IANA registry).
    pub fn number(self) -> u8 {
        match self {
            Self::EcdsaP256Sha256 => 13,
            Self::Ed25519 => 15,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::EcdsaP256Sha256 => "ecdsap256sha256",
            Self::Ed25519 => "ed25519",
        }
    }
}

/// What a key signs: a CSK everything, a KSK the apex key sets (DNSKEY, CDS, CDNSKEY), a ZSK
/// the rest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Csk,
    Ksk,
    Zsk,
}

impl Role {
    pub const NAMES: [&'static str; 3] = ["csk", "ksk", "zsk"];

    pub fn parse(text: &str) -> Option<Self> {
        match text.trim().to_ascii_lowercase().as_str() {
            "csk" => Some(Self::Csk),
            "ksk" => Some(Self::Ksk),
            "zsk" => Some(Self::Zsk),
            _ => None,
        }
    }

    /// The DNSKEY flags: Zone Key, plus Secure Entry Point for a key the parent's DS points at.
    pub fn flags(self) -> u16 {
        match self {
            Self::Zsk => 256,
            Self::Csk | Self::Ksk => 257,
        }
    }

    /// True for a key that signs the apex key sets (and that the parent's DS names).
    pub fn entry_point(self) -> bool {
        self != Self::Zsk
    }

    /// True for a key that signs every other RRset.
    pub fn signs_zone(self) -> bool {
        self != Self::Ksk
    }
}

/// Whether a key signs, or is only published in the DNSKEY set (before it signs, in a
/// pre-publish rollover, or after, until signatures made with it have expired from caches).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyState {
    Active,
    Published,
}

impl KeyState {
    pub const NAMES: [&'static str; 2] = ["active", "published"];

    pub fn parse(text: &str) -> Option<Self> {
        match text.trim().to_ascii_lowercase().as_str() {
            "active" => Some(Self::Active),
            "published" => Some(Self::Published),
            _ => None,
        }
    }
}

/// One key of a zone, read from its file.
pub struct ZoneKey {
    pub file: PathBuf,
    pub role: Role,
    pub state: KeyState,
    pub algorithm: Algorithm,
    /// The DNSKEY RDATA (flags, protocol 3, algorithm, public key).
    pub dnskey: Vec<u8>,
    pub tag: u16,
    signer: Box<dyn SigningKey>,
}

impl std::fmt::Debug for ZoneKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ZoneKey")
            .field("file", &self.file)
            .field("role", &self.role)
            .field("state", &self.state)
            .field("tag", &self.tag)
            .finish()
    }
}

impl ZoneKey {
    /// Reads a PKCS#8 PEM private key of `algorithm` from `file`.
    pub fn load(
        file: &Path,
        role: Role,
        state: KeyState,
        algorithm: Algorithm,
    ) -> Result<Self, String> {
        let pem =
            std::fs::read(file).map_err(|e| format!("cannot read {}: {e}", file.display()))?;
        let signer =
            signing_key(&pem, algorithm).map_err(|e| format!("{}: {e}", file.display()))?;
        let public = signer
            .to_public_key()
            .map_err(|e| format!("{}: {e}", file.display()))?;
        let mut dnskey = Vec::with_capacity(4 + public.public_bytes().len());
        dnskey.extend_from_slice(&role.flags().to_be_bytes());
        dnskey.push(3);
        dnskey.push(algorithm.number());
        dnskey.extend_from_slice(public.public_bytes());
        Ok(Self {
            file: file.to_path_buf(),
            role,
            state,
            algorithm,
            tag: key_tag(&dnskey),
            dnskey,
            signer,
        })
    }

    /// The signature of `data` (the RRSIG RDATA before its signature, then the RRset).
    pub fn sign(&self, data: &[u8]) -> Result<Vec<u8>, String> {
        self.signer
            .sign(&hickory_proto::dnssec::TBS::from(data))
            .map_err(|e| e.to_string())
    }

    pub fn signs(&self, rtype: u16) -> bool {
        self.state == KeyState::Active
            && if super::apex_key_type(rtype) {
                self.role.entry_point()
            } else {
                self.role.signs_zone()
            }
    }
}

/// The signing key in a PKCS#8 PEM file, which must be of `algorithm`.
fn signing_key(pem: &[u8], algorithm: Algorithm) -> Result<Box<dyn SigningKey>, String> {
    let der = PrivatePkcs8KeyDer::from_pem_slice(pem)
        .map_err(|e| format!("not a PKCS#8 PEM private key (BEGIN PRIVATE KEY): {e}"))?;
    let as_ecdsa = EcdsaSigningKey::from_pkcs8(&der, HickoryAlgorithm::ECDSAP256SHA256);
    let as_ed25519 = Ed25519SigningKey::from_pkcs8(&der);
    let found = match (&as_ecdsa, &as_ed25519) {
        (Ok(_), _) => Some(Algorithm::EcdsaP256Sha256),
        (_, Ok(_)) => Some(Algorithm::Ed25519),
        _ => None,
    };
    match (found, algorithm) {
        (Some(Algorithm::EcdsaP256Sha256), Algorithm::EcdsaP256Sha256) => {
            Ok(Box::new(as_ecdsa.map_err(|e| e.to_string())?))
        }
        (Some(Algorithm::Ed25519), Algorithm::Ed25519) => {
            Ok(Box::new(as_ed25519.map_err(|e| e.to_string())?))
        }
        (Some(other), wanted) => Err(format!(
            "the key is {}, but the zone's algorithm is {}",
            other.name(),
            wanted.name()
        )),
        (None, _) => Err(format!(
            "not an {} or {} private key",
            Algorithm::NAMES[0],
            Algorithm::NAMES[1]
        )),
    }
}

/// A new private key of `algorithm`, as PKCS#8 PEM.
pub fn generate(algorithm: Algorithm) -> Result<String, String> {
    let der = match algorithm {
        Algorithm::EcdsaP256Sha256 => {
            EcdsaSigningKey::generate_pkcs8(HickoryAlgorithm::ECDSAP256SHA256)
        }
        Algorithm::Ed25519 => Ed25519SigningKey::generate_pkcs8(),
    }
    .map_err(|e| e.to_string())?;
    let body = STANDARD.encode(der.secret_pkcs8_der());
    let mut pem = String::from("-----BEGIN PRIVATE KEY-----\n");
    for line in body.as_bytes().chunks(64) {
        pem.push_str(std::str::from_utf8(line).unwrap_or_default());
        pem.push('\n');
    }
    pem.push_str("-----END PRIVATE KEY-----\n");
    Ok(pem)
}

/// The key tag of a DNSKEY RDATA (RFC 4034 appendix B).
pub fn key_tag(dnskey: &[u8]) -> u16 {
    let mut sum: u32 = 0;
    for (i, b) in dnskey.iter().enumerate() {
        sum += if i % 2 == 0 {
            u32::from(*b) << 8
        } else {
            u32::from(*b)
        };
    }
    sum += (sum >> 16) & 0xffff;
    (sum & 0xffff) as u16
}

/// The DS RDATA (digest type 2, SHA-256) of a DNSKEY at `owner` (lower-case wire form).
pub fn ds(owner: &[u8], dnskey: &[u8], algorithm: Algorithm) -> Vec<u8> {
    let mut ctx = aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA256);
    ctx.update(owner);
    ctx.update(dnskey);
    let digest = ctx.finish();
    let mut out = Vec::with_capacity(4 + 32);
    out.extend_from_slice(&key_tag(dnskey).to_be_bytes());
    out.push(algorithm.number());
    out.push(2);
    out.extend_from_slice(digest.as_ref());
    out
}

/// A DNSKEY RDATA in presentation form (as in a zone file).
pub fn dnskey_text(dnskey: &[u8]) -> String {
    format!(
        "{} {} {} {}",
        u16::from_be_bytes([dnskey[0], dnskey[1]]),
        dnskey[2],
        dnskey[3],
        STANDARD.encode(&dnskey[4..])
    )
}

/// A DS RDATA in presentation form.
pub fn ds_text(ds: &[u8]) -> String {
    format!(
        "{} {} {} {}",
        u16::from_be_bytes([ds[0], ds[1]]),
        ds[2],
        ds[3],
        ds[4..]
            .iter()
            .map(|b| format!("{b:02X}"))
            .collect::<String>()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_tag_and_ds_match_rfc_4034_section_5_4() {
        // The example of RFC 4034 section 5.4: DNSKEY of dskey.example.com, tag 60485.
        let key = STANDARD
            .decode(
                "AQOeiiR0GOMYkDshWoSKz9XzfwJr1AYtsmx3TGkJaNXVbfi/2pHm822aJ5iI9BMzNXxeYCmZDRD99WYwYqUSdjMmmAphXdvxegXd/M5+X7OrzKBaMbCVdFLUUh6DhweJBjEVv5f2wwjM9XzcnOf+EPbtG9DMBmADjFDc2w/rljwvFw==",
            )
            .expect("base64");
        let mut dnskey = vec![1, 0, 3, 5];
        dnskey.extend_from_slice(&key);
        assert_eq!(key_tag(&dnskey), 60485);
    }

    #[test]
    fn generated_keys_load_and_sign() {
        let dir = tempfile::tempdir().expect("tempdir");
        for algorithm in [Algorithm::EcdsaP256Sha256, Algorithm::Ed25519] {
            let file = dir.path().join(algorithm.name());
            std::fs::write(&file, generate(algorithm).expect("generate")).expect("write");
            let key = ZoneKey::load(&file, Role::Csk, KeyState::Active, algorithm).expect("load");
            assert_eq!(key.dnskey[3], algorithm.number());
            assert_eq!(key.tag, key_tag(&key.dnskey));
            let other = match algorithm {
                Algorithm::EcdsaP256Sha256 => Algorithm::Ed25519,
                Algorithm::Ed25519 => Algorithm::EcdsaP256Sha256,
            };
            let wrong = ZoneKey::load(&file, Role::Csk, KeyState::Active, other).unwrap_err();
            assert!(wrong.contains("the zone's algorithm is"), "{wrong}");
            let signature = key.sign(b"data").expect("sign");
            assert_eq!(signature.len(), 64);
        }
        let junk = dir.path().join("junk");
        std::fs::write(&junk, "hello").expect("write");
        let e = ZoneKey::load(&junk, Role::Csk, KeyState::Active, Algorithm::Ed25519).unwrap_err();
        assert!(e.contains("PKCS#8"), "{e}");
    }
}
