//! Loading the webhook's serving identity. Errors name the file at fault, so a broken Secret
//! mount is found from the first log line.

use std::error::Error as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use std::sync::RwLock;

use rustls::ServerConfig;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read the certificate file {}", .path.display())]
    ReadCertificate {
        path: PathBuf,
        #[source]
        source: rustls::pki_types::pem::Error,
    },
    #[error("the certificate file {} holds no PEM certificate", .path.display())]
    NoCertificate { path: PathBuf },
    #[error("cannot read a private key from {}", .path.display())]
    ReadKey {
        path: PathBuf,
        #[source]
        source: rustls::pki_types::pem::Error,
    },
    #[error("the key in {} does not belong to the certificate in {}", .key.display(), .cert.display())]
    Mismatch {
        cert: PathBuf,
        key: PathBuf,
        #[source]
        source: rustls::Error,
    },
}

/// Renders an error as a headline followed by its causes.
pub fn report(err: &TlsError) -> String {
    let mut text = err.to_string();
    let mut cause = err.source();
    while let Some(c) = cause {
        text.push_str(&format!("\n  caused by: {c}"));
        cause = c.source();
    }
    text
}

/// Builds the rustls server configuration (HTTP/2 and HTTP/1.1) from PEM files.
pub fn load_server_config(cert: &Path, key: &Path) -> Result<Arc<ServerConfig>, TlsError> {
    let identity = Arc::new(Identity::load(cert, key)?);
    Ok(server_config(identity))
}

/// The rustls configuration that serves whatever `identity` currently holds.
pub fn server_config(identity: Arc<Identity>) -> Arc<ServerConfig> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("the ring provider supports the default protocol versions")
        .with_no_client_auth()
        .with_cert_resolver(identity);
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Arc::new(config)
}

/// The serving certificate and key, read from two files and read again when they change (a
/// rotated Secret mount, cert-manager's renewal), without a restart. A pair that fails to load
/// leaves the previous one in service.
#[derive(Debug)]
pub struct Identity {
    cert: PathBuf,
    key: PathBuf,
    current: RwLock<Loaded>,
}

#[derive(Debug)]
struct Loaded {
    key: Arc<CertifiedKey>,
    files: Files,
}

impl Identity {
    pub fn load(cert: &Path, key: &Path) -> Result<Self, TlsError> {
        let (certified, files) = read_pair(cert, key)?;
        Ok(Identity {
            cert: cert.to_owned(),
            key: key.to_owned(),
            current: RwLock::new(Loaded {
                key: certified,
                files,
            }),
        })
    }

    /// Loads the files again if their contents changed. `Ok(true)` when a new pair is in service.
    pub fn reload_if_changed(&self) -> Result<bool, TlsError> {
        let read = |p: &Path| std::fs::read(p).unwrap_or_default();
        let files = (read(&self.cert), read(&self.key));
        if self
            .current
            .read()
            .is_ok_and(|current| current.files == files)
        {
            return Ok(false);
        }
        let (key, files) = read_pair(&self.cert, &self.key)?;
        if let Ok(mut current) = self.current.write() {
            *current = Loaded { key, files };
        }
        Ok(true)
    }

    pub fn cert_file(&self) -> &Path {
        &self.cert
    }
}

impl ResolvesServerCert for Identity {
    fn resolve(&self, _: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.current.read().ok().map(|current| current.key.clone())
    }
}

/// The files' contents: certificate, key.
type Files = (Vec<u8>, Vec<u8>);

fn read_pair(cert: &Path, key: &Path) -> Result<(Arc<CertifiedKey>, Files), TlsError> {
    let cert_bytes = std::fs::read(cert).map_err(|e| TlsError::ReadCertificate {
        path: cert.to_owned(),
        source: rustls::pki_types::pem::Error::Io(e),
    })?;
    let key_bytes = std::fs::read(key).map_err(|e| TlsError::ReadKey {
        path: key.to_owned(),
        source: rustls::pki_types::pem::Error::Io(e),
    })?;
    let chain = CertificateDer::pem_slice_iter(&cert_bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|source| TlsError::ReadCertificate {
            path: cert.to_owned(),
            source,
        })?;
    if chain.is_empty() {
        return Err(TlsError::NoCertificate {
            path: cert.to_owned(),
        });
    }
    let private_key =
        PrivateKeyDer::from_pem_slice(&key_bytes).map_err(|source| TlsError::ReadKey {
            path: key.to_owned(),
            source,
        })?;
    let provider = rustls::crypto::ring::default_provider();
    let certified = CertifiedKey::from_der(chain, private_key, &provider).map_err(|source| {
        TlsError::Mismatch {
            cert: cert.to_owned(),
            key: key.to_owned(),
            source,
        }
    })?;
    Ok((Arc::new(certified), (cert_bytes, key_bytes)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn identity(dir: &Path, name: &str) -> (PathBuf, PathBuf) {
        let cert = rcgen::generate_simple_self_signed(vec!["127.0.0.1".into()])
            .expect("rcgen generates a self-signed certificate");
        let cert_path = dir.join(format!("{name}.crt"));
        let key_path = dir.join(format!("{name}.key"));
        std::fs::write(&cert_path, cert.cert.pem()).expect("write cert");
        std::fs::write(&key_path, cert.signing_key.serialize_pem()).expect("write key");
        (cert_path, key_path)
    }

    #[test]
    fn a_matching_pair_loads_with_h2_and_http11() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (cert, key) = identity(dir.path(), "serving");
        let config = load_server_config(&cert, &key).expect("a matching pair loads");
        assert_eq!(
            config.alpn_protocols,
            vec![b"h2".to_vec(), b"http/1.1".to_vec()]
        );
    }

    #[test]
    fn errors_name_the_file_at_fault() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (cert, key) = identity(dir.path(), "a");
        let (_, other_key) = identity(dir.path(), "b");
        let missing = dir.path().join("missing.crt");

        let err = load_server_config(&missing, &key).expect_err("missing file");
        assert!(report(&err).contains("missing.crt"), "{}", report(&err));

        std::fs::write(dir.path().join("empty.crt"), "not pem").expect("write");
        let err = load_server_config(&dir.path().join("empty.crt"), &key).expect_err("no pem");
        assert!(matches!(err, TlsError::NoCertificate { .. }), "{err:?}");

        let err = load_server_config(&cert, &other_key).expect_err("mismatched key");
        assert!(matches!(err, TlsError::Mismatch { .. }), "{err:?}");
        assert!(report(&err).contains("b.key"), "{}", report(&err));
    }

    #[test]
    fn a_rotated_pair_is_served_and_a_broken_one_keeps_the_last_good() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (cert, key) = identity(dir.path(), "serving");
        let served = Identity::load(&cert, &key).expect("loads");
        let first = served.current.read().expect("lock").key.cert[0].clone();
        assert!(!served.reload_if_changed().expect("unchanged files"));

        let (new_cert, new_key) = identity(dir.path(), "next");
        std::fs::copy(&new_cert, &cert).expect("rotate cert");
        std::fs::copy(&new_key, &key).expect("rotate key");
        assert!(served.reload_if_changed().expect("the new pair loads"));
        let second = served.current.read().expect("lock").key.cert[0].clone();
        assert_ne!(first, second, "the rotated certificate is served");

        std::fs::write(&key, "garbage").expect("break the key");
        assert!(served.reload_if_changed().is_err());
        let still = served.current.read().expect("lock").key.cert[0].clone();
        assert_eq!(
            still, second,
            "a broken pair leaves the last good one in service"
        );
    }
}
