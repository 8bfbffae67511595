//! Loading the webhook's serving identity. Errors name the file at fault, so a broken Secret
//! mount is found from the first log line.

use std::error::Error as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use std::sync::RwLock;

use rustls::ServerConfig;
use rustls::client::danger::HandshakeSignatureValid;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
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
    Ok(server_config(identity, None))
}

/// The rustls configuration that serves whatever `identity` currently holds. With `clients`, a
/// client may present a certificate, which must chain to their CA (a certificate from another CA,
/// expired, or not for client authentication fails the handshake); one that presents none still
/// connects, for the probes and metrics, and [`ClientAuth::admits`] decides whether a connection
/// may send reviews.
pub fn server_config(identity: Arc<Identity>, clients: Option<&ClientAuth>) -> Arc<ServerConfig> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("the ring provider supports the default protocol versions");
    let builder = match clients {
        None => builder.with_no_client_auth(),
        Some(clients) => builder.with_client_cert_verifier(clients.verifier.clone()),
    };
    let mut config = builder.with_cert_resolver(identity);
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Arc::new(config)
}

/// Who may send reviews: the apiserver, which presents a client certificate to webhooks when its
/// AdmissionConfiguration names one (`kubeConfigFile`). Anyone else who reaches the webhook's
/// Service (any pod) would otherwise get verdicts and have refusals recorded in a name of its
/// choosing. The CA file is read again when it changes (a rotated ConfigMap mount).
#[derive(Debug)]
pub struct ClientAuth {
    file: PathBuf,
    verifier: Arc<ReloadingVerifier>,
    /// Subject common names one of which the certificate must carry (the name the apiserver
    /// itself would authenticate it by).
    names: Vec<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum ClientAuthError {
    #[error("cannot read the client CA file {}", .path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: rustls::pki_types::pem::Error,
    },
    #[error("the client CA file {} holds no usable CA certificate", .path.display())]
    NoCertificate { path: PathBuf },
}

impl ClientAuth {
    pub fn load(ca_file: &Path, names: Vec<String>) -> Result<Self, ClientAuthError> {
        let (bytes, verifier) = client_verifier(ca_file)?;
        Ok(ClientAuth {
            file: ca_file.to_owned(),
            verifier: Arc::new(ReloadingVerifier {
                current: RwLock::new((bytes, verifier)),
            }),
            names,
        })
    }

    pub fn ca_file(&self) -> &Path {
        &self.file
    }

    /// Reads the CA file again if it changed. `Ok(true)` when the new CA is in force; a file that
    /// fails to load leaves the previous CA in force.
    pub fn reload_if_changed(&self) -> Result<bool, ClientAuthError> {
        let bytes = std::fs::read(&self.file).unwrap_or_default();
        if self
            .verifier
            .current
            .read()
            .is_ok_and(|current| current.0 == bytes)
        {
            return Ok(false);
        }
        let loaded = client_verifier(&self.file)?;
        if let Ok(mut current) = self.verifier.current.write() {
            *current = loaded;
        }
        Ok(true)
    }

    /// Whether a connection whose client presented `chain` (verified against the CA by the
    /// handshake) may send reviews: `Ok` with the name it was admitted by, or why not. The name is
    /// the subject's one common name, as the apiserver reads a client certificate; DNS names do
    /// not count (a signer may keep whatever a request asks for there).
    pub fn admits(&self, chain: Option<&[CertificateDer<'_>]>) -> Result<String, String> {
        let Some(leaf) = chain.and_then(|c| c.first()) else {
            return Err("the client presented no certificate".into());
        };
        let (_, parsed) = x509_parser::parse_x509_certificate(leaf)
            .map_err(|e| format!("the client's certificate cannot be read: {e}"))?;
        let names: Vec<&str> = parsed
            .subject()
            .iter_common_name()
            .map(|cn| cn.as_str().unwrap_or(""))
            .collect();
        match names.as_slice() {
            [name] if self.names.iter().any(|n| n == name) => Ok((*name).to_owned()),
            [name] => Err(format!(
                "the client's certificate names {name}, not {}",
                self.names.join(" or ")
            )),
            [] => Err("the client's certificate names nobody (no common name)".into()),
            _ => Err(format!(
                "the client's certificate has {} common names",
                names.len()
            )),
        }
    }
}

/// The CA file's bytes and a verifier of client certificates that chain to it.
fn client_verifier(
    ca_file: &Path,
) -> Result<(Vec<u8>, Arc<dyn ClientCertVerifier>), ClientAuthError> {
    let (bytes, certificates) =
        read_certificates(ca_file).map_err(|source| ClientAuthError::Read {
            path: ca_file.to_owned(),
            source,
        })?;
    let mut roots = rustls::RootCertStore::empty();
    let (added, _) = roots.add_parsable_certificates(certificates);
    if added == 0 {
        return Err(ClientAuthError::NoCertificate {
            path: ca_file.to_owned(),
        });
    }
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
        Arc::new(roots),
        Arc::new(rustls::crypto::ring::default_provider()),
    )
    .allow_unauthenticated()
    .build()
    .map_err(|_| ClientAuthError::NoCertificate {
        path: ca_file.to_owned(),
    })?;
    Ok((bytes, verifier))
}

/// rustls' verifier of client certificates, swapped when the CA file changes: rustls keeps one
/// verifier for the life of its configuration, and a CA rotated under a running webhook would
/// otherwise refuse the apiserver's new certificate until a restart.
#[derive(Debug)]
struct ReloadingVerifier {
    current: RwLock<(Vec<u8>, Arc<dyn ClientCertVerifier>)>,
}

