//! Loading the webhook's serving identity. Errors name the file at fault, so a broken Secret
//! mount is found from the first log line.

use std::error::Error as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::ServerConfig;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

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
    let chain = CertificateDer::pem_file_iter(cert)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|source| TlsError::ReadCertificate {
            path: cert.to_owned(),
            source,
        })?;
    if chain.is_empty() {
        return Err(TlsError::NoCertificate {
            path: cert.to_owned(),
        });
    }
    let private_key = PrivateKeyDer::from_pem_file(key).map_err(|source| TlsError::ReadKey {
        path: key.to_owned(),
        source,
    })?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .and_then(|builder| {
            builder
                .with_no_client_auth()
                .with_single_cert(chain, private_key)
        })
        .map_err(|source| TlsError::Mismatch {
            cert: cert.to_owned(),
            key: key.to_owned(),
            source,
        })?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
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
}
