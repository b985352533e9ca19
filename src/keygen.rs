//! `vantage keygen`: a prober's identity — the Ed25519 key that signs its reports and, for an
//! https prober, a self-signed TLS certificate that aggregators pin — written to files that
//! only their owner can read, with the `[[prober]]` lines that name them.

use std::{
    io::Write,
    path::{Path, PathBuf},
};

use crate::exchange::auth;

/// What `keygen` wrote.
#[derive(Debug)]
pub struct Written {
    /// The names the certificate is for (the prober's url must use one of them).
    pub tls_names: Vec<String>,
    pub key_file: PathBuf,
    pub public_key: String,
    /// The certificate and its key, with `tls_names`.
    pub tls: Option<(PathBuf, PathBuf)>,
}

impl Written {
    /// The lines to add to the prober's `[[prober]]` entry.
    pub fn config_lines(&self, region: &str) -> String {
        let mut out = format!("[[prober]]\nregion = {region:?}\n");
        if let Some(name) = self.tls_names.first() {
            let host = if name.contains(':') {
                format!("[{name}]")
            } else {
                name.clone()
            };
            out.push_str(&format!(
                "url = \"https://{host}:9443\"   # the port it listens on (--listen)\n"
            ));
        }
        out.push_str(&format!(
            "public_key = {:?}\nkey_file = {:?}\n",
            self.public_key,
            self.key_file.display().to_string()
        ));
        if let Some((cert, key)) = &self.tls {
            out.push_str(&format!(
                "tls_cert_file = {:?}\ntls_key_file = {:?}\n",
                cert.display().to_string(),
                key.display().to_string()
            ));
        }
        out
    }
}

/// Writes `<region>.key` and, when `tls_names` is not empty, `<region>-tls.crt` and
/// `<region>-tls.key` into `dir`; refuses to replace an existing file.
pub fn keygen(dir: &Path, region: &str, tls_names: &[String]) -> Result<Written, String> {
    if !crate::model::Region::valid_name(region) {
        return Err(format!(
            "--region {region:?}: use the region's name (letters, digits, '-', '_', '.')"
        ));
    }
    std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    // Absolute, so that the printed lines are right wherever the configuration lives.
    let dir = &std::fs::canonicalize(dir)
        .map_err(|e| format!("cannot resolve {}: {e}", dir.display()))?;
    let (pem, public) = auth::generate_key()?;
    let key_file = dir.join(format!("{region}.key"));
    write_new(&key_file, pem.as_bytes(), Access::Owner)?;
    let tls = if tls_names.is_empty() {
        None
    } else {
        let params = rcgen::CertificateParams::new(tls_names.to_vec())
            .map_err(|e| format!("--tls-name: {e}"))?;
        let key = rcgen::KeyPair::generate().map_err(|e| e.to_string())?;
        let cert = params.self_signed(&key).map_err(|e| e.to_string())?;
        let cert_file = dir.join(format!("{region}-tls.crt"));
        let cert_key_file = dir.join(format!("{region}-tls.key"));
        write_new(
            &cert_key_file,
            key.serialize_pem().as_bytes(),
            Access::Owner,
        )?;
        write_new(&cert_file, cert.pem().as_bytes(), Access::Everyone)?;
        Some((cert_file, cert_key_file))
    };
    Ok(Written {
        tls_names: tls_names.to_vec(),
        key_file,
        public_key: auth::public_key_text(&public.0),
        tls,
    })
}

/// Creates `path` (never replacing a file), readable by its owner only when `private`.
/// Who may read a file keygen writes.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Access {
    /// Its owner only (keys).
    Owner,
    /// Everyone (certificates).
    Everyone,
}

fn write_new(path: &Path, contents: &[u8], access: Access) -> Result<(), String> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(match access {
            Access::Owner => 0o600,
            Access::Everyone => 0o644,
        });
    }
    let mut file = options.open(path).map_err(|e| {
        if e.kind() == std::io::ErrorKind::AlreadyExists {
            format!(
                "{} exists; keygen never replaces a key (write the new one to another --out-dir to rotate)",
                path.display()
            )
        } else {
            format!("cannot create {}: {e}", path.display())
        }
    })?;
    file.write_all(contents)
        .and_then(|()| file.sync_all())
        .map_err(|e| format!("cannot write {}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_private_never_replaced_and_named_in_the_config_lines() {
        let dir = tempfile::tempdir().expect("dir");
        let written = keygen(dir.path(), "eu-west", &["127.0.0.1".into()]).expect("keygen");
        let lines = written.config_lines("eu-west");
        assert!(lines.contains(&written.public_key), "{lines}");
        assert!(lines.contains("tls_cert_file"), "{lines}");
        assert!(
            lines.contains("url = \"https://127.0.0.1:9443\""),
            "{lines}"
        );
        assert!(written.key_file.is_absolute());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = |p: &Path| std::fs::metadata(p).expect("meta").permissions().mode() & 0o777;
            assert_eq!(mode(&written.key_file), 0o600);
            let (cert, key) = written.tls.as_ref().expect("tls");
            assert_eq!(mode(key), 0o600);
            assert_eq!(mode(cert), 0o644);
        }
        let signer = auth::ReportSigner::from_pem_file(&written.key_file).expect("signer");
        assert_eq!(signer.public_key(), Some(written.public_key.clone()));
        let again = keygen(dir.path(), "eu-west", &[]).expect_err("replaced a key");
        assert!(again.contains("never replaces"), "{again}");
        assert!(keygen(dir.path(), "../x", &[]).is_err());
        assert!(keygen(dir.path(), "..", &[]).is_err());
        // Every name the configuration takes for a region gets its key.
        let dotted = keygen(dir.path(), "us.east-1_a", &[]).expect("a dotted region");
        assert!(dotted.key_file.ends_with("us.east-1_a.key"));
    }
}