impl ReloadingVerifier {
    fn get(&self) -> Result<Arc<dyn ClientCertVerifier>, rustls::Error> {
        self.current
            .read()
            .map(|c| c.1.clone())
            .map_err(|_| rustls::Error::General("the client CA is not readable".into()))
    }
}

impl ClientCertVerifier for ReloadingVerifier {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        false
    }

    // No hints: a client sends the certificate it has whatever the server names.
    fn root_hint_subjects(&self) -> &[rustls::DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: rustls::pki_types::UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        self.get()?
            .verify_client_cert(end_entity, intermediates, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.get()?.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.get()?.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.get()
            .map(|v| v.supported_verify_schemes())
            .unwrap_or_default()
    }
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

/// A PEM file's bytes and the certificates in it.
fn read_certificates(
    path: &Path,
) -> Result<(Vec<u8>, Vec<CertificateDer<'static>>), rustls::pki_types::pem::Error> {
    let bytes = std::fs::read(path).map_err(rustls::pki_types::pem::Error::Io)?;
    let certificates = CertificateDer::pem_slice_iter(&bytes).collect::<Result<Vec<_>, _>>()?;
    Ok((bytes, certificates))
}

fn read_pair(cert: &Path, key: &Path) -> Result<(Arc<CertifiedKey>, Files), TlsError> {
    let (cert_bytes, chain) =
        read_certificates(cert).map_err(|source| TlsError::ReadCertificate {
            path: cert.to_owned(),
            source,
        })?;
    let key_bytes = std::fs::read(key).map_err(|e| TlsError::ReadKey {
        path: key.to_owned(),
        source: rustls::pki_types::pem::Error::Io(e),
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
    fn a_client_ca_file_that_cannot_be_used_is_named() {
        let dir = tempfile::tempdir().expect("tempdir");
        let missing = dir.path().join("missing-ca.crt");
        let err = ClientAuth::load(&missing, vec![]).expect_err("a missing file");
        assert!(err.to_string().contains("missing-ca.crt"), "{err}");
        let empty = dir.path().join("empty-ca.crt");
        std::fs::write(&empty, "").expect("write");
        let err = ClientAuth::load(&empty, vec![]).expect_err("no certificate");
        assert!(
            matches!(err, ClientAuthError::NoCertificate { .. }),
            "{err:?}"
        );
    }

    #[test]
    fn a_client_is_admitted_by_a_name_its_certificate_carries() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (ca, _) = identity(dir.path(), "ca");
        let named = |cn: &str, dns: &[&str]| {
            let mut params = rcgen::CertificateParams::new(
                dns.iter().map(|d| (*d).to_owned()).collect::<Vec<_>>(),
            )
            .expect("params");
            params
                .distinguished_name
                .push(rcgen::DnType::CommonName, cn);
            let key = rcgen::KeyPair::generate().expect("a key");
            params
                .self_signed(&key)
                .expect("a certificate")
                .der()
                .clone()
        };
        let auth = ClientAuth::load(&ca, vec!["kube-apiserver-webhook-client".into()])
            .expect("the CA loads");
        let apiserver = named("kube-apiserver-webhook-client", &[]);
        assert_eq!(
            auth.admits(Some(std::slice::from_ref(&apiserver))),
            Ok("kube-apiserver-webhook-client".to_owned())
        );
        // A DNS name is not the name the apiserver authenticates a client by.
        let by_dns = named("other", &["kube-apiserver-webhook-client"]);
        assert!(auth.admits(Some(std::slice::from_ref(&by_dns))).is_err());
        let admin = named("localcluster-admin", &[]);
        let why = auth
            .admits(Some(std::slice::from_ref(&admin)))
            .expect_err("another name");
        assert!(why.contains("localcluster-admin"), "{why}");
        assert!(auth.admits(None).is_err());
    }

    #[test]
    fn a_rotated_client_ca_verifies_its_certificates_and_a_broken_one_keeps_the_last_good() {
        let dir = tempfile::tempdir().expect("tempdir");
        let ca = |name: &str| {
            let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
            params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
            params
                .distinguished_name
                .push(rcgen::DnType::CommonName, name);
            let key = rcgen::KeyPair::generate().expect("a key");
            let cert = params.self_signed(&key).expect("a CA");
            (cert.pem(), rcgen::Issuer::new(params, key))
        };
        let client = |issuer: &rcgen::Issuer<'_, rcgen::KeyPair>| {
            let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
            params
                .distinguished_name
                .push(rcgen::DnType::CommonName, "kube-apiserver-webhook-client");
            params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
            let key = rcgen::KeyPair::generate().expect("a key");
            params
                .signed_by(&key, issuer)
                .expect("a certificate")
                .der()
                .clone()
        };
        let (first_pem, first) = ca("first CA");
        let (second_pem, second) = ca("second CA");
        let file = dir.path().join("client-ca.crt");
        std::fs::write(&file, &first_pem).expect("write");
        let auth = ClientAuth::load(&file, vec!["kube-apiserver-webhook-client".into()])
            .expect("the CA loads");
        let now = rustls::pki_types::UnixTime::now();
        let verifies =
            |cert: &CertificateDer<'_>| auth.verifier.verify_client_cert(cert, &[], now).is_ok();
        assert!(verifies(&client(&first)));
        assert!(!verifies(&client(&second)));
        assert!(!auth.reload_if_changed().expect("unchanged"));

        std::fs::write(&file, &second_pem).expect("rotate");
        assert!(auth.reload_if_changed().expect("the new CA loads"));
        assert!(verifies(&client(&second)));
        assert!(!verifies(&client(&first)));

        std::fs::write(&file, "garbage").expect("break the file");
        assert!(auth.reload_if_changed().is_err());
        assert!(
            verifies(&client(&second)),
            "a broken file keeps the last CA"
        );
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
